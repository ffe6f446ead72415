//! Storage of the safety service behind one trait: cases, their versions
//! (never overwritten), the sponsor's causality assessments, the regulatory
//! obligations, and the service's own hash-chained audit trail. SQLite is
//! the embedded default, PostgreSQL serves replicas; both must pass
//! [`conformance`].
//!
//! Masking in the trail (DESIGN §8): a blinded auditor reads the chained
//! details, so no write that could tell a SUSAR from a not-reportable case
//! puts it there. Such writes (settling a classification, adding a version
//! or an assessment, which may create obligations, and recording a
//! submission) chain only `sealed_sha256`, the salted sha256 of a sealed
//! side record (`sealed_records`, keyed by the audit seq), and every one of
//! them does so whatever the outcome, so the shape of the trail tells
//! nothing either.
//!
//! Layout as in the blinding service: the SQL and rows both backends share
//! (`sql.rs`), the decisions they share (`rules.rs`), the transactions
//! (`shared.rs`, a macro each backend expands), and locking per backend
//! (`sqlite.rs`, `postgres.rs`).

use async_trait::async_trait;
use equipoise_common::audit::{AuditEntry, AuditRecord};

pub mod postgres;
mod rules;
mod shared;
mod sql;
pub mod sqlite;

#[cfg(test)]
pub(crate) mod conformance;

pub use rules::sealed_sha256;

/// A case's classification as stored. `Susar` and `NotReportable` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoredClassification {
    NotPotential,
    Pending,
    Susar,
    NotReportable,
}

impl StoredClassification {
    pub fn as_str(self) -> &'static str {
        match self {
            StoredClassification::NotPotential => "not_potential",
            StoredClassification::Pending => "pending",
            StoredClassification::Susar => "susar",
            StoredClassification::NotReportable => "not_reportable",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "not_potential" => Some(StoredClassification::NotPotential),
            "pending" => Some(StoredClassification::Pending),
            "susar" => Some(StoredClassification::Susar),
            "not_reportable" => Some(StoredClassification::NotReportable),
            _ => None,
        }
    }

    pub fn settled(self) -> bool {
        matches!(
            self,
            StoredClassification::Susar | StoredClassification::NotReportable
        )
    }
}

/// One case's row. Times are RFC 3339 UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseRow {
    pub case_id: String,
    pub trial_id: String,
    pub site_id: String,
    pub subject_id: String,
    pub first_received_at: String,
    pub day_zero: Option<String>,
    pub classification: StoredClassification,
    pub not_reportable_reason: Option<String>,
    pub sponsor_time_zone: String,
}

/// One version of a case as reported: never changed once stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRow {
    pub case_id: String,
    pub version: u32,
    /// The domain's `CaseReport`, as JSON.
    pub report_json: String,
    pub received_at: String,
    pub late: bool,
    pub expected: bool,
    pub rsi_version: String,
}

/// The sponsor's causality assessment of one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssessmentRow {
    pub case_id: String,
    pub version: u32,
    /// `related` or `not_related`.
    pub causality: String,
    pub comment: String,
    pub by: String,
    pub at: String,
}

/// A regulatory obligation. `kind`: `initial_7_day`, `initial_15_day` or
/// `follow_up_8_day`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObligationRow {
    pub obligation_id: String,
    pub case_id: String,
    pub trial_id: String,
    pub kind: String,
    pub due_date: String,
    pub due_at: String,
    pub submitted_at: Option<String>,
    pub recipient: Option<String>,
    pub acknowledgement_id: Option<String>,
}

/// An obligation to create; the store adds its case and trial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewObligation {
    pub obligation_id: String,
    pub kind: String,
    pub due_date: String,
    pub due_at: String,
}

/// Everything stored about one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseRecord {
    pub case: CaseRow,
    /// Oldest first.
    pub versions: Vec<VersionRow>,
    /// Oldest first.
    pub assessments: Vec<AssessmentRow>,
    pub obligations: Vec<ObligationRow>,
}

impl CaseRecord {
    pub fn latest_version(&self) -> u32 {
        self.versions.last().map_or(0, |v| v.version)
    }

    /// What a settlement was computed from: it is refused if either moved.
    pub fn as_of(&self) -> AsOf {
        AsOf {
            version: self.latest_version(),
            assessments: u32::try_from(self.assessments.len()).unwrap_or(u32::MAX),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsOf {
    pub version: u32,
    pub assessments: u32,
}

/// How a safety reveal settled a potential SUSAR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    Susar {
        day_zero: String,
        obligations: Vec<NewObligation>,
    },
    NotReportable {
        reason: String,
    },
}

/// What [`Store::settle`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Done,
    /// Another writer settled it first: nothing written.
    AlreadySettled,
    /// A version or assessment was added since the settlement was computed:
    /// nothing written; compute again.
    Stale,
}

/// A submission to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    pub obligation_id: String,
    pub submitted_at: String,
    pub recipient: String,
    pub acknowledgement_id: Option<String>,
}

/// A sealed side record, for verifying its audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRecord {
    pub audit_seq: u64,
    pub content: String,
    /// Hex of 32 random bytes: never returned to callers.
    pub salt: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// The record exists and differs, or moved on: never replaced silently.
    #[error("{0}")]
    Conflict(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error(
        "the database has migration {found}, newer than this binary's newest ({supported}); run a newer binary"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("database error: {0}")]
    Database(String),
    /// The database roles would let the service get around its triggers
    /// (`equipoise_common::store::roles`); start-up only.
    #[error(transparent)]
    Roles(Box<equipoise_common::store::RoleError>),
}

pub type StoreResult<T> = Result<T, StoreError>;

equipoise_common::store_error_from_database!(StoreError);

#[async_trait]
pub trait Store: Send + Sync {
    /// Stores a new case with its version 1, with its audit record, in one
    /// transaction. A case id already stored: Conflict, nothing written.
    async fn create_case(
        &self,
        case: CaseRow,
        first: VersionRow,
        audit: AuditEntry,
    ) -> StoreResult<()>;

    /// Stores version n+1 of a case (n: its latest; any other number is a
    /// Conflict and writes nothing). If the case is a settled SUSAR, the
    /// `obligations` not yet present for their kind are created with it.
    /// The audit record chains the sealed list of what was created.
    async fn add_version(
        &self,
        version: VersionRow,
        obligations: Vec<NewObligation>,
        audit: AuditEntry,
    ) -> StoreResult<()>;

    /// Stores the sponsor's assessment of the latest version (another
    /// version, or a second assessment of it: Conflict), with obligations
    /// as [`Store::add_version`].
    async fn add_assessment(
        &self,
        assessment: AssessmentRow,
        obligations: Vec<NewObligation>,
        audit: AuditEntry,
    ) -> StoreResult<()>;

    /// Moves an unsettled case between `not_potential` and `pending`.
    /// Returns false, writing nothing, when it already is there or settled.
    async fn set_pending(
        &self,
        case_id: &str,
        pending: bool,
        audit: AuditEntry,
    ) -> StoreResult<bool>;

    /// Settles a potential SUSAR once, with its obligations and a sealed
    /// audit record, if the case is still unsettled and still `as_of`.
    async fn settle(
        &self,
        case_id: &str,
        as_of: AsOf,
        settlement: Settlement,
        audit: AuditEntry,
    ) -> StoreResult<Settled>;

    async fn case_record(&self, case_id: &str) -> StoreResult<Option<CaseRecord>>;

    /// Every case of the trial, by first receipt.
    async fn trial_cases(&self, trial_id: &str) -> StoreResult<Vec<CaseRecord>>;

    /// Ids of cases whose classification is pending, oldest first.
    async fn pending_cases(&self, limit: u32) -> StoreResult<Vec<String>>;

    /// Obligations, of one trial or all, open only unless
    /// `include_submitted`, in no particular order.
    async fn obligations(
        &self,
        trial_id: Option<&str>,
        include_submitted: bool,
    ) -> StoreResult<Vec<ObligationRow>>;

    async fn obligation(&self, obligation_id: &str) -> StoreResult<Option<ObligationRow>>;

    /// Closes an open obligation, creating `follow_up` with it (for a 7-day
    /// initial report), with a sealed audit record. Unknown: NotFound;
    /// already submitted: Conflict, nothing written.
    async fn record_submission(
        &self,
        submission: Submission,
        follow_up: Option<NewObligation>,
        audit: AuditEntry,
    ) -> StoreResult<ObligationRow>;

    async fn sealed_record(&self, audit_seq: u64) -> StoreResult<Option<SealedRecord>>;

    /// Cases stored, for tests and metrics.
    async fn case_count(&self) -> StoreResult<u64>;

    /// Appends an audit record on its own, e.g. for a refused request.
    async fn append_audit(&self, audit: AuditEntry) -> StoreResult<()>;

    /// Audit records from `from_seq` on, in order.
    async fn audit_records(&self, from_seq: i64, limit: u32) -> StoreResult<Vec<AuditRecord>>;

    /// The chain's end (seq, hash) as recorded apart from the chain, where
    /// the backend keeps one (PostgreSQL's `audit_head`).
    async fn stored_audit_head(&self) -> StoreResult<Option<(i64, String)>>;
}
