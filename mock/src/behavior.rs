//! What one request should do. A [`Step`] is a set of optional knobs; the
//! knobs of a request come, field by field, from its `x-mock-*` headers,
//! else from the next step of its model's script, else from the instance
//! [`Defaults`]. `Behavior` is the resolved result.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::config::Defaults;

/// Optional behaviour knobs: one script step, or what a request's headers
/// say. An empty step (`{}`) is a normal success.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Reply this HTTP status; 400 and above get an error body in the
    /// endpoint's protocol shape. Header `x-mock-status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Add `retry-after: N` (seconds). Header `x-mock-retry-after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// Delay before the response head. Header `x-mock-latency-ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Number of reply chunks. Header `x-mock-chunks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<u32>,
    /// Delay before each streamed content chunk. Header `x-mock-chunk-delay-ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_delay_ms: Option<u64>,
    /// Close the connection without any response. Header
    /// `x-mock-reset-before-first-byte`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_before_first_byte: Option<bool>,
    /// Stream this many content chunks, then abort the response mid-body.
    /// Header `x-mock-reset-after-chunks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_after_chunks: Option<u32>,
    /// Never respond, until the client goes away. Header `x-mock-hang`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hang: Option<bool>,
    /// Send a whole (non-streamed) reply's head at once and its body this
    /// long after. Header `x-mock-body-delay-ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_delay_ms: Option<u64>,
    /// Leave usage out of the reply. Header `x-mock-no-usage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_usage: Option<bool>,
    /// Pad non-streaming reply text to about this many bytes. Header
    /// `x-mock-reply-bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_bytes: Option<usize>,
    /// Reply with this many parallel tool calls. Header `x-mock-tool-calls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<u32>,
    /// Interleave the streamed argument fragments of parallel tool calls.
    /// Header `x-mock-interleave`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interleave: Option<bool>,
    /// Stream each call's arguments in one piece, at the end. Header
    /// `x-mock-args-final-only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_final_only: Option<bool>,
    /// Start the reply with thinking / reasoning. Header `x-mock-thinking`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<bool>,
    /// `[read, write]` cache tokens in the usage. Header `x-mock-cache: R,W`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<[u64; 2]>,
    /// How the reply ends. Header `x-mock-finish`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish: Option<Finish>,
    /// Cut the reply at max tokens halfway through the last tool call's
    /// arguments. Header `x-mock-max-tokens-in-args`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens_in_args: Option<bool>,
    /// Chat streams: the last delta carries the finish reason. Header
    /// `x-mock-content-and-finish`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_and_finish: Option<bool>,
    /// Chat streams with `include_usage`: usage rides in the finish chunk
    /// instead of a chunk of its own. Header `x-mock-usage-in-finish`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_in_finish: Option<bool>,
    /// Streams: after this many content events, an in-stream error event
    /// ends the stream. Header `x-mock-error-after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_after: Option<u32>,
    /// The reply's stop reason word, sent as it is in the protocol's own
    /// field whatever it is (`pause_turn`, `MALFORMED_FUNCTION_CALL`, ...;
    /// Responses: the `incomplete_details.reason` of an incomplete reply,
    /// or `completed`). The content is that of a normal end. Header
    /// `x-mock-stop-reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
}

/// How a reply ends, in protocol-neutral terms (see the crate docs for
/// each protocol's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// A natural end.
    Stop,
    /// Max output tokens reached.
    Length,
    /// A stop sequence of the request matched.
    StopSequence,
    /// Cut by the content filter / a refusal.
    ContentFilter,
}

impl Finish {
    fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "stop" => Some(Self::Stop),
            "length" | "max_tokens" => Some(Self::Length),
            "stop_sequence" => Some(Self::StopSequence),
            "content_filter" | "refusal" | "safety" => Some(Self::ContentFilter),
            _ => None,
        }
    }
}

/// `R,W` (or `R`) as `[R, W]`.
fn parse_cache(value: &str) -> Option<[u64; 2]> {
    let mut it = value.split(',').map(str::trim);
    let read = it.next()?.parse().ok()?;
    let write = match it.next() {
        Some(w) => w.parse().ok()?,
        None => 0,
    };
    if it.next().is_some() {
        return None;
    }
    Some([read, write])
}

impl Step {
    /// A normal success.
    pub fn ok() -> Self {
        Self::default()
    }

    /// Reply `status` with an error body.
    pub fn status(status: u16) -> Self {
        Self {
            status: Some(status),
            ..Self::default()
        }
    }

    /// Close the connection without a response.
    pub fn reset_before_first_byte() -> Self {
        Self {
            reset_before_first_byte: Some(true),
            ..Self::default()
        }
    }

    /// Stream `n` chunks, then abort.
    pub fn reset_after_chunks(n: u32) -> Self {
        Self {
            reset_after_chunks: Some(n),
            ..Self::default()
        }
    }

    /// Never respond.
    pub fn hang() -> Self {
        Self {
            hang: Some(true),
            ..Self::default()
        }
    }

    /// The same step with a `retry-after` header.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Knobs from `x-mock-*` headers; values that do not parse are ignored.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        let mut step = Self::default();
        for (name, value) in headers {
            let Some(knob) = name.as_str().strip_prefix("x-mock-") else {
                continue;
            };
            let Ok(value) = value.to_str() else {
                continue;
            };
            let value = value.trim();
            match knob {
                "status" => step.status = value.parse().ok(),
                "retry-after" => step.retry_after = value.parse().ok(),
                "latency-ms" => step.latency_ms = value.parse().ok(),
                "chunks" => step.chunks = value.parse().ok(),
                "chunk-delay-ms" => step.chunk_delay_ms = value.parse().ok(),
                "reset-before-first-byte" => step.reset_before_first_byte = parse_flag(value),
                "reset-after-chunks" => step.reset_after_chunks = value.parse().ok(),
                "hang" => step.hang = parse_flag(value),
                "body-delay-ms" => step.body_delay_ms = value.parse().ok(),
                "no-usage" => step.no_usage = parse_flag(value),
                "reply-bytes" => step.reply_bytes = value.parse().ok(),
                "tool-calls" => step.tool_calls = value.parse().ok(),
                "interleave" => step.interleave = parse_flag(value),
                "args-final-only" => step.args_final_only = parse_flag(value),
                "thinking" => step.thinking = parse_flag(value),
                "cache" => step.cache = parse_cache(value),
                "finish" => step.finish = Finish::parse(value),
                "max-tokens-in-args" => step.max_tokens_in_args = parse_flag(value),
                "content-and-finish" => step.content_and_finish = parse_flag(value),
                "usage-in-finish" => step.usage_in_finish = parse_flag(value),
                "error-after" => step.error_after = value.parse().ok(),
                "stop-reason" if !value.is_empty() => step.stop_reason = Some(value.to_owned()),
                _ => {}
            }
        }
        step
    }

    /// Field by field: `self`'s knob where set, else `other`'s.
    pub(crate) fn or(self, other: Step) -> Step {
        Step {
            status: self.status.or(other.status),
            retry_after: self.retry_after.or(other.retry_after),
            latency_ms: self.latency_ms.or(other.latency_ms),
            chunks: self.chunks.or(other.chunks),
            chunk_delay_ms: self.chunk_delay_ms.or(other.chunk_delay_ms),
            reset_before_first_byte: self
                .reset_before_first_byte
                .or(other.reset_before_first_byte),
            reset_after_chunks: self.reset_after_chunks.or(other.reset_after_chunks),
            hang: self.hang.or(other.hang),
            body_delay_ms: self.body_delay_ms.or(other.body_delay_ms),
            no_usage: self.no_usage.or(other.no_usage),
            reply_bytes: self.reply_bytes.or(other.reply_bytes),
            tool_calls: self.tool_calls.or(other.tool_calls),
            interleave: self.interleave.or(other.interleave),
            args_final_only: self.args_final_only.or(other.args_final_only),
            thinking: self.thinking.or(other.thinking),
            cache: self.cache.or(other.cache),
            finish: self.finish.or(other.finish),
            max_tokens_in_args: self.max_tokens_in_args.or(other.max_tokens_in_args),
            content_and_finish: self.content_and_finish.or(other.content_and_finish),
            usage_in_finish: self.usage_in_finish.or(other.usage_in_finish),
            error_after: self.error_after.or(other.error_after),
            stop_reason: self.stop_reason.or(other.stop_reason),
        }
    }
}

fn parse_flag(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// The resolved behaviour of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Behavior {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub latency: Duration,
    pub chunks: u32,
    pub chunk_delay: Duration,
    pub reset_before_first_byte: bool,
    pub reset_after_chunks: Option<u32>,
    pub hang: bool,
    /// Delay between a whole reply's head and its body.
    pub body_delay: Duration,
    pub no_usage: bool,
    pub reply_bytes: usize,
    /// Whether a header or step set `chunks` (with tool calls, text is
    /// only sent when it did).
    pub chunks_explicit: bool,
    pub tool_calls: u32,
    pub interleave: bool,
    pub args_final_only: bool,
    pub thinking: bool,
    pub cache_read: u64,
    pub cache_write: u64,
    pub finish: Option<Finish>,
    pub max_tokens_in_args: bool,
    pub content_and_finish: bool,
    pub usage_in_finish: bool,
    pub error_after: Option<u32>,
    pub stop_reason: Option<String>,
}

impl Behavior {
    pub fn resolve(step: Step, defaults: &Defaults) -> Self {
        Self {
            status: step.status.unwrap_or(200),
            retry_after: step.retry_after,
            latency: step
                .latency_ms
                .map_or(defaults.latency, Duration::from_millis),
            chunks: step.chunks.unwrap_or(defaults.chunks),
            chunk_delay: step
                .chunk_delay_ms
                .map_or(defaults.chunk_delay, Duration::from_millis),
            reset_before_first_byte: step.reset_before_first_byte.unwrap_or(false),
            reset_after_chunks: step.reset_after_chunks,
            hang: step.hang.unwrap_or(false),
            body_delay: step
                .body_delay_ms
                .map_or(Duration::ZERO, Duration::from_millis),
            no_usage: step.no_usage.unwrap_or(false),
            reply_bytes: step.reply_bytes.unwrap_or(defaults.reply_bytes),
            chunks_explicit: step.chunks.is_some(),
            tool_calls: step.tool_calls.unwrap_or(0),
            interleave: step.interleave.unwrap_or(false),
            args_final_only: step.args_final_only.unwrap_or(false),
            thinking: step.thinking.unwrap_or(false),
            cache_read: step.cache.map_or(0, |c| c[0]),
            cache_write: step.cache.map_or(0, |c| c[1]),
            finish: step.finish,
            max_tokens_in_args: step.max_tokens_in_args.unwrap_or(false),
            content_and_finish: step.content_and_finish.unwrap_or(false),
            usage_in_finish: step.usage_in_finish.unwrap_or(false),
            error_after: step.error_after,
            stop_reason: step.stop_reason,
        }
    }
}

/// Scripts by upstream model name: each request for a model takes the next
/// step; an exhausted script means normal success.
#[derive(Debug, Default)]
pub(crate) struct Scripts {
    by_model: Mutex<HashMap<String, VecDeque<Step>>>,
}

impl Scripts {
    /// Replaces the script of `model`.
    pub fn set(&self, model: String, steps: Vec<Step>) {
        let mut map = lock(&self.by_model);
        if steps.is_empty() {
            map.remove(&model);
        } else {
            map.insert(model, steps.into());
        }
    }

    /// Removes every script, or only `model`'s.
    pub fn clear(&self, model: Option<&str>) {
        let mut map = lock(&self.by_model);
        match model {
            Some(m) => {
                map.remove(m);
            }
            None => map.clear(),
        }
    }

    /// Takes the next step of `model`'s script, if any is left.
    pub fn next(&self, model: &str) -> Option<Step> {
        let mut map = lock(&self.by_model);
        if map.is_empty() {
            return None;
        }
        let steps = map.get_mut(model)?;
        let step = steps.pop_front();
        if steps.is_empty() {
            map.remove(model);
        }
        step
    }

    /// The steps still to be taken, by model.
    pub fn remaining(&self) -> HashMap<String, Vec<Step>> {
        lock(&self.by_model)
            .iter()
            .map(|(m, s)| (m.clone(), s.iter().cloned().collect()))
            .collect()
    }
}

/// Locks `m`, going on with the data if a panicking holder poisoned it: the
/// mock's data stays consistent between statements.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_and_take_precedence() {
        let mut h = HeaderMap::new();
        h.insert("x-mock-status", "503".parse().unwrap());
        h.insert("x-mock-hang", "1".parse().unwrap());
        h.insert("x-mock-chunks", "nope".parse().unwrap());
        h.insert("x-other", "7".parse().unwrap());
        let from_headers = Step::from_headers(&h);
        assert_eq!(from_headers.status, Some(503));
        assert_eq!(from_headers.hang, Some(true));
        assert_eq!(from_headers.chunks, None);

        let script = Step {
            status: Some(429),
            chunks: Some(9),
            ..Step::default()
        };
        let merged = from_headers.or(script);
        let b = Behavior::resolve(merged, &Defaults::default());
        assert_eq!(b.status, 503);
        assert_eq!(b.chunks, 9);
        assert!(b.hang);
        assert_eq!(b.chunk_delay, Duration::ZERO);
    }

    #[test]
    fn scripts_are_consumed_in_order_per_model() {
        let s = Scripts::default();
        s.set(
            "a".into(),
            vec![Step::status(503), Step::ok(), Step::hang()],
        );
        assert_eq!(s.next("b"), None);
        assert_eq!(s.next("a"), Some(Step::status(503)));
        assert_eq!(s.next("a"), Some(Step::ok()));
        assert_eq!(s.next("a"), Some(Step::hang()));
        assert_eq!(s.next("a"), None);
        assert!(s.remaining().is_empty());
    }

    #[test]
    fn steps_reject_unknown_fields() {
        assert!(serde_json::from_str::<Step>(r#"{"statuss": 503}"#).is_err());
        let s: Step = serde_json::from_str(r#"{"status": 429, "retry_after": 1}"#).unwrap();
        assert_eq!(s, Step::status(429).with_retry_after(1));
        let s: Step = serde_json::from_str(
            r#"{"tool_calls": 2, "cache": [5, 7], "finish": "stop_sequence", "thinking": true}"#,
        )
        .unwrap();
        assert_eq!(s.tool_calls, Some(2));
        assert_eq!(s.cache, Some([5, 7]));
        assert_eq!(s.finish, Some(Finish::StopSequence));
        assert!(serde_json::from_str::<Step>(r#"{"finish": "nope"}"#).is_err());
    }

    #[test]
    fn content_knob_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-mock-tool-calls", "3"),
            ("x-mock-interleave", "true"),
            ("x-mock-args-final-only", "yes"),
            ("x-mock-thinking", "1"),
            ("x-mock-cache", "10, 4"),
            ("x-mock-finish", "content_filter"),
            ("x-mock-max-tokens-in-args", "true"),
            ("x-mock-content-and-finish", "true"),
            ("x-mock-usage-in-finish", "true"),
            ("x-mock-error-after", "2"),
            ("x-mock-stop-reason", "pause_turn"),
        ] {
            h.insert(k, v.parse().unwrap());
        }
        let b = Behavior::resolve(Step::from_headers(&h), &Defaults::default());
        assert_eq!(b.tool_calls, 3);
        assert!(b.interleave && b.args_final_only && b.thinking);
        assert_eq!((b.cache_read, b.cache_write), (10, 4));
        assert_eq!(b.finish, Some(Finish::ContentFilter));
        assert!(b.max_tokens_in_args && b.content_and_finish && b.usage_in_finish);
        assert_eq!(b.error_after, Some(2));
        assert_eq!(b.stop_reason.as_deref(), Some("pause_turn"));
        assert!(!b.chunks_explicit);
        assert_eq!(parse_cache("3"), Some([3, 0]));
        assert_eq!(parse_cache("3,x"), None);
    }
}
