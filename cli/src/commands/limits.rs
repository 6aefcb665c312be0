//! Limits (#15): the limit flags as a request's `Limits`, limits shown on
//! one line for `get` and `list`, `llmgw limits` (use against every limit),
//! `llmgw limits default` and the `reset-spend` commands.

use anyhow::{bail, Result};
use llmgw_proto::v1::{
    GetLimitsRequest, LimitUsage, Limits, ResetSpendRequest, SetDefaultKeyLimitsRequest,
};

use crate::args::{value_name, GlobalOpts, LimitArgs, LimitsArgs, LimitsCmd};
use crate::client::Client;
use crate::output::{Out, Table};

/// The limits the flags give; `None` when no flag is given (an update then
/// leaves the limits as they are). 0 removes a limit on an update.
pub fn limits_pb(a: &LimitArgs) -> Option<Limits> {
    if !a.any() {
        return None;
    }
    Some(Limits {
        rpm: a.rpm,
        tpm: a.tpm,
        max_concurrency: a.max_concurrency,
        budget_micros: a.budget,
        budget_period: a.budget_period.map(|p| value_name(&p)).unwrap_or_default(),
        window_ms: a.window_ms.unwrap_or(0),
        on_outage: a.on_outage.map(|o| value_name(&o)).unwrap_or_default(),
    })
}

/// Micro-dollars as US dollars: 50000 is "0.05".
pub fn usd(micros: u64) -> String {
    let text = format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Limits on one line: "rpm=10 budget=0.05USD/day window=1000ms"; empty
/// for none. The window and outage mode show only when not the default.
pub fn summary(l: Option<&Limits>) -> String {
    let Some(l) = l else {
        return String::new();
    };
    let mut parts = Vec::new();
    if let Some(n) = l.rpm {
        parts.push(format!("rpm={n}"));
    }
    if let Some(n) = l.tpm {
        parts.push(format!("tpm={n}"));
    }
    if let Some(n) = l.max_concurrency {
        parts.push(format!("concurrency={n}"));
    }
    if let Some(m) = l.budget_micros {
        let period = if l.budget_period.is_empty() {
            "month"
        } else {
            &l.budget_period
        };
        parts.push(format!("budget={}USD/{period}", usd(m)));
    }
    if l.window_ms != 0 && l.window_ms != 60_000 {
        parts.push(format!("window={}ms", l.window_ms));
    }
    if l.on_outage == "closed" {
        parts.push("on_outage=closed".to_string());
    }
    parts.join(" ")
}

pub async fn run(a: LimitsArgs, g: &GlobalOpts, out: &mut Out<'_>) -> Result<()> {
    if let Some(LimitsCmd::Default(flags)) = a.command {
        let Some(limits) = limits_pb(&flags) else {
            bail!("give at least one limit flag (--rpm, --tpm, --max-concurrency, --budget, ...)");
        };
        let c = Client::connect(g).await?;
        let l = c
            .api()
            .set_default_key_limits(SetDefaultKeyLimitsRequest {
                limits: Some(limits),
            })
            .await
            .map_err(|s| c.fail(s))?
            .into_inner();
        if out.is_json() {
            return out.json(&l);
        }
        let shown = summary(Some(&l));
        return out.line(&format!(
            "default key limits: {}",
            if shown.is_empty() { "none" } else { &shown }
        ));
    }
    let c = Client::connect(g).await?;
    let r = c
        .api()
        .get_limits(GetLimitsRequest {
            scope: a.scope.map(|s| value_name(&s)).unwrap_or_default(),
            name: a.name.unwrap_or_default(),
        })
        .await
        .map_err(|s| c.fail(s))?
        .into_inner();
    if out.is_json() {
        return out.json(&r.limits);
    }
    out.table(&usage_table(&r.limits))
}

/// `key|model|provider reset-spend NAME`.
pub async fn reset_spend(
    scope: &str,
    name: String,
    g: &GlobalOpts,
    out: &mut Out<'_>,
) -> Result<()> {
    let c = Client::connect(g).await?;
    let r = c
        .api()
        .reset_spend(ResetSpendRequest {
            scope: scope.to_string(),
            name: name.clone(),
        })
        .await
        .map_err(|s| c.fail(s))?
        .into_inner();
    if out.is_json() {
        return out.json(&r);
    }
    out.line(&format!(
        "reset the spend of {scope} {name}: {} USD forgotten",
        usd(r.forgotten_micros)
    ))
}

/// The length of a window from its RFC 3339 bounds: "1m", "1s".
fn window_length(start: &str, end: &str) -> String {
    let (Ok(s), Ok(e)) = (
        humantime::parse_rfc3339_weak(start),
        humantime::parse_rfc3339_weak(end),
    ) else {
        return String::new();
    };
    e.duration_since(s)
        .map(|d| humantime::format_duration(d).to_string())
        .unwrap_or_default()
}

/// One row per limit: use against the limit, budgets in US dollars.
fn usage_table(limits: &[LimitUsage]) -> Table {
    let mut t = Table::new(&[
        "SCOPE",
        "NAME",
        "KIND",
        "USED/LIMIT",
        "PERCENT",
        "WINDOW",
        "RESETS",
        "ON OUTAGE",
    ]);
    for l in limits {
        let name = if l.default {
            format!("{} (default)", l.name)
        } else {
            l.name.clone()
        };
        let used = if l.kind == "budget" {
            format!("{}/{} USD", usd(l.used), usd(l.limit))
        } else {
            format!("{}/{}", l.used, l.limit)
        };
        let percent = if l.limit == 0 {
            String::new()
        } else {
            format!("{:.1}%", l.used as f64 * 100.0 / l.limit as f64)
        };
        let window = if l.kind == "budget" {
            l.period.clone()
        } else {
            window_length(&l.window_start, &l.window_end)
        };
        t.row([
            l.scope.clone(),
            name,
            l.kind.clone(),
            used,
            percent,
            window,
            l.window_end.clone(),
            l.on_outage.clone(),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{BudgetPeriod, OnOutage};

    #[test]
    fn flags_become_limits_and_no_flag_is_no_change() {
        assert_eq!(limits_pb(&LimitArgs::default()), None);
        let l = limits_pb(&LimitArgs {
            rpm: Some(0),
            budget: Some(50_000),
            budget_period: Some(BudgetPeriod::Week),
            on_outage: Some(OnOutage::Closed),
            ..LimitArgs::default()
        })
        .unwrap();
        assert_eq!(
            l,
            Limits {
                rpm: Some(0),
                budget_micros: Some(50_000),
                budget_period: "week".into(),
                on_outage: "closed".into(),
                ..Limits::default()
            }
        );
    }

    #[test]
    fn limits_on_one_line() {
        assert_eq!(summary(None), "");
        let l = Limits {
            rpm: Some(10),
            tpm: Some(5_000),
            max_concurrency: Some(3),
            budget_micros: Some(1_500_000),
            window_ms: 1_000,
            on_outage: "closed".into(),
            ..Limits::default()
        };
        assert_eq!(
            summary(Some(&l)),
            "rpm=10 tpm=5000 concurrency=3 budget=1.5USD/month window=1000ms on_outage=closed"
        );
        assert_eq!(usd(50_000), "0.05");
        assert_eq!(usd(25_000_000), "25");
        assert_eq!(usd(1), "0.000001");
        assert_eq!(usd(0), "0");
    }

    #[test]
    fn the_usage_table() {
        let rows = [
            LimitUsage {
                scope: "key".into(),
                name: "team".into(),
                kind: "rpm".into(),
                limit: 60,
                used: 15,
                window_start: "2026-12-02T21:00:00Z".into(),
                window_end: "2026-12-02T21:01:00Z".into(),
                on_outage: "open".into(),
                ..LimitUsage::default()
            },
            LimitUsage {
                scope: "key".into(),
                name: "ci".into(),
                kind: "budget".into(),
                limit: 5_000_000,
                used: 4_250_000,
                window_start: "2026-12-01T00:00:00Z".into(),
                window_end: "2027-01-01T00:00:00Z".into(),
                period: "month".into(),
                on_outage: "closed".into(),
                default: true,
            },
            LimitUsage {
                scope: "model".into(),
                name: "gpt".into(),
                kind: "concurrency".into(),
                limit: 3,
                used: 1,
                on_outage: "open".into(),
                ..LimitUsage::default()
            },
        ];
        let want = "\
SCOPE  NAME          KIND         USED/LIMIT  PERCENT  WINDOW  RESETS                ON OUTAGE
key    team          rpm          15/60       25.0%    1m      2026-12-02T21:01:00Z  open
key    ci (default)  budget       4.25/5 USD  85.0%    month   2027-01-01T00:00:00Z  closed
model  gpt           concurrency  1/3         33.3%    -       -                     open
";
        assert_eq!(usage_table(&rows).render(), want);
    }
}
