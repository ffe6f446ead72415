//! Randomisation and blinding as separate processes, with the blinding
//! process killed (SIGKILL) at the worst moments. Afterwards every
//! allocation has exactly one code, no code is used twice, every code
//! belongs to its allocation's arm, and both audit chains verify.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use equipoise_blinding::store::Store as BlindingStore;
use equipoise_blinding::store::sqlite::SqliteStore as BlindingSqlite;
use equipoise_common::audit::verify_chain;
use equipoise_common::error::RemoteError;
use equipoise_proto::randomisation::v1 as pb;
use equipoise_randomisation::store::Store as RandomisationStore;
use equipoise_randomisation::store::sqlite::SqliteStore as RandomisationSqlite;
use equipoise_tests::system::System;
use equipoise_tests::{Client, RESPINE_YAML, respine_request};
use tonic::Code;

const SITES: [(&str, u32); 5] = [
    ("FR-MTP", 40),
    ("FR-PAR", 30),
    ("ES-VLL", 25),
    ("IT-MIL", 25),
    ("DE-ULM", 25),
];

/// Randomises until the reply carries a code. An UNAVAILABLE reply must be
/// the "recorded, code pending" answer or a refused connection while a
/// process restarts; anything else fails the test.
async fn randomise_until_coded(
    client: &mut Client,
    request: pb::RandomiseRequest,
) -> pb::RandomiseResponse {
    for _ in 0..600 {
        match client.randomise(request.clone()).await {
            Ok(response) => {
                let response = response.into_inner();
                if !response.treatment_code.is_empty() {
                    return response;
                }
                panic!("a reply without a code must be UNAVAILABLE, not OK: {response:?}");
            }
            Err(status) if status.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("randomise {}: {status:?}", request.subject_id),
        }
    }
    panic!("{} never got a code", request.subject_id);
}

/// The invariants of the issue, read from both stores.
async fn assert_one_code_per_allocation(system: &System, subjects: &BTreeMap<String, String>) {
    let randomisation = RandomisationSqlite::open(&system.randomisation_db())
        .await
        .expect("randomisation store");
    let blinding = BlindingSqlite::open(&system.blinding_db())
        .await
        .expect("blinding store");
    let mut codes = BTreeSet::new();
    for (subject, code) in subjects {
        let allocation = randomisation
            .allocation("RESPINE", subject)
            .await
            .expect("read")
            .unwrap_or_else(|| panic!("{subject} has no allocation"));
        assert_eq!(
            allocation.treatment_code.as_deref(),
            Some(code.as_str()),
            "{subject}'s recorded code"
        );
        let assignment = blinding
            .assignment("RESPINE", subject)
            .await
            .expect("read")
            .unwrap_or_else(|| panic!("{subject} has no code in blinding"));
        assert_eq!(
            &assignment.code, code,
            "{subject}: both services hold one code"
        );
        assert_eq!(
            assignment.arm_id, allocation.arm,
            "{subject}: the code belongs to the allocation's arm"
        );
        assert!(codes.insert(code.clone()), "code {code} used twice");
    }
    let counts = randomisation.counts("RESPINE").await.expect("counts");
    assert_eq!(
        counts.total as usize,
        subjects.len(),
        "no allocation beyond the acknowledged ones"
    );
    let pools = blinding.pool_counts("RESPINE").await.expect("pool counts");
    let issued: u32 = pools.values().map(|p| p.issued).sum();
    assert_eq!(
        issued as usize,
        subjects.len(),
        "no code issued beyond the allocations"
    );
    let records = randomisation
        .audit_records(1, u32::MAX)
        .await
        .expect("audit");
    verify_chain(&records).unwrap_or_else(|e| panic!("randomisation audit chain: {e}"));
    let records = blinding.audit_records(1, u32::MAX).await.expect("audit");
    verify_chain(&records).unwrap_or_else(|e| panic!("blinding audit chain: {e}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn blinding_killed_between_commit_and_code() {
    let mut system = System::separate(&[
        (
            "EQUIPOISE_RANDOMISATION__FAULTS__HOLD_AFTER_COMMIT_MS",
            "3000".to_owned(),
        ),
        (
            "EQUIPOISE_RANDOMISATION__CODE_RECONCILE_INTERVAL_MS",
            "200".to_owned(),
        ),
    ]);
    system.activate(RESPINE_YAML).await;
    let site = system.token("sam", &["site_investigator"], &["FR-MTP"]);
    let mut client = system.randomisation_client(&site).await;

    let mut first = client.clone();
    let pending = tokio::spawn(async move {
        first
            .randomise(respine_request("FR-MTP", "MTP-001", 72.0))
            .await
    });
    // The commit is visible in the database while the reply is held back.
    let store = RandomisationSqlite::open(&system.randomisation_db())
        .await
        .expect("randomisation store");
    while store
        .allocation("RESPINE", "MTP-001")
        .await
        .expect("read")
        .is_none()
    {
        assert!(
            !pending.is_finished(),
            "the reply came before the commit was seen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    system.blinding.as_mut().expect("separate blinding").kill();
    let status = pending
        .await
        .expect("task")
        .expect_err("no code without blinding");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("pending"), "{}", status.message());
    let RemoteError::Unavailable { .. } = RemoteError::from_status(&status) else {
        panic!("UNAVAILABLE must read back as a retryable error");
    };
    let allocation = client
        .get_allocation(pb::GetAllocationRequest {
            trial_id: "RESPINE".into(),
            subject_id: "MTP-001".into(),
        })
        .await
        .expect("the allocation is recorded")
        .into_inner();
    assert!(allocation.treatment_code.is_empty(), "the code is pending");

    // Nobody retries: the reconciler completes the code once blinding is back.
    system
        .blinding
        .as_mut()
        .expect("separate blinding")
        .restart();
    let code = loop {
        let allocation = client
            .get_allocation(pb::GetAllocationRequest {
                trial_id: "RESPINE".into(),
                subject_id: "MTP-001".into(),
            })
            .await
            .expect("allocation")
            .into_inner();
        if !allocation.treatment_code.is_empty() {
            break allocation.treatment_code;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The EDC's late retry gets the same allocation and the same code.
    let retry = client
        .randomise(respine_request("FR-MTP", "MTP-001", 72.0))
        .await
        .expect("retry")
        .into_inner();
    assert!(retry.replayed);
    assert_eq!(retry.treatment_code, code);
    assert_eq!(
        retry.allocation.expect("allocation").randomisation_number,
        allocation.randomisation_number
    );
    let subjects = BTreeMap::from([("MTP-001".to_owned(), code)]);
    assert_one_code_per_allocation(&system, &subjects).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn respine_randomised_while_blinding_restarts_twice() {
    let mut system = System::separate(&[(
        "EQUIPOISE_RANDOMISATION__CODE_RECONCILE_INTERVAL_MS",
        "200".to_owned(),
    )]);
    system.activate(RESPINE_YAML).await;
    let mut subjects = BTreeMap::new();
    let mut n = 0u32;
    for (site, cap) in SITES {
        let token = system.token("edc", &["site_coordinator"], &[site]);
        let mut client = system.randomisation_client(&token).await;
        for _ in 0..cap {
            if n == 114 {
                break;
            }
            n += 1;
            let subject = format!("{site}-{n:03}");
            let vas = if n.is_multiple_of(3) { 80.0 } else { 55.0 };
            let request = respine_request(site, &subject, vas);
            if n == 38 || n == 76 {
                // Blinding dies: the allocation commits and its code waits.
                system.blinding.as_mut().expect("separate blinding").kill();
                let status = client
                    .randomise(request.clone())
                    .await
                    .expect_err("no code while blinding is down");
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                system
                    .blinding
                    .as_mut()
                    .expect("separate blinding")
                    .restart();
            }
            let response = randomise_until_coded(&mut client, request).await;
            subjects.insert(subject, response.treatment_code);
        }
    }
    assert_eq!(subjects.len(), 114);
    assert_one_code_per_allocation(&system, &subjects).await;
}
