//! The domain's values: what a site reports, what callers see.

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::clocks::ObligationKind;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reporter {
    pub name: String,
    pub qualification: String,
}

/// A MedDRA-style coded event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodedEvent {
    pub llt_code: String,
    pub term: String,
    pub meddra_version: String,
}

/// The six ICH E2A seriousness criteria.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seriousness {
    pub death: bool,
    pub life_threatening: bool,
    pub hospitalisation: bool,
    pub disability: bool,
    pub congenital_anomaly: bool,
    pub medically_important: bool,
}

/// The criteria's names, in the order summaries list them.
pub const CRITERIA: [&str; 6] = [
    "death",
    "life_threatening",
    "hospitalisation",
    "disability",
    "congenital_anomaly",
    "medically_important",
];

impl Seriousness {
    pub fn any(&self) -> bool {
        self.flags().iter().any(|f| *f)
    }

    /// In the order of [`CRITERIA`].
    pub fn flags(&self) -> [bool; 6] {
        [
            self.death,
            self.life_threatening,
            self.hospitalisation,
            self.disability,
            self.congenital_anomaly,
            self.medically_important,
        ]
    }

    pub fn fatal_or_life_threatening(&self) -> bool {
        self.death || self.life_threatening
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Causality {
    Related,
    NotRelated,
}

impl Causality {
    pub fn as_str(self) -> &'static str {
        match self {
            Causality::Related => "related",
            Causality::NotRelated => "not_related",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "related" => Some(Causality::Related),
            "not_related" => Some(Causality::NotRelated),
            _ => None,
        }
    }
}

/// E2B(R3) reaction outcome (E.i.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Recovered,
    Recovering,
    NotRecovered,
    RecoveredWithSequelae,
    Fatal,
    Unknown,
}

impl Outcome {
    /// The E2B code, 1 to 6.
    pub fn e2b_code(self) -> u8 {
        match self {
            Outcome::Recovered => 1,
            Outcome::Recovering => 2,
            Outcome::NotRecovered => 3,
            Outcome::RecoveredWithSequelae => 4,
            Outcome::Fatal => 5,
            Outcome::Unknown => 6,
        }
    }
}

mod date_text {
    use jiff::civil::Date;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(date: &Date, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&date.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

mod time_text {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&at.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A validated report, initial or follow-up: what a case version stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseReport {
    pub trial_id: String,
    pub site_id: String,
    pub subject_id: String,
    pub reporter: Reporter,
    pub suspect_product: String,
    pub event: CodedEvent,
    #[serde(with = "date_text")]
    pub onset_date: Date,
    pub serious: bool,
    pub seriousness: Seriousness,
    pub outcome: Outcome,
    /// `None`: not assessed by the investigator.
    pub investigator_causality: Option<Causality>,
    pub narrative: String,
    #[serde(with = "time_text")]
    pub site_aware_at: Timestamp,
}

/// A report as received, before validation: what may be missing or
/// malformed is here as the request carried it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CaseReportInput {
    pub trial_id: String,
    pub site_id: String,
    pub subject_id: String,
    pub reporter: Option<Reporter>,
    pub suspect_product: String,
    pub event: Option<CodedEvent>,
    pub onset_date: String,
    pub serious: bool,
    pub seriousness: Option<Seriousness>,
    /// `None`: unspecified or unknown to this build.
    pub outcome: Option<Outcome>,
    pub investigator_causality: Option<Causality>,
    pub narrative: String,
    pub site_aware_at: Option<Timestamp>,
}

impl From<CaseReport> for CaseReportInput {
    fn from(report: CaseReport) -> Self {
        Self {
            trial_id: report.trial_id,
            site_id: report.site_id,
            subject_id: report.subject_id,
            reporter: Some(report.reporter),
            suspect_product: report.suspect_product,
            event: Some(report.event),
            onset_date: report.onset_date.to_string(),
            serious: report.serious,
            seriousness: Some(report.seriousness),
            outcome: Some(report.outcome),
            investigator_causality: report.investigator_causality,
            narrative: report.narrative,
            site_aware_at: Some(report.site_aware_at),
        }
    }
}

/// What a caller sees of a case's classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification {
    NotPotentialSusar,
    Pending,
    /// Every role but safety_officer, once settled, whatever the outcome.
    Assessed,
    Susar,
    NotReportable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obligation {
    pub obligation_id: String,
    pub case_id: String,
    pub trial_id: String,
    pub kind: ObligationKind,
    pub due_at: Timestamp,
    pub due_date: Date,
    pub overdue: bool,
    pub submitted_at: Option<Timestamp>,
    pub recipient: Option<String>,
    pub acknowledgement_id: Option<String>,
}

/// One version of a case, as the caller may see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseView {
    pub case_id: String,
    pub version: u32,
    pub report: CaseReport,
    pub received_at: Timestamp,
    pub sponsor_causality: Option<Causality>,
    pub expected: bool,
    pub rsi_version: String,
    pub classification: Classification,
    /// safety_officer only.
    pub not_reportable_reason: Option<String>,
    pub late: bool,
    /// safety_officer only.
    pub day_zero: Option<Timestamp>,
    /// safety_officer only.
    pub obligations: Vec<Obligation>,
}

/// A submission to a regulator, as received.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubmissionInput {
    pub obligation_id: String,
    pub recipient: String,
    pub submitted_at: Option<Timestamp>,
    pub acknowledgement_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriterionCount {
    pub criterion: String,
    pub cases: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmSummary {
    pub arm_id: String,
    pub arm_label: String,
    pub serious_cases: u32,
    pub by_criterion: Vec<CriterionCount>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetySummary {
    pub trial_id: String,
    pub serious_cases: u32,
    pub by_criterion: Vec<CriterionCount>,
    /// dsmb only.
    pub by_arm: Vec<ArmSummary>,
    /// dsmb only.
    pub arm_unknown: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedCase {
    pub xml: String,
    pub message_id: String,
}
