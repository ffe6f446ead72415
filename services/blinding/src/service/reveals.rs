//! Every reveal of an arm: emergency, safety, planned period and
//! preparation; and the treatment given per period.

use equipoise_common::auth::Caller;
use equipoise_common::time::format_rfc3339;
use equipoise_trial::{AfterEmergencyUnblinding, Arm, TrialDefinition};
use serde_json::json;

use super::access::{
    EMERGENCY_CANDIDATES, PLANNED_REVEAL_CANDIDATES, SiteScope, preparer_scope, require_any,
    require_service, roles_named, scope_for,
};
use super::view::{BlindingState, state_of};
use super::{
    BlindingService, LookupError, MAX_NOTE_CHARS, MAX_REASON_CHARS, MIN_REASON_CHARS, Result,
    allocation_unavailable, identifier, invalid_if_any, require_trial_id, required,
    unknown_subject,
};
use crate::error::BlindingError;
use crate::store::{NewPeriodRecord, NewReveal, PeriodRecord, RevealKind};

/// Why an emergency unblinding was needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonCategory {
    SeriousAdverseEvent,
    OverdoseOrMedicationError,
    ConcomitantTreatmentDecision,
    Pregnancy,
    OtherMedicalEmergency,
}

impl ReasonCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCategory::SeriousAdverseEvent => "serious_adverse_event",
            ReasonCategory::OverdoseOrMedicationError => "overdose_or_medication_error",
            ReasonCategory::ConcomitantTreatmentDecision => "concomitant_treatment_decision",
            ReasonCategory::Pregnancy => "pregnancy",
            ReasonCategory::OtherMedicalEmergency => "other_medical_emergency",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            ReasonCategory::SeriousAdverseEvent,
            ReasonCategory::OverdoseOrMedicationError,
            ReasonCategory::ConcomitantTreatmentDecision,
            ReasonCategory::Pregnancy,
            ReasonCategory::OtherMedicalEmergency,
        ]
        .into_iter()
        .find(|c| c.as_str() == text)
    }
}

/// The arm of one subject, for the requester only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reveal {
    pub trial_id: String,
    pub subject_id: String,
    pub site_id: String,
    pub arm_id: String,
    pub arm_label: String,
    pub revealed_at: String,
    pub audit_seq: u64,
    pub state: BlindingState,
    pub continues_in_trial: bool,
}

/// The arm for a potential SUSAR, for the safety service only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetyReveal {
    pub arm_id: String,
    pub arm_label: String,
    pub active: bool,
    pub audit_seq: u64,
}

/// One subject's arm for the DSMB's counts, for the safety service only.
#[derive(Clone, PartialEq, Eq)]
pub struct SubjectArm {
    pub subject_id: String,
    pub arm_id: String,
    pub arm_label: String,
}

/// Never prints the arm.
impl std::fmt::Debug for SubjectArm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubjectArm")
            .field("subject_id", &self.subject_id)
            .finish_non_exhaustive()
    }
}

/// The most subjects one `arms_for_dsmb` call may name.
pub const MAX_DSMB_SUBJECTS: usize = 10_000;

/// What to prepare for a code, for the unblinded preparer only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparationInstruction {
    pub trial_id: String,
    pub code: String,
    pub subject_id: String,
    pub site_id: String,
    pub arm_id: String,
    pub prepare: String,
    pub audit_seq: u64,
}

/// A subject's allocation as the blinding service can know it.
pub(super) struct Allocation {
    pub site_id: String,
    pub arm_id: String,
    pub code: Option<String>,
    pub randomised_at: Option<jiff::Timestamp>,
    /// Why randomisation could not be asked, when this came from the
    /// store alone.
    pub unavailable: Option<String>,
}

fn arm<'a>(trial: &'a TrialDefinition, arm_id: &str) -> Result<&'a Arm> {
    trial.arms.iter().find(|a| a.id == arm_id).ok_or_else(|| {
        BlindingError::Internal("an allocation's arm is not in the definition".into())
    })
}

/// When a period's planned reveal may take place: randomisation plus the
/// months of the periods before it, in calendar months, UTC.
pub(super) fn period_start(
    trial: &TrialDefinition,
    period_id: &str,
    randomised_at: jiff::Timestamp,
) -> Option<jiff::Timestamp> {
    let index = trial.periods.iter().position(|p| p.id == period_id)?;
    let months: u32 = trial.periods[..index].iter().map(|p| p.months).sum();
    let span = jiff::Span::new().try_months(i64::from(months)).ok()?;
    randomised_at
        .to_zoned(jiff::tz::TimeZone::UTC)
        .checked_add(span)
        .ok()
        .map(|z| z.timestamp())
}

/// The arm assigned for a period: the allocated arm, or the arm a
/// crossover period moves it to.
pub(super) fn assigned_for_period(
    trial: &TrialDefinition,
    period_id: &str,
    allocated: &str,
) -> Option<String> {
    let period = trial.periods.iter().find(|p| p.id == period_id)?;
    Some(match &period.crossover {
        Some(crossover) if crossover.from == allocated => crossover.to.clone(),
        _ => allocated.to_owned(),
    })
}

impl BlindingService {
    /// The subject's site, arm and code: from its code assignment, or from
    /// randomisation while its code is pending. `None`: no such subject.
    pub(super) async fn allocation(
        &self,
        trial_id: &str,
        subject_id: &str,
    ) -> Result<Option<Allocation>> {
        let assigned = self.store.assignment(trial_id, subject_id).await?;
        let looked_up = match self
            .randomisation
            .look_up_allocation(trial_id, subject_id)
            .await
        {
            Ok(found) => found,
            Err(LookupError::NotFound) => None,
            Err(LookupError::Unavailable(reason)) => {
                if let Some(assigned) = assigned {
                    return Ok(Some(Allocation {
                        site_id: assigned.site_id,
                        arm_id: assigned.arm_id,
                        code: Some(assigned.code),
                        randomised_at: None,
                        unavailable: Some(reason),
                    }));
                }
                return Err(allocation_unavailable(&reason));
            }
            Err(LookupError::Refused(reason)) => {
                return Err(BlindingError::Internal(format!(
                    "randomisation refused the blinding service: {reason}"
                )));
            }
        };
        Ok(match (assigned, looked_up) {
            (Some(assigned), looked_up) => Some(Allocation {
                site_id: assigned.site_id,
                arm_id: assigned.arm_id,
                code: Some(assigned.code),
                randomised_at: looked_up.and_then(|l| l.randomised_at),
                unavailable: None,
            }),
            (None, Some(looked_up)) => Some(Allocation {
                site_id: looked_up.site_id,
                arm_id: looked_up.arm_id,
                code: None,
                randomised_at: looked_up.randomised_at,
                unavailable: None,
            }),
            (None, None) => None,
        })
    }

    /// The subject's allocation if the scope covers its site; an unknown
    /// subject and another site's subject get the same answer at any
    /// moment: UNAVAILABLE while randomisation is down (as an unknown
    /// subject then gets, though the store knows this one), else NotFound.
    pub(super) async fn allocation_in_scope(
        &self,
        trial_id: &str,
        subject_id: &str,
        scope: &SiteScope,
    ) -> Result<Allocation> {
        match self.allocation(trial_id, subject_id).await? {
            Some(allocation) if scope.covers(&allocation.site_id) => Ok(allocation),
            Some(Allocation {
                unavailable: Some(reason),
                ..
            }) => Err(allocation_unavailable(&reason)),
            _ => Err(unknown_subject(trial_id, subject_id)),
        }
    }

    async fn reveal_to(
        &self,
        caller: &Caller,
        trial: &TrialDefinition,
        reveal: NewReveal,
        details: serde_json::Value,
    ) -> Result<Reveal> {
        let arm = arm(trial, &reveal.arm_id)?.clone();
        let action = format!("reveal.{}", reveal.kind.as_str());
        let entity = format!("trial/{}/subject/{}", reveal.trial_id, reveal.subject_id);
        let entry = self.entry(caller, &action, entity, details);
        let recorded = self.store.record_reveal(reveal, entry).await?;
        self.notified.notify_waiters();
        // The reveal and its notification are committed: a failed read now
        // must not leave the requester without the arm. The state then
        // comes from this reveal alone, which earlier reveals could only
        // have made later in rank (e.g. an earlier withdrawal).
        let (state, continues_in_trial) = match self
            .store
            .reveals(&recorded.trial_id, &recorded.subject_id)
            .await
        {
            Ok(all) => state_of(&all),
            Err(error) => {
                tracing::warn!(trial_id = %recorded.trial_id, %error, "could not read the reveals after recording one");
                state_of(std::slice::from_ref(&recorded))
            }
        };
        Ok(Reveal {
            trial_id: recorded.trial_id,
            subject_id: recorded.subject_id,
            site_id: recorded.site_id,
            arm_id: arm.id,
            arm_label: arm.label,
            revealed_at: recorded.at,
            audit_seq: recorded.audit_seq,
            state,
            continues_in_trial,
        })
    }

    /// A role no definition may let unblind is refused before the request
    /// is read, so the refusal says nothing about the trial or subject; the
    /// attempt is audited like a refusal by the trial's own roles, when it
    /// names a trial the caller may see.
    async fn refuse_unless_emergency_candidate(
        &self,
        caller: &Caller,
        trial_id: &str,
    ) -> Result<()> {
        let Err(refusal) = require_any(caller, &EMERGENCY_CANDIDATES, "emergency unblinding")
        else {
            return Ok(());
        };
        let mut problems = Vec::new();
        identifier("trial_id", trial_id, &mut problems);
        if !problems.is_empty() || !caller.may_access_trial(trial_id) {
            return Err(refusal);
        }
        Err(self
            .audit_refusal(caller, trial_id, "emergency", json!({}), refusal)
            .await)
    }

    /// Breaks the blind for exactly one subject, for the trial's
    /// `unblinding.emergency_roles`, after a recent re-authentication.
    pub async fn emergency_unblind(
        &self,
        caller: &Caller,
        trial_id: &str,
        subject_ids: &[String],
        reason_category: Option<ReasonCategory>,
        reason: &str,
    ) -> Result<Reveal> {
        self.refuse_unless_emergency_candidate(caller, trial_id)
            .await?;
        require_trial_id(caller, trial_id)?;
        let mut problems = Vec::new();
        if subject_ids.len() != 1 {
            problems.push(equipoise_trial::Problem {
                path: "subject_ids".into(),
                message: format!(
                    "an emergency unblinding covers exactly one subject, not {}",
                    subject_ids.len()
                ),
            });
        } else {
            identifier("subject_ids[0]", &subject_ids[0], &mut problems);
        }
        if reason_category.is_none() {
            problems.push(equipoise_trial::Problem {
                path: "reason_category".into(),
                message: "a known reason category is required".into(),
            });
        }
        let reason = reason.trim();
        if reason.is_empty() {
            required("reason", reason, &mut problems);
        } else if reason.chars().count() > MAX_REASON_CHARS {
            problems.push(equipoise_trial::Problem {
                path: "reason".into(),
                message: format!("is longer than {MAX_REASON_CHARS} characters"),
            });
        } else if reason.chars().count() < MIN_REASON_CHARS {
            problems.push(equipoise_trial::Problem {
                path: "reason".into(),
                message: format!(
                    "is shorter than {MIN_REASON_CHARS} characters: say what happened and why the arm is needed"
                ),
            });
        }
        invalid_if_any(problems)?;
        let (Some(subject_id), Some(category)) = (subject_ids.first(), reason_category) else {
            return Err(BlindingError::Internal("checked above".into()));
        };
        let trial = self.definition(caller, trial_id).await?;
        let details = json!({ "subject": subject_id, "reason_category": category.as_str() });
        let allowed = roles_named(&trial.unblinding.emergency_roles);
        let Some(scope) = scope_for(caller, &allowed) else {
            let refusal = BlindingError::PermissionDenied(format!(
                "emergency unblinding in trial {trial_id} needs one of the roles {}",
                trial.unblinding.emergency_roles.join(", ")
            ));
            return Err(self
                .audit_refusal(caller, trial_id, "emergency", details, refusal)
                .await);
        };
        if !self.recently_authenticated(caller, trial.unblinding.reauth_max_age_minutes) {
            let refusal = BlindingError::Unauthenticated(format!(
                "re-authentication is needed: an emergency unblinding needs a sign-in within the last {} minutes",
                trial.unblinding.reauth_max_age_minutes
            ));
            return Err(self
                .audit_refusal(caller, trial_id, "emergency", details, refusal)
                .await);
        }
        let allocation = match self.allocation_in_scope(trial_id, subject_id, &scope).await {
            Ok(allocation) => allocation,
            Err(refusal @ BlindingError::NotFound(_)) => {
                return Err(self
                    .audit_refusal(caller, trial_id, "emergency", details, refusal)
                    .await);
            }
            Err(other) => return Err(other),
        };
        let withdraws =
            trial.unblinding.after_emergency_unblinding == AfterEmergencyUnblinding::Withdraw;
        let reveal = NewReveal {
            kind: RevealKind::Emergency,
            trial_id: trial_id.to_owned(),
            subject_id: subject_id.clone(),
            site_id: allocation.site_id,
            arm_id: allocation.arm_id,
            reason_category: Some(category.as_str().to_owned()),
            reason: Some(reason.to_owned()),
            case_id: None,
            period_id: None,
            withdraws,
        };
        let details = json!({
            "kind": "emergency",
            "subject": subject_id,
            "site": reveal.site_id,
            "reason_category": category.as_str(),
            "withdraws": withdraws,
        });
        self.reveal_to(caller, &trial, reveal, details).await
    }

    fn recently_authenticated(&self, caller: &Caller, max_age_minutes: u32) -> bool {
        let Some(auth_time) = caller.auth_time else {
            return false;
        };
        let now = self.now().as_second();
        let age = now.saturating_sub(auth_time);
        age <= i64::from(max_age_minutes) * 60 && auth_time <= now + 60
    }

    /// The arm of one subject for a potential SUSAR; `service:safety` only.
    pub async fn safety_reveal(
        &self,
        caller: &Caller,
        trial_id: &str,
        subject_id: &str,
        case_id: &str,
    ) -> Result<SafetyReveal> {
        require_service(caller, "safety", "SafetyReveal")?;
        require_trial_id(caller, trial_id)?;
        let mut problems = Vec::new();
        identifier("subject_id", subject_id, &mut problems);
        identifier("case_id", case_id, &mut problems);
        invalid_if_any(problems)?;
        let trial = self.definition(caller, trial_id).await?;
        let allocation = self
            .allocation_in_scope(trial_id, subject_id, &SiteScope::All)
            .await?;
        let reveal = NewReveal {
            kind: RevealKind::SafetyReview,
            trial_id: trial_id.to_owned(),
            subject_id: subject_id.to_owned(),
            site_id: allocation.site_id,
            arm_id: allocation.arm_id,
            reason_category: None,
            reason: None,
            case_id: Some(case_id.to_owned()),
            period_id: None,
            withdraws: false,
        };
        let details = json!({ "kind": "safety", "subject": subject_id, "case_id": case_id });
        let shown = self.reveal_to(caller, &trial, reveal, details).await?;
        let active = arm(&trial, &shown.arm_id)?.active;
        Ok(SafetyReveal {
            arm_id: shown.arm_id,
            arm_label: shown.arm_label,
            active,
            audit_seq: shown.audit_seq,
        })
    }

    /// The arms of the subjects that have a code, for the DSMB's counts by
    /// arm; `service:safety` only. Subjects without a code are left out;
    /// a subject named twice is answered once, in the order first named.
    /// One audit record `reveal.dsmb` names the trial and the number of
    /// subjects whose arm was returned, never a subject or an arm; no
    /// reveal is recorded and no one is notified.
    pub async fn arms_for_dsmb(
        &self,
        caller: &Caller,
        trial_id: &str,
        subject_ids: &[String],
    ) -> Result<Vec<SubjectArm>> {
        require_service(caller, "safety", "GetArmsForDsmb")?;
        require_trial_id(caller, trial_id)?;
        let mut problems = Vec::new();
        if subject_ids.len() > MAX_DSMB_SUBJECTS {
            problems.push(equipoise_trial::Problem {
                path: "subject_ids".into(),
                message: format!("at most {MAX_DSMB_SUBJECTS} subjects per request"),
            });
            return Err(BlindingError::InvalidArgument(problems));
        }
        for (index, subject_id) in subject_ids.iter().enumerate() {
            identifier(&format!("subject_ids[{index}]"), subject_id, &mut problems);
        }
        invalid_if_any(problems)?;
        let trial = self.definition(caller, trial_id).await?;
        let mut seen = std::collections::HashSet::new();
        let mut arms = Vec::new();
        for subject_id in subject_ids {
            if !seen.insert(subject_id.as_str()) {
                continue;
            }
            if let Some(assigned) = self.store.assignment(trial_id, subject_id).await? {
                let arm = arm(&trial, &assigned.arm_id)?;
                arms.push(SubjectArm {
                    subject_id: assigned.subject_id,
                    arm_id: arm.id.clone(),
                    arm_label: arm.label.clone(),
                });
            }
        }
        let entry = self.entry(
            caller,
            "reveal.dsmb",
            format!("trial/{trial_id}"),
            json!({ "kind": "dsmb", "subjects": arms.len() }),
        );
        self.store.append_audit(entry).await?;
        Ok(arms)
    }

    /// The planned reveal at the start of a period that has one, once that
    /// time has come, for the period's `planned_unblinding_roles`. Each
    /// request is recorded as its own reveal (a second user taking the same
    /// planned reveal is audited too); the subject's state does not change
    /// again.
    pub async fn planned_period_reveal(
        &self,
        caller: &Caller,
        trial_id: &str,
        subject_id: &str,
        period_id: &str,
    ) -> Result<Reveal> {
        require_any(caller, &PLANNED_REVEAL_CANDIDATES, "a planned reveal")?;
        require_trial_id(caller, trial_id)?;
        let mut problems = Vec::new();
        identifier("subject_id", subject_id, &mut problems);
        identifier("period_id", period_id, &mut problems);
        invalid_if_any(problems)?;
        let trial = self.definition(caller, trial_id).await?;
        let Some(period) = trial.periods.iter().find(|p| p.id == period_id) else {
            return Err(BlindingError::invalid(
                "period_id",
                format!("trial {trial_id} has no period '{period_id}'"),
            ));
        };
        if !period.planned_unblinding_at_start {
            return Err(BlindingError::FailedPrecondition(format!(
                "period '{period_id}' of trial {trial_id} has no planned reveal"
            )));
        }
        let allowed = roles_named(&period.planned_unblinding_roles);
        let Some(scope) = scope_for(caller, &allowed) else {
            return Err(BlindingError::PermissionDenied(format!(
                "the planned reveal of period '{period_id}' needs one of the roles {}",
                period.planned_unblinding_roles.join(", ")
            )));
        };
        let allocation = self
            .allocation_in_scope(trial_id, subject_id, &scope)
            .await?;
        let Some(randomised_at) = allocation.randomised_at else {
            return Err(BlindingError::unavailable(
                "the time of randomisation cannot be read now; retry",
            ));
        };
        let Some(due) = period_start(&trial, period_id, randomised_at) else {
            return Err(BlindingError::Internal("period start out of range".into()));
        };
        if self.now() < due {
            return Err(BlindingError::FailedPrecondition(format!(
                "the planned reveal of period '{period_id}' for subject {subject_id} may take place from {}",
                format_rfc3339(due)
            )));
        }
        let reveal = NewReveal {
            kind: RevealKind::PlannedPeriod,
            trial_id: trial_id.to_owned(),
            subject_id: subject_id.to_owned(),
            site_id: allocation.site_id,
            arm_id: allocation.arm_id,
            reason_category: None,
            reason: None,
            case_id: None,
            period_id: Some(period_id.to_owned()),
            withdraws: false,
        };
        let details =
            json!({ "kind": "planned_period", "subject": subject_id, "period": period_id });
        self.reveal_to(caller, &trial, reveal, details).await
    }

    /// What to prepare for a code; `unblinded_preparer` only, for subjects
    /// at its sites (any site when its token names none). Audited as a
    /// reveal of kind preparation, with no notification.
    pub async fn preparation_instruction(
        &self,
        caller: &Caller,
        trial_id: &str,
        code: &str,
    ) -> Result<PreparationInstruction> {
        let scope = preparer_scope(caller)?;
        require_trial_id(caller, trial_id)?;
        let mut problems = Vec::new();
        identifier("code", code, &mut problems);
        invalid_if_any(problems)?;
        let details = json!({ "code": code });
        let unknown = || BlindingError::NotFound(format!("no code '{code}' in trial {trial_id}"));
        let entry = self.store.code(trial_id, code).await?;
        let subject_id = match entry.and_then(|e| e.subject_id) {
            Some(subject_id) => subject_id,
            None => {
                return Err(self
                    .audit_refusal(caller, trial_id, "preparation", details, unknown())
                    .await);
            }
        };
        let assignment = match self.store.assignment(trial_id, &subject_id).await? {
            Some(assignment) if scope.covers(&assignment.site_id) => assignment,
            _ => {
                return Err(self
                    .audit_refusal(caller, trial_id, "preparation", details, unknown())
                    .await);
            }
        };
        let trial = self.definition(caller, trial_id).await?;
        let reveal = NewReveal {
            kind: RevealKind::Preparation,
            trial_id: trial_id.to_owned(),
            subject_id: subject_id.clone(),
            site_id: assignment.site_id,
            arm_id: assignment.arm_id,
            reason_category: None,
            reason: None,
            case_id: None,
            period_id: None,
            withdraws: false,
        };
        let details = json!({ "kind": "preparation", "subject": subject_id, "code": code });
        let shown = self.reveal_to(caller, &trial, reveal, details).await?;
        Ok(PreparationInstruction {
            trial_id: shown.trial_id,
            code: code.to_owned(),
            subject_id: shown.subject_id,
            site_id: shown.site_id,
            arm_id: shown.arm_id,
            prepare: shown.arm_label,
            audit_seq: shown.audit_seq,
        })
    }

    /// Records the treatment given in one period; `unblinded_preparer`
    /// only, at its sites. A difference from the assigned arm is recorded
    /// as a deviation.
    pub async fn record_given_treatment(
        &self,
        caller: &Caller,
        trial_id: &str,
        subject_id: &str,
        period_id: &str,
        given_arm_id: &str,
        note: &str,
    ) -> Result<PeriodRecord> {
        let scope = preparer_scope(caller)?;
        require_trial_id(caller, trial_id)?;
        let mut problems = Vec::new();
        identifier("subject_id", subject_id, &mut problems);
        identifier("period_id", period_id, &mut problems);
        identifier("given_arm_id", given_arm_id, &mut problems);
        if note.chars().count() > MAX_NOTE_CHARS {
            problems.push(equipoise_trial::Problem {
                path: "note".into(),
                message: format!("is longer than {MAX_NOTE_CHARS} characters"),
            });
        }
        invalid_if_any(problems)?;
        let trial = self.definition(caller, trial_id).await?;
        let mut problems = Vec::new();
        if !trial.periods.iter().any(|p| p.id == period_id) {
            problems.push(equipoise_trial::Problem {
                path: "period_id".into(),
                message: format!("trial {trial_id} has no period '{period_id}'"),
            });
        }
        if trial.arm_index(given_arm_id).is_none() {
            problems.push(equipoise_trial::Problem {
                path: "given_arm_id".into(),
                message: format!("'{given_arm_id}' is not an arm of trial {trial_id}"),
            });
        }
        invalid_if_any(problems)?;
        let allocation = self
            .allocation_in_scope(trial_id, subject_id, &scope)
            .await?;
        let assigned = assigned_for_period(&trial, period_id, &allocation.arm_id)
            .ok_or_else(|| BlindingError::Internal("period checked above".into()))?;
        let record = NewPeriodRecord {
            trial_id: trial_id.to_owned(),
            subject_id: subject_id.to_owned(),
            period_id: period_id.to_owned(),
            assigned_arm_id: assigned,
            given_arm_id: given_arm_id.to_owned(),
            note: note.to_owned(),
        };
        let entry = self.entry(
            caller,
            "period.recorded",
            format!("trial/{trial_id}/subject/{subject_id}"),
            json!({ "subject": subject_id, "period": period_id }),
        );
        Ok(self.store.record_period(record, entry).await?)
    }
}
