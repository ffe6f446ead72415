//! DSMB and pooled summaries, and the E2B(R3) export.

use std::collections::{BTreeMap, BTreeSet};

use equipoise_common::auth::{Caller, Role};
use equipoise_common::bounds::FieldChecks;
use serde_json::json;

use super::access::{self, POOLED_SUMMARY_ROLES};
use super::classify::parse_report;
use super::model::{ArmSummary, CRITERIA, CriterionCount, ExportedCase, SafetySummary};
use super::view::view_of;
use super::{E2B_RECEIVER, Result, SafetyService, parse_time, random_hex16};
use crate::e2b::IcsrInput;
use crate::error::SafetyError;

#[derive(Default)]
struct Counts {
    serious: u32,
    by_criterion: [u32; 6],
}

impl Counts {
    fn add(&mut self, flags: [bool; 6]) {
        self.serious += 1;
        for (count, flag) in self.by_criterion.iter_mut().zip(flags) {
            *count += u32::from(flag);
        }
    }

    fn criteria(&self) -> Vec<CriterionCount> {
        CRITERIA
            .iter()
            .zip(self.by_criterion)
            .map(|(name, cases)| CriterionCount {
                criterion: (*name).into(),
                cases,
            })
            .collect()
    }
}

impl SafetyService {
    /// Serious cases (their latest versions) by seriousness criterion:
    /// by arm too for the DSMB, pooled for the sponsor's blinded roles.
    pub async fn safety_summary(&self, caller: &Caller, trial_id: &str) -> Result<SafetySummary> {
        let dsmb = caller.has_role(&Role::Dsmb);
        if !dsmb {
            access::require_any(caller, &POOLED_SUMMARY_ROLES, "a safety summary")?;
        }
        FieldChecks::new()
            .id("trial_id", trial_id)
            .finish(SafetyError::from_violations)?;
        access::require_trial(caller, trial_id)?;
        let records = self.store.trial_cases(trial_id).await?;
        let mut pooled = Counts::default();
        let mut serious: Vec<(String, [bool; 6])> = Vec::new();
        for record in &records {
            let Some(latest) = record.versions.last() else {
                continue;
            };
            let report = parse_report(latest)?;
            if report.serious {
                let flags = report.seriousness.flags();
                pooled.add(flags);
                serious.push((record.case.subject_id.clone(), flags));
            }
        }
        let mut summary = SafetySummary {
            trial_id: trial_id.to_owned(),
            serious_cases: pooled.serious,
            by_criterion: pooled.criteria(),
            by_arm: Vec::new(),
            arm_unknown: 0,
        };
        if !dsmb {
            return Ok(summary);
        }
        let definition = self.definition(trial_id).await?;
        let subjects: Vec<String> = serious
            .iter()
            .map(|(s, _)| s.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let arms: BTreeMap<String, (String, String)> = if subjects.is_empty() {
            BTreeMap::new()
        } else {
            match self.blinding.arms_for_dsmb(trial_id, &subjects).await {
                Ok(arms) => arms
                    .into_iter()
                    .map(|a| (a.subject_id, (a.arm_id, a.arm_label)))
                    .collect(),
                Err(error) => {
                    tracing::warn!(trial_id, %error, "arms for the DSMB summary unavailable");
                    BTreeMap::new()
                }
            }
        };
        let mut by_arm: BTreeMap<String, (String, Counts)> = definition
            .arms
            .iter()
            .map(|a| (a.id.clone(), (a.label.clone(), Counts::default())))
            .collect();
        for (subject, flags) in &serious {
            match arms.get(subject) {
                Some((arm_id, label)) => by_arm
                    .entry(arm_id.clone())
                    .or_insert_with(|| (label.clone(), Counts::default()))
                    .1
                    .add(*flags),
                None => summary.arm_unknown += 1,
            }
        }
        let order: Vec<String> = definition.arms.iter().map(|a| a.id.clone()).collect();
        let mut listed: Vec<ArmSummary> = by_arm
            .into_iter()
            .map(|(arm_id, (arm_label, counts))| ArmSummary {
                arm_id,
                arm_label,
                serious_cases: counts.serious,
                by_criterion: counts.criteria(),
            })
            .collect();
        listed.sort_by_key(|a| {
            order
                .iter()
                .position(|id| *id == a.arm_id)
                .unwrap_or(usize::MAX)
        });
        summary.by_arm = listed;
        Ok(summary)
    }

    /// One case version as an ICH E2B(R3) ICSR message. safety_officer.
    pub async fn export_case(
        &self,
        caller: &Caller,
        case_id: &str,
        version: u32,
    ) -> Result<ExportedCase> {
        access::require_any(caller, &[Role::SafetyOfficer], "an E2B export")?;
        let record = self
            .readable_case(caller, &access::Scope::AllSites, case_id)
            .await?;
        let view = view_of(&record, version, true, self.now())?;
        let message_id = format!(
            "{}-{}-V{}-{}",
            self.sender_id,
            case_id,
            view.version,
            random_hex16()?
        );
        let report = &view.report;
        let input = IcsrInput {
            message_id: message_id.clone(),
            sender: self.sender_id.clone(),
            receiver: E2B_RECEIVER.into(),
            created_at: self.now(),
            case_id: case_id.to_owned(),
            version: view.version,
            first_received: parse_time(&record.case.first_received_at, "first_received_at")?,
            received: view.received_at,
            trial_id: report.trial_id.clone(),
            site_id: report.site_id.clone(),
            subject_id: report.subject_id.clone(),
            reporter_name: report.reporter.name.clone(),
            reporter_qualification: report.reporter.qualification.clone(),
            suspect_product: report.suspect_product.clone(),
            llt_code: report.event.llt_code.clone(),
            term: report.event.term.clone(),
            meddra_version: report.event.meddra_version.clone(),
            onset: report.onset_date,
            death: report.seriousness.death,
            life_threatening: report.seriousness.life_threatening,
            hospitalisation: report.seriousness.hospitalisation,
            disability: report.seriousness.disability,
            congenital_anomaly: report.seriousness.congenital_anomaly,
            medically_important: report.seriousness.medically_important,
            outcome: report.outcome.e2b_code(),
            investigator_related: report
                .investigator_causality
                .map(|c| c == super::Causality::Related),
            sponsor_related: view
                .sponsor_causality
                .map(|c| c == super::Causality::Related),
            narrative: report.narrative.clone(),
        };
        let xml = (self.rules.icsr_xml)(&input);
        let audit = self.audit(
            caller,
            "case.exported",
            format!("case/{case_id}"),
            json!({ "version": view.version, "message_id": message_id }),
        );
        self.store
            .append_audit(audit)
            .await
            .map_err(SafetyError::from)?;
        Ok(ExportedCase { xml, message_id })
    }
}
