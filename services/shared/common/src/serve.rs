//! What every Equipoise server provides (docs/architecture.md, "Operations"): gRPC health, server
//! reflection v1 and v1alpha, bearer-token authentication, message-size
//! limits and graceful shutdown on SIGTERM.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::RoutesBuilder;

use crate::auth::{AuthLayer, TokenVerifier};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection could not be built: {0}")]
    Reflection(String),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The services one process serves, and what it needs to serve them.
pub struct ServerParts {
    /// The Equipoise services, already added.
    pub routes: RoutesBuilder,
    /// Fully qualified names reported as SERVING by the health service.
    pub health_names: Vec<&'static str>,
    /// Encoded descriptor sets of the services, for reflection.
    pub descriptor_sets: Vec<&'static [u8]>,
    pub verifier: Arc<TokenVerifier>,
}

/// Serves until `shutdown` completes, then drains in-flight calls.
pub async fn serve(
    listener: TcpListener,
    parts: ServerParts,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let ServerParts {
        mut routes,
        health_names,
        descriptor_sets,
        verifier,
    } = parts;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    for name in health_names {
        health_reporter
            .set_service_status(name, tonic_health::ServingStatus::Serving)
            .await;
    }
    routes.add_service(health_service);
    add_reflection(&mut routes, &descriptor_sets)?;
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .layer(AuthLayer::new(verifier))
        .add_routes(routes.routes())
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
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
    tracing::info!("shutdown signal received; draining in-flight calls");
}
