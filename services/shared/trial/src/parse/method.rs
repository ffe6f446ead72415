//! The allocation method and its parameters.

use super::*;

pub(super) fn read_method(
    top: &Object<'_>,
    arms: &[Arm],
    factors: &[Factor],
    problems: &mut Problems,
) -> Option<MethodSpec> {
    let value = top.required("method", problems)?;
    let keys = &[
        "kind",
        "block_sizes",
        "factors",
        "imbalance",
        "p",
        "bound",
        "sequence_length",
        "warn_remaining",
        "sample_size",
        "a",
        "rho",
        "alpha",
        "beta",
    ];
    let object = Object::new(value, "method", keys, problems)?;
    let kind = object.string("kind", problems)?;
    let allowed: &[&str] = match kind.as_str() {
        "permuted_blocks" => &["kind", "block_sizes"],
        "minimisation" => &["kind", "factors", "imbalance", "p"],
        "biased_coin" => &["kind", "p"],
        "big_stick" => &["kind", "bound"],
        "maximal_procedure" => &["kind", "bound", "sequence_length"],
        "uploaded_list" => &["kind", "warn_remaining"],
        "random_allocation_rule" | "truncated_binomial" => &["kind", "sample_size"],
        "chen_biased_coin" => &["kind", "p", "bound"],
        "adjustable_biased_coin" => &["kind", "a"],
        "generalised_biased_coin" => &["kind", "rho"],
        "urn" => &["kind", "alpha", "beta"],
        other => {
            problems.add(
                "method.kind",
                format!(
                    "unknown method '{other}'; expected permuted_blocks, minimisation, biased_coin, big_stick, maximal_procedure, random_allocation_rule, chen_biased_coin, adjustable_biased_coin, generalised_biased_coin, urn, truncated_binomial or uploaded_list"
                ),
            );
            return None;
        }
    };
    for key in keys
        .iter()
        .filter(|k| !allowed.contains(k) && object.get(k).is_some())
    {
        problems.add(&object.field_path(key), format!("does not apply to {kind}"));
    }
    // Past u32 the arms are refused already; the methods then see no sum
    // any block size or sequence length could be a multiple of.
    let ratio_sum = checked_ratio_sum(arms).unwrap_or(u32::MAX);
    match kind.as_str() {
        "permuted_blocks" => read_blocks(&object, ratio_sum, problems),
        "minimisation" => read_minimisation(&object, arms.len(), factors, problems),
        "uploaded_list" => Some(MethodSpec::UploadedList {
            warn_remaining: object
                .optional_u32("warn_remaining", problems)
                .filter(|w| at_most(*w, MAX_CAP, &object.field_path("warn_remaining"), problems))
                .unwrap_or(5),
        }),
        "random_allocation_rule" => read_sample_size(&object, ratio_sum, problems)
            .map(|sample_size| MethodSpec::RandomAllocationRule { sample_size }),
        "adjustable_biased_coin" | "generalised_biased_coin" | "urn" | "truncated_binomial" => {
            read_equal_two_arm_method(&object, &kind, arms, problems)
        }
        sequential => read_two_arm_method(&object, sequential, arms, ratio_sum, problems),
    }
}

fn read_blocks(object: &Object<'_>, ratio_sum: u32, problems: &mut Problems) -> Option<MethodSpec> {
    let path = object.field_path("block_sizes");
    let mut sizes = Vec::new();
    for (item_path, value) in object.list("block_sizes", true, MAX_BLOCK_SIZES, problems) {
        let Some(size) = crate::decode::as_u32(value, &item_path, problems) else {
            continue;
        };
        if size > 0 && size <= MAX_BLOCK_SIZE && ratio_sum > 0 && size % ratio_sum == 0 {
            sizes.push(size);
        } else {
            problems.add(
                &item_path,
                format!("block size {size} must be a multiple of the ratio sum {ratio_sum}, from 1 to {MAX_BLOCK_SIZE}"),
            );
        }
    }
    if object.get("block_sizes").is_some() && sizes.is_empty() {
        problems.add(&path, "at least one valid block size is required");
        return None;
    }
    let distinct: BTreeSet<u32> = sizes.iter().copied().collect();
    if distinct.len() != sizes.len() {
        problems.add(&path, "block sizes must be distinct");
    }
    Some(MethodSpec::PermutedBlocks { block_sizes: sizes })
}

fn read_minimisation(
    object: &Object<'_>,
    arm_count: usize,
    factors: &[Factor],
    problems: &mut Problems,
) -> Option<MethodSpec> {
    if factors.is_empty() {
        problems.add(
            "stratification.factors",
            "minimisation needs at least one factor",
        );
    }
    let mut weights = vec![1.0; factors.len()];
    for (path, name, value) in object.entries("factors", MAX_FACTORS, problems) {
        let Some(weight) = as_f64(value, &path, problems) else {
            continue;
        };
        match factors.iter().position(|f| f.id == name) {
            None => problems.add(&path, format!("'{name}' is not a stratification factor")),
            Some(_) if weight <= 0.0 => problems.add(&path, "a factor weight must be above 0"),
            Some(_) if weight > MAX_FACTOR_WEIGHT => problems.add(
                &path,
                format!("a factor weight must be at most {MAX_FACTOR_WEIGHT}"),
            ),
            Some(index) => weights[index] = weight,
        }
    }
    let imbalance = match object.optional_string("imbalance", problems).as_deref() {
        None | Some("range") => ImbalanceMeasure::Range,
        Some("variance") => ImbalanceMeasure::Variance,
        Some("sd") | Some("standard_deviation") => ImbalanceMeasure::StandardDeviation,
        Some(other) => {
            problems.add(
                &object.field_path("imbalance"),
                format!("unknown imbalance measure '{other}'; expected range, variance or sd"),
            );
            return None;
        }
    };
    let p = object.f64("p", problems)?;
    let floor = 1.0 / arm_count.max(1) as f64;
    if !(p > floor && p <= 1.0) {
        problems.add(
            &object.field_path("p"),
            format!("p must be above {floor:.3} and at most 1"),
        );
    }
    Some(MethodSpec::Minimisation {
        weights,
        imbalance,
        p,
    })
}

fn read_two_arm_method(
    object: &Object<'_>,
    kind: &str,
    arms: &[Arm],
    ratio_sum: u32,
    problems: &mut Problems,
) -> Option<MethodSpec> {
    if arms.len() != 2 {
        problems.add("arms", format!("{kind} needs exactly two arms"));
    }
    let largest_ratio = arms.iter().map(|a| a.ratio).max().unwrap_or(1);
    let bound = |problems: &mut Problems| {
        let bound = object.u32("bound", problems)?;
        if !at_most(bound, MAX_BOUND, &object.field_path("bound"), problems) {
            return None;
        }
        if bound < largest_ratio {
            problems.add(
                &object.field_path("bound"),
                format!("bound {bound} is below the largest ratio {largest_ratio}, so no assignment is possible"),
            );
        }
        Some(bound)
    };
    match kind {
        "biased_coin" => {
            let p = object.f64("p", problems)?;
            if !(p > 0.5 && p <= 1.0) {
                problems.add(&object.field_path("p"), "p must be above 0.5 and at most 1");
            }
            Some(MethodSpec::BiasedCoin { p })
        }
        "big_stick" => Some(MethodSpec::BigStick {
            bound: bound(problems)?,
        }),
        "chen_biased_coin" => {
            // Efron's coin towards the lagging arm drifts away from a target
            // other than 1:1 (Chen 1999 defines it for 1:1 only).
            if arms.iter().any(|a| a.ratio != arms[0].ratio) {
                problems.add("arms", "chen_biased_coin cannot take ratios other than 1:1");
            }
            let p = object.f64("p", problems);
            if p.is_some_and(|p| !(p > 0.5 && p <= 1.0)) {
                problems.add(&object.field_path("p"), "p must be above 0.5 and at most 1");
            }
            let bound = bound(problems);
            Some(MethodSpec::ChenBiasedCoin {
                p: p?,
                bound: bound?,
            })
        }
        _ => {
            let bound = bound(problems)?;
            let sequence_length = object.u32("sequence_length", problems)?;
            if !(2..=MAX_SEQUENCE_LENGTH).contains(&sequence_length)
                || sequence_length % ratio_sum.max(1) != 0
            {
                problems.add(
                    &object.field_path("sequence_length"),
                    format!("must be a multiple of the ratio sum {ratio_sum}, from 2 to {MAX_SEQUENCE_LENGTH}"),
                );
            }
            check_completion_table(object, bound, sequence_length, problems);
            Some(MethodSpec::MaximalProcedure {
                bound,
                sequence_length,
            })
        }
    }
}

/// The random allocation rule's and the truncated binomial design's block:
/// a multiple of the ratio sum (2 for the truncated binomial), at most a cap.
fn read_sample_size(object: &Object<'_>, ratio_sum: u32, problems: &mut Problems) -> Option<u32> {
    let size = object.u32("sample_size", problems)?;
    if size == 0 || size > MAX_CAP || size % ratio_sum.max(1) != 0 {
        problems.add(
            &object.field_path("sample_size"),
            format!("must be a multiple of the ratio sum {ratio_sum}, from 1 to {MAX_CAP}"),
        );
        return None;
    }
    Some(size)
}

/// Procedures the literature defines for two arms at 1:1 only.
fn read_equal_two_arm_method(
    object: &Object<'_>,
    kind: &str,
    arms: &[Arm],
    problems: &mut Problems,
) -> Option<MethodSpec> {
    if arms.len() != 2 {
        problems.add("arms", format!("{kind} needs exactly two arms"));
    } else if arms.iter().any(|a| a.ratio != arms[0].ratio) {
        problems.add("arms", format!("{kind} cannot take ratios other than 1:1"));
    }
    // Equal ratios: the methods see 1:1 whatever the written ratio.
    match kind {
        "adjustable_biased_coin" => Some(MethodSpec::AdjustableBiasedCoin {
            a: read_bounded(object, "a", 0.0, MAX_COIN_EXPONENT, true, problems)?,
        }),
        "generalised_biased_coin" => Some(MethodSpec::GeneralisedBiasedCoin {
            rho: read_bounded(object, "rho", 0.0, MAX_COIN_EXPONENT, true, problems)?,
        }),
        "urn" => {
            let alpha = read_bounded(object, "alpha", 0.0, MAX_URN_BALLS, true, problems);
            let beta = read_bounded(object, "beta", 0.0, MAX_URN_BALLS, false, problems);
            Some(MethodSpec::Urn {
                alpha: alpha?,
                beta: beta?,
            })
        }
        _ => {
            let sample_size = read_sample_size(object, 2, problems)?;
            Some(MethodSpec::TruncatedBinomial { sample_size })
        }
    }
}

/// A finite number from `low` (included when `low_included`) to `high`.
fn read_bounded(
    object: &Object<'_>,
    key: &str,
    low: f64,
    high: f64,
    low_included: bool,
    problems: &mut Problems,
) -> Option<f64> {
    let value = object.f64(key, problems)?;
    let above_low = if low_included {
        value >= low
    } else {
        value > low
    };
    if !above_low || value > high {
        let from = if low_included { "at least" } else { "above" };
        problems.add(
            &object.field_path(key),
            format!("{key} must be {from} {low} and at most {high}"),
        );
        return None;
    }
    Some(value)
}

/// The maximal procedure counts completions in a table of
/// (sequence_length + 1) × (2·bound + 1) numbers, built for each stratum
/// sequence: its size is checked, not wrapped.
fn check_completion_table(
    object: &Object<'_>,
    bound: u32,
    sequence_length: u32,
    problems: &mut Problems,
) {
    let cells = u64::from(bound)
        .checked_mul(2)
        .and_then(|b| b.checked_add(1))
        .and_then(|width| width.checked_mul(u64::from(sequence_length) + 1));
    if cells.is_none_or(|cells| cells > MAX_COMPLETION_CELLS) {
        problems.add(
            &object.field_path("bound"),
            format!(
                "(sequence_length + 1) × (2·bound + 1) is above the limit of {MAX_COMPLETION_CELLS}"
            ),
        );
    }
}
