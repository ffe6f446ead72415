//! Fuzzing the definition parser (issue 7, item 6): whatever text arrives,
//! `parse_definition` returns a definition within the limits or a short
//! list of problems, and never panics.
//!
//! Three kinds of input: the examples' YAML trees with subtrees replaced,
//! inserted or removed; the examples' text with YAML syntax spliced in; and
//! arbitrary text and bytes. `make test` runs proptest's default number of
//! cases; `make fuzz` runs many more (`PROPTEST_CASES`, release build).

use proptest::prelude::*;
use proptest::sample::{Index, select};
use serde_norway::{Mapping, Value};

use crate::examples::{FACET_CROSSOVER, RESPINE};
use crate::limits::*;
use crate::rules::Condition;
use crate::{MAX_CODE_POOL_SIZE, TrialDefinition, parse_definition};

/// The case count comes from `PROPTEST_CASES` when set; no regression files
/// are written into the source tree.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Every key of the format, so random trees reach deep into validation.
const KEYS: &[&str] = &[
    "id",
    "version",
    "title",
    "sponsor_time_zone",
    "atmp",
    "arms",
    "sites",
    "caps",
    "covariates",
    "eligibility",
    "stratification",
    "method",
    "periods",
    "blinding",
    "unblinding",
    "safety",
    "label",
    "ratio",
    "active",
    "cap",
    "total",
    "per_stratum",
    "type",
    "values",
    "min",
    "max",
    "rule",
    "factors",
    "from",
    "levels",
    "kind",
    "sample_size",
    "rho",
    "alpha",
    "beta",
    "block_sizes",
    "imbalance",
    "p",
    "bound",
    "sequence_length",
    "warn_remaining",
    "months",
    "crossover",
    "to",
    "planned_unblinding_at_start",
    "planned_unblinding_roles",
    "mode",
    "code_format",
    "emergency_roles",
    "reauth_max_age_minutes",
    "after_emergency_unblinding",
    "reference_safety_information",
    "expected_events",
    "safety_window_months",
    "effective_from",
];

/// Strings the format gives meaning to, and edge cases of numbers in text.
const WORDS: &[&str] = &[
    "permuted_blocks",
    "minimisation",
    "biased_coin",
    "big_stick",
    "maximal_procedure",
    "uploaded_list",
    "random_allocation_rule",
    "chen_biased_coin",
    "adjustable_biased_coin",
    "generalised_biased_coin",
    "urn",
    "truncated_binomial",
    "treatment_codes",
    "integer",
    "decimal",
    "boolean",
    "enum",
    "site",
    "range",
    "variance",
    "sd",
    "continue",
    "withdraw",
    "Europe/Paris",
    "2025-01-01",
    "2026-02-30",
    "{6 random base32}",
    "R-{2 random digits}",
    "{99 random base32}",
    "{",
    "vas_mm > 40",
    "age_years between 18 and 60",
    "x in [a, b]",
    "x is true",
    "< 70",
    ">= 70",
    "!= 5",
    "== 1e400",
    "> 1000000000000000000000000000000000000000000",
    "between 5 and 1",
    "in [",
    "site_investigator",
    "medical_monitor",
    "MSC",
    "SHAM",
    "FR-MTP",
    "vas_mm",
    "sex",
    "female",
    "",
    " ",
    "-",
    "é",
    "\u{0}",
    "&a",
    "*a",
];

/// YAML syntax to splice into text.
const SNIPPETS: &[&str] = &[
    "&a ",
    "*a",
    "&a",
    ": ",
    "- ",
    "? ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\"",
    "'",
    "#",
    "|",
    ">",
    "\n",
    "\n  ",
    "\n    - ",
    "!!str ",
    "!!binary ",
    "!tag ",
    "---\n",
    "...\n",
    "%YAML 1.2\n",
    ".nan",
    ".inf",
    "-.inf",
    "4294967296",
    "18446744073709551616",
    "-1",
    "0",
    "1e308",
    "0x10",
    "~",
    "null",
    "<<: ",
    "\t",
    "\\",
    "@",
    "`",
    "\u{feff}",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u32>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        select(vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e300,
            -0.0
        ])
        .prop_map(Value::from),
        select(WORDS).prop_map(|w| Value::String(w.to_owned())),
        "[a-zA-Z0-9_ <>=!.,\\[\\]-]{0,24}".prop_map(Value::String),
    ]
}

fn key() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => select(KEYS).prop_map(|k| Value::String(k.to_owned())),
        1 => leaf(),
    ]
}

fn tree() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Sequence),
            prop::collection::vec((key(), inner), 0..8)
                .prop_map(|entries| Value::Mapping(entries.into_iter().collect::<Mapping>())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Edit {
    Replace(Index, Value),
    Insert(Index, Value, Value),
    Remove(Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), tree()).prop_map(|(at, v)| Edit::Replace(at, v)),
        (any::<Index>(), key(), tree()).prop_map(|(at, k, v)| Edit::Insert(at, k, v)),
        any::<Index>().prop_map(Edit::Remove),
    ]
}

fn example_tree(facet: bool) -> Value {
    let text = if facet { FACET_CROSSOVER } else { RESPINE };
    serde_norway::from_str(text).expect("the examples are YAML")
}

fn count_nodes(value: &Value) -> usize {
    1 + match value {
        Value::Sequence(items) => items.iter().map(count_nodes).sum(),
        Value::Mapping(map) => map.values().map(count_nodes).sum(),
        Value::Tagged(tagged) => count_nodes(&tagged.value),
        _ => 0,
    }
}

/// The `n`th node in pre-order, counting down through `n`.
fn nth_node<'a>(value: &'a mut Value, n: &mut usize) -> Option<&'a mut Value> {
    if *n == 0 {
        return Some(value);
    }
    *n -= 1;
    match value {
        Value::Sequence(items) => items.iter_mut().find_map(|v| nth_node(v, n)),
        Value::Mapping(map) => map.values_mut().find_map(|v| nth_node(v, n)),
        Value::Tagged(tagged) => nth_node(&mut tagged.value, n),
        _ => None,
    }
}

fn apply(value: &mut Value, edit: Edit) {
    let nodes = count_nodes(value);
    let target = |at: &Index| at.index(nodes);
    match edit {
        Edit::Replace(at, replacement) => {
            if let Some(node) = nth_node(value, &mut target(&at)) {
                *node = replacement;
            }
        }
        Edit::Insert(at, key, item) => match nth_node(value, &mut target(&at)) {
            Some(Value::Mapping(map)) => {
                map.insert(key, item);
            }
            Some(Value::Sequence(items)) => items.push(item),
            _ => {}
        },
        Edit::Remove(at) => match nth_node(value, &mut target(&at)) {
            Some(Value::Mapping(map)) if !map.is_empty() => {
                let first = map.keys().next().cloned();
                if let Some(first) = first {
                    map.remove(&first);
                }
            }
            Some(Value::Sequence(items)) => {
                items.pop();
            }
            _ => {}
        },
    }
}

/// What every outcome must satisfy: a definition within the limits, or a
/// short, non-empty list of problems.
fn check_outcome(yaml: &str) {
    match parse_definition(yaml) {
        Ok(trial) => check_within_limits(&trial),
        Err(problems) => {
            assert!(!problems.0.is_empty(), "refused with no problem");
            assert!(
                problems.0.len() <= MAX_PROBLEMS + 1,
                "{} problems",
                problems.0.len()
            );
        }
    }
}

fn check_within_limits(trial: &TrialDefinition) {
    assert!((2..=MAX_ARMS).contains(&trial.arms.len()));
    assert!(trial.ratio_sum() <= MAX_RATIO_SUM);
    assert!(trial.sites.len() <= MAX_SITES);
    assert!(trial.stratification.len() <= MAX_FACTORS);
    assert!(trial.all_strata().len() <= MAX_STRATA);
    assert!(trial.code_pool_size() <= u64::from(MAX_CODE_POOL_SIZE));
    let conditions = trial.eligibility.iter().map(|c| &c.rule.condition).chain(
        trial
            .stratification
            .iter()
            .flat_map(|f| f.levels.iter().filter_map(|l| l.condition.as_ref())),
    );
    for condition in conditions {
        match condition {
            Condition::Compare(_, x) => assert!(x.is_finite(), "{condition}"),
            Condition::Between(a, b) => assert!(a.is_finite() && b.is_finite(), "{condition}"),
            Condition::Is(_) | Condition::In(_) => {}
        }
    }
    assert_eq!(trial.canonical_sha256().len(), 64);
}

/// Characters are spliced by index, so edits never split a UTF-8 sequence.
fn splice(text: &str, at: Index, delete: usize, insert: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let start = at.index(chars.len() + 1);
    let end = (start + delete).min(chars.len());
    chars[..start]
        .iter()
        .chain(insert.chars().collect::<Vec<_>>().iter())
        .chain(chars[end..].iter())
        .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_mutated_definition_trees(facet in any::<bool>(), edits in prop::collection::vec(edit(), 1..4)) {
        let mut value = example_tree(facet);
        for edit in edits {
            apply(&mut value, edit);
        }
        if let Ok(yaml) = serde_norway::to_string(&value) {
            check_outcome(&yaml);
        }
    }

    #[test]
    fn fuzz_edited_definition_text(
        facet in any::<bool>(),
        edits in prop::collection::vec(
            (any::<Index>(), 0usize..16, prop_oneof![select(SNIPPETS).prop_map(str::to_owned), "\\PC{0,8}"]),
            1..6,
        ),
    ) {
        let mut text = if facet { FACET_CROSSOVER } else { RESPINE }.to_owned();
        for (at, delete, insert) in edits {
            text = splice(&text, at, delete, &insert);
        }
        check_outcome(&text);
    }

    #[test]
    fn fuzz_arbitrary_text_and_bytes(
        text in prop_oneof![
            "\\PC{0,300}",
            "[a-z0-9_ :\\-\\[\\]{},&*!|>'\"#%@?~.\n\t]{0,400}",
            prop::collection::vec(any::<u8>(), 0..400)
                .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        ],
    ) {
        check_outcome(&text);
    }
}
