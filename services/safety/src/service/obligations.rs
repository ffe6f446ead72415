//! The overdue queue and submissions to regulators.

use equipoise_common::auth::{Caller, Role};
use equipoise_common::bounds::FieldChecks;
use equipoise_common::time::format_rfc3339;
use serde_json::json;

use super::access;
use super::classify::new_obligation;
use super::model::{Obligation, SubmissionInput};
use super::report::MAX_NAME_CHARS;
use super::view::obligation;
use super::{Result, SafetyService};
use crate::clocks::ObligationKind;
use crate::error::SafetyError;
use crate::store::Submission;

impl SafetyService {
    /// Obligations, open only unless `include_submitted`, ordered by due
    /// time. safety_officer only.
    pub async fn list_obligations(
        &self,
        caller: &Caller,
        trial_id: Option<&str>,
        include_submitted: bool,
    ) -> Result<Vec<Obligation>> {
        access::require_any(caller, &[Role::SafetyOfficer], "the obligations queue")?;
        if let Some(trial_id) = trial_id {
            FieldChecks::new()
                .id("trial_id", trial_id)
                .finish(SafetyError::from_violations)?;
            access::require_trial(caller, trial_id)?;
        }
        let now = self.now();
        let mut obligations = self
            .store
            .obligations(trial_id, include_submitted)
            .await?
            .iter()
            .filter(|o| caller.may_access_trial(&o.trial_id))
            .map(|o| obligation(o, now))
            .collect::<Result<Vec<_>>>()?;
        obligations.sort_by(|a, b| (a.due_at, &a.obligation_id).cmp(&(b.due_at, &b.obligation_id)));
        Ok(obligations)
    }

    /// Records a submission, closing its obligation once; a submitted
    /// 7-day initial report opens its follow-up obligation.
    pub async fn record_submission(
        &self,
        caller: &Caller,
        input: SubmissionInput,
    ) -> Result<Obligation> {
        access::require_any(caller, &[Role::SafetyOfficer], "recording a submission")?;
        let now = self.now();
        let mut check = FieldChecks::new();
        check
            .id("obligation_id", &input.obligation_id)
            .text("recipient", &input.recipient, true, MAX_NAME_CHARS)
            .text(
                "acknowledgement_id",
                &input.acknowledgement_id,
                false,
                MAX_NAME_CHARS,
            );
        match input.submitted_at {
            None => check.fail("submitted_at", "is required"),
            Some(at) if at > now => check.fail("submitted_at", "is in the future"),
            Some(_) => {}
        }
        check.finish(SafetyError::from_violations)?;
        let Some(submitted_at) = input.submitted_at else {
            return Err(SafetyError::invalid("submitted_at", "is required"));
        };
        let not_found =
            || SafetyError::NotFound(format!("obligation_id {} not found", input.obligation_id));
        let existing = self
            .store
            .obligation(&input.obligation_id)
            .await?
            .ok_or_else(not_found)?;
        if !caller.may_access_trial(&existing.trial_id) {
            return Err(not_found());
        }
        if existing.submitted_at.is_some() {
            return Err(SafetyError::FailedPrecondition(format!(
                "obligation {} was already submitted",
                input.obligation_id
            )));
        }
        let follow_up = if existing.kind == "initial_7_day" {
            let record = self
                .store
                .case_record(&existing.case_id)
                .await?
                .ok_or_else(not_found)?;
            let zone = (self.rules.sponsor_zone)(&record.case.sponsor_time_zone)
                .map_err(|e| SafetyError::Internal(format!("sponsor time zone: {e}")))?;
            let due = (self.rules.follow_up_obligation)(submitted_at, &zone);
            debug_assert_eq!(due.kind, ObligationKind::FollowUp8Day);
            Some(new_obligation(due)?)
        } else {
            None
        };
        let submission = Submission {
            obligation_id: input.obligation_id.clone(),
            submitted_at: format_rfc3339(submitted_at),
            recipient: input.recipient.trim().to_owned(),
            acknowledgement_id: Some(input.acknowledgement_id).filter(|a| !a.trim().is_empty()),
        };
        // Names no case: which cases have obligations is unblinded.
        let audit = self.audit(
            caller,
            "obligation.submitted",
            "obligation".into(),
            json!({}),
        );
        let row = self
            .store
            .record_submission(submission, follow_up, audit)
            .await?;
        obligation(&row, now)
    }

    /// Open obligations past their due time, for the operations metric.
    pub async fn overdue_obligations(&self) -> Result<u64> {
        let now = self.now();
        let open = self.store.obligations(None, false).await?;
        let mut overdue = 0;
        for row in &open {
            if obligation(row, now)?.overdue {
                overdue += 1;
            }
        }
        Ok(overdue)
    }
}
