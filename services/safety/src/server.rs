//! Building the safety service from its settings (embedded default: a
//! SQLite file under the data directory), mounting its routes, and the
//! background retry of pending classifications.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use equipoise_common::serve::Services;
use equipoise_common::settings::OutOfRange;
use equipoise_common::telemetry::metrics;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::grpc::{SafetyGrpc, SafetyServiceServer};
use crate::service::{
    Allocations, Blinding, RETRY_BATCH, Rules, SafetyService, TrialDefinitions, system_clock,
};
use crate::settings::SafetySettings;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("safety database {path}: {source}")]
    Store { path: PathBuf, source: StoreError },
    #[error("safety.database_url: {0}")]
    Database(StoreError),
    /// Names its own setting (`database_url` or `database_owner_url`).
    #[error(transparent)]
    DatabaseRoles(Box<equipoise_common::store::RoleError>),
    #[error(transparent)]
    Settings(#[from] OutOfRange),
    #[error("data directory {path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
}

/// Opens the store and builds the service. `blinding` is the port to the
/// blinding service (`grpc::blinding_client::GrpcBlinding`), `trials` the
/// source of trial definitions.
pub async fn build_service(
    settings: &SafetySettings,
    data_dir: &Path,
    blinding: Arc<dyn Blinding>,
    trials: Arc<dyn TrialDefinitions>,
    allocations: Arc<dyn Allocations>,
) -> Result<Arc<SafetyService>, StartupError> {
    settings.validate()?;
    std::fs::create_dir_all(data_dir).map_err(|e| StartupError::DataDir {
        path: data_dir.to_owned(),
        reason: e.to_string(),
    })?;
    let store = open_store(settings, data_dir).await?;
    let service = SafetyService::new(
        store,
        blinding,
        trials,
        system_clock(),
        Rules::regulatory(),
        settings.sender_id.trim(),
    )
    .with_allocations(allocations);
    Ok(Arc::new(service))
}

async fn open_store(
    settings: &SafetySettings,
    data_dir: &Path,
) -> Result<Arc<dyn Store>, StartupError> {
    if let Some(url) = &settings.database_url {
        let owner_url = settings.database_owner_url.as_deref();
        let store =
            PostgresStore::connect_with_owner(url, owner_url, settings.database_max_connections)
                .await
                .map_err(|e| match e {
                    StoreError::Roles(roles) => StartupError::DatabaseRoles(roles),
                    other => StartupError::Database(other),
                })?;
        return Ok(Arc::new(store));
    }
    let path = settings.sqlite_path(data_dir);
    let store = SqliteStore::open(&path)
        .await
        .map_err(|source| StartupError::Store {
            path: path.clone(),
            source,
        })?;
    Ok(Arc::new(store))
}

/// Mounts the gRPC service, refusing messages over `max_message_bytes`.
/// Health reports it under `equipoise.safety.v1.SafetyService`.
pub fn add_routes(services: &mut Services, service: Arc<SafetyService>, max_message_bytes: usize) {
    let server = SafetyServiceServer::new(SafetyGrpc::new(service))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes.max(4 * 1024 * 1024));
    services.add(server);
}

/// The background task completing pending classifications every
/// `safety.classification_retry_interval_ms`.
pub struct ClassificationRetry {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ClassificationRetry {
    pub fn spawn(service: Arc<SafetyService>, interval: Duration) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stopped.changed() => return,
                    () = tokio::time::sleep(interval) => {}
                }
                tokio::select! {
                    _ = stopped.changed() => return,
                    result = service.retry_pending(RETRY_BATCH) => {
                        if let Err(error) = result {
                            tracing::warn!(%error, "classification retry failed");
                        }
                    }
                }
                // The overdue gauge rides on the same beat: one small read.
                match service.overdue_obligations().await {
                    Ok(overdue) => metrics::record_overdue_obligations(overdue),
                    Err(error) => tracing::warn!(%error, "could not count overdue obligations"),
                }
            }
        });
        Self { stop, task }
    }

    /// Stops the task, abandoning a round in progress: pending cases stay
    /// pending and are picked up on the next start.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await
            && error.is_panic()
        {
            tracing::error!(%error, "classification retry panicked");
        }
    }
}

pub fn start_classification_retry(
    settings: &SafetySettings,
    service: Arc<SafetyService>,
) -> ClassificationRetry {
    ClassificationRetry::spawn(
        service,
        Duration::from_millis(settings.classification_retry_interval_ms),
    )
}
