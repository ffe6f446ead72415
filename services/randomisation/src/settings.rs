//! The randomisation service's settings: the `[randomisation]` table of
//! `config/equipoise.toml`, which documents every key.

use std::path::{Path, PathBuf};

use equipoise_common::settings::{OutOfRange, at_least, ensure_secret_file, owner_url_needs_url};
use serde::{Deserialize, Serialize};

use crate::seal::Sealer;
use crate::server::StartupError;
use crate::service::Limits;
use crate::service::faults::Faults;

/// The `[randomisation]` table. Every field is in `config/equipoise.toml`,
/// with its default and when to change it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RandomisationSettings {
    /// PostgreSQL URL for multi-replica deployments; unset: the SQLite file.
    pub database_url: Option<String>,
    /// The owner role's URL: migrations run as it at start-up, and it grants
    /// the role of `database_url` only what the service needs. Unset: one
    /// role does both (development only).
    pub database_owner_url: Option<String>,
    pub database_max_connections: u32,
    /// Redis URL for allocation locks shared by replicas; unset: in-process.
    pub redis_url: Option<String>,
    /// How long a Redis lock lives if its holder stops; far longer than an
    /// allocation takes.
    pub lock_lease_ms: u64,
    /// Longest one Redis command may take before Redis counts as down.
    pub redis_command_timeout_ms: u64,
    pub redis_connect_timeout_ms: u64,
    /// PEM CA bundle that a `rediss://` Redis's certificate is checked
    /// against; unset: the system's roots.
    pub redis_ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for a Redis that requires them
    /// (`tls-auth-clients yes`).
    pub redis_cert_file: Option<PathBuf>,
    pub redis_key_file: Option<PathBuf>,
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
    pub max_concurrent_simulations: u32,
    /// The blinding service, which issues treatment codes, e.g.
    /// `http://blinding:50051`. Unset: with `--target all`, this process's
    /// own address; with `--target randomisation`, start-up is refused.
    pub blinding_url: Option<String>,
    /// Longest one `AssignCode` call may take before the code counts as
    /// pending (UNAVAILABLE; the allocation stays committed).
    pub blinding_call_timeout_ms: u64,
    /// How often the reconciler completes codes still pending.
    pub code_reconcile_interval_ms: u64,
    /// Test-only pauses (`fault-injection` builds).
    pub faults: Faults,
}

impl Default for RandomisationSettings {
    fn default() -> Self {
        Self {
            database_url: None,
            database_owner_url: None,
            database_max_connections: 10,
            redis_url: None,
            lock_lease_ms: 10_000,
            redis_command_timeout_ms: 500,
            redis_connect_timeout_ms: 1_000,
            redis_ca_file: None,
            redis_cert_file: None,
            redis_key_file: None,
            sqlite_path: None,
            seal_key_file: None,
            lock_wait_ms: 5_000,
            max_simulated_allocations: Limits::default().max_simulated_allocations,
            max_concurrent_simulations: Limits::default().max_concurrent_simulations,
            blinding_url: None,
            blinding_call_timeout_ms: 2_000,
            code_reconcile_interval_ms: 5_000,
            faults: Faults::default(),
        }
    }
}

impl RandomisationSettings {
    /// Refuses values the service cannot work with, naming the key. No check
    /// relates the lease to the wait: a lease shorter than the wait is safe,
    /// because the database fences every commit.
    pub fn validate(&self) -> Result<(), OutOfRange> {
        owner_url_needs_url(
            "randomisation.database_owner_url",
            "randomisation.database_url",
            self.database_owner_url.as_deref(),
            self.database_url.as_deref(),
        )?;
        at_least(
            "randomisation.database_max_connections",
            self.database_max_connections,
            1,
        )?;
        at_least("randomisation.lock_lease_ms", self.lock_lease_ms, 1)?;
        at_least(
            "randomisation.redis_command_timeout_ms",
            self.redis_command_timeout_ms,
            1,
        )?;
        at_least(
            "randomisation.redis_connect_timeout_ms",
            self.redis_connect_timeout_ms,
            1,
        )?;
        at_least("randomisation.lock_wait_ms", self.lock_wait_ms, 1)?;
        at_least(
            "randomisation.max_simulated_allocations",
            self.max_simulated_allocations,
            1,
        )?;
        at_least(
            "randomisation.max_concurrent_simulations",
            self.max_concurrent_simulations,
            1,
        )?;
        at_least(
            "randomisation.blinding_call_timeout_ms",
            self.blinding_call_timeout_ms,
            1,
        )?;
        at_least(
            "randomisation.code_reconcile_interval_ms",
            self.code_reconcile_interval_ms,
            1,
        )
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The error for the defaults with one change, which must be refused.
    fn refused(change: impl FnOnce(&mut RandomisationSettings)) -> String {
        let mut settings = RandomisationSettings::default();
        change(&mut settings);
        settings
            .validate()
            .expect_err("the changed value is out of range")
            .to_string()
    }

    #[test]
    fn the_defaults_are_in_range() {
        assert_eq!(RandomisationSettings::default().validate(), Ok(()));
    }

    #[test]
    fn a_pool_needs_a_connection() {
        assert_eq!(
            refused(|s| s.database_max_connections = 0),
            "randomisation.database_max_connections must be at least 1, not 0"
        );
    }

    #[test]
    fn a_lock_needs_a_lease() {
        assert_eq!(
            refused(|s| s.lock_lease_ms = 0),
            "randomisation.lock_lease_ms must be at least 1, not 0"
        );
    }

    #[test]
    fn redis_commands_need_time_to_answer() {
        assert_eq!(
            refused(|s| s.redis_command_timeout_ms = 0),
            "randomisation.redis_command_timeout_ms must be at least 1, not 0"
        );
    }

    #[test]
    fn redis_needs_time_to_connect() {
        assert_eq!(
            refused(|s| s.redis_connect_timeout_ms = 0),
            "randomisation.redis_connect_timeout_ms must be at least 1, not 0"
        );
    }

    #[test]
    fn a_busy_stratum_is_waited_for() {
        assert_eq!(
            refused(|s| s.lock_wait_ms = 0),
            "randomisation.lock_wait_ms must be at least 1, not 0"
        );
    }

    #[test]
    fn a_simulation_may_compute_at_least_one_allocation() {
        assert_eq!(
            refused(|s| s.max_simulated_allocations = 0),
            "randomisation.max_simulated_allocations must be at least 1, not 0"
        );
    }

    #[test]
    fn a_code_call_needs_time_and_the_reconciler_an_interval() {
        assert_eq!(
            refused(|s| s.blinding_call_timeout_ms = 0),
            "randomisation.blinding_call_timeout_ms must be at least 1, not 0"
        );
        assert_eq!(
            refused(|s| s.code_reconcile_interval_ms = 0),
            "randomisation.code_reconcile_interval_ms must be at least 1, not 0"
        );
    }

    /// The cluster fault tests run a 400 ms lease under the 5 s default wait.
    #[test]
    fn a_lease_shorter_than_the_wait_is_allowed() {
        let settings = RandomisationSettings {
            lock_lease_ms: 400,
            lock_wait_ms: 5_000,
            ..RandomisationSettings::default()
        };
        assert_eq!(settings.validate(), Ok(()));
    }

    #[test]
    fn the_lowest_values_in_range_are_allowed() {
        let settings = RandomisationSettings {
            database_max_connections: 1,
            lock_lease_ms: 1,
            redis_command_timeout_ms: 1,
            redis_connect_timeout_ms: 1,
            lock_wait_ms: 1,
            max_simulated_allocations: 1,
            blinding_call_timeout_ms: 1,
            code_reconcile_interval_ms: 1,
            ..RandomisationSettings::default()
        };
        assert_eq!(settings.validate(), Ok(()));
    }
}
