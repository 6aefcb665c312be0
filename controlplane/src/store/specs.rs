//! The configuration as the store reads and writes it, with secrets opened.
//! `validate` holds every rule of the data model that a write must pass.

use std::collections::BTreeMap;

use llmgw_core::rules::Rule;
use llmgw_core::table::Translation;
use llmgw_core::{keys, validate, Protocol, Strategy};
use secrecy::SecretString;

use super::{Result, StoreError};

#[derive(Debug, Clone)]
pub struct ProviderSpec {
    pub name: String,
    pub protocol: Protocol,
    pub base_url: String,
    pub api_key: Option<SecretString>,
    pub headers: BTreeMap<String, String>,
    pub timeout_s: u32,
    pub stream_usage: bool,
    pub enabled: bool,
}

impl ProviderSpec {
    /// The API key as reads show it: masked, or empty when there is none.
    pub fn shown_api_key(&self) -> String {
        use secrecy::ExposeSecret;
        self.api_key
            .as_ref()
            .map(|k| keys::mask(k.expose_secret()))
            .unwrap_or_default()
    }

    pub fn validate(&self) -> Result<()> {
        validate::name("provider", &self.name)?;
        validate::base_url(&self.base_url)?;
        for (k, v) in &self.headers {
            validate::header(k, v)?;
        }
        if let Some(k) = &self.api_key {
            use secrecy::ExposeSecret;
            if http::HeaderValue::from_str(k.expose_secret()).is_err() {
                return Err(StoreError::Invalid(
                    "the API key contains characters that cannot be sent in a header".into(),
                ));
            }
        }
        if self.timeout_s > 3600 {
            return Err(StoreError::Invalid(
                "timeout_s must be at most 3600 seconds".into(),
            ));
        }
        Ok(())
    }
}

/// US dollars per one million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Prices {
    pub input: f64,
    pub output: f64,
    /// Tokens read from a prompt cache.
    pub cached_input: f64,
    /// Tokens written to a prompt cache; 0 charges them at the input price.
    pub cache_write: f64,
}

impl Prices {
    fn validate(&self) -> Result<()> {
        validate::price("input", self.input)?;
        validate::price("output", self.output)?;
        validate::price("cached input", self.cached_input)?;
        validate::price("cache write", self.cache_write)?;
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TargetSpec {
    pub provider: String,
    pub upstream_model: String,
    pub priority: i32,
    pub weight: u32,
    /// JSON rule text, normalised (compact) when stored; empty for none.
    pub rules: String,
    pub enabled: bool,
    pub prices: Option<Prices>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    pub strategy: Strategy,
    pub max_attempts: u32,
    pub retry_delay_ms: Option<u32>,
    pub prices: Prices,
    pub enabled: bool,
    pub targets: Vec<TargetSpec>,
    /// `max_tokens` for targets that require it when the client gave none.
    pub default_max_tokens: Option<u32>,
    pub translation: Translation,
}

impl ModelSpec {
    pub fn validate(&self) -> Result<()> {
        validate::name("model", &self.name)?;
        self.prices.validate()?;
        if self.targets.is_empty() {
            return Err(StoreError::Invalid(format!(
                "model '{}' needs at least one target",
                self.name
            )));
        }
        if self.max_attempts > 20 {
            return Err(StoreError::Invalid(
                "max_attempts must be at most 20".into(),
            ));
        }
        if self.default_max_tokens == Some(0) {
            return Err(StoreError::Invalid(
                "default_max_tokens must be at least 1".into(),
            ));
        }
        if self.retry_delay_ms.is_some_and(|d| d > 600_000) {
            return Err(StoreError::Invalid(
                "retry_delay_ms must be at most 600000 (10 minutes)".into(),
            ));
        }
        for (i, t) in self.targets.iter().enumerate() {
            let n = i + 1;
            validate::name("provider", &t.provider)
                .map_err(|e| StoreError::Invalid(format!("target {n}: {e}")))?;
            if t.upstream_model.trim().is_empty() || t.upstream_model.len() > 256 {
                return Err(StoreError::Invalid(format!(
                    "target {n}: the upstream model must be 1 to 256 characters"
                )));
            }
            if t.upstream_model.chars().any(char::is_control) {
                return Err(StoreError::Invalid(format!(
                    "target {n}: the upstream model contains control characters"
                )));
            }
            validate::weight(t.weight)
                .map_err(|e| StoreError::Invalid(format!("target {n}: {e}")))?;
            Rule::parse(&t.rules).map_err(|e| StoreError::Invalid(format!("target {n}: {e}")))?;
            if let Some(p) = &t.prices {
                p.validate()?;
            }
        }
        Ok(())
    }
}

/// Compact JSON for rule text, so that equal rules compare equal.
pub fn normalise_rules(text: &str) -> Result<String> {
    if text.trim().is_empty() {
        return Ok(String::new());
    }
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| StoreError::Invalid(format!("rules are not valid JSON: {e}")))?;
    if v.is_null() {
        return Ok(String::new());
    }
    Ok(v.to_string())
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeySpec {
    pub name: String,
    pub hash: String,
    pub prefix: String,
    pub models: Vec<String>,
    pub expires_at: Option<i64>,
    pub revoked: bool,
    pub log_bodies: bool,
}

impl KeySpec {
    pub fn validate(&self) -> Result<()> {
        validate::name("API key", &self.name)?;
        if !keys::is_hash_hex(&self.hash) {
            return Err(StoreError::Invalid(format!(
                "API key '{}': hash must be 64 lower-case hex digits",
                self.name
            )));
        }
        if self.prefix.len() > 32 {
            return Err(StoreError::Invalid("API key prefix is too long".into()));
        }
        for m in &self.models {
            validate::name("model", m)?;
        }
        Ok(())
    }
}
