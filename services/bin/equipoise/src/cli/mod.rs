//! The `equipoise` command line.

pub mod client;
pub mod desk;
pub mod offline;
pub mod plot;
pub mod safety;
pub mod simulate;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::serve::Target;

#[derive(Debug, Parser)]
#[command(
    name = "equipoise",
    version,
    about = "Central randomisation, blinding and safety reporting for double-blind trials"
)]
pub struct Cli {
    /// TOML settings file; `EQUIPOISE_*` variables override it.
    #[arg(long, global = true, env = "EQUIPOISE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve gRPC until SIGTERM.
    Serve {
        #[arg(long, value_enum, default_value = "all")]
        target: Target,
    },
    /// Development tokens, signed with the configured HMAC secret.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The hash-chained audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Pre-generated stratum lists, regenerated offline from the seed.
    List {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// Sealed master seeds (statistician, offline, audited).
    Seed {
        #[command(subcommand)]
        command: SeedCommand,
    },
    /// Simulate a design's operating characteristics offline.
    Simulate(simulate::SimulateArgs),
    /// Call a running server.
    Client(client::ClientArgs),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a signed JWT for local use.
    Mint(offline::MintArgs),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the chain and report the first broken record; with
    /// --head, also check that the chain still extends a head exported
    /// earlier by `audit head`.
    Verify {
        #[arg(long, value_enum, default_value = "randomisation")]
        service: AuditedService,
        /// A file written by `audit head` (or - for standard input).
        #[arg(long)]
        head: Option<std::path::PathBuf>,
    },
    /// Print the chain as JSON lines for blinded readers (a QA auditor, a
    /// trial administrator): records written before arms left the chain
    /// have their arm, position and decision masked. Verify it first.
    Export {
        #[arg(long, value_enum, default_value = "randomisation")]
        service: AuditedService,
    },
    /// Print the chain's end (seq, hash, time), signed with this
    /// deployment's service key, as one JSON line to keep outside the
    /// database: `audit verify --head` later proves nothing was removed or
    /// rewritten up to it.
    Head {
        #[arg(long, value_enum, default_value = "randomisation")]
        service: AuditedService,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditedService {
    Randomisation,
    Blinding,
    Safety,
}

impl AuditedService {
    /// The name a signed head carries, so one service's head is never
    /// checked against another's chain.
    pub fn name(self) -> &'static str {
        match self {
            AuditedService::Randomisation => "randomisation",
            AuditedService::Blinding => "blinding",
            AuditedService::Safety => "safety",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ListCommand {
    /// Print a stratum's list as CSV (position,stratum,arm).
    Regenerate(offline::RegenerateArgs),
}

#[derive(Debug, Subcommand)]
pub enum SeedCommand {
    /// Print a trial's master seed (hex), reading the local database and
    /// seal key. Needs a statistician's token, verified as a server would;
    /// the audit record names that verified identity.
    Unseal {
        #[arg(long)]
        trial: String,
        /// The statistician's token: `-` reads it from standard input,
        /// `@FILE` from a file (keeps it out of argv); or set
        /// EQUIPOISE_TOKEN.
        #[arg(long, env = "EQUIPOISE_TOKEN", hide_env_values = true)]
        token: String,
        /// Required while enrolment is open (break-glass): why the seed is
        /// needed before the trial closes. Recorded in the audit trail.
        #[arg(long)]
        reason: Option<String>,
    },
}
