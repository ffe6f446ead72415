//! Definitions that cannot hurt the service (issue 7, item 6): bounds on
//! every number that sizes memory or a loop, checked arithmetic, no YAML
//! anchors or aliases, no non-finite numbers.

use super::*;
use crate::examples::{FACET_CROSSOVER as FACET, RESPINE};
use crate::limits::*;

fn problems_of(yaml: &str) -> Vec<String> {
    match parse_definition(yaml) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.0.iter().map(ToString::to_string).collect(),
    }
}

fn assert_problem(yaml: &str, needle: &str) {
    let problems = problems_of(yaml);
    assert!(
        problems.iter().any(|p| p.contains(needle)),
        "no problem mentions '{needle}' in {problems:#?}"
    );
}

/// `RESPINE` with `from` replaced, checking the example still has it.
fn respine(from: &str, to: &str) -> String {
    assert!(RESPINE.contains(from), "RESPINE has {from:?}");
    RESPINE.replace(from, to)
}

fn facet(from: &str, to: &str) -> String {
    assert!(FACET.contains(from), "FACET-X has {from:?}");
    FACET.replace(from, to)
}

const RESPINE_ARMS: &str = "  - { id: MSC,  label: \"BM-MSC 20e6 cells in 2 ml, intradiscal\", ratio: 1, active: true }\n  - { id: SHAM, label: \"Sham paravertebral injection\",           ratio: 1, active: false }\n";
const RESPINE_METHOD: &str = "kind: permuted_blocks\n  block_sizes: [2, 4]";

fn respine_arms(count: usize, ratio: u64) -> String {
    let arms: String = (0..count)
        .map(|i| format!("  - {{ id: A{i}, label: arm, ratio: {ratio} }}\n"))
        .collect();
    respine(RESPINE_ARMS, &arms)
}

fn respine_method(method: &str) -> String {
    respine(RESPINE_METHOD, method)
}

// ------------------------------------------------------------ review I1

/// The three definitions of the review's finding I1, each of which passed
/// validation and then aborted the process (or panicked in a debug build).
#[test]
fn the_review_s_crashing_numbers_are_refused() {
    assert_problem(
        &respine_method("kind: maximal_procedure\n  bound: 4000000000\n  sequence_length: 2"),
        "method.bound: 4000000000 is above the limit of 1000",
    );
    let wrapping = respine(
        RESPINE_ARMS,
        "  - { id: A, label: a, ratio: 2147483649 }\n  - { id: B, label: b, ratio: 2147483649 }\n",
    )
    .replace("block_sizes: [2, 4]", "block_sizes: [2]");
    assert_problem(
        &wrapping,
        "arms[0].ratio: 2147483649 is above the limit of 100",
    );
    let covariates: String = (0..64)
        .map(|i| format!("  - {{ id: b{i}, type: boolean }}\n"))
        .collect();
    let factors: String = (0..64).map(|i| format!("    - {{ id: b{i} }}\n")).collect();
    let many_factors = respine(
        "  - { id: conservative_care_failed, type: boolean }\n",
        &format!("  - {{ id: conservative_care_failed, type: boolean }}\n{covariates}"),
    )
    .replace(
        "    - { id: site }\n    - { id: baseline_pain, from: vas_mm, levels: { moderate: \"< 70\", severe: \">= 70\" } }\n",
        &factors,
    );
    assert_problem(
        &many_factors,
        "stratification.factors: has 64 entries, more than the 10 allowed",
    );
}

/// Ten factors are allowed by count; with more sites their product passes
/// the strata limit and is refused.
#[test]
fn the_strata_product_is_checked_against_its_limit() {
    let covariates: String = (0..8)
        .map(|i| format!("  - {{ id: b{i}, type: boolean }}\n"))
        .collect();
    let factors: String = (0..8).map(|i| format!("    - {{ id: b{i} }}\n")).collect();
    let yaml = respine(
        "  - { id: conservative_care_failed, type: boolean }\n",
        &format!("  - {{ id: conservative_care_failed, type: boolean }}\n{covariates}"),
    )
    .replace(
        "    - { id: site }\n",
        &format!("    - {{ id: site }}\n{factors}"),
    );
    // 5 sites × 2⁸ × 2 = 2560 strata: allowed.
    let trial = parse_definition(&yaml).expect("2560 strata parse");
    assert_eq!(trial.all_strata().len(), 2560);
    let sites: String = (0..16)
        .map(|i| format!("  - {{ id: S{i}, cap: 40 }}\n"))
        .collect();
    let too_many = yaml.replace("  - { id: FR-MTP, cap: 40 }\n", &sites);
    assert_problem(
        &too_many,
        "stratification.factors: 10240 strata is more than the 10000",
    );
}

// ------------------------------------------------------------ every limit

#[test]
fn every_limit_is_refused_with_its_path() {
    let cases: Vec<(String, &str)> = vec![
        (
            respine("ratio: 1, active: true", "ratio: 101, active: true"),
            "arms[0].ratio: 101 is above the limit of 100",
        ),
        (
            respine_arms(17, 1),
            "arms: has 17 entries, more than the 16 allowed",
        ),
        (
            respine_arms(11, 100),
            "arms: the ratios add up to 1100, above the limit of 1000",
        ),
        (
            respine("{ id: FR-MTP, cap: 40 }", "{ id: FR-MTP, cap: 1000001 }"),
            "sites[0].cap: 1000001 is above the limit of 1000000",
        ),
        (
            respine(
                "caps: { total: 114 }",
                "caps: { total: 1000001, per_stratum: 1000001 }",
            ),
            "caps.total: 1000001 is above the limit of 1000000",
        ),
        (
            respine("caps: { total: 114 }", "caps: { per_stratum: 4000000000 }"),
            "caps.per_stratum: 4000000000 is above the limit of 1000000",
        ),
        (
            respine_method(
                "kind: permuted_blocks\n  block_sizes: [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22]",
            ),
            "method.block_sizes: has 11 entries, more than the 10 allowed",
        ),
        (
            respine_method("kind: permuted_blocks\n  block_sizes: [2000]"),
            "method.block_sizes[0]: block size 2000 must be a multiple of the ratio sum 2, from 1 to 1000",
        ),
        (
            respine_method("kind: big_stick\n  bound: 1001"),
            "method.bound: 1001 is above the limit of 1000",
        ),
        (
            respine_method("kind: maximal_procedure\n  bound: 1000\n  sequence_length: 1000"),
            "method.bound: (sequence_length + 1) × (2·bound + 1) is above the limit of 1000000",
        ),
        (
            respine_method("kind: maximal_procedure\n  bound: 2\n  sequence_length: 1002"),
            "method.sequence_length: must be a multiple of the ratio sum 2, from 2 to 1000",
        ),
        (
            respine_method("kind: uploaded_list\n  warn_remaining: 2000000"),
            "method.warn_remaining: 2000000 is above the limit of 1000000",
        ),
        (
            facet("factors: { sex: 1 }", "factors: { sex: 1001 }"),
            "method.factors.sex: a factor weight must be at most 1000",
        ),
        (
            facet(
                "{ id: blinded, months: 6 }",
                "{ id: blinded, months: 1201 }",
            ),
            "periods[0].months: 1201 is above the limit of 1200",
        ),
        (
            facet("safety_window_months: 18", "safety_window_months: 5000000"),
            "safety.safety_window_months: 5000000 is above the limit of 1200",
        ),
        (
            respine(
                "\"R-{6 random base32}\"",
                &format!("\"R-{}{{6 random base32}}\"", "X".repeat(63)),
            ),
            "blinding.code_format: 'R-XXX",
        ),
    ];
    for (yaml, needle) in &cases {
        assert_problem(yaml, needle);
    }
    let enum_values: Vec<String> = (0..101).map(|i| format!("v{i}")).collect();
    assert_problem(
        &respine(
            "  - { id: ddd_on_mri,       type: boolean }",
            &format!(
                "  - {{ id: ddd_on_mri, type: boolean }}\n  - {{ id: grade, type: enum, values: [{}] }}",
                enum_values.join(", ")
            ),
        ),
        "covariates[4].values: has 101 entries, more than the 100 allowed",
    );
    let covariates: String = (0..100)
        .map(|i| format!("  - {{ id: c{i}, type: boolean }}\n"))
        .collect();
    assert_problem(
        &respine("eligibility:", &format!("{covariates}eligibility:")),
        "covariates: has 105 entries, more than the 100 allowed",
    );
    let criteria: String = (0..100)
        .map(|i| format!("  - {{ id: e{i}, rule: \"age_years >= 18\" }}\n"))
        .collect();
    assert_problem(
        &respine("stratification:", &format!("{criteria}stratification:")),
        "eligibility: has 105 entries, more than the 100 allowed",
    );
    let long_rule = format!("age_years in [{}]", vec!["a"; 500].join(", "));
    assert_problem(
        &respine(
            "\"age_years between 18 and 60\"",
            &format!("\"{long_rule}\""),
        ),
        "eligibility[0].rule: is 1513 characters, more than the 1000 a rule may have",
    );
    let levels: Vec<String> = (0..101).map(|i| format!("l{i}: \"== {i}\"")).collect();
    assert_problem(
        &respine(
            "levels: { moderate: \"< 70\", severe: \">= 70\" }",
            &format!("levels: {{ {} }}", levels.join(", ")),
        ),
        "stratification.factors[1].levels: has 101 entries, more than the 100 allowed",
    );
    let periods: String = (0..21)
        .map(|i| format!("  - {{ id: p{i}, months: 1 }}\n"))
        .collect();
    assert_problem(
        &facet(
            "  - { id: blinded, months: 6 }\n  - { id: crossover, months: 6, crossover: { from: DMSO, to: MSC }, planned_unblinding_at_start: true }\n",
            &periods,
        ),
        "periods: has 21 entries, more than the 20 allowed",
    );
    let versions: String = (0..101)
        .map(|i| {
            format!(
                "    - {{ version: v{i}, effective_from: {}-01-01, expected_events: [] }}\n",
                1900 + i
            )
        })
        .collect();
    assert_problem(
        &respine(
            "  reference_safety_information: RSI-v3\n  expected_events: [injection site pain, transient radicular pain, headache]\n",
            &format!("  reference_safety_information:\n{versions}"),
        ),
        "safety.reference_safety_information: has 101 entries, more than the 100 allowed",
    );
}

#[test]
fn the_site_limit_is_refused_with_its_path() {
    let sites: String = (0..=MAX_SITES)
        .map(|i| format!("  - {{ id: S{i} }}\n"))
        .collect();
    let yaml = respine("  - { id: FR-MTP, cap: 40 }\n", &sites);
    assert_problem(&yaml, "sites: has 5005 entries, more than the 5000 allowed");
}

#[test]
fn an_oversized_document_is_refused_before_parsing() {
    let padding = format!("# {}\n", "x".repeat(MAX_DEFINITION_BYTES));
    let problems = problems_of(&format!("{padding}{RESPINE}"));
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].starts_with("(document): is 264") && problems[0].contains("262144"),
        "{problems:#?}"
    );
}

/// The problem list goes back in one error status: it is kept short.
#[test]
fn problems_are_listed_up_to_a_limit_then_counted() {
    let unknown: String = (0..500).map(|i| format!("unknown_{i}: 1\n")).collect();
    let problems = problems_of(&format!("{RESPINE}{unknown}"));
    assert_eq!(problems.len(), MAX_PROBLEMS + 1);
    assert_eq!(
        problems.last().map(String::as_str),
        Some("(document): 400 more problems not listed")
    );
}

/// The largest design the limits allow still parses: the bounds refuse
/// only what no trial needs.
#[test]
fn the_limits_themselves_are_allowed() {
    let two_arms = respine(
        RESPINE_ARMS,
        "  - { id: A, label: a, ratio: 100 }\n  - { id: B, label: b, ratio: 100 }\n",
    )
    .replace(
        "caps: { total: 114 }",
        "caps: { total: 115, per_stratum: 1000000 }",
    )
    .replace(
        "block_sizes: [2, 4]",
        "block_sizes: [200, 400, 600, 800, 1000]",
    );
    parse_definition(&two_arms).expect("ratios 100:100 with blocks up to 1000");
    let maximal = respine_method("kind: maximal_procedure\n  bound: 499\n  sequence_length: 998");
    parse_definition(&maximal).expect("a completion table of 998 999 cells");
}

// ------------------------------------------------------------ anchors

const ALIAS_PROBLEM: &str = "YAML anchors (&name) and aliases (*name) are not allowed";

#[test]
fn yaml_anchors_and_aliases_are_refused() {
    let anchored_title = respine("title: Allogeneic", "title: &t Allogeneic");
    assert_problem(&anchored_title, "line 5 column 8: YAML anchors");
    let aliased = respine("label: \"Sham paravertebral injection\"", "label: *t")
        .replace("title: Allogeneic", "title: &t Allogeneic");
    assert_problem(&aliased, ALIAS_PROBLEM);
    let anchored_mapping = respine("caps: { total: 114 }", "caps: &c { total: 114 }");
    assert_problem(&anchored_mapping, ALIAS_PROBLEM);
    let anchored_flow_item = respine("block_sizes: [2, 4]", "block_sizes: [&b 2, *b]");
    assert_problem(&anchored_flow_item, ALIAS_PROBLEM);
    let anchored_block = respine("sites:\n", "sites: &s\n");
    assert_problem(&anchored_block, ALIAS_PROBLEM);
    // An alias with no anchor is refused as an alias.
    let alias_alone = respine("caps: { total: 114 }", "caps: *c");
    assert_problem(&alias_alone, ALIAS_PROBLEM);
    // The review's minimal case.
    assert_problem("a: &x foo\nb: *x\n", ALIAS_PROBLEM);
}

/// Billion laughs against one large scalar: refused before any alias is
/// expanded (today this materialises 8 000 copies of a 16 KiB string).
#[test]
fn an_alias_bomb_is_refused_without_expanding_it() {
    let bomb = format!(
        "id: &a \"{}\"\ntitle: [{}]\n",
        "x".repeat(16 * 1024),
        vec!["*a"; 8_000].join(", ")
    );
    assert!(bomb.len() < MAX_DEFINITION_BYTES);
    let problems = problems_of(&bomb);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains(ALIAS_PROBLEM), "{problems:?}");
}

/// `&` and `*` are ordinary text inside quotes, plain scalars, block
/// scalars and comments, and stay in the values exactly.
#[test]
fn ampersands_and_asterisks_in_text_are_allowed() {
    let yaml = respine(
        "title: Allogeneic BM-MSC vs sham intradiscal injection for chronic low back pain",
        "title: \"R&D: &quoted *also\"   # a comment with &anchor and *alias",
    )
    .replace(
        "label: \"Sham paravertebral injection\"",
        "label: 'Sham & *placebo* ''&x'''",
    )
    .replace(
        "label: \"BM-MSC 20e6 cells in 2 ml, intradiscal\"",
        "label: MSC & co *star",
    )
    .replace(
        "# retention: trial end + 30 years",
        "# R&D *note* &x\n# &anchor-looking comment\n",
    )
    .replace(
        "reference_safety_information: RSI-v3",
        "reference_safety_information: |\n    RSI &v3\n    *amended",
    )
    .replace(
        "[injection site pain, transient radicular pain, headache]",
        "[\"&pain\", 'site *x', \"a\\u0026b\"]",
    );
    let trial = parse_definition(&yaml).unwrap_or_else(|p| panic!("{:#?}", p.0));
    assert_eq!(trial.title, "R&D: &quoted *also");
    assert_eq!(trial.arms[0].label, "MSC & co *star");
    assert_eq!(trial.arms[1].label, "Sham & *placebo* '&x'");
    assert_eq!(
        trial.safety.reference_safety_information,
        ReferenceSafetyInformation::Single("RSI &v3\n*amended\n".into())
    );
    assert_eq!(trial.safety.expected_events, ["&pain", "site *x", "a&b"]);
}

/// Lines that continue a plain scalar may start with `&` or `*`: the
/// parser, not a guess at the syntax, decides what is an anchor.
#[test]
fn continuation_lines_starting_with_an_indicator_are_text() {
    let yaml = respine(
        "title: Allogeneic BM-MSC vs sham intradiscal injection for chronic low back pain",
        "title: Allogeneic BM-MSC\n  &vs sham\n  *intradiscal",
    );
    let trial = parse_definition(&yaml).unwrap_or_else(|p| panic!("{:#?}", p.0));
    assert_eq!(trial.title, "Allogeneic BM-MSC &vs sham *intradiscal");
}

// ------------------------------------------------------------ non-finite

#[test]
fn non_finite_numbers_are_refused_with_their_path() {
    for (yaml, needle) in [
        (
            respine(
                "type: integer, min: 0, max: 120",
                "type: integer, min: .nan, max: 120",
            ),
            "covariates[0].min: must be a finite number, not NaN",
        ),
        (
            respine(
                "type: decimal, min: 0, max: 100",
                "type: decimal, min: -.inf, max: .inf",
            ),
            "covariates[2].max: must be a finite number, not inf",
        ),
        (
            respine(
                "type: decimal, min: 0, max: 100",
                "type: decimal, min: -.inf, max: 100",
            ),
            "covariates[2].min: must be a finite number, not -inf",
        ),
        (
            facet("p: 0.8", "p: .nan"),
            "method.p: must be a finite number, not NaN",
        ),
        (
            facet("factors: { sex: 1 }", "factors: { sex: .inf }"),
            "method.factors.sex: must be a finite number, not inf",
        ),
        (
            respine_method("kind: biased_coin\n  p: .Inf"),
            "method.p: must be a finite number, not inf",
        ),
    ] {
        assert_problem(&yaml, needle);
    }
}

/// A 400-digit threshold parses as ±infinity, and both signs had the same
/// canonical hash (the review's I3): such numbers are refused.
#[test]
fn rule_numbers_out_of_range_are_refused() {
    let huge = format!("1{}", "0".repeat(400));
    let above = respine("\"vas_mm > 40\"", &format!("\"vas_mm > {huge}\""));
    assert_problem(&above, "eligibility[2].rule: 'vas_mm > 1000");
    assert_problem(&above, "a number of 401 characters is out of range");
    let below = respine("\"vas_mm > 40\"", &format!("\"vas_mm > -{huge}\""));
    assert_problem(&below, "a number of 402 characters is out of range");
    let level = respine("severe: \">= 70\"", &format!("severe: \">= {huge}\""));
    assert_problem(&level, "stratification.factors[1].levels.severe:");
}
