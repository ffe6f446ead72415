//! Domain values to and from `equipoise.safety.v1` messages.

use equipoise_proto::safety::v1 as pb;
use jiff::Timestamp;

use crate::clocks::ObligationKind;
use crate::service::{
    CaseReport, CaseReportInput, CaseView, Causality, Classification, CodedEvent, ExportedCase,
    Obligation, Outcome, Reporter, SafetySummary, Seriousness, SubmissionInput,
};

pub fn timestamp(at: Option<prost_types::Timestamp>) -> Option<Timestamp> {
    let at = at?;
    Timestamp::new(at.seconds, at.nanos).ok()
}

pub fn proto_time(at: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.as_second(),
        nanos: at.subsec_nanosecond(),
    }
}

/// UNSPECIFIED and unknown values are `None`.
pub fn causality(value: i32) -> Option<Causality> {
    match pb::Causality::try_from(value).ok()? {
        pb::Causality::Unspecified => None,
        pb::Causality::Related => Some(Causality::Related),
        pb::Causality::NotRelated => Some(Causality::NotRelated),
    }
}

fn causality_value(value: Option<Causality>) -> i32 {
    let value = match value {
        None => pb::Causality::Unspecified,
        Some(Causality::Related) => pb::Causality::Related,
        Some(Causality::NotRelated) => pb::Causality::NotRelated,
    };
    value as i32
}

fn outcome(value: i32) -> Option<Outcome> {
    match pb::Outcome::try_from(value).ok()? {
        pb::Outcome::Unspecified => None,
        pb::Outcome::Recovered => Some(Outcome::Recovered),
        pb::Outcome::Recovering => Some(Outcome::Recovering),
        pb::Outcome::NotRecovered => Some(Outcome::NotRecovered),
        pb::Outcome::RecoveredWithSequelae => Some(Outcome::RecoveredWithSequelae),
        pb::Outcome::Fatal => Some(Outcome::Fatal),
        pb::Outcome::Unknown => Some(Outcome::Unknown),
    }
}

fn outcome_value(value: Outcome) -> i32 {
    let value = match value {
        Outcome::Recovered => pb::Outcome::Recovered,
        Outcome::Recovering => pb::Outcome::Recovering,
        Outcome::NotRecovered => pb::Outcome::NotRecovered,
        Outcome::RecoveredWithSequelae => pb::Outcome::RecoveredWithSequelae,
        Outcome::Fatal => pb::Outcome::Fatal,
        Outcome::Unknown => pb::Outcome::Unknown,
    };
    value as i32
}

pub fn report_input(report: Option<pb::CaseReport>) -> CaseReportInput {
    let Some(report) = report else {
        return CaseReportInput::default();
    };
    CaseReportInput {
        trial_id: report.trial_id,
        site_id: report.site_id,
        subject_id: report.subject_id,
        reporter: report.reporter.map(|r| Reporter {
            name: r.name,
            qualification: r.qualification,
        }),
        suspect_product: report.suspect_product,
        event: report.event.map(|e| CodedEvent {
            llt_code: e.llt_code,
            term: e.term,
            meddra_version: e.meddra_version,
        }),
        onset_date: report.onset_date,
        serious: report.serious,
        seriousness: report.seriousness.map(|s| Seriousness {
            death: s.death,
            life_threatening: s.life_threatening,
            hospitalisation: s.hospitalisation,
            disability: s.disability,
            congenital_anomaly: s.congenital_anomaly,
            medically_important: s.medically_important,
        }),
        outcome: outcome(report.outcome),
        investigator_causality: causality(report.investigator_causality),
        narrative: report.narrative,
        site_aware_at: timestamp(report.site_aware_at),
    }
}

fn report(report: CaseReport) -> pb::CaseReport {
    let s = report.seriousness;
    pb::CaseReport {
        trial_id: report.trial_id,
        site_id: report.site_id,
        subject_id: report.subject_id,
        reporter: Some(pb::Reporter {
            name: report.reporter.name,
            qualification: report.reporter.qualification,
        }),
        suspect_product: report.suspect_product,
        event: Some(pb::CodedEvent {
            llt_code: report.event.llt_code,
            term: report.event.term,
            meddra_version: report.event.meddra_version,
        }),
        onset_date: report.onset_date.to_string(),
        serious: report.serious,
        seriousness: Some(pb::Seriousness {
            death: s.death,
            life_threatening: s.life_threatening,
            hospitalisation: s.hospitalisation,
            disability: s.disability,
            congenital_anomaly: s.congenital_anomaly,
            medically_important: s.medically_important,
        }),
        outcome: outcome_value(report.outcome),
        investigator_causality: causality_value(report.investigator_causality),
        narrative: report.narrative,
        site_aware_at: Some(proto_time(report.site_aware_at)),
    }
}

fn classification(value: Classification) -> i32 {
    let value = match value {
        Classification::NotPotentialSusar => pb::Classification::NotPotentialSusar,
        Classification::Pending => pb::Classification::Pending,
        Classification::Assessed => pb::Classification::Assessed,
        Classification::Susar => pb::Classification::Susar,
        Classification::NotReportable => pb::Classification::NotReportable,
    };
    value as i32
}

fn kind(kind: ObligationKind) -> i32 {
    let kind = match kind {
        ObligationKind::Initial7Day => pb::ObligationKind::Initial7Day,
        ObligationKind::Initial15Day => pb::ObligationKind::Initial15Day,
        ObligationKind::FollowUp8Day => pb::ObligationKind::FollowUp8Day,
    };
    kind as i32
}

pub fn obligation(o: Obligation) -> pb::Obligation {
    pb::Obligation {
        obligation_id: o.obligation_id,
        case_id: o.case_id,
        trial_id: o.trial_id,
        kind: kind(o.kind),
        due_at: Some(proto_time(o.due_at)),
        due_date: o.due_date.to_string(),
        overdue: o.overdue,
        submitted_at: o.submitted_at.map(proto_time),
        recipient: o.recipient.unwrap_or_default(),
        acknowledgement_id: o.acknowledgement_id.unwrap_or_default(),
    }
}

pub fn case(view: CaseView) -> pb::CaseView {
    pb::CaseView {
        case_id: view.case_id,
        version: view.version,
        report: Some(report(view.report)),
        received_at: Some(proto_time(view.received_at)),
        sponsor_causality: causality_value(view.sponsor_causality),
        expected: view.expected,
        rsi_version: view.rsi_version,
        classification: classification(view.classification),
        not_reportable_reason: view.not_reportable_reason.unwrap_or_default(),
        late: view.late,
        day_zero: view.day_zero.map(proto_time),
        obligations: view.obligations.into_iter().map(obligation).collect(),
    }
}

pub fn cases(views: Vec<CaseView>) -> pb::ListCasesResponse {
    pb::ListCasesResponse {
        cases: views.into_iter().map(case).collect(),
    }
}

pub fn obligations(list: Vec<Obligation>) -> pb::ListObligationsResponse {
    pb::ListObligationsResponse {
        obligations: list.into_iter().map(obligation).collect(),
    }
}

pub fn submission(body: pb::RecordSubmissionRequest) -> SubmissionInput {
    SubmissionInput {
        obligation_id: body.obligation_id,
        recipient: body.recipient,
        submitted_at: timestamp(body.submitted_at),
        acknowledgement_id: body.acknowledgement_id,
    }
}

fn criteria(list: Vec<crate::service::CriterionCount>) -> Vec<pb::CriterionCount> {
    list.into_iter()
        .map(|c| pb::CriterionCount {
            criterion: c.criterion,
            cases: c.cases,
        })
        .collect()
}

pub fn summary(summary: SafetySummary) -> pb::SafetySummary {
    pb::SafetySummary {
        trial_id: summary.trial_id,
        serious_cases: summary.serious_cases,
        by_criterion: criteria(summary.by_criterion),
        by_arm: summary
            .by_arm
            .into_iter()
            .map(|a| pb::ArmSummary {
                arm_id: a.arm_id,
                arm_label: a.arm_label,
                serious_cases: a.serious_cases,
                by_criterion: criteria(a.by_criterion),
            })
            .collect(),
        arm_unknown: summary.arm_unknown,
    }
}

pub fn exported(export: ExportedCase) -> pb::ExportCaseResponse {
    pb::ExportCaseResponse {
        xml: export.xml,
        message_id: export.message_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_and_unspecified_is_none() {
        assert_eq!(causality(0), None);
        assert_eq!(causality(99), None);
        for value in [Causality::Related, Causality::NotRelated] {
            assert_eq!(causality(causality_value(Some(value))), Some(value));
        }
        assert_eq!(outcome(0), None);
        for value in [
            Outcome::Recovered,
            Outcome::Recovering,
            Outcome::NotRecovered,
            Outcome::RecoveredWithSequelae,
            Outcome::Fatal,
            Outcome::Unknown,
        ] {
            assert_eq!(outcome(outcome_value(value)), Some(value));
        }
        assert_eq!(report_input(None), CaseReportInput::default());
    }
}
