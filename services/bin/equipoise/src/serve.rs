//! `equipoise serve`: one binary, a target flag (docs/architecture.md, "Services"). `all` runs
//! every service in one process; separate deployments run one target each.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use equipoise_common::serve::{ServerParts, Services, serve};
use equipoise_randomisation::server::{self as randomisation, StartupError};
use tokio::net::TcpListener;

use crate::settings::Settings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Every service in one process.
    All,
    Randomisation,
}

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
}

pub async fn bind(settings: &Settings) -> Result<TcpListener, ServeError> {
    TcpListener::bind(settings.listen)
        .await
        .map_err(|e| ServeError::Listen {
            address: settings.listen.to_string(),
            reason: e.to_string(),
        })
}

/// Builds the target's services and serves them on `listener` until
/// `shutdown` completes.
pub async fn run(
    settings: &Settings,
    target: Target,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let verifier = Arc::new(settings.auth.verifier(&settings.data_dir)?);
    let mut services = Services::default();
    if matches!(target, Target::All | Target::Randomisation) {
        let service =
            randomisation::build_service(&settings.randomisation, &settings.data_dir).await?;
        randomisation::add_routes(&mut services, service, settings.max_message_bytes);
    }
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(%address, ?target, data_dir = %settings.data_dir.display(), "serving");
    let parts = ServerParts {
        services,
        descriptor_sets: vec![equipoise_proto::FILE_DESCRIPTOR_SET],
        verifier,
        drain_delay: Duration::from_millis(settings.drain_delay_ms),
    };
    serve(listener, parts, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}
