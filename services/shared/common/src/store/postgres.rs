//! The multi-replica backend: PostgreSQL with `synchronous_commit = on`, so
//! a commit is durable before the reply. Every audit append locks the single
//! `audit_head` row, which keeps the hash chain linear across replicas; a
//! service that also locks its own rows takes those first, then the head.

use std::time::Duration;

use sqlx::migrate::{Migrate, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{Connection, PgPool};

use super::audit::{self, AuditRow, bind_record};
use super::error::{DatabaseError, describe};
use super::migrate::{
    DROP_LEGACY, LEGACY_TABLE, LEGACY_VERSION, migrate_error, record_legacy, run_pending,
};
use super::roles::{self, RoleError, Schema};
use crate::audit::{AuditEntry, AuditRecord};

/// Fail fast while the database is down: the caller gets UNAVAILABLE.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects, checks the server answers, and migrates. A wrong or
/// unreachable URL fails here with an error naming `database_url`, never
/// the URL itself (it may hold a password).
///
/// With `owner_url` (`<service>.database_owner_url`), the migrations run
/// over one short-lived connection as that owner, which then grants the
/// role of `url` what `schema` declares and nothing else; start-up is
/// refused if that runtime role is the owner, a superuser, or could still
/// get around the triggers (`roles::inspect_runtime`). Without it, one role
/// migrates and runs, owning the tables: for development only, and said so
/// in a warning.
pub async fn connect(
    url: &str,
    owner_url: Option<&str>,
    max_connections: u32,
    schema: &Schema,
) -> Result<PgPool, DatabaseError> {
    let pool = open_pool(url, max_connections).await?;
    let Some(owner_url) = owner_url else {
        migrate(&pool, schema.migrator).await?;
        // Only a warning: one role is how development and `make run` work.
        let problem = match roles::inspect_runtime(&pool, schema).await {
            Ok(problem) => problem.map(|p| p.to_string()),
            Err(error) => Some(format!("its privileges could not be read: {error}")),
        };
        if let Some(problem) = problem {
            tracing::warn!(
                "{owner_key} is unset, so the role of {key} owns the tables it writes (development only; \
                 in production set {owner_key}, README \"Database roles\"): {problem}",
                owner_key = schema.owner_url_key(),
                key = schema.url_key(),
            );
        }
        return Ok(pool);
    };
    let runtime = roles::identity(&pool).await?;
    let mut owner = connect_owner(owner_url, schema).await?;
    let owner_role = roles::identity(&mut owner).await?;
    let prepared = match roles::refuse_before_grants(schema, &runtime, &owner_role) {
        Ok(()) => migrate_as_owner(&mut owner, schema, &runtime.name).await,
        Err(refused) => Err(refused.into()),
    };
    // The owner's connection lives only for the migration and the grants.
    let _ = owner.close().await;
    prepared?;
    if let Some(problem) = roles::inspect_runtime(&pool, schema).await? {
        return Err(problem.into());
    }
    Ok(pool)
}

/// A pooled connection idle longer than this is pinged before it is used.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

async fn open_pool(url: &str, max_connections: u32) -> Result<PgPool, DatabaseError> {
    let options: PgConnectOptions = url
        .parse()
        .map_err(|e: sqlx::Error| DatabaseError::Unavailable(format!("database_url: {e}")))?;
    let options = options.options([("synchronous_commit", "on")]);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // A ping is a round trip to the server before every query: only a
        // connection idle long enough to have been cut (a restart, a
        // proxy's idle timeout) is pinged. One in use moments ago that has
        // since died fails its query as UNAVAILABLE, which callers retry.
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_WHEN_IDLE_FOR {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await
        .map_err(|e| DatabaseError::Unavailable(format!("database_url: {}", describe(&e))))
}

async fn connect_owner(owner_url: &str, schema: &Schema) -> Result<PgConnection, DatabaseError> {
    let unreachable = |reason: String| {
        DatabaseError::from(RoleError::OwnerUnreachable {
            key: schema.owner_url_key(),
            reason,
        })
    };
    let options: PgConnectOptions = owner_url
        .parse()
        .map_err(|e: sqlx::Error| unreachable(e.to_string()))?;
    let options = options.options([("synchronous_commit", "on")]);
    PgConnection::connect_with(&options)
        .await
        .map_err(|e| unreachable(describe(&e)))
}

/// Migrates and grants as the owner, under the migrator's lock. A failure
/// names the owner's setting, except a schema newer than the binary, which
/// keeps its own error.
async fn migrate_as_owner(
    owner: &mut PgConnection,
    schema: &Schema,
    runtime: &str,
) -> Result<(), DatabaseError> {
    migrate_locked(owner, schema.migrator, Some((schema, runtime)))
        .await
        .map_err(|e| match e {
            DatabaseError::Unavailable(reason) | DatabaseError::Other(reason) => {
                DatabaseError::from(RoleError::Migration {
                    key: schema.owner_url_key(),
                    reason,
                })
            }
            kept => kept,
        })
}

/// Adopts a legacy database, then runs the pending migrations, holding the
/// migrator's advisory lock throughout so replicas starting together take
/// turns.
pub async fn migrate(pool: &PgPool, migrator: &Migrator) -> Result<(), DatabaseError> {
    let mut conn = pool.acquire().await?;
    let result = migrate_locked(&mut conn, migrator, None).await;
    if result.is_err() {
        // A failed run leaves the session's advisory lock held.
        conn.close_on_drop();
    }
    result
}

/// With `grant`, also grants the runtime role its privileges before the
/// lock is released: replicas starting together would otherwise GRANT on
/// the same tables at once, which PostgreSQL may refuse.
async fn migrate_locked(
    conn: &mut PgConnection,
    migrator: &Migrator,
    grant: Option<(&Schema, &str)>,
) -> Result<(), DatabaseError> {
    let failed = |e| migrate_error(e, migrator);
    conn.lock().await.map_err(failed)?;
    adopt_legacy(conn, migrator).await?;
    // The session lock is re-entrant: the run takes and releases it once more.
    run_pending(migrator, conn).await?;
    if let Some((schema, runtime)) = grant {
        roles::grant_runtime(conn, schema, runtime).await?;
    }
    conn.unlock().await.map_err(failed)?;
    Ok(())
}

async fn adopt_legacy(conn: &mut PgConnection, migrator: &Migrator) -> Result<(), DatabaseError> {
    let mut tx = conn.begin().await?;
    let legacy: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(LEGACY_TABLE)
        .fetch_one(&mut *tx)
        .await?;
    if !legacy {
        return Ok(());
    }
    let version: i64 = sqlx::query_scalar(LEGACY_VERSION)
        .fetch_one(&mut *tx)
        .await?;
    record_legacy(&mut *tx, migrator, version).await?;
    sqlx::query(DROP_LEGACY).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Chains `entry` after the head, which it locks until the transaction
/// ends. Call inside a transaction.
pub async fn append_audit(
    conn: &mut PgConnection,
    entry: AuditEntry,
) -> Result<AuditRecord, DatabaseError> {
    append_audits(conn, vec![entry])
        .await?
        .pop()
        .ok_or_else(|| DatabaseError::Other("an append wrote no audit record".into()))
}

/// Chains `entries` after the last record, in order, reading and moving the
/// `audit_head` row once: a group-committed batch's records.
pub async fn append_audits(
    conn: &mut PgConnection,
    entries: Vec<AuditEntry>,
) -> Result<Vec<AuditRecord>, DatabaseError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let head: (i64, String) =
        sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
            .fetch_one(&mut *conn)
            .await?;
    let records = insert_chained(conn, head, entries).await?;
    if let Some(last) = records.last() {
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(last.seq)
            .bind(&last.hash)
            .execute(&mut *conn)
            .await?;
    }
    Ok(records)
}

async fn insert_chained(
    conn: &mut PgConnection,
    (mut seq, mut hash): (i64, String),
    entries: Vec<AuditEntry>,
) -> Result<Vec<AuditRecord>, DatabaseError> {
    let mut records = Vec::with_capacity(entries.len());
    for entry in entries {
        let record = AuditRecord::chain(seq + 1, entry, &hash);
        bind_record!(sqlx::query(audit::INSERT), record)
            .execute(&mut *conn)
            .await?;
        (seq, hash) = (record.seq, record.hash.clone());
        records.push(record);
    }
    Ok(records)
}

/// The chain's end as the `audit_head` row records it, updated in the same
/// transaction as every append: a tail deleted behind the triggers leaves
/// the head ahead of the last record.
pub async fn stored_head(pool: &PgPool) -> Result<Option<(i64, String)>, DatabaseError> {
    let head: (i64, String) = sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(pool)
        .await?;
    Ok(Some(head))
}

/// Audit records from `from_seq` on, in order.
pub async fn audit_records(
    pool: &PgPool,
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
