//! W3C trace context (`traceparent`, `tracestate`) in gRPC metadata. tonic
//! neither reads nor writes it: the server's call layer extracts it and the
//! one client interceptor injects it.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

/// The remote parent carried by incoming request headers, or an empty
/// context when there is none.
pub fn extract(headers: &http::HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    })
}

/// Writes `context`'s span into outgoing call metadata; nothing when it
/// has no valid span.
pub fn inject(context: &Context, metadata: &mut MetadataMap) {
    if !context.span().span_context().is_valid() {
        return;
    }
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(context, &mut MetadataInjector(metadata));
    });
}

/// The trace id of `context`'s span as 32 hex digits, if it has one.
pub fn trace_id(context: &Context) -> Option<String> {
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The propagator writes only its own well-formed header names and
        // values; anything else is skipped rather than sent malformed.
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    use super::*;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn with_propagator() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    }

    #[test]
    fn an_incoming_traceparent_becomes_the_remote_parent() {
        with_propagator();
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", http::HeaderValue::from_static(TRACEPARENT));
        let context = extract(&headers);
        assert_eq!(
            trace_id(&context).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert!(context.span().span_context().is_remote());
    }

    #[test]
    fn no_or_malformed_headers_give_no_parent() {
        with_propagator();
        assert_eq!(trace_id(&extract(&http::HeaderMap::new())), None);
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", http::HeaderValue::from_static("00-zz-00-01"));
        assert_eq!(trace_id(&extract(&headers)), None);
    }

    #[test]
    fn a_valid_context_is_injected_and_an_empty_one_is_not() {
        with_propagator();
        let span_context = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("trace id"),
            SpanId::from_hex("00f067aa0ba902b7").expect("span id"),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let context = Context::new().with_remote_span_context(span_context);
        let mut metadata = MetadataMap::new();
        inject(&context, &mut metadata);
        assert_eq!(
            metadata.get("traceparent").and_then(|v| v.to_str().ok()),
            Some(TRACEPARENT)
        );
        let mut empty = MetadataMap::new();
        inject(&Context::new(), &mut empty);
        assert!(empty.is_empty());
    }
}
