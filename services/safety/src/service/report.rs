//! Reporting: initial cases, follow-ups and the sponsor's causality.

use std::time::Instant;

use equipoise_common::auth::{Caller, Role};
use equipoise_common::bounds::FieldChecks;
use equipoise_common::telemetry::metrics;
use equipoise_common::time::format_rfc3339;
use equipoise_trial::TrialDefinition;
use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use tracing::Instrument;

use super::access::{self, Scope};
use super::model::{CaseReport, CaseReportInput, CaseView, Causality, CodedEvent, Reporter};
use super::{Result, SafetyService, random_hex16, subject_tag};
use crate::error::SafetyError;
use crate::store::{AssessmentRow, CaseRow, StoreError, StoredClassification, VersionRow};

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_TERM_CHARS: usize = 250;
pub const MAX_VERSION_CHARS: usize = 16;
pub const MAX_NARRATIVE_CHARS: usize = 20_000;
pub const MAX_COMMENT_CHARS: usize = 2_000;

/// Whether `term` is expected against the reference safety information
/// in force at `onset`, and that RSI's version.
pub fn expectedness(definition: &TrialDefinition, onset: Date, term: &str) -> (bool, String) {
    // The reference safety information in force on the onset date.
    definition.safety.expectedness(onset, term)
}

/// Checks a report as received, naming every wrong field.
pub fn validate(input: CaseReportInput, now: Timestamp) -> Result<CaseReport> {
    let mut check = FieldChecks::new();
    check.id("report.trial_id", &input.trial_id);
    check.id("report.site_id", &input.site_id);
    check.id("report.subject_id", &input.subject_id);
    let reporter = input.reporter.unwrap_or(Reporter {
        name: String::new(),
        qualification: String::new(),
    });
    check.text("report.reporter.name", &reporter.name, true, MAX_NAME_CHARS);
    check.text(
        "report.reporter.qualification",
        &reporter.qualification,
        false,
        MAX_NAME_CHARS,
    );
    check.text(
        "report.suspect_product",
        &input.suspect_product,
        true,
        MAX_NAME_CHARS,
    );
    let event = input.event.unwrap_or(CodedEvent {
        llt_code: String::new(),
        term: String::new(),
        meddra_version: String::new(),
    });
    if event.llt_code.len() != 8 || !event.llt_code.bytes().all(|b| b.is_ascii_digit()) {
        check.fail("report.event.llt_code", "must be exactly 8 digits");
    }
    check.text("report.event.term", &event.term, true, MAX_TERM_CHARS);
    check.text(
        "report.event.meddra_version",
        &event.meddra_version,
        true,
        MAX_VERSION_CHARS,
    );
    check.text(
        "report.narrative",
        &input.narrative,
        false,
        MAX_NARRATIVE_CHARS,
    );
    let seriousness = input.seriousness.unwrap_or_default();
    if input.serious && !seriousness.any() {
        check.fail(
            "report.seriousness",
            "a serious case needs at least one seriousness criterion",
        );
    }
    if !input.serious && seriousness.any() {
        check.fail(
            "report.serious",
            "a case with a seriousness criterion must be marked serious",
        );
    }
    if input.outcome.is_none() {
        check.fail("report.outcome", "is required");
    }
    let onset: Option<Date> = match input.onset_date.parse::<Date>() {
        Ok(date) if input.onset_date.len() == 10 => Some(date),
        _ => {
            check.fail("report.onset_date", "must be a date, YYYY-MM-DD");
            None
        }
    };
    match input.site_aware_at {
        None => check.fail("report.site_aware_at", "is required"),
        Some(aware) if aware > now => check.fail("report.site_aware_at", "is in the future"),
        Some(aware) => {
            // The latest calendar date anywhere on earth (UTC+14) at the
            // moment of awareness: an onset after it is after awareness.
            let latest = aware
                .checked_add(SignedDuration::from_hours(14))
                .map(|t| t.to_zoned(jiff::tz::TimeZone::UTC).date());
            if let (Some(onset), Ok(latest)) = (onset, latest)
                && onset > latest
            {
                check.fail(
                    "report.onset_date",
                    "is after the site became aware of the event",
                );
            }
        }
    }
    check.finish(SafetyError::from_violations)?;
    let (Some(onset_date), Some(outcome), Some(site_aware_at)) =
        (onset, input.outcome, input.site_aware_at)
    else {
        return Err(SafetyError::Internal(
            "validation let a field through".into(),
        ));
    };
    Ok(CaseReport {
        trial_id: input.trial_id,
        site_id: input.site_id,
        subject_id: input.subject_id,
        reporter,
        suspect_product: input.suspect_product,
        event,
        onset_date,
        serious: input.serious,
        seriousness,
        outcome,
        investigator_causality: input.investigator_causality,
        narrative: input.narrative,
        site_aware_at,
    })
}

impl SafetyService {
    /// An initial report: version 1 of a new case.
    pub async fn report_case(&self, caller: &Caller, input: CaseReportInput) -> Result<CaseView> {
        let scope = access::reporter_scope(caller)?;
        access::require_trial(caller, &input.trial_id)?;
        if !access::covers(caller, &scope, &input.site_id) {
            return Err(SafetyError::PermissionDenied(format!(
                "site_id {} is not one of the caller's sites",
                input.site_id
            )));
        }
        let now = self.now();
        let report = validate(input, now)?;
        let definition = self.definition(&report.trial_id).await?;
        if definition.site(&report.site_id).is_none() {
            return Err(SafetyError::invalid(
                "report.site_id",
                format!("is not a site of trial {}", report.trial_id),
            ));
        }
        self.require_allocation_at_site(&report.trial_id, &report.site_id, &report.subject_id)
            .await?;
        let case_id = format!("EQP-{}-{}", report.trial_id, random_hex16()?);
        let received_at = format_rfc3339(now);
        let late = (self.rules.is_late)(report.site_aware_at, now);
        let (expected, rsi_version) =
            expectedness(&definition, report.onset_date, &report.event.term);
        let report_json = serde_json::to_string(&report)
            .map_err(|e| SafetyError::Internal(format!("a report does not serialise: {e}")))?;
        let case = CaseRow {
            case_id: case_id.clone(),
            trial_id: report.trial_id.clone(),
            site_id: report.site_id.clone(),
            subject_id: report.subject_id.clone(),
            first_received_at: received_at.clone(),
            day_zero: None,
            classification: StoredClassification::NotPotential,
            not_reportable_reason: None,
            sponsor_time_zone: definition.sponsor_time_zone.clone(),
        };
        let first = VersionRow {
            case_id: case_id.clone(),
            version: 1,
            report_json,
            received_at,
            late,
            expected,
            rsi_version,
        };
        let audit = self.audit(
            caller,
            "case.reported",
            format!("case/{case_id}"),
            json!({
                "trial_id": report.trial_id,
                "site_id": report.site_id,
                "subject_id": report.subject_id,
                "version": 1,
                "serious": report.serious,
                "expected": expected,
                "late": late,
            }),
        );
        let committing = Instant::now();
        let created = self
            .store
            .create_case(case, first, audit)
            .instrument(tracing::info_span!("store.create_case"))
            .await;
        metrics::record_store_commit("safety", "create_case", committing.elapsed());
        created?;
        tracing::info!(
            case_id,
            subject = %subject_tag(&report.trial_id, &report.subject_id),
            "SAE case reported"
        );
        self.classify_after_write(&case_id).await;
        self.case_view(caller, &case_id, 0).await
    }

    /// A follow-up: version n+1 of the case.
    pub async fn report_follow_up(
        &self,
        caller: &Caller,
        case_id: &str,
        input: CaseReportInput,
    ) -> Result<CaseView> {
        let scope = access::reporter_scope(caller)?;
        let record = self.readable_case(caller, &scope, case_id).await?;
        let case = &record.case;
        for (path, given, stored) in [
            ("report.trial_id", &input.trial_id, &case.trial_id),
            ("report.site_id", &input.site_id, &case.site_id),
            ("report.subject_id", &input.subject_id, &case.subject_id),
        ] {
            if given != stored {
                return Err(SafetyError::invalid(
                    path,
                    format!("must be the case's, {stored}"),
                ));
            }
        }
        let now = self.now();
        let report = validate(input, now)?;
        let definition = self.definition(&report.trial_id).await?;
        let version = record.latest_version() + 1;
        let received_at = format_rfc3339(now);
        let late = (self.rules.is_late)(report.site_aware_at, now);
        let (expected, rsi_version) =
            expectedness(&definition, report.onset_date, &report.event.term);
        let report_json = serde_json::to_string(&report)
            .map_err(|e| SafetyError::Internal(format!("a report does not serialise: {e}")))?;
        let row = VersionRow {
            case_id: case_id.to_owned(),
            version,
            report_json,
            received_at,
            late,
            expected,
            rsi_version,
        };
        let mut after = record.clone();
        after.versions.push(row.clone());
        let obligations = self.obligations_if_susar(&after)?;
        let audit = self.audit(
            caller,
            "case.follow_up",
            format!("case/{case_id}"),
            json!({
                "version": version,
                "serious": report.serious,
                "expected": expected,
                "late": late,
            }),
        );
        self.store
            .add_version(row, obligations, audit)
            .await
            .map_err(|error| match error {
                // Another follow-up took version n+1 since the case was read.
                StoreError::Conflict(message) => SafetyError::Aborted(message),
                other => other.into(),
            })?;
        self.classify_after_write(case_id).await;
        self.case_view(caller, case_id, 0).await
    }

    /// The sponsor's causality assessment of the latest version.
    pub async fn assess_causality(
        &self,
        caller: &Caller,
        case_id: &str,
        version: u32,
        causality: Option<Causality>,
        comment: &str,
    ) -> Result<CaseView> {
        access::require_any(
            caller,
            &[Role::MedicalMonitor, Role::SafetyOfficer],
            "the sponsor's causality assessment",
        )?;
        let Some(causality) = causality else {
            return Err(SafetyError::invalid("causality", "is required"));
        };
        let mut check = FieldChecks::new();
        check
            .text("comment", comment, false, MAX_COMMENT_CHARS)
            .id("case_id", case_id);
        check.finish(SafetyError::from_violations)?;
        let record = self
            .readable_case(caller, &Scope::AllSites, case_id)
            .await?;
        if version != record.latest_version() {
            return Err(SafetyError::FailedPrecondition(format!(
                "version {version} is not the latest version of case {case_id} ({})",
                record.latest_version()
            )));
        }
        let row = AssessmentRow {
            case_id: case_id.to_owned(),
            version,
            causality: causality.as_str().into(),
            comment: comment.to_owned(),
            by: caller.subject.clone(),
            at: format_rfc3339(self.now()),
        };
        let mut after = record.clone();
        after.assessments.push(row.clone());
        let obligations = self.obligations_if_susar(&after)?;
        let audit = self.audit(
            caller,
            "case.assessed",
            format!("case/{case_id}"),
            json!({ "version": version, "causality": causality.as_str() }),
        );
        self.store.add_assessment(row, obligations, audit).await?;
        self.classify_after_write(case_id).await;
        self.case_view(caller, case_id, 0).await
    }
}
