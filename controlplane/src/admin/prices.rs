//! The admin service's prices (#16): `GetModelPrices` (the prices in
//! effect per target, and the history of changes), and the scheduling of
//! a model update's prices (`UpdateModelRequest.prices_from`).

use llmgw_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::AdminService;
use crate::convert::prices_pb;
use crate::store::{
    now_ms, parse_rfc3339, rfc3339, target_keys, ModelSpec, PriceChange, PriceSet, Store,
    StoreError, TargetKey,
};

/// When an update's prices apply: `None` for now (also for an empty
/// time).
pub(super) fn prices_from(text: &str) -> Result<Option<i64>, StoreError> {
    parse_rfc3339(text).map_err(|e| match e {
        StoreError::Invalid(m) => StoreError::Invalid(format!("prices_from: {m}")),
        other => other,
    })
}

/// Writes an updated model, first removing its scheduled price changes
/// when `cancel` says so. With a time `from`, its prices (`spec`'s, and
/// its targets' own) are scheduled from then instead, and those in effect
/// (`before`) stay until then.
pub(super) async fn write_update(
    store: &Store,
    tx: &mut sqlx::AnyConnection,
    mut spec: ModelSpec,
    before: &PriceSet,
    from: Option<i64>,
    cancel: bool,
) -> Result<(), StoreError> {
    if cancel {
        store.cancel_scheduled_prices(tx, &spec.name).await?;
    }
    let Some(from) = from else {
        return store.update_model(tx, &spec).await;
    };
    let later = PriceSet::of(&spec);
    before.apply_to(&mut spec);
    store.update_model(tx, &spec).await?;
    store.schedule_prices(tx, &spec.name, from, &later).await
}

/// A recorded change as the API shows it, its target prices numbered by
/// the model's targets now (`keys`, in target order).
fn change_pb(c: &PriceChange, keys: &[TargetKey], now: i64) -> pb::PriceChange {
    let number = |k: &TargetKey| {
        keys.iter()
            .position(|x| x == k)
            .map_or(0, |i| u32::try_from(i + 1).unwrap_or(u32::MAX))
    };
    let targets: Vec<pb::TargetPrices> = c
        .prices
        .targets
        .iter()
        .map(|(k, p)| pb::TargetPrices {
            number: number(k),
            provider: k.provider.clone(),
            upstream_model: k.upstream_model.clone(),
            prices: Some(prices_pb(p)),
        })
        .collect();
    pb::PriceChange {
        from: rfc3339(Some(c.from_ms)),
        recorded_at: rfc3339(Some(c.recorded_ms)),
        scheduled: c.from_ms > now,
        prices: Some(prices_pb(&c.prices.model)),
        target_prices: targets
            .iter()
            .filter(|t| t.number > 0)
            .filter_map(|t| Some((t.number, t.prices.clone()?)))
            .collect(),
        targets,
    }
}

impl AdminService {
    pub(super) async fn get_model_prices_rpc(
        &self,
        request: Request<pb::GetModelPricesRequest>,
    ) -> Result<Response<pb::ModelPrices>, Status> {
        let name = request.into_inner().name;
        let (row, history) = self
            .read(move |store, c| {
                Box::pin(async move {
                    let row = store.model(c, &name).await?;
                    let history = store.price_history(c, &name).await?;
                    Ok((row, history))
                })
            })
            .await?;
        let now = now_ms();
        let s = &row.spec;
        let keys = target_keys(&s.targets);
        Ok(Response::new(pb::ModelPrices {
            name: s.name.clone(),
            prices: Some(prices_pb(&s.prices)),
            targets: s
                .targets
                .iter()
                .enumerate()
                .map(|(i, t)| pb::TargetPrices {
                    number: u32::try_from(i + 1).unwrap_or(u32::MAX),
                    provider: t.provider.clone(),
                    upstream_model: t.upstream_model.clone(),
                    prices: t.prices.as_ref().map(prices_pb),
                })
                .collect(),
            history: history.iter().map(|c| change_pb(c, &keys, now)).collect(),
        }))
    }
}
