//! When a pool is running low: a warning for administrators in status well
//! before it runs out, and emptiness, which refuses a code rather than take
//! one from another arm.

/// The counts of one arm's pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolCounts {
    /// Codes ever placed in the pool, uploads and top-ups included.
    pub pool_size: u32,
    pub issued: u32,
    /// Codes still available; below `pool_size - issued` if some were
    /// withdrawn (a damaged kit, say).
    pub remaining: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolLevel {
    Sufficient,
    /// Warn administrators: a top-up should be prepared.
    Low,
    /// The next allocation in this arm cannot be given a code.
    Empty,
}

/// Warn when the remaining codes fall to either threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LowPoolRule {
    /// A share of the pool size, from 0 to 1.
    pub warn_at_fraction: f64,
    /// An absolute count, so small pools warn early enough.
    pub warn_at_count: u32,
}

impl Default for LowPoolRule {
    fn default() -> Self {
        Self {
            warn_at_fraction: 0.1,
            warn_at_count: 20,
        }
    }
}

impl LowPoolRule {
    pub fn level(&self, counts: PoolCounts) -> PoolLevel {
        if counts.remaining == 0 {
            PoolLevel::Empty
        } else if counts.remaining <= self.threshold(counts.pool_size) {
            PoolLevel::Low
        } else {
            PoolLevel::Sufficient
        }
    }

    /// The larger of the two thresholds, in codes.
    fn threshold(&self, pool_size: u32) -> u32 {
        let fraction = self.warn_at_fraction.clamp(0.0, 1.0);
        // At most pool_size, so the cast back cannot overflow.
        let by_fraction = (f64::from(pool_size) * fraction).ceil() as u32;
        by_fraction.max(self.warn_at_count)
    }
}
