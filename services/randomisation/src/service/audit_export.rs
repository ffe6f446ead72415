//! The audit trail for blinded readers (review C4): a trial administrator
//! or a QA auditor reads every record, in order. New allocation records
//! chain only a digest of the arm, the position and the decision; records
//! written before that carry them in clear and are masked here, and marked.

use equipoise_common::audit::AuditRecord;
use equipoise_common::auth::{Caller, TrialScope};

use super::RandomisationService;
use super::access::{Operation, authorise};
use crate::error::RandomisationError;

/// Records read per page.
pub const EXPORT_PAGE: u32 = 500;

/// Keys that would unblind a reader (older allocation records), or let
/// them test guesses of a concealed design (the canonical definition hash).
const UNBLINDED_KEYS: [&str; 4] = ["arm", "decision", "position", "definition_sha256"];

/// A record as a blinded reader may see it.
#[derive(Debug, Clone, PartialEq)]
pub struct BlindedRecord {
    pub record: AuditRecord,
    /// Fields were replaced: the hash no longer matches the shown details.
    pub masked: bool,
}

/// `record` with any arm, position or decision replaced by `"masked"`.
pub fn blinded(mut record: AuditRecord) -> BlindedRecord {
    let mut masked = false;
    if let Some(details) = record.entry.details.as_object_mut() {
        for key in UNBLINDED_KEYS {
            if let Some(value) = details.get_mut(key) {
                *value = serde_json::Value::String("masked".into());
                masked = true;
            }
        }
    }
    BlindedRecord { record, masked }
}

impl RandomisationService {
    /// Records after `after_seq`, at most `limit`, blinded. The trail spans
    /// every trial, so it needs a token for every trial.
    pub async fn export_audit_trail(
        &self,
        caller: &Caller,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<BlindedRecord>, RandomisationError> {
        authorise(caller, Operation::ExportAuditTrail, None)?;
        if caller.trials != TrialScope::All {
            return Err(RandomisationError::PermissionDenied(
                "the audit trail spans every trial: it needs a token for all trials (\"*\")".into(),
            ));
        }
        if after_seq < 0 {
            return Err(RandomisationError::invalid(
                "after_seq",
                "must be 0 or more",
            ));
        }
        let records = self
            .store
            .audit_records(after_seq.saturating_add(1), limit)
            .await?;
        Ok(records.into_iter().map(blinded).collect())
    }
}

#[cfg(test)]
mod tests {
    use equipoise_common::audit::{AuditEntry, GENESIS_HASH};

    use super::*;

    #[test]
    fn records_from_before_the_digest_are_masked_and_say_so() {
        let entry = AuditEntry {
            at: "2026-11-01T09:00:00Z".into(),
            actor: "edc".into(),
            role: "site_investigator".into(),
            action: "allocation.created".into(),
            entity: "allocation/RESPINE/MTP-001".into(),
            details: serde_json::json!({
                "site_id": "FR-MTP",
                "arm": "MSC",
                "position": 3,
                "decision": { "probabilities": [1.0, 0.0] },
            }),
        };
        let shown = blinded(AuditRecord::chain(1, entry, GENESIS_HASH));
        assert!(shown.masked);
        let details = shown.record.entry.details.to_string();
        for secret in ["MSC", "probabilities", "3,"] {
            assert!(!details.contains(secret), "{secret} in {details}");
        }
        assert!(details.contains("FR-MTP"));
    }
}
