use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The roles of docs/architecture.md, "Security".
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    SiteInvestigator,
    SiteCoordinator,
    UnblindedPreparer,
    EmergencyDesk,
    MedicalMonitor,
    SafetyOfficer,
    Dsmb,
    Statistician,
    TrialAdmin,
    /// Sponsor QA or an inspector: reads the blinded trail and what it
    /// refers to, writes nothing, never sees an arm or the design.
    Auditor,
    /// Another Equipoise service, e.g. `service:blinding`.
    Service(String),
}

impl Role {
    /// Every role a user token may carry, in the README's column order.
    pub const USER_ROLES: [Role; 10] = [
        Role::SiteInvestigator,
        Role::SiteCoordinator,
        Role::UnblindedPreparer,
        Role::EmergencyDesk,
        Role::MedicalMonitor,
        Role::SafetyOfficer,
        Role::Dsmb,
        Role::Statistician,
        Role::TrialAdmin,
        Role::Auditor,
    ];

    pub fn is_site_role(&self) -> bool {
        matches!(self, Role::SiteInvestigator | Role::SiteCoordinator)
    }

    /// Roles that may see arms in some circumstance.
    pub fn is_unblinded(&self) -> bool {
        matches!(
            self,
            Role::UnblindedPreparer
                | Role::EmergencyDesk
                | Role::MedicalMonitor
                | Role::SafetyOfficer
                | Role::Dsmb
        )
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let role = match text {
            "site_investigator" => Role::SiteInvestigator,
            "site_coordinator" => Role::SiteCoordinator,
            "unblinded_preparer" => Role::UnblindedPreparer,
            "emergency_desk" => Role::EmergencyDesk,
            "medical_monitor" => Role::MedicalMonitor,
            "safety_officer" => Role::SafetyOfficer,
            "dsmb" => Role::Dsmb,
            "statistician" => Role::Statistician,
            "trial_admin" => Role::TrialAdmin,
            "auditor" => Role::Auditor,
            other => match other.strip_prefix("service:") {
                Some(name) if is_service_name(name) => Role::Service(name.to_owned()),
                _ => return Err(format!("unknown role '{other}'")),
            },
        };
        Ok(role)
    }
}

fn is_service_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Role::SiteInvestigator => "site_investigator",
            Role::SiteCoordinator => "site_coordinator",
            Role::UnblindedPreparer => "unblinded_preparer",
            Role::EmergencyDesk => "emergency_desk",
            Role::MedicalMonitor => "medical_monitor",
            Role::SafetyOfficer => "safety_officer",
            Role::Dsmb => "dsmb",
            Role::Statistician => "statistician",
            Role::TrialAdmin => "trial_admin",
            Role::Auditor => "auditor",
            Role::Service(name) => return write!(f, "service:{name}"),
        };
        f.write_str(text)
    }
}

/// The JWT claims Equipoise reads. `exp`, `aud` and `iss` are checked by the
/// verifier before these are looked at.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub sites: Vec<String>,
    /// Trial ids, or `"*"` for every trial.
    #[serde(default)]
    pub trials: Vec<String>,
    /// When the user last authenticated (seconds since the epoch).
    pub auth_time: Option<i64>,
    pub exp: u64,
    pub iat: Option<u64>,
    /// One audience; a token may carry an array (RFC 7519), which the
    /// verifier has already checked names this server's audience.
    #[serde(deserialize_with = "one_audience")]
    pub aud: String,
    pub iss: String,
}

/// `"aud"` as a string, or the first of an array of them.
fn one_audience<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Audience {
        One(String),
        Many(Vec<String>),
    }
    match Audience::deserialize(deserializer)? {
        Audience::One(audience) => Ok(audience),
        Audience::Many(audiences) => audiences
            .into_iter()
            .next()
            .ok_or_else(|| serde::de::Error::custom("empty audience array")),
    }
}

/// Two roles that one person must never hold in one token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token combines incompatible roles {first} and {second}")]
pub struct RoleConflict {
    pub first: Role,
    pub second: Role,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrialScope {
    All,
    Only(BTreeSet<String>),
}

/// An authenticated caller, as the domain layers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub subject: String,
    pub display_name: String,
    pub roles: BTreeSet<Role>,
    pub sites: BTreeSet<String>,
    pub trials: TrialScope,
    pub auth_time: Option<i64>,
}

impl Caller {
    /// Builds a caller from verified claims, refusing unknown roles and the
    /// incompatible pairs of docs/architecture.md, "Security".
    pub fn from_claims(claims: &Claims) -> Result<Self, String> {
        let roles = claims
            .roles
            .iter()
            .map(|r| r.parse::<Role>())
            .collect::<Result<BTreeSet<_>, _>>()?;
        if roles.is_empty() {
            return Err("token carries no roles".to_owned());
        }
        // The subject is who the audit trail names: never blank.
        if claims.sub.trim().is_empty() {
            return Err("token has an empty subject".to_owned());
        }
        check_role_pairs(&roles).map_err(|conflict| conflict.to_string())?;
        let trials = if claims.trials.iter().any(|t| t == "*") {
            TrialScope::All
        } else {
            TrialScope::Only(claims.trials.iter().cloned().collect())
        };
        Ok(Caller {
            subject: claims.sub.clone(),
            display_name: claims.name.clone(),
            roles,
            sites: claims.sites.iter().cloned().collect(),
            trials,
            auth_time: claims.auth_time,
        })
    }

    pub fn has_role(&self, role: &Role) -> bool {
        self.roles.contains(role)
    }

    pub fn has_any_role(&self, roles: &[Role]) -> bool {
        roles.iter().any(|r| self.roles.contains(r))
    }

    pub fn may_access_trial(&self, trial_id: &str) -> bool {
        match &self.trials {
            TrialScope::All => true,
            TrialScope::Only(trials) => trials.contains(trial_id),
        }
    }

    pub fn may_access_site(&self, site_id: &str) -> bool {
        self.sites.contains(site_id)
    }

    pub fn is_site_user(&self) -> bool {
        self.roles.iter().any(Role::is_site_role)
    }

    /// The role recorded in audit records: the roles, comma separated.
    pub fn role_label(&self) -> String {
        let names: Vec<String> = self.roles.iter().map(Role::to_string).collect();
        names.join(",")
    }
}

/// Refuses a site role beside any unblinded role or beside a role that sees
/// the design (`statistician`, `trial_admin`: block sizes, list state),
/// `auditor` beside any unblinded or site role (it is blinded, and sees
/// every site), and `dsmb` beside any operational role.
pub fn check_role_pairs(roles: &BTreeSet<Role>) -> Result<(), RoleConflict> {
    let conflict = |first: &Role, second: &Role| RoleConflict {
        first: first.clone(),
        second: second.clone(),
    };
    let sees_design = |role: &&Role| matches!(role, Role::Statistician | Role::TrialAdmin);
    for site_role in roles.iter().filter(|r| r.is_site_role()) {
        if let Some(other) = roles.iter().find(|r| r.is_unblinded() || sees_design(r)) {
            return Err(conflict(site_role, other));
        }
    }
    if roles.contains(&Role::Auditor)
        && let Some(other) = roles.iter().find(|r| r.is_unblinded() || r.is_site_role())
    {
        return Err(conflict(&Role::Auditor, other));
    }
    if roles.contains(&Role::Dsmb)
        && let Some(operational) = roles.iter().find(|r| **r != Role::Dsmb)
    {
        return Err(conflict(&Role::Dsmb, operational));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(names: &[&str]) -> BTreeSet<Role> {
        names.iter().filter_map(|n| n.parse().ok()).collect()
    }

    #[test]
    fn role_names_round_trip() {
        for name in [
            "site_investigator",
            "site_coordinator",
            "unblinded_preparer",
            "emergency_desk",
            "medical_monitor",
            "safety_officer",
            "dsmb",
            "statistician",
            "trial_admin",
            "auditor",
            "service:blinding",
        ] {
            let role: Role = name.parse().expect("known role");
            assert_eq!(role.to_string(), name);
        }
        assert!("service:".parse::<Role>().is_err());
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn site_role_with_unblinded_role_is_refused() {
        let err = check_role_pairs(&roles(&["site_investigator", "unblinded_preparer"]))
            .expect_err("conflict");
        assert_eq!(err.first, Role::SiteInvestigator);
        assert!(check_role_pairs(&roles(&["site_coordinator", "safety_officer"])).is_err());
        assert!(check_role_pairs(&roles(&["site_coordinator", "site_investigator"])).is_ok());
    }

    #[test]
    fn site_role_with_a_role_that_sees_the_design_is_refused() {
        for (site, design) in [
            ("site_investigator", "statistician"),
            ("site_coordinator", "trial_admin"),
        ] {
            let err = check_role_pairs(&roles(&[site, design])).expect_err("conflict");
            assert_eq!(err.first.to_string(), site);
            assert_eq!(err.second.to_string(), design);
        }
    }

    #[test]
    fn every_user_role_is_listed_once_and_named() {
        let listed: BTreeSet<&Role> = Role::USER_ROLES.iter().collect();
        assert_eq!(listed.len(), Role::USER_ROLES.len());
        for role in &Role::USER_ROLES {
            // A new variant must be added to USER_ROLES: this match has no
            // wildcard, so the compiler points here.
            match role {
                Role::SiteInvestigator
                | Role::SiteCoordinator
                | Role::UnblindedPreparer
                | Role::EmergencyDesk
                | Role::MedicalMonitor
                | Role::SafetyOfficer
                | Role::Dsmb
                | Role::Statistician
                | Role::TrialAdmin
                | Role::Auditor => {}
                Role::Service(_) => panic!("service roles are not user roles"),
            }
            assert_eq!(role.to_string().parse::<Role>().as_ref(), Ok(role));
        }
    }

    #[test]
    fn the_blinded_auditor_with_an_unblinded_or_site_role_is_refused() {
        for other in [
            "unblinded_preparer",
            "emergency_desk",
            "medical_monitor",
            "safety_officer",
            "dsmb",
            "site_investigator",
            "site_coordinator",
        ] {
            let conflict = check_role_pairs(&roles(&["auditor", other])).expect_err(other);
            let named = [conflict.first.to_string(), conflict.second.to_string()];
            assert!(named.contains(&"auditor".to_owned()), "{named:?}");
            assert!(named.contains(&other.to_owned()), "{named:?}");
        }
        assert!(check_role_pairs(&roles(&["auditor"])).is_ok());
        assert!(check_role_pairs(&roles(&["auditor", "trial_admin"])).is_ok());
    }

    #[test]
    fn dsmb_with_operational_role_is_refused() {
        assert!(check_role_pairs(&roles(&["dsmb", "statistician"])).is_err());
        assert!(check_role_pairs(&roles(&["dsmb", "trial_admin"])).is_err());
        assert!(check_role_pairs(&roles(&["dsmb"])).is_ok());
        assert!(check_role_pairs(&roles(&["statistician", "trial_admin"])).is_ok());
    }
}
