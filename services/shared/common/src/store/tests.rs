//! The toolkit against real databases: SQLite files and the test binary's
//! shared PostgreSQL, one database per test.

use std::str::FromStr;
use std::time::Duration;

use equipoise_testkit::PostgresServer;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Connection, SqlitePool};

use super::error::DatabaseError;
use super::roles::{self, Privilege, RoleError, Schema, Table};
use super::{postgres, sqlite};
use crate::audit::{AuditEntry, verify_chain};

static SQLITE: Migrator = sqlx::migrate!("src/store/test_migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("src/store/test_migrations/postgres");

/// The test schema as a service declares its own.
static TEST_SCHEMA: Schema = Schema {
    service: "test",
    migrator: &POSTGRES,
    tables: &[
        Table::append_only("audit_log"),
        Table::with("audit_head", &[Privilege::Select, Privilege::Update]),
        Table::with(
            "notes",
            &[Privilege::Select, Privilege::Insert, Privilege::Delete],
        ),
    ],
};

const WRITERS: usize = 8;

fn entry(n: usize) -> AuditEntry {
    AuditEntry {
        at: "2026-11-21T10:00:00Z".into(),
        actor: format!("writer-{n}"),
        role: "trial_admin".into(),
        action: "test.appended".into(),
        entity: "trial/T".into(),
        details: serde_json::json!({ "n": n }),
    }
}

async fn sqlite_append(pool: &SqlitePool, n: usize) -> Result<(), DatabaseError> {
    let mut tx = sqlite::begin_write(pool).await?;
    sqlite::append_audit(&mut tx, entry(n)).await?;
    tx.commit().await?;
    Ok(())
}

async fn postgres_append(pool: &sqlx::PgPool, n: usize) -> Result<(), DatabaseError> {
    let mut tx = pool.begin().await?;
    postgres::append_audit(&mut tx, entry(n)).await?;
    tx.commit().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_appends_from_many_writers_form_one_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = sqlite::open_file(&dir.path().join("t.db"), &SQLITE)
        .await
        .expect("open");
    let writers: Vec<_> = (0..WRITERS)
        .map(|n| {
            let pool = pool.clone();
            tokio::spawn(async move { sqlite_append(&pool, n).await })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer").expect("append");
    }
    let records = sqlite::audit_records(&pool, 1, 100).await.expect("read");
    assert_eq!(verify_chain(&records), Ok(WRITERS as u64));
    let tail = sqlite::audit_records(&pool, 3, 2).await.expect("read");
    assert_eq!(tail, records[2..4], "from a seq, up to a limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_appends_from_many_writers_form_one_chain() {
    let url = PostgresServer::shared().create_database();
    let pool = postgres::connect(&url, None, 4, &TEST_SCHEMA)
        .await
        .expect("connect");
    let writers: Vec<_> = (0..WRITERS)
        .map(|n| {
            let pool = pool.clone();
            tokio::spawn(async move { postgres_append(&pool, n).await })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer").expect("append");
    }
    let records = postgres::audit_records(&pool, 1, 100).await.expect("read");
    assert_eq!(verify_chain(&records), Ok(WRITERS as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_migrating_one_database_together_all_start() {
    let url = PostgresServer::shared().create_database();
    let replicas: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { postgres::connect(&url, None, 2, &TEST_SCHEMA).await })
        })
        .collect();
    for replica in replicas {
        replica.await.expect("replica").expect("migrated");
    }
}

/// The shape the services' own migrator left: its table at `version`, and
/// that version's schema.
async fn sqlite_legacy(path: &std::path::Path, version: i64) {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("create");
    sqlx::raw_sql(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
    )
    .execute(&mut conn)
    .await
    .expect("legacy table");
    sqlx::raw_sql(include_str!("test_migrations/sqlite/0001_audit.sql"))
        .execute(&mut conn)
        .await
        .expect("version 1");
    sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 'then')")
        .bind(version)
        .execute(&mut conn)
        .await
        .expect("record");
    conn.close().await.expect("close");
}

#[tokio::test]
async fn a_legacy_database_is_adopted_then_migrated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.db");
    sqlite_legacy(&path, 1).await;
    // Running 0001 again would fail: its table exists.
    let pool = sqlite::open_file(&path, &SQLITE).await.expect("adopt");
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .expect("sqlx's table");
    assert_eq!(applied, [1, 2]);
    sqlx::query("INSERT INTO notes (id, text) VALUES (1, 'migration 2 ran')")
        .execute(&pool)
        .await
        .expect("0002's table");
    let legacy = sqlx::query("SELECT * FROM schema_migrations")
        .execute(&pool)
        .await;
    assert!(legacy.is_err(), "the legacy table is dropped");
}

#[tokio::test]
async fn a_legacy_database_newer_than_the_binary_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.db");
    sqlite_legacy(&path, 7).await;
    let refused = sqlite::open_file(&path, &SQLITE).await;
    assert_eq!(
        refused.err(),
        Some(DatabaseError::SchemaTooNew {
            found: 7,
            supported: 2
        })
    );
}

#[tokio::test]
async fn a_busy_sqlite_database_is_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.db");
    let pool = sqlite::open_file(&path, &SQLITE).await.expect("open");
    let holder = sqlite::begin_write(&pool)
        .await
        .expect("take the write lock");
    let impatient = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .expect("options")
        .busy_timeout(Duration::ZERO);
    let other = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(impatient)
        .await
        .expect("second pool");
    let busy = sqlite::begin_write(&other).await.err();
    assert_eq!(
        busy,
        Some(DatabaseError::Unavailable("the database is busy".into()))
    );
    drop(holder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_postgres_connection_is_unavailable() {
    let url = PostgresServer::shared().create_database();
    let pool = postgres::connect(&url, None, 2, &TEST_SCHEMA)
        .await
        .expect("connect");
    let mut victim = pool.acquire().await.expect("a connection");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *victim)
        .await
        .expect("pid");
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&pool)
        .await
        .expect("terminate");
    let lost = sqlx::query("SELECT 1").execute(&mut *victim).await;
    let error = DatabaseError::from(lost.expect_err("the connection is gone"));
    assert!(matches!(error, DatabaseError::Unavailable(_)), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_constraint_violation_is_a_database_error_on_both_backends() {
    let insert = "INSERT INTO notes (id, text) VALUES ($1, 'same')";
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = sqlite::open_file(&dir.path().join("t.db"), &SQLITE)
        .await
        .expect("open");
    sqlx::query(insert)
        .bind(1_i64)
        .execute(&sqlite)
        .await
        .expect("first");
    let duplicate = sqlx::query(insert).bind(2_i64).execute(&sqlite).await;
    let error = DatabaseError::from(duplicate.expect_err("unique"));
    assert!(matches!(error, DatabaseError::Other(_)), "{error:?}");

    let url = PostgresServer::shared().create_database();
    let postgres = postgres::connect(&url, None, 2, &TEST_SCHEMA)
        .await
        .expect("connect");
    sqlx::query(insert)
        .bind(1_i64)
        .execute(&postgres)
        .await
        .expect("first");
    let duplicate = sqlx::query(insert).bind(2_i64).execute(&postgres).await;
    let error = DatabaseError::from(duplicate.expect_err("unique"));
    assert!(matches!(error, DatabaseError::Other(_)), "{error:?}");
}

/// What a service's migrations give its audit trail: a trigger refusing
/// every change. The test schema has none, so the owner adds it.
async fn guard_the_trail(owner_url: &str) {
    let owner = sqlx::PgPool::connect(owner_url).await.expect("owner");
    sqlx::raw_sql(
        "CREATE FUNCTION equipoise_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION '%', TG_ARGV[0]; END $$;
         CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
         FOR EACH ROW EXECUTE FUNCTION equipoise_refuse('audit_log is append-only');
         CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
         FOR EACH STATEMENT EXECUTE FUNCTION equipoise_refuse('audit_log is append-only');",
    )
    .execute(&owner)
    .await
    .expect("the trail's triggers");
    owner.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_role_writes_rows_but_cannot_get_around_the_triggers() {
    let db = PostgresServer::shared().create_database_with_roles();
    let pool = postgres::connect(&db.runtime_url, Some(&db.owner_url), 2, &TEST_SCHEMA)
        .await
        .expect("migrate as the owner, serve as the runtime role");
    guard_the_trail(&db.owner_url).await;
    for n in 0..3 {
        postgres_append(&pool, n)
            .await
            .expect("append as the runtime role");
    }
    sqlx::query("INSERT INTO notes (id, text) VALUES (1, 'kept'), (2, 'gone')")
        .execute(&pool)
        .await
        .expect("insert where declared");
    sqlx::query("DELETE FROM notes WHERE id = 2")
        .execute(&pool)
        .await
        .expect("delete where declared");
    let update = sqlx::query("UPDATE notes SET text = 'changed'")
        .execute(&pool)
        .await;
    assert!(update.is_err(), "notes declare no UPDATE");
    let migrations = sqlx::query("SELECT * FROM _sqlx_migrations")
        .execute(&pool)
        .await;
    assert!(migrations.is_err(), "the migration records are the owner's");
    let identity = roles::identity(&pool).await.expect("who");
    assert_eq!(identity.name, db.runtime);
    assert!(
        roles::undeclared_tables(&pool, &TEST_SCHEMA)
            .await
            .expect("tables")
            .is_empty()
    );
    super::conformance::assert_only_the_owner_can_tamper(
        &db.owner_url,
        &db.runtime_url,
        &TEST_SCHEMA,
    )
    .await;
    let records = postgres::audit_records(&pool, 1, 10).await.expect("read");
    assert_eq!(verify_chain(&records), Ok(3));
    drop(pool);
    postgres::connect(&db.runtime_url, Some(&db.owner_url), 2, &TEST_SCHEMA)
        .await
        .expect("a second start grants again");
}

async fn refused(url: &str, owner_url: Option<&str>) -> RoleError {
    match postgres::connect(url, owner_url, 2, &TEST_SCHEMA).await {
        Err(DatabaseError::Roles(error)) => *error,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn migrated(url: &str) -> bool {
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    let found: bool = sqlx::query_scalar("SELECT to_regclass('audit_log') IS NOT NULL")
        .fetch_one(&pool)
        .await
        .expect("look");
    pool.close().await;
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_refuses_a_runtime_role_that_is_the_owner_or_a_superuser() {
    let db = PostgresServer::shared().create_database_with_roles();
    let same = refused(&db.owner_url, Some(&db.owner_url)).await;
    assert!(matches!(same, RoleError::SameRole { .. }), "{same:?}");
    assert!(
        same.to_string().starts_with("test.database_owner_url"),
        "{same}"
    );
    let superuser = refused(&db.superuser_url, Some(&db.owner_url)).await;
    assert!(
        matches!(superuser, RoleError::Superuser { .. }),
        "{superuser:?}"
    );
    assert!(
        superuser.to_string().starts_with("test.database_url"),
        "{superuser}"
    );
    assert!(
        !migrated(&db.superuser_url).await,
        "refused before migrating"
    );

    let unreachable = refused(&db.runtime_url, Some("postgres://nobody@127.0.0.1:1/none")).await;
    assert!(
        matches!(&unreachable, RoleError::OwnerUnreachable { key, .. } if key == "test.database_owner_url"),
        "{unreachable:?}"
    );

    // One role for both, with no owner URL: development, allowed.
    postgres::connect(&db.owner_url, None, 2, &TEST_SCHEMA)
        .await
        .expect("one role, development only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_refuses_a_runtime_role_that_inherits_the_owner_or_extra_privileges() {
    let db = PostgresServer::shared().create_database_with_roles();
    let superuser = sqlx::PgPool::connect(&db.superuser_url).await.expect("su");
    let grant = format!(
        "GRANT {} TO {}",
        roles::quote_ident(&db.owner),
        roles::quote_ident(&db.runtime)
    );
    sqlx::query(sqlx::AssertSqlSafe(grant))
        .execute(&superuser)
        .await
        .expect("membership");
    let member = refused(&db.runtime_url, Some(&db.owner_url)).await;
    assert!(matches!(member, RoleError::Owns { .. }), "{member:?}");
    let revoke = format!(
        "REVOKE {} FROM {}",
        roles::quote_ident(&db.owner),
        roles::quote_ident(&db.runtime)
    );
    sqlx::query(sqlx::AssertSqlSafe(revoke))
        .execute(&superuser)
        .await
        .expect("no membership");
    postgres::connect(&db.runtime_url, Some(&db.owner_url), 2, &TEST_SCHEMA)
        .await
        .expect("a plain runtime role starts");

    // A privilege through PUBLIC, which the owner's grants do not touch.
    let owner = sqlx::PgPool::connect(&db.owner_url).await.expect("owner");
    sqlx::query("GRANT UPDATE ON audit_log TO PUBLIC")
        .execute(&owner)
        .await
        .expect("grant to PUBLIC");
    let public = refused(&db.runtime_url, Some(&db.owner_url)).await;
    assert!(
        matches!(&public, RoleError::Privilege { table, privilege, .. } if table == "audit_log" && privilege == "UPDATE"),
        "{public:?}"
    );
    sqlx::query("REVOKE UPDATE ON audit_log FROM PUBLIC")
        .execute(&owner)
        .await
        .expect("revoke from PUBLIC");

    // Or through a predefined role that writes every table.
    let write_all = format!(
        "GRANT pg_write_all_data TO {}",
        roles::quote_ident(&db.runtime)
    );
    sqlx::query(sqlx::AssertSqlSafe(write_all))
        .execute(&superuser)
        .await
        .expect("pg_write_all_data");
    let everything = refused(&db.runtime_url, Some(&db.owner_url)).await;
    assert!(
        matches!(&everything, RoleError::Privilege { table, .. } if table == "audit_log"),
        "{everything:?}"
    );
    superuser.close().await;
    owner.close().await;
}

#[test]
fn identifiers_are_quoted() {
    assert_eq!(roles::quote_ident("runtime"), "\"runtime\"");
    assert_eq!(
        roles::quote_ident("a\"; DROP TABLE x; --"),
        "\"a\"\"; DROP TABLE x; --\""
    );
}
