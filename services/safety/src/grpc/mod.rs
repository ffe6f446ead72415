//! The thin tonic layer: take the caller from the auth layer, convert, call
//! the domain, convert back. No decisions are made here.

pub mod blinding_client;
mod convert;
pub mod randomisation_client;
mod status;

use std::sync::Arc;

use equipoise_common::grpc::{Reply, caller, reply};
use equipoise_proto::safety::v1 as pb;
use pb::safety_service_server::SafetyService as SafetyApi;
use tonic::Request;

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

#[cfg(test)]
mod tests {
    //! The tonic layer end to end in-process: the caller from the request's
    //! extensions, conversions both ways, errors as statuses.

    use equipoise_common::auth::Caller;
    use tonic::Code;

    use super::*;
    use crate::service::tests::{
        fixture, investigator, medical_monitor, safety_officer, susar_report,
    };

    fn with_caller<T>(body: T, caller: Caller) -> Request<T> {
        let mut request = Request::new(body);
        request.extensions_mut().insert(caller);
        request
    }

    fn proto_report(subject: &str) -> pb::CaseReport {
        let report = susar_report(subject);
        let event = report.event.expect("event");
        let reporter = report.reporter.expect("reporter");
        pb::CaseReport {
            trial_id: report.trial_id,
            site_id: report.site_id,
            subject_id: report.subject_id,
            reporter: Some(pb::Reporter {
                name: reporter.name,
                qualification: reporter.qualification,
            }),
            suspect_product: report.suspect_product,
            event: Some(pb::CodedEvent {
                llt_code: event.llt_code,
                term: event.term,
                meddra_version: event.meddra_version,
            }),
            onset_date: report.onset_date,
            serious: true,
            seriousness: Some(pb::Seriousness {
                hospitalisation: true,
                ..pb::Seriousness::default()
            }),
            outcome: pb::Outcome::Recovering as i32,
            investigator_causality: pb::Causality::Related as i32,
            narrative: report.narrative,
            site_aware_at: report.site_aware_at.map(convert::proto_time),
        }
    }

    #[tokio::test]
    async fn a_report_round_trips_and_views_are_masked_by_role() {
        let f = fixture().await;
        f.allocate("RSP-200", true);
        let api = SafetyGrpc::new(Arc::clone(&f.service));
        let reported = api
            .report_case(with_caller(
                pb::ReportCaseRequest {
                    report: Some(proto_report("RSP-200")),
                },
                investigator("FR-MTP"),
            ))
            .await
            .expect("reported")
            .into_inner();
        assert_eq!(reported.version, 1);
        assert_eq!(reported.report, Some(proto_report("RSP-200")));
        assert_eq!(reported.classification, pb::Classification::Assessed as i32);
        assert!(reported.obligations.is_empty() && reported.day_zero.is_none());

        let get = |caller: Caller| {
            api.get_case(with_caller(
                pb::GetCaseRequest {
                    case_id: reported.case_id.clone(),
                    version: 0,
                },
                caller,
            ))
        };
        let unblinded = get(safety_officer()).await.expect("read").into_inner();
        assert_eq!(unblinded.classification, pb::Classification::Susar as i32);
        assert_eq!(unblinded.obligations.len(), 1);
        assert_eq!(
            unblinded.obligations[0].kind,
            pb::ObligationKind::Initial15Day as i32
        );
        assert_eq!(unblinded.obligations[0].due_date, "2026-12-06");
        assert!(unblinded.day_zero.is_some());
        let blinded = get(medical_monitor()).await.expect("read").into_inner();
        assert_eq!(blinded.classification, pb::Classification::Assessed as i32);

        let listed = api
            .list_obligations(with_caller(
                pb::ListObligationsRequest {
                    trial_id: String::new(),
                    include_submitted: false,
                },
                safety_officer(),
            ))
            .await
            .expect("list")
            .into_inner();
        assert_eq!(listed.obligations, unblinded.obligations);
    }

    #[tokio::test]
    async fn refusals_are_statuses_naming_the_field() {
        let f = fixture().await;
        let api = SafetyGrpc::new(Arc::clone(&f.service));
        let mut report = proto_report("RSP-201");
        report.outcome = 0;
        let refused = api
            .report_case(with_caller(
                pb::ReportCaseRequest {
                    report: Some(report),
                },
                investigator("FR-MTP"),
            ))
            .await
            .expect_err("no outcome");
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().contains("report.outcome"), "{refused:?}");
        let anonymous = api
            .list_cases(Request::new(pb::ListCasesRequest {
                trial_id: "RESPINE".into(),
            }))
            .await
            .expect_err("no caller");
        assert_eq!(anonymous.code(), Code::Unauthenticated);
    }
}
