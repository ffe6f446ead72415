//! The multi-replica store: PostgreSQL with `synchronous_commit = on`, so a
//! commit is durable before the reply.
//!
//! Concurrency across replicas:
//! - an allocation, and every change to a trial, locks the trial row first
//!   (`FOR UPDATE`), which serialises allocations within a trial and makes
//!   cap counts exact;
//! - every audit append locks the single `audit_head` row, which keeps the
//!   hash chain linear;
//! - locks are always taken in that order, so writers cannot deadlock.
//!
//! The transactions themselves are shared with SQLite (`shared.rs`, which
//! keeps that order); here are the hooks where PostgreSQL differs.

use equipoise_common::store::group_commit::GroupCommit;
use equipoise_common::store::postgres as db;
use equipoise_common::store::{Privilege, Schema, Table};
use sqlx::migrate::Migrator;
use sqlx::{PgPool, Postgres};

use super::sql::{allocation_columns, trial_columns};
use super::*;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// What the runtime role may do to each table (`store::roles`): exactly
/// what `sql.rs` and the hooks here execute. Rows of the trail, a trial's
/// recorded versions and treatment codes are only ever added.
pub static SCHEMA: Schema = Schema {
    service: "randomisation",
    migrator: &MIGRATOR,
    tables: &[
        // Drafts are replaced (upsert), trials activated, amended, closed,
        // and locked `FOR UPDATE`, which needs UPDATE.
        Table::updated("trials"),
        Table::append_only("trial_versions"),
        Table::updated("allocation_streams"),
        // Corrections and randomised-in-error marks.
        Table::updated("allocations"),
        // An uploaded list replaces a draft's list.
        Table::with(
            "allocation_lists",
            &[Privilege::Select, Privilege::Insert, Privilege::Delete],
        ),
        // Cap counters, moved by the insert trigger on allocations, which
        // runs as the inserting role.
        Table::updated("allocation_counts"),
        Table::append_only("allocation_codes"),
        Table::append_only("audit_log"),
        Table::with("audit_head", &[Privilege::Select, Privilege::Update]),
    ],
};

/// The trial a write is about, locked until the transaction ends.
const TRIAL_FOR_WRITE: &str = concat!(
    "SELECT ",
    trial_columns!(),
    " FROM trials WHERE trial_id = $1 FOR UPDATE"
);

const LIST_ALLOCATIONS: &str = concat!(
    "SELECT ",
    allocation_columns!(),
    " FROM allocations WHERE trial_id = $1 AND sequence > $2 AND (CAST($3 AS TEXT) IS NULL OR stratum = $3)
      AND (CAST($4 AS TEXT[]) IS NULL OR site_id = ANY($4)) ORDER BY sequence LIMIT $5"
);

/// Sites as a `TEXT[]`.
fn sites_argument(sites: Option<&[String]>) -> Option<&[String]> {
    sites
}

/// A plain transaction: its rows are locked as it reads them.
async fn begin_write(pool: &PgPool) -> StoreResult<sqlx::Transaction<'static, Postgres>> {
    Ok(pool.begin().await?)
}

pub struct PostgresStore {
    pool: PgPool,
    /// Allocations and codes, group-committed (`store/batch.rs`).
    commits: GroupCommit<shared::BatchStore>,
    #[cfg(feature = "fault-injection")]
    batch_hold_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl PostgresStore {
    /// Connects, checks the server answers, and migrates, as one role
    /// (development only: it owns the tables).
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        Self::connect_with_owner(url, None, max_connections).await
    }

    /// As [`PostgresStore::connect`]; with `owner_url`, the migrations run
    /// as that owner, which grants the role of `url` what [`SCHEMA`]
    /// declares, and start-up is refused if that role could get around the
    /// triggers. A wrong or unreachable URL fails here, naming its setting.
    pub async fn connect_with_owner(
        url: &str,
        owner_url: Option<&str>,
        max_connections: u32,
    ) -> StoreResult<Self> {
        let pool = db::connect(url, owner_url, max_connections, &SCHEMA).await?;
        Ok(Self::with_pool(pool))
    }
}

super::shared::impl_store!(PostgresStore, Postgres);

#[cfg(test)]
mod tests {
    use super::*;
    use equipoise_common::audit::verify_chain;
    use equipoise_testkit::PostgresServer;

    fn entry(action: &str) -> AuditEntry {
        AuditEntry {
            at: "2026-11-21T10:00:00Z".into(),
            actor: "tester".into(),
            role: "trial_admin".into(),
            action: action.into(),
            entity: "trial/T".into(),
            details: serde_json::json!({ "draw": 0.985_690_694_632_869_5 }),
        }
    }

    async fn execute(pool: &PgPool, sql: &'static str) -> Result<(), String> {
        sqlx::query(sql)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn triggers_guard_the_trail_and_newer_schemas_are_refused() {
        let url = PostgresServer::shared().create_database();
        let store = PostgresStore::connect(&url, 2).await.expect("connect");
        for n in 0..3 {
            store
                .append_audit(entry(&format!("a{n}")))
                .await
                .expect("append");
        }
        let update = execute(
            &store.pool,
            "UPDATE audit_log SET actor = 'mallory' WHERE seq = 2",
        )
        .await;
        assert!(update.is_err_and(|e| e.contains("append-only")));
        let delete = execute(&store.pool, "DELETE FROM audit_log").await;
        assert!(delete.is_err_and(|e| e.contains("append-only")));
        let truncate = execute(&store.pool, "TRUNCATE audit_log").await;
        assert!(truncate.is_err_and(|e| e.contains("append-only")));
        let records = store.audit_records(1, 100).await.expect("records");
        assert_eq!(verify_chain(&records), Ok(3));

        execute(
            &store.pool,
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (999, 'future', TRUE, '\\x00', 0)",
        )
        .await
        .expect("pretend a newer binary migrated");
        let refused = PostgresStore::connect(&url, 2).await;
        assert!(matches!(
            refused,
            Err(StoreError::SchemaTooNew { found: 999, .. })
        ));
    }

    /// Every table the migrations create is declared, and the runtime role
    /// the declaration prepares cannot get around the triggers of any
    /// append-only one.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_runtime_role_cannot_get_around_the_triggers() {
        let db = PostgresServer::shared().create_database_with_roles();
        let store = PostgresStore::connect_with_owner(&db.runtime_url, Some(&db.owner_url), 2)
            .await
            .expect("connect as the runtime role");
        store.append_audit(entry("a")).await.expect("append");
        equipoise_common::store::conformance::assert_roles_guard_the_schema(
            &store.pool,
            &db.owner_url,
            &db.runtime_url,
            &SCHEMA,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn treatment_codes_are_immutable() {
        let url = PostgresServer::shared().create_database();
        let store = PostgresStore::connect(&url, 2).await.expect("connect");
        for setup in [
            "INSERT INTO trials (trial_id, version, state, definition_yaml, definition_sha256, registered_at) VALUES ('T', 1, 'active', 'x', 'y', 'now')",
            "INSERT INTO allocations (trial_id, subject_id, site_id, stratum, stream_key, position, arm, randomisation_number,
             request_sha256, covariates_json, decision_json, trial_version, randomised_at)
             VALUES ('T', 'S', 'A', 'all', 'all', 0, 'MSC', 'A-0001', 'h', '{}', '{}', 1, 'now')",
            "INSERT INTO allocation_codes (trial_id, subject_id, code, recorded_at) VALUES ('T', 'S', 'K-1', 'now')",
        ] {
            execute(&store.pool, setup).await.expect("set up");
        }
        for tamper in [
            "UPDATE allocation_codes SET code = 'K-2'",
            "DELETE FROM allocation_codes",
            "TRUNCATE allocation_codes",
        ] {
            let refused = execute(&store.pool, tamper).await;
            assert!(refused.is_err_and(|e| e.contains("immutable")), "{tamper}");
        }
        let orphan = execute(
            &store.pool,
            "INSERT INTO allocation_codes (trial_id, subject_id, code, recorded_at) VALUES ('T', 'NOBODY', 'K-3', 'now')",
        )
        .await;
        assert!(orphan.is_err(), "a code needs its allocation");
    }

    /// A database as the binary before sqlx's migrator left it: its own
    /// version table at `version`, the version 1 schema, and an audit record.
    async fn legacy_database(url: &str, version: i64) -> AuditRecord {
        let pool = PgPool::connect(url).await.expect("connect");
        let mut tx = pool.begin().await.expect("begin");
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .expect("version table");
        sqlx::raw_sql(include_str!("../../migrations/postgres/0001_initial.sql"))
            .execute(&mut *tx)
            .await
            .expect("version 1");
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 'then')")
            .bind(version)
            .execute(&mut *tx)
            .await
            .expect("record the version");
        sqlx::query(
            "INSERT INTO trials (trial_id, version, state, definition_yaml, definition_sha256, registered_at)
             VALUES ('T', 3, 'draft', 'id: T', 'abc', 'then')",
        )
        .execute(&mut *tx)
        .await
        .expect("a trial");
        let first = db::append_audit(&mut tx, entry("before"))
            .await
            .expect("append");
        tx.commit().await.expect("commit");
        pool.close().await;
        first
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_database_from_the_previous_binary_is_adopted_and_migrated() {
        let url = PostgresServer::shared().create_database();
        let first = legacy_database(&url, 1).await;

        let store = PostgresStore::connect(&url, 2).await.expect("adopt");
        let trial = store.trial("T").await.expect("read").expect("the trial");
        assert_eq!(trial.version, 3, "the INTEGER column read as i64");
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
        let legacy_left = execute(&store.pool, "SELECT * FROM schema_migrations").await;
        assert!(legacy_left.is_err_and(|e| e.contains("does not exist")));
        drop(store);
        PostgresStore::connect(&url, 2)
            .await
            .expect("reconnect to an adopted database");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_previous_binarys_database_newer_than_this_one_is_refused() {
        let url = PostgresServer::shared().create_database();
        legacy_database(&url, 999).await;
        let refused = PostgresStore::connect(&url, 2).await;
        assert!(matches!(
            refused,
            Err(StoreError::SchemaTooNew { found: 999, .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_wrong_or_unreachable_url_names_the_database_url() {
        let unreachable =
            PostgresStore::connect("postgres://equipoise@127.0.0.1:1/postgres", 1).await;
        let Err(StoreError::Unavailable(message)) = unreachable else {
            panic!("expected UNAVAILABLE, got {:?}", unreachable.err());
        };
        assert!(message.starts_with("database_url"), "{message}");
        let malformed = PostgresStore::connect("mysql:/nonsense", 1).await;
        assert!(
            matches!(malformed, Err(StoreError::Unavailable(m)) if m.starts_with("database_url"))
        );
    }

    /// Activation fixes a trial's seed, algorithm version and activation
    /// time; a draft may still be activated, and is then frozen.
    #[tokio::test(flavor = "multi_thread")]
    async fn an_activated_trials_seed_version_and_time_are_frozen() {
        let url = PostgresServer::shared().create_database();
        let store = PostgresStore::connect(&url, 2).await.expect("connect");
        execute(
            &store.pool,
            "INSERT INTO trials (trial_id, version, state, definition_yaml, definition_sha256, registered_at) VALUES ('T', 1, 'draft', 'x', 'y', 'then')",
        )
        .await
        .expect("a draft");
        execute(
            &store.pool,
            "UPDATE trials SET state = 'active', sealed_seed = '\\x01', algorithm_version = 1, activated_at = 'now' WHERE trial_id = 'T'",
        )
        .await
        .expect("activation sets them once");
        for tamper in [
            "UPDATE trials SET sealed_seed = '\\x02' WHERE trial_id = 'T'",
            "UPDATE trials SET sealed_seed = NULL WHERE trial_id = 'T'",
            "UPDATE trials SET algorithm_version = 2 WHERE trial_id = 'T'",
            "UPDATE trials SET activated_at = 'earlier' WHERE trial_id = 'T'",
        ] {
            let refused = execute(&store.pool, tamper).await;
            assert!(
                refused.is_err_and(|e| e.contains("frozen once set")),
                "{tamper}"
            );
        }
        let deleted = execute(&store.pool, "DELETE FROM trials WHERE trial_id = 'T'").await;
        assert!(deleted.is_err_and(|e| e.contains("never deleted")));
        execute(
            &store.pool,
            "UPDATE trials SET state = 'closed', closed_at = 'later' WHERE trial_id = 'T'",
        )
        .await
        .expect("closing is still allowed");
    }

    /// An activated trial's uploaded list is the allocation sequence: no slot
    /// may be added, changed or removed behind the service.
    #[tokio::test(flavor = "multi_thread")]
    async fn an_activated_trials_list_is_frozen() {
        let url = PostgresServer::shared().create_database();
        let store = PostgresStore::connect(&url, 2).await.expect("connect");
        for setup in [
            "INSERT INTO trials (trial_id, version, state, definition_yaml, definition_sha256, registered_at) VALUES ('T', 1, 'draft', 'x', 'y', 'then')",
            "INSERT INTO allocation_lists (trial_id, stratum, position, arm) VALUES ('T', 's', 0, 'A')",
            "UPDATE allocation_lists SET arm = 'B' WHERE trial_id = 'T'",
            "UPDATE trials SET state = 'active', sealed_seed = '\\x01', algorithm_version = 1, activated_at = 'now' WHERE trial_id = 'T'",
        ] {
            execute(&store.pool, setup)
                .await
                .expect("a draft's list may change");
        }
        for tamper in [
            "UPDATE allocation_lists SET arm = 'A' WHERE trial_id = 'T'",
            "DELETE FROM allocation_lists WHERE trial_id = 'T'",
            "INSERT INTO allocation_lists (trial_id, stratum, position, arm) VALUES ('T', 's', 1, 'A')",
        ] {
            let refused = execute(&store.pool, tamper).await;
            assert!(
                refused.is_err_and(|e| e.contains("list is frozen")),
                "{tamper}"
            );
        }
    }
}
