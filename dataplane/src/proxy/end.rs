//! A response's head kept back for its end, when the end is near: the
//! second step of [`super::Proxy::handle`].
//!
//! A response's last bytes wait until its record is in the spool
//! ([`super::hold`]), and hyper sends a head as soon as the body makes it
//! wait. So a non-streaming answer went out in two writes, the head and,
//! a spool write later, the body: two segments and two wake-ups of the
//! client, kernel CPU that the proxy pays on every such answer. Here the
//! body of a response of known length up to [`WITH_END_MAX`] is read
//! before its head goes out, for as long as the body waits only for its
//! record; head and body then go out in one write. A body that waits for
//! anything else (upstream) ends the reading at once: the response goes
//! out with what was read in front of the rest, so a slow upstream delays
//! nothing. A body of unknown length (a stream) is never read here.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::hold;
use super::ResponseBody;
use crate::server::BoxError;

/// The longest body whose head [`with_end`] keeps back for it.
pub(super) const WITH_END_MAX: u64 = 64 * 1024;

/// How [`with_end`]'s reading of a body stopped.
enum Reading {
    /// The body ended: every frame is read.
    Whole,
    /// The body failed after the frames read.
    Failed(BoxError),
    /// The rest is still to come (from upstream), or the body gave more
    /// than it promised: what is left goes as the body gives it.
    Left,
}

/// `resp` with its head kept back until its end, when its body (of known
/// length up to [`WITH_END_MAX`]) is whole but for its record's wait: a
/// body the gateway made ([`hold::held`]), or a passed-through answer
/// whose bytes have all arrived.
pub(super) async fn with_end(resp: Response<ResponseBody>) -> Response<ResponseBody> {
    let Some(promised) = resp
        .body()
        .size_hint()
        .exact()
        .filter(|n| (1..=WITH_END_MAX).contains(n))
    else {
        return resp;
    };
    let (parts, mut body) = resp.into_parts();
    let mut frames: Vec<Frame<Bytes>> = Vec::new();
    let mut read = 0u64;
    let reading = std::future::poll_fn(|cx| loop {
        hold::clear_waited();
        match Pin::new(&mut body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                read += frame.data_ref().map_or(0, |d| d.len() as u64);
                frames.push(frame);
                if read > promised {
                    return Poll::Ready(Reading::Left);
                }
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Reading::Failed(e)),
            Poll::Ready(None) => return Poll::Ready(Reading::Whole),
            Poll::Pending if hold::waited() => return Poll::Pending,
            Poll::Pending => return Poll::Ready(Reading::Left),
        }
    })
    .await;
    let body = match reading {
        Reading::Whole if read == promised && frames.len() == 1 && frames[0].is_data() => {
            let data = frames.pop().and_then(|f| f.into_data().ok());
            super::full(data.unwrap_or_default())
        }
        Reading::Left if frames.is_empty() => body,
        Reading::Left => Replay::boxed(frames, Rest::Body(body)),
        // The length stays the one promised (and sent as the head's
        // `content-length`): a body that ends short of it is cut, and
        // hyper closes the connection, as it would have without this step.
        Reading::Whole => Replay::boxed(frames, Rest::Short(promised.saturating_sub(read))),
        Reading::Failed(e) => Replay::boxed(frames, Rest::Failed(e, promised.saturating_sub(read))),
    };
    Response::from_parts(parts, body)
}

/// What follows the frames [`with_end`] read.
enum Rest {
    /// The rest of the body, as it comes.
    Body(ResponseBody),
    /// The body's end, this many bytes short of its promised length.
    Short(u64),
    /// The body's failure, this many bytes short of its promised length.
    Failed(BoxError, u64),
    /// Given out.
    Done,
}

/// The frames [`with_end`] read, then the rest. Its size is the promised
/// one, whatever came, so that hyper frames the response as the head says.
struct Replay {
    frames: VecDeque<Frame<Bytes>>,
    rest: Rest,
}

impl Replay {
    fn boxed(frames: Vec<Frame<Bytes>>, rest: Rest) -> ResponseBody {
        BodyExt::boxed_unsync(Replay {
            frames: frames.into(),
            rest,
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
        match std::mem::replace(&mut this.rest, Rest::Done) {
            Rest::Body(mut rest) => {
                let polled = Pin::new(&mut rest).poll_frame(cx);
                this.rest = Rest::Body(rest);
                polled
            }
            Rest::Failed(e, _) => Poll::Ready(Some(Err(e))),
            Rest::Short(_) | Rest::Done => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
            && match &self.rest {
                Rest::Body(rest) => rest.is_end_stream(),
                Rest::Failed(..) => false,
                Rest::Short(_) | Rest::Done => true,
            }
    }

    fn size_hint(&self) -> SizeHint {
        let queued: u64 = self
            .frames
            .iter()
            .filter_map(Frame::data_ref)
            .map(|d| d.len() as u64)
            .sum();
        let rest = match &self.rest {
            Rest::Body(rest) => rest.size_hint(),
            Rest::Short(n) | Rest::Failed(_, n) => SizeHint::with_exact(*n),
            Rest::Done => SizeHint::with_exact(0),
        };
        let mut hint = SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(queued));
        }
        hint.set_lower(rest.lower().saturating_add(queued));
        hint
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::time::Sleep;

    use super::*;
    use crate::logs::Spooled;
    use crate::proxy::hold::tests::{body, emitter, BOUND};
    use crate::proxy::hold::{held, Hold};
    use crate::proxy::record::Emitter;

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
        steps: VecDeque<Step>,
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
                        this.len = this.len.saturating_sub(d.len() as u64);
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
        assert!(!resp.body().is_end_stream());
        assert_eq!(text(resp.into_body()).await, b"whole end");

        // As long as the longest kept back.
        static LONGEST: [u8; WITH_END_MAX as usize] = [b'x'; WITH_END_MAX as usize];
        let (tx, wait) = record(&e);
        let resp = scripted(WITH_END_MAX, vec![wait, Step::Data(&LONGEST)]);
        let mut ending = Box::pin(with_end(resp));
        assert!(poll_now(&mut ending).is_pending());
        drop(tx);
        let resp = tokio::time::timeout(BOUND, ending).await.unwrap();
        assert_eq!(text(resp.into_body()).await.len(), LONGEST.len());
    }

    #[tokio::test]
    async fn an_answer_still_coming_from_upstream_goes_out_at_once() {
        // A record's wait left over from another response polled on this
        // thread does not count for this one.
        let (e, _rx) = emitter(BOUND);
        let (_tx, spooled) = Spooled::channel();
        let mut other = held(Response::new(body("other")), Hold::new(spooled, &e)).into_body();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut other).poll_frame(&mut cx).is_pending());

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
        assert!(!resp.body().is_end_stream());
        drop(tx);
        assert_eq!(text(resp.into_body()).await, b"partial");
    }

    #[tokio::test]
    async fn a_failure_follows_the_frames_read_before_it_at_the_promised_length() {
        let resp = scripted(4, vec![Step::Data(b"ab"), Step::Fail]);
        let resp = tokio::time::timeout(BOUND, with_end(resp)).await.unwrap();
        // The head's length stays the promised one: hyper cuts the
        // connection at the failure instead of ending the response short.
        assert_eq!(resp.body().size_hint().exact(), Some(4));
        let mut b = resp.into_body();
        assert!(!b.is_end_stream());
        let first = tokio::time::timeout(BOUND, b.frame()).await.unwrap();
        assert_eq!(&first.unwrap().unwrap().into_data().unwrap()[..], b"ab");
        assert_eq!(b.size_hint().exact(), Some(2));
        let second = tokio::time::timeout(BOUND, b.frame()).await.unwrap();
        assert_eq!(
            second.unwrap().unwrap_err().to_string(),
            "upstream broke off"
        );

        // A body that ends short keeps the promised length too.
        let resp = scripted(5, vec![Step::Data(b"ab")]);
        let resp = tokio::time::timeout(BOUND, with_end(resp)).await.unwrap();
        assert_eq!(resp.body().size_hint().exact(), Some(5));
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
