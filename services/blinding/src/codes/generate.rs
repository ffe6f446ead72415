//! Generated pools.
//!
//! Why no property of a code can depend on its arm: the codes are drawn
//! first, all from one stream and one code space, before any arm is known,
//! so which codes exist depends only on the seed, the format and the total
//! pool size. Arms are then given to the drawn codes by a uniform shuffle of
//! arm labels in ratio proportions, which makes each arm's codes a uniformly
//! random subset of the drawn ones. Each arm's pool is finally put in issue
//! order by a shuffle of its own. Three stream keys keep the stages
//! independent, and apart from the randomisation service's allocation streams.

use std::collections::HashSet;

use equipoise_stream::{ALGORITHM_VERSION, ChaCha20Rng, MasterSeed, derive_stream, shuffle};
use equipoise_trial::{Arm, CodeFormat};

use super::CodePool;
use super::format::draw_code;

/// The stream from which every code of a trial is drawn.
pub const CODE_DRAW_STREAM_KEY: &str = "treatment-codes/draw";
/// The stream that deals the drawn codes out to the arms.
pub const ARM_ASSIGNMENT_STREAM_KEY: &str = "treatment-codes/arms";
/// The stream that orders each arm's pool for issue.
pub const ISSUE_ORDER_STREAM_KEY: &str = "treatment-codes/issue-order";

/// A guessed code of the right format must be a real one at most once in
/// this many tries. The trial definition's validation applies the same
/// margin to the same pool size (`TrialDefinition::code_pool_size`).
pub const MIN_UNUSED_CODES_PER_CODE: f64 = equipoise_trial::MIN_UNUSED_CODES_PER_CODE;

/// Far above any trial's enrolment; keeps a mistyped size from exhausting
/// memory. The definition's validation refuses larger pools.
pub const MAX_POOL_SIZE: u32 = equipoise_trial::MAX_CODE_POOL_SIZE;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenerationError {
    #[error("a code pool needs at least one arm")]
    NoArms,
    #[error("the pool size must be at least 1")]
    ZeroPoolSize,
    #[error("pool size {0} is above the limit of {MAX_POOL_SIZE}")]
    PoolTooLarge(u32),
    #[error("arm '{0}' has ratio 0, so it cannot have a share of the codes")]
    ZeroRatio(String),
    #[error("arm '{0}' is listed more than once")]
    DuplicateArm(String),
    #[error(
        "pool size {pool_size} is not a multiple of the ratio total {ratio_total}, \
         so the arms' pools cannot follow the ratios exactly"
    )]
    NotMultipleOfRatios { pool_size: u32, ratio_total: u64 },
    #[error(
        "code format '{format}' has {available_bits:.1} bits of randomness; {pool_size} codes \
         need at least {needed_bits:.1} so that at most one guess in 10,000 hits a real code"
    )]
    CodeSpaceTooSmall {
        format: String,
        pool_size: u32,
        available_bits: f64,
        needed_bits: f64,
    },
}

/// One pool per arm, in the order of `arms`, `pool_size` codes in all, split
/// exactly in ratio proportions.
pub fn generate_pools(
    seed: &MasterSeed,
    format: &CodeFormat,
    arms: &[Arm],
    pool_size: u32,
) -> Result<Vec<CodePool>, GenerationError> {
    let shares = arm_shares(arms, pool_size)?;
    check_code_space(format, pool_size)?;
    let codes = draw_distinct_codes(seed, format, pool_size);
    let mut labels = arm_labels(&shares);
    shuffle(&mut stream(seed, ARM_ASSIGNMENT_STREAM_KEY), &mut labels);
    let mut pools: Vec<CodePool> = arms
        .iter()
        .map(|arm| CodePool {
            arm_id: arm.id.clone(),
            codes: Vec::new(),
        })
        .collect();
    for (code, arm_index) in codes.into_iter().zip(labels) {
        pools[arm_index].codes.push(code);
    }
    let mut issue_order = stream(seed, ISSUE_ORDER_STREAM_KEY);
    for pool in &mut pools {
        shuffle(&mut issue_order, &mut pool.codes);
    }
    Ok(pools)
}

fn stream(seed: &MasterSeed, key: &str) -> ChaCha20Rng {
    derive_stream(seed, key, ALGORITHM_VERSION)
}

/// How many codes each arm gets, after checking the arms and the size.
fn arm_shares(arms: &[Arm], pool_size: u32) -> Result<Vec<u32>, GenerationError> {
    if arms.is_empty() {
        return Err(GenerationError::NoArms);
    }
    if pool_size == 0 {
        return Err(GenerationError::ZeroPoolSize);
    }
    if pool_size > MAX_POOL_SIZE {
        return Err(GenerationError::PoolTooLarge(pool_size));
    }
    let mut seen = HashSet::new();
    for arm in arms {
        if arm.ratio == 0 {
            return Err(GenerationError::ZeroRatio(arm.id.clone()));
        }
        if !seen.insert(arm.id.as_str()) {
            return Err(GenerationError::DuplicateArm(arm.id.clone()));
        }
    }
    let ratio_total: u64 = arms.iter().map(|arm| u64::from(arm.ratio)).sum();
    if u64::from(pool_size) % ratio_total != 0 {
        return Err(GenerationError::NotMultipleOfRatios {
            pool_size,
            ratio_total,
        });
    }
    let unit = u64::from(pool_size) / ratio_total;
    // Each share is at most pool_size, so it fits u32.
    Ok(arms
        .iter()
        .map(|arm| (unit * u64::from(arm.ratio)) as u32)
        .collect())
}

/// Refuses pools so large that duplicates would slow drawing or a guessed
/// code would too often be a real one.
fn check_code_space(format: &CodeFormat, pool_size: u32) -> Result<(), GenerationError> {
    let available_bits = format.entropy_bits();
    let needed_bits = (f64::from(pool_size) * MIN_UNUSED_CODES_PER_CODE).log2();
    if available_bits < needed_bits {
        return Err(GenerationError::CodeSpaceTooSmall {
            format: format.source.clone(),
            pool_size,
            available_bits,
            needed_bits,
        });
    }
    Ok(())
}

/// `count` distinct codes in draw order; a repeat is redrawn. The code space
/// is at least 10,000 times `count`, so repeats are rare and this ends.
fn draw_distinct_codes(seed: &MasterSeed, format: &CodeFormat, count: u32) -> Vec<String> {
    let mut rng = stream(seed, CODE_DRAW_STREAM_KEY);
    let mut seen = HashSet::with_capacity(count as usize);
    let mut codes = Vec::with_capacity(count as usize);
    while codes.len() < count as usize {
        let code = draw_code(&mut rng, format);
        if seen.insert(code.clone()) {
            codes.push(code);
        }
    }
    codes
}

/// Arm indices, each repeated by its share, to be shuffled.
fn arm_labels(shares: &[u32]) -> Vec<usize> {
    shares
        .iter()
        .enumerate()
        .flat_map(|(index, share)| std::iter::repeat_n(index, *share as usize))
        .collect()
}
