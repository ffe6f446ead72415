//! The Rust both safety stores run, written once as [`impl_store!`], as in
//! the blinding service: every bind stays concrete.
//!
//! The backend's hooks:
//! - `begin_write(&pool)`: SQLite takes `BEGIN IMMEDIATE` at once;
//!   PostgreSQL begins a plain transaction and locks rows as it reads them.
//! - `CASE_FOR_WRITE`: reads `(classification, trial_id)` of the case a
//!   write is about, `$1` its id; PostgreSQL locks it (`FOR UPDATE`).
//! - `OBLIGATION_FOR_WRITE`: the obligation a submission closes, likewise.
//! - `db`: the backend's module of `equipoise_common::store`.
//!
//! Lock order, the same in every write: the case row first, then the
//! obligation rows, and the audit head last.

macro_rules! impl_store {
    ($store:ident, $database:ident) => {
        mod shared {
            use async_trait::async_trait;
            use equipoise_common::audit::{AuditEntry, AuditRecord};

            use $crate::store::sql::{
                self, AssessmentDbRow, CaseDbRow, ObligationDbRow, SealedDbRow, VersionDbRow,
            };
            use $crate::store::{
                AsOf, AssessmentRow, CaseRecord, CaseRow, NewObligation, ObligationRow,
                SealedRecord, Settled, Settlement, Store, StoreError, StoreResult,
                StoredClassification, Submission, VersionRow, rules,
            };

            use super::{CASE_FOR_WRITE, OBLIGATION_FOR_WRITE, begin_write, db, $store};

            type WriteTransaction = sqlx::Transaction<'static, sqlx::$database>;
            type Connection = <sqlx::$database as sqlx::Database>::Connection;

            /// The case's classification and trial, locked on PostgreSQL.
            async fn case_for_write(
                tx: &mut WriteTransaction,
                case_id: &str,
            ) -> StoreResult<(StoredClassification, String)> {
                let row: Option<(String, String)> = sqlx::query_as(CASE_FOR_WRITE)
                    .bind(case_id)
                    .fetch_optional(&mut **tx)
                    .await?;
                let (classification, trial_id) = row.ok_or(StoreError::NotFound)?;
                Ok((sql::classification(&classification)?, trial_id))
            }

            async fn latest_version(tx: &mut WriteTransaction, case_id: &str) -> StoreResult<u32> {
                let latest: i64 = sqlx::query_scalar(sql::LATEST_VERSION)
                    .bind(case_id)
                    .fetch_one(&mut **tx)
                    .await?;
                sql::from_column(latest, "case_versions.version")
            }

            async fn insert_version(
                tx: &mut WriteTransaction,
                version: &VersionRow,
            ) -> StoreResult<()> {
                sqlx::query(sql::INSERT_VERSION)
                    .bind(&version.case_id)
                    .bind(i64::from(version.version))
                    .bind(&version.report_json)
                    .bind(&version.received_at)
                    .bind(version.late)
                    .bind(version.expected)
                    .bind(&version.rsi_version)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }

            /// Inserts each obligation whose kind the case lacks; returns
            /// those inserted.
            async fn insert_obligations(
                tx: &mut WriteTransaction,
                case_id: &str,
                trial_id: &str,
                obligations: Vec<NewObligation>,
            ) -> StoreResult<Vec<NewObligation>> {
                let mut created = Vec::new();
                for obligation in obligations {
                    let inserted = sqlx::query(sql::INSERT_OBLIGATION)
                        .bind(&obligation.obligation_id)
                        .bind(case_id)
                        .bind(trial_id)
                        .bind(&obligation.kind)
                        .bind(&obligation.due_date)
                        .bind(&obligation.due_at)
                        .execute(&mut **tx)
                        .await?;
                    if inserted.rows_affected() > 0 {
                        created.push(obligation);
                    }
                }
                Ok(created)
            }

            /// Appends the audit record with the sealed content's sha256,
            /// stores the sealed side record, and commits.
            async fn finish_sealed(
                mut tx: WriteTransaction,
                audit: AuditEntry,
                content: serde_json::Value,
            ) -> StoreResult<()> {
                let salt = rules::new_salt()?;
                let content = content.to_string();
                let digest = rules::sealed_sha256(&content, &salt);
                let record =
                    db::append_audit(&mut tx, rules::with_detail(audit, "sealed_sha256", &digest))
                        .await?;
                sqlx::query(sql::INSERT_SEALED)
                    .bind(record.seq)
                    .bind(&content)
                    .bind(&salt)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn finish(mut tx: WriteTransaction, audit: AuditEntry) -> StoreResult<()> {
                db::append_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn record_of(conn: &mut Connection, case: CaseRow) -> StoreResult<CaseRecord> {
                let versions: Vec<VersionDbRow> = sqlx::query_as(sql::VERSIONS)
                    .bind(&case.case_id)
                    .fetch_all(&mut *conn)
                    .await?;
                let assessments: Vec<AssessmentDbRow> = sqlx::query_as(sql::ASSESSMENTS)
                    .bind(&case.case_id)
                    .fetch_all(&mut *conn)
                    .await?;
                let obligations: Vec<ObligationDbRow> =
                    sqlx::query_as(sql::CASE_OBLIGATIONS)
                        .bind(&case.case_id)
                        .fetch_all(&mut *conn)
                        .await?;
                Ok(CaseRecord {
                    case,
                    versions: versions
                        .into_iter()
                        .map(VersionRow::try_from)
                        .collect::<StoreResult<_>>()?,
                    assessments: assessments
                        .into_iter()
                        .map(AssessmentRow::try_from)
                        .collect::<StoreResult<_>>()?,
                    obligations: obligations.into_iter().map(ObligationRow::from).collect(),
                })
            }

            #[async_trait]
            impl Store for $store {
                async fn create_case(
                    &self,
                    case: CaseRow,
                    first: VersionRow,
                    audit: AuditEntry,
                ) -> StoreResult<()> {
                    let mut tx = begin_write(&self.pool).await?;
                    let inserted = sqlx::query(sql::INSERT_CASE)
                        .bind(&case.case_id)
                        .bind(&case.trial_id)
                        .bind(&case.site_id)
                        .bind(&case.subject_id)
                        .bind(&case.first_received_at)
                        .bind(&case.day_zero)
                        .bind(case.classification.as_str())
                        .bind(&case.not_reportable_reason)
                        .bind(&case.sponsor_time_zone)
                        .execute(&mut *tx)
                        .await?;
                    if inserted.rows_affected() == 0 {
                        return Err(StoreError::Conflict(format!(
                            "case {} already exists",
                            case.case_id
                        )));
                    }
                    insert_version(&mut tx, &first).await?;
                    finish(tx, audit).await
                }

                async fn add_version(
                    &self,
                    version: VersionRow,
                    obligations: Vec<NewObligation>,
                    audit: AuditEntry,
                ) -> StoreResult<()> {
                    let mut tx = begin_write(&self.pool).await?;
                    let (classification, trial_id) =
                        case_for_write(&mut tx, &version.case_id).await?;
                    let latest = latest_version(&mut tx, &version.case_id).await?;
                    if version.version != latest + 1 {
                        return Err(StoreError::Conflict(format!(
                            "case {} is at version {latest}; version {} cannot follow it",
                            version.case_id, version.version
                        )));
                    }
                    insert_version(&mut tx, &version).await?;
                    let created = if classification == StoredClassification::Susar {
                        insert_obligations(&mut tx, &version.case_id, &trial_id, obligations)
                            .await?
                    } else {
                        Vec::new()
                    };
                    let content = serde_json::json!({
                        "case_id": version.case_id,
                        "version": version.version,
                        "obligations_created": rules::obligations_json(&created),
                    });
                    finish_sealed(tx, audit, content).await
                }

                async fn add_assessment(
                    &self,
                    assessment: AssessmentRow,
                    obligations: Vec<NewObligation>,
                    audit: AuditEntry,
                ) -> StoreResult<()> {
                    let mut tx = begin_write(&self.pool).await?;
                    let (classification, trial_id) =
                        case_for_write(&mut tx, &assessment.case_id).await?;
                    let latest = latest_version(&mut tx, &assessment.case_id).await?;
                    if assessment.version != latest {
                        return Err(StoreError::Conflict(format!(
                            "version {} of case {} is not its latest ({latest})",
                            assessment.version, assessment.case_id
                        )));
                    }
                    let assessed: i64 = sqlx::query_scalar(sql::ASSESSED)
                        .bind(&assessment.case_id)
                        .bind(i64::from(assessment.version))
                        .fetch_one(&mut *tx)
                        .await?;
                    if assessed > 0 {
                        return Err(StoreError::Conflict(format!(
                            "version {} of case {} already has the sponsor's assessment",
                            assessment.version, assessment.case_id
                        )));
                    }
                    sqlx::query(sql::INSERT_ASSESSMENT)
                        .bind(&assessment.case_id)
                        .bind(i64::from(assessment.version))
                        .bind(&assessment.causality)
                        .bind(&assessment.comment)
                        .bind(&assessment.by)
                        .bind(&assessment.at)
                        .execute(&mut *tx)
                        .await?;
                    let created = if classification == StoredClassification::Susar {
                        insert_obligations(&mut tx, &assessment.case_id, &trial_id, obligations)
                            .await?
                    } else {
                        Vec::new()
                    };
                    let content = serde_json::json!({
                        "case_id": assessment.case_id,
                        "version": assessment.version,
                        "obligations_created": rules::obligations_json(&created),
                    });
                    finish_sealed(tx, audit, content).await
                }

                async fn set_pending(
                    &self,
                    case_id: &str,
                    pending: bool,
                    audit: AuditEntry,
                ) -> StoreResult<bool> {
                    let mut tx = begin_write(&self.pool).await?;
                    let (classification, _) = case_for_write(&mut tx, case_id).await?;
                    let target = if pending {
                        StoredClassification::Pending
                    } else {
                        StoredClassification::NotPotential
                    };
                    if classification.settled() || classification == target {
                        return Ok(false);
                    }
                    sqlx::query(sql::SET_CLASSIFICATION)
                        .bind(case_id)
                        .bind(target.as_str())
                        .execute(&mut *tx)
                        .await?;
                    finish(tx, audit).await?;
                    Ok(true)
                }

                async fn settle(
                    &self,
                    case_id: &str,
                    as_of: AsOf,
                    settlement: Settlement,
                    audit: AuditEntry,
                ) -> StoreResult<Settled> {
                    let mut tx = begin_write(&self.pool).await?;
                    let (classification, trial_id) = case_for_write(&mut tx, case_id).await?;
                    if classification.settled() {
                        return Ok(Settled::AlreadySettled);
                    }
                    let latest = latest_version(&mut tx, case_id).await?;
                    let assessments: i64 = sqlx::query_scalar(sql::ASSESSMENT_COUNT)
                        .bind(case_id)
                        .fetch_one(&mut *tx)
                        .await?;
                    let assessments: u32 =
                        sql::from_column(assessments, "sponsor_assessments count")?;
                    if latest != as_of.version || assessments != as_of.assessments {
                        return Ok(Settled::Stale);
                    }
                    let content = match settlement {
                        Settlement::Susar {
                            day_zero,
                            obligations,
                        } => {
                            sqlx::query(sql::SETTLE)
                                .bind(case_id)
                                .bind(StoredClassification::Susar.as_str())
                                .bind(Some(&day_zero))
                                .bind(None::<String>)
                                .execute(&mut *tx)
                                .await?;
                            let created =
                                insert_obligations(&mut tx, case_id, &trial_id, obligations)
                                    .await?;
                            serde_json::json!({
                                "case_id": case_id,
                                "classification": StoredClassification::Susar.as_str(),
                                "day_zero": day_zero,
                                "obligations_created": rules::obligations_json(&created),
                            })
                        }
                        Settlement::NotReportable { reason } => {
                            sqlx::query(sql::SETTLE)
                                .bind(case_id)
                                .bind(StoredClassification::NotReportable.as_str())
                                .bind(None::<String>)
                                .bind(Some(&reason))
                                .execute(&mut *tx)
                                .await?;
                            serde_json::json!({
                                "case_id": case_id,
                                "classification": StoredClassification::NotReportable.as_str(),
                                "reason": reason,
                            })
                        }
                    };
                    finish_sealed(tx, audit, content).await?;
                    Ok(Settled::Done)
                }

                async fn case_record(&self, case_id: &str) -> StoreResult<Option<CaseRecord>> {
                    let mut conn = self.pool.acquire().await?;
                    let row: Option<CaseDbRow> = sqlx::query_as(sql::CASE)
                        .bind(case_id)
                        .fetch_optional(&mut *conn)
                        .await?;
                    match row {
                        None => Ok(None),
                        Some(row) => Ok(Some(record_of(&mut conn, CaseRow::try_from(row)?).await?)),
                    }
                }

                async fn trial_cases(&self, trial_id: &str) -> StoreResult<Vec<CaseRecord>> {
                    let mut conn = self.pool.acquire().await?;
                    let rows: Vec<CaseDbRow> = sqlx::query_as(sql::TRIAL_CASES)
                        .bind(trial_id)
                        .fetch_all(&mut *conn)
                        .await?;
                    let mut records = Vec::with_capacity(rows.len());
                    for row in rows {
                        records.push(record_of(&mut conn, CaseRow::try_from(row)?).await?);
                    }
                    Ok(records)
                }

                async fn pending_cases(&self, limit: u32) -> StoreResult<Vec<String>> {
                    Ok(sqlx::query_scalar(sql::PENDING_CASES)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?)
                }

                async fn obligations(
                    &self,
                    trial_id: Option<&str>,
                    include_submitted: bool,
                ) -> StoreResult<Vec<ObligationRow>> {
                    let text = sql::obligations(trial_id.is_some(), include_submitted);
                    let mut query = sqlx::query_as::<_, ObligationDbRow>(text);
                    if let Some(trial_id) = trial_id {
                        query = query.bind(trial_id);
                    }
                    let rows = query.fetch_all(&self.pool).await?;
                    Ok(rows.into_iter().map(ObligationRow::from).collect())
                }

                async fn obligation(
                    &self,
                    obligation_id: &str,
                ) -> StoreResult<Option<ObligationRow>> {
                    let row: Option<ObligationDbRow> = sqlx::query_as(sql::OBLIGATION)
                        .bind(obligation_id)
                        .fetch_optional(&self.pool)
                        .await?;
                    Ok(row.map(ObligationRow::from))
                }

                async fn record_submission(
                    &self,
                    submission: Submission,
                    follow_up: Option<NewObligation>,
                    audit: AuditEntry,
                ) -> StoreResult<ObligationRow> {
                    let mut tx = begin_write(&self.pool).await?;
                    let row: Option<ObligationDbRow> = sqlx::query_as(OBLIGATION_FOR_WRITE)
                        .bind(&submission.obligation_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let existing = ObligationRow::from(row.ok_or(StoreError::NotFound)?);
                    if existing.submitted_at.is_some() {
                        return Err(StoreError::Conflict(format!(
                            "obligation {} was already submitted",
                            submission.obligation_id
                        )));
                    }
                    let moved = sqlx::query(sql::SUBMIT)
                        .bind(&submission.obligation_id)
                        .bind(&submission.submitted_at)
                        .bind(&submission.recipient)
                        .bind(&submission.acknowledgement_id)
                        .execute(&mut *tx)
                        .await?;
                    if moved.rows_affected() == 0 {
                        return Err(StoreError::Conflict(format!(
                            "obligation {} was already submitted",
                            submission.obligation_id
                        )));
                    }
                    let created = match follow_up {
                        Some(next) => {
                            insert_obligations(
                                &mut tx,
                                &existing.case_id,
                                &existing.trial_id,
                                vec![next],
                            )
                            .await?
                        }
                        None => Vec::new(),
                    };
                    let content = serde_json::json!({
                        "obligation_id": existing.obligation_id,
                        "case_id": existing.case_id,
                        "kind": existing.kind,
                        "submitted_at": submission.submitted_at,
                        "recipient": submission.recipient,
                        "acknowledgement_id": submission.acknowledgement_id,
                        "obligations_created": rules::obligations_json(&created),
                    });
                    finish_sealed(tx, audit, content).await?;
                    Ok(ObligationRow {
                        submitted_at: Some(submission.submitted_at),
                        recipient: Some(submission.recipient),
                        acknowledgement_id: submission.acknowledgement_id,
                        ..existing
                    })
                }

                async fn sealed_record(&self, audit_seq: u64) -> StoreResult<Option<SealedRecord>> {
                    let seq = i64::try_from(audit_seq).unwrap_or(i64::MAX);
                    let row: Option<SealedDbRow> = sqlx::query_as(sql::SEALED)
                        .bind(seq)
                        .fetch_optional(&self.pool)
                        .await?;
                    row.map(SealedRecord::try_from).transpose()
                }

                async fn case_count(&self) -> StoreResult<u64> {
                    let count: i64 = sqlx::query_scalar(sql::CASE_COUNT)
                        .fetch_one(&self.pool)
                        .await?;
                    sql::from_column(count, "case count")
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
