//! One named test per conformance check per backend.
//!
//! A service writes its checks as `async fn name(store: &dyn TheStore)` in
//! modules grouped by concern, then instantiates the suite once per
//! backend. A failing check fails its own test, named after the backend
//! and the check, e.g. `store::conformance::postgres::commit_is_fenced`.

/// Emits `mod $backend` with one `#[tokio::test]` per check.
///
/// - `store`: awaited once per test for a fresh store. It is evaluated
///   inside the generated module, which sees the caller's items through
///   `use super::*`. Checks get `&*store`, so it may be anything that
///   dereferences to what they take, e.g. a fixture that also holds a
///   temporary directory.
/// - `after_each` (optional): an async function run on the store after every
///   check, for invariants every check must keep.
/// - `checks`: `group::check`, where `group` is a module beside the
///   invocation.
///
/// The calling crate depends on `tokio`.
///
/// ```text
/// equipoise_common::conformance_suite! {
///     backend: sqlite_memory,
///     store: sqlite_in_memory(),
///     after_each: audit_chain_verifies,
///     checks: [lifecycle::drafts_are_replaced, commit::commit_is_fenced],
/// }
/// ```
#[macro_export]
macro_rules! conformance_suite {
    (
        backend: $backend:ident,
        store: $store:expr,
        after_each: $after:path,
        checks: [$($group:ident :: $check:ident),+ $(,)?] $(,)?
    ) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let store = $store.await;
                    super::$group::$check(&*store).await;
                    $after(&*store).await;
                }
            )+
        }
    };
    (
        backend: $backend:ident,
        store: $store:expr,
        checks: [$($group:ident :: $check:ident),+ $(,)?] $(,)?
    ) => {
        $crate::conformance_suite! {
            backend: $backend,
            store: $store,
            after_each: $crate::store::conformance::nothing_after,
            checks: [$($group :: $check),+],
        }
    };
}

/// The three backends every service's suite runs on: emits the async
/// openers `open_sqlite_in_memory`, `open_sqlite_file` and `open_postgres`,
/// each giving a fresh `Fixture<dyn $store>` for a suite's `store:`. The
/// SQLite store must have `in_memory()` and `open(path)`, the PostgreSQL
/// store `connect_with_owner(url, owner_url, max_connections)`; PostgreSQL is
/// the test kit's shared server, with a database of the test's own, owned
/// by a role of its own and used through a runtime role, as in production:
/// every check also shows that the grants suffice.
///
/// The calling crate has `tempfile` and `equipoise-testkit` among its
/// dev-dependencies.
#[macro_export]
macro_rules! conformance_backends {
    (store: $store:path, sqlite: $sqlite:ty, postgres: $postgres:ty $(,)?) => {
        async fn open_sqlite_in_memory() -> $crate::store::conformance::Fixture<dyn $store> {
            let store = <$sqlite>::in_memory()
                .await
                .expect("open an in-memory store");
            $crate::store::conformance::Fixture::new(Box::new(store))
        }

        async fn open_sqlite_file() -> $crate::store::conformance::Fixture<dyn $store> {
            let dir = ::tempfile::tempdir().expect("create a temporary directory");
            let store = <$sqlite>::open(&dir.path().join("store.db"))
                .await
                .expect("open a file store");
            $crate::store::conformance::Fixture::keeping(Box::new(store), dir)
        }

        async fn open_postgres() -> $crate::store::conformance::Fixture<dyn $store> {
            let roles = ::equipoise_testkit::PostgresServer::shared().create_database_with_roles();
            let store =
                <$postgres>::connect_with_owner(&roles.runtime_url, Some(&roles.owner_url), 8)
                    .await
                    .expect("connect to the test database as its runtime role");
            $crate::store::conformance::Fixture::new(Box::new(store))
        }
    };
}

/// A store under test and whatever must outlive it, such as the temporary
/// directory holding its file. Dereferences to the store, so a suite's
/// `store:` may open one: `Fixture<dyn TheStore>`.
pub struct Fixture<S: ?Sized> {
    // Dropped in this order: the store before what it lives in.
    store: Box<S>,
    _keep: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl<S: ?Sized> Fixture<S> {
    pub fn new(store: Box<S>) -> Self {
        Self { store, _keep: None }
    }

    /// Keeps `keep` until the store is dropped.
    pub fn keeping(store: Box<S>, keep: impl std::any::Any + Send + Sync) -> Self {
        Self {
            store,
            _keep: Some(Box::new(keep)),
        }
    }
}

impl<S: ?Sized> std::ops::Deref for Fixture<S> {
    type Target = S;

    fn deref(&self) -> &S {
        &self.store
    }
}

/// Shows that every table a service's store uses (`pool`, connected as the
/// runtime role after the store has written to them) is declared in
/// `schema`, and that the runtime role cannot tamper with any of them
/// ([`assert_only_the_owner_can_tamper`]). For tests.
pub async fn assert_roles_guard_the_schema(
    pool: &sqlx::PgPool,
    owner_url: &str,
    runtime_url: &str,
    schema: &super::Schema,
) {
    let undeclared = super::roles::undeclared_tables(pool, schema)
        .await
        .unwrap_or_else(|e| panic!("list the tables: {e}"));
    assert_eq!(
        undeclared,
        Vec::<String>::new(),
        "tables missing from SCHEMA"
    );
    assert_only_the_owner_can_tamper(owner_url, runtime_url, schema).await;
}

/// Shows that the runtime role cannot get around the triggers of any
/// append-only table of `schema`: disabling or dropping them, deleting,
/// updating or truncating rows all fail with SQLSTATE 42501 (insufficient
/// privilege). Then the same statements succeed as the owner on
/// `audit_log`, in a transaction rolled back, so the refusals are the roles'
/// doing, not a statement that could never work. For tests.
pub async fn assert_only_the_owner_can_tamper(
    owner_url: &str,
    runtime_url: &str,
    schema: &super::Schema,
) {
    use sqlx::Connection;
    let mut owner = sqlx::PgConnection::connect(owner_url)
        .await
        .unwrap_or_else(|e| panic!("the owner connects: {e}"));
    let mut runtime = sqlx::PgConnection::connect(runtime_url)
        .await
        .unwrap_or_else(|e| panic!("the runtime role connects: {e}"));
    let before = audit_count(&mut owner).await;
    let mut tables = 0;
    for table in schema.append_only_tables() {
        tables += 1;
        for sql in tamper_statements(&mut owner, table.name).await {
            let refused = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .execute(&mut runtime)
                .await;
            let code = refused
                .as_ref()
                .err()
                .and_then(|e| e.as_database_error())
                .and_then(|e| e.code().map(|c| c.into_owned()));
            assert_eq!(
                code.as_deref(),
                Some("42501"),
                "{sql}, as the runtime role: {refused:?}"
            );
        }
    }
    assert!(
        tables > 0,
        "{} declares no append-only table",
        schema.service
    );
    assert!(before > 0, "tamper with a trail that holds records");
    let mut tx = owner.begin().await.unwrap_or_else(|e| panic!("begin: {e}"));
    for sql in tamper_statements(&mut tx, "audit_log").await {
        sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .execute(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{sql}, as the owner: {e}"));
    }
    assert_eq!(audit_count(&mut tx).await, 0, "the owner emptied the trail");
    tx.rollback()
        .await
        .unwrap_or_else(|e| panic!("rollback: {e}"));
    assert_eq!(audit_count(&mut owner).await, before, "the trail is whole");
}

async fn audit_count(conn: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(conn)
        .await
        .unwrap_or_else(|e| panic!("count audit_log: {e}"))
}

/// Disable and drop `table`'s triggers, then update, delete and truncate
/// its rows; its first trigger and column are read from the catalogue.
async fn tamper_statements(owner: &mut sqlx::PgConnection, table: &str) -> Vec<String> {
    let quoted = super::roles::quote_ident(table);
    let trigger: String = sqlx::query_scalar(
        "SELECT CAST(tgname AS TEXT) FROM pg_trigger
         WHERE tgrelid = to_regclass($1) AND NOT tgisinternal ORDER BY tgname LIMIT 1",
    )
    .bind(&quoted)
    .fetch_optional(&mut *owner)
    .await
    .unwrap_or_else(|e| panic!("{table}'s triggers: {e}"))
    .unwrap_or_else(|| panic!("{table} has no trigger to tamper with"));
    let column: String = sqlx::query_scalar(
        "SELECT CAST(attname AS TEXT) FROM pg_attribute
         WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped
         ORDER BY attnum LIMIT 1",
    )
    .bind(&quoted)
    .fetch_one(&mut *owner)
    .await
    .unwrap_or_else(|e| panic!("{table}'s columns: {e}"));
    let column = super::roles::quote_ident(&column);
    vec![
        format!("ALTER TABLE {quoted} DISABLE TRIGGER ALL"),
        format!(
            "DROP TRIGGER {} ON {quoted}",
            super::roles::quote_ident(&trigger)
        ),
        format!("UPDATE {quoted} SET {column} = {column}"),
        format!("DELETE FROM {quoted}"),
        format!("TRUNCATE {quoted}"),
    ]
}

/// The `after_each` of a suite that gives none.
#[doc(hidden)]
pub async fn nothing_after<T: ?Sized>(_store: &T) {}

#[cfg(test)]
mod tests {
    //! The macro on a toy store: it must compile outside the services and
    //! give each backend its own store.

    use std::sync::Mutex;

    trait Counter: Send + Sync {
        fn add(&self) -> u32;
    }

    #[derive(Default)]
    struct MemoryCounter(Mutex<u32>);

    impl Counter for MemoryCounter {
        fn add(&self) -> u32 {
            let mut count = self.0.lock().expect("counter lock");
            *count += 1;
            *count
        }
    }

    async fn memory_counter() -> super::Fixture<dyn Counter> {
        super::Fixture::new(Box::new(MemoryCounter::default()))
    }

    /// Fails a check that left the count anywhere but where it ended.
    async fn counts_once_more(counter: &dyn Counter) {
        let before = counter.add();
        assert_eq!(counter.add(), before + 1);
    }

    mod counting {
        use super::Counter;

        pub async fn a_fresh_store_counts_from_one(counter: &dyn Counter) {
            assert_eq!(counter.add(), 1);
        }

        pub async fn counts_accumulate(counter: &dyn Counter) {
            counter.add();
            assert_eq!(counter.add(), 2);
        }
    }

    #[test]
    fn a_fixture_keeps_what_it_holds_until_dropped() {
        let kept = std::sync::Arc::new(());
        let fixture: super::Fixture<dyn Counter> = super::Fixture::keeping(
            Box::new(MemoryCounter::default()),
            std::sync::Arc::clone(&kept),
        );
        assert_eq!(fixture.add(), 1, "dereferences to the store");
        assert_eq!(std::sync::Arc::strong_count(&kept), 2);
        drop(fixture);
        assert_eq!(std::sync::Arc::strong_count(&kept), 1);
    }

    crate::conformance_suite! {
        backend: memory,
        store: memory_counter(),
        checks: [counting::a_fresh_store_counts_from_one, counting::counts_accumulate],
    }

    crate::conformance_suite! {
        backend: memory_checked_after,
        store: memory_counter(),
        after_each: counts_once_more,
        checks: [counting::a_fresh_store_counts_from_one],
    }
}
