//! `BlindingSupportService` in the domain: `service:blinding` only.

use super::*;
use crate::service::code_seed;

fn blinding() -> Caller {
    caller(
        "service:blinding",
        &[Role::Service("blinding".into())],
        &[],
        TrialScope::All,
    )
}

fn everyone_else() -> Vec<Caller> {
    let every_user_role = [
        Role::SiteInvestigator,
        Role::UnblindedPreparer,
        Role::EmergencyDesk,
        Role::MedicalMonitor,
        Role::SafetyOfficer,
        Role::Statistician,
        Role::TrialAdmin,
    ];
    vec![
        admin(),
        statistician(),
        site("FR-MTP"),
        caller("all-roles", &every_user_role, &["FR-MTP"], TrialScope::All),
        caller(
            "service:safety",
            &[Role::Service("safety".into())],
            &[],
            TrialScope::All,
        ),
    ]
}

#[tokio::test]
async fn the_blinding_service_gets_the_frozen_trial_and_a_one_way_code_seed() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    let audit_before = fixture.audit_count().await;
    let trial = fixture
        .service
        .trial_for_blinding(&blinding(), "RESPINE")
        .await
        .expect("served");
    let stored = fixture
        .store
        .trial("RESPINE")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(trial.state, TrialState::Active);
    assert_eq!(trial.definition_yaml, stored.definition_yaml);
    assert_eq!(trial.definition_sha256, stored.definition_sha256);
    assert_eq!(trial.version, stored.version);
    let (master, version) = fixture.master_seed("RESPINE").await;
    assert_eq!(trial.algorithm_version, version);
    assert_eq!(
        trial.code_seed,
        code_seed(&master, version),
        "regenerable offline"
    );
    assert_ne!(trial.code_seed, master.0, "not the master seed");
    assert_eq!(fixture.audit_count().await, audit_before + 1, "audited");

    // Closed trials still get codes for late reconciliation.
    fixture
        .service
        .close_enrolment(&admin(), "RESPINE", "recruitment complete")
        .await
        .expect("closed");
    let closed = fixture
        .service
        .trial_for_blinding(&blinding(), "RESPINE")
        .await
        .expect("served");
    assert_eq!(closed.state, TrialState::Closed);
    assert_eq!(closed.code_seed, trial.code_seed, "the seed never changes");
}

#[tokio::test]
async fn drafts_and_unknown_trials_are_refused() {
    let fixture = Fixture::new().await;
    fixture
        .service
        .register_trial(&statistician(), RESPINE_YAML)
        .await
        .expect("draft");
    assert_failed_precondition(
        &fixture
            .service
            .trial_for_blinding(&blinding(), "RESPINE")
            .await,
    );
    assert_not_found(
        &fixture
            .service
            .trial_for_blinding(&blinding(), "NO-SUCH")
            .await,
    );
}

#[tokio::test]
async fn the_blinding_service_looks_up_an_allocation_and_the_look_up_is_audited_without_the_arm() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    let outcome = fixture
        .randomise(
            "FR-MTP",
            "SUBJ-1",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await
        .expect("allocated");
    let audit_before = fixture.audit_count().await;
    let arm = fixture
        .service
        .look_up_allocation(&blinding(), "RESPINE", "SUBJ-1")
        .await
        .expect("looked up");
    assert_eq!(arm.arm_id, outcome.allocation.arm);
    assert_eq!(arm.site_id, "FR-MTP");
    assert_eq!(arm.randomised_at, outcome.allocation.randomised_at);
    assert!(!arm.randomised_in_error);

    let records = fixture.audit_records().await;
    assert_eq!(records.len(), audit_before + 1);
    let record = records.last().expect("a record");
    assert_eq!(record.entry.action, "blinding.allocation_looked_up");
    assert_eq!(record.entry.actor, "service:blinding");
    assert!(record.entry.entity.contains("SUBJ-1"));
    let details = record.entry.details.to_string();
    assert!(
        !details.contains("arm") && !details.contains(&arm.arm_id),
        "{details}"
    );

    fixture
        .service
        .mark_randomised_in_error(&admin(), "RESPINE", "SUBJ-1", "wrong patient")
        .await
        .expect("marked");
    let marked = fixture
        .service
        .look_up_allocation(&blinding(), "RESPINE", "SUBJ-1")
        .await
        .expect("looked up");
    assert!(marked.randomised_in_error);

    assert_not_found(
        &fixture
            .service
            .look_up_allocation(&blinding(), "RESPINE", "SUBJ-404")
            .await,
    );
    fixture.assert_audit_chain_verifies().await;
}

#[tokio::test]
async fn nobody_but_the_blinding_service_is_served() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    fixture
        .randomise(
            "FR-MTP",
            "SUBJ-1",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await
        .expect("allocated");
    for caller in everyone_else() {
        assert_permission_denied(&fixture.service.trial_for_blinding(&caller, "RESPINE").await);
        assert_permission_denied(
            &fixture
                .service
                .look_up_allocation(&caller, "RESPINE", "SUBJ-1")
                .await,
        );
    }
}
