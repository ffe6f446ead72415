//! The declared role × RPC matrix (`equipoise_tests::roles::MATRIX`),
//! checked three ways: it names exactly the RPCs of the protos' descriptors;
//! every role (each of the role enum's user roles, each service role, and a
//! token with no role) calls every RPC of one real `--target all` server
//! over gRPC and is let through or refused as declared; and README's "Who
//! may call what" shows it.
//!
//! Requests are minimal: an allowed role may get INVALID_ARGUMENT,
//! NOT_FOUND or FAILED_PRECONDITION, having passed authorisation; nothing
//! a request asks for is valid enough to change a trial. Identifiers are
//! well formed, so a refusal can only come from the role.

use std::collections::BTreeSet;

use equipoise_common::auth::SERVICE_TOKEN_ISSUER;
use equipoise_common::grpc::client::{self, AuthenticatedChannel, ClientInterceptor};
use equipoise_proto::blinding::v1 as bpb;
use equipoise_proto::randomisation::v1 as rpb;
use equipoise_proto::safety::v1 as spb;
use equipoise_tests::roles::{MATRIX, NO_ROLES, columns, render_readme_table, row};
use equipoise_tests::{RESPINE_YAML, TestServer, activate, respine_request};
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Status};

const TRIAL: &str = "RESPINE";
const SITE: &str = "FR-MTP";
/// Randomised before the calls, so reads find something.
const SUBJECT: &str = "MTP-001";

/// Every `package.Service/Method` of the Equipoise protos.
fn descriptor_rpcs() -> BTreeSet<String> {
    let set = prost_types::FileDescriptorSet::decode(equipoise_proto::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set decodes");
    let mut rpcs = BTreeSet::new();
    for file in set.file {
        let package = file.package().to_owned();
        if !package.starts_with("equipoise.") {
            continue;
        }
        for service in &file.service {
            for method in &service.method {
                rpcs.insert(format!("{package}.{}/{}", service.name(), method.name()));
            }
        }
    }
    rpcs
}

#[test]
fn the_matrix_has_one_row_for_every_rpc_of_the_protos_and_no_other() {
    let declared: Vec<String> = MATRIX.iter().map(|row| row.rpc()).collect();
    let unique: BTreeSet<String> = declared.iter().cloned().collect();
    assert_eq!(unique.len(), declared.len(), "an RPC is declared twice");
    let rpcs = descriptor_rpcs();
    assert!(rpcs.len() >= 30, "the descriptors hold the APIs: {rpcs:?}");
    let missing: Vec<&String> = rpcs.difference(&unique).collect();
    assert!(
        missing.is_empty(),
        "RPCs with no row in MATRIX: {missing:?}"
    );
    let stale: Vec<&String> = unique.difference(&rpcs).collect();
    assert!(stale.is_empty(), "rows for no RPC: {stale:?}");
}

#[test]
fn the_matrix_names_only_known_roles() {
    let columns = columns();
    for row in MATRIX {
        for role in row.allowed {
            assert!(
                columns.iter().any(|c| c == role) && *role != NO_ROLES,
                "{}: unknown role {role}",
                row.rpc()
            );
        }
    }
}

#[test]
fn the_readme_shows_the_declared_matrix() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let begin = "<!-- role-matrix:begin (tests/tests/roles.rs) -->\n";
    let end = "<!-- role-matrix:end -->";
    let start = readme
        .find(begin)
        .expect("README has the matrix's begin marker")
        + begin.len();
    let stop = readme[start..]
        .find(end)
        .map(|i| start + i)
        .expect("README has the matrix's end marker");
    let expected = render_readme_table();
    assert!(
        readme[start..stop] == expected,
        "README's role matrix differs from MATRIX; replace it with:\n{expected}"
    );
}

/// One real server, one trial with one subject, then every role × RPC.
#[tokio::test(flavor = "multi_thread")]
async fn every_role_calls_every_rpc_as_the_matrix_declares() {
    let server = TestServer::start().await;
    activate(&server, RESPINE_YAML).await;
    let site = server.token("edc", &["site_investigator"], &[SITE], &["*"]);
    server
        .client(&site)
        .await
        .randomise(respine_request(SITE, SUBJECT, 55.0))
        .await
        .expect("a subject to read");
    let channel = server.channel().await;
    let mut failures = Vec::new();
    let rpcs = descriptor_rpcs();
    for column in columns() {
        let token = token_for(&server, &column);
        for rpc in &rpcs {
            let declared = row(rpc).unwrap_or_else(|| panic!("{rpc} has no row"));
            let allowed = declared.allowed.contains(&column.as_str());
            let outcome = call(&channel, &token, rpc).await;
            if let Some(failure) = judge(&column, rpc, allowed, outcome) {
                failures.push(failure);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `None` when the outcome matches the declaration.
fn judge(column: &str, rpc: &str, allowed: bool, outcome: Result<(), Status>) -> Option<String> {
    let code = outcome.as_ref().err().map(Status::code);
    let refused = matches!(code, Some(Code::PermissionDenied | Code::Unauthenticated));
    match (allowed, code) {
        (true, _) if !refused => None,
        (false, Some(Code::PermissionDenied)) => None,
        _ => Some(format!(
            "{column} × {rpc}: declared {}, got {outcome:?}",
            if allowed { "allowed" } else { "refused" }
        )),
    }
}

/// A token for one column; user tokens are freshly signed in (`auth_time`
/// now), so the emergency reveal's re-authentication rule does not stand
/// in for its role check.
fn token_for(server: &TestServer, column: &str) -> String {
    if column.starts_with("service:") {
        return server.token_with(column, &[column], &[], &["*"], |claims| {
            claims.iss = SERVICE_TOKEN_ISSUER.into();
        });
    }
    let roles: Vec<&str> = if column == NO_ROLES {
        Vec::new()
    } else {
        vec![column]
    };
    server.token(column, &roles, &[SITE], &["*"])
}

fn authenticated(channel: &Channel, token: &str) -> AuthenticatedChannel {
    let interceptor = ClientInterceptor::bearer(token).expect("ascii token");
    client::authenticated(channel.clone(), interceptor)
}

/// Calls `rpc` with a minimal request; `Ok` when the call passed (for a
/// stream: when it opened, which the services do only once authorised).
async fn call(channel: &Channel, token: &str, rpc: &str) -> Result<(), Status> {
    let (service, method) = rpc.split_once('/').expect("Service/Method");
    let channel = authenticated(channel, token);
    match service {
        "equipoise.randomisation.v1.RandomisationService" => {
            call_randomisation(channel, method).await
        }
        "equipoise.randomisation.v1.BlindingSupportService" => call_support(channel, method).await,
        "equipoise.blinding.v1.BlindingService" => call_blinding(channel, method).await,
        "equipoise.safety.v1.SafetyService" => call_safety(channel, method).await,
        other => panic!("no calls written for service {other}"),
    }
}

fn filter() -> Option<rpb::AllocationFilter> {
    Some(rpb::AllocationFilter {
        trial_id: TRIAL.into(),
        ..Default::default()
    })
}

async fn call_randomisation(channel: AuthenticatedChannel, method: &str) -> Result<(), Status> {
    let mut client = rpb::randomisation_service_client::RandomisationServiceClient::new(channel);
    let trial_id = || TRIAL.to_owned();
    match method {
        "RegisterTrial" => client
            .register_trial(rpb::RegisterTrialRequest::default())
            .await
            .map(drop),
        "UploadAllocationList" => client
            .upload_allocation_list(rpb::UploadAllocationListRequest {
                trial_id: trial_id(),
                csv: String::new(),
            })
            .await
            .map(drop),
        "ActivateTrial" => client
            .activate_trial(rpb::ActivateTrialRequest {
                trial_id: trial_id(),
                expected_definition_sha256: "0".repeat(64),
            })
            .await
            .map(drop),
        "AmendTrial" => client
            .amend_trial(rpb::AmendTrialRequest::default())
            .await
            .map(drop),
        "GetTrial" => client
            .get_trial(rpb::GetTrialRequest {
                trial_id: trial_id(),
            })
            .await
            .map(drop),
        "CloseEnrolment" => client
            .close_enrolment(rpb::CloseEnrolmentRequest {
                trial_id: trial_id(),
                reason: String::new(),
            })
            .await
            .map(drop),
        "Randomise" => client
            .randomise(rpb::RandomiseRequest {
                trial_id: trial_id(),
                site_id: SITE.into(),
                subject_id: "MTP-900".into(),
                covariates: Default::default(),
            })
            .await
            .map(drop),
        "GetAllocation" => client
            .get_allocation(rpb::GetAllocationRequest {
                trial_id: trial_id(),
                subject_id: SUBJECT.into(),
            })
            .await
            .map(drop),
        "ListAllocations" => client
            .list_allocations(rpb::ListAllocationsRequest {
                filter: filter(),
                ..Default::default()
            })
            .await
            .map(drop),
        "StreamAllocations" => client
            .stream_allocations(rpb::StreamAllocationsRequest { filter: filter() })
            .await
            .map(drop),
        "GetTrialStatus" => client
            .get_trial_status(rpb::GetTrialStatusRequest {
                trial_id: trial_id(),
            })
            .await
            .map(drop),
        "CorrectStratum" => client
            .correct_stratum(rpb::CorrectStratumRequest {
                trial_id: trial_id(),
                subject_id: SUBJECT.into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "MarkRandomisedInError" => client
            .mark_randomised_in_error(rpb::MarkRandomisedInErrorRequest {
                trial_id: trial_id(),
                subject_id: SUBJECT.into(),
                reason: String::new(),
            })
            .await
            .map(drop),
        "Simulate" => client
            .simulate(rpb::SimulateRequest {
                design: Some(rpb::simulate_request::Design::DefinitionYaml(String::new())),
                ..Default::default()
            })
            .await
            .map(drop),
        "ExportAuditTrail" => client
            .export_audit_trail(rpb::ExportAuditTrailRequest { after_seq: 0 })
            .await
            .map(drop),
        other => panic!("no call written for RandomisationService/{other}"),
    }
}

async fn call_support(channel: AuthenticatedChannel, method: &str) -> Result<(), Status> {
    let mut client =
        rpb::blinding_support_service_client::BlindingSupportServiceClient::new(channel);
    match method {
        "GetTrialForBlinding" => client
            .get_trial_for_blinding(rpb::GetTrialForBlindingRequest {
                trial_id: TRIAL.into(),
            })
            .await
            .map(drop),
        "LookUpAllocation" => client
            .look_up_allocation(rpb::LookUpAllocationRequest {
                trial_id: TRIAL.into(),
                subject_id: "MTP-404".into(),
            })
            .await
            .map(drop),
        other => panic!("no call written for BlindingSupportService/{other}"),
    }
}

async fn call_blinding(channel: AuthenticatedChannel, method: &str) -> Result<(), Status> {
    let mut client = bpb::blinding_service_client::BlindingServiceClient::new(channel);
    let trial_id = || TRIAL.to_owned();
    match method {
        "AssignCode" => client
            .assign_code(bpb::AssignCodeRequest {
                trial_id: trial_id(),
                subject_id: "MTP-404".into(),
                site_id: SITE.into(),
                // No arm and no time: refused as invalid, nothing assigned.
                ..Default::default()
            })
            .await
            .map(drop),
        "UploadCodes" => client
            .upload_codes(bpb::UploadCodesRequest {
                trial_id: trial_id(),
                csv: String::new(),
            })
            .await
            .map(drop),
        "GetBlindingStatus" => client
            .get_blinding_status(bpb::GetBlindingStatusRequest {
                trial_id: trial_id(),
            })
            .await
            .map(drop),
        "GetSubjectBlinding" => client
            .get_subject_blinding(bpb::GetSubjectBlindingRequest {
                trial_id: trial_id(),
                subject_id: SUBJECT.into(),
            })
            .await
            .map(drop),
        "GetPreparationInstruction" => client
            .get_preparation_instruction(bpb::GetPreparationInstructionRequest {
                trial_id: trial_id(),
                code: "R-NOCODE".into(),
            })
            .await
            .map(drop),
        "RecordGivenTreatment" => client
            .record_given_treatment(bpb::RecordGivenTreatmentRequest {
                trial_id: trial_id(),
                subject_id: SUBJECT.into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "EmergencyUnblind" => client
            .emergency_unblind(bpb::EmergencyUnblindRequest {
                trial_id: trial_id(),
                // No subject and no reason: refused as invalid, nothing revealed.
                ..Default::default()
            })
            .await
            .map(drop),
        "SafetyReveal" => client
            .safety_reveal(bpb::SafetyRevealRequest {
                trial_id: trial_id(),
                subject_id: SUBJECT.into(),
                case_id: String::new(),
            })
            .await
            .map(drop),
        "GetArmsForDsmb" => client
            .get_arms_for_dsmb(bpb::GetArmsForDsmbRequest {
                trial_id: trial_id(),
                subject_ids: Vec::new(),
            })
            .await
            .map(drop),
        "PlannedPeriodReveal" => client
            .planned_period_reveal(bpb::PlannedPeriodRevealRequest {
                trial_id: trial_id(),
                subject_id: SUBJECT.into(),
                period_id: String::new(),
            })
            .await
            .map(drop),
        "WatchUnblindings" => client
            .watch_unblindings(bpb::WatchUnblindingsRequest {
                trial_id: trial_id(),
                after_cursor: 0,
            })
            .await
            .map(drop),
        other => panic!("no call written for BlindingService/{other}"),
    }
}

async fn call_safety(channel: AuthenticatedChannel, method: &str) -> Result<(), Status> {
    let mut client = spb::safety_service_client::SafetyServiceClient::new(channel);
    let report = || {
        Some(spb::CaseReport {
            trial_id: TRIAL.into(),
            site_id: SITE.into(),
            subject_id: SUBJECT.into(),
            ..Default::default()
        })
    };
    match method {
        "ReportCase" => client
            .report_case(spb::ReportCaseRequest { report: report() })
            .await
            .map(drop),
        "ReportFollowUp" => client
            .report_follow_up(spb::ReportFollowUpRequest {
                case_id: "C-404".into(),
                report: report(),
            })
            .await
            .map(drop),
        "AssessCausality" => client
            .assess_causality(spb::AssessCausalityRequest {
                case_id: "C-404".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "GetCase" => client
            .get_case(spb::GetCaseRequest {
                case_id: "C-404".into(),
                version: 0,
            })
            .await
            .map(drop),
        "ListCases" => client
            .list_cases(spb::ListCasesRequest {
                trial_id: TRIAL.into(),
            })
            .await
            .map(drop),
        "ListObligations" => client
            .list_obligations(spb::ListObligationsRequest {
                trial_id: TRIAL.into(),
                include_submitted: false,
            })
            .await
            .map(drop),
        "RecordSubmission" => client
            .record_submission(spb::RecordSubmissionRequest::default())
            .await
            .map(drop),
        "GetSafetySummary" => client
            .get_safety_summary(spb::GetSafetySummaryRequest {
                trial_id: TRIAL.into(),
            })
            .await
            .map(drop),
        "ExportCase" => client
            .export_case(spb::ExportCaseRequest {
                case_id: "C-404".into(),
                version: 0,
            })
            .await
            .map(drop),
        other => panic!("no call written for SafetyService/{other}"),
    }
}
