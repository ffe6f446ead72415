//! In-process locks: one tokio mutex per key, for a single process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::{AllocationLocks, LockError, LockLease, random_token};

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
