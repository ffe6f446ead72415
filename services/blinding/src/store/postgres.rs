//! The multi-replica store: PostgreSQL with `synchronous_commit = on`, so a
//! commit is durable before the reply (`equipoise_common::store::postgres`).
//!
//! Concurrency across replicas, in one fixed lock order:
//! 1. the trial's `code_trials` row: `put_pools` inserts it (a concurrent
//!    insert of the same trial waits, then inserts nothing and is refused),
//!    `assign_code` locks it `FOR UPDATE` before reading anything else, so
//!    a trial's assignments run one at a time and the pool count read is
//!    the count moved on: two assignments never take the same code;
//! 2. the pool and code rows the write changes;
//! 3. the single `audit_head` row, last, which keeps the chain linear.
//!
//! Writers take locks in that order only, so they cannot deadlock.
//! Serialising per trial rather than per pool is deliberate: it also orders
//! two first requests for one allocation naming different arms, which lock
//! different pools, so the second sees the first's assignment.
//!
//! The transactions themselves are shared with SQLite (`shared.rs`); here
//! are the hooks where PostgreSQL differs.

use equipoise_common::store::group_commit::GroupCommit;
use equipoise_common::store::postgres as db;
use equipoise_common::store::{Privilege, Schema, Table};
use sqlx::migrate::Migrator;
use sqlx::{PgPool, Postgres};

use super::*;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// What the runtime role may do to each table (`store::roles`): exactly
/// what `sql.rs` and the hooks here execute. The blind, its reveals and the
/// trail are only ever added to.
pub static SCHEMA: Schema = Schema {
    service: "blinding",
    migrator: &MIGRATOR,
    tables: &[
        // The definition snapshot moves forward; locked `FOR UPDATE`.
        Table::updated("code_trials"),
        // `issued` moves forward as codes are assigned.
        Table::updated("code_pools"),
        Table::append_only("treatment_codes"),
        Table::append_only("code_assignments"),
        Table::append_only("reveals"),
        Table::append_only("unblinding_notifications"),
        Table::append_only("period_records"),
        Table::append_only("audit_log"),
        Table::with("audit_head", &[Privilege::Select, Privilege::Update]),
    ],
};

/// The trial a write is about, locked until the transaction ends.
const TRIAL_FOR_WRITE: &str = "SELECT trial_id FROM code_trials WHERE trial_id = $1 FOR UPDATE";

/// A plain transaction: its rows are locked as it reads them.
async fn begin_write(pool: &PgPool) -> StoreResult<sqlx::Transaction<'static, Postgres>> {
    Ok(pool.begin().await?)
}

pub struct PostgresStore {
    pool: PgPool,
    /// Code assignments, group-committed (`store/batch.rs`).
    commits: GroupCommit<shared::BatchStore>,
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
    //! What the trait cannot reach: the triggers that guard the blind and
    //! the trail against direct SQL, and migration refusals.

    use super::*;
    use crate::store::conformance::{entry, pools_with_one_assignment};
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
        pools_with_one_assignment(&store).await;
        equipoise_common::store::conformance::assert_roles_guard_the_schema(
            &store.pool,
            &db.owner_url,
            &db.runtime_url,
            &SCHEMA,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn triggers_guard_the_blind_and_the_trail_and_newer_schemas_are_refused() {
        let url = PostgresServer::shared().create_database();
        let store = PostgresStore::connect(&url, 2).await.expect("connect");
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
        crate::store::conformance::write_side_records(&store).await;
        let refusals = [
            ("UPDATE reveals SET arm_id = 'B'", "append-only"),
            ("DELETE FROM reveals", "append-only"),
            ("TRUNCATE reveals CASCADE", "append-only"),
            (
                "UPDATE unblinding_notifications SET site_id = 'X'",
                "append-only",
            ),
            ("DELETE FROM unblinding_notifications", "append-only"),
            ("TRUNCATE unblinding_notifications", "append-only"),
            (
                "UPDATE period_records SET given_arm_id = 'B'",
                "append-only",
            ),
            ("DELETE FROM period_records", "append-only"),
            ("TRUNCATE period_records", "append-only"),
            (
                "UPDATE code_trials SET definition_yaml = 'x' WHERE trial_id = 'T'",
                "higher version",
            ),
            (
                "UPDATE code_trials SET pools_stored_at = 'x', definition_version = 9 WHERE trial_id = 'T'",
                "never replaced",
            ),
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
            ("TRUNCATE code_assignments", "immutable"),
            (
                "UPDATE code_pools SET issued = 0 WHERE arm_id = 'A'",
                "never returned",
            ),
            (
                "UPDATE code_pools SET arm_id = 'C' WHERE arm_id = 'A'",
                "immutable",
            ),
            ("DELETE FROM code_trials", "never replaced"),
            (
                "UPDATE audit_log SET actor = 'mallory' WHERE seq = 1",
                "append-only",
            ),
            ("DELETE FROM audit_log", "append-only"),
            ("TRUNCATE audit_log", "append-only"),
        ];
        for (sql, message) in refusals {
            let refused = execute(&store.pool, sql).await;
            assert!(
                refused.as_ref().is_err_and(|e| e.contains(message)),
                "{sql}: {refused:?}"
            );
        }
        let crossed = execute(
            &store.pool,
            "INSERT INTO code_assignments (trial_id, subject_id, site_id, arm_id, code, assigned_at)
             VALUES ('T', 'S2', 'SITE-1', 'A', 'B-0', 'now')",
        )
        .await;
        assert!(
            crossed.is_err_and(|e| e.contains("foreign key")),
            "a code of another arm"
        );
        let assignment = store.assignment("T", "S1").await.expect("read");
        assert_eq!(
            assignment.map(|a| (a.arm_id, a.code)),
            Some(("A".into(), "A-0".into()))
        );

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
