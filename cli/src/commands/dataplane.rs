//! `llmgw dataplanes`

use anyhow::Result;
use llmgw_proto::v1::{DataPlane, ListDataPlanesRequest};

use crate::args::GlobalOpts;
use crate::client::Client;
use crate::output::{yes_no, Out, Table};

pub async fn list(g: &GlobalOpts, out: &mut Out<'_>) -> Result<()> {
    let c = Client::connect(g).await?;
    let r = c
        .api()
        .list_data_planes(ListDataPlanesRequest {})
        .await
        .map_err(|s| c.fail(s))?
        .into_inner();
    if out.is_json() {
        return out.json(&r.data_planes);
    }
    out.line(&format!("config version: {}", r.config_version))?;
    out.line("")?;
    out.table(&table(&r.data_planes))
}

fn table(planes: &[DataPlane]) -> Table {
    let mut t = Table::new(&[
        "NODE ID",
        "PEER",
        "CONNECTED",
        "ACKED VERSION",
        "LAST SEEN",
        "LAST NACK",
    ]);
    for d in planes {
        let nack = if d.last_nack_error.is_empty() {
            String::new()
        } else {
            format!("v{}: {}", d.nacked_version, d.last_nack_error)
        };
        let connected = if d.connected && !d.connected_since.is_empty() {
            format!("yes (since {})", d.connected_since)
        } else {
            yes_no(d.connected).to_string()
        };
        t.row([
            d.node_id.clone(),
            d.peer_address.clone(),
            connected,
            d.acked_version.to_string(),
            d.last_seen.clone(),
            nack,
        ]);
    }
    t
}
