//! The LLM proxy: authenticate the client, pick the model's candidate
//! targets, send the client's body (with only `model` replaced) to each in
//! turn with retries and failover, and stream the answer back while usage
//! and the request log are worked out on the side.

mod admit;
mod anthropic;
mod attempt;
mod authenticate;
mod events;
pub use llmgw_core::body;
mod dialect;
mod duration;
mod end;
pub mod error;
mod estimate;
mod gemini;
mod generated;
mod head;
mod hold;
mod instream;
mod media;
mod multipart;
mod observe;
mod openai;
mod pool;
mod record;
mod respond;
mod sse;
mod state;
mod stream;
mod trace;
mod translate;
mod upload;
mod upstream;
mod usage;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use llmgw_core::routing;
use llmgw_core::rules::Facts;
use llmgw_core::table::{KeyRejection, Model, RoutingTable, Target};
use llmgw_core::Protocol;
use llmgw_proto::v1 as pb;
use serde_json::Value;

use self::authenticate::authenticate;
use self::dialect::{dialect, Dialect, Endpoint};
use self::error::{retryable_status, AttemptError, ErrorKind};
use self::observe::Observer;
use self::record::{Emitter, Finish};
pub use self::state::{RetryBudget, RouterState};
use self::stream::{ProxyBody, Relay};
pub use self::trace::{Tracing, SCOPE as TRACE_SCOPE};
use self::translate::{Transcoder, Translation};
use crate::config::RequestLogMode;
use crate::logs::wire::field;
use crate::logs::{FieldWriter, LogSink};
use crate::metrics::Metrics;
use crate::peer::{KeyMemo, Peer};
use crate::server::{RequestBody, ResponseBody};
use crate::table::TableHandle;
use llmgw_core::serving::{serving, Serving};
use llmgw_protocols::{EncoderOptions, Wire};

pub const REQUEST_ID: &str = "x-llmgw-request-id";

/// The request header that names the end user a request is for. Like the
/// client's other headers, it is passed on to the upstream.
pub const USER_ID: &str = "x-user-id";

/// Shared by all requests.
pub struct Proxy {
    table: TableHandle,
    state: RouterState,
    budget: RetryBudget,
    upstreams: upstream::Upstreams,
    out: Arc<Emitter>,
    node_id: String,
    /// Request-log rows for unauthenticated requests, by client address.
    unauthenticated_rows: crate::throttle::PerAddress,
    /// The buckets of every key, model and provider with limits (#15).
    pub(crate) limiter: Arc<crate::limits::Limiter>,
    /// The requests in flight, for the live view and cancel (#17).
    pub(crate) live: Arc<crate::live::Live>,
    /// The largest multipart upload (`--max-upload-bytes`).
    max_upload_bytes: u64,
    /// The temporary-file bytes of all uploads (`--max-upload-spool-bytes`).
    upload_spool: Arc<upload::Spool>,
}

pub use self::upload::DEFAULT_MAX_UPLOAD_SPOOL_BYTES;

/// The `Retry-After` of a 503 for a full upload spool, in seconds.
const UPLOAD_CAPACITY_RETRY_AFTER_S: u64 = 1;

/// Default of `--max-upload-bytes`: OpenAI's own limit for audio files.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 25 << 20;

/// Default of `--unauthenticated-log-per-minute`: request-log rows a
/// client address may cause per minute without a valid key (and at once).
pub const UNAUTHENTICATED_LOG_PER_MINUTE: u32 = 10;

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
    /// What the body's first pass read of it.
    head: &'a head::Head,
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
    fn approximate_input_tokens(&self) -> u64 {
        // The rules' count when they made one, else the body's first
        // pass's rough one (as for a tpm reservation).
        match self.input_tokens.get() {
            Some(n) => *n,
            None => self.head.approximate_input(),
        }
    }
    fn max_output_tokens(&self) -> Option<u64> {
        self.head.max_output()
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
    /// Boxed: see [`Finish::record`].
    record: Option<Box<pb::RequestLog>>,
    /// The record's headers, bodies and request strings, written as
    /// protobuf as they are seen.
    encoded: FieldWriter,
    started: Instant,
    /// The request's hold on its limits' buckets, until its response
    /// ends (it moves into the response body's [`Finish`]); boxed, as
    /// few requests have one and every request moves this struct.
    admission: Option<Box<crate::limits::Admission>>,
    /// The rate-limit headers, Retry-After and x-should-retry to answer with.
    limits: admit::LimitView,
    /// The request's spans, when it is traced (it moves into [`Finish`]
    /// with the admission).
    trace: Option<Box<trace::RequestTrace>>,
    /// The request's entry among those in flight (#17), from when its key
    /// and model are known; it moves into a streamed response's body.
    live: Option<crate::live::Registration>,
    /// An audio or image request: what its record's quantities and its
    /// form are read from at the end (it moves into [`Finish`]).
    media: Option<Box<media::MediaRequest>>,
    /// The task reading a multipart upload, stopped when the request's
    /// handler is done.
    pumping: Option<upload::Pumping>,
}

impl Pending {
    fn record(&mut self) -> &mut pb::RequestLog {
        self.record.get_or_insert_with(Default::default)
    }

    fn take(&mut self) -> (Box<pb::RequestLog>, FieldWriter) {
        (
            self.record.take().unwrap_or_default(),
            std::mem::take(&mut self.encoded),
        )
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut r) = self.record.take() {
            record::cancelled_by_client(&mut r);
            r.latency_ms = self.started.elapsed().as_millis() as u64;
            r.ttfb_ms = r.latency_ms;
            if r.error.is_empty() {
                r.error = "client disconnected before the response started".into();
            }
            if r.usage_source.is_empty() {
                r.usage_source = "none".into();
            }
            self.sink
                .emit_traced(r, std::mem::take(&mut self.encoded), self.trace.take());
        }
    }
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
            unauthenticated_rows: crate::throttle::PerAddress::new(
                UNAUTHENTICATED_LOG_PER_MINUTE,
                crate::throttle::ADDRESSES,
            ),
            limiter: crate::limits::Limiter::new(),
            live: crate::live::Live::new(),
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            upload_spool: upload::Spool::new(DEFAULT_MAX_UPLOAD_SPOOL_BYTES),
        }
    }

    /// Sets the temporary-file bytes all uploads may hold at once.
    #[must_use]
    pub fn with_max_upload_spool_bytes(mut self, bytes: u64) -> Self {
        self.upload_spool = upload::Spool::new(bytes);
        self
    }

    /// Sets the largest multipart upload, in bytes.
    #[must_use]
    pub fn with_max_upload_bytes(mut self, bytes: u64) -> Self {
        self.max_upload_bytes = bytes;
        self
    }

    /// Shares the registry of requests in flight that the live client reads.
    #[must_use]
    pub fn with_live(mut self, live: Arc<crate::live::Live>) -> Self {
        self.live = live;
        self
    }

    /// Shares the limiter that the quota client feeds.
    #[must_use]
    pub fn with_limiter(mut self, limiter: Arc<crate::limits::Limiter>) -> Self {
        self.limiter = limiter;
        self
    }

    /// Sets how many request-log rows a client address may cause per
    /// minute (and at once) with requests refused before authentication.
    /// The rest are only counted in metrics.
    #[must_use]
    pub fn with_unauthenticated_log_rate(mut self, per_minute: u32) -> Self {
        self.unauthenticated_rows =
            crate::throttle::PerAddress::new(per_minute, crate::throttle::ADDRESSES);
        self
    }

    /// Traces requests with OpenTelemetry (#19).
    #[must_use]
    pub fn with_tracing(mut self, tracing: Tracing) -> Self {
        if let Some(out) = Arc::get_mut(&mut self.out) {
            out.tracing = Some(tracing);
        }
        self
    }

    /// Sets how long a response's end waits for its record to reach the
    /// spool ([`hold`]); zero turns the wait off.
    #[must_use]
    pub fn with_spool_wait(mut self, wait: Duration) -> Self {
        if let Some(out) = Arc::get_mut(&mut self.out) {
            out.spool_wait = wait;
        }
        self
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

    /// Serves one proxied request from a client connection: the answer,
    /// then its head kept back for its end when that is near
    /// ([`end::with_end`]). Chained, not awaited in turn in one `async fn`,
    /// so that the second step's state takes the first's room: the server
    /// moves the handler's future a few times, and a larger one costs a
    /// slower copy each time (docs/benchmarks.md, "A request's state
    /// crossing 2 KiB").
    pub fn handle<'a>(
        &'a self,
        req: Request<RequestBody>,
        client: &'a Peer,
    ) -> impl std::future::Future<Output = Response<ResponseBody>> + Send + 'a {
        use futures::FutureExt;
        self.answer(req, client).then(end::with_end)
    }

    /// The answer to one proxied request.
    async fn answer(&self, req: Request<RequestBody>, client: &Peer) -> Response<ResponseBody> {
        let id = uuid::Uuid::now_v7().to_string();
        let path = req.uri().path();
        if path == "/v1/models" || path == "/v1beta/models" {
            let mut resp = self.models(&req, &client.keys);
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
            encoded.string(field::CLIENT_IP, &client.ip);
            let user_agent = req.headers().get(header::USER_AGENT);
            encoded.string(
                field::USER_AGENT,
                user_agent.and_then(|v| v.to_str().ok()).unwrap_or_default(),
            );
            encoded.string(field::PROTOCOL, client_protocol_name(endpoint));
            encoded.string(field::PATH, path);
            record::log_headers(&mut encoded, field::REQUEST_HEADERS, req.headers());
        }
        // The request's trace: ours when it is sampled, else the client's.
        let trace = self
            .out
            .tracing
            .as_ref()
            .and_then(|t| trace::RequestTrace::begin(t, req.headers(), endpoint));
        let trace_id = match &trace {
            Some(t) => Some(t.trace_id),
            None => trace::client_trace_id(req.headers()),
        };
        let mut pending = Pending {
            sink: Arc::clone(&self.out),
            record: Some(Box::new(pb::RequestLog {
                id: id.clone(),
                node_id: self.node_id.clone(),
                time_ms: now_ms(),
                trace_id: trace_id
                    .map(llmgw_telemetry::trace_id_hex)
                    .unwrap_or_default(),
                ..Default::default()
            })),
            encoded,
            started,
            admission: None,
            limits: admit::LimitView::default(),
            trace,
            live: None,
            media: None,
            pumping: None,
        };
        // Boxed: the proxying future is several KiB (the attempt, the
        // upstream exchange, the response), and the server moves the
        // handler's future a few times before polling it; a box moves once.
        let mut resp =
            match Box::pin(self.proxy(req, endpoint, d, &client.keys, &mut pending)).await {
                Ok(resp) => resp,
                Err((kind, message)) => {
                    if kind == ErrorKind::UploadCapacity {
                        pending.limits.retry_after_s = Some(UPLOAD_CAPACITY_RETRY_AFTER_S);
                    }
                    let r = pending.record();
                    r.status = u32::from(kind.status().as_u16());
                    r.error.clone_from(&message);
                    r.set_outcome(kind.outcome());
                    let granted = !r.origin.is_empty();
                    let hold = if let Some(reason) = kind.unauthenticated().filter(|_| !granted) {
                        self.refused_unauthenticated(&mut pending, reason, &client.ip)
                    } else {
                        self.finish_plain(&mut pending)
                    };
                    // An admin's cancel: the log says who; the client is told
                    // only that an administrator did.
                    let shown = if kind == ErrorKind::CancelledByAdmin {
                        crate::live::CLIENT_CANCEL_MESSAGE
                    } else {
                        message.as_str()
                    };
                    hold::held(self.error(d, kind, shown, &id), hold)
                }
            };
        if let Some(p) = pending.pumping.take() {
            p.stop().await;
        }
        pending.limits.write(endpoint, resp.headers_mut());
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

    /// A request refused before authentication: always counted, logged as
    /// a row only while its address is within its rate (anonymous traffic
    /// must not fill the log and the spool).
    fn refused_unauthenticated(
        &self,
        pending: &mut Pending,
        reason: &str,
        client_ip: &str,
    ) -> hold::Hold {
        let metrics = &self.out.metrics;
        metrics
            .unauthenticated
            .get_or_create(&crate::metrics::ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
        if self.unauthenticated_rows.allow(client_ip) {
            return self.finish_plain(pending);
        }
        metrics.unauthenticated_rows_suppressed.inc();
        let (mut r, _) = pending.take();
        r.latency_ms = pending.started.elapsed().as_millis() as u64;
        r.ttfb_ms = r.latency_ms;
        metrics.observe(&r);
        hold::Hold::none()
    }

    /// Logs a request that ended without a proxied body; the answer's body
    /// is to be held on what this returns ([`hold::held`]).
    #[must_use]
    fn finish_plain(&self, pending: &mut Pending) -> hold::Hold {
        let (mut r, mut encoded) = pending.take();
        if let Some(m) = pending.media.take() {
            m.log_form(&mut encoded);
            m.mark_stream(&mut r);
        }
        r.latency_ms = pending.started.elapsed().as_millis() as u64;
        r.ttfb_ms = r.latency_ms;
        if r.usage_source.is_empty() {
            r.usage_source = "none".into();
        }
        self.out.emit_held(r, encoded, pending.trace.take())
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
    fn models(&self, req: &Request<RequestBody>, keys: &KeyMemo) -> Response<ResponseBody> {
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
            dialect(if gemini {
                Protocol::Gemini
            } else {
                Protocol::Anthropic
            }),
            req.headers(),
            req.uri().query(),
            req.extensions(),
            keys,
            None,
        ) {
            Ok((k, _)) => k,
            Err((kind, msg, _)) => return self.error(d, kind, &msg, ""),
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
        req: Request<RequestBody>,
        endpoint: Endpoint,
        d: &'static dyn Dialect,
        keys: &KeyMemo,
        pending: &mut Pending,
    ) -> Result<Response<ResponseBody>, (ErrorKind, String)> {
        let table = self.table.load().ok_or((
            ErrorKind::NotReady,
            "the gateway has no configuration yet".to_string(),
        ))?;
        pending.record().snapshot_version = table.version;
        let (key, grant) = match authenticate(
            &table,
            d,
            req.headers(),
            req.uri().query(),
            req.extensions(),
            keys,
            Some(&self.live.grants),
        ) {
            Ok(a) => a,
            Err((kind, message, grant)) => {
                // A grant whose key was refused: still the replay's or the
                // playground's request, logged (not rate-limited as
                // anonymous traffic) and linked.
                if let Some(g) = grant {
                    let r = pending.record();
                    r.key = g.key;
                    r.origin = g.origin;
                    r.replay_of = g.replay_of;
                }
                return Err((kind, message));
            }
        };
        let r = pending.record();
        r.key.clone_from(&key.name);
        // A replay's or playground's request: what the grant says, never
        // what a client header could.
        if let Some(g) = grant {
            r.origin = g.origin;
            r.replay_of = g.replay_of;
        }
        // Gemini names the model in the path.
        let path_model = Endpoint::from_request(req.uri().path(), None)
            .and_then(|(_, m)| m)
            .map(str::to_string);

        let (parts, incoming) = req.into_parts();
        let log_bodies = self.out.mode.bodies() && table.settings.log_bodies && key.log_bodies;
        let cap = table.settings.log_body_max_bytes;
        // A multipart upload streams through its tee (`upload`): only its
        // `model` part is awaited here; its form stands in for the body
        // for rules, the first pass and the log.
        let mut upload = None;
        let raw = if endpoint.multipart() {
            let (mut up, pumping) = upload::Upload::start(
                &parts.headers,
                incoming,
                self.max_upload_bytes,
                &self.upload_spool,
            )
            .map_err(|f| (f.kind, f.message))?;
            pending.pumping = Some(pumping);
            let part = up.model().await.map_err(|f| (f.kind, f.message))?;
            let form = Bytes::from(up.summary().to_string());
            upload = Some((up, part));
            form
        } else {
            read_body(
                parts.headers.get(header::CONTENT_LENGTH),
                incoming,
                table.settings.max_request_body_bytes,
            )
            .await?
        };
        if log_bodies && upload.is_none() {
            record::log_request_body(&mut pending.encoded, &raw, cap);
        }
        if let Some(t) = &mut pending.trace {
            // Content goes to the collector only where the log would keep
            // it: not for a key (or a gateway) that does not log bodies,
            // nor an upload's.
            if log_bodies && upload.is_none() {
                t.capture_input(&raw, cap);
            } else {
                t.content = None;
            }
        }
        if endpoint.api().media() {
            pending.media = Some(Box::new(media::MediaRequest {
                endpoint,
                json: upload.is_none().then(|| raw.clone()),
                form: upload.as_ref().map(|(u, _)| u.form()),
                audio: upload.as_ref().map(|(u, _)| u.audio()),
                log_cap: log_bodies.then_some(cap),
            }));
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
        let mut head = head::Head::parse(&raw).map_err(|e| match e {
            head::HeadError::Syntax(e) => (
                ErrorKind::BadRequest,
                format!("the request body is not valid JSON: {e}"),
            ),
            head::HeadError::NotAnObject => not_object(),
        })?;
        // Whom the request is for, for the log.
        if self.out.mode.records() {
            // UTF-8, not only visible ASCII: a name may be "zoë".
            let header = parts
                .headers
                .get(USER_ID)
                .and_then(|v| std::str::from_utf8(v.as_bytes()).ok());
            let user = head::end_user(header, &head, endpoint.protocol());
            pending.encoded.string(field::USER, user);
        }
        // An upload's `stream` is a form field, "true" (when it came before
        // the model; the record reads the whole form at its end).
        let streaming = head.stream
            || endpoint.path_streams()
            || upload
                .as_ref()
                .is_some_and(|(u, _)| media::form_streams(&u.summary()));
        let Some(model_name) = path_model.clone().or(head.model.take()) else {
            return Err(not_object());
        };
        {
            let r = pending.record();
            r.model.clone_from(&model_name);
            r.stream = streaming;
        }
        if let Some(t) = &mut pending.trace {
            t.params = trace::Params {
                max_tokens: head.max_output(),
                temperature: head.temperature,
                top_p: head.top_p,
            };
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
        if let Some(why) = model.type_refusal(endpoint.api()) {
            return Err((ErrorKind::BadRequest, why));
        }
        // In flight from here: one entry, removed when the request ends.
        let started_ms = pending.record().time_ms;
        pending.live = Some(self.live.register(crate::live::Entry::new(
            pending.record().id.clone(),
            key.name.clone(),
            model_name.clone(),
            client_protocol_name(endpoint),
            streaming,
            started_ms,
        )));

        let tokenizer_model = model
            .targets
            .first()
            .map_or(model_name.as_str(), |t| t.upstream_model.as_str());
        let facts = RequestFacts {
            headers: &parts.headers,
            raw: &raw,
            head: &head,
            tree: std::cell::OnceCell::new(),
            key: &key.name,
            tokenizer_model,
            input_tokens: std::cell::OnceCell::new(),
        };
        let tokens = Self::tokens_to_reserve(&table, key, model, endpoint, &facts);
        let live = pending.live.as_ref().map(|l| Arc::clone(l.entry()));
        crate::live::or_cancelled(
            live.as_deref(),
            self.admit(&table, key, model, tokens, pending),
        )
        .await
        .map_err(|m| (ErrorKind::CancelledByAdmin, m))??;
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
            let n = translate::count_locally(tokenizer_model, &t).await;
            return Ok(self.count_tokens_locally(endpoint, n, log_bodies.then_some(cap), pending));
        }
        self.attempts(
            Call {
                table: &table,
                model,
                endpoint,
                dialect: d,
                headers: &parts.headers,
                raw: &raw,
                model_spans: head.model_spans.as_slice(),
                path_model: path_model.as_deref(),
                include_usage: head.include_usage,
                streaming,
                order: &plan.order,
                log_bodies,
                tokens,
                translation: std::sync::OnceLock::new(),
                upload: upload.as_ref().map(|(u, p)| (u, p)),
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
        let hold = self.finish_plain(pending);
        let mut resp = Response::new(full(body));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        hold::held(resp, hold)
    }
}

/// One request's routing inputs.
struct Call<'a> {
    table: &'a RoutingTable,
    model: &'a Model,
    endpoint: Endpoint,
    dialect: &'static dyn Dialect,
    headers: &'a HeaderMap,
    raw: &'a Bytes,
    /// Where the body's top-level `model` values are ([`head::Head`]).
    model_spans: &'a [std::ops::Range<usize>],
    /// The client asked for a usage chunk (`stream_options.include_usage`).
    include_usage: bool,
    streaming: bool,
    order: &'a [usize],
    log_bodies: bool,
    /// The tokens a tpm limit reserves for this request (0 when none applies).
    tokens: u64,
    /// The model named in the path (Gemini).
    path_model: Option<&'a str>,
    /// The client's request in the intermediate form, decoded for the
    /// first translated target and kept for the others.
    translation: std::sync::OnceLock<Translation>,
    /// A multipart upload, and where its `model` value is: each attempt
    /// replays it with that value replaced.
    upload: Option<(&'a upload::Upload, &'a multipart::ModelPart)>,
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

/// Reads a JSON request body whole, up to `limit` bytes (413 beyond it, at
/// once when its `content-length` says so).
async fn read_body(
    content_length: Option<&HeaderValue>,
    incoming: RequestBody,
    limit: u64,
) -> Result<Bytes, (ErrorKind, String)> {
    if let Some(len) = content_length
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
    Ok(
        Limited::new(incoming, usize::try_from(limit).unwrap_or(usize::MAX))
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
                } else if let Some(slow) = e.downcast_ref::<llmgw_listener::SlowBody>() {
                    (ErrorKind::BodyTimeout, slow.to_string())
                } else {
                    (
                        ErrorKind::BadRequest,
                        "could not read the request body".to_string(),
                    )
                }
            })?
            .to_bytes(),
    )
}

/// The client's protocol as the request log names it: the wire format of
/// a chat-like API, else `openai`.
fn client_protocol_name(endpoint: Endpoint) -> &'static str {
    endpoint.api().wire().map_or("openai", |w| w.as_str())
}

fn set_request_id(resp: &mut Response<ResponseBody>, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID), v);
    }
}
#[cfg(test)]
mod sizes {
    //! The request's state is moved several times per request (into the
    //! response body, into its box, out to the spool), and a move copies
    //! the whole of it: what few requests have, and the record itself,
    //! live behind a box (docs/benchmarks.md, "A request's state crossing
    //! 2 KiB" and "The record boxed from the start").

    use std::mem::size_of;

    #[test]
    fn the_request_state_that_moves_stays_small() {
        assert!(
            size_of::<super::Pending>() <= 256,
            "{}",
            size_of::<super::Pending>()
        );
        let finish = size_of::<super::record::Finish>();
        assert!(finish <= 320, "{finish}");
        let body = size_of::<super::stream::ProxyBody>();
        assert!(body <= 1024, "{body}");
    }
}
