//! Commands that work on local files and the local database, with no server.

use std::future::Future;
use std::path::PathBuf;

use equipoise_blinding::store::Store as BlindingStore;
use equipoise_blinding::store::postgres::PostgresStore as BlindingPostgres;
use equipoise_blinding::store::sqlite::SqliteStore as BlindingSqlite;
use equipoise_common::audit::{
    AuditEntry, AuditRecord, SignedHead, check_head, sign_head, verify_chain,
};
use equipoise_common::auth::{Claims, mint_hmac_token};
use equipoise_common::time::now_rfc3339;
use equipoise_randomisation::methods::regenerate_list;
use equipoise_randomisation::store::Store;
use equipoise_randomisation::store::postgres::PostgresStore;
use equipoise_randomisation::store::sqlite::SqliteStore;
use equipoise_safety::store::Store as SafetyStore;
use equipoise_safety::store::postgres::PostgresStore as SafetyPostgres;
use equipoise_safety::store::sqlite::SqliteStore as SafetySqlite;
use equipoise_stream::{ALGORITHM_VERSION, MasterSeed};
use equipoise_trial::{TrialDefinition, parse_definition};

use super::AuditedService;
use crate::CliError;
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub struct MintArgs {
    #[arg(long)]
    pub sub: String,
    #[arg(long, default_value = "")]
    pub name: String,
    /// Repeat for several roles, e.g. --role site_investigator.
    #[arg(long = "role", required = true)]
    pub roles: Vec<String>,
    #[arg(long = "site")]
    pub sites: Vec<String>,
    /// A trial id, or '*' for every trial.
    #[arg(long = "trial")]
    pub trials: Vec<String>,
    #[arg(long, default_value_t = 60)]
    pub ttl_minutes: u64,
}

pub fn mint(settings: &Settings, args: &MintArgs) -> Result<String, CliError> {
    // Service tokens are minted by the services themselves, with the service
    // key; the server refuses a user token that claims a service role.
    if let Some(role) = args.roles.iter().find(|r| r.starts_with("service:")) {
        return Err(CliError::Usage(format!(
            "'{role}': user tokens may not carry service roles; services mint their own tokens"
        )));
    }
    let secret = settings.auth.hmac_secret(&settings.data_dir)?;
    let now = jiff::Timestamp::now().as_second();
    let claims = Claims {
        sub: args.sub.clone(),
        name: if args.name.is_empty() {
            args.sub.clone()
        } else {
            args.name.clone()
        },
        roles: args.roles.clone(),
        sites: args.sites.clone(),
        trials: args.trials.clone(),
        auth_time: Some(now),
        exp: (now as u64) + args.ttl_minutes * 60,
        iat: Some(now as u64),
        aud: settings.auth.audience.clone(),
        iss: settings.auth.issuer.clone(),
    };
    // Refuse to mint what the server would refuse.
    equipoise_common::auth::Caller::from_claims(&claims).map_err(CliError::Usage)?;
    Ok(mint_hmac_token(&secret, &claims)?)
}

/// The service's own store: PostgreSQL when configured, else the SQLite file.
async fn open_store(settings: &Settings) -> Result<Box<dyn Store>, CliError> {
    if let Some(url) = &settings.randomisation.database_url {
        let owner_url = settings.randomisation.database_owner_url.as_deref();
        return Ok(Box::new(
            PostgresStore::connect_with_owner(url, owner_url, 1).await?,
        ));
    }
    let path = settings.randomisation.sqlite_path(&settings.data_dir);
    if !path.exists() {
        return Err(CliError::Usage(format!(
            "no randomisation database at {}",
            path.display()
        )));
    }
    Ok(Box::new(SqliteStore::open(&path).await?))
}

/// The blinding service's store: PostgreSQL when configured, else its
/// SQLite file.
async fn open_blinding_store(settings: &Settings) -> Result<Box<dyn BlindingStore>, CliError> {
    if let Some(url) = &settings.blinding.database_url {
        let owner_url = settings.blinding.database_owner_url.as_deref();
        return Ok(Box::new(
            BlindingPostgres::connect_with_owner(url, owner_url, 1).await?,
        ));
    }
    let path = settings.blinding.sqlite_path(&settings.data_dir);
    if !path.exists() {
        return Err(CliError::Usage(format!(
            "no blinding database at {}",
            path.display()
        )));
    }
    Ok(Box::new(BlindingSqlite::open(&path).await?))
}

/// The safety service's store: PostgreSQL when configured, else its SQLite
/// file.
async fn open_safety_store(settings: &Settings) -> Result<Box<dyn SafetyStore>, CliError> {
    if let Some(url) = &settings.safety.database_url {
        let owner_url = settings.safety.database_owner_url.as_deref();
        return Ok(Box::new(
            SafetyPostgres::connect_with_owner(url, owner_url, 1).await?,
        ));
    }
    let path = settings.safety.sqlite_path(&settings.data_dir);
    if !path.exists() {
        return Err(CliError::Usage(format!(
            "no safety database at {}",
            path.display()
        )));
    }
    Ok(Box::new(SafetySqlite::open(&path).await?))
}

/// Records per read, so a long trail is never held twice in memory.
const AUDIT_PAGE: u32 = 10_000;

/// Verifies a service's whole chain and, given one, that it still extends
/// an exported head. Returns the number of records.
pub async fn audit_verify(
    settings: &Settings,
    service: AuditedService,
    head: Option<&SignedHead>,
) -> Result<Verification, CliError> {
    // The stored head first: records appended after it are not tampering.
    let stored = stored_audit_head(settings, service).await?;
    let records = audit_records(settings, service).await?;
    let verified = verify_chain(&records)?;
    check_stored_head(&records, stored)?;
    let mut notes = Vec::new();
    if service == AuditedService::Randomisation {
        let store = open_store(settings).await?;
        let sealer = seal_key_at_hand(settings)?;
        if sealer.is_none() {
            notes.push(
                "no seal key here: seed commitments and the digests of arms were not checked"
                    .into(),
            );
        }
        reconcile_allocations(settings, store.as_ref(), &records, sealer.as_ref()).await?;
        check_commitments(store.as_ref(), &records, sealer.as_ref()).await?;
    }
    if let Some(head) = head {
        let secret = settings.auth.service_secret(&settings.data_dir)?;
        check_head(&secret, service.name(), head, &records)?;
    }
    Ok(Verification {
        records: verified,
        notes,
    })
}

/// What `audit verify` proved, and what it could not check here.
#[derive(Debug)]
pub struct Verification {
    pub records: u64,
    pub notes: Vec<String>,
}

/// The sealer, if the seal key is here: verification never makes one.
fn seal_key_at_hand(
    settings: &Settings,
) -> Result<Option<equipoise_randomisation::seal::Sealer>, CliError> {
    let path = settings
        .randomisation
        .seal_key_file
        .clone()
        .unwrap_or_else(|| settings.data_dir.join("seal.key"));
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(settings.randomisation.sealer(&settings.data_dir)?))
}

/// Every allocation row against its chained `allocation.created` record
/// (review U1): a row changed or added behind the triggers, or a chained
/// allocation whose row is gone, fails verification though the chain holds.
/// Every trial the chain names is read, and rows committed while this runs
/// are looked up in a fresh read of the chain.
async fn reconcile_allocations(
    settings: &Settings,
    store: &dyn equipoise_randomisation::store::Store,
    records: &[AuditRecord],
    sealer: Option<&equipoise_randomisation::seal::Sealer>,
) -> Result<(), CliError> {
    let chained = chained_allocations(records);
    // Read once, and only if a row was committed after `records`.
    let mut newer: Option<ChainedAllocations> = None;
    let mut seen = std::collections::BTreeSet::new();
    for trial in trials_named(records) {
        for allocation in all_allocations(store, &trial).await? {
            let key = (allocation.trial_id.clone(), allocation.subject_id.clone());
            if !chained.contains_key(&key) && newer.is_none() {
                let fresh = audit_records(settings, AuditedService::Randomisation).await?;
                newer = Some(chained_allocations(&fresh));
            }
            let details = chained
                .get(&key)
                .or_else(|| newer.as_ref().and_then(|n| n.get(&key)))
                .ok_or_else(|| {
                    unreconciled(&allocation, "has no allocation.created record in the chain")
                })?;
            if let Some(field) = first_difference(&allocation, details, sealer) {
                return Err(unreconciled(
                    &allocation,
                    &format!("differs from its chained record in {field}"),
                ));
            }
            seen.insert(key);
        }
    }
    if let Some((trial, subject)) = chained.keys().find(|key| !seen.contains(*key)) {
        return Err(CliError::Usage(format!(
            "audit verification: the chain records the allocation of subject {subject} in trial {trial}, which the table no longer holds"
        )));
    }
    Ok(())
}

/// The details of each chained allocation, by (trial, subject).
type ChainedAllocations = std::collections::BTreeMap<(String, String), serde_json::Value>;

fn chained_allocations(records: &[AuditRecord]) -> ChainedAllocations {
    let mut chained = std::collections::BTreeMap::new();
    for record in records
        .iter()
        .filter(|r| r.entry.action == "allocation.created")
    {
        let mut parts = record.entry.entity.splitn(3, '/');
        if let (Some("allocation"), Some(trial), Some(subject)) =
            (parts.next(), parts.next(), parts.next())
        {
            chained.insert(
                (trial.to_owned(), subject.to_owned()),
                record.entry.details.clone(),
            );
        }
    }
    chained
}

/// Every trial the chain names, registered or allocated.
fn trials_named(records: &[AuditRecord]) -> std::collections::BTreeSet<String> {
    records
        .iter()
        .filter_map(|r| {
            let mut parts = r.entry.entity.splitn(3, '/');
            match (parts.next(), parts.next()) {
                (Some("trial" | "allocation"), Some(trial)) => Some(trial.to_owned()),
                _ => None,
            }
        })
        .collect()
}

/// Every trial's stored definition against the hash its latest
/// activation or amendment record chained, and its sealed seed against the
/// commitment its activation record chained (when the seal key is here to
/// open it): a design or seed replaced in the table, with the triggers
/// dropped, fails verification.
async fn check_commitments(
    store: &dyn equipoise_randomisation::store::Store,
    records: &[AuditRecord],
    sealer: Option<&equipoise_randomisation::seal::Sealer>,
) -> Result<(), CliError> {
    let mut definitions = std::collections::BTreeMap::new();
    let mut seeds = std::collections::BTreeMap::new();
    let mut lists = std::collections::BTreeMap::new();
    for record in records {
        let Some(trial) = record.entry.entity.strip_prefix("trial/") else {
            continue;
        };
        let text = |key: &str| {
            record
                .entry
                .details
                .get(key)
                .and_then(serde_json::Value::as_str)
        };
        if matches!(
            record.entry.action.as_str(),
            "trial.activated" | "trial.amended"
        ) && let Some(hash) = text("definition_sha256")
        {
            definitions.insert(trial.to_owned(), hash.to_owned());
        }
        if record.entry.action == "trial.activated"
            && let Some(commitment) = text("seed_commitment")
        {
            seeds.insert(trial.to_owned(), commitment.to_owned());
        }
        if record.entry.action == "trial.activated"
            && let Some(digest) = text("list_digest")
        {
            lists.insert(trial.to_owned(), digest.to_owned());
        }
    }
    let broken = |trial: &str, what: &str| {
        CliError::Usage(format!("audit verification: trial {trial}: {what}"))
    };
    for (trial_id, chained) in &definitions {
        let trial = store
            .trial(trial_id)
            .await?
            .ok_or_else(|| broken(trial_id, "the chain records it, the table does not"))?;
        let rehashed = parse_definition(&trial.definition_yaml)
            .map(|d| d.canonical_sha256())
            .unwrap_or_default();
        if &trial.definition_sha256 != chained || &rehashed != chained {
            return Err(broken(
                trial_id,
                "its stored definition is not the one its activation or last amendment recorded",
            ));
        }
    }
    let Some(sealer) = sealer else {
        return Ok(());
    };
    for (trial_id, commitment) in &seeds {
        let trial = store
            .trial(trial_id)
            .await?
            .ok_or_else(|| broken(trial_id, "the chain records it, the table does not"))?;
        let opened = trial
            .sealed_seed
            .as_deref()
            .and_then(|sealed| sealer.unseal(trial_id, sealed).ok());
        let matches = opened.is_some_and(|seed| {
            &equipoise_randomisation::seal::seed_commitment(trial_id, &seed) == commitment
        });
        if !matches {
            return Err(broken(
                trial_id,
                "its sealed seed does not open to the seed committed to at activation",
            ));
        }
    }
    for (trial_id, digest) in &lists {
        let entries = store.allocation_list(trial_id).await?;
        if &sealer.list_digest(trial_id, &entries) != digest {
            return Err(broken(
                trial_id,
                "its stored allocation list is not the one its activation recorded",
            ));
        }
    }
    Ok(())
}

async fn all_allocations(
    store: &dyn equipoise_randomisation::store::Store,
    trial_id: &str,
) -> Result<Vec<equipoise_randomisation::store::AllocationRecord>, CliError> {
    let mut allocations = Vec::new();
    loop {
        let query = equipoise_randomisation::store::AllocationQuery {
            trial_id: trial_id.to_owned(),
            sites: None,
            stratum: None,
            after_sequence: allocations
                .last()
                .map_or(0, |a: &equipoise_randomisation::store::AllocationRecord| {
                    a.sequence
                }),
            limit: 1000,
        };
        let page = store.list_allocations(&query).await?;
        if page.is_empty() {
            return Ok(allocations);
        }
        allocations.extend(page);
    }
}

/// The first field in which a row and the details it was committed with
/// disagree. The arm, position and decision are compared through their
/// keyed digest, when the seal key is here to compute it.
fn first_difference(
    allocation: &equipoise_randomisation::store::AllocationRecord,
    details: &serde_json::Value,
    sealer: Option<&equipoise_randomisation::seal::Sealer>,
) -> Option<&'static str> {
    let text = |key: &str| details.get(key).and_then(serde_json::Value::as_str);
    let public = [
        (
            "site_id",
            text("site_id") == Some(allocation.site_id.as_str()),
        ),
        (
            "stratum",
            text("stratum") == Some(allocation.stratum.as_str()),
        ),
        (
            "stream",
            text("stream") == Some(allocation.stream_key.as_str()),
        ),
        (
            "request_sha256",
            text("request_sha256") == Some(allocation.request_sha256.as_str()),
        ),
        (
            "randomisation_number",
            text("randomisation_number") == Some(allocation.randomisation_number.as_str()),
        ),
    ];
    let unblinded = match (text("unblinded_hmac"), sealer) {
        (Some(digest), Some(sealer)) => vec![(
            "arm, position or decision",
            digest
                == sealer.unblinded_digest(
                    &allocation.arm,
                    allocation.position,
                    &allocation.decision_json,
                ),
        )],
        (Some(_), None) => Vec::new(),
        // Records written before the digest carry them in clear.
        (None, _) => vec![
            ("arm", text("arm") == Some(allocation.arm.as_str())),
            (
                "position",
                details.get("position").and_then(serde_json::Value::as_u64)
                    == Some(allocation.position),
            ),
        ],
    };
    public
        .into_iter()
        .chain(unblinded)
        .find(|(_, same)| !same)
        .map(|(field, _)| field)
}

/// Names the row without its arm: verification output may reach blinded
/// readers.
fn unreconciled(
    allocation: &equipoise_randomisation::store::AllocationRecord,
    what: &str,
) -> CliError {
    CliError::Usage(format!(
        "audit verification: the allocation of subject {} in trial {} {what}",
        allocation.subject_id, allocation.trial_id
    ))
}

/// The verified chain as JSON lines a blinded reader may see.
pub async fn audit_export(
    settings: &Settings,
    service: AuditedService,
) -> Result<String, CliError> {
    let records = audit_records(settings, service).await?;
    verify_chain(&records)?;
    let mut lines = String::new();
    for record in records {
        let line =
            serde_json::to_string(&blinded(record)).map_err(|e| CliError::Usage(e.to_string()))?;
        lines.push_str(&line);
        lines.push('\n');
    }
    Ok(lines)
}

/// `record` as a blinded reader may see it (see
/// [`equipoise_randomisation::service::blinded`]), with `masked` when
/// fields were replaced.
fn blinded(record: AuditRecord) -> serde_json::Value {
    let shown = equipoise_randomisation::service::blinded(record);
    let mut value = serde_json::to_value(&shown.record).unwrap_or_default();
    if shown.masked
        && let Some(object) = value.as_object_mut()
    {
        object.insert("masked".into(), true.into());
    }
    value
}

/// The chain's end, verified first and signed with the service key.
pub async fn audit_head(
    settings: &Settings,
    service: AuditedService,
) -> Result<SignedHead, CliError> {
    let records = audit_records(settings, service).await?;
    verify_chain(&records)?;
    let secret = settings.auth.service_secret(&settings.data_dir)?;
    Ok(sign_head(&secret, service.name(), &records))
}

/// Reads a head written by `audit head`, from a file or `-` (stdin).
pub fn read_head(path: &std::path::Path) -> Result<SignedHead, CliError> {
    let text = if path == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|e| CliError::Usage(format!("--head {}: {e}", path.display())))?;
    serde_json::from_str(text.trim()).map_err(|e| {
        CliError::Usage(format!(
            "--head {}: not a head from `audit head`: {e}",
            path.display()
        ))
    })
}

/// The chain's end must be the head the database recorded with the last
/// append (PostgreSQL): a tail removed behind the triggers leaves the head
/// ahead of it.
fn check_stored_head(
    records: &[AuditRecord],
    stored: Option<(i64, String)>,
) -> Result<(), CliError> {
    let Some((head_seq, head_hash)) = stored else {
        return Ok(());
    };
    if head_seq == 0 {
        return Ok(());
    }
    let end = records.last().map_or(0, |r| r.seq);
    match records.iter().find(|r| r.seq == head_seq) {
        Some(record) if record.hash == head_hash => Ok(()),
        Some(_) => Err(CliError::Usage(format!(
            "audit verification: record {head_seq} is not the one the database's head recorded: the chain was rewritten or the head altered"
        ))),
        None => Err(CliError::Usage(format!(
            "audit verification: the chain ends at record {end} but the database's head is record {head_seq}: records were removed from its tail"
        ))),
    }
}

async fn stored_audit_head(
    settings: &Settings,
    service: AuditedService,
) -> Result<Option<(i64, String)>, CliError> {
    Ok(match service {
        AuditedService::Randomisation => open_store(settings).await?.stored_audit_head().await?,
        AuditedService::Blinding => {
            open_blinding_store(settings)
                .await?
                .stored_audit_head()
                .await?
        }
        AuditedService::Safety => {
            open_safety_store(settings)
                .await?
                .stored_audit_head()
                .await?
        }
    })
}

async fn audit_records(
    settings: &Settings,
    service: AuditedService,
) -> Result<Vec<AuditRecord>, CliError> {
    let records = match service {
        AuditedService::Randomisation => {
            let store = open_store(settings).await?;
            all_records(|next| store.audit_records(next, AUDIT_PAGE)).await?
        }
        AuditedService::Blinding => {
            let store = open_blinding_store(settings).await?;
            all_records(|next| store.audit_records(next, AUDIT_PAGE)).await?
        }
        AuditedService::Safety => {
            let store = open_safety_store(settings).await?;
            all_records(|next| store.audit_records(next, AUDIT_PAGE)).await?
        }
    };
    Ok(records)
}

/// Reads a chain page by page from its first record.
async fn all_records<Page, E>(
    mut read_page: impl FnMut(i64) -> Page,
) -> Result<Vec<AuditRecord>, CliError>
where
    Page: Future<Output = Result<Vec<AuditRecord>, E>>,
    CliError: From<E>,
{
    let mut records = Vec::new();
    loop {
        let page = read_page(records.len() as i64 + 1).await?;
        if page.is_empty() {
            return Ok(records);
        }
        records.extend(page);
    }
}

/// Shortest break-glass reason, in characters, as for an emergency reveal.
pub const MIN_UNSEAL_REASON_CHARS: usize = 10;

/// A statistician, verified from `token` as a server would, unseals the
/// trial's seed; while enrolment is open only with a break-glass reason.
pub async fn unseal(
    settings: &Settings,
    trial_id: &str,
    token: &str,
    reason: Option<&str>,
) -> Result<MasterSeed, CliError> {
    let caller = verified_statistician(settings, token, trial_id)?;
    let store = open_store(settings).await?;
    let trial = store
        .trial(trial_id)
        .await?
        .ok_or_else(|| CliError::Usage(format!("no trial {trial_id}")))?;
    let reason = break_glass_reason(&trial.state, reason)?;
    let sealed = trial.sealed_seed.ok_or_else(|| {
        CliError::Usage(format!(
            "trial {trial_id} is not active: it has no seed yet"
        ))
    })?;
    let seed = settings
        .randomisation
        .sealer(&settings.data_dir)?
        .unseal(trial_id, &sealed)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let audit = AuditEntry {
        at: now_rfc3339(),
        actor: caller.subject.clone(),
        role: "statistician".into(),
        action: "trial.seed_unsealed".into(),
        entity: format!("trial/{trial_id}"),
        details: serde_json::json!({
            "via": "equipoise seed unseal",
            "trial_state": trial.state.as_str(),
            "reason": reason,
        }),
    };
    store.append_audit(audit).await?;
    Ok(seed)
}

/// The token's holder, if the token verifies here and names a
/// statistician of the trial.
fn verified_statistician(
    settings: &Settings,
    token: &str,
    trial_id: &str,
) -> Result<equipoise_common::auth::Caller, CliError> {
    let token = secret_argument("--token", token)?;
    let verifier = settings.auth.verifier(&settings.data_dir)?;
    let caller = verifier.verify_header(Some(&format!("Bearer {token}")))?;
    if !caller.has_role(&equipoise_common::auth::Role::Statistician)
        || !caller.may_access_trial(trial_id)
    {
        return Err(CliError::Usage(format!(
            "seed unseal needs a statistician's token for trial {trial_id}; {} has none",
            caller.subject
        )));
    }
    Ok(caller)
}

/// While enrolment is open the seed predicts every allocation to come:
/// unsealing it then is break-glass, and needs a stated reason.
fn break_glass_reason(
    state: &equipoise_randomisation::store::TrialState,
    reason: Option<&str>,
) -> Result<Option<String>, CliError> {
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    match (state, reason) {
        (equipoise_randomisation::store::TrialState::Active, None) => Err(CliError::Usage(
            "enrolment is open: unsealing the seed now is break-glass; give --reason".into(),
        )),
        (_, Some(r)) if r.chars().count() < MIN_UNSEAL_REASON_CHARS => Err(CliError::Usage(
            format!("--reason must be at least {MIN_UNSEAL_REASON_CHARS} characters"),
        )),
        (_, reason) => Ok(reason.map(str::to_owned)),
    }
}

/// A secret given on the command line as `-` (read standard input) or
/// `@FILE` (read the file), so it need not appear in argv; anything else
/// is the secret itself.
pub fn secret_argument(flag: &str, value: &str) -> Result<String, CliError> {
    let read = if value == "-" {
        std::io::read_to_string(std::io::stdin())
    } else if let Some(path) = value.strip_prefix('@') {
        std::fs::read_to_string(path)
    } else {
        return Ok(value.to_owned());
    };
    read.map(|text| text.trim().to_owned())
        .map_err(|e| CliError::Usage(format!("{flag} {value}: {e}")))
}

#[derive(Debug, clap::Args)]
pub struct RegenerateArgs {
    /// The trial definition (YAML).
    #[arg(long)]
    pub definition: PathBuf,
    /// The master seed, 64 hex digits (from `equipoise seed unseal`): `-`
    /// reads it from standard input, `@FILE` from a file, so it need not
    /// appear in argv.
    #[arg(long)]
    pub seed: String,
    /// Stratum key, e.g. "site=FR-MTP,baseline_pain=severe"; omit for all.
    #[arg(long)]
    pub stratum: Option<String>,
    #[arg(long)]
    pub length: usize,
    #[arg(long, default_value_t = ALGORITHM_VERSION)]
    pub algorithm_version: u32,
}

/// CSV of every requested stratum's first `length` arms.
pub fn regenerate(args: &RegenerateArgs) -> Result<String, CliError> {
    let definition = read_definition(&args.definition)?;
    let seed =
        MasterSeed::from_hex(&secret_argument("--seed", &args.seed)?).map_err(CliError::Usage)?;
    let strata: Vec<String> = match &args.stratum {
        Some(key) => {
            definition.parse_stratum_key(key).ok_or_else(|| {
                CliError::Usage(format!("'{key}' is not a stratum of {}", definition.id))
            })?;
            vec![key.clone()]
        }
        None => definition
            .all_strata()
            .iter()
            .map(|l| definition.stratum_key(l))
            .collect(),
    };
    let mut csv = String::from("position,stratum,arm\n");
    for stratum in strata {
        let arms = regenerate_list(
            &definition.method,
            &definition.ratios(),
            &seed,
            &stratum,
            args.algorithm_version,
            args.length,
        )
        .ok_or_else(|| {
            CliError::Usage(format!(
                "{} lists are not pre-generated; minimisation is replayed from its logged draws",
                definition.method.kind()
            ))
        })?;
        for (position, arm) in arms.iter().enumerate() {
            csv.push_str(&format!(
                "{position},{stratum},{}\n",
                definition.arms[*arm].id
            ));
        }
    }
    Ok(csv)
}

pub fn read_definition(path: &std::path::Path) -> Result<TrialDefinition, CliError> {
    let yaml = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
    parse_definition(&yaml).map_err(|problems| {
        let lines: Vec<String> = problems.0.iter().map(|p| format!("  {p}")).collect();
        CliError::Usage(format!(
            "{} is not a valid definition:\n{}",
            path.display(),
            lines.join("\n")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review U1: a chain whose end is behind the database's head lost its
    /// tail, though every remaining record verifies.
    #[test]
    fn a_chain_behind_the_stored_head_fails() {
        let entry = |n: i64| AuditEntry {
            at: format!("2026-12-01T00:00:0{n}Z"),
            actor: "ada".into(),
            role: "trial_admin".into(),
            action: "trial.activated".into(),
            entity: "trial/T".into(),
            details: serde_json::json!({ "n": n }),
        };
        let first = AuditRecord::chain(1, entry(1), equipoise_common::audit::GENESIS_HASH);
        let second = AuditRecord::chain(2, entry(2), &first.hash);
        let head = Some((2, second.hash.clone()));
        assert!(check_stored_head(&[first.clone(), second.clone()], head.clone()).is_ok());
        let truncated =
            check_stored_head(std::slice::from_ref(&first), head).expect_err("the tail is gone");
        assert!(
            truncated.to_string().contains("removed from its tail"),
            "{truncated}"
        );
        assert!(
            check_stored_head(&[first], None).is_ok(),
            "SQLite keeps no head"
        );
        assert!(
            check_stored_head(
                &[],
                Some((0, equipoise_common::audit::GENESIS_HASH.to_owned()))
            )
            .is_ok()
        );
    }

    /// Records from before review C4 carried the arm in clear: the export
    /// masks it, and says the record was masked.
    #[test]
    fn a_legacy_allocation_record_is_masked_in_the_export() {
        let entry = AuditEntry {
            at: "2026-11-01T09:00:00Z".into(),
            actor: "edc".into(),
            role: "site_investigator".into(),
            action: "allocation.created".into(),
            entity: "allocation/RESPINE/MTP-001".into(),
            details: serde_json::json!({
                "site_id": "FR-MTP",
                "arm": "MSC",
                "position": 3,
                "decision": { "probabilities": [1.0, 0.0] },
            }),
        };
        let exported = blinded(AuditRecord::chain(
            1,
            entry,
            equipoise_common::audit::GENESIS_HASH,
        ))
        .to_string();
        for secret in ["MSC", "probabilities", "3,"] {
            assert!(!exported.contains(secret), "{secret} in {exported}");
        }
        assert!(exported.contains("\"masked\":true"), "{exported}");
        assert!(exported.contains("FR-MTP"));
    }

    fn args(roles: &[&str]) -> MintArgs {
        MintArgs {
            sub: "alice".into(),
            name: String::new(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            sites: vec!["FR-MTP".into()],
            trials: vec!["RESPINE".into()],
            ttl_minutes: 5,
        }
    }

    #[test]
    fn minting_refuses_service_roles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = Settings {
            data_dir: dir.path().to_owned(),
            ..Settings::default()
        };
        for roles in [
            &["service:blinding"][..],
            &["trial_admin", "service:safety"],
        ] {
            let error = mint(&settings, &args(roles)).expect_err("refused");
            assert!(
                error.to_string().contains("may not carry service roles"),
                "{error}"
            );
        }
        let token = mint(&settings, &args(&["site_investigator"])).expect("a user token");
        let caller = settings
            .auth
            .verifier(&settings.data_dir)
            .expect("verifier")
            .verify(&token)
            .expect("accepted");
        assert_eq!(caller.subject, "alice");
    }

    #[test]
    fn minting_accepts_the_auditor_alone_and_refuses_it_beside_a_blind_breaking_role() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = Settings {
            data_dir: dir.path().to_owned(),
            ..Settings::default()
        };
        let token = mint(&settings, &args(&["auditor"])).expect("an auditor token");
        let caller = settings
            .auth
            .verifier(&settings.data_dir)
            .expect("verifier")
            .verify(&token)
            .expect("accepted");
        assert!(caller.has_role(&equipoise_common::auth::Role::Auditor));
        for other in ["emergency_desk", "site_coordinator"] {
            let error = mint(&settings, &args(&["auditor", other])).expect_err(other);
            assert!(error.to_string().contains("incompatible"), "{error}");
        }
    }
}
