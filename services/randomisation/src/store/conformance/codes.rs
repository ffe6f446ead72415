//! Treatment codes: recorded once per allocation, returned with it, and
//! listed for the reconciler while missing.

use super::*;
use crate::store::CodeRecorded;

fn code_entry(trial_id: &str, subject_id: &str) -> AuditEntry {
    AuditEntry {
        details: json!({ "subject": subject_id }),
        ..entry("allocation.code_recorded", trial_id)
    }
}

async fn record(
    store: &dyn Store,
    trial_id: &str,
    subject_id: &str,
    code: &str,
) -> StoreResult<CodeRecorded> {
    store
        .record_code(trial_id, subject_id, code, code_entry(trial_id, subject_id))
        .await
}

async fn code_of(store: &dyn Store, trial_id: &str, subject_id: &str) -> Option<String> {
    store
        .allocation(trial_id, subject_id)
        .await
        .expect("read the allocation")
        .expect("the allocation exists")
        .treatment_code
}

/// A code is recorded once; the same code again writes nothing, and a
/// different one is refused and writes nothing.
pub(super) async fn codes_are_recorded_once(store: &dyn Store) {
    const TRIAL: &str = "CONF-CODES";
    active_trial(store, TRIAL).await;
    let first = allocate(store, TRIAL, "CONF-K-001", "FR-MTP", "S1").await;
    allocate(store, TRIAL, "CONF-K-002", "FR-MTP", "S1").await;
    assert_eq!(first.treatment_code, None, "a new allocation has no code");

    let before = audit_len(store).await;
    assert_eq!(
        record(store, TRIAL, "CONF-K-001", "RSP-7Q2X").await,
        Ok(CodeRecorded::Recorded)
    );
    assert_appended(store, before, 1, "record_code").await;
    assert_eq!(
        code_of(store, TRIAL, "CONF-K-001").await.as_deref(),
        Some("RSP-7Q2X")
    );

    let before = audit_len(store).await;
    assert_eq!(
        record(store, TRIAL, "CONF-K-001", "RSP-7Q2X").await,
        Ok(CodeRecorded::AlreadyRecorded),
        "the same code again"
    );
    assert_conflict(
        record(store, TRIAL, "CONF-K-001", "RSP-0000").await,
        "a different code",
    );
    assert_conflict(
        record(store, TRIAL, "CONF-K-002", "RSP-7Q2X").await,
        "another subject's code",
    );
    assert_eq!(
        record(store, TRIAL, "CONF-K-404", "RSP-1111").await,
        Err(StoreError::NotFound),
        "an unknown subject"
    );
    assert_eq!(
        record(store, UNKNOWN_TRIAL, "CONF-K-001", "RSP-1111").await,
        Err(StoreError::NotFound),
        "an unknown trial"
    );
    assert_appended(store, before, 0, "refused or repeated codes").await;
    assert_eq!(
        code_of(store, TRIAL, "CONF-K-001").await.as_deref(),
        Some("RSP-7Q2X"),
        "the first code stands"
    );
    assert_eq!(code_of(store, TRIAL, "CONF-K-002").await, None);
}

/// Every way of reading allocations carries the code.
pub(super) async fn codes_are_read_with_allocations(store: &dyn Store) {
    const TRIAL: &str = "CONF-CODES-READ";
    active_trial(store, TRIAL).await;
    allocate(store, TRIAL, "CONF-KR-001", "FR-MTP", "S1").await;
    allocate(store, TRIAL, "CONF-KR-002", "FR-MTP", "S1").await;
    record(store, TRIAL, "CONF-KR-002", "C-2")
        .await
        .expect("record a code");
    let codes = |records: &[AllocationRecord]| -> Vec<Option<String>> {
        records.iter().map(|r| r.treatment_code.clone()).collect()
    };
    let expected = vec![None, Some("C-2".to_owned())];
    let listed = store
        .list_allocations(&query(TRIAL, 0, 10))
        .await
        .expect("list");
    assert_eq!(codes(&listed), expected, "list_allocations");
    let streamed = store
        .stream_allocations(TRIAL, "S1")
        .await
        .expect("stream allocations");
    assert_eq!(codes(&streamed), expected, "stream_allocations");
    // A later mark keeps the code.
    let marked = mark_in_error(store, TRIAL, "CONF-KR-002").await;
    assert_eq!(marked.treatment_code.as_deref(), Some("C-2"));
}

/// Allocations without a code are listed oldest first, across trials, and
/// leave the list once their code is recorded; closed trials are included.
pub(super) async fn allocations_without_code_are_listed_oldest_first(store: &dyn Store) {
    const OPEN: &str = "CONF-PENDING";
    const CLOSED: &str = "CONF-PENDING-CLOSED";
    active_trial(store, OPEN).await;
    active_trial(store, CLOSED).await;
    allocate(store, OPEN, "CONF-P-001", "FR-MTP", "S1").await;
    allocate(store, CLOSED, "CONF-P-002", "FR-MTP", "S1").await;
    allocate(store, OPEN, "CONF-P-003", "FR-MTP", "S1").await;
    close_trial(store, CLOSED).await;
    let ours = |records: Vec<AllocationRecord>| -> Vec<String> {
        records
            .into_iter()
            .filter(|r| r.trial_id == OPEN || r.trial_id == CLOSED)
            .map(|r| r.subject_id)
            .collect()
    };
    let pending = store
        .allocations_without_code(0, 1000)
        .await
        .expect("pending codes");
    assert!(pending.iter().all(|r| r.treatment_code.is_none()));
    assert_eq!(ours(pending), ["CONF-P-001", "CONF-P-002", "CONF-P-003"]);

    record(store, OPEN, "CONF-P-001", "P-1")
        .await
        .expect("record");
    record(store, CLOSED, "CONF-P-002", "P-2")
        .await
        .expect("record in a closed trial");
    let pending = store
        .allocations_without_code(0, 1000)
        .await
        .expect("pending codes");
    assert_eq!(ours(pending), ["CONF-P-003"]);

    let one = store
        .allocations_without_code(0, 1)
        .await
        .expect("pending codes");
    assert_eq!(one.len(), 1, "the limit holds");
    // The next page starts after the last one seen.
    let after = store
        .allocations_without_code(one[0].sequence, 1000)
        .await
        .expect("pending codes");
    assert!(after.iter().all(|r| r.sequence > one[0].sequence));
    assert!(after.iter().all(|r| r.subject_id != one[0].subject_id));
    assert!(
        store
            .allocations_without_code(0, 0)
            .await
            .expect("pending codes")
            .is_empty()
    );
}

/// Two recorders of the same code for one allocation (replicas, or a retry
/// beside the reconciler): both succeed, one record is written.
pub(super) async fn racing_recorders_write_one_code(store: &dyn Store) {
    const TRIAL: &str = "CONF-CODES-RACE";
    active_trial(store, TRIAL).await;
    allocate(store, TRIAL, "CONF-KX-001", "FR-MTP", "S1").await;
    let before = audit_len(store).await;
    let (a, b) = tokio::join!(
        record(store, TRIAL, "CONF-KX-001", "X-1"),
        record(store, TRIAL, "CONF-KX-001", "X-1"),
    );
    let mut outcomes = [a.expect("first"), b.expect("second")];
    outcomes.sort_by_key(|o| *o == CodeRecorded::AlreadyRecorded);
    assert_eq!(
        outcomes,
        [CodeRecorded::Recorded, CodeRecorded::AlreadyRecorded]
    );
    assert_appended(store, before, 1, "racing record_code").await;
}
