//! The routing table: a discovery snapshot checked whole and turned into
//! domain types. A data plane swaps one `Arc<RoutingTable>` in at a time, so
//! providers, models, keys and settings always change together.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use llmgw_proto::v1 as pb;

use crate::keys;
use crate::limits::Limits;
use crate::price::{PriceSchedule, PriceSheet};
use crate::rules::Rule;
use crate::serving::ClientApi;
use crate::validate::{self, Protocol, Strategy};

/// Why a snapshot was rejected; sent back as the NACK's `error_detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SnapshotError(pub String);

/// A map by a name the snapshot gives (a model's, a provider's), looked up
/// on every request. foldhash, seeded per process, in place of SipHash
/// (about 150 instructions a short name): the names come from the admin's
/// configuration, not from clients, so there is nothing to flood.
pub type NameMap<V> = foldhash::HashMap<String, V>;

/// A validated routing table.
#[derive(Debug)]
pub struct RoutingTable {
    pub version: u64,
    pub providers: NameMap<Arc<Provider>>,
    pub models: NameMap<Arc<Model>>,
    keys: HashMap<[u8; 32], Arc<ClientKey>, DigestHash>,
    pub settings: Settings,
}

/// Hashes a key's SHA-256 digest by its first eight bytes. A digest is
/// already uniform, and the map holds only the snapshot's keys (a client
/// only looks up, it cannot add), so no seeded hash is needed; SipHash cost
/// every request about 300 instructions here.
#[derive(Debug, Clone, Copy, Default)]
pub struct DigestHash;

impl std::hash::BuildHasher for DigestHash {
    type Hasher = DigestHasher;
    fn build_hasher(&self) -> DigestHasher {
        DigestHasher(0)
    }
}

/// See [`DigestHash`].
#[derive(Debug)]
pub struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut first = [0u8; 8];
        let n = bytes.len().min(8);
        first[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(first);
    }
    /// An array's length prefix: the same for every digest.
    fn write_usize(&mut self, _: usize) {}
    fn finish(&self) -> u64 {
        self.0
    }
}

pub struct Provider {
    pub name: String,
    pub protocol: Protocol,
    /// Without a trailing slash.
    pub base_url: String,
    /// The base URL's host and port (for traces' `server.address` and
    /// `server.port`), read once when the snapshot is taken in.
    pub server: Option<(String, u16)>,
    /// The credential header for the provider's API key
    /// ([`crate::upstream::credential`]), built once when the snapshot is
    /// taken in; its value is marked sensitive so it never prints.
    pub credential: Option<(http::HeaderName, http::HeaderValue)>,
    /// Extra headers; values are marked sensitive so they never print.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Idle timeout between upstream bytes for this provider.
    pub timeout: Duration,
    pub stream_usage: bool,
    /// Protects the upstream's own quota; `None` when none is set.
    pub limits: Option<Limits>,
    /// The outbound proxy for this provider's upstream traffic.
    pub proxy: Option<crate::proxy::ProxyUrl>,
    /// Default request parameters (name -> compact JSON), filled in when
    /// the upstream body lacks them; each target merges them with its own.
    pub default_params: BTreeMap<String, String>,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("protocol", &self.protocol)
            .field("base_url", &self.base_url)
            .field(
                "credential",
                &self.credential.as_ref().map(|(n, _)| (n, "<redacted>")),
            )
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .field("proxy", &self.proxy)
            .finish()
    }
}

/// What a translation does with a request feature the target's protocol
/// cannot express (say, `logprobs` sent to Anthropic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Translation {
    /// Refuse the request with a client error naming the feature.
    #[default]
    Strict,
    /// Drop the feature, note it in the request's log, and go on.
    Lenient,
}

impl Translation {
    pub fn as_str(self) -> &'static str {
        match self {
            Translation::Strict => "strict",
            Translation::Lenient => "lenient",
        }
    }
}

impl FromStr for Translation {
    type Err = validate::ValidationError;
    /// An empty string is the default, `strict`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "strict" => Ok(Translation::Strict),
            "lenient" => Ok(Translation::Lenient),
            other => Err(validate::ValidationError(format!(
                "translation '{other}' is not supported; use 'strict' or 'lenient'"
            ))),
        }
    }
}

impl fmt::Display for Translation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub use crate::serving::ModelType;

#[derive(Debug)]
pub struct Model {
    pub name: String,
    pub strategy: Strategy,
    /// Attempts per target, with the global default resolved.
    pub max_attempts: u32,
    pub retry_delay: Duration,
    /// The model's own prices over time; each target has its resolved
    /// schedule ([`Target::prices`]).
    pub prices: PriceSchedule,
    /// In priority order.
    pub targets: Vec<Target>,
    /// `max_tokens` for a target whose protocol requires it (Anthropic)
    /// when the client gave none; `None` means the data plane's default.
    pub default_max_tokens: Option<u64>,
    pub translation: Translation,
    /// `None` from a control plane older than model types: every
    /// endpoint is served, as before.
    pub model_type: Option<ModelType>,
    /// `None` when none is set.
    pub limits: Option<Limits>,
}

impl Model {
    /// Why the model does not serve the client API `api`, when its type is
    /// another: the data plane answers it with 400 before routing, and
    /// `route explain` shows it.
    pub fn type_refusal(&self, api: ClientApi) -> Option<String> {
        let has = self.model_type?;
        let needs = ModelType::of_api(api);
        (has != needs).then(|| {
            format!(
                "model '{}' has type '{has}'; this endpoint takes models of type '{needs}'",
                self.name
            )
        })
    }
}

#[derive(Debug)]
pub struct Target {
    /// The target's identity for runtime state (health, latency), made
    /// once with the snapshot: routing and every attempt look a target up
    /// by it, and building it per request cost two strings each time.
    pub key: TargetKey,
    pub provider: Arc<Provider>,
    pub upstream_model: String,
    pub priority: i32,
    /// 0 drains the target: it is tried only after every other target of
    /// its priority (see [`crate::routing`]).
    pub weight: u32,
    pub rules: Option<Rule>,
    /// The target's prices over time: its own where it has them, else the
    /// model's (`prices.at(now_ms)` is what a request is charged).
    pub prices: PriceSchedule,
    /// The default parameters this target fills into the upstream body
    /// when it lacks them: its provider's, with the target's own winning
    /// (`llmgw_core::defaults::merged`); empty means the body is sent as
    /// it is.
    pub defaults: Vec<(String, bytes::Bytes)>,
}

/// Identity of a target for runtime state: provider plus upstream model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetKey {
    pub provider: String,
    pub upstream_model: String,
}

impl TargetKey {
    pub fn of(provider: &str, upstream_model: &str) -> Self {
        TargetKey {
            provider: provider.to_string(),
            upstream_model: upstream_model.to_string(),
        }
    }
}

#[derive(Debug)]
pub struct ClientKey {
    pub name: String,
    /// Empty means every model.
    pub models: HashSet<String>,
    /// Unix milliseconds.
    pub expires_at_ms: Option<i64>,
    pub log_bodies: bool,
    /// The key's own limits; `None` when it has none of its own (then
    /// `Settings::default_key_limits` apply). `Some` of empty limits is a
    /// key that is limited by nothing, not even the default.
    pub limits: Option<Limits>,
}

impl ClientKey {
    pub fn may_use(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.contains(model)
    }

    /// The limits that apply to this key: its own, else the default; `None`
    /// when nothing limits it.
    pub fn effective_limits<'a>(&'a self, settings: &'a Settings) -> Option<&'a Limits> {
        match &self.limits {
            Some(own) => Some(own),
            None => settings.default_key_limits.as_ref(),
        }
        .filter(|l| !l.is_empty())
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub retry_max_attempts: u32,
    pub retry_delay: Duration,
    pub http_timeout: Duration,
    pub log_bodies: bool,
    pub log_body_max_bytes: usize,
    pub max_request_body_bytes: u64,
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    /// Shared by all attempts of one request, until its response starts.
    pub deadline: Duration,
    /// Retries may add this share of the last 10 s's client requests...
    pub retry_budget_ratio: f64,
    /// ...plus this many.
    pub retry_budget_min_retries: u64,
    /// Limits of every key that has none of its own; `None` when none.
    pub default_key_limits: Option<Limits>,
    /// How far past its grant a data plane may admit, in percent of the
    /// limit divided among the data planes (see `crate::quota`).
    pub quota_slack_percent: u32,
}

/// The quota slack when a snapshot names none.
pub const DEFAULT_QUOTA_SLACK_PERCENT: u32 = 10;

/// Limits from the wire: absent or empty is `None`; invalid names the field.
fn limits(l: Option<&pb::Limits>) -> Result<Option<Limits>, SnapshotError> {
    let Some(l) = l else { return Ok(None) };
    let l = Limits::try_from(l).map_err(|e| bad(format!("limits: {e}")))?;
    Ok((!l.is_empty()).then_some(l))
}

/// Zero in a snapshot means "the default".
fn or_default(value: u64, default: u64) -> u64 {
    if value == 0 {
        default
    } else {
        value
    }
}

/// Why a client key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRejection {
    Unknown,
    Expired,
}

impl RoutingTable {
    /// Finds the key for a presented secret. The lookup is by SHA-256 and
    /// the final comparison is constant-time.
    pub fn authenticate(&self, secret: &str, now_ms: i64) -> Result<&Arc<ClientKey>, KeyRejection> {
        self.authenticate_digest(&keys::hash(secret), now_ms)
    }

    /// [`Self::authenticate`] for a secret already hashed ([`keys::hash`]):
    /// for a caller that keeps the digest of a secret it sees again.
    pub fn authenticate_digest(
        &self,
        h: &[u8; 32],
        now_ms: i64,
    ) -> Result<&Arc<ClientKey>, KeyRejection> {
        let (stored, key) = self.keys.get_key_value(h).ok_or(KeyRejection::Unknown)?;
        if !keys::ct_eq(stored, h) {
            return Err(KeyRejection::Unknown);
        }
        if key.expires_at_ms.is_some_and(|t| t <= now_ms) {
            return Err(KeyRejection::Expired);
        }
        Ok(key)
    }

    /// The key named `name` (a replay's or playground's grant names its
    /// key, #17): a scan, for those rare requests only.
    pub fn key_named(&self, name: &str, now_ms: i64) -> Result<&Arc<ClientKey>, KeyRejection> {
        let key = self
            .keys
            .values()
            .find(|k| k.name == name)
            .ok_or(KeyRejection::Unknown)?;
        if key.expires_at_ms.is_some_and(|t| t <= now_ms) {
            return Err(KeyRejection::Expired);
        }
        Ok(key)
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}

fn bad(msg: impl Into<String>) -> SnapshotError {
    SnapshotError(msg.into())
}

impl TryFrom<pb::Snapshot> for RoutingTable {
    type Error = SnapshotError;

    fn try_from(s: pb::Snapshot) -> Result<Self, Self::Error> {
        if s.version == 0 {
            return Err(bad("snapshot has no version"));
        }
        let st = s.settings.ok_or_else(|| bad("snapshot has no settings"))?;
        if st.retry_max_attempts == 0 {
            return Err(bad("settings: retry_max_attempts must be at least 1"));
        }
        if st.http_timeout_s == 0 {
            return Err(bad("settings: http_timeout_s must be at least 1"));
        }
        let settings = Settings {
            retry_max_attempts: st.retry_max_attempts,
            retry_delay: Duration::from_millis(st.retry_delay_ms.into()),
            http_timeout: Duration::from_secs(st.http_timeout_s.into()),
            log_bodies: st.log_bodies,
            log_body_max_bytes: st.log_body_max_bytes as usize,
            max_request_body_bytes: or_default(st.max_request_body_bytes, 32 << 20),
            connect_timeout: Duration::from_millis(or_default(st.connect_timeout_ms.into(), 5000)),
            first_byte_timeout: Duration::from_secs(or_default(
                st.first_byte_timeout_s.into(),
                st.http_timeout_s.into(),
            )),
            deadline: Duration::from_secs(or_default(st.deadline_s.into(), 300)),
            retry_budget_ratio: f64::from(st.retry_budget_percent.unwrap_or(20)) / 100.0,
            retry_budget_min_retries: st.retry_budget_min_retries.unwrap_or(10).into(),
            default_key_limits: limits(st.default_key_limits.as_ref())
                .map_err(|e| bad(format!("settings: default_key_limits: {}", e.0)))?,
            quota_slack_percent: st
                .quota_slack_percent
                .unwrap_or(DEFAULT_QUOTA_SLACK_PERCENT),
        };

        let mut providers =
            NameMap::with_capacity_and_hasher(s.providers.len(), Default::default());
        for p in s.providers {
            let name = p.name.clone();
            let provider =
                provider(p, &settings).map_err(|e| bad(format!("provider '{name}': {e}")))?;
            if providers.insert(name.clone(), Arc::new(provider)).is_some() {
                return Err(bad(format!("provider '{name}' appears twice")));
            }
        }

        let mut models = NameMap::with_capacity_and_hasher(s.models.len(), Default::default());
        for m in s.models {
            let name = m.name.clone();
            let model =
                model(m, &providers, &settings).map_err(|e| bad(format!("model '{name}': {e}")))?;
            if models.insert(name.clone(), Arc::new(model)).is_some() {
                return Err(bad(format!("model '{name}' appears twice")));
            }
        }

        let mut keys_by_hash = HashMap::with_capacity_and_hasher(s.keys.len(), DigestHash);
        let mut key_names = HashSet::with_capacity(s.keys.len());
        for k in s.keys {
            validate::name("key", &k.name).map_err(|e| bad(e.0))?;
            if !key_names.insert(k.name.clone()) {
                return Err(bad(format!("key '{}' appears twice", k.name)));
            }
            let mut hash = [0u8; 32];
            if !keys::is_hash_hex(&k.hash) || hex::decode_to_slice(&k.hash, &mut hash).is_err() {
                return Err(bad(format!("key '{}': hash is not 64 hex digits", k.name)));
            }
            // Present but empty: the key's own "no limits", not the default.
            let own = match &k.limits {
                Some(l) => Some(
                    limits(Some(l))
                        .map_err(|e| bad(format!("key '{}': {}", k.name, e.0)))?
                        .unwrap_or_default(),
                ),
                None => None,
            };
            let key = ClientKey {
                name: k.name,
                models: k.models.into_iter().collect(),
                expires_at_ms: (k.expires_at_ms != 0).then_some(k.expires_at_ms),
                log_bodies: k.log_bodies,
                limits: own,
            };
            if keys_by_hash.insert(hash, Arc::new(key)).is_some() {
                return Err(bad("two keys share one hash"));
            }
        }

        Ok(RoutingTable {
            version: s.version,
            providers,
            models,
            keys: keys_by_hash,
            settings,
        })
    }
}

fn provider(p: pb::SnapshotProvider, settings: &Settings) -> Result<Provider, SnapshotError> {
    validate::name("provider", &p.name).map_err(|e| bad(e.0))?;
    let protocol: Protocol = p
        .protocol
        .parse()
        .map_err(|e: validate::ValidationError| bad(e.0))?;
    let base_url = validate::base_url(&p.base_url).map_err(|e| bad(e.0))?;
    let mut headers = Vec::with_capacity(p.headers.len());
    let mut names: Vec<_> = p.headers.into_iter().collect();
    names.sort();
    for (n, v) in names {
        validate::header(&n, &v).map_err(|e| bad(e.0))?;
        let name = http::HeaderName::from_bytes(n.as_bytes())
            .map_err(|_| bad(format!("'{n}' is not a valid header name")))?;
        let mut value = http::HeaderValue::from_str(&v)
            .map_err(|_| bad(format!("the value of header '{n}' is not valid")))?;
        value.set_sensitive(true);
        headers.push((name, value));
    }
    let credential = if p.api_key.is_empty() {
        None
    } else {
        // The key is kept only in the header's value, marked sensitive so
        // that it never prints.
        Some(
            crate::upstream::credential(protocol, &p.api_key)
                .ok_or_else(|| bad("API key contains characters not allowed in a header"))?,
        )
    };
    Ok(Provider {
        name: p.name,
        protocol,
        server: server_of(&base_url).map(|(h, p)| (h.to_string(), p)),
        base_url,
        credential,
        headers,
        timeout: if p.timeout_s == 0 {
            settings.http_timeout
        } else {
            Duration::from_secs(p.timeout_s.into())
        },
        stream_usage: p.stream_usage,
        limits: limits(p.limits.as_ref())?,
        proxy: if p.proxy.is_empty() {
            None
        } else {
            Some(crate::proxy::ProxyUrl::parse(&p.proxy).map_err(|e| bad(e.0))?)
        },
        default_params: crate::defaults::params(p.default_params)
            .map_err(|e| bad(format!("default_params: {e}")))?,
    })
}

fn model(
    m: pb::SnapshotModel,
    providers: &NameMap<Arc<Provider>>,
    settings: &Settings,
) -> Result<Model, SnapshotError> {
    validate::name("model", &m.name).map_err(|e| bad(e.0))?;
    let strategy: Strategy = m
        .strategy
        .parse()
        .map_err(|e: validate::ValidationError| bad(e.0))?;
    let translation: Translation = m
        .translation
        .parse()
        .map_err(|e: validate::ValidationError| bad(e.0))?;
    let model_type = if m.r#type.is_empty() {
        None
    } else {
        Some(
            m.r#type
                .parse::<ModelType>()
                .map_err(|e: validate::ValidationError| bad(e.0))?,
        )
    };
    let model_limits = limits(m.limits.as_ref())?;
    if m.default_max_tokens == Some(0) {
        return Err(bad("default_max_tokens must be at least 1"));
    }
    let prices = sheet(m.exact_prices.as_ref(), m.prices.as_ref())
        .map_err(|e| bad(format!("prices: {e}")))?
        .unwrap_or_default();
    let schedule = schedule(&m.price_schedule, m.targets.len())?;
    let mut targets = Vec::with_capacity(m.targets.len());
    for (i, t) in m.targets.into_iter().enumerate() {
        let provider = providers.get(&t.provider).ok_or_else(|| {
            bad(format!(
                "target {} names unknown provider '{}'",
                i + 1,
                t.provider
            ))
        })?;
        if t.upstream_model.is_empty() {
            return Err(bad(format!("target {} has no upstream model", i + 1)));
        }
        validate::weight(t.weight).map_err(|e| bad(format!("target {}: {e}", i + 1)))?;
        let rules = Rule::parse(&t.rules).map_err(|e| bad(format!("target {}: {e}", i + 1)))?;
        let own = sheet(t.exact_prices.as_ref(), t.prices.as_ref())
            .map_err(|e| bad(format!("target {}: prices: {e}", i + 1)))?;
        let later = schedule
            .iter()
            .map(|(from, model, by_target)| {
                let s = by_target.get(&i).unwrap_or(model);
                (*from, s.clone())
            })
            .collect();
        let target_prices = PriceSchedule::new(own.unwrap_or_else(|| prices.clone()), later);
        let own_params = crate::defaults::params(t.default_params)
            .map_err(|e| bad(format!("target {}: default_params: {e}", i + 1)))?;
        targets.push(Target {
            key: TargetKey::of(&provider.name, &t.upstream_model),
            defaults: crate::defaults::merged(&provider.default_params, &own_params),
            provider: Arc::clone(provider),
            upstream_model: t.upstream_model,
            priority: t.priority,
            weight: t.weight,
            rules,
            prices: target_prices,
        });
    }
    targets.sort_by_key(|t| t.priority);
    Ok(Model {
        name: m.name,
        strategy,
        max_attempts: if m.max_attempts == 0 {
            settings.retry_max_attempts
        } else {
            m.max_attempts
        },
        retry_delay: m
            .retry_delay_ms
            .map_or(settings.retry_delay, |ms| Duration::from_millis(ms.into())),
        prices: PriceSchedule::new(
            prices,
            schedule.into_iter().map(|(from, s, _)| (from, s)).collect(),
        ),
        targets,
        default_max_tokens: m.default_max_tokens.map(u64::from),
        translation,
        model_type,
        limits: model_limits,
    })
}

/// Prices from a snapshot: the exact ones, else an older control plane's
/// `f64` token prices; `None` when neither is set.
fn sheet(
    exact: Option<&pb::ExactPrices>,
    legacy: Option<&pb::Prices>,
) -> Result<Option<PriceSheet>, validate::ValidationError> {
    match (exact, legacy) {
        (Some(e), _) => PriceSheet::try_from(e).map(Some),
        (None, Some(p)) => crate::price::sheet_from_legacy(p).map(Some),
        (None, None) => Ok(None),
    }
}

/// A scheduled change: its time, the model's prices, and targets' own by
/// index.
type Scheduled = (i64, PriceSheet, HashMap<usize, PriceSheet>);

/// A model's scheduled price changes, each checked; a target index must
/// name one of the model's `targets` targets.
fn schedule(
    items: &[pb::ScheduledPrices],
    targets: usize,
) -> Result<Vec<Scheduled>, SnapshotError> {
    items
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let at = |what: &str, err: validate::ValidationError| {
                bad(format!("price_schedule[{i}].{what}: {err}"))
            };
            let model = match &e.model {
                Some(m) => PriceSheet::try_from(m).map_err(|err| at("model", err))?,
                None => PriceSheet::default(),
            };
            let mut by_target = HashMap::new();
            for (&t, p) in &e.targets {
                let idx = t as usize;
                if idx >= targets {
                    return Err(bad(format!(
                        "price_schedule[{i}].targets: index {t} is not a target (there are {targets})"
                    )));
                }
                let s = PriceSheet::try_from(p).map_err(|err| at(&format!("targets[{t}]"), err))?;
                by_target.insert(idx, s);
            }
            Ok((e.from_ms, model, by_target))
        })
        .collect()
}

/// The host and port of a provider's base URL (an absolute http(s) URL,
/// already validated).
pub fn server_of(base_url: &str) -> Option<(&str, u16)> {
    let colon = base_url.bytes().position(|b| b == b':')?;
    let (scheme, rest) = (
        &base_url[..colon],
        base_url[colon + 1..].strip_prefix("//")?,
    );
    let end = rest
        .bytes()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    let authority = match authority.bytes().rposition(|b| b == b'@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.bytes().rposition(|b| b == b':') {
            Some(c) => (&authority[..c], Some(&authority[c + 1..])),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => p.parse().ok()?,
        None if scheme.eq_ignore_ascii_case("https") => 443,
        None if scheme.eq_ignore_ascii_case("http") => 80,
        None => return None,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> pb::Snapshot {
        pb::Snapshot {
            version: 7,
            nonce: "n".into(),
            providers: vec![pb::SnapshotProvider {
                limits: Default::default(),
                name: "openai".into(),
                protocol: "openai".into(),
                base_url: "https://api.example.com/v1/".into(),
                api_key: "sk-upstream-secret".into(),
                headers: [("x-org".to_string(), "acme".to_string())].into(),
                timeout_s: 0,
                stream_usage: true,
                proxy: String::new(),
                default_params: Default::default(),
            }],
            models: vec![pb::SnapshotModel {
                limits: Default::default(),
                name: "gpt".into(),
                strategy: "priority".into(),
                max_attempts: 0,
                retry_delay_ms: Some(5),
                prices: Some(pb::Prices {
                    input_per_mtok: 1.0,
                    output_per_mtok: 2.0,
                    cached_input_per_mtok: 0.5,
                    cache_write_per_mtok: 1.25,
                    sheet: None,
                }),
                exact_prices: None,
                price_schedule: Vec::new(),
                targets: vec![
                    pb::SnapshotTarget {
                        provider: "openai".into(),
                        upstream_model: "gpt-4o".into(),
                        priority: 1,
                        weight: 1,
                        rules: String::new(),
                        prices: None,
                        exact_prices: None,
                        default_params: Default::default(),
                    },
                    pb::SnapshotTarget {
                        provider: "openai".into(),
                        upstream_model: "gpt-4o-mini".into(),
                        priority: 0,
                        weight: 3,
                        rules: r#"{"field":"key","op":"eq","value":"k"}"#.into(),
                        prices: None,
                        exact_prices: None,
                        default_params: Default::default(),
                    },
                ],
                default_max_tokens: Some(4096),
                translation: "lenient".into(),
                r#type: "embedding".into(),
            }],
            keys: vec![pb::SnapshotKey {
                limits: Default::default(),
                name: "k".into(),
                hash: keys::hash_hex("sk-llmgw-test"),
                models: vec!["gpt".into()],
                expires_at_ms: 0,
                log_bodies: true,
            }],
            settings: Some(pb::Settings {
                quota_slack_percent: Default::default(),
                default_key_limits: Default::default(),
                retry_max_attempts: 3,
                retry_delay_ms: 1000,
                http_timeout_s: 60,
                log_bodies: true,
                log_body_max_bytes: 65536,
                max_request_body_bytes: 32 << 20,
                connect_timeout_ms: 5000,
                first_byte_timeout_s: 60,
                deadline_s: 300,
                retry_budget_percent: Some(20),
                retry_budget_min_retries: None,
            }),
        }
    }

    #[test]
    fn a_key_is_found_by_name_unless_expired() {
        let mut s = sample();
        let t = RoutingTable::try_from(s.clone()).unwrap();
        assert_eq!(t.key_named("k", 0).unwrap().name, "k");
        assert_eq!(t.key_named("gone", 0).unwrap_err(), KeyRejection::Unknown);
        s.keys[0].expires_at_ms = 1000;
        let t = RoutingTable::try_from(s).unwrap();
        assert!(t.key_named("k", 999).is_ok());
        assert_eq!(t.key_named("k", 1000).unwrap_err(), KeyRejection::Expired);
    }

    #[test]
    fn a_proxy_is_read_and_a_bad_one_refuses_the_snapshot_naming_the_field() {
        let mut s = sample();
        s.providers[0].proxy = "socks5://u:proxysecret@127.0.0.1:1080".into();
        let t = RoutingTable::try_from(s.clone()).unwrap();
        let p = t.providers["openai"].proxy.as_ref().unwrap();
        assert_eq!(p.shown(), "socks5://****@127.0.0.1:1080");
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("proxysecret"), "{dbg}");
        s.providers[0].proxy = "ftp://u:proxysecret@h".into();
        let e = RoutingTable::try_from(s).unwrap_err().0;
        assert_eq!(e, "provider 'openai': proxy must use http, https or socks5");
    }

    #[test]
    fn default_params_merge_per_target_and_bad_ones_refuse_the_snapshot() {
        let mut s = sample();
        s.providers[0].default_params = [
            ("temperature".to_string(), "0.2".to_string()),
            ("top_p".to_string(), " 0.9 ".to_string()),
        ]
        .into();
        s.models[0].targets[1].default_params =
            [("temperature".to_string(), "1".to_string())].into();
        let t = RoutingTable::try_from(s.clone()).unwrap();
        let m = &t.models["gpt"];
        let d = |t: &Target| {
            t.defaults
                .iter()
                .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
                .collect::<Vec<_>>()
        };
        // Sorted by priority: the second target in the snapshot is first.
        assert_eq!(d(&m.targets[0]), ["temperature=1", "top_p=0.9"]);
        assert_eq!(d(&m.targets[1]), ["temperature=0.2", "top_p=0.9"]);
        s.models[0].targets[1].default_params = [("model".to_string(), "\"x\"".to_string())].into();
        let e = RoutingTable::try_from(s.clone()).unwrap_err().0;
        assert!(
            e.starts_with(
                "model 'gpt': target 2: default_params: default parameter 'model' is not allowed"
            ),
            "{e}"
        );
        s.models[0].targets[1].default_params.clear();
        s.providers[0].default_params = [("temperature".to_string(), "{".to_string())].into();
        let e = RoutingTable::try_from(s).unwrap_err().0;
        assert!(e.starts_with("provider 'openai': default_params: default parameter 'temperature' is not valid JSON"), "{e}");
    }

    #[test]
    fn valid_snapshot_becomes_table() {
        let t = RoutingTable::try_from(sample()).unwrap();
        assert_eq!(t.version, 7);
        let p = &t.providers["openai"];
        assert_eq!(p.base_url, "https://api.example.com/v1");
        assert_eq!(p.timeout, Duration::from_secs(60));
        let m = &t.models["gpt"];
        assert_eq!(m.max_attempts, 3);
        assert_eq!(m.retry_delay, Duration::from_millis(5));
        assert_eq!(m.targets[0].upstream_model, "gpt-4o-mini");
        assert!(m.targets[0].rules.is_some());
        assert_eq!(m.default_max_tokens, Some(4096));
        assert_eq!(m.translation, Translation::Lenient);
        assert_eq!(m.model_type, Some(ModelType::Embedding));
        assert!(m.type_refusal(ClientApi::Embeddings).is_none());
        assert_eq!(
            m.type_refusal(ClientApi::Chat).as_deref(),
            Some("model 'gpt' has type 'embedding'; this endpoint takes models of type 'chat'")
        );
        // An older control plane's f64 prices, to the nano-dollar.
        assert_eq!(m.prices.at(0).tokens.cache_write.nanos(), 1_250_000_000);
        // Targets without their own prices carry the model's.
        assert_eq!(m.targets[1].prices, m.prices);
        let k = t.authenticate("sk-llmgw-test", 0).unwrap();
        assert!(k.may_use("gpt") && !k.may_use("other"));
        assert_eq!(
            t.authenticate("sk-llmgw-nope", 0).unwrap_err(),
            KeyRejection::Unknown
        );
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("sk-upstream-secret"), "{dbg}");
        assert!(!dbg.contains("acme"), "{dbg}");
    }

    #[test]
    fn exact_prices_and_a_schedule_are_carried_per_target() {
        use crate::price::{exact_pb, PriceSheet, TokenPrices};
        let flat = |i: &str, o: &str| {
            PriceSheet::flat(TokenPrices {
                input: i.parse().unwrap(),
                output: o.parse().unwrap(),
                ..Default::default()
            })
        };
        let mut s = sample();
        let m = &mut s.models[0];
        // The exact prices win over the f64 ones sent beside them.
        m.exact_prices = Some(exact_pb(&flat("0.1", "0.2")));
        // Snapshot order: target 0 is gpt-4o (priority 1), sorted second.
        m.targets[0].exact_prices = Some(exact_pb(&flat("7", "8")));
        m.price_schedule = vec![pb::ScheduledPrices {
            from_ms: 5000,
            model: Some(exact_pb(&flat("1", "1"))),
            targets: [(0, exact_pb(&flat("9", "9")))].into(),
        }];
        let t = RoutingTable::try_from(s.clone()).unwrap();
        let m = &t.models["gpt"];
        let (mini, big) = (&m.targets[0], &m.targets[1]);
        assert_eq!(big.upstream_model, "gpt-4o");
        assert_eq!(mini.prices.at(4999), &flat("0.1", "0.2"));
        assert_eq!(big.prices.at(4999), &flat("7", "8"));
        assert_eq!(mini.prices.at(5000), &flat("1", "1"));
        assert_eq!(big.prices.at(5000), &flat("9", "9"));
        assert_eq!(m.prices.at(5000), &flat("1", "1"));
        // Bad prices refuse the snapshot, naming the field.
        let mut bad = s.clone();
        bad.models[0].targets[1].exact_prices = Some(pb::ExactPrices {
            output_per_mtok: -5,
            ..Default::default()
        });
        let e = RoutingTable::try_from(bad).unwrap_err();
        assert!(
            e.0.contains("model 'gpt': target 2: prices: output_per_mtok: "),
            "{e}"
        );
        let mut bad = s.clone();
        bad.models[0].price_schedule[0]
            .targets
            .insert(7, Default::default());
        let e = RoutingTable::try_from(bad).unwrap_err();
        assert!(e.0.contains("price_schedule[0].targets: index 7"), "{e}");
        let mut bad = s;
        bad.models[0].price_schedule[0].model = Some(pb::ExactPrices {
            tiers: vec![pb::ExactPriceTier::default()],
            ..Default::default()
        });
        let e = RoutingTable::try_from(bad).unwrap_err();
        assert!(e.0.contains("price_schedule[0].model: tiers[0]"), "{e}");
    }

    #[test]
    fn every_protocol_and_translation_default() {
        for p in Protocol::ALL {
            let mut s = sample();
            s.providers[0].protocol = p.as_str().into();
            s.models[0].translation = String::new();
            s.models[0].default_max_tokens = None;
            s.models[0].r#type = String::new();
            let t = RoutingTable::try_from(s).unwrap();
            assert_eq!(t.providers["openai"].protocol, p);
            assert_eq!(t.models["gpt"].translation, Translation::Strict);
            assert_eq!(t.models["gpt"].default_max_tokens, None);
            // An older control plane's snapshot: no type, every endpoint.
            assert_eq!(t.models["gpt"].model_type, None);
            assert!(t.models["gpt"]
                .type_refusal(ClientApi::Embeddings)
                .is_none());
        }
        for m in ["strict", "lenient"] {
            assert_eq!(m.parse::<Translation>().unwrap().as_str(), m);
        }
        for t in ModelType::ALL {
            assert_eq!(t.as_str().parse::<ModelType>().unwrap(), t);
        }
        assert_eq!(
            ModelType::of_api(ClientApi::Embeddings),
            ModelType::Embedding
        );
        assert_eq!(ModelType::of_api(ClientApi::Messages), ModelType::Chat);
    }

    #[test]
    fn weight_zero_is_a_drained_target() {
        let mut s = sample();
        s.models[0].targets[0].weight = 0;
        let t = RoutingTable::try_from(s).unwrap();
        let drained = t.models["gpt"]
            .targets
            .iter()
            .find(|t| t.upstream_model == "gpt-4o")
            .unwrap();
        assert_eq!(drained.weight, 0);
    }

    #[test]
    fn expired_keys_are_refused() {
        let mut s = sample();
        s.keys[0].expires_at_ms = 1000;
        let t = RoutingTable::try_from(s).unwrap();
        assert!(t.authenticate("sk-llmgw-test", 999).is_ok());
        assert_eq!(
            t.authenticate("sk-llmgw-test", 1000).unwrap_err(),
            KeyRejection::Expired
        );
    }

    #[test]
    fn invalid_snapshots_are_explained() {
        type Mutation = fn(&mut pb::Snapshot);
        let cases: Vec<(Mutation, &str)> = vec![
            (|s| s.version = 0, "no version"),
            (|s| s.settings = None, "no settings"),
            (|s| s.providers[0].protocol = "x".into(), "protocol 'x'"),
            (
                |s| s.providers[0].base_url = "ftp://x".into(),
                "http or https",
            ),
            (
                |s| s.models[0].targets[0].provider = "gone".into(),
                "unknown provider 'gone'",
            ),
            (
                |s| s.models[0].targets[0].weight = validate::limits::WEIGHT + 1,
                "weight",
            ),
            (
                |s| s.models[0].targets[1].rules = "{".into(),
                "not valid JSON",
            ),
            (|s| s.models[0].strategy = "fastest".into(), "strategy"),
            (
                |s| s.models[0].translation = "loose".into(),
                "translation 'loose'",
            ),
            (
                |s| s.models[0].r#type = "video".into(),
                "model type 'video'",
            ),
            (
                |s| s.models[0].default_max_tokens = Some(0),
                "default_max_tokens must be at least 1",
            ),
            (|s| s.keys[0].hash = "zz".into(), "64 hex"),
            (|s| s.keys.push(s.keys[0].clone()), "appears twice"),
            (
                |s| s.providers.push(s.providers[0].clone()),
                "appears twice",
            ),
            (
                |s| {
                    s.keys[0].limits = Some(pb::Limits {
                        window_ms: 5,
                        ..Default::default()
                    })
                },
                "key 'k': limits: window_ms 5",
            ),
            (
                |s| {
                    s.models[0].limits = Some(pb::Limits {
                        budget_period: "year".into(),
                        ..Default::default()
                    })
                },
                "model 'gpt': limits: budget_period",
            ),
            (
                |s| {
                    s.providers[0].limits = Some(pb::Limits {
                        on_outage: "maybe".into(),
                        ..Default::default()
                    })
                },
                "provider 'openai': limits: on_outage",
            ),
            (
                |s| {
                    if let Some(st) = s.settings.as_mut() {
                        st.default_key_limits = Some(pb::Limits {
                            window_ms: 1,
                            ..Default::default()
                        });
                    }
                },
                "settings: default_key_limits: limits: window_ms",
            ),
        ];
        for (mutate, want) in cases {
            let mut s = sample();
            mutate(&mut s);
            let e = RoutingTable::try_from(s).unwrap_err();
            assert!(e.0.contains(want), "want {want:?} in {e}");
        }
    }

    #[test]
    fn limits_are_carried_and_keys_fall_back_to_the_default() {
        let mut s = sample();
        let rpm = |n| pb::Limits {
            rpm: Some(n),
            ..Default::default()
        };
        s.providers[0].limits = Some(rpm(7));
        s.models[0].limits = Some(pb::Limits::default());
        if let Some(st) = s.settings.as_mut() {
            st.default_key_limits = Some(rpm(5));
            st.quota_slack_percent = Some(25);
        }
        let mut other = s.keys[0].clone();
        other.name = "own".into();
        other.hash = keys::hash_hex("sk-llmgw-own");
        other.limits = Some(rpm(9));
        let mut unlimited = s.keys[0].clone();
        unlimited.name = "free".into();
        unlimited.hash = keys::hash_hex("sk-llmgw-free");
        unlimited.limits = Some(pb::Limits::default());
        s.keys.extend([other, unlimited]);
        let t = RoutingTable::try_from(s).unwrap();
        assert_eq!(t.providers["openai"].limits.and_then(|l| l.rpm), Some(7));
        // Empty limits are none.
        assert_eq!(t.models["gpt"].limits, None);
        assert_eq!(t.settings.quota_slack_percent, 25);
        let rpm_of = |secret| {
            t.authenticate(secret, 0)
                .unwrap()
                .effective_limits(&t.settings)
                .and_then(|l| l.rpm)
        };
        assert_eq!(rpm_of("sk-llmgw-test"), Some(5));
        assert_eq!(rpm_of("sk-llmgw-own"), Some(9));
        assert_eq!(rpm_of("sk-llmgw-free"), None);
        let plain = RoutingTable::try_from(sample()).unwrap();
        assert_eq!(
            plain.settings.quota_slack_percent,
            DEFAULT_QUOTA_SLACK_PERCENT
        );
        assert!(plain.settings.default_key_limits.is_none());
    }

    #[test]
    fn servers_are_read_from_base_urls() {
        assert_eq!(
            server_of("https://api.openai.com/v1"),
            Some(("api.openai.com", 443))
        );
        assert_eq!(
            server_of("http://127.0.0.1:8080/v1"),
            Some(("127.0.0.1", 8080))
        );
        assert_eq!(server_of("http://[::1]:9/x"), Some(("::1", 9)));
        assert_eq!(server_of("https://[::1]"), Some(("::1", 443)));
        assert_eq!(server_of("http://h:80?x=1"), Some(("h", 80)));
        assert_eq!(server_of("http://u:p@h:81/"), Some(("h", 81)));
        assert_eq!(server_of("not a url"), None);
        assert_eq!(server_of("http://h:notaport/"), None);
        assert_eq!(server_of("http:///x"), None);
    }
}
