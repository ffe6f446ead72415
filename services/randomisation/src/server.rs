//! Building the randomisation service from its settings (embedded default:
//! SQLite file and in-process locks under the data directory).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use equipoise_common::serve::Services;
use equipoise_common::settings::SettingsError;

use crate::grpc::{RandomisationGrpc, RandomisationServiceServer};
use crate::lock::{AllocationLocks, InProcessLocks, LockError, RedisLockTimings, RedisLocks};
use crate::seal::SealError;
use crate::service::{Limits, RandomisationService};
use crate::settings::RandomisationSettings;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("randomisation database {path}: {source}")]
    Store { path: PathBuf, source: StoreError },
    #[error("randomisation.database_url: {0}")]
    Database(StoreError),
    #[error("randomisation.redis_url: {0}")]
    Redis(LockError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("seal key: {0}")]
    Seal(#[from] SealError),
    #[error("data directory {path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
}

pub async fn build_service(
    settings: &RandomisationSettings,
    data_dir: &Path,
) -> Result<Arc<RandomisationService>, StartupError> {
    std::fs::create_dir_all(data_dir).map_err(|e| StartupError::DataDir {
        path: data_dir.to_owned(),
        reason: e.to_string(),
    })?;
    let store = open_store(settings, data_dir).await?;
    let locks = open_locks(settings).await?;
    let limits = Limits {
        max_simulated_allocations: settings.max_simulated_allocations,
    };
    let service = RandomisationService::new(store, locks, settings.sealer(data_dir)?, limits)
        .with_faults(settings.faults);
    Ok(Arc::new(service))
}

async fn open_store(
    settings: &RandomisationSettings,
    data_dir: &Path,
) -> Result<Arc<dyn Store>, StartupError> {
    if let Some(url) = &settings.database_url {
        let store = PostgresStore::connect(url, settings.database_max_connections)
            .await
            .map_err(StartupError::Database)?;
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

async fn open_locks(
    settings: &RandomisationSettings,
) -> Result<Arc<dyn AllocationLocks>, StartupError> {
    let wait = Duration::from_millis(settings.lock_wait_ms);
    let Some(url) = &settings.redis_url else {
        return Ok(Arc::new(InProcessLocks::new(wait)));
    };
    let timings = RedisLockTimings {
        lease: Duration::from_millis(settings.lock_lease_ms),
        wait,
        command_timeout: Duration::from_millis(settings.redis_command_timeout_ms),
        connect_timeout: Duration::from_millis(settings.redis_connect_timeout_ms),
    };
    let locks = RedisLocks::connect(url, timings)
        .await
        .map_err(StartupError::Redis)?;
    Ok(Arc::new(locks))
}

/// Mounts the gRPC service, refusing messages over `max_message_bytes`.
/// Health reports it under its generated name,
/// `equipoise.randomisation.v1.RandomisationService`.
pub fn add_routes(
    services: &mut Services,
    service: Arc<RandomisationService>,
    max_message_bytes: usize,
) {
    let server = RandomisationServiceServer::new(RandomisationGrpc::new(service))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes.max(4 * 1024 * 1024));
    services.add(server);
}
