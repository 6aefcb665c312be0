//! Building a request's log record: redacted headers, capped bodies, usage
//! (reported, or estimated with tiktoken) and cost. A record is finished
//! after the response is done; one that needs a tiktoken estimate is
//! finished on a blocking thread, so counting never delays a client.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::HeaderMap;
use llmgw_core::table::Prices;
use llmgw_proto::v1 as pb;

use super::dialect::Usage;
use crate::config::RequestLogMode;
use crate::logs::LogSink;
use crate::metrics::Metrics;

/// Where finished records go: metrics first, then the log pipeline (unless
/// request logging is off).
#[derive(Debug)]
pub struct Emitter {
    pub logs: Arc<LogSink>,
    pub metrics: Arc<Metrics>,
    pub mode: RequestLogMode,
    /// Records being finished on blocking threads.
    pub in_flight: std::sync::atomic::AtomicUsize,
    pub settled: tokio::sync::Notify,
}

impl Emitter {
    pub fn new(logs: Arc<LogSink>, metrics: Arc<Metrics>, mode: RequestLogMode) -> Self {
        Emitter {
            logs,
            metrics,
            mode,
            in_flight: Default::default(),
            settled: tokio::sync::Notify::new(),
        }
    }

    /// Waits until no record is being finished, up to `limit`.
    pub async fn settled(&self, limit: std::time::Duration) {
        use std::sync::atomic::Ordering;
        let wait = async {
            loop {
                let notified = self.settled.notified();
                if self.in_flight.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }

    pub fn emit(&self, record: pb::RequestLog) {
        self.metrics.observe(&record);
        if self.mode.records() {
            self.logs.send(record);
        }
    }
}

/// Headers whose values are credentials; they are masked in logs.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
    "api-key",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

pub fn redact_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    // A name's values come one after another; they are joined into one
    // entry, each masked on its own, and each name is hashed only once.
    let mut current: Option<(&str, String)> = None;
    for (name, value) in headers {
        let n = name.as_str();
        // Header values are nearly always visible ASCII, which `to_str`
        // checks far faster than a lossy UTF-8 conversion.
        let text = match value.to_str() {
            Ok(t) => std::borrow::Cow::Borrowed(t),
            Err(_) => String::from_utf8_lossy(value.as_bytes()),
        };
        let shown = if SECRET_HEADERS.contains(&n) {
            llmgw_core::keys::mask(&text)
        } else {
            text.into_owned()
        };
        match &mut current {
            Some((prev, joined)) if *prev == n => {
                joined.push_str(", ");
                joined.push_str(&shown);
            }
            _ => {
                if let Some((prev, joined)) = current.replace((n, shown)) {
                    out.insert(prev.to_string(), joined);
                }
            }
        }
    }
    if let Some((prev, joined)) = current {
        out.insert(prev.to_string(), joined);
    }
    out
}

/// A body for the log, cut at `cap` bytes; returns (text, truncated).
pub fn capped_body(body: &[u8], cap: usize) -> (String, bool) {
    if body.len() <= cap {
        (String::from_utf8_lossy(body).into_owned(), false)
    } else {
        // Cut on a character boundary of the lossy text.
        let mut text = String::from_utf8_lossy(&body[..cap]).into_owned();
        while text.len() > cap {
            text.pop();
        }
        (text, true)
    }
}

/// Cost in US dollars. OpenAI's input count includes cached tokens;
/// Anthropic's does not, and its cache writes are charged at the input price.
pub fn cost(usage: &Usage, prices: &Prices, anthropic: bool) -> f64 {
    let per = 1_000_000.0;
    let (uncached, cached) = if anthropic {
        (usage.input + usage.cache_creation, usage.cache_read)
    } else {
        (
            usage.input.saturating_sub(usage.cache_read),
            usage.cache_read,
        )
    };
    (uncached as f64 * prices.input_per_mtok
        + cached as f64 * prices.cached_input_per_mtok
        + usage.output as f64 * prices.output_per_mtok)
        / per
}

/// What is needed to finish a record once the response is over.
pub struct Finish {
    pub record: pb::RequestLog,
    pub usage: Option<Usage>,
    /// Request body, for an input estimate when no usage was reported
    /// (parsed only then, on the blocking thread that counts).
    pub request: Option<bytes::Bytes>,
    pub completion_text: String,
    pub prices: Prices,
    pub anthropic: bool,
    /// The model name tiktoken picks an encoding by.
    pub tokenizer_model: String,
    /// Whether there was an upstream response to count at all.
    pub counted: bool,
}

impl Finish {
    /// Whether finishing needs tiktoken: no usage was reported for a
    /// response that has to be counted.
    fn needs_estimate(&self) -> bool {
        self.usage.is_none() && self.counted
    }

    /// Completes usage and cost and hands the record to the log sink. Only
    /// a record that needs a token estimate goes to a blocking thread, so
    /// counting never delays a client; the common case (usage reported by
    /// the upstream, or nothing to count) is a few field copies and is done
    /// right here, which spares every request a thread hand-off.
    pub fn submit(self, sink: Arc<Emitter>) {
        use std::sync::atomic::Ordering;
        if !self.needs_estimate() {
            sink.emit(self.complete());
            return;
        }
        sink.in_flight.fetch_add(1, Ordering::AcqRel);
        let run = move || {
            sink.emit(self.complete());
            if sink.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
                sink.settled.notify_waiters();
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn_blocking(run);
            }
            Err(_) => run(),
        }
    }

    /// The finished record: usage (reported, else estimated) and cost.
    fn complete(self) -> pb::RequestLog {
        let mut f = self;
        let mut r = std::mem::take(&mut f.record);
        let usage = match f.usage {
            Some(u) => {
                r.usage_source = "reported".into();
                Some(u)
            }
            None if f.counted => {
                r.usage_source = "estimated".into();
                let input = f.request.as_deref().map_or(0, |raw| {
                    let tree = super::head::tree(raw);
                    llmgw_core::tokens::estimate_input(&f.tokenizer_model, &tree)
                });
                let output = llmgw_core::tokens::count_text(&f.tokenizer_model, &f.completion_text);
                Some(Usage {
                    input,
                    output,
                    ..Default::default()
                })
            }
            None => {
                r.usage_source = "none".into();
                None
            }
        };
        if let Some(u) = usage {
            r.input_tokens = u.input;
            r.output_tokens = u.output;
            r.cache_read_tokens = u.cache_read;
            r.cache_creation_tokens = u.cache_creation;
            r.cost = cost(&u, &f.prices, f.anthropic);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn secrets_are_masked() {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer sk-llmgw-abcdefghijklmnop"),
        );
        h.insert("x-api-key", HeaderValue::from_static("short"));
        h.insert("user-agent", HeaderValue::from_static("ua"));
        h.append("accept", HeaderValue::from_static("a/b"));
        h.append("accept", HeaderValue::from_static("c/d"));
        h.append("cookie", HeaderValue::from_static("session=abcdefgh"));
        h.append("cookie", HeaderValue::from_static("x=1234567890ab"));
        h.insert("x-latin", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        h.insert(
            "x-utf8",
            HeaderValue::from_bytes("caf\u{e9}".as_bytes()).unwrap(),
        );
        let r = redact_headers(&h);
        assert_eq!(r.len(), 7);
        assert_eq!(r["x-latin"], "caf\u{fffd}");
        assert_eq!(r["x-utf8"], "caf\u{e9}");
        assert_eq!(r["accept"], "a/b, c/d");
        assert_eq!(r["cookie"], "****efgh, ****90ab");
        assert_eq!(r["authorization"], "****mnop");
        assert_eq!(r["x-api-key"], "****");
        assert_eq!(r["user-agent"], "ua");
    }

    #[test]
    fn bodies_are_capped() {
        assert_eq!(capped_body(b"abc", 5), ("abc".into(), false));
        assert_eq!(capped_body(b"abcdef", 3), ("abc".into(), true));
    }

    #[test]
    fn costs() {
        let p = Prices {
            input_per_mtok: 2.0,
            output_per_mtok: 10.0,
            cached_input_per_mtok: 1.0,
        };
        let u = Usage {
            input: 1_000_000,
            output: 100_000,
            cache_read: 500_000,
            cache_creation: 0,
        };
        assert!((cost(&u, &p, false) - (1.0 + 0.5 + 1.0)).abs() < 1e-9);
        assert!((cost(&u, &p, true) - (2.0 + 0.5 + 1.0)).abs() < 1e-9);
    }
}
