//! One subject's blinding as a caller may see it: never an arm, except the
//! period arms an unblinded preparer recorded.

use equipoise_common::auth::{Caller, Role};
use equipoise_common::time::format_rfc3339;

use super::access::{preparer_scope, viewer_scope};
use super::reveals::period_start;
use super::{BlindingService, Result, identifier, invalid_if_any, require_trial_id};
use crate::store::{RevealKind, RevealRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlindingState {
    Blinded,
    UnblindedEmergency,
    /// The planned reveal of a period took place.
    UnblindedPlanned,
}

/// The state a subject's reveals leave it in, and whether it continues in
/// the trial. Derived from the append-only reveals, the same on every
/// backend: an emergency reveal outranks a planned one; safety reviews and
/// preparation reveals leave the subject blinded.
pub fn state_of(reveals: &[RevealRecord]) -> (BlindingState, bool) {
    let emergency = reveals.iter().any(|r| r.kind == RevealKind::Emergency);
    let planned = reveals.iter().any(|r| r.kind == RevealKind::PlannedPeriod);
    let continues = !reveals
        .iter()
        .any(|r| r.kind == RevealKind::Emergency && r.withdraws);
    let state = if emergency {
        BlindingState::UnblindedEmergency
    } else if planned {
        BlindingState::UnblindedPlanned
    } else {
        BlindingState::Blinded
    };
    (state, continues)
}

/// That a reveal took place, without what it revealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevealEvent {
    pub kind: RevealKind,
    pub at: String,
    pub actor: String,
    pub role: String,
    pub audit_seq: u64,
}

/// A period of the subject. Arms and the deviation flag only for unblinded
/// roles (preparer, medical monitor, emergency desk); `None`/false for
/// everyone else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodView {
    pub period_id: String,
    pub assigned_arm_id: Option<String>,
    pub given_arm_id: Option<String>,
    pub deviation: bool,
    pub recorded_at: Option<String>,
    pub planned_reveal_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectBlinding {
    pub trial_id: String,
    pub subject_id: String,
    pub site_id: String,
    /// `None` while the code is pending.
    pub code: Option<String>,
    pub state: BlindingState,
    pub continues_in_trial: bool,
    pub reveals: Vec<RevealEvent>,
    pub periods: Vec<PeriodView>,
}

impl BlindingService {
    /// One subject's code and blinding. Site roles for their own sites,
    /// sponsor roles for any, a preparer for its sites; an unknown subject
    /// and another site's subject get the same NotFound.
    pub async fn subject_blinding(
        &self,
        caller: &Caller,
        trial_id: &str,
        subject_id: &str,
    ) -> Result<SubjectBlinding> {
        let preparer = caller.has_role(&Role::UnblindedPreparer);
        let scope = if preparer {
            preparer_scope(caller)?
        } else {
            viewer_scope(caller, "GetSubjectBlinding")?
        };
        require_trial_id(caller, trial_id)?;
        let mut problems = Vec::new();
        identifier("subject_id", subject_id, &mut problems);
        invalid_if_any(problems)?;
        let allocation = self
            .allocation_in_scope(trial_id, subject_id, &scope)
            .await?;
        // Arms and deviations only for unblinded roles: a preparer (at its
        // sites, by its scope), the medical monitor and the emergency desk.
        // Never site roles, trial admins or statisticians.
        let unblinded =
            preparer || caller.has_any_role(&[Role::MedicalMonitor, Role::EmergencyDesk]);
        let reveals = self.store.reveals(trial_id, subject_id).await?;
        let (state, continues_in_trial) = state_of(&reveals);
        let records = self.store.period_records(trial_id, subject_id).await?;
        // The definition only for when planned reveals fall due; a view
        // works without it.
        let trial = self.definition(caller, trial_id).await.ok();
        let periods = records
            .into_iter()
            .map(|record| {
                let planned_reveal_at = trial.as_ref().and_then(|trial| {
                    let period = trial.periods.iter().find(|p| p.id == record.period_id)?;
                    if !period.planned_unblinding_at_start {
                        return None;
                    }
                    period_start(trial, &record.period_id, allocation.randomised_at?)
                        .map(format_rfc3339)
                });
                PeriodView {
                    period_id: record.period_id,
                    assigned_arm_id: unblinded.then_some(record.assigned_arm_id),
                    given_arm_id: unblinded.then_some(record.given_arm_id),
                    deviation: unblinded && record.deviation,
                    recorded_at: Some(record.recorded_at),
                    planned_reveal_at,
                }
            })
            .collect();
        Ok(SubjectBlinding {
            trial_id: trial_id.to_owned(),
            subject_id: subject_id.to_owned(),
            site_id: allocation.site_id,
            code: allocation.code,
            state,
            continues_in_trial,
            reveals: reveals
                .into_iter()
                .map(|r| RevealEvent {
                    kind: r.kind,
                    at: r.at,
                    actor: r.actor,
                    role: r.role,
                    audit_seq: r.audit_seq,
                })
                .collect(),
            periods,
        })
    }
}
