//! Production's two PostgreSQL roles per service (README, "Database
//! roles"), end to end: `equipoise serve` as a real process, each service's
//! database owned by a role of its own that only migrates and grants at
//! start-up, and served through a runtime role that cannot get around the
//! triggers guarding the records.

use equipoise_common::store::conformance::assert_only_the_owner_can_tamper;
use equipoise_proto::safety::v1 as spb;
use equipoise_testkit::{PostgresServer, Replica};
use equipoise_tests::system::System;
use equipoise_tests::{RESPINE_YAML, potential_susar, respine_request};

#[tokio::test(flavor = "multi_thread")]
async fn every_service_serves_as_a_runtime_role_that_cannot_touch_its_records() {
    let postgres = PostgresServer::start();
    let randomisation = postgres.create_database_with_roles();
    let blinding = postgres.create_database_with_roles();
    let safety = postgres.create_database_with_roles();
    let system = System::all_in_one(&[
        (
            "EQUIPOISE_RANDOMISATION__DATABASE_URL",
            randomisation.runtime_url.clone(),
        ),
        (
            "EQUIPOISE_RANDOMISATION__DATABASE_OWNER_URL",
            randomisation.owner_url.clone(),
        ),
        (
            "EQUIPOISE_BLINDING__DATABASE_URL",
            blinding.runtime_url.clone(),
        ),
        (
            "EQUIPOISE_BLINDING__DATABASE_OWNER_URL",
            blinding.owner_url.clone(),
        ),
        ("EQUIPOISE_SAFETY__DATABASE_URL", safety.runtime_url.clone()),
        (
            "EQUIPOISE_SAFETY__DATABASE_OWNER_URL",
            safety.owner_url.clone(),
        ),
        (
            "EQUIPOISE_SAFETY__CLASSIFICATION_RETRY_INTERVAL_MS",
            "200".into(),
        ),
    ]);

    // Activation, an allocation and its treatment code, and a potential
    // SUSAR classified through a safety reveal: every service writes, as
    // its runtime role, every kind of row its flow needs.
    system.activate(RESPINE_YAML).await;
    let site = system.token("sam", &["site_investigator"], &["FR-MTP"]);
    let mut client = system.randomisation_client(&site).await;
    let allocation = client
        .randomise(respine_request("FR-MTP", "MTP-001", 75.0))
        .await
        .expect("randomise as the runtime role")
        .into_inner();
    assert!(
        !allocation.treatment_code.is_empty(),
        "blinding issued a code as its runtime role"
    );
    let mut reporter = system.safety_client(&site).await;
    let case = reporter
        .report_case(spb::ReportCaseRequest {
            report: Some(potential_susar("MTP-001")),
        })
        .await
        .expect("report as the runtime role")
        .into_inner();
    let officer = system.token("pv", &["safety_officer"], &[]);
    let mut officer = system.safety_client(&officer).await;
    let mut classification = spb::Classification::Pending as i32;
    for _ in 0..600 {
        classification = officer
            .get_case(spb::GetCaseRequest {
                case_id: case.case_id.clone(),
                version: 0,
            })
            .await
            .expect("case")
            .into_inner()
            .classification;
        if classification != spb::Classification::Pending as i32 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_ne!(
        classification,
        spb::Classification::Pending as i32,
        "classified through a safety reveal"
    );
    let logs = system.logs();
    assert!(
        !logs.contains("development only"),
        "no one-role warning with both URLs:\n{logs}"
    );

    assert_only_the_owner_can_tamper(
        &randomisation.owner_url,
        &randomisation.runtime_url,
        &equipoise_randomisation::store::postgres::SCHEMA,
    )
    .await;
    assert_only_the_owner_can_tamper(
        &blinding.owner_url,
        &blinding.runtime_url,
        &equipoise_blinding::store::postgres::SCHEMA,
    )
    .await;
    assert_only_the_owner_can_tamper(
        &safety.owner_url,
        &safety.runtime_url,
        &equipoise_safety::store::postgres::SCHEMA,
    )
    .await;
}

#[test]
fn start_up_refuses_a_runtime_role_that_could_disable_the_triggers() {
    let postgres = PostgresServer::start();
    let db = postgres.create_database_with_roles();
    // Never called: start-up stops before serving.
    let blinding = (
        "EQUIPOISE_RANDOMISATION__BLINDING_URL",
        "http://127.0.0.1:1".to_owned(),
    );

    let same = Replica::start_expecting_failure(&[
        blinding.clone(),
        (
            "EQUIPOISE_RANDOMISATION__DATABASE_URL",
            db.owner_url.clone(),
        ),
        (
            "EQUIPOISE_RANDOMISATION__DATABASE_OWNER_URL",
            db.owner_url.clone(),
        ),
    ]);
    assert!(
        same.contains(&format!(
            "randomisation.database_owner_url connects as role \"{}\", the same role as randomisation.database_url",
            db.owner
        )),
        "{same}"
    );

    let superuser = Replica::start_expecting_failure(&[
        blinding.clone(),
        (
            "EQUIPOISE_RANDOMISATION__DATABASE_URL",
            db.superuser_url.clone(),
        ),
        (
            "EQUIPOISE_RANDOMISATION__DATABASE_OWNER_URL",
            db.owner_url.clone(),
        ),
    ]);
    assert!(
        superuser.contains(
            "randomisation.database_url connects as role \"equipoise\", which is a superuser"
        ),
        "{superuser}"
    );

    let alone = Replica::start_expecting_failure(&[
        blinding,
        (
            "EQUIPOISE_RANDOMISATION__DATABASE_OWNER_URL",
            db.owner_url.clone(),
        ),
    ]);
    assert!(
        alone.contains(
            "randomisation.database_owner_url must be unset while randomisation.database_url is unset"
        ),
        "{alone}"
    );
}
