//! A stored definition is used only while it hashes to the hash recorded
//! beside it (issue 7, item 6; the review's I3): a `trials` row edited in
//! the database, behind the service, is refused as an internal error after
//! a restart, and allocates nothing.

use std::path::Path;

use sqlx::SqlitePool;
use sqlx::sqlite::SqliteConnectOptions;

use super::*;

/// A service on the SQLite file at `path`, as after a restart: nothing
/// cached.
async fn service_on(path: &Path) -> RandomisationService {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(path).await.expect("the store opens"));
    RandomisationService::new(
        store,
        Arc::new(InProcessLocks::new(LOCK_WAIT)),
        Sealer::new(&TEST_SEAL_KEY).expect("a 32-byte key is a valid seal key"),
        Limits::default(),
        Arc::new(codes::FakeCodeIssuer::default()),
    )
}

/// Rewrites the stored design's YAML directly in the database, keeping the
/// recorded hash.
async fn tamper_with_definition(path: &Path, yaml: &str) {
    let pool = SqlitePool::connect_with(SqliteConnectOptions::new().filename(path))
        .await
        .expect("a second connection to the file");
    let changed = sqlx::query("UPDATE trials SET definition_yaml = ? WHERE trial_id = 'RESPINE'")
        .bind(yaml)
        .execute(&pool)
        .await
        .expect("the trials row is edited behind the service");
    assert_eq!(changed.rows_affected(), 1);
    pool.close().await;
}

async fn randomise(
    service: &RandomisationService,
    subject_id: &str,
) -> Result<RandomiseOutcome, RandomisationError> {
    service
        .randomise(
            &site("FR-MTP"),
            &command(
                "RESPINE",
                "FR-MTP",
                subject_id,
                respine_subject(MODERATE_PAIN),
            ),
        )
        .await
}

fn assert_internal<T: std::fmt::Debug>(result: Result<T, RandomisationError>) {
    match result {
        Err(RandomisationError::Internal(detail)) => assert!(
            detail.contains("not the recorded") && detail.contains("changed outside the service"),
            "{detail}"
        ),
        other => panic!("expected an internal error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stored_definition_edited_behind_the_service_is_refused_on_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("randomisation.db");
    let first = service_on(&path).await;
    let draft = first
        .register_trial(&statistician(), RESPINE_YAML)
        .await
        .expect("registered");
    first
        .activate_trial(&admin(), "RESPINE", &draft.record.definition_sha256)
        .await
        .expect("activated");
    randomise(&first, "MTP-001").await.expect("allocated");

    // A restart re-parses the stored design and finds its hash unchanged.
    let restarted = service_on(&path).await;
    randomise(&restarted, "MTP-002")
        .await
        .expect("allocated after a restart");

    // Fixed blocks of two instead of the concealed random 2 or 4: a real
    // change of design, valid on its own, under the old hash.
    let tampered = RESPINE_YAML.replace("block_sizes: [2, 4]", "block_sizes: [2]");
    assert_ne!(tampered, RESPINE_YAML);
    parse_definition(&tampered).expect("the edited design is valid by itself");
    tamper_with_definition(&path, &tampered).await;

    // A service holding the frozen design keeps it, never the edited row.
    randomise(&restarted, "MTP-003")
        .await
        .expect("the cached design allocates");

    let after_tampering = service_on(&path).await;
    assert_internal(randomise(&after_tampering, "MTP-004").await);
    assert_internal(after_tampering.get_trial(&admin(), "RESPINE").await);
    let stored = after_tampering
        .store()
        .allocation("RESPINE", "MTP-004")
        .await
        .expect("the store reads");
    assert!(stored.is_none(), "no allocation under an unverified design");
}
