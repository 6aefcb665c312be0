//! The admin gRPC service: CRUD for providers, models and client keys, the
//! data-plane list, the requests in flight and their cancel (`live`),
//! export/apply of the whole configuration, the listing of a provider's
//! upstream models (`upstream_models`), and the model tools: test, import
//! and retarget (`admin/model_tools.rs`), replay and the playground
//! (`admin/run.rs`). Each write
//! is one transaction; after it commits the hub publishes a new snapshot.
//!
//! Only the gRPC surface lives here: messages become specs and rows become
//! messages in `convert`, and the store's errors become statuses through
//! the one `From<StoreError> for Status` in `status`.

use llmgw_core::keys;
use llmgw_proto::v1 as pb;
use rand::RngCore;
use tonic::{Request, Response, Status};

use crate::apply;
use crate::convert::{
    data_plane_pb, default_params, keep_masked, key_pb, limits_merged, limits_pb, model_pb,
    model_type, normalized_url, prices, protocol, provider_pb, resolve_proxy, resolve_secret,
    strategy, targets_from_pb, translation, upstream_models_pb,
};
use crate::hub::Hub;
use crate::store::{now_ms, Broken, KeySpec, ModelSpec, ProviderSpec, Store, StoreError};

// Model test, import and retarget (#17).
mod model_tools;
// Replay and playground (#17).
mod run;
// Model prices and their history (#16).
mod prices;

#[derive(Debug, Clone)]
pub struct AdminService {
    store: Store,
    hub: Hub,
    /// Freshly stored request logs, for FollowLogs.
    logs: crate::logs::LogFeed,
    /// Ends FollowLogs streams when the server stops.
    shutdown: Option<tokio::sync::watch::Receiver<bool>>,
    /// The requests in flight and cancel (#17).
    live: crate::live::LiveHub,
}

impl AdminService {
    pub fn new(store: Store, hub: Hub) -> Self {
        AdminService {
            hub,
            logs: crate::logs::LogFeed::new(),
            shutdown: None,
            live: crate::live::LiveHub::new(store.clone()),
            store,
        }
    }

    /// Follows the records `feed` publishes; streams end when `shutdown`
    /// turns true.
    pub fn with_logs(
        mut self,
        feed: crate::logs::LogFeed,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        self.logs = feed;
        self.shutdown = Some(shutdown);
        self
    }

    /// Shares the live view the data planes' live streams feed.
    pub fn with_live(mut self, live: crate::live::LiveHub) -> Self {
        self.live = live;
        self
    }

    /// Runs one configuration write and publishes the result.
    async fn write<T, F>(&self, f: F) -> Result<T, Status>
    where
        F: for<'c> FnOnce(
            &'c Store,
            &'c mut sqlx::AnyConnection,
        ) -> futures::future::BoxFuture<'c, Result<T, StoreError>>,
    {
        let mut tx = self.store.begin_write().await?;
        let out = f(&self.store, &mut tx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.hub.changed().await;
        Ok(out)
    }

    async fn read<T, F>(&self, f: F) -> Result<T, Status>
    where
        F: for<'c> FnOnce(
            &'c Store,
            &'c mut sqlx::AnyConnection,
        ) -> futures::future::BoxFuture<'c, Result<T, StoreError>>,
    {
        let mut conn = self
            .store
            .pool()
            .acquire()
            .await
            .map_err(StoreError::from)?;
        Ok(f(&self.store, &mut conn).await?)
    }
}

/// An update of a broken row must set every broken field (`sets` says
/// whether it sets one); otherwise the stored defaults would silently
/// replace what could not be read.
pub fn require_fixes(
    kind: &str,
    name: &str,
    broken: &[Broken],
    sets: impl Fn(&str) -> bool,
) -> Result<(), StoreError> {
    let missing: Vec<&Broken> = broken.iter().filter(|b| !sets(&b.field)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let what: Vec<String> = missing.iter().map(ToString::to_string).collect();
    let fields: Vec<&str> = missing.iter().map(|b| b.field.as_str()).collect();
    Err(StoreError::InUse(format!(
        "{kind} '{name}' is broken ({}); an update must set {}, or delete the {kind}",
        what.join("; "),
        fields.join(", ")
    )))
}

fn new_key_secret() -> Result<String, Status> {
    let mut random = [0u8; 64];
    rand::thread_rng().fill_bytes(&mut random);
    keys::key_from_random(&random).ok_or_else(|| Status::internal("could not generate a key"))
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn create_provider(
        &self,
        request: Request<pb::CreateProviderRequest>,
    ) -> Result<Response<pb::Provider>, Status> {
        let r = request.into_inner();
        let spec = ProviderSpec {
            name: r.name.trim().to_string(),
            protocol: protocol(&r.protocol)?,
            base_url: normalized_url(&r.base_url)?,
            api_key: resolve_secret("api_key", &r.api_key, None)?,
            headers: r.headers.into_iter().collect(),
            timeout_s: r.timeout_s,
            stream_usage: r.stream_usage.unwrap_or(true),
            enabled: r.enabled.unwrap_or(true),
            limits: limits_merged(None, r.limits.as_ref())?,
            proxy: resolve_proxy(&r.proxy, None)?,
            default_params: default_params(r.default_params)?,
        };
        let row = self
            .write(move |store, tx| {
                Box::pin(async move {
                    store.insert_provider(tx, &spec).await?;
                    store.provider(tx, &spec.name).await
                })
            })
            .await?;
        Ok(Response::new(provider_pb(&row)))
    }

    async fn get_provider(
        &self,
        request: Request<pb::GetProviderRequest>,
    ) -> Result<Response<pb::Provider>, Status> {
        let name = request.into_inner().name;
        let row = self
            .read(move |store, c| Box::pin(async move { store.provider(c, &name).await }))
            .await?;
        Ok(Response::new(provider_pb(&row)))
    }

    async fn list_upstream_models(
        &self,
        request: Request<pb::ListUpstreamModelsRequest>,
    ) -> Result<Response<pb::ListUpstreamModelsResponse>, Status> {
        let name = request.into_inner().provider;
        let row = self
            .read(move |store, c| Box::pin(async move { store.provider(c, &name).await }))
            .await?;
        let listed = crate::upstream_models::list(&row).await?;
        Ok(Response::new(upstream_models_pb(listed)))
    }

    async fn list_providers(
        &self,
        _request: Request<pb::ListProvidersRequest>,
    ) -> Result<Response<pb::ListProvidersResponse>, Status> {
        let rows = self
            .read(|store, c| Box::pin(async move { store.providers(c).await }))
            .await?;
        Ok(Response::new(pb::ListProvidersResponse {
            providers: rows.iter().map(provider_pb).collect(),
        }))
    }

    async fn update_provider(
        &self,
        request: Request<pb::UpdateProviderRequest>,
    ) -> Result<Response<pb::Provider>, Status> {
        let r = request.into_inner();
        let proto = r.protocol.as_deref().map(protocol).transpose()?;
        let row = self
            .write(move |store, tx| {
                Box::pin(async move {
                    let stored = store.provider(tx, &r.name).await?;
                    require_fixes("provider", &r.name, &stored.broken, |f| match f {
                        "protocol" => r.protocol.is_some(),
                        "base_url" => r.base_url.is_some(),
                        "api_key" => r.api_key.is_some(),
                        "headers" => r.headers.is_some(),
                        "timeout_s" => r.timeout_s.is_some(),
                        "enabled" => r.enabled.is_some(),
                        "stream_usage" => r.stream_usage.is_some(),
                        "limits" => r.limits.is_some(),
                        "proxy" => r.proxy.is_some(),
                        "default_params" => r.default_params.is_some(),
                        _ => false,
                    })?;
                    let mut spec = stored.spec;
                    if let Some(p) = proto {
                        spec.protocol = p;
                    }
                    if let Some(u) = r.base_url {
                        spec.base_url = normalized_url(&u)?;
                    }
                    if let Some(k) = r.api_key {
                        spec.api_key = resolve_secret("api_key", &k, spec.api_key.as_ref())?;
                    }
                    if let Some(h) = r.headers {
                        spec.headers =
                            keep_masked(h.values.into_iter().collect(), &spec.headers, &spec.name)?;
                    }
                    if let Some(t) = r.timeout_s {
                        spec.timeout_s = t;
                    }
                    if let Some(e) = r.enabled {
                        spec.enabled = e;
                    }
                    if let Some(s) = r.stream_usage {
                        spec.stream_usage = s;
                    }
                    if let Some(p) = &r.proxy {
                        spec.proxy = resolve_proxy(p, spec.proxy.as_ref())?;
                    }
                    if let Some(d) = r.default_params {
                        spec.default_params = default_params(d.values)?;
                    }
                    spec.limits = limits_merged(spec.limits.as_ref(), r.limits.as_ref())?;
                    store.update_provider(tx, &spec).await?;
                    store.provider(tx, &spec.name).await
                })
            })
            .await?;
        Ok(Response::new(provider_pb(&row)))
    }

    async fn delete_provider(
        &self,
        request: Request<pb::DeleteProviderRequest>,
    ) -> Result<Response<pb::DeleteProviderResponse>, Status> {
        let name = request.into_inner().name;
        self.write(move |store, tx| {
            Box::pin(async move { store.delete_provider(tx, &name).await })
        })
        .await?;
        Ok(Response::new(pb::DeleteProviderResponse {}))
    }

    async fn create_model(
        &self,
        request: Request<pb::CreateModelRequest>,
    ) -> Result<Response<pb::Model>, Status> {
        let r = request.into_inner();
        let spec = ModelSpec {
            name: r.name.trim().to_string(),
            strategy: strategy(&r.strategy)?,
            max_attempts: r.max_attempts,
            retry_delay_ms: r.retry_delay_ms,
            prices: prices(r.prices.as_ref(), "prices")?,
            enabled: r.enabled.unwrap_or(true),
            targets: targets_from_pb(&r.targets)?,
            default_max_tokens: r.default_max_tokens,
            translation: translation(&r.translation)?,
            model_type: model_type(&r.r#type)?,
            limits: limits_merged(None, r.limits.as_ref())?,
        };
        let row = self
            .write(move |store, tx| {
                Box::pin(async move {
                    store.insert_model(tx, &spec).await?;
                    store.model(tx, &spec.name).await
                })
            })
            .await?;
        Ok(Response::new(model_pb(&row)))
    }

    async fn get_model(
        &self,
        request: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::Model>, Status> {
        let name = request.into_inner().name;
        let row = self
            .read(move |store, c| Box::pin(async move { store.model(c, &name).await }))
            .await?;
        Ok(Response::new(model_pb(&row)))
    }

    async fn list_models(
        &self,
        _request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let rows = self
            .read(|store, c| Box::pin(async move { store.models(c).await }))
            .await?;
        Ok(Response::new(pb::ListModelsResponse {
            models: rows.iter().map(model_pb).collect(),
        }))
    }

    async fn update_model(
        &self,
        request: Request<pb::UpdateModelRequest>,
    ) -> Result<Response<pb::Model>, Status> {
        let r = request.into_inner();
        let strat = r.strategy.as_deref().map(strategy).transpose()?;
        let mode = r.translation.as_deref().map(translation).transpose()?;
        let kind = r.r#type.as_deref().map(model_type).transpose()?;
        let targets = r
            .targets
            .as_ref()
            .map(|t| targets_from_pb(&t.items))
            .transpose()?;
        let new_prices = r
            .prices
            .as_ref()
            .map(|p| prices(Some(p), "prices"))
            .transpose()?;
        let from = self::prices::prices_from(&r.prices_from)?;
        if from.is_some() && new_prices.is_none() && targets.is_none() {
            return Err(StoreError::Invalid(
                "prices_from needs prices to schedule: the model's, or targets' own".into(),
            )
            .into());
        }
        let row = self
            .write(move |store, tx| {
                Box::pin(async move {
                    let stored = store.model(tx, &r.name).await?;
                    require_fixes("model", &r.name, &stored.broken, |f| match f {
                        "strategy" => strat.is_some(),
                        "max_attempts" => r.max_attempts.is_some(),
                        "retry_delay_ms" => r.retry_delay_ms.is_some() || r.clear_retry_delay,
                        "prices" => r.prices.is_some() || r.cancel_scheduled_prices,
                        "enabled" => r.enabled.is_some(),
                        "default_max_tokens" => {
                            r.default_max_tokens.is_some() || r.clear_default_max_tokens
                        }
                        "translation" => mode.is_some(),
                        "model_type" => kind.is_some(),
                        "limits" => r.limits.is_some(),
                        f => f.starts_with("targets") && targets.is_some(),
                    })?;
                    let mut spec = stored.spec;
                    let before = crate::store::PriceSet::of(&spec);
                    if let Some(s) = strat {
                        spec.strategy = s;
                    }
                    if let Some(n) = r.max_attempts {
                        spec.max_attempts = n;
                    }
                    if r.clear_retry_delay {
                        spec.retry_delay_ms = None;
                    }
                    if let Some(d) = r.retry_delay_ms {
                        spec.retry_delay_ms = Some(d);
                    }
                    if let Some(p) = new_prices {
                        spec.prices = p;
                    }
                    if let Some(e) = r.enabled {
                        spec.enabled = e;
                    }
                    if let Some(t) = targets {
                        spec.targets = t;
                    }
                    if r.clear_default_max_tokens {
                        spec.default_max_tokens = None;
                    }
                    if let Some(n) = r.default_max_tokens {
                        spec.default_max_tokens = Some(n);
                    }
                    if let Some(t) = mode {
                        spec.translation = t;
                    }
                    if let Some(t) = kind {
                        spec.model_type = t;
                    }
                    spec.limits = limits_merged(spec.limits.as_ref(), r.limits.as_ref())?;
                    let name = spec.name.clone();
                    let cancel = r.cancel_scheduled_prices;
                    self::prices::write_update(store, tx, spec, &before, from, cancel).await?;
                    store.model(tx, &name).await
                })
            })
            .await?;
        Ok(Response::new(model_pb(&row)))
    }

    async fn delete_model(
        &self,
        request: Request<pb::DeleteModelRequest>,
    ) -> Result<Response<pb::DeleteModelResponse>, Status> {
        let name = request.into_inner().name;
        self.write(move |store, tx| Box::pin(async move { store.delete_model(tx, &name).await }))
            .await?;
        Ok(Response::new(pb::DeleteModelResponse {}))
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let r = request.into_inner();
        let secret = new_key_secret()?;
        let expires_at = match r.expires_in_s {
            0 => None,
            // Whole seconds, so an exported RFC 3339 time applies unchanged.
            s => Some(
                (now_ms() / 1000)
                    .saturating_add(i64::try_from(s).unwrap_or(i64::MAX / 1000))
                    .saturating_mul(1000),
            ),
        };
        let spec = KeySpec {
            name: r.name.trim().to_string(),
            hash: keys::hash_hex(&secret),
            prefix: keys::display_prefix(&secret),
            models: r.models.iter().map(|m| m.trim().to_string()).collect(),
            expires_at,
            revoked: false,
            log_bodies: r.log_bodies.unwrap_or(true),
            limits: limits_merged(None, r.limits.as_ref())?,
        };
        let row = self
            .write(move |store, tx| {
                Box::pin(async move {
                    store.insert_key(tx, &spec).await?;
                    store.key(tx, &spec.name).await
                })
            })
            .await?;
        Ok(Response::new(pb::CreateApiKeyResponse {
            api_key: Some(key_pb(&row)),
            key: secret,
        }))
    }

    async fn get_api_key(
        &self,
        request: Request<pb::GetApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let name = request.into_inner().name;
        let row = self
            .read(move |store, c| Box::pin(async move { store.key(c, &name).await }))
            .await?;
        Ok(Response::new(key_pb(&row)))
    }

    async fn list_api_keys(
        &self,
        _request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let rows = self
            .read(|store, c| Box::pin(async move { store.keys(c).await }))
            .await?;
        Ok(Response::new(pb::ListApiKeysResponse {
            api_keys: rows.iter().map(key_pb).collect(),
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let name = request.into_inner().name;
        let row = self
            .write(move |store, tx| {
                Box::pin(async move {
                    let stored = store.key(tx, &name).await?;
                    require_fixes("API key", &name, &stored.broken, |_| false)?;
                    let mut spec = stored.spec;
                    spec.revoked = true;
                    store.update_key(tx, &spec).await?;
                    store.key(tx, &name).await
                })
            })
            .await?;
        Ok(Response::new(key_pb(&row)))
    }

    async fn delete_api_key(
        &self,
        request: Request<pb::DeleteApiKeyRequest>,
    ) -> Result<Response<pb::DeleteApiKeyResponse>, Status> {
        let name = request.into_inner().name;
        self.write(move |store, tx| Box::pin(async move { store.delete_key(tx, &name).await }))
            .await?;
        Ok(Response::new(pb::DeleteApiKeyResponse {}))
    }

    async fn update_api_key(
        &self,
        request: Request<pb::UpdateApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let r = request.into_inner();
        let row = self
            .write(move |store, tx| {
                Box::pin(async move {
                    let stored = store.key(tx, &r.name).await?;
                    require_fixes("API key", &r.name, &stored.broken, |f| match f {
                        "models" => r.models.is_some(),
                        "log_bodies" => r.log_bodies.is_some(),
                        "limits" => r.limits.is_some(),
                        _ => false,
                    })?;
                    let mut spec = stored.spec;
                    if let Some(m) = &r.models {
                        spec.models = m.names.iter().map(|m| m.trim().to_string()).collect();
                    }
                    if let Some(b) = r.log_bodies {
                        spec.log_bodies = b;
                    }
                    spec.limits = limits_merged(spec.limits.as_ref(), r.limits.as_ref())?;
                    store.update_key(tx, &spec).await?;
                    store.key(tx, &spec.name).await
                })
            })
            .await?;
        Ok(Response::new(key_pb(&row)))
    }

    async fn get_limits(
        &self,
        request: Request<pb::GetLimitsRequest>,
    ) -> Result<Response<pb::GetLimitsResponse>, Status> {
        Ok(Response::new(
            crate::quota::usage::get_limits(&self.store, &self.hub, request.get_ref()).await?,
        ))
    }

    async fn set_default_key_limits(
        &self,
        request: Request<pb::SetDefaultKeyLimitsRequest>,
    ) -> Result<Response<pb::Limits>, Status> {
        let given = request.into_inner().limits;
        let limits = self
            .write(move |store, tx| {
                Box::pin(async move {
                    let stored = store.default_key_limits(tx).await?;
                    let limits = limits_merged(stored.limits.as_ref(), given.as_ref())?;
                    store.set_default_key_limits(tx, limits.as_ref()).await?;
                    Ok(limits)
                })
            })
            .await?;
        Ok(Response::new(
            limits_pb(limits.as_ref()).unwrap_or_default(),
        ))
    }

    async fn reset_spend(
        &self,
        request: Request<pb::ResetSpendRequest>,
    ) -> Result<Response<pb::ResetSpendResponse>, Status> {
        Ok(Response::new(
            crate::quota::usage::reset_spend(&self.store, &self.hub, request.get_ref()).await?,
        ))
    }

    async fn list_data_planes(
        &self,
        _request: Request<pb::ListDataPlanesRequest>,
    ) -> Result<Response<pb::ListDataPlanesResponse>, Status> {
        let rows = self.store.data_planes().await?;
        let version = self.store.config_version().await?;
        let now = now_ms();
        Ok(Response::new(pb::ListDataPlanesResponse {
            config_version: version,
            data_planes: rows.into_iter().map(|d| data_plane_pb(d, now)).collect(),
        }))
    }

    async fn export_config(
        &self,
        _request: Request<pb::ExportConfigRequest>,
    ) -> Result<Response<pb::GatewayConfig>, Status> {
        let state = self.store.config_state().await?;
        Ok(Response::new(apply::export(&state)))
    }

    async fn apply_config(
        &self,
        request: Request<pb::ApplyConfigRequest>,
    ) -> Result<Response<pb::ApplyConfigResponse>, Status> {
        let r = request.into_inner();
        let desired = r.config.unwrap_or_default();
        let opts = apply::Options {
            prune: r.prune,
            allow_empty: r.allow_empty,
        };
        let mut tx = self.store.begin_write().await?;
        let out = apply::apply(&self.store, &mut tx, desired, opts).await?;
        if r.dry_run || out.changes.is_empty() {
            // Nothing to keep: rolling back also undoes the version bump.
            tx.rollback().await.map_err(StoreError::from)?;
            let version = self.store.config_version().await?;
            return Ok(Response::new(pb::ApplyConfigResponse {
                changes: out.changes,
                config_version: version,
                kept: out.kept,
            }));
        }
        let version = Store::version_in(&mut tx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        self.hub.changed().await;
        Ok(Response::new(pb::ApplyConfigResponse {
            changes: out.changes,
            config_version: version,
            kept: out.kept,
        }))
    }

    async fn list_logs(
        &self,
        request: Request<pb::ListLogsRequest>,
    ) -> Result<Response<pb::ListLogsResponse>, Status> {
        let logs = crate::logs::query::list(&self.store, request.into_inner()).await?;
        Ok(Response::new(logs))
    }

    async fn get_log(
        &self,
        request: Request<pb::GetLogRequest>,
    ) -> Result<Response<pb::RequestLog>, Status> {
        let log = crate::logs::query::get(&self.store, &request.into_inner().id).await?;
        Ok(Response::new(log))
    }

    type FollowLogsStream = crate::logs::LogStream;

    async fn follow_logs(
        &self,
        request: Request<pb::FollowLogsRequest>,
    ) -> Result<Response<Self::FollowLogsStream>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        self.logs
            .follow(filter, self.shutdown.clone())
            .map(Response::new)
    }

    type ExportLogsStream = crate::logs::export::ExportStream;

    async fn export_logs(
        &self,
        request: Request<pb::ExportLogsRequest>,
    ) -> Result<Response<Self::ExportLogsStream>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        crate::logs::export::start(self.store.clone(), filter, self.shutdown.clone())
            .map(Response::new)
    }

    async fn get_stats(
        &self,
        request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        let stats = crate::logs::stats::stats(&self.store, request.into_inner()).await?;
        Ok(Response::new(stats))
    }

    async fn explain_route(
        &self,
        request: Request<pb::ExplainRouteRequest>,
    ) -> Result<Response<pb::ExplainRouteResponse>, Status> {
        let snapshot = self.hub.current();
        crate::explain::explain(snapshot.as_deref(), request.into_inner()).map(Response::new)
    }

    async fn list_in_flight(
        &self,
        request: Request<pb::ListInFlightRequest>,
    ) -> Result<Response<pb::ListInFlightResponse>, Status> {
        let requests = self.live.list(&request.into_inner().node_id).await?;
        Ok(Response::new(pb::ListInFlightResponse { requests }))
    }

    type WatchInFlightStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::InFlightEvent, Status>> + Send>>;

    async fn watch_in_flight(
        &self,
        request: Request<pb::WatchInFlightRequest>,
    ) -> Result<Response<Self::WatchInFlightStream>, Status> {
        let node_id = request.into_inner().node_id;
        Ok(Response::new(
            self.live.watch(node_id, self.shutdown.clone()),
        ))
    }

    async fn cancel_request(
        &self,
        request: Request<pb::CancelRequestRequest>,
    ) -> Result<Response<pb::CancelRequestResponse>, Status> {
        let id = request.into_inner().id;
        let answer = self.live.cancel(&id).await?;
        tracing::info!(id = %answer.id, node_id = %answer.node_id, confirmed = answer.confirmed, "request cancelled by an admin");
        Ok(Response::new(answer))
    }

    // ---------- model tools (#17), in admin/model_tools.rs ----------

    async fn test_model(
        &self,
        request: Request<pb::TestModelRequest>,
    ) -> Result<Response<pb::TestModelResponse>, Status> {
        self.test_model_rpc(request).await
    }

    async fn import_models(
        &self,
        request: Request<pb::ImportModelsRequest>,
    ) -> Result<Response<pb::ImportModelsResponse>, Status> {
        self.import_models_rpc(request).await
    }

    async fn retarget_models(
        &self,
        request: Request<pb::RetargetModelsRequest>,
    ) -> Result<Response<pb::RetargetModelsResponse>, Status> {
        self.retarget_models_rpc(request).await
    }

    // ---------- replay and playground (#17), in admin/run.rs ----------

    type ReplayLogStream = crate::run::RunStream;

    async fn replay_log(
        &self,
        request: Request<pb::ReplayLogRequest>,
    ) -> Result<Response<Self::ReplayLogStream>, Status> {
        self.replay_log_rpc(request).await
    }

    type PlaygroundStream = crate::run::RunStream;

    async fn playground(
        &self,
        request: Request<pb::PlaygroundRequest>,
    ) -> Result<Response<Self::PlaygroundStream>, Status> {
        self.playground_rpc(request).await
    }

    // ---------- prices (#16), in admin/prices.rs ----------

    async fn get_model_prices(
        &self,
        request: Request<pb::GetModelPricesRequest>,
    ) -> Result<Response<pb::ModelPrices>, Status> {
        self.get_model_prices_rpc(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_must_set_every_broken_field() {
        let broken = [
            Broken {
                field: "api_key".into(),
                reason: "cannot be decrypted".into(),
            },
            Broken {
                field: "headers".into(),
                reason: "cannot be decrypted".into(),
            },
        ];
        assert!(require_fixes("provider", "p", &broken, |_| true).is_ok());
        assert!(require_fixes("provider", "p", &[], |_| false).is_ok());
        let e = require_fixes("provider", "p", &broken, |f| f == "api_key").unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("provider 'p' is broken (headers: cannot be decrypted)"),
            "{m}"
        );
        assert!(
            m.contains("an update must set headers, or delete the provider"),
            "{m}"
        );
        assert!(matches!(e, StoreError::InUse(_)));
    }
}
