//! Statistical checks against the closed forms of docs/architecture.md, "Allocation". Each tolerance
//! is several standard errors wide for the stated number of allocations, so
//! a correct engine fails with negligible probability (the seeds are fixed,
//! so the outcome is in fact deterministic).

use super::*;
use equipoise_trial::parse_definition;

/// A one-site, unstratified two-arm design with `method` as YAML.
fn design(method: &str, ratio: (u32, u32), extra: &str) -> TrialDefinition {
    let yaml = format!(
        r#"
id: SIM
version: 1
title: Simulation check
sponsor_time_zone: UTC
arms:
  - {{ id: A, label: "A", ratio: {}, active: true }}
  - {{ id: B, label: "B", ratio: {}, active: false }}
sites:
  - {{ id: S1 }}
  - {{ id: S2 }}
{extra}
method:
{method}
blinding: {{ mode: treatment_codes }}
unblinding: {{ emergency_roles: [emergency_desk], reauth_max_age_minutes: 10 }}
safety: {{ reference_safety_information: RSI-1, safety_window_months: 12 }}
"#,
        ratio.0, ratio.1
    );
    match parse_definition(&yaml) {
        Ok(definition) => definition,
        Err(problems) => panic!("test design is invalid: {:#?}", problems.0),
    }
}

fn run(definition: &TrialDefinition, trials: u32, subjects: u32) -> SimulationReport {
    let spec = SimulationSpec {
        trials,
        subjects_per_trial: subjects,
        seed: 20_261_121,
        level_weights: LevelWeights::new(),
        bias: BiasSpec::default(),
        path_points: 0,
    };
    simulate(definition, &spec, 50_000_000, &mut |_| {}).expect("simulates")
}

#[test]
fn permuted_blocks_of_four_match_the_closed_forms() {
    let definition = design("  kind: permuted_blocks\n  block_sizes: [4]", (1, 1), "");
    let report = run(&definition, 500, 400);
    // 100 blocks per trial: m + 2^(2m-1)/C(2m,m) - 1/2 = 17/6 correct guesses
    // per block for m = 2. 50,000 blocks give a standard error near 0.003.
    let per_block = report.mean_correct_guesses_per_trial / 100.0;
    assert!(
        (per_block - 17.0 / 6.0).abs() < 0.02,
        "correct guesses per block {per_block}"
    );
    // 1/(m+1) = 1/3 of assignments are forced.
    assert!(
        (report.deterministic_rate - 1.0 / 3.0).abs() < 0.01,
        "{}",
        report.deterministic_rate
    );
    // Blocks always close: final imbalance is 0 after a whole number of blocks.
    assert_eq!(report.imbalance[0].mean_final, 0.0);
    assert!(report.imbalance[0].worst_max <= 2.0);
}

#[test]
fn efron_biased_coin_two_thirds_guess_rate_is_five_eighths() {
    let definition = design("  kind: biased_coin\n  p: 0.6666666666666666", (1, 1), "");
    let report = run(&definition, 50, 2_000);
    assert!(
        (report.correct_guess_rate_stratum - 0.625).abs() < 0.01,
        "{}",
        report.correct_guess_rate_stratum
    );
}

#[test]
fn big_stick_bound_three_guess_rate_is_seven_twelfths() {
    let definition = design("  kind: big_stick\n  bound: 3", (1, 1), "");
    let report = run(&definition, 50, 2_000);
    let expected = 0.5 + 1.0 / (4.0 * 3.0);
    assert!(
        (report.correct_guess_rate_stratum - expected).abs() < 0.01,
        "{}",
        report.correct_guess_rate_stratum
    );
    assert!(report.imbalance[0].worst_max <= 3.0);
}

#[test]
fn maximal_procedure_respects_its_bound() {
    let definition = design(
        "  kind: maximal_procedure\n  bound: 2\n  sequence_length: 10",
        (1, 1),
        "",
    );
    let report = run(&definition, 200, 100);
    assert!(report.imbalance[0].worst_max <= 2.0);
    assert_eq!(report.imbalance[0].mean_final, 0.0);
}

#[test]
fn minimisation_keeps_three_factors_balanced_and_is_reproducible() {
    let covariates = r#"
covariates:
  - { id: sex, type: enum, values: [female, male] }
  - { id: smoker, type: boolean }
  - { id: band, type: enum, values: [low, mid, high] }
stratification:
  factors:
    - { id: site }
    - { id: sex }
    - { id: band }
"#;
    let definition = design(
        "  kind: minimisation\n  factors: { site: 1, sex: 1, band: 2 }\n  imbalance: range\n  p: 0.8",
        (1, 1),
        covariates,
    );
    let report = run(&definition, 300, 114);
    for row in report.imbalance.iter().filter(|r| r.scope != "stratum") {
        assert!(row.mean_final < 2.5, "{row:?}");
    }
    assert_eq!(run(&definition, 20, 114), run(&definition, 20, 114));
    let other_seed = SimulationSpec {
        trials: 20,
        subjects_per_trial: 114,
        seed: 7,
        level_weights: LevelWeights::new(),
        bias: BiasSpec::default(),
        path_points: 0,
    };
    assert_ne!(
        simulate(&definition, &other_seed, 1_000_000, &mut |_| {})
            .expect("simulates")
            .imbalance,
        run(&definition, 20, 114).imbalance
    );
}

#[test]
fn unequal_ratios_reach_their_target() {
    let definition = design("  kind: permuted_blocks\n  block_sizes: [3, 6]", (2, 1), "");
    let report = run(&definition, 100, 300);
    // 2:1 blocks close every block, so ratio-scaled imbalance ends at most
    // one block's worth of scaled counts away from zero.
    assert!(
        report.imbalance[0].worst_max <= 4.0,
        "{:?}",
        report.imbalance[0]
    );
}

#[test]
fn absurd_or_malformed_specs_are_refused_before_running() {
    let definition = design("  kind: permuted_blocks\n  block_sizes: [4]", (1, 1), "");
    let spec = |trials, subjects, weights: LevelWeights| SimulationSpec {
        trials,
        subjects_per_trial: subjects,
        seed: 1,
        level_weights: weights,
        bias: BiasSpec::default(),
        path_points: 0,
    };
    let mut ran = 0;
    let mut count = |_| ran += 1;
    let too_big = simulate(
        &definition,
        &spec(1_000_000, 1_000_000, LevelWeights::new()),
        20_000_000,
        &mut count,
    );
    assert!(
        matches!(too_big, Err(SimulationError::InvalidSpec { field, .. }) if field == "trials")
    );
    let none = simulate(
        &definition,
        &spec(0, 10, LevelWeights::new()),
        20_000_000,
        &mut count,
    );
    assert!(matches!(none, Err(SimulationError::InvalidSpec { .. })));
    let weights = LevelWeights::from([(
        "colour".to_owned(),
        BTreeMap::from([("red".to_owned(), 1.0)]),
    )]);
    let unknown = simulate(&definition, &spec(10, 10, weights), 20_000_000, &mut count);
    assert!(
        matches!(unknown, Err(SimulationError::InvalidSpec { field, .. }) if field == "level_weights.colour")
    );
    assert_eq!(ran, 0);
}

fn run_with_bias(
    definition: &TrialDefinition,
    trials: u32,
    subjects: u32,
    bias: BiasSpec,
) -> SimulationReport {
    let spec = SimulationSpec {
        trials,
        subjects_per_trial: subjects,
        seed: 20_261_201,
        level_weights: LevelWeights::new(),
        bias,
        path_points: 0,
    };
    simulate(definition, &spec, 50_000_000, &mut |_| {}).expect("simulates")
}

fn selection(eta: f64) -> BiasSpec {
    BiasSpec {
        selection_eta: Some(eta),
        ..BiasSpec::default()
    }
}

fn trend(theta: f64) -> BiasSpec {
    BiasSpec {
        time_trend: Some(theta),
        ..BiasSpec::default()
    }
}

/// With no bias, the t-test rejects at its nominal level; 4000 trials give a
/// standard error of 0.0034 at 0.05.
#[test]
fn bias_assessments_hold_their_level_without_bias() {
    let definition = design("  kind: permuted_blocks\n  block_sizes: [4]", (1, 1), "");
    let both = BiasSpec {
        selection_eta: Some(0.0),
        time_trend: Some(0.0),
        alpha: None,
    };
    let report = run_with_bias(&definition, 4_000, 40, both);
    for test in [&report.selection_bias, &report.chronological_bias] {
        let test = test.as_ref().expect("assessed");
        assert_eq!(test.trials_tested, 4_000);
        assert_eq!(test.nominal_level, 0.05);
        assert!((test.rejection_rate - 0.05).abs() < 0.012, "{test:?}");
    }
}

/// Blackwell–Hodges: small blocks let a convergence guesser bias the
/// comparison; a fair coin (the generalised biased coin with rho = 0) gives
/// the guess nothing to work with, so its level holds.
#[test]
fn selection_bias_inflates_type_one_error_only_for_predictable_designs() {
    let blocks = design("  kind: permuted_blocks\n  block_sizes: [4]", (1, 1), "");
    let predictable = run_with_bias(&blocks, 2_000, 40, selection(1.0));
    let rate = predictable
        .selection_bias
        .as_ref()
        .map(|t| t.rejection_rate);
    assert!(rate.is_some_and(|r| r > 0.5), "{rate:?}");
    let coin = design("  kind: generalised_biased_coin\n  rho: 0", (1, 1), "");
    let fair = run_with_bias(&coin, 4_000, 40, selection(1.0));
    let rate = fair.selection_bias.as_ref().map(|t| t.rejection_rate);
    assert!(rate.is_some_and(|r| (r - 0.05).abs() < 0.015), "{rate:?}");
}

/// A strong time trend: blocks of 2 keep the arms level in time, so the
/// t-test (whose variance now includes the trend) is conservative; the
/// assessment's responses do not move the allocations.
#[test]
fn chronological_bias_with_a_strong_trend() {
    let pairs = design("  kind: permuted_blocks\n  block_sizes: [2]", (1, 1), "");
    let report = run_with_bias(&pairs, 2_000, 40, trend(5.0));
    let rate = report.chronological_bias.as_ref().map(|t| t.rejection_rate);
    assert!(rate.is_some_and(|r| r < 0.02), "{rate:?}");
    let plain = run_with_bias(&pairs, 50, 40, BiasSpec::default());
    let with_trend = run_with_bias(&pairs, 50, 40, trend(5.0));
    assert_eq!(plain.imbalance, with_trend.imbalance);
}

#[test]
fn bias_parameters_are_checked() {
    let definition = design("  kind: permuted_blocks\n  block_sizes: [4]", (1, 1), "");
    let refused = |bias: BiasSpec| {
        let spec = SimulationSpec {
            trials: 1,
            subjects_per_trial: 4,
            seed: 1,
            level_weights: LevelWeights::new(),
            bias,
            path_points: 0,
        };
        match simulate(&definition, &spec, 1_000, &mut |_| {}) {
            Err(SimulationError::InvalidSpec { field, .. }) => field,
            other => panic!("accepted: {other:?}"),
        }
    };
    assert_eq!(refused(selection(f64::NAN)), "selection_bias");
    assert_eq!(refused(trend(f64::INFINITY)), "time_trend");
    let level = BiasSpec {
        alpha: Some(1.0),
        ..selection(0.5)
    };
    assert_eq!(refused(level), "alpha");
    let tiny = BiasSpec {
        alpha: Some(1e-9),
        ..trend(1.0)
    };
    assert_eq!(refused(tiny), "alpha");
    // Too few subjects for the t-test's degrees of freedom.
    let spec = SimulationSpec {
        trials: 1,
        subjects_per_trial: 2,
        seed: 1,
        level_weights: LevelWeights::new(),
        bias: trend(1.0),
        path_points: 0,
    };
    assert!(matches!(
        simulate(&definition, &spec, 1_000, &mut |_| {}),
        Err(SimulationError::InvalidSpec { field, .. }) if field == "subjects_per_trial"
    ));
}

#[test]
fn the_path_envelope_closes_for_the_random_allocation_rule() {
    let definition = design(
        "  kind: random_allocation_rule\n  sample_size: 40",
        (1, 1),
        "",
    );
    let spec = SimulationSpec {
        trials: 500,
        subjects_per_trial: 40,
        seed: 5,
        level_weights: LevelWeights::new(),
        bias: BiasSpec::default(),
        path_points: 8,
    };
    let report = simulate(&definition, &spec, 1_000_000, &mut |_| {}).expect("simulates");
    let steps: Vec<u32> = report.imbalance_path.iter().map(|p| p.step).collect();
    assert_eq!(steps, [5, 10, 15, 20, 25, 30, 35, 40]);
    let last = report.imbalance_path.last().expect("a last point");
    assert_eq!((last.p05, last.p95), (0.0, 0.0));
    let middle = &report.imbalance_path[3];
    assert!(middle.p05 < 0.0 && middle.p95 > 0.0, "{middle:?}");
    assert!(middle.p05 <= middle.p25 && middle.p25 <= middle.p50);
}

mod exact;

/// The response model itself, on a scripted sequence: the selection shift
/// follows the guess (+η for the first arm, −η for the second, none on a
/// tie) and the trend is θ·i/n, each over the same noise the stream gives.
#[test]
fn responses_shift_by_the_guess_and_drift_by_theta_i_over_n() {
    let bias = BiasSpec {
        selection_eta: Some(0.5),
        time_trend: Some(2.0),
        alpha: None,
    };
    let mut responses = Responses::new(&bias, 9, 3, 4, f64::INFINITY).expect("requested");
    let script = [
        (1, 0, Some(0)),
        (2, 1, Some(1)),
        (3, 0, None),
        (4, 1, Some(0)),
    ];
    for &(index, arm, guess) in &script {
        responses.record(index, arm, guess);
    }
    let mut noise_stream = simulation_stream(9, "trial/3/responses");
    let mut selection = [0.0; 2];
    let mut chronological = [0.0; 2];
    for &(index, arm, guess) in &script {
        let noise = standard_normal(&mut noise_stream);
        selection[arm] += noise
            + match guess {
                Some(0) => 0.5,
                Some(_) => -0.5,
                None => 0.0,
            };
        chronological[arm] += noise + 2.0 * f64::from(index) / 4.0;
    }
    for arm in 0..2 {
        assert!((responses.selection[arm].sum - selection[arm]).abs() < 1e-12);
        assert!((responses.chronological[arm].sum - chronological[arm]).abs() < 1e-12);
        assert_eq!(responses.selection[arm].n, 2.0);
    }
}
