//! Multi-replica allocation against real Redis and PostgreSQL processes:
//! concurrency, and every fault of the issue. Each test ends with the same
//! checks (`Cluster::verify`): nobody twice, nothing acknowledged lost,
//! every stratum equal to its seeded stream, and a verifying audit chain.
//! Sleeps here only orchestrate faults; nothing asserts on time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use equipoise_randomisation::store::Store;
use equipoise_tests::cluster::{
    Cluster, acknowledged_number, load_request, load_trial_yaml, randomise_with_retries,
};
use tokio::sync::Mutex;
use tonic::Code;

const LOCK_KEYS: &str = "equipoise:lock:*";

fn site_token(cluster: &Cluster, sites: usize) -> String {
    let sites: Vec<String> = (1..=sites).map(|n| format!("S{n:02}")).collect();
    let sites: Vec<&str> = sites.iter().map(String::as_str).collect();
    cluster.token("edc", &["site_coordinator"], &sites, &["LOAD"])
}

type Acknowledged = Arc<Mutex<BTreeMap<String, String>>>;

/// 64 clients, spread over the replicas, each randomising `per_client`
/// subjects into the strata `stratum_of` picks.
async fn sixty_four_clients(
    cluster: &Cluster,
    per_client: usize,
    stratum_of: fn(usize) -> (String, bool),
) -> BTreeMap<String, String> {
    let (acknowledged, tasks) = start_sixty_four_clients(cluster, per_client, stratum_of).await;
    join_clients(acknowledged, tasks, 64 * per_client).await
}

/// Starts the 64 clients; each records what was acknowledged to it.
async fn start_sixty_four_clients(
    cluster: &Cluster,
    per_client: usize,
    stratum_of: fn(usize) -> (String, bool),
) -> (Acknowledged, Vec<tokio::task::JoinHandle<()>>) {
    let token = site_token(cluster, 10);
    let acknowledged: Acknowledged = Arc::new(Mutex::new(BTreeMap::new()));
    let mut tasks = Vec::new();
    for client_index in 0..64 {
        let mut clients = cluster.clients(&token).await;
        let acknowledged = acknowledged.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..per_client {
                let subject = format!("C{client_index:02}-{n}");
                let (site, severe) = stratum_of(client_index * per_client + n);
                let request = load_request(&site, &subject, severe);
                let (response, refusals) =
                    randomise_with_retries(&mut clients, client_index, &request, 10).await;
                let response =
                    response.unwrap_or_else(|| panic!("{subject} never allocated: {refusals:?}"));
                let number = acknowledged_number(&response);
                acknowledged.lock().await.insert(subject, number);
            }
        }));
    }
    (acknowledged, tasks)
}

async fn join_clients(
    acknowledged: Acknowledged,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    expected: usize,
) -> BTreeMap<String, String> {
    for task in tasks {
        task.await.unwrap_or_else(|e| panic!("client task: {e}"));
    }
    let acknowledged = acknowledged.lock().await.clone();
    assert_eq!(acknowledged.len(), expected);
    acknowledged
}

/// Issue 11, item 6: a replica killed mid-batch while 64 clients allocate
/// over 20 strata. The third replica holds each group-committed batch open
/// (written, not committed) for 300 ms, and is killed while one is held.
/// Its clients retry on the others; every acknowledged allocation is stored
/// once with its number, each stratum equals its seeded stream and the
/// chain verifies (`Cluster::verify`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_batch_while_sixty_four_clients_allocate() {
    const HOLDING: &str = "holding a batch before its commit";
    let mut cluster = Cluster::start(2, &[("EQUIPOISE_RANDOMISATION__LOCK_LEASE_MS", "500")]);
    let holding =
        cluster.spawn_replica(&[("EQUIPOISE_RANDOMISATION__FAULTS__HOLD_IN_BATCH_MS", "300")]);
    cluster.replicas.push(holding);
    let yaml = load_trial_yaml(10);
    cluster.activate(&yaml).await;
    let (acknowledged, tasks) = start_sixty_four_clients(&cluster, 3, |n| {
        (format!("S{:02}", n % 10 + 1), (n / 10) % 2 == 0)
    })
    .await;
    // Mid-run, and the third replica inside a held batch.
    loop {
        let held = cluster.replicas[2].log().matches(HOLDING).count();
        if held >= 2 && acknowledged.lock().await.len() >= 32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster.replicas[2].kill();
    let acknowledged = join_clients(acknowledged, tasks, 64 * 3).await;
    cluster.verify(&yaml, &acknowledged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_clients_on_one_stratum_across_three_replicas() {
    let cluster = Cluster::start(3, &[]);
    let yaml = load_trial_yaml(10);
    cluster.activate(&yaml).await;
    let acknowledged = sixty_four_clients(&cluster, 3, |_| ("S01".into(), true)).await;
    cluster.verify(&yaml, &acknowledged).await;
    let positions = cluster
        .store()
        .await
        .stream_version("LOAD", "site=S01,baseline_pain=severe")
        .await;
    assert_eq!(positions, Ok(192));

    // The operator's offline check reads the same PostgreSQL, with the
    // seal key, so the seed commitment and the arms' digests are checked.
    let output = std::process::Command::new(equipoise_testkit::equipoise_binary())
        .args(["audit", "verify"])
        .envs(cluster.offline_env())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Registration, activation, 192 allocations, their 192 codes, and the
    // blinding service's one look-up of the trial to generate its pools.
    assert_eq!(printed.trim(), "audit chain verified: 387 records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_clients_over_twenty_strata() {
    let cluster = Cluster::start(3, &[]);
    let yaml = load_trial_yaml(10);
    cluster.activate(&yaml).await;
    let acknowledged = sixty_four_clients(&cluster, 3, |n| {
        (format!("S{:02}", n % 10 + 1), (n / 10) % 2 == 0)
    })
    .await;
    cluster.verify(&yaml, &acknowledged).await;
    let counts = cluster
        .store()
        .await
        .counts("LOAD")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(counts.by_stratum.len(), 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_redis_fails_closed_and_allocation_resumes_after_restart() {
    let mut cluster = Cluster::start(
        2,
        &[("EQUIPOISE_RANDOMISATION__REDIS_COMMAND_TIMEOUT_MS", "300")],
    );
    let yaml = load_trial_yaml(2);
    cluster.activate(&yaml).await;
    let token = site_token(&cluster, 2);
    let mut clients = cluster.clients(&token).await;
    let mut acknowledged = BTreeMap::new();
    for n in 0..5 {
        let subject = format!("BEFORE-{n}");
        let (response, _) =
            randomise_with_retries(&mut clients, n, &load_request("S01", &subject, false), 3).await;
        acknowledged.insert(
            subject,
            response
                .as_ref()
                .map(acknowledged_number)
                .unwrap_or_default(),
        );
    }

    cluster.redis.kill();
    for n in 0..4 {
        let status = clients[n % 2]
            .randomise(load_request("S01", &format!("DOWN-{n}"), false))
            .await
            .expect_err("no allocation without the lock");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("no allocation made"),
            "{}",
            status.message()
        );
    }
    let store = cluster.store().await;
    for n in 0..4 {
        assert_eq!(
            store.allocation("LOAD", &format!("DOWN-{n}")).await,
            Ok(None),
            "allocated without Redis"
        );
    }

    // A restarted Redis has forgotten everything; fencing lives in the database.
    cluster.redis.restart();
    for n in 0..5 {
        let subject = format!("AFTER-{n}");
        let (response, refusals) =
            randomise_with_retries(&mut clients, n, &load_request("S01", &subject, false), 20)
                .await;
        let response =
            response.unwrap_or_else(|| panic!("allocation did not resume: {refusals:?}"));
        acknowledged.insert(subject, acknowledged_number(&response));
    }
    cluster.verify(&yaml, &acknowledged).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_paused_past_its_lease_is_fenced_out() {
    let cluster = Cluster::start(1, &[("EQUIPOISE_RANDOMISATION__LOCK_LEASE_MS", "400")]);
    let slow = cluster.spawn_replica(&[
        ("EQUIPOISE_RANDOMISATION__LOCK_LEASE_MS", "400"),
        (
            "EQUIPOISE_RANDOMISATION__FAULTS__HOLD_BEFORE_COMMIT_MS",
            "300",
        ),
    ]);
    let yaml = load_trial_yaml(1);
    cluster.activate(&yaml).await;
    let token = site_token(&cluster, 1);
    let mut on_slow = cluster.client_for(&slow, &token).await;
    let mut on_healthy = cluster.client_for(&cluster.replicas[0], &token).await;

    let paused_request = load_request("S01", "PAUSED", true);
    let in_flight = tokio::spawn(async move { on_slow.randomise(paused_request).await });
    // Wait until the slow replica holds the lock with its arm computed, then freeze it.
    wait_for(|| slow.log().contains("fault injection: holding")).await;
    assert_eq!(cluster.redis.key_count(LOCK_KEYS), 1);
    slow.pause();
    wait_for(|| cluster.redis.key_count(LOCK_KEYS) == 0).await;

    let healthy = on_healthy
        .randomise(load_request("S01", "HEALTHY", true))
        .await
        .unwrap_or_else(|e| panic!("the healthy replica must proceed once the lease expires: {e}"))
        .into_inner();
    slow.resume();
    let refused = in_flight
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .expect_err("the stale commit is refused");
    assert_eq!(refused.code(), Code::Aborted, "{refused:?}");
    assert!(slow.log().contains("fenced commit refused"));

    let store = cluster.store().await;
    assert_eq!(
        store.allocation("LOAD", "PAUSED").await,
        Ok(None),
        "the fenced request allocated"
    );
    // The client's retry makes one fresh allocation.
    let retried = on_healthy
        .randomise(load_request("S01", "PAUSED", true))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    let acknowledged = BTreeMap::from([
        ("HEALTHY".to_owned(), acknowledged_number(&healthy)),
        ("PAUSED".to_owned(), acknowledged_number(&retried)),
    ]);
    cluster.verify(&yaml, &acknowledged).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_killed_mid_request_never_allocates_twice() {
    let cluster = Cluster::start(1, &[("EQUIPOISE_RANDOMISATION__LOCK_LEASE_MS", "500")]);
    let mut before_commit = cluster.spawn_replica(&[(
        "EQUIPOISE_RANDOMISATION__FAULTS__HOLD_BEFORE_COMMIT_MS",
        "2000",
    )]);
    let mut after_commit = cluster.spawn_replica(&[(
        "EQUIPOISE_RANDOMISATION__FAULTS__HOLD_AFTER_COMMIT_MS",
        "2000",
    )]);
    let yaml = load_trial_yaml(1);
    cluster.activate(&yaml).await;
    let token = site_token(&cluster, 1);
    let mut survivor = cluster.client_for(&cluster.replicas[0], &token).await;
    let store = cluster.store().await;

    // Killed before its commit: the retry elsewhere makes one fresh allocation.
    let mut doomed = cluster.client_for(&before_commit, &token).await;
    let request = load_request("S01", "KILLED-EARLY", false);
    let sent = request.clone();
    let in_flight = tokio::spawn(async move { doomed.randomise(sent).await });
    wait_for(|| before_commit.log().contains("fault injection: holding")).await;
    before_commit.kill();
    assert!(in_flight.await.unwrap_or_else(|e| panic!("{e}")).is_err());
    let fresh = survivor
        .randomise(request)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert!(!fresh.replayed);

    // Killed after its commit: the retry returns the committed allocation.
    let mut doomed = cluster.client_for(&after_commit, &token).await;
    let request = load_request("S01", "KILLED-LATE", false);
    let sent = request.clone();
    let in_flight = tokio::spawn(async move { doomed.randomise(sent).await });
    let mut committed = None;
    for _ in 0..500 {
        committed = store
            .allocation("LOAD", "KILLED-LATE")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if committed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let committed = committed.unwrap_or_else(|| panic!("the slow replica never committed"));
    after_commit.kill();
    assert!(in_flight.await.unwrap_or_else(|e| panic!("{e}")).is_err());
    let replayed = survivor
        .randomise(request)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert!(replayed.replayed);
    let number = acknowledged_number(&replayed);
    assert_eq!(number, committed.randomisation_number);

    let acknowledged = BTreeMap::from([
        ("KILLED-EARLY".to_owned(), acknowledged_number(&fresh)),
        ("KILLED-LATE".to_owned(), number),
    ]);
    cluster.verify(&yaml, &acknowledged).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restarting_postgres_surfaces_unavailable_never_internal() {
    let cluster = Cluster::start(2, &[]);
    let yaml = load_trial_yaml(2);
    cluster.activate(&yaml).await;
    let token = site_token(&cluster, 2);
    let mut clients = cluster.clients(&token).await;
    let mut acknowledged = BTreeMap::new();
    let mut refusals = Vec::new();
    for n in 0..30 {
        if n == 10 {
            cluster.postgres.stop("immediate");
            for m in 0..3 {
                let status = clients[m % 2]
                    .randomise(load_request("S02", &format!("OUTAGE-{m}"), true))
                    .await
                    .expect_err("no database, no allocation");
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    !status.message().contains("sqlx"),
                    "raw driver text leaked: {}",
                    status.message()
                );
            }
            cluster.postgres.start_again();
        }
        let subject = format!("P-{n:02}");
        let (response, seen) = randomise_with_retries(
            &mut clients,
            n,
            &load_request("S02", &subject, n % 2 == 0),
            40,
        )
        .await;
        refusals.extend(seen);
        let response =
            response.unwrap_or_else(|| panic!("{subject} never allocated: {refusals:?}"));
        acknowledged.insert(subject, acknowledged_number(&response));
    }
    assert!(
        refusals.iter().all(|s| s.code() != Code::Internal),
        "a lost connection surfaced as INTERNAL: {refusals:?}"
    );
    cluster.verify(&yaml, &acknowledged).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_redis_gives_unavailable_within_the_command_timeout() {
    let cluster = Cluster::start(
        1,
        &[("EQUIPOISE_RANDOMISATION__REDIS_COMMAND_TIMEOUT_MS", "250")],
    );
    let yaml = load_trial_yaml(1);
    cluster.activate(&yaml).await;
    let token = site_token(&cluster, 1);
    let mut client = cluster.client_for(&cluster.replicas[0], &token).await;
    let reply = cluster
        .redis
        .command(&["CLIENT", "PAUSE", "3000"])
        .unwrap_or_default();
    assert!(reply.starts_with("+OK"), "{reply}");
    let status = client
        .randomise(load_request("S01", "STALLED", false))
        .await
        .expect_err("a stalled Redis refuses");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("within 250ms"),
        "{}",
        status.message()
    );
    cluster.redis.command(&["CLIENT", "UNPAUSE"]);
    let (response, refusals) =
        randomise_with_retries(&mut [client], 0, &load_request("S01", "STALLED", false), 20).await;
    let response = response.unwrap_or_else(|| panic!("no recovery: {refusals:?}"));
    let acknowledged = BTreeMap::from([("STALLED".to_owned(), acknowledged_number(&response))]);
    cluster.verify(&yaml, &acknowledged).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_or_unreachable_urls_stop_start_up_naming_which() {
    let cluster = Cluster::start(0, &[]);
    let bad_redis = equipoise_testkit::Replica::start_expecting_failure(&[
        cluster.blinding.blinding_url(),
        (
            "EQUIPOISE_RANDOMISATION__DATABASE_URL",
            cluster.postgres.url(),
        ),
        (
            "EQUIPOISE_RANDOMISATION__REDIS_URL",
            "redis://127.0.0.1:1".into(),
        ),
    ]);
    assert!(bad_redis.contains("randomisation.redis_url"), "{bad_redis}");
    let bad_database = equipoise_testkit::Replica::start_expecting_failure(&[
        cluster.blinding.blinding_url(),
        (
            "EQUIPOISE_RANDOMISATION__DATABASE_URL",
            "postgres://nobody@127.0.0.1:1/none".into(),
        ),
    ]);
    assert!(
        bad_database.contains("randomisation.database_url"),
        "{bad_database}"
    );
}

/// Polls `condition` every few milliseconds, for at most ten seconds.
async fn wait_for(condition: impl Fn() -> bool) {
    for _ in 0..2_000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition never held");
}
