//! The routing table the data plane serves now. The discovery client is the
//! only writer; request handlers read it on the hot path without a lock.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use llmgw_core::RoutingTable;

/// A shared, atomically swapped `Arc<RoutingTable>`; empty until the first
/// snapshot is applied. Cloning shares the same slot.
#[derive(Clone, Default)]
pub struct TableHandle {
    slot: Arc<ArcSwapOption<RoutingTable>>,
    /// Wakes requests waiting for the first table.
    applied: Arc<tokio::sync::Notify>,
}

impl TableHandle {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current table, or `None` before the first snapshot. Lock-free;
    /// the returned `Arc` stays valid even if a newer table is swapped in.
    pub fn load(&self) -> Option<Arc<RoutingTable>> {
        self.slot.load_full()
    }

    /// Whether a table has been applied (no reference count taken).
    pub fn is_loaded(&self) -> bool {
        self.slot.load().is_some()
    }

    /// The current table, waiting up to `bound` for the first one.
    pub async fn wait_loaded(&self, bound: std::time::Duration) -> Option<Arc<RoutingTable>> {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let notified = self.applied.notified();
            tokio::pin!(notified);
            // Registered before the check, so a store in between still wakes us.
            notified.as_mut().enable();
            if let Some(t) = self.load() {
                return Some(t);
            }
            tokio::time::timeout_at(deadline, notified).await.ok()?;
        }
    }

    /// Version of the current table; 0 when none is applied.
    pub fn version(&self) -> u64 {
        self.slot.load().as_ref().map_or(0, |t| t.version)
    }

    /// Publishes a new table in one swap, so readers see all of it or none.
    pub(crate) fn store(&self, table: Arc<RoutingTable>) {
        self.slot.store(Some(table));
        self.applied.notify_waiters();
    }
}

impl fmt::Debug for TableHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableHandle")
            .field("version", &self.version())
            .finish()
    }
}
