//! Reading allocations and status, and the two corrections that never
//! touch an arm: stratum correction and randomised-in-error.

use std::collections::BTreeMap;

use equipoise_common::auth::Caller;
use serde_json::json;

use super::access::{Operation, authorise, sees_all_sites, sees_design};
use super::{RandomisationService, audit_entry, check_identifier};
use crate::error::RandomisationError;
use crate::store::{AllocationQuery, AllocationRecord, Counts, TrialState};
use equipoise_trial::{CovariateInput, MethodSpec};

pub const MAX_PAGE_SIZE: u32 = 500;
const DEFAULT_PAGE_SIZE: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllocationFilter {
    pub trial_id: String,
    pub site_id: Option<String>,
    pub stratum: Option<String>,
}

/// One page of `ListAllocations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationPage {
    pub allocations: Vec<AllocationRecord>,
    /// Opaque; empty at the end. Only the caller who listed, with the same
    /// filter, can use it.
    pub next_page_token: String,
}

/// One page read after a sequence number, for the server's own paging
/// (`StreamAllocations`); the sequence never leaves the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequencePage {
    pub allocations: Vec<AllocationRecord>,
    /// Sequence after which the next page starts; `None` at the end.
    pub next_after: Option<i64>,
}

/// What a page token is bound to: who listed, and with which filter.
fn page_binding(caller: &Caller, filter: &AllocationFilter) -> String {
    format!(
        "{}\n{}\n{}\n{}",
        caller.subject,
        filter.trial_id,
        filter.site_id.as_deref().unwrap_or(""),
        filter.stratum.as_deref().unwrap_or("")
    )
}

/// Counts by site and stratum, never by arm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusView {
    pub trial_id: String,
    pub state: TrialState,
    pub version: u32,
    pub randomised: u32,
    pub randomised_in_error: u32,
    pub total_cap: Option<u32>,
    /// (site, randomised, cap).
    pub sites: Vec<(String, u32, Option<u32>)>,
    /// (stratum, randomised, cap).
    pub strata: Vec<(String, u32, Option<u32>)>,
    /// (stratum, remaining) for uploaded lists at or below their warning level.
    pub list_warnings: Vec<(String, u32)>,
}

impl RandomisationService {
    /// A site user asking for another site's subject gets the same NOT_FOUND
    /// as for a subject that does not exist.
    pub async fn get_allocation(
        &self,
        caller: &Caller,
        trial_id: &str,
        subject_id: &str,
    ) -> Result<AllocationRecord, RandomisationError> {
        authorise(caller, Operation::ReadAllocations, Some(trial_id))?;
        self.visible_allocation(caller, trial_id, subject_id).await
    }

    async fn visible_allocation(
        &self,
        caller: &Caller,
        trial_id: &str,
        subject_id: &str,
    ) -> Result<AllocationRecord, RandomisationError> {
        check_identifier("subject_id", subject_id)?;
        let not_found =
            || RandomisationError::NotFound(format!("subject {subject_id} in trial {trial_id}"));
        let allocation = self
            .store
            .allocation(trial_id, subject_id)
            .await?
            .ok_or_else(not_found)?;
        if sees_all_sites(caller) || caller.may_access_site(&allocation.site_id) {
            Ok(allocation)
        } else {
            Err(not_found())
        }
    }

    /// A page of the caller's visible allocations. Page tokens are sealed
    /// (see [`crate::seal::Sealer::seal_cursor`]): a forged, altered or
    /// borrowed token is INVALID_ARGUMENT.
    pub async fn list_allocations(
        &self,
        caller: &Caller,
        filter: &AllocationFilter,
        page_token: &str,
        page_size: u32,
    ) -> Result<AllocationPage, RandomisationError> {
        let binding = page_binding(caller, filter);
        let after = self.open_page_token(&binding, page_token)?;
        let page = self
            .allocations_after(caller, filter, after, page_size)
            .await?;
        let next_page_token = match page.next_after {
            Some(after) => self.seal_page_token(&binding, after)?,
            None => String::new(),
        };
        Ok(AllocationPage {
            allocations: page.allocations,
            next_page_token,
        })
    }

    fn open_page_token(&self, binding: &str, token: &str) -> Result<i64, RandomisationError> {
        if token.is_empty() {
            return Ok(0);
        }
        hex::decode(token)
            .ok()
            .and_then(|sealed| self.sealer.open_cursor(binding, &sealed))
            .ok_or_else(|| {
                RandomisationError::invalid(
                    "page_token",
                    "is not a token this service issued to you for this listing",
                )
            })
    }

    fn seal_page_token(&self, binding: &str, after: i64) -> Result<String, RandomisationError> {
        self.sealer
            .seal_cursor(binding, after)
            .map(hex::encode)
            .map_err(|e| RandomisationError::Internal(e.to_string()))
    }

    /// The caller's visible allocations after `after_sequence`.
    pub async fn allocations_after(
        &self,
        caller: &Caller,
        filter: &AllocationFilter,
        after_sequence: i64,
        page_size: u32,
    ) -> Result<SequencePage, RandomisationError> {
        authorise(caller, Operation::ReadAllocations, Some(&filter.trial_id))?;
        if page_size > MAX_PAGE_SIZE {
            return Err(RandomisationError::invalid(
                "page_size",
                format!("at most {MAX_PAGE_SIZE}"),
            ));
        }
        self.load_trial(&filter.trial_id).await?;
        let limit = if page_size == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            page_size
        };
        let query = AllocationQuery {
            trial_id: filter.trial_id.clone(),
            sites: visible_sites(caller, filter.site_id.as_deref()),
            stratum: filter.stratum.clone(),
            after_sequence,
            limit: limit + 1,
        };
        let mut allocations = self.store.list_allocations(&query).await?;
        let more = allocations.len() > limit as usize;
        allocations.truncate(limit as usize);
        let next_after = if more {
            allocations.last().map(|a| a.sequence)
        } else {
            None
        };
        Ok(SequencePage {
            allocations,
            next_after,
        })
    }

    pub async fn trial_status(
        &self,
        caller: &Caller,
        trial_id: &str,
    ) -> Result<StatusView, RandomisationError> {
        authorise(caller, Operation::TrialStatus, Some(trial_id))?;
        let trial = self.load_trial(trial_id).await?;
        let counts = self.store.counts(trial_id).await?;
        let definition = &trial.definition;
        let all_sites = sees_all_sites(caller);
        let sites = definition
            .sites
            .iter()
            .filter(|s| all_sites || caller.may_access_site(&s.id))
            .map(|s| (s.id.clone(), count(&counts.by_site, &s.id), s.cap))
            .collect::<Vec<_>>();
        // Strata cut across sites, so only whole-trial viewers see them.
        let strata = if all_sites {
            definition
                .all_strata()
                .iter()
                .map(|levels| definition.stratum_key(levels))
                .map(|key| {
                    (
                        key.clone(),
                        count(&counts.by_stratum, &key),
                        definition.stratum_cap(),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        let list_warnings = if sees_design(caller) {
            self.list_warnings(trial_id, &trial.definition.method, &counts)
                .await?
        } else {
            Vec::new()
        };
        let randomised = if all_sites {
            counts.total
        } else {
            sites.iter().map(|(_, n, _)| n).sum()
        };
        Ok(StatusView {
            trial_id: trial_id.to_owned(),
            state: trial.record.state,
            version: trial.record.version,
            randomised,
            randomised_in_error: if all_sites { counts.in_error } else { 0 },
            total_cap: definition.caps.total,
            sites,
            strata,
            list_warnings,
        })
    }

    async fn list_warnings(
        &self,
        trial_id: &str,
        method: &MethodSpec,
        counts: &Counts,
    ) -> Result<Vec<(String, u32)>, RandomisationError> {
        let MethodSpec::UploadedList { warn_remaining } = method else {
            return Ok(Vec::new());
        };
        let lengths = self.store.list_lengths(trial_id).await?;
        Ok(lengths
            .into_iter()
            .map(|(stratum, length)| {
                let used = count(&counts.by_stratum, &stratum);
                (stratum, length.saturating_sub(used))
            })
            .filter(|(_, remaining)| remaining <= warn_remaining)
            .collect())
    }

    /// Records the stratum the subject should have been in, derived from the
    /// corrected covariates. "Randomised as" and the arm stay as they were.
    pub async fn correct_stratum(
        &self,
        caller: &Caller,
        trial_id: &str,
        subject_id: &str,
        corrected_covariates: &BTreeMap<String, CovariateInput>,
        reason: &str,
    ) -> Result<AllocationRecord, RandomisationError> {
        authorise(caller, Operation::CorrectStratum, Some(trial_id))?;
        require_reason(reason)?;
        let trial = self.load_trial(trial_id).await?;
        let existing = self
            .visible_allocation(caller, trial_id, subject_id)
            .await?;
        let values = trial
            .definition
            .check_covariates(corrected_covariates)
            .map_err(|problems| {
                RandomisationError::InvalidArgument(rename_covariate_paths(problems))
            })?;
        let levels = trial
            .definition
            .classify(&existing.site_id, &values)
            .map_err(|p| RandomisationError::InvalidArgument(rename_covariate_paths(vec![p])))?;
        let corrected = trial.definition.stratum_key(&levels);
        let details = json!({ "randomised_as": existing.stratum, "corrected_stratum": corrected, "reason": reason });
        let audit = audit_entry(
            caller,
            "allocation.stratum_corrected",
            format!("allocation/{trial_id}/{subject_id}"),
            details,
        );
        Ok(self
            .store
            .correct_stratum(trial_id, subject_id, &corrected, reason, audit)
            .await?)
    }

    pub async fn mark_randomised_in_error(
        &self,
        caller: &Caller,
        trial_id: &str,
        subject_id: &str,
        reason: &str,
    ) -> Result<AllocationRecord, RandomisationError> {
        authorise(caller, Operation::MarkRandomisedInError, Some(trial_id))?;
        require_reason(reason)?;
        self.visible_allocation(caller, trial_id, subject_id)
            .await?;
        let audit = audit_entry(
            caller,
            "allocation.randomised_in_error",
            format!("allocation/{trial_id}/{subject_id}"),
            json!({ "reason": reason }),
        );
        Ok(self
            .store
            .mark_in_error(trial_id, subject_id, reason, audit)
            .await?)
    }
}

fn count(counts: &BTreeMap<String, u32>, key: &str) -> u32 {
    counts.get(key).copied().unwrap_or(0)
}

/// Longest correction reason, in characters.
pub const MAX_REASON_CHARS: usize = 2_000;

/// A reason is written, bounded, and storable in both stores (PostgreSQL
/// text cannot hold NUL, SQLite can: refusing it keeps them alike).
fn require_reason(reason: &str) -> Result<(), RandomisationError> {
    if reason.trim().is_empty() {
        Err(RandomisationError::invalid("reason", "is required"))
    } else if reason.chars().count() > MAX_REASON_CHARS {
        Err(RandomisationError::invalid(
            "reason",
            format!("is longer than {MAX_REASON_CHARS} characters"),
        ))
    } else if reason.contains('\0') {
        Err(RandomisationError::invalid(
            "reason",
            "contains a NUL character",
        ))
    } else {
        Ok(())
    }
}

fn rename_covariate_paths(
    problems: Vec<equipoise_trial::Problem>,
) -> Vec<equipoise_trial::Problem> {
    problems
        .into_iter()
        .map(|mut p| {
            p.path = p.path.replacen("covariates.", "corrected_covariates.", 1);
            p
        })
        .collect()
}

/// Site users see their own sites; a filter narrows further.
fn visible_sites(caller: &Caller, requested: Option<&str>) -> Option<Vec<String>> {
    let own: Option<Vec<String>> =
        (!sees_all_sites(caller)).then(|| caller.sites.iter().cloned().collect());
    match (own, requested) {
        (None, None) => None,
        (None, Some(site)) => Some(vec![site.to_owned()]),
        (Some(own), None) => Some(own),
        (Some(own), Some(site)) => Some(own.into_iter().filter(|s| s == site).collect()),
    }
}
