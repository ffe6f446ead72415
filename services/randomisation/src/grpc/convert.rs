//! Protobuf ↔ domain values. Arms never cross this boundary outward, except
//! to the blinding service ([`allocated_arm`]).

use std::collections::{BTreeMap, HashMap};

use equipoise_common::grpc::convert::to_proto_timestamp;
use equipoise_proto::randomisation::v1 as pb;

use crate::error::RandomisationError;
use crate::service::{AllocatedArm, StatusView, TrialForBlinding, TrialView};
use crate::simulation::{BiasTest, ImbalanceBin, SimulationReport};
use crate::store::{AllocationRecord, TrialState};
use equipoise_trial::{CovariateInput, Problem};

pub fn covariates(
    field: &str,
    values: &HashMap<String, pb::CovariateValue>,
) -> Result<BTreeMap<String, CovariateInput>, RandomisationError> {
    let mut problems = Vec::new();
    let mut inputs = BTreeMap::new();
    for (name, value) in values {
        let input = match &value.value {
            Some(pb::covariate_value::Value::IntegerValue(n)) => CovariateInput::Integer(*n),
            Some(pb::covariate_value::Value::DecimalValue(x)) => CovariateInput::Decimal(*x),
            Some(pb::covariate_value::Value::BooleanValue(b)) => CovariateInput::Boolean(*b),
            Some(pb::covariate_value::Value::EnumValue(e)) => CovariateInput::Enum(e.clone()),
            None => {
                problems.push(Problem {
                    path: format!("{field}.{name}"),
                    message: "has no value set".into(),
                });
                continue;
            }
        };
        inputs.insert(name.clone(), input);
    }
    if problems.is_empty() {
        Ok(inputs)
    } else {
        Err(RandomisationError::InvalidArgument(problems))
    }
}

pub fn trial_state(state: TrialState) -> pb::TrialState {
    match state {
        TrialState::Draft => pb::TrialState::Draft,
        TrialState::Active => pb::TrialState::Active,
        TrialState::Closed => pb::TrialState::Closed,
    }
}

pub fn trial(view: TrialView) -> pb::Trial {
    pb::Trial {
        trial_id: view.record.trial_id,
        version: view.record.version,
        title: view.title,
        state: trial_state(view.record.state).into(),
        definition_sha256: view.record.definition_sha256,
        activated_at: view
            .record
            .activated_at
            .as_deref()
            .and_then(to_proto_timestamp),
        closed_at: view
            .record
            .closed_at
            .as_deref()
            .and_then(to_proto_timestamp),
        site_ids: view.site_ids,
        method: view.method.to_owned(),
        definition_yaml: view.definition_yaml,
        algorithm_version: view.record.algorithm_version.unwrap_or(0),
    }
}

/// Every field but the arm.
pub fn allocation(record: AllocationRecord) -> pb::Allocation {
    pb::Allocation {
        trial_id: record.trial_id,
        subject_id: record.subject_id,
        site_id: record.site_id,
        randomisation_number: record.randomisation_number,
        stratum: record.stratum,
        randomised_at: to_proto_timestamp(&record.randomised_at),
        trial_version: record.trial_version,
        corrected_stratum: record.corrected_stratum.unwrap_or_default(),
        correction_reason: record.correction_reason.unwrap_or_default(),
        randomised_in_error: record.in_error,
        error_reason: record.error_reason.unwrap_or_default(),
        treatment_code: record.treatment_code.unwrap_or_default(),
    }
}

/// For the blinding service only: it holds the blind.
pub fn trial_for_blinding(trial: TrialForBlinding) -> pb::TrialForBlinding {
    pb::TrialForBlinding {
        trial_id: trial.trial_id,
        version: trial.version,
        state: trial_state(trial.state).into(),
        definition_yaml: trial.definition_yaml,
        definition_sha256: trial.definition_sha256,
        code_seed: trial.code_seed.to_vec(),
        algorithm_version: trial.algorithm_version,
    }
}

/// For the blinding service only: the one message with an arm in it.
pub fn allocated_arm(arm: AllocatedArm) -> pb::AllocatedArm {
    pb::AllocatedArm {
        trial_id: arm.trial_id,
        subject_id: arm.subject_id,
        site_id: arm.site_id,
        arm_id: arm.arm_id,
        randomised_at: to_proto_timestamp(&arm.randomised_at),
        randomised_in_error: arm.randomised_in_error,
    }
}

pub fn status(view: StatusView) -> pb::TrialStatus {
    pb::TrialStatus {
        trial_id: view.trial_id,
        state: trial_state(view.state).into(),
        version: view.version,
        randomised: view.randomised,
        total_cap: view.total_cap.unwrap_or(0),
        randomised_in_error: view.randomised_in_error,
        sites: view
            .sites
            .into_iter()
            .map(|(site_id, randomised, cap)| pb::SiteCount {
                site_id,
                randomised,
                cap: cap.unwrap_or(0),
            })
            .collect(),
        strata: view
            .strata
            .into_iter()
            .map(|(stratum, randomised, cap)| pb::StratumCount {
                stratum,
                randomised,
                cap: cap.unwrap_or(0),
            })
            .collect(),
        list_warnings: view
            .list_warnings
            .into_iter()
            .map(|(stratum, remaining)| pb::ListWarning { stratum, remaining })
            .collect(),
    }
}

pub fn simulation(report: SimulationReport) -> pb::SimulationReport {
    pb::SimulationReport {
        trials: report.trials,
        subjects_per_trial: report.subjects_per_trial,
        seed: report.seed,
        method: report.method.to_owned(),
        imbalance: report
            .imbalance
            .into_iter()
            .map(|row| pb::ImbalanceRow {
                scope: row.scope.to_owned(),
                name: row.name,
                mean_final: row.mean_final,
                p95_final: row.p95_final,
                mean_max: row.mean_max,
                worst_max: row.worst_max,
                rms_final: row.rms_final,
                balanced_proportion: row.balanced_proportion,
            })
            .collect(),
        correct_guess_rate_stratum: report.correct_guess_rate_stratum,
        correct_guess_rate_site: report.correct_guess_rate_site,
        correct_guess_rate_trial: report.correct_guess_rate_trial,
        mean_correct_guesses_per_trial: report.mean_correct_guesses_per_trial,
        deterministic_rate: report.deterministic_rate,
        allocations: report.allocations,
        proportional_guess_rate: report.proportional_guess_rate,
        final_imbalance_distribution: bins(report.final_imbalance_distribution),
        max_imbalance_distribution: bins(report.max_imbalance_distribution),
        selection_bias: report.selection_bias.map(bias_test),
        chronological_bias: report.chronological_bias.map(bias_test),
    }
}

fn bins(bins: Vec<ImbalanceBin>) -> Vec<pb::ImbalanceBin> {
    bins.into_iter()
        .map(|bin| pb::ImbalanceBin {
            imbalance: bin.imbalance,
            trials: bin.trials,
        })
        .collect()
}

fn bias_test(test: BiasTest) -> pb::BiasTest {
    pb::BiasTest {
        size: test.size,
        nominal_level: test.nominal_level,
        rejection_rate: test.rejection_rate,
        trials_tested: test.trials_tested,
    }
}

pub fn audit_record(shown: crate::service::BlindedRecord) -> pb::AuditRecord {
    let record = shown.record;
    pb::AuditRecord {
        seq: record.seq,
        at: record.entry.at,
        actor: record.entry.actor,
        role: record.entry.role,
        action: record.entry.action,
        entity: record.entry.entity,
        details_json: record.entry.details.to_string(),
        prev_hash: record.prev_hash,
        hash: record.hash,
        masked: shown.masked,
    }
}
