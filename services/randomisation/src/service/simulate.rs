//! `Simulate`: a design's operating characteristics, off the request path.

use equipoise_common::auth::Caller;

use super::access::{Operation, authorise};
use super::{RandomisationService, parse_submitted_definition};
use crate::error::RandomisationError;
use crate::simulation::{
    BiasSpec, LevelWeights, SimulationError, SimulationReport, SimulationSpec, simulate,
};

#[derive(Debug, Clone, PartialEq)]
pub enum SimulationDesign {
    /// The frozen definition of a registered trial (never its seed).
    Trial(String),
    Yaml(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SimulateCommand {
    pub design: SimulationDesign,
    pub trials: u32,
    /// 0: the trial's total cap.
    pub subjects_per_trial: u32,
    /// 0: drawn from the OS and reported.
    pub seed: u64,
    pub level_weights: LevelWeights,
    pub bias: BiasSpec,
}

impl RandomisationService {
    pub async fn simulate(
        &self,
        caller: &Caller,
        command: SimulateCommand,
    ) -> Result<SimulationReport, RandomisationError> {
        authorise(caller, Operation::Simulate, None)?;
        let definition = match &command.design {
            SimulationDesign::Trial(trial_id) => {
                authorise(caller, Operation::Simulate, Some(trial_id))?;
                self.load_trial(trial_id).await?.definition
            }
            SimulationDesign::Yaml(yaml) => std::sync::Arc::new(parse_submitted_definition(yaml)?),
        };
        let subjects = match (command.subjects_per_trial, definition.caps.total) {
            (0, Some(total)) => total,
            (0, None) => {
                return Err(RandomisationError::invalid(
                    "subjects_per_trial",
                    "is required when the trial has no total cap",
                ));
            }
            (n, _) => n,
        };
        let seed = if command.seed == 0 {
            getrandom::u64().map_err(|e| RandomisationError::Internal(e.to_string()))?
        } else {
            command.seed
        };
        let spec = SimulationSpec {
            trials: command.trials,
            subjects_per_trial: subjects,
            seed,
            level_weights: command.level_weights,
            bias: command.bias,
            path_points: 0,
        };
        let limit = self.limits.max_simulated_allocations;
        let permit = self.simulations.clone().try_acquire_owned().map_err(|_| {
            RandomisationError::ResourceExhausted(format!(
                "{} simulations are already running; retry when one has finished",
                self.limits.max_concurrent_simulations
            ))
        })?;
        // The permit goes with the computation: a caller who gives up does
        // not free the core its simulation still uses.
        let report = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            simulate(&definition, &spec, limit, &mut |_| {})
        })
        .await
        .map_err(|e| RandomisationError::Internal(format!("simulation task failed: {e}")))?;
        report.map_err(|error| match error {
            SimulationError::InvalidSpec { field, reason } => {
                RandomisationError::invalid(&field, reason)
            }
            SimulationError::UploadedList => {
                RandomisationError::FailedPrecondition(error.to_string())
            }
        })
    }
}
