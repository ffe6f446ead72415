//! Topping up stored pools: codes appended after each arm's last one.

use super::*;

async fn add(store: &dyn Store, trial_id: &str, pools: &[CodePool]) -> StoreResult<()> {
    store
        .add_codes(trial_id, pools, entry("pools.topped_up"))
        .await
}

/// A top-up continues each arm's positions, leaves `issued` alone, is
/// issued after the codes already there, and appends one audit record.
pub(super) async fn a_top_up_appends_after_each_arms_last_code(store: &dyn Store) {
    const TRIAL: &str = "CONF-TOPUP";
    put(store, TRIAL, &two_arm_pools(), CodeSource::Generated)
        .await
        .expect("store the pools");
    for (subject, arm) in [("S4", "B"), ("S1", "A"), ("S2", "A"), ("S3", "A")] {
        assign(store, TRIAL, subject, arm).await;
    }
    // A is empty: every arm is refused until the top-up.
    assert!(matches!(
        refused_assignment(store, TRIAL, "S5", "B").await,
        StoreError::PoolEmpty { .. }
    ));

    let before = audit_len(store).await;
    add(
        store,
        TRIAL,
        &[pool("A", &["N-0", "N-1"]), pool("B", &["N-2"])],
    )
    .await
    .expect("top up");
    assert_appended(store, before, 1, "add_codes").await;
    assert_eq!(last_audit(store).await.entry.action, "pools.topped_up");
    let expected = BTreeMap::from([
        ("A".to_owned(), counts(5, 3)),
        ("B".to_owned(), counts(4, 1)),
    ]);
    assert_eq!(
        pool_counts(store, TRIAL).await,
        expected,
        "issued untouched"
    );
    for (code, arm_id, position) in [("N-0", "A", 3), ("N-1", "A", 4), ("N-2", "B", 3)] {
        let stored = stored_code(store, TRIAL, code).await;
        assert_eq!(
            (stored.arm_id.as_str(), stored.position, stored.source),
            (arm_id, position, CodeSource::Uploaded),
            "code {code}"
        );
    }
    assert_eq!(
        stored_code(store, TRIAL, "A-0").await.source,
        CodeSource::Generated,
        "stored codes keep their source"
    );

    // Issue order: the codes already there first, then the top-up's.
    let mut codes = Vec::new();
    for (subject, arm) in [("S5", "A"), ("S6", "B"), ("S7", "B"), ("S8", "A")] {
        codes.push(assign(store, TRIAL, subject, arm).await.code);
    }
    assert_eq!(codes, ["N-0", "B-1", "B-2", "N-1"]);

    // A is empty again; a top-up of that arm only, after its last position.
    add(store, TRIAL, &[pool("A", &["N-3", "N-4"])])
        .await
        .expect("top up one arm");
    assert_eq!(stored_code(store, TRIAL, "N-3").await.position, 5);
    assert_eq!(assign(store, TRIAL, "S9", "A").await.code, "N-3");
    assert_eq!(assign(store, TRIAL, "S10", "B").await.code, "N-2");
    assert_eq!(
        pool_counts(store, TRIAL).await,
        BTreeMap::from([
            ("A".to_owned(), counts(7, 6)),
            ("B".to_owned(), counts(4, 4)),
        ])
    );
}

/// A refused top-up writes nothing: no code, no count, no audit record.
pub(super) async fn a_bad_top_up_is_refused_and_writes_nothing(store: &dyn Store) {
    const TRIAL: &str = "CONF-TOPUP-BAD";
    put(store, TRIAL, &two_arm_pools(), CodeSource::Generated)
        .await
        .expect("store the pools");
    let before_counts = pool_counts(store, TRIAL).await;
    let before = audit_len(store).await;

    // Clashes with either arm's stored codes are all listed; the new code
    // given alongside them is not written.
    let clash = add(
        store,
        TRIAL,
        &[pool("A", &["N-0", "B-1"]), pool("B", &["A-2"])],
    )
    .await;
    let Err(StoreError::CodesTaken(mut taken)) = clash else {
        panic!("expected CodesTaken, got {clash:?}");
    };
    taken.sort();
    assert_eq!(taken, ["A-2", "B-1"]);
    assert_eq!(store.code(TRIAL, "N-0").await, Ok(None), "nothing written");

    for (pools, call) in [
        (vec![pool("C", &["N-0"])], "unknown arm"),
        (vec![pool("A", &["N-0", "N-0"])], "code twice"),
        (
            vec![pool("A", &["N-0"]), pool("B", &["N-0"])],
            "code in two arms",
        ),
        (vec![pool("A", &["N-0"]), pool("A", &["N-1"])], "arm twice"),
        (vec![pool("A", &[])], "no codes"),
        (Vec::new(), "nothing"),
    ] {
        let refused = add(store, TRIAL, &pools).await;
        assert!(
            matches!(refused, Err(StoreError::Invalid(_))),
            "{call}: expected Invalid, got {refused:?}"
        );
    }
    assert_eq!(store.code(TRIAL, "N-0").await, Ok(None), "nothing written");
    assert_eq!(
        add(store, UNKNOWN_TRIAL, &[pool("A", &["N-0"])]).await,
        Err(StoreError::NotFound)
    );
    assert_eq!(pool_counts(store, TRIAL).await, before_counts);
    assert_appended(store, before, 0, "refused add_codes").await;
}

/// Codes belong to one trial: another trial's codes do not clash.
pub(super) async fn a_top_up_clashes_only_within_its_trial(store: &dyn Store) {
    put(
        store,
        "CONF-TOPUP-1",
        &two_arm_pools(),
        CodeSource::Generated,
    )
    .await
    .expect("first trial");
    put(
        store,
        "CONF-TOPUP-2",
        &[pool("A", &["X-0"]), pool("B", &["X-1"])],
        CodeSource::Uploaded,
    )
    .await
    .expect("second trial");
    add(store, "CONF-TOPUP-2", &[pool("A", &["A-0"])])
        .await
        .expect("another trial's code is free here");
    assert_eq!(stored_code(store, "CONF-TOPUP-2", "A-0").await.position, 1);
}
