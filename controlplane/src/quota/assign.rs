//! The answer to one bucket's usage report: the grant math of the quota
//! protocol (proto/llmgw/v1/quota.proto).
//!
//! - rpm/tpm: the grant is for the window the report names when that is the
//!   control plane's current window or the next one (a data plane whose
//!   clock runs a little ahead); a report about any other window asks for
//!   nothing and is answered with the current window. The node's grant
//!   grows towards `wanted` by what the limit leaves (`Store::grant`), and
//!   never shrinks within its window: the data plane may have used it.
//! - concurrency: the lease is renewed at max(wanted, in_flight) slots
//!   within what the other live leases leave, until now + the lease.
//! - budget: `granted` is the budget itself and `fleet_used` the period's
//!   durable spend; the data plane adds what it charged since.

use llmgw_core::limits::{BucketId, Kind, Limits};
use llmgw_proto::v1 as pb;

use crate::store::{Store, StoreError};

/// Who asks and when.
#[derive(Debug, Clone, Copy)]
pub struct Asker<'a> {
    pub node: &'a str,
    pub now_ms: i64,
    pub lease_ms: u32,
}

/// The assignment answering `usage` of `bucket`, whose `limit` is of
/// `limits`.
pub async fn assign(
    store: &Store,
    asker: Asker<'_>,
    bucket: &BucketId,
    (limits, limit): (&Limits, u64),
    usage: &pb::BucketUsage,
) -> Result<pb::BucketAssignment, StoreError> {
    let now = asker.now_ms;
    let mut out = pb::BucketAssignment {
        bucket: Some(pb::BucketId::from(bucket)),
        limit,
        ..Default::default()
    };
    match bucket.kind {
        Kind::Rpm | Kind::Tpm => {
            let (window, wanted) = rate_window(limits, bucket.kind, now, usage);
            let g = store
                .grant(bucket, window, asker.node, wanted, limit)
                .await?;
            out.window_start_ms = window.0;
            out.granted = g.node;
            out.fleet_used = g.fleet;
            out.expires_at_ms = window.1;
        }
        Kind::Concurrency => {
            let wanted = usage.wanted.max(usage.in_flight);
            let lease = store
                .lease(
                    bucket,
                    asker.node,
                    wanted,
                    limit,
                    now,
                    i64::from(asker.lease_ms),
                )
                .await?;
            out.granted = lease.slots;
            out.fleet_used = lease.fleet;
            out.expires_at_ms = lease.expires_at_ms;
        }
        Kind::Budget => return budget(store, bucket, (limits, limit), now).await,
    }
    Ok(out)
}

/// A budget's assignment at `now`: the budget and the period's spend.
pub async fn budget(
    store: &Store,
    bucket: &BucketId,
    (limits, limit): (&Limits, u64),
    now: i64,
) -> Result<pb::BucketAssignment, StoreError> {
    let period = limits.window(Kind::Budget, now);
    let spent = store.spend(bucket.scope, &bucket.name, period).await?;
    Ok(pb::BucketAssignment {
        bucket: Some(pb::BucketId::from(bucket)),
        window_start_ms: period.0,
        granted: limit,
        limit,
        fleet_used: spent,
        expires_at_ms: 0,
    })
}

/// The window a rate report is answered for, and the total wanted in it.
fn rate_window(
    limits: &Limits,
    kind: Kind,
    now: i64,
    usage: &pb::BucketUsage,
) -> ((i64, i64), u64) {
    let current = limits.window(kind, now);
    let next = limits.window(kind, current.1);
    if usage.window_start_ms == current.0 {
        (current, usage.wanted)
    } else if usage.window_start_ms == next.0 {
        (next, usage.wanted)
    } else {
        (current, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_reports_name_the_current_or_the_next_window() {
        let l = Limits {
            rpm: Some(10),
            window_ms: 1_000,
            ..Limits::default()
        };
        let usage = |start| pb::BucketUsage {
            window_start_ms: start,
            wanted: 4,
            ..Default::default()
        };
        assert_eq!(
            rate_window(&l, Kind::Rpm, 5_500, &usage(5_000)),
            ((5_000, 6_000), 4)
        );
        assert_eq!(
            rate_window(&l, Kind::Rpm, 5_990, &usage(6_000)),
            ((6_000, 7_000), 4)
        );
        // A past, a far or a misaligned window asks for nothing.
        for stale in [4_000, 7_000, 5_001] {
            assert_eq!(
                rate_window(&l, Kind::Rpm, 5_500, &usage(stale)),
                ((5_000, 6_000), 0)
            );
        }
    }
}
