//! What every server provides: health without a token, reflection v1 and
//! v1alpha, graceful shutdown; and the read and simulation calls over gRPC.

use equipoise_common::grpc::client::{ClientInterceptor, authenticated};
use equipoise_proto::randomisation::v1 as pb;
use equipoise_tests::{FACET_YAML, RESPINE_YAML, TestServer, activate, respine_request};
use tokio_stream::StreamExt;
use tonic_reflection::pb::{v1, v1alpha};

#[tokio::test(flavor = "multi_thread")]
async fn health_needs_no_token_and_reports_the_service() {
    let server = TestServer::start().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let response = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "equipoise.randomisation.v1.RandomisationService".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        response.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reflection_lists_the_services_in_v1_and_v1alpha() {
    let server = TestServer::start().await;
    let admin = ClientInterceptor::bearer(&server.admin_token()).expect("ascii token");

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(authenticated(
        server.channel().await,
        admin.clone(),
    ));
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses.next().await.expect("one response").expect("ok");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"equipoise.randomisation.v1.RandomisationService".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );

    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(authenticated(
        server.channel().await,
        admin,
    ));
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut responses = alpha
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1alpha reflection")
        .into_inner();
    assert!(responses.next().await.expect("one response").is_ok());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_drains_and_stops_cleanly() {
    let server = TestServer::start().await;
    let endpoint = server.endpoint.clone();
    server.stop().await;
    let reconnect = tonic::transport::Channel::from_shared(endpoint)
        .expect("endpoint")
        .connect()
        .await;
    assert!(
        reconnect.is_err(),
        "the port should be closed after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn paging_and_streaming_see_the_same_allocations_without_arms() {
    let server = TestServer::start().await;
    activate(&server, RESPINE_YAML).await;
    let token = server.token("edc", &["site_investigator"], &["IT-MIL"], &["RESPINE"]);
    let mut site = server.client(&token).await;
    for n in 0..7 {
        site.randomise(respine_request(
            "IT-MIL",
            &format!("MIL-{n}"),
            60.0 + f64::from(n) * 3.0,
        ))
        .await
        .expect("randomised");
    }
    let filter = Some(pb::AllocationFilter {
        trial_id: "RESPINE".into(),
        ..Default::default()
    });
    let first = site
        .list_allocations(pb::ListAllocationsRequest {
            filter: filter.clone(),
            page_size: 4,
            page_token: String::new(),
        })
        .await
        .expect("page 1")
        .into_inner();
    assert_eq!(first.allocations.len(), 4);
    let second = site
        .list_allocations(pb::ListAllocationsRequest {
            filter: filter.clone(),
            page_size: 4,
            page_token: first.next_page_token.clone(),
        })
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(second.allocations.len(), 3);
    assert!(second.next_page_token.is_empty());

    let streamed: Vec<pb::Allocation> = site
        .stream_allocations(pb::StreamAllocationsRequest { filter })
        .await
        .expect("stream")
        .into_inner()
        .collect::<Result<_, _>>()
        .await
        .expect("stream items");
    let paged: Vec<pb::Allocation> = first
        .allocations
        .into_iter()
        .chain(second.allocations)
        .collect();
    assert_eq!(streamed, paged);

    let status = site
        .get_trial_status(pb::GetTrialStatusRequest {
            trial_id: "RESPINE".into(),
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.randomised, 7);
    assert_eq!(status.sites.len(), 1, "a site sees only its own counts");
    assert!(status.strata.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn simulation_over_grpc_reports_the_design() {
    let server = TestServer::start().await;
    let mut statistician = server
        .client(&server.token("stat", &["statistician"], &[], &["*"]))
        .await;
    let report = statistician
        .simulate(pb::SimulateRequest {
            design: Some(pb::simulate_request::Design::DefinitionYaml(
                FACET_YAML.into(),
            )),
            trials: 500,
            subjects_per_trial: 0,
            seed: 11,
            level_weights: Default::default(),
            selection_bias: Some(0.5),
            ..Default::default()
        })
        .await
        .expect("simulated")
        .into_inner();
    assert_eq!(report.method, "minimisation");
    assert_eq!(report.allocations, 500 * 40);
    assert_eq!(report.seed, 11);
    let overall = report
        .imbalance
        .iter()
        .find(|r| r.scope == "overall")
        .expect("overall row");
    assert!(overall.mean_final < 2.0, "{overall:?}");
    assert!(report.correct_guess_rate_trial > 0.5);
    assert!(overall.rms_final >= overall.mean_final);
    let trials: u64 = report
        .final_imbalance_distribution
        .iter()
        .map(|bin| bin.trials)
        .sum();
    assert_eq!(trials, 500);
    let selection = report.selection_bias.expect("selection bias assessed");
    assert_eq!(selection.trials_tested, 500);
    assert!(report.chronological_bias.is_none());
    server.stop().await;
}

/// Review A1/A2: a server on a shared database refuses to start on the
/// development secret it would make for itself, or without a seal key kept
/// apart from its data.
#[test]
fn a_server_on_a_shared_database_needs_explicit_keys() {
    let database = (
        "EQUIPOISE_RANDOMISATION__DATABASE_URL",
        "postgres://equipoise@127.0.0.1:1/never_reached".to_owned(),
    );
    let stderr =
        equipoise_testkit::Replica::start_bare_expecting_failure(std::slice::from_ref(&database));
    assert!(stderr.contains("explicit token keys"), "{stderr}");
    let keys = tempfile::tempdir().expect("tempdir");
    let secret = keys.path().join("hmac.secret");
    std::fs::write(&secret, "5e".repeat(32)).expect("secret");
    let stderr = equipoise_testkit::Replica::start_bare_expecting_failure(&[
        database,
        (
            "EQUIPOISE_AUTH__HMAC_SECRET_FILE",
            secret.display().to_string(),
        ),
    ]);
    assert!(stderr.contains("randomisation.seal_key_file"), "{stderr}");
}

/// Review I4: a call that does not answer within `request_timeout_ms` is
/// ended by the server, and nothing is left half done: a Randomise held
/// before its commit (test-only fault injection) allocates nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_past_the_server_timeout_is_ended_and_allocates_nothing() {
    let system = equipoise_tests::system::System::all_in_one(&[
        ("EQUIPOISE_REQUEST_TIMEOUT_MS", "1000".to_owned()),
        (
            "EQUIPOISE_RANDOMISATION__FAULTS__HOLD_BEFORE_COMMIT_MS",
            "30000".to_owned(),
        ),
    ]);
    system.activate(RESPINE_YAML).await;
    let site = system.token("sam", &["site_investigator"], &["FR-MTP"]);
    let mut client = system.randomisation_client(&site).await;
    let ended = client
        .randomise(respine_request("FR-MTP", "MTP-SLOW", 60.0))
        .await
        .expect_err("ended by the server");
    assert_eq!(ended.code(), tonic::Code::Cancelled, "{ended:?}");
    let read = client
        .get_allocation(pb::GetAllocationRequest {
            trial_id: "RESPINE".into(),
            subject_id: "MTP-SLOW".into(),
        })
        .await
        .expect_err("nothing allocated");
    assert_eq!(read.code(), tonic::Code::NotFound);
}
