//! Methods whose stratum list depends only on the stratum's own stream.

use super::{Slot, proportional};
use equipoise_stream::{
    ChaCha20Rng, MasterSeed, derive_stream, pick, shuffle, uniform_below, unit_interval,
};
use equipoise_trial::MethodSpec;

/// The methods whose stratum lists depend only on their own stream.
#[derive(Debug, Clone, PartialEq)]
pub enum SequenceMethod {
    Blocks(Vec<u32>),
    BiasedCoin(f64),
    BigStick(u32),
    Maximal { bound: u32, sequence_length: u32 },
    RandomAllocation(u32),
    Chen { p: f64, bound: u32 },
    Adjustable(f64),
    Generalised(f64),
    Urn { alpha: f64, beta: f64 },
    TruncatedBinomial(u32),
}

impl SequenceMethod {
    /// `None` for minimisation and uploaded lists.
    pub fn from_spec(method: &MethodSpec) -> Option<Self> {
        Some(match method {
            MethodSpec::PermutedBlocks { block_sizes } => {
                SequenceMethod::Blocks(block_sizes.clone())
            }
            MethodSpec::BiasedCoin { p } => SequenceMethod::BiasedCoin(*p),
            MethodSpec::BigStick { bound } => SequenceMethod::BigStick(*bound),
            MethodSpec::MaximalProcedure {
                bound,
                sequence_length,
            } => SequenceMethod::Maximal {
                bound: *bound,
                sequence_length: *sequence_length,
            },
            MethodSpec::RandomAllocationRule { sample_size } => {
                SequenceMethod::RandomAllocation(*sample_size)
            }
            MethodSpec::ChenBiasedCoin { p, bound } => SequenceMethod::Chen {
                p: *p,
                bound: *bound,
            },
            MethodSpec::AdjustableBiasedCoin { a } => SequenceMethod::Adjustable(*a),
            MethodSpec::GeneralisedBiasedCoin { rho } => SequenceMethod::Generalised(*rho),
            MethodSpec::Urn { alpha, beta } => SequenceMethod::Urn {
                alpha: *alpha,
                beta: *beta,
            },
            MethodSpec::TruncatedBinomial { sample_size } => {
                SequenceMethod::TruncatedBinomial(*sample_size)
            }
            MethodSpec::Minimisation { .. } | MethodSpec::UploadedList { .. } => return None,
        })
    }
}

/// Generates one stratum's assignments in order.
pub struct StratumSequence {
    rng: ChaCha20Rng,
    ratios: Vec<u32>,
    counts: Vec<u32>,
    state: State,
}

enum State {
    Blocks {
        sizes: Vec<u32>,
        block: Vec<usize>,
        next: usize,
    },
    BiasedCoin {
        p: f64,
    },
    BigStick {
        bound: i64,
    },
    Maximal {
        bound: i64,
        /// completions[k][d + bound]: admissible ways to finish from step k at imbalance d.
        completions: Vec<Vec<f64>>,
        step: usize,
        imbalance: i64,
    },
    /// Random allocation rule and truncated binomial: counts within the
    /// current block of `size`.
    WholeBlock {
        size: u32,
        truncated: bool,
        in_block: Vec<u32>,
    },
    Chen {
        p: f64,
        bound: i64,
    },
    Adjustable {
        a: f64,
    },
    Generalised {
        rho: f64,
    },
    Urn {
        alpha: f64,
        beta: f64,
    },
}

impl StratumSequence {
    pub fn new(method: &SequenceMethod, ratios: &[u32], rng: ChaCha20Rng) -> Self {
        let state = match method {
            SequenceMethod::Blocks(sizes) => State::Blocks {
                sizes: sizes.clone(),
                block: Vec::new(),
                next: 0,
            },
            SequenceMethod::BiasedCoin(p) => State::BiasedCoin { p: *p },
            SequenceMethod::BigStick(bound) => State::BigStick {
                bound: i64::from(*bound),
            },
            SequenceMethod::Maximal {
                bound,
                sequence_length,
            } => State::Maximal {
                bound: i64::from(*bound),
                completions: completion_counts(
                    ratios,
                    i64::from(*bound),
                    *sequence_length as usize,
                ),
                step: 0,
                imbalance: 0,
            },
            SequenceMethod::RandomAllocation(size) => State::WholeBlock {
                size: *size,
                truncated: false,
                in_block: vec![0; ratios.len()],
            },
            SequenceMethod::TruncatedBinomial(size) => State::WholeBlock {
                size: *size,
                truncated: true,
                in_block: vec![0; ratios.len()],
            },
            SequenceMethod::Chen { p, bound } => State::Chen {
                p: *p,
                bound: i64::from(*bound),
            },
            SequenceMethod::Adjustable(a) => State::Adjustable { a: *a },
            SequenceMethod::Generalised(rho) => State::Generalised { rho: *rho },
            SequenceMethod::Urn { alpha, beta } => State::Urn {
                alpha: *alpha,
                beta: *beta,
            },
        };
        Self {
            rng,
            ratios: ratios.to_vec(),
            counts: vec![0; ratios.len()],
            state,
        }
    }

    pub fn next_slot(&mut self) -> Slot {
        let slot = match &mut self.state {
            State::Blocks { sizes, block, next } => {
                if *next >= block.len() {
                    *block = draw_block(&mut self.rng, sizes, &self.ratios);
                    *next = 0;
                }
                let remaining = &block[*next..];
                let probabilities = (0..self.ratios.len())
                    .map(|arm| {
                        remaining.iter().filter(|a| **a == arm).count() as f64
                            / remaining.len() as f64
                    })
                    .collect();
                let arm = block[*next];
                *next += 1;
                Slot { arm, probabilities }
            }
            State::BiasedCoin { p } => {
                let probabilities = biased_coin(&self.ratios, &self.counts, *p);
                draw(&mut self.rng, probabilities)
            }
            State::BigStick { bound } => {
                let probabilities = big_stick(&self.ratios, &self.counts, *bound);
                draw(&mut self.rng, probabilities)
            }
            State::Maximal {
                bound,
                completions,
                step,
                imbalance,
            } => {
                let probabilities = maximal(&self.ratios, completions, *bound, *step, *imbalance);
                let slot = draw(&mut self.rng, probabilities);
                *imbalance += two_arm_step(&self.ratios, slot.arm);
                *step += 1;
                if *step == completions.len() - 1 {
                    *step = 0;
                }
                slot
            }
            State::WholeBlock {
                size,
                truncated,
                in_block,
            } => {
                let probabilities = if *truncated {
                    truncated_binomial(in_block, *size)
                } else {
                    random_allocation(&self.ratios, in_block, *size)
                };
                let slot = draw(&mut self.rng, probabilities);
                in_block[slot.arm] += 1;
                if in_block.iter().sum::<u32>() >= *size {
                    in_block.fill(0);
                }
                slot
            }
            State::Chen { p, bound } => {
                let probabilities = chen(&self.ratios, &self.counts, *p, *bound);
                draw(&mut self.rng, probabilities)
            }
            State::Adjustable { a } => {
                let probabilities = adjustable(&self.counts, *a);
                draw(&mut self.rng, probabilities)
            }
            State::Generalised { rho } => {
                let probabilities = generalised(&self.counts, *rho);
                draw(&mut self.rng, probabilities)
            }
            State::Urn { alpha, beta } => {
                let probabilities = urn(&self.counts, *alpha, *beta);
                draw(&mut self.rng, probabilities)
            }
        };
        self.counts[slot.arm] += 1;
        slot
    }

    /// The slot at `position` (0-based), generating the ones before it.
    pub fn slot_at(mut self, position: u64) -> Slot {
        for _ in 0..position {
            self.next_slot();
        }
        self.next_slot()
    }
}

/// Regenerates the first `length` arms of a stratum list from the seed: the
/// statistician's offline check.
pub fn regenerate_list(
    method: &MethodSpec,
    ratios: &[u32],
    master: &MasterSeed,
    stream_key: &str,
    algorithm_version: u32,
    length: usize,
) -> Option<Vec<usize>> {
    let method = SequenceMethod::from_spec(method)?;
    let mut sequence = StratumSequence::new(
        &method,
        ratios,
        derive_stream(master, stream_key, algorithm_version),
    );
    Some((0..length).map(|_| sequence.next_slot().arm).collect())
}

fn draw(rng: &mut ChaCha20Rng, probabilities: Vec<f64>) -> Slot {
    let arm = pick(&probabilities, unit_interval(rng));
    Slot { arm, probabilities }
}

/// One block: a size drawn uniformly from the set, each arm in proportion to
/// its ratio, shuffled.
fn draw_block(rng: &mut ChaCha20Rng, sizes: &[u32], ratios: &[u32]) -> Vec<usize> {
    let size = sizes[uniform_below(rng, sizes.len() as u32) as usize];
    let ratio_sum: u32 = ratios.iter().sum();
    let mut block: Vec<usize> = ratios
        .iter()
        .enumerate()
        .flat_map(|(arm, r)| std::iter::repeat_n(arm, (size / ratio_sum * r) as usize))
        .collect();
    shuffle(rng, &mut block);
    block
}

/// Imbalance of two arms with ratios r0:r1, as r1·n0 − r0·n1: zero on target.
fn two_arm_imbalance(ratios: &[u32], counts: &[u32]) -> i64 {
    i64::from(ratios[1]) * i64::from(counts[0]) - i64::from(ratios[0]) * i64::from(counts[1])
}

fn two_arm_step(ratios: &[u32], arm: usize) -> i64 {
    if arm == 0 {
        i64::from(ratios[1])
    } else {
        -i64::from(ratios[0])
    }
}

/// Efron: the lagging arm with probability p; on target, by ratio.
fn biased_coin(ratios: &[u32], counts: &[u32], p: f64) -> Vec<f64> {
    match two_arm_imbalance(ratios, counts).signum() {
        0 => proportional(ratios, |_| true, 1.0),
        -1 => vec![p, 1.0 - p],
        _ => vec![1.0 - p, p],
    }
}

/// Big stick: by ratio, unless an assignment would take the imbalance past the bound.
fn big_stick(ratios: &[u32], counts: &[u32], bound: i64) -> Vec<f64> {
    let imbalance = two_arm_imbalance(ratios, counts);
    if imbalance + two_arm_step(ratios, 0) > bound {
        vec![0.0, 1.0]
    } else if imbalance + two_arm_step(ratios, 1) < -bound {
        vec![1.0, 0.0]
    } else {
        proportional(ratios, |_| true, 1.0)
    }
}

/// Random allocation rule: drawing without replacement from the block's
/// remaining places, each arm's share of the block in proportion to its ratio.
fn random_allocation(ratios: &[u32], in_block: &[u32], size: u32) -> Vec<f64> {
    let ratio_sum: u32 = ratios.iter().sum();
    let remaining: Vec<f64> = ratios
        .iter()
        .zip(in_block)
        .map(|(r, n)| f64::from((size / ratio_sum * r).saturating_sub(*n)))
        .collect();
    let total: f64 = remaining.iter().sum();
    remaining.iter().map(|r| r / total).collect()
}

/// Truncated binomial: a fair coin until one arm holds half the block.
fn truncated_binomial(in_block: &[u32], size: u32) -> Vec<f64> {
    let half = size / 2;
    if in_block[0] >= half {
        vec![0.0, 1.0]
    } else if in_block[1] >= half {
        vec![1.0, 0.0]
    } else {
        vec![0.5, 0.5]
    }
}

/// Chen: the big stick's forcing at the bound, Efron's coin inside it.
fn chen(ratios: &[u32], counts: &[u32], p: f64, bound: i64) -> Vec<f64> {
    let imbalance = two_arm_imbalance(ratios, counts);
    if imbalance + two_arm_step(ratios, 0) > bound {
        vec![0.0, 1.0]
    } else if imbalance + two_arm_step(ratios, 1) < -bound {
        vec![1.0, 0.0]
    } else {
        biased_coin(ratios, counts, p)
    }
}

/// Lagging arm's probability |D|^a / (|D|^a + 1), written as
/// 1 / (1 + |D|^-a) so a large exponent cannot give inf / inf.
fn adjustable(counts: &[u32], a: f64) -> Vec<f64> {
    let d = i64::from(counts[0]) - i64::from(counts[1]);
    if d == 0 {
        return vec![0.5, 0.5];
    }
    let lagging = 1.0 / (1.0 + (d.unsigned_abs() as f64).powf(-a));
    if d < 0 {
        vec![lagging, 1.0 - lagging]
    } else {
        vec![1.0 - lagging, lagging]
    }
}

/// Smith: arm A with n_B^rho / (n_A^rho + n_B^rho), as 1 / (1 + (n_A/n_B)^rho)
/// so no power overflows; a fair coin while both are empty.
fn generalised(counts: &[u32], rho: f64) -> Vec<f64> {
    let (a, b) = (f64::from(counts[0]), f64::from(counts[1]));
    let first = if a == b {
        0.5
    } else if b == 0.0 {
        // 0^rho / (n_A^rho + 0^rho): 0, or 1/2 when rho = 0.
        if rho == 0.0 { 0.5 } else { 0.0 }
    } else {
        1.0 / (1.0 + (a / b).powf(rho))
    };
    vec![first, 1.0 - first]
}

/// Wei's urn: alpha balls of each arm, beta of the other arm added per
/// assignment; a fair draw from an empty urn.
fn urn(counts: &[u32], alpha: f64, beta: f64) -> Vec<f64> {
    let (a, b) = (f64::from(counts[0]), f64::from(counts[1]));
    let total = 2.0 * alpha + beta * (a + b);
    if total <= 0.0 {
        return vec![0.5, 0.5];
    }
    let first = (alpha + beta * b) / total;
    vec![first, 1.0 - first]
}

/// Maximal procedure: every admissible sequence equally likely, so each arm's
/// probability is its share of the admissible completions.
fn maximal(
    ratios: &[u32],
    completions: &[Vec<f64>],
    bound: i64,
    step: usize,
    imbalance: i64,
) -> Vec<f64> {
    let ways = |k: usize, d: i64| -> f64 {
        if d.abs() > bound {
            0.0
        } else {
            completions[k][(d + bound) as usize]
        }
    };
    let total = ways(step, imbalance);
    let first = ways(step + 1, imbalance + two_arm_step(ratios, 0)) / total;
    vec![first, 1.0 - first]
}

/// Counts admissible completions backwards from the end of the sequence,
/// which must finish on target.
fn completion_counts(ratios: &[u32], bound: i64, length: usize) -> Vec<Vec<f64>> {
    let width = (2 * bound + 1) as usize;
    let mut table = vec![vec![0.0; width]; length + 1];
    table[length][bound as usize] = 1.0;
    for k in (0..length).rev() {
        for d in -bound..=bound {
            let next = |step: i64| {
                let e = d + step;
                if e.abs() > bound {
                    0.0
                } else {
                    table[k + 1][(e + bound) as usize]
                }
            };
            table[k][(d + bound) as usize] =
                next(two_arm_step(ratios, 0)) + next(two_arm_step(ratios, 1));
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use equipoise_stream::simulation_stream;

    fn sequence(method: MethodSpec, ratios: &[u32], key: &str) -> StratumSequence {
        let method = SequenceMethod::from_spec(&method).expect("sequence method");
        StratumSequence::new(&method, ratios, simulation_stream(42, key))
    }

    fn arms(method: MethodSpec, ratios: &[u32], n: usize) -> Vec<usize> {
        let mut s = sequence(method, ratios, "golden");
        (0..n).map(|_| s.next_slot().arm).collect()
    }

    #[test]
    fn golden_sequences_for_a_fixed_seed() {
        let render = |arms: Vec<usize>| {
            arms.iter()
                .map(|a| char::from(b'A' + *a as u8))
                .collect::<String>()
        };
        let blocks = MethodSpec::PermutedBlocks {
            block_sizes: vec![2, 4],
        };
        let efron = MethodSpec::BiasedCoin { p: 2.0 / 3.0 };
        let big_stick = MethodSpec::BigStick { bound: 3 };
        let maximal = MethodSpec::MaximalProcedure {
            bound: 2,
            sequence_length: 10,
        };
        let unequal = MethodSpec::PermutedBlocks {
            block_sizes: vec![3, 6],
        };
        let sequences = [
            render(arms(blocks, &[1, 1], 24)),
            render(arms(efron, &[1, 1], 24)),
            render(arms(big_stick, &[1, 1], 24)),
            render(arms(maximal, &[1, 1], 24)),
            render(arms(unequal, &[2, 1], 24)),
        ];
        assert_eq!(sequences, GOLDEN);
    }

    /// Pinned outputs: a change here means lists regenerated from a sealed
    /// seed would no longer match, which needs a new ALGORITHM_VERSION.
    const GOLDEN: [&str; 5] = [
        "BABABAABBAABBABABAABABAB",
        "BAABABBABBABABBBABBBAABB",
        "BBABABBABAABABBAABBAABBA",
        "BAABABBABAABABBBABAAABBB",
        "BAAABABAABAAABABAABAAAAB",
    ];

    #[test]
    fn golden_sequences_of_the_literature_procedures() {
        let render = |arms: Vec<usize>| {
            arms.iter()
                .map(|a| char::from(b'A' + *a as u8))
                .collect::<String>()
        };
        let methods = [
            (
                MethodSpec::RandomAllocationRule { sample_size: 12 },
                vec![1, 1],
            ),
            (
                MethodSpec::RandomAllocationRule { sample_size: 9 },
                vec![2, 1],
            ),
            (MethodSpec::ChenBiasedCoin { p: 0.75, bound: 2 }, vec![1, 1]),
            (MethodSpec::AdjustableBiasedCoin { a: 2.0 }, vec![1, 1]),
            (MethodSpec::GeneralisedBiasedCoin { rho: 2.0 }, vec![1, 1]),
            (
                MethodSpec::Urn {
                    alpha: 1.0,
                    beta: 1.0,
                },
                vec![1, 1],
            ),
            (MethodSpec::TruncatedBinomial { sample_size: 8 }, vec![1, 1]),
        ];
        let sequences: Vec<String> = methods
            .into_iter()
            .map(|(method, ratios)| render(arms(method, &ratios, 24)))
            .collect();
        assert_eq!(sequences, GOLDEN_LITERATURE);
    }

    /// Pinned like [`GOLDEN`].
    const GOLDEN_LITERATURE: [&str; 7] = [
        "BAABABBABBAAABBBABBBAAAA",
        "AAABABBAABAAABABAABBAABA",
        "BAABABBABBAAABBBABABAABA",
        "BBABABBAABABABABABBBAABA",
        "BAABABBABBABABBBABBBAABA",
        "BAABABBABBABABBBABBBABBB",
        "BBABABAABBABABAAABBBABAA",
    ];

    #[test]
    fn whole_sample_blocks_close_on_target() {
        for (method, ratios, size) in [
            (
                MethodSpec::RandomAllocationRule { sample_size: 10 },
                [1u32, 1u32],
                10u32,
            ),
            (
                MethodSpec::RandomAllocationRule { sample_size: 12 },
                [3, 1],
                12,
            ),
            (
                MethodSpec::TruncatedBinomial { sample_size: 10 },
                [1, 1],
                10,
            ),
        ] {
            let mut s = sequence(method, &ratios, "whole");
            let mut counts = [0u32; 2];
            for step in 1..=600u32 {
                counts[s.next_slot().arm] += 1;
                if step % size == 0 {
                    assert_eq!(counts[0] * ratios[1], counts[1] * ratios[0], "step {step}");
                }
            }
        }
    }

    #[test]
    fn chen_never_passes_its_bound() {
        let mut s = sequence(
            MethodSpec::ChenBiasedCoin { p: 0.6, bound: 2 },
            &[1, 1],
            "chen",
        );
        let mut imbalance = 0i64;
        for _ in 0..5000 {
            imbalance += if s.next_slot().arm == 0 { 1 } else { -1 };
            assert!(imbalance.abs() <= 2);
        }
    }

    /// Extreme parameters give probabilities, never NaN.
    #[test]
    fn extreme_coin_parameters_stay_probabilities() {
        for method in [
            MethodSpec::AdjustableBiasedCoin { a: 1_000.0 },
            MethodSpec::AdjustableBiasedCoin { a: 0.0 },
            MethodSpec::GeneralisedBiasedCoin { rho: 1_000.0 },
            MethodSpec::GeneralisedBiasedCoin { rho: 0.0 },
            MethodSpec::Urn {
                alpha: 0.0,
                beta: 1e-9,
            },
            MethodSpec::Urn {
                alpha: 1e6,
                beta: 1e6,
            },
        ] {
            let mut s = sequence(method.clone(), &[1, 1], "extreme");
            for _ in 0..300 {
                let slot = s.next_slot();
                assert!(
                    slot.probabilities.iter().all(|p| (0.0..=1.0).contains(p)),
                    "{method:?}: {:?}",
                    slot.probabilities
                );
            }
        }
    }

    #[test]
    fn blocks_balance_at_every_block_end() {
        let mut s = sequence(
            MethodSpec::PermutedBlocks {
                block_sizes: vec![3, 6, 9],
            },
            &[2, 1],
            "balance",
        );
        let mut counts = [0u32; 2];
        let mut balanced_points = 0;
        for _ in 0..3000 {
            let slot = s.next_slot();
            counts[slot.arm] += 1;
            if counts[0] == 2 * counts[1] {
                balanced_points += 1;
            }
            // Within a block, the excess is bounded by the largest block.
            assert!((i64::from(counts[0]) - 2 * i64::from(counts[1])).abs() <= 2 * 9);
        }
        assert!(balanced_points >= 3000 / 9);
    }

    #[test]
    fn big_stick_never_exceeds_its_bound() {
        let mut s = sequence(MethodSpec::BigStick { bound: 3 }, &[1, 1], "stick");
        let mut imbalance = 0i64;
        for _ in 0..5000 {
            imbalance += if s.next_slot().arm == 0 { 1 } else { -1 };
            assert!(imbalance.abs() <= 3);
        }
    }

    #[test]
    fn maximal_procedure_stays_in_bound_and_closes_each_sequence() {
        let mut s = sequence(
            MethodSpec::MaximalProcedure {
                bound: 2,
                sequence_length: 8,
            },
            &[1, 1],
            "maximal",
        );
        let mut imbalance = 0i64;
        for step in 1..=800 {
            imbalance += if s.next_slot().arm == 0 { 1 } else { -1 };
            assert!(imbalance.abs() <= 2);
            if step % 8 == 0 {
                assert_eq!(imbalance, 0, "sequence ending at {step} is not balanced");
            }
        }
    }

    #[test]
    fn slot_at_matches_sequential_generation() {
        let method = MethodSpec::PermutedBlocks {
            block_sizes: vec![2, 4],
        };
        let sequential = arms(method.clone(), &[1, 1], 30);
        for (position, arm) in sequential.iter().enumerate() {
            let slot = sequence(method.clone(), &[1, 1], "golden").slot_at(position as u64);
            assert_eq!(slot.arm, *arm);
        }
    }

    #[test]
    fn probabilities_are_a_distribution_and_name_forced_slots() {
        let mut s = sequence(
            MethodSpec::PermutedBlocks {
                block_sizes: vec![4],
            },
            &[1, 1],
            "probabilities",
        );
        let mut forced = 0;
        for _ in 0..4000 {
            let slot = s.next_slot();
            assert!((slot.probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            assert!(slot.probabilities[slot.arm] > 0.0);
            forced += usize::from(slot.is_deterministic());
        }
        // 1/(m+1) = 1/3 of assignments are forced for blocks of 4; 4000 draws
        // give a standard error of about 0.0075.
        let rate = forced as f64 / 4000.0;
        assert!((rate - 1.0 / 3.0).abs() < 0.03, "{rate}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, failure_persistence: None, ..Default::default() })]

        /// Whatever the ratio, block set and seed, a stratum is exactly on its
        /// ratio again within one largest block of its last balance point.
        #[test]
        fn permuted_blocks_return_to_balance_within_a_block(
            ratio_a in 1u32..4,
            ratio_b in 1u32..4,
            multiples in proptest::collection::btree_set(1u32..5, 1..4),
            seed in proptest::prelude::any::<u64>(),
        ) {
            let ratios = [ratio_a, ratio_b];
            let sum = ratio_a + ratio_b;
            let sizes: Vec<u32> = multiples.iter().map(|m| m * sum).collect();
            let largest = sizes.iter().copied().max().unwrap_or(sum) as usize;
            let method = SequenceMethod::Blocks(sizes);
            let mut sequence = StratumSequence::new(&method, &ratios, simulation_stream(seed, "proptest"));
            let mut counts = [0u32; 2];
            let mut last_balance = 0usize;
            for position in 1..=400usize {
                counts[sequence.next_slot().arm] += 1;
                if counts[0] * ratio_b == counts[1] * ratio_a {
                    last_balance = position;
                }
                proptest::prop_assert!(position - last_balance < largest, "no balance for {} slots", position - last_balance);
            }
        }

        /// The big stick and the maximal procedure never pass their bound.
        #[test]
        fn bounded_methods_never_pass_their_bound(
            bound in 1u32..6,
            half_length in 1u32..20,
            seed in proptest::prelude::any::<u64>(),
        ) {
            for method in [
                SequenceMethod::BigStick(bound),
                SequenceMethod::Maximal { bound, sequence_length: half_length * 2 },
            ] {
                let mut sequence = StratumSequence::new(&method, &[1, 1], simulation_stream(seed, "bounded"));
                let mut imbalance = 0i64;
                for _ in 0..300 {
                    imbalance += if sequence.next_slot().arm == 0 { 1 } else { -1 };
                    proptest::prop_assert!(imbalance.abs() <= i64::from(bound), "{method:?} reached {imbalance}");
                }
            }
        }
    }
}
