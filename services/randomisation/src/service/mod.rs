//! The randomisation application: each public method is one use case,
//! taking an authenticated [`Caller`] and plain domain values. No gRPC here.

pub mod access;
mod allocate;
mod audit_export;
mod blinding_support;
pub mod codes;
mod concealed;
pub mod faults;
mod lifecycle;
mod progress;
mod records;
mod simulate;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use equipoise_common::audit::AuditEntry;
use equipoise_common::auth::Caller;
use equipoise_common::time::now_rfc3339;

use crate::error::RandomisationError;
use crate::lock::AllocationLocks;
use crate::seal::Sealer;
use crate::store::{Store, TrialRecord};
use equipoise_trial::{Problem, TrialDefinition, parse_definition};

pub use allocate::{RandomiseCommand, RandomiseOutcome};
pub use audit_export::{BlindedRecord, EXPORT_PAGE, blinded};
pub use blinding_support::{AllocatedArm, CODE_SEED_STREAM, TrialForBlinding, code_seed};
pub use codes::{CodeIssueError, CodeIssuer, CodeReconciler, CodeRequest, ReconcileReport};
pub use lifecycle::{ListUpload, TrialView};
pub use records::{AllocationFilter, AllocationPage, MAX_PAGE_SIZE, StatusView};
pub use simulate::{SimulateCommand, SimulationDesign};

/// Limits on what one request may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_simulated_allocations: u64,
    /// Simulations computing at once; more are refused, not queued, so a
    /// burst cannot take every core from allocation.
    pub max_concurrent_simulations: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_simulated_allocations: 20_000_000,
            max_concurrent_simulations: 2,
        }
    }
}

pub struct RandomisationService {
    store: Arc<dyn Store>,
    locks: Arc<dyn AllocationLocks>,
    sealer: Sealer,
    limits: Limits,
    /// The blinding service's `AssignCode`, behind a port.
    codes: Arc<dyn codes::CodeIssuer>,
    faults: faults::Faults,
    /// Parsed definitions by their hash: a frozen design never changes.
    definitions: RwLock<HashMap<String, Arc<TrialDefinition>>>,
    /// One permit per simulation allowed to compute at once.
    simulations: Arc<tokio::sync::Semaphore>,
    /// Sequence streams and minimisation margins as far as they were
    /// computed, so an allocation does not start again from position 0.
    sequences: progress::SequenceProgress,
    margins: progress::MarginProgress,
}

/// A stored trial with its parsed definition.
pub(crate) struct LoadedTrial {
    pub record: TrialRecord,
    pub definition: Arc<TrialDefinition>,
}

impl RandomisationService {
    pub fn new(
        store: Arc<dyn Store>,
        locks: Arc<dyn AllocationLocks>,
        sealer: Sealer,
        limits: Limits,
        codes: Arc<dyn codes::CodeIssuer>,
    ) -> Self {
        let simulations = Arc::new(tokio::sync::Semaphore::new(
            limits.max_concurrent_simulations as usize,
        ));
        Self {
            store,
            locks,
            sealer,
            limits,
            simulations,
            codes,
            faults: faults::Faults::default(),
            definitions: RwLock::new(HashMap::new()),
            sequences: progress::SequenceProgress::new(),
            margins: progress::MarginProgress::new(),
        }
    }

    /// Pauses for fault tests; inert unless built with `fault-injection`.
    pub fn with_faults(mut self, faults: faults::Faults) -> Self {
        self.faults = faults;
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The trial, or NOT_FOUND. Callers authorise before calling this.
    pub(crate) async fn load_trial(
        &self,
        trial_id: &str,
    ) -> Result<LoadedTrial, RandomisationError> {
        // Bounded before it is echoed in a NOT_FOUND or reaches the store.
        check_identifier("trial_id", trial_id)?;
        let record = self
            .store
            .trial(trial_id)
            .await?
            .ok_or_else(|| RandomisationError::NotFound(format!("trial {trial_id}")))?;
        let definition = self.definition_of(&record)?;
        Ok(LoadedTrial { record, definition })
    }

    fn definition_of(
        &self,
        record: &TrialRecord,
    ) -> Result<Arc<TrialDefinition>, RandomisationError> {
        let cached = self
            .definitions
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&record.definition_sha256)
            .cloned();
        if let Some(definition) = cached {
            return Ok(definition);
        }
        // A stored definition was valid when registered; failing now means
        // the binary's format changed underneath it.
        let definition = parse_definition(&record.definition_yaml)
            .map(Arc::new)
            .map_err(|problems| {
                RandomisationError::Internal(format!(
                    "stored definition of {} no longer parses: {:?}",
                    record.trial_id, problems.0
                ))
            })?;
        check_stored_hash(record, &definition)?;
        self.definitions
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(record.definition_sha256.clone(), definition.clone());
        Ok(definition)
    }
}

/// A stored definition must still hash to the hash recorded beside it: a
/// row edited in the database, behind the service, never allocates.
fn check_stored_hash(
    record: &TrialRecord,
    definition: &TrialDefinition,
) -> Result<(), RandomisationError> {
    let computed = definition.canonical_sha256();
    if computed == record.definition_sha256 {
        return Ok(());
    }
    tracing::error!(
        trial_id = %record.trial_id,
        recorded = %record.definition_sha256,
        %computed,
        "stored definition does not match its recorded hash; refusing to use it"
    );
    Err(RandomisationError::Internal(format!(
        "stored definition of {} hashes to {computed}, not the recorded {}: changed outside the service",
        record.trial_id, record.definition_sha256
    )))
}

/// Parses a definition sent in a request; every problem's path is prefixed
/// with the request field.
pub(crate) fn parse_submitted_definition(
    yaml: &str,
) -> Result<TrialDefinition, RandomisationError> {
    parse_definition(yaml).map_err(|problems| {
        RandomisationError::InvalidArgument(
            problems
                .0
                .into_iter()
                .map(|p| Problem {
                    path: format!("definition_yaml: {}", p.path),
                    message: p.message,
                })
                .collect(),
        )
    })
}

/// An audit entry for `caller` doing `action` on `entity`, now.
pub(crate) fn audit_entry(
    caller: &Caller,
    action: &str,
    entity: String,
    details: serde_json::Value,
) -> AuditEntry {
    AuditEntry {
        at: now_rfc3339(),
        actor: caller.subject.clone(),
        role: caller.role_label(),
        action: action.to_owned(),
        entity,
        details,
    }
}

/// A keyed tag for logs: subject identifiers never appear in logs or spans
/// in clear, nor in a form anyone could recompute from a guessed id.
pub(crate) fn log_tag(trial_id: &str, subject_id: &str) -> String {
    // The same tag the safety service logs for this subject.
    equipoise_common::telemetry::subject_tag(&format!("{trial_id}/{subject_id}"))
}

/// Identifiers from callers: printable, short, no separators that could
/// confuse stored keys.
pub(crate) fn check_identifier(path: &str, value: &str) -> Result<(), RandomisationError> {
    if equipoise_common::bounds::is_identifier(value) {
        Ok(())
    } else {
        Err(RandomisationError::invalid(
            path,
            equipoise_common::bounds::IDENTIFIER_RULE,
        ))
    }
}

#[cfg(test)]
mod tests;
