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
use stats::{ArmSums, standard_normal, t_critical, t_statistic};

/// Level weights per factor id (and `site` when site is not a factor).
pub type LevelWeights = BTreeMap<String, BTreeMap<String, f64>>;

#[derive(Debug, Clone, PartialEq)]
pub struct SimulationSpec {
    pub trials: u32,
    pub subjects_per_trial: u32,
    pub seed: u64,
    pub level_weights: LevelWeights,
    pub bias: BiasSpec,
    /// Steps at which to keep every trial's overall imbalance for the path
    /// envelope (0: none; the figures of `equipoise simulate --plot`).
    pub path_points: u32,
}

/// Most imbalance values kept for the path envelope.
const MAX_PATH_VALUES: u64 = 20_000_000;

/// The bias assessments to run (two arms only), each a type I error of the
/// two-sample t-test on simulated responses under no treatment effect.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BiasSpec {
    /// Blackwell–Hodges selection bias: the response is shifted by +eta when
    /// the convergence guess (on the stratum's history) is the first arm,
    /// by −eta when it is the second, not at all on a tie.
    pub selection_eta: Option<f64>,
    /// Chronological bias: a linear trend theta · i / n over the trial.
    pub time_trend: Option<f64>,
    /// Nominal two-sided level; `None` is 0.05.
    pub alpha: Option<f64>,
}

impl BiasSpec {
    fn is_requested(&self) -> bool {
        self.selection_eta.is_some() || self.time_trend.is_some()
    }

    fn alpha(&self) -> f64 {
        self.alpha.unwrap_or(DEFAULT_ALPHA)
    }
}

const DEFAULT_ALPHA: f64 = 0.05;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImbalanceRow {
    pub scope: &'static str,
    pub name: String,
    pub mean_final: f64,
    /// √E[D²] of the final imbalance.
    pub rms_final: f64,
    pub p95_final: f64,
    pub mean_max: f64,
    pub worst_max: f64,
    /// Share of this cell's allocations after which its arms were exactly
    /// on target.
    pub balanced_proportion: f64,
}

/// Quantiles over trials of the overall imbalance after `step` subjects:
/// signed (n_0/r_0 − n_1/r_1) for two arms, else max − min.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathQuantiles {
    pub step: u32,
    pub p05: f64,
    pub p25: f64,
    pub p50: f64,
    pub p75: f64,
    pub p95: f64,
}

/// How many simulated trials ended with one imbalance value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImbalanceBin {
    pub imbalance: f64,
    pub trials: u64,
}

/// The type I error of one bias assessment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BiasTest {
    /// eta or theta.
    pub size: f64,
    pub nominal_level: f64,
    /// Share of the tested trials where the t-test rejected.
    pub rejection_rate: f64,
    /// Trials with at least one subject per arm and a degree of freedom.
    pub trials_tested: u32,
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
    /// The guesser who knows the allocation probabilities and guesses each
    /// arm with its probability: the mean of Σ_k π_k².
    pub proportional_guess_rate: f64,
    /// Distribution of the overall final and maximum imbalance over trials.
    pub final_imbalance_distribution: Vec<ImbalanceBin>,
    pub max_imbalance_distribution: Vec<ImbalanceBin>,
    pub selection_bias: Option<BiasTest>,
    pub chronological_bias: Option<BiasTest>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub imbalance_path: Vec<PathQuantiles>,
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
    check_bias(definition, &spec.bias, spec.subjects_per_trial)?;
    let sampler = SubjectSampler::new(definition, &spec.level_weights)?;
    let mut totals = Totals::new(definition);
    // Every trial has n subjects, so the t-test always has n − 2 degrees of
    // freedom and one critical value serves them all.
    let critical = if spec.bias.is_requested() {
        t_critical(
            spec.bias.alpha(),
            f64::from(spec.subjects_per_trial.max(3) - 2),
        )
    } else {
        f64::INFINITY
    };
    for trial in 0..spec.trials {
        let outcome = simulate_trial(definition, &sampler, spec, trial, critical)
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
    let kept = u64::from(spec.trials) * u64::from(spec.path_points);
    if kept > MAX_PATH_VALUES {
        return Err(invalid(
            "path_points",
            format!("{kept} kept imbalance values exceed the limit of {MAX_PATH_VALUES}"),
        ));
    }
    Ok(())
}

fn check_bias(
    definition: &TrialDefinition,
    bias: &BiasSpec,
    subjects_per_trial: u32,
) -> Result<(), SimulationError> {
    for (field, value) in [
        ("selection_bias", bias.selection_eta),
        ("time_trend", bias.time_trend),
    ] {
        if value.is_some_and(|v| !v.is_finite()) {
            return Err(invalid(field, "must be a finite number"));
        }
    }
    // Below 1e-6 the critical value's search would stop short of it.
    if bias.alpha.is_some_and(|a| !(1e-6..=0.5).contains(&a)) {
        return Err(invalid("alpha", "must be from 0.000001 to 0.5"));
    }
    let requested = if bias.selection_eta.is_some() {
        "selection_bias"
    } else {
        "time_trend"
    };
    if bias.is_requested() && definition.arms.len() != 2 {
        return Err(invalid(
            requested,
            "the t-test bias assessment needs exactly two arms",
        ));
    }
    if bias.is_requested() && subjects_per_trial < 3 {
        return Err(invalid(
            "subjects_per_trial",
            "the t-test bias assessment needs at least 3 subjects per trial",
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
    /// Per cell: (final imbalance, largest imbalance along the way,
    /// balanced points, allocations).
    cells: Vec<CellOutcome>,
    guesses_stratum: f64,
    proportional_guesses: f64,
    /// Whether the t-test rejected, when it could be run.
    selection_rejected: Option<bool>,
    chronological_rejected: Option<bool>,
    guesses_site: f64,
    guesses_trial: f64,
    deterministic: u64,
    allocations: u64,
    /// Overall imbalance at each of the path steps.
    path: Vec<f64>,
}

#[derive(Clone, Copy)]
struct CellOutcome {
    last: f64,
    max: f64,
    balanced: u64,
    allocations: u64,
}

/// Running arm counts of one cell (overall, a factor level or a stratum).
#[derive(Clone)]
struct CellTrack {
    counts: Vec<u32>,
    max_imbalance: f64,
    balanced: u64,
}

impl CellTrack {
    fn new(arms: usize) -> Self {
        Self {
            counts: vec![0; arms],
            max_imbalance: 0.0,
            balanced: 0,
        }
    }

    fn record(&mut self, arm: usize, ratios: &[u32]) {
        self.counts[arm] += 1;
        let now = imbalance(&self.counts, ratios);
        self.max_imbalance = self.max_imbalance.max(now);
        // n_i / r_i are exact for whole multiples, so balance is exact.
        self.balanced += u64::from(now < 1e-9);
    }

    fn outcome(&self, ratios: &[u32]) -> CellOutcome {
        CellOutcome {
            last: imbalance(&self.counts, ratios),
            max: self.max_imbalance,
            balanced: self.balanced,
            allocations: self.counts.iter().map(|n| u64::from(*n)).sum(),
        }
    }
}

/// The convergence guess on `counts`: the one arm furthest below its share,
/// `None` on a tie.
fn convergence_guess(counts: &[u32], ratios: &[u32]) -> Option<usize> {
    let scaled = |i: usize| f64::from(counts[i]) / f64::from(ratios[i]);
    let lowest = (0..counts.len()).map(scaled).fold(f64::INFINITY, f64::min);
    let mut lagging = (0..counts.len()).filter(|i| (scaled(*i) - lowest).abs() < 1e-12);
    let first = lagging.next()?;
    lagging.next().is_none().then_some(first)
}

/// Simulated responses of one trial under no treatment effect, for the
/// bias assessments.
struct Responses {
    rng: ChaCha20Rng,
    eta: Option<f64>,
    theta: Option<f64>,
    subjects: f64,
    /// t_{1−α/2, n−2}: every trial has n subjects, so one value serves all.
    critical: f64,
    selection: [ArmSums; 2],
    chronological: [ArmSums; 2],
}

impl Responses {
    fn new(bias: &BiasSpec, seed: u64, trial: u32, subjects: u32, critical: f64) -> Option<Self> {
        bias.is_requested().then(|| Self {
            rng: simulation_stream(seed, &format!("trial/{trial}/responses")),
            eta: bias.selection_eta,
            theta: bias.time_trend,
            subjects: f64::from(subjects),
            critical,
            selection: [ArmSums::default(); 2],
            chronological: [ArmSums::default(); 2],
        })
    }

    /// Subject `index` (1-based) on `arm`, with the stratum's guess before it.
    fn record(&mut self, index: u32, arm: usize, guess: Option<usize>) {
        let noise = standard_normal(&mut self.rng);
        if let Some(eta) = self.eta {
            let shift = match guess {
                Some(0) => eta,
                Some(_) => -eta,
                None => 0.0,
            };
            self.selection[arm].add(noise + shift);
        }
        if let Some(theta) = self.theta {
            self.chronological[arm].add(noise + theta * f64::from(index) / self.subjects);
        }
    }

    fn rejections(&self) -> (Option<bool>, Option<bool>) {
        let rejects = |sums: &[ArmSums; 2]| {
            let (t, _) = t_statistic(&sums[0], &sums[1])?;
            Some(t.abs() > self.critical)
        };
        (
            self.eta.and_then(|_| rejects(&self.selection)),
            self.theta.and_then(|_| rejects(&self.chronological)),
        )
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
    critical: f64,
) -> Option<TrialOutcome> {
    let ratios = definition.ratios();
    let arms = ratios.len();
    let layout = CellLayout::new(definition);
    let mut subjects = simulation_stream(spec.seed, &format!("trial/{trial}/subjects"));
    let mut allocator = Allocator::new(definition, spec.seed, trial)?;
    let mut cells = vec![CellTrack::new(arms); layout.total];
    let mut site_counts = vec![vec![0u32; arms]; definition.sites.len()];
    let mut responses = Responses::new(
        &spec.bias,
        spec.seed,
        trial,
        spec.subjects_per_trial,
        critical,
    );
    let mut outcome = TrialOutcome {
        cells: Vec::new(),
        guesses_stratum: 0.0,
        proportional_guesses: 0.0,
        selection_rejected: None,
        chronological_rejected: None,
        guesses_site: 0.0,
        guesses_trial: 0.0,
        deterministic: 0,
        allocations: 0,
        path: Vec::new(),
    };
    let path_steps = path_steps(spec);
    let mut next_path_step = path_steps.iter().peekable();
    for index in 1..=spec.subjects_per_trial {
        let (site, levels) = sampler.draw(&mut subjects);
        let stratum_cell = layout.stratum_offset + layout.stratum_index(&levels);
        let slot = allocator.allocate(&ratios, &layout, &levels);
        if let Some(responses) = responses.as_mut() {
            let guess = convergence_guess(&cells[stratum_cell].counts, &ratios);
            responses.record(index, slot.arm, guess);
        }
        outcome.proportional_guesses += slot.probabilities.iter().map(|p| p * p).sum::<f64>();
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
        if next_path_step.next_if_eq(&&index).is_some() {
            outcome.path.push(path_imbalance(&cells[0].counts, &ratios));
        }
    }
    outcome.cells = cells.iter().map(|cell| cell.outcome(&ratios)).collect();
    if let Some(responses) = responses {
        (outcome.selection_rejected, outcome.chronological_rejected) = responses.rejections();
    }
    Some(outcome)
}

/// `spec.path_points` steps spread evenly over 1..=n, always ending at n.
fn path_steps(spec: &SimulationSpec) -> Vec<u32> {
    let n = spec.subjects_per_trial;
    let points = spec.path_points.min(n);
    let mut steps: Vec<u32> = (1..=points)
        .map(|k| ((u64::from(k) * u64::from(n)) / u64::from(points)) as u32)
        .collect();
    steps.dedup();
    steps
}

/// Signed for two arms, so the envelope shows which arm leads.
fn path_imbalance(counts: &[u32], ratios: &[u32]) -> f64 {
    match (counts, ratios) {
        ([a, b], [ra, rb]) => f64::from(*a) / f64::from(*ra) - f64::from(*b) / f64::from(*rb),
        _ => imbalance(counts, ratios),
    }
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
    balanced: Vec<u64>,
    cell_allocations: Vec<u64>,
    /// The overall cell's maximum imbalance per trial.
    overall_max: Vec<f64>,
    guesses: [f64; 3],
    proportional_guesses: f64,
    /// (rejections, trials tested) for selection and chronological bias.
    bias_tests: [(u32, u32); 2],
    /// Per path step, the imbalance of every trial.
    paths: Vec<Vec<f64>>,
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
            balanced: vec![0; n],
            cell_allocations: vec![0; n],
            overall_max: Vec::new(),
            guesses: [0.0; 3],
            proportional_guesses: 0.0,
            bias_tests: [(0, 0); 2],
            paths: Vec::new(),
            deterministic: 0,
            allocations: 0,
            trials: 0,
        }
    }

    fn add(&mut self, outcome: TrialOutcome) {
        for (index, cell) in outcome.cells.iter().enumerate().take(self.cell_names.len()) {
            self.finals[index].push(cell.last);
            self.max_sums[index] += cell.max;
            self.worst[index] = self.worst[index].max(cell.max);
            self.balanced[index] += cell.balanced;
            self.cell_allocations[index] += cell.allocations;
        }
        if let Some(overall) = outcome.cells.first() {
            self.overall_max.push(overall.max);
        }
        self.proportional_guesses += outcome.proportional_guesses;
        if self.paths.len() < outcome.path.len() {
            self.paths.resize(outcome.path.len(), Vec::new());
        }
        for (values, value) in self.paths.iter_mut().zip(&outcome.path) {
            values.push(*value);
        }
        for (tally, rejected) in self
            .bias_tests
            .iter_mut()
            .zip([outcome.selection_rejected, outcome.chronological_rejected])
        {
            if let Some(rejected) = rejected {
                tally.0 += u32::from(rejected);
                tally.1 += 1;
            }
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
        let final_imbalance_distribution = self
            .finals
            .first()
            .map(|f| distribution(f))
            .unwrap_or_default();
        let max_imbalance_distribution = distribution(&self.overall_max);
        let imbalance = self
            .cell_names
            .iter()
            .zip(self.finals)
            .enumerate()
            .map(|(index, ((scope, name), mut finals))| {
                finals.sort_by(f64::total_cmp);
                ImbalanceRow {
                    scope,
                    name: name.clone(),
                    mean_final: finals.iter().sum::<f64>() / trials,
                    rms_final: (finals.iter().map(|d| d * d).sum::<f64>() / trials).sqrt(),
                    p95_final: percentile(&finals, 0.95),
                    mean_max: self.max_sums[index] / trials,
                    worst_max: self.worst[index],
                    balanced_proportion: self.balanced[index] as f64
                        / self.cell_allocations[index].max(1) as f64,
                }
            })
            .collect();
        let bias_test = |size: Option<f64>, (rejections, tested): (u32, u32)| {
            size.map(|size| BiasTest {
                size,
                nominal_level: spec.bias.alpha(),
                // No trial tested (each put every subject in one arm): no
                // rate, rather than a rate of 0 that reads as unbiased.
                rejection_rate: if tested == 0 {
                    f64::NAN
                } else {
                    f64::from(rejections) / f64::from(tested)
                },
                trials_tested: tested,
            })
        };
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
            proportional_guess_rate: self.proportional_guesses / allocations,
            final_imbalance_distribution,
            max_imbalance_distribution,
            selection_bias: bias_test(spec.bias.selection_eta, self.bias_tests[0]),
            chronological_bias: bias_test(spec.bias.time_trend, self.bias_tests[1]),
            imbalance_path: path_quantiles(self.paths, &path_steps(spec)),
        }
    }
}

fn path_quantiles(paths: Vec<Vec<f64>>, steps: &[u32]) -> Vec<PathQuantiles> {
    paths
        .into_iter()
        .zip(steps)
        .map(|(mut values, step)| {
            values.sort_by(f64::total_cmp);
            PathQuantiles {
                step: *step,
                p05: percentile(&values, 0.05),
                p25: percentile(&values, 0.25),
                p50: percentile(&values, 0.5),
                p75: percentile(&values, 0.75),
                p95: percentile(&values, 0.95),
            }
        })
        .collect()
}

/// Trials per distinct imbalance value, in increasing order. Values are
/// sums of ratio-scaled counts, so equal imbalances are equal floats.
fn distribution(values: &[f64]) -> Vec<ImbalanceBin> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut bins: Vec<ImbalanceBin> = Vec::new();
    for value in sorted {
        match bins.last_mut() {
            Some(bin) if (bin.imbalance - value).abs() < 1e-9 => bin.trials += 1,
            _ => bins.push(ImbalanceBin {
                imbalance: value,
                trials: 1,
            }),
        }
    }
    bins
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

mod stats;

#[cfg(test)]
mod tests;
