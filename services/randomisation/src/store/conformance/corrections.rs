//! Corrections: a stratum corrected, an allocation marked in error.

use super::*;

/// A stratum correction is recorded beside the stratum randomised in.
pub(super) async fn stratum_correction_keeps_the_assignment(store: &dyn Store) {
    const TRIAL: &str = "CONF-CORRECT";
    active_trial(store, TRIAL).await;
    let original = allocate(store, TRIAL, "CONF-R-001", "FR-MTP", "S1").await;

    let before = audit_len(store).await;
    let corrected = store
        .correct_stratum(
            TRIAL,
            "CONF-R-001",
            "S2",
            "age misrecorded",
            entry("allocation.corrected", TRIAL),
        )
        .await
        .expect("correct the stratum");
    let expected = AllocationRecord {
        corrected_stratum: Some("S2".into()),
        correction_reason: Some("age misrecorded".into()),
        ..original
    };
    assert_eq!(corrected, expected, "stratum and arm are kept");
    assert_eq!(
        store.allocation(TRIAL, "CONF-R-001").await,
        Ok(Some(expected))
    );
    assert_appended(store, before, 1, "correct_stratum").await;

    let before = audit_len(store).await;
    let unknown = store.correct_stratum(
        TRIAL,
        "CONF-R-404",
        "S2",
        "?",
        entry("allocation.corrected", TRIAL),
    );
    assert_eq!(
        unknown.await,
        Err(StoreError::NotFound),
        "correct an unknown subject"
    );
    assert_appended(store, before, 0, "refused correction").await;
}

/// A randomised-in-error mark is set once and keeps the arm.
pub(super) async fn in_error_mark_is_set_once(store: &dyn Store) {
    const TRIAL: &str = "CONF-IN-ERROR";
    active_trial(store, TRIAL).await;
    let original = allocate(store, TRIAL, "CONF-E-001", "FR-MTP", "S1").await;

    let before = audit_len(store).await;
    let marked = mark_in_error(store, TRIAL, "CONF-E-001").await;
    let expected = AllocationRecord {
        in_error: true,
        error_reason: Some("randomised twice".into()),
        ..original
    };
    assert_eq!(marked, expected, "arm and assignment are kept");
    assert_eq!(
        store.allocation(TRIAL, "CONF-E-001").await,
        Ok(Some(expected.clone()))
    );
    assert_appended(store, before, 1, "mark_in_error").await;

    let before = audit_len(store).await;
    let again = store.mark_in_error(
        TRIAL,
        "CONF-E-001",
        "other reason",
        entry("allocation.in_error", TRIAL),
    );
    assert_conflict(again.await, "mark in error twice");
    assert_eq!(
        store.allocation(TRIAL, "CONF-E-001").await,
        Ok(Some(expected)),
        "first reason kept"
    );
    let unknown = store.mark_in_error(
        TRIAL,
        "CONF-E-404",
        "?",
        entry("allocation.in_error", TRIAL),
    );
    assert_eq!(
        unknown.await,
        Err(StoreError::NotFound),
        "mark an unknown subject"
    );
    assert_appended(store, before, 0, "refused marks").await;
}

/// Two racing in-error marks: one wins, the other is a conflict, and the
/// winner's reason is the one kept, with one audit record.
pub(super) async fn racing_in_error_marks_have_one_winner(store: &dyn Store) {
    const TRIAL: &str = "CONF-IN-ERROR-RACE";
    active_trial(store, TRIAL).await;
    allocate(store, TRIAL, "CONF-E-RACE", "FR-MTP", "S1").await;

    let before = audit_len(store).await;
    let mark = |reason: &'static str| {
        store.mark_in_error(
            TRIAL,
            "CONF-E-RACE",
            reason,
            entry("allocation.in_error", TRIAL),
        )
    };
    let (first, second) = tokio::join!(mark("first reason"), mark("second reason"));
    let winner = match (&first, &second) {
        (Ok(winner), Err(StoreError::Conflict(_))) | (Err(StoreError::Conflict(_)), Ok(winner)) => {
            winner.clone()
        }
        _ => panic!("exactly one mark wins, the other conflicts: {first:?} / {second:?}"),
    };
    assert_eq!(
        store.allocation(TRIAL, "CONF-E-RACE").await,
        Ok(Some(winner)),
        "the winner's reason is the one kept"
    );
    assert_appended(store, before, 1, "racing in-error marks").await;
}
