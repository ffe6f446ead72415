//! Pauses around the allocation commit, so fault tests can stop or kill a
//! replica at a known point. Without the `fault-injection` feature the
//! settings do not exist and the hooks compile to nothing.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Hold the lock this long after computing the arm, before committing.
    #[cfg(feature = "fault-injection")]
    pub hold_before_commit_ms: u64,
    /// Wait this long after committing, before answering.
    #[cfg(feature = "fault-injection")]
    pub hold_after_commit_ms: u64,
    /// Hold each group-committed batch this long with its transaction open,
    /// written but not committed (applied by the store).
    #[cfg(feature = "fault-injection")]
    pub hold_in_batch_ms: u64,
}

impl Faults {
    pub async fn before_commit(&self) {
        #[cfg(feature = "fault-injection")]
        hold(self.hold_before_commit_ms, "before commit").await;
    }

    pub async fn after_commit(&self) {
        #[cfg(feature = "fault-injection")]
        hold(self.hold_after_commit_ms, "after commit").await;
    }
}

#[cfg(feature = "fault-injection")]
async fn hold(millis: u64, point: &str) {
    if millis > 0 {
        tracing::warn!(millis, point, "fault injection: holding");
        tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
    }
}
