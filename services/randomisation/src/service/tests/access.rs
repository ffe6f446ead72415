//! Authorisation: roles, sites and trial scope.

use crate::service::AllocationFilter;

use super::*;

#[tokio::test]
async fn roles_sites_and_trial_scope_bound_what_each_caller_does_and_sees() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    fixture
        .randomise("FR-MTP", "MTP-1", "RESPINE", respine_subject(MODERATE_PAIN))
        .await
        .expect("allocates");
    fixture
        .randomise("FR-PAR", "PAR-1", "RESPINE", respine_subject(SEVERE_PAIN))
        .await
        .expect("allocates");

    let by_statistician = fixture
        .service
        .randomise(
            &statistician(),
            &command("RESPINE", "FR-MTP", "S-1", respine_subject(MODERATE_PAIN)),
        )
        .await;
    assert_permission_denied(&by_statistician);

    let for_other_site = fixture
        .service
        .randomise(
            &site("FR-MTP"),
            &command("RESPINE", "FR-PAR", "S-2", respine_subject(MODERATE_PAIN)),
        )
        .await;
    assert_permission_denied(&for_other_site);

    let out_of_scope = caller(
        "investigator@FR-MTP",
        &[Role::SiteInvestigator],
        &["FR-MTP"],
        trials_only(&["ANOTHER-TRIAL"]),
    );
    let result = fixture
        .service
        .randomise(
            &out_of_scope,
            &command("RESPINE", "FR-MTP", "S-3", respine_subject(MODERATE_PAIN)),
        )
        .await;
    assert_permission_denied(&result);
    assert_permission_denied(&fixture.service.get_trial(&out_of_scope, "RESPINE").await);

    // Another site's subject is indistinguishable from a missing one.
    let other_sites_subject = fixture
        .service
        .get_allocation(&site("FR-PAR"), "RESPINE", "MTP-1")
        .await;
    assert_not_found(&other_sites_subject);
    let missing_subject = fixture
        .service
        .get_allocation(&site("FR-PAR"), "RESPINE", "NOBODY")
        .await;
    assert_not_found(&missing_subject);
    let own = fixture
        .service
        .get_allocation(&site("FR-PAR"), "RESPINE", "PAR-1")
        .await
        .expect("a site reads its own subject");
    assert_eq!(own.site_id, "FR-PAR");

    // Listing is narrowed the same way.
    let page = fixture
        .service
        .list_allocations(
            &site("FR-PAR"),
            &AllocationFilter {
                trial_id: "RESPINE".into(),
                ..AllocationFilter::default()
            },
            0,
            0,
        )
        .await
        .expect("a site lists its allocations");
    let listed: Vec<&str> = page
        .allocations
        .iter()
        .map(|a| a.subject_id.as_str())
        .collect();
    assert_eq!(listed, ["PAR-1"]);

    let site_status = fixture
        .service
        .trial_status(&site("FR-PAR"), "RESPINE")
        .await
        .expect("a site reads status");
    assert_eq!(site_status.sites, vec![("FR-PAR".to_owned(), 1, Some(30))]);
    assert!(
        site_status.strata.is_empty(),
        "strata cut across sites, so a site sees none"
    );
    assert_eq!(
        site_status.randomised, 1,
        "a site counts only its own subjects"
    );
    let full_status = fixture
        .service
        .trial_status(&statistician(), "RESPINE")
        .await
        .expect("the statistician reads status");
    assert_eq!(full_status.sites.len(), 5);
    assert_eq!(full_status.strata.len(), 10);
    assert_eq!(full_status.randomised, 2);

    let site_view = fixture
        .service
        .get_trial(&site("FR-PAR"), "RESPINE")
        .await
        .expect("site reads trial");
    assert!(
        site_view.definition_yaml.is_empty(),
        "the design stays concealed from sites"
    );
    assert_eq!(site_view.method, "permuted_blocks");
    let statistician_view = fixture
        .service
        .get_trial(&statistician(), "RESPINE")
        .await
        .expect("statistician reads trial");
    assert_eq!(statistician_view.definition_yaml, RESPINE_YAML);
}

/// The safety service reads a trial's definition and checks an allocation
/// exists at the reporting site; no other service does, and it may not
/// randomise or see the design through any other call.
#[tokio::test]
async fn the_safety_service_reads_definitions_and_allocations_only() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    fixture
        .randomise("FR-MTP", "MTP-1", "RESPINE", respine_subject(MODERATE_PAIN))
        .await
        .expect("allocates");
    let safety = caller(
        "service:safety",
        &[Role::Service("safety".into())],
        &[],
        TrialScope::All,
    );
    let blinding = caller(
        "service:blinding",
        &[Role::Service("blinding".into())],
        &[],
        TrialScope::All,
    );

    let trial = fixture
        .service
        .get_trial(&safety, "RESPINE")
        .await
        .expect("definition");
    assert!(
        trial.definition_yaml.contains("safety:"),
        "the safety service sees the definition"
    );
    let allocation = fixture
        .service
        .get_allocation(&safety, "RESPINE", "MTP-1")
        .await
        .expect("allocation");
    assert_eq!(allocation.site_id, "FR-MTP");

    assert_permission_denied(&fixture.service.get_trial(&blinding, "RESPINE").await);
    assert_permission_denied(
        &fixture
            .service
            .get_allocation(&blinding, "RESPINE", "MTP-1")
            .await,
    );
    let randomised = fixture
        .service
        .randomise(
            &safety,
            &command("RESPINE", "FR-MTP", "S-9", respine_subject(MODERATE_PAIN)),
        )
        .await;
    assert_permission_denied(&randomised);
}
