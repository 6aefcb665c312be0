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

pub type ExportStream = Pin<Box<dyn Stream<Item = Result<pb::ExportLogsResponse, Status>> + Send>>;

/// Starts an export. The filter is checked before the stream starts, so a
/// bad filter is the call's error (INVALID_ARGUMENT), not the stream's.
pub fn start(
    store: Store,
    filter: pb::LogFilter,
    mut shutdown: Option<watch::Receiver<bool>>,
) -> Result<ExportStream, Status> {
    let first = page_request(filter.clone(), String::new());
    crate::logs::query::list_statement(&first)?;
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
            if !page.records.is_empty()
                && tx
                    .send(Ok(pb::ExportLogsResponse {
                        records: page.records,
                    }))
                    .await
                    .is_err()
            {
                return; // the client is gone
            }
            if last {
                return;
            }
            page_token = page.next_page_token;
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
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
