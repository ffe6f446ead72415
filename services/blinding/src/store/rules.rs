//! Decisions both stores take the same way on what they read inside a
//! write transaction, so the backends differ only in how they lock.

use std::collections::{BTreeMap, HashSet};

use equipoise_common::audit::AuditEntry;

use super::sql::from_column;
use super::{
    Assignment, NewPeriodRecord, NewReveal, PeriodRecord, RevealCounts, RevealKind, StoreError,
    StoreResult,
};
use crate::codes::{CodePool, PoolCounts};

/// Pools the store can keep: at least one, none empty, each arm once and
/// each code once across the trial. The domain's generation and upload
/// checks give more; these are what the schema relies on.
pub fn storable(pools: &[CodePool]) -> StoreResult<()> {
    if pools.is_empty() {
        return Err(StoreError::Invalid("no code pools given".into()));
    }
    let mut arms = HashSet::new();
    let mut codes = HashSet::new();
    for pool in pools {
        if !arms.insert(pool.arm_id.as_str()) {
            return Err(StoreError::Invalid(format!(
                "arm '{}' has more than one pool",
                pool.arm_id
            )));
        }
        if pool.codes.is_empty() {
            return Err(StoreError::Invalid(format!(
                "arm '{}' has an empty pool",
                pool.arm_id
            )));
        }
        if let Some(code) = pool.codes.iter().find(|c| !codes.insert(c.as_str())) {
            // Names the code, not the arms it is in.
            return Err(StoreError::Invalid(format!(
                "code '{code}' appears more than once"
            )));
        }
    }
    Ok(())
}

/// Codes a top-up can append: at least one, each arm once and each code
/// once. Unlike [`storable`], an arm may be left out or have no codes.
pub fn addable(pools: &[CodePool]) -> StoreResult<()> {
    if pools.iter().all(|pool| pool.codes.is_empty()) {
        return Err(StoreError::Invalid("no codes given".into()));
    }
    let mut arms = HashSet::new();
    let mut codes = HashSet::new();
    for pool in pools {
        if !arms.insert(pool.arm_id.as_str()) {
            return Err(StoreError::Invalid(format!(
                "arm '{}' is given more than once",
                pool.arm_id
            )));
        }
        if let Some(code) = pool.codes.iter().find(|c| !codes.insert(c.as_str())) {
            // Names the code, not the arms it is in.
            return Err(StoreError::Invalid(format!(
                "code '{code}' appears more than once"
            )));
        }
    }
    Ok(())
}

/// A top-up names only arms that have a pool.
pub fn topped_up_arm(issued: Option<i64>, arm_id: &str) -> StoreResult<()> {
    match issued {
        Some(_) => Ok(()),
        None => Err(StoreError::Invalid(format!(
            "the trial has no code pool for arm '{arm_id}'"
        ))),
    }
}

/// Codes a top-up would add twice to the trial refuse the whole top-up.
pub fn none_taken(taken: Vec<String>) -> StoreResult<()> {
    if taken.is_empty() {
        Ok(())
    } else {
        Err(StoreError::CodesTaken(taken))
    }
}

/// The trial's row was inserted only if its pools were not stored yet.
pub fn first_pools(rows_inserted: u64, trial_id: &str) -> StoreResult<()> {
    match rows_inserted {
        1 => Ok(()),
        _ => Err(StoreError::Conflict(format!(
            "trial {trial_id} already has code pools; they are never replaced"
        ))),
    }
}

/// A repeat for an allocation that has a code: the same arm gets the same
/// assignment back, another arm is a Conflict.
pub fn repeat(existing: Assignment, site_id: &str, arm_id: &str) -> StoreResult<Assignment> {
    if existing.site_id != site_id {
        return Err(StoreError::Conflict(format!(
            "subject {} of trial {} already has a code, at another site",
            existing.subject_id, existing.trial_id
        )));
    }
    if existing.arm_id != arm_id {
        return Err(StoreError::Conflict(format!(
            "subject {} of trial {} already has a code, for another arm",
            existing.subject_id, existing.trial_id
        )));
    }
    Ok(existing)
}

/// The arm's pool must exist; returns how many of its codes were issued.
pub fn pool_issued(issued: Option<i64>, arm_id: &str) -> StoreResult<i64> {
    issued.ok_or_else(|| StoreError::UnknownArm {
        arm_id: arm_id.to_owned(),
    })
}

/// No pool of the trial may be empty: one empty pool refuses every arm,
/// with the same error, so the refusal names no arm.
pub fn no_pool_empty(empty_pools: i64, trial_id: &str) -> StoreResult<()> {
    if empty_pools == 0 {
        Ok(())
    } else {
        Err(StoreError::PoolEmpty {
            trial_id: trial_id.to_owned(),
        })
    }
}

/// The code at the next position, or the pool is empty.
pub fn next_code(code: Option<String>, trial_id: &str) -> StoreResult<String> {
    code.ok_or_else(|| StoreError::PoolEmpty {
        trial_id: trial_id.to_owned(),
    })
}

/// The count moved on only if one row changed; under the write's lock it
/// always does, so anything else is a broken invariant, not a race to retry.
pub fn issued_once(rows_affected: u64) -> StoreResult<()> {
    match rows_affected {
        1 => Ok(()),
        n => Err(StoreError::Database(format!(
            "issuing a code changed {n} pool rows"
        ))),
    }
}

/// The assignment's audit entry, with the code the store chose (never the arm).
pub fn assignment_audit(audit: AuditEntry, code: &str) -> AuditEntry {
    let mut audit = audit;
    if let Some(details) = audit.details.as_object_mut() {
        details.insert("code".into(), code.into());
    }
    audit
}

/// (arm, pool size, issued) rows as each arm's counts. Nothing is withdrawn
/// yet, so what remains is what was not issued.
pub fn pool_counts(rows: Vec<(String, i64, i64)>) -> StoreResult<BTreeMap<String, PoolCounts>> {
    rows.into_iter()
        .map(|(arm_id, size, issued)| {
            let pool_size: u32 = from_column(size, "pool size")?;
            let issued: u32 = from_column(issued, "code_pools.issued")?;
            let counts = PoolCounts {
                pool_size,
                issued,
                remaining: pool_size.saturating_sub(issued),
            };
            Ok((arm_id, counts))
        })
        .collect()
}

/// A fresh random salt for a side row, as hex. Without it, every field of
/// a row but the arm is readable by a blinded auditor, so hashing the row
/// once per arm would find the arm its sha256 hides.
pub fn new_salt() -> StoreResult<String> {
    // The OS's generator, as for a master seed.
    let bytes = equipoise_stream::MasterSeed::from_os()
        .map_err(|e| StoreError::Unavailable(format!("no randomness for a salt: {e}")))?;
    Ok(hex::encode(bytes.0))
}

/// The sha256 of a reveal row's content and salt: what its audit record
/// chains in place of the arm, so a blinded export still verifies against
/// the row, but cannot be recomputed for each arm without the salt.
pub fn reveal_sha256(reveal: &NewReveal, at: &str, actor: &str, role: &str, salt: &str) -> String {
    use sha2::{Digest, Sha256};
    let row = serde_json::json!({
        "kind": reveal.kind.as_str(),
        "trial_id": reveal.trial_id,
        "subject_id": reveal.subject_id,
        "site_id": reveal.site_id,
        "arm_id": reveal.arm_id,
        "actor": actor,
        "role": role,
        "reason_category": reveal.reason_category,
        "reason": reveal.reason,
        "case_id": reveal.case_id,
        "period_id": reveal.period_id,
        "withdraws": reveal.withdraws,
        "at": at,
        "salt": salt,
    });
    hex::encode(Sha256::digest(row.to_string().as_bytes()))
}

/// The sha256 of a period record's content and salt, chained in place of
/// its arms (salted as [`reveal_sha256`]).
pub fn period_sha256(record: &NewPeriodRecord, at: &str, actor: &str, salt: &str) -> String {
    use sha2::{Digest, Sha256};
    let row = serde_json::json!({
        "trial_id": record.trial_id,
        "subject_id": record.subject_id,
        "period_id": record.period_id,
        "assigned_arm_id": record.assigned_arm_id,
        "given_arm_id": record.given_arm_id,
        "deviation": record.deviation(),
        "note": record.note,
        "actor": actor,
        "recorded_at": at,
        "salt": salt,
    });
    hex::encode(Sha256::digest(row.to_string().as_bytes()))
}

/// Adds `key: value` to an audit entry's details.
pub fn with_detail(audit: AuditEntry, key: &str, value: &str) -> AuditEntry {
    let mut audit = audit;
    if let Some(details) = audit.details.as_object_mut() {
        details.insert(key.into(), value.into());
    }
    audit
}

/// A period already recorded: the same record again is a repeat, another
/// is a Conflict. Names no arm: the caller is unblinded, the log may not be.
pub fn period_repeat(
    existing: PeriodRecord,
    record: &NewPeriodRecord,
) -> StoreResult<PeriodRecord> {
    let same = existing.assigned_arm_id == record.assigned_arm_id
        && existing.given_arm_id == record.given_arm_id
        && existing.note == record.note;
    if !same {
        return Err(StoreError::Conflict(format!(
            "period {} of subject {} in trial {} already has a different record of the treatment given",
            record.period_id, record.subject_id, record.trial_id
        )));
    }
    Ok(existing)
}

/// (kind, count) rows and the deviation count as the trial's counts.
pub fn reveal_counts(rows: Vec<(String, i64)>, deviations: i64) -> StoreResult<RevealCounts> {
    let mut counts = RevealCounts {
        deviations: from_column(deviations, "deviation count")?,
        ..RevealCounts::default()
    };
    for (kind, count) in rows {
        let count: u32 = from_column(count, "reveal count")?;
        match super::sql::kind_of(&kind)? {
            RevealKind::Emergency => counts.emergency = count,
            RevealKind::SafetyReview => counts.safety_reviews = count,
            RevealKind::PlannedPeriod => counts.planned = count,
            RevealKind::Preparation => counts.preparation = count,
        }
    }
    Ok(counts)
}
