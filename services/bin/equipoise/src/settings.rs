//! Layered configuration: built-in defaults, then a TOML file (`--config`
//! or `EQUIPOISE_CONFIG`), then `EQUIPOISE_*` environment variables, with
//! `__` between levels: `EQUIPOISE_AUTH__AUDIENCE=...`. Every key, with its
//! default, is documented in `config/equipoise.toml`; values out of range are
//! refused at load, naming the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use equipoise_blinding::settings::BlindingSettings;
use equipoise_common::grpc::web::{WebError, WebSettings};
use equipoise_common::logging::LogFormat;
use equipoise_common::settings::{AuthSettings, OutOfRange, between};
use equipoise_common::tls::{TlsError, TlsSettings};
use equipoise_randomisation::settings::RandomisationSettings;
use equipoise_safety::settings::SafetySettings;
use figment::providers::{Data, Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

/// Below this, ordinary trial definitions and list uploads would not fit.
pub const MIN_MESSAGE_BYTES: usize = 16 * 1024;
/// Above this, one request could hold a large share of a replica's memory
/// while it is buffered for decoding.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// The delay must fit inside the pod's termination grace period (30 s by
/// default on Kubernetes, raised by operators who want longer drains).
pub const MAX_DRAIN_DELAY_MS: u64 = 60_000;
pub const MAX_CALLS_PER_CONNECTION: usize = 10_000;
pub const MIN_REQUEST_TIMEOUT_MS: u64 = 1_000;
pub const MAX_REQUEST_TIMEOUT_MS: u64 = 3_600_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub listen: SocketAddr,
    /// SQLite files, the development HMAC secret and the seal key live here
    /// unless configured elsewhere.
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    /// Larger requests are refused with OUT_OF_RANGE before decoding.
    pub max_message_bytes: usize,
    /// On SIGTERM, how long health reports NOT_SERVING while calls are
    /// still served, before the listener closes and in-flight calls drain.
    pub drain_delay_ms: u64,
    pub max_concurrent_calls_per_connection: usize,
    pub request_timeout_ms: u64,
    pub auth: AuthSettings,
    /// TLS and client certificates; plaintext when unset (docs/tls.md).
    pub tls: TlsSettings,
    pub web: WebSettings,
    pub randomisation: RandomisationSettings,
    pub blinding: BlindingSettings,
    pub safety: SafetySettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: PathBuf::from("data"),
            log_format: LogFormat::Json,
            max_message_bytes: 1024 * 1024,
            drain_delay_ms: 2_000,
            max_concurrent_calls_per_connection: 256,
            request_timeout_ms: 300_000,
            auth: AuthSettings::default(),
            tls: TlsSettings::default(),
            web: WebSettings::default(),
            randomisation: RandomisationSettings::default(),
            blinding: BlindingSettings::default(),
            safety: SafetySettings::default(),
        }
    }
}

/// Keys an exposed server was not given (see [`Settings::key_custody`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyCustodyError {
    #[error(
        "a server listening beyond loopback or on a shared database needs explicit token keys: set auth.jwks_file, auth.public_key_pem_file or auth.hmac_secret_file"
    )]
    TokenKeys,
    #[error(
        "a server listening beyond loopback or on a shared database needs randomisation.seal_key_file, outside the data directory"
    )]
    SealKey,
    #[error(
        "randomisation.seal_key_file {} is inside data_dir {}: keep the seal key apart from the records it protects",
        .seal_key.display(),
        .data_dir.display()
    )]
    SealKeyBesideTheData {
        seal_key: PathBuf,
        data_dir: PathBuf,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration: file {} does not exist", .0.display())]
    MissingFile(PathBuf),
    /// Unknown keys and values of the wrong type, named by figment.
    #[error("configuration: {0}")]
    Invalid(Box<figment::Error>),
    #[error("configuration: {0}")]
    OutOfRange(#[from] OutOfRange),
    #[error("configuration: {0}")]
    Tls(#[from] TlsError),
    #[error("configuration: {0}")]
    Web(#[from] WebError),
}

impl Settings {
    /// The settings the binary runs with: `file`, if given, and the process
    /// environment over the defaults.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        // Lossy, as figment's own `Env` is: a non-UTF-8 variable must not
        // stop start-up unless it is one of ours.
        let environment = std::env::vars_os().map(|(name, value)| {
            (
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )
        });
        Self::load_from(file, environment)
    }

    /// As [`Settings::load`], with the environment passed in, so tests need
    /// not change the process's own.
    pub fn load_from(
        file: Option<&Path>,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let file = match file {
            Some(path) if !path.exists() => {
                return Err(SettingsError::MissingFile(path.to_owned()));
            }
            Some(path) => Some(Toml::file_exact(path)),
            None => None,
        };
        Self::from_layers(file, EnvironmentLayer::new(environment))
    }

    fn from_layers(
        file: Option<Data<Toml>>,
        environment: EnvironmentLayer,
    ) -> Result<Self, SettingsError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = file {
            figment = figment.merge(file);
        }
        let settings: Settings = figment
            .merge(environment)
            .extract()
            .map_err(|e| SettingsError::Invalid(Box::new(e)))?;
        settings.validate()?;
        settings.tls.validate()?;
        settings.web.validate()?;
        Ok(settings)
    }

    /// Refuses values out of range, naming the first such key.
    /// Whether this process is more than a developer's machine: it listens
    /// beyond loopback or keeps its records in a shared database.
    pub fn is_exposed(&self) -> bool {
        !self.listen.ip().is_loopback()
            || self.randomisation.database_url.is_some()
            || self.blinding.database_url.is_some()
            || self.safety.database_url.is_some()
    }

    /// Keys an exposed server must be given rather than make for itself
    /// (review A1, A2): token keys from the operator, never the development
    /// secret generated in the data directory; and, where randomisation
    /// runs, a seal key kept outside the data directory, so a copy of the
    /// database and its directory does not carry the key to its seeds.
    pub fn key_custody(&self, runs_randomisation: bool) -> Result<(), KeyCustodyError> {
        if !self.is_exposed() {
            return Ok(());
        }
        let auth = &self.auth;
        if auth.hmac_secret_file.is_none()
            && auth.jwks_file.is_none()
            && auth.public_key_pem_file.is_none()
        {
            return Err(KeyCustodyError::TokenKeys);
        }
        if !runs_randomisation {
            return Ok(());
        }
        match &self.randomisation.seal_key_file {
            None => Err(KeyCustodyError::SealKey),
            Some(path) if is_within(path, &self.data_dir) => {
                Err(KeyCustodyError::SealKeyBesideTheData {
                    seal_key: path.clone(),
                    data_dir: self.data_dir.clone(),
                })
            }
            Some(_) => Ok(()),
        }
    }

    pub fn validate(&self) -> Result<(), OutOfRange> {
        between(
            "max_message_bytes",
            self.max_message_bytes,
            MIN_MESSAGE_BYTES,
            MAX_MESSAGE_BYTES,
        )?;
        between("drain_delay_ms", self.drain_delay_ms, 0, MAX_DRAIN_DELAY_MS)?;
        between(
            "max_concurrent_calls_per_connection",
            self.max_concurrent_calls_per_connection,
            1,
            MAX_CALLS_PER_CONNECTION,
        )?;
        between(
            "request_timeout_ms",
            self.request_timeout_ms,
            MIN_REQUEST_TIMEOUT_MS,
            MAX_REQUEST_TIMEOUT_MS,
        )?;
        self.blinding.validate()?;
        self.safety.validate()?;
        self.randomisation.validate()
    }
}

const ENV_PREFIX: &str = "EQUIPOISE_";
const ENV_LEVEL_SEPARATOR: &str = "__";

/// Variables under the prefix that are not settings: the CLI's own
/// (`--config`, `client --token/--endpoint/--ca-cert/--cert/--key`) and the
/// test harness's, which replica processes inherit.
const NOT_SETTINGS: &[&str] = &[
    "CONFIG",
    "TOKEN",
    "ENDPOINT",
    "CA_CERT",
    "CLIENT_CERT",
    "CLIENT_KEY",
    "BIN",
    "PG_BIN",
    "EXTRA_TRIALS_DIR",
];

/// Whether `path` lies under `dir`, compared as written and, where both
/// exist, as resolved.
fn is_within(path: &Path, dir: &Path) -> bool {
    if path.starts_with(dir) {
        return true;
    }
    match (path.canonicalize(), dir.canonicalize()) {
        (Ok(path), Ok(dir)) => path.starts_with(dir),
        _ => false,
    }
}

/// The `EQUIPOISE_*` layer, read as figment's `Env::prefixed(ENV_PREFIX)
/// .ignore(NOT_SETTINGS).split("__")` reads the process environment, but from
/// pairs passed in.
struct EnvironmentLayer {
    settings: Vec<(String, String)>,
}

impl EnvironmentLayer {
    fn new(environment: impl IntoIterator<Item = (String, String)>) -> Self {
        let settings = environment
            .into_iter()
            .filter_map(|(name, value)| Some((setting_key(&name)?, value)))
            .collect();
        Self { settings }
    }
}

/// `EQUIPOISE_RANDOMISATION__LOCK_WAIT_MS` → `randomisation.lock_wait_ms`;
/// `None` for variables that are not settings. The prefix is matched
/// regardless of case, as figment's `Env` does.
fn setting_key(variable: &str) -> Option<String> {
    let variable = variable.trim();
    let prefix = variable.get(..ENV_PREFIX.len())?;
    if !prefix.eq_ignore_ascii_case(ENV_PREFIX) {
        return None;
    }
    let name = variable.get(ENV_PREFIX.len()..)?;
    if NOT_SETTINGS.iter().any(|n| n.eq_ignore_ascii_case(name)) {
        return None;
    }
    let key = name.replace(ENV_LEVEL_SEPARATOR, ".").to_ascii_lowercase();
    (!key.split('.').any(str::is_empty)).then_some(key)
}

impl Provider for EnvironmentLayer {
    fn metadata(&self) -> Metadata {
        // Errors name the variable the operator set, not the dotted key.
        Metadata::named(format!("`{ENV_PREFIX}` environment variable(s)")).interpolater(
            |_: &Profile, keys: &[&str]| {
                let name = keys.join(ENV_LEVEL_SEPARATOR).to_ascii_uppercase();
                format!("{ENV_PREFIX}{name}")
            },
        )
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, text) in &self.settings {
            // Figment's parse: "750" is a number, "true" a boolean, and
            // anything else a string.
            let Ok(value) = text.parse::<Value>();
            insert(&mut dict, key, value);
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Puts `value` at the dotted `key`, creating tables on the way; a later
/// variable replaces an earlier one where they clash.
fn insert(dict: &mut Dict, key: &str, value: Value) {
    let Some((table, rest)) = key.split_once('.') else {
        dict.insert(key.to_owned(), value);
        return;
    };
    let entry = dict
        .entry(table.to_owned())
        .or_insert_with(|| Value::from(Dict::new()));
    if !matches!(entry, Value::Dict(..)) {
        *entry = Value::from(Dict::new());
    }
    if let Value::Dict(_, inner) = entry {
        insert(inner, rest, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped file, which must document every key with its default.
    const SHIPPED: &str = include_str!("../../../../config/equipoise.toml");

    fn environment(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn from_text(toml: &str, pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        Settings::from_layers(
            Some(Toml::string(toml)),
            EnvironmentLayer::new(environment(pairs)),
        )
    }

    fn error_text(result: Result<Settings, SettingsError>) -> String {
        result.expect_err("the settings are refused").to_string()
    }

    #[test]
    fn the_shipped_file_is_exactly_the_defaults() {
        let shipped: Settings = Figment::from(Toml::string(SHIPPED))
            .extract()
            .unwrap_or_else(|e| panic!("config/equipoise.toml must parse: {e}"));
        assert_eq!(shipped, Settings::default());
        assert_eq!(
            from_text(SHIPPED, &[]).expect("the shipped file loads"),
            Settings::default()
        );
    }

    #[test]
    fn every_setting_is_documented_in_the_shipped_file() {
        let documented = documented_settings();
        let defaults = serde_json::to_value(Settings::default()).expect("serialisable");
        let mut keys = Vec::new();
        key_paths(&defaults, "", &mut keys);
        assert!(keys.len() > 15, "every key is found: {keys:?}");
        let missing: Vec<&String> = keys
            .iter()
            .filter(|key| documented.pointer(&json_pointer(key)).is_none())
            .collect();
        assert!(
            missing.is_empty(),
            "config/equipoise.toml must document {missing:?}, commented out if unset by default"
        );
    }

    /// The commented-out examples are real settings, with valid values.
    #[test]
    fn the_shipped_examples_are_valid_settings() {
        let mut documented = documented_settings();
        if !cfg!(feature = "fault-injection") {
            // Only fault-injection builds know these keys.
            documented["randomisation"]["faults"] = serde_json::json!({});
        }
        let examples: Settings = serde_json::from_value(documented)
            .unwrap_or_else(|e| panic!("an example in config/equipoise.toml is wrong: {e}"));
        examples.validate().expect("the examples are in range");
        assert!(examples.randomisation.database_url.is_some());
        assert!(examples.auth.jwks_file.is_some());
    }

    /// The shipped file with every commented-out key or table uncommented.
    fn documented_settings() -> serde_json::Value {
        let uncommented: String = SHIPPED.lines().map(uncomment_setting).collect();
        Figment::from(Toml::string(&uncommented))
            .extract()
            .unwrap_or_else(|e| panic!("the uncommented config/equipoise.toml must parse: {e}"))
    }

    /// `# key = value` and `# [table]` lose their `# `; prose stays a comment.
    fn uncomment_setting(line: &str) -> String {
        let Some(rest) = line.strip_prefix("# ") else {
            return format!("{line}\n");
        };
        let is_table = rest.starts_with('[') && rest.ends_with(']');
        let is_key = rest.split_once(" = ").is_some_and(|(key, _)| {
            !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        });
        if is_table || is_key {
            format!("{rest}\n")
        } else {
            format!("{line}\n")
        }
    }

    /// Every leaf and every table, as dotted paths.
    fn key_paths(value: &serde_json::Value, prefix: &str, keys: &mut Vec<String>) {
        let serde_json::Value::Object(fields) = value else {
            return;
        };
        for (name, field) in fields {
            let key = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            key_paths(field, &key, keys);
            keys.push(key);
        }
    }

    fn json_pointer(key: &str) -> String {
        format!("/{}", key.replace('.', "/"))
    }

    #[test]
    fn file_overrides_defaults_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("equipoise.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:6000\"\n[randomisation]\nlock_wait_ms = 750\n",
        )
        .expect("write");
        let settings = Settings::load_from(Some(&path), []).expect("loads");
        assert_eq!(settings.listen.port(), 6000);
        assert_eq!(settings.randomisation.lock_wait_ms, 750);
        assert_eq!(settings.auth.audience, "equipoise");

        std::fs::write(&path, "lissten = \"127.0.0.1:6000\"\n").expect("write");
        let error = Settings::load_from(Some(&path), []).expect_err("unknown key");
        assert!(error.to_string().contains("lissten"), "{error}");
        let missing = dir.path().join("missing.toml");
        let error = Settings::load_from(Some(&missing), []).expect_err("missing file");
        assert!(error.to_string().contains("missing.toml"), "{error}");
    }

    #[test]
    fn nested_variables_use_a_double_underscore_between_levels() {
        let settings = Settings::load_from(
            None,
            environment(&[
                ("EQUIPOISE_RANDOMISATION__LOCK_WAIT_MS", "750"),
                ("EQUIPOISE_AUTH__AUDIENCE", "respine"),
                ("EQUIPOISE_LISTEN", "127.0.0.1:6000"),
                ("EQUIPOISE_LOG_FORMAT", "text"),
                (
                    "EQUIPOISE_RANDOMISATION__SEAL_KEY_FILE",
                    "/run/secrets/seal",
                ),
            ]),
        )
        .expect("loads");
        assert_eq!(settings.randomisation.lock_wait_ms, 750);
        assert_eq!(settings.auth.audience, "respine");
        assert_eq!(settings.listen, SocketAddr::from(([127, 0, 0, 1], 6000)));
        assert_eq!(settings.log_format, LogFormat::Text);
        assert_eq!(
            settings.randomisation.seal_key_file,
            Some(PathBuf::from("/run/secrets/seal"))
        );
        assert_eq!(
            settings.randomisation.lock_lease_ms,
            RandomisationSettings::default().lock_lease_ms
        );
    }

    #[test]
    fn the_environment_overrides_the_file_which_overrides_the_defaults() {
        let settings = from_text(
            "[randomisation]\nlock_wait_ms = 750\nlock_lease_ms = 20000\n",
            &[("EQUIPOISE_RANDOMISATION__LOCK_WAIT_MS", "900")],
        )
        .expect("loads");
        assert_eq!(settings.randomisation.lock_wait_ms, 900, "environment");
        assert_eq!(settings.randomisation.lock_lease_ms, 20_000, "file");
        assert_eq!(
            settings.randomisation.redis_command_timeout_ms, 500,
            "default"
        );
    }

    #[test]
    fn a_bad_variable_is_named() {
        let error = error_text(Settings::load_from(
            None,
            environment(&[("EQUIPOISE_RANDOMISATION__LOCK_WAIT_MS", "soon")]),
        ));
        assert!(
            error.contains("EQUIPOISE_RANDOMISATION__LOCK_WAIT_MS"),
            "{error}"
        );
        assert!(error.contains("soon"), "{error}");

        let error = error_text(Settings::load_from(
            None,
            environment(&[("EQUIPOISE_RANDOMISATION__LOCK_WAITS_MS", "750")]),
        ));
        assert!(error.contains("lock_waits_ms"), "{error}");
    }

    #[test]
    fn cli_and_test_harness_variables_are_not_settings() {
        let settings = Settings::load_from(
            None,
            environment(&[
                ("EQUIPOISE_CONFIG", "/etc/equipoise/equipoise.toml"),
                ("EQUIPOISE_TOKEN", "eyJhbGciOi"),
                ("EQUIPOISE_ENDPOINT", "http://127.0.0.1:50051"),
                ("EQUIPOISE_BIN", "/usr/local/bin/equipoise"),
                ("EQUIPOISE_PG_BIN", "/usr/lib/postgresql/17/bin"),
                ("EQUIPOISE_EXTRA_TRIALS_DIR", "/srv/trials"),
                ("EQUIPOISE_CA_CERT", "/etc/equipoise/tls/ca.crt"),
                ("EQUIPOISE_CLIENT_CERT", "/home/ada/ada.crt"),
                ("EQUIPOISE_CLIENT_KEY", "/home/ada/ada.key"),
                ("RUST_LOG", "debug"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .expect("none of these is a setting");
        assert_eq!(settings, Settings::default());

        let error = error_text(Settings::load_from(
            None,
            environment(&[("EQUIPOISE_TOKENS", "eyJhbGciOi")]),
        ));
        assert!(error.contains("tokens"), "{error}");
    }

    #[test]
    fn tls_settings_come_from_the_environment() {
        let settings = Settings::load_from(
            None,
            environment(&[
                ("EQUIPOISE_TLS__CERT_FILE", "/etc/equipoise/tls/tls.crt"),
                ("EQUIPOISE_TLS__KEY_FILE", "/etc/equipoise/tls/tls.key"),
                ("EQUIPOISE_TLS__CA_FILE", "/etc/equipoise/tls/ca.crt"),
                ("EQUIPOISE_TLS__REQUIRE_CLIENT_CERT", "true"),
                ("EQUIPOISE_TLS__SERVER_NAME", "equipoise.internal"),
            ]),
        )
        .expect("loads; the files are read when serving starts");
        assert_eq!(
            settings.tls,
            TlsSettings {
                cert_file: Some("/etc/equipoise/tls/tls.crt".into()),
                key_file: Some("/etc/equipoise/tls/tls.key".into()),
                ca_file: Some("/etc/equipoise/tls/ca.crt".into()),
                require_client_cert: true,
                server_name: Some("equipoise.internal".into()),
            }
        );
        assert_eq!(Settings::default().tls, TlsSettings::default());
    }

    #[test]
    fn tls_settings_that_cannot_work_are_refused_at_load() {
        let error = error_text(from_text("[tls]\ncert_file = \"/tls.crt\"\n", &[]));
        assert!(
            error.starts_with("configuration: tls.cert_file is set but tls.key_file is not"),
            "{error}"
        );
        let error = error_text(Settings::load_from(
            None,
            environment(&[("EQUIPOISE_TLS__REQUIRE_CLIENT_CERT", "true")]),
        ));
        assert!(
            error.contains("tls.require_client_cert needs tls.ca_file"),
            "{error}"
        );
    }

    #[test]
    fn a_web_origin_that_is_not_an_origin_is_refused_at_load() {
        let error = error_text(from_text(
            "[web]\nallowed_origins = [\"https://desk.example.org/desk\"]\n",
            &[],
        ));
        assert!(
            error
                .starts_with("configuration: web.allowed_origins: 'https://desk.example.org/desk'"),
            "{error}"
        );
        let settings = from_text(
            "[web]\nallowed_origins = [\"https://desk.example.org\"]\n",
            &[("EQUIPOISE_WEB__ENABLED", "false")],
        )
        .expect("valid");
        assert!(!settings.web.enabled);
        assert_eq!(settings.web.allowed_origins, ["https://desk.example.org"]);
    }

    #[test]
    fn variable_names_map_to_dotted_keys() {
        assert_eq!(
            setting_key("EQUIPOISE_RANDOMISATION__LOCK_WAIT_MS").as_deref(),
            Some("randomisation.lock_wait_ms")
        );
        assert_eq!(setting_key("equipoise_listen").as_deref(), Some("listen"));
        assert_eq!(setting_key("EQUIPOISE_token"), None);
        assert_eq!(setting_key("EQUIPOISE_"), None);
        assert_eq!(setting_key("EQUIPOISE_AUTH____AUDIENCE"), None);
        assert_eq!(setting_key("EQUIPOISELISTEN"), None);
        assert_eq!(setting_key("ÉQUIPOISE_LISTEN"), None);
        assert_eq!(setting_key("RUST_LOG"), None);
    }

    #[test]
    fn out_of_range_values_are_refused_at_load_naming_the_key() {
        let error = error_text(from_text(
            "[randomisation]\ndatabase_max_connections = 0\n",
            &[],
        ));
        assert_eq!(
            error,
            "configuration: randomisation.database_max_connections must be at least 1, not 0"
        );
        let error = error_text(Settings::load_from(
            None,
            environment(&[("EQUIPOISE_RANDOMISATION__LOCK_WAIT_MS", "0")]),
        ));
        assert!(
            error.contains("randomisation.lock_wait_ms must be at least 1"),
            "{error}"
        );
    }

    #[test]
    fn drain_delay_beyond_a_minute_is_refused() {
        let error = error_text(from_text("drain_delay_ms = 60001", &[]));
        assert!(
            error.contains("drain_delay_ms must be between 0 and 60000, not 60001"),
            "{error}"
        );
        let settings = from_text("drain_delay_ms = 0", &[]).expect("no delay is allowed");
        assert_eq!(settings.drain_delay_ms, 0);
    }

    /// Review A1/A2: an exposed server refuses to run on keys it made for
    /// itself or a seal key kept beside the records.
    #[test]
    fn exposed_servers_need_explicit_keys_kept_apart_from_the_data() {
        let local = Settings::default();
        assert_eq!(local.key_custody(true), Ok(()));

        let exposed = Settings {
            listen: "0.0.0.0:50051".parse().expect("address"),
            ..Settings::default()
        };
        let error = exposed
            .key_custody(false)
            .expect_err("no token keys")
            .to_string();
        assert!(error.contains("auth.jwks_file"), "{error}");

        let with_keys = |seal: Option<&str>| {
            let mut settings = exposed.clone();
            settings.auth.jwks_file = Some("/etc/equipoise/jwks.json".into());
            settings.data_dir = "/var/lib/equipoise".into();
            settings.randomisation.seal_key_file = seal.map(PathBuf::from);
            settings
        };
        assert_eq!(with_keys(None).key_custody(false), Ok(()));
        let error = with_keys(None)
            .key_custody(true)
            .expect_err("no seal key")
            .to_string();
        assert!(error.contains("randomisation.seal_key_file"), "{error}");
        let error = with_keys(Some("/var/lib/equipoise/seal.key"))
            .key_custody(true)
            .expect_err("seal key beside the records")
            .to_string();
        assert!(error.contains("inside data_dir"), "{error}");
        assert_eq!(
            with_keys(Some("/etc/equipoise/seal/seal.key")).key_custody(true),
            Ok(())
        );

        let mut cluster = Settings::default();
        cluster.blinding.database_url = Some("postgres://db/equipoise_blinding".into());
        assert!(cluster.key_custody(false).is_err());
    }

    #[test]
    fn calls_per_connection_are_bounded_both_ways() {
        for bad in [0, MAX_CALLS_PER_CONNECTION + 1] {
            let error = error_text(from_text(
                &format!("max_concurrent_calls_per_connection = {bad}"),
                &[],
            ));
            assert!(
                error.contains("max_concurrent_calls_per_connection must be between 1 and 10000"),
                "{error}"
            );
        }
    }

    #[test]
    fn the_request_timeout_is_bounded_both_ways() {
        for bad in [MIN_REQUEST_TIMEOUT_MS - 1, MAX_REQUEST_TIMEOUT_MS + 1] {
            let error = error_text(from_text(&format!("request_timeout_ms = {bad}"), &[]));
            assert!(
                error.contains("request_timeout_ms must be between 1000 and 3600000"),
                "{error}"
            );
        }
    }

    #[test]
    fn message_size_is_bounded_both_ways() {
        let too_small = MIN_MESSAGE_BYTES - 1;
        let error = error_text(from_text(&format!("max_message_bytes = {too_small}"), &[]));
        assert_eq!(
            error,
            format!(
                "configuration: max_message_bytes must be between {MIN_MESSAGE_BYTES} and {MAX_MESSAGE_BYTES}, not {too_small}"
            )
        );
        let too_large = MAX_MESSAGE_BYTES + 1;
        let error = error_text(from_text(&format!("max_message_bytes = {too_large}"), &[]));
        assert!(
            error.contains("max_message_bytes must be between"),
            "{error}"
        );

        for bound in [MIN_MESSAGE_BYTES, MAX_MESSAGE_BYTES] {
            let settings =
                from_text(&format!("max_message_bytes = {bound}"), &[]).expect("in range");
            assert_eq!(settings.max_message_bytes, bound);
        }
    }
}
