//! The blinding service end to end, against `equipoise serve --target all`
//! as a real process with logs at debug level: randomise with codes,
//! prepare, emergency unblinding with its refusals, a safety reveal, the
//! notification feed, crossover records and the planned reveal. Then every
//! response and refusal a blinded role received, and every log line, is
//! scanned for every arm id and arm label of both trials (DESIGN §5).

use std::collections::BTreeSet;
use std::fmt::Debug;

use equipoise_proto::blinding::v1 as bpb;
use equipoise_proto::randomisation::v1 as pb;
use equipoise_tests::system::System;
use equipoise_tests::{FACET_YAML, RESPINE_YAML, boolean, integer, respine_request};
use equipoise_trial::parse_definition;
use tonic::Code;

/// What blinded roles received, in order.
#[derive(Default)]
struct Transcript(Vec<String>);

impl Transcript {
    fn keep(&mut self, item: &impl Debug) {
        self.0.push(format!("{item:?}"));
    }

    /// Keeps the refusal and returns it, so its code can be checked.
    fn refusal<T: Debug>(
        &mut self,
        result: Result<tonic::Response<T>, tonic::Status>,
    ) -> tonic::Status {
        let status = result.expect_err("the call must be refused");
        self.0
            .push(format!("{:?}: {}", status.code(), status.message()));
        status
    }
}

fn facet_request(subject: &str, sex: &str) -> pb::RandomiseRequest {
    let covariates = [
        ("age_years".to_owned(), integer(50)),
        ("lbp_months".to_owned(), integer(24)),
        ("facet_block_positive".to_owned(), boolean(true)),
        (
            "sex".to_owned(),
            pb::CovariateValue {
                value: Some(pb::covariate_value::Value::EnumValue(sex.into())),
            },
        ),
    ];
    pb::RandomiseRequest {
        trial_id: "FACET-X".into(),
        site_id: "US-ROC".into(),
        subject_id: subject.into(),
        covariates: covariates.into_iter().collect(),
    }
}

fn emergency(
    subjects: &[&str],
    category: bpb::ReasonCategory,
    reason: &str,
) -> bpb::EmergencyUnblindRequest {
    bpb::EmergencyUnblindRequest {
        trial_id: "RESPINE".into(),
        subject_ids: subjects.iter().map(|s| s.to_string()).collect(),
        reason_category: category.into(),
        reason: reason.into(),
    }
}

/// Every arm id and label of the example trials.
fn arm_words() -> (BTreeSet<String>, BTreeSet<String>) {
    let mut ids = BTreeSet::new();
    let mut labels = BTreeSet::new();
    for yaml in [RESPINE_YAML, FACET_YAML] {
        let definition = parse_definition(yaml).expect("example parses");
        for arm in definition.arms {
            ids.insert(arm.id);
            labels.insert(arm.label);
        }
    }
    (ids, labels)
}

/// An arm id counts only as a whole word: a random code such as `R-7MSCQ2`
/// may contain its letters by chance.
fn contains_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_');
        boundary(before) && boundary(after)
    })
}

fn assert_masked(what: &str, text: &str) {
    let (ids, labels) = arm_words();
    for id in &ids {
        assert!(!contains_word(text, id), "{what} shows arm id {id}");
    }
    for label in &labels {
        assert!(
            !text.contains(label.as_str()),
            "{what} shows arm label {label}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn desk_scenario_reveals_arms_only_to_their_requesters() {
    let system = System::all_in_one(&[
        ("RUST_LOG", "debug".to_owned()),
        ("EQUIPOISE_BLINDING__WATCH_POLL_MS", "50".to_owned()),
    ]);
    system.activate(RESPINE_YAML).await;
    system.activate(FACET_YAML).await;
    let mut blinded = Transcript::default();

    // Sites randomise and get codes; a retry gets the same code.
    let mtp = system.token("sam", &["site_investigator"], &["FR-MTP"]);
    let par = system.token("paz", &["site_coordinator"], &["FR-PAR"]);
    let mut mtp_rand = system.randomisation_client(&mtp).await;
    let mut par_rand = system.randomisation_client(&par).await;
    let mut codes = Vec::new();
    for (n, vas) in [(1, 55.0), (2, 75.0), (3, 60.0), (4, 80.0)] {
        let response = mtp_rand
            .randomise(respine_request("FR-MTP", &format!("MTP-00{n}"), vas))
            .await
            .expect("randomise")
            .into_inner();
        assert!(response.treatment_code.starts_with("R-") && response.treatment_code.len() == 8);
        codes.push(response.treatment_code.clone());
        blinded.keep(&response);
    }
    let retry = mtp_rand
        .randomise(respine_request("FR-MTP", "MTP-001", 55.0))
        .await
        .expect("retry")
        .into_inner();
    assert!(retry.replayed);
    assert_eq!(retry.treatment_code, codes[0]);
    blinded.keep(&retry);
    let par_response = par_rand
        .randomise(respine_request("FR-PAR", "PAR-001", 65.0))
        .await
        .expect("randomise")
        .into_inner();
    blinded.keep(&par_response);
    assert_eq!(
        codes.iter().collect::<BTreeSet<_>>().len(),
        codes.len(),
        "codes are unique"
    );
    let allocation = mtp_rand
        .get_allocation(pb::GetAllocationRequest {
            trial_id: "RESPINE".into(),
            subject_id: "MTP-001".into(),
        })
        .await
        .expect("allocation")
        .into_inner();
    assert_eq!(allocation.treatment_code, codes[0]);
    blinded.keep(&allocation);

    // The preparer at FR-MTP learns what to prepare for its own site's codes.
    let preparer = system.token("pia", &["unblinded_preparer"], &["FR-MTP"]);
    let mut prep = system.blinding_client(&preparer).await;
    let instruction = prep
        .get_preparation_instruction(bpb::GetPreparationInstructionRequest {
            trial_id: "RESPINE".into(),
            code: codes[0].clone(),
        })
        .await
        .expect("preparation")
        .into_inner();
    assert_eq!(instruction.subject_id, "MTP-001");
    let respine = parse_definition(RESPINE_YAML).expect("parses");
    let prepared_arm = respine
        .arms
        .iter()
        .find(|a| a.id == instruction.arm_id)
        .expect("an arm of the trial");
    assert_eq!(instruction.prepare, prepared_arm.label);
    // ...not for another site's code, nor for a code of another trial.
    let other_site = prep
        .get_preparation_instruction(bpb::GetPreparationInstructionRequest {
            trial_id: "RESPINE".into(),
            code: par_response.treatment_code.clone(),
        })
        .await;
    let status = blinded.refusal(other_site);
    assert!(
        matches!(status.code(), Code::PermissionDenied | Code::NotFound),
        "{status:?}"
    );
    let other_trial = prep
        .get_preparation_instruction(bpb::GetPreparationInstructionRequest {
            trial_id: "FACET-X".into(),
            code: codes[0].clone(),
        })
        .await;
    assert_eq!(blinded.refusal(other_trial).code(), Code::NotFound);
    // A site role never reaches a preparation instruction.
    let mut mtp_blind = system.blinding_client(&mtp).await;
    let site_prepare = mtp_blind
        .get_preparation_instruction(bpb::GetPreparationInstructionRequest {
            trial_id: "RESPINE".into(),
            code: codes[0].clone(),
        })
        .await;
    assert_eq!(blinded.refusal(site_prepare).code(), Code::PermissionDenied);

    // The sponsor watches the feed from the start.
    let sponsor = system.token("spo", &["trial_admin"], &[]);
    let mut sponsor_blind = system.blinding_client(&sponsor).await;
    let mut feed = sponsor_blind
        .watch_unblindings(bpb::WatchUnblindingsRequest {
            trial_id: "RESPINE".into(),
            after_cursor: 0,
        })
        .await
        .expect("watch")
        .into_inner();

    // Refused emergency requests reveal and write nothing.
    use bpb::ReasonCategory::{SeriousAdverseEvent, Unspecified};
    let refusals = [
        (
            emergency(&["MTP-001"], SeriousAdverseEvent, "  "),
            Code::InvalidArgument,
        ),
        (
            emergency(&["MTP-001"], Unspecified, "anaphylaxis"),
            Code::InvalidArgument,
        ),
        (
            emergency(&["MTP-001", "MTP-002"], SeriousAdverseEvent, "anaphylaxis"),
            Code::InvalidArgument,
        ),
        (
            emergency(&[], SeriousAdverseEvent, "anaphylaxis"),
            Code::InvalidArgument,
        ),
    ];
    for (request, code) in refusals {
        assert_eq!(
            blinded
                .refusal(mtp_blind.emergency_unblind(request).await)
                .code(),
            code
        );
    }
    let mut unknown_category = emergency(&["MTP-001"], SeriousAdverseEvent, "anaphylaxis");
    unknown_category.reason_category = 99;
    assert_eq!(
        blinded
            .refusal(mtp_blind.emergency_unblind(unknown_category).await)
            .code(),
        Code::InvalidArgument
    );
    let stale = system.token_with("sam", &["site_investigator"], &["FR-MTP"], |claims| {
        claims.auth_time = Some(jiff::Timestamp::now().as_second() - 3600);
    });
    let status = blinded.refusal(
        system
            .blinding_client(&stale)
            .await
            .emergency_unblind(emergency(&["MTP-001"], SeriousAdverseEvent, "anaphylaxis"))
            .await,
    );
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("re-authentic"),
        "{}",
        status.message()
    );
    // Another site's subject and a subject that does not exist: one answer.
    let other = blinded.refusal(
        mtp_blind
            .emergency_unblind(emergency(&["PAR-001"], SeriousAdverseEvent, "anaphylaxis"))
            .await,
    );
    let missing = blinded.refusal(
        mtp_blind
            .emergency_unblind(emergency(&["NOPE-01"], SeriousAdverseEvent, "anaphylaxis"))
            .await,
    );
    assert_eq!(other.code(), missing.code());
    assert_eq!(
        other.message().replace("PAR-001", "<id>"),
        missing.message().replace("NOPE-01", "<id>")
    );
    // A user token claiming a service role is refused at the door.
    let forged = system.token("eve", &["service:safety"], &[]);
    let status = blinded.refusal(
        system
            .blinding_client(&forged)
            .await
            .safety_reveal(bpb::SafetyRevealRequest {
                trial_id: "RESPINE".into(),
                subject_id: "MTP-002".into(),
                case_id: "CASE-1".into(),
            })
            .await,
    );
    assert!(matches!(
        status.code(),
        Code::Unauthenticated | Code::PermissionDenied
    ));
    let status = blinded.refusal(
        system
            .blinding_client(&forged)
            .await
            .assign_code(bpb::AssignCodeRequest {
                trial_id: "RESPINE".into(),
                subject_id: "MTP-009".into(),
                site_id: "FR-MTP".into(),
                arm_id: "SHAM".into(),
                randomised_at: None,
            })
            .await,
    );
    assert!(matches!(
        status.code(),
        Code::Unauthenticated | Code::PermissionDenied
    ));
    // Only the blinding service reads an arm from randomisation.
    let admin = system.token("ada", &["trial_admin", "statistician"], &[]);
    let status = blinded.refusal(
        system
            .support_client(&admin)
            .await
            .look_up_allocation(pb::LookUpAllocationRequest {
                trial_id: "RESPINE".into(),
                subject_id: "MTP-001".into(),
            })
            .await,
    );
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = blinded.refusal(
        system
            .blinding_client(&admin)
            .await
            .get_blinding_status(bpb::GetBlindingStatusRequest {
                trial_id: "NOPE".into(),
            })
            .await,
    );
    assert!(matches!(
        status.code(),
        Code::NotFound | Code::PermissionDenied
    ));
    let status = sponsor_blind
        .get_blinding_status(bpb::GetBlindingStatusRequest {
            trial_id: "RESPINE".into(),
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.emergency_unblindings, 0, "refusals wrote no reveal");
    blinded.keep(&status);

    // The investigator breaks the blind for their own patient.
    let reveal = mtp_blind
        .emergency_unblind(emergency(
            &["MTP-001"],
            SeriousAdverseEvent,
            "anaphylaxis in ICU",
        ))
        .await
        .expect("emergency unblinding")
        .into_inner();
    assert_eq!(
        reveal.arm_id, instruction.arm_id,
        "the code's arm is the subject's arm"
    );
    assert_eq!(reveal.state, bpb::BlindingState::UnblindedEmergency as i32);
    assert!(reveal.continues_in_trial);

    // Pharmacovigilance's service asks for a safety reveal.
    let safety = system.service_token("safety");
    let safety_reveal = system
        .blinding_client(&safety)
        .await
        .safety_reveal(bpb::SafetyRevealRequest {
            trial_id: "RESPINE".into(),
            subject_id: "MTP-002".into(),
            case_id: "CASE-1".into(),
        })
        .await
        .expect("safety reveal")
        .into_inner();
    assert!(
        respine
            .arms
            .iter()
            .any(|a| a.id == safety_reveal.arm_id && a.active == safety_reveal.active)
    );

    // The feed shows both events, without an arm, and resumes from a cursor.
    let first = feed
        .message()
        .await
        .expect("feed")
        .expect("first notification");
    let second = feed
        .message()
        .await
        .expect("feed")
        .expect("second notification");
    assert_eq!(
        (first.subject_id.as_str(), first.kind),
        ("MTP-001", bpb::RevealKind::Emergency as i32)
    );
    assert_eq!(first.site_id, "FR-MTP");
    assert_eq!(first.reason_category, SeriousAdverseEvent as i32);
    assert_eq!(
        (second.subject_id.as_str(), second.kind),
        ("MTP-002", bpb::RevealKind::SafetyReview as i32)
    );
    assert!(second.cursor > first.cursor);
    blinded.keep(&first);
    blinded.keep(&second);
    drop(feed);
    let mut resumed = sponsor_blind
        .watch_unblindings(bpb::WatchUnblindingsRequest {
            trial_id: "RESPINE".into(),
            after_cursor: first.cursor,
        })
        .await
        .expect("watch again")
        .into_inner();
    let again = resumed
        .message()
        .await
        .expect("feed")
        .expect("resumed notification");
    assert_eq!(again.cursor, second.cursor, "nothing missed, nothing twice");
    drop(resumed);
    // The other site's coordinator sees none of FR-MTP's notifications.
    let mut par_feed = system
        .blinding_client(&par)
        .await
        .watch_unblindings(bpb::WatchUnblindingsRequest {
            trial_id: "RESPINE".into(),
            after_cursor: 0,
        })
        .await
        .expect("site watch")
        .into_inner();

    // The site sees the subject's state, never the arm or the review's outcome.
    for subject in ["MTP-001", "MTP-002"] {
        let view = mtp_blind
            .get_subject_blinding(bpb::GetSubjectBlindingRequest {
                trial_id: "RESPINE".into(),
                subject_id: subject.into(),
            })
            .await
            .expect("subject view")
            .into_inner();
        blinded.keep(&view);
    }
    let not_theirs = par_rand_view(&system, &par).await;
    blinded.keep(&not_theirs);

    // Crossover: the preparer records what was given; a mismatch is a
    // deviation that blinded roles do not see.
    let roc_site = system.token("rob", &["site_investigator"], &["US-ROC"]);
    let mut roc_rand = system.randomisation_client(&roc_site).await;
    for (subject, sex) in [
        ("FX-001", "female"),
        ("FX-002", "male"),
        ("FX-003", "female"),
    ] {
        let response = roc_rand
            .randomise(facet_request(subject, sex))
            .await
            .expect("randomise FACET-X")
            .into_inner();
        assert!(!response.treatment_code.is_empty());
        blinded.keep(&response);
    }
    let roc_preparer = system.token("pat", &["unblinded_preparer"], &["US-ROC"]);
    let mut roc_prep = system.blinding_client(&roc_preparer).await;
    let facet = parse_definition(FACET_YAML).expect("parses");
    let fx_code = roc_rand
        .get_allocation(pb::GetAllocationRequest {
            trial_id: "FACET-X".into(),
            subject_id: "FX-001".into(),
        })
        .await
        .expect("allocation")
        .into_inner()
        .treatment_code;
    let fx_arm = roc_prep
        .get_preparation_instruction(bpb::GetPreparationInstructionRequest {
            trial_id: "FACET-X".into(),
            code: fx_code,
        })
        .await
        .expect("instruction")
        .into_inner()
        .arm_id;
    let wrong_arm = facet
        .arms
        .iter()
        .find(|a| a.id != fx_arm)
        .expect("two arms")
        .id
        .clone();
    let record = roc_prep
        .record_given_treatment(bpb::RecordGivenTreatmentRequest {
            trial_id: "FACET-X".into(),
            subject_id: "FX-001".into(),
            period_id: "blinded".into(),
            given_arm_id: wrong_arm,
            note: "vial mix-up".into(),
        })
        .await
        .expect("record")
        .into_inner();
    assert!(record.deviation);
    let mut roc_blind = system.blinding_client(&roc_site).await;
    let view = roc_blind
        .get_subject_blinding(bpb::GetSubjectBlindingRequest {
            trial_id: "FACET-X".into(),
            subject_id: "FX-001".into(),
        })
        .await
        .expect("site view")
        .into_inner();
    assert!(
        view.periods
            .iter()
            .all(|p| !p.deviation && p.given_arm_id.is_empty())
    );
    blinded.keep(&view);
    // The planned reveal comes at the start of the crossover period, months away.
    let early = roc_blind
        .planned_period_reveal(bpb::PlannedPeriodRevealRequest {
            trial_id: "FACET-X".into(),
            subject_id: "FX-001".into(),
            period_id: "crossover".into(),
        })
        .await;
    assert_eq!(blinded.refusal(early).code(), Code::FailedPrecondition);

    // Counts, never by arm; deviations only for unblinded roles.
    let facet_status = bpb::GetBlindingStatusRequest {
        trial_id: "FACET-X".into(),
    };
    let status = sponsor_blind
        .get_blinding_status(facet_status.clone())
        .await
        .expect("status")
        .into_inner();
    assert_eq!(
        status.deviations, 0,
        "the blinded sponsor sees no deviation"
    );
    blinded.keep(&status);
    let monitor = system.token("mia", &["medical_monitor"], &[]);
    let status = system
        .blinding_client(&monitor)
        .await
        .get_blinding_status(facet_status)
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.deviations, 1);
    let trial_status = system
        .randomisation_client(&admin)
        .await
        .get_trial_status(pb::GetTrialStatusRequest {
            trial_id: "RESPINE".into(),
        })
        .await
        .expect("trial status")
        .into_inner();
    blinded.keep(&trial_status);

    // The FR-PAR watcher got nothing about FR-MTP's subjects.
    let nothing =
        tokio::time::timeout(std::time::Duration::from_millis(500), par_feed.message()).await;
    if let Ok(Ok(Some(notification))) = nothing {
        panic!("FR-PAR saw another site's notification: {notification:?}");
    }

    // The scan finds an arm where there is one: in the preparer's answer.
    assert!(contains_word(
        &format!("{instruction:?}"),
        &instruction.arm_id
    ));
    assert!(format!("{instruction:?}").contains(prepared_arm.label.as_str()));
    for (n, item) in blinded.0.iter().enumerate() {
        assert_masked(&format!("blinded item {n}"), item);
    }
    let logs = system.logs();
    assert!(logs.contains("DEBUG"), "the process logged at debug level");
    assert_masked("the log", &logs);
}

/// FR-PAR's coordinator asks about an FR-MTP subject: the same NOT_FOUND as
/// for a subject that does not exist.
async fn par_rand_view(system: &System, par: &str) -> String {
    let mut client = system.blinding_client(par).await;
    let theirs = client
        .get_subject_blinding(bpb::GetSubjectBlindingRequest {
            trial_id: "RESPINE".into(),
            subject_id: "MTP-001".into(),
        })
        .await
        .expect_err("another site's subject");
    let missing = client
        .get_subject_blinding(bpb::GetSubjectBlindingRequest {
            trial_id: "RESPINE".into(),
            subject_id: "NOPE-01".into(),
        })
        .await
        .expect_err("no such subject");
    assert_eq!(theirs.code(), Code::NotFound);
    assert_eq!(
        theirs.message().replace("MTP-001", "<id>"),
        missing.message().replace("NOPE-01", "<id>")
    );
    format!("{theirs:?}")
}

/// Runs `equipoise client …` against the system and returns its stdout;
/// a refused call returns Err(stderr).
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
async fn the_desk_commands_of_the_cli() {
    let system = System::all_in_one(&[]);
    system.activate(RESPINE_YAML).await;
    let site = system.token("sam", &["site_investigator"], &["FR-MTP"]);
    let code = system
        .randomisation_client(&site)
        .await
        .randomise(respine_request("FR-MTP", "MTP-001", 72.0))
        .await
        .expect("randomise")
        .into_inner()
        .treatment_code;
    let subject = ["--trial", "RESPINE", "--subject", "MTP-001"];

    let view = cli(&system, &site, &[&["subject"][..], &subject].concat()).expect("subject");
    assert!(
        view.contains(&code) && view.contains("status:             blinded"),
        "{view}"
    );
    let preparer = system.token("pia", &["unblinded_preparer"], &["FR-MTP"]);
    let prepared = cli(
        &system,
        &preparer,
        &["prepare", "--trial", "RESPINE", "--code", &code],
    )
    .expect("prepare");
    assert!(prepared.contains("prepare:"), "{prepared}");
    let refused = cli(
        &system,
        &site,
        &["prepare", "--trial", "RESPINE", "--code", &code],
    )
    .expect_err("site roles never prepare");
    assert!(refused.contains("PermissionDenied"), "{refused}");

    let desk = system.token("dan", &["emergency_desk"], &[]);
    let two = cli(
        &system,
        &desk,
        &[
            "unblind",
            "--trial",
            "RESPINE",
            "--subject",
            "MTP-001",
            "--subject",
            "MTP-002",
        ],
    );
    assert!(two.is_err(), "a reason is required, and one subject");
    let unblind = [
        &["unblind"][..],
        &subject,
        &[
            "--category",
            "serious-adverse-event",
            "--reason",
            "anaphylaxis",
        ],
    ]
    .concat();
    let revealed = cli(&system, &desk, &unblind).expect("unblind");
    assert!(
        revealed.contains("status:             unblinded (emergency)"),
        "{revealed}"
    );
    assert!(revealed.contains("arm:"), "{revealed}");

    let sponsor = system.token("spo", &["trial_admin"], &[]);
    let feed = cli(
        &system,
        &sponsor,
        &["watch", "--trial", "RESPINE", "--limit", "1"],
    )
    .expect("watch");
    assert!(
        feed.contains("emergency unblinding") && feed.contains("subject=MTP-001"),
        "{feed}"
    );
    assert_masked("the watch output", &feed);
    let status = cli(&system, &sponsor, &["blinding-status", "RESPINE"]).expect("status");
    assert!(status.contains("emergency unblindings: 1"), "{status}");
    assert_masked("the blinding status", &status);
    let after = cli(&system, &site, &[&["subject"][..], &subject].concat()).expect("subject");
    assert!(after.contains("unblinded (emergency)"), "{after}");
    assert_masked("the site's view", &after);
}
