//! Forward-only schema migrations, embedded in the binary. A database whose
//! schema is newer than the binary is refused rather than misread.

/// (version, SQL) in order.
pub const SQLITE: &[(i64, &str)] = &[(1, include_str!("../../migrations/sqlite/0001_initial.sql"))];

pub const POSTGRES: &[(i64, &str)] = &[(
    1,
    include_str!("../../migrations/postgres/0001_initial.sql"),
)];

pub fn latest(migrations: &[(i64, &str)]) -> i64 {
    migrations.last().map_or(0, |(version, _)| *version)
}
