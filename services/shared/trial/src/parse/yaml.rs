//! Text to a YAML tree, refusing what could make one definition costly:
//! an oversized document, and anchors and aliases.
//!
//! Aliases are expanded while the tree is built, so `&a` on a large scalar
//! and many `*a` materialise gigabytes from a small request ("billion
//! laughs"); serde_norway bounds the number of alias jumps, not what they
//! expand to. No definition needs them, so both are refused.
//!
//! Anchors are found by the YAML parser itself, not by a lexical guess: the
//! document is first parsed with every `&` replaced by `@`. Wherever `&` is
//! content (quoted, plain or block scalars, comments, tags) `@` is content
//! too and scans the same way; where `&` starts an anchor, `@` is a reserved
//! indicator that cannot start any token, and the parse fails there. So the
//! first parse succeeds exactly when the document has no anchor, and cannot
//! expand anything (with no anchor, an alias is an unknown anchor). Only then
//! is the document itself parsed.

use serde_norway::Value;

use crate::decode::Problem;
use crate::limits::MAX_DEFINITION_BYTES;

/// What an anchor's `&` becomes in the probing parse.
const ANCHOR_PROBE: &str = "@";

pub(super) fn load(yaml: &str) -> Result<Value, Problem> {
    if yaml.len() > MAX_DEFINITION_BYTES {
        return Err(Problem {
            path: "(document)".to_owned(),
            message: format!(
                "is {} bytes, more than the {MAX_DEFINITION_BYTES} a definition may have",
                yaml.len()
            ),
        });
    }
    if yaml.contains('&') {
        let probe = yaml.replace('&', ANCHOR_PROBE);
        serde_norway::from_str::<Value>(&probe).map_err(|e| refusal(yaml, &e))?;
    }
    serde_norway::from_str(yaml).map_err(|e| refusal(yaml, &e))
}

/// The parse error as a problem at its line and column; an anchor or alias
/// is named as such.
fn refusal(yaml: &str, error: &serde_norway::Error) -> Problem {
    let location = error.location();
    let path = location.as_ref().map_or_else(
        || "(document)".to_owned(),
        |l| format!("line {} column {}", l.line(), l.column()),
    );
    let text = error.to_string();
    let at_ampersand = location
        .as_ref()
        .is_some_and(|l| char_at(yaml, l.line(), l.column()) == Some('&'));
    let message = if text.contains("unknown anchor")
        || (at_ampersand && text.contains("cannot start any token"))
    {
        "YAML anchors (&name) and aliases (*name) are not allowed in a trial definition".to_owned()
    } else {
        format!("not valid YAML: {text}")
    };
    Problem { path, message }
}

/// The character at a 1-based line and column, as the parser counts them.
fn char_at(yaml: &str, line: usize, column: usize) -> Option<char> {
    yaml.split('\n')
        .nth(line.checked_sub(1)?)?
        .chars()
        .nth(column.checked_sub(1)?)
}
