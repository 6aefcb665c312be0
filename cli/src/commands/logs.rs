//! `llmgw logs`, `llmgw logs get ID` and `llmgw logs --follow`;
//! `llmgw logs replay ID` is in `replay.rs`, `llmgw logs export` in
//! `export.rs`.

use std::io::Write;

use anyhow::{anyhow, bail, Result};
use llmgw_proto::v1::{FollowLogsRequest, GetLogRequest, ListLogsRequest, LogFilter, RequestLog};
use tonic::Code;

use crate::args::{GlobalOpts, LogFilterArgs, LogsArgs, LogsCmd};
use crate::client::Client;
use crate::output::{yes_no, Out, Table};

/// Records per ListLogs call (the server's maximum).
const PAGE: u32 = 1000;

pub async fn run(a: LogsArgs, g: &GlobalOpts, out: &mut Out<'_>) -> Result<()> {
    match a.command {
        Some(LogsCmd::Get(id)) => get(&id.id, g, out).await,
        Some(LogsCmd::Replay(r)) => super::replay::run(r, g, out).await,
        Some(LogsCmd::Export(e)) => super::export::run(e, g).await,
        None if a.follow => follow(filter(&a.filter), g, out).await,
        None => list(&a, g, out).await,
    }
}

/// The request's filter from the command-line flags.
pub fn filter(f: &LogFilterArgs) -> LogFilter {
    let clean = |s: &Option<String>| s.as_deref().map(str::trim).unwrap_or("").to_string();
    LogFilter {
        since_ms: f.since.unwrap_or(0),
        until_ms: f.until.unwrap_or(0),
        model: clean(&f.model),
        provider: clean(&f.provider),
        key: clean(&f.key),
        protocol: clean(&f.protocol),
        upstream_protocol: clean(&f.upstream_protocol),
        stop_reason: clean(&f.stop_reason),
        user: clean(&f.user),
        trace_id: clean(&f.trace_id),
        replay_of: clean(&f.replay_of),
        status_min: f.status.map_or(0, |s| s.min),
        status_max: f.status.map_or(0, |s| s.max),
        min_latency_ms: f.min_latency_ms.unwrap_or(0),
        max_latency_ms: f.max_latency_ms.unwrap_or(0),
        min_tokens: f.min_tokens.unwrap_or(0),
        max_tokens: f.max_tokens.unwrap_or(0),
        stream: f.stream,
        errors_only: f.errors,
        outcome: f.outcome.map_or(0, |o| o as i32),
    }
}

async fn list(a: &LogsArgs, g: &GlobalOpts, out: &mut Out<'_>) -> Result<()> {
    let want = a.limit as usize;
    let c = Client::connect(g).await?;
    let mut records: Vec<RequestLog> = Vec::new();
    let mut page_token = String::new();
    loop {
        let limit = u32::try_from(want - records.len())
            .unwrap_or(PAGE)
            .min(PAGE);
        let r = c
            .api()
            .list_logs(ListLogsRequest {
                filter: Some(filter(&a.filter)),
                limit,
                order_by: a.order_by.as_str().to_string(),
                ascending: a.asc,
                page_token,
            })
            .await
            .map_err(|s| c.fail(s))?
            .into_inner();
        records.extend(r.records);
        if r.next_page_token.is_empty() || records.len() >= want {
            break;
        }
        page_token = r.next_page_token;
    }
    records.truncate(want);
    if out.is_json() {
        return out.json(&records);
    }
    if records.is_empty() {
        return out.line("no request logs match");
    }
    let mut t = Table::new(&HEADER);
    for r in &records {
        t.row(cells(r));
    }
    out.table(&t)
}

const HEADER: [&str; 14] = [
    "TIME", "ID", "KEY", "MODEL", "PROVIDER", "PROTOCOL", "STATUS", "OUTCOME", "LATENCY", "TTFB",
    "IN", "OUT", "COST", "ATTEMPTS",
];

/// Column widths for `--follow`, where rows are printed one at a time.
const FOLLOW_WIDTHS: [usize; 14] = [24, 36, 12, 20, 14, 22, 6, 19, 8, 7, 7, 7, 9, 8];

/// The client's protocol and the upstream's, `client→upstream`
/// (`anthropic→openai-chat`); the client's alone when no upstream
/// answered. The pair is shown whether or not the request was translated
/// (`openai-chat→openai` is a pass-through to an OpenAI provider).
pub fn protocols(r: &RequestLog) -> String {
    if r.upstream_protocol.is_empty() {
        r.protocol.clone()
    } else {
        format!("{}→{}", r.protocol, r.upstream_protocol)
    }
}

fn cells(r: &RequestLog) -> [String; 14] {
    let status = match (r.status, r.cancelled) {
        (0, true) => "cancelled".to_string(),
        (0, false) => String::new(),
        (s, true) => format!("{s} cancelled"),
        (s, false) => s.to_string(),
    };
    [
        r.time.clone(),
        r.id.clone(),
        r.key.clone(),
        r.model.clone(),
        r.provider.clone(),
        protocols(r),
        status,
        r.outcome().name().to_string(),
        format!("{}ms", r.latency_ms),
        format!("{}ms", r.ttfb_ms),
        r.input_tokens.to_string(),
        r.output_tokens.to_string(),
        cost(r.cost),
        r.attempts.len().to_string(),
    ]
}

/// Dollars with up to six decimals, trailing zeros dropped.
pub fn cost(c: f64) -> String {
    if c == 0.0 {
        return "0".to_string();
    }
    let s = format!("{c:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "0" {
        format!("{c:.2e}")
    } else {
        s.to_string()
    }
}

/// One line with fixed column widths (for rows printed as they come).
fn fixed_line(cells: &[String]) -> String {
    let mut line = String::new();
    for (i, c) in cells.iter().enumerate() {
        let c = if c.trim().is_empty() { "-" } else { c.as_str() };
        let c = c.replace(['\n', '\r', '\t'], " ");
        if i > 0 {
            line.push_str("  ");
        }
        line.push_str(&c);
        let width = FOLLOW_WIDTHS.get(i).copied().unwrap_or(0);
        if i + 1 < cells.len() {
            line.extend(std::iter::repeat_n(
                ' ',
                width.saturating_sub(c.chars().count()),
            ));
        }
    }
    line.trim_end().to_string()
}

async fn follow(f: LogFilter, g: &GlobalOpts, out: &mut Out<'_>) -> Result<()> {
    let c = Client::connect(g).await?;
    if !out.is_json() {
        let header: Vec<String> = HEADER.iter().map(|h| (*h).to_string()).collect();
        out.line(&fixed_line(&header))?;
        out.w.flush()?;
    }
    loop {
        let mut stream = c
            .api()
            .follow_logs(FollowLogsRequest {
                filter: Some(f.clone()),
            })
            .await
            .map_err(|s| c.fail(s))?
            .into_inner();
        loop {
            match stream.message().await {
                Ok(Some(r)) => {
                    if out.is_json() {
                        out.json_line(&r)?;
                    } else {
                        out.line(&fixed_line(&cells(&r)))?;
                    }
                    out.w.flush()?;
                }
                Ok(None) => bail!("the control plane ended the stream (is it shutting down?)"),
                // Fell behind: say so, and follow again.
                Err(s) if s.code() == Code::ResourceExhausted => {
                    let _ = writeln!(std::io::stderr().lock(), "warning: {}", s.message());
                    break;
                }
                Err(s) => return Err(c.fail(s)),
            }
        }
    }
}

async fn get(id: &str, g: &GlobalOpts, out: &mut Out<'_>) -> Result<()> {
    let id = id.trim();
    if id.is_empty() {
        return Err(anyhow!("give the request id"));
    }
    let c = Client::connect(g).await?;
    let r = c
        .api()
        .get_log(GetLogRequest { id: id.to_string() })
        .await
        .map_err(|s| c.fail(s))?
        .into_inner();
    if out.is_json() {
        return out.json(&r);
    }
    for line in details(&r) {
        out.line(&line)?;
    }
    Ok(())
}

/// `logs get` for people: the fields, the attempts, headers and bodies.
fn details(r: &RequestLog) -> Vec<String> {
    let mut t = Table::plain();
    let n = |v: u64| v.to_string();
    let mut rows: Vec<(&str, String)> = vec![
        ("id", r.id.clone()),
        ("time", r.time.clone()),
        ("node", r.node_id.clone()),
        ("key", r.key.clone()),
        ("user", r.user.clone()),
        ("client ip", r.client_ip.clone()),
        ("user agent", r.user_agent.clone()),
        ("protocol", r.protocol.clone()),
        ("upstream protocol", r.upstream_protocol.clone()),
        ("translated", yes_no(r.translated).to_string()),
        ("dropped fields", r.dropped_fields.join(", ")),
        ("path", r.path.clone()),
        ("model", r.model.clone()),
        ("provider", r.provider.clone()),
        ("upstream model", r.upstream_model.clone()),
        (
            "status",
            if r.status == 0 {
                String::new()
            } else {
                r.status.to_string()
            },
        ),
        ("stream", yes_no(r.stream).to_string()),
        ("outcome", r.outcome().name().to_string()),
        ("stop reason (upstream's)", r.stop_reason.clone()),
        ("cancelled", yes_no(r.cancelled).to_string()),
        ("error", r.error.clone()),
        ("latency", format!("{}ms", r.latency_ms)),
        ("ttfb", format!("{}ms", r.ttfb_ms)),
        ("retries", r.retries.to_string()),
        ("input tokens (uncached)", n(r.input_tokens)),
        ("cache read tokens", n(r.cache_read_tokens)),
        ("cache write tokens", n(r.cache_creation_tokens)),
        ("output tokens", n(r.output_tokens)),
        ("reasoning tokens (of output)", n(r.reasoning_tokens)),
        ("usage source", r.usage_source.clone()),
        ("count source", r.count_source.clone()),
        ("cost", cost(r.cost)),
        ("config version", n(r.snapshot_version)),
    ];
    // Only audio and image requests have them (#16): after the tokens.
    let media = [
        (
            "audio seconds",
            (r.audio_milliseconds > 0)
                .then(|| format!("{:.3}", r.audio_milliseconds as f64 / 1000.0)),
        ),
        (
            "audio seconds source",
            (!r.audio_source.is_empty()).then(|| r.audio_source.clone()),
        ),
        ("characters", (r.characters > 0).then(|| n(r.characters))),
        ("images", (r.images > 0).then(|| r.images.to_string())),
        (
            "image size",
            (!r.image_size.is_empty()).then(|| r.image_size.clone()),
        ),
        (
            "image quality",
            (!r.image_quality.is_empty()).then(|| r.image_quality.clone()),
        ),
    ];
    if let Some(at) = rows.iter().position(|(k, _)| *k == "usage source") {
        for (i, (k, v)) in media
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .enumerate()
        {
            rows.insert(at + i, (k, v));
        }
    }
    // Only traced requests have one: under the id, which it groups.
    if !r.trace_id.is_empty() {
        rows.insert(1, ("trace id", r.trace_id.clone()));
    }
    // Only replays and playground requests have them (#17).
    if !r.replay_of.is_empty() {
        rows.insert(1, ("replay of", r.replay_of.clone()));
    }
    if !r.origin.is_empty() {
        rows.insert(1, ("origin", r.origin.clone()));
    }
    for (k, v) in rows {
        t.row([k.to_string(), v]);
    }
    let mut lines: Vec<String> = t.render().lines().map(str::to_string).collect();

    lines.push(String::new());
    if r.attempts.is_empty() {
        lines.push("attempts: none".to_string());
    } else {
        let mut a = Table::new(&[
            "#",
            "PROVIDER",
            "UPSTREAM MODEL",
            "STATUS",
            "SENT AT",
            "LATENCY",
            "ERROR",
        ]);
        for (i, at) in r.attempts.iter().enumerate() {
            a.row([
                (i + 1).to_string(),
                at.provider.clone(),
                at.upstream_model.clone(),
                if at.status == 0 {
                    String::new()
                } else {
                    at.status.to_string()
                },
                // From the request's start (records stored before the field
                // have none).
                if at.start_offset_ms == 0 && i > 0 {
                    String::new()
                } else {
                    format!("+{}ms", at.start_offset_ms)
                },
                format!("{}ms", at.latency_ms),
                at.error.clone(),
            ]);
        }
        lines.push("attempts:".to_string());
        lines.extend(a.render().lines().map(|l| format!("  {l}")));
    }
    if r.bodies_expired {
        // Gone, not empty: kept for --body-retention-days, shorter than
        // the summary above.
        lines.push(String::new());
        lines.push(
            "headers and bodies: expired (removed by the control plane's \
             --body-retention-days; the summary above is kept longer)"
                .to_string(),
        );
        return lines;
    }
    for (title, h) in [
        ("request headers", &r.request_headers),
        ("response headers", &r.response_headers),
    ] {
        lines.push(String::new());
        if h.is_empty() {
            lines.push(format!("{title}: none"));
            continue;
        }
        lines.push(format!("{title}:"));
        let mut sorted: Vec<_> = h.iter().collect();
        sorted.sort();
        for (k, v) in sorted {
            lines.push(format!("  {k}: {v}"));
        }
    }
    for (title, body, truncated) in [
        ("request body", &r.request_body, r.request_body_truncated),
        (
            "upstream request body",
            &r.upstream_request_body,
            r.upstream_request_body_truncated,
        ),
        ("response body", &r.response_body, r.response_body_truncated),
    ] {
        lines.push(String::new());
        if body.is_empty() {
            // The body sent upstream is logged only where it differs.
            if title == "upstream request body" && !r.request_body.is_empty() {
                lines.push(format!("{title}: the request body, unchanged"));
            } else {
                lines.push(format!("{title}: none"));
            }
            continue;
        }
        lines.push(format!(
            "{title}{}:",
            if truncated { " (truncated)" } else { "" }
        ));
        // JSON bodies pretty-printed; anything else (SSE streams) as is.
        let shown = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| body.clone());
        lines.extend(shown.lines().map(|l| format!("  {l}")));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::StatusRange;
    use crate::output::normalize;
    use llmgw_proto::v1::Attempt;

    fn sample() -> RequestLog {
        RequestLog {
            id: "0190a2b4-0000-7000-8000-000000000001".into(),
            time_ms: 1_714_564_800_123,
            time: "2024-05-01T12:00:00.123Z".into(),
            key: "team".into(),
            model: "gpt".into(),
            provider: "openai".into(),
            upstream_model: "gpt-4o".into(),
            protocol: "openai-chat".into(),
            upstream_protocol: "openai".into(),
            status: 200,
            outcome: llmgw_proto::v1::Outcome::Ok as i32,
            stream: true,
            latency_ms: 1234,
            ttfb_ms: 56,
            input_tokens: 10,
            output_tokens: 20,
            cost: 0.00123,
            attempts: vec![
                Attempt {
                    provider: "a".into(),
                    upstream_model: "x".into(),
                    status: 502,
                    error: "bad gateway".into(),
                    latency_ms: 10,
                    start_offset_ms: 1,
                },
                Attempt {
                    provider: "openai".into(),
                    upstream_model: "gpt-4o".into(),
                    status: 200,
                    error: String::new(),
                    latency_ms: 1200,
                    start_offset_ms: 1011,
                },
            ],
            request_headers: [
                ("b".to_string(), "2".to_string()),
                ("a".to_string(), "1".to_string()),
            ]
            .into_iter()
            .collect(),
            request_body: r#"{"model":"gpt"}"#.into(),
            stop_reason: "pause_turn".into(),
            user: "alice".into(),
            ..Default::default()
        }
    }

    #[test]
    fn json_shape() {
        let v = serde_json::to_value(normalize(&vec![sample()]).unwrap()).unwrap();
        let arr = v.as_array().unwrap();
        let o = arr[0].as_object().unwrap();
        for k in [
            "id",
            "time",
            "model",
            "provider",
            "upstream_model",
            "status",
            "latency_ms",
            "ttfb_ms",
            "input_tokens",
            "output_tokens",
            "cost",
            "stream",
            "attempts",
            "key",
            "protocol",
            "upstream_protocol",
            "translated",
            "upstream_request_body",
            "upstream_request_body_truncated",
            "dropped_fields",
            "cache_read_tokens",
            "cache_creation_tokens",
            "reasoning_tokens",
            "usage_source",
            "count_source",
            "outcome",
            "stop_reason",
            "user",
            "trace_id",
        ] {
            assert!(o.contains_key(k), "missing {k}");
        }
        assert_eq!(o["stop_reason"], "pause_turn");
        assert_eq!(o["user"], "alice");
        assert_eq!(o["trace_id"], "");
        assert_eq!(o["outcome"], "ok");
        assert_eq!(o["upstream_protocol"], "openai");
        assert_eq!(o["dropped_fields"], serde_json::json!([]));
        assert_eq!(o["latency_ms"], 1234);
        assert_eq!(o["stream"], true);
        assert_eq!(o["key"], "team");
        let a = o["attempts"].as_array().unwrap();
        assert_eq!(a.len(), 2);
        for k in [
            "provider",
            "upstream_model",
            "status",
            "error",
            "latency_ms",
            "start_offset_ms",
        ] {
            assert!(a[0].as_object().unwrap().contains_key(k), "attempt {k}");
        }
        // Header maps come out sorted.
        let text = serde_json::to_string(&o["request_headers"]).unwrap();
        assert_eq!(text, r#"{"a":"1","b":"2"}"#);
    }

    #[test]
    fn table_cells_and_details() {
        let c = cells(&sample());
        assert_eq!(c[5], "openai-chat→openai");
        assert_eq!(c[6], "200");
        assert_eq!(c[7], "ok");
        assert_eq!(c[8], "1234ms");
        assert_eq!(c[12], "0.00123");
        assert_eq!(c[13], "2");
        let mut r = sample();
        r.cancelled = true;
        assert_eq!(cells(&r)[6], "200 cancelled");
        let line = fixed_line(&c);
        assert!(
            line.starts_with("2024-05-01T12:00:00.123Z  0190a2b4"),
            "{line}"
        );
        let mut expired = sample();
        expired.bodies_expired = true;
        let text = details(&expired).join("\n");
        assert!(text.contains("headers and bodies: expired"), "{text}");
        assert!(!text.contains("request body"), "{text}");
        let text = details(&sample()).join("\n");
        assert!(!text.contains("expired"), "{text}");
        assert!(text.contains("bad gateway"), "{text}");
        // Each attempt says when it was sent.
        assert!(text.contains("+1ms") && text.contains("+1011ms"), "{text}");
        assert!(text.contains("  a: 1\n  b: 2"), "{text}");
        assert!(text.contains("\"model\": \"gpt\""), "{text}");
        assert!(text.contains("response body: none"), "{text}");
        assert!(
            text.contains("upstream request body: the request body, unchanged"),
            "{text}"
        );
        assert!(text.contains("translated  "), "{text}");
        assert!(text.contains("\noutcome  "), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("stop reason (upstream's)") && l.ends_with(" pause_turn")),
            "{text}"
        );
        let mut r = sample();
        r.set_outcome(llmgw_proto::v1::Outcome::Interrupted);
        assert_eq!(cells(&r)[7], "interrupted");
    }

    #[test]
    fn details_show_the_trace_id_when_there_is_one() {
        let text = details(&sample()).join("\n");
        assert!(!text.contains("trace id"), "{text}");
        let mut r = sample();
        r.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736".into();
        let lines = details(&r);
        assert!(lines[0].starts_with("id "), "{lines:?}");
        assert!(
            lines[1].starts_with("trace id ")
                && lines[1].ends_with(" 4bf92f3577b34da6a3ce929d0e0e4736"),
            "{lines:?}"
        );
    }

    #[test]
    fn the_trace_id_flag_filters() {
        let f = filter(&LogFilterArgs {
            trace_id: Some(" 4bf92f3577b34da6a3ce929d0e0e4736 ".into()),
            ..Default::default()
        });
        assert_eq!(f.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(filter(&LogFilterArgs::default()).trace_id, "");
    }

    #[test]
    fn translated_requests() {
        let mut r = sample();
        r.protocol = "anthropic".into();
        r.upstream_protocol = "openai-chat".into();
        r.translated = true;
        r.dropped_fields = vec!["top_k".into(), "metadata.user_id".into()];
        r.upstream_request_body = r#"{"model":"gpt-4o","messages":[]}"#.into();
        r.upstream_request_body_truncated = true;
        r.input_tokens = 100;
        r.cache_read_tokens = 2000;
        r.cache_creation_tokens = 300;
        r.output_tokens = 40;
        r.reasoning_tokens = 25;
        r.usage_source = "reported".into();
        assert_eq!(cells(&r)[5], "anthropic→openai-chat");
        let text = details(&r).join("\n");
        let field = |name: &str| -> String {
            text.lines()
                .find(|l| l.starts_with(&format!("{name}  ")))
                .map(|l| l[name.len()..].trim().to_string())
                .unwrap_or_else(|| panic!("no {name} line in\n{text}"))
        };
        assert_eq!(field("protocol"), "anthropic");
        assert_eq!(field("upstream protocol"), "openai-chat");
        assert_eq!(field("translated"), "yes");
        assert_eq!(field("dropped fields"), "top_k, metadata.user_id");
        assert_eq!(field("input tokens (uncached)"), "100");
        assert_eq!(field("cache read tokens"), "2000");
        assert_eq!(field("cache write tokens"), "300");
        assert_eq!(field("output tokens"), "40");
        assert_eq!(field("reasoning tokens (of output)"), "25");
        assert_eq!(field("count source"), "-");
        let upstream = text
            .split("upstream request body (truncated):\n")
            .nth(1)
            .unwrap_or_else(|| panic!("no upstream body in\n{text}"));
        assert!(
            upstream
                .split("\n\n")
                .next()
                .is_some_and(|b| b.contains("  \"model\": \"gpt-4o\"")),
            "{text}"
        );
        // A request that reached no upstream shows its own protocol only.
        r.upstream_protocol.clear();
        assert_eq!(cells(&r)[5], "anthropic");
    }

    #[test]
    fn costs() {
        assert_eq!(cost(0.0), "0");
        assert_eq!(cost(1.5), "1.5");
        assert_eq!(cost(0.000001), "0.000001");
        assert_eq!(cost(0.0000001), "1.00e-7");
    }

    #[test]
    fn filters() {
        let f = filter(&LogFilterArgs {
            model: Some(" m ".into()),
            status: Some(StatusRange { min: 400, max: 499 }),
            errors: true,
            stream: Some(true),
            ..Default::default()
        });
        assert_eq!(f.model, "m");
        assert_eq!((f.status_min, f.status_max), (400, 499));
        assert!(f.errors_only);
        assert_eq!(f.stream, Some(true));
        assert_eq!(f.since_ms, 0);
        assert_eq!(
            (f.protocol.as_str(), f.upstream_protocol.as_str()),
            ("", "")
        );

        let f = filter(&LogFilterArgs {
            protocol: Some(" anthropic ".into()),
            upstream_protocol: Some("openai-chat".into()),
            ..Default::default()
        });
        assert_eq!(f.protocol, "anthropic");
        assert_eq!(f.upstream_protocol, "openai-chat");
    }

    #[test]
    fn outcome_filter() {
        use llmgw_proto::v1::Outcome;
        assert_eq!(filter(&LogFilterArgs::default()).outcome, 0);
        let f = filter(&LogFilterArgs {
            outcome: Some(crate::args::parse_outcome("interrupted").unwrap()),
            ..Default::default()
        });
        assert_eq!(f.outcome(), Outcome::Interrupted);
        assert_eq!(
            crate::args::parse_outcome(" Cancelled-By-Client "),
            Ok(Outcome::CancelledByClient)
        );
        let e = crate::args::parse_outcome("bad").unwrap_err();
        assert!(e.contains("ok, upstream_error, interrupted"), "{e}");
        assert!(crate::args::parse_outcome("").is_err());
    }
}
