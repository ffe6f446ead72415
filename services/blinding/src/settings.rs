//! The blinding service's settings: the `[blinding]` table of the
//! configuration file.

use std::path::{Path, PathBuf};

use equipoise_common::settings::{OutOfRange, at_least, between, owner_url_needs_url};
use serde::{Deserialize, Serialize};

use crate::codes::LowPoolRule;

/// The `[blinding]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlindingSettings {
    /// PostgreSQL URL for multi-replica deployments; unset: the SQLite file.
    pub database_url: Option<String>,
    /// The owner role's URL: migrations run as it at start-up, and it grants
    /// the role of `database_url` only what the service needs. Unset: one
    /// role does both (development only).
    pub database_owner_url: Option<String>,
    pub database_max_connections: u32,
    /// Default: `<data_dir>/blinding.db`.
    pub sqlite_path: Option<PathBuf>,
    /// The randomisation service's gRPC address. Unset: the same process's
    /// own address, when the binary runs `--target all`.
    pub randomisation_url: Option<String>,
    /// Warn when a pool's remaining codes fall to this share of its size.
    pub low_pool_warn_fraction: f64,
    /// ... or to this many codes, whichever is larger.
    pub low_pool_warn_at: u32,
    /// How often a watch stream reads the notification outbox.
    pub watch_poll_ms: u64,
    /// Longest a call to randomisation may take.
    pub randomisation_call_timeout_ms: u64,
}

impl Default for BlindingSettings {
    fn default() -> Self {
        Self {
            database_url: None,
            database_owner_url: None,
            database_max_connections: 10,
            sqlite_path: None,
            randomisation_url: None,
            low_pool_warn_fraction: 0.1,
            low_pool_warn_at: 5,
            watch_poll_ms: 250,
            randomisation_call_timeout_ms: 2_000,
        }
    }
}

impl BlindingSettings {
    /// Refuses values the service cannot work with, naming the key.
    pub fn validate(&self) -> Result<(), OutOfRange> {
        owner_url_needs_url(
            "blinding.database_owner_url",
            "blinding.database_url",
            self.database_owner_url.as_deref(),
            self.database_url.as_deref(),
        )?;
        at_least(
            "blinding.database_max_connections",
            self.database_max_connections,
            1,
        )?;
        between(
            "blinding.low_pool_warn_fraction",
            self.low_pool_warn_fraction,
            0.0,
            1.0,
        )?;
        between("blinding.watch_poll_ms", self.watch_poll_ms, 10, 60_000)?;
        at_least(
            "blinding.randomisation_call_timeout_ms",
            self.randomisation_call_timeout_ms,
            1,
        )
    }

    pub fn sqlite_path(&self, data_dir: &Path) -> PathBuf {
        self.sqlite_path
            .clone()
            .unwrap_or_else(|| data_dir.join("blinding.db"))
    }

    pub fn low_pool_rule(&self) -> LowPoolRule {
        LowPoolRule {
            warn_at_fraction: self.low_pool_warn_fraction,
            warn_at_count: self.low_pool_warn_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(change: impl FnOnce(&mut BlindingSettings)) -> String {
        let mut settings = BlindingSettings::default();
        change(&mut settings);
        settings
            .validate()
            .expect_err("the changed value is out of range")
            .to_string()
    }

    #[test]
    fn the_defaults_are_in_range_and_name_the_file() {
        let settings = BlindingSettings::default();
        assert_eq!(settings.validate(), Ok(()));
        assert_eq!(
            settings.sqlite_path(Path::new("/data")),
            PathBuf::from("/data/blinding.db")
        );
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        assert_eq!(
            refused(|s| s.database_max_connections = 0),
            "blinding.database_max_connections must be at least 1, not 0"
        );
        assert!(
            refused(|s| s.low_pool_warn_fraction = 1.5)
                .starts_with("blinding.low_pool_warn_fraction")
        );
        assert!(
            refused(|s| s.low_pool_warn_fraction = f64::NAN)
                .starts_with("blinding.low_pool_warn_fraction")
        );
        assert!(refused(|s| s.watch_poll_ms = 0).starts_with("blinding.watch_poll_ms"));
        assert!(
            refused(|s| s.randomisation_call_timeout_ms = 0)
                .starts_with("blinding.randomisation_call_timeout_ms")
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let parsed: Result<BlindingSettings, _> =
            serde_json::from_str(r#"{ "watch_poll_ms": 100, "wacth_poll_ms": 5 }"#);
        assert!(parsed.is_err());
        let parsed: BlindingSettings =
            serde_json::from_str(r#"{ "watch_poll_ms": 100 }"#).expect("parses");
        assert_eq!(parsed.watch_poll_ms, 100);
        assert_eq!(parsed.database_max_connections, 10);
    }
}
