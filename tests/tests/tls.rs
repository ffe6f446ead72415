//! TLS and mutual TLS (docs/tls.md) against the real binary, with
//! certificates made at run time: a CA and one certificate (serverAuth and
//! clientAuth, for `localhost` and 127.0.0.1) that every process serves and
//! presents, plus an unrelated CA with a client certificate of its own.
//! Every refusal is shown beside a call that succeeds on the same server,
//! so no test passes merely because nothing answers.

use std::path::PathBuf;

use equipoise_common::grpc::client;
use equipoise_proto::randomisation::v1 as pb;
use equipoise_testkit::{PostgresServer, RedisServer, RedisTls, Replica, equipoise_binary};
use equipoise_tests::system::System;
use equipoise_tests::{RESPINE_YAML, TIMEOUTS, respine_request};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// A certificate authority that can issue certificates.
struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Authority {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let pem = params.self_signed(&key).expect("CA certificate").pem();
        Self {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A certificate for `localhost` and 127.0.0.1, usable by a server and
    /// a client alike; returns (certificate, key) as PEM.
    fn issue(&self, name: &str) -> (String, String) {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let mut params = CertificateParams::new(names).expect("parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// The test's PEM files, in a directory of their own.
struct Pki {
    dir: tempfile::TempDir,
    cert: String,
    key: String,
    ca: String,
    other_cert: String,
    other_key: String,
}

impl Pki {
    fn new() -> Self {
        let ca = Authority::new("Equipoise test CA");
        let (cert, key) = ca.issue("equipoise");
        let other_ca = Authority::new("Unrelated CA");
        let (other_cert, other_key) = other_ca.issue("intruder");
        let pki = Self {
            dir: tempfile::tempdir().expect("tempdir"),
            cert,
            key,
            ca: ca.pem,
            other_cert,
            other_key,
        };
        for (name, text) in [
            ("ca.crt", &pki.ca),
            ("tls.crt", &pki.cert),
            ("tls.key", &pki.key),
            ("other-ca.crt", &other_ca.pem),
        ] {
            std::fs::write(pki.path(name), text).expect("write a PEM file");
        }
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn file(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// The `[tls]` settings every process gets.
    fn server_env(&self, require_client_cert: bool) -> Vec<(&'static str, String)> {
        vec![
            ("EQUIPOISE_TLS__CERT_FILE", self.file("tls.crt")),
            ("EQUIPOISE_TLS__KEY_FILE", self.file("tls.key")),
            ("EQUIPOISE_TLS__CA_FILE", self.file("ca.crt")),
            (
                "EQUIPOISE_TLS__REQUIRE_CLIENT_CERT",
                require_client_cert.to_string(),
            ),
        ]
    }

    /// Trusts the CA and presents no certificate.
    fn client_without_certificate(&self) -> ClientTlsConfig {
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca))
    }

    /// Trusts the CA and presents the certificate it issued.
    fn client(&self) -> ClientTlsConfig {
        self.client_without_certificate()
            .identity(Identity::from_pem(&self.cert, &self.key))
    }

    /// Trusts the CA, but presents a certificate the other CA issued.
    fn client_from_other_ca(&self) -> ClientTlsConfig {
        self.client_without_certificate()
            .identity(Identity::from_pem(&self.other_cert, &self.other_key))
    }
}

/// A health check at `endpoint`; the error says why it failed.
async fn health(endpoint: &str, tls: Option<ClientTlsConfig>) -> Result<(), String> {
    let channel = client::connect_with_tls(endpoint, TIMEOUTS, tls)
        .await
        .map_err(|e| e.to_string())?;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
        .map_err(|status| format!("{status:?}"))
}

/// Activates RESPINE and randomises one subject at a site; returns the
/// treatment code, which only the blinding service can issue.
async fn randomise_one(system: &System) -> pb::RandomiseResponse {
    system.activate(RESPINE_YAML).await;
    let site = system.token("sam", &["site_investigator"], &["FR-MTP"]);
    system
        .randomisation_client(&site)
        .await
        .randomise(respine_request("FR-MTP", "MTP-001", 72.0))
        .await
        .expect("randomise over TLS")
        .into_inner()
}

fn assert_issued_code(response: &pb::RandomiseResponse) {
    assert!(
        response.treatment_code.starts_with("R-") && response.treatment_code.len() == 8,
        "a treatment code from the blinding service: {response:?}"
    );
}

/// `--target all` with mutual TLS: real calls succeed with a valid client
/// certificate, including randomisation's own call to blinding at the
/// loopback address it infers (upgraded to https), and the CLI can call it.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_with_a_valid_certificate_is_served() {
    let pki = Pki::new();
    let system = System::all_in_one_over_tls(&pki.server_env(true), pki.client());
    let response = randomise_one(&system).await;
    assert_issued_code(&response);
    let admin = system.token("ada", &["trial_admin"], &[]);
    let trial = system
        .randomisation_client(&admin)
        .await
        .get_trial(pb::GetTrialRequest {
            trial_id: "RESPINE".into(),
        })
        .await
        .expect("get trial over TLS")
        .into_inner();
    assert_eq!(trial.trial_id, "RESPINE");

    let cli = |extra: &[&str]| {
        std::process::Command::new(equipoise_binary())
            .arg("client")
            .args(["--endpoint", &system.randomisation.https_endpoint()])
            .args(["--token", &admin])
            .args(extra)
            .args(["get-trial", "RESPINE"])
            .output()
            .expect("run equipoise client")
    };
    let (ca, cert, key) = (pki.file("ca.crt"), pki.file("tls.crt"), pki.file("tls.key"));
    let output = cli(&["--ca-cert", &ca, "--cert", &cert, "--key", &key]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("RESPINE"),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = cli(&["--ca-cert", &ca]);
    assert!(
        !output.status.success(),
        "the CLI without a client certificate is refused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_clients_are_refused() {
    let pki = Pki::new();
    let system = System::all_in_one_over_tls(&pki.server_env(false), pki.client());
    let replica = &system.randomisation;
    // Without required client certificates, TLS alone is enough...
    health(
        &replica.https_endpoint(),
        Some(pki.client_without_certificate()),
    )
    .await
    .expect("a TLS client is served");
    // ...and plaintext to the same port is not.
    let refused = health(&replica.endpoint(), None).await;
    assert!(refused.is_err(), "a plaintext client was served");
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_without_a_certificate_are_refused_when_one_is_required() {
    let pki = Pki::new();
    let system = System::all_in_one_over_tls(&pki.server_env(true), pki.client());
    let endpoint = system.randomisation.https_endpoint();
    health(&endpoint, Some(pki.client()))
        .await
        .expect("a client with a certificate is served");
    let refused = health(&endpoint, Some(pki.client_without_certificate())).await;
    assert!(
        refused.is_err(),
        "a client without a certificate was served"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_from_another_ca_are_refused() {
    let pki = Pki::new();
    let system = System::all_in_one_over_tls(&pki.server_env(true), pki.client());
    let endpoint = system.randomisation.https_endpoint();
    health(&endpoint, Some(pki.client()))
        .await
        .expect("a client with the CA's certificate is served");
    let refused = health(&endpoint, Some(pki.client_from_other_ca())).await;
    assert!(
        refused.is_err(),
        "a client with another CA's certificate was served"
    );
}

/// Three processes at each other's https:// URLs, each requiring client
/// certificates: a treatment code proves randomisation called blinding.
#[tokio::test(flavor = "multi_thread")]
async fn separate_services_call_each_other_over_mutual_tls() {
    let pki = Pki::new();
    let system = System::separate_over_tls(&pki.server_env(true), pki.client());
    let response = randomise_one(&system).await;
    assert_issued_code(&response);
    let blinding = system.blinding.as_ref().expect("blinding runs apart");
    let refused = health(&blinding.endpoint(), None).await;
    assert!(refused.is_err(), "blinding served a plaintext client");
}

#[test]
fn a_missing_certificate_file_stops_start_up_naming_the_setting() {
    let pki = Pki::new();
    let missing = pki.path("absent.crt");
    let mut env = pki.server_env(false);
    env[0] = ("EQUIPOISE_TLS__CERT_FILE", missing.display().to_string());
    let stderr = Replica::start_expecting_failure(&env);
    assert!(
        stderr.contains(&format!("tls.cert_file {}", missing.display())),
        "{stderr}"
    );
    assert!(stderr.contains("No such file"), "{stderr}");
}

/// Allocation locks over `rediss://`, with a client certificate: the
/// service starts (it pings Redis first) and randomises. Without the CA it
/// cannot check Redis's certificate and refuses to start.
#[tokio::test(flavor = "multi_thread")]
async fn allocation_locks_reach_redis_over_tls() {
    let pki = Pki::new();
    let redis = RedisServer::start_tls(RedisTls {
        cert_file: pki.path("tls.crt"),
        key_file: pki.path("tls.key"),
        ca_file: pki.path("ca.crt"),
    });
    let mut env = vec![
        ("EQUIPOISE_RANDOMISATION__REDIS_URL", redis.tls_url()),
        (
            "EQUIPOISE_RANDOMISATION__REDIS_CERT_FILE",
            pki.file("tls.crt"),
        ),
        (
            "EQUIPOISE_RANDOMISATION__REDIS_KEY_FILE",
            pki.file("tls.key"),
        ),
    ];
    let mut untrusting = env.clone();
    untrusting.push((
        "EQUIPOISE_RANDOMISATION__BLINDING_URL",
        "http://127.0.0.1:1".into(),
    ));
    let stderr = Replica::start_expecting_failure(&untrusting);
    assert!(
        stderr.contains("randomisation.redis_url") && stderr.contains("certificate"),
        "{stderr}"
    );

    env.push(("EQUIPOISE_RANDOMISATION__REDIS_CA_FILE", pki.file("ca.crt")));
    let system = System::all_in_one(&env);
    assert_issued_code(&randomise_one(&system).await);
}

/// The randomisation database over TLS (`sslmode=verify-full`): the service
/// migrates and randomises; with another CA as `sslrootcert` it refuses to
/// start, so the certificate really is checked.
#[tokio::test(flavor = "multi_thread")]
async fn the_database_is_reached_over_tls() {
    let pki = Pki::new();
    let postgres = PostgresServer::start_tls(&pki.cert, &pki.key);
    let url = |ca: &str| {
        format!(
            "postgres://equipoise@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}",
            postgres.port,
            pki.file(ca)
        )
    };
    let stderr = Replica::start_expecting_failure(&[
        ("EQUIPOISE_RANDOMISATION__DATABASE_URL", url("other-ca.crt")),
        (
            "EQUIPOISE_RANDOMISATION__BLINDING_URL",
            "http://127.0.0.1:1".into(),
        ),
    ]);
    assert!(stderr.contains("randomisation.database_url"), "{stderr}");

    let system = System::all_in_one(&[("EQUIPOISE_RANDOMISATION__DATABASE_URL", url("ca.crt"))]);
    assert_issued_code(&randomise_one(&system).await);
}
