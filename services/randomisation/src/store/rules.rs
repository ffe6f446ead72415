//! Decisions both stores take the same way on what they read inside a
//! write transaction, so the backends differ only in how they lock.
use equipoise_common::audit::AuditEntry;

use super::{
    AllocationRecord, CapLimits, CodeRecorded, CommitRequest, StoreError, StoreResult, TrialRecord,
    TrialState, cap_breach,
};

/// A draft may be replaced; an active or closed trial's design is frozen.
pub fn replaceable(existing: Option<&TrialRecord>, trial_id: &str) -> StoreResult<()> {
    match existing {
        Some(trial) if trial.state != TrialState::Draft => Err(StoreError::Conflict(format!(
            "trial {trial_id} is {}; its design is frozen",
            trial.state.as_str()
        ))),
        _ => Ok(()),
    }
}

/// The trial, which must exist and be in `state` for `doing`.
pub fn in_state(
    trial: Option<TrialRecord>,
    trial_id: &str,
    state: TrialState,
    doing: &str,
) -> StoreResult<TrialRecord> {
    let trial = trial.ok_or(StoreError::NotFound)?;
    if trial.state != state {
        return Err(StoreError::Conflict(format!(
            "trial {trial_id} is {}; {doing} needs it {}",
            trial.state.as_str(),
            state.as_str()
        )));
    }
    Ok(trial)
}

/// The trial still at the version an allocation was computed under: an
/// amendment in between (a lower cap, tighter eligibility) must be applied.
pub fn at_version(trial: &TrialRecord, computed_under: u32) -> StoreResult<()> {
    if trial.version == computed_under {
        Ok(())
    } else {
        Err(StoreError::Superseded)
    }
}

/// A draft that still has the definition that was reviewed.
pub fn activatable(
    trial: Option<TrialRecord>,
    trial_id: &str,
    expected_sha256: &str,
) -> StoreResult<TrialRecord> {
    let trial = trial.ok_or(StoreError::NotFound)?;
    if trial.state != TrialState::Draft {
        return Err(StoreError::Conflict(format!(
            "trial {trial_id} is already {}",
            trial.state.as_str()
        )));
    }
    // The stored hash stays out of the message: shown to a reader of the
    // redacted design, it would let them test guesses of the concealed part.
    if trial.definition_sha256 != expected_sha256 {
        return Err(StoreError::Conflict(format!(
            "the definition of trial {trial_id} is not the {expected_sha256} that was reviewed; read the trial again"
        )));
    }
    Ok(trial)
}

pub fn raises_version(from_version: u32, to_version: u32) -> StoreResult<()> {
    if to_version <= from_version {
        return Err(StoreError::Conflict(format!(
            "an amendment must raise the version above {from_version}"
        )));
    }
    Ok(())
}

/// An active trial still at the version the amendment starts from.
pub fn amendable(
    trial: Option<TrialRecord>,
    trial_id: &str,
    from_version: u32,
) -> StoreResult<TrialRecord> {
    let trial = in_state(trial, trial_id, TrialState::Active, "an amendment")?;
    if trial.version != from_version {
        return Err(StoreError::Conflict(format!(
            "trial {trial_id} is at version {}, not {from_version}",
            trial.version
        )));
    }
    Ok(trial)
}

/// The reason recorded with an amended definition.
pub fn amendment_reason(audit: &AuditEntry) -> String {
    audit
        .details
        .get("reason")
        .and_then(|r| r.as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Refuses the commit if any cap is already reached, given the counts
/// (total, at the site, in the stratum); returns the site's count.
pub fn within_caps(counts: (i64, i64, i64), caps: &CapLimits) -> StoreResult<u32> {
    let count = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
    let (total, at_site, in_stratum) = (count(counts.0), count(counts.1), count(counts.2));
    match cap_breach(caps, total, at_site, in_stratum) {
        Some(kind) => Err(StoreError::CapReached(kind)),
        None => Ok(at_site),
    }
}

/// The stream moved from the expected version only if one row changed.
pub fn stream_advanced(rows_affected: u64) -> StoreResult<()> {
    match rows_affected {
        1 => Ok(()),
        _ => Err(StoreError::Fenced),
    }
}

pub fn not_in_error(
    existing: Option<AllocationRecord>,
    subject_id: &str,
) -> StoreResult<AllocationRecord> {
    let existing = existing.ok_or(StoreError::NotFound)?;
    if existing.in_error {
        return Err(already_in_error(subject_id));
    }
    Ok(existing)
}

/// The in-error UPDATE matched no row: a racing mark committed first.
pub fn marked_in_error(rows_affected: u64, subject_id: &str) -> StoreResult<()> {
    match rows_affected {
        1 => Ok(()),
        _ => Err(already_in_error(subject_id)),
    }
}

fn already_in_error(subject_id: &str) -> StoreError {
    StoreError::Conflict(format!(
        "subject {subject_id} is already marked randomised in error"
    ))
}

/// The commit's audit entry, with the position and number the store chose.
pub fn commit_audit(request: &CommitRequest, number: &str) -> AuditEntry {
    let mut audit = request.audit.clone();
    if let Some(details) = audit.details.as_object_mut() {
        details.insert("randomisation_number".into(), number.into());
    }
    audit
}

/// Whether `code` may be recorded for `subject_id`, given the code it has
/// and the subject already holding `code` in the trial. `Ok(None)`: insert.
pub fn code_recordable(
    existing: Option<String>,
    holder: Option<String>,
    subject_id: &str,
    code: &str,
) -> StoreResult<Option<CodeRecorded>> {
    match existing {
        Some(existing) if existing == code => Ok(Some(CodeRecorded::AlreadyRecorded)),
        // The codes themselves stay out of the message: they go to logs.
        Some(_) => Err(StoreError::Conflict(format!(
            "subject {subject_id} already has a different treatment code"
        ))),
        None => match holder {
            Some(other) if other != subject_id => Err(StoreError::Conflict(format!(
                "the treatment code for subject {subject_id} is already held by another subject"
            ))),
            _ => Ok(None),
        },
    }
}
