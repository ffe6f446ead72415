//! The mapping of each domain error to its gRPC status, tested where
//! tonic types may appear.

#[cfg(test)]
mod tests {
    use equipoise_common::grpc::status::to_status;
    use tonic::Code;

    use crate::error::SafetyError;
    use crate::store::StoreError;

    #[test]
    fn each_error_has_its_status_and_internals_stay_in_the_log() {
        let cases = [
            (
                SafetyError::invalid("report.event.llt_code", "8 digits"),
                Code::InvalidArgument,
            ),
            (SafetyError::NotFound("x".into()), Code::NotFound),
            (
                SafetyError::PermissionDenied("x".into()),
                Code::PermissionDenied,
            ),
            (
                SafetyError::FailedPrecondition("x".into()),
                Code::FailedPrecondition,
            ),
            (SafetyError::unavailable("x"), Code::Unavailable),
            (SafetyError::Aborted("x".into()), Code::Aborted),
            (
                SafetyError::from(StoreError::Conflict("x".into())),
                Code::FailedPrecondition,
            ),
            (
                SafetyError::from(StoreError::Unavailable("x".into())),
                Code::Unavailable,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(to_status(error).code(), code);
        }
        let invalid = to_status(SafetyError::invalid("report.event.llt_code", "8 digits"));
        assert!(invalid.message().contains("report.event.llt_code"));
        let internal = to_status(SafetyError::Internal("secret detail".into()));
        assert_eq!(internal.code(), Code::Internal);
        assert!(!internal.message().contains("secret"));
    }
}
