//! What the blinding service asks of randomisation (DESIGN §2, "blinding →
//! randomisation: look up an allocation"): a trial's frozen definition with
//! the seed its treatment codes are generated from, and one allocation's
//! arm. `service:blinding` only; a user token is refused whatever its roles.

use equipoise_common::auth::{Caller, Role};
use equipoise_stream::{ChaCha20Rng, MasterSeed, derive_stream};
use rand_chacha::rand_core::Rng;
use serde_json::json;

use super::{RandomisationService, audit_entry, check_identifier};
use crate::error::RandomisationError;
use crate::store::TrialState;

/// The stream the code seed is drawn from. No stratum key has a `/`, so it
/// cannot coincide with an allocation stream.
pub const CODE_SEED_STREAM: &str = "treatment-codes/seed";

/// The only caller of these operations.
const BLINDING: &str = "blinding";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialForBlinding {
    pub trial_id: String,
    pub version: u32,
    pub state: TrialState,
    pub definition_yaml: String,
    pub definition_sha256: String,
    pub code_seed: [u8; 32],
    pub algorithm_version: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocatedArm {
    pub trial_id: String,
    pub subject_id: String,
    pub site_id: String,
    pub arm_id: String,
    pub randomised_at: String,
    pub randomised_in_error: bool,
}

/// The seed a trial's treatment codes are generated from: the first 32
/// bytes of the ChaCha20 stream derived from (master seed,
/// [`CODE_SEED_STREAM`], algorithm version). One-way: it cannot give back
/// the master seed, so the blinding service cannot regenerate allocations;
/// a statistician holding the master seed can regenerate the codes offline.
pub fn code_seed(master: &MasterSeed, algorithm_version: u32) -> [u8; 32] {
    let mut stream: ChaCha20Rng = derive_stream(master, CODE_SEED_STREAM, algorithm_version);
    let mut seed = [0u8; 32];
    stream.fill_bytes(&mut seed);
    seed
}

fn authorise_blinding(caller: &Caller) -> Result<(), RandomisationError> {
    if caller.has_role(&Role::Service(BLINDING.into())) {
        Ok(())
    } else {
        Err(RandomisationError::PermissionDenied(format!(
            "only the blinding service (service:{BLINDING}) may call this"
        )))
    }
}

impl RandomisationService {
    /// The frozen current definition of an active or closed trial and its
    /// code seed. Audited: the seed is what the codes are generated from.
    pub async fn trial_for_blinding(
        &self,
        caller: &Caller,
        trial_id: &str,
    ) -> Result<TrialForBlinding, RandomisationError> {
        authorise_blinding(caller)?;
        check_identifier("trial_id", trial_id)?;
        let trial = self.load_trial(trial_id).await?;
        if trial.record.state == TrialState::Draft {
            return Err(RandomisationError::FailedPrecondition(format!(
                "trial {trial_id} is a draft; its design is not frozen yet"
            )));
        }
        let algorithm_version = trial
            .record
            .algorithm_version
            .unwrap_or(equipoise_stream::ALGORITHM_VERSION);
        let code_seed = code_seed(&self.master_seed(&trial)?, algorithm_version);
        let audit = audit_entry(
            caller,
            "blinding.trial_read",
            format!("trial/{trial_id}"),
            json!({
                "version": trial.record.version,
                "definition_sha256": trial.record.definition_sha256,
            }),
        );
        self.store.append_audit(audit).await?;
        let record = trial.record;
        Ok(TrialForBlinding {
            trial_id: record.trial_id,
            version: record.version,
            state: record.state,
            definition_yaml: record.definition_yaml,
            definition_sha256: record.definition_sha256,
            code_seed,
            algorithm_version,
        })
    }

    /// One allocation's arm and site. Audited (who looked up which
    /// subject), with no arm in the record.
    pub async fn look_up_allocation(
        &self,
        caller: &Caller,
        trial_id: &str,
        subject_id: &str,
    ) -> Result<AllocatedArm, RandomisationError> {
        authorise_blinding(caller)?;
        check_identifier("trial_id", trial_id)?;
        check_identifier("subject_id", subject_id)?;
        let allocation = self
            .store
            .allocation(trial_id, subject_id)
            .await?
            .ok_or_else(|| {
                RandomisationError::NotFound(format!("subject {subject_id} in trial {trial_id}"))
            })?;
        let audit = audit_entry(
            caller,
            "blinding.allocation_looked_up",
            format!("allocation/{trial_id}/{subject_id}"),
            json!({
                "site_id": allocation.site_id,
                "randomisation_number": allocation.randomisation_number,
            }),
        );
        self.store.append_audit(audit).await?;
        Ok(AllocatedArm {
            trial_id: allocation.trial_id,
            subject_id: allocation.subject_id,
            site_id: allocation.site_id,
            arm_id: allocation.arm,
            randomised_at: allocation.randomised_at,
            randomised_in_error: allocation.in_error,
        })
    }
}
