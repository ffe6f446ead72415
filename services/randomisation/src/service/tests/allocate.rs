//! `Randomise`: a trial enrolled end to end, idempotent replays, eligibility
//! and malformed requests.

use std::collections::BTreeSet;

use super::*;

// ---------------------------------------------------------------------------
// RESPINE end to end
// ---------------------------------------------------------------------------

#[tokio::test]
async fn respine_enrols_to_its_total_cap_and_every_stratum_follows_its_sealed_list() {
    let fixture = Fixture::new().await;
    let definition = fixture.activate(RESPINE_YAML).await;

    // 114 subjects spread over the sites within their caps, both pain levels at each.
    let per_site = [
        ("FR-MTP", 30),
        ("FR-PAR", 24),
        ("ES-VLL", 20),
        ("IT-MIL", 20),
        ("DE-ULM", 20),
    ];
    assert_eq!(per_site.iter().map(|(_, n)| n).sum::<u32>(), 114);
    let mut outcomes = BTreeMap::new();
    for (site_id, subjects) in per_site {
        for index in 0..subjects {
            let subject_id = format!("{site_id}-S{index:03}");
            let vas = if index % 2 == 0 {
                MODERATE_PAIN
            } else {
                SEVERE_PAIN
            };
            let outcome = fixture
                .randomise(site_id, &subject_id, "RESPINE", respine_subject(vas))
                .await
                .unwrap_or_else(|error| {
                    panic!("{subject_id} is eligible and within caps: {error:?}")
                });
            assert!(!outcome.replayed, "a first request is never a replay");
            assert_eq!(outcome.allocation.site_id, site_id);
            assert_eq!(outcome.allocation.stratum, respine_stratum(site_id, vas));
            assert_eq!(outcome.allocation.stream_key, outcome.allocation.stratum);
            assert_eq!(outcome.allocation.trial_version, 1);
            outcomes.insert(subject_id, outcome.allocation);
        }
    }

    // Exactly one stored allocation per subject, identical to what was returned.
    for (subject_id, returned) in &outcomes {
        let stored = fixture
            .service
            .get_allocation(&admin(), "RESPINE", subject_id)
            .await
            .expect("every randomised subject has an allocation");
        assert_eq!(&stored, returned);
    }
    let counts = fixture
        .store
        .counts("RESPINE")
        .await
        .expect("counts are readable");
    assert_eq!(counts.total, 114);

    // Every stratum is exactly its list regenerated offline from the seed.
    let mut regenerated_total = 0;
    for levels in definition.all_strata() {
        let stratum = definition.stratum_key(&levels);
        regenerated_total += fixture
            .assert_stratum_matches_regenerated_list(&definition, &stratum)
            .await;
    }
    assert_eq!(
        regenerated_total, 114,
        "all ten strata together hold every allocation"
    );

    let numbers: BTreeSet<&str> = outcomes
        .values()
        .map(|a| a.randomisation_number.as_str())
        .collect();
    assert_eq!(numbers.len(), 114, "randomisation numbers are unique");

    // The 115th subject meets the total cap and leaves no trace.
    let audit_before = fixture.audit_count().await;
    let refused = fixture
        .randomise(
            "FR-MTP",
            "FR-MTP-S999",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await;
    assert!(
        matches!(refused, Err(RandomisationError::CapReached(_))),
        "{refused:?}"
    );
    assert_eq!(
        fixture.audit_count().await,
        audit_before,
        "a refused allocation writes no audit record"
    );
    let after = fixture
        .service
        .get_allocation(&admin(), "RESPINE", "FR-MTP-S999")
        .await;
    assert_not_found(&after);
    assert_eq!(
        fixture.store.counts("RESPINE").await.expect("counts").total,
        114
    );

    // An EDC retry of an earlier request still gets its answer at the cap.
    let retry = fixture
        .randomise(
            "DE-ULM",
            "DE-ULM-S000",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await
        .expect("a retry at the cap replays rather than failing");
    assert!(retry.replayed);
    assert_eq!(Some(&retry.allocation), outcomes.get("DE-ULM-S000"));

    fixture.assert_audit_chain_verifies().await;
}

// ---------------------------------------------------------------------------
// Idempotency
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_repeated_request_replays_and_a_changed_one_is_refused() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;

    let first = fixture
        .randomise(
            "FR-MTP",
            "SUBJ-1",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await
        .expect("first request allocates");
    assert!(!first.replayed);
    let audit_after_first = fixture.audit_count().await;

    let second = fixture
        .randomise(
            "FR-MTP",
            "SUBJ-1",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await
        .expect("an identical request is answered, not refused");
    assert!(second.replayed, "the second identical request is a replay");
    assert_eq!(second.allocation, first.allocation);

    // A different vas (even one in the same stratum) is different data.
    let changed = fixture
        .randomise(
            "FR-MTP",
            "SUBJ-1",
            "RESPINE",
            respine_subject(MODERATE_PAIN + 1.0),
        )
        .await;
    assert!(
        matches!(changed, Err(RandomisationError::AlreadyExists(_))),
        "{changed:?}"
    );

    assert_eq!(
        fixture.audit_count().await,
        audit_after_first,
        "replays and refusals write nothing"
    );
    assert_eq!(
        fixture.store.counts("RESPINE").await.expect("counts").total,
        1
    );
    assert_eq!(
        fixture
            .store
            .stream_version("RESPINE", &first.allocation.stream_key)
            .await
            .expect("version"),
        1
    );
    let stored = fixture
        .store
        .allocation("RESPINE", "SUBJ-1")
        .await
        .expect("readable")
        .expect("stored");
    assert_eq!(
        stored, first.allocation,
        "the stored allocation is untouched"
    );
}

// ---------------------------------------------------------------------------
// Eligibility
// ---------------------------------------------------------------------------

#[tokio::test]
async fn an_ineligible_subject_is_told_every_failed_criterion_and_nothing_is_written() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    let audit_before = fixture.audit_count().await;

    let mut covariates = respine_subject(35.0);
    covariates.insert("age_years".to_owned(), CovariateInput::Integer(61));
    let result = fixture
        .randomise("FR-MTP", "SUBJ-OLD", "RESPINE", covariates)
        .await;
    match &result {
        Err(RandomisationError::Ineligible(failed)) => {
            let ids: Vec<&str> = failed.iter().map(|c| c.id.as_str()).collect();
            assert_eq!(ids, ["age", "pain"], "failed criteria in definition order");
            assert!(
                failed.iter().all(|c| !c.rule.is_empty()),
                "each failure carries its rule"
            );
        }
        other => panic!("expected Ineligible, got {other:?}"),
    }

    assert!(
        fixture
            .store
            .allocation("RESPINE", "SUBJ-OLD")
            .await
            .expect("readable")
            .is_none()
    );
    assert_eq!(fixture.audit_count().await, audit_before);
}

// ---------------------------------------------------------------------------
// Invalid requests
// ---------------------------------------------------------------------------

#[tokio::test]
async fn malformed_requests_are_refused_with_every_problem_named() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    let audit_before = fixture.audit_count().await;

    // Wrong type, missing covariate and unknown covariate: all reported at once.
    let mut covariates = respine_subject(MODERATE_PAIN);
    covariates.insert("age_years".to_owned(), CovariateInput::Decimal(45.5));
    covariates.remove("lbp_months");
    covariates.insert("bmi".to_owned(), CovariateInput::Decimal(24.0));
    let result = fixture
        .randomise("FR-MTP", "SUBJ-1", "RESPINE", covariates)
        .await;
    let paths = problem_paths(&result);
    for expected in [
        "covariates.age_years",
        "covariates.lbp_months",
        "covariates.bmi",
    ] {
        assert!(
            paths.iter().any(|p| p == expected),
            "{expected} missing from {paths:?}"
        );
    }

    // A site the token grants but the trial does not have.
    let bogus_site = caller(
        "investigator@XX-NOWHERE",
        &[Role::SiteInvestigator],
        &["XX-NOWHERE"],
        trials_only(&["RESPINE"]),
    );
    let result = fixture
        .service
        .randomise(
            &bogus_site,
            &command(
                "RESPINE",
                "XX-NOWHERE",
                "SUBJ-2",
                respine_subject(MODERATE_PAIN),
            ),
        )
        .await;
    assert_eq!(problem_paths(&result), ["site_id"]);

    for bad_subject in ["", "has spaces", "semi;colon"] {
        let result = fixture
            .randomise(
                "FR-MTP",
                bad_subject,
                "RESPINE",
                respine_subject(MODERATE_PAIN),
            )
            .await;
        assert_eq!(
            problem_paths(&result),
            ["subject_id"],
            "subject id {bad_subject:?}"
        );
    }

    assert_eq!(
        fixture.store.counts("RESPINE").await.expect("counts").total,
        0
    );
    assert_eq!(fixture.audit_count().await, audit_before);
}

/// The literature's procedures allocate live through the same sequences
/// as the simulator: each stratum is its list regenerated from the seed.
#[tokio::test]
async fn literature_procedures_allocate_live_as_regenerated() {
    for method in [
        "kind: random_allocation_rule\n  sample_size: 6",
        "kind: chen_biased_coin\n  p: 0.75\n  bound: 2",
        "kind: adjustable_biased_coin\n  a: 2",
        "kind: generalised_biased_coin\n  rho: 2",
        "kind: urn\n  alpha: 1\n  beta: 1",
        "kind: truncated_binomial\n  sample_size: 6",
    ] {
        let fixture = Fixture::new().await;
        let yaml = RESPINE_YAML.replace(
            "kind: permuted_blocks\n  block_sizes: [2, 4]            # drawn at random per block; concealed",
            method,
        );
        assert_ne!(yaml, RESPINE_YAML, "the method was replaced");
        let definition = fixture.activate(&yaml).await;
        for index in 0..16 {
            let subject_id = format!("FR-MTP-S{index:03}");
            fixture
                .randomise(
                    "FR-MTP",
                    &subject_id,
                    "RESPINE",
                    respine_subject(MODERATE_PAIN),
                )
                .await
                .unwrap_or_else(|error| panic!("{method}: {subject_id}: {error:?}"));
        }
        let stratum = respine_stratum("FR-MTP", MODERATE_PAIN);
        let allocated = fixture
            .assert_stratum_matches_regenerated_list(&definition, &stratum)
            .await;
        assert_eq!(allocated, 16, "{method}");
    }
}
