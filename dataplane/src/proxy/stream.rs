//! The body of a proxied response: upstream bytes go to the client as they
//! arrive, one frame per upstream chunk, with an idle timeout between
//! chunks and no total timeout. A stream that breaks ends with a terminal
//! error event in the client's protocol. Dropping the body (the client went
//! away) drops the upstream response, which cancels it, and the request is
//! logged as cancelled with what was counted so far.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use super::observe::Observer;
use super::record::{Emitter, Finish};
use crate::logs::wire::field;
use crate::server::BoxError;

/// The upstream response body.
pub type Upstream = Incoming;

/// How a response ended, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Complete,
    Broken,
    Cancelled,
}

pub struct ProxyBody {
    upstream: Option<Upstream>,
    observer: Observer,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    /// The last thing to send: a terminal error event, or an error that
    /// aborts a non-streaming response (a cut JSON body must not look whole).
    tail: Option<Result<Bytes, BoxError>>,
    done: bool,
    started: Instant,
    first_byte: Option<Instant>,
    /// The upstream's content-length: the server stops polling once that
    /// many bytes are out, so the end is noticed by counting.
    expected_len: Option<u64>,
    sent: u64,
    finish: Option<(Finish, Arc<Emitter>)>,
}

impl ProxyBody {
    pub fn new(
        upstream: Upstream,
        observer: Observer,
        idle_timeout: Duration,
        started: Instant,
        finish: Finish,
        sink: Arc<Emitter>,
        expected_len: Option<u64>,
    ) -> Self {
        ProxyBody {
            upstream: Some(upstream),
            observer,
            idle_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            tail: None,
            done: false,
            started,
            first_byte: None,
            expected_len,
            sent: 0,
            finish: Some((finish, sink)),
        }
    }

    fn end(&mut self, how: End, error: Option<String>) {
        let Some((mut f, sink)) = self.finish.take() else {
            return;
        };
        let now = Instant::now();
        let r = &mut f.record;
        r.latency_ms = now.duration_since(self.started).as_millis() as u64;
        r.ttfb_ms = self
            .first_byte
            .unwrap_or(now)
            .duration_since(self.started)
            .as_millis() as u64;
        match how {
            End::Complete => {}
            End::Cancelled => {
                r.cancelled = true;
                if r.error.is_empty() {
                    r.error = "client disconnected".into();
                }
            }
            End::Broken => {
                r.error = error.unwrap_or_else(|| "upstream stream broke".into());
            }
        }
        if !self.observer.logged.is_empty() {
            // Already cut at the cap by the observer.
            let logged = std::mem::take(&mut self.observer.logged);
            super::record::log_response_body(&mut f.encoded, &logged, usize::MAX);
            if self.observer.log_truncated {
                f.encoded.bool(field::RESPONSE_BODY_TRUNCATED, true);
            }
        }
        f.usage = self.observer.usage();
        f.completion_text = std::mem::take(&mut self.observer.seen.text);
        f.submit(sink);
    }

    fn fail(&mut self, message: String) {
        tracing::warn!(error = %message, "upstream response broke");
        self.upstream = None;
        self.tail = Some(if self.observer.streaming() {
            Ok(Bytes::from(self.observer.stream_error_event(&message)))
        } else {
            Err(message.clone().into())
        });
        self.end(End::Broken, Some(message));
    }
}

impl ProxyBody {
    fn complete(&mut self) -> Option<Bytes> {
        self.upstream = None;
        let rest = self.observer.finish();
        self.end(End::Complete, None);
        self.done = true;
        rest.filter(|r| !r.is_empty())
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if self.finish.is_some() {
            // A stream whose terminal event went out is complete even if the
            // client left before reading the end of the body.
            let how = if self.observer.streaming() && self.observer.seen.finished {
                End::Complete
            } else {
                End::Cancelled
            };
            self.end(how, None);
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(tail) = this.tail.take() {
                this.done = true;
                return Poll::Ready(Some(tail.map(Frame::data)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            let Some(upstream) = this.upstream.as_mut() else {
                this.done = true;
                continue;
            };
            match Pin::new(upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are not passed on; only data counts.
                    let Ok(chunk) = frame.into_data() else {
                        continue;
                    };
                    this.first_byte.get_or_insert_with(Instant::now);
                    let deadline = tokio::time::Instant::now() + this.idle_timeout;
                    this.idle.as_mut().reset(deadline);
                    this.sent += chunk.len() as u64;
                    let mut out = this.observer.feed(chunk);
                    if this.expected_len.is_some_and(|n| this.sent >= n) {
                        if let Some(rest) = this.complete() {
                            let mut joined = bytes::BytesMut::from(&out[..]);
                            joined.extend_from_slice(&rest);
                            out = joined.freeze();
                        }
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.fail(format!("upstream stream broke: {e}"));
                }
                Poll::Ready(None) => {
                    if let Some(rest) = this.complete() {
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
                    }
                }
                Poll::Pending => {
                    if this.idle.as_mut().poll(cx).is_ready() {
                        let secs = this.idle_timeout.as_secs();
                        this.fail(format!("upstream sent nothing for {secs} s (idle timeout)"));
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.tail.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.expected_len {
            Some(n) if !self.observer.streaming() => {
                SizeHint::with_exact(n.saturating_sub(self.sent))
            }
            _ => SizeHint::default(),
        }
    }
}
