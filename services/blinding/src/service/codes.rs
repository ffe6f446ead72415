//! Treatment codes: generating, uploading or topping up a trial's pools,
//! assigning one code per allocation, and the pool status (never by arm).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use equipoise_common::auth::{Caller, Role};
use equipoise_common::telemetry::metrics;
use equipoise_stream::MasterSeed;
use equipoise_trial::TrialDefinition;
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use super::access::{require_any, require_service};
use super::{
    BlindingService, LookupError, Result, identifier, invalid_if_any, require_trial_id,
    unknown_trial,
};
use crate::codes::{
    CodePool, MAX_POOL_SIZE, PoolLevel, UploadProblem, UploadProblems, UploadedCode,
    generate_pools, validate_top_up, validate_upload,
};
use crate::error::BlindingError;
use crate::store::{CodeSource, DefinitionSnapshot, StoreError};

/// The code an allocation got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignedCode {
    pub code: String,
    /// The allocation already had this code.
    pub replayed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSummary {
    pub arms: u32,
    pub codes: u32,
    pub codes_sha256: String,
}

/// Pool warnings and counts, never by arm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlindingStatus {
    pub trial_id: String,
    /// The lowest level over the pools; `None` when no pool is stored.
    pub pool_level: Option<PoolLevel>,
    pub codes_assigned: u32,
    pub emergency_unblindings: u32,
    pub safety_reviews: u32,
    pub planned_reveals: u32,
    pub deviations: u32,
}

fn rank(level: PoolLevel) -> u8 {
    match level {
        PoolLevel::Empty => 0,
        PoolLevel::Low => 1,
        PoolLevel::Sufficient => 2,
    }
}

fn check_mode(trial: &TrialDefinition) -> Result<()> {
    if trial.blinding.mode == "treatment_codes" {
        Ok(())
    } else {
        Err(BlindingError::FailedPrecondition(format!(
            "trial {} is not blinded with treatment codes",
            trial.id
        )))
    }
}

impl BlindingService {
    /// Gives an allocation its code; `service:randomisation` only.
    /// Idempotent per (trial, subject). The first call for a trial
    /// generates its pools from the code seed.
    pub async fn assign_code(
        &self,
        caller: &Caller,
        trial_id: &str,
        subject_id: &str,
        site_id: &str,
        arm_id: &str,
        randomised_at: Option<jiff::Timestamp>,
    ) -> Result<AssignedCode> {
        require_service(caller, "randomisation", "AssignCode")?;
        require_trial_id(caller, trial_id)?;
        let mut problems = Vec::new();
        identifier("subject_id", subject_id, &mut problems);
        identifier("site_id", site_id, &mut problems);
        identifier("arm_id", arm_id, &mut problems);
        invalid_if_any(problems)?;
        if let Some(existing) = self.store.assignment(trial_id, subject_id).await?
            && existing.arm_id == arm_id
            && existing.site_id == site_id
        {
            return Ok(AssignedCode {
                code: existing.code,
                replayed: true,
            });
        }
        // The definition snapshot is stored with the pools: a cheap test
        // for "pools exist" on every assignment.
        if self.store.definition(trial_id).await?.is_none() {
            let generating = Arc::clone(&self.pool_generation).lock_owned().await;
            // Another call may have stored them while this one waited.
            if self.store.definition(trial_id).await?.is_none() {
                self.generate_pools(caller, trial_id, generating).await?;
            }
        }
        let entry = self.entry(
            caller,
            "code.assigned",
            format!("trial/{trial_id}/subject/{subject_id}"),
            json!({
                "subject": subject_id,
                "site": site_id,
                "randomised_at": randomised_at.map(equipoise_common::time::format_rfc3339),
            }),
        );
        let at = entry.at.clone();
        let committing = Instant::now();
        let assignment = self
            .store
            .assign_code(trial_id, subject_id, site_id, arm_id, entry)
            .instrument(tracing::info_span!("store.assign_code"))
            .await;
        metrics::record_store_commit("blinding", "assign_code", committing.elapsed());
        let assignment = assignment?;
        // A racing repeat gets the first caller's assignment, written at
        // another time.
        let replayed = assignment.assigned_at != at;
        Ok(AssignedCode {
            code: assignment.code,
            replayed,
        })
    }

    /// Fetches the trial and stores pools generated from its code seed:
    /// `TrialDefinition::code_pool_size` codes, the size its validation
    /// checked. Generating and storing run in a task of their own, so a
    /// caller's deadline or cancellation cannot leave them half done and
    /// make the next call start over.
    /// `generating` is held until the pools are stored, even if this
    /// caller gives up first.
    async fn generate_pools(
        &self,
        caller: &Caller,
        trial_id: &str,
        generating: tokio::sync::OwnedMutexGuard<()>,
    ) -> Result<()> {
        let fetched = match self.randomisation.trial_for_blinding(trial_id).await {
            Ok(fetched) => fetched,
            Err(LookupError::NotFound) => return Err(unknown_trial(trial_id)),
            Err(LookupError::Unavailable(reason)) => {
                return Err(BlindingError::unavailable(format!(
                    "the code pools of trial {trial_id} cannot be made now: {reason}"
                )));
            }
            Err(LookupError::Refused(reason)) => {
                return Err(BlindingError::Internal(format!(
                    "randomisation refused the blinding service: {reason}"
                )));
            }
        };
        let trial = super::parse(&fetched.definition_yaml)?;
        check_mode(&trial)?;
        let pool_size = u32::try_from(trial.code_pool_size())
            .ok()
            .filter(|size| *size <= MAX_POOL_SIZE)
            .ok_or_else(|| {
                BlindingError::FailedPrecondition(format!(
                    "trial {trial_id}'s cap is too large for code pools"
                ))
            })?;
        let snapshot = DefinitionSnapshot {
            version: fetched.version,
            definition_sha256: trial.canonical_sha256(),
            definition_yaml: fetched.definition_yaml,
        };
        let entry = self.entry(
            caller,
            "pools.generated",
            format!("trial/{trial_id}"),
            json!({ "arms": trial.arms.len(), "pool_size": pool_size, "version": snapshot.version }),
        );
        let store = Arc::clone(&self.store);
        let seed = MasterSeed(fetched.code_seed);
        let trial_id = trial_id.to_owned();
        let task = tokio::spawn(async move {
            let _generating = generating;
            // Drawing up to a million codes is CPU work: off the runtime.
            let format = trial.blinding.code_format.clone();
            let arms = trial.arms.clone();
            let pools = tokio::task::spawn_blocking(move || {
                generate_pools(&seed, &format, &arms, pool_size)
            })
            .await
            .map_err(|e| BlindingError::Internal(format!("code generation failed: {e}")))?
            .map_err(|e| {
                BlindingError::FailedPrecondition(format!("code pools of trial {trial_id}: {e}"))
            })?;
            match store
                .put_pools(&trial_id, &pools, CodeSource::Generated, &snapshot, entry)
                .await
            {
                // A racing first call stored them first: the same pools.
                Ok(()) | Err(StoreError::Conflict(_)) => Ok(()),
                Err(error) => Err(BlindingError::from(error)),
            }
        });
        task.await
            .map_err(|e| BlindingError::Internal(format!("code generation failed: {e}")))?
    }

    /// A statistician's codes. Before the trial's first code is issued they
    /// are its pools, in place of generated ones, and must cover every arm.
    /// Once pools are stored they are a top-up: appended to their arms'
    /// pools (an upload may cover only some arms), so a low or empty pool
    /// recovers. Either way the rows are checked against the trial's code
    /// format and arms, and a top-up's codes against every code the trial
    /// already has, each clash named by its row, never by the arm holding
    /// the stored code. The audit details carry counts and the upload's
    /// sha256 only: arms or per-arm counts would show a blinded auditor the
    /// allocation balance.
    pub async fn upload_codes(
        &self,
        caller: &Caller,
        trial_id: &str,
        csv: &str,
    ) -> Result<UploadSummary> {
        require_any(caller, &[Role::Statistician], "UploadCodes")?;
        require_trial_id(caller, trial_id)?;
        let rows = parse_csv(csv)?;
        let counts = self.store.pool_counts(trial_id).await?;
        let top_up = !counts.is_empty();
        let stored: u64 = counts.values().map(|c| u64::from(c.pool_size)).sum();
        let fetched = match self.randomisation.trial_for_blinding(trial_id).await {
            Ok(fetched) => fetched,
            Err(LookupError::NotFound) => return Err(unknown_trial(trial_id)),
            Err(error) => return Err(BlindingError::unavailable(error.to_string())),
        };
        let trial = super::parse(&fetched.definition_yaml)?;
        check_mode(&trial)?;
        let format = &trial.blinding.code_format;
        let pools = if top_up {
            let stored = usize::try_from(stored).unwrap_or(usize::MAX);
            validate_top_up(format, &trial.arms, &rows, stored)
        } else {
            validate_upload(format, &trial.arms, &rows)
        }
        .map_err(|problems| BlindingError::invalid("csv", problems.to_string()))?;
        let mut digest = Sha256::new();
        for row in &rows {
            digest.update(format!("{},{}\n", row.arm_id, row.code).as_bytes());
        }
        let summary = UploadSummary {
            arms: u32::try_from(pools.len()).unwrap_or(u32::MAX),
            codes: u32::try_from(rows.len()).unwrap_or(u32::MAX),
            codes_sha256: hex::encode(digest.finalize()),
        };
        if top_up {
            self.top_up(caller, trial_id, &rows, &pools, &summary)
                .await?;
            return Ok(summary);
        }
        let snapshot = DefinitionSnapshot {
            version: fetched.version,
            definition_sha256: trial.canonical_sha256(),
            definition_yaml: fetched.definition_yaml,
        };
        let entry = self.entry(
            caller,
            "pools.uploaded",
            format!("trial/{trial_id}"),
            json!({ "arms": summary.arms, "codes": summary.codes, "codes_sha256": summary.codes_sha256 }),
        );
        self.store
            .put_pools(trial_id, &pools, CodeSource::Uploaded, &snapshot, entry)
            .await
            .map_err(|error| match error {
                // Pools stored since they were counted: this upload was
                // checked as whole pools, not as a top-up.
                StoreError::Conflict(_) => BlindingError::FailedPrecondition(format!(
                    "trial {trial_id}'s pools were stored while this upload was checked; send it again to top them up"
                )),
                other => other.into(),
            })?;
        Ok(summary)
    }

    /// Appends checked codes to the stored pools; a code the trial already
    /// has refuses the whole upload, naming each such row.
    async fn top_up(
        &self,
        caller: &Caller,
        trial_id: &str,
        rows: &[UploadedCode],
        pools: &[CodePool],
        summary: &UploadSummary,
    ) -> Result<()> {
        // Only the total: the arms and per-arm counts stay out of the
        // chain, which blinded auditors read.
        let entry = self.entry(
            caller,
            "pools.topped_up",
            format!("trial/{trial_id}"),
            json!({ "codes": summary.codes, "codes_sha256": summary.codes_sha256 }),
        );
        match self.store.add_codes(trial_id, pools, entry).await {
            Ok(()) => Ok(()),
            Err(StoreError::CodesTaken(codes)) => {
                let taken: HashSet<&str> = codes.iter().map(String::as_str).collect();
                let problems = rows
                    .iter()
                    .enumerate()
                    .filter(|(_, row)| taken.contains(row.code.as_str()))
                    .map(|(offset, row)| UploadProblem::AlreadyStored {
                        row: offset + 1,
                        code: row.code.clone(),
                    })
                    .collect();
                Err(BlindingError::invalid(
                    "csv",
                    UploadProblems(problems).to_string(),
                ))
            }
            Err(error) => Err(error.into()),
        }
    }

    pub async fn blinding_status(&self, caller: &Caller, trial_id: &str) -> Result<BlindingStatus> {
        require_any(
            caller,
            &[
                Role::TrialAdmin,
                Role::Statistician,
                Role::MedicalMonitor,
                Role::EmergencyDesk,
                Role::Auditor,
            ],
            "GetBlindingStatus",
        )?;
        require_trial_id(caller, trial_id)?;
        let pools = self.store.pool_counts(trial_id).await?;
        if pools.is_empty() {
            self.require_known_trial(trial_id).await?;
        }
        let pool_level = pools
            .values()
            .map(|counts| self.low_pool.level(*counts))
            .min_by_key(|level| rank(*level));
        let codes_assigned = pools.values().map(|c| c.issued).sum();
        let counts = self.store.reveal_counts(trial_id).await?;
        // A deviation is a treatment given other than the one assigned:
        // its count, set against the arms' sizes, hints at the arms, so
        // only the unblinded medical monitor and emergency desk see it;
        // trial admins and statisticians are blinded and get 0.
        let deviations = if caller.has_any_role(&[Role::MedicalMonitor, Role::EmergencyDesk]) {
            counts.deviations
        } else {
            0
        };
        Ok(BlindingStatus {
            trial_id: trial_id.to_owned(),
            pool_level,
            codes_assigned,
            emergency_unblindings: counts.emergency,
            safety_reviews: counts.safety_reviews,
            planned_reveals: counts.planned,
            deviations,
        })
    }
}

impl BlindingService {
    /// A trial with no pools yet may still exist: randomisation knows. Only
    /// a definite "no such trial" is refused; a draft or an unreachable
    /// randomisation leaves an empty status.
    async fn require_known_trial(&self, trial_id: &str) -> Result<()> {
        match self.randomisation.trial_for_blinding(trial_id).await {
            Err(LookupError::NotFound) => Err(unknown_trial(trial_id)),
            _ => Ok(()),
        }
    }
}

/// `arm,code` rows, header first.
fn parse_csv(csv: &str) -> Result<Vec<UploadedCode>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(csv.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| BlindingError::invalid("csv", format!("unreadable header: {e}")))?
        .clone();
    if headers.iter().collect::<Vec<_>>() != ["arm", "code"] {
        return Err(BlindingError::invalid(
            "csv",
            "the header must be `arm,code`",
        ));
    }
    let mut rows = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let record =
            record.map_err(|e| BlindingError::invalid("csv", format!("row {}: {e}", index + 1)))?;
        rows.push(UploadedCode {
            arm_id: record.get(0).unwrap_or_default().to_owned(),
            code: record.get(1).unwrap_or_default().to_owned(),
        });
    }
    if rows.is_empty() {
        return Err(BlindingError::invalid("csv", "no codes"));
    }
    Ok(rows)
}
