//! The multi-replica store: PostgreSQL with `synchronous_commit = on`, so a
//! commit is durable before the reply.
//!
//! Concurrency across replicas:
//! - an allocation, and every change to a trial, locks the trial row first
//!   (`FOR UPDATE`), which serialises allocations within a trial and makes
//!   cap counts exact;
//! - every audit append locks the single `audit_head` row, which keeps the
//!   hash chain linear;
//! - locks are always taken in that order, so writers cannot deadlock.

use std::collections::BTreeMap;

use async_trait::async_trait;
use equipoise_common::audit::{AuditEntry, AuditRecord};
use equipoise_common::store::postgres as db;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnection;

use super::sql::{self, AllocationRow, TrialRow, allocation_columns, trial_columns, wide};
use super::*;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

type WriteTransaction = sqlx::Transaction<'static, sqlx::Postgres>;

const LOCK_TRIAL: &str = concat!(
    "SELECT ",
    trial_columns!(),
    " FROM trials WHERE trial_id = $1 FOR UPDATE"
);

const LIST_ALLOCATIONS: &str = concat!(
    "SELECT ",
    allocation_columns!(),
    " FROM allocations WHERE trial_id = $1 AND sequence > $2 AND (CAST($3 AS TEXT) IS NULL OR stratum = $3)
      AND (CAST($4 AS TEXT[]) IS NULL OR site_id = ANY($4)) ORDER BY sequence LIMIT $5"
);

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects, checks the server answers, and migrates. A wrong or
    /// unreachable URL fails here, naming the database URL.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let pool = db::connect(url, max_connections, &MIGRATOR).await?;
        Ok(Self { pool })
    }

    async fn write(&self) -> StoreResult<WriteTransaction> {
        Ok(self.pool.begin().await?)
    }
}

async fn trial_in(conn: &mut PgConnection, trial_id: &str) -> StoreResult<Option<TrialRecord>> {
    let row: Option<TrialRow> = sqlx::query_as(sql::TRIAL)
        .bind(trial_id)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(TrialRecord::try_from).transpose()
}

/// The trial a write is about, locked until the transaction ends.
async fn writing_trial(
    tx: &mut WriteTransaction,
    trial_id: &str,
) -> StoreResult<Option<TrialRecord>> {
    let row: Option<TrialRow> = sqlx::query_as(LOCK_TRIAL)
        .bind(trial_id)
        .fetch_optional(&mut **tx)
        .await?;
    row.map(TrialRecord::try_from).transpose()
}

async fn allocation_in(
    conn: &mut PgConnection,
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

/// Appends the audit record (locking the head last) and commits.
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
impl Store for PostgresStore {
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
        let rows = sqlx::query_as(LIST_ALLOCATIONS)
            .bind(&query.trial_id)
            .bind(query.after_sequence)
            .bind(&query.stratum)
            .bind(&query.sites)
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

    async fn execute(pool: &PgPool, sql: &'static str) -> Result<(), String> {
        sqlx::query(sql)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn triggers_guard_the_trail_and_newer_schemas_are_refused() {
        let url = PostgresServer::shared().create_database();
        let store = PostgresStore::connect(&url, 2).await.expect("connect");
        for n in 0..3 {
            store
                .append_audit(entry(&format!("a{n}")))
                .await
                .expect("append");
        }
        let update = execute(
            &store.pool,
            "UPDATE audit_log SET actor = 'mallory' WHERE seq = 2",
        )
        .await;
        assert!(update.is_err_and(|e| e.contains("append-only")));
        let delete = execute(&store.pool, "DELETE FROM audit_log").await;
        assert!(delete.is_err_and(|e| e.contains("append-only")));
        let truncate = execute(&store.pool, "TRUNCATE audit_log").await;
        assert!(truncate.is_err_and(|e| e.contains("append-only")));
        let records = store.audit_records(1, 100).await.expect("records");
        assert_eq!(verify_chain(&records), Ok(3));

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

    /// A database as the binary before sqlx's migrator left it: its own
    /// version table at `version`, the version 1 schema, and an audit record.
    async fn legacy_database(url: &str, version: i64) -> AuditRecord {
        let pool = PgPool::connect(url).await.expect("connect");
        let mut tx = pool.begin().await.expect("begin");
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .expect("version table");
        sqlx::raw_sql(include_str!("../../migrations/postgres/0001_initial.sql"))
            .execute(&mut *tx)
            .await
            .expect("version 1");
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 'then')")
            .bind(version)
            .execute(&mut *tx)
            .await
            .expect("record the version");
        sqlx::query(
            "INSERT INTO trials (trial_id, version, state, definition_yaml, definition_sha256, registered_at)
             VALUES ('T', 3, 'draft', 'id: T', 'abc', 'then')",
        )
        .execute(&mut *tx)
        .await
        .expect("a trial");
        let first = db::append_audit(&mut tx, entry("before"))
            .await
            .expect("append");
        tx.commit().await.expect("commit");
        pool.close().await;
        first
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_database_from_the_previous_binary_is_adopted_and_migrated() {
        let url = PostgresServer::shared().create_database();
        let first = legacy_database(&url, 1).await;

        let store = PostgresStore::connect(&url, 2).await.expect("adopt");
        let trial = store.trial("T").await.expect("read").expect("the trial");
        assert_eq!(trial.version, 3, "read as BIGINT after 0002");
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
        let legacy_left = execute(&store.pool, "SELECT * FROM schema_migrations").await;
        assert!(legacy_left.is_err_and(|e| e.contains("does not exist")));
        drop(store);
        PostgresStore::connect(&url, 2)
            .await
            .expect("reconnect to an adopted database");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_previous_binarys_database_newer_than_this_one_is_refused() {
        let url = PostgresServer::shared().create_database();
        legacy_database(&url, 999).await;
        let refused = PostgresStore::connect(&url, 2).await;
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
