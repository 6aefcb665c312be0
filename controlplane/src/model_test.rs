//! One of the control plane's outbound calls (the other is
//! `upstream_models`): a model test (`TestModel`, `llmgw model test NAME`)
//! sends a tiny request to every target of a model, one after another, and
//! reports each target's status, latency, error and the start of its
//! answer.
//!
//! The request is `llmgw_core::upstream::tiny_request`, in the provider's
//! own protocol, to the target's upstream model, with the provider's extra
//! headers and credential as the data plane sends them (`upstream_call`).
//! Each target is bounded by the caller's timeout. The test runs in the
//! control plane, which keeps no outlier or health state: no data plane
//! sees it, so it never ejects or restores a target there.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use http::Method;
use llmgw_core::table::ModelType;
use llmgw_core::upstream::{answer_excerpt, tiny_request};
use serde_json::Value;

use crate::store::{ModelRow, ProviderRow, TargetSpec};
use crate::upstream_call::{redact_key_params, usable, Call};

/// Per target, when the caller gives no timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest per-target timeout a caller may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest excerpt of an answer, in characters.
pub const EXCERPT_CHARS: usize = 200;

/// How one target answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetTest {
    pub provider: String,
    pub upstream_model: String,
    /// The provider's protocol (empty when the provider is unknown).
    pub protocol: String,
    /// `POST {url}`, as sent (no query secret); empty when nothing was.
    pub request: String,
    /// 0 when there was no answer.
    pub status: u16,
    pub latency_ms: u64,
    /// Empty on success.
    pub error: String,
    pub excerpt: String,
}

impl TargetTest {
    pub fn ok(&self) -> bool {
        self.error.is_empty()
    }
}

/// The timeout a request asks for (`0` is the default), capped.
pub fn timeout_of(ms: u32) -> Duration {
    match ms {
        0 => DEFAULT_TIMEOUT,
        ms => Duration::from_millis(u64::from(ms)).min(MAX_TIMEOUT),
    }
}

/// Tests every target of `model` in its order; `providers` by name.
pub async fn test(
    model: &ModelRow,
    providers: &BTreeMap<String, ProviderRow>,
    timeout: Duration,
) -> Vec<TargetTest> {
    let mut out = Vec::with_capacity(model.spec.targets.len());
    for target in &model.spec.targets {
        let mut result = TargetTest {
            provider: target.provider.clone(),
            upstream_model: target.upstream_model.clone(),
            ..Default::default()
        };
        match providers.get(&target.provider) {
            None => result.error = format!("provider '{}' not found", target.provider),
            Some(p) => test_target(p, target, model.spec.model_type, timeout, &mut result).await,
        }
        out.push(result);
    }
    out
}

async fn test_target(
    provider: &ProviderRow,
    target: &TargetSpec,
    model_type: ModelType,
    timeout: Duration,
    result: &mut TargetTest,
) {
    result.protocol = provider.spec.protocol.as_str().to_string();
    let spec = match usable(provider) {
        Ok(s) => s,
        Err(e) => return result.error = e.to_string(),
    };
    let tiny = match tiny_request(spec.protocol, model_type, &target.upstream_model) {
        Ok(t) => t,
        Err(why) => return result.error = format!("provider '{}': {why}", spec.name),
    };
    let call = match Call::new(spec) {
        Ok(c) => c,
        Err(e) => return result.error = e.to_string(),
    };
    result.request = format!(
        "POST {}",
        redact_key_params(&format!("{}{}", spec.base_url, tiny.path))
    );
    let started = Instant::now();
    let sent = tokio::time::timeout(
        timeout,
        call.send(Method::POST, &tiny.path, Some(&tiny.body)),
    );
    let answer = sent.await;
    result.latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let answer = match answer {
        Err(_) => {
            return result.error = format!(
                "provider '{}': no answer to {} within {} ms",
                spec.name,
                result.request,
                timeout.as_millis()
            )
        }
        Ok(Err(e)) => return result.error = e.to_string(),
        Ok(Ok(a)) => a,
    };
    result.status = answer.status.as_u16();
    if !answer.status.is_success() {
        result.error = call
            .status_error(answer.status, &answer.shown, &answer.body)
            .to_string();
        return;
    }
    let excerpt = match serde_json::from_slice::<Value>(&answer.body) {
        Err(e) => {
            return result.error = format!(
                "provider '{}': the upstream's answer to {} is not JSON: {e}",
                spec.name, answer.shown
            )
        }
        Ok(v) => answer_excerpt(&v).unwrap_or_else(|| v.to_string()),
    };
    result.excerpt = call
        .scrub(excerpt.trim())
        .chars()
        .take(EXCERPT_CHARS)
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ModelSpec;
    use crate::upstream_call::tests::spec;
    use llmgw_core::Protocol;

    fn model(targets: &[(&str, &str)]) -> ModelRow {
        ModelRow {
            spec: ModelSpec {
                name: "m".into(),
                strategy: Default::default(),
                max_attempts: 0,
                retry_delay_ms: None,
                prices: Default::default(),
                enabled: true,
                targets: targets
                    .iter()
                    .enumerate()
                    .map(|(i, (p, m))| TargetSpec {
                        provider: (*p).into(),
                        upstream_model: (*m).into(),
                        priority: i32::try_from(i).unwrap(),
                        weight: 1,
                        rules: String::new(),
                        enabled: true,
                        prices: None,
                        default_params: Default::default(),
                    })
                    .collect(),
                default_max_tokens: None,
                translation: Default::default(),
                model_type: ModelType::Chat,
                limits: None,
            },
            created_at: 0,
            updated_at: 0,
            broken: Vec::new(),
            scheduled: Vec::new(),
        }
    }

    #[test]
    fn timeouts_default_and_cap() {
        assert_eq!(timeout_of(0), DEFAULT_TIMEOUT);
        assert_eq!(timeout_of(250), Duration::from_millis(250));
        assert_eq!(timeout_of(u32::MAX), MAX_TIMEOUT);
    }

    #[tokio::test]
    async fn unknown_providers_and_closed_ports_are_reported_per_target() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let key = "sk-secret-1234567890";
        let mut p = spec(Protocol::Anthropic, key);
        p.base_url = format!("http://{addr}/v1");
        let providers = BTreeMap::from([(
            "p".to_string(),
            ProviderRow {
                spec: p,
                created_at: 0,
                updated_at: 0,
                broken: Vec::new(),
            },
        )]);
        let m = model(&[("gone", "x"), ("p", "claude")]);
        let results = test(&m, &providers, Duration::from_secs(5)).await;
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].error, "provider 'gone' not found");
        assert_eq!(results[0].request, "");
        let r = &results[1];
        assert_eq!(r.protocol, "anthropic");
        assert_eq!(r.request, format!("POST http://{addr}/v1/messages"));
        assert_eq!(r.status, 0);
        assert!(r.error.contains("cannot connect"), "{r:?}");
        assert!(!format!("{r:?}").contains(key));
    }
}
