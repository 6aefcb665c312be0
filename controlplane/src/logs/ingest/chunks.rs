//! How a batch's records go in, whatever the engine: chunk by chunk in one
//! transaction, each chunk in a savepoint of its own (the inserts are the
//! writer's, `Inserter`).
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
use sqlx::{Acquire, Database, Transaction};

use super::record::{is_duplicate, record_level, Batch, Blocks, Prepared, Rejected, Resent};
use crate::store::{Backend, StoreError};

/// A writer's database, as [`insert_all`] drives it.
pub(super) trait Inserter: Database {
    /// Which engine, to tell a record's refusal from the database's.
    const BACKEND: Backend;

    /// Inserts `chunk`'s records, their attempts and their details on
    /// `conn`; returns the ids inserted.
    fn insert<'a>(
        conn: &'a mut Self::Connection,
        chunk: &'a [Prepared],
        blocks: &'a Blocks,
        resent: Resent,
    ) -> BoxFuture<'a, Result<Vec<String>, sqlx::Error>>;
}

/// [`Inserter::insert`] in a savepoint, so that a failure leaves the
/// transaction as it was.
async fn insert_in_savepoint<DB: Inserter>(
    tx: &mut Transaction<'static, DB>,
    chunk: &[Prepared],
    blocks: &Blocks,
    resent: Resent,
) -> Result<Vec<String>, sqlx::Error> {
    let mut sp = Acquire::begin(&mut *tx).await?;
    match DB::insert(&mut sp, chunk, blocks, resent).await {
        Ok(ids) => {
            sp.commit().await?;
            Ok(ids)
        }
        Err(e) => {
            sp.rollback().await?;
            Err(e)
        }
    }
}

/// Inserts the batch's records on `tx`; returns the ids inserted now, and
/// adds the records the database refused to `rejected`.
pub(super) async fn insert_all<DB: Inserter>(
    tx: &mut Transaction<'static, DB>,
    batch: &Batch<'_>,
    rejected: &mut Vec<Rejected>,
) -> Result<HashSet<String>, StoreError> {
    let blocks = batch.blocks;
    let mut inserted: HashSet<String> = HashSet::new();
    let mut resent = Resent::Fail;
    for chunk in batch.good.chunks(batch.per_insert) {
        let outcome = match insert_in_savepoint(tx, chunk, blocks, resent).await {
            Err(e) if resent == Resent::Fail && is_duplicate(&e) => {
                resent = Resent::Skip;
                insert_in_savepoint(tx, chunk, blocks, Resent::Skip).await
            }
            other => other,
        };
        match outcome {
            Ok(ids) => inserted.extend(ids),
            Err(e) if record_level(DB::BACKEND, &e) => {
                tracing::warn!(error = %e, "a log insert failed; retrying record by record");
                for p in chunk {
                    let one = std::slice::from_ref(p);
                    match insert_in_savepoint(tx, one, blocks, Resent::Skip).await {
                        Ok(ids) => inserted.extend(ids),
                        Err(e) if record_level(DB::BACKEND, &e) => rejected
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
