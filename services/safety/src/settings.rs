//! The safety service's settings: the `[safety]` table of the
//! configuration file.

use std::path::{Path, PathBuf};

use equipoise_common::settings::{OutOfRange, at_least, between, owner_url_needs_url};
use serde::{Deserialize, Serialize};

/// The `[safety]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SafetySettings {
    /// PostgreSQL URL for multi-replica deployments; unset: the SQLite file.
    pub database_url: Option<String>,
    /// The owner role's URL: migrations run as it at start-up, and it grants
    /// the role of `database_url` only what the service needs. Unset: one
    /// role does both (development only).
    pub database_owner_url: Option<String>,
    pub database_max_connections: u32,
    /// Default: `<data_dir>/safety.db`.
    pub sqlite_path: Option<PathBuf>,
    /// The blinding service's gRPC address. Unset: the same process's own
    /// address, when the binary runs `--target all`.
    pub blinding_url: Option<String>,
    /// The randomisation service's gRPC address (trial definitions).
    pub randomisation_url: Option<String>,
    /// Longest a call to the blinding service may take.
    pub blinding_call_timeout_ms: u64,
    /// How often pending classifications are retried.
    pub classification_retry_interval_ms: u64,
    /// The E2B(R3) sender identifier.
    pub sender_id: String,
}

impl Default for SafetySettings {
    fn default() -> Self {
        Self {
            database_url: None,
            database_owner_url: None,
            database_max_connections: 10,
            sqlite_path: None,
            blinding_url: None,
            randomisation_url: None,
            blinding_call_timeout_ms: 2_000,
            classification_retry_interval_ms: 5_000,
            sender_id: "EQUIPOISE".into(),
        }
    }
}

impl SafetySettings {
    /// Refuses values the service cannot work with, naming the key.
    pub fn validate(&self) -> Result<(), OutOfRange> {
        owner_url_needs_url(
            "safety.database_owner_url",
            "safety.database_url",
            self.database_owner_url.as_deref(),
            self.database_url.as_deref(),
        )?;
        at_least(
            "safety.database_max_connections",
            self.database_max_connections,
            1,
        )?;
        at_least(
            "safety.blinding_call_timeout_ms",
            self.blinding_call_timeout_ms,
            1,
        )?;
        between(
            "safety.classification_retry_interval_ms",
            self.classification_retry_interval_ms,
            100,
            3_600_000,
        )?;
        let sender = self.sender_id.trim();
        if sender.is_empty()
            || sender.len() > 60
            || !sender
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(OutOfRange {
                key: "safety.sender_id",
                requirement: "1 to 60 letters, digits, '-', '_' or '.'".into(),
                value: format!("{:?}", self.sender_id),
            });
        }
        Ok(())
    }

    pub fn sqlite_path(&self, data_dir: &Path) -> PathBuf {
        self.sqlite_path
            .clone()
            .unwrap_or_else(|| data_dir.join("safety.db"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(change: impl FnOnce(&mut SafetySettings)) -> String {
        let mut settings = SafetySettings::default();
        change(&mut settings);
        settings
            .validate()
            .expect_err("the changed value is out of range")
            .to_string()
    }

    #[test]
    fn the_defaults_are_in_range_and_name_the_file() {
        let settings = SafetySettings::default();
        assert_eq!(settings.validate(), Ok(()));
        assert_eq!(settings.classification_retry_interval_ms, 5_000);
        assert_eq!(settings.sender_id, "EQUIPOISE");
        assert_eq!(
            settings.sqlite_path(Path::new("/data")),
            PathBuf::from("/data/safety.db")
        );
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        assert_eq!(
            refused(|s| s.database_max_connections = 0),
            "safety.database_max_connections must be at least 1, not 0"
        );
        assert!(
            refused(|s| s.blinding_call_timeout_ms = 0)
                .starts_with("safety.blinding_call_timeout_ms")
        );
        assert!(
            refused(|s| s.classification_retry_interval_ms = 0)
                .starts_with("safety.classification_retry_interval_ms")
        );
        assert!(refused(|s| s.sender_id = " ".into()).starts_with("safety.sender_id"));
        assert!(refused(|s| s.sender_id = "A<B".into()).starts_with("safety.sender_id"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let parsed: Result<SafetySettings, _> =
            serde_json::from_str(r#"{ "sender_id": "X", "sendr_id": "Y" }"#);
        assert!(parsed.is_err());
        let parsed: SafetySettings =
            serde_json::from_str(r#"{ "sender_id": "ACME" }"#).expect("parses");
        assert_eq!(parsed.sender_id, "ACME");
        assert_eq!(parsed.database_max_connections, 10);
    }
}
