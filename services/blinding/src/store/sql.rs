//! The SQL both stores run, in `$N` form (sqlx-sqlite binds `$N` by
//! number), and the rows both decode. Only locking lives in `sqlite.rs` and
//! `postgres.rs`.

use super::{Assignment, CodeEntry, CodeSource, StoreError, StoreResult};

// ---------------------------------------------------------------- trials

/// Whether a trial's pools are stored. A write about a trial reads it first:
/// plainly on SQLite, `FOR UPDATE` on PostgreSQL (`postgres.rs`).
pub const TRIAL: &str = "SELECT trial_id FROM code_trials WHERE trial_id = $1";

/// Records a trial's pools as stored, unless they already are: no row
/// inserted means a Conflict. On PostgreSQL a concurrent insert of the same
/// trial waits for the first to end, then inserts nothing.
pub const INSERT_TRIAL: &str = "INSERT INTO code_trials (trial_id, pools_stored_at) VALUES ($1, $2)
     ON CONFLICT (trial_id) DO NOTHING";

// ----------------------------------------------------------------- pools

pub const INSERT_POOL: &str = "INSERT INTO code_pools (trial_id, arm_id) VALUES ($1, $2)";

pub const INSERT_CODE: &str = "INSERT INTO treatment_codes (trial_id, arm_id, position, code, source) VALUES ($1, $2, $3, $4, $5)";

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
    "SELECT trial_id, subject_id, arm_id, code, assigned_at FROM code_assignments
     WHERE trial_id = $1 AND subject_id = $2";

pub const INSERT_ASSIGNMENT: &str =
    "INSERT INTO code_assignments (trial_id, subject_id, arm_id, code, assigned_at)
     VALUES ($1, $2, $3, $4, $5)";

// ------------------------------------------------------------------ rows

#[derive(Debug, sqlx::FromRow)]
pub struct AssignmentRow {
    trial_id: String,
    subject_id: String,
    arm_id: String,
    code: String,
    assigned_at: String,
}

impl From<AssignmentRow> for Assignment {
    fn from(row: AssignmentRow) -> Self {
        Assignment {
            trial_id: row.trial_id,
            subject_id: row.subject_id,
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

/// A stored integer as the domain's unsigned type.
pub fn from_column<T: TryFrom<i64>>(value: i64, column: &str) -> StoreResult<T> {
    T::try_from(value)
        .map_err(|_| StoreError::Database(format!("{column} {value} is out of range")))
}
