//! Trial lifecycle: draft → active → closed, and amendments of a frozen design.

use std::collections::BTreeSet;

use equipoise_common::auth::Caller;
use equipoise_common::time::now_rfc3339;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::access::{Operation, authorise, sees_design, sees_redacted_design};
use super::concealed;
use super::{RandomisationService, audit_entry, parse_submitted_definition};
use crate::error::RandomisationError;
use crate::store::{TrialRecord, TrialState, numbered_list};
use equipoise_stream::{ALGORITHM_VERSION, MasterSeed};
use equipoise_trial::{FactorSource, MethodSpec, Problem, TrialDefinition};

/// A trial as a caller may see it. `definition_yaml` is whole for the
/// statistician, redacted for blinded sponsor roles, and empty for the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialView {
    pub record: TrialRecord,
    pub title: String,
    pub method: &'static str,
    pub site_ids: Vec<String>,
    pub definition_yaml: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListUpload {
    pub strata: u32,
    pub entries: u32,
    pub list_sha256: String,
}

impl RandomisationService {
    pub async fn register_trial(
        &self,
        caller: &Caller,
        yaml: &str,
    ) -> Result<TrialView, RandomisationError> {
        authorise(caller, Operation::RegisterTrial, None)?;
        let definition = parse_submitted_definition(yaml)?;
        authorise(caller, Operation::RegisterTrial, Some(&definition.id))?;
        let record = TrialRecord {
            trial_id: definition.id.clone(),
            version: definition.version,
            state: TrialState::Draft,
            definition_yaml: yaml.to_owned(),
            definition_sha256: definition.canonical_sha256(),
            algorithm_version: None,
            sealed_seed: None,
            registered_at: now_rfc3339(),
            activated_at: None,
            closed_at: None,
        };
        let details =
            json!({ "version": record.version, "definition_sha256": record.definition_sha256 });
        let audit = audit_entry(
            caller,
            "trial.registered",
            format!("trial/{}", record.trial_id),
            details,
        );
        self.store.register_draft(&record, audit).await?;
        tracing::info!(trial = %record.trial_id, version = record.version, "trial registered as draft");
        self.view(caller, &record.trial_id).await
    }

    pub async fn upload_allocation_list(
        &self,
        caller: &Caller,
        trial_id: &str,
        csv: &str,
    ) -> Result<ListUpload, RandomisationError> {
        authorise(caller, Operation::UploadAllocationList, Some(trial_id))?;
        let trial = self.load_trial(trial_id).await?;
        if !matches!(trial.definition.method, MethodSpec::UploadedList { .. }) {
            return Err(RandomisationError::FailedPrecondition(format!(
                "trial {trial_id} uses {}, not an uploaded list",
                trial.definition.method.kind()
            )));
        }
        let entries = parse_list_csv(&trial.definition, csv)?;
        let list_sha256 = hex::encode(Sha256::digest(csv.as_bytes()));
        let strata = entries
            .iter()
            .map(|(s, _)| s.as_str())
            .collect::<BTreeSet<_>>()
            .len() as u32;
        // The chain gets the keyed digest activation will chain too: a plain
        // hash of a short list could be matched by a blinded reader.
        let list_digest = self.sealer.list_digest(trial_id, &numbered_list(&entries));
        let details =
            json!({ "list_digest": list_digest, "entries": entries.len(), "strata": strata });
        let audit = audit_entry(
            caller,
            "trial.list_uploaded",
            format!("trial/{trial_id}"),
            details,
        );
        self.store
            .put_allocation_list(trial_id, &entries, audit)
            .await?;
        Ok(ListUpload {
            strata,
            entries: entries.len() as u32,
            list_sha256,
        })
    }

    /// Freezes the design, records its hash and seals a fresh master seed.
    pub async fn activate_trial(
        &self,
        caller: &Caller,
        trial_id: &str,
        expected_sha256: &str,
    ) -> Result<TrialView, RandomisationError> {
        authorise(caller, Operation::ActivateTrial, Some(trial_id))?;
        let trial = self.load_trial(trial_id).await?;
        let real = &trial.record.definition_sha256;
        // A trial administrator reviewed the redacted design, and confirms
        // the keyed hash it was shown.
        let expected = if expected_sha256.is_empty()
            || expected_sha256 == self.sealer.blinded_definition_hash(real)
        {
            real
        } else {
            expected_sha256
        };
        self.check_list_complete(&trial.definition, trial_id)
            .await?;
        let seed =
            MasterSeed::from_os().map_err(|e| RandomisationError::Internal(e.to_string()))?;
        let sealed = self
            .sealer
            .seal(trial_id, &seed)
            .map_err(|e| RandomisationError::Internal(e.to_string()))?;
        let at = now_rfc3339();
        let mut details = json!({
            "version": trial.record.version,
            "definition_sha256": expected,
            "algorithm_version": ALGORITHM_VERSION,
            "seed_commitment": crate::seal::seed_commitment(trial_id, &seed),
        });
        if let Some(digest) = self.list_digest(&trial.definition, trial_id).await? {
            details["list_digest"] = json!(digest);
        }
        let audit = audit_entry(
            caller,
            "trial.activated",
            format!("trial/{trial_id}"),
            details,
        );
        self.store
            .activate(trial_id, expected, &sealed, ALGORITHM_VERSION, &at, audit)
            .await?;
        tracing::info!(trial = %trial_id, "trial activated; design frozen");
        self.view(caller, trial_id).await
    }

    /// The keyed digest of an uploaded list as stored, which activation
    /// chains and `audit verify` recomputes; `None` for other methods.
    async fn list_digest(
        &self,
        definition: &TrialDefinition,
        trial_id: &str,
    ) -> Result<Option<String>, RandomisationError> {
        if !matches!(definition.method, MethodSpec::UploadedList { .. }) {
            return Ok(None);
        }
        let entries = self.store.allocation_list(trial_id).await?;
        Ok(Some(self.sealer.list_digest(trial_id, &entries)))
    }

    async fn check_list_complete(
        &self,
        definition: &TrialDefinition,
        trial_id: &str,
    ) -> Result<(), RandomisationError> {
        if !matches!(definition.method, MethodSpec::UploadedList { .. }) {
            return Ok(());
        }
        let lengths = self.store.list_lengths(trial_id).await?;
        let missing: Vec<String> = definition
            .all_strata()
            .iter()
            .map(|levels| definition.stratum_key(levels))
            .filter(|key| !lengths.contains_key(key))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(RandomisationError::FailedPrecondition(format!(
                "upload an allocation list first; strata without one: {}",
                missing.join(", ")
            )))
        }
    }

    pub async fn amend_trial(
        &self,
        caller: &Caller,
        yaml: &str,
        reason: &str,
    ) -> Result<TrialView, RandomisationError> {
        authorise(caller, Operation::AmendTrial, None)?;
        if reason.trim().is_empty() {
            return Err(RandomisationError::invalid(
                "reason",
                "an amendment needs a reason",
            ));
        }
        let restored = self.with_current_method(caller, yaml).await?;
        let conceal = restored != yaml && !sees_design(caller);
        let amended = parse_submitted_definition(&restored).map_err(|refusal| {
            if conceal {
                concealed::without_method_details(refusal)
            } else {
                refusal
            }
        })?;
        let yaml = &restored;
        authorise(caller, Operation::AmendTrial, Some(&amended.id))?;
        let current = self.load_trial(&amended.id).await?;
        if current.record.state != TrialState::Active {
            return Err(RandomisationError::FailedPrecondition(format!(
                "trial {} is {}; only an active trial is amended (a draft is re-registered)",
                amended.id,
                current.record.state.as_str()
            )));
        }
        check_amendment(&current.definition, &amended)?;
        let sha = amended.canonical_sha256();
        let details = json!({ "reason": reason, "from_version": current.record.version, "to_version": amended.version, "definition_sha256": sha });
        let audit = audit_entry(
            caller,
            "trial.amended",
            format!("trial/{}", amended.id),
            details,
        );
        self.store
            .amend(
                &amended.id,
                current.record.version,
                yaml,
                &sha,
                amended.version,
                audit,
            )
            .await?;
        self.view(caller, &amended.id).await
    }

    pub async fn get_trial(
        &self,
        caller: &Caller,
        trial_id: &str,
    ) -> Result<TrialView, RandomisationError> {
        authorise(caller, Operation::GetTrial, Some(trial_id))?;
        self.view(caller, trial_id).await
    }

    pub async fn close_enrolment(
        &self,
        caller: &Caller,
        trial_id: &str,
        reason: &str,
    ) -> Result<TrialView, RandomisationError> {
        authorise(caller, Operation::CloseEnrolment, Some(trial_id))?;
        if reason.trim().is_empty() {
            return Err(RandomisationError::invalid(
                "reason",
                "closing enrolment needs a reason",
            ));
        }
        self.load_trial(trial_id).await?;
        let audit = audit_entry(
            caller,
            "trial.enrolment_closed",
            format!("trial/{trial_id}"),
            json!({ "reason": reason }),
        );
        self.store.close(trial_id, &now_rfc3339(), audit).await?;
        tracing::info!(trial = %trial_id, "enrolment closed");
        self.view(caller, trial_id).await
    }

    /// A redacted definition sent back as an amendment gets the trial's
    /// current method: blinded administrators never hold it.
    async fn with_current_method(
        &self,
        caller: &Caller,
        yaml: &str,
    ) -> Result<String, RandomisationError> {
        let Some(trial_id) = concealed::marked_trial_id(yaml) else {
            return Ok(yaml.to_owned());
        };
        authorise(caller, Operation::AmendTrial, Some(&trial_id))?;
        let current = self.load_trial(&trial_id).await?;
        concealed::restore(yaml, &current.record.definition_yaml)
    }

    async fn view(&self, caller: &Caller, trial_id: &str) -> Result<TrialView, RandomisationError> {
        let mut trial = self.load_trial(trial_id).await?;
        if !sees_design(caller) {
            trial.record.definition_sha256 = self
                .sealer
                .blinded_definition_hash(&trial.record.definition_sha256);
        }
        let definition_yaml = if sees_design(caller) {
            trial.record.definition_yaml.clone()
        } else if sees_redacted_design(caller) {
            concealed::redact(&trial.record.definition_yaml)?
        } else {
            String::new()
        };
        Ok(TrialView {
            title: trial.definition.title.clone(),
            method: trial.definition.method.kind(),
            site_ids: trial
                .definition
                .sites
                .iter()
                .map(|s| s.id.clone())
                .collect(),
            definition_yaml,
            record: trial.record,
        })
    }
}

/// What may change in an amendment: caps, eligibility, covariate bounds,
/// new sites, safety and unblinding settings. What may not: anything that
/// would change how the next subject is allocated in an existing stratum.
fn check_amendment(
    current: &TrialDefinition,
    amended: &TrialDefinition,
) -> Result<(), RandomisationError> {
    let mut problems = Vec::new();
    let mut refuse = |path: &str, message: &str| {
        problems.push(Problem {
            path: format!("definition_yaml: {path}"),
            message: message.to_owned(),
        })
    };
    if amended.version != current.version + 1 {
        refuse(
            "version",
            &format!("must be {}, the next version", current.version + 1),
        );
    }
    if amended.arms != current.arms {
        refuse("arms", "arms and ratios are frozen after activation");
    }
    if amended.method != current.method {
        refuse("method", "the method is frozen after activation");
    }
    if amended.subject_ids != current.subject_ids {
        refuse(
            "subject_ids",
            "the form of subject ids is frozen after activation",
        );
    }
    if amended.blinding != current.blinding {
        refuse("blinding", "the blinding is frozen after activation");
    }
    if !same_stratification(current, amended) {
        refuse(
            "stratification",
            "stratification is frozen after activation (new sites may be added)",
        );
    }
    if let Some(removed) = current.sites.iter().find(|s| amended.site(&s.id).is_none()) {
        refuse(
            "sites",
            &format!("site {} may not be removed; cap it instead", removed.id),
        );
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RandomisationError::InvalidArgument(problems))
    }
}

/// Same factors and levels, except that the site factor may gain sites.
fn same_stratification(current: &TrialDefinition, amended: &TrialDefinition) -> bool {
    current.stratification.len() == amended.stratification.len()
        && current
            .stratification
            .iter()
            .zip(&amended.stratification)
            .all(|(a, b)| {
                a.id == b.id
                    && a.source == b.source
                    && match a.source {
                        FactorSource::Site => a.levels.iter().all(|l| b.levels.contains(l)),
                        FactorSource::Covariate(_) => a.levels == b.levels,
                    }
            })
}

/// `stratum,arm` rows in allocation order; every stratum must have a list.
fn parse_list_csv(
    definition: &TrialDefinition,
    csv: &str,
) -> Result<Vec<(String, String)>, RandomisationError> {
    let strata: BTreeSet<String> = definition
        .all_strata()
        .iter()
        .map(|l| definition.stratum_key(l))
        .collect();
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(csv.as_bytes());
    let mut problems = Vec::new();
    let headers = reader
        .headers()
        .map(|h| h.iter().map(str::to_owned).collect::<Vec<_>>())
        .unwrap_or_default();
    if headers != ["stratum", "arm"] {
        problems.push(Problem {
            path: "csv line 1".into(),
            message: "the header must be 'stratum,arm'".into(),
        });
    }
    let mut entries = Vec::new();
    for (index, row) in reader.records().enumerate() {
        let path = format!("csv line {}", index + 2);
        let row = match row {
            Ok(row) if row.len() == 2 => row,
            _ => {
                problems.push(Problem {
                    path,
                    message: "expected two fields: stratum,arm".into(),
                });
                continue;
            }
        };
        let (stratum, arm) = (row[0].to_owned(), row[1].to_owned());
        if !strata.contains(&stratum) {
            problems.push(Problem {
                path: path.clone(),
                message: format!("'{stratum}' is not a stratum of this trial"),
            });
        }
        if definition.arm_index(&arm).is_none() {
            problems.push(Problem {
                path,
                message: format!("'{arm}' is not an arm of this trial"),
            });
        }
        entries.push((stratum, arm));
    }
    for stratum in strata
        .iter()
        .filter(|s| !entries.iter().any(|(e, _)| e == *s))
    {
        problems.push(Problem {
            path: "csv".into(),
            message: format!("stratum '{stratum}' has no entries"),
        });
    }
    if problems.is_empty() {
        Ok(entries)
    } else {
        Err(RandomisationError::InvalidArgument(problems))
    }
}
