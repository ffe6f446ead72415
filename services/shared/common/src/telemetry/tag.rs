//! Keyed tags for subject ids in logs and spans. A plain hash of a short,
//! structured id such as `RESP-001` is reversed by trying every id; a keyed
//! one cannot be without the key. Every service derives the same key from
//! the shared service secret, so one subject has one tag across services.

use std::sync::OnceLock;

static KEY: OnceLock<[u8; 32]> = OnceLock::new();

/// Labels the derivation, so the tag key is no other key's twin.
const PURPOSE: &[u8] = b"equipoise subject log tag v1";

/// Derives the tag key from `secret`; the first call wins. Until it is
/// called, tags use a random key of this process.
pub fn set_subject_tag_key(secret: &[u8]) {
    let _ = KEY.set(keyed(secret, PURPOSE));
}

/// The tag of `subject_id`: 16 hex digits of an HMAC-SHA256.
pub fn subject_tag(subject_id: &str) -> String {
    let key = KEY.get_or_init(random_key);
    hex::encode(&keyed(key, subject_id.as_bytes())[..8])
}

fn keyed(key: &[u8], message: &[u8]) -> [u8; 32] {
    crate::crypto::hmac_sha256(key, message)
}

fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    // Without the OS's randomness the process has bigger problems; a fixed
    // key still keeps ids out of logs, only less strongly.
    let _ = getrandom::fill(&mut key);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_keyed_stable_and_never_the_id() {
        set_subject_tag_key(b"a shared service secret");
        let tag = subject_tag("RESP-001");
        assert_eq!(tag, subject_tag("RESP-001"));
        assert_ne!(tag, subject_tag("RESP-002"));
        assert_eq!(tag.len(), 16);
        assert!(!tag.contains("RESP"));
        // Not the unkeyed SHA-256 of the id, which anyone could recompute.
        use sha2::{Digest, Sha256};
        let unkeyed = hex::encode(&Sha256::digest(b"RESP-001")[..8]);
        assert_ne!(tag, unkeyed);
    }

    #[test]
    fn different_secrets_give_different_tags() {
        let a = keyed(&keyed(b"secret one", PURPOSE), b"RESP-001");
        let b = keyed(&keyed(b"secret two", PURPOSE), b"RESP-001");
        assert_ne!(a, b);
    }
}
