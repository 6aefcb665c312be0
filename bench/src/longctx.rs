//! Long-context request bodies (scenario S8): a deterministic generator of
//! realistic OpenAI chat request bodies of an exact size, and a closed-loop
//! load generator that keeps N of them in flight.
//!
//! A body is what a coding agent resends on every turn: a system prompt, a
//! dozen tool definitions with JSON schemas, and many turns of user text,
//! assistant text with tool calls (their arguments a JSON string, so full
//! of escaped quotes) and tool results (source files and command output:
//! line breaks, tabs, quotes, backslashes, some non-ASCII text), then the
//! last user message, padded with words so that the whole body is exactly
//! the size asked for. The member order is the OpenAI SDK's: `messages`
//! first, `model` after it.
//!
//! `llmgw-bench body --bytes N` prints one; `llmgw-bench bodies` sends them.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A small deterministic generator (xorshift64*): the same body every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

const WORDS: &[&str] = &[
    "the",
    "function",
    "returns",
    "a",
    "value",
    "when",
    "request",
    "is",
    "handled",
    "by",
    "proxy",
    "we",
    "should",
    "check",
    "that",
    "body",
    "of",
    "each",
    "message",
    "in",
    "stream",
    "and",
    "then",
    "write",
    "test",
    "for",
    "error",
    "case",
    "where",
    "upstream",
    "fails",
    "before",
    "first",
    "byte",
    "arrives",
    "so",
    "retry",
    "budget",
    "must",
    "not",
    "grow",
    "past",
    "its",
    "limit",
    "please",
    "refactor",
    "this",
    "module",
    "into",
    "smaller",
    "pieces",
    "with",
    "clear",
    "names",
    "keep",
    "public",
    "API",
    "stable",
    "add",
    "documentation",
    "comments",
    "explain",
    "why",
    "configuration",
    "snapshot",
    "version",
    "router",
    "target",
    "weight",
    "latency",
    "timeout",
    "connection",
    "pool",
    "buffer",
    "allocation",
    "parser",
    "token",
    "usage",
    "record",
    "spool",
    "also",
    "make",
    "sure",
    "old",
    "behaviour",
    "still",
    "works",
    "after",
    "change",
    "run",
    "all",
    "tests",
    "again",
    "look",
    "at",
    "failing",
    "one",
    "now",
    "fix",
    "it",
    "properly",
    "thanks",
];

/// Text with a sprinkling of what JSON escapes or UTF-8 must check.
const SPICE: &[&str] = &[
    "\"quoted\"",
    "C:\\path\\to\\file",
    "naïve",
    "café",
    "—",
    "日本語のテキスト",
    "🙂",
    "tab\there",
    "a/b",
    "100%",
    "<tag>",
    "`code`",
];

const FILES: &[&str] = &[
    "src/main.rs",
    "src/proxy/mod.rs",
    "src/proxy/body.rs",
    "src/logs/spool.rs",
    "tests/e2e.rs",
    "README.md",
    "Cargo.toml",
    "docs/architecture.md",
];

const CODE: &[&str] = &[
    "fn handle(req: Request<Body>) -> Result<Response<Body>, Error> {\n    let body = req.into_body();\n    if body.is_empty() {\n        return Err(Error::new(\"empty body\"));\n    }\n    Ok(Response::new(body))\n}\n",
    "    for (i, item) in items.iter().enumerate() {\n        if item.name == \"model\" {\n\t\tout.push_str(&format!(\"{}: {}\\n\", i, item.value));\n        }\n    }\n",
    "def parse(path):\n    with open(path, encoding=\"utf-8\") as f:\n        for line in f:\n            if line.startswith('#'):\n                continue\n            yield line.rstrip('\\n').split('\\t')\n",
    "#[test]\nfn splices_the_model() {\n    let body = br#\"{\"model\":\"a\",\"messages\":[]}\"#;\n    assert_eq!(replace(body, \"b\"), br#\"{\"model\":\"b\",\"messages\":[]}\"#);\n}\n",
    "$ cargo test -p llmgw-dataplane\n   Compiling llmgw-dataplane v0.1.0\n    Finished test [unoptimized + debuginfo] target(s) in 41.2s\n     Running unittests src/lib.rs\ntest proxy::body::tests::only_the_model_value_changes ... ok\ntest result: ok. 412 passed; 0 failed\n",
    "error[E0502]: cannot borrow `self.buf` as mutable because it is also borrowed as immutable\n  --> src/proxy/body.rs:88:9\n   |\n88 |         self.buf.extend_from_slice(rest);\n   |         ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ mutable borrow occurs here\n",
];

/// A parameter of a tool: name, JSON type, description.
type Param = (&'static str, &'static str, &'static str);

/// Tool definitions: name, description, parameters (the first required).
const TOOLS: &[(&str, &str, &[Param])] = &[
    (
        "read_file",
        "Read a file of the workspace and return its contents with line numbers.",
        &[
            (
                "path",
                "string",
                "Path of the file, relative to the workspace root.",
            ),
            ("offset", "integer", "First line to return (1-based)."),
            ("limit", "integer", "Most lines to return."),
        ],
    ),
    (
        "write_file",
        "Create or overwrite a file with the given contents.",
        &[
            (
                "path",
                "string",
                "Path of the file, relative to the workspace root.",
            ),
            ("contents", "string", "The whole new contents of the file."),
        ],
    ),
    (
        "edit_file",
        "Replace one exact occurrence of a string in a file.",
        &[
            ("path", "string", "Path of the file."),
            (
                "old_string",
                "string",
                "The text to replace; it must occur exactly once.",
            ),
            ("new_string", "string", "The text to put in its place."),
        ],
    ),
    (
        "run_command",
        "Run a shell command in the workspace and return its output and exit status.",
        &[
            ("command", "string", "The command line, run with bash -c."),
            (
                "timeout_ms",
                "integer",
                "Kill the command after this many milliseconds.",
            ),
        ],
    ),
    (
        "search",
        "Search the workspace for a regular expression and return matching lines.",
        &[
            ("pattern", "string", "A regular expression (Rust syntax)."),
            ("glob", "string", "Only files matching this glob."),
            ("case_insensitive", "boolean", "Ignore case."),
        ],
    ),
    (
        "list_dir",
        "List the entries of a directory.",
        &[
            ("path", "string", "Path of the directory."),
            ("recursive", "boolean", "List subdirectories too."),
        ],
    ),
    (
        "web_fetch",
        "Fetch a URL and return its text.",
        &[
            ("url", "string", "An http or https URL."),
            ("max_bytes", "integer", "Cut the text at this many bytes."),
        ],
    ),
    (
        "todo_write",
        "Replace the task list shown to the user.",
        &[("items", "array", "The tasks, in order.")],
    ),
    (
        "git_diff",
        "Show the working tree's changes against HEAD.",
        &[
            ("paths", "array", "Only these paths."),
            ("staged", "boolean", "Show the staged changes instead."),
        ],
    ),
    (
        "ask_user",
        "Ask the user a question and wait for the answer.",
        &[("question", "string", "The question.")],
    ),
    (
        "spawn_agent",
        "Start a helper agent on a sub-task and return its report.",
        &[
            ("brief", "string", "What the helper must do."),
            ("files", "array", "Files it may change."),
        ],
    ),
    (
        "finish",
        "Report the work as done, with a summary.",
        &[("summary", "string", "What was done and what was left.")],
    ),
];

/// Words (and now and then something to escape) until `s` has grown by
/// about `bytes`.
fn prose(rng: &mut Rng, s: &mut String, bytes: usize) {
    let end = s.len() + bytes;
    let mut sentence = 0;
    while s.len() < end {
        if rng.below(23) == 0 {
            s.push_str(rng.pick(SPICE));
        } else {
            s.push_str(rng.pick(WORDS));
        }
        sentence += 1;
        if sentence > 6 && rng.below(9) == 0 {
            s.push_str(if rng.below(7) == 0 { ".\n\n" } else { ". " });
            sentence = 0;
        } else {
            s.push(' ');
        }
    }
}

/// A tool's result: a source file or command output, numbered lines.
fn tool_output(rng: &mut Rng, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 256);
    let mut line = 1;
    while s.len() < bytes {
        for l in rng.pick(CODE).lines() {
            let _ = writeln!(s, "{line:>5}\t{l}");
            line += 1;
        }
        if rng.below(4) == 0 {
            s.push_str("// ");
            prose(rng, &mut s, 60);
            s.push('\n');
        }
    }
    s
}

fn json_str(s: &str) -> String {
    // A `str` always serializes.
    serde_json::to_string(s).unwrap_or_default()
}

fn tools_json() -> String {
    let tools: Vec<serde_json::Value> = TOOLS
        .iter()
        .map(|(name, description, params)| {
            let mut properties = serde_json::Map::new();
            for (p, ty, d) in *params {
                let mut prop = serde_json::json!({"type": ty, "description": d});
                if *ty == "array" {
                    prop["items"] = serde_json::json!({"type": "string"});
                }
                properties.insert((*p).to_string(), prop);
            }
            serde_json::json!({
                "type": "function",
                "function": {
                    "name": name,
                    "description": description,
                    "parameters": {
                        "type": "object",
                        "properties": properties,
                        "required": [params[0].0],
                        "additionalProperties": false,
                    },
                },
            })
        })
        .collect();
    serde_json::Value::Array(tools).to_string()
}

/// The system prompt: about 6 KiB of instructions.
fn system_prompt(rng: &mut Rng) -> String {
    let mut s = String::from(
        "You are a coding agent working in a Rust repository. Follow these rules:\n\n",
    );
    for i in 1..=24 {
        let _ = write!(s, "{i}. ");
        prose(rng, &mut s, 220);
        s.push('\n');
    }
    s
}

/// One exchange: the user's request, the assistant's answer with a tool
/// call, and the tool's result.
fn turn(rng: &mut Rng, n: usize, out: &mut String) {
    let mut user = String::new();
    let len = 150 + rng.below(1200);
    prose(rng, &mut user, len);
    let mut said = String::new();
    let len = 80 + rng.below(400);
    prose(rng, &mut said, len);
    let tool = TOOLS[rng.below(TOOLS.len())].0;
    let file = rng.pick(FILES);
    let args =
        serde_json::json!({"path": file, "offset": 1 + rng.below(400), "limit": 200}).to_string();
    let len = 800 + rng.below(7000);
    let result = tool_output(rng, len);
    let _ = write!(
        out,
        r#"{{"role":"user","content":{}}},{{"role":"assistant","content":{},"tool_calls":[{{"id":"call_{n:06}","type":"function","function":{{"name":"{tool}","arguments":{}}}}}]}},{{"role":"tool","tool_call_id":"call_{n:06}","content":{}}},"#,
        json_str(&user),
        json_str(&said),
        json_str(&args),
        json_str(&result),
    );
}

/// A chat request body of exactly `size` bytes (or the smallest body the
/// generator makes, about 8 KiB, when `size` is below that), the same
/// bytes for the same arguments.
pub fn body(size: usize, stream: bool, model: &str) -> Vec<u8> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut head = String::with_capacity(size + 1024);
    head.push_str(r#"{"messages":[{"role":"system","content":"#);
    head.push_str(&json_str(&system_prompt(&mut rng)));
    head.push_str("},");
    let tail = format!(
        r#"],"model":{},"stream":{stream},"max_tokens":4096,"temperature":0.2,"tools":{},"user":"bench-agent"}}"#,
        json_str(model),
        tools_json(),
    );
    let last_open = r#"{"role":"user","content":""#;
    let last_close = "\"}";
    let fixed = last_open.len() + last_close.len() + tail.len();
    let mut n = 0;
    let mut next = String::new();
    loop {
        next.clear();
        turn(&mut rng, n, &mut next);
        // Room for at least 1 KiB of the last message.
        if head.len() + next.len() + fixed + 1024 > size {
            break;
        }
        head.push_str(&next);
        n += 1;
    }
    // The last user message: plain words (nothing to escape), padded to
    // the exact size.
    let room = size.saturating_sub(head.len() + fixed);
    let mut last = String::with_capacity(room + 16);
    last.push_str("Now continue with the task: ");
    while last.len() + 12 < room {
        last.push_str(WORDS[rng.below(WORDS.len())]);
        last.push(' ');
    }
    last.truncate(room);
    while last.len() < room {
        last.push('.');
    }
    head.push_str(last_open);
    head.push_str(&last);
    head.push_str(last_close);
    head.push_str(&tail);
    head.into_bytes()
}

/// What `bodies` sends and for how long.
#[derive(clap::Parser, Clone, Debug)]
pub struct LoadArgs {
    /// Address of the server, IP:PORT.
    #[arg(long)]
    pub addr: String,
    /// A bearer key (the mock and nginx ignore it).
    #[arg(long, default_value = "")]
    pub key: String,
    /// Model name in the body.
    #[arg(long, default_value = "bench")]
    pub model: String,
    /// Size of each request body in bytes.
    #[arg(long, default_value_t = 512 * 1024)]
    pub bytes: usize,
    /// Ask for a stream (`"stream": true`) and read it to its end.
    #[arg(long)]
    pub stream: bool,
    /// Requests in flight (one connection each, closed loop).
    #[arg(long, default_value_t = 16)]
    pub in_flight: usize,
    /// Seconds to keep sending (requests in flight then complete).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Send exactly this many requests instead of for `seconds`.
    #[arg(long)]
    pub requests: Option<u64>,
}

/// The outcome of a load run.
#[derive(Debug, Default, Clone)]
pub struct LoadResult {
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Request body bytes of the requests answered 200.
    pub body_bytes: u64,
    /// Response bytes read (bodies of the requests answered 200).
    pub response_bytes: u64,
    pub elapsed: Duration,
    /// Request latencies (send to the last response byte) in ms.
    pub latencies_ms: Vec<f64>,
}

impl LoadResult {
    pub fn to_json(&self) -> serde_json::Value {
        let secs = self.elapsed.as_secs_f64();
        let mut lat = self.latencies_ms.clone();
        serde_json::json!({
            "ok": self.ok,
            "errors": self.errors,
            "first_error": self.first_error,
            "body_bytes": self.body_bytes,
            "response_bytes": self.response_bytes,
            "seconds": secs,
            "requests_per_s": per_second(self.ok as f64, secs),
            "body_bytes_per_s": per_second(self.body_bytes as f64, secs),
            "latency_ms": crate::summary(&mut lat),
        })
    }
}

/// `x` per second over `secs`, 0 for an empty interval.
pub fn per_second(x: f64, secs: f64) -> f64 {
    if secs > 0.0 {
        x / secs
    } else {
        0.0
    }
}

/// Keeps `in_flight` requests with a `bytes`-byte body going for `seconds`
/// (or until `requests` are sent), each worker on a connection of its own.
pub async fn load(a: &LoadArgs) -> Result<LoadResult> {
    let body = Bytes::from(body(a.bytes, a.stream, &a.model));
    let started = Instant::now();
    let stop = started + Duration::from_secs_f64(a.seconds.max(0.0));
    let left = Arc::new(std::sync::atomic::AtomicU64::new(
        a.requests.unwrap_or(u64::MAX),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..a.in_flight.max(1) {
        let (a, body, left) = (a.clone(), body.clone(), Arc::clone(&left));
        tasks.spawn(async move { worker(&a, body, stop, &left).await });
    }
    let mut total = LoadResult::default();
    while let Some(r) = tasks.join_next().await {
        let r = r.context("load worker")?;
        total.ok += r.ok;
        total.errors += r.errors;
        total.body_bytes += r.body_bytes;
        total.response_bytes += r.response_bytes;
        total.latencies_ms.extend(r.latencies_ms);
        if total.first_error.is_none() {
            total.first_error = r.first_error;
        }
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: &str) -> Result<Sender> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn worker(
    a: &LoadArgs,
    body: Bytes,
    stop: Instant,
    left: &std::sync::atomic::AtomicU64,
) -> LoadResult {
    use std::sync::atomic::Ordering;
    let mut r = LoadResult::default();
    let mut sender: Option<Sender> = None;
    loop {
        if a.requests.is_none() && Instant::now() >= stop {
            break;
        }
        if left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_err()
        {
            break;
        }
        let t = Instant::now();
        match one(a, &mut sender, body.clone()).await {
            Ok(read) => {
                r.ok += 1;
                r.body_bytes += body.len() as u64;
                r.response_bytes += read;
                r.latencies_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            Err(e) => {
                r.errors += 1;
                sender = None;
                r.first_error.get_or_insert_with(|| format!("{e:#}"));
                // Not a busy loop against a server that is down.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    r
}

/// One request on the worker's connection (opened again when it closed);
/// the response's bytes read.
async fn one(a: &LoadArgs, sender: &mut Option<Sender>, body: Bytes) -> Result<u64> {
    let s = match sender {
        Some(s) if !s.is_closed() => s,
        _ => sender.insert(connect(&a.addr).await?),
    };
    s.ready().await?;
    let mut req = Request::post("/v1/chat/completions")
        .header(http::header::HOST, a.addr.as_str())
        .header(http::header::CONTENT_TYPE, "application/json");
    if !a.key.is_empty() {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {}", a.key));
    }
    let resp = s.send_request(req.body(Full::new(body))?).await?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut read = 0u64;
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            read += data.len() as u64;
            if status != StatusCode::OK && kept.len() < 512 {
                kept.extend_from_slice(&data);
            }
        }
    }
    if status != StatusCode::OK {
        bail!("HTTP {status}: {}", String::from_utf8_lossy(&kept));
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_exact_size_and_are_chat_requests() {
        for size in [16 * 1024, 100_000, 512 * 1024, 2 * 1024 * 1024 + 7] {
            for stream in [false, true] {
                let b = body(size, stream, "bench");
                assert_eq!(b.len(), size);
                let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
                assert_eq!(v["model"], "bench");
                assert_eq!(v["stream"], stream);
                let messages = v["messages"].as_array().unwrap();
                assert_eq!(messages[0]["role"], "system");
                assert_eq!(messages.last().unwrap()["role"], "user");
                assert_eq!(v["tools"].as_array().unwrap().len(), TOOLS.len());
                if size >= 100_000 {
                    // Many turns, tool calls and their results.
                    assert!(messages.len() > 20, "{}", messages.len());
                    assert!(messages.iter().any(|m| m["role"] == "tool"));
                    assert!(messages
                        .iter()
                        .any(|m| m["tool_calls"][0]["function"]["arguments"]
                            .as_str()
                            .is_some_and(|a| a.contains("\"path\""))));
                }
            }
        }
    }

    #[test]
    fn bodies_are_the_same_every_time_and_hold_text_to_escape() {
        let a = body(300_000, false, "bench");
        assert_eq!(a, body(300_000, false, "bench"));
        let text = String::from_utf8(a).unwrap();
        for needle in ["\\n", "\\t", "\\\"", "\\\\", "日本語", "🙂"] {
            assert!(text.contains(needle), "{needle}");
        }
        // The model is after the messages, as the OpenAI SDK writes it.
        assert!(text.find("\"model\"").unwrap() > text.len() / 2);
    }

    #[test]
    fn a_size_below_the_smallest_body_gives_the_smallest() {
        let b = body(10, false, "m");
        assert!(b.len() > 10);
        serde_json::from_slice::<serde_json::Value>(&b).unwrap();
    }

    #[test]
    fn per_second_of_nothing_is_zero() {
        assert_eq!(per_second(10.0, 0.0), 0.0);
        assert_eq!(per_second(10.0, 2.0), 5.0);
    }
}
