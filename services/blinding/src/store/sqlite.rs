//! The embedded store: one SQLite file, WAL journal, `synchronous=FULL` so a
//! commit is on disk before the reply (`equipoise_common::store::sqlite`).
//! Writers take `BEGIN IMMEDIATE`, which serialises them: the pool count an
//! assignment reads cannot move before it commits, and the audit chain's
//! last row is read under the same lock.
//!
//! The transactions themselves are shared with PostgreSQL (`shared.rs`);
//! here are the hooks where SQLite differs.

use std::path::Path;

use equipoise_common::store::group_commit::GroupCommit;
use equipoise_common::store::sqlite::{self as db, WriteTransaction};
use sqlx::SqlitePool;
use sqlx::migrate::Migrator;

use super::*;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// A plain read: `BEGIN IMMEDIATE` already holds the lock.
const TRIAL_FOR_WRITE: &str = sql::TRIAL;

/// Takes the database's write lock now (`BEGIN IMMEDIATE`), so nothing the
/// write reads can change before it commits.
async fn begin_write(pool: &SqlitePool) -> StoreResult<WriteTransaction> {
    Ok(db::begin_write(pool).await?)
}

pub struct SqliteStore {
    pool: SqlitePool,
    /// Code assignments, group-committed (`store/batch.rs`).
    commits: GroupCommit<shared::BatchStore>,
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
    //! What the trait cannot reach: the triggers that guard the blind and
    //! the trail against direct SQL, and migration refusals.

    use super::*;
    use crate::store::conformance::{entry, pools_with_one_assignment};

    async fn store_with_an_assignment() -> SqliteStore {
        let store = SqliteStore::in_memory().await.expect("store");
        pools_with_one_assignment(&store).await;
        // A topped-up code is as immutable as a stored one.
        let top_up = crate::codes::CodePool {
            arm_id: "A".into(),
            codes: vec!["A-3".into()],
        };
        store
            .add_codes("T", &[top_up], entry("top-up"))
            .await
            .expect("top up");
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
    async fn triggers_refuse_editing_the_blind_assignments_and_trail() {
        let store = store_with_an_assignment().await;
        let refusals = [
            (
                "UPDATE treatment_codes SET arm_id = 'B' WHERE code = 'A-0'",
                "immutable",
            ),
            (
                "DELETE FROM treatment_codes WHERE code = 'A-1'",
                "never deleted",
            ),
            (
                "UPDATE treatment_codes SET arm_id = 'B' WHERE code = 'A-3'",
                "immutable",
            ),
            (
                "DELETE FROM treatment_codes WHERE code = 'A-3'",
                "never deleted",
            ),
            (
                "UPDATE code_assignments SET code = 'A-1' WHERE subject_id = 'S1'",
                "immutable",
            ),
            (
                "UPDATE code_assignments SET arm_id = 'B' WHERE subject_id = 'S1'",
                "immutable",
            ),
            (
                "DELETE FROM code_assignments WHERE subject_id = 'S1'",
                "immutable",
            ),
            (
                "UPDATE code_pools SET issued = 0 WHERE arm_id = 'A'",
                "never returned",
            ),
            (
                "UPDATE code_pools SET arm_id = 'C' WHERE arm_id = 'A'",
                "immutable",
            ),
            ("DELETE FROM code_pools WHERE arm_id = 'B'", "never deleted"),
            ("DELETE FROM code_trials", "never replaced"),
            (
                "UPDATE audit_log SET actor = 'mallory' WHERE seq = 1",
                "append-only",
            ),
            ("DELETE FROM audit_log WHERE seq = 2", "append-only"),
        ];
        for (sql, message) in refusals {
            let refused = execute(&store, sql).await;
            assert!(
                refused.as_ref().is_err_and(|e| e.contains(message)),
                "{sql}: {refused:?}"
            );
        }
        let assignment = store.assignment("T", "S1").await.expect("read");
        assert_eq!(
            assignment.map(|a| (a.arm_id, a.code)),
            Some(("A".into(), "A-0".into()))
        );
    }

    async fn store_with_reveals_and_periods() -> SqliteStore {
        let store = store_with_an_assignment().await;
        crate::store::conformance::write_side_records(&store).await;
        store
    }

    #[tokio::test]
    async fn triggers_keep_reveals_notifications_periods_and_snapshots() {
        let store = store_with_reveals_and_periods().await;
        let refusals = [
            ("UPDATE reveals SET arm_id = 'B'", "append-only"),
            ("DELETE FROM reveals", "append-only"),
            (
                "UPDATE unblinding_notifications SET site_id = 'X'",
                "append-only",
            ),
            ("DELETE FROM unblinding_notifications", "append-only"),
            (
                "UPDATE period_records SET given_arm_id = 'B'",
                "append-only",
            ),
            ("DELETE FROM period_records", "append-only"),
            (
                "UPDATE code_trials SET definition_yaml = 'x' WHERE trial_id = 'T'",
                "higher version",
            ),
            (
                "UPDATE code_trials SET definition_version = 0 WHERE trial_id = 'T'",
                "higher version",
            ),
            (
                "UPDATE code_trials SET pools_stored_at = 'x', definition_version = 9 WHERE trial_id = 'T'",
                "never replaced",
            ),
        ];
        for (sql, message) in refusals {
            let refused = execute(&store, sql).await;
            assert!(
                refused.as_ref().is_err_and(|e| e.contains(message)),
                "{sql}: {refused:?}"
            );
        }
        execute(
            &store,
            "UPDATE code_trials SET definition_version = 5, definition_yaml = 'v5' WHERE trial_id = 'T'",
        )
        .await
        .expect("a higher version is allowed");
    }

    #[tokio::test]
    async fn an_assignment_cannot_name_a_code_of_another_arm() {
        let store = store_with_an_assignment().await;
        let crossed = execute(
            &store,
            "INSERT INTO code_assignments (trial_id, subject_id, site_id, arm_id, code, assigned_at)
             VALUES ('T', 'S2', 'SITE-1', 'A', 'B-0', 'now')",
        )
        .await;
        assert!(crossed.is_err_and(|e| e.contains("FOREIGN KEY")));
    }

    #[tokio::test]
    async fn a_schema_newer_than_the_binary_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.db");
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
