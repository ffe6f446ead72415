//! Amendments to an active trial.

use super::*;

#[tokio::test]
async fn amendments_need_a_reason_the_next_version_and_an_unchanged_method() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    let version_two = RESPINE_YAML.replace("version: 1", "version: 2");

    let no_reason = fixture
        .service
        .amend_trial(&admin(), &version_two.replace("cap: 30", "cap: 35"), " ")
        .await;
    assert_eq!(problem_paths(&no_reason), ["reason"]);

    let new_blocks = version_two.replace("block_sizes: [2, 4]", "block_sizes: [4]");
    let method_changed = fixture
        .service
        .amend_trial(&admin(), &new_blocks, "smaller blocks")
        .await;
    let paths = problem_paths(&method_changed);
    assert!(paths.iter().any(|p| p.contains("method")), "{paths:?}");

    let ids_bound = version_two.replacen("caps:", "subject_ids: { site_prefix: true }\ncaps:", 1);
    let form_changed = fixture
        .service
        .amend_trial(&admin(), &ids_bound, "site-prefixed ids")
        .await;
    let paths = problem_paths(&form_changed);
    assert!(paths.iter().any(|p| p.contains("subject_ids")), "{paths:?}");

    let same_version = fixture
        .service
        .amend_trial(
            &admin(),
            &RESPINE_YAML.replace("cap: 30", "cap: 35"),
            "raise FR-PAR",
        )
        .await;
    assert!(
        problem_paths(&same_version)
            .iter()
            .any(|p| p.contains("version"))
    );

    let raised = version_two.replace("cap: 30", "cap: 35");
    let amended = fixture
        .service
        .amend_trial(&admin(), &raised, "FR-PAR recruits faster than planned")
        .await
        .expect("raising a site cap is a valid amendment");
    assert_eq!(amended.record.version, 2);
    let view = fixture
        .service
        .get_trial(&statistician(), "RESPINE")
        .await
        .expect("readable");
    assert_eq!(view.record.version, 2);
    assert_eq!(view.record.state, TrialState::Active);
    assert_eq!(view.definition_yaml, raised);
    let status = fixture
        .service
        .trial_status(&admin(), "RESPINE")
        .await
        .expect("status");
    assert!(
        status.sites.contains(&("FR-PAR".to_owned(), 0, Some(35))),
        "{:?}",
        status.sites
    );

    let after = fixture
        .randomise(
            "FR-PAR",
            "AMENDED-1",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await
        .expect("randomises under the amended design");
    assert_eq!(after.allocation.trial_version, 2);
    fixture.assert_audit_chain_verifies().await;
}
