//! Minimisation: every decision replays from the log and the seed.

use equipoise_trial::MethodSpec;
use equipoise_trial::examples::FACET_CROSSOVER as FACET_YAML;
use serde_json::json;

use crate::methods::{Margins, minimise};
use crate::service::allocate::MINIMISATION_STREAM;
use equipoise_stream::{derive_stream, nth_unit_draw};

use super::*;

#[tokio::test]
async fn every_minimisation_decision_replays_exactly_from_the_log_and_the_seed() {
    let fixture = Fixture::new().await;
    let definition = fixture.activate(FACET_YAML).await;
    let MethodSpec::Minimisation {
        weights,
        imbalance,
        p,
    } = &definition.method
    else {
        panic!("FACET-X uses minimisation, not {:?}", definition.method);
    };

    for index in 0..40 {
        // An uneven mix, so margins drift and the preferred arm changes.
        let sex = if (index * 7) % 5 < 2 {
            "female"
        } else {
            "male"
        };
        fixture
            .randomise(
                "US-ROC",
                &format!("FX-{index:02}"),
                "FACET-X",
                facet_subject(sex),
            )
            .await
            .unwrap_or_else(|error| panic!("subject {index} is eligible: {error:?}"));
    }

    let (seed, version) = fixture.master_seed("FACET-X").await;
    let mut stream = derive_stream(&seed, MINIMISATION_STREAM, version);
    let history = fixture.stream("FACET-X", MINIMISATION_STREAM).await;
    assert_eq!(history.len(), 40);
    let level_counts: Vec<usize> = definition
        .stratification
        .iter()
        .map(|f| f.levels.len())
        .collect();
    let mut margins = Margins::new(&level_counts, definition.arms.len());
    for (position, allocation) in history.iter().enumerate() {
        assert_eq!(allocation.position, position as u64);
        let levels = definition
            .parse_stratum_key(&allocation.stratum)
            .unwrap_or_else(|| panic!("{} is a stratum of FACET-X", allocation.stratum));
        let logged: serde_json::Value =
            serde_json::from_str(&allocation.decision_json).expect("the decision log is JSON");
        for key in ["scores", "probabilities", "draw"] {
            assert!(
                logged.get(key).is_some(),
                "decision log lacks {key}: {logged}"
            );
        }
        // The draw must be the stream's, not merely self-consistent.
        let draw = nth_unit_draw(&mut stream, position as u64);
        let replayed = minimise(
            &margins,
            &levels,
            weights,
            *imbalance,
            *p,
            &definition.ratios(),
            draw,
        );
        assert_eq!(
            definition.arms[replayed.arm].id, allocation.arm,
            "arm at position {position}"
        );
        // Compared as the service rendered them: serde_json's default float
        // parsing may be a ULP off, its printing is exact.
        let rendered = json!({ "scores": replayed.scores, "probabilities": replayed.probabilities, "draw": replayed.draw });
        assert_eq!(
            rendered.to_string(),
            allocation.decision_json,
            "decision at position {position}"
        );
        margins.record(&levels, replayed.arm);
    }

    let forty_first = fixture
        .randomise("US-ROC", "FX-40", "FACET-X", facet_subject("female"))
        .await;
    assert!(
        matches!(forty_first, Err(RandomisationError::CapReached(_))),
        "{forty_first:?}"
    );
}

// Minimisation logs each 17-digit draw in its audit details; the chain
// must survive the JSON round trip through the store.
#[tokio::test]
async fn a_minimisation_trials_audit_chain_verifies() {
    let fixture = Fixture::new().await;
    fixture.activate(FACET_YAML).await;
    // 40 draws: with roughly 1 in 10 failing to round-trip, a break is near certain.
    for index in 0..40 {
        let sex = if index % 2 == 0 { "female" } else { "male" };
        fixture
            .randomise(
                "US-ROC",
                &format!("FX-{index:02}"),
                "FACET-X",
                facet_subject(sex),
            )
            .await
            .unwrap_or_else(|error| panic!("subject {index} is eligible: {error:?}"));
    }
    fixture.assert_audit_chain_verifies().await;
}
