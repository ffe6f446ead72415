//! The definition snapshot, reveals, the notification outbox and period
//! records.

use super::*;

fn reveal(kind: RevealKind, trial_id: &str, subject_id: &str, site_id: &str) -> NewReveal {
    NewReveal {
        kind,
        trial_id: trial_id.into(),
        subject_id: subject_id.into(),
        site_id: site_id.into(),
        arm_id: "ARM-SECRET".into(),
        reason_category: (kind == RevealKind::Emergency).then(|| "serious_adverse_event".into()),
        reason: (kind == RevealKind::Emergency).then(|| "anaphylaxis".into()),
        case_id: (kind == RevealKind::SafetyReview).then(|| "CASE-1".into()),
        period_id: (kind == RevealKind::PlannedPeriod).then(|| "crossover".into()),
        withdraws: false,
    }
}

fn reveal_entry(subject_id: &str) -> AuditEntry {
    AuditEntry {
        details: json!({ "subject": subject_id }),
        ..entry("reveal")
    }
}

async fn record(store: &dyn Store, new: NewReveal) -> crate::store::RevealRecord {
    let subject = new.subject_id.clone();
    store
        .record_reveal(new, reveal_entry(&subject))
        .await
        .expect("record a reveal")
}

fn period(trial_id: &str, subject_id: &str, given: &str) -> NewPeriodRecord {
    NewPeriodRecord {
        trial_id: trial_id.into(),
        subject_id: subject_id.into(),
        period_id: "blinded".into(),
        assigned_arm_id: "A".into(),
        given_arm_id: given.into(),
        note: String::new(),
    }
}

/// The snapshot comes with the pools and only ever moves to a higher
/// version, each move audited; anything else writes nothing.
pub(super) async fn the_definition_snapshot_moves_only_to_higher_versions(store: &dyn Store) {
    const TRIAL: &str = "CONF-SNAP";
    assert_eq!(store.definition(TRIAL).await, Ok(None));
    assert_eq!(
        store
            .refresh_definition(TRIAL, &snapshot(2), entry("definition.refreshed"))
            .await,
        Err(StoreError::NotFound),
        "no pools, no snapshot"
    );
    put(store, TRIAL, &two_arm_pools(), CodeSource::Generated)
        .await
        .expect("pools");
    assert_eq!(store.definition(TRIAL).await, Ok(Some(snapshot(1))));
    for stale in [1, 0] {
        let before = audit_len(store).await;
        assert_eq!(
            store
                .refresh_definition(TRIAL, &snapshot(stale), entry("definition.refreshed"))
                .await,
            Ok(false)
        );
        assert_appended(store, before, 0, "a stale refresh").await;
    }
    let before = audit_len(store).await;
    assert_eq!(
        store
            .refresh_definition(TRIAL, &snapshot(3), entry("definition.refreshed"))
            .await,
        Ok(true)
    );
    assert_appended(store, before, 1, "a refresh").await;
    assert_eq!(store.definition(TRIAL).await, Ok(Some(snapshot(3))));
    assert_eq!(
        store
            .refresh_definition(TRIAL, &snapshot(2), entry("definition.refreshed"))
            .await,
        Ok(false),
        "never back"
    );
    assert_eq!(store.definition(TRIAL).await, Ok(Some(snapshot(3))));
}

/// A repeat of an allocation at another site is a Conflict.
pub(super) async fn an_assignment_keeps_its_site(store: &dyn Store) {
    const TRIAL: &str = "CONF-SITE";
    put(store, TRIAL, &two_arm_pools(), CodeSource::Generated)
        .await
        .expect("pools");
    let first = assign(store, TRIAL, "CONF-S-001", "A").await;
    assert_eq!(first.site_id, SITE);
    let before = audit_len(store).await;
    let moved = store
        .assign_code(
            TRIAL,
            "CONF-S-001",
            "SITE-2",
            "A",
            assign_entry("CONF-S-001"),
        )
        .await;
    assert_conflict(moved, "a repeat at another site");
    assert_appended(store, before, 0, "a repeat at another site").await;
    assert_eq!(store.assignment(TRIAL, "CONF-S-001").await, Ok(Some(first)));
}

/// A reveal is one row, one audit record naming the row's sha256 and never
/// the arm, and (except for preparation) one notification, all at once.
pub(super) async fn a_reveal_is_recorded_with_its_audit_and_notification(store: &dyn Store) {
    const TRIAL: &str = "CONF-REVEAL";
    let kinds = [
        RevealKind::Emergency,
        RevealKind::SafetyReview,
        RevealKind::PlannedPeriod,
        RevealKind::Preparation,
    ];
    for (index, kind) in kinds.into_iter().enumerate() {
        let subject = format!("CONF-V-{index}");
        let before = audit_len(store).await;
        let notified = store
            .notifications(TRIAL, 0, 100)
            .await
            .expect("read")
            .len();
        let recorded = record(store, reveal(kind, TRIAL, &subject, SITE)).await;
        assert_appended(store, before, 1, kind.as_str()).await;
        let audit = last_audit(store).await;
        assert_eq!(u64::try_from(audit.seq).ok(), Some(recorded.audit_seq));
        let details = audit.entry.details.to_string();
        assert!(
            !details.contains("ARM-SECRET"),
            "the arm stays out: {details}"
        );
        assert_eq!(
            audit.entry.details["reveal_sha256"].as_str().map(str::len),
            Some(64),
            "the row's sha256 is chained"
        );
        assert_eq!(recorded.arm_id, "ARM-SECRET");
        assert_eq!(recorded.kind, kind);
        assert_eq!(recorded.at, audit.entry.at);
        assert_eq!(
            store.reveals(TRIAL, &subject).await,
            Ok(vec![recorded.clone()])
        );
        let notifications = store.notifications(TRIAL, 0, 100).await.expect("read");
        if kind.notifies() {
            assert_eq!(notifications.len(), notified + 1, "{kind:?} notifies");
            let last = notifications.last().expect("a notification");
            assert_eq!(last.cursor, recorded.audit_seq);
            assert_eq!(
                (last.kind, last.subject_id.as_str(), last.site_id.as_str()),
                (kind, subject.as_str(), SITE)
            );
            assert_eq!(last.reason_category, recorded.reason_category);
        } else {
            assert_eq!(notifications.len(), notified, "{kind:?} does not notify");
        }
    }
    assert_eq!(store.reveals(TRIAL, "CONF-V-99").await, Ok(Vec::new()));
    let counts = store.reveal_counts(TRIAL).await.expect("counts");
    assert_eq!(
        (
            counts.emergency,
            counts.safety_reviews,
            counts.planned,
            counts.preparation
        ),
        (1, 1, 1, 1)
    );
}

/// Cursors increase; reading after a cursor gives exactly what followed
/// it, and another trial's notifications never.
pub(super) async fn notifications_resume_after_a_cursor(store: &dyn Store) {
    const TRIAL: &str = "CONF-OUTBOX";
    let mut written = Vec::new();
    for index in 0..5 {
        let trial = if index == 2 {
            "CONF-OUTBOX-OTHER"
        } else {
            TRIAL
        };
        let recorded = record(
            store,
            reveal(
                RevealKind::Emergency,
                trial,
                &format!("CONF-N-{index}"),
                SITE,
            ),
        )
        .await;
        if trial == TRIAL {
            written.push(recorded.audit_seq);
        }
    }
    let all: Vec<u64> = store
        .notifications(TRIAL, 0, 100)
        .await
        .expect("read")
        .iter()
        .map(|n| n.cursor)
        .collect();
    assert_eq!(all, written, "in cursor order, this trial only");
    assert!(all.windows(2).all(|w| w[0] < w[1]), "increasing");
    let first_two = store.notifications(TRIAL, 0, 2).await.expect("read");
    assert_eq!(first_two.len(), 2, "the limit holds");
    let rest: Vec<u64> = store
        .notifications(TRIAL, first_two[1].cursor, 100)
        .await
        .expect("read")
        .iter()
        .map(|n| n.cursor)
        .collect();
    assert_eq!(rest, written[2..].to_vec(), "resume after the cursor");
    assert_eq!(
        store.notifications(TRIAL, written[3], 100).await,
        Ok(Vec::new())
    );
}

/// One record per subject and period: the same again writes nothing, a
/// different one is a Conflict and writes nothing; deviations are counted.
pub(super) async fn period_records_are_kept_once(store: &dyn Store) {
    const TRIAL: &str = "CONF-PERIOD";
    let before = audit_len(store).await;
    let first = store
        .record_period(period(TRIAL, "CONF-P-1", "A"), entry("period.recorded"))
        .await
        .expect("record");
    assert!(!first.deviation);
    assert_appended(store, before, 1, "record_period").await;
    let audit = last_audit(store).await;
    assert_eq!(u64::try_from(audit.seq).ok(), Some(first.audit_seq));
    assert_eq!(
        audit.entry.details["record_sha256"].as_str().map(str::len),
        Some(64)
    );

    let before = audit_len(store).await;
    let again = store
        .record_period(period(TRIAL, "CONF-P-1", "A"), entry("period.recorded"))
        .await;
    assert_eq!(again, Ok(first.clone()), "an identical repeat");
    assert_conflict(
        store
            .record_period(period(TRIAL, "CONF-P-1", "B"), entry("period.recorded"))
            .await,
        "a different record",
    );
    assert_appended(store, before, 0, "a repeat and a conflict").await;
    assert_eq!(
        store.period_records(TRIAL, "CONF-P-1").await,
        Ok(vec![first])
    );

    let deviation = store
        .record_period(period(TRIAL, "CONF-P-2", "B"), entry("period.recorded"))
        .await
        .expect("record");
    assert!(deviation.deviation);
    assert_eq!(
        store.reveal_counts(TRIAL).await.map(|c| c.deviations),
        Ok(1)
    );
}

/// A blinded auditor reads every field of a reveal but the arm, and the
/// sha256 chained in its audit record. Hashing the row once per arm must
/// not find the arm without the row's salt; with the salt (an unblinded
/// verifier's) exactly the stored arm matches, and likewise for a period
/// record's arms.
pub(super) async fn a_side_row_sha256_cannot_be_matched_to_an_arm_without_its_salt(
    store: &dyn Store,
) {
    use crate::store::rules::{period_sha256, reveal_sha256};
    const TRIAL: &str = "CONF-SALT";
    const ARMS: [&str; 3] = ["ARM-SECRET", "A", "B"];
    let recorded = record(
        store,
        reveal(RevealKind::Emergency, TRIAL, "CONF-S-1", SITE),
    )
    .await;
    let audit = last_audit(store).await;
    let chained = audit.entry.details["reveal_sha256"]
        .as_str()
        .expect("chained sha256")
        .to_owned();
    assert!(
        !audit.entry.details.to_string().contains(&recorded.salt),
        "the salt stays out of the chain"
    );
    assert_eq!(recorded.salt.len(), 64);
    let candidate = |arm: &str| NewReveal {
        arm_id: arm.into(),
        ..reveal(RevealKind::Emergency, TRIAL, "CONF-S-1", SITE)
    };
    let hash = |arm: &str, salt: &str| {
        reveal_sha256(
            &candidate(arm),
            &audit.entry.at,
            &audit.entry.actor,
            &audit.entry.role,
            salt,
        )
    };
    for arm in ARMS {
        assert_ne!(hash(arm, ""), chained, "{arm} found without the salt");
    }
    let matching: Vec<&str> = ARMS
        .into_iter()
        .filter(|arm| hash(arm, &recorded.salt) == chained)
        .collect();
    assert_eq!(matching, ["ARM-SECRET"], "the salt verifies the stored arm");
    let stored = store.reveals(TRIAL, "CONF-S-1").await.expect("read");
    assert_eq!(stored, vec![recorded], "the salt is kept with the row");

    let given = store
        .record_period(period(TRIAL, "CONF-S-1", "B"), entry("period.recorded"))
        .await
        .expect("record");
    let audit = last_audit(store).await;
    let chained = audit.entry.details["record_sha256"]
        .as_str()
        .expect("chained sha256")
        .to_owned();
    let mut matching = Vec::new();
    for assigned in ["A", "B"] {
        for given_arm in ["A", "B"] {
            let guess = NewPeriodRecord {
                assigned_arm_id: assigned.into(),
                given_arm_id: given_arm.into(),
                ..period(TRIAL, "CONF-S-1", "B")
            };
            let at = &audit.entry.at;
            assert_ne!(period_sha256(&guess, at, &audit.entry.actor, ""), chained);
            if period_sha256(&guess, at, &audit.entry.actor, &given.salt) == chained {
                matching.push((assigned, given_arm));
            }
        }
    }
    assert_eq!(matching, [("A", "B")]);
}
