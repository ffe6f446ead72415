//! A trial's life: draft, activation, amendment, closing.

use super::*;

/// Drafts are inserted, then replaced while still drafts.
pub(super) async fn drafts_are_registered_then_replaced(store: &dyn Store) {
    const TRIAL: &str = "CONF-REGISTER";
    assert_eq!(store.trial(UNKNOWN_TRIAL).await, Ok(None), "unknown trial");

    let first = draft_record(TRIAL, 1, &sha('1'));
    let before = audit_len(store).await;
    register(store, &first).await.expect("register a new draft");
    assert_appended(store, before, 1, "register_draft").await;
    assert_eq!(stored_trial(store, TRIAL).await, first);

    let replacement = TrialRecord {
        definition_yaml: format!("id: {TRIAL}\nversion: 2\narms: [A, B]\n"),
        ..draft_record(TRIAL, 2, &sha('2'))
    };
    let before = audit_len(store).await;
    register(store, &replacement)
        .await
        .expect("replace the draft");
    assert_appended(store, before, 1, "register_draft again").await;
    assert_eq!(
        stored_trial(store, TRIAL).await,
        replacement,
        "the draft is replaced"
    );
}

/// Activation needs the reviewed digest, seals the seed and happens once.
pub(super) async fn activation_needs_the_reviewed_digest_and_happens_once(store: &dyn Store) {
    const TRIAL: &str = "CONF-ACTIVATE";
    let at = now_rfc3339();
    let unknown = activate(store, UNKNOWN_TRIAL, &sha('1'), &at).await;
    assert_eq!(
        unknown,
        Err(StoreError::NotFound),
        "activate an unknown trial"
    );

    let draft = draft_trial(store, TRIAL).await;
    let before = audit_len(store).await;
    assert_conflict(
        activate(store, TRIAL, &sha('9'), &at).await,
        "activate with the wrong digest",
    );
    assert_eq!(
        stored_trial(store, TRIAL).await,
        draft,
        "a refused activation changes nothing"
    );
    assert_appended(store, before, 0, "refused activation").await;

    let active = activate(store, TRIAL, &draft.definition_sha256, &at).await;
    let expected = TrialRecord {
        state: TrialState::Active,
        sealed_seed: Some(SEED.to_vec()),
        algorithm_version: Some(ALGORITHM_VERSION),
        activated_at: Some(at.clone()),
        ..draft.clone()
    };
    assert_eq!(active, Ok(expected.clone()), "the activated trial");
    assert_eq!(
        stored_trial(store, TRIAL).await,
        expected,
        "the stored trial"
    );
    assert_appended(store, before, 1, "activate").await;

    let before = audit_len(store).await;
    assert_conflict(
        activate(store, TRIAL, &draft.definition_sha256, &at).await,
        "activate twice",
    );
    let redraft = draft_record(TRIAL, 3, &sha('3'));
    assert_conflict(
        register(store, &redraft).await,
        "register_draft on an active trial",
    );
    assert_eq!(
        stored_trial(store, TRIAL).await,
        expected,
        "the design stays frozen"
    );
    assert_appended(store, before, 0, "refused changes to an active trial").await;
}

/// Amendments apply only to an active trial at the stated version.
pub(super) async fn amendments_need_an_active_trial_at_the_stated_version(store: &dyn Store) {
    const TRIAL: &str = "CONF-AMEND";
    draft_trial(store, TRIAL).await;
    let before = audit_len(store).await;
    assert_conflict(amend_next(store, TRIAL, 1).await, "amend a draft");
    assert_appended(store, before, 0, "refused amendment of a draft").await;

    let active = activate_draft(store, TRIAL).await;
    let before = audit_len(store).await;
    assert_conflict(
        amend_next(store, TRIAL, 2).await,
        "amend from the wrong version",
    );
    assert_eq!(
        stored_trial(store, TRIAL).await,
        active,
        "a refused amendment changes nothing"
    );
    assert_appended(store, before, 0, "refused amendment").await;

    let amended = amend_next(store, TRIAL, 1)
        .await
        .expect("amend from version 1");
    let expected = TrialRecord {
        version: 2,
        definition_yaml: format!("id: {TRIAL}\nversion: 2\n"),
        definition_sha256: sha('2'),
        ..active
    };
    assert_eq!(amended, expected, "the amended trial");
    assert_eq!(
        stored_trial(store, TRIAL).await,
        expected,
        "the stored trial"
    );
    assert_appended(store, before, 1, "amend").await;

    let before = audit_len(store).await;
    assert_conflict(
        amend_next(store, TRIAL, 1).await,
        "amend from a superseded version",
    );
    let unknown = amend_next(store, UNKNOWN_TRIAL, 1).await;
    assert_eq!(unknown, Err(StoreError::NotFound), "amend an unknown trial");
    assert_appended(store, before, 0, "refused amendments").await;
}

/// Closing is active → closed, once; a closed trial is frozen.
pub(super) async fn closing_happens_once_and_freezes_the_trial(store: &dyn Store) {
    const TRIAL: &str = "CONF-CLOSE";
    let at = now_rfc3339();
    draft_trial(store, TRIAL).await;
    let before = audit_len(store).await;
    assert_conflict(close(store, TRIAL, &at).await, "close a draft");
    assert_appended(store, before, 0, "refused close of a draft").await;

    let active = activate_draft(store, TRIAL).await;
    let before = audit_len(store).await;
    let closed = close(store, TRIAL, &at).await;
    let expected = TrialRecord {
        state: TrialState::Closed,
        closed_at: Some(at.clone()),
        ..active
    };
    assert_eq!(closed, Ok(expected.clone()), "the closed trial");
    assert_eq!(
        stored_trial(store, TRIAL).await,
        expected,
        "the stored trial"
    );
    assert_appended(store, before, 1, "close").await;

    let before = audit_len(store).await;
    assert_conflict(close(store, TRIAL, &at).await, "close twice");
    assert_conflict(amend_next(store, TRIAL, 1).await, "amend a closed trial");
    let redraft = draft_record(TRIAL, 1, &sha('1'));
    assert_conflict(
        register(store, &redraft).await,
        "register_draft on a closed trial",
    );
    let unknown = close(store, UNKNOWN_TRIAL, &at).await;
    assert_eq!(unknown, Err(StoreError::NotFound), "close an unknown trial");
    assert_eq!(
        stored_trial(store, TRIAL).await,
        expected,
        "a closed trial stays closed"
    );
    assert_appended(store, before, 0, "refused changes to a closed trial").await;
}
