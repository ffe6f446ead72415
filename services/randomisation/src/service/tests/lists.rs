//! Uploaded allocation lists.

use super::*;

fn list_yaml() -> String {
    let yaml = RESPINE_YAML
        .replace(
            "kind: permuted_blocks\n  block_sizes: [2, 4]",
            "kind: uploaded_list\n  warn_remaining: 1",
        )
        .replace("id: RESPINE\n", "id: LIST\n");
    assert!(
        yaml.contains("uploaded_list") && yaml.contains("id: LIST\n"),
        "the replacements must apply"
    );
    yaml
}

/// CSV text, quoting strata: their keys contain commas.
fn list_csv(rows: &[(String, &str)]) -> String {
    let mut csv = String::from("stratum,arm\n");
    for (stratum, arm) in rows {
        csv.push_str(&format!("\"{stratum}\",{arm}\n"));
    }
    csv
}

#[tokio::test]
async fn an_uploaded_list_is_checked_then_followed_in_order_until_exhausted() {
    let fixture = Fixture::new().await;
    let yaml = list_yaml();
    let definition =
        parse_definition(&yaml).unwrap_or_else(|problems| panic!("LIST parses: {:#?}", problems.0));
    let draft = fixture
        .service
        .register_trial(&statistician(), &yaml)
        .await
        .expect("registers");

    let too_early = fixture
        .service
        .activate_trial(&admin(), "LIST", &draft.record.definition_sha256)
        .await;
    assert_failed_precondition(&too_early);

    let mtp_moderate = respine_stratum("FR-MTP", MODERATE_PAIN);
    let mtp_severe = respine_stratum("FR-MTP", SEVERE_PAIN);
    let bad = list_csv(&[
        (mtp_moderate.clone(), "PLACEBO"),
        ("site=XX-NOWHERE,baseline_pain=moderate".to_owned(), "MSC"),
    ]);
    let refused = fixture
        .service
        .upload_allocation_list(&statistician(), "LIST", &bad)
        .await;
    let paths = problem_paths(&refused);
    assert!(
        paths.iter().any(|p| p == "csv line 2"),
        "the bad arm is on line 2: {paths:?}"
    );
    assert!(
        paths.iter().any(|p| p == "csv line 3"),
        "the unknown stratum is on line 3: {paths:?}"
    );
    if let Err(RandomisationError::InvalidArgument(problems)) = &refused {
        assert!(
            problems
                .iter()
                .any(|p| p.path == "csv line 2" && p.message.contains("PLACEBO"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.path == "csv line 3" && p.message.contains("XX-NOWHERE"))
        );
    }
    assert!(
        fixture
            .store
            .list_lengths("LIST")
            .await
            .expect("readable")
            .is_empty(),
        "a refused list stores nothing"
    );

    // Two rows per stratum; alternate strata start with different arms so the
    // order is visible.
    let strata: Vec<String> = definition
        .all_strata()
        .iter()
        .map(|l| definition.stratum_key(l))
        .collect();
    assert_eq!(strata.len(), 10);
    let rows: Vec<(String, &str)> = strata
        .iter()
        .enumerate()
        .flat_map(|(index, stratum)| {
            let order = if index % 2 == 0 {
                ["MSC", "SHAM"]
            } else {
                ["SHAM", "MSC"]
            };
            order.map(|arm| (stratum.clone(), arm))
        })
        .collect();
    let upload = fixture
        .service
        .upload_allocation_list(&statistician(), "LIST", &list_csv(&rows))
        .await
        .expect("a complete list uploads");
    assert_eq!((upload.strata, upload.entries), (10, 20));
    fixture
        .service
        .activate_trial(&admin(), "LIST", &draft.record.definition_sha256)
        .await
        .expect("activates once every stratum has a list");
    // The chain pins the list by a keyed digest, the same at upload and at
    // activation, never by a plain hash a blinded reader could test guesses
    // against.
    let records = fixture.audit_records().await;
    let digest_of = |action: &str| {
        let record = records
            .iter()
            .rev()
            .find(|r| r.entry.action == action)
            .unwrap_or_else(|| panic!("a {action} record"));
        assert!(record.entry.details.get("list_sha256").is_none());
        record.entry.details["list_digest"].clone()
    };
    assert_eq!(
        digest_of("trial.list_uploaded"),
        digest_of("trial.activated")
    );
    assert_eq!(
        digest_of("trial.activated").as_str().map(str::len),
        Some(64)
    );

    // FR-MTP severe is the second stratum: its list is SHAM then MSC.
    let first = fixture
        .randomise("FR-MTP", "L-1", "LIST", respine_subject(SEVERE_PAIN))
        .await
        .expect("first of the list");
    let second = fixture
        .randomise("FR-MTP", "L-2", "LIST", respine_subject(SEVERE_PAIN))
        .await
        .expect("second of the list");
    assert_eq!(first.allocation.stratum, mtp_severe);
    assert_eq!(
        (
            first.allocation.arm.as_str(),
            second.allocation.arm.as_str()
        ),
        ("SHAM", "MSC")
    );
    let moderate = fixture
        .randomise("FR-MTP", "L-3", "LIST", respine_subject(MODERATE_PAIN))
        .await
        .expect("first of another stratum");
    assert_eq!(moderate.allocation.arm, "MSC");

    let audit_before = fixture.audit_count().await;
    let exhausted = fixture
        .randomise("FR-MTP", "L-4", "LIST", respine_subject(SEVERE_PAIN))
        .await;
    match &exhausted {
        // Review C5: the site is not told that a stratum's list ran out,
        // which would say how many the other sites enrolled in it.
        Err(RandomisationError::FailedPrecondition(message)) => {
            assert_eq!(message, crate::error::DESIGN_LIMIT);
            assert!(
                !message.contains("stratum") && !message.contains("list"),
                "{message}"
            );
        }
        other => panic!("expected FailedPrecondition, got {other:?}"),
    }
    assert_eq!(fixture.audit_count().await, audit_before);

    let after_activation = fixture
        .service
        .upload_allocation_list(&statistician(), "LIST", &list_csv(&rows))
        .await;
    assert_failed_precondition(&after_activation);

    let status = fixture
        .service
        .trial_status(&statistician(), "LIST")
        .await
        .expect("status");
    assert_eq!(
        status.list_warnings,
        vec![(mtp_moderate, 1), (mtp_severe, 0)]
    );
    let site_status = fixture
        .service
        .trial_status(&site("FR-MTP"), "LIST")
        .await
        .expect("status");
    assert!(
        site_status.list_warnings.is_empty(),
        "list warnings reveal the design"
    );
    // The trial administrator is blinded to list state too (DESIGN §1).
    let admin_status = fixture
        .service
        .trial_status(&admin(), "LIST")
        .await
        .expect("status");
    assert!(admin_status.list_warnings.is_empty());
    assert_eq!(admin_status.randomised, status.randomised);

    // Another site's subject sent into the used-up stratum gets the same
    // answer as the new id, not ALREADY_EXISTS (review C5); it is audited.
    fixture
        .randomise("FR-PAR", "PAR-L-1", "LIST", respine_subject(SEVERE_PAIN))
        .await
        .expect("FR-PAR's own list");
    let probe = fixture
        .randomise("FR-MTP", "PAR-L-1", "LIST", respine_subject(SEVERE_PAIN))
        .await;
    assert_eq!(format!("{probe:?}"), format!("{exhausted:?}"));
}

// A list was validated against the draft it was uploaded to; a new draft
// must not inherit it.
#[tokio::test]
async fn re_registering_a_draft_does_not_keep_a_list_that_no_longer_fits_it() {
    let fixture = Fixture::new().await;
    let yaml = list_yaml();
    let definition =
        parse_definition(&yaml).unwrap_or_else(|problems| panic!("LIST parses: {:#?}", problems.0));
    fixture
        .service
        .register_trial(&statistician(), &yaml)
        .await
        .expect("registers");
    let rows: Vec<(String, &str)> = definition
        .all_strata()
        .iter()
        .flat_map(|levels| ["MSC", "SHAM"].map(|arm| (definition.stratum_key(levels), arm)))
        .collect();
    fixture
        .service
        .upload_allocation_list(&statistician(), "LIST", &list_csv(&rows))
        .await
        .expect("a list fitting the first draft uploads");

    // Same strata, but SHAM is now called PLACEBO: the list no longer fits.
    let renamed = yaml.replace("{ id: SHAM,", "{ id: PLACEBO,");
    assert_ne!(renamed, yaml, "the arm rename must apply");
    let redraft = fixture
        .service
        .register_trial(&statistician(), &renamed)
        .await
        .expect("a draft may be re-registered");

    let activated = fixture
        .service
        .activate_trial(&admin(), "LIST", &redraft.record.definition_sha256)
        .await;
    if activated.is_ok() {
        // Show what a site then meets, to make the failure concrete.
        let first = fixture
            .randomise("FR-MTP", "R-1", "LIST", respine_subject(MODERATE_PAIN))
            .await;
        let second = fixture
            .randomise("FR-MTP", "R-2", "LIST", respine_subject(MODERATE_PAIN))
            .await;
        panic!(
            "a list naming arm SHAM was activated for a design whose arms are MSC and PLACEBO; \
             first subject: {first:?}; second subject: {second:?}"
        );
    }
    assert_failed_precondition(&activated);
}
