//! What each command does: build the request (checking the arguments
//! before any network traffic), call the admin API, render the answer.

mod config;
mod dataplane;
mod default_params;
mod export;
mod key;
mod limits;
mod logs;
mod model;
mod model_tools;
mod prices;
mod provider;
mod replay;
mod requests;
mod route;
mod secret_arg;
mod stats;
mod target_arg;
mod target_prices;

pub use prices::{ModelPricesArgs, PriceArgs};
pub use target_prices::TargetPriceArgs;

use anyhow::Result;

use crate::args::{Cli, Command};
use crate::output::Out;

pub async fn run(cli: Cli) -> Result<()> {
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let mut out = Out {
        w: &mut lock,
        format: cli.global.output,
    };
    let g = &cli.global;
    match cli.command {
        Command::Provider(cmd) => provider::run(cmd, g, &mut out).await?,
        Command::Model(cmd) => model::run(cmd, g, &mut out).await?,
        Command::Key(cmd) => key::run(cmd, g, &mut out).await?,
        Command::Dataplanes => dataplane::list(g, &mut out).await?,
        Command::Export => config::export(g, &mut out).await?,
        Command::Apply(a) => config::apply(a, g, &mut out).await?,
        Command::Logs(a) => logs::run(a, g, &mut out).await?,
        Command::Stats(a) => stats::run(a, g, &mut out).await?,
        Command::Route(cmd) => route::run(cmd, g, &mut out).await?,
        Command::Limits(a) => limits::run(a, g, &mut out).await?,
        Command::Requests(a) => requests::run(a, g, &mut out).await?,
    }
    out.w.flush()?;
    Ok(())
}

/// The confirmation of a delete.
fn deleted(out: &mut Out<'_>, kind: &str, name: &str) -> Result<()> {
    if out.is_json() {
        out.json(&serde_json::json!({ "deleted": name }))
    } else {
        out.line(&format!("deleted {kind} {name}"))
    }
}
