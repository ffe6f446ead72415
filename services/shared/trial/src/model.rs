//! The typed trial definition (docs/architecture.md, "Trial definitions"). Built only by [`super::parse`],
//! so every value here has passed validation.

use serde::Serialize;

use super::rules::{Condition, Rule};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrialDefinition {
    pub id: String,
    pub version: u32,
    pub title: String,
    pub sponsor_time_zone: String,
    /// Advanced-therapy product: retention runs to trial end + 30 years.
    pub atmp: bool,
    pub arms: Vec<Arm>,
    pub sites: Vec<Site>,
    /// Left out of the canonical form when unbound, so definitions written
    /// before the key existed keep their hash.
    #[serde(skip_serializing_if = "SubjectIds::is_unbound")]
    pub subject_ids: SubjectIds,
    pub caps: Caps,
    pub covariates: Vec<Covariate>,
    pub eligibility: Vec<Criterion>,
    pub stratification: Vec<Factor>,
    pub method: MethodSpec,
    pub periods: Vec<Period>,
    pub blinding: Blinding,
    pub unblinding: Unblinding,
    pub safety: Safety,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Arm {
    pub id: String,
    pub label: String,
    pub ratio: u32,
    /// False for placebo, sham or vehicle: decides SUSAR reportability.
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Site {
    pub id: String,
    pub cap: Option<u32>,
}

/// How subject ids relate to sites.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SubjectIds {
    /// Every subject id starts with its site's id and a hyphen
    /// (`FR-MTP-001`), so an id names its site and another site's id is
    /// refused by its form alone, before anything is looked up (DESIGN §7).
    pub site_prefix: bool,
}

impl SubjectIds {
    fn is_unbound(&self) -> bool {
        !self.site_prefix
    }

    /// Whether `subject_id` has the form this trial requires at `site_id`.
    pub fn admits(&self, site_id: &str, subject_id: &str) -> bool {
        !self.site_prefix
            || subject_id
                .strip_prefix(site_id)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|rest| !rest.is_empty())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Caps {
    pub total: Option<u32>,
    /// The same cap for every stratum.
    pub per_stratum: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Covariate {
    pub id: String,
    pub kind: CovariateKind,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum CovariateKind {
    /// Bounds are plausibility limits: a value outside is a data-entry error.
    Integer {
        min: Option<f64>,
        max: Option<f64>,
    },
    Decimal {
        min: Option<f64>,
        max: Option<f64>,
    },
    Boolean,
    Enum {
        values: Vec<String>,
    },
}

impl CovariateKind {
    pub fn name(&self) -> &'static str {
        match self {
            CovariateKind::Integer { .. } => "integer",
            CovariateKind::Decimal { .. } => "decimal",
            CovariateKind::Boolean => "boolean",
            CovariateKind::Enum { .. } => "enum",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Criterion {
    pub id: String,
    pub rule: Rule,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Factor {
    pub id: String,
    pub source: FactorSource,
    pub levels: Vec<Level>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum FactorSource {
    Site,
    Covariate(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Level {
    pub name: String,
    /// `None` for site levels, which match the site id.
    pub condition: Option<Condition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ImbalanceMeasure {
    Range,
    Variance,
    StandardDeviation,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum MethodSpec {
    PermutedBlocks {
        block_sizes: Vec<u32>,
    },
    /// Pocock–Simon. `weights` follows the order of the stratification factors.
    Minimisation {
        weights: Vec<f64>,
        imbalance: ImbalanceMeasure,
        p: f64,
    },
    /// Efron's biased coin.
    BiasedCoin {
        p: f64,
    },
    BigStick {
        bound: u32,
    },
    /// Berger, Ivanova and Knoll's maximal procedure over sequences of
    /// `sequence_length` within `bound`.
    MaximalProcedure {
        bound: u32,
        sequence_length: u32,
    },
    UploadedList {
        warn_remaining: u32,
    },
    /// The random allocation rule: each stratum sequence is one block of
    /// `sample_size` (every ordering with the target counts equally likely);
    /// a stratum that outgrows it starts another such block.
    RandomAllocationRule {
        sample_size: u32,
    },
    /// Chen's biased coin with imbalance intolerance: Efron's coin, forced
    /// back when the imbalance would pass `bound`.
    ChenBiasedCoin {
        p: f64,
        bound: u32,
    },
    /// Baldi Antognini and Giovagnoli's adjustable biased coin (ABCD):
    /// the lagging arm with probability |D|^a / (|D|^a + 1).
    AdjustableBiasedCoin {
        a: f64,
    },
    /// Smith's generalised biased coin: arm A with probability
    /// n_B^rho / (n_A^rho + n_B^rho).
    GeneralisedBiasedCoin {
        rho: f64,
    },
    /// Wei's urn UD(alpha, beta): alpha balls of each arm at the start,
    /// beta balls of the other arm added after each assignment.
    Urn {
        alpha: f64,
        beta: f64,
    },
    /// The truncated binomial design: a fair coin until one arm has half of
    /// `sample_size`, then the other arm; repeated per block of that size.
    TruncatedBinomial {
        sample_size: u32,
    },
}

impl MethodSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            MethodSpec::PermutedBlocks { .. } => "permuted_blocks",
            MethodSpec::Minimisation { .. } => "minimisation",
            MethodSpec::BiasedCoin { .. } => "biased_coin",
            MethodSpec::BigStick { .. } => "big_stick",
            MethodSpec::MaximalProcedure { .. } => "maximal_procedure",
            MethodSpec::UploadedList { .. } => "uploaded_list",
            MethodSpec::RandomAllocationRule { .. } => "random_allocation_rule",
            MethodSpec::ChenBiasedCoin { .. } => "chen_biased_coin",
            MethodSpec::AdjustableBiasedCoin { .. } => "adjustable_biased_coin",
            MethodSpec::GeneralisedBiasedCoin { .. } => "generalised_biased_coin",
            MethodSpec::Urn { .. } => "urn",
            MethodSpec::TruncatedBinomial { .. } => "truncated_binomial",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Period {
    pub id: String,
    pub months: u32,
    pub crossover: Option<Crossover>,
    pub planned_unblinding_at_start: bool,
    /// Who may take the planned reveal at the start of this period; site
    /// roles only for subjects at their own sites. Left out of the canonical
    /// form when it is the default, so definitions written before the key
    /// existed keep their hash.
    #[serde(skip_serializing_if = "Period::has_default_planned_unblinding_roles")]
    pub planned_unblinding_roles: Vec<String>,
}

impl Period {
    /// The roles of a period that does not name its own.
    pub const DEFAULT_PLANNED_UNBLINDING_ROLES: &'static [&'static str] =
        &["site_investigator", "medical_monitor"];

    pub fn default_planned_unblinding_roles() -> Vec<String> {
        Self::DEFAULT_PLANNED_UNBLINDING_ROLES
            .iter()
            .map(|r| (*r).to_owned())
            .collect()
    }

    fn has_default_planned_unblinding_roles(roles: &[String]) -> bool {
        roles
            .iter()
            .map(String::as_str)
            .eq(Self::DEFAULT_PLANNED_UNBLINDING_ROLES.iter().copied())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Crossover {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Blinding {
    /// Only `treatment_codes` exists: each allocation gets a code that does
    /// not reveal the arm.
    pub mode: String,
    pub code_format: CodeFormat,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum CodeAlphabet {
    Base32,
    Digits,
    Alphanumeric,
}

impl CodeAlphabet {
    pub fn size(&self) -> u32 {
        match self {
            CodeAlphabet::Base32 => 32,
            CodeAlphabet::Digits => 10,
            CodeAlphabet::Alphanumeric => 36,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum CodeSegment {
    Literal(String),
    Random { length: u32, alphabet: CodeAlphabet },
}

/// e.g. `R-{6 random base32}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CodeFormat {
    pub source: String,
    pub segments: Vec<CodeSegment>,
}

impl CodeFormat {
    /// log2 of the number of distinct codes.
    pub fn entropy_bits(&self) -> f64 {
        self.segments
            .iter()
            .map(|s| match s {
                CodeSegment::Literal(_) => 0.0,
                CodeSegment::Random { length, alphabet } => {
                    f64::from(*length) * f64::from(alphabet.size()).log2()
                }
            })
            .sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AfterEmergencyUnblinding {
    Continue,
    Withdraw,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unblinding {
    pub emergency_roles: Vec<String>,
    pub reauth_max_age_minutes: u32,
    pub after_emergency_unblinding: AfterEmergencyUnblinding,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Safety {
    pub reference_safety_information: ReferenceSafetyInformation,
    /// The expected events of the single-version form; empty in the
    /// versioned form, whose versions carry their own.
    pub expected_events: Vec<String>,
    pub safety_window_months: u32,
}

/// The reference safety information (RSI) expectedness is judged against.
/// Serialised untagged, so the single-version form keeps the canonical form
/// (and hash) of definitions written before versions existed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ReferenceSafetyInformation {
    /// One version, in force from the start, with `safety.expected_events`.
    Single(String),
    /// Versions in strictly increasing `effective_from` order (at least one).
    Versions(Vec<RsiVersion>),
}

/// One version of the RSI and the date it came into force.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RsiVersion {
    pub version: String,
    #[serde(serialize_with = "serialize_date")]
    pub effective_from: jiff::civil::Date,
    pub expected_events: Vec<String>,
}

/// A date as `YYYY-MM-DD` in the canonical form.
fn serialize_date<S: serde::Serializer>(
    date: &jiff::civil::Date,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(date)
}

impl Safety {
    /// Every RSI version with the date it came into force, in order;
    /// `None` for the single-version form, in force from the start.
    pub fn rsi_versions(&self) -> Vec<(&str, Option<jiff::civil::Date>)> {
        match &self.reference_safety_information {
            ReferenceSafetyInformation::Single(version) => vec![(version.as_str(), None)],
            ReferenceSafetyInformation::Versions(versions) => versions
                .iter()
                .map(|v| (v.version.as_str(), Some(v.effective_from)))
                .collect(),
        }
    }

    /// Whether `term` is an expected event for an onset on `onset`, and the
    /// RSI version in force then: the version with the latest
    /// `effective_from` on or before the onset (the single-version form
    /// applies always). Terms match case-insensitively once trimmed. Before
    /// the first version came into force no RSI lists the event: it is
    /// unexpected (the conservative answer for SUSAR classification), and
    /// the version is empty.
    pub fn expectedness(&self, onset: jiff::civil::Date, term: &str) -> (bool, String) {
        let (version, events) = match &self.reference_safety_information {
            ReferenceSafetyInformation::Single(version) => {
                (version.as_str(), self.expected_events.as_slice())
            }
            ReferenceSafetyInformation::Versions(versions) => {
                match versions.iter().rev().find(|v| v.effective_from <= onset) {
                    Some(v) => (v.version.as_str(), v.expected_events.as_slice()),
                    None => return (false, String::new()),
                }
            }
        };
        let term = normalise_term(term);
        let expected = !term.is_empty() && events.iter().any(|e| normalise_term(e) == term);
        (expected, version.to_owned())
    }
}

/// A term as expectedness compares it: trimmed, case folded.
fn normalise_term(term: &str) -> String {
    term.trim().to_lowercase()
}

impl TrialDefinition {
    pub fn arm_index(&self, id: &str) -> Option<usize> {
        self.arms.iter().position(|a| a.id == id)
    }

    pub fn site(&self, id: &str) -> Option<&Site> {
        self.sites.iter().find(|s| s.id == id)
    }

    pub fn covariate(&self, id: &str) -> Option<&Covariate> {
        self.covariates.iter().find(|c| c.id == id)
    }

    pub fn ratios(&self) -> Vec<u32> {
        self.arms.iter().map(|a| a.ratio).collect()
    }
}
