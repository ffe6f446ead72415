//! One case version as an ICH E2B(R3) ICSR message: an HL7 v3
//! MCCI_IN200100UV01 batch wrapping one PORR_IN049016UV, with the C
//! (identification), E (reaction), G (drug) and H (narrative) sections
//! DESIGN §6 lists.

use jiff::Timestamp;
use jiff::civil::Date;

/// Everything the message carries, already checked by the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcsrInput {
    /// Unique per message (batch and message ids derive from it).
    pub message_id: String,
    pub sender: String,
    pub receiver: String,
    pub created_at: Timestamp,
    /// C.1.1: the sender's safety report id: the case id and version.
    pub case_id: String,
    pub version: u32,
    /// C.1.4: first received by the sponsor; C.1.5: this version received.
    pub first_received: Timestamp,
    pub received: Timestamp,
    pub trial_id: String,
    pub site_id: String,
    pub subject_id: String,
    pub reporter_name: String,
    pub reporter_qualification: String,
    pub suspect_product: String,
    pub llt_code: String,
    pub term: String,
    pub meddra_version: String,
    pub onset: Date,
    /// E.i.3.2a–f.
    pub death: bool,
    pub life_threatening: bool,
    pub hospitalisation: bool,
    pub disability: bool,
    pub congenital_anomaly: bool,
    pub medically_important: bool,
    /// E.i.7: 1 recovered … 6 unknown.
    pub outcome: u8,
    /// G.k.9.i.2: the investigator's and the sponsor's assessments
    /// (`None`: not assessed).
    pub investigator_related: Option<bool>,
    pub sponsor_related: Option<bool>,
    pub narrative: String,
}

/// The XML message, UTF-8, with every value escaped.
pub fn icsr_xml(input: &IcsrInput) -> String {
    let _ = input;
    unimplemented!("written on branch safety-rules")
}
