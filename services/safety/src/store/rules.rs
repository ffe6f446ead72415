//! Decisions both backends share, kept out of the SQL.

use equipoise_common::audit::AuditEntry;
use sha2::{Digest, Sha256};

use super::{NewObligation, StoreError, StoreResult};

/// 32 random bytes from the operating system, as hex.
pub fn new_salt() -> StoreResult<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| StoreError::Unavailable(format!("no randomness for a salt: {e}")))?;
    Ok(hex::encode(bytes))
}

/// The sha256 of a sealed record's content and salt: what its audit record
/// chains, so a blinded export still verifies against the side record but
/// cannot be recomputed for each possible outcome without the salt.
pub fn sealed_sha256(content: &str, salt: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(content.as_bytes());
    hasher.update(b"\n");
    hasher.update(salt.as_bytes());
    hex::encode(hasher.finalize())
}

pub fn with_detail(audit: AuditEntry, key: &str, value: &str) -> AuditEntry {
    let mut audit = audit;
    if let Some(details) = audit.details.as_object_mut() {
        details.insert(key.into(), value.into());
    } else {
        audit.details = serde_json::json!({ key: value });
    }
    audit
}

/// The sealed content listing obligations created.
pub fn obligations_json(created: &[NewObligation]) -> serde_json::Value {
    serde_json::Value::Array(
        created
            .iter()
            .map(|o| {
                serde_json::json!({
                    "obligation_id": o.obligation_id,
                    "kind": o.kind,
                    "due_date": o.due_date,
                    "due_at": o.due_at,
                })
            })
            .collect(),
    )
}
