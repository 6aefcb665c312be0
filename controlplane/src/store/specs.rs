//! The configuration as the store reads and writes it, with secrets opened.
//! `validate` holds every rule of the data model that a write must pass.

use std::collections::BTreeMap;

use llmgw_core::defaults;
use llmgw_core::limits::Limits;
use llmgw_core::price::PriceSheet;
use llmgw_core::proxy::ProxyUrl;
use llmgw_core::rules::Rule;
use llmgw_core::table::{ModelType, Translation};
use llmgw_core::validate::{limits, ValidationError};
use llmgw_core::{keys, validate, Protocol, Strategy};
use secrecy::{ExposeSecret, SecretString};

use super::{Broken, Result, StoreError};

/// The problems found in one object, each naming its field.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<Broken>);

impl Problems {
    fn check(&mut self, field: &str, r: std::result::Result<(), ValidationError>) {
        if let Err(e) = r {
            self.add(field, e.0);
        }
    }

    fn add(&mut self, field: &str, reason: impl Into<String>) {
        self.0.push(Broken {
            field: field.to_string(),
            reason: reason.into(),
        });
    }

    /// The first problem as a write's error.
    fn into_result(self) -> Result<()> {
        match self.0.into_iter().next() {
            None => Ok(()),
            Some(b) => Err(StoreError::Invalid(b.reason)),
        }
    }
}

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
    /// Protects the upstream's own quota; `None` is none.
    pub limits: Option<Limits>,
    /// The outbound proxy's URL with its credentials (normalized by
    /// `ProxyUrl::full`); `None` is none.
    pub proxy: Option<SecretString>,
    /// Default request parameters: name -> compact JSON value.
    pub default_params: BTreeMap<String, String>,
}

impl ProviderSpec {
    /// The proxy as reads show it: `scheme://host:port` with `****@` for
    /// credentials, or empty when there is none.
    pub fn shown_proxy(&self) -> String {
        self.proxy
            .as_ref()
            .map(|p| match ProxyUrl::parse(p.expose_secret()) {
                Ok(u) => u.shown(),
                Err(_) => "(not a valid proxy URL)".to_string(),
            })
            .unwrap_or_default()
    }

    /// The API key as reads show it: masked, or empty when there is none.
    pub fn shown_api_key(&self) -> String {
        use secrecy::ExposeSecret;
        self.api_key
            .as_ref()
            .map(|k| keys::mask(k.expose_secret()))
            .unwrap_or_default()
    }

    pub fn validate(&self) -> Result<()> {
        self.problems().into_result()
    }

    /// Every rule a provider must pass, by field.
    pub fn problems(&self) -> Problems {
        let mut p = Problems::default();
        p.check("name", validate::name("provider", &self.name));
        if let Err(e) = validate::base_url(&self.base_url) {
            p.add("base_url", e.0);
        }
        p.check(
            "headers",
            validate::count("headers", self.headers.len(), limits::HEADERS),
        );
        for (k, v) in &self.headers {
            p.check("headers", validate::header(k, v));
        }
        if let Some(k) = &self.api_key {
            p.check(
                "api_key",
                validate::length("api_key", k.expose_secret(), limits::API_KEY),
            );
            if http::HeaderValue::from_str(k.expose_secret()).is_err() {
                p.add(
                    "api_key",
                    "api_key contains characters that cannot be sent in a header",
                );
            }
        }
        if self.timeout_s > 3600 {
            p.add("timeout_s", "timeout_s must be at most 3600 seconds");
        }
        if let Some(u) = &self.proxy {
            if let Err(e) = ProxyUrl::parse(u.expose_secret()) {
                p.add("proxy", e.0);
            }
        }
        p.check(
            "default_params",
            defaults::params(self.default_params.clone()).map(|_| ()),
        );
        p
    }
}

/// Checks a price sheet as stored (tiers in order, distinct thresholds,
/// image keys), noting a problem under `field`.
fn check_prices(sheet: &PriceSheet, field: &str, p: &mut Problems) {
    if let Err(e) = sheet.clone().check() {
        p.add(field, format!("{field}: {}", e.0));
    } else if sheet
        .tiers
        .windows(2)
        .any(|w| w[0].above_input_tokens > w[1].above_input_tokens)
    {
        p.add(
            field,
            format!("{field}: tiers are not in order of threshold"),
        );
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
    /// The target's own prices; `None`: the model's apply.
    pub prices: Option<PriceSheet>,
    /// Default request parameters: name -> compact JSON value; they win
    /// over the provider's for the same name.
    pub default_params: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    pub strategy: Strategy,
    pub max_attempts: u32,
    pub retry_delay_ms: Option<u32>,
    /// The prices in effect now (see `store/prices.rs` for their history).
    pub prices: PriceSheet,
    pub enabled: bool,
    pub targets: Vec<TargetSpec>,
    /// `max_tokens` for targets that require it when the client gave none.
    pub default_max_tokens: Option<u32>,
    pub translation: Translation,
    /// Which endpoints the model serves.
    pub model_type: ModelType,
    /// `None` is none.
    pub limits: Option<Limits>,
}

impl ModelSpec {
    pub fn validate(&self) -> Result<()> {
        self.problems().into_result()
    }

    /// Every rule a model must pass, by field.
    pub fn problems(&self) -> Problems {
        let mut p = Problems::default();
        p.check("name", validate::name("model", &self.name));
        check_prices(&self.prices, "prices", &mut p);
        if self.targets.is_empty() {
            p.add(
                "targets",
                format!("model '{}' needs at least one target", self.name),
            );
        }
        p.check(
            "targets",
            validate::count("targets", self.targets.len(), limits::TARGETS),
        );
        if self.max_attempts > 20 {
            p.add("max_attempts", "max_attempts must be at most 20");
        }
        if self.default_max_tokens == Some(0) {
            p.add(
                "default_max_tokens",
                "default_max_tokens must be at least 1",
            );
        }
        if self.retry_delay_ms.is_some_and(|d| d > 600_000) {
            p.add(
                "retry_delay_ms",
                "retry_delay_ms must be at most 600000 (10 minutes)",
            );
        }
        for (i, t) in self.targets.iter().enumerate() {
            let n = i + 1;
            let at = |f: &str| format!("targets[{i}].{f}");
            let named = |r: std::result::Result<(), ValidationError>| {
                r.map_err(|e| ValidationError(format!("target {n}: {e}")))
            };
            p.check(
                &at("provider"),
                named(validate::name("provider", &t.provider)),
            );
            if t.upstream_model.trim().is_empty() || t.upstream_model.len() > limits::UPSTREAM_MODEL
            {
                p.add(
                    &at("upstream_model"),
                    format!("target {n}: the upstream model must be 1 to 256 characters"),
                );
            }
            if t.upstream_model.chars().any(char::is_control) {
                p.add(
                    &at("upstream_model"),
                    format!("target {n}: the upstream model contains control characters"),
                );
            }
            p.check(&at("weight"), named(validate::weight(t.weight)));
            let rules_field = format!("target {n} rules");
            match validate::length(&rules_field, &t.rules, limits::RULES) {
                Err(e) => p.add(&at("rules"), e.0),
                Ok(()) => {
                    if let Err(e) = Rule::parse(&t.rules) {
                        p.add(&at("rules"), format!("target {n}: {e}"));
                    }
                }
            }
            if let Some(prices) = &t.prices {
                check_prices(prices, &at("prices"), &mut p);
            }
            p.check(
                &at("default_params"),
                named(defaults::params(t.default_params.clone()).map(|_| ())),
            );
        }
        p
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
    /// The key's own limits; `None`: the default key limits apply.
    pub limits: Option<Limits>,
}

impl KeySpec {
    pub fn validate(&self) -> Result<()> {
        self.problems().into_result()
    }

    /// Every rule a key must pass, by field.
    pub fn problems(&self) -> Problems {
        let mut p = Problems::default();
        p.check("name", validate::name("API key", &self.name));
        if !keys::is_hash_hex(&self.hash) {
            p.add(
                "hash",
                format!(
                    "API key '{}': hash must be 64 lower-case hex digits",
                    self.name
                ),
            );
        }
        p.check(
            "prefix",
            validate::length("API key prefix", &self.prefix, limits::KEY_PREFIX),
        );
        p.check(
            "models",
            validate::count("models", self.models.len(), limits::KEY_MODELS),
        );
        for m in &self.models {
            p.check("models", validate::name("model", m));
        }
        p
    }
}

/// Default parameters as stored: one JSON object of the values themselves.
pub fn params_to_json(params: &BTreeMap<String, String>) -> String {
    let object: serde_json::Map<String, serde_json::Value> = params
        .iter()
        .map(|(k, v)| {
            let value = serde_json::from_str(v).unwrap_or(serde_json::Value::Null);
            (k.clone(), value)
        })
        .collect();
    serde_json::Value::Object(object).to_string()
}

/// Default parameters from their stored JSON object; `Err` says why it is
/// not one.
pub fn params_from_json(text: &str) -> std::result::Result<BTreeMap<String, String>, String> {
    if text.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|_| "the stored default parameters are not a JSON object".to_string())?;
    Ok(object
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect())
}
