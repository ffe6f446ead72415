//! The Rust both randomisation stores run, written once as [`impl_store!`]:
//! `impl_store!(SqliteStore, Sqlite)` in `sqlite.rs` expands the helpers
//! and `impl Store for SqliteStore` into a module `sqlite::shared`, with the
//! store's pool in its field `pool` and `sqlx::Sqlite` as the database.
//!
//! A macro rather than code generic over `sqlx::Database`: generic sqlx code
//! needs `Encode`/`Type`/`Executor` bounds, with higher-ranked lifetimes,
//! for every bind. Expanded per backend, every type is concrete.
//!
//! The expansion takes what the backends share from `store` and, from the
//! backend's module, these hooks: all the backends do differently.
//! - `begin_write(&pool) -> StoreResult<transaction>`: how a write begins.
//!   SQLite takes `BEGIN IMMEDIATE`, the database's write lock, at once;
//!   PostgreSQL begins a plain transaction and locks rows as it reads them.
//! - `TRIAL_FOR_WRITE`: the SQL that reads the trial a write is about, `$1`
//!   its id. SQLite reads it plainly (`BEGIN IMMEDIATE` holds the lock
//!   already); PostgreSQL locks the row (`FOR UPDATE`). Every write to a
//!   trial reads it before anything else and appends its audit record last
//!   (`finish*`), so on PostgreSQL the trial row is the first lock and the
//!   audit head the last: writers cannot deadlock.
//! - `LIST_ALLOCATIONS` and `sites_argument(Option<&[String]>)`: the
//!   listing query and the value bound as its `$4`, the site filter.
//!   SQLite has no array parameters and reads a JSON array with
//!   `json_each`; PostgreSQL binds a `TEXT[]` and uses `= ANY`.
//! - `db`: the backend's module of `equipoise_common::store`, whose
//!   `append_audit` holds the audit chain's head its own way (the write
//!   lock on SQLite, the `audit_head` row on PostgreSQL), and
//!   `audit_records`.

/// Writes the shared helpers and `impl Store for $store` into a module
/// `shared` of the calling backend module.
macro_rules! impl_store {
    ($store:ident, $database:ident) => {
        mod shared {
            use std::collections::BTreeMap;

            use async_trait::async_trait;
            use equipoise_common::audit::{AuditEntry, AuditRecord};

            use equipoise_common::store::group_commit::{
                BatchFailure, BatchOutcome, BatchWriter, GroupCommit,
            };

            use $crate::store::batch::{BatchedWrite, CodeWrite, MAX_BATCH, Written, write_order};
            use $crate::store::sql::{self, AllocationRow, TrialRow, wide};
            use $crate::store::{
                AllocationQuery, AllocationRecord, CodeRecorded, CommitRequest, Counts, ListEntry,
                NewAllocation, Store, StoreError, StoreResult, TrialRecord, TrialState,
                randomisation_number, rules,
            };

            // The backend's hooks (module doc of `store/shared.rs`).
            use super::{
                LIST_ALLOCATIONS, TRIAL_FOR_WRITE, begin_write, db, sites_argument, $store,
            };

            type WriteTransaction = sqlx::Transaction<'static, sqlx::$database>;
            type Connection = <sqlx::$database as sqlx::Database>::Connection;

            async fn trial_in(
                conn: &mut Connection,
                query: &'static str,
                trial_id: &str,
            ) -> StoreResult<Option<TrialRecord>> {
                let row: Option<TrialRow> = sqlx::query_as(query)
                    .bind(trial_id)
                    .fetch_optional(&mut *conn)
                    .await?;
                row.map(TrialRecord::try_from).transpose()
            }

            /// The trial a write is about, read so that it cannot change
            /// before the commit: the write's first lock.
            async fn writing_trial(
                tx: &mut WriteTransaction,
                trial_id: &str,
            ) -> StoreResult<Option<TrialRecord>> {
                trial_in(tx, TRIAL_FOR_WRITE, trial_id).await
            }

            async fn allocation_in(
                conn: &mut Connection,
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

            /// Moves the stream from `expected` to `expected + 1`; `Ok(Err(Fenced))`
            /// if it moved on (nothing written).
            async fn advance_stream(
                tx: &mut WriteTransaction,
                trial_id: &str,
                stream_key: &str,
                expected: u64,
            ) -> StoreResult<StoreResult<()>> {
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
                let moved = query.execute(&mut **tx).await?.rows_affected();
                Ok(rules::stream_advanced(moved))
            }

            /// The cap counts an allocation meets, as the trigger kept them
            /// (earlier writes of the same batch included).
            async fn cap_counts_in(
                tx: &mut WriteTransaction,
                allocation: &NewAllocation,
            ) -> StoreResult<(i64, i64, i64)> {
                Ok(sqlx::query_as(sql::CAP_COUNTS)
                    .bind(&allocation.trial_id)
                    .bind(&allocation.site_id)
                    .bind(&allocation.stratum)
                    .fetch_one(&mut **tx)
                    .await?)
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

            /// A write's own refusal (`Ok(Err(_))`, nothing written) or a
            /// failure that spoils the transaction (`Err(_)`).
            type Staged<T> = StoreResult<StoreResult<T>>;

            /// What a staged write leaves for the end of the batch.
            type StagedWrite = (Written, Option<AuditEntry>);

            /// Writes an allocation inside a batch: every check before any
            /// write, so a refusal leaves nothing behind.
            async fn stage_allocation(
                tx: &mut WriteTransaction,
                request: &CommitRequest,
                trial: Option<&TrialRecord>,
            ) -> Staged<StagedWrite> {
                let allocation = &request.allocation;
                let (trial_id, subject_id) = (&allocation.trial_id, &allocation.subject_id);
                let active =
                    rules::in_state(trial.cloned(), trial_id, TrialState::Active, "allocation")
                        .and_then(|trial| rules::at_version(&trial, allocation.trial_version));
                if let Err(refusal) = active {
                    return Ok(Err(refusal));
                }
                if allocation_in(tx, trial_id, subject_id).await?.is_some() {
                    return Ok(Err(StoreError::SubjectExists));
                }
                let counts = cap_counts_in(tx, allocation).await?;
                let at_site = match rules::within_caps(counts, &request.caps) {
                    Ok(at_site) => at_site,
                    Err(refusal) => return Ok(Err(refusal)),
                };
                let expected = request.expected_stream_version;
                if let Err(fenced) =
                    advance_stream(tx, trial_id, &allocation.stream_key, expected).await?
                {
                    return Ok(Err(fenced));
                }
                let number = randomisation_number(&allocation.site_id, at_site + 1);
                let sequence = insert_allocation(tx, request, &number).await?;
                let audit = rules::commit_audit(request, &number);
                let record = allocation.committed(expected, number, sequence);
                Ok(Ok((Written::Allocation(Box::new(record)), Some(audit))))
            }

            /// Records a treatment code inside a batch; an allocation
            /// earlier in the same batch counts as existing.
            async fn stage_code(
                tx: &mut WriteTransaction,
                write: &CodeWrite,
                trial: Option<&TrialRecord>,
            ) -> Staged<StagedWrite> {
                let (trial_id, subject_id) = (&write.trial_id, &write.subject_id);
                if trial.is_none() || allocation_in(tx, trial_id, subject_id).await?.is_none() {
                    return Ok(Err(StoreError::NotFound));
                }
                let existing: Option<String> = sqlx::query_scalar(sql::CODE)
                    .bind(trial_id)
                    .bind(subject_id)
                    .fetch_optional(&mut **tx)
                    .await?;
                let holder: Option<String> = sqlx::query_scalar(sql::CODE_HOLDER)
                    .bind(trial_id)
                    .bind(&write.code)
                    .fetch_optional(&mut **tx)
                    .await?;
                match rules::code_recordable(existing, holder, subject_id, &write.code) {
                    Err(refusal) => return Ok(Err(refusal)),
                    Ok(Some(done)) => return Ok(Ok((Written::Code(done), None))),
                    Ok(None) => {}
                }
                sqlx::query(sql::INSERT_CODE)
                    .bind(trial_id)
                    .bind(subject_id)
                    .bind(&write.code)
                    .bind(&write.audit.at)
                    .execute(&mut **tx)
                    .await?;
                Ok(Ok((
                    Written::Code(CodeRecorded::Recorded),
                    Some(write.audit.clone()),
                )))
            }

            /// The writer task's side of the group commit: one transaction
            /// per batch, the trial rows first (in [`write_order`]), the
            /// audit records last, in the order their writes were made.
            pub(super) struct BatchStore {
                pub(super) pool: sqlx::Pool<sqlx::$database>,
                /// Fault tests: how long a batch holds its transaction open,
                /// written and uncommitted, so a replica can be killed inside.
                #[cfg(feature = "fault-injection")]
                pub(super) hold_before_commit_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
            }

            impl BatchStore {
                /// Writes each write in order, leaving its audit record for
                /// the end; the trial of each is read (and on PostgreSQL
                /// locked) once, when its first write is reached.
                async fn stage_all(
                    tx: &mut WriteTransaction,
                    writes: &[BatchedWrite],
                ) -> Result<
                    (Vec<Option<StoreResult<Written>>>, Vec<AuditEntry>),
                    BatchFailure<StoreError>,
                > {
                    let mut results: Vec<Option<StoreResult<Written>>> =
                        writes.iter().map(|_| None).collect();
                    let mut audits = Vec::new();
                    let mut trials: BTreeMap<String, Option<TrialRecord>> = BTreeMap::new();
                    for index in write_order(writes) {
                        let write = &writes[index];
                        let failed = |error| BatchFailure::Write(index, error);
                        if !trials.contains_key(write.trial_id()) {
                            let trial =
                                writing_trial(tx, write.trial_id()).await.map_err(failed)?;
                            trials.insert(write.trial_id().to_owned(), trial);
                        }
                        let trial = trials.get(write.trial_id()).and_then(Option::as_ref);
                        let staged = match write {
                            BatchedWrite::Allocation(request) => {
                                stage_allocation(tx, request, trial).await
                            }
                            BatchedWrite::Code(code) => stage_code(tx, code, trial).await,
                        };
                        results[index] = Some(match staged.map_err(failed)? {
                            Ok((written, audit)) => {
                                audits.extend(audit);
                                Ok(written)
                            }
                            Err(refusal) => Err(refusal),
                        });
                    }
                    Ok((results, audits))
                }
            }

            impl BatchWriter for BatchStore {
                type Write = BatchedWrite;
                type Output = Written;
                type Error = StoreError;

                async fn write_batch(
                    &self,
                    writes: &[BatchedWrite],
                ) -> BatchOutcome<Written, StoreError> {
                    let mut tx = begin_write(&self.pool)
                        .await
                        .map_err(BatchFailure::Transaction)?;
                    let (results, audits) = Self::stage_all(&mut tx, writes).await?;
                    // One read of the chain's end for the whole batch.
                    db::append_audits(&mut tx, audits)
                        .await
                        .map_err(|error| BatchFailure::Transaction(error.into()))?;
                    #[cfg(feature = "fault-injection")]
                    self.hold_before_commit(writes.len()).await;
                    tx.commit()
                        .await
                        .map_err(|error| BatchFailure::Transaction(error.into()))?;
                    Ok(results
                        .into_iter()
                        .map(|result| {
                            result.unwrap_or(Err(StoreError::Database(
                                "a batched write was not reached".into(),
                            )))
                        })
                        .collect())
                }

                fn stopped() -> StoreError {
                    StoreError::Unavailable("the store's writer has stopped".into())
                }
            }

            #[cfg(feature = "fault-injection")]
            impl BatchStore {
                async fn hold_before_commit(&self, writes: usize) {
                    let millis = self
                        .hold_before_commit_ms
                        .load(std::sync::atomic::Ordering::Relaxed);
                    if millis > 0 {
                        tracing::warn!(
                            millis,
                            writes,
                            "fault injection: holding a batch before its commit"
                        );
                        tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
                    }
                }
            }

            impl $store {
                /// Fault tests: every later batch holds its transaction open
                /// this long before committing.
                #[cfg(feature = "fault-injection")]
                pub fn hold_batches_before_commit(&self, millis: u64) {
                    self.batch_hold_ms
                        .store(millis, std::sync::atomic::Ordering::Relaxed);
                }

                /// How the store's writes were grouped into transactions.
                pub fn group_commit_stats(
                    &self,
                ) -> &equipoise_common::store::group_commit::GroupCommitStats {
                    self.commits.stats()
                }
            }

            impl $store {
                /// The store over `pool`, with its writer task started.
                pub(super) fn with_pool(pool: sqlx::Pool<sqlx::$database>) -> Self {
                    #[cfg(feature = "fault-injection")]
                    let batch_hold_ms = std::sync::Arc::default();
                    let writer = BatchStore {
                        pool: pool.clone(),
                        #[cfg(feature = "fault-injection")]
                        hold_before_commit_ms: std::sync::Arc::clone(&batch_hold_ms),
                    };
                    Self {
                        pool,
                        commits: GroupCommit::start(writer, MAX_BATCH, "randomisation"),
                        #[cfg(feature = "fault-injection")]
                        batch_hold_ms,
                    }
                }
            }

            /// Appends the audit record and commits. The append comes last: on
            /// PostgreSQL it locks the audit head, after the rows the write locked.
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
                let updated = trial_in(&mut tx, sql::TRIAL, trial_id)
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
            impl Store for $store {
                async fn register_draft(
                    &self,
                    record: &TrialRecord,
                    audit: AuditEntry,
                ) -> StoreResult<()> {
                    let mut tx = begin_write(&self.pool).await?;
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
                    trial_in(&mut conn, sql::TRIAL, trial_id).await
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
                    let mut tx = begin_write(&self.pool).await?;
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
                    let mut tx = begin_write(&self.pool).await?;
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

                async fn close(
                    &self,
                    trial_id: &str,
                    at: &str,
                    audit: AuditEntry,
                ) -> StoreResult<TrialRecord> {
                    let mut tx = begin_write(&self.pool).await?;
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
                    let mut tx = begin_write(&self.pool).await?;
                    let trial = writing_trial(&mut tx, trial_id).await?;
                    rules::in_state(trial, trial_id, TrialState::Draft, "uploading a list")?;
                    sqlx::query(sql::DELETE_LIST)
                        .bind(trial_id)
                        .execute(&mut *tx)
                        .await?;
                    for slot in $crate::store::numbered_list(entries) {
                        sqlx::query(sql::INSERT_LIST_ENTRY)
                            .bind(trial_id)
                            .bind(&slot.stratum)
                            .bind(wide(slot.position)?)
                            .bind(&slot.arm)
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

                async fn allocation_list(&self, trial_id: &str) -> StoreResult<Vec<ListEntry>> {
                    let rows: Vec<(String, i64, String)> = sqlx::query_as(sql::WHOLE_LIST)
                        .bind(trial_id)
                        .fetch_all(&self.pool)
                        .await?;
                    rows.into_iter()
                        .map(|(stratum, position, arm)| {
                            Ok(ListEntry {
                                stratum,
                                position: sql::narrow(position, "allocation_lists.position")?,
                                arm,
                            })
                        })
                        .collect()
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

                async fn stream_version(
                    &self,
                    trial_id: &str,
                    stream_key: &str,
                ) -> StoreResult<u64> {
                    let version: Option<i64> = sqlx::query_scalar(sql::STREAM_VERSION)
                        .bind(trial_id)
                        .bind(stream_key)
                        .fetch_optional(&self.pool)
                        .await?;
                    sql::narrow(version.unwrap_or(0), "allocation_streams.version")
                }

                async fn commit_allocation(
                    &self,
                    request: &CommitRequest,
                ) -> StoreResult<AllocationRecord> {
                    let write = BatchedWrite::Allocation(Box::new(request.clone()));
                    self.commits.submit(write).await?.allocation()
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

                async fn stream_allocations_from(
                    &self,
                    trial_id: &str,
                    stream_key: &str,
                    from_position: u64,
                ) -> StoreResult<Vec<AllocationRecord>> {
                    let rows = sqlx::query_as(sql::STREAM_ALLOCATIONS_FROM)
                        .bind(trial_id)
                        .bind(stream_key)
                        .bind(wide(from_position)?)
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

                async fn cap_counts(
                    &self,
                    trial_id: &str,
                    site_id: &str,
                    stratum: &str,
                ) -> StoreResult<(u32, u32, u32)> {
                    let (total, at_site, in_stratum): (i64, i64, i64) =
                        sqlx::query_as(sql::CAP_COUNTS)
                            .bind(trial_id)
                            .bind(site_id)
                            .bind(stratum)
                            .fetch_one(&self.pool)
                            .await?;
                    Ok((
                        sql::narrow(total, "allocation_counts.count")?,
                        sql::narrow(at_site, "allocation_counts.count")?,
                        sql::narrow(in_stratum, "allocation_counts.count")?,
                    ))
                }

                async fn list_allocations(
                    &self,
                    query: &AllocationQuery,
                ) -> StoreResult<Vec<AllocationRecord>> {
                    let sites = sites_argument(query.sites.as_deref());
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
                    let mut tx = begin_write(&self.pool).await?;
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
                    let mut tx = begin_write(&self.pool).await?;
                    let existing = allocation_in(&mut tx, trial_id, subject_id).await?;
                    rules::not_in_error(existing, subject_id)?;
                    // The read above takes no row lock on PostgreSQL: a racing
                    // mark may commit after it. The UPDATE waits for that one
                    // and then matches nothing, which makes this the loser.
                    let marked = sqlx::query(sql::MARK_IN_ERROR)
                        .bind(reason)
                        .bind(trial_id)
                        .bind(subject_id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    rules::marked_in_error(marked, subject_id)?;
                    finish_with_allocation(tx, audit, trial_id, subject_id).await
                }

                async fn record_code(
                    &self,
                    trial_id: &str,
                    subject_id: &str,
                    code: &str,
                    audit: AuditEntry,
                ) -> StoreResult<CodeRecorded> {
                    let write = BatchedWrite::Code(Box::new(CodeWrite {
                        trial_id: trial_id.to_owned(),
                        subject_id: subject_id.to_owned(),
                        code: code.to_owned(),
                        audit,
                    }));
                    self.commits.submit(write).await?.code()
                }

                async fn allocations_without_code(
                    &self,
                    after_sequence: i64,
                    limit: u32,
                ) -> StoreResult<Vec<AllocationRecord>> {
                    let rows = sqlx::query_as(sql::WITHOUT_CODE)
                        .bind(after_sequence)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?;
                    sql::allocation_records(rows)
                }

                async fn append_audit(&self, audit: AuditEntry) -> StoreResult<()> {
                    let tx = begin_write(&self.pool).await?;
                    finish(tx, audit).await
                }

                async fn audit_records(
                    &self,
                    from_seq: i64,
                    limit: u32,
                ) -> StoreResult<Vec<AuditRecord>> {
                    Ok(db::audit_records(&self.pool, from_seq, limit).await?)
                }

                async fn stored_audit_head(&self) -> StoreResult<Option<(i64, String)>> {
                    Ok(db::stored_head(&self.pool).await?)
                }
            }
        }
    };
}
pub(super) use impl_store;
