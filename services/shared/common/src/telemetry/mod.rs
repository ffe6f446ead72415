//! Traces, metrics and logs (docs/architecture.md, "Operations"), set up in
//! one place for every service.
//!
//! Configured only by the standard `OTEL_*` variables and off unless an OTLP
//! endpoint is set. Exports are batched on the runtime, away from the
//! request path, into bounded queues: an unreachable collector costs dropped
//! telemetry, never a slower or failed call.
//!
//! What goes into spans is decided here and in the gRPC edge
//! ([`crate::grpc::call_log`], [`crate::grpc::client`],
//! [`crate::grpc::propagation`]): method names,
//! status codes, trial and site ids and keyed subject tags
//! ([`subject_tag`]), never an arm, a label, a treatment code or a subject
//! id in clear.

pub mod metrics;
mod tag;

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::logging::LogFormat;

pub use tag::{set_subject_tag_key, subject_tag};

/// Tracer and meter name of every Equipoise span and instrument.
pub const INSTRUMENTATION_SCOPE: &str = "equipoise";

/// How long shutdown waits for the last export before giving up on it.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{variable}: {reason}")]
    Exporter {
        variable: &'static str,
        reason: String,
    },
}

/// Which signals are exported, read from the `OTEL_*` variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtlpExport {
    pub traces: bool,
    pub metrics: bool,
    /// `OTEL_SERVICE_NAME` is unset: the resource names the service after
    /// the target being served.
    pub service_name_unset: bool,
}

impl OtlpExport {
    /// A signal is exported when its own endpoint variable or the generic
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and `OTEL_SDK_DISABLED` is not
    /// `true`; `OTEL_TRACES_EXPORTER` / `OTEL_METRICS_EXPORTER` = `none`
    /// turn one off.
    pub fn from_variables(variable: impl Fn(&str) -> Option<String>) -> Self {
        let set = |name: &str| variable(name).is_some_and(|value| !value.trim().is_empty());
        let is = |name: &str, value: &str| {
            variable(name).is_some_and(|v| v.trim().eq_ignore_ascii_case(value))
        };
        if is("OTEL_SDK_DISABLED", "true") {
            return Self::default();
        }
        let generic = set("OTEL_EXPORTER_OTLP_ENDPOINT");
        Self {
            traces: (generic || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
                && !is("OTEL_TRACES_EXPORTER", "none"),
            metrics: (generic || set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))
                && !is("OTEL_METRICS_EXPORTER", "none"),
            service_name_unset: !set("OTEL_SERVICE_NAME"),
        }
    }

    pub fn from_environment() -> Self {
        Self::from_variables(|name| std::env::var(name).ok())
    }
}

/// Keeps the exporters alive; [`Telemetry::shutdown`] flushes them.
#[derive(Debug, Default)]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

/// Installs logs, and traces and metrics when an endpoint is set, for the
/// process. `service_name` names the resource unless `OTEL_SERVICE_NAME`
/// does. Must run inside the Tokio runtime that will do the exporting.
/// Installing twice keeps the first (tests build several servers in one
/// process).
pub fn init(
    format: LogFormat,
    service_name: &str,
    export: &OtlpExport,
) -> Result<Telemetry, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let resource = resource(service_name, export);
    let tracer_provider = export
        .traces
        .then(|| tracer_provider(resource.clone()))
        .transpose()?;
    let meter_provider = export
        .metrics
        .then(|| meter_provider(resource))
        .transpose()?;
    if let Some(provider) = &meter_provider {
        opentelemetry::global::set_meter_provider(provider.clone());
    }
    install_subscriber(format, tracer_provider.as_ref());
    Ok(Telemetry {
        tracer_provider,
        meter_provider,
    })
}

impl Telemetry {
    /// Exports what is still queued, waiting at most a few seconds: an
    /// unreachable collector must not hold up a pod's termination.
    pub async fn shutdown(self) {
        let flush = tokio::task::spawn_blocking(move || {
            if let Some(provider) = self.tracer_provider {
                let _ = provider.shutdown();
            }
            if let Some(provider) = self.meter_provider {
                let _ = provider.shutdown();
            }
        });
        if tokio::time::timeout(FLUSH_LIMIT, flush).await.is_err() {
            tracing::warn!("telemetry not flushed within {FLUSH_LIMIT:?}; the rest is dropped");
        }
    }
}

fn resource(service_name: &str, export: &OtlpExport) -> Resource {
    // The builder reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
    let builder = Resource::builder();
    let builder = if export.service_name_unset {
        builder.with_service_name(service_name.to_owned())
    } else {
        builder
    };
    builder
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Spans go through the OTLP gRPC exporter (endpoint, headers and timeout
/// from `OTEL_EXPORTER_OTLP_*`) in batches (`OTEL_BSP_*`); the sampler is
/// `OTEL_TRACES_SAMPLER`.
fn tracer_provider(resource: Resource) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_protocol(opentelemetry_otlp::Protocol::Grpc)
        .build()
        .map_err(exporter_error)?;
    // Exported by a task on this runtime: the OTLP gRPC client needs Tokio,
    // which the SDK's default exporter thread lacks.
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter, Tokio,
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build())
}

/// An exporter that cannot be built names the variable that configures it.
fn exporter_error(error: impl std::fmt::Display) -> TelemetryError {
    TelemetryError::Exporter {
        variable: "OTEL_EXPORTER_OTLP_ENDPOINT",
        reason: error.to_string(),
    }
}

/// Metrics are pushed every `OTEL_METRIC_EXPORT_INTERVAL` (60 s default).
fn meter_provider(resource: Resource) -> Result<SdkMeterProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_protocol(opentelemetry_otlp::Protocol::Grpc)
        .build()
        .map_err(exporter_error)?;
    let reader =
        opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader::builder(
            exporter, Tokio,
        )
        .build();
    Ok(SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(resource)
        .build())
}

/// Logs to stderr, filtered by `RUST_LOG`; spans to OTLP when traced. Only
/// Equipoise's own spans and events are traced: a dependency's (the OTLP
/// client's own HTTP/2 spans included) would feed the exporter with itself.
fn install_subscriber(format: LogFormat, tracer_provider: Option<&SdkTracerProvider>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = crate::logging::layer(format);
    let traces = tracer_provider.map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(INSTRUMENTATION_SCOPE))
            .with_filter(filter_fn(|metadata| {
                metadata.target().starts_with("equipoise")
            }))
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init();
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn export_for(pairs: &[(&str, &str)]) -> OtlpExport {
        let variables: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        OtlpExport::from_variables(|name| variables.get(name).cloned())
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint() {
        assert_eq!(
            export_for(&[("OTEL_SERVICE_NAME", "x")]),
            OtlpExport {
                traces: false,
                metrics: false,
                service_name_unset: false
            }
        );
        assert!(!export_for(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")]).traces);
    }

    #[test]
    fn the_generic_endpoint_turns_on_both_signals() {
        let export = export_for(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")]);
        assert!(export.traces && export.metrics && export.service_name_unset);
    }

    #[test]
    fn signal_endpoints_and_exporter_none_choose_signals() {
        let traces_only = export_for(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317")]);
        assert!(traces_only.traces && !traces_only.metrics);
        let no_metrics = export_for(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_METRICS_EXPORTER", "none"),
        ]);
        assert!(no_metrics.traces && !no_metrics.metrics);
    }

    #[test]
    fn the_sdk_can_be_disabled_whatever_else_is_set() {
        let export = export_for(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ]);
        assert!(!export.traces && !export.metrics);
    }
}
