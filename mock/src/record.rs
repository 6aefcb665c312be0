//! What the mock remembers: every LLM request as received (unless recording
//! is off) and counters of requests, cancelled requests and requests in
//! flight. A `RequestGuard` lives in each request's handler (and then in
//! its streamed body); dropped before `RequestGuard::complete`, it counts
//! the request as cancelled — the client went away while the response was
//! pending or streaming.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::{HeaderMap, Method, Uri, Version};
use hyper::body::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::behavior::lock;

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Arrival order, from 0; also in the reply ids (`chatcmpl-mock{seq}`).
    pub seq: u64,
    pub method: Method,
    /// The request URI, except that a `key` query parameter's value reads
    /// `REDACTED`.
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    /// The body, byte for byte.
    pub body: Bytes,
    /// The model of a Gemini path (`models/{model}:...`), else the body's
    /// `model`, if it parsed and had one.
    pub model: Option<String>,
    /// Whether the body asked for a stream (for Gemini: the path is
    /// `streamGenerateContent`).
    pub stream: bool,
    pub received_at: SystemTime,
}

impl RecordedRequest {
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }

    /// The value of header `name` (lossy UTF-8), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// The body as text (lossy UTF-8).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn body_json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The shape served by `GET /_mock/requests`: `headers` maps each
    /// (lower-case) name to its value, several values joined with ", ";
    /// `header_list` keeps every `[name, value]` pair.
    pub fn to_json(&self) -> Value {
        let mut headers = Map::new();
        let mut header_list = Vec::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            header_list.push(json!([name.as_str(), value]));
            match headers.get_mut(name.as_str()) {
                Some(Value::String(prev)) => {
                    prev.push_str(", ");
                    prev.push_str(&value);
                }
                _ => {
                    headers.insert(name.as_str().to_owned(), Value::String(value));
                }
            }
        }
        let received_at_ms = self
            .received_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        json!({
            "seq": self.seq,
            "method": self.method.as_str(),
            "path": self.path(),
            "query": self.query(),
            "http_version": format!("{:?}", self.version),
            "headers": headers,
            "header_list": header_list,
            "body": self.body_text(),
            "body_base64": base64::engine::general_purpose::STANDARD.encode(&self.body),
            "body_json": self.body_json(),
            "model": self.model,
            "stream": self.stream,
            "received_at_ms": received_at_ms,
        })
    }
}

/// Counters served by `GET /_mock/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// LLM requests received (recorded or not).
    pub requests: u64,
    /// Requests whose client went away before the response was complete.
    pub cancelled: u64,
    /// Requests whose response is still pending or streaming.
    pub active: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    seq: AtomicU64,
    requests: AtomicU64,
    cancelled: AtomicU64,
    active: AtomicU64,
}

/// Requests and counters.
#[derive(Debug)]
pub(crate) struct Recorder {
    enabled: bool,
    list: Mutex<Vec<RecordedRequest>>,
    counters: Arc<Counters>,
}

impl Recorder {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            list: Mutex::new(Vec::new()),
            counters: Arc::new(Counters::default()),
        }
    }

    /// Counts a new request; returns its sequence number and its guard.
    pub fn begin(&self) -> (u64, RequestGuard) {
        let c = &self.counters;
        let seq = c.seq.fetch_add(1, Ordering::Relaxed);
        c.requests.fetch_add(1, Ordering::Relaxed);
        c.active.fetch_add(1, Ordering::Relaxed);
        (
            seq,
            RequestGuard {
                counters: Arc::clone(c),
                done: false,
            },
        )
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn push(&self, req: RecordedRequest) {
        if self.enabled {
            lock(&self.list).push(req);
        }
    }

    /// Recorded requests, oldest first, optionally only those for `model`.
    pub fn list(&self, model: Option<&str>) -> Vec<RecordedRequest> {
        let list = lock(&self.list);
        match model {
            None => list.clone(),
            Some(m) => list
                .iter()
                .filter(|r| r.model.as_deref() == Some(m))
                .cloned()
                .collect(),
        }
    }

    /// Forgets the recorded requests and zeroes `requests` and `cancelled`
    /// (`active` keeps counting what is in flight). Returns how many
    /// requests were forgotten.
    pub fn clear(&self) -> usize {
        let n = {
            let mut list = lock(&self.list);
            let n = list.len();
            list.clear();
            n
        };
        self.counters.requests.store(0, Ordering::Relaxed);
        self.counters.cancelled.store(0, Ordering::Relaxed);
        n
    }

    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            requests: c.requests.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            active: c.active.load(Ordering::Relaxed),
        }
    }
}

/// Marks one request in flight; see the module docs.
#[derive(Debug)]
pub(crate) struct RequestGuard {
    counters: Arc<Counters>,
    done: bool,
}

impl RequestGuard {
    /// The response is complete (or was cut on purpose): not a cancellation.
    pub fn complete(mut self) {
        self.done = true;
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.counters.active.fetch_sub(1, Ordering::Relaxed);
        if !self.done {
            self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}
