//! The embedded store: one SQLite file, WAL journal, `synchronous=FULL` so a
//! commit is on disk before the reply. Writers take `BEGIN IMMEDIATE`, which
//! serialises them and makes in-transaction cap counts exact.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use equipoise_common::audit::{AuditEntry, AuditRecord, GENESIS_HASH};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};

use super::migrations::{SQLITE, latest};
use super::*;

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and migrates it.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        Self::connect(options).await
    }

    /// A private in-memory database, for tests.
    pub async fn in_memory() -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(database_error)?
            .foreign_keys(true);
        // One connection: each in-memory connection would be its own database.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(database_error)?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn connect(options: SqliteConnectOptions) -> StoreResult<Self> {
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(database_error)?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(database_error)?;
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
            .execute(&mut *tx)
            .await
            .map_err(database_error)?;
        let current: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                .fetch_one(&mut *tx)
                .await
                .map_err(database_error)?;
        let supported = latest(SQLITE);
        if current > supported {
            return Err(StoreError::SchemaTooNew {
                found: current,
                supported,
            });
        }
        for (version, sql) in SQLITE.iter().filter(|(v, _)| *v > current) {
            sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
                .execute(&mut *tx)
                .await
                .map_err(database_error)?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)")
                .bind(version)
                .bind(equipoise_common::time::now_rfc3339())
                .execute(&mut *tx)
                .await
                .map_err(database_error)?;
        }
        tx.commit().await.map_err(database_error)
    }

    async fn write(&self) -> StoreResult<WriteTransaction> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(database_error)
    }
}

fn database_error(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            StoreError::Unavailable(error.to_string())
        }
        sqlx::Error::Database(db)
            if db.message().contains("locked") || db.message().contains("busy") =>
        {
            StoreError::Unavailable(db.message().to_owned())
        }
        _ => StoreError::Database(error.to_string()),
    }
}

async fn append_audit_in(
    conn: &mut SqliteConnection,
    entry: AuditEntry,
) -> StoreResult<AuditRecord> {
    let last: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(database_error)?;
    let (seq, prev) = last.map_or((1, GENESIS_HASH.to_owned()), |(seq, hash)| (seq + 1, hash));
    let record = AuditRecord::chain(seq, entry, &prev);
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor, role, action, entity, details, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    Ok(record)
}

/// Column lists as macros, so queries stay `&'static str` for sqlx.
macro_rules! trial_columns {
    () => {
        "trial_id, version, state, definition_yaml, definition_sha256, algorithm_version, sealed_seed, registered_at, activated_at, closed_at"
    };
}

fn trial_from_row(row: &SqliteRow) -> StoreResult<TrialRecord> {
    let state: String = row.try_get("state").map_err(database_error)?;
    Ok(TrialRecord {
        trial_id: row.try_get("trial_id").map_err(database_error)?,
        version: row.try_get::<i64, _>("version").map_err(database_error)? as u32,
        state: TrialState::parse(&state)
            .ok_or_else(|| StoreError::Database(format!("unknown trial state {state}")))?,
        definition_yaml: row.try_get("definition_yaml").map_err(database_error)?,
        definition_sha256: row.try_get("definition_sha256").map_err(database_error)?,
        algorithm_version: row
            .try_get::<Option<i64>, _>("algorithm_version")
            .map_err(database_error)?
            .map(|v| v as u32),
        sealed_seed: row.try_get("sealed_seed").map_err(database_error)?,
        registered_at: row.try_get("registered_at").map_err(database_error)?,
        activated_at: row.try_get("activated_at").map_err(database_error)?,
        closed_at: row.try_get("closed_at").map_err(database_error)?,
    })
}

macro_rules! allocation_columns {
    () => {
        "sequence, trial_id, subject_id, site_id, stratum, stream_key, position, arm, randomisation_number, request_sha256, covariates_json, decision_json, trial_version, randomised_at, corrected_stratum, correction_reason, in_error, error_reason"
    };
}

fn allocation_from_row(row: &SqliteRow) -> StoreResult<AllocationRecord> {
    let get_text = |name: &str| row.try_get::<String, _>(name).map_err(database_error);
    let get_optional = |name: &str| {
        row.try_get::<Option<String>, _>(name)
            .map_err(database_error)
    };
    let get_int = |name: &str| row.try_get::<i64, _>(name).map_err(database_error);
    Ok(AllocationRecord {
        sequence: get_int("sequence")?,
        trial_id: get_text("trial_id")?,
        subject_id: get_text("subject_id")?,
        site_id: get_text("site_id")?,
        stratum: get_text("stratum")?,
        stream_key: get_text("stream_key")?,
        position: get_int("position")? as u64,
        arm: get_text("arm")?,
        randomisation_number: get_text("randomisation_number")?,
        request_sha256: get_text("request_sha256")?,
        covariates_json: get_text("covariates_json")?,
        decision_json: get_text("decision_json")?,
        trial_version: get_int("trial_version")? as u32,
        randomised_at: get_text("randomised_at")?,
        corrected_stratum: get_optional("corrected_stratum")?,
        correction_reason: get_optional("correction_reason")?,
        in_error: get_int("in_error")? != 0,
        error_reason: get_optional("error_reason")?,
    })
}

async fn trial_in(conn: &mut SqliteConnection, trial_id: &str) -> StoreResult<Option<TrialRecord>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        trial_columns!(),
        " FROM trials WHERE trial_id = ?"
    ))
    .bind(trial_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(database_error)?;
    row.as_ref().map(trial_from_row).transpose()
}

async fn allocation_in(
    conn: &mut SqliteConnection,
    trial_id: &str,
    subject_id: &str,
) -> StoreResult<Option<AllocationRecord>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        allocation_columns!(),
        " FROM allocations WHERE trial_id = ? AND subject_id = ?"
    ))
    .bind(trial_id)
    .bind(subject_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(database_error)?;
    row.as_ref().map(allocation_from_row).transpose()
}

/// The trial, which must be in `state` for `doing`.
async fn trial_in_state(
    conn: &mut SqliteConnection,
    trial_id: &str,
    state: TrialState,
    doing: &str,
) -> StoreResult<TrialRecord> {
    let trial = trial_in(conn, trial_id)
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

/// Refuses the commit if any cap is already reached; returns the site's count.
async fn check_caps(
    conn: &mut SqliteConnection,
    allocation: &NewAllocation,
    caps: &CapLimits,
) -> StoreResult<u32> {
    let (total, at_site, in_stratum): (i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(site_id = ?2), 0), COALESCE(SUM(stratum = ?3), 0) FROM allocations WHERE trial_id = ?1",
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
    conn: &mut SqliteConnection,
    trial_id: &str,
    stream_key: &str,
    expected: u64,
) -> StoreResult<()> {
    let current: Option<i64> = sqlx::query_scalar(
        "SELECT version FROM allocation_streams WHERE trial_id = ? AND stream_key = ?",
    )
    .bind(trial_id)
    .bind(stream_key)
    .fetch_optional(&mut *conn)
    .await
    .map_err(database_error)?;
    let result = match current {
        None if expected == 0 => {
            sqlx::query("INSERT INTO allocation_streams (trial_id, stream_key, version) VALUES (?, ?, 1)")
                .bind(trial_id)
                .bind(stream_key)
                .execute(&mut *conn)
                .await
        }
        Some(_) => {
            sqlx::query("UPDATE allocation_streams SET version = version + 1 WHERE trial_id = ? AND stream_key = ? AND version = ?")
                .bind(trial_id)
                .bind(stream_key)
                .bind(expected as i64)
                .execute(&mut *conn)
                .await
        }
        None => return Err(StoreError::Fenced),
    };
    match result.map_err(database_error)?.rows_affected() {
        1 => Ok(()),
        _ => Err(StoreError::Fenced),
    }
}

type WriteTransaction = sqlx::Transaction<'static, sqlx::Sqlite>;

/// Appends the audit record, reads the trial back and commits.
async fn finish_with_trial(
    mut tx: WriteTransaction,
    audit: AuditEntry,
    trial_id: &str,
) -> StoreResult<TrialRecord> {
    append_audit_in(&mut tx, audit).await?;
    let updated = trial_in(&mut tx, trial_id)
        .await?
        .ok_or(StoreError::NotFound)?;
    tx.commit().await.map_err(database_error)?;
    Ok(updated)
}

/// Appends the audit record, reads the allocation back and commits.
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

/// Keeps every frozen definition a trial has had.
async fn record_version(
    conn: &mut SqliteConnection,
    trial_id: &str,
    version: u32,
    definition_yaml: &str,
    definition_sha256: &str,
    reason: &str,
    at: &str,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO trial_versions (trial_id, version, definition_yaml, definition_sha256, reason, recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(trial_id)
    .bind(i64::from(version))
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
impl Store for SqliteStore {
    async fn register_draft(&self, record: &TrialRecord, audit: AuditEntry) -> StoreResult<()> {
        let mut tx = self.write().await?;
        if let Some(existing) = trial_in(&mut tx, &record.trial_id).await?
            && existing.state != TrialState::Draft
        {
            return Err(StoreError::Conflict(format!(
                "trial {} is {}; its design is frozen",
                record.trial_id,
                existing.state.as_str()
            )));
        }
        // A list was checked against the draft it was uploaded to; a new
        // draft needs its own.
        sqlx::query("DELETE FROM allocation_lists WHERE trial_id = ?")
            .bind(&record.trial_id)
            .execute(&mut *tx)
            .await
            .map_err(database_error)?;
        sqlx::query(
            "INSERT INTO trials (trial_id, version, state, definition_yaml, definition_sha256, registered_at) VALUES (?, ?, 'draft', ?, ?, ?)
             ON CONFLICT (trial_id) DO UPDATE SET version = excluded.version, definition_yaml = excluded.definition_yaml,
             definition_sha256 = excluded.definition_sha256, registered_at = excluded.registered_at",
        )
        .bind(&record.trial_id)
        .bind(i64::from(record.version))
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
        trial_in(&mut conn, trial_id).await
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
        let trial = trial_in(&mut tx, trial_id)
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
        sqlx::query("UPDATE trials SET state = 'active', sealed_seed = ?, algorithm_version = ?, activated_at = ? WHERE trial_id = ?")
            .bind(sealed_seed)
            .bind(i64::from(algorithm_version))
            .bind(at)
            .bind(trial_id)
            .execute(&mut *tx)
            .await
            .map_err(database_error)?;
        record_version(
            &mut tx,
            trial_id,
            trial.version,
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
        let trial = trial_in(&mut tx, trial_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        if trial.state != TrialState::Active || trial.version != from_version {
            return Err(StoreError::Conflict(format!(
                "trial {trial_id} is {} at version {}, not active at version {from_version}",
                trial.state.as_str(),
                trial.version
            )));
        }
        let reason = audit
            .details
            .get("reason")
            .and_then(|r| r.as_str())
            .unwrap_or_default()
            .to_owned();
        sqlx::query("UPDATE trials SET version = ?, definition_yaml = ?, definition_sha256 = ? WHERE trial_id = ?")
            .bind(i64::from(to_version))
            .bind(definition_yaml)
            .bind(definition_sha256)
            .bind(trial_id)
            .execute(&mut *tx)
            .await
            .map_err(database_error)?;
        record_version(
            &mut tx,
            trial_id,
            to_version,
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
        trial_in_state(&mut tx, trial_id, TrialState::Active, "closing").await?;
        sqlx::query("UPDATE trials SET state = 'closed', closed_at = ? WHERE trial_id = ?")
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
        trial_in_state(&mut tx, trial_id, TrialState::Draft, "uploading a list").await?;
        sqlx::query("DELETE FROM allocation_lists WHERE trial_id = ?")
            .bind(trial_id)
            .execute(&mut *tx)
            .await
            .map_err(database_error)?;
        let mut positions: BTreeMap<&str, i64> = BTreeMap::new();
        for (stratum, arm) in entries {
            let position = positions.entry(stratum.as_str()).or_insert(0);
            sqlx::query("INSERT INTO allocation_lists (trial_id, stratum, position, arm) VALUES (?, ?, ?, ?)")
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
        sqlx::query_scalar(
            "SELECT arm FROM allocation_lists WHERE trial_id = ? AND stratum = ? AND position = ?",
        )
        .bind(trial_id)
        .bind(stratum)
        .bind(position as i64)
        .fetch_optional(&self.pool)
        .await
        .map_err(database_error)
    }

    async fn list_lengths(&self, trial_id: &str) -> StoreResult<BTreeMap<String, u32>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT stratum, COUNT(*) FROM allocation_lists WHERE trial_id = ? GROUP BY stratum",
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
            "SELECT version FROM allocation_streams WHERE trial_id = ? AND stream_key = ?",
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
        trial_in_state(
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
             request_sha256, covariates_json, decision_json, trial_version, randomised_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             RETURNING sequence",
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
        .bind(i64::from(allocation.trial_version))
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
            " FROM allocations WHERE trial_id = ? AND stream_key = ? ORDER BY position"
        ))
        .bind(trial_id)
        .bind(stream_key)
        .fetch_all(&self.pool)
        .await
        .map_err(database_error)?;
        rows.iter().map(allocation_from_row).collect()
    }

    async fn counts(&self, trial_id: &str) -> StoreResult<Counts> {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT site_id, stratum, in_error FROM allocations WHERE trial_id = ?")
                .bind(trial_id)
                .fetch_all(&self.pool)
                .await
                .map_err(database_error)?;
        Ok(Counts::tally(rows.into_iter().map(
            |(site, stratum, in_error)| (site, stratum, in_error != 0),
        )))
    }

    async fn list_allocations(
        &self,
        query: &AllocationQuery,
    ) -> StoreResult<Vec<AllocationRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            allocation_columns!(),
            " FROM allocations WHERE trial_id = ? AND sequence > ? AND (? IS NULL OR stratum = ?) ORDER BY sequence"
        ))
        .bind(&query.trial_id)
        .bind(query.after_sequence)
        .bind(&query.stratum)
        .bind(&query.stratum)
        .fetch_all(&self.pool)
        .await
        .map_err(database_error)?;
        let mut records = Vec::new();
        for row in &rows {
            if records.len() >= query.limit as usize {
                break;
            }
            let record = allocation_from_row(row)?;
            if query
                .sites
                .as_ref()
                .is_none_or(|sites| sites.contains(&record.site_id))
            {
                records.push(record);
            }
        }
        Ok(records)
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
        sqlx::query("UPDATE allocations SET corrected_stratum = ?, correction_reason = ? WHERE trial_id = ? AND subject_id = ?")
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
        sqlx::query("UPDATE allocations SET in_error = 1, error_reason = ? WHERE trial_id = ? AND subject_id = ?")
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
            "SELECT seq, at, actor, role, action, entity, details, prev_hash, hash FROM audit_log WHERE seq >= ? ORDER BY seq LIMIT ?",
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
    use equipoise_common::audit::verify_chain;

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
    }

    #[tokio::test]
    async fn a_schema_newer_than_the_binary_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.db");
        let store = SqliteStore::open(&path).await.expect("create");
        execute(
            &store,
            "INSERT INTO schema_migrations (version, applied_at) VALUES (999, 'future')",
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
