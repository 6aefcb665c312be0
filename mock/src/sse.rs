//! The body of a streamed reply: renders each event of a [`StreamPlan`] when
//! hyper asks for the next frame, one event per frame, so nothing is
//! buffered ahead and a slow or gone client stops generation at once. It
//! waits the chunk delay before each content chunk, and can abort the
//! response after a number of chunks.
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

use crate::record::RequestGuard;
use crate::render::StreamPlan;
use crate::BoxError;

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
    plan: StreamPlan,
    /// Number of the next event.
    next: usize,
    total: usize,
    chunk_delay: Duration,
    /// Abort once this many content chunks went out.
    reset_after: Option<u32>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// The delay before event `next` has been waited.
    waited: bool,
    aborting: bool,
    guard: Option<RequestGuard>,
}

impl SseBody {
    pub fn new(
        plan: StreamPlan,
        chunk_delay: Duration,
        reset_after: Option<u32>,
        guard: RequestGuard,
    ) -> Self {
        let total = plan.len();
        Self {
            plan,
            next: 0,
            total,
            chunk_delay,
            reset_after,
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
            if this.next >= this.total {
                this.complete();
                return Poll::Ready(None);
            }
            let prefix = this.plan.prefix_len();
            let chunks = this.plan.chunks() as usize;
            if let Some(r) = this.reset_after {
                if this.next == prefix + (r as usize).min(chunks) {
                    // Cut on purpose: not a client cancellation.
                    this.complete();
                    this.aborting = true;
                    this.sleep = Some(Box::pin(tokio::time::sleep(FLUSH_BEFORE_ABORT)));
                    continue;
                }
            }
            let is_chunk = this.next >= prefix && this.next < prefix + chunks;
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
        self.next >= self.total && !self.aborting
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
