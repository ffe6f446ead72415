//! YAML to [`TrialDefinition`], collecting every problem with its path.
//! One submodule per section of the YAML, read in document order.

mod blinding;
mod design;
mod method;
mod stratification;
mod subjects;
mod yaml;

use std::collections::BTreeSet;

use serde_norway::Value;

use crate::decode::{Object, Problems, as_f64, as_string, at_most, check_identifier};
use crate::limits::*;
use crate::model::*;
use crate::rules::{Condition, parse_condition, parse_rule};

pub use blinding::parse_code_format;
use blinding::{read_blinding, read_safety, read_unblinding};
use design::{read_arms, read_caps, read_periods, read_sites};
use method::read_method;
use stratification::read_stratification;
use subjects::{read_covariates, read_eligibility, read_subject_ids};

const EMERGENCY_ROLES: &[&str] = &["site_investigator", "emergency_desk", "medical_monitor"];
/// Roles that may take a period's planned reveal: those who treat the
/// subject or oversee their safety, never a role that sees the design.
const PLANNED_UNBLINDING_ROLES: &[&str] = &[
    "site_investigator",
    "site_coordinator",
    "emergency_desk",
    "medical_monitor",
];

/// The YAML tree of a definition's text, with the same refusals as
/// [`parse_definition`] (size, anchors and aliases): for callers that must
/// look at submitted text before parsing it as a definition.
pub fn load_yaml(yaml: &str) -> Result<serde_norway::Value, crate::decode::Problem> {
    yaml::load(yaml)
}

pub fn parse_definition(yaml: &str) -> Result<TrialDefinition, Problems> {
    let mut problems = Problems::default();
    let value = match yaml::load(yaml) {
        Ok(value) => value,
        Err(problem) => {
            problems.0.push(problem);
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
            Err(shortened(problems))
        }
    }
}

/// At most [`MAX_PROBLEMS`] problems, and how many more there were: the
/// list goes back in an error status, which must stay small.
fn shortened(mut problems: Problems) -> Problems {
    let total = problems.0.len();
    if total > MAX_PROBLEMS {
        problems.0.truncate(MAX_PROBLEMS);
        problems.add(
            "(document)",
            format!("{} more problems not listed", total - MAX_PROBLEMS),
        );
    }
    problems
}

const TOP_KEYS: &[&str] = &[
    "id",
    "version",
    "title",
    "sponsor_time_zone",
    "atmp",
    "arms",
    "sites",
    "subject_ids",
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
    let subject_ids = read_subject_ids(&top, &sites, problems);
    let covariates = read_covariates(&top, problems);
    let caps = read_caps(&top, &sites, problems);
    let eligibility = read_eligibility(&top, &covariates, problems);
    let stratification = read_stratification(&top, &covariates, &sites, problems);
    let method = read_method(&top, &arms, &stratification, problems);
    let periods = read_periods(&top, &arms, problems);
    let ratio_sum = checked_ratio_sum(&arms).unwrap_or(u32::MAX);
    let pool_size = crate::code_pool_size_for(caps.as_ref().and_then(|c| c.total), ratio_sum);
    let blinding = read_blinding(&top, pool_size, problems);
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
        subject_ids: subject_ids?,
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

/// The ratios added up, or `None` past `u32`; each ratio is bounded, so
/// this only guards the arithmetic.
fn checked_ratio_sum(arms: &[Arm]) -> Option<u32> {
    arms.iter()
        .try_fold(0u32, |sum, a| sum.checked_add(a.ratio))
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

/// A rule or level condition no longer than [`MAX_RULE_LENGTH`]; `Some`
/// when it may be parsed.
fn check_rule_length(text: &str, path: &str, problems: &mut Problems) -> Option<()> {
    let length = text.chars().count();
    if length > MAX_RULE_LENGTH {
        problems.add(
            path,
            format!("is {length} characters, more than the {MAX_RULE_LENGTH} a rule may have"),
        );
        return None;
    }
    Some(())
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
