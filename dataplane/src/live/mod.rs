//! The requests this data plane is serving, for the control plane's live
//! view and admin cancel (#17; proto/llmgw/v1/live.proto).
//!
//! A request registers once, when its key and model are known, and is
//! removed when its [`Registration`] drops (the response ended, or the
//! handler was dropped): one insert and one removal per request in one of
//! [`SHARDS`] maps (so requests on different cores seldom meet on a lock),
//! the lock never held across an await. What changes while it runs (the
//! attempt and its target, tokens so far) is written to the entry's own
//! atomics and a small lock taken once per attempt; nothing per chunk but
//! an atomic store. The stream client ([`client`]) reads the entries every
//! 250 ms and reports what changed.
//!
//! A cancel sets the entry's flag and wakes whoever waits on it: the
//! attempt loop's awaits ([`or_cancelled`]) before the response starts,
//! the response body's `poll_frame` after.
//!
//! A grant (replay and playground) is kept in [`grants`] until its one
//! request comes.

pub mod client;
pub mod grants;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use llmgw_proto::v1 as pb;

/// How many maps the entries are spread over, by id.
pub const SHARDS: usize = 16;

/// One shard's map: request ids are UUIDv7s the data plane made itself
/// (never a client's input), whose last characters are random, so they
/// are hashed from those alone ([`IdHasher`]) rather than with SipHash.
type Shard = HashMap<String, Arc<Entry>, std::hash::BuildHasherDefault<IdHasher>>;

/// Every request in flight on this data plane, by id, and the grants
/// waiting for a replay's or playground's request ([`grants`]).
#[derive(Debug, Default)]
pub struct Live {
    shards: [Mutex<Shard>; SHARDS],
    pub grants: grants::Grants,
}

/// Hashes a request id from its last 16 bytes (see [`Shard`]).
#[derive(Debug, Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let tail = &bytes[bytes.len().saturating_sub(16)..];
        for chunk in tail.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(29) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
}

/// One request in flight.
#[derive(Debug)]
pub struct Entry {
    pub id: String,
    pub key: String,
    pub model: String,
    pub client_protocol: &'static str,
    pub stream: bool,
    pub started_ms: i64,
    /// The current attempt's provider, upstream model and protocol.
    target: Mutex<(String, String, &'static str)>,
    attempt: AtomicU32,
    tokens: AtomicU64,
    cancel: AtomicBool,
    waker: AtomicWaker,
    by: OnceLock<String>,
}

/// What a reader of an entry saw last: the attempt and the tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub attempt: u32,
    pub tokens: u64,
}

impl Entry {
    pub fn new(
        id: String,
        key: String,
        model: String,
        client_protocol: &'static str,
        stream: bool,
        started_ms: i64,
    ) -> Self {
        Entry {
            id,
            key,
            model,
            client_protocol,
            stream,
            started_ms,
            target: Mutex::new((String::new(), String::new(), "")),
            attempt: AtomicU32::new(0),
            tokens: AtomicU64::new(0),
            cancel: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            by: OnceLock::new(),
        }
    }

    /// A new attempt starts, at this target.
    pub fn attempt(&self, provider: &str, upstream_model: &str, protocol: &'static str) {
        {
            let mut t = self.target.lock().unwrap_or_else(|e| e.into_inner());
            if t.0 != provider {
                provider.clone_into(&mut t.0);
            }
            if t.1 != upstream_model {
                upstream_model.clone_into(&mut t.1);
            }
            t.2 = protocol;
        }
        self.attempt.fetch_add(1, Ordering::Release);
    }

    /// Tokens so far (see [`pb::InFlightRequest::tokens`]).
    pub fn set_tokens(&self, n: u64) {
        self.tokens.store(n, Ordering::Relaxed);
    }

    pub fn progress(&self) -> Progress {
        Progress {
            attempt: self.attempt.load(Ordering::Acquire),
            tokens: self.tokens.load(Ordering::Relaxed),
        }
    }

    /// Asks the request to stop; `by` is who asked, for its log. Only the
    /// first cancel counts.
    pub fn cancel(&self, by: &str) {
        let _ = self.by.set(by.to_string());
        self.cancel.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether a cancel was asked for; registers `cx` to be woken by one.
    pub fn poll_cancelled(&self, cx: &mut Context<'_>) -> bool {
        if self.cancel.load(Ordering::Acquire) {
            return true;
        }
        self.waker.register(cx.waker());
        self.cancel.load(Ordering::Acquire)
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }

    /// The error a cancelled request's log records: who cancelled, which
    /// names a control plane, so clients get [`CLIENT_CANCEL_MESSAGE`].
    pub fn cancel_message(&self) -> String {
        match self.by.get() {
            Some(by) if !by.is_empty() => format!("the request was cancelled by {by}"),
            _ => "the request was cancelled by an admin".to_string(),
        }
    }

    /// The entry as reported, without the fields the control plane sets.
    pub fn report(&self, node_id: &str, progress: Progress) -> pb::InFlightRequest {
        let (provider, upstream_model, upstream_protocol) = {
            let t = self.target.lock().unwrap_or_else(|e| e.into_inner());
            (t.0.clone(), t.1.clone(), t.2)
        };
        pb::InFlightRequest {
            id: self.id.clone(),
            node_id: node_id.to_string(),
            key: self.key.clone(),
            model: self.model.clone(),
            provider,
            upstream_model,
            client_protocol: self.client_protocol.to_string(),
            upstream_protocol: upstream_protocol.to_string(),
            stream: self.stream,
            started_ms: self.started_ms,
            attempt: progress.attempt,
            tokens: progress.tokens,
            ..Default::default()
        }
    }
}

/// A request's place in [`Live`]: removed when this drops.
#[derive(Debug)]
pub struct Registration {
    live: Arc<Live>,
    entry: Arc<Entry>,
}

impl std::ops::Deref for Registration {
    type Target = Entry;
    fn deref(&self) -> &Entry {
        &self.entry
    }
}

impl Registration {
    pub fn entry(&self) -> &Arc<Entry> {
        &self.entry
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self.live.shard(&self.entry.id);
        map.remove(&self.entry.id);
    }
}

impl Live {
    pub fn new() -> Arc<Self> {
        Arc::new(Live::default())
    }

    /// The locked map of request `id`. Ids are UUIDv7s: their last
    /// characters are random.
    fn shard(&self, id: &str) -> std::sync::MutexGuard<'_, Shard> {
        let h = id.bytes().rev().take(4).fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        self.shards[h % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a request; it stays until the returned registration drops.
    pub fn register(self: &Arc<Self>, entry: Entry) -> Registration {
        let entry = Arc::new(entry);
        self.shard(&entry.id)
            .insert(entry.id.clone(), Arc::clone(&entry));
        Registration {
            live: Arc::clone(self),
            entry,
        }
    }

    /// Every request in flight now.
    pub fn snapshot(&self) -> Vec<Arc<Entry>> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let map = shard.lock().unwrap_or_else(|e| e.into_inner());
            out.extend(map.values().cloned());
        }
        out
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cancels request `id`; false when no such request is in flight.
    pub fn cancel(&self, id: &str, by: &str) -> bool {
        let entry = self.shard(id).get(id).cloned();
        match entry {
            Some(e) => {
                e.cancel(by);
                true
            }
            None => false,
        }
    }
}

/// What the client of a request an admin cancelled is told (the log says
/// who cancelled; the client is not told which control plane).
pub const CLIENT_CANCEL_MESSAGE: &str = "the request was cancelled by an administrator";

/// Runs `fut` unless `entry` is cancelled first: then `Err` with the
/// message the client and the log get (and `fut` is dropped, which aborts
/// an upstream exchange in it).
///
/// A future of its own rather than an `async fn`: an `async fn` kept `fut`
/// three times over in its state (the argument, the `.await` without an
/// entry, the pinned copy), and the attempt's `send`, its error body and
/// the translated answer's read are awaited through this, inside the
/// proxying future the handler boxes (moving it there is a `memcpy` of
/// its whole size: 8,448 bytes before this, past glibc's threshold for
/// `rep movsb`, which callgrind counts byte by byte). Keeping `fut` once
/// saves about 6,300 instructions per request on the plain chat path
/// (`bench/run.sh --no-routes --callgrind 2000`: 128,064 -> 121,796).
pub fn or_cancelled<F: Future>(entry: Option<&Entry>, fut: F) -> OrCancelled<'_, F> {
    OrCancelled { entry, fut }
}

pin_project_lite::pin_project! {
    /// [`or_cancelled`]'s future.
    #[must_use = "futures do nothing unless polled"]
    pub struct OrCancelled<'e, F> {
        entry: Option<&'e Entry>,
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for OrCancelled<'_, F> {
    type Output = Result<F::Output, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(entry) = *this.entry {
            if entry.poll_cancelled(cx) {
                return Poll::Ready(Err(entry.cancel_message()));
            }
        }
        this.fut.poll(cx).map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> Entry {
        Entry::new(id.into(), "k".into(), "m".into(), "openai-chat", true, 1)
    }

    #[test]
    fn a_registration_is_removed_when_it_drops() {
        let live = Live::new();
        let a = live.register(entry("a"));
        let b = live.register(entry("b"));
        assert_eq!(live.len(), 2);
        drop(a);
        assert_eq!(live.len(), 1);
        assert_eq!(live.snapshot()[0].id, "b");
        drop(b);
        assert!(live.is_empty());
    }

    #[test]
    fn ids_spread_over_buckets() {
        use std::hash::BuildHasher;
        let build = std::hash::BuildHasherDefault::<IdHasher>::default();
        let hashes: std::collections::HashSet<u64> = (0..1000)
            .map(|_| build.hash_one(uuid::Uuid::now_v7().to_string()) & 0xfff)
            .collect();
        // 1000 random ids in 4096 buckets: a few collisions at most.
        assert!(hashes.len() > 850, "{}", hashes.len());
        let live = Live::new();
        let regs: Vec<_> = (0..100)
            .map(|_| live.register(entry(&uuid::Uuid::now_v7().to_string())))
            .collect();
        assert_eq!(live.len(), 100);
        let id = regs[42].id.clone();
        assert!(live.cancel(&id, "x"));
        assert!(regs[42].is_cancelled() && !regs[41].is_cancelled());
        drop(regs);
        assert!(live.is_empty());
    }

    #[test]
    fn progress_and_report() {
        let live = Live::new();
        let r = live.register(entry("a"));
        r.attempt("p", "up", "anthropic");
        r.set_tokens(7);
        let p = r.progress();
        assert_eq!(
            p,
            Progress {
                attempt: 1,
                tokens: 7
            }
        );
        let pb = r.report("dp-1", p);
        assert_eq!(pb.provider, "p");
        assert_eq!(pb.upstream_protocol, "anthropic");
        assert_eq!(pb.node_id, "dp-1");
        assert!(pb.stream);
    }

    #[tokio::test]
    async fn a_cancel_wakes_the_waiting_future() {
        let live = Live::new();
        let r = live.register(entry("a"));
        let e = Arc::clone(r.entry());
        let waiting =
            tokio::spawn(async move { or_cancelled(Some(&e), std::future::pending::<()>()).await });
        tokio::task::yield_now().await;
        assert!(!live.cancel("nope", "x"));
        assert!(live.cancel("a", "an admin"));
        let out = waiting.await.unwrap();
        assert_eq!(
            out.unwrap_err(),
            "the request was cancelled by an admin".to_string()
        );
        // Without an entry, the future runs.
        assert_eq!(or_cancelled(None, async { 3 }).await, Ok(3));
    }
}
