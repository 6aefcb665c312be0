//! Counting connections: [`Gate::admit`] takes a slot (and an
//! unauthenticated slot) or refuses; the [`Conn`] handle gives them back
//! when the connection ends, or the unauthenticated one as soon as a
//! request passes authentication.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::Limits;

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` are open.
    Full,
    /// `max_unauthenticated` connections have not sent a valid key yet.
    Unauthenticated,
}

impl Refusal {
    /// A label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Full => "max_connections",
            Refusal::Unauthenticated => "max_unauthenticated",
        }
    }
}

/// One open connection in [`Shared::counts`].
const OPEN_ONE: u64 = 1 << 32;
/// One unauthenticated connection in [`Shared::counts`].
const UNAUTHENTICATED_ONE: u64 = 1;

/// (open, unauthenticated) out of [`Shared::counts`].
fn split(counts: u64) -> (usize, usize) {
    ((counts >> 32) as usize, (counts & 0xffff_ffff) as usize)
}

/// How often a refusal warning may be logged.
const WARN_EVERY: Duration = Duration::from_secs(10);

struct Shared {
    name: &'static str,
    limits: Limits,
    epoch: Instant,
    /// Open connections (high 32 bits) and, of those, the ones not yet
    /// authenticated (low 32 bits): one atomic, so that no reader sees
    /// one count moved without the other, and a refusal never undoes half
    /// of an admission.
    counts: AtomicU64,
    refused: [AtomicU64; 2],
    idle_closed: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

/// The connection counter of one listener. Cheap to clone.
#[derive(Clone)]
pub struct Gate(Arc<Shared>);

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("name", &self.0.name)
            .field("limits", &self.0.limits)
            .field("open", &self.open())
            .finish()
    }
}

impl Gate {
    /// A gate for the listener called `name` in logs.
    pub fn new(name: &'static str, limits: Limits) -> Self {
        Gate(Arc::new(Shared {
            name,
            limits,
            epoch: Instant::now(),
            counts: AtomicU64::new(0),
            refused: Default::default(),
            idle_closed: AtomicU64::new(0),
            last_warning: Mutex::new(None),
        }))
    }

    pub fn limits(&self) -> &Limits {
        &self.0.limits
    }

    /// Admits a new (unauthenticated) connection, or says why not.
    pub fn admit(&self) -> Result<Conn, Refusal> {
        let s = &self.0;
        let admitted = s
            .counts
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                let (open, unauthenticated) = split(v);
                (open < s.limits.max_connections && unauthenticated < s.limits.max_unauthenticated)
                    .then_some(v + OPEN_ONE + UNAUTHENTICATED_ONE)
            });
        if let Err(v) = admitted {
            let (open, _) = split(v);
            let why = if open >= s.limits.max_connections {
                Refusal::Full
            } else {
                Refusal::Unauthenticated
            };
            return Err(self.refused(why));
        }
        let conn = Conn(Arc::new(ConnState {
            gate: Arc::clone(s),
            authenticated: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            last_activity_ms: AtomicU64::new(0),
        }));
        conn.touch();
        Ok(conn)
    }

    fn refused(&self, why: Refusal) -> Refusal {
        let s = &self.0;
        s.refused[why as usize].fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut last = s.last_warning.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| now.duration_since(t) >= WARN_EVERY) {
            *last = Some(now);
            tracing::warn!(
                listener = s.name,
                reason = why.as_str(),
                open = self.open(),
                unauthenticated = self.unauthenticated(),
                max_connections = s.limits.max_connections,
                max_unauthenticated = s.limits.max_unauthenticated,
                refused_total = self.refused_count(Refusal::Full)
                    + self.refused_count(Refusal::Unauthenticated),
                "refusing new connections (logged at most every 10 s)"
            );
        }
        why
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        split(self.0.counts.load(Ordering::Acquire)).0
    }

    /// Open connections that have not sent a valid key yet.
    pub fn unauthenticated(&self) -> usize {
        split(self.0.counts.load(Ordering::Acquire)).1
    }

    /// Connections refused for `why` since start.
    pub fn refused_count(&self, why: Refusal) -> u64 {
        self.0.refused[why as usize].load(Ordering::Relaxed)
    }

    /// Connections closed for idling since start.
    pub fn idle_closed(&self) -> u64 {
        self.0.idle_closed.load(Ordering::Relaxed)
    }
}

struct ConnState {
    gate: Arc<Shared>,
    authenticated: AtomicBool,
    /// Requests whose response is not fully sent.
    active: AtomicUsize,
    /// Milliseconds since the gate's epoch.
    last_activity_ms: AtomicU64,
}

impl Drop for ConnState {
    fn drop(&mut self) {
        // The last handle: nothing can authenticate it concurrently.
        let release = if self.authenticated.load(Ordering::Acquire) {
            OPEN_ONE
        } else {
            OPEN_ONE + UNAUTHENTICATED_ONE
        };
        self.gate.counts.fetch_sub(release, Ordering::AcqRel);
    }
}

/// One admitted connection; its slots are given back when the last clone
/// is dropped. Request extensions carry a clone so that authentication can
/// [`Conn::authenticated`] it.
#[derive(Clone)]
pub struct Conn(Arc<ConnState>);

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("authenticated", &self.is_authenticated())
            .field("active", &self.active())
            .finish()
    }
}

impl Conn {
    /// Marks the connection as having sent a valid key: it no longer counts
    /// against the unauthenticated cap. Idempotent.
    pub fn authenticated(&self) {
        if !self.0.authenticated.swap(true, Ordering::AcqRel) {
            self.0
                .gate
                .counts
                .fetch_sub(UNAUTHENTICATED_ONE, Ordering::AcqRel);
        }
    }

    pub fn is_authenticated(&self) -> bool {
        self.0.authenticated.load(Ordering::Acquire)
    }

    /// Whether a response sent now should close the connection, and say so
    /// (`Connection: close`): it has not authenticated and is past half of
    /// its idle period, which its requests do not extend (see
    /// [`crate::GuardedIo`]). It is to be closed once idle past that
    /// deadline, however busy its client is; told on a response, the client
    /// opens a new connection instead of sending its next request into
    /// that close.
    pub fn closing_soon(&self) -> bool {
        !self.is_authenticated()
            && Instant::now() + self.0.gate.limits.idle_timeout / 2 >= self.idle_deadline()
    }

    /// Counts a request as in flight until the guard is dropped (keep it in
    /// the response body: see [`crate::TrackedBody`]).
    pub fn request(&self) -> RequestGuard {
        self.0.active.fetch_add(1, Ordering::AcqRel);
        RequestGuard(self.clone())
    }

    pub(crate) fn active(&self) -> usize {
        self.0.active.load(Ordering::Acquire)
    }

    /// Notes activity now: the idle timeout counts from here.
    pub(crate) fn touch(&self) {
        let ms = self.0.gate.epoch.elapsed().as_millis();
        self.0
            .last_activity_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Release);
    }

    /// When the connection turns idle, if nothing happens before.
    pub(crate) fn idle_deadline(&self) -> Instant {
        let ms = self.0.last_activity_ms.load(Ordering::Acquire);
        self.0.gate.epoch + Duration::from_millis(ms) + self.0.gate.limits.idle_timeout
    }

    pub(crate) fn closed_idle(&self) {
        self.0.gate.idle_closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// A request in flight; see [`Conn::request`].
#[derive(Debug)]
pub struct RequestGuard(Conn);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        // Only an authenticated connection's requests count as activity.
        if self.0.is_authenticated() {
            self.0.touch();
        }
        self.0 .0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max: usize, unauth: usize) -> Gate {
        Gate::new(
            "test",
            Limits {
                max_connections: max,
                max_unauthenticated: unauth,
                ..Limits::default()
            },
        )
    }

    #[tokio::test]
    async fn caps_count_and_release() {
        let g = gate(3, 2);
        let a = g.admit().unwrap();
        let b = g.admit().unwrap();
        assert_eq!(g.admit().unwrap_err(), Refusal::Unauthenticated);
        a.authenticated();
        a.authenticated();
        assert_eq!((g.open(), g.unauthenticated()), (2, 1));
        let c = g.admit().unwrap();
        assert_eq!(g.admit().unwrap_err(), Refusal::Full);
        assert_eq!(g.refused_count(Refusal::Full), 1);
        assert_eq!(g.refused_count(Refusal::Unauthenticated), 1);
        drop((a, b, c.clone()));
        assert_eq!((g.open(), g.unauthenticated()), (1, 1));
        drop(c);
        assert_eq!((g.open(), g.unauthenticated()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unauthenticated_connection_is_closing_past_half_its_idle_period() {
        let g = Gate::new(
            "test",
            Limits {
                idle_timeout: Duration::from_secs(10),
                ..Limits::default()
            },
        );
        let (a, b) = (g.admit().unwrap(), g.admit().unwrap());
        tokio::time::sleep(Duration::from_millis(4_900)).await;
        drop(a.request());
        assert!(!a.closing_soon());
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Its requests did not move the deadline.
        assert!(a.closing_soon());
        // An authenticated connection's deadline moves with its requests.
        b.authenticated();
        assert!(!b.closing_soon());
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!b.closing_soon());
    }

    #[tokio::test]
    async fn requests_are_counted_until_their_guard_drops() {
        let g = gate(1, 1);
        let c = g.admit().unwrap();
        let r1 = c.request();
        let r2 = c.request();
        assert_eq!(c.active(), 2);
        drop(r1);
        drop(r2);
        assert_eq!(c.active(), 0);
    }
}
