//! The HTTP server: HTTP/1.1 (keep-alive) and HTTP/2 (prior knowledge) on
//! one port through hyper-util's auto builder. [`handle`] routes the LLM
//! endpoints (OpenAI and Anthropic with or without the `/v1` prefix, Gemini
//! with or without `/v1beta`) to [`llm`], which records the request,
//! resolves its behaviour and replies; `/_mock/*` is the control API.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::behavior::{Behavior, Scripts, Step};
use crate::compose::Composition;
use crate::config::Config;
use crate::parse::LlmRequest;
use crate::record::{RecordedRequest, Recorder, RequestGuard};
use crate::render::{self, Dialect, EmbeddingShape, Endpoint, Reply, StreamPlan};
use crate::sse::{Plan, SseBody};
use crate::BoxError;

/// Body of every response.
pub(crate) type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// What the handlers share.
#[derive(Debug)]
pub(crate) struct State {
    pub config: Config,
    pub recorder: Recorder,
    pub scripts: Scripts,
    openai_models: Bytes,
}

impl State {
    pub fn new(config: Config) -> Self {
        Self {
            recorder: Recorder::new(config.record),
            scripts: Scripts::default(),
            openai_models: render::openai_models(&config.models),
            config,
        }
    }
}

/// Error a handler returns to make hyper drop the connection (HTTP/1) or
/// reset the stream (HTTP/2) without a response.
#[derive(Debug)]
pub(crate) struct MockReset;

impl std::fmt::Display for MockReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("llmgw-mock: connection reset on purpose")
    }
}

impl std::error::Error for MockReset {}

/// Accepts connections until `stop` fires or is dropped. Dropping this
/// future (or its task) drops every open connection with it.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No timer is installed, so switch the header-read timeout off rather
    // than have hyper warn about it; idle keep-alive connections stay open.
    builder.http1().keep_alive(true).header_read_timeout(None);
    builder.http2().max_concurrent_streams(None);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        debug!(%peer, error = %e, "cannot set TCP_NODELAY");
                    }
                    let state = Arc::clone(&state);
                    let service = service_fn(move |req| handle(Arc::clone(&state), req));
                    let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    connections.spawn(async move {
                        if let Err(e) = conn.await {
                            debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Usually out of file descriptors; pause instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = &mut stop => break,
        }
    }
}

/// Strips an optional `/v1` prefix.
fn api_path(path: &str) -> &str {
    match path.strip_prefix("/v1") {
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    }
}

/// Whether the request carries a Gemini API key (`x-goog-api-key` or
/// `?key=`).
fn has_gemini_key(req: &Request<Incoming>) -> bool {
    req.headers().contains_key("x-goog-api-key") || query_param(req.uri().query(), "key").is_some()
}

/// A Gemini route: `[/v1beta|/v1]/models/{model}:{method}` (POST), or
/// `GET /v1beta/models` (also `GET [/v1]/models` with a Gemini key).
fn gemini_route(method: &Method, path: &str, has_key: bool) -> Option<(Endpoint, Option<String>)> {
    let (rest, beta) = match path.strip_prefix("/v1beta") {
        Some(r) => (r, true),
        None => (api_path(path), false),
    };
    if rest == "/models" && method == Method::GET && (beta || has_key) {
        return Some((Endpoint::GeminiModels, None));
    }
    let (model, action) = rest.strip_prefix("/models/")?.rsplit_once(':')?;
    if method != Method::POST || model.is_empty() {
        return None;
    }
    let endpoint = match action {
        "generateContent" => Endpoint::GeminiGenerate,
        "streamGenerateContent" => Endpoint::GeminiStream,
        "countTokens" => Endpoint::GeminiCountTokens,
        _ => return None,
    };
    Some((endpoint, Some(model.to_owned())))
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, BoxError> {
    let path = req.uri().path();
    if path.starts_with("/_mock/") || path == "/healthz" {
        return Ok(control(&state, req).await);
    }
    if let Some((endpoint, model)) = gemini_route(req.method(), path, has_gemini_key(&req)) {
        return llm(&state, endpoint, model, req).await;
    }
    if req.method() == Method::POST {
        if let Some(kind) = crate::media::Media::of_path(api_path(path)) {
            return crate::media::handle(&state, kind, req).await;
        }
    }
    let endpoint = match (req.method(), api_path(path)) {
        (&Method::POST, "/chat/completions") => Endpoint::Chat,
        (&Method::POST, "/completions") => Endpoint::Completions,
        (&Method::POST, "/embeddings") => Endpoint::Embeddings,
        (&Method::POST, "/responses") => Endpoint::Responses,
        (&Method::POST, "/messages") => Endpoint::Messages,
        (&Method::POST, "/messages/count_tokens") => Endpoint::CountTokens,
        (&Method::GET, "/models") => Endpoint::Models,
        _ => {
            let message = format!("llmgw-mock: no route for {} {path}", req.method());
            let dialect = if path.starts_with("/v1beta") {
                Dialect::Gemini
            } else {
                Dialect::OpenAi
            };
            return Ok(error(dialect, 404, &message, None));
        }
    };
    llm(&state, endpoint, None, req).await
}

/// `uri` with the value of a `key` query parameter replaced by `REDACTED`,
/// the rest byte for byte.
fn redact_key(uri: &http::Uri) -> http::Uri {
    let Some(query) = uri.query() else {
        return uri.clone();
    };
    if !query
        .split('&')
        .any(|p| p == "key" || p.starts_with("key="))
    {
        return uri.clone();
    }
    let redacted: Vec<&str> = query
        .split('&')
        .map(|p| {
            if p == "key" || p.starts_with("key=") {
                "key=REDACTED"
            } else {
                p
            }
        })
        .collect();
    let path_and_query = format!("{}?{}", uri.path(), redacted.join("&"));
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    http::Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

pub(crate) fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Keeps a request in the journal, when recording: every byte of its
/// body, its `key` query value redacted.
pub(crate) fn journal(
    state: &State,
    seq: u64,
    parts: http::request::Parts,
    body: Bytes,
    model: Option<String>,
    stream: bool,
    received_at: SystemTime,
) {
    if state.recorder.enabled() {
        state.recorder.push(RecordedRequest {
            seq,
            method: parts.method,
            uri: redact_key(&parts.uri),
            version: parts.version,
            headers: parts.headers,
            body,
            model,
            stream,
            received_at,
        });
    }
}

/// A request's behaviour: its headers' knobs, else its model's next
/// script step, else the defaults.
pub(crate) fn behavior(state: &State, model: Option<&str>, from_headers: Step) -> Behavior {
    let scripted = match model {
        Some(m) => state.scripts.next(m).unwrap_or_default(),
        None => Step::default(),
    };
    Behavior::resolve(from_headers.or(scripted), &state.config.defaults)
}

/// The faults of every endpoint before its answer: the latency, a reset
/// (an error that makes hyper drop the connection) and a hang.
pub(crate) async fn before_answer(
    b: &Behavior,
    guard: RequestGuard,
) -> Result<RequestGuard, BoxError> {
    if !b.latency.is_zero() {
        tokio::time::sleep(b.latency).await;
    }
    if b.reset_before_first_byte {
        guard.complete();
        return Err(Box::new(MockReset));
    }
    if b.hang {
        // Until the client goes away: hyper then drops this future, and the
        // guard counts the request as cancelled.
        std::future::pending::<()>().await;
    }
    Ok(guard)
}

/// An injected error status (400 and above): its answer in `dialect`'s shape.
pub(crate) fn injected_error(b: &Behavior, dialect: Dialect) -> Option<Response<ResponseBody>> {
    (b.status >= 400).then(|| {
        let message = format!("llmgw-mock: injected HTTP {} error", b.status);
        error(dialect, b.status, &message, b.retry_after)
    })
}

/// `path_model`: the model named in a Gemini path.
async fn llm(
    state: &State,
    endpoint: Endpoint,
    path_model: Option<String>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, BoxError> {
    let received_at = SystemTime::now();
    let (seq, guard) = state.recorder.begin();
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();

    let gemini = matches!(
        endpoint,
        Endpoint::GeminiGenerate
            | Endpoint::GeminiStream
            | Endpoint::GeminiCountTokens
            | Endpoint::GeminiModels
    );
    let dialect = if gemini {
        Dialect::Gemini
    } else if matches!(endpoint, Endpoint::Messages | Endpoint::CountTokens)
        || (endpoint == Endpoint::Models && parts.headers.contains_key("anthropic-version"))
    {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    };
    let gemini_key = parts.headers.contains_key("x-goog-api-key")
        || query_param(parts.uri.query(), "key").is_some();
    let gemini_sse = query_param(parts.uri.query(), "alt").as_deref() == Some("sse");
    let models_query = ModelsQuery::of(parts.uri.query());
    let from_headers = Step::from_headers(&parts.headers);
    let parsed = if matches!(endpoint, Endpoint::Models | Endpoint::GeminiModels) {
        Ok(LlmRequest::default())
    } else {
        serde_json::from_slice::<LlmRequest>(&body)
    };
    let (model, stream) = match &parsed {
        _ if path_model.is_some() => (path_model, endpoint == Endpoint::GeminiStream),
        Ok(r) => (
            r.model.clone(),
            endpoint.streams() && r.stream == Some(true),
        ),
        Err(_) => (None, false),
    };
    journal(state, seq, parts, body, model.clone(), stream, received_at);
    let b = behavior(state, model.as_deref(), from_headers);
    let guard = before_answer(&b, guard).await?;
    if gemini && !gemini_key {
        guard.complete();
        let message = "Method doesn't allow unregistered callers (callers without established \
                       identity). Please use API Key or other form of API consumer identity to \
                       call this API.";
        return Ok(error(dialect, 403, message, None));
    }
    if let Some(resp) = injected_error(&b, dialect) {
        guard.complete();
        return Ok(resp);
    }
    let status = StatusCode::from_u16(b.status).unwrap_or(StatusCode::OK);

    if matches!(endpoint, Endpoint::Models | Endpoint::GeminiModels) {
        guard.complete();
        let body = match dialect {
            Dialect::OpenAi => Ok(state.openai_models.clone()),
            Dialect::Anthropic => render::anthropic_models(
                &state.config.models,
                models_query.after_id.as_deref(),
                page_size(models_query.limit, state.config.models_page_size),
            ),
            Dialect::Gemini => render::gemini_models(
                &state.config.models,
                models_query.page_token.as_deref(),
                page_size(models_query.page_size, state.config.models_page_size),
            ),
        };
        return Ok(match body {
            Ok(body) => with_retry_after(json_bytes(status, body), b.retry_after),
            Err(message) => error(dialect, 400, &message, None),
        });
    }
    let req = match parsed {
        Ok(r) => r,
        Err(e) => {
            guard.complete();
            let message = format!("llmgw-mock: request body is not valid JSON: {e}");
            return Ok(error(dialect, 400, &message, None));
        }
    };
    let model_name = model.clone().unwrap_or_else(|| "mock-model".to_owned());
    let created = unix_seconds(received_at);
    let composition = endpoint
        .protocol()
        .map(|p| Composition::new(p, seq, model_name.clone(), created, &req, &b));
    let reply = Reply {
        endpoint,
        seq,
        model: model_name,
        created,
        prompt_tokens: req.prompt_tokens(),
        chunks: b.chunks,
        usage: !b.no_usage,
        include_usage: req.include_usage(),
    };
    if stream {
        let plan = match composition {
            Some(c)
                if !(matches!(endpoint, Endpoint::Chat | Endpoint::Messages) && c.is_plain()) =>
            {
                Plan::Built(c.stream(gemini_sse))
            }
            _ => Plan::Lazy(StreamPlan::new(reply)),
        };
        let body = SseBody::new(plan, b.chunk_delay, b.reset_after_chunks, guard);
        let mut resp = Response::new(UnsyncBoxBody::new(body));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        let content_type = if gemini && !gemini_sse {
            "application/json"
        } else {
            "text/event-stream"
        };
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return Ok(with_retry_after(resp, b.retry_after));
    }
    let body = match composition {
        Some(c) => c.whole(),
        None => {
            let text = render::padded_text(b.chunks, b.reply_bytes);
            let embedding = EmbeddingShape {
                inputs: req.embedding_inputs(),
                dims: req.dimensions.unwrap_or(state.config.embedding_dims),
                base64: req.encoding_format.as_deref() == Some("base64"),
            };
            reply.whole(&text, embedding)
        }
    };
    if !b.body_delay.is_zero() {
        // The head now, the body later: the guard counts a client that
        // leaves in between as a cancellation.
        let mut resp = Response::new(UnsyncBoxBody::new(DelayedBody {
            sleep: Box::pin(tokio::time::sleep(b.body_delay)),
            body: Some(body),
            guard: Some(guard),
        }));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Ok(with_retry_after(resp, b.retry_after));
    }
    guard.complete();
    Ok(with_retry_after(json_bytes(status, body), b.retry_after))
}

/// A whole body sent after a delay (`x-mock-body-delay-ms`).
struct DelayedBody {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    body: Option<Bytes>,
    guard: Option<crate::record::RequestGuard>,
}

impl hyper::body::Body for DelayedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        if std::future::Future::poll(self.sleep.as_mut(), cx).is_pending() {
            return std::task::Poll::Pending;
        }
        if let Some(g) = self.guard.take() {
            g.complete();
        }
        std::task::Poll::Ready(self.body.take().map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

pub(crate) fn full(body: Bytes) -> ResponseBody {
    UnsyncBoxBody::new(Full::new(body).map_err(|never: Infallible| match never {}))
}

fn json_bytes(status: StatusCode, body: Bytes) -> Response<ResponseBody> {
    whole(status, "application/json", body)
}

/// A whole answer of `content_type`.
pub(crate) fn whole(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<ResponseBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn json_value(status: StatusCode, v: &Value) -> Response<ResponseBody> {
    json_bytes(status, Bytes::from(v.to_string()))
}

fn with_retry_after(
    mut resp: Response<ResponseBody>,
    retry_after: Option<u64>,
) -> Response<ResponseBody> {
    if let Some(s) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}

pub(crate) fn error(
    dialect: Dialect,
    status: u16,
    message: &str,
    retry_after: Option<u64>,
) -> Response<ResponseBody> {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let resp = json_bytes(
        code,
        render::error_body(dialect, status, message, retry_after),
    );
    with_retry_after(resp, retry_after)
}

/// The value of query parameter `name`, percent-decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The paging parameters of a models list: Anthropic's `limit` and
/// `after_id`, Gemini's `pageSize` and `pageToken`.
struct ModelsQuery {
    limit: Option<usize>,
    after_id: Option<String>,
    page_size: Option<usize>,
    page_token: Option<String>,
}

impl ModelsQuery {
    fn of(query: Option<&str>) -> Self {
        let number = |name| query_param(query, name).and_then(|v| v.parse().ok());
        ModelsQuery {
            limit: number("limit"),
            after_id: query_param(query, "after_id"),
            page_size: number("pageSize"),
            page_token: query_param(query, "pageToken"),
        }
    }
}

/// A page's size: the smaller of what the client asks and the instance's
/// `--models-page-size`; 0 is no limit.
fn page_size(asked: Option<usize>, most: usize) -> usize {
    match (asked.unwrap_or(0), most) {
        (0, m) => m,
        (a, 0) => a,
        (a, m) => a.min(m),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptBody {
    model: String,
    #[serde(default)]
    steps: Vec<Step>,
}

/// `/_mock/*`: the control API (see the crate docs).
async fn control(state: &State, req: Request<Incoming>) -> Response<ResponseBody> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let bad = |message: String| error(Dialect::OpenAi, 400, &message, None);
    match (&method, path.as_str()) {
        (&Method::GET, "/healthz" | "/_mock/health") => {
            json_value(StatusCode::OK, &json!({"ok": true}))
        }
        (&Method::GET, "/_mock/requests") => {
            let model = query_param(query.as_deref(), "model");
            let list: Vec<Value> = state
                .recorder
                .list(model.as_deref())
                .iter()
                .map(RecordedRequest::to_json)
                .collect();
            json_value(StatusCode::OK, &Value::Array(list))
        }
        (&Method::DELETE, "/_mock/requests") => {
            let cleared = state.recorder.clear();
            json_value(StatusCode::OK, &json!({"cleared": cleared}))
        }
        (&Method::GET, "/_mock/stats") => {
            json_value(StatusCode::OK, &json!(state.recorder.stats()))
        }
        (&Method::GET, "/_mock/script") => {
            json_value(StatusCode::OK, &json!(state.scripts.remaining()))
        }
        (&Method::POST, "/_mock/script") => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return bad(format!("cannot read the body: {e}")),
            };
            match serde_json::from_slice::<ScriptBody>(&body) {
                Ok(s) => {
                    let n = s.steps.len();
                    state.scripts.set(s.model.clone(), s.steps);
                    json_value(StatusCode::OK, &json!({"model": s.model, "steps": n}))
                }
                Err(e) => bad(format!(
                    "expected {{\"model\": \"m\", \"steps\": [...]}}: {e}"
                )),
            }
        }
        (&Method::DELETE, "/_mock/script") => {
            let model = query_param(query.as_deref(), "model");
            state.scripts.clear(model.as_deref());
            json_value(StatusCode::OK, &json!({"cleared": true}))
        }
        (&Method::POST, "/_mock/reset") => {
            state.scripts.clear(None);
            let cleared = state.recorder.clear();
            json_value(StatusCode::OK, &json!({"cleared": cleared}))
        }
        _ => error(
            Dialect::OpenAi,
            404,
            &format!("llmgw-mock: no control route for {method} {path}"),
            None,
        ),
    }
}
