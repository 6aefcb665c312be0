//! The routing dry run behind `llmgw route explain`: the data plane's own
//! routing code (`llmgw_core::routing`) run against the snapshot the
//! control plane publishes now, with no runtime history.

use std::collections::HashMap;

use llmgw_core::routing::{self, FreshState, Verdict};
use llmgw_core::rules::Facts;
use llmgw_core::serving::ClientApi;
use llmgw_core::RoutingTable;
use llmgw_proto::v1 as pb;
use serde_json::Value;
use tonic::Status;

struct RequestFacts {
    headers: HashMap<String, String>,
    body: Value,
    key: String,
    input_tokens: u64,
    /// Whether a rule asked for the token count: then, as in the data
    /// plane, a cost estimate uses it too; else the cheap estimate.
    counted: std::cell::Cell<bool>,
}

impl Facts for RequestFacts {
    fn header(&self, lower_name: &str) -> Option<&str> {
        self.headers.get(lower_name).map(String::as_str)
    }
    fn body(&self) -> Option<&Value> {
        Some(&self.body)
    }
    fn key_name(&self) -> &str {
        &self.key
    }
    fn input_tokens(&self) -> u64 {
        self.counted.set(true);
        self.input_tokens
    }
    fn approximate_input_tokens(&self) -> u64 {
        if self.counted.get() {
            self.input_tokens
        } else {
            llmgw_core::tokens::approximate_input(&self.body)
        }
    }
    fn max_output_tokens(&self) -> Option<u64> {
        llmgw_core::tokens::max_output(&self.body)
    }
}

pub fn explain(
    snapshot: Option<&pb::Snapshot>,
    r: pb::ExplainRouteRequest,
) -> Result<pb::ExplainRouteResponse, Status> {
    let snapshot = snapshot
        .cloned()
        .ok_or_else(|| Status::unavailable("no snapshot has been built yet"))?;
    let table = RoutingTable::try_from(snapshot)
        .map_err(|e| Status::internal(format!("the current snapshot is invalid: {e}")))?;
    let api = if r.protocol.is_empty() {
        ClientApi::Chat
    } else {
        ClientApi::parse(&r.protocol).ok_or_else(|| {
            Status::invalid_argument(format!(
                "unknown client API '{}'; use chat, responses, messages, gemini, embeddings, completions, count-tokens, \
                 gemini-count-tokens, speech, transcription or image",
                r.protocol
            ))
        })?
    };
    let body: Value = if r.body.trim().is_empty() {
        serde_json::json!({ "model": r.model })
    } else {
        serde_json::from_str(&r.body)
            .map_err(|e| Status::invalid_argument(format!("the body is not valid JSON: {e}")))?
    };
    if !body.is_object() {
        return Err(Status::invalid_argument("the body must be a JSON object"));
    }
    let mut out = pb::ExplainRouteResponse {
        model: r.model.clone(),
        ..Default::default()
    };
    let Some(model) = table.models.get(&r.model) else {
        out.error = format!("model '{}' does not exist or is disabled", r.model);
        return Ok(out);
    };
    out.strategy = model.strategy.as_str().to_string();
    out.r#type = model.model_type.unwrap_or_default().as_str().to_string();
    if let Some(why) = model.type_refusal(api) {
        // As the data plane answers it, before routing.
        out.error = why;
        return Ok(out);
    }
    let upstream = model
        .targets
        .first()
        .map_or(r.model.as_str(), |t| t.upstream_model.as_str());
    let facts = RequestFacts {
        headers: r
            .headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
        input_tokens: llmgw_core::tokens::estimate_input(upstream, &body),
        body,
        key: r.key,
        counted: std::cell::Cell::new(false),
    };
    out.estimated_input_tokens = facts.input_tokens;
    let plan = routing::plan(model, api, &facts, &FreshState);
    for d in &plan.decisions {
        let t = &model.targets[d.target];
        let (kept, order, reason) = match &d.verdict {
            Verdict::Kept { order, ejected } => (
                true,
                u32::try_from(*order).unwrap_or(u32::MAX),
                if *ejected {
                    "kept, moved back as an outlier".to_string()
                } else if *order == 0 {
                    format!("kept: tried first ({} strategy)", model.strategy)
                } else {
                    format!(
                        "kept: attempt order {} ({} strategy)",
                        order + 1,
                        model.strategy
                    )
                },
            ),
            Verdict::WrongProtocol(p) => (
                false,
                0,
                format!(
                    "dropped: provider speaks {p}, which has no {} API",
                    api.as_str()
                ),
            ),
            Verdict::RuleDidNotMatch => (false, 0, "dropped: its rule did not match".to_string()),
        };
        let reason = if kept
            && model.strategy == llmgw_core::Strategy::CostFirst
            && !routing::is_priced(t, llmgw_core::rules::Facts::now_ms(&facts))
        {
            format!("{reason}; no prices: tried after the priced targets")
        } else {
            reason
        };
        let reason = if kept && t.weight == 0 {
            format!("{reason}; drained (weight 0): only when the others of its priority fail")
        } else {
            reason
        };
        let cost_nanos = routing::estimated_cost(model, t, &facts);
        out.candidates.push(pb::RouteCandidate {
            provider: t.provider.name.clone(),
            upstream_model: t.upstream_model.clone(),
            priority: t.priority,
            weight: t.weight,
            kept,
            order,
            reason,
            serving: d.serving.to_string(),
            estimated_cost: cost_nanos as f64 / llmgw_core::price::NANOS_PER_USD as f64,
            estimated_cost_nanos: cost_nanos,
            proxy: t
                .provider
                .proxy
                .as_ref()
                .map(|p| p.shown())
                .unwrap_or_default(),
            default_params: t
                .defaults
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect(),
        });
    }
    if plan.order.is_empty() {
        out.error = plan.empty_reason(model);
    }
    Ok(out)
}
