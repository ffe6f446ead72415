//! The services as real `equipoise serve` processes sharing one token
//! secret: either one `--target all` process, or one process per service
//! pointing at each other. Tests mint user tokens and service
//! tokens from the same secret, as the processes do.

use std::path::PathBuf;

use equipoise_common::auth::{Claims, SERVICE_TOKEN_ISSUER, mint_hmac_token};
use equipoise_common::grpc::client::{self, AuthenticatedChannel, ClientInterceptor};
use equipoise_common::settings::ensure_secret_file;
use equipoise_proto::blinding::v1::blinding_service_client::BlindingServiceClient;
use equipoise_proto::randomisation::v1 as pb;
use equipoise_proto::randomisation::v1::blinding_support_service_client::BlindingSupportServiceClient;
use equipoise_proto::safety::v1::safety_service_client::SafetyServiceClient;
use equipoise_testkit::{BLINDING_URL_VARIABLE, RANDOMISATION_URL_VARIABLE, Replica, free_port};
use tonic::transport::ClientTlsConfig;

use crate::{Client, TIMEOUTS};

pub type BlindingClient = BlindingServiceClient<AuthenticatedChannel>;
pub type SupportClient = BlindingSupportServiceClient<AuthenticatedChannel>;
pub type SafetyClient = SafetyServiceClient<AuthenticatedChannel>;

const AUDIENCE: &str = "equipoise";
const USER_ISSUER: &str = "equipoise-dev";

pub struct System {
    /// `all`, or the randomisation process.
    pub randomisation: Replica,
    /// The blinding process, when it runs on its own.
    pub blinding: Option<Replica>,
    /// The safety process, when it runs on its own.
    pub safety: Option<Replica>,
    files: tempfile::TempDir,
    secret: Vec<u8>,
    /// The test's own clients call over TLS with this, when the processes
    /// serve TLS.
    client_tls: Option<ClientTlsConfig>,
}

impl System {
    /// One `--target all` process; `env` is added to its environment.
    pub fn all_in_one(env: &[(&str, String)]) -> Self {
        Self::all_in_one_over(env, None)
    }

    /// As [`System::all_in_one`], serving TLS as `env`'s `EQUIPOISE_TLS__*`
    /// variables say; the test's clients connect with `client_tls`.
    pub fn all_in_one_over_tls(env: &[(&str, String)], client_tls: ClientTlsConfig) -> Self {
        Self::all_in_one_over(env, Some(client_tls))
    }

    fn all_in_one_over(env: &[(&str, String)], client_tls: Option<ClientTlsConfig>) -> Self {
        let files = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let secret = shared_secret(&files);
        let mut variables = common_env(&files);
        variables.extend(env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let randomisation = Replica::start_target("all", &borrowed(&variables));
        Self {
            randomisation,
            blinding: None,
            safety: None,
            files,
            secret,
            client_tls,
        }
    }

    /// Randomisation, blinding and safety as three processes, each told
    /// where the others listen.
    pub fn separate(env: &[(&str, String)]) -> Self {
        Self::separate_over(env, None)
    }

    /// As [`System::separate`], serving TLS as `env`'s `EQUIPOISE_TLS__*`
    /// variables say: each process is told the others' https:// URLs, and
    /// the test's clients connect with `client_tls`.
    pub fn separate_over_tls(env: &[(&str, String)], client_tls: ClientTlsConfig) -> Self {
        Self::separate_over(env, Some(client_tls))
    }

    fn separate_over(env: &[(&str, String)], client_tls: Option<ClientTlsConfig>) -> Self {
        let scheme = if client_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let files = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let secret = shared_secret(&files);
        let randomisation_port = free_port();
        let blinding_port = free_port();
        let safety_port = free_port();
        let mut variables = common_env(&files);
        variables.extend(env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let randomisation_url = format!("{scheme}://127.0.0.1:{randomisation_port}");
        let blinding_url = format!("{scheme}://127.0.0.1:{blinding_port}");
        for (variable, url) in [
            (BLINDING_URL_VARIABLE, &blinding_url),
            (RANDOMISATION_URL_VARIABLE, &randomisation_url),
            ("EQUIPOISE_SAFETY__BLINDING_URL", &blinding_url),
            ("EQUIPOISE_SAFETY__RANDOMISATION_URL", &randomisation_url),
        ] {
            variables.push((variable.to_owned(), url.clone()));
        }
        let blinding = Replica::start_target_at("blinding", blinding_port, &borrowed(&variables));
        let randomisation =
            Replica::start_target_at("randomisation", randomisation_port, &borrowed(&variables));
        let safety = Replica::start_target_at("safety", safety_port, &borrowed(&variables));
        Self {
            randomisation,
            blinding: Some(blinding),
            safety: Some(safety),
            files,
            secret,
            client_tls,
        }
    }

    /// The randomisation service's SQLite file.
    pub fn randomisation_db(&self) -> PathBuf {
        self.files.path().join("randomisation.db")
    }

    /// The blinding service's SQLite file.
    pub fn blinding_db(&self) -> PathBuf {
        self.files.path().join("blinding.db")
    }

    /// The safety service's SQLite file.
    pub fn safety_db(&self) -> PathBuf {
        self.files.path().join("safety.db")
    }

    /// The variables an offline command (`equipoise audit …`) needs to open
    /// the same stores and keys as the processes.
    pub fn offline_env(&self) -> Vec<(String, String)> {
        let mut variables = common_env(&self.files);
        variables.push((
            "EQUIPOISE_DATA_DIR".into(),
            self.files.path().display().to_string(),
        ));
        variables
    }

    /// Every log line of every process so far.
    pub fn logs(&self) -> String {
        let mut logs = self.randomisation.log();
        for replica in [&self.blinding, &self.safety].into_iter().flatten() {
            logs.push_str(&replica.log());
        }
        logs
    }

    /// A user token; `adjust` may change any claim (e.g. an old `auth_time`).
    pub fn token_with(
        &self,
        subject: &str,
        roles: &[&str],
        sites: &[&str],
        adjust: impl FnOnce(&mut Claims),
    ) -> String {
        let now = jiff::Timestamp::now().as_second();
        let mut claims = Claims {
            sub: subject.into(),
            name: subject.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            sites: sites.iter().map(|s| s.to_string()).collect(),
            trials: vec!["*".into()],
            auth_time: Some(now),
            exp: (now + 3600) as u64,
            iat: Some(now as u64),
            aud: AUDIENCE.into(),
            iss: USER_ISSUER.into(),
        };
        adjust(&mut claims);
        mint_hmac_token(&self.secret, &claims).expect("mint")
    }

    pub fn token(&self, subject: &str, roles: &[&str], sites: &[&str]) -> String {
        self.token_with(subject, roles, sites, |_| {})
    }

    /// The token another service would send as `service:<name>`.
    pub fn service_token(&self, name: &str) -> String {
        let role = format!("service:{name}");
        self.token_with(&role, &[role.as_str()], &[], |claims| {
            claims.iss = SERVICE_TOKEN_ISSUER.into();
        })
    }

    pub async fn randomisation_client(&self, token: &str) -> Client {
        pb::randomisation_service_client::RandomisationServiceClient::new(
            self.channel(&self.randomisation, token).await,
        )
    }

    /// The blinding service, wherever it runs.
    pub async fn blinding_client(&self, token: &str) -> BlindingClient {
        let replica = self.blinding.as_ref().unwrap_or(&self.randomisation);
        BlindingServiceClient::new(self.channel(replica, token).await)
    }

    /// The safety service, wherever it runs.
    pub async fn safety_client(&self, token: &str) -> SafetyClient {
        let replica = self.safety.as_ref().unwrap_or(&self.randomisation);
        SafetyServiceClient::new(self.channel(replica, token).await)
    }

    pub async fn support_client(&self, token: &str) -> SupportClient {
        BlindingSupportServiceClient::new(self.channel(&self.randomisation, token).await)
    }

    async fn channel(&self, replica: &Replica, token: &str) -> AuthenticatedChannel {
        let channel = match &self.client_tls {
            None => client::connect(&replica.endpoint(), TIMEOUTS).await,
            Some(tls) => {
                client::connect_with_tls(&replica.https_endpoint(), TIMEOUTS, Some(tls.clone()))
                    .await
            }
        }
        .expect("connect");
        let interceptor = ClientInterceptor::bearer(token).expect("ascii token");
        client::authenticated(channel, interceptor)
    }

    /// Registers and activates a definition as an administrator.
    pub async fn activate(&self, yaml: &str) {
        let admin = self.token("ada", &["trial_admin", "statistician"], &[]);
        let mut client = self.randomisation_client(&admin).await;
        let trial = client
            .register_trial(pb::RegisterTrialRequest {
                definition_yaml: yaml.to_owned(),
            })
            .await
            .expect("register")
            .into_inner();
        client
            .activate_trial(pb::ActivateTrialRequest {
                trial_id: trial.trial_id,
                expected_definition_sha256: trial.definition_sha256,
            })
            .await
            .expect("activate");
    }
}

/// The secret as the processes read it: the file's bytes.
fn shared_secret(files: &tempfile::TempDir) -> Vec<u8> {
    let path = files.path().join("hmac.secret");
    ensure_secret_file(&path, "token secret").expect("token secret");
    std::fs::read(&path).expect("token secret")
}

/// One token secret and one place for both SQLite files, so the test can
/// mint tokens and open the stores.
fn common_env(files: &tempfile::TempDir) -> Vec<(String, String)> {
    let path = |name: &str| files.path().join(name).display().to_string();
    vec![
        (
            "EQUIPOISE_AUTH__HMAC_SECRET_FILE".into(),
            path("hmac.secret"),
        ),
        (
            "EQUIPOISE_RANDOMISATION__SEAL_KEY_FILE".into(),
            path("seal.key"),
        ),
        (
            "EQUIPOISE_RANDOMISATION__SQLITE_PATH".into(),
            path("randomisation.db"),
        ),
        (
            "EQUIPOISE_BLINDING__SQLITE_PATH".into(),
            path("blinding.db"),
        ),
    ]
}

fn borrowed(variables: &[(String, String)]) -> Vec<(&str, String)> {
    variables
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect()
}
