//! The embedded store: one SQLite file, WAL journal, `synchronous=FULL` so a
//! commit is on disk before the reply. Writers take `BEGIN IMMEDIATE`,
//! which serialises them. The transactions are shared (`shared.rs`).

use std::path::Path;

use equipoise_common::store::sqlite::{self as db, WriteTransaction};
use sqlx::SqlitePool;
use sqlx::migrate::Migrator;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// Plain reads: `BEGIN IMMEDIATE` already holds the lock.
const CASE_FOR_WRITE: &str = "SELECT classification, trial_id FROM cases WHERE case_id = $1";
const OBLIGATION_FOR_WRITE: &str = "SELECT obligation_id, case_id, trial_id, kind, due_date,
     due_at, submitted_at, recipient, acknowledgement_id FROM obligations
     WHERE obligation_id = $1";

async fn begin_write(pool: &SqlitePool) -> super::StoreResult<WriteTransaction> {
    Ok(db::begin_write(pool).await?)
}

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and migrates it.
    pub async fn open(path: &Path) -> super::StoreResult<Self> {
        let pool = db::open_file(path, &MIGRATOR).await?;
        Ok(Self { pool })
    }

    /// A private in-memory database, for tests.
    pub async fn in_memory() -> super::StoreResult<Self> {
        let pool = db::open_in_memory(&MIGRATOR).await?;
        Ok(Self { pool })
    }
}

super::shared::impl_store!(SqliteStore, Sqlite);

#[cfg(test)]
mod tests {
    //! What the trait cannot reach: the triggers that keep versions,
    //! settled classifications, obligations and the trail.

    use super::*;
    use crate::store::conformance::write_everything;
    use crate::store::{Store, StoreError};

    async fn execute(store: &SqliteStore, sql: &'static str) -> Result<(), String> {
        sqlx::query(sql)
            .execute(&store.pool)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn triggers_refuse_overwriting_versions_outcomes_obligations_and_the_trail() {
        let store = SqliteStore::in_memory().await.expect("store");
        write_everything(&store).await;
        for (sql, message) in crate::store::conformance::TRIGGER_REFUSALS {
            let refused = execute(&store, sql).await;
            assert!(
                refused.as_ref().is_err_and(|e| e.contains(message)),
                "{sql}: {refused:?}"
            );
        }
        let record = store.case_record("C1").await.expect("read").expect("case");
        assert_eq!(record.versions.len(), 2);
        assert_eq!(record.versions[0].report_json, "{\"v\":1}");
    }

    #[tokio::test]
    async fn a_schema_newer_than_the_binary_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
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
}
