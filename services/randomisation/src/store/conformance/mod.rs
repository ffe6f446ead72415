//! The storage conformance suite: the behaviours every [`Store`] must have,
//! grouped by concern, run as one named test per check per backend
//! (`store::conformance::<backend>::<check>`): SQLite in memory, a SQLite
//! file, and PostgreSQL from `tests/kit` (one server per test binary, one
//! database per test).
//!
//! Checks go through the trait only, never SQL. Each check registers its own
//! trial and audit assertions compare the number of records before and
//! after a call, so a check would also pass on a store shared with others.
//! After every check the whole audit trail must still verify.

use std::collections::BTreeMap;

use equipoise_common::audit::{AuditEntry, AuditRecord, verify_chain};
use equipoise_common::time::now_rfc3339;
use equipoise_testkit::PostgresServer;
use serde_json::json;

use super::postgres::PostgresStore;
use super::randomisation_number;
use super::sqlite::SqliteStore;
use super::{
    AllocationQuery, AllocationRecord, CapKind, CapLimits, CommitRequest, Counts, ListEntry,
    NewAllocation, Store, StoreError, StoreResult, TrialRecord, TrialState,
};

mod audit;
mod batch;
mod caps;
mod codes;
mod commit;
mod corrections;
mod lifecycle;
mod listing;
mod lists;

/// Every check, once per backend.
macro_rules! randomisation_store_suite {
    ($backend:ident, $store:expr) => {
        equipoise_common::conformance_suite! {
            backend: $backend,
            store: $store,
            after_each: audit_chain_verifies,
            checks: [
                lifecycle::drafts_are_registered_then_replaced,
                lifecycle::activation_needs_the_reviewed_digest_and_happens_once,
                lifecycle::amendments_need_an_active_trial_at_the_stated_version,
                lifecycle::closing_happens_once_and_freezes_the_trial,
                commit::commit_takes_the_next_position_and_number,
                commit::commit_is_fenced,
                commit::a_commit_under_a_superseded_version_is_refused,
                commit::commit_refuses_repeats_drafts_closed_and_unknown_trials,
                commit::numbers_run_per_site,
                commit::racing_commits_have_one_winner,
                caps::total_cap_is_enforced,
                caps::site_cap_leaves_other_sites_free,
                caps::stratum_cap_leaves_other_strata_free,
                caps::racing_commits_on_other_streams_meet_exact_caps,
                listing::counts_include_allocations_in_error,
                listing::listing_is_in_commit_order_and_pages,
                listing::listing_filters_by_site_and_stratum,
                listing::listing_with_limit_zero_is_empty,
                listing::stream_allocations_are_in_position_order,
                corrections::stratum_correction_keeps_the_assignment,
                corrections::in_error_mark_is_set_once,
                corrections::racing_in_error_marks_have_one_winner,
                lists::uploaded_lists_are_numbered_per_stratum,
                audit::audit_trail_is_one_verifiable_chain,
                codes::codes_are_recorded_once,
                codes::codes_are_read_with_allocations,
                codes::allocations_without_code_are_listed_oldest_first,
                codes::racing_recorders_write_one_code,
            ],
        }
    };
}

randomisation_store_suite!(sqlite_memory, open_sqlite_in_memory());
randomisation_store_suite!(sqlite_file, open_sqlite_file());
randomisation_store_suite!(postgres, open_postgres());

// --------------------------------------------------------------- backends

equipoise_common::conformance_backends! {
    store: Store,
    sqlite: SqliteStore,
    postgres: PostgresStore,
}

/// Whatever a check did, the trail is still one chain.
async fn audit_chain_verifies(store: &dyn Store) {
    let records = audit_all(store).await;
    let len = u64::try_from(records.len()).expect("record count");
    assert_eq!(verify_chain(&records), Ok(len), "the whole trail verifies");
}

// ---------------------------------------------------------- group commit

/// One batch of every outcome per backend, on a one-thread runtime so the
/// batch's make-up is known (`batch.rs`).
mod group_commit {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn sqlite_memory() {
        let store = SqliteStore::in_memory().await.expect("open");
        let batches = || store.group_commit_stats().batches();
        batch::writes_queued_together_commit_together_each_on_its_merits(&store, &batches).await;
        audit_chain_verifies(&store).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn sqlite_file() {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let store = SqliteStore::open(&dir.path().join("r.db"))
            .await
            .expect("open");
        let batches = || store.group_commit_stats().batches();
        batch::writes_queued_together_commit_together_each_on_its_merits(&store, &batches).await;
        audit_chain_verifies(&store).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn postgres() {
        let roles = PostgresServer::shared().create_database_with_roles();
        let store =
            PostgresStore::connect_with_owner(&roles.runtime_url, Some(&roles.owner_url), 8)
                .await
                .expect("connect");
        let batches = || store.group_commit_stats().batches();
        batch::writes_queued_together_commit_together_each_on_its_merits(&store, &batches).await;
        audit_chain_verifies(&store).await;
    }
}

// ------------------------------------------------------------- reopening

/// Data written through the trait survives closing and reopening.
mod reopening {
    use super::*;

    /// Writes a closed trial and an allocation; returns what to compare.
    async fn write_some(store: &dyn Store) -> (Vec<AuditRecord>, Option<AllocationRecord>) {
        lifecycle::closing_happens_once_and_freezes_the_trial(store).await;
        commit::commit_takes_the_next_position_and_number(store).await;
        let allocation = store
            .allocation("CONF-COMMIT", "CONF-C-001")
            .await
            .expect("read");
        assert!(allocation.is_some());
        (audit_all(store).await, allocation)
    }

    async fn assert_kept(store: &dyn Store, written: (Vec<AuditRecord>, Option<AllocationRecord>)) {
        let (trail, allocation) = written;
        assert_eq!(audit_all(store).await, trail, "the audit trail survives");
        assert_eq!(
            store.allocation("CONF-COMMIT", "CONF-C-001").await,
            Ok(allocation)
        );
        assert_eq!(
            stored_trial(store, "CONF-CLOSE").await.state,
            TrialState::Closed
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sqlite_file_keeps_its_data() {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let path = dir.path().join("r.db");
        let store = SqliteStore::open(&path).await.expect("open a file store");
        let written = write_some(&store).await;
        drop(store);
        // Reopening migrates nothing and loses nothing.
        let reopened = SqliteStore::open(&path).await.expect("reopen");
        assert_kept(&reopened, written).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn postgres_keeps_its_data() {
        let url = PostgresServer::shared().create_database();
        let store = PostgresStore::connect(&url, 8).await.expect("connect");
        let written = write_some(&store).await;
        drop(store);
        let reopened = PostgresStore::connect(&url, 2).await.expect("reconnect");
        assert_kept(&reopened, written).await;
    }
}

const SEED: &[u8] = &[7; 32];
const ALGORITHM_VERSION: u32 = 1;
const UNKNOWN_TRIAL: &str = "CONF-NO-SUCH-TRIAL";

// ---------------------------------------------------------------- helpers

/// A 64-hex digest; the store never checks it against the text.
fn sha(digit: char) -> String {
    digit.to_string().repeat(64)
}

fn draft_record(trial_id: &str, version: u32, sha256: &str) -> TrialRecord {
    TrialRecord {
        trial_id: trial_id.into(),
        version,
        state: TrialState::Draft,
        // The store does not parse the definition.
        definition_yaml: format!("id: {trial_id}\nversion: {version}\n"),
        definition_sha256: sha256.into(),
        algorithm_version: None,
        sealed_seed: None,
        registered_at: now_rfc3339(),
        activated_at: None,
        closed_at: None,
    }
}

fn entry(action: &str, trial_id: &str) -> AuditEntry {
    AuditEntry {
        at: now_rfc3339(),
        actor: "conformance".into(),
        role: "trial_admin".into(),
        action: action.into(),
        entity: format!("trial/{trial_id}"),
        details: json!({}),
    }
}

/// The stream is the stratum, as for stratified block randomisation.
fn new_allocation(trial_id: &str, subject_id: &str, site_id: &str, stratum: &str) -> NewAllocation {
    NewAllocation {
        trial_id: trial_id.into(),
        subject_id: subject_id.into(),
        site_id: site_id.into(),
        stratum: stratum.into(),
        stream_key: stratum.into(),
        arm: "A".into(),
        request_sha256: sha('c'),
        covariates_json: r#"{"age":"<65"}"#.into(),
        decision_json: r#"{"method":"block"}"#.into(),
        trial_version: 1,
        randomised_at: now_rfc3339(),
    }
}

fn request(
    allocation: NewAllocation,
    expected_stream_version: u64,
    caps: CapLimits,
) -> CommitRequest {
    let audit = AuditEntry {
        details: json!({ "subject": allocation.subject_id }),
        ..entry("allocation.committed", &allocation.trial_id)
    };
    CommitRequest {
        allocation,
        expected_stream_version,
        caps,
        audit,
    }
}

fn query(trial_id: &str, after_sequence: i64, limit: u32) -> AllocationQuery {
    AllocationQuery {
        trial_id: trial_id.into(),
        sites: None,
        stratum: None,
        after_sequence,
        limit,
    }
}

fn subjects(records: &[AllocationRecord]) -> Vec<&str> {
    records.iter().map(|r| r.subject_id.as_str()).collect()
}

fn sites(ids: &[&str]) -> Option<Vec<String>> {
    Some(ids.iter().map(|s| (*s).to_owned()).collect())
}

fn assert_conflict<T: std::fmt::Debug>(result: StoreResult<T>, call: &str) {
    assert!(
        matches!(result, Err(StoreError::Conflict(_))),
        "{call}: expected Conflict, got {result:?}"
    );
}

async fn audit_all(store: &dyn Store) -> Vec<AuditRecord> {
    store
        .audit_records(1, u32::MAX)
        .await
        .expect("read the audit trail")
}

async fn audit_len(store: &dyn Store) -> usize {
    audit_all(store).await.len()
}

async fn assert_appended(store: &dyn Store, before: usize, appended: usize, call: &str) {
    let after = audit_len(store).await;
    assert_eq!(after, before + appended, "{call}: audit records appended");
}

async fn last_audit(store: &dyn Store) -> AuditRecord {
    audit_all(store).await.pop().expect("an audit record")
}

async fn stored_trial(store: &dyn Store, trial_id: &str) -> TrialRecord {
    store
        .trial(trial_id)
        .await
        .expect("read the trial")
        .expect("the trial exists")
}

async fn register(store: &dyn Store, record: &TrialRecord) -> StoreResult<()> {
    let audit = entry("trial.registered", &record.trial_id);
    store.register_draft(record, audit).await
}

async fn activate(
    store: &dyn Store,
    trial_id: &str,
    sha256: &str,
    at: &str,
) -> StoreResult<TrialRecord> {
    let audit = entry("trial.activated", trial_id);
    store
        .activate(trial_id, sha256, SEED, ALGORITHM_VERSION, at, audit)
        .await
}

async fn close(store: &dyn Store, trial_id: &str, at: &str) -> StoreResult<TrialRecord> {
    store
        .close(trial_id, at, entry("trial.closed", trial_id))
        .await
}

async fn draft_trial(store: &dyn Store, trial_id: &str) -> TrialRecord {
    let record = draft_record(trial_id, 1, &sha('1'));
    register(store, &record).await.expect("register a draft");
    record
}

/// Activates a draft registered by [`draft_trial`].
async fn activate_draft(store: &dyn Store, trial_id: &str) -> TrialRecord {
    activate(store, trial_id, &sha('1'), &now_rfc3339())
        .await
        .expect("activate the trial")
}

async fn active_trial(store: &dyn Store, trial_id: &str) -> TrialRecord {
    draft_trial(store, trial_id).await;
    activate_draft(store, trial_id).await
}

/// Amends to version `from + 1` with a fixed definition.
async fn amend_next(store: &dyn Store, trial_id: &str, from: u32) -> StoreResult<TrialRecord> {
    let yaml = format!("id: {trial_id}\nversion: {}\n", from + 1);
    let audit = AuditEntry {
        details: json!({ "reason": "protocol amendment" }),
        ..entry("trial.amended", trial_id)
    };
    store
        .amend(trial_id, from, &yaml, &sha('2'), from + 1, audit)
        .await
}

async fn close_trial(store: &dyn Store, trial_id: &str) {
    close(store, trial_id, &now_rfc3339())
        .await
        .expect("close the trial");
}

/// Commits at the stream's current version, as the service does under its lock.
async fn commit(
    store: &dyn Store,
    allocation: NewAllocation,
    caps: CapLimits,
) -> StoreResult<AllocationRecord> {
    let version = store
        .stream_version(&allocation.trial_id, &allocation.stream_key)
        .await
        .expect("read the stream version");
    store
        .commit_allocation(&request(allocation, version, caps))
        .await
}

async fn allocate(
    store: &dyn Store,
    trial_id: &str,
    subject_id: &str,
    site_id: &str,
    stratum: &str,
) -> AllocationRecord {
    commit(
        store,
        new_allocation(trial_id, subject_id, site_id, stratum),
        CapLimits::default(),
    )
    .await
    .unwrap_or_else(|error| panic!("commit {subject_id}: {error}"))
}

/// Attempts a commit that must be refused, checks that it wrote nothing and
/// returns the refusal.
async fn refused_commit(store: &dyn Store, request: &CommitRequest) -> StoreError {
    let new = &request.allocation;
    let stream = store
        .stream_version(&new.trial_id, &new.stream_key)
        .await
        .expect("stream version");
    let subject = store
        .allocation(&new.trial_id, &new.subject_id)
        .await
        .expect("allocation");
    let counts = store.counts(&new.trial_id).await.expect("counts");
    let audit = audit_len(store).await;

    let error = store
        .commit_allocation(request)
        .await
        .expect_err("the commit must be refused");

    let call = format!("refused commit of {} ({error:?})", new.subject_id);
    let stream_after = store
        .stream_version(&new.trial_id, &new.stream_key)
        .await
        .expect("stream version");
    assert_eq!(stream_after, stream, "{call}: stream version");
    let subject_after = store
        .allocation(&new.trial_id, &new.subject_id)
        .await
        .expect("allocation");
    assert_eq!(subject_after, subject, "{call}: subject's allocation");
    assert_eq!(
        store.counts(&new.trial_id).await.expect("counts"),
        counts,
        "{call}: counts"
    );
    assert_appended(store, audit, 0, &call).await;
    error
}

async fn mark_in_error(store: &dyn Store, trial_id: &str, subject_id: &str) -> AllocationRecord {
    store
        .mark_in_error(
            trial_id,
            subject_id,
            "randomised twice",
            entry("allocation.in_error", trial_id),
        )
        .await
        .expect("mark in error")
}

/// The committed record carries everything the request asked for.
fn assert_records_request(record: &AllocationRecord, new: &NewAllocation) {
    let committed = NewAllocation {
        trial_id: record.trial_id.clone(),
        subject_id: record.subject_id.clone(),
        site_id: record.site_id.clone(),
        stratum: record.stratum.clone(),
        stream_key: record.stream_key.clone(),
        arm: record.arm.clone(),
        request_sha256: record.request_sha256.clone(),
        covariates_json: record.covariates_json.clone(),
        decision_json: record.decision_json.clone(),
        trial_version: record.trial_version,
        randomised_at: record.randomised_at.clone(),
    };
    assert_eq!(&committed, new, "committed allocation");
    assert!(!record.in_error, "a new allocation is not in error");
    assert_eq!(record.error_reason, None);
    assert_eq!(record.corrected_stratum, None);
    assert_eq!(record.correction_reason, None);
}
