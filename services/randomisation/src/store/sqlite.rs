//! The embedded store: one SQLite file, WAL journal, `synchronous=FULL` so a
//! commit is on disk before the reply. Writers take `BEGIN IMMEDIATE`, which
//! serialises them and makes in-transaction cap counts exact; the audit
//! chain's last row is read under the same lock.

use std::collections::BTreeMap;
use std::path::Path;

use async_trait::async_trait;
use equipoise_common::audit::{AuditEntry, AuditRecord};
use equipoise_common::store::sqlite::{self as db, WriteTransaction};
use sqlx::SqlitePool;
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnection;

use super::sql::{self, AllocationRow, TrialRow, allocation_columns, wide};
use super::*;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// Sites are a JSON array: SQLite has no array parameters.
const LIST_ALLOCATIONS: &str = concat!(
    "SELECT ",
    allocation_columns!(),
    " FROM allocations WHERE trial_id = $1 AND sequence > $2 AND (CAST($3 AS TEXT) IS NULL OR stratum = $3)
      AND ($4 IS NULL OR site_id IN (SELECT value FROM json_each($4))) ORDER BY sequence LIMIT $5"
);

/// Sites as the JSON array `json_each` reads.
fn json_array(sites: &[String]) -> String {
    serde_json::Value::from(sites).to_string()
}

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and migrates it.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let pool = db::open_file(path, &MIGRATOR).await?;
        Ok(Self { pool })
    }

    /// A private in-memory database, for tests.
    pub async fn in_memory() -> StoreResult<Self> {
        let pool = db::open_in_memory(&MIGRATOR).await?;
        Ok(Self { pool })
    }

    async fn write(&self) -> StoreResult<WriteTransaction> {
        Ok(db::begin_write(&self.pool).await?)
    }
}

async fn trial_in(conn: &mut SqliteConnection, trial_id: &str) -> StoreResult<Option<TrialRecord>> {
    let row: Option<TrialRow> = sqlx::query_as(sql::TRIAL)
        .bind(trial_id)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(TrialRecord::try_from).transpose()
}

/// The trial a write is about. `BEGIN IMMEDIATE` already holds the lock.
async fn writing_trial(
    tx: &mut WriteTransaction,
    trial_id: &str,
) -> StoreResult<Option<TrialRecord>> {
    trial_in(tx, trial_id).await
}

async fn allocation_in(
    conn: &mut SqliteConnection,
    trial_id: &str,
    subject_id: &str,
) -> StoreResult<Option<AllocationRecord>> {
    let row: Option<AllocationRow> = sqlx::query_as(sql::ALLOCATION)
        .bind(trial_id)
        .bind(subject_id)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(AllocationRecord::try_from).transpose()
}

async fn record_version(
    tx: &mut WriteTransaction,
    trial: (&str, u32),
    definition: (&str, &str),
    reason: &str,
    at: &str,
) -> StoreResult<()> {
    sqlx::query(sql::RECORD_VERSION)
        .bind(trial.0)
        .bind(i64::from(trial.1))
        .bind(definition.0)
        .bind(definition.1)
        .bind(reason)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Moves the stream from `expected` to `expected + 1`, or reports it fenced.
async fn advance_stream(
    tx: &mut WriteTransaction,
    trial_id: &str,
    stream_key: &str,
    expected: u64,
) -> StoreResult<()> {
    let query = if expected == 0 {
        sqlx::query(sql::START_STREAM)
            .bind(trial_id)
            .bind(stream_key)
    } else {
        sqlx::query(sql::ADVANCE_STREAM)
            .bind(trial_id)
            .bind(stream_key)
            .bind(wide(expected)?)
    };
    rules::stream_advanced(query.execute(&mut **tx).await?.rows_affected())
}

/// Refuses the commit if any cap is already reached; returns the site's count.
async fn check_caps(
    tx: &mut WriteTransaction,
    allocation: &NewAllocation,
    caps: &CapLimits,
) -> StoreResult<u32> {
    let counts = sqlx::query_as(sql::CAP_COUNTS)
        .bind(&allocation.trial_id)
        .bind(&allocation.site_id)
        .bind(&allocation.stratum)
        .fetch_one(&mut **tx)
        .await?;
    rules::within_caps(counts, caps)
}

async fn insert_allocation(
    tx: &mut WriteTransaction,
    request: &CommitRequest,
    number: &str,
) -> StoreResult<i64> {
    let allocation = &request.allocation;
    let sequence = sqlx::query_scalar(sql::INSERT_ALLOCATION)
        .bind(&allocation.trial_id)
        .bind(&allocation.subject_id)
        .bind(&allocation.site_id)
        .bind(&allocation.stratum)
        .bind(&allocation.stream_key)
        .bind(wide(request.expected_stream_version)?)
        .bind(&allocation.arm)
        .bind(number)
        .bind(&allocation.request_sha256)
        .bind(&allocation.covariates_json)
        .bind(&allocation.decision_json)
        .bind(i64::from(allocation.trial_version))
        .bind(&allocation.randomised_at)
        .fetch_one(&mut **tx)
        .await?;
    Ok(sequence)
}

/// Appends the audit record and commits.
async fn finish(mut tx: WriteTransaction, audit: AuditEntry) -> StoreResult<()> {
    db::append_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(())
}

/// Appends the audit record, reads the trial back and commits.
async fn finish_with_trial(
    mut tx: WriteTransaction,
    audit: AuditEntry,
    trial_id: &str,
) -> StoreResult<TrialRecord> {
    db::append_audit(&mut tx, audit).await?;
    let updated = trial_in(&mut tx, trial_id)
        .await?
        .ok_or(StoreError::NotFound)?;
    tx.commit().await?;
    Ok(updated)
}

/// Appends the audit record, reads the allocation back and commits.
async fn finish_with_allocation(
    mut tx: WriteTransaction,
    audit: AuditEntry,
    trial_id: &str,
    subject_id: &str,
) -> StoreResult<AllocationRecord> {
    db::append_audit(&mut tx, audit).await?;
    let updated = allocation_in(&mut tx, trial_id, subject_id)
        .await?
        .ok_or(StoreError::NotFound)?;
    tx.commit().await?;
    Ok(updated)
}

#[async_trait]
impl Store for SqliteStore {
    async fn register_draft(&self, record: &TrialRecord, audit: AuditEntry) -> StoreResult<()> {
        let mut tx = self.write().await?;
        let existing = writing_trial(&mut tx, &record.trial_id).await?;
        rules::replaceable(existing.as_ref(), &record.trial_id)?;
        // A list was checked against the draft it was uploaded to; a new
        // draft needs its own.
        sqlx::query(sql::DELETE_LIST)
            .bind(&record.trial_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(sql::UPSERT_DRAFT)
            .bind(&record.trial_id)
            .bind(i64::from(record.version))
            .bind(&record.definition_yaml)
            .bind(&record.definition_sha256)
            .bind(&record.registered_at)
            .execute(&mut *tx)
            .await?;
        finish(tx, audit).await
    }

    async fn trial(&self, trial_id: &str) -> StoreResult<Option<TrialRecord>> {
        let mut conn = self.pool.acquire().await?;
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
        let trial = writing_trial(&mut tx, trial_id).await?;
        let trial = rules::activatable(trial, trial_id, expected_sha256)?;
        sqlx::query(sql::ACTIVATE)
            .bind(sealed_seed)
            .bind(i64::from(algorithm_version))
            .bind(at)
            .bind(trial_id)
            .execute(&mut *tx)
            .await?;
        let definition = (
            trial.definition_yaml.as_str(),
            trial.definition_sha256.as_str(),
        );
        record_version(
            &mut tx,
            (trial_id, trial.version),
            definition,
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
        rules::raises_version(from_version, to_version)?;
        let mut tx = self.write().await?;
        let trial = writing_trial(&mut tx, trial_id).await?;
        rules::amendable(trial, trial_id, from_version)?;
        sqlx::query(sql::AMEND)
            .bind(i64::from(to_version))
            .bind(definition_yaml)
            .bind(definition_sha256)
            .bind(trial_id)
            .execute(&mut *tx)
            .await?;
        let reason = rules::amendment_reason(&audit);
        let definition = (definition_yaml, definition_sha256);
        record_version(
            &mut tx,
            (trial_id, to_version),
            definition,
            &reason,
            &audit.at,
        )
        .await?;
        finish_with_trial(tx, audit, trial_id).await
    }

    async fn close(&self, trial_id: &str, at: &str, audit: AuditEntry) -> StoreResult<TrialRecord> {
        let mut tx = self.write().await?;
        let trial = writing_trial(&mut tx, trial_id).await?;
        rules::in_state(trial, trial_id, TrialState::Active, "closing")?;
        sqlx::query(sql::CLOSE)
            .bind(at)
            .bind(trial_id)
            .execute(&mut *tx)
            .await?;
        finish_with_trial(tx, audit, trial_id).await
    }

    async fn put_allocation_list(
        &self,
        trial_id: &str,
        entries: &[(String, String)],
        audit: AuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        let trial = writing_trial(&mut tx, trial_id).await?;
        rules::in_state(trial, trial_id, TrialState::Draft, "uploading a list")?;
        sqlx::query(sql::DELETE_LIST)
            .bind(trial_id)
            .execute(&mut *tx)
            .await?;
        for (stratum, position, arm) in rules::list_rows(entries) {
            sqlx::query(sql::INSERT_LIST_ENTRY)
                .bind(trial_id)
                .bind(stratum)
                .bind(position)
                .bind(arm)
                .execute(&mut *tx)
                .await?;
        }
        finish(tx, audit).await
    }

    async fn list_slot(
        &self,
        trial_id: &str,
        stratum: &str,
        position: u64,
    ) -> StoreResult<Option<String>> {
        let arm = sqlx::query_scalar(sql::LIST_SLOT)
            .bind(trial_id)
            .bind(stratum)
            .bind(wide(position)?)
            .fetch_optional(&self.pool)
            .await?;
        Ok(arm)
    }

    async fn list_lengths(&self, trial_id: &str) -> StoreResult<BTreeMap<String, u32>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(sql::LIST_LENGTHS)
            .bind(trial_id)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|(stratum, n)| Ok((stratum, sql::narrow(n, "list length")?)))
            .collect()
    }

    async fn allocation(
        &self,
        trial_id: &str,
        subject_id: &str,
    ) -> StoreResult<Option<AllocationRecord>> {
        let mut conn = self.pool.acquire().await?;
        allocation_in(&mut conn, trial_id, subject_id).await
    }

    async fn stream_version(&self, trial_id: &str, stream_key: &str) -> StoreResult<u64> {
        let version: Option<i64> = sqlx::query_scalar(sql::STREAM_VERSION)
            .bind(trial_id)
            .bind(stream_key)
            .fetch_optional(&self.pool)
            .await?;
        sql::narrow(version.unwrap_or(0), "allocation_streams.version")
    }

    async fn commit_allocation(&self, request: &CommitRequest) -> StoreResult<AllocationRecord> {
        let allocation = &request.allocation;
        let (trial_id, subject_id) = (&allocation.trial_id, &allocation.subject_id);
        let mut tx = self.write().await?;
        let trial = writing_trial(&mut tx, trial_id).await?;
        rules::in_state(trial, trial_id, TrialState::Active, "allocation")?;
        if allocation_in(&mut tx, trial_id, subject_id)
            .await?
            .is_some()
        {
            return Err(StoreError::SubjectExists);
        }
        let at_site = check_caps(&mut tx, allocation, &request.caps).await?;
        let (stream, expected) = (&allocation.stream_key, request.expected_stream_version);
        advance_stream(&mut tx, trial_id, stream, expected).await?;
        let number = randomisation_number(&allocation.site_id, at_site + 1);
        let sequence = insert_allocation(&mut tx, request, &number).await?;
        finish(tx, rules::commit_audit(request, &number)).await?;
        Ok(allocation.committed(expected, number, sequence))
    }

    async fn stream_allocations(
        &self,
        trial_id: &str,
        stream_key: &str,
    ) -> StoreResult<Vec<AllocationRecord>> {
        let rows = sqlx::query_as(sql::STREAM_ALLOCATIONS)
            .bind(trial_id)
            .bind(stream_key)
            .fetch_all(&self.pool)
            .await?;
        sql::allocation_records(rows)
    }

    async fn counts(&self, trial_id: &str) -> StoreResult<Counts> {
        let rows: Vec<(String, String, bool)> = sqlx::query_as(sql::COUNT_ROWS)
            .bind(trial_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(Counts::tally(rows))
    }

    async fn list_allocations(
        &self,
        query: &AllocationQuery,
    ) -> StoreResult<Vec<AllocationRecord>> {
        let sites = query.sites.as_deref().map(json_array);
        let rows = sqlx::query_as(LIST_ALLOCATIONS)
            .bind(&query.trial_id)
            .bind(query.after_sequence)
            .bind(&query.stratum)
            .bind(sites)
            .bind(i64::from(query.limit))
            .fetch_all(&self.pool)
            .await?;
        sql::allocation_records(rows)
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
        sqlx::query(sql::CORRECT_STRATUM)
            .bind(corrected_stratum)
            .bind(reason)
            .bind(trial_id)
            .bind(subject_id)
            .execute(&mut *tx)
            .await?;
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
        let existing = allocation_in(&mut tx, trial_id, subject_id).await?;
        rules::not_in_error(existing, subject_id)?;
        sqlx::query(sql::MARK_IN_ERROR)
            .bind(reason)
            .bind(trial_id)
            .bind(subject_id)
            .execute(&mut *tx)
            .await?;
        finish_with_allocation(tx, audit, trial_id, subject_id).await
    }

    async fn append_audit(&self, audit: AuditEntry) -> StoreResult<()> {
        let tx = self.write().await?;
        finish(tx, audit).await
    }

    async fn audit_records(&self, from_seq: i64, limit: u32) -> StoreResult<Vec<AuditRecord>> {
        Ok(db::audit_records(&self.pool, from_seq, limit).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use equipoise_common::audit::verify_chain;
    use sqlx::sqlite::SqliteConnectOptions;

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

    /// A database as the binary before sqlx's migrator left it: its own
    /// version table, at version 1.
    async fn legacy_database(path: &Path, version: i64) -> SqlitePool {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.expect("create");
        let mut tx = pool.begin().await.expect("begin");
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .expect("version table");
        sqlx::raw_sql(include_str!("../../migrations/sqlite/0001_initial.sql"))
            .execute(&mut *tx)
            .await
            .expect("version 1");
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 'then')")
            .bind(version)
            .execute(&mut *tx)
            .await
            .expect("record the version");
        tx.commit().await.expect("commit");
        pool
    }

    #[tokio::test]
    async fn a_database_from_the_previous_binary_is_adopted_and_keeps_its_trail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.db");
        let legacy = legacy_database(&path, 1).await;
        let mut conn = legacy.acquire().await.expect("connection");
        let first = db::append_audit(&mut conn, entry("before"))
            .await
            .expect("append");
        drop(conn);
        legacy.close().await;

        let store = SqliteStore::open(&path).await.expect("adopt");
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
        let legacy_left = execute(&store, "SELECT * FROM schema_migrations").await;
        assert!(legacy_left.is_err_and(|e| e.contains("no such table")));
        drop(store);
        SqliteStore::open(&path)
            .await
            .expect("reopen an adopted database");
    }

    /// What the previous binary's migrator did on start-up.
    async fn previous_binary_migrates(pool: &SqlitePool) -> Result<(), sqlx::Error> {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
            .execute(&mut *tx)
            .await?;
        let current: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                .fetch_one(&mut *tx)
                .await?;
        if current < 1 {
            sqlx::raw_sql(include_str!("../../migrations/sqlite/0001_initial.sql"))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    #[tokio::test]
    async fn the_previous_binary_cannot_start_on_an_adopted_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.db");
        legacy_database(&path, 1).await.close().await;
        let store = SqliteStore::open(&path).await.expect("adopt");
        let refused = previous_binary_migrates(&store.pool).await;
        assert!(
            refused.is_err_and(|e| e.to_string().contains("already exists")),
            "it tries version 1 again, and fails without changing anything"
        );
        assert_eq!(store.audit_records(1, 10).await, Ok(vec![]));
        drop(store);
        SqliteStore::open(&path)
            .await
            .expect("this binary still opens it");
    }

    #[tokio::test]
    async fn a_previous_binarys_database_newer_than_this_one_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.db");
        legacy_database(&path, 999).await.close().await;
        let refused = SqliteStore::open(&path).await;
        assert!(matches!(
            refused,
            Err(StoreError::SchemaTooNew { found: 999, .. })
        ));
    }

    #[tokio::test]
    async fn a_schema_newer_than_the_binary_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.db");
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

    #[tokio::test]
    async fn a_migration_edited_after_it_was_applied_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.db");
        let store = SqliteStore::open(&path).await.expect("create");
        execute(
            &store,
            "UPDATE _sqlx_migrations SET checksum = x'00' WHERE version = 1",
        )
        .await
        .expect("pretend 0001 was edited");
        drop(store);
        let reopened = SqliteStore::open(&path).await;
        assert!(
            matches!(&reopened, Err(StoreError::Database(m)) if m.contains("checksum")),
            "{:?}",
            reopened.err()
        );
    }
}
