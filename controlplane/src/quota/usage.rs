//! The admin side of the quota runtime: GetLimits (every configured limit
//! with its fleet-wide use now) and ResetSpend (forget a budget's spend in
//! its current period). Both read the limits of the current snapshot (the
//! hub's, `None` before the first).
//!
//! Fleet use is what the database knows: for rpm/tpm the grants handed out
//! in the current window (an upper bound of what was admitted), for
//! concurrency the live leases, for a budget the spend counted from the
//! request logs stored so far.

use llmgw_core::limits::{BucketId, Kind, LimitsError, Period, Scope};
use llmgw_proto::v1 as pb;

use super::configured::{Configured, LimitTable};
use crate::hub::Hub;
use crate::logs::format_time;
use crate::store::{now_ms, Store, StoreError};

/// GetLimits over the hub's current snapshot.
pub async fn get_limits(
    store: &Store,
    hub: &Hub,
    req: &pb::GetLimitsRequest,
) -> Result<pb::GetLimitsResponse, StoreError> {
    limits_of(store, hub.current().as_deref(), req).await
}

/// ResetSpend over the hub's current snapshot.
pub async fn reset_spend(
    store: &Store,
    hub: &Hub,
    req: &pb::ResetSpendRequest,
) -> Result<pb::ResetSpendResponse, StoreError> {
    reset_spend_of(store, hub.current().as_deref(), req).await
}

/// Every limit `snapshot` configures that matches the request, in scope,
/// name and kind order.
pub async fn limits_of(
    store: &Store,
    snapshot: Option<&pb::Snapshot>,
    req: &pb::GetLimitsRequest,
) -> Result<pb::GetLimitsResponse, StoreError> {
    let scope = match req.scope.as_str() {
        "" => None,
        s => Some(parse_scope(s)?),
    };
    let table = table_of(snapshot);
    let now = now_ms();
    let mut limits = Vec::new();
    for (s, name, c) in table.iter() {
        if scope.is_some_and(|want| want != s) || (!req.name.is_empty() && req.name != name) {
            continue;
        }
        for (kind, limit) in c.limits.kinds() {
            limits.push(usage(store, &BucketId::new(s, name, kind), c, limit, now).await?);
        }
    }
    Ok(pb::GetLimitsResponse { limits })
}

async fn usage(
    store: &Store,
    bucket: &BucketId,
    c: &Configured,
    limit: u64,
    now: i64,
) -> Result<pb::LimitUsage, StoreError> {
    let (start, end) = c.limits.window(bucket.kind, now);
    let (used, window, period) = match bucket.kind {
        Kind::Rpm | Kind::Tpm => (
            store.window_granted(bucket, start).await?,
            Some((start, end)),
            None,
        ),
        Kind::Concurrency => (
            store.leased(bucket.scope, &bucket.name, now).await?,
            None,
            None,
        ),
        Kind::Budget => {
            let period = c.limits.budget.map(|b| b.period);
            (
                store
                    .spend(bucket.scope, &bucket.name, (start, end))
                    .await?,
                (period != Some(Period::Total)).then_some((start, end)),
                period,
            )
        }
    };
    let (window_start, window_end) =
        window.map_or_else(Default::default, |(s, e)| (format_time(s), format_time(e)));
    Ok(pb::LimitUsage {
        scope: bucket.scope.as_str().to_owned(),
        name: bucket.name.clone(),
        kind: bucket.kind.as_str().to_owned(),
        limit,
        used,
        window_start,
        window_end,
        period: period.map(|p| p.as_str().to_owned()).unwrap_or_default(),
        on_outage: c.limits.on_outage.as_str().to_owned(),
        default: c.default,
    })
}

/// Forgets the spend of a scope's name in its budget's current period, as
/// `snapshot` configures it.
pub async fn reset_spend_of(
    store: &Store,
    snapshot: Option<&pb::Snapshot>,
    req: &pb::ResetSpendRequest,
) -> Result<pb::ResetSpendResponse, StoreError> {
    let scope = parse_scope(&req.scope)?;
    if req.name.is_empty() {
        return Err(StoreError::Invalid("reset-spend needs a name".into()));
    }
    let table = table_of(snapshot);
    let Some(c) = table.get(scope, &req.name) else {
        return Err(StoreError::NotFound(format!(
            "{scope} '{}' has no limits (or does not exist, or is disabled)",
            req.name
        )));
    };
    if c.limits.budget.is_none() {
        return Err(StoreError::InUse(format!(
            "{scope} '{}' has no budget; there is no spend to reset",
            req.name
        )));
    }
    let now = now_ms();
    let period = c.limits.window(Kind::Budget, now);
    let forgotten = store.reset_spend(scope, &req.name, period, now).await?;
    tracing::info!(%scope, name = req.name, forgotten_micros = forgotten, "spend reset");
    Ok(pb::ResetSpendResponse {
        forgotten_micros: forgotten,
    })
}

fn parse_scope(s: &str) -> Result<Scope, StoreError> {
    Scope::parse(s).ok_or_else(|| StoreError::Invalid(LimitsError::Scope(s.to_owned()).to_string()))
}

fn table_of(snapshot: Option<&pb::Snapshot>) -> LimitTable {
    snapshot.map(LimitTable::from_snapshot).unwrap_or_default()
}
