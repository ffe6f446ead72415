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
