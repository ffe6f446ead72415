//! The SQL both stores run, in `$N` form (sqlx-sqlite binds `$N` by
//! number), and the rows both decode. Only locking and true dialect
//! differences live in `sqlite.rs` and `postgres.rs`.

use super::{AllocationRecord, StoreError, StoreResult, TrialRecord, TrialState};

/// Column lists as macros, so queries stay `&'static str` for sqlx. The
/// version columns are INTEGER (INT4 on PostgreSQL) and read through a CAST,
/// so both backends decode `i64` without a schema change that replicas still
/// running the previous binary could not read.
macro_rules! trial_columns {
    () => {
        "trial_id, CAST(version AS BIGINT) AS version, state, definition_yaml, definition_sha256, CAST(algorithm_version AS BIGINT) AS algorithm_version, sealed_seed, registered_at, activated_at, closed_at"
    };
}
pub(super) use trial_columns;

macro_rules! allocation_columns {
    () => {
        "sequence, trial_id, subject_id, site_id, stratum, stream_key, position, arm, randomisation_number, request_sha256, covariates_json, decision_json, CAST(trial_version AS BIGINT) AS trial_version, randomised_at, corrected_stratum, correction_reason, in_error, error_reason, (SELECT c.code FROM allocation_codes c WHERE c.trial_id = allocations.trial_id AND c.subject_id = allocations.subject_id) AS treatment_code"
    };
}
pub(super) use allocation_columns;

// ---------------------------------------------------------------- trials

pub const TRIAL: &str = concat!(
    "SELECT ",
    trial_columns!(),
    " FROM trials WHERE trial_id = $1"
);

pub const UPSERT_DRAFT: &str = "INSERT INTO trials (trial_id, version, state, definition_yaml, definition_sha256, registered_at)
     VALUES ($1, $2, 'draft', $3, $4, $5)
     ON CONFLICT (trial_id) DO UPDATE SET version = excluded.version, definition_yaml = excluded.definition_yaml,
     definition_sha256 = excluded.definition_sha256, registered_at = excluded.registered_at";

pub const ACTIVATE: &str = "UPDATE trials SET state = 'active', sealed_seed = $1, algorithm_version = $2, activated_at = $3
     WHERE trial_id = $4";

pub const AMEND: &str = "UPDATE trials SET version = $1, definition_yaml = $2, definition_sha256 = $3 WHERE trial_id = $4";

pub const CLOSE: &str = "UPDATE trials SET state = 'closed', closed_at = $1 WHERE trial_id = $2";

/// Keeps every frozen definition a trial has had.
pub const RECORD_VERSION: &str = "INSERT INTO trial_versions (trial_id, version, definition_yaml, definition_sha256, reason, recorded_at)
     VALUES ($1, $2, $3, $4, $5, $6)";

// ----------------------------------------------------------------- lists

pub const DELETE_LIST: &str = "DELETE FROM allocation_lists WHERE trial_id = $1";

pub const INSERT_LIST_ENTRY: &str =
    "INSERT INTO allocation_lists (trial_id, stratum, position, arm) VALUES ($1, $2, $3, $4)";

pub const LIST_SLOT: &str =
    "SELECT arm FROM allocation_lists WHERE trial_id = $1 AND stratum = $2 AND position = $3";

pub const WHOLE_LIST: &str =
    "SELECT stratum, position, arm FROM allocation_lists WHERE trial_id = $1
     ORDER BY stratum, position";

pub const LIST_LENGTHS: &str =
    "SELECT stratum, COUNT(*) FROM allocation_lists WHERE trial_id = $1 GROUP BY stratum";

// --------------------------------------------------------------- streams

pub const STREAM_VERSION: &str =
    "SELECT version FROM allocation_streams WHERE trial_id = $1 AND stream_key = $2";

/// The first commit of a stream; a row already there means it was fenced.
pub const START_STREAM: &str =
    "INSERT INTO allocation_streams (trial_id, stream_key, version) VALUES ($1, $2, 1)
     ON CONFLICT DO NOTHING";

/// The compare-and-set every later commit is.
pub const ADVANCE_STREAM: &str = "UPDATE allocation_streams SET version = version + 1
     WHERE trial_id = $1 AND stream_key = $2 AND version = $3";

// ----------------------------------------------------------- allocations

pub const ALLOCATION: &str = concat!(
    "SELECT ",
    allocation_columns!(),
    " FROM allocations WHERE trial_id = $1 AND subject_id = $2"
);

/// Total, at the site, in the stratum: read inside the commit's
/// transaction from the counter rows a trigger keeps (migration 0005), three
/// primary-key lookups whatever the trial's size. A missing row is zero.
pub const CAP_COUNTS: &str = "SELECT
       COALESCE((SELECT count FROM allocation_counts WHERE trial_id = $1 AND scope = 'total' AND member = ''), 0),
       COALESCE((SELECT count FROM allocation_counts WHERE trial_id = $1 AND scope = 'site' AND member = $2), 0),
       COALESCE((SELECT count FROM allocation_counts WHERE trial_id = $1 AND scope = 'stratum' AND member = $3), 0)";

pub const INSERT_ALLOCATION: &str = "INSERT INTO allocations (trial_id, subject_id, site_id, stratum, stream_key, position, arm,
     randomisation_number, request_sha256, covariates_json, decision_json, trial_version, randomised_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING sequence";

pub const STREAM_ALLOCATIONS: &str = concat!(
    "SELECT ",
    allocation_columns!(),
    " FROM allocations WHERE trial_id = $1 AND stream_key = $2 ORDER BY position"
);

pub const STREAM_ALLOCATIONS_FROM: &str = concat!(
    "SELECT ",
    allocation_columns!(),
    " FROM allocations WHERE trial_id = $1 AND stream_key = $2 AND position >= $3 ORDER BY position"
);

pub const COUNT_ROWS: &str =
    "SELECT site_id, stratum, in_error FROM allocations WHERE trial_id = $1";

pub const CORRECT_STRATUM: &str =
    "UPDATE allocations SET corrected_stratum = $1, correction_reason = $2
     WHERE trial_id = $3 AND subject_id = $4";

pub const MARK_IN_ERROR: &str = "UPDATE allocations SET in_error = TRUE, error_reason = $1
     WHERE trial_id = $2 AND subject_id = $3 AND NOT in_error";

// ----------------------------------------------------------------- codes

pub const CODE: &str = "SELECT code FROM allocation_codes WHERE trial_id = $1 AND subject_id = $2";

pub const CODE_HOLDER: &str =
    "SELECT subject_id FROM allocation_codes WHERE trial_id = $1 AND code = $2";

pub const INSERT_CODE: &str = "INSERT INTO allocation_codes (trial_id, subject_id, code, recorded_at) VALUES ($1, $2, $3, $4)";

/// Allocations still waiting for a code, in commit order across trials.
pub const WITHOUT_CODE: &str = concat!(
    "SELECT ",
    allocation_columns!(),
    " FROM allocations WHERE NOT EXISTS (SELECT 1 FROM allocation_codes c
        WHERE c.trial_id = allocations.trial_id AND c.subject_id = allocations.subject_id)
      AND trial_id IN (SELECT trial_id FROM trials WHERE state IN ('active', 'closed'))
      AND sequence > $1
      ORDER BY sequence LIMIT $2"
);

// ------------------------------------------------------------------ rows

#[derive(Debug, sqlx::FromRow)]
pub struct TrialRow {
    trial_id: String,
    version: i64,
    state: String,
    definition_yaml: String,
    definition_sha256: String,
    algorithm_version: Option<i64>,
    sealed_seed: Option<Vec<u8>>,
    registered_at: String,
    activated_at: Option<String>,
    closed_at: Option<String>,
}

impl TryFrom<TrialRow> for TrialRecord {
    type Error = StoreError;

    fn try_from(row: TrialRow) -> StoreResult<Self> {
        Ok(TrialRecord {
            version: narrow(row.version, "trials.version")?,
            state: TrialState::parse(&row.state).ok_or_else(|| {
                StoreError::Database(format!("unknown trial state {}", row.state))
            })?,
            algorithm_version: row
                .algorithm_version
                .map(|v| narrow(v, "trials.algorithm_version"))
                .transpose()?,
            trial_id: row.trial_id,
            definition_yaml: row.definition_yaml,
            definition_sha256: row.definition_sha256,
            sealed_seed: row.sealed_seed,
            registered_at: row.registered_at,
            activated_at: row.activated_at,
            closed_at: row.closed_at,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub struct AllocationRow {
    sequence: i64,
    trial_id: String,
    subject_id: String,
    site_id: String,
    stratum: String,
    stream_key: String,
    position: i64,
    arm: String,
    randomisation_number: String,
    request_sha256: String,
    covariates_json: String,
    decision_json: String,
    trial_version: i64,
    randomised_at: String,
    corrected_stratum: Option<String>,
    correction_reason: Option<String>,
    in_error: bool,
    error_reason: Option<String>,
    treatment_code: Option<String>,
}

impl TryFrom<AllocationRow> for AllocationRecord {
    type Error = StoreError;

    fn try_from(row: AllocationRow) -> StoreResult<Self> {
        Ok(AllocationRecord {
            position: narrow(row.position, "allocations.position")?,
            trial_version: narrow(row.trial_version, "allocations.trial_version")?,
            sequence: row.sequence,
            trial_id: row.trial_id,
            subject_id: row.subject_id,
            site_id: row.site_id,
            stratum: row.stratum,
            stream_key: row.stream_key,
            arm: row.arm,
            randomisation_number: row.randomisation_number,
            request_sha256: row.request_sha256,
            covariates_json: row.covariates_json,
            decision_json: row.decision_json,
            randomised_at: row.randomised_at,
            corrected_stratum: row.corrected_stratum,
            correction_reason: row.correction_reason,
            in_error: row.in_error,
            error_reason: row.error_reason,
            treatment_code: row.treatment_code,
        })
    }
}

pub fn allocation_records(rows: Vec<AllocationRow>) -> StoreResult<Vec<AllocationRecord>> {
    rows.into_iter().map(AllocationRecord::try_from).collect()
}

/// A stored integer as the narrower type the domain uses.
pub fn narrow<T: TryFrom<i64>>(value: i64, column: &str) -> StoreResult<T> {
    T::try_from(value)
        .map_err(|_| StoreError::Database(format!("{column} {value} is out of range")))
}

/// A domain count or position as the database's integer.
pub fn wide(value: u64) -> StoreResult<i64> {
    i64::try_from(value).map_err(|_| StoreError::Database(format!("{value} is out of range")))
}
