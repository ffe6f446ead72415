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
//! inserts it, `assign_code` reads it with `TRIAL_FOR_WRITE`), then the
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

            use $crate::codes::{CodePool, PoolCounts};
            use $crate::store::sql::{self, AssignmentRow, CodeRow};
            use $crate::store::{
                Assignment, CodeEntry, CodeSource, Store, StoreError, StoreResult, rules,
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
                for (position, code) in (0_i64..).zip(&pool.codes) {
                    sqlx::query(sql::INSERT_CODE)
                        .bind(trial_id)
                        .bind(&pool.arm_id)
                        .bind(position)
                        .bind(code)
                        .bind(source.as_str())
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(())
            }

            /// Takes the next code of the arm's pool for the allocation.
            /// Call after the trial row was read with `TRIAL_FOR_WRITE`.
            async fn issue_next(
                tx: &mut WriteTransaction,
                trial_id: &str,
                subject_id: &str,
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
                    .bind(arm_id)
                    .bind(&code)
                    .bind(at)
                    .execute(&mut **tx)
                    .await?;
                Ok(Assignment {
                    trial_id: trial_id.to_owned(),
                    subject_id: subject_id.to_owned(),
                    arm_id: arm_id.to_owned(),
                    code,
                    assigned_at: at.to_owned(),
                })
            }

            /// Appends the audit record and commits. The append comes last: on
            /// PostgreSQL it locks the audit head, after the rows the write locked.
            async fn finish(mut tx: WriteTransaction, audit: AuditEntry) -> StoreResult<()> {
                db::append_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            #[async_trait]
            impl Store for $store {
                async fn put_pools(
                    &self,
                    trial_id: &str,
                    pools: &[CodePool],
                    source: CodeSource,
                    audit: AuditEntry,
                ) -> StoreResult<()> {
                    rules::storable(pools)?;
                    let mut tx = begin_write(&self.pool).await?;
                    let inserted = sqlx::query(sql::INSERT_TRIAL)
                        .bind(trial_id)
                        .bind(&audit.at)
                        .execute(&mut *tx)
                        .await?;
                    rules::first_pools(inserted.rows_affected(), trial_id)?;
                    for pool in pools {
                        insert_pool(&mut tx, trial_id, pool, source).await?;
                    }
                    finish(tx, audit).await
                }

                async fn assign_code(
                    &self,
                    trial_id: &str,
                    subject_id: &str,
                    arm_id: &str,
                    audit: AuditEntry,
                ) -> StoreResult<Assignment> {
                    let mut tx = begin_write(&self.pool).await?;
                    let trial: Option<String> = sqlx::query_scalar(TRIAL_FOR_WRITE)
                        .bind(trial_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    trial.ok_or(StoreError::NotFound)?;
                    // A repeat ends here, writing nothing; the transaction rolls back.
                    if let Some(existing) = assignment_in(&mut tx, trial_id, subject_id).await? {
                        return rules::repeat(existing, arm_id);
                    }
                    let assignment =
                        issue_next(&mut tx, trial_id, subject_id, arm_id, &audit.at).await?;
                    finish(tx, rules::assignment_audit(audit, &assignment.code)).await?;
                    Ok(assignment)
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
            }
        }
    };
}
pub(super) use impl_store;
