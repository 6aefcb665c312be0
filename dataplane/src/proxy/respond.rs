//! The response: an upstream answer passed to the client as it streams,
//! or translated into the client's protocol (a stream event by event, a
//! whole body at once, an error in the client's shape).

use super::attempt::{error_chain, read_capped, wants_usage_chunk, Prepared};
use super::generated::Generated;
#[allow(clippy::wildcard_imports)]
use super::*;
use crate::logs::capture::Capture;

impl Proxy {
    /// Streams an upstream answer to the client.
    pub(super) async fn respond(
        &self,
        call: &Call<'_>,
        target: &Target,
        prepared: &Prepared,
        mut resp: Response<Incoming>,
        pending: &mut Pending,
        deadline: Instant,
    ) -> Response<ResponseBody> {
        if let Some((upstream, client)) = prepared.wires {
            return self
                .respond_translated(
                    call,
                    target,
                    prepared,
                    (upstream, client),
                    resp,
                    pending,
                    deadline,
                )
                .await;
        }
        let status = resp.status();
        let is_sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let strip = is_sse && status.is_success() && wants_usage_chunk(call, target);
        let (mut r, mut encoded) = pending.take();
        // Logged as they came, then made the client's.
        self.log_headers(&mut encoded, field::RESPONSE_HEADERS, resp.headers());
        let mut out = Response::new(full(Bytes::new()));
        *out.status_mut() = status;
        *out.headers_mut() = client_headers(std::mem::take(resp.headers_mut()), strip);
        if is_sse {
            out.headers_mut()
                .insert("x-accel-buffering", HeaderValue::from_static("no"));
        }
        r.status = u32::from(status.as_u16());
        r.provider.clone_from(&target.provider.name);
        r.upstream_model.clone_from(&target.upstream_model);
        r.retries = (r.attempts.len() as u32).saturating_sub(1);
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
        let mut observer = Observer::new(call.dialect, call.endpoint, is_sse, strip, log_cap);
        if call.streaming && !is_sse {
            // A stream that is not SSE (Gemini's JSON array without
            // `alt=sse`) is read as one answer, but lasts as long as a
            // stream: past the size read whole, its capture is compressed
            // like one.
            observer.logged = Capture::streaming(log_cap);
        }
        // Speech: audio bytes pass as they come, and the log keeps their
        // size and content type, never the bytes.
        if call.endpoint == Endpoint::AudioSpeech && status.is_success() {
            let content_type = out
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/octet-stream");
            if !content_type.starts_with("application/json") {
                observer.opaque(content_type);
            }
        }
        // A traced request that captures content keeps the answer's text.
        observer.want_text = pending.trace.as_ref().is_some_and(|t| t.captures());
        if let Some(t) = &pending.trace {
            observer.seen.text.keep_at_least(t.content_cap());
        }
        let observer = Relay::Pass(observer);
        let prices = target.prices.at_shared(r.time_ms);
        let mut media = pending.media.take();
        if let Some(m) = media.as_mut() {
            // An upload's bytes are kept past the response only when a
            // per-second price may need its audio measured.
            if prices.per_audio_second.is_zero() || !status.is_success() || !m.has_audio_duration()
            {
                m.audio = None;
            }
        }
        let finish = Finish {
            record: r,
            encoded,
            usage: None,
            request: Some(call.raw.clone()),
            completion_text: Generated::default(),
            input_seen: 0,
            prices,
            tokenizer_model: target.upstream_model.clone(),
            counted: status.is_success() && !call.endpoint.api().counts_tokens(),
            admission: pending.admission.take(),
            trace: pending.trace.take(),
            media,
            media_response: None,
            quantities: None,
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
            target.provider.timeout,
            pending.started,
            finish,
            Arc::clone(&self.out),
            expected_len,
        )
        .with_live(pending.live.take());
        *out.body_mut() = BodyExt::boxed_unsync(body);
        out
    }

    /// A translated answer: an error rewritten in the client's shape, a
    /// stream transcoded as it arrives, or a whole body read, converted and
    /// sent at once.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn respond_translated(
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
        record::log_translation(
            &mut r,
            &mut encoded,
            target.provider.protocol,
            &prepared.dropped,
        );
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
            // Supplied by the transcoder if the client needs it.
            input_estimate: 0,
            include_usage: call.include_usage,
            sse: !matches!(call.endpoint, Endpoint::GeminiStream { sse: false }),
        };
        let json = HeaderValue::from_static("application/json");
        if !status.is_success() {
            // The record goes back to the request while the error body is
            // read: a client that leaves meanwhile drops `pending`, which
            // logs the request as cancelled.
            pending.record = Some(r);
            pending.encoded = encoded;
            let body = read_capped(resp, deadline).await;
            let (mut r, mut encoded) = pending.take();
            let (client_status, body) = translated_error(upstream, client, status, &body);
            r.status = u32::from(client_status.as_u16());
            r.error = format!("upstream answered {status}");
            if log_cap > 0 {
                record::log_response_body(&mut encoded, &body, log_cap);
            }
            r.latency_ms = pending.started.elapsed().as_millis() as u64;
            r.ttfb_ms = r.latency_ms;
            r.usage_source = "none".into();
            let hold = self.out.emit_held(r, encoded, pending.trace.take());
            *out.status_mut() = client_status;
            out.headers_mut().insert(header::CONTENT_TYPE, json);
            *out.body_mut() = full(body);
            return hold::held(out, hold);
        }
        let prices = target.prices.at_shared(r.time_ms);
        let finish = Finish {
            record: r,
            encoded,
            usage: None,
            request: Some(call.raw.clone()),
            completion_text: Generated::default(),
            input_seen: 0,
            prices,
            tokenizer_model: target.upstream_model.clone(),
            counted: !counting,
            admission: pending.admission.take(),
            trace: pending.trace.take(),
            media: None,
            media_response: None,
            quantities: None,
        };
        if call.streaming {
            let raw = call.raw.clone();
            let tokenizer_model = call
                .model
                .targets
                .first()
                .map_or_else(|| call.model.name.clone(), |t| t.upstream_model.clone());
            let estimate: translate::InputEstimate = Box::new(move || {
                super::estimate::input_tokens_now(&tokenizer_model, &head::tree(&raw))
            });
            let mut transcoder = Transcoder::new(upstream, client, opts.clone(), log_cap, estimate);
            // The trace went into the record above.
            if let Some(t) = &finish.trace {
                transcoder.text.keep_at_least(t.content_cap());
            }
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
                target.provider.timeout,
                pending.started,
                finish,
                Arc::clone(&self.out),
                None,
            )
            .with_live(pending.live.take());
            *out.body_mut() = BodyExt::boxed_unsync(body);
            return out;
        }
        // Held while the whole body is read: a client that leaves meanwhile
        // drops this, which logs the request as cancelled.
        let mut reading = Reading {
            finish: Some(finish),
            sink: Arc::clone(&self.out),
            started: pending.started,
        };
        let live = pending.live.as_ref().map(|l| Arc::clone(l.entry()));
        let whole = crate::live::or_cancelled(
            live.as_deref(),
            read_whole(
                resp,
                target.provider.timeout,
                translate::MAX_TRANSLATED_BODY,
            ),
        )
        .await
        .unwrap_or_else(|m| Err((ErrorKind::CancelledByAdmin, m)))
        .and_then(|body| {
            translate::whole(upstream, client, counting, &body, &opts, || {
                llmgw_core::tokens::approximate_input(&head::tree(call.raw))
            })
            .map_err(|e| {
                (
                    ErrorKind::UpstreamUnavailable,
                    format!("the upstream answer could not be translated: {e}"),
                )
            })
        });
        let Some(mut finish) = reading.finish.take() else {
            // Only `Reading`'s drop takes it, and it has not run.
            return self.error(
                call.dialect,
                ErrorKind::UpstreamUnavailable,
                "the answer was lost",
                "",
            );
        };
        let r = &mut finish.record;
        r.latency_ms = pending.started.elapsed().as_millis() as u64;
        r.ttfb_ms = r.latency_ms;
        match whole {
            Ok((body, usage, text, stop_reason)) => {
                finish.record.stop_reason = stop_reason;
                if log_cap > 0 {
                    record::log_response_body(&mut finish.encoded, &body, log_cap);
                }
                if counting {
                    // The count as usage: `complete` records it, unbilled
                    // (a count is not `counted`).
                    finish.record.count_source = "upstream".into();
                    finish.usage = usage;
                } else {
                    finish.usage = usage;
                    finish.completion_text = text;
                }
                let hold = finish.submit(Arc::clone(&self.out));
                out.headers_mut().insert(header::CONTENT_TYPE, json);
                *out.body_mut() = full(body);
                hold::held(out, hold)
            }
            Err((kind, message)) => {
                finish.record.status = u32::from(kind.status().as_u16());
                finish.record.error.clone_from(&message);
                finish.record.set_outcome(kind.outcome());
                finish.counted = false;
                let hold = finish.submit(Arc::clone(&self.out));
                let shown = if kind == ErrorKind::CancelledByAdmin {
                    crate::live::CLIENT_CANCEL_MESSAGE
                } else {
                    message.as_str()
                };
                let mut resp = self.error(call.dialect, kind, shown, "");
                resp.headers_mut().extend(out.headers_mut().drain());
                hold::held(resp, hold)
            }
        }
    }
}

/// A translated answer's record while its whole body is read (a
/// non-streamed answer is converted only once it is all there). The
/// handler's future holds it; a client that goes away drops that future,
/// and this logs the request as cancelled by the client, so the record is
/// never lost.
struct Reading {
    finish: Option<Finish>,
    sink: Arc<Emitter>,
    started: Instant,
}

impl Drop for Reading {
    fn drop(&mut self) {
        if let Some(mut f) = self.finish.take() {
            record::cancelled_by_client(&mut f.record);
            f.record.latency_ms = self.started.elapsed().as_millis() as u64;
            f.record.ttfb_ms = f.record.latency_ms;
            f.record.error = "client disconnected before the response started".into();
            // Nothing of the answer was read: nothing to count.
            f.counted = false;
            f.submit_unheld(&self.sink);
        }
    }
}

/// The response header that names the fields a lenient translation left
/// out.
pub(super) const DROPPED_FIELDS: &str = "x-llmgw-dropped-fields";

pub(super) fn dropped_header(dropped: &[String]) -> Option<HeaderValue> {
    if dropped.is_empty() {
        return None;
    }
    HeaderValue::from_str(&dropped.join(", ")).ok()
}

/// Reads a whole upstream body, with an idle timeout between chunks and a
/// size cap. An error says what the client is answered: the idle timeout
/// is an upstream timeout, anything else an unavailable upstream.
pub(super) async fn read_whole(
    resp: Response<Incoming>,
    idle: Duration,
    cap: usize,
) -> Result<Bytes, (ErrorKind, String)> {
    let mut out = bytes::BytesMut::new();
    let mut body = resp.into_body();
    let unavailable = |m: String| (ErrorKind::UpstreamUnavailable, m);
    loop {
        match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Err((
                    ErrorKind::UpstreamTimeout,
                    format!(
                        "upstream sent nothing for {} s (idle timeout)",
                        idle.as_secs()
                    ),
                ))
            }
            Ok(None) => return Ok(out.freeze()),
            Ok(Some(Err(e))) => {
                return Err(unavailable(format!(
                    "upstream body broke: {}",
                    error_chain(&e)
                )))
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(chunk) = frame.into_data() {
                    if out.len() + chunk.len() > cap {
                        return Err(unavailable(format!(
                            "the upstream answer is larger than {cap} bytes"
                        )));
                    }
                    out.extend_from_slice(&chunk);
                }
            }
        }
    }
}

/// An upstream error rewritten in the client's protocol.
pub(super) fn translated_error(
    upstream: Wire,
    client: Wire,
    status: StatusCode,
    body: &[u8],
) -> (StatusCode, Bytes) {
    let (code, body) = translate::error(upstream, client, status.as_u16(), body);
    (StatusCode::from_u16(code).unwrap_or(status), body)
}

/// The most headers the gateway adds to an answer of its own: the request
/// id, `x-accel-buffering`, six rate-limit headers, `retry-after`,
/// `x-should-retry` and the dropped fields.
const GATEWAY_HEADERS: usize = 11;

/// An upstream answer's headers as the client's answer's: the map itself
/// when it holds no hop-by-hop header (nor, when the body changes,
/// `content-length`), with room made for the gateway's own; otherwise the
/// end-to-end ones copied ([`copy_response_headers`]). Reusing the map
/// saves making a new one and inserting every name again (about a
/// thousand instructions a request).
pub(super) fn client_headers(mut headers: HeaderMap, body_changes: bool) -> HeaderMap {
    let clean = !headers.keys().any(|name| {
        llmgw_core::validate::is_hop_by_hop(name.as_str())
            || (body_changes && name == header::CONTENT_LENGTH)
    });
    if clean {
        headers.reserve(GATEWAY_HEADERS);
        return headers;
    }
    let mut to = HeaderMap::new();
    copy_response_headers(&headers, &mut to, body_changes);
    to
}

/// Copies an upstream answer's end-to-end headers to the client's answer
/// (less `content-length` when the body changes), with room made once for
/// the gateway's own: a map that grows rehashes every name it holds.
pub(super) fn copy_response_headers(from: &HeaderMap, to: &mut HeaderMap, body_changes: bool) {
    to.reserve(from.len() + GATEWAY_HEADERS);
    for (name, value) in from {
        let n = name.as_str();
        if llmgw_core::validate::is_hop_by_hop(n) || (body_changes && n == "content-length") {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn listed(h: &HeaderMap) -> Vec<(String, String)> {
        h.iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect()
    }

    #[test]
    fn an_answers_headers_become_the_clients_less_hop_by_hop_ones() {
        let end_to_end = [
            ("content-type", "application/json"),
            ("x-request-id", "req_1"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("content-length", "42"),
        ];
        // Nothing to take out: the same headers, in the same order.
        let h = client_headers(map(&end_to_end), false);
        assert_eq!(listed(&h), listed(&map(&end_to_end)));
        assert!(h.capacity() >= h.len() + GATEWAY_HEADERS);
        // A changed body has no upstream length.
        let h = client_headers(map(&end_to_end), true);
        assert_eq!(listed(&h), listed(&map(&end_to_end[..4])));
        // Hop-by-hop headers stay on the upstream connection.
        let mut with_hops = end_to_end.to_vec();
        with_hops.insert(1, ("connection", "keep-alive"));
        with_hops.push(("transfer-encoding", "chunked"));
        with_hops.push(("keep-alive", "timeout=5"));
        let h = client_headers(map(&with_hops), false);
        assert_eq!(listed(&h), listed(&map(&end_to_end)));
        let h = client_headers(map(&with_hops), true);
        assert_eq!(listed(&h), listed(&map(&end_to_end[..4])));
    }
}
