//! Redis allocation locks (docs/architecture.md, "Allocation"): `SET key token NX PX lease`, released
//! by a compare-and-delete script, with a bounded, jittered wait.
//!
//! The lock only keeps replicas from colliding. A holder that pauses past
//! its lease loses the lock, and its commit is then refused by the store's
//! fenced compare-and-set, so nothing here needs to survive a Redis restart.
//! When Redis cannot be reached in time, allocation fails closed.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::{Instant, sleep, timeout};

use super::{AllocationLocks, LockError, LockLease, random_token};

const KEY_PREFIX: &str = "equipoise:lock:";
const FIRST_BACKOFF: Duration = Duration::from_millis(2);
const MAX_BACKOFF: Duration = Duration::from_millis(50);

/// Deletes the key only if it still holds our token: never someone else's lock.
const RELEASE_SCRIPT: &str = r"
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
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
        let connect = ConnectionManager::new_with_config(client, config);
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
        let locks = Self {
            connection,
            timings,
            release: redis::Script::new(RELEASE_SCRIPT),
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
        let key = format!("{KEY_PREFIX}{key}");
        let token = random_token();
        let deadline = Instant::now() + self.timings.wait;
        let mut backoff = FIRST_BACKOFF;
        loop {
            if self.try_set(&key, &token).await? {
                return Ok(LockLease::new(key, token, None));
            }
            let jittered = backoff.mul_f64(0.5 + f64::from(jitter()) / f64::from(u8::MAX));
            if Instant::now() + jittered > deadline {
                return Err(LockError::Timeout {
                    key,
                    waited: self.timings.wait,
                });
            }
            sleep(jittered).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn release(&self, lease: LockLease) -> Result<(), LockError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.release.key(&lease.key);
        invocation.arg(&lease.token);
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

fn jitter() -> u8 {
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    byte[0]
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
