//! Building the randomisation service from its settings (embedded default:
//! SQLite file and in-process locks under the data directory).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use equipoise_common::serve::Services;
use equipoise_common::settings::SettingsError;
use equipoise_common::tls::{PemKind, TlsError, install_crypto_provider, read_pem};

use equipoise_common::grpc::client::AuthenticatedChannel;

use crate::grpc::{
    BlindingSupportGrpc, BlindingSupportServiceServer, GrpcCodeIssuer, RandomisationGrpc,
    RandomisationServiceServer,
};
use crate::lock::{AllocationLocks, InProcessLocks, LockError, RedisLockTimings, RedisLocks};
use crate::seal::SealError;
use crate::service::{CodeIssuer, CodeReconciler, Limits, RandomisationService};
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
    /// Names its own setting (`database_url` or `database_owner_url`).
    #[error(transparent)]
    DatabaseRoles(Box<equipoise_common::store::RoleError>),
    #[error("randomisation.redis_url: {0}")]
    Redis(LockError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("seal key: {0}")]
    Seal(#[from] SealError),
    #[error("data directory {path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Builds the service; `codes` reaches the blinding service (see
/// [`code_issuer`]).
pub async fn build_service(
    settings: &RandomisationSettings,
    data_dir: &Path,
    codes: Arc<dyn CodeIssuer>,
) -> Result<Arc<RandomisationService>, StartupError> {
    std::fs::create_dir_all(data_dir).map_err(|e| StartupError::DataDir {
        path: data_dir.to_owned(),
        reason: e.to_string(),
    })?;
    let store = open_store(settings, data_dir).await?;
    let locks = open_locks(settings).await?;
    let limits = Limits {
        max_simulated_allocations: settings.max_simulated_allocations,
        max_concurrent_simulations: settings.max_concurrent_simulations,
    };
    let sealer = settings.sealer(data_dir)?;
    let service =
        RandomisationService::new(store, locks, sealer, limits, codes).with_faults(settings.faults);
    Ok(Arc::new(service))
}

async fn open_store(
    settings: &RandomisationSettings,
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
        #[cfg(feature = "fault-injection")]
        store.hold_batches_before_commit(settings.faults.hold_in_batch_ms);
        return Ok(Arc::new(store));
    }
    let path = settings.sqlite_path(data_dir);
    let store = SqliteStore::open(&path)
        .await
        .map_err(|source| StartupError::Store {
            path: path.clone(),
            source,
        })?;
    #[cfg(feature = "fault-injection")]
    store.hold_batches_before_commit(settings.faults.hold_in_batch_ms);
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
    let locks = RedisLocks::connect_with_tls(url, timings, redis_tls(settings)?)
        .await
        .map_err(StartupError::Redis)?;
    Ok(Arc::new(locks))
}

/// The CA and client certificate for a `rediss://` Redis, when configured;
/// a missing file stops start-up naming its setting.
fn redis_tls(
    settings: &RandomisationSettings,
) -> Result<Option<redis::TlsCertificates>, StartupError> {
    // A `rediss://` client asks rustls for the process's provider.
    install_crypto_provider();
    let client_tls = match (&settings.redis_cert_file, &settings.redis_key_file) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read_pem("randomisation.redis_cert_file", cert, PemKind::Certificates)?,
            client_key: read_pem("randomisation.redis_key_file", key, PemKind::PrivateKey)?,
        }),
        (Some(_), None) => Err(TlsError::Unpaired {
            set: "randomisation.redis_cert_file",
            missing: "randomisation.redis_key_file",
        })?,
        (None, Some(_)) => Err(TlsError::Unpaired {
            set: "randomisation.redis_key_file",
            missing: "randomisation.redis_cert_file",
        })?,
    };
    let root_cert = settings
        .redis_ca_file
        .as_deref()
        .map(|path| read_pem("randomisation.redis_ca_file", path, PemKind::Certificates))
        .transpose()?;
    if client_tls.is_none() && root_cert.is_none() {
        return Ok(None);
    }
    Ok(Some(redis::TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// The blinding service's `AssignCode` over `channel` (authenticated as
/// `service:randomisation`), with the configured call timeout.
pub fn code_issuer(
    settings: &RandomisationSettings,
    channel: AuthenticatedChannel,
) -> Arc<dyn CodeIssuer> {
    let timeout = Duration::from_millis(settings.blinding_call_timeout_ms);
    Arc::new(GrpcCodeIssuer::new(channel).with_call_timeout(timeout))
}

/// Starts the background reconciler of pending treatment codes; stop it
/// after the server has drained.
pub fn start_reconciler(
    settings: &RandomisationSettings,
    service: Arc<RandomisationService>,
) -> CodeReconciler {
    let interval = Duration::from_millis(settings.code_reconcile_interval_ms);
    CodeReconciler::spawn(service, interval)
}

/// Mounts both gRPC services, refusing messages over `max_message_bytes`.
/// Health reports them under their generated names,
/// `equipoise.randomisation.v1.RandomisationService` and
/// `equipoise.randomisation.v1.BlindingSupportService`.
pub fn add_routes(
    services: &mut Services,
    service: Arc<RandomisationService>,
    max_message_bytes: usize,
) {
    let encoding = max_message_bytes.max(4 * 1024 * 1024);
    let server = RandomisationServiceServer::new(RandomisationGrpc::new(service.clone()))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(encoding);
    services.add(server);
    let support = BlindingSupportServiceServer::new(BlindingSupportGrpc::new(service))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(encoding);
    services.add(support);
}
