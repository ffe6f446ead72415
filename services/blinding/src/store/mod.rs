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

/// The code given to one allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub trial_id: String,
    pub subject_id: String,
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
    /// or code twice).
    #[error("{0}")]
    Invalid(String),
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
}

pub type StoreResult<T> = Result<T, StoreError>;

// One classification of database failures for both backends.
equipoise_common::store_error_from_database!(StoreError);

#[async_trait]
pub trait Store: Send + Sync {
    /// Stores a trial's pools, each in issue order, with its audit record.
    /// Once per trial: a second call is a Conflict and changes nothing.
    async fn put_pools(
        &self,
        trial_id: &str,
        pools: &[CodePool],
        source: CodeSource,
        audit: AuditEntry,
    ) -> StoreResult<()>;

    /// Gives the allocation (trial, subject) the next unissued code of
    /// `arm_id`'s pool, with its audit record (the store adds the code to its
    /// details), in one durable transaction. Idempotent per allocation: a
    /// repeat naming the same arm returns the same assignment and writes
    /// nothing; naming another arm, it is a Conflict and writes nothing.
    async fn assign_code(
        &self,
        trial_id: &str,
        subject_id: &str,
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

    /// Appends an audit record on its own, e.g. for a refused request.
    async fn append_audit(&self, audit: AuditEntry) -> StoreResult<()>;

    /// Audit records from `from_seq` on, in order.
    async fn audit_records(&self, from_seq: i64, limit: u32) -> StoreResult<Vec<AuditRecord>>;
}
