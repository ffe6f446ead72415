//! Building the randomisation service from its settings (embedded default:
//! SQLite file and in-process locks under the data directory).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use equipoise_common::settings::{SettingsError, ensure_secret_file};
use serde::{Deserialize, Serialize};
use tonic::service::RoutesBuilder;

use crate::grpc::{RandomisationGrpc, RandomisationServiceServer};
use crate::lock::InProcessLocks;
use crate::seal::{SealError, Sealer};
use crate::service::{Limits, RandomisationService};
use crate::store::StoreError;
use crate::store::sqlite::SqliteStore;

/// The name the health service reports this service under.
pub const HEALTH_NAME: &str = "equipoise.randomisation.v1.RandomisationService";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RandomisationSettings {
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
}

impl Default for RandomisationSettings {
    fn default() -> Self {
        Self {
            sqlite_path: None,
            seal_key_file: None,
            lock_wait_ms: 5_000,
            max_simulated_allocations: Limits::default().max_simulated_allocations,
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
    let path = settings.sqlite_path(data_dir);
    let store = SqliteStore::open(&path)
        .await
        .map_err(|source| StartupError::Store {
            path: path.clone(),
            source,
        })?;
    let locks = InProcessLocks::new(Duration::from_millis(settings.lock_wait_ms));
    let limits = Limits {
        max_simulated_allocations: settings.max_simulated_allocations,
    };
    Ok(Arc::new(RandomisationService::new(
        Arc::new(store),
        Arc::new(locks),
        settings.sealer(data_dir)?,
        limits,
    )))
}

/// Mounts the gRPC service, refusing messages over `max_message_bytes`.
pub fn add_routes(
    routes: &mut RoutesBuilder,
    service: Arc<RandomisationService>,
    max_message_bytes: usize,
) {
    let server = RandomisationServiceServer::new(RandomisationGrpc::new(service))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes.max(4 * 1024 * 1024));
    routes.add_service(server);
}
