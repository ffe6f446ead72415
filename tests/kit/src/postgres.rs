//! A private PostgreSQL cluster from Debian's binaries (`initdb`, `pg_ctl`),
//! in a temporary directory, on a free loopback port. As root, the server
//! runs as the `postgres` user, because PostgreSQL refuses to run as root.
//!
//! Tests that only need a database share one server per test binary
//! ([`PostgresServer::shared`]) and take a fresh database each
//! ([`PostgresServer::create_database`]).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::process::{free_port, running_as_root};

static SHARED: OnceLock<SharedServer> = OnceLock::new();

/// Database names are unique per test binary, so tests share a server.
fn next_database_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    format!("test_{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A database with an owner role and a runtime role of its own
/// ([`PostgresServer::create_database_with_roles`]), and their URLs.
#[derive(Debug, Clone)]
pub struct DatabaseRoles {
    /// The database's owner: migrates, owns the tables and their triggers.
    pub owner: String,
    pub owner_url: String,
    /// A plain login role, granted what it needs by the owner at start-up.
    pub runtime: String,
    pub runtime_url: String,
    /// The same database as the cluster's superuser.
    pub superuser_url: String,
}

struct SharedServer {
    server: PostgresServer,
    /// Holds the watchdog's input open. The process's exit closes it,
    /// however the process ends, and the watchdog then stops the server.
    _watchdog: Child,
}

pub struct PostgresServer {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
    /// Further `-c name=value` server options, e.g. for TLS.
    options: String,
}

impl PostgresServer {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A cluster that also accepts TLS (`ssl = on`), presenting this PEM
    /// certificate and key. Clients choose TLS with `sslmode` in the URL.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Self {
        Self::start_with(Some((cert_pem, key_pem)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut server = Self {
            port: free_port(),
            bin: find_bin(),
            as_postgres: running_as_root(),
            dir,
            options: String::new(),
        };
        if let Some((cert, key)) = tls {
            server.options = server.write_tls_files(cert, key);
        }
        if server.as_postgres {
            run(
                Command::new("chown")
                    .arg("-R")
                    .arg("postgres:postgres")
                    .arg(server.dir.path()),
                "chown",
            );
        }
        let data = server.data();
        let mut initdb = server.command("initdb");
        initdb
            .args([
                "-U",
                "equipoise",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data);
        run(&mut initdb, "initdb");
        server.pg_ctl_start();
        server
    }

    /// One server for the whole test binary, started by the first caller.
    /// Statics are never dropped, so a watchdog stops it when the binary
    /// exits and removes its directory.
    pub fn shared() -> &'static PostgresServer {
        &SHARED
            .get_or_init(|| {
                let server = Self::start();
                let watchdog = server.watchdog();
                SharedServer {
                    server,
                    _watchdog: watchdog,
                }
            })
            .server
    }

    pub fn url(&self) -> String {
        format!("postgres://equipoise@127.0.0.1:{}/postgres", self.port)
    }

    /// Creates an empty database of its own for a test; returns its URL.
    pub fn create_database(&self) -> String {
        let name = next_database_name();
        self.createdb(&name, None);
        self.database_url("equipoise", &name)
    }

    /// Creates an empty database owned by a new role `<database>_owner`,
    /// and a new role `<database>_runtime` with no privileges at all, as an
    /// operator would for production (README, "Database roles"). Neither
    /// is a superuser nor may create roles or databases; the server trusts
    /// loopback, so neither needs a password.
    pub fn create_database_with_roles(&self) -> DatabaseRoles {
        let name = next_database_name();
        let owner = format!("{name}_owner");
        let runtime = format!("{name}_runtime");
        for role in [&owner, &runtime] {
            let mut createuser = Command::new(self.bin.join("createuser"));
            createuser
                .args(self.client_args())
                .args(["--no-superuser", "--no-createrole", "--no-createdb"])
                .arg(role);
            run(&mut createuser, "createuser");
        }
        self.createdb(&name, Some(&owner));
        DatabaseRoles {
            owner_url: self.database_url(&owner, &name),
            runtime_url: self.database_url(&runtime, &name),
            superuser_url: self.database_url("equipoise", &name),
            owner,
            runtime,
        }
    }

    fn client_args(&self) -> [String; 6] {
        [
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            "equipoise".into(),
        ]
    }

    fn createdb(&self, name: &str, owner: Option<&str>) {
        let mut createdb = Command::new(self.bin.join("createdb"));
        createdb.args(self.client_args());
        if let Some(owner) = owner {
            createdb.args(["-O", owner]);
        }
        createdb.arg(name);
        run(&mut createdb, "createdb");
    }

    fn database_url(&self, role: &str, database: &str) -> String {
        format!("postgres://{role}@127.0.0.1:{}/{database}", self.port)
    }

    /// A shell that waits for the end of its input, then stops the server
    /// at once and removes its directory. It runs in a process group of its
    /// own and ignores the usual signals, so a Ctrl-C or a runner killing
    /// the test's group cannot kill it before the server it guards, which
    /// `pg_ctl` started in a session of its own.
    fn watchdog(&self) -> Child {
        let stop = self.stop_command("immediate");
        Command::new("sh")
            .arg("-c")
            .arg(r#"trap '' INT TERM HUP; read line; "$@" >/dev/null 2>&1; rm -rf "$EQUIPOISE_PG_DIR""#)
            .arg("postgres-watchdog")
            .arg(stop.get_program())
            .args(stop.get_args())
            .env("EQUIPOISE_PG_DIR", self.dir.path())
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("postgres watchdog could not start: {e}"))
    }

    /// Writes the certificate and key (0600, as PostgreSQL demands) and
    /// returns the options that serve them.
    fn write_tls_files(&self, cert: &str, key: &str) -> String {
        let cert_path = self.dir.path().join("server.crt");
        let key_path = self.dir.path().join("server.key");
        std::fs::write(&cert_path, cert).unwrap_or_else(|e| panic!("server.crt: {e}"));
        std::fs::write(&key_path, key).unwrap_or_else(|e| panic!("server.key: {e}"));
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("server.key: {e}"));
        format!(
            " -c ssl=on -c ssl_cert_file='{}' -c ssl_key_file='{}'",
            cert_path.display(),
            key_path.display()
        )
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{}' -c fsync=on -c synchronous_commit=on{}",
            self.port,
            self.dir.path().display(),
            self.options
        );
        let mut start = self.command("pg_ctl");
        start
            .args(["-w", "-t", "60", "-o", &options, "-l"])
            .arg(self.dir.path().join("server.log"))
            .arg("-D")
            .arg(self.data())
            .arg("start");
        run(&mut start, "pg_ctl start");
    }

    /// Stops at once, as a crash would (`-m immediate`), then starts again.
    pub fn restart(&self) {
        self.stop("immediate");
        self.pg_ctl_start();
    }

    pub fn stop(&self, mode: &str) {
        let mut stop = self.stop_command(mode);
        let _ = stop.stdout(Stdio::null()).stderr(Stdio::null()).status();
    }

    fn stop_command(&self, mode: &str) -> Command {
        let mut stop = self.command("pg_ctl");
        stop.args(["-w", "-m", mode, "-D"])
            .arg(self.data())
            .arg("stop");
        stop
    }

    pub fn start_again(&self) {
        self.pg_ctl_start();
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop("immediate");
    }
}

/// Debian installs versioned binaries under /usr/lib/postgresql/N/bin.
fn find_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("EQUIPOISE_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|bin| bin.join("initdb").exists());
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries under /usr/lib/postgresql (`make test` installs them)"
        )
    })
}

fn run(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what} could not run: {e}"));
    if !output.status.success() {
        panic!(
            "{what} failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
