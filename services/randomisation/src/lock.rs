//! Allocation locks (DESIGN §4). A lock only keeps replicas from colliding;
//! correctness rests on the store's fenced commit. The embedded default is
//! in-process; a Redis implementation plugs in behind the same trait.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    #[error("allocation lock {key} was not free within {waited:?}")]
    Timeout { key: String, waited: Duration },
    #[error("allocation lock service unavailable: {0}")]
    Unavailable(String),
}

/// A held lock. Dropping it releases an in-process lock; a remote lock
/// also expires with its lease.
pub struct LockLease {
    pub key: String,
    /// Random value identifying this holder, for compare-and-delete release.
    pub token: String,
    _holder: Option<Box<dyn Any + Send + Sync>>,
}

impl LockLease {
    pub fn new(key: String, token: String, holder: Option<Box<dyn Any + Send + Sync>>) -> Self {
        Self {
            key,
            token,
            _holder: holder,
        }
    }
}

#[async_trait]
pub trait AllocationLocks: Send + Sync {
    /// Waits a bounded time for the lock on `key`.
    async fn acquire(&self, key: &str) -> Result<LockLease, LockError>;
    async fn release(&self, lease: LockLease) -> Result<(), LockError>;
}

/// One tokio mutex per key, for a single process.
pub struct InProcessLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    wait: Duration,
}

impl InProcessLocks {
    pub fn new(wait: Duration) -> Self {
        Self {
            locks: Mutex::new(HashMap::new()),
            wait,
        }
    }

    fn mutex_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.entry(key.to_owned()).or_default().clone()
    }
}

#[async_trait]
impl AllocationLocks for InProcessLocks {
    async fn acquire(&self, key: &str) -> Result<LockLease, LockError> {
        let mutex = self.mutex_for(key);
        let guard = tokio::time::timeout(self.wait, mutex.lock_owned())
            .await
            .map_err(|_| LockError::Timeout {
                key: key.to_owned(),
                waited: self.wait,
            })?;
        Ok(LockLease::new(
            key.to_owned(),
            random_token(),
            Some(Box::new(guard)),
        ))
    }

    async fn release(&self, lease: LockLease) -> Result<(), LockError> {
        drop(lease);
        Ok(())
    }
}

/// 128 random bits as hex; falls back to the time if the OS has none, which
/// only weakens the token's uniqueness, never the store's fencing.
pub fn random_token() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = nanos.to_le_bytes();
    }
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_lock_makes_others_wait_then_time_out() {
        let locks = InProcessLocks::new(Duration::from_millis(50));
        let held = locks
            .acquire("trial/RESPINE/stratum-a")
            .await
            .expect("free");
        let blocked = locks.acquire("trial/RESPINE/stratum-a").await;
        assert!(matches!(blocked, Err(LockError::Timeout { .. })));
        // Another key is independent.
        let other = locks
            .acquire("trial/RESPINE/stratum-b")
            .await
            .expect("independent");
        locks.release(held).await.expect("released");
        let again = locks
            .acquire("trial/RESPINE/stratum-a")
            .await
            .expect("free again");
        assert_ne!(again.token, other.token);
    }

    #[tokio::test]
    async fn dropping_a_lease_releases_it() {
        let locks = InProcessLocks::new(Duration::from_millis(50));
        drop(locks.acquire("k").await.expect("free"));
        assert!(locks.acquire("k").await.is_ok());
    }
}
