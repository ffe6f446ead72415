//! The append-only, hash-chained audit trail shared by every service
//! (docs/architecture.md, "Records and audit"). Stores persist records; this module owns the hashing, so all
//! stores and the `audit verify` command agree on it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a service asks to be recorded. The store adds seq and the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// RFC 3339 UTC time.
    pub at: String,
    pub actor: String,
    pub role: String,
    pub action: String,
    pub entity: String,
    pub details: serde_json::Value,
}

/// A stored audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: i64,
    pub entry: AuditEntry,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRecord {
    /// Chains `entry` after the record with `prev_hash` at position `seq`.
    pub fn chain(seq: i64, entry: AuditEntry, prev_hash: &str) -> Self {
        let hash = record_hash(seq, &entry, prev_hash);
        Self {
            seq,
            entry,
            prev_hash: prev_hash.to_owned(),
            hash,
        }
    }
}

/// SHA-256 over a canonical JSON array of every field. serde_json sorts
/// object keys, so `details` hashes the same however it was built.
pub fn record_hash(seq: i64, entry: &AuditEntry, prev_hash: &str) -> String {
    let canonical = serde_json::json!([
        seq,
        entry.at,
        entry.actor,
        entry.role,
        entry.action,
        entry.entity,
        entry.details,
        prev_hash
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// The first record at which the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at seq {seq}: {reason}")]
pub struct ChainBreak {
    pub seq: i64,
    pub reason: String,
}

/// Recomputes a chain, in order, from its first record. Returns how many
/// records verified.
pub fn verify_chain<'a>(
    records: impl IntoIterator<Item = &'a AuditRecord>,
) -> Result<u64, ChainBreak> {
    let mut expected_prev = GENESIS_HASH.to_owned();
    let mut count = 0;
    for (index, record) in records.into_iter().enumerate() {
        let expected_seq = index as i64 + 1;
        let broken = |reason: String| ChainBreak {
            seq: record.seq,
            reason,
        };
        if record.seq != expected_seq {
            return Err(broken(format!(
                "expected seq {expected_seq}; a record is missing or out of order"
            )));
        }
        if record.prev_hash != expected_prev {
            return Err(broken(
                "prev_hash does not match the previous record's hash".into(),
            ));
        }
        if record_hash(record.seq, &record.entry, &record.prev_hash) != record.hash {
            return Err(broken("hash does not match the record's contents".into()));
        }
        expected_prev = record.hash.clone();
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str) -> AuditEntry {
        AuditEntry {
            at: "2026-11-21T10:00:00Z".into(),
            actor: "alice".into(),
            role: "trial_admin".into(),
            action: action.into(),
            entity: "trial/RESPINE".into(),
            details: serde_json::json!({"b": 1, "a": [1, 2]}),
        }
    }

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut records: Vec<AuditRecord> = Vec::new();
        for seq in 1..=n {
            let prev = records
                .last()
                .map_or(GENESIS_HASH.to_owned(), |r| r.hash.clone());
            records.push(AuditRecord::chain(
                seq,
                entry(&format!("action-{seq}")),
                &prev,
            ));
        }
        records
    }

    #[test]
    fn golden_hash_is_stable() {
        // Pinned: changing the hashing would break every stored chain.
        assert_eq!(
            record_hash(1, &entry("trial.registered"), GENESIS_HASH),
            GOLDEN_HASH
        );
        let reordered = AuditEntry {
            details: serde_json::from_str(r#"{"a":[1,2],"b":1}"#).expect("json"),
            ..entry("trial.registered")
        };
        assert_eq!(record_hash(1, &reordered, GENESIS_HASH), GOLDEN_HASH);
    }

    const GOLDEN_HASH: &str = "4a9d346ecfe08868e8b507a1fc7c78cf8386ea639cbbbf70216cb0975f39bac2";

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(verify_chain(&chain(5)), Ok(5));
        assert_eq!(verify_chain(&[]), Ok(0));
    }

    #[test]
    fn tampering_names_the_first_broken_record() {
        let mut records = chain(5);
        records[2].entry.actor = "mallory".into();
        assert_eq!(verify_chain(&records).map_err(|b| b.seq), Err(3));

        let mut records = chain(5);
        records.remove(1);
        assert_eq!(verify_chain(&records).map_err(|b| b.seq), Err(3));

        let mut records = chain(5);
        let forged = AuditRecord::chain(4, entry("forged"), &records[2].hash);
        records[3] = forged;
        assert_eq!(verify_chain(&records).map_err(|b| b.seq), Err(5));
    }
}
