//! `ExportLogs` (#18): every record a filter matches, oldest first, in
//! pages of [`PAGE`] read with the same keyset query as `ListLogs` and
//! streamed as the client takes them. A bounded channel holds at most
//! [`AHEAD`] pages, so an export of any size holds a few thousand records
//! in memory, and a client that stops reading stops the reads.

use std::pin::Pin;

use futures::Stream;
use llmgw_proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::store::Store;

/// Records per page (`ListLogs`'s largest).
pub const PAGE: u32 = 1000;
/// Pages read ahead of the client.
const AHEAD: usize = 2;
/// The most bytes of records in one message: a page of records with long
/// errors could otherwise pass a client's message limit (the CLI's is
/// 64 MiB; each record's error and its attempts' are each up to 64 KiB).
const MAX_MESSAGE_BYTES: usize = 4 << 20;

pub type ExportStream = Pin<Box<dyn Stream<Item = Result<pb::ExportLogsResponse, Status>> + Send>>;

/// Starts an export. The filter is checked before the stream starts, so a
/// bad filter is the call's error (INVALID_ARGUMENT), not the stream's.
pub fn start(
    store: Store,
    filter: pb::LogFilter,
    mut shutdown: Option<watch::Receiver<bool>>,
) -> Result<ExportStream, Status> {
    crate::logs::sql::Filter::parse(&filter)?;
    let (tx, rx) = mpsc::channel(AHEAD);
    tokio::spawn(async move {
        let mut page_token = String::new();
        loop {
            let page = tokio::select! {
                p = crate::logs::query::list(&store, page_request(filter.clone(), page_token)) => p,
                _ = crate::logs::shutdown_signal(&mut shutdown) => {
                    let _ = tx.send(Err(Status::unavailable("the control plane is shutting down"))).await;
                    return;
                }
            };
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.send(Err(Status::from(e))).await;
                    return;
                }
            };
            let last = page.next_page_token.is_empty();
            for records in chunks(page.records, MAX_MESSAGE_BYTES) {
                if tx
                    .send(Ok(pb::ExportLogsResponse { records }))
                    .await
                    .is_err()
                {
                    return; // the client is gone
                }
            }
            if last {
                return;
            }
            page_token = page.next_page_token;
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// A page's records in order, split into messages of at most `max_bytes`
/// of encoded records (a record larger than that goes alone).
fn chunks(records: Vec<pb::RequestLog>, max_bytes: usize) -> Vec<Vec<pb::RequestLog>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut bytes = 0;
    for r in records {
        let len = prost::Message::encoded_len(&r);
        if !cur.is_empty() && bytes + len > max_bytes {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += len;
        cur.push(r);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn page_request(filter: pb::LogFilter, page_token: String) -> pb::ListLogsRequest {
    pb::ListLogsRequest {
        filter: Some(filter),
        limit: PAGE,
        order_by: "time".into(),
        ascending: true,
        page_token,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: usize, error_bytes: usize) -> pb::RequestLog {
        pb::RequestLog {
            id: id.to_string(),
            error: "e".repeat(error_bytes),
            ..Default::default()
        }
    }

    #[test]
    fn pages_are_split_by_size_in_order() {
        assert!(chunks(Vec::new(), 100).is_empty());
        let small: Vec<_> = (0..5).map(|i| record(i, 0)).collect();
        assert_eq!(chunks(small, 1 << 20).len(), 1);
        // Each record about 1,000 bytes: three fit under 3,500.
        let big: Vec<_> = (0..7).map(|i| record(i, 1000)).collect();
        let c = chunks(big, 3500);
        assert_eq!(c.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
        let ids: Vec<String> = c.into_iter().flatten().map(|r| r.id).collect();
        assert_eq!(ids, ["0", "1", "2", "3", "4", "5", "6"]);
        // A record larger than the limit goes alone.
        let c = chunks(vec![record(0, 10), record(1, 5000), record(2, 10)], 3500);
        assert_eq!(c.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 1]);
    }
}
