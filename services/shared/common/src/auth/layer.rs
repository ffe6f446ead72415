//! A tower layer that turns a bearer JWT into a [`Caller`] in the request
//! extensions, or answers UNAUTHENTICATED / PERMISSION_DENIED itself.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::{AuthError, Caller, TokenVerifier};

/// Paths served without a token: Kubernetes probes cannot carry one.
const PUBLIC_PATH_PREFIXES: &[&str] = &["/grpc.health.v1.Health/"];

#[derive(Clone)]
pub struct AuthLayer {
    verifier: Arc<TokenVerifier>,
}

impl AuthLayer {
    pub fn new(verifier: Arc<TokenVerifier>) -> Self {
        Self { verifier }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    verifier: Arc<TokenVerifier>,
}

impl<S, B> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        if PUBLIC_PATH_PREFIXES.iter().any(|p| path.starts_with(p)) {
            return Box::pin(self.inner.call(request));
        }
        let header = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match self.verifier.verify_header(header) {
            Ok(caller) => {
                request.extensions_mut().insert::<Caller>(caller);
                Box::pin(self.inner.call(request))
            }
            Err(error) => {
                tracing::info!(%path, reason = %error, "request refused by authentication");
                let response = status_for(&error).into_http();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

fn status_for(error: &AuthError) -> tonic::Status {
    match error {
        AuthError::RoleConflict(_) | AuthError::ServiceRoleInUserToken => {
            tonic::Status::permission_denied(error.to_string())
        }
        _ => tonic::Status::unauthenticated(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_refusals_are_permission_denied_and_the_rest_unauthenticated() {
        let denied = [
            AuthError::RoleConflict("site_investigator with unblinded_preparer".into()),
            AuthError::ServiceRoleInUserToken,
        ];
        for error in denied {
            assert_eq!(status_for(&error).code(), tonic::Code::PermissionDenied);
        }
        let unauthenticated = [
            AuthError::MissingToken,
            AuthError::BadSignature,
            AuthError::InvalidServiceToken("two roles".into()),
        ];
        for error in unauthenticated {
            assert_eq!(status_for(&error).code(), tonic::Code::Unauthenticated);
        }
        assert_eq!(
            status_for(&AuthError::ServiceRoleInUserToken).message(),
            "user tokens may not carry service roles"
        );
    }
}
