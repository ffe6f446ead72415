//! Who may do what: each operation asks here, before it reads anything a
//! refusal could reveal.

use std::collections::BTreeSet;

use equipoise_common::auth::{Caller, Role};

use super::Result;
use crate::error::BlindingError;

/// Where a caller may act for a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteScope {
    All,
    Own(BTreeSet<String>),
}

impl SiteScope {
    pub fn covers(&self, site_id: &str) -> bool {
        match self {
            SiteScope::All => true,
            SiteScope::Own(sites) => sites.contains(site_id),
        }
    }
}

pub fn require_trial(caller: &Caller, trial_id: &str) -> Result<()> {
    if caller.may_access_trial(trial_id) {
        Ok(())
    } else {
        Err(BlindingError::PermissionDenied(format!(
            "the caller has no access to trial {trial_id}"
        )))
    }
}

/// Only the named service, whatever roles a user token carries.
pub fn require_service(caller: &Caller, service: &str, operation: &str) -> Result<()> {
    if caller.has_role(&Role::Service(service.to_owned())) {
        Ok(())
    } else {
        Err(BlindingError::PermissionDenied(format!(
            "{operation} is for service:{service} only"
        )))
    }
}

pub fn require_any(caller: &Caller, roles: &[Role], operation: &str) -> Result<()> {
    if caller.has_any_role(roles) {
        return Ok(());
    }
    let names: Vec<String> = roles.iter().map(ToString::to_string).collect();
    Err(BlindingError::PermissionDenied(format!(
        "{operation} needs one of the roles {}",
        names.join(", ")
    )))
}

/// The roles named in a trial definition; unknown names are skipped (the
/// definition's validation refuses them).
pub fn roles_named(names: &[String]) -> Vec<Role> {
    names.iter().filter_map(|n| n.parse().ok()).collect()
}

/// The sites a caller holding one of `allowed` may act at: every site if
/// one of its qualifying roles is not a site role, else its own; `None`
/// when it holds none of them.
pub fn scope_for(caller: &Caller, allowed: &[Role]) -> Option<SiteScope> {
    let qualifying: Vec<&Role> = allowed.iter().filter(|r| caller.has_role(r)).collect();
    if qualifying.is_empty() {
        None
    } else if qualifying.iter().any(|r| !r.is_site_role()) {
        Some(SiteScope::All)
    } else {
        Some(SiteScope::Own(caller.sites.clone()))
    }
}

/// The `sites` entry that makes a preparer a central pharmacy.
pub const ALL_SITES: &str = "*";

/// An unblinded preparer works for the sites its token names, or for every
/// site when they include `"*"` (a central pharmacy). A token naming none
/// is refused: a missing claim must not widen access to every site.
pub fn preparer_scope(caller: &Caller) -> Result<SiteScope> {
    require_any(caller, &[Role::UnblindedPreparer], "preparation")?;
    if caller.sites.contains(ALL_SITES) {
        Ok(SiteScope::All)
    } else if caller.sites.is_empty() {
        Err(BlindingError::PermissionDenied(
            "an unblinded preparer token must name its sites, or \"*\" for a central pharmacy"
                .into(),
        ))
    } else {
        Ok(SiteScope::Own(caller.sites.clone()))
    }
}

/// Every role a definition may name in `unblinding.emergency_roles` (the
/// trial crate refuses others): anyone else is refused before the request
/// is read, so a refusal says nothing about the trial.
pub const EMERGENCY_CANDIDATES: [Role; 3] = [
    Role::SiteInvestigator,
    Role::EmergencyDesk,
    Role::MedicalMonitor,
];

/// Every role a definition may name in a period's
/// `planned_unblinding_roles`, as [`EMERGENCY_CANDIDATES`].
pub const PLANNED_REVEAL_CANDIDATES: [Role; 4] = [
    Role::SiteInvestigator,
    Role::SiteCoordinator,
    Role::EmergencyDesk,
    Role::MedicalMonitor,
];

/// Sponsor roles that see every site's subjects and notifications.
pub const SPONSOR_ROLES: [Role; 5] = [
    Role::TrialAdmin,
    Role::MedicalMonitor,
    Role::EmergencyDesk,
    Role::SafetyOfficer,
    Role::Statistician,
];

/// Who may read a subject's blinding or the notifications: sponsor roles
/// everywhere, site roles at their own sites. Others are refused.
pub fn viewer_scope(caller: &Caller, operation: &str) -> Result<SiteScope> {
    if caller.has_any_role(&SPONSOR_ROLES) {
        return Ok(SiteScope::All);
    }
    if caller.is_site_user() {
        return Ok(SiteScope::Own(caller.sites.clone()));
    }
    Err(BlindingError::PermissionDenied(format!(
        "{operation} is for sponsor and site roles"
    )))
}
