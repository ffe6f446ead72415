//! The Equipoise binary as a library, so tests can start the same servers
//! and run the same commands in-process.

pub mod cli;
pub mod page;
pub mod serve;
pub mod settings;

use equipoise_randomisation::store::StoreError;

/// Why a command failed; printed to stderr with a non-zero exit.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Settings(#[from] settings::SettingsError),
    #[error(transparent)]
    Keys(#[from] equipoise_common::settings::SettingsError),
    #[error(transparent)]
    Auth(#[from] equipoise_common::auth::AuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("blinding store: {0}")]
    BlindingStore(#[from] equipoise_blinding::store::StoreError),
    #[error("safety store: {0}")]
    SafetyStore(#[from] equipoise_safety::store::StoreError),
    #[error(transparent)]
    Startup(#[from] equipoise_randomisation::server::StartupError),
    #[error(transparent)]
    Chain(#[from] equipoise_common::audit::ChainBreak),
    #[error(transparent)]
    Head(#[from] equipoise_common::audit::HeadError),
    #[error(transparent)]
    Serve(#[from] serve::ServeError),
    #[error("telemetry: {0}")]
    Telemetry(#[from] equipoise_common::telemetry::TelemetryError),
    #[error("{}", cli::client::describe_status(.0))]
    Rpc(#[from] tonic::Status),
}
