//! The unblinding desk's calls to the blinding service: emergency unblind,
//! watch notifications, preparation instructions and a subject's status.
//! What they print is exactly what the server returned to this caller.

use std::fmt::Write as _;
use std::io::Write as _;

use equipoise_common::grpc::client::AuthenticatedChannel;
use equipoise_proto::blinding::v1 as pb;
use pb::blinding_service_client::BlindingServiceClient;

use crate::CliError;

#[derive(Debug, clap::Subcommand)]
pub enum DeskCall {
    /// Break the blind for one subject in an emergency. Needs a token whose
    /// `auth_time` is recent (mint a fresh one after signing in again).
    Unblind {
        #[arg(long)]
        trial: String,
        /// Exactly one subject per request.
        #[arg(long = "subject", required = true)]
        subjects: Vec<String>,
        #[arg(long, value_enum)]
        category: ReasonCategory,
        /// Why the arm is needed, in the requester's words.
        #[arg(long)]
        reason: String,
    },
    /// Print unblinding notifications (never an arm) as they arrive.
    Watch {
        #[arg(long)]
        trial: String,
        /// Resume after this cursor (the last one printed); 0 from the start.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Stop after this many notifications; 0 runs until interrupted.
        #[arg(long, default_value_t = 0)]
        limit: u64,
    },
    /// What to prepare for a treatment code (unblinded preparers).
    Prepare {
        #[arg(long)]
        trial: String,
        #[arg(long)]
        code: String,
    },
    /// A subject's treatment code and blinding status.
    Subject {
        #[arg(long)]
        trial: String,
        #[arg(long)]
        subject: String,
    },
    /// Pool warnings and counts of reveals for a trial.
    BlindingStatus { trial: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReasonCategory {
    SeriousAdverseEvent,
    OverdoseOrMedicationError,
    ConcomitantTreatmentDecision,
    Pregnancy,
    OtherMedicalEmergency,
}

impl From<ReasonCategory> for pb::ReasonCategory {
    fn from(category: ReasonCategory) -> Self {
        match category {
            ReasonCategory::SeriousAdverseEvent => pb::ReasonCategory::SeriousAdverseEvent,
            ReasonCategory::OverdoseOrMedicationError => {
                pb::ReasonCategory::OverdoseOrMedicationError
            }
            ReasonCategory::ConcomitantTreatmentDecision => {
                pb::ReasonCategory::ConcomitantTreatmentDecision
            }
            ReasonCategory::Pregnancy => pb::ReasonCategory::Pregnancy,
            ReasonCategory::OtherMedicalEmergency => pb::ReasonCategory::OtherMedicalEmergency,
        }
    }
}

type Client = BlindingServiceClient<AuthenticatedChannel>;

pub async fn run(mut client: Client, call: DeskCall) -> Result<String, CliError> {
    let output = match call {
        DeskCall::Unblind {
            trial,
            subjects,
            category,
            reason,
        } => {
            let request = pb::EmergencyUnblindRequest {
                trial_id: trial,
                subject_ids: subjects,
                reason_category: pb::ReasonCategory::from(category).into(),
                reason,
            };
            reveal(client.emergency_unblind(request).await?.into_inner())
        }
        DeskCall::Watch {
            trial,
            after,
            limit,
        } => watch(&mut client, trial, after, limit).await?,
        DeskCall::Prepare { trial, code } => {
            let request = pb::GetPreparationInstructionRequest {
                trial_id: trial,
                code,
            };
            preparation(
                client
                    .get_preparation_instruction(request)
                    .await?
                    .into_inner(),
            )
        }
        DeskCall::Subject { trial, subject } => {
            let request = pb::GetSubjectBlindingRequest {
                trial_id: trial,
                subject_id: subject,
            };
            subject_blinding(client.get_subject_blinding(request).await?.into_inner())
        }
        DeskCall::BlindingStatus { trial } => {
            let request = pb::GetBlindingStatusRequest { trial_id: trial };
            blinding_status(client.get_blinding_status(request).await?.into_inner())
        }
    };
    Ok(output)
}

/// Prints each notification as it arrives, so a desk can leave it running.
async fn watch(
    client: &mut Client,
    trial: String,
    after: u64,
    limit: u64,
) -> Result<String, CliError> {
    let request = pb::WatchUnblindingsRequest {
        trial_id: trial,
        after_cursor: after,
    };
    let mut stream = client.watch_unblindings(request).await?.into_inner();
    let mut seen = 0u64;
    while let Some(notification) = stream.message().await? {
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (e.g. `| head`) ends the watch quietly.
        if writeln!(stdout, "{}", notification_line(&notification)).is_err() {
            break;
        }
        let _ = stdout.flush();
        seen += 1;
        if limit != 0 && seen >= limit {
            break;
        }
    }
    Ok(String::new())
}

fn timestamp(at: Option<prost_types::Timestamp>) -> String {
    at.and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn state_name(state: i32) -> &'static str {
    match pb::BlindingState::try_from(state) {
        Ok(pb::BlindingState::Blinded) => "blinded",
        Ok(pb::BlindingState::UnblindedEmergency) => "unblinded (emergency)",
        Ok(pb::BlindingState::UnblindedPlanned) => "unblinded (planned)",
        _ => "unknown",
    }
}

fn kind_name(kind: i32) -> &'static str {
    match pb::RevealKind::try_from(kind) {
        Ok(pb::RevealKind::Emergency) => "emergency unblinding",
        Ok(pb::RevealKind::SafetyReview) => "safety review",
        Ok(pb::RevealKind::PlannedPeriod) => "planned period reveal",
        Ok(pb::RevealKind::Preparation) => "preparation",
        _ => "unknown",
    }
}

fn category_name(category: i32) -> String {
    pb::ReasonCategory::try_from(category)
        .map(|c| {
            c.as_str_name()
                .trim_start_matches("REASON_CATEGORY_")
                .to_lowercase()
        })
        .unwrap_or_default()
}

fn reveal(reveal: pb::Reveal) -> String {
    format!(
        "subject:            {}\nsite:               {}\narm:                {} ({})\nrevealed_at:        {}\naudit_seq:          {}\nstatus:             {}\ncontinues_in_trial: {}\n",
        reveal.subject_id,
        reveal.site_id,
        reveal.arm_id,
        reveal.arm_label,
        timestamp(reveal.revealed_at),
        reveal.audit_seq,
        state_name(reveal.state),
        reveal.continues_in_trial
    )
}

fn notification_line(n: &pb::UnblindingNotification) -> String {
    let mut line = format!(
        "#{} {} {} trial={} site={} subject={} by={} role={}",
        n.cursor,
        timestamp(n.at),
        kind_name(n.kind),
        n.trial_id,
        n.site_id,
        n.subject_id,
        n.actor,
        n.role
    );
    let category = category_name(n.reason_category);
    if !category.is_empty() && category != "unspecified" {
        let _ = write!(line, " reason={category}");
    }
    line
}

fn preparation(instruction: pb::PreparationInstruction) -> String {
    format!(
        "code:      {}\nsubject:   {}\nsite:      {}\nprepare:   {} (arm {})\naudit_seq: {}\n",
        instruction.code,
        instruction.subject_id,
        instruction.site_id,
        instruction.prepare,
        instruction.arm_id,
        instruction.audit_seq
    )
}

fn subject_blinding(subject: pb::SubjectBlinding) -> String {
    let code = if subject.code.is_empty() {
        "(pending)"
    } else {
        subject.code.as_str()
    };
    let mut out = format!(
        "subject:            {}\nsite:               {}\ntreatment_code:     {code}\nstatus:             {}\ncontinues_in_trial: {}\n",
        subject.subject_id,
        subject.site_id,
        state_name(subject.state),
        subject.continues_in_trial
    );
    for event in &subject.reveals {
        let _ = writeln!(
            out,
            "  {} {} by {} ({}) audit_seq {}",
            timestamp(event.at),
            kind_name(event.kind),
            event.actor,
            event.role,
            event.audit_seq
        );
    }
    for period in &subject.periods {
        let _ = write!(out, "  period {}", period.period_id);
        if !period.given_arm_id.is_empty() {
            let _ = write!(
                out,
                ": assigned {} given {}{}",
                period.assigned_arm_id,
                period.given_arm_id,
                if period.deviation { " (deviation)" } else { "" }
            );
        }
        if period.planned_reveal_at.is_some() {
            let _ = write!(
                out,
                ", planned reveal from {}",
                timestamp(period.planned_reveal_at)
            );
        }
        out.push('\n');
    }
    out
}

fn blinding_status(status: pb::BlindingStatus) -> String {
    let level = match pb::PoolLevel::try_from(status.pool_level) {
        Ok(pb::PoolLevel::Sufficient) => "sufficient",
        Ok(pb::PoolLevel::Low) => "LOW: prepare a top-up",
        Ok(pb::PoolLevel::Empty) => "EMPTY: randomisation stops for the affected arm",
        _ => "no pools yet",
    };
    format!(
        "trial {}\ncode pools:            {level}\ncodes assigned:        {}\nemergency unblindings: {}\nsafety reviews:        {}\nplanned reveals:       {}\ndeviations:            {}\n",
        status.trial_id,
        status.codes_assigned,
        status.emergency_unblindings,
        status.safety_reviews,
        status.planned_reveals,
        status.deviations
    )
}
