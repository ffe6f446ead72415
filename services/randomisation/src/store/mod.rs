//! Storage of the randomisation service behind one trait. SQLite is the
//! embedded default; every implementation must pass [`conformance`].
//!
//! The store is the fencing authority (docs/architecture.md, "Allocation"): every allocation commit is
//! a compare-and-set on its stream's version, in the same transaction as the
//! allocation row, the cap checks and the audit record.
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

pub mod batch;
pub mod postgres;
mod rules;
mod shared;
mod sql;
pub mod sqlite;

#[cfg(test)]
pub(crate) mod conformance;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrialState {
    Draft,
    Active,
    Closed,
}

impl TrialState {
    pub fn as_str(self) -> &'static str {
        match self {
            TrialState::Draft => "draft",
            TrialState::Active => "active",
            TrialState::Closed => "closed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "draft" => Some(TrialState::Draft),
            "active" => Some(TrialState::Active),
            "closed" => Some(TrialState::Closed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialRecord {
    pub trial_id: String,
    pub version: u32,
    pub state: TrialState,
    pub definition_yaml: String,
    pub definition_sha256: String,
    pub algorithm_version: Option<u32>,
    pub sealed_seed: Option<Vec<u8>>,
    pub registered_at: String,
    pub activated_at: Option<String>,
    pub closed_at: Option<String>,
}

/// An allocation about to be committed. The store assigns its position in
/// the stream and its randomisation number.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAllocation {
    pub trial_id: String,
    pub subject_id: String,
    pub site_id: String,
    pub stratum: String,
    pub stream_key: String,
    pub arm: String,
    /// SHA-256 of the request's site and covariates, for idempotent repeats.
    pub request_sha256: String,
    pub covariates_json: String,
    /// Method log: probabilities, and for minimisation the scores and draw.
    pub decision_json: String,
    pub trial_version: u32,
    pub randomised_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapLimits {
    pub total: Option<u32>,
    pub site: Option<u32>,
    pub stratum: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CommitRequest {
    pub allocation: NewAllocation,
    /// The stream's version when the arm was computed: the commit only
    /// happens if it is still that.
    pub expected_stream_version: u64,
    pub caps: CapLimits,
    /// Recorded in the same transaction; the store adds the position and
    /// randomisation number to its details.
    pub audit: AuditEntry,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationRecord {
    pub trial_id: String,
    pub subject_id: String,
    pub site_id: String,
    pub stratum: String,
    pub stream_key: String,
    pub position: u64,
    /// Never leaves the service except to the blinding service.
    pub arm: String,
    pub randomisation_number: String,
    pub request_sha256: String,
    pub covariates_json: String,
    pub decision_json: String,
    pub trial_version: u32,
    pub randomised_at: String,
    pub corrected_stratum: Option<String>,
    pub correction_reason: Option<String>,
    pub in_error: bool,
    pub error_reason: Option<String>,
    /// Order of commitment across the trial, for paging.
    pub sequence: i64,
    /// From the blinding service; `None` while it is pending (recorded
    /// after the allocation commits, DESIGN §4 step 7).
    pub treatment_code: Option<String>,
}

/// What [`Store::record_code`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeRecorded {
    /// The code is new and was recorded with its audit record.
    Recorded,
    /// The allocation already had this code; nothing was written.
    AlreadyRecorded,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Counts {
    pub total: u32,
    pub in_error: u32,
    pub by_site: BTreeMap<String, u32>,
    pub by_stratum: BTreeMap<String, u32>,
}

/// One slot of an uploaded list as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListEntry {
    pub stratum: String,
    pub position: u64,
    pub arm: String,
}

/// An uploaded list's `(stratum, arm)` rows numbered per stratum from 0,
/// in upload order: the slots the store keeps.
pub fn numbered_list(entries: &[(String, String)]) -> Vec<ListEntry> {
    let mut next: BTreeMap<&str, u64> = BTreeMap::new();
    entries
        .iter()
        .map(|(stratum, arm)| {
            let position = next.entry(stratum.as_str()).or_insert(0);
            let entry = ListEntry {
                stratum: stratum.clone(),
                position: *position,
                arm: arm.clone(),
            };
            *position += 1;
            entry
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationQuery {
    pub trial_id: String,
    /// `None`: every site.
    pub sites: Option<Vec<String>>,
    pub stratum: Option<String>,
    /// Only allocations committed after this sequence number.
    pub after_sequence: i64,
    pub limit: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapKind {
    Total,
    Site,
    Stratum,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// The record exists but is in the wrong state for this change.
    #[error("{0}")]
    Conflict(String),
    /// The stream moved on since the arm was computed: recompute under the lock.
    #[error("stream version changed since the arm was computed")]
    Fenced,
    #[error("the subject already has an allocation")]
    SubjectExists,
    /// The trial was amended after the allocation was computed under its
    /// earlier version (review K2): computed again, it may be refused.
    #[error("the trial's definition changed since the allocation was computed")]
    Superseded,
    #[error("{0:?} cap reached")]
    CapReached(CapKind),
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
    /// Inserts a draft, or replaces an existing draft. Refuses if the trial
    /// is already active or closed.
    async fn register_draft(&self, record: &TrialRecord, audit: AuditEntry) -> StoreResult<()>;

    async fn trial(&self, trial_id: &str) -> StoreResult<Option<TrialRecord>>;

    /// Draft → active, only while the draft still has `expected_sha256`.
    async fn activate(
        &self,
        trial_id: &str,
        expected_sha256: &str,
        sealed_seed: &[u8],
        algorithm_version: u32,
        at: &str,
        audit: AuditEntry,
    ) -> StoreResult<TrialRecord>;

    /// Replaces an active trial's frozen definition with the next version.
    async fn amend(
        &self,
        trial_id: &str,
        from_version: u32,
        definition_yaml: &str,
        definition_sha256: &str,
        to_version: u32,
        audit: AuditEntry,
    ) -> StoreResult<TrialRecord>;

    /// Active → closed.
    async fn close(&self, trial_id: &str, at: &str, audit: AuditEntry) -> StoreResult<TrialRecord>;

    /// Replaces a draft trial's uploaded list: (stratum, arm) in order.
    async fn put_allocation_list(
        &self,
        trial_id: &str,
        entries: &[(String, String)],
        audit: AuditEntry,
    ) -> StoreResult<()>;

    /// The arm at `position` of a stratum's uploaded list.
    async fn list_slot(
        &self,
        trial_id: &str,
        stratum: &str,
        position: u64,
    ) -> StoreResult<Option<String>>;

    /// A trial's whole uploaded list, by stratum then position: for the
    /// activation record's digest and for verification.
    async fn allocation_list(&self, trial_id: &str) -> StoreResult<Vec<ListEntry>>;

    /// Length of each stratum's uploaded list.
    async fn list_lengths(&self, trial_id: &str) -> StoreResult<BTreeMap<String, u32>>;

    async fn allocation(
        &self,
        trial_id: &str,
        subject_id: &str,
    ) -> StoreResult<Option<AllocationRecord>>;

    /// How many allocations the stream has committed: the next position.
    async fn stream_version(&self, trial_id: &str, stream_key: &str) -> StoreResult<u64>;

    /// Commits an allocation, its audit record and the stream's new version
    /// in one durable transaction, or nothing.
    async fn commit_allocation(&self, request: &CommitRequest) -> StoreResult<AllocationRecord>;

    /// Every allocation of a stream, in position order.
    async fn stream_allocations(
        &self,
        trial_id: &str,
        stream_key: &str,
    ) -> StoreResult<Vec<AllocationRecord>>;

    /// The allocations of a stream from `from_position` on, in position
    /// order: what minimisation adds to margins it kept.
    async fn stream_allocations_from(
        &self,
        trial_id: &str,
        stream_key: &str,
        from_position: u64,
    ) -> StoreResult<Vec<AllocationRecord>>;

    async fn counts(&self, trial_id: &str) -> StoreResult<Counts>;

    /// The counts the caps are checked against, as the commit reads them:
    /// (in the trial, at the site, in the stratum), by key, not by a scan.
    async fn cap_counts(
        &self,
        trial_id: &str,
        site_id: &str,
        stratum: &str,
    ) -> StoreResult<(u32, u32, u32)>;

    async fn list_allocations(&self, query: &AllocationQuery)
    -> StoreResult<Vec<AllocationRecord>>;

    async fn correct_stratum(
        &self,
        trial_id: &str,
        subject_id: &str,
        corrected_stratum: &str,
        reason: &str,
        audit: AuditEntry,
    ) -> StoreResult<AllocationRecord>;

    async fn mark_in_error(
        &self,
        trial_id: &str,
        subject_id: &str,
        reason: &str,
        audit: AuditEntry,
    ) -> StoreResult<AllocationRecord>;

    /// Records the treatment code of a committed allocation, with its audit
    /// record, in one transaction. The same code again writes nothing; a
    /// different code, or a code another subject of the trial holds, is a
    /// Conflict and writes nothing; an unknown allocation is NotFound.
    async fn record_code(
        &self,
        trial_id: &str,
        subject_id: &str,
        code: &str,
        audit: AuditEntry,
    ) -> StoreResult<CodeRecorded>;

    /// Allocations of active or closed trials with no treatment code yet,
    /// oldest first from after `after_sequence` (0: from the start): the
    /// reconciler's work, read page by page so that allocations it cannot
    /// complete now never hide the ones behind them.
    async fn allocations_without_code(
        &self,
        after_sequence: i64,
        limit: u32,
    ) -> StoreResult<Vec<AllocationRecord>>;

    /// Appends an audit record on its own, e.g. for a refused request.
    async fn append_audit(&self, audit: AuditEntry) -> StoreResult<()>;

    /// Audit records from `from_seq` on, in order.
    async fn audit_records(&self, from_seq: i64, limit: u32) -> StoreResult<Vec<AuditRecord>>;

    /// The chain's end (seq, hash) as recorded apart from the chain, where
    /// the backend keeps one (PostgreSQL's `audit_head`).
    async fn stored_audit_head(&self) -> StoreResult<Option<(i64, String)>>;
}

impl NewAllocation {
    /// The record as committed at `position`, without reading it back.
    pub fn committed(
        &self,
        position: u64,
        randomisation_number: String,
        sequence: i64,
    ) -> AllocationRecord {
        AllocationRecord {
            trial_id: self.trial_id.clone(),
            subject_id: self.subject_id.clone(),
            site_id: self.site_id.clone(),
            stratum: self.stratum.clone(),
            stream_key: self.stream_key.clone(),
            position,
            arm: self.arm.clone(),
            randomisation_number,
            request_sha256: self.request_sha256.clone(),
            covariates_json: self.covariates_json.clone(),
            decision_json: self.decision_json.clone(),
            trial_version: self.trial_version,
            randomised_at: self.randomised_at.clone(),
            corrected_stratum: None,
            correction_reason: None,
            in_error: false,
            error_reason: None,
            sequence,
            treatment_code: None,
        }
    }
}

/// `FR-MTP-0007`: the site and its running count, nothing about the arm.
pub fn randomisation_number(site_id: &str, site_sequence: u32) -> String {
    format!("{site_id}-{site_sequence:04}")
}

/// The first cap the next allocation would pass, given current counts.
pub fn cap_breach(caps: &CapLimits, total: u32, at_site: u32, in_stratum: u32) -> Option<CapKind> {
    let reached = |cap: Option<u32>, count: u32| cap.is_some_and(|c| count >= c);
    if reached(caps.total, total) {
        Some(CapKind::Total)
    } else if reached(caps.site, at_site) {
        Some(CapKind::Site)
    } else if reached(caps.stratum, in_stratum) {
        Some(CapKind::Stratum)
    } else {
        None
    }
}

impl Counts {
    /// Tallies (site, stratum, in error) rows.
    pub fn tally(rows: impl IntoIterator<Item = (String, String, bool)>) -> Self {
        let mut counts = Counts::default();
        for (site, stratum, in_error) in rows {
            counts.total += 1;
            counts.in_error += u32::from(in_error);
            *counts.by_site.entry(site).or_default() += 1;
            *counts.by_stratum.entry(stratum).or_default() += 1;
        }
        counts
    }
}
