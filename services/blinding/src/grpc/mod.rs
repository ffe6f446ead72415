//! The thin tonic layer: take the caller from the auth layer, convert, call
//! the domain, convert back. No decisions are made here.

mod convert;

use std::pin::Pin;
use std::sync::Arc;

use equipoise_common::auth::Caller;
use equipoise_common::grpc::status::to_status;
use equipoise_proto::blinding::v1 as pb;
use pb::blinding_service_server::BlindingService as BlindingApi;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::error::BlindingError;
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

fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no authenticated caller"))
}

type Reply<T> = Result<Response<T>, Status>;

fn reply<T, U>(result: Result<T, BlindingError>, convert: impl FnOnce(T) -> U) -> Reply<U> {
    result
        .map(|value| Response::new(convert(value)))
        .map_err(to_status)
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
