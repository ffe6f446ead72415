//! Group commit: allocations and codes queued together are written in one
//! transaction, and each is still committed or refused on its own merits,
//! exactly as if it had been written alone.

use super::*;
use crate::store::CodeRecorded;

const TRIAL_A: &str = "CONF-BATCH-A";
const TRIAL_B: &str = "CONF-BATCH-B";
const DRAFT: &str = "CONF-BATCH-DRAFT";

fn code_entry(trial_id: &str) -> AuditEntry {
    entry("allocation.code_recorded", trial_id)
}

/// A batch of every kind of outcome. Run on a one-thread runtime, where
/// every call below queues before the store's writer runs, so they all
/// share one transaction: `batches()` (the writer's committed
/// transactions) moves by one.
pub(super) async fn writes_queued_together_commit_together_each_on_its_merits(
    store: &dyn Store,
    batches: &dyn Fn() -> usize,
) {
    active_trial(store, TRIAL_A).await;
    active_trial(store, TRIAL_B).await;
    draft_trial(store, DRAFT).await;
    let one_per_site = CapLimits {
        site: Some(1),
        ..CapLimits::default()
    };
    let fresh = |trial: &str, subject: &str, site: &str, stratum: &str, caps| {
        request(new_allocation(trial, subject, site, stratum), 0, caps)
    };
    let b_first = fresh(TRIAL_B, "B-1", "FR-MTP", "S1", CapLimits::default());
    let a_first = fresh(TRIAL_A, "A-1", "FR-MTP", "S1", one_per_site);
    let a_same_subject = fresh(TRIAL_A, "A-1", "FR-PAR", "S2", CapLimits::default());
    let a_over_site_cap = fresh(TRIAL_A, "A-2", "FR-MTP", "S3", one_per_site);
    let a_fenced = request(
        new_allocation(TRIAL_A, "A-3", "FR-LYO", "S4"),
        5,
        CapLimits::default(),
    );
    let a_out_of_range = request(
        new_allocation(TRIAL_A, "A-4", "FR-LYO", "S5"),
        u64::MAX,
        CapLimits::default(),
    );
    let a_second_site = fresh(TRIAL_A, "A-5", "FR-PAR", "S6", one_per_site);
    let in_draft = fresh(DRAFT, "D-1", "FR-MTP", "S1", CapLimits::default());

    let before = (audit_len(store).await, batches());
    let (b1, a1, same, over, fenced, out_of_range, second_site, draft, code, no_subject) = tokio::join!(
        store.commit_allocation(&b_first),
        store.commit_allocation(&a_first),
        store.commit_allocation(&a_same_subject),
        store.commit_allocation(&a_over_site_cap),
        store.commit_allocation(&a_fenced),
        store.commit_allocation(&a_out_of_range),
        store.commit_allocation(&a_second_site),
        store.commit_allocation(&in_draft),
        // The allocation it codes is earlier in the same batch.
        store.record_code(TRIAL_A, "A-1", "K-1", code_entry(TRIAL_A)),
        store.record_code(TRIAL_A, "NOBODY", "K-2", code_entry(TRIAL_A)),
    );

    assert_eq!(b1.map(|r| r.randomisation_number), Ok("FR-MTP-0001".into()));
    assert_eq!(a1.map(|r| r.randomisation_number), Ok("FR-MTP-0001".into()));
    assert_eq!(same, Err(StoreError::SubjectExists));
    assert_eq!(over, Err(StoreError::CapReached(CapKind::Site)));
    assert_eq!(fenced, Err(StoreError::Fenced));
    assert!(
        matches!(out_of_range, Err(StoreError::Database(_))),
        "a write failing in the database fails alone: {out_of_range:?}"
    );
    assert_eq!(
        second_site.map(|r| r.randomisation_number),
        Ok("FR-PAR-0001".into())
    );
    assert!(matches!(draft, Err(StoreError::Conflict(_))), "{draft:?}");
    assert_eq!(code, Ok(CodeRecorded::Recorded));
    assert_eq!(no_subject, Err(StoreError::NotFound));

    // Three allocations and a code: four records, nothing of the refused.
    assert_appended(store, before.0, 4, "one batch").await;
    assert_eq!(batches() - before.1, 1, "one committed transaction");
    let a = store.counts(TRIAL_A).await.expect("counts");
    assert_eq!(
        (a.total, store.counts(TRIAL_B).await.map(|c| c.total)),
        (2, Ok(1))
    );
    for stratum in ["S2", "S3", "S4", "S5"] {
        assert_eq!(
            store.stream_version(TRIAL_A, stratum).await,
            Ok(0),
            "{stratum}"
        );
    }
    let coded = store.allocation(TRIAL_A, "A-1").await.expect("read");
    assert_eq!(coded.and_then(|r| r.treatment_code), Some("K-1".into()));
    // Written trial by trial: A's records before B's, whatever the arrival.
    let entities: Vec<String> = audit_all(store)
        .await
        .into_iter()
        .skip(before.0)
        .map(|record| record.entry.entity)
        .collect();
    let expected = [TRIAL_A, TRIAL_A, TRIAL_A, TRIAL_B].map(|t| format!("trial/{t}"));
    assert_eq!(entities, expected);
}
