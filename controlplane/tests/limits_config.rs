//! The configuration side of limits (#15), through the real admin service
//! (`AdminService`, called in process) on a real store: limits on create,
//! get, list and update of providers, models and keys (an update merges),
//! `UpdateApiKey`, `SetDefaultKeyLimits`, validation errors that name the
//! field, limits deleted with their object, the snapshot carrying them,
//! the configuration version, and export/apply. Every test runs against a
//! fresh SQLite file and a fresh PostgreSQL database (see `common`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
#[allow(unused_macros)]
mod common;

use common::*;
use llmgw_controlplane::admin::AdminService;
use llmgw_controlplane::apply;
use llmgw_controlplane::hub::Hub;
use llmgw_controlplane::store::Store;
use llmgw_proto::v1 as pb;
use llmgw_proto::v1::admin_server::Admin;
use tonic::{Code, Request};

/// The admin service on a fresh store, and its snapshot hub.
async fn service(db: &Db) -> (AdminService, Hub, Store) {
    let store = db.open().await;
    let hub = Hub::new(store.clone());
    hub.refresh().await.unwrap();
    (AdminService::new(store.clone(), hub.clone()), hub, store)
}

fn limits(rpm: Option<u64>, tpm: Option<u64>) -> pb::Limits {
    pb::Limits {
        rpm,
        tpm,
        ..Default::default()
    }
}

async fn rows_in_limits(store: &Store) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM limits")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

async fn create_key(admin: &AdminService, name: &str, l: Option<pb::Limits>) -> pb::ApiKey {
    admin
        .create_api_key(Request::new(pb::CreateApiKeyRequest {
            name: name.into(),
            limits: l,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .api_key
        .unwrap()
}

async fn update_key(
    admin: &AdminService,
    name: &str,
    l: pb::Limits,
) -> Result<pb::ApiKey, tonic::Status> {
    admin
        .update_api_key(Request::new(pb::UpdateApiKeyRequest {
            name: name.into(),
            limits: Some(l),
            ..Default::default()
        }))
        .await
        .map(|r| r.into_inner())
}

async fn add_provider(admin: &AdminService, name: &str, l: Option<pb::Limits>) -> pb::Provider {
    admin
        .create_provider(Request::new(pb::CreateProviderRequest {
            name: name.into(),
            protocol: "openai".into(),
            base_url: format!("https://{name}.example.com/v1"),
            limits: l,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
}

async fn add_model(admin: &AdminService, name: &str, l: Option<pb::Limits>) -> pb::Model {
    admin
        .create_model(Request::new(pb::CreateModelRequest {
            name: name.into(),
            targets: vec![pb::ModelTarget {
                provider: "up".into(),
                upstream_model: "gpt-4o".into(),
                ..Default::default()
            }],
            limits: l,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
}

both! {
    async fn key_limits_are_created_merged_and_removed(db: Db) {
        let (admin, _hub, store) = service(&db).await;
        let k = create_key(
            &admin,
            "team",
            Some(pb::Limits {
                budget_micros: Some(50_000),
                budget_period: "day".into(),
                window_ms: 1_000,
                ..limits(Some(10), None)
            }),
        )
        .await;
        let l = k.limits.unwrap();
        assert_eq!((l.rpm, l.tpm, l.budget_micros), (Some(10), None, Some(50_000)));
        assert_eq!((l.budget_period.as_str(), l.window_ms), ("day", 1_000));

        // Update: a set field replaces, an absent one stays, 0 removes.
        let k = update_key(&admin, "team", limits(Some(20), Some(5_000)))
            .await
            .unwrap();
        let l = k.limits.unwrap();
        assert_eq!((l.rpm, l.tpm, l.budget_micros), (Some(20), Some(5_000), Some(50_000)));
        assert_eq!(l.window_ms, 1_000, "an absent window stays");
        let k = update_key(
            &admin,
            "team",
            pb::Limits {
                budget_micros: Some(0),
                on_outage: "closed".into(),
                ..limits(Some(0), None)
            },
        )
        .await
        .unwrap();
        let l = k.limits.unwrap();
        assert_eq!((l.rpm, l.tpm, l.budget_micros), (None, Some(5_000), None));
        assert_eq!((l.budget_period.as_str(), l.on_outage.as_str()), ("", "closed"));

        // Get and list show the same; other fields of the key are untouched.
        let got = admin
            .get_api_key(Request::new(pb::GetApiKeyRequest { name: "team".into() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.limits, Some(l.clone()));
        assert!(got.log_bodies);
        let listed = admin
            .list_api_keys(Request::new(pb::ListApiKeysRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.api_keys[0].limits, Some(l));

        // Removing the last limit leaves none, and no row.
        let k = update_key(&admin, "team", limits(None, Some(0))).await.unwrap();
        assert_eq!(k.limits, None);
        assert_eq!(rows_in_limits(&store).await, 0);
    }
}

both! {
    async fn update_api_key_changes_models_and_body_logging(db: Db) {
        let (admin, hub, _store) = service(&db).await;
        create_key(&admin, "ci", Some(limits(Some(7), None))).await;
        let before = hub.current().unwrap().version;
        let k = admin
            .update_api_key(Request::new(pb::UpdateApiKeyRequest {
                name: "ci".into(),
                models: Some(pb::ModelNames {
                    names: vec![" gpt-4o ".into(), "claude".into()],
                }),
                log_bodies: Some(false),
                limits: None,
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(k.models, ["gpt-4o", "claude"]);
        assert!(!k.log_bodies);
        assert_eq!(k.limits.unwrap().rpm, Some(7), "absent limits stay");
        // An empty list allows every model again.
        let k = admin
            .update_api_key(Request::new(pb::UpdateApiKeyRequest {
                name: "ci".into(),
                models: Some(pb::ModelNames { names: vec![] }),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(k.models.is_empty());
        let snap = hub.current().unwrap();
        assert!(snap.version > before);
        let key = snap.keys.iter().find(|k| k.name == "ci").unwrap();
        assert!(!key.log_bodies);
        assert_eq!(key.limits.as_ref().unwrap().rpm, Some(7));

        let e = update_key(&admin, "nobody", limits(Some(1), None)).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
    }
}

both! {
    async fn invalid_limits_are_refused_naming_the_field(db: Db) {
        let (admin, _hub, store) = service(&db).await;
        create_key(&admin, "k", Some(limits(Some(5), None))).await;
        let version = store.config_version().await.unwrap();
        for (bad, field) in [
            (pb::Limits { window_ms: 5, ..limits(Some(1), None) }, "window_ms"),
            (
                pb::Limits { budget_micros: Some(1), budget_period: "year".into(), ..Default::default() },
                "budget_period",
            ),
            (pb::Limits { on_outage: "maybe".into(), ..limits(Some(1), None) }, "on_outage"),
            (limits(Some(u64::MAX), None), "rpm"),
            (
                pb::Limits { budget_period: "day".into(), ..limits(Some(1), None) },
                "budget_period needs a budget",
            ),
        ] {
            let e = update_key(&admin, "k", bad.clone()).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
            assert!(e.message().contains(field), "{field}: {}", e.message());
            let e = admin
                .create_provider(Request::new(pb::CreateProviderRequest {
                    name: "p".into(),
                    protocol: "openai".into(),
                    base_url: "https://p.example.com/v1".into(),
                    limits: Some(bad),
                    ..Default::default()
                }))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
            assert!(e.message().contains(field), "{field}: {}", e.message());
        }
        // A window alone has no limit to apply to.
        let e = admin
            .set_default_key_limits(Request::new(pb::SetDefaultKeyLimitsRequest {
                limits: Some(pb::Limits { window_ms: 1_000, ..Default::default() }),
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("window_ms"), "{}", e.message());
        // Nothing was written.
        assert_eq!(store.config_version().await.unwrap(), version);
    }
}

both! {
    async fn models_and_providers_carry_limits_and_lose_them_when_deleted(db: Db) {
        let (admin, hub, store) = service(&db).await;
        let p = add_provider(&admin, "up", Some(limits(None, Some(100_000)))).await;
        assert_eq!(p.limits.unwrap().tpm, Some(100_000));
        let m = add_model(
            &admin,
            "gpt",
            Some(pb::Limits { max_concurrency: Some(3), ..limits(Some(60), None) }),
        )
        .await;
        assert_eq!(m.limits.as_ref().unwrap().max_concurrency, Some(3));

        let m = admin
            .update_model(Request::new(pb::UpdateModelRequest {
                name: "gpt".into(),
                limits: Some(pb::Limits { max_concurrency: Some(0), ..Default::default() }),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        let l = m.limits.unwrap();
        assert_eq!((l.rpm, l.max_concurrency), (Some(60), None));
        let p = admin
            .update_provider(Request::new(pb::UpdateProviderRequest {
                name: "up".into(),
                limits: Some(limits(Some(500), None)),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        let l = p.limits.unwrap();
        assert_eq!((l.rpm, l.tpm), (Some(500), Some(100_000)));
        // An update that does not mention limits keeps them.
        let p = admin
            .update_provider(Request::new(pb::UpdateProviderRequest {
                name: "up".into(),
                timeout_s: Some(9),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(p.limits.unwrap().rpm, Some(500));

        // The snapshot carries them.
        let snap = hub.current().unwrap();
        assert_eq!(snap.models[0].limits.as_ref().unwrap().rpm, Some(60));
        assert_eq!(snap.providers[0].limits.as_ref().unwrap().tpm, Some(100_000));

        // Deleting an object deletes its limits: one created again under
        // the same name has none.
        create_key(&admin, "k", Some(limits(Some(1), None))).await;
        assert_eq!(rows_in_limits(&store).await, 3);
        admin
            .delete_model(Request::new(pb::DeleteModelRequest { name: "gpt".into() }))
            .await
            .unwrap();
        admin
            .delete_provider(Request::new(pb::DeleteProviderRequest { name: "up".into() }))
            .await
            .unwrap();
        admin
            .delete_api_key(Request::new(pb::DeleteApiKeyRequest { name: "k".into() }))
            .await
            .unwrap();
        assert_eq!(rows_in_limits(&store).await, 0);
        assert_eq!(add_provider(&admin, "up", None).await.limits, None);
        assert_eq!(add_model(&admin, "gpt", None).await.limits, None);
        assert_eq!(create_key(&admin, "k", None).await.limits, None);
    }
}

both! {
    async fn default_key_limits_merge_and_reach_the_snapshot(db: Db) {
        let (admin, hub, store) = service(&db).await;
        let snap = hub.current().unwrap();
        let settings = snap.settings.as_ref().unwrap();
        assert_eq!(settings.default_key_limits, None);
        assert_eq!(settings.quota_slack_percent, Some(10));

        let set = |l: pb::Limits| {
            let admin = admin.clone();
            async move {
                admin
                    .set_default_key_limits(Request::new(pb::SetDefaultKeyLimitsRequest {
                        limits: Some(l),
                    }))
                    .await
                    .unwrap()
                    .into_inner()
            }
        };
        let v0 = store.config_version().await.unwrap();
        let l = set(pb::Limits { budget_micros: Some(5_000_000), ..limits(Some(100), None) }).await;
        assert_eq!((l.rpm, l.budget_micros), (Some(100), Some(5_000_000)));
        assert_eq!(l.budget_period, "month", "an unset period is a month");
        assert!(store.config_version().await.unwrap() > v0);
        let snap = hub.current().unwrap();
        let d = snap.settings.as_ref().unwrap().default_key_limits.clone().unwrap();
        assert_eq!((d.rpm, d.budget_micros), (Some(100), Some(5_000_000)));

        // Merged like any update.
        let l = set(limits(Some(0), Some(9_000))).await;
        assert_eq!((l.rpm, l.tpm, l.budget_micros), (None, Some(9_000), Some(5_000_000)));
        let l = set(pb::Limits { budget_micros: Some(0), ..limits(None, Some(0)) }).await;
        assert_eq!(l, pb::Limits::default());
        assert_eq!(rows_in_limits(&store).await, 0);
        let snap = hub.current().unwrap();
        assert_eq!(snap.settings.as_ref().unwrap().default_key_limits, None);

        // A key with limits of its own carries them; one without carries
        // none (the default applies to it on the data plane).
        create_key(&admin, "own", Some(limits(Some(3), None))).await;
        create_key(&admin, "plain", None).await;
        let snap = hub.current().unwrap();
        let key = |n: &str| snap.keys.iter().find(|k| k.name == n).unwrap().clone();
        assert_eq!(key("own").limits.unwrap().rpm, Some(3));
        assert_eq!(key("plain").limits, None);
    }
}

both! {
    async fn export_and_apply_carry_limits(db: Db) {
        let (admin, _hub, store) = service(&db).await;
        add_provider(&admin, "up", Some(limits(Some(100), None))).await;
        add_model(&admin, "gpt", Some(pb::Limits { window_ms: 1_000, ..limits(None, Some(50)) })).await;
        create_key(
            &admin,
            "k",
            Some(pb::Limits { budget_micros: Some(50_000), budget_period: "week".into(), ..Default::default() }),
        )
        .await;
        admin
            .set_default_key_limits(Request::new(pb::SetDefaultKeyLimitsRequest {
                limits: Some(limits(Some(30), None)),
            }))
            .await
            .unwrap();

        let exported = apply::export(&store.config_state().await.unwrap());
        assert_eq!(exported.providers[0].limits.as_ref().unwrap().rpm, Some(100));
        let ml = exported.models[0].limits.clone().unwrap();
        assert_eq!((ml.tpm, ml.window_ms), (Some(50), 1_000));
        let kl = exported.api_keys[0].limits.clone().unwrap();
        assert_eq!((kl.budget_micros, kl.budget_period.as_str()), (Some(50_000), "week"));
        assert_eq!(exported.default_key_limits.as_ref().unwrap().rpm, Some(30));

        // Applying the export changes nothing.
        let apply_it = |config: pb::GatewayConfig, prune: bool| {
            let store = store.clone();
            async move {
                let mut tx = store.begin_write().await.unwrap();
                let out = apply::apply(
                    &store,
                    &mut tx,
                    config,
                    apply::Options { prune, allow_empty: false },
                )
                .await;
                tx.commit().await.unwrap();
                out.unwrap()
            }
        };
        assert!(apply_it(exported.clone(), false).await.changes.is_empty());

        // Changes show per field.
        let mut changed = exported.clone();
        changed.providers[0].limits = Some(limits(Some(200), None));
        changed.models[0].limits = None;
        changed.api_keys[0].limits = Some(pb::Limits {
            budget_micros: Some(1_500_000),
            budget_period: "day".into(),
            on_outage: "closed".into(),
            ..Default::default()
        });
        changed.default_key_limits = Some(limits(Some(30), Some(1_000)));
        let out = apply_it(changed.clone(), false).await;
        let details = |kind: &str| {
            out.changes
                .iter()
                .find(|c| c.kind == kind)
                .map(|c| c.details.clone())
                .unwrap_or_default()
        };
        assert_eq!(details("provider"), ["rpm: 100 -> 200"]);
        assert_eq!(details("model"), ["tpm: 50 -> none", "window_ms: 1000 -> 60000"]);
        assert_eq!(
            details("api_key"),
            ["budget: 0.05 USD/week -> 1.5 USD/day", "on_outage: open -> closed"]
        );
        assert_eq!(details("default_key_limits"), ["tpm: none -> 1000"]);

        // The round trip: what was applied is what is exported.
        let again = apply::export(&store.config_state().await.unwrap());
        assert_eq!(again, changed);

        // A file without default key limits keeps them, unless it prunes.
        let mut without = changed.clone();
        without.default_key_limits = None;
        let out = apply_it(without.clone(), false).await;
        assert!(out.changes.is_empty());
        assert_eq!(out.kept.len(), 1);
        assert_eq!(out.kept[0].kind, "default_key_limits");
        let out = apply_it(without, true).await;
        assert_eq!(out.changes[0].details, ["rpm: 30 -> none", "tpm: 1000 -> none"]);
        let snap_state = store.config_state().await.unwrap();
        assert_eq!(snap_state.default_key_limits.limits, None);

        // Invalid limits in a file name the object and the field.
        let mut bad = changed;
        bad.models[0].limits = Some(pb::Limits { window_ms: 1, ..limits(Some(1), None) });
        let mut tx = store.begin_write().await.unwrap();
        let e = apply::apply(&store, &mut tx, bad, apply::Options::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("model 'gpt'") && e.contains("window_ms"), "{e}");
    }
}

both! {
    async fn a_broken_limits_row_breaks_its_key_until_an_update_sets_limits(db: Db) {
        let (admin, hub, store) = service(&db).await;
        create_key(&admin, "k", Some(limits(Some(5), None))).await;
        sqlx::query("UPDATE limits SET window_ms = 5, on_outage = 'maybe' WHERE name = 'k'")
            .execute(store.pool())
            .await
            .unwrap();
        let k = admin
            .get_api_key(Request::new(pb::GetApiKeyRequest { name: "k".into() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(k.limits, None);
        let broken: Vec<(&str, &str)> = k
            .broken
            .iter()
            .map(|b| (b.field.as_str(), b.reason.as_str()))
            .collect();
        assert_eq!(
            broken,
            [
                ("limits", "on_outage \"maybe\" is unknown"),
                ("limits", "window_ms 5 is outside 100..=86400000")
            ]
        );
        // A broken key is left out of the snapshot (it authenticates nothing).
        create_key(&admin, "other", None).await;
        assert!(hub.current().unwrap().keys.iter().all(|k| k.name != "k"));
        // An update that leaves the limits alone is refused; one that sets
        // them repairs the key.
        let e = admin
            .update_api_key(Request::new(pb::UpdateApiKeyRequest {
                name: "k".into(),
                log_bodies: Some(false),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        let k = update_key(&admin, "k", limits(Some(8), None)).await.unwrap();
        assert!(k.broken.is_empty(), "{:?}", k.broken);
        assert_eq!(k.limits.unwrap().rpm, Some(8));
        assert!(hub.current().unwrap().keys.iter().any(|k| k.name == "k"));
    }
}
