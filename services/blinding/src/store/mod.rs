//! Storage of the blinding service behind one trait, so far for treatment
//! codes: each trial's pools (which code belongs to which arm is the blind),
//! the one code assigned to each allocation, and the service's own
//! hash-chained audit trail. SQLite is the embedded default, PostgreSQL
//! serves replicas; both must pass [`conformance`].
//!
//! An allocation is identified by (trial id, subject id): the key the
//! randomisation service commits it under (unique per trial, never reused,
//! never deleted), which every caller of the blinding service already has.
//!
//! Pools, migrations, the classification of database errors and the audit
//! append come from `equipoise_common::store`. Here: the schema
//! (`migrations/{sqlite,postgres}`), the SQL and rows both backends share
//! (`sql.rs`), the decisions they share (`rules.rs`), the transactions and
//! `impl Store` they share (`shared.rs`, a macro each backend expands), and
//! how each backend locks (`sqlite.rs`, `postgres.rs`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use equipoise_common::audit::{AuditEntry, AuditRecord};

use crate::codes::{CodePool, PoolCounts};

pub mod batch;
pub mod postgres;
mod rules;
mod shared;
mod sql;
pub mod sqlite;

#[cfg(test)]
pub(crate) mod conformance;

/// Where a code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeSource {
    /// Drawn from the trial's sealed seed (`codes::generate_pools`).
    Generated,
    /// Uploaded by a statistician (`codes::validate_upload`).
    Uploaded,
}

impl CodeSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CodeSource::Generated => "generated",
            CodeSource::Uploaded => "uploaded",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "generated" => Some(CodeSource::Generated),
            "uploaded" => Some(CodeSource::Uploaded),
            _ => None,
        }
    }
}

/// The trial definition the service last fetched, kept beside the pools so
/// reveals work while the randomisation service is unreachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionSnapshot {
    pub version: u32,
    pub definition_yaml: String,
    /// The canonical hash of `definition_yaml` when it was stored; empty
    /// for snapshots stored before it was recorded.
    pub definition_sha256: String,
}

/// The code given to one allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub trial_id: String,
    pub subject_id: String,
    pub site_id: String,
    /// Never leaves the service except in a reveal.
    pub arm_id: String,
    pub code: String,
    /// The `at` of the audit entry that recorded the assignment.
    pub assigned_at: String,
}

/// One stored code, as a reveal of the code sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeEntry {
    pub arm_id: String,
    /// Its place in its arm's order of issue, from 0.
    pub position: u64,
    pub source: CodeSource,
    /// The subject it was assigned to, if it was.
    pub subject_id: Option<String>,
}

/// What a reveal was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RevealKind {
    Emergency,
    SafetyReview,
    PlannedPeriod,
    Preparation,
}

impl RevealKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RevealKind::Emergency => "emergency",
            RevealKind::SafetyReview => "safety",
            RevealKind::PlannedPeriod => "planned_period",
            RevealKind::Preparation => "preparation",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "emergency" => Some(RevealKind::Emergency),
            "safety" => Some(RevealKind::SafetyReview),
            "planned_period" => Some(RevealKind::PlannedPeriod),
            "preparation" => Some(RevealKind::Preparation),
            _ => None,
        }
    }

    /// Reveals the sponsor and the site are told of. A preparation reveal
    /// is routine and notifies no one.
    pub fn notifies(self) -> bool {
        !matches!(self, RevealKind::Preparation)
    }
}

/// A reveal to record. `at`, `actor` and `role` come from its audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReveal {
    pub kind: RevealKind,
    pub trial_id: String,
    pub subject_id: String,
    pub site_id: String,
    /// The unblinded side record: never in the chained details.
    pub arm_id: String,
    pub reason_category: Option<String>,
    pub reason: Option<String>,
    pub case_id: Option<String>,
    pub period_id: Option<String>,
    /// An emergency reveal that ends the subject's participation.
    pub withdraws: bool,
}

/// A recorded reveal: the unblinded side record of its audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevealRecord {
    pub audit_seq: u64,
    pub kind: RevealKind,
    pub trial_id: String,
    pub subject_id: String,
    pub site_id: String,
    pub arm_id: String,
    pub actor: String,
    pub role: String,
    pub reason_category: Option<String>,
    pub reason: Option<String>,
    pub case_id: Option<String>,
    pub period_id: Option<String>,
    pub withdraws: bool,
    pub at: String,
    /// Hex of the row's random salt, hashed into the sha256 its audit
    /// record chains. For verifying the row only: never returned to callers.
    pub salt: String,
}

/// An unblinding notification: who, where, when and why, never the arm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The seq of the reveal's audit record: increasing in commit order.
    pub cursor: u64,
    pub trial_id: String,
    pub site_id: String,
    pub subject_id: String,
    pub kind: RevealKind,
    pub at: String,
    pub actor: String,
    pub role: String,
    pub reason_category: Option<String>,
}

/// The treatment given in one period, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPeriodRecord {
    pub trial_id: String,
    pub subject_id: String,
    pub period_id: String,
    pub assigned_arm_id: String,
    pub given_arm_id: String,
    pub note: String,
}

impl NewPeriodRecord {
    pub fn deviation(&self) -> bool {
        self.assigned_arm_id != self.given_arm_id
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodRecord {
    pub trial_id: String,
    pub subject_id: String,
    pub period_id: String,
    pub assigned_arm_id: String,
    pub given_arm_id: String,
    pub deviation: bool,
    pub note: String,
    pub actor: String,
    pub recorded_at: String,
    pub audit_seq: u64,
    /// As [`RevealRecord::salt`].
    pub salt: String,
}

/// A trial's reveals by kind and its deviations: counts only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RevealCounts {
    pub emergency: u32,
    pub safety_reviews: u32,
    pub planned: u32,
    pub preparation: u32,
    pub deviations: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No pools are stored for the trial.
    #[error("not found")]
    NotFound,
    /// The trial has no pool for this arm.
    #[error("the trial has no code pool for arm '{arm_id}'")]
    UnknownArm { arm_id: String },
    /// The arm's pool has no code left. Names no arm: the caller may be blind.
    #[error("a code pool of trial {trial_id} is empty")]
    PoolEmpty { trial_id: String },
    /// Pools that cannot be stored as given (no pools, an empty pool, an arm
    /// or code twice, a top-up for an arm without a pool).
    #[error("{0}")]
    Invalid(String),
    /// A top-up's codes the trial already has. Names the codes, never the
    /// arms they are in: the caller may be blind.
    #[error("{} code(s) already in the trial's pools", .0.len())]
    CodesTaken(Vec<String>),
    /// The record exists and differs: never replaced silently.
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

// One classification of database failures for both backends.
equipoise_common::store_error_from_database!(StoreError);

#[async_trait]
pub trait Store: Send + Sync {
    /// Stores a trial's pools, each in issue order, with its audit record.
    /// Once per trial: a second call is a Conflict and changes nothing (more
    /// codes come through [`Store::add_codes`]).
    /// With them, the definition snapshot they were made from.
    async fn put_pools(
        &self,
        trial_id: &str,
        pools: &[CodePool],
        source: CodeSource,
        definition: &DefinitionSnapshot,
        audit: AuditEntry,
    ) -> StoreResult<()>;

    /// Tops up a trial's stored pools: each pool's codes are appended to its
    /// arm's pool after its last position, in the order given, with source
    /// `uploaded`, in one transaction with the audit record (whose details
    /// must name no arm nor per-arm count). Pools may cover only some arms;
    /// codes already issued and the `issued` counts are untouched. No pools
    /// stored: NotFound. An arm without a pool, an arm twice, a code twice or
    /// no codes at all: Invalid. Codes the trial already has, in any arm:
    /// CodesTaken listing all of them. A refusal writes nothing.
    async fn add_codes(
        &self,
        trial_id: &str,
        pools: &[CodePool],
        audit: AuditEntry,
    ) -> StoreResult<()>;

    /// Replaces the trial's definition snapshot by a higher version, with its
    /// audit record. Not higher: nothing is written and `false` returned.
    /// No pools stored: NotFound.
    async fn refresh_definition(
        &self,
        trial_id: &str,
        definition: &DefinitionSnapshot,
        audit: AuditEntry,
    ) -> StoreResult<bool>;

    async fn definition(&self, trial_id: &str) -> StoreResult<Option<DefinitionSnapshot>>;

    /// Gives the allocation (trial, subject) the next unissued code of
    /// `arm_id`'s pool, with its audit record (the store adds the code to its
    /// details), in one durable transaction. Idempotent per allocation: a
    /// repeat naming the same arm returns the same assignment and writes
    /// nothing; naming another arm, it is a Conflict and writes nothing.
    async fn assign_code(
        &self,
        trial_id: &str,
        subject_id: &str,
        site_id: &str,
        arm_id: &str,
        audit: AuditEntry,
    ) -> StoreResult<Assignment>;

    /// Each arm's pool size and codes issued, for the low-pool rule. Empty
    /// if the trial has no pools.
    async fn pool_counts(&self, trial_id: &str) -> StoreResult<BTreeMap<String, PoolCounts>>;

    /// A code's arm and, if assigned, subject.
    async fn code(&self, trial_id: &str, code: &str) -> StoreResult<Option<CodeEntry>>;

    async fn assignment(&self, trial_id: &str, subject_id: &str)
    -> StoreResult<Option<Assignment>>;

    /// Records a reveal, its audit record (the store adds the reveal row's
    /// sha256 to the details, which must not name the arm) and, for the
    /// kinds that notify, its notification, in one transaction.
    async fn record_reveal(
        &self,
        reveal: NewReveal,
        audit: AuditEntry,
    ) -> StoreResult<RevealRecord>;

    /// A subject's reveals, oldest first.
    async fn reveals(&self, trial_id: &str, subject_id: &str) -> StoreResult<Vec<RevealRecord>>;

    /// Notifications of the trial after `after_cursor`, in cursor order.
    async fn notifications(
        &self,
        trial_id: &str,
        after_cursor: u64,
        limit: u32,
    ) -> StoreResult<Vec<Notification>>;

    /// Records the treatment given in a period, with its audit record. Once
    /// per (trial, subject, period): an identical repeat returns the first
    /// record and writes nothing; a different one is a Conflict.
    async fn record_period(
        &self,
        record: NewPeriodRecord,
        audit: AuditEntry,
    ) -> StoreResult<PeriodRecord>;

    async fn period_records(
        &self,
        trial_id: &str,
        subject_id: &str,
    ) -> StoreResult<Vec<PeriodRecord>>;

    async fn reveal_counts(&self, trial_id: &str) -> StoreResult<RevealCounts>;

    /// Appends an audit record on its own, e.g. for a refused request.
    async fn append_audit(&self, audit: AuditEntry) -> StoreResult<()>;

    /// Audit records from `from_seq` on, in order.
    async fn audit_records(&self, from_seq: i64, limit: u32) -> StoreResult<Vec<AuditRecord>>;

    /// The chain's end (seq, hash) as recorded apart from the chain, where
    /// the backend keeps one (PostgreSQL's `audit_head`).
    async fn stored_audit_head(&self) -> StoreResult<Option<(i64, String)>>;
}
