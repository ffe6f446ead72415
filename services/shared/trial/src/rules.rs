//! The rule language of eligibility criteria and stratum levels.
//!
//! A criterion names a covariate and a condition: `age_years between 18 and 60`,
//! `vas_mm > 40`, `ddd_on_mri is true`, `sex in [female, male]`. A stratum
//! level is a condition alone: `< 70`, `>= 70`, `in [north, east]`.

use std::fmt;

use serde::Serialize;

use super::model::CovariateKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Comparison {
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    Equal,
    NotEqual,
}

impl Comparison {
    fn symbol(self) -> &'static str {
        match self {
            Comparison::Less => "<",
            Comparison::LessOrEqual => "<=",
            Comparison::Greater => ">",
            Comparison::GreaterOrEqual => ">=",
            Comparison::Equal => "==",
            Comparison::NotEqual => "!=",
        }
    }

    fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Comparison::Less => left < right,
            Comparison::LessOrEqual => left <= right,
            Comparison::Greater => left > right,
            Comparison::GreaterOrEqual => left >= right,
            Comparison::Equal => left == right,
            Comparison::NotEqual => left != right,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Condition {
    Compare(Comparison, f64),
    /// Inclusive at both ends.
    Between(f64, f64),
    Is(bool),
    In(Vec<String>),
}

/// A value a condition is tested against, already checked for its type.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Boolean(bool),
    Enum(String),
}

impl Condition {
    pub fn holds(&self, value: &Value) -> bool {
        match (self, value) {
            (Condition::Compare(op, bound), Value::Number(x)) => op.holds(*x, *bound),
            (Condition::Between(low, high), Value::Number(x)) => low <= x && x <= high,
            (Condition::Is(expected), Value::Boolean(b)) => expected == b,
            (Condition::In(options), Value::Enum(e)) => options.contains(e),
            _ => false,
        }
    }

    /// Whether this condition can apply to a covariate of `kind`; the reason if not.
    pub fn check_against(&self, kind: &CovariateKind) -> Result<(), String> {
        match (self, kind) {
            (Condition::Compare(..) | Condition::Between(..), CovariateKind::Integer { .. })
            | (Condition::Compare(..) | Condition::Between(..), CovariateKind::Decimal { .. })
            | (Condition::Is(_), CovariateKind::Boolean) => Ok(()),
            (Condition::In(options), CovariateKind::Enum { values }) => {
                match options.iter().find(|o| !values.contains(o)) {
                    Some(unknown) => Err(format!(
                        "'{unknown}' is not a value of this enumeration ({})",
                        values.join(", ")
                    )),
                    None => Ok(()),
                }
            }
            (_, kind) => Err(format!(
                "this condition cannot apply to a {} covariate",
                kind.name()
            )),
        }
    }

    /// The condition as an interval of the real line, for overlap checks.
    pub fn interval(&self) -> Option<Interval> {
        let open = |at: f64, closed: bool| Bound { at, closed };
        let (low, high) = match self {
            Condition::Compare(Comparison::Less, x) => (None, Some(open(*x, false))),
            Condition::Compare(Comparison::LessOrEqual, x) => (None, Some(open(*x, true))),
            Condition::Compare(Comparison::Greater, x) => (Some(open(*x, false)), None),
            Condition::Compare(Comparison::GreaterOrEqual, x) => (Some(open(*x, true)), None),
            Condition::Compare(Comparison::Equal, x) => {
                (Some(open(*x, true)), Some(open(*x, true)))
            }
            Condition::Between(a, b) => (Some(open(*a, true)), Some(open(*b, true))),
            _ => return None,
        };
        Some(Interval { low, high })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    pub at: f64,
    pub closed: bool,
}

/// `None` ends are unbounded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub low: Option<Bound>,
    pub high: Option<Bound>,
}

impl Interval {
    pub fn overlaps(&self, other: &Interval) -> bool {
        below(self.low, other.high) && below(other.low, self.high)
    }
}

/// Whether some x lies at or above `low` and at or below `high`.
fn below(low: Option<Bound>, high: Option<Bound>) -> bool {
    match (low, high) {
        (Some(l), Some(h)) => l.at < h.at || (l.at == h.at && l.closed && h.closed),
        _ => true,
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Compare(op, x) => write!(f, "{} {x}", op.symbol()),
            Condition::Between(a, b) => write!(f, "between {a} and {b}"),
            Condition::Is(b) => write!(f, "is {b}"),
            Condition::In(options) => write!(f, "in [{}]", options.join(", ")),
        }
    }
}

/// `covariate condition`, e.g. `vas_mm > 40`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    pub covariate: String,
    pub condition: Condition,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.covariate, self.condition)
    }
}

pub fn parse_rule(text: &str) -> Result<Rule, String> {
    let mut tokens = tokenize(text)?;
    if tokens.is_empty() {
        return Err("empty rule".into());
    }
    let covariate = match tokens.remove(0) {
        Token::Word(w) => w,
        other => {
            return Err(format!(
                "a rule starts with a covariate name, not '{other}'"
            ));
        }
    };
    let condition = parse_tokens(tokens)?;
    Ok(Rule {
        covariate,
        condition,
    })
}

pub fn parse_condition(text: &str) -> Result<Condition, String> {
    parse_tokens(tokenize(text)?)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Number(f64),
    Operator(Comparison),
    Open,
    Close,
    Comma,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Word(w) => f.write_str(w),
            Token::Number(x) => write!(f, "{x}"),
            Token::Operator(op) => f.write_str(op.symbol()),
            Token::Open => f.write_str("["),
            Token::Close => f.write_str("]"),
            Token::Comma => f.write_str(","),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '[' || c == ']' || c == ',' {
            chars.next();
            tokens.push(match c {
                '[' => Token::Open,
                ']' => Token::Close,
                _ => Token::Comma,
            });
        } else if "<>=!".contains(c) {
            let mut op = String::new();
            while let Some(&o) = chars.peek().filter(|o| "<>=!".contains(**o)) {
                op.push(o);
                chars.next();
            }
            tokens.push(Token::Operator(operator(&op)?));
        } else if c.is_ascii_digit() || c == '-' || c == '.' {
            let mut number = String::new();
            while let Some(&d) = chars
                .peek()
                .filter(|d| d.is_ascii_digit() || **d == '.' || **d == '-')
            {
                number.push(d);
                chars.next();
            }
            let value: f64 = number
                .parse()
                .map_err(|_| format!("'{number}' is not a number"))?;
            // 309 digits or more parse as ±infinity, which the canonical
            // form would write as null: the sign would not reach the hash.
            if !value.is_finite() {
                return Err(format!(
                    "a number of {} characters is out of range",
                    number.len()
                ));
            }
            tokens.push(Token::Number(value));
        } else if c.is_alphanumeric() || c == '_' {
            let mut word = String::new();
            while let Some(&w) = chars
                .peek()
                .filter(|w| w.is_alphanumeric() || **w == '_' || **w == '-')
            {
                word.push(w);
                chars.next();
            }
            tokens.push(Token::Word(word));
        } else {
            return Err(format!("unexpected character '{c}'"));
        }
    }
    Ok(tokens)
}

fn operator(text: &str) -> Result<Comparison, String> {
    Ok(match text {
        "<" => Comparison::Less,
        "<=" => Comparison::LessOrEqual,
        ">" => Comparison::Greater,
        ">=" => Comparison::GreaterOrEqual,
        "==" | "=" => Comparison::Equal,
        "!=" => Comparison::NotEqual,
        other => return Err(format!("unknown operator '{other}'")),
    })
}

fn parse_tokens(tokens: Vec<Token>) -> Result<Condition, String> {
    let expected = "expected '<', '<=', '>', '>=', '==', '!=', 'between A and B', 'is true|false' or 'in [a, b]'";
    match tokens.as_slice() {
        [Token::Operator(op), Token::Number(x)] => Ok(Condition::Compare(*op, *x)),
        [
            Token::Word(between),
            Token::Number(a),
            Token::Word(and),
            Token::Number(b),
        ] if between == "between" && and == "and" => {
            if a > b {
                Err(format!(
                    "between {a} and {b} is empty: the lower bound is above the upper"
                ))
            } else {
                Ok(Condition::Between(*a, *b))
            }
        }
        [Token::Word(is), Token::Word(value)] if is == "is" => match value.as_str() {
            "true" => Ok(Condition::Is(true)),
            "false" => Ok(Condition::Is(false)),
            other => Err(format!("'is' takes true or false, not '{other}'")),
        },
        [Token::Word(word), Token::Open, rest @ .., Token::Close] if word == "in" => {
            parse_options(rest)
        }
        _ => Err(expected.into()),
    }
}

fn parse_options(tokens: &[Token]) -> Result<Condition, String> {
    let mut options = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        match (i % 2, token) {
            (0, Token::Word(w)) => options.push(w.clone()),
            (1, Token::Comma) => {}
            _ => {
                return Err(format!(
                    "'in [...]' takes comma-separated names; found '{token}'"
                ));
            }
        }
    }
    if options.is_empty() || tokens.len().is_multiple_of(2) {
        return Err("'in [...]' needs at least one name and no trailing comma".into());
    }
    Ok(Condition::In(options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_used_by_the_example_trials() {
        let rule = parse_rule("age_years between 18 and 60").expect("rule");
        assert_eq!(rule.covariate, "age_years");
        assert_eq!(rule.condition, Condition::Between(18.0, 60.0));
        assert_eq!(
            parse_rule("lbp_months >= 3").expect("rule").condition,
            Condition::Compare(Comparison::GreaterOrEqual, 3.0)
        );
        assert_eq!(
            parse_rule("ddd_on_mri is true").expect("rule").condition,
            Condition::Is(true)
        );
        assert_eq!(
            parse_condition("in [female, male]").expect("condition"),
            Condition::In(vec!["female".into(), "male".into()])
        );
        assert_eq!(
            parse_condition("< 70").expect("condition"),
            Condition::Compare(Comparison::Less, 70.0)
        );
        assert_eq!(
            parse_condition(">= 40.5").expect("condition"),
            Condition::Compare(Comparison::GreaterOrEqual, 40.5)
        );
    }

    #[test]
    fn rejects_malformed_rules_with_a_reason() {
        for bad in [
            "",
            "age",
            "age between 60 and 18",
            "age is maybe",
            "age => 3",
            "age in [a,]",
            "> 3 age",
        ] {
            assert!(parse_rule(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn conditions_evaluate_inclusively_where_documented() {
        let between = Condition::Between(18.0, 60.0);
        assert!(between.holds(&Value::Number(18.0)));
        assert!(between.holds(&Value::Number(60.0)));
        assert!(!between.holds(&Value::Number(60.5)));
        assert!(!Condition::Compare(Comparison::Greater, 40.0).holds(&Value::Number(40.0)));
        assert!(!Condition::Is(true).holds(&Value::Number(1.0)));
    }

    #[test]
    fn intervals_detect_overlap_at_shared_bounds() {
        let below = parse_condition("< 70").expect("c").interval().expect("i");
        let above = parse_condition(">= 70").expect("c").interval().expect("i");
        let at_most = parse_condition("<= 70").expect("c").interval().expect("i");
        assert!(!below.overlaps(&above));
        assert!(at_most.overlaps(&above));
    }

    #[test]
    fn display_is_a_canonical_form_that_parses_back() {
        for text in [
            "age_years  between 18   and 60",
            "vas_mm>40",
            "sex in [female,male]",
            "x is false",
        ] {
            let rule = parse_rule(text).expect("rule");
            assert_eq!(parse_rule(&rule.to_string()).expect("reparse"), rule);
        }
    }
}
