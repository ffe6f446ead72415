//! The SQL both stores run, in `$N` form, and the rows both decode. Only
//! locking lives in `sqlite.rs` and `postgres.rs`.

use super::{
    AssessmentRow, CaseRow, ObligationRow, SealedRecord, StoreError, StoreResult,
    StoredClassification, VersionRow,
};

// ----------------------------------------------------------------- cases

pub const INSERT_CASE: &str = "INSERT INTO cases (case_id, trial_id, site_id, subject_id,
     first_received_at, day_zero, classification, not_reportable_reason, sponsor_time_zone)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (case_id) DO NOTHING";

macro_rules! case_columns {
    () => {
        "SELECT case_id, trial_id, site_id, subject_id, first_received_at, day_zero,
         classification, not_reportable_reason, sponsor_time_zone FROM cases"
    };
}

pub const CASE: &str = concat!(case_columns!(), " WHERE case_id = $1");

pub const TRIAL_CASES: &str = concat!(
    case_columns!(),
    " WHERE trial_id = $1 ORDER BY first_received_at, case_id"
);

pub const SET_CLASSIFICATION: &str = "UPDATE cases SET classification = $2 WHERE case_id = $1";

pub const SETTLE: &str = "UPDATE cases SET classification = $2, day_zero = $3,
     not_reportable_reason = $4 WHERE case_id = $1";

pub const PENDING_CASES: &str = "SELECT case_id FROM cases WHERE classification = 'pending'
     ORDER BY first_received_at, case_id LIMIT $1";

pub const CASE_COUNT: &str = "SELECT COUNT(*) FROM cases";

// -------------------------------------------------------------- versions

pub const INSERT_VERSION: &str = "INSERT INTO case_versions (case_id, version, report_json,
     received_at, late, expected, rsi_version) VALUES ($1, $2, $3, $4, $5, $6, $7)";

pub const VERSIONS: &str = "SELECT case_id, version, report_json, received_at, late, expected,
     rsi_version FROM case_versions WHERE case_id = $1 ORDER BY version";

pub const LATEST_VERSION: &str =
    "SELECT COALESCE(MAX(version), 0) FROM case_versions WHERE case_id = $1";

// ----------------------------------------------------------- assessments

pub const INSERT_ASSESSMENT: &str = "INSERT INTO sponsor_assessments (case_id, version,
     causality, comment, by_actor, at) VALUES ($1, $2, $3, $4, $5, $6)";

pub const ASSESSMENTS: &str = "SELECT case_id, version, causality, comment, by_actor, at
     FROM sponsor_assessments WHERE case_id = $1 ORDER BY version";

pub const ASSESSMENT_COUNT: &str = "SELECT COUNT(*) FROM sponsor_assessments WHERE case_id = $1";

pub const ASSESSED: &str =
    "SELECT COUNT(*) FROM sponsor_assessments WHERE case_id = $1 AND version = $2";

// ----------------------------------------------------------- obligations

/// Once per (case, kind): a second is not inserted.
pub const INSERT_OBLIGATION: &str = "INSERT INTO obligations (obligation_id, case_id, trial_id,
     kind, due_date, due_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING";

macro_rules! obligation_columns {
    () => {
        "SELECT obligation_id, case_id, trial_id, kind, due_date, due_at, submitted_at,
         recipient, acknowledgement_id FROM obligations"
    };
}

pub const CASE_OBLIGATIONS: &str = concat!(
    obligation_columns!(),
    " WHERE case_id = $1 ORDER BY due_at, obligation_id"
);

pub const OBLIGATION: &str = concat!(obligation_columns!(), " WHERE obligation_id = $1");

/// Obligations: (of one trial `$1`?, including submitted ones?).
pub fn obligations(trial: bool, include_submitted: bool) -> &'static str {
    match (trial, include_submitted) {
        (true, true) => concat!(
            obligation_columns!(),
            " WHERE trial_id = $1 ORDER BY obligation_id"
        ),
        (true, false) => concat!(
            obligation_columns!(),
            " WHERE trial_id = $1 AND submitted_at IS NULL ORDER BY obligation_id"
        ),
        (false, true) => concat!(obligation_columns!(), " ORDER BY obligation_id"),
        (false, false) => concat!(
            obligation_columns!(),
            " WHERE submitted_at IS NULL ORDER BY obligation_id"
        ),
    }
}

/// Closes an open obligation; none moved means it was already closed.
pub const SUBMIT: &str = "UPDATE obligations SET submitted_at = $2, recipient = $3,
     acknowledgement_id = $4 WHERE obligation_id = $1 AND submitted_at IS NULL";

// ---------------------------------------------------------------- sealed

pub const INSERT_SEALED: &str =
    "INSERT INTO sealed_records (audit_seq, content, salt) VALUES ($1, $2, $3)";

pub const SEALED: &str = "SELECT audit_seq, content, salt FROM sealed_records WHERE audit_seq = $1";

// ------------------------------------------------------------------ rows

#[derive(Debug, sqlx::FromRow)]
pub struct CaseDbRow {
    case_id: String,
    trial_id: String,
    site_id: String,
    subject_id: String,
    first_received_at: String,
    day_zero: Option<String>,
    classification: String,
    not_reportable_reason: Option<String>,
    sponsor_time_zone: String,
}

impl TryFrom<CaseDbRow> for CaseRow {
    type Error = StoreError;

    fn try_from(row: CaseDbRow) -> StoreResult<Self> {
        Ok(CaseRow {
            classification: classification(&row.classification)?,
            case_id: row.case_id,
            trial_id: row.trial_id,
            site_id: row.site_id,
            subject_id: row.subject_id,
            first_received_at: row.first_received_at,
            day_zero: row.day_zero,
            not_reportable_reason: row.not_reportable_reason,
            sponsor_time_zone: row.sponsor_time_zone,
        })
    }
}

pub fn classification(text: &str) -> StoreResult<StoredClassification> {
    StoredClassification::parse(text)
        .ok_or_else(|| StoreError::Database(format!("unknown classification {text}")))
}

#[derive(Debug, sqlx::FromRow)]
pub struct VersionDbRow {
    case_id: String,
    version: i64,
    report_json: String,
    received_at: String,
    late: bool,
    expected: bool,
    rsi_version: String,
}

impl TryFrom<VersionDbRow> for VersionRow {
    type Error = StoreError;

    fn try_from(row: VersionDbRow) -> StoreResult<Self> {
        Ok(VersionRow {
            version: from_column(row.version, "case_versions.version")?,
            case_id: row.case_id,
            report_json: row.report_json,
            received_at: row.received_at,
            late: row.late,
            expected: row.expected,
            rsi_version: row.rsi_version,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub struct AssessmentDbRow {
    case_id: String,
    version: i64,
    causality: String,
    comment: String,
    by_actor: String,
    at: String,
}

impl TryFrom<AssessmentDbRow> for AssessmentRow {
    type Error = StoreError;

    fn try_from(row: AssessmentDbRow) -> StoreResult<Self> {
        Ok(AssessmentRow {
            version: from_column(row.version, "sponsor_assessments.version")?,
            case_id: row.case_id,
            causality: row.causality,
            comment: row.comment,
            by: row.by_actor,
            at: row.at,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub struct ObligationDbRow {
    obligation_id: String,
    case_id: String,
    trial_id: String,
    kind: String,
    due_date: String,
    due_at: String,
    submitted_at: Option<String>,
    recipient: Option<String>,
    acknowledgement_id: Option<String>,
}

impl From<ObligationDbRow> for ObligationRow {
    fn from(row: ObligationDbRow) -> Self {
        ObligationRow {
            obligation_id: row.obligation_id,
            case_id: row.case_id,
            trial_id: row.trial_id,
            kind: row.kind,
            due_date: row.due_date,
            due_at: row.due_at,
            submitted_at: row.submitted_at,
            recipient: row.recipient,
            acknowledgement_id: row.acknowledgement_id,
        }
    }
}

#[derive(Debug, sqlx::FromRow)]
pub struct SealedDbRow {
    audit_seq: i64,
    content: String,
    salt: String,
}

impl TryFrom<SealedDbRow> for SealedRecord {
    type Error = StoreError;

    fn try_from(row: SealedDbRow) -> StoreResult<Self> {
        Ok(SealedRecord {
            audit_seq: from_column(row.audit_seq, "sealed_records.audit_seq")?,
            content: row.content,
            salt: row.salt,
        })
    }
}

/// A stored integer as the domain's unsigned type.
pub fn from_column<T: TryFrom<i64>>(value: i64, column: &str) -> StoreResult<T> {
    T::try_from(value)
        .map_err(|_| StoreError::Database(format!("{column} {value} is out of range")))
}
