//! The safety application: every operation authorises its [`Caller`]
//! itself, reads trial definitions through the [`TrialDefinitions`] port,
//! asks the blinding service for arms through the [`Blinding`] port, and
//! writes through the [`Store`]. Plain Rust: no tonic types.
//!
//! Masking: every role except `safety_officer` sees a settled potential
//! SUSAR as [`Classification::Assessed`], with no reason, day 0 or
//! obligations, and otherwise the same fields. Logs carry no subject id in
//! clear (only [`subject_tag`]), no arm and no outcome.

mod access;
mod classify;
mod model;
mod obligations;
mod report;
mod summary;
mod view;

#[cfg(test)]
pub(crate) mod tests;

use std::sync::Arc;

use async_trait::async_trait;
use equipoise_common::audit::AuditEntry;
use equipoise_common::auth::Caller;
use equipoise_common::time::format_rfc3339;
use equipoise_trial::TrialDefinition;
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

use crate::clocks::{self, Due};
use crate::e2b::{self, IcsrInput};
use crate::error::SafetyError;
use crate::store::Store;

pub use classify::{Timeline, potential_susar, timeline};
pub use model::{
    ArmSummary, CRITERIA, CaseReport, CaseReportInput, CaseView, Causality, Classification,
    CodedEvent, CriterionCount, ExportedCase, Obligation, Outcome, Reporter, SafetySummary,
    Seriousness, SubmissionInput,
};
pub use report::expectedness;

pub type Result<T> = std::result::Result<T, SafetyError>;

/// The service's clock, injectable for tests.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(Timestamp::now)
}

/// Whom exported ICSRs are addressed to: EudraVigilance's receiver id.
pub const E2B_RECEIVER: &str = "EVHUMAN";
/// Pending cases completed per retry round.
pub const RETRY_BATCH: u32 = 100;

// ----------------------------------------------------------------- ports

/// The arm a safety reveal returned. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct RevealedArm {
    pub arm_id: String,
    pub arm_label: String,
    /// False for placebo or sham.
    pub active: bool,
}

impl std::fmt::Debug for RevealedArm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevealedArm").finish_non_exhaustive()
    }
}

/// One subject's arm, for the DSMB's counts. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SubjectArm {
    pub subject_id: String,
    pub arm_id: String,
    pub arm_label: String,
}

impl std::fmt::Debug for SubjectArm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubjectArm").finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlindingError {
    /// Worth retrying later.
    #[error("the blinding service is unavailable: {0}")]
    Unavailable(String),
    /// The blinding service has no code for the subject.
    #[error("not found: {0}")]
    NotFound(String),
    /// The blinding service refused the safety service itself: a deployment
    /// fault (keys, identity).
    #[error("the blinding service refused: {0}")]
    Refused(String),
}

/// What the safety service needs from the blinding service, called as
/// `service:safety`.
#[async_trait]
pub trait Blinding: Send + Sync {
    async fn safety_reveal(
        &self,
        trial_id: &str,
        subject_id: &str,
        case_id: &str,
    ) -> std::result::Result<RevealedArm, BlindingError>;

    /// Subjects without a code are left out.
    async fn arms_for_dsmb(
        &self,
        trial_id: &str,
        subject_ids: &[String],
    ) -> std::result::Result<Vec<SubjectArm>, BlindingError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    #[error("no such trial")]
    NotFound,
    #[error("trial definitions are unavailable: {0}")]
    Unavailable(String),
}

/// Where the safety service reads trial definitions.
#[async_trait]
pub trait TrialDefinitions: Send + Sync {
    async fn definition(
        &self,
        trial_id: &str,
    ) -> std::result::Result<TrialDefinition, DefinitionError>;
}

/// Where the safety service checks that a reported subject was randomised,
/// and at which site (randomisation's `GetAllocation`, which has no arm).
#[async_trait]
pub trait Allocations: Send + Sync {
    /// `None`: no such allocation.
    async fn site_of(
        &self,
        trial_id: &str,
        subject_id: &str,
    ) -> std::result::Result<Option<String>, DefinitionError>;
}

/// The regulatory rules the service applies, as functions, so tests can
/// run the service before `clocks` and `e2b` are written
/// ([`Rules::regulatory`] is what production uses).
#[derive(Clone, Copy)]
pub struct Rules {
    pub is_late: fn(Timestamp, Timestamp) -> bool,
    pub initial_obligation: fn(Timestamp, bool, &TimeZone) -> Due,
    pub follow_up_obligation: fn(Timestamp, &TimeZone) -> Due,
    pub sponsor_zone: fn(&str) -> std::result::Result<TimeZone, String>,
    pub icsr_xml: fn(&IcsrInput) -> String,
}

impl Rules {
    /// `clocks` and `e2b`.
    pub fn regulatory() -> Self {
        Self {
            is_late: clocks::is_late,
            initial_obligation: clocks::initial_obligation,
            follow_up_obligation: clocks::follow_up_obligation,
            sponsor_zone: clocks::sponsor_zone,
            icsr_xml: e2b::icsr_xml,
        }
    }
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules").finish_non_exhaustive()
    }
}

// --------------------------------------------------------------- service

pub struct SafetyService {
    store: Arc<dyn Store>,
    blinding: Arc<dyn Blinding>,
    trials: Arc<dyn TrialDefinitions>,
    /// When set, a new report must name a subject randomised at its site.
    allocations: Option<Arc<dyn Allocations>>,
    clock: Clock,
    rules: Rules,
    sender_id: String,
}

impl SafetyService {
    pub fn new(
        store: Arc<dyn Store>,
        blinding: Arc<dyn Blinding>,
        trials: Arc<dyn TrialDefinitions>,
        clock: Clock,
        rules: Rules,
        sender_id: impl Into<String>,
    ) -> Self {
        Self {
            store,
            blinding,
            trials,
            allocations: None,
            clock,
            rules,
            sender_id: sender_id.into(),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// Checks new reports against randomisation's allocations.
    pub fn with_allocations(mut self, allocations: Arc<dyn Allocations>) -> Self {
        self.allocations = Some(allocations);
        self
    }

    /// A subject unknown to randomisation and one randomised at another site
    /// get the same answer, so a site never learns another site's subjects.
    async fn require_allocation_at_site(
        &self,
        trial_id: &str,
        site_id: &str,
        subject_id: &str,
    ) -> Result<()> {
        let Some(allocations) = &self.allocations else {
            return Ok(());
        };
        match allocations.site_of(trial_id, subject_id).await {
            Ok(Some(site)) if site == site_id => Ok(()),
            Ok(_) | Err(DefinitionError::NotFound) => Err(SafetyError::NotFound(format!(
                "no subject {subject_id} randomised at site {site_id} in trial {trial_id}"
            ))),
            Err(DefinitionError::Unavailable(reason)) => Err(SafetyError::unavailable(format!(
                "randomisation cannot confirm the subject now: {reason}"
            ))),
        }
    }

    async fn definition(&self, trial_id: &str) -> Result<TrialDefinition> {
        self.trials
            .definition(trial_id)
            .await
            .map_err(|error| match error {
                DefinitionError::NotFound => {
                    SafetyError::NotFound(format!("trial {trial_id} not found"))
                }
                DefinitionError::Unavailable(reason) => SafetyError::unavailable(format!(
                    "the definition of trial {trial_id} cannot be read now: {reason}"
                )),
            })
    }

    fn audit(
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

    /// An audit entry of the service itself (the classification retry).
    fn own_audit(&self, action: &str, entity: String) -> AuditEntry {
        AuditEntry {
            at: format_rfc3339(self.now()),
            actor: "service:safety".into(),
            role: "service:safety".into(),
            action: action.into(),
            entity,
            details: serde_json::json!({}),
        }
    }
}

/// A subject id as logs may carry it: the keyed tag every service uses,
/// of the id within its trial.
pub fn subject_tag(trial_id: &str, subject_id: &str) -> String {
    equipoise_common::telemetry::subject_tag(&format!("{trial_id}/{subject_id}"))
}

/// 16 random hex digits from the operating system.
fn random_hex16() -> Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)
        .map_err(|e| SafetyError::unavailable(format!("no randomness available: {e}")))?;
    Ok(hex::encode(bytes))
}

fn parse_time(text: &str, what: &str) -> Result<Timestamp> {
    text.parse()
        .map_err(|e| SafetyError::Internal(format!("stored {what} {text} is not a time: {e}")))
}

fn parse_date(text: &str, what: &str) -> Result<Date> {
    text.parse()
        .map_err(|e| SafetyError::Internal(format!("stored {what} {text} is not a date: {e}")))
}
