//! Holding the end of a response until its log record is in the spool, so
//! that the record of every answer a client has whole survives a `kill -9`
//! of the data plane.
//!
//! Only the end waits: a stream's status, headers and content go out as
//! they come, and a body's last bytes (a stream's end, the last frame of a
//! body of known length, or a body the gateway made itself) are held until
//! the record has been handed to the kernel (one `write` by the spool's
//! writer, usually well under a millisecond). An answer that is whole by
//! then keeps its head back with its end ([`super::end`]), so head and
//! body go out in one write.
//!
//! The wait is bounded (`--spool-wait-ms`, 500 ms), and skipped while the
//! writer is stuck in one write for longer than that bound (a stalled
//! disk): answers then go out at once and their records follow when the
//! disk does. Both cases are counted in
//! `llmgw_log_spool_waits_given_up_total{reason}`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::Sleep;

use super::record::Emitter;
use super::ResponseBody;
use crate::logs::Spooled;
use crate::metrics::ReasonLabels;
use crate::server::BoxError;

/// A wait for one record to reach the spool.
pub struct Hold {
    spooled: Spooled,
    /// Whether the bound's timer is running.
    timing: bool,
    sink: Option<Arc<Emitter>>,
}

impl Hold {
    /// Nothing to wait for.
    pub fn none() -> Hold {
        Hold {
            spooled: Spooled::done(),
            timing: false,
            sink: None,
        }
    }

    /// A wait for a record just handed to the pipeline; none when waiting
    /// is off or the spool's writer is stalled.
    pub(super) fn new(spooled: Spooled, sink: &Arc<Emitter>) -> Hold {
        let bound = sink.spool_wait;
        if bound.is_zero() {
            return Hold::none();
        }
        if sink.logs.writing().stalled_for() > bound {
            sink.gave_up("stalled");
            return Hold::none();
        }
        Hold {
            spooled,
            timing: false,
            sink: Some(Arc::clone(sink)),
        }
    }

    /// Ready once the record is in the spool, or the bound passed on
    /// `timer` (which this resets to the bound when the wait begins).
    pub fn poll_with(&mut self, cx: &mut Context<'_>, mut timer: Pin<&mut Sleep>) -> Poll<()> {
        let Some(sink) = self.sink.as_ref() else {
            return Poll::Ready(());
        };
        if Pin::new(&mut self.spooled).poll(cx).is_ready() {
            self.sink = None;
            return Poll::Ready(());
        }
        if !self.timing {
            self.timing = true;
            timer
                .as_mut()
                .reset(tokio::time::Instant::now() + sink.spool_wait);
        }
        if timer.poll(cx).is_ready() {
            sink.gave_up("timeout");
            self.sink = None;
            return Poll::Ready(());
        }
        WAITED.set(true);
        Poll::Pending
    }

    /// Whether there is still something to wait for.
    pub fn waiting(&self) -> bool {
        self.sink.is_some()
    }
}

impl Emitter {
    fn gave_up(&self, reason: &str) {
        self.metrics
            .spool_waits_given_up
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }
}

/// A body the gateway made whole (an error, a translated answer), sent
/// once its record is in the spool.
pub struct Held<B> {
    inner: B,
    hold: Hold,
    timer: Option<Pin<Box<Sleep>>>,
}

/// `resp` with its body held on `hold`; unchanged when there is nothing
/// to wait for.
pub(super) fn held(resp: Response<ResponseBody>, hold: Hold) -> Response<ResponseBody> {
    if !hold.waiting() {
        return resp;
    }
    resp.map(|inner| {
        BodyExt::boxed_unsync(Held {
            inner,
            hold,
            timer: None,
        })
    })
}

impl<B> Body for Held<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.hold.waiting() {
            let timer = this
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::ZERO)));
            if this.hold.poll_with(cx, timer.as_mut()).is_pending() {
                return Poll::Pending;
            }
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        !self.hold.waiting() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

thread_local! {
    /// Set by a [`Hold`] that leaves its poll waiting. Polls run on one
    /// thread, so the flag read right after a poll is that poll's.
    static WAITED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Forgets any [`Hold`] that left a poll on this thread waiting: call it
/// right before the poll [`waited`] is to answer for.
pub(super) fn clear_waited() {
    WAITED.set(false);
}

/// Whether a [`Hold`] left a poll on this thread waiting since
/// [`clear_waited`]: a body that answers `Pending` with this set waits for
/// its record, and for nothing else.
pub(super) fn waited() -> bool {
    WAITED.replace(false)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::RequestLogMode;
    use crate::logs::LogSink;
    use crate::metrics::Metrics;
    use http_body_util::Full;

    pub(crate) const BOUND: Duration = Duration::from_secs(10);

    pub(crate) fn emitter(wait: Duration) -> (Arc<Emitter>, crate::logs::LogReceiver) {
        let (sink, rx) = LogSink::new(8);
        let mut e = Emitter::new(Arc::new(sink), Metrics::new(), RequestLogMode::Full);
        e.spool_wait = wait;
        (Arc::new(e), rx)
    }

    pub(crate) fn body(text: &'static str) -> ResponseBody {
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|e| match e {})
            .boxed_unsync()
    }

    fn given_up(e: &Emitter, reason: &str) -> u64 {
        e.metrics
            .spool_waits_given_up
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .get()
    }

    fn poll_once(b: &mut ResponseBody) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(b).poll_frame(&mut cx)
    }

    #[tokio::test]
    async fn a_held_body_goes_out_once_its_record_is_spooled() {
        let (e, _rx) = emitter(BOUND);
        let (tx, spooled) = Spooled::channel();
        let resp = held(Response::new(body("answer")), Hold::new(spooled, &e));
        let mut b = resp.into_body();
        assert!(!b.is_end_stream());
        assert!(poll_once(&mut b).is_pending());
        assert!(poll_once(&mut b).is_pending());
        // The writer wrote the record's batch and let go of its sender.
        drop(tx);
        let frame = tokio::time::timeout(BOUND, b.frame()).await.unwrap();
        let data = frame.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&data[..], b"answer");
        assert_eq!(given_up(&e, "timeout") + given_up(&e, "stalled"), 0);
    }

    #[tokio::test]
    async fn a_wait_gives_up_at_its_bound_and_is_counted() {
        let (e, _rx) = emitter(Duration::from_millis(20));
        let (_tx, spooled) = Spooled::channel();
        let mut b = held(Response::new(body("late")), Hold::new(spooled, &e)).into_body();
        // The record never arrives: the bound ends the wait.
        let frame = tokio::time::timeout(BOUND, b.frame()).await.unwrap();
        assert_eq!(&frame.unwrap().unwrap().into_data().unwrap()[..], b"late");
        assert_eq!(given_up(&e, "timeout"), 1);
    }

    #[tokio::test]
    async fn nothing_waits_while_the_writer_is_stalled_or_when_waiting_is_off() {
        let bound = Duration::from_millis(2);
        let (e, _rx) = emitter(bound);
        e.logs.writing().begin();
        let started = std::time::Instant::now();
        while e.logs.writing().stalled_for() <= bound {
            assert!(
                started.elapsed() < BOUND,
                "the write clock does not advance"
            );
            tokio::task::yield_now().await;
        }
        let (_tx, spooled) = Spooled::channel();
        let hold = Hold::new(spooled, &e);
        assert!(!hold.waiting());
        assert_eq!(given_up(&e, "stalled"), 1);
        // The write returns: waits resume.
        e.logs.writing().end();
        let (_tx, spooled) = Spooled::channel();
        assert!(Hold::new(spooled, &e).waiting());

        let (off, _rx) = emitter(Duration::ZERO);
        let (_tx, spooled) = Spooled::channel();
        let mut b = held(Response::new(body("now")), Hold::new(spooled, &off)).into_body();
        assert!(poll_once(&mut b).is_ready());
    }
}
