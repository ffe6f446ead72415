//! The safety service end to end, against `equipoise serve --target all`
//! as a real process: SAE reports from a site, SUSAR classification through
//! the blinding service's safety reveal, regulatory obligations and their
//! submission, DSMB counts by arm, the E2B(R3) export, and the bad inputs
//! of the issue, each refused with nothing written.

use std::collections::BTreeMap;

use equipoise_proto::blinding::v1 as bpb;
use equipoise_proto::randomisation::v1 as pb;
use equipoise_proto::safety::v1 as spb;
use equipoise_tests::system::{SafetyClient, System};
use equipoise_tests::{RESPINE_YAML, respine_request, timestamp};
use tonic::Code;

/// A serious, related SAE at FR-MTP; `term` decides whether it is expected.
fn report(subject: &str, term: &str, seriousness: spb::Seriousness) -> spb::CaseReport {
    let aware = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(2);
    spb::CaseReport {
        trial_id: "RESPINE".into(),
        site_id: "FR-MTP".into(),
        subject_id: subject.into(),
        reporter: Some(spb::Reporter {
            name: "Dr Sam Martin".into(),
            qualification: "physician".into(),
        }),
        suspect_product: "RESPINE blinded study product".into(),
        event: Some(spb::CodedEvent {
            llt_code: "10000891".into(),
            term: term.into(),
            meddra_version: "27.0".into(),
        }),
        onset_date: (aware - jiff::SignedDuration::from_hours(24))
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date()
            .to_string(),
        serious: true,
        seriousness: Some(seriousness),
        outcome: spb::Outcome::Recovering.into(),
        investigator_causality: spb::Causality::Related.into(),
        narrative: "Admitted for observation after the procedure.".into(),
        site_aware_at: Some(timestamp(aware)),
    }
}

fn hospitalised() -> spb::Seriousness {
    spb::Seriousness {
        hospitalisation: true,
        ..Default::default()
    }
}

/// Randomises four FR-MTP subjects in one stratum (so both arms occur) and
/// returns each subject's arm, read by an unblinded central pharmacy.
async fn randomise_and_learn_arms(system: &System) -> BTreeMap<String, String> {
    let site = system.token("sam", &["site_investigator"], &["FR-MTP"]);
    let mut client = system.randomisation_client(&site).await;
    let pharmacy = system.token("pia", &["unblinded_preparer"], &["*"]);
    let mut preparer = system.blinding_client(&pharmacy).await;
    let mut arms = BTreeMap::new();
    for n in 1..=4 {
        let subject = format!("MTP-00{n}");
        let code = client
            .randomise(respine_request("FR-MTP", &subject, 75.0))
            .await
            .expect("randomise")
            .into_inner()
            .treatment_code;
        let instruction = preparer
            .get_preparation_instruction(bpb::GetPreparationInstructionRequest {
                trial_id: "RESPINE".into(),
                code,
            })
            .await
            .expect("instruction")
            .into_inner();
        arms.insert(subject, instruction.arm_id);
    }
    arms
}

fn subject_in(arms: &BTreeMap<String, String>, arm: &str) -> String {
    arms.iter()
        .find(|(_, a)| a.as_str() == arm)
        .map(|(s, _)| s.clone())
        .unwrap_or_else(|| panic!("no subject in arm {arm}: {arms:?}"))
}

async fn case_as(client: &mut SafetyClient, case_id: &str) -> spb::CaseView {
    client
        .get_case(spb::GetCaseRequest {
            case_id: case_id.into(),
            version: 0,
        })
        .await
        .expect("case")
        .into_inner()
}

/// The safety officer's view once classification has left PENDING.
async fn classified(client: &mut SafetyClient, case_id: &str) -> spb::CaseView {
    for _ in 0..600 {
        let case = case_as(client, case_id).await;
        if case.classification != spb::Classification::Pending as i32 {
            return case;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("case {case_id} was never classified");
}

async fn case_count(client: &mut SafetyClient) -> usize {
    client
        .list_cases(spb::ListCasesRequest {
            trial_id: "RESPINE".into(),
        })
        .await
        .expect("list")
        .into_inner()
        .cases
        .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn susars_are_classified_through_a_safety_reveal_and_their_clocks_run() {
    let system = System::all_in_one(&[(
        "EQUIPOISE_SAFETY__CLASSIFICATION_RETRY_INTERVAL_MS",
        "200".to_owned(),
    )]);
    system.activate(RESPINE_YAML).await;
    let arms = randomise_and_learn_arms(&system).await;
    let active = subject_in(&arms, "MSC");
    let sham = subject_in(&arms, "SHAM");

    let site_token = system.token("sam", &["site_investigator"], &["FR-MTP"]);
    let mut site = system.safety_client(&site_token).await;
    let officer_token = system.token("pv", &["safety_officer"], &[]);
    let mut officer = system.safety_client(&officer_token).await;

    // Unexpected and related: a potential SUSAR in each arm.
    let unexpected = "acute myocardial infarction";
    let active_case = site
        .report_case(spb::ReportCaseRequest {
            report: Some(report(&active, unexpected, hospitalised())),
        })
        .await
        .expect("report")
        .into_inner();
    let sham_case = site
        .report_case(spb::ReportCaseRequest {
            report: Some(report(&sham, unexpected, hospitalised())),
        })
        .await
        .expect("report")
        .into_inner();
    assert_eq!(active_case.version, 1);
    assert!(!active_case.late);

    let susar = classified(&mut officer, &active_case.case_id).await;
    assert_eq!(susar.classification, spb::Classification::Susar as i32);
    assert_eq!(susar.obligations.len(), 1);
    assert_eq!(
        susar.obligations[0].kind,
        spb::ObligationKind::Initial15Day as i32
    );
    let not_reportable = classified(&mut officer, &sham_case.case_id).await;
    assert_eq!(
        not_reportable.classification,
        spb::Classification::NotReportable as i32
    );
    assert!(not_reportable.obligations.is_empty());
    assert!(!not_reportable.not_reportable_reason.is_empty());

    // The site sees the same state and the same fields for both outcomes.
    let site_active = case_as(&mut site, &active_case.case_id).await;
    let site_sham = case_as(&mut site, &sham_case.case_id).await;
    for view in [&site_active, &site_sham] {
        assert_eq!(view.classification, spb::Classification::Assessed as i32);
        assert!(view.not_reportable_reason.is_empty());
        assert!(view.obligations.is_empty());
        assert!(view.day_zero.is_none());
        let text = format!("{view:?}");
        for word in [
            "MSC",
            "SHAM",
            "Sham paravertebral",
            "not the investigational",
        ] {
            assert!(!text.contains(word), "the site's view shows {word}: {text}");
        }
    }

    // An expected event is no potential SUSAR: no reveal, no obligation.
    let expected = site
        .report_case(spb::ReportCaseRequest {
            report: Some(report(&active, "Headache", hospitalised())),
        })
        .await
        .expect("report")
        .into_inner();
    let expected = classified(&mut officer, &expected.case_id).await;
    assert!(expected.expected);
    assert_eq!(
        expected.classification,
        spb::Classification::NotPotentialSusar as i32
    );

    // A fatal follow-up of the SUSAR brings the 7-day rule from its awareness.
    let mut fatal = report(
        &active,
        unexpected,
        spb::Seriousness {
            death: true,
            hospitalisation: true,
            ..Default::default()
        },
    );
    fatal.outcome = spb::Outcome::Fatal.into();
    let follow_up = site
        .report_follow_up(spb::ReportFollowUpRequest {
            case_id: active_case.case_id.clone(),
            report: Some(fatal),
        })
        .await
        .expect("follow-up")
        .into_inner();
    assert_eq!(follow_up.version, 2);
    let upgraded = classified(&mut officer, &active_case.case_id).await;
    let kinds: Vec<i32> = upgraded.obligations.iter().map(|o| o.kind).collect();
    assert!(
        kinds.contains(&(spb::ObligationKind::Initial7Day as i32)),
        "{kinds:?}"
    );
    let first = case_as(&mut officer, &active_case.case_id).await;
    assert_eq!(first.version, 2);
    let version_one = officer
        .get_case(spb::GetCaseRequest {
            case_id: active_case.case_id.clone(),
            version: 1,
        })
        .await
        .expect("version 1")
        .into_inner();
    assert!(
        !version_one
            .report
            .expect("report")
            .seriousness
            .expect("flags")
            .death,
        "version 1 unchanged"
    );

    // The queue, ordered by due time; a submission closes an obligation once.
    let queue = officer
        .list_obligations(spb::ListObligationsRequest::default())
        .await
        .expect("queue")
        .into_inner()
        .obligations;
    assert!(
        queue
            .windows(2)
            .all(|w| w[0].due_at.map(|t| t.seconds) <= w[1].due_at.map(|t| t.seconds))
    );
    let seven_day = queue
        .iter()
        .find(|o| o.kind == spb::ObligationKind::Initial7Day as i32)
        .expect("7-day obligation")
        .clone();
    let submission = spb::RecordSubmissionRequest {
        obligation_id: seven_day.obligation_id.clone(),
        recipient: "EudraVigilance".into(),
        submitted_at: Some(timestamp(jiff::Timestamp::now())),
        acknowledgement_id: "EV-ACK-1".into(),
    };
    let closed = officer
        .record_submission(submission.clone())
        .await
        .expect("submission")
        .into_inner();
    assert!(closed.submitted_at.is_some());
    let again = officer
        .record_submission(submission)
        .await
        .expect_err("closed once");
    assert_eq!(again.code(), Code::FailedPrecondition);
    let with_follow_up = case_as(&mut officer, &active_case.case_id).await;
    assert!(
        with_follow_up
            .obligations
            .iter()
            .any(|o| o.kind == spb::ObligationKind::FollowUp8Day as i32),
        "a submitted 7-day report brings its 8-day follow-up"
    );
    let by_site = site
        .list_obligations(spb::ListObligationsRequest::default())
        .await
        .expect_err("the queue is the safety officer's");
    assert_eq!(by_site.code(), Code::PermissionDenied);

    // The DSMB sees counts by arm; the blinded sponsor pooled counts only.
    let dsmb = system.token("dee", &["dsmb"], &[]);
    let summary = system
        .safety_client(&dsmb)
        .await
        .get_safety_summary(spb::GetSafetySummaryRequest {
            trial_id: "RESPINE".into(),
        })
        .await
        .expect("DSMB summary")
        .into_inner();
    let by_arm: BTreeMap<String, u32> = summary
        .by_arm
        .iter()
        .map(|a| (a.arm_id.clone(), a.serious_cases))
        .collect();
    assert_eq!(summary.serious_cases, 3);
    assert_eq!(
        by_arm.values().sum::<u32>() + summary.arm_unknown,
        3,
        "{by_arm:?}"
    );
    let admin = system.token("ada", &["trial_admin"], &[]);
    let pooled = system
        .safety_client(&admin)
        .await
        .get_safety_summary(spb::GetSafetySummaryRequest {
            trial_id: "RESPINE".into(),
        })
        .await
        .expect("pooled summary")
        .into_inner();
    assert_eq!(pooled.serious_cases, 3);
    assert!(pooled.by_arm.is_empty());

    // E2B(R3) for the regulator.
    let export = officer
        .export_case(spb::ExportCaseRequest {
            case_id: active_case.case_id.clone(),
            version: 1,
        })
        .await
        .expect("export")
        .into_inner();
    assert!(export.xml.contains("MCCI_IN200100UV01"));
    assert!(export.xml.contains("10000891"));
    let by_site = site
        .export_case(spb::ExportCaseRequest {
            case_id: active_case.case_id.clone(),
            version: 1,
        })
        .await
        .expect_err("export is the safety officer's");
    assert_eq!(by_site.code(), Code::PermissionDenied);

    let logs = system.logs();
    assert!(
        !logs.contains("Sham paravertebral"),
        "no arm label in the logs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_reports_are_refused_naming_the_problem_and_nothing_is_written() {
    let system = System::all_in_one(&[]);
    system.activate(RESPINE_YAML).await;
    let arms = randomise_and_learn_arms(&system).await;
    let subject = arms.keys().next().expect("a subject").clone();
    let site_token = system.token("sam", &["site_investigator"], &["FR-MTP"]);
    let mut site = system.safety_client(&site_token).await;
    let officer_token = system.token("pv", &["safety_officer"], &[]);
    let mut officer = system.safety_client(&officer_token).await;
    let good = report(&subject, "acute myocardial infarction", hospitalised());
    let case = site
        .report_case(spb::ReportCaseRequest {
            report: Some(good.clone()),
        })
        .await
        .expect("a good report")
        .into_inner();
    let before = case_count(&mut officer).await;

    let mut no_flag = good.clone();
    no_flag.seriousness = Some(spb::Seriousness::default());
    let mut onset_after = good.clone();
    onset_after.onset_date = "2099-01-01".into();
    let mut future = good.clone();
    future.site_aware_at = Some(timestamp(
        jiff::Timestamp::now() + jiff::SignedDuration::from_hours(48),
    ));
    let mut bad_llt = good.clone();
    if let Some(event) = bad_llt.event.as_mut() {
        event.llt_code = "1234".into();
    }
    for (request, code) in [
        (no_flag, Code::InvalidArgument),
        (onset_after, Code::InvalidArgument),
        (future, Code::InvalidArgument),
        (bad_llt, Code::InvalidArgument),
    ] {
        let status = site
            .report_case(spb::ReportCaseRequest {
                report: Some(request),
            })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code, "{status:?}");
    }
    // A subject randomisation does not know, and one randomised at another
    // site, get the same NOT_FOUND.
    let mut unknown = good.clone();
    unknown.subject_id = "MTP-999".into();
    let unknown = site
        .report_case(spb::ReportCaseRequest {
            report: Some(unknown),
        })
        .await
        .expect_err("unknown subject");
    assert_eq!(unknown.code(), Code::NotFound);
    // Another site's coordinator reporting for an FR-MTP subject.
    let par_token = system.token("paz", &["site_coordinator"], &["FR-PAR"]);
    let status = system
        .safety_client(&par_token)
        .await
        .report_case(spb::ReportCaseRequest {
            report: Some(good.clone()),
        })
        .await
        .expect_err("another site's subject");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = site
        .report_follow_up(spb::ReportFollowUpRequest {
            case_id: "EQP-NO-SUCH-CASE".into(),
            report: Some(good.clone()),
        })
        .await
        .expect_err("unknown case");
    assert_eq!(status.code(), Code::NotFound);
    let status = site
        .assess_causality(spb::AssessCausalityRequest {
            case_id: case.case_id.clone(),
            version: 1,
            causality: spb::Causality::NotRelated.into(),
            comment: String::new(),
        })
        .await
        .expect_err("sponsor causality is not a site's");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        case_count(&mut officer).await,
        before,
        "nothing was written"
    );
    let case = case_as(&mut officer, &case.case_id).await;
    assert_eq!(case.version, 1);
    assert_eq!(case.sponsor_causality, spb::Causality::Unspecified as i32);

    // The allocation the report names is the one randomisation holds.
    let allocation = system
        .randomisation_client(&site_token)
        .await
        .get_allocation(pb::GetAllocationRequest {
            trial_id: "RESPINE".into(),
            subject_id: subject,
        })
        .await
        .expect("allocation")
        .into_inner();
    assert_eq!(allocation.site_id, "FR-MTP");
}

/// Runs `equipoise client …` against the system; Err(stderr) when refused.
fn cli(system: &System, token: &str, args: &[&str]) -> Result<String, String> {
    let output = std::process::Command::new(equipoise_testkit::equipoise_binary())
        .arg("client")
        .args(["--endpoint", &system.randomisation.endpoint()])
        .args(["--token", token])
        .args(args)
        .output()
        .expect("run equipoise client");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pharmacovigilance_commands_of_the_cli() {
    let system = System::all_in_one(&[]);
    system.activate(RESPINE_YAML).await;
    let arms = randomise_and_learn_arms(&system).await;
    let active = subject_in(&arms, "MSC");
    let site = system.token("sam", &["site_investigator"], &["FR-MTP"]);
    let report = [
        "report-sae",
        "--trial",
        "RESPINE",
        "--site",
        "FR-MTP",
        "--subject",
        &active,
        "--reporter",
        "Dr Sam Martin",
        "--product",
        "RESPINE study product (blinded)",
        "--llt",
        "10028596",
        "--term",
        "Myocardial infarction",
        "--onset",
        "2026-01-02",
        "--criterion",
        "life-threatening",
        "--outcome",
        "recovering",
        "--causality",
        "related",
        "--narrative",
        "Chest pain; admitted.",
        "--aware-at",
        "2026-01-03T08:00:00Z",
    ];
    let reported = cli(&system, &site, &report).expect("report-sae");
    assert!(reported.contains("classification:  assessed"), "{reported}");
    let mut bad = report.to_vec();
    let llt = bad.iter().position(|a| *a == "10028596").expect("llt");
    bad[llt] = "1234";
    let refused = cli(&system, &site, &bad).expect_err("a malformed LLT code");
    assert!(
        refused.contains("InvalidArgument") && refused.contains("llt_code"),
        "{refused}"
    );

    let officer = system.token("pv", &["safety_officer"], &[]);
    let queue = cli(&system, &officer, &["queue"]).expect("queue");
    assert!(queue.contains("initial_7_day"), "{queue}");
    let obligation = queue.split_whitespace().next().expect("an obligation id");
    let case = queue.split_whitespace().nth(3).expect("a case id");
    let submitted = cli(
        &system,
        &officer,
        &[
            "submit",
            "--obligation",
            obligation,
            "--recipient",
            "EudraVigilance",
            "--ack",
            "EV-1",
        ],
    )
    .expect("submit");
    assert!(submitted.contains("submitted"), "{submitted}");
    let view = cli(&system, &officer, &["case", case]).expect("case");
    assert!(
        view.contains("classification:  susar") && view.contains("follow_up_8_day"),
        "{view}"
    );
    let xml = cli(&system, &officer, &["export", case]).expect("export");
    assert!(
        xml.starts_with("<?xml") && xml.contains("10028596"),
        "{xml}"
    );
    let dsmb = system.token("dee", &["dsmb"], &[]);
    let summary = cli(&system, &dsmb, &["safety-summary", "RESPINE"]).expect("summary");
    assert!(summary.contains("arm MSC"), "{summary}");
    let by_site = cli(&system, &site, &["queue"]).expect_err("the queue is the safety officer's");
    assert!(by_site.contains("PermissionDenied"), "{by_site}");
}
