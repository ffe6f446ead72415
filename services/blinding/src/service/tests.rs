//! The domain on a real in-memory SQLite store, with a small in-memory
//! stand-in for randomisation (the real port is a gRPC client tested end
//! to end elsewhere).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use equipoise_common::auth::{Role, TrialScope};
use equipoise_trial::examples::{FACET_CROSSOVER, RESPINE};

use super::*;
use crate::store::sqlite::SqliteStore;
use crate::store::{Notification, RevealKind};

const NOW: &str = "2027-01-10T12:00:00Z";

#[derive(Default)]
struct FakeRandomisation {
    trials: Mutex<HashMap<String, TrialForBlinding>>,
    allocations: Mutex<HashMap<(String, String), AllocatedArm>>,
    down: AtomicBool,
    /// Calls of `trial_for_blinding` so far.
    fetches: AtomicUsize,
}

impl FakeRandomisation {
    fn add_trial(&self, yaml: &str, version: u32) {
        let trial = parse_definition(yaml).expect("definition");
        let mut trials = self.trials.lock().expect("lock");
        trials.insert(
            trial.id.clone(),
            TrialForBlinding {
                trial_id: trial.id.clone(),
                version,
                state: TrialState::Active,
                definition_yaml: yaml.to_owned(),
                code_seed: [7; 32],
            },
        );
    }

    fn allocate(&self, trial_id: &str, subject_id: &str, site_id: &str, arm_id: &str, at: &str) {
        self.allocations.lock().expect("lock").insert(
            (trial_id.to_owned(), subject_id.to_owned()),
            AllocatedArm {
                trial_id: trial_id.into(),
                subject_id: subject_id.into(),
                site_id: site_id.into(),
                arm_id: arm_id.into(),
                randomised_at: Some(at.parse().expect("time")),
                randomised_in_error: false,
            },
        );
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

#[async_trait]
impl RandomisationLookup for FakeRandomisation {
    async fn trial_for_blinding(
        &self,
        trial_id: &str,
    ) -> std::result::Result<TrialForBlinding, LookupError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(LookupError::Unavailable("connection refused".into()));
        }
        let trials = self.trials.lock().expect("lock");
        trials.get(trial_id).cloned().ok_or(LookupError::NotFound)
    }

    async fn look_up_allocation(
        &self,
        trial_id: &str,
        subject_id: &str,
    ) -> std::result::Result<Option<AllocatedArm>, LookupError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(LookupError::Unavailable("connection refused".into()));
        }
        let allocations = self.allocations.lock().expect("lock");
        Ok(allocations
            .get(&(trial_id.to_owned(), subject_id.to_owned()))
            .cloned())
    }
}

struct Fixture {
    service: BlindingService,
    randomisation: Arc<FakeRandomisation>,
    now: Arc<Mutex<jiff::Timestamp>>,
}

async fn fixture() -> Fixture {
    let store = SqliteStore::in_memory().await.expect("store");
    let randomisation = Arc::new(FakeRandomisation::default());
    randomisation.add_trial(RESPINE, 1);
    randomisation.add_trial(FACET_CROSSOVER, 1);
    let now = Arc::new(Mutex::new(NOW.parse::<jiff::Timestamp>().expect("now")));
    let clock_now = Arc::clone(&now);
    let clock: Clock = Arc::new(move || *clock_now.lock().expect("clock"));
    let service = BlindingService::new(
        Arc::new(store),
        Arc::clone(&randomisation) as Arc<dyn RandomisationLookup>,
        clock,
        LowPoolRule {
            warn_at_fraction: 0.1,
            warn_at_count: 1,
        },
    );
    Fixture {
        service,
        randomisation,
        now,
    }
}

fn now_seconds() -> i64 {
    NOW.parse::<jiff::Timestamp>().expect("now").as_second()
}

fn caller(roles: &[Role], sites: &[&str], auth_time: Option<i64>) -> Caller {
    Caller {
        subject: "user-1".into(),
        display_name: "User One".into(),
        roles: roles.iter().cloned().collect(),
        sites: sites
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<BTreeSet<_>>(),
        trials: TrialScope::All,
        auth_time,
    }
}

fn service(name: &str) -> Caller {
    caller(&[Role::Service(name.into())], &[], None)
}

fn investigator(site: &str) -> Caller {
    caller(&[Role::SiteInvestigator], &[site], Some(now_seconds() - 60))
}

fn preparer(sites: &[&str]) -> Caller {
    caller(&[Role::UnblindedPreparer], sites, None)
}

impl Fixture {
    /// Allocates in randomisation and assigns the code, as randomisation does.
    async fn allocate(&self, trial: &str, subject: &str, site: &str, arm: &str) -> String {
        self.randomisation
            .allocate(trial, subject, site, arm, "2026-06-01T09:00:00Z");
        self.service
            .assign_code(&service("randomisation"), trial, subject, site, arm, None)
            .await
            .expect("assign")
            .code
    }

    async fn audit_len(&self) -> usize {
        self.service
            .store
            .audit_records(1, u32::MAX)
            .await
            .expect("audit")
            .len()
    }

    async fn notifications(&self, trial: &str) -> Vec<Notification> {
        self.service
            .store
            .notifications(trial, 0, 1000)
            .await
            .expect("notifications")
    }

    /// Nothing revealed for the subject and no notification for the trial.
    async fn assert_nothing_revealed(&self, trial: &str, subject: &str) {
        assert_eq!(
            self.service.store.reveals(trial, subject).await,
            Ok(Vec::new()),
            "no reveal"
        );
        assert_eq!(
            self.notifications(trial).await,
            Vec::new(),
            "no notification"
        );
    }
}

fn field_of(error: &BlindingError) -> Vec<String> {
    match error {
        BlindingError::InvalidArgument(problems) => {
            problems.iter().map(|p| p.path.clone()).collect()
        }
        _ => Vec::new(),
    }
}

// ------------------------------------------------------------------ codes

#[tokio::test]
async fn assign_code_generates_pools_once_and_a_retry_returns_the_same_code() {
    let f = fixture().await;
    let randomisation = service("randomisation");
    let first = f
        .service
        .assign_code(&randomisation, "RESPINE", "R-001", "FR-MTP", "MSC", None)
        .await
        .expect("assign");
    assert!(!first.replayed);
    let again = f
        .service
        .assign_code(&randomisation, "RESPINE", "R-001", "FR-MTP", "MSC", None)
        .await
        .expect("retry");
    assert_eq!(again.code, first.code);
    assert!(again.replayed);
    let pools = f.service.store.pool_counts("RESPINE").await.expect("pools");
    assert_eq!(pools.len(), 2);
    assert!(pools.values().all(|c| c.pool_size == 114), "{pools:?}");
    assert_eq!(
        f.service
            .store
            .definition("RESPINE")
            .await
            .expect("snapshot")
            .map(|s| s.version),
        Some(1)
    );
}

/// A burst of first calls at go-live: one generation, one fetch of the
/// trial, and every subject gets a distinct code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_calls_generate_the_pools_once() {
    let f = fixture().await;
    let blinding = Arc::new(f.service);
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..16 {
        let blinding = Arc::clone(&blinding);
        calls.spawn(async move {
            let arm = if n % 2 == 0 { "MSC" } else { "SHAM" };
            blinding
                .assign_code(
                    &service("randomisation"),
                    "RESPINE",
                    &format!("R-{n:03}"),
                    "FR-MTP",
                    arm,
                    None,
                )
                .await
        });
    }
    let mut codes = std::collections::BTreeSet::new();
    while let Some(joined) = calls.join_next().await {
        codes.insert(joined.expect("task").expect("assign").code);
    }
    assert_eq!(codes.len(), 16, "distinct codes");
    assert_eq!(
        f.randomisation.fetches.load(Ordering::SeqCst),
        1,
        "one generation"
    );
}

#[tokio::test]
async fn assign_code_is_for_the_randomisation_service_only() {
    let f = fixture().await;
    let user = caller(
        &[Role::TrialAdmin, Role::Statistician],
        &[],
        Some(now_seconds()),
    );
    for who in [user, service("safety")] {
        let refused = f
            .service
            .assign_code(&who, "RESPINE", "R-001", "FR-MTP", "MSC", None)
            .await;
        assert!(
            matches!(refused, Err(BlindingError::PermissionDenied(_))),
            "{refused:?}"
        );
    }
    assert_eq!(f.audit_len().await, 0, "nothing written");
    assert!(
        f.service
            .store
            .pool_counts("RESPINE")
            .await
            .expect("pools")
            .is_empty()
    );
}

fn upload_csv() -> String {
    "arm,code\nMSC,R-AAAAAA\nSHAM,R-BBBBBB\n".to_owned()
}

#[tokio::test]
async fn an_empty_pool_is_resource_exhausted_naming_the_trial_not_the_arm() {
    let f = fixture().await;
    let statistician = caller(&[Role::Statistician], &[], None);
    let summary = f
        .service
        .upload_codes(&statistician, "RESPINE", &upload_csv())
        .await
        .expect("upload");
    assert_eq!((summary.arms, summary.codes), (2, 2));
    f.allocate("RESPINE", "R-001", "FR-MTP", "MSC").await;
    let before = f.audit_len().await;
    let refused = f
        .service
        .assign_code(
            &service("randomisation"),
            "RESPINE",
            "R-002",
            "FR-MTP",
            "MSC",
            None,
        )
        .await;
    let Err(BlindingError::ResourceExhausted(message)) = refused else {
        panic!("expected ResourceExhausted, got {refused:?}");
    };
    assert!(message.contains("RESPINE"), "{message}");
    assert!(
        !message.contains("MSC") && !message.contains("SHAM"),
        "{message}"
    );
    assert_eq!(f.audit_len().await, before, "nothing written");
    assert_eq!(
        f.service.store.assignment("RESPINE", "R-002").await,
        Ok(None)
    );

    let status = f
        .service
        .blinding_status(&caller(&[Role::TrialAdmin], &[], None), "RESPINE")
        .await
        .expect("status");
    assert_eq!(status.pool_level, Some(crate::codes::PoolLevel::Empty));
    assert_eq!(status.codes_assigned, 1);
}

#[tokio::test]
async fn uploads_are_for_statisticians_and_whole_pools_cover_every_arm() {
    let f = fixture().await;
    let refused = f
        .service
        .upload_codes(
            &caller(&[Role::TrialAdmin], &[], None),
            "RESPINE",
            &upload_csv(),
        )
        .await;
    assert!(matches!(refused, Err(BlindingError::PermissionDenied(_))));
    let statistician = caller(&[Role::Statistician], &[], None);
    let bad = f
        .service
        .upload_codes(&statistician, "RESPINE", "arm,code\nMSC,R-AAAAAA\n")
        .await;
    assert_eq!(bad.as_ref().map_err(field_of), Err(vec!["csv".to_owned()]));
    f.allocate("RESPINE", "R-001", "FR-MTP", "MSC").await;
    // Once pools exist (generated here) an upload is a top-up, and the
    // same codes a second time clash.
    let topped_up = f
        .service
        .upload_codes(&statistician, "RESPINE", &upload_csv())
        .await
        .expect("top up generated pools");
    assert_eq!((topped_up.arms, topped_up.codes), (2, 2));
    let again = f
        .service
        .upload_codes(&statistician, "RESPINE", &upload_csv())
        .await;
    assert_eq!(
        again.as_ref().map_err(field_of),
        Err(vec!["csv".to_owned()])
    );
}

fn top_up_refusal(result: Result<UploadSummary>) -> String {
    match result {
        Err(BlindingError::InvalidArgument(problems)) => problems
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect::<Vec<_>>()
            .join("\n"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

/// A statistician tops up an emptied pool: the status recovers and both
/// arms are given codes again, the new ones after the old. Others may not
/// top up, and a code the trial already has, in either arm, is refused by
/// its row without naming that arm.
#[tokio::test]
async fn a_statistician_tops_up_an_empty_pool_and_assignment_resumes() {
    let f = fixture().await;
    let statistician = caller(&[Role::Statistician], &[], None);
    let admin = caller(&[Role::TrialAdmin], &[], None);
    f.service
        .upload_codes(&statistician, "RESPINE", &upload_csv())
        .await
        .expect("upload");
    f.allocate("RESPINE", "R-001", "FR-MTP", "MSC").await;
    let status = f
        .service
        .blinding_status(&admin, "RESPINE")
        .await
        .expect("status");
    assert_eq!(status.pool_level, Some(crate::codes::PoolLevel::Empty));

    let top_up = "arm,code\nMSC,R-DDDDDD\nMSC,R-EEEEEE\nSHAM,R-FFFFFF\n";
    let before = f.audit_len().await;
    for roles in [
        &[Role::TrialAdmin][..],
        &[Role::MedicalMonitor],
        &[Role::EmergencyDesk],
    ] {
        let refused = f
            .service
            .upload_codes(&caller(roles, &[], None), "RESPINE", top_up)
            .await;
        assert!(
            matches!(refused, Err(BlindingError::PermissionDenied(_))),
            "{roles:?}: {refused:?}"
        );
    }

    // R-AAAAAA is MSC's, R-BBBBBB SHAM's: each clash is named by its row
    // only, and the good row beside them is not stored.
    let clash = f
        .service
        .upload_codes(
            &statistician,
            "RESPINE",
            "arm,code\nMSC,R-DDDDDD\nMSC,R-BBBBBB\nSHAM,R-AAAAAA\n",
        )
        .await;
    let message = top_up_refusal(clash);
    assert!(
        message.contains("row 2: code 'R-BBBBBB' is already in the trial's pools"),
        "{message}"
    );
    assert!(
        message.contains("row 3: code 'R-AAAAAA' is already in the trial's pools"),
        "{message}"
    );
    assert!(!message.contains("row 1"), "{message}");
    for arm in ["MSC", "SHAM", "Sham", "BM-MSC"] {
        assert!(!message.contains(arm), "'{arm}' named: {message}");
    }
    assert_eq!(f.service.store.code("RESPINE", "R-DDDDDD").await, Ok(None));
    assert_eq!(f.audit_len().await, before, "nothing written");

    let summary = f
        .service
        .upload_codes(&statistician, "RESPINE", top_up)
        .await
        .expect("top up");
    assert_eq!((summary.arms, summary.codes), (2, 3));
    assert_eq!(f.audit_len().await, before + 1);
    let record = f
        .service
        .store
        .audit_records(1, u32::MAX)
        .await
        .expect("audit")
        .pop()
        .expect("a record");
    assert_eq!(record.entry.action, "pools.topped_up");
    assert_eq!(
        record.entry.details,
        json!({ "codes": 3, "codes_sha256": summary.codes_sha256 }),
        "counts and the upload's digest only, never arms"
    );
    let status = f
        .service
        .blinding_status(&admin, "RESPINE")
        .await
        .expect("status");
    assert_eq!(status.pool_level, Some(crate::codes::PoolLevel::Sufficient));

    let mut codes = Vec::new();
    for (subject, arm) in [("R-002", "MSC"), ("R-003", "SHAM"), ("R-004", "SHAM")] {
        codes.push(f.allocate("RESPINE", subject, "FR-MTP", arm).await);
    }
    assert_eq!(codes, ["R-DDDDDD", "R-BBBBBB", "R-FFFFFF"]);

    // A top-up of one arm is enough when only that arm runs low.
    let summary = f
        .service
        .upload_codes(&statistician, "RESPINE", "arm,code\nSHAM,R-GGGGGG\n")
        .await
        .expect("top up one arm");
    assert_eq!((summary.arms, summary.codes), (1, 1));
    assert_eq!(
        f.allocate("RESPINE", "R-005", "FR-MTP", "SHAM").await,
        "R-GGGGGG"
    );
}

// -------------------------------------------------------------- emergency

fn one(subject: &str) -> Vec<String> {
    vec![subject.to_owned()]
}

#[tokio::test]
async fn an_investigator_unblinds_their_own_subject_and_the_sponsor_is_notified() {
    let f = fixture().await;
    f.allocate("RESPINE", "R-001", "FR-MTP", "SHAM").await;
    let before = f.audit_len().await;
    let reveal = f
        .service
        .emergency_unblind(
            &investigator("FR-MTP"),
            "RESPINE",
            &one("R-001"),
            Some(ReasonCategory::SeriousAdverseEvent),
            "  anaphylaxis after injection  ",
        )
        .await
        .expect("unblind");
    assert_eq!(reveal.arm_id, "SHAM");
    assert_eq!(reveal.arm_label, "Sham paravertebral injection");
    assert_eq!(reveal.state, BlindingState::UnblindedEmergency);
    assert!(reveal.continues_in_trial);
    assert_eq!(f.audit_len().await, before + 1);
    let audit = f
        .service
        .store
        .audit_records(1, u32::MAX)
        .await
        .expect("audit");
    let last = audit.last().expect("record");
    assert_eq!(u64::try_from(last.seq).ok(), Some(reveal.audit_seq));
    assert!(!last.entry.details.to_string().contains("SHAM"));
    let stored = f
        .service
        .store
        .reveals("RESPINE", "R-001")
        .await
        .expect("reveals");
    assert_eq!(
        stored[0].reason.as_deref(),
        Some("anaphylaxis after injection")
    );
    let notifications = f.notifications("RESPINE").await;
    assert_eq!(notifications.len(), 1);
    assert_eq!(notifications[0].site_id, "FR-MTP");
    assert_eq!(
        notifications[0].reason_category.as_deref(),
        Some("serious_adverse_event")
    );
    assert!(!format!("{notifications:?}").contains("SHAM"));
}

#[tokio::test]
async fn bad_emergency_requests_are_refused_and_reveal_nothing() {
    let f = fixture().await;
    f.allocate("RESPINE", "R-001", "FR-MTP", "MSC").await;
    f.allocate("RESPINE", "R-002", "FR-MTP", "SHAM").await;
    let desk = caller(&[Role::EmergencyDesk], &[], Some(now_seconds()));
    let sae = Some(ReasonCategory::SeriousAdverseEvent);
    let cases: Vec<(Vec<String>, Option<ReasonCategory>, &str, &str)> = vec![
        (one("R-001"), sae, "   ", "reason"),
        // Nine characters; padding does not count towards the minimum.
        (one("R-001"), sae, "too brief", "reason"),
        (one("R-001"), sae, "  too brief  ", "reason"),
        (one("R-001"), sae, "", "reason"),
        (one("R-001"), None, "anaphylaxis", "reason_category"),
        (
            vec!["R-001".into(), "R-002".into()],
            sae,
            "anaphylaxis",
            "subject_ids",
        ),
        (Vec::new(), sae, "anaphylaxis", "subject_ids"),
    ];
    for (subjects, category, reason, field) in cases {
        let refused = f
            .service
            .emergency_unblind(&desk, "RESPINE", &subjects, category, reason)
            .await
            .expect_err("refused");
        assert_eq!(field_of(&refused), vec![field.to_owned()], "{refused:?}");
    }
    let long = "x".repeat(MAX_REASON_CHARS + 1);
    let refused = f
        .service
        .emergency_unblind(&desk, "RESPINE", &one("R-001"), sae, &long)
        .await
        .expect_err("too long");
    assert_eq!(field_of(&refused), vec!["reason".to_owned()]);

    let stale = caller(&[Role::EmergencyDesk], &[], Some(now_seconds() - 11 * 60));
    let never = caller(&[Role::EmergencyDesk], &[], None);
    for who in [stale, never] {
        let refused = f
            .service
            .emergency_unblind(&who, "RESPINE", &one("R-001"), sae, "anaphylaxis")
            .await;
        let Err(BlindingError::Unauthenticated(message)) = refused else {
            panic!("expected Unauthenticated, got {refused:?}");
        };
        assert!(message.contains("re-authentication"), "{message}");
    }
    let coordinator = caller(&[Role::SiteCoordinator], &["FR-MTP"], Some(now_seconds()));
    let refused = f
        .service
        .emergency_unblind(&coordinator, "RESPINE", &one("R-001"), sae, "anaphylaxis")
        .await;
    assert!(matches!(refused, Err(BlindingError::PermissionDenied(_))));
    f.assert_nothing_revealed("RESPINE", "R-001").await;
    f.assert_nothing_revealed("RESPINE", "R-002").await;
}

/// A role no definition may name is refused before the request is read:
/// PERMISSION_DENIED whatever the request (not INVALID_ARGUMENT for an empty
/// one), and an emergency attempt is still audited.
#[tokio::test]
async fn roles_that_can_never_unblind_are_refused_before_the_request_is_read() {
    let f = fixture().await;
    f.allocate("FACET-X", "F-001", "US-ROC", "DMSO").await;
    let sae = Some(ReasonCategory::SeriousAdverseEvent);
    for role in [
        Role::TrialAdmin,
        Role::Statistician,
        Role::Auditor,
        Role::Dsmb,
    ] {
        let who = caller(std::slice::from_ref(&role), &[], Some(now_seconds()));
        let before = f.audit_len().await;
        let empty = f
            .service
            .emergency_unblind(&who, "FACET-X", &[], None, "")
            .await;
        assert!(
            matches!(empty, Err(BlindingError::PermissionDenied(_))),
            "{role}: {empty:?}"
        );
        assert_eq!(
            f.audit_len().await,
            before + 1,
            "{role}: the attempt is audited"
        );
        let planned = f
            .service
            .planned_period_reveal(&who, "FACET-X", "F-001", "")
            .await;
        assert!(
            matches!(planned, Err(BlindingError::PermissionDenied(_))),
            "{role}: {planned:?}"
        );
        let unknown_trial = f
            .service
            .emergency_unblind(&who, "", &one("F-001"), sae, "anaphylaxis")
            .await;
        assert!(matches!(
            unknown_trial,
            Err(BlindingError::PermissionDenied(_))
        ));
        assert_eq!(f.audit_len().await, before + 1, "no trial, no audit record");
    }
    f.assert_nothing_revealed("FACET-X", "F-001").await;
}

/// The candidate lists mirror what the definition parser lets a trial
/// name: a role outside them is refused by the parser, one inside accepted.
#[test]
fn the_reveal_candidates_are_exactly_the_roles_a_definition_may_name() {
    use super::access::{EMERGENCY_CANDIDATES, PLANNED_REVEAL_CANDIDATES};
    let emergency = "emergency_roles: [site_investigator, emergency_desk, medical_monitor]";
    let planned = "planned_unblinding_at_start: true }";
    assert!(RESPINE.contains(emergency) && FACET_CROSSOVER.contains(planned));
    for role in &Role::USER_ROLES {
        let named = RESPINE.replace(emergency, &format!("emergency_roles: [{role}]"));
        assert_eq!(
            equipoise_trial::parse_definition(&named).is_ok(),
            EMERGENCY_CANDIDATES.contains(role),
            "emergency_roles: [{role}]"
        );
        let named = FACET_CROSSOVER.replace(
            planned,
            &format!("planned_unblinding_at_start: true, planned_unblinding_roles: [{role}] }}"),
        );
        assert_eq!(
            equipoise_trial::parse_definition(&named).is_ok(),
            PLANNED_REVEAL_CANDIDATES.contains(role),
            "planned_unblinding_roles: [{role}]"
        );
    }
}

/// The auditor reads the blinding status, with no deviation count.
#[tokio::test]
async fn the_auditor_reads_the_blinding_status_without_deviations() {
    let f = fixture().await;
    f.allocate("RESPINE", "R-001", "FR-MTP", "MSC").await;
    let auditor = caller(&[Role::Auditor], &[], Some(now_seconds()));
    let status = f
        .service
        .blinding_status(&auditor, "RESPINE")
        .await
        .expect("the auditor reads the status");
    assert_eq!(status.codes_assigned, 1);
    assert_eq!(status.deviations, 0);
}

#[tokio::test]
async fn another_sites_subject_is_answered_as_an_unknown_subject() {
    let f = fixture().await;
    f.allocate("RESPINE", "R-001", "FR-PAR", "MSC").await;
    let sae = Some(ReasonCategory::SeriousAdverseEvent);
    let before = f.audit_len().await;
    let other_site = f
        .service
        .emergency_unblind(
            &investigator("FR-MTP"),
            "RESPINE",
            &one("R-001"),
            sae,
            "anaphylaxis",
        )
        .await
        .expect_err("refused");
    let unknown = f
        .service
        .emergency_unblind(
            &investigator("FR-MTP"),
            "RESPINE",
            &one("R-999"),
            sae,
            "anaphylaxis",
        )
        .await
        .expect_err("refused");
    let other_site = other_site.to_string().replace("R-001", "R-?");
    let unknown = unknown.to_string().replace("R-999", "R-?");
    assert_eq!(other_site, unknown);
    assert_eq!(f.audit_len().await, before + 2, "both refusals audited");
    f.assert_nothing_revealed("RESPINE", "R-001").await;

    let view_other = f
        .service
        .subject_blinding(&investigator("FR-MTP"), "RESPINE", "R-001")
        .await
        .expect_err("hidden")
        .to_string()
        .replace("R-001", "R-?");
    let view_unknown = f
        .service
        .subject_blinding(&investigator("FR-MTP"), "RESPINE", "R-999")
        .await
        .expect_err("unknown")
        .to_string()
        .replace("R-999", "R-?");
    assert_eq!(view_other, view_unknown);
}

#[tokio::test]
async fn a_pending_subject_is_unblinded_from_randomisation_and_a_stored_definition_serves_while_it_is_down()
 {
    let f = fixture().await;
    f.allocate("RESPINE", "R-001", "FR-MTP", "MSC").await;
    // R-002 committed in randomisation, its code still pending.
    f.randomisation
        .allocate("RESPINE", "R-002", "FR-MTP", "SHAM", "2026-06-02T09:00:00Z");
    let desk = caller(&[Role::EmergencyDesk], &[], Some(now_seconds()));
    let sae = Some(ReasonCategory::SeriousAdverseEvent);
    let pending = f
        .service
        .emergency_unblind(&desk, "RESPINE", &one("R-002"), sae, "anaphylaxis")
        .await
        .expect("pending subject");
    assert_eq!(pending.arm_id, "SHAM");

    f.randomisation.set_down(true);
    let offline = f
        .service
        .emergency_unblind(&desk, "RESPINE", &one("R-001"), sae, "anaphylaxis")
        .await
        .expect("from the snapshot");
    assert_eq!(offline.arm_id, "MSC");
    let unknown_trial = f
        .service
        .emergency_unblind(&desk, "FACET-X", &one("F-001"), sae, "anaphylaxis")
        .await;
    assert!(
        matches!(unknown_trial, Err(BlindingError::Unavailable { .. })),
        "{unknown_trial:?}"
    );
}

#[tokio::test]
async fn withdraw_after_emergency_unblinding_ends_participation() {
    let f = fixture().await;
    let withdraw = RESPINE.replace("version: 1", "version: 2").replace(
        "after_emergency_unblinding: continue",
        "after_emergency_unblinding: withdraw",
    );
    f.allocate("RESPINE", "R-001", "FR-MTP", "MSC").await;
    f.randomisation.add_trial(&withdraw, 2);
    let reveal = f
        .service
        .emergency_unblind(
            &caller(&[Role::MedicalMonitor], &[], Some(now_seconds())),
            "RESPINE",
            &one("R-001"),
            Some(ReasonCategory::Pregnancy),
            "pregnancy confirmed at week 6",
        )
        .await
        .expect("unblind");
    assert!(!reveal.continues_in_trial);
    assert_eq!(
        f.service
            .store
            .definition("RESPINE")
            .await
            .expect("read")
            .map(|s| s.version),
        Some(2),
        "the snapshot was refreshed"
    );
}

// ------------------------------------------------------------ other reveals

#[tokio::test]
async fn safety_reveals_are_for_the_safety_service_with_a_case() {
    let f = fixture().await;
    f.allocate("RESPINE", "R-001", "FR-MTP", "SHAM").await;
    let officer = caller(&[Role::SafetyOfficer], &[], Some(now_seconds()));
    let refused = f
        .service
        .safety_reveal(&officer, "RESPINE", "R-001", "CASE-1")
        .await;
    assert!(matches!(refused, Err(BlindingError::PermissionDenied(_))));
    let refused = f
        .service
        .safety_reveal(&service("safety"), "RESPINE", "R-001", " ")
        .await
        .expect_err("no case");
    assert_eq!(field_of(&refused), vec!["case_id".to_owned()]);
    f.assert_nothing_revealed("RESPINE", "R-001").await;

    let shown = f
        .service
        .safety_reveal(&service("safety"), "RESPINE", "R-001", "CASE-1")
        .await
        .expect("reveal");
    assert_eq!((shown.arm_id.as_str(), shown.active), ("SHAM", false));
    let notifications = f.notifications("RESPINE").await;
    assert_eq!(notifications.len(), 1);
    assert_eq!(notifications[0].kind, RevealKind::SafetyReview);
    assert_eq!(notifications[0].reason_category, None);
    let view = f
        .service
        .subject_blinding(&investigator("FR-MTP"), "RESPINE", "R-001")
        .await
        .expect("view");
    assert_eq!(
        view.state,
        BlindingState::Blinded,
        "a safety review leaves the blind"
    );
}

// ------------------------------------------------------------------ DSMB

fn ids(subjects: &[&str]) -> Vec<String> {
    subjects.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn dsmb_arms_are_for_the_safety_service_only() {
    let f = fixture().await;
    f.allocate("RESPINE", "R-001", "FR-MTP", "SHAM").await;
    let before = f.audit_len().await;
    let users = [
        Role::Dsmb,
        Role::SafetyOfficer,
        Role::MedicalMonitor,
        Role::Statistician,
        Role::TrialAdmin,
        Role::EmergencyDesk,
        Role::SiteInvestigator,
        Role::SiteCoordinator,
        Role::UnblindedPreparer,
    ];
    for role in users {
        let user = caller(
            std::slice::from_ref(&role),
            &["FR-MTP"],
            Some(now_seconds()),
        );
        let refused = f
            .service
            .arms_for_dsmb(&user, "RESPINE", &ids(&["R-001"]))
            .await;
        assert!(
            matches!(refused, Err(BlindingError::PermissionDenied(_))),
            "{role:?}"
        );
    }
    let refused = f
        .service
        .arms_for_dsmb(&service("randomisation"), "RESPINE", &ids(&["R-001"]))
        .await;
    assert!(matches!(refused, Err(BlindingError::PermissionDenied(_))));
    assert_eq!(f.audit_len().await, before, "nothing audited for a refusal");
}

#[tokio::test]
async fn dsmb_arms_leave_out_uncoded_subjects_and_audit_only_a_count() {
    let f = fixture().await;
    f.allocate("RESPINE", "R-001", "FR-MTP", "SHAM").await;
    f.allocate("RESPINE", "R-002", "FR-PAR", "MSC").await;
    // Randomised, code still pending: left out like an unknown subject.
    f.randomisation
        .allocate("RESPINE", "R-003", "FR-MTP", "MSC", "2026-06-02T09:00:00Z");
    let before = f.audit_len().await;
    let arms = f
        .service
        .arms_for_dsmb(
            &service("safety"),
            "RESPINE",
            &ids(&["R-002", "R-003", "R-999", "R-001", "R-002"]),
        )
        .await
        .expect("arms");
    let shown: Vec<(&str, &str, &str)> = arms
        .iter()
        .map(|a| {
            (
                a.subject_id.as_str(),
                a.arm_id.as_str(),
                a.arm_label.as_str(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("R-002", "MSC", "BM-MSC 20e6 cells in 2 ml, intradiscal"),
            ("R-001", "SHAM", "Sham paravertebral injection"),
        ]
    );
    assert!(!format!("{arms:?}").contains("SHAM"), "Debug hides the arm");

    let audit = f
        .service
        .store
        .audit_records(1, u32::MAX)
        .await
        .expect("audit");
    assert_eq!(audit.len(), before + 1, "one audit record");
    let last = &audit.last().expect("record").entry;
    assert_eq!(last.action, "reveal.dsmb");
    assert_eq!(last.entity, "trial/RESPINE");
    assert_eq!(last.details, json!({ "kind": "dsmb", "subjects": 2 }));
    for subject in ["R-001", "R-002", "R-003", "R-999"] {
        f.assert_nothing_revealed("RESPINE", subject).await;
    }

    let none = f
        .service
        .arms_for_dsmb(&service("safety"), "RESPINE", &[])
        .await
        .expect("no subjects");
    assert!(none.is_empty());
}

#[tokio::test]
async fn dsmb_requests_are_bounded_and_every_id_checked_before_any_audit() {
    let f = fixture().await;
    f.allocate("RESPINE", "R-001", "FR-MTP", "SHAM").await;
    let before = f.audit_len().await;
    let too_many: Vec<String> = (0..=MAX_DSMB_SUBJECTS).map(|i| format!("R-{i}")).collect();
    let refused = f
        .service
        .arms_for_dsmb(&service("safety"), "RESPINE", &too_many)
        .await
        .expect_err("too many");
    assert_eq!(field_of(&refused), vec!["subject_ids".to_owned()]);

    let long = "R".repeat(MAX_IDENTIFIER_CHARS + 1);
    let refused = f
        .service
        .arms_for_dsmb(
            &service("safety"),
            "RESPINE",
            &ids(&["R-001", "R 002", " ", &long, "R-<script>"]),
        )
        .await
        .expect_err("bad ids");
    assert_eq!(
        field_of(&refused),
        [
            "subject_ids[1]",
            "subject_ids[2]",
            "subject_ids[3]",
            "subject_ids[4]"
        ]
    );
    assert_eq!(f.audit_len().await, before, "nothing audited");

    let unknown = f
        .service
        .arms_for_dsmb(&service("safety"), "NO-SUCH-TRIAL", &ids(&["R-001"]))
        .await;
    assert!(matches!(unknown, Err(BlindingError::NotFound(_))));

    let most: Vec<String> = (0..MAX_DSMB_SUBJECTS)
        .map(|i| format!("R-{i:03}"))
        .collect();
    let arms = f
        .service
        .arms_for_dsmb(&service("safety"), "RESPINE", &most)
        .await
        .expect("10,000 subjects");
    assert_eq!(arms.len(), 1);
    assert_eq!(arms[0].subject_id, "R-001");
}

#[tokio::test]
async fn dsmb_arms_are_answered_from_the_stored_definition_while_randomisation_is_down() {
    let f = fixture().await;
    f.allocate("RESPINE", "R-001", "FR-MTP", "MSC").await;
    f.randomisation.set_down(true);
    let arms = f
        .service
        .arms_for_dsmb(&service("safety"), "RESPINE", &ids(&["R-001"]))
        .await
        .expect("arms");
    assert_eq!(arms.len(), 1);
    assert_eq!(arms[0].arm_label, "BM-MSC 20e6 cells in 2 ml, intradiscal");
}

#[tokio::test]
async fn preparation_instructions_are_for_the_subjects_preparer_only() {
    let f = fixture().await;
    let code = f.allocate("RESPINE", "R-001", "FR-MTP", "MSC").await;
    let facet_code = f.allocate("FACET-X", "F-001", "US-ROC", "MSC").await;

    let shown = f
        .service
        .preparation_instruction(&preparer(&["FR-MTP"]), "RESPINE", &code)
        .await
        .expect("own site");
    assert_eq!(shown.prepare, "BM-MSC 20e6 cells in 2 ml, intradiscal");
    assert_eq!(shown.subject_id, "R-001");
    let central = f
        .service
        .preparation_instruction(&preparer(&["*"]), "RESPINE", &code)
        .await
        .expect("central pharmacy");
    assert_eq!(central.arm_id, "MSC");
    assert!(
        f.notifications("RESPINE").await.is_empty(),
        "no notification"
    );
    let reveals = f
        .service
        .store
        .reveals("RESPINE", "R-001")
        .await
        .expect("read")
        .len();
    assert_eq!(reveals, 2);

    let before = f.audit_len().await;
    let other_trial = f
        .service
        .preparation_instruction(&preparer(&["*"]), "RESPINE", &facet_code)
        .await
        .expect_err("another trial's code");
    assert_eq!(
        other_trial.to_string(),
        format!("no code '{facet_code}' in trial RESPINE")
    );
    let other_site = f
        .service
        .preparation_instruction(&preparer(&["FR-PAR"]), "RESPINE", &code)
        .await
        .expect_err("another site");
    assert_eq!(
        other_site.to_string(),
        format!("no code '{code}' in trial RESPINE")
    );
    assert_eq!(f.audit_len().await, before + 2, "refusals audited");
    let site = f
        .service
        .preparation_instruction(&investigator("FR-MTP"), "RESPINE", &code)
        .await;
    assert!(matches!(site, Err(BlindingError::PermissionDenied(_))));
    assert_eq!(
        f.service
            .store
            .reveals("RESPINE", "R-001")
            .await
            .expect("read")
            .len(),
        reveals,
        "nothing revealed on refusal"
    );
    f.assert_nothing_revealed("FACET-X", "F-001").await;
}

#[tokio::test]
async fn given_treatment_is_recorded_against_the_crossover_arm() {
    let f = fixture().await;
    f.allocate("FACET-X", "F-001", "US-ROC", "DMSO").await;
    let pharmacy = preparer(&["US-ROC"]);
    let blinded = f
        .service
        .record_given_treatment(&pharmacy, "FACET-X", "F-001", "blinded", "DMSO", "")
        .await
        .expect("period 1");
    assert_eq!(
        (blinded.assigned_arm_id.as_str(), blinded.deviation),
        ("DMSO", false)
    );
    let crossed = f
        .service
        .record_given_treatment(
            &pharmacy,
            "FACET-X",
            "F-001",
            "crossover",
            "DMSO",
            "kit mix-up",
        )
        .await
        .expect("period 2");
    assert_eq!(
        (crossed.assigned_arm_id.as_str(), crossed.deviation),
        ("MSC", true)
    );
    let again = f
        .service
        .record_given_treatment(
            &pharmacy,
            "FACET-X",
            "F-001",
            "crossover",
            "DMSO",
            "kit mix-up",
        )
        .await
        .expect("idempotent");
    assert_eq!(again, crossed);
    let before = f.audit_len().await;
    let differing = f
        .service
        .record_given_treatment(&pharmacy, "FACET-X", "F-001", "crossover", "MSC", "")
        .await;
    assert!(
        matches!(differing, Err(BlindingError::FailedPrecondition(_))),
        "{differing:?}"
    );
    for (period, arm, field) in [
        ("nope", "MSC", "period_id"),
        ("blinded", "XYZ", "given_arm_id"),
    ] {
        let refused = f
            .service
            .record_given_treatment(&pharmacy, "FACET-X", "F-001", period, arm, "")
            .await
            .expect_err("refused");
        assert_eq!(field_of(&refused), vec![field.to_owned()]);
    }
    let elsewhere = f
        .service
        .record_given_treatment(
            &preparer(&["FR-MTP"]),
            "FACET-X",
            "F-001",
            "blinded",
            "MSC",
            "",
        )
        .await;
    assert!(matches!(elsewhere, Err(BlindingError::NotFound(_))));
    assert_eq!(f.audit_len().await, before, "nothing written");

    // Deviations hint at the arms: counted for unblinded roles only.
    for (role, seen) in [
        (Role::Statistician, 0),
        (Role::TrialAdmin, 0),
        (Role::MedicalMonitor, 1),
        (Role::EmergencyDesk, 1),
    ] {
        let status = f
            .service
            .blinding_status(&caller(std::slice::from_ref(&role), &[], None), "FACET-X")
            .await
            .expect("status");
        assert_eq!(status.deviations, seen, "{role}");
    }
    for (role, unblinded) in [
        (Role::Statistician, false),
        (Role::TrialAdmin, false),
        (Role::MedicalMonitor, true),
        (Role::EmergencyDesk, true),
    ] {
        let view = f
            .service
            .subject_blinding(
                &caller(std::slice::from_ref(&role), &[], None),
                "FACET-X",
                "F-001",
            )
            .await
            .expect("sponsor view");
        assert_eq!(view.periods[1].deviation, unblinded, "{role}");
        assert_eq!(view.periods[1].given_arm_id.is_some(), unblinded, "{role}");
        assert_eq!(
            view.periods[1].assigned_arm_id.as_deref(),
            unblinded.then_some("MSC"),
            "{role}"
        );
    }
    let own = f
        .service
        .subject_blinding(&pharmacy, "FACET-X", "F-001")
        .await
        .expect("preparer view");
    assert_eq!(own.periods[1].given_arm_id.as_deref(), Some("DMSO"));
    let site = f
        .service
        .subject_blinding(&investigator("US-ROC"), "FACET-X", "F-001")
        .await
        .expect("site view");
    assert!(
        site.periods
            .iter()
            .all(|p| p.assigned_arm_id.is_none() && p.given_arm_id.is_none() && !p.deviation)
    );
    assert_eq!(
        site.periods[1].planned_reveal_at.as_deref(),
        Some("2026-12-01T09:00:00Z")
    );
}

#[tokio::test]
async fn the_planned_reveal_waits_for_its_period_and_its_roles() {
    let f = fixture().await;
    // Randomised 2026-06-01: the crossover period starts 2026-12-01.
    f.allocate("FACET-X", "F-001", "US-ROC", "DMSO").await;
    *f.now.lock().expect("clock") = "2026-11-30T23:59:59Z".parse().expect("time");
    let early = f
        .service
        .planned_period_reveal(&investigator("US-ROC"), "FACET-X", "F-001", "crossover")
        .await;
    let Err(BlindingError::FailedPrecondition(message)) = early else {
        panic!("expected FailedPrecondition, got {early:?}");
    };
    assert!(message.contains("2026-12-01T09:00:00Z"), "{message}");
    *f.now.lock().expect("clock") = "2026-12-01T09:00:00Z".parse().expect("time");
    let desk = caller(&[Role::EmergencyDesk], &[], Some(now_seconds()));
    let refused = f
        .service
        .planned_period_reveal(&desk, "FACET-X", "F-001", "crossover")
        .await;
    assert!(matches!(refused, Err(BlindingError::PermissionDenied(_))));
    let no_plan = f
        .service
        .planned_period_reveal(&investigator("US-ROC"), "FACET-X", "F-001", "blinded")
        .await;
    assert!(matches!(no_plan, Err(BlindingError::FailedPrecondition(_))));
    let other_site = f
        .service
        .planned_period_reveal(&investigator("FR-MTP"), "FACET-X", "F-001", "crossover")
        .await;
    assert!(matches!(other_site, Err(BlindingError::NotFound(_))));
    f.assert_nothing_revealed("FACET-X", "F-001").await;

    let reveal = f
        .service
        .planned_period_reveal(&investigator("US-ROC"), "FACET-X", "F-001", "crossover")
        .await
        .expect("reveal");
    assert_eq!(reveal.arm_id, "DMSO");
    assert_eq!(reveal.state, BlindingState::UnblindedPlanned);
    let notifications = f.notifications("FACET-X").await;
    assert_eq!(notifications.len(), 1);
    assert_eq!(notifications[0].kind, RevealKind::PlannedPeriod);
}

// ------------------------------------------------------------------- watch

#[tokio::test]
async fn watchers_resume_after_their_cursor_and_see_only_their_sites() {
    let f = fixture().await;
    let desk = caller(&[Role::EmergencyDesk], &[], Some(now_seconds()));
    let sae = Some(ReasonCategory::SeriousAdverseEvent);
    for (subject, site) in [
        ("R-001", "FR-MTP"),
        ("R-002", "FR-PAR"),
        ("R-003", "FR-MTP"),
    ] {
        f.allocate("RESPINE", subject, site, "MSC").await;
        f.service
            .emergency_unblind(&desk, "RESPINE", &one(subject), sae, "anaphylaxis")
            .await
            .expect("unblind");
    }
    let monitor = caller(&[Role::TrialAdmin], &[], None);
    let all = f
        .service
        .watch_unblindings(&monitor, "RESPINE", 0)
        .await
        .expect("all");
    assert_eq!(all.len(), 3);
    let rest = f
        .service
        .watch_unblindings(&monitor, "RESPINE", all[0].cursor)
        .await
        .expect("rest");
    assert_eq!(rest, all[1..].to_vec(), "nothing missed, nothing twice");
    let site = f
        .service
        .watch_unblindings(&investigator("FR-MTP"), "RESPINE", 0)
        .await
        .expect("site");
    let subjects: Vec<&str> = site.iter().map(|n| n.subject_id.as_str()).collect();
    assert_eq!(subjects, ["R-001", "R-003"]);
    for who in [preparer(&[]), caller(&[Role::Dsmb], &[], None)] {
        let refused = f.service.watch_unblindings(&who, "RESPINE", 0).await;
        assert!(matches!(refused, Err(BlindingError::PermissionDenied(_))));
    }
    let status = f
        .service
        .blinding_status(&monitor, "RESPINE")
        .await
        .expect("status");
    assert_eq!(status.emergency_unblindings, 3);
}

// ----------------------------------------------------------------- masking

/// Whatever a blinded role can reach names no arm of RESPINE: neither id
/// nor label, in values or in refusals.
#[tokio::test]
async fn blinded_roles_never_see_an_arm() {
    let f = fixture().await;
    let code = f.allocate("RESPINE", "R-001", "FR-MTP", "MSC").await;
    f.allocate("RESPINE", "R-002", "FR-MTP", "SHAM").await;
    let desk = caller(&[Role::EmergencyDesk], &[], Some(now_seconds()));
    let sae = Some(ReasonCategory::SeriousAdverseEvent);
    f.service
        .emergency_unblind(&desk, "RESPINE", &one("R-001"), sae, "anaphylaxis")
        .await
        .expect("unblind");
    f.service
        .safety_reveal(&service("safety"), "RESPINE", "R-002", "CASE-1")
        .await
        .expect("safety");

    let mut seen = Vec::new();
    let blinded = [
        investigator("FR-MTP"),
        caller(&[Role::SiteCoordinator], &["FR-MTP"], Some(now_seconds())),
        caller(&[Role::TrialAdmin], &[], None),
        caller(&[Role::Statistician], &[], None),
        caller(&[Role::Dsmb], &[], None),
    ];
    for who in &blinded {
        for subject in ["R-001", "R-002"] {
            seen.push(format!(
                "{:?}",
                f.service.subject_blinding(who, "RESPINE", subject).await
            ));
        }
        seen.push(format!(
            "{:?}",
            f.service.blinding_status(who, "RESPINE").await
        ));
        seen.push(format!(
            "{:?}",
            f.service.watch_unblindings(who, "RESPINE", 0).await
        ));
        seen.push(format!(
            "{:?}",
            f.service
                .preparation_instruction(who, "RESPINE", &code)
                .await
        ));
        seen.push(format!(
            "{:?}",
            f.service
                .emergency_unblind(who, "RESPINE", &one("R-002"), sae, "anaphylaxis")
                .await
                .map(|_| "an investigator's own reveal is theirs alone")
        ));
        seen.push(format!(
            "{:?}",
            f.service
                .planned_period_reveal(who, "RESPINE", "R-002", "none")
                .await
                .map(|_| "unreachable")
        ));
        seen.push(format!(
            "{:?}",
            f.service
                .assign_code(who, "RESPINE", "R-009", "FR-MTP", "MSC", None)
                .await
        ));
    }
    // An exhausted pool, as randomisation relays it to a site.
    let statistician = caller(&[Role::Statistician], &[], None);
    f.service
        .upload_codes(
            &statistician,
            "FACET-X",
            "arm,code\nMSC,AAAAAAAA\nDMSO,BBBBBBBB\n",
        )
        .await
        .ok();
    for subject in ["F-101", "F-102"] {
        let result = f
            .service
            .assign_code(
                &service("randomisation"),
                "FACET-X",
                subject,
                "US-ROC",
                "MSC",
                None,
            )
            .await;
        seen.push(format!("{:?}", result.err()));
    }
    let all = seen.join("\n");
    for secret in ["SHAM", "Sham", "BM-MSC", "\"MSC\"", "DMSO"] {
        assert!(
            !all.contains(secret),
            "'{secret}' reached a blinded role:\n{all}"
        );
    }
}

// ------------------------------------------------------- review findings

/// Stores tiny uploaded pools for RESPINE: MSC one code, SHAM two.
async fn tiny_respine_pools(f: &Fixture) {
    use crate::codes::CodePool;
    use crate::store::{CodeSource, DefinitionSnapshot};
    let pools = [
        CodePool {
            arm_id: "MSC".into(),
            codes: vec!["R-AAAAAA".into()],
        },
        CodePool {
            arm_id: "SHAM".into(),
            codes: vec!["R-BBBBBB".into(), "R-CCCCCC".into()],
        },
    ];
    let snapshot = DefinitionSnapshot {
        version: 1,
        definition_yaml: RESPINE.into(),
        definition_sha256: String::new(),
    };
    let entry = f.service.entry(
        &service("test"),
        "pools.uploaded",
        "trial/RESPINE".into(),
        json!({}),
    );
    f.service
        .store
        .put_pools("RESPINE", &pools, CodeSource::Uploaded, &snapshot, entry)
        .await
        .expect("pools");
}

/// One empty pool refuses every arm the same way, writing nothing: a
/// refusal only for the empty arm's subjects would tell them their arm.
#[tokio::test]
async fn an_empty_pool_refuses_every_arm_identically() {
    let f = fixture().await;
    tiny_respine_pools(&f).await;
    f.allocate("RESPINE", "R-001", "FR-MTP", "MSC").await;
    let before = f.audit_len().await;
    let counts = f
        .service
        .store
        .pool_counts("RESPINE")
        .await
        .expect("counts");
    let mut refusals = Vec::new();
    for (subject, arm) in [("R-002", "MSC"), ("R-003", "SHAM")] {
        f.randomisation
            .allocate("RESPINE", subject, "FR-MTP", arm, "2026-06-01T09:00:00Z");
        let refused = f
            .service
            .assign_code(
                &service("randomisation"),
                "RESPINE",
                subject,
                "FR-MTP",
                arm,
                None,
            )
            .await
            .expect_err("a pool is empty");
        assert!(
            matches!(refused, BlindingError::ResourceExhausted(_)),
            "{refused:?}"
        );
        assert!(refused.to_string().contains("RESPINE"), "{refused}");
        refusals.push(refused.to_string());
    }
    assert_eq!(refusals[0], refusals[1], "the same refusal for every arm");
    assert_eq!(f.audit_len().await, before, "nothing written");
    assert_eq!(
        f.service
            .store
            .pool_counts("RESPINE")
            .await
            .expect("counts"),
        counts,
        "nothing issued"
    );
    assert_eq!(
        f.service.store.assignment("RESPINE", "R-003").await,
        Ok(None)
    );
}

/// The first AssignCode of a trial generates its pools in a task of its
/// own: a caller that gives up once generation started does not stop them
/// being stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_are_stored_even_when_the_first_caller_gives_up() {
    use std::future::Future;
    use std::task::Poll;
    let f = fixture().await;
    f.randomisation
        .allocate("RESPINE", "R-001", "FR-MTP", "MSC", "2026-06-01T09:00:00Z");
    let caller = service("randomisation");
    let mut first = Box::pin(
        f.service
            .assign_code(&caller, "RESPINE", "R-001", "FR-MTP", "MSC", None),
    );
    // Poll until the definition was fetched: from there to the task's
    // spawn nothing awaits, so the generation is under way.
    std::future::poll_fn(|cx| {
        if first.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        if f.randomisation.fetches.load(Ordering::SeqCst) > 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    drop(first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let counts = f
            .service
            .store
            .pool_counts("RESPINE")
            .await
            .expect("counts");
        if !counts.is_empty() {
            let total: u32 = counts.values().map(|c| c.pool_size).sum();
            assert_eq!(total, 228, "the definition's code_pool_size");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "pools never stored");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_preparer_token_without_sites_is_refused() {
    let f = fixture().await;
    let code = f.allocate("RESPINE", "R-001", "FR-MTP", "MSC").await;
    let refused = f
        .service
        .preparation_instruction(&preparer(&[]), "RESPINE", &code)
        .await
        .expect_err("no sites claim");
    assert_eq!(
        refused,
        BlindingError::PermissionDenied(
            "an unblinded preparer token must name its sites, or \"*\" for a central pharmacy"
                .into()
        )
    );
    let view = f
        .service
        .subject_blinding(&preparer(&[]), "RESPINE", "R-001")
        .await;
    assert!(matches!(view, Err(BlindingError::PermissionDenied(_))));
    let record = f
        .service
        .record_given_treatment(&preparer(&[]), "RESPINE", "R-001", "main", "MSC", "")
        .await;
    assert!(matches!(record, Err(BlindingError::PermissionDenied(_))));
    f.assert_nothing_revealed("RESPINE", "R-001").await;
    let central = f
        .service
        .preparation_instruction(&preparer(&["*"]), "RESPINE", &code)
        .await
        .expect("central pharmacy");
    assert_eq!(central.arm_id, "MSC");
}

/// While randomisation is down, another site's subject with a code gets
/// what an unknown subject gets then: UNAVAILABLE, not NotFound.
#[tokio::test]
async fn another_sites_subject_is_not_told_apart_while_randomisation_is_down() {
    let f = fixture().await;
    f.allocate("RESPINE", "R-001", "FR-MTP", "MSC").await;
    f.randomisation.set_down(true);
    let elsewhere = investigator("FR-PAR");
    let known = f
        .service
        .subject_blinding(&elsewhere, "RESPINE", "R-001")
        .await
        .expect_err("another site");
    let unknown = f
        .service
        .subject_blinding(&elsewhere, "RESPINE", "R-404")
        .await
        .expect_err("unknown");
    assert!(
        matches!(unknown, BlindingError::Unavailable { .. }),
        "{unknown:?}"
    );
    assert_eq!(known, unknown, "the same answer");
    let emergency = |subject: &str| {
        let subjects = vec![subject.to_owned()];
        let service = &f.service;
        let elsewhere = elsewhere.clone();
        async move {
            service
                .emergency_unblind(
                    &elsewhere,
                    "RESPINE",
                    &subjects,
                    Some(ReasonCategory::SeriousAdverseEvent),
                    "anaphylaxis",
                )
                .await
                .expect_err("refused")
        }
    };
    let known = emergency("R-001").await;
    let unknown = emergency("R-404").await;
    assert!(
        matches!(unknown, BlindingError::Unavailable { .. }),
        "{unknown:?}"
    );
    assert_eq!(known, unknown, "the same answer");
    f.assert_nothing_revealed("RESPINE", "R-001").await;
    // The subject's own site still reads it from the store.
    let own = f
        .service
        .subject_blinding(&investigator("FR-MTP"), "RESPINE", "R-001")
        .await
        .expect("own site");
    assert_eq!(own.site_id, "FR-MTP");
    f.randomisation.set_down(false);
    let known = f
        .service
        .subject_blinding(&elsewhere, "RESPINE", "R-001")
        .await
        .expect_err("another site");
    assert!(matches!(known, BlindingError::NotFound(_)), "{known:?}");
}

/// Identifiers that would go into the immutable audit trail are checked
/// first, as INVALID_ARGUMENT naming the field, and nothing is written.
#[tokio::test]
async fn identifiers_are_bounded_before_any_audit_or_lookup() {
    let f = fixture().await;
    f.allocate("FACET-X", "F-001", "US-ROC", "DMSO").await;
    let before = f.audit_len().await;
    let long = "X".repeat(65);
    let desk = caller(&[Role::EmergencyDesk], &[], Some(now_seconds()));
    for bad in [long.as_str(), "F-001\n", "a b", "<script>", "é"] {
        let refused = f
            .service
            .emergency_unblind(
                &desk,
                "FACET-X",
                &[bad.to_owned()],
                Some(ReasonCategory::SeriousAdverseEvent),
                "anaphylaxis",
            )
            .await
            .expect_err("bad subject id");
        assert_eq!(field_of(&refused), ["subject_ids[0]"], "{bad:?}");
        let refused = f
            .service
            .safety_reveal(&service("safety"), "FACET-X", "F-001", bad)
            .await
            .expect_err("bad case id");
        assert_eq!(field_of(&refused), ["case_id"], "{bad:?}");
        let refused = f
            .service
            .planned_period_reveal(&investigator("US-ROC"), "FACET-X", "F-001", bad)
            .await
            .expect_err("bad period id");
        assert_eq!(field_of(&refused), ["period_id"], "{bad:?}");
        let refused = f
            .service
            .preparation_instruction(&preparer(&["US-ROC"]), "FACET-X", bad)
            .await
            .expect_err("bad code");
        assert_eq!(field_of(&refused), ["code"], "{bad:?}");
        let refused = f
            .service
            .record_given_treatment(&preparer(&["US-ROC"]), "FACET-X", "F-001", bad, "MSC", "")
            .await
            .expect_err("bad period id");
        assert_eq!(field_of(&refused), ["period_id"], "{bad:?}");
    }
    let fetches = f.randomisation.fetches.load(Ordering::SeqCst);
    assert_eq!(f.audit_len().await, before, "nothing audited");
    let refused = f
        .service
        .subject_blinding(&investigator("US-ROC"), "FACET-X", &long)
        .await
        .expect_err("bad subject id");
    assert_eq!(field_of(&refused), ["subject_id"]);
    assert_eq!(
        f.randomisation.fetches.load(Ordering::SeqCst),
        fetches,
        "nothing looked up"
    );
    // Every shape the project's own identifiers take still passes.
    let ok = f
        .service
        .safety_reveal(&service("safety"), "FACET-X", "F-001", "CASE-2027.01:7_a")
        .await;
    assert!(ok.is_ok(), "{ok:?}");
}

/// Every entry point checks the trial id's form before its scope, a lookup
/// or a message that would echo it; the randomisation service's calls are
/// checked like any other caller's (issue 7, item 7).
#[tokio::test]
async fn trial_ids_and_assigned_ids_are_bounded_everywhere() {
    let f = fixture().await;
    f.allocate("FACET-X", "F-001", "US-ROC", "DMSO").await;
    let before = f.audit_len().await;
    let long = "T".repeat(65);
    let fetches = f.randomisation.fetches.load(Ordering::SeqCst);
    let desk = caller(&[Role::EmergencyDesk], &[], Some(now_seconds()));
    let refusals = [
        f.service.blinding_status(&desk, &long).await.map(|_| ()),
        f.service
            .subject_blinding(&investigator("US-ROC"), &long, "F-001")
            .await
            .map(|_| ()),
        f.service
            .safety_reveal(&service("safety"), &long, "F-001", "CASE-1")
            .await
            .map(|_| ()),
        f.service
            .arms_for_dsmb(&service("safety"), &long, &["F-001".to_owned()])
            .await
            .map(|_| ()),
        f.service
            .preparation_instruction(&preparer(&["US-ROC"]), &long, "R-1")
            .await
            .map(|_| ()),
        f.service.watch_scope(&desk, &long).map(|_| ()),
    ];
    for refused in refusals {
        let refused = refused.expect_err("bad trial id");
        assert_eq!(field_of(&refused), ["trial_id"]);
    }
    let assign = |subject: String, arm: String| {
        let service = &f.service;
        async move {
            service
                .assign_code(
                    &self::service("randomisation"),
                    "FACET-X",
                    &subject,
                    "US-ROC",
                    &arm,
                    None,
                )
                .await
        }
    };
    let refused = assign("F 002".into(), "DMSO".into())
        .await
        .expect_err("bad subject");
    assert_eq!(field_of(&refused), ["subject_id"]);
    let refused = assign("F-002".into(), "D".repeat(65))
        .await
        .expect_err("bad arm");
    assert_eq!(field_of(&refused), ["arm_id"]);
    assert_eq!(f.audit_len().await, before, "nothing audited");
    assert_eq!(
        f.randomisation.fetches.load(Ordering::SeqCst),
        fetches,
        "nothing looked up"
    );
}

/// Issue 7: the stored snapshot serves while randomisation is down, so it is
/// re-hashed on load; one whose text no longer matches the hash stored with
/// it (edited in the table) is refused as INTERNAL, never obeyed.
#[tokio::test]
async fn an_edited_definition_snapshot_is_refused_while_randomisation_is_down() {
    let f = fixture().await;
    f.allocate("RESPINE", "R-001", "FR-MTP", "MSC").await;
    let stored = f
        .service
        .store
        .definition("RESPINE")
        .await
        .expect("readable")
        .expect("a snapshot");
    assert_eq!(
        stored.definition_sha256,
        parse_definition(&stored.definition_yaml)
            .expect("parses")
            .canonical_sha256(),
        "the snapshot is stored with its hash"
    );
    let desk = caller(&[Role::EmergencyDesk], &[], Some(now_seconds()));
    let sae = Some(ReasonCategory::SeriousAdverseEvent);
    // Someone widens who may unblind, keeping the old hash beside the text.
    let edited = DefinitionSnapshot {
        version: stored.version + 1,
        definition_yaml: stored
            .definition_yaml
            .replace("version: 1", "version: 2")
            .replace("reauth_max_age_minutes: 10", "reauth_max_age_minutes: 600"),
        definition_sha256: stored.definition_sha256.clone(),
    };
    let entry = f.service.entry(
        &service("test"),
        "definition.refreshed",
        "trial/RESPINE".into(),
        json!({}),
    );
    f.service
        .store
        .refresh_definition("RESPINE", &edited, entry)
        .await
        .expect("stored behind the service");
    f.randomisation.set_down(true);
    let refused = f
        .service
        .emergency_unblind(&desk, "RESPINE", &one("R-001"), sae, "anaphylaxis")
        .await;
    assert!(
        matches!(refused, Err(BlindingError::Internal(_))),
        "{refused:?}"
    );
}
