//! `llmgw logs replay ID [--model M] [--key NAME]` (#17): the control
//! plane sends the logged request again through a data plane; this prints
//! the answer's status, the new request's id and the data plane, streams
//! the body to stdout as it arrives, then TTFB and latency and how to open
//! the new log. With `-o json`, one object once the answer has ended. The
//! command fails (after printing) when the answer is an error status or
//! broke off.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use llmgw_proto::v1::{run_chunk::Part, ReplayLogRequest, RunEnd, RunHead};
use serde::Serialize;

use crate::args::{GlobalOpts, ReplayArgs};
use crate::client::Client;
use crate::output::Out;

/// The `-o json` answer.
#[derive(Debug, Default, Serialize)]
struct Replayed {
    replay_of: String,
    status: u32,
    request_id: String,
    node_id: String,
    key: String,
    path: String,
    headers: BTreeMap<String, String>,
    /// The answer's body as text (lossy UTF-8).
    body: String,
    ttfb_ms: i64,
    latency_ms: i64,
    /// Set when the answer broke off before its end.
    error: String,
}

pub async fn run(a: ReplayArgs, g: &GlobalOpts, out: &mut Out<'_>) -> Result<()> {
    let id = a.id.trim().to_string();
    if id.is_empty() {
        bail!("give the request id");
    }
    let clean = |s: Option<String>| s.map(|s| s.trim().to_string()).unwrap_or_default();
    let c = Client::connect(g).await?;
    let mut stream = c
        .api()
        .replay_log(ReplayLogRequest {
            id: id.clone(),
            model: clean(a.model),
            key: clean(a.key),
        })
        .await
        .map_err(|s| c.fail(s))?
        .into_inner();
    let json = out.is_json();
    let mut got = Replayed {
        replay_of: id,
        ..Default::default()
    };
    let mut body = Vec::new();
    let mut ended = false;
    while let Some(chunk) = stream.message().await.map_err(|s| c.fail(s))? {
        match chunk.part {
            Some(Part::Head(h)) => {
                if !json {
                    out.line(&head_line(&h))?;
                    out.w.flush()?;
                }
                got.status = h.status;
                got.request_id = h.request_id;
                got.node_id = h.node_id;
                got.key = h.key;
                got.path = h.path;
                got.headers = h.headers.into_iter().collect();
            }
            Some(Part::Data(d)) => {
                if json {
                    body.extend_from_slice(&d);
                } else {
                    out.w.write_all(&d)?;
                    out.w.flush()?;
                }
            }
            Some(Part::End(e)) => {
                ended = true;
                if !json {
                    out.line("")?;
                    for l in end_lines(&e, &got.request_id) {
                        out.line(&l)?;
                    }
                }
                got.ttfb_ms = e.ttfb_ms;
                got.latency_ms = e.latency_ms;
                got.error = e.error;
            }
            None => {}
        }
    }
    if !ended && got.error.is_empty() {
        got.error = "the control plane ended the answer before its end".to_string();
    }
    if json {
        got.body = String::from_utf8_lossy(&body).into_owned();
        out.json(&got)?;
    }
    if !got.error.is_empty() {
        bail!("the replay's answer broke off: {}", got.error);
    }
    if !(200..300).contains(&got.status) {
        bail!(
            "the replay was answered with HTTP {} (request {})",
            got.status,
            got.request_id
        );
    }
    Ok(())
}

fn head_line(h: &RunHead) -> String {
    format!(
        "HTTP {} · request {} · data plane {} · key {} · POST {}",
        h.status, h.request_id, h.node_id, h.key, h.path
    )
}

fn end_lines(e: &RunEnd, request_id: &str) -> Vec<String> {
    let mut lines = vec![format!("ttfb {}ms · latency {}ms", e.ttfb_ms, e.latency_ms)];
    if !e.error.is_empty() {
        lines.push(format!("error: {}", e.error));
    }
    if !request_id.is_empty() {
        lines.push(format!(
            "see the new request's log: llmgw logs show {request_id}"
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_and_end_read_at_a_glance() {
        let h = RunHead {
            status: 200,
            request_id: "0190-new".into(),
            node_id: "dp-1".into(),
            key: "k".into(),
            path: "/v1/chat/completions".into(),
            ..Default::default()
        };
        assert_eq!(
            head_line(&h),
            "HTTP 200 · request 0190-new · data plane dp-1 · key k · POST /v1/chat/completions"
        );
        let e = RunEnd {
            ttfb_ms: 12,
            latency_ms: 40,
            error: String::new(),
        };
        assert_eq!(
            end_lines(&e, "0190-new"),
            vec![
                "ttfb 12ms · latency 40ms".to_string(),
                "see the new request's log: llmgw logs show 0190-new".to_string()
            ]
        );
    }
}
