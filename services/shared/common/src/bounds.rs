//! Bounds on the strings a request carries. Every id and text field is
//! checked where it enters a service, so no request can store, log or look
//! up an unbounded string (review, "Next in line": string lengths in every
//! request). Each violation names its field.

use crate::error::FieldViolation;

/// Longest id: trial, site, subject, arm, period, case, code.
pub const MAX_ID_CHARS: usize = 64;

/// Whether `value` is 1 to [`MAX_ID_CHARS`] letters, digits, '-', '_' or '.'.
pub fn is_identifier(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_ID_CHARS
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub const IDENTIFIER_RULE: &str = "must be 1-64 characters of letters, digits, '-', '_' or '.'";

/// The checks of one request, collecting every violation before answering.
#[derive(Debug, Default)]
pub struct FieldChecks(Vec<FieldViolation>);

impl FieldChecks {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn fail(&mut self, field: &str, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// A required id.
    pub fn id(&mut self, field: &str, value: &str) -> &mut Self {
        if !is_identifier(value) {
            self.fail(field, IDENTIFIER_RULE);
        }
        self
    }

    /// Free text of at most `max` characters, without control characters
    /// other than line breaks and tabs.
    pub fn text(&mut self, field: &str, value: &str, required: bool, max: usize) -> &mut Self {
        if required && value.trim().is_empty() {
            self.fail(field, "is required");
        } else if value.chars().count() > max {
            self.fail(field, format!("is longer than {max} characters"));
        } else if value
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            self.fail(field, "holds control characters");
        }
        self
    }

    /// A list of ids, at most `max_count` of them.
    pub fn ids(&mut self, field: &str, values: &[String], max_count: usize) -> &mut Self {
        if values.len() > max_count {
            self.fail(field, format!("at most {max_count} may be given"));
            return self;
        }
        for (index, value) in values.iter().enumerate() {
            self.id(&format!("{field}[{index}]"), value);
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_violations(self) -> Vec<FieldViolation> {
        self.0
    }

    /// `Ok` when every check passed, else the service's refusal made from
    /// the violations.
    pub fn finish<E>(&mut self, refusal: impl FnOnce(Vec<FieldViolation>) -> E) -> Result<(), E> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(refusal(std::mem::take(&mut self.0)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(checks: FieldChecks) -> Vec<String> {
        checks
            .into_violations()
            .into_iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect()
    }

    #[test]
    fn ids_texts_and_lists_are_bounded_and_named() {
        let long_id = "x".repeat(MAX_ID_CHARS + 1);
        let mut checks = FieldChecks::new();
        checks
            .id("trial_id", "RESPINE")
            .id("subject_id", &long_id)
            .id("site_id", "FR MTP")
            .id("arm_id", "")
            .text("note", "fine\nover two lines", false, 20)
            .text("reason", &"r".repeat(21), true, 20)
            .text("comment", "a\u{7}bell", false, 20)
            .text("name", "  ", true, 20)
            .ids("subject_ids", &["A".into(), long_id.clone()], 5)
            .ids("more_ids", &vec!["A".to_owned(); 6], 5);
        assert_eq!(
            fields(checks),
            [
                format!("subject_id: {IDENTIFIER_RULE}"),
                format!("site_id: {IDENTIFIER_RULE}"),
                format!("arm_id: {IDENTIFIER_RULE}"),
                "reason: is longer than 20 characters".to_owned(),
                "comment: holds control characters".to_owned(),
                "name: is required".to_owned(),
                format!("subject_ids[1]: {IDENTIFIER_RULE}"),
                "more_ids: at most 5 may be given".to_owned(),
            ]
        );
        assert!(is_identifier(&"x".repeat(MAX_ID_CHARS)));
        assert!(!is_identifier("é"));
    }
}
