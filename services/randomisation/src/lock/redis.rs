//! Redis allocation locks (docs/architecture.md, "Allocation"): the lock
//! is `SET key token PX lease`, released by a compare-and-delete script,
//! with a bounded wait.
//!
//! Waiting (issue 11, item 3) is a queue kept in Redis beside the key, so
//! waiters of every replica are served in the order they reached Redis:
//! - a waiter joins the key's queue (a sorted set scored by arrival) and
//!   takes the key itself only if it is free and the waiter is first;
//! - a release hands the key straight to the first live waiter (`SET` to
//!   its token, with a fresh lease) and publishes that token; each replica
//!   keeps one subscription that wakes the waiter holding it, so the next
//!   holder is chosen by Redis, not by whoever's retry comes first;
//! - waiters refresh their place every `fallback_retry` and drop out of the
//!   queue when they stop (a waiter of a crashed replica is skipped once
//!   its place is `waiter_ttl` stale); one that gives up or is cancelled
//!   leaves the queue, passing the key on if it was handed it meanwhile;
//! - a lost notification is caught by that same periodic refresh, which
//!   also finds a key handed over.
//!
//! The lock only keeps replicas from colliding. A holder that pauses past
//! its lease loses the lock, and its commit is then refused by the store's
//! fenced compare-and-set, so nothing here needs to survive a Redis restart.
//! When Redis cannot be reached in time, allocation fails closed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Notify;
use tokio::time::{Instant, sleep, timeout};
use tokio_stream::StreamExt;

use super::{AllocationLocks, LockError, LockLease, random_token};

const KEY_PREFIX: &str = "equipoise:lock:";
/// Beside each lock key: its waiters by arrival, their places' staleness
/// deadlines, and the arrival counter. Prefixes no lock key can start with.
const QUEUE_PREFIX: &str = "equipoise:lockq:";
const PLACES_PREFIX: &str = "equipoise:lockp:";
const ARRIVALS_PREFIX: &str = "equipoise:locka:";
/// Where a release announces the token it handed the key to (or the key,
/// when nobody was waiting).
const RELEASED_CHANNEL: &str = "equipoise:lock-released";
/// A waiter refreshes its place (and looks for a key handed to it) this
/// often even without a notification.
const FALLBACK_RETRY: Duration = Duration::from_millis(250);
/// A place not refreshed for this many retries belongs to a waiter that is
/// gone, and is skipped.
const STALE_AFTER_RETRIES: u32 = 8;
/// Pause before the subscription connects again after losing Redis.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(200);

/// Shared by the scripts: KEYS are the lock, its queue, the places and the
/// arrival counter.
const QUEUE_FUNCTIONS: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function leave(token)
  redis.call('ZREM', KEYS[2], token)
  redis.call('HDEL', KEYS[3], token)
end
local function first_live(now)
  while true do
    local first = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
    if not first then return nil end
    if tonumber(redis.call('HGET', KEYS[3], first) or '0') >= now then return first end
    leave(first)
  end
end
";

/// ARGV: token, lease ms, place lifetime ms, key lifetime ms. Returns 1 when
/// the caller holds the key (taken, or handed over), else keeps its place.
const ACQUIRE_SCRIPT: &str = r"
local token = ARGV[1]
if redis.call('GET', KEYS[1]) == token then
  leave(token)
  return 1
end
local now = now_ms()
if not redis.call('ZSCORE', KEYS[2], token) then
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), token)
end
redis.call('HSET', KEYS[3], token, now + tonumber(ARGV[3]))
for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
if first_live(now) == token and redis.call('SET', KEYS[1], token, 'NX', 'PX', ARGV[2]) then
  leave(token)
  return 1
end
return 0
";

/// ARGV: token, channel, lease ms. Only the holder releases: the key goes
/// to the first live waiter, or is deleted when there is none.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local next = first_live(now_ms())
if next then
  redis.call('SET', KEYS[1], next, 'PX', ARGV[3])
  leave(next)
  redis.call('PUBLISH', ARGV[2], next)
else
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], KEYS[1])
end
return 1
";

/// ARGV: token. Leaves the queue; 1 if the key was handed over meanwhile.
const LEAVE_SCRIPT: &str = r"
leave(ARGV[1])
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
return 0
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisLockTimings {
    /// How long a lock lives if its holder never releases it.
    pub lease: Duration,
    /// How long `acquire` waits for a busy lock before giving up.
    pub wait: Duration,
    /// Longest a single Redis command may take before Redis counts as down.
    pub command_timeout: Duration,
    pub connect_timeout: Duration,
}

pub struct RedisLocks {
    redis: Arc<RedisQueue>,
    released: Arc<Releases>,
    subscription: tokio::task::JoinHandle<()>,
}

/// The connection and the scripts, shared with the guards that take a
/// cancelled waiter out of its queue.
struct RedisQueue {
    connection: ConnectionManager,
    timings: RedisLockTimings,
    acquire: redis::Script,
    release: redis::Script,
    leave: redis::Script,
    /// How often a waiter refreshes its place without a notification.
    fallback_retry: Duration,
}

/// One wake-up per waiting token.
#[derive(Default)]
struct Releases {
    tokens: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Releases {
    fn signal(&self, token: &str) -> Arc<Notify> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.entry(token.to_owned()).or_default().clone()
    }

    /// Wakes the waiter the key was handed to, if it is here.
    fn released(&self, token: &str) {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(signal) = tokens.get(token) {
            signal.notify_waiters();
        }
    }

    fn forget(&self, token: &str) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.remove(token);
    }
}

impl Drop for RedisLocks {
    fn drop(&mut self) {
        self.subscription.abort();
    }
}

/// Listens for releases until the locks are dropped, connecting again
/// whenever the subscription is lost.
async fn listen_for_releases(
    client: redis::Client,
    released: Weak<Releases>,
    subscribed: tokio::sync::oneshot::Sender<()>,
) {
    let mut subscribed = Some(subscribed);
    loop {
        if let Ok(mut pubsub) = client.get_async_pubsub().await
            && pubsub.subscribe(RELEASED_CHANNEL).await.is_ok()
        {
            if let Some(subscribed) = subscribed.take() {
                let _ = subscribed.send(());
            }
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                let Some(released) = released.upgrade() else {
                    return;
                };
                if let Ok(token) = message.get_payload::<String>() {
                    released.released(&token);
                }
            }
        }
        if released.strong_count() == 0 {
            return;
        }
        sleep(RESUBSCRIBE_DELAY).await;
    }
}

fn script(functions_and_body: &[&str]) -> redis::Script {
    redis::Script::new(&functions_and_body.concat())
}

/// The lock key and, beside it, its queue, places and arrival counter.
fn keys_of(lock_key: &str) -> [String; 4] {
    let name = lock_key.strip_prefix(KEY_PREFIX).unwrap_or(lock_key);
    [
        lock_key.to_owned(),
        format!("{QUEUE_PREFIX}{name}"),
        format!("{PLACES_PREFIX}{name}"),
        format!("{ARRIVALS_PREFIX}{name}"),
    ]
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl RedisLocks {
    /// Connects and checks Redis answers; an unreachable URL fails here, at
    /// start-up, rather than on the first allocation.
    pub async fn connect(url: &str, timings: RedisLockTimings) -> Result<Self, LockError> {
        Self::connect_with_tls(url, timings, None).await
    }

    /// As [`RedisLocks::connect`]; for a `rediss://` URL, `tls` gives the CA
    /// to trust instead of the system's roots, and a client certificate.
    pub async fn connect_with_tls(
        url: &str,
        timings: RedisLockTimings,
        tls: Option<redis::TlsCertificates>,
    ) -> Result<Self, LockError> {
        Self::connect_retrying_every(url, timings, tls, FALLBACK_RETRY).await
    }

    async fn connect_retrying_every(
        url: &str,
        timings: RedisLockTimings,
        tls: Option<redis::TlsCertificates>,
        fallback_retry: Duration,
    ) -> Result<Self, LockError> {
        let client = match tls {
            None => redis::Client::open(url),
            Some(certificates) => redis::Client::build_with_tls(url, certificates),
        }
        .map_err(|e| LockError::Unavailable(format!("redis_url: {e}")))?;
        let connection = connection_manager(&client, url, timings).await?;
        let released = Arc::new(Releases::default());
        let (subscribed, is_subscribed) = tokio::sync::oneshot::channel();
        let subscription = tokio::spawn(listen_for_releases(
            client,
            Arc::downgrade(&released),
            subscribed,
        ));
        // Waiters notified from the start; without the subscription they
        // still retry on their own, so this wait is bounded and not fatal.
        if timeout(timings.connect_timeout, is_subscribed)
            .await
            .is_err()
        {
            tracing::warn!(
                "redis release notifications not subscribed yet; waiters retry on their own"
            );
        }
        let redis = Arc::new(RedisQueue {
            connection,
            timings,
            acquire: script(&[QUEUE_FUNCTIONS, ACQUIRE_SCRIPT]),
            release: script(&[QUEUE_FUNCTIONS, RELEASE_SCRIPT]),
            leave: script(&[QUEUE_FUNCTIONS, LEAVE_SCRIPT]),
            fallback_retry,
        });
        redis.ping().await?;
        Ok(Self {
            redis,
            released,
            subscription,
        })
    }

    /// Waits in the key's queue until the key is taken or handed over, or
    /// `deadline` passes.
    async fn wait_in_queue(
        &self,
        key: &str,
        token: &str,
        deadline: Instant,
    ) -> Result<(), LockError> {
        let signal = self.released.signal(token);
        // Leaves the queue if this wait is cancelled or fails.
        let mut place = QueuePlace::new(&self.redis, key, token);
        loop {
            // Registered before trying, so a hand-over between the try and
            // the wait still wakes us.
            let notified = signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.redis.try_acquire(key, token).await? {
                place.taken();
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                place.taken();
                return self.give_up(key, token).await;
            }
            let pause = self.redis.fallback_retry.min(deadline - now);
            let _ = timeout(pause, notified).await;
        }
    }

    /// Leaves the queue at the deadline; a key handed over meanwhile is kept.
    async fn give_up(&self, key: &str, token: &str) -> Result<(), LockError> {
        if self.redis.leave(key, token).await? {
            return Ok(());
        }
        Err(LockError::Timeout {
            key: key.to_owned(),
            waited: self.redis.timings.wait,
        })
    }
}

async fn connection_manager(
    client: &redis::Client,
    url: &str,
    timings: RedisLockTimings,
) -> Result<ConnectionManager, LockError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timings.connect_timeout))
        .set_response_timeout(Some(timings.command_timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(200));
    let connect = ConnectionManager::new_with_config(client.clone(), config);
    timeout(timings.connect_timeout, connect)
        .await
        .map_err(|_| {
            LockError::Unavailable(format!(
                "redis_url {}: no answer within {:?}",
                redact(url),
                timings.connect_timeout
            ))
        })?
        .map_err(|e| LockError::Unavailable(format!("redis_url {}: {e}", redact(url))))
}

impl RedisQueue {
    async fn ping(&self) -> Result<(), LockError> {
        let mut connection = self.connection.clone();
        let ping = redis::cmd("PING");
        self.bounded(ping.query_async::<String>(&mut connection))
            .await
            .map(|_| ())
    }

    /// Runs one Redis command within the command timeout. Both our timer and
    /// the connection's own response timeout report the same way.
    async fn bounded<T>(
        &self,
        command: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, LockError> {
        let late = || {
            LockError::Unavailable(format!(
                "redis did not answer within {:?}",
                self.timings.command_timeout
            ))
        };
        match timeout(self.timings.command_timeout, command).await {
            Err(_) => Err(late()),
            Ok(Err(error)) if error.is_timeout() => Err(late()),
            Ok(Err(error)) => Err(unavailable(error)),
            Ok(Ok(value)) => Ok(value),
        }
    }

    /// Runs a queue script on `lock_key` and the keys beside it.
    async fn run(
        &self,
        script: &redis::Script,
        lock_key: &str,
        args: &[String],
    ) -> Result<bool, LockError> {
        let mut connection = self.connection.clone();
        let mut invocation = script.prepare_invoke();
        for key in keys_of(lock_key) {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        let answer: i64 = self
            .bounded(invocation.invoke_async(&mut connection))
            .await?;
        Ok(answer == 1)
    }

    /// Joins (or refreshes its place in) the queue; true once it holds the key.
    async fn try_acquire(&self, lock_key: &str, token: &str) -> Result<bool, LockError> {
        let stale_after = self.fallback_retry * STALE_AFTER_RETRIES;
        let keep = self.timings.wait + stale_after;
        let args = [
            token.to_owned(),
            millis(self.timings.lease).to_string(),
            millis(stale_after).to_string(),
            millis(keep).max(1).to_string(),
        ];
        self.run(&self.acquire, lock_key, &args).await
    }

    /// Releases a held key, handing it to the first live waiter; false if
    /// the lease had expired (someone else may hold it now).
    async fn release(&self, lock_key: &str, token: &str) -> Result<bool, LockError> {
        let args = [
            token.to_owned(),
            RELEASED_CHANNEL.to_owned(),
            millis(self.timings.lease).to_string(),
        ];
        self.run(&self.release, lock_key, &args).await
    }

    /// Leaves the queue; true if the key had been handed over meanwhile.
    async fn leave(&self, lock_key: &str, token: &str) -> Result<bool, LockError> {
        self.run(&self.leave, lock_key, &[token.to_owned()]).await
    }
}

/// A waiter's place in a queue. Dropped before [`QueuePlace::taken`] (the
/// acquire was cancelled or failed), it leaves the queue in the background,
/// passing the key on if it had been handed over: nobody is left waiting
/// for a caller that went away.
struct QueuePlace {
    redis: Arc<RedisQueue>,
    key: String,
    token: String,
    waiting: bool,
}

impl QueuePlace {
    fn new(redis: &Arc<RedisQueue>, key: &str, token: &str) -> Self {
        Self {
            redis: redis.clone(),
            key: key.to_owned(),
            token: token.to_owned(),
            waiting: true,
        }
    }

    fn taken(&mut self) {
        self.waiting = false;
    }
}

impl Drop for QueuePlace {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.waiting {
            return;
        }
        let (redis, key, token) = (
            self.redis.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
        runtime.spawn(async move {
            if let Ok(true) = redis.leave(&key, &token).await {
                let _ = redis.release(&key, &token).await;
            }
        });
    }
}

fn unavailable(error: redis::RedisError) -> LockError {
    LockError::Unavailable(format!("redis: {}", error.kind_name()))
}

/// Keeps passwords out of messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for redis::RedisError {
    /// The error's category, without connection details.
    fn kind_name(&self) -> String {
        if self.is_timeout() {
            "timed out".into()
        } else if self.is_connection_dropped() || self.is_connection_refusal() || self.is_io_error()
        {
            "connection lost".into()
        } else {
            format!("{:?}", self.kind())
        }
    }
}

#[async_trait]
impl AllocationLocks for RedisLocks {
    async fn acquire(&self, key: &str) -> Result<LockLease, LockError> {
        let deadline = Instant::now() + self.redis.timings.wait;
        let key = format!("{KEY_PREFIX}{key}");
        let token = random_token();
        let acquired = self.wait_in_queue(&key, &token, deadline).await;
        self.released.forget(&token);
        acquired?;
        Ok(LockLease::new(key, token, None))
    }

    async fn release(&self, lease: LockLease) -> Result<(), LockError> {
        if !self.redis.release(&lease.key, &lease.token).await? {
            // The lease expired and someone else may hold the lock now; the
            // store's fence already protected the commit.
            tracing::warn!(lock = %lease.key, "lock lease had expired before release");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://user:secret@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    fn timings(wait: Duration) -> RedisLockTimings {
        RedisLockTimings {
            lease: Duration::from_secs(30),
            wait,
            command_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// A replica whose waiters refresh their places only hourly: in these
    /// tests only a release's hand-over can give them the key.
    async fn replica(redis: &equipoise_testkit::RedisServer, wait: Duration) -> Arc<RedisLocks> {
        let hourly = Duration::from_secs(3600);
        let locks = RedisLocks::connect_retrying_every(&redis.url(), timings(wait), None, hourly)
            .await
            .expect("connect");
        Arc::new(locks)
    }

    async fn queue_length(redis: &equipoise_testkit::RedisServer, key: &str) -> usize {
        let client = redis::Client::open(redis.url()).expect("client");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connection");
        redis::cmd("ZCARD")
            .arg(format!("{QUEUE_PREFIX}{key}"))
            .query_async(&mut connection)
            .await
            .expect("ZCARD")
    }

    /// Waits until `n` waiters are queued; the bound only keeps a broken
    /// queue from hanging the test run.
    async fn until_queued(redis: &equipoise_testkit::RedisServer, key: &str, n: usize) {
        for _ in 0..6000 {
            if queue_length(redis, key).await >= n {
                return;
            }
            sleep(Duration::from_millis(5)).await;
        }
        panic!("{n} waiters never queued for {key}");
    }

    /// Queues a waiter that, once served, records `n` under the lock and
    /// releases it.
    fn waiter(
        locks: &Arc<RedisLocks>,
        order: &Arc<Mutex<Vec<usize>>>,
        n: usize,
    ) -> tokio::task::JoinHandle<()> {
        let (locks, order) = (locks.clone(), order.clone());
        tokio::spawn(async move {
            let lease = locks.acquire("k").await.expect("served");
            order.lock().expect("order").push(n);
            locks.release(lease).await.expect("released");
        })
    }

    /// Waiters of two replicas, arriving in turn, get the key in the order
    /// they reached Redis, each handed it by the release before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_of_every_replica_are_served_in_arrival_order() {
        let redis = equipoise_testkit::RedisServer::start();
        let wait = Duration::from_secs(60);
        let replicas = [replica(&redis, wait).await, replica(&redis, wait).await];
        let held = replicas[0].acquire("k").await.expect("free");
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for n in 0..6 {
            waiters.push(waiter(&replicas[n % 2], &order, n));
            until_queued(&redis, "k", n + 1).await;
        }
        replicas[0].release(held).await.expect("released");
        for waiter in waiters {
            waiter.await.expect("waiter");
        }
        assert_eq!(*order.lock().expect("order"), (0..6).collect::<Vec<_>>());
        assert_eq!(queue_length(&redis, "k").await, 0);
    }

    /// A place nobody refreshed (its replica died), first in the queue, is
    /// skipped by the release, which hands the key to the live waiter.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_replicas_waiter_is_skipped() {
        let redis = equipoise_testkit::RedisServer::start();
        let locks = replica(&redis, Duration::from_secs(60)).await;
        let held = locks.acquire("k").await.expect("free");
        let order = Arc::new(Mutex::new(Vec::new()));
        let live = waiter(&locks, &order, 1);
        until_queued(&redis, "k", 1).await;
        // Ahead of it, a place stale since the epoch. The live waiter
        // refreshes only hourly, so only the release can look at the queue.
        let client = redis::Client::open(redis.url()).expect("client");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connection");
        let _: () = redis::pipe()
            .cmd("ZADD")
            .arg(format!("{QUEUE_PREFIX}k"))
            .arg(0)
            .arg("ghost")
            .cmd("HSET")
            .arg(format!("{PLACES_PREFIX}k"))
            .arg("ghost")
            .arg(0)
            .query_async(&mut connection)
            .await
            .expect("a ghost waiter");
        assert_eq!(queue_length(&redis, "k").await, 2);
        locks.release(held).await.expect("released");
        live.await.expect("the live waiter is handed the key");
        assert_eq!(*order.lock().expect("order"), vec![1]);
        assert_eq!(queue_length(&redis, "k").await, 0);
    }

    /// A waiter whose call is cancelled after the key was handed to it
    /// (here it never heard: its replica's subscription is gone) passes the
    /// key on, so the next waiter is served rather than left for the lease.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_waiter_passes_the_key_on() {
        let redis = equipoise_testkit::RedisServer::start();
        let wait = Duration::from_secs(60);
        let (deaf, live) = (replica(&redis, wait).await, replica(&redis, wait).await);
        deaf.subscription.abort();
        let held = live.acquire("k").await.expect("free");
        let order = Arc::new(Mutex::new(Vec::new()));
        let cancelled = waiter(&deaf, &order, 0);
        until_queued(&redis, "k", 1).await;
        let next = waiter(&live, &order, 1);
        until_queued(&redis, "k", 2).await;
        live.release(held).await.expect("handed to the deaf waiter");
        cancelled.abort();
        let _ = cancelled.await;
        next.await.expect("the next waiter is served");
        assert_eq!(*order.lock().expect("order"), vec![1]);
        assert_eq!(queue_length(&redis, "k").await, 0);
    }

    /// A waiter that gives up leaves the queue and says how long it waited.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_that_times_out_leaves_the_queue() {
        let redis = equipoise_testkit::RedisServer::start();
        let holder = replica(&redis, Duration::from_secs(60)).await;
        let _held = holder.acquire("k").await.expect("free");
        let impatient = replica(&redis, Duration::from_millis(200)).await;
        let refused = impatient.acquire("k").await;
        assert!(
            matches!(refused, Err(LockError::Timeout { .. })),
            "{:?}",
            refused.err()
        );
        assert_eq!(queue_length(&redis, "k").await, 0);
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_named_at_start_up() {
        let timings = RedisLockTimings {
            lease: Duration::from_secs(10),
            wait: Duration::from_secs(1),
            command_timeout: Duration::from_millis(300),
            connect_timeout: Duration::from_millis(300),
        };
        // Port 1 on loopback: nothing listens there.
        let error = RedisLocks::connect("redis://127.0.0.1:1", timings)
            .await
            .err()
            .expect("refused");
        assert!(error.to_string().contains("redis_url"), "{error}");
        let error = RedisLocks::connect("not a url", timings)
            .await
            .err()
            .expect("invalid");
        assert!(error.to_string().contains("redis_url"), "{error}");
    }
}
