//! The embedded backend: one SQLite file, WAL journal, `synchronous=FULL`
//! so a commit is on disk before the reply. Writers take `BEGIN IMMEDIATE`,
//! which serialises them: counts read inside a write are exact, and the
//! audit chain's last row cannot move under an append.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Sqlite, SqlitePool};

use super::audit::{self, AuditRow, bind_record};
use super::error::DatabaseError;
use super::migrate::{DROP_LEGACY, LEGACY_TABLE, LEGACY_VERSION, record_legacy, run_pending};
use crate::audit::{AuditEntry, AuditRecord, GENESIS_HASH};

/// A transaction begun with [`begin_write`].
pub type WriteTransaction = sqlx::Transaction<'static, Sqlite>;

/// How long a writer waits for another's `BEGIN IMMEDIATE` before reporting
/// the database busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
const FILE_CONNECTIONS: u32 = 4;
// Pools skip sqlx's ping before each acquire (`test_before_acquire`): a
// SQLite connection is a file handle that cannot go stale like a socket, and
// the ping is a round trip to the connection's worker thread on every query.

/// Opens (creating if needed) the database file and migrates it.
pub async fn open_file(path: &Path, migrator: &Migrator) -> Result<SqlitePool, DatabaseError> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT);
    let pool = SqlitePoolOptions::new()
        .max_connections(FILE_CONNECTIONS)
        .test_before_acquire(false)
        .connect_with(options)
        .await?;
    migrate(&pool, migrator).await?;
    Ok(pool)
}

/// A private in-memory database, for tests.
pub async fn open_in_memory(migrator: &Migrator) -> Result<SqlitePool, DatabaseError> {
    let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
    // One connection, never recycled: each in-memory connection is its own
    // database, which dies with it.
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options)
        .await?;
    migrate(&pool, migrator).await?;
    Ok(pool)
}

/// Adopts a legacy database, then runs the pending migrations, all in one
/// `BEGIN IMMEDIATE` transaction so two processes opening the same file
/// take turns and a failed migration leaves nothing behind. A migration
/// must therefore be transactional (no `-- no-transaction`, no `VACUUM`).
pub async fn migrate(pool: &SqlitePool, migrator: &Migrator) -> Result<(), DatabaseError> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    adopt_legacy(&mut tx, migrator).await?;
    // Each migration runs in a savepoint of this transaction.
    run_pending(migrator, &mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

async fn adopt_legacy(
    conn: &mut SqliteConnection,
    migrator: &Migrator,
) -> Result<(), DatabaseError> {
    let legacy: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1)",
    )
    .bind(LEGACY_TABLE)
    .fetch_one(&mut *conn)
    .await?;
    if !legacy {
        return Ok(());
    }
    let version: i64 = sqlx::query_scalar(LEGACY_VERSION)
        .fetch_one(&mut *conn)
        .await?;
    record_legacy(conn, migrator, version).await?;
    sqlx::query(DROP_LEGACY).execute(&mut *conn).await?;
    Ok(())
}

/// Begins a write: `BEGIN IMMEDIATE` takes the database's write lock now,
/// not at the first write, so what the transaction reads cannot change.
pub async fn begin_write(pool: &SqlitePool) -> Result<WriteTransaction, DatabaseError> {
    Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
}

/// Chains `entry` after the last record. Call inside [`begin_write`]'s
/// transaction: its lock keeps the last record the last.
pub async fn append_audit(
    conn: &mut SqliteConnection,
    entry: AuditEntry,
) -> Result<AuditRecord, DatabaseError> {
    append_audits(conn, vec![entry])
        .await?
        .pop()
        .ok_or_else(|| DatabaseError::Other("an append wrote no audit record".into()))
}

/// Chains `entries` after the last record, in order, reading the chain's
/// end once: a group-committed batch's records. Call inside
/// [`begin_write`]'s transaction.
pub async fn append_audits(
    conn: &mut SqliteConnection,
    entries: Vec<AuditEntry>,
) -> Result<Vec<AuditRecord>, DatabaseError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let last: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?;
    let (mut seq, mut prev) = last.unwrap_or((0, GENESIS_HASH.to_owned()));
    let mut records = Vec::with_capacity(entries.len());
    for entry in entries {
        let record = AuditRecord::chain(seq + 1, entry, &prev);
        bind_record!(sqlx::query(audit::INSERT), record)
            .execute(&mut *conn)
            .await?;
        (seq, prev) = (record.seq, record.hash.clone());
        records.push(record);
    }
    Ok(records)
}

/// The chain's end as the database records it apart from the chain:
/// SQLite keeps none (the last row is the head; an exported signed head,
/// `audit head`, is what catches a removed tail there).
pub async fn stored_head(_pool: &SqlitePool) -> Result<Option<(i64, String)>, DatabaseError> {
    Ok(None)
}

/// Audit records from `from_seq` on, in order.
pub async fn audit_records(
    pool: &SqlitePool,
    from_seq: i64,
    limit: u32,
) -> Result<Vec<AuditRecord>, DatabaseError> {
    let rows: Vec<AuditRow> = sqlx::query_as(audit::FROM_SEQ)
        .bind(from_seq)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(AuditRecord::from).collect())
}
