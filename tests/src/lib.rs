//! A real Equipoise server for tests: its own temporary data directory, a
//! free loopback port, real gRPC, and a clean stop.

pub mod cluster;
pub mod cpu;
pub mod roles;
pub mod system;

use std::collections::BTreeSet;
use std::path::PathBuf;

use equipoise_randomisation::methods::regenerate_list;
use equipoise_randomisation::store::Store;
use equipoise_stream::{ALGORITHM_VERSION, MasterSeed};
use equipoise_trial::TrialDefinition;

use equipoise::serve::{Target, bind, run};
use equipoise::settings::Settings;
use equipoise_common::auth::{Claims, mint_hmac_token};
use equipoise_common::grpc::client::{self, AuthenticatedChannel, ClientInterceptor, Timeouts};
use equipoise_proto::randomisation::v1 as pb;
use equipoise_proto::safety::v1 as spb;
use equipoise_randomisation::store::sqlite::SqliteStore;
use pb::randomisation_service_client::RandomisationServiceClient;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub use equipoise_trial::examples::{FACET_CROSSOVER as FACET_YAML, RESPINE as RESPINE_YAML};

pub type Client = RandomisationServiceClient<AuthenticatedChannel>;

/// Generous, so a loaded CI machine does not turn a slow call into a
/// failure, yet a hung call still fails the test.
pub const TIMEOUTS: Timeouts = Timeouts {
    connect: std::time::Duration::from_secs(10),
    request: std::time::Duration::from_secs(120),
};

/// A client that sends `token` with every call.
pub fn client_on(channel: Channel, token: &str) -> Client {
    let interceptor = ClientInterceptor::bearer(token).expect("ascii token");
    RandomisationServiceClient::new(client::authenticated(channel, interceptor))
}

pub struct TestServer {
    pub endpoint: String,
    pub settings: Settings,
    data_dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), equipoise::serve::ServeError>>>,
}

impl TestServer {
    /// Starts the embedded default (`all`, SQLite, in-process locks).
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Settings)) -> Self {
        let data_dir = tempfile::tempdir().expect("temporary data directory");
        let mut settings = Settings {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: data_dir.path().to_owned(),
            // Tests that watch the drain set their own delay.
            drain_delay_ms: 0,
            ..Settings::default()
        };
        adjust(&mut settings);
        // Bound before the task starts, so no client races the listener.
        let listener = bind(&settings).await.expect("bind a free loopback port");
        let endpoint = format!("http://{}", listener.local_addr().expect("local address"));
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task_settings = settings.clone();
        let task = tokio::spawn(async move {
            run(&task_settings, Target::All, listener, async {
                let _ = stopped.await;
            })
            .await
        });
        let server = Self {
            endpoint,
            settings,
            data_dir,
            shutdown: Some(shutdown),
            task: Some(task),
        };
        server.wait_until_serving().await;
        server
    }

    async fn wait_until_serving(&self) {
        for _ in 0..200 {
            if let Ok(channel) = client::connect(&self.endpoint, TIMEOUTS).await {
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                let request = tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                };
                if health.check(request).await.is_ok() {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("server at {} never became healthy", self.endpoint);
    }

    pub fn data_path(&self) -> PathBuf {
        self.data_dir.path().to_owned()
    }

    pub async fn channel(&self) -> Channel {
        client::connect(&self.endpoint, TIMEOUTS)
            .await
            .expect("connect")
    }

    pub async fn client(&self, token: &str) -> Client {
        client_on(self.channel().await, token)
    }

    /// A token signed with this server's development secret.
    pub fn token(&self, subject: &str, roles: &[&str], sites: &[&str], trials: &[&str]) -> String {
        self.token_with(subject, roles, sites, trials, |_| {})
    }

    pub fn token_with(
        &self,
        subject: &str,
        roles: &[&str],
        sites: &[&str],
        trials: &[&str],
        adjust: impl FnOnce(&mut Claims),
    ) -> String {
        let now = jiff::Timestamp::now().as_second();
        let mut claims = Claims {
            sub: subject.into(),
            name: subject.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            sites: sites.iter().map(|s| s.to_string()).collect(),
            trials: trials.iter().map(|t| t.to_string()).collect(),
            auth_time: Some(now),
            exp: (now + 3600) as u64,
            iat: Some(now as u64),
            aud: self.settings.auth.audience.clone(),
            iss: self.settings.auth.issuer.clone(),
        };
        adjust(&mut claims);
        let secret = self
            .settings
            .auth
            .hmac_secret(&self.settings.data_dir)
            .expect("dev secret");
        mint_hmac_token(&secret, &claims).expect("mint")
    }

    pub fn admin_token(&self) -> String {
        self.token("admin", &["trial_admin", "statistician"], &[], &["*"])
    }

    /// The service's own database, opened beside the running server (WAL
    /// lets readers in while it writes).
    pub async fn store(&self) -> SqliteStore {
        let path = self
            .settings
            .randomisation
            .sqlite_path(&self.settings.data_dir);
        SqliteStore::open(&path)
            .await
            .expect("open the service's database")
    }

    /// Asks the server to shut down, as SIGTERM does, without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Ends the server task at once, mid-drain if need be: for tests whose
    /// drain delay outlasts them.
    pub fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Stops the server and waits for it to drain.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server stopped cleanly");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Registers and activates a definition as an administrator.
pub async fn activate(server: &TestServer, yaml: &str) -> pb::Trial {
    let mut admin = server.client(&server.admin_token()).await;
    let registered = admin
        .register_trial(pb::RegisterTrialRequest {
            definition_yaml: yaml.to_owned(),
        })
        .await
        .expect("register")
        .into_inner();
    admin
        .activate_trial(pb::ActivateTrialRequest {
            trial_id: registered.trial_id,
            expected_definition_sha256: registered.definition_sha256,
        })
        .await
        .expect("activate")
        .into_inner()
}

pub fn integer(n: i64) -> pb::CovariateValue {
    pb::CovariateValue {
        value: Some(pb::covariate_value::Value::IntegerValue(n)),
    }
}

pub fn decimal(x: f64) -> pb::CovariateValue {
    pb::CovariateValue {
        value: Some(pb::covariate_value::Value::DecimalValue(x)),
    }
}

pub fn boolean(b: bool) -> pb::CovariateValue {
    pb::CovariateValue {
        value: Some(pb::covariate_value::Value::BooleanValue(b)),
    }
}

/// An eligible RESPINE subject with pain `vas_mm`.
pub fn respine_request(site: &str, subject: &str, vas_mm: f64) -> pb::RandomiseRequest {
    pb::RandomiseRequest {
        trial_id: "RESPINE".into(),
        site_id: site.into(),
        subject_id: subject.into(),
        covariates: [
            ("age_years".to_owned(), integer(45)),
            ("lbp_months".to_owned(), integer(12)),
            ("vas_mm".to_owned(), decimal(vas_mm)),
            ("ddd_on_mri".to_owned(), boolean(true)),
            ("conservative_care_failed".to_owned(), boolean(true)),
        ]
        .into_iter()
        .collect(),
    }
}

/// Checks every stratum's stored arms, in position order with no gap or
/// repeat, against its list regenerated from `seed`. Returns the subjects,
/// each of whom must appear once.
pub async fn assert_strata_follow_their_streams(
    store: &dyn Store,
    definition: &TrialDefinition,
    seed: &MasterSeed,
) -> BTreeSet<String> {
    let mut subjects = BTreeSet::new();
    for levels in definition.all_strata() {
        let stratum = definition.stratum_key(&levels);
        let allocations = store
            .stream_allocations(&definition.id, &stratum)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let positions: Vec<u64> = allocations.iter().map(|a| a.position).collect();
        assert_eq!(
            positions,
            (0..allocations.len() as u64).collect::<Vec<_>>(),
            "gap or repeat in {stratum}"
        );
        let expected = regenerate_list(
            &definition.method,
            &definition.ratios(),
            seed,
            &stratum,
            ALGORITHM_VERSION,
            allocations.len(),
        )
        .unwrap_or_else(|| panic!("{} lists are not pre-generated", definition.method.kind()));
        let expected: Vec<&str> = expected
            .iter()
            .map(|arm| definition.arms[*arm].id.as_str())
            .collect();
        let actual: Vec<&str> = allocations.iter().map(|a| a.arm.as_str()).collect();
        assert_eq!(
            actual, expected,
            "stratum {stratum} departs from its seeded stream"
        );
        for allocation in allocations {
            assert!(
                subjects.insert(allocation.subject_id.clone()),
                "{} allocated twice",
                allocation.subject_id
            );
        }
    }
    subjects
}

/// A protobuf timestamp of `at`.
pub fn timestamp(at: jiff::Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.as_second(),
        nanos: at.subsec_nanosecond(),
    }
}

/// A serious, unexpected, related event at FR-MTP: a potential SUSAR, which
/// the safety service classifies by a safety reveal through blinding.
pub fn potential_susar(subject: &str) -> spb::CaseReport {
    let aware = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    spb::CaseReport {
        trial_id: "RESPINE".into(),
        site_id: "FR-MTP".into(),
        subject_id: subject.into(),
        reporter: Some(spb::Reporter {
            name: "Dr Sam Martin".into(),
            qualification: "physician".into(),
        }),
        suspect_product: "RESPINE blinded study product".into(),
        event: Some(spb::CodedEvent {
            llt_code: "10028596".into(),
            term: "Myocardial infarction".into(),
            meddra_version: "27.0".into(),
        }),
        onset_date: aware
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date()
            .saturating_sub(jiff::Span::new().days(1))
            .to_string(),
        serious: true,
        seriousness: Some(spb::Seriousness {
            hospitalisation: true,
            ..Default::default()
        }),
        outcome: spb::Outcome::Recovering.into(),
        investigator_causality: spb::Causality::Related.into(),
        narrative: "Chest pain two days after the injection.".into(),
        site_aware_at: Some(timestamp(aware)),
    }
}
