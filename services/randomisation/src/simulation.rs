//! Simulation of a design's operating characteristics (docs/architecture.md, "Allocation"), through
//! the same method code the live service allocates with.
//!
//! Each simulated subject gets a site and stratification levels drawn from
//! the given weights (uniform by default). Caps and eligibility are not
//! simulated: they gate who is randomised, not how.

use std::collections::{BTreeMap, HashMap};

use equipoise_stream::ChaCha20Rng;
use serde::Serialize;

use crate::methods::{Margins, SequenceMethod, Slot, StratumSequence, minimise};
use equipoise_stream::{pick, simulation_stream, unit_interval};
use equipoise_trial::ImbalanceMeasure;
use equipoise_trial::{FactorSource, MethodSpec, StratumLevels, TrialDefinition};

/// Level weights per factor id (and `site` when site is not a factor).
pub type LevelWeights = BTreeMap<String, BTreeMap<String, f64>>;

#[derive(Debug, Clone, PartialEq)]
pub struct SimulationSpec {
    pub trials: u32,
    pub subjects_per_trial: u32,
    pub seed: u64,
    pub level_weights: LevelWeights,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImbalanceRow {
    pub scope: &'static str,
    pub name: String,
    pub mean_final: f64,
    pub p95_final: f64,
    pub mean_max: f64,
    pub worst_max: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimulationReport {
    pub method: &'static str,
    pub trials: u32,
    pub subjects_per_trial: u32,
    pub seed: u64,
    pub allocations: u64,
    pub imbalance: Vec<ImbalanceRow>,
    pub correct_guess_rate_stratum: f64,
    pub correct_guess_rate_site: f64,
    pub correct_guess_rate_trial: f64,
    pub mean_correct_guesses_per_trial: f64,
    pub deterministic_rate: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimulationError {
    #[error("{field}: {reason}")]
    InvalidSpec { field: String, reason: String },
    #[error(
        "uploaded lists are generated outside Equipoise; simulate the design that produced them"
    )]
    UploadedList,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SimulationError {
    SimulationError::InvalidSpec {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Runs `spec.trials` simulated trials; `progress` hears after each one.
pub fn simulate(
    definition: &TrialDefinition,
    spec: &SimulationSpec,
    max_allocations: u64,
    progress: &mut dyn FnMut(u32),
) -> Result<SimulationReport, SimulationError> {
    if matches!(definition.method, MethodSpec::UploadedList { .. }) {
        return Err(SimulationError::UploadedList);
    }
    check_sizes(spec, max_allocations)?;
    let sampler = SubjectSampler::new(definition, &spec.level_weights)?;
    let mut totals = Totals::new(definition);
    for trial in 0..spec.trials {
        let outcome = simulate_trial(definition, &sampler, spec, trial)
            .ok_or(SimulationError::UploadedList)?;
        totals.add(outcome);
        progress(trial + 1);
    }
    Ok(totals.report(definition, spec))
}

fn check_sizes(spec: &SimulationSpec, max_allocations: u64) -> Result<(), SimulationError> {
    if spec.trials == 0 {
        return Err(invalid("trials", "must be at least 1"));
    }
    if spec.subjects_per_trial == 0 {
        return Err(invalid(
            "subjects_per_trial",
            "must be at least 1 (or set a total cap)",
        ));
    }
    let allocations = u64::from(spec.trials) * u64::from(spec.subjects_per_trial);
    if allocations > max_allocations {
        return Err(invalid(
            "trials",
            format!("{allocations} simulated allocations exceed the limit of {max_allocations}"),
        ));
    }
    Ok(())
}

/// Draws each simulated subject's site and stratification levels.
struct SubjectSampler {
    /// Per factor: level weights, normalised.
    factor_weights: Vec<Vec<f64>>,
    /// Site weights, used when site is not a factor.
    site_weights: Vec<f64>,
    site_factor: Option<usize>,
}

impl SubjectSampler {
    fn new(definition: &TrialDefinition, weights: &LevelWeights) -> Result<Self, SimulationError> {
        let site_factor = definition
            .stratification
            .iter()
            .position(|f| f.source == FactorSource::Site);
        for key in weights.keys() {
            if key != "site" && !definition.stratification.iter().any(|f| &f.id == key) {
                return Err(invalid(
                    format!("level_weights.{key}"),
                    "is not a stratification factor",
                ));
            }
        }
        let factor_weights = definition
            .stratification
            .iter()
            .map(|f| {
                let names: Vec<&str> = f.levels.iter().map(|l| l.name.as_str()).collect();
                normalised_weights(&f.id, &names, weights.get(&f.id))
            })
            .collect::<Result<_, _>>()?;
        let site_names: Vec<&str> = definition.sites.iter().map(|s| s.id.as_str()).collect();
        let site_weights = normalised_weights("site", &site_names, weights.get("site"))?;
        Ok(Self {
            factor_weights,
            site_weights,
            site_factor,
        })
    }

    /// (site index, stratum levels).
    fn draw(&self, rng: &mut ChaCha20Rng) -> (usize, StratumLevels) {
        let levels: StratumLevels = self
            .factor_weights
            .iter()
            .map(|w| pick(w, unit_interval(rng)))
            .collect();
        let site = match self.site_factor {
            Some(factor) => levels[factor],
            None => pick(&self.site_weights, unit_interval(rng)),
        };
        (site, levels)
    }
}

fn normalised_weights(
    factor: &str,
    names: &[&str],
    given: Option<&BTreeMap<String, f64>>,
) -> Result<Vec<f64>, SimulationError> {
    let Some(given) = given else {
        return Ok(vec![1.0 / names.len() as f64; names.len()]);
    };
    for (level, weight) in given {
        let field = format!("level_weights.{factor}.{level}");
        if !names.contains(&level.as_str()) {
            return Err(invalid(field, "is not a level of this factor"));
        }
        if !weight.is_finite() || *weight < 0.0 {
            return Err(invalid(field, "must be a finite weight of 0 or more"));
        }
    }
    let raw: Vec<f64> = names
        .iter()
        .map(|n| given.get(*n).copied().unwrap_or(0.0))
        .collect();
    let sum: f64 = raw.iter().sum();
    if sum <= 0.0 {
        return Err(invalid(
            format!("level_weights.{factor}"),
            "needs a positive weight on some level",
        ));
    }
    Ok(raw.iter().map(|w| w / sum).collect())
}

/// The arms of one simulated trial's allocations, with what a guesser
/// would have scored.
struct TrialOutcome {
    /// Per cell: (final imbalance, largest imbalance along the way).
    cells: Vec<(f64, f64)>,
    guesses_stratum: f64,
    guesses_site: f64,
    guesses_trial: f64,
    deterministic: u64,
    allocations: u64,
}

/// Running arm counts of one cell (overall, a factor level or a stratum).
#[derive(Clone)]
struct CellTrack {
    counts: Vec<u32>,
    max_imbalance: f64,
}

impl CellTrack {
    fn new(arms: usize) -> Self {
        Self {
            counts: vec![0; arms],
            max_imbalance: 0.0,
        }
    }

    fn record(&mut self, arm: usize, ratios: &[u32]) {
        self.counts[arm] += 1;
        self.max_imbalance = self.max_imbalance.max(imbalance(&self.counts, ratios));
    }
}

/// max(n_i / r_i) − min(n_i / r_i): for 1:1, |n_A − n_B|.
fn imbalance(counts: &[u32], ratios: &[u32]) -> f64 {
    let scaled = counts
        .iter()
        .zip(ratios)
        .map(|(n, r)| f64::from(*n) / f64::from(*r));
    let (min, max) = scaled.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    max - min
}

/// Expected score of the convergence guesser: guess an arm furthest below
/// its target share, at random among ties.
fn convergence_credit(counts: &[u32], ratios: &[u32], actual: usize) -> f64 {
    let scaled: Vec<f64> = counts
        .iter()
        .zip(ratios)
        .map(|(n, r)| f64::from(*n) / f64::from(*r))
        .collect();
    let lowest = scaled.iter().copied().fold(f64::INFINITY, f64::min);
    let tied = scaled
        .iter()
        .filter(|x| (**x - lowest).abs() < 1e-12)
        .count();
    if (scaled[actual] - lowest).abs() < 1e-12 {
        1.0 / tied as f64
    } else {
        0.0
    }
}

/// Index of each cell: 0 is overall, then factor levels, then strata.
struct CellLayout {
    level_offsets: Vec<usize>,
    stratum_offset: usize,
    stratum_radix: Vec<usize>,
    total: usize,
}

impl CellLayout {
    fn new(definition: &TrialDefinition) -> Self {
        let mut level_offsets = Vec::new();
        let mut next = 1;
        for factor in &definition.stratification {
            level_offsets.push(next);
            next += factor.levels.len();
        }
        let stratum_radix: Vec<usize> = definition
            .stratification
            .iter()
            .map(|f| f.levels.len())
            .collect();
        let strata: usize = stratum_radix.iter().product();
        Self {
            level_offsets,
            stratum_offset: next,
            stratum_radix,
            total: next + strata,
        }
    }

    fn stratum_index(&self, levels: &[usize]) -> usize {
        levels
            .iter()
            .zip(&self.stratum_radix)
            .fold(0, |acc, (level, radix)| acc * radix + level)
    }
}

fn simulate_trial(
    definition: &TrialDefinition,
    sampler: &SubjectSampler,
    spec: &SimulationSpec,
    trial: u32,
) -> Option<TrialOutcome> {
    let ratios = definition.ratios();
    let arms = ratios.len();
    let layout = CellLayout::new(definition);
    let mut subjects = simulation_stream(spec.seed, &format!("trial/{trial}/subjects"));
    let mut allocator = Allocator::new(definition, spec.seed, trial)?;
    let mut cells = vec![CellTrack::new(arms); layout.total];
    let mut site_counts = vec![vec![0u32; arms]; definition.sites.len()];
    let mut outcome = TrialOutcome {
        cells: Vec::new(),
        guesses_stratum: 0.0,
        guesses_site: 0.0,
        guesses_trial: 0.0,
        deterministic: 0,
        allocations: 0,
    };
    for _ in 0..spec.subjects_per_trial {
        let (site, levels) = sampler.draw(&mut subjects);
        let stratum_cell = layout.stratum_offset + layout.stratum_index(&levels);
        let slot = allocator.allocate(&ratios, &layout, &levels);
        outcome.guesses_stratum +=
            convergence_credit(&cells[stratum_cell].counts, &ratios, slot.arm);
        outcome.guesses_site += convergence_credit(&site_counts[site], &ratios, slot.arm);
        outcome.guesses_trial += convergence_credit(&cells[0].counts, &ratios, slot.arm);
        outcome.deterministic += u64::from(slot.is_deterministic());
        outcome.allocations += 1;
        site_counts[site][slot.arm] += 1;
        cells[0].record(slot.arm, &ratios);
        for (factor, level) in levels.iter().enumerate() {
            cells[layout.level_offsets[factor] + level].record(slot.arm, &ratios);
        }
        cells[stratum_cell].record(slot.arm, &ratios);
    }
    outcome.cells = cells
        .iter()
        .map(|cell| (imbalance(&cell.counts, &ratios), cell.max_imbalance))
        .collect();
    Some(outcome)
}

/// The live methods, fed from simulation streams.
enum Allocator {
    Sequences {
        method: SequenceMethod,
        seed: u64,
        trial: u32,
        sequences: HashMap<usize, StratumSequence>,
    },
    Minimisation {
        weights: Vec<f64>,
        measure: ImbalanceMeasure,
        p: f64,
        margins: Margins,
        rng: Box<ChaCha20Rng>,
    },
}

impl Allocator {
    /// `None` for an uploaded list, which `simulate` refuses first.
    fn new(definition: &TrialDefinition, seed: u64, trial: u32) -> Option<Self> {
        if let MethodSpec::Minimisation {
            weights,
            imbalance,
            p,
        } = &definition.method
        {
            let level_counts: Vec<usize> = definition
                .stratification
                .iter()
                .map(|f| f.levels.len())
                .collect();
            return Some(Allocator::Minimisation {
                weights: weights.clone(),
                measure: *imbalance,
                p: *p,
                margins: Margins::new(&level_counts, definition.arms.len()),
                rng: Box::new(simulation_stream(
                    seed,
                    &format!("trial/{trial}/minimisation"),
                )),
            });
        }
        Some(Allocator::Sequences {
            method: SequenceMethod::from_spec(&definition.method)?,
            seed,
            trial,
            sequences: HashMap::new(),
        })
    }

    fn allocate(&mut self, ratios: &[u32], layout: &CellLayout, levels: &StratumLevels) -> Slot {
        match self {
            Allocator::Minimisation {
                weights,
                measure,
                p,
                margins,
                rng,
            } => {
                let decision = minimise(
                    margins,
                    levels,
                    weights,
                    *measure,
                    *p,
                    ratios,
                    unit_interval(rng),
                );
                margins.record(levels, decision.arm);
                Slot {
                    arm: decision.arm,
                    probabilities: decision.probabilities,
                }
            }
            Allocator::Sequences {
                method,
                seed,
                trial,
                sequences,
            } => {
                let stratum = layout.stratum_index(levels);
                sequences
                    .entry(stratum)
                    .or_insert_with(|| {
                        let rng =
                            simulation_stream(*seed, &format!("trial/{trial}/stratum/{stratum}"));
                        StratumSequence::new(method, ratios, rng)
                    })
                    .next_slot()
            }
        }
    }
}

/// Sums over simulated trials.
struct Totals {
    cell_names: Vec<(&'static str, String)>,
    finals: Vec<Vec<f64>>,
    max_sums: Vec<f64>,
    worst: Vec<f64>,
    guesses: [f64; 3],
    deterministic: u64,
    allocations: u64,
    trials: u32,
}

impl Totals {
    fn new(definition: &TrialDefinition) -> Self {
        let mut names = vec![("overall", "all".to_owned())];
        for factor in &definition.stratification {
            for level in &factor.levels {
                names.push(("factor", format!("{}={}", factor.id, level.name)));
            }
        }
        for levels in definition.all_strata() {
            names.push(("stratum", definition.stratum_key(&levels)));
        }
        let n = names.len();
        Self {
            cell_names: names,
            finals: vec![Vec::new(); n],
            max_sums: vec![0.0; n],
            worst: vec![0.0; n],
            guesses: [0.0; 3],
            deterministic: 0,
            allocations: 0,
            trials: 0,
        }
    }

    fn add(&mut self, outcome: TrialOutcome) {
        for (index, (last, max)) in outcome.cells.iter().enumerate().take(self.cell_names.len()) {
            self.finals[index].push(*last);
            self.max_sums[index] += max;
            self.worst[index] = self.worst[index].max(*max);
        }
        self.guesses[0] += outcome.guesses_stratum;
        self.guesses[1] += outcome.guesses_site;
        self.guesses[2] += outcome.guesses_trial;
        self.deterministic += outcome.deterministic;
        self.allocations += outcome.allocations;
        self.trials += 1;
    }

    fn report(self, definition: &TrialDefinition, spec: &SimulationSpec) -> SimulationReport {
        let trials = f64::from(self.trials.max(1));
        let allocations = self.allocations.max(1) as f64;
        let imbalance = self
            .cell_names
            .iter()
            .zip(self.finals)
            .zip(self.max_sums.iter().zip(&self.worst))
            .map(|(((scope, name), mut finals), (max_sum, worst))| {
                finals.sort_by(f64::total_cmp);
                ImbalanceRow {
                    scope,
                    name: name.clone(),
                    mean_final: finals.iter().sum::<f64>() / trials,
                    p95_final: percentile(&finals, 0.95),
                    mean_max: max_sum / trials,
                    worst_max: *worst,
                }
            })
            .collect();
        SimulationReport {
            method: definition.method.kind(),
            trials: self.trials,
            subjects_per_trial: spec.subjects_per_trial,
            seed: spec.seed,
            allocations: self.allocations,
            imbalance,
            correct_guess_rate_stratum: self.guesses[0] / allocations,
            correct_guess_rate_site: self.guesses[1] / allocations,
            correct_guess_rate_trial: self.guesses[2] / allocations,
            mean_correct_guesses_per_trial: self.guesses[0] / trials,
            deterministic_rate: self.deterministic as f64 / allocations,
        }
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests;
