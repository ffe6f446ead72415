//! The mapping of each domain error to its gRPC status, tested where
//! tonic types may appear.

#[cfg(test)]
mod tests {
    use equipoise_common::grpc::status::to_status;
    use tonic::Code;

    use equipoise_common::error::{ErrorCode, ServiceError};

    use crate::error::BlindingError;
    use crate::store::StoreError;

    #[test]
    fn each_error_has_its_status_and_internals_stay_in_the_log() {
        let cases = [
            (
                BlindingError::invalid("reason", "is required"),
                Code::InvalidArgument,
            ),
            (BlindingError::NotFound("x".into()), Code::NotFound),
            (
                BlindingError::PermissionDenied("x".into()),
                Code::PermissionDenied,
            ),
            (
                BlindingError::Unauthenticated("x".into()),
                Code::Unauthenticated,
            ),
            (
                BlindingError::ResourceExhausted("x".into()),
                Code::ResourceExhausted,
            ),
            (
                BlindingError::FailedPrecondition("x".into()),
                Code::FailedPrecondition,
            ),
            (BlindingError::unavailable("x"), Code::Unavailable),
        ];
        for (error, code) in cases {
            assert_eq!(to_status(error).code(), code);
        }
        let invalid = to_status(BlindingError::invalid("reason", "is required"));
        assert_eq!(invalid.message(), "invalid request: reason: is required");
        let internal = to_status(BlindingError::Internal("secret detail".into()));
        assert_eq!(internal.code(), Code::Internal);
        assert!(!internal.message().contains("secret"));
    }

    #[test]
    fn store_errors_name_the_trial_never_the_arm() {
        let empty = BlindingError::from(StoreError::PoolEmpty {
            trial_id: "RESPINE".into(),
        });
        assert_eq!(empty.error_code(), ErrorCode::ResourceExhausted);
        assert!(empty.to_string().contains("RESPINE"));
        let unknown = BlindingError::from(StoreError::UnknownArm {
            arm_id: "MSC".into(),
        });
        assert!(!unknown.to_string().contains("MSC"));
        assert_eq!(
            BlindingError::from(StoreError::Unavailable("down".into())).error_code(),
            ErrorCode::Unavailable
        );
    }
}
