//! An Equipoise server process, configured through `EQUIPOISE_*` variables,
//! so tests can kill, pause and restart it like a pod.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::{free_port, signal};

/// The `equipoise` binary beside the test executable (`target/<profile>/`),
/// or `EQUIPOISE_BIN`. `make test` builds it with fault injection first.
pub fn equipoise_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("EQUIPOISE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap_or_else(|| panic!("unexpected test executable path {}", exe.display()));
    let binary = profile_dir.join("equipoise");
    if !binary.exists() {
        panic!(
            "{} is missing: build it with `cargo build -p equipoise --features fault-injection` (make test does)",
            binary.display()
        );
    }
    binary
}

/// The variable that tells a randomisation replica where blinding is.
pub const BLINDING_URL_VARIABLE: &str = "EQUIPOISE_RANDOMISATION__BLINDING_URL";
/// The variable that tells a blinding replica where randomisation is.
pub const RANDOMISATION_URL_VARIABLE: &str = "EQUIPOISE_BLINDING__RANDOMISATION_URL";

pub struct Replica {
    pub port: u16,
    /// The `--target` it serves.
    target: &'static str,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Replica {
    /// Starts `equipoise serve --target randomisation` and waits until it
    /// serves. It needs a blinding service: pass [`BLINDING_URL_VARIABLE`]
    /// (see [`Replica::blinding_url`]).
    pub fn start(env: &[(&str, String)]) -> Self {
        Self::start_target("randomisation", env)
    }

    /// Starts `equipoise serve --target blinding` in its own data directory
    /// on a free port. It needs randomisation: pass
    /// [`RANDOMISATION_URL_VARIABLE`], e.g. a randomisation replica's
    /// [`endpoint`](Replica::endpoint). The connection is lazy, so either
    /// may start first.
    pub fn start_blinding(env: &[(&str, String)]) -> Self {
        Self::start_target("blinding", env)
    }

    /// `(BLINDING_URL_VARIABLE, this replica's endpoint)`: the setting a
    /// randomisation replica needs to reach this blinding replica.
    pub fn blinding_url(&self) -> (&'static str, String) {
        (BLINDING_URL_VARIABLE, self.endpoint())
    }

    /// Starts `equipoise serve --target <target>` and waits until it serves.
    pub fn start_target(target: &'static str, env: &[(&str, String)]) -> Self {
        Self::start_target_at(target, free_port(), env)
    }

    /// As [`Replica::start_target`], on a port chosen beforehand (with
    /// [`free_port`]): two services that call each other each need the
    /// other's address when they start.
    pub fn start_target_at(target: &'static str, port: u16, env: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut replica = Self {
            target,
            port,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            dir,
            child: None,
        };
        replica.spawn();
        replica
    }

    /// Runs a replica that must fail to start; returns what it printed.
    /// It is given explicit keys outside its data directory, as a server on
    /// a shared database must be, so it fails for what `env` gets wrong.
    pub fn start_expecting_failure(env: &[(&str, String)]) -> String {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let keys = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let log = dir.path().join("refusal.log");
        let mut command = Command::new(equipoise_binary());
        command
            .args(["serve", "--target", "randomisation"])
            .env("EQUIPOISE_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("EQUIPOISE_DATA_DIR", dir.path())
            .envs(explicit_keys(keys.path()))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        expect_refusal(command, &log)
    }

    /// Runs `equipoise serve --target randomisation` with exactly `env`
    /// (no keys added) and expects it to refuse to start.
    pub fn start_bare_expecting_failure(env: &[(&str, String)]) -> String {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let log = dir.path().join("refusal.log");
        let mut command = Command::new(equipoise_binary());
        command
            .args(["serve", "--target", "randomisation"])
            .env("EQUIPOISE_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("EQUIPOISE_DATA_DIR", dir.path())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        expect_refusal(command, &log)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The endpoint of a replica serving TLS (`EQUIPOISE_TLS__*`).
    pub fn https_endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("replica.log")
    }

    fn spawn(&mut self) {
        let log =
            std::fs::File::create(self.log_path()).unwrap_or_else(|e| panic!("log file: {e}"));
        let child = Command::new(equipoise_binary())
            .args(["serve", "--target", self.target])
            .env("EQUIPOISE_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("EQUIPOISE_DATA_DIR", self.dir.path())
            .env("EQUIPOISE_LOG_FORMAT", "text")
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("equipoise could not start: {e}"));
        self.child = Some(child);
        self.wait_until_serving();
    }

    fn wait_until_serving(&mut self) {
        for _ in 0..1_000 {
            if self.log().contains(" serving") {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "replica exited with {status} while starting:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("replica never started serving:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `kill -9`: no shutdown, no cleanup.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pause(&self) {
        signal(self.pid(), "STOP");
    }

    pub fn resume(&self) {
        signal(self.pid(), "CONT");
    }

    /// SIGTERM, then waits for the graceful exit.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        signal(child.id(), "TERM");
        child.wait().ok()
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A paused process cannot die until resumed.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(self.pid().to_string())
                .status();
        }
        self.kill();
    }
}

/// Runs `command`, which must refuse to start; returns its stderr. One
/// that starts serving instead is stopped and fails the test, rather than
/// leaving the test waiting for an exit that never comes.
fn expect_refusal(mut command: Command, log: &std::path::Path) -> String {
    let stderr = std::fs::File::create(log).unwrap_or_else(|e| panic!("log file: {e}"));
    let mut child = command
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("equipoise could not start: {e}"));
    let read = || std::fs::read_to_string(log).unwrap_or_default();
    // Generous: only a replica that starts serving ever reaches the end.
    for _ in 0..6_000 {
        if let Some(status) = child.try_wait().ok().flatten() {
            assert!(
                !status.success(),
                "the replica started despite bad settings"
            );
            return read();
        }
        // The start-up line, in text or JSON.
        let log = read();
        if log.contains(" serving") || log.contains("\"serving\"") {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the replica started despite bad settings:\n{}", read());
}

/// A token secret and a seal key in `dir`, as variables: fixed test
/// values, never used outside tests.
pub fn explicit_keys(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    let hmac = dir.join("hmac.secret");
    let seal = dir.join("seal.key");
    let test_key = "5e".repeat(32);
    for path in [&hmac, &seal] {
        std::fs::write(path, &test_key).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    vec![
        (
            "EQUIPOISE_AUTH__HMAC_SECRET_FILE",
            hmac.display().to_string(),
        ),
        (
            "EQUIPOISE_RANDOMISATION__SEAL_KEY_FILE",
            seal.display().to_string(),
        ),
    ]
}
