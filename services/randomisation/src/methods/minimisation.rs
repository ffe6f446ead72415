//! Pocock–Simon minimisation.
//!
//! For each candidate arm a, the imbalance of factor f is measured over the
//! ratio-scaled counts n_i / r_i at the new subject's level of f, as if the
//! subject had been given a; the score G_a is the weighted sum over factors.
//!
//! Tie rule (documented in the README): the arms with the lowest score share
//! probability p in proportion to their ratios, the other arms share 1 − p
//! likewise. When every arm ties, the probabilities are the ratios alone.
//! One unit draw from the trial's stream then picks the arm.

use serde::Serialize;

use super::proportional;
use equipoise_stream::pick;
use equipoise_trial::ImbalanceMeasure;

/// Counts of allocations per factor, level and arm.
#[derive(Debug, Clone, PartialEq)]
pub struct Margins {
    counts: Vec<Vec<Vec<u32>>>,
}

impl Margins {
    /// Empty margins for factors with `level_counts[f]` levels each.
    pub fn new(level_counts: &[usize], arms: usize) -> Self {
        Self {
            counts: level_counts
                .iter()
                .map(|&levels| vec![vec![0; arms]; levels])
                .collect(),
        }
    }

    pub fn record(&mut self, levels: &[usize], arm: usize) {
        for (factor, &level) in levels.iter().enumerate() {
            if let Some(cell) = self.counts.get_mut(factor).and_then(|f| f.get_mut(level)) {
                cell[arm] += 1;
            }
        }
    }

    pub fn at(&self, factor: usize, level: usize) -> &[u32] {
        &self.counts[factor][level]
    }
}

/// Everything needed to replay one minimisation assignment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MinimisationDecision {
    pub scores: Vec<f64>,
    pub probabilities: Vec<f64>,
    pub draw: f64,
    pub arm: usize,
}

pub fn minimise(
    margins: &Margins,
    levels: &[usize],
    weights: &[f64],
    measure: ImbalanceMeasure,
    p: f64,
    ratios: &[u32],
    draw: f64,
) -> MinimisationDecision {
    let scores: Vec<f64> = (0..ratios.len())
        .map(|candidate| score(margins, levels, weights, measure, ratios, candidate))
        .collect();
    let best = scores.iter().copied().fold(f64::INFINITY, f64::min);
    let preferred = |arm: usize| (scores[arm] - best).abs() <= 1e-12;
    let probabilities = if (0..ratios.len()).all(preferred) {
        proportional(ratios, |_| true, 1.0)
    } else {
        let favoured = proportional(ratios, preferred, p);
        let others = proportional(ratios, |arm| !preferred(arm), 1.0 - p);
        favoured.iter().zip(&others).map(|(a, b)| a + b).collect()
    };
    let arm = pick(&probabilities, draw);
    MinimisationDecision {
        scores,
        probabilities,
        draw,
        arm,
    }
}

fn score(
    margins: &Margins,
    levels: &[usize],
    weights: &[f64],
    measure: ImbalanceMeasure,
    ratios: &[u32],
    candidate: usize,
) -> f64 {
    levels
        .iter()
        .enumerate()
        .map(|(factor, &level)| {
            let scaled: Vec<f64> = margins
                .at(factor, level)
                .iter()
                .zip(ratios)
                .enumerate()
                .map(|(arm, (&n, &r))| {
                    (f64::from(n) + f64::from(u8::from(arm == candidate))) / f64::from(r)
                })
                .collect();
            weights[factor] * imbalance(&scaled, measure)
        })
        .sum()
}

fn imbalance(values: &[f64], measure: ImbalanceMeasure) -> f64 {
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
    match measure {
        ImbalanceMeasure::Range => max - min,
        ImbalanceMeasure::Variance => variance,
        ImbalanceMeasure::StandardDeviation => variance.sqrt(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_subject_is_by_ratio() {
        let margins = Margins::new(&[2, 3], 2);
        let decision = minimise(
            &margins,
            &[0, 1],
            &[1.0, 1.0],
            ImbalanceMeasure::Range,
            0.8,
            &[1, 1],
            0.3,
        );
        assert_eq!(decision.probabilities, vec![0.5, 0.5]);
        assert_eq!(decision.arm, 0);
        // With 2:1, giving the first subject A leaves scaled counts (1/2, 0);
        // giving B leaves (0, 1). A is nearer the target ratio, so it gets p.
        let unequal = minimise(
            &margins,
            &[0, 1],
            &[1.0, 1.0],
            ImbalanceMeasure::Range,
            0.8,
            &[2, 1],
            0.85,
        );
        assert_eq!(unequal.scores, vec![1.0, 2.0]);
        assert!((unequal.probabilities[0] - 0.8).abs() < 1e-12);
        assert_eq!(unequal.arm, 1);
    }

    #[test]
    fn the_lagging_arm_gets_p() {
        let mut margins = Margins::new(&[2], 2);
        margins.record(&[0], 0);
        margins.record(&[0], 0);
        margins.record(&[1], 1);
        let decision = minimise(
            &margins,
            &[0],
            &[1.0],
            ImbalanceMeasure::Range,
            0.8,
            &[1, 1],
            0.5,
        );
        // Level 0 has A=2, B=0: giving B scores 1, giving A scores 3.
        assert_eq!(decision.scores, vec![3.0, 1.0]);
        assert!((decision.probabilities[1] - 0.8).abs() < 1e-12);
        assert_eq!(decision.arm, 1);
    }

    #[test]
    fn weights_decide_between_conflicting_factors() {
        let mut margins = Margins::new(&[2, 2], 2);
        margins.record(&[0, 1], 0);
        margins.record(&[1, 0], 1);
        // Factor 0 level 0 favours B; factor 1 level 0 favours A.
        let heavy_first = minimise(
            &margins,
            &[0, 0],
            &[3.0, 1.0],
            ImbalanceMeasure::Variance,
            1.0,
            &[1, 1],
            0.0,
        );
        assert_eq!(heavy_first.arm, 1);
        let heavy_second = minimise(
            &margins,
            &[0, 0],
            &[1.0, 3.0],
            ImbalanceMeasure::Variance,
            1.0,
            &[1, 1],
            0.0,
        );
        assert_eq!(heavy_second.arm, 0);
    }

    #[test]
    fn three_arm_ties_share_p() {
        let mut margins = Margins::new(&[1], 3);
        margins.record(&[0], 0);
        let decision = minimise(
            &margins,
            &[0],
            &[1.0],
            ImbalanceMeasure::StandardDeviation,
            0.9,
            &[1, 1, 1],
            0.0,
        );
        assert!((decision.probabilities[0] - 0.1).abs() < 1e-12);
        assert!((decision.probabilities[1] - 0.45).abs() < 1e-12);
        assert!((decision.probabilities[2] - 0.45).abs() < 1e-12);
    }
}
