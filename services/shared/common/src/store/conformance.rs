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
/// store `connect(url, max_connections)`; PostgreSQL is the test kit's shared
/// server, with a database of the test's own.
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
            let url = ::equipoise_testkit::PostgresServer::shared().create_database();
            let store = <$postgres>::connect(&url, 8)
                .await
                .expect("connect to the test database");
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
