//! Every bad input of the randomisation issue, over real gRPC: the status
//! code, what it names, and that nothing was written.

use equipoise_proto::randomisation::v1 as pb;
use equipoise_randomisation::store::Store;
use equipoise_tests::{RESPINE_YAML, TestServer, activate, decimal, integer, respine_request};
use tonic::Code;
use tonic_types::StatusExt;

/// (audit records, allocations): a refused request changes neither.
async fn footprint(server: &TestServer) -> (usize, u32) {
    let store = server.store().await;
    let audit = store.audit_records(1, u32::MAX).await.expect("audit").len();
    let allocations = store.counts("RESPINE").await.expect("counts").total;
    (audit, allocations)
}

fn violations(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

async fn site_client(server: &TestServer, site: &str) -> equipoise_tests::Client {
    let token = server.token(
        "edc",
        &["site_investigator"],
        &[site, "XX-NOPE"],
        &["RESPINE", "GHOST"],
    );
    server.client(&token).await
}

#[tokio::test(flavor = "multi_thread")]
async fn randomise_refusals_name_the_problem_and_write_nothing() {
    let server = TestServer::start().await;
    activate(&server, RESPINE_YAML).await;
    let mut site = site_client(&server, "FR-MTP").await;
    site.randomise(respine_request("FR-MTP", "S-1", 55.0))
        .await
        .expect("baseline allocation");
    let before = footprint(&server).await;

    let unknown_trial = pb::RandomiseRequest {
        trial_id: "GHOST".into(),
        ..respine_request("FR-MTP", "S-2", 55.0)
    };
    let status = site
        .randomise(unknown_trial)
        .await
        .expect_err("unknown trial");
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("GHOST"));

    let status = site
        .randomise(respine_request("XX-NOPE", "S-2", 55.0))
        .await
        .expect_err("unknown site");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violations(&status), ["site_id"]);

    let status = site
        .randomise(respine_request("FR-PAR", "S-2", 55.0))
        .await
        .expect_err("site outside claims");
    assert_eq!(status.code(), Code::PermissionDenied);

    let mut mistyped = respine_request("FR-MTP", "S-2", 55.0);
    mistyped
        .covariates
        .insert("age_years".into(), decimal(45.5));
    mistyped.covariates.insert("vas_mm".into(), decimal(120.0));
    mistyped.covariates.remove("ddd_on_mri");
    mistyped.covariates.insert("weight_kg".into(), integer(80));
    let status = site.randomise(mistyped).await.expect_err("bad covariates");
    assert_eq!(status.code(), Code::InvalidArgument);
    let mut fields = violations(&status);
    fields.sort();
    assert_eq!(
        fields,
        [
            "covariates.age_years",
            "covariates.ddd_on_mri",
            "covariates.vas_mm",
            "covariates.weight_kg"
        ]
    );

    let mut empty_value = respine_request("FR-MTP", "S-2", 55.0);
    empty_value
        .covariates
        .insert("age_years".into(), pb::CovariateValue { value: None });
    let status = site
        .randomise(empty_value)
        .await
        .expect_err("covariate without a value");
    assert_eq!(violations(&status), ["covariates.age_years"]);

    let mut ineligible = respine_request("FR-MTP", "S-2", 35.0);
    ineligible
        .covariates
        .insert("age_years".into(), integer(17));
    let status = site.randomise(ineligible).await.expect_err("ineligible");
    assert_eq!(status.code(), Code::FailedPrecondition);
    let failed: Vec<String> = status
        .get_error_details()
        .precondition_failure()
        .map(|p| p.violations.iter().map(|v| v.subject.clone()).collect())
        .unwrap_or_default();
    assert_eq!(failed, ["age", "pain"]);

    let status = site
        .randomise(respine_request("FR-MTP", "S-1", 75.0))
        .await
        .expect_err("conflicting repeat");
    assert_eq!(status.code(), Code::AlreadyExists);

    let status = site
        .randomise(respine_request("FR-MTP", "bad id with spaces", 55.0))
        .await
        .expect_err("bad subject id");
    assert_eq!(violations(&status), ["subject_id"]);

    assert_eq!(
        footprint(&server).await,
        before,
        "a refused request wrote something"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_gates_and_caps() {
    let server = TestServer::start().await;
    let mut admin = server.client(&server.admin_token()).await;
    admin
        .register_trial(pb::RegisterTrialRequest {
            definition_yaml: RESPINE_YAML.replace(
                "caps: { total: 114 }",
                "caps: { total: 114, per_stratum: 1 }",
            ),
        })
        .await
        .expect("register");
    let mut site = site_client(&server, "FR-MTP").await;

    let status = site
        .randomise(respine_request("FR-MTP", "S-1", 55.0))
        .await
        .expect_err("draft");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("not active"));

    let status = admin
        .activate_trial(pb::ActivateTrialRequest {
            trial_id: "RESPINE".into(),
            expected_definition_sha256: "0".repeat(64),
        })
        .await
        .expect_err("unreviewed hash");
    assert_eq!(status.code(), Code::FailedPrecondition);
    admin
        .activate_trial(pb::ActivateTrialRequest {
            trial_id: "RESPINE".into(),
            expected_definition_sha256: String::new(),
        })
        .await
        .expect("activate");

    site.randomise(respine_request("FR-MTP", "S-1", 55.0))
        .await
        .expect("first in stratum");
    let before = footprint(&server).await;
    let status = site
        .randomise(respine_request("FR-MTP", "S-2", 55.0))
        .await
        .expect_err("stratum cap");
    assert_eq!(status.code(), Code::FailedPrecondition);
    // The site learns a design limit stopped it, not which one (review C5).
    assert!(
        status.message().contains("limit of the trial's design")
            && !status.message().contains("stratum"),
        "{}",
        status.message()
    );
    assert_eq!(footprint(&server).await, before);

    admin
        .close_enrolment(pb::CloseEnrolmentRequest {
            trial_id: "RESPINE".into(),
            reason: "target reached".into(),
        })
        .await
        .expect("close");
    let status = site
        .randomise(respine_request("FR-MTP", "S-3", 80.0))
        .await
        .expect_err("closed");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("closed"));
    // An identical retry of an earlier request still answers after closing.
    let replay = site
        .randomise(respine_request("FR-MTP", "S-1", 55.0))
        .await
        .expect("replay");
    assert!(replay.into_inner().replayed);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_invalid_definitions_list_every_problem() {
    let server = TestServer::start().await;
    let mut admin = server.client(&server.admin_token()).await;

    let status = admin
        .register_trial(pb::RegisterTrialRequest {
            definition_yaml: "id: [unclosed".into(),
        })
        .await
        .expect_err("malformed YAML");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("not valid YAML"));

    let invalid = RESPINE_YAML
        .replace("block_sizes: [2, 4]", "block_sizes: [3]")
        .replace("\"lbp_months >= 3\"", "\"months_of_pain >= 3\"")
        .replace(
            "sponsor_time_zone: Europe/Paris",
            "sponsor_time_zone: Europe/Paris\ncolour: blue",
        );
    let status = admin
        .register_trial(pb::RegisterTrialRequest {
            definition_yaml: invalid,
        })
        .await
        .expect_err("invalid design");
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields = violations(&status);
    for expected in [
        "definition_yaml: colour",
        "definition_yaml: method.block_sizes[0]",
        "definition_yaml: eligibility[1].rule",
    ] {
        assert!(
            fields.iter().any(|f| f == expected),
            "{expected} missing from {fields:?}"
        );
    }
    assert!(
        server
            .store()
            .await
            .trial("RESPINE")
            .await
            .expect("read")
            .is_none()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_and_roles_are_checked_on_every_call() {
    let server = TestServer::start().await;
    activate(&server, RESPINE_YAML).await;
    let get = || pb::GetTrialStatusRequest {
        trial_id: "RESPINE".into(),
    };

    let mut anonymous =
        pb::randomisation_service_client::RandomisationServiceClient::new(server.channel().await);
    let status = anonymous
        .get_trial_status(get())
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("missing bearer token"));

    let expired = server.token_with("s", &["trial_admin"], &[], &["*"], |c| c.exp = 1_000_000);
    let status = server
        .client(&expired)
        .await
        .get_trial_status(get())
        .await
        .expect_err("expired");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("expired"));

    let wrong_audience = server.token_with("s", &["trial_admin"], &[], &["*"], |c| {
        c.aud = "another-service".into()
    });
    let status = server
        .client(&wrong_audience)
        .await
        .get_trial_status(get())
        .await
        .expect_err("audience");
    assert_eq!(status.code(), Code::Unauthenticated);

    let genuine = server.admin_token();
    let forged = format!("{}x", &genuine[..genuine.len() - 1]);
    let status = server
        .client(&forged)
        .await
        .get_trial_status(get())
        .await
        .expect_err("forged");
    assert_eq!(status.code(), Code::Unauthenticated);

    let conflicting = server.token(
        "s",
        &["site_investigator", "unblinded_preparer"],
        &["FR-MTP"],
        &["RESPINE"],
    );
    let status = server
        .client(&conflicting)
        .await
        .get_trial_status(get())
        .await
        .expect_err("role pair");
    assert_eq!(status.code(), Code::PermissionDenied);

    let dsmb = server.token("d", &["dsmb"], &[], &["RESPINE"]);
    let status = server
        .client(&dsmb)
        .await
        .randomise(respine_request("FR-MTP", "S-1", 55.0))
        .await
        .expect_err("wrong role");
    assert_eq!(status.code(), Code::PermissionDenied);

    let other_trial = server.token("s", &["trial_admin"], &[], &["OTHER"]);
    let status = server
        .client(&other_trial)
        .await
        .get_trial_status(get())
        .await
        .expect_err("trial scope");
    assert_eq!(status.code(), Code::PermissionDenied);

    // Another site's subject is indistinguishable from a missing one.
    let mut mtp = site_client(&server, "FR-MTP").await;
    mtp.randomise(respine_request("FR-MTP", "S-1", 55.0))
        .await
        .expect("allocated");
    let paris = server.token("p", &["site_investigator"], &["FR-PAR"], &["RESPINE"]);
    let lookup = |subject: &str| pb::GetAllocationRequest {
        trial_id: "RESPINE".into(),
        subject_id: subject.into(),
    };
    let hidden = server
        .client(&paris)
        .await
        .get_allocation(lookup("S-1"))
        .await
        .expect_err("hidden");
    let missing = server
        .client(&paris)
        .await
        .get_allocation(lookup("S-404"))
        .await
        .expect_err("missing");
    assert_eq!(hidden.code(), Code::NotFound);
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(hidden.message().replace("S-1", "S-404"), missing.message());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_messages_and_absurd_simulations_are_not_run() {
    let server = TestServer::start_with(|s| s.max_message_bytes = 64 * 1024).await;
    activate(&server, RESPINE_YAML).await;
    let mut admin = server.client(&server.admin_token()).await;

    let huge = pb::RegisterTrialRequest {
        definition_yaml: format!("{RESPINE_YAML}\n# {}", "x".repeat(200 * 1024)),
    };
    let status = admin.register_trial(huge).await.expect_err("oversized");
    // tonic refuses a message over the decoding limit before the handler runs.
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(status.message().contains("too large"));

    let absurd = pb::SimulateRequest {
        design: Some(pb::simulate_request::Design::TrialId("RESPINE".into())),
        trials: 4_000_000_000,
        subjects_per_trial: 0,
        seed: 1,
        level_weights: Default::default(),
        ..Default::default()
    };
    let status = admin.simulate(absurd).await.expect_err("absurd simulation");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("exceed the limit"),
        "{}",
        status.message()
    );

    let unknown_factor = pb::SimulateRequest {
        design: Some(pb::simulate_request::Design::TrialId("RESPINE".into())),
        trials: 10,
        subjects_per_trial: 0,
        seed: 1,
        level_weights: [("colour".to_owned(), pb::LevelWeights::default())]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let status = admin
        .simulate(unknown_factor)
        .await
        .expect_err("unknown factor");
    assert_eq!(violations(&status), ["level_weights.colour"]);

    let endless_trend = pb::SimulateRequest {
        design: Some(pb::simulate_request::Design::TrialId("RESPINE".into())),
        trials: 10,
        time_trend: Some(f64::INFINITY),
        ..Default::default()
    };
    let status = admin
        .simulate(endless_trend)
        .await
        .expect_err("infinite trend");
    assert_eq!(violations(&status), ["time_trend"]);
    server.stop().await;
}

/// Review I4: strings are bounded where they enter, and what a refusal
/// echoes is cut to fit a header, so a huge id is INVALID_ARGUMENT, not a
/// broken response; a NUL in a reason is refused on every store alike.
#[tokio::test(flavor = "multi_thread")]
async fn long_strings_are_refused_by_name_and_never_break_the_response() {
    let server = TestServer::start().await;
    activate(&server, RESPINE_YAML).await;
    let mut admin = server.client(&server.admin_token()).await;
    let before = footprint(&server).await;
    let huge = "X".repeat(300 * 1024);

    let status = admin
        .get_trial(pb::GetTrialRequest {
            trial_id: huge.clone(),
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violations(&status), ["trial_id"]);
    assert!(status.message().len() <= 1024);

    let status = admin
        .get_allocation(pb::GetAllocationRequest {
            trial_id: "RESPINE".into(),
            subject_id: huge.clone(),
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violations(&status), ["subject_id"]);

    let mut site = site_client(&server, "FR-MTP").await;
    let mut request = respine_request("FR-MTP", "MTP-LONG", 55.0);
    request.covariates.insert(huge.clone(), integer(1));
    let status = site.randomise(request).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().len() <= 1024, "{}", status.message().len());

    site.randomise(respine_request("FR-MTP", "MTP-NUL", 55.0))
        .await
        .expect("allocates");
    let after_allocation = footprint(&server).await;
    let status = admin
        .mark_randomised_in_error(pb::MarkRandomisedInErrorRequest {
            trial_id: "RESPINE".into(),
            subject_id: "MTP-NUL".into(),
            reason: "consent \0 withdrawn".into(),
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violations(&status), ["reason"]);
    assert_eq!(footprint(&server).await, after_allocation);
    assert_ne!(before, after_allocation);
    server.stop().await;
}
