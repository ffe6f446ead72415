//! Who may do what: each operation asks here before it reads anything a
//! refusal could reveal.

use equipoise_common::auth::{Caller, Role};

use super::Result;
use crate::error::SafetyError;

/// Roles that report cases at any site.
const CENTRAL_REPORTERS: [Role; 2] = [Role::SafetyOfficer, Role::MedicalMonitor];
/// Roles that read individual cases at any site.
const CENTRAL_READERS: [Role; 5] = [
    Role::SafetyOfficer,
    Role::MedicalMonitor,
    Role::TrialAdmin,
    Role::Statistician,
    Role::EmergencyDesk,
];
/// Roles that read pooled summaries.
pub const POOLED_SUMMARY_ROLES: [Role; 4] = [
    Role::TrialAdmin,
    Role::MedicalMonitor,
    Role::Statistician,
    Role::SafetyOfficer,
];

/// Where a caller may act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    AllSites,
    OwnSites,
}

pub fn require_trial(caller: &Caller, trial_id: &str) -> Result<()> {
    if caller.may_access_trial(trial_id) {
        Ok(())
    } else {
        Err(SafetyError::PermissionDenied(format!(
            "the caller has no access to trial {trial_id}"
        )))
    }
}

/// Reporting an initial case or a follow-up.
pub fn reporter_scope(caller: &Caller) -> Result<Scope> {
    if caller.has_any_role(&CENTRAL_REPORTERS) {
        Ok(Scope::AllSites)
    } else if caller.is_site_user() {
        Ok(Scope::OwnSites)
    } else {
        Err(SafetyError::PermissionDenied(
            "reporting a case needs a site role, safety_officer or medical_monitor".into(),
        ))
    }
}

/// Reading individual cases. The DSMB sees aggregates only.
pub fn reader_scope(caller: &Caller) -> Result<Scope> {
    if caller.has_role(&Role::Dsmb) {
        return Err(SafetyError::PermissionDenied(
            "the DSMB sees safety summaries, not individual cases".into(),
        ));
    }
    if caller.has_any_role(&CENTRAL_READERS) {
        Ok(Scope::AllSites)
    } else if caller.is_site_user() {
        Ok(Scope::OwnSites)
    } else {
        Err(SafetyError::PermissionDenied(
            "reading cases needs a site or sponsor role".into(),
        ))
    }
}

pub fn covers(caller: &Caller, scope: &Scope, site_id: &str) -> bool {
    match scope {
        Scope::AllSites => true,
        Scope::OwnSites => caller.may_access_site(site_id),
    }
}

pub fn require_any(caller: &Caller, roles: &[Role], operation: &str) -> Result<()> {
    if caller.has_any_role(roles) {
        return Ok(());
    }
    let names: Vec<String> = roles.iter().map(ToString::to_string).collect();
    Err(SafetyError::PermissionDenied(format!(
        "{operation} needs one of the roles {}",
        names.join(", ")
    )))
}

/// Whether the caller sees the unblinded outcome of a classification.
pub fn sees_outcome(caller: &Caller) -> bool {
    caller.has_role(&Role::SafetyOfficer)
}
