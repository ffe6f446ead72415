//! Stratification factors and their levels, which must partition every
//! possible value of their covariate.

use super::*;

pub(super) fn read_stratification(
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
    for (path, value) in object.list("factors", false, MAX_FACTORS, problems) {
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
    // Checked: 64 two-level factors would wrap a plain product to 0.
    let strata = factors.iter().try_fold(1usize, |product, f| {
        product.checked_mul(f.levels.len().max(1))
    });
    match strata {
        Some(strata) if strata <= MAX_STRATA => {}
        strata => problems.add(
            "stratification.factors",
            format!(
                "{} strata is more than the {MAX_STRATA} a design may have",
                strata.map_or_else(|| "an overflowing number of".to_owned(), |s| s.to_string())
            ),
        ),
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
    let entries = object.entries("levels", MAX_LEVELS, problems);
    if entries.is_empty() {
        return implicit_levels(covariate, &path, problems);
    }
    let mut levels = Vec::new();
    for (level_path, name, value) in entries {
        check_identifier(&name, &level_path, problems);
        let Some(text) = as_string(value, &level_path, problems) else {
            continue;
        };
        if check_rule_length(&text, &level_path, problems).is_none() {
            continue;
        }
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
        let key = |i: &crate::rules::Interval| i.low.map_or(f64::NEG_INFINITY, |b| b.at);
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
