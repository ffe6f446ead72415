//! Allocation locks (docs/architecture.md, "Allocation"). A lock only keeps replicas from colliding;
//! correctness rests on the store's fenced commit. The embedded default is
//! in-process ([`InProcessLocks`]); Redis ([`RedisLocks`]) plugs in behind the
//! same trait for replicas.

mod in_process;
pub mod redis;

use std::any::Any;
use std::time::Duration;

use async_trait::async_trait;

pub use self::redis::{RedisLockTimings, RedisLocks};
pub use in_process::InProcessLocks;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// The key stays out of the message, which reaches site users: it
    /// names the stratum or, for minimisation, the method.
    #[error("the allocation lock was not free within {waited:?}")]
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
