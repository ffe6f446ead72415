//! Uploaded allocation lists.

use super::*;

fn list_entries(entries: &[(&str, &str)]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|(s, a)| ((*s).to_owned(), (*a).to_owned()))
        .collect()
}

async fn slot(store: &dyn Store, trial_id: &str, stratum: &str, position: u64) -> Option<String> {
    store
        .list_slot(trial_id, stratum, position)
        .await
        .expect("read a list slot")
}

/// Uploaded lists are numbered per stratum and replaced only in drafts.
pub(super) async fn uploaded_lists_are_numbered_per_stratum(store: &dyn Store) {
    const TRIAL: &str = "CONF-LISTS";
    draft_trial(store, TRIAL).await;
    assert_eq!(
        store.list_lengths(TRIAL).await,
        Ok(BTreeMap::new()),
        "no list yet"
    );
    assert_eq!(slot(store, TRIAL, "s1", 0).await, None);

    let before = audit_len(store).await;
    let entries = list_entries(&[("s1", "A"), ("s1", "B"), ("s2", "B")]);
    let upload = store.put_allocation_list(TRIAL, &entries, entry("list.uploaded", TRIAL));
    upload.await.expect("upload a list to a draft");
    assert_eq!(slot(store, TRIAL, "s1", 0).await.as_deref(), Some("A"));
    assert_eq!(slot(store, TRIAL, "s1", 1).await.as_deref(), Some("B"));
    assert_eq!(slot(store, TRIAL, "s1", 2).await, None);
    assert_eq!(slot(store, TRIAL, "s2", 0).await.as_deref(), Some("B"));
    let lengths = BTreeMap::from([("s1".to_owned(), 2), ("s2".to_owned(), 1)]);
    assert_eq!(store.list_lengths(TRIAL).await, Ok(lengths));
    let stored = |stratum: &str, position, arm: &str| ListEntry {
        stratum: stratum.to_owned(),
        position,
        arm: arm.to_owned(),
    };
    assert_eq!(
        store.allocation_list(TRIAL).await,
        Ok(vec![
            stored("s1", 0, "A"),
            stored("s1", 1, "B"),
            stored("s2", 0, "B")
        ]),
        "the whole list, by stratum then position"
    );
    assert_eq!(store.allocation_list("CONF-REGISTER").await, Ok(Vec::new()));
    assert_eq!(
        slot(store, "CONF-REGISTER", "s1", 0).await,
        None,
        "lists belong to one trial"
    );
    assert_appended(store, before, 1, "put_allocation_list").await;

    let replacement = list_entries(&[("s1", "B")]);
    let upload = store.put_allocation_list(TRIAL, &replacement, entry("list.uploaded", TRIAL));
    upload.await.expect("replace the list");
    assert_eq!(slot(store, TRIAL, "s1", 0).await.as_deref(), Some("B"));
    assert_eq!(
        slot(store, TRIAL, "s1", 1).await,
        None,
        "the old list is gone"
    );
    assert_eq!(
        slot(store, TRIAL, "s2", 0).await,
        None,
        "the old list is gone"
    );
    let lengths = BTreeMap::from([("s1".to_owned(), 1)]);
    assert_eq!(store.list_lengths(TRIAL).await, Ok(lengths.clone()));
    assert_appended(store, before, 2, "put_allocation_list again").await;

    // A list was checked against the draft it came with; a new draft starts without one.
    draft_trial(store, TRIAL).await;
    assert_eq!(
        store.list_lengths(TRIAL).await,
        Ok(BTreeMap::new()),
        "re-registering drops the list"
    );
    let upload = store.put_allocation_list(TRIAL, &replacement, entry("list.uploaded", TRIAL));
    upload.await.expect("upload to the new draft");

    activate_draft(store, TRIAL).await;
    let before = audit_len(store).await;
    let late = store.put_allocation_list(TRIAL, &entries, entry("list.uploaded", TRIAL));
    assert_conflict(late.await, "upload to an active trial");
    assert_eq!(
        store.list_lengths(TRIAL).await,
        Ok(lengths),
        "the active list is kept"
    );
    assert_eq!(slot(store, TRIAL, "s1", 0).await.as_deref(), Some("B"));
    let unknown = store.put_allocation_list(
        UNKNOWN_TRIAL,
        &entries,
        entry("list.uploaded", UNKNOWN_TRIAL),
    );
    assert_eq!(
        unknown.await,
        Err(StoreError::NotFound),
        "upload to an unknown trial"
    );
    assert_appended(store, before, 0, "refused uploads").await;
}
