//! Single-client `Randomise` latency with a trial already full of subjects
//! (issue 11, item 5): p50 on an empty trial, then the trial is seeded
//! through the real allocation path (16 clients, outside the timed part),
//! then p50 again. Both modes (embedded: SQLite file and in-process lock;
//! cluster: three replicas, Redis, PostgreSQL), permuted blocks and
//! minimisation. The aim is a ratio of at most 1.2.
//!
//! `BENCH_TRIAL_SIZE` sets the seeded size (default 100,000).
//! Prints a table and one JSON document.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use equipoise_proto::randomisation::v1 as pb;
use equipoise_testkit::Replica;
use equipoise_tests::cluster::{Cluster, load_request, load_trial_yaml};
use serde_json::json;

const SAMPLES: usize = 300;
const SEED_CLIENTS: usize = 16;
const AIM: f64 = 1.2;

fn trial_size() -> usize {
    std::env::var("BENCH_TRIAL_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// The load trial with a total cap above what the bench allocates: code
/// pools are generated for the cap, and without one they hold 10,000 codes
/// per ratio unit, which a 100,000-subject seeding would exhaust.
fn trial_yaml(trial: &str, method: &str) -> String {
    let cap = trial_size() + 2 * SAMPLES + 1;
    let yaml = load_trial_yaml(10)
        .replace("id: LOAD", &format!("id: {trial}"))
        .replacen(
            "sites:\n",
            &format!("caps: {{ total: {cap} }}\nsites:\n"),
            1,
        )
        // Enough random characters to stay unguessable at that cap.
        .replace("{6 random base32}", "{10 random base32}");
    match method {
        "minimisation" => yaml.replace(
            "  kind: permuted_blocks\n  block_sizes: [2, 4]            # drawn at random per block; concealed",
            "  kind: minimisation\n  factors: { site: 1, baseline_pain: 1 }\n  imbalance: range\n  p: 0.8",
        ),
        _ => yaml,
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The trial's first allocation, retried until its code is issued: the
/// blinding service generates the code pools (sized for the cap) on the
/// first code, which may take longer than one call's deadline. Not timed.
async fn generate_code_pools(cluster: &Cluster, replica: &Replica, token: &str, trial: &str) {
    let mut client = cluster.client_for(replica, token).await;
    let mut request = load_request("S01", "WARM-UP", true);
    request.trial_id = trial.to_owned();
    for _ in 0..300 {
        match client.randomise(request.clone()).await {
            Ok(_) => return,
            Err(status) if status.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(status) => panic!("warm-up failed: {status}"),
        }
    }
    panic!("the code pools of {trial} were not generated in 300 attempts");
}

/// p50 of SAMPLES single-client allocations with ids `prefix-n`.
async fn single_client_p50(
    cluster: &Cluster,
    replica: &Replica,
    token: &str,
    trial: &str,
    prefix: &str,
) -> Duration {
    let mut client = cluster.client_for(replica, token).await;
    let mut samples = Vec::with_capacity(SAMPLES);
    for n in 0..SAMPLES {
        let mut request = load_request(
            &format!("S{:02}", n % 10 + 1),
            &format!("{prefix}-{n}"),
            n % 2 == 0,
        );
        request.trial_id = trial.to_owned();
        let started = Instant::now();
        client
            .randomise(request)
            .await
            .unwrap_or_else(|e| panic!("randomise failed: {e}"));
        samples.push(started.elapsed());
    }
    median(samples)
}

/// Allocates `size` subjects through `replicas`, from SEED_CLIENTS clients.
async fn seed(cluster: &Cluster, replicas: &[&Replica], token: &str, trial: &str, size: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..SEED_CLIENTS {
        let mut client = cluster
            .client_for(replicas[worker % replicas.len()], token)
            .await;
        let (next, trial) = (next.clone(), trial.to_owned());
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= size {
                    break;
                }
                let mut request = load_request(
                    &format!("S{:02}", n % 10 + 1),
                    &format!("SEED-{n}"),
                    n % 3 == 0,
                );
                request.trial_id = trial.clone();
                randomise_retrying(&mut client, request).await;
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Seeding is not timed: a lock wait that ran out, or a fenced commit, is
/// sent again (a repeat is idempotent per subject).
async fn randomise_retrying(client: &mut equipoise_tests::Client, request: pb::RandomiseRequest) {
    loop {
        match client.randomise(request.clone()).await {
            Ok(_) => return,
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Aborted
                ) =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(status) => panic!("seeding failed: {status}"),
        }
    }
}

struct Row {
    mode: &'static str,
    method: &'static str,
    empty: Duration,
    full: Duration,
    seeding: Duration,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let size = trial_size();
    let cluster = Cluster::start(3, &[]);
    let (embedded, _embedded_blinding) = cluster.spawn_embedded_replica();
    let cluster_replicas: Vec<&Replica> = cluster.replicas.iter().collect();
    let mut rows = Vec::new();
    for (mode, replicas) in [
        ("embedded", vec![&embedded]),
        ("cluster", cluster_replicas.clone()),
    ] {
        for method in ["permuted_blocks", "minimisation"] {
            let trial = format!("SIZE-{mode}-{method}")
                .to_uppercase()
                .replace('_', "-");
            cluster
                .activate_on(replicas[0], &trial_yaml(&trial, method))
                .await;
            let sites: Vec<String> = (1..=10).map(|n| format!("S{n:02}")).collect();
            let site_refs: Vec<&str> = sites.iter().map(String::as_str).collect();
            let token = cluster.token(
                "bench",
                &["site_coordinator"],
                &site_refs,
                &[trial.as_str()],
            );
            generate_code_pools(&cluster, replicas[0], &token, &trial).await;
            let empty = single_client_p50(&cluster, replicas[0], &token, &trial, "EMPTY").await;
            let seeding = Instant::now();
            seed(&cluster, &replicas, &token, &trial, size).await;
            let seeding = seeding.elapsed();
            let full = single_client_p50(&cluster, replicas[0], &token, &trial, "FULL").await;
            rows.push(Row {
                mode,
                method,
                empty,
                full,
                seeding,
            });
        }
    }
    report(size, &rows);
}

fn report(size: usize, rows: &[Row]) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("trial size: {size} subjects seeded through Randomise");
    println!(
        "{:<9} {:<16} {:>12} {:>12} {:>8} {:>10} {:>12}",
        "mode", "method", "p50 empty", "p50 full", "ratio", "aim", "seeding s"
    );
    for row in rows {
        let ratio = row.full.as_secs_f64() / row.empty.as_secs_f64();
        let verdict = if ratio <= AIM {
            "PASS".to_owned()
        } else {
            format!("{ratio:.2}x")
        };
        println!(
            "{:<9} {:<16} {:>9.2} ms {:>9.2} ms {:>8.2} {:>10} {:>12.0}",
            row.mode,
            row.method,
            ms(row.empty),
            ms(row.full),
            ratio,
            verdict,
            row.seeding.as_secs_f64()
        );
    }
    let document = json!({
        "trial_size": size,
        "rows": rows.iter().map(|r| json!({
            "mode": r.mode,
            "method": r.method,
            "p50_empty_ms": ms(r.empty),
            "p50_full_ms": ms(r.full),
            "ratio": r.full.as_secs_f64() / r.empty.as_secs_f64(),
            "seeding_s": r.seeding.as_secs_f64(),
        })).collect::<Vec<_>>(),
    });
    println!("{document}");
}
