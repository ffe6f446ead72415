//! The design's concealed parts, and the definition as blinded sponsor roles
//! (`trial_admin`, `auditor`) see it.
//!
//! Concealed: every parameter of `method` (block sizes, minimisation weights
//! and probability, coin and bound parameters, a list's warning threshold)
//! and every comment, which may describe them. The method's `kind`, arms,
//! sites, caps, covariates, eligibility, stratification, blinding and safety
//! settings are protocol facts and stay visible.
//!
//! The redacted YAML keeps `method.kind` and marks the rest `concealed: true`.
//! An amendment sent back with that marker keeps the current method, so a
//! trial administrator can amend caps, eligibility or sites without ever
//! holding the concealed parts.

use serde_norway::{Mapping, Value};

use crate::error::RandomisationError;
use equipoise_trial::Problem;

const METHOD: &str = "method";
const KIND: &str = "kind";
const CONCEALED: &str = "concealed";

/// `yaml` re-written without comments and with `method` reduced to its kind
/// and the marker. Only ever called on a stored (valid) definition.
pub fn redact(yaml: &str) -> Result<String, RandomisationError> {
    let mut document = stored_document(yaml)?;
    let method = method_of(&mut document).ok_or_else(|| internal("has no method mapping"))?;
    let kind = method.get(KIND).cloned().unwrap_or(Value::Null);
    let mut redacted = Mapping::new();
    redacted.insert(Value::from(KIND), kind);
    redacted.insert(Value::from(CONCEALED), Value::Bool(true));
    *method = redacted;
    serde_norway::to_string(&document).map_err(|e| internal(&e.to_string()))
}

/// When `submitted` carries the concealed marker, the submitted text with
/// its top-level `method` block replaced by `current`'s method (as a flow
/// mapping); otherwise `submitted` as it is. The rest of the text is left
/// untouched, so the definition parser still sees exactly what was sent
/// (anchors, duplicate keys and all). The marked method must name the
/// current kind: the method is frozen.
pub fn restore(submitted: &str, current: &str) -> Result<String, RandomisationError> {
    // The definition parser's own loader: a submitted text too large, or
    // with anchors or aliases, is never expanded here either.
    let Ok(mut document) = equipoise_trial::load_yaml(submitted) else {
        // Not acceptable YAML: the parser names the problem.
        return Ok(submitted.to_owned());
    };
    let Some(method) = method_of(&mut document) else {
        return Ok(submitted.to_owned());
    };
    if method.get(CONCEALED) != Some(&Value::Bool(true)) {
        return Ok(submitted.to_owned());
    }
    let submitted_kind = method.get(KIND).cloned();
    let mut stored = stored_document(current)?;
    let current_method = method_of(&mut stored).ok_or_else(|| internal("has no method mapping"))?;
    if submitted_kind.as_ref() != current_method.get(KIND) {
        return Err(method_problem("the method is frozen after activation"));
    }
    // JSON is YAML: one flow mapping on the `method:` line.
    let flow = serde_json::to_string(&current_method).map_err(|e| internal(&e.to_string()))?;
    splice_method(submitted, &format!("{METHOD}: {flow}"))
}

/// `yaml` with its one top-level `method:` entry (the key's line and every
/// indented, blank or comment line after it) replaced by `replacement`.
fn splice_method(yaml: &str, replacement: &str) -> Result<String, RandomisationError> {
    let lines: Vec<&str> = yaml.lines().collect();
    let key = format!("{METHOD}:");
    let starts: Vec<usize> = (0..lines.len())
        .filter(|i| lines[*i].starts_with(&key))
        .collect();
    let [start] = starts.as_slice() else {
        return Err(method_problem(
            "a redacted method must be one top-level `method:` entry",
        ));
    };
    let continues = |line: &str| line.is_empty() || line.starts_with([' ', '\t', '#']);
    let end = start
        + 1
        + lines[start + 1..]
            .iter()
            .take_while(|line| continues(line))
            .count();
    let mut spliced: Vec<&str> = lines[..*start].to_vec();
    spliced.push(replacement);
    spliced.extend_from_slice(&lines[end..]);
    Ok(spliced.join("\n") + "\n")
}

fn method_problem(message: &str) -> RandomisationError {
    RandomisationError::InvalidArgument(vec![Problem {
        path: "definition_yaml: method".into(),
        message: message.into(),
    }])
}

/// A refusal of a redacted amendment, as its sender may read it: problems
/// of the concealed method (a block size that no longer fits the ratios, a
/// bound below one) would echo its parameters, so they become one problem
/// that says only that the method does not fit.
pub fn without_method_details(refusal: RandomisationError) -> RandomisationError {
    let RandomisationError::InvalidArgument(problems) = refusal else {
        return refusal;
    };
    let reveals = |p: &equipoise_trial::Problem| {
        let text = format!("{} {}", p.path, p.message).to_ascii_lowercase();
        ["method", "block", "bound", "weight"]
            .iter()
            .any(|word| text.contains(word))
    };
    let mut kept: Vec<equipoise_trial::Problem> =
        problems.iter().filter(|p| !reveals(p)).cloned().collect();
    if kept.len() < problems.len() {
        kept.push(equipoise_trial::Problem {
            path: "definition_yaml: method".into(),
            message: "the trial's concealed method does not fit the amended arms, ratios or caps; the trial statistician can amend it".into(),
        });
    }
    RandomisationError::InvalidArgument(kept)
}

/// The `id` of a submitted definition whose method carries the concealed
/// marker: the trial whose current method [`restore`] needs.
pub fn marked_trial_id(submitted: &str) -> Option<String> {
    let mut document = equipoise_trial::load_yaml(submitted).ok()?;
    let marked = method_of(&mut document)?.get(CONCEALED) == Some(&Value::Bool(true));
    marked
        .then(|| {
            document
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .flatten()
}

fn stored_document(yaml: &str) -> Result<Value, RandomisationError> {
    serde_norway::from_str(yaml).map_err(|e| internal(&e.to_string()))
}

fn method_of(document: &mut Value) -> Option<&mut Mapping> {
    document.get_mut(METHOD)?.as_mapping_mut()
}

fn internal(problem: &str) -> RandomisationError {
    RandomisationError::Internal(format!("stored definition {problem}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use equipoise_trial::examples::{FACET_CROSSOVER, RESPINE};
    use equipoise_trial::parse_definition;

    /// Review (I2 through the amendment path): a redacted amendment with an
    /// alias bomb is never expanded here; it is handed on untouched, and the
    /// definition parser refuses it.
    #[test]
    fn an_aliased_amendment_is_not_expanded_before_the_parser_refuses_it() {
        let mut bomb = String::from(
            "id: RESPINE\nmethod: {kind: permuted_blocks, concealed: true}\nbig: &a \"",
        );
        bomb.push_str(&"x".repeat(1000));
        bomb.push_str("\"\nmany: [");
        bomb.push_str(&vec!["*a"; 20_000].join(", "));
        bomb.push_str("]\n");
        assert_eq!(restore(&bomb, RESPINE).expect("handed on"), bomb);
        assert_eq!(marked_trial_id(&bomb), None);
        let refused = parse_definition(&bomb).expect_err("refused");
        assert!(
            refused
                .0
                .iter()
                .any(|p| p.message.contains("anchor") || p.message.contains("alias")),
            "{refused:?}"
        );
    }

    /// Review: a redacted amendment whose ratios no longer fit the block
    /// sizes is refused without echoing the block sizes.
    #[test]
    fn a_refused_redacted_amendment_names_no_method_parameter() {
        let redacted = redact(RESPINE).expect("redacts");
        let changed = redacted.replacen("ratio: 1", "ratio: 2", 1);
        assert_ne!(changed, redacted, "the test changes a ratio");
        let restored = restore(&changed, RESPINE).expect("restores");
        let refusal = match parse_definition(&restored) {
            Ok(_) => panic!("2:1 does not fit blocks of 2 and 4"),
            Err(problems) => RandomisationError::InvalidArgument(problems.0),
        };
        assert!(
            format!("{refusal:?}").contains("block"),
            "the raw refusal does"
        );
        let shown = format!("{:?}", without_method_details(refusal));
        for secret in ["block", "[2, 4]", " 4 ", "bound"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("concealed method does not fit"), "{shown}");
    }

    #[test]
    fn the_redacted_definition_has_no_method_parameters_and_no_comments() {
        for yaml in [RESPINE, FACET_CROSSOVER] {
            let redacted = redact(yaml).expect("redacts");
            let document: Value = serde_norway::from_str(&redacted).expect("yaml");
            let method = document.get(METHOD).expect("method");
            let keys: Vec<&str> = method
                .as_mapping()
                .expect("mapping")
                .keys()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(keys, [KIND, CONCEALED]);
            assert!(!redacted.contains('#'), "comments may describe the design");
            let full: Value = serde_norway::from_str(yaml).expect("yaml");
            assert_eq!(document.get("arms"), full.get("arms"));
            assert_eq!(document.get("sites"), full.get("sites"));
        }
        let respine = redact(RESPINE).expect("redacts");
        assert!(!respine.contains("block_sizes"));
        assert!(!respine.contains("2 or 4"));
    }

    #[test]
    fn a_redacted_definition_sent_back_gets_the_current_method() {
        let amended = redact(RESPINE)
            .expect("redacts")
            .replace("version: 1", "version: 2");
        let restored = restore(&amended, RESPINE).expect("restores");
        let definition = parse_definition(&restored).expect("parses");
        let original = parse_definition(RESPINE).expect("parses");
        assert_eq!(definition.method, original.method);
        assert_eq!(definition.version, 2);
        assert_eq!(marked_trial_id(&amended).as_deref(), Some("RESPINE"));
        assert_eq!(marked_trial_id(RESPINE), None);
    }

    #[test]
    fn only_the_method_block_of_the_text_sent_is_replaced() {
        let sent = "id: T # kept\nmethod:\n  kind: permuted_blocks\n\n# note\n  concealed: true\narms: [x] # as sent\n";
        let restored = restore(sent, RESPINE).expect("restores");
        assert_eq!(
            restored,
            "id: T # kept\nmethod: {\"kind\":\"permuted_blocks\",\"block_sizes\":[2,4]}\narms: [x] # as sent\n"
        );
        let flow = "id: T\nmethod: {kind: permuted_blocks, concealed: true}\nversion: 2\n";
        assert!(
            restore(flow, RESPINE)
                .expect("restores")
                .contains("block_sizes")
        );
        let nested = "id: T\nother:\n  method: {kind: permuted_blocks, concealed: true}\n";
        assert_eq!(restore(nested, RESPINE).expect("kept"), nested);
    }

    #[test]
    fn a_marked_method_of_another_kind_is_refused_and_an_unmarked_one_kept() {
        let other_kind = redact(RESPINE)
            .expect("redacts")
            .replace("permuted_blocks", "minimisation");
        assert!(matches!(
            restore(&other_kind, RESPINE),
            Err(RandomisationError::InvalidArgument(_))
        ));
        assert_eq!(restore(RESPINE, RESPINE).expect("kept"), RESPINE);
        assert_eq!(restore("{not yaml", RESPINE).expect("kept"), "{not yaml");
    }
}
