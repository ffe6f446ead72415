//! The one error type of the safety domain, described in the shared
//! vocabulary ([`ServiceError`]); the mapping to a gRPC status is
//! `equipoise_common::grpc::status`. No message names an arm or whether a
//! case is a SUSAR: a refusal may reach a blinded caller.

use std::time::Duration;

use equipoise_common::error::{ErrorCode, FieldViolation, ServiceError};
use equipoise_trial::Problem;

use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SafetyError {
    #[error("invalid request: {}", list(.0))]
    InvalidArgument(Vec<Problem>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// A concurrent change won; the same request may be sent again.
    #[error("{0}")]
    Aborted(String),
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Details are logged, never sent.
    #[error("internal error")]
    Internal(String),
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl SafetyError {
    /// The refusal of a request whose field checks failed.
    pub fn from_violations(violations: Vec<FieldViolation>) -> Self {
        SafetyError::InvalidArgument(
            violations
                .into_iter()
                .map(|v| Problem {
                    path: v.field,
                    message: v.description,
                })
                .collect(),
        )
    }

    pub fn invalid(path: &str, message: impl Into<String>) -> Self {
        SafetyError::InvalidArgument(vec![Problem {
            path: path.to_owned(),
            message: message.into(),
        }])
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        SafetyError::Unavailable {
            message: message.into(),
            retry_after: Some(Duration::from_secs(1)),
        }
    }

    /// The fields a refusal names, for tests and logs.
    pub fn fields(&self) -> Vec<String> {
        match self {
            SafetyError::InvalidArgument(problems) => {
                problems.iter().map(|p| p.path.clone()).collect()
            }
            _ => Vec::new(),
        }
    }
}

impl ServiceError for SafetyError {
    fn error_code(&self) -> ErrorCode {
        match self {
            SafetyError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            SafetyError::NotFound(_) => ErrorCode::NotFound,
            SafetyError::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            SafetyError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            SafetyError::Aborted(_) => ErrorCode::Aborted,
            SafetyError::Unavailable { .. } => ErrorCode::Unavailable,
            SafetyError::Internal(_) => ErrorCode::Internal,
        }
    }

    fn field_violations(&self) -> Vec<FieldViolation> {
        match self {
            SafetyError::InvalidArgument(problems) => problems
                .iter()
                .map(|p| FieldViolation::new(&p.path, &p.message))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            SafetyError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    fn internal_detail(&self) -> String {
        match self {
            SafetyError::Internal(detail) => detail.clone(),
            other => other.to_string(),
        }
    }
}

impl From<StoreError> for SafetyError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => SafetyError::NotFound("not found".into()),
            StoreError::Conflict(message) => SafetyError::FailedPrecondition(message),
            StoreError::Unavailable(message) => {
                SafetyError::unavailable(format!("the safety database is unavailable: {message}"))
            }
            StoreError::SchemaTooNew { .. } | StoreError::Database(_) | StoreError::Roles(_) => {
                SafetyError::Internal(error.to_string())
            }
        }
    }
}
