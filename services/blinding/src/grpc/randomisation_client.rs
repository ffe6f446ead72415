//! The [`RandomisationLookup`] port over gRPC: randomisation's
//! `BlindingSupportService`, called as `service:blinding`.

use async_trait::async_trait;
use equipoise_common::grpc::client::AuthenticatedChannel;
use equipoise_common::grpc::client::traced;
use equipoise_proto::randomisation::v1 as pb;
use pb::blinding_support_service_client::BlindingSupportServiceClient;
use tonic::{Code, Status};

use crate::service::{
    AllocatedArm, LookupError, RandomisationLookup, TrialForBlinding, TrialState,
};

// The gRPC paths of the calls made here, naming their client spans.
const GET_TRIAL_FOR_BLINDING: &str =
    "/equipoise.randomisation.v1.BlindingSupportService/GetTrialForBlinding";
const LOOK_UP_ALLOCATION: &str =
    "/equipoise.randomisation.v1.BlindingSupportService/LookUpAllocation";

pub struct GrpcRandomisationLookup {
    client: BlindingSupportServiceClient<AuthenticatedChannel>,
}

impl GrpcRandomisationLookup {
    /// `channel` carries the blinding service's own token and the call
    /// timeout (`blinding.randomisation_call_timeout_ms`).
    pub fn new(channel: AuthenticatedChannel) -> Self {
        Self {
            client: BlindingSupportServiceClient::new(channel),
        }
    }
}

/// What a failed call means for the blinding service. Only a call that
/// may succeed if retried is Unavailable (and lets reveals fall back on the
/// stored definition); a refusal of the request itself is permanent.
pub fn lookup_error(status: &Status) -> LookupError {
    match status.code() {
        Code::NotFound => LookupError::NotFound,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
            LookupError::Unavailable(status.message().to_owned())
        }
        // tonic reports a connection that failed below gRPC as UNKNOWN with
        // a transport error as its source: unreachable, not a refusal.
        Code::Unknown if is_transport_error(status) => {
            LookupError::Unavailable(status.message().to_owned())
        }
        other => LookupError::Refused(format!("{other:?}: {}", status.message())),
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

fn timestamp(at: Option<prost_types::Timestamp>) -> Option<jiff::Timestamp> {
    let at = at?;
    jiff::Timestamp::new(at.seconds, at.nanos).ok()
}

#[async_trait]
impl RandomisationLookup for GrpcRandomisationLookup {
    async fn trial_for_blinding(&self, trial_id: &str) -> Result<TrialForBlinding, LookupError> {
        let mut client = self.client.clone();
        let reply = traced(
            GET_TRIAL_FOR_BLINDING,
            client.get_trial_for_blinding(pb::GetTrialForBlindingRequest {
                trial_id: trial_id.to_owned(),
            }),
        )
        .await
        .map_err(|status| lookup_error(&status))?
        .into_inner();
        let code_seed: [u8; 32] = reply.code_seed.as_slice().try_into().map_err(|_| {
            LookupError::Refused(format!(
                "the code seed of trial {trial_id} is {} bytes, not 32",
                reply.code_seed.len()
            ))
        })?;
        let state = match pb::TrialState::try_from(reply.state) {
            Ok(pb::TrialState::Draft) => TrialState::Draft,
            Ok(pb::TrialState::Active) => TrialState::Active,
            Ok(pb::TrialState::Closed) => TrialState::Closed,
            _ => TrialState::Unspecified,
        };
        Ok(TrialForBlinding {
            trial_id: reply.trial_id,
            version: reply.version,
            state,
            definition_yaml: reply.definition_yaml,
            code_seed,
        })
    }

    async fn look_up_allocation(
        &self,
        trial_id: &str,
        subject_id: &str,
    ) -> Result<Option<AllocatedArm>, LookupError> {
        let mut client = self.client.clone();
        let reply = traced(
            LOOK_UP_ALLOCATION,
            client.look_up_allocation(pb::LookUpAllocationRequest {
                trial_id: trial_id.to_owned(),
                subject_id: subject_id.to_owned(),
            }),
        )
        .await;
        let reply = match reply {
            Ok(reply) => reply.into_inner(),
            Err(status) => {
                return match lookup_error(&status) {
                    LookupError::NotFound => Ok(None),
                    other => Err(other),
                };
            }
        };
        Ok(Some(AllocatedArm {
            trial_id: reply.trial_id,
            subject_id: reply.subject_id,
            site_id: reply.site_id,
            arm_id: reply.arm_id,
            randomised_at: timestamp(reply.randomised_at),
            randomised_in_error: reply.randomised_in_error,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_what_the_service_does_next() {
        assert_eq!(lookup_error(&Status::not_found("x")), LookupError::NotFound);
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
                matches!(lookup_error(&status), LookupError::Unavailable(_)),
                "{status:?}"
            );
        }
        // Permanent: retrying or falling back would hide them.
        for status in [
            Status::permission_denied("no"),
            Status::unauthenticated("who"),
            Status::invalid_argument("bad id"),
            Status::failed_precondition("draft"),
            Status::internal("bug"),
            Status::resource_exhausted("quota"),
            Status::unknown("no transport error behind it"),
        ] {
            assert!(
                matches!(lookup_error(&status), LookupError::Refused(_)),
                "{status:?}"
            );
        }
    }
}
