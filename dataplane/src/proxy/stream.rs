//! The body of a proxied response: upstream bytes go to the client as they
//! arrive, one frame per upstream chunk, with an idle timeout between
//! chunks and no total timeout. A stream that breaks ends with a terminal
//! error event in the client's protocol. Dropping the body (the client went
//! away) drops the upstream response, which cancels it, and the request is
//! logged as cancelled with what was counted so far. The body's end (its
//! last bytes, or the end of a stream) waits, bounded, for the record to
//! reach the spool ([`super::hold`]). An admin's cancel (#17) ends it as
//! a broken stream ends, and logs it as cancelled by an admin.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use super::dialect::Usage;
use super::generated::Generated;
use super::hold::Hold;
use super::observe::Observer;
use super::record::{Emitter, Finish};
use super::translate::Transcoder;
use crate::logs::wire::field;
use crate::server::BoxError;

/// The upstream response body.
pub type Upstream = Incoming;

/// How a response ended, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Complete,
    Broken(Failure),
    Cancelled,
    /// An admin cancelled it: the message says who.
    CancelledByAdmin(String),
}

/// Why a started response failed: the status the log records (not the 200
/// the client already got), the error, and whether it was the idle
/// timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub status: u16,
    pub message: String,
    pub timeout: bool,
}

impl Failure {
    /// The upstream's body broke, or could not be read: a bad gateway.
    pub fn broken(message: String) -> Failure {
        Failure {
            status: 502,
            message,
            timeout: false,
        }
    }
}

/// What happens to the bytes on their way: passed as they are and watched,
/// or transcoded into the client's protocol.
// The relay lives inside the response body, which is boxed once per
// response anyway: boxing the observer too would add an allocation per
// request for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Relay {
    Pass(Observer),
    Translate(Box<Transcoder>),
}

impl Relay {
    fn streaming(&self) -> bool {
        match self {
            Relay::Pass(o) => o.streaming(),
            Relay::Translate(_) => true,
        }
    }

    fn feed(&mut self, chunk: Bytes) -> Bytes {
        match self {
            Relay::Pass(o) => o.feed(chunk),
            Relay::Translate(t) => t.feed(&chunk),
        }
    }

    /// The end of the upstream body: what is left to send.
    fn finish(&mut self, fallback: impl FnOnce(u64) -> Usage) -> Option<Bytes> {
        match self {
            Relay::Pass(o) => o.finish(),
            Relay::Translate(t) => Some(t.finish(fallback)),
        }
    }

    fn stream_error_event(&mut self, message: &str) -> Vec<u8> {
        match self {
            Relay::Pass(o) => o.stream_error_event(message),
            Relay::Translate(t) => t.fail(message),
        }
    }

    /// Whether a passed-through stream's own end marker has been read: the
    /// frame that carries it completes the client's answer. (A translated
    /// stream writes its terminal event only when the upstream ends.)
    fn marked_end(&self) -> bool {
        match self {
            Relay::Pass(o) => o.streaming() && o.seen.marked_end,
            Relay::Translate(_) => false,
        }
    }

    /// Whether the client got the stream's terminal event.
    fn finished(&self) -> bool {
        match self {
            Relay::Pass(o) => o.seen.finished,
            Relay::Translate(t) => t.finished,
        }
    }

    /// A response whose upstream reported an error in it, or (translated)
    /// could not be read or was cut.
    fn broken(&self) -> Option<Failure> {
        let (status, message) = match self {
            Relay::Pass(o) => *o.seen.error.clone()?,
            Relay::Translate(t) => t.failure()?,
        };
        Some(Failure {
            status,
            message,
            timeout: false,
        })
    }

    fn usage(&self) -> Option<Usage> {
        match self {
            Relay::Pass(o) => o.usage(),
            Relay::Translate(t) => t.usage(),
        }
    }

    /// Output tokens so far, for the live view: the usage reported in the
    /// stream when there is one, else the text so far at 4 bytes a token
    /// (a whole, non-streamed answer is read only at its end).
    fn tokens_so_far(&self) -> u64 {
        let (usage, text) = match self {
            Relay::Pass(o) => (o.usage(), o.seen.text.len()),
            Relay::Translate(t) => (t.usage(), t.text.len()),
        };
        usage
            .map(|u| u.output)
            .filter(|n| *n > 0)
            .unwrap_or(text.div_ceil(4))
    }

    /// Why the upstream stopped, as it named it.
    fn take_stop_reason(&mut self) -> String {
        match self {
            Relay::Pass(o) => std::mem::take(&mut o.stop_reason),
            Relay::Translate(t) => t.take_stop_reason(),
        }
    }

    fn take_text(&mut self) -> Generated {
        match self {
            Relay::Pass(o) => std::mem::take(&mut o.seen.text),
            Relay::Translate(t) => std::mem::take(&mut t.text),
        }
    }

    /// What the log keeps of the response, and whether it was cut.
    fn take_logged(&mut self) -> (Bytes, bool) {
        match self {
            Relay::Pass(o) => o.take_logged(),
            Relay::Translate(t) => (t.logged.take(), t.logged.truncated()),
        }
    }
}

pub struct ProxyBody {
    upstream: Option<Upstream>,
    observer: Relay,
    idle_timeout: Duration,
    /// Fires at the idle timeout, or earlier: it is moved on lazily
    /// ([`ProxyBody::idle_passed`]), not at every frame.
    idle: Pin<Box<Sleep>>,
    /// When the upstream last sent data (or the body began, or a wait for
    /// the record ended): its silence counts from then.
    last_data: tokio::time::Instant,
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
    /// Once the record is emitted: what the end waits on (on the `idle`
    /// timer, which watches the upstream again once the wait is over).
    hold: Hold,
    /// The frame that carries a stream's end marker, sent once the record
    /// is spooled; the body goes on after it (whatever the upstream still
    /// sends passes, unrecorded).
    held: Option<Bytes>,
    /// The body is being dropped: its record is emitted without a wait.
    unheld: bool,
    /// The request's entry among those in flight (#17): tokens so far are
    /// noted there, an admin's cancel is read from it, and it is removed
    /// when the response ends.
    live: Option<crate::live::Registration>,
}

impl ProxyBody {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        upstream: Upstream,
        observer: Relay,
        idle_timeout: Duration,
        started: Instant,
        finish: Finish,
        sink: Arc<Emitter>,
        expected_len: Option<u64>,
    ) -> Self {
        let now = tokio::time::Instant::now();
        ProxyBody {
            upstream: Some(upstream),
            observer,
            idle_timeout,
            idle: Box::pin(tokio::time::sleep_until(now + idle_timeout)),
            last_data: now,
            tail: None,
            done: false,
            started,
            first_byte: None,
            expected_len,
            sent: 0,
            finish: Some((finish, sink)),
            hold: Hold::none(),
            held: None,
            unheld: false,
            live: None,
        }
    }

    /// Keeps the request's entry among those in flight until the end.
    #[must_use]
    pub fn with_live(mut self, live: Option<crate::live::Registration>) -> Self {
        self.live = live;
        self
    }

    fn end(&mut self, how: End) {
        let Some((mut f, sink)) = self.finish.take() else {
            return;
        };
        // No longer in flight.
        self.live = None;
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
                super::record::cancelled_by_client(r);
                if r.error.is_empty() {
                    r.error = "client disconnected".into();
                }
            }
            End::CancelledByAdmin(message) => {
                r.status = super::record::CLIENT_CLOSED;
                r.error = message;
                r.set_outcome(llmgw_proto::v1::Outcome::CancelledByAdmin);
            }
            End::Broken(failure) => {
                r.status = u32::from(failure.status);
                r.error = failure.message;
                r.set_outcome(if failure.timeout {
                    llmgw_proto::v1::Outcome::Timeout
                } else {
                    llmgw_proto::v1::Outcome::Interrupted
                });
            }
        }
        let (logged, truncated) = self.observer.take_logged();
        if !logged.is_empty() {
            // Already cut at the cap by the observer.
            super::record::log_response_body(&mut f.encoded, &logged, usize::MAX);
            if truncated {
                f.encoded.bool(field::RESPONSE_BODY_TRUNCATED, true);
            }
        }
        f.usage = self.observer.usage();
        if f.media.is_some() {
            if let Relay::Pass(o) = &mut self.observer {
                f.media_response = o.take_media_body();
            }
        }
        f.record.stop_reason = self.observer.take_stop_reason();
        f.completion_text = self.observer.take_text();
        self.hold = if self.unheld {
            f.submit_unheld(&sink);
            Hold::none()
        } else {
            f.submit(sink)
        };
    }

    fn fail(&mut self, failure: Failure) {
        crate::warn_limited!(error = %failure.message, "upstream response broke");
        self.upstream = None;
        self.tail = Some(if self.observer.streaming() {
            Ok(Bytes::from(
                self.observer.stream_error_event(&failure.message),
            ))
        } else {
            Err(failure.message.clone().into())
        });
        self.end(End::Broken(failure));
    }

    /// An admin cancelled the request: the upstream is dropped (which
    /// closes its stream), and the client gets the error a broken
    /// response gets.
    fn cancel_by_admin(&mut self, message: String) {
        self.upstream = None;
        self.tail = Some(if self.observer.streaming() {
            Ok(Bytes::from(
                self.observer
                    .stream_error_event(crate::live::CLIENT_CANCEL_MESSAGE),
            ))
        } else {
            Err(crate::live::CLIENT_CANCEL_MESSAGE.into())
        });
        self.end(End::CancelledByAdmin(message));
    }
}

impl ProxyBody {
    fn complete(&mut self) -> Option<Bytes> {
        self.upstream = None;
        // A rough estimate for the client's final usage (a translated
        // stream's transcoder adds its input estimate); the record gets
        // tiktoken's when no usage was reported.
        let rest = self.observer.finish(|text_bytes| Usage {
            output: text_bytes.div_ceil(4),
            ..Default::default()
        });
        match self.observer.broken() {
            Some(failure) => self.end(End::Broken(failure)),
            None => self.end(End::Complete),
        }
        self.done = true;
        rest.filter(|r| !r.is_empty())
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if self.finish.is_some() {
            // A stream whose terminal event went out is complete even if the
            // client left before reading the end of the body; one whose
            // upstream had reported an error is interrupted.
            let how = if let Some(failure) = self.observer.broken() {
                End::Broken(failure)
            } else if self.observer.streaming() && self.observer.finished() {
                End::Complete
            } else {
                End::Cancelled
            };
            // Nobody is left to hold an answer for.
            self.unheld = true;
            self.end(how);
        }
    }
}

impl ProxyBody {
    /// Whether the upstream has been silent for the idle timeout. Data
    /// only notes its time (a timer reset at every frame cost about 680
    /// instructions a streamed frame under callgrind, docs/benchmarks.md);
    /// a timer that fires before the silence is long enough is set again
    /// for when it would be.
    fn idle_passed(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.idle.as_mut().poll(cx).is_pending() {
                return false;
            }
            let due = self.last_data + self.idle_timeout;
            if due <= tokio::time::Instant::now() {
                return true;
            }
            self.idle.as_mut().reset(due);
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
            // Ended: nothing more goes out before the record is spooled.
            if this.hold.waiting() {
                if this.hold.poll_with(cx, this.idle.as_mut()).is_pending() {
                    return Poll::Pending;
                }
                // The wait had the timer: the upstream's silence counts
                // from now. A timer set for the wait that would fire before
                // the idle deadline moves on when it fires; one that would
                // fire after it (a spool wait longer than the idle timeout)
                // is moved back now.
                this.last_data = tokio::time::Instant::now();
                let due = this.last_data + this.idle_timeout;
                if this.idle.deadline() > due {
                    this.idle.as_mut().reset(due);
                }
            }
            if let Some(frame) = this.held.take() {
                return Poll::Ready(Some(Ok(Frame::data(frame))));
            }
            if let Some(tail) = this.tail.take() {
                this.done = true;
                return Poll::Ready(Some(tail.map(Frame::data)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(live) = &this.live {
                if live.poll_cancelled(cx) {
                    let message = live.cancel_message();
                    this.cancel_by_admin(message);
                    continue;
                }
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
                    this.last_data = tokio::time::Instant::now();
                    this.sent += chunk.len() as u64;
                    let mut out = this.observer.feed(chunk);
                    if let Some((f, _)) = this.finish.as_mut() {
                        f.usage_seen(this.observer.usage());
                    }
                    if let Some(live) = &this.live {
                        live.set_tokens(this.observer.tokens_so_far());
                    }
                    if this.expected_len.is_some_and(|n| this.sent >= n) {
                        if let Some(rest) = this.complete() {
                            let mut joined = bytes::BytesMut::from(&out[..]);
                            joined.extend_from_slice(&rest);
                            out = joined.freeze();
                        }
                        // The server stops polling after these bytes: they
                        // are the end, and wait for the record.
                        if !out.is_empty() {
                            this.tail = Some(Ok(out));
                        }
                        continue;
                    }
                    if this.finish.is_some() && this.observer.marked_end() {
                        // The client has its answer once this frame is out:
                        // the record first.
                        let how = match this.observer.broken() {
                            Some(failure) => End::Broken(failure),
                            None => End::Complete,
                        };
                        this.end(how);
                        if !out.is_empty() {
                            this.held = Some(out);
                        }
                        continue;
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.fail(Failure::broken(format!("upstream stream broke: {e}")));
                }
                Poll::Ready(None) => {
                    if let Some(rest) = this.complete() {
                        this.tail = Some(Ok(rest));
                    }
                }
                Poll::Pending => {
                    if this.idle_passed(cx) {
                        let secs = this.idle_timeout.as_secs();
                        this.fail(Failure {
                            status: 504,
                            message: format!("upstream sent nothing for {secs} s (idle timeout)"),
                            timeout: true,
                        });
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.tail.is_none() && self.held.is_none() && !self.hold.waiting()
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
