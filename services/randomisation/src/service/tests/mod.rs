//! Domain-level tests of the randomisation application layer: real SQLite
//! (in memory), real locks and sealing, no gRPC. Each test states the
//! behaviour a trial depends on and checks the stored evidence, not only the
//! reply.

mod access;
mod allocate;
mod amendments;
mod blinding_support;
mod codes;
mod command_sequences;
mod concurrency;
mod corrections;
mod lifecycle;
mod lists;
mod minimisation;
mod simulation;
mod stored_definitions;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use equipoise_common::audit::verify_chain;
use equipoise_common::auth::{Caller, Role, TrialScope};
use equipoise_trial::examples::RESPINE as RESPINE_YAML;
use equipoise_trial::{CovariateInput, TrialDefinition, parse_definition};

use super::{Limits, RandomisationService, RandomiseCommand, RandomiseOutcome};
use crate::error::RandomisationError;
use crate::lock::InProcessLocks;
use crate::methods::regenerate_list;
use crate::seal::Sealer;
use crate::store::sqlite::SqliteStore;
use crate::store::{AllocationRecord, Store, TrialState};
use equipoise_stream::{ALGORITHM_VERSION, MasterSeed};

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
    /// The blinding service's `AssignCode`, in process.
    codes: Arc<codes::FakeCodeIssuer>,
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
        let codes = Arc::new(codes::FakeCodeIssuer::default());
        let service = RandomisationService::new(
            shared_store,
            locks,
            sealer,
            Limits::default(),
            codes.clone(),
        );
        Self {
            service,
            store,
            sealer_key: TEST_SEAL_KEY,
            codes,
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
