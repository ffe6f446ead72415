//! Reading cases, masked for blinded roles.

use equipoise_common::auth::Caller;
use equipoise_common::bounds::FieldChecks;
use jiff::Timestamp;

use super::access::{self, Scope};
use super::classify::{kind_of, parse_report};
use super::model::{CaseView, Causality, Classification, Obligation};
use super::{Result, SafetyService, parse_date, parse_time};
use crate::error::SafetyError;
use crate::store::{CaseRecord, ObligationRow, StoredClassification};

pub(super) fn obligation(row: &ObligationRow, now: Timestamp) -> Result<Obligation> {
    let due_at = parse_time(&row.due_at, "due_at")?;
    let submitted_at = row
        .submitted_at
        .as_deref()
        .map(|t| parse_time(t, "submitted_at"))
        .transpose()?;
    Ok(Obligation {
        obligation_id: row.obligation_id.clone(),
        case_id: row.case_id.clone(),
        trial_id: row.trial_id.clone(),
        kind: kind_of(&row.kind)?,
        due_at,
        due_date: parse_date(&row.due_date, "due_date")?,
        overdue: submitted_at.is_none() && now >= due_at,
        submitted_at,
        recipient: row.recipient.clone(),
        acknowledgement_id: row.acknowledgement_id.clone(),
    })
}

/// One version of a case as `caller` may see it. `version` 0: the latest.
pub(super) fn view_of(
    record: &CaseRecord,
    version: u32,
    unblinded: bool,
    now: Timestamp,
) -> Result<CaseView> {
    let version = if version == 0 {
        record.latest_version()
    } else {
        version
    };
    let Some(row) = record.versions.iter().find(|v| v.version == version) else {
        return Err(SafetyError::NotFound(format!(
            "case {} has no version {version}",
            record.case.case_id
        )));
    };
    let sponsor_causality = record
        .assessments
        .iter()
        .rfind(|a| a.version <= version)
        .and_then(|a| Causality::parse(&a.causality));
    let case = &record.case;
    let classification = match (case.classification, unblinded) {
        (StoredClassification::NotPotential, _) => Classification::NotPotentialSusar,
        (StoredClassification::Pending, _) => Classification::Pending,
        (StoredClassification::Susar, true) => Classification::Susar,
        (StoredClassification::NotReportable, true) => Classification::NotReportable,
        (StoredClassification::Susar | StoredClassification::NotReportable, false) => {
            Classification::Assessed
        }
    };
    let (not_reportable_reason, day_zero, obligations) = if unblinded {
        let mut obligations = record
            .obligations
            .iter()
            .map(|o| obligation(o, now))
            .collect::<Result<Vec<_>>>()?;
        obligations.sort_by(|a, b| (a.due_at, &a.obligation_id).cmp(&(b.due_at, &b.obligation_id)));
        (
            case.not_reportable_reason.clone(),
            case.day_zero
                .as_deref()
                .map(|t| parse_time(t, "day_zero"))
                .transpose()?,
            obligations,
        )
    } else {
        (None, None, Vec::new())
    };
    Ok(CaseView {
        case_id: case.case_id.clone(),
        version,
        report: parse_report(row)?,
        received_at: parse_time(&row.received_at, "received_at")?,
        sponsor_causality,
        expected: row.expected,
        rsi_version: row.rsi_version.clone(),
        classification,
        not_reportable_reason,
        late: row.late,
        day_zero,
        obligations,
    })
}

impl SafetyService {
    /// The case, if the caller may see it; otherwise the same NOT_FOUND as
    /// for a case that does not exist, so another site's cases stay unknown.
    pub(super) async fn readable_case(
        &self,
        caller: &Caller,
        scope: &Scope,
        case_id: &str,
    ) -> Result<CaseRecord> {
        FieldChecks::new()
            .id("case_id", case_id)
            .finish(SafetyError::from_violations)?;
        let not_found = || SafetyError::NotFound(format!("case_id {case_id} not found"));
        let record = self
            .store
            .case_record(case_id)
            .await?
            .ok_or_else(not_found)?;
        if !caller.may_access_trial(&record.case.trial_id)
            || !access::covers(caller, scope, &record.case.site_id)
        {
            return Err(not_found());
        }
        Ok(record)
    }

    pub(super) async fn case_view(
        &self,
        caller: &Caller,
        case_id: &str,
        version: u32,
    ) -> Result<CaseView> {
        let record = self
            .store
            .case_record(case_id)
            .await?
            .ok_or_else(|| SafetyError::NotFound(format!("case_id {case_id} not found")))?;
        view_of(&record, version, access::sees_outcome(caller), self.now())
    }

    /// One version of a case (0: the latest).
    pub async fn get_case(&self, caller: &Caller, case_id: &str, version: u32) -> Result<CaseView> {
        let scope = access::reader_scope(caller)?;
        let record = self.readable_case(caller, &scope, case_id).await?;
        view_of(&record, version, access::sees_outcome(caller), self.now())
    }

    /// The latest version of each case of the trial the caller may see.
    pub async fn list_cases(&self, caller: &Caller, trial_id: &str) -> Result<Vec<CaseView>> {
        let scope = access::reader_scope(caller)?;
        FieldChecks::new()
            .id("trial_id", trial_id)
            .finish(SafetyError::from_violations)?;
        access::require_trial(caller, trial_id)?;
        let now = self.now();
        let unblinded = access::sees_outcome(caller);
        self.store
            .trial_cases(trial_id)
            .await?
            .iter()
            .filter(|r| access::covers(caller, &scope, &r.case.site_id))
            .map(|r| view_of(r, 0, unblinded, now))
            .collect()
    }
}
