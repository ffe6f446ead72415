//! SUSAR classification: potential SUSARs, the safety reveal, day 0 and the
//! initial obligations, and the retry of pending classifications.
//!
//! Day 0 is the sponsor's first awareness that the case is a potential
//! SUSAR: the receipt of the version (or the time of the sponsor's
//! assessment) after which it first was one. When a later version makes a
//! SUSAR first reported as neither fatal nor life-threatening one of them,
//! a 7-day obligation is added from that version's receipt; the 15-day
//! obligation is kept (both are owed: the 7-day report of the upgrade does
//! not discharge the 15-day report of the original information).

use equipoise_common::time::format_rfc3339;
use jiff::Timestamp;

use super::model::{CaseReport, Causality};
use super::{BlindingError, Result, SafetyService, parse_time, random_hex16, subject_tag};
use crate::clocks::{Due, ObligationKind};
use crate::error::SafetyError;
use crate::store::{
    AssessmentRow, CaseRecord, NewObligation, Settled, Settlement, StoredClassification, VersionRow,
};

/// Serious, related by either assessor, and unexpected.
pub fn potential_susar(report: &CaseReport, expected: bool, sponsor: Option<Causality>) -> bool {
    report.serious
        && (report.investigator_causality == Some(Causality::Related)
            || sponsor == Some(Causality::Related))
        && !expected
}

/// When the sponsor first knew a case to be a potential SUSAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeline {
    /// Day 0's instant.
    pub aware_at: Timestamp,
    /// Whether the information at `aware_at` was fatal or life-threatening.
    pub fatal_or_life_threatening: bool,
    /// When a later version first made it fatal or life-threatening.
    pub upgraded_at: Option<Timestamp>,
    /// Whether the latest information is a potential SUSAR.
    pub potential_now: bool,
}

pub(super) fn parse_report(row: &VersionRow) -> Result<CaseReport> {
    serde_json::from_str(&row.report_json).map_err(|e| {
        SafetyError::Internal(format!(
            "version {} of case {} does not decode: {e}",
            row.version, row.case_id
        ))
    })
}

enum Event<'a> {
    Version(&'a VersionRow),
    Assessment(&'a AssessmentRow),
}

/// Walks the case's versions and assessments in the order the sponsor
/// received them. `None`: never a potential SUSAR.
pub fn timeline(record: &CaseRecord) -> Result<Option<Timeline>> {
    let mut events: Vec<(Timestamp, u8, Event<'_>)> = Vec::new();
    for row in &record.versions {
        events.push((
            parse_time(&row.received_at, "received_at")?,
            0,
            Event::Version(row),
        ));
    }
    for row in &record.assessments {
        events.push((
            parse_time(&row.at, "assessment time")?,
            1,
            Event::Assessment(row),
        ));
    }
    events.sort_by_key(|(at, order, _)| (*at, *order));
    let mut current: Option<(CaseReport, bool)> = None;
    let mut sponsor: Option<Causality> = None;
    let mut found: Option<Timeline> = None;
    let mut potential_now = false;
    for (at, _, event) in events {
        match event {
            Event::Version(row) => current = Some((parse_report(row)?, row.expected)),
            Event::Assessment(row) => sponsor = Causality::parse(&row.causality),
        }
        let Some((report, expected)) = &current else {
            continue;
        };
        potential_now = potential_susar(report, *expected, sponsor);
        let fatal = report.seriousness.fatal_or_life_threatening();
        match &mut found {
            None if potential_now => {
                found = Some(Timeline {
                    aware_at: at,
                    fatal_or_life_threatening: fatal,
                    upgraded_at: None,
                    potential_now,
                });
            }
            Some(line) if potential_now && fatal && !line.fatal_or_life_threatening => {
                line.upgraded_at.get_or_insert(at);
            }
            _ => {}
        }
    }
    Ok(found.map(|line| Timeline {
        potential_now,
        ..line
    }))
}

pub(super) fn kind_text(kind: ObligationKind) -> &'static str {
    match kind {
        ObligationKind::Initial7Day => "initial_7_day",
        ObligationKind::Initial15Day => "initial_15_day",
        ObligationKind::FollowUp8Day => "follow_up_8_day",
    }
}

pub(super) fn kind_of(text: &str) -> Result<ObligationKind> {
    match text {
        "initial_7_day" => Ok(ObligationKind::Initial7Day),
        "initial_15_day" => Ok(ObligationKind::Initial15Day),
        "follow_up_8_day" => Ok(ObligationKind::FollowUp8Day),
        other => Err(SafetyError::Internal(format!(
            "unknown obligation kind {other}"
        ))),
    }
}

pub(super) fn new_obligation(due: Due) -> Result<NewObligation> {
    Ok(NewObligation {
        obligation_id: format!("OBL-{}", random_hex16()?),
        kind: kind_text(due.kind).into(),
        due_date: due.due_date.to_string(),
        due_at: format_rfc3339(due.due_at),
    })
}

impl SafetyService {
    fn zone(&self, name: &str) -> Result<jiff::tz::TimeZone> {
        (self.rules.sponsor_zone)(name).map_err(|e| {
            SafetyError::Internal(format!("the sponsor time zone {name} is unusable: {e}"))
        })
    }

    /// The initial obligations a case's timeline calls for.
    fn initial_obligations(
        &self,
        record: &CaseRecord,
        line: &Timeline,
    ) -> Result<Vec<NewObligation>> {
        let zone = self.zone(&record.case.sponsor_time_zone)?;
        let mut dues = vec![(self.rules.initial_obligation)(
            line.aware_at,
            line.fatal_or_life_threatening,
            &zone,
        )];
        if let Some(upgraded_at) = line.upgraded_at {
            dues.push((self.rules.initial_obligation)(upgraded_at, true, &zone));
        }
        dues.into_iter().map(new_obligation).collect()
    }

    /// For a write to a settled SUSAR: the obligations its new timeline
    /// calls for (the store creates only kinds the case lacks).
    pub(super) fn obligations_if_susar(&self, after: &CaseRecord) -> Result<Vec<NewObligation>> {
        if after.case.classification != StoredClassification::Susar {
            return Ok(Vec::new());
        }
        match timeline(after)? {
            Some(line) => self.initial_obligations(after, &line),
            None => Ok(Vec::new()),
        }
    }

    /// Classifies after a write; a failure leaves the case as it is, for
    /// the retry task, and is logged, never returned: the write stands.
    pub(super) async fn classify_after_write(&self, case_id: &str) {
        if let Err(error) = self.classify(case_id).await {
            tracing::warn!(case_id, %error, "classification deferred");
        }
    }

    /// Settles a potential SUSAR through a safety reveal, or marks it
    /// pending while the blinding service cannot answer.
    pub async fn classify(&self, case_id: &str) -> Result<()> {
        for _ in 0..3 {
            let Some(record) = self.store.case_record(case_id).await? else {
                return Err(SafetyError::NotFound(format!(
                    "case_id {case_id} not found"
                )));
            };
            let case = &record.case;
            if case.classification.settled() {
                return Ok(());
            }
            let line = timeline(&record)?;
            let Some(line) = line.filter(|l| l.potential_now) else {
                if case.classification == StoredClassification::Pending {
                    let audit = self.own_audit("case.not_potential", format!("case/{case_id}"));
                    self.store.set_pending(case_id, false, audit).await?;
                }
                return Ok(());
            };
            let revealed = self
                .blinding
                .safety_reveal(&case.trial_id, &case.subject_id, case_id)
                .await;
            let settlement = match revealed {
                Ok(arm) if arm.active => Settlement::Susar {
                    day_zero: format_rfc3339(line.aware_at),
                    obligations: self.initial_obligations(&record, &line)?,
                },
                Ok(arm) => Settlement::NotReportable {
                    reason: format!(
                        "the subject received {}, which is not the investigational product",
                        arm.arm_label
                    ),
                },
                Err(error) => {
                    let subject = subject_tag(&case.trial_id, &case.subject_id);
                    match &error {
                        BlindingError::Unavailable(_) => {
                            tracing::warn!(case_id, %subject, %error, "safety reveal deferred");
                        }
                        _ => tracing::error!(case_id, %subject, %error, "safety reveal refused"),
                    }
                    let audit =
                        self.own_audit("case.classification_pending", format!("case/{case_id}"));
                    self.store.set_pending(case_id, true, audit).await?;
                    return Ok(());
                }
            };
            let audit = self.own_audit("case.classified", format!("case/{case_id}"));
            match self
                .store
                .settle(case_id, record.as_of(), settlement, audit)
                .await?
            {
                Settled::Done | Settled::AlreadySettled => return Ok(()),
                Settled::Stale => continue,
            }
        }
        Err(SafetyError::unavailable(format!(
            "case {case_id} kept changing while it was classified; it will be retried"
        )))
    }

    /// Completes pending classifications, oldest first. Returns how many
    /// were tried.
    pub async fn retry_pending(&self, limit: u32) -> Result<usize> {
        let pending = self.store.pending_cases(limit).await?;
        for case_id in &pending {
            if let Err(error) = self.classify(case_id).await {
                tracing::warn!(case_id, %error, "pending classification not completed");
            }
        }
        Ok(pending.len())
    }
}
