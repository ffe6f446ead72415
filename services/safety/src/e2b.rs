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

/// C.1.1: the sender's safety report unique identifier.
pub const SAFETY_REPORT_ID_ROOT: &str = "2.16.840.1.113883.3.989.2.1.3.1";
/// N.1.2: the batch number.
const BATCH_ID_ROOT: &str = "2.16.840.1.113883.3.989.2.1.3.22";
/// N.2.r.1: the message identifier.
const MESSAGE_ID_ROOT: &str = "2.16.840.1.113883.3.989.2.1.3.1";
/// N.1.3 / N.2.r.2: sender; N.1.4 / N.2.r.3: receiver.
const SENDER_ID_ROOT: &str = "2.16.840.1.113883.3.989.2.1.3.13";
const RECEIVER_ID_ROOT: &str = "2.16.840.1.113883.3.989.2.1.3.14";
/// D.1.1.4: the patient's investigation number.
const INVESTIGATION_PATIENT_ID_ROOT: &str = "2.16.840.1.113883.3.989.2.1.3.10";
/// MedDRA.
pub const MEDDRA_CODE_SYSTEM: &str = "2.16.840.1.113883.6.163";
/// ICH E2B(R3) code lists.
const OBSERVATION_CODES: &str = "2.16.840.1.113883.3.989.2.1.1.19";
const REPORT_TYPES: &str = "2.16.840.1.113883.3.989.2.1.1.2";
const REPORT_CHARACTERISTICS: &str = "2.16.840.1.113883.3.989.2.1.1.23";
const QUALIFICATIONS: &str = "2.16.840.1.113883.3.989.2.1.1.6";
const OUTCOMES: &str = "2.16.840.1.113883.3.989.2.1.1.11";
const DRUG_ROLES: &str = "2.16.840.1.113883.3.989.2.1.1.13";
const ORGANIZER_CODES: &str = "2.16.840.1.113883.3.989.2.1.1.20";
const STUDY_TYPES: &str = "2.16.840.1.113883.3.989.2.1.1.8";
const SOURCE_OF_ASSESSMENT: &str = "2.16.840.1.113883.3.989.2.1.1.21";
const PATIENT_ID_KINDS: &str = "2.16.840.1.113883.3.989.2.1.1.4";
const HL7_INTERACTIONS: &str = "2.16.840.1.113883.1.6";
const HL7_TRIGGER_EVENTS: &str = "2.16.840.1.113883.1.18";
const HL7_ACT_CODES: &str = "2.16.840.1.113883.5.4";

/// C.1.3: report from a study.
pub const REPORT_TYPE_STUDY: &str = "2";
/// G.k.1: the product is a suspect.
pub const CHARACTERISATION_SUSPECT: &str = "1";

/// E.i.3.2a–f: the observation code of each seriousness criterion, in the
/// order of the input's flags.
pub const SERIOUSNESS_CODES: [(&str, &str); 6] = [
    ("34", "resultsInDeath"),
    ("21", "isLifeThreatening"),
    ("33", "requiresInpatientHospitalization"),
    ("35", "resultsInPersistentOrSignificantDisability"),
    ("12", "congenitalAnomalyBirthDefect"),
    ("26", "otherMedicallyImportantCondition"),
];
/// E.i.7: outcome of the reaction at the time of the last observation.
pub const OUTCOME_CODE: &str = "27";
/// G.k.9.i.2: the causality assessment; G.k.1: the drug's characterisation.
pub const CAUSALITY_CODE: &str = "39";
pub const CHARACTERISATION_CODE: &str = "20";

/// C.1.1 of a case version: `<sender>-<case_id>-v<version>`.
pub fn safety_report_id(input: &IcsrInput) -> String {
    format!("{}-{}-v{}", input.sender, input.case_id, input.version)
}

/// HL7 TS of an instant, to the second, in UTC.
fn timestamp(at: Timestamp) -> String {
    format!("{}+0000", at.strftime("%Y%m%d%H%M%S"))
}

/// HL7 TS of a calendar date.
fn date(day: Date) -> String {
    day.strftime("%Y%m%d").to_string()
}

/// A stable UUID (RFC 4122 layout, version 4 bits) for an internal reference
/// of one message: the reaction and the drug are pointed at by id.
fn reference_id(message_id: &str, what: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{message_id}\u{0}{what}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// C.2.r.4: the code of a reporter's qualification, when it is one of the
/// ICH list's.
fn qualification_code(qualification: &str) -> Option<&'static str> {
    match qualification.trim().to_ascii_lowercase().as_str() {
        "physician" => Some("1"),
        "pharmacist" => Some("2"),
        "other health professional" | "other_health_professional" | "nurse" => Some("3"),
        "lawyer" => Some("4"),
        "consumer" | "consumer or other non health professional" => Some("5"),
        _ => None,
    }
}

/// The XML message, UTF-8, with every value escaped.
pub fn icsr_xml(input: &IcsrInput) -> String {
    let mut w = XmlWriter::default();
    let created = timestamp(input.created_at);
    let reaction_ref = reference_id(&input.message_id, "reaction");
    let drug_ref = reference_id(&input.message_id, "drug");

    w.open(
        "MCCI_IN200100UV01",
        &[
            ("xmlns", "urn:hl7-org:v3"),
            ("xmlns:xsi", "http://www.w3.org/2001/XMLSchema-instance"),
            ("ITSVersion", "XML_1.0"),
        ],
    );
    // N.1: the batch.
    w.empty(
        "id",
        &[("extension", &input.message_id), ("root", BATCH_ID_ROOT)],
    );
    w.empty("creationTime", &[("value", &created)]);
    w.empty("responseModeCode", &[("code", "D")]);
    w.empty(
        "interactionId",
        &[
            ("extension", "MCCI_IN200100UV01"),
            ("root", HL7_INTERACTIONS),
        ],
    );
    w.empty(
        "name",
        &[
            ("code", "1"),
            ("codeSystem", "2.16.840.1.113883.3.989.2.1.1.1"),
        ],
    );

    // N.2: the one message.
    w.open("PORR_IN049016UV", &[("ITSVersion", "XML_1.0")]);
    let message = format!("{}-1", input.message_id);
    w.empty("id", &[("extension", &message), ("root", MESSAGE_ID_ROOT)]);
    w.empty("creationTime", &[("value", &created)]);
    w.empty(
        "interactionId",
        &[("extension", "PORR_IN049016UV"), ("root", HL7_INTERACTIONS)],
    );
    w.empty("processingCode", &[("code", "P")]);
    w.empty("processingModeCode", &[("code", "T")]);
    w.empty("acceptAckCode", &[("code", "AL")]);
    device(&mut w, "receiver", "RCV", RECEIVER_ID_ROOT, &input.receiver);
    device(&mut w, "sender", "SND", SENDER_ID_ROOT, &input.sender);

    w.open(
        "controlActProcess",
        &[("classCode", "CACT"), ("moodCode", "EVN")],
    );
    w.empty(
        "code",
        &[
            ("code", "PORR_TE049016UV"),
            ("codeSystem", HL7_TRIGGER_EVENTS),
        ],
    );
    // C.1.2: date of creation.
    w.empty("effectiveTime", &[("value", &created)]);
    w.open("subject", &[("typeCode", "SUBJ")]);
    w.open(
        "investigationEvent",
        &[("classCode", "INVSTG"), ("moodCode", "EVN")],
    );
    // C.1.1: the sender's safety report unique identifier.
    w.empty(
        "id",
        &[
            ("extension", &safety_report_id(input)),
            ("root", SAFETY_REPORT_ID_ROOT),
        ],
    );
    w.empty(
        "code",
        &[("code", "PAT_ADV_EVNT"), ("codeSystem", HL7_ACT_CODES)],
    );
    // H.1: the case narrative.
    w.text("text", &[], &input.narrative);
    w.empty("statusCode", &[("code", "active")]);
    // C.1.4: first received from the source.
    w.open("effectiveTime", &[]);
    w.empty("low", &[("value", &timestamp(input.first_received))]);
    w.close();
    // C.1.5: the most recent information received.
    w.empty("availabilityTime", &[("value", &timestamp(input.received))]);

    w.open("component", &[("typeCode", "COMP")]);
    w.open(
        "adverseEventAssessment",
        &[("classCode", "INVSTG"), ("moodCode", "EVN")],
    );
    w.open("subject1", &[("typeCode", "SBJ")]);
    w.open("primaryRole", &[("classCode", "INVSBJ")]);
    patient(&mut w, input);
    reaction(&mut w, input, &reaction_ref);
    drug(&mut w, input, &drug_ref);
    w.close(); // primaryRole
    w.close(); // subject1
    // G.k.1: the product's role in the case.
    w.open("component", &[("typeCode", "COMP")]);
    w.open(
        "causalityAssessment",
        &[("classCode", "OBS"), ("moodCode", "EVN")],
    );
    w.empty(
        "code",
        &[
            ("code", CHARACTERISATION_CODE),
            ("codeSystem", OBSERVATION_CODES),
            ("displayName", "interventionCharacterization"),
        ],
    );
    w.empty(
        "value",
        &[
            ("xsi:type", "CE"),
            ("code", CHARACTERISATION_SUSPECT),
            ("codeSystem", DRUG_ROLES),
        ],
    );
    product_reference(&mut w, &drug_ref);
    w.close();
    w.close();
    // G.k.9.i.2: each assessment made, by its source.
    for (source, related) in [
        ("investigator", input.investigator_related),
        ("sponsor", input.sponsor_related),
    ] {
        if let Some(related) = related {
            causality(&mut w, source, related, &reaction_ref, &drug_ref);
        }
    }
    w.close(); // adverseEventAssessment
    w.close(); // component

    primary_source(&mut w, input);
    // C.1.3: type of report.
    w.open("subjectOf2", &[("typeCode", "SUBJ")]);
    w.open(
        "investigationCharacteristic",
        &[("classCode", "OBS"), ("moodCode", "EVN")],
    );
    w.empty(
        "code",
        &[
            ("code", "1"),
            ("codeSystem", REPORT_CHARACTERISTICS),
            ("displayName", "ichReportType"),
        ],
    );
    w.empty(
        "value",
        &[
            ("xsi:type", "CE"),
            ("code", REPORT_TYPE_STUDY),
            ("codeSystem", REPORT_TYPES),
        ],
    );
    w.close();
    w.close();

    w.close(); // investigationEvent
    w.close(); // subject
    w.close(); // controlActProcess
    w.close(); // PORR_IN049016UV
    device(&mut w, "receiver", "RCV", RECEIVER_ID_ROOT, &input.receiver);
    device(&mut w, "sender", "SND", SENDER_ID_ROOT, &input.sender);
    w.close(); // MCCI_IN200100UV01
    w.finish()
}

/// N.1.3/N.1.4 and N.2.r.2/N.2.r.3: a sender or receiver.
fn device(w: &mut XmlWriter, element: &str, type_code: &str, root: &str, id: &str) {
    w.open(element, &[("typeCode", type_code)]);
    w.open(
        "device",
        &[("classCode", "DEV"), ("determinerCode", "INSTANCE")],
    );
    w.empty("id", &[("extension", id), ("root", root)]);
    w.close();
    w.close();
}

/// D: the patient, known only by the trial's subject id.
fn patient(w: &mut XmlWriter, input: &IcsrInput) {
    w.open(
        "player1",
        &[("classCode", "PSN"), ("determinerCode", "INSTANCE")],
    );
    // D.1: patient (name or initials).
    w.text("name", &[], &input.subject_id);
    // D.1.1.4: patient medical record number, investigation.
    w.open("asIdentifiedEntity", &[("classCode", "IDENT")]);
    w.empty(
        "id",
        &[
            ("extension", &input.subject_id),
            ("root", INVESTIGATION_PATIENT_ID_ROOT),
        ],
    );
    w.empty("code", &[("code", "4"), ("codeSystem", PATIENT_ID_KINDS)]);
    w.close();
    w.close();
}

/// E.i: the reaction, its seriousness and outcome.
fn reaction(w: &mut XmlWriter, input: &IcsrInput, reaction_ref: &str) {
    w.open("subjectOf2", &[("typeCode", "SBJ")]);
    w.open("observation", &[("classCode", "OBS"), ("moodCode", "EVN")]);
    w.empty("id", &[("root", reaction_ref)]);
    w.empty(
        "code",
        &[
            ("code", "29"),
            ("codeSystem", OBSERVATION_CODES),
            ("displayName", "reaction"),
        ],
    );
    // E.i.4: onset.
    w.open("effectiveTime", &[("xsi:type", "IVL_TS")]);
    w.empty("low", &[("value", &date(input.onset))]);
    w.close();
    // E.i.2.1b: the LLT; E.i.1.1a: the term as reported.
    w.open(
        "value",
        &[
            ("xsi:type", "CE"),
            ("code", &input.llt_code),
            ("codeSystem", MEDDRA_CODE_SYSTEM),
            ("codeSystemVersion", &input.meddra_version),
        ],
    );
    w.text("originalText", &[], &input.term);
    w.close();
    let flags = [
        input.death,
        input.life_threatening,
        input.hospitalisation,
        input.disability,
        input.congenital_anomaly,
        input.medically_important,
    ];
    for ((code, name), flag) in SERIOUSNESS_CODES.iter().zip(flags) {
        w.open("outboundRelationship2", &[("typeCode", "PERT")]);
        w.open("observation", &[("classCode", "OBS"), ("moodCode", "EVN")]);
        w.empty(
            "code",
            &[
                ("code", code),
                ("codeSystem", OBSERVATION_CODES),
                ("displayName", name),
            ],
        );
        w.empty(
            "value",
            &[
                ("xsi:type", "BL"),
                ("value", if flag { "true" } else { "false" }),
            ],
        );
        w.close();
        w.close();
    }
    // E.i.7: outcome.
    w.open("outboundRelationship2", &[("typeCode", "PERT")]);
    w.open("observation", &[("classCode", "OBS"), ("moodCode", "EVN")]);
    w.empty(
        "code",
        &[
            ("code", OUTCOME_CODE),
            ("codeSystem", OBSERVATION_CODES),
            ("displayName", "outcome"),
        ],
    );
    w.empty(
        "value",
        &[
            ("xsi:type", "CE"),
            ("code", &input.outcome.to_string()),
            ("codeSystem", OUTCOMES),
        ],
    );
    w.close();
    w.close();
    w.close(); // observation
    w.close(); // subjectOf2
}

/// G.k: the suspect product.
fn drug(w: &mut XmlWriter, input: &IcsrInput, drug_ref: &str) {
    w.open("subjectOf2", &[("typeCode", "SBJ")]);
    w.open(
        "organizer",
        &[("classCode", "CATEGORY"), ("moodCode", "EVN")],
    );
    w.empty(
        "code",
        &[
            ("code", "4"),
            ("codeSystem", ORGANIZER_CODES),
            ("displayName", "drugInformation"),
        ],
    );
    w.open("component", &[("typeCode", "COMP")]);
    w.open(
        "substanceAdministration",
        &[("classCode", "SBADM"), ("moodCode", "EVN")],
    );
    w.empty("id", &[("root", drug_ref)]);
    w.open("consumable", &[("typeCode", "CSM")]);
    w.open("instanceOfKind", &[("classCode", "INST")]);
    w.open(
        "kindOfProduct",
        &[("classCode", "MMAT"), ("determinerCode", "KIND")],
    );
    // G.k.2.2: medicinal product name as reported.
    w.text("name", &[], &input.suspect_product);
    w.close();
    w.close();
    w.close();
    w.close(); // substanceAdministration
    w.close(); // component
    w.close(); // organizer
    w.close(); // subjectOf2
}

fn product_reference(w: &mut XmlWriter, drug_ref: &str) {
    w.open("subject2", &[("typeCode", "SUBJ")]);
    w.open(
        "productUseReference",
        &[("classCode", "SBADM"), ("moodCode", "EVN")],
    );
    w.empty("id", &[("root", drug_ref)]);
    w.close();
    w.close();
}

/// G.k.9.i.2.r: one assessment of the drug–reaction pair.
fn causality(w: &mut XmlWriter, source: &str, related: bool, reaction_ref: &str, drug_ref: &str) {
    w.open("component", &[("typeCode", "COMP")]);
    w.open(
        "causalityAssessment",
        &[("classCode", "OBS"), ("moodCode", "EVN")],
    );
    w.empty(
        "code",
        &[
            ("code", CAUSALITY_CODE),
            ("codeSystem", OBSERVATION_CODES),
            ("displayName", "causality"),
        ],
    );
    // G.k.9.i.2.r.3: result of the assessment.
    w.text(
        "value",
        &[("xsi:type", "ST")],
        if related { "related" } else { "not related" },
    );
    // G.k.9.i.2.r.1: source of the assessment.
    w.open("author", &[("typeCode", "AUT")]);
    w.open("assignedEntity", &[("classCode", "ASSIGNED")]);
    w.open("code", &[("codeSystem", SOURCE_OF_ASSESSMENT)]);
    w.text("originalText", &[], source);
    w.close();
    w.close();
    w.close();
    w.open("subject1", &[("typeCode", "SUBJ")]);
    w.open(
        "adverseEffectReference",
        &[("classCode", "OBS"), ("moodCode", "EVN")],
    );
    w.empty("id", &[("root", reaction_ref)]);
    w.close();
    w.close();
    product_reference(w, drug_ref);
    w.close();
    w.close();
}

/// C.2.r: the primary source; C.5: the study.
fn primary_source(w: &mut XmlWriter, input: &IcsrInput) {
    w.open("outboundRelationship", &[("typeCode", "SPRT")]);
    w.open(
        "relatedInvestigation",
        &[("classCode", "INVSTG"), ("moodCode", "EVN")],
    );
    w.empty(
        "code",
        &[
            ("code", "2"),
            ("codeSystem", "2.16.840.1.113883.3.989.2.1.1.22"),
            ("displayName", "sourceReport"),
        ],
    );
    w.open("subjectOf2", &[("typeCode", "SUBJ")]);
    w.open(
        "controlActEvent",
        &[("classCode", "CACT"), ("moodCode", "EVN")],
    );
    w.open("author", &[("typeCode", "AUT")]);
    w.open("assignedEntity", &[("classCode", "ASSIGNED")]);
    w.open(
        "assignedPerson",
        &[("classCode", "PSN"), ("determinerCode", "INSTANCE")],
    );
    // C.2.r.1: reporter's name.
    w.text("name", &[], &input.reporter_name);
    // C.2.r.4: qualification.
    w.open("asQualifiedEntity", &[("classCode", "QUAL")]);
    match qualification_code(&input.reporter_qualification) {
        Some(code) => w.open("code", &[("code", code), ("codeSystem", QUALIFICATIONS)]),
        None => w.open("code", &[("codeSystem", QUALIFICATIONS)]),
    }
    w.text("originalText", &[], &input.reporter_qualification);
    w.close();
    w.close();
    w.close(); // assignedPerson
    // C.2.r.2.1: the reporter's organisation: the trial site.
    w.open(
        "representedOrganization",
        &[("classCode", "ORG"), ("determinerCode", "INSTANCE")],
    );
    w.text("name", &[], &input.site_id);
    w.close();
    w.close(); // assignedEntity
    w.close(); // author
    w.close(); // controlActEvent
    w.close(); // subjectOf2
    w.close(); // relatedInvestigation
    w.close(); // outboundRelationship

    // C.5: the study the report comes from.
    w.open("subjectOf1", &[("typeCode", "SUBJ")]);
    w.open(
        "researchStudy",
        &[("classCode", "CLNTRL"), ("moodCode", "EVN")],
    );
    // C.5.3: sponsor study number.
    w.empty(
        "id",
        &[
            ("extension", &input.trial_id),
            ("root", "2.16.840.1.113883.3.989.2.1.3.5"),
        ],
    );
    // C.5.4: study type (1: clinical trials).
    w.empty("code", &[("code", "1"), ("codeSystem", STUDY_TYPES)]);
    // C.5.2: study name.
    w.text("title", &[], &input.trial_id);
    w.close();
    w.close();
}

/// A writer of indented, escaped XML; elements are closed in order.
#[derive(Default)]
struct XmlWriter {
    out: String,
    open: Vec<String>,
}

impl XmlWriter {
    fn indent(&mut self) {
        for _ in 0..self.open.len() {
            self.out.push_str("  ");
        }
    }

    fn start_tag(&mut self, name: &str, attributes: &[(&str, &str)]) {
        self.indent();
        self.out.push('<');
        self.out.push_str(name);
        for (key, value) in attributes {
            self.out.push(' ');
            self.out.push_str(key);
            self.out.push_str("=\"");
            escape_into(&mut self.out, value, true);
            self.out.push('"');
        }
    }

    fn open(&mut self, name: &str, attributes: &[(&str, &str)]) {
        self.start_tag(name, attributes);
        self.out.push_str(">\n");
        self.open.push(name.to_owned());
    }

    fn empty(&mut self, name: &str, attributes: &[(&str, &str)]) {
        self.start_tag(name, attributes);
        self.out.push_str("/>\n");
    }

    fn text(&mut self, name: &str, attributes: &[(&str, &str)], text: &str) {
        self.start_tag(name, attributes);
        self.out.push('>');
        escape_into(&mut self.out, text, false);
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    fn close(&mut self) {
        if let Some(name) = self.open.pop() {
            self.indent();
            self.out.push_str("</");
            self.out.push_str(&name);
            self.out.push_str(">\n");
        }
    }

    fn finish(mut self) -> String {
        while !self.open.is_empty() {
            self.close();
        }
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        xml.push_str(&self.out);
        xml
    }
}

/// Escapes the five XML special characters; characters XML 1.0 cannot
/// carry at all (most C0 controls, unpaired surrogates cannot occur in a
/// `str`, U+FFFE/U+FFFF) become U+FFFD so the message stays well-formed.
fn escape_into(out: &mut String, text: &str, attribute: bool) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // In an attribute, a parser would turn a raw tab or newline into a space.
            '\t' if attribute => out.push_str("&#9;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\t' | '\n' => out.push(c),
            // A raw CR would be normalised to LF by any parser.
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HL7: &str = "urn:hl7-org:v3";

    fn input() -> IcsrInput {
        IcsrInput {
            message_id: "MSG-0001".into(),
            sender: "EQUIPOISE-SPONSOR".into(),
            receiver: "EVHUMAN".into(),
            created_at: "2026-03-29T01:30:05Z".parse().expect("instant"),
            case_id: "CASE-42".into(),
            version: 3,
            first_received: "2026-03-20T08:15:00Z".parse().expect("instant"),
            received: "2026-03-28T17:45:30Z".parse().expect("instant"),
            trial_id: "RESPINE".into(),
            site_id: "FR-MTP".into(),
            subject_id: "S-0007".into(),
            reporter_name: "Dr A. Martin".into(),
            reporter_qualification: "physician".into(),
            suspect_product: "Respinimab 10 mg".into(),
            llt_code: "10019211".into(),
            term: "Headache, severe".into(),
            meddra_version: "27.0".into(),
            onset: "2026-03-18".parse().expect("date"),
            death: false,
            life_threatening: true,
            hospitalisation: true,
            disability: false,
            congenital_anomaly: false,
            medically_important: true,
            outcome: 3,
            investigator_related: Some(true),
            sponsor_related: Some(false),
            narrative: "Subject presented with severe headache.".into(),
        }
    }

    fn parse(xml: &str) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(xml).expect("well-formed XML")
    }

    fn elements<'a, 'i>(
        doc: &'a roxmltree::Document<'i>,
        name: &'a str,
    ) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> + 'a {
        doc.descendants()
            .filter(move |n| n.is_element() && n.tag_name().name() == name)
    }

    fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> roxmltree::Node<'a, 'i> {
        node.children()
            .find(|n| n.is_element() && n.tag_name().name() == name)
            .unwrap_or_else(|| panic!("no <{name}> under <{}>", node.tag_name().name()))
    }

    /// The `<observation>` or `<causalityAssessment>` whose `<code>` has
    /// `code` in the E2B observation code list.
    fn coded<'a, 'i>(
        doc: &'a roxmltree::Document<'i>,
        element: &'a str,
        code: &str,
    ) -> Vec<roxmltree::Node<'a, 'i>> {
        elements(doc, element)
            .filter(|n| {
                n.children().any(|c| {
                    c.tag_name().name() == "code"
                        && c.attribute("code") == Some(code)
                        && c.attribute("codeSystem") == Some(OBSERVATION_CODES)
                })
            })
            .collect()
    }

    #[test]
    fn the_batch_is_hl7_v3_with_one_icsr_message() {
        let xml = icsr_xml(&input());
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
        let doc = parse(&xml);
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "MCCI_IN200100UV01");
        assert_eq!(root.tag_name().namespace(), Some(HL7));
        assert_eq!(root.attribute("ITSVersion"), Some("XML_1.0"));
        assert!(
            doc.descendants()
                .filter(|n| n.is_element())
                .all(|n| n.tag_name().namespace() == Some(HL7))
        );
        let messages: Vec<_> = elements(&doc, "PORR_IN049016UV").collect();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].parent_element(), Some(root));
        assert_eq!(child(root, "id").attribute("extension"), Some("MSG-0001"));
        assert_eq!(
            child(root, "creationTime").attribute("value"),
            Some("20260329013005+0000")
        );
        let event = child(
            child(child(messages[0], "controlActProcess"), "subject"),
            "investigationEvent",
        );
        assert_eq!(event.tag_name().name(), "investigationEvent");
    }

    #[test]
    fn every_minimum_element_carries_its_value() {
        let xml = icsr_xml(&input());
        let doc = parse(&xml);
        let event = elements(&doc, "investigationEvent")
            .next()
            .expect("investigationEvent");

        // C.1.1, C.1.2, C.1.4, C.1.5.
        let report_id = child(event, "id");
        assert_eq!(
            report_id.attribute("root"),
            Some("2.16.840.1.113883.3.989.2.1.3.1")
        );
        assert_eq!(
            report_id.attribute("extension"),
            Some("EQUIPOISE-SPONSOR-CASE-42-v3")
        );
        let control = elements(&doc, "controlActProcess")
            .next()
            .expect("controlActProcess");
        assert_eq!(
            child(control, "effectiveTime").attribute("value"),
            Some("20260329013005+0000")
        );
        assert_eq!(
            child(child(event, "effectiveTime"), "low").attribute("value"),
            Some("20260320081500+0000")
        );
        assert_eq!(
            child(event, "availabilityTime").attribute("value"),
            Some("20260328174530+0000")
        );
        // C.1.3: a report from a study.
        let kind = child(
            elements(&doc, "investigationCharacteristic")
                .next()
                .expect("C.1.3"),
            "value",
        );
        assert_eq!(kind.attribute("code"), Some("2"));
        assert_eq!(kind.attribute("codeSystem"), Some(REPORT_TYPES));

        // C.2: the primary source.
        let person = elements(&doc, "assignedPerson").next().expect("C.2");
        assert_eq!(child(person, "name").text(), Some("Dr A. Martin"));
        let qualification = child(child(person, "asQualifiedEntity"), "code");
        assert_eq!(qualification.attribute("code"), Some("1"));
        assert_eq!(
            child(qualification, "originalText").text(),
            Some("physician")
        );

        // C.5: the study.
        let study = elements(&doc, "researchStudy").next().expect("C.5");
        assert_eq!(child(study, "id").attribute("extension"), Some("RESPINE"));
        assert_eq!(child(study, "title").text(), Some("RESPINE"));

        // D: the patient by subject id only.
        let patient = elements(&doc, "player1").next().expect("D");
        assert_eq!(child(patient, "name").text(), Some("S-0007"));
        let record = child(child(patient, "asIdentifiedEntity"), "id");
        assert_eq!(record.attribute("extension"), Some("S-0007"));
        let patient_elements: Vec<_> = patient
            .descendants()
            .filter(|n| n.is_element())
            .map(|n| n.tag_name().name())
            .collect();
        assert_eq!(
            patient_elements,
            ["player1", "name", "asIdentifiedEntity", "id", "code"]
        );

        // E.i: the reaction.
        let reaction = coded(&doc, "observation", "29");
        assert_eq!(reaction.len(), 1);
        let value = child(reaction[0], "value");
        assert_eq!(value.attribute("code"), Some("10019211"));
        assert_eq!(
            value.attribute("codeSystem"),
            Some("2.16.840.1.113883.6.163")
        );
        assert_eq!(value.attribute("codeSystemVersion"), Some("27.0"));
        assert_eq!(
            child(value, "originalText").text(),
            Some("Headache, severe")
        );
        assert_eq!(
            child(child(reaction[0], "effectiveTime"), "low").attribute("value"),
            Some("20260318")
        );
        let expected = [false, true, true, false, false, true];
        for ((code, name), flag) in SERIOUSNESS_CODES.iter().zip(expected) {
            let criterion = coded(&doc, "observation", code);
            assert_eq!(criterion.len(), 1, "{name}");
            assert_eq!(criterion[0].ancestors().nth(2), Some(reaction[0]), "{name}");
            let value = child(criterion[0], "value");
            assert_eq!(
                value.attribute(("http://www.w3.org/2001/XMLSchema-instance", "type")),
                Some("BL")
            );
            assert_eq!(
                value.attribute("value"),
                Some(if flag { "true" } else { "false" }),
                "{name}"
            );
        }
        let outcome = coded(&doc, "observation", OUTCOME_CODE);
        assert_eq!(child(outcome[0], "value").attribute("code"), Some("3"));

        // G.k: the suspect product and both assessments.
        let product = elements(&doc, "kindOfProduct").next().expect("G.k.2.2");
        assert_eq!(child(product, "name").text(), Some("Respinimab 10 mg"));
        let role = coded(&doc, "causalityAssessment", CHARACTERISATION_CODE);
        assert_eq!(role.len(), 1);
        assert_eq!(child(role[0], "value").attribute("code"), Some("1"));
        let assessments: Vec<(String, String)> = coded(&doc, "causalityAssessment", CAUSALITY_CODE)
            .into_iter()
            .map(|a| {
                let source = a
                    .descendants()
                    .find(|n| n.tag_name().name() == "originalText")
                    .and_then(|n| n.text())
                    .unwrap_or_default();
                (
                    source.to_owned(),
                    child(a, "value").text().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            assessments,
            [
                ("investigator".to_owned(), "related".to_owned()),
                ("sponsor".to_owned(), "not related".to_owned())
            ]
        );

        // H.1: the narrative.
        assert_eq!(
            child(event, "text").text(),
            Some("Subject presented with severe headache.")
        );
    }

    #[test]
    fn every_value_is_escaped() {
        let mut hostile = input();
        hostile.narrative = "<script>&\"'</script> and ]]> end".into();
        hostile.term = "a < b & \"c\"".into();
        hostile.reporter_name = "O'Brien & <Sons>".into();
        hostile.case_id = "C\"<&>'".into();
        hostile.meddra_version = "27.0\" injected=\"x".into();
        let xml = icsr_xml(&hostile);
        assert!(!xml.contains("<script>"));
        assert!(xml.contains("&lt;script&gt;&amp;&quot;&apos;&lt;/script&gt;"));
        let doc = parse(&xml);
        let event = elements(&doc, "investigationEvent")
            .next()
            .expect("investigationEvent");
        assert_eq!(
            child(event, "text").text(),
            Some("<script>&\"'</script> and ]]> end")
        );
        assert_eq!(elements(&doc, "script").count(), 0);
        assert_eq!(
            child(event, "id").attribute("extension"),
            Some("EQUIPOISE-SPONSOR-C\"<&>'-v3")
        );
        let reaction = coded(&doc, "observation", "29");
        let value = child(reaction[0], "value");
        assert_eq!(
            value.attribute("codeSystemVersion"),
            Some("27.0\" injected=\"x")
        );
        assert_eq!(value.attribute("injected"), None);
        assert_eq!(child(value, "originalText").text(), Some("a < b & \"c\""));
        let person = elements(&doc, "assignedPerson").next().expect("C.2");
        assert_eq!(child(person, "name").text(), Some("O'Brien & <Sons>"));
    }

    #[test]
    fn characters_xml_cannot_carry_do_not_break_the_message() {
        let mut odd = input();
        odd.narrative = "line 1\r\nline 2\u{0}\u{1b}end".into();
        odd.reporter_name = "tab\there".into();
        let xml = icsr_xml(&odd);
        let doc = parse(&xml);
        let event = elements(&doc, "investigationEvent")
            .next()
            .expect("investigationEvent");
        assert_eq!(
            child(event, "text").text(),
            Some("line 1\r\nline 2\u{FFFD}\u{FFFD}end")
        );
    }

    #[test]
    fn an_assessment_not_made_has_no_element() {
        for (investigator, sponsor, sources) in [
            (None, Some(true), vec!["sponsor"]),
            (Some(false), None, vec!["investigator"]),
            (None, None, vec![]),
        ] {
            let mut partial = input();
            partial.investigator_related = investigator;
            partial.sponsor_related = sponsor;
            let xml = icsr_xml(&partial);
            let doc = parse(&xml);
            let found: Vec<&str> = coded(&doc, "causalityAssessment", CAUSALITY_CODE)
                .into_iter()
                .filter_map(|a| {
                    a.descendants()
                        .find(|n| n.tag_name().name() == "originalText")
                        .and_then(|n| n.text())
                })
                .collect();
            assert_eq!(found, sources);
            // The product's characterisation stays.
            assert_eq!(
                coded(&doc, "causalityAssessment", CHARACTERISATION_CODE).len(),
                1
            );
        }
    }

    #[test]
    fn the_same_input_gives_the_same_message() {
        assert_eq!(icsr_xml(&input()), icsr_xml(&input()));
        let mut other = input();
        other.message_id = "MSG-0002".into();
        assert_ne!(icsr_xml(&input()), icsr_xml(&other));
    }
}
