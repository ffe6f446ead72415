//! Enrolment caps, checked inside the commit.

use super::*;

/// Fills a cap of two, marks the first allocation in error (it still
/// counts), then checks the next commit is refused without a trace.
async fn cap_holds(
    store: &dyn Store,
    trial_id: &str,
    caps: CapLimits,
    fill: [(&str, &str); 2],
    over: (&str, &str),
    kind: CapKind,
) {
    active_trial(store, trial_id).await;
    for (n, (site, stratum)) in fill.into_iter().enumerate() {
        let new = new_allocation(trial_id, &format!("{trial_id}-{n}"), site, stratum);
        commit(store, new, caps)
            .await
            .expect("commit under the cap");
    }
    mark_in_error(store, trial_id, &format!("{trial_id}-0")).await;
    // The keyed counts agree with a full count of the rows.
    let counts = store.counts(trial_id).await.expect("counts");
    let (site, stratum) = fill[1];
    let keyed = store
        .cap_counts(trial_id, site, stratum)
        .await
        .expect("cap counts");
    assert_eq!(
        keyed,
        (
            counts.total,
            counts.by_site.get(site).copied().unwrap_or(0),
            counts.by_stratum.get(stratum).copied().unwrap_or(0),
        ),
        "{trial_id}: cap counts by key"
    );

    let (site, stratum) = over;
    let new = new_allocation(trial_id, &format!("{trial_id}-over"), site, stratum);
    let version = store
        .stream_version(trial_id, stratum)
        .await
        .expect("stream version");
    let error = refused_commit(store, &request(new, version, caps)).await;
    assert_eq!(
        error,
        StoreError::CapReached(kind),
        "{trial_id}: commit over the cap"
    );
}

/// The trial's total cap.
pub(super) async fn total_cap_is_enforced(store: &dyn Store) {
    let caps = CapLimits {
        total: Some(2),
        ..CapLimits::default()
    };
    let fill = [("FR-MTP", "S1"), ("FR-PAR", "S2")];
    cap_holds(
        store,
        "CONF-CAP-TOTAL",
        caps,
        fill,
        ("FR-LYO", "S3"),
        CapKind::Total,
    )
    .await;
}

/// A site's cap, which leaves other sites free.
pub(super) async fn site_cap_leaves_other_sites_free(store: &dyn Store) {
    const TRIAL: &str = "CONF-CAP-SITE";
    let caps = CapLimits {
        site: Some(2),
        ..CapLimits::default()
    };
    let fill = [("FR-MTP", "S1"), ("FR-MTP", "S2")];
    cap_holds(store, TRIAL, caps, fill, ("FR-MTP", "S3"), CapKind::Site).await;
    let other = commit(
        store,
        new_allocation(TRIAL, "CONF-CAP-SITE-par", "FR-PAR", "S1"),
        caps,
    )
    .await;
    assert!(other.is_ok(), "another site is under its cap: {other:?}");
}

/// A stratum's cap, which leaves other strata free.
pub(super) async fn stratum_cap_leaves_other_strata_free(store: &dyn Store) {
    const TRIAL: &str = "CONF-CAP-STRATUM";
    let caps = CapLimits {
        stratum: Some(2),
        ..CapLimits::default()
    };
    let fill = [("FR-MTP", "S1"), ("FR-PAR", "S1")];
    cap_holds(store, TRIAL, caps, fill, ("FR-LYO", "S1"), CapKind::Stratum).await;
    let other = commit(
        store,
        new_allocation(TRIAL, "CONF-CAP-STRATUM-s2", "FR-LYO", "S2"),
        caps,
    )
    .await;
    assert!(other.is_ok(), "another stratum is under its cap: {other:?}");
}

/// Commits racing on eight independent streams (no fence between them) meet
/// a total cap of three and a site cap of two: exactly the caps' worth win,
/// the others are refused at the cap, and the site numbers stay one run.
pub(super) async fn racing_commits_on_other_streams_meet_exact_caps(store: &dyn Store) {
    const TRIAL: &str = "CONF-CAP-RACE";
    active_trial(store, TRIAL).await;
    let caps = CapLimits {
        total: Some(3),
        site: Some(2),
        ..CapLimits::default()
    };
    let racers: [CommitRequest; 8] = std::array::from_fn(|n| {
        let site = if n % 2 == 0 { "FR-MTP" } else { "FR-PAR" };
        let new = new_allocation(TRIAL, &format!("{TRIAL}-{n}"), site, &format!("S{n}"));
        request(new, 0, caps)
    });
    let [a, b, c, d, e, f, g, h] = &racers;
    let results = tokio::join!(
        store.commit_allocation(a),
        store.commit_allocation(b),
        store.commit_allocation(c),
        store.commit_allocation(d),
        store.commit_allocation(e),
        store.commit_allocation(f),
        store.commit_allocation(g),
        store.commit_allocation(h),
    );
    let results = [
        results.0, results.1, results.2, results.3, results.4, results.5, results.6, results.7,
    ];
    let won: Vec<&AllocationRecord> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(won.len(), 3, "exactly the total cap wins: {results:?}");
    let refusals_are_caps = results
        .iter()
        .all(|r| matches!(r, Ok(_) | Err(StoreError::CapReached(_))));
    assert!(refusals_are_caps, "the others meet a cap: {results:?}");
    let counts = store.counts(TRIAL).await.expect("counts");
    assert_eq!(counts.total, 3);
    assert!(counts.by_site.values().all(|n| *n <= 2), "{counts:?}");
    let mut numbers: Vec<&str> = won
        .iter()
        .map(|a| a.randomisation_number.as_str())
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), 3, "every number once: {numbers:?}");
    for number in numbers {
        assert!(
            number.ends_with("-0001") || number.ends_with("-0002"),
            "{number}"
        );
    }
}
