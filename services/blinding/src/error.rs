//! The one error type of the blinding domain. It describes itself in the
//! shared vocabulary ([`ServiceError`]); the one mapping to a gRPC status is
//! `equipoise_common::grpc::status`. No message names an arm: a refusal may
//! reach a blinded caller.

use std::time::Duration;

use equipoise_common::error::{ErrorCode, FieldViolation, ServiceError};
use equipoise_trial::Problem;

use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BlindingError {
    #[error("invalid request: {}", list(.0))]
    InvalidArgument(Vec<Problem>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unauthenticated(String),
    /// A code pool ran out: names the trial, never the arm.
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Details are logged, never sent: they may hold internals.
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

impl BlindingError {
    /// The refusal of a request whose field checks failed.
    pub fn from_violations(violations: Vec<FieldViolation>) -> Self {
        BlindingError::InvalidArgument(
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
        BlindingError::InvalidArgument(vec![Problem {
            path: path.to_owned(),
            message: message.into(),
        }])
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        BlindingError::Unavailable {
            message: message.into(),
            retry_after: Some(Duration::from_secs(1)),
        }
    }
}

impl ServiceError for BlindingError {
    fn error_code(&self) -> ErrorCode {
        match self {
            BlindingError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            BlindingError::NotFound(_) => ErrorCode::NotFound,
            BlindingError::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            BlindingError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            BlindingError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            BlindingError::ResourceExhausted(_) => ErrorCode::ResourceExhausted,
            BlindingError::Unavailable { .. } => ErrorCode::Unavailable,
            BlindingError::Internal(_) => ErrorCode::Internal,
        }
    }

    fn field_violations(&self) -> Vec<FieldViolation> {
        match self {
            BlindingError::InvalidArgument(problems) => problems
                .iter()
                .map(|p| FieldViolation::new(&p.path, &p.message))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            BlindingError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    fn internal_detail(&self) -> String {
        match self {
            BlindingError::Internal(detail) => detail.clone(),
            other => other.to_string(),
        }
    }
}

impl From<StoreError> for BlindingError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => BlindingError::NotFound("no code pools for the trial".into()),
            StoreError::UnknownArm { .. } => {
                BlindingError::invalid("arm_id", "is not an arm of the trial")
            }
            StoreError::PoolEmpty { trial_id } => BlindingError::ResourceExhausted(format!(
                "a code pool of trial {trial_id} is empty; a top-up is needed before this allocation can be given a code"
            )),
            StoreError::Invalid(message) | StoreError::Conflict(message) => {
                BlindingError::FailedPrecondition(message)
            }
            // The service names the rows; this is the fallback.
            StoreError::CodesTaken(_) => BlindingError::invalid("csv", error.to_string()),
            StoreError::Unavailable(message) => BlindingError::unavailable(format!(
                "the blinding database is unavailable: {message}"
            )),
            StoreError::SchemaTooNew { .. } | StoreError::Database(_) | StoreError::Roles(_) => {
                BlindingError::Internal(error.to_string())
            }
        }
    }
}
