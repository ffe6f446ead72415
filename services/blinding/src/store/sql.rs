//! The SQL both stores run, in `$N` form (sqlx-sqlite binds `$N` by
//! number), and the rows both decode. Only locking lives in `sqlite.rs` and
//! `postgres.rs`.

use super::{
    Assignment, CodeEntry, CodeSource, DefinitionSnapshot, Notification, PeriodRecord, RevealKind,
    RevealRecord, StoreError, StoreResult,
};

// ---------------------------------------------------------------- trials

/// Whether a trial's pools are stored. A write about a trial reads it first:
/// plainly on SQLite, `FOR UPDATE` on PostgreSQL (`postgres.rs`).
pub const TRIAL: &str = "SELECT trial_id FROM code_trials WHERE trial_id = $1";

/// Records a trial's pools as stored, unless they already are: no row
/// inserted means a Conflict. On PostgreSQL a concurrent insert of the same
/// trial waits for the first to end, then inserts nothing.
pub const INSERT_TRIAL: &str =
    "INSERT INTO code_trials (trial_id, pools_stored_at, definition_version, definition_yaml, definition_sha256)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (trial_id) DO NOTHING";

pub const DEFINITION: &str = "SELECT definition_version, definition_yaml, definition_sha256 FROM code_trials WHERE trial_id = $1";

/// Moves the snapshot on, only to a higher version.
pub const REFRESH_DEFINITION: &str =
    "UPDATE code_trials SET definition_version = $2, definition_yaml = $3, definition_sha256 = $4
     WHERE trial_id = $1 AND definition_version < $2";

// ----------------------------------------------------------------- pools

pub const INSERT_POOL: &str = "INSERT INTO code_pools (trial_id, arm_id) VALUES ($1, $2)";

/// Followed by one `VALUES` row per code (a batch of [`CODES_PER_INSERT`]).
pub const INSERT_CODES: &str =
    "INSERT INTO treatment_codes (trial_id, arm_id, position, code, source) ";

/// Codes per INSERT: one round trip per batch, not per code, and 2,500
/// binds, well under both backends' limits (SQLite 32,766, PostgreSQL 65,535).
pub const CODES_PER_INSERT: usize = 500;

/// The position after the arm's last code: where a top-up continues.
pub const NEXT_POSITION: &str = "SELECT COALESCE(MAX(position) + 1, 0) FROM treatment_codes
     WHERE trial_id = $1 AND arm_id = $2";

/// Followed by `(code, ...)`: which of the given codes the trial already has,
/// in any arm (a batch of [`CODES_PER_INSERT`]).
pub const CODES_STORED: &str = "SELECT code FROM treatment_codes WHERE trial_id = ";

/// How many of the trial's pools have no code left. Any at all refuses
/// every arm's assignment: refusing only the empty arm's subjects would
/// tell them their arm.
///
/// Positions run from 0 without gaps (top-ups append), so a pool is empty
/// when it has no code at its `issued` position: one index probe per arm,
/// not a count of the pool, inside the assignment's transaction.
pub const EMPTY_POOLS: &str = "SELECT COUNT(*) FROM code_pools p
     WHERE p.trial_id = $1 AND NOT EXISTS (SELECT 1 FROM treatment_codes c
         WHERE c.trial_id = p.trial_id AND c.arm_id = p.arm_id AND c.position = p.issued)";

/// How many codes of the arm's pool were issued: the next code's position.
pub const POOL_ISSUED: &str = "SELECT issued FROM code_pools WHERE trial_id = $1 AND arm_id = $2";

pub const CODE_AT: &str =
    "SELECT code FROM treatment_codes WHERE trial_id = $1 AND arm_id = $2 AND position = $3";

/// Moves the pool's count on by one, only from the count that was read.
pub const ISSUE: &str =
    "UPDATE code_pools SET issued = issued + 1 WHERE trial_id = $1 AND arm_id = $2 AND issued = $3";

/// (arm, pool size, issued) for each of the trial's pools.
pub const POOL_COUNTS: &str = "SELECT p.arm_id, COUNT(c.code), p.issued FROM code_pools p
     LEFT JOIN treatment_codes c ON c.trial_id = p.trial_id AND c.arm_id = p.arm_id
     WHERE p.trial_id = $1 GROUP BY p.arm_id, p.issued ORDER BY p.arm_id";

pub const CODE: &str = "SELECT c.arm_id, c.position, c.source, a.subject_id FROM treatment_codes c
     LEFT JOIN code_assignments a ON a.trial_id = c.trial_id AND a.code = c.code
     WHERE c.trial_id = $1 AND c.code = $2";

// ----------------------------------------------------------- assignments

pub const ASSIGNMENT: &str =
    "SELECT trial_id, subject_id, site_id, arm_id, code, assigned_at FROM code_assignments
     WHERE trial_id = $1 AND subject_id = $2";

pub const INSERT_ASSIGNMENT: &str =
    "INSERT INTO code_assignments (trial_id, subject_id, site_id, arm_id, code, assigned_at)
     VALUES ($1, $2, $3, $4, $5, $6)";

// --------------------------------------------------------------- reveals

pub const INSERT_REVEAL: &str =
    "INSERT INTO reveals (audit_seq, kind, trial_id, subject_id, site_id, arm_id, actor, role,
     reason_category, reason, case_id, period_id, withdraws, at, salt)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";

pub const REVEALS: &str =
    "SELECT audit_seq, kind, trial_id, subject_id, site_id, arm_id, actor, role,
     reason_category, reason, case_id, period_id, withdraws, at, salt FROM reveals
     WHERE trial_id = $1 AND subject_id = $2 ORDER BY audit_seq";

pub const REVEAL_COUNTS: &str =
    "SELECT kind, COUNT(*) FROM reveals WHERE trial_id = $1 GROUP BY kind";

pub const INSERT_NOTIFICATION: &str =
    "INSERT INTO unblinding_notifications (cursor, trial_id, site_id, subject_id, kind, at,
     actor, role, reason_category) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

pub const NOTIFICATIONS: &str =
    "SELECT cursor, trial_id, site_id, subject_id, kind, at, actor, role, reason_category
     FROM unblinding_notifications WHERE trial_id = $1 AND cursor > $2
     ORDER BY cursor LIMIT $3";

// ---------------------------------------------------------------- periods

pub const PERIOD_RECORD: &str =
    "SELECT trial_id, subject_id, period_id, assigned_arm_id, given_arm_id, deviation, note,
     actor, recorded_at, audit_seq, salt FROM period_records
     WHERE trial_id = $1 AND subject_id = $2 AND period_id = $3";

pub const PERIOD_RECORDS: &str =
    "SELECT trial_id, subject_id, period_id, assigned_arm_id, given_arm_id, deviation, note,
     actor, recorded_at, audit_seq, salt FROM period_records
     WHERE trial_id = $1 AND subject_id = $2 ORDER BY audit_seq";

pub const INSERT_PERIOD_RECORD: &str =
    "INSERT INTO period_records (trial_id, subject_id, period_id, assigned_arm_id, given_arm_id,
     deviation, note, actor, recorded_at, audit_seq, salt)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

pub const DEVIATIONS: &str =
    "SELECT COUNT(*) FROM period_records WHERE trial_id = $1 AND deviation = $2";

// ------------------------------------------------------------------ rows

#[derive(Debug, sqlx::FromRow)]
pub struct AssignmentRow {
    trial_id: String,
    subject_id: String,
    site_id: String,
    arm_id: String,
    code: String,
    assigned_at: String,
}

impl From<AssignmentRow> for Assignment {
    fn from(row: AssignmentRow) -> Self {
        Assignment {
            trial_id: row.trial_id,
            subject_id: row.subject_id,
            site_id: row.site_id,
            arm_id: row.arm_id,
            code: row.code,
            assigned_at: row.assigned_at,
        }
    }
}

#[derive(Debug, sqlx::FromRow)]
pub struct CodeRow {
    arm_id: String,
    position: i64,
    source: String,
    subject_id: Option<String>,
}

impl TryFrom<CodeRow> for CodeEntry {
    type Error = StoreError;

    fn try_from(row: CodeRow) -> StoreResult<Self> {
        Ok(CodeEntry {
            position: from_column(row.position, "treatment_codes.position")?,
            source: CodeSource::parse(&row.source).ok_or_else(|| {
                StoreError::Database(format!("unknown code source {}", row.source))
            })?,
            arm_id: row.arm_id,
            subject_id: row.subject_id,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub struct DefinitionRow {
    definition_version: i64,
    definition_yaml: String,
    definition_sha256: String,
}

impl TryFrom<DefinitionRow> for DefinitionSnapshot {
    type Error = StoreError;

    fn try_from(row: DefinitionRow) -> StoreResult<Self> {
        Ok(DefinitionSnapshot {
            version: from_column(row.definition_version, "code_trials.definition_version")?,
            definition_yaml: row.definition_yaml,
            definition_sha256: row.definition_sha256,
        })
    }
}

pub fn kind_of(text: &str) -> StoreResult<RevealKind> {
    RevealKind::parse(text)
        .ok_or_else(|| StoreError::Database(format!("unknown reveal kind {text}")))
}

#[derive(Debug, sqlx::FromRow)]
pub struct RevealRow {
    audit_seq: i64,
    kind: String,
    trial_id: String,
    subject_id: String,
    site_id: String,
    arm_id: String,
    actor: String,
    role: String,
    reason_category: Option<String>,
    reason: Option<String>,
    case_id: Option<String>,
    period_id: Option<String>,
    withdraws: bool,
    at: String,
    salt: String,
}

impl TryFrom<RevealRow> for RevealRecord {
    type Error = StoreError;

    fn try_from(row: RevealRow) -> StoreResult<Self> {
        Ok(RevealRecord {
            audit_seq: from_column(row.audit_seq, "reveals.audit_seq")?,
            kind: kind_of(&row.kind)?,
            trial_id: row.trial_id,
            subject_id: row.subject_id,
            site_id: row.site_id,
            arm_id: row.arm_id,
            actor: row.actor,
            role: row.role,
            reason_category: row.reason_category,
            reason: row.reason,
            case_id: row.case_id,
            period_id: row.period_id,
            withdraws: row.withdraws,
            at: row.at,
            salt: row.salt,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub struct NotificationRow {
    cursor: i64,
    trial_id: String,
    site_id: String,
    subject_id: String,
    kind: String,
    at: String,
    actor: String,
    role: String,
    reason_category: Option<String>,
}

impl TryFrom<NotificationRow> for Notification {
    type Error = StoreError;

    fn try_from(row: NotificationRow) -> StoreResult<Self> {
        Ok(Notification {
            cursor: from_column(row.cursor, "unblinding_notifications.cursor")?,
            kind: kind_of(&row.kind)?,
            trial_id: row.trial_id,
            site_id: row.site_id,
            subject_id: row.subject_id,
            at: row.at,
            actor: row.actor,
            role: row.role,
            reason_category: row.reason_category,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub struct PeriodRow {
    trial_id: String,
    subject_id: String,
    period_id: String,
    assigned_arm_id: String,
    given_arm_id: String,
    deviation: bool,
    note: String,
    actor: String,
    recorded_at: String,
    audit_seq: i64,
    salt: String,
}

impl TryFrom<PeriodRow> for PeriodRecord {
    type Error = StoreError;

    fn try_from(row: PeriodRow) -> StoreResult<Self> {
        Ok(PeriodRecord {
            audit_seq: from_column(row.audit_seq, "period_records.audit_seq")?,
            trial_id: row.trial_id,
            subject_id: row.subject_id,
            period_id: row.period_id,
            assigned_arm_id: row.assigned_arm_id,
            given_arm_id: row.given_arm_id,
            deviation: row.deviation,
            note: row.note,
            actor: row.actor,
            recorded_at: row.recorded_at,
            salt: row.salt,
        })
    }
}

/// A stored integer as the domain's unsigned type.
pub fn from_column<T: TryFrom<i64>>(value: i64, column: &str) -> StoreResult<T> {
    T::try_from(value)
        .map_err(|_| StoreError::Database(format!("{column} {value} is out of range")))
}
