//! Building the randomisation service from its settings (embedded default:
//! SQLite file and in-process locks under the data directory).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use equipoise_common::serve::Services;
use equipoise_common::settings::{SettingsError, ensure_secret_file};
use serde::{Deserialize, Serialize};

use crate::grpc::{RandomisationGrpc, RandomisationServiceServer};
use crate::lock::{AllocationLocks, InProcessLocks, LockError, RedisLockTimings, RedisLocks};
use crate::seal::{SealError, Sealer};
use crate::service::faults::Faults;
use crate::service::{Limits, RandomisationService};
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RandomisationSettings {
    /// PostgreSQL URL for multi-replica deployments; unset: the SQLite file.
    pub database_url: Option<String>,
    pub database_max_connections: u32,
    /// Redis URL for allocation locks shared by replicas; unset: in-process.
    pub redis_url: Option<String>,
    /// How long a Redis lock lives if its holder stops; far longer than an
    /// allocation takes.
    pub lock_lease_ms: u64,
    /// Longest one Redis command may take before Redis counts as down.
    pub redis_command_timeout_ms: u64,
    pub redis_connect_timeout_ms: u64,
    /// Default: `<data_dir>/randomisation.db`.
    pub sqlite_path: Option<PathBuf>,
    /// 32-byte hex key that seals master seeds. Default:
    /// `<data_dir>/seal.key`, created on first start. In production, mount it
    /// from a secret and keep a copy in escrow: without it no list can be
    /// regenerated.
    pub seal_key_file: Option<PathBuf>,
    /// How long `Randomise` waits for a busy stratum before UNAVAILABLE.
    pub lock_wait_ms: u64,
    pub max_simulated_allocations: u64,
    /// Test-only pauses (`fault-injection` builds).
    pub faults: Faults,
}

impl Default for RandomisationSettings {
    fn default() -> Self {
        Self {
            database_url: None,
            database_max_connections: 10,
            redis_url: None,
            lock_lease_ms: 10_000,
            redis_command_timeout_ms: 500,
            redis_connect_timeout_ms: 1_000,
            sqlite_path: None,
            seal_key_file: None,
            lock_wait_ms: 5_000,
            max_simulated_allocations: Limits::default().max_simulated_allocations,
            faults: Faults::default(),
        }
    }
}

impl RandomisationSettings {
    pub fn sqlite_path(&self, data_dir: &Path) -> PathBuf {
        self.sqlite_path
            .clone()
            .unwrap_or_else(|| data_dir.join("randomisation.db"))
    }

    pub fn sealer(&self, data_dir: &Path) -> Result<Sealer, StartupError> {
        let path = self
            .seal_key_file
            .clone()
            .unwrap_or_else(|| data_dir.join("seal.key"));
        let key = ensure_secret_file(&path, "seal key")?;
        Ok(Sealer::new(&key)?)
    }
}

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
