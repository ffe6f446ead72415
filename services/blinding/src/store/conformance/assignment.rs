//! Assigning codes to allocations: order of issue, idempotence, refusals
//! and races.

use super::*;

/// Each allocation gets the next unissued code of its arm's pool, in issue
/// order, with one audit record naming the code.
pub(super) async fn assignment_takes_the_next_code_of_its_arm_in_issue_order(store: &dyn Store) {
    const TRIAL: &str = "CONF-ASSIGN";
    put(store, TRIAL, &two_arm_pools(), CodeSource::Generated)
        .await
        .expect("pools");
    let plan = [
        ("CONF-A-001", "A", "A-0"),
        ("CONF-A-002", "B", "B-0"),
        ("CONF-A-003", "A", "A-1"),
        ("CONF-A-004", "B", "B-1"),
        // Empties A last: from then on every arm is refused.
        ("CONF-A-005", "A", "A-2"),
    ];
    for (subject, arm, code) in plan {
        let before = audit_len(store).await;
        let audit = assign_entry(subject);
        let assignment = store
            .assign_code(TRIAL, subject, SITE, arm, audit.clone())
            .await
            .expect("assign");
        let expected = Assignment {
            trial_id: TRIAL.into(),
            subject_id: subject.into(),
            site_id: SITE.into(),
            arm_id: arm.into(),
            code: code.into(),
            assigned_at: audit.at.clone(),
        };
        assert_eq!(assignment, expected, "{subject}");
        assert_eq!(store.assignment(TRIAL, subject).await, Ok(Some(expected)));
        assert_eq!(
            stored_code(store, TRIAL, code).await.subject_id.as_deref(),
            Some(subject),
            "the code shows its subject"
        );
        assert_appended(store, before, 1, "assign_code").await;
        let recorded = last_audit(store).await.entry;
        assert_eq!(
            recorded.details,
            json!({ "subject": subject, "code": code })
        );
        assert_eq!(recorded.action, audit.action);
    }
    assert_eq!(store.assignment(TRIAL, "CONF-A-999").await, Ok(None));
    assert_eq!(stored_code(store, TRIAL, "B-2").await.subject_id, None);
}

/// A repeat naming the same arm returns the first assignment and writes
/// nothing, however much later it comes.
pub(super) async fn a_repeat_with_the_same_arm_returns_the_same_code(store: &dyn Store) {
    const TRIAL: &str = "CONF-REPEAT";
    put(store, TRIAL, &two_arm_pools(), CodeSource::Generated)
        .await
        .expect("pools");
    let first = assign(store, TRIAL, "CONF-R-001", "A").await;
    assign(store, TRIAL, "CONF-R-002", "A").await;
    let before = audit_len(store).await;
    let counts = pool_counts(store, TRIAL).await;
    for _ in 0..2 {
        assert_eq!(
            assign(store, TRIAL, "CONF-R-001", "A").await,
            first,
            "repeat"
        );
    }
    assert_appended(store, before, 0, "repeats").await;
    assert_eq!(
        pool_counts(store, TRIAL).await,
        counts,
        "repeats issue nothing"
    );
}

/// A repeat naming another arm is a Conflict: the first code stays, and the
/// other arm's pool is untouched.
pub(super) async fn a_repeat_naming_another_arm_is_a_conflict_and_changes_nothing(
    store: &dyn Store,
) {
    const TRIAL: &str = "CONF-OTHER-ARM";
    put(store, TRIAL, &two_arm_pools(), CodeSource::Generated)
        .await
        .expect("pools");
    let first = assign(store, TRIAL, "CONF-O-001", "A").await;
    let error = refused_assignment(store, TRIAL, "CONF-O-001", "B").await;
    assert!(matches!(error, StoreError::Conflict(_)), "{error:?}");
    assert_eq!(store.assignment(TRIAL, "CONF-O-001").await, Ok(Some(first)));
    assert_eq!(stored_code(store, TRIAL, "B-0").await.subject_id, None);
    // An unknown arm on a repeat is the same conflict, not a new pool.
    let error = refused_assignment(store, TRIAL, "CONF-O-001", "C").await;
    assert!(matches!(error, StoreError::Conflict(_)), "{error:?}");
}

/// An arm whose pool is used up refuses with PoolEmpty, naming the trial
/// only, and never hands out a code of another arm.
pub(super) async fn an_empty_pool_is_refused_never_another_arms_code(store: &dyn Store) {
    const TRIAL: &str = "CONF-EMPTY";
    let pools = vec![pool("A", &["A-0"]), pool("B", &["B-0", "B-1", "B-2"])];
    put(store, TRIAL, &pools, CodeSource::Generated)
        .await
        .expect("pools");
    assert_eq!(assign(store, TRIAL, "CONF-E-001", "A").await.code, "A-0");
    let before = audit_len(store).await;
    // Every arm gets the same refusal: one only for arm A's subjects would
    // tell them their arm.
    for (subject, arm) in [
        ("CONF-E-002", "A"),
        ("CONF-E-003", "B"),
        ("CONF-E-004", "B"),
    ] {
        let error = refused_assignment(store, TRIAL, subject, arm).await;
        assert_eq!(
            error,
            StoreError::PoolEmpty {
                trial_id: TRIAL.into()
            },
            "arm {arm}"
        );
    }
    assert_appended(store, before, 0, "refused assignments").await;
    assert_eq!(
        pool_counts(store, TRIAL).await["B"],
        counts(3, 0),
        "the other arm's pool is untouched"
    );
    assert_eq!(
        assign(store, TRIAL, "CONF-E-001", "A").await.code,
        "A-0",
        "a repeat still gets its code"
    );
}

/// Unknown trials and arms are refused and write nothing.
pub(super) async fn unknown_trials_and_arms_are_refused(store: &dyn Store) {
    const TRIAL: &str = "CONF-UNKNOWN";
    assert_eq!(
        refused_assignment(store, UNKNOWN_TRIAL, "CONF-U-001", "A").await,
        StoreError::NotFound,
        "unknown trial"
    );
    put(store, TRIAL, &two_arm_pools(), CodeSource::Generated)
        .await
        .expect("pools");
    assert_eq!(
        refused_assignment(store, TRIAL, "CONF-U-001", "C").await,
        StoreError::UnknownArm { arm_id: "C".into() },
        "unknown arm"
    );
    assert_eq!(
        refused_assignment(store, TRIAL, "CONF-U-001", "a").await,
        StoreError::UnknownArm { arm_id: "a".into() },
        "arms are matched exactly"
    );
    assert_eq!(assign(store, TRIAL, "CONF-U-001", "A").await.code, "A-0");
}

/// Assignments racing in one arm, as from several replicas at once: every
/// one succeeds, no two share a code, and the pool's first codes are used.
pub(super) async fn racing_assignments_never_share_a_code(store: &dyn Store) {
    const TRIAL: &str = "CONF-RACE";
    let pools = vec![
        pool("A", &["A-0", "A-1", "A-2", "A-3", "A-4", "A-5"]),
        pool("B", &["B-0"]),
    ];
    put(store, TRIAL, &pools, CodeSource::Generated)
        .await
        .expect("pools");
    let before = audit_len(store).await;
    let results = tokio::join!(
        try_assign(store, TRIAL, "CONF-RACE-1", "A"),
        try_assign(store, TRIAL, "CONF-RACE-2", "A"),
        try_assign(store, TRIAL, "CONF-RACE-3", "A"),
        try_assign(store, TRIAL, "CONF-RACE-4", "A"),
    );
    let results = [results.0, results.1, results.2, results.3];
    let mut codes: Vec<String> = results
        .iter()
        .map(|r| r.as_ref().map(|a| a.code.clone()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|error| panic!("every racing assignment succeeds: {error:?}"));
    codes.sort();
    assert_eq!(
        codes,
        ["A-0", "A-1", "A-2", "A-3"],
        "distinct, in issue order"
    );
    assert_eq!(pool_counts(store, TRIAL).await["A"], counts(6, 4));
    assert_appended(store, before, 4, "racing assignments").await;

    // The last code of a pool, raced for: one winner, the others find it empty.
    let results = tokio::join!(
        try_assign(store, TRIAL, "CONF-RACE-5", "B"),
        try_assign(store, TRIAL, "CONF-RACE-6", "B"),
        try_assign(store, TRIAL, "CONF-RACE-7", "B"),
    );
    let results = [results.0, results.1, results.2];
    let winners: Vec<&Assignment> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "one winner: {results:?}");
    assert_eq!(winners[0].code, "B-0");
    let empty = StoreError::PoolEmpty {
        trial_id: TRIAL.into(),
    };
    assert!(
        results
            .iter()
            .all(|r| r.is_ok() || r.as_ref().err() == Some(&empty)),
        "the others find the pool empty: {results:?}"
    );
}

/// First requests for one allocation racing: one code is issued, a repeat
/// with the same arm gets it, a repeat naming another arm conflicts.
pub(super) async fn racing_repeats_of_one_allocation_get_one_code(store: &dyn Store) {
    const TRIAL: &str = "CONF-RACE-ONE";
    put(store, TRIAL, &two_arm_pools(), CodeSource::Generated)
        .await
        .expect("pools");
    let before = audit_len(store).await;
    let results = tokio::join!(
        try_assign(store, TRIAL, "CONF-ONE-1", "A"),
        try_assign(store, TRIAL, "CONF-ONE-1", "A"),
        try_assign(store, TRIAL, "CONF-ONE-1", "A"),
    );
    let results = [results.0, results.1, results.2];
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().map(|a| a.code.as_str()) == Ok("A-0")),
        "every repeat gets the one code: {results:?}"
    );
    assert_appended(store, before, 1, "racing repeats").await;

    let before = audit_len(store).await;
    let (a, b) = tokio::join!(
        try_assign(store, TRIAL, "CONF-ONE-2", "A"),
        try_assign(store, TRIAL, "CONF-ONE-2", "B"),
    );
    let won = [&a, &b].iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "one arm wins: {a:?} {b:?}");
    let lost = if a.is_ok() { b } else { a };
    assert_conflict(lost, "the other arm");
    assert_appended(store, before, 1, "racing arms").await;
    let counts = pool_counts(store, TRIAL).await;
    let issued: u32 = counts.values().map(|c| c.issued).sum();
    assert_eq!(issued, 2, "two allocations, two codes: {counts:?}");
}
