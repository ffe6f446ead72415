//! Settings shared by every service: where keys come from. Each binary
//! layers defaults, a TOML file and `EQUIPOISE_*` variables over these.

use std::fmt::Display;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::{Deserialize, Serialize};

use crate::auth::{KeySource, SERVICE_TOKEN_ISSUER, TokenVerifier};
use crate::grpc::client::{ClientError, ClientInterceptor, ServiceIdentity};

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{what} at {path}: {reason}")]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("auth.public_key_algorithm '{0}' is not a supported public-key algorithm")]
    Algorithm(String),
    #[error("token verification keys: {0}")]
    Keys(String),
    #[error(
        "auth.service_hmac_secret_file must be set when user tokens are verified with public keys: the services need a secret of their own to call each other"
    )]
    MissingServiceSecret,
    #[error("service token for '{service}': {source}")]
    ServiceToken {
        service: String,
        source: ClientError,
    },
}

/// A setting outside the range its service can work with, named by its full
/// key so the operator knows what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} must be {requirement}, not {value}")]
pub struct OutOfRange {
    pub key: &'static str,
    pub requirement: String,
    pub value: String,
}

/// Refuses an owner URL (`<service>.database_owner_url`) without the
/// runtime URL it prepares: the owner only migrates and grants, it never
/// serves. Never shows the URL, which may hold a password.
pub fn owner_url_needs_url(
    owner_key: &'static str,
    url_key: &'static str,
    owner_url: Option<&str>,
    url: Option<&str>,
) -> Result<(), OutOfRange> {
    if owner_url.is_some() && url.is_none() {
        return Err(OutOfRange {
            key: owner_key,
            requirement: format!("unset while {url_key} is unset"),
            value: "a URL".into(),
        });
    }
    Ok(())
}

/// Refuses `value` below `minimum`.
pub fn at_least<T: PartialOrd + Display>(
    key: &'static str,
    value: T,
    minimum: T,
) -> Result<(), OutOfRange> {
    if value >= minimum {
        return Ok(());
    }
    Err(OutOfRange {
        key,
        requirement: format!("at least {minimum}"),
        value: value.to_string(),
    })
}

/// Refuses `value` outside `minimum..=maximum`.
pub fn between<T: PartialOrd + Display>(
    key: &'static str,
    value: T,
    minimum: T,
    maximum: T,
) -> Result<(), OutOfRange> {
    if minimum <= value && value <= maximum {
        return Ok(());
    }
    Err(OutOfRange {
        key,
        requirement: format!("between {minimum} and {maximum}"),
        value: value.to_string(),
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// The `aud` every token must carry.
    pub audience: String,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// HS256 secret. Unset with no public keys: a per-data-directory
    /// development secret is created (`dev-hmac.secret`).
    pub hmac_secret_file: Option<PathBuf>,
    /// One PEM public key; see `public_key_algorithm`.
    pub public_key_pem_file: Option<PathBuf>,
    pub public_key_algorithm: String,
    /// A JWKS document; tokens pick a key by `kid`.
    pub jwks_file: Option<PathBuf>,
    /// HS256 secret of the tokens services mint for their calls to each
    /// other (issuer `equipoise-services`). Unset: the user tokens' HMAC
    /// secret (`hmac_secret_file`, or the development secret).
    pub service_hmac_secret_file: Option<PathBuf>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            audience: "equipoise".into(),
            issuer: "equipoise-dev".into(),
            hmac_secret_file: None,
            public_key_pem_file: None,
            public_key_algorithm: "RS256".into(),
            jwks_file: None,
            service_hmac_secret_file: None,
        }
    }
}

/// How long a service token lives; the interceptor renews it well before.
pub const SERVICE_TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);

pub const DEV_HMAC_SECRET_FILE: &str = "dev-hmac.secret";

impl AuthSettings {
    /// Verifies user tokens with the configured keys and service tokens
    /// with the service secret.
    pub fn verifier(&self, data_dir: &Path) -> Result<TokenVerifier, SettingsError> {
        let verifier = TokenVerifier::new(self.key_source(data_dir)?, &self.audience, &self.issuer)
            .map_err(|e| SettingsError::Keys(e.to_string()))?;
        Ok(verifier.with_service_secret(self.service_secret(data_dir)?))
    }

    /// The HS256 secret of service tokens: `service_hmac_secret_file`, or
    /// else the user tokens' HMAC secret. With public user keys there is no
    /// shared secret to fall back on (each replica would make its own
    /// development secret and none could call another), so it must be set.
    pub fn service_secret(&self, data_dir: &Path) -> Result<Vec<u8>, SettingsError> {
        match &self.service_hmac_secret_file {
            Some(path) => read_secret("service HMAC secret", path),
            None if self.jwks_file.is_some() || self.public_key_pem_file.is_some() => {
                Err(SettingsError::MissingServiceSecret)
            }
            None => self.hmac_secret(data_dir),
        }
    }

    /// Stamps outgoing calls with tokens for `service:<service>`, minted
    /// with the service secret for this deployment's audience.
    pub fn service_interceptor(
        &self,
        data_dir: &Path,
        service: &str,
    ) -> Result<ClientInterceptor, SettingsError> {
        let identity = ServiceIdentity {
            service: service.to_owned(),
            audience: self.audience.clone(),
            issuer: SERVICE_TOKEN_ISSUER.to_owned(),
            lifetime: SERVICE_TOKEN_LIFETIME,
        };
        ClientInterceptor::service(identity, &self.service_secret(data_dir)?).map_err(|source| {
            SettingsError::ServiceToken {
                service: service.to_owned(),
                source,
            }
        })
    }

    fn key_source(&self, data_dir: &Path) -> Result<KeySource, SettingsError> {
        if let Some(path) = &self.jwks_file {
            return KeySource::from_jwks_file(path).map_err(|e| SettingsError::Keys(e.to_string()));
        }
        if let Some(path) = &self.public_key_pem_file {
            let pem = read_file("public key", path)?;
            let algorithm: Algorithm = self
                .public_key_algorithm
                .parse()
                .map_err(|_| SettingsError::Algorithm(self.public_key_algorithm.clone()))?;
            return Ok(KeySource::PublicKeyPem { pem, algorithm });
        }
        Ok(KeySource::HmacSecret(self.hmac_secret(data_dir)?))
    }

    /// The HS256 secret: the configured file's bytes (less a trailing
    /// newline), or the development secret.
    pub fn hmac_secret(&self, data_dir: &Path) -> Result<Vec<u8>, SettingsError> {
        match &self.hmac_secret_file {
            Some(path) => read_secret("HMAC secret", path),
            None => ensure_secret_file(
                &data_dir.join(DEV_HMAC_SECRET_FILE),
                "development HMAC secret",
            ),
        }
    }
}

/// A secret file's bytes, less trailing whitespace (editors add a newline).
/// Shortest HMAC secret accepted: HS256 keys shorter than its 32-byte
/// output are weaker than the algorithm, and an empty one is no key at all.
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

fn read_secret(what: &'static str, path: &Path) -> Result<Vec<u8>, SettingsError> {
    let mut secret = read_file(what, path)?;
    while secret.last().is_some_and(u8::is_ascii_whitespace) {
        secret.pop();
    }
    if secret.len() < MIN_HMAC_SECRET_BYTES {
        return Err(SettingsError::File {
            what,
            path: path.to_owned(),
            reason: format!(
                "{} bytes; at least {MIN_HMAC_SECRET_BYTES} are needed (e.g. `openssl rand -hex 32`)",
                secret.len()
            ),
        });
    }
    Ok(secret)
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, SettingsError> {
    fs::read(path).map_err(|e| SettingsError::File {
        what,
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Reads a 32-byte hex secret, creating it (mode 0600) from the OS random
/// source when it does not exist yet.
pub fn ensure_secret_file(path: &Path, what: &'static str) -> Result<Vec<u8>, SettingsError> {
    let error = |reason: String| SettingsError::File {
        what,
        path: path.to_owned(),
        reason,
    };
    if !path.exists() {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| error(e.to_string()))?;
        }
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| error(e.to_string()))?;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| error(e.to_string()))?;
        file.write_all(hex::encode(bytes).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| error(e.to_string()))?;
    }
    let mode = fs::metadata(path)
        .map_err(|e| error(e.to_string()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "{what} is readable by other users");
    }
    let text = fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    hex::decode(text.trim()).map_err(|e| error(format!("not hex: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_file_is_created_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("equipoise-settings-{}", std::process::id()));
        let path = dir.join("secret");
        let first = ensure_secret_file(&path, "test secret").expect("created");
        let second = ensure_secret_file(&path, "test secret").expect("read");
        assert_eq!(first.len(), 32);
        assert_eq!(first, second);
        let mode = fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn range_checks_name_the_key_the_bound_and_the_value() {
        assert_eq!(at_least("pool.size", 1u32, 1), Ok(()));
        assert_eq!(
            at_least("pool.size", 0u32, 1).map_err(|e| e.to_string()),
            Err("pool.size must be at least 1, not 0".to_owned())
        );
        assert_eq!(between("size", 10u64, 10, 20), Ok(()));
        assert_eq!(between("size", 20u64, 10, 20), Ok(()));
        assert_eq!(
            between("size", 9u64, 10, 20).map_err(|e| e.to_string()),
            Err("size must be between 10 and 20, not 9".to_owned())
        );
        assert_eq!(
            between("size", 21u64, 10, 20).map_err(|e| e.to_string()),
            Err("size must be between 10 and 20, not 21".to_owned())
        );
    }

    #[test]
    fn missing_public_key_names_the_file() {
        let settings = AuthSettings {
            public_key_pem_file: Some("/nonexistent/key.pem".into()),
            ..AuthSettings::default()
        };
        let error = settings.verifier(Path::new("/tmp")).err().expect("error");
        assert!(
            error.to_string().contains("/nonexistent/key.pem"),
            "{error}"
        );
    }

    #[test]
    fn public_user_keys_need_a_service_secret_of_their_own() {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let settings = AuthSettings {
            jwks_file: Some("/etc/equipoise/jwks.json".into()),
            ..AuthSettings::default()
        };
        let error = settings
            .service_secret(data_dir.path())
            .expect_err("refused");
        assert!(
            error.to_string().contains("auth.service_hmac_secret_file"),
            "{error}"
        );
        assert!(
            !data_dir.path().join(DEV_HMAC_SECRET_FILE).exists(),
            "no per-replica development secret is made"
        );
        let secret_file = data_dir.path().join("service.secret");
        fs::write(&secret_file, "a-service-secret-of-at-least-32-bytes\n").expect("write");
        let configured = AuthSettings {
            service_hmac_secret_file: Some(secret_file),
            ..settings
        };
        assert_eq!(
            configured.service_secret(data_dir.path()).expect("read"),
            b"a-service-secret-of-at-least-32-bytes"
        );
    }

    /// Review A2: a short or empty configured HMAC secret is refused, naming
    /// the file; it would sign tokens anyone could forge.
    #[test]
    fn short_or_empty_hmac_secrets_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, content) in [
            ("empty", ""),
            ("short", "secret\n"),
            ("padded", "  31-bytes-of-secret-text-here  \n"),
        ] {
            let path = dir.path().join(name);
            fs::write(&path, content).expect("write");
            let settings = AuthSettings {
                hmac_secret_file: Some(path.clone()),
                ..AuthSettings::default()
            };
            let error = settings.verifier(dir.path()).err().expect("refused");
            let text = error.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains("at least 32"), "{text}");
        }
    }
}
