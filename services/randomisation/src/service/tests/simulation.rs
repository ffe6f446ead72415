//! Simulation of registered and inline designs.

use equipoise_trial::examples::FACET_CROSSOVER as FACET_YAML;

use crate::service::{SimulateCommand, SimulationDesign};
use crate::simulation::LevelWeights;

use super::*;

#[tokio::test]
async fn simulation_runs_a_registered_or_inline_design_for_statisticians_only() {
    let fixture = Fixture::new().await;
    fixture
        .service
        .register_trial(&statistician(), RESPINE_YAML)
        .await
        .expect("registers");
    let by_trial = |trials: u32| SimulateCommand {
        design: SimulationDesign::Trial("RESPINE".to_owned()),
        trials,
        subjects_per_trial: 0,
        seed: 20_240_601,
        level_weights: LevelWeights::default(),
        bias: Default::default(),
    };

    let report = fixture
        .service
        .simulate(&statistician(), by_trial(200))
        .await
        .expect("simulates the registered design");
    assert_eq!(
        report.allocations,
        200 * 114,
        "0 subjects per trial means the total cap"
    );
    assert_eq!(report.subjects_per_trial, 114);
    assert_eq!(report.method, "permuted_blocks");

    let inline = fixture
        .service
        .simulate(
            &statistician(),
            SimulateCommand {
                design: SimulationDesign::Yaml(FACET_YAML.to_owned()),
                trials: 10,
                subjects_per_trial: 0,
                seed: 7,
                level_weights: LevelWeights::default(),
                bias: Default::default(),
            },
        )
        .await
        .expect("simulates an inline design");
    assert_eq!(inline.allocations, 10 * 40);
    assert_eq!(inline.method, "minimisation");

    let none = fixture.service.simulate(&statistician(), by_trial(0)).await;
    assert!(problem_paths(&none).iter().any(|p| p.contains("trials")));

    let by_site = fixture
        .service
        .simulate(&site("FR-MTP"), by_trial(10))
        .await;
    assert_permission_denied(&by_site);
}

/// Review I4: simulations beyond the configured number at once are
/// refused with RESOURCE_EXHAUSTED, not queued behind the ones computing.
#[tokio::test]
async fn simulations_beyond_the_limit_are_refused_until_one_finishes() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    let by_trial = |trials: u32| SimulateCommand {
        design: SimulationDesign::Trial("RESPINE".to_owned()),
        trials,
        subjects_per_trial: 0,
        seed: 20_240_601,
        level_weights: LevelWeights::default(),
        bias: Default::default(),
    };
    let running = fixture
        .service
        .simulations
        .clone()
        .try_acquire_many_owned(fixture.service.limits.max_concurrent_simulations)
        .expect("every permit, as if that many simulations were computing");
    let refused = fixture.service.simulate(&statistician(), by_trial(2)).await;
    match &refused {
        Err(RandomisationError::ResourceExhausted(message)) => {
            assert!(message.contains("already running"), "{message}");
        }
        other => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
    }
    drop(running);
    fixture
        .service
        .simulate(&statistician(), by_trial(2))
        .await
        .expect("simulates once a permit is free");
}
