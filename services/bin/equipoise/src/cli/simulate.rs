//! `equipoise simulate`: the simulator on a definition file, with progress.

use std::fmt::Write as _;
use std::path::PathBuf;

use equipoise_randomisation::simulation::{
    LevelWeights, SimulationReport, SimulationSpec, simulate,
};
use indicatif::{ProgressBar, ProgressStyle};

use super::offline::read_definition;
use crate::CliError;

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    #[arg(long)]
    pub definition: PathBuf,
    #[arg(long, default_value_t = 1_000)]
    pub trials: u32,
    /// Subjects per simulated trial; default the total cap.
    #[arg(long)]
    pub subjects: Option<u32>,
    /// Simulation seed; default a fresh one, printed with the results.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Level weights, e.g. --weight baseline_pain=severe:2 (repeatable).
    #[arg(long = "weight")]
    pub weights: Vec<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
    #[arg(long, default_value_t = 50_000_000)]
    pub max_allocations: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
}

pub fn run(args: &SimulateArgs) -> Result<String, CliError> {
    let definition = read_definition(&args.definition)?;
    let subjects = match (args.subjects, definition.caps.total) {
        (Some(n), _) | (None, Some(n)) => n,
        (None, None) => {
            return Err(CliError::Usage(
                "--subjects is required: the design has no total cap".into(),
            ));
        }
    };
    let seed = match args.seed {
        Some(seed) => seed,
        None => getrandom::u64().map_err(|e| CliError::Usage(e.to_string()))?,
    };
    let spec = SimulationSpec {
        trials: args.trials,
        subjects_per_trial: subjects,
        seed,
        level_weights: parse_weights(&args.weights)?,
    };
    let bar = ProgressBar::new(u64::from(args.trials));
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} trials ({per_sec}, {eta} left)")
    {
        bar.set_style(style);
    }
    let report = simulate(&definition, &spec, args.max_allocations, &mut |done| {
        bar.set_position(u64::from(done))
    })
    .map_err(|e| CliError::Usage(e.to_string()))?;
    bar.finish_and_clear();
    Ok(match args.format {
        OutputFormat::Table => table(&definition.id, &report),
        OutputFormat::Json => {
            serde_json::to_string_pretty(&report).map_err(|e| CliError::Usage(e.to_string()))?
        }
        OutputFormat::Csv => csv(&report),
    })
}

fn parse_weights(items: &[String]) -> Result<LevelWeights, CliError> {
    let mut weights = LevelWeights::new();
    for item in items {
        let parsed = item.split_once('=').and_then(|(factor, rest)| {
            let (level, weight) = rest.split_once(':')?;
            Some((factor, level, weight.parse::<f64>().ok()?))
        });
        let (factor, level, weight) = parsed.ok_or_else(|| {
            CliError::Usage(format!("--weight '{item}' is not factor=level:weight"))
        })?;
        weights
            .entry(factor.to_owned())
            .or_default()
            .insert(level.to_owned(), weight);
    }
    Ok(weights)
}

fn table(trial: &str, report: &SimulationReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{trial} ({}): {} simulated trials x {} subjects, seed {}",
        report.method, report.trials, report.subjects_per_trial, report.seed
    );
    let _ = writeln!(
        out,
        "correct-guess rate (convergence strategy): stratum history {:.4}, site history {:.4}, trial history {:.4}",
        report.correct_guess_rate_stratum,
        report.correct_guess_rate_site,
        report.correct_guess_rate_trial
    );
    let _ = writeln!(
        out,
        "mean correct guesses per trial (stratum history): {:.3}",
        report.mean_correct_guesses_per_trial
    );
    let _ = writeln!(
        out,
        "deterministic-assignment rate: {:.4}",
        report.deterministic_rate
    );
    let _ = writeln!(out, "imbalance = max(n_i/r_i) - min(n_i/r_i)");
    let _ = writeln!(
        out,
        "{:<8} {:<44} {:>10} {:>9} {:>9} {:>9}",
        "scope", "name", "mean_final", "p95_final", "mean_max", "worst_max"
    );
    for row in &report.imbalance {
        let _ = writeln!(
            out,
            "{:<8} {:<44} {:>10.3} {:>9.3} {:>9.3} {:>9.3}",
            row.scope, row.name, row.mean_final, row.p95_final, row.mean_max, row.worst_max
        );
    }
    out
}

fn csv(report: &SimulationReport) -> String {
    let mut out = String::from("scope,name,mean_final,p95_final,mean_max,worst_max\n");
    for row in &report.imbalance {
        let _ = writeln!(
            out,
            "{},\"{}\",{},{},{},{}",
            row.scope, row.name, row.mean_final, row.p95_final, row.mean_max, row.worst_max
        );
    }
    let summary = [
        (
            "correct_guess_rate_stratum",
            report.correct_guess_rate_stratum,
        ),
        ("correct_guess_rate_site", report.correct_guess_rate_site),
        ("correct_guess_rate_trial", report.correct_guess_rate_trial),
        ("deterministic_rate", report.deterministic_rate),
    ];
    for (name, value) in summary {
        let _ = writeln!(out, "summary,{name},{value},,,");
    }
    out
}
