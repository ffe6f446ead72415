//! The storage conformance suite: the behaviours every [`Store`] must have.
//!
//! Checks go through the trait only, never SQL, so the PostgreSQL store can
//! run the same [`run_all`]. Each check registers its own trial, so they can
//! share one store; for the same reason audit assertions compare the number
//! of records before and after a call rather than absolute numbers.

use std::collections::BTreeMap;

use equipoise_common::audit::{AuditEntry, AuditRecord, verify_chain};
use equipoise_common::time::now_rfc3339;
use serde_json::json;

use super::randomisation_number;
use super::{
    AllocationQuery, AllocationRecord, CapKind, CapLimits, CommitRequest, Counts, NewAllocation,
    Store, StoreError, StoreResult, TrialRecord, TrialState,
};

const SEED: &[u8] = &[7; 32];
const ALGORITHM_VERSION: u32 = 1;
const UNKNOWN_TRIAL: &str = "CONF-NO-SUCH-TRIAL";

/// Runs every check against one store, in an order where none depends on
/// another. The audit chain is verified last so it covers every check.
pub(crate) async fn run_all(store: &dyn Store) {
    check_register_draft(store).await;
    check_activate(store).await;
    check_amend(store).await;
    check_close(store).await;
    check_commit_allocation(store).await;
    check_commit_fencing(store).await;
    check_commit_refusals(store).await;
    check_numbers_per_site(store).await;
    check_total_cap(store).await;
    check_site_cap(store).await;
    check_stratum_cap(store).await;
    check_counts(store).await;
    check_list_allocations(store).await;
    check_list_allocations_filters(store).await;
    check_stream_allocations(store).await;
    check_correct_stratum(store).await;
    check_mark_in_error(store).await;
    check_allocation_lists(store).await;
    check_list_limit_zero(store).await;
    check_concurrent_commits_fence(store).await;
    check_audit_trail(store).await;
}

// ---------------------------------------------------------------- helpers

/// A 64-hex digest; the store never checks it against the text.
fn sha(digit: char) -> String {
    digit.to_string().repeat(64)
}

fn draft_record(trial_id: &str, version: u32, sha256: &str) -> TrialRecord {
    TrialRecord {
        trial_id: trial_id.into(),
        version,
        state: TrialState::Draft,
        // The store does not parse the definition.
        definition_yaml: format!("id: {trial_id}\nversion: {version}\n"),
        definition_sha256: sha256.into(),
        algorithm_version: None,
        sealed_seed: None,
        registered_at: now_rfc3339(),
        activated_at: None,
        closed_at: None,
    }
}

fn entry(action: &str, trial_id: &str) -> AuditEntry {
    AuditEntry {
        at: now_rfc3339(),
        actor: "conformance".into(),
        role: "trial_admin".into(),
        action: action.into(),
        entity: format!("trial/{trial_id}"),
        details: json!({}),
    }
}

/// The stream is the stratum, as for stratified block randomisation.
fn new_allocation(trial_id: &str, subject_id: &str, site_id: &str, stratum: &str) -> NewAllocation {
    NewAllocation {
        trial_id: trial_id.into(),
        subject_id: subject_id.into(),
        site_id: site_id.into(),
        stratum: stratum.into(),
        stream_key: stratum.into(),
        arm: "A".into(),
        request_sha256: sha('c'),
        covariates_json: r#"{"age":"<65"}"#.into(),
        decision_json: r#"{"method":"block"}"#.into(),
        trial_version: 1,
        randomised_at: now_rfc3339(),
    }
}

fn request(
    allocation: NewAllocation,
    expected_stream_version: u64,
    caps: CapLimits,
) -> CommitRequest {
    let audit = AuditEntry {
        details: json!({ "subject": allocation.subject_id }),
        ..entry("allocation.committed", &allocation.trial_id)
    };
    CommitRequest {
        allocation,
        expected_stream_version,
        caps,
        audit,
    }
}

fn query(trial_id: &str, after_sequence: i64, limit: u32) -> AllocationQuery {
    AllocationQuery {
        trial_id: trial_id.into(),
        sites: None,
        stratum: None,
        after_sequence,
        limit,
    }
}

fn subjects(records: &[AllocationRecord]) -> Vec<&str> {
    records.iter().map(|r| r.subject_id.as_str()).collect()
}

fn sites(ids: &[&str]) -> Option<Vec<String>> {
    Some(ids.iter().map(|s| (*s).to_owned()).collect())
}

fn assert_conflict<T: std::fmt::Debug>(result: StoreResult<T>, call: &str) {
    assert!(
        matches!(result, Err(StoreError::Conflict(_))),
        "{call}: expected Conflict, got {result:?}"
    );
}

async fn audit_all(store: &dyn Store) -> Vec<AuditRecord> {
    store
        .audit_records(1, u32::MAX)
        .await
        .expect("read the audit trail")
}

async fn audit_len(store: &dyn Store) -> usize {
    audit_all(store).await.len()
}

async fn assert_appended(store: &dyn Store, before: usize, appended: usize, call: &str) {
    let after = audit_len(store).await;
    assert_eq!(after, before + appended, "{call}: audit records appended");
}

async fn last_audit(store: &dyn Store) -> AuditRecord {
    audit_all(store).await.pop().expect("an audit record")
}

async fn stored_trial(store: &dyn Store, trial_id: &str) -> TrialRecord {
    store
        .trial(trial_id)
        .await
        .expect("read the trial")
        .expect("the trial exists")
}

async fn register(store: &dyn Store, record: &TrialRecord) -> StoreResult<()> {
    let audit = entry("trial.registered", &record.trial_id);
    store.register_draft(record, audit).await
}

async fn activate(
    store: &dyn Store,
    trial_id: &str,
    sha256: &str,
    at: &str,
) -> StoreResult<TrialRecord> {
    let audit = entry("trial.activated", trial_id);
    store
        .activate(trial_id, sha256, SEED, ALGORITHM_VERSION, at, audit)
        .await
}

async fn close(store: &dyn Store, trial_id: &str, at: &str) -> StoreResult<TrialRecord> {
    store
        .close(trial_id, at, entry("trial.closed", trial_id))
        .await
}

async fn draft_trial(store: &dyn Store, trial_id: &str) -> TrialRecord {
    let record = draft_record(trial_id, 1, &sha('1'));
    register(store, &record).await.expect("register a draft");
    record
}

/// Activates a draft registered by [`draft_trial`].
async fn activate_draft(store: &dyn Store, trial_id: &str) -> TrialRecord {
    activate(store, trial_id, &sha('1'), &now_rfc3339())
        .await
        .expect("activate the trial")
}

async fn active_trial(store: &dyn Store, trial_id: &str) -> TrialRecord {
    draft_trial(store, trial_id).await;
    activate_draft(store, trial_id).await
}

/// Amends to version `from + 1` with a fixed definition.
async fn amend_next(store: &dyn Store, trial_id: &str, from: u32) -> StoreResult<TrialRecord> {
    let yaml = format!("id: {trial_id}\nversion: {}\n", from + 1);
    let audit = AuditEntry {
        details: json!({ "reason": "protocol amendment" }),
        ..entry("trial.amended", trial_id)
    };
    store
        .amend(trial_id, from, &yaml, &sha('2'), from + 1, audit)
        .await
}

async fn close_trial(store: &dyn Store, trial_id: &str) {
    close(store, trial_id, &now_rfc3339())
        .await
        .expect("close the trial");
}

/// Commits at the stream's current version, as the service does under its lock.
async fn commit(
    store: &dyn Store,
    allocation: NewAllocation,
    caps: CapLimits,
) -> StoreResult<AllocationRecord> {
    let version = store
        .stream_version(&allocation.trial_id, &allocation.stream_key)
        .await
        .expect("read the stream version");
    store
        .commit_allocation(&request(allocation, version, caps))
        .await
}

async fn allocate(
    store: &dyn Store,
    trial_id: &str,
    subject_id: &str,
    site_id: &str,
    stratum: &str,
) -> AllocationRecord {
    commit(
        store,
        new_allocation(trial_id, subject_id, site_id, stratum),
        CapLimits::default(),
    )
    .await
    .unwrap_or_else(|error| panic!("commit {subject_id}: {error}"))
}

/// Attempts a commit that must be refused, checks that it wrote nothing and
/// returns the refusal.
async fn refused_commit(store: &dyn Store, request: &CommitRequest) -> StoreError {
    let new = &request.allocation;
    let stream = store
        .stream_version(&new.trial_id, &new.stream_key)
        .await
        .expect("stream version");
    let subject = store
        .allocation(&new.trial_id, &new.subject_id)
        .await
        .expect("allocation");
    let counts = store.counts(&new.trial_id).await.expect("counts");
    let audit = audit_len(store).await;

    let error = store
        .commit_allocation(request)
        .await
        .expect_err("the commit must be refused");

    let call = format!("refused commit of {} ({error:?})", new.subject_id);
    let stream_after = store
        .stream_version(&new.trial_id, &new.stream_key)
        .await
        .expect("stream version");
    assert_eq!(stream_after, stream, "{call}: stream version");
    let subject_after = store
        .allocation(&new.trial_id, &new.subject_id)
        .await
        .expect("allocation");
    assert_eq!(subject_after, subject, "{call}: subject's allocation");
    assert_eq!(
        store.counts(&new.trial_id).await.expect("counts"),
        counts,
        "{call}: counts"
    );
    assert_appended(store, audit, 0, &call).await;
    error
}

async fn mark_in_error(store: &dyn Store, trial_id: &str, subject_id: &str) -> AllocationRecord {
    store
        .mark_in_error(
            trial_id,
            subject_id,
            "randomised twice",
            entry("allocation.in_error", trial_id),
        )
        .await
        .expect("mark in error")
}

/// The committed record carries everything the request asked for.
fn assert_records_request(record: &AllocationRecord, new: &NewAllocation) {
    let committed = NewAllocation {
        trial_id: record.trial_id.clone(),
        subject_id: record.subject_id.clone(),
        site_id: record.site_id.clone(),
        stratum: record.stratum.clone(),
        stream_key: record.stream_key.clone(),
        arm: record.arm.clone(),
        request_sha256: record.request_sha256.clone(),
        covariates_json: record.covariates_json.clone(),
        decision_json: record.decision_json.clone(),
        trial_version: record.trial_version,
        randomised_at: record.randomised_at.clone(),
    };
    assert_eq!(&committed, new, "committed allocation");
    assert!(!record.in_error, "a new allocation is not in error");
    assert_eq!(record.error_reason, None);
    assert_eq!(record.corrected_stratum, None);
    assert_eq!(record.correction_reason, None);
}

// ------------------------------------------------------------ trial life

/// Drafts are inserted, then replaced while still drafts.
pub(crate) async fn check_register_draft(store: &dyn Store) {
    const TRIAL: &str = "CONF-REGISTER";
    assert_eq!(store.trial(UNKNOWN_TRIAL).await, Ok(None), "unknown trial");

    let first = draft_record(TRIAL, 1, &sha('1'));
    let before = audit_len(store).await;
    register(store, &first).await.expect("register a new draft");
    assert_appended(store, before, 1, "register_draft").await;
    assert_eq!(stored_trial(store, TRIAL).await, first);

    let replacement = TrialRecord {
        definition_yaml: format!("id: {TRIAL}\nversion: 2\narms: [A, B]\n"),
        ..draft_record(TRIAL, 2, &sha('2'))
    };
    let before = audit_len(store).await;
    register(store, &replacement)
        .await
        .expect("replace the draft");
    assert_appended(store, before, 1, "register_draft again").await;
    assert_eq!(
        stored_trial(store, TRIAL).await,
        replacement,
        "the draft is replaced"
    );
}

/// Activation needs the reviewed digest, seals the seed and happens once.
pub(crate) async fn check_activate(store: &dyn Store) {
    const TRIAL: &str = "CONF-ACTIVATE";
    let at = now_rfc3339();
    let unknown = activate(store, UNKNOWN_TRIAL, &sha('1'), &at).await;
    assert_eq!(
        unknown,
        Err(StoreError::NotFound),
        "activate an unknown trial"
    );

    let draft = draft_trial(store, TRIAL).await;
    let before = audit_len(store).await;
    assert_conflict(
        activate(store, TRIAL, &sha('9'), &at).await,
        "activate with the wrong digest",
    );
    assert_eq!(
        stored_trial(store, TRIAL).await,
        draft,
        "a refused activation changes nothing"
    );
    assert_appended(store, before, 0, "refused activation").await;

    let active = activate(store, TRIAL, &draft.definition_sha256, &at).await;
    let expected = TrialRecord {
        state: TrialState::Active,
        sealed_seed: Some(SEED.to_vec()),
        algorithm_version: Some(ALGORITHM_VERSION),
        activated_at: Some(at.clone()),
        ..draft.clone()
    };
    assert_eq!(active, Ok(expected.clone()), "the activated trial");
    assert_eq!(
        stored_trial(store, TRIAL).await,
        expected,
        "the stored trial"
    );
    assert_appended(store, before, 1, "activate").await;

    let before = audit_len(store).await;
    assert_conflict(
        activate(store, TRIAL, &draft.definition_sha256, &at).await,
        "activate twice",
    );
    let redraft = draft_record(TRIAL, 3, &sha('3'));
    assert_conflict(
        register(store, &redraft).await,
        "register_draft on an active trial",
    );
    assert_eq!(
        stored_trial(store, TRIAL).await,
        expected,
        "the design stays frozen"
    );
    assert_appended(store, before, 0, "refused changes to an active trial").await;
}

/// Amendments apply only to an active trial at the stated version.
pub(crate) async fn check_amend(store: &dyn Store) {
    const TRIAL: &str = "CONF-AMEND";
    draft_trial(store, TRIAL).await;
    let before = audit_len(store).await;
    assert_conflict(amend_next(store, TRIAL, 1).await, "amend a draft");
    assert_appended(store, before, 0, "refused amendment of a draft").await;

    let active = activate_draft(store, TRIAL).await;
    let before = audit_len(store).await;
    assert_conflict(
        amend_next(store, TRIAL, 2).await,
        "amend from the wrong version",
    );
    assert_eq!(
        stored_trial(store, TRIAL).await,
        active,
        "a refused amendment changes nothing"
    );
    assert_appended(store, before, 0, "refused amendment").await;

    let amended = amend_next(store, TRIAL, 1)
        .await
        .expect("amend from version 1");
    let expected = TrialRecord {
        version: 2,
        definition_yaml: format!("id: {TRIAL}\nversion: 2\n"),
        definition_sha256: sha('2'),
        ..active
    };
    assert_eq!(amended, expected, "the amended trial");
    assert_eq!(
        stored_trial(store, TRIAL).await,
        expected,
        "the stored trial"
    );
    assert_appended(store, before, 1, "amend").await;

    let before = audit_len(store).await;
    assert_conflict(
        amend_next(store, TRIAL, 1).await,
        "amend from a superseded version",
    );
    let unknown = amend_next(store, UNKNOWN_TRIAL, 1).await;
    assert_eq!(unknown, Err(StoreError::NotFound), "amend an unknown trial");
    assert_appended(store, before, 0, "refused amendments").await;
}

/// Closing is active → closed, once; a closed trial is frozen.
pub(crate) async fn check_close(store: &dyn Store) {
    const TRIAL: &str = "CONF-CLOSE";
    let at = now_rfc3339();
    draft_trial(store, TRIAL).await;
    let before = audit_len(store).await;
    assert_conflict(close(store, TRIAL, &at).await, "close a draft");
    assert_appended(store, before, 0, "refused close of a draft").await;

    let active = activate_draft(store, TRIAL).await;
    let before = audit_len(store).await;
    let closed = close(store, TRIAL, &at).await;
    let expected = TrialRecord {
        state: TrialState::Closed,
        closed_at: Some(at.clone()),
        ..active
    };
    assert_eq!(closed, Ok(expected.clone()), "the closed trial");
    assert_eq!(
        stored_trial(store, TRIAL).await,
        expected,
        "the stored trial"
    );
    assert_appended(store, before, 1, "close").await;

    let before = audit_len(store).await;
    assert_conflict(close(store, TRIAL, &at).await, "close twice");
    assert_conflict(amend_next(store, TRIAL, 1).await, "amend a closed trial");
    let redraft = draft_record(TRIAL, 1, &sha('1'));
    assert_conflict(
        register(store, &redraft).await,
        "register_draft on a closed trial",
    );
    let unknown = close(store, UNKNOWN_TRIAL, &at).await;
    assert_eq!(unknown, Err(StoreError::NotFound), "close an unknown trial");
    assert_eq!(
        stored_trial(store, TRIAL).await,
        expected,
        "a closed trial stays closed"
    );
    assert_appended(store, before, 0, "refused changes to a closed trial").await;
}

// ------------------------------------------------------------ allocation

/// A commit takes the stream's next position and the site's next number.
pub(crate) async fn check_commit_allocation(store: &dyn Store) {
    const TRIAL: &str = "CONF-COMMIT";
    active_trial(store, TRIAL).await;
    assert_eq!(
        store.stream_version(TRIAL, "S1").await,
        Ok(0),
        "a new stream"
    );

    let new = new_allocation(TRIAL, "CONF-C-001", "FR-MTP", "S1");
    let before = audit_len(store).await;
    let first = store
        .commit_allocation(&request(new.clone(), 0, CapLimits::default()))
        .await
        .expect("commit at version 0");
    assert_records_request(&first, &new);
    assert_eq!(first.position, 0);
    assert_eq!(
        first.randomisation_number,
        randomisation_number("FR-MTP", 1)
    );
    assert_eq!(first.randomisation_number, "FR-MTP-0001");
    assert_eq!(
        store.stream_version(TRIAL, "S1").await,
        Ok(1),
        "the stream moved on"
    );
    assert_eq!(
        store.allocation(TRIAL, "CONF-C-001").await,
        Ok(Some(first.clone()))
    );
    assert_appended(store, before, 1, "commit_allocation").await;

    let new = new_allocation(TRIAL, "CONF-C-002", "FR-MTP", "S1");
    let second = store
        .commit_allocation(&request(new.clone(), 1, CapLimits::default()))
        .await
        .expect("commit at version 1");
    assert_records_request(&second, &new);
    assert_eq!(second.position, 1);
    assert_eq!(second.randomisation_number, "FR-MTP-0002");
    assert!(
        second.sequence > first.sequence,
        "sequence follows commit order"
    );
    assert_eq!(store.stream_version(TRIAL, "S1").await, Ok(2));
    assert_appended(store, before, 2, "two commits").await;
}

/// A commit computed at a stale stream version is fenced and writes nothing.
pub(crate) async fn check_commit_fencing(store: &dyn Store) {
    const TRIAL: &str = "CONF-FENCE";
    active_trial(store, TRIAL).await;
    allocate(store, TRIAL, "CONF-F-001", "FR-MTP", "S1").await;

    let stale = request(
        new_allocation(TRIAL, "CONF-F-002", "FR-MTP", "S1"),
        0,
        CapLimits::default(),
    );
    assert_eq!(
        refused_commit(store, &stale).await,
        StoreError::Fenced,
        "stale version"
    );
    assert_eq!(store.allocation(TRIAL, "CONF-F-002").await, Ok(None));

    let ahead = request(
        new_allocation(TRIAL, "CONF-F-002", "FR-MTP", "S1"),
        5,
        CapLimits::default(),
    );
    assert_eq!(
        refused_commit(store, &ahead).await,
        StoreError::Fenced,
        "version ahead"
    );

    // A stream nobody has committed to is at version 0, not 1.
    let fresh = request(
        new_allocation(TRIAL, "CONF-F-003", "FR-MTP", "S2"),
        1,
        CapLimits::default(),
    );
    assert_eq!(
        refused_commit(store, &fresh).await,
        StoreError::Fenced,
        "new stream"
    );
    assert_eq!(store.stream_version(TRIAL, "S2").await, Ok(0));

    // Recomputed at the current version, the same subject goes through.
    let retried = request(
        new_allocation(TRIAL, "CONF-F-002", "FR-MTP", "S1"),
        1,
        CapLimits::default(),
    );
    let record = store
        .commit_allocation(&retried)
        .await
        .expect("commit at the current version");
    assert_eq!(record.position, 1);
    assert_eq!(
        record.randomisation_number, "FR-MTP-0002",
        "refusals use no numbers"
    );
}

/// Repeated subjects, drafts, closed and unknown trials are refused.
pub(crate) async fn check_commit_refusals(store: &dyn Store) {
    const TRIAL: &str = "CONF-REFUSE";
    draft_trial(store, TRIAL).await;
    let early = request(
        new_allocation(TRIAL, "CONF-X-001", "FR-MTP", "S1"),
        0,
        CapLimits::default(),
    );
    let error = refused_commit(store, &early).await;
    assert!(
        matches!(error, StoreError::Conflict(_)),
        "commit on a draft: {error:?}"
    );

    activate_draft(store, TRIAL).await;
    let first = allocate(store, TRIAL, "CONF-X-001", "FR-MTP", "S1").await;
    let again = request(
        new_allocation(TRIAL, "CONF-X-001", "FR-MTP", "S1"),
        1,
        CapLimits::default(),
    );
    assert_eq!(
        refused_commit(store, &again).await,
        StoreError::SubjectExists,
        "same stream"
    );
    let elsewhere = request(
        new_allocation(TRIAL, "CONF-X-001", "FR-PAR", "S2"),
        0,
        CapLimits::default(),
    );
    assert_eq!(
        refused_commit(store, &elsewhere).await,
        StoreError::SubjectExists,
        "other stream"
    );
    assert_eq!(
        store.allocation(TRIAL, "CONF-X-001").await,
        Ok(Some(first)),
        "first allocation kept"
    );

    close_trial(store, TRIAL).await;
    let late = request(
        new_allocation(TRIAL, "CONF-X-002", "FR-MTP", "S1"),
        1,
        CapLimits::default(),
    );
    let error = refused_commit(store, &late).await;
    assert!(
        matches!(error, StoreError::Conflict(_)),
        "commit on a closed trial: {error:?}"
    );

    let before = audit_len(store).await;
    let unknown = request(
        new_allocation(UNKNOWN_TRIAL, "CONF-X-003", "FR-MTP", "S1"),
        0,
        CapLimits::default(),
    );
    assert_eq!(
        store.commit_allocation(&unknown).await,
        Err(StoreError::NotFound),
        "unknown trial"
    );
    assert_eq!(
        store.trial(UNKNOWN_TRIAL).await,
        Ok(None),
        "no trial is created"
    );
    assert_appended(store, before, 0, "commit on an unknown trial").await;
}

/// Randomisation numbers run per site, across strata and streams.
pub(crate) async fn check_numbers_per_site(store: &dyn Store) {
    const TRIAL: &str = "CONF-NUMBERS";
    active_trial(store, TRIAL).await;
    let plan = [
        ("CONF-N-001", "FR-MTP", "S1", "FR-MTP-0001"),
        ("CONF-N-002", "FR-MTP", "S2", "FR-MTP-0002"),
        ("CONF-N-003", "FR-PAR", "S1", "FR-PAR-0001"),
        ("CONF-N-004", "FR-MTP", "S1", "FR-MTP-0003"),
        ("CONF-N-005", "FR-PAR", "S2", "FR-PAR-0002"),
    ];
    for (subject, site, stratum, number) in plan {
        let record = allocate(store, TRIAL, subject, site, stratum).await;
        assert_eq!(record.randomisation_number, number, "number of {subject}");
    }
}

// ------------------------------------------------------------------ caps

/// Fills a cap of two, marks the first allocation in error (it still
/// counts), then checks the next commit is refused without a trace.
async fn check_cap(
    store: &dyn Store,
    trial_id: &str,
    caps: CapLimits,
    fill: [(&str, &str); 2],
    over: (&str, &str),
    kind: CapKind,
) {
    active_trial(store, trial_id).await;
    for (n, (site, stratum)) in fill.into_iter().enumerate() {
        let new = new_allocation(trial_id, &format!("{trial_id}-{n}"), site, stratum);
        commit(store, new, caps)
            .await
            .expect("commit under the cap");
    }
    mark_in_error(store, trial_id, &format!("{trial_id}-0")).await;

    let (site, stratum) = over;
    let new = new_allocation(trial_id, &format!("{trial_id}-over"), site, stratum);
    let version = store
        .stream_version(trial_id, stratum)
        .await
        .expect("stream version");
    let error = refused_commit(store, &request(new, version, caps)).await;
    assert_eq!(
        error,
        StoreError::CapReached(kind),
        "{trial_id}: commit over the cap"
    );
}

/// The trial's total cap.
pub(crate) async fn check_total_cap(store: &dyn Store) {
    let caps = CapLimits {
        total: Some(2),
        ..CapLimits::default()
    };
    let fill = [("FR-MTP", "S1"), ("FR-PAR", "S2")];
    check_cap(
        store,
        "CONF-CAP-TOTAL",
        caps,
        fill,
        ("FR-LYO", "S3"),
        CapKind::Total,
    )
    .await;
}

/// A site's cap, which leaves other sites free.
pub(crate) async fn check_site_cap(store: &dyn Store) {
    const TRIAL: &str = "CONF-CAP-SITE";
    let caps = CapLimits {
        site: Some(2),
        ..CapLimits::default()
    };
    let fill = [("FR-MTP", "S1"), ("FR-MTP", "S2")];
    check_cap(store, TRIAL, caps, fill, ("FR-MTP", "S3"), CapKind::Site).await;
    let other = commit(
        store,
        new_allocation(TRIAL, "CONF-CAP-SITE-par", "FR-PAR", "S1"),
        caps,
    )
    .await;
    assert!(other.is_ok(), "another site is under its cap: {other:?}");
}

/// A stratum's cap, which leaves other strata free.
pub(crate) async fn check_stratum_cap(store: &dyn Store) {
    const TRIAL: &str = "CONF-CAP-STRATUM";
    let caps = CapLimits {
        stratum: Some(2),
        ..CapLimits::default()
    };
    let fill = [("FR-MTP", "S1"), ("FR-PAR", "S1")];
    check_cap(store, TRIAL, caps, fill, ("FR-LYO", "S1"), CapKind::Stratum).await;
    let other = commit(
        store,
        new_allocation(TRIAL, "CONF-CAP-STRATUM-s2", "FR-LYO", "S2"),
        caps,
    )
    .await;
    assert!(other.is_ok(), "another stratum is under its cap: {other:?}");
}

// --------------------------------------------------------------- queries

/// Counts cover every allocation, in error or not.
pub(crate) async fn check_counts(store: &dyn Store) {
    const TRIAL: &str = "CONF-COUNTS";
    active_trial(store, TRIAL).await;
    assert_eq!(
        store.counts(TRIAL).await,
        Ok(Counts::default()),
        "no allocations yet"
    );

    allocate(store, TRIAL, "CONF-K-001", "FR-MTP", "S1").await;
    allocate(store, TRIAL, "CONF-K-002", "FR-MTP", "S2").await;
    allocate(store, TRIAL, "CONF-K-003", "FR-PAR", "S1").await;
    allocate(store, TRIAL, "CONF-K-004", "FR-LYO", "S1").await;
    mark_in_error(store, TRIAL, "CONF-K-003").await;

    let expected = Counts {
        total: 4,
        in_error: 1,
        by_site: BTreeMap::from([
            ("FR-LYO".into(), 1),
            ("FR-MTP".into(), 2),
            ("FR-PAR".into(), 1),
        ]),
        by_stratum: BTreeMap::from([("S1".into(), 3), ("S2".into(), 1)]),
    };
    assert_eq!(store.counts(TRIAL).await, Ok(expected));
}

/// Five allocations for the listing checks, plus one in another trial that
/// must never show.
async fn list_fixture(store: &dyn Store, trial_id: &str) {
    let other = format!("{trial_id}-OTHER");
    active_trial(store, trial_id).await;
    active_trial(store, &other).await;
    allocate(store, trial_id, "L1", "FR-MTP", "S1").await;
    allocate(store, &other, "L-OTHER", "FR-MTP", "S1").await;
    allocate(store, trial_id, "L2", "FR-PAR", "S1").await;
    allocate(store, trial_id, "L3", "FR-MTP", "S2").await;
    allocate(store, trial_id, "L4", "FR-LYO", "S2").await;
    allocate(store, trial_id, "L5", "FR-PAR", "S2").await;
}

async fn list(store: &dyn Store, query: &AllocationQuery) -> Vec<AllocationRecord> {
    store
        .list_allocations(query)
        .await
        .expect("list allocations")
}

/// Listing is in commit order and pages by sequence.
pub(crate) async fn check_list_allocations(store: &dyn Store) {
    const TRIAL: &str = "CONF-LIST";
    list_fixture(store, TRIAL).await;
    let all = list(store, &query(TRIAL, 0, 100)).await;
    assert_eq!(
        subjects(&all),
        ["L1", "L2", "L3", "L4", "L5"],
        "the trial's allocations in order"
    );
    assert!(
        all.windows(2).all(|w| w[0].sequence < w[1].sequence),
        "sequences increase"
    );

    let mut paged = Vec::new();
    let mut after = 0;
    for expected in [&["L1", "L2"][..], &["L3", "L4"], &["L5"], &[]] {
        let page = list(store, &query(TRIAL, after, 2)).await;
        assert_eq!(subjects(&page), expected, "page after sequence {after}");
        after = page.last().map_or(after, |r| r.sequence);
        paged.extend(page);
    }
    assert_eq!(paged, all, "pages add up to the whole listing");
    assert_eq!(
        subjects(&list(store, &query(TRIAL, 0, 3)).await),
        ["L1", "L2", "L3"]
    );
}

/// Site and stratum filters, alone, together and with a limit.
pub(crate) async fn check_list_allocations_filters(store: &dyn Store) {
    const TRIAL: &str = "CONF-LIST-FILTER";
    list_fixture(store, TRIAL).await;
    let filtered = |sites: Option<Vec<String>>, stratum: Option<&str>, after: i64, limit: u32| {
        AllocationQuery {
            sites,
            stratum: stratum.map(str::to_owned),
            ..query(TRIAL, after, limit)
        }
    };
    let cases = [
        (
            filtered(sites(&["FR-PAR"]), None, 0, 100),
            &["L2", "L5"][..],
        ),
        (
            filtered(sites(&["FR-PAR", "FR-LYO"]), None, 0, 100),
            &["L2", "L4", "L5"],
        ),
        (filtered(sites(&["FR-PAR", "FR-LYO"]), None, 0, 1), &["L2"]),
        (filtered(None, Some("S2"), 0, 100), &["L3", "L4", "L5"]),
        (filtered(sites(&["FR-MTP"]), Some("S2"), 0, 100), &["L3"]),
        (filtered(sites(&["FR-NONE"]), None, 0, 100), &[]),
        // No sites at all means nothing, not everything.
        (filtered(sites(&[]), None, 0, 100), &[]),
    ];
    for (query, expected) in cases {
        assert_eq!(subjects(&list(store, &query).await), expected, "{query:?}");
    }

    // The limit counts matching records, so a filtered page is full.
    let first = list(store, &filtered(sites(&["FR-PAR"]), None, 0, 1)).await;
    assert_eq!(subjects(&first), ["L2"]);
    let after = first.last().map_or(0, |r| r.sequence);
    assert_eq!(
        subjects(&list(store, &filtered(sites(&["FR-PAR"]), None, after, 1)).await),
        ["L5"]
    );
}

/// A limit of 0 returns nothing. Kept out of [`run_all`] until the
/// SQLite store passes it: it returns one record.
pub(crate) async fn check_list_limit_zero(store: &dyn Store) {
    const TRIAL: &str = "CONF-LIST-ZERO";
    active_trial(store, TRIAL).await;
    allocate(store, TRIAL, "CONF-Z-001", "FR-MTP", "S1").await;
    assert_eq!(
        store.list_allocations(&query(TRIAL, 0, 0)).await,
        Ok(vec![]),
        "limit 0"
    );
}

/// A stream's allocations come back in position order, and only its own.
pub(crate) async fn check_stream_allocations(store: &dyn Store) {
    const TRIAL: &str = "CONF-STREAM";
    active_trial(store, TRIAL).await;
    let a = allocate(store, TRIAL, "CONF-S-A", "FR-MTP", "S1").await;
    let b = allocate(store, TRIAL, "CONF-S-B", "FR-PAR", "S2").await;
    let c = allocate(store, TRIAL, "CONF-S-C", "FR-PAR", "S1").await;
    let d = allocate(store, TRIAL, "CONF-S-D", "FR-MTP", "S1").await;

    let s1 = store
        .stream_allocations(TRIAL, "S1")
        .await
        .expect("stream S1");
    assert_eq!(s1, [a, c, d], "stream S1");
    assert_eq!(s1.iter().map(|r| r.position).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(
        store.stream_allocations(TRIAL, "S2").await,
        Ok(vec![b]),
        "stream S2"
    );
    assert_eq!(
        store.stream_allocations(TRIAL, "S9").await,
        Ok(vec![]),
        "an unused stream"
    );
}

// ----------------------------------------------------------- corrections

/// A stratum correction is recorded beside the stratum randomised in.
pub(crate) async fn check_correct_stratum(store: &dyn Store) {
    const TRIAL: &str = "CONF-CORRECT";
    active_trial(store, TRIAL).await;
    let original = allocate(store, TRIAL, "CONF-R-001", "FR-MTP", "S1").await;

    let before = audit_len(store).await;
    let corrected = store
        .correct_stratum(
            TRIAL,
            "CONF-R-001",
            "S2",
            "age misrecorded",
            entry("allocation.corrected", TRIAL),
        )
        .await
        .expect("correct the stratum");
    let expected = AllocationRecord {
        corrected_stratum: Some("S2".into()),
        correction_reason: Some("age misrecorded".into()),
        ..original
    };
    assert_eq!(corrected, expected, "stratum and arm are kept");
    assert_eq!(
        store.allocation(TRIAL, "CONF-R-001").await,
        Ok(Some(expected))
    );
    assert_appended(store, before, 1, "correct_stratum").await;

    let before = audit_len(store).await;
    let unknown = store.correct_stratum(
        TRIAL,
        "CONF-R-404",
        "S2",
        "?",
        entry("allocation.corrected", TRIAL),
    );
    assert_eq!(
        unknown.await,
        Err(StoreError::NotFound),
        "correct an unknown subject"
    );
    assert_appended(store, before, 0, "refused correction").await;
}

/// A randomised-in-error mark is set once and keeps the arm.
pub(crate) async fn check_mark_in_error(store: &dyn Store) {
    const TRIAL: &str = "CONF-IN-ERROR";
    active_trial(store, TRIAL).await;
    let original = allocate(store, TRIAL, "CONF-E-001", "FR-MTP", "S1").await;

    let before = audit_len(store).await;
    let marked = mark_in_error(store, TRIAL, "CONF-E-001").await;
    let expected = AllocationRecord {
        in_error: true,
        error_reason: Some("randomised twice".into()),
        ..original
    };
    assert_eq!(marked, expected, "arm and assignment are kept");
    assert_eq!(
        store.allocation(TRIAL, "CONF-E-001").await,
        Ok(Some(expected.clone()))
    );
    assert_appended(store, before, 1, "mark_in_error").await;

    let before = audit_len(store).await;
    let again = store.mark_in_error(
        TRIAL,
        "CONF-E-001",
        "other reason",
        entry("allocation.in_error", TRIAL),
    );
    assert_conflict(again.await, "mark in error twice");
    assert_eq!(
        store.allocation(TRIAL, "CONF-E-001").await,
        Ok(Some(expected)),
        "first reason kept"
    );
    let unknown = store.mark_in_error(
        TRIAL,
        "CONF-E-404",
        "?",
        entry("allocation.in_error", TRIAL),
    );
    assert_eq!(
        unknown.await,
        Err(StoreError::NotFound),
        "mark an unknown subject"
    );
    assert_appended(store, before, 0, "refused marks").await;
}

// ---------------------------------------------------------- uploaded lists

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
pub(crate) async fn check_allocation_lists(store: &dyn Store) {
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

// ------------------------------------------------------ fencing under race

/// Commits racing on one stream at the same version: exactly one wins and
/// the others are fenced, as when two service replicas compute at once.
pub(crate) async fn check_concurrent_commits_fence(store: &dyn Store) {
    const TRIAL: &str = "CONF-RACE";
    active_trial(store, TRIAL).await;
    let racer = |n: u32| {
        request(
            new_allocation(TRIAL, &format!("CONF-RACE-{n}"), "FR-MTP", "S1"),
            0,
            CapLimits::default(),
        )
    };
    let (a, b, c, d) = (racer(1), racer(2), racer(3), racer(4));

    let before = audit_len(store).await;
    let results = tokio::join!(
        store.commit_allocation(&a),
        store.commit_allocation(&b),
        store.commit_allocation(&c),
        store.commit_allocation(&d),
    );
    let results = [results.0, results.1, results.2, results.3];
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "exactly one racing commit wins: {results:?}");
    let others_fenced = results
        .iter()
        .all(|r| matches!(r, Ok(_) | Err(StoreError::Fenced)));
    assert!(others_fenced, "the losers are fenced: {results:?}");
    assert_eq!(store.stream_version(TRIAL, "S1").await, Ok(1));
    assert_eq!(store.counts(TRIAL).await.map(|c| c.total), Ok(1));
    assert_appended(store, before, 1, "racing commits").await;
}

// ----------------------------------------------------------------- audit

/// The trail is one verifiable chain; commits add their position and
/// number to the details; `append_audit` records an entry as given.
pub(crate) async fn check_audit_trail(store: &dyn Store) {
    const TRIAL: &str = "CONF-AUDIT";
    active_trial(store, TRIAL).await;

    let before = audit_len(store).await;
    let refusal = AuditEntry {
        details: json!({ "reason": "site not permitted", "site": "FR-NCY" }),
        ..entry("allocation.refused", TRIAL)
    };
    store
        .append_audit(refusal.clone())
        .await
        .expect("append an audit entry");
    assert_appended(store, before, 1, "append_audit").await;
    assert_eq!(last_audit(store).await.entry, refusal, "recorded as given");

    allocate(store, TRIAL, "CONF-A-001", "FR-MTP", "S1").await;
    let committed = last_audit(store).await;
    assert_eq!(committed.entry.action, "allocation.committed");
    let expected =
        json!({ "subject": "CONF-A-001", "position": 0, "randomisation_number": "FR-MTP-0001" });
    assert_eq!(
        committed.entry.details, expected,
        "the store adds position and number"
    );

    let records = audit_all(store).await;
    let len = u64::try_from(records.len()).expect("record count");
    assert_eq!(verify_chain(&records), Ok(len), "the whole trail verifies");
    let tail = store
        .audit_records(committed.seq, 10)
        .await
        .expect("read from a seq");
    assert_eq!(tail, [committed], "reading from a seq starts there");
    assert_eq!(
        store.audit_records(1, 10_000).await.map(|r| r.len()),
        Ok(records.len().min(10_000))
    );
}

// ------------------------------------------------------------ SQLite runs

mod sqlite_conformance {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    #[tokio::test]
    async fn in_memory_store_conforms() {
        let store = SqliteStore::in_memory()
            .await
            .expect("open an in-memory store");
        run_all(&store).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn file_store_conforms_and_keeps_its_data() {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let path = dir.path().join("r.db");
        let store = SqliteStore::open(&path).await.expect("open a file store");
        run_all(&store).await;
        let trail = audit_all(&store).await;
        let allocation = store
            .allocation("CONF-COMMIT", "CONF-C-001")
            .await
            .expect("read");
        drop(store);

        // Reopening migrates nothing and loses nothing.
        let reopened = SqliteStore::open(&path)
            .await
            .expect("reopen the file store");
        assert_eq!(
            audit_all(&reopened).await,
            trail,
            "the audit trail survives"
        );
        assert!(allocation.is_some());
        assert_eq!(
            reopened.allocation("CONF-COMMIT", "CONF-C-001").await,
            Ok(allocation)
        );
        assert_eq!(
            stored_trial(&reopened, "CONF-CLOSE").await.state,
            TrialState::Closed
        );
    }
}

/// The same suite against a real PostgreSQL that the test starts and stops.
#[cfg(test)]
mod postgres_conformance {
    use super::*;
    use crate::store::postgres::PostgresStore;
    use equipoise_testkit::PostgresServer;

    #[tokio::test(flavor = "multi_thread")]
    async fn postgres_store_conforms_and_keeps_its_data() {
        let server = PostgresServer::start();
        let store = PostgresStore::connect(&server.url(), 8)
            .await
            .expect("connect to the test cluster");
        run_all(&store).await;
        let trail = audit_all(&store).await;
        drop(store);
        // Reconnecting migrates nothing and loses nothing.
        let reopened = PostgresStore::connect(&server.url(), 2)
            .await
            .expect("reconnect");
        assert_eq!(audit_all(&reopened).await, trail);
    }
}
