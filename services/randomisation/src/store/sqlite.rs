//! The embedded store: one SQLite file, WAL journal, `synchronous=FULL` so a
//! commit is on disk before the reply. Writers take `BEGIN IMMEDIATE`, which
//! serialises them and makes in-transaction cap counts exact; the audit
//! chain's last row is read under the same lock.
//!
//! The transactions themselves are shared with PostgreSQL (`shared.rs`);
//! here are the hooks where SQLite differs.

use std::path::Path;

use equipoise_common::store::group_commit::GroupCommit;
use equipoise_common::store::sqlite::{self as db, WriteTransaction};
use sqlx::SqlitePool;
use sqlx::migrate::Migrator;

use super::sql::{self, allocation_columns};
use super::*;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// Sites are a JSON array: SQLite has no array parameters.
const LIST_ALLOCATIONS: &str = concat!(
    "SELECT ",
    allocation_columns!(),
    " FROM allocations WHERE trial_id = $1 AND sequence > $2 AND (CAST($3 AS TEXT) IS NULL OR stratum = $3)
      AND ($4 IS NULL OR site_id IN (SELECT value FROM json_each($4))) ORDER BY sequence LIMIT $5"
);

/// A plain read: `BEGIN IMMEDIATE` already holds the lock.
const TRIAL_FOR_WRITE: &str = sql::TRIAL;

/// Sites as the JSON array `json_each` reads.
fn sites_argument(sites: Option<&[String]>) -> Option<String> {
    sites.map(|sites| serde_json::Value::from(sites).to_string())
}

/// Takes the database's write lock now (`BEGIN IMMEDIATE`), so nothing the
/// write reads can change before it commits.
async fn begin_write(pool: &SqlitePool) -> StoreResult<WriteTransaction> {
    Ok(db::begin_write(pool).await?)
}

pub struct SqliteStore {
    pool: SqlitePool,
    /// Allocations and codes, group-committed (`store/batch.rs`).
    commits: GroupCommit<shared::BatchStore>,
    #[cfg(feature = "fault-injection")]
    batch_hold_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and migrates it.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let pool = db::open_file(path, &MIGRATOR).await?;
        Ok(Self::with_pool(pool))
    }

    /// A private in-memory database, for tests.
    pub async fn in_memory() -> StoreResult<Self> {
        let pool = db::open_in_memory(&MIGRATOR).await?;
        Ok(Self::with_pool(pool))
    }
}

super::shared::impl_store!(SqliteStore, Sqlite);

#[cfg(test)]
mod tests {
    use super::*;
    use equipoise_common::audit::verify_chain;
    use sqlx::sqlite::SqliteConnectOptions;

    fn entry(action: &str) -> AuditEntry {
        AuditEntry {
            at: "2026-11-21T10:00:00Z".into(),
            actor: "tester".into(),
            role: "trial_admin".into(),
            action: action.into(),
            entity: "trial/T".into(),
            details: serde_json::json!({}),
        }
    }

    async fn store_with_chain() -> SqliteStore {
        let store = SqliteStore::in_memory().await.expect("store");
        for n in 0..4 {
            store
                .append_audit(entry(&format!("action-{n}")))
                .await
                .expect("append");
        }
        store
    }

    async fn execute(store: &SqliteStore, sql: &'static str) -> Result<(), String> {
        sqlx::query(sql)
            .execute(&store.pool)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn triggers_refuse_editing_or_deleting_the_audit_trail() {
        let store = store_with_chain().await;
        let update = execute(
            &store,
            "UPDATE audit_log SET actor = 'mallory' WHERE seq = 2",
        )
        .await;
        assert!(update.is_err_and(|e| e.contains("append-only")));
        let delete = execute(&store, "DELETE FROM audit_log WHERE seq = 4").await;
        assert!(delete.is_err_and(|e| e.contains("append-only")));
        let records = store.audit_records(1, 100).await.expect("records");
        assert_eq!(verify_chain(&records), Ok(4));
    }

    #[tokio::test]
    async fn verification_names_the_first_record_changed_behind_the_triggers() {
        let store = store_with_chain().await;
        // Someone with file access drops the trigger and edits a record.
        execute(&store, "DROP TRIGGER audit_log_no_update")
            .await
            .expect("drop trigger");
        execute(
            &store,
            "UPDATE audit_log SET actor = 'mallory' WHERE seq = 3",
        )
        .await
        .expect("tamper");
        let records = store.audit_records(1, 100).await.expect("records");
        let broken = verify_chain(&records).expect_err("tampering is detected");
        assert_eq!(broken.seq, 3);
    }

    #[tokio::test]
    async fn an_allocations_assignment_cannot_be_edited() {
        let store = SqliteStore::in_memory().await.expect("store");
        execute(
            &store,
            "INSERT INTO trials (trial_id, version, state, definition_yaml, definition_sha256, registered_at) VALUES ('T', 1, 'active', 'x', 'y', 'now')",
        )
        .await
        .expect("trial");
        execute(
            &store,
            "INSERT INTO allocations (trial_id, subject_id, site_id, stratum, stream_key, position, arm, randomisation_number,
             request_sha256, covariates_json, decision_json, trial_version, randomised_at)
             VALUES ('T', 'S', 'A', 'all', 'all', 0, 'MSC', 'A-0001', 'h', '{}', '{}', 1, 'now')",
        )
        .await
        .expect("allocation");
        let edit = execute(
            &store,
            "UPDATE allocations SET arm = 'SHAM' WHERE subject_id = 'S'",
        )
        .await;
        assert!(edit.is_err_and(|e| e.contains("immutable")));
        let delete = execute(&store, "DELETE FROM allocations WHERE subject_id = 'S'").await;
        assert!(delete.is_err_and(|e| e.contains("never deleted")));
        execute(&store, "UPDATE allocations SET in_error = 1, error_reason = 'wrong patient' WHERE subject_id = 'S'")
            .await
            .expect("marking in error is allowed");
        let unmark = execute(
            &store,
            "UPDATE allocations SET in_error = 0 WHERE subject_id = 'S'",
        )
        .await;
        assert!(unmark.is_err_and(|e| e.contains("final")));

        execute(
            &store,
            "INSERT INTO allocation_codes (trial_id, subject_id, code, recorded_at) VALUES ('T', 'S', 'K-1', 'now')",
        )
        .await
        .expect("a code");
        let recode = execute(&store, "UPDATE allocation_codes SET code = 'K-2'").await;
        assert!(recode.is_err_and(|e| e.contains("immutable")));
        let uncode = execute(&store, "DELETE FROM allocation_codes").await;
        assert!(uncode.is_err_and(|e| e.contains("immutable")));
        let orphan = execute(
            &store,
            "INSERT INTO allocation_codes (trial_id, subject_id, code, recorded_at) VALUES ('T', 'NOBODY', 'K-3', 'now')",
        )
        .await;
        assert!(orphan.is_err(), "a code needs its allocation");
    }

    /// A database as the binary before sqlx's migrator left it: its own
    /// version table, at version 1.
    async fn legacy_database(path: &Path, version: i64) -> SqlitePool {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.expect("create");
        let mut tx = pool.begin().await.expect("begin");
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .expect("version table");
        sqlx::raw_sql(include_str!("../../migrations/sqlite/0001_initial.sql"))
            .execute(&mut *tx)
            .await
            .expect("version 1");
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 'then')")
            .bind(version)
            .execute(&mut *tx)
            .await
            .expect("record the version");
        tx.commit().await.expect("commit");
        pool
    }

    #[tokio::test]
    async fn a_database_from_the_previous_binary_is_adopted_and_keeps_its_trail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.db");
        let legacy = legacy_database(&path, 1).await;
        let mut conn = legacy.acquire().await.expect("connection");
        let first = db::append_audit(&mut conn, entry("before"))
            .await
            .expect("append");
        drop(conn);
        legacy.close().await;

        let store = SqliteStore::open(&path).await.expect("adopt");
        store.append_audit(entry("after")).await.expect("append");
        let records = store.audit_records(1, 10).await.expect("records");
        assert_eq!(records.first(), Some(&first));
        assert_eq!(verify_chain(&records), Ok(2));
        let applied: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&store.pool)
                .await
                .expect("sqlx's table");
        let known: Vec<(i64, Vec<u8>)> = MIGRATOR
            .iter()
            .map(|m| (m.version, m.checksum.to_vec()))
            .collect();
        assert_eq!(applied, known, "every known migration, with its checksum");
        let legacy_left = execute(&store, "SELECT * FROM schema_migrations").await;
        assert!(legacy_left.is_err_and(|e| e.contains("no such table")));
        drop(store);
        SqliteStore::open(&path)
            .await
            .expect("reopen an adopted database");
    }

    /// What the previous binary's migrator did on start-up.
    async fn previous_binary_migrates(pool: &SqlitePool) -> Result<(), sqlx::Error> {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
            .execute(&mut *tx)
            .await?;
        let current: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                .fetch_one(&mut *tx)
                .await?;
        if current < 1 {
            sqlx::raw_sql(include_str!("../../migrations/sqlite/0001_initial.sql"))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    #[tokio::test]
    async fn the_previous_binary_cannot_start_on_an_adopted_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.db");
        legacy_database(&path, 1).await.close().await;
        let store = SqliteStore::open(&path).await.expect("adopt");
        let refused = previous_binary_migrates(&store.pool).await;
        assert!(
            refused.is_err_and(|e| e.to_string().contains("already exists")),
            "it tries version 1 again, and fails without changing anything"
        );
        assert_eq!(store.audit_records(1, 10).await, Ok(vec![]));
        drop(store);
        SqliteStore::open(&path)
            .await
            .expect("this binary still opens it");
    }

    /// Allocations written before the counter rows existed, as
    /// (subject, site, stratum, position).
    const EARLIER: [(&str, &str, &str, i64); 3] = [
        ("OLD-1", "FR-MTP", "S1", 0),
        ("OLD-2", "FR-MTP", "S1", 1),
        ("OLD-3", "FR-PAR", "S2", 0),
    ];

    async fn write_earlier_allocations(pool: &SqlitePool) {
        sqlx::query(
            "INSERT INTO trials (trial_id, version, state, definition_yaml, definition_sha256,
             algorithm_version, sealed_seed, registered_at, activated_at)
             VALUES ('T', 1, 'active', 'yaml', 'sha', 1, x'00', 'then', 'then')",
        )
        .execute(pool)
        .await
        .expect("trial");
        for (subject, site, stratum, position) in EARLIER {
            sqlx::query(
                "INSERT INTO allocations (trial_id, subject_id, site_id, stratum, stream_key, position,
                 arm, randomisation_number, request_sha256, covariates_json, decision_json,
                 trial_version, randomised_at) VALUES ('T', $1, $2, $3, $3, $4, 'A', $5, 'x', '{}', '{}', 1, 'then')",
            )
            .bind(subject)
            .bind(site)
            .bind(stratum)
            .bind(position)
            .bind(format!("{subject}-number"))
            .execute(pool)
            .await
            .expect("allocation");
        }
        sqlx::query("INSERT INTO allocation_streams VALUES ('T', 'S1', 2), ('T', 'S2', 1)")
            .execute(pool)
            .await
            .expect("streams");
    }

    fn commit_request(
        subject: &str,
        site: &str,
        stratum: &str,
        version: u64,
        caps: CapLimits,
    ) -> CommitRequest {
        CommitRequest {
            allocation: NewAllocation {
                trial_id: "T".into(),
                subject_id: subject.into(),
                site_id: site.into(),
                stratum: stratum.into(),
                stream_key: stratum.into(),
                arm: "A".into(),
                request_sha256: "x".into(),
                covariates_json: "{}".into(),
                decision_json: "{}".into(),
                trial_version: 1,
                randomised_at: "now".into(),
            },
            expected_stream_version: version,
            caps,
            audit: entry("allocation.created"),
        }
    }

    /// Migration 0005 counts the allocations already there, so caps and
    /// site numbers carry on from them.
    #[tokio::test]
    async fn the_counter_migration_counts_earlier_allocations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.db");
        let legacy = legacy_database(&path, 1).await;
        write_earlier_allocations(&legacy).await;
        legacy.close().await;
        let store = SqliteStore::open(&path).await.expect("adopt and migrate");

        let site_cap = CapLimits {
            site: Some(2),
            ..CapLimits::default()
        };
        let refused = store
            .commit_allocation(&commit_request("NEW-1", "FR-MTP", "S3", 0, site_cap))
            .await;
        assert_eq!(refused, Err(StoreError::CapReached(CapKind::Site)));
        let stratum_cap = CapLimits {
            stratum: Some(2),
            ..CapLimits::default()
        };
        let second = store
            .commit_allocation(&commit_request("NEW-2", "FR-PAR", "S2", 1, stratum_cap))
            .await
            .expect("the stratum's second");
        assert_eq!(second.randomisation_number, "FR-PAR-0002");
        let refused = store
            .commit_allocation(&commit_request("NEW-3", "FR-LYO", "S2", 2, stratum_cap))
            .await;
        assert_eq!(refused, Err(StoreError::CapReached(CapKind::Stratum)));
        let total_cap = CapLimits {
            total: Some(4),
            ..CapLimits::default()
        };
        let refused = store
            .commit_allocation(&commit_request("NEW-4", "FR-LYO", "S4", 0, total_cap))
            .await;
        assert_eq!(refused, Err(StoreError::CapReached(CapKind::Total)));
    }

    #[tokio::test]
    async fn a_previous_binarys_database_newer_than_this_one_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.db");
        legacy_database(&path, 999).await.close().await;
        let refused = SqliteStore::open(&path).await;
        assert!(matches!(
            refused,
            Err(StoreError::SchemaTooNew { found: 999, .. })
        ));
    }

    #[tokio::test]
    async fn a_schema_newer_than_the_binary_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.db");
        let store = SqliteStore::open(&path).await.expect("create");
        execute(
            &store,
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (999, 'future', TRUE, x'00', 0)",
        )
        .await
        .expect("pretend a newer binary migrated");
        drop(store);
        let reopened = SqliteStore::open(&path).await;
        assert!(matches!(
            reopened,
            Err(StoreError::SchemaTooNew { found: 999, .. })
        ));
    }

    #[tokio::test]
    async fn a_migration_edited_after_it_was_applied_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.db");
        let store = SqliteStore::open(&path).await.expect("create");
        execute(
            &store,
            "UPDATE _sqlx_migrations SET checksum = x'00' WHERE version = 1",
        )
        .await
        .expect("pretend 0001 was edited");
        drop(store);
        let reopened = SqliteStore::open(&path).await;
        assert!(
            matches!(&reopened, Err(StoreError::Database(m)) if m.contains("checksum")),
            "{:?}",
            reopened.err()
        );
    }

    /// Activation fixes a trial's seed, algorithm version and activation
    /// time; a draft may still be activated, and is then frozen.
    #[tokio::test]
    async fn an_activated_trials_seed_version_and_time_are_frozen() {
        let store = SqliteStore::in_memory().await.expect("store");
        execute(
            &store,
            "INSERT INTO trials (trial_id, version, state, definition_yaml, definition_sha256, registered_at) VALUES ('T', 1, 'draft', 'x', 'y', 'then')",
        )
        .await
        .expect("a draft");
        execute(
            &store,
            "UPDATE trials SET state = 'active', sealed_seed = x'01', algorithm_version = 1, activated_at = 'now' WHERE trial_id = 'T'",
        )
        .await
        .expect("activation sets them once");
        for tamper in [
            "UPDATE trials SET sealed_seed = x'02' WHERE trial_id = 'T'",
            "UPDATE trials SET sealed_seed = NULL WHERE trial_id = 'T'",
            "UPDATE trials SET algorithm_version = 2 WHERE trial_id = 'T'",
            "UPDATE trials SET activated_at = 'earlier' WHERE trial_id = 'T'",
        ] {
            let refused = execute(&store, tamper).await;
            assert!(
                refused.is_err_and(|e| e.contains("frozen once set")),
                "{tamper}"
            );
        }
        let deleted = execute(&store, "DELETE FROM trials WHERE trial_id = 'T'").await;
        assert!(deleted.is_err_and(|e| e.contains("never deleted")));
        execute(
            &store,
            "UPDATE trials SET state = 'closed', closed_at = 'later' WHERE trial_id = 'T'",
        )
        .await
        .expect("closing is still allowed");
    }

    /// An activated trial's uploaded list is the allocation sequence: no slot
    /// may be added, changed or removed behind the service.
    #[tokio::test]
    async fn an_activated_trials_list_is_frozen() {
        let store = SqliteStore::in_memory().await.expect("store");
        for setup in [
            "INSERT INTO trials (trial_id, version, state, definition_yaml, definition_sha256, registered_at) VALUES ('T', 1, 'draft', 'x', 'y', 'then')",
            "INSERT INTO allocation_lists (trial_id, stratum, position, arm) VALUES ('T', 's', 0, 'A')",
            "UPDATE allocation_lists SET arm = 'B' WHERE trial_id = 'T'",
            "UPDATE trials SET state = 'active', sealed_seed = x'01', algorithm_version = 1, activated_at = 'now' WHERE trial_id = 'T'",
        ] {
            execute(&store, setup)
                .await
                .expect("a draft's list may change");
        }
        for tamper in [
            "UPDATE allocation_lists SET arm = 'A' WHERE trial_id = 'T'",
            "DELETE FROM allocation_lists WHERE trial_id = 'T'",
            "INSERT INTO allocation_lists (trial_id, stratum, position, arm) VALUES ('T', 's', 1, 'A')",
        ] {
            let refused = execute(&store, tamper).await;
            assert!(
                refused.is_err_and(|e| e.contains("list is frozen")),
                "{tamper}"
            );
        }
    }
}
