//! Redis allocation locks (docs/architecture.md, "Allocation"): `SET key token NX PX lease`, released
//! by a compare-and-delete script, with a bounded wait.
//!
//! Waiting (issue 11, item 3): the release script publishes the key it
//! freed, and each replica keeps one subscription that wakes its waiter for
//! that key at once, instead of polling with a backoff. Within a replica,
//! waiters for a key queue first on a fair in-process lock, so they reach
//! Redis one at a time in arrival order. Across replicas the woken waiters
//! race for the key; a notification lost (the subscription reconnecting, a
//! lease that expired instead of being released) is caught by a retry every
//! `FALLBACK_RETRY`.
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

use super::{AllocationLocks, InProcessLocks, LockError, LockLease, random_token};

const KEY_PREFIX: &str = "equipoise:lock:";
/// Where the release script announces the key it freed.
const RELEASED_CHANNEL: &str = "equipoise:lock-released";
/// A waiter retries this often even without a notification.
const FALLBACK_RETRY: Duration = Duration::from_millis(50);
/// Pause before the subscription connects again after losing Redis.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(200);

/// Deletes the key only if it still holds our token, never someone else's
/// lock, and tells the waiters of every replica that it is free.
const RELEASE_SCRIPT: &str = r"
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('del', KEYS[1])
  redis.call('publish', ARGV[2], KEYS[1])
  return 1
else
  return 0
end";

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
    connection: ConnectionManager,
    timings: RedisLockTimings,
    release: redis::Script,
    /// This replica's waiters, one per key at a time, in arrival order.
    local: InProcessLocks,
    released: Arc<Releases>,
    subscription: tokio::task::JoinHandle<()>,
    /// How often a waiter retries without a notification.
    fallback_retry: Duration,
}

/// One wake-up per key for the waiter of this replica that is at Redis.
#[derive(Default)]
struct Releases {
    keys: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Releases {
    fn signal(&self, key: &str) -> Arc<Notify> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.entry(key.to_owned()).or_default().clone()
    }

    /// Wakes the waiter for `key`, if there is one.
    fn released(&self, key: &str) {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(signal) = keys.get(key) {
            signal.notify_waiters();
        }
    }

    /// Drops the key's signal once no waiter holds it.
    fn forget(&self, key: &str) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.get(key).is_some_and(|s| Arc::strong_count(s) == 1) {
            keys.remove(key);
        }
    }
}

impl Drop for RedisLocks {
    fn drop(&mut self) {
        self.subscription.abort();
    }
}

/// Listens for released keys until the locks are dropped, connecting again
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
                if let Ok(key) = message.get_payload::<String>() {
                    released.released(&key);
                }
            }
        }
        if released.strong_count() == 0 {
            return;
        }
        sleep(RESUBSCRIBE_DELAY).await;
    }
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
        let client = match tls {
            None => redis::Client::open(url),
            Some(certificates) => redis::Client::build_with_tls(url, certificates),
        }
        .map_err(|e| LockError::Unavailable(format!("redis_url: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timings.connect_timeout))
            .set_response_timeout(Some(timings.command_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let connect = ConnectionManager::new_with_config(client.clone(), config);
        let connection = timeout(timings.connect_timeout, connect)
            .await
            .map_err(|_| {
                LockError::Unavailable(format!(
                    "redis_url {}: no answer within {:?}",
                    redact(url),
                    timings.connect_timeout
                ))
            })?
            .map_err(|e| LockError::Unavailable(format!("redis_url {}: {e}", redact(url))))?;
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
        let locks = Self {
            connection,
            timings,
            release: redis::Script::new(RELEASE_SCRIPT),
            local: InProcessLocks::new(timings.wait),
            released,
            subscription,
            fallback_retry: FALLBACK_RETRY,
        };
        locks.ping().await?;
        Ok(locks)
    }

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

    async fn try_set(&self, key: &str, token: &str) -> Result<bool, LockError> {
        let mut connection = self.connection.clone();
        let lease_ms = u64::try_from(self.timings.lease.as_millis()).unwrap_or(u64::MAX);
        let mut set = redis::cmd("SET");
        set.arg(key).arg(token).arg("NX").arg("PX").arg(lease_ms);
        let reply = self
            .bounded(set.query_async::<Option<String>>(&mut connection))
            .await?;
        Ok(reply.is_some())
    }
}

impl RedisLocks {
    /// Takes the Redis key by `deadline`, trying again whenever a release
    /// of it is announced (or every `FALLBACK_RETRY`).
    async fn wait_at_redis(
        &self,
        key: &str,
        token: &str,
        deadline: Instant,
    ) -> Result<(), LockError> {
        let signal = self.released.signal(key);
        loop {
            // Registered before trying, so a release between the try and
            // the wait still wakes us.
            let notified = signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.try_set(key, token).await? {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(LockError::Timeout {
                    key: key.to_owned(),
                    waited: self.timings.wait,
                });
            }
            let pause = self.fallback_retry.min(deadline - now);
            let _ = timeout(pause, notified).await;
        }
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
        let deadline = Instant::now() + self.timings.wait;
        // First in line in this replica, then at Redis.
        let turn = self.local.acquire(key).await?;
        let key = format!("{KEY_PREFIX}{key}");
        let token = random_token();
        let acquired = self.wait_at_redis(&key, &token, deadline).await;
        self.released.forget(&key);
        acquired?;
        Ok(LockLease::new(key, token, Some(Box::new(turn))))
    }

    async fn release(&self, lease: LockLease) -> Result<(), LockError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.release.key(&lease.key);
        invocation.arg(&lease.token).arg(RELEASED_CHANNEL);
        let released: i64 = self
            .bounded(invocation.invoke_async(&mut connection))
            .await?;
        if released == 0 {
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

    /// Waiters of one replica get the lock in the order they asked, each
    /// after the one before released it; the order is recorded under the
    /// lock.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_are_served_in_arrival_order() {
        let redis = equipoise_testkit::RedisServer::start();
        let locks = Arc::new(
            RedisLocks::connect(&redis.url(), timings(Duration::from_secs(60)))
                .await
                .expect("connect"),
        );
        let held = locks.acquire("k").await.expect("free");
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for n in 0..6 {
            let (locks, order) = (locks.clone(), order.clone());
            let (queued, is_queued) = tokio::sync::oneshot::channel();
            waiters.push(tokio::spawn(async move {
                let acquiring = locks.acquire("k");
                tokio::pin!(acquiring);
                // Polled once, so it is in the queue before the next starts.
                let lease = tokio::select! {
                    biased;
                    lease = &mut acquiring => lease,
                    () = std::future::ready(()) => {
                        let _ = queued.send(());
                        acquiring.await
                    }
                }
                .expect("served");
                order.lock().expect("order").push(n);
                locks.release(lease).await.expect("released");
            }));
            is_queued.await.expect("queued");
        }
        locks.release(held).await.expect("released");
        for waiter in waiters {
            waiter.await.expect("waiter");
        }
        assert_eq!(*order.lock().expect("order"), (0..6).collect::<Vec<_>>());
    }

    /// Another replica's release wakes a waiter here. Its fallback retry is
    /// longer than its wait, so only the notification can hand it the lock.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_release_elsewhere_wakes_the_waiter() {
        let redis = equipoise_testkit::RedisServer::start();
        let mut here = RedisLocks::connect(&redis.url(), timings(Duration::from_secs(20)))
            .await
            .expect("connect");
        here.fallback_retry = Duration::from_secs(3600);
        let there = RedisLocks::connect(&redis.url(), timings(Duration::from_secs(60)))
            .await
            .expect("connect");
        let held = there.acquire("k").await.expect("free");
        let refused = RedisLocks::connect(&redis.url(), timings(Duration::from_millis(120)))
            .await
            .expect("connect")
            .acquire("k")
            .await;
        assert!(matches!(refused, Err(LockError::Timeout { .. })), "held");
        let here = Arc::new(here);
        let waiter = here.clone();
        let waiting = tokio::spawn(async move { waiter.acquire("k").await.map(|l| l.token) });
        // Let the waiter find the key taken before it is released (if it
        // did not, it would take the free key; the test would still pass).
        while !here
            .released
            .keys
            .lock()
            .expect("keys")
            .contains_key("equipoise:lock:k")
        {
            tokio::task::yield_now().await;
        }
        sleep(Duration::from_millis(100)).await;
        there.release(held).await.expect("released");
        let token = waiting.await.expect("waiter").expect("handed over");
        assert!(!token.is_empty());
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
