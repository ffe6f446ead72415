//! The multi-replica store: PostgreSQL with `synchronous_commit = on`, so a
//! commit is durable before the reply.
//!
//! Concurrency across replicas:
//! - an allocation locks its trial row first (`FOR UPDATE`), which
//!   serialises allocations within a trial and makes cap counts exact;
//! - every audit append locks the single `audit_head` row, which keeps the
//!   hash chain linear;
//! - locks are always taken in that order, so writers cannot deadlock.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use equipoise_common::audit::{AuditEntry, AuditRecord};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};

use super::migrations::{POSTGRES, latest};
use super::*;

type WriteTransaction = sqlx::Transaction<'static, sqlx::Postgres>;

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects, checks the server answers, and migrates. A wrong or
    /// unreachable URL fails here, naming the database URL.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e| StoreError::Unavailable(format!("database_url: {e}")))?;
        let options = options.options([("synchronous_commit", "on")]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            // Fail fast while the database is down: the caller gets UNAVAILABLE.
            .acquire_timeout(Duration::from_secs(2))
            .test_before_acquire(true)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(format!("database_url: {}", describe(&e))))?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(database_error)?;
        // Replicas starting together migrate one at a time.
        sqlx::query("SELECT pg_advisory_xact_lock(727272)")
            .execute(&mut *tx)
            .await
            .map_err(database_error)?;
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)")
            .execute(&mut *tx)
            .await
            .map_err(database_error)?;
        let current: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations")
                .fetch_one(&mut *tx)
                .await
                .map_err(database_error)?;
        let supported = latest(POSTGRES);
        if current > supported {
            return Err(StoreError::SchemaTooNew {
                found: current,
                supported,
            });
        }
        for (version, sql) in POSTGRES.iter().filter(|(v, _)| *v > current) {
            sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
                .execute(&mut *tx)
                .await
                .map_err(database_error)?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(version)
                .bind(equipoise_common::time::now_rfc3339())
                .execute(&mut *tx)
                .await
                .map_err(database_error)?;
        }
        tx.commit().await.map_err(database_error)
    }

    async fn write(&self) -> StoreResult<WriteTransaction> {
        self.pool.begin().await.map_err(database_error)
    }
}

/// A short description without connection details or raw driver text.
fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::Io(io) => format!("connection failed ({})", io.kind()),
        sqlx::Error::PoolTimedOut => "no connection available in time".into(),
        sqlx::Error::PoolClosed => "connection pool closed".into(),
        sqlx::Error::Tls(_) => "TLS failure".into(),
        sqlx::Error::Configuration(e) => format!("configuration: {e}"),
        other => format!("{other}"),
    }
}

/// Connection loss, shutdown and overload are UNAVAILABLE; everything else
/// is an internal database error.
fn database_error(error: sqlx::Error) -> StoreError {
    let lost = match &error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_) => true,
        // Class 08: connection exceptions; 57P0x: shutdown; 53: resources.
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || code.starts_with("57P") || code.starts_with("53")
        }),
        _ => false,
    };
    if lost {
        StoreError::Unavailable(describe(&error))
    } else {
        StoreError::Database(error.to_string())
    }
}

async fn append_audit_in(conn: &mut PgConnection, entry: AuditEntry) -> StoreResult<AuditRecord> {
    let (last_seq, last_hash): (i64, String) =
        sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
            .fetch_one(&mut *conn)
            .await
            .map_err(database_error)?;
    let record = AuditRecord::chain(last_seq + 1, entry, &last_hash);
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor, role, action, entity, details, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(record.seq)
    .bind(&record.entry.at)
    .bind(&record.entry.actor)
    .bind(&record.entry.role)
    .bind(&record.entry.action)
    .bind(&record.entry.entity)
    .bind(record.entry.details.to_string())
    .bind(&record.prev_hash)
    .bind(&record.hash)
    .execute(&mut *conn)
    .await
    .map_err(database_error)?;
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(record.seq)
        .bind(&record.hash)
        .execute(&mut *conn)
        .await
        .map_err(database_error)?;
    Ok(record)
}

macro_rules! trial_columns {
    () => {
        "trial_id, version, state, definition_yaml, definition_sha256, algorithm_version, sealed_seed, registered_at, activated_at, closed_at"
    };
}

macro_rules! allocation_columns {
    () => {
        "sequence, trial_id, subject_id, site_id, stratum, stream_key, position, arm, randomisation_number, request_sha256, covariates_json, decision_json, trial_version, randomised_at, corrected_stratum, correction_reason, in_error, error_reason"
    };
}

fn trial_from_row(row: &PgRow) -> StoreResult<TrialRecord> {
    let state: String = row.try_get("state").map_err(database_error)?;
    Ok(TrialRecord {
        trial_id: row.try_get("trial_id").map_err(database_error)?,
        version: row.try_get::<i32, _>("version").map_err(database_error)? as u32,
        state: TrialState::parse(&state)
            .ok_or_else(|| StoreError::Database(format!("unknown trial state {state}")))?,
        definition_yaml: row.try_get("definition_yaml").map_err(database_error)?,
        definition_sha256: row.try_get("definition_sha256").map_err(database_error)?,
        algorithm_version: row
            .try_get::<Option<i32>, _>("algorithm_version")
            .map_err(database_error)?
            .map(|v| v as u32),
        sealed_seed: row.try_get("sealed_seed").map_err(database_error)?,
        registered_at: row.try_get("registered_at").map_err(database_error)?,
        activated_at: row.try_get("activated_at").map_err(database_error)?,
        closed_at: row.try_get("closed_at").map_err(database_error)?,
    })
}

fn allocation_from_row(row: &PgRow) -> StoreResult<AllocationRecord> {
    let text = |name: &str| row.try_get::<String, _>(name).map_err(database_error);
    let optional = |name: &str| {
        row.try_get::<Option<String>, _>(name)
            .map_err(database_error)
    };
    let big = |name: &str| row.try_get::<i64, _>(name).map_err(database_error);
    Ok(AllocationRecord {
        sequence: big("sequence")?,
        trial_id: text("trial_id")?,
        subject_id: text("subject_id")?,
        site_id: text("site_id")?,
        stratum: text("stratum")?,
        stream_key: text("stream_key")?,
        position: big("position")? as u64,
        arm: text("arm")?,
        randomisation_number: text("randomisation_number")?,
        request_sha256: text("request_sha256")?,
        covariates_json: text("covariates_json")?,
        decision_json: text("decision_json")?,
        trial_version: row
            .try_get::<i32, _>("trial_version")
            .map_err(database_error)? as u32,
        randomised_at: text("randomised_at")?,
        corrected_stratum: optional("corrected_stratum")?,
        correction_reason: optional("correction_reason")?,
        in_error: row.try_get("in_error").map_err(database_error)?,
        error_reason: optional("error_reason")?,
    })
}

/// The trial row; `lock` takes it FOR UPDATE to serialise writers.
async fn trial_in(
    conn: &mut PgConnection,
    trial_id: &str,
    lock: bool,
) -> StoreResult<Option<TrialRecord>> {
    let query = if lock {
        concat!(
            "SELECT ",
            trial_columns!(),
            " FROM trials WHERE trial_id = $1 FOR UPDATE"
        )
    } else {
        concat!(
            "SELECT ",
            trial_columns!(),
            " FROM trials WHERE trial_id = $1"
        )
    };
    let row = sqlx::query(query)
        .bind(trial_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(database_error)?;
    row.as_ref().map(trial_from_row).transpose()
}

async fn allocation_in(
    conn: &mut PgConnection,
    trial_id: &str,
    subject_id: &str,
) -> StoreResult<Option<AllocationRecord>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        allocation_columns!(),
        " FROM allocations WHERE trial_id = $1 AND subject_id = $2"
    ))
    .bind(trial_id)
    .bind(subject_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(database_error)?;
    row.as_ref().map(allocation_from_row).transpose()
}

/// Locks the trial and checks it is in `state`.
async fn locked_trial_in_state(
    conn: &mut PgConnection,
    trial_id: &str,
    state: TrialState,
    doing: &str,
) -> StoreResult<TrialRecord> {
    let trial = trial_in(conn, trial_id, true)
        .await?
        .ok_or(StoreError::NotFound)?;
    if trial.state != state {
        return Err(StoreError::Conflict(format!(
            "trial {trial_id} is {}; {doing} needs it {}",
            trial.state.as_str(),
            state.as_str()
        )));
    }
    Ok(trial)
}

async fn check_caps(
    conn: &mut PgConnection,
    allocation: &NewAllocation,
    caps: &CapLimits,
) -> StoreResult<u32> {
    let (total, at_site, in_stratum): (i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE site_id = $2), COUNT(*) FILTER (WHERE stratum = $3)
         FROM allocations WHERE trial_id = $1",
    )
    .bind(&allocation.trial_id)
    .bind(&allocation.site_id)
    .bind(&allocation.stratum)
    .fetch_one(&mut *conn)
    .await
    .map_err(database_error)?;
    match cap_breach(caps, total as u32, at_site as u32, in_stratum as u32) {
        Some(kind) => Err(StoreError::CapReached(kind)),
        None => Ok(at_site as u32),
    }
}

/// Moves the stream from `expected` to `expected + 1`, or reports it fenced.
async fn advance_stream(
    conn: &mut PgConnection,
    trial_id: &str,
    stream_key: &str,
    expected: u64,
) -> StoreResult<()> {
    let result = if expected == 0 {
        sqlx::query("INSERT INTO allocation_streams (trial_id, stream_key, version) VALUES ($1, $2, 1) ON CONFLICT DO NOTHING")
            .bind(trial_id)
            .bind(stream_key)
            .execute(&mut *conn)
            .await
    } else {
        sqlx::query("UPDATE allocation_streams SET version = version + 1 WHERE trial_id = $1 AND stream_key = $2 AND version = $3")
            .bind(trial_id)
            .bind(stream_key)
            .bind(expected as i64)
            .execute(&mut *conn)
            .await
    };
    match result.map_err(database_error)?.rows_affected() {
        1 => Ok(()),
        _ => Err(StoreError::Fenced),
    }
}

async fn finish_with_trial(
    mut tx: WriteTransaction,
    audit: AuditEntry,
    trial_id: &str,
) -> StoreResult<TrialRecord> {
    append_audit_in(&mut tx, audit).await?;
    let updated = trial_in(&mut tx, trial_id, false)
        .await?
        .ok_or(StoreError::NotFound)?;
    tx.commit().await.map_err(database_error)?;
    Ok(updated)
}

async fn finish_with_allocation(
    mut tx: WriteTransaction,
    audit: AuditEntry,
    trial_id: &str,
    subject_id: &str,
) -> StoreResult<AllocationRecord> {
    append_audit_in(&mut tx, audit).await?;
    let updated = allocation_in(&mut tx, trial_id, subject_id)
        .await?
        .ok_or(StoreError::NotFound)?;
    tx.commit().await.map_err(database_error)?;
    Ok(updated)
}

async fn record_version(
    conn: &mut PgConnection,
    trial: (&str, u32),
    definition_yaml: &str,
    definition_sha256: &str,
    reason: &str,
    at: &str,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO trial_versions (trial_id, version, definition_yaml, definition_sha256, reason, recorded_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(trial.0)
    .bind(trial.1 as i32)
    .bind(definition_yaml)
    .bind(definition_sha256)
    .bind(reason)
    .bind(at)
    .execute(&mut *conn)
    .await
    .map_err(database_error)?;
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    async fn register_draft(&self, record: &TrialRecord, audit: AuditEntry) -> StoreResult<()> {
        let mut tx = self.write().await?;
        if let Some(existing) = trial_in(&mut tx, &record.trial_id, true).await?
            && existing.state != TrialState::Draft
        {
            return Err(StoreError::Conflict(format!(
                "trial {} is {}; its design is frozen",
                record.trial_id,
                existing.state.as_str()
            )));
        }
        // A list was checked against the draft it was uploaded to.
        sqlx::query("DELETE FROM allocation_lists WHERE trial_id = $1")
            .bind(&record.trial_id)
            .execute(&mut *tx)
            .await
            .map_err(database_error)?;
        sqlx::query(
            "INSERT INTO trials (trial_id, version, state, definition_yaml, definition_sha256, registered_at) VALUES ($1, $2, 'draft', $3, $4, $5)
             ON CONFLICT (trial_id) DO UPDATE SET version = excluded.version, definition_yaml = excluded.definition_yaml,
             definition_sha256 = excluded.definition_sha256, registered_at = excluded.registered_at",
        )
        .bind(&record.trial_id)
        .bind(record.version as i32)
        .bind(&record.definition_yaml)
        .bind(&record.definition_sha256)
        .bind(&record.registered_at)
        .execute(&mut *tx)
        .await
        .map_err(database_error)?;
        append_audit_in(&mut tx, audit).await?;
        tx.commit().await.map_err(database_error)
    }

    async fn trial(&self, trial_id: &str) -> StoreResult<Option<TrialRecord>> {
        let mut conn = self.pool.acquire().await.map_err(database_error)?;
        trial_in(&mut conn, trial_id, false).await
    }

    async fn activate(
        &self,
        trial_id: &str,
        expected_sha256: &str,
        sealed_seed: &[u8],
        algorithm_version: u32,
        at: &str,
        audit: AuditEntry,
    ) -> StoreResult<TrialRecord> {
        let mut tx = self.write().await?;
        let trial = trial_in(&mut tx, trial_id, true)
            .await?
            .ok_or(StoreError::NotFound)?;
        if trial.state != TrialState::Draft {
            return Err(StoreError::Conflict(format!(
                "trial {trial_id} is already {}",
                trial.state.as_str()
            )));
        }
        if trial.definition_sha256 != expected_sha256 {
            return Err(StoreError::Conflict(format!(
                "trial {trial_id} definition is {}, not the {expected_sha256} that was reviewed",
                trial.definition_sha256
            )));
        }
        sqlx::query("UPDATE trials SET state = 'active', sealed_seed = $1, algorithm_version = $2, activated_at = $3 WHERE trial_id = $4")
            .bind(sealed_seed)
            .bind(algorithm_version as i32)
            .bind(at)
            .bind(trial_id)
            .execute(&mut *tx)
            .await
            .map_err(database_error)?;
        let version = (trial_id, trial.version);
        record_version(
            &mut tx,
            version,
            &trial.definition_yaml,
            &trial.definition_sha256,
            "activation",
            at,
        )
        .await?;
        finish_with_trial(tx, audit, trial_id).await
    }

    async fn amend(
        &self,
        trial_id: &str,
        from_version: u32,
        definition_yaml: &str,
        definition_sha256: &str,
        to_version: u32,
        audit: AuditEntry,
    ) -> StoreResult<TrialRecord> {
        if to_version <= from_version {
            return Err(StoreError::Conflict(format!(
                "an amendment must raise the version above {from_version}"
            )));
        }
        let mut tx = self.write().await?;
        let trial =
            locked_trial_in_state(&mut tx, trial_id, TrialState::Active, "an amendment").await?;
        if trial.version != from_version {
            return Err(StoreError::Conflict(format!(
                "trial {trial_id} is at version {}, not {from_version}",
                trial.version
            )));
        }
        let reason = audit
            .details
            .get("reason")
            .and_then(|r| r.as_str())
            .unwrap_or_default()
            .to_owned();
        sqlx::query("UPDATE trials SET version = $1, definition_yaml = $2, definition_sha256 = $3 WHERE trial_id = $4")
            .bind(to_version as i32)
            .bind(definition_yaml)
            .bind(definition_sha256)
            .bind(trial_id)
            .execute(&mut *tx)
            .await
            .map_err(database_error)?;
        record_version(
            &mut tx,
            (trial_id, to_version),
            definition_yaml,
            definition_sha256,
            &reason,
            &audit.at,
        )
        .await?;
        finish_with_trial(tx, audit, trial_id).await
    }

    async fn close(&self, trial_id: &str, at: &str, audit: AuditEntry) -> StoreResult<TrialRecord> {
        let mut tx = self.write().await?;
        locked_trial_in_state(&mut tx, trial_id, TrialState::Active, "closing").await?;
        sqlx::query("UPDATE trials SET state = 'closed', closed_at = $1 WHERE trial_id = $2")
            .bind(at)
            .bind(trial_id)
            .execute(&mut *tx)
            .await
            .map_err(database_error)?;
        finish_with_trial(tx, audit, trial_id).await
    }

    async fn put_allocation_list(
        &self,
        trial_id: &str,
        entries: &[(String, String)],
        audit: AuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        locked_trial_in_state(&mut tx, trial_id, TrialState::Draft, "uploading a list").await?;
        sqlx::query("DELETE FROM allocation_lists WHERE trial_id = $1")
            .bind(trial_id)
            .execute(&mut *tx)
            .await
            .map_err(database_error)?;
        let mut positions: BTreeMap<&str, i64> = BTreeMap::new();
        for (stratum, arm) in entries {
            let position = positions.entry(stratum.as_str()).or_insert(0);
            sqlx::query("INSERT INTO allocation_lists (trial_id, stratum, position, arm) VALUES ($1, $2, $3, $4)")
                .bind(trial_id)
                .bind(stratum)
                .bind(*position)
                .bind(arm)
                .execute(&mut *tx)
                .await
                .map_err(database_error)?;
            *position += 1;
        }
        append_audit_in(&mut tx, audit).await?;
        tx.commit().await.map_err(database_error)
    }

    async fn list_slot(
        &self,
        trial_id: &str,
        stratum: &str,
        position: u64,
    ) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT arm FROM allocation_lists WHERE trial_id = $1 AND stratum = $2 AND position = $3")
            .bind(trial_id)
            .bind(stratum)
            .bind(position as i64)
            .fetch_optional(&self.pool)
            .await
            .map_err(database_error)
    }

    async fn list_lengths(&self, trial_id: &str) -> StoreResult<BTreeMap<String, u32>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT stratum, COUNT(*) FROM allocation_lists WHERE trial_id = $1 GROUP BY stratum",
        )
        .bind(trial_id)
        .fetch_all(&self.pool)
        .await
        .map_err(database_error)?;
        Ok(rows.into_iter().map(|(s, n)| (s, n as u32)).collect())
    }

    async fn allocation(
        &self,
        trial_id: &str,
        subject_id: &str,
    ) -> StoreResult<Option<AllocationRecord>> {
        let mut conn = self.pool.acquire().await.map_err(database_error)?;
        allocation_in(&mut conn, trial_id, subject_id).await
    }

    async fn stream_version(&self, trial_id: &str, stream_key: &str) -> StoreResult<u64> {
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM allocation_streams WHERE trial_id = $1 AND stream_key = $2",
        )
        .bind(trial_id)
        .bind(stream_key)
        .fetch_optional(&self.pool)
        .await
        .map_err(database_error)?;
        Ok(version.unwrap_or(0) as u64)
    }

    async fn commit_allocation(&self, request: &CommitRequest) -> StoreResult<AllocationRecord> {
        let allocation = &request.allocation;
        let mut tx = self.write().await?;
        locked_trial_in_state(
            &mut tx,
            &allocation.trial_id,
            TrialState::Active,
            "allocation",
        )
        .await?;
        if allocation_in(&mut tx, &allocation.trial_id, &allocation.subject_id)
            .await?
            .is_some()
        {
            return Err(StoreError::SubjectExists);
        }
        let at_site = check_caps(&mut tx, allocation, &request.caps).await?;
        advance_stream(
            &mut tx,
            &allocation.trial_id,
            &allocation.stream_key,
            request.expected_stream_version,
        )
        .await?;
        let number = randomisation_number(&allocation.site_id, at_site + 1);
        let sequence = sqlx::query_scalar::<_, i64>(
            "INSERT INTO allocations (trial_id, subject_id, site_id, stratum, stream_key, position, arm, randomisation_number,
             request_sha256, covariates_json, decision_json, trial_version, randomised_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING sequence",
        )
        .bind(&allocation.trial_id)
        .bind(&allocation.subject_id)
        .bind(&allocation.site_id)
        .bind(&allocation.stratum)
        .bind(&allocation.stream_key)
        .bind(request.expected_stream_version as i64)
        .bind(&allocation.arm)
        .bind(&number)
        .bind(&allocation.request_sha256)
        .bind(&allocation.covariates_json)
        .bind(&allocation.decision_json)
        .bind(allocation.trial_version as i32)
        .bind(&allocation.randomised_at)
        .fetch_one(&mut *tx)
        .await
        .map_err(database_error)?;
        let audit = commit_audit(request, &number);
        append_audit_in(&mut tx, audit).await?;
        tx.commit().await.map_err(database_error)?;
        Ok(allocation.committed(request.expected_stream_version, number, sequence))
    }

    async fn stream_allocations(
        &self,
        trial_id: &str,
        stream_key: &str,
    ) -> StoreResult<Vec<AllocationRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            allocation_columns!(),
            " FROM allocations WHERE trial_id = $1 AND stream_key = $2 ORDER BY position"
        ))
        .bind(trial_id)
        .bind(stream_key)
        .fetch_all(&self.pool)
        .await
        .map_err(database_error)?;
        rows.iter().map(allocation_from_row).collect()
    }

    async fn counts(&self, trial_id: &str) -> StoreResult<Counts> {
        let rows: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT site_id, stratum, in_error FROM allocations WHERE trial_id = $1",
        )
        .bind(trial_id)
        .fetch_all(&self.pool)
        .await
        .map_err(database_error)?;
        Ok(Counts::tally(rows))
    }

    async fn list_allocations(
        &self,
        query: &AllocationQuery,
    ) -> StoreResult<Vec<AllocationRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            allocation_columns!(),
            " FROM allocations WHERE trial_id = $1 AND sequence > $2 AND ($3::TEXT IS NULL OR stratum = $3)
              AND ($4::TEXT[] IS NULL OR site_id = ANY($4)) ORDER BY sequence LIMIT $5"
        ))
        .bind(&query.trial_id)
        .bind(query.after_sequence)
        .bind(&query.stratum)
        .bind(&query.sites)
        .bind(i64::from(query.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(database_error)?;
        rows.iter().map(allocation_from_row).collect()
    }

    async fn correct_stratum(
        &self,
        trial_id: &str,
        subject_id: &str,
        corrected_stratum: &str,
        reason: &str,
        audit: AuditEntry,
    ) -> StoreResult<AllocationRecord> {
        let mut tx = self.write().await?;
        allocation_in(&mut tx, trial_id, subject_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        sqlx::query("UPDATE allocations SET corrected_stratum = $1, correction_reason = $2 WHERE trial_id = $3 AND subject_id = $4")
            .bind(corrected_stratum)
            .bind(reason)
            .bind(trial_id)
            .bind(subject_id)
            .execute(&mut *tx)
            .await
            .map_err(database_error)?;
        finish_with_allocation(tx, audit, trial_id, subject_id).await
    }

    async fn mark_in_error(
        &self,
        trial_id: &str,
        subject_id: &str,
        reason: &str,
        audit: AuditEntry,
    ) -> StoreResult<AllocationRecord> {
        let mut tx = self.write().await?;
        let existing = allocation_in(&mut tx, trial_id, subject_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        if existing.in_error {
            return Err(StoreError::Conflict(format!(
                "subject {subject_id} is already marked randomised in error"
            )));
        }
        sqlx::query("UPDATE allocations SET in_error = TRUE, error_reason = $1 WHERE trial_id = $2 AND subject_id = $3 AND NOT in_error")
            .bind(reason)
            .bind(trial_id)
            .bind(subject_id)
            .execute(&mut *tx)
            .await
            .map_err(database_error)?;
        finish_with_allocation(tx, audit, trial_id, subject_id).await
    }

    async fn append_audit(&self, audit: AuditEntry) -> StoreResult<()> {
        let mut tx = self.write().await?;
        append_audit_in(&mut tx, audit).await?;
        tx.commit().await.map_err(database_error)
    }

    async fn audit_records(&self, from_seq: i64, limit: u32) -> StoreResult<Vec<AuditRecord>> {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT seq, at, actor, role, action, entity, details, prev_hash, hash FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2",
        )
        .bind(from_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(database_error)?;
        Ok(rows.into_iter().map(audit_record_from_row).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    async fn execute(store: &PostgresStore, sql: &'static str) -> Result<(), String> {
        sqlx::query(sql)
            .execute(&store.pool)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn triggers_guard_the_trail_and_newer_schemas_are_refused() {
        let server = PostgresServer::start();
        let store = PostgresStore::connect(&server.url(), 2)
            .await
            .expect("connect");
        for n in 0..3 {
            store
                .append_audit(entry(&format!("a{n}")))
                .await
                .expect("append");
        }
        let update = execute(
            &store,
            "UPDATE audit_log SET actor = 'mallory' WHERE seq = 2",
        )
        .await;
        assert!(update.is_err_and(|e| e.contains("append-only")));
        let delete = execute(&store, "DELETE FROM audit_log").await;
        assert!(delete.is_err_and(|e| e.contains("append-only")));
        let truncate = execute(&store, "TRUNCATE audit_log").await;
        assert!(truncate.is_err_and(|e| e.contains("append-only")));
        let records = store.audit_records(1, 100).await.expect("records");
        assert_eq!(equipoise_common::audit::verify_chain(&records), Ok(3));

        execute(
            &store,
            "INSERT INTO schema_migrations (version, applied_at) VALUES (999, 'future')",
        )
        .await
        .expect("pretend a newer binary migrated");
        let refused = PostgresStore::connect(&server.url(), 2).await;
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
}
