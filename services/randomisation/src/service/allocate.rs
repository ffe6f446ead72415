//! `Randomise`: the allocation transaction of docs/architecture.md, "Allocation".
//!
//! 1. authorise the site role for its own site;
//! 2. check the trial, site, covariates, eligibility;
//! 3. take the stream's lock;
//! 4. compute the arm at the stream's next position;
//! 5. commit allocation + audit, fenced on the stream version (caps checked
//!    inside the same transaction);
//! 6. release the lock;
//! 7. obtain the treatment code (`codes.rs`). A replay completes a code
//!    still missing, so a retry never allocates twice.

use std::collections::BTreeMap;
use std::time::Instant;

use equipoise_common::auth::Caller;
use equipoise_common::error::ServiceError;
use equipoise_common::telemetry::metrics;
use equipoise_common::time::now_rfc3339;
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use super::access::{Operation, authorise, authorise_site};
use super::codes::CodeActor;
use super::progress::Design;
use super::{LoadedTrial, RandomisationService, audit_entry, check_identifier, log_tag};
use crate::error::{DESIGN_LIMIT, FailedCriterion, RandomisationError, cap_message};
use crate::methods::{Margins, SequenceMethod, StratumSequence, minimise};

use crate::store::{
    AllocationRecord, CapLimits, CommitRequest, NewAllocation, StoreError, TrialState, cap_breach,
};
use equipoise_stream::{MasterSeed, derive_stream, nth_unit_draw};
use equipoise_trial::{CovariateInput, MethodSpec, StratumLevels, TrialDefinition};

/// Stream key of a minimisation trial: one stream for the whole trial.
pub const MINIMISATION_STREAM: &str = "minimisation";

#[derive(Debug, Clone, PartialEq)]
pub struct RandomiseCommand {
    pub trial_id: String,
    pub site_id: String,
    pub subject_id: String,
    pub covariates: BTreeMap<String, CovariateInput>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandomiseOutcome {
    pub allocation: AllocationRecord,
    /// An identical earlier request had already allocated this subject.
    pub replayed: bool,
}

/// A subject who passed every check, ready for the lock.
struct Candidate {
    levels: StratumLevels,
    stratum: String,
    stream_key: String,
    fingerprint: String,
    caps: CapLimits,
}

/// The allocations metric's trial: the id only once it named a trial the
/// caller may use, so no one mints metric series with made-up ids.
fn trial_label<'a>(
    command: &'a RandomiseCommand,
    outcome: &Result<RandomiseOutcome, RandomisationError>,
) -> &'a str {
    let refused_before_the_trial = matches!(
        outcome,
        Err(RandomisationError::PermissionDenied(_) | RandomisationError::NotFound(_))
    );
    if refused_before_the_trial || check_identifier("trial_id", &command.trial_id).is_err() {
        "unknown"
    } else {
        &command.trial_id
    }
}

/// The allocations metric's outcome: `allocated`, `replayed`, or the
/// refusal's status code (no arm, no subject).
fn outcome_label(outcome: &Result<RandomiseOutcome, RandomisationError>) -> &'static str {
    match outcome {
        Ok(outcome) if outcome.replayed => "replayed",
        Ok(_) => "allocated",
        Err(error) => error.error_code().name(),
    }
}

/// The arm at a stream position and how it was chosen.
struct ArmChoice {
    arm: usize,
    decision: serde_json::Value,
}

impl RandomisationService {
    pub async fn randomise(
        &self,
        caller: &Caller,
        command: &RandomiseCommand,
    ) -> Result<RandomiseOutcome, RandomisationError> {
        let outcome = self.randomise_with_code(caller, command).await;
        metrics::record_allocation(trial_label(command, &outcome), outcome_label(&outcome));
        outcome
    }

    async fn randomise_with_code(
        &self,
        caller: &Caller,
        command: &RandomiseCommand,
    ) -> Result<RandomiseOutcome, RandomisationError> {
        let mut outcome = self.allocate_or_replay(caller, command).await?;
        if outcome.allocation.treatment_code.is_none() {
            let by = CodeActor {
                actor: &caller.subject,
                role: caller.role_label(),
                source: if outcome.replayed {
                    "retry"
                } else {
                    "randomise"
                },
            };
            let code = self.complete_code(&outcome.allocation, &by).await?;
            outcome.allocation.treatment_code = Some(code);
        }
        Ok(outcome)
    }

    /// Steps 1-6: a new allocation, or the subject's existing one.
    async fn allocate_or_replay(
        &self,
        caller: &Caller,
        command: &RandomiseCommand,
    ) -> Result<RandomiseOutcome, RandomisationError> {
        authorise(caller, Operation::Randomise, Some(&command.trial_id))?;
        authorise_site(caller, &command.site_id)?;
        check_identifier("subject_id", &command.subject_id)?;
        let trial = self.load_trial(&command.trial_id).await?;
        if let Err(refusal) = check_subject_id_form(&trial, command) {
            return Err(self
                .refuse_malformed_subject_id(caller, command, refusal)
                .await);
        }
        let fingerprint = Fingerprint::of(command);
        if let Some(existing) = self
            .store
            .allocation(&command.trial_id, &command.subject_id)
            .await?
        {
            if existing.site_id != command.site_id {
                return Err(self
                    .refuse_other_sites_subject(caller, &trial, command, &fingerprint)
                    .await);
            }
            return replay(existing, &fingerprint);
        }
        let candidate = admit(&trial, command, fingerprint.current)?;
        let lock_key = format!("allocation/{}/{}", command.trial_id, candidate.stream_key);
        let waited = Instant::now();
        let lease = self
            .locks
            .acquire(&lock_key)
            .instrument(tracing::info_span!("allocation.lock.wait"))
            .await;
        metrics::record_lock_wait(waited.elapsed(), lease.is_ok());
        let lease = lease?;
        let outcome = self
            .allocate_locked(caller, &trial, command, &candidate)
            .await;
        if let Err(error) = self.locks.release(lease).await {
            // The lease expires on its own; the commit is already fenced.
            tracing::warn!(%error, lock = %lock_key, "allocation lock release failed");
        }
        if let Ok(result) = &outcome {
            tracing::info!(
                trial = %command.trial_id,
                site = %command.site_id,
                subject = %log_tag(&command.trial_id, &command.subject_id),
                replayed = result.replayed,
                "randomised"
            );
        }
        outcome
    }

    /// A subject id already randomised at another site (review C3). The
    /// request meets the same checks, in the same order, as a new id, so an
    /// ineligible, closed or capped probe cannot tell the two apart; one that
    /// passes them gets the refusal a changed request gets. Either way the
    /// attempt is audited, so a site counting another's subjects is seen.
    async fn refuse_other_sites_subject(
        &self,
        caller: &Caller,
        trial: &LoadedTrial,
        command: &RandomiseCommand,
        fingerprint: &Fingerprint,
    ) -> RandomisationError {
        let refusal = match admit(trial, command, fingerprint.current.clone()) {
            Err(as_for_a_new_id) => as_for_a_new_id,
            Ok(candidate) => match self.limit_a_new_id_meets(trial, command, &candidate).await {
                Ok(Some(as_for_a_new_id)) | Err(as_for_a_new_id) => as_for_a_new_id,
                Ok(None) => RandomisationError::AlreadyExists(
                    "subject_id is already randomised in this trial with different site or covariates"
                        .into(),
                ),
            },
        };
        self.audit_other_sites_subject(caller, command, &refusal)
            .await;
        refusal
    }

    /// The refusal a new id for `candidate` would meet at commit now: the
    /// end of an uploaded list, then the caps, in the order the commit meets
    /// them. A probe of another site's subject gets it too, so a site at its
    /// cap cannot tell a used id from a new one (review C5).
    async fn limit_a_new_id_meets(
        &self,
        trial: &LoadedTrial,
        command: &RandomiseCommand,
        candidate: &Candidate,
    ) -> Result<Option<RandomisationError>, RandomisationError> {
        let trial_id = &trial.record.trial_id;
        if matches!(trial.definition.method, MethodSpec::UploadedList { .. }) {
            let position = self
                .store
                .stream_version(trial_id, &candidate.stream_key)
                .await?;
            let slot = self
                .store
                .list_slot(trial_id, &candidate.stratum, position)
                .await?;
            if slot.is_none() {
                return Ok(Some(RandomisationError::FailedPrecondition(
                    DESIGN_LIMIT.into(),
                )));
            }
        }
        let (total, at_site, in_stratum) = self
            .store
            .cap_counts(trial_id, &command.site_id, &candidate.stratum)
            .await?;
        let breach = cap_breach(&candidate.caps, total, at_site, in_stratum);
        Ok(breach.map(|kind| RandomisationError::CapReached(cap_message(kind))))
    }

    /// An id refused for its form is audited as a probe when another site
    /// holds it; the caller gets the refusal either way.
    async fn refuse_malformed_subject_id(
        &self,
        caller: &Caller,
        command: &RandomiseCommand,
        refusal: RandomisationError,
    ) -> RandomisationError {
        match self
            .store
            .allocation(&command.trial_id, &command.subject_id)
            .await
        {
            Ok(Some(_)) => {
                self.audit_other_sites_subject(caller, command, &refusal)
                    .await
            }
            Ok(None) => {}
            Err(error) => {
                tracing::error!(trial = %command.trial_id, %error, "could not check a malformed subject id for a probe");
            }
        }
        refusal
    }

    async fn audit_other_sites_subject(
        &self,
        caller: &Caller,
        command: &RandomiseCommand,
        refusal: &RandomisationError,
    ) {
        let entry = audit_entry(
            caller,
            "randomise.refused_other_site_subject",
            format!("trial/{}/subject/{}", command.trial_id, command.subject_id),
            json!({ "site": command.site_id, "refusal": refusal.error_code().name() }),
        );
        if let Err(error) = self.store.append_audit(entry).await {
            tracing::error!(trial = %command.trial_id, %error, "could not audit a refused cross-site subject id");
        }
    }

    async fn allocate_locked(
        &self,
        caller: &Caller,
        trial: &LoadedTrial,
        command: &RandomiseCommand,
        candidate: &Candidate,
    ) -> Result<RandomiseOutcome, RandomisationError> {
        let position = self
            .store
            .stream_version(&command.trial_id, &candidate.stream_key)
            .await?;
        let choice = self.choose_arm(trial, candidate, position).await?;
        let request = commit_request(
            caller,
            trial,
            command,
            candidate,
            (position, choice),
            &self.sealer,
        );
        self.faults.before_commit().await;
        let committing = Instant::now();
        let committed = self
            .store
            .commit_allocation(&request)
            .instrument(tracing::info_span!("store.commit_allocation"))
            .await;
        metrics::record_store_commit("randomisation", "commit_allocation", committing.elapsed());
        match committed {
            Ok(allocation) => {
                self.faults.after_commit().await;
                self.warn_if_list_low(trial, &candidate.stratum, position)
                    .await;
                Ok(RandomiseOutcome {
                    allocation,
                    replayed: false,
                })
            }
            // Only a holder whose lease expired can be fenced: it no longer
            // holds the lock, so it stops and the caller retries.
            Err(StoreError::Fenced) => {
                tracing::warn!(trial = %command.trial_id, stream = %candidate.stream_key, "fenced commit refused");
                Err(RandomisationError::Aborted(
                    "the allocation lock was lost before commit; nothing was allocated, retry the request".into(),
                ))
            }
            Err(StoreError::SubjectExists) => {
                let existing = self
                    .store
                    .allocation(&command.trial_id, &command.subject_id)
                    .await?;
                match existing {
                    Some(existing) => replay(
                        existing,
                        &Fingerprint {
                            current: candidate.fingerprint.clone(),
                            legacy: None,
                        },
                    ),
                    None => Err(RandomisationError::Aborted(
                        "concurrent request for this subject; retry".into(),
                    )),
                }
            }
            Err(other) => Err(other.into()),
        }
    }

    async fn choose_arm(
        &self,
        trial: &LoadedTrial,
        candidate: &Candidate,
        position: u64,
    ) -> Result<ArmChoice, RandomisationError> {
        let definition = &trial.definition;
        match &definition.method {
            MethodSpec::Minimisation {
                weights,
                imbalance,
                p,
            } => {
                let margins = self.margins(trial, position).await?;
                let mut rng = derive_stream(
                    &self.master_seed(trial)?,
                    MINIMISATION_STREAM,
                    algorithm_version(trial),
                );
                let draw = nth_unit_draw(&mut rng, position);
                let decision = minimise(
                    &margins,
                    &candidate.levels,
                    weights,
                    *imbalance,
                    *p,
                    &definition.ratios(),
                    draw,
                );
                Ok(ArmChoice {
                    arm: decision.arm,
                    decision: json!({ "scores": decision.scores, "probabilities": decision.probabilities, "draw": decision.draw }),
                })
            }
            MethodSpec::UploadedList { .. } => {
                let arm_id = self
                    .store
                    .list_slot(&trial.record.trial_id, &candidate.stratum, position)
                    .await?
                    .ok_or_else(|| {
                        // The operators learn which list; the site only that
                        // a design limit stopped it.
                        tracing::error!(trial = %trial.record.trial_id, stratum = %candidate.stratum, "uploaded allocation list is exhausted");
                        RandomisationError::FailedPrecondition(DESIGN_LIMIT.into())
                    })?;
                let arm = definition.arm_index(&arm_id).ok_or_else(|| {
                    RandomisationError::Internal(format!("list arm {arm_id} is not an arm"))
                })?;
                Ok(ArmChoice {
                    arm,
                    decision: json!({ "source": "uploaded_list" }),
                })
            }
            method => {
                let sequence_method = SequenceMethod::from_spec(method).ok_or_else(|| {
                    RandomisationError::Internal("method is not a sequence".into())
                })?;
                let seed = self.master_seed(trial)?;
                let version = algorithm_version(trial);
                let fresh = || {
                    let rng = derive_stream(&seed, &candidate.stream_key, version);
                    StratumSequence::new(&sequence_method, &definition.ratios(), rng)
                };
                let stream = (
                    trial.record.trial_id.as_str(),
                    candidate.stream_key.as_str(),
                );
                let slot = self
                    .sequences
                    .slot_at(stream, &design(trial), position, fresh);
                Ok(ArmChoice {
                    arm: slot.arm,
                    decision: json!({ "probabilities": slot.probabilities }),
                })
            }
        }
    }

    /// Margins of every earlier minimisation allocation, by "randomised
    /// as": the margins kept from an earlier allocation plus the history
    /// since, or the whole history when none were kept.
    async fn margins(
        &self,
        trial: &LoadedTrial,
        position: u64,
    ) -> Result<Margins, RandomisationError> {
        let trial_id = &trial.record.trial_id;
        let design = design(trial);
        let (from, mut margins) = self
            .margins
            .take(trial_id, &design, position)
            .unwrap_or_else(|| (0, empty_margins(&trial.definition)));
        let since = self
            .store
            .stream_allocations_from(trial_id, MINIMISATION_STREAM, from)
            .await?;
        // Positions are dense and the store reported `position` under the
        // lock: anything else means the history moved on, so start again.
        let expected = from..position;
        if since.len() as u64 != position - from || !since.iter().map(|a| a.position).eq(expected) {
            return Err(RandomisationError::Aborted(
                "allocation history changed; retry".into(),
            ));
        }
        for allocation in &since {
            record_margin(&trial.definition, &mut margins, allocation)?;
        }
        self.margins
            .put(trial_id, design, position, margins.clone());
        Ok(margins)
    }

    pub(crate) fn master_seed(
        &self,
        trial: &LoadedTrial,
    ) -> Result<MasterSeed, RandomisationError> {
        let sealed = trial.record.sealed_seed.as_deref().ok_or_else(|| {
            RandomisationError::Internal("active trial has no sealed seed".into())
        })?;
        self.sealer
            .unseal(&trial.record.trial_id, sealed)
            .map_err(|e| RandomisationError::Internal(e.to_string()))
    }

    async fn warn_if_list_low(&self, trial: &LoadedTrial, stratum: &str, position: u64) {
        let MethodSpec::UploadedList { warn_remaining } = trial.definition.method else {
            return;
        };
        let Ok(lengths) = self.store.list_lengths(&trial.record.trial_id).await else {
            return;
        };
        let length = u64::from(lengths.get(stratum).copied().unwrap_or(0));
        let remaining = length.saturating_sub(position + 1);
        // No count in the line: operators are blinded, and a remaining
        // length is a list position.
        if remaining <= u64::from(warn_remaining) {
            tracing::warn!(trial = %trial.record.trial_id, %stratum, "uploaded allocation list is at or below its warning level");
        }
    }
}

/// The frozen design an allocation's kept progress must match.
fn design(trial: &LoadedTrial) -> Design {
    Design {
        definition_sha256: trial.record.definition_sha256.clone(),
        algorithm_version: algorithm_version(trial),
    }
}

fn empty_margins(definition: &TrialDefinition) -> Margins {
    let level_counts: Vec<usize> = definition
        .stratification
        .iter()
        .map(|f| f.levels.len())
        .collect();
    Margins::new(&level_counts, definition.arms.len())
}

/// Adds one committed allocation to the margins, by its "randomised as" stratum.
fn record_margin(
    definition: &TrialDefinition,
    margins: &mut Margins,
    allocation: &AllocationRecord,
) -> Result<(), RandomisationError> {
    let levels = definition.parse_stratum_key(&allocation.stratum);
    match (levels, definition.arm_index(&allocation.arm)) {
        (Some(levels), Some(arm)) => {
            margins.record(&levels, arm);
            Ok(())
        }
        _ => Err(RandomisationError::Internal(format!(
            "allocation of {} does not match the definition",
            allocation.subject_id
        ))),
    }
}

fn algorithm_version(trial: &LoadedTrial) -> u32 {
    trial
        .record
        .algorithm_version
        .unwrap_or(equipoise_stream::ALGORITHM_VERSION)
}

/// Checks state, site, covariates, eligibility and stratum: everything that
/// needs no lock.
fn admit(
    trial: &LoadedTrial,
    command: &RandomiseCommand,
    fingerprint: String,
) -> Result<Candidate, RandomisationError> {
    let definition: &TrialDefinition = &trial.definition;
    match trial.record.state {
        TrialState::Active => {}
        TrialState::Draft => {
            return Err(RandomisationError::FailedPrecondition(format!(
                "trial {} is not active yet",
                command.trial_id
            )));
        }
        TrialState::Closed => {
            return Err(RandomisationError::FailedPrecondition(format!(
                "enrolment in trial {} is closed",
                command.trial_id
            )));
        }
    }
    let site = definition.site(&command.site_id).ok_or_else(|| {
        RandomisationError::invalid(
            "site_id",
            format!("'{}' is not a site of this trial", command.site_id),
        )
    })?;
    let values = definition
        .check_covariates(&command.covariates)
        .map_err(RandomisationError::InvalidArgument)?;
    let failed: Vec<FailedCriterion> = definition
        .failed_criteria(&values)
        .into_iter()
        .map(|c| FailedCriterion {
            id: c.id.clone(),
            rule: c.rule.to_string(),
        })
        .collect();
    if !failed.is_empty() {
        return Err(RandomisationError::Ineligible(failed));
    }
    let levels = definition
        .classify(&command.site_id, &values)
        .map_err(|problem| RandomisationError::InvalidArgument(vec![problem]))?;
    let stratum = definition.stratum_key(&levels);
    let stream_key = match definition.method {
        MethodSpec::Minimisation { .. } => super::allocate::MINIMISATION_STREAM.to_owned(),
        _ => stratum.clone(),
    };
    Ok(Candidate {
        levels,
        stratum,
        stream_key,
        fingerprint,
        caps: CapLimits {
            total: definition.caps.total,
            site: site.cap,
            stratum: definition.stratum_cap(),
        },
    })
}

fn commit_request(
    caller: &Caller,
    trial: &LoadedTrial,
    command: &RandomiseCommand,
    candidate: &Candidate,
    (position, choice): (u64, ArmChoice),
    sealer: &crate::seal::Sealer,
) -> CommitRequest {
    let arm = trial.definition.arms[choice.arm].id.clone();
    let covariates_json = serde_json::to_string(&command.covariates).unwrap_or_default();
    let decision_json = choice.decision.to_string();
    // The arm, position and decision stay in the allocation row; the chain
    // keeps their digest, so it can be shown to blinded readers.
    let audit = audit_entry(
        caller,
        "allocation.created",
        format!("allocation/{}/{}", command.trial_id, command.subject_id),
        json!({
            "site_id": command.site_id,
            "stratum": candidate.stratum,
            "stream": candidate.stream_key,
            "request_sha256": candidate.fingerprint,
            "unblinded_hmac": sealer.unblinded_digest(&arm, position, &decision_json),
        }),
    );
    CommitRequest {
        allocation: NewAllocation {
            trial_id: command.trial_id.clone(),
            subject_id: command.subject_id.clone(),
            site_id: command.site_id.clone(),
            stratum: candidate.stratum.clone(),
            stream_key: candidate.stream_key.clone(),
            arm,
            request_sha256: candidate.fingerprint.clone(),
            covariates_json,
            decision_json,
            trial_version: trial.record.version,
            randomised_at: now_rfc3339(),
        },
        expected_stream_version: position,
        caps: candidate.caps,
        audit,
    }
}

/// The same request again returns the same allocation; different data for
/// the same subject is refused without revealing what was stored.
fn replay(
    existing: AllocationRecord,
    fingerprint: &Fingerprint,
) -> Result<RandomiseOutcome, RandomisationError> {
    if fingerprint.matches(&existing.request_sha256) {
        Ok(RandomiseOutcome {
            allocation: existing,
            replayed: true,
        })
    } else {
        Err(RandomisationError::AlreadyExists(
            "subject_id is already randomised in this trial with different site or covariates"
                .into(),
        ))
    }
}

/// What makes a repeat "the same data" (DESIGN §4): the site and the
/// covariates as the definition reads them, so `72` and `72.0` for a
/// decimal covariate are one request.
struct Fingerprint {
    /// SHA-256 over the checked, typed values; what new allocations store.
    current: String,
    /// SHA-256 over the values as sent, which allocations made before the
    /// typed fingerprint stored; a retry of one of them still replays.
    legacy: Option<String>,
}

impl Fingerprint {
    /// Typed from the request alone, not through the current definition:
    /// a retry after an amendment that tightened a bound still replays.
    fn of(command: &RandomiseCommand) -> Self {
        Self {
            current: typed_fingerprint(&command.site_id, &command.covariates),
            legacy: Some(raw_fingerprint(command)),
        }
    }

    fn matches(&self, stored: &str) -> bool {
        self.current == stored || self.legacy.as_deref() == Some(stored)
    }
}

/// Numbers as numbers, whichever form was sent: 72 and 72.0 are one value.
fn typed_fingerprint(site_id: &str, inputs: &BTreeMap<String, CovariateInput>) -> String {
    let covariates: serde_json::Map<String, serde_json::Value> = inputs
        .iter()
        .map(|(name, input)| {
            let value = match input {
                // Integers a covariate could hold are exact in an f64.
                CovariateInput::Integer(number) => json!(*number as f64),
                CovariateInput::Decimal(number) => json!(number),
                CovariateInput::Boolean(flag) => json!(flag),
                CovariateInput::Enum(level) => json!(level),
            };
            (name.clone(), value)
        })
        .collect();
    let canonical = json!({ "fingerprint": 2, "site_id": site_id, "covariates": covariates });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// SHA-256 of the site and the covariates as sent, in key order.
fn raw_fingerprint(command: &RandomiseCommand) -> String {
    let canonical = json!({ "site_id": command.site_id, "covariates": command.covariates });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// A trial whose subject ids carry their site refuses another site's id by
/// its form, before any lookup: the answer is the same whether that site
/// used it or not, whatever the covariates (DESIGN §7).
fn check_subject_id_form(
    trial: &LoadedTrial,
    command: &RandomiseCommand,
) -> Result<(), RandomisationError> {
    if trial
        .definition
        .subject_ids
        .admits(&command.site_id, &command.subject_id)
    {
        Ok(())
    } else {
        Err(RandomisationError::invalid(
            "subject_id",
            format!(
                "this trial's subject ids begin with the site's id and a hyphen, such as {}-001",
                command.site_id
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(trial_id: &str) -> RandomiseCommand {
        RandomiseCommand {
            trial_id: trial_id.into(),
            site_id: "FR-MTP".into(),
            subject_id: "MTP-001".into(),
            covariates: BTreeMap::new(),
        }
    }

    /// Review: metric series are labelled only by trials that exist and
    /// that the caller may use.
    #[test]
    fn made_up_trial_ids_label_no_metric_series() {
        let refused: Result<RandomiseOutcome, RandomisationError> =
            Err(RandomisationError::NotFound("trial GHOST-1".into()));
        assert_eq!(trial_label(&command("GHOST-1"), &refused), "unknown");
        let denied = Err(RandomisationError::PermissionDenied("no".into()));
        assert_eq!(trial_label(&command("RESPINE"), &denied), "unknown");
        let huge = "X".repeat(1000);
        let closed = Err(RandomisationError::FailedPrecondition("closed".into()));
        assert_eq!(trial_label(&command(&huge), &closed), "unknown");
        assert_eq!(trial_label(&command("RESPINE"), &closed), "RESPINE");
    }

    /// Review K1 after an amendment: the fingerprint needs no definition, so
    /// 55 and 55.0 are one value whatever the current bounds.
    #[test]
    fn fingerprints_read_numbers_as_numbers() {
        let mut as_integer = command("RESPINE");
        as_integer
            .covariates
            .insert("vas_mm".into(), CovariateInput::Integer(55));
        let mut as_decimal = command("RESPINE");
        as_decimal
            .covariates
            .insert("vas_mm".into(), CovariateInput::Decimal(55.0));
        let stored = Fingerprint::of(&as_integer).current;
        assert!(Fingerprint::of(&as_decimal).matches(&stored));
        let mut other = command("RESPINE");
        other
            .covariates
            .insert("vas_mm".into(), CovariateInput::Decimal(55.5));
        assert!(!Fingerprint::of(&other).matches(&stored));
    }
}
