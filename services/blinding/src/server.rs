//! Building the blinding service from its settings (embedded default: a
//! SQLite file under the data directory) and mounting its routes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use equipoise_common::serve::Services;
use equipoise_common::settings::OutOfRange;

use crate::grpc::{BlindingGrpc, BlindingServiceServer};
use crate::service::{BlindingService, RandomisationLookup, system_clock};
use crate::settings::BlindingSettings;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("blinding database {path}: {source}")]
    Store { path: PathBuf, source: StoreError },
    #[error("blinding.database_url: {0}")]
    Database(StoreError),
    /// Names its own setting (`database_url` or `database_owner_url`).
    #[error(transparent)]
    DatabaseRoles(Box<equipoise_common::store::RoleError>),
    #[error(transparent)]
    Settings(#[from] OutOfRange),
    #[error("data directory {path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
}

/// Opens the store and builds the service. `randomisation` is the port to
/// the randomisation service (`grpc::randomisation_client::GrpcRandomisationLookup`).
pub async fn build_service(
    settings: &BlindingSettings,
    data_dir: &Path,
    randomisation: Arc<dyn RandomisationLookup>,
) -> Result<Arc<BlindingService>, StartupError> {
    settings.validate()?;
    std::fs::create_dir_all(data_dir).map_err(|e| StartupError::DataDir {
        path: data_dir.to_owned(),
        reason: e.to_string(),
    })?;
    let store = open_store(settings, data_dir).await?;
    let service = BlindingService::new(
        store,
        randomisation,
        system_clock(),
        settings.low_pool_rule(),
    )
    .with_watch_poll(Duration::from_millis(settings.watch_poll_ms));
    Ok(Arc::new(service))
}

async fn open_store(
    settings: &BlindingSettings,
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
/// Health reports it under `equipoise.blinding.v1.BlindingService`.
pub fn add_routes(
    services: &mut Services,
    service: Arc<BlindingService>,
    max_message_bytes: usize,
) {
    let server = BlindingServiceServer::new(BlindingGrpc::new(service))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes.max(4 * 1024 * 1024));
    services.add(server);
}
