//! Committing allocations: positions, numbers, fencing and refusals.

use super::*;

/// A commit takes the stream's next position and the site's next number.
pub(super) async fn commit_takes_the_next_position_and_number(store: &dyn Store) {
    const TRIAL: &str = "CONF-COMMIT";
    active_trial(store, TRIAL).await;
    assert_eq!(
        store.stream_version(TRIAL, "S1").await,
        Ok(0),
        "a new stream"
    );

    let new = new_allocation(TRIAL, "CONF-C-001", "FR-MTP", "S1");
    let before = audit_len(store).await;
    let first = store
        .commit_allocation(&request(new.clone(), 0, CapLimits::default()))
        .await
        .expect("commit at version 0");
    assert_records_request(&first, &new);
    assert_eq!(first.position, 0);
    assert_eq!(
        first.randomisation_number,
        randomisation_number("FR-MTP", 1)
    );
    assert_eq!(first.randomisation_number, "FR-MTP-0001");
    assert_eq!(
        store.stream_version(TRIAL, "S1").await,
        Ok(1),
        "the stream moved on"
    );
    assert_eq!(
        store.allocation(TRIAL, "CONF-C-001").await,
        Ok(Some(first.clone()))
    );
    assert_appended(store, before, 1, "commit_allocation").await;

    let new = new_allocation(TRIAL, "CONF-C-002", "FR-MTP", "S1");
    let second = store
        .commit_allocation(&request(new.clone(), 1, CapLimits::default()))
        .await
        .expect("commit at version 1");
    assert_records_request(&second, &new);
    assert_eq!(second.position, 1);
    assert_eq!(second.randomisation_number, "FR-MTP-0002");
    assert!(
        second.sequence > first.sequence,
        "sequence follows commit order"
    );
    assert_eq!(store.stream_version(TRIAL, "S1").await, Ok(2));
    assert_appended(store, before, 2, "two commits").await;
}

/// Review K2: a commit computed under an earlier version of the trial is
/// refused and writes nothing.
pub(super) async fn a_commit_under_a_superseded_version_is_refused(store: &dyn Store) {
    const TRIAL: &str = "CONF-SUPERSEDED";
    active_trial(store, TRIAL).await;
    let audited = store.audit_records(1, u32::MAX).await.map(|r| r.len());
    for version in [0, 2] {
        let mut allocation = new_allocation(TRIAL, "CONF-S-001", "FR-MTP", "S1");
        allocation.trial_version = version;
        let stale = request(allocation, 0, CapLimits::default());
        assert_eq!(
            refused_commit(store, &stale).await,
            StoreError::Superseded,
            "computed under version {version}"
        );
    }
    assert_eq!(store.allocation(TRIAL, "CONF-S-001").await, Ok(None));
    assert_eq!(store.stream_version(TRIAL, "S1").await, Ok(0));
    assert_eq!(
        store.audit_records(1, u32::MAX).await.map(|r| r.len()),
        audited
    );
    allocate(store, TRIAL, "CONF-S-001", "FR-MTP", "S1").await;
}

/// A commit computed at a stale stream version is fenced and writes nothing.
pub(super) async fn commit_is_fenced(store: &dyn Store) {
    const TRIAL: &str = "CONF-FENCE";
    active_trial(store, TRIAL).await;
    allocate(store, TRIAL, "CONF-F-001", "FR-MTP", "S1").await;

    let stale = request(
        new_allocation(TRIAL, "CONF-F-002", "FR-MTP", "S1"),
        0,
        CapLimits::default(),
    );
    assert_eq!(
        refused_commit(store, &stale).await,
        StoreError::Fenced,
        "stale version"
    );
    assert_eq!(store.allocation(TRIAL, "CONF-F-002").await, Ok(None));

    let ahead = request(
        new_allocation(TRIAL, "CONF-F-002", "FR-MTP", "S1"),
        5,
        CapLimits::default(),
    );
    assert_eq!(
        refused_commit(store, &ahead).await,
        StoreError::Fenced,
        "version ahead"
    );

    // A stream nobody has committed to is at version 0, not 1.
    let fresh = request(
        new_allocation(TRIAL, "CONF-F-003", "FR-MTP", "S2"),
        1,
        CapLimits::default(),
    );
    assert_eq!(
        refused_commit(store, &fresh).await,
        StoreError::Fenced,
        "new stream"
    );
    assert_eq!(store.stream_version(TRIAL, "S2").await, Ok(0));

    // Recomputed at the current version, the same subject goes through.
    let retried = request(
        new_allocation(TRIAL, "CONF-F-002", "FR-MTP", "S1"),
        1,
        CapLimits::default(),
    );
    let record = store
        .commit_allocation(&retried)
        .await
        .expect("commit at the current version");
    assert_eq!(record.position, 1);
    assert_eq!(
        record.randomisation_number, "FR-MTP-0002",
        "refusals use no numbers"
    );
}

/// Repeated subjects, drafts, closed and unknown trials are refused.
pub(super) async fn commit_refuses_repeats_drafts_closed_and_unknown_trials(store: &dyn Store) {
    const TRIAL: &str = "CONF-REFUSE";
    draft_trial(store, TRIAL).await;
    let early = request(
        new_allocation(TRIAL, "CONF-X-001", "FR-MTP", "S1"),
        0,
        CapLimits::default(),
    );
    let error = refused_commit(store, &early).await;
    assert!(
        matches!(error, StoreError::Conflict(_)),
        "commit on a draft: {error:?}"
    );

    activate_draft(store, TRIAL).await;
    let first = allocate(store, TRIAL, "CONF-X-001", "FR-MTP", "S1").await;
    let again = request(
        new_allocation(TRIAL, "CONF-X-001", "FR-MTP", "S1"),
        1,
        CapLimits::default(),
    );
    assert_eq!(
        refused_commit(store, &again).await,
        StoreError::SubjectExists,
        "same stream"
    );
    let elsewhere = request(
        new_allocation(TRIAL, "CONF-X-001", "FR-PAR", "S2"),
        0,
        CapLimits::default(),
    );
    assert_eq!(
        refused_commit(store, &elsewhere).await,
        StoreError::SubjectExists,
        "other stream"
    );
    assert_eq!(
        store.allocation(TRIAL, "CONF-X-001").await,
        Ok(Some(first)),
        "first allocation kept"
    );

    close_trial(store, TRIAL).await;
    let late = request(
        new_allocation(TRIAL, "CONF-X-002", "FR-MTP", "S1"),
        1,
        CapLimits::default(),
    );
    let error = refused_commit(store, &late).await;
    assert!(
        matches!(error, StoreError::Conflict(_)),
        "commit on a closed trial: {error:?}"
    );

    let before = audit_len(store).await;
    let unknown = request(
        new_allocation(UNKNOWN_TRIAL, "CONF-X-003", "FR-MTP", "S1"),
        0,
        CapLimits::default(),
    );
    assert_eq!(
        store.commit_allocation(&unknown).await,
        Err(StoreError::NotFound),
        "unknown trial"
    );
    assert_eq!(
        store.trial(UNKNOWN_TRIAL).await,
        Ok(None),
        "no trial is created"
    );
    assert_appended(store, before, 0, "commit on an unknown trial").await;
}

/// Randomisation numbers run per site, across strata and streams.
pub(super) async fn numbers_run_per_site(store: &dyn Store) {
    const TRIAL: &str = "CONF-NUMBERS";
    active_trial(store, TRIAL).await;
    let plan = [
        ("CONF-N-001", "FR-MTP", "S1", "FR-MTP-0001"),
        ("CONF-N-002", "FR-MTP", "S2", "FR-MTP-0002"),
        ("CONF-N-003", "FR-PAR", "S1", "FR-PAR-0001"),
        ("CONF-N-004", "FR-MTP", "S1", "FR-MTP-0003"),
        ("CONF-N-005", "FR-PAR", "S2", "FR-PAR-0002"),
    ];
    for (subject, site, stratum, number) in plan {
        let record = allocate(store, TRIAL, subject, site, stratum).await;
        assert_eq!(record.randomisation_number, number, "number of {subject}");
    }
}

/// Commits racing on one stream at the same version: exactly one wins and
/// the others are fenced, as when two service replicas compute at once.
pub(super) async fn racing_commits_have_one_winner(store: &dyn Store) {
    const TRIAL: &str = "CONF-RACE";
    active_trial(store, TRIAL).await;
    let racer = |n: u32| {
        request(
            new_allocation(TRIAL, &format!("CONF-RACE-{n}"), "FR-MTP", "S1"),
            0,
            CapLimits::default(),
        )
    };
    let (a, b, c, d) = (racer(1), racer(2), racer(3), racer(4));

    let before = audit_len(store).await;
    let results = tokio::join!(
        store.commit_allocation(&a),
        store.commit_allocation(&b),
        store.commit_allocation(&c),
        store.commit_allocation(&d),
    );
    let results = [results.0, results.1, results.2, results.3];
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "exactly one racing commit wins: {results:?}");
    let others_fenced = results
        .iter()
        .all(|r| matches!(r, Ok(_) | Err(StoreError::Fenced)));
    assert!(others_fenced, "the losers are fenced: {results:?}");
    assert_eq!(store.stream_version(TRIAL, "S1").await, Ok(1));
    assert_eq!(store.counts(TRIAL).await.map(|c| c.total), Ok(1));
    assert_appended(store, before, 1, "racing commits").await;
}
