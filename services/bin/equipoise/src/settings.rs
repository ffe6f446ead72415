//! Layered configuration: built-in defaults, then a TOML file (`--config`
//! or `EQUIPOISE_CONFIG`), then `EQUIPOISE_*` environment variables, with
//! `__` between levels: `EQUIPOISE_AUTH__AUDIENCE=...`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use equipoise_common::logging::LogFormat;
use equipoise_common::settings::AuthSettings;
use equipoise_randomisation::server::RandomisationSettings;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub listen: SocketAddr,
    /// SQLite files, the development HMAC secret and the seal key live here
    /// unless configured elsewhere.
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    /// Larger requests are refused with RESOURCE_EXHAUSTED before decoding.
    pub max_message_bytes: usize,
    /// On SIGTERM, how long health reports NOT_SERVING while calls are
    /// still served, before the listener closes and in-flight calls drain.
    pub drain_delay_ms: u64,
    pub auth: AuthSettings,
    pub randomisation: RandomisationSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: PathBuf::from("data"),
            log_format: LogFormat::Json,
            max_message_bytes: 1024 * 1024,
            drain_delay_ms: 2_000,
            auth: AuthSettings::default(),
            randomisation: RandomisationSettings::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct SettingsError(String);

impl Settings {
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(SettingsError(format!(
                    "file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment
            .merge(
                Env::prefixed("EQUIPOISE_")
                    .ignore(&["CONFIG", "TOKEN", "ENDPOINT"])
                    .split("__"),
            )
            .extract()
            .map_err(|e| SettingsError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("equipoise.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:6000\"\n[randomisation]\nlock_wait_ms = 750\n",
        )
        .expect("write");
        let settings = Settings::load(Some(&path)).expect("loads");
        assert_eq!(settings.listen.port(), 6000);
        assert_eq!(settings.randomisation.lock_wait_ms, 750);
        assert_eq!(settings.auth.audience, "equipoise");

        std::fs::write(&path, "lissten = \"127.0.0.1:6000\"\n").expect("write");
        let error = Settings::load(Some(&path)).expect_err("unknown key");
        assert!(error.to_string().contains("lissten"), "{error}");
        assert!(Settings::load(Some(&dir.path().join("missing.toml"))).is_err());
    }
}
