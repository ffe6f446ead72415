//! OpenTelemetry across the three services as separate processes, exported
//! over OTLP to a real gRPC receiver started here (the collector's
//! `TraceService` and `MetricsService`). One `Randomise` sent with a
//! `traceparent` must come back as one trace through randomisation and
//! blinding, correctly parented, with the `rpc.*` attributes, and nothing
//! exported (nor logged) may carry an arm, a label, a treatment code or a
//! subject id.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use equipoise_proto::randomisation::v1 as pb;
use equipoise_proto::safety::v1 as spb;
use equipoise_tests::system::System;
use equipoise_tests::{RESPINE_YAML, potential_susar, respine_request};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// The test client's own span: the trace the services must join.
const TRACE_ID: &str = "5e1ec7ed0a11ca7ebe11e5de1ec7ab1e";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";
const SAFETY_TRACE_ID: &str = "0bad5afe0bad5afe0bad5afe0bad5afe";

const SUBJECT: &str = "RESP-TRACE-0001";
const SAFETY_SUBJECT: &str = "RESP-TRACE-0002";

/// What the receiver was sent, decoded and as the bytes on the wire.
#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    metric_names: BTreeSet<String>,
    metric_points: Vec<(String, Vec<KeyValue>)>,
    bytes: Vec<u8>,
}

/// A span with its resource's `service.name`.
struct ReceivedSpan {
    service: String,
    span: Span,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Received>>);

impl Receiver {
    fn with<T>(&self, read: impl FnOnce(&Received) -> T) -> T {
        read(&self.0.lock().expect("receiver state"))
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        let mut received = self.0.lock().expect("receiver state");
        received.bytes.extend(request.encode_to_vec());
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| string_attribute(&r.attributes, "service.name"))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.spans.push(ReceivedSpan {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        use opentelemetry_proto::tonic::metrics::v1::metric::Data;
        let request = request.into_inner();
        let mut received = self.0.lock().expect("receiver state");
        received.bytes.extend(request.encode_to_vec());
        let metrics = request
            .resource_metrics
            .into_iter()
            .flat_map(|r| r.scope_metrics)
            .flat_map(|s| s.metrics);
        for metric in metrics {
            received.metric_names.insert(metric.name.clone());
            let points: Vec<Vec<KeyValue>> = match metric.data {
                Some(Data::Sum(sum)) => sum.data_points.into_iter().map(|p| p.attributes).collect(),
                Some(Data::Histogram(h)) => {
                    h.data_points.into_iter().map(|p| p.attributes).collect()
                }
                Some(Data::Gauge(g)) => g.data_points.into_iter().map(|p| p.attributes).collect(),
                _ => Vec::new(),
            };
            for attributes in points {
                received
                    .metric_points
                    .push((metric.name.clone(), attributes));
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Serves the receiver on a free loopback port until the test ends.
async fn start_receiver() -> (Receiver, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let receiver = Receiver::default();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(receiver.clone()))
        .add_service(MetricsServiceServer::new(receiver.clone()))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    (receiver, format!("http://{address}"))
}

fn telemetry_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_owned()),
        // Short batches so the test need not wait out the 5 s default.
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "300".to_owned()),
        ("OTEL_TRACES_SAMPLER", "parentbased_always_on".to_owned()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=test".to_owned(),
        ),
        // Quick code-pool warnings and retries are irrelevant here; short
        // intervals keep the background tasks exporting too.
        (
            "EQUIPOISE_SAFETY__CLASSIFICATION_RETRY_INTERVAL_MS",
            "200".to_owned(),
        ),
    ]
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(Value::StringValue(s)) => Some(s.clone()),
            Some(Value::IntValue(i)) => Some(i.to_string()),
            _ => None,
        })
}

fn has_attribute(attributes: &[KeyValue], key: &str, value: &str) -> bool {
    string_attribute(attributes, key).as_deref() == Some(value)
}

fn hex_id(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn with_traceparent<T>(message: T, trace_id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let traceparent = format!("00-{trace_id}-{PARENT_SPAN_ID}-01");
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().expect("a header value"));
    request
}

/// Waits, within a generous bound, until `done` holds for what was
/// received; the bound only keeps a broken exporter from hanging the test.
async fn wait_for(receiver: &Receiver, what: &str, done: impl Fn(&Received) -> bool) {
    for _ in 0..600 {
        if receiver.with(&done) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let names = receiver.with(|r| {
        r.spans
            .iter()
            .map(|s| format!("{}:{}", s.service, s.span.name))
            .collect::<Vec<_>>()
    });
    panic!("the receiver never got {what}; spans so far: {names:?}");
}

/// The one span of `trace_id` named `name`, exported by `service`.
fn span<'a>(received: &'a Received, trace_id: &str, service: &str, name: &str) -> &'a Span {
    let found: Vec<&Span> = received
        .spans
        .iter()
        .filter(|s| {
            hex_id(&s.span.trace_id) == trace_id && s.service == service && s.span.name == name
        })
        .map(|s| &s.span)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {service} span {name} in trace {trace_id}"
    );
    found[0]
}

fn assert_rpc_attributes(span: &Span, service: &str, method: &str) {
    for (key, value) in [
        ("rpc.system", "grpc"),
        ("rpc.service", service),
        ("rpc.method", method),
        ("rpc.grpc.status_code", "0"),
    ] {
        assert!(
            has_attribute(&span.attributes, key, value),
            "{} lacks {key}={value}: {:?}",
            span.name,
            span.attributes
        );
    }
}

fn assert_child_of(child: &Span, parent: &Span) {
    assert_eq!(
        hex_id(&child.parent_span_id),
        hex_id(&parent.span_id),
        "{} is not a child of {}",
        child.name,
        parent.name
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_randomise_is_one_trace_across_the_services_and_exports_nothing_unblinding() {
    let (receiver, endpoint) = start_receiver().await;
    let system = System::separate(&telemetry_env(&endpoint));
    system.activate(RESPINE_YAML).await;
    let edc = system.token("edc", &["site_investigator"], &["FR-MTP"]);
    let mut randomisation = system.randomisation_client(&edc).await;
    let reply = randomisation
        .randomise(with_traceparent(
            respine_request("FR-MTP", SUBJECT, 64.0),
            TRACE_ID,
        ))
        .await
        .expect("randomised")
        .into_inner();
    let code = reply.treatment_code.clone();
    assert!(!code.is_empty(), "Randomise returned a treatment code");

    let randomise = "equipoise.randomisation.v1.RandomisationService/Randomise";
    let assign = "equipoise.blinding.v1.BlindingService/AssignCode";
    wait_for(&receiver, "blinding's AssignCode span", |r| {
        r.spans.iter().any(|s| {
            hex_id(&s.span.trace_id) == TRACE_ID
                && s.service == "equipoise-blinding"
                && s.span.name == assign
        }) && r.spans.iter().any(|s| s.span.name == randomise)
    })
    .await;

    receiver.with(|r| {
        let server = span(r, TRACE_ID, "equipoise-randomisation", randomise);
        assert_eq!(hex_id(&server.parent_span_id), PARENT_SPAN_ID);
        assert_eq!(server.kind, SpanKind::Server as i32);
        assert_rpc_attributes(
            server,
            "equipoise.randomisation.v1.RandomisationService",
            "Randomise",
        );
        for child in ["allocation.lock.wait", "store.commit_allocation"] {
            assert_child_of(span(r, TRACE_ID, "equipoise-randomisation", child), server);
        }
        let client = span(r, TRACE_ID, "equipoise-randomisation", assign);
        assert_eq!(client.kind, SpanKind::Client as i32);
        assert_child_of(client, server);
        let callee = span(r, TRACE_ID, "equipoise-blinding", assign);
        assert_eq!(callee.kind, SpanKind::Server as i32);
        assert_rpc_attributes(
            callee,
            "equipoise.blinding.v1.BlindingService",
            "AssignCode",
        );
        assert_child_of(callee, client);
        assert_child_of(
            span(r, TRACE_ID, "equipoise-blinding", "store.assign_code"),
            callee,
        );
        // The first code of the trial generates the pools, fetching the
        // trial from randomisation: a third hop in the same trace.
        let fetch = "equipoise.randomisation.v1.BlindingSupportService/GetTrialForBlinding";
        let fetch_client = span(r, TRACE_ID, "equipoise-blinding", fetch);
        assert_child_of(
            span(r, TRACE_ID, "equipoise-randomisation", fetch),
            fetch_client,
        );
        // Every span of the trace comes from the services on its path.
        let services: BTreeSet<&str> = r
            .spans
            .iter()
            .filter(|s| hex_id(&s.span.trace_id) == TRACE_ID)
            .map(|s| s.service.as_str())
            .collect();
        assert_eq!(
            services,
            BTreeSet::from(["equipoise-blinding", "equipoise-randomisation"])
        );
    });

    report_a_potential_susar(&system).await;
    let report = "equipoise.safety.v1.SafetyService/ReportCase";
    let reveal = "equipoise.blinding.v1.BlindingService/SafetyReveal";
    wait_for(
        &receiver,
        "the report's and the safety reveal's spans",
        |r| {
            [("equipoise-blinding", reveal), ("equipoise-safety", report)]
                .iter()
                .all(|(service, name)| {
                    r.spans.iter().any(|s| {
                        hex_id(&s.span.trace_id) == SAFETY_TRACE_ID
                            && s.service == *service
                            && s.span.name == *name
                    })
                })
        },
    )
    .await;
    receiver.with(|r| {
        let server = span(r, SAFETY_TRACE_ID, "equipoise-safety", report);
        assert_eq!(hex_id(&server.parent_span_id), PARENT_SPAN_ID);
        let client = span(r, SAFETY_TRACE_ID, "equipoise-safety", reveal);
        assert_child_of(
            span(r, SAFETY_TRACE_ID, "equipoise-blinding", reveal),
            client,
        );
        assert_rpc_attributes(server, "equipoise.safety.v1.SafetyService", "ReportCase");
    });

    wait_for(&receiver, "the allocation and RPC metrics", |r| {
        r.metric_points.iter().any(|(name, attributes)| {
            name == "equipoise.allocations"
                && has_attribute(attributes, "outcome", "allocated")
                && has_attribute(attributes, "trial", "RESPINE")
        }) && r.metric_points.iter().any(|(name, attributes)| {
            name == "rpc.server.call.duration"
                && has_attribute(attributes, "rpc.method", "Randomise")
                && has_attribute(attributes, "rpc.grpc.status_code", "OK")
        }) && [
            "equipoise.allocation.lock.wait.duration",
            "equipoise.store.commit.duration",
        ]
        .iter()
        .all(|name| r.metric_names.contains(*name))
    })
    .await;

    let forbidden = [
        "MSC",
        "SHAM",
        "BM-MSC 20e6 cells in 2 ml, intradiscal",
        "Sham paravertebral injection",
        code.as_str(),
        SUBJECT,
        SAFETY_SUBJECT,
    ];
    receiver.with(|r| {
        for text in forbidden {
            assert!(
                !contains(&r.bytes, text.as_bytes()),
                "an export carries {text:?}"
            );
        }
    });
    let logs = system.logs();
    for text in forbidden {
        assert!(!logs.contains(text), "a log line carries {text:?}");
    }
    // Lines written during the call carry its trace id.
    assert!(
        logs.lines()
            .any(|line| line.contains(TRACE_ID) && line.contains("randomised")),
        "no log line of the Randomise carries its trace id"
    );
}

/// A fatal, unexpected, related event: safety reveals the arm through
/// blinding within the report's own trace.
async fn report_a_potential_susar(system: &System) {
    let edc = system.token("edc", &["site_investigator"], &["FR-MTP"]);
    let mut randomisation = system.randomisation_client(&edc).await;
    randomisation
        .randomise(respine_request("FR-MTP", SAFETY_SUBJECT, 70.0))
        .await
        .expect("randomised");
    let report = potential_susar(SAFETY_SUBJECT);
    let mut safety = system.safety_client(&edc).await;
    safety
        .report_case(with_traceparent(
            spb::ReportCaseRequest {
                report: Some(report),
            },
            SAFETY_TRACE_ID,
        ))
        .await
        .expect("reported");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// An OTLP endpoint nobody listens on: calls are answered as usual.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_collector_never_fails_a_call() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    };
    let system = System::all_in_one(&telemetry_env(&format!("http://{closed}")));
    system.activate(RESPINE_YAML).await;
    let edc = system.token("edc", &["site_investigator"], &["FR-MTP"]);
    let mut randomisation = system.randomisation_client(&edc).await;
    for n in 0..20 {
        let reply = randomisation
            .randomise(with_traceparent(
                respine_request("FR-MTP", &format!("RESP-DOWN-{n:04}"), 64.0),
                TRACE_ID,
            ))
            .await
            .expect("randomised with the collector down")
            .into_inner();
        assert!(!reply.treatment_code.is_empty());
    }
    let mut reader = system.randomisation_client(&edc).await;
    let allocation = reader
        .get_allocation(pb::GetAllocationRequest {
            trial_id: "RESPINE".into(),
            subject_id: "RESP-DOWN-0000".into(),
        })
        .await
        .expect("read back")
        .into_inner();
    assert_eq!(allocation.subject_id, "RESP-DOWN-0000");
}
