//! TLS settings (the `[tls]` table) and the PEM files they name. Unset, the
//! services speak plaintext, the embedded default. Set, a server presents
//! `cert_file`, may require client certificates issued by `ca_file`, and
//! every call to another service goes over TLS, presenting the same pair.
//! The gRPC configurations built from these files are in
//! [`crate::grpc::tls`]; this module knows no gRPC.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// This service's PEM certificate chain, leaf first. Served to clients,
    /// and presented as the client certificate on calls to other services.
    pub cert_file: Option<PathBuf>,
    /// The PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// PEM CA bundle: verifies the services this one calls, and the client
    /// certificates it requires. Set, calls between services use TLS.
    pub ca_file: Option<PathBuf>,
    /// Refuse clients without a certificate issued by `ca_file`.
    pub require_client_cert: bool,
    /// The name expected in other services' certificates. Unset: the host
    /// of the URL called.
    pub server_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file that is missing, unreadable or holds no PEM of the right kind,
    /// named by its setting so the operator knows what to fix.
    #[error("{key} {}: {reason}", path.display())]
    File {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "{set} is set but {missing} is not: a certificate needs its key and a key its certificate"
    )]
    Unpaired {
        set: &'static str,
        missing: &'static str,
    },
    #[error(
        "tls.require_client_cert needs tls.ca_file (the CA client certificates are checked against) and tls.cert_file with tls.key_file (clients can only present a certificate over TLS)"
    )]
    ClientCertWithoutTls,
    #[error("tls.server_name must not be empty; leave it unset to use each URL's host")]
    EmptyServerName,
    #[error(
        "{key} is {url}: an https:// address needs tls.ca_file, the CA its certificate is checked against"
    )]
    HttpsWithoutCa { key: &'static str, url: String },
}

/// What a PEM file must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemKind {
    /// One or more certificates (a chain, or a CA bundle).
    Certificates,
    PrivateKey,
}

/// The PEM files of the `[tls]` table, read and checked at start-up.
#[derive(Clone)]
pub struct LoadedTls {
    /// This service's certificate chain and key, when it serves TLS.
    pub identity: Option<PemPair>,
    /// The CA bundle, when calls between services use TLS.
    pub ca: Option<Vec<u8>>,
    pub require_client_cert: bool,
    pub server_name: Option<String>,
}

/// A PEM certificate chain and its private key.
#[derive(Clone)]
pub struct PemPair {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for LoadedTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("LoadedTls")
            .field("identity", &self.identity.is_some())
            .field("ca", &self.ca.is_some())
            .field("require_client_cert", &self.require_client_cert)
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl TlsSettings {
    /// Refuses combinations that cannot work, before any file is read.
    pub fn validate(&self) -> Result<(), TlsError> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => Err(TlsError::Unpaired {
                set: "tls.cert_file",
                missing: "tls.key_file",
            }),
            (None, Some(_)) => Err(TlsError::Unpaired {
                set: "tls.key_file",
                missing: "tls.cert_file",
            }),
            _ => Ok(()),
        }?;
        if self.require_client_cert && (self.ca_file.is_none() || self.cert_file.is_none()) {
            return Err(TlsError::ClientCertWithoutTls);
        }
        if self.server_name.as_deref().is_some_and(str::is_empty) {
            return Err(TlsError::EmptyServerName);
        }
        Ok(())
    }

    /// Whether calls to other services use TLS.
    pub fn calls_over_tls(&self) -> bool {
        self.ca_file.is_some()
    }

    /// Reads and checks every configured file; a missing, unreadable or
    /// empty one stops start-up with an error naming its setting.
    pub fn load(&self) -> Result<LoadedTls, TlsError> {
        self.validate()?;
        install_crypto_provider();
        let identity = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some(PemPair {
                cert: read_pem("tls.cert_file", cert, PemKind::Certificates)?,
                key: read_pem("tls.key_file", key, PemKind::PrivateKey)?,
            }),
            _ => None,
        };
        let ca = self
            .ca_file
            .as_deref()
            .map(|path| read_pem("tls.ca_file", path, PemKind::Certificates))
            .transpose()?;
        Ok(LoadedTls {
            identity,
            ca,
            require_client_cert: self.require_client_cert,
            server_name: self.server_name.clone(),
        })
    }

    /// The URL a call to another service goes to: with TLS between
    /// services, always `https://`, so no call leaves in plaintext by a
    /// forgotten scheme (an `http://` URL, or the loopback address `--target
    /// all` infers, is upgraded). Without it, `https://` is refused, naming
    /// `key`: there would be no CA to check the certificate against.
    pub fn service_url(&self, key: &'static str, url: &str) -> Result<String, TlsError> {
        let scheme_end = url.find("://").map_or(0, |i| i + 3);
        let (scheme, rest) = url.split_at(scheme_end);
        match (self.calls_over_tls(), scheme.to_ascii_lowercase().as_str()) {
            (true, "http://") => Ok(format!("https://{rest}")),
            (false, "https://") => Err(TlsError::HttpsWithoutCa {
                key,
                url: url.to_owned(),
            }),
            _ => Ok(url.to_owned()),
        }
    }
}

/// Reads `path`, named `key` in errors, and checks it holds `kind`.
pub fn read_pem(key: &'static str, path: &Path, kind: PemKind) -> Result<Vec<u8>, TlsError> {
    let error = |reason: String| TlsError::File {
        key,
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    match kind {
        PemKind::Certificates => {
            let certificates = CertificateDer::pem_slice_iter(&bytes)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| error(format!("not a PEM certificate file: {e}")))?;
            if certificates.is_empty() {
                return Err(error("holds no PEM certificate".into()));
            }
        }
        PemKind::PrivateKey => {
            PrivateKeyDer::from_pem_slice(&bytes)
                .map_err(|e| error(format!("holds no PEM private key: {e}")))?;
        }
    }
    Ok(bytes)
}

/// Makes ring the process's TLS provider. rustls refuses to choose when
/// more than one provider is compiled in, and the gRPC server, Redis and
/// PostgreSQL clients all ask it for the default; installed once, they agree.
pub fn install_crypto_provider() {
    // An error means one is installed already, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, cert.pem()).expect("write");
        std::fs::write(&key_path, key.serialize_pem()).expect("write");
        (dir, cert_path, key_path)
    }

    fn error(settings: &TlsSettings) -> String {
        settings.load().expect_err("refused").to_string()
    }

    #[test]
    fn unset_is_plaintext() {
        let loaded = TlsSettings::default().load().expect("nothing to read");
        assert!(loaded.identity.is_none() && loaded.ca.is_none());
        assert!(!TlsSettings::default().calls_over_tls());
    }

    #[test]
    fn a_certificate_needs_its_key_and_a_key_its_certificate() {
        let only_cert = TlsSettings {
            cert_file: Some("/etc/equipoise/tls.crt".into()),
            ..TlsSettings::default()
        };
        assert_eq!(
            error(&only_cert),
            "tls.cert_file is set but tls.key_file is not: a certificate needs its key and a key its certificate"
        );
        let only_key = TlsSettings {
            key_file: Some("/etc/equipoise/tls.key".into()),
            ..TlsSettings::default()
        };
        assert!(
            error(&only_key).starts_with("tls.key_file is set but tls.cert_file is not"),
            "{}",
            error(&only_key)
        );
    }

    #[test]
    fn client_certificates_need_a_ca_and_a_server_certificate() {
        let (_dir, cert, key) = files();
        let without_ca = TlsSettings {
            cert_file: Some(cert.clone()),
            key_file: Some(key),
            require_client_cert: true,
            ..TlsSettings::default()
        };
        assert!(matches!(
            without_ca.load(),
            Err(TlsError::ClientCertWithoutTls)
        ));
        let without_server_tls = TlsSettings {
            ca_file: Some(cert),
            require_client_cert: true,
            ..TlsSettings::default()
        };
        assert!(matches!(
            without_server_tls.load(),
            Err(TlsError::ClientCertWithoutTls)
        ));
    }

    #[test]
    fn a_missing_file_is_named_by_its_setting() {
        let (dir, cert, key) = files();
        let missing = dir.path().join("missing.pem");
        let settings = TlsSettings {
            cert_file: Some(missing.clone()),
            key_file: Some(key.clone()),
            ..TlsSettings::default()
        };
        let message = error(&settings);
        assert!(
            message.starts_with(&format!("tls.cert_file {}: ", missing.display())),
            "{message}"
        );
        assert!(message.contains("No such file"), "{message}");

        let settings = TlsSettings {
            cert_file: Some(cert.clone()),
            key_file: Some(key),
            ca_file: Some(missing),
            ..TlsSettings::default()
        };
        assert!(error(&settings).starts_with("tls.ca_file "));
        let settings = TlsSettings {
            cert_file: Some(cert),
            key_file: Some(dir.path().join("gone.key")),
            ..TlsSettings::default()
        };
        assert!(error(&settings).starts_with("tls.key_file "));
    }

    #[test]
    fn files_of_the_wrong_kind_are_named_by_their_setting() {
        let (dir, cert, key) = files();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let swapped = TlsSettings {
            cert_file: Some(key.clone()),
            key_file: Some(cert.clone()),
            ..TlsSettings::default()
        };
        let message = error(&swapped);
        assert!(message.starts_with("tls.cert_file "), "{message}");
        assert!(message.contains("no PEM certificate"), "{message}");
        let keyless = TlsSettings {
            cert_file: Some(cert.clone()),
            key_file: Some(cert),
            ..TlsSettings::default()
        };
        let message = error(&keyless);
        assert!(message.starts_with("tls.key_file "), "{message}");
        let empty_ca = TlsSettings {
            ca_file: Some(empty),
            ..TlsSettings::default()
        };
        assert!(error(&empty_ca).starts_with("tls.ca_file "));
    }

    #[test]
    fn good_files_load() {
        let (_dir, cert, key) = files();
        let settings = TlsSettings {
            cert_file: Some(cert.clone()),
            key_file: Some(key),
            ca_file: Some(cert),
            require_client_cert: true,
            server_name: Some("equipoise.internal".into()),
        };
        let loaded = settings.load().expect("loads");
        assert!(loaded.identity.is_some() && loaded.ca.is_some());
        assert!(loaded.require_client_cert);
        assert_eq!(loaded.server_name.as_deref(), Some("equipoise.internal"));
    }

    #[test]
    fn an_empty_server_name_is_refused() {
        let settings = TlsSettings {
            server_name: Some(String::new()),
            ..TlsSettings::default()
        };
        assert!(matches!(
            settings.validate(),
            Err(TlsError::EmptyServerName)
        ));
    }

    #[test]
    fn with_tls_between_services_every_call_is_https() {
        let tls = TlsSettings {
            ca_file: Some("/etc/equipoise/ca.pem".into()),
            ..TlsSettings::default()
        };
        let url = |u| {
            tls.service_url("randomisation.blinding_url", u)
                .expect("url")
        };
        assert_eq!(url("http://127.0.0.1:50051"), "https://127.0.0.1:50051");
        assert_eq!(url("HTTP://blinding:50051"), "https://blinding:50051");
        assert_eq!(url("https://blinding:50051"), "https://blinding:50051");

        let plain = TlsSettings::default();
        assert_eq!(
            plain
                .service_url("randomisation.blinding_url", "http://blinding:50051")
                .expect("plaintext"),
            "http://blinding:50051"
        );
        let refused = plain
            .service_url("randomisation.blinding_url", "https://blinding:50051")
            .expect_err("no CA");
        assert_eq!(
            refused.to_string(),
            "randomisation.blinding_url is https://blinding:50051: an https:// address needs tls.ca_file, the CA its certificate is checked against"
        );
    }
}
