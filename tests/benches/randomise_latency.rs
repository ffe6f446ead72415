//! Single-client `Randomise` latency on the embedded default (SQLite file,
//! in-process lock), over real loopback gRPC, beside its floors measured in
//! the same run: an empty gRPC call (health check) and a durable one-row
//! commit (an audit append, fsync'd). Also the process's CPU per
//! allocation (client and server share this process, so it is an upper
//! bound on the server's). Prints a table and one JSON line.

use std::time::{Duration, Instant};

use equipoise_common::audit::AuditEntry;
use equipoise_randomisation::store::Store;
use equipoise_randomisation::store::sqlite::SqliteStore;
use equipoise_tests::cpu::own_cpu;
use equipoise_tests::{RESPINE_YAML, TestServer, activate, respine_request};

const RANDOMISATIONS: usize = 1_000;
const FLOOR_SAMPLES: usize = 1_000;
const WARM_UP: usize = 50;

struct Summary {
    name: &'static str,
    p50: Duration,
    p99: Duration,
    samples: usize,
}

fn summarise(name: &'static str, mut samples: Vec<Duration>) -> Summary {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Summary {
        name,
        p50: at(0.50),
        p99: at(0.99),
        samples: samples.len(),
    }
}

/// RESPINE without caps, so a thousand subjects fit.
fn uncapped_respine() -> String {
    RESPINE_YAML
        .replace("caps: { total: 114 }", "")
        .replace(", cap: 40 }", " }")
        .replace(", cap: 30 }", " }")
        .replace(", cap: 25 }", " }")
}

/// Latencies after the warm-up, and the process CPU per measured allocation.
async fn randomise_latencies(server: &TestServer) -> (Vec<Duration>, Duration) {
    let token = server.token("bench", &["site_investigator"], &["FR-MTP"], &["RESPINE"]);
    let mut client = server.client(&token).await;
    let mut latencies = Vec::with_capacity(RANDOMISATIONS);
    let mut cpu_at_warm = Duration::ZERO;
    for n in 0..(WARM_UP + RANDOMISATIONS) {
        if n == WARM_UP {
            cpu_at_warm = own_cpu().unwrap_or_default();
        }
        let request = respine_request(
            "FR-MTP",
            &format!("B-{n:05}"),
            if n % 2 == 0 { 55.0 } else { 80.0 },
        );
        let started = Instant::now();
        client
            .randomise(request)
            .await
            .unwrap_or_else(|e| panic!("randomise failed: {e}"));
        if n >= WARM_UP {
            latencies.push(started.elapsed());
        }
    }
    let cpu = own_cpu().unwrap_or_default().saturating_sub(cpu_at_warm);
    let per_allocation = cpu / u32::try_from(RANDOMISATIONS).unwrap_or(u32::MAX);
    (latencies, per_allocation)
}

async fn empty_call_latencies(server: &TestServer) -> Vec<Duration> {
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let mut latencies = Vec::with_capacity(FLOOR_SAMPLES);
    for n in 0..(WARM_UP + FLOOR_SAMPLES) {
        let started = Instant::now();
        health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("health check failed: {e}"));
        if n >= WARM_UP {
            latencies.push(started.elapsed());
        }
    }
    latencies
}

/// A durable one-row commit on the same kind of SQLite file the service uses.
async fn durable_commit_latencies() -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let store = SqliteStore::open(&dir.path().join("floor.db"))
        .await
        .unwrap_or_else(|e| panic!("open: {e}"));
    let mut latencies = Vec::with_capacity(FLOOR_SAMPLES);
    for n in 0..(WARM_UP + FLOOR_SAMPLES) {
        let entry = AuditEntry {
            at: equipoise_common::time::now_rfc3339(),
            actor: "bench".into(),
            role: "bench".into(),
            action: "floor".into(),
            entity: format!("row/{n}"),
            details: serde_json::json!({}),
        };
        let started = Instant::now();
        store
            .append_audit(entry)
            .await
            .unwrap_or_else(|e| panic!("commit: {e}"));
        if n >= WARM_UP {
            latencies.push(started.elapsed());
        }
    }
    latencies
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() {
    let server = TestServer::start().await;
    activate(&server, &uncapped_respine()).await;
    let (latencies, cpu_per_allocation) = randomise_latencies(&server).await;
    let randomise = summarise("randomise (1 client)", latencies);
    let empty_call = summarise(
        "floor: empty gRPC call",
        empty_call_latencies(&server).await,
    );
    let commit = summarise("floor: durable commit", durable_commit_latencies().await);
    server.stop().await;

    let floor_p50 = empty_call.p50 + commit.p50;
    println!(
        "cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<26} {:>8} {:>10} {:>10} {:>16}",
        "measure", "samples", "p50 (us)", "p99 (us)", "p50 / floors"
    );
    for row in [&randomise, &empty_call, &commit] {
        println!(
            "{:<26} {:>8} {:>10.0} {:>10.0} {:>16.2}",
            row.name,
            row.samples,
            micros(row.p50),
            micros(row.p99),
            row.p50.as_secs_f64() / floor_p50.as_secs_f64()
        );
    }
    println!(
        "process CPU per allocation (client + server): {:.0} us",
        micros(cpu_per_allocation)
    );
    let json = serde_json::json!({
        "process_cpu_per_allocation_us": micros(cpu_per_allocation),
        "randomise_p50_us": micros(randomise.p50),
        "randomise_p99_us": micros(randomise.p99),
        "empty_call_p50_us": micros(empty_call.p50),
        "durable_commit_p50_us": micros(commit.p50),
        "randomise_p50_over_floors": randomise.p50.as_secs_f64() / floor_p50.as_secs_f64(),
    });
    println!("{json}");
}
