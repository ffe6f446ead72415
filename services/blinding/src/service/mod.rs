//! The blinding application: every operation authorises its [`Caller`]
//! itself, reads the trial definition through the [`RandomisationLookup`]
//! port (falling back on the stored snapshot while randomisation is down),
//! and writes through the [`Store`]. Plain Rust: no tonic types.
//!
//! Masking: values that carry an arm ([`Reveal`], [`PreparationInstruction`],
//! [`SafetyReveal`], the arms of [`PeriodView`]) are returned only to the one
//! requester an operation names. Logs never carry an arm, a label or a code.

mod access;
mod codes;
mod reveals;
mod view;
mod watch;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use equipoise_common::audit::AuditEntry;
use equipoise_common::auth::Caller;
use equipoise_common::time::format_rfc3339;
use equipoise_trial::{TrialDefinition, parse_definition};
use serde_json::json;
use tokio::sync::{Notify, watch as signal};

use crate::codes::LowPoolRule;
use crate::error::BlindingError;
use crate::store::{DefinitionSnapshot, Store};

pub use codes::{AssignedCode, BlindingStatus, UploadSummary};
pub use reveals::{
    MAX_DSMB_SUBJECTS, PreparationInstruction, ReasonCategory, Reveal, SafetyReveal, SubjectArm,
};
pub use view::{BlindingState, PeriodView, RevealEvent, SubjectBlinding};
pub use watch::{NotificationBatch, WatchScope};

pub type Result<T> = std::result::Result<T, BlindingError>;

/// The service's clock, injectable for tests.
pub type Clock = Arc<dyn Fn() -> jiff::Timestamp + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(jiff::Timestamp::now)
}

/// The longest free-text reason an emergency unblinding may carry.
pub const MAX_REASON_CHARS: usize = 2_000;
/// A reason a reviewer can act on: "SAE" or "urgent" alone says nothing
/// about why the arm was needed.
pub const MIN_REASON_CHARS: usize = 10;
/// The longest note a period record may carry.
pub const MAX_NOTE_CHARS: usize = 2_000;
/// Notifications read from the store per poll.
pub const NOTIFICATION_BATCH: u32 = 500;

// ----------------------------------------------------------------- ports

/// The lifecycle state of a trial, as randomisation reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrialState {
    Draft,
    Active,
    Closed,
    Unspecified,
}

/// What randomisation's `GetTrialForBlinding` returns.
#[derive(Clone, PartialEq, Eq)]
pub struct TrialForBlinding {
    pub trial_id: String,
    pub version: u32,
    pub state: TrialState,
    pub definition_yaml: String,
    /// Derived one-way from the sealed master seed; never logged.
    pub code_seed: [u8; 32],
}

impl std::fmt::Debug for TrialForBlinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrialForBlinding")
            .field("trial_id", &self.trial_id)
            .field("version", &self.version)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// One allocation as randomisation's `LookUpAllocation` returns it.
#[derive(Clone, PartialEq, Eq)]
pub struct AllocatedArm {
    pub trial_id: String,
    pub subject_id: String,
    pub site_id: String,
    pub arm_id: String,
    pub randomised_at: Option<jiff::Timestamp>,
    pub randomised_in_error: bool,
}

/// Never prints the arm.
impl std::fmt::Debug for AllocatedArm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AllocatedArm")
            .field("trial_id", &self.trial_id)
            .field("subject_id", &self.subject_id)
            .field("site_id", &self.site_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("not found")]
    NotFound,
    #[error("randomisation is unavailable: {0}")]
    Unavailable(String),
    /// Randomisation refused the blinding service itself: a deployment
    /// fault (keys, identity), not the caller's.
    #[error("randomisation refused the blinding service: {0}")]
    Refused(String),
}

/// What the blinding service needs from randomisation.
#[async_trait]
pub trait RandomisationLookup: Send + Sync {
    async fn trial_for_blinding(
        &self,
        trial_id: &str,
    ) -> std::result::Result<TrialForBlinding, LookupError>;

    /// `None` when randomisation has no such allocation.
    async fn look_up_allocation(
        &self,
        trial_id: &str,
        subject_id: &str,
    ) -> std::result::Result<Option<AllocatedArm>, LookupError>;
}

// --------------------------------------------------------------- service

pub struct BlindingService {
    store: Arc<dyn Store>,
    randomisation: Arc<dyn RandomisationLookup>,
    clock: Clock,
    low_pool: LowPoolRule,
    /// Woken after every notification this process writes, so local
    /// watchers need not wait for their next poll.
    notified: Arc<Notify>,
    watch_poll: Duration,
    shutdown: signal::Sender<bool>,
    /// Held while a trial's pools are generated, so concurrent first calls
    /// (a burst of Randomise at go-live) wait for one generation instead of
    /// each drawing and inserting the whole pool. Generation is once per
    /// trial, so one lock for all trials costs nothing.
    pool_generation: Arc<tokio::sync::Mutex<()>>,
}

impl BlindingService {
    pub fn new(
        store: Arc<dyn Store>,
        randomisation: Arc<dyn RandomisationLookup>,
        clock: Clock,
        low_pool: LowPoolRule,
    ) -> Self {
        Self {
            store,
            randomisation,
            clock,
            low_pool,
            notified: Arc::new(Notify::new()),
            watch_poll: Duration::from_millis(250),
            shutdown: signal::channel(false).0,
            pool_generation: Arc::default(),
        }
    }

    /// How often a watch stream reads the outbox when nothing woke it.
    pub fn with_watch_poll(mut self, poll: Duration) -> Self {
        self.watch_poll = poll;
        self
    }

    pub fn watch_poll(&self) -> Duration {
        self.watch_poll
    }

    /// Ends every watch stream (the server is shutting down).
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// Changes to `true` when [`shut_down`](Self::shut_down) is called.
    pub fn shutdown_signal(&self) -> signal::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn now(&self) -> jiff::Timestamp {
        (self.clock)()
    }

    fn entry(
        &self,
        caller: &Caller,
        action: &str,
        entity: String,
        details: serde_json::Value,
    ) -> AuditEntry {
        AuditEntry {
            at: format_rfc3339(self.now()),
            actor: caller.subject.clone(),
            role: caller.role_label(),
            action: action.into(),
            entity,
            details,
        }
    }

    /// Audits a refused reveal. The refusal itself is what the caller gets;
    /// a failure to audit it is logged, not returned instead.
    async fn audit_refusal(
        &self,
        caller: &Caller,
        trial_id: &str,
        kind: &str,
        details: serde_json::Value,
        refusal: BlindingError,
    ) -> BlindingError {
        let mut details = details;
        if let Some(object) = details.as_object_mut() {
            object.insert("kind".into(), kind.into());
            object.insert("refusal".into(), refusal.to_string().into());
        }
        let entry = self.entry(
            caller,
            "reveal.refused",
            format!("trial/{trial_id}"),
            details,
        );
        if let Err(error) = self.store.append_audit(entry).await {
            tracing::error!(trial_id, %error, "could not audit a refused reveal");
        }
        refusal
    }

    /// The trial's definition: fetched from randomisation (refreshing the
    /// stored snapshot when it is newer), or the stored snapshot while
    /// randomisation is unreachable.
    async fn definition(&self, caller: &Caller, trial_id: &str) -> Result<TrialDefinition> {
        match self.randomisation.trial_for_blinding(trial_id).await {
            Ok(fetched) => {
                let trial = parse(&fetched.definition_yaml)?;
                self.refresh_snapshot(caller, trial_id, &fetched, &trial)
                    .await;
                Ok(trial)
            }
            Err(LookupError::NotFound) => Err(unknown_trial(trial_id)),
            Err(LookupError::Unavailable(reason)) => match self.store.definition(trial_id).await? {
                Some(snapshot) => {
                    tracing::warn!(trial_id, %reason, "randomisation unreachable; using the stored definition");
                    stored_definition(trial_id, &snapshot)
                }
                None => Err(BlindingError::unavailable(format!(
                    "the trial definition of {trial_id} cannot be read now: {reason}"
                ))),
            },
            Err(LookupError::Refused(reason)) => Err(BlindingError::Internal(format!(
                "randomisation refused the blinding service: {reason}"
            ))),
        }
    }

    async fn refresh_snapshot(
        &self,
        caller: &Caller,
        trial_id: &str,
        fetched: &TrialForBlinding,
        trial: &TrialDefinition,
    ) {
        let stored = match self.store.definition(trial_id).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(trial_id, %error, "could not read the definition snapshot");
                return;
            }
        };
        if stored.version >= fetched.version {
            return;
        }
        let snapshot = DefinitionSnapshot {
            version: fetched.version,
            definition_yaml: fetched.definition_yaml.clone(),
            definition_sha256: trial.canonical_sha256(),
        };
        let entry = self.entry(
            caller,
            "definition.refreshed",
            format!("trial/{trial_id}"),
            json!({ "version": fetched.version, "previous_version": stored.version }),
        );
        if let Err(error) = self
            .store
            .refresh_definition(trial_id, &snapshot, entry)
            .await
        {
            tracing::warn!(trial_id, %error, "could not refresh the definition snapshot");
        }
    }
}

/// The stored snapshot, re-hashed: one edited in the table (its text no
/// longer what was stored with its hash) is refused, never obeyed.
fn stored_definition(trial_id: &str, snapshot: &DefinitionSnapshot) -> Result<TrialDefinition> {
    let trial = parse(&snapshot.definition_yaml)?;
    if !snapshot.definition_sha256.is_empty()
        && trial.canonical_sha256() != snapshot.definition_sha256
    {
        tracing::error!(
            trial_id,
            "the stored definition snapshot does not match its hash"
        );
        return Err(BlindingError::Internal(format!(
            "the stored definition snapshot of {trial_id} does not match its hash"
        )));
    }
    Ok(trial)
}

fn parse(yaml: &str) -> Result<TrialDefinition> {
    parse_definition(yaml).map_err(|problems| {
        BlindingError::Internal(format!(
            "stored trial definition does not parse: {problems:?}"
        ))
    })
}

fn unknown_trial(trial_id: &str) -> BlindingError {
    BlindingError::NotFound(format!("trial {trial_id} not found"))
}

/// The one answer for an unknown subject and for another site's subject.
fn unknown_subject(trial_id: &str, subject_id: &str) -> BlindingError {
    BlindingError::NotFound(format!(
        "subject {subject_id} not found in trial {trial_id}"
    ))
}

fn required(path: &str, value: &str, problems: &mut Vec<equipoise_trial::Problem>) {
    if value.trim().is_empty() {
        problems.push(equipoise_trial::Problem {
            path: path.into(),
            message: "is required".into(),
        });
    }
}

/// The request's trial id, checked for its form before the caller's trial
/// scope, so no unbounded text reaches a lookup or a message.
fn require_trial_id(caller: &Caller, trial_id: &str) -> Result<()> {
    let mut problems = Vec::new();
    identifier("trial_id", trial_id, &mut problems);
    invalid_if_any(problems)?;
    access::require_trial(caller, trial_id)
}

/// The longest identifier (subject, code, case, period, arm) a request
/// may carry.
pub const MAX_IDENTIFIER_CHARS: usize = 64;

/// An identifier from a caller, checked before it reaches the immutable
/// audit trail or a lookup: 1-64 letters, digits, '.', '_', ':' or '-'
/// (randomisation's subject ids, the trial's arm and period ids and every
/// code format fit).
fn identifier(path: &str, value: &str, problems: &mut Vec<equipoise_trial::Problem>) {
    if value.trim().is_empty() {
        return required(path, value, problems);
    }
    let ok = value.len() <= MAX_IDENTIFIER_CHARS
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
    if !ok {
        problems.push(equipoise_trial::Problem {
            path: path.into(),
            message: format!(
                "must be 1-{MAX_IDENTIFIER_CHARS} letters, digits, '.', '_', ':' or '-'"
            ),
        });
    }
}

/// The answer for a subject whose allocation cannot be read now, and for
/// one outside the caller's sites while randomisation is down.
fn allocation_unavailable(reason: &str) -> BlindingError {
    BlindingError::unavailable(format!("the allocation cannot be read now: {reason}"))
}

fn invalid_if_any(problems: Vec<equipoise_trial::Problem>) -> Result<()> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(BlindingError::InvalidArgument(problems))
    }
}
