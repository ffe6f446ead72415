//! The browser's way in (docs/architecture.md, "Operations"): gRPC-Web on
//! the same port as gRPC, so the page calls the same typed RPCs as every
//! other client, and the page itself, embedded in the binary and served on
//! that port (one origin, no second API). Browsers on other origins are
//! let in only when `web.allowed_origins` names them.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, CorsLayer};

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error(
        "web.allowed_origins: '{origin}' is not an origin (scheme://host[:port], nothing after): {reason}"
    )]
    Origin { origin: String, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSettings {
    /// Serve gRPC-Web and the embedded page. Off: gRPC (HTTP/2) only.
    pub enabled: bool,
    /// Other origins whose pages may call this server from a browser, e.g.
    /// `https://desk.example.org`. The embedded page needs none: it is
    /// served from this server's own origin.
    pub allowed_origins: Vec<String>,
}

impl Default for WebSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            allowed_origins: Vec::new(),
        }
    }
}

impl WebSettings {
    /// Checks every configured origin, so a typo stops start-up instead of
    /// silently leaving a page locked out.
    pub fn validate(&self) -> Result<(), WebError> {
        self.origins().map(|_| ())
    }

    fn origins(&self) -> Result<Vec<HeaderValue>, WebError> {
        self.allowed_origins
            .iter()
            .map(|origin| parse_origin(origin))
            .collect()
    }

    /// CORS for the configured origins: the headers gRPC-Web sends and the
    /// ones its client must read. `None` when no other origin is allowed:
    /// then browsers apply their same-origin rule unaided.
    pub fn cors(&self) -> Result<Option<CorsLayer>, WebError> {
        let origins = self.origins()?;
        if origins.is_empty() {
            return Ok(None);
        }
        let allowed = [
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-grpc-web"),
            HeaderName::from_static("x-user-agent"),
            HeaderName::from_static("grpc-timeout"),
            HeaderName::from_static("traceparent"),
            HeaderName::from_static("tracestate"),
        ];
        let exposed = [
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
        ];
        Ok(Some(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([Method::POST])
                .allow_headers(allowed)
                .expose_headers(exposed)
                .max_age(Duration::from_secs(600)),
        ))
    }
}

fn parse_origin(origin: &str) -> Result<HeaderValue, WebError> {
    let error = |reason: &str| WebError::Origin {
        origin: origin.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: http::Uri = origin.parse().map_err(|_| error("not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(error("the scheme must be http or https"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(error("there is no host"));
    }
    let bare = uri.path_and_query().is_none_or(|p| p.as_str() == "/") && !origin.ends_with('/');
    if !bare {
        return Err(error("an origin has no path, query or trailing slash"));
    }
    HeaderValue::from_str(origin).map_err(|_| error("not a header value"))
}

/// One file of the page, embedded at compile time.
#[derive(Debug, Clone, Copy)]
pub struct PageFile {
    /// The path it is served at, e.g. `/app.js`.
    pub path: &'static str,
    pub bytes: &'static [u8],
}

/// The page's files; `/` is `/index.html`.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub files: &'static [PageFile],
}

impl Page {
    fn file(&self, path: &str) -> Option<&'static PageFile> {
        let path = if path == "/" { "/index.html" } else { path };
        self.files.iter().find(|file| file.path == path)
    }
}

/// No script, style, image or connection from anywhere but this origin,
/// no inline code, no framing: the page that shows an arm runs only what
/// the binary carries.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Answers `GET`/`HEAD` from the page's files and passes everything else
/// (gRPC and gRPC-Web are always `POST`) to the services. Mounted outside
/// authentication: the page is public, what it calls is not.
#[derive(Debug, Clone, Copy)]
pub struct PageLayer {
    page: Page,
}

impl PageLayer {
    pub fn new(page: Page) -> Self {
        Self { page }
    }
}

impl<S> Layer<S> for PageLayer {
    type Service = PageService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PageService {
            inner,
            page: self.page,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PageService<S> {
    inner: S,
    page: Page,
}

type ResponseBody = tonic::body::Body;

impl<S, B> Service<http::Request<B>> for PageService<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<ResponseBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.method();
        if method != Method::GET && method != Method::HEAD {
            return Box::pin(self.inner.call(request));
        }
        let response = page_response(&self.page, request.uri().path(), method == Method::HEAD);
        Box::pin(async move { Ok(response) })
    }
}

fn page_response(page: &Page, path: &str, head: bool) -> http::Response<ResponseBody> {
    let Some(file) = page.file(path) else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    let body = if head {
        ResponseBody::default()
    } else {
        ResponseBody::new(http_body_util::Full::new(bytes::Bytes::from_static(
            file.bytes,
        )))
    };
    let mut response = http::Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(file.path)),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(file.bytes.len()));
    // The page changes with the binary; an old copy must not linger.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn plain(status: StatusCode, text: &'static str) -> http::Response<ResponseBody> {
    let mut response = http::Response::new(ResponseBody::new(http_body_util::Full::new(
        bytes::Bytes::from_static(text.as_bytes()),
    )));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn content_type(path: &str) -> &'static str {
    let extension = path.rsplit_once('.').map_or("", |(_, e)| e);
    match extension {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" | "map" => "application/json",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::BodyExt;

    use super::*;

    const PAGE: Page = Page {
        files: &[
            PageFile {
                path: "/index.html",
                bytes: b"<!doctype html><title>desk</title>",
            },
            PageFile {
                path: "/app.js",
                bytes: b"console.log(1)",
            },
        ],
    };

    async fn get(method: Method, path: &str) -> (http::response::Parts, Vec<u8>) {
        let inner = tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, Infallible>(http::Response::new(ResponseBody::new(
                http_body_util::Full::new(bytes::Bytes::from_static(b"grpc")),
            )))
        });
        let mut service = PageLayer::new(PAGE).layer(inner);
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .expect("request");
        let response = service.call(request).await.expect("answered");
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes().to_vec();
        (parts, bytes)
    }

    #[tokio::test]
    async fn the_root_is_the_index_with_a_strict_policy() {
        let (parts, body) = get(Method::GET, "/").await;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(body, b"<!doctype html><title>desk</title>");
        assert_eq!(
            parts.headers[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let policy = parts.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ascii");
        assert!(policy.contains("script-src 'self'") && !policy.contains("unsafe"));
        assert_eq!(parts.headers[header::CACHE_CONTROL], "no-store");
    }

    #[tokio::test]
    async fn files_are_served_by_path_and_unknown_paths_are_not_found() {
        let (parts, body) = get(Method::GET, "/app.js").await;
        assert_eq!(body, b"console.log(1)");
        assert_eq!(
            parts.headers[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        let (parts, _) = get(Method::GET, "/../Cargo.toml").await;
        assert_eq!(parts.status, StatusCode::NOT_FOUND);
        let (parts, _) = get(
            Method::GET,
            "/equipoise.blinding.v1.BlindingService/EmergencyUnblind",
        )
        .await;
        assert_eq!(parts.status, StatusCode::NOT_FOUND);
        let (parts, body) = get(Method::HEAD, "/app.js").await;
        assert_eq!(parts.status, StatusCode::OK);
        assert!(body.is_empty());
    }

    #[tokio::test]
    async fn posts_go_to_the_services() {
        let (_, body) = get(Method::POST, "/").await;
        assert_eq!(body, b"grpc");
    }

    #[test]
    fn origins_are_checked() {
        let settings = |origins: &[&str]| WebSettings {
            enabled: true,
            allowed_origins: origins.iter().map(|o| (*o).to_owned()).collect(),
        };
        assert!(settings(&[]).cors().expect("valid").is_none());
        assert!(
            settings(&["https://desk.example.org", "http://localhost:5173"])
                .cors()
                .expect("valid")
                .is_some()
        );
        for bad in [
            "desk.example.org",
            "ftp://desk.example.org",
            "https://desk.example.org/",
            "https://desk.example.org/page",
            "*",
        ] {
            let error = settings(&[bad]).validate().expect_err(bad);
            assert!(error.to_string().contains("web.allowed_origins"), "{error}");
            assert!(error.to_string().contains(bad), "{error}");
        }
    }
}
