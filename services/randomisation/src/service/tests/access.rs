//! Authorisation: roles, sites and trial scope.

use crate::service::{AllocationFilter, SimulateCommand, SimulationDesign};
use crate::simulation::LevelWeights;

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
            "",
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

/// Review C2: page tokens are the caller's own, sealed cursors. They show
/// nothing of the trial-wide sequence (which counts every site's subjects)
/// and cannot be forged, altered or used by another caller or filter.
#[tokio::test]
async fn page_tokens_are_opaque_and_bound_to_the_caller_and_the_filter() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    for subject in ["PAR-1", "PAR-2", "PAR-3"] {
        fixture
            .randomise("FR-PAR", subject, "RESPINE", respine_subject(MODERATE_PAIN))
            .await
            .expect("allocates");
    }
    for subject in ["MTP-1", "MTP-2"] {
        fixture
            .randomise("FR-MTP", subject, "RESPINE", respine_subject(MODERATE_PAIN))
            .await
            .expect("allocates");
    }
    let filter = AllocationFilter {
        trial_id: "RESPINE".into(),
        ..AllocationFilter::default()
    };
    let mtp = site("FR-MTP");
    let first = fixture
        .service
        .list_allocations(&mtp, &filter, "", 1)
        .await
        .expect("first page");
    assert_eq!(first.allocations[0].subject_id, "MTP-1");
    let token = first.next_page_token.clone();
    // The old token was the hex of the global sequence: "4" here.
    assert_ne!(token, "4");
    assert!(token.len() >= 64, "{token}");
    let second = fixture
        .service
        .list_allocations(&mtp, &filter, &token, 1)
        .await
        .expect("second page");
    assert_eq!(second.allocations[0].subject_id, "MTP-2");

    let refused = |result: Result<_, RandomisationError>| match result {
        Err(RandomisationError::InvalidArgument(problems)) => {
            assert_eq!(problems[0].path, "page_token");
        }
        other => panic!("expected INVALID_ARGUMENT on page_token, got {other:?}"),
    };
    for forged in ["4", "3", "ffffffff", "not hex"] {
        refused(
            fixture
                .service
                .list_allocations(&mtp, &filter, forged, 1)
                .await,
        );
    }
    let mut altered = hex::decode(&token).expect("hex");
    if let Some(byte) = altered.get_mut(20) {
        *byte ^= 0x40;
    }
    refused(
        fixture
            .service
            .list_allocations(&mtp, &filter, &hex::encode(altered), 1)
            .await,
    );
    // Another caller, or the same caller with another filter, cannot use it.
    let other_user = caller(
        "coordinator@FR-MTP",
        &[Role::SiteCoordinator],
        &["FR-MTP"],
        trials_only(&["RESPINE"]),
    );
    refused(
        fixture
            .service
            .list_allocations(&other_user, &filter, &token, 1)
            .await,
    );
    let narrowed = AllocationFilter {
        site_id: Some("FR-MTP".into()),
        ..filter.clone()
    };
    refused(
        fixture
            .service
            .list_allocations(&mtp, &narrowed, &token, 1)
            .await,
    );
}

/// Review C3: a site probing another site's subject id meets the same
/// checks, in the same order, as for an id nobody has used: ineligible
/// covariates give the same answer for both. The probe is audited.
#[tokio::test]
async fn another_sites_subject_id_answers_as_an_unused_id_and_the_probe_is_audited() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    fixture
        .randomise(
            "FR-PAR",
            "PAR-001",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await
        .expect("allocates");
    let mut ineligible = respine_subject(MODERATE_PAIN);
    ineligible.insert("age_years".into(), CovariateInput::Integer(12));
    let audited_before = fixture.audit_count().await;
    let probe = fixture
        .randomise("FR-MTP", "PAR-001", "RESPINE", ineligible.clone())
        .await
        .expect_err("refused");
    let unused = fixture
        .randomise("FR-MTP", "PAR-999", "RESPINE", ineligible)
        .await
        .expect_err("refused");
    assert!(
        matches!(probe, RandomisationError::Ineligible(_)),
        "{probe:?}"
    );
    assert_eq!(format!("{probe:?}"), format!("{unused:?}"));

    // Eligible, the id cannot be used again: the refusal a changed
    // request gets, saying nothing of where the subject is.
    let eligible = fixture
        .randomise(
            "FR-MTP",
            "PAR-001",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await
        .expect_err("refused");
    let RandomisationError::AlreadyExists(message) = &eligible else {
        panic!("expected ALREADY_EXISTS, got {eligible:?}");
    };
    assert!(!message.contains("FR-PAR"), "{message}");

    let records = fixture.audit_records().await;
    let probes: Vec<_> = records[audited_before..]
        .iter()
        .filter(|r| r.entry.action == "randomise.refused_other_site_subject")
        .collect();
    assert_eq!(probes.len(), 2, "both probes of PAR-001 are audited");
    assert!(
        probes
            .iter()
            .all(|r| r.entry.actor == "investigator@FR-MTP")
    );
    fixture.assert_audit_chain_verifies().await;
}

/// Review C5: a site at its cap, or a stratum whose uploaded list is used
/// up, gets the refusal a new id would get for another site's used id too,
/// not ALREADY_EXISTS: caps are checked at commit, so the probe path checks
/// them as the commit would.
#[tokio::test]
async fn a_site_at_its_cap_cannot_tell_another_sites_subject_from_a_new_id() {
    let fixture = Fixture::new().await;
    fixture
        .activate(
            &RESPINE_YAML
                .replacen("{ id: FR-MTP, cap: 40 }", "{ id: FR-MTP, cap: 1 }", 1)
                .replacen("caps: { total: 114 }", "caps: { total: 100 }", 1),
        )
        .await;
    for (site, subject) in [("FR-PAR", "PAR-001"), ("FR-MTP", "MTP-001")] {
        fixture
            .randomise(site, subject, "RESPINE", respine_subject(MODERATE_PAIN))
            .await
            .expect("allocates");
    }
    let used = fixture
        .randomise(
            "FR-MTP",
            "PAR-001",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await
        .expect_err("refused");
    let unused = fixture
        .randomise(
            "FR-MTP",
            "MTP-999",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await
        .expect_err("refused");
    assert!(
        matches!(used, RandomisationError::CapReached(_)),
        "{used:?}"
    );
    assert_eq!(format!("{used:?}"), format!("{unused:?}"));
    fixture.assert_audit_chain_verifies().await;
}

/// With `subject_ids.site_prefix`, another site's id is refused by its form
/// before anything is looked up: eligible or not, used or not, the answer is
/// the same (issue 7, item 2). Probes of used ids are still audited.
#[tokio::test]
async fn site_prefixed_ids_make_another_sites_subject_indistinguishable_whatever_the_covariates() {
    let fixture = Fixture::new().await;
    let yaml = RESPINE_YAML.replacen("caps:", "subject_ids: { site_prefix: true }\ncaps:", 1);
    fixture.activate(&yaml).await;
    fixture
        .randomise(
            "FR-PAR",
            "FR-PAR-001",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await
        .expect("allocates");
    let mut ineligible = respine_subject(MODERATE_PAIN);
    ineligible.insert("age_years".into(), CovariateInput::Integer(12));
    let audited_before = fixture.audit_count().await;
    for covariates in [respine_subject(MODERATE_PAIN), ineligible] {
        let used = fixture
            .randomise("FR-MTP", "FR-PAR-001", "RESPINE", covariates.clone())
            .await
            .expect_err("refused");
        let unused = fixture
            .randomise("FR-MTP", "FR-PAR-999", "RESPINE", covariates)
            .await
            .expect_err("refused");
        assert!(
            matches!(used, RandomisationError::InvalidArgument(_)),
            "{used:?}"
        );
        assert_eq!(format!("{used:?}"), format!("{unused:?}"));
    }
    let records = fixture.audit_records().await;
    let probes = records[audited_before..]
        .iter()
        .filter(|r| r.entry.action == "randomise.refused_other_site_subject")
        .count();
    assert_eq!(probes, 2, "the two probes of the used id are audited");
    fixture
        .randomise(
            "FR-MTP",
            "FR-MTP-001",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await
        .expect("a site's own form allocates");
    fixture.assert_audit_chain_verifies().await;
}

/// Review K1: a repeat with the same data replays, however a number is
/// written: 55 and 55.0 for a decimal covariate are the same value.
#[tokio::test]
async fn a_retry_writing_a_decimal_as_an_integer_replays() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    let first = fixture
        .randomise("FR-MTP", "MTP-1", "RESPINE", respine_subject(55.0))
        .await
        .expect("allocates");
    let mut as_integer = respine_subject(55.0);
    as_integer.insert("vas_mm".into(), CovariateInput::Integer(55));
    let retry = fixture
        .randomise("FR-MTP", "MTP-1", "RESPINE", as_integer)
        .await
        .expect("the same data replays");
    assert!(retry.replayed);
    assert_eq!(retry.allocation, first.allocation);
    let mut changed = respine_subject(55.0);
    changed.insert("vas_mm".into(), CovariateInput::Integer(56));
    let refused = fixture
        .randomise("FR-MTP", "MTP-1", "RESPINE", changed)
        .await
        .expect_err("different data");
    assert!(matches!(refused, RandomisationError::AlreadyExists(_)));
}

fn auditor() -> Caller {
    caller("auditor@qa", &[Role::Auditor], &[], TrialScope::All)
}

/// DESIGN §1: the trial administrator is blinded and never sees block
/// sizes; the auditor neither. Both read the definition with the method's
/// parameters (and every comment) removed; the statistician reads it whole.
#[tokio::test]
async fn blinded_sponsor_roles_read_the_design_without_its_concealed_parts() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    for blinded in [admin(), auditor()] {
        let view = fixture
            .service
            .get_trial(&blinded, "RESPINE")
            .await
            .expect("a blinded sponsor role reads the trial");
        let yaml = &view.definition_yaml;
        assert!(!yaml.contains("block_sizes"), "{yaml}");
        assert!(!yaml.contains("2 or 4"), "comments describe the blocks");
        assert!(yaml.contains("kind: permuted_blocks"), "{yaml}");
        assert!(yaml.contains("concealed: true"), "{yaml}");
        assert!(yaml.contains("FR-MTP"), "sites stay visible");
    }
    let whole = fixture
        .service
        .get_trial(&statistician(), "RESPINE")
        .await
        .expect("the statistician reads the trial");
    assert_eq!(whole.definition_yaml, RESPINE_YAML);
}

/// A simulation of the live design shows its imbalance, hence its blocks.
#[tokio::test]
async fn only_the_statistician_simulates() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    for blinded in [admin(), auditor(), site("FR-MTP")] {
        for design in [
            SimulationDesign::Trial("RESPINE".into()),
            SimulationDesign::Yaml(RESPINE_YAML.into()),
        ] {
            let command = SimulateCommand {
                design,
                trials: 1,
                subjects_per_trial: 4,
                seed: 7,
                level_weights: LevelWeights::default(),
                bias: Default::default(),
            };
            assert_permission_denied(&fixture.service.simulate(&blinded, command).await);
        }
    }
}

/// The administrator amends caps without holding the method: the redacted
/// definition sent back keeps the current method.
#[tokio::test]
async fn the_trial_admin_amends_the_redacted_definition_and_the_method_stays() {
    let fixture = Fixture::new().await;
    let original = fixture.activate(RESPINE_YAML).await;
    let redacted = fixture
        .service
        .get_trial(&admin(), "RESPINE")
        .await
        .expect("readable")
        .definition_yaml;
    let amendment = redacted
        .replace("version: 1", "version: 2")
        .replace("cap: 30", "cap: 35");
    assert_ne!(amendment, redacted, "the replacements must apply");
    let amended = fixture
        .service
        .amend_trial(&admin(), &amendment, "FR-PAR recruits faster")
        .await
        .expect("a valid amendment");
    assert_eq!(amended.record.version, 2);
    assert!(!amended.definition_yaml.contains("block_sizes"));
    let stored = fixture
        .service
        .get_trial(&statistician(), "RESPINE")
        .await
        .expect("readable");
    let stored = parse_definition(&stored.definition_yaml).expect("parses");
    assert_eq!(stored.method, original.method);
    assert_eq!(stored.sites[1].cap, Some(35));

    let other_method = redacted
        .replace("version: 1", "version: 3")
        .replace("permuted_blocks", "minimisation");
    let refused = fixture
        .service
        .amend_trial(&admin(), &other_method, "a new method")
        .await;
    assert!(
        problem_paths(&refused).iter().any(|p| p.contains("method")),
        "{refused:?}"
    );
}

/// The auditor reads the trial, its status and its allocations at every
/// site (no arm: nobody gets one here) and changes nothing.
#[tokio::test]
async fn the_auditor_reads_and_never_writes() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    fixture
        .randomise("FR-MTP", "MTP-1", "RESPINE", respine_subject(MODERATE_PAIN))
        .await
        .expect("allocates");
    let auditor = auditor();
    let status = fixture
        .service
        .trial_status(&auditor, "RESPINE")
        .await
        .expect("status");
    assert_eq!(status.randomised, 1);
    assert!(status.list_warnings.is_empty());
    let allocation = fixture
        .service
        .get_allocation(&auditor, "RESPINE", "MTP-1")
        .await
        .expect("an allocation at any site");
    assert_eq!(allocation.site_id, "FR-MTP");
    let before = fixture.audit_count().await;
    let randomised = fixture
        .service
        .randomise(
            &auditor,
            &command("RESPINE", "FR-MTP", "S-9", respine_subject(MODERATE_PAIN)),
        )
        .await;
    assert_permission_denied(&randomised);
    assert_permission_denied(
        &fixture
            .service
            .close_enrolment(&auditor, "RESPINE", "an audit finding")
            .await,
    );
    assert_permission_denied(
        &fixture
            .service
            .mark_randomised_in_error(&auditor, "RESPINE", "MTP-1", "an audit finding")
            .await,
    );
    assert_eq!(fixture.audit_count().await, before, "nothing was written");
}

/// Review C4: the chain holds no arm, position or decision, so it can be
/// shown to a blinded auditor; the allocation row keeps them, and the
/// chained digest proves them.
#[tokio::test]
async fn the_audit_chain_names_no_arm_position_or_decision() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    for n in 0..12 {
        let (site, pain) = if n % 2 == 0 {
            ("FR-MTP", MODERATE_PAIN)
        } else {
            ("FR-PAR", SEVERE_PAIN)
        };
        fixture
            .randomise(site, &format!("S-{n:03}"), "RESPINE", respine_subject(pain))
            .await
            .expect("allocates");
    }
    let definition = parse_definition(RESPINE_YAML).expect("RESPINE");
    let records = fixture.audit_records().await;
    let created: Vec<_> = records
        .iter()
        .filter(|r| r.entry.action == "allocation.created")
        .collect();
    assert_eq!(created.len(), 12);
    for record in created {
        let details = record.entry.details.to_string();
        for arm in &definition.arms {
            assert!(!details.contains(&format!("\"{}\"", arm.id)), "{details}");
            assert!(!details.contains(&arm.label), "{details}");
        }
        for word in ["probabilit", "position", "decision", "\"arm\""] {
            assert!(!details.contains(word), "{word} in {details}");
        }
        assert!(record.entry.details.get("unblinded_hmac").is_some());
    }
    fixture.assert_audit_chain_verifies().await;
}

/// Review: the trial administrator reads the redacted design with a keyed
/// definition hash, which confirms activation but cannot be used to test
/// guesses of the block sizes; a wrong hash is refused without the real one.
#[tokio::test]
async fn blinded_readers_get_a_keyed_definition_hash_that_still_activates() {
    let fixture = Fixture::new().await;
    fixture
        .service
        .register_trial(&statistician(), RESPINE_YAML)
        .await
        .expect("registers");
    let real = fixture
        .service
        .get_trial(&statistician(), "RESPINE")
        .await
        .expect("read")
        .record
        .definition_sha256;
    assert_eq!(
        real,
        parse_definition(RESPINE_YAML)
            .expect("parses")
            .canonical_sha256()
    );
    let shown = fixture
        .service
        .get_trial(&admin(), "RESPINE")
        .await
        .expect("read")
        .record
        .definition_sha256;
    assert_ne!(shown, real);
    assert_eq!(shown.len(), 64);

    let wrong = fixture
        .service
        .activate_trial(&admin(), "RESPINE", &"0".repeat(64))
        .await
        .expect_err("not the reviewed design");
    assert!(!format!("{wrong:?}").contains(&real), "{wrong:?}");
    assert!(!format!("{wrong:?}").contains(&shown), "{wrong:?}");
    let activated = fixture
        .service
        .activate_trial(&admin(), "RESPINE", &shown)
        .await
        .expect("the keyed hash the admin reviewed activates");
    assert_eq!(activated.record.definition_sha256, shown);
}
