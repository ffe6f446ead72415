//! The write every `Randomise` makes here, an assignment of the next code,
//! group-committed (`equipoise_common::store::group_commit`): assignments
//! queued together share one transaction and its fsync. Other writes are
//! rare and keep their own transactions.

use equipoise_common::audit::AuditEntry;
use equipoise_common::store::group_commit::order_by_key;

/// Most assignments one transaction takes; the rest wait for the next.
pub const MAX_BATCH: usize = 128;

/// [`Store::assign_code`](super::Store::assign_code)'s arguments.
#[derive(Debug, Clone)]
pub struct AssignmentWrite {
    pub trial_id: String,
    pub subject_id: String,
    pub site_id: String,
    pub arm_id: String,
    pub audit: AuditEntry,
}

/// By trial, arrival order within one: each trial row is locked when its
/// first assignment is reached, the audit head after all of them, so
/// replicas' batches cannot deadlock.
pub fn write_order(writes: &[AssignmentWrite]) -> Vec<usize> {
    order_by_key(writes, |write| write.trial_id.as_str())
}
