//! What every service's gRPC edge shares: the error ↔ status mapping, the
//! client side (channels and the outgoing-call interceptor), the per-call
//! log line and server span, trace-context propagation, TLS, and gRPC-Web
//! with the embedded page. The gRPC-free vocabulary is in [`crate::error`].

pub mod call_log;
pub mod client;
pub mod convert;
pub mod propagation;
pub mod status;
pub mod tls;
pub mod web;

use tonic::{Code, Request, Response, Status};

use crate::auth::Caller;
use crate::error::ServiceError;

/// The caller the authentication layer put on the request. Missing only if
/// a service was mounted without that layer: refused, never served.
pub fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no authenticated caller"))
}

pub type Reply<T> = Result<Response<T>, Status>;

/// A use case's result as a gRPC reply: `convert` on success, the one
/// error-to-status mapping on failure.
pub fn reply<T, U, E: ServiceError>(
    result: Result<T, E>,
    convert: impl FnOnce(T) -> U,
) -> Reply<U> {
    result
        .map(|value| Response::new(convert(value)))
        .map_err(status::to_status)
}

/// The code's name as the gRPC specification writes it, e.g. `NOT_FOUND`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
