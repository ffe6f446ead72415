//! `Randomise` under load, from a tonic client, in both deployment modes:
//! - embedded: one process, SQLite file, in-process lock;
//! - cluster: three replicas, Redis locks, PostgreSQL.
//!
//! Concurrency 1, 8 and 64, on one stratum and spread over 20 strata. The
//! same run measures the floors (an empty gRPC call, a Redis lock acquire
//! and release, a durable one-row commit in each store) and reports each
//! result's p50 as a ratio to the sum of its mode's floors, and the CPU
//! the randomisation replicas and the blinding replica used per allocation
//! (from /proc/<pid>/stat). Prints a table and one JSON document.
//!
//! With `BENCH_PROFILE_OUTPUT=<file>`, the embedded single-client run is
//! also sampled by `perf record` (cpu-clock, call graphs) into that file.

use std::sync::Arc;
use std::time::{Duration, Instant};

use equipoise_common::audit::AuditEntry;
use equipoise_randomisation::lock::AllocationLocks;
use equipoise_randomisation::lock::{RedisLockTimings, RedisLocks};
use equipoise_randomisation::store::Store;
use equipoise_randomisation::store::postgres::PostgresStore;
use equipoise_randomisation::store::sqlite::SqliteStore;
use equipoise_testkit::Replica;
use equipoise_tests::cluster::{Cluster, load_request, load_trial_yaml};
use equipoise_tests::cpu::CpuMeter;
use serde_json::json;
use tokio::sync::Mutex;

const OPERATIONS: usize = 640;
const FLOOR_SAMPLES: usize = 500;
const CONCURRENCIES: [usize; 3] = [1, 8, 64];
const STRATA: [usize; 2] = [1, 20];

#[derive(Clone, Copy)]
struct Percentiles {
    p50: Duration,
    p99: Duration,
}

fn percentiles(mut samples: Vec<Duration>) -> Percentiles {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Scenario {
    mode: &'static str,
    concurrency: usize,
    strata: usize,
    throughput: f64,
    latency: Percentiles,
    floors: Duration,
    cpu: ServerCpu,
}

/// CPU per allocation: the randomisation replicas, and the blinding replica
/// that issues each allocation's treatment code.
#[derive(Clone, Copy)]
struct ServerCpu {
    randomisation: Duration,
    blinding: Duration,
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Runs OPERATIONS randomisations from `concurrency` workers against
/// `replicas`, into `strata` strata of a fresh trial.
async fn run_scenario(
    cluster: &Cluster,
    replicas: &[&Replica],
    blinding: &Replica,
    concurrency: usize,
    strata: usize,
    trial: &str,
) -> (f64, Percentiles, ServerCpu) {
    let yaml = load_trial_yaml(10).replace("id: LOAD", &format!("id: {trial}"));
    cluster.activate_on(replicas[0], &yaml).await;
    let sites: Vec<String> = (1..=10).map(|n| format!("S{n:02}")).collect();
    let site_refs: Vec<&str> = sites.iter().map(String::as_str).collect();
    let token = cluster.token("bench", &["site_coordinator"], &site_refs, &[trial]);
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(OPERATIONS)));
    let replica_pids: Vec<u32> = replicas.iter().map(|r| r.pid()).collect();
    let randomisation_cpu = CpuMeter::start(&replica_pids);
    let blinding_cpu = CpuMeter::start(&[blinding.pid()]);
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let mut client = cluster
            .client_for(replicas[worker % replicas.len()], &token)
            .await;
        let latencies = latencies.clone();
        let trial = trial.to_owned();
        workers.push(tokio::spawn(async move {
            let mut own = Vec::new();
            for n in (worker..OPERATIONS).step_by(concurrency) {
                let stratum = n % strata;
                let site = format!("S{:02}", stratum % 10 + 1);
                let mut request = load_request(
                    &site,
                    &format!("W{worker}-{n}"),
                    stratum >= 10 || strata == 1,
                );
                request.trial_id = trial.clone();
                let sent = Instant::now();
                client
                    .randomise(request)
                    .await
                    .unwrap_or_else(|e| panic!("randomise failed: {e}"));
                own.push(sent.elapsed());
            }
            latencies.lock().await.extend(own);
        }));
    }
    for worker in workers {
        worker.await.unwrap_or_else(|e| panic!("{e}"));
    }
    let elapsed = started.elapsed();
    let latencies = latencies.lock().await.clone();
    let cpu = ServerCpu {
        randomisation: randomisation_cpu.per_operation(latencies.len()),
        blinding: blinding_cpu.per_operation(latencies.len()),
    };
    (
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentiles(latencies),
        cpu,
    )
}

async fn empty_call_floor(replica: &Replica) -> Percentiles {
    let channel = tonic::transport::Channel::from_shared(replica.endpoint())
        .unwrap_or_else(|e| panic!("{e}"))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut samples = Vec::new();
    for _ in 0..FLOOR_SAMPLES {
        let started = Instant::now();
        health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        samples.push(started.elapsed());
    }
    percentiles(samples)
}

async fn redis_lock_floor(url: &str) -> Percentiles {
    let timings = RedisLockTimings {
        lease: Duration::from_secs(10),
        wait: Duration::from_secs(5),
        command_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_secs(1),
    };
    let locks = RedisLocks::connect(url, timings)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut samples = Vec::new();
    for _ in 0..FLOOR_SAMPLES {
        let started = Instant::now();
        let lease = locks
            .acquire("floor")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        locks.release(lease).await.unwrap_or_else(|e| panic!("{e}"));
        samples.push(started.elapsed());
    }
    percentiles(samples)
}

async fn commit_floor(store: &dyn Store) -> Percentiles {
    let mut samples = Vec::new();
    for n in 0..FLOOR_SAMPLES {
        let entry = AuditEntry {
            at: equipoise_common::time::now_rfc3339(),
            actor: "bench".into(),
            role: "bench".into(),
            action: "floor".into(),
            entity: format!("row/{n}"),
            details: json!({}),
        };
        let started = Instant::now();
        store
            .append_audit(entry)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        samples.push(started.elapsed());
    }
    percentiles(samples)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let cluster = Cluster::start(3, &[]);
    let (embedded, embedded_blinding) = cluster.spawn_embedded_replica();

    let empty_call = empty_call_floor(&cluster.replicas[0]).await;
    let redis_lock = redis_lock_floor(&cluster.redis.url()).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let sqlite = SqliteStore::open(&dir.path().join("floor.db"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let sqlite_commit = commit_floor(&sqlite).await;
    let postgres = PostgresStore::connect(&cluster.postgres.url(), 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let postgres_commit = commit_floor(&postgres).await;

    let embedded_floors = empty_call.p50 + sqlite_commit.p50;
    let cluster_floors = empty_call.p50 + redis_lock.p50 + postgres_commit.p50;
    let cluster_replicas: Vec<&Replica> = cluster.replicas.iter().collect();
    let mut scenarios = Vec::new();
    for (mode, replicas, blinding, floors) in [
        (
            "embedded",
            vec![&embedded],
            &embedded_blinding,
            embedded_floors,
        ),
        (
            "cluster",
            cluster_replicas.clone(),
            &cluster.blinding,
            cluster_floors,
        ),
    ] {
        for strata in STRATA {
            for concurrency in CONCURRENCIES {
                let trial = format!("B-{mode}-{strata}-{concurrency}").to_uppercase();
                let profile = (mode == "embedded" && strata == 1 && concurrency == 1)
                    .then(|| start_profile(replicas[0].pid()))
                    .flatten();
                let (throughput, latency, cpu) =
                    run_scenario(&cluster, &replicas, blinding, concurrency, strata, &trial).await;
                stop_profile(profile);
                scenarios.push(Scenario {
                    mode,
                    concurrency,
                    strata,
                    throughput,
                    latency,
                    floors,
                    cpu,
                });
            }
        }
    }
    report(
        &scenarios,
        [
            ("empty gRPC call", empty_call),
            ("Redis lock acquire + release", redis_lock),
            ("durable commit, SQLite", sqlite_commit),
            ("durable commit, PostgreSQL", postgres_commit),
        ],
    );
}

/// `perf record` on `pid` when BENCH_PROFILE_OUTPUT names an output file.
fn start_profile(pid: u32) -> Option<std::process::Child> {
    let output = std::env::var("BENCH_PROFILE_OUTPUT").ok()?;
    let child = std::process::Command::new("perf")
        .args([
            "record",
            "-e",
            "cpu-clock",
            "-F",
            "2000",
            "-g",
            "-o",
            &output,
        ])
        .args(["-p", &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match child {
        Ok(child) => {
            // perf needs a moment to attach before the run starts.
            std::thread::sleep(Duration::from_millis(500));
            Some(child)
        }
        Err(error) => {
            eprintln!("perf record could not start: {error}");
            None
        }
    }
}

/// Stops `perf record` with SIGINT, which makes it write its file.
fn stop_profile(profile: Option<std::process::Child>) {
    let Some(mut child) = profile else { return };
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn report(scenarios: &[Scenario], floors: [(&str, Percentiles); 4]) {
    println!(
        "cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("{:<30} {:>9} {:>9}", "floor", "p50 ms", "p99 ms");
    for (name, floor) in &floors {
        println!("{name:<30} {:>9.3} {:>9.3}", ms(floor.p50), ms(floor.p99));
    }
    println!();
    println!(
        "{:<9} {:>7} {:>11} {:>10} {:>9} {:>9} {:>14} {:>14} {:>14}",
        "mode",
        "strata",
        "concurrency",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "p50 / floors",
        "rand CPU us/op",
        "blind CPU us/op"
    );
    for s in scenarios {
        println!(
            "{:<9} {:>7} {:>11} {:>10.0} {:>9.2} {:>9.2} {:>14.2} {:>14.0} {:>14.0}",
            s.mode,
            s.strata,
            s.concurrency,
            s.throughput,
            ms(s.latency.p50),
            ms(s.latency.p99),
            s.latency.p50.as_secs_f64() / s.floors.as_secs_f64(),
            us(s.cpu.randomisation),
            us(s.cpu.blinding)
        );
    }
    let document = json!({
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "floors": floors.iter().map(|(name, f)| json!({ "name": name, "p50_ms": ms(f.p50), "p99_ms": ms(f.p99) })).collect::<Vec<_>>(),
        "scenarios": scenarios.iter().map(|s| json!({
            "mode": s.mode,
            "strata": s.strata,
            "concurrency": s.concurrency,
            "ops_per_second": s.throughput,
            "p50_ms": ms(s.latency.p50),
            "p99_ms": ms(s.latency.p99),
            "p50_over_floors": s.latency.p50.as_secs_f64() / s.floors.as_secs_f64(),
            "randomisation_cpu_us_per_allocation": us(s.cpu.randomisation),
            "blinding_cpu_us_per_allocation": us(s.cpu.blinding),
        })).collect::<Vec<_>>(),
    });
    println!("{document}");
    print_aims(scenarios);
}

fn scenario<'a>(
    scenarios: &'a [Scenario],
    mode: &str,
    strata: usize,
    concurrency: usize,
) -> Option<&'a Scenario> {
    scenarios
        .iter()
        .find(|s| s.mode == mode && s.strata == strata && s.concurrency == concurrency)
}

/// The aims of issue 11, item 5, per mode: PASS, or the measured ratio.
fn print_aims(scenarios: &[Scenario]) {
    println!();
    println!(
        "{:<9} {:<52} {:>10} {:>10}",
        "mode", "aim", "measured", "verdict"
    );
    for mode in ["embedded", "cluster"] {
        let single = scenario(scenarios, mode, 1, 1);
        let spread_single = scenario(scenarios, mode, 20, 1);
        let spread_busy = scenario(scenarios, mode, 20, 64);
        let one_busy = scenario(scenarios, mode, 1, 64);
        let mut aims: Vec<(&str, Option<f64>, f64, bool)> = vec![
            (
                "single-client p50 / floors <= 1.5",
                single.map(|s| s.latency.p50.as_secs_f64() / s.floors.as_secs_f64()),
                1.5,
                true,
            ),
            (
                "ops/s at 64 clients, 20 strata / single client >= 5",
                spread_busy
                    .zip(spread_single)
                    .map(|(busy, one)| busy.throughput / one.throughput),
                5.0,
                false,
            ),
            (
                "p99 / p50 at 64 clients, 1 stratum <= 3",
                one_busy.map(|s| s.latency.p99.as_secs_f64() / s.latency.p50.as_secs_f64()),
                3.0,
                true,
            ),
        ];
        if mode == "embedded" {
            aims.push((
                "server CPU per allocation (us, 20 strata, 64) <= 150",
                spread_busy.map(|s| us(s.cpu.randomisation)),
                150.0,
                true,
            ));
        }
        for (aim, measured, bound, at_most) in aims {
            let Some(measured) = measured else { continue };
            let met = if at_most {
                measured <= bound
            } else {
                measured >= bound
            };
            let verdict = if met { "PASS" } else { "missed" };
            println!("{mode:<9} {aim:<52} {measured:>10.2} {verdict:>10}");
        }
    }
}
