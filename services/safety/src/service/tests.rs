//! The safety domain against a real SQLite store, with in-memory fakes of
//! the blinding service and the trial definitions, and stand-in
//! regulatory rules (tests of `clocks` and `e2b` themselves, and of the
//! service with them, are marked as waiting for branch safety-rules).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use equipoise_common::auth::{Caller, Role, TrialScope};
use equipoise_common::error::{ErrorCode, ServiceError};
use equipoise_trial::examples::{FACET_CROSSOVER, RESPINE};
use equipoise_trial::{TrialDefinition, parse_definition};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::clocks::{Due, ObligationKind};
use crate::store::sqlite::SqliteStore;

const NOW: &str = "2026-11-21T10:00:00Z";

// ------------------------------------------------------------------ fakes

#[derive(Default)]
pub(crate) struct FakeBlinding {
    arms: Mutex<HashMap<(String, String), RevealedArm>>,
    down: AtomicBool,
    reveals: AtomicUsize,
}

impl FakeBlinding {
    fn allocate(&self, trial: &str, subject: &str, arm: &str, label: &str, active: bool) {
        self.arms.lock().expect("arms").insert(
            (trial.into(), subject.into()),
            RevealedArm {
                arm_id: arm.into(),
                arm_label: label.into(),
                active,
            },
        );
    }
}

#[async_trait]
impl Blinding for FakeBlinding {
    async fn safety_reveal(
        &self,
        trial_id: &str,
        subject_id: &str,
        _case_id: &str,
    ) -> std::result::Result<RevealedArm, BlindingError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(BlindingError::Unavailable("down".into()));
        }
        self.reveals.fetch_add(1, Ordering::SeqCst);
        self.arms
            .lock()
            .expect("arms")
            .get(&(trial_id.to_owned(), subject_id.to_owned()))
            .cloned()
            .ok_or_else(|| BlindingError::NotFound("no code".into()))
    }

    async fn arms_for_dsmb(
        &self,
        trial_id: &str,
        subject_ids: &[String],
    ) -> std::result::Result<Vec<SubjectArm>, BlindingError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(BlindingError::Unavailable("down".into()));
        }
        let arms = self.arms.lock().expect("arms");
        Ok(subject_ids
            .iter()
            .filter_map(|s| {
                arms.get(&(trial_id.to_owned(), s.clone()))
                    .map(|a| SubjectArm {
                        subject_id: s.clone(),
                        arm_id: a.arm_id.clone(),
                        arm_label: a.arm_label.clone(),
                    })
            })
            .collect())
    }
}

struct FakeTrials(Vec<TrialDefinition>);

#[async_trait]
impl TrialDefinitions for FakeTrials {
    async fn definition(
        &self,
        trial_id: &str,
    ) -> std::result::Result<TrialDefinition, DefinitionError> {
        self.0
            .iter()
            .find(|d| d.id == trial_id)
            .cloned()
            .ok_or(DefinitionError::NotFound)
    }
}

/// Stand-ins for `clocks` and `e2b` until branch safety-rules is merged:
/// days counted in the sponsor's zone with jiff, due at the next midnight.
fn stand_in_due(at: Timestamp, days: i64, kind: ObligationKind, zone: &TimeZone) -> Due {
    let day = at.to_zoned(zone.clone()).date();
    let due_date = day.checked_add(jiff::Span::new().days(days)).expect("date");
    let next = due_date.tomorrow().expect("date");
    let due_at = next.to_zoned(zone.clone()).expect("zoned").timestamp();
    Due {
        kind,
        due_date,
        due_at,
    }
}

fn stand_in_rules() -> Rules {
    Rules {
        is_late: |aware, received| received.duration_since(aware) > SignedDuration::from_hours(24),
        initial_obligation: |at, fatal, zone| {
            if fatal {
                stand_in_due(at, 7, ObligationKind::Initial7Day, zone)
            } else {
                stand_in_due(at, 15, ObligationKind::Initial15Day, zone)
            }
        },
        follow_up_obligation: |at, zone| stand_in_due(at, 8, ObligationKind::FollowUp8Day, zone),
        sponsor_zone: |name| TimeZone::get(name).map_err(|e| e.to_string()),
        icsr_xml: |input| format!("<icsr case=\"{}\" v=\"{}\"/>", input.case_id, input.version),
    }
}

pub(crate) struct Fixture {
    pub(crate) service: Arc<SafetyService>,
    pub(crate) blinding: Arc<FakeBlinding>,
    now: Arc<Mutex<Timestamp>>,
}

async fn fixture_with(rules: Rules) -> Fixture {
    let store = SqliteStore::in_memory().await.expect("store");
    let blinding = Arc::new(FakeBlinding::default());
    let trials = FakeTrials(vec![
        parse_definition(RESPINE).expect("RESPINE"),
        parse_definition(FACET_CROSSOVER).expect("FACET-X"),
    ]);
    let now = Arc::new(Mutex::new(NOW.parse::<Timestamp>().expect("now")));
    let clock_now = Arc::clone(&now);
    let clock: Clock = Arc::new(move || *clock_now.lock().expect("clock"));
    let service = SafetyService::new(
        Arc::new(store),
        Arc::clone(&blinding) as Arc<dyn Blinding>,
        Arc::new(trials),
        clock,
        rules,
        "EQUIPOISE",
    );
    Fixture {
        service: Arc::new(service),
        blinding,
        now,
    }
}

pub(crate) async fn fixture() -> Fixture {
    fixture_with(stand_in_rules()).await
}

impl Fixture {
    fn advance(&self, by: SignedDuration) {
        let mut now = self.now.lock().expect("clock");
        *now = now.checked_add(by).expect("time");
    }

    fn now(&self) -> Timestamp {
        *self.now.lock().expect("clock")
    }

    async fn audit_len(&self) -> usize {
        self.service
            .store()
            .audit_records(1, 100_000)
            .await
            .expect("audit")
            .len()
    }

    async fn written(&self) -> (usize, u64) {
        (
            self.audit_len().await,
            self.service.store().case_count().await.expect("count"),
        )
    }

    /// A RESPINE allocation: MSC is active, SHAM is not.
    pub(crate) fn allocate(&self, subject: &str, active: bool) {
        if active {
            self.blinding.allocate(
                "RESPINE",
                subject,
                "MSC",
                "BM-MSC 20e6 cells in 2 ml, intradiscal",
                true,
            );
        } else {
            self.blinding.allocate(
                "RESPINE",
                subject,
                "SHAM",
                "Sham paravertebral injection",
                false,
            );
        }
    }
}

pub(crate) fn caller(roles: &[Role], sites: &[&str]) -> Caller {
    Caller {
        subject: "user-1".into(),
        display_name: "User One".into(),
        roles: roles.iter().cloned().collect(),
        sites: sites
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<BTreeSet<_>>(),
        trials: TrialScope::All,
        auth_time: None,
    }
}

pub(crate) fn investigator(site: &str) -> Caller {
    caller(&[Role::SiteInvestigator], &[site])
}

pub(crate) fn safety_officer() -> Caller {
    caller(&[Role::SafetyOfficer], &[])
}

pub(crate) fn medical_monitor() -> Caller {
    caller(&[Role::MedicalMonitor], &[])
}

/// A serious, related, unexpected event at FR-MTP: a potential SUSAR.
pub(crate) fn susar_report(subject: &str) -> CaseReportInput {
    CaseReportInput {
        trial_id: "RESPINE".into(),
        site_id: "FR-MTP".into(),
        subject_id: subject.into(),
        reporter: Some(Reporter {
            name: "Dr Anne Martin".into(),
            qualification: "physician".into(),
        }),
        suspect_product: "BM-MSC or sham".into(),
        event: Some(CodedEvent {
            llt_code: "10013090".into(),
            term: "Discitis".into(),
            meddra_version: "27.0".into(),
        }),
        onset_date: "2026-11-19".into(),
        serious: true,
        seriousness: Some(Seriousness {
            hospitalisation: true,
            ..Seriousness::default()
        }),
        outcome: Some(Outcome::Recovering),
        investigator_causality: Some(Causality::Related),
        narrative: "Fever and back pain three weeks after injection.".into(),
        site_aware_at: Some("2026-11-20T16:00:00Z".parse().expect("time")),
    }
}

fn code(error: &SafetyError) -> ErrorCode {
    error.error_code()
}

// ------------------------------------------------------------- reporting

#[tokio::test]
async fn an_initial_report_is_version_one_of_a_new_case() {
    let f = fixture().await;
    let mut report = susar_report("RSP-001");
    report.event = Some(CodedEvent {
        llt_code: "10022086".into(),
        term: "  Injection Site Pain ".into(),
        meddra_version: "27.0".into(),
    });
    let view = f
        .service
        .report_case(&investigator("FR-MTP"), report)
        .await
        .expect("reported");
    assert!(view.case_id.starts_with("EQP-RESPINE-"));
    assert_eq!(view.case_id.len(), "EQP-RESPINE-".len() + 16);
    assert_eq!(view.version, 1);
    assert!(
        view.expected,
        "expected events match trimmed, case-insensitively"
    );
    assert_eq!(view.rsi_version, "RSI-v3");
    assert_eq!(view.classification, Classification::NotPotentialSusar);
    assert_eq!(view.received_at, f.now());
    assert!(!view.late, "18 hours after awareness");
    assert_eq!(f.blinding.reveals.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_report_more_than_a_day_after_awareness_is_late() {
    let f = fixture().await;
    let mut report = susar_report("RSP-001");
    report.site_aware_at = Some("2026-11-19T09:00:00Z".parse().expect("time"));
    report.onset_date = "2026-11-18".into();
    report.investigator_causality = Some(Causality::NotRelated);
    let view = f
        .service
        .report_case(&investigator("FR-MTP"), report)
        .await
        .expect("reported");
    assert!(view.late);
}

#[tokio::test]
async fn bad_reports_are_refused_naming_the_field_and_write_nothing() {
    let f = fixture().await;
    type Change = Box<dyn Fn(&mut CaseReportInput)>;
    let cases: Vec<(&str, Change)> = vec![
        (
            "report.seriousness",
            Box::new(|r| r.seriousness = Some(Seriousness::default())),
        ),
        ("report.serious", Box::new(|r| r.serious = false)),
        (
            "report.onset_date",
            Box::new(|r| r.onset_date = "2026-11-25".into()),
        ),
        (
            "report.onset_date",
            Box::new(|r| r.onset_date = "19/11/2026".into()),
        ),
        (
            "report.site_aware_at",
            Box::new(|r| r.site_aware_at = Some("2026-11-22T10:00:00Z".parse().expect("t"))),
        ),
        ("report.site_aware_at", Box::new(|r| r.site_aware_at = None)),
        (
            "report.event.llt_code",
            Box::new(|r| r.event.as_mut().expect("event").llt_code = "1001309".into()),
        ),
        (
            "report.event.llt_code",
            Box::new(|r| r.event.as_mut().expect("event").llt_code = "1001309x".into()),
        ),
        (
            "report.event.llt_code",
            Box::new(|r| r.event.as_mut().expect("event").llt_code = "100130900".into()),
        ),
        (
            "report.event.term",
            Box::new(|r| r.event.as_mut().expect("event").term = " ".into()),
        ),
        (
            "report.event.meddra_version",
            Box::new(|r| r.event.as_mut().expect("event").meddra_version = String::new()),
        ),
        (
            "report.suspect_product",
            Box::new(|r| r.suspect_product = String::new()),
        ),
        (
            "report.reporter.name",
            Box::new(|r| r.reporter.as_mut().expect("reporter").name = String::new()),
        ),
        ("report.reporter.name", Box::new(|r| r.reporter = None)),
        (
            "report.narrative",
            Box::new(|r| r.narrative = "x".repeat(20_001)),
        ),
        ("report.outcome", Box::new(|r| r.outcome = None)),
        (
            "report.subject_id",
            Box::new(|r| r.subject_id = String::new()),
        ),
        (
            "report.subject_id",
            Box::new(|r| r.subject_id = "RSP 001;".into()),
        ),
        ("report.site_id", Box::new(|r| r.site_id = "FR-XXX".into())),
    ];
    let before = f.written().await;
    for (field, change) in cases {
        let mut report = susar_report("RSP-001");
        change(&mut report);
        // A safety officer reports for any site, so site_id reaches the
        // trial check.
        let refused = f
            .service
            .report_case(&safety_officer(), report)
            .await
            .expect_err(field);
        assert_eq!(
            code(&refused),
            ErrorCode::InvalidArgument,
            "{field}: {refused}"
        );
        assert!(
            refused.fields().contains(&field.to_owned()),
            "{field}: {refused}"
        );
        assert_eq!(f.written().await, before, "{field}: nothing written");
    }
}

#[tokio::test]
async fn unknown_trials_other_sites_and_other_roles_are_refused_writing_nothing() {
    let f = fixture().await;
    let before = f.written().await;
    let mut unknown = susar_report("RSP-001");
    unknown.trial_id = "NOPE".into();
    let refused = f
        .service
        .report_case(&safety_officer(), unknown)
        .await
        .expect_err("unknown trial");
    assert_eq!(code(&refused), ErrorCode::NotFound);

    let refused = f
        .service
        .report_case(&investigator("FR-PAR"), susar_report("RSP-001"))
        .await
        .expect_err("another site's subject");
    assert_eq!(code(&refused), ErrorCode::PermissionDenied);
    assert!(refused.to_string().contains("site_id"), "{refused}");

    for role in [Role::Dsmb, Role::Statistician, Role::TrialAdmin] {
        let refused = f
            .service
            .report_case(
                &caller(std::slice::from_ref(&role), &[]),
                susar_report("RSP-001"),
            )
            .await
            .expect_err("not a reporter");
        assert_eq!(code(&refused), ErrorCode::PermissionDenied, "{role}");
    }
    let mut scoped = investigator("FR-MTP");
    scoped.trials = TrialScope::Only(["FACET-X".to_owned()].into());
    let refused = f
        .service
        .report_case(&scoped, susar_report("RSP-001"))
        .await
        .expect_err("another trial");
    assert_eq!(code(&refused), ErrorCode::PermissionDenied);
    assert_eq!(f.written().await, before);
}

// -------------------------------------------------------- classification

#[tokio::test]
async fn an_active_arm_makes_a_susar_with_its_obligation_from_day_zero() {
    let f = fixture().await;
    f.allocate("RSP-001", true);
    let reported = f
        .service
        .report_case(&investigator("FR-MTP"), susar_report("RSP-001"))
        .await
        .expect("reported");
    assert_eq!(reported.classification, Classification::Assessed);
    assert!(reported.obligations.is_empty() && reported.day_zero.is_none());
    let view = f
        .service
        .get_case(&safety_officer(), &reported.case_id, 0)
        .await
        .expect("read");
    assert_eq!(view.classification, Classification::Susar);
    assert_eq!(view.day_zero, Some(f.now()));
    assert_eq!(view.obligations.len(), 1);
    let due = &view.obligations[0];
    assert_eq!(due.kind, ObligationKind::Initial15Day);
    // Day 0 is 21 November in Paris: due by the end of 6 December there.
    assert_eq!(due.due_date, Date::new(2026, 12, 6).expect("date"));
    assert_eq!(
        due.due_at,
        "2026-12-06T23:00:00Z".parse::<Timestamp>().expect("t")
    );
    assert!(!due.overdue);
    assert_eq!(f.blinding.reveals.load(Ordering::SeqCst), 1);

    // The chained details hold no outcome: only the sealed record's hash.
    let records = f
        .service
        .store()
        .audit_records(1, 1000)
        .await
        .expect("audit");
    let classified = records
        .iter()
        .find(|r| r.entry.action == "case.classified")
        .expect("classified");
    let keys: Vec<&String> = classified
        .entry
        .details
        .as_object()
        .expect("object")
        .keys()
        .collect();
    assert_eq!(keys, vec!["sealed_sha256"]);
    for record in &records {
        let text = record.entry.details.to_string().to_lowercase();
        for word in ["susar", "msc", "sham", "not_reportable", "initial_15_day"] {
            assert!(!text.contains(word), "{}: {text}", record.entry.action);
        }
    }
}

#[tokio::test]
async fn a_fatal_susar_is_due_in_seven_days() {
    let f = fixture().await;
    f.allocate("RSP-002", true);
    let mut report = susar_report("RSP-002");
    report.seriousness = Some(Seriousness {
        death: true,
        ..Seriousness::default()
    });
    report.outcome = Some(Outcome::Fatal);
    let case = f
        .service
        .report_case(&investigator("FR-MTP"), report)
        .await
        .expect("reported");
    let view = f
        .service
        .get_case(&safety_officer(), &case.case_id, 0)
        .await
        .expect("read");
    assert_eq!(view.obligations.len(), 1);
    assert_eq!(view.obligations[0].kind, ObligationKind::Initial7Day);
    assert_eq!(
        view.obligations[0].due_date,
        Date::new(2026, 11, 28).expect("d")
    );
}

#[tokio::test]
async fn sham_is_not_reportable_and_only_the_safety_officer_sees_why() {
    let f = fixture().await;
    f.allocate("RSP-003", false);
    let case = f
        .service
        .report_case(&investigator("FR-MTP"), susar_report("RSP-003"))
        .await
        .expect("reported");
    let view = f
        .service
        .get_case(&safety_officer(), &case.case_id, 0)
        .await
        .expect("read");
    assert_eq!(view.classification, Classification::NotReportable);
    assert_eq!(
        view.not_reportable_reason.as_deref(),
        Some(
            "the subject received Sham paravertebral injection, which is not the investigational product"
        )
    );
    assert!(view.obligations.is_empty() && view.day_zero.is_none());
    for blinded in [
        medical_monitor(),
        investigator("FR-MTP"),
        caller(&[Role::TrialAdmin], &[]),
    ] {
        let seen = f
            .service
            .get_case(&blinded, &case.case_id, 0)
            .await
            .expect("read");
        assert_eq!(seen.classification, Classification::Assessed);
        assert_eq!(seen.not_reportable_reason, None);
    }
    assert!(
        f.service
            .list_obligations(&safety_officer(), None, true)
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn blinded_views_of_a_susar_and_a_not_reportable_case_are_identical() {
    let f = fixture().await;
    f.allocate("RSP-010", true);
    f.allocate("RSP-011", false);
    let susar = f
        .service
        .report_case(&investigator("FR-MTP"), susar_report("RSP-010"))
        .await
        .expect("susar");
    let sham = f
        .service
        .report_case(&investigator("FR-MTP"), susar_report("RSP-011"))
        .await
        .expect("sham");
    for blinded in [
        medical_monitor(),
        investigator("FR-MTP"),
        caller(&[Role::Statistician], &[]),
        caller(&[Role::TrialAdmin], &[]),
        caller(&[Role::EmergencyDesk], &[]),
    ] {
        let a = f
            .service
            .get_case(&blinded, &susar.case_id, 0)
            .await
            .expect("a");
        let mut b = f
            .service
            .get_case(&blinded, &sham.case_id, 0)
            .await
            .expect("b");
        // What differs by construction: the case and the subject.
        b.case_id.clone_from(&a.case_id);
        b.report.subject_id.clone_from(&a.report.subject_id);
        assert_eq!(a, b, "field by field, for {:?}", blinded.roles);
        assert_eq!(a.classification, Classification::Assessed);
        let listed = f
            .service
            .list_cases(&blinded, "RESPINE")
            .await
            .expect("list");
        assert!(
            listed
                .iter()
                .all(|v| v.classification == Classification::Assessed
                    && v.obligations.is_empty()
                    && v.day_zero.is_none()
                    && v.not_reportable_reason.is_none())
        );
    }
    // The safety officer sees them differ.
    let a = f
        .service
        .get_case(&safety_officer(), &susar.case_id, 0)
        .await
        .expect("a");
    let b = f
        .service
        .get_case(&safety_officer(), &sham.case_id, 0)
        .await
        .expect("b");
    assert_ne!(a.classification, b.classification);
}

#[tokio::test]
async fn with_blinding_down_a_case_is_pending_until_the_retry_settles_it_once() {
    let f = fixture().await;
    f.allocate("RSP-020", true);
    f.blinding.down.store(true, Ordering::SeqCst);
    let case = f
        .service
        .report_case(&investigator("FR-MTP"), susar_report("RSP-020"))
        .await
        .expect("saved although blinding is down");
    assert_eq!(case.classification, Classification::Pending);
    assert_eq!(f.service.retry_pending(10).await.expect("retry"), 1);
    let still = f
        .service
        .get_case(&safety_officer(), &case.case_id, 0)
        .await
        .expect("read");
    assert_eq!(still.classification, Classification::Pending);

    f.blinding.down.store(false, Ordering::SeqCst);
    let retry = crate::server::ClassificationRetry::spawn(
        Arc::clone(&f.service),
        Duration::from_millis(10),
    );
    let mut settled = None;
    for _ in 0..200 {
        let view = f
            .service
            .get_case(&safety_officer(), &case.case_id, 0)
            .await
            .expect("read");
        if view.classification == Classification::Susar {
            settled = Some(view);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A few more rounds find nothing pending.
    tokio::time::sleep(Duration::from_millis(50)).await;
    retry.stop().await;
    let settled = settled.expect("the retry settled the case");
    // Day 0 is the receipt of the report, not the retry.
    assert_eq!(settled.day_zero, Some(f.now()));
    assert_eq!(settled.obligations.len(), 1);
    assert_eq!(f.blinding.reveals.load(Ordering::SeqCst), 1);
    f.service.classify(&case.case_id).await.expect("again");
    assert_eq!(
        f.service.retry_pending(10).await.expect("nothing pending"),
        0
    );
    let again = f
        .service
        .get_case(&safety_officer(), &case.case_id, 0)
        .await
        .expect("read");
    assert_eq!(
        again.obligations, settled.obligations,
        "obligations exactly once"
    );
    assert_eq!(f.blinding.reveals.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_pending_case_no_longer_potential_after_a_follow_up_is_not_pending() {
    let f = fixture().await;
    f.blinding.down.store(true, Ordering::SeqCst);
    let case = f
        .service
        .report_case(&investigator("FR-MTP"), susar_report("RSP-021"))
        .await
        .expect("reported");
    assert_eq!(case.classification, Classification::Pending);
    let mut follow_up = susar_report("RSP-021");
    follow_up.investigator_causality = Some(Causality::NotRelated);
    let view = f
        .service
        .report_follow_up(&investigator("FR-MTP"), &case.case_id, follow_up)
        .await
        .expect("follow-up");
    assert_eq!(view.classification, Classification::NotPotentialSusar);
    assert!(
        f.service
            .store()
            .pending_cases(10)
            .await
            .expect("pending")
            .is_empty()
    );
}

// ------------------------------------------------------------ follow-ups

#[tokio::test]
async fn day_zero_is_the_receipt_of_the_follow_up_that_made_it_a_potential_susar() {
    let f = fixture().await;
    f.allocate("RSP-031", true);
    let mut first = susar_report("RSP-031");
    first.investigator_causality = None;
    let case = f
        .service
        .report_case(&investigator("FR-MTP"), first)
        .await
        .expect("reported");
    assert_eq!(case.classification, Classification::NotPotentialSusar);
    f.advance(SignedDuration::from_hours(50));
    let view = f
        .service
        .report_follow_up(
            &investigator("FR-MTP"),
            &case.case_id,
            susar_report("RSP-031"),
        )
        .await
        .expect("related now");
    assert_eq!(view.classification, Classification::Assessed);
    let view = f
        .service
        .get_case(&safety_officer(), &case.case_id, 0)
        .await
        .expect("read");
    assert_eq!(view.day_zero, Some(f.now()));
    assert_eq!(
        view.obligations[0].due_date,
        Date::new(2026, 12, 8).expect("d")
    );
}

#[tokio::test]
async fn follow_ups_add_versions_and_never_overwrite() {
    let f = fixture().await;
    let mut first = susar_report("RSP-030");
    first.investigator_causality = Some(Causality::NotRelated);
    let case = f
        .service
        .report_case(&investigator("FR-MTP"), first.clone())
        .await
        .expect("reported");
    f.advance(SignedDuration::from_hours(30));
    let mut second = first.clone();
    second.narrative = "Cultures negative; improving.".into();
    let v2 = f
        .service
        .report_follow_up(&investigator("FR-MTP"), &case.case_id, second)
        .await
        .expect("v2");
    assert_eq!(v2.version, 2);
    assert_eq!(v2.received_at, f.now());
    let v1 = f
        .service
        .get_case(&medical_monitor(), &case.case_id, 1)
        .await
        .expect("v1");
    assert_eq!(v1.report.narrative, first.narrative);
    assert_eq!(v1.received_at, NOW.parse::<Timestamp>().expect("t"));
    let latest = f
        .service
        .get_case(&medical_monitor(), &case.case_id, 0)
        .await
        .expect("v2");
    assert_eq!(latest.version, 2);
    let missing = f
        .service
        .get_case(&medical_monitor(), &case.case_id, 3)
        .await
        .expect_err("no v3");
    assert_eq!(code(&missing), ErrorCode::NotFound);

    let before = f.written().await;
    let mut other = first.clone();
    other.subject_id = "RSP-999".into();
    let refused = f
        .service
        .report_follow_up(&investigator("FR-MTP"), &case.case_id, other)
        .await
        .expect_err("another subject");
    assert_eq!(refused.fields(), vec!["report.subject_id".to_owned()]);
    let refused = f
        .service
        .report_follow_up(
            &investigator("FR-MTP"),
            "EQP-RESPINE-0000000000000000",
            first.clone(),
        )
        .await
        .expect_err("unknown case");
    assert_eq!(code(&refused), ErrorCode::NotFound);
    assert!(refused.to_string().contains("case_id"));
    let refused = f
        .service
        .report_follow_up(&investigator("FR-PAR"), &case.case_id, first.clone())
        .await
        .expect_err("another site's case");
    assert_eq!(code(&refused), ErrorCode::NotFound, "never tells it exists");
    let mut bad = first;
    bad.event.as_mut().expect("event").llt_code = "12".into();
    let refused = f
        .service
        .report_follow_up(&investigator("FR-MTP"), &case.case_id, bad)
        .await
        .expect_err("bad code");
    assert_eq!(refused.fields(), vec!["report.event.llt_code".to_owned()]);
    assert_eq!(f.written().await, before);
}

#[tokio::test]
async fn an_upgrade_to_fatal_adds_a_seven_day_obligation_and_keeps_the_fifteen_day_one() {
    let f = fixture().await;
    f.allocate("RSP-040", true);
    let case = f
        .service
        .report_case(&investigator("FR-MTP"), susar_report("RSP-040"))
        .await
        .expect("reported");
    f.advance(SignedDuration::from_hours(24 * 3));
    let mut fatal = susar_report("RSP-040");
    fatal.seriousness = Some(Seriousness {
        death: true,
        hospitalisation: true,
        ..Seriousness::default()
    });
    fatal.outcome = Some(Outcome::Fatal);
    f.service
        .report_follow_up(&investigator("FR-MTP"), &case.case_id, fatal.clone())
        .await
        .expect("fatal follow-up");
    let view = f
        .service
        .get_case(&safety_officer(), &case.case_id, 0)
        .await
        .expect("read");
    let kinds: Vec<(ObligationKind, Date)> = view
        .obligations
        .iter()
        .map(|o| (o.kind, o.due_date))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (
                ObligationKind::Initial7Day,
                Date::new(2026, 12, 1).expect("d")
            ),
            (
                ObligationKind::Initial15Day,
                Date::new(2026, 12, 6).expect("d")
            ),
        ]
    );
    assert_eq!(
        view.day_zero,
        Some(NOW.parse().expect("t")),
        "day 0 unchanged"
    );
    // Another fatal follow-up adds nothing.
    f.service
        .report_follow_up(&investigator("FR-MTP"), &case.case_id, fatal)
        .await
        .expect("v3");
    let view = f
        .service
        .get_case(&safety_officer(), &case.case_id, 0)
        .await
        .expect("read");
    assert_eq!(view.obligations.len(), 2);
}

// ------------------------------------------------------- sponsor causality

#[tokio::test]
async fn the_sponsors_causality_is_separate_and_only_for_sponsor_safety_roles() {
    let f = fixture().await;
    f.allocate("RSP-050", true);
    let mut report = susar_report("RSP-050");
    report.investigator_causality = Some(Causality::NotRelated);
    let case = f
        .service
        .report_case(&investigator("FR-MTP"), report.clone())
        .await
        .expect("reported");
    assert_eq!(case.classification, Classification::NotPotentialSusar);
    let before = f.written().await;
    for site_role in [
        investigator("FR-MTP"),
        caller(&[Role::SiteCoordinator], &["FR-MTP"]),
    ] {
        let refused = f
            .service
            .assess_causality(&site_role, &case.case_id, 1, Some(Causality::Related), "")
            .await
            .expect_err("site role");
        assert_eq!(code(&refused), ErrorCode::PermissionDenied);
    }
    let refused = f
        .service
        .assess_causality(&medical_monitor(), &case.case_id, 1, None, "")
        .await
        .expect_err("unspecified");
    assert_eq!(refused.fields(), vec!["causality".to_owned()]);
    assert_eq!(f.written().await, before);

    f.advance(SignedDuration::from_hours(2));
    f.service
        .report_follow_up(&investigator("FR-MTP"), &case.case_id, report)
        .await
        .expect("v2");
    let stale = f
        .service
        .assess_causality(
            &medical_monitor(),
            &case.case_id,
            1,
            Some(Causality::Related),
            "",
        )
        .await
        .expect_err("not the latest");
    assert_eq!(code(&stale), ErrorCode::FailedPrecondition);

    f.advance(SignedDuration::from_hours(1));
    let assessed = f
        .service
        .assess_causality(
            &medical_monitor(),
            &case.case_id,
            2,
            Some(Causality::Related),
            "temporal",
        )
        .await
        .expect("assessed");
    assert_eq!(assessed.sponsor_causality, Some(Causality::Related));
    assert_eq!(
        assessed.report.investigator_causality,
        Some(Causality::NotRelated)
    );
    let view = f
        .service
        .get_case(&safety_officer(), &case.case_id, 0)
        .await
        .expect("read");
    assert_eq!(view.classification, Classification::Susar);
    assert_eq!(
        view.day_zero,
        Some(f.now()),
        "day 0: the sponsor's assessment"
    );
    let v1 = f
        .service
        .get_case(&safety_officer(), &case.case_id, 1)
        .await
        .expect("v1");
    assert_eq!(v1.sponsor_causality, None);
}

// ------------------------------------------------------------ summaries

#[tokio::test]
async fn the_dsmb_gets_counts_by_arm_and_everyone_else_pooled_counts() {
    let f = fixture().await;
    f.allocate("RSP-060", true);
    f.allocate("RSP-061", false);
    f.allocate("RSP-062", true);
    for subject in ["RSP-060", "RSP-061", "RSP-062", "RSP-063"] {
        let mut report = susar_report(subject);
        report.investigator_causality = Some(Causality::NotRelated);
        if subject == "RSP-062" {
            report.seriousness = Some(Seriousness {
                death: true,
                ..Seriousness::default()
            });
        }
        f.service
            .report_case(&investigator("FR-MTP"), report)
            .await
            .expect("reported");
    }
    let mut not_serious = susar_report("RSP-060");
    not_serious.serious = false;
    not_serious.seriousness = None;
    f.service
        .report_case(&investigator("FR-MTP"), not_serious)
        .await
        .expect("non-serious");

    let dsmb = caller(&[Role::Dsmb], &[]);
    let summary = f
        .service
        .safety_summary(&dsmb, "RESPINE")
        .await
        .expect("dsmb");
    assert_eq!(summary.serious_cases, 4);
    assert_eq!(summary.arm_unknown, 1, "RSP-063 has no code");
    let by_arm: Vec<(&str, u32)> = summary
        .by_arm
        .iter()
        .map(|a| (a.arm_id.as_str(), a.serious_cases))
        .collect();
    assert_eq!(by_arm, vec![("MSC", 2), ("SHAM", 1)]);
    let msc_deaths = summary.by_arm[0]
        .by_criterion
        .iter()
        .find(|c| c.criterion == "death")
        .expect("death");
    assert_eq!(msc_deaths.cases, 1);
    assert_eq!(summary.by_criterion.len(), 6);

    for pooled_role in [
        Role::Statistician,
        Role::TrialAdmin,
        Role::MedicalMonitor,
        Role::SafetyOfficer,
    ] {
        let pooled = f
            .service
            .safety_summary(&caller(std::slice::from_ref(&pooled_role), &[]), "RESPINE")
            .await
            .expect("pooled");
        assert_eq!(pooled.serious_cases, 4);
        assert!(pooled.by_arm.is_empty(), "{pooled_role}");
        assert_eq!(pooled.arm_unknown, 0);
        assert_eq!(pooled.by_criterion, summary.by_criterion);
    }
    let refused = f
        .service
        .safety_summary(&investigator("FR-MTP"), "RESPINE")
        .await
        .expect_err("site role");
    assert_eq!(code(&refused), ErrorCode::PermissionDenied);

    // No individual case for the DSMB.
    let any = f
        .service
        .list_cases(&medical_monitor(), "RESPINE")
        .await
        .expect("list")
        .remove(0);
    for refused in [
        f.service
            .get_case(&dsmb, &any.case_id, 0)
            .await
            .expect_err("get"),
        f.service
            .list_cases(&dsmb, "RESPINE")
            .await
            .expect_err("list"),
    ] {
        assert_eq!(code(&refused), ErrorCode::PermissionDenied);
    }

    f.blinding.down.store(true, Ordering::SeqCst);
    let unknown = f
        .service
        .safety_summary(&dsmb, "RESPINE")
        .await
        .expect("dsmb");
    assert_eq!(unknown.arm_unknown, 4);
    assert!(unknown.by_arm.iter().all(|a| a.serious_cases == 0));
}

#[tokio::test]
async fn site_roles_list_only_their_sites_cases() {
    let f = fixture().await;
    let mut other = susar_report("RSP-070");
    other.site_id = "FR-PAR".into();
    other.investigator_causality = None;
    f.service
        .report_case(&investigator("FR-PAR"), other)
        .await
        .expect("FR-PAR");
    let mut own = susar_report("RSP-071");
    own.investigator_causality = None;
    f.service
        .report_case(&investigator("FR-MTP"), own)
        .await
        .expect("FR-MTP");
    let listed = f
        .service
        .list_cases(&investigator("FR-MTP"), "RESPINE")
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].report.site_id, "FR-MTP");
    assert_eq!(
        f.service
            .list_cases(&medical_monitor(), "RESPINE")
            .await
            .expect("all")
            .len(),
        2
    );
}

// ----------------------------------------------------------- obligations

#[tokio::test]
async fn obligations_are_ordered_by_due_time_and_a_submission_closes_once() {
    let f = fixture().await;
    f.allocate("RSP-080", true);
    f.allocate("RSP-081", true);
    let fifteen = f
        .service
        .report_case(&investigator("FR-MTP"), susar_report("RSP-080"))
        .await
        .expect("15-day");
    f.advance(SignedDuration::from_hours(24));
    let mut fatal = susar_report("RSP-081");
    fatal.seriousness = Some(Seriousness {
        life_threatening: true,
        ..Seriousness::default()
    });
    let seven = f
        .service
        .report_case(&investigator("FR-MTP"), fatal)
        .await
        .expect("7-day");
    let officer = safety_officer();
    let open = f
        .service
        .list_obligations(&officer, None, false)
        .await
        .expect("open");
    let order: Vec<(&str, ObligationKind)> =
        open.iter().map(|o| (o.case_id.as_str(), o.kind)).collect();
    assert_eq!(
        order,
        vec![
            (seven.case_id.as_str(), ObligationKind::Initial7Day),
            (fifteen.case_id.as_str(), ObligationKind::Initial15Day),
        ]
    );
    for other in [
        medical_monitor(),
        caller(&[Role::Dsmb], &[]),
        investigator("FR-MTP"),
    ] {
        let refused = f
            .service
            .list_obligations(&other, Some("RESPINE"), false)
            .await
            .expect_err("safety officer only");
        assert_eq!(code(&refused), ErrorCode::PermissionDenied);
    }

    let seven_id = open[0].obligation_id.clone();
    let submission = |at: Timestamp| SubmissionInput {
        obligation_id: seven_id.clone(),
        recipient: "EudraVigilance".into(),
        submitted_at: Some(at),
        acknowledgement_id: "EV-ACK-1".into(),
    };
    let before = f.written().await;
    let future = f
        .service
        .record_submission(
            &officer,
            submission(f.now() + SignedDuration::from_hours(1)),
        )
        .await
        .expect_err("future");
    assert_eq!(future.fields(), vec!["submitted_at".to_owned()]);
    let mut no_recipient = submission(f.now());
    no_recipient.recipient = " ".into();
    let refused = f
        .service
        .record_submission(&officer, no_recipient)
        .await
        .expect_err("recipient");
    assert_eq!(refused.fields(), vec!["recipient".to_owned()]);
    let refused = f
        .service
        .record_submission(&medical_monitor(), submission(f.now()))
        .await
        .expect_err("role");
    assert_eq!(code(&refused), ErrorCode::PermissionDenied);
    assert_eq!(f.written().await, before);

    let submitted_at = f.now() - SignedDuration::from_hours(1);
    let closed = f
        .service
        .record_submission(&officer, submission(submitted_at))
        .await
        .expect("closed");
    assert_eq!(closed.submitted_at, Some(submitted_at));
    assert_eq!(closed.acknowledgement_id.as_deref(), Some("EV-ACK-1"));
    assert!(!closed.overdue);
    let again = f
        .service
        .record_submission(&officer, submission(f.now()))
        .await
        .expect_err("second");
    assert_eq!(code(&again), ErrorCode::FailedPrecondition);
    let unknown = f
        .service
        .record_submission(
            &officer,
            SubmissionInput {
                obligation_id: "OBL-0".into(),
                ..submission(f.now())
            },
        )
        .await
        .expect_err("unknown");
    assert_eq!(code(&unknown), ErrorCode::NotFound);

    let open = f
        .service
        .list_obligations(&officer, Some("RESPINE"), false)
        .await
        .expect("open");
    let kinds: Vec<ObligationKind> = open.iter().map(|o| o.kind).collect();
    assert_eq!(
        kinds,
        vec![ObligationKind::FollowUp8Day, ObligationKind::Initial15Day]
    );
    assert_eq!(open[0].case_id, seven.case_id);
    let all = f
        .service
        .list_obligations(&officer, None, true)
        .await
        .expect("all");
    assert_eq!(all.len(), 3);

    assert_eq!(f.service.overdue_obligations().await.expect("overdue"), 0);
    f.advance(SignedDuration::from_hours(24 * 20));
    let open = f
        .service
        .list_obligations(&officer, None, false)
        .await
        .expect("open");
    assert!(open.iter().all(|o| o.overdue));
    assert_eq!(f.service.overdue_obligations().await.expect("overdue"), 2);
    let all = f
        .service
        .list_obligations(&officer, None, true)
        .await
        .expect("all");
    assert!(all.iter().any(|o| o.submitted_at.is_some() && !o.overdue));
}

#[tokio::test]
async fn an_export_is_for_the_safety_officer_and_is_audited() {
    let f = fixture().await;
    let case = f
        .service
        .report_case(&investigator("FR-MTP"), susar_report("RSP-090"))
        .await
        .expect("reported");
    let refused = f
        .service
        .export_case(&medical_monitor(), &case.case_id, 0)
        .await
        .expect_err("role");
    assert_eq!(code(&refused), ErrorCode::PermissionDenied);
    let before = f.audit_len().await;
    let exported = f
        .service
        .export_case(&safety_officer(), &case.case_id, 1)
        .await
        .expect("export");
    assert!(
        exported
            .message_id
            .starts_with(&format!("EQUIPOISE-{}-V1-", case.case_id))
    );
    assert!(exported.xml.contains(&case.case_id));
    assert_eq!(f.audit_len().await, before + 1);
}

// ------------------------------------- with the rules of branch safety-rules

#[tokio::test]
async fn with_the_regulatory_rules_a_susar_is_due_by_the_end_of_day_fifteen_in_paris() {
    let f = fixture_with(Rules::regulatory()).await;
    f.allocate("RSP-100", true);
    let case = f
        .service
        .report_case(&investigator("FR-MTP"), susar_report("RSP-100"))
        .await
        .expect("reported");
    assert!(!case.late);
    let view = f
        .service
        .get_case(&safety_officer(), &case.case_id, 0)
        .await
        .expect("read");
    assert_eq!(view.obligations.len(), 1);
    assert_eq!(view.obligations[0].kind, ObligationKind::Initial15Day);
    assert_eq!(
        view.obligations[0].due_date,
        Date::new(2026, 12, 6).expect("d")
    );
    assert_eq!(
        view.obligations[0].due_at,
        "2026-12-06T23:00:00Z".parse::<Timestamp>().expect("t")
    );
}

#[tokio::test]
async fn with_the_regulatory_rules_a_submitted_seven_day_report_opens_its_follow_up() {
    let f = fixture_with(Rules::regulatory()).await;
    f.allocate("RSP-101", true);
    let mut fatal = susar_report("RSP-101");
    fatal.seriousness = Some(Seriousness {
        death: true,
        ..Seriousness::default()
    });
    f.service
        .report_case(&investigator("FR-MTP"), fatal)
        .await
        .expect("reported");
    let officer = safety_officer();
    let open = f
        .service
        .list_obligations(&officer, None, false)
        .await
        .expect("open");
    assert_eq!(open[0].kind, ObligationKind::Initial7Day);
    assert_eq!(open[0].due_date, Date::new(2026, 11, 28).expect("d"));
    f.service
        .record_submission(
            &officer,
            SubmissionInput {
                obligation_id: open[0].obligation_id.clone(),
                recipient: "EudraVigilance".into(),
                submitted_at: Some(f.now()),
                acknowledgement_id: String::new(),
            },
        )
        .await
        .expect("submitted");
    let open = f
        .service
        .list_obligations(&officer, None, false)
        .await
        .expect("open");
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].kind, ObligationKind::FollowUp8Day);
    assert_eq!(open[0].due_date, Date::new(2026, 11, 29).expect("d"));
}

#[tokio::test]
async fn with_the_regulatory_rules_lateness_and_the_e2b_message_come_from_the_rules() {
    let f = fixture_with(Rules::regulatory()).await;
    let mut report = susar_report("RSP-102");
    report.site_aware_at = Some("2026-11-20T09:59:59Z".parse().expect("t"));
    report.investigator_causality = None;
    let case = f
        .service
        .report_case(&investigator("FR-MTP"), report)
        .await
        .expect("reported");
    assert!(case.late, "24 h and 1 s after awareness");
    let exported = f
        .service
        .export_case(&safety_officer(), &case.case_id, 0)
        .await
        .expect("export");
    assert!(exported.xml.contains("MCCI_IN200100UV01"));
    assert!(exported.xml.contains(&case.case_id));
    assert!(exported.xml.contains("10013090"));
}

/// Ids that only look something up are bounded too: a refusal naming the
/// field, before any lookup or message echoes them (issue 7, item 7).
#[tokio::test]
async fn ids_in_lookups_are_bounded_and_named() {
    let f = fixture().await;
    let long = "C".repeat(65);
    let officer = safety_officer();
    let before = f.written().await;
    let refused = f
        .service
        .get_case(&officer, &long, 0)
        .await
        .expect_err("case id");
    assert_eq!(refused.fields(), vec!["case_id".to_owned()]);
    let refused = f
        .service
        .export_case(&officer, "case\nid", 1)
        .await
        .expect_err("case id");
    assert_eq!(refused.fields(), vec!["case_id".to_owned()]);
    let refused = f
        .service
        .list_cases(&officer, &long)
        .await
        .expect_err("trial id");
    assert_eq!(refused.fields(), vec!["trial_id".to_owned()]);
    let refused = f
        .service
        .list_obligations(&officer, Some(&long), false)
        .await
        .expect_err("trial id");
    assert_eq!(refused.fields(), vec!["trial_id".to_owned()]);
    let refused = f
        .service
        .safety_summary(&medical_monitor(), &long)
        .await
        .expect_err("trial id");
    assert_eq!(refused.fields(), vec!["trial_id".to_owned()]);
    let refused = f
        .service
        .record_submission(
            &officer,
            SubmissionInput {
                obligation_id: long.clone(),
                recipient: "EudraVigilance".into(),
                submitted_at: Some(f.now()),
                acknowledgement_id: "A".repeat(201),
            },
        )
        .await
        .expect_err("ids");
    assert_eq!(
        refused.fields(),
        vec!["obligation_id".to_owned(), "acknowledgement_id".to_owned()]
    );
    assert_eq!(f.written().await, before, "nothing written");
}
