//! The snapshot hub: builds the discovery snapshot from the store and
//! publishes it to every discovery stream through a `watch` channel.
//!
//! It rebuilds after each admin write. On PostgreSQL every configuration
//! write also sends a NOTIFY, which the other control planes on the same
//! database LISTEN for, so a change made through any of them reaches the
//! data planes of all of them at once. A reconcile loop compares the stored
//! configuration version every few seconds as well, to catch a notification
//! lost while a listening connection was down.

use std::sync::Arc;
use std::time::Duration;

use llmgw_proto::v1 as pb;
use secrecy::ExposeSecret;
use tokio::sync::{watch, Mutex};

use crate::convert::limits_pb;
use crate::settings::GlobalSettings;
use crate::store::{Backend, ConfigState, Store, StoreError, CONFIG_CHANNEL};
use llmgw_core::price::exact_pb;
use sqlx::postgres::PgListener;

/// How often the stored version is compared with the published one.
const RECONCILE_EVERY: Duration = Duration::from_secs(2);
const LISTEN_BACKOFF_MIN: Duration = Duration::from_millis(200);
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Hub {
    store: Store,
    tx: Arc<watch::Sender<Option<Arc<pb::Snapshot>>>>,
    /// Serialises rebuilds so that versions are published in order.
    rebuild: Arc<Mutex<()>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("version", &self.current().map(|s| s.version))
            .finish()
    }
}

impl Hub {
    pub fn new(store: Store) -> Self {
        let (tx, _) = watch::channel(None);
        Hub {
            store,
            tx: Arc::new(tx),
            rebuild: Arc::new(Mutex::new(())),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<pb::Snapshot>>> {
        self.tx.subscribe()
    }

    pub fn current(&self) -> Option<Arc<pb::Snapshot>> {
        self.tx.borrow().clone()
    }

    /// Rebuilds from the store and publishes if the version moved on.
    pub async fn refresh(&self) -> Result<u64, StoreError> {
        let _one_at_a_time = self.rebuild.lock().await;
        // Cheap first: a burst of notifications finds the work done.
        let stored = self.store.config_version().await?;
        if self.current().is_some_and(|s| s.version >= stored) {
            return Ok(stored);
        }
        let state = self.store.config_state().await?;
        let version = state.version;
        if self.current().is_some_and(|s| s.version >= version) {
            return Ok(version);
        }
        let snapshot = build_snapshot(state)?;
        tracing::info!(
            version,
            providers = snapshot.providers.len(),
            models = snapshot.models.len(),
            keys = snapshot.keys.len(),
            "publishing snapshot"
        );
        self.tx.send_replace(Some(Arc::new(snapshot)));
        Ok(version)
    }

    /// Refreshes after a write; a failure is logged, and the reconcile loop
    /// tries again.
    pub async fn changed(&self) {
        if let Err(e) = self.refresh().await {
            tracing::error!(error = %e, "could not publish the new configuration");
        }
    }

    /// Runs until `shutdown` resolves.
    pub async fn reconcile(self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(RECONCILE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let published = self.current().map_or(0, |s| s.version);
            match self.store.config_version().await {
                Ok(v) if v > published => self.changed().await,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the configuration version"),
            }
        }
    }
}

impl Hub {
    /// PostgreSQL only: refreshes on every notification of a configuration
    /// change, until `shutdown` resolves. The listening connection is
    /// re-established after a failure, followed by a refresh in case a
    /// notification was missed meanwhile.
    pub async fn listen(self, mut shutdown: watch::Receiver<bool>) {
        if self.store.backend() != Backend::Postgres {
            return;
        }
        let mut backoff = LISTEN_BACKOFF_MIN;
        loop {
            let started = tokio::time::Instant::now();
            let outcome = tokio::select! {
                r = self.listen_once() => r,
                _ = shutdown.changed() => return,
            };
            tracing::warn!(error = %outcome, "configuration change listener lost; reconnecting");
            if started.elapsed() > LISTEN_BACKOFF_MAX {
                backoff = LISTEN_BACKOFF_MIN;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
        }
    }

    /// One listening connection; returns why it ended.
    async fn listen_once(&self) -> sqlx::Error {
        let mut listener = match PgListener::connect(self.store.url().expose_secret()).await {
            Ok(l) => l,
            Err(e) => return e,
        };
        if let Err(e) = listener.listen(CONFIG_CHANNEL).await {
            return e;
        }
        tracing::info!(
            channel = CONFIG_CHANNEL,
            "listening for configuration changes"
        );
        // Anything committed before LISTEN took effect.
        self.changed().await;
        loop {
            // `try_recv` reports a lost connection as `None` (where `recv`
            // would reconnect silently), so the caller refreshes after it.
            match listener.try_recv().await {
                Ok(Some(_)) => self.changed().await,
                Ok(None) => return sqlx::Error::PoolClosed,
                Err(e) => return e,
            }
        }
    }
}

/// Logs each broken row, naming its kind, name and fields.
fn log_broken(kind: &str, name: &str, broken: &[crate::store::Broken]) {
    for b in broken {
        tracing::error!(
            kind,
            name,
            field = %b.field,
            reason = %b.reason,
            "stored {kind} is broken and left out of the configuration; fix or delete it"
        );
    }
}

/// A sheet's token prices as `f64`, for a data plane older than exact
/// prices (which reads only these).
fn legacy_prices_pb(p: &llmgw_core::price::PriceSheet) -> pb::Prices {
    pb::Prices {
        sheet: None,
        ..llmgw_core::price::prices_pb(p)
    }
}

/// The snapshot for a configuration: enabled providers with opened
/// credentials, enabled models with their enabled targets on enabled
/// providers, and keys that are not revoked. Broken rows (that cannot be
/// decrypted, parsed or validated) are left out and logged; the rest is
/// served.
pub fn build_snapshot(mut state: ConfigState) -> Result<pb::Snapshot, StoreError> {
    let settings = GlobalSettings::from_stored(&state.settings);
    state.providers.retain(|p| {
        log_broken("provider", &p.spec.name, &p.broken);
        p.broken.is_empty()
    });
    state.models.retain(|m| {
        log_broken("model", &m.spec.name, &m.broken);
        m.broken.is_empty()
    });
    state.keys.retain(|k| {
        log_broken("API key", &k.spec.name, &k.broken);
        k.broken.is_empty()
    });
    // Broken default limits are left out like any broken row: the keys
    // that set none then have none.
    let defaults = &state.default_key_limits;
    log_broken("default key limits", "", &defaults.broken);
    let default_key_limits = limits_pb(defaults.limits.as_ref());
    let enabled: std::collections::HashSet<&str> = state
        .providers
        .iter()
        .filter(|p| p.spec.enabled)
        .map(|p| p.spec.name.as_str())
        .collect();
    let models = state
        .models
        .iter()
        .filter(|m| m.spec.enabled)
        .map(|m| {
            let s = &m.spec;
            // Snapshot targets are the enabled ones: a schedule, which the
            // store keeps by target identity, names them by their index
            // among those, resolved against this same target list.
            let keys = crate::store::target_keys(&s.targets);
            let served: Vec<(&crate::store::TargetKey, &crate::store::TargetSpec)> = keys
                .iter()
                .zip(&s.targets)
                .filter(|(_, t)| t.enabled && enabled.contains(t.provider.as_str()))
                .collect();
            pb::SnapshotModel {
                limits: limits_pb(s.limits.as_ref()),
                name: s.name.clone(),
                strategy: s.strategy.as_str().to_string(),
                max_attempts: s.max_attempts,
                retry_delay_ms: s.retry_delay_ms,
                prices: Some(legacy_prices_pb(&s.prices)),
                exact_prices: Some(exact_pb(&s.prices)),
                price_schedule: m
                    .scheduled
                    .iter()
                    .map(|c| pb::ScheduledPrices {
                        from_ms: c.from_ms,
                        model: Some(exact_pb(&c.prices.model)),
                        targets: served
                            .iter()
                            .enumerate()
                            .filter_map(|(snap_i, (key, _))| {
                                let own = c.prices.targets.get(*key)?;
                                Some((u32::try_from(snap_i).ok()?, exact_pb(own)))
                            })
                            .collect(),
                    })
                    .collect(),
                targets: served
                    .iter()
                    .map(|(_, t)| pb::SnapshotTarget {
                        provider: t.provider.clone(),
                        upstream_model: t.upstream_model.clone(),
                        priority: t.priority,
                        weight: t.weight,
                        rules: t.rules.clone(),
                        prices: t.prices.as_ref().map(legacy_prices_pb),
                        exact_prices: t.prices.as_ref().map(exact_pb),
                        default_params: t.default_params.clone().into_iter().collect(),
                    })
                    .collect(),
                default_max_tokens: s.default_max_tokens,
                translation: s.translation.as_str().to_string(),
                r#type: s.model_type.as_str().to_string(),
            }
        })
        .collect();
    let providers = state
        .providers
        .into_iter()
        .filter(|p| p.spec.enabled)
        .map(|p| {
            let s = p.spec;
            pb::SnapshotProvider {
                limits: limits_pb(s.limits.as_ref()),
                name: s.name,
                protocol: s.protocol.as_str().to_string(),
                base_url: s.base_url,
                api_key: s
                    .api_key
                    .map(|k| k.expose_secret().to_string())
                    .unwrap_or_default(),
                headers: s.headers.into_iter().collect(),
                timeout_s: s.timeout_s,
                stream_usage: s.stream_usage,
                proxy: s
                    .proxy
                    .map(|p| p.expose_secret().to_string())
                    .unwrap_or_default(),
                default_params: s.default_params.into_iter().collect(),
            }
        })
        .collect();
    let keys = state
        .keys
        .into_iter()
        .filter(|k| !k.spec.revoked)
        .map(|k| pb::SnapshotKey {
            limits: limits_pb(k.spec.limits.as_ref()),
            name: k.spec.name,
            hash: k.spec.hash,
            models: k.spec.models,
            expires_at_ms: k.spec.expires_at.unwrap_or(0),
            log_bodies: k.spec.log_bodies,
        })
        .collect();
    Ok(pb::Snapshot {
        version: state.version,
        nonce: String::new(),
        providers,
        models,
        keys,
        settings: Some(settings.to_proto(default_key_limits)),
    })
}
