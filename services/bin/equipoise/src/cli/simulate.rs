//! `equipoise simulate`: the simulator on a definition file, with progress.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use equipoise_randomisation::simulation::{
    BiasSpec, BiasTest, ImbalanceBin, LevelWeights, SimulationReport, SimulationSpec, simulate,
};
use indicatif::{ProgressBar, ProgressStyle};

use super::offline::read_definition;
use super::plot;
use crate::CliError;
use equipoise_trial::TrialDefinition;

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    #[arg(long, required_unless_present = "compare", conflicts_with = "compare")]
    pub definition: Option<PathBuf>,
    /// Several designs simulated alike (same trials, subjects and seed) and
    /// compared side by side; they must have the same arms and sample size.
    #[arg(long, num_args = 2..)]
    pub compare: Vec<PathBuf>,
    /// Write SVG figures into this directory.
    #[arg(long)]
    pub plot: Option<PathBuf>,
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
    /// Selection bias eta: assess the t-test's type I error when responses
    /// shift by ±eta with the convergence guess (two arms).
    #[arg(long, allow_hyphen_values = true)]
    pub selection_bias: Option<f64>,
    /// Chronological bias theta: a linear time trend theta·i/n (two arms).
    #[arg(long, allow_hyphen_values = true)]
    pub time_trend: Option<f64>,
    /// Nominal two-sided level of the bias assessments (default 0.05).
    #[arg(long)]
    pub alpha: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
}

/// Points of the imbalance path kept for the envelope figure.
const PATH_POINTS: u32 = 100;

/// A design read from its file, with its label and sample size.
struct Design {
    label: String,
    definition: TrialDefinition,
    subjects: u32,
}

pub fn run(args: &SimulateArgs) -> Result<String, CliError> {
    let paths: Vec<PathBuf> = match &args.definition {
        Some(path) => vec![path.clone()],
        None => args.compare.clone(),
    };
    let designs = paths
        .iter()
        .map(|path| read_design(path, args.subjects))
        .collect::<Result<Vec<_>, _>>()?;
    check_comparable(&designs)?;
    let seed = match args.seed {
        Some(seed) => seed,
        None => getrandom::u64().map_err(|e| CliError::Usage(e.to_string()))?,
    };
    let bar = ProgressBar::new(u64::from(args.trials) * designs.len() as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} trials ({per_sec}, {eta} left)")
    {
        bar.set_style(style);
    }
    let mut reports = Vec::new();
    for (index, design) in designs.iter().enumerate() {
        let done_before = u64::from(args.trials) * index as u64;
        let report = simulate_one(args, design, seed, &mut |done| {
            bar.set_position(done_before + u64::from(done))
        })?;
        reports.push(report);
    }
    bar.finish_and_clear();
    let mut figures = String::new();
    if let Some(dir) = &args.plot {
        let runs: Vec<plot::Run<'_>> = designs
            .iter()
            .zip(&reports)
            .map(|(design, report)| plot::Run {
                label: design.label.clone(),
                report,
            })
            .collect();
        for file in plot::write_figures(dir, &runs)? {
            let _ = writeln!(figures, "wrote {}", file.display());
        }
    }
    let output = match (&designs[..], &reports[..]) {
        ([design], [report]) => single(args.format, &design.definition.id, report)?,
        _ => comparison(args.format, &designs, &reports)?,
    };
    Ok(output + &figures)
}

fn read_design(path: &Path, subjects: Option<u32>) -> Result<Design, CliError> {
    let definition = read_definition(path)?;
    let subjects = match (subjects, definition.caps.total) {
        (Some(n), _) | (None, Some(n)) => n,
        (None, None) => {
            return Err(CliError::Usage(format!(
                "--subjects is required: {} has no total cap",
                path.display()
            )));
        }
    };
    let stem = path.file_stem().map_or_else(
        || definition.id.clone(),
        |s| s.to_string_lossy().into_owned(),
    );
    Ok(Design {
        label: format!("{stem} ({})", definition.method.kind()),
        definition,
        subjects,
    })
}

/// Compared designs must answer the same question: the same number of arms
/// and the same number of subjects per trial.
fn check_comparable(designs: &[Design]) -> Result<(), CliError> {
    let Some(first) = designs.first() else {
        return Err(CliError::Usage("no design to simulate".into()));
    };
    for other in &designs[1..] {
        let (a, b) = (first.definition.arms.len(), other.definition.arms.len());
        if a != b {
            return Err(CliError::Usage(format!(
                "--compare needs designs with the same arms: {} has {a} arms, {} has {b}",
                first.label, other.label
            )));
        }
        if first.subjects != other.subjects {
            return Err(CliError::Usage(format!(
                "--compare needs one sample size: {} has {} subjects per trial, {} has {} (their total caps); give --subjects to compare them at one size",
                first.label, first.subjects, other.label, other.subjects
            )));
        }
    }
    Ok(())
}

fn simulate_one(
    args: &SimulateArgs,
    design: &Design,
    seed: u64,
    progress: &mut dyn FnMut(u32),
) -> Result<SimulationReport, CliError> {
    let definition = &design.definition;
    let subjects = design.subjects;
    let spec = SimulationSpec {
        trials: args.trials,
        subjects_per_trial: subjects,
        seed,
        level_weights: parse_weights(&args.weights)?,
        bias: BiasSpec {
            selection_eta: args.selection_bias,
            time_trend: args.time_trend,
            alpha: args.alpha,
        },
        path_points: if args.plot.is_some() { PATH_POINTS } else { 0 },
    };
    simulate(definition, &spec, args.max_allocations, progress)
        .map_err(|e| CliError::Usage(format!("{}: {e}", design.label)))
}

fn single(format: OutputFormat, id: &str, report: &SimulationReport) -> Result<String, CliError> {
    Ok(match format {
        OutputFormat::Table => table(id, report),
        OutputFormat::Json => {
            serde_json::to_string_pretty(report).map_err(|e| CliError::Usage(e.to_string()))?
        }
        OutputFormat::Csv => csv(report),
    })
}

/// One row per design: the overall balance, predictability and bias.
fn comparison(
    format: OutputFormat,
    designs: &[Design],
    reports: &[SimulationReport],
) -> Result<String, CliError> {
    if format == OutputFormat::Json {
        let labelled: Vec<serde_json::Value> = designs
            .iter()
            .zip(reports)
            .map(|(d, r)| serde_json::json!({ "design": d.label, "report": r }))
            .collect();
        return serde_json::to_string_pretty(&labelled).map_err(|e| CliError::Usage(e.to_string()));
    }
    let header = [
        "design",
        "mean_final",
        "sd_final",
        "balanced",
        "mean_max",
        "worst_max",
        "guess_convergence",
        "guess_proportional",
        "deterministic",
        "selection_type_i",
        "chronological_type_i",
    ];
    let rows: Vec<Vec<String>> = designs
        .iter()
        .zip(reports)
        .map(|(design, report)| comparison_row(&design.label, report))
        .collect();
    let mut out = String::new();
    if format == OutputFormat::Csv {
        let _ = writeln!(out, "{}", header.join(","));
        for row in rows {
            let _ = writeln!(out, "\"{}\",{}", row[0], row[1..].join(","));
        }
        return Ok(out);
    }
    if let Some(report) = reports.first() {
        let _ = writeln!(
            out,
            "{} simulated trials x {} subjects per design, seed {}; overall imbalance",
            report.trials, report.subjects_per_trial, report.seed
        );
    }
    let width = designs
        .iter()
        .map(|d| d.label.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = write!(out, "{:<width$}", header[0]);
    for name in &header[1..] {
        let _ = write!(out, " {name:>10}");
    }
    out.push('\n');
    for row in rows {
        let _ = write!(out, "{:<width$}", row[0]);
        for cell in &row[1..] {
            let _ = write!(out, " {cell:>10}");
        }
        out.push('\n');
    }
    Ok(out)
}

fn comparison_row(label: &str, report: &SimulationReport) -> Vec<String> {
    let overall = report.imbalance.first();
    let field = |f: fn(&equipoise_randomisation::simulation::ImbalanceRow) -> f64| {
        overall.map_or_else(String::new, |row| format!("{:.3}", f(row)))
    };
    let bias = |test: &Option<BiasTest>| {
        test.as_ref()
            .map_or_else(|| "-".to_owned(), |t| format!("{:.4}", t.rejection_rate))
    };
    vec![
        label.to_owned(),
        field(|r| r.mean_final),
        field(|r| r.rms_final),
        field(|r| r.balanced_proportion),
        field(|r| r.mean_max),
        field(|r| r.worst_max),
        format!("{:.4}", report.correct_guess_rate_stratum),
        format!("{:.4}", report.proportional_guess_rate),
        format!("{:.4}", report.deterministic_rate),
        bias(&report.selection_bias),
        bias(&report.chronological_bias),
    ]
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
        "correct-guess rate (proportional strategy, stratum): {:.4}",
        report.proportional_guess_rate
    );
    let _ = writeln!(
        out,
        "deterministic-assignment rate: {:.4}",
        report.deterministic_rate
    );
    for (name, test) in [
        ("selection bias (eta)", &report.selection_bias),
        ("chronological bias (theta)", &report.chronological_bias),
    ] {
        if let Some(test) = test {
            let _ = writeln!(out, "{}", bias_line(name, test));
        }
    }
    let _ = writeln!(out, "imbalance = max(n_i/r_i) - min(n_i/r_i)");
    let _ = writeln!(
        out,
        "{:<8} {:<44} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "scope", "name", "mean_final", "sd_final", "p95_final", "mean_max", "worst_max", "balanced"
    );
    for row in &report.imbalance {
        let _ = writeln!(
            out,
            "{:<8} {:<44} {:>10.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.4}",
            row.scope,
            row.name,
            row.mean_final,
            row.rms_final,
            row.p95_final,
            row.mean_max,
            row.worst_max,
            row.balanced_proportion
        );
    }
    for (name, bins) in [
        ("final", &report.final_imbalance_distribution),
        ("maximum", &report.max_imbalance_distribution),
    ] {
        let _ = writeln!(out, "overall {name} imbalance: {}", histogram(bins));
    }
    out
}

fn bias_line(name: &str, test: &BiasTest) -> String {
    format!(
        "{name} = {}: t-test type I error {:.4} at nominal {} ({} trials tested)",
        test.size, test.rejection_rate, test.nominal_level, test.trials_tested
    )
}

/// `value: trials` pairs on one line.
fn histogram(bins: &[ImbalanceBin]) -> String {
    bins.iter()
        .map(|bin| format!("{}: {}", bin.imbalance, bin.trials))
        .collect::<Vec<_>>()
        .join(", ")
}

fn csv(report: &SimulationReport) -> String {
    let mut out = String::from(
        "scope,name,mean_final,p95_final,mean_max,worst_max,sd_final,balanced_proportion\n",
    );
    for row in &report.imbalance {
        let _ = writeln!(
            out,
            "{},\"{}\",{},{},{},{},{},{}",
            row.scope,
            row.name,
            row.mean_final,
            row.p95_final,
            row.mean_max,
            row.worst_max,
            row.rms_final,
            row.balanced_proportion
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
        ("proportional_guess_rate", report.proportional_guess_rate),
    ];
    for (name, value) in summary {
        let _ = writeln!(out, "summary,{name},{value},,,,,");
    }
    for (name, test) in [
        ("selection_bias_type_i_error", &report.selection_bias),
        (
            "chronological_bias_type_i_error",
            &report.chronological_bias,
        ),
    ] {
        if let Some(test) = test {
            let _ = writeln!(out, "summary,{name},{},,,,,", test.rejection_rate);
        }
    }
    for (name, bins) in [
        ("final_imbalance", &report.final_imbalance_distribution),
        ("max_imbalance", &report.max_imbalance_distribution),
    ] {
        for bin in bins {
            let _ = writeln!(out, "{name},{},{},,,,,", bin.imbalance, bin.trials);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use equipoise_trial::examples::RESPINE;

    const BLOCKS: &str = "kind: permuted_blocks\n  block_sizes: [2, 4]";

    fn write_design(dir: &Path, name: &str, yaml: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, yaml).expect("written");
        path
    }

    fn args(compare: Vec<PathBuf>, plot: Option<PathBuf>) -> SimulateArgs {
        SimulateArgs {
            definition: None,
            compare,
            plot,
            trials: 200,
            subjects: None,
            seed: Some(3),
            weights: Vec::new(),
            format: OutputFormat::Table,
            max_allocations: 1_000_000,
            selection_bias: Some(0.5),
            time_trend: None,
            alpha: None,
        }
    }

    #[test]
    fn one_design_reports_every_metric() {
        let dir = tempfile::tempdir().expect("tempdir");
        let design = write_design(
            dir.path(),
            "chen.yaml",
            &RESPINE.replace(BLOCKS, "kind: chen_biased_coin\n  p: 0.7\n  bound: 2"),
        );
        let mut one = args(Vec::new(), None);
        one.definition = Some(design);
        one.time_trend = Some(-1.0);
        let table = run(&one).expect("simulated");
        for needle in [
            "RESPINE (chen_biased_coin): 200 simulated trials x 114 subjects, seed 3",
            "correct-guess rate (proportional strategy, stratum):",
            "selection bias (eta) = 0.5: t-test type I error",
            "chronological bias (theta) = -1: t-test type I error",
            "sd_final",
            "balanced",
            "overall final imbalance: ",
            "overall maximum imbalance: ",
        ] {
            assert!(table.contains(needle), "no '{needle}' in\n{table}");
        }
        one.format = OutputFormat::Csv;
        let csv = run(&one).expect("simulated");
        assert!(
            csv.contains("summary,selection_bias_type_i_error,"),
            "{csv}"
        );
        assert!(csv.contains("\nmax_imbalance,"), "{csv}");
    }

    #[test]
    fn compare_refuses_designs_of_other_arms_or_sizes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let two = write_design(dir.path(), "two.yaml", RESPINE);
        let three = write_design(
            dir.path(),
            "three.yaml",
            &RESPINE
                .replace(BLOCKS, "kind: permuted_blocks\n  block_sizes: [3, 6]")
                .replace(
                    "  - { id: SHAM,",
                    "  - { id: LOW, label: \"Low dose\", ratio: 1 }\n  - { id: SHAM,",
                ),
        );
        let larger = write_design(
            dir.path(),
            "larger.yaml",
            &RESPINE.replace("caps: { total: 114 }", "caps: { total: 100 }"),
        );
        let arms = run(&args(vec![two.clone(), three], None)).expect_err("refused");
        assert!(arms.to_string().contains("same arms"), "{arms}");
        let sizes = run(&args(vec![two.clone(), larger.clone()], None)).expect_err("refused");
        assert!(sizes.to_string().contains("one sample size"), "{sizes}");
        // One --subjects makes them comparable.
        let mut at_one_size = args(vec![two, larger], None);
        at_one_size.subjects = Some(60);
        assert!(run(&at_one_size).is_ok());
    }

    /// The figures are SVG with their axes described and one drawn series
    /// per design and quantile.
    #[test]
    fn plots_have_their_axes_and_series() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocks = write_design(dir.path(), "blocks.yaml", RESPINE);
        let coin = write_design(
            dir.path(),
            "urn.yaml",
            &RESPINE.replace(BLOCKS, "kind: urn\n  alpha: 1\n  beta: 1"),
        );
        let figures = dir.path().join("figures");
        let output = run(&args(vec![blocks, coin], Some(figures.clone()))).expect("simulated");
        assert!(output.contains("blocks (permuted_blocks)"), "{output}");
        assert!(output.contains("urn (urn)"), "{output}");
        for (file, axes, lines, circles) in [
            (
                "imbalance-envelope.svg",
                ["subjects randomised (i)", "imbalance D_i"],
                6,
                0,
            ),
            (
                "final-imbalance.svg",
                ["imbalance", "share of simulated trials"],
                2,
                2,
            ),
            (
                "max-imbalance.svg",
                ["imbalance", "share of simulated trials"],
                2,
                2,
            ),
            (
                "balance-randomness.svg",
                [
                    "SD(D_n) = sqrt(E[D_n^2])",
                    "correct-guess rate (convergence)",
                ],
                0,
                2,
            ),
        ] {
            let text = std::fs::read_to_string(figures.join(file)).expect("figure written");
            let svg = roxmltree::Document::parse(&text).expect("well-formed SVG");
            assert_eq!(svg.root_element().tag_name().name(), "svg");
            let texts: Vec<String> = svg
                .descendants()
                .filter(|n| n.has_tag_name("text"))
                .filter_map(|n| n.text().map(|t| t.trim().to_owned()))
                .collect();
            for axis in axes {
                assert!(
                    texts.iter().any(|t| t == axis),
                    "{file}: no axis '{axis}' in {texts:?}"
                );
            }
            for label in ["blocks (permuted_blocks)", "urn (urn)"] {
                assert!(
                    texts.iter().any(|t| t.starts_with(label)),
                    "{file}: no legend for {label}"
                );
            }
            // Series lines have many points; the legend's and the mesh's
            // are two-point lines.
            let series = svg
                .descendants()
                .filter(|n| n.has_tag_name("polyline"))
                .filter(|n| {
                    n.attribute("points")
                        .is_some_and(|p| p.split_whitespace().count() > 2)
                })
                .count();
            assert!(
                series >= lines,
                "{file}: {series} series lines, expected {lines}"
            );
            let points = svg
                .descendants()
                .filter(|n| n.has_tag_name("circle"))
                .count();
            assert!(points >= circles, "{file}: {points} points");
        }
    }
}
