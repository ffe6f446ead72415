//! Sealing of master seeds at rest (docs/architecture.md, "Allocation"): ChaCha20-Poly1305 under a
//! key-encryption key the database never holds, bound to the trial id so a
//! sealed seed cannot be moved to another trial.

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce};

use equipoise_common::crypto::hmac_sha256;
use equipoise_stream::MasterSeed;

use crate::store::ListEntry;

const NONCE_LENGTH: usize = 12;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the seal key must be 32 bytes")]
    KeyLength,
    #[error("no randomness from the operating system: {0}")]
    Randomness(String),
    #[error(
        "the sealed seed of trial {0} does not open with this key (wrong key, or altered data)"
    )]
    Unseal(String),
    #[error("a page token could not be sealed")]
    Cursor,
}

pub struct Sealer {
    cipher: ChaCha20Poly1305,
    /// Keys the digests of unblinded allocation details; derived from the
    /// seal key, so only its holders can recompute or test them.
    digest_key: [u8; 32],
}

impl Sealer {
    pub fn new(key: &[u8]) -> Result<Self, SealError> {
        let cipher = ChaCha20Poly1305::new_from_slice(key).map_err(|_| SealError::KeyLength)?;
        let digest_key = hmac_sha256(key, b"equipoise/unblinded-digest/v1");
        Ok(Self { cipher, digest_key })
    }

    /// What the chain keeps of an allocation's unblinded details (review
    /// C4): the arm, its stream position and how it was chosen stay in the
    /// allocation row; the chained record carries this keyed digest, so
    /// `audit verify` (with the seal key) still proves them, while a blinded
    /// reader of the chain cannot test guesses of the arm against it, as
    /// they could against a plain hash of so few possibilities.
    /// The definition hash shown to readers of the redacted design: the
    /// canonical hash of a design whose only unknowns are a few block sizes
    /// would let them try each guess offline; this keyed form cannot.
    pub fn blinded_definition_hash(&self, definition_sha256: &str) -> String {
        let message = format!("definition-hash/v1\n{definition_sha256}");
        hex::encode(hmac_sha256(&self.digest_key, message.as_bytes()))
    }

    pub fn unblinded_digest(&self, arm: &str, position: u64, decision_json: &str) -> String {
        let canonical = serde_json::json!({
            "arm": arm,
            "position": position,
            "decision": decision_json,
        });
        hex::encode(hmac_sha256(
            &self.digest_key,
            canonical.to_string().as_bytes(),
        ))
    }

    /// nonce ‖ ciphertext ‖ tag.
    /// Keyed digest of a trial's uploaded list as stored, chained at
    /// activation: a plain hash of a short list could be matched by a
    /// blinded reader trying every arrangement.
    pub fn list_digest(&self, trial_id: &str, entries: &[ListEntry]) -> String {
        // Sorted here, not by the database, whose text collation may differ.
        let mut entries: Vec<&ListEntry> = entries.iter().collect();
        entries.sort_by(|a, b| (&a.stratum, a.position).cmp(&(&b.stratum, b.position)));
        let canonical = serde_json::json!({ "trial": trial_id, "entries": entries });
        hex::encode(hmac_sha256(
            &self.digest_key,
            canonical.to_string().as_bytes(),
        ))
    }

    pub fn seal(&self, trial_id: &str, seed: &MasterSeed) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LENGTH];
        getrandom::fill(&mut nonce).map_err(|e| SealError::Randomness(e.to_string()))?;
        let aad = associated_data(trial_id);
        let payload = Payload {
            msg: &seed.0,
            aad: &aad,
        };
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(nonce), payload)
            .map_err(|_| SealError::Unseal(trial_id.to_owned()))?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    pub fn unseal(&self, trial_id: &str, sealed: &[u8]) -> Result<MasterSeed, SealError> {
        let unsealable = || SealError::Unseal(trial_id.to_owned());
        if sealed.len() <= NONCE_LENGTH {
            return Err(unsealable());
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LENGTH);
        let nonce = Nonce::try_from(nonce).map_err(|_| unsealable())?;
        let aad = associated_data(trial_id);
        let payload = Payload {
            msg: ciphertext,
            aad: &aad,
        };
        let plain = self
            .cipher
            .decrypt(&nonce, payload)
            .map_err(|_| unsealable())?;
        let bytes: [u8; 32] = plain.try_into().map_err(|_| unsealable())?;
        Ok(MasterSeed(bytes))
    }
}

/// The commitment to a trial's master seed recorded at activation: a hash
/// that reveals nothing of a 256-bit random seed, but that `audit verify`
/// recomputes from the unsealed seed, so a sealed seed replaced later (by
/// someone holding the seal key) is found.
pub fn seed_commitment(trial_id: &str, seed: &MasterSeed) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(format!("equipoise/seed-commitment/v1\n{trial_id}\n").as_bytes());
    hasher.update(seed.0);
    hex::encode(hasher.finalize())
}

fn associated_data(trial_id: &str) -> Vec<u8> {
    format!("equipoise/master-seed/{trial_id}").into_bytes()
}

impl Sealer {
    /// A listing cursor as a page token: encrypted, so a client learns
    /// nothing from it (the sequence counts every site's allocations), and
    /// authenticated over `binding` (who listed what), so it can be neither
    /// forged nor replayed by another caller or for another filter.
    pub fn seal_cursor(&self, binding: &str, cursor: i64) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LENGTH];
        getrandom::fill(&mut nonce).map_err(|e| SealError::Randomness(e.to_string()))?;
        let aad = cursor_associated_data(binding);
        let payload = Payload {
            msg: &cursor.to_be_bytes(),
            aad: &aad,
        };
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(nonce), payload)
            .map_err(|_| SealError::Cursor)?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    /// The cursor of a token this key sealed for `binding`; `None` for
    /// anything else.
    pub fn open_cursor(&self, binding: &str, sealed: &[u8]) -> Option<i64> {
        if sealed.len() <= NONCE_LENGTH {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LENGTH);
        let nonce = Nonce::try_from(nonce).ok()?;
        let aad = cursor_associated_data(binding);
        let payload = Payload {
            msg: ciphertext,
            aad: &aad,
        };
        let plain = self.cipher.decrypt(&nonce, payload).ok()?;
        Some(i64::from_be_bytes(plain.try_into().ok()?))
    }
}

fn cursor_associated_data(binding: &str) -> Vec<u8> {
    format!("equipoise/page-token/{binding}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unblinded_digests_need_the_seal_key() {
        let sealer = Sealer::new(&[7u8; 32]).expect("key");
        let digest = sealer.unblinded_digest("MSC", 3, "{\"probabilities\":[0.5,0.5]}");
        assert_eq!(
            digest,
            sealer.unblinded_digest("MSC", 3, "{\"probabilities\":[0.5,0.5]}")
        );
        assert_ne!(
            digest,
            sealer.unblinded_digest("SHAM", 3, "{\"probabilities\":[0.5,0.5]}")
        );
        let other = Sealer::new(&[8u8; 32]).expect("key");
        assert_ne!(
            digest,
            other.unblinded_digest("MSC", 3, "{\"probabilities\":[0.5,0.5]}")
        );
        // Not the unkeyed hash a blinded reader could recompute.
        use sha2::{Digest, Sha256};
        let plain = serde_json::json!({ "arm": "MSC", "position": 3, "decision": "{\"probabilities\":[0.5,0.5]}" });
        assert_ne!(
            digest,
            hex::encode(Sha256::digest(plain.to_string().as_bytes()))
        );
    }

    #[test]
    fn cursors_open_only_for_their_binding_and_reveal_nothing() {
        let sealer = Sealer::new(&[7u8; 32]).expect("key");
        let token = sealer.seal_cursor("alice\nRESPINE", 4).expect("sealed");
        assert_eq!(sealer.open_cursor("alice\nRESPINE", &token), Some(4));
        assert_eq!(sealer.open_cursor("bob\nRESPINE", &token), None);
        // Fresh nonces: the same cursor never gives the same token twice.
        assert_ne!(
            token,
            sealer.seal_cursor("alice\nRESPINE", 4).expect("sealed")
        );
        assert!(!token.windows(8).any(|w| w == 4i64.to_be_bytes()));
        let mut altered = token.clone();
        if let Some(last) = altered.last_mut() {
            *last ^= 1;
        }
        assert_eq!(sealer.open_cursor("alice\nRESPINE", &altered), None);
        let other_key = Sealer::new(&[8u8; 32]).expect("key");
        assert_eq!(other_key.open_cursor("alice\nRESPINE", &token), None);
        assert_eq!(sealer.open_cursor("alice\nRESPINE", b"4"), None);
    }

    #[test]
    fn seals_and_unseals_only_for_the_same_trial_and_key() {
        let sealer = Sealer::new(&[9u8; 32]).expect("key");
        let seed = MasterSeed([5u8; 32]);
        let sealed = sealer.seal("RESPINE", &seed).expect("sealed");
        assert_eq!(sealer.unseal("RESPINE", &sealed), Ok(seed));
        assert!(sealer.unseal("OTHER", &sealed).is_err());
        let other_key = Sealer::new(&[8u8; 32]).expect("key");
        assert!(other_key.unseal("RESPINE", &sealed).is_err());
        let mut altered = sealed.clone();
        altered[20] ^= 1;
        assert!(sealer.unseal("RESPINE", &altered).is_err());
        assert!(sealer.unseal("RESPINE", &sealed[..5]).is_err());
        assert_eq!(Sealer::new(&[1u8; 16]).err(), Some(SealError::KeyLength));
    }
}
