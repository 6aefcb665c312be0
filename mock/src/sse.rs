//! The body of a streamed reply: hands out each event of a [`Plan`] when
//! hyper asks for the next frame, one event per frame — a lazy
//! [`StreamPlan`] renders it only then, so nothing is buffered ahead and a
//! slow or gone client stops generation at once; a [`BuiltStream`] was
//! rendered up front. It waits the chunk delay before each content event,
//! and can abort the response after a number of content events.
//!
//! It holds the request's [`RequestGuard`]: dropped before the last event
//! went out (the client disconnected, so hyper dropped the body), the
//! request counts as cancelled.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Bytes, Frame, SizeHint};
use tokio::time::Sleep;

use crate::compose::BuiltStream;
use crate::record::RequestGuard;
use crate::render::StreamPlan;
use crate::BoxError;

/// The events of a stream.
#[derive(Debug)]
pub(crate) enum Plan {
    Lazy(StreamPlan),
    Built(BuiltStream),
}

impl Plan {
    fn len(&self) -> usize {
        match self {
            Self::Lazy(p) => p.len(),
            Self::Built(b) => b.len(),
        }
    }

    fn event(&self, k: usize) -> Bytes {
        match self {
            Self::Lazy(p) => p.event(k),
            Self::Built(b) => b.event(k),
        }
    }

    /// Whether event `k` is content (text, thinking, argument fragment).
    fn is_content(&self, k: usize) -> bool {
        match self {
            Self::Lazy(p) => k >= p.prefix_len() && k < p.prefix_len() + p.chunks() as usize,
            Self::Built(b) => b.is_content(k),
        }
    }

    /// The event before which a stream cut after `n` content events stops.
    fn abort_index(&self, n: u32) -> usize {
        match self {
            Self::Lazy(p) => p.prefix_len() + n.min(p.chunks()) as usize,
            Self::Built(b) => b.abort_index(n),
        }
    }
}

/// How long an aborting stream waits before failing, so hyper flushes the
/// chunks already handed to it (a body error drops unflushed output).
const FLUSH_BEFORE_ABORT: Duration = Duration::from_millis(20);

/// Error a stream fails with when `reset_after_chunks` says so.
#[derive(Debug)]
pub(crate) struct MockAbort;

impl std::fmt::Display for MockAbort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("llmgw-mock: response aborted on purpose")
    }
}

impl std::error::Error for MockAbort {}

pub(crate) struct SseBody {
    plan: Plan,
    /// Number of the next event.
    next: usize,
    total: usize,
    chunk_delay: Duration,
    /// Abort before this event.
    abort_at: Option<usize>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// The delay before event `next` has been waited.
    waited: bool,
    aborting: bool,
    guard: Option<RequestGuard>,
}

impl SseBody {
    pub fn new(
        plan: Plan,
        chunk_delay: Duration,
        reset_after: Option<u32>,
        guard: RequestGuard,
    ) -> Self {
        let total = plan.len();
        Self {
            abort_at: reset_after.map(|n| plan.abort_index(n)),
            plan,
            next: 0,
            total,
            chunk_delay,
            sleep: None,
            waited: false,
            aborting: false,
            guard: Some(guard),
        }
    }

    fn complete(&mut self) {
        if let Some(g) = self.guard.take() {
            g.complete();
        }
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                this.sleep = None;
                this.waited = true;
            }
            if this.aborting {
                return Poll::Ready(Some(Err(Box::new(MockAbort))));
            }
            if this.abort_at == Some(this.next) {
                // Cut on purpose: not a client cancellation.
                this.abort_at = None;
                this.complete();
                this.aborting = true;
                this.sleep = Some(Box::pin(tokio::time::sleep(FLUSH_BEFORE_ABORT)));
                continue;
            }
            if this.next >= this.total {
                this.complete();
                return Poll::Ready(None);
            }
            let is_chunk = this.plan.is_content(this.next);
            if is_chunk && !this.waited && !this.chunk_delay.is_zero() {
                this.sleep = Some(Box::pin(tokio::time::sleep(this.chunk_delay)));
                continue;
            }
            let event = this.plan.event(this.next);
            this.next += 1;
            this.waited = false;
            if this.next >= this.total {
                this.complete();
            }
            return Poll::Ready(Some(Ok(Frame::data(event))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.total && !self.aborting && self.abort_at.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
