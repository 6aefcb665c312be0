//! `llmgw route explain MODEL`

use std::io::Read;

use anyhow::{Context, Result};
use llmgw_proto::v1::{ExplainRouteRequest, ExplainRouteResponse};

use crate::args::{GlobalOpts, RouteCmd, RouteExplainArgs};
use crate::client::Client;
use crate::output::{yes_no, Out, Table};

pub async fn run(cmd: RouteCmd, g: &GlobalOpts, out: &mut Out<'_>) -> Result<()> {
    match cmd {
        RouteCmd::Explain(a) => explain(a, g, out).await,
    }
}

fn read_body(file: &str) -> Result<String> {
    if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the body from standard input")?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read --body file {file}"))
    }
}

fn request(a: RouteExplainArgs) -> Result<ExplainRouteRequest> {
    let body = match &a.body {
        Some(f) => {
            let text = read_body(f)?;
            // Checked here so a typo is reported before any network traffic.
            serde_json::from_str::<serde_json::Value>(&text)
                .with_context(|| format!("the body in {f} is not valid JSON"))?;
            text
        }
        None => String::new(),
    };
    Ok(ExplainRouteRequest {
        model: a.model.trim().to_string(),
        headers: a.headers.into_iter().map(|h| (h.name, h.value)).collect(),
        key: a.key.unwrap_or_default().trim().to_string(),
        body,
        // The field keeps its old name; it carries the client API.
        protocol: a.api.as_str().to_string(),
    })
}

async fn explain(a: RouteExplainArgs, g: &GlobalOpts, out: &mut Out<'_>) -> Result<()> {
    let req = request(a)?;
    let c = Client::connect(g).await?;
    let r = c
        .api()
        .explain_route(req)
        .await
        .map_err(|s| c.fail(s))?
        .into_inner();
    if out.is_json() {
        return out.json(&r);
    }
    for line in lines(&r) {
        out.line(&line)?;
    }
    Ok(())
}

/// A summary line, the candidates in attempt order (kept first, then the
/// dropped ones in the model's order), and the error if any.
fn lines(r: &ExplainRouteResponse) -> Vec<String> {
    let mut lines = Vec::new();
    if !r.strategy.is_empty() {
        lines.push(format!(
            "model {}  type {}  strategy {}  estimated input tokens {}",
            r.model,
            if r.r#type.is_empty() {
                "chat"
            } else {
                &r.r#type
            },
            r.strategy,
            r.estimated_input_tokens
        ));
    }
    if !r.candidates.is_empty() {
        let mut order: Vec<_> = r.candidates.iter().collect();
        // Stable: dropped ones keep the model's order.
        order.sort_by_key(|c| if c.kept { (0, c.order) } else { (1, 0) });
        let mut t = Table::new(&[
            "ORDER",
            "PROVIDER",
            "UPSTREAM MODEL",
            "PRIORITY",
            "WEIGHT",
            "EST. COST",
            "KEPT",
            "SERVING",
            "REASON",
        ]);
        for c in order {
            t.row([
                if c.kept {
                    (c.order + 1).to_string()
                } else {
                    String::new()
                },
                c.provider.clone(),
                c.upstream_model.clone(),
                c.priority.to_string(),
                c.weight.to_string(),
                super::logs::cost(c.estimated_cost),
                yes_no(c.kept).to_string(),
                c.serving.clone(),
                c.reason.clone(),
            ]);
        }
        lines.extend(t.render().lines().map(str::to_string));
        for c in &r.candidates {
            if !c.proxy.is_empty() {
                lines.push(format!(
                    "{}:{} connects through proxy {}",
                    c.provider, c.upstream_model, c.proxy
                ));
            }
            if !c.default_params.is_empty() {
                lines.push(format!(
                    "{}:{} fills in when absent: {}",
                    c.provider,
                    c.upstream_model,
                    super::default_params::text(&c.default_params)
                ));
            }
        }
    }
    if !r.error.is_empty() {
        lines.push(format!("the request would fail: {}", r.error));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{ClientApi, Header};
    use llmgw_proto::v1::RouteCandidate;

    #[test]
    fn order_and_text() {
        let cand = |p: &str, kept: bool, order: u32| RouteCandidate {
            provider: p.into(),
            upstream_model: format!("{p}-model"),
            priority: 0,
            weight: 1,
            kept,
            order,
            reason: if kept {
                "kept".into()
            } else {
                "dropped: rule".into()
            },
            serving: if p == "a" {
                "translated from openai-chat to anthropic".into()
            } else {
                "passes through".into()
            },
            estimated_cost: if p == "c" { 0.0125 } else { 0.0 },
            estimated_cost_nanos: if p == "c" { 12_500_000 } else { 0 },
            proxy: if p == "c" {
                "socks5://****@127.0.0.1:1080".into()
            } else {
                String::new()
            },
            default_params: if p == "a" {
                [("temperature".to_string(), "0.2".to_string())].into()
            } else {
                Default::default()
            },
        };
        let r = ExplainRouteResponse {
            model: "m".into(),
            strategy: "priority".into(),
            estimated_input_tokens: 12,
            candidates: vec![cand("a", true, 1), cand("b", false, 0), cand("c", true, 0)],
            error: String::new(),
            r#type: "embedding".into(),
        };
        let l = lines(&r);
        assert_eq!(
            l[0],
            "model m  type embedding  strategy priority  estimated input tokens 12"
        );
        assert!(l[1].starts_with("ORDER  PROVIDER"), "{l:?}");
        assert!(l[2].starts_with("1      c"), "{l:?}");
        assert!(l[3].starts_with("2      a"), "{l:?}");
        assert!(l[4].starts_with("-      b"), "{l:?}");
        assert!(l[4].ends_with("dropped: rule"), "{l:?}");
        let words: Vec<&str> = l[4].split_whitespace().collect();
        assert_eq!(
            words[words.len() - 5..],
            ["no", "passes", "through", "dropped:", "rule"],
            "{l:?}"
        );
        assert!(
            l[2].contains("passes through") && l[3].contains("from openai-chat to anthropic"),
            "{l:?}"
        );
        assert!(l[1].contains("KEPT  SERVING"), "{l:?}");
        assert!(l[1].contains("WEIGHT  EST. COST"), "{l:?}");
        let words: Vec<&str> = l[2].split_whitespace().collect();
        assert_eq!(words[5], "0.0125", "{l:?}");
        assert_eq!(l[5], "a:a-model fills in when absent: temperature=0.2");
        assert_eq!(
            l[6],
            "c:c-model connects through proxy socks5://****@127.0.0.1:1080"
        );
        let r = ExplainRouteResponse {
            model: "m".into(),
            error: "model 'm' does not exist or is disabled".into(),
            ..Default::default()
        };
        assert_eq!(
            lines(&r),
            ["the request would fail: model 'm' does not exist or is disabled"]
        );
    }

    #[test]
    fn request_from_args() {
        let dir = std::env::temp_dir().join(format!("llmgw-route-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let body = dir.join("body.json");
        std::fs::write(&body, r#"{"model":"m","messages":[]}"#).unwrap();
        let args = |body: Option<String>| RouteExplainArgs {
            model: " m ".into(),
            headers: vec![Header {
                name: "x-tier".into(),
                value: "gold".into(),
            }],
            key: Some("team".into()),
            body,
            api: ClientApi::GeminiCountTokens,
        };
        let r = request(args(Some(body.display().to_string()))).unwrap();
        assert_eq!(r.model, "m");
        assert_eq!(r.headers["x-tier"], "gold");
        assert_eq!(r.key, "team");
        assert_eq!(r.protocol, "gemini-count-tokens");
        assert!(r.body.contains("messages"));
        std::fs::write(&body, "not json").unwrap();
        assert!(request(args(Some(body.display().to_string()))).is_err());
        assert!(request(args(Some(dir.join("missing").display().to_string()))).is_err());
        assert!(request(args(None)).unwrap().body.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
