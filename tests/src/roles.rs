//! The declared role × RPC matrix: for every RPC of the three services'
//! public protos, which roles pass authorisation. `tests/roles.rs` calls
//! every RPC with every role over gRPC against it, checks that it names
//! every RPC of the descriptors, and that README's "Who may call what"
//! shows it (see [`render_readme_table`]).
//!
//! Where a trial's definition narrows the roles (emergency and planned
//! reveals), the row lists every role a definition may name; the services
//! refuse anyone else before reading the request.

use equipoise_common::auth::Role;

/// The service roles, in the order of the README's columns.
pub const SERVICE_ROLES: [&str; 3] = [
    "service:randomisation",
    "service:blinding",
    "service:safety",
];

/// The column of a valid token that carries no role at all.
pub const NO_ROLES: &str = "no roles";

pub struct Row {
    /// `package.Service`, as in the descriptors.
    pub service: &'static str,
    pub method: &'static str,
    pub allowed: &'static [&'static str],
}

impl Row {
    /// `package.Service/Method`, as in the descriptors.
    pub fn rpc(&self) -> String {
        format!("{}/{}", self.service, self.method)
    }
}

const RANDOMISATION: &str = "equipoise.randomisation.v1.RandomisationService";
const SUPPORT: &str = "equipoise.randomisation.v1.BlindingSupportService";
const BLINDING: &str = "equipoise.blinding.v1.BlindingService";
const SAFETY: &str = "equipoise.safety.v1.SafetyService";

macro_rules! row {
    ($service:expr, $method:literal, [$($role:literal),* $(,)?]) => {
        Row {
            service: $service,
            method: $method,
            allowed: &[$($role),*],
        }
    };
}

/// Who may call what. Reads that everyone blinded may make list
/// `auditor`; nothing that writes or reveals an arm does.
pub const MATRIX: &[Row] = &[
    row!(
        RANDOMISATION,
        "RegisterTrial",
        ["statistician", "trial_admin"]
    ),
    row!(RANDOMISATION, "UploadAllocationList", ["statistician"]),
    row!(RANDOMISATION, "ActivateTrial", ["trial_admin"]),
    row!(RANDOMISATION, "AmendTrial", ["trial_admin"]),
    row!(
        RANDOMISATION,
        "GetTrial",
        [
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
            "service:safety",
        ]
    ),
    row!(RANDOMISATION, "CloseEnrolment", ["trial_admin"]),
    row!(
        RANDOMISATION,
        "Randomise",
        ["site_investigator", "site_coordinator"]
    ),
    row!(
        RANDOMISATION,
        "GetAllocation",
        [
            "site_investigator",
            "site_coordinator",
            "emergency_desk",
            "medical_monitor",
            "statistician",
            "trial_admin",
            "auditor",
            "service:safety",
        ]
    ),
    row!(
        RANDOMISATION,
        "ListAllocations",
        [
            "site_investigator",
            "site_coordinator",
            "emergency_desk",
            "medical_monitor",
            "statistician",
            "trial_admin",
            "auditor",
            "service:safety",
        ]
    ),
    row!(
        RANDOMISATION,
        "StreamAllocations",
        [
            "site_investigator",
            "site_coordinator",
            "emergency_desk",
            "medical_monitor",
            "statistician",
            "trial_admin",
            "auditor",
            "service:safety",
        ]
    ),
    row!(
        RANDOMISATION,
        "GetTrialStatus",
        [
            "site_investigator",
            "site_coordinator",
            "medical_monitor",
            "statistician",
            "trial_admin",
            "auditor",
        ]
    ),
    row!(RANDOMISATION, "CorrectStratum", ["trial_admin"]),
    row!(RANDOMISATION, "MarkRandomisedInError", ["trial_admin"]),
    row!(RANDOMISATION, "Simulate", ["statistician"]),
    row!(
        RANDOMISATION,
        "ExportAuditTrail",
        ["trial_admin", "auditor"]
    ),
    row!(SUPPORT, "GetTrialForBlinding", ["service:blinding"]),
    row!(SUPPORT, "LookUpAllocation", ["service:blinding"]),
    row!(BLINDING, "AssignCode", ["service:randomisation"]),
    row!(BLINDING, "UploadCodes", ["statistician"]),
    row!(
        BLINDING,
        "GetBlindingStatus",
        [
            "emergency_desk",
            "medical_monitor",
            "statistician",
            "trial_admin",
            "auditor",
        ]
    ),
    row!(
        BLINDING,
        "GetSubjectBlinding",
        [
            "site_investigator",
            "site_coordinator",
            "unblinded_preparer",
            "emergency_desk",
            "medical_monitor",
            "safety_officer",
            "statistician",
            "trial_admin",
        ]
    ),
    row!(
        BLINDING,
        "GetPreparationInstruction",
        ["unblinded_preparer"]
    ),
    row!(BLINDING, "RecordGivenTreatment", ["unblinded_preparer"]),
    row!(
        BLINDING,
        "EmergencyUnblind",
        ["site_investigator", "emergency_desk", "medical_monitor"]
    ),
    row!(BLINDING, "SafetyReveal", ["service:safety"]),
    row!(BLINDING, "GetArmsForDsmb", ["service:safety"]),
    row!(
        BLINDING,
        "PlannedPeriodReveal",
        [
            "site_investigator",
            "site_coordinator",
            "emergency_desk",
            "medical_monitor",
        ]
    ),
    row!(
        BLINDING,
        "WatchUnblindings",
        [
            "site_investigator",
            "site_coordinator",
            "emergency_desk",
            "medical_monitor",
            "safety_officer",
            "statistician",
            "trial_admin",
        ]
    ),
    row!(
        SAFETY,
        "ReportCase",
        [
            "site_investigator",
            "site_coordinator",
            "medical_monitor",
            "safety_officer",
        ]
    ),
    row!(
        SAFETY,
        "ReportFollowUp",
        [
            "site_investigator",
            "site_coordinator",
            "medical_monitor",
            "safety_officer",
        ]
    ),
    row!(
        SAFETY,
        "AssessCausality",
        ["medical_monitor", "safety_officer"]
    ),
    row!(
        SAFETY,
        "GetCase",
        [
            "site_investigator",
            "site_coordinator",
            "emergency_desk",
            "medical_monitor",
            "safety_officer",
            "statistician",
            "trial_admin",
        ]
    ),
    row!(
        SAFETY,
        "ListCases",
        [
            "site_investigator",
            "site_coordinator",
            "emergency_desk",
            "medical_monitor",
            "safety_officer",
            "statistician",
            "trial_admin",
        ]
    ),
    row!(SAFETY, "ListObligations", ["safety_officer"]),
    row!(SAFETY, "RecordSubmission", ["safety_officer"]),
    row!(
        SAFETY,
        "GetSafetySummary",
        [
            "medical_monitor",
            "safety_officer",
            "dsmb",
            "statistician",
            "trial_admin",
        ]
    ),
    row!(SAFETY, "ExportCase", ["safety_officer"]),
];

/// Every column: the user roles of the role enum, the service roles, and
/// a token with no role.
pub fn columns() -> Vec<String> {
    Role::USER_ROLES
        .iter()
        .map(Role::to_string)
        .chain(SERVICE_ROLES.iter().map(|s| (*s).to_owned()))
        .chain([NO_ROLES.to_owned()])
        .collect()
}

/// The row of `rpc` (`package.Service/Method`), if declared.
pub fn row(rpc: &str) -> Option<&'static Row> {
    MATRIX.iter().find(|row| row.rpc() == rpc)
}

const SERVICE_LABELS: [(&str, &str); 4] = [
    (RANDOMISATION, "randomisation"),
    (SUPPORT, "randomisation (support)"),
    (BLINDING, "blinding"),
    (SAFETY, "safety"),
];

/// The README's matrix: one row per RPC, one column per role; `✓` where
/// authorisation passes.
pub fn render_readme_table() -> String {
    let columns = columns();
    let mut table = String::from("| RPC |");
    for column in &columns {
        table.push_str(&format!(" {column} |"));
    }
    table.push_str("\n|---|");
    table.push_str(&"---|".repeat(columns.len()));
    table.push('\n');
    for row in MATRIX {
        table.push_str(&format!("| {} |", readme_rpc_label(row)));
        for column in &columns {
            let cell = if row.allowed.contains(&column.as_str()) {
                " ✓ |"
            } else {
                " |"
            };
            table.push_str(cell);
        }
        table.push('\n');
    }
    table
}

fn readme_rpc_label(row: &Row) -> String {
    let label = SERVICE_LABELS
        .iter()
        .find(|(name, _)| *name == row.service)
        .map_or(row.service, |(_, label)| label);
    format!("{label}: {}", row.method)
}
