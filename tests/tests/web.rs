//! What a browser meets on the server's port, spoken as raw HTTP/1.1 over
//! loopback (what a browser without HTTP/2 sends): the embedded page,
//! gRPC-Web calls with their status in the trailer frame, authentication
//! on them as on gRPC, and CORS only for configured origins.

use equipoise_tests::{RESPINE_YAML, TestServer, activate};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One answer, de-chunked.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `head` (without the blank line) and `body`, reads to the close.
async fn http1(server: &TestServer, head: &str, body: &[u8]) -> Answer {
    let address = server.endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let request = format!(
        "{head}\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    stream.write_all(body).await.expect("send body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    parse(&raw)
}

fn parse(raw: &[u8]) -> Answer {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_text.trim(), 16).expect("a hex chunk size");
        rest = &rest[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// A gRPC-Web message frame.
fn frame(message: &impl Message) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    framed.extend_from_slice(&bytes);
    framed
}

/// The data frames' payloads and the trailer frame's `grpc-status`.
fn frames(body: &[u8]) -> (Vec<Vec<u8>>, Option<String>, String) {
    let (mut data, mut status, mut trailers) = (Vec::new(), None, String::new());
    let mut rest = body;
    while rest.len() >= 5 {
        let flag = rest[0];
        let length = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let payload = &rest[5..5 + length];
        if flag & 0x80 == 0 {
            data.push(payload.to_vec());
        } else {
            trailers = String::from_utf8_lossy(payload).into_owned();
            status = trailers
                .split("\r\n")
                .find_map(|l| l.strip_prefix("grpc-status:"))
                .map(|s| s.trim().to_owned());
        }
        rest = &rest[5 + length..];
    }
    (data, status, trailers)
}

fn grpc_web_post(path: &str, token: Option<&str>) -> String {
    let authorization = token
        .map(|t| format!("\r\nAuthorization: Bearer {t}"))
        .unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nContent-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1{authorization}"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_web_calls_are_answered_over_http1_with_the_same_authentication() {
    let server = TestServer::start().await;
    activate(&server, RESPINE_YAML).await;

    let health = tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    let answer = http1(
        &server,
        &grpc_web_post("/grpc.health.v1.Health/Check", None),
        &frame(&health),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/grpc-web")),
        "{:?}",
        answer.headers
    );
    let (data, status, _) = frames(&answer.body);
    assert_eq!(status.as_deref(), Some("0"));
    let reply = tonic_health::pb::HealthCheckResponse::decode(data[0].as_slice()).expect("reply");
    assert_eq!(reply.status, 1, "SERVING");

    let request = equipoise_proto::randomisation::v1::GetTrialRequest {
        trial_id: "RESPINE".into(),
    };
    let path = "/equipoise.randomisation.v1.RandomisationService/GetTrial";
    let refused = http1(&server, &grpc_web_post(path, None), &frame(&request)).await;
    let (data, status, trailers) = frames(&refused.body);
    // Refused before any handler: the status may come as headers alone.
    let status = status.or_else(|| refused.header("grpc-status").map(str::to_owned));
    assert_eq!(
        status.as_deref(),
        Some("16"),
        "{trailers} {:?}",
        refused.headers
    );
    assert!(data.is_empty());

    let token = server.admin_token();
    let served = http1(
        &server,
        &grpc_web_post(path, Some(&token)),
        &frame(&request),
    )
    .await;
    let (data, status, _) = frames(&served.body);
    assert_eq!(status.as_deref(), Some("0"));
    let trial =
        equipoise_proto::randomisation::v1::Trial::decode(data[0].as_slice()).expect("trial");
    assert_eq!(trial.trial_id, "RESPINE");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_get_is_answered_by_the_page_never_by_a_service() {
    let server = TestServer::start().await;
    let answer = http1(
        &server,
        "GET /equipoise.randomisation.v1.RandomisationService/GetTrial HTTP/1.1",
        b"",
    )
    .await;
    assert_eq!(answer.status, 404);
    let answer = http1(&server, "GET /../../Cargo.toml HTTP/1.1", b"").await;
    assert_eq!(answer.status, 404);
    let index = http1(&server, "GET / HTTP/1.1", b"").await;
    assert_eq!(index.status, 200);
    assert!(String::from_utf8_lossy(&index.body).contains("<html"));
    assert!(
        index
            .header("content-security-policy")
            .is_some_and(|p| p.contains("script-src 'self'"))
    );
    let script = http1(&server, "GET /app.js HTTP/1.1", b"").await;
    assert_eq!(script.status, 200);
    assert!(
        script
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/javascript"))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn other_origins_are_let_in_only_when_configured() {
    let server = TestServer::start_with(|settings| {
        settings.web.allowed_origins = vec!["https://desk.example.org".into()];
    })
    .await;
    let preflight = |origin: &str| {
        format!(
            "OPTIONS /equipoise.blinding.v1.BlindingService/EmergencyUnblind HTTP/1.1\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization,content-type,x-grpc-web"
        )
    };
    let allowed = http1(&server, &preflight("https://desk.example.org"), b"").await;
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://desk.example.org")
    );
    let allowed_headers = allowed
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(allowed_headers.contains("authorization") && allowed_headers.contains("x-grpc-web"));
    let other = http1(&server, &preflight("https://evil.example.net"), b"").await;
    assert_eq!(other.header("access-control-allow-origin"), None);
    server.stop().await;

    // No origin configured: no CORS headers at all, for anyone.
    let server = TestServer::start().await;
    let none = http1(&server, &preflight("https://desk.example.org"), b"").await;
    assert_eq!(none.header("access-control-allow-origin"), None);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_web_off_http1_is_not_spoken() {
    let server = TestServer::start_with(|settings| settings.web.enabled = false).await;
    let address = server.endpoint.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&address).await.expect("connect");
    stream
        .write_all(
            format!("GET / HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("send");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    assert!(
        !String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    server.stop().await;
}
