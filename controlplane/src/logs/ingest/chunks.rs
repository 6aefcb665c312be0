//! How a batch's records go in, whatever the engine: chunk by chunk in one
//! transaction, each chunk in a savepoint of its own (`Inserter`, one per
//! writer).
//!
//! Nearly always every record is new: plain inserts, which check each
//! row's id once, where `ON CONFLICT DO NOTHING` looks it up before
//! inserting too. A record stored before (a batch sent again after a lost
//! ack) fails its chunk, which is then inserted again skipping what is
//! stored, and so are the batch's later chunks (a resent batch is most
//! likely resent whole). A chunk the database refuses for its data goes in
//! record by record, and the records it refuses on their own join the
//! quarantine.

use std::collections::HashSet;

use futures::future::BoxFuture;

use super::record::{is_duplicate, record_level, Batch, Blocks, Prepared, Rejected, Resent};
use crate::store::{Backend, StoreError};

/// A writer's transaction, as [`insert_all`] drives it.
pub(super) trait Inserter {
    /// Inserts `chunk`'s records, their attempts and their details in a
    /// savepoint, so that a failure leaves the transaction as it was.
    /// Returns the ids inserted.
    fn insert<'a>(
        &'a mut self,
        chunk: &'a [Prepared],
        blocks: &'a Blocks,
        resent: Resent,
    ) -> BoxFuture<'a, Result<Vec<String>, sqlx::Error>>;
}

/// Inserts the batch's records on `tx`; returns the ids inserted now, and
/// adds the records the database refused to `rejected`.
pub(super) async fn insert_all(
    tx: &mut impl Inserter,
    backend: Backend,
    batch: &Batch<'_>,
    rejected: &mut Vec<Rejected>,
) -> Result<HashSet<String>, StoreError> {
    let blocks = batch.blocks;
    let mut inserted: HashSet<String> = HashSet::new();
    let mut resent = Resent::Fail;
    for chunk in batch.good.chunks(batch.per_insert) {
        let outcome = match tx.insert(chunk, blocks, resent).await {
            Err(e) if resent == Resent::Fail && is_duplicate(&e) => {
                resent = Resent::Skip;
                tx.insert(chunk, blocks, Resent::Skip).await
            }
            other => other,
        };
        match outcome {
            Ok(ids) => inserted.extend(ids),
            Err(e) if record_level(backend, &e) => {
                tracing::warn!(error = %e, "a log insert failed; retrying record by record");
                for p in chunk {
                    let one = std::slice::from_ref(p);
                    match tx.insert(one, blocks, Resent::Skip).await {
                        Ok(ids) => inserted.extend(ids),
                        Err(e) if record_level(backend, &e) => rejected
                            .push(p.refused(format!("the database rejected the record: {e}"))),
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(inserted)
}
