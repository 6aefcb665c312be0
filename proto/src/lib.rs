//! The gRPC contracts between llmgw's parts, generated from `proto/`.
//!
//! Messages derive serde so the CLI can print them as JSON and read them
//! from YAML. Messages that carry secrets have a `Debug` that redacts them.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("llmgw.v1");
}

mod redact;

/// Serde for a string field that holds JSON text: it is written as the JSON
/// value itself (so YAML and JSON output show structure), and read back from
/// any JSON value. An empty string stands for "no value".
pub mod json_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
        if text.trim().is_empty() {
            return s.serialize_none();
        }
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => v.serialize(s),
            // Stored text is validated on write; show anything else verbatim.
            Err(_) => s.serialize_str(text),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let v = Option::<serde_json::Value>::deserialize(d)?;
        Ok(match v {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(s)) => s,
            Some(other) => other.to_string(),
        })
    }
}

impl v1::Outcome {
    /// Every outcome a request can have, in the order of the enum.
    pub const ALL: [v1::Outcome; 7] = [
        v1::Outcome::Ok,
        v1::Outcome::UpstreamError,
        v1::Outcome::Interrupted,
        v1::Outcome::Timeout,
        v1::Outcome::CancelledByClient,
        v1::Outcome::CancelledByAdmin,
        v1::Outcome::Refused,
    ];

    /// The outcome's name as it is stored, printed and typed (`ok`,
    /// `upstream_error`, ...); "" for unspecified.
    pub fn name(self) -> &'static str {
        match self {
            v1::Outcome::Unspecified => "",
            v1::Outcome::Ok => "ok",
            v1::Outcome::UpstreamError => "upstream_error",
            v1::Outcome::Interrupted => "interrupted",
            v1::Outcome::Timeout => "timeout",
            v1::Outcome::CancelledByClient => "cancelled_by_client",
            v1::Outcome::CancelledByAdmin => "cancelled_by_admin",
            v1::Outcome::Refused => "refused",
        }
    }

    /// The outcome a name stands for ("" is unspecified).
    pub fn from_name(name: &str) -> Option<v1::Outcome> {
        if name.is_empty() {
            return Some(v1::Outcome::Unspecified);
        }
        v1::Outcome::ALL.into_iter().find(|o| o.name() == name)
    }
}

/// Serde for an `Outcome` field: its name (`"interrupted"`), "" for
/// unspecified; read from a name or a number.
pub mod outcome_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::v1::Outcome;

    pub fn serialize<S: Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(Outcome::try_from(*v).map_or("", Outcome::name))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Name(String),
            Number(i32),
        }
        match Either::deserialize(d)? {
            Either::Number(n) => Ok(n),
            Either::Name(n) => Outcome::from_name(n.trim())
                .map(|o| o as i32)
                .ok_or_else(|| serde::de::Error::custom(format!("unknown outcome '{n}'"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::v1::{Outcome, RequestLog};

    #[test]
    fn outcomes_have_names_both_ways() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::from_name(o.name()), Some(o));
        }
        assert_eq!(Outcome::from_name(""), Some(Outcome::Unspecified));
        assert_eq!(Outcome::from_name("nope"), None);
        let mut r = RequestLog::default();
        r.set_outcome(Outcome::CancelledByClient);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["outcome"], "cancelled_by_client");
        let back: RequestLog = serde_json::from_value(v).unwrap();
        assert_eq!(back.outcome(), Outcome::CancelledByClient);
    }
}
