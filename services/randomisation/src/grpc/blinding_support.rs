//! `BlindingSupportService`: the blinding service's view of randomisation.
//! Authorisation (`service:blinding` only) is the domain's.

use std::sync::Arc;

use equipoise_proto::randomisation::v1 as pb;
use pb::blinding_support_service_server::BlindingSupportService as BlindingSupportApi;
pub use pb::blinding_support_service_server::BlindingSupportServiceServer;
use tonic::Request;

use super::{Reply, caller, convert, reply};
use crate::service::RandomisationService;

pub struct BlindingSupportGrpc {
    service: Arc<RandomisationService>,
}

impl BlindingSupportGrpc {
    pub fn new(service: Arc<RandomisationService>) -> Self {
        Self { service }
    }
}

#[tonic::async_trait]
impl BlindingSupportApi for BlindingSupportGrpc {
    async fn get_trial_for_blinding(
        &self,
        request: Request<pb::GetTrialForBlindingRequest>,
    ) -> Reply<pb::TrialForBlinding> {
        let caller = caller(&request)?;
        let result = self
            .service
            .trial_for_blinding(&caller, &request.get_ref().trial_id)
            .await;
        reply(result, convert::trial_for_blinding)
    }

    async fn look_up_allocation(
        &self,
        request: Request<pb::LookUpAllocationRequest>,
    ) -> Reply<pb::AllocatedArm> {
        let caller = caller(&request)?;
        let body = request.get_ref();
        let result = self
            .service
            .look_up_allocation(&caller, &body.trial_id, &body.subject_id)
            .await;
        reply(result, convert::allocated_arm)
    }
}
