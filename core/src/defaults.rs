//! Default request parameters (`--default-param NAME=VALUE`), per provider
//! and per target: top-level members of the upstream body filled in only
//! when the body lacks them (`body::fill_missing`). The one rule set for
//! the control plane's writes and the data plane's snapshots.
//!
//! A name is a top-level JSON key other than the members that carry a
//! request's structure (the model, the stream switch, the conversation and
//! the tools), which a default must not change. A value is any JSON value,
//! kept as its compact serialization.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::validate::ValidationError;

/// At most this many defaults per provider or target.
pub const MAX_PARAMS: usize = 32;
/// A name's longest length in bytes.
pub const MAX_NAME: usize = 128;
/// A value's longest serialization in bytes.
pub const MAX_VALUE: usize = 8 * 1024;

/// Members a default may not set: what a request is (the model, whether it
/// streams) and what it says (its messages, input, system prompt and
/// tools), in every protocol the gateway speaks.
pub const STRUCTURAL: [&str; 14] = [
    "model",
    "stream",
    "stream_options",
    "messages",
    "input",
    "prompt",
    "contents",
    "system",
    "system_instruction",
    "systemInstruction",
    "instructions",
    "tools",
    "functions",
    "previous_response_id",
];

/// Checks a default's name.
pub fn name(n: &str) -> Result<(), ValidationError> {
    if n.is_empty() {
        return Err(ValidationError::new(
            "a default parameter's name must not be empty",
        ));
    }
    if n.len() > MAX_NAME {
        return Err(ValidationError::new(format!(
            "a default parameter's name must be at most {MAX_NAME} bytes"
        )));
    }
    if n.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "a default parameter's name must not contain a control character",
        ));
    }
    if STRUCTURAL.contains(&n) {
        return Err(ValidationError::new(format!(
            "default parameter '{n}' is not allowed: it is part of the request's structure \
             (not allowed: {})",
            STRUCTURAL.join(", ")
        )));
    }
    Ok(())
}

/// Checks a default's value (JSON text) and returns its compact form.
pub fn value(n: &str, v: &str) -> Result<String, ValidationError> {
    let parsed: serde_json::Value = serde_json::from_str(v).map_err(|e| {
        ValidationError::new(format!("default parameter '{n}' is not valid JSON: {e}"))
    })?;
    let compact = parsed.to_string();
    if compact.len() > MAX_VALUE {
        return Err(ValidationError::new(format!(
            "default parameter '{n}' is longer than {MAX_VALUE} bytes"
        )));
    }
    Ok(compact)
}

/// Checks a whole set (names, values, count) and returns it with each
/// value in compact form.
pub fn params(
    map: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, ValidationError> {
    let mut out = BTreeMap::new();
    for (n, v) in map {
        name(&n)?;
        let v = value(&n, &v)?;
        out.insert(n, v);
    }
    if out.len() > MAX_PARAMS {
        return Err(ValidationError::new(format!(
            "at most {MAX_PARAMS} default parameters are allowed"
        )));
    }
    Ok(out)
}

/// The defaults a target applies: the provider's, with the target's for
/// the same name winning; in name order, ready to splice.
pub fn merged(
    provider: &BTreeMap<String, String>,
    target: &BTreeMap<String, String>,
) -> Vec<(String, Bytes)> {
    let mut all = provider.clone();
    all.extend(target.iter().map(|(k, v)| (k.clone(), v.clone())));
    all.into_iter().map(|(k, v)| (k, Bytes::from(v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values() {
        assert_eq!(value("s", "[\"a\", \"b\"]").unwrap(), "[\"a\",\"b\"]");
        assert_eq!(
            params([("temperature".to_string(), " 0.2".to_string())]).unwrap()["temperature"],
            "0.2"
        );
        for bad in ["model", "stream", "messages", "contents", "tools", ""] {
            let e = name(bad).unwrap_err().0;
            assert!(e.contains("default parameter"), "{e}");
        }
        assert!(name("model")
            .unwrap_err()
            .0
            .contains("part of the request's structure"));
        assert_eq!(value("t", " 0.20 ").unwrap(), "0.2");
        assert!(value("t", "{")
            .unwrap_err()
            .0
            .contains("'t' is not valid JSON"));
        let many = (0..=MAX_PARAMS).map(|i| (format!("p{i}"), "1".to_string()));
        assert!(params(many).is_err());
    }

    #[test]
    fn a_targets_default_wins_over_its_providers() {
        let p = BTreeMap::from([
            ("temperature".to_string(), "0.2".to_string()),
            ("top_p".to_string(), "0.9".to_string()),
        ]);
        let t = BTreeMap::from([("temperature".to_string(), "0.7".to_string())]);
        let m = merged(&p, &t);
        assert_eq!(
            m,
            [
                ("temperature".to_string(), Bytes::from("0.7")),
                ("top_p".to_string(), Bytes::from("0.9"))
            ]
        );
    }
}
