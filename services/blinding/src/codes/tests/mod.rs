use std::collections::HashSet;

use equipoise_stream::MasterSeed;
use equipoise_trial::{Arm, CodeFormat, parse_code_format};

use super::*;

mod stats;

use stats::{chi_square, chi_square_p_value};

/// Each fixed-seed statistical test must pass at this level. A test over
/// several character positions holds the whole family to it (Bonferroni),
/// since "no position differs" is one claim.
const ALPHA: f64 = 0.001;

fn seed() -> MasterSeed {
    MasterSeed([7u8; 32])
}

fn format(source: &str) -> CodeFormat {
    parse_code_format(source).expect("valid code format")
}

fn arms(ratios: &[(&str, u32)]) -> Vec<Arm> {
    ratios
        .iter()
        .map(|(id, ratio)| Arm {
            id: (*id).to_owned(),
            label: format!("arm {id}"),
            ratio: *ratio,
            active: *id != "placebo",
        })
        .collect()
}

fn pools(format_source: &str, ratios: &[(&str, u32)], size: u32) -> Vec<CodePool> {
    generate_pools(&seed(), &format(format_source), &arms(ratios), size).expect("pools")
}

#[test]
fn golden_first_codes() {
    let pools = pools("R-{6 random base32}", &[("active", 1), ("placebo", 1)], 10);
    let firsts: Vec<(&str, Vec<&str>)> = pools
        .iter()
        .map(|pool| {
            let codes = pool.codes[..3].iter().map(String::as_str).collect();
            (pool.arm_id.as_str(), codes)
        })
        .collect();
    assert_eq!(
        firsts,
        [
            ("active", vec!["R-QWA2EY", "R-FDAZ0D", "R-4B64GG"]),
            ("placebo", vec!["R-3MCCMM", "R-PXFGZ5", "R-TZ00Y6"]),
        ]
    );
}

#[test]
fn same_seed_same_pools_and_another_seed_others() {
    let ratios = [("active", 1), ("placebo", 1)];
    let once = pools("R-{6 random base32}", &ratios, 100);
    assert_eq!(once, pools("R-{6 random base32}", &ratios, 100));
    let other = generate_pools(
        &MasterSeed([8u8; 32]),
        &format("R-{6 random base32}"),
        &arms(&ratios),
        100,
    )
    .expect("pools");
    assert_ne!(once, other);
}

#[test]
fn the_set_of_codes_does_not_depend_on_the_arms() {
    // Codes are drawn before arms are known: any split of the same total
    // draws exactly the same codes.
    let source = "{8 random base32}";
    let even = all_codes(&pools(source, &[("active", 1), ("placebo", 1)], 600));
    let uneven = all_codes(&pools(source, &[("b", 2), ("a", 1)], 600));
    let three = all_codes(&pools(source, &[("x", 1), ("y", 4), ("z", 1)], 600));
    assert_eq!(even, uneven);
    assert_eq!(even, three);
}

fn all_codes(pools: &[CodePool]) -> HashSet<String> {
    pools.iter().flat_map(|p| p.codes.iter().cloned()).collect()
}

#[test]
fn codes_are_unique_across_arms_and_match_the_format() {
    let source = "KIT-{2 random digits}{4 random alphanumeric}";
    let pools = pools(source, &[("active", 1), ("placebo", 1)], 5_000);
    let codes: Vec<&String> = pools.iter().flat_map(|p| &p.codes).collect();
    assert_eq!(codes.len(), 5_000);
    assert_eq!(codes.iter().collect::<HashSet<_>>().len(), 5_000);
    let format = format(source);
    assert!(codes.iter().all(|c| matches_format(&format, c)));
    assert!(codes.iter().all(|c| c.len() == code_length(&format)));
}

#[test]
fn pools_follow_a_two_to_one_ratio_exactly() {
    let pools = pools("{8 random base32}", &[("active", 2), ("placebo", 1)], 900);
    let sizes: Vec<(&str, usize)> = pools
        .iter()
        .map(|p| (p.arm_id.as_str(), p.codes.len()))
        .collect();
    assert_eq!(sizes, [("active", 600), ("placebo", 300)]);
}

/// For every character position, the arm × character table: each must look
/// like independence at the fixed seed.
fn position_statistics(pools: &[CodePool], length: usize) -> Vec<(usize, f64, u32, f64)> {
    (0..length)
        .filter_map(|position| {
            let table: Vec<Vec<u64>> = pools
                .iter()
                .map(|pool| character_counts(&pool.codes, position))
                .collect();
            let (statistic, df) = chi_square(&table);
            // A literal position has one character: nothing to test.
            (df > 0).then(|| (position, statistic, df, chi_square_p_value(statistic, df)))
        })
        .collect()
}

fn character_counts(codes: &[String], position: usize) -> Vec<u64> {
    let mut counts = vec![0u64; 128];
    for code in codes {
        counts[usize::from(code.as_bytes()[position])] += 1;
    }
    counts
}

fn assert_independent(label: &str, statistics: &[(usize, f64, u32, f64)]) {
    let per_position = ALPHA / statistics.len() as f64;
    for (position, statistic, df, p) in statistics {
        eprintln!("{label}: position {position}: chi2 = {statistic:.2}, df = {df}, p = {p:.4}");
        assert!(
            *p > per_position,
            "{label}: position {position} depends on the arm"
        );
    }
}

fn positions_dependent_on_arm(statistics: &[(usize, f64, u32, f64)]) -> Vec<usize> {
    let per_position = ALPHA / statistics.len() as f64;
    statistics
        .iter()
        .filter(|(_, _, _, p)| *p <= per_position)
        .map(|(position, ..)| *position)
        .collect()
}

#[test]
fn the_position_test_catches_a_small_leak() {
    // A generator that wrote '0' at position 4 of one code in 20 of one arm
    // only: the test must see it, and only there.
    let source = "R-{6 random base32}";
    let mut pools = pools(source, &[("active", 1), ("placebo", 1)], 10_000);
    for code in pools[0].codes.iter_mut().step_by(20) {
        code.replace_range(4..5, "0");
    }
    let statistics = position_statistics(&pools, code_length(&format(source)));
    assert_eq!(positions_dependent_on_arm(&statistics), [4]);
}

#[test]
fn every_character_position_is_independent_of_the_arm() {
    let source = "R-{6 random base32}";
    let pools = pools(source, &[("active", 1), ("placebo", 1)], 10_000);
    let statistics = position_statistics(&pools, code_length(&format(source)));
    assert_eq!(statistics.len(), 6);
    assert_independent("1:1 base32", &statistics);
}

#[test]
fn every_character_position_is_independent_of_the_arm_with_unequal_ratios() {
    let source = "T{2 random digits}-{6 random alphanumeric}";
    let ratios = [("high", 2), ("low", 1), ("placebo", 1)];
    let pools = pools(source, &ratios, 12_000);
    let statistics = position_statistics(&pools, code_length(&format(source)));
    assert_eq!(statistics.len(), 8);
    assert_independent("2:1:1 digits+alphanumeric", &statistics);
}

/// Where each code falls in sorted (equally, numeric) order, by tenths.
fn value_deciles(pools: &[CodePool]) -> std::collections::HashMap<String, usize> {
    let mut sorted: Vec<&String> = pools.iter().flat_map(|p| &p.codes).collect();
    sorted.sort();
    let total = sorted.len();
    sorted
        .into_iter()
        .enumerate()
        .map(|(rank, code)| (code.clone(), rank * 10 / total))
        .collect()
}

#[test]
fn sorted_order_of_codes_is_independent_of_the_arm() {
    let pools = pools(
        "R-{6 random base32}",
        &[("active", 1), ("placebo", 1)],
        10_000,
    );
    let deciles = value_deciles(&pools);
    let table: Vec<Vec<u64>> = pools
        .iter()
        .map(|pool| {
            let mut counts = vec![0u64; 10];
            for code in &pool.codes {
                counts[deciles[code]] += 1;
            }
            counts
        })
        .collect();
    let (statistic, df) = chi_square(&table);
    let p = chi_square_p_value(statistic, df);
    eprintln!("arm x value decile: chi2 = {statistic:.2}, df = {df}, p = {p:.4}");
    assert!(p > ALPHA);

    let z = runs_z(&arm_sequence_in_sorted_order(&pools));
    eprintln!("runs test on arms in sorted order: z = {z:.3}");
    // Two-sided, alpha = 0.001.
    assert!(z.abs() < 3.29);
}

fn arm_sequence_in_sorted_order(pools: &[CodePool]) -> Vec<usize> {
    let mut labelled: Vec<(&String, usize)> = pools
        .iter()
        .enumerate()
        .flat_map(|(arm, pool)| pool.codes.iter().map(move |code| (code, arm)))
        .collect();
    labelled.sort();
    labelled.into_iter().map(|(_, arm)| arm).collect()
}

/// Wald–Wolfowitz runs test for a two-valued sequence: the standardised
/// number of runs.
fn runs_z(sequence: &[usize]) -> f64 {
    let ones = sequence.iter().filter(|a| **a == 1).count() as f64;
    let zeros = sequence.len() as f64 - ones;
    let n = ones + zeros;
    let runs = 1 + sequence.windows(2).filter(|w| w[0] != w[1]).count();
    let mean = 2.0 * ones * zeros / n + 1.0;
    let variance = (mean - 1.0) * (mean - 2.0) / (n - 1.0);
    (runs as f64 - mean) / variance.sqrt()
}

#[test]
fn issue_order_is_independent_of_the_arm() {
    // The joint distribution of (tenth of the issue order, tenth of the code
    // value) must be the same in every arm.
    let pools = pools(
        "R-{6 random base32}",
        &[("active", 1), ("placebo", 1)],
        10_000,
    );
    let deciles = value_deciles(&pools);
    let table: Vec<Vec<u64>> = pools
        .iter()
        .map(|pool| {
            let mut counts = vec![0u64; 100];
            let size = pool.codes.len();
            for (position, code) in pool.codes.iter().enumerate() {
                counts[(position * 10 / size) * 10 + deciles[code]] += 1;
            }
            counts
        })
        .collect();
    let (statistic, df) = chi_square(&table);
    let p = chi_square_p_value(statistic, df);
    eprintln!("arm x (issue decile, value decile): chi2 = {statistic:.2}, df = {df}, p = {p:.4}");
    assert!(p > ALPHA);
}

#[test]
fn issue_order_is_not_the_order_of_value() {
    let pools = pools(
        "R-{6 random base32}",
        &[("active", 1), ("placebo", 1)],
        2_000,
    );
    for pool in &pools {
        let mut sorted = pool.codes.clone();
        sorted.sort();
        assert_ne!(pool.codes, sorted);
    }
}

fn generation_error(ratios: &[(&str, u32)], size: u32) -> GenerationError {
    generate_pools(&seed(), &format("R-{6 random base32}"), &arms(ratios), size)
        .expect_err("refused")
}

#[test]
fn impossible_requests_are_refused_with_the_reason() {
    let two = [("active", 1), ("placebo", 1)];
    assert_eq!(generation_error(&[], 10), GenerationError::NoArms);
    assert_eq!(generation_error(&two, 0), GenerationError::ZeroPoolSize);
    assert_eq!(
        generation_error(&two, MAX_POOL_SIZE + 2),
        GenerationError::PoolTooLarge(MAX_POOL_SIZE + 2)
    );
    assert_eq!(
        generation_error(&[("active", 1), ("placebo", 0)], 10),
        GenerationError::ZeroRatio("placebo".into())
    );
    assert_eq!(
        generation_error(&[("active", 1), ("active", 1)], 10),
        GenerationError::DuplicateArm("active".into())
    );
    assert_eq!(
        generation_error(&[("active", 2), ("placebo", 1)], 10),
        GenerationError::NotMultipleOfRatios {
            pool_size: 10,
            ratio_total: 3
        }
    );
}

#[test]
fn a_pool_too_large_for_the_code_space_is_refused() {
    // 6 base32 characters are 30 bits: about 107,000 codes at 10,000 unused
    // codes per code.
    let allowed = generation_error_for_space(100_000);
    assert!(allowed.is_none());
    let refused = generation_error_for_space(110_000).expect("refused");
    assert!(matches!(
        refused,
        GenerationError::CodeSpaceTooSmall {
            pool_size: 110_000,
            ..
        }
    ));
    assert!(refused.to_string().contains("R-{6 random base32}"));
}

fn generation_error_for_space(size: u32) -> Option<GenerationError> {
    let format = format("R-{6 random base32}");
    generate_pools(&seed(), &format, &arms(&[("a", 1), ("b", 1)]), size).err()
}

fn row(arm_id: &str, code: &str) -> UploadedCode {
    UploadedCode {
        arm_id: arm_id.into(),
        code: code.into(),
    }
}

#[test]
fn a_valid_upload_gives_pools_in_upload_order() {
    let rows = [
        row("placebo", "R-AAAAAA"),
        row("active", "R-ZZZZZZ"),
        row("active", "R-012345"),
    ];
    let pools = validate_upload(
        &format("R-{6 random base32}"),
        &arms(&[("active", 1), ("placebo", 1)]),
        &rows,
    )
    .expect("valid");
    assert_eq!(pools[0].codes, ["R-ZZZZZZ", "R-012345"]);
    assert_eq!(pools[1].codes, ["R-AAAAAA"]);
}

#[test]
fn every_upload_problem_is_reported_with_its_row() {
    let rows = [
        row("active", "R-AAAAAA"),
        row("active", "R-AAAAAI"),  // I is not Crockford base32
        row("placebo", "R-AAAAAA"), // the same code in another arm
        row("sham", "R-BBBBBB"),
        row("active", "r-cccccc"),  // lower case
        row("active", "R-CCCCCCC"), // too long
    ];
    let problems = validate_upload(
        &format("R-{6 random base32}"),
        &arms(&[("active", 1), ("placebo", 1), ("low", 1)]),
        &rows,
    )
    .expect_err("problems");
    let messages: Vec<String> = problems.0.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "row 2: code 'R-AAAAAI' does not match the format 'R-{6 random base32}'",
            "row 3: code 'R-AAAAAA' already appears in row 1",
            "row 4: arm 'sham' is not an arm of the trial",
            "row 5: code 'r-cccccc' does not match the format 'R-{6 random base32}'",
            "row 6: code 'R-CCCCCCC' does not match the format 'R-{6 random base32}'",
            "arm 'placebo' has no codes",
            "arm 'low' has no codes",
        ]
    );
}

#[test]
fn an_upload_too_large_for_its_format_is_refused() {
    let rows: Vec<UploadedCode> = (0..20)
        .map(|n| row(if n % 2 == 0 { "a" } else { "b" }, &format!("{n:02}")))
        .collect();
    let problems = validate_upload(
        &format("{3 random digits}"),
        &arms(&[("a", 1), ("b", 1)]),
        &rows,
    )
    .expect_err("too many");
    assert!(matches!(
        problems.0.as_slice(),
        [UploadProblem::FormatMismatch { .. }, ..]
    ));
    let rows: Vec<UploadedCode> = (0..20)
        .map(|n| row(if n % 2 == 0 { "a" } else { "b" }, &format!("{n:03}")))
        .collect();
    let problems = validate_upload(
        &format("{3 random digits}"),
        &arms(&[("a", 1), ("b", 1)]),
        &rows,
    )
    .expect_err("too many");
    assert_eq!(
        problems.0,
        [UploadProblem::TooManyForFormat {
            count: 20,
            format: "{3 random digits}".into()
        }]
    );
}

fn level(pool_size: u32, issued: u32, remaining: u32) -> PoolLevel {
    LowPoolRule::default().level(PoolCounts {
        pool_size,
        issued,
        remaining,
    })
}

#[test]
fn low_pools_warn_before_they_run_out() {
    // Default: warn at 10 % of the pool or 20 codes, whichever is larger.
    assert_eq!(level(1_000, 0, 1_000), PoolLevel::Sufficient);
    assert_eq!(level(1_000, 899, 101), PoolLevel::Sufficient);
    assert_eq!(level(1_000, 900, 100), PoolLevel::Low);
    assert_eq!(level(100, 79, 21), PoolLevel::Sufficient);
    assert_eq!(level(100, 80, 20), PoolLevel::Low);
    assert_eq!(level(1_000, 999, 1), PoolLevel::Low);
    assert_eq!(level(1_000, 1_000, 0), PoolLevel::Empty);
    // Withdrawn codes count: what is left decides.
    assert_eq!(level(1_000, 500, 0), PoolLevel::Empty);
}

#[test]
fn a_pool_smaller_than_the_absolute_threshold_warns_at_once() {
    assert_eq!(level(10, 0, 10), PoolLevel::Low);
    let never_by_count = LowPoolRule {
        warn_at_fraction: 0.5,
        warn_at_count: 0,
    };
    let counts = |remaining| PoolCounts {
        pool_size: 10,
        issued: 10 - remaining,
        remaining,
    };
    assert_eq!(never_by_count.level(counts(6)), PoolLevel::Sufficient);
    assert_eq!(never_by_count.level(counts(5)), PoolLevel::Low);
}

#[test]
fn a_top_up_may_leave_arms_out_but_not_break_the_format() {
    let source = "R-{6 random base32}";
    let arms = arms(&[("active", 1), ("placebo", 1), ("low", 1)]);
    let rows = [row("placebo", "R-AAAAAA"), row("placebo", "R-BBBBBB")];
    let pools = validate_top_up(&format(source), &arms, &rows, 3).expect("valid");
    assert_eq!(
        pools,
        [CodePool {
            arm_id: "placebo".into(),
            codes: vec!["R-AAAAAA".into(), "R-BBBBBB".into()],
        }]
    );
    let rows = [row("placebo", "R-AAAAAA"), row("sham", "R-AAAAAA")];
    let problems = validate_top_up(&format(source), &arms, &rows, 3).expect_err("problems");
    let messages: Vec<String> = problems.0.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        ["row 2: code 'R-AAAAAA' already appears in row 1"]
    );
}

#[test]
fn a_top_up_counts_the_stored_codes_against_the_format() {
    // About 100 codes fit six digits at one guess in 10,000.
    let rows: Vec<UploadedCode> = (0..10).map(|n| row("a", &format!("{n:06}"))).collect();
    let arms = arms(&[("a", 1), ("b", 1)]);
    let format = format("{6 random digits}");
    assert!(validate_top_up(&format, &arms, &rows, 0).is_ok());
    let problems = validate_top_up(&format, &arms, &rows, 95).expect_err("too many");
    assert!(matches!(
        problems.0.as_slice(),
        [UploadProblem::TooManyForFormat { count: 105, .. }]
    ));
}
