//! Holding the end of a response until its log record is in the spool, so
//! that the record of every answer a client has whole survives a `kill -9`
//! of the data plane.
//!
//! Only the end waits: a stream's status, headers and content go out as
//! they come, and a body's last bytes (a stream's end, the last frame of a
//! body of known length, or a body the gateway made itself) are held until
//! the record has been handed to the kernel (one `write` by the spool's
//! writer, usually well under a millisecond). An answer that is whole by
//! then (a body the gateway made, or a passed-through body of known length
//! up to [`WITH_END_MAX`] whose bytes have all arrived) keeps its head back
//! with its end, so head and body go out in one write ([`with_end`]).
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
    /// Set by a [`Hold`] that leaves its poll waiting: how [`with_end`]
    /// tells a body that waits for its record (whole, then) from one that
    /// waits for upstream. Polls run on one thread, so the flag read right
    /// after a poll is that poll's.
    static WAITED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The longest body whose head [`with_end`] keeps back for it.
pub(super) const WITH_END_MAX: u64 = 64 * 1024;

/// How [`with_end`]'s reading of a body ended.
enum Read {
    /// The body ended: every frame is read.
    Whole,
    /// The body failed after the frames read.
    Failed(BoxError),
    /// The rest of the body is still to come from upstream.
    Partial,
}

/// `resp` with its head kept back until its end, for a body of known
/// length up to [`WITH_END_MAX`] that is whole but for its record's wait:
/// a body the gateway made ([`held`]), or a passed-through answer whose
/// bytes have all arrived. hyper sends a head as soon as the body makes it
/// wait, so the head and the held end would go out in two writes (two
/// segments, two wake-ups of the client); read here first, they go out in
/// one. The body is read only as far as it is ready: when it waits for
/// anything but its record (upstream), `resp` goes out at once with what
/// was read in front of the rest, so a slow upstream delays nothing. A
/// stream (no known length) is never read here.
pub(super) async fn with_end(resp: Response<ResponseBody>) -> Response<ResponseBody> {
    if !resp
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n > 0 && n <= WITH_END_MAX)
    {
        return resp;
    }
    let (parts, mut body) = resp.into_parts();
    let mut frames: Vec<Frame<Bytes>> = Vec::new();
    let end = std::future::poll_fn(|cx| loop {
        WAITED.set(false);
        match Pin::new(&mut body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frames.push(frame),
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Read::Failed(e)),
            Poll::Ready(None) => return Poll::Ready(Read::Whole),
            Poll::Pending if WAITED.replace(false) => return Poll::Pending,
            Poll::Pending => return Poll::Ready(Read::Partial),
        }
    })
    .await;
    let body = match end {
        Read::Whole if frames.len() == 1 && frames[0].is_data() => {
            let data = frames.pop().and_then(|f| f.into_data().ok());
            super::full(data.unwrap_or_default())
        }
        Read::Whole => Replay::boxed(frames, None, None),
        Read::Failed(e) => Replay::boxed(frames, None, Some(e)),
        Read::Partial => Replay::boxed(frames, Some(body), None),
    };
    Response::from_parts(parts, body)
}

/// The frames [`with_end`] read, then the rest of the body or its error.
struct Replay {
    frames: std::collections::VecDeque<Frame<Bytes>>,
    rest: Option<ResponseBody>,
    error: Option<BoxError>,
}

impl Replay {
    fn boxed(
        frames: Vec<Frame<Bytes>>,
        rest: Option<ResponseBody>,
        error: Option<BoxError>,
    ) -> ResponseBody {
        BodyExt::boxed_unsync(Replay {
            frames: frames.into(),
            rest,
            error,
        })
    }
}

impl Body for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(frame) = this.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(e) = this.error.take() {
            return Poll::Ready(Some(Err(e)));
        }
        match this.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
            && self.error.is_none()
            && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let read: u64 = self
            .frames
            .iter()
            .filter_map(|f| f.data_ref())
            .map(|d| d.len() as u64)
            .sum();
        let rest = match &self.rest {
            Some(rest) => rest.size_hint(),
            None => SizeHint::with_exact(0),
        };
        let mut hint = SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(read));
        }
        hint.set_lower(rest.lower().saturating_add(read));
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RequestLogMode;
    use crate::logs::LogSink;
    use crate::metrics::Metrics;
    use http_body_util::Full;

    const BOUND: Duration = Duration::from_secs(10);

    fn emitter(wait: Duration) -> (Arc<Emitter>, crate::logs::LogReceiver) {
        let (sink, rx) = LogSink::new(8);
        let mut e = Emitter::new(Arc::new(sink), Metrics::new(), RequestLogMode::Full);
        e.spool_wait = wait;
        (Arc::new(e), rx)
    }

    fn body(text: &'static str) -> ResponseBody {
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

    /// Polls `fut` once, without a waker that anyone wakes.
    fn poll_now<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(fut).poll(&mut cx)
    }

    async fn text(b: ResponseBody) -> Vec<u8> {
        tokio::time::timeout(BOUND, b.collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    /// A body as the proxy's is to [`with_end`]: frames, waits and a
    /// failure in the order given; its size hint is the length not yet
    /// given out.
    enum Step {
        Data(&'static [u8]),
        /// The wait for the record, as the proxy's bodies wait for it.
        Record(Hold, Pin<Box<Sleep>>),
        /// A wait for upstream, until the sender goes.
        Upstream(tokio::sync::oneshot::Receiver<()>),
        Fail,
    }

    struct Scripted {
        steps: std::collections::VecDeque<Step>,
        len: u64,
    }

    fn scripted(len: u64, steps: Vec<Step>) -> Response<ResponseBody> {
        Response::new(BodyExt::boxed_unsync(Scripted {
            steps: steps.into(),
            len,
        }))
    }

    /// A wait for a record, and what ends it (dropping the sender).
    fn record(e: &Arc<Emitter>) -> (tokio::sync::oneshot::Sender<()>, Step) {
        let (tx, spooled) = Spooled::channel();
        let timer = Box::pin(tokio::time::sleep(Duration::ZERO));
        (tx, Step::Record(Hold::new(spooled, e), timer))
    }

    impl Body for Scripted {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            let this = &mut *self;
            loop {
                match this.steps.front_mut() {
                    None => return Poll::Ready(None),
                    Some(Step::Data(d)) => {
                        let d = Bytes::from_static(d);
                        this.steps.pop_front();
                        this.len -= d.len() as u64;
                        return Poll::Ready(Some(Ok(Frame::data(d))));
                    }
                    Some(Step::Record(hold, timer)) => {
                        if hold.poll_with(cx, timer.as_mut()).is_pending() {
                            return Poll::Pending;
                        }
                        this.steps.pop_front();
                    }
                    Some(Step::Upstream(rx)) => {
                        if Pin::new(rx).poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                        this.steps.pop_front();
                    }
                    Some(Step::Fail) => {
                        this.steps.pop_front();
                        return Poll::Ready(Some(Err("upstream broke off".into())));
                    }
                }
            }
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.len)
        }
    }

    #[tokio::test]
    async fn a_held_body_goes_out_with_its_head_once_its_record_is_spooled() {
        let (e, _rx) = emitter(BOUND);
        let (tx, spooled) = Spooled::channel();
        let resp = held(Response::new(body("answer")), Hold::new(spooled, &e));
        let mut ending = Box::pin(with_end(resp));
        assert!(
            poll_now(&mut ending).is_pending(),
            "the head went ahead of the end"
        );
        drop(tx);
        let resp = tokio::time::timeout(BOUND, ending).await.unwrap();
        assert_eq!(resp.body().size_hint().exact(), Some(6));
        assert_eq!(text(resp.into_body()).await, b"answer");
    }

    #[tokio::test]
    async fn an_answer_whose_end_waits_for_its_record_goes_out_whole() {
        let (e, _rx) = emitter(BOUND);
        let (tx, wait) = record(&e);
        // Every byte has arrived; the last frame waits for the record.
        let resp = scripted(9, vec![Step::Data(b"whole "), wait, Step::Data(b"end")]);
        let mut ending = Box::pin(with_end(resp));
        assert!(
            poll_now(&mut ending).is_pending(),
            "the head went ahead of the end"
        );
        drop(tx);
        let resp = tokio::time::timeout(BOUND, ending).await.unwrap();
        assert_eq!(resp.body().size_hint().exact(), Some(9));
        assert_eq!(text(resp.into_body()).await, b"whole end");

        // One frame: passed on as it is.
        let (tx, wait) = record(&e);
        let resp = scripted(3, vec![wait, Step::Data(b"one")]);
        drop(tx);
        let resp = tokio::time::timeout(BOUND, with_end(resp)).await.unwrap();
        let mut b = resp.into_body();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let first = Pin::new(&mut b).poll_frame(&mut cx);
        assert!(
            matches!(first, Poll::Ready(Some(Ok(ref f))) if f.data_ref().is_some_and(|d| &d[..] == b"one"))
        );
        assert!(b.is_end_stream());
    }

    #[tokio::test]
    async fn an_answer_still_coming_from_upstream_goes_out_at_once() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let resp = scripted(
            7,
            vec![Step::Data(b"par"), Step::Upstream(rx), Step::Data(b"tial")],
        );
        let mut ending = Box::pin(with_end(resp));
        let Poll::Ready(resp) = poll_now(&mut ending) else {
            panic!("the head waited for upstream");
        };
        // What was read, then the rest.
        assert_eq!(resp.body().size_hint().exact(), Some(7));
        drop(tx);
        assert_eq!(text(resp.into_body()).await, b"partial");
    }

    #[tokio::test]
    async fn a_failure_follows_the_frames_read_before_it() {
        let resp = scripted(4, vec![Step::Data(b"ab"), Step::Fail]);
        let resp = tokio::time::timeout(BOUND, with_end(resp)).await.unwrap();
        let mut b = resp.into_body();
        let first = tokio::time::timeout(BOUND, b.frame()).await.unwrap();
        assert_eq!(&first.unwrap().unwrap().into_data().unwrap()[..], b"ab");
        let second = tokio::time::timeout(BOUND, b.frame()).await.unwrap();
        assert_eq!(
            second.unwrap().unwrap_err().to_string(),
            "upstream broke off"
        );
    }

    /// A body that must not be read.
    struct Untouched(SizeHint);

    impl Body for Untouched {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            panic!("read ahead of its head");
        }

        fn size_hint(&self) -> SizeHint {
            self.0
        }
    }

    #[tokio::test]
    async fn streams_and_large_or_empty_bodies_go_out_unread() {
        for hint in [
            SizeHint::default(),
            SizeHint::with_exact(WITH_END_MAX + 1),
            SizeHint::with_exact(0),
        ] {
            let resp = Response::new(BodyExt::boxed_unsync(Untouched(hint)));
            let mut ending = Box::pin(with_end(resp));
            assert!(poll_now(&mut ending).is_ready());
        }
    }
}
