//! Randomised command sequences against caps and idempotency.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;

/// What the caps allow, computed independently of the store.
#[derive(Default)]
struct CapModel {
    /// subject → (site, vas, randomisation number).
    allocated: BTreeMap<String, (String, f64, String)>,
    by_site: BTreeMap<String, u32>,
    by_stratum: BTreeMap<String, u32>,
}

impl CapModel {
    const TOTAL: u32 = 20;
    const SITE: u32 = 6;
    const STRATUM: u32 = 4;

    fn would_admit(&self, site_id: &str, stratum: &str) -> bool {
        (self.allocated.len() as u32) < Self::TOTAL
            && self.by_site.get(site_id).copied().unwrap_or(0) < Self::SITE
            && self.by_stratum.get(stratum).copied().unwrap_or(0) < Self::STRATUM
    }
}

async fn run_command_sequence(commands: Vec<(u8, usize, bool)>) {
    let fixture = Fixture::new().await;
    let definition = fixture.activate(&small_respine_yaml()).await;
    let mut model = CapModel::default();

    for (subject_index, site_index, severe) in commands {
        let subject_id = format!("P-{subject_index:02}");
        let site_id = RESPINE_SITES[site_index];
        let vas = if severe { SEVERE_PAIN } else { MODERATE_PAIN };
        let stratum = respine_stratum(site_id, vas);
        let result = fixture
            .randomise(site_id, &subject_id, "RESPINE", respine_subject(vas))
            .await;
        match (model.allocated.get(&subject_id), &result) {
            (Some((old_site, old_vas, number)), Ok(outcome)) => {
                assert!(
                    old_site == site_id && *old_vas == vas,
                    "{subject_id} replayed with different data"
                );
                assert!(outcome.replayed);
                assert_eq!(&outcome.allocation.randomisation_number, number);
            }
            (Some((old_site, old_vas, _)), Err(RandomisationError::AlreadyExists(_))) => {
                assert!(
                    old_site != site_id || *old_vas != vas,
                    "an identical repeat must replay"
                );
                // Another site's subject answers as a new id would (review
                // C5): ALREADY_EXISTS only where a new id would be admitted.
                assert!(
                    old_site == site_id || model.would_admit(site_id, &stratum),
                    "another site's {subject_id} told apart from a new id at a cap"
                );
            }
            (Some((old_site, _, _)), Err(RandomisationError::CapReached(_))) => {
                assert!(
                    old_site != site_id,
                    "a changed repeat at its own site is ALREADY_EXISTS"
                );
                assert!(
                    !model.would_admit(site_id, &stratum),
                    "another site's {subject_id} refused below every cap"
                );
            }
            (None, Ok(outcome)) => {
                assert!(
                    model.would_admit(site_id, &stratum),
                    "{subject_id} admitted past a cap"
                );
                assert!(!outcome.replayed);
                assert_eq!(outcome.allocation.stratum, stratum);
                model.allocated.insert(
                    subject_id.clone(),
                    (
                        site_id.to_owned(),
                        vas,
                        outcome.allocation.randomisation_number.clone(),
                    ),
                );
                *model.by_site.entry(site_id.to_owned()).or_default() += 1;
                *model.by_stratum.entry(stratum).or_default() += 1;
            }
            (None, Err(RandomisationError::CapReached(_))) => {
                assert!(
                    !model.would_admit(site_id, &stratum),
                    "{subject_id} refused below every cap"
                );
            }
            (known, other) => {
                panic!("unexpected outcome for {subject_id} (known: {known:?}): {other:?}")
            }
        }
    }

    // The store agrees with the model and respects every cap.
    let counts = fixture.store.counts("RESPINE").await.expect("counts");
    assert_eq!(counts.total as usize, model.allocated.len());
    assert!(counts.total <= CapModel::TOTAL);
    assert!(
        counts.by_site.values().all(|&n| n <= CapModel::SITE),
        "{:?}",
        counts.by_site
    );
    assert!(
        counts.by_stratum.values().all(|&n| n <= CapModel::STRATUM),
        "{:?}",
        counts.by_stratum
    );

    let mut seen_subjects = BTreeSet::new();
    for levels in definition.all_strata() {
        let stratum = definition.stratum_key(&levels);
        let allocations = fixture.stream("RESPINE", &stratum).await;
        let positions: Vec<u64> = allocations.iter().map(|a| a.position).collect();
        assert_eq!(
            positions,
            (0..allocations.len() as u64).collect::<Vec<_>>(),
            "{stratum}"
        );
        for allocation in allocations {
            assert!(
                seen_subjects.insert(allocation.subject_id.clone()),
                "{} allocated twice",
                allocation.subject_id
            );
            let (_, _, number) = model
                .allocated
                .get(&allocation.subject_id)
                .unwrap_or_else(|| {
                    panic!("{} stored but never answered Ok", allocation.subject_id)
                });
            assert_eq!(&allocation.randomisation_number, number);
        }
    }
    assert_eq!(seen_subjects.len(), model.allocated.len());
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 16,
        // The failing case is printed on failure; no regression file is
        // written beside the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_command_sequences_respect_caps_and_idempotency(
        commands in prop::collection::vec((0u8..25, 0usize..RESPINE_SITES.len(), any::<bool>()), 0..=40)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime builds");
        runtime.block_on(run_command_sequence(commands));
    }
}
