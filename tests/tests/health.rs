//! Health that Kubernetes can act on: on shutdown every service turns
//! NOT_SERVING while the server still accepts calls, and only after the
//! drain delay do the watchers end and the listener close. The tests assert
//! the order of events, never how long anything took.

use equipoise::settings::MAX_DRAIN_DELAY_MS;
use equipoise_common::grpc::client;
use equipoise_proto::randomisation::v1 as pb;
use equipoise_tests::{TIMEOUTS, TestServer, client_on};
use tonic::Code;
use tonic::codec::Streaming;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

const RANDOMISATION: &str = "equipoise.randomisation.v1.RandomisationService";

/// What a watcher saw, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Status(ServingStatus),
    StreamEnded,
    StillOpen,
}

async fn watch(server: &TestServer, service: &str) -> Streaming<HealthCheckResponse> {
    HealthClient::new(server.channel().await)
        .watch(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("watch")
        .into_inner()
}

async fn next(watcher: &mut Streaming<HealthCheckResponse>) -> Seen {
    match watcher.message().await.expect("watch stream") {
        Some(response) => Seen::Status(response.status()),
        None => Seen::StreamEnded,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_reports_not_serving_while_calls_are_still_answered() {
    // Far longer than the test: the drain cannot end while it looks.
    let mut server = TestServer::start_with(|s| s.drain_delay_ms = MAX_DRAIN_DELAY_MS).await;
    let mut overall = watch(&server, "").await;
    let mut randomisation = watch(&server, RANDOMISATION).await;
    assert_eq!(
        next(&mut overall).await,
        Seen::Status(ServingStatus::Serving)
    );
    assert_eq!(
        next(&mut randomisation).await,
        Seen::Status(ServingStatus::Serving)
    );

    server.begin_shutdown();
    assert_eq!(
        next(&mut overall).await,
        Seen::Status(ServingStatus::NotServing)
    );
    assert_eq!(
        next(&mut randomisation).await,
        Seen::Status(ServingStatus::NotServing)
    );

    // The listener still accepts: a probe on a new connection is answered
    // NOT_SERVING, and the service still answers calls.
    let channel = server.channel().await;
    let probe = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: RANDOMISATION.into(),
        })
        .await
        .expect("probe answered")
        .into_inner();
    assert_eq!(probe.status(), ServingStatus::NotServing);
    let answer = client_on(channel, &server.admin_token())
        .get_trial(pb::GetTrialRequest {
            trial_id: "GHOST".into(),
        })
        .await
        .expect_err("no such trial");
    assert_eq!(answer.code(), Code::NotFound, "{answer:?}");
    server.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn after_the_drain_watchers_end_and_then_the_listener_closes() {
    let mut server = TestServer::start_with(|s| s.drain_delay_ms = 50).await;
    let endpoint = server.endpoint.clone();
    let mut watcher = watch(&server, RANDOMISATION).await;
    let mut seen = vec![next(&mut watcher).await];
    server.begin_shutdown();
    seen.push(next(&mut watcher).await);
    // A guard so a regression fails instead of hanging; not a timing check.
    let end = tokio::time::timeout(std::time::Duration::from_secs(120), next(&mut watcher));
    seen.push(end.await.unwrap_or(Seen::StillOpen));
    assert_eq!(
        seen,
        [
            Seen::Status(ServingStatus::Serving),
            Seen::Status(ServingStatus::NotServing),
            Seen::StreamEnded,
        ]
    );
    server.stop().await;
    assert!(
        client::connect(&endpoint, TIMEOUTS).await.is_err(),
        "the port should be closed after the drain"
    );
}
