//! Treatment codes: one pool per arm, from which each allocation is given the
//! next code of its arm's pool.
//!
//! A code must carry no information about its arm: not its prefix, length,
//! alphabet, characters, numeric value, nor its place in the order of issue.
//! Generated pools get this by construction (see [`generate`]); uploaded
//! pools are checked for everything that can be checked mechanically.

mod format;
mod generate;
mod stock;
mod upload;

pub use format::{alphabet_characters, code_length, matches_format};
pub use generate::{
    ARM_ASSIGNMENT_STREAM_KEY, CODE_DRAW_STREAM_KEY, GenerationError, ISSUE_ORDER_STREAM_KEY,
    MAX_POOL_SIZE, MIN_UNUSED_CODES_PER_CODE, generate_pools,
};
pub use stock::{LowPoolRule, PoolCounts, PoolLevel};
pub use upload::{UploadProblem, UploadProblems, UploadedCode, validate_top_up, validate_upload};

/// The codes of one arm, in the order they are to be issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodePool {
    pub arm_id: String,
    pub codes: Vec<String>,
}

#[cfg(test)]
mod tests;
