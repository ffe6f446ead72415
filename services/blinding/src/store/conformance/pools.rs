//! Storing a trial's pools, and reading codes and counts back.

use super::*;

/// Pools are stored once, with one audit record; a second call, whatever
/// it holds, is a Conflict and changes nothing.
pub(super) async fn pools_are_stored_once_and_never_replaced(store: &dyn Store) {
    const TRIAL: &str = "CONF-ONCE";
    let before = audit_len(store).await;
    put(store, TRIAL, &two_arm_pools(), CodeSource::Generated)
        .await
        .expect("store the pools");
    assert_appended(store, before, 1, "put_pools").await;
    assert_eq!(last_audit(store).await.entry.action, "pools.stored");
    let expected = BTreeMap::from([
        ("A".to_owned(), counts(3, 0)),
        ("B".to_owned(), counts(3, 0)),
    ]);
    assert_eq!(pool_counts(store, TRIAL).await, expected);

    let replacement = vec![pool("A", &["X-0"]), pool("B", &["X-1"])];
    for (pools, source) in [
        (replacement, CodeSource::Uploaded),
        (two_arm_pools(), CodeSource::Generated),
    ] {
        let before = audit_len(store).await;
        assert_conflict(put(store, TRIAL, &pools, source).await, "second put_pools");
        assert_appended(store, before, 0, "second put_pools").await;
    }
    assert_eq!(pool_counts(store, TRIAL).await, expected, "pools unchanged");
    assert_eq!(store.code(TRIAL, "X-0").await, Ok(None), "nothing added");
    assert_eq!(
        stored_code(store, TRIAL, "A-0").await.source,
        CodeSource::Generated
    );
}

/// Each code keeps its arm, its place in the order of issue and its source.
pub(super) async fn codes_keep_their_arm_position_and_source(store: &dyn Store) {
    const TRIAL: &str = "CONF-CODES";
    let pools = vec![
        pool("active", &["K7Q2", "M3XP", "ZZ41"]),
        pool("placebo", &["P9A1", "B2C3"]),
    ];
    put(store, TRIAL, &pools, CodeSource::Uploaded)
        .await
        .expect("store uploaded pools");
    for pool in &pools {
        for (position, code) in (0_u64..).zip(&pool.codes) {
            let expected = CodeEntry {
                arm_id: pool.arm_id.clone(),
                position,
                source: CodeSource::Uploaded,
                subject_id: None,
            };
            assert_eq!(
                stored_code(store, TRIAL, code).await,
                expected,
                "code {code}"
            );
        }
    }
    assert_eq!(store.code(TRIAL, "NOPE").await, Ok(None), "unknown code");
    assert_eq!(
        store.code(UNKNOWN_TRIAL, "K7Q2").await,
        Ok(None),
        "other trial"
    );
}

/// Codes are unique within a trial only: another trial may reuse them.
pub(super) async fn codes_are_unique_per_trial_not_across_trials(store: &dyn Store) {
    put(
        store,
        "CONF-SAME-1",
        &two_arm_pools(),
        CodeSource::Generated,
    )
    .await
    .expect("first trial");
    let swapped = vec![pool("A", &["B-0", "B-1"]), pool("B", &["A-0"])];
    put(store, "CONF-SAME-2", &swapped, CodeSource::Uploaded)
        .await
        .expect("second trial, same codes, other arms");
    assert_eq!(stored_code(store, "CONF-SAME-1", "B-0").await.arm_id, "B");
    assert_eq!(stored_code(store, "CONF-SAME-2", "B-0").await.arm_id, "A");
    assert_eq!(
        assign(store, "CONF-SAME-2", "CONF-S-001", "A").await.code,
        "B-0"
    );
    assert_eq!(
        assign(store, "CONF-SAME-1", "CONF-S-001", "B").await.code,
        "B-0",
        "one trial's assignment leaves the other's code free"
    );
}

/// No pools, an empty pool, an arm twice or a code twice are refused before
/// anything is written, and do not stop the trial's pools being stored.
pub(super) async fn bad_pools_are_refused_and_write_nothing(store: &dyn Store) {
    const TRIAL: &str = "CONF-BAD";
    let bad: [(&str, Vec<CodePool>); 5] = [
        ("no pools", vec![]),
        ("an empty pool", vec![pool("A", &["A-0"]), pool("B", &[])]),
        (
            "an arm twice",
            vec![pool("A", &["A-0"]), pool("A", &["A-1"])],
        ),
        (
            "a code in two arms",
            vec![pool("A", &["A-0", "C"]), pool("B", &["C"])],
        ),
        (
            "a code twice in one arm",
            vec![pool("A", &["A-0", "A-0"]), pool("B", &["B-0"])],
        ),
    ];
    for (what, pools) in bad {
        let before = audit_len(store).await;
        let result = put(store, TRIAL, &pools, CodeSource::Uploaded).await;
        assert!(
            matches!(result, Err(StoreError::Invalid(_))),
            "{what}: expected Invalid, got {result:?}"
        );
        assert_appended(store, before, 0, what).await;
        assert_eq!(pool_counts(store, TRIAL).await, BTreeMap::new(), "{what}");
        assert_eq!(store.code(TRIAL, "A-0").await, Ok(None), "{what}");
    }
    put(store, TRIAL, &two_arm_pools(), CodeSource::Uploaded)
        .await
        .expect("good pools after bad ones");
}

/// Counts per arm follow the assignments; a trial without pools has none.
pub(super) async fn pool_counts_follow_assignments(store: &dyn Store) {
    const TRIAL: &str = "CONF-COUNTS";
    let pools = vec![
        pool("A", &["A-0", "A-1", "A-2", "A-3"]),
        pool("B", &["B-0", "B-1"]),
    ];
    put(store, TRIAL, &pools, CodeSource::Generated)
        .await
        .expect("pools");
    assign(store, TRIAL, "CONF-N-001", "A").await;
    assign(store, TRIAL, "CONF-N-002", "B").await;
    assign(store, TRIAL, "CONF-N-003", "A").await;
    let expected = BTreeMap::from([
        ("A".to_owned(), counts(4, 2)),
        ("B".to_owned(), counts(2, 1)),
    ]);
    assert_eq!(pool_counts(store, TRIAL).await, expected);
    assign(store, TRIAL, "CONF-N-002", "B").await;
    assert_eq!(
        pool_counts(store, TRIAL).await,
        expected,
        "a repeat issues nothing"
    );
    assert_eq!(pool_counts(store, UNKNOWN_TRIAL).await, BTreeMap::new());
}

/// Pools larger than one INSERT batch keep every code, in order, across
/// the batch boundaries, and issue from the first.
pub(super) async fn large_pools_are_stored_in_batches_in_order(store: &dyn Store) {
    const TRIAL: &str = "CONF-BATCH";
    let large = CodePool {
        arm_id: "A".into(),
        codes: (0..1_201).map(|i| format!("A-{i:05}")).collect(),
    };
    let pools = vec![large.clone(), pool("B", &["B-0", "B-1"])];
    put(store, TRIAL, &pools, CodeSource::Generated)
        .await
        .expect("store large pools");
    assert_eq!(pool_counts(store, TRIAL).await["A"], counts(1_201, 0));
    assert_eq!(pool_counts(store, TRIAL).await["B"], counts(2, 0));
    for position in [0_u64, 499, 500, 501, 999, 1_000, 1_200] {
        let code = &large.codes[usize::try_from(position).expect("small")];
        assert_eq!(
            stored_code(store, TRIAL, code).await,
            CodeEntry {
                arm_id: "A".into(),
                position,
                source: CodeSource::Generated,
                subject_id: None,
            },
            "code {code}"
        );
    }
    assert_eq!(
        assign(store, TRIAL, "CONF-BATCH-1", "A").await.code,
        "A-00000"
    );
}
