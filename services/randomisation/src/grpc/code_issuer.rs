//! The [`CodeIssuer`] port over gRPC: the blinding service's `AssignCode`,
//! called as `service:randomisation` through an authenticated channel.

use std::time::Duration;

use async_trait::async_trait;
use equipoise_common::error::{ErrorCode, RemoteError};
use equipoise_common::grpc::client::AuthenticatedChannel;
use equipoise_common::grpc::client::traced;
use equipoise_common::grpc::convert::to_proto_timestamp;
use equipoise_proto::blinding::v1 as pb;
use pb::blinding_service_client::BlindingServiceClient;

use crate::service::{CodeIssueError, CodeIssuer, CodeRequest};

// The gRPC paths of the calls made here, naming their client spans.
const ASSIGN_CODE: &str = "/equipoise.blinding.v1.BlindingService/AssignCode";

/// Default for how long one `AssignCode` may take (`randomisation.blinding_call_timeout_ms`).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct GrpcCodeIssuer {
    client: BlindingServiceClient<AuthenticatedChannel>,
    call_timeout: Duration,
}

impl GrpcCodeIssuer {
    pub fn new(channel: AuthenticatedChannel) -> Self {
        Self {
            client: BlindingServiceClient::new(channel),
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// Sent as the call's gRPC deadline, so the blinding service stops
    /// working on a call randomisation has given up on.
    pub fn with_call_timeout(mut self, call_timeout: Duration) -> Self {
        self.call_timeout = call_timeout;
        self
    }
}

#[async_trait]
impl CodeIssuer for GrpcCodeIssuer {
    async fn assign_code(&self, request: CodeRequest) -> Result<String, CodeIssueError> {
        let mut call = tonic::Request::new(pb::AssignCodeRequest {
            randomised_at: to_proto_timestamp(&request.randomised_at),
            trial_id: request.trial_id,
            subject_id: request.subject_id,
            site_id: request.site_id,
            arm_id: request.arm_id,
        });
        call.set_timeout(self.call_timeout);
        // A clone per call: tonic clients are cheap handles on one channel.
        let mut client = self.client.clone();
        match traced(ASSIGN_CODE, client.assign_code(call)).await {
            Ok(response) => Ok(response.into_inner().code),
            Err(status) => Err(issue_error(RemoteError::from_status(&status))),
        }
    }
}

/// Transport failures arrive as UNAVAILABLE (or, for the deadline, as
/// DEADLINE_EXCEEDED / CANCELLED): all of them mean "try again later".
fn issue_error(error: RemoteError) -> CodeIssueError {
    match error {
        RemoteError::Unavailable { message, .. } | RemoteError::TimedOut { message } => {
            CodeIssueError::Unavailable(message)
        }
        RemoteError::Refused {
            code: ErrorCode::ResourceExhausted,
            message,
        } => CodeIssueError::Exhausted(message),
        other => CodeIssueError::Refused(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use equipoise_common::grpc::client::{
        ClientInterceptor, Timeouts, authenticated, connect_lazy,
    };
    use tonic::Status;

    use super::*;

    #[test]
    fn statuses_map_to_what_randomise_does_next() {
        let cases = [
            (Status::unavailable("down"), "unavailable"),
            (Status::deadline_exceeded("slow"), "unavailable"),
            (Status::cancelled("timeout expired"), "unavailable"),
            (
                Status::resource_exhausted("pool of RESPINE empty"),
                "exhausted",
            ),
            (Status::permission_denied("no"), "refused"),
            (Status::failed_precondition("unknown trial"), "refused"),
            (Status::internal("bug"), "refused"),
        ];
        for (status, expected) in cases {
            let kind = match issue_error(RemoteError::from_status(&status)) {
                CodeIssueError::Unavailable(_) => "unavailable",
                CodeIssueError::Exhausted(message) => {
                    assert!(message.contains("RESPINE"), "{message}");
                    "exhausted"
                }
                CodeIssueError::Refused(_) => "refused",
            };
            assert_eq!(kind, expected, "{:?}", status.code());
        }
    }

    /// Nothing listens on the port: the call fails as unavailable.
    #[tokio::test]
    async fn an_unreachable_blinding_service_is_unavailable() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("address").port()
        };
        let channel = connect_lazy(&format!("http://127.0.0.1:{port}"), Timeouts::default())
            .expect("endpoint");
        let interceptor = ClientInterceptor::bearer("token").expect("token");
        let issuer = GrpcCodeIssuer::new(authenticated(channel, interceptor));
        let error = issuer
            .assign_code(CodeRequest {
                trial_id: "T".into(),
                subject_id: "S".into(),
                site_id: "A".into(),
                arm_id: "MSC".into(),
                randomised_at: "2026-11-30T10:00:00Z".into(),
            })
            .await
            .expect_err("nothing listens");
        assert!(matches!(error, CodeIssueError::Unavailable(_)), "{error:?}");
    }
}
