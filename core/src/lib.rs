//! Pure domain logic shared by llmgw's binaries, with no I/O: validation of
//! names and URLs, the rule language for targets, client-key hashing, and the
//! routing table that a data plane builds from a discovery snapshot.

pub mod keys;
pub mod limits;
pub mod outlier;
pub mod quota;
pub mod routing;
pub mod rules;
pub mod serving;
pub mod table;
pub mod tokens;
pub mod validate;

pub use table::{RoutingTable, SnapshotError};
pub use validate::{Protocol, Strategy, ValidationError};
