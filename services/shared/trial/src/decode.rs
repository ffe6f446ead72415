//! A small, error-collecting reader over a parsed YAML tree. Every problem
//! is recorded with its path and reading goes on, so a statistician sees all
//! of them at once instead of one per attempt.

use serde_norway::{Mapping, Value};

/// One thing wrong with a definition, at a path such as `arms[1].ratio`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn add(&mut self, path: &str, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

pub fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

pub fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// A YAML mapping whose keys are checked against what the format allows.
pub struct Object<'a> {
    map: &'a Mapping,
    pub path: String,
}

impl<'a> Object<'a> {
    /// Reads `value` as a mapping with only `allowed` keys, reporting any other.
    pub fn new(
        value: &'a Value,
        path: &str,
        allowed: &[&str],
        problems: &mut Problems,
    ) -> Option<Self> {
        let Some(map) = value.as_mapping() else {
            problems.add(
                path,
                format!("expected a mapping, found {}", kind_of(value)),
            );
            return None;
        };
        for key in map.keys() {
            match key.as_str() {
                Some(name) if allowed.contains(&name) => {}
                Some(name) => problems.add(
                    &child_path(path, name),
                    format!("unknown key; expected one of: {}", allowed.join(", ")),
                ),
                None => problems.add(path, "keys must be strings"),
            }
        }
        Some(Self {
            map,
            path: path.to_owned(),
        })
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    pub fn field_path(&self, key: &str) -> String {
        child_path(&self.path, key)
    }

    pub fn required(&self, key: &str, problems: &mut Problems) -> Option<&'a Value> {
        let value = self.get(key);
        if value.is_none() {
            problems.add(&self.field_path(key), "is required");
        }
        value
    }

    pub fn string(&self, key: &str, problems: &mut Problems) -> Option<String> {
        let value = self.required(key, problems)?;
        as_string(value, &self.field_path(key), problems)
    }

    pub fn optional_string(&self, key: &str, problems: &mut Problems) -> Option<String> {
        let value = self.get(key)?;
        as_string(value, &self.field_path(key), problems)
    }

    pub fn identifier(&self, key: &str, problems: &mut Problems) -> Option<String> {
        let text = self.string(key, problems)?;
        check_identifier(&text, &self.field_path(key), problems).then_some(text)
    }

    pub fn u32(&self, key: &str, problems: &mut Problems) -> Option<u32> {
        let value = self.required(key, problems)?;
        as_u32(value, &self.field_path(key), problems)
    }

    pub fn optional_u32(&self, key: &str, problems: &mut Problems) -> Option<u32> {
        let value = self.get(key)?;
        as_u32(value, &self.field_path(key), problems)
    }

    pub fn f64(&self, key: &str, problems: &mut Problems) -> Option<f64> {
        let value = self.required(key, problems)?;
        as_f64(value, &self.field_path(key), problems)
    }

    pub fn bool_or(&self, key: &str, default: bool, problems: &mut Problems) -> bool {
        match self.get(key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                problems.add(
                    &self.field_path(key),
                    format!("expected true or false, found {}", kind_of(other)),
                );
                default
            }
        }
    }

    /// A sequence field; missing gives an empty list, so callers stay simple.
    /// Items past `max` are reported once and not read, so no later check
    /// runs over an unbounded list.
    pub fn list(
        &self,
        key: &str,
        required: bool,
        max: usize,
        problems: &mut Problems,
    ) -> Vec<(String, &'a Value)> {
        let path = self.field_path(key);
        match self.get(key) {
            None => {
                if required {
                    problems.add(&path, "is required");
                }
                Vec::new()
            }
            Some(Value::Sequence(items)) => {
                too_many(items.len(), max, &path, problems);
                items
                    .iter()
                    .take(max)
                    .enumerate()
                    .map(|(i, v)| (index_path(&path, i), v))
                    .collect()
            }
            Some(other) => {
                problems.add(&path, format!("expected a list, found {}", kind_of(other)));
                Vec::new()
            }
        }
    }

    pub fn string_list(&self, key: &str, max: usize, problems: &mut Problems) -> Vec<String> {
        self.list(key, false, max, problems)
            .into_iter()
            .filter_map(|(path, v)| as_string(v, &path, problems))
            .collect()
    }

    /// A mapping field read as (key, value) pairs in document order, at
    /// most `max` of them (like [`Object::list`]).
    pub fn entries(
        &self,
        key: &str,
        max: usize,
        problems: &mut Problems,
    ) -> Vec<(String, String, &'a Value)> {
        let path = self.field_path(key);
        match self.get(key) {
            None => Vec::new(),
            Some(Value::Mapping(map)) => {
                too_many(map.len(), max, &path, problems);
                map.iter()
                    .take(max)
                    .filter_map(|(k, v)| match k.as_str() {
                        Some(name) => Some((child_path(&path, name), name.to_owned(), v)),
                        None => {
                            problems.add(&path, "keys must be strings");
                            None
                        }
                    })
                    .collect()
            }
            Some(other) => {
                problems.add(
                    &path,
                    format!("expected a mapping, found {}", kind_of(other)),
                );
                Vec::new()
            }
        }
    }
}

/// Reports a list or mapping longer than its limit.
fn too_many(len: usize, max: usize, path: &str, problems: &mut Problems) {
    if len > max {
        problems.add(
            path,
            format!("has {len} entries, more than the {max} allowed"),
        );
    }
}

/// Reports a number above its limit; true when within it.
pub fn at_most(value: u32, max: u32, path: &str, problems: &mut Problems) -> bool {
    if value > max {
        problems.add(path, format!("{value} is above the limit of {max}"));
    }
    value <= max
}

pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

pub fn as_string(value: &Value, path: &str, problems: &mut Problems) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        other => {
            problems.add(path, format!("expected a string, found {}", kind_of(other)));
            None
        }
    }
}

pub fn as_u32(value: &Value, path: &str, problems: &mut Problems) -> Option<u32> {
    match value.as_u64().map(u32::try_from) {
        Some(Ok(n)) => Some(n),
        _ => {
            problems.add(
                path,
                format!("expected a whole number from 0 to {}", u32::MAX),
            );
            None
        }
    }
}

/// A finite number: `.nan`, `.inf` and `-.inf` are YAML numbers, but no
/// bound, weight or probability may be one.
pub fn as_f64(value: &Value, path: &str, problems: &mut Problems) -> Option<f64> {
    match value.as_f64() {
        Some(x) if x.is_finite() => Some(x),
        Some(x) => {
            problems.add(path, format!("must be a finite number, not {x}"));
            None
        }
        None => {
            problems.add(path, format!("expected a number, found {}", kind_of(value)));
            None
        }
    }
}

/// Identifiers appear in stratum keys and randomisation numbers, so they are
/// kept to a safe alphabet.
pub fn check_identifier(text: &str, path: &str, problems: &mut Problems) -> bool {
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        problems.add(
            path,
            format!("'{text}' must be 1-64 letters, digits, '_' or '-'"),
        );
    }
    ok
}
