//! Calling an Equipoise server: a channel with deliberate timeouts, and the
//! one interceptor that stamps what every outgoing call carries: the bearer
//! token (a user's, or a `service:<name>` token minted from the shared HMAC
//! secret) and the W3C trace context of the calling span. Calls between
//! services run in a client span ([`traced`]).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::propagation;
use crate::auth::{AuthError, Claims, Role, mint_hmac_token};

/// How long a client waits, so a dead peer fails the call instead of
/// hanging it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To open the TCP and HTTP/2 connection.
    pub connect: Duration,
    /// From sending a request to its response headers (a stream's items may
    /// keep coming after that).
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("endpoint {endpoint}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("cannot reach {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("the token has characters a header cannot carry")]
    TokenNotAscii,
    #[error("'{0}' is not a service name (lowercase letters, digits and '-')")]
    ServiceName(String),
    #[error("service token: {0}")]
    Mint(#[from] AuthError),
    #[error("a service token must live at least a minute, not {0:?}")]
    TokenLifetime(Duration),
}

/// The endpoint at `uri` with `timeouts` applied.
pub fn endpoint(uri: &str, timeouts: Timeouts) -> Result<Endpoint, ClientError> {
    let endpoint = Endpoint::from_shared(uri.to_owned()).map_err(|e| ClientError::Endpoint {
        endpoint: uri.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(endpoint
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.request))
}

/// Connects now, so an unreachable server is reported before the first call.
pub async fn connect(uri: &str, timeouts: Timeouts) -> Result<Channel, ClientError> {
    endpoint(uri, timeouts)?
        .connect()
        .await
        .map_err(|e| ClientError::Unreachable {
            endpoint: uri.to_owned(),
            reason: e.to_string(),
        })
}

/// Connects on the first call and reconnects after failures: for a service
/// whose dependency may start later or restart.
pub fn connect_lazy(uri: &str, timeouts: Timeouts) -> Result<Channel, ClientError> {
    Ok(endpoint(uri, timeouts)?.connect_lazy())
}

/// As [`endpoint`], over TLS with `tls` when given. The URI must then be
/// `https://`: tonic would quietly call an `http://` one in plaintext.
pub fn endpoint_with_tls(
    uri: &str,
    timeouts: Timeouts,
    tls: Option<ClientTlsConfig>,
) -> Result<Endpoint, ClientError> {
    let endpoint = endpoint(uri, timeouts)?;
    let Some(tls) = tls else {
        return Ok(endpoint);
    };
    let error = |reason: String| ClientError::Endpoint {
        endpoint: uri.to_owned(),
        reason,
    };
    if endpoint.uri().scheme_str() != Some("https") {
        return Err(error(
            "TLS is configured, so the address must be https://".into(),
        ));
    }
    endpoint.tls_config(tls).map_err(|e| error(e.to_string()))
}

/// As [`connect`], over TLS with `tls` when given.
pub async fn connect_with_tls(
    uri: &str,
    timeouts: Timeouts,
    tls: Option<ClientTlsConfig>,
) -> Result<Channel, ClientError> {
    endpoint_with_tls(uri, timeouts, tls)?
        .connect()
        .await
        .map_err(|e| ClientError::Unreachable {
            endpoint: uri.to_owned(),
            reason: super::tls::describe(&e),
        })
}

/// As [`connect_lazy`], over TLS with `tls` when given.
pub fn connect_lazy_with_tls(
    uri: &str,
    timeouts: Timeouts,
    tls: Option<ClientTlsConfig>,
) -> Result<Channel, ClientError> {
    Ok(endpoint_with_tls(uri, timeouts, tls)?.connect_lazy())
}

/// A channel whose every call goes through the [`ClientInterceptor`]; give
/// it to a generated client's `new`.
pub type AuthenticatedChannel = InterceptedService<Channel, ClientInterceptor>;

pub fn authenticated(channel: Channel, interceptor: ClientInterceptor) -> AuthenticatedChannel {
    InterceptedService::new(channel, interceptor)
}

/// Who a service-to-service token says is calling, and for whom. Servers
/// accept service roles only under [`crate::auth::SERVICE_TOKEN_ISSUER`];
/// `AuthSettings::service_interceptor` builds the identity that way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceIdentity {
    /// The calling service, e.g. `blinding`: the token's role is
    /// `service:blinding`.
    pub service: String,
    /// The `aud` and `iss` the called server accepts.
    pub audience: String,
    pub issuer: String,
    /// How long each minted token lives; a fresh one is minted when a
    /// quarter of that is left.
    pub lifetime: Duration,
}

/// Stamps every outgoing call with its metadata. One type for every client
/// (CLI, tests, service-to-service), so what a call carries is decided once.
#[derive(Clone)]
pub struct ClientInterceptor {
    credentials: Credentials,
}

#[derive(Clone)]
enum Credentials {
    /// A token obtained elsewhere: a user's, or one given to the CLI.
    Bearer(MetadataValue<Ascii>),
    Service(ServiceTokens),
}

impl ClientInterceptor {
    /// Sends `token` as `authorization: Bearer <token>`.
    pub fn bearer(token: &str) -> Result<Self, ClientError> {
        Ok(Self {
            credentials: Credentials::Bearer(bearer_value(token)?),
        })
    }

    /// Sends tokens for `identity` minted with the HS256 `secret`; the first
    /// is minted now, so a bad identity fails at start, not on a call.
    pub fn service(identity: ServiceIdentity, secret: &[u8]) -> Result<Self, ClientError> {
        let role = format!("service:{}", identity.service);
        if role.parse::<Role>().is_err() {
            return Err(ClientError::ServiceName(identity.service));
        }
        if identity.lifetime < MIN_SERVICE_TOKEN_LIFETIME {
            return Err(ClientError::TokenLifetime(identity.lifetime));
        }
        let tokens = ServiceTokens {
            identity: Arc::new(identity),
            secret: Arc::from(secret),
            current: Arc::default(),
        };
        tokens.current_value(now())?;
        Ok(Self {
            credentials: Credentials::Service(tokens),
        })
    }
}

impl Interceptor for ClientInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let authorization = match &self.credentials {
            Credentials::Bearer(value) => value.clone(),
            Credentials::Service(tokens) => tokens.current_value(now()).map_err(|e| {
                tonic::Status::unauthenticated(format!("no service token to send: {e}"))
            })?,
        };
        request
            .metadata_mut()
            .insert("authorization", authorization);
        propagation::inject(&Span::current().context(), request.metadata_mut());
        Ok(request)
    }
}

/// Runs one call to another service in a client span named by its gRPC
/// `path` (`/package.Service/Method`), which the interceptor propagates as
/// the callee's parent; the span ends with the call's status code.
pub async fn traced<T>(
    path: &'static str,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<tonic::Response<T>, tonic::Status> {
    let name = path.trim_start_matches('/');
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    let span = tracing::info_span!(
        "grpc.client",
        otel.name = name,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
    );
    let result = call.instrument(span.clone()).await;
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    span.record("rpc.grpc.status_code", code as i32);
    if code != tonic::Code::Ok {
        span.record("otel.status_code", "ERROR");
    }
    result
}

/// Shortest lifetime a service token may have: tokens carry whole seconds,
/// and one that expires as it is minted would fail every call.
pub const MIN_SERVICE_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// Service tokens, minted on demand and reused until close to expiry. Every
/// clone of a client shares the current token (clients are cloned per task).
#[derive(Clone)]
struct ServiceTokens {
    identity: Arc<ServiceIdentity>,
    secret: Arc<[u8]>,
    current: Arc<Mutex<Option<CurrentToken>>>,
}

/// The header value, and the second from which it is renewed.
type CurrentToken = (MetadataValue<Ascii>, i64);

impl ServiceTokens {
    fn current_value(&self, now: i64) -> Result<MetadataValue<Ascii>, ClientError> {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((value, renew_at)) = current.as_ref()
            && now < *renew_at
        {
            return Ok(value.clone());
        }
        let lifetime = i64::try_from(self.identity.lifetime.as_secs()).unwrap_or(i64::MAX);
        let claims = service_claims(&self.identity, now, lifetime);
        let value = bearer_value(&mint_hmac_token(&self.secret, &claims)?)?;
        *current = Some((value.clone(), now.saturating_add(lifetime - lifetime / 4)));
        Ok(value)
    }
}

fn service_claims(identity: &ServiceIdentity, now: i64, lifetime: i64) -> Claims {
    let role = format!("service:{}", identity.service);
    Claims {
        sub: role.clone(),
        name: format!("{} service", identity.service),
        roles: vec![role],
        sites: Vec::new(),
        // A service acts on whichever trial the call names; the called
        // service's own rules decide what `service:<name>` may do.
        trials: vec!["*".into()],
        auth_time: Some(now),
        exp: u64::try_from(now.saturating_add(lifetime)).unwrap_or(0),
        iat: u64::try_from(now).ok(),
        aud: identity.audience.clone(),
        iss: identity.issuer.clone(),
    }
}

fn bearer_value(token: &str) -> Result<MetadataValue<Ascii>, ClientError> {
    format!("Bearer {token}")
        .parse()
        .map_err(|_| ClientError::TokenNotAscii)
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{KeySource, SERVICE_TOKEN_ISSUER, TokenVerifier};
    use crate::settings::AuthSettings;

    const SECRET: &[u8] = b"client-test-secret-of-reasonable-length";

    fn identity(service: &str) -> ServiceIdentity {
        ServiceIdentity {
            service: service.into(),
            audience: "equipoise".into(),
            issuer: "equipoise-dev".into(),
            lifetime: Duration::from_secs(3600),
        }
    }

    fn authorization(interceptor: &mut ClientInterceptor) -> String {
        let request = interceptor
            .call(tonic::Request::new(()))
            .expect("intercepted");
        request
            .metadata()
            .get("authorization")
            .expect("authorization set")
            .to_str()
            .expect("ascii")
            .to_owned()
    }

    #[test]
    fn bearer_tokens_are_sent_as_given() {
        let mut interceptor = ClientInterceptor::bearer("abc.def.ghi").expect("ascii token");
        assert_eq!(authorization(&mut interceptor), "Bearer abc.def.ghi");
        assert!(matches!(
            ClientInterceptor::bearer("abc\ndef"),
            Err(ClientError::TokenNotAscii)
        ));
    }

    #[test]
    fn service_tokens_verify_as_the_service_role() {
        let service = ServiceIdentity {
            issuer: SERVICE_TOKEN_ISSUER.into(),
            ..identity("blinding")
        };
        let mut interceptor = ClientInterceptor::service(service, SECRET).expect("identity");
        let verifier = TokenVerifier::new(
            KeySource::HmacSecret(b"user-secret".to_vec()),
            "equipoise",
            "equipoise-dev",
        )
        .expect("verifier")
        .with_service_secret(SECRET.to_vec());
        let caller = verifier
            .verify_header(Some(&authorization(&mut interceptor)))
            .expect("a valid token");
        assert!(caller.has_role(&Role::Service("blinding".into())));
        assert_eq!(caller.roles.len(), 1);
        assert!(caller.may_access_trial("ANY-TRIAL"));
    }

    #[test]
    fn service_names_that_are_not_roles_are_refused() {
        for name in ["", "Blinding", "blinding service"] {
            assert!(
                matches!(
                    ClientInterceptor::service(identity(name), SECRET),
                    Err(ClientError::ServiceName(_))
                ),
                "{name:?} accepted"
            );
        }
    }

    #[test]
    fn service_tokens_are_reused_then_renewed_before_expiry() {
        let tokens = ServiceTokens {
            identity: Arc::new(identity("safety")),
            secret: Arc::from(SECRET),
            current: Arc::default(),
        };
        let first = tokens.current_value(1_000).expect("minted");
        assert_eq!(tokens.current_value(1_001).expect("reused"), first);
        // Three quarters of the hour later, a new token is minted, and a
        // clone (a client per task) sees the renewed one.
        let clone = tokens.clone();
        let renewed = tokens.current_value(1_000 + 2_700).expect("renewed");
        assert_ne!(renewed, first);
        assert_eq!(clone.current_value(1_000 + 2_701).expect("shared"), renewed);
    }

    #[test]
    fn service_tokens_that_would_expire_at_once_are_refused() {
        let short = ServiceIdentity {
            lifetime: Duration::from_millis(500),
            ..identity("safety")
        };
        assert!(matches!(
            ClientInterceptor::service(short, SECRET),
            Err(ClientError::TokenLifetime(_))
        ));
    }

    #[test]
    fn tls_is_never_quietly_dropped_on_an_http_address() {
        let tls = Some(ClientTlsConfig::new());
        let error = endpoint_with_tls("http://127.0.0.1:1", Timeouts::default(), tls.clone())
            .expect_err("refused");
        assert!(error.to_string().contains("https://"), "{error}");
        assert!(endpoint_with_tls("https://127.0.0.1:1", Timeouts::default(), tls).is_ok());
        assert!(endpoint_with_tls("http://127.0.0.1:1", Timeouts::default(), None).is_ok());
    }

    #[test]
    fn malformed_endpoints_are_named() {
        let error = endpoint("not a uri", Timeouts::default()).expect_err("refused");
        assert!(error.to_string().contains("not a uri"), "{error}");
    }

    #[test]
    fn service_interceptors_mint_tokens_the_verifier_accepts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = AuthSettings::default();
        let mut interceptor = settings
            .service_interceptor(dir.path(), "randomisation")
            .expect("interceptor");
        let caller = settings
            .verifier(dir.path())
            .expect("verifier")
            .verify_header(Some(&authorization(&mut interceptor)))
            .expect("accepted");
        assert_eq!(caller.subject, "service:randomisation");
        assert!(
            settings
                .service_interceptor(dir.path(), "Not A Service")
                .is_err()
        );
    }

    #[test]
    fn a_separate_service_secret_is_used_for_service_tokens_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret_file = dir.path().join("service.secret");
        std::fs::write(&secret_file, "a-service-secret-of-reasonable-length\n").expect("write");
        let settings = AuthSettings {
            service_hmac_secret_file: Some(secret_file),
            ..AuthSettings::default()
        };
        assert_eq!(
            settings.service_secret(dir.path()).expect("secret"),
            b"a-service-secret-of-reasonable-length"
        );
        assert_ne!(
            settings.service_secret(dir.path()).expect("secret"),
            settings.hmac_secret(dir.path()).expect("user secret")
        );
        // A verifier with the default settings (the user secret for both)
        // refuses these service tokens.
        let mut interceptor = settings
            .service_interceptor(dir.path(), "blinding")
            .expect("interceptor");
        let header = authorization(&mut interceptor);
        assert!(
            settings
                .verifier(dir.path())
                .expect("verifier")
                .verify_header(Some(&header))
                .is_ok()
        );
        let other = AuthSettings::default()
            .verifier(dir.path())
            .expect("verifier");
        assert!(other.verify_header(Some(&header)).is_err());
    }
}
