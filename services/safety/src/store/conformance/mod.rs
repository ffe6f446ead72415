//! The storage conformance suite: the behaviours every [`Store`] must have,
//! run as one named test per check per backend (SQLite in memory, a SQLite
//! file, PostgreSQL from `tests/kit`). Checks go through the trait only.
//! After every check the whole audit trail must still verify, and every
//! sealed side record must match the sha256 its audit record chains.

use equipoise_common::audit::{AuditEntry, AuditRecord, verify_chain};
use serde_json::json;

use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use super::{
    AssessmentRow, CaseRow, NewObligation, Settled, Settlement, Store, StoreError,
    StoredClassification, Submission, VersionRow, sealed_sha256,
};

mod cases;
mod obligations;

macro_rules! safety_store_suite {
    ($backend:ident, $store:expr) => {
        equipoise_common::conformance_suite! {
            backend: $backend,
            store: $store,
            after_each: audit_chain_and_seals_verify,
            checks: [
                cases::a_case_is_created_once_with_its_first_version,
                cases::versions_follow_in_order_and_never_replace,
                cases::an_assessment_is_of_the_latest_version_once,
                cases::pending_moves_only_while_unsettled,
                cases::a_settlement_is_written_once_and_refused_when_stale,
                cases::audit_details_never_hold_the_outcome,
                cases::unknown_cases_are_not_found,
                obligations::obligations_are_created_once_per_kind,
                obligations::a_submission_closes_once_and_adds_the_follow_up,
                obligations::obligations_filter_by_trial_and_state,
                obligations::racing_settlements_write_once,
            ],
        }
    };
}

safety_store_suite!(sqlite_memory, open_sqlite_in_memory());
safety_store_suite!(sqlite_file, open_sqlite_file());
safety_store_suite!(postgres, open_postgres());

equipoise_common::conformance_backends! {
    store: Store,
    sqlite: SqliteStore,
    postgres: PostgresStore,
}

/// Whatever a check did, the trail is one chain and each sealed record
/// matches its audit record.
async fn audit_chain_and_seals_verify(store: &dyn Store) {
    let records = all_audit(store).await;
    verify_chain(&records).expect("the audit chain verifies");
    for record in &records {
        let Some(digest) = record.entry.details.get("sealed_sha256") else {
            continue;
        };
        let seq = u64::try_from(record.seq).expect("seq");
        let sealed = store
            .sealed_record(seq)
            .await
            .expect("read sealed")
            .expect("a sealed record for each sealed audit record");
        assert_eq!(
            digest.as_str(),
            Some(sealed_sha256(&sealed.content, &sealed.salt).as_str())
        );
    }
}

pub(crate) async fn all_audit(store: &dyn Store) -> Vec<AuditRecord> {
    store.audit_records(1, 100_000).await.expect("audit")
}

pub(crate) fn entry(action: &str) -> AuditEntry {
    AuditEntry {
        at: "2026-11-21T10:00:00Z".into(),
        actor: "tester".into(),
        role: "safety_officer".into(),
        action: action.into(),
        entity: "case/x".into(),
        details: json!({}),
    }
}

pub(crate) fn case_row(case_id: &str, trial_id: &str) -> CaseRow {
    CaseRow {
        case_id: case_id.into(),
        trial_id: trial_id.into(),
        site_id: "SITE-1".into(),
        subject_id: "S-001".into(),
        first_received_at: "2026-11-21T10:00:00Z".into(),
        day_zero: None,
        classification: StoredClassification::NotPotential,
        not_reportable_reason: None,
        sponsor_time_zone: "Europe/Paris".into(),
    }
}

pub(crate) fn version_row(case_id: &str, version: u32) -> VersionRow {
    VersionRow {
        case_id: case_id.into(),
        version,
        report_json: format!("{{\"v\":{version}}}"),
        received_at: format!("2026-11-2{version}T10:00:00Z"),
        late: false,
        expected: false,
        rsi_version: "RSI-v3".into(),
    }
}

pub(crate) fn obligation(id: &str, kind: &str, due: &str) -> NewObligation {
    NewObligation {
        obligation_id: id.into(),
        kind: kind.into(),
        due_date: due.into(),
        due_at: format!("{due}T23:00:00Z"),
    }
}

pub(crate) fn assessment(case_id: &str, version: u32) -> AssessmentRow {
    AssessmentRow {
        case_id: case_id.into(),
        version,
        causality: "related".into(),
        comment: "plausible".into(),
        by: "mm".into(),
        at: "2026-11-22T11:00:00Z".into(),
    }
}

pub(crate) async fn create(store: &dyn Store, case_id: &str, trial_id: &str) {
    store
        .create_case(
            case_row(case_id, trial_id),
            version_row(case_id, 1),
            entry("case.reported"),
        )
        .await
        .expect("create");
}

pub(crate) async fn settle_susar(
    store: &dyn Store,
    case_id: &str,
    obligations: Vec<NewObligation>,
) {
    let record = store
        .case_record(case_id)
        .await
        .expect("read")
        .expect("case");
    let settled = store
        .settle(
            case_id,
            record.as_of(),
            Settlement::Susar {
                day_zero: "2026-11-21T10:00:00Z".into(),
                obligations,
            },
            entry("case.classified"),
        )
        .await
        .expect("settle");
    assert_eq!(settled, Settled::Done);
}

/// A case with two versions, an assessment, a settled SUSAR, a submitted
/// obligation: something in every table, for the trigger tests.
pub(crate) async fn write_everything(store: &dyn Store) {
    create(store, "C1", "T").await;
    create(store, "C2", "T").await;
    store
        .add_version(version_row("C1", 2), Vec::new(), entry("case.follow_up"))
        .await
        .expect("v2");
    store
        .add_assessment(assessment("C1", 2), Vec::new(), entry("case.assessed"))
        .await
        .expect("assess");
    settle_susar(
        store,
        "C1",
        vec![obligation("O1", "initial_7_day", "2026-11-28")],
    )
    .await;
    store
        .record_submission(
            Submission {
                obligation_id: "O1".into(),
                submitted_at: "2026-11-25T10:00:00Z".into(),
                recipient: "EudraVigilance".into(),
                acknowledgement_id: Some("ACK-1".into()),
            },
            Some(obligation("O2", "follow_up_8_day", "2026-12-03")),
            entry("obligation.submitted"),
        )
        .await
        .expect("submit");
}

/// Direct SQL every backend's triggers refuse, after [`write_everything`].
pub(crate) const TRIGGER_REFUSALS: [(&str, &str); 16] = [
    (
        "UPDATE case_versions SET report_json = '{}' WHERE case_id = 'C1'",
        "never overwritten",
    ),
    (
        "DELETE FROM case_versions WHERE version = 2",
        "never overwritten",
    ),
    ("DELETE FROM cases WHERE case_id = 'C2'", "never deleted"),
    (
        "UPDATE cases SET subject_id = 'S-9' WHERE case_id = 'C2'",
        "immutable",
    ),
    (
        "UPDATE cases SET classification = 'not_reportable' WHERE case_id = 'C1'",
        "final",
    ),
    (
        "UPDATE cases SET day_zero = NULL WHERE case_id = 'C1'",
        "final",
    ),
    (
        "UPDATE sponsor_assessments SET causality = 'not_related'",
        "append-only",
    ),
    ("DELETE FROM sponsor_assessments", "append-only"),
    (
        "UPDATE obligations SET recipient = 'x' WHERE obligation_id = 'O1'",
        "closed once",
    ),
    (
        "UPDATE obligations SET due_at = 'x' WHERE obligation_id = 'O2'",
        "closed once",
    ),
    ("DELETE FROM obligations", "never deleted"),
    ("UPDATE sealed_records SET content = '{}'", "append-only"),
    ("DELETE FROM sealed_records", "append-only"),
    ("UPDATE audit_log SET actor = 'mallory'", "append-only"),
    ("DELETE FROM audit_log", "append-only"),
    (
        "UPDATE obligations SET submitted_at = NULL WHERE obligation_id = 'O1'",
        "closed once",
    ),
];
