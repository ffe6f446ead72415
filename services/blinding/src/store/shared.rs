//! The Rust both blinding stores run, written once as [`impl_store!`]:
//! `impl_store!(SqliteStore, Sqlite)` in `sqlite.rs` expands the helpers and
//! `impl Store for SqliteStore` into a module `sqlite::shared`, with the
//! store's pool in its field `pool` and `sqlx::Sqlite` as the database. A
//! macro rather than code generic over `sqlx::Database`, for the reason the
//! randomisation store gives: every bind stays concrete.
//!
//! The backend's hooks, all that the backends do differently:
//! - `begin_write(&pool) -> StoreResult<transaction>`: SQLite takes
//!   `BEGIN IMMEDIATE`, the database's write lock, at once; PostgreSQL
//!   begins a plain transaction and locks rows as it reads them.
//! - `TRIAL_FOR_WRITE`: reads the `code_trials` row of the trial a write is
//!   about, `$1` its id; PostgreSQL locks it (`FOR UPDATE`).
//! - `db`: the backend's module of `equipoise_common::store`, whose
//!   `append_audit` holds the chain's head its own way, and `audit_records`.
//!
//! Lock order, the same in every write: the trial row first (`put_pools`
//! inserts it, `assign_code` and `add_codes` read it with `TRIAL_FOR_WRITE`), then the
//! pool and code rows, and the audit head last (`finish`). On PostgreSQL
//! the trial row serialises a trial's assignments, so the count read from a
//! pool is still the count when it is moved on, and writers cannot deadlock.

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

            use $crate::codes::{CodePool, PoolCounts};
            use $crate::store::batch::{AssignmentWrite, MAX_BATCH, write_order};
            use $crate::store::sql::{
                self, AssignmentRow, CodeRow, DefinitionRow, NotificationRow, PeriodRow, RevealRow,
            };
            use $crate::store::{
                Assignment, CodeEntry, CodeSource, DefinitionSnapshot, NewPeriodRecord, NewReveal,
                Notification, PeriodRecord, RevealCounts, RevealRecord, Store, StoreError,
                StoreResult, rules,
            };

            // The backend's hooks (module doc of `store/shared.rs`).
            use super::{TRIAL_FOR_WRITE, begin_write, db, $store};

            type WriteTransaction = sqlx::Transaction<'static, sqlx::$database>;
            type Connection = <sqlx::$database as sqlx::Database>::Connection;

            async fn assignment_in(
                conn: &mut Connection,
                trial_id: &str,
                subject_id: &str,
            ) -> StoreResult<Option<Assignment>> {
                let row: Option<AssignmentRow> = sqlx::query_as(sql::ASSIGNMENT)
                    .bind(trial_id)
                    .bind(subject_id)
                    .fetch_optional(&mut *conn)
                    .await?;
                Ok(row.map(Assignment::from))
            }

            async fn insert_pool(
                tx: &mut WriteTransaction,
                trial_id: &str,
                pool: &CodePool,
                source: CodeSource,
            ) -> StoreResult<()> {
                sqlx::query(sql::INSERT_POOL)
                    .bind(trial_id)
                    .bind(&pool.arm_id)
                    .execute(&mut **tx)
                    .await?;
                insert_codes(tx, trial_id, pool, 0, source).await
            }

            /// Inserts the pool's codes in batches, numbered on from `first`.
            async fn insert_codes(
                tx: &mut WriteTransaction,
                trial_id: &str,
                pool: &CodePool,
                first: i64,
                source: CodeSource,
            ) -> StoreResult<()> {
                let numbered: Vec<(i64, &String)> = (first..).zip(&pool.codes).collect();
                for batch in numbered.chunks(sql::CODES_PER_INSERT) {
                    let mut insert = sqlx::QueryBuilder::<sqlx::$database>::new(sql::INSERT_CODES);
                    insert.push_values(batch, |mut row, (position, code)| {
                        row.push_bind(trial_id)
                            .push_bind(&pool.arm_id)
                            .push_bind(*position)
                            .push_bind(*code)
                            .push_bind(source.as_str());
                    });
                    insert.build().execute(&mut **tx).await?;
                }
                Ok(())
            }

            /// Which of the given codes the trial already has, in any arm.
            async fn codes_taken(
                tx: &mut WriteTransaction,
                trial_id: &str,
                pools: &[CodePool],
            ) -> StoreResult<Vec<String>> {
                let codes: Vec<&String> = pools.iter().flat_map(|pool| &pool.codes).collect();
                let mut taken = Vec::new();
                for batch in codes.chunks(sql::CODES_PER_INSERT) {
                    let mut select = sqlx::QueryBuilder::<sqlx::$database>::new(sql::CODES_STORED);
                    select.push_bind(trial_id).push(" AND code IN (");
                    let mut list = select.separated(", ");
                    for code in batch {
                        list.push_bind(*code);
                    }
                    list.push_unseparated(")");
                    let found: Vec<String> =
                        select.build_query_scalar().fetch_all(&mut **tx).await?;
                    taken.extend(found);
                }
                Ok(taken)
            }

            /// Takes the next code of the arm's pool for the allocation.
            /// Call after the trial row was read with `TRIAL_FOR_WRITE`.
            async fn issue_next(
                tx: &mut WriteTransaction,
                trial_id: &str,
                subject_id: &str,
                site_id: &str,
                arm_id: &str,
                at: &str,
            ) -> StoreResult<Assignment> {
                let issued: Option<i64> = sqlx::query_scalar(sql::POOL_ISSUED)
                    .bind(trial_id)
                    .bind(arm_id)
                    .fetch_optional(&mut **tx)
                    .await?;
                let position = rules::pool_issued(issued, arm_id)?;
                let code: Option<String> = sqlx::query_scalar(sql::CODE_AT)
                    .bind(trial_id)
                    .bind(arm_id)
                    .bind(position)
                    .fetch_optional(&mut **tx)
                    .await?;
                let code = rules::next_code(code, trial_id)?;
                let moved = sqlx::query(sql::ISSUE)
                    .bind(trial_id)
                    .bind(arm_id)
                    .bind(position)
                    .execute(&mut **tx)
                    .await?;
                rules::issued_once(moved.rows_affected())?;
                sqlx::query(sql::INSERT_ASSIGNMENT)
                    .bind(trial_id)
                    .bind(subject_id)
                    .bind(site_id)
                    .bind(arm_id)
                    .bind(&code)
                    .bind(at)
                    .execute(&mut **tx)
                    .await?;
                Ok(Assignment {
                    trial_id: trial_id.to_owned(),
                    subject_id: subject_id.to_owned(),
                    site_id: site_id.to_owned(),
                    arm_id: arm_id.to_owned(),
                    code,
                    assigned_at: at.to_owned(),
                })
            }

            /// Assigns the next code inside a batch, leaving the audit
            /// record for the end; a repeat writes nothing and has none.
            /// Any error spoils the batch, which is written again without
            /// this assignment: refusals are rare here.
            async fn stage_assignment(
                tx: &mut WriteTransaction,
                write: &AssignmentWrite,
                trial_known: bool,
            ) -> StoreResult<(Assignment, Option<AuditEntry>)> {
                let (trial_id, subject_id) = (&write.trial_id, &write.subject_id);
                if !trial_known {
                    return Err(StoreError::NotFound);
                }
                if let Some(existing) = assignment_in(tx, trial_id, subject_id).await? {
                    return Ok((
                        rules::repeat(existing, &write.site_id, &write.arm_id)?,
                        None,
                    ));
                }
                // Read under the trial row's lock, so no assignment
                // empties a pool between this check and the issue.
                let empty: i64 = sqlx::query_scalar(sql::EMPTY_POOLS)
                    .bind(trial_id)
                    .fetch_one(&mut **tx)
                    .await?;
                rules::no_pool_empty(empty, trial_id)?;
                let at = &write.audit.at;
                let assignment =
                    issue_next(tx, trial_id, subject_id, &write.site_id, &write.arm_id, at).await?;
                let audit = rules::assignment_audit(write.audit.clone(), &assignment.code);
                Ok((assignment, Some(audit)))
            }

            /// The writer task's side of the group commit: one transaction
            /// per batch, each trial row locked once in [`write_order`],
            /// the audit records appended last in the order of their writes.
            pub(super) struct BatchStore {
                pub(super) pool: sqlx::Pool<sqlx::$database>,
            }

            impl BatchWriter for BatchStore {
                type Write = AssignmentWrite;
                type Output = Assignment;
                type Error = StoreError;

                async fn write_batch(
                    &self,
                    writes: &[AssignmentWrite],
                ) -> BatchOutcome<Assignment, StoreError> {
                    let mut tx = begin_write(&self.pool)
                        .await
                        .map_err(BatchFailure::Transaction)?;
                    let mut results: Vec<Option<Assignment>> =
                        writes.iter().map(|_| None).collect();
                    let mut audits = Vec::new();
                    let mut trials: BTreeMap<&str, bool> = BTreeMap::new();
                    for index in write_order(writes) {
                        let write = &writes[index];
                        let failed = |error| BatchFailure::Write(index, error);
                        if !trials.contains_key(write.trial_id.as_str()) {
                            let trial: Option<String> = sqlx::query_scalar(TRIAL_FOR_WRITE)
                                .bind(&write.trial_id)
                                .fetch_optional(&mut *tx)
                                .await
                                .map_err(|error| failed(error.into()))?;
                            trials.insert(&write.trial_id, trial.is_some());
                        }
                        let known = trials
                            .get(write.trial_id.as_str())
                            .copied()
                            .unwrap_or(false);
                        let (assignment, audit) = stage_assignment(&mut tx, write, known)
                            .await
                            .map_err(failed)?;
                        audits.extend(audit);
                        results[index] = Some(assignment);
                    }
                    // One read of the chain's end for the whole batch.
                    db::append_audits(&mut tx, audits)
                        .await
                        .map_err(|error| BatchFailure::Transaction(error.into()))?;
                    tx.commit()
                        .await
                        .map_err(|error| BatchFailure::Transaction(error.into()))?;
                    Ok(results
                        .into_iter()
                        .map(|result| {
                            result.ok_or(StoreError::Database(
                                "a batched assignment was not reached".into(),
                            ))
                        })
                        .collect())
                }

                fn stopped() -> StoreError {
                    StoreError::Unavailable("the store's writer has stopped".into())
                }
            }

            impl $store {
                /// How the store's assignments were grouped into transactions.
                pub fn group_commit_stats(
                    &self,
                ) -> &equipoise_common::store::group_commit::GroupCommitStats {
                    self.commits.stats()
                }
            }

            impl $store {
                /// The store over `pool`, with its writer task started.
                pub(super) fn with_pool(pool: sqlx::Pool<sqlx::$database>) -> Self {
                    let writer = BatchStore { pool: pool.clone() };
                    let commits = GroupCommit::start(writer, MAX_BATCH, "blinding");
                    Self { pool, commits }
                }
            }

            /// Appends the audit record and commits. The append comes last: on
            /// PostgreSQL it locks the audit head, after the rows the write locked.
            async fn finish(mut tx: WriteTransaction, audit: AuditEntry) -> StoreResult<()> {
                db::append_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            /// Appends the audit record now and returns its seq, for a side
            /// record keyed by it. Every row such a write adds comes after
            /// this, so on PostgreSQL the audit head is held while they are
            /// inserted: side records and notification cursors follow the
            /// chain's order, which is commit order.
            async fn append_first(
                tx: &mut WriteTransaction,
                audit: AuditEntry,
            ) -> StoreResult<i64> {
                Ok(db::append_audit(tx, audit).await?.seq)
            }

            async fn period_in(
                conn: &mut Connection,
                trial_id: &str,
                subject_id: &str,
                period_id: &str,
            ) -> StoreResult<Option<PeriodRecord>> {
                let row: Option<PeriodRow> = sqlx::query_as(sql::PERIOD_RECORD)
                    .bind(trial_id)
                    .bind(subject_id)
                    .bind(period_id)
                    .fetch_optional(&mut *conn)
                    .await?;
                row.map(PeriodRecord::try_from).transpose()
            }

            #[async_trait]
            impl Store for $store {
                async fn put_pools(
                    &self,
                    trial_id: &str,
                    pools: &[CodePool],
                    source: CodeSource,
                    definition: &DefinitionSnapshot,
                    audit: AuditEntry,
                ) -> StoreResult<()> {
                    rules::storable(pools)?;
                    let mut tx = begin_write(&self.pool).await?;
                    let inserted = sqlx::query(sql::INSERT_TRIAL)
                        .bind(trial_id)
                        .bind(&audit.at)
                        .bind(i64::from(definition.version))
                        .bind(&definition.definition_yaml)
                        .bind(&definition.definition_sha256)
                        .execute(&mut *tx)
                        .await?;
                    rules::first_pools(inserted.rows_affected(), trial_id)?;
                    for pool in pools {
                        insert_pool(&mut tx, trial_id, pool, source).await?;
                    }
                    finish(tx, audit).await
                }

                async fn add_codes(
                    &self,
                    trial_id: &str,
                    pools: &[CodePool],
                    audit: AuditEntry,
                ) -> StoreResult<()> {
                    rules::addable(pools)?;
                    let mut tx = begin_write(&self.pool).await?;
                    // Under the trial row's lock on PostgreSQL, so no other
                    // write adds codes or moves a pool meanwhile.
                    let trial: Option<String> = sqlx::query_scalar(TRIAL_FOR_WRITE)
                        .bind(trial_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    trial.ok_or(StoreError::NotFound)?;
                    for pool in pools {
                        let issued: Option<i64> = sqlx::query_scalar(sql::POOL_ISSUED)
                            .bind(trial_id)
                            .bind(&pool.arm_id)
                            .fetch_optional(&mut *tx)
                            .await?;
                        rules::topped_up_arm(issued, &pool.arm_id)?;
                    }
                    // Every clash is found before anything is written, so the
                    // caller can name them all.
                    rules::none_taken(codes_taken(&mut tx, trial_id, pools).await?)?;
                    for pool in pools.iter().filter(|pool| !pool.codes.is_empty()) {
                        let next: i64 = sqlx::query_scalar(sql::NEXT_POSITION)
                            .bind(trial_id)
                            .bind(&pool.arm_id)
                            .fetch_one(&mut *tx)
                            .await?;
                        insert_codes(&mut tx, trial_id, pool, next, CodeSource::Uploaded).await?;
                    }
                    finish(tx, audit).await
                }

                async fn refresh_definition(
                    &self,
                    trial_id: &str,
                    definition: &DefinitionSnapshot,
                    audit: AuditEntry,
                ) -> StoreResult<bool> {
                    let mut tx = begin_write(&self.pool).await?;
                    let trial: Option<String> = sqlx::query_scalar(TRIAL_FOR_WRITE)
                        .bind(trial_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    trial.ok_or(StoreError::NotFound)?;
                    let moved = sqlx::query(sql::REFRESH_DEFINITION)
                        .bind(trial_id)
                        .bind(i64::from(definition.version))
                        .bind(&definition.definition_yaml)
                        .bind(&definition.definition_sha256)
                        .execute(&mut *tx)
                        .await?;
                    if moved.rows_affected() == 0 {
                        return Ok(false);
                    }
                    finish(tx, audit).await?;
                    Ok(true)
                }

                async fn definition(
                    &self,
                    trial_id: &str,
                ) -> StoreResult<Option<DefinitionSnapshot>> {
                    let row: Option<DefinitionRow> = sqlx::query_as(sql::DEFINITION)
                        .bind(trial_id)
                        .fetch_optional(&self.pool)
                        .await?;
                    row.map(DefinitionSnapshot::try_from).transpose()
                }

                async fn assign_code(
                    &self,
                    trial_id: &str,
                    subject_id: &str,
                    site_id: &str,
                    arm_id: &str,
                    audit: AuditEntry,
                ) -> StoreResult<Assignment> {
                    let write = AssignmentWrite {
                        trial_id: trial_id.to_owned(),
                        subject_id: subject_id.to_owned(),
                        site_id: site_id.to_owned(),
                        arm_id: arm_id.to_owned(),
                        audit,
                    };
                    self.commits.submit(write).await
                }

                async fn pool_counts(
                    &self,
                    trial_id: &str,
                ) -> StoreResult<BTreeMap<String, PoolCounts>> {
                    let rows: Vec<(String, i64, i64)> = sqlx::query_as(sql::POOL_COUNTS)
                        .bind(trial_id)
                        .fetch_all(&self.pool)
                        .await?;
                    rules::pool_counts(rows)
                }

                async fn code(&self, trial_id: &str, code: &str) -> StoreResult<Option<CodeEntry>> {
                    let row: Option<CodeRow> = sqlx::query_as(sql::CODE)
                        .bind(trial_id)
                        .bind(code)
                        .fetch_optional(&self.pool)
                        .await?;
                    row.map(CodeEntry::try_from).transpose()
                }

                async fn assignment(
                    &self,
                    trial_id: &str,
                    subject_id: &str,
                ) -> StoreResult<Option<Assignment>> {
                    let mut conn = self.pool.acquire().await?;
                    assignment_in(&mut conn, trial_id, subject_id).await
                }

                async fn record_reveal(
                    &self,
                    reveal: NewReveal,
                    audit: AuditEntry,
                ) -> StoreResult<RevealRecord> {
                    let salt = rules::new_salt()?;
                    let digest =
                        rules::reveal_sha256(&reveal, &audit.at, &audit.actor, &audit.role, &salt);
                    let (at, actor, role) =
                        (audit.at.clone(), audit.actor.clone(), audit.role.clone());
                    let mut tx = begin_write(&self.pool).await?;
                    let seq =
                        append_first(&mut tx, rules::with_detail(audit, "reveal_sha256", &digest))
                            .await?;
                    sqlx::query(sql::INSERT_REVEAL)
                        .bind(seq)
                        .bind(reveal.kind.as_str())
                        .bind(&reveal.trial_id)
                        .bind(&reveal.subject_id)
                        .bind(&reveal.site_id)
                        .bind(&reveal.arm_id)
                        .bind(&actor)
                        .bind(&role)
                        .bind(&reveal.reason_category)
                        .bind(&reveal.reason)
                        .bind(&reveal.case_id)
                        .bind(&reveal.period_id)
                        .bind(reveal.withdraws)
                        .bind(&at)
                        .bind(&salt)
                        .execute(&mut *tx)
                        .await?;
                    if reveal.kind.notifies() {
                        sqlx::query(sql::INSERT_NOTIFICATION)
                            .bind(seq)
                            .bind(&reveal.trial_id)
                            .bind(&reveal.site_id)
                            .bind(&reveal.subject_id)
                            .bind(reveal.kind.as_str())
                            .bind(&at)
                            .bind(&actor)
                            .bind(&role)
                            .bind(&reveal.reason_category)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(RevealRecord {
                        audit_seq: sql::from_column(seq, "audit seq")?,
                        kind: reveal.kind,
                        trial_id: reveal.trial_id,
                        subject_id: reveal.subject_id,
                        site_id: reveal.site_id,
                        arm_id: reveal.arm_id,
                        actor,
                        role,
                        reason_category: reveal.reason_category,
                        reason: reveal.reason,
                        case_id: reveal.case_id,
                        period_id: reveal.period_id,
                        withdraws: reveal.withdraws,
                        at,
                        salt,
                    })
                }

                async fn reveals(
                    &self,
                    trial_id: &str,
                    subject_id: &str,
                ) -> StoreResult<Vec<RevealRecord>> {
                    let rows: Vec<RevealRow> = sqlx::query_as(sql::REVEALS)
                        .bind(trial_id)
                        .bind(subject_id)
                        .fetch_all(&self.pool)
                        .await?;
                    rows.into_iter().map(RevealRecord::try_from).collect()
                }

                async fn notifications(
                    &self,
                    trial_id: &str,
                    after_cursor: u64,
                    limit: u32,
                ) -> StoreResult<Vec<Notification>> {
                    let after = i64::try_from(after_cursor).unwrap_or(i64::MAX);
                    let rows: Vec<NotificationRow> = sqlx::query_as(sql::NOTIFICATIONS)
                        .bind(trial_id)
                        .bind(after)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?;
                    rows.into_iter().map(Notification::try_from).collect()
                }

                async fn record_period(
                    &self,
                    record: NewPeriodRecord,
                    audit: AuditEntry,
                ) -> StoreResult<PeriodRecord> {
                    let mut tx = begin_write(&self.pool).await?;
                    let existing = period_in(
                        &mut tx,
                        &record.trial_id,
                        &record.subject_id,
                        &record.period_id,
                    )
                    .await?;
                    // A repeat ends here, writing nothing.
                    if let Some(existing) = existing {
                        return rules::period_repeat(existing, &record);
                    }
                    let salt = rules::new_salt()?;
                    let digest = rules::period_sha256(&record, &audit.at, &audit.actor, &salt);
                    let (at, actor) = (audit.at.clone(), audit.actor.clone());
                    let seq =
                        append_first(&mut tx, rules::with_detail(audit, "record_sha256", &digest))
                            .await?;
                    let deviation = record.deviation();
                    let inserted = sqlx::query(sql::INSERT_PERIOD_RECORD)
                        .bind(&record.trial_id)
                        .bind(&record.subject_id)
                        .bind(&record.period_id)
                        .bind(&record.assigned_arm_id)
                        .bind(&record.given_arm_id)
                        .bind(deviation)
                        .bind(&record.note)
                        .bind(&actor)
                        .bind(&at)
                        .bind(seq)
                        .bind(&salt)
                        .execute(&mut *tx)
                        .await;
                    if let Err(error) = inserted {
                        // A concurrent first record won (PostgreSQL): compare with it.
                        drop(tx);
                        let mut conn = self.pool.acquire().await?;
                        if let Some(existing) = period_in(
                            &mut conn,
                            &record.trial_id,
                            &record.subject_id,
                            &record.period_id,
                        )
                        .await?
                        {
                            return rules::period_repeat(existing, &record);
                        }
                        return Err(error.into());
                    }
                    tx.commit().await?;
                    Ok(PeriodRecord {
                        trial_id: record.trial_id,
                        subject_id: record.subject_id,
                        period_id: record.period_id,
                        assigned_arm_id: record.assigned_arm_id,
                        given_arm_id: record.given_arm_id,
                        deviation,
                        note: record.note,
                        actor,
                        recorded_at: at,
                        audit_seq: sql::from_column(seq, "audit seq")?,
                        salt,
                    })
                }

                async fn period_records(
                    &self,
                    trial_id: &str,
                    subject_id: &str,
                ) -> StoreResult<Vec<PeriodRecord>> {
                    let rows: Vec<PeriodRow> = sqlx::query_as(sql::PERIOD_RECORDS)
                        .bind(trial_id)
                        .bind(subject_id)
                        .fetch_all(&self.pool)
                        .await?;
                    rows.into_iter().map(PeriodRecord::try_from).collect()
                }

                async fn reveal_counts(&self, trial_id: &str) -> StoreResult<RevealCounts> {
                    let rows: Vec<(String, i64)> = sqlx::query_as(sql::REVEAL_COUNTS)
                        .bind(trial_id)
                        .fetch_all(&self.pool)
                        .await?;
                    let deviations: i64 = sqlx::query_scalar(sql::DEVIATIONS)
                        .bind(trial_id)
                        .bind(true)
                        .fetch_one(&self.pool)
                        .await?;
                    rules::reveal_counts(rows, deviations)
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
