//! The routing table the data plane serves now. The discovery client is the
//! only writer; request handlers read it on the hot path without a lock.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use llmgw_core::RoutingTable;

/// A shared, atomically swapped `Arc<RoutingTable>`; empty until the first
/// snapshot is applied. Cloning shares the same slot.
#[derive(Clone, Default)]
pub struct TableHandle(Arc<ArcSwapOption<RoutingTable>>);

impl TableHandle {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current table, or `None` before the first snapshot. Lock-free;
    /// the returned `Arc` stays valid even if a newer table is swapped in.
    pub fn load(&self) -> Option<Arc<RoutingTable>> {
        self.0.load_full()
    }

    /// Version of the current table; 0 when none is applied.
    pub fn version(&self) -> u64 {
        self.0.load().as_ref().map_or(0, |t| t.version)
    }

    /// Publishes a new table in one swap, so readers see all of it or none.
    pub(crate) fn store(&self, table: Arc<RoutingTable>) {
        self.0.store(Some(table));
    }
}

impl fmt::Debug for TableHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableHandle")
            .field("version", &self.version())
            .finish()
    }
}
