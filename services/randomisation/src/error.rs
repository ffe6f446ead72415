//! The one error type of the randomisation domain. The gRPC layer maps it to
//! a status in one place (`grpc::status`).

use std::time::Duration;

use crate::lock::LockError;
use crate::store::{CapKind, StoreError};
use equipoise_trial::Problem;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedCriterion {
    pub id: String,
    pub rule: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RandomisationError {
    #[error("invalid request: {}", list(.0))]
    InvalidArgument(Vec<Problem>),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("subject is not eligible: {}", criteria(.0))]
    Ineligible(Vec<FailedCriterion>),
    #[error("{0}")]
    CapReached(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// A concurrent change won; the request can be retried as it is.
    #[error("{0}")]
    Aborted(String),
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

fn criteria(failed: &[FailedCriterion]) -> String {
    failed
        .iter()
        .map(|c| format!("{} ({})", c.id, c.rule))
        .collect::<Vec<_>>()
        .join(", ")
}

impl RandomisationError {
    pub fn invalid(path: &str, message: impl Into<String>) -> Self {
        RandomisationError::InvalidArgument(vec![Problem {
            path: path.to_owned(),
            message: message.into(),
        }])
    }
}

impl From<StoreError> for RandomisationError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => RandomisationError::NotFound("record".into()),
            StoreError::Conflict(message) => RandomisationError::FailedPrecondition(message),
            StoreError::Fenced => RandomisationError::Aborted(
                "the allocation stream changed; retry the request".into(),
            ),
            StoreError::SubjectExists => RandomisationError::AlreadyExists(
                "subject_id is already randomised in this trial".into(),
            ),
            StoreError::CapReached(kind) => RandomisationError::CapReached(cap_message(kind)),
            StoreError::Unavailable(message) => RandomisationError::Unavailable {
                message: format!("the randomisation database is unavailable: {message}"),
                retry_after: Some(Duration::from_secs(1)),
            },
            StoreError::SchemaTooNew { .. } | StoreError::Database(_) => {
                RandomisationError::Internal(error.to_string())
            }
        }
    }
}

pub fn cap_message(kind: CapKind) -> String {
    match kind {
        CapKind::Total => "the trial's total enrolment cap is reached".into(),
        CapKind::Site => "the site's enrolment cap is reached".into(),
        CapKind::Stratum => "the stratum's enrolment cap is reached".into(),
    }
}

impl From<LockError> for RandomisationError {
    fn from(error: LockError) -> Self {
        RandomisationError::Unavailable {
            message: format!("no allocation made: {error}"),
            retry_after: Some(Duration::from_secs(1)),
        }
    }
}
