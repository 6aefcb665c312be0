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
