//! The writes both stores group-commit (`equipoise_common::store::group_commit`):
//! allocations and treatment codes, the two writes every `Randomise` makes.
//! Other writes (activation, amendments, corrections) are rare and keep
//! their own transactions.

use equipoise_common::audit::AuditEntry;
use equipoise_common::store::group_commit::order_by_key;

use super::{AllocationRecord, CodeRecorded, CommitRequest, StoreError, StoreResult};

/// Most writes one transaction takes; the rest wait for the next.
pub const MAX_BATCH: usize = 128;

/// One write waiting for its batch.
#[derive(Debug, Clone)]
pub enum BatchedWrite {
    Allocation(Box<CommitRequest>),
    Code(Box<CodeWrite>),
}

/// [`Store::record_code`](super::Store::record_code)'s arguments.
#[derive(Debug, Clone)]
pub struct CodeWrite {
    pub trial_id: String,
    pub subject_id: String,
    pub code: String,
    pub audit: AuditEntry,
}

/// What a batched write wrote.
#[derive(Debug)]
pub enum Written {
    Allocation(Box<AllocationRecord>),
    Code(CodeRecorded),
}

impl BatchedWrite {
    pub fn trial_id(&self) -> &str {
        match self {
            Self::Allocation(request) => &request.allocation.trial_id,
            Self::Code(write) => &write.trial_id,
        }
    }
}

impl Written {
    pub fn allocation(self) -> StoreResult<AllocationRecord> {
        match self {
            Self::Allocation(record) => Ok(*record),
            Self::Code(_) => Err(mismatch()),
        }
    }

    pub fn code(self) -> StoreResult<CodeRecorded> {
        match self {
            Self::Code(recorded) => Ok(recorded),
            Self::Allocation(_) => Err(mismatch()),
        }
    }
}

fn mismatch() -> StoreError {
    StoreError::Database("the group commit answered a write with another kind's result".into())
}

/// The order a batch is written in: by trial, arrival order within one
/// (each trial row is locked when its first write is reached, the audit
/// head after all of them, so replicas' batches cannot deadlock).
pub fn write_order(writes: &[BatchedWrite]) -> Vec<usize> {
    order_by_key(writes, BatchedWrite::trial_id)
}
