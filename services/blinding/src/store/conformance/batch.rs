//! Group commit: assignments queued together are written in one
//! transaction, each still assigned or refused as if it were alone.

use super::*;

const TRIAL_A: &str = "CONF-BATCH-A";
const TRIAL_B: &str = "CONF-BATCH-B";

/// Run on a one-thread runtime, where every call below queues before the
/// store's writer runs: `batches()` (committed transactions) moves by one.
pub(super) async fn assignments_queued_together_commit_together_each_on_its_merits(
    store: &dyn Store,
    batches: &dyn Fn() -> usize,
) {
    for trial in [TRIAL_A, TRIAL_B] {
        put(store, trial, &two_arm_pools(), CodeSource::Generated)
            .await
            .expect("pools");
    }
    let before = (audit_len(store).await, batches());
    let (b1, a1, a2, a1_again, unknown_trial, unknown_arm, a3) = tokio::join!(
        try_assign(store, TRIAL_B, "B-S1", "A"),
        try_assign(store, TRIAL_A, "A-S1", "A"),
        try_assign(store, TRIAL_A, "A-S2", "B"),
        // A repeat of an assignment earlier in the same batch.
        try_assign(store, TRIAL_A, "A-S1", "A"),
        try_assign(store, "CONF-BATCH-NONE", "N-S1", "A"),
        try_assign(store, TRIAL_A, "A-S9", "C"),
        try_assign(store, TRIAL_A, "A-S3", "A"),
    );
    assert_eq!(code(&b1), Ok("A-0".into()));
    assert_eq!(code(&a1), Ok("A-0".into()));
    assert_eq!(code(&a2), Ok("B-0".into()));
    assert_eq!(a1_again, a1, "the repeat gets the same assignment");
    assert_eq!(unknown_trial, Err(StoreError::NotFound));
    assert!(
        matches!(unknown_arm, Err(StoreError::UnknownArm { .. })),
        "{unknown_arm:?}"
    );
    assert_eq!(code(&a3), Ok("A-1".into()));

    // Four new assignments; the repeat and the refusals write nothing.
    assert_appended(store, before.0, 4, "one batch").await;
    assert_eq!(batches() - before.1, 1, "one committed transaction");
    assert_eq!(store.assignment(TRIAL_A, "A-S9").await, Ok(None));
    // Written trial by trial: A's records before B's, whatever the arrival.
    let codes: Vec<String> = audit_all(store)
        .await
        .into_iter()
        .skip(before.0)
        .map(|record| {
            record.entry.details["code"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(codes, ["A-0", "B-0", "A-1", "A-0"]);
}

fn code(assigned: &StoreResult<Assignment>) -> Result<String, StoreError> {
    assigned.clone().map(|assignment| assignment.code)
}
