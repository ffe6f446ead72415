//! Domain values to and from `equipoise.blinding.v1` messages.

use equipoise_common::grpc::convert::to_proto_timestamp;
use equipoise_proto::blinding::v1 as pb;

use crate::codes::PoolLevel;
use crate::service::{
    AssignedCode, BlindingState, BlindingStatus, PeriodView, PreparationInstruction,
    ReasonCategory, Reveal, RevealEvent, SafetyReveal, SubjectArm, SubjectBlinding, UploadSummary,
};
use crate::store::{Notification, PeriodRecord, RevealKind};

pub fn timestamp(at: Option<prost_types::Timestamp>) -> Option<jiff::Timestamp> {
    let at = at?;
    jiff::Timestamp::new(at.seconds, at.nanos).ok()
}

/// UNSPECIFIED and unknown values are `None`: the domain refuses them.
pub fn reason_category(value: i32) -> Option<ReasonCategory> {
    match pb::ReasonCategory::try_from(value).ok()? {
        pb::ReasonCategory::Unspecified => None,
        pb::ReasonCategory::SeriousAdverseEvent => Some(ReasonCategory::SeriousAdverseEvent),
        pb::ReasonCategory::OverdoseOrMedicationError => {
            Some(ReasonCategory::OverdoseOrMedicationError)
        }
        pb::ReasonCategory::ConcomitantTreatmentDecision => {
            Some(ReasonCategory::ConcomitantTreatmentDecision)
        }
        pb::ReasonCategory::Pregnancy => Some(ReasonCategory::Pregnancy),
        pb::ReasonCategory::OtherMedicalEmergency => Some(ReasonCategory::OtherMedicalEmergency),
    }
}

fn reason_category_value(text: Option<&str>) -> i32 {
    let category = match text.and_then(ReasonCategory::parse) {
        None => pb::ReasonCategory::Unspecified,
        Some(ReasonCategory::SeriousAdverseEvent) => pb::ReasonCategory::SeriousAdverseEvent,
        Some(ReasonCategory::OverdoseOrMedicationError) => {
            pb::ReasonCategory::OverdoseOrMedicationError
        }
        Some(ReasonCategory::ConcomitantTreatmentDecision) => {
            pb::ReasonCategory::ConcomitantTreatmentDecision
        }
        Some(ReasonCategory::Pregnancy) => pb::ReasonCategory::Pregnancy,
        Some(ReasonCategory::OtherMedicalEmergency) => pb::ReasonCategory::OtherMedicalEmergency,
    };
    category as i32
}

fn kind(kind: RevealKind) -> i32 {
    let kind = match kind {
        RevealKind::Emergency => pb::RevealKind::Emergency,
        RevealKind::SafetyReview => pb::RevealKind::SafetyReview,
        RevealKind::PlannedPeriod => pb::RevealKind::PlannedPeriod,
        RevealKind::Preparation => pb::RevealKind::Preparation,
    };
    kind as i32
}

fn state(state: BlindingState) -> i32 {
    let state = match state {
        BlindingState::Blinded => pb::BlindingState::Blinded,
        BlindingState::UnblindedEmergency => pb::BlindingState::UnblindedEmergency,
        BlindingState::UnblindedPlanned => pb::BlindingState::UnblindedPlanned,
    };
    state as i32
}

pub fn assigned(value: AssignedCode) -> pb::AssignCodeResponse {
    pb::AssignCodeResponse {
        code: value.code,
        replayed: value.replayed,
    }
}

pub fn uploaded(value: UploadSummary) -> pb::UploadCodesResponse {
    pb::UploadCodesResponse {
        arms: value.arms,
        codes: value.codes,
        codes_sha256: value.codes_sha256,
    }
}

pub fn status(value: BlindingStatus) -> pb::BlindingStatus {
    let level = match value.pool_level {
        None => pb::PoolLevel::Unspecified,
        Some(PoolLevel::Sufficient) => pb::PoolLevel::Sufficient,
        Some(PoolLevel::Low) => pb::PoolLevel::Low,
        Some(PoolLevel::Empty) => pb::PoolLevel::Empty,
    };
    pb::BlindingStatus {
        trial_id: value.trial_id,
        pool_level: level as i32,
        pools_stored: value.pool_level.is_some(),
        codes_assigned: value.codes_assigned,
        emergency_unblindings: value.emergency_unblindings,
        safety_reviews: value.safety_reviews,
        planned_reveals: value.planned_reveals,
        deviations: value.deviations,
    }
}

fn event(value: RevealEvent) -> pb::RevealEvent {
    pb::RevealEvent {
        kind: kind(value.kind),
        at: to_proto_timestamp(&value.at),
        actor: value.actor,
        role: value.role,
        audit_seq: value.audit_seq,
    }
}

fn period_view(value: PeriodView) -> pb::PeriodRecord {
    pb::PeriodRecord {
        period_id: value.period_id,
        assigned_arm_id: value.assigned_arm_id.unwrap_or_default(),
        given_arm_id: value.given_arm_id.unwrap_or_default(),
        deviation: value.deviation,
        recorded_at: value.recorded_at.as_deref().and_then(to_proto_timestamp),
        planned_reveal_at: value
            .planned_reveal_at
            .as_deref()
            .and_then(to_proto_timestamp),
    }
}

pub fn subject(value: SubjectBlinding) -> pb::SubjectBlinding {
    pb::SubjectBlinding {
        trial_id: value.trial_id,
        subject_id: value.subject_id,
        site_id: value.site_id,
        code: value.code.unwrap_or_default(),
        state: state(value.state),
        continues_in_trial: value.continues_in_trial,
        reveals: value.reveals.into_iter().map(event).collect(),
        periods: value.periods.into_iter().map(period_view).collect(),
    }
}

pub fn instruction(value: PreparationInstruction) -> pb::PreparationInstruction {
    pb::PreparationInstruction {
        trial_id: value.trial_id,
        code: value.code,
        subject_id: value.subject_id,
        site_id: value.site_id,
        arm_id: value.arm_id,
        prepare: value.prepare,
        audit_seq: value.audit_seq,
    }
}

/// For the unblinded preparer who recorded it.
pub fn period_record(value: PeriodRecord) -> pb::PeriodRecord {
    pb::PeriodRecord {
        period_id: value.period_id,
        assigned_arm_id: value.assigned_arm_id,
        given_arm_id: value.given_arm_id,
        deviation: value.deviation,
        recorded_at: to_proto_timestamp(&value.recorded_at),
        planned_reveal_at: None,
    }
}

pub fn reveal(value: Reveal) -> pb::Reveal {
    pb::Reveal {
        trial_id: value.trial_id,
        subject_id: value.subject_id,
        site_id: value.site_id,
        arm_id: value.arm_id,
        arm_label: value.arm_label,
        revealed_at: to_proto_timestamp(&value.revealed_at),
        audit_seq: value.audit_seq,
        state: state(value.state),
        continues_in_trial: value.continues_in_trial,
    }
}

pub fn safety(value: SafetyReveal) -> pb::SafetyRevealResponse {
    pb::SafetyRevealResponse {
        arm_id: value.arm_id,
        arm_label: value.arm_label,
        active: value.active,
        audit_seq: value.audit_seq,
    }
}

pub fn dsmb_arms(values: Vec<SubjectArm>) -> pb::GetArmsForDsmbResponse {
    pb::GetArmsForDsmbResponse {
        arms: values
            .into_iter()
            .map(|value| pb::SubjectArm {
                subject_id: value.subject_id,
                arm_id: value.arm_id,
                arm_label: value.arm_label,
            })
            .collect(),
    }
}

pub fn notification(value: Notification) -> pb::UnblindingNotification {
    pb::UnblindingNotification {
        cursor: value.cursor,
        trial_id: value.trial_id,
        site_id: value.site_id,
        subject_id: value.subject_id,
        kind: kind(value.kind),
        at: to_proto_timestamp(&value.at),
        actor: value.actor,
        role: value.role,
        reason_category: reason_category_value(value.reason_category.as_deref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsmb_arms_keep_every_subject_in_order() {
        let arm = |subject: &str, arm: &str, label: &str| SubjectArm {
            subject_id: subject.into(),
            arm_id: arm.into(),
            arm_label: label.into(),
        };
        let response = dsmb_arms(vec![arm("S2", "A", "Active"), arm("S1", "P", "Placebo")]);
        assert_eq!(
            response.arms,
            [
                pb::SubjectArm {
                    subject_id: "S2".into(),
                    arm_id: "A".into(),
                    arm_label: "Active".into(),
                },
                pb::SubjectArm {
                    subject_id: "S1".into(),
                    arm_id: "P".into(),
                    arm_label: "Placebo".into(),
                },
            ]
        );
        assert!(dsmb_arms(Vec::new()).arms.is_empty());
    }
}
