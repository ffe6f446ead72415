//! The one mapping from domain errors to gRPC statuses (docs/architecture.md, "Security"), with
//! google.rpc error details so clients can read field violations.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::RandomisationError;

pub fn to_status(error: RandomisationError) -> Status {
    let message = error.to_string();
    match error {
        RandomisationError::InvalidArgument(problems) => {
            let mut details = ErrorDetails::new();
            for problem in &problems {
                details.add_bad_request_violation(problem.path.clone(), problem.message.clone());
            }
            Status::with_error_details(Code::InvalidArgument, message, details)
        }
        RandomisationError::Ineligible(criteria) => {
            let mut details = ErrorDetails::new();
            for criterion in &criteria {
                details.add_precondition_failure_violation(
                    "ELIGIBILITY",
                    criterion.id.clone(),
                    criterion.rule.clone(),
                );
            }
            Status::with_error_details(Code::FailedPrecondition, message, details)
        }
        RandomisationError::CapReached(_) => {
            let mut details = ErrorDetails::new();
            details.add_precondition_failure_violation("CAP", "enrolment", message.clone());
            Status::with_error_details(Code::FailedPrecondition, message, details)
        }
        RandomisationError::NotFound(_) => Status::not_found(message),
        RandomisationError::FailedPrecondition(_) => Status::failed_precondition(message),
        RandomisationError::AlreadyExists(_) => Status::already_exists(message),
        RandomisationError::PermissionDenied(_) => Status::permission_denied(message),
        RandomisationError::Unavailable { retry_after, .. } => Status::with_error_details(
            Code::Unavailable,
            message,
            ErrorDetails::with_retry_info(retry_after),
        ),
        RandomisationError::Aborted(_) => Status::aborted(message),
        RandomisationError::Internal(detail) => {
            tracing::error!(%detail, "internal error");
            Status::internal("internal error; the incident is logged")
        }
    }
}
