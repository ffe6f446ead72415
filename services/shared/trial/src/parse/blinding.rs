//! Blinding (mode and treatment-code format), emergency unblinding and
//! safety reporting.

use super::*;

pub(super) fn read_blinding(
    top: &Object<'_>,
    pool_size: u64,
    problems: &mut Problems,
) -> Option<Blinding> {
    let value = top.required("blinding", problems)?;
    let object = Object::new(value, "blinding", &["mode", "code_format"], problems)?;
    let mode = object.string("mode", problems)?;
    if mode != "treatment_codes" {
        problems.add(
            "blinding.mode",
            format!("unknown mode '{mode}'; expected treatment_codes"),
        );
    }
    let source = object
        .optional_string("code_format", problems)
        .unwrap_or_else(|| "{8 random base32}".to_owned());
    let code_format = match parse_code_format(&source) {
        Ok(format) => format,
        Err(reason) => {
            problems.add("blinding.code_format", format!("'{source}': {reason}"));
            return None;
        }
    };
    // The pools the blinding service will generate must fit, and their
    // codes be hard to guess: at least 10^4 unused codes per used one.
    if pool_size > u64::from(crate::MAX_CODE_POOL_SIZE) {
        problems.add(
            "caps.total",
            format!(
                "the code pools would hold {pool_size} codes (cap times the ratio total), above the limit of {}",
                crate::MAX_CODE_POOL_SIZE
            ),
        );
    }
    let needed = (pool_size as f64 * crate::MIN_UNUSED_CODES_PER_CODE).log2();
    if code_format.entropy_bits() < needed {
        problems.add(
            "blinding.code_format",
            format!(
                "'{source}' has too few distinct codes to be unguessable; add random characters"
            ),
        );
    }
    Some(Blinding { mode, code_format })
}

/// `R-{6 random base32}`: literal text and `{N random ALPHABET}` placeholders.
pub fn parse_code_format(source: &str) -> Result<CodeFormat, String> {
    // Every code of the pools is built from the format: its length is a
    // multiplier of the pools' memory.
    if source.chars().count() > MAX_CODE_FORMAT_LENGTH {
        return Err(format!(
            "is longer than the {MAX_CODE_FORMAT_LENGTH} characters a code format may have"
        ));
    }
    let mut segments = Vec::new();
    let mut rest = source;
    while !rest.is_empty() {
        match rest.find('{') {
            Some(0) => {
                let end = rest.find('}').ok_or("a '{' is not closed")?;
                segments.push(parse_placeholder(&rest[1..end])?);
                rest = &rest[end + 1..];
            }
            Some(start) => {
                segments.push(literal(&rest[..start])?);
                rest = &rest[start..];
            }
            None => {
                segments.push(literal(rest)?);
                rest = "";
            }
        }
    }
    if !segments
        .iter()
        .any(|s| matches!(s, CodeSegment::Random { .. }))
    {
        return Err("needs at least one random placeholder such as {6 random base32}".into());
    }
    Ok(CodeFormat {
        source: source.to_owned(),
        segments,
    })
}

fn literal(text: &str) -> Result<CodeSegment, String> {
    if text.contains('}') {
        return Err("a '}' has no matching '{'".into());
    }
    if !text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "literal '{text}' may only hold letters, digits, '-' and '_'"
        ));
    }
    Ok(CodeSegment::Literal(text.to_owned()))
}

fn parse_placeholder(text: &str) -> Result<CodeSegment, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let [length, "random", alphabet] = words.as_slice() else {
        return Err(format!(
            "'{{{text}}}' is not of the form {{N random base32|digits|alphanumeric}}"
        ));
    };
    let length: u32 = length
        .parse()
        .ok()
        .filter(|n| (1..=32).contains(n))
        .ok_or_else(|| format!("'{length}' is not a length from 1 to 32"))?;
    let alphabet = match *alphabet {
        "base32" => CodeAlphabet::Base32,
        "digits" => CodeAlphabet::Digits,
        "alphanumeric" => CodeAlphabet::Alphanumeric,
        other => return Err(format!("unknown alphabet '{other}'")),
    };
    Ok(CodeSegment::Random { length, alphabet })
}

pub(super) fn read_unblinding(top: &Object<'_>, problems: &mut Problems) -> Option<Unblinding> {
    let value = top.required("unblinding", problems)?;
    let keys = &[
        "emergency_roles",
        "reauth_max_age_minutes",
        "after_emergency_unblinding",
    ];
    let object = Object::new(value, "unblinding", keys, problems)?;
    let emergency_roles = object.string_list("emergency_roles", MAX_LIST_NAMES, problems);
    for role in emergency_roles
        .iter()
        .filter(|r| !EMERGENCY_ROLES.contains(&r.as_str()))
    {
        problems.add(
            "unblinding.emergency_roles",
            format!(
                "'{role}' may not unblind in an emergency; expected some of {}",
                EMERGENCY_ROLES.join(", ")
            ),
        );
    }
    if emergency_roles.is_empty() {
        problems.add(
            "unblinding.emergency_roles",
            "someone must be able to unblind in an emergency",
        );
    }
    let reauth_max_age_minutes = object.u32("reauth_max_age_minutes", problems)?;
    if !(1..=1440).contains(&reauth_max_age_minutes) {
        problems.add(
            "unblinding.reauth_max_age_minutes",
            "must be from 1 to 1440",
        );
    }
    let after = match object
        .optional_string("after_emergency_unblinding", problems)
        .as_deref()
    {
        None | Some("continue") => AfterEmergencyUnblinding::Continue,
        Some("withdraw") => AfterEmergencyUnblinding::Withdraw,
        Some(other) => {
            problems.add(
                "unblinding.after_emergency_unblinding",
                format!("'{other}' is not continue or withdraw"),
            );
            return None;
        }
    };
    Some(Unblinding {
        emergency_roles,
        reauth_max_age_minutes,
        after_emergency_unblinding: after,
    })
}

pub(super) fn read_safety(top: &Object<'_>, problems: &mut Problems) -> Option<Safety> {
    let value = top.required("safety", problems)?;
    let keys = &[
        "reference_safety_information",
        "expected_events",
        "safety_window_months",
    ];
    let object = Object::new(value, "safety", keys, problems)?;
    let rsi_value = object.required("reference_safety_information", problems)?;
    let reference_safety_information = match rsi_value {
        serde_norway::Value::Sequence(_) => {
            if object.get("expected_events").is_some() {
                problems.add(
                    "safety.expected_events",
                    "is ambiguous beside versioned reference_safety_information: \
                     list each version's expected_events under it",
                );
            }
            ReferenceSafetyInformation::Versions(read_rsi_versions(&object, problems)?)
        }
        _ => ReferenceSafetyInformation::Single(
            object.string("reference_safety_information", problems)?,
        ),
    };
    let expected_events = match reference_safety_information {
        ReferenceSafetyInformation::Single(_) => {
            object.string_list("expected_events", MAX_LIST_NAMES, problems)
        }
        ReferenceSafetyInformation::Versions(_) => Vec::new(),
    };
    let safety_window_months = object.u32("safety_window_months", problems)?;
    positive(
        safety_window_months,
        "safety.safety_window_months",
        problems,
    );
    at_most(
        safety_window_months,
        MAX_MONTHS,
        "safety.safety_window_months",
        problems,
    );
    Some(Safety {
        reference_safety_information,
        expected_events,
        safety_window_months,
    })
}

/// The versioned form: `{ version, effective_from: YYYY-MM-DD,
/// expected_events }`, versions unique, dates strictly increasing.
fn read_rsi_versions(object: &Object<'_>, problems: &mut Problems) -> Option<Vec<RsiVersion>> {
    let items = object.list(
        "reference_safety_information",
        true,
        MAX_RSI_VERSIONS,
        problems,
    );
    if items.is_empty() {
        problems.add(
            "safety.reference_safety_information",
            "must list at least one version",
        );
        return None;
    }
    let before = problems.0.len();
    let mut versions: Vec<RsiVersion> = Vec::new();
    for (path, item) in items {
        let keys = &["version", "effective_from", "expected_events"];
        let Some(entry) = Object::new(item, &path, keys, problems) else {
            continue;
        };
        let version = entry.string("version", problems);
        if let Some(version) = &version {
            if version.trim().is_empty() {
                problems.add(&entry.field_path("version"), "must not be empty");
            } else if versions.iter().any(|v| v.version == *version) {
                problems.add(
                    &entry.field_path("version"),
                    format!("'{version}' appears more than once"),
                );
            }
        }
        let effective_from =
            entry
                .string("effective_from", problems)
                .and_then(|text| match calendar_date(&text) {
                    Some(date) => Some(date),
                    None => {
                        problems.add(
                            &entry.field_path("effective_from"),
                            format!("'{text}' is not a valid YYYY-MM-DD date"),
                        );
                        None
                    }
                });
        if let (Some(date), Some(previous)) = (effective_from, versions.last())
            && date <= previous.effective_from
        {
            problems.add(
                &entry.field_path("effective_from"),
                format!(
                    "must be after the previous version's {}",
                    previous.effective_from
                ),
            );
        }
        let expected_events = entry.string_list("expected_events", MAX_LIST_NAMES, problems);
        if let (Some(version), Some(effective_from)) = (version, effective_from) {
            versions.push(RsiVersion {
                version,
                effective_from,
                expected_events,
            });
        }
    }
    (problems.0.len() == before).then_some(versions)
}

/// A calendar date written exactly `YYYY-MM-DD`.
fn calendar_date(text: &str) -> Option<jiff::civil::Date> {
    let shape = text.len() == 10
        && text.char_indices().all(|(i, c)| match i {
            4 | 7 => c == '-',
            _ => c.is_ascii_digit(),
        });
    if !shape {
        return None;
    }
    text.parse().ok()
}
