//! Review A1: unsealing a master seed needs a statistician's token,
//! verified as a server would, and while enrolment is open a break-glass
//! reason; the audit record names the verified identity. Secrets can come
//! from a file or standard input instead of argv.

use std::io::Write;
use std::process::{Command, Stdio};

use equipoise_tests::RESPINE_YAML;
use equipoise_tests::system::System;

fn equipoise(system: &System, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut child = Command::new(equipoise_testkit::equipoise_binary())
        .args(args)
        .envs(system.offline_env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run equipoise");
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.unwrap_or_default().as_bytes())
            .expect("write stdin");
    }
    let output = child.wait_with_output().expect("equipoise output");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unsealing_needs_a_verified_statistician_and_a_reason_while_enrolling() {
    let system = System::all_in_one(&[]);
    system.activate(RESPINE_YAML).await;
    let unseal = ["seed", "unseal", "--trial", "RESPINE"];

    let site = system.token("sam", &["site_investigator"], &["FR-MTP"]);
    let refused = equipoise(
        &system,
        &[
            &unseal[..],
            &["--token", &site, "--reason", "final analysis check"],
        ]
        .concat(),
        None,
    )
    .expect_err("a site token");
    assert!(refused.contains("statistician's token"), "{refused}");

    // A statistician's token with its signature broken: refused as a
    // token, before any reason is looked at.
    let statistician = system.token("stella", &["statistician"], &[]);
    let forged = format!("{statistician}x");
    let refused = equipoise(
        &system,
        &[
            &unseal[..],
            &["--token", &forged, "--reason", "final analysis check"],
        ]
        .concat(),
        None,
    )
    .expect_err("a token that does not verify");
    assert!(
        refused.contains("signature") || refused.contains("token"),
        "{refused}"
    );
    assert!(!refused.contains("break-glass"), "{refused}");

    let refused = equipoise(
        &system,
        &[&unseal[..], &["--token", "-"]].concat(),
        Some(&statistician),
    )
    .expect_err("no reason while enrolling");
    assert!(refused.contains("break-glass"), "{refused}");

    let files = tempfile::tempdir().expect("tempdir");
    let token_file = files.path().join("token");
    std::fs::write(&token_file, &statistician).expect("token file");
    let seed = equipoise(
        &system,
        &[
            &unseal[..],
            &[
                "--token",
                &format!("@{}", token_file.display()),
                "--reason",
                "DSMB-requested audit of list generation",
            ],
        ]
        .concat(),
        None,
    )
    .expect("unsealed");
    let seed = seed.trim().to_owned();
    assert_eq!(seed.len(), 64, "{seed}");

    // The seed through standard input regenerates a list.
    let definition = files.path().join("respine.yaml");
    std::fs::write(&definition, RESPINE_YAML).expect("definition");
    let list = equipoise(
        &system,
        &[
            "list",
            "regenerate",
            "--definition",
            &definition.display().to_string(),
            "--seed",
            "-",
            "--stratum",
            "site=FR-MTP,baseline_pain=severe",
            "--length",
            "4",
        ],
        Some(&seed),
    )
    .expect("regenerated");
    assert_eq!(list.lines().count(), 5, "{list}");

    let pool =
        sqlx::SqlitePool::connect(&format!("sqlite://{}", system.randomisation_db().display()))
            .await
            .expect("open the database");
    let unsealed: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT actor, role, details FROM audit_log WHERE action = 'trial.seed_unsealed'",
    )
    .fetch_all(&pool)
    .await
    .expect("audit records");
    assert_eq!(unsealed.len(), 1, "one unseal, refusals write nothing");
    let (actor, role, details) = &unsealed[0];
    assert_eq!(actor, "stella");
    assert_eq!(role, "statistician");
    assert!(details.contains("DSMB-requested audit"), "{details}");
}
