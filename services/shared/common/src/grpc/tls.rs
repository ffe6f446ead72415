//! The gRPC side of [`crate::tls`]: the server's TLS configuration and the
//! one every call to another service uses.

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::tls::{LoadedTls, PemPair};

impl LoadedTls {
    /// The server's configuration, when it serves TLS: its certificate, and
    /// with `require_client_cert` the CA every client certificate must
    /// chain to (a client without one is refused in the handshake).
    pub fn server_config(&self) -> Option<ServerTlsConfig> {
        let identity = self.identity.as_ref()?;
        let config = ServerTlsConfig::new().identity(identity_of(identity));
        match (&self.ca, self.require_client_cert) {
            (Some(ca), true) => Some(
                config
                    .client_ca_root(Certificate::from_pem(ca))
                    .client_auth_optional(false),
            ),
            _ => Some(config),
        }
    }

    /// The configuration of calls to other services, when they use TLS:
    /// servers are checked against the CA and `server_name` (else the URL's
    /// host), and this service presents its own certificate.
    pub fn client_config(&self) -> Option<ClientTlsConfig> {
        Some(client_config(
            self.ca.as_deref()?,
            self.identity.as_ref(),
            self.server_name.as_deref(),
        ))
    }
}

/// A client configuration trusting `ca`, presenting `identity` if given and
/// expecting `server_name` (else the URL's host) in the server's
/// certificate. For the CLI as much as for services.
pub fn client_config(
    ca: &[u8],
    identity: Option<&PemPair>,
    server_name: Option<&str>,
) -> ClientTlsConfig {
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some(identity) = identity {
        config = config.identity(identity_of(identity));
    }
    if let Some(name) = server_name {
        config = config.domain_name(name);
    }
    config
}

fn identity_of(pair: &PemPair) -> Identity {
    Identity::from_pem(&pair.cert, &pair.key)
}

/// An error and its causes: tonic's TLS errors say what failed only in
/// their causes.
pub fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> PemPair {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        PemPair {
            cert: cert.pem().into_bytes(),
            key: key.serialize_pem().into_bytes(),
        }
    }

    fn loaded(identity: PemPair, require_client_cert: bool) -> LoadedTls {
        LoadedTls {
            ca: Some(identity.cert.clone()),
            identity: Some(identity),
            require_client_cert,
            server_name: None,
        }
    }

    #[test]
    fn a_server_serves_tls_only_with_a_certificate_and_calls_only_with_a_ca() {
        let plain = LoadedTls {
            identity: None,
            ca: None,
            require_client_cert: false,
            server_name: None,
        };
        assert!(plain.server_config().is_none() && plain.client_config().is_none());
        let tls = loaded(pair("localhost"), true);
        let server = tls.server_config().expect("server TLS");
        assert!(
            tonic::transport::Server::builder()
                .tls_config(server)
                .is_ok()
        );
        assert!(tls.client_config().is_some());
    }

    /// A key that is not the certificate's is refused when the server is
    /// built, before it serves.
    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        crate::tls::install_crypto_provider();
        let mut mismatched = pair("localhost");
        mismatched.key = pair("localhost").key;
        let server = loaded(mismatched, false)
            .server_config()
            .expect("server TLS");
        let Err(error) = tonic::transport::Server::builder().tls_config(server) else {
            panic!("a mismatched key was accepted");
        };
        assert!(!describe(&error).is_empty());
    }
}
