//! `equipoise simulate --plot DIR`: SVG figures of simulated designs, drawn
//! with plotters' SVG backend (no fonts are loaded: text stays SVG text).

use std::path::{Path, PathBuf};

use equipoise_randomisation::simulation::{ImbalanceBin, SimulationReport};
use plotters::prelude::*;

use crate::CliError;

/// One simulated design and the name it goes by in the figures.
pub struct Run<'a> {
    pub label: String,
    pub report: &'a SimulationReport,
}

const SIZE: (u32, u32) = (720, 480);

/// Writes every figure into `dir` and returns the files written.
pub fn write_figures(dir: &Path, runs: &[Run<'_>]) -> Result<Vec<PathBuf>, CliError> {
    std::fs::create_dir_all(dir).map_err(|e| CliError::Usage(format!("{}: {e}", dir.display())))?;
    let figures: [(&str, Figure); 4] = [
        ("imbalance-envelope.svg", envelope),
        ("final-imbalance.svg", |path, runs| {
            distribution(path, runs, "Final imbalance |D_n|", |r| {
                &r.final_imbalance_distribution
            })
        }),
        ("max-imbalance.svg", |path, runs| {
            distribution(path, runs, "Maximum imbalance max_i |D_i|", |r| {
                &r.max_imbalance_distribution
            })
        }),
        ("balance-randomness.svg", balance_randomness),
    ];
    let mut written = Vec::new();
    for (name, draw) in figures {
        let path = dir.join(name);
        draw(&path, runs).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

type Figure = fn(&Path, &[Run<'_>]) -> Result<(), Box<dyn std::error::Error>>;

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<Ranged64, Ranged64>>;
type Ranged64 = plotters::coord::types::RangedCoordf64;

/// Every figure's legend, drawn alike, then the file written.
fn with_legend<'a>(
    chart: &mut Chart<'a, 'a>,
    root: &DrawingArea<SVGBackend<'a>, plotters::coord::Shift>,
) -> Result<(), Box<dyn std::error::Error>> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 11))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}

fn colour(index: usize) -> RGBColor {
    let (r, g, b) = Palette99::pick(index).to_rgba().rgb();
    RGBColor(r, g, b)
}

/// Lowest and highest of `values`, widened when they coincide.
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !low.is_finite() || !high.is_finite() {
        return (0.0, 1.0);
    }
    if high - low < 1e-9 {
        (low - 1.0, high + 1.0)
    } else {
        (low, high)
    }
}

/// Quantiles of D_i against i: 5 % and 95 % thin, the median thick.
fn envelope(path: &Path, runs: &[Run<'_>]) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let steps = span(
        runs.iter()
            .flat_map(|r| r.report.imbalance_path.iter().map(|p| f64::from(p.step))),
    );
    let values = span(
        runs.iter()
            .flat_map(|r| r.report.imbalance_path.iter().flat_map(|p| [p.p05, p.p95])),
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Imbalance path: 5 %, 50 % and 95 % quantiles",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..steps.1, values.0..values.1)?;
    chart
        .configure_mesh()
        .x_desc("subjects randomised (i)")
        .y_desc("imbalance D_i")
        .draw()?;
    for (index, run) in runs.iter().enumerate() {
        let colour = colour(index);
        let path = &run.report.imbalance_path;
        let series = [
            ("5 %", 1, path.iter().map(|p| p.p05).collect::<Vec<_>>()),
            ("median", 3, path.iter().map(|p| p.p50).collect()),
            ("95 %", 1, path.iter().map(|p| p.p95).collect()),
        ];
        for (quantile, width, ys) in series {
            let points = path.iter().map(|p| f64::from(p.step)).zip(ys);
            let drawn = chart.draw_series(LineSeries::new(points, colour.stroke_width(width)))?;
            // One legend entry per design, on its median.
            if quantile == "median" {
                drawn
                    .label(format!("{} (median; 5 %, 95 % thin)", run.label))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(width))
                    });
            }
        }
    }
    with_legend(&mut chart, &root)
}

/// Share of trials at each imbalance value, one polygon per design.
fn distribution(
    path: &Path,
    runs: &[Run<'_>],
    title: &str,
    bins: fn(&SimulationReport) -> &Vec<ImbalanceBin>,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let shares = |run: &Run<'_>| -> Vec<(f64, f64)> {
        let total = f64::from(run.report.trials.max(1));
        bins(run.report)
            .iter()
            .map(|b| (b.imbalance, b.trials as f64 / total))
            .collect()
    };
    let xs = span(
        runs.iter()
            .flat_map(|r| bins(r.report).iter().map(|b| b.imbalance)),
    );
    let top = runs
        .iter()
        .flat_map(|r| shares(r).into_iter().map(|(_, s)| s))
        .fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((xs.0 - 0.5)..(xs.1 + 0.5), 0.0..(top * 1.1).max(0.01))?;
    chart
        .configure_mesh()
        .x_desc("imbalance")
        .y_desc("share of simulated trials")
        .draw()?;
    for (index, run) in runs.iter().enumerate() {
        let colour = colour(index);
        let points = shares(run);
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
            .label(run.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
            });
        chart.draw_series(
            points
                .into_iter()
                .map(move |point| Circle::new(point, 3, colour.filled())),
        )?;
    }
    with_legend(&mut chart, &root)
}

/// Balance (SD of the final imbalance) against predictability (the
/// convergence guesser's rate), one point per design.
fn balance_randomness(path: &Path, runs: &[Run<'_>]) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let points: Vec<(f64, f64)> = runs
        .iter()
        .map(|r| {
            let sd = r.report.imbalance.first().map_or(0.0, |row| row.rms_final);
            (sd, r.report.correct_guess_rate_stratum)
        })
        .collect();
    let xs = span(points.iter().map(|p| p.0));
    let ys = span(points.iter().map(|p| p.1).chain([0.5]));
    // Neither an SD nor a rate is negative.
    let pad = |(low, high): (f64, f64)| {
        let margin = (high - low) * 0.15;
        (low - margin).max(0.0)..(high + margin)
    };
    let mut chart = ChartBuilder::on(&root)
        .caption("Balance and randomness", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(pad(xs), pad(ys))?;
    chart
        .configure_mesh()
        .x_desc("SD(D_n) = sqrt(E[D_n^2])")
        .y_desc("correct-guess rate (convergence)")
        .draw()?;
    for (index, (run, point)) in runs.iter().zip(points).enumerate() {
        let colour = colour(index);
        chart
            .draw_series(std::iter::once(Circle::new(point, 5, colour.filled())))?
            .label(run.label.clone())
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, colour.filled()));
    }
    with_legend(&mut chart, &root)
}
