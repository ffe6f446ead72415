//! The audit trail the store keeps with every change.

use super::*;

/// The trail is one verifiable chain; assignments add their code (never
/// the arm) to the details; `append_audit` records an entry as given.
pub(super) async fn audit_trail_is_one_verifiable_chain(store: &dyn Store) {
    const TRIAL: &str = "CONF-AUDIT";
    put(store, TRIAL, &two_arm_pools(), CodeSource::Generated)
        .await
        .expect("pools");

    let before = audit_len(store).await;
    let refusal = AuditEntry {
        details: json!({ "reason": "caller not permitted", "caller": "service:safety" }),
        ..entry("code.refused")
    };
    store
        .append_audit(refusal.clone())
        .await
        .expect("append an audit entry");
    assert_appended(store, before, 1, "append_audit").await;
    assert_eq!(last_audit(store).await.entry, refusal, "recorded as given");

    assign(store, TRIAL, "CONF-AU-001", "B").await;
    let assigned = last_audit(store).await;
    assert_eq!(assigned.entry.action, "code.assigned");
    assert_eq!(
        assigned.entry.details,
        json!({ "subject": "CONF-AU-001", "code": "B-0" }),
        "the store adds the code, not the arm"
    );

    let records = audit_all(store).await;
    let len = u64::try_from(records.len()).expect("record count");
    assert_eq!(verify_chain(&records), Ok(len), "the whole trail verifies");
    let tail = store
        .audit_records(assigned.seq, 10)
        .await
        .expect("read from a seq");
    assert_eq!(tail, [assigned], "reading from a seq starts there");
    assert_eq!(
        store.audit_records(1, 1).await.map(|r| r.len()),
        Ok(1),
        "the limit holds"
    );
}
