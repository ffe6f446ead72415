//! Step 7 of the allocation transaction (DESIGN §4): obtain the treatment
//! code from the blinding service, after the allocation has committed and
//! its lock is released, and record it beside the allocation.
//!
//! The blinding service is reached through the [`CodeIssuer`] port, so the
//! domain has no gRPC in it. Both `AssignCode` and [`Store::record_code`]
//! are idempotent per allocation, so a retried `Randomise`, the background
//! reconciler and other replicas may all complete the same code safely.
//!
//! [`Store::record_code`]: crate::store::Store::record_code

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use equipoise_common::audit::AuditEntry;
use equipoise_common::telemetry::metrics;
use equipoise_common::time::now_rfc3339;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{RandomisationService, log_tag};
use crate::error::RandomisationError;
use crate::store::{AllocationRecord, CodeRecorded, StoreError};

/// What the blinding service needs to assign a code to one allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRequest {
    pub trial_id: String,
    pub subject_id: String,
    pub site_id: String,
    pub arm_id: String,
    /// RFC 3339, UTC.
    pub randomised_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeIssueError {
    /// Unreachable, timed out or unavailable: try again later.
    #[error("the blinding service is unavailable: {0}")]
    Unavailable(String),
    /// The trial's code pool is empty; the message names the trial.
    #[error("{0}")]
    Exhausted(String),
    /// Any other refusal, e.g. the blinding service does not know the trial.
    #[error("the blinding service refused to assign a code: {0}")]
    Refused(String),
}

/// The port to the blinding service's `AssignCode`. Idempotent per
/// (trial, subject): the same allocation always gets the same code.
#[async_trait]
pub trait CodeIssuer: Send + Sync {
    async fn assign_code(&self, request: CodeRequest) -> Result<String, CodeIssueError>;
}

/// The actor recorded for codes the reconciler completes.
pub const RECONCILER_ACTOR: &str = "service:randomisation";

/// How long a caller should wait before retrying a pending code.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Who is completing a code, for the audit record.
pub(crate) struct CodeActor<'a> {
    pub actor: &'a str,
    pub role: String,
    pub source: &'static str,
}

/// What one reconciliation round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReconcileReport {
    pub completed: usize,
    /// Still without a code after the round.
    pub pending: usize,
}

impl RandomisationService {
    /// Obtains and records the code of a committed allocation. On failure
    /// the allocation stays committed and the error says so.
    pub(crate) async fn complete_code(
        &self,
        allocation: &AllocationRecord,
        by: &CodeActor<'_>,
    ) -> Result<String, RandomisationError> {
        let code = self
            .codes
            .assign_code(code_request(allocation))
            .await
            .map_err(|error| pending_code_error(allocation, error))?;
        self.record_code(allocation, &code, by).await?;
        Ok(code)
    }

    async fn record_code(
        &self,
        allocation: &AllocationRecord,
        code: &str,
        by: &CodeActor<'_>,
    ) -> Result<(), RandomisationError> {
        // No arm here: the trail can be exported to a blinded auditor.
        let audit = AuditEntry {
            at: now_rfc3339(),
            actor: by.actor.to_owned(),
            role: by.role.clone(),
            action: "allocation.code_recorded".into(),
            entity: format!(
                "allocation/{}/{}",
                allocation.trial_id, allocation.subject_id
            ),
            details: json!({
                "randomisation_number": allocation.randomisation_number,
                "treatment_code": code,
                "source": by.source,
            }),
        };
        match self
            .store
            .record_code(&allocation.trial_id, &allocation.subject_id, code, audit)
            .await
        {
            Ok(CodeRecorded::Recorded | CodeRecorded::AlreadyRecorded) => Ok(()),
            // AssignCode is idempotent, so a different code means the two
            // services disagree: an incident, not the caller's problem.
            Err(StoreError::Conflict(message)) => Err(RandomisationError::Internal(format!(
                "treatment code of {} in trial {} conflicts with the recorded one: {message}",
                log_tag(&allocation.trial_id, &allocation.subject_id),
                allocation.trial_id
            ))),
            Err(other) => Err(other.into()),
        }
    }

    /// One round of the reconciler: completes the codes of every allocation
    /// that has none, oldest first, `page` at a time. Once the blinding
    /// service is unavailable it only counts the rest, so `pending` is the
    /// whole backlog; it skips, for this round, a trial whose pool is empty
    /// or whose codes blinding refuses, and reads on past its allocations,
    /// so one such trial never holds up the others.
    pub async fn reconcile_codes(&self, page: u32) -> Result<ReconcileReport, RandomisationError> {
        let mut report = ReconcileReport {
            completed: 0,
            pending: 0,
        };
        let mut skipped_trials = BTreeSet::new();
        let mut blinding_unavailable = false;
        let mut after_sequence = 0;
        loop {
            let pending = self
                .store
                .allocations_without_code(after_sequence, page)
                .await?;
            let Some(last) = pending.last() else {
                return Ok(report);
            };
            after_sequence = last.sequence;
            report.pending += pending.len();
            for allocation in &pending {
                if blinding_unavailable || skipped_trials.contains(&allocation.trial_id) {
                    continue;
                }
                match self.complete_pending_code(allocation, &mut report).await? {
                    PendingOutcome::Completed => {}
                    PendingOutcome::SkipTrial => {
                        skipped_trials.insert(allocation.trial_id.clone());
                    }
                    PendingOutcome::StopRound => blinding_unavailable = true,
                }
            }
        }
    }

    async fn complete_pending_code(
        &self,
        allocation: &AllocationRecord,
        report: &mut ReconcileReport,
    ) -> Result<PendingOutcome, RandomisationError> {
        let by = CodeActor {
            actor: RECONCILER_ACTOR,
            role: RECONCILER_ACTOR.to_owned(),
            source: "reconciler",
        };
        // Logs carry the trial and a subject tag, never the code or the
        // blinding service's message (it may name the subject).
        let (trial, subject) = (
            &allocation.trial_id,
            log_tag(&allocation.trial_id, &allocation.subject_id),
        );
        let outcome = match self.codes.assign_code(code_request(allocation)).await {
            Ok(code) => {
                self.record_code(allocation, &code, &by).await?;
                report.completed += 1;
                report.pending -= 1;
                tracing::info!(%trial, %subject, "pending treatment code completed");
                PendingOutcome::Completed
            }
            Err(CodeIssueError::Unavailable(_)) => {
                tracing::warn!(%trial, %subject, "blinding service unavailable; treatment codes still pending");
                PendingOutcome::StopRound
            }
            Err(CodeIssueError::Exhausted(_)) => {
                tracing::warn!(%trial, "treatment-code pool exhausted; the trial's pending codes wait for a top-up");
                PendingOutcome::SkipTrial
            }
            Err(CodeIssueError::Refused(_)) => {
                tracing::warn!(%trial, %subject, "blinding service refused a pending treatment code; trial skipped this round");
                PendingOutcome::SkipTrial
            }
        };
        Ok(outcome)
    }
}

/// What one pending code's attempt means for the rest of the round.
enum PendingOutcome {
    Completed,
    SkipTrial,
    StopRound,
}

fn code_request(allocation: &AllocationRecord) -> CodeRequest {
    CodeRequest {
        trial_id: allocation.trial_id.clone(),
        subject_id: allocation.subject_id.clone(),
        site_id: allocation.site_id.clone(),
        arm_id: allocation.arm.clone(),
        randomised_at: allocation.randomised_at.clone(),
    }
}

/// The error for a committed allocation whose code could not be obtained.
/// It says the allocation is recorded, so no one randomises again.
fn pending_code_error(allocation: &AllocationRecord, error: CodeIssueError) -> RandomisationError {
    let recorded = format!(
        "the allocation of subject {} in trial {} is recorded (randomisation number {})",
        allocation.subject_id, allocation.trial_id, allocation.randomisation_number
    );
    match error {
        CodeIssueError::Unavailable(reason) => RandomisationError::Unavailable {
            message: format!(
                "{recorded} but its treatment code is pending: the blinding service is unavailable ({reason}); retry the same request to obtain the code"
            ),
            retry_after: Some(RETRY_AFTER),
        },
        CodeIssueError::Exhausted(reason) => RandomisationError::ResourceExhausted(format!(
            "{recorded} but no treatment code is left for trial {}: {reason}; the code is assigned once the pool is replenished",
            allocation.trial_id
        )),
        CodeIssueError::Refused(reason) => RandomisationError::FailedPrecondition(format!(
            "{recorded} but the blinding service refused its treatment code: {reason}"
        )),
    }
}

/// The background reconciler: completes pending codes every `interval`
/// until stopped.
pub struct CodeReconciler {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Allocations completed per round, so one round stays short.
pub const RECONCILE_BATCH: u32 = 100;

impl CodeReconciler {
    pub fn spawn(service: Arc<RandomisationService>, interval: Duration) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stopped.changed() => return,
                    () = tokio::time::sleep(interval) => {}
                }
                tokio::select! {
                    _ = stopped.changed() => return,
                    result = service.reconcile_codes(RECONCILE_BATCH) => {
                        match result {
                            Ok(report) => metrics::record_pending_codes(report.pending as u64),
                            Err(error) => tracing::warn!(%error, "treatment-code reconciliation failed"),
                        }
                    }
                }
            }
        });
        Self { stop, task }
    }

    /// Stops the reconciler, abandoning a round in progress: whatever it
    /// had not recorded is picked up again on the next start.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await
            && error.is_panic()
        {
            tracing::error!(%error, "treatment-code reconciler panicked");
        }
    }
}
