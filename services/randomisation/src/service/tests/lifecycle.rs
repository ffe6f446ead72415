//! Lifecycle gates: only an active trial randomises; activation checks the
//! reviewed hash.

use super::*;

#[tokio::test]
async fn only_an_active_trial_randomises_and_activation_checks_the_reviewed_hash() {
    let fixture = Fixture::new().await;
    // The admin reviewed this first draft; the statistician then replaced it.
    let reviewed = fixture
        .service
        .register_trial(&statistician(), &RESPINE_YAML.replace("cap: 40", "cap: 45"))
        .await
        .expect("registers");
    let draft = fixture
        .service
        .register_trial(&statistician(), RESPINE_YAML)
        .await
        .expect("a draft may be re-registered");
    assert_ne!(
        reviewed.record.definition_sha256,
        draft.record.definition_sha256
    );
    let stale = fixture
        .service
        .activate_trial(&admin(), "RESPINE", &reviewed.record.definition_sha256)
        .await;
    assert_failed_precondition(&stale);

    let on_draft = fixture
        .randomise(
            "FR-MTP",
            "SUBJ-1",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await;
    assert_failed_precondition(&on_draft);

    // A hash other than the reviewed one must not activate anything.
    let wrong_hash = "0".repeat(64);
    let activated = fixture
        .service
        .activate_trial(&admin(), "RESPINE", &wrong_hash)
        .await;
    assert_failed_precondition(&activated);
    let still = fixture
        .service
        .get_trial(&admin(), "RESPINE")
        .await
        .expect("readable");
    assert_eq!(still.record.state, TrialState::Draft);
    assert!(
        still.record.sealed_seed.is_none(),
        "no seed is sealed for a refused activation"
    );

    fixture
        .service
        .activate_trial(&admin(), "RESPINE", &draft.record.definition_sha256)
        .await
        .expect("the reviewed hash activates");

    // The frozen design cannot be replaced by re-registering.
    let re_registered = fixture
        .service
        .register_trial(&statistician(), RESPINE_YAML)
        .await;
    assert_failed_precondition(&re_registered);

    fixture
        .randomise(
            "FR-MTP",
            "SUBJ-1",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await
        .expect("an active trial randomises");

    let closed = fixture
        .service
        .close_enrolment(&admin(), "RESPINE", "recruitment target met")
        .await
        .expect("closes");
    assert_eq!(closed.record.state, TrialState::Closed);
    let after_close = fixture
        .randomise(
            "FR-MTP",
            "SUBJ-2",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await;
    assert_failed_precondition(&after_close);
    // Idempotency outlives enrolment: a late retry still learns its allocation.
    let late_retry = fixture
        .randomise(
            "FR-MTP",
            "SUBJ-1",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await
        .expect("a retry of an earlier allocation replays after close");
    assert!(late_retry.replayed);

    // Unknown trial: a caller whose token covers every trial gets NOT_FOUND.
    let everywhere = caller(
        "investigator@FR-MTP",
        &[Role::SiteInvestigator],
        &["FR-MTP"],
        TrialScope::All,
    );
    let unknown = fixture
        .service
        .randomise(
            &everywhere,
            &command(
                "NO-SUCH-TRIAL",
                "FR-MTP",
                "SUBJ-3",
                respine_subject(MODERATE_PAIN),
            ),
        )
        .await;
    assert_not_found(&unknown);
    fixture.assert_audit_chain_verifies().await;
}
