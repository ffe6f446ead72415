//! YAML to [`TrialDefinition`], collecting every problem with its path.

use std::collections::BTreeSet;

use serde_norway::Value;

use super::decode::{Object, Problems, as_f64, as_string, check_identifier};
use super::model::*;
use super::rules::{Condition, parse_condition, parse_rule};

/// Most strata a design may have: beyond this, strata are mostly empty.
pub const MAX_STRATA: usize = 10_000;
const MAX_BLOCK_SIZE: u32 = 1_000;
const MAX_SEQUENCE_LENGTH: u32 = 1_000;
const EMERGENCY_ROLES: &[&str] = &["site_investigator", "emergency_desk", "medical_monitor"];

pub fn parse_definition(yaml: &str) -> Result<TrialDefinition, Problems> {
    let mut problems = Problems::default();
    let value: Value = match serde_norway::from_str(yaml) {
        Ok(value) => value,
        Err(error) => {
            let path = error.location().map_or_else(
                || "(document)".to_owned(),
                |l| format!("line {} column {}", l.line(), l.column()),
            );
            problems.add(&path, format!("not valid YAML: {error}"));
            return Err(problems);
        }
    };
    let definition = read_definition(&value, &mut problems);
    match definition {
        Some(definition) if problems.is_empty() => Ok(definition),
        _ => {
            if problems.is_empty() {
                problems.add("(document)", "the definition is incomplete");
            }
            Err(problems)
        }
    }
}

const TOP_KEYS: &[&str] = &[
    "id",
    "version",
    "title",
    "sponsor_time_zone",
    "atmp",
    "arms",
    "sites",
    "caps",
    "covariates",
    "eligibility",
    "stratification",
    "method",
    "periods",
    "blinding",
    "unblinding",
    "safety",
];

fn read_definition(value: &Value, problems: &mut Problems) -> Option<TrialDefinition> {
    let top = Object::new(value, "", TOP_KEYS, problems)?;
    let id = top.identifier("id", problems);
    let version = top
        .u32("version", problems)
        .filter(|v| positive(*v, "version", problems));
    let title = top.string("title", problems);
    let sponsor_time_zone = read_time_zone(&top, problems);
    let atmp = top.bool_or("atmp", false, problems);
    let arms = read_arms(&top, problems);
    let sites = read_sites(&top, problems);
    let covariates = read_covariates(&top, problems);
    let caps = read_caps(&top, &sites, problems);
    let eligibility = read_eligibility(&top, &covariates, problems);
    let stratification = read_stratification(&top, &covariates, &sites, problems);
    let method = read_method(&top, &arms, &stratification, problems);
    let periods = read_periods(&top, &arms, problems);
    let blinding = read_blinding(&top, caps.as_ref().and_then(|c| c.total), problems);
    let unblinding = read_unblinding(&top, problems);
    let safety = read_safety(&top, problems);
    Some(TrialDefinition {
        id: id?,
        version: version?,
        title: title?,
        sponsor_time_zone: sponsor_time_zone?,
        atmp,
        arms,
        sites,
        caps: caps?,
        covariates,
        eligibility,
        stratification,
        method: method?,
        periods,
        blinding: blinding?,
        unblinding: unblinding?,
        safety: safety?,
    })
}

fn positive(value: u32, path: &str, problems: &mut Problems) -> bool {
    if value == 0 {
        problems.add(path, "must be at least 1");
    }
    value > 0
}

fn read_time_zone(top: &Object<'_>, problems: &mut Problems) -> Option<String> {
    let zone = top.string("sponsor_time_zone", problems)?;
    if jiff::tz::TimeZone::get(&zone).is_err() {
        problems.add(
            "sponsor_time_zone",
            format!("'{zone}' is not an IANA time zone"),
        );
        return None;
    }
    Some(zone)
}

/// Reports duplicate ids among `items`, which carry their paths.
fn check_unique<'a>(
    items: impl IntoIterator<Item = (&'a str, &'a str)>,
    what: &str,
    problems: &mut Problems,
) {
    let mut seen = BTreeSet::new();
    for (path, id) in items {
        if !seen.insert(id) {
            problems.add(path, format!("duplicate {what} id '{id}'"));
        }
    }
}

fn read_arms(top: &Object<'_>, problems: &mut Problems) -> Vec<Arm> {
    let mut arms = Vec::new();
    let mut paths = Vec::new();
    let items = top.list("arms", true, problems);
    let declared = items.len();
    for (path, value) in items {
        let Some(arm) = Object::new(value, &path, &["id", "label", "ratio", "active"], problems)
        else {
            continue;
        };
        let id = arm.identifier("id", problems);
        let label = arm.string("label", problems);
        let ratio = arm
            .u32("ratio", problems)
            .filter(|r| positive(*r, &arm.field_path("ratio"), problems));
        let active = arm.bool_or("active", true, problems);
        if let (Some(id), Some(label), Some(ratio)) = (id, label, ratio) {
            arms.push(Arm {
                id,
                label,
                ratio,
                active,
            });
            paths.push(path);
        }
    }
    check_unique(
        paths
            .iter()
            .map(String::as_str)
            .zip(arms.iter().map(|a| a.id.as_str())),
        "arm",
        problems,
    );
    if top.get("arms").is_some() && declared < 2 {
        problems.add("arms", "a randomised trial needs at least two arms");
    }
    arms
}

fn read_sites(top: &Object<'_>, problems: &mut Problems) -> Vec<Site> {
    let mut sites = Vec::new();
    let mut paths = Vec::new();
    for (path, value) in top.list("sites", true, problems) {
        let Some(site) = Object::new(value, &path, &["id", "cap"], problems) else {
            continue;
        };
        let id = site.identifier("id", problems);
        let cap = site.optional_u32("cap", problems);
        if let Some(cap) = cap {
            positive(cap, &site.field_path("cap"), problems);
        }
        if let Some(id) = id {
            sites.push(Site { id, cap });
            paths.push(path);
        }
    }
    check_unique(
        paths
            .iter()
            .map(String::as_str)
            .zip(sites.iter().map(|s| s.id.as_str())),
        "site",
        problems,
    );
    if top.get("sites").is_some() && sites.is_empty() {
        problems.add("sites", "at least one site is required");
    }
    sites
}

fn read_caps(top: &Object<'_>, sites: &[Site], problems: &mut Problems) -> Option<Caps> {
    let Some(value) = top.get("caps") else {
        return Some(Caps {
            total: None,
            per_stratum: None,
        });
    };
    let caps = Object::new(value, "caps", &["total", "per_stratum"], problems)?;
    let total = caps.optional_u32("total", problems);
    let per_stratum = caps.optional_u32("per_stratum", problems);
    for (key, cap) in [("total", total), ("per_stratum", per_stratum)] {
        if let Some(cap) = cap {
            positive(cap, &caps.field_path(key), problems);
        }
    }
    let site_caps: Option<u64> = sites.iter().map(|s| s.cap.map(u64::from)).sum();
    if let (Some(total), Some(sum)) = (total, site_caps)
        && sum < u64::from(total)
    {
        problems.add(
            "caps.total",
            format!("{total} can never be reached: the site caps add up to {sum}"),
        );
    }
    Some(Caps { total, per_stratum })
}

fn read_covariates(top: &Object<'_>, problems: &mut Problems) -> Vec<Covariate> {
    let mut covariates = Vec::new();
    let mut paths = Vec::new();
    for (path, value) in top.list("covariates", false, problems) {
        let Some(object) = Object::new(
            value,
            &path,
            &["id", "type", "values", "min", "max"],
            problems,
        ) else {
            continue;
        };
        let id = object.identifier("id", problems);
        if id.as_deref() == Some("site") {
            problems.add(
                &object.field_path("id"),
                "'site' is reserved for the site factor",
            );
        }
        let kind = read_covariate_kind(&object, problems);
        if let (Some(id), Some(kind)) = (id, kind) {
            covariates.push(Covariate { id, kind });
            paths.push(path);
        }
    }
    check_unique(
        paths
            .iter()
            .map(String::as_str)
            .zip(covariates.iter().map(|c| c.id.as_str())),
        "covariate",
        problems,
    );
    covariates
}

fn read_covariate_kind(object: &Object<'_>, problems: &mut Problems) -> Option<CovariateKind> {
    let type_name = object.string("type", problems)?;
    let bound = |key: &str, problems: &mut Problems| {
        object
            .get(key)
            .and_then(|v| as_f64(v, &object.field_path(key), problems))
    };
    let (min, max) = (bound("min", problems), bound("max", problems));
    if let (Some(low), Some(high)) = (min, max)
        && low > high
    {
        problems.add(
            &object.field_path("min"),
            format!("min {low} is above max {high}"),
        );
    }
    let numeric_only = |problems: &mut Problems| {
        for key in ["min", "max"] {
            if object.get(key).is_some() {
                problems.add(
                    &object.field_path(key),
                    format!("only integer and decimal covariates take {key}"),
                );
            }
        }
    };
    match type_name.as_str() {
        "integer" => Some(CovariateKind::Integer { min, max }),
        "decimal" => Some(CovariateKind::Decimal { min, max }),
        "boolean" => {
            numeric_only(problems);
            Some(CovariateKind::Boolean)
        }
        "enum" => {
            numeric_only(problems);
            let values = object.string_list("values", problems);
            if values.is_empty() {
                problems.add(
                    &object.field_path("values"),
                    "an enum covariate needs at least one value",
                );
            }
            let mut seen = BTreeSet::new();
            for value in &values {
                check_identifier(value, &object.field_path("values"), problems);
                if !seen.insert(value) {
                    problems.add(
                        &object.field_path("values"),
                        format!("duplicate value '{value}'"),
                    );
                }
            }
            Some(CovariateKind::Enum { values })
        }
        other => {
            problems.add(
                &object.field_path("type"),
                format!("unknown type '{other}'; expected integer, decimal, boolean or enum"),
            );
            None
        }
    }
}

fn read_eligibility(
    top: &Object<'_>,
    covariates: &[Covariate],
    problems: &mut Problems,
) -> Vec<Criterion> {
    let mut criteria = Vec::new();
    let mut paths = Vec::new();
    for (path, value) in top.list("eligibility", false, problems) {
        let Some(object) = Object::new(value, &path, &["id", "rule"], problems) else {
            continue;
        };
        let id = object.identifier("id", problems);
        let rule = object.string("rule", problems).and_then(|text| {
            parse_rule(&text)
                .map_err(|reason| {
                    problems.add(&object.field_path("rule"), format!("'{text}': {reason}"))
                })
                .ok()
        });
        let Some(rule) = rule else { continue };
        let rule_path = object.field_path("rule");
        match covariates.iter().find(|c| c.id == rule.covariate) {
            None => problems.add(
                &rule_path,
                format!("names unknown covariate '{}'", rule.covariate),
            ),
            Some(covariate) => {
                if let Err(reason) = rule.condition.check_against(&covariate.kind) {
                    problems.add(&rule_path, format!("'{rule}': {reason}"));
                }
            }
        }
        if let Some(id) = id {
            criteria.push(Criterion { id, rule });
            paths.push(path);
        }
    }
    check_unique(
        paths
            .iter()
            .map(String::as_str)
            .zip(criteria.iter().map(|c| c.id.as_str())),
        "criterion",
        problems,
    );
    criteria
}

fn read_stratification(
    top: &Object<'_>,
    covariates: &[Covariate],
    sites: &[Site],
    problems: &mut Problems,
) -> Vec<Factor> {
    let Some(value) = top.get("stratification") else {
        return Vec::new();
    };
    let Some(object) = Object::new(value, "stratification", &["factors"], problems) else {
        return Vec::new();
    };
    let mut factors = Vec::new();
    let mut paths = Vec::new();
    for (path, value) in object.list("factors", false, problems) {
        if let Some(factor) = read_factor(value, &path, covariates, sites, problems) {
            factors.push(factor);
            paths.push(path);
        }
    }
    check_unique(
        paths
            .iter()
            .map(String::as_str)
            .zip(factors.iter().map(|f| f.id.as_str())),
        "factor",
        problems,
    );
    let strata: usize = factors.iter().map(|f| f.levels.len().max(1)).product();
    if strata > MAX_STRATA {
        problems.add(
            "stratification.factors",
            format!("{strata} strata is more than the {MAX_STRATA} a design may have"),
        );
    }
    factors
}

fn read_factor(
    value: &Value,
    path: &str,
    covariates: &[Covariate],
    sites: &[Site],
    problems: &mut Problems,
) -> Option<Factor> {
    let object = Object::new(value, path, &["id", "from", "levels"], problems)?;
    let id = object.identifier("id", problems)?;
    let from = object
        .optional_string("from", problems)
        .unwrap_or_else(|| id.clone());
    if from == "site" {
        if object.get("levels").is_some() {
            problems.add(
                &object.field_path("levels"),
                "the site factor's levels are the sites",
            );
        }
        let levels = sites
            .iter()
            .map(|s| Level {
                name: s.id.clone(),
                condition: None,
            })
            .collect();
        return Some(Factor {
            id,
            source: FactorSource::Site,
            levels,
        });
    }
    let Some(covariate) = covariates.iter().find(|c| c.id == from) else {
        problems.add(
            &object.field_path("from"),
            format!("names unknown covariate '{from}'"),
        );
        return None;
    };
    let levels = read_levels(&object, covariate, problems);
    Some(Factor {
        id,
        source: FactorSource::Covariate(covariate.id.clone()),
        levels,
    })
}

fn read_levels(object: &Object<'_>, covariate: &Covariate, problems: &mut Problems) -> Vec<Level> {
    let path = object.field_path("levels");
    let entries = object.entries("levels", problems);
    if entries.is_empty() {
        return implicit_levels(covariate, &path, problems);
    }
    let mut levels = Vec::new();
    for (level_path, name, value) in entries {
        check_identifier(&name, &level_path, problems);
        let Some(text) = as_string(value, &level_path, problems) else {
            continue;
        };
        match parse_condition(&text) {
            Err(reason) => problems.add(&level_path, format!("'{text}': {reason}")),
            Ok(condition) => match condition.check_against(&covariate.kind) {
                Err(reason) => problems.add(&level_path, format!("'{text}': {reason}")),
                Ok(()) => levels.push(Level {
                    name,
                    condition: Some(condition),
                }),
            },
        }
    }
    check_partition(&levels, covariate, &path, problems);
    levels
}

/// Enum and boolean covariates stratify by their own values when no levels
/// are given; numbers need explicit levels.
fn implicit_levels(covariate: &Covariate, path: &str, problems: &mut Problems) -> Vec<Level> {
    match &covariate.kind {
        CovariateKind::Enum { values } => values
            .iter()
            .map(|v| Level {
                name: v.clone(),
                condition: Some(Condition::In(vec![v.clone()])),
            })
            .collect(),
        CovariateKind::Boolean => [true, false]
            .into_iter()
            .map(|b| Level {
                name: b.to_string(),
                condition: Some(Condition::Is(b)),
            })
            .collect(),
        kind => {
            problems.add(
                path,
                format!(
                    "a {} covariate needs levels, e.g. {{ low: \"< 70\", high: \">= 70\" }}",
                    kind.name()
                ),
            );
            Vec::new()
        }
    }
}

/// Every value must fall in exactly one level.
fn check_partition(levels: &[Level], covariate: &Covariate, path: &str, problems: &mut Problems) {
    match &covariate.kind {
        CovariateKind::Enum { values } => {
            for value in values {
                let matching: Vec<&str> = levels
                    .iter()
                    .filter(|l| matches!(&l.condition, Some(Condition::In(o)) if o.contains(value)))
                    .map(|l| l.name.as_str())
                    .collect();
                match matching.len() {
                    0 => problems.add(path, format!("value '{value}' falls in no level")),
                    1 => {}
                    _ => problems.add(
                        path,
                        format!("value '{value}' falls in levels {}", matching.join(" and ")),
                    ),
                }
            }
        }
        CovariateKind::Boolean => {
            for value in [true, false] {
                let count = levels
                    .iter()
                    .filter(|l| l.condition == Some(Condition::Is(value)))
                    .count();
                if count != 1 {
                    problems.add(
                        path,
                        format!("value {value} must fall in exactly one level"),
                    );
                }
            }
        }
        CovariateKind::Integer { .. } | CovariateKind::Decimal { .. } => {
            check_numeric_partition(levels, path, problems)
        }
    }
}

fn check_numeric_partition(levels: &[Level], path: &str, problems: &mut Problems) {
    let intervals: Vec<_> = levels
        .iter()
        .filter_map(|l| {
            l.condition
                .as_ref()
                .and_then(Condition::interval)
                .map(|i| (l, i))
        })
        .collect();
    for (i, (first, a)) in intervals.iter().enumerate() {
        for (second, b) in &intervals[i + 1..] {
            if a.overlaps(b) {
                problems.add(
                    path,
                    format!("levels {} and {} overlap", first.name, second.name),
                );
            }
        }
    }
    let mut sorted = intervals.clone();
    sorted.sort_by(|(_, a), (_, b)| {
        let key = |i: &super::rules::Interval| i.low.map_or(f64::NEG_INFINITY, |b| b.at);
        key(a).total_cmp(&key(b))
    });
    let Some((_, first)) = sorted.first() else {
        return;
    };
    if first.low.is_some() {
        problems.add(path, "levels leave the lowest values uncovered");
    }
    for pair in sorted.windows(2) {
        let (left, right) = (pair[0].1, pair[1].1);
        let touching = match (left.high, right.low) {
            (Some(h), Some(l)) => h.at == l.at && (h.closed != l.closed),
            _ => false,
        };
        if !touching && !left.overlaps(&right) {
            problems.add(
                path,
                format!(
                    "levels {} and {} leave a gap between them",
                    pair[0].0.name, pair[1].0.name
                ),
            );
        }
    }
    if sorted.last().is_some_and(|(_, last)| last.high.is_some()) {
        problems.add(path, "levels leave the highest values uncovered");
    }
}

fn read_method(
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
        other => {
            problems.add(
                "method.kind",
                format!(
                    "unknown method '{other}'; expected permuted_blocks, minimisation, biased_coin, big_stick, maximal_procedure or uploaded_list"
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
    let ratio_sum: u32 = arms.iter().map(|a| a.ratio).sum();
    match kind.as_str() {
        "permuted_blocks" => read_blocks(&object, ratio_sum, problems),
        "minimisation" => read_minimisation(&object, arms.len(), factors, problems),
        "uploaded_list" => Some(MethodSpec::UploadedList {
            warn_remaining: object.optional_u32("warn_remaining", problems).unwrap_or(5),
        }),
        sequential => read_two_arm_method(&object, sequential, arms, problems),
    }
}

fn read_blocks(object: &Object<'_>, ratio_sum: u32, problems: &mut Problems) -> Option<MethodSpec> {
    let path = object.field_path("block_sizes");
    let mut sizes = Vec::new();
    for (item_path, value) in object.list("block_sizes", true, problems) {
        let Some(size) = super::decode::as_u32(value, &item_path, problems) else {
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
    for (path, name, value) in object.entries("factors", problems) {
        let Some(weight) = as_f64(value, &path, problems) else {
            continue;
        };
        match factors.iter().position(|f| f.id == name) {
            None => problems.add(&path, format!("'{name}' is not a stratification factor")),
            Some(_) if weight <= 0.0 => problems.add(&path, "a factor weight must be above 0"),
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
    problems: &mut Problems,
) -> Option<MethodSpec> {
    if arms.len() != 2 {
        problems.add("arms", format!("{kind} needs exactly two arms"));
    }
    let largest_ratio = arms.iter().map(|a| a.ratio).max().unwrap_or(1);
    let bound = |problems: &mut Problems| {
        let bound = object.u32("bound", problems)?;
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
        _ => {
            let bound = bound(problems)?;
            let sequence_length = object.u32("sequence_length", problems)?;
            let ratio_sum: u32 = arms.iter().map(|a| a.ratio).sum();
            if !(2..=MAX_SEQUENCE_LENGTH).contains(&sequence_length)
                || sequence_length % ratio_sum.max(1) != 0
            {
                problems.add(
                    &object.field_path("sequence_length"),
                    format!("must be a multiple of the ratio sum {ratio_sum}, from 2 to {MAX_SEQUENCE_LENGTH}"),
                );
            }
            Some(MethodSpec::MaximalProcedure {
                bound,
                sequence_length,
            })
        }
    }
}

fn read_periods(top: &Object<'_>, arms: &[Arm], problems: &mut Problems) -> Vec<Period> {
    let mut periods = Vec::new();
    let mut paths = Vec::new();
    for (path, value) in top.list("periods", false, problems) {
        let keys = &["id", "months", "crossover", "planned_unblinding_at_start"];
        let Some(object) = Object::new(value, &path, keys, problems) else {
            continue;
        };
        let id = object.identifier("id", problems);
        let months = object.u32("months", problems);
        let crossover = object
            .get("crossover")
            .and_then(|v| read_crossover(v, &object.field_path("crossover"), arms, problems));
        let planned_unblinding_at_start =
            object.bool_or("planned_unblinding_at_start", false, problems);
        if let (Some(id), Some(months)) = (id, months) {
            positive(months, &object.field_path("months"), problems);
            periods.push(Period {
                id,
                months,
                crossover,
                planned_unblinding_at_start,
            });
            paths.push(path);
        }
    }
    check_unique(
        paths
            .iter()
            .map(String::as_str)
            .zip(periods.iter().map(|p| p.id.as_str())),
        "period",
        problems,
    );
    periods
}

fn read_crossover(
    value: &Value,
    path: &str,
    arms: &[Arm],
    problems: &mut Problems,
) -> Option<Crossover> {
    let object = Object::new(value, path, &["from", "to"], problems)?;
    let from = object.string("from", problems)?;
    let to = object.string("to", problems)?;
    for (key, arm) in [("from", &from), ("to", &to)] {
        if !arms.iter().any(|a| &a.id == arm) {
            problems.add(&object.field_path(key), format!("'{arm}' is not an arm"));
        }
    }
    if from == to {
        problems.add(path, "a crossover goes from one arm to another");
    }
    Some(Crossover { from, to })
}

fn read_blinding(
    top: &Object<'_>,
    total_cap: Option<u32>,
    problems: &mut Problems,
) -> Option<Blinding> {
    let value = top.required("blinding", problems)?;
    let object = Object::new(value, "blinding", &["mode", "code_format"], problems)?;
    let mode = object.string("mode", problems)?;
    if mode != "treatment_codes" {
        problems.add(
            "blinding.mode",
            format!("unknown mode '{mode}'; expected treatment_codes"),
        );
    }
    let source = object
        .optional_string("code_format", problems)
        .unwrap_or_else(|| "{8 random base32}".to_owned());
    let code_format = match parse_code_format(&source) {
        Ok(format) => format,
        Err(reason) => {
            problems.add("blinding.code_format", format!("'{source}': {reason}"));
            return None;
        }
    };
    // Codes must be hard to guess: at least 10^4 unused codes per used one.
    let needed = (f64::from(total_cap.unwrap_or(100_000)) * 1e4).log2();
    if code_format.entropy_bits() < needed {
        problems.add(
            "blinding.code_format",
            format!(
                "'{source}' has too few distinct codes to be unguessable; add random characters"
            ),
        );
    }
    Some(Blinding { mode, code_format })
}

/// `R-{6 random base32}`: literal text and `{N random ALPHABET}` placeholders.
pub fn parse_code_format(source: &str) -> Result<CodeFormat, String> {
    let mut segments = Vec::new();
    let mut rest = source;
    while !rest.is_empty() {
        match rest.find('{') {
            Some(0) => {
                let end = rest.find('}').ok_or("a '{' is not closed")?;
                segments.push(parse_placeholder(&rest[1..end])?);
                rest = &rest[end + 1..];
            }
            Some(start) => {
                segments.push(literal(&rest[..start])?);
                rest = &rest[start..];
            }
            None => {
                segments.push(literal(rest)?);
                rest = "";
            }
        }
    }
    if !segments
        .iter()
        .any(|s| matches!(s, CodeSegment::Random { .. }))
    {
        return Err("needs at least one random placeholder such as {6 random base32}".into());
    }
    Ok(CodeFormat {
        source: source.to_owned(),
        segments,
    })
}

fn literal(text: &str) -> Result<CodeSegment, String> {
    if text.contains('}') {
        return Err("a '}' has no matching '{'".into());
    }
    if !text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "literal '{text}' may only hold letters, digits, '-' and '_'"
        ));
    }
    Ok(CodeSegment::Literal(text.to_owned()))
}

fn parse_placeholder(text: &str) -> Result<CodeSegment, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let [length, "random", alphabet] = words.as_slice() else {
        return Err(format!(
            "'{{{text}}}' is not of the form {{N random base32|digits|alphanumeric}}"
        ));
    };
    let length: u32 = length
        .parse()
        .ok()
        .filter(|n| (1..=32).contains(n))
        .ok_or_else(|| format!("'{length}' is not a length from 1 to 32"))?;
    let alphabet = match *alphabet {
        "base32" => CodeAlphabet::Base32,
        "digits" => CodeAlphabet::Digits,
        "alphanumeric" => CodeAlphabet::Alphanumeric,
        other => return Err(format!("unknown alphabet '{other}'")),
    };
    Ok(CodeSegment::Random { length, alphabet })
}

fn read_unblinding(top: &Object<'_>, problems: &mut Problems) -> Option<Unblinding> {
    let value = top.required("unblinding", problems)?;
    let keys = &[
        "emergency_roles",
        "reauth_max_age_minutes",
        "after_emergency_unblinding",
    ];
    let object = Object::new(value, "unblinding", keys, problems)?;
    let emergency_roles = object.string_list("emergency_roles", problems);
    for role in emergency_roles
        .iter()
        .filter(|r| !EMERGENCY_ROLES.contains(&r.as_str()))
    {
        problems.add(
            "unblinding.emergency_roles",
            format!(
                "'{role}' may not unblind in an emergency; expected some of {}",
                EMERGENCY_ROLES.join(", ")
            ),
        );
    }
    if emergency_roles.is_empty() {
        problems.add(
            "unblinding.emergency_roles",
            "someone must be able to unblind in an emergency",
        );
    }
    let reauth_max_age_minutes = object.u32("reauth_max_age_minutes", problems)?;
    if !(1..=1440).contains(&reauth_max_age_minutes) {
        problems.add(
            "unblinding.reauth_max_age_minutes",
            "must be from 1 to 1440",
        );
    }
    let after = match object
        .optional_string("after_emergency_unblinding", problems)
        .as_deref()
    {
        None | Some("continue") => AfterEmergencyUnblinding::Continue,
        Some("withdraw") => AfterEmergencyUnblinding::Withdraw,
        Some(other) => {
            problems.add(
                "unblinding.after_emergency_unblinding",
                format!("'{other}' is not continue or withdraw"),
            );
            return None;
        }
    };
    Some(Unblinding {
        emergency_roles,
        reauth_max_age_minutes,
        after_emergency_unblinding: after,
    })
}

fn read_safety(top: &Object<'_>, problems: &mut Problems) -> Option<Safety> {
    let value = top.required("safety", problems)?;
    let keys = &[
        "reference_safety_information",
        "expected_events",
        "safety_window_months",
    ];
    let object = Object::new(value, "safety", keys, problems)?;
    let reference_safety_information = object.string("reference_safety_information", problems)?;
    let expected_events = object.string_list("expected_events", problems);
    let safety_window_months = object.u32("safety_window_months", problems)?;
    positive(
        safety_window_months,
        "safety.safety_window_months",
        problems,
    );
    Some(Safety {
        reference_safety_information,
        expected_events,
        safety_window_months,
    })
}
