//! The mock's instance-wide settings: [`Config`] is what [`crate::start`]
//! runs with, [`Cli`] the binary's flags (each also settable through the
//! environment variable named in `--help`). [`Defaults`] are the lowest-
//! precedence behaviour knobs, below per-request headers and scripts.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// Behaviour of a request that neither a header nor a script step overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// Delay before the response head.
    pub latency: Duration,
    /// Number of reply chunks (streamed events, and completion tokens).
    pub chunks: u32,
    /// Delay before each streamed content chunk.
    pub chunk_delay: Duration,
    /// Non-streaming reply text is padded to this many bytes (0: no padding).
    pub reply_bytes: usize,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            chunks: 4,
            chunk_delay: Duration::ZERO,
            reply_bytes: 0,
        }
    }
}

/// Everything [`crate::start`] needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to bind; port 0 picks a free port (see [`crate::MockServer::addr`]).
    pub listen: SocketAddr,
    /// Behaviour when no header or script step says otherwise.
    pub defaults: Defaults,
    /// Keep every LLM request for `GET /_mock/requests`. Off for benchmarks;
    /// the counters in `/_mock/stats` are kept either way.
    pub record: bool,
    /// Model ids listed by `GET /v1/models`.
    pub models: Vec<String>,
    /// The most models in one page of the Anthropic and Gemini lists
    /// (`has_more`/`after_id`, `nextPageToken`/`pageToken`); 0 is all.
    pub models_page_size: usize,
    /// Length of each embedding vector when the request has no `dimensions`.
    pub embedding_dims: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            defaults: Defaults::default(),
            record: true,
            models: vec!["mock-model".to_owned()],
            models_page_size: 0,
            embedding_dims: 16,
        }
    }
}

/// Command line of `llmgw-mock`.
#[derive(Debug, Parser)]
#[command(
    name = "llmgw-mock",
    version,
    about = "Mock upstream LLM provider (OpenAI, Anthropic and Gemini APIs) for llmgw's tests and benchmarks",
    long_about = None
)]
pub struct Cli {
    /// Address to listen on. Port 0 picks a free port; the bound address is
    /// printed as the first stdout line: `listening on IP:PORT`.
    #[arg(
        long,
        env = "LLMGW_MOCK_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:0"
    )]
    pub listen: SocketAddr,

    /// Delay before every response head, in milliseconds.
    #[arg(
        long,
        env = "LLMGW_MOCK_LATENCY_MS",
        value_name = "MS",
        default_value_t = 0
    )]
    pub latency_ms: u64,

    /// Number of reply chunks ("tok0 ", "tok1 ", ...), also the completion
    /// token count.
    #[arg(long, env = "LLMGW_MOCK_CHUNKS", value_name = "N", default_value_t = 4)]
    pub chunks: u32,

    /// Delay before each streamed content chunk, in milliseconds.
    #[arg(
        long,
        env = "LLMGW_MOCK_CHUNK_DELAY_MS",
        value_name = "MS",
        default_value_t = 0
    )]
    pub chunk_delay_ms: u64,

    /// Pad non-streaming reply text to about this many bytes.
    #[arg(
        long,
        env = "LLMGW_MOCK_REPLY_BYTES",
        value_name = "BYTES",
        default_value_t = 0
    )]
    pub reply_bytes: usize,

    /// Do not keep requests for GET /_mock/requests (counters still work).
    #[arg(long, env = "LLMGW_MOCK_NO_RECORD")]
    pub no_record: bool,

    /// Model ids listed by GET /v1/models, comma-separated.
    #[arg(
        long,
        env = "LLMGW_MOCK_MODELS",
        value_name = "ID[,ID...]",
        value_delimiter = ',',
        default_value = "mock-model"
    )]
    pub models: Vec<String>,

    /// The most models in one page of the Anthropic and Gemini model lists
    /// (0: all in one page).
    #[arg(
        long,
        env = "LLMGW_MOCK_MODELS_PAGE_SIZE",
        value_name = "N",
        default_value_t = 0
    )]
    pub models_page_size: usize,

    /// Embedding length when a request has no `dimensions`.
    #[arg(
        long,
        env = "LLMGW_MOCK_EMBEDDING_DIMS",
        value_name = "N",
        default_value_t = 16
    )]
    pub embedding_dims: usize,
}

impl Cli {
    /// The [`Config`] these flags describe.
    pub fn into_config(self) -> Config {
        Config {
            listen: self.listen,
            defaults: Defaults {
                latency: Duration::from_millis(self.latency_ms),
                chunks: self.chunks,
                chunk_delay: Duration::from_millis(self.chunk_delay_ms),
                reply_bytes: self.reply_bytes,
            },
            record: !self.no_record,
            models: self.models,
            models_page_size: self.models_page_size,
            embedding_dims: self.embedding_dims,
        }
    }
}
