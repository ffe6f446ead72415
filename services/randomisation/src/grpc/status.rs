//! Statuses come from the shared mapping; [`RandomisationError`]'s
//! `ServiceError` implementation decides codes and details. The tests pin
//! what callers see for each kind of error.
//!
//! [`RandomisationError`]: crate::error::RandomisationError

pub use equipoise_common::grpc::status::to_status;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use equipoise_trial::Problem;
    use tonic::Code;
    use tonic_types::StatusExt;

    use super::to_status;
    use crate::error::{FailedCriterion, RandomisationError};

    #[test]
    fn invalid_arguments_name_each_field() {
        let error = RandomisationError::InvalidArgument(vec![
            Problem {
                path: "site_id".into(),
                message: "unknown site".into(),
            },
            Problem {
                path: "covariates.age_years".into(),
                message: "must be an integer".into(),
            },
        ]);
        let status = to_status(error);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid request: site_id: unknown site; covariates.age_years: must be an integer"
        );
        let fields: Vec<(String, String)> = status
            .get_details_bad_request()
            .expect("BadRequest")
            .field_violations
            .into_iter()
            .map(|v| (v.field, v.description))
            .collect();
        assert_eq!(
            fields,
            [
                ("site_id".to_owned(), "unknown site".to_owned()),
                (
                    "covariates.age_years".to_owned(),
                    "must be an integer".to_owned()
                )
            ]
        );
    }

    #[test]
    fn ineligibility_and_caps_are_precondition_failures() {
        let status = to_status(RandomisationError::Ineligible(vec![FailedCriterion {
            id: "age".into(),
            rule: "age_years >= 18".into(),
        }]));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status.message(),
            "subject is not eligible: age (age_years >= 18)"
        );
        let violation = &status
            .get_details_precondition_failure()
            .expect("PreconditionFailure")
            .violations[0];
        assert_eq!(
            (
                violation.r#type.as_str(),
                violation.subject.as_str(),
                violation.description.as_str()
            ),
            ("ELIGIBILITY", "age", "age_years >= 18")
        );

        let message = "the site's enrolment cap is reached";
        let status = to_status(RandomisationError::CapReached(message.into()));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), message);
        let violation = &status
            .get_details_precondition_failure()
            .expect("PreconditionFailure")
            .violations[0];
        assert_eq!(
            (
                violation.r#type.as_str(),
                violation.subject.as_str(),
                violation.description.as_str()
            ),
            ("CAP", "enrolment", message)
        );
    }

    #[test]
    fn unavailable_says_when_to_retry() {
        let status = to_status(RandomisationError::Unavailable {
            message: "no allocation made: Redis is down".into(),
            retry_after: Some(Duration::from_secs(1)),
        });
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "no allocation made: Redis is down");
        let retry = status.get_details_retry_info().expect("RetryInfo");
        assert_eq!(retry.retry_delay, Some(Duration::from_secs(1)));
    }

    #[test]
    fn internal_errors_hide_their_detail() {
        let status = to_status(RandomisationError::Internal(
            "database disk image is malformed".into(),
        ));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error; the incident is logged");
        assert!(status.details().is_empty());
    }

    #[test]
    fn other_refusals_are_plain_statuses() {
        let cases = [
            (
                RandomisationError::NotFound("trial GHOST".into()),
                Code::NotFound,
                "trial GHOST not found",
            ),
            (
                RandomisationError::FailedPrecondition("the trial is not active".into()),
                Code::FailedPrecondition,
                "the trial is not active",
            ),
            (
                RandomisationError::AlreadyExists("already randomised".into()),
                Code::AlreadyExists,
                "already randomised",
            ),
            (
                RandomisationError::PermissionDenied("not your site".into()),
                Code::PermissionDenied,
                "not your site",
            ),
            (
                RandomisationError::Aborted("retry the request".into()),
                Code::Aborted,
                "retry the request",
            ),
            (
                RandomisationError::ResourceExhausted("no treatment code left for RESPINE".into()),
                Code::ResourceExhausted,
                "no treatment code left for RESPINE",
            ),
        ];
        for (error, code, message) in cases {
            let status = to_status(error);
            assert_eq!((status.code(), status.message()), (code, message));
            assert!(status.details().is_empty(), "{code:?} carries details");
        }
    }
}
