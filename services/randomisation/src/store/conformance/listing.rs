//! Reading allocations back: counts, listings and streams.

use super::*;

/// Counts cover every allocation, in error or not.
pub(super) async fn counts_include_allocations_in_error(store: &dyn Store) {
    const TRIAL: &str = "CONF-COUNTS";
    active_trial(store, TRIAL).await;
    assert_eq!(
        store.counts(TRIAL).await,
        Ok(Counts::default()),
        "no allocations yet"
    );

    allocate(store, TRIAL, "CONF-K-001", "FR-MTP", "S1").await;
    allocate(store, TRIAL, "CONF-K-002", "FR-MTP", "S2").await;
    allocate(store, TRIAL, "CONF-K-003", "FR-PAR", "S1").await;
    allocate(store, TRIAL, "CONF-K-004", "FR-LYO", "S1").await;
    mark_in_error(store, TRIAL, "CONF-K-003").await;

    let expected = Counts {
        total: 4,
        in_error: 1,
        by_site: BTreeMap::from([
            ("FR-LYO".into(), 1),
            ("FR-MTP".into(), 2),
            ("FR-PAR".into(), 1),
        ]),
        by_stratum: BTreeMap::from([("S1".into(), 3), ("S2".into(), 1)]),
    };
    assert_eq!(store.counts(TRIAL).await, Ok(expected));
}

/// Five allocations for the listing checks, plus one in another trial that
/// must never show.
async fn list_fixture(store: &dyn Store, trial_id: &str) {
    let other = format!("{trial_id}-OTHER");
    active_trial(store, trial_id).await;
    active_trial(store, &other).await;
    allocate(store, trial_id, "L1", "FR-MTP", "S1").await;
    allocate(store, &other, "L-OTHER", "FR-MTP", "S1").await;
    allocate(store, trial_id, "L2", "FR-PAR", "S1").await;
    allocate(store, trial_id, "L3", "FR-MTP", "S2").await;
    allocate(store, trial_id, "L4", "FR-LYO", "S2").await;
    allocate(store, trial_id, "L5", "FR-PAR", "S2").await;
}

async fn list(store: &dyn Store, query: &AllocationQuery) -> Vec<AllocationRecord> {
    store
        .list_allocations(query)
        .await
        .expect("list allocations")
}

/// Listing is in commit order and pages by sequence.
pub(super) async fn listing_is_in_commit_order_and_pages(store: &dyn Store) {
    const TRIAL: &str = "CONF-LIST";
    list_fixture(store, TRIAL).await;
    let all = list(store, &query(TRIAL, 0, 100)).await;
    assert_eq!(
        subjects(&all),
        ["L1", "L2", "L3", "L4", "L5"],
        "the trial's allocations in order"
    );
    assert!(
        all.windows(2).all(|w| w[0].sequence < w[1].sequence),
        "sequences increase"
    );

    let mut paged = Vec::new();
    let mut after = 0;
    for expected in [&["L1", "L2"][..], &["L3", "L4"], &["L5"], &[]] {
        let page = list(store, &query(TRIAL, after, 2)).await;
        assert_eq!(subjects(&page), expected, "page after sequence {after}");
        after = page.last().map_or(after, |r| r.sequence);
        paged.extend(page);
    }
    assert_eq!(paged, all, "pages add up to the whole listing");
    assert_eq!(
        subjects(&list(store, &query(TRIAL, 0, 3)).await),
        ["L1", "L2", "L3"]
    );
}

/// Site and stratum filters, alone, together and with a limit.
pub(super) async fn listing_filters_by_site_and_stratum(store: &dyn Store) {
    const TRIAL: &str = "CONF-LIST-FILTER";
    list_fixture(store, TRIAL).await;
    let filtered = |sites: Option<Vec<String>>, stratum: Option<&str>, after: i64, limit: u32| {
        AllocationQuery {
            sites,
            stratum: stratum.map(str::to_owned),
            ..query(TRIAL, after, limit)
        }
    };
    let cases = [
        (
            filtered(sites(&["FR-PAR"]), None, 0, 100),
            &["L2", "L5"][..],
        ),
        (
            filtered(sites(&["FR-PAR", "FR-LYO"]), None, 0, 100),
            &["L2", "L4", "L5"],
        ),
        (filtered(sites(&["FR-PAR", "FR-LYO"]), None, 0, 1), &["L2"]),
        (filtered(None, Some("S2"), 0, 100), &["L3", "L4", "L5"]),
        (filtered(sites(&["FR-MTP"]), Some("S2"), 0, 100), &["L3"]),
        (filtered(sites(&["FR-NONE"]), None, 0, 100), &[]),
        // No sites at all means nothing, not everything.
        (filtered(sites(&[]), None, 0, 100), &[]),
    ];
    for (query, expected) in cases {
        assert_eq!(subjects(&list(store, &query).await), expected, "{query:?}");
    }

    // The limit counts matching records, so a filtered page is full.
    let first = list(store, &filtered(sites(&["FR-PAR"]), None, 0, 1)).await;
    assert_eq!(subjects(&first), ["L2"]);
    let after = first.last().map_or(0, |r| r.sequence);
    assert_eq!(
        subjects(&list(store, &filtered(sites(&["FR-PAR"]), None, after, 1)).await),
        ["L5"]
    );
}

/// A limit of 0 returns nothing.
pub(super) async fn listing_with_limit_zero_is_empty(store: &dyn Store) {
    const TRIAL: &str = "CONF-LIST-ZERO";
    active_trial(store, TRIAL).await;
    allocate(store, TRIAL, "CONF-Z-001", "FR-MTP", "S1").await;
    assert_eq!(
        store.list_allocations(&query(TRIAL, 0, 0)).await,
        Ok(vec![]),
        "limit 0"
    );
}

/// A stream's allocations come back in position order, and only its own.
pub(super) async fn stream_allocations_are_in_position_order(store: &dyn Store) {
    const TRIAL: &str = "CONF-STREAM";
    active_trial(store, TRIAL).await;
    let a = allocate(store, TRIAL, "CONF-S-A", "FR-MTP", "S1").await;
    let b = allocate(store, TRIAL, "CONF-S-B", "FR-PAR", "S2").await;
    let c = allocate(store, TRIAL, "CONF-S-C", "FR-PAR", "S1").await;
    let d = allocate(store, TRIAL, "CONF-S-D", "FR-MTP", "S1").await;

    let s1 = store
        .stream_allocations(TRIAL, "S1")
        .await
        .expect("stream S1");
    assert_eq!(s1, [a, c, d], "stream S1");
    assert_eq!(s1.iter().map(|r| r.position).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(
        store.stream_allocations(TRIAL, "S2").await,
        Ok(vec![b]),
        "stream S2"
    );
    assert_eq!(
        store.stream_allocations(TRIAL, "S9").await,
        Ok(vec![]),
        "an unused stream"
    );
}
