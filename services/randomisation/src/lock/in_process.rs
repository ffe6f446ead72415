//! In-process locks: one tokio mutex per key, for a single process.
//!
//! Waiting is fair and push-based (issue 11, item 3): tokio's mutex keeps
//! its waiters in a FIFO queue and wakes the first when the holder
//! releases, so no waiter polls and none is overtaken by a later one.

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

    /// Waiters get the lock in the order they asked for it, each as soon as
    /// the one before releases: the order is recorded under the lock.
    #[tokio::test]
    async fn waiters_are_served_in_arrival_order() {
        let locks = Arc::new(InProcessLocks::new(Duration::from_secs(30)));
        let held = locks.acquire("k").await.expect("free");
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for n in 0..8 {
            let (locks, order) = (locks.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let lease = locks.acquire("k").await.expect("served");
                order.lock().expect("order").push(n);
                // Yield while holding, so a later waiter could overtake if
                // the queue were not fair.
                tokio::task::yield_now().await;
                locks.release(lease).await.expect("released");
            }));
            // On this single-threaded runtime, yielding lets the waiter run
            // until it queues on the lock, before the next is spawned.
            tokio::task::yield_now().await;
        }
        locks.release(held).await.expect("released");
        for waiter in waiters {
            waiter.await.expect("waiter");
        }
        assert_eq!(*order.lock().expect("order"), (0..8).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn dropping_a_lease_releases_it() {
        let locks = InProcessLocks::new(Duration::from_millis(50));
        drop(locks.acquire("k").await.expect("free"));
        assert!(locks.acquire("k").await.is_ok());
    }
}
