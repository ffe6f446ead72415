//! The thin tonic layer: take the caller from the auth layer, convert, call
//! the application, convert back. No decisions are made here.

mod blinding_support;
mod code_issuer;
mod convert;
pub mod status;

use std::pin::Pin;
use std::sync::Arc;

use equipoise_common::grpc::{Reply, caller, reply};
use equipoise_proto::randomisation::v1 as pb;
use pb::randomisation_service_server::RandomisationService as RandomisationApi;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::error::RandomisationError;
use crate::service::{
    AllocationFilter, RandomisationService, RandomiseCommand, SimulateCommand, SimulationDesign,
};
use crate::simulation::{BiasSpec, LevelWeights};
pub use blinding_support::{BlindingSupportGrpc, BlindingSupportServiceServer};
pub use code_issuer::GrpcCodeIssuer;
pub use pb::randomisation_service_server::RandomisationServiceServer;
use status::to_status;

pub struct RandomisationGrpc {
    service: Arc<RandomisationService>,
}

impl RandomisationGrpc {
    pub fn new(service: Arc<RandomisationService>) -> Self {
        Self { service }
    }
}

fn filter(filter: Option<pb::AllocationFilter>) -> AllocationFilter {
    let filter = filter.unwrap_or_default();
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    AllocationFilter {
        trial_id: filter.trial_id,
        site_id: non_empty(filter.site_id),
        stratum: non_empty(filter.stratum),
    }
}

#[tonic::async_trait]
impl RandomisationApi for RandomisationGrpc {
    async fn register_trial(&self, request: Request<pb::RegisterTrialRequest>) -> Reply<pb::Trial> {
        let caller = caller(&request)?;
        let result = self
            .service
            .register_trial(&caller, &request.get_ref().definition_yaml)
            .await;
        reply(result, convert::trial)
    }

    async fn upload_allocation_list(
        &self,
        request: Request<pb::UploadAllocationListRequest>,
    ) -> Reply<pb::UploadAllocationListResponse> {
        let caller = caller(&request)?;
        let body = request.get_ref();
        let result = self
            .service
            .upload_allocation_list(&caller, &body.trial_id, &body.csv)
            .await;
        reply(result, |upload| pb::UploadAllocationListResponse {
            strata: upload.strata,
            entries: upload.entries,
            list_sha256: upload.list_sha256,
        })
    }

    async fn activate_trial(&self, request: Request<pb::ActivateTrialRequest>) -> Reply<pb::Trial> {
        let caller = caller(&request)?;
        let body = request.get_ref();
        let result = self
            .service
            .activate_trial(&caller, &body.trial_id, &body.expected_definition_sha256)
            .await;
        reply(result, convert::trial)
    }

    async fn amend_trial(&self, request: Request<pb::AmendTrialRequest>) -> Reply<pb::Trial> {
        let caller = caller(&request)?;
        let body = request.get_ref();
        let result = self
            .service
            .amend_trial(&caller, &body.definition_yaml, &body.reason)
            .await;
        reply(result, convert::trial)
    }

    async fn get_trial(&self, request: Request<pb::GetTrialRequest>) -> Reply<pb::Trial> {
        let caller = caller(&request)?;
        let result = self
            .service
            .get_trial(&caller, &request.get_ref().trial_id)
            .await;
        reply(result, convert::trial)
    }

    async fn close_enrolment(
        &self,
        request: Request<pb::CloseEnrolmentRequest>,
    ) -> Reply<pb::Trial> {
        let caller = caller(&request)?;
        let body = request.get_ref();
        let result = self
            .service
            .close_enrolment(&caller, &body.trial_id, &body.reason)
            .await;
        reply(result, convert::trial)
    }

    async fn randomise(
        &self,
        request: Request<pb::RandomiseRequest>,
    ) -> Reply<pb::RandomiseResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let covariates = convert::covariates("covariates", &body.covariates).map_err(to_status)?;
        let command = RandomiseCommand {
            trial_id: body.trial_id,
            site_id: body.site_id,
            subject_id: body.subject_id,
            covariates,
        };
        let result = self.service.randomise(&caller, &command).await;
        reply(result, |outcome| {
            let allocation = convert::allocation(outcome.allocation);
            pb::RandomiseResponse {
                treatment_code: allocation.treatment_code.clone(),
                allocation: Some(allocation),
                replayed: outcome.replayed,
            }
        })
    }

    async fn get_allocation(
        &self,
        request: Request<pb::GetAllocationRequest>,
    ) -> Reply<pb::Allocation> {
        let caller = caller(&request)?;
        let body = request.get_ref();
        let result = self
            .service
            .get_allocation(&caller, &body.trial_id, &body.subject_id)
            .await;
        reply(result, convert::allocation)
    }

    async fn list_allocations(
        &self,
        request: Request<pb::ListAllocationsRequest>,
    ) -> Reply<pb::ListAllocationsResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let result = self
            .service
            .list_allocations(
                &caller,
                &filter(body.filter),
                &body.page_token,
                body.page_size,
            )
            .await;
        reply(result, |page| pb::ListAllocationsResponse {
            allocations: page
                .allocations
                .into_iter()
                .map(convert::allocation)
                .collect(),
            next_page_token: page.next_page_token,
        })
    }

    type StreamAllocationsStream =
        Pin<Box<dyn Stream<Item = Result<pb::Allocation, Status>> + Send>>;

    async fn stream_allocations(
        &self,
        request: Request<pb::StreamAllocationsRequest>,
    ) -> Reply<Self::StreamAllocationsStream> {
        let caller = caller(&request)?;
        let filter = filter(request.into_inner().filter);
        // The first page is fetched before answering, so authorisation and
        // unknown-trial errors arrive as the call's status, not mid-stream.
        let first = self
            .service
            .allocations_after(&caller, &filter, 0, crate::service::MAX_PAGE_SIZE)
            .await
            .map_err(to_status)?;
        let service = self.service.clone();
        let first = (first.allocations, first.next_after);
        Ok(Response::new(stream_pages(
            first,
            convert::allocation,
            move |after| {
                let (service, caller, filter) = (service.clone(), caller.clone(), filter.clone());
                async move {
                    let page = service
                        .allocations_after(&caller, &filter, after, crate::service::MAX_PAGE_SIZE)
                        .await?;
                    Ok((page.allocations, page.next_after))
                }
            },
        )))
    }

    async fn get_trial_status(
        &self,
        request: Request<pb::GetTrialStatusRequest>,
    ) -> Reply<pb::TrialStatus> {
        let caller = caller(&request)?;
        let result = self
            .service
            .trial_status(&caller, &request.get_ref().trial_id)
            .await;
        reply(result, convert::status)
    }

    async fn correct_stratum(
        &self,
        request: Request<pb::CorrectStratumRequest>,
    ) -> Reply<pb::Allocation> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let covariates = convert::covariates("corrected_covariates", &body.corrected_covariates)
            .map_err(to_status)?;
        let result = self
            .service
            .correct_stratum(
                &caller,
                &body.trial_id,
                &body.subject_id,
                &covariates,
                &body.reason,
            )
            .await;
        reply(result, convert::allocation)
    }

    async fn mark_randomised_in_error(
        &self,
        request: Request<pb::MarkRandomisedInErrorRequest>,
    ) -> Reply<pb::Allocation> {
        let caller = caller(&request)?;
        let body = request.get_ref();
        let result = self
            .service
            .mark_randomised_in_error(&caller, &body.trial_id, &body.subject_id, &body.reason)
            .await;
        reply(result, convert::allocation)
    }

    type ExportAuditTrailStream =
        Pin<Box<dyn Stream<Item = Result<pb::AuditRecord, Status>> + Send>>;

    async fn export_audit_trail(
        &self,
        request: Request<pb::ExportAuditTrailRequest>,
    ) -> Reply<Self::ExportAuditTrailStream> {
        let caller = caller(&request)?;
        let after_seq = request.into_inner().after_seq;
        // The first page before answering: refusals are the call's status.
        let first = self
            .service
            .export_audit_trail(&caller, after_seq, crate::service::EXPORT_PAGE)
            .await
            .map_err(to_status)?;
        let service = self.service.clone();
        let first_next = first.last().map(|r| r.record.seq);
        Ok(Response::new(stream_pages(
            (first, first_next),
            convert::audit_record,
            move |after| {
                let (service, caller) = (service.clone(), caller.clone());
                async move {
                    let page = service
                        .export_audit_trail(&caller, after, crate::service::EXPORT_PAGE)
                        .await?;
                    let next = page.last().map(|r| r.record.seq);
                    Ok((page, next))
                }
            },
        )))
    }

    async fn simulate(&self, request: Request<pb::SimulateRequest>) -> Reply<pb::SimulationReport> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let design = match body.design {
            Some(pb::simulate_request::Design::TrialId(id)) => SimulationDesign::Trial(id),
            Some(pb::simulate_request::Design::DefinitionYaml(yaml)) => {
                SimulationDesign::Yaml(yaml)
            }
            None => {
                return Err(to_status(RandomisationError::invalid(
                    "design",
                    "set trial_id or definition_yaml",
                )));
            }
        };
        let level_weights: LevelWeights = body
            .level_weights
            .into_iter()
            .map(|(factor, weights)| (factor, weights.weights.into_iter().collect()))
            .collect();
        let command = SimulateCommand {
            design,
            trials: body.trials,
            subjects_per_trial: body.subjects_per_trial,
            seed: body.seed,
            level_weights,
            bias: BiasSpec {
                selection_eta: body.selection_bias,
                time_trend: body.time_trend,
                alpha: body.alpha,
            },
        };
        let result = self.service.simulate(&caller, command).await;
        reply(result, convert::simulation)
    }
}

/// One page of items and the cursor after it (`None` at the end).
type Page<Item> = (Vec<Item>, Option<i64>);

/// A server stream fed page by page by a task: `first` (fetched before
/// answering, so refusals are the call's status), then `next(cursor)` until
/// a page has no cursor or the client goes away. A later failure ends the
/// stream with its status.
fn stream_pages<Item, Message, Next, Fetch>(
    first: Page<Item>,
    convert: fn(Item) -> Message,
    mut next: Next,
) -> Pin<Box<dyn Stream<Item = Result<Message, Status>> + Send>>
where
    Item: Send + 'static,
    Message: Send + 'static,
    Next: FnMut(i64) -> Fetch + Send + 'static,
    Fetch: std::future::Future<Output = Result<Page<Item>, RandomisationError>> + Send,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let (mut items, mut cursor) = first;
        loop {
            for item in items {
                if sender.send(Ok(convert(item))).await.is_err() {
                    return;
                }
            }
            let Some(after) = cursor else { return };
            match next(after).await {
                Ok((page, after)) => (items, cursor) = (page, after),
                Err(error) => {
                    let _ = sender.send(Err(to_status(error))).await;
                    return;
                }
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))
}
