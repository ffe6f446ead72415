//! One log line per RPC: method, gRPC status code and latency, at a level
//! chosen by the code (OK debug; the caller's mistakes info; UNAVAILABLE and
//! timeouts warn; INTERNAL, UNKNOWN and DATA_LOSS error). Never the request,
//! the response or the status message: they may hold subject ids or arms.
//!
//! Where the code is found: tonic answers a handler's error as a
//! trailers-only response (`grpc-status` in the headers, no body), but an OK
//! answer, a stream, or an error met while encoding carries it in trailers
//! after the body. Reading only the headers would log a stream that fails
//! half-way as OK, so the body is wrapped and the line is written when it
//! ends: with the trailers' code, else the headers', else CANCELLED (the
//! client went away first). The latency thus covers the whole call,
//! streams included.
//!
//! The same object is the call's server span (`rpc.*` attributes, the
//! remote parent from `traceparent`, the status code at the end) and its
//! duration metric, so the log line, the span and the metric agree.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tonic::Code;
use tower::{Layer, Service};
use tracing::{Instrument, Level, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::code_name;
use super::propagation;
use crate::telemetry::metrics;

/// Mounted once in `serve`, outside authentication, so refused calls are
/// logged too.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallLogLayer;

impl<S> Layer<S> for CallLogLayer {
    type Service = CallLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallLog { inner }
    }
}

#[derive(Debug, Clone)]
pub struct CallLog<S> {
    inner: S,
}

type ResponseBody = tonic::body::Body;

impl<S, B> Service<http::Request<B>> for CallLog<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<ResponseBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // Created before the handler runs: if the client goes away first and
        // the future is dropped, the line's own drop logs CANCELLED.
        let mut line = CallLine::new(request.uri().path().to_owned(), request.headers());
        let span = line.span.clone();
        let response = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let response = match response.await {
                    Ok(response) => response,
                    Err(error) => {
                        line.write(Code::Unknown);
                        return Err(error);
                    }
                };
                line.header_code = grpc_status(response.headers());
                Ok(response.map(|body| ResponseBody::new(LoggedBody { inner: body, line })))
            }
            .instrument(span),
        )
    }
}

/// The line for one call, written exactly once: when its outcome is known,
/// or, if it is dropped before then, as abandoned.
struct CallLine {
    method: String,
    /// Open until the line is written, so it covers the whole call.
    span: Span,
    started: Instant,
    /// Set for trailers-only responses.
    header_code: Option<Code>,
    written: bool,
}

impl CallLine {
    fn new(method: String, headers: &HeaderMap) -> Self {
        let span = server_span(&method, headers);
        Self {
            method,
            span,
            started: Instant::now(),
            header_code: None,
            written: false,
        }
    }

    fn write(&mut self, code: Code) {
        if self.written {
            return;
        }
        self.written = true;
        let elapsed = self.started.elapsed();
        let name = code_name(code);
        self.span.record("rpc.grpc.status_code", code as i32);
        if is_server_error(code) {
            self.span.record("otel.status_code", "ERROR");
        }
        // Before routing or authentication a path is whatever was sent: it
        // labels no metric series, or anyone could mint series at will.
        let (service, method) = match code {
            Code::Unauthenticated | Code::Unimplemented => ("unknown", "unknown"),
            _ => service_and_method(&self.method),
        };
        metrics::record_rpc(service, method, name, elapsed);
        self.span.in_scope(|| log_call(&self.method, code, elapsed));
        // Ends the span now rather than whenever the body is freed.
        self.span = Span::none();
    }
}

/// The call's server span, named `package.Service/Method` with the
/// semantic conventions' `rpc.*` attributes, child of the caller's span
/// when `traceparent` names one. Its `trace_id` field puts the trace on
/// every log line written during the call.
fn server_span(path: &str, headers: &HeaderMap) -> Span {
    let (service, method) = service_and_method(path);
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = path.trim_start_matches('/'),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    let parent = propagation::extract(headers);
    // Without a tracing pipeline there is no span of our own: the log still
    // carries the caller's trace id.
    let _ = span.set_parent(parent.clone());
    let trace_id =
        propagation::trace_id(&span.context()).or_else(|| propagation::trace_id(&parent));
    if let Some(trace_id) = trace_id {
        span.record("trace_id", trace_id.as_str());
    }
    span
}

/// `/package.Service/Method` → (`package.Service`, `Method`).
fn service_and_method(path: &str) -> (&str, &str) {
    path.trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""))
}

/// The codes the semantic conventions count as a server's failure; the
/// rest are the caller's (or routine) and leave the span's status unset.
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

impl Drop for CallLine {
    /// A trailers-only response is dropped unread: its code is in the
    /// headers. Anything else dropped before its end was abandoned: the
    /// handler's future before it answered, or a body before its trailers.
    fn drop(&mut self) {
        let code = self.header_code.unwrap_or(Code::Cancelled);
        self.write(code);
    }
}

struct LoggedBody {
    inner: ResponseBody,
    line: CallLine,
}

impl LoggedBody {
    fn finish(&mut self, code: impl FnOnce(Option<Code>) -> Code) {
        let code = code(self.line.header_code);
        self.line.write(code);
    }
}

impl Body for LoggedBody {
    type Data = <ResponseBody as Body>::Data;
    type Error = <ResponseBody as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = grpc_status(trailers);
                    self.finish(|header| code.or(header).unwrap_or(Code::Unknown));
                }
            }
            Poll::Ready(Some(Err(status))) => {
                let code = status.code();
                self.finish(|_| code);
            }
            Poll::Ready(None) => self.finish(|header| header.unwrap_or(Code::Unknown)),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|value| Code::from_bytes(value.as_bytes()))
}

/// OK is routine; the caller's own mistakes are worth a look; a dependency
/// down or a deadline missed needs attention; a fault on our side is an
/// error.
pub fn level_for(code: Code) -> Level {
    match code {
        Code::Ok => Level::DEBUG,
        Code::Cancelled
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::ResourceExhausted
        | Code::FailedPrecondition
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unauthenticated => Level::INFO,
        Code::DeadlineExceeded | Code::Unimplemented | Code::Unavailable => Level::WARN,
        Code::Unknown | Code::Internal | Code::DataLoss => Level::ERROR,
    }
}

fn log_call(method: &str, code: Code, latency: Duration) {
    let level = level_for(code);
    let code = code_name(code);
    // Milliseconds to the microsecond: readable, and precise enough.
    let latency_ms = (latency.as_secs_f64() * 1_000_000.0).round() / 1000.0;
    // tracing's macros need the level as a constant, hence one arm each.
    match level {
        level if level == Level::ERROR => {
            tracing::error!(method, code, latency_ms, "call finished");
        }
        level if level == Level::WARN => {
            tracing::warn!(method, code, latency_ms, "call finished");
        }
        level if level == Level::INFO => {
            tracing::info!(method, code, latency_ms, "call finished");
        }
        _ => tracing::debug!(method, code, latency_ms, "call finished"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::io;
    use std::sync::{Arc, Mutex};

    use tonic::codegen::Bytes;

    use super::*;

    /// The log, as written.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("log buffer").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A handler's answer: its frames in order.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = tonic::Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    fn streamed(trailer_code: Code) -> http::Response<ResponseBody> {
        let mut trailers = HeaderMap::new();
        trailers.insert(
            "grpc-status",
            (trailer_code as i32).to_string().parse().expect("header"),
        );
        let frames = [
            Frame::data(Bytes::from_static(b"first")),
            Frame::data(Bytes::from_static(b"second")),
            Frame::trailers(trailers),
        ];
        http::Response::new(ResponseBody::new(Frames(frames.into())))
    }

    /// Answers one call with `response`, reads `frames_read` frames of its
    /// body, drops the rest, and returns what was logged.
    fn log_of(response: http::Response<ResponseBody>, frames_read: usize) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(Level::DEBUG)
            .with_ansi(false)
            .without_time()
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let mut response = Some(response);
                let inner = tower::service_fn(move |_: http::Request<()>| {
                    let response = response.take().expect("one call");
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let mut service = CallLogLayer.layer(inner);
                let request = http::Request::builder()
                    .uri("/equipoise.test.v1.Lookup/Find")
                    .body(())
                    .expect("request");
                let mut body = service.call(request).await.expect("answered").into_body();
                for _ in 0..frames_read {
                    std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
                }
            });
        });
        let bytes = captured.0.lock().expect("log buffer").clone();
        String::from_utf8(bytes).expect("utf-8 log")
    }

    #[test]
    fn refusals_are_logged_with_their_code_but_not_their_message() {
        let refusal = tonic::Status::not_found("subject MTP-0042 not found");
        let log = log_of(refusal.into_http(), 0);
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(log.contains("INFO"), "{log}");
        assert!(log.contains("NOT_FOUND"), "{log}");
        assert!(log.contains("/equipoise.test.v1.Lookup/Find"), "{log}");
        assert!(log.contains("latency_ms"), "{log}");
        assert!(!log.contains("MTP-0042"), "{log}");
    }

    #[test]
    fn a_stream_that_fails_after_its_headers_is_logged_with_the_trailer_code() {
        let log = log_of(streamed(Code::Internal), 3);
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(log.contains("ERROR"), "{log}");
        assert!(log.contains("INTERNAL"), "{log}");
    }

    #[test]
    fn answered_calls_are_debug_lines() {
        let log = log_of(streamed(Code::Ok), 3);
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(log.contains("DEBUG"), "{log}");
        assert!(
            log.contains("code=\"OK\"") || log.contains("code=OK"),
            "{log}"
        );
    }

    #[test]
    fn abandoned_calls_are_logged_as_cancelled() {
        let log = log_of(streamed(Code::Ok), 1);
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(log.contains("CANCELLED"), "{log}");
    }

    #[test]
    fn a_call_dropped_before_its_handler_answers_is_logged_as_cancelled() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            // A handler still waiting, e.g. on a lock, when the client leaves.
            let inner = tower::service_fn(|_: http::Request<()>| {
                std::future::pending::<Result<http::Response<ResponseBody>, std::convert::Infallible>>(
                )
            });
            let mut service = CallLogLayer.layer(inner);
            let request = http::Request::builder()
                .uri("/equipoise.test.v1.Lookup/Find")
                .body(())
                .expect("request");
            let mut call = service.call(request);
            let waker = std::task::Waker::noop();
            assert!(
                call.as_mut()
                    .poll(&mut Context::from_waker(waker))
                    .is_pending()
            );
            drop(call);
        });
        let log =
            String::from_utf8(captured.0.lock().expect("log buffer").clone()).expect("utf-8 log");
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(log.contains("CANCELLED"), "{log}");
    }

    #[test]
    fn levels_follow_the_code() {
        assert_eq!(level_for(Code::Ok), Level::DEBUG);
        assert_eq!(level_for(Code::InvalidArgument), Level::INFO);
        assert_eq!(level_for(Code::Unauthenticated), Level::INFO);
        assert_eq!(level_for(Code::Unavailable), Level::WARN);
        assert_eq!(level_for(Code::DeadlineExceeded), Level::WARN);
        assert_eq!(level_for(Code::Internal), Level::ERROR);
        assert_eq!(level_for(Code::DataLoss), Level::ERROR);
    }
}
