//! The harness the mock's integration tests share: a mock on port 0, an
//! HTTP client, POST helpers and an SSE parser.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use llmgw_mock::{start, Config, MockServer};
use serde_json::Value;

pub async fn mock() -> MockServer {
    start(Config::default()).await.unwrap()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// POST to `{url}{path}` (`url` without `/v1`: `path` names it).
pub async fn post(
    m: &MockServer,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client().post(format!("{}{path}", m.url())).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// A 200 JSON answer.
pub async fn post_json(
    m: &MockServer,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Value {
    let resp = post(m, path, body, headers).await;
    assert_eq!(resp.status(), 200, "{path}");
    assert_eq!(resp.headers()["content-type"], "application/json", "{path}");
    resp.json().await.unwrap()
}

/// One server-sent event: its name, its data as JSON (`Null` when it is
/// not JSON, like `[DONE]`) and as it came.
#[derive(Debug)]
pub struct Event {
    pub name: Option<String>,
    pub data: Value,
    pub raw: String,
}

impl Event {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.raw).unwrap()
    }
}

pub fn parse_sse(body: &str) -> Vec<Event> {
    assert!(
        body.ends_with("\n\n"),
        "stream does not end an event: {body:?}"
    );
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let mut name = None;
            let mut raw = String::new();
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    raw = d.to_owned();
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            let data = serde_json::from_str(&raw).unwrap_or(Value::Null);
            Event { name, data, raw }
        })
        .collect()
}

/// The events of a 200 `text/event-stream` answer.
pub async fn stream_events(resp: reqwest::Response) -> Vec<Event> {
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    parse_sse(&resp.text().await.unwrap())
}

/// POST and read the answer's events.
pub async fn stream(
    m: &MockServer,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Vec<Event> {
    stream_events(post(m, path, body, headers).await).await
}
