//! The storage conformance suite: the behaviours every [`Store`] must have,
//! grouped by concern, run as one named test per check per backend
//! (`store::conformance::<backend>::<check>`): SQLite in memory, a SQLite
//! file, and PostgreSQL from `tests/kit` (one server per test binary, one
//! database per test).
//!
//! Checks go through the trait only, never SQL. Each check stores its own
//! trial, and audit assertions compare the number of records before and
//! after a call. After every check the whole audit trail must still verify.

use std::collections::BTreeMap;

use equipoise_common::audit::{AuditEntry, AuditRecord, verify_chain};
use equipoise_common::time::now_rfc3339;
use equipoise_testkit::PostgresServer;
use serde_json::json;

use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use super::{
    Assignment, CodeEntry, CodeSource, DefinitionSnapshot, NewPeriodRecord, NewReveal, RevealKind,
    Store, StoreError, StoreResult,
};
use crate::codes::{CodePool, PoolCounts};

mod assignment;
mod audit;
mod batch;
mod pools;
mod reveals;
mod topup;

/// Every check, once per backend.
macro_rules! blinding_store_suite {
    ($backend:ident, $store:expr) => {
        equipoise_common::conformance_suite! {
            backend: $backend,
            store: $store,
            after_each: audit_chain_verifies,
            checks: [
                pools::pools_are_stored_once_and_never_replaced,
                pools::codes_keep_their_arm_position_and_source,
                pools::codes_are_unique_per_trial_not_across_trials,
                pools::bad_pools_are_refused_and_write_nothing,
                pools::pool_counts_follow_assignments,
                pools::large_pools_are_stored_in_batches_in_order,
                topup::a_top_up_appends_after_each_arms_last_code,
                topup::a_bad_top_up_is_refused_and_writes_nothing,
                topup::a_top_up_clashes_only_within_its_trial,
                assignment::assignment_takes_the_next_code_of_its_arm_in_issue_order,
                assignment::a_repeat_with_the_same_arm_returns_the_same_code,
                assignment::a_repeat_naming_another_arm_is_a_conflict_and_changes_nothing,
                assignment::an_empty_pool_is_refused_never_another_arms_code,
                assignment::unknown_trials_and_arms_are_refused,
                assignment::racing_assignments_never_share_a_code,
                assignment::racing_repeats_of_one_allocation_get_one_code,
                audit::audit_trail_is_one_verifiable_chain,
                reveals::the_definition_snapshot_moves_only_to_higher_versions,
                reveals::an_assignment_keeps_its_site,
                reveals::a_reveal_is_recorded_with_its_audit_and_notification,
                reveals::notifications_resume_after_a_cursor,
                reveals::period_records_are_kept_once,
                reveals::a_side_row_sha256_cannot_be_matched_to_an_arm_without_its_salt,
            ],
        }
    };
}

blinding_store_suite!(sqlite_memory, open_sqlite_in_memory());
blinding_store_suite!(sqlite_file, open_sqlite_file());
blinding_store_suite!(postgres, open_postgres());

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
        batch::assignments_queued_together_commit_together_each_on_its_merits(&store, &batches)
            .await;
        audit_chain_verifies(&store).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn sqlite_file() {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let store = SqliteStore::open(&dir.path().join("b.db"))
            .await
            .expect("open");
        let batches = || store.group_commit_stats().batches();
        batch::assignments_queued_together_commit_together_each_on_its_merits(&store, &batches)
            .await;
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
        batch::assignments_queued_together_commit_together_each_on_its_merits(&store, &batches)
            .await;
        audit_chain_verifies(&store).await;
    }
}

// ------------------------------------------------------------- reopening

/// Data written through the trait survives closing and reopening.
mod reopening {
    use super::*;

    const TRIAL: &str = "CONF-REOPEN";

    async fn write_some(store: &dyn Store) -> (Vec<AuditRecord>, Option<Assignment>) {
        put(store, TRIAL, &two_arm_pools(), CodeSource::Generated)
            .await
            .expect("pools");
        let assignment = assign(store, TRIAL, "CONF-R-001", "B").await;
        (audit_all(store).await, Some(assignment))
    }

    async fn assert_kept(store: &dyn Store, written: (Vec<AuditRecord>, Option<Assignment>)) {
        let (trail, assignment) = written;
        assert_eq!(audit_all(store).await, trail, "the audit trail survives");
        assert_eq!(store.assignment(TRIAL, "CONF-R-001").await, Ok(assignment));
        assert_eq!(
            store.pool_counts(TRIAL).await.map(|c| c["B"]),
            Ok(counts(3, 1)),
            "the pool count survives"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sqlite_file_keeps_its_data() {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let path = dir.path().join("b.db");
        let store = SqliteStore::open(&path).await.expect("open a file store");
        let written = write_some(&store).await;
        drop(store);
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

const UNKNOWN_TRIAL: &str = "CONF-NO-SUCH-TRIAL";
/// The site every conformance allocation is at.
const SITE: &str = "SITE-1";

// ---------------------------------------------------------------- helpers

pub(crate) fn entry(action: &str) -> AuditEntry {
    AuditEntry {
        at: now_rfc3339(),
        actor: "conformance".into(),
        role: "service:randomisation".into(),
        action: action.into(),
        entity: "trial/T".into(),
        details: json!({}),
    }
}

/// A definition snapshot of the given version (its text is not parsed here).
pub(crate) fn snapshot(version: u32) -> DefinitionSnapshot {
    DefinitionSnapshot {
        version,
        definition_yaml: format!("id: T\nversion: {version}\n"),
        definition_sha256: format!("hash-{version}"),
    }
}

/// One reveal (with its notification) and one period record for trial
/// `T`, for the backends' trigger tests.
pub(crate) async fn write_side_records(store: &dyn Store) {
    let reveal = NewReveal {
        kind: RevealKind::Emergency,
        trial_id: "T".into(),
        subject_id: "S1".into(),
        site_id: SITE.into(),
        arm_id: "A".into(),
        reason_category: Some("pregnancy".into()),
        reason: Some("r".into()),
        case_id: None,
        period_id: None,
        withdraws: false,
    };
    store
        .record_reveal(reveal, entry("reveal.emergency"))
        .await
        .expect("reveal");
    let period = NewPeriodRecord {
        trial_id: "T".into(),
        subject_id: "S1".into(),
        period_id: "p1".into(),
        assigned_arm_id: "A".into(),
        given_arm_id: "A".into(),
        note: String::new(),
    };
    store
        .record_period(period, entry("period.recorded"))
        .await
        .expect("period");
}

fn pool(arm_id: &str, codes: &[&str]) -> CodePool {
    CodePool {
        arm_id: arm_id.into(),
        codes: codes.iter().map(|c| (*c).to_owned()).collect(),
    }
}

/// Arms A and B, three codes each. Real codes never name their arm; these
/// do, so that a wrong arm shows in a failure.
/// Trial `T` with its two generated pools and `S1` assigned arm `A`: the
/// starting point of the backends' trigger and role tests.
pub(crate) async fn pools_with_one_assignment(store: &dyn Store) {
    store
        .put_pools(
            "T",
            &two_arm_pools(),
            CodeSource::Generated,
            &snapshot(1),
            entry("pools"),
        )
        .await
        .expect("pools");
    store
        .assign_code("T", "S1", "SITE-1", "A", entry("assign"))
        .await
        .expect("assign");
}

pub(crate) fn two_arm_pools() -> Vec<CodePool> {
    vec![
        pool("A", &["A-0", "A-1", "A-2"]),
        pool("B", &["B-0", "B-1", "B-2"]),
    ]
}

fn counts(pool_size: u32, issued: u32) -> PoolCounts {
    PoolCounts {
        pool_size,
        issued,
        remaining: pool_size - issued,
    }
}

fn assert_conflict<T: std::fmt::Debug>(result: StoreResult<T>, call: &str) {
    assert!(
        matches!(result, Err(StoreError::Conflict(_))),
        "{call}: expected Conflict, got {result:?}"
    );
}

async fn put(
    store: &dyn Store,
    trial_id: &str,
    pools: &[CodePool],
    source: CodeSource,
) -> StoreResult<()> {
    store
        .put_pools(trial_id, pools, source, &snapshot(1), entry("pools.stored"))
        .await
}

fn assign_entry(subject_id: &str) -> AuditEntry {
    AuditEntry {
        details: json!({ "subject": subject_id }),
        ..entry("code.assigned")
    }
}

async fn try_assign(
    store: &dyn Store,
    trial_id: &str,
    subject_id: &str,
    arm_id: &str,
) -> StoreResult<Assignment> {
    store
        .assign_code(trial_id, subject_id, SITE, arm_id, assign_entry(subject_id))
        .await
}

async fn assign(store: &dyn Store, trial_id: &str, subject_id: &str, arm_id: &str) -> Assignment {
    try_assign(store, trial_id, subject_id, arm_id)
        .await
        .unwrap_or_else(|error| panic!("assign a code to {subject_id}: {error}"))
}

/// Attempts an assignment that must be refused, checks that it wrote
/// nothing and returns the refusal.
async fn refused_assignment(
    store: &dyn Store,
    trial_id: &str,
    subject_id: &str,
    arm_id: &str,
) -> StoreError {
    let existing = store.assignment(trial_id, subject_id).await.expect("read");
    let counts = store.pool_counts(trial_id).await.expect("counts");
    let audit = audit_len(store).await;

    let error = try_assign(store, trial_id, subject_id, arm_id)
        .await
        .expect_err("the assignment must be refused");

    let call = format!("refused assignment of {subject_id} ({error:?})");
    assert_eq!(
        store.assignment(trial_id, subject_id).await,
        Ok(existing),
        "{call}: the allocation's assignment"
    );
    assert_eq!(
        store.pool_counts(trial_id).await,
        Ok(counts),
        "{call}: pool counts"
    );
    assert_appended(store, audit, 0, &call).await;
    error
}

async fn stored_code(store: &dyn Store, trial_id: &str, code: &str) -> CodeEntry {
    store
        .code(trial_id, code)
        .await
        .expect("read a code")
        .unwrap_or_else(|| panic!("code {code} is stored"))
}

async fn pool_counts(store: &dyn Store, trial_id: &str) -> BTreeMap<String, PoolCounts> {
    store.pool_counts(trial_id).await.expect("pool counts")
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
