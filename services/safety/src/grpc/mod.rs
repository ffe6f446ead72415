//! The thin tonic layer: take the caller from the auth layer, convert, call
//! the domain, convert back. No decisions are made here.

pub mod blinding_client;
mod convert;
mod status;

use std::sync::Arc;

use equipoise_common::auth::Caller;
use equipoise_common::grpc::status::to_status;
use equipoise_proto::safety::v1 as pb;
use pb::safety_service_server::SafetyService as SafetyApi;
use tonic::{Request, Response, Status};

use crate::error::SafetyError;
use crate::service::SafetyService;
pub use pb::safety_service_server::SafetyServiceServer;

pub struct SafetyGrpc {
    service: Arc<SafetyService>,
}

impl SafetyGrpc {
    pub fn new(service: Arc<SafetyService>) -> Self {
        Self { service }
    }
}

fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no authenticated caller"))
}

type Reply<T> = Result<Response<T>, Status>;

fn reply<T, U>(result: Result<T, SafetyError>, convert: impl FnOnce(T) -> U) -> Reply<U> {
    result
        .map(|value| Response::new(convert(value)))
        .map_err(to_status)
}

#[tonic::async_trait]
impl SafetyApi for SafetyGrpc {
    async fn report_case(&self, request: Request<pb::ReportCaseRequest>) -> Reply<pb::CaseView> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let result = self
            .service
            .report_case(&caller, convert::report_input(body.report))
            .await;
        reply(result, convert::case)
    }

    async fn report_follow_up(
        &self,
        request: Request<pb::ReportFollowUpRequest>,
    ) -> Reply<pb::CaseView> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let result = self
            .service
            .report_follow_up(&caller, &body.case_id, convert::report_input(body.report))
            .await;
        reply(result, convert::case)
    }

    async fn assess_causality(
        &self,
        request: Request<pb::AssessCausalityRequest>,
    ) -> Reply<pb::CaseView> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let result = self
            .service
            .assess_causality(
                &caller,
                &body.case_id,
                body.version,
                convert::causality(body.causality),
                &body.comment,
            )
            .await;
        reply(result, convert::case)
    }

    async fn get_case(&self, request: Request<pb::GetCaseRequest>) -> Reply<pb::CaseView> {
        let caller = caller(&request)?;
        let body = request.get_ref();
        let result = self
            .service
            .get_case(&caller, &body.case_id, body.version)
            .await;
        reply(result, convert::case)
    }

    async fn list_cases(
        &self,
        request: Request<pb::ListCasesRequest>,
    ) -> Reply<pb::ListCasesResponse> {
        let caller = caller(&request)?;
        let result = self
            .service
            .list_cases(&caller, &request.get_ref().trial_id)
            .await;
        reply(result, convert::cases)
    }

    async fn list_obligations(
        &self,
        request: Request<pb::ListObligationsRequest>,
    ) -> Reply<pb::ListObligationsResponse> {
        let caller = caller(&request)?;
        let body = request.get_ref();
        let trial = Some(body.trial_id.as_str()).filter(|t| !t.is_empty());
        let result = self
            .service
            .list_obligations(&caller, trial, body.include_submitted)
            .await;
        reply(result, convert::obligations)
    }

    async fn record_submission(
        &self,
        request: Request<pb::RecordSubmissionRequest>,
    ) -> Reply<pb::Obligation> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let result = self
            .service
            .record_submission(&caller, convert::submission(body))
            .await;
        reply(result, convert::obligation)
    }

    async fn get_safety_summary(
        &self,
        request: Request<pb::GetSafetySummaryRequest>,
    ) -> Reply<pb::SafetySummary> {
        let caller = caller(&request)?;
        let result = self
            .service
            .safety_summary(&caller, &request.get_ref().trial_id)
            .await;
        reply(result, convert::summary)
    }

    async fn export_case(
        &self,
        request: Request<pb::ExportCaseRequest>,
    ) -> Reply<pb::ExportCaseResponse> {
        let caller = caller(&request)?;
        let body = request.get_ref();
        let result = self
            .service
            .export_case(&caller, &body.case_id, body.version)
            .await;
        reply(result, convert::exported)
    }
}
