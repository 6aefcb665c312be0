//! Request and response body wrappers: [`TimedBody`] cuts an upload that
//! stalls or crawls, [`Unread`] gives back a request body its handler
//! dropped before the end, [`TrackedBody`] keeps its connection counted as
//! busy until the response is sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::{BoxError, Limits, RequestGuard};

/// Why a request body was cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlowBody {
    /// No bytes for this long.
    Stalled(Duration),
    /// On average slower than this many bytes per second.
    TooSlow(u64),
}

impl std::fmt::Display for SlowBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SlowBody::Stalled(d) => write!(
                f,
                "the request body was not received in time: no data for {} s",
                d.as_secs_f64()
            ),
            SlowBody::TooSlow(rate) => write!(
                f,
                "the request body was not received in time: it arrived slower than {rate} bytes/s"
            ),
        }
    }
}

impl std::error::Error for SlowBody {}

/// A request body read under a deadline: the next bytes must come within
/// `body_timeout`, and after that grace period the body must have averaged
/// at least `body_min_rate` bytes per second. Past either, the next frame
/// is a [`SlowBody`] error.
pub struct TimedBody<B> {
    inner: B,
    gap: Duration,
    min_rate: u64,
    started: Instant,
    last: Instant,
    received: u64,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> TimedBody<B> {
    pub fn new(inner: B, limits: &Limits) -> Self {
        let now = Instant::now();
        TimedBody {
            inner,
            gap: limits.body_timeout,
            min_rate: limits.body_min_rate,
            started: now,
            last: now,
            received: 0,
            timer: None,
        }
    }

    /// The deadline for the next bytes, and what passing it means.
    fn deadline(&self) -> (Instant, SlowBody) {
        let gap = (self.last + self.gap, SlowBody::Stalled(self.gap));
        if self.min_rate == 0 {
            return gap;
        }
        let allowed = Duration::from_secs_f64(self.received as f64 / self.min_rate as f64);
        let rate = (
            self.started + self.gap + allowed,
            SlowBody::TooSlow(self.min_rate),
        );
        if rate.0 < gap.0 {
            rate
        } else {
            gap
        }
    }

    /// A [`SlowBody`] if the deadline has passed; otherwise the timer is
    /// armed to wake the reader when it does.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<SlowBody> {
        let (deadline, why) = self.deadline();
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready().then_some(why)
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if !data.is_empty() {
                        this.received += data.len() as u64;
                        this.last = Instant::now();
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.expired(cx) {
                Some(why) => Poll::Ready(Some(Err(Box::new(why)))),
                None => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that, when its handler drops it, hands it to its
/// [`Leftover`] instead of dropping it: the server can then see whether it
/// was read to the end and, if not, read the rest itself or close the
/// connection with notice. (hyper, given a request body dropped before its
/// end, tries one read for the rest and otherwise closes the connection
/// after the response, without saying `Connection: close` on it.)
pub struct Unread<B> {
    inner: Option<B>,
    slot: Arc<Mutex<Option<B>>>,
}

/// Where an [`Unread`] body goes when its handler drops it.
pub struct Leftover<B>(Arc<Mutex<Option<B>>>);

impl<B> Unread<B> {
    /// The body, and the handle through which it comes back.
    pub fn new(inner: B) -> (Self, Leftover<B>) {
        let slot = Arc::new(Mutex::new(None));
        let leftover = Leftover(Arc::clone(&slot));
        (
            Unread {
                inner: Some(inner),
                slot,
            },
            leftover,
        )
    }
}

impl<B> Leftover<B> {
    /// The body, if its handler has dropped it (read to the end or not).
    pub fn take(&self) -> Option<B> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl<B> Drop for Unread<B> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            // Nobody to take it back: drop it here.
            if Arc::strong_count(&self.slot) > 1 {
                *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(inner);
            }
        }
    }
}

impl<B: Body + Unpin> Body for Unread<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        match self.get_mut().inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(B::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), B::size_hint)
    }
}

/// A response body that holds its request's [`RequestGuard`]: the
/// connection counts as busy (not idle) until the body is sent or dropped.
pub struct TrackedBody<B> {
    inner: B,
    _guard: RequestGuard,
}

impl<B> TrackedBody<B> {
    pub fn new(inner: B, guard: RequestGuard) -> Self {
        TrackedBody {
            inner,
            _guard: guard,
        }
    }
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    type Chunks = tokio::sync::mpsc::Sender<Bytes>;

    /// A body fed through a channel.
    struct Fed(tokio::sync::mpsc::Receiver<Bytes>);

    impl Body for Fed {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            self.0.poll_recv(cx).map(|c| c.map(|c| Ok(Frame::data(c))))
        }
    }

    fn body(gap_ms: u64, min_rate: u64) -> (Chunks, TimedBody<Fed>) {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let limits = Limits {
            body_timeout: Duration::from_millis(gap_ms),
            body_min_rate: min_rate,
            ..Limits::default()
        };
        (tx, TimedBody::new(Fed(rx), &limits))
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_cut_after_the_gap() {
        let (tx, mut b) = body(1000, 0);
        tx.send(Bytes::from_static(b"abc")).await.unwrap();
        assert!(b.frame().await.unwrap().is_ok());
        let t0 = Instant::now();
        let e = b.frame().await.unwrap().unwrap_err();
        assert_eq!(t0.elapsed(), Duration::from_secs(1));
        assert_eq!(
            e.downcast_ref::<SlowBody>(),
            Some(&SlowBody::Stalled(Duration::from_secs(1)))
        );
        assert!(e.to_string().contains("no data for 1 s"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_crawling_body_is_cut_by_the_rate() {
        // 10 bytes every 500 ms is 20 B/s, under the 100 B/s minimum.
        let (tx, mut b) = body(1000, 100);
        let feeder = tokio::spawn(async move {
            loop {
                if tx.send(Bytes::from_static(b"0123456789")).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let e = loop {
            match b.frame().await.unwrap() {
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert_eq!(e.downcast_ref::<SlowBody>(), Some(&SlowBody::TooSlow(100)));
        feeder.abort();
    }

    #[tokio::test]
    async fn a_dropped_body_comes_back_with_what_is_left() {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let (mut body, leftover) = Unread::new(Fed(rx));
        tx.send(Bytes::from_static(b"abc")).await.unwrap();
        tx.send(Bytes::from_static(b"def")).await.unwrap();
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "abc"
        );
        assert!(leftover.take().is_none(), "still held by its handler");
        drop(body);
        let mut rest = leftover.take().unwrap();
        assert!(leftover.take().is_none());
        assert_eq!(rest.0.recv().await.unwrap(), "def");
    }

    #[tokio::test]
    async fn a_body_without_its_leftover_is_just_dropped() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
        let (body, leftover) = Unread::new(Fed(rx));
        drop(leftover);
        drop(body);
        assert!(tx.is_closed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_complete_body_ends_normally() {
        let (tx, mut b) = body(1000, 100);
        tx.send(Bytes::from_static(b"x")).await.unwrap();
        drop(tx);
        assert!(b.frame().await.unwrap().is_ok());
        assert!(b.frame().await.is_none());
    }
}
