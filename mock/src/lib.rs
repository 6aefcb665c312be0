//! `llmgw-mock`: a mock upstream LLM provider for llmgw's end-to-end tests
//! (the official Python `openai`/`anthropic` SDKs call the gateway, which
//! forwards here) and benchmarks.
//!
//! # Endpoints
//! With or without the `/v1` prefix (a provider base URL is
//! `http://127.0.0.1:PORT/v1`):
//! - OpenAI: `POST /v1/chat/completions`, `/v1/completions`,
//!   `/v1/embeddings`, `/v1/responses`; `GET /v1/models` (the Anthropic list
//!   shape when the request has an `anthropic-version` header).
//! - Anthropic: `POST /v1/messages`, `/v1/messages/count_tokens`.
//!
//! Chunk `i` of a reply is `"tok{i} "`; a whole reply's text is all chunk
//! texts in order. `model` echoes the request's. Prompt tokens are the
//! number of whitespace-separated words in the request's message texts (at
//! least 1, see [`parse`] for exactly which), completion
//! tokens the number of chunks. With `"stream": true` the reply is SSE, one
//! event per body frame, rendered when hyper asks for it; OpenAI chat and
//! completions streams end with `data: [DONE]`, and have a final usage
//! chunk (empty `choices`) only with `stream_options.include_usage`.
//!
//! # Behaviour
//! Field by field, the first that says something wins:
//! 1. request headers (`x-mock-status`, `x-mock-retry-after`,
//!    `x-mock-chunks`, `x-mock-chunk-delay-ms`, `x-mock-latency-ms`,
//!    `x-mock-reset-before-first-byte`, `x-mock-reset-after-chunks`,
//!    `x-mock-hang`, `x-mock-no-usage`, `x-mock-reply-bytes`), see [`Step`];
//! 2. the next step of the script of the request's `model` (every request
//!    for that model takes one step, whatever its headers say);
//! 3. the instance [`Defaults`].
//!
//! `no-usage` drops `usage` from OpenAI replies (and the include_usage
//! chunk; Responses get `"usage": null`); Anthropic's required usage fields
//! stay, set to 0. `reset-before-first-byte` closes the HTTP/1 connection
//! without a response (an HTTP/2 stream is reset). `reset-after-chunks: N`
//! sends N content chunks, waits 20 ms so they are flushed, then aborts
//! the body: the client sees a truncated stream and an error (no `[DONE]`,
//! no closing events). `latency-ms` is waited first, then reset, hang or
//! status apply. Anthropic's `message_start` has `output_tokens: 1`, as
//! the real API does; the final count is `message_delta`'s.
//!
//! A request whose client goes away while its response is pending (hang,
//! latency) or streaming counts in `cancelled`; see [`Stats`].
//!
//! # Control API
//! - `GET /_mock/requests[?model=m]`: recorded requests, oldest first (see
//!   [`RecordedRequest::to_json`]); `DELETE /_mock/requests` forgets them
//!   and zeroes the `requests` and `cancelled` counters.
//! - `GET /_mock/stats`: `{"requests": N, "cancelled": M, "active": K}`.
//! - `POST /_mock/script` `{"model": "m", "steps": [{"status": 503}, ...]}`
//!   replaces `m`'s script; `GET /_mock/script` shows what is left;
//!   `DELETE /_mock/script[?model=m]` clears all scripts (or `m`'s).
//! - `POST /_mock/reset`: scripts, requests and counters; `GET /healthz`.

pub mod behavior;
pub mod compose;
pub mod config;
pub mod parse;
pub mod record;
pub mod render;
mod server;
mod sse;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use behavior::{Finish, Step};
pub use compose::{arg_fragments, signature, thinking_text, tool_arguments};
pub use config::{Cli, Config, Defaults};
pub use record::{RecordedRequest, Stats};

/// Error type of response bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Binds `config.listen` and serves in the background until the returned
/// server is shut down or dropped.
pub async fn start(config: Config) -> Result<MockServer> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let state = Arc::new(server::State::new(config));
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(server::serve(listener, Arc::clone(&state), stopped));
    Ok(MockServer {
        addr,
        state,
        stop: Some(stop),
        task: Some(task),
    })
}

/// A running mock. Dropping it stops the server and closes every
/// connection.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    state: Arc<server::State>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MockServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT/v1`, the provider base URL to give the gateway (an
    /// unspecified listen address is replaced by loopback).
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.url())
    }

    /// `http://IP:PORT`, for the control API.
    pub fn url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        format!("http://{addr}")
    }

    /// Recorded requests, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.recorder.list(None)
    }

    /// Recorded requests whose body's `model` is `model`.
    pub fn requests_for(&self, model: &str) -> Vec<RecordedRequest> {
        self.state.recorder.list(Some(model))
    }

    /// Forgets recorded requests and zeroes `requests` and `cancelled`.
    pub fn clear(&self) {
        self.state.recorder.clear();
    }

    /// Replaces the script of upstream model `model`.
    pub fn set_script(&self, model: impl Into<String>, steps: Vec<Step>) {
        self.state.scripts.set(model.into(), steps);
    }

    /// Removes every script.
    pub fn clear_scripts(&self) {
        self.state.scripts.clear(None);
    }

    /// The request counters.
    pub fn stats(&self) -> Stats {
        self.state.recorder.stats()
    }

    /// Stops accepting, closes every connection and waits for the server
    /// task to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
