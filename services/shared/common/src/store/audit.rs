//! The audit trail's rows and the SQL both backends share. Hashing stays in
//! [`crate::audit`]; how the chain's head is found under a lock is per
//! backend ([`super::sqlite::append_audit`], [`super::postgres::append_audit`]).
//!
//! Each service keeps its own `audit_log` table of this shape:
//!
//! ```sql
//! CREATE TABLE audit_log (
//!     seq BIGINT PRIMARY KEY,   -- INTEGER in SQLite
//!     at TEXT NOT NULL, actor TEXT NOT NULL, role TEXT NOT NULL,
//!     action TEXT NOT NULL, entity TEXT NOT NULL,
//!     details TEXT NOT NULL,    -- the exact text that was hashed, never jsonb
//!     prev_hash TEXT NOT NULL, hash TEXT NOT NULL
//! );
//! ```
//!
//! and on PostgreSQL the one-row head the appenders lock:
//!
//! ```sql
//! CREATE TABLE audit_head (id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, hash TEXT NOT NULL);
//! INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '<64 zeros>');
//! ```

use crate::audit::{AuditEntry, AuditRecord};

pub(super) const INSERT: &str =
    "INSERT INTO audit_log (seq, at, actor, role, action, entity, details, prev_hash, hash)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

pub(super) const FROM_SEQ: &str =
    "SELECT seq, at, actor, role, action, entity, details, prev_hash, hash
     FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2";

/// One stored audit record, as read back.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditRow {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub role: String,
    pub action: String,
    pub entity: String,
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

impl From<AuditRow> for AuditRecord {
    fn from(row: AuditRow) -> Self {
        AuditRecord {
            seq: row.seq,
            entry: AuditEntry {
                at: row.at,
                actor: row.actor,
                role: row.role,
                action: row.action,
                entity: row.entity,
                // Details that are not JSON fail verification instead of hiding.
                details: serde_json::from_str(&row.details)
                    .unwrap_or(serde_json::Value::String(row.details)),
            },
            prev_hash: row.prev_hash,
            hash: row.hash,
        }
    }
}

/// Binds a record to [`INSERT`] for either backend.
macro_rules! bind_record {
    ($query:expr, $record:expr) => {
        $query
            .bind($record.seq)
            .bind(&$record.entry.at)
            .bind(&$record.entry.actor)
            .bind(&$record.entry.role)
            .bind(&$record.entry.action)
            .bind(&$record.entry.entity)
            .bind($record.entry.details.to_string())
            .bind(&$record.prev_hash)
            .bind(&$record.hash)
    };
}
pub(super) use bind_record;
