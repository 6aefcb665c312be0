//! The rule language that decides whether a target is a candidate for a
//! request. Rules are JSON, stored as text and checked on every write:
//!
//! ```json
//! {"all": [
//!   {"field": "headers.x-team", "op": "eq", "value": "research"},
//!   {"any": [
//!     {"field": "key", "op": "in", "value": ["batch", "nightly"]},
//!     {"field": "input_tokens", "op": "gt", "value": 8000},
//!     {"field": "body.metadata.tier", "op": "exists"}
//!   ]}
//! ]}
//! ```
//!
//! Fields: `headers.<name>` (case-insensitive), `body.<path>` (dotted, with
//! numeric segments indexing arrays), `key` (the client key's name) and
//! `input_tokens` (the estimate for the request).

use regex::Regex;
use serde_json::Value;

use crate::validate::ValidationError;

/// A parsed, validated rule.
#[derive(Debug, Clone)]
pub enum Rule {
    All(Vec<Rule>),
    Any(Vec<Rule>),
    Not(Box<Rule>),
    Cond(Condition),
}

#[derive(Debug, Clone)]
pub struct Condition {
    pub field: Field,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Header(String),
    Body(Vec<String>),
    Key,
    InputTokens,
}

#[derive(Debug, Clone)]
pub enum Op {
    Eq(Value),
    Ne(Value),
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
    Contains(String),
    Regex(Regex),
    In(Vec<Value>),
    Exists(bool),
}

/// What a rule can see of a request.
pub trait Facts {
    fn header(&self, lower_name: &str) -> Option<&str>;
    fn body(&self) -> Option<&Value>;
    fn key_name(&self) -> &str;
    fn input_tokens(&self) -> u64;
    /// A cheap estimate of the input tokens, for choosing a target by price
    /// (`cost-first`); the rules' own count unless a cheaper one is known.
    fn approximate_input_tokens(&self) -> u64 {
        self.input_tokens()
    }
    /// The request's own cap on output tokens, when it names one.
    fn max_output_tokens(&self) -> Option<u64> {
        None
    }
    /// The time prices are taken at (Unix milliseconds): now, unless a
    /// caller evaluates the request at another time.
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// Nesting bound, so a hostile rule cannot blow the stack.
const MAX_DEPTH: usize = 16;

impl Rule {
    /// Parses rule text; empty text means "no rule" (always a candidate).
    pub fn parse(text: &str) -> Result<Option<Rule>, ValidationError> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        let v: Value = serde_json::from_str(text)
            .map_err(|e| ValidationError(format!("rules are not valid JSON: {e}")))?;
        if v.is_null() {
            return Ok(None);
        }
        Self::from_value(&v, 0).map(Some)
    }

    fn from_value(v: &Value, depth: usize) -> Result<Rule, ValidationError> {
        if depth > MAX_DEPTH {
            return Err(err("rules are nested too deeply"));
        }
        let obj = v
            .as_object()
            .ok_or_else(|| err("a rule must be a JSON object"))?;
        if let Some(list) = obj.get("all").or_else(|| obj.get("any")) {
            if obj.len() != 1 {
                return Err(err("a rule with 'all' or 'any' must have no other keys"));
            }
            let items = list
                .as_array()
                .ok_or_else(|| err("'all' and 'any' take a list of rules"))?;
            let rules = items
                .iter()
                .map(|i| Self::from_value(i, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(if obj.contains_key("all") {
                Rule::All(rules)
            } else {
                Rule::Any(rules)
            });
        }
        if let Some(inner) = obj.get("not") {
            if obj.len() != 1 {
                return Err(err("a rule with 'not' must have no other keys"));
            }
            return Ok(Rule::Not(Box::new(Self::from_value(inner, depth + 1)?)));
        }
        for k in obj.keys() {
            if !matches!(k.as_str(), "field" | "op" | "value") {
                return Err(err(format!(
                    "unknown rule key '{k}'; use all, any, not, or field/op/value"
                )));
            }
        }
        let field = obj
            .get("field")
            .and_then(Value::as_str)
            .ok_or_else(|| err("a condition needs a 'field' string"))?;
        let op = obj
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| err("a condition needs an 'op' string"))?;
        let value = obj.get("value");
        Ok(Rule::Cond(Condition {
            field: parse_field(field)?,
            op: parse_op(op, value)?,
        }))
    }

    /// Whether the request matches.
    pub fn matches(&self, facts: &dyn Facts) -> bool {
        match self {
            Rule::All(rs) => rs.iter().all(|r| r.matches(facts)),
            Rule::Any(rs) => rs.iter().any(|r| r.matches(facts)),
            Rule::Not(r) => !r.matches(facts),
            Rule::Cond(c) => c.matches(facts),
        }
    }
}

fn err(msg: impl Into<String>) -> ValidationError {
    ValidationError(msg.into())
}

fn parse_field(f: &str) -> Result<Field, ValidationError> {
    if f == "key" {
        return Ok(Field::Key);
    }
    if f == "input_tokens" {
        return Ok(Field::InputTokens);
    }
    if let Some(h) = f.strip_prefix("headers.") {
        if h.is_empty() || http::HeaderName::from_bytes(h.as_bytes()).is_err() {
            return Err(err(format!("'{h}' in field '{f}' is not a header name")));
        }
        return Ok(Field::Header(h.to_ascii_lowercase()));
    }
    if let Some(p) = f.strip_prefix("body.") {
        let path: Vec<String> = p.split('.').map(str::to_string).collect();
        if path.iter().any(String::is_empty) {
            return Err(err(format!("field '{f}' has an empty path segment")));
        }
        return Ok(Field::Body(path));
    }
    Err(err(format!(
        "unknown field '{f}'; use headers.<name>, body.<path>, key or input_tokens"
    )))
}

fn number(op: &str, v: Option<&Value>) -> Result<f64, ValidationError> {
    v.and_then(Value::as_f64)
        .ok_or_else(|| err(format!("operator '{op}' needs a number 'value'")))
}

fn parse_op(op: &str, value: Option<&Value>) -> Result<Op, ValidationError> {
    let need = |v: Option<&Value>| {
        v.cloned()
            .ok_or_else(|| err(format!("operator '{op}' needs a 'value'")))
    };
    Ok(match op {
        "eq" => Op::Eq(need(value)?),
        "ne" => Op::Ne(need(value)?),
        "gt" => Op::Gt(number(op, value)?),
        "gte" => Op::Gte(number(op, value)?),
        "lt" => Op::Lt(number(op, value)?),
        "lte" => Op::Lte(number(op, value)?),
        "contains" => Op::Contains(
            value
                .and_then(Value::as_str)
                .ok_or_else(|| err("operator 'contains' needs a string 'value'"))?
                .to_string(),
        ),
        "regex" => {
            let pattern = value
                .and_then(Value::as_str)
                .ok_or_else(|| err("operator 'regex' needs a string 'value'"))?;
            let re = regex::RegexBuilder::new(pattern)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| err(format!("invalid regex '{pattern}': {e}")))?;
            Op::Regex(re)
        }
        "in" => Op::In(
            value
                .and_then(Value::as_array)
                .ok_or_else(|| err("operator 'in' needs a list 'value'"))?
                .clone(),
        ),
        "exists" => Op::Exists(match value {
            None => true,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| err("operator 'exists' takes true, false or no 'value'"))?,
        }),
        other => {
            return Err(err(format!(
                "unknown operator '{other}'; use eq, ne, gt, gte, lt, lte, contains, regex, in or exists"
            )))
        }
    })
}

/// A field's value as seen by a condition.
enum Seen<'a> {
    Missing,
    Text(&'a str),
    Number(f64),
    Json(&'a Value),
}

impl Condition {
    fn matches(&self, facts: &dyn Facts) -> bool {
        let seen = match &self.field {
            Field::Header(h) => facts.header(h).map_or(Seen::Missing, Seen::Text),
            Field::Key => Seen::Text(facts.key_name()),
            Field::InputTokens => Seen::Number(facts.input_tokens() as f64),
            Field::Body(path) => facts
                .body()
                .and_then(|b| lookup(b, path))
                .map_or(Seen::Missing, Seen::Json),
        };
        match &self.op {
            Op::Exists(want) => !matches!(seen, Seen::Missing) == *want,
            Op::Eq(v) => equals(&seen, v),
            Op::Ne(v) => !equals(&seen, v),
            Op::Gt(n) => as_number(&seen).is_some_and(|x| x > *n),
            Op::Gte(n) => as_number(&seen).is_some_and(|x| x >= *n),
            Op::Lt(n) => as_number(&seen).is_some_and(|x| x < *n),
            Op::Lte(n) => as_number(&seen).is_some_and(|x| x <= *n),
            Op::Contains(s) => match &seen {
                Seen::Text(t) => t.contains(s.as_str()),
                Seen::Json(Value::String(t)) => t.contains(s.as_str()),
                Seen::Json(Value::Array(a)) => a.iter().any(|i| i.as_str() == Some(s.as_str())),
                _ => false,
            },
            Op::Regex(re) => match &seen {
                Seen::Text(t) => re.is_match(t),
                Seen::Json(Value::String(t)) => re.is_match(t),
                _ => false,
            },
            Op::In(list) => list.iter().any(|v| equals(&seen, v)),
        }
    }
}

fn lookup<'a>(mut v: &'a Value, path: &[String]) -> Option<&'a Value> {
    for seg in path {
        v = match v {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

fn as_number(seen: &Seen<'_>) -> Option<f64> {
    match seen {
        Seen::Number(n) => Some(*n),
        Seen::Text(t) => t.trim().parse().ok(),
        Seen::Json(Value::Number(n)) => n.as_f64(),
        Seen::Json(Value::String(t)) => t.trim().parse().ok(),
        _ => None,
    }
}

fn equals(seen: &Seen<'_>, want: &Value) -> bool {
    match (seen, want) {
        (Seen::Missing, _) => false,
        (Seen::Text(t), Value::String(w)) => t == w,
        (Seen::Json(j), w) => *j == w,
        (s, Value::Number(w)) => as_number(s).is_some_and(|x| Some(x) == w.as_f64()),
        (Seen::Text(t), Value::Bool(b)) => {
            t.eq_ignore_ascii_case(if *b { "true" } else { "false" })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    struct F {
        headers: HashMap<String, String>,
        body: Value,
        key: String,
        tokens: u64,
    }

    impl Facts for F {
        fn header(&self, n: &str) -> Option<&str> {
            self.headers.get(n).map(String::as_str)
        }
        fn body(&self) -> Option<&Value> {
            Some(&self.body)
        }
        fn key_name(&self) -> &str {
            &self.key
        }
        fn input_tokens(&self) -> u64 {
            self.tokens
        }
    }

    fn facts() -> F {
        F {
            headers: [("x-team".to_string(), "research".to_string())].into(),
            body: json!({"metadata": {"tier": "gold", "n": 5}, "messages": [{"role": "user"}], "tags": ["a", "b"]}),
            key: "batch".into(),
            tokens: 9000,
        }
    }

    fn check(rule: Value) -> bool {
        Rule::parse(&rule.to_string())
            .unwrap()
            .unwrap()
            .matches(&facts())
    }

    #[test]
    fn conditions() {
        assert!(check(
            json!({"field": "headers.X-Team", "op": "eq", "value": "research"})
        ));
        assert!(!check(
            json!({"field": "headers.x-team", "op": "ne", "value": "research"})
        ));
        assert!(check(
            json!({"field": "input_tokens", "op": "gt", "value": 8000})
        ));
        assert!(!check(
            json!({"field": "input_tokens", "op": "lte", "value": 8000})
        ));
        assert!(check(
            json!({"field": "input_tokens", "op": "gte", "value": 9000})
        ));
        assert!(check(
            json!({"field": "input_tokens", "op": "lt", "value": 9001})
        ));
        assert!(check(
            json!({"field": "key", "op": "in", "value": ["x", "batch"]})
        ));
        assert!(check(
            json!({"field": "body.metadata.tier", "op": "regex", "value": "^go"})
        ));
        assert!(check(
            json!({"field": "body.metadata.n", "op": "eq", "value": 5})
        ));
        assert!(check(
            json!({"field": "body.messages.0.role", "op": "eq", "value": "user"})
        ));
        assert!(check(
            json!({"field": "body.tags", "op": "contains", "value": "b"})
        ));
        assert!(check(
            json!({"field": "headers.x-team", "op": "contains", "value": "sea"})
        ));
        assert!(check(
            json!({"field": "body.metadata.tier", "op": "exists"})
        ));
        assert!(check(
            json!({"field": "body.metadata.nope", "op": "exists", "value": false})
        ));
        assert!(!check(
            json!({"field": "headers.missing", "op": "eq", "value": "x"})
        ));
    }

    #[test]
    fn combinators() {
        assert!(check(json!({"all": [
            {"field": "key", "op": "eq", "value": "batch"},
            {"any": [
                {"field": "headers.x-team", "op": "eq", "value": "other"},
                {"not": {"field": "input_tokens", "op": "lt", "value": 10}}
            ]}
        ]})));
        assert!(!check(json!({"any": []})));
        assert!(check(json!({"all": []})));
    }

    #[test]
    fn invalid_rules_are_explained() {
        for (rule, want) in [
            (
                json!({"field": "nope", "op": "eq", "value": 1}),
                "unknown field",
            ),
            (
                json!({"field": "key", "op": "like", "value": 1}),
                "unknown operator",
            ),
            (
                json!({"field": "key", "op": "gt", "value": "x"}),
                "needs a number",
            ),
            (
                json!({"field": "key", "op": "regex", "value": "("}),
                "invalid regex",
            ),
            (
                json!({"field": "key", "op": "in", "value": "x"}),
                "needs a list",
            ),
            (json!({"all": {}}), "take a list"),
            (json!([1]), "must be a JSON object"),
            (
                json!({"field": "key", "op": "eq", "value": 1, "x": 2}),
                "unknown rule key",
            ),
        ] {
            let e = Rule::parse(&rule.to_string()).unwrap_err();
            assert!(e.0.contains(want), "{rule}: {e}");
        }
        assert!(Rule::parse("{").is_err());
        assert!(Rule::parse("").unwrap().is_none());
        assert!(Rule::parse("null").unwrap().is_none());
        let mut deep = json!({"field": "key", "op": "exists"});
        for _ in 0..40 {
            deep = json!({"not": deep});
        }
        assert!(Rule::parse(&deep.to_string()).is_err());
    }
}
