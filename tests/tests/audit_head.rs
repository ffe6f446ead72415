//! Review U1: `audit head` exports a signed end of a chain, and `audit
//! verify --head` proves the chain still extends it. Removing the last
//! record (with its trigger dropped, as an owner of the database could) or
//! a forged head is caught, though the shortened chain still verifies.

use std::process::Command;

use equipoise_proto::randomisation::v1 as pb;
use equipoise_tests::system::System;
use equipoise_tests::{RESPINE_YAML, respine_request};

fn equipoise(system: &System, args: &[&str]) -> Result<String, String> {
    equipoise_on(system, &[], args)
}

/// The CLI with the system's offline settings and `extra` over them (a
/// PostgreSQL URL, say).
fn equipoise_on(system: &System, extra: &[(&str, &str)], args: &[&str]) -> Result<String, String> {
    let output = Command::new(equipoise_testkit::equipoise_binary())
        .args(args)
        .envs(system.offline_env())
        .envs(extra.iter().copied())
        .output()
        .expect("run equipoise");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// RESPINE active, with MTP-001 and MTP-002 randomised at FR-MTP.
async fn two_randomised() -> System {
    two_randomised_with(&[]).await
}

/// As [`two_randomised`], with `env` over the system's settings.
async fn two_randomised_with(env: &[(&str, String)]) -> System {
    let system = System::all_in_one(env);
    system.activate(RESPINE_YAML).await;
    let site = system.token("sam", &["site_investigator"], &["FR-MTP"]);
    let mut client = system.randomisation_client(&site).await;
    for subject in ["MTP-001", "MTP-002"] {
        client
            .randomise(respine_request("FR-MTP", subject, 60.0))
            .await
            .expect("randomised");
    }
    system
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_tail_or_a_forged_head_fails_verification() {
    let system = two_randomised().await;
    let head = equipoise(&system, &["audit", "head"]).expect("audit head");
    let files = tempfile::tempdir().expect("tempdir");
    let head_file = files.path().join("head.json");
    std::fs::write(&head_file, &head).expect("write head");
    let head_path = head_file.display().to_string();
    let verified = equipoise(&system, &["audit", "verify", "--head", &head_path])
        .expect("the chain extends its own head");
    assert!(verified.contains("extends the exported head"), "{verified}");

    // A forged head: the signature no longer matches.
    let forged = head.replacen("\"seq\":", "\"seq\":1", 1);
    let forged_file = files.path().join("forged.json");
    std::fs::write(&forged_file, forged).expect("write forged head");
    let refused = equipoise(
        &system,
        &[
            "audit",
            "verify",
            "--head",
            &forged_file.display().to_string(),
        ],
    )
    .expect_err("a forged head");
    assert!(refused.contains("signature"), "{refused}");

    // The last record removed behind the service, trigger dropped first.
    let database = system.randomisation_db();
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", database.display()))
        .await
        .expect("open the database");
    sqlx::query("DROP TRIGGER audit_log_no_delete")
        .execute(&pool)
        .await
        .expect("drop the trigger");
    sqlx::query("DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)")
        .execute(&pool)
        .await
        .expect("delete the last record");
    pool.close().await;

    let shortened = equipoise(&system, &["audit", "verify"]).expect("a prefix still verifies");
    assert!(shortened.contains("audit chain verified"), "{shortened}");
    let refused = equipoise(&system, &["audit", "verify", "--head", &head_path])
        .expect_err("the tail is gone");
    assert!(refused.contains("records were removed"), "{refused}");
}

/// Review U1: every allocation row is checked against the record it was
/// committed with, so an arm edited behind the triggers fails verification
/// though the chain itself still holds; the report names no arm.
#[tokio::test(flavor = "multi_thread")]
async fn an_allocation_edited_behind_the_triggers_fails_verification() {
    let system = two_randomised().await;
    let verified = equipoise(&system, &["audit", "verify"]).expect("intact");
    assert!(verified.contains("audit chain verified"), "{verified}");

    let pool =
        sqlx::SqlitePool::connect(&format!("sqlite://{}", system.randomisation_db().display()))
            .await
            .expect("open the database");
    sqlx::query("DROP TRIGGER allocations_assignment_frozen")
        .execute(&pool)
        .await
        .expect("drop the trigger");
    sqlx::query(
        "UPDATE allocations SET arm = CASE arm WHEN 'MSC' THEN 'SHAM' ELSE 'MSC' END WHERE subject_id = 'MTP-002'",
    )
    .execute(&pool)
    .await
    .expect("edit the arm");
    pool.close().await;

    let refused = equipoise(&system, &["audit", "verify"]).expect_err("the row no longer matches");
    assert!(
        refused.contains("MTP-002") && refused.contains("in arm"),
        "{refused}"
    );
    assert!(
        !refused.contains("SHAM") && !refused.contains("MSC"),
        "{refused}"
    );
}

/// Review C4: the exported chain of a RESPINE run names no arm id or label,
/// no probability and no position: it can be given to a blinded auditor.
#[tokio::test(flavor = "multi_thread")]
async fn the_exported_chain_of_a_respine_run_names_no_arm() {
    let system = System::all_in_one(&[]);
    system.activate(RESPINE_YAML).await;
    for (site, prefix) in [("FR-MTP", "MTP"), ("FR-PAR", "PAR"), ("ES-VLL", "VLL")] {
        let token = system.token("edc", &["site_investigator"], &[site]);
        let mut client = system.randomisation_client(&token).await;
        for n in 0..6 {
            let pain = if n % 2 == 0 { 55.0 } else { 80.0 };
            client
                .randomise(respine_request(site, &format!("{prefix}-{n:03}"), pain))
                .await
                .expect("randomised");
        }
    }
    let export = equipoise(&system, &["audit", "export"]).expect("exported");
    assert!(export.lines().count() > 18, "{export}");
    let definition = equipoise_trial::parse_definition(RESPINE_YAML).expect("RESPINE");
    for arm in &definition.arms {
        assert!(
            !export.contains(&format!("\"{}\"", arm.id)),
            "arm {}",
            arm.id
        );
        assert!(!export.contains(&arm.label), "label {}", arm.label);
    }
    for word in ["probabilit", "\"position\"", "\"decision\"", "\"arm\""] {
        assert!(!export.contains(word), "{word}");
    }

    // The same trail over gRPC, for the auditor; not for a site.
    let auditor = system.token("qa", &["auditor"], &[]);
    let mut client = system.randomisation_client(&auditor).await;
    let mut stream = client
        .export_audit_trail(pb::ExportAuditTrailRequest { after_seq: 0 })
        .await
        .expect("the auditor exports")
        .into_inner();
    let mut shown = String::new();
    let mut count = 0;
    while let Some(record) = stream.message().await.expect("a record") {
        count += 1;
        assert_eq!(record.seq, count);
        shown.push_str(&record.details_json);
        shown.push_str(&record.action);
    }
    assert_eq!(count as usize, export.lines().count());
    for arm in &definition.arms {
        assert!(
            !shown.contains(&format!("\"{}\"", arm.id)),
            "arm {}",
            arm.id
        );
        assert!(!shown.contains(&arm.label), "label {}", arm.label);
    }
    let site = system.token("edc", &["site_investigator"], &["FR-MTP"]);
    let refused = system
        .randomisation_client(&site)
        .await
        .export_audit_trail(pb::ExportAuditTrailRequest { after_seq: 0 })
        .await
        .expect_err("a site may not");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
}

/// Review U1: the activation record commits to the seed and the design;
/// a seed re-sealed with the seal key, or a definition edited in the table,
/// fails verification though the chain itself holds.
#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_seed_or_definition_fails_verification() {
    let system = two_randomised().await;
    equipoise(&system, &["audit", "verify"]).expect("intact, commitments checked");
    let pool =
        sqlx::SqlitePool::connect(&format!("sqlite://{}", system.randomisation_db().display()))
            .await
            .expect("open the database");
    let (definition,): (String,) =
        sqlx::query_as("SELECT definition_yaml FROM trials WHERE trial_id = 'RESPINE'")
            .fetch_one(&pool)
            .await
            .expect("the stored definition");

    // Someone holding the seal key re-seals another seed.
    let other = another_sealed_seed(&system);
    sqlx::query("DROP TRIGGER trials_activation_frozen")
        .execute(&pool)
        .await
        .expect("drop the trigger");
    sqlx::query("UPDATE trials SET sealed_seed = $1 WHERE trial_id = 'RESPINE'")
        .bind(other)
        .execute(&pool)
        .await
        .expect("replace the seed");
    let refused = equipoise(&system, &["audit", "verify"]).expect_err("another seed");
    assert!(refused.contains("committed to at activation"), "{refused}");

    // The design edited in place; definitions are checked before seeds.
    sqlx::query("UPDATE trials SET definition_yaml = $1 WHERE trial_id = 'RESPINE'")
        .bind(definition.replace("block_sizes: [2, 4]", "block_sizes: [2]"))
        .execute(&pool)
        .await
        .expect("edit the design");
    pool.close().await;
    let refused = equipoise(&system, &["audit", "verify"]).expect_err("another design");
    assert!(refused.contains("stored definition"), "{refused}");
}

/// RESPINE's seed replaced by another, sealed with the system's seal key, as
/// someone holding that key could.
fn another_sealed_seed(system: &System) -> Vec<u8> {
    let key_file = system
        .offline_env()
        .into_iter()
        .find(|(k, _)| k == "EQUIPOISE_RANDOMISATION__SEAL_KEY_FILE")
        .map(|(_, v)| v)
        .expect("a seal key file");
    let key = hex::decode(std::fs::read_to_string(key_file).expect("key").trim()).expect("hex");
    let sealer = equipoise_randomisation::seal::Sealer::new(&key).expect("sealer");
    sealer
        .seal("RESPINE", &equipoise_stream::MasterSeed([7; 32]))
        .expect("sealed")
}

/// Review U1 on PostgreSQL, as on SQLite above: an arm edited and a seed
/// replaced with their triggers disabled each fail verification, and the
/// arm put back verifies again.
#[tokio::test(flavor = "multi_thread")]
async fn on_postgresql_an_edited_arm_or_a_replaced_seed_fails_verification() {
    let postgres = equipoise_testkit::PostgresServer::start();
    let url = postgres.create_database();
    let database = [("EQUIPOISE_RANDOMISATION__DATABASE_URL", url.as_str())];
    let system = two_randomised_with(&[(database[0].0, url.clone())]).await;
    let verify = || equipoise_on(&system, &database, &["audit", "verify"]);
    verify().expect("intact");

    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let swap_arm = "UPDATE allocations SET arm = CASE arm WHEN 'MSC' THEN 'SHAM' ELSE 'MSC' END
                    WHERE subject_id = 'MTP-002'";
    for statement in [
        "ALTER TABLE allocations DISABLE TRIGGER allocations_assignment_frozen",
        swap_arm,
    ] {
        sqlx::query(statement).execute(&pool).await.expect("tamper");
    }
    let refused = verify().expect_err("the row no longer matches");
    assert!(
        refused.contains("MTP-002") && refused.contains("in arm"),
        "{refused}"
    );
    sqlx::query(swap_arm)
        .execute(&pool)
        .await
        .expect("put it back");
    verify().expect("the arm put back verifies");

    sqlx::query("ALTER TABLE trials DISABLE TRIGGER trials_activation_frozen")
        .execute(&pool)
        .await
        .expect("disable the trigger");
    sqlx::query("UPDATE trials SET sealed_seed = $1 WHERE trial_id = 'RESPINE'")
        .bind(another_sealed_seed(&system))
        .execute(&pool)
        .await
        .expect("replace the seed");
    pool.close().await;
    let refused = verify().expect_err("another seed");
    assert!(refused.contains("committed to at activation"), "{refused}");
}

/// Review U1 on PostgreSQL: the chain's end is compared with the
/// `audit_head` row every append updates, so the last record deleted with
/// the trigger disabled fails verification even without an exported head.
#[tokio::test(flavor = "multi_thread")]
async fn on_postgresql_a_removed_tail_is_behind_the_stored_head() {
    let postgres = equipoise_testkit::PostgresServer::start();
    let url = postgres.create_database();
    let system = System::all_in_one(&[("EQUIPOISE_RANDOMISATION__DATABASE_URL", url.clone())]);
    system.activate(RESPINE_YAML).await;
    let site = system.token("sam", &["site_investigator"], &["FR-MTP"]);
    system
        .randomisation_client(&site)
        .await
        .randomise(respine_request("FR-MTP", "MTP-001", 60.0))
        .await
        .expect("randomised");
    let verify = || {
        let output = Command::new(equipoise_testkit::equipoise_binary())
            .args(["audit", "verify"])
            .envs(system.offline_env())
            .env("EQUIPOISE_RANDOMISATION__DATABASE_URL", &url)
            .output()
            .expect("run equipoise");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let (ok, printed) = verify();
    assert!(ok, "{printed}");

    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    for statement in [
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
        "DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)",
    ] {
        sqlx::query(statement).execute(&pool).await.expect("tamper");
    }
    pool.close().await;
    let (ok, printed) = verify();
    assert!(!ok, "{printed}");
    assert!(printed.contains("removed from its tail"), "{printed}");
}

/// Verification without the seal key says what it could not check, rather
/// than reporting the seeds and arms as verified.
#[tokio::test(flavor = "multi_thread")]
async fn without_the_seal_key_verification_says_what_it_did_not_check() {
    let system = two_randomised().await;
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let output = Command::new(equipoise_testkit::equipoise_binary())
        .args(["audit", "verify"])
        .envs(system.offline_env())
        .env(
            "EQUIPOISE_RANDOMISATION__SEAL_KEY_FILE",
            elsewhere.path().join("not-here.key"),
        )
        .output()
        .expect("run equipoise");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed}");
    assert!(printed.contains("audit chain verified"), "{printed}");
    assert!(printed.contains("no seal key here"), "{printed}");
    assert!(
        !elsewhere.path().join("not-here.key").exists(),
        "verification never makes a key"
    );
}

/// Issue 7, item 4: activation chains a keyed digest of the uploaded list as
/// stored, and a list edited behind the triggers fails verification.
#[tokio::test(flavor = "multi_thread")]
async fn an_uploaded_list_edited_after_activation_fails_verification() {
    let system = System::all_in_one(&[]);
    let yaml = RESPINE_YAML.replace(
        "kind: permuted_blocks\n  block_sizes: [2, 4]",
        "kind: uploaded_list\n  warn_remaining: 1",
    );
    assert!(yaml.contains("uploaded_list"), "the replacement must apply");
    let admin = system.token("ada", &["trial_admin", "statistician"], &[]);
    let mut client = system.randomisation_client(&admin).await;
    let trial = client
        .register_trial(pb::RegisterTrialRequest {
            definition_yaml: yaml,
        })
        .await
        .expect("register")
        .into_inner();
    let mut csv = String::from("stratum,arm\n");
    for site in ["FR-MTP", "FR-PAR", "ES-VLL", "IT-MIL", "DE-ULM"] {
        for pain in ["moderate", "severe"] {
            for arm in ["MSC", "SHAM"] {
                csv.push_str(&format!("\"site={site},baseline_pain={pain}\",{arm}\n"));
            }
        }
    }
    client
        .upload_allocation_list(pb::UploadAllocationListRequest {
            trial_id: trial.trial_id.clone(),
            csv,
        })
        .await
        .expect("upload");
    client
        .activate_trial(pb::ActivateTrialRequest {
            trial_id: trial.trial_id,
            expected_definition_sha256: trial.definition_sha256,
        })
        .await
        .expect("activate");
    equipoise(&system, &["audit", "verify"]).expect("intact, the list checked");

    let pool =
        sqlx::SqlitePool::connect(&format!("sqlite://{}", system.randomisation_db().display()))
            .await
            .expect("open the database");
    let swap = "UPDATE allocation_lists SET arm = CASE arm WHEN 'MSC' THEN 'SHAM' ELSE 'MSC' END
                WHERE trial_id = 'RESPINE' AND position = 0";
    let refused = sqlx::query(swap).execute(&pool).await;
    assert!(refused.is_err(), "the trigger refuses the edit");
    sqlx::query("DROP TRIGGER allocation_lists_frozen_update")
        .execute(&pool)
        .await
        .expect("drop the trigger");
    sqlx::query(swap)
        .execute(&pool)
        .await
        .expect("swap the first arms");
    pool.close().await;
    let refused = equipoise(&system, &["audit", "verify"]).expect_err("another list");
    assert!(refused.contains("allocation list"), "{refused}");
}
