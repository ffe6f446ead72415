//! The reverse mapping a calling service relies on, read from what a real
//! server sends: each refusal becomes the `RemoteError` that tells the
//! caller what to do.

use equipoise_common::error::{ErrorCode, RemoteError};
use equipoise_proto::randomisation::v1 as pb;
use equipoise_tests::{RESPINE_YAML, TestServer, activate, integer, respine_request};

#[tokio::test(flavor = "multi_thread")]
async fn refusals_over_grpc_read_back_as_remote_errors() {
    let server = TestServer::start().await;
    activate(&server, RESPINE_YAML).await;
    let token = server.token("edc", &["site_investigator"], &["FR-MTP"], &["RESPINE"]);
    let mut site = server.client(&token).await;

    let status = site
        .randomise(respine_request("FR-MTP", "bad id with spaces", 55.0))
        .await
        .expect_err("bad request");
    let RemoteError::InvalidArgument { violations, .. } = RemoteError::from(status) else {
        panic!("expected INVALID_ARGUMENT");
    };
    let fields: Vec<String> = violations.into_iter().map(|v| v.field).collect();
    assert_eq!(fields, ["subject_id"]);

    let mut ineligible = respine_request("FR-MTP", "S-1", 55.0);
    ineligible
        .covariates
        .insert("age_years".into(), integer(17));
    let status = site.randomise(ineligible).await.expect_err("ineligible");
    let RemoteError::FailedPrecondition { violations, .. } = RemoteError::from(status) else {
        panic!("expected FAILED_PRECONDITION");
    };
    let failed: Vec<(String, String)> = violations
        .into_iter()
        .map(|v| (v.kind, v.subject))
        .collect();
    assert_eq!(failed, [("ELIGIBILITY".to_owned(), "age".to_owned())]);

    let status = site
        .get_allocation(pb::GetAllocationRequest {
            trial_id: "RESPINE".into(),
            subject_id: "S-404".into(),
        })
        .await
        .expect_err("missing");
    assert!(matches!(
        RemoteError::from(status),
        RemoteError::NotFound { .. }
    ));

    let status = server
        .client("not-a-token")
        .await
        .get_trial(pb::GetTrialRequest {
            trial_id: "RESPINE".into(),
        })
        .await
        .expect_err("unauthenticated");
    assert!(matches!(
        RemoteError::from(status),
        RemoteError::Refused {
            code: ErrorCode::Unauthenticated,
            ..
        }
    ));
    server.stop().await;
}
