//! Migrations through sqlx's [`Migrator`], which checks the checksums of
//! applied migrations, takes PostgreSQL's advisory lock and refuses a
//! database with migrations it does not know.
//!
//! Databases created before sqlx's migrator kept their versions in
//! [`LEGACY_TABLE`]. They are adopted: the known migrations up to that
//! version are recorded as applied, with today's checksums (the migration
//! files are never edited), and the legacy table is dropped in the same
//! transaction. A binary from before the adoption then fails to start on
//! the adopted database instead of misreading a newer schema.

use std::collections::HashSet;

use sqlx::migrate::{Migrate, MigrateError, Migrator};

use super::error::DatabaseError;

/// The table of the services' own migrator before sqlx's.
pub const LEGACY_TABLE: &str = "schema_migrations";

/// sqlx's table, as `migrate!` names it by default.
const SQLX_TABLE: &str = "_sqlx_migrations";

pub(super) const LEGACY_VERSION: &str =
    "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM schema_migrations";
pub(super) const DROP_LEGACY: &str = "DROP TABLE schema_migrations";

/// The newest migration the binary knows.
pub fn latest_version(migrator: &Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Records the known migrations up to `legacy_version` as applied, without
/// running them. Call inside the transaction that drops the legacy table.
pub(super) async fn record_legacy<C: Migrate>(
    conn: &mut C,
    migrator: &Migrator,
    legacy_version: i64,
) -> Result<(), DatabaseError> {
    let supported = latest_version(migrator);
    if legacy_version > supported {
        return Err(DatabaseError::SchemaTooNew {
            found: legacy_version,
            supported,
        });
    }
    let failed = |e| migrate_error(e, migrator);
    conn.ensure_migrations_table(SQLX_TABLE)
        .await
        .map_err(failed)?;
    let applied: HashSet<i64> = conn
        .list_applied_migrations(SQLX_TABLE)
        .await
        .map_err(failed)?
        .into_iter()
        .map(|m| m.version)
        .collect();
    for migration in migrator
        .iter()
        .filter(|m| m.version <= legacy_version && !applied.contains(&m.version))
    {
        conn.skip(SQLX_TABLE, migration).await.map_err(failed)?;
    }
    Ok(())
}

/// `Migrator::run` on this connection. `run_direct` is what `run` calls;
/// calling it directly keeps the future `Send` (sqlx's own comment on it:
/// `run` over `&mut Connection` trips "`Acquire` is not general enough").
pub(super) async fn run_pending<C: Migrate + Send>(
    migrator: &Migrator,
    conn: &mut C,
) -> Result<(), DatabaseError> {
    migrator
        .run_direct(None, conn, false)
        .await
        .map_err(|e| migrate_error(e, migrator))
}

pub(super) fn migrate_error(error: MigrateError, migrator: &Migrator) -> DatabaseError {
    let supported = latest_version(migrator);
    match error {
        MigrateError::VersionMissing(found) if found > supported => {
            DatabaseError::SchemaTooNew { found, supported }
        }
        MigrateError::VersionMissing(version) => DatabaseError::Other(format!(
            "migration {version} is applied but unknown to this binary"
        )),
        MigrateError::VersionMismatch(version) => DatabaseError::Other(format!(
            "migration {version} was changed after it was applied (checksum mismatch)"
        )),
        MigrateError::Execute(error) => error.into(),
        MigrateError::ExecuteMigration(error, version) => match DatabaseError::from(error) {
            DatabaseError::Other(message) => {
                DatabaseError::Other(format!("migration {version}: {message}"))
            }
            other => other,
        },
        other => DatabaseError::Other(other.to_string()),
    }
}
