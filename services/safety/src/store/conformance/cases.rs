//! Cases, versions, assessments and settlement.

use super::*;

pub(super) async fn a_case_is_created_once_with_its_first_version(store: &dyn Store) {
    create(store, "CASE-1", "T").await;
    let before = all_audit(store).await.len();
    let again = store
        .create_case(
            case_row("CASE-1", "T"),
            version_row("CASE-1", 1),
            entry("case.reported"),
        )
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(all_audit(store).await.len(), before, "nothing written");
    let record = store
        .case_record("CASE-1")
        .await
        .expect("read")
        .expect("case");
    assert_eq!(record.case, case_row("CASE-1", "T"));
    assert_eq!(record.versions, vec![version_row("CASE-1", 1)]);
    assert!(record.assessments.is_empty() && record.obligations.is_empty());
    assert_eq!(store.case_count().await.expect("count"), 1);
}

pub(super) async fn versions_follow_in_order_and_never_replace(store: &dyn Store) {
    create(store, "CASE-V", "T").await;
    let before = all_audit(store).await.len();
    for wrong in [1, 3] {
        let refused = store
            .add_version(
                version_row("CASE-V", wrong),
                Vec::new(),
                entry("case.follow_up"),
            )
            .await;
        assert!(
            matches!(refused, Err(StoreError::Conflict(_))),
            "{refused:?}"
        );
    }
    assert_eq!(all_audit(store).await.len(), before);
    store
        .add_version(
            version_row("CASE-V", 2),
            Vec::new(),
            entry("case.follow_up"),
        )
        .await
        .expect("v2");
    let record = store
        .case_record("CASE-V")
        .await
        .expect("read")
        .expect("case");
    assert_eq!(
        record.versions,
        vec![version_row("CASE-V", 1), version_row("CASE-V", 2)]
    );
    // Not a SUSAR: obligations offered with a version are not created.
    store
        .add_version(
            version_row("CASE-V", 3),
            vec![obligation("OV", "initial_7_day", "2026-12-01")],
            entry("case.follow_up"),
        )
        .await
        .expect("v3");
    let record = store
        .case_record("CASE-V")
        .await
        .expect("read")
        .expect("case");
    assert!(record.obligations.is_empty());
}

pub(super) async fn an_assessment_is_of_the_latest_version_once(store: &dyn Store) {
    create(store, "CASE-A", "T").await;
    store
        .add_version(
            version_row("CASE-A", 2),
            Vec::new(),
            entry("case.follow_up"),
        )
        .await
        .expect("v2");
    let before = all_audit(store).await.len();
    let old = store
        .add_assessment(assessment("CASE-A", 1), Vec::new(), entry("case.assessed"))
        .await;
    assert!(matches!(old, Err(StoreError::Conflict(_))), "{old:?}");
    store
        .add_assessment(assessment("CASE-A", 2), Vec::new(), entry("case.assessed"))
        .await
        .expect("assess");
    let twice = store
        .add_assessment(assessment("CASE-A", 2), Vec::new(), entry("case.assessed"))
        .await;
    assert!(matches!(twice, Err(StoreError::Conflict(_))), "{twice:?}");
    assert_eq!(all_audit(store).await.len(), before + 1);
    let record = store
        .case_record("CASE-A")
        .await
        .expect("read")
        .expect("case");
    assert_eq!(record.assessments, vec![assessment("CASE-A", 2)]);
}

pub(super) async fn pending_moves_only_while_unsettled(store: &dyn Store) {
    create(store, "CASE-P", "T").await;
    assert!(
        store
            .set_pending("CASE-P", true, entry("p"))
            .await
            .expect("p")
    );
    assert!(
        !store
            .set_pending("CASE-P", true, entry("p"))
            .await
            .expect("p")
    );
    assert_eq!(
        store.pending_cases(10).await.expect("pending"),
        vec!["CASE-P".to_owned()]
    );
    settle_susar(store, "CASE-P", Vec::new()).await;
    assert!(
        !store
            .set_pending("CASE-P", false, entry("p"))
            .await
            .expect("p")
    );
    assert!(store.pending_cases(10).await.expect("pending").is_empty());
}

pub(super) async fn a_settlement_is_written_once_and_refused_when_stale(store: &dyn Store) {
    create(store, "CASE-S", "T").await;
    let record = store
        .case_record("CASE-S")
        .await
        .expect("read")
        .expect("case");
    let as_of = record.as_of();
    store
        .add_version(
            version_row("CASE-S", 2),
            Vec::new(),
            entry("case.follow_up"),
        )
        .await
        .expect("v2");
    let before = all_audit(store).await.len();
    let stale = store
        .settle(
            "CASE-S",
            as_of,
            Settlement::NotReportable {
                reason: "sham".into(),
            },
            entry("case.classified"),
        )
        .await
        .expect("settle");
    assert_eq!(stale, Settled::Stale);
    assert_eq!(all_audit(store).await.len(), before);
    let record = store
        .case_record("CASE-S")
        .await
        .expect("read")
        .expect("case");
    let done = store
        .settle(
            "CASE-S",
            record.as_of(),
            Settlement::NotReportable {
                reason: "sham".into(),
            },
            entry("case.classified"),
        )
        .await
        .expect("settle");
    assert_eq!(done, Settled::Done);
    let again = store
        .settle(
            "CASE-S",
            record.as_of(),
            Settlement::Susar {
                day_zero: "2026-11-21T10:00:00Z".into(),
                obligations: vec![obligation("OS", "initial_15_day", "2026-12-06")],
            },
            entry("case.classified"),
        )
        .await
        .expect("settle");
    assert_eq!(again, Settled::AlreadySettled);
    let record = store
        .case_record("CASE-S")
        .await
        .expect("read")
        .expect("case");
    assert_eq!(
        record.case.classification,
        StoredClassification::NotReportable
    );
    assert_eq!(record.case.not_reportable_reason.as_deref(), Some("sham"));
    assert!(record.obligations.is_empty());
}

/// The chained details of a settlement are the same shape for both
/// outcomes: only `sealed_sha256` is added, never the classification.
pub(super) async fn audit_details_never_hold_the_outcome(store: &dyn Store) {
    create(store, "CASE-X", "T").await;
    create(store, "CASE-Y", "T").await;
    settle_susar(
        store,
        "CASE-X",
        vec![obligation("OX", "initial_15_day", "2026-12-06")],
    )
    .await;
    let x = all_audit(store).await.pop().expect("x");
    let record = store
        .case_record("CASE-Y")
        .await
        .expect("read")
        .expect("case");
    store
        .settle(
            "CASE-Y",
            record.as_of(),
            Settlement::NotReportable {
                reason: "sham".into(),
            },
            entry("case.classified"),
        )
        .await
        .expect("settle");
    let y = all_audit(store).await.pop().expect("y");
    let keys = |r: &AuditRecord| {
        r.entry
            .details
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>())
    };
    assert_eq!(keys(&x), Some(vec!["sealed_sha256".to_owned()]));
    assert_eq!(keys(&x), keys(&y));
    for record in [&x, &y] {
        let text = record.entry.details.to_string();
        for word in ["susar", "not_reportable", "sham", "initial_15_day"] {
            assert!(!text.contains(word), "{text}");
        }
    }
}

pub(super) async fn unknown_cases_are_not_found(store: &dyn Store) {
    assert_eq!(store.case_record("NOPE").await.expect("read"), None);
    let missing = store
        .add_version(version_row("NOPE", 2), Vec::new(), entry("case.follow_up"))
        .await;
    assert_eq!(missing, Err(StoreError::NotFound));
    let missing = store.set_pending("NOPE", true, entry("p")).await;
    assert_eq!(missing, Err(StoreError::NotFound));
    let missing = store
        .record_submission(
            Submission {
                obligation_id: "NOPE".into(),
                submitted_at: "2026-11-25T10:00:00Z".into(),
                recipient: "EV".into(),
                acknowledgement_id: None,
            },
            None,
            entry("obligation.submitted"),
        )
        .await;
    assert_eq!(missing, Err(StoreError::NotFound));
}
