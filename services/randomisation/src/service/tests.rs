//! Domain-level tests of the randomisation application layer: real SQLite
//! (in memory), real locks and sealing, no gRPC. Each test states the
//! behaviour a trial depends on and checks the stored evidence, not only the
//! reply.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use equipoise_common::audit::verify_chain;
use equipoise_common::auth::{Caller, Role, TrialScope};
use proptest::prelude::*;
use serde_json::json;

use super::allocate::MINIMISATION_STREAM;
use super::{
    AllocationFilter, Limits, RandomisationService, RandomiseCommand, RandomiseOutcome,
    SimulateCommand, SimulationDesign,
};
use crate::error::RandomisationError;
use crate::lock::InProcessLocks;
use crate::methods::{Margins, minimise, regenerate_list};
use crate::seal::Sealer;
use crate::simulation::LevelWeights;
use crate::store::sqlite::SqliteStore;
use crate::store::{AllocationRecord, Store, TrialState};
use crate::stream::{ALGORITHM_VERSION, MasterSeed, derive_stream, nth_unit_draw};
use equipoise_trial::{CovariateInput, MethodSpec, TrialDefinition, parse_definition};

use equipoise_trial::examples::{FACET_CROSSOVER as FACET_YAML, RESPINE as RESPINE_YAML};
const RESPINE_SITES: [&str; 5] = ["FR-MTP", "FR-PAR", "ES-VLL", "IT-MIL", "DE-ULM"];
const MODERATE_PAIN: f64 = 55.0;
const SEVERE_PAIN: f64 = 80.0;
/// Long enough that a queue of 32 writers never times out on a slow CI box.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// Fixed so a failing run can be replayed; never a production key.
const TEST_SEAL_KEY: [u8; 32] = [0x5e; 32];

// ---------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------

struct Fixture {
    service: RandomisationService,
    store: Arc<SqliteStore>,
    sealer_key: [u8; 32],
}

impl Fixture {
    async fn new() -> Self {
        let store = Arc::new(
            SqliteStore::in_memory()
                .await
                .expect("an in-memory SQLite store opens and migrates"),
        );
        let shared_store: Arc<dyn Store> = store.clone();
        let sealer = Sealer::new(&TEST_SEAL_KEY).expect("a 32-byte key is a valid seal key");
        let locks = Arc::new(InProcessLocks::new(LOCK_WAIT));
        let service = RandomisationService::new(shared_store, locks, sealer, Limits::default());
        Self {
            service,
            store,
            sealer_key: TEST_SEAL_KEY,
        }
    }

    /// Registers `yaml` as the statistician and activates it as the admin,
    /// returning the parsed design the tests replay against.
    async fn activate(&self, yaml: &str) -> TrialDefinition {
        let definition = parse_definition(yaml)
            .unwrap_or_else(|problems| panic!("test design must parse: {:#?}", problems.0));
        let draft = self
            .service
            .register_trial(&statistician(), yaml)
            .await
            .expect("the statistician registers a valid design");
        assert_eq!(draft.record.state, TrialState::Draft);
        let active = self
            .service
            .activate_trial(&admin(), &definition.id, &draft.record.definition_sha256)
            .await
            .expect("the admin activates the reviewed design");
        assert_eq!(active.record.state, TrialState::Active);
        definition
    }

    async fn randomise(
        &self,
        site_id: &str,
        subject_id: &str,
        trial_id: &str,
        covariates: BTreeMap<String, CovariateInput>,
    ) -> Result<RandomiseOutcome, RandomisationError> {
        self.service
            .randomise(
                &site(site_id),
                &command(trial_id, site_id, subject_id, covariates),
            )
            .await
    }

    async fn audit_records(&self) -> Vec<equipoise_common::audit::AuditRecord> {
        self.store
            .audit_records(1, u32::MAX)
            .await
            .expect("audit records are readable")
    }

    async fn audit_count(&self) -> usize {
        self.audit_records().await.len()
    }

    async fn assert_audit_chain_verifies(&self) {
        let records = self.audit_records().await;
        let verified = verify_chain(&records)
            .unwrap_or_else(|broken| panic!("audit chain must verify: {broken}"));
        assert_eq!(verified, records.len() as u64);
    }

    /// The master seed as a statistician with the key-encryption key would
    /// recover it, with the algorithm version recorded at activation.
    async fn master_seed(&self, trial_id: &str) -> (MasterSeed, u32) {
        let record = self
            .store
            .trial(trial_id)
            .await
            .expect("trial is readable")
            .expect("trial exists");
        let sealed = record
            .sealed_seed
            .expect("an active trial has a sealed seed");
        let sealer = Sealer::new(&self.sealer_key).expect("the fixture key is 32 bytes");
        let seed = sealer
            .unseal(trial_id, &sealed)
            .expect("the seed opens with the key it was sealed under");
        let version = record
            .algorithm_version
            .expect("activation records the algorithm version");
        assert_eq!(version, ALGORITHM_VERSION);
        (seed, version)
    }

    async fn stream(&self, trial_id: &str, stream_key: &str) -> Vec<AllocationRecord> {
        self.store
            .stream_allocations(trial_id, stream_key)
            .await
            .expect("stream allocations are readable")
    }

    /// Checks that a permuted-block stratum holds positions 0..n, in order,
    /// with exactly the arms regenerated offline from the seed. Returns n.
    async fn assert_stratum_matches_regenerated_list(
        &self,
        definition: &TrialDefinition,
        stratum: &str,
    ) -> usize {
        let allocations = self.stream(&definition.id, stratum).await;
        let positions: Vec<u64> = allocations.iter().map(|a| a.position).collect();
        let expected_positions: Vec<u64> = (0..allocations.len() as u64).collect();
        assert_eq!(
            positions, expected_positions,
            "positions of {stratum} must be 0..n with no gaps"
        );
        let (seed, version) = self.master_seed(&definition.id).await;
        let regenerated = regenerate_list(
            &definition.method,
            &definition.ratios(),
            &seed,
            stratum,
            version,
            allocations.len(),
        )
        .expect("permuted blocks is a sequence method");
        let expected_arms: Vec<&str> = regenerated
            .iter()
            .map(|&arm| definition.arms[arm].id.as_str())
            .collect();
        let stored_arms: Vec<&str> = allocations.iter().map(|a| a.arm.as_str()).collect();
        assert_eq!(
            stored_arms, expected_arms,
            "stratum {stratum} must follow its regenerated list"
        );
        allocations.len()
    }
}

fn caller(subject: &str, roles: &[Role], sites: &[&str], trials: TrialScope) -> Caller {
    Caller {
        subject: subject.to_owned(),
        display_name: subject.to_owned(),
        roles: roles.iter().cloned().collect(),
        sites: sites.iter().map(|s| (*s).to_owned()).collect(),
        trials,
        auth_time: Some(1_700_000_000),
    }
}

fn trials_only(ids: &[&str]) -> TrialScope {
    TrialScope::Only(ids.iter().map(|id| (*id).to_owned()).collect())
}

fn admin() -> Caller {
    caller("admin@sponsor", &[Role::TrialAdmin], &[], TrialScope::All)
}

fn statistician() -> Caller {
    caller(
        "statistician@sponsor",
        &[Role::Statistician],
        &[],
        TrialScope::All,
    )
}

/// A site investigator at one site, with the trials these tests register.
fn site(site_id: &str) -> Caller {
    caller(
        &format!("investigator@{site_id}"),
        &[Role::SiteInvestigator],
        &[site_id],
        trials_only(&["RESPINE", "FACET-X", "LIST"]),
    )
}

/// An eligible RESPINE subject; `vas_mm` decides the baseline-pain stratum.
fn respine_subject(vas: f64) -> BTreeMap<String, CovariateInput> {
    BTreeMap::from([
        ("age_years".to_owned(), CovariateInput::Integer(45)),
        ("lbp_months".to_owned(), CovariateInput::Integer(12)),
        ("vas_mm".to_owned(), CovariateInput::Decimal(vas)),
        ("ddd_on_mri".to_owned(), CovariateInput::Boolean(true)),
        (
            "conservative_care_failed".to_owned(),
            CovariateInput::Boolean(true),
        ),
    ])
}

fn facet_subject(sex: &str) -> BTreeMap<String, CovariateInput> {
    BTreeMap::from([
        ("age_years".to_owned(), CovariateInput::Integer(52)),
        ("lbp_months".to_owned(), CovariateInput::Integer(24)),
        (
            "facet_block_positive".to_owned(),
            CovariateInput::Boolean(true),
        ),
        ("sex".to_owned(), CovariateInput::Enum(sex.to_owned())),
    ])
}

fn command(
    trial_id: &str,
    site_id: &str,
    subject_id: &str,
    covariates: BTreeMap<String, CovariateInput>,
) -> RandomiseCommand {
    RandomiseCommand {
        trial_id: trial_id.to_owned(),
        site_id: site_id.to_owned(),
        subject_id: subject_id.to_owned(),
        covariates,
    }
}

fn respine_stratum(site_id: &str, vas: f64) -> String {
    let pain = if vas < 70.0 { "moderate" } else { "severe" };
    format!("site={site_id},baseline_pain={pain}")
}

/// The problem paths of an INVALID_ARGUMENT, or a panic naming what came instead.
fn problem_paths<T: std::fmt::Debug>(result: &Result<T, RandomisationError>) -> Vec<String> {
    match result {
        Err(RandomisationError::InvalidArgument(problems)) => {
            problems.iter().map(|p| p.path.clone()).collect()
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

fn assert_failed_precondition<T: std::fmt::Debug>(result: &Result<T, RandomisationError>) {
    assert!(
        matches!(result, Err(RandomisationError::FailedPrecondition(_))),
        "expected FailedPrecondition, got {result:?}"
    );
}

fn assert_permission_denied<T: std::fmt::Debug>(result: &Result<T, RandomisationError>) {
    assert!(
        matches!(result, Err(RandomisationError::PermissionDenied(_))),
        "expected PermissionDenied, got {result:?}"
    );
}

fn assert_not_found<T: std::fmt::Debug>(result: &Result<T, RandomisationError>) {
    assert!(
        matches!(result, Err(RandomisationError::NotFound(_))),
        "expected NotFound, got {result:?}"
    );
}

/// RESPINE with small caps, so a short command sequence reaches every kind.
fn small_respine_yaml() -> String {
    let yaml = RESPINE_YAML
        .replace(
            "caps: { total: 114 }",
            "caps: { total: 20, per_stratum: 4 }",
        )
        .replace("cap: 40", "cap: 6")
        .replace("cap: 30", "cap: 6")
        .replace("cap: 25", "cap: 6");
    assert_ne!(yaml, RESPINE_YAML, "the cap replacements must apply");
    yaml
}

// ---------------------------------------------------------------------------
// 1. RESPINE end to end
// ---------------------------------------------------------------------------

#[tokio::test]
async fn respine_enrols_to_its_total_cap_and_every_stratum_follows_its_sealed_list() {
    let fixture = Fixture::new().await;
    let definition = fixture.activate(RESPINE_YAML).await;

    // 114 subjects spread over the sites within their caps, both pain levels at each.
    let per_site = [
        ("FR-MTP", 30),
        ("FR-PAR", 24),
        ("ES-VLL", 20),
        ("IT-MIL", 20),
        ("DE-ULM", 20),
    ];
    assert_eq!(per_site.iter().map(|(_, n)| n).sum::<u32>(), 114);
    let mut outcomes = BTreeMap::new();
    for (site_id, subjects) in per_site {
        for index in 0..subjects {
            let subject_id = format!("{site_id}-S{index:03}");
            let vas = if index % 2 == 0 {
                MODERATE_PAIN
            } else {
                SEVERE_PAIN
            };
            let outcome = fixture
                .randomise(site_id, &subject_id, "RESPINE", respine_subject(vas))
                .await
                .unwrap_or_else(|error| {
                    panic!("{subject_id} is eligible and within caps: {error:?}")
                });
            assert!(!outcome.replayed, "a first request is never a replay");
            assert_eq!(outcome.allocation.site_id, site_id);
            assert_eq!(outcome.allocation.stratum, respine_stratum(site_id, vas));
            assert_eq!(outcome.allocation.stream_key, outcome.allocation.stratum);
            assert_eq!(outcome.allocation.trial_version, 1);
            outcomes.insert(subject_id, outcome.allocation);
        }
    }

    // Exactly one stored allocation per subject, identical to what was returned.
    for (subject_id, returned) in &outcomes {
        let stored = fixture
            .service
            .get_allocation(&admin(), "RESPINE", subject_id)
            .await
            .expect("every randomised subject has an allocation");
        assert_eq!(&stored, returned);
    }
    let counts = fixture
        .store
        .counts("RESPINE")
        .await
        .expect("counts are readable");
    assert_eq!(counts.total, 114);

    // Every stratum is exactly its list regenerated offline from the seed.
    let mut regenerated_total = 0;
    for levels in definition.all_strata() {
        let stratum = definition.stratum_key(&levels);
        regenerated_total += fixture
            .assert_stratum_matches_regenerated_list(&definition, &stratum)
            .await;
    }
    assert_eq!(
        regenerated_total, 114,
        "all ten strata together hold every allocation"
    );

    let numbers: BTreeSet<&str> = outcomes
        .values()
        .map(|a| a.randomisation_number.as_str())
        .collect();
    assert_eq!(numbers.len(), 114, "randomisation numbers are unique");

    // The 115th subject meets the total cap and leaves no trace.
    let audit_before = fixture.audit_count().await;
    let refused = fixture
        .randomise(
            "FR-MTP",
            "FR-MTP-S999",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await;
    assert!(
        matches!(refused, Err(RandomisationError::CapReached(_))),
        "{refused:?}"
    );
    assert_eq!(
        fixture.audit_count().await,
        audit_before,
        "a refused allocation writes no audit record"
    );
    let after = fixture
        .service
        .get_allocation(&admin(), "RESPINE", "FR-MTP-S999")
        .await;
    assert_not_found(&after);
    assert_eq!(
        fixture.store.counts("RESPINE").await.expect("counts").total,
        114
    );

    // An EDC retry of an earlier request still gets its answer at the cap.
    let retry = fixture
        .randomise(
            "DE-ULM",
            "DE-ULM-S000",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await
        .expect("a retry at the cap replays rather than failing");
    assert!(retry.replayed);
    assert_eq!(Some(&retry.allocation), outcomes.get("DE-ULM-S000"));

    fixture.assert_audit_chain_verifies().await;
}

// ---------------------------------------------------------------------------
// 2. Idempotency
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_repeated_request_replays_and_a_changed_one_is_refused() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;

    let first = fixture
        .randomise(
            "FR-MTP",
            "SUBJ-1",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await
        .expect("first request allocates");
    assert!(!first.replayed);
    let audit_after_first = fixture.audit_count().await;

    let second = fixture
        .randomise(
            "FR-MTP",
            "SUBJ-1",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await
        .expect("an identical request is answered, not refused");
    assert!(second.replayed, "the second identical request is a replay");
    assert_eq!(second.allocation, first.allocation);

    // A different vas (even one in the same stratum) is different data.
    let changed = fixture
        .randomise(
            "FR-MTP",
            "SUBJ-1",
            "RESPINE",
            respine_subject(MODERATE_PAIN + 1.0),
        )
        .await;
    assert!(
        matches!(changed, Err(RandomisationError::AlreadyExists(_))),
        "{changed:?}"
    );

    assert_eq!(
        fixture.audit_count().await,
        audit_after_first,
        "replays and refusals write nothing"
    );
    assert_eq!(
        fixture.store.counts("RESPINE").await.expect("counts").total,
        1
    );
    assert_eq!(
        fixture
            .store
            .stream_version("RESPINE", &first.allocation.stream_key)
            .await
            .expect("version"),
        1
    );
    let stored = fixture
        .store
        .allocation("RESPINE", "SUBJ-1")
        .await
        .expect("readable")
        .expect("stored");
    assert_eq!(
        stored, first.allocation,
        "the stored allocation is untouched"
    );
}

// ---------------------------------------------------------------------------
// 3. Eligibility
// ---------------------------------------------------------------------------

#[tokio::test]
async fn an_ineligible_subject_is_told_every_failed_criterion_and_nothing_is_written() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    let audit_before = fixture.audit_count().await;

    let mut covariates = respine_subject(35.0);
    covariates.insert("age_years".to_owned(), CovariateInput::Integer(61));
    let result = fixture
        .randomise("FR-MTP", "SUBJ-OLD", "RESPINE", covariates)
        .await;
    match &result {
        Err(RandomisationError::Ineligible(failed)) => {
            let ids: Vec<&str> = failed.iter().map(|c| c.id.as_str()).collect();
            assert_eq!(ids, ["age", "pain"], "failed criteria in definition order");
            assert!(
                failed.iter().all(|c| !c.rule.is_empty()),
                "each failure carries its rule"
            );
        }
        other => panic!("expected Ineligible, got {other:?}"),
    }

    assert!(
        fixture
            .store
            .allocation("RESPINE", "SUBJ-OLD")
            .await
            .expect("readable")
            .is_none()
    );
    assert_eq!(fixture.audit_count().await, audit_before);
}

// ---------------------------------------------------------------------------
// 4. Invalid requests
// ---------------------------------------------------------------------------

#[tokio::test]
async fn malformed_requests_are_refused_with_every_problem_named() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    let audit_before = fixture.audit_count().await;

    // Wrong type, missing covariate and unknown covariate: all reported at once.
    let mut covariates = respine_subject(MODERATE_PAIN);
    covariates.insert("age_years".to_owned(), CovariateInput::Decimal(45.5));
    covariates.remove("lbp_months");
    covariates.insert("bmi".to_owned(), CovariateInput::Decimal(24.0));
    let result = fixture
        .randomise("FR-MTP", "SUBJ-1", "RESPINE", covariates)
        .await;
    let paths = problem_paths(&result);
    for expected in [
        "covariates.age_years",
        "covariates.lbp_months",
        "covariates.bmi",
    ] {
        assert!(
            paths.iter().any(|p| p == expected),
            "{expected} missing from {paths:?}"
        );
    }

    // A site the token grants but the trial does not have.
    let bogus_site = caller(
        "investigator@XX-NOWHERE",
        &[Role::SiteInvestigator],
        &["XX-NOWHERE"],
        trials_only(&["RESPINE"]),
    );
    let result = fixture
        .service
        .randomise(
            &bogus_site,
            &command(
                "RESPINE",
                "XX-NOWHERE",
                "SUBJ-2",
                respine_subject(MODERATE_PAIN),
            ),
        )
        .await;
    assert_eq!(problem_paths(&result), ["site_id"]);

    for bad_subject in ["", "has spaces", "semi;colon"] {
        let result = fixture
            .randomise(
                "FR-MTP",
                bad_subject,
                "RESPINE",
                respine_subject(MODERATE_PAIN),
            )
            .await;
        assert_eq!(
            problem_paths(&result),
            ["subject_id"],
            "subject id {bad_subject:?}"
        );
    }

    assert_eq!(
        fixture.store.counts("RESPINE").await.expect("counts").total,
        0
    );
    assert_eq!(fixture.audit_count().await, audit_before);
}

// ---------------------------------------------------------------------------
// 5. Lifecycle gates
// ---------------------------------------------------------------------------

#[tokio::test]
async fn only_an_active_trial_randomises_and_activation_checks_the_reviewed_hash() {
    let fixture = Fixture::new().await;
    // The admin reviewed this first draft; the statistician then replaced it.
    let reviewed = fixture
        .service
        .register_trial(&statistician(), &RESPINE_YAML.replace("cap: 40", "cap: 45"))
        .await
        .expect("registers");
    let draft = fixture
        .service
        .register_trial(&statistician(), RESPINE_YAML)
        .await
        .expect("a draft may be re-registered");
    assert_ne!(
        reviewed.record.definition_sha256,
        draft.record.definition_sha256
    );
    let stale = fixture
        .service
        .activate_trial(&admin(), "RESPINE", &reviewed.record.definition_sha256)
        .await;
    assert_failed_precondition(&stale);

    let on_draft = fixture
        .randomise(
            "FR-MTP",
            "SUBJ-1",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await;
    assert_failed_precondition(&on_draft);

    // A hash other than the reviewed one must not activate anything.
    let wrong_hash = "0".repeat(64);
    let activated = fixture
        .service
        .activate_trial(&admin(), "RESPINE", &wrong_hash)
        .await;
    assert_failed_precondition(&activated);
    let still = fixture
        .service
        .get_trial(&admin(), "RESPINE")
        .await
        .expect("readable");
    assert_eq!(still.record.state, TrialState::Draft);
    assert!(
        still.record.sealed_seed.is_none(),
        "no seed is sealed for a refused activation"
    );

    fixture
        .service
        .activate_trial(&admin(), "RESPINE", &draft.record.definition_sha256)
        .await
        .expect("the reviewed hash activates");

    // The frozen design cannot be replaced by re-registering.
    let re_registered = fixture
        .service
        .register_trial(&statistician(), RESPINE_YAML)
        .await;
    assert_failed_precondition(&re_registered);

    fixture
        .randomise(
            "FR-MTP",
            "SUBJ-1",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await
        .expect("an active trial randomises");

    let closed = fixture
        .service
        .close_enrolment(&admin(), "RESPINE", "recruitment target met")
        .await
        .expect("closes");
    assert_eq!(closed.record.state, TrialState::Closed);
    let after_close = fixture
        .randomise(
            "FR-MTP",
            "SUBJ-2",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await;
    assert_failed_precondition(&after_close);
    // Idempotency outlives enrolment: a late retry still learns its allocation.
    let late_retry = fixture
        .randomise(
            "FR-MTP",
            "SUBJ-1",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await
        .expect("a retry of an earlier allocation replays after close");
    assert!(late_retry.replayed);

    // Unknown trial: a caller whose token covers every trial gets NOT_FOUND.
    let everywhere = caller(
        "investigator@FR-MTP",
        &[Role::SiteInvestigator],
        &["FR-MTP"],
        TrialScope::All,
    );
    let unknown = fixture
        .service
        .randomise(
            &everywhere,
            &command(
                "NO-SUCH-TRIAL",
                "FR-MTP",
                "SUBJ-3",
                respine_subject(MODERATE_PAIN),
            ),
        )
        .await;
    assert_not_found(&unknown);
    fixture.assert_audit_chain_verifies().await;
}

// ---------------------------------------------------------------------------
// 6. Authorisation
// ---------------------------------------------------------------------------

#[tokio::test]
async fn roles_sites_and_trial_scope_bound_what_each_caller_does_and_sees() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    fixture
        .randomise("FR-MTP", "MTP-1", "RESPINE", respine_subject(MODERATE_PAIN))
        .await
        .expect("allocates");
    fixture
        .randomise("FR-PAR", "PAR-1", "RESPINE", respine_subject(SEVERE_PAIN))
        .await
        .expect("allocates");

    let by_statistician = fixture
        .service
        .randomise(
            &statistician(),
            &command("RESPINE", "FR-MTP", "S-1", respine_subject(MODERATE_PAIN)),
        )
        .await;
    assert_permission_denied(&by_statistician);

    let for_other_site = fixture
        .service
        .randomise(
            &site("FR-MTP"),
            &command("RESPINE", "FR-PAR", "S-2", respine_subject(MODERATE_PAIN)),
        )
        .await;
    assert_permission_denied(&for_other_site);

    let out_of_scope = caller(
        "investigator@FR-MTP",
        &[Role::SiteInvestigator],
        &["FR-MTP"],
        trials_only(&["ANOTHER-TRIAL"]),
    );
    let result = fixture
        .service
        .randomise(
            &out_of_scope,
            &command("RESPINE", "FR-MTP", "S-3", respine_subject(MODERATE_PAIN)),
        )
        .await;
    assert_permission_denied(&result);
    assert_permission_denied(&fixture.service.get_trial(&out_of_scope, "RESPINE").await);

    // Another site's subject is indistinguishable from a missing one.
    let other_sites_subject = fixture
        .service
        .get_allocation(&site("FR-PAR"), "RESPINE", "MTP-1")
        .await;
    assert_not_found(&other_sites_subject);
    let missing_subject = fixture
        .service
        .get_allocation(&site("FR-PAR"), "RESPINE", "NOBODY")
        .await;
    assert_not_found(&missing_subject);
    let own = fixture
        .service
        .get_allocation(&site("FR-PAR"), "RESPINE", "PAR-1")
        .await
        .expect("a site reads its own subject");
    assert_eq!(own.site_id, "FR-PAR");

    // Listing is narrowed the same way.
    let page = fixture
        .service
        .list_allocations(
            &site("FR-PAR"),
            &AllocationFilter {
                trial_id: "RESPINE".into(),
                ..AllocationFilter::default()
            },
            0,
            0,
        )
        .await
        .expect("a site lists its allocations");
    let listed: Vec<&str> = page
        .allocations
        .iter()
        .map(|a| a.subject_id.as_str())
        .collect();
    assert_eq!(listed, ["PAR-1"]);

    let site_status = fixture
        .service
        .trial_status(&site("FR-PAR"), "RESPINE")
        .await
        .expect("a site reads status");
    assert_eq!(site_status.sites, vec![("FR-PAR".to_owned(), 1, Some(30))]);
    assert!(
        site_status.strata.is_empty(),
        "strata cut across sites, so a site sees none"
    );
    assert_eq!(
        site_status.randomised, 1,
        "a site counts only its own subjects"
    );
    let full_status = fixture
        .service
        .trial_status(&statistician(), "RESPINE")
        .await
        .expect("the statistician reads status");
    assert_eq!(full_status.sites.len(), 5);
    assert_eq!(full_status.strata.len(), 10);
    assert_eq!(full_status.randomised, 2);

    let site_view = fixture
        .service
        .get_trial(&site("FR-PAR"), "RESPINE")
        .await
        .expect("site reads trial");
    assert!(
        site_view.definition_yaml.is_empty(),
        "the design stays concealed from sites"
    );
    assert_eq!(site_view.method, "permuted_blocks");
    let statistician_view = fixture
        .service
        .get_trial(&statistician(), "RESPINE")
        .await
        .expect("statistician reads trial");
    assert_eq!(statistician_view.definition_yaml, RESPINE_YAML);
}

// ---------------------------------------------------------------------------
// 7. Stratum correction and randomised in error
// ---------------------------------------------------------------------------

#[tokio::test]
async fn corrections_record_the_truth_without_touching_the_arm_or_freeing_the_slot() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    let original = fixture
        .randomise(
            "FR-MTP",
            "SUBJ-1",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await
        .expect("allocates")
        .allocation;
    assert_eq!(original.stratum, "site=FR-MTP,baseline_pain=moderate");

    let empty_reason = fixture
        .service
        .correct_stratum(
            &admin(),
            "RESPINE",
            "SUBJ-1",
            &respine_subject(SEVERE_PAIN),
            "  ",
        )
        .await;
    assert_eq!(problem_paths(&empty_reason), ["reason"]);

    let mut bad = respine_subject(SEVERE_PAIN);
    bad.insert("age_years".to_owned(), CovariateInput::Boolean(true));
    let bad_covariates = fixture
        .service
        .correct_stratum(
            &admin(),
            "RESPINE",
            "SUBJ-1",
            &bad,
            "VAS transcribed wrongly",
        )
        .await;
    assert_eq!(
        problem_paths(&bad_covariates),
        ["corrected_covariates.age_years"]
    );

    let corrected = fixture
        .service
        .correct_stratum(
            &admin(),
            "RESPINE",
            "SUBJ-1",
            &respine_subject(SEVERE_PAIN),
            "VAS transcribed wrongly",
        )
        .await
        .expect("the admin corrects the stratum");
    assert_eq!(
        corrected.stratum, original.stratum,
        "'randomised as' never changes"
    );
    assert_eq!(
        corrected.corrected_stratum.as_deref(),
        Some("site=FR-MTP,baseline_pain=severe")
    );
    assert_eq!(
        corrected.correction_reason.as_deref(),
        Some("VAS transcribed wrongly")
    );
    assert_eq!(corrected.arm, original.arm);
    assert_eq!(corrected.position, original.position);
    assert_eq!(
        corrected.randomisation_number,
        original.randomisation_number
    );

    let before = fixture
        .service
        .trial_status(&admin(), "RESPINE")
        .await
        .expect("status");
    assert_eq!((before.randomised, before.randomised_in_error), (1, 0));

    let marked = fixture
        .service
        .mark_randomised_in_error(
            &admin(),
            "RESPINE",
            "SUBJ-1",
            "consent withdrawn before randomisation",
        )
        .await
        .expect("the admin marks the allocation");
    assert!(marked.in_error);
    assert_eq!(marked.arm, original.arm);
    let after = fixture
        .service
        .trial_status(&admin(), "RESPINE")
        .await
        .expect("status");
    assert_eq!(after.randomised_in_error, 1);
    assert_eq!(after.randomised, before.randomised, "the slot stays used");

    // The stream does not reuse the position.
    let next = fixture
        .randomise(
            "FR-MTP",
            "SUBJ-2",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await
        .expect("allocates");
    assert_eq!(next.allocation.position, 1);

    let twice = fixture
        .service
        .mark_randomised_in_error(&admin(), "RESPINE", "SUBJ-1", "again")
        .await;
    assert_failed_precondition(&twice);
    fixture.assert_audit_chain_verifies().await;
}

// ---------------------------------------------------------------------------
// 8. Minimisation replay
// ---------------------------------------------------------------------------

#[tokio::test]
async fn every_minimisation_decision_replays_exactly_from_the_log_and_the_seed() {
    let fixture = Fixture::new().await;
    let definition = fixture.activate(FACET_YAML).await;
    let MethodSpec::Minimisation {
        weights,
        imbalance,
        p,
    } = &definition.method
    else {
        panic!("FACET-X uses minimisation, not {:?}", definition.method);
    };

    for index in 0..40 {
        // An uneven mix, so margins drift and the preferred arm changes.
        let sex = if (index * 7) % 5 < 2 {
            "female"
        } else {
            "male"
        };
        fixture
            .randomise(
                "US-ROC",
                &format!("FX-{index:02}"),
                "FACET-X",
                facet_subject(sex),
            )
            .await
            .unwrap_or_else(|error| panic!("subject {index} is eligible: {error:?}"));
    }

    let (seed, version) = fixture.master_seed("FACET-X").await;
    let mut stream = derive_stream(&seed, MINIMISATION_STREAM, version);
    let history = fixture.stream("FACET-X", MINIMISATION_STREAM).await;
    assert_eq!(history.len(), 40);
    let level_counts: Vec<usize> = definition
        .stratification
        .iter()
        .map(|f| f.levels.len())
        .collect();
    let mut margins = Margins::new(&level_counts, definition.arms.len());
    for (position, allocation) in history.iter().enumerate() {
        assert_eq!(allocation.position, position as u64);
        let levels = definition
            .parse_stratum_key(&allocation.stratum)
            .unwrap_or_else(|| panic!("{} is a stratum of FACET-X", allocation.stratum));
        let logged: serde_json::Value =
            serde_json::from_str(&allocation.decision_json).expect("the decision log is JSON");
        for key in ["scores", "probabilities", "draw"] {
            assert!(
                logged.get(key).is_some(),
                "decision log lacks {key}: {logged}"
            );
        }
        // The draw must be the stream's, not merely self-consistent.
        let draw = nth_unit_draw(&mut stream, position as u64);
        let replayed = minimise(
            &margins,
            &levels,
            weights,
            *imbalance,
            *p,
            &definition.ratios(),
            draw,
        );
        assert_eq!(
            definition.arms[replayed.arm].id, allocation.arm,
            "arm at position {position}"
        );
        // Compared as the service rendered them: serde_json's default float
        // parsing may be a ULP off, its printing is exact.
        let rendered = json!({ "scores": replayed.scores, "probabilities": replayed.probabilities, "draw": replayed.draw });
        assert_eq!(
            rendered.to_string(),
            allocation.decision_json,
            "decision at position {position}"
        );
        margins.record(&levels, replayed.arm);
    }

    let forty_first = fixture
        .randomise("US-ROC", "FX-40", "FACET-X", facet_subject("female"))
        .await;
    assert!(
        matches!(forty_first, Err(RandomisationError::CapReached(_))),
        "{forty_first:?}"
    );
}

// Minimisation logs each 17-digit draw in its audit details; the chain
// must survive the JSON round trip through the store.
#[tokio::test]
async fn a_minimisation_trials_audit_chain_verifies() {
    let fixture = Fixture::new().await;
    fixture.activate(FACET_YAML).await;
    // 40 draws: with roughly 1 in 10 failing to round-trip, a break is near certain.
    for index in 0..40 {
        let sex = if index % 2 == 0 { "female" } else { "male" };
        fixture
            .randomise(
                "US-ROC",
                &format!("FX-{index:02}"),
                "FACET-X",
                facet_subject(sex),
            )
            .await
            .unwrap_or_else(|error| panic!("subject {index} is eligible: {error:?}"));
    }
    fixture.assert_audit_chain_verifies().await;
}

// ---------------------------------------------------------------------------
// 9. Uploaded lists
// ---------------------------------------------------------------------------

fn list_yaml() -> String {
    let yaml = RESPINE_YAML
        .replace(
            "kind: permuted_blocks\n  block_sizes: [2, 4]",
            "kind: uploaded_list\n  warn_remaining: 1",
        )
        .replace("id: RESPINE\n", "id: LIST\n");
    assert!(
        yaml.contains("uploaded_list") && yaml.contains("id: LIST\n"),
        "the replacements must apply"
    );
    yaml
}

/// CSV text, quoting strata: their keys contain commas.
fn list_csv(rows: &[(String, &str)]) -> String {
    let mut csv = String::from("stratum,arm\n");
    for (stratum, arm) in rows {
        csv.push_str(&format!("\"{stratum}\",{arm}\n"));
    }
    csv
}

#[tokio::test]
async fn an_uploaded_list_is_checked_then_followed_in_order_until_exhausted() {
    let fixture = Fixture::new().await;
    let yaml = list_yaml();
    let definition =
        parse_definition(&yaml).unwrap_or_else(|problems| panic!("LIST parses: {:#?}", problems.0));
    let draft = fixture
        .service
        .register_trial(&statistician(), &yaml)
        .await
        .expect("registers");

    let too_early = fixture
        .service
        .activate_trial(&admin(), "LIST", &draft.record.definition_sha256)
        .await;
    assert_failed_precondition(&too_early);

    let mtp_moderate = respine_stratum("FR-MTP", MODERATE_PAIN);
    let mtp_severe = respine_stratum("FR-MTP", SEVERE_PAIN);
    let bad = list_csv(&[
        (mtp_moderate.clone(), "PLACEBO"),
        ("site=XX-NOWHERE,baseline_pain=moderate".to_owned(), "MSC"),
    ]);
    let refused = fixture
        .service
        .upload_allocation_list(&statistician(), "LIST", &bad)
        .await;
    let paths = problem_paths(&refused);
    assert!(
        paths.iter().any(|p| p == "csv line 2"),
        "the bad arm is on line 2: {paths:?}"
    );
    assert!(
        paths.iter().any(|p| p == "csv line 3"),
        "the unknown stratum is on line 3: {paths:?}"
    );
    if let Err(RandomisationError::InvalidArgument(problems)) = &refused {
        assert!(
            problems
                .iter()
                .any(|p| p.path == "csv line 2" && p.message.contains("PLACEBO"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.path == "csv line 3" && p.message.contains("XX-NOWHERE"))
        );
    }
    assert!(
        fixture
            .store
            .list_lengths("LIST")
            .await
            .expect("readable")
            .is_empty(),
        "a refused list stores nothing"
    );

    // Two rows per stratum; alternate strata start with different arms so the
    // order is visible.
    let strata: Vec<String> = definition
        .all_strata()
        .iter()
        .map(|l| definition.stratum_key(l))
        .collect();
    assert_eq!(strata.len(), 10);
    let rows: Vec<(String, &str)> = strata
        .iter()
        .enumerate()
        .flat_map(|(index, stratum)| {
            let order = if index % 2 == 0 {
                ["MSC", "SHAM"]
            } else {
                ["SHAM", "MSC"]
            };
            order.map(|arm| (stratum.clone(), arm))
        })
        .collect();
    let upload = fixture
        .service
        .upload_allocation_list(&statistician(), "LIST", &list_csv(&rows))
        .await
        .expect("a complete list uploads");
    assert_eq!((upload.strata, upload.entries), (10, 20));
    fixture
        .service
        .activate_trial(&admin(), "LIST", &draft.record.definition_sha256)
        .await
        .expect("activates once every stratum has a list");

    // FR-MTP severe is the second stratum: its list is SHAM then MSC.
    let first = fixture
        .randomise("FR-MTP", "L-1", "LIST", respine_subject(SEVERE_PAIN))
        .await
        .expect("first of the list");
    let second = fixture
        .randomise("FR-MTP", "L-2", "LIST", respine_subject(SEVERE_PAIN))
        .await
        .expect("second of the list");
    assert_eq!(first.allocation.stratum, mtp_severe);
    assert_eq!(
        (
            first.allocation.arm.as_str(),
            second.allocation.arm.as_str()
        ),
        ("SHAM", "MSC")
    );
    let moderate = fixture
        .randomise("FR-MTP", "L-3", "LIST", respine_subject(MODERATE_PAIN))
        .await
        .expect("first of another stratum");
    assert_eq!(moderate.allocation.arm, "MSC");

    let audit_before = fixture.audit_count().await;
    let exhausted = fixture
        .randomise("FR-MTP", "L-4", "LIST", respine_subject(SEVERE_PAIN))
        .await;
    match &exhausted {
        Err(RandomisationError::FailedPrecondition(message)) => {
            assert!(message.contains("exhausted"), "{message}");
        }
        other => panic!("expected FailedPrecondition, got {other:?}"),
    }
    assert_eq!(fixture.audit_count().await, audit_before);

    let after_activation = fixture
        .service
        .upload_allocation_list(&statistician(), "LIST", &list_csv(&rows))
        .await;
    assert_failed_precondition(&after_activation);

    let status = fixture
        .service
        .trial_status(&statistician(), "LIST")
        .await
        .expect("status");
    assert_eq!(
        status.list_warnings,
        vec![(mtp_moderate, 1), (mtp_severe, 0)]
    );
    let site_status = fixture
        .service
        .trial_status(&site("FR-MTP"), "LIST")
        .await
        .expect("status");
    assert!(
        site_status.list_warnings.is_empty(),
        "list warnings reveal the design"
    );
}

// A list was validated against the draft it was uploaded to; a new draft
// must not inherit it.
#[tokio::test]
async fn re_registering_a_draft_does_not_keep_a_list_that_no_longer_fits_it() {
    let fixture = Fixture::new().await;
    let yaml = list_yaml();
    let definition =
        parse_definition(&yaml).unwrap_or_else(|problems| panic!("LIST parses: {:#?}", problems.0));
    fixture
        .service
        .register_trial(&statistician(), &yaml)
        .await
        .expect("registers");
    let rows: Vec<(String, &str)> = definition
        .all_strata()
        .iter()
        .flat_map(|levels| ["MSC", "SHAM"].map(|arm| (definition.stratum_key(levels), arm)))
        .collect();
    fixture
        .service
        .upload_allocation_list(&statistician(), "LIST", &list_csv(&rows))
        .await
        .expect("a list fitting the first draft uploads");

    // Same strata, but SHAM is now called PLACEBO: the list no longer fits.
    let renamed = yaml.replace("{ id: SHAM,", "{ id: PLACEBO,");
    assert_ne!(renamed, yaml, "the arm rename must apply");
    let redraft = fixture
        .service
        .register_trial(&statistician(), &renamed)
        .await
        .expect("a draft may be re-registered");

    let activated = fixture
        .service
        .activate_trial(&admin(), "LIST", &redraft.record.definition_sha256)
        .await;
    if activated.is_ok() {
        // Show what a site then meets, to make the failure concrete.
        let first = fixture
            .randomise("FR-MTP", "R-1", "LIST", respine_subject(MODERATE_PAIN))
            .await;
        let second = fixture
            .randomise("FR-MTP", "R-2", "LIST", respine_subject(MODERATE_PAIN))
            .await;
        panic!(
            "a list naming arm SHAM was activated for a design whose arms are MSC and PLACEBO; \
             first subject: {first:?}; second subject: {second:?}"
        );
    }
    assert_failed_precondition(&activated);
}

// ---------------------------------------------------------------------------
// 10. Amendments
// ---------------------------------------------------------------------------

#[tokio::test]
async fn amendments_need_a_reason_the_next_version_and_an_unchanged_method() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    let version_two = RESPINE_YAML.replace("version: 1", "version: 2");

    let no_reason = fixture
        .service
        .amend_trial(&admin(), &version_two.replace("cap: 30", "cap: 35"), " ")
        .await;
    assert_eq!(problem_paths(&no_reason), ["reason"]);

    let new_blocks = version_two.replace("block_sizes: [2, 4]", "block_sizes: [4]");
    let method_changed = fixture
        .service
        .amend_trial(&admin(), &new_blocks, "smaller blocks")
        .await;
    let paths = problem_paths(&method_changed);
    assert!(paths.iter().any(|p| p.contains("method")), "{paths:?}");

    let same_version = fixture
        .service
        .amend_trial(
            &admin(),
            &RESPINE_YAML.replace("cap: 30", "cap: 35"),
            "raise FR-PAR",
        )
        .await;
    assert!(
        problem_paths(&same_version)
            .iter()
            .any(|p| p.contains("version"))
    );

    let raised = version_two.replace("cap: 30", "cap: 35");
    let amended = fixture
        .service
        .amend_trial(&admin(), &raised, "FR-PAR recruits faster than planned")
        .await
        .expect("raising a site cap is a valid amendment");
    assert_eq!(amended.record.version, 2);
    let view = fixture
        .service
        .get_trial(&statistician(), "RESPINE")
        .await
        .expect("readable");
    assert_eq!(view.record.version, 2);
    assert_eq!(view.record.state, TrialState::Active);
    assert_eq!(view.definition_yaml, raised);
    let status = fixture
        .service
        .trial_status(&admin(), "RESPINE")
        .await
        .expect("status");
    assert!(
        status.sites.contains(&("FR-PAR".to_owned(), 0, Some(35))),
        "{:?}",
        status.sites
    );

    let after = fixture
        .randomise(
            "FR-PAR",
            "AMENDED-1",
            "RESPINE",
            respine_subject(MODERATE_PAIN),
        )
        .await
        .expect("randomises under the amended design");
    assert_eq!(after.allocation.trial_version, 2);
    fixture.assert_audit_chain_verifies().await;
}

// ---------------------------------------------------------------------------
// 11. Simulation
// ---------------------------------------------------------------------------

#[tokio::test]
async fn simulation_runs_a_registered_or_inline_design_for_statisticians_only() {
    let fixture = Fixture::new().await;
    fixture
        .service
        .register_trial(&statistician(), RESPINE_YAML)
        .await
        .expect("registers");
    let by_trial = |trials: u32| SimulateCommand {
        design: SimulationDesign::Trial("RESPINE".to_owned()),
        trials,
        subjects_per_trial: 0,
        seed: 20_240_601,
        level_weights: LevelWeights::default(),
    };

    let report = fixture
        .service
        .simulate(&statistician(), by_trial(200))
        .await
        .expect("simulates the registered design");
    assert_eq!(
        report.allocations,
        200 * 114,
        "0 subjects per trial means the total cap"
    );
    assert_eq!(report.subjects_per_trial, 114);
    assert_eq!(report.method, "permuted_blocks");

    let inline = fixture
        .service
        .simulate(
            &statistician(),
            SimulateCommand {
                design: SimulationDesign::Yaml(FACET_YAML.to_owned()),
                trials: 10,
                subjects_per_trial: 0,
                seed: 7,
                level_weights: LevelWeights::default(),
            },
        )
        .await
        .expect("simulates an inline design");
    assert_eq!(inline.allocations, 10 * 40);
    assert_eq!(inline.method, "minimisation");

    let none = fixture.service.simulate(&statistician(), by_trial(0)).await;
    assert!(problem_paths(&none).iter().any(|p| p.contains("trials")));

    let by_site = fixture
        .service
        .simulate(&site("FR-MTP"), by_trial(10))
        .await;
    assert_permission_denied(&by_site);
}

// ---------------------------------------------------------------------------
// 12. Randomised command sequences against caps and idempotency
// ---------------------------------------------------------------------------

/// What the caps allow, computed independently of the store.
#[derive(Default)]
struct CapModel {
    /// subject → (site, vas, randomisation number).
    allocated: BTreeMap<String, (String, f64, String)>,
    by_site: BTreeMap<String, u32>,
    by_stratum: BTreeMap<String, u32>,
}

impl CapModel {
    const TOTAL: u32 = 20;
    const SITE: u32 = 6;
    const STRATUM: u32 = 4;

    fn would_admit(&self, site_id: &str, stratum: &str) -> bool {
        (self.allocated.len() as u32) < Self::TOTAL
            && self.by_site.get(site_id).copied().unwrap_or(0) < Self::SITE
            && self.by_stratum.get(stratum).copied().unwrap_or(0) < Self::STRATUM
    }
}

async fn run_command_sequence(commands: Vec<(u8, usize, bool)>) {
    let fixture = Fixture::new().await;
    let definition = fixture.activate(&small_respine_yaml()).await;
    let mut model = CapModel::default();

    for (subject_index, site_index, severe) in commands {
        let subject_id = format!("P-{subject_index:02}");
        let site_id = RESPINE_SITES[site_index];
        let vas = if severe { SEVERE_PAIN } else { MODERATE_PAIN };
        let stratum = respine_stratum(site_id, vas);
        let result = fixture
            .randomise(site_id, &subject_id, "RESPINE", respine_subject(vas))
            .await;
        match (model.allocated.get(&subject_id), &result) {
            (Some((old_site, old_vas, number)), Ok(outcome)) => {
                assert!(
                    old_site == site_id && *old_vas == vas,
                    "{subject_id} replayed with different data"
                );
                assert!(outcome.replayed);
                assert_eq!(&outcome.allocation.randomisation_number, number);
            }
            (Some((old_site, old_vas, _)), Err(RandomisationError::AlreadyExists(_))) => {
                assert!(
                    old_site != site_id || *old_vas != vas,
                    "an identical repeat must replay"
                );
            }
            (None, Ok(outcome)) => {
                assert!(
                    model.would_admit(site_id, &stratum),
                    "{subject_id} admitted past a cap"
                );
                assert!(!outcome.replayed);
                assert_eq!(outcome.allocation.stratum, stratum);
                model.allocated.insert(
                    subject_id.clone(),
                    (
                        site_id.to_owned(),
                        vas,
                        outcome.allocation.randomisation_number.clone(),
                    ),
                );
                *model.by_site.entry(site_id.to_owned()).or_default() += 1;
                *model.by_stratum.entry(stratum).or_default() += 1;
            }
            (None, Err(RandomisationError::CapReached(_))) => {
                assert!(
                    !model.would_admit(site_id, &stratum),
                    "{subject_id} refused below every cap"
                );
            }
            (known, other) => {
                panic!("unexpected outcome for {subject_id} (known: {known:?}): {other:?}")
            }
        }
    }

    // The store agrees with the model and respects every cap.
    let counts = fixture.store.counts("RESPINE").await.expect("counts");
    assert_eq!(counts.total as usize, model.allocated.len());
    assert!(counts.total <= CapModel::TOTAL);
    assert!(
        counts.by_site.values().all(|&n| n <= CapModel::SITE),
        "{:?}",
        counts.by_site
    );
    assert!(
        counts.by_stratum.values().all(|&n| n <= CapModel::STRATUM),
        "{:?}",
        counts.by_stratum
    );

    let mut seen_subjects = BTreeSet::new();
    for levels in definition.all_strata() {
        let stratum = definition.stratum_key(&levels);
        let allocations = fixture.stream("RESPINE", &stratum).await;
        let positions: Vec<u64> = allocations.iter().map(|a| a.position).collect();
        assert_eq!(
            positions,
            (0..allocations.len() as u64).collect::<Vec<_>>(),
            "{stratum}"
        );
        for allocation in allocations {
            assert!(
                seen_subjects.insert(allocation.subject_id.clone()),
                "{} allocated twice",
                allocation.subject_id
            );
            let (_, _, number) = model
                .allocated
                .get(&allocation.subject_id)
                .unwrap_or_else(|| {
                    panic!("{} stored but never answered Ok", allocation.subject_id)
                });
            assert_eq!(&allocation.randomisation_number, number);
        }
    }
    assert_eq!(seen_subjects.len(), model.allocated.len());
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 16,
        // The failing case is printed on failure; no regression file is
        // written beside the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_command_sequences_respect_caps_and_idempotency(
        commands in prop::collection::vec((0u8..25, 0usize..RESPINE_SITES.len(), any::<bool>()), 0..=40)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime builds");
        runtime.block_on(run_command_sequence(commands));
    }
}

// ---------------------------------------------------------------------------
// 13. Concurrency
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_into_one_stratum_take_consecutive_positions_of_its_list() {
    let fixture = Arc::new(Fixture::new().await);
    let definition = fixture.activate(RESPINE_YAML).await;

    let tasks: Vec<_> = (0..32)
        .map(|index| {
            let fixture = Arc::clone(&fixture);
            tokio::spawn(async move {
                fixture
                    .randomise(
                        "FR-MTP",
                        &format!("C-{index:02}"),
                        "RESPINE",
                        respine_subject(MODERATE_PAIN),
                    )
                    .await
            })
        })
        .collect();
    let mut numbers = BTreeSet::new();
    for task in tasks {
        let outcome = task
            .await
            .expect("the task does not panic")
            .unwrap_or_else(|error| panic!("every concurrent request succeeds: {error:?}"));
        assert!(!outcome.replayed);
        numbers.insert(outcome.allocation.randomisation_number);
    }
    assert_eq!(numbers.len(), 32, "randomisation numbers are unique");

    let stratum = respine_stratum("FR-MTP", MODERATE_PAIN);
    let n = fixture
        .assert_stratum_matches_regenerated_list(&definition, &stratum)
        .await;
    assert_eq!(n, 32);
    fixture.assert_audit_chain_verifies().await;
}
