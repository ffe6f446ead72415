//! Simulation speed in allocations per second, through the live method
//! code: permuted blocks on RESPINE, and minimisation over three factors.
//! divan reports the median per run and items (allocations) per second.

use divan::counter::ItemsCount;
use equipoise_randomisation::simulation::{BiasSpec, LevelWeights, SimulationSpec, simulate};
use equipoise_trial::{TrialDefinition, parse_definition};

use equipoise_trial::examples::RESPINE;
const TRIALS: u32 = 1_000;

fn main() {
    divan::main();
}

fn definition(yaml: &str) -> TrialDefinition {
    parse_definition(yaml)
        .unwrap_or_else(|problems| panic!("benchmark design is invalid: {:?}", problems.0))
}

/// RESPINE with minimisation over site, baseline pain and sex.
fn minimisation_three_factors() -> TrialDefinition {
    let yaml = RESPINE
        .replace(
            "  - { id: conservative_care_failed, type: boolean }",
            "  - { id: conservative_care_failed, type: boolean }\n  - { id: sex, type: enum, values: [female, male] }",
        )
        .replace(
            "    - { id: baseline_pain, from: vas_mm, levels: { moderate: \"< 70\", severe: \">= 70\" } }",
            "    - { id: baseline_pain, from: vas_mm, levels: { moderate: \"< 70\", severe: \">= 70\" } }\n    - { id: sex }",
        )
        .replace(
            "  kind: permuted_blocks\n  block_sizes: [2, 4]            # drawn at random per block; concealed",
            "  kind: minimisation\n  factors: { site: 1, baseline_pain: 1, sex: 1 }\n  imbalance: range\n  p: 0.8",
        );
    definition(&yaml)
}

fn run(bencher: divan::Bencher, definition: &TrialDefinition) {
    let spec = SimulationSpec {
        trials: TRIALS,
        subjects_per_trial: 114,
        seed: 1,
        level_weights: LevelWeights::new(),
        bias: BiasSpec::default(),
        path_points: 0,
    };
    bencher
        .counter(ItemsCount::new(u64::from(TRIALS) * 114))
        .bench(|| simulate(definition, &spec, u64::MAX, &mut |_| {}).map(|r| r.allocations));
}

#[divan::bench(sample_count = 10)]
fn permuted_blocks_respine(bencher: divan::Bencher) {
    run(bencher, &definition(RESPINE));
}

#[divan::bench(sample_count = 10)]
fn minimisation_three_factors_respine(bencher: divan::Bencher) {
    run(bencher, &minimisation_three_factors());
}

/// The README's comparison designs: 50 subjects, two arms, no strata.
mod procedures {
    use super::*;

    fn bench_design(bencher: divan::Bencher, yaml: &str) {
        let definition = definition(yaml);
        let spec = SimulationSpec {
            trials: TRIALS,
            subjects_per_trial: 50,
            seed: 1,
            level_weights: LevelWeights::new(),
            bias: BiasSpec::default(),
            path_points: 0,
        };
        bencher
            .counter(ItemsCount::new(u64::from(TRIALS) * 50))
            .bench(|| simulate(&definition, &spec, u64::MAX, &mut |_| {}).map(|r| r.allocations));
    }

    macro_rules! procedure {
        ($name:ident, $file:literal) => {
            #[divan::bench(sample_count = 10)]
            fn $name(bencher: divan::Bencher) {
                bench_design(
                    bencher,
                    include_str!(concat!("../../../docs/comparison/", $file)),
                );
            }
        };
    }

    procedure!(permuted_blocks_4, "pbr4.yaml");
    procedure!(random_allocation_rule, "rar.yaml");
    procedure!(truncated_binomial, "tbd.yaml");
    procedure!(maximal_procedure_3, "mp3.yaml");
    procedure!(big_stick_3, "bsd3.yaml");
    procedure!(chen_biased_coin, "chen.yaml");
    procedure!(efron_biased_coin, "efron.yaml");
    procedure!(adjustable_biased_coin, "abcd2.yaml");
    procedure!(generalised_biased_coin, "gbcd2.yaml");
    procedure!(urn_ud01, "ud01.yaml");
}
