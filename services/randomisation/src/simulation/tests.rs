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
