//! Stratum corrections and subjects randomised in error.

use super::*;

#[tokio::test]
async fn corrections_record_the_truth_without_touching_the_arm_or_freeing_the_slot() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    let original = fixture
        .randomise(
            "FR-MTP",
            "SUBJ-1",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await
        .expect("allocates")
        .allocation;
    assert_eq!(original.stratum, "site=FR-MTP,baseline_pain=moderate");

    let empty_reason = fixture
        .service
        .correct_stratum(
            &admin(),
            "RESPINE",
            "SUBJ-1",
            &respine_subject(SEVERE_PAIN),
            "  ",
        )
        .await;
    assert_eq!(problem_paths(&empty_reason), ["reason"]);

    let mut bad = respine_subject(SEVERE_PAIN);
    bad.insert("age_years".to_owned(), CovariateInput::Boolean(true));
    let bad_covariates = fixture
        .service
        .correct_stratum(
            &admin(),
            "RESPINE",
            "SUBJ-1",
            &bad,
            "VAS transcribed wrongly",
        )
        .await;
    assert_eq!(
        problem_paths(&bad_covariates),
        ["corrected_covariates.age_years"]
    );

    let corrected = fixture
        .service
        .correct_stratum(
            &admin(),
            "RESPINE",
            "SUBJ-1",
            &respine_subject(SEVERE_PAIN),
            "VAS transcribed wrongly",
        )
        .await
        .expect("the admin corrects the stratum");
    assert_eq!(
        corrected.stratum, original.stratum,
        "'randomised as' never changes"
    );
    assert_eq!(
        corrected.corrected_stratum.as_deref(),
        Some("site=FR-MTP,baseline_pain=severe")
    );
    assert_eq!(
        corrected.correction_reason.as_deref(),
        Some("VAS transcribed wrongly")
    );
    assert_eq!(corrected.arm, original.arm);
    assert_eq!(corrected.position, original.position);
    assert_eq!(
        corrected.randomisation_number,
        original.randomisation_number
    );

    let before = fixture
        .service
        .trial_status(&admin(), "RESPINE")
        .await
        .expect("status");
    assert_eq!((before.randomised, before.randomised_in_error), (1, 0));

    let marked = fixture
        .service
        .mark_randomised_in_error(
            &admin(),
            "RESPINE",
            "SUBJ-1",
            "consent withdrawn before randomisation",
        )
        .await
        .expect("the admin marks the allocation");
    assert!(marked.in_error);
    assert_eq!(marked.arm, original.arm);
    let after = fixture
        .service
        .trial_status(&admin(), "RESPINE")
        .await
        .expect("status");
    assert_eq!(after.randomised_in_error, 1);
    assert_eq!(after.randomised, before.randomised, "the slot stays used");

    // The stream does not reuse the position.
    let next = fixture
        .randomise(
            "FR-MTP",
            "SUBJ-2",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await
        .expect("allocates");
    assert_eq!(next.allocation.position, 1);

    let twice = fixture
        .service
        .mark_randomised_in_error(&admin(), "RESPINE", "SUBJ-1", "again")
        .await;
    assert_failed_precondition(&twice);
    fixture.assert_audit_chain_verifies().await;
}
