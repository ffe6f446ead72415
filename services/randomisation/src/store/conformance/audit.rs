//! The audit trail the store keeps with every change.

use super::*;

/// The trail is one verifiable chain; commits add their position and
/// number to the details; `append_audit` records an entry as given.
pub(super) async fn audit_trail_is_one_verifiable_chain(store: &dyn Store) {
    const TRIAL: &str = "CONF-AUDIT";
    active_trial(store, TRIAL).await;

    let before = audit_len(store).await;
    let refusal = AuditEntry {
        details: json!({ "reason": "site not permitted", "site": "FR-NCY" }),
        ..entry("allocation.refused", TRIAL)
    };
    store
        .append_audit(refusal.clone())
        .await
        .expect("append an audit entry");
    assert_appended(store, before, 1, "append_audit").await;
    assert_eq!(last_audit(store).await.entry, refusal, "recorded as given");

    allocate(store, TRIAL, "CONF-A-001", "FR-MTP", "S1").await;
    let committed = last_audit(store).await;
    assert_eq!(committed.entry.action, "allocation.committed");
    let expected = json!({ "subject": "CONF-A-001", "randomisation_number": "FR-MTP-0001" });
    assert_eq!(
        committed.entry.details, expected,
        "the store adds the number, and no position (review C4)"
    );

    let records = audit_all(store).await;
    let len = u64::try_from(records.len()).expect("record count");
    assert_eq!(verify_chain(&records), Ok(len), "the whole trail verifies");
    let tail = store
        .audit_records(committed.seq, 10)
        .await
        .expect("read from a seq");
    assert_eq!(tail, [committed], "reading from a seq starts there");
    assert_eq!(
        store.audit_records(1, 10_000).await.map(|r| r.len()),
        Ok(records.len().min(10_000))
    );
}
