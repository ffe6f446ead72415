//! The thin tonic layer: take the caller from the auth layer, convert, call
//! the domain, convert back. No decisions are made here.

mod convert;
pub mod randomisation_client;
mod status;

use std::pin::Pin;
use std::sync::Arc;

use equipoise_common::grpc::status::to_status;
use equipoise_common::grpc::{Reply, caller, reply};
use equipoise_proto::blinding::v1 as pb;
use pb::blinding_service_server::BlindingService as BlindingApi;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::service::{BlindingService, WatchScope};
pub use pb::blinding_service_server::BlindingServiceServer;

pub struct BlindingGrpc {
    service: Arc<BlindingService>,
}

impl BlindingGrpc {
    pub fn new(service: Arc<BlindingService>) -> Self {
        Self { service }
    }
}

type NotificationStream =
    Pin<Box<dyn Stream<Item = Result<pb::UnblindingNotification, Status>> + Send>>;

#[tonic::async_trait]
impl BlindingApi for BlindingGrpc {
    async fn assign_code(
        &self,
        request: Request<pb::AssignCodeRequest>,
    ) -> Reply<pb::AssignCodeResponse> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let result = self
            .service
            .assign_code(
                &caller,
                &body.trial_id,
                &body.subject_id,
                &body.site_id,
                &body.arm_id,
                convert::timestamp(body.randomised_at),
            )
            .await;
        reply(result, convert::assigned)
    }

    async fn upload_codes(
        &self,
        request: Request<pb::UploadCodesRequest>,
    ) -> Reply<pb::UploadCodesResponse> {
        let caller = caller(&request)?;
        let body = request.get_ref();
        let result = self
            .service
            .upload_codes(&caller, &body.trial_id, &body.csv)
            .await;
        reply(result, convert::uploaded)
    }

    async fn get_blinding_status(
        &self,
        request: Request<pb::GetBlindingStatusRequest>,
    ) -> Reply<pb::BlindingStatus> {
        let caller = caller(&request)?;
        let result = self
            .service
            .blinding_status(&caller, &request.get_ref().trial_id)
            .await;
        reply(result, convert::status)
    }

    async fn get_subject_blinding(
        &self,
        request: Request<pb::GetSubjectBlindingRequest>,
    ) -> Reply<pb::SubjectBlinding> {
        let caller = caller(&request)?;
        let body = request.get_ref();
        let result = self
            .service
            .subject_blinding(&caller, &body.trial_id, &body.subject_id)
            .await;
        reply(result, convert::subject)
    }

    async fn get_preparation_instruction(
        &self,
        request: Request<pb::GetPreparationInstructionRequest>,
    ) -> Reply<pb::PreparationInstruction> {
        let caller = caller(&request)?;
        let body = request.get_ref();
        let result = self
            .service
            .preparation_instruction(&caller, &body.trial_id, &body.code)
            .await;
        reply(result, convert::instruction)
    }

    async fn record_given_treatment(
        &self,
        request: Request<pb::RecordGivenTreatmentRequest>,
    ) -> Reply<pb::PeriodRecord> {
        let caller = caller(&request)?;
        let body = request.get_ref();
        let result = self
            .service
            .record_given_treatment(
                &caller,
                &body.trial_id,
                &body.subject_id,
                &body.period_id,
                &body.given_arm_id,
                &body.note,
            )
            .await;
        reply(result, convert::period_record)
    }

    async fn emergency_unblind(
        &self,
        request: Request<pb::EmergencyUnblindRequest>,
    ) -> Reply<pb::Reveal> {
        let caller = caller(&request)?;
        let body = request.get_ref();
        let result = self
            .service
            .emergency_unblind(
                &caller,
                &body.trial_id,
                &body.subject_ids,
                convert::reason_category(body.reason_category),
                &body.reason,
            )
            .await;
        reply(result, convert::reveal)
    }

    async fn safety_reveal(
        &self,
        request: Request<pb::SafetyRevealRequest>,
    ) -> Reply<pb::SafetyRevealResponse> {
        let caller = caller(&request)?;
        let body = request.get_ref();
        let result = self
            .service
            .safety_reveal(&caller, &body.trial_id, &body.subject_id, &body.case_id)
            .await;
        reply(result, convert::safety)
    }

    async fn get_arms_for_dsmb(
        &self,
        request: Request<pb::GetArmsForDsmbRequest>,
    ) -> Reply<pb::GetArmsForDsmbResponse> {
        let caller = caller(&request)?;
        let body = request.get_ref();
        let result = self
            .service
            .arms_for_dsmb(&caller, &body.trial_id, &body.subject_ids)
            .await;
        reply(result, convert::dsmb_arms)
    }

    async fn planned_period_reveal(
        &self,
        request: Request<pb::PlannedPeriodRevealRequest>,
    ) -> Reply<pb::Reveal> {
        let caller = caller(&request)?;
        let body = request.get_ref();
        let result = self
            .service
            .planned_period_reveal(&caller, &body.trial_id, &body.subject_id, &body.period_id)
            .await;
        reply(result, convert::reveal)
    }

    type WatchUnblindingsStream = NotificationStream;

    /// The backlog after the cursor in cursor order, then live: read again
    /// whenever this process writes a notification, and every
    /// `blinding.watch_poll_ms` for other replicas' writes. Ends when the
    /// client goes or the service shuts down.
    async fn watch_unblindings(
        &self,
        request: Request<pb::WatchUnblindingsRequest>,
    ) -> Reply<Self::WatchUnblindingsStream> {
        let caller = caller(&request)?;
        let body = request.into_inner();
        let scope = self
            .service
            .watch_scope(&caller, &body.trial_id)
            .map_err(to_status)?;
        let (sender, receiver) = mpsc::channel(64);
        tokio::spawn(pump(
            Arc::clone(&self.service),
            scope,
            body.after_cursor,
            sender,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

type Sender = mpsc::Sender<Result<pb::UnblindingNotification, Status>>;

async fn pump(service: Arc<BlindingService>, scope: WatchScope, after_cursor: u64, sender: Sender) {
    let notify = service.notified();
    let poll = service.watch_poll();
    let mut shutdown = service.shutdown_signal();
    let mut cursor = after_cursor;
    loop {
        if *shutdown.borrow() {
            return;
        }
        // Registered before the read, so a write between the read and the
        // wait still wakes this watcher.
        let woken = notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        match service.notifications_after(&scope, cursor).await {
            Ok(batch) => {
                for notification in batch.visible {
                    if sender
                        .send(Ok(convert::notification(notification)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                cursor = batch.next_cursor;
                if batch.more {
                    continue;
                }
            }
            Err(error) => {
                let _ = sender.send(Err(to_status(error))).await;
                return;
            }
        }
        tokio::select! {
            () = &mut woken => {}
            () = tokio::time::sleep(poll) => {}
            () = sender.closed() => return,
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The watch stream over a real store: backlog, then live, resumable,
    //! ending when the service shuts down. Timeouts only guard against a
    //! hang; nothing asserts how fast anything is.

    use std::collections::BTreeSet;
    use std::time::Duration;

    use equipoise_common::auth::Caller;

    use async_trait::async_trait;
    use equipoise_common::audit::AuditEntry;
    use equipoise_common::auth::{Role, TrialScope};
    use tokio_stream::StreamExt;

    use super::*;
    use crate::codes::LowPoolRule;
    use crate::service::{
        AllocatedArm, LookupError, RandomisationLookup, TrialForBlinding, system_clock,
    };
    use crate::store::sqlite::SqliteStore;
    use crate::store::{NewReveal, RevealKind, Store};

    struct Unreachable;

    #[async_trait]
    impl RandomisationLookup for Unreachable {
        async fn trial_for_blinding(&self, _: &str) -> Result<TrialForBlinding, LookupError> {
            Err(LookupError::Unavailable("not needed".into()))
        }

        async fn look_up_allocation(
            &self,
            _: &str,
            _: &str,
        ) -> Result<Option<AllocatedArm>, LookupError> {
            Err(LookupError::Unavailable("not needed".into()))
        }
    }

    fn caller(role: Role, sites: &[&str]) -> Caller {
        Caller {
            subject: "watcher".into(),
            display_name: "Watcher".into(),
            roles: [role].into_iter().collect(),
            sites: sites
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<BTreeSet<_>>(),
            trials: TrialScope::All,
            auth_time: None,
        }
    }

    async fn reveal(store: &dyn Store, subject: &str, site: &str) -> u64 {
        let reveal = NewReveal {
            kind: RevealKind::Emergency,
            trial_id: "T".into(),
            subject_id: subject.into(),
            site_id: site.into(),
            arm_id: "A".into(),
            reason_category: Some("pregnancy".into()),
            reason: Some("r".into()),
            case_id: None,
            period_id: None,
            withdraws: false,
        };
        let entry = AuditEntry {
            at: equipoise_common::time::now_rfc3339(),
            actor: "desk".into(),
            role: "emergency_desk".into(),
            action: "reveal.emergency".into(),
            entity: "trial/T".into(),
            details: serde_json::json!({ "subject": subject }),
        };
        store
            .record_reveal(reveal, entry)
            .await
            .expect("reveal")
            .audit_seq
    }

    fn watch_request(
        caller: Option<Caller>,
        after_cursor: u64,
    ) -> Request<pb::WatchUnblindingsRequest> {
        let mut request = Request::new(pb::WatchUnblindingsRequest {
            trial_id: "T".into(),
            after_cursor,
        });
        if let Some(caller) = caller {
            request.extensions_mut().insert(caller);
        }
        request
    }

    async fn next(stream: &mut NotificationStream) -> Option<pb::UnblindingNotification> {
        tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("the stream answers")
            .map(|item| item.expect("a notification"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_watch_sends_the_backlog_then_live_and_resumes_after_a_cursor() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.expect("store"));
        let service = Arc::new(
            BlindingService::new(
                Arc::clone(&store),
                Arc::new(Unreachable),
                system_clock(),
                LowPoolRule {
                    warn_at_fraction: 0.1,
                    warn_at_count: 1,
                },
            )
            .with_watch_poll(Duration::from_millis(10)),
        );
        let grpc = BlindingGrpc::new(Arc::clone(&service));
        let first = reveal(&*store, "S1", "SITE-A").await;
        reveal(&*store, "S2", "SITE-B").await;

        let sponsor = caller(Role::TrialAdmin, &[]);
        let mut all = grpc
            .watch_unblindings(watch_request(Some(sponsor.clone()), 0))
            .await
            .expect("watch")
            .into_inner();
        let mut site = grpc
            .watch_unblindings(watch_request(
                Some(caller(Role::SiteInvestigator, &["SITE-A"])),
                0,
            ))
            .await
            .expect("watch")
            .into_inner();
        assert_eq!(next(&mut all).await.map(|n| n.cursor), Some(first));
        assert_eq!(
            next(&mut all).await.map(|n| n.subject_id),
            Some("S2".into())
        );
        assert_eq!(
            next(&mut site).await.map(|n| n.subject_id),
            Some("S1".into())
        );

        let live = reveal(&*store, "S3", "SITE-A").await;
        assert_eq!(next(&mut all).await.map(|n| n.cursor), Some(live));
        assert_eq!(
            next(&mut site).await.map(|n| n.cursor),
            Some(live),
            "SITE-B's S2 skipped"
        );

        let mut resumed = grpc
            .watch_unblindings(watch_request(Some(sponsor), first))
            .await
            .expect("watch")
            .into_inner();
        assert_eq!(
            next(&mut resumed).await.map(|n| n.subject_id),
            Some("S2".into())
        );
        assert_eq!(
            next(&mut resumed).await.map(|n| n.subject_id),
            Some("S3".into())
        );

        service.shut_down();
        for stream in [&mut all, &mut site, &mut resumed] {
            assert_eq!(next(stream).await, None, "the stream ends on shutdown");
        }
    }

    #[tokio::test]
    async fn the_watch_refuses_preparers_and_unauthenticated_calls() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.expect("store"));
        let service = BlindingService::new(
            store,
            Arc::new(Unreachable),
            system_clock(),
            LowPoolRule {
                warn_at_fraction: 0.1,
                warn_at_count: 1,
            },
        );
        let grpc = BlindingGrpc::new(Arc::new(service));
        let refused = grpc
            .watch_unblindings(watch_request(Some(caller(Role::UnblindedPreparer, &[])), 0))
            .await
            .err()
            .map(|s| s.code());
        assert_eq!(refused, Some(tonic::Code::PermissionDenied));
        let anonymous = grpc
            .watch_unblindings(watch_request(None, 0))
            .await
            .err()
            .map(|s| s.code());
        assert_eq!(anonymous, Some(tonic::Code::Unauthenticated));
    }

    fn dsmb_request(caller: Option<Caller>, subjects: usize) -> Request<pb::GetArmsForDsmbRequest> {
        let mut request = Request::new(pb::GetArmsForDsmbRequest {
            trial_id: "T".into(),
            subject_ids: (0..subjects).map(|i| format!("S{i}")).collect(),
        });
        if let Some(caller) = caller {
            request.extensions_mut().insert(caller);
        }
        request
    }

    #[tokio::test]
    async fn dsmb_arms_map_refusals_to_their_status() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.expect("store"));
        let service = BlindingService::new(
            store,
            Arc::new(Unreachable),
            system_clock(),
            LowPoolRule {
                warn_at_fraction: 0.1,
                warn_at_count: 1,
            },
        );
        let grpc = BlindingGrpc::new(Arc::new(service));
        let code = |result: Reply<pb::GetArmsForDsmbResponse>| result.err().map(|s| s.code());
        let safety = caller(Role::Service("safety".into()), &[]);
        assert_eq!(
            code(grpc.get_arms_for_dsmb(dsmb_request(None, 1)).await),
            Some(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            code(
                grpc.get_arms_for_dsmb(dsmb_request(Some(caller(Role::Dsmb, &[])), 1))
                    .await
            ),
            Some(tonic::Code::PermissionDenied)
        );
        assert_eq!(
            code(
                grpc.get_arms_for_dsmb(dsmb_request(Some(safety.clone()), 10_001))
                    .await
            ),
            Some(tonic::Code::InvalidArgument)
        );
        assert_eq!(
            code(grpc.get_arms_for_dsmb(dsmb_request(Some(safety), 2)).await),
            Some(tonic::Code::Unavailable),
            "no definition while randomisation is down and none is stored"
        );
    }
}
