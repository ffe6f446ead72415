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

/// A chain's end as exported at one moment (review U1): kept outside the
/// database, it anchors the chain, so records removed from the tail or a
/// chain rewritten from some record on are found even by someone who could
/// also rewrite every hash after it. The signature is an HMAC under a key
/// the operators hold (derived from the service secret), so a head cannot
/// be made up afterwards to fit a rewritten chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHead {
    pub service: String,
    pub seq: i64,
    pub hash: String,
    /// When the head's record was written.
    pub at: String,
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error(
        "the exported head's signature does not verify with this deployment's key: it was altered, or comes from elsewhere"
    )]
    Signature,
    #[error("the exported head is of the {found} chain, not the {expected} chain")]
    Service { found: String, expected: String },
    #[error(
        "the chain ends at record {end}, before the exported head's record {head}: records were removed from its tail"
    )]
    Truncated { end: i64, head: i64 },
    #[error(
        "record {seq} no longer has the hash exported in the head: the chain was rewritten from there or before"
    )]
    Rewritten { seq: i64 },
}

/// Labels the head key, so it is no other key's twin.
const HEAD_KEY_PURPOSE: &[u8] = b"equipoise audit head v1";

/// Signs the end of `records` (the genesis for an empty chain).
pub fn sign_head(secret: &[u8], service: &str, records: &[AuditRecord]) -> SignedHead {
    let (seq, hash, at) = match records.last() {
        Some(last) => (last.seq, last.hash.clone(), last.entry.at.clone()),
        None => (0, GENESIS_HASH.to_owned(), String::new()),
    };
    let signature = head_signature(secret, service, seq, &hash, &at);
    SignedHead {
        service: service.to_owned(),
        seq,
        hash,
        at,
        signature,
    }
}

/// Checks that `head` is genuine and that `records` (a verified chain)
/// still extends it.
pub fn check_head(
    secret: &[u8],
    service: &str,
    head: &SignedHead,
    records: &[AuditRecord],
) -> Result<(), HeadError> {
    let expected = head_signature(secret, &head.service, head.seq, &head.hash, &head.at);
    if !constant_time_eq(expected.as_bytes(), head.signature.as_bytes()) {
        return Err(HeadError::Signature);
    }
    if head.service != service {
        return Err(HeadError::Service {
            found: head.service.clone(),
            expected: service.to_owned(),
        });
    }
    if head.seq == 0 {
        return Ok(());
    }
    let end = records.last().map_or(0, |r| r.seq);
    let Some(record) = records.iter().find(|r| r.seq == head.seq) else {
        return Err(HeadError::Truncated {
            end,
            head: head.seq,
        });
    };
    if record.hash != head.hash {
        return Err(HeadError::Rewritten { seq: head.seq });
    }
    Ok(())
}

fn head_signature(secret: &[u8], service: &str, seq: i64, hash: &str, at: &str) -> String {
    use crate::crypto::hmac_sha256;
    let key = hmac_sha256(secret, HEAD_KEY_PURPOSE);
    let message = format!("{service}\n{seq}\n{hash}\n{at}");
    hex::encode(hmac_sha256(&key, message.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

    fn chain_of(n: i64) -> Vec<AuditRecord> {
        let mut records: Vec<AuditRecord> = Vec::new();
        for seq in 1..=n {
            let prev = records
                .last()
                .map_or(GENESIS_HASH.to_owned(), |r| r.hash.clone());
            let entry = AuditEntry {
                at: format!("2026-12-01T00:00:{seq:02}Z"),
                actor: "ada".into(),
                role: "trial_admin".into(),
                action: "trial.activated".into(),
                entity: format!("trial/T{seq}"),
                details: serde_json::json!({ "n": seq }),
            };
            records.push(AuditRecord::chain(seq, entry, &prev));
        }
        records
    }

    const SECRET: &[u8] = b"a-service-secret-of-at-least-32-bytes";

    #[test]
    fn a_head_holds_while_the_chain_grows() {
        let head = sign_head(SECRET, "randomisation", &chain_of(3));
        assert_eq!(head.seq, 3);
        assert_eq!(
            check_head(SECRET, "randomisation", &head, &chain_of(5)),
            Ok(())
        );
        let empty = sign_head(SECRET, "randomisation", &[]);
        assert_eq!(
            check_head(SECRET, "randomisation", &empty, &chain_of(2)),
            Ok(())
        );
    }

    #[test]
    fn a_truncated_tail_or_a_rewritten_chain_is_found() {
        let head = sign_head(SECRET, "randomisation", &chain_of(5));
        assert_eq!(
            check_head(SECRET, "randomisation", &head, &chain_of(4)),
            Err(HeadError::Truncated { end: 4, head: 5 })
        );
        // Rewritten from record 2 on, every hash recomputed: it verifies as
        // a chain, but no longer extends the exported head.
        let mut rewritten = chain_of(1);
        let mut tail = chain_of(5).split_off(1);
        let mut prev = rewritten[0].hash.clone();
        for record in &mut tail {
            record.entry.details = serde_json::json!({ "n": "changed" });
            *record = AuditRecord::chain(record.seq, record.entry.clone(), &prev);
            prev = record.hash.clone();
        }
        rewritten.extend(tail);
        assert_eq!(verify_chain(&rewritten), Ok(5));
        assert_eq!(
            check_head(SECRET, "randomisation", &head, &rewritten),
            Err(HeadError::Rewritten { seq: 5 })
        );
    }

    #[test]
    fn a_forged_or_foreign_head_is_refused() {
        let records = chain_of(3);
        let mut forged = sign_head(SECRET, "randomisation", &records);
        forged.seq = 2;
        forged.hash = records[1].hash.clone();
        assert_eq!(
            check_head(SECRET, "randomisation", &forged, &records),
            Err(HeadError::Signature)
        );
        let other_key = sign_head(
            b"another-deployments-secret-of-32-bytes",
            "randomisation",
            &records,
        );
        assert_eq!(
            check_head(SECRET, "randomisation", &other_key, &records),
            Err(HeadError::Signature)
        );
        let blinding = sign_head(SECRET, "blinding", &records);
        assert!(matches!(
            check_head(SECRET, "randomisation", &blinding, &records),
            Err(HeadError::Service { .. })
        ));
    }
}
