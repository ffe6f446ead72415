//! Five site EDC systems randomise all 114 RESPINE subjects at once over
//! real gRPC. Afterwards: every subject exactly once, every stratum equal to
//! its seeded stream, and an audit chain that verifies.

use std::collections::BTreeSet;

use equipoise::cli::AuditedService;
use equipoise::cli::offline::audit_verify;
use equipoise_proto::randomisation::v1 as pb;
use equipoise_randomisation::store::Store;
use equipoise_tests::{
    RESPINE_YAML, TestServer, activate, assert_strata_follow_their_streams, respine_request,
};
use equipoise_trial::parse_definition;

/// Subjects per site, within the site caps (40, 30, 25, 25, 25), adding to 114.
const SITE_QUOTAS: [(&str, usize); 5] = [
    ("FR-MTP", 30),
    ("FR-PAR", 24),
    ("ES-VLL", 20),
    ("IT-MIL", 20),
    ("DE-ULM", 20),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_sites_randomise_respine_concurrently() {
    let server = TestServer::start().await;
    activate(&server, RESPINE_YAML).await;

    let mut sites = Vec::new();
    for (site, quota) in SITE_QUOTAS {
        let token = server.token(
            &format!("edc-{site}"),
            &["site_coordinator"],
            &[site],
            &["RESPINE"],
        );
        let mut client = server.client(&token).await;
        sites.push(tokio::spawn(async move {
            let mut numbers = Vec::new();
            for n in 0..quota {
                // Alternate pain levels so both strata of the site fill.
                let vas = if n % 3 == 0 { 78.0 } else { 52.5 };
                let request = respine_request(site, &format!("{site}-{n:03}"), vas);
                let response = client
                    .randomise(request.clone())
                    .await
                    .expect("randomised")
                    .into_inner();
                assert!(!response.replayed);
                // An EDC retry after a time-out gets the same allocation back.
                if n % 10 == 0 {
                    let again = client
                        .randomise(request)
                        .await
                        .expect("replayed")
                        .into_inner();
                    assert!(again.replayed);
                    assert_eq!(again.allocation, response.allocation);
                }
                numbers.push(
                    response
                        .allocation
                        .expect("allocation")
                        .randomisation_number,
                );
            }
            numbers
        }));
    }
    let mut numbers = BTreeSet::new();
    for site in sites {
        for number in site.await.expect("site task") {
            assert!(
                numbers.insert(number),
                "randomisation numbers must be unique"
            );
        }
    }
    assert_eq!(numbers.len(), 114);

    assert_every_subject_once(&server).await;
    assert_respine_follows_its_streams(&server).await;
    assert_cap_holds(&server).await;
    let records = audit_verify(&server.settings, AuditedService::Randomisation, None)
        .await
        .expect("randomisation audit chain verifies")
        .records;
    // Registration, activation, one record per allocation and one per
    // recorded code, and the blinding service's look-ups of the trial.
    assert!(records > 2 + 114 + 114, "{records} records");
    let records = audit_verify(&server.settings, AuditedService::Blinding, None)
        .await
        .expect("blinding audit chain verifies")
        .records;
    // The pools, then one record per code issued.
    assert_eq!(records, 1 + 114);
    server.stop().await;
}

async fn assert_every_subject_once(server: &TestServer) {
    let mut admin = server.client(&server.admin_token()).await;
    let mut seen = BTreeSet::new();
    let mut token = String::new();
    loop {
        let page = admin
            .list_allocations(pb::ListAllocationsRequest {
                filter: Some(pb::AllocationFilter {
                    trial_id: "RESPINE".into(),
                    ..Default::default()
                }),
                page_size: 50,
                page_token: token,
            })
            .await
            .expect("list")
            .into_inner();
        for allocation in page.allocations {
            assert!(
                seen.insert(allocation.subject_id),
                "a subject appears twice"
            );
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 114);
}

/// Reads the service's database and seal key directly: what a statistician
/// holding the seed does offline.
async fn assert_respine_follows_its_streams(server: &TestServer) {
    let definition = parse_definition(RESPINE_YAML).expect("definition");
    let store = server.store().await;
    let trial = store.trial("RESPINE").await.expect("read").expect("trial");
    let sealer = server
        .settings
        .randomisation
        .sealer(&server.settings.data_dir)
        .expect("seal key");
    let seed = sealer
        .unseal("RESPINE", &trial.sealed_seed.expect("sealed seed"))
        .expect("unseal");
    let subjects = assert_strata_follow_their_streams(&store, &definition, &seed).await;
    assert_eq!(subjects.len(), 114);
}

async fn assert_cap_holds(server: &TestServer) {
    let token = server.token("edc", &["site_investigator"], &["FR-MTP"], &["RESPINE"]);
    let mut client = server.client(&token).await;
    let refused = client
        .randomise(respine_request("FR-MTP", "FR-MTP-115", 60.0))
        .await
        .expect_err("the 115th subject is over the total cap");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("total enrolment cap"),
        "{}",
        refused.message()
    );
}
