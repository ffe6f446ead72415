//! The one mapping from service errors to gRPC statuses, with standard
//! google.rpc details (`BadRequest`, `PreconditionFailure`, `RetryInfo`) so
//! any client can read them; and back, for a service calling another
//! (docs/architecture.md, "Services").

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::code_name;
use crate::error::{ErrorCode, FieldViolation, PreconditionViolation, RemoteError, ServiceError};

/// All an internal error tells the caller; the detail is in the server log.
pub const INTERNAL_MESSAGE: &str = "internal error; the incident is logged";

/// Longest status message or detail text sent, in bytes. Both travel in
/// HTTP/2 headers: a message that echoes a megabyte of input (an unknown
/// id, a covariate name) would break the response into a protocol error
/// instead of the INVALID_ARGUMENT or NOT_FOUND it is.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// The status a service answers with for `error`.
pub fn to_status<E: ServiceError>(error: E) -> Status {
    status_of(&error)
}

pub fn status_of<E: ServiceError + ?Sized>(error: &E) -> Status {
    let code = error.error_code();
    if code == ErrorCode::Internal {
        tracing::error!(detail = %error.internal_detail(), "internal error");
        return Status::internal(INTERNAL_MESSAGE);
    }
    let message = bounded(error.to_string());
    match details_of(error, code) {
        Some(details) => Status::with_error_details(grpc_code(code), message, details),
        None => Status::new(grpc_code(code), message),
    }
}

/// The google.rpc details for `error`; `None` when there is nothing to add,
/// so plain refusals carry no details header.
fn details_of<E: ServiceError + ?Sized>(error: &E, code: ErrorCode) -> Option<ErrorDetails> {
    let mut details = ErrorDetails::new();
    let mut any = false;
    for violation in error.field_violations() {
        details.add_bad_request_violation(bounded(violation.field), bounded(violation.description));
        any = true;
    }
    for violation in error.precondition_violations() {
        details.add_precondition_failure_violation(
            violation.kind,
            bounded(violation.subject),
            bounded(violation.description),
        );
        any = true;
    }
    let retry_after = error.retry_after();
    // UNAVAILABLE always says "retry", with a delay when the service knows one.
    if code == ErrorCode::Unavailable || retry_after.is_some() {
        details.set_retry_info(retry_after);
        any = true;
    }
    any.then_some(details)
}

/// `text` cut to [`MAX_MESSAGE_BYTES`] at a character boundary, marked
/// as cut.
fn bounded(text: String) -> String {
    if text.len() <= MAX_MESSAGE_BYTES {
        return text;
    }
    let mut end = MAX_MESSAGE_BYTES - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

pub fn grpc_code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::InvalidArgument => Code::InvalidArgument,
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::AlreadyExists => Code::AlreadyExists,
        ErrorCode::PermissionDenied => Code::PermissionDenied,
        ErrorCode::Unauthenticated => Code::Unauthenticated,
        ErrorCode::FailedPrecondition => Code::FailedPrecondition,
        ErrorCode::Aborted => Code::Aborted,
        ErrorCode::ResourceExhausted => Code::ResourceExhausted,
        ErrorCode::Unavailable => Code::Unavailable,
        ErrorCode::Internal => Code::Internal,
    }
}

impl RemoteError {
    /// What a failed call to another service means for the caller, read from
    /// the status code and its google.rpc details.
    pub fn from_status(status: &Status) -> Self {
        let message = status.message().to_owned();
        let refused = |code| RemoteError::Refused {
            code,
            message: message.clone(),
        };
        match status.code() {
            Code::Unavailable => RemoteError::Unavailable {
                retry_after: status.get_details_retry_info().and_then(|r| r.retry_delay),
                message,
            },
            Code::DeadlineExceeded | Code::Cancelled => RemoteError::TimedOut { message },
            Code::NotFound => RemoteError::NotFound { message },
            Code::InvalidArgument => RemoteError::InvalidArgument {
                violations: field_violations(status),
                message,
            },
            Code::FailedPrecondition => RemoteError::FailedPrecondition {
                violations: precondition_violations(status),
                message,
            },
            Code::AlreadyExists => refused(ErrorCode::AlreadyExists),
            Code::PermissionDenied => refused(ErrorCode::PermissionDenied),
            Code::Unauthenticated => refused(ErrorCode::Unauthenticated),
            Code::Aborted => refused(ErrorCode::Aborted),
            Code::ResourceExhausted => refused(ErrorCode::ResourceExhausted),
            code @ (Code::Ok
            | Code::Unknown
            | Code::OutOfRange
            | Code::Unimplemented
            | Code::Internal
            | Code::DataLoss) => RemoteError::Failed {
                code: code_name(code),
                message,
            },
        }
    }
}

impl From<Status> for RemoteError {
    fn from(status: Status) -> Self {
        RemoteError::from_status(&status)
    }
}

fn field_violations(status: &Status) -> Vec<FieldViolation> {
    status
        .get_details_bad_request()
        .map(|bad_request| {
            bad_request
                .field_violations
                .into_iter()
                .map(|v| FieldViolation::new(v.field, v.description))
                .collect()
        })
        .unwrap_or_default()
}

fn precondition_violations(status: &Status) -> Vec<PreconditionViolation> {
    status
        .get_details_precondition_failure()
        .map(|failure| {
            failure
                .violations
                .into_iter()
                .map(|v| PreconditionViolation::new(v.r#type, v.subject, v.description))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn long_messages_are_cut_to_fit_a_header_at_a_character_boundary() {
        let long = format!("subject {} not found", "é".repeat(5000));
        let cut = bounded(long);
        assert!(cut.len() <= MAX_MESSAGE_BYTES, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(cut.starts_with("subject é"));
        assert_eq!(bounded("short".into()), "short");
    }

    #[test]
    fn error_code_names_are_the_grpc_names() {
        for code in ErrorCode::ALL {
            assert_eq!(code.name(), crate::grpc::code_name(grpc_code(code)));
        }
    }

    /// One error per code, with the details a real service would attach.
    #[derive(Debug, thiserror::Error)]
    #[error("{message}")]
    struct Refusal {
        code: ErrorCode,
        message: String,
        fields: Vec<FieldViolation>,
        preconditions: Vec<PreconditionViolation>,
        retry_after: Option<Duration>,
    }

    impl Refusal {
        fn new(code: ErrorCode) -> Self {
            Self {
                code,
                message: format!("refused with {code:?}"),
                fields: Vec::new(),
                preconditions: Vec::new(),
                retry_after: None,
            }
        }
    }

    impl ServiceError for Refusal {
        fn error_code(&self) -> ErrorCode {
            self.code
        }
        fn field_violations(&self) -> Vec<FieldViolation> {
            self.fields.clone()
        }
        fn precondition_violations(&self) -> Vec<PreconditionViolation> {
            self.preconditions.clone()
        }
        fn retry_after(&self) -> Option<Duration> {
            self.retry_after
        }
        fn internal_detail(&self) -> String {
            format!("secret detail of {}", self.message)
        }
    }

    /// The status as a client receives it: through the HTTP/2 header map.
    fn over_the_wire(status: &Status) -> Status {
        let mut headers = http::HeaderMap::new();
        status.add_header(&mut headers).expect("status encodes");
        Status::from_header_map(&headers).expect("status decodes")
    }

    fn round_trip(error: Refusal) -> (Status, RemoteError) {
        let status = over_the_wire(&to_status(error));
        let remote = RemoteError::from_status(&status);
        (status, remote)
    }

    #[test]
    fn field_violations_travel_as_bad_request() {
        let mut error = Refusal::new(ErrorCode::InvalidArgument);
        error.fields = vec![
            FieldViolation::new("site_id", "unknown site"),
            FieldViolation::new("covariates.age_years", "must be an integer"),
        ];
        let expected = error.fields.clone();
        let (status, remote) = round_trip(error);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "refused with InvalidArgument");
        assert_eq!(
            remote,
            RemoteError::InvalidArgument {
                message: "refused with InvalidArgument".into(),
                violations: expected,
            }
        );
    }

    #[test]
    fn precondition_violations_travel_as_precondition_failure() {
        let mut error = Refusal::new(ErrorCode::FailedPrecondition);
        error.preconditions = vec![
            PreconditionViolation::new("ELIGIBILITY", "age", "age_years >= 18"),
            PreconditionViolation::new("CAP", "enrolment", "the site's cap is reached"),
        ];
        let expected = error.preconditions.clone();
        let (status, remote) = round_trip(error);
        assert_eq!(status.code(), Code::FailedPrecondition);
        let RemoteError::FailedPrecondition { violations, .. } = remote else {
            panic!("expected a failed precondition, got {remote:?}");
        };
        assert_eq!(violations, expected);
    }

    #[test]
    fn unavailable_always_carries_retry_info_with_the_delay_if_known() {
        let mut error = Refusal::new(ErrorCode::Unavailable);
        error.retry_after = Some(Duration::from_millis(1500));
        let (status, remote) = round_trip(error);
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(remote.retry_after(), Some(Duration::from_millis(1500)));

        let (status, remote) = round_trip(Refusal::new(ErrorCode::Unavailable));
        let retry = status.get_details_retry_info().expect("RetryInfo sent");
        assert_eq!(retry.retry_delay, None);
        assert!(matches!(
            remote,
            RemoteError::Unavailable {
                retry_after: None,
                ..
            }
        ));
    }

    #[test]
    fn plain_refusals_carry_no_details() {
        for code in [ErrorCode::NotFound, ErrorCode::PermissionDenied] {
            let status = to_status(Refusal::new(code));
            assert!(status.details().is_empty(), "{code:?} has details");
        }
    }

    #[test]
    fn internal_errors_hide_their_detail() {
        let (status, remote) = round_trip(Refusal::new(ErrorCode::Internal));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), INTERNAL_MESSAGE);
        assert!(status.details().is_empty());
        assert_eq!(
            remote,
            RemoteError::Failed {
                code: "INTERNAL",
                message: INTERNAL_MESSAGE.into()
            }
        );
    }

    #[test]
    fn every_code_keeps_its_meaning_across_the_wire() {
        for code in ErrorCode::ALL {
            let (status, remote) = round_trip(Refusal::new(code));
            assert_eq!(status.code(), grpc_code(code), "{code:?}");
            let kept = match (&remote, code) {
                (RemoteError::Unavailable { .. }, ErrorCode::Unavailable)
                | (RemoteError::NotFound { .. }, ErrorCode::NotFound)
                | (RemoteError::InvalidArgument { .. }, ErrorCode::InvalidArgument)
                | (RemoteError::FailedPrecondition { .. }, ErrorCode::FailedPrecondition)
                | (RemoteError::Failed { .. }, ErrorCode::Internal) => true,
                (RemoteError::Refused { code: seen, .. }, sent) => *seen == sent,
                _ => false,
            };
            assert!(kept, "{code:?} came back as {remote:?}");
        }
    }

    #[test]
    fn codes_no_service_sends_are_failures_or_timeouts() {
        let remote = RemoteError::from_status(&Status::data_loss("torn page"));
        assert_eq!(
            remote,
            RemoteError::Failed {
                code: "DATA_LOSS",
                message: "torn page".into()
            }
        );
        let remote = RemoteError::from_status(&Status::deadline_exceeded("too slow"));
        assert!(matches!(remote, RemoteError::TimedOut { .. }));
        // A refused connection surfaces as UNAVAILABLE without details.
        let remote = RemoteError::from_status(&Status::unavailable("connection refused"));
        assert_eq!(remote.retry_after(), None);
        assert!(matches!(remote, RemoteError::Unavailable { .. }));
    }
}
