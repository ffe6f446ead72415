//! Exact operating characteristics of the two-arm procedures, computed
//! here independently of the engine: each procedure is restated from the
//! literature as P(A | n_A, n_B), and a forward pass over the Markov chain
//! of (n_A, n_B) gives the exact expectations for n subjects. The engine
//! must match them in two ways:
//! - its conditional probabilities, exactly (to rounding), along seeded paths;
//! - its simulated metrics, within tolerances of several standard errors.

use super::*;
use crate::methods::{SequenceMethod, StratumSequence};

/// P(arm A) after n_A and n_B assignments, as the literature states it.
type Rule = Box<dyn Fn(u32, u32) -> f64>;

struct Procedure {
    yaml: &'static str,
    rule: Rule,
}

fn fair() -> f64 {
    0.5
}

/// The procedures, for n = `n` subjects (the whole-sample ones use n).
fn procedures() -> Vec<Procedure> {
    vec![
        Procedure {
            // Random allocation rule, one block of 50: A with the share of
            // A's places left (Rosenberger & Lachin 3.3).
            yaml: "  kind: random_allocation_rule\n  sample_size: 50",
            rule: Box::new(|a, b| f64::from(25 - a) / f64::from(50 - a - b)),
        },
        Procedure {
            // Truncated binomial, block 50: fair until one arm has 25.
            yaml: "  kind: truncated_binomial\n  sample_size: 50",
            rule: Box::new(|a, b| match (a >= 25, b >= 25) {
                (true, _) => 0.0,
                (_, true) => 1.0,
                _ => fair(),
            }),
        },
        Procedure {
            // Chen (1999): Efron's p inside |D| < b, forced at the bound.
            yaml: "  kind: chen_biased_coin\n  p: 0.75\n  bound: 3",
            rule: Box::new(|a, b| {
                let d = i64::from(a) - i64::from(b);
                match d {
                    3.. => 0.0,
                    ..=-3 => 1.0,
                    1..=2 => 0.25,
                    -2..=-1 => 0.75,
                    _ => fair(),
                }
            }),
        },
        Procedure {
            // ABCD (Baldi Antognini & Giovagnoli 2004), a = 2: the lagging
            // arm with |D|^a / (|D|^a + 1).
            yaml: "  kind: adjustable_biased_coin\n  a: 2",
            rule: Box::new(|a, b| {
                let d = f64::from(a) - f64::from(b);
                let lagging = d * d / (d * d + 1.0);
                if d > 0.0 {
                    1.0 - lagging
                } else if d < 0.0 {
                    lagging
                } else {
                    fair()
                }
            }),
        },
        Procedure {
            // Smith's GBCD, rho = 2: n_B² / (n_A² + n_B²).
            yaml: "  kind: generalised_biased_coin\n  rho: 2",
            rule: Box::new(|a, b| {
                if a + b == 0 {
                    return fair();
                }
                let (a, b) = (f64::from(a), f64::from(b));
                b * b / (a * a + b * b)
            }),
        },
        Procedure {
            // Wei's UD(1, 2): (1 + 2 n_B) / (2 + 2n).
            yaml: "  kind: urn\n  alpha: 1\n  beta: 2",
            rule: Box::new(|a, b| (1.0 + 2.0 * f64::from(b)) / (2.0 + 2.0 * f64::from(a + b))),
        },
    ]
}

/// Exact expectations over n allocations.
#[derive(Debug)]
struct Exact {
    convergence_guess_rate: f64,
    proportional_guess_rate: f64,
    deterministic_rate: f64,
    balanced_proportion: f64,
    mean_abs_final: f64,
    rms_final: f64,
    /// P(|D_n| = k) for k = 0..=n.
    final_distribution: Vec<f64>,
}

/// Forward pass: `mass[a]` is P(n_A = a) after `step` assignments.
fn exact(rule: &Rule, n: u32) -> Exact {
    let mut mass = vec![1.0];
    let (mut guess, mut proportional, mut forced, mut balanced) = (0.0, 0.0, 0.0, 0.0);
    for step in 0..n {
        let mut next = vec![0.0; mass.len() + 1];
        for (a, weight) in mass.iter().enumerate() {
            // Unreachable states may lie outside a rule's domain.
            if *weight == 0.0 {
                continue;
            }
            let a = a as u32;
            let b = step - a;
            let p = rule(a, b);
            guess += weight
                * match a.cmp(&b) {
                    std::cmp::Ordering::Less => p,
                    std::cmp::Ordering::Greater => 1.0 - p,
                    std::cmp::Ordering::Equal => 0.5,
                };
            proportional += weight * (p * p + (1.0 - p) * (1.0 - p));
            if p <= 1e-12 || p >= 1.0 - 1e-12 {
                forced += weight;
            }
            next[a as usize + 1] += weight * p;
            next[a as usize] += weight * (1.0 - p);
        }
        mass = next;
        // Balanced after step + 1 assignments: n_A = (step + 1) / 2.
        let assigned = step as usize + 1;
        if assigned.is_multiple_of(2) {
            balanced += mass[assigned / 2];
        }
    }
    let mut final_distribution = vec![0.0; n as usize + 1];
    let (mut mean_abs, mut squares) = (0.0, 0.0);
    for (a, weight) in mass.iter().enumerate() {
        let d = (2 * a as i64 - i64::from(n)).unsigned_abs();
        final_distribution[d as usize] += weight;
        mean_abs += weight * d as f64;
        squares += weight * (d * d) as f64;
    }
    let n = f64::from(n);
    Exact {
        convergence_guess_rate: guess / n,
        proportional_guess_rate: proportional / n,
        deterministic_rate: forced / n,
        balanced_proportion: balanced / n,
        mean_abs_final: mean_abs,
        rms_final: squares.sqrt(),
        final_distribution,
    }
}

/// The engine's conditional probabilities are the literature's, at every
/// step of seeded paths longer than one block.
#[test]
fn engine_probabilities_are_the_literature_rules() {
    for procedure in procedures() {
        let definition = design(procedure.yaml, (1, 1), "");
        let method = SequenceMethod::from_spec(&definition.method).expect("a sequence method");
        for seed in 0..20 {
            let mut sequence = StratumSequence::new(
                &method,
                &[1, 1],
                equipoise_stream::simulation_stream(seed, "exact"),
            );
            let mut counts = [0u32; 2];
            for step in 0..50 {
                let slot = sequence.next_slot();
                let expected = (procedure.rule)(counts[0], counts[1]);
                assert!(
                    (slot.probabilities[0] - expected).abs() < 1e-12,
                    "{} step {step} at {counts:?}: engine {} literature {expected}",
                    procedure.yaml,
                    slot.probabilities[0]
                );
                counts[slot.arm] += 1;
            }
        }
    }
}

/// Simulation through the engine matches the exact Markov-chain values.
/// 4000 trials of 50: the guess rates' standard errors are below 0.002
/// (200 000 allocations, correlated within trials), E|D| and √E[D²] below
/// 0.07, the balanced proportion below 0.003.
#[test]
fn simulated_metrics_match_the_exact_chain() {
    const N: u32 = 50;
    for procedure in procedures() {
        let definition = design(procedure.yaml, (1, 1), "");
        let exact = exact(&procedure.rule, N);
        let report = run(&definition, 4_000, N);
        let overall = &report.imbalance[0];
        let checks = [
            (
                "convergence guess",
                report.correct_guess_rate_stratum,
                exact.convergence_guess_rate,
                0.01,
            ),
            (
                "proportional guess",
                report.proportional_guess_rate,
                exact.proportional_guess_rate,
                0.01,
            ),
            (
                "deterministic",
                report.deterministic_rate,
                exact.deterministic_rate,
                0.01,
            ),
            (
                "balanced",
                overall.balanced_proportion,
                exact.balanced_proportion,
                0.012,
            ),
            ("E|D|", overall.mean_final, exact.mean_abs_final, 0.25),
            ("sqrt E[D^2]", overall.rms_final, exact.rms_final, 0.25),
        ];
        for (name, simulated, expected, tolerance) in checks {
            assert!(
                (simulated - expected).abs() < tolerance,
                "{}: {name} simulated {simulated}, exact {expected}",
                procedure.yaml
            );
        }
        // The histogram: each value's share within 0.025 (4000 trials give
        // a standard error of at most 0.008).
        let total: u64 = report
            .final_imbalance_distribution
            .iter()
            .map(|b| b.trials)
            .sum();
        assert_eq!(total, 4_000);
        for (d, probability) in exact.final_distribution.iter().enumerate() {
            let observed = report
                .final_imbalance_distribution
                .iter()
                .find(|b| (b.imbalance - d as f64).abs() < 1e-9)
                .map_or(0.0, |b| b.trials as f64 / 4_000.0);
            assert!(
                (observed - probability).abs() < 0.025,
                "{}: P(|D| = {d}) simulated {observed}, exact {probability}",
                procedure.yaml
            );
        }
    }
}

/// Closed forms the chain itself must reproduce, so the chain is checked too.
#[test]
fn the_chain_reproduces_known_closed_forms() {
    // Complete randomisation: E[D_n²] = n.
    let coin: Rule = Box::new(|_, _| 0.5);
    let cr = exact(&coin, 50);
    assert!((cr.rms_final - 50f64.sqrt()).abs() < 1e-9);
    assert!((cr.convergence_guess_rate - 0.5).abs() < 1e-12);
    // Random allocation rule of n = 2m: always balanced at the end, and
    // m + 2^(2m-1)/C(2m, m) - 1/2 expected correct guesses (17/6 for m = 2).
    let rar4: Rule = Box::new(|a, b| f64::from(2 - a) / f64::from(4 - a - b));
    let small = exact(&rar4, 4);
    assert!((small.convergence_guess_rate * 4.0 - 17.0 / 6.0).abs() < 1e-12);
    assert_eq!(small.final_distribution[0], 1.0);
    // Efron p = 2/3: 5/8 in the long run.
    let efron: Rule = Box::new(|a, b| match a.cmp(&b) {
        std::cmp::Ordering::Less => 2.0 / 3.0,
        std::cmp::Ordering::Greater => 1.0 / 3.0,
        std::cmp::Ordering::Equal => 0.5,
    });
    let efron = exact(&efron, 2_000);
    assert!((efron.convergence_guess_rate - 0.625).abs() < 0.002);
}
