//! Concurrent requests into one stratum.

use std::collections::BTreeSet;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_into_one_stratum_take_consecutive_positions_of_its_list() {
    let fixture = Arc::new(Fixture::new().await);
    let definition = fixture.activate(RESPINE_YAML).await;

    let tasks: Vec<_> = (0..32)
        .map(|index| {
            let fixture = Arc::clone(&fixture);
            tokio::spawn(async move {
                fixture
                    .randomise(
                        "FR-MTP",
                        &format!("C-{index:02}"),
                        "RESPINE",
                        respine_subject(MODERATE_PAIN),
                    )
                    .await
            })
        })
        .collect();
    let mut numbers = BTreeSet::new();
    for task in tasks {
        let outcome = task
            .await
            .expect("the task does not panic")
            .unwrap_or_else(|error| panic!("every concurrent request succeeds: {error:?}"));
        assert!(!outcome.replayed);
        numbers.insert(outcome.allocation.randomisation_number);
    }
    assert_eq!(numbers.len(), 32, "randomisation numbers are unique");

    let stratum = respine_stratum("FR-MTP", MODERATE_PAIN);
    let n = fixture
        .assert_stratum_matches_regenerated_list(&definition, &stratum)
        .await;
    assert_eq!(n, 32);
    fixture.assert_audit_chain_verifies().await;
}
