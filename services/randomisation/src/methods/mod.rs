//! Allocation methods (docs/architecture.md, "Allocation"). The live service and the simulator both
//! call these, so a simulated design behaves exactly as the live one.
//!
//! Two families:
//! - stratum sequences (permuted blocks, biased coin, big stick, maximal
//!   procedure): each stratum's arms are a function of its own stream only,
//!   so the whole list can be regenerated offline from the seed;
//! - minimisation: each assignment depends on the whole trial's margins, so
//!   every draw, score and probability is logged for replay.

mod minimisation;
mod sequence;

pub use minimisation::{Margins, MinimisationDecision, minimise};
pub use sequence::{SequenceMethod, StratumSequence, regenerate_list};

/// One assignment, with the probability each arm had of being drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub arm: usize,
    pub probabilities: Vec<f64>,
}

impl Slot {
    /// The assignment was forced: some arm had probability 1.
    pub fn is_deterministic(&self) -> bool {
        self.probabilities.iter().any(|p| *p >= 1.0 - 1e-12)
    }
}

/// Probabilities in proportion to `weights` over the arms `included` picks.
fn proportional(ratios: &[u32], included: impl Fn(usize) -> bool, total_mass: f64) -> Vec<f64> {
    let sum: f64 = ratios
        .iter()
        .enumerate()
        .filter(|(i, _)| included(*i))
        .map(|(_, r)| f64::from(*r))
        .sum();
    ratios
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if included(i) && sum > 0.0 {
                total_mass * f64::from(*r) / sum
            } else {
                0.0
            }
        })
        .collect()
}
