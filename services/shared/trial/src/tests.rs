use std::collections::BTreeMap;

use super::*;

use crate::examples::{FACET_CROSSOVER as FACET, RESPINE};

fn problems_of(yaml: &str) -> Vec<String> {
    match parse_definition(yaml) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.0.iter().map(ToString::to_string).collect(),
    }
}

fn assert_problem(problems: &[String], needle: &str) {
    assert!(
        problems.iter().any(|p| p.contains(needle)),
        "no problem mentions '{needle}' in {problems:#?}"
    );
}

#[test]
fn project_examples_parse() {
    let respine = parse_definition(RESPINE).expect("respine parses");
    assert_eq!(respine.id, "RESPINE");
    assert_eq!(respine.arms.len(), 2);
    assert_eq!(respine.sites.len(), 5);
    assert_eq!(respine.caps.total, Some(114));
    assert_eq!(respine.all_strata().len(), 10);
    assert_eq!(
        respine.method,
        MethodSpec::PermutedBlocks {
            block_sizes: vec![2, 4]
        }
    );
    let facet = parse_definition(FACET).expect("facet parses");
    assert_eq!(facet.periods.len(), 2);
    assert!(facet.periods[1].planned_unblinding_at_start);
    assert_eq!(facet.stratification[0].levels.len(), 2);
}

/// Definitions from outside the repository, named by
/// `EQUIPOISE_EXTRA_TRIALS_DIR` (CI points it at the product's examples), must
/// parse unchanged. A clone on its own has none, and checks only its own.
#[test]
fn extra_trial_definitions_parse_unchanged() {
    let Some(dir) = std::env::var_os("EQUIPOISE_EXTRA_TRIALS_DIR") else {
        return;
    };
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("EQUIPOISE_EXTRA_TRIALS_DIR {}: {e}", dir.to_string_lossy()));
    let mut parsed = 0;
    for path in entries.filter_map(Result::ok).map(|e| e.path()) {
        if path.extension().is_some_and(|x| x == "yaml") {
            let yaml = std::fs::read_to_string(&path).expect("readable definition");
            if let Err(problems) = parse_definition(&yaml) {
                panic!("{}: {:#?}", path.display(), problems.0);
            }
            parsed += 1;
        }
    }
    assert!(
        parsed > 0,
        "no .yaml definition in {}",
        dir.to_string_lossy()
    );
}

#[test]
fn canonical_hash_ignores_layout_and_comments_but_not_content() {
    let original = parse_definition(RESPINE).expect("parses");
    let reformatted = RESPINE
        .replace("# retention: trial end + 30 years", "")
        .replace("\"vas_mm > 40\"", "\"vas_mm   >40\"");
    let same = parse_definition(&reformatted).expect("parses");
    assert_eq!(original.canonical_sha256(), same.canonical_sha256());
    let changed = parse_definition(&RESPINE.replace("cap: 40", "cap: 41")).expect("parses");
    assert_ne!(original.canonical_sha256(), changed.canonical_sha256());
    assert_eq!(original.canonical_sha256().len(), 64);
}

#[test]
fn every_problem_is_listed_with_its_path() {
    let broken = RESPINE
        .replace("title:", "titel:")
        .replace("block_sizes: [2, 4]", "block_sizes: [3, 4]")
        .replace("\"lbp_months >= 3\"", "\"pain_months >= 3\"")
        .replace("ratio: 1, active: false", "ratio: 1, active: maybe")
        .replace("Europe/Paris", "Europe/Atlantis");
    let problems = problems_of(&broken);
    assert_problem(&problems, "titel: unknown key");
    assert_problem(&problems, "title: is required");
    assert_problem(
        &problems,
        "method.block_sizes[0]: block size 3 must be a multiple of the ratio sum 2",
    );
    assert_problem(
        &problems,
        "eligibility[1].rule: names unknown covariate 'pain_months'",
    );
    assert_problem(&problems, "arms[1].active: expected true or false");
    assert_problem(
        &problems,
        "sponsor_time_zone: 'Europe/Atlantis' is not an IANA time zone",
    );
    assert!(problems.len() >= 6, "{problems:#?}");
}

#[test]
fn impossible_designs_are_refused() {
    let overlapping = RESPINE.replace("severe: \">= 70\"", "severe: \">= 60\"");
    assert_problem(
        &problems_of(&overlapping),
        "levels moderate and severe overlap",
    );
    let gap = RESPINE.replace("severe: \">= 70\"", "severe: \"> 70\"");
    assert_problem(&problems_of(&gap), "leave a gap");
    let unreachable = RESPINE.replace("caps: { total: 114 }", "caps: { total: 500 }");
    assert_problem(
        &problems_of(&unreachable),
        "caps.total: 500 can never be reached",
    );
    let wrong_type = RESPINE.replace("\"ddd_on_mri is true\"", "\"ddd_on_mri > 3\"");
    assert_problem(
        &problems_of(&wrong_type),
        "cannot apply to a boolean covariate",
    );
    let duplicate_site = RESPINE.replace("id: FR-PAR", "id: FR-MTP");
    assert_problem(&problems_of(&duplicate_site), "duplicate site id 'FR-MTP'");
    let guessable = RESPINE.replace("R-{6 random base32}", "R-{2 random digits}");
    assert_problem(&problems_of(&guessable), "too few distinct codes");
    let efron_three_arms = RESPINE
        .replace(
            "kind: permuted_blocks\n  block_sizes: [2, 4]",
            "kind: biased_coin\n  p: 0.4",
        )
        .replace(
            "  - { id: SHAM,",
            "  - { id: LOW, label: \"Low dose\", ratio: 1 }\n  - { id: SHAM,",
        );
    let problems = problems_of(&efron_three_arms);
    assert_problem(&problems, "biased_coin needs exactly two arms");
    assert_problem(&problems, "method.p: p must be above 0.5");
    let foreign_key = RESPINE.replace("block_sizes: [2, 4]", "block_sizes: [2, 4]\n  p: 0.7");
    assert_problem(
        &problems_of(&foreign_key),
        "method.p: does not apply to permuted_blocks",
    );
}

#[test]
fn malformed_yaml_is_one_located_problem() {
    let problems = problems_of("id: [unclosed\n");
    assert_eq!(problems.len(), 1);
    assert_problem(&problems, "not valid YAML");
    assert_problem(&problems_of("- just\n- a list\n"), "expected a mapping");
}

fn respine_subject(vas: f64) -> BTreeMap<String, CovariateInput> {
    BTreeMap::from([
        ("age_years".into(), CovariateInput::Integer(45)),
        ("lbp_months".into(), CovariateInput::Integer(12)),
        ("vas_mm".into(), CovariateInput::Decimal(vas)),
        ("ddd_on_mri".into(), CovariateInput::Boolean(true)),
        (
            "conservative_care_failed".into(),
            CovariateInput::Boolean(true),
        ),
    ])
}

#[test]
fn covariates_are_typed_bounded_and_complete() {
    let trial = parse_definition(RESPINE).expect("parses");
    assert!(trial.check_covariates(&respine_subject(55.0)).is_ok());

    let mut wrong = respine_subject(55.0);
    wrong.insert("age_years".into(), CovariateInput::Decimal(45.5));
    wrong.insert("vas_mm".into(), CovariateInput::Decimal(140.0));
    wrong.remove("ddd_on_mri");
    wrong.insert("height_cm".into(), CovariateInput::Integer(180));
    let problems: Vec<String> = trial
        .check_covariates(&wrong)
        .expect_err("invalid")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_problem(
        &problems,
        "covariates.age_years: expected integer, got decimal",
    );
    assert_problem(
        &problems,
        "covariates.vas_mm: 140 is outside the plausible range",
    );
    assert_problem(&problems, "covariates.ddd_on_mri: is required");
    assert_problem(&problems, "covariates.height_cm: is not a covariate");
}

#[test]
fn eligibility_names_each_failing_criterion() {
    let trial = parse_definition(RESPINE).expect("parses");
    let mut subject = respine_subject(35.0);
    subject.insert("age_years".into(), CovariateInput::Integer(61));
    let values = trial.check_covariates(&subject).expect("typed");
    let failed: Vec<&str> = trial
        .failed_criteria(&values)
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(failed, ["age", "pain"]);
}

#[test]
fn classification_uses_site_and_levels() {
    let trial = parse_definition(RESPINE).expect("parses");
    let values = trial
        .check_covariates(&respine_subject(70.0))
        .expect("typed");
    let levels = trial.classify("IT-MIL", &values).expect("classified");
    assert_eq!(
        trial.stratum_key(&levels),
        "site=IT-MIL,baseline_pain=severe"
    );
    assert_eq!(
        trial.parse_stratum_key("site=IT-MIL,baseline_pain=severe"),
        Some(levels)
    );
    let values = trial
        .check_covariates(&respine_subject(69.9))
        .expect("typed");
    let levels = trial.classify("IT-MIL", &values).expect("classified");
    assert_eq!(
        trial.stratum_key(&levels),
        "site=IT-MIL,baseline_pain=moderate"
    );
}

const FACET_PLANNED_PERIOD: &str = "{ id: crossover, months: 6, crossover: { from: DMSO, to: MSC }, planned_unblinding_at_start: true }";

fn facet_with_planned_roles(roles: &str) -> String {
    let period = FACET_PLANNED_PERIOD.replace(
        "planned_unblinding_at_start: true }",
        &format!("planned_unblinding_at_start: true, planned_unblinding_roles: {roles} }}"),
    );
    assert!(FACET.contains(FACET_PLANNED_PERIOD), "the example's period");
    FACET.replace(FACET_PLANNED_PERIOD, &period)
}

#[test]
fn planned_unblinding_roles_default_to_the_investigator_and_medical_monitor() {
    let facet = parse_definition(FACET).expect("facet parses");
    for period in &facet.periods {
        assert_eq!(
            period.planned_unblinding_roles,
            vec!["site_investigator".to_owned(), "medical_monitor".to_owned()]
        );
    }
}

#[test]
fn planned_unblinding_roles_can_be_named_and_are_checked() {
    let named = parse_definition(&facet_with_planned_roles(
        "[emergency_desk, site_coordinator]",
    ))
    .expect("named roles parse");
    assert_eq!(
        named.periods[1].planned_unblinding_roles,
        vec!["emergency_desk".to_owned(), "site_coordinator".to_owned()]
    );
    let problems = problems_of(&facet_with_planned_roles("[statistician]"));
    assert_problem(&problems, "periods[1].planned_unblinding_roles");
    assert_problem(&problems, "'statistician' may not take a planned reveal");
    let problems = problems_of(&facet_with_planned_roles("[]"));
    assert_problem(&problems, "someone must be able to take the planned reveal");
}

#[test]
fn the_default_planned_unblinding_roles_leave_the_canonical_hash_unchanged() {
    let implicit = parse_definition(FACET).expect("facet parses");
    let explicit = parse_definition(&facet_with_planned_roles(
        "[site_investigator, medical_monitor]",
    ))
    .expect("explicit default parses");
    assert_eq!(implicit.canonical_sha256(), explicit.canonical_sha256());
    let other = parse_definition(&facet_with_planned_roles("[medical_monitor]")).expect("parses");
    assert_ne!(implicit.canonical_sha256(), other.canonical_sha256());
}

#[test]
fn the_code_pool_size_is_the_cap_times_the_ratio_total() {
    let respine = parse_definition(RESPINE).expect("respine parses");
    assert_eq!(respine.codes_per_ratio_unit(), 114);
    assert_eq!(respine.code_pool_size(), 228);
    let facet = parse_definition(FACET).expect("facet parses");
    assert_eq!(facet.code_pool_size(), 80);
    assert_eq!(
        code_pool_size_for(None, 3),
        3 * u64::from(UNCAPPED_CODES_PER_RATIO_UNIT)
    );
}

/// The entropy check covers every arm's codes, not only the cap: 100 × 10^4
/// fits 20 bits, the 200 codes two arms get do not, and generation would
/// refuse them.
#[test]
fn a_code_format_too_small_for_the_pools_is_refused_at_validation() {
    let small = RESPINE
        .replace("caps: { total: 114 }", "caps: { total: 100 }")
        .replace("R-{6 random base32}", "R-{4 random base32}");
    assert_problem(&problems_of(&small), "too few distinct codes");
    let enough = RESPINE
        .replace("caps: { total: 114 }", "caps: { total: 50 }")
        .replace("R-{6 random base32}", "R-{4 random base32}");
    assert_eq!(problems_of(&enough), Vec::<String>::new());
}

#[test]
fn the_first_period_cannot_have_a_planned_reveal() {
    let first = FACET.replace(
        "{ id: blinded, months: 6 }",
        "{ id: blinded, months: 6, planned_unblinding_at_start: true }",
    );
    assert_ne!(first, FACET, "the example's first period");
    assert_problem(
        &problems_of(&first),
        "periods[0].planned_unblinding_at_start: the first period cannot have a planned reveal",
    );
}

// ------------------------------------------------------------ RSI versions

fn date(text: &str) -> jiff::civil::Date {
    text.parse().expect("date")
}

fn respine_with_safety(safety: &str) -> String {
    let old = "safety:\n  reference_safety_information: RSI-v3\n  expected_events: [injection site pain, transient radicular pain, headache]\n  safety_window_months: 60\n";
    assert!(RESPINE.contains(old), "the example's safety section");
    RESPINE.replace(old, safety)
}

const TWO_VERSIONS: &str = "safety:
  reference_safety_information:
    - { version: IB-v1, effective_from: 2025-01-01, expected_events: [headache] }
    - version: IB-v2
      effective_from: '2026-03-01'
      expected_events: [Headache, '  Transient radicular pain ']
  safety_window_months: 60
";

/// The examples' canonical hashes, pinned: the single-version form of the
/// reference safety information must serialise as it always has.
#[test]
fn the_single_version_form_keeps_the_examples_and_their_hashes() {
    let respine = parse_definition(RESPINE).expect("respine parses");
    assert_eq!(
        respine.canonical_sha256(),
        "6f1d39b84d030b8cb5c8560a1d5106cbc6122f0acb4f6320a408530a3a635b9f"
    );
    assert_eq!(
        serde_json::to_value(&respine.safety).expect("json"),
        serde_json::json!({
            "reference_safety_information": "RSI-v3",
            "expected_events": ["injection site pain", "transient radicular pain", "headache"],
            "safety_window_months": 60,
        })
    );
    let facet = parse_definition(FACET).expect("facet parses");
    assert_eq!(
        facet.canonical_sha256(),
        "2e91cb04943cdca359cffa776b9b179a77b54d3625a2c207bf695e39ca11838b"
    );
    assert_eq!(respine.safety.rsi_versions(), vec![("RSI-v3", None)]);
    assert_eq!(facet.safety.rsi_versions(), vec![("IB-2024", None)]);
}

/// The product's shared trials, when this machine has them, parse with the
/// hashes they had before RSI versions existed.
#[test]
fn the_shared_trials_keep_their_hashes() {
    let dir = std::path::Path::new("/work/shared/trials");
    for (name, hash) in [
        (
            "respine.yaml",
            "7cc3ffe95af58861ef88547b6ab224ac276f044f4965c03451f0be21502c4a40",
        ),
        (
            "facet-crossover.yaml",
            "b16b23ae0d24ed54597c406edbc79dfbc07a43cda65c7fa97007cf9b46e38b0e",
        ),
    ] {
        let Ok(yaml) = std::fs::read_to_string(dir.join(name)) else {
            continue;
        };
        let trial = parse_definition(&yaml).expect("shared trial parses");
        assert_eq!(trial.canonical_sha256(), hash, "{name}");
    }
}

#[test]
fn the_single_version_applies_always_and_matches_trimmed_terms_in_any_case() {
    let safety = parse_definition(RESPINE).expect("parses").safety;
    for onset in ["1990-01-01", "2026-06-15", "2099-12-31"] {
        assert_eq!(
            safety.expectedness(date(onset), "  HEADACHE "),
            (true, "RSI-v3".to_owned())
        );
    }
    assert_eq!(
        safety.expectedness(date("2026-06-15"), "anaphylaxis"),
        (false, "RSI-v3".to_owned())
    );
    assert_eq!(
        safety.expectedness(date("2026-06-15"), "   "),
        (false, "RSI-v3".to_owned())
    );
}

#[test]
fn the_version_in_force_on_the_onset_decides_expectedness() {
    let trial = parse_definition(&respine_with_safety(TWO_VERSIONS)).expect("parses");
    let safety = &trial.safety;
    assert_eq!(
        safety.rsi_versions(),
        vec![
            ("IB-v1", Some(date("2025-01-01"))),
            ("IB-v2", Some(date("2026-03-01")))
        ]
    );
    let term = "transient radicular pain";
    assert_eq!(
        safety.expectedness(date("2026-02-28"), term),
        (false, "IB-v1".to_owned())
    );
    assert_eq!(
        safety.expectedness(date("2026-03-01"), term),
        (true, "IB-v2".to_owned()),
        "in force from its effective date"
    );
    assert_eq!(
        safety.expectedness(date("2025-01-01"), "HEADACHE"),
        (true, "IB-v1".to_owned())
    );
    assert_eq!(
        safety.expectedness(date("2024-12-31"), "headache"),
        (false, String::new()),
        "no version in force yet"
    );
    let hash = trial.canonical_sha256();
    let reordered_keys = respine_with_safety(&TWO_VERSIONS.replace(
        "{ version: IB-v1, effective_from: 2025-01-01,",
        "{ effective_from: '2025-01-01', version: IB-v1,",
    ));
    assert_eq!(
        parse_definition(&reordered_keys)
            .expect("parses")
            .canonical_sha256(),
        hash
    );
    let changed = respine_with_safety(&TWO_VERSIONS.replace("2026-03-01", "2026-03-02"));
    assert_ne!(
        parse_definition(&changed)
            .expect("parses")
            .canonical_sha256(),
        hash
    );
}

#[test]
fn rsi_versions_are_unique_dated_and_increasing() {
    let cases = [
        (
            TWO_VERSIONS.replace("version: IB-v2", "version: IB-v1"),
            "reference_safety_information[1].version: 'IB-v1' appears more than once",
        ),
        (
            TWO_VERSIONS.replace("2026-03-01", "2024-06-01"),
            "reference_safety_information[1].effective_from: must be after",
        ),
        (
            TWO_VERSIONS.replace("2026-03-01", "2025-01-01"),
            "reference_safety_information[1].effective_from: must be after",
        ),
        (
            TWO_VERSIONS.replace("2026-03-01", "2026-02-30"),
            "'2026-02-30' is not a valid YYYY-MM-DD date",
        ),
        (
            TWO_VERSIONS.replace("2026-03-01", "2026-3-1"),
            "'2026-3-1' is not a valid YYYY-MM-DD date",
        ),
        (
            TWO_VERSIONS.replace("effective_from: 2025-01-01, ", ""),
            "reference_safety_information[0].effective_from: is required",
        ),
        (
            TWO_VERSIONS.replace("version: IB-v2", "version: ' '"),
            "reference_safety_information[1].version: must not be empty",
        ),
        (
            TWO_VERSIONS.replace(
                "expected_events: [headache] }",
                "expected_events: [headache], url: x }",
            ),
            "reference_safety_information[0].url: unknown key",
        ),
        (
            "safety:\n  reference_safety_information: []\n  safety_window_months: 60\n".to_owned(),
            "safety.reference_safety_information: must list at least one version",
        ),
        (
            TWO_VERSIONS.replace(
                "  safety_window_months: 60",
                "  expected_events: [headache]\n  safety_window_months: 60",
            ),
            "safety.expected_events: is ambiguous",
        ),
    ];
    for (safety, needle) in cases {
        assert_problem(&problems_of(&respine_with_safety(&safety)), needle);
    }
}

fn with_site_prefixed_ids(yaml: &str) -> String {
    yaml.replacen("caps:", "subject_ids: { site_prefix: true }\ncaps:", 1)
}

#[test]
fn site_prefixed_subject_ids_name_their_site() {
    let definition = parse_definition(&with_site_prefixed_ids(RESPINE)).expect("parses");
    let ids = &definition.subject_ids;
    assert!(ids.admits("FR-MTP", "FR-MTP-001"));
    for (site, subject) in [
        ("FR-MTP", "FR-PAR-001"),
        ("FR-MTP", "FR-MTP-"),
        ("FR-MTP", "FR-MTP001"),
        ("FR-MTP", "MTP-001"),
        ("FR-MTP", "FR-MTPX-001"),
    ] {
        assert!(!ids.admits(site, subject), "{subject} at {site}");
    }
    let unbound = parse_definition(RESPINE).expect("parses").subject_ids;
    assert!(unbound.admits("FR-MTP", "PAR-001"));
}

#[test]
fn unbound_subject_ids_keep_the_canonical_hash() {
    let explicit = RESPINE.replacen("caps:", "subject_ids: { site_prefix: false }\ncaps:", 1);
    let hash = |yaml: &str| parse_definition(yaml).expect("parses").canonical_sha256();
    assert_eq!(hash(RESPINE), hash(&explicit));
    assert_ne!(hash(RESPINE), hash(&with_site_prefixed_ids(RESPINE)));
}

#[test]
fn site_prefixes_must_name_one_site() {
    let nested = with_site_prefixed_ids(RESPINE).replacen(
        "- { id: FR-PAR, cap: 30 }",
        "- { id: FR-MTP-B, cap: 30 }",
        1,
    );
    assert_problem(
        &problems_of(&nested),
        "subject_ids.site_prefix: site FR-MTP-B begins with site FR-MTP",
    );
    let typo = RESPINE.replacen(
        "caps:",
        "subject_ids: { site_prefix: yes please }\ncaps:",
        1,
    );
    assert_problem(
        &problems_of(&typo),
        "subject_ids.site_prefix: expected true or false",
    );
    let unknown = RESPINE.replacen("caps:", "subject_ids: { pattern: x }\ncaps:", 1);
    assert_problem(&problems_of(&unknown), "subject_ids.pattern: unknown key");
}

/// RESPINE (two arms, 1:1) with `method` in place of its permuted blocks.
fn respine_with_method(method: &str) -> String {
    RESPINE.replace("kind: permuted_blocks\n  block_sizes: [2, 4]", method)
}

#[test]
fn literature_procedures_parse_with_their_parameters() {
    let cases = [
        (
            "kind: random_allocation_rule\n  sample_size: 114",
            MethodSpec::RandomAllocationRule { sample_size: 114 },
        ),
        (
            "kind: chen_biased_coin\n  p: 0.75\n  bound: 3",
            MethodSpec::ChenBiasedCoin { p: 0.75, bound: 3 },
        ),
        (
            "kind: adjustable_biased_coin\n  a: 2",
            MethodSpec::AdjustableBiasedCoin { a: 2.0 },
        ),
        (
            "kind: generalised_biased_coin\n  rho: 0",
            MethodSpec::GeneralisedBiasedCoin { rho: 0.0 },
        ),
        (
            "kind: urn\n  alpha: 0\n  beta: 1",
            MethodSpec::Urn {
                alpha: 0.0,
                beta: 1.0,
            },
        ),
        (
            "kind: truncated_binomial\n  sample_size: 20",
            MethodSpec::TruncatedBinomial { sample_size: 20 },
        ),
    ];
    for (method, expected) in cases {
        let definition = parse_definition(&respine_with_method(method))
            .unwrap_or_else(|p| panic!("{method}: {:#?}", p.0));
        assert_eq!(definition.method, expected);
    }
}

#[test]
fn literature_procedures_refuse_parameters_outside_their_domain() {
    let cases = [
        (
            "kind: chen_biased_coin\n  p: 0.5\n  bound: 3",
            "method.p: p must be above 0.5",
        ),
        (
            "kind: chen_biased_coin\n  p: 0.7\n  bound: 0",
            "method.bound: bound 0 is below",
        ),
        (
            "kind: chen_biased_coin\n  p: .nan\n  bound: 2",
            "method.p: must be a finite number",
        ),
        (
            "kind: adjustable_biased_coin\n  a: -1",
            "method.a: a must be at least 0",
        ),
        (
            "kind: adjustable_biased_coin\n  a: .inf",
            "method.a: must be a finite number",
        ),
        (
            "kind: generalised_biased_coin\n  rho: -0.5",
            "method.rho: rho must be at least 0",
        ),
        (
            "kind: urn\n  alpha: 1\n  beta: 0",
            "method.beta: beta must be above 0",
        ),
        (
            "kind: urn\n  alpha: -1\n  beta: 1",
            "method.alpha: alpha must be at least 0",
        ),
        ("kind: urn\n  alpha: 1", "method.beta"),
        (
            "kind: truncated_binomial\n  sample_size: 21",
            "method.sample_size: must be a multiple",
        ),
        (
            "kind: random_allocation_rule\n  sample_size: 0",
            "method.sample_size: must be a multiple",
        ),
        (
            "kind: random_allocation_rule\n  sample_size: 2\n  p: 0.6",
            "method.p: does not apply to random_allocation_rule",
        ),
        (
            "kind: urn\n  alpha: 1\n  beta: 1\n  rho: 2",
            "method.rho: does not apply to urn",
        ),
    ];
    for (method, needle) in cases {
        assert_problem(&problems_of(&respine_with_method(method)), needle);
    }
}

#[test]
fn literature_procedures_say_which_arms_they_take() {
    let unequal = |method: &str| respine_with_method(method).replacen("ratio: 1", "ratio: 2", 1);
    let three_arms = |method: &str| {
        respine_with_method(method).replace(
            "  - { id: SHAM,",
            "  - { id: LOW, label: \"Low dose\", ratio: 1 }\n  - { id: SHAM,",
        )
    };
    for method in [
        "kind: adjustable_biased_coin\n  a: 1",
        "kind: generalised_biased_coin\n  rho: 1",
        "kind: urn\n  alpha: 1\n  beta: 1",
        "kind: truncated_binomial\n  sample_size: 20",
        "kind: chen_biased_coin\n  p: 0.75\n  bound: 3",
    ] {
        let kind = method.split_whitespace().nth(1).unwrap_or_default();
        let problems = problems_of(&unequal(method));
        assert_problem(
            &problems,
            &format!("{kind} cannot take ratios other than 1:1"),
        );
        assert_problem(
            &problems_of(&three_arms(method)),
            &format!("{kind} needs exactly two arms"),
        );
    }
    assert_problem(
        &problems_of(&three_arms("kind: chen_biased_coin\n  p: 0.7\n  bound: 3")),
        "chen_biased_coin needs exactly two arms",
    );
    // The random allocation rule takes any arms and ratios, with a sample
    // size that holds each arm in its ratio.
    let problems = problems_of(&three_arms(
        "kind: random_allocation_rule\n  sample_size: 30",
    ));
    assert!(
        !problems.iter().any(|p| p.contains("method")),
        "{problems:#?}"
    );
    assert_problem(
        &problems_of(&three_arms(
            "kind: random_allocation_rule\n  sample_size: 20",
        )),
        "method.sample_size: must be a multiple of the ratio sum 3",
    );
}
