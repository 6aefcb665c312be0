//! The LLM proxy: authenticate the client, pick the model's candidate
//! targets, send the client's body (with only `model` replaced) to each in
//! turn with retries and failover, and stream the answer back while usage
//! and the request log are worked out on the side.

mod anthropic;
pub mod body;
mod dialect;
pub mod error;
mod estimate;
mod gemini;
mod head;
mod observe;
mod openai;
mod record;
mod sse;
mod state;
mod stream;
mod translate;
mod upstream;
mod usage;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use llmgw_core::routing::{self, TargetKey};
use llmgw_core::rules::Facts;
use llmgw_core::table::{KeyRejection, Model, RoutingTable, Target};
use llmgw_core::Protocol;
use llmgw_proto::v1 as pb;
use secrecy::ExposeSecret;
use serde_json::Value;

use self::dialect::{dialect, Dialect, Endpoint};
use self::error::{retryable_status, AttemptError, ErrorKind};
use self::observe::Observer;
use self::record::{Emitter, Finish};
pub use self::state::{RetryBudget, RouterState};
use self::stream::{ProxyBody, Relay};
use self::translate::{Transcoder, Translation};
use llmgw_core::serving::{serving, Serving};
use llmgw_protocols::{EncoderOptions, Wire};
use crate::config::RequestLogMode;
use crate::logs::wire::field;
use crate::logs::{FieldWriter, LogSink};
use crate::metrics::Metrics;
use crate::server::ResponseBody;
use crate::table::TableHandle;

/// Largest upstream error body kept to pass back to the client.
const MAX_ERROR_BODY: usize = 256 * 1024;
pub const REQUEST_ID: &str = "x-llmgw-request-id";

/// Shared by all requests.
pub struct Proxy {
    table: TableHandle,
    state: RouterState,
    budget: RetryBudget,
    upstreams: upstream::Upstreams,
    out: Arc<Emitter>,
    node_id: String,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("node_id", &self.node_id)
            .finish()
    }
}

fn full(b: impl Into<Bytes>) -> ResponseBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What rules see of a request.
struct RequestFacts<'a> {
    headers: &'a HeaderMap,
    raw: &'a [u8],
    /// The body as a tree, built when a rule or estimate first needs it.
    tree: std::cell::OnceCell<Value>,
    key: &'a str,
    tokenizer_model: &'a str,
    input_tokens: std::cell::OnceCell<u64>,
}

impl Facts for RequestFacts<'_> {
    fn header(&self, lower_name: &str) -> Option<&str> {
        self.headers.get(lower_name).and_then(|v| v.to_str().ok())
    }
    fn body(&self) -> Option<&Value> {
        Some(self.tree())
    }
    fn key_name(&self) -> &str {
        self.key
    }
    fn input_tokens(&self) -> u64 {
        // Rules must not wait for a tokenizer to be built: see `estimate`.
        *self
            .input_tokens
            .get_or_init(|| estimate::input_tokens_now(self.tokenizer_model, self.tree()))
    }
}

impl RequestFacts<'_> {
    fn tree(&self) -> &Value {
        self.tree.get_or_init(|| head::tree(self.raw))
    }
}

/// A request being handled. If the handler is dropped before the response
/// starts (the client went away), its record is logged as cancelled.
struct Pending {
    sink: Arc<Emitter>,
    record: Option<pb::RequestLog>,
    /// The record's headers, bodies and request strings, written as
    /// protobuf as they are seen.
    encoded: FieldWriter,
    started: Instant,
}

impl Pending {
    fn record(&mut self) -> &mut pb::RequestLog {
        self.record.get_or_insert_with(Default::default)
    }

    fn take(&mut self) -> (pb::RequestLog, FieldWriter) {
        (
            self.record.take().unwrap_or_default(),
            std::mem::take(&mut self.encoded),
        )
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut r) = self.record.take() {
            r.cancelled = true;
            r.latency_ms = self.started.elapsed().as_millis() as u64;
            r.ttfb_ms = r.latency_ms;
            if r.error.is_empty() {
                r.error = "client disconnected before the response started".into();
            }
            if r.usage_source.is_empty() {
                r.usage_source = "none".into();
            }
            self.sink.emit(r, std::mem::take(&mut self.encoded));
        }
    }
}

/// The outcome of the last failed attempt, passed back when all fail.
enum LastFailure {
    Upstream {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    Error(AttemptError),
}

impl Proxy {
    pub fn new(
        table: TableHandle,
        logs: Arc<LogSink>,
        metrics: Arc<Metrics>,
        node_id: String,
        request_log: RequestLogMode,
    ) -> Self {
        Proxy {
            table,
            state: RouterState::default(),
            budget: RetryBudget::default(),
            upstreams: upstream::Upstreams::default(),
            out: Arc::new(Emitter::new(logs, metrics, request_log)),
            node_id,
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.out.metrics
    }

    pub fn logs(&self) -> &LogSink {
        &self.out.logs
    }

    /// Waits until every finished request's record has reached the log
    /// queue, up to `limit`.
    pub async fn settled(&self, limit: Duration) {
        self.out.settled(limit).await;
    }

    /// Whether this path belongs to the proxy.
    pub fn serves(path: &str) -> bool {
        path == "/v1/models" || path == "/v1beta/models" || Endpoint::from_path(path).is_some()
    }

    /// Serves one proxied request from a client at `client_ip`.
    pub async fn handle(&self, req: Request<Incoming>, client_ip: &str) -> Response<ResponseBody> {
        let id = uuid::Uuid::now_v7().to_string();
        let path = req.uri().path();
        if path == "/v1/models" || path == "/v1beta/models" {
            let mut resp = self.models(&req);
            set_request_id(&mut resp, &id);
            return resp;
        }
        let Some((endpoint, _)) = Endpoint::from_request(path, req.uri().query()) else {
            return self.error(
                dialect(Protocol::OpenAi),
                ErrorKind::NotFound,
                "unknown path",
                &id,
            );
        };
        let d = dialect(endpoint.protocol());
        if req.method() != Method::POST {
            return self.error(d, ErrorKind::MethodNotAllowed, "use POST", &id);
        }
        let started = Instant::now();
        let mut encoded = FieldWriter::default();
        if self.out.mode.records() {
            // Room for both header maps (a response's headers are about the
            // size of a request's). Bodies reserve their own room when they
            // are logged: sizing for them here, from a length the client
            // states, would hold that memory before the key is even checked.
            let headers = FieldWriter::headers_len(req.headers());
            encoded = FieldWriter::with_capacity(2 * headers + 64);
            // Fields no one reads before the log: written, not allocated.
            encoded.string(field::CLIENT_IP, client_ip);
            let user_agent = req.headers().get(header::USER_AGENT);
            encoded.string(
                field::USER_AGENT,
                user_agent.and_then(|v| v.to_str().ok()).unwrap_or_default(),
            );
            encoded.string(field::PROTOCOL, client_protocol_name(endpoint));
            encoded.string(field::PATH, path);
            record::log_headers(&mut encoded, field::REQUEST_HEADERS, req.headers());
        }
        let mut pending = Pending {
            sink: Arc::clone(&self.out),
            record: Some(pb::RequestLog {
                id: id.clone(),
                node_id: self.node_id.clone(),
                time_ms: now_ms(),
                ..Default::default()
            }),
            encoded,
            started,
        };
        let mut resp = match self.proxy(req, endpoint, d, &mut pending).await {
            Ok(resp) => resp,
            Err((kind, message)) => {
                let r = pending.record();
                r.status = u32::from(kind.status().as_u16());
                r.error.clone_from(&message);
                self.finish_plain(&mut pending);
                self.error(d, kind, &message, &id)
            }
        };
        set_request_id(&mut resp, &id);
        resp
    }

    /// Headers for the record, redacted; none when nothing is recorded
    /// (the record then only feeds metrics, which do not look at them).
    fn log_headers(&self, w: &mut FieldWriter, field: u32, headers: &HeaderMap) {
        if self.out.mode.records() {
            record::log_headers(w, field, headers);
        }
    }

    /// Logs a request that ended without a proxied body.
    fn finish_plain(&self, pending: &mut Pending) {
        let (mut r, encoded) = pending.take();
        r.latency_ms = pending.started.elapsed().as_millis() as u64;
        r.ttfb_ms = r.latency_ms;
        if r.usage_source.is_empty() {
            r.usage_source = "none".into();
        }
        self.out.emit(r, encoded);
    }

    fn error(
        &self,
        d: &dyn Dialect,
        kind: ErrorKind,
        message: &str,
        id: &str,
    ) -> Response<ResponseBody> {
        let mut resp = Response::new(full(d.error_body(kind, message)));
        *resp.status_mut() = kind.status();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        set_request_id(&mut resp, id);
        resp
    }

    /// `GET /v1/models`: the models this key may use, in OpenAI's list
    /// shape, or Anthropic's when the client sends `anthropic-version`.
    fn models(&self, req: &Request<Incoming>) -> Response<ResponseBody> {
        let gemini = req.uri().path() == "/v1beta/models";
        let anthropic = !gemini && req.headers().contains_key("anthropic-version");
        let d = dialect(if gemini {
            Protocol::Gemini
        } else if anthropic {
            Protocol::Anthropic
        } else {
            Protocol::OpenAi
        });
        let Some(table) = self.table.load() else {
            return self.error(
                d,
                ErrorKind::NotReady,
                "the gateway has no configuration yet",
                "",
            );
        };
        // Any protocol's header carries the key here, whatever the shape
        // asked for.
        let key = match authenticate(
            &table,
            dialect(if gemini { Protocol::Gemini } else { Protocol::Anthropic }),
            req.headers(),
            req.uri().query(),
        ) {
            Ok(k) => k,
            Err((kind, msg)) => return self.error(d, kind, &msg, ""),
        };
        let mut names: Vec<&str> = table
            .models
            .keys()
            .map(String::as_str)
            .filter(|m| key.may_use(m))
            .collect();
        names.sort_unstable();
        let body = if gemini {
            let models: Vec<Value> = names
                .iter()
                .map(|m| {
                    serde_json::json!({"name": format!("models/{m}"), "displayName": m,
                        "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"]})
                })
                .collect();
            serde_json::json!({ "models": models })
        } else if anthropic {
            let data: Vec<Value> = names
                .iter()
                .map(|m| {
                    serde_json::json!({"type": "model", "id": m, "display_name": m,
                        "created_at": "1970-01-01T00:00:00Z"})
                })
                .collect();
            serde_json::json!({"data": data, "has_more": false,
                "first_id": names.first(), "last_id": names.last()})
        } else {
            let data: Vec<Value> = names
                .iter()
                .map(|m| serde_json::json!({"id": m, "object": "model", "created": 0, "owned_by": "llmgw"}))
                .collect();
            serde_json::json!({"object": "list", "data": data})
        };
        let mut resp = Response::new(full(body.to_string()));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }

    async fn proxy(
        &self,
        req: Request<Incoming>,
        endpoint: Endpoint,
        d: &'static dyn Dialect,
        pending: &mut Pending,
    ) -> Result<Response<ResponseBody>, (ErrorKind, String)> {
        let table = self.table.load().ok_or((
            ErrorKind::NotReady,
            "the gateway has no configuration yet".to_string(),
        ))?;
        pending.record().snapshot_version = table.version;
        let key = authenticate(&table, d, req.headers(), req.uri().query())?;
        pending.record().key.clone_from(&key.name);
        // Gemini names the model in the path.
        let path_model = Endpoint::from_request(req.uri().path(), None)
            .and_then(|(_, m)| m)
            .map(str::to_string);

        let limit = table.settings.max_request_body_bytes;
        let (parts, incoming) = req.into_parts();
        if let Some(len) = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if len > limit {
                return Err((
                    ErrorKind::BodyTooLarge,
                    format!("the request body is larger than {limit} bytes"),
                ));
            }
        }
        let raw = Limited::new(incoming, usize::try_from(limit).unwrap_or(usize::MAX))
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    (
                        ErrorKind::BodyTooLarge,
                        format!("the request body is larger than {limit} bytes"),
                    )
                } else {
                    (
                        ErrorKind::BadRequest,
                        "could not read the request body".to_string(),
                    )
                }
            })?
            .to_bytes();
        let log_bodies = self.out.mode.bodies() && table.settings.log_bodies && key.log_bodies;
        let cap = table.settings.log_body_max_bytes;
        if log_bodies {
            record::log_request_body(&mut pending.encoded, &raw, cap);
        }

        let not_object = || {
            (
                ErrorKind::BadRequest,
                if endpoint.model_in_path() {
                    "the request body must be a JSON object".to_string()
                } else {
                    "the request body must be a JSON object with a string 'model'".to_string()
                },
            )
        };
        let head = head::Head::parse(&raw).map_err(|e| match e {
            head::HeadError::Syntax(e) => (
                ErrorKind::BadRequest,
                format!("the request body is not valid JSON: {e}"),
            ),
            head::HeadError::NotAnObject => not_object(),
        })?;
        let streaming = head.stream || endpoint.path_streams();
        let Some(model_name) = path_model.clone().or(head.model) else {
            return Err(not_object());
        };
        {
            let r = pending.record();
            r.model.clone_from(&model_name);
            r.stream = streaming;
        }
        let model = table.models.get(&model_name).ok_or_else(|| {
            (
                ErrorKind::UnknownModel,
                format!("model '{model_name}' does not exist"),
            )
        })?;
        if !key.may_use(&model_name) {
            return Err((
                ErrorKind::ModelNotAllowed,
                format!("this API key may not use model '{model_name}'"),
            ));
        }

        let tokenizer_model = model
            .targets
            .first()
            .map_or(model_name.clone(), |t| t.upstream_model.clone());
        let facts = RequestFacts {
            headers: &parts.headers,
            raw: &raw,
            tree: std::cell::OnceCell::new(),
            key: &key.name,
            tokenizer_model: &tokenizer_model,
            input_tokens: std::cell::OnceCell::new(),
        };
        let plan = routing::plan(model, endpoint.api(), &facts, &self.state);
        if plan.order.is_empty() {
            return Err((ErrorKind::NoRoute, plan.empty_reason(model)));
        }
        let first = &model.targets[plan.order[0]];
        if serving(endpoint.api(), first.provider.protocol) == Serving::CountLocally {
            // No target can count in its own protocol: the local tokenizer
            // counts the request's system, messages, tools and images.
            let from = endpoint
                .api()
                .wire()
                .map_or(Wire::Anthropic, translate::wire);
            let t = Translation::decode(from, endpoint, &raw, path_model.as_deref(), false, true)?;
            let n = translate::count_locally(&tokenizer_model, &t).await;
            return Ok(self.count_tokens_locally(endpoint, n, log_bodies.then_some(cap), pending));
        }
        // What an Anthropic client's `message_start` says of input before
        // the upstream has reported it, when a target is translated.
        let translates = plan.order.iter().any(|&i| {
            matches!(
                serving(endpoint.api(), model.targets[i].provider.protocol),
                Serving::Translate { .. }
            )
        });
        let input_estimate = if translates && streaming {
            facts.input_tokens()
        } else {
            0
        };

        self.attempts(
            Call {
                table: &table,
                model,
                endpoint,
                dialect: d,
                headers: &parts.headers,
                raw: &raw,
                path_model: path_model.as_deref(),
                include_usage: head.include_usage,
                streaming,
                order: &plan.order,
                log_bodies,
                translation: std::sync::OnceLock::new(),
                input_estimate,
            },
            pending,
        )
        .await
    }

    /// `count_tokens` for a model with no Anthropic target: a local estimate.
    /// `body_cap`: the logged body's limit, `None` when bodies are not
    /// logged for this request.
    fn count_tokens_locally(
        &self,
        endpoint: Endpoint,
        n: u64,
        body_cap: Option<usize>,
        pending: &mut Pending,
    ) -> Response<ResponseBody> {
        let body = if endpoint == Endpoint::GeminiCountTokens {
            serde_json::json!({ "totalTokens": n }).to_string()
        } else {
            serde_json::json!({ "input_tokens": n }).to_string()
        };
        let r = pending.record();
        r.status = 200;
        r.usage_source = "estimated".into();
        r.input_tokens = n;
        r.count_source = "local".into();
        r.provider = "llmgw".into();
        if let Some(cap) = body_cap {
            record::log_response_body(&mut pending.encoded, body.as_bytes(), cap);
        }
        self.finish_plain(pending);
        let mut resp = Response::new(full(body));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }

    async fn attempts(
        &self,
        call: Call<'_>,
        pending: &mut Pending,
    ) -> Result<Response<ResponseBody>, (ErrorKind, String)> {
        let settings = &call.table.settings;
        let deadline = pending.started + settings.deadline;
        let mut last: Option<LastFailure> = None;
        let mut sent = 0u32;
        self.budget.deposit();
        'targets: for (pos, &ti) in call.order.iter().enumerate() {
            let target = &call.model.targets[ti];
            let others_left = pos + 1 < call.order.len();
            let key = TargetKey::of(target);
            let prepared = match serving(call.endpoint.api(), target.provider.protocol) {
                Serving::PassThrough => {
                    let Some(body) = self.upstream_body(&call, target) else {
                        return Err((
                            ErrorKind::BadRequest,
                            "the request body cannot be rewritten".into(),
                        ));
                    };
                    Prepared {
                        body,
                        path: call.endpoint.upstream_path(&target.upstream_model).into_owned(),
                        wires: None,
                        dropped: Vec::new(),
                    }
                }
                Serving::Translate { from, to } => {
                    let (from, to) = (translate::wire(from), translate::wire(to));
                    let t = call.translation(from)?;
                    let (body, dropped) =
                        t.encode(to, &target.upstream_model, call.model.default_max_tokens)?;
                    Prepared {
                        body,
                        path: t.upstream_path(to, &target.upstream_model),
                        wires: Some((to, from)),
                        dropped,
                    }
                }
                // Only the first candidate decides on counting locally;
                // an OpenAI target further down has nothing to count with.
                Serving::CountLocally | Serving::Unsupported => continue 'targets,
            };
            let upstream_body = prepared.body.clone();
            let mut tries = 0u32;
            let mut waited_retry_after = false;
            loop {
                if sent > 0
                    && !self.budget.try_withdraw(
                        settings.retry_budget_ratio,
                        settings.retry_budget_min_retries,
                    )
                {
                    tracing::warn!(model = %call.model.name, "retry budget exhausted");
                    break 'targets;
                }
                if Instant::now() >= deadline {
                    last = Some(LastFailure::Error(AttemptError::Deadline));
                    break 'targets;
                }
                tries += 1;
                sent += 1;
                let attempt_started = Instant::now();
                let result = self
                    .send(&call, target, &prepared, upstream_body.clone(), deadline)
                    .await;
                let latency_ms = attempt_started.elapsed().as_millis() as u64;
                let mut attempt = pb::Attempt {
                    provider: target.provider.name.clone(),
                    upstream_model: target.upstream_model.clone(),
                    latency_ms,
                    ..Default::default()
                };
                match result {
                    Ok(resp) => {
                        let status = resp.status();
                        attempt.status = u32::from(status.as_u16());
                        let ok = status.is_success();
                        let retry = retryable_status(status.as_u16())
                            || status == StatusCode::TOO_MANY_REQUESTS;
                        self.state
                            .record(&key, !retry, ok.then(|| attempt_started.elapsed()));
                        if !retry {
                            // Success, or an error the client must see as it is.
                            pending.record().attempts.push(attempt);
                            return Ok(self.respond(&call, target, &prepared, resp, pending, deadline).await);
                        }
                        let retry_after = retry_after(resp.headers());
                        let headers = resp.headers().clone();
                        let mut body = read_capped(resp, deadline).await;
                        attempt.error = format!("upstream answered {status}");
                        pending.record().attempts.push(attempt);
                        let mut client_status = status;
                        if let Some((upstream, client)) = prepared.wires {
                            (client_status, body) =
                                translated_error(upstream, client, status, &body);
                        }
                        last = Some(LastFailure::Upstream {
                            status: client_status,
                            headers,
                            body,
                        });
                        if status == StatusCode::TOO_MANY_REQUESTS {
                            if others_left {
                                continue 'targets;
                            }
                            match retry_after {
                                Some(wait)
                                    if !waited_retry_after && Instant::now() + wait < deadline =>
                                {
                                    waited_retry_after = true;
                                    tokio::time::sleep(wait).await;
                                    continue;
                                }
                                _ => break 'targets,
                            }
                        }
                    }
                    Err(e) => {
                        self.state.record(&key, false, None);
                        attempt.error = e.describe();
                        pending.record().attempts.push(attempt);
                        let stop = !e.retryable();
                        last = Some(LastFailure::Error(e));
                        if stop {
                            break 'targets;
                        }
                    }
                }
                if tries >= call.model.max_attempts {
                    continue 'targets;
                }
                let delay = call.model.retry_delay;
                if Instant::now() + delay >= deadline {
                    break 'targets;
                }
                tokio::time::sleep(delay).await;
            }
        }
        let r = pending.record();
        r.retries = sent.saturating_sub(1);
        if let Some(a) = r.attempts.last() {
            r.provider.clone_from(&a.provider);
            r.upstream_model.clone_from(&a.upstream_model);
        }
        match last {
            Some(LastFailure::Upstream {
                status,
                headers,
                body,
            }) => {
                let r = pending.record();
                r.status = u32::from(status.as_u16());
                r.error = format!("every attempt failed; the last upstream answered {status}");
                if call.log_bodies {
                    let cap = call.table.settings.log_body_max_bytes;
                    record::log_response_body(&mut pending.encoded, &body, cap);
                }
                self.log_headers(&mut pending.encoded, field::RESPONSE_HEADERS, &headers);
                self.finish_plain(pending);
                let mut resp = Response::new(full(body));
                *resp.status_mut() = status;
                // The kept body may be cut, so its length is recomputed.
                copy_response_headers(&headers, resp.headers_mut(), true);
                Ok(resp)
            }
            Some(LastFailure::Error(e)) => Err((
                e.kind(),
                format!("every attempt failed; the last: {}", e.describe()),
            )),
            None => Err((
                ErrorKind::UpstreamUnavailable,
                "the retry budget is exhausted; the upstream is failing for many requests".into(),
            )),
        }
    }

    /// The body for one target: the client's bytes with only `model`
    /// replaced, plus a usage request for OpenAI chat streams if the
    /// provider wants it and the client did not ask.
    fn upstream_body(&self, call: &Call<'_>, target: &Target) -> Option<Bytes> {
        if call.endpoint.model_in_path() {
            // Gemini: the model is in the path, the body passes unchanged.
            return Some(call.raw.clone());
        }
        let mut out = body::replace_model(call.raw, &target.upstream_model)?;
        if wants_usage_chunk(call, target) {
            out = body::request_stream_usage(&out)?;
        }
        Some(out)
    }

    async fn send(
        &self,
        call: &Call<'_>,
        target: &Target,
        prepared: &Prepared,
        body: Bytes,
        deadline: Instant,
    ) -> Result<Response<Incoming>, AttemptError> {
        let settings = &call.table.settings;
        let provider = &target.provider;
        let (client, uri) = self.upstreams.get(
            &provider.name,
            &provider.base_url,
            &prepared.path,
            settings.connect_timeout,
        )?;
        let left = deadline.saturating_duration_since(Instant::now());
        let (limit, by_deadline) = if left < settings.first_byte_timeout {
            (left, true)
        } else {
            (settings.first_byte_timeout, false)
        };
        let exchange = async {
            // An HTTP/2 refusal (GOAWAY, REFUSED_STREAM) means the request
            // was not processed: it is sent again at once on another
            // connection, up to twice, within this attempt.
            // The headers are built for each send rather than kept for a
            // resend: a resend is rare, a copy would be made every time.
            let mut resends = 0;
            loop {
                let mut request = Request::new(Full::new(body.clone()));
                *request.method_mut() = Method::POST;
                *request.uri_mut() = uri.clone();
                *request.headers_mut() =
                    upstream_headers(call.headers, target, prepared.wires.is_some());
                match client.request(request).await {
                    Err(e) if resends < 2 && upstream::is_safe_to_resend(&e) => resends += 1,
                    done => return done,
                }
            }
        };
        match tokio::time::timeout(limit, exchange).await {
            Err(_) if by_deadline => Err(AttemptError::Deadline),
            Err(_) => Err(AttemptError::FirstByteTimeout),
            Ok(Err(e)) if e.is_connect() => Err(AttemptError::Connect(error_chain(&e))),
            Ok(Err(e)) => Err(AttemptError::Request(error_chain(&e))),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    /// Streams an upstream answer to the client.
    async fn respond(
        &self,
        call: &Call<'_>,
        target: &Target,
        prepared: &Prepared,
        resp: Response<Incoming>,
        pending: &mut Pending,
        deadline: Instant,
    ) -> Response<ResponseBody> {
        if let Some((upstream, client)) = prepared.wires {
            return self
                .respond_translated(call, target, prepared, (upstream, client), resp, pending, deadline)
                .await;
        }
        let status = resp.status();
        let is_sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let strip = is_sse && status.is_success() && wants_usage_chunk(call, target);
        let mut out = Response::new(full(Bytes::new()));
        *out.status_mut() = status;
        copy_response_headers(resp.headers(), out.headers_mut(), strip);
        if is_sse {
            out.headers_mut()
                .insert("x-accel-buffering", HeaderValue::from_static("no"));
        }
        let (mut r, mut encoded) = pending.take();
        r.status = u32::from(status.as_u16());
        r.provider.clone_from(&target.provider.name);
        r.upstream_model.clone_from(&target.upstream_model);
        r.retries = (r.attempts.len() as u32).saturating_sub(1);
        self.log_headers(&mut encoded, field::RESPONSE_HEADERS, resp.headers());
        if self.out.mode.records() {
            encoded.string(field::UPSTREAM_PROTOCOL, target.provider.protocol.as_str());
        }
        if call.endpoint.api().counts_tokens() && status.is_success() {
            r.count_source = "upstream".into();
        }
        if !status.is_success() {
            r.error = format!("upstream answered {status}");
        }
        let log_cap = if call.log_bodies {
            call.table.settings.log_body_max_bytes
        } else {
            0
        };
        let observer = Relay::Pass(Observer::new(
            call.dialect,
            call.endpoint,
            is_sse,
            strip,
            log_cap,
        ));
        let finish = Finish {
            record: r,
            encoded,
            usage: None,
            request: Some(call.raw.clone()),
            completion_text: String::new(),
            prices: target.prices,
            tokenizer_model: target.upstream_model.clone(),
            counted: status.is_success() && !call.endpoint.api().counts_tokens(),
        };
        // Kept only when the body passes unchanged.
        // hyper's decoded length: none for a chunked body.
        let expected_len = if strip {
            None
        } else {
            http_body::Body::size_hint(resp.body()).exact()
        };
        let body = ProxyBody::new(
            resp.into_body(),
            observer,
            0,
            target.provider.timeout,
            pending.started,
            finish,
            Arc::clone(&self.out),
            expected_len,
        );
        *out.body_mut() = BodyExt::boxed_unsync(body);
        out
    }

    /// A translated answer: an error rewritten in the client's shape, a
    /// stream transcoded as it arrives, or a whole body read, converted and
    /// sent at once.
    #[allow(clippy::too_many_arguments)]
    async fn respond_translated(
        &self,
        call: &Call<'_>,
        target: &Target,
        prepared: &Prepared,
        (upstream, client): (Wire, Wire),
        resp: Response<Incoming>,
        pending: &mut Pending,
        deadline: Instant,
    ) -> Response<ResponseBody> {
        let status = resp.status();
        let (mut r, mut encoded) = pending.take();
        r.status = u32::from(status.as_u16());
        r.provider.clone_from(&target.provider.name);
        r.upstream_model.clone_from(&target.upstream_model);
        r.retries = (r.attempts.len() as u32).saturating_sub(1);
        self.log_headers(&mut encoded, field::RESPONSE_HEADERS, resp.headers());
        record::log_translation(&mut r, &mut encoded, target.provider.protocol, &prepared.dropped);
        if call.log_bodies {
            let cap = call.table.settings.log_body_max_bytes;
            record::log_upstream_request_body(&mut encoded, &prepared.body, cap);
        }
        let log_cap = if call.log_bodies {
            call.table.settings.log_body_max_bytes
        } else {
            0
        };
        let mut out = Response::new(full(Bytes::new()));
        if let Some(v) = dropped_header(&prepared.dropped) {
            out.headers_mut().insert(DROPPED_FIELDS, v);
        }
        let counting = call.endpoint.api().counts_tokens();
        let opts = EncoderOptions {
            model: call.model.name.clone(),
            id: r.id.clone(),
            created: now_ms() / 1000,
            input_estimate: call.input_estimate,
            include_usage: call.include_usage,
            sse: !matches!(call.endpoint, Endpoint::GeminiStream { sse: false }),
        };
        let json = HeaderValue::from_static("application/json");
        if !status.is_success() {
            let body = read_capped(resp, deadline).await;
            let (client_status, body) = translated_error(upstream, client, status, &body);
            r.status = u32::from(client_status.as_u16());
            r.error = format!("upstream answered {status}");
            if log_cap > 0 {
                record::log_response_body(&mut encoded, &body, log_cap);
            }
            r.latency_ms = pending.started.elapsed().as_millis() as u64;
            r.ttfb_ms = r.latency_ms;
            r.usage_source = "none".into();
            self.out.emit(r, encoded);
            *out.status_mut() = client_status;
            out.headers_mut().insert(header::CONTENT_TYPE, json);
            *out.body_mut() = full(body);
            return out;
        }
        let finish = Finish {
            record: r,
            encoded,
            usage: None,
            request: Some(call.raw.clone()),
            completion_text: String::new(),
            prices: target.prices,
            tokenizer_model: target.upstream_model.clone(),
            counted: !counting,
        };
        if call.streaming {
            let transcoder = Transcoder::new(upstream, client, opts.clone(), log_cap);
            let content_type = if opts.sse {
                HeaderValue::from_static("text/event-stream")
            } else {
                json
            };
            out.headers_mut().insert(header::CONTENT_TYPE, content_type);
            out.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            out.headers_mut()
                .insert("x-accel-buffering", HeaderValue::from_static("no"));
            let body = ProxyBody::new(
                resp.into_body(),
                Relay::Translate(Box::new(transcoder)),
                call.input_estimate,
                target.provider.timeout,
                pending.started,
                finish,
                Arc::clone(&self.out),
                None,
            );
            *out.body_mut() = BodyExt::boxed_unsync(body);
            return out;
        }
        let mut finish = finish;
        let whole = read_whole(resp, target.provider.timeout, translate::MAX_TRANSLATED_BODY)
            .await
            .and_then(|body| translate::whole(upstream, client, counting, &body, &opts));
        let r = &mut finish.record;
        r.latency_ms = pending.started.elapsed().as_millis() as u64;
        r.ttfb_ms = r.latency_ms;
        match whole {
            Ok((body, usage, text)) => {
                if log_cap > 0 {
                    record::log_response_body(&mut finish.encoded, &body, log_cap);
                }
                if counting {
                    finish.record.count_source = "upstream".into();
                    finish.record.usage_source = "reported".into();
                    finish.record.input_tokens = usage.map_or(0, |u| u.input);
                } else {
                    finish.usage = usage;
                    finish.completion_text = text;
                }
                finish.submit(Arc::clone(&self.out));
                out.headers_mut().insert(header::CONTENT_TYPE, json);
                *out.body_mut() = full(body);
                out
            }
            Err(e) => {
                let message = format!("the upstream answer could not be translated: {e}");
                finish.record.status = 502;
                finish.record.error.clone_from(&message);
                finish.counted = false;
                finish.submit(Arc::clone(&self.out));
                let mut resp = self.error(call.dialect, ErrorKind::UpstreamUnavailable, &message, "");
                resp.headers_mut().extend(out.headers_mut().drain());
                resp
            }
        }
    }
}

/// What one target is sent: the body, the path under its base URL, and
/// for a translated request the (upstream, client) wire formats and the
/// fields a lenient translation left out.
struct Prepared {
    body: Bytes,
    path: String,
    wires: Option<(Wire, Wire)>,
    dropped: Vec<String>,
}

/// One request's routing inputs.
struct Call<'a> {
    table: &'a RoutingTable,
    model: &'a Model,
    endpoint: Endpoint,
    dialect: &'static dyn Dialect,
    headers: &'a HeaderMap,
    raw: &'a Bytes,
    /// The client asked for a usage chunk (`stream_options.include_usage`).
    include_usage: bool,
    streaming: bool,
    order: &'a [usize],
    log_bodies: bool,
    /// The model named in the path (Gemini).
    path_model: Option<&'a str>,
    /// The client's request in the intermediate form, decoded for the
    /// first translated target and kept for the others.
    translation: std::sync::OnceLock<Translation>,
    /// Input tokens estimated from the request (0 unless a target is
    /// translated and the request streams).
    input_estimate: u64,
}

impl Call<'_> {
    fn translation(&self, from: Wire) -> Result<&Translation, (ErrorKind, String)> {
        if let Some(t) = self.translation.get() {
            return Ok(t);
        }
        let t = Translation::decode(
            from,
            self.endpoint,
            self.raw,
            self.path_model,
            self.streaming,
            self.model.translation == llmgw_core::table::Translation::Lenient,
        )?;
        Ok(self.translation.get_or_init(|| t))
    }
}

/// The response header that names the fields a lenient translation left
/// out.
const DROPPED_FIELDS: &str = "x-llmgw-dropped-fields";

fn dropped_header(dropped: &[String]) -> Option<HeaderValue> {
    if dropped.is_empty() {
        return None;
    }
    HeaderValue::from_str(&dropped.join(", ")).ok()
}

/// Reads a whole upstream body, with an idle timeout between chunks and a
/// size cap.
async fn read_whole(resp: Response<Incoming>, idle: Duration, cap: usize) -> Result<Bytes, String> {
    let mut out = bytes::BytesMut::new();
    let mut body = resp.into_body();
    loop {
        match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(format!("upstream sent nothing for {} s (idle timeout)", idle.as_secs())),
            Ok(None) => return Ok(out.freeze()),
            Ok(Some(Err(e))) => return Err(format!("upstream body broke: {}", error_chain(&e))),
            Ok(Some(Ok(frame))) => {
                if let Ok(chunk) = frame.into_data() {
                    if out.len() + chunk.len() > cap {
                        return Err(format!("the upstream answer is larger than {cap} bytes"));
                    }
                    out.extend_from_slice(&chunk);
                }
            }
        }
    }
}

/// An upstream error rewritten in the client's protocol.
fn translated_error(upstream: Wire, client: Wire, status: StatusCode, body: &[u8]) -> (StatusCode, Bytes) {
    let (code, body) = translate::error(upstream, client, status.as_u16(), body);
    (StatusCode::from_u16(code).unwrap_or(status), body)
}

fn wants_usage_chunk(call: &Call<'_>, target: &Target) -> bool {
    call.endpoint == Endpoint::ChatCompletions
        && call.streaming
        && target.provider.stream_usage
        && !call.include_usage
}

/// A Gemini client's key in the query string (`?key=`).
fn query_key(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("key="))
        .filter(|k| !k.is_empty())
}

fn authenticate<'t>(
    table: &'t RoutingTable,
    d: &dyn Dialect,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<&'t Arc<llmgw_core::table::ClientKey>, (ErrorKind, String)> {
    let from_query = || (d.protocol() == Protocol::Gemini).then(|| query_key(query)).flatten();
    let secret = d.client_key(headers).or_else(from_query).ok_or((
        ErrorKind::MissingKey,
        match d.protocol() {
            Protocol::Anthropic => "missing API key: send 'x-api-key: <key>'".to_string(),
            Protocol::Gemini => {
                "missing API key: send 'x-goog-api-key: <key>' or '?key=<key>'".to_string()
            }
            _ => "missing API key: send 'Authorization: Bearer <key>'".to_string(),
        },
    ))?;
    table.authenticate(secret, now_ms()).map_err(|r| match r {
        KeyRejection::Unknown => (ErrorKind::InvalidKey, "invalid API key".to_string()),
        KeyRejection::Expired => (
            ErrorKind::ExpiredKey,
            "this API key has expired".to_string(),
        ),
    })
}

/// The client's protocol as the request log names it: the wire format of
/// a chat-like API, else `openai`.
fn client_protocol_name(endpoint: Endpoint) -> &'static str {
    endpoint.api().wire().map_or("openai", |w| w.as_str())
}

/// Headers that describe one hop, or that the gateway sets itself.
fn dropped_request_header(name: &str) -> bool {
    llmgw_core::validate::is_hop_by_hop(name)
        || matches!(
            name,
            "host"
                | "content-length"
                | "authorization"
                | "x-api-key"
                | "api-key"
                | "proxy-authorization"
                | "cookie"
                | "accept-encoding"
                | "forwarded"
                | "x-forwarded-for"
                | "x-forwarded-host"
                | "x-forwarded-proto"
                | "x-real-ip"
        )
}

/// The headers of an upstream request: the client's, less credentials and
/// hop-by-hop headers, and for a translated request less every header of
/// the client's own protocol (its version and beta flags mean nothing to
/// another provider); then the provider's extra headers and credential.
fn upstream_headers(client: &HeaderMap, target: &Target, translated: bool) -> HeaderMap {
    let named_by_connection: Vec<String> = client
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::with_capacity(client.len() + target.provider.headers.len() + 2);
    for (name, value) in client {
        let n = name.as_str();
        if dropped_request_header(n)
            || named_by_connection.iter().any(|c| c == n)
            || (translated && protocol_header(n))
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    if translated {
        out.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    for (name, value) in &target.provider.headers {
        out.insert(name.clone(), value.clone());
    }
    let key = target.provider.api_key.as_ref().map(|k| k.expose_secret());
    dialect(target.provider.protocol).upstream_auth(&mut out, key);
    out.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    out
}

/// A header that belongs to one protocol's API.
fn protocol_header(name: &str) -> bool {
    name.starts_with("anthropic-")
        || name.starts_with("openai-")
        || name.starts_with("x-goog-")
        || name.starts_with("x-stainless-")
        || name == "content-type"
        || name == "accept"
}

fn copy_response_headers(from: &HeaderMap, to: &mut HeaderMap, body_changes: bool) {
    for (name, value) in from {
        let n = name.as_str();
        if llmgw_core::validate::is_hop_by_hop(n) || (body_changes && n == "content-length") {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

fn set_request_id(resp: &mut Response<ResponseBody>, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID), v);
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?;
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 3600.0)
        .map(Duration::from_secs_f64)
}

/// Reads an error body to pass back later, bounded in size and time.
async fn read_capped(resp: Response<Incoming>, deadline: Instant) -> Bytes {
    let read = async move {
        let mut out = Vec::new();
        let mut body = resp.into_body();
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            let room = MAX_ERROR_BODY.saturating_sub(out.len());
            out.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if room <= chunk.len() {
                break;
            }
        }
        Bytes::from(out)
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .min(Duration::from_secs(10));
    tokio::time::timeout(left, read).await.unwrap_or_default()
}

/// An error with its causes, which hyper keeps in `source()`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
