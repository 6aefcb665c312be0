//! Conversions between the admin API's messages (`llmgw_proto`) and the
//! store's domain types, in both directions: what a request gives becomes
//! a spec, with defaults filled in and secrets given back masked resolved
//! against what is stored; a stored row becomes what the API shows, with
//! credentials masked.
//!
//! A leaf: it uses only the store's types, so the admin service, apply and
//! the snapshot hub all build on it without importing one another. Errors
//! are domain errors; the gRPC layer maps them onto status codes.

use std::collections::BTreeMap;
use std::str::FromStr;

use llmgw_core::limits::{Limits, OnOutage, Period};
use llmgw_core::price::PriceSheet;
use llmgw_core::proxy::ProxyUrl;
use llmgw_core::table::{ModelType, Translation};
use llmgw_core::{keys, validate, Protocol, Strategy};
use llmgw_proto::v1 as pb;
use secrecy::{ExposeSecret, SecretString};

use crate::store::{
    bounded, parse_rfc3339, rfc3339, specs_normalise_rules, Broken, DataPlaneRow, KeyRow, KeySpec,
    LimitsChange, ModelRow, ModelSpec, ProviderRow, ProviderSpec, StoreError, TargetSpec,
};

/// How long after its last heartbeat a data plane still counts as connected.
const CONNECTED_WITHIN_MS: i64 = 30_000;

// ---------- shared ----------

/// The fields of a broken row as the API shows them.
pub fn broken_pb(broken: &[Broken]) -> Vec<pb::BrokenField> {
    broken
        .iter()
        .map(|b| pb::BrokenField {
            field: b.field.clone(),
            reason: b.reason.clone(),
        })
        .collect()
}

/// Names the object in an invalid-value error.
pub fn in_object<'a>(kind: &'a str, name: &'a str) -> impl Fn(StoreError) -> StoreError + 'a {
    move |e| match e {
        StoreError::Invalid(m) => StoreError::Invalid(format!("{kind} '{name}': {m}")),
        other => other,
    }
}

/// Prices from the API or a file: the exact sheet (decimal strings) when
/// given, else the `f64` token prices of an older client; absent is none.
/// An error names the field, after `field` ("prices", "target 2: prices").
pub fn prices(p: Option<&pb::Prices>, field: &str) -> Result<PriceSheet, StoreError> {
    p.map_or(Ok(PriceSheet::default()), |p| {
        llmgw_core::price::from_prices_pb(p)
            .map_err(|e| StoreError::Invalid(format!("{field}: {}", e.0)))
    })
}

/// Prices as the API shows them: the exact sheet and, for older clients,
/// the token prices as `f64`.
pub fn prices_pb(p: &PriceSheet) -> pb::Prices {
    llmgw_core::price::prices_pb(p)
}

/// A secret from the API or a file: empty means none; a mask of the
/// stored value keeps it.
pub fn resolve_secret(
    kind: &str,
    given: &str,
    stored: Option<&SecretString>,
) -> Result<Option<SecretString>, StoreError> {
    if given.is_empty() {
        return Ok(None);
    }
    if keys::looks_masked(given) {
        return match stored {
            Some(s) if keys::is_mask_of(given, s.expose_secret()) => Ok(Some(s.clone())),
            _ => Err(StoreError::Invalid(format!(
                "{kind} is masked but does not match the stored secret; give the real value"
            ))),
        };
    }
    Ok(Some(SecretString::from(given.to_string())))
}

/// A proxy URL from the API or a file: empty is none; the masked form
/// reads show (`scheme://****@host:port`) keeps the stored proxy when it is
/// that proxy's mask, and is refused otherwise; anything else must be a
/// valid proxy URL, stored normalized.
pub fn resolve_proxy(
    given: &str,
    stored: Option<&SecretString>,
) -> Result<Option<SecretString>, StoreError> {
    let given = given.trim();
    if given.is_empty() {
        return Ok(None);
    }
    let url = ProxyUrl::parse(given).map_err(StoreError::from)?;
    if given.contains("****@") {
        let stored_url = stored.and_then(|s| ProxyUrl::parse(s.expose_secret()).ok());
        return match (stored, stored_url) {
            (Some(s), Some(u)) if u.shown() == url.shown() => Ok(Some(s.clone())),
            _ => Err(StoreError::Invalid(
                "proxy is masked but does not match the stored proxy; give the real URL".into(),
            )),
        };
    }
    Ok(Some(url.full()))
}

/// Default parameters from the API or a file (name -> JSON text), each
/// checked and kept in compact form.
pub fn default_params(
    map: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>, StoreError> {
    llmgw_core::defaults::params(map).map_err(StoreError::from)
}

// ---------- limits ----------

/// Limits as the API shows them: absent when there are none.
pub fn limits_pb(l: Option<&Limits>) -> Option<pb::Limits> {
    l.map(pb::Limits::from)
}

/// A change of limits from the API, each field checked by
/// `Limits::try_from` (its errors name the field). For each kind 0 removes
/// the limit; the empty period, window and outage mode keep what is stored.
pub fn limits_change(l: &pb::Limits) -> Result<LimitsChange, StoreError> {
    let valid = Limits::try_from(l).map_err(|e| StoreError::Invalid(format!("limits: {e}")))?;
    Ok(LimitsChange {
        rpm: l.rpm,
        tpm: l.tpm,
        max_concurrency: l.max_concurrency,
        budget_micros: l.budget_micros,
        budget_period: Period::parse(&l.budget_period).filter(|_| !l.budget_period.is_empty()),
        window_ms: (l.window_ms != 0).then_some(valid.window_ms),
        on_outage: OnOutage::parse(&l.on_outage).filter(|_| !l.on_outage.is_empty()),
    })
}

/// `stored` with the limits of a request merged in: absent keeps them all.
/// Onto `None` (a create, a configuration file) it gives exactly the limits
/// `given` sets.
pub fn limits_merged(
    stored: Option<&Limits>,
    given: Option<&pb::Limits>,
) -> Result<Option<Limits>, StoreError> {
    match given {
        None => Ok(stored.copied()),
        Some(l) => limits_change(l)?.merged(stored),
    }
}

// ---------- providers ----------

pub fn protocol(s: &str) -> Result<Protocol, StoreError> {
    Protocol::from_str(s).map_err(StoreError::from)
}

/// A base URL from the API, in the normalized form that is stored.
pub fn normalized_url(s: &str) -> Result<String, StoreError> {
    validate::base_url(s).map_err(StoreError::from)
}

/// Header values shown to admins: credentials masked, the rest as stored.
pub fn shown_headers(h: &BTreeMap<String, String>) -> std::collections::HashMap<String, String> {
    h.iter()
        .map(|(k, v)| {
            let shown = if validate::is_sensitive_header(k) {
                keys::mask(v)
            } else {
                v.clone()
            };
            (k.clone(), shown)
        })
        .collect()
}

/// Header values given back masked keep what is stored.
/// A masked value that does not match what is stored is refused, so a mask
/// is never sent upstream as a header value.
pub fn keep_masked(
    mut wanted: BTreeMap<String, String>,
    stored: &BTreeMap<String, String>,
    provider: &str,
) -> Result<BTreeMap<String, String>, StoreError> {
    for (k, v) in &mut wanted {
        if !keys::looks_masked(v) {
            continue;
        }
        match stored.get(k) {
            Some(old) if keys::is_mask_of(v, old) => v.clone_from(old),
            _ => {
                return Err(StoreError::Invalid(format!(
                    "header '{k}' of provider '{provider}' is masked but does not match the \
                     stored value; give the real value"
                )))
            }
        }
    }
    Ok(wanted)
}

/// A provider as the API shows it: its configuration, when it was created
/// and updated, and what of it is broken.
pub fn provider_pb(row: &ProviderRow) -> pb::Provider {
    let c = provider_config_pb(&row.spec);
    pb::Provider {
        limits: c.limits,
        name: c.name,
        protocol: c.protocol,
        base_url: c.base_url,
        api_key: c.api_key,
        headers: c.headers,
        timeout_s: c.timeout_s,
        enabled: c.enabled,
        stream_usage: c.stream_usage,
        proxy: c.proxy,
        default_params: c.default_params,
        created_at: rfc3339(Some(row.created_at)),
        updated_at: rfc3339(Some(row.updated_at)),
        broken: broken_pb(&row.broken),
    }
}

/// A provider as an exported configuration holds it.
pub fn provider_config_pb(s: &ProviderSpec) -> pb::ProviderConfig {
    pb::ProviderConfig {
        limits: limits_pb(s.limits.as_ref()),
        name: s.name.clone(),
        protocol: s.protocol.as_str().to_string(),
        base_url: s.base_url.clone(),
        api_key: s.shown_api_key(),
        headers: shown_headers(&s.headers),
        timeout_s: s.timeout_s,
        enabled: s.enabled,
        stream_usage: s.stream_usage,
        proxy: s.shown_proxy(),
        default_params: s.default_params.clone().into_iter().collect(),
    }
}

/// A provider from a configuration file, its masked secrets resolved
/// against the stored provider of that name.
pub fn provider_spec(
    c: &pb::ProviderConfig,
    stored: Option<&ProviderSpec>,
) -> Result<ProviderSpec, StoreError> {
    let headers: BTreeMap<String, String> = c.headers.clone().into_iter().collect();
    let no_headers = BTreeMap::new();
    let headers = keep_masked(headers, stored.map_or(&no_headers, |s| &s.headers), &c.name)?;
    Ok(ProviderSpec {
        name: c.name.clone(),
        protocol: Protocol::from_str(c.protocol.trim())
            .map_err(|e| StoreError::Invalid(format!("provider '{}': {e}", c.name)))?,
        base_url: normalized_url(&c.base_url).map_err(in_object("provider", &c.name))?,
        api_key: resolve_secret(
            &format!("api_key of provider '{}'", c.name),
            &c.api_key,
            stored.and_then(|s| s.api_key.as_ref()),
        )?,
        headers,
        timeout_s: c.timeout_s,
        stream_usage: c.stream_usage,
        enabled: c.enabled,
        limits: limits_merged(None, c.limits.as_ref()).map_err(in_object("provider", &c.name))?,
        proxy: resolve_proxy(&c.proxy, stored.and_then(|s| s.proxy.as_ref()))
            .map_err(in_object("provider", &c.name))?,
        default_params: default_params(c.default_params.clone())
            .map_err(in_object("provider", &c.name))?,
    })
}

// ---------- models ----------

pub fn strategy(s: &str) -> Result<Strategy, StoreError> {
    Strategy::from_str(s).map_err(StoreError::from)
}

/// A model's translation mode; empty means `strict`.
pub fn translation(s: &str) -> Result<Translation, StoreError> {
    Translation::from_str(s.trim()).map_err(StoreError::from)
}

/// A model's type; empty means `chat`.
pub fn model_type(s: &str) -> Result<ModelType, StoreError> {
    ModelType::from_str(s.trim()).map_err(StoreError::from)
}

pub fn target_pb(t: &TargetSpec) -> pb::ModelTarget {
    pb::ModelTarget {
        provider: t.provider.clone(),
        upstream_model: t.upstream_model.clone(),
        priority: t.priority,
        weight: Some(t.weight),
        rules: t.rules.clone(),
        enabled: t.enabled,
        prices: t.prices.as_ref().map(prices_pb),
        default_params: t.default_params.clone().into_iter().collect(),
    }
}

/// Targets from the API, with defaults filled in: an absent weight means 1
/// (0, set explicitly, drains the target).
pub fn targets_from_pb(items: &[pb::ModelTarget]) -> Result<Vec<TargetSpec>, StoreError> {
    if items.len() > validate::limits::TARGETS {
        return Err(StoreError::Invalid(format!(
            "targets has {} entries; the limit is {}",
            items.len(),
            validate::limits::TARGETS
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Ok(TargetSpec {
                provider: t.provider.trim().to_string(),
                upstream_model: t.upstream_model.trim().to_string(),
                priority: t.priority,
                weight: t.weight.unwrap_or(1),
                rules: rules_text(i, &t.rules)?,
                enabled: t.enabled,
                prices: t
                    .prices
                    .as_ref()
                    .map(|p| prices(Some(p), &format!("target {}: prices", i + 1)))
                    .transpose()?,
                default_params: default_params(t.default_params.clone())
                    .map_err(|e| StoreError::Invalid(format!("target {}: {e}", i + 1)))?,
            })
        })
        .collect()
}

/// A target's rule text, bounded before it is parsed and normalised.
fn rules_text(i: usize, text: &str) -> Result<String, StoreError> {
    let n = i + 1;
    validate::length(&format!("target {n} rules"), text, validate::limits::RULES)?;
    specs_normalise_rules(text)
        .map_err(|e| StoreError::Invalid(bounded(format!("target {n}: {e}"))))
}

/// A model as the API shows it: its configuration, when it was created
/// and updated, and what of it is broken.
pub fn model_pb(row: &ModelRow) -> pb::Model {
    let c = model_config_pb(&row.spec);
    pb::Model {
        limits: c.limits,
        name: c.name,
        strategy: c.strategy,
        max_attempts: c.max_attempts,
        retry_delay_ms: c.retry_delay_ms,
        prices: c.prices,
        enabled: c.enabled,
        targets: c.targets,
        created_at: rfc3339(Some(row.created_at)),
        updated_at: rfc3339(Some(row.updated_at)),
        default_max_tokens: c.default_max_tokens,
        translation: c.translation,
        broken: broken_pb(&row.broken),
        r#type: c.r#type,
    }
}

/// A model as an exported configuration holds it.
pub fn model_config_pb(s: &ModelSpec) -> pb::ModelConfig {
    pb::ModelConfig {
        limits: limits_pb(s.limits.as_ref()),
        name: s.name.clone(),
        strategy: s.strategy.as_str().to_string(),
        max_attempts: s.max_attempts,
        retry_delay_ms: s.retry_delay_ms,
        prices: Some(prices_pb(&s.prices)),
        enabled: s.enabled,
        targets: s.targets.iter().map(target_pb).collect(),
        default_max_tokens: s.default_max_tokens,
        translation: s.translation.as_str().to_string(),
        r#type: s.model_type.as_str().to_string(),
    }
}

/// A model from a configuration file.
pub fn model_spec(c: &pb::ModelConfig) -> Result<ModelSpec, StoreError> {
    let in_model = in_object("model", &c.name);
    Ok(ModelSpec {
        name: c.name.clone(),
        strategy: Strategy::from_str(&c.strategy)?,
        max_attempts: c.max_attempts,
        retry_delay_ms: c.retry_delay_ms,
        prices: prices(c.prices.as_ref(), "prices").map_err(&in_model)?,
        enabled: c.enabled,
        targets: targets_from_pb(&c.targets).map_err(&in_model)?,
        default_max_tokens: c.default_max_tokens,
        translation: translation(&c.translation).map_err(&in_model)?,
        model_type: model_type(&c.r#type).map_err(&in_model)?,
        limits: limits_merged(None, c.limits.as_ref()).map_err(&in_model)?,
    })
}

// ---------- client keys ----------

pub fn key_pb(row: &KeyRow) -> pb::ApiKey {
    let s = &row.spec;
    pb::ApiKey {
        limits: limits_pb(s.limits.as_ref()),
        name: s.name.clone(),
        prefix: s.prefix.clone(),
        models: s.models.clone(),
        expires_at: rfc3339(s.expires_at),
        revoked: s.revoked,
        created_at: rfc3339(Some(row.created_at)),
        last_used_at: rfc3339(row.last_used_at),
        log_bodies: s.log_bodies,
        broken: broken_pb(&row.broken),
    }
}

/// A key as an exported configuration holds it: its hash, never a secret.
pub fn key_config_pb(s: &KeySpec) -> pb::ApiKeyConfig {
    pb::ApiKeyConfig {
        limits: limits_pb(s.limits.as_ref()),
        name: s.name.clone(),
        models: s.models.clone(),
        expires_at: rfc3339(s.expires_at),
        revoked: s.revoked,
        log_bodies: s.log_bodies,
        hash: s.hash.clone(),
        prefix: s.prefix.clone(),
    }
}

/// A key from a configuration file; without a hash it must already exist.
pub fn key_spec(c: &pb::ApiKeyConfig, stored: Option<&KeySpec>) -> Result<KeySpec, StoreError> {
    let (hash, prefix) = match (c.hash.is_empty(), stored) {
        (false, _) => (c.hash.clone(), c.prefix.clone()),
        (true, Some(s)) => (s.hash.clone(), s.prefix.clone()),
        (true, None) => {
            return Err(StoreError::Invalid(format!(
                "API key '{}' does not exist and has no hash; create it with 'llmgw key create'",
                c.name
            )))
        }
    };
    Ok(KeySpec {
        name: c.name.clone(),
        hash,
        prefix,
        models: c.models.clone(),
        expires_at: parse_rfc3339(&c.expires_at)?,
        revoked: c.revoked,
        log_bodies: c.log_bodies,
        limits: limits_merged(None, c.limits.as_ref()).map_err(in_object("API key", &c.name))?,
    })
}

// ---------- data planes ----------

/// A data plane as the API shows it at `now_ms`: connected only while its
/// stream is up and it was heard from recently.
pub fn data_plane_pb(d: DataPlaneRow, now_ms: i64) -> pb::DataPlane {
    pb::DataPlane {
        connected: d.connected && now_ms - d.last_seen < CONNECTED_WITHIN_MS,
        node_id: d.node_id,
        peer_address: d.peer_address,
        connected_since: rfc3339(Some(d.connected_since)),
        last_seen: rfc3339(Some(d.last_seen)),
        acked_version: d.acked_version,
        nacked_version: d.nacked_version,
        last_nack_error: d.last_nack_error,
    }
}

/// A listing of an upstream's models as the API gives it.
pub fn upstream_models_pb(
    listed: crate::upstream_models::Listed,
) -> pb::ListUpstreamModelsResponse {
    pb::ListUpstreamModelsResponse {
        models: listed
            .models
            .into_iter()
            .map(|m| pb::UpstreamModel {
                id: m.id,
                display_name: m.display_name,
                created_unix: m.created_unix,
            })
            .collect(),
        truncated: listed.truncated,
    }
}
