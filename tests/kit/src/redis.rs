//! A private redis-server: no persistence, loopback only.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::free_port;

pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// TLS only, on `port`, when set.
    tls: Option<RedisTls>,
}

/// PEM files for a Redis that speaks TLS only and requires client
/// certificates issued by `ca_file`.
#[derive(Debug, Clone)]
pub struct RedisTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
}

impl RedisServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut server = Self {
            port: free_port(),
            dir,
            child: None,
            tls: None,
        };
        server.spawn();
        server
    }

    /// A Redis that speaks TLS only (`--port 0 --tls-port`), and requires
    /// client certificates; reach it at [`RedisServer::tls_url`].
    pub fn start_tls(tls: RedisTls) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut server = Self {
            port: free_port(),
            dir,
            child: None,
            tls: Some(tls),
        };
        server.spawn();
        server
    }

    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        if let Some(tls) = self.tls.clone() {
            self.spawn_tls(&tls);
            return;
        }
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "redis-server could not start (is it installed? `make test` installs it): {e}"
                )
            });
        self.child = Some(child);
        for _ in 0..400 {
            if self
                .command(&["PING"])
                .is_some_and(|reply| reply.starts_with("+PONG"))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server on port {} never answered", self.port);
    }

    fn spawn_tls(&mut self, tls: &RedisTls) {
        let log = self.dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--tls-cert-file")
            .arg(&tls.cert_file)
            .arg("--tls-key-file")
            .arg(&tls.key_file)
            .arg("--tls-ca-cert-file")
            .arg(&tls.ca_file)
            .args(["--tls-auth-clients", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server could not start: {e}"));
        self.child = Some(child);
        // A plaintext PING cannot reach it; its log says when it is ready.
        for _ in 0..400 {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Ready to accept connections") {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("redis-server exited with {status} (built without TLS?):\n{text}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "redis-server with TLS on port {} never became ready",
            self.port
        );
    }

    /// `kill -9`: gone at once, nothing saved.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Sends one command and returns the raw RESP reply, if any.
    pub fn command(&self, parts: &[&str]) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut request = format!("*{}\r\n", parts.len());
        for part in parts {
            request.push_str(&format!("${}\r\n{part}\r\n", part.len()));
        }
        stream.write_all(request.as_bytes()).ok()?;
        let mut buffer = [0u8; 512];
        let read = stream.read(&mut buffer).ok()?;
        Some(String::from_utf8_lossy(&buffer[..read]).into_owned())
    }

    /// Number of keys matching `pattern` (small test databases only).
    pub fn key_count(&self, pattern: &str) -> usize {
        self.command(&["KEYS", pattern])
            .and_then(|reply| {
                reply
                    .lines()
                    .next()
                    .and_then(|first| first.strip_prefix('*'))
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
