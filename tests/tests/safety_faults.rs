//! The three services as separate processes, with the blinding service
//! killed (SIGKILL) while 20 potential SUSARs are reported. Their cases are
//! saved as pending; once blinding is back every case is classified, every
//! obligation exists once, and all three audit chains verify.

use std::collections::BTreeSet;
use std::time::Duration;

use equipoise_blinding::store::Store as _;
use equipoise_common::audit::verify_chain;
use equipoise_proto::safety::v1 as spb;
use equipoise_randomisation::store::Store as _;
use equipoise_safety::store::Store as _;
use equipoise_tests::system::System;
use equipoise_tests::{RESPINE_YAML, potential_susar, respine_request};

#[tokio::test(flavor = "multi_thread")]
async fn blinding_killed_while_twenty_potential_susars_are_reported() {
    let mut system = System::separate(&[(
        "EQUIPOISE_SAFETY__CLASSIFICATION_RETRY_INTERVAL_MS",
        "200".to_owned(),
    )]);
    system.activate(RESPINE_YAML).await;
    let site_token = system.token("sam", &["site_investigator"], &["FR-MTP"]);
    let mut randomisation = system.randomisation_client(&site_token).await;
    let subjects: Vec<String> = (1..=20).map(|n| format!("MTP-{n:03}")).collect();
    for (n, subject) in subjects.iter().enumerate() {
        let vas = if n % 2 == 0 { 55.0 } else { 80.0 };
        randomisation
            .randomise(respine_request("FR-MTP", subject, vas))
            .await
            .expect("randomise");
    }

    system.blinding.as_mut().expect("separate blinding").kill();
    let mut site = system.safety_client(&site_token).await;
    let mut cases = Vec::new();
    for subject in &subjects {
        let case = site
            .report_case(spb::ReportCaseRequest {
                report: Some(potential_susar(subject)),
            })
            .await
            .expect("a report is saved while blinding is down")
            .into_inner();
        assert_eq!(case.classification, spb::Classification::Pending as i32);
        cases.push(case.case_id);
    }
    system
        .blinding
        .as_mut()
        .expect("separate blinding")
        .restart();

    let officer_token = system.token("pv", &["safety_officer"], &[]);
    let mut officer = system.safety_client(&officer_token).await;
    let mut susars = BTreeSet::new();
    for case_id in &cases {
        let case = loop {
            let case = officer
                .get_case(spb::GetCaseRequest {
                    case_id: case_id.clone(),
                    version: 0,
                })
                .await
                .expect("case")
                .into_inner();
            if case.classification != spb::Classification::Pending as i32 {
                break case;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        match spb::Classification::try_from(case.classification) {
            Ok(spb::Classification::Susar) => {
                assert_eq!(case.obligations.len(), 1, "{case_id}: one obligation");
                susars.insert(case_id.clone());
            }
            Ok(spb::Classification::NotReportable) => assert!(case.obligations.is_empty()),
            other => panic!("{case_id} classified as {other:?}"),
        }
    }
    let queue = officer
        .list_obligations(spb::ListObligationsRequest {
            trial_id: "RESPINE".into(),
            include_submitted: true,
        })
        .await
        .expect("queue")
        .into_inner()
        .obligations;
    let obligated: Vec<&String> = queue.iter().map(|o| &o.case_id).collect();
    assert_eq!(
        obligated.len(),
        susars.len(),
        "every obligation exists once"
    );
    assert!(obligated.iter().all(|c| susars.contains(*c)));
    assert!(
        !susars.is_empty() && susars.len() < 20,
        "both arms occur in 20 subjects"
    );

    let randomisation_store =
        equipoise_randomisation::store::sqlite::SqliteStore::open(&system.randomisation_db())
            .await
            .expect("randomisation store");
    verify_chain(
        &randomisation_store
            .audit_records(1, u32::MAX)
            .await
            .expect("audit"),
    )
    .expect("randomisation chain");
    let blinding_store =
        equipoise_blinding::store::sqlite::SqliteStore::open(&system.blinding_db())
            .await
            .expect("blinding store");
    verify_chain(
        &blinding_store
            .audit_records(1, u32::MAX)
            .await
            .expect("audit"),
    )
    .expect("blinding chain");
    let safety_store = equipoise_safety::store::sqlite::SqliteStore::open(&system.safety_db())
        .await
        .expect("safety store");
    verify_chain(
        &safety_store
            .audit_records(1, u32::MAX)
            .await
            .expect("audit"),
    )
    .expect("safety chain");
}
