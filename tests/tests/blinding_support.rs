//! `BlindingSupportService` over real gRPC: served to `service:blinding`
//! only, whatever roles a user token claims, and to no other service.

use equipoise_common::grpc::client::{self, AuthenticatedChannel};
use equipoise_proto::randomisation::v1 as pb;
use equipoise_randomisation::store::Store;
use equipoise_tests::{RESPINE_YAML, TestServer, activate, respine_request};
use pb::blinding_support_service_client::BlindingSupportServiceClient;
use tonic::Code;

type Support = BlindingSupportServiceClient<AuthenticatedChannel>;

/// A client authenticated as `service:<service>`, as the binary builds it.
async fn as_service(server: &TestServer, service: &str) -> Support {
    let interceptor = server
        .settings
        .auth
        .service_interceptor(&server.settings.data_dir, service)
        .expect("service interceptor");
    BlindingSupportServiceClient::new(client::authenticated(server.channel().await, interceptor))
}

async fn as_user(server: &TestServer, token: &str) -> Support {
    let interceptor = client::ClientInterceptor::bearer(token).expect("ascii token");
    BlindingSupportServiceClient::new(client::authenticated(server.channel().await, interceptor))
}

fn trial_request() -> pb::GetTrialForBlindingRequest {
    pb::GetTrialForBlindingRequest {
        trial_id: "RESPINE".into(),
    }
}

fn look_up(subject: &str) -> pb::LookUpAllocationRequest {
    pb::LookUpAllocationRequest {
        trial_id: "RESPINE".into(),
        subject_id: subject.into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_blinding_service_is_served() {
    let server = TestServer::start().await;
    let trial = activate(&server, RESPINE_YAML).await;

    let mut blinding = as_service(&server, "blinding").await;
    let served = blinding
        .get_trial_for_blinding(trial_request())
        .await
        .expect("served to service:blinding")
        .into_inner();
    assert_eq!(served.code_seed.len(), 32);
    assert_eq!(served.definition_sha256, trial.definition_sha256);
    assert_eq!(served.state(), pb::TrialState::Active);
    let status = blinding
        .look_up_allocation(look_up("NOBODY"))
        .await
        .expect_err("no allocation");
    assert_eq!(status.code(), Code::NotFound);

    let users = [
        server.admin_token(),
        server.token("edc", &["site_investigator"], &["FR-MTP"], &["RESPINE"]),
        server.token(
            "desk",
            &[
                "emergency_desk",
                "medical_monitor",
                "unblinded_preparer",
                "safety_officer",
            ],
            &[],
            &["*"],
        ),
    ];
    for token in &users {
        let mut user = as_user(&server, token).await;
        let status = user
            .get_trial_for_blinding(trial_request())
            .await
            .expect_err("users are refused");
        assert_eq!(status.code(), Code::PermissionDenied);
        let status = user
            .look_up_allocation(look_up("NOBODY"))
            .await
            .expect_err("users are refused");
        assert_eq!(status.code(), Code::PermissionDenied);
    }

    // A user token claiming the service role is refused by authentication.
    let forged = server.token("mallory", &["service:blinding"], &[], &["*"]);
    let status = as_user(&server, &forged)
        .await
        .get_trial_for_blinding(trial_request())
        .await
        .expect_err("a user token with a service role");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "user tokens may not carry service roles");

    let status = as_service(&server, "safety")
        .await
        .get_trial_for_blinding(trial_request())
        .await
        .expect_err("another service");
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_blinding_service_looks_up_an_allocation_and_the_look_up_is_audited() {
    let server = TestServer::start().await;
    activate(&server, RESPINE_YAML).await;
    let site = server.token("edc", &["site_investigator"], &["FR-MTP"], &["RESPINE"]);
    // The allocation commits whatever happens to its treatment code, which
    // this test does not look at.
    let _ = server
        .client(&site)
        .await
        .randomise(respine_request("FR-MTP", "S-1", 55.0))
        .await;
    let store = server.store().await;
    let stored = store
        .allocation("RESPINE", "S-1")
        .await
        .expect("read")
        .expect("the allocation is committed");

    let before = store.audit_records(1, u32::MAX).await.expect("audit").len();
    let arm = as_service(&server, "blinding")
        .await
        .look_up_allocation(look_up("S-1"))
        .await
        .expect("looked up")
        .into_inner();
    assert_eq!(arm.arm_id, stored.arm);
    assert_eq!(arm.site_id, "FR-MTP");
    assert!(arm.randomised_at.is_some());
    assert!(!arm.randomised_in_error);

    let records = store.audit_records(1, u32::MAX).await.expect("audit");
    assert_eq!(records.len(), before + 1, "the look-up is audited");
    let record = records.last().expect("a record");
    assert_eq!(record.entry.actor, "service:blinding");
    assert!(
        !record.entry.details.to_string().contains(&stored.arm),
        "no arm in the trail"
    );
}
