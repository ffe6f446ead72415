//! The role matrix (README "Who may call what"). Every operation is checked
//! here and nowhere else, before any data is read.

use equipoise_common::auth::{Caller, Role};

use crate::error::RandomisationError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    RegisterTrial,
    UploadAllocationList,
    ActivateTrial,
    AmendTrial,
    CloseEnrolment,
    GetTrial,
    Randomise,
    ReadAllocations,
    TrialStatus,
    CorrectStratum,
    MarkRandomisedInError,
    Simulate,
    ExportAuditTrail,
}

impl Operation {
    pub fn allowed_roles(self) -> &'static [Role] {
        use Role::*;
        match self {
            Operation::RegisterTrial => &[Statistician, TrialAdmin],
            Operation::UploadAllocationList => &[Statistician],
            Operation::ActivateTrial | Operation::AmendTrial | Operation::CloseEnrolment => {
                &[TrialAdmin]
            }
            Operation::GetTrial => &[
                SiteInvestigator,
                SiteCoordinator,
                UnblindedPreparer,
                EmergencyDesk,
                MedicalMonitor,
                SafetyOfficer,
                Dsmb,
                Statistician,
                TrialAdmin,
                Auditor,
            ],
            Operation::Randomise => &[SiteInvestigator, SiteCoordinator],
            Operation::ReadAllocations => &[
                SiteInvestigator,
                SiteCoordinator,
                EmergencyDesk,
                MedicalMonitor,
                Statistician,
                TrialAdmin,
                Auditor,
            ],
            Operation::TrialStatus => &[
                SiteInvestigator,
                SiteCoordinator,
                MedicalMonitor,
                Statistician,
                TrialAdmin,
                Auditor,
            ],
            Operation::CorrectStratum | Operation::MarkRandomisedInError => &[TrialAdmin],
            // A simulation of the live design shows how its imbalance runs,
            // which gives away block sizes: the design's author only.
            Operation::Simulate => &[Statistician],
            // The blinded sponsor and QA: the trail carries no arm.
            Operation::ExportAuditTrail => &[TrialAdmin, Auditor],
        }
    }

    /// The safety service reads a trial's definition (sites, arms' flags,
    /// safety settings, time zone) and checks that a reported subject was
    /// randomised at the reporting site. Neither read carries an arm.
    fn allows_safety_service(self) -> bool {
        matches!(self, Operation::GetTrial | Operation::ReadAllocations)
    }
}

/// The calling service, when the caller is `service:safety`.
fn is_safety_service(caller: &Caller) -> bool {
    caller.has_role(&Role::Service(SAFETY_SERVICE.to_owned()))
}

const SAFETY_SERVICE: &str = "safety";

/// Checks role and trial scope. Says nothing about whether the trial exists.
pub fn authorise(
    caller: &Caller,
    operation: Operation,
    trial_id: Option<&str>,
) -> Result<(), RandomisationError> {
    let as_service = operation.allows_safety_service() && is_safety_service(caller);
    if !caller.has_any_role(operation.allowed_roles()) && !as_service {
        return Err(RandomisationError::PermissionDenied(format!(
            "{operation:?} needs one of the roles: {}",
            role_names(operation.allowed_roles())
        )));
    }
    if let Some(trial_id) = trial_id
        && !caller.may_access_trial(trial_id)
    {
        return Err(RandomisationError::PermissionDenied(format!(
            "the token does not grant access to trial {trial_id}"
        )));
    }
    Ok(())
}

/// A site user acts for their own sites only.
pub fn authorise_site(caller: &Caller, site_id: &str) -> Result<(), RandomisationError> {
    if caller.may_access_site(site_id) {
        Ok(())
    } else {
        Err(RandomisationError::PermissionDenied(format!(
            "the token does not grant access to site {site_id}"
        )))
    }
}

/// Whether the caller sees every site, or only the sites in their token.
pub fn sees_all_sites(caller: &Caller) -> bool {
    !caller.is_site_user()
}

/// Only the statistician, who writes the design, sees its concealed parts
/// (the method's parameters, list state and list warnings); the trial
/// administrator and auditor are blinded (DESIGN §1). The safety service
/// reads the definition too (never shown to a person by it).
pub fn sees_design(caller: &Caller) -> bool {
    caller.has_role(&Role::Statistician) || is_safety_service(caller)
}

/// Blinded sponsor roles read the definition with its concealed parts
/// removed (see `concealed`); other roles get none.
pub fn sees_redacted_design(caller: &Caller) -> bool {
    caller.has_any_role(&[Role::TrialAdmin, Role::Auditor])
}

fn role_names(roles: &[Role]) -> String {
    roles
        .iter()
        .map(Role::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
