//! Obligations: once per (case, kind), closed once.

use super::*;

pub(super) async fn obligations_are_created_once_per_kind(store: &dyn Store) {
    create(store, "CASE-O", "T").await;
    settle_susar(
        store,
        "CASE-O",
        vec![obligation("O-15", "initial_15_day", "2026-12-06")],
    )
    .await;
    // A follow-up offering the same kind again and a new one.
    store
        .add_version(
            version_row("CASE-O", 2),
            vec![
                obligation("O-15b", "initial_15_day", "2026-12-07"),
                obligation("O-7", "initial_7_day", "2026-11-29"),
            ],
            entry("case.follow_up"),
        )
        .await
        .expect("v2");
    store
        .add_version(
            version_row("CASE-O", 3),
            vec![obligation("O-7b", "initial_7_day", "2026-11-30")],
            entry("case.follow_up"),
        )
        .await
        .expect("v3");
    let record = store
        .case_record("CASE-O")
        .await
        .expect("read")
        .expect("case");
    let mut ids: Vec<&str> = record
        .obligations
        .iter()
        .map(|o| o.obligation_id.as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, vec!["O-15", "O-7"]);
    assert!(
        record
            .obligations
            .iter()
            .all(|o| o.trial_id == "T" && o.case_id == "CASE-O")
    );
}

pub(super) async fn a_submission_closes_once_and_adds_the_follow_up(store: &dyn Store) {
    create(store, "CASE-SUB", "T").await;
    settle_susar(
        store,
        "CASE-SUB",
        vec![obligation("O-SUB", "initial_7_day", "2026-11-28")],
    )
    .await;
    let submission = Submission {
        obligation_id: "O-SUB".into(),
        submitted_at: "2026-11-25T10:00:00Z".into(),
        recipient: "EudraVigilance".into(),
        acknowledgement_id: Some("ACK".into()),
    };
    let closed = store
        .record_submission(
            submission.clone(),
            Some(obligation("O-FU", "follow_up_8_day", "2026-12-03")),
            entry("obligation.submitted"),
        )
        .await
        .expect("submit");
    assert_eq!(closed.submitted_at.as_deref(), Some("2026-11-25T10:00:00Z"));
    assert_eq!(closed.recipient.as_deref(), Some("EudraVigilance"));
    let before = all_audit(store).await.len();
    let again = store
        .record_submission(submission, None, entry("obligation.submitted"))
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(all_audit(store).await.len(), before);
    assert_eq!(store.obligation("O-SUB").await.expect("read"), Some(closed));
    let open = store.obligations(None, false).await.expect("open");
    assert_eq!(
        open.iter()
            .map(|o| o.obligation_id.as_str())
            .collect::<Vec<_>>(),
        vec!["O-FU"]
    );
}

pub(super) async fn obligations_filter_by_trial_and_state(store: &dyn Store) {
    create(store, "CASE-T1", "T1").await;
    create(store, "CASE-T2", "T2").await;
    settle_susar(
        store,
        "CASE-T1",
        vec![obligation("O-T1", "initial_15_day", "2026-12-06")],
    )
    .await;
    settle_susar(
        store,
        "CASE-T2",
        vec![obligation("O-T2", "initial_15_day", "2026-12-06")],
    )
    .await;
    store
        .record_submission(
            Submission {
                obligation_id: "O-T2".into(),
                submitted_at: "2026-11-25T10:00:00Z".into(),
                recipient: "EV".into(),
                acknowledgement_id: None,
            },
            None,
            entry("obligation.submitted"),
        )
        .await
        .expect("submit");
    let ids = |rows: Vec<super::super::ObligationRow>| {
        rows.into_iter()
            .map(|o| o.obligation_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store.obligations(Some("T1"), false).await.expect("r")),
        vec!["O-T1"]
    );
    assert!(
        store
            .obligations(Some("T2"), false)
            .await
            .expect("r")
            .is_empty()
    );
    assert_eq!(
        ids(store.obligations(Some("T2"), true).await.expect("r")),
        vec!["O-T2"]
    );
    assert_eq!(
        ids(store.obligations(None, true).await.expect("r")),
        vec!["O-T1", "O-T2"]
    );
    let cases = store.trial_cases("T1").await.expect("cases");
    assert_eq!(cases.len(), 1);
    assert_eq!(cases[0].case.case_id, "CASE-T1");
}

/// Two settlements of one case racing (a request and the retry task):
/// one is written, the other finds it settled; obligations once.
pub(super) async fn racing_settlements_write_once(store: &dyn Store) {
    create(store, "CASE-R", "T").await;
    let record = store
        .case_record("CASE-R")
        .await
        .expect("read")
        .expect("case");
    let settle = |id: &'static str| {
        store.settle(
            "CASE-R",
            record.as_of(),
            Settlement::Susar {
                day_zero: "2026-11-21T10:00:00Z".into(),
                obligations: vec![obligation(id, "initial_15_day", "2026-12-06")],
            },
            entry("case.classified"),
        )
    };
    let (a, b) = tokio::join!(settle("O-RA"), settle("O-RB"));
    let mut outcomes = vec![a.expect("a"), b.expect("b")];
    outcomes.sort_by_key(|s| *s == Settled::Done);
    assert_eq!(outcomes, vec![Settled::AlreadySettled, Settled::Done]);
    let record = store
        .case_record("CASE-R")
        .await
        .expect("read")
        .expect("case");
    assert_eq!(record.obligations.len(), 1);
}
