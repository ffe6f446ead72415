//! `equipoise serve`: one binary, a target flag (docs/architecture.md, "Services"). `all` runs
//! every service in one process; separate deployments run one target each.
//! Even in one process the services call each other over gRPC, as
//! `service:<name>`, so `all` exercises exactly what a split deployment does.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use equipoise_blinding::BlindingService;
use equipoise_blinding::grpc::randomisation_client::GrpcRandomisationLookup;
use equipoise_blinding::server as blinding;
use equipoise_common::grpc::client::{
    AuthenticatedChannel, ClientError, Timeouts, authenticated, connect_lazy_with_tls,
};
use equipoise_common::serve::{ServerParts, Services, WebParts, serve};
use equipoise_common::tls::TlsError;
use equipoise_randomisation::server::{self as randomisation, StartupError};
use equipoise_randomisation::service::CodeReconciler;
use equipoise_safety::SafetyService;
use equipoise_safety::grpc::blinding_client::GrpcBlinding;
use equipoise_safety::grpc::randomisation_client::GrpcRandomisation;
use equipoise_safety::server as safety;
use tokio::net::TcpListener;

use crate::settings::Settings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Every service in one process.
    All,
    Randomisation,
    Blinding,
    Safety,
}

impl Target {
    fn runs_randomisation(self) -> bool {
        matches!(self, Target::All | Target::Randomisation)
    }

    fn runs_blinding(self) -> bool {
        matches!(self, Target::All | Target::Blinding)
    }

    fn runs_safety(self) -> bool {
        matches!(self, Target::All | Target::Safety)
    }

    /// The telemetry resource's `service.name` unless `OTEL_SERVICE_NAME`
    /// gives one.
    pub fn service_name(self) -> &'static str {
        match self {
            Target::All => "equipoise",
            Target::Randomisation => "equipoise-randomisation",
            Target::Blinding => "equipoise-blinding",
            Target::Safety => "equipoise-safety",
        }
    }
}

/// The name each service calls the others as: its token's `service:<name>`.
pub const RANDOMISATION_SERVICE: &str = "randomisation";
pub const BLINDING_SERVICE: &str = "blinding";
pub const SAFETY_SERVICE: &str = "safety";

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("listen address {address}: {reason}")]
    Listen { address: String, reason: String },
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error(transparent)]
    Auth(#[from] equipoise_common::settings::SettingsError),
    #[error(transparent)]
    Server(#[from] equipoise_common::serve::ServeError),
    /// A dependency's address is needed and cannot be inferred.
    #[error(
        "{key} must be set to serve --target {target}: it is the address of the {service} service"
    )]
    MissingUrl {
        key: &'static str,
        target: &'static str,
        service: &'static str,
    },
    #[error("{key}: {source}")]
    Client {
        key: &'static str,
        source: ClientError,
    },
    #[error(transparent)]
    BlindingStartup(#[from] blinding::StartupError),
    #[error(transparent)]
    SafetyStartup(#[from] safety::StartupError),
    #[error(transparent)]
    Web(#[from] equipoise_common::grpc::web::WebError),
    #[error(transparent)]
    KeyCustody(#[from] crate::settings::KeyCustodyError),
    /// A `[tls]` file that cannot be used, or an https:// URL without a CA.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

pub async fn bind(settings: &Settings) -> Result<TcpListener, ServeError> {
    TcpListener::bind(settings.listen)
        .await
        .map_err(|e| ServeError::Listen {
            address: settings.listen.to_string(),
            reason: e.to_string(),
        })
}

/// The page and gRPC-Web, unless `web.enabled` is off.
fn web_parts(settings: &Settings) -> Result<Option<WebParts>, ServeError> {
    if !settings.web.enabled {
        return Ok(None);
    }
    Ok(Some(WebParts {
        page: crate::page::PAGE,
        cors: settings.web.cors()?,
    }))
}

/// Builds the target's services and serves them on `listener` until
/// `shutdown` completes.
pub async fn run(
    settings: &Settings,
    target: Target,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    // First, so a missing certificate stops start-up before anything opens.
    let tls = settings.tls.load()?;
    settings.key_custody(target.runs_randomisation())?;
    let verifier = Arc::new(settings.auth.verifier(&settings.data_dir)?);
    // Every service keys its subject tags alike, so tags match across them.
    equipoise_common::telemetry::set_subject_tag_key(
        &settings.auth.service_secret(&settings.data_dir)?,
    );
    let local = listener.local_addr().map_err(|e| ServeError::Listen {
        address: settings.listen.to_string(),
        reason: e.to_string(),
    })?;
    let mut services = Services::default();
    let mut randomisation_service = None;
    if target.runs_randomisation() {
        let url = blinding_url(settings, target, local)?;
        let channel = service_channel(
            settings,
            RANDOMISATION_SERVICE,
            &url,
            (
                "randomisation.blinding_url",
                settings.randomisation.blinding_call_timeout_ms,
            ),
        )?;
        let codes = randomisation::code_issuer(&settings.randomisation, channel);
        let service =
            randomisation::build_service(&settings.randomisation, &settings.data_dir, codes)
                .await?;
        randomisation::add_routes(&mut services, service.clone(), settings.max_message_bytes);
        randomisation_service = Some(service);
    }
    let blinding_service = if target.runs_blinding() {
        Some(blinding_routes(settings, target, local, &mut services).await?)
    } else {
        None
    };
    let safety_service = if target.runs_safety() {
        Some(safety_routes(settings, target, local, &mut services).await?)
    } else {
        None
    };
    // Started once everything is built, so a failed start leaves no task.
    let reconciler: Option<CodeReconciler> = randomisation_service
        .map(|service| randomisation::start_reconciler(&settings.randomisation, service));
    let classification_retry =
        safety_service.map(|service| safety::start_classification_retry(&settings.safety, service));
    let server_tls = tls.server_config();
    tracing::info!(
        address = %local,
        ?target,
        data_dir = %settings.data_dir.display(),
        tls = server_tls.is_some(),
        client_certificates = tls.require_client_cert,
        "serving"
    );
    let parts = ServerParts {
        services,
        descriptor_sets: vec![equipoise_proto::FILE_DESCRIPTOR_SET],
        verifier,
        drain_delay: Duration::from_millis(settings.drain_delay_ms),
        tls: server_tls,
        web: web_parts(settings)?,
        max_concurrent_calls_per_connection: settings.max_concurrent_calls_per_connection,
        request_timeout: Duration::from_millis(settings.request_timeout_ms),
    };
    // Watch streams never end by themselves: end them when the drain begins,
    // so watchers reconnect (with their cursor) to a replica that stays.
    let shutdown = async move {
        shutdown.await;
        if let Some(service) = &blinding_service {
            service.shut_down();
        }
    };
    let served = serve(listener, parts, shutdown).await;
    // After the drain: no call is left that could race the reconciler's stop.
    if let Some(reconciler) = reconciler {
        reconciler.stop().await;
    }
    if let Some(retry) = classification_retry {
        retry.stop().await;
    }
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// Mounts the blinding service, which calls randomisation as
/// `service:blinding`.
async fn blinding_routes(
    settings: &Settings,
    target: Target,
    local: SocketAddr,
    services: &mut Services,
) -> Result<Arc<BlindingService>, ServeError> {
    let url = dependency_url(
        settings.blinding.randomisation_url.as_deref(),
        target,
        local,
        ("blinding.randomisation_url", "blinding", "randomisation"),
    )?;
    let channel = service_channel(
        settings,
        BLINDING_SERVICE,
        &url,
        (
            "blinding.randomisation_url",
            settings.blinding.randomisation_call_timeout_ms,
        ),
    )?;
    let lookup = Arc::new(GrpcRandomisationLookup::new(channel));
    let service = blinding::build_service(&settings.blinding, &settings.data_dir, lookup).await?;
    blinding::add_routes(services, service.clone(), settings.max_message_bytes);
    Ok(service)
}

/// Mounts the safety service, which calls blinding (safety reveals, DSMB
/// arms) and randomisation (definitions, allocation sites) as
/// `service:safety`.
async fn safety_routes(
    settings: &Settings,
    target: Target,
    local: SocketAddr,
    services: &mut Services,
) -> Result<Arc<SafetyService>, ServeError> {
    let timeout = settings.safety.blinding_call_timeout_ms;
    let blinding_url = dependency_url(
        settings.safety.blinding_url.as_deref(),
        target,
        local,
        ("safety.blinding_url", "safety", "blinding"),
    )?;
    let randomisation_url = dependency_url(
        settings.safety.randomisation_url.as_deref(),
        target,
        local,
        ("safety.randomisation_url", "safety", "randomisation"),
    )?;
    let to_blinding = service_channel(
        settings,
        SAFETY_SERVICE,
        &blinding_url,
        ("safety.blinding_url", timeout),
    )?;
    let to_randomisation = service_channel(
        settings,
        SAFETY_SERVICE,
        &randomisation_url,
        ("safety.randomisation_url", timeout),
    )?;
    let randomisation = Arc::new(GrpcRandomisation::new(to_randomisation));
    let service = safety::build_service(
        &settings.safety,
        &settings.data_dir,
        Arc::new(GrpcBlinding::new(to_blinding)),
        randomisation.clone(),
        randomisation,
    )
    .await?;
    safety::add_routes(services, service.clone(), settings.max_message_bytes);
    Ok(service)
}

/// Where randomisation finds the blinding service.
fn blinding_url(
    settings: &Settings,
    target: Target,
    local: SocketAddr,
) -> Result<String, ServeError> {
    dependency_url(
        settings.randomisation.blinding_url.as_deref(),
        target,
        local,
        ("randomisation.blinding_url", "randomisation", "blinding"),
    )
}

/// A dependency's URL: the configured one; else, when every service runs in
/// this process, this process itself over loopback. `names` is (setting
/// key, the target that needs it, the service it points at).
pub fn dependency_url(
    configured: Option<&str>,
    target: Target,
    local: SocketAddr,
    names: (&'static str, &'static str, &'static str),
) -> Result<String, ServeError> {
    match configured {
        Some(url) => Ok(url.to_owned()),
        None if target == Target::All => Ok(loopback_url(local)),
        None => Err(ServeError::MissingUrl {
            key: names.0,
            target: names.1,
            service: names.2,
        }),
    }
}

/// The URL a client in this process uses to reach `listen`: a wildcard
/// address is reached through the loopback of its family.
pub fn loopback_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

/// A lazily connected channel to `url` whose calls carry tokens for
/// `service:<caller>`. Lazy, so start-up order does not matter and a
/// dependency that restarts is reconnected. With `tls.ca_file` set the call
/// goes over TLS, presenting this service's certificate.
pub fn service_channel(
    settings: &Settings,
    caller: &str,
    url: &str,
    (key, call_timeout_ms): (&'static str, u64),
) -> Result<AuthenticatedChannel, ServeError> {
    let interceptor = settings
        .auth
        .service_interceptor(&settings.data_dir, caller)?;
    let timeouts = Timeouts {
        request: Duration::from_millis(call_timeout_ms),
        ..Timeouts::default()
    };
    let url = settings.tls.service_url(key, url)?;
    let tls = settings.tls.load()?.client_config();
    let channel = connect_lazy_with_tls(&url, timeouts, tls)
        .map_err(|source| ServeError::Client { key, source })?;
    Ok(authenticated(channel, interceptor))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: (&str, &str, &str) = ("randomisation.blinding_url", "randomisation", "blinding");

    fn address(text: &str) -> SocketAddr {
        text.parse().expect("a socket address")
    }

    #[test]
    fn wildcard_listen_addresses_are_reached_over_loopback() {
        assert_eq!(
            loopback_url(address("0.0.0.0:50051")),
            "http://127.0.0.1:50051"
        );
        assert_eq!(loopback_url(address("[::]:7000")), "http://[::1]:7000");
        assert_eq!(loopback_url(address("127.0.0.1:9")), "http://127.0.0.1:9");
        assert_eq!(loopback_url(address("10.1.2.3:443")), "http://10.1.2.3:443");
    }

    #[test]
    fn all_calls_itself_unless_a_url_is_configured() {
        let local = address("0.0.0.0:50051");
        assert_eq!(
            dependency_url(None, Target::All, local, NAMES).expect("inferred"),
            "http://127.0.0.1:50051"
        );
        assert_eq!(
            dependency_url(Some("http://blinding:50051"), Target::All, local, NAMES)
                .expect("configured"),
            "http://blinding:50051"
        );
        assert_eq!(
            dependency_url(
                Some("http://blinding:50051"),
                Target::Randomisation,
                local,
                NAMES
            )
            .expect("configured"),
            "http://blinding:50051"
        );
    }

    #[test]
    fn a_single_target_refuses_to_start_without_its_dependency_naming_the_key() {
        let error = dependency_url(None, Target::Randomisation, address("0.0.0.0:1"), NAMES)
            .expect_err("refused");
        assert_eq!(
            error.to_string(),
            "randomisation.blinding_url must be set to serve --target randomisation: it is the address of the blinding service"
        );
    }

    /// An https:// dependency needs a CA to check it against, and a CA
    /// that cannot be read is named by its setting.
    #[tokio::test]
    async fn https_dependencies_need_the_tls_ca_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = Settings {
            data_dir: dir.path().to_owned(),
            ..Settings::default()
        };
        let key = ("randomisation.blinding_url", 1000);
        let Err(error) = service_channel(&settings, "randomisation", "https://blinding:1", key)
        else {
            panic!("an https:// URL without tls.ca_file is refused");
        };
        let error = error.to_string();
        assert!(
            error.starts_with("randomisation.blinding_url is https://blinding:1"),
            "{error}"
        );
        assert!(error.contains("tls.ca_file"), "{error}");

        settings.tls.ca_file = Some(dir.path().join("missing-ca.crt"));
        let Err(error) = service_channel(&settings, "randomisation", "http://blinding:1", key)
        else {
            panic!("a missing CA file is refused");
        };
        assert!(error.to_string().starts_with("tls.ca_file "), "{error}");
    }

    #[test]
    fn targets_say_which_services_they_run() {
        assert!(Target::All.runs_randomisation() && Target::All.runs_blinding());
        assert!(
            Target::Randomisation.runs_randomisation() && !Target::Randomisation.runs_blinding()
        );
        assert!(Target::Blinding.runs_blinding() && !Target::Blinding.runs_randomisation());
    }

    /// Both services' channels carry tokens the server accepts as the
    /// calling service and nothing else.
    #[tokio::test]
    async fn service_channels_authenticate_as_their_service() {
        use tonic::service::Interceptor;
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = Settings {
            data_dir: dir.path().to_owned(),
            ..Settings::default()
        };
        let verifier = settings
            .auth
            .verifier(&settings.data_dir)
            .expect("verifier");
        for service in [RANDOMISATION_SERVICE, BLINDING_SERVICE, SAFETY_SERVICE] {
            // The channel is lazy: building it connects to nothing.
            service_channel(&settings, service, "http://127.0.0.1:1", ("test.url", 1000))
                .expect("a channel");
            let mut interceptor = settings
                .auth
                .service_interceptor(&settings.data_dir, service)
                .expect("interceptor");
            let request = interceptor.call(tonic::Request::new(())).expect("stamped");
            let header = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let caller = verifier.verify_header(header.as_deref()).expect("accepted");
            assert_eq!(caller.subject, format!("service:{service}"));
            assert_eq!(caller.roles.len(), 1);
        }
        let Err(bad) = service_channel(
            &settings,
            "randomisation",
            "not a url",
            ("randomisation.blinding_url", 1000),
        ) else {
            panic!("a malformed URL is refused");
        };
        assert!(
            bad.to_string().contains("randomisation.blinding_url"),
            "{bad}"
        );
    }
}
