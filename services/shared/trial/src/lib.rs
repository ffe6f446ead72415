//! Trial definitions (docs/architecture.md, "Trial definitions"): the YAML
//! format, its strict validation, the canonical hash, and the typed checks a
//! subject goes through before allocation (covariates, eligibility, stratum).
//!
//! Every service reads the same definition through this crate, which links
//! no storage, locks or gRPC.

mod decode;
pub mod examples;
pub mod limits;
mod model;
mod parse;
pub mod rules;

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

pub use decode::{Problem, Problems};
pub use limits::MAX_STRATA;
pub use model::*;
pub use parse::{load_yaml, parse_code_format, parse_definition};
use rules::Value;

/// A covariate value as a caller sends it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum CovariateInput {
    Integer(i64),
    Decimal(f64),
    Boolean(bool),
    Enum(String),
}

/// The level index of each stratification factor, in factor order.
pub type StratumLevels = Vec<usize>;

/// Codes per unit of ratio when `caps.total` is absent.
pub const UNCAPPED_CODES_PER_RATIO_UNIT: u32 = 10_000;

/// The most codes a trial's pools may hold together: far above any
/// enrolment, and keeps a mistyped cap from exhausting memory.
pub const MAX_CODE_POOL_SIZE: u32 = 1_000_000;

/// A guessed code of the right format must be a real one at most once in
/// this many tries.
pub const MIN_UNUSED_CODES_PER_CODE: f64 = 1e4;

/// Total codes over all arms for a cap and a ratio total: each arm gets the
/// cap (or [`UNCAPPED_CODES_PER_RATIO_UNIT`]) times its ratio, so no arm can
/// run out before the trial's cap is reached. The one rule the definition's
/// validation and the blinding service's generation share.
pub fn code_pool_size_for(total_cap: Option<u32>, ratio_sum: u32) -> u64 {
    // Two u32 factors cannot overflow u64; saturating all the same, so a
    // change of types can never wrap into a small pool.
    u64::from(total_cap.unwrap_or(UNCAPPED_CODES_PER_RATIO_UNIT))
        .saturating_mul(u64::from(ratio_sum))
}

impl TrialDefinition {
    /// Codes each unit of ratio gets: an arm of ratio r has r times this.
    pub fn codes_per_ratio_unit(&self) -> u32 {
        self.caps.total.unwrap_or(UNCAPPED_CODES_PER_RATIO_UNIT)
    }

    /// Total codes of the trial's pools over all arms (see
    /// [`code_pool_size_for`]).
    pub fn code_pool_size(&self) -> u64 {
        code_pool_size_for(self.caps.total, self.ratio_sum())
    }

    /// SHA-256 of the definition's canonical JSON: sorted keys, parsed rules
    /// in their canonical text, so layout and comments do not change it.
    pub fn canonical_sha256(&self) -> String {
        let canonical = serde_json::to_value(self)
            .map(|v| v.to_string())
            .unwrap_or_default();
        hex::encode(Sha256::digest(canonical.as_bytes()))
    }

    /// The ratios added up (bounded by [`limits::MAX_RATIO_SUM`] in a
    /// parsed definition; saturating, never wrapping, otherwise).
    pub fn ratio_sum(&self) -> u32 {
        self.arms
            .iter()
            .fold(0u32, |sum, a| sum.saturating_add(a.ratio))
    }

    /// e.g. `site=FR-MTP,baseline_pain=severe`; `all` when unstratified.
    pub fn stratum_key(&self, levels: &[usize]) -> String {
        if self.stratification.is_empty() {
            return "all".to_owned();
        }
        let parts: Vec<String> = self
            .stratification
            .iter()
            .zip(levels)
            .map(|(factor, &level)| {
                let name = factor.levels.get(level).map_or("?", |l| l.name.as_str());
                format!("{}={name}", factor.id)
            })
            .collect();
        parts.join(",")
    }

    pub fn parse_stratum_key(&self, key: &str) -> Option<StratumLevels> {
        self.all_strata()
            .into_iter()
            .find(|levels| self.stratum_key(levels) == key)
    }

    /// Every stratum, in a fixed order (the last factor varies fastest).
    pub fn all_strata(&self) -> Vec<StratumLevels> {
        self.stratification
            .iter()
            .fold(vec![Vec::new()], |strata, factor| {
                strata
                    .iter()
                    .flat_map(|prefix| {
                        (0..factor.levels.len()).map(move |level| {
                            let mut levels = prefix.clone();
                            levels.push(level);
                            levels
                        })
                    })
                    .collect()
            })
    }

    /// Checks that every declared covariate is present, typed as declared and
    /// within its plausibility bounds. Returns the values ready for rules.
    pub fn check_covariates(
        &self,
        inputs: &BTreeMap<String, CovariateInput>,
    ) -> Result<BTreeMap<String, Value>, Vec<Problem>> {
        let mut problems = Problems::default();
        for name in inputs.keys().filter(|n| self.covariate(n).is_none()) {
            problems.add(
                &format!("covariates.{name}"),
                "is not a covariate of this trial",
            );
        }
        let mut values = BTreeMap::new();
        for covariate in &self.covariates {
            let path = format!("covariates.{}", covariate.id);
            match inputs.get(&covariate.id) {
                None => problems.add(&path, format!("is required ({})", covariate.kind.name())),
                Some(input) => match typed_value(&covariate.kind, input) {
                    Ok(value) => {
                        values.insert(covariate.id.clone(), value);
                    }
                    Err(reason) => problems.add(&path, reason),
                },
            }
        }
        if problems.is_empty() {
            Ok(values)
        } else {
            Err(problems.0)
        }
    }

    /// The criteria a subject fails, in definition order.
    pub fn failed_criteria(&self, values: &BTreeMap<String, Value>) -> Vec<&Criterion> {
        self.eligibility
            .iter()
            .filter(|c| {
                !values
                    .get(&c.rule.covariate)
                    .is_some_and(|v| c.rule.condition.holds(v))
            })
            .collect()
    }

    /// The stratum of a subject at `site` with checked covariate `values`.
    pub fn classify(
        &self,
        site: &str,
        values: &BTreeMap<String, Value>,
    ) -> Result<StratumLevels, Problem> {
        self.stratification
            .iter()
            .map(|factor| {
                let found = match &factor.source {
                    FactorSource::Site => factor.levels.iter().position(|l| l.name == site),
                    FactorSource::Covariate(id) => values.get(id).and_then(|value| {
                        factor
                            .levels
                            .iter()
                            .position(|l| l.condition.as_ref().is_some_and(|c| c.holds(value)))
                    }),
                };
                found.ok_or_else(|| Problem {
                    path: match &factor.source {
                        FactorSource::Site => "site_id".to_owned(),
                        FactorSource::Covariate(id) => format!("covariates.{id}"),
                    },
                    message: format!("falls in no level of stratification factor {}", factor.id),
                })
            })
            .collect()
    }

    /// The cap of one stratum, if any.
    pub fn stratum_cap(&self) -> Option<u32> {
        self.caps.per_stratum
    }
}

fn typed_value(kind: &CovariateKind, input: &CovariateInput) -> Result<Value, String> {
    let in_bounds = |x: f64, min: &Option<f64>, max: &Option<f64>| {
        if min.is_some_and(|m| x < m) || max.is_some_and(|m| x > m) {
            Err(format!(
                "{x} is outside the plausible range {} to {}",
                min.map_or("-inf".into(), |m| m.to_string()),
                max.map_or("+inf".into(), |m| m.to_string())
            ))
        } else {
            Ok(Value::Number(x))
        }
    };
    match (kind, input) {
        (CovariateKind::Integer { min, max }, CovariateInput::Integer(n)) => {
            in_bounds(*n as f64, min, max)
        }
        (CovariateKind::Decimal { min, max }, CovariateInput::Decimal(x)) if x.is_finite() => {
            in_bounds(*x, min, max)
        }
        (CovariateKind::Decimal { .. }, CovariateInput::Decimal(_)) => {
            Err("must be a finite number".into())
        }
        (CovariateKind::Decimal { min, max }, CovariateInput::Integer(n)) => {
            in_bounds(*n as f64, min, max)
        }
        (CovariateKind::Boolean, CovariateInput::Boolean(b)) => Ok(Value::Boolean(*b)),
        (CovariateKind::Enum { values }, CovariateInput::Enum(e)) if values.contains(e) => {
            Ok(Value::Enum(e.clone()))
        }
        (CovariateKind::Enum { values }, CovariateInput::Enum(e)) => {
            Err(format!("'{e}' is not one of {}", values.join(", ")))
        }
        (kind, input) => Err(format!(
            "expected {}, got {}",
            kind.name(),
            input_kind(input)
        )),
    }
}

fn input_kind(input: &CovariateInput) -> &'static str {
    match input {
        CovariateInput::Integer(_) => "integer",
        CovariateInput::Decimal(_) => "decimal",
        CovariateInput::Boolean(_) => "boolean",
        CovariateInput::Enum(_) => "enum",
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod hardening_tests;
#[cfg(test)]
mod tests;
