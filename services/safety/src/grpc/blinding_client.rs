//! The [`Blinding`] port over gRPC: the blinding service's `SafetyReveal`
//! and `GetArmsForDsmb`, called as `service:safety`.

use async_trait::async_trait;
use equipoise_common::grpc::client::AuthenticatedChannel;
use equipoise_common::grpc::client::traced;
use equipoise_proto::blinding::v1 as pb;
use pb::blinding_service_client::BlindingServiceClient;
use tonic::{Code, Status};

use crate::service::{Blinding, BlindingError, RevealedArm, SubjectArm};

// The gRPC paths of the calls made here, naming their client spans.
const SAFETY_REVEAL: &str = "/equipoise.blinding.v1.BlindingService/SafetyReveal";
const GET_ARMS_FOR_DSMB: &str = "/equipoise.blinding.v1.BlindingService/GetArmsForDsmb";

pub struct GrpcBlinding {
    client: BlindingServiceClient<AuthenticatedChannel>,
}

impl GrpcBlinding {
    /// `channel` carries the safety service's own token and the call
    /// timeout (`safety.blinding_call_timeout_ms`).
    pub fn new(channel: AuthenticatedChannel) -> Self {
        Self {
            client: BlindingServiceClient::new(channel),
        }
    }
}

/// What a failed call means: only a call that may succeed if retried is
/// Unavailable (the classification stays pending and is retried).
pub fn blinding_error(status: &Status) -> BlindingError {
    match status.code() {
        Code::NotFound => BlindingError::NotFound(status.message().to_owned()),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
            BlindingError::Unavailable(status.message().to_owned())
        }
        Code::Unknown if is_transport_error(status) => {
            BlindingError::Unavailable(status.message().to_owned())
        }
        other => BlindingError::Refused(format!("{other:?}: {}", status.message())),
    }
}

fn is_transport_error(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::transport::Error>() || error.is::<std::io::Error>() {
            return true;
        }
        source = error.source();
    }
    false
}

#[async_trait]
impl Blinding for GrpcBlinding {
    async fn safety_reveal(
        &self,
        trial_id: &str,
        subject_id: &str,
        case_id: &str,
    ) -> Result<RevealedArm, BlindingError> {
        let mut client = self.client.clone();
        let reply = traced(
            SAFETY_REVEAL,
            client.safety_reveal(pb::SafetyRevealRequest {
                trial_id: trial_id.to_owned(),
                subject_id: subject_id.to_owned(),
                case_id: case_id.to_owned(),
            }),
        )
        .await
        .map_err(|status| blinding_error(&status))?
        .into_inner();
        Ok(RevealedArm {
            arm_id: reply.arm_id,
            arm_label: reply.arm_label,
            active: reply.active,
        })
    }

    async fn arms_for_dsmb(
        &self,
        trial_id: &str,
        subject_ids: &[String],
    ) -> Result<Vec<SubjectArm>, BlindingError> {
        let mut client = self.client.clone();
        let mut arms = Vec::with_capacity(subject_ids.len());
        // The RPC takes at most 10,000 subjects per call.
        for batch in subject_ids.chunks(10_000) {
            let reply = traced(
                GET_ARMS_FOR_DSMB,
                client.get_arms_for_dsmb(pb::GetArmsForDsmbRequest {
                    trial_id: trial_id.to_owned(),
                    subject_ids: batch.to_vec(),
                }),
            )
            .await
            .map_err(|status| blinding_error(&status))?
            .into_inner();
            arms.extend(reply.arms.into_iter().map(|a| SubjectArm {
                subject_id: a.subject_id,
                arm_id: a.arm_id,
                arm_label: a.arm_label,
            }));
        }
        Ok(arms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_what_the_service_does_next() {
        assert!(matches!(
            blinding_error(&Status::not_found("x")),
            BlindingError::NotFound(_)
        ));
        let transport = Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        )));
        for status in [
            Status::unavailable("down"),
            Status::deadline_exceeded("slow"),
            Status::cancelled("gone"),
            transport,
        ] {
            assert!(
                matches!(blinding_error(&status), BlindingError::Unavailable(_)),
                "{status:?}"
            );
        }
        for status in [
            Status::permission_denied("no"),
            Status::unauthenticated("who"),
            Status::invalid_argument("bad"),
            Status::failed_precondition("no code"),
            Status::internal("bug"),
            Status::unknown("no transport error behind it"),
        ] {
            assert!(
                matches!(blinding_error(&status), BlindingError::Refused(_)),
                "{status:?}"
            );
        }
    }
}
