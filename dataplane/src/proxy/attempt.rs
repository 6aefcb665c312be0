//! Attempts: the upstream body for each target (passed through or
//! translated), sending it with a connect and first-byte timeout (an
//! upload's from when its body has all been sent), retries
//! on the same target, failover to the next, the retry budget and the
//! shared deadline. Nothing is retried once a response has started.

use super::respond::{copy_response_headers, translated_error};
use super::upstream::UpstreamBody;
#[allow(clippy::wildcard_imports)]
use super::*;

/// Largest upstream error body kept to pass back to the client.
pub(super) const MAX_ERROR_BODY: usize = 256 * 1024;

/// The outcome of the last failed attempt, passed back when all fail.
pub(super) enum LastFailure {
    Upstream {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        /// For a translated attempt: the provider's protocol and the
        /// fields a lenient translation left out.
        translated: Option<(llmgw_core::Protocol, Vec<String>)>,
    },
    Error(AttemptError),
}

impl Proxy {
    pub(super) async fn attempts(
        &self,
        call: Call<'_>,
        pending: &mut Pending,
    ) -> Result<Response<ResponseBody>, (ErrorKind, String)> {
        let settings = &call.table.settings;
        let deadline = pending.started + settings.deadline;
        let mut last: Option<LastFailure> = None;
        // The last provider limit that skipped a target.
        let mut limited: Option<crate::limits::Refusal> = None;
        let mut sent = 0u32;
        // The request's entry among those in flight: each attempt is noted
        // there, and its awaits end at an admin's cancel.
        let live = pending.live.as_ref().map(|l| Arc::clone(l.entry()));
        let live = live.as_deref();
        self.budget.deposit();
        'targets: for (pos, &ti) in call.order.iter().enumerate() {
            let target = &call.model.targets[ti];
            let others_left = pos + 1 < call.order.len();
            let key = &target.key;
            let prepared = match serving(call.endpoint.api(), target.provider.protocol) {
                Serving::PassThrough if call.upload.is_some() => Prepared {
                    // Sent from the upload's tee by `send`.
                    body: Bytes::new(),
                    path: call.endpoint.upstream_path(&target.upstream_model),
                    wires: None,
                    dropped: Vec::new(),
                },
                Serving::PassThrough => {
                    let Some(body) = self.upstream_body(&call, target) else {
                        return Err((
                            ErrorKind::BadRequest,
                            "the request body cannot be rewritten".into(),
                        ));
                    };
                    Prepared {
                        body,
                        path: call.endpoint.upstream_path(&target.upstream_model),
                        wires: None,
                        dropped: Vec::new(),
                    }
                }
                Serving::Translate { from, to } => {
                    let (from, to) = (translate::wire(from), translate::wire(to));
                    let t = call.translation(from)?;
                    let (body, dropped) =
                        t.encode(to, &target.upstream_model, call.model.default_max_tokens)?;
                    // The target's default parameters go into the body in
                    // the upstream's protocol, where the request lacks them.
                    let body = body::fill_missing(&body, defaults(&call, target)).unwrap_or(body);
                    Prepared {
                        body,
                        path: t.upstream_path(to, &target.upstream_model).into(),
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
                    crate::warn_limited!(model = %call.model.name, "retry budget exhausted");
                    break 'targets;
                }
                if Instant::now() >= deadline {
                    last = Some(LastFailure::Error(AttemptError::Deadline));
                    break 'targets;
                }
                // The provider's limits, per attempt: a refusal skips the
                // target like an open breaker.
                let provider_admission = match self.admit_provider(&call, target) {
                    Ok(a) => a,
                    Err(r) => {
                        if let Some(t) = &mut pending.trace {
                            let (start, _) = t.attempt();
                            t.attempted(start, &target.provider, Some("limited"));
                        }
                        let start_offset_ms = pending.started.elapsed().as_millis() as u64;
                        pending.record().attempts.push(pb::Attempt {
                            provider: target.provider.name.clone(),
                            upstream_model: target.upstream_model.clone(),
                            error: format!("limited by {}", r.label()),
                            start_offset_ms,
                            ..Default::default()
                        });
                        limited = Some(r);
                        continue 'targets;
                    }
                };
                tries += 1;
                sent += 1;
                if let Some(l) = live {
                    l.attempt(
                        &target.provider.name,
                        &target.upstream_model,
                        target.provider.protocol.as_str(),
                    );
                }
                let attempt_started = Instant::now();
                let (span, traceparent) = match &pending.trace {
                    Some(t) => {
                        let (span, header) = t.attempt();
                        (Some(span), header.map(|h| (h, t.has_parent())))
                    }
                    None => (None, None),
                };
                let result = match crate::live::or_cancelled(
                    live,
                    self.send(
                        &call,
                        target,
                        &prepared,
                        upstream_body.clone(),
                        deadline,
                        traceparent,
                    ),
                )
                .await
                {
                    Ok(r) => r,
                    Err(message) => {
                        // Dropping the exchange aborted the upstream request.
                        if let (Some(t), Some(span)) = (&mut pending.trace, span) {
                            t.attempted(span, &target.provider, Some("cancelled"));
                        }
                        return Err(self.cancelled_attempt(
                            pending,
                            target,
                            attempt_started,
                            sent,
                            message,
                        ));
                    }
                };
                let latency_ms = attempt_started.elapsed().as_millis() as u64;
                if let (Some(t), Some(span)) = (&mut pending.trace, span) {
                    let error_type = result.as_ref().err().map(AttemptError::error_type);
                    t.attempted(span, &target.provider, error_type);
                }
                let mut attempt = pb::Attempt {
                    provider: target.provider.name.clone(),
                    upstream_model: target.upstream_model.clone(),
                    latency_ms,
                    start_offset_ms: attempt_started.duration_since(pending.started).as_millis()
                        as u64,
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
                            .record(key, !retry, ok.then(|| attempt_started.elapsed()));
                        if !retry {
                            // Success, or an error the client must see as it is.
                            pending.record().attempts.push(attempt);
                            if let Some(p) = provider_admission {
                                pending.limits.rates.merge(&p.rates);
                                match pending.admission.as_mut() {
                                    Some(a) => a.absorb(p),
                                    None => pending.admission = Some(Box::new(p)),
                                }
                            }
                            return Ok(self
                                .respond(&call, target, &prepared, resp, pending, deadline)
                                .await);
                        }
                        let retry_after = retry_after(resp.headers());
                        let headers = resp.headers().clone();
                        // Recorded before its error body is read, so that a
                        // cancel or a client leaving meanwhile keeps it.
                        attempt.error = format!("upstream answered {status}");
                        pending.record().attempts.push(attempt);
                        let mut body = crate::live::or_cancelled(live, read_capped(resp, deadline))
                            .await
                            .map_err(|m| stopped_by_admin(pending, sent, m))?;
                        let mut client_status = status;
                        if let Some((upstream, client)) = prepared.wires {
                            (client_status, body) =
                                translated_error(upstream, client, status, &body);
                        }
                        last = Some(LastFailure::Upstream {
                            status: client_status,
                            headers,
                            body,
                            translated: prepared
                                .wires
                                .map(|_| (target.provider.protocol, prepared.dropped.clone())),
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
                                    // No slot or reservation held asleep.
                                    drop(provider_admission);
                                    crate::live::or_cancelled(live, tokio::time::sleep(wait))
                                        .await
                                        .map_err(|m| stopped_by_admin(pending, sent, m))?;
                                    continue;
                                }
                                _ => break 'targets,
                            }
                        }
                    }
                    Err(e) => {
                        // A failed upload is the client's doing.
                        if !matches!(e, AttemptError::Upload(..)) {
                            self.state.record(key, false, None);
                        }
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
                drop(provider_admission);
                crate::live::or_cancelled(live, tokio::time::sleep(delay))
                    .await
                    .map_err(|m| stopped_by_admin(pending, sent, m))?;
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
                translated,
            }) => {
                let r = pending.record();
                r.status = u32::from(status.as_u16());
                r.error = format!("every attempt failed; the last upstream answered {status}");
                if let Some((protocol, dropped)) = &translated {
                    let r = pending.record.get_or_insert_with(Default::default);
                    record::log_translation(r, &mut pending.encoded, *protocol, dropped);
                }
                if call.log_bodies {
                    let cap = call.table.settings.log_body_max_bytes;
                    record::log_response_body(&mut pending.encoded, &body, cap);
                }
                self.log_headers(&mut pending.encoded, field::RESPONSE_HEADERS, &headers);
                let hold = self.finish_plain(pending);
                let mut resp = Response::new(full(body));
                *resp.status_mut() = status;
                match translated {
                    // A translated error: the client's content type, and
                    // the fields left out; not the provider's own headers.
                    Some((_, dropped)) => {
                        resp.headers_mut().insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        );
                        if let Some(v) = super::respond::dropped_header(&dropped) {
                            resp.headers_mut().insert(super::respond::DROPPED_FIELDS, v);
                        }
                        if let Some(v) = headers.get(header::RETRY_AFTER) {
                            resp.headers_mut().insert(header::RETRY_AFTER, v.clone());
                        }
                    }
                    // The kept body may be cut, so its length is recomputed.
                    None => copy_response_headers(&headers, resp.headers_mut(), true),
                }
                Ok(super::hold::held(resp, hold))
            }
            Some(LastFailure::Error(AttemptError::Upload(kind, message))) => Err((kind, message)),
            Some(LastFailure::Error(e)) => Err((
                e.kind(),
                format!("every attempt failed; the last: {}", e.describe()),
            )),
            // Every target was skipped by its provider's limits.
            None if limited.is_some() => Err(limited
                .as_ref()
                .map_or((ErrorKind::LimitExceeded, String::new()), |r| {
                    self.refused(r, pending)
                })),
            None => Err((
                ErrorKind::UpstreamUnavailable,
                "the retry budget is exhausted; the upstream is failing for many requests".into(),
            )),
        }
    }

    /// An attempt an admin cancelled before its response: noted in the
    /// record, and the error the client gets.
    fn cancelled_attempt(
        &self,
        pending: &mut Pending,
        target: &Target,
        started: Instant,
        sent: u32,
        message: String,
    ) -> (ErrorKind, String) {
        let start_offset_ms = started.duration_since(pending.started).as_millis() as u64;
        let r = pending.record();
        r.attempts.push(pb::Attempt {
            provider: target.provider.name.clone(),
            upstream_model: target.upstream_model.clone(),
            latency_ms: started.elapsed().as_millis() as u64,
            start_offset_ms,
            error: message.clone(),
            ..Default::default()
        });
        r.retries = sent.saturating_sub(1);
        r.provider.clone_from(&target.provider.name);
        r.upstream_model.clone_from(&target.upstream_model);
        (ErrorKind::CancelledByAdmin, message)
    }

    /// The body for one target: the client's bytes with only `model`
    /// replaced, plus a usage request for OpenAI chat streams if the
    /// provider wants it and the client did not ask, plus the target's
    /// default parameters the body lacks (none configured: nothing added,
    /// the bytes stay the client's).
    pub(super) fn upstream_body(&self, call: &Call<'_>, target: &Target) -> Option<Bytes> {
        let out = if call.endpoint.model_in_path() {
            // Gemini: the model is in the path, the body passes unchanged.
            call.raw.clone()
        } else {
            // Where the body's first pass found `model`.
            let mut out =
                body::replace_model_at(call.raw, call.model_spans, &target.upstream_model)?;
            if wants_usage_chunk(call, target) {
                out = body::request_stream_usage(&out)?;
            }
            out
        };
        body::fill_missing(&out, defaults(call, target))
    }

    pub(super) async fn send(
        &self,
        call: &Call<'_>,
        target: &Target,
        prepared: &Prepared,
        body: Bytes,
        deadline: Instant,
        traceparent: Option<(HeaderValue, bool)>,
    ) -> Result<Response<Incoming>, AttemptError> {
        let settings = &call.table.settings;
        let provider = &target.provider;
        let (pool, dest) = self.upstreams.get(
            &provider.name,
            &provider.base_url,
            &prepared.path,
            settings.connect_timeout,
            provider.proxy.as_ref(),
        )?;
        let left = deadline.saturating_duration_since(Instant::now());
        let (limit, by_deadline) = if left < settings.first_byte_timeout {
            (left, true)
        } else {
            (settings.first_byte_timeout, false)
        };
        // An upload's attempt hears how far its body has been sent.
        let sending = call
            .upload
            .map(|_| Arc::new(tokio::sync::watch::channel(upload::Sending::default()).0));
        // Made where it is awaited (a closure, not one future moved into
        // either arm): an attempt's future holds one exchange.
        let (pool, dest, sending_ref, traceparent) = (&pool, &*dest, &sending, &traceparent);
        let exchange = move || async move {
            // An HTTP/2 refusal (GOAWAY, REFUSED_STREAM) means the request
            // was not processed: it is sent again at once on another
            // connection, up to twice, within this attempt.
            // The headers are built for each send rather than kept for a
            // resend: a resend is rare, a copy would be made every time.
            let mut resends = 0;
            loop {
                let mut request = Request::new(match call.upload {
                    Some((upload, part)) => UpstreamBody::Replay(upload.replay(
                        part,
                        &target.upstream_model,
                        sending_ref.clone(),
                    )),
                    None => UpstreamBody::Full(Full::new(body.clone())),
                });
                // The URI (and HTTP/1's `Host`) is the pool's to set.
                *request.method_mut() = Method::POST;
                *request.headers_mut() =
                    upstream_headers(call.headers, target, prepared.wires.is_some());
                if let Some((v, client_state)) = traceparent {
                    // The attempt's span is the upstream's parent; a
                    // client's `tracestate` goes on only with its trace.
                    let h = request.headers_mut();
                    h.insert(super::trace::TRACEPARENT, v.clone());
                    if !client_state {
                        h.remove(&super::trace::TRACESTATE);
                    }
                }
                match pool.send(dest, request).await {
                    Err(e) if resends < 2 && upstream::is_safe_to_resend(&e) => resends += 1,
                    done => return done,
                }
            }
        };
        let outcome = match (call.upload, &sending) {
            (Some((upload, _)), Some(sending)) => {
                // An upstream answers once it has the whole upload: the
                // first-byte clock starts when this attempt's body has
                // all been sent (a slow client's upload, or a failover's
                // resend of a large one, may take longer than the
                // timeout); the deadline runs throughout. Boxed: an
                // upload's clocks would make every attempt's future (and
                // so every request's) larger.
                let raced = Box::pin(async {
                    let first_byte = upload_clock(
                        sending.subscribe(),
                        settings.first_byte_timeout,
                        target.provider.timeout,
                    );
                    tokio::select! {
                        biased;
                        // An upload that fails (too large, too slow) ends
                        // the attempt at once, whatever the upstream does
                        // with the cut body.
                        f = upload.failed() => Err(AttemptError::Upload(f.kind, f.message)),
                        // The exchange fails of the upload's failure too (its
                        // body ends in the error), and on another thread
                        // that can land between the two polls above: an
                        // exchange that fails once the upload has is the
                        // upload's failure.
                        r = exchange() => match (&r, upload.failure()) {
                            (Err(_), Some(f)) => Err(AttemptError::Upload(f.kind, f.message)),
                            _ => Ok(r),
                        },
                        () = tokio::time::sleep(left) => Err(AttemptError::Deadline),
                        e = first_byte => Err(e),
                    }
                })
                .await;
                Ok(raced?)
            }
            _ => tokio::time::timeout(limit, exchange()).await,
        };
        match outcome {
            Err(_) if by_deadline => Err(AttemptError::Deadline),
            Err(_) => Err(AttemptError::FirstByteTimeout),
            Ok(Err(e)) if e.is_connect() => Err(AttemptError::Connect(error_chain(&e))),
            Ok(Err(e)) => Err(AttemptError::Request(error_chain(&e))),
            Ok(Ok(resp)) => Ok(resp),
        }
    }
}

/// The first-byte clock of an upload's attempt: it starts once the body
/// has all been sent, and ends the attempt when no answer has come
/// `first_byte` later. While the body is being sent, an upstream that
/// takes none of it for `idle` (the response's idle timeout) ends the
/// attempt too; waiting for the client's next bytes does not count.
async fn upload_clock(
    mut sending: tokio::sync::watch::Receiver<upload::Sending>,
    first_byte: Duration,
    idle: Duration,
) -> AttemptError {
    loop {
        let now = *sending.borrow_and_update();
        if now.done {
            // A resend within the exchange (an HTTP/2 refusal) starts the
            // body again, and with it this clock; other news of a sent
            // body changes nothing.
            let until = tokio::time::Instant::now() + first_byte;
            loop {
                tokio::select! {
                    r = sending.changed() => {
                        if r.is_err() {
                            tokio::time::sleep_until(until).await;
                            return AttemptError::FirstByteTimeout;
                        }
                        if !sending.borrow().done {
                            break;
                        }
                    }
                    () = tokio::time::sleep_until(until) => return AttemptError::FirstByteTimeout,
                }
            }
            continue;
        }
        let progress = sending.changed();
        if now.holding {
            tokio::select! {
                r = progress => {
                    if r.is_err() {
                        // The body is gone: the exchange ends on its own.
                        std::future::pending::<()>().await;
                    }
                }
                () = tokio::time::sleep(idle) => return AttemptError::UploadStalled,
            }
        } else if progress.await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// An admin's cancel between attempts (reading an error body, or waiting
/// to retry): the record says how many were sent and which target was
/// last, as when every attempt fails.
fn stopped_by_admin(pending: &mut Pending, sent: u32, message: String) -> (ErrorKind, String) {
    let r = pending.record();
    r.retries = sent.saturating_sub(1);
    if let Some(a) = r.attempts.last() {
        r.provider.clone_from(&a.provider);
        r.upstream_model.clone_from(&a.upstream_model);
    }
    (ErrorKind::CancelledByAdmin, message)
}

/// The default parameters a request to `target` gets: the target's, except
/// on token counting endpoints, which take no generation parameters.
fn defaults<'t>(call: &Call<'_>, target: &'t Target) -> &'t [(String, Bytes)] {
    match call.endpoint.api() {
        llmgw_core::serving::ClientApi::CountTokens
        | llmgw_core::serving::ClientApi::GeminiCountTokens => &[],
        _ => &target.defaults,
    }
}

/// What one target is sent: the body, the path under its base URL, and
/// for a translated request the (upstream, client) wire formats and the
/// fields a lenient translation left out.
pub(super) struct Prepared {
    pub(super) body: Bytes,
    pub(super) path: std::borrow::Cow<'static, str>,
    pub(super) wires: Option<(Wire, Wire)>,
    pub(super) dropped: Vec<String>,
}

pub(super) fn wants_usage_chunk(call: &Call<'_>, target: &Target) -> bool {
    call.endpoint == Endpoint::ChatCompletions
        && call.streaming
        && target.provider.stream_usage
        && !call.include_usage
}

/// Headers that describe one hop, or that the gateway sets itself.
pub(super) fn dropped_request_header(name: &str) -> bool {
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
pub(super) fn upstream_headers(client: &HeaderMap, target: &Target, translated: bool) -> HeaderMap {
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
    // The one rule the control plane's own calls follow too.
    llmgw_core::upstream::insert_credential(
        &mut out,
        target.provider.protocol,
        target.provider.credential.as_ref(),
    );
    out.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    out
}

/// A header that belongs to one protocol's API.
pub(super) fn protocol_header(name: &str) -> bool {
    name.starts_with("anthropic-")
        || name.starts_with("openai-")
        || name.starts_with("x-goog-")
        || name.starts_with("x-stainless-")
        || name == "content-type"
        || name == "accept"
}

pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?;
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 3600.0)
        .map(Duration::from_secs_f64)
}

/// Reads an error body to pass back later, bounded in size and time.
pub(super) async fn read_capped(resp: Response<Incoming>, deadline: Instant) -> Bytes {
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
pub(super) use llmgw_core::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    /// A resend within the exchange starts the body, and so the first-byte
    /// clock, again: the clock runs from the resent body's end, not the
    /// first one's. News of a body still sent changes nothing.
    #[tokio::test]
    async fn a_resent_body_starts_the_first_byte_clock_again() {
        let (tx, rx) = tokio::sync::watch::channel(upload::Sending {
            pieces: 1,
            holding: true,
            done: true,
        });
        let first_byte = Duration::from_millis(300);
        let started = Instant::now();
        let clock = tokio::spawn(upload_clock(rx, first_byte, Duration::from_secs(30)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The connection asks for more after the last piece: still sent.
        tx.send_modify(|s| s.holding = false);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Refused and sent again.
        tx.send_replace(upload::Sending::default());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let resent = Instant::now();
        tx.send_replace(upload::Sending {
            pieces: 1,
            holding: true,
            done: true,
        });
        let e = tokio::time::timeout(Duration::from_secs(10), clock)
            .await
            .expect("the clock ends")
            .unwrap();
        assert!(matches!(e, AttemptError::FirstByteTimeout), "{e:?}");
        assert!(resent.elapsed() >= first_byte, "{:?}", started.elapsed());
    }
}
