//! `max_concurrent_calls_per_connection` (review, "Next in line"): one
//! connection may have at most that many calls open at once. The server
//! announces the limit in its HTTP/2 SETTINGS, so well-behaved clients queue
//! past it, and refuses a stream past it from a client that does not wait.
//! The client here writes raw frames, so it opens its streams whatever the
//! server announced; each call is held open by never sending its message.

use std::time::Duration;

use equipoise_tests::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: u32 = 2;
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_HEADERS: u8 = 0x4;
const REFUSED_STREAM: u32 = 0x7;
/// Only against a hang; nothing here is timed.
const HANG_GUARD: Duration = Duration::from_secs(30);

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("a small frame");
    let mut frame = length.to_be_bytes()[1..].to_vec();
    frame.extend([kind, flags]);
    frame.extend(stream.to_be_bytes());
    frame.extend(payload);
    frame
}

/// HPACK: a literal header without indexing, its name from the static table.
fn literal(name_index: u8, value: &str) -> Vec<u8> {
    assert!(name_index < 15 && value.len() < 127);
    let mut field = vec![name_index, value.len() as u8];
    field.extend(value.as_bytes());
    field
}

/// The headers of a health check, its message never sent.
fn open_health_check(stream: u32, authority: &str) -> Vec<u8> {
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
    block.extend(literal(4, "/grpc.health.v1.Health/Check")); // :path
    block.extend(literal(1, authority)); // :authority
    block.extend([0x0f, 0x10, 16]); // content-type (static index 31)
    block.extend(b"application/grpc");
    block.extend([0x00, 2]); // te: a literal name
    block.extend(b"te");
    block.extend([8]);
    block.extend(b"trailers");
    frame(HEADERS, END_HEADERS, stream, &block)
}

/// Reads frames until the server resets `stream` or closes the connection;
/// returns the reset's error code.
async fn reset_of(connection: &mut TcpStream, stream: u32) -> Option<u32> {
    let mut header = [0u8; 9];
    loop {
        connection.read_exact(&mut header).await.ok()?;
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let kind = header[3];
        let id = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; length];
        connection.read_exact(&mut payload).await.ok()?;
        match kind {
            RST_STREAM if id == stream => {
                return Some(u32::from_be_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ]));
            }
            GOAWAY => return None,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_past_the_limit_from_a_client_that_does_not_wait_is_refused() {
    let server =
        TestServer::start_with(|s| s.max_concurrent_calls_per_connection = LIMIT as usize).await;
    let authority = server.endpoint.trim_start_matches("http://").to_owned();
    let mut connection = TcpStream::connect(&authority).await.expect("connect");
    connection.set_nodelay(true).expect("TCP_NODELAY");
    let mut opening = PREFACE.to_vec();
    opening.extend(frame(SETTINGS, 0, 0, &[]));
    // Client streams are odd: 1, 3, …; the last is one past the limit.
    let streams: Vec<u32> = (0..=LIMIT).map(|n| 2 * n + 1).collect();
    for &stream in &streams {
        opening.extend(open_health_check(stream, &authority));
    }
    connection.write_all(&opening).await.expect("send");
    let past_limit = *streams.last().expect("streams");
    let reset = tokio::time::timeout(HANG_GUARD, reset_of(&mut connection, past_limit))
        .await
        .expect("the server answers");
    assert_eq!(
        reset,
        Some(REFUSED_STREAM),
        "stream {past_limit}, past the limit of {LIMIT}, must be refused"
    );
    // Closing the connection ends the held calls, so the drain has none.
    drop(connection);
    server.stop().await;
}
