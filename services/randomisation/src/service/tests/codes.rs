//! Step 7: the treatment code, obtained after the commit through the
//! [`CodeIssuer`] port (here in process), and completed on retry or by the
//! reconciler when the blinding service was down.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;

use super::*;
use crate::service::{CodeIssueError, CodeIssuer, CodeRequest, ReconcileReport};

/// What the fake blinding service does with the next calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Blinding {
    #[default]
    Up,
    Down,
    PoolEmpty,
    /// Only this trial's pool is empty.
    PoolEmptyFor(&'static str),
}

/// An idempotent `AssignCode`: one code per (trial, subject), which says
/// nothing about the arm. Records every request it answered, and counts
/// every call, answered or not.
#[derive(Default)]
pub(super) struct FakeCodeIssuer {
    mode: Mutex<Blinding>,
    requests: Mutex<Vec<CodeRequest>>,
    calls: AtomicUsize,
}

impl FakeCodeIssuer {
    pub(super) fn set(&self, mode: Blinding) {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = mode;
    }

    pub(super) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub(super) fn requests(&self) -> Vec<CodeRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn code_for(trial_id: &str, subject_id: &str) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(format!("{trial_id}/{subject_id}").as_bytes());
        format!("K-{}", hex::encode(&digest[..6]))
    }
}

#[async_trait]
impl CodeIssuer for FakeCodeIssuer {
    async fn assign_code(&self, request: CodeRequest) -> Result<String, CodeIssueError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mode = *self.mode.lock().unwrap_or_else(|p| p.into_inner());
        match mode {
            Blinding::Down => Err(CodeIssueError::Unavailable("connection refused".into())),
            Blinding::PoolEmpty => Err(CodeIssueError::Exhausted(format!(
                "the treatment-code pool of trial {} is empty",
                request.trial_id
            ))),
            Blinding::PoolEmptyFor(trial) if trial == request.trial_id => {
                Err(CodeIssueError::Exhausted(format!(
                    "the treatment-code pool of trial {trial} is empty"
                )))
            }
            Blinding::Up | Blinding::PoolEmptyFor(_) => {
                let code = Self::code_for(&request.trial_id, &request.subject_id);
                self.requests
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(request);
                Ok(code)
            }
        }
    }
}

async fn randomise_one(
    fixture: &Fixture,
    subject: &str,
) -> Result<RandomiseOutcome, RandomisationError> {
    fixture
        .randomise("FR-MTP", subject, "RESPINE", respine_subject(MODERATE_PAIN))
        .await
}

/// The audit records about treatment codes, which must never name the arm.
async fn code_records(fixture: &Fixture) -> Vec<equipoise_common::audit::AuditRecord> {
    let records: Vec<_> = fixture
        .audit_records()
        .await
        .into_iter()
        .filter(|r| r.entry.action == "allocation.code_recorded")
        .collect();
    for record in &records {
        let details = record.entry.details.to_string();
        assert!(!details.contains("arm"), "no arm in {details}");
        assert!(
            !details.contains("MSC") && !details.contains("SHAM"),
            "{details}"
        );
    }
    records
}

#[tokio::test]
async fn randomise_returns_the_code_and_records_it() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    let outcome = randomise_one(&fixture, "SUBJ-1").await.expect("allocated");
    let expected = FakeCodeIssuer::code_for("RESPINE", "SUBJ-1");
    assert_eq!(
        outcome.allocation.treatment_code.as_deref(),
        Some(expected.as_str())
    );

    let requests = fixture.codes.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].arm_id, outcome.allocation.arm,
        "blinding is told the arm"
    );
    assert_eq!(requests[0].site_id, "FR-MTP");
    assert_eq!(requests[0].randomised_at, outcome.allocation.randomised_at);

    let stored = fixture
        .service
        .get_allocation(&admin(), "RESPINE", "SUBJ-1")
        .await
        .expect("read");
    assert_eq!(stored.treatment_code.as_deref(), Some(expected.as_str()));
    assert_eq!(code_records(&fixture).await.len(), 1);

    // A replay neither asks again nor records again.
    let replay = randomise_one(&fixture, "SUBJ-1").await.expect("replayed");
    assert!(replay.replayed);
    assert_eq!(replay.allocation, outcome.allocation);
    assert_eq!(fixture.codes.requests().len(), 1);
    assert_eq!(code_records(&fixture).await.len(), 1);
    fixture.assert_audit_chain_verifies().await;
}

#[tokio::test]
async fn blinding_down_keeps_the_allocation_and_a_retry_gets_the_same_one_with_its_code() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    fixture.codes.set(Blinding::Down);

    let pending = randomise_one(&fixture, "SUBJ-1").await;
    let Err(RandomisationError::Unavailable {
        message,
        retry_after,
    }) = &pending
    else {
        panic!("expected UNAVAILABLE, got {pending:?}");
    };
    assert!(retry_after.is_some(), "the caller is told to retry");
    assert!(message.contains("is recorded"), "{message}");
    assert!(message.contains("pending"), "{message}");
    assert!(message.contains("retry the same request"), "{message}");

    let committed = fixture
        .service
        .get_allocation(&admin(), "RESPINE", "SUBJ-1")
        .await
        .expect("the allocation is committed");
    assert_eq!(committed.treatment_code, None, "its code is pending");
    assert!(
        message.contains(&committed.randomisation_number),
        "{message}"
    );

    // Still down: the retry is refused the same way and allocates nothing.
    assert!(matches!(
        randomise_one(&fixture, "SUBJ-1").await,
        Err(RandomisationError::Unavailable { .. })
    ));

    fixture.codes.set(Blinding::Up);
    let retry = randomise_one(&fixture, "SUBJ-1").await.expect("completed");
    assert!(retry.replayed, "the retry replays the allocation");
    assert_eq!(
        retry.allocation.randomisation_number,
        committed.randomisation_number
    );
    assert_eq!(retry.allocation.arm, committed.arm);
    assert_eq!(
        retry.allocation.treatment_code,
        Some(FakeCodeIssuer::code_for("RESPINE", "SUBJ-1"))
    );
    let counts = fixture.store.counts("RESPINE").await.expect("counts");
    assert_eq!(counts.total, 1, "never a second allocation");
    assert_eq!(code_records(&fixture).await.len(), 1);
    fixture.assert_audit_chain_verifies().await;
}

#[tokio::test]
async fn the_reconciler_completes_pending_codes() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    fixture.codes.set(Blinding::Down);
    for subject in ["SUBJ-1", "SUBJ-2"] {
        assert!(randomise_one(&fixture, subject).await.is_err());
    }
    // While blinding is down a round completes nothing and stops.
    let round = fixture.service.reconcile_codes(100).await.expect("a round");
    assert_eq!(
        round,
        ReconcileReport {
            completed: 0,
            pending: 2
        }
    );

    fixture.codes.set(Blinding::Up);
    let round = fixture.service.reconcile_codes(100).await.expect("a round");
    assert_eq!(
        round,
        ReconcileReport {
            completed: 2,
            pending: 0
        }
    );
    for subject in ["SUBJ-1", "SUBJ-2"] {
        let allocation = fixture
            .service
            .get_allocation(&admin(), "RESPINE", subject)
            .await
            .expect("read");
        assert_eq!(
            allocation.treatment_code,
            Some(FakeCodeIssuer::code_for("RESPINE", subject))
        );
    }
    let records = code_records(&fixture).await;
    assert_eq!(records.len(), 2);
    assert!(
        records
            .iter()
            .all(|r| r.entry.actor == "service:randomisation")
    );

    // Nothing is left; the retry that comes later just replays.
    let round = fixture.service.reconcile_codes(100).await.expect("a round");
    assert_eq!(round, ReconcileReport::default());
    let retry = randomise_one(&fixture, "SUBJ-1").await.expect("replayed");
    assert!(retry.replayed);
    assert_eq!(code_records(&fixture).await.len(), 2);
    fixture.assert_audit_chain_verifies().await;
}

#[tokio::test]
async fn a_round_with_blinding_down_counts_the_whole_backlog_but_calls_blinding_once() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    fixture.codes.set(Blinding::Down);
    for subject in ["SUBJ-1", "SUBJ-2", "SUBJ-3"] {
        assert!(randomise_one(&fixture, subject).await.is_err());
    }
    let calls_before = fixture.codes.calls();
    // One allocation per page: the backlog spans three pages.
    let round = fixture.service.reconcile_codes(1).await.expect("a round");
    assert_eq!(
        round,
        ReconcileReport {
            completed: 0,
            pending: 3
        }
    );
    assert_eq!(fixture.codes.calls(), calls_before + 1);
}

#[tokio::test]
async fn the_background_reconciler_stops_when_asked() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    let service = Arc::new(fixture.service);
    let reconciler =
        crate::service::CodeReconciler::spawn(service.clone(), Duration::from_millis(5));
    // Returns: the loop saw the stop signal.
    reconciler.stop().await;
}

#[tokio::test]
async fn an_empty_pool_is_resource_exhausted_naming_the_trial_and_the_allocation_stays() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    fixture.codes.set(Blinding::PoolEmpty);
    let result = randomise_one(&fixture, "SUBJ-1").await;
    let Err(RandomisationError::ResourceExhausted(message)) = &result else {
        panic!("expected RESOURCE_EXHAUSTED, got {result:?}");
    };
    assert!(message.contains("RESPINE"), "{message}");
    assert!(message.contains("is recorded"), "{message}");
    let allocation = fixture
        .service
        .get_allocation(&admin(), "RESPINE", "SUBJ-1")
        .await
        .expect("committed");
    assert_eq!(allocation.treatment_code, None);

    // The reconciler leaves the trial alone until the pool is replenished.
    let round = fixture.service.reconcile_codes(100).await.expect("a round");
    assert_eq!(
        round,
        ReconcileReport {
            completed: 0,
            pending: 1
        }
    );
    fixture.codes.set(Blinding::Up);
    let round = fixture.service.reconcile_codes(100).await.expect("a round");
    assert_eq!(round.completed, 1);
    fixture.assert_audit_chain_verifies().await;
}

#[tokio::test]
async fn a_trial_with_an_empty_pool_never_holds_up_another_trials_codes() {
    let fixture = Fixture::new().await;
    fixture.activate(RESPINE_YAML).await;
    fixture
        .activate(equipoise_trial::examples::FACET_CROSSOVER)
        .await;
    // Three RESPINE codes wait for a top-up; then one FACET-X code waits
    // for blinding to come back.
    fixture.codes.set(Blinding::PoolEmptyFor("RESPINE"));
    for subject in ["SUBJ-1", "SUBJ-2", "SUBJ-3"] {
        let result = randomise_one(&fixture, subject).await;
        assert!(
            matches!(result, Err(RandomisationError::ResourceExhausted(_))),
            "{result:?}"
        );
    }
    fixture.codes.set(Blinding::Down);
    let result = fixture
        .randomise("US-ROC", "FX-1", "FACET-X", facet_subject("female"))
        .await;
    assert!(
        matches!(result, Err(RandomisationError::Unavailable { .. })),
        "{result:?}"
    );

    // Pages of two: the stuck trial fills the first page, not the round.
    fixture.codes.set(Blinding::PoolEmptyFor("RESPINE"));
    let round = fixture.service.reconcile_codes(2).await.expect("a round");
    assert_eq!(
        round,
        ReconcileReport {
            completed: 1,
            pending: 3
        }
    );
    let completed = fixture
        .service
        .get_allocation(&admin(), "FACET-X", "FX-1")
        .await
        .expect("committed");
    assert_eq!(
        completed.treatment_code,
        Some(FakeCodeIssuer::code_for("FACET-X", "FX-1"))
    );
}
