//! What every Equipoise server provides (docs/architecture.md, "Operations"): gRPC health, server
//! reflection v1 and v1alpha, bearer-token authentication, one log line per
//! call, message-size limits and graceful shutdown on SIGTERM that tells
//! health checkers first.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::ServerTlsConfig;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tonic_web::GrpcWebLayer;
use tower::util::option_layer;
use tower_http::cors::CorsLayer;

use crate::auth::{AuthLayer, TokenVerifier};
use crate::grpc::call_log::CallLogLayer;
use crate::grpc::web::{Page, PageLayer};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection could not be built: {0}")]
    Reflection(String),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The certificate and key do not make a usable TLS configuration
    /// (e.g. the key is not the certificate's).
    #[error("tls.cert_file and tls.key_file: {0}")]
    Tls(String),
}

/// The gRPC services one process serves. Each is reported to the health
/// service under its generated name, so the two cannot drift apart.
#[derive(Default)]
pub struct Services {
    routes: RoutesBuilder,
    health_names: Vec<&'static str>,
}

impl Services {
    pub fn add<S>(&mut self, service: S) -> &mut Self
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.health_names.push(S::NAME);
        self.routes.add_service(service);
        self
    }
}

/// The services one process serves, and what it needs to serve them.
pub struct ServerParts {
    pub services: Services,
    /// Encoded descriptor sets of the services, for reflection.
    pub descriptor_sets: Vec<&'static [u8]>,
    pub verifier: Arc<TokenVerifier>,
    /// How long calls are still served after health turns NOT_SERVING on
    /// shutdown, so probes and load balancers route elsewhere first.
    pub drain_delay: Duration,
    /// Serve TLS (and check client certificates) with this; plaintext when
    /// unset.
    pub tls: Option<ServerTlsConfig>,
    /// gRPC-Web, the embedded page and CORS for other origins; gRPC over
    /// HTTP/2 only when unset.
    pub web: Option<WebParts>,
    /// Calls one connection may have in flight; more wait for a slot, so one
    /// client cannot take every worker.
    pub max_concurrent_calls_per_connection: usize,
    /// Longest a call may take to answer (a stream, to start answering);
    /// a client's shorter `grpc-timeout` wins.
    pub request_timeout: Duration,
}

/// What a server needs to serve browsers.
pub struct WebParts {
    pub page: Page,
    /// Present when other origins are allowed.
    pub cors: Option<CorsLayer>,
}

/// Serves until `shutdown` completes; then reports NOT_SERVING, keeps
/// serving for the drain delay, stops accepting and drains in-flight calls.
pub async fn serve(
    listener: TcpListener,
    parts: ServerParts,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let ServerParts {
        services,
        descriptor_sets,
        verifier,
        drain_delay,
        tls,
        web,
        max_concurrent_calls_per_connection,
        request_timeout,
    } = parts;
    let Services {
        mut routes,
        health_names,
    } = services;
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in &health_names {
        health
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    routes.add_service(health_service);
    add_reflection(&mut routes, &descriptor_sets)?;
    let drain = announce_shutdown(shutdown, health, health_names, drain_delay);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| ServeError::Tls(crate::grpc::tls::describe(&e)))?;
    }
    // Browsers speak HTTP/1.1: the page and gRPC-Web need it.
    let (page, grpc_web, cors) = match web {
        Some(web) => (
            Some(PageLayer::new(web.page)),
            Some(GrpcWebLayer::new()),
            web.cors,
        ),
        None => (None, None, None),
    };
    // CORS answers preflights before anything else; the page is served
    // before gRPC-Web is translated; the call log wraps authentication, so
    // refused calls get a line too.
    builder
        .accept_http1(page.is_some())
        .concurrency_limit_per_connection(max_concurrent_calls_per_connection)
        // The same limit in HTTP/2 SETTINGS: clients queue past it, and a
        // stream past it from one that does not is refused (REFUSED_STREAM).
        .max_concurrent_streams(u32::try_from(max_concurrent_calls_per_connection).ok())
        .timeout(request_timeout)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .layer(option_layer(cors))
        .layer(option_layer(page))
        .layer(option_layer(grpc_web))
        .layer(CallLogLayer)
        .layer(AuthLayer::new(verifier))
        .add_routes(routes.routes())
        .serve_with_incoming_shutdown(without_nagle(listener), drain)
        .await?;
    Ok(())
}

/// Accepted connections with TCP_NODELAY, as tonic sets on listeners it
/// binds itself: otherwise a reply written in more than one segment can wait
/// for the client's delayed ACK (40 ms on Linux).
fn without_nagle(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

/// Completes when the server may stop accepting: once `shutdown` has
/// completed, every service and the server as a whole (`""`) have been
/// NOT_SERVING for `drain_delay`. The statuses are then cleared, which ends
/// open health `Watch` streams; left open, they would hold the graceful
/// drain forever.
async fn announce_shutdown(
    shutdown: impl Future<Output = ()>,
    mut health: HealthReporter,
    names: Vec<&'static str>,
    drain_delay: Duration,
) {
    shutdown.await;
    let every_name = || names.iter().copied().chain([""]);
    for name in every_name() {
        health
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    tracing::info!(
        ?drain_delay,
        "health reports NOT_SERVING; calls are answered until the drain delay ends"
    );
    tokio::time::sleep(drain_delay).await;
    for name in every_name() {
        health.clear_service_status(name).await;
    }
}

/// Adds reflection v1 and v1alpha: common clients still ask v1alpha.
fn add_reflection(
    routes: &mut RoutesBuilder,
    descriptor_sets: &[&'static [u8]],
) -> Result<(), ServeError> {
    let builder = || {
        descriptor_sets.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
            |builder, set| builder.register_encoded_file_descriptor_set(set),
        )
    };
    let v1 = builder()
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let v1alpha = builder()
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    routes.add_service(v1).add_service(v1alpha);
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
