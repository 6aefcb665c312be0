//! Export and declarative apply of the whole configuration.
//!
//! Apply computes the difference between the stored configuration and the
//! desired one and makes it in the caller's transaction, in an order that
//! keeps references valid: providers are created and updated first, then
//! models, then providers that are gone are deleted, then keys.
//!
//! The limits of keys, models and providers travel with them; the limits of
//! every key that sets none (`default_key_limits`) are replaced when the
//! configuration gives them, and removed when it does not only on prune.
//!
//! Nothing the configuration does not mention is deleted unless the caller
//! asks to prune; a prune that would leave no provider, model or key at all
//! also needs `allow_empty`. Broken rows (that cannot be decrypted or
//! parsed) are left out of the export; a configuration that mentions one
//! repairs it with the values it gives.

use std::collections::{BTreeMap, BTreeSet};

use llmgw_core::limits::{Kind, Limits, OnOutage, DEFAULT_WINDOW_MS};
use llmgw_core::validate::{self, limits};
use llmgw_proto::v1 as pb;
use secrecy::{ExposeSecret, SecretString};
use sqlx::AnyConnection;

use crate::convert::{
    in_object, key_config_pb, key_spec, limits_merged, limits_pb, model_config_pb, model_spec,
    provider_config_pb, provider_spec,
};
use crate::store::{
    rfc3339, Broken, ConfigState, KeyRow, KeySpec, ModelRow, ModelSpec, ProviderRow, ProviderSpec,
    Store, StoreError,
};

pub fn export(state: &ConfigState) -> pb::GatewayConfig {
    pb::GatewayConfig {
        default_key_limits: limits_pb(state.default_key_limits.limits.as_ref()),
        providers: state
            .providers
            .iter()
            .filter(|p| p.broken.is_empty())
            .map(|p| provider_config_pb(&p.spec))
            .collect(),
        models: state
            .models
            .iter()
            .filter(|m| m.broken.is_empty())
            .map(|m| model_config_pb(&m.spec))
            .collect(),
        api_keys: state
            .keys
            .iter()
            .filter(|k| k.broken.is_empty())
            .map(|k| key_config_pb(&k.spec))
            .collect(),
    }
}

fn change(action: &str, kind: &str, name: &str, details: Vec<String>) -> pb::ConfigChange {
    pb::ConfigChange {
        action: action.to_string(),
        kind: kind.to_string(),
        name: name.to_string(),
        details,
    }
}

fn unique<'a>(kind: &str, names: impl Iterator<Item = &'a str>) -> Result<(), StoreError> {
    let mut seen = BTreeSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(StoreError::Invalid(format!("{kind} '{n}' appears twice")));
        }
    }
    Ok(())
}

/// Micro-dollars as US dollars: 50000 is "0.05".
fn usd(micros: u64) -> String {
    let text = format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The changes of limits, one line per field: "rpm: 10 -> 20".
fn limits_diff(old: Option<&Limits>, new: Option<&Limits>) -> Vec<String> {
    let mut d = Vec::new();
    for kind in Kind::ALL {
        let show = |l: Option<&Limits>| match (kind, l.and_then(|l| l.get(kind))) {
            (_, None) => "none".to_string(),
            (Kind::Budget, Some(_)) => l
                .and_then(|l| l.budget)
                .map(|b| format!("{} USD/{}", usd(b.micros), b.period))
                .unwrap_or_default(),
            (_, Some(v)) => v.to_string(),
        };
        let (was, is) = (show(old), show(new));
        if was != is {
            let field = match kind {
                Kind::Concurrency => "max_concurrency",
                k => k.as_str(),
            };
            d.push(format!("{field}: {was} -> {is}"));
        }
    }
    let window = |l: Option<&Limits>| l.map_or(DEFAULT_WINDOW_MS, |l| l.window_ms);
    if window(old) != window(new) {
        d.push(format!("window_ms: {} -> {}", window(old), window(new)));
    }
    let outage = |l: Option<&Limits>| l.map_or(OnOutage::Open, |l| l.on_outage).as_str();
    if outage(old) != outage(new) {
        d.push(format!("on_outage: {} -> {}", outage(old), outage(new)));
    }
    d
}

fn provider_diff(old: &ProviderSpec, new: &ProviderSpec) -> Vec<String> {
    let mut d = Vec::new();
    if old.protocol != new.protocol {
        d.push(format!("protocol: {} -> {}", old.protocol, new.protocol));
    }
    if old.base_url != new.base_url {
        // A row stored before URLs were checked may hold credentials: it
        // is shown only if it passes today's check.
        if validate::base_url(&old.base_url).is_ok() {
            d.push(format!("base_url: {} -> {}", old.base_url, new.base_url));
        } else {
            d.push(format!(
                "base_url: (a stored value that is no longer valid) -> {}",
                new.base_url
            ));
        }
    }
    let key = |k: &Option<SecretString>| k.as_ref().map(|k| k.expose_secret().to_string());
    if key(&old.api_key) != key(&new.api_key) {
        d.push("api_key: changed".to_string());
    }
    if old.headers != new.headers {
        let names = |h: &BTreeMap<String, String>| h.keys().cloned().collect::<Vec<_>>().join(",");
        d.push(format!(
            "headers: [{}] -> [{}]",
            names(&old.headers),
            names(&new.headers)
        ));
    }
    if old.timeout_s != new.timeout_s {
        d.push(format!("timeout_s: {} -> {}", old.timeout_s, new.timeout_s));
    }
    if old.stream_usage != new.stream_usage {
        d.push(format!(
            "stream_usage: {} -> {}",
            old.stream_usage, new.stream_usage
        ));
    }
    if old.enabled != new.enabled {
        d.push(format!("enabled: {} -> {}", old.enabled, new.enabled));
    }
    if old.default_params != new.default_params {
        d.push(format!(
            "default_params: {} -> {}",
            or_none(&params_text(&old.default_params)),
            or_none(&params_text(&new.default_params))
        ));
    }
    if key(&old.proxy) != key(&new.proxy) {
        d.push(format!(
            "proxy: {} -> {}",
            or_none(&old.shown_proxy()),
            or_none(&new.shown_proxy())
        ));
    }
    d.extend(limits_diff(old.limits.as_ref(), new.limits.as_ref()));
    d
}

/// Default parameters on one line: `temperature=0.2 top_p=0.9`.
pub fn params_text(p: &BTreeMap<String, String>) -> String {
    p.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A shown value in a diff, `none` when empty.
fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "none"
    } else {
        s
    }
}

fn model_diff(old: &ModelSpec, new: &ModelSpec) -> Vec<String> {
    let mut d = Vec::new();
    if old.strategy != new.strategy {
        d.push(format!("strategy: {} -> {}", old.strategy, new.strategy));
    }
    if old.max_attempts != new.max_attempts {
        d.push(format!(
            "max_attempts: {} -> {}",
            old.max_attempts, new.max_attempts
        ));
    }
    if old.retry_delay_ms != new.retry_delay_ms {
        d.push(format!(
            "retry_delay_ms: {:?} -> {:?}",
            old.retry_delay_ms, new.retry_delay_ms
        ));
    }
    if old.prices != new.prices {
        d.push(format!("prices: {} -> {}", old.prices, new.prices));
    }
    if old.default_max_tokens != new.default_max_tokens {
        d.push(format!(
            "default_max_tokens: {:?} -> {:?}",
            old.default_max_tokens, new.default_max_tokens
        ));
    }
    if old.translation != new.translation {
        d.push(format!(
            "translation: {} -> {}",
            old.translation, new.translation
        ));
    }
    if old.model_type != new.model_type {
        d.push(format!("type: {} -> {}", old.model_type, new.model_type));
    }
    if old.enabled != new.enabled {
        d.push(format!("enabled: {} -> {}", old.enabled, new.enabled));
    }
    if old.targets != new.targets {
        let show = |m: &ModelSpec| {
            m.targets
                .iter()
                .map(|t| {
                    if t.default_params.is_empty() {
                        format!("{}:{}", t.provider, t.upstream_model)
                    } else {
                        let p = params_text(&t.default_params);
                        format!("{}:{} {{{p}}}", t.provider, t.upstream_model)
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        d.push(format!("targets: [{}] -> [{}]", show(old), show(new)));
    }
    d.extend(limits_diff(old.limits.as_ref(), new.limits.as_ref()));
    d
}

fn key_diff(old: &KeySpec, new: &KeySpec) -> Vec<String> {
    let mut d = Vec::new();
    if old.hash != new.hash {
        d.push("secret: replaced".to_string());
    }
    if old.models != new.models {
        d.push(format!(
            "models: [{}] -> [{}]",
            old.models.join(","),
            new.models.join(",")
        ));
    }
    if old.expires_at != new.expires_at {
        d.push(format!(
            "expires_at: '{}' -> '{}'",
            rfc3339(old.expires_at),
            rfc3339(new.expires_at)
        ));
    }
    if old.revoked != new.revoked {
        d.push(format!("revoked: {} -> {}", old.revoked, new.revoked));
    }
    if old.log_bodies != new.log_bodies {
        d.push(format!(
            "log_bodies: {} -> {}",
            old.log_bodies, new.log_bodies
        ));
    }
    d.extend(limits_diff(old.limits.as_ref(), new.limits.as_ref()));
    d
}

/// How an apply treats what the configuration does not mention.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Delete what the configuration does not mention.
    pub prune: bool,
    /// With `prune`: allow deleting every provider, model and key.
    pub allow_empty: bool,
}

/// What an apply did (or would do).
#[derive(Debug, Default)]
pub struct Outcome {
    pub changes: Vec<pb::ConfigChange>,
    /// Stored objects the configuration does not mention, kept because the
    /// apply does not prune.
    pub kept: Vec<pb::ConfigChange>,
}

/// Repairs listed as a change's details.
fn repairs(broken: &[Broken]) -> Vec<String> {
    broken
        .iter()
        .map(|b| format!("{}: repaired (was broken: {})", b.field, b.reason))
        .collect()
}

/// Makes the stored configuration what `desired` says and lists the
/// changes; deletes what it does not mention only with `opts.prune`.
pub async fn apply(
    store: &Store,
    tx: &mut AnyConnection,
    desired: pb::GatewayConfig,
    opts: Options,
) -> Result<Outcome, StoreError> {
    validate::count("providers", desired.providers.len(), limits::PROVIDERS)?;
    validate::count("models", desired.models.len(), limits::MODELS)?;
    validate::count("api_keys", desired.api_keys.len(), limits::API_KEYS)?;
    unique(
        "provider",
        desired.providers.iter().map(|p| p.name.as_str()),
    )?;
    unique("model", desired.models.iter().map(|m| m.name.as_str()))?;
    unique("API key", desired.api_keys.iter().map(|k| k.name.as_str()))?;

    let providers: BTreeMap<String, ProviderRow> = store
        .providers(tx)
        .await?
        .into_iter()
        .map(|r| (r.spec.name.clone(), r))
        .collect();
    let models: BTreeMap<String, ModelRow> = store
        .models(tx)
        .await?
        .into_iter()
        .map(|r| (r.spec.name.clone(), r))
        .collect();
    let keys: BTreeMap<String, KeyRow> = store
        .keys(tx)
        .await?
        .into_iter()
        .map(|r| (r.spec.name.clone(), r))
        .collect();

    let stored = providers.len() + models.len() + keys.len();
    let remaining = desired.providers.len() + desired.models.len() + desired.api_keys.len();
    if opts.prune && !opts.allow_empty && remaining == 0 && stored > 0 {
        return Err(StoreError::Invalid(format!(
            "this apply would delete every provider, model and API key ({stored} objects); \
             to really empty the configuration, add --allow-empty (allow_empty) to --prune"
        )));
    }

    // Unmentioned objects: deleted with prune, otherwise reported as kept.
    let wanted_providers: BTreeSet<&str> =
        desired.providers.iter().map(|p| p.name.as_str()).collect();
    let wanted_models: BTreeSet<&str> = desired.models.iter().map(|m| m.name.as_str()).collect();
    let wanted_keys: BTreeSet<&str> = desired.api_keys.iter().map(|k| k.name.as_str()).collect();
    let gone = |names: Vec<&String>, wanted: &BTreeSet<&str>| -> Vec<String> {
        names
            .into_iter()
            .filter(|n| !wanted.contains(n.as_str()))
            .cloned()
            .collect()
    };
    let gone_providers = gone(providers.keys().collect(), &wanted_providers);
    let gone_models = gone(models.keys().collect(), &wanted_models);
    let gone_keys = gone(keys.keys().collect(), &wanted_keys);
    let mut out = Outcome::default();
    if !opts.prune {
        for (kind, names) in [
            ("provider", &gone_providers),
            ("model", &gone_models),
            ("api_key", &gone_keys),
        ] {
            out.kept
                .extend(names.iter().map(|n| change("keep", kind, n, vec![])));
        }
    }
    let changes = &mut out.changes;

    for c in &desired.providers {
        let old = providers.get(&c.name);
        let spec = provider_spec(c, old.map(|o| &o.spec))?;
        let named = in_object("provider", &c.name);
        match old {
            None => {
                store.insert_provider(tx, &spec).await.map_err(named)?;
                changes.push(change("create", "provider", &spec.name, vec![]));
            }
            Some(old) => {
                let mut d = provider_diff(&old.spec, &spec);
                d.extend(repairs(&old.broken));
                if !d.is_empty() {
                    store.update_provider(tx, &spec).await.map_err(named)?;
                    changes.push(change("update", "provider", &spec.name, d));
                }
            }
        }
    }

    if opts.prune {
        for name in &gone_models {
            store.delete_model(tx, name).await?;
            changes.push(change("delete", "model", name, vec![]));
        }
    }
    for c in &desired.models {
        let spec = model_spec(c)?;
        let named = in_object("model", &c.name);
        match models.get(&c.name) {
            None => {
                store.insert_model(tx, &spec).await.map_err(named)?;
                changes.push(change("create", "model", &spec.name, vec![]));
            }
            Some(old) => {
                let mut d = model_diff(&old.spec, &spec);
                d.extend(repairs(&old.broken));
                if !d.is_empty() {
                    store.update_model(tx, &spec).await.map_err(named)?;
                    changes.push(change("update", "model", &spec.name, d));
                }
            }
        }
    }

    if opts.prune {
        for name in &gone_providers {
            store.delete_provider(tx, name).await?;
            changes.push(change("delete", "provider", name, vec![]));
        }
        for name in &gone_keys {
            store.delete_key(tx, name).await?;
            changes.push(change("delete", "api_key", name, vec![]));
        }
    }
    for c in &desired.api_keys {
        let old = keys.get(&c.name);
        let spec = key_spec(c, old.map(|o| &o.spec))?;
        let named = in_object("API key", &c.name);
        match old {
            None => {
                store.insert_key(tx, &spec).await.map_err(named)?;
                changes.push(change("create", "api_key", &spec.name, vec![]));
            }
            Some(old) => {
                let mut d = key_diff(&old.spec, &spec);
                d.extend(repairs(&old.broken));
                if !d.is_empty() {
                    store.update_key(tx, &spec).await.map_err(named)?;
                    changes.push(change("update", "api_key", &spec.name, d));
                }
            }
        }
    }
    apply_default_key_limits(
        store,
        tx,
        desired.default_key_limits.as_ref(),
        opts,
        &mut out,
    )
    .await?;
    Ok(out)
}

/// The limits of every key that sets none: replaced when the configuration
/// gives them, removed when it does not only on prune.
async fn apply_default_key_limits(
    store: &Store,
    tx: &mut AnyConnection,
    given: Option<&pb::Limits>,
    opts: Options,
    out: &mut Outcome,
) -> Result<(), StoreError> {
    const KIND: &str = "default_key_limits";
    let stored = store.default_key_limits(tx).await?;
    if given.is_none() && !opts.prune {
        if stored.limits.is_some() {
            out.kept.push(change("keep", KIND, "", vec![]));
        }
        return Ok(());
    }
    let wanted = limits_merged(None, given).map_err(|e| match e {
        StoreError::Invalid(m) => StoreError::Invalid(format!("default_key_limits: {m}")),
        other => other,
    })?;
    let mut d = limits_diff(stored.limits.as_ref(), wanted.as_ref());
    d.extend(repairs(&stored.broken));
    if !d.is_empty() {
        store.set_default_key_limits(tx, wanted.as_ref()).await?;
        out.changes.push(change("update", KIND, "", d));
    }
    Ok(())
}
