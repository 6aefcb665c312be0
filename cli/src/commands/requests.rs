//! `llmgw requests` (the requests in flight), `llmgw requests --follow`
//! and `llmgw requests cancel ID`.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{bail, Result};
use llmgw_proto::v1::{
    CancelRequestRequest, InFlightEvent, InFlightRequest, ListInFlightRequest, WatchInFlightRequest,
};

use crate::args::{GlobalOpts, RequestsArgs, RequestsCmd};
use crate::client::Client;
use crate::output::{yes_no, Out, Table};

pub async fn run(a: RequestsArgs, g: &GlobalOpts, out: &mut Out<'_>) -> Result<()> {
    let node = a.node.as_deref().map(str::trim).unwrap_or("").to_string();
    match a.command {
        Some(RequestsCmd::Cancel(id)) => cancel(&id.id, g, out).await,
        None if a.follow => follow(node, g, out).await,
        None => list(node, g, out).await,
    }
}

async fn list(node_id: String, g: &GlobalOpts, out: &mut Out<'_>) -> Result<()> {
    let c = Client::connect(g).await?;
    let r = c
        .api()
        .list_in_flight(ListInFlightRequest { node_id })
        .await
        .map_err(|s| c.fail(s))?
        .into_inner();
    if out.is_json() {
        return out.json(&r.requests);
    }
    if r.requests.is_empty() {
        return out.line("no requests in flight");
    }
    out.table(&table(&r.requests, now_ms()))
}

const HEADER: [&str; 10] = [
    "ID",
    "DATA PLANE",
    "KEY",
    "MODEL",
    "TARGET",
    "PROTOCOLS",
    "STREAM",
    "AGE",
    "ATTEMPT",
    "TOKENS",
];

fn table(requests: &[InFlightRequest], now: i64) -> Table {
    let mut t = Table::new(&HEADER);
    for r in requests {
        t.row(cells(r, now));
    }
    t
}

fn cells(r: &InFlightRequest, now: i64) -> [String; 10] {
    let target = if r.provider.is_empty() {
        String::new()
    } else {
        format!("{}:{}", r.provider, r.upstream_model)
    };
    let protocols = if r.upstream_protocol.is_empty() {
        r.client_protocol.clone()
    } else {
        format!("{}→{}", r.client_protocol, r.upstream_protocol)
    };
    [
        r.id.clone(),
        r.node_id.clone(),
        r.key.clone(),
        r.model.clone(),
        target,
        protocols,
        yes_no(r.stream).to_string(),
        age(now - r.started_ms),
        r.attempt.to_string(),
        r.tokens.to_string(),
    ]
}

/// `850ms`, `12.3s`, `4m05s`, `2h03m`.
pub fn age(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The list, then one line per change: `+` started, `~` moved on (another
/// attempt, more tokens), `-` ended.
async fn follow(node_id: String, g: &GlobalOpts, out: &mut Out<'_>) -> Result<()> {
    let c = Client::connect(g).await?;
    let mut stream = c
        .api()
        .watch_in_flight(WatchInFlightRequest { node_id })
        .await
        .map_err(|s| c.fail(s))?
        .into_inner();
    let mut known: HashMap<String, InFlightRequest> = HashMap::new();
    loop {
        let event = match stream.message().await {
            Ok(Some(e)) => e,
            Ok(None) => bail!("the control plane ended the stream (is it shutting down?)"),
            Err(s) => return Err(c.fail(s)),
        };
        if out.is_json() {
            out.json_line(&event)?;
        } else {
            print_event(out, &mut known, &event)?;
        }
        out.w.flush()?;
    }
}

fn print_event(
    out: &mut Out<'_>,
    known: &mut HashMap<String, InFlightRequest>,
    e: &InFlightEvent,
) -> Result<()> {
    let now = now_ms();
    if e.full {
        known.clear();
        if e.upserts.is_empty() {
            out.line("no requests in flight")?;
        } else {
            out.table(&table(&e.upserts, now))?;
        }
        for r in &e.upserts {
            known.insert(r.id.clone(), r.clone());
        }
        return Ok(());
    }
    for r in &e.upserts {
        let mark = if known.contains_key(&r.id) { "~" } else { "+" };
        out.line(&format!("{mark} {}", cells(r, now).join("  ")))?;
        known.insert(r.id.clone(), r.clone());
    }
    for id in &e.ended {
        let was = known.remove(id);
        let what = was.map_or(String::new(), |r| {
            format!(
                "  {}  {}  after {}, {} tokens",
                r.node_id,
                r.model,
                age(now - r.started_ms),
                r.tokens
            )
        });
        out.line(&format!("- {id}{what}"))?;
    }
    if !e.upserts.is_empty() || !e.ended.is_empty() {
        let _ = writeln!(std::io::stderr().lock(), "  ({} in flight)", e.count);
    }
    Ok(())
}

async fn cancel(id: &str, g: &GlobalOpts, out: &mut Out<'_>) -> Result<()> {
    let id = id.trim();
    if id.is_empty() {
        bail!("a request id is required");
    }
    let c = Client::connect(g).await?;
    let r = c
        .api()
        .cancel_request(CancelRequestRequest { id: id.to_string() })
        .await
        .map_err(|s| c.fail(s))?
        .into_inner();
    if out.is_json() {
        return out.json(&r);
    }
    if r.confirmed {
        out.line(&format!(
            "cancelled request {} on data plane {}",
            r.id, r.node_id
        ))
    } else {
        out.line(&format!(
            "cancel of request {} sent to data plane {} (not yet confirmed)",
            r.id, r.node_id
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(age(-5), "0ms");
        assert_eq!(age(850), "850ms");
        assert_eq!(age(12_345), "12.3s");
        assert_eq!(age(245_000), "4m05s");
        assert_eq!(age(7_380_000), "2h03m");
    }

    #[test]
    fn a_row_shows_target_and_protocols() {
        let r = InFlightRequest {
            id: "r1".into(),
            node_id: "dp-1".into(),
            provider: "p".into(),
            upstream_model: "m-up".into(),
            client_protocol: "anthropic".into(),
            upstream_protocol: "openai".into(),
            started_ms: 1_000,
            attempt: 2,
            tokens: 40,
            ..Default::default()
        };
        let c = cells(&r, 3_500);
        assert_eq!(c[4], "p:m-up");
        assert_eq!(c[5], "anthropic→openai");
        assert_eq!(c[7], "2.5s");
        assert_eq!(c[8], "2");
        assert_eq!(c[9], "40");
    }
}
