//! The multi-replica store: PostgreSQL with `synchronous_commit = on`.
//!
//! Lock order in every write: the case row (`FOR UPDATE`), then the
//! obligation rows it reads or inserts, then the single `audit_head` row,
//! last, which keeps the chain linear. Writers take locks in that order
//! only, so they cannot deadlock. The transactions are shared (`shared.rs`).

use equipoise_common::store::postgres as db;
use equipoise_common::store::{Privilege, Schema, Table};
use sqlx::migrate::Migrator;
use sqlx::{PgPool, Postgres};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// What the runtime role may do to each table (`store::roles`): exactly
/// what `sql.rs` and the hooks here execute. Case versions, assessments,
/// sealed records and the trail are only ever added.
pub static SCHEMA: Schema = Schema {
    service: "safety",
    migrator: &MIGRATOR,
    tables: &[
        // Classification moves on; locked `FOR UPDATE`.
        Table::updated("cases"),
        Table::append_only("case_versions"),
        Table::append_only("sponsor_assessments"),
        // Closed once by their submission; locked `FOR UPDATE`.
        Table::updated("obligations"),
        Table::append_only("sealed_records"),
        Table::append_only("audit_log"),
        Table::with("audit_head", &[Privilege::Select, Privilege::Update]),
    ],
};

const CASE_FOR_WRITE: &str =
    "SELECT classification, trial_id FROM cases WHERE case_id = $1 FOR UPDATE";
const OBLIGATION_FOR_WRITE: &str = "SELECT obligation_id, case_id, trial_id, kind, due_date,
     due_at, submitted_at, recipient, acknowledgement_id FROM obligations
     WHERE obligation_id = $1 FOR UPDATE";

async fn begin_write(pool: &PgPool) -> super::StoreResult<sqlx::Transaction<'static, Postgres>> {
    Ok(pool.begin().await?)
}

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects, checks the server answers, and migrates, as one role
    /// (development only: it owns the tables).
    pub async fn connect(url: &str, max_connections: u32) -> super::StoreResult<Self> {
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
    ) -> super::StoreResult<Self> {
        let pool = db::connect(url, owner_url, max_connections, &SCHEMA).await?;
        Ok(Self { pool })
    }
}

super::shared::impl_store!(PostgresStore, Postgres);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{TRIGGER_REFUSALS, write_everything};
    use crate::store::{Store, StoreError};
    use equipoise_testkit::PostgresServer;

    async fn execute(pool: &PgPool, sql: &'static str) -> Result<(), String> {
        sqlx::query(sql)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
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
        write_everything(&store).await;
        equipoise_common::store::conformance::assert_roles_guard_the_schema(
            &store.pool,
            &db.owner_url,
            &db.runtime_url,
            &SCHEMA,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn triggers_refuse_overwriting_and_newer_schemas_are_refused() {
        let url = PostgresServer::shared().create_database();
        let store = PostgresStore::connect(&url, 2).await.expect("connect");
        write_everything(&store).await;
        let truncations = [
            ("TRUNCATE case_versions CASCADE", "never overwritten"),
            ("TRUNCATE cases CASCADE", "never deleted"),
            ("TRUNCATE obligations", "never deleted"),
            ("TRUNCATE sealed_records", "append-only"),
            ("TRUNCATE audit_log", "append-only"),
        ];
        for (sql, message) in TRIGGER_REFUSALS.iter().copied().chain(truncations) {
            let refused = execute(&store.pool, sql).await;
            assert!(
                refused.as_ref().is_err_and(|e| e.contains(message)),
                "{sql}: {refused:?}"
            );
        }
        let record = store.case_record("C1").await.expect("read").expect("case");
        assert_eq!(record.versions.len(), 2);
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
}
