//! The one error type of the randomisation domain. It describes itself in
//! the shared vocabulary ([`ServiceError`]); the one mapping to a gRPC status
//! is `equipoise_common::grpc::status`.

use std::time::Duration;

use equipoise_common::error::{ErrorCode, FieldViolation, PreconditionViolation, ServiceError};

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
    /// A resource another service holds ran out, e.g. a trial's
    /// treatment-code pool.
    #[error("{0}")]
    ResourceExhausted(String),
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

impl ServiceError for RandomisationError {
    fn error_code(&self) -> ErrorCode {
        match self {
            RandomisationError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            RandomisationError::NotFound(_) => ErrorCode::NotFound,
            RandomisationError::FailedPrecondition(_)
            | RandomisationError::Ineligible(_)
            | RandomisationError::CapReached(_) => ErrorCode::FailedPrecondition,
            RandomisationError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            RandomisationError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            RandomisationError::Unavailable { .. } => ErrorCode::Unavailable,
            RandomisationError::Aborted(_) => ErrorCode::Aborted,
            RandomisationError::ResourceExhausted(_) => ErrorCode::ResourceExhausted,
            RandomisationError::Internal(_) => ErrorCode::Internal,
        }
    }

    fn field_violations(&self) -> Vec<FieldViolation> {
        match self {
            RandomisationError::InvalidArgument(problems) => problems
                .iter()
                .map(|p| FieldViolation::new(&p.path, &p.message))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Failed eligibility criteria by id, and the cap that was reached.
    fn precondition_violations(&self) -> Vec<PreconditionViolation> {
        match self {
            RandomisationError::Ineligible(criteria) => criteria
                .iter()
                .map(|c| PreconditionViolation::new("ELIGIBILITY", &c.id, &c.rule))
                .collect(),
            RandomisationError::CapReached(_) => vec![PreconditionViolation::new(
                "CAP",
                "enrolment",
                self.to_string(),
            )],
            _ => Vec::new(),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            RandomisationError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    fn internal_detail(&self) -> String {
        match self {
            RandomisationError::Internal(detail) => detail.clone(),
            other => other.to_string(),
        }
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
            StoreError::Superseded => RandomisationError::Aborted(
                "the trial was amended while this request was being allocated; nothing was allocated, retry the request".into(),
            ),
            StoreError::SubjectExists => RandomisationError::AlreadyExists(
                "subject_id is already randomised in this trial".into(),
            ),
            StoreError::CapReached(kind) => RandomisationError::CapReached(cap_message(kind)),
            StoreError::Unavailable(message) => RandomisationError::Unavailable {
                message: format!("the randomisation database is unavailable: {message}"),
                retry_after: Some(Duration::from_secs(1)),
            },
            StoreError::SchemaTooNew { .. }
            | StoreError::Database(_)
            | StoreError::Roles(_) => {
                RandomisationError::Internal(error.to_string())
            }
        }
    }
}

/// What a site user is told when a limit of the design that spans sites
/// (a stratum's cap, an uploaded list's end) stops an allocation: that it
/// is stopped, not which limit, so the refusal tells nothing of other
/// sites' enrolment in the stratum.
pub const DESIGN_LIMIT: &str = "this subject cannot be randomised now: a limit of the trial's design is reached; the coordinating centre has the details";

pub fn cap_message(kind: CapKind) -> String {
    match kind {
        CapKind::Total => "the trial's total enrolment cap is reached".into(),
        CapKind::Site => "the site's enrolment cap is reached".into(),
        CapKind::Stratum => DESIGN_LIMIT.into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Review C5: what a site user reads names no stratum, list or lock.
    #[test]
    fn refusals_that_reach_sites_name_no_stratum_list_or_lock() {
        let stratum_cap = RandomisationError::from(StoreError::CapReached(CapKind::Stratum));
        let lock = RandomisationError::from(LockError::Timeout {
            key: "allocation/RESPINE/minimisation".into(),
            waited: Duration::from_secs(5),
        });
        for refusal in [stratum_cap, lock] {
            let text = refusal.to_string();
            for secret in ["stratum", "minimisation", "allocation/RESPINE"] {
                assert!(!text.contains(secret), "{text}");
            }
        }
        assert!(cap_message(CapKind::Site).contains("site"));
    }
}
