//! The storage toolkit every service's store builds on (docs/architecture.md,
//! "Records and audit"): pools opened with the durability settings, sqlx
//! migrations (with adoption of databases from the earlier migrator), one
//! classification of database errors, and the audit-chain append. No gRPC.
//!
//! A service's store keeps its own schema (`migrations/{sqlite,postgres}`
//! read by `sqlx::migrate!`), its SQL and rows, and its transactions'
//! locking; it takes everything here. Errors convert with `?` through
//! [`DatabaseError`], and into a service's own store error through
//! [`store_error_from_database!`](crate::store_error_from_database); its
//! conformance suite is [`conformance_suite!`](crate::conformance_suite) over
//! [`conformance::Fixture`]s.

pub mod audit;
pub mod conformance;
pub mod error;
pub mod group_commit;
pub mod migrate;
pub mod postgres;
pub mod roles;
pub mod sqlite;

#[cfg(test)]
mod tests;

pub use audit::AuditRow;
pub use error::DatabaseError;
pub use roles::{Privilege, RoleError, Schema, Table};
