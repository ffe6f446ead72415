//! The vocabulary every service's errors are described in, without gRPC
//! types, so a domain crate can classify its errors with no tonic in sight.
//!
//! A service's error type implements [`ServiceError`]; the one mapping to a
//! gRPC status lives in `grpc::status`. A service calling another receives a
//! [`RemoteError`], built from the status in the same place, and decides how
//! to degrade.

use std::time::Duration;

/// The gRPC codes an Equipoise service answers with. Deliberately fewer than
/// gRPC's seventeen: each one tells the caller what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request itself is wrong; see the field violations.
    InvalidArgument,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    Unauthenticated,
    /// The request is well formed but the system's state refuses it.
    FailedPrecondition,
    /// A concurrent change won; the same request may be sent again.
    Aborted,
    ResourceExhausted,
    /// A dependency is down for now; retry, after the delay if one is given.
    Unavailable,
    /// A fault on the server; details are logged, never sent.
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::InvalidArgument,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::PermissionDenied,
        ErrorCode::Unauthenticated,
        ErrorCode::FailedPrecondition,
        ErrorCode::Aborted,
        ErrorCode::ResourceExhausted,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The code's name as gRPC writes it, e.g. `NOT_FOUND`: for logs and
    /// metric labels in code that knows no gRPC types.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::AlreadyExists => "ALREADY_EXISTS",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::FailedPrecondition => "FAILED_PRECONDITION",
            ErrorCode::Aborted => "ABORTED",
            ErrorCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

/// One field of a request that is wrong, and why (google.rpc `BadRequest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// A path into the request, e.g. `covariates.age_years`.
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// One condition of the system's state that refuses the request
/// (google.rpc `PreconditionFailure`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreconditionViolation {
    /// A service-defined kind, e.g. `ELIGIBILITY` or `CAP`.
    pub kind: String,
    /// What failed, relative to the kind, e.g. an eligibility criterion's id.
    pub subject: String,
    pub description: String,
}

impl PreconditionViolation {
    pub fn new(
        kind: impl Into<String>,
        subject: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        Self {
            kind: kind.into(),
            subject: subject.into(),
            description: description.into(),
        }
    }
}

/// How a service's error is told to its callers. The message sent is the
/// error's `Display` text, except for [`ErrorCode::Internal`], whose
/// [`internal_detail`](ServiceError::internal_detail) is logged and replaced
/// by a fixed sentence.
pub trait ServiceError: std::error::Error {
    fn error_code(&self) -> ErrorCode;

    /// The request fields to correct; sent with `InvalidArgument`.
    fn field_violations(&self) -> Vec<FieldViolation> {
        Vec::new()
    }

    /// The conditions that refused the request; sent with `FailedPrecondition`.
    fn precondition_violations(&self) -> Vec<PreconditionViolation> {
        Vec::new()
    }

    /// How long the caller should wait before retrying; sent with `Unavailable`.
    fn retry_after(&self) -> Option<Duration> {
        None
    }

    /// What the server logs for an internal error: it may hold internals.
    fn internal_detail(&self) -> String {
        self.to_string()
    }
}

/// Why a call to another service failed, as the caller needs to know it:
/// retry later, correct the request, or pass a refusal on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// UNAVAILABLE, from the callee or from the connection: retry, after
    /// `retry_after` when the callee named a delay.
    #[error("unavailable: {message}")]
    Unavailable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// DEADLINE_EXCEEDED or CANCELLED: whether the call took effect is
    /// unknown, so only a request that is safe to repeat may be sent again.
    #[error("no answer in time: {message}")]
    TimedOut { message: String },
    #[error("not found: {message}")]
    NotFound { message: String },
    /// The callee found the request wrong: a bug in the caller.
    #[error("invalid argument: {message}")]
    InvalidArgument {
        message: String,
        violations: Vec<FieldViolation>,
    },
    #[error("failed precondition: {message}")]
    FailedPrecondition {
        message: String,
        violations: Vec<PreconditionViolation>,
    },
    /// Any other deliberate refusal; `code` says which.
    #[error("refused ({code:?}): {message}")]
    Refused { code: ErrorCode, message: String },
    /// The callee failed (INTERNAL, UNKNOWN, DATA_LOSS), or the answer came
    /// from below the services: UNIMPLEMENTED, or OUT_OF_RANGE, which tonic
    /// sends for an oversized message. `code` names it.
    #[error("failed ({code}): {message}")]
    Failed { code: &'static str, message: String },
}

impl RemoteError {
    /// The delay to wait before retrying, for the errors worth retrying.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RemoteError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
