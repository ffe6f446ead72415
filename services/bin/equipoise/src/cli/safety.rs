//! The pharmacovigilance desk's calls to the safety service: report an SAE,
//! a follow-up, the obligations queue, a submission, the E2B(R3) export and
//! the DSMB summary. What they print is what the server returned.

use std::fmt::Write as _;

use equipoise_common::grpc::client::AuthenticatedChannel;
use equipoise_proto::safety::v1 as pb;
use pb::safety_service_client::SafetyServiceClient;

use crate::CliError;

#[derive(Debug, clap::Subcommand)]
pub enum SafetyCall {
    /// Report a serious adverse event (a new case, version 1).
    ReportSae(Box<CaseArgs>),
    /// A follow-up to a case: version n+1 under the same case id.
    FollowUp {
        #[arg(long = "case")]
        case_id: String,
        #[command(flatten)]
        report: Box<CaseArgs>,
    },
    /// The sponsor's causality assessment of a case's latest version.
    Assess {
        #[arg(long = "case")]
        case_id: String,
        #[arg(long)]
        version: u32,
        #[arg(long, value_enum)]
        causality: CausalityArg,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// One case as the caller may see it.
    Case {
        case_id: String,
        /// 0: the latest version.
        #[arg(long, default_value_t = 0)]
        version: u32,
    },
    /// Regulatory obligations due or overdue, by due time (safety officers).
    Queue {
        #[arg(long, default_value = "")]
        trial: String,
        #[arg(long)]
        include_submitted: bool,
    },
    /// Record a submission to a regulator, closing the obligation.
    Submit {
        #[arg(long = "obligation")]
        obligation_id: String,
        #[arg(long)]
        recipient: String,
        #[arg(long = "ack")]
        acknowledgement_id: String,
        /// RFC 3339; default: now.
        #[arg(long)]
        submitted_at: Option<String>,
    },
    /// One case version as ICH E2B(R3) XML, on stdout.
    Export {
        case_id: String,
        #[arg(long, default_value_t = 0)]
        version: u32,
    },
    /// SAE counts: by arm for the DSMB, pooled for everyone else.
    SafetySummary { trial: String },
}

#[derive(Debug, clap::Args)]
pub struct CaseArgs {
    #[arg(long)]
    pub trial: String,
    #[arg(long)]
    pub site: String,
    #[arg(long)]
    pub subject: String,
    #[arg(long)]
    pub reporter: String,
    #[arg(long, default_value = "physician")]
    pub qualification: String,
    #[arg(long)]
    pub product: String,
    /// The MedDRA-style lowest level term code: 8 digits.
    #[arg(long)]
    pub llt: String,
    #[arg(long)]
    pub term: String,
    #[arg(long, default_value = "27.0")]
    pub meddra_version: String,
    /// YYYY-MM-DD.
    #[arg(long)]
    pub onset: String,
    /// Seriousness criteria; repeat for several. Any makes the case serious.
    #[arg(long = "criterion", value_enum)]
    pub criteria: Vec<Criterion>,
    #[arg(long, value_enum)]
    pub outcome: OutcomeArg,
    #[arg(long, value_enum)]
    pub causality: CausalityArg,
    #[arg(long)]
    pub narrative: String,
    /// When the site became aware, RFC 3339; default: now.
    #[arg(long)]
    pub aware_at: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Criterion {
    Death,
    LifeThreatening,
    Hospitalisation,
    Disability,
    CongenitalAnomaly,
    MedicallyImportant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CausalityArg {
    Related,
    NotRelated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutcomeArg {
    Recovered,
    Recovering,
    NotRecovered,
    RecoveredWithSequelae,
    Fatal,
    Unknown,
}

impl From<CausalityArg> for pb::Causality {
    fn from(causality: CausalityArg) -> Self {
        match causality {
            CausalityArg::Related => pb::Causality::Related,
            CausalityArg::NotRelated => pb::Causality::NotRelated,
        }
    }
}

impl From<OutcomeArg> for pb::Outcome {
    fn from(outcome: OutcomeArg) -> Self {
        match outcome {
            OutcomeArg::Recovered => pb::Outcome::Recovered,
            OutcomeArg::Recovering => pb::Outcome::Recovering,
            OutcomeArg::NotRecovered => pb::Outcome::NotRecovered,
            OutcomeArg::RecoveredWithSequelae => pb::Outcome::RecoveredWithSequelae,
            OutcomeArg::Fatal => pb::Outcome::Fatal,
            OutcomeArg::Unknown => pb::Outcome::Unknown,
        }
    }
}

type Client = SafetyServiceClient<AuthenticatedChannel>;

pub async fn run(mut client: Client, call: SafetyCall) -> Result<String, CliError> {
    let output = match call {
        SafetyCall::ReportSae(args) => {
            let request = pb::ReportCaseRequest {
                report: Some(case_report(*args)?),
            };
            case_view(client.report_case(request).await?.into_inner())
        }
        SafetyCall::FollowUp { case_id, report } => {
            let request = pb::ReportFollowUpRequest {
                case_id,
                report: Some(case_report(*report)?),
            };
            case_view(client.report_follow_up(request).await?.into_inner())
        }
        SafetyCall::Assess {
            case_id,
            version,
            causality,
            comment,
        } => {
            let request = pb::AssessCausalityRequest {
                case_id,
                version,
                causality: pb::Causality::from(causality).into(),
                comment,
            };
            case_view(client.assess_causality(request).await?.into_inner())
        }
        SafetyCall::Case { case_id, version } => {
            let request = pb::GetCaseRequest { case_id, version };
            case_view(client.get_case(request).await?.into_inner())
        }
        SafetyCall::Queue {
            trial,
            include_submitted,
        } => {
            let request = pb::ListObligationsRequest {
                trial_id: trial,
                include_submitted,
            };
            let response = client.list_obligations(request).await?.into_inner();
            response.obligations.iter().map(obligation_line).collect()
        }
        SafetyCall::Submit {
            obligation_id,
            recipient,
            acknowledgement_id,
            submitted_at,
        } => {
            let request = pb::RecordSubmissionRequest {
                obligation_id,
                recipient,
                submitted_at: Some(timestamp_arg(submitted_at.as_deref(), "--submitted-at")?),
                acknowledgement_id,
            };
            obligation_line(&client.record_submission(request).await?.into_inner())
        }
        SafetyCall::Export { case_id, version } => {
            let request = pb::ExportCaseRequest { case_id, version };
            let mut xml = client.export_case(request).await?.into_inner().xml;
            xml.push('\n');
            xml
        }
        SafetyCall::SafetySummary { trial } => {
            let request = pb::GetSafetySummaryRequest { trial_id: trial };
            summary(client.get_safety_summary(request).await?.into_inner())
        }
    };
    Ok(output)
}

fn case_report(args: CaseArgs) -> Result<pb::CaseReport, CliError> {
    let has = |c: Criterion| args.criteria.contains(&c);
    let seriousness = pb::Seriousness {
        death: has(Criterion::Death),
        life_threatening: has(Criterion::LifeThreatening),
        hospitalisation: has(Criterion::Hospitalisation),
        disability: has(Criterion::Disability),
        congenital_anomaly: has(Criterion::CongenitalAnomaly),
        medically_important: has(Criterion::MedicallyImportant),
    };
    Ok(pb::CaseReport {
        trial_id: args.trial,
        site_id: args.site,
        subject_id: args.subject,
        reporter: Some(pb::Reporter {
            name: args.reporter,
            qualification: args.qualification,
        }),
        suspect_product: args.product,
        event: Some(pb::CodedEvent {
            llt_code: args.llt,
            term: args.term,
            meddra_version: args.meddra_version,
        }),
        onset_date: args.onset,
        serious: !args.criteria.is_empty(),
        seriousness: Some(seriousness),
        outcome: pb::Outcome::from(args.outcome).into(),
        investigator_causality: pb::Causality::from(args.causality).into(),
        narrative: args.narrative,
        site_aware_at: Some(timestamp_arg(args.aware_at.as_deref(), "--aware-at")?),
    })
}

/// An RFC 3339 argument, or now.
fn timestamp_arg(text: Option<&str>, flag: &str) -> Result<prost_types::Timestamp, CliError> {
    let at = match text {
        Some(text) => text
            .parse::<jiff::Timestamp>()
            .map_err(|e| CliError::Usage(format!("{flag} '{text}': {e}")))?,
        None => jiff::Timestamp::now(),
    };
    Ok(prost_types::Timestamp {
        seconds: at.as_second(),
        nanos: at.subsec_nanosecond(),
    })
}

fn timestamp(at: Option<prost_types::Timestamp>) -> String {
    at.and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn enum_name(name: Option<&str>, prefix: &str) -> String {
    name.map(|n| n.trim_start_matches(prefix).to_lowercase())
        .unwrap_or_else(|| "unknown".into())
}

fn case_view(case: pb::CaseView) -> String {
    let classification = enum_name(
        pb::Classification::try_from(case.classification)
            .ok()
            .map(|c| c.as_str_name()),
        "CLASSIFICATION_",
    );
    let report = case.report.unwrap_or_default();
    let event = report.event.unwrap_or_default();
    let mut out = format!(
        "case:            {} v{}\ntrial:           {}\nsite:            {}\nsubject:         {}\nevent:           {} {} (MedDRA {})\nreceived_at:     {}\nlate:            {}\nexpected:        {} (RSI {})\nclassification:  {classification}\n",
        case.case_id,
        case.version,
        report.trial_id,
        report.site_id,
        report.subject_id,
        event.llt_code,
        event.term,
        event.meddra_version,
        timestamp(case.received_at),
        case.late,
        case.expected,
        case.rsi_version,
    );
    if !case.not_reportable_reason.is_empty() {
        let _ = writeln!(out, "reason:          {}", case.not_reportable_reason);
    }
    if case.day_zero.is_some() {
        let _ = writeln!(out, "day_zero:        {}", timestamp(case.day_zero));
    }
    for obligation in &case.obligations {
        out.push_str("  ");
        out.push_str(&obligation_line(obligation));
    }
    out
}

fn obligation_line(obligation: &pb::Obligation) -> String {
    let kind = enum_name(
        pb::ObligationKind::try_from(obligation.kind)
            .ok()
            .map(|k| k.as_str_name()),
        "OBLIGATION_KIND_",
    );
    let state = if obligation.submitted_at.is_some() {
        format!(
            "submitted {} to {} (ack {})",
            timestamp(obligation.submitted_at),
            obligation.recipient,
            obligation.acknowledgement_id
        )
    } else if obligation.overdue {
        "OVERDUE".to_owned()
    } else {
        "due".to_owned()
    };
    format!(
        "{} {} case {} trial {} due {} ({}) {state}\n",
        obligation.obligation_id,
        kind,
        obligation.case_id,
        obligation.trial_id,
        obligation.due_date,
        timestamp(obligation.due_at),
    )
}

fn summary(summary: pb::SafetySummary) -> String {
    let mut out = format!(
        "trial {}: {} serious cases\n",
        summary.trial_id, summary.serious_cases
    );
    for count in &summary.by_criterion {
        let _ = writeln!(out, "  {:<22} {}", count.criterion, count.cases);
    }
    for arm in &summary.by_arm {
        let _ = writeln!(
            out,
            "arm {} ({}): {} serious cases",
            arm.arm_id, arm.arm_label, arm.serious_cases
        );
        for count in &arm.by_criterion {
            let _ = writeln!(out, "  {:<22} {}", count.criterion, count.cases);
        }
    }
    if summary.arm_unknown > 0 {
        let _ = writeln!(out, "arm not known yet: {}", summary.arm_unknown);
    }
    out
}
