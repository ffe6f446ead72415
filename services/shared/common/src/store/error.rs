//! One classification of database failures for both backends: what a caller
//! may retry (the database is unavailable) against everything else.

use sqlx::error::DatabaseError as DriverError;
use sqlx::sqlite::SqliteError;

/// A database failure, with no connection details or raw driver text in
/// [`DatabaseError::Unavailable`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatabaseError {
    /// Connection lost, pool exhausted or closed, server shutting down or out
    /// of resources, SQLite busy: worth retrying later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database has a migration this binary does not know.
    #[error(
        "the database has migration {found}, newer than this binary's newest ({supported}); run a newer binary"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("database error: {0}")]
    Other(String),
    /// The runtime and owner roles would let the service get around its
    /// own triggers, or the owner could not migrate or grant.
    /// Boxed: it is rare (start-up only) and would bloat every result.
    #[error(transparent)]
    Roles(Box<super::roles::RoleError>),
}

impl From<super::roles::RoleError> for DatabaseError {
    fn from(error: super::roles::RoleError) -> Self {
        DatabaseError::Roles(Box::new(error))
    }
}

impl From<sqlx::Error> for DatabaseError {
    fn from(error: sqlx::Error) -> Self {
        match unavailable_reason(&error) {
            Some(reason) => DatabaseError::Unavailable(reason),
            None => DatabaseError::Other(error.to_string()),
        }
    }
}

/// Gives a service's store error `From<DatabaseError>` and
/// `From<sqlx::Error>`, so both its backends classify failures the one way
/// [`DatabaseError`] does and convert with `?`. The error needs the variants
/// `Unavailable(String)`, `SchemaTooNew { found: i64, supported: i64 }`,
/// `Database(String)` and `Roles(Box<RoleError>)`; the calling crate depends on
/// `sqlx`.
///
/// ```text
/// equipoise_common::store_error_from_database!(StoreError);
/// ```
#[macro_export]
macro_rules! store_error_from_database {
    ($error:ty) => {
        impl From<$crate::store::DatabaseError> for $error {
            fn from(error: $crate::store::DatabaseError) -> Self {
                match error {
                    $crate::store::DatabaseError::Unavailable(reason) => Self::Unavailable(reason),
                    $crate::store::DatabaseError::SchemaTooNew { found, supported } => {
                        Self::SchemaTooNew { found, supported }
                    }
                    $crate::store::DatabaseError::Other(message) => Self::Database(message),
                    $crate::store::DatabaseError::Roles(error) => Self::Roles(error),
                }
            }
        }

        /// One classification for both backends (`equipoise_common::store::error`).
        impl From<sqlx::Error> for $error {
            fn from(error: sqlx::Error) -> Self {
                $crate::store::DatabaseError::from(error).into()
            }
        }
    };
}

/// Why the database cannot serve now, if that is what `error` means.
pub fn unavailable_reason(error: &sqlx::Error) -> Option<String> {
    let reason = match error {
        sqlx::Error::Io(io) => format!("connection failed ({})", io.kind()),
        sqlx::Error::PoolTimedOut => "no connection available in time".into(),
        sqlx::Error::PoolClosed => "connection pool closed".into(),
        sqlx::Error::WorkerCrashed => "database worker stopped".into(),
        sqlx::Error::Protocol(_) => "connection protocol error".into(),
        sqlx::Error::Tls(_) => "TLS failure".into(),
        sqlx::Error::Database(db) => return server_unavailable(db.as_ref()),
        _ => return None,
    };
    Some(reason)
}

/// SQLite busy or locked; PostgreSQL SQLSTATE classes 08 (connection),
/// 57P (shutdown) and 53 (resources).
fn server_unavailable(db: &dyn DriverError) -> Option<String> {
    if let Some(sqlite) = db.try_downcast_ref::<SqliteError>() {
        return sqlite_busy(sqlite);
    }
    let code = db.code()?;
    let what = if code.starts_with("08") {
        "connection exception"
    } else if code.starts_with("57P") {
        "the server is shutting down"
    } else if code.starts_with("53") {
        "the server is out of resources"
    } else {
        return None;
    };
    Some(format!("{what} (SQLSTATE {code})"))
}

const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;

fn sqlite_busy(error: &SqliteError) -> Option<String> {
    // The code is the extended result code; its low byte is the primary one.
    let extended: i32 = error.code()?.parse().ok()?;
    match extended & 0xff {
        SQLITE_BUSY => Some("the database is busy".into()),
        SQLITE_LOCKED => Some("the database is locked".into()),
        _ => None,
    }
}

/// A short description for start-up errors: no URL, password or driver
/// dump, but the server's own message (unknown role, missing database).
pub fn describe(error: &sqlx::Error) -> String {
    if let Some(reason) = unavailable_reason(error) {
        return reason;
    }
    match error {
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::Configuration(e) => format!("configuration: {e}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_and_exhausted_pools_are_unavailable() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            DatabaseError::from(sqlx::Error::Io(refused)),
            DatabaseError::Unavailable("connection failed (connection refused)".into())
        );
        for error in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
        ] {
            assert!(matches!(
                DatabaseError::from(error),
                DatabaseError::Unavailable(_)
            ));
        }
    }

    /// A service's store error, as the macro expects it.
    #[derive(Debug, PartialEq, Eq)]
    enum ServiceError {
        Unavailable(String),
        SchemaTooNew { found: i64, supported: i64 },
        Database(String),
        Roles(Box<crate::store::RoleError>),
    }

    crate::store_error_from_database!(ServiceError);

    #[test]
    fn a_service_error_takes_the_one_classification() {
        assert_eq!(
            ServiceError::from(sqlx::Error::PoolTimedOut),
            ServiceError::Unavailable("no connection available in time".into())
        );
        assert!(matches!(
            ServiceError::from(sqlx::Error::RowNotFound),
            ServiceError::Database(_)
        ));
        let too_new = DatabaseError::SchemaTooNew {
            found: 9,
            supported: 1,
        };
        assert_eq!(
            ServiceError::from(too_new),
            ServiceError::SchemaTooNew {
                found: 9,
                supported: 1
            }
        );
    }

    #[test]
    fn other_failures_are_database_errors() {
        assert!(matches!(
            DatabaseError::from(sqlx::Error::RowNotFound),
            DatabaseError::Other(_)
        ));
        assert!(matches!(
            DatabaseError::from(sqlx::Error::ColumnNotFound("seq".into())),
            DatabaseError::Other(_)
        ));
    }
}
