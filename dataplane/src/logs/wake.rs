//! When the spool's writes wake the shipper. With nothing held, every
//! write does: the shipper starts a batch (or its linger) at once. While
//! the shipper holds records for a fuller batch, only a write that fills
//! one does (`batch_max_records` records, or `batch_max_bytes` of them,
//! from the first held), or one whose held records have left memory: the
//! rest of the hold is the linger's timer's to end. Under load the writer
//! writes every few requests, and a wake that found the batch still short
//! cost the shipper a poll of its whole `select!` for nothing, about 1,000
//! instructions per request of S3 (docs/benchmarks.md).
//!
//! No wake is lost: a write stores a permit (`Notify::notify_one`) when
//! the shipper is not waiting; the shipper says what it holds (nothing,
//! at first) before it reads the last sequence written; and the spool
//! publishes that sequence before it asks whether to wake
//! (`Spool::publish_written`). So a write that the shipper's read missed
//! meets either no hold, and wakes it, or the hold it set after that read,
//! whose linger timer runs: the write's records are then part of the hold.

use std::sync::{Mutex, PoisonError};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

/// Records the shipper holds back for a fuller batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The first sequence held.
    pub from: u64,
    /// A batch's most records and bytes: a write reaching either wakes.
    pub max_records: u64,
    pub max_bytes: usize,
}

/// The writes' wake-ups of the shipper.
#[derive(Debug, Default)]
pub struct ShipWake {
    /// What the shipper holds; `None`: it waits for any write.
    held: Mutex<Option<Held>>,
    notify: Notify,
}

impl ShipWake {
    /// Says what the shipper holds from now on (`None`: nothing).
    pub fn hold(&self, held: Option<Held>) {
        *self.held.lock().unwrap_or_else(PoisonError::into_inner) = held;
    }

    /// Wakes the shipper whatever it holds (its records left memory).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Resolves at the next wake, or at once for one that came while the
    /// shipper was not waiting.
    pub fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }

    /// After a write whose last sequence is `last`; `bytes_from` gives the
    /// bytes in memory from a sequence on (`None` when it is no longer
    /// there). Wakes the shipper if this write concerns it.
    pub fn written(&self, last: u64, bytes_from: impl FnOnce(u64) -> Option<usize>) {
        let held = *self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let wake = match held {
            None => true,
            Some(h) => {
                last.saturating_sub(h.from) + 1 >= h.max_records
                    || bytes_from(h.from).is_none_or(|b| b >= h.max_bytes)
            }
        };
        if wake {
            self.notify.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Waker};

    /// Whether a wake is waiting for the shipper (taking it).
    fn woken(w: &ShipWake) -> bool {
        let mut n = std::pin::pin!(w.notified());
        n.as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_ready()
    }

    #[test]
    fn only_a_write_that_fills_a_batch_wakes_a_holding_shipper() {
        let w = ShipWake::default();
        // Holding nothing: every write wakes (one stored permit).
        w.written(1, |_| Some(10));
        w.written(2, |_| Some(20));
        assert!(woken(&w));
        assert!(!woken(&w));
        // Holding 11 on, batches of 5 records or 100 bytes.
        w.hold(Some(Held {
            from: 11,
            max_records: 5,
            max_bytes: 100,
        }));
        w.written(14, |from| {
            assert_eq!(from, 11);
            Some(99)
        });
        assert!(!woken(&w), "four records, 99 bytes: still short");
        w.written(15, |_| Some(99));
        assert!(woken(&w), "five records");
        w.written(12, |_| Some(100));
        assert!(woken(&w), "100 bytes");
        w.written(12, |_| None);
        assert!(woken(&w), "the held records left memory");
        w.wake();
        assert!(woken(&w), "told so by a failed write");
        // Held no more: any write wakes again.
        w.hold(None);
        w.written(16, |_| unreachable!());
        assert!(woken(&w));
    }

    #[tokio::test]
    async fn a_wake_before_the_wait_is_kept() {
        let w = std::sync::Arc::new(ShipWake::default());
        w.hold(Some(Held {
            from: 1,
            max_records: 2,
            max_bytes: usize::MAX,
        }));
        w.written(2, |_| Some(0));
        // The shipper waits only now, and is not left waiting.
        tokio::time::timeout(std::time::Duration::from_secs(5), w.notified())
            .await
            .unwrap();
        // A wake from another thread reaches a waiting shipper.
        let writer = std::sync::Arc::clone(&w);
        let wait = tokio::spawn(async move {
            let notified = w.notified();
            notified.await;
        });
        tokio::task::yield_now().await;
        std::thread::spawn(move || writer.written(3, |_| Some(0)))
            .join()
            .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), wait)
            .await
            .unwrap()
            .unwrap();
    }
}
