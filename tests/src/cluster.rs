//! The multi-replica deployment in miniature: a private redis-server, a
//! private PostgreSQL, and Equipoise replica processes pointing at both.

use std::collections::BTreeMap;
use std::path::PathBuf;

use equipoise_common::audit::verify_chain;
use equipoise_common::auth::{Claims, mint_hmac_token};
use equipoise_common::grpc::client;
use equipoise_common::settings::ensure_secret_file;
use equipoise_proto::randomisation::v1 as pb;
use equipoise_randomisation::seal::Sealer;
use equipoise_randomisation::store::Store;
use equipoise_randomisation::store::postgres::PostgresStore;
use equipoise_testkit::{
    PostgresServer, RANDOMISATION_URL_VARIABLE, RedisServer, Replica, free_port,
};
use equipoise_trial::parse_definition;

use crate::{Client, TIMEOUTS, client_on};

pub struct Cluster {
    pub redis: RedisServer,
    pub postgres: PostgresServer,
    pub replicas: Vec<Replica>,
    /// One blinding replica (its own SQLite file), asking the first
    /// randomisation replica for trials.
    pub blinding: Replica,
    secrets: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
}

impl Cluster {
    /// Starts Redis, PostgreSQL and `replicas` replicas with `settings`
    /// (extra `EQUIPOISE_*` variables) applied to all of them.
    pub fn start(replicas: usize, settings: &[(&'static str, &str)]) -> Self {
        let redis = RedisServer::start();
        let postgres = PostgresServer::start();
        let secrets = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut env = vec![
            (
                "EQUIPOISE_AUTH__HMAC_SECRET_FILE",
                secrets.path().join("hmac.secret").display().to_string(),
            ),
            (
                "EQUIPOISE_RANDOMISATION__SEAL_KEY_FILE",
                secrets.path().join("seal.key").display().to_string(),
            ),
            ("EQUIPOISE_RANDOMISATION__DATABASE_URL", postgres.url()),
            ("EQUIPOISE_RANDOMISATION__REDIS_URL", redis.url()),
        ];
        env.extend(settings.iter().map(|(k, v)| (*k, (*v).to_owned())));
        ensure_secret_file(&secrets.path().join("hmac.secret"), "test HMAC secret")
            .unwrap_or_else(|e| panic!("{e}"));
        let first_port = free_port();
        let mut blinding_env: Vec<(&str, String)> = env
            .iter()
            .filter(|(k, _)| k.starts_with("EQUIPOISE_AUTH__"))
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        blinding_env.push((
            RANDOMISATION_URL_VARIABLE,
            format!("http://127.0.0.1:{first_port}"),
        ));
        let blinding = Replica::start_blinding(&blinding_env);
        env.push(blinding.blinding_url());
        let mut cluster = Self {
            redis,
            postgres,
            replicas: Vec::new(),
            blinding,
            secrets,
            env,
        };
        // Create the shared secrets once, before replicas race to.
        cluster.hmac_secret();
        cluster.sealer();
        for n in 0..replicas {
            let replica = if n == 0 {
                Replica::start_target_at("randomisation", first_port, &cluster.env)
            } else {
                cluster.spawn_replica(&[])
            };
            cluster.replicas.push(replica);
        }
        cluster
    }

    /// A further replica with `overrides` on top of the cluster settings.
    pub fn spawn_replica(&self, overrides: &[(&'static str, &str)]) -> Replica {
        let mut env = self.env.clone();
        env.extend(overrides.iter().map(|(k, v)| (*k, (*v).to_owned())));
        Replica::start(&env)
    }

    /// A replica on the embedded default (its own SQLite file, in-process
    /// lock) that shares this cluster's token and seal secrets, with its own
    /// blinding replica: the cluster's blinding service reads trials from
    /// the cluster's store, where the embedded replica's trials are not.
    /// Returns (randomisation, blinding).
    pub fn spawn_embedded_replica(&self) -> (Replica, Replica) {
        let auth: Vec<(&str, String)> = self
            .env
            .iter()
            .filter(|(k, _)| k.starts_with("EQUIPOISE_AUTH__"))
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        let port = free_port();
        let mut blinding_env = auth.clone();
        blinding_env.push((
            RANDOMISATION_URL_VARIABLE,
            format!("http://127.0.0.1:{port}"),
        ));
        let blinding = Replica::start_blinding(&blinding_env);
        let mut env = auth;
        env.push((
            "EQUIPOISE_RANDOMISATION__SEAL_KEY_FILE",
            self.secret_path("seal.key").display().to_string(),
        ));
        env.push(blinding.blinding_url());
        let randomisation = Replica::start_target_at("randomisation", port, &env);
        (randomisation, blinding)
    }

    fn secret_path(&self, name: &str) -> PathBuf {
        self.secrets.path().join(name)
    }

    /// The secret as the replicas read it: the file's bytes.
    fn hmac_secret(&self) -> Vec<u8> {
        let path = self.secret_path("hmac.secret");
        ensure_secret_file(&path, "test HMAC secret").unwrap_or_else(|e| panic!("{e}"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The key and store settings of the replicas, for the operator's
    /// offline commands (`equipoise audit verify`).
    pub fn offline_env(&self) -> Vec<(&'static str, String)> {
        self.env
            .iter()
            .filter(|(k, _)| {
                matches!(
                    *k,
                    "EQUIPOISE_AUTH__HMAC_SECRET_FILE"
                        | "EQUIPOISE_RANDOMISATION__SEAL_KEY_FILE"
                        | "EQUIPOISE_RANDOMISATION__DATABASE_URL"
                )
            })
            .cloned()
            .collect()
    }

    pub fn sealer(&self) -> Sealer {
        let key = ensure_secret_file(&self.secret_path("seal.key"), "test seal key")
            .unwrap_or_else(|e| panic!("{e}"));
        Sealer::new(&key).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn token(&self, subject: &str, roles: &[&str], sites: &[&str], trials: &[&str]) -> String {
        let now = jiff::Timestamp::now().as_second();
        let claims = Claims {
            sub: subject.into(),
            name: subject.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            sites: sites.iter().map(|s| s.to_string()).collect(),
            trials: trials.iter().map(|t| t.to_string()).collect(),
            auth_time: Some(now),
            exp: (now + 3600) as u64,
            iat: Some(now as u64),
            aud: "equipoise".into(),
            iss: "equipoise-dev".into(),
        };
        mint_hmac_token(&self.hmac_secret(), &claims).unwrap_or_else(|e| panic!("{e}"))
    }

    pub async fn client_for(&self, replica: &Replica, token: &str) -> Client {
        let channel =
            client::connect_lazy(&replica.endpoint(), TIMEOUTS).unwrap_or_else(|e| panic!("{e}"));
        client_on(channel, token)
    }

    /// One client per replica, for spreading load and retrying elsewhere.
    pub async fn clients(&self, token: &str) -> Vec<Client> {
        let mut clients = Vec::new();
        for replica in &self.replicas {
            clients.push(self.client_for(replica, token).await);
        }
        clients
    }

    pub async fn activate(&self, yaml: &str) {
        self.activate_on(&self.replicas[0], yaml).await;
    }

    pub async fn activate_on(&self, replica: &Replica, yaml: &str) {
        let admin = self.token("admin", &["trial_admin", "statistician"], &[], &["*"]);
        let mut client = self.client_for(replica, &admin).await;
        let trial = client
            .register_trial(pb::RegisterTrialRequest {
                definition_yaml: yaml.to_owned(),
            })
            .await
            .unwrap_or_else(|e| panic!("register: {e}"))
            .into_inner();
        client
            .activate_trial(pb::ActivateTrialRequest {
                trial_id: trial.trial_id,
                expected_definition_sha256: trial.definition_sha256,
            })
            .await
            .unwrap_or_else(|e| panic!("activate: {e}"));
    }

    pub async fn store(&self) -> PostgresStore {
        PostgresStore::connect(&self.postgres.url(), 2)
            .await
            .unwrap_or_else(|e| panic!("connect to the test database: {e}"))
    }

    /// The invariants every fault test ends with:
    /// - every subject is allocated at most once (and the database agrees);
    /// - every acknowledged allocation is present, with the number the client saw;
    /// - each stratum's arms equal its seeded stream, with no gaps or repeats;
    /// - the audit chain verifies.
    pub async fn verify(&self, yaml: &str, acknowledged: &BTreeMap<String, String>) {
        let definition = parse_definition(yaml).unwrap_or_else(|p| panic!("{:?}", p.0));
        let store = self.store().await;
        for (subject, number) in acknowledged {
            let stored = store
                .allocation(&definition.id, subject)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let stored =
                stored.unwrap_or_else(|| panic!("acknowledged allocation of {subject} is missing"));
            assert_eq!(
                &stored.randomisation_number, number,
                "{subject} changed number"
            );
        }
        let trial = store
            .trial(&definition.id)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no trial"));
        let sealed = trial
            .sealed_seed
            .unwrap_or_else(|| panic!("no sealed seed"));
        let seed = self
            .sealer()
            .unseal(&definition.id, &sealed)
            .unwrap_or_else(|e| panic!("{e}"));
        let subjects = crate::assert_strata_follow_their_streams(&store, &definition, &seed).await;
        let counts = store
            .counts(&definition.id)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            counts.total as usize,
            subjects.len(),
            "allocations outside the strata"
        );
        let records = store
            .audit_records(1, u32::MAX)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        verify_chain(&records).unwrap_or_else(|e| panic!("audit chain: {e}"));
    }
}

/// A RESPINE-shaped trial with `sites` sites and no caps: 2 strata per site.
pub fn load_trial_yaml(sites: usize) -> String {
    let site_lines: Vec<String> = (1..=sites)
        .map(|n| format!("  - {{ id: S{n:02} }}"))
        .collect();
    let start = crate::RESPINE_YAML.find("sites:").unwrap_or(0);
    let end = crate::RESPINE_YAML.find("caps:").unwrap_or(start);
    let caps_end = crate::RESPINE_YAML[end..]
        .find('\n')
        .map_or(end, |i| end + i + 1);
    format!(
        "{}sites:\n{}\n{}",
        &crate::RESPINE_YAML[..start],
        site_lines.join("\n"),
        &crate::RESPINE_YAML[caps_end..]
    )
    .replace("id: RESPINE", "id: LOAD")
}

/// An eligible subject of the load trial.
pub fn load_request(site: &str, subject: &str, severe: bool) -> pb::RandomiseRequest {
    pb::RandomiseRequest {
        trial_id: "LOAD".into(),
        ..crate::respine_request(site, subject, if severe { 80.0 } else { 55.0 })
    }
}

/// Sends `request`, moving to the next replica on statuses a client should
/// retry, up to `attempts` times. Returns the answer and every refusal seen.
pub async fn randomise_with_retries(
    clients: &mut [Client],
    first: usize,
    request: &pb::RandomiseRequest,
    attempts: usize,
) -> (Option<pb::RandomiseResponse>, Vec<tonic::Status>) {
    let mut refusals = Vec::new();
    for attempt in 0..attempts {
        let client = &mut clients[(first + attempt) % clients.len()];
        match client.randomise(request.clone()).await {
            Ok(response) => return (Some(response.into_inner()), refusals),
            Err(status) => {
                let retriable = matches!(
                    status.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::Aborted
                        | tonic::Code::Unknown
                        | tonic::Code::Cancelled
                );
                refusals.push(status);
                if !retriable {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    (None, refusals)
}

/// The randomisation number a response acknowledged.
pub fn acknowledged_number(response: &pb::RandomiseResponse) -> String {
    response
        .allocation
        .as_ref()
        .map(|a| a.randomisation_number.clone())
        .unwrap_or_default()
}
