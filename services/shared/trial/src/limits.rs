//! Upper bounds on everything in a definition that sizes memory or a loop.
//!
//! A definition reaches the services from a request (RegisterTrial,
//! AmendTrial, Simulate), so no number in it may make one request allocate
//! gigabytes, overflow an integer or loop for minutes. Each bound is far
//! above any real design; the README's "Trial definitions" section lists
//! them.

/// The YAML document itself, in bytes.
pub const MAX_DEFINITION_BYTES: usize = 256 * 1024;
/// Problems listed for one definition; the rest are counted.
pub const MAX_PROBLEMS: usize = 100;

/// Arms of a trial.
pub const MAX_ARMS: usize = 16;
/// One arm's ratio.
pub const MAX_RATIO: u32 = 100;
/// The ratios added up: a block of the ratio total must fit
/// [`MAX_BLOCK_SIZE`].
pub const MAX_RATIO_SUM: u32 = 1_000;
/// Sites of a trial.
pub const MAX_SITES: usize = 5_000;
/// Any enrolment cap (total, per stratum, per site); the code pools of a
/// trial are bounded separately by [`crate::MAX_CODE_POOL_SIZE`].
pub const MAX_CAP: u32 = 1_000_000;

/// Declared covariates.
pub const MAX_COVARIATES: usize = 100;
/// Values of one enum covariate.
pub const MAX_ENUM_VALUES: usize = 100;
/// Eligibility criteria.
pub const MAX_CRITERIA: usize = 100;
/// Characters of one rule or level condition: `in [a, a, …]` is checked
/// per subject, so its length is a loop bound.
pub const MAX_RULE_LENGTH: usize = 1_000;

/// Stratification factors (and so minimisation factors).
pub const MAX_FACTORS: usize = 10;
/// Explicit levels of one covariate factor (a site factor has one level per
/// site, bounded by [`MAX_SITES`] and [`MAX_STRATA`]).
pub const MAX_LEVELS: usize = 100;
/// Most strata a design may have: beyond this, strata are mostly empty.
pub const MAX_STRATA: usize = 10_000;
/// A minimisation factor's weight.
pub const MAX_FACTOR_WEIGHT: f64 = 1_000.0;

/// Block sizes listed for permuted blocks.
pub const MAX_BLOCK_SIZES: usize = 10;
/// One block.
pub const MAX_BLOCK_SIZE: u32 = 1_000;
/// The big stick's and the maximal procedure's imbalance bound.
pub const MAX_BOUND: u32 = 1_000;
/// The maximal procedure's sequence length.
pub const MAX_SEQUENCE_LENGTH: u32 = 1_000;
/// The exponent of the adjustable and generalised biased coins: far past
/// the point where both are deterministic.
pub const MAX_COIN_EXPONENT: f64 = 1_000.0;
/// Wei's urn parameters (balls).
pub const MAX_URN_BALLS: f64 = 1_000_000.0;
/// Cells of the maximal procedure's completion table,
/// (sequence_length + 1) × (2·bound + 1) numbers per stratum sequence.
pub const MAX_COMPLETION_CELLS: u64 = 1_000_000;

/// Periods of a crossover design.
pub const MAX_PERIODS: usize = 20;
/// A period's or the safety window's length: 100 years.
pub const MAX_MONTHS: u32 = 1_200;
/// Characters of a treatment-code format: every code of the pools is built
/// from it.
pub const MAX_CODE_FORMAT_LENGTH: usize = 64;
/// Versions of the reference safety information.
pub const MAX_RSI_VERSIONS: usize = 100;
/// Expected events of one version, and roles of one list.
pub const MAX_LIST_NAMES: usize = 1_000;
