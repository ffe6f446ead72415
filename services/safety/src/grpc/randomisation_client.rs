//! The safety service's reads from randomisation, as `service:safety`: a
//! trial's definition (`GetTrial`, which shows it the definition) and the
//! site of an allocation (`GetAllocation`, which carries no arm).

use async_trait::async_trait;
use equipoise_common::grpc::client::AuthenticatedChannel;
use equipoise_common::grpc::client::traced;
use equipoise_proto::randomisation::v1 as pb;
use equipoise_trial::{TrialDefinition, parse_definition};
use pb::randomisation_service_client::RandomisationServiceClient;
use tonic::Code;

use crate::service::{Allocations, DefinitionError, TrialDefinitions};

// The gRPC paths of the calls made here, naming their client spans.
const GET_TRIAL: &str = "/equipoise.randomisation.v1.RandomisationService/GetTrial";
const GET_ALLOCATION: &str = "/equipoise.randomisation.v1.RandomisationService/GetAllocation";

#[derive(Clone)]
pub struct GrpcRandomisation {
    client: RandomisationServiceClient<AuthenticatedChannel>,
}

impl GrpcRandomisation {
    pub fn new(channel: AuthenticatedChannel) -> Self {
        Self {
            client: RandomisationServiceClient::new(channel),
        }
    }
}

fn lookup_error(status: tonic::Status) -> DefinitionError {
    match status.code() {
        Code::NotFound => DefinitionError::NotFound,
        _ => DefinitionError::Unavailable(format!(
            "randomisation answered {:?}: {}",
            status.code(),
            status.message()
        )),
    }
}

#[async_trait]
impl TrialDefinitions for GrpcRandomisation {
    async fn definition(&self, trial_id: &str) -> Result<TrialDefinition, DefinitionError> {
        let request = pb::GetTrialRequest {
            trial_id: trial_id.to_owned(),
        };
        let mut client = self.client.clone();
        let trial = traced(GET_TRIAL, client.get_trial(request))
            .await
            .map_err(lookup_error)?
            .into_inner();
        if trial.definition_yaml.is_empty() {
            return Err(DefinitionError::Unavailable(
                "randomisation showed no definition to service:safety".into(),
            ));
        }
        parse_definition(&trial.definition_yaml).map_err(|problems| {
            DefinitionError::Unavailable(format!(
                "the stored definition of {trial_id} does not parse: {problems:?}"
            ))
        })
    }
}

#[async_trait]
impl Allocations for GrpcRandomisation {
    async fn site_of(
        &self,
        trial_id: &str,
        subject_id: &str,
    ) -> Result<Option<String>, DefinitionError> {
        let request = pb::GetAllocationRequest {
            trial_id: trial_id.to_owned(),
            subject_id: subject_id.to_owned(),
        };
        let mut client = self.client.clone();
        match traced(GET_ALLOCATION, client.get_allocation(request)).await {
            Ok(allocation) => Ok(Some(allocation.into_inner().site_id)),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(lookup_error(status)),
        }
    }
}
