//! Integration tests of the control plane's store, snapshot building and
//! declarative apply, each run against a fresh SQLite file and a fresh
//! PostgreSQL database (see `common`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::*;
use llmgw_controlplane::apply;
use llmgw_controlplane::hub::build_snapshot;
use llmgw_controlplane::secrets::{generate_master_key, Sealer};
use llmgw_controlplane::settings::GlobalSettings;
use llmgw_controlplane::store::{ModelSpec, ProviderSpec, Store, StoreError};
use llmgw_core::table::{ModelType, Translation};
use llmgw_core::{keys, Protocol, RoutingTable, Strategy};
use llmgw_proto::v1 as pb;
use secrecy::{ExposeSecret, SecretString};

// ---------------------------------------------------------------------------
// 1. migrations
// ---------------------------------------------------------------------------

both! {
    async fn migrations_apply_and_reopen_is_a_no_op(db: Db) {
        let store = db.open().await;
        assert_eq!(store.config_version().await.unwrap(), 1);
        let migrations = count(&store, "SELECT COUNT(*) FROM _sqlx_migrations").await;
        assert!(migrations >= 1);
        for table in [
            "config_state",
            "settings",
            "providers",
            "models",
            "model_targets",
            "api_keys",
            "limits",
            "data_planes",
            "request_logs",
            "request_attempts",
            "log_quarantine",
        ] {
            // Fails if the table is missing.
            count(&store, &format!("SELECT COUNT(*) FROM {table}")).await;
        }
        create_provider(&store, &provider("kept")).await;
        assert_eq!(store.config_version().await.unwrap(), 2);
        store.close().await;

        // A second open of the same database applies nothing and keeps the data.
        let again = db.open().await;
        assert_eq!(
            count(&again, "SELECT COUNT(*) FROM _sqlx_migrations").await,
            migrations
        );
        assert_eq!(count(&again, "SELECT COUNT(*) FROM config_state").await, 1);
        assert_eq!(again.config_version().await.unwrap(), 2);
        let kept = get_provider(&again, "kept").await.unwrap();
        assert_provider_eq(&kept.spec, &provider("kept"));

        // Two stores on one database at once (two control planes) work on
        // PostgreSQL; SQLite refuses the second with a clear error.
        match db.kind {
            Kind::Postgres => {
                let third = db.open().await;
                create_provider(&third, &provider("other")).await;
                assert_eq!(again.config_version().await.unwrap(), 3);
                third.close().await;
            }
            Kind::Sqlite => {
                let sealer = Sealer::new(&db.master_key, &[]).unwrap();
                let err = Store::open(&db.url, Arc::new(sealer)).await.unwrap_err();
                assert!(
                    err.to_string().contains("another control plane is using the SQLite database"),
                    "{err}"
                );
            }
        }
        again.close().await;
    }
}

both! {
    async fn migration_to_translation_keeps_every_row(db: Db) {
        // A configuration stored before protocol translation: two
        // providers (a third, the newest, was deleted), a model with a
        // target on each, one with its own prices.
        let old = migrate_up_to(&db, 4).await;
        let sealer = Sealer::new(&db.master_key, &[]).unwrap();
        let key = sealer
            .seal("sk-old-0123456789", "provider/p-old/api_key_sealed")
            .unwrap();
        for (name, protocol, sealed) in [
            ("p-old", "openai", Some(key.clone())),
            ("p-ant", "anthropic", None),
            ("p-deleted", "openai", None),
        ] {
            sqlx::query(
                "INSERT INTO providers (name, protocol, base_url, api_key_sealed, \
                 timeout_s, stream_usage, enabled, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, 30, 1, 1, 1000, 2000)",
            )
            .bind(name)
            .bind(protocol)
            .bind(format!("https://{name}.example.com/v1"))
            .bind(sealed)
            .execute(&old)
            .await
            .unwrap();
        }
        let id_of = |name: &'static str| {
            let old = old.clone();
            async move {
                sqlx::query_scalar::<_, i64>("SELECT id FROM providers WHERE name = $1")
                    .bind(name)
                    .fetch_one(&old)
                    .await
                    .unwrap()
            }
        };
        let (old_id, ant_id, deleted_id) =
            (id_of("p-old").await, id_of("p-ant").await, id_of("p-deleted").await);
        sqlx::query("DELETE FROM providers WHERE name = 'p-deleted'")
            .execute(&old)
            .await
            .unwrap();
        // The old schema refused the new protocols.
        let refused = sqlx::query(
            "INSERT INTO providers (name, protocol, base_url, created_at, updated_at) \
             VALUES ('g', 'gemini', 'https://g.example.com', 1, 1)",
        )
        .execute(&old)
        .await;
        assert!(refused.is_err(), "the old CHECK let gemini in");
        let model_id: i64 = sqlx::query_scalar(
            "INSERT INTO models (name, strategy, max_attempts, price_input, price_output, \
             price_cached_input, enabled, created_at, updated_at) \
             VALUES ('chat', 'weighted', 2, 1.5, 6.0, 0.25, 1, 1000, 2000) RETURNING id",
        )
        .fetch_one(&old)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO model_targets (model_id, position, provider_id, upstream_model, \
             priority, weight, rules, enabled) VALUES ($1, 0, $2, 'gpt-4o', 0, 3, '', 1)",
        )
        .bind(model_id)
        .bind(old_id)
        .execute(&old)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO model_targets (model_id, position, provider_id, upstream_model, \
             priority, weight, rules, enabled, price_input, price_output, price_cached_input) \
             VALUES ($1, 1, $2, 'claude', 1, 1, '', 1, 3.0, 15.0, 0.3)",
        )
        .bind(model_id)
        .bind(ant_id)
        .execute(&old)
        .await
        .unwrap();
        old.close().await;

        // Opening the store runs 0004 and later.
        let store = db.open().await;
        let p = get_provider(&store, "p-old").await.unwrap();
        assert_eq!(p.spec.protocol, Protocol::OpenAi);
        assert_eq!(secret(&p.spec.api_key).as_deref(), Some("sk-old-0123456789"));
        assert_eq!((p.created_at, p.updated_at), (1000, 2000));
        assert_eq!(p.spec.timeout_s, 30);
        assert_eq!(
            get_provider(&store, "p-ant").await.unwrap().spec.protocol,
            Protocol::Anthropic
        );
        assert_eq!(
            count(&store, "SELECT id FROM providers WHERE name = 'p-ant'").await,
            ant_id
        );
        assert_eq!(
            count(&store, "SELECT id FROM providers WHERE name = 'p-old'").await,
            old_id
        );
        let m = get_model(&store, "chat").await.unwrap();
        assert_eq!(m.spec.strategy, Strategy::Weighted);
        assert_eq!(m.spec.default_max_tokens, None);
        assert_eq!(m.spec.translation, Translation::Strict);
        assert_eq!(
            m.spec.prices,
            prices(1.5, 6.0, 0.25, 0.0)
        );
        let t = &m.spec.targets;
        assert_eq!(
            t.iter().map(|t| (t.provider.as_str(), t.upstream_model.as_str(), t.weight)).collect::<Vec<_>>(),
            [("p-old", "gpt-4o", 3), ("p-ant", "claude", 1)]
        );
        assert_eq!(t[0].prices, None);
        assert_eq!(
            t[1].prices,
            Some(prices(3.0, 15.0, 0.3, 0.0))
        );

        // The foreign key still guards the providers, by the same ids.
        let mut tx = store.begin_write().await.unwrap();
        assert_err!(store.delete_provider(&mut tx, "p-ant").await, InUse, "chat");
        drop(tx);
        let orphan = sqlx::query(
            "INSERT INTO model_targets (model_id, position, provider_id, upstream_model, \
             priority, weight) VALUES ($1, 5, 99999, 'x', 0, 1)",
        )
        .bind(model_id)
        .execute(store.pool())
        .await;
        assert!(orphan.is_err(), "a target on a missing provider was stored");
        // A new provider never takes a deleted one's id.
        create_provider(&store, &provider("p-new")).await;
        let id = count(&store, "SELECT id FROM providers WHERE name = 'p-new'").await;
        assert!(id > deleted_id, "new provider got id {id}, at most the deleted {deleted_id}");

        // The new protocols and columns are accepted now.
        let mut g = provider("p-gem");
        g.protocol = Protocol::Gemini;
        create_provider(&store, &g).await;
        let mut chat = m.spec.clone();
        chat.translation = Translation::Lenient;
        chat.default_max_tokens = Some(2048);
        chat.targets[1].prices = Some(prices(3.0, 15.0, 0.3, 3.75));
        chat.targets.push(target("p-gem", "gemini-2.5-pro"));
        let mut tx = store.begin_write().await.unwrap();
        store.update_model(&mut tx, &chat).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(get_model(&store, "chat").await.unwrap().spec, chat);
        // And the database itself still refuses anything else.
        let bad = sqlx::query(
            "INSERT INTO providers (name, protocol, base_url, created_at, updated_at) \
             VALUES ('v', 'vertex', 'https://v.example.com', 1, 1)",
        )
        .execute(store.pool())
        .await;
        assert!(bad.is_err(), "the CHECK let vertex in");
        let bad = sqlx::query("UPDATE models SET translation = 'loose' WHERE name = 'chat'")
            .execute(store.pool())
            .await;
        assert!(bad.is_err(), "the CHECK let a translation mode 'loose' in");
        let bad = sqlx::query("UPDATE models SET model_type = 'video' WHERE name = 'chat'")
            .execute(store.pool())
            .await;
        assert!(bad.is_err(), "the CHECK let a model type 'video' in");
        assert_eq!(get_model(&store, "chat").await.unwrap().spec.model_type, ModelType::Chat);
        store.close().await;
    }
}

both! {
    async fn every_protocol_round_trips(db: Db) {
        let store = db.open().await;
        for p in Protocol::ALL {
            let mut spec = provider(&format!("p-{}", p.as_str()));
            spec.protocol = p;
            create_provider(&store, &spec).await;
            let got = get_provider(&store, &spec.name).await.unwrap();
            assert_provider_eq(&got.spec, &spec);
        }
        // Update moves a provider from one protocol to another.
        let mut spec = provider("p-openai");
        spec.protocol = Protocol::OpenAiChat;
        let mut tx = store.begin_write().await.unwrap();
        store.update_provider(&mut tx, &spec).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            get_provider(&store, "p-openai").await.unwrap().spec.protocol,
            Protocol::OpenAiChat
        );
        // The snapshot carries each by name and the data plane's table
        // reads them back.
        let targets = Protocol::ALL
            .iter()
            .map(|p| target(&format!("p-{}", p.as_str()), "m"))
            .collect();
        create_model(&store, &model("all", targets)).await;
        let snap = build_snapshot(store.config_state().await.unwrap()).unwrap();
        let mut names: Vec<&str> = snap.providers.iter().map(|p| p.protocol.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["anthropic", "gemini", "openai-chat", "openai-chat"]);
        let table = RoutingTable::try_from(snap).unwrap();
        assert_eq!(table.providers["p-gemini"].protocol, Protocol::Gemini);
        store.close().await;
    }
}

both! {
    async fn an_unknown_protocol_is_refused_with_the_choices(db: Db) {
        let store = db.open().await;
        let mut desired = pb::GatewayConfig::default();
        desired.providers.push(pb::ProviderConfig {
            name: "vx".into(),
            protocol: "vertex".into(),
            base_url: "https://vx.example.com".into(),
            enabled: true,
            ..Default::default()
        });
        let err = run_apply(&store, desired.clone(), false).await.unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("provider 'vx'")
                && msg.contains("protocol 'vertex' is not supported")
                && msg.contains("'openai-chat'")
                && msg.contains("'gemini'"),
            "{msg}"
        );
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
        // Older files name protocols the same way and still apply.
        desired.providers[0].protocol = "openai".into();
        run_apply(&store, desired, true).await.unwrap();
        assert_eq!(
            get_provider(&store, "vx").await.unwrap().spec.protocol,
            Protocol::OpenAi
        );
        store.close().await;
    }
}

// ---------------------------------------------------------------------------
// 2. providers
// ---------------------------------------------------------------------------

both! {
    async fn provider_round_trip_and_sealing(db: Db) {
        let store = db.open().await;
        let alpha = provider("alpha");
        let mut beta = provider("beta");
        beta.protocol = Protocol::Anthropic;
        beta.api_key = None;
        beta.headers.clear();
        beta.timeout_s = 0;
        beta.stream_usage = false;
        beta.enabled = false;
        // Inserted out of order: the list is sorted by name.
        create_provider(&store, &beta).await;
        create_provider(&store, &alpha).await;

        let got = get_provider(&store, "alpha").await.unwrap();
        assert_provider_eq(&got.spec, &alpha);
        assert_eq!(
            got.spec.api_key.as_ref().unwrap().expose_secret(),
            "sk-alpha-0123456789abcdef"
        );
        assert_eq!(got.spec.headers["x-api-key"], "hdr-secret-alpha-42");
        assert!(got.created_at > 0);
        assert_eq!(got.created_at, got.updated_at);
        let got_beta = get_provider(&store, "beta").await.unwrap();
        assert_provider_eq(&got_beta.spec, &beta);
        assert!(got_beta.spec.api_key.is_none());

        let mut conn = store.pool().acquire().await.unwrap();
        let list = store.providers(&mut conn).await.unwrap();
        drop(conn);
        assert_eq!(
            list.iter().map(|p| p.spec.name.as_str()).collect::<Vec<_>>(),
            ["alpha", "beta"]
        );
        assert_provider_eq(&list[0].spec, &alpha);
        assert_provider_eq(&list[1].spec, &beta);

        // At rest the secrets are sealed with the current master key.
        let sealed_key = raw_provider_column(&store, "alpha", "api_key_sealed")
            .await
            .unwrap();
        assert!(!sealed_key.contains("sk-alpha-0123456789abcdef"), "{sealed_key}");
        assert!(!sealed_key.contains("0123456789abcdef"), "{sealed_key}");
        assert_eq!(
            Sealer::key_id_of(&sealed_key),
            Some(store.sealer().current_key_id())
        );
        let sealed_headers = raw_provider_column(&store, "alpha", "headers_sealed")
            .await
            .unwrap();
        assert!(!sealed_headers.contains("hdr-secret"), "{sealed_headers}");
        assert!(!sealed_headers.contains("research"), "{sealed_headers}");
        assert_eq!(raw_provider_column(&store, "beta", "api_key_sealed").await, None);
        assert_eq!(raw_provider_column(&store, "beta", "headers_sealed").await, None);

        // Update: every field changes, the key and headers go away.
        let mut changed = alpha.clone();
        changed.protocol = Protocol::Anthropic;
        changed.base_url = "http://127.0.0.1:8080".into();
        changed.api_key = None;
        changed.headers.clear();
        changed.timeout_s = 120;
        changed.stream_usage = false;
        changed.enabled = false;
        let mut tx = store.begin_write().await.unwrap();
        store.update_provider(&mut tx, &changed).await.unwrap();
        tx.commit().await.unwrap();
        let got = get_provider(&store, "alpha").await.unwrap();
        assert_provider_eq(&got.spec, &changed);
        assert!(got.updated_at >= got.created_at);
        assert_eq!(raw_provider_column(&store, "alpha", "api_key_sealed").await, None);

        // And back: a new key is sealed again.
        let mut tx = store.begin_write().await.unwrap();
        store.update_provider(&mut tx, &alpha).await.unwrap();
        tx.commit().await.unwrap();
        assert_provider_eq(&get_provider(&store, "alpha").await.unwrap().spec, &alpha);

        // Missing ones.
        let mut tx = store.begin_write().await.unwrap();
        assert_err!(
            store.update_provider(&mut tx, &provider("ghost")).await,
            NotFound,
            "ghost"
        );
        assert_err!(store.delete_provider(&mut tx, "ghost").await, NotFound, "ghost");
        drop(tx);
        assert_err!(get_provider(&store, "ghost").await, NotFound, "ghost");

        // Delete.
        let mut tx = store.begin_write().await.unwrap();
        store.delete_provider(&mut tx, "beta").await.unwrap();
        tx.commit().await.unwrap();
        assert_err!(get_provider(&store, "beta").await, NotFound, "beta");
        let mut tx = store.begin_write().await.unwrap();
        assert_err!(store.delete_provider(&mut tx, "beta").await, NotFound);
        drop(tx);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM providers").await, 1);
        store.close().await;
    }
}

both! {
    async fn provider_validation(db: Db) {
        let store = db.open().await;
        let invalid = |mutate: &dyn Fn(&mut ProviderSpec)| {
            let mut p = provider("valid");
            mutate(&mut p);
            p
        };
        let cases: Vec<(ProviderSpec, &str)> = vec![
            (invalid(&|p| p.name = "bad name".into()), "bad name"),
            (invalid(&|p| p.name = "a".repeat(65)), "longer than 64"),
            (invalid(&|p| p.name = String::new()), "must not be empty"),
            (invalid(&|p| p.name = "a/b".into()), "a/b"),
            (invalid(&|p| p.base_url = "ftp://files.example.com".into()), "http or https"),
            (
                invalid(&|p| p.base_url = "https://user:hunter2@api.example.com".into()),
                "credentials",
            ),
            (invalid(&|p| p.base_url = "https://api.example.com/v1#frag".into()), "fragment"),
            (invalid(&|p| p.base_url = "https://api.example.com/v1?a=1".into()), "query"),
            (invalid(&|p| p.base_url = "not-a-url".into()), "must start with http://"),
            (invalid(&|p| p.base_url = "http:///v1".into()), "empty host"),
            (invalid(&|p| p.base_url = "http://@api.example.com".into()), "empty user info"),
            (invalid(&|p| p.base_url = " https://api.example.com".into()), "whitespace"),
            (invalid(&|p| p.base_url = "https://api.example.com/v1\r\n".into()), "control character"),
            (
                invalid(&|p| {
                    p.headers.insert("x-big".into(), "v".repeat(8193));
                }),
                "header 'x-big' value is 8193 bytes long",
            ),
            (
                invalid(&|p| {
                    p.headers.insert("connection".into(), "close".into());
                }),
                "connection",
            ),
            (
                invalid(&|p| {
                    p.headers.insert("x-a".into(), "line\nbreak".into());
                }),
                "x-a",
            ),
            (
                invalid(&|p| p.api_key = Some(SecretString::from("sk-\nbad".to_string()))),
                "api_key",
            ),
            (invalid(&|p| p.timeout_s = 3601), "timeout_s"),
        ];
        for (spec, needle) in &cases {
            let mut tx = store.begin_write().await.unwrap();
            let m = assert_err!(store.insert_provider(&mut tx, spec).await, Invalid, needle);
            assert!(!m.contains("hunter2"), "the message leaks the password: {m}");
            drop(tx);
        }
        // The same rules hold for updates.
        create_provider(&store, &provider("valid")).await;
        for (spec, needle) in cases.iter().filter(|(s, _)| s.name == "valid") {
            let mut tx = store.begin_write().await.unwrap();
            assert_err!(store.update_provider(&mut tx, spec).await, Invalid, needle);
        }
        assert_eq!(count(&store, "SELECT COUNT(*) FROM providers").await, 1);

        // Edges that are fine: 64 characters, all the allowed punctuation.
        let mut long = provider("x");
        long.name = "a".repeat(64);
        create_provider(&store, &long).await;
        create_provider(&store, &provider("A.b_c-9")).await;

        // Duplicates.
        let mut tx = store.begin_write().await.unwrap();
        assert_err!(
            store.insert_provider(&mut tx, &provider("valid")).await,
            AlreadyExists,
            "valid"
        );
        drop(tx);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM providers").await, 3);
        store.close().await;
    }
}

// ---------------------------------------------------------------------------
// 3. models and targets
// ---------------------------------------------------------------------------

fn rich_model() -> ModelSpec {
    let mut m = model(
        "chat",
        vec![
            target("p-b", "gpt-4o"),
            target("p-a", "gpt-4o-mini"),
            target("p-c", "claude-sonnet"),
        ],
    );
    m.strategy = Strategy::Weighted;
    m.max_attempts = 3;
    m.retry_delay_ms = Some(250);
    m.prices = prices(1.25, 10.0, 0.125, 1.5625);
    m.default_max_tokens = Some(8192);
    m.translation = Translation::Lenient;
    m.model_type = ModelType::Embedding;
    let t = &mut m.targets;
    t[0].priority = 2;
    t[0].weight = 3;
    t[0].rules = r#"{"field":"key","op":"eq","value":"batch"}"#.into();
    t[0].prices = Some(prices(2.5, 7.5, 0.0, 3.125));
    t[1].priority = -1;
    t[1].weight = 1;
    t[1].enabled = false;
    t[2].priority = 7;
    t[2].weight = 100;
    t[2].rules = concat!(
        r#"{"any":[{"field":"headers.x-team","op":"eq","value":"research"},"#,
        r#"{"field":"input_tokens","op":"gt","value":8000}]}"#
    )
    .into();
    t[2].prices = Some(prices(0.0, 0.0, 0.0, 0.0));
    m
}

async fn targets_of(store: &Store, model: &str) -> i64 {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM model_targets t JOIN models m ON m.id = t.model_id WHERE m.name = $1",
    )
    .bind(model)
    .fetch_one(store.pool())
    .await
    .unwrap();
    n
}

both! {
    async fn model_round_trip_with_ordered_targets(db: Db) {
        let store = db.open().await;
        for p in ["p-a", "p-b", "p-c"] {
            create_provider(&store, &provider(p)).await;
        }
        let chat = rich_model();
        create_model(&store, &chat).await;
        let mut plain = model("plain", vec![target("p-a", "m")]);
        plain.enabled = false;
        create_model(&store, &plain).await;

        let got = get_model(&store, "chat").await.unwrap();
        assert_eq!(got.spec, chat);
        assert!(got.created_at > 0);
        assert_eq!(get_model(&store, "plain").await.unwrap().spec, plain);
        let mut conn = store.pool().acquire().await.unwrap();
        let all = store.models(&mut conn).await.unwrap();
        drop(conn);
        assert_eq!(
            all.iter().map(|m| &m.spec).collect::<Vec<_>>(),
            [&chat, &plain]
        );
        assert_eq!(targets_of(&store, "chat").await, 3);
        // Targets without and then with a price override, in one statement
        // cache (PostgreSQL once refused the second: float4 vs float8).
        let mut mixed = model(
            "mixed",
            vec![target("p-a", "x"), target("p-b", "y"), target("p-c", "z")],
        );
        mixed.targets[1].prices = Some(prices(0.1, 0.2, 0.3, 0.0));
        create_model(&store, &mixed).await;
        assert_eq!(get_model(&store, "mixed").await.unwrap().spec, mixed);
        let mut tx = store.begin_write().await.unwrap();
        store.delete_model(&mut tx, "mixed").await.unwrap();
        tx.commit().await.unwrap();

        // Update replaces the targets, in the new order.
        let mut updated = chat.clone();
        updated.strategy = Strategy::LeastLatency;
        updated.retry_delay_ms = None;
        updated.default_max_tokens = None;
        updated.translation = Translation::Strict;
        updated.prices.tokens.cache_write = Default::default();
        updated.targets = vec![target("p-c", "new-1"), target("p-a", "new-2")];
        updated.targets[1].priority = 9;
        let mut tx = store.begin_write().await.unwrap();
        store.update_model(&mut tx, &updated).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(get_model(&store, "chat").await.unwrap().spec, updated);
        assert_eq!(targets_of(&store, "chat").await, 2);
        assert_eq!(targets_of(&store, "plain").await, 1);

        // Duplicates and missing ones.
        let mut tx = store.begin_write().await.unwrap();
        assert_err!(store.insert_model(&mut tx, &plain).await, AlreadyExists, "plain");
        drop(tx);
        let mut tx = store.begin_write().await.unwrap();
        assert_err!(
            store.update_model(&mut tx, &model("ghost", vec![target("p-a", "m")])).await,
            NotFound,
            "ghost"
        );
        assert_err!(store.delete_model(&mut tx, "ghost").await, NotFound, "ghost");
        drop(tx);
        assert_err!(get_model(&store, "ghost").await, NotFound, "ghost");

        // Delete removes the model's targets and nothing else.
        let mut tx = store.begin_write().await.unwrap();
        store.delete_model(&mut tx, "chat").await.unwrap();
        tx.commit().await.unwrap();
        assert_err!(get_model(&store, "chat").await, NotFound);
        assert_eq!(targets_of(&store, "chat").await, 0);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM model_targets").await, 1);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM models").await, 1);
        store.close().await;
    }
}

both! {
    async fn model_validation(db: Db) {
        let store = db.open().await;
        create_provider(&store, &provider("p-a")).await;
        let base = || model("m", vec![target("p-a", "up")]);
        let mut cases = Vec::new();
        cases.push((model("m", vec![]), "at least one target"));
        let mut m = base();
        m.targets[0].weight = 1_000_001;
        cases.push((m, "weight"));
        let mut m = base();
        m.targets.push(target("ghost-provider", "up"));
        cases.push((m, "ghost-provider"));
        let mut m = base();
        m.targets[0].rules = "{not json".into();
        cases.push((m, "not valid JSON"));
        let mut m = base();
        m.targets[0].rules = r#"{"field":"nope","op":"eq","value":1}"#.into();
        cases.push((m, "unknown field"));
        let mut m = base();
        m.targets[0].upstream_model = " ".into();
        cases.push((m, "upstream model"));
        let mut m = base();
        m.name = "bad name".into();
        cases.push((m, "bad name"));
        let mut m = base();
        m.max_attempts = 21;
        cases.push((m, "max_attempts"));
        // Prices are exact amounts that cannot be negative by their type;
        // what a sheet can still get wrong is its tiers and image keys.
        let mut m = base();
        m.prices.tiers = vec![llmgw_core::price::Tier {
            above_input_tokens: 0,
            prices: Default::default(),
        }];
        cases.push((m, "prices: tiers[0]"));
        let mut m = base();
        let mut own = prices(1.0, 1.0, 0.0, 0.0);
        own.per_image.insert("a/b/c".into(), Default::default());
        m.targets[0].prices = Some(own);
        cases.push((m, "image price key 'a/b/c'"));
        let mut m = base();
        m.default_max_tokens = Some(0);
        cases.push((m, "default_max_tokens must be at least 1"));

        for (spec, needle) in &cases {
            let mut tx = store.begin_write().await.unwrap();
            assert_err!(store.insert_model(&mut tx, spec).await, Invalid, needle);
            drop(tx);
        }
        // Nothing was left behind by the failed writes.
        assert_eq!(count(&store, "SELECT COUNT(*) FROM models").await, 0);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM model_targets").await, 0);

        // The same checks on update; a failed update keeps the old targets.
        create_model(&store, &base()).await;
        for (spec, needle) in cases.iter().filter(|(s, _)| s.name == "m") {
            let mut tx = store.begin_write().await.unwrap();
            assert_err!(store.update_model(&mut tx, spec).await, Invalid, needle);
            drop(tx);
        }
        assert_eq!(get_model(&store, "m").await.unwrap().spec, base());
        assert_eq!(count(&store, "SELECT COUNT(*) FROM model_targets").await, 1);
        store.close().await;
    }
}

// ---------------------------------------------------------------------------
// 4. providers in use
// ---------------------------------------------------------------------------

both! {
    async fn deleting_a_used_provider_names_every_model(db: Db) {
        let store = db.open().await;
        for p in ["shared", "other", "idle"] {
            create_provider(&store, &provider(p)).await;
        }
        create_model(&store, &model("m-one", vec![target("shared", "a")])).await;
        let mut two = model("m-two", vec![target("other", "b"), target("shared", "c")]);
        two.targets[1].enabled = false; // a disabled target still uses it
        create_model(&store, &two).await;
        let before = store.config_version().await.unwrap();

        let mut tx = store.begin_write().await.unwrap();
        let m = assert_err!(store.delete_provider(&mut tx, "shared").await, InUse, "'m-one'");
        assert!(m.contains("'m-two'"), "{m}");
        assert!(m.contains("shared"), "{m}");
        let m = assert_err!(store.delete_provider(&mut tx, "other").await, InUse, "'m-two'");
        assert!(!m.contains("m-one"), "{m}");
        tx.rollback().await.unwrap();
        assert_eq!(store.config_version().await.unwrap(), before);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM providers").await, 3);

        let mut tx = store.begin_write().await.unwrap();
        store.delete_provider(&mut tx, "idle").await.unwrap();
        store.delete_model(&mut tx, "m-two").await.unwrap();
        store.delete_provider(&mut tx, "other").await.unwrap();
        let m = assert_err!(store.delete_provider(&mut tx, "shared").await, InUse, "'m-one'");
        assert!(!m.contains("m-two"), "{m}");
        tx.commit().await.unwrap();
        assert_eq!(store.config_version().await.unwrap(), before + 1);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM providers").await, 1);
        store.close().await;
    }
}

// ---------------------------------------------------------------------------
// 5. client keys
// ---------------------------------------------------------------------------

both! {
    async fn key_round_trip(db: Db) {
        let store = db.open().await;
        let mut k1 = key("k1", "sk-llmgw-secret-one");
        k1.models = vec!["gpt-4o".into(), "claude.sonnet".into()];
        let mut k2 = key("k2", "sk-llmgw-secret-two");
        k2.expires_at = Some(1_900_000_000_000);
        k2.log_bodies = false;
        create_key(&store, &k2).await;
        create_key(&store, &k1).await;

        let got = get_key(&store, "k1").await.unwrap();
        assert_eq!(got.spec, k1);
        assert!(got.created_at > 0);
        assert_eq!(got.last_used_at, None);
        assert_eq!(get_key(&store, "k2").await.unwrap().spec, k2);
        let mut conn = store.pool().acquire().await.unwrap();
        let list = store.keys(&mut conn).await.unwrap();
        drop(conn);
        assert_eq!(list.iter().map(|k| &k.spec).collect::<Vec<_>>(), [&k1, &k2]);
        let raw: String = sqlx::query_scalar("SELECT models FROM api_keys WHERE name = 'k1'")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(
            serde_json::from_str::<Vec<String>>(&raw).unwrap(),
            ["gpt-4o", "claude.sonnet"]
        );

        // Revoke and change everything else too.
        let mut revoked = k1.clone();
        revoked.revoked = true;
        revoked.models = vec![];
        revoked.expires_at = Some(1_800_000_000_000);
        revoked.log_bodies = false;
        let mut tx = store.begin_write().await.unwrap();
        store.update_key(&mut tx, &revoked).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(get_key(&store, "k1").await.unwrap().spec, revoked);
        let mut k2_forever = k2.clone();
        k2_forever.expires_at = None;
        let mut tx = store.begin_write().await.unwrap();
        store.update_key(&mut tx, &k2_forever).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(get_key(&store, "k2").await.unwrap().spec.expires_at, None);

        // Invalid hashes.
        for bad in [
            "abc".to_string(),
            keys::hash_hex("x").to_uppercase(),
            keys::hash_hex("x")[1..].to_string(),
            format!("{}g", &keys::hash_hex("x")[1..]),
        ] {
            let mut k = key("bad", "s");
            k.hash = bad;
            let mut tx = store.begin_write().await.unwrap();
            assert_err!(store.insert_key(&mut tx, &k).await, Invalid, "hash");
            drop(tx);
            let mut k = k1.clone();
            k.hash = keys::hash_hex("x").to_uppercase();
            let mut tx = store.begin_write().await.unwrap();
            assert_err!(store.update_key(&mut tx, &k).await, Invalid, "hash");
        }
        let mut bad_models = key("bad", "s");
        bad_models.models = vec!["no spaces".into()];
        let mut tx = store.begin_write().await.unwrap();
        assert_err!(store.insert_key(&mut tx, &bad_models).await, Invalid, "no spaces");
        drop(tx);

        // The same secret twice, and the same name twice.
        let mut tx = store.begin_write().await.unwrap();
        assert_err!(
            store.insert_key(&mut tx, &key("k3", "sk-llmgw-secret-one")).await,
            AlreadyExists
        );
        drop(tx);
        let mut tx = store.begin_write().await.unwrap();
        assert_err!(
            store.insert_key(&mut tx, &key("k1", "sk-llmgw-other")).await,
            AlreadyExists,
            "k1"
        );
        drop(tx);
        // Taking another key's secret on update is refused the same way.
        let mut stolen = k2_forever.clone();
        stolen.hash = k1.hash.clone();
        let mut tx = store.begin_write().await.unwrap();
        assert_err!(store.update_key(&mut tx, &stolen).await, AlreadyExists);
        drop(tx);

        // Missing and deleted.
        let mut tx = store.begin_write().await.unwrap();
        assert_err!(
            store.update_key(&mut tx, &key("ghost", "s")).await,
            NotFound,
            "ghost"
        );
        assert_err!(store.delete_key(&mut tx, "ghost").await, NotFound, "ghost");
        store.delete_key(&mut tx, "k1").await.unwrap();
        tx.commit().await.unwrap();
        assert_err!(get_key(&store, "k1").await, NotFound, "k1");
        assert_eq!(count(&store, "SELECT COUNT(*) FROM api_keys").await, 1);
        // Its secret is free again.
        create_key(&store, &key("k1-again", "sk-llmgw-secret-one")).await;
        store.close().await;
    }
}

// ---------------------------------------------------------------------------
// 6. the configuration version
// ---------------------------------------------------------------------------

both! {
    async fn each_write_bumps_the_version_once(db: Db) {
        let store = db.open().await;
        let v0 = store.config_version().await.unwrap();

        let mut tx = store.begin_write().await.unwrap();
        assert_eq!(Store::version_in(&mut tx).await.unwrap(), v0 + 1);
        // Others still see the committed version while the write is open.
        assert_eq!(store.config_version().await.unwrap(), v0);
        store.insert_provider(&mut tx, &provider("p1")).await.unwrap();
        store.insert_provider(&mut tx, &provider("p2")).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(store.config_version().await.unwrap(), v0 + 1);

        let mut tx = store.begin_write().await.unwrap();
        store.delete_provider(&mut tx, "p2").await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(store.config_version().await.unwrap(), v0 + 2);

        // A write that fails and is dropped (rolled back) changes nothing.
        let mut tx = store.begin_write().await.unwrap();
        store.insert_provider(&mut tx, &provider("p3")).await.unwrap();
        assert_err!(store.insert_provider(&mut tx, &provider("p1")).await, AlreadyExists);
        drop(tx);
        assert_eq!(store.config_version().await.unwrap(), v0 + 2);
        assert_err!(get_provider(&store, "p3").await, NotFound);

        // An explicit rollback too.
        let mut tx = store.begin_write().await.unwrap();
        store.insert_provider(&mut tx, &provider("p4")).await.unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(store.config_version().await.unwrap(), v0 + 2);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM providers").await, 1);
        store.close().await;
    }
}

both! {
    async fn concurrent_writers_are_serialised(db: Db) {
        let store = db.open().await;
        let v0 = store.config_version().await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..10 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut tx = store.begin_write().await?;
                let seen = Store::version_in(&mut tx).await?;
                // Hold the write a little so that the writers overlap.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                store.insert_provider(&mut tx, &provider(&format!("c-{i}"))).await?;
                tx.commit().await?;
                Ok::<u64, StoreError>(seen)
            }));
        }
        let mut seen = BTreeSet::new();
        for t in tasks {
            let v = t.await.unwrap().unwrap_or_else(|e| panic!("a writer failed: {e}"));
            assert!(seen.insert(v), "two writers saw version {v}");
        }
        assert_eq!(store.config_version().await.unwrap(), v0 + 10);
        assert_eq!(seen, (v0 + 1..=v0 + 10).collect::<BTreeSet<_>>());
        assert_eq!(count(&store, "SELECT COUNT(*) FROM providers").await, 10);
        store.close().await;
    }
}

// ---------------------------------------------------------------------------
// 7. config_state and the snapshot
// ---------------------------------------------------------------------------

both! {
    async fn snapshot_holds_only_what_is_live(db: Db) {
        let store = db.open().await;
        let on = provider("p-on");
        let mut off = provider("p-off");
        off.enabled = false;
        let mut bare = provider("p-bare");
        bare.api_key = None;
        bare.headers.clear();
        for p in [&on, &off, &bare] {
            create_provider(&store, p).await;
        }
        let mut live = model(
            "m-live",
            vec![
                target("p-on", "kept"),
                target("p-off", "provider-disabled"),
                target("p-on", "target-disabled"),
                target("p-bare", "kept-too"),
            ],
        );
        live.targets[0].priority = 5;
        live.targets[0].weight = 4;
        live.targets[0].rules = r#"{"field":"key","op":"eq","value":"k-live"}"#.into();
        live.targets[0].prices = Some(prices(3.0, 4.0, 1.0, 0.0));
        live.targets[2].enabled = false;
        live.retry_delay_ms = Some(100);
        create_model(&store, &live).await;
        let mut dead = model("m-off", vec![target("p-on", "x")]);
        dead.enabled = false;
        create_model(&store, &dead).await;
        let mut k_live = key("k-live", "sk-llmgw-live");
        k_live.models = vec!["m-live".into()];
        create_key(&store, &k_live).await;
        let mut k_exp = key("k-expiring", "sk-llmgw-expiring");
        k_exp.expires_at = Some(4_000_000_000_000);
        k_exp.log_bodies = false;
        create_key(&store, &k_exp).await;
        let mut k_rev = key("k-revoked", "sk-llmgw-revoked");
        k_rev.revoked = true;
        create_key(&store, &k_rev).await;
        let settings = GlobalSettings {
            retry_max_attempts: 5,
            http_timeout_s: 9,
            ..GlobalSettings::default()
        };
        assert!(store.sync_settings(&settings.to_stored()).await.unwrap());
        store.check_master_key().await.unwrap();

        let state = store.config_state().await.unwrap();
        let version = store.config_version().await.unwrap();
        assert_eq!(state.version, version);
        assert_eq!(
            state.providers.iter().map(|p| p.spec.name.as_str()).collect::<Vec<_>>(),
            ["p-bare", "p-off", "p-on"]
        );
        assert_provider_eq(&state.providers[2].spec, &on);
        assert_eq!(
            state.models.iter().map(|m| &m.spec).collect::<Vec<_>>(),
            [&live, &dead]
        );
        assert_eq!(
            state.keys.iter().map(|k| &k.spec).collect::<Vec<_>>(),
            [&k_exp, &k_live, &k_rev]
        );
        assert_eq!(state.settings.get("retry_max_attempts").map(String::as_str), Some("5"));
        for (k, v) in settings.to_stored() {
            assert_eq!(state.settings.get(&k), Some(&v), "setting {k}");
        }

        let snap = build_snapshot(state).unwrap();
        assert_eq!(snap.version, version);
        assert_eq!(
            snap.providers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["p-bare", "p-on"]
        );
        let p_on = snap.providers.iter().find(|p| p.name == "p-on").unwrap();
        assert_eq!(p_on.api_key, "sk-p-on-0123456789abcdef");
        assert_eq!(p_on.headers.get("x-api-key").unwrap(), "hdr-secret-p-on-42");
        assert_eq!(p_on.headers.get("x-team").unwrap(), "research");
        assert_eq!(p_on.base_url, on.base_url);
        assert_eq!(p_on.protocol, "openai");
        assert_eq!(p_on.timeout_s, 30);
        let p_bare = snap.providers.iter().find(|p| p.name == "p-bare").unwrap();
        assert_eq!(p_bare.api_key, "");
        assert!(p_bare.headers.is_empty());

        assert_eq!(snap.models.len(), 1);
        let m = &snap.models[0];
        assert_eq!(m.name, "m-live");
        assert_eq!(m.retry_delay_ms, Some(100));
        assert_eq!(
            m.targets.iter().map(|t| t.upstream_model.as_str()).collect::<Vec<_>>(),
            ["kept", "kept-too"]
        );
        let t = &m.targets[0];
        assert_eq!((t.provider.as_str(), t.priority, t.weight), ("p-on", 5, 4));
        assert_eq!(t.rules, live.targets[0].rules);
        // For an older data plane, f64; for a current one, nano-dollars.
        assert_eq!(t.prices.as_ref().unwrap().output_per_mtok, 4.0);
        assert_eq!(t.exact_prices.as_ref().unwrap().output_per_mtok, 4_000_000_000);
        assert_eq!(m.targets[1].prices, None);
        assert_eq!(m.targets[1].exact_prices, None);

        let mut snap_keys: Vec<_> = snap.keys.iter().map(|k| k.name.as_str()).collect();
        snap_keys.sort_unstable();
        assert_eq!(snap_keys, ["k-expiring", "k-live"]);
        let exp = snap.keys.iter().find(|k| k.name == "k-expiring").unwrap();
        assert_eq!(exp.expires_at_ms, 4_000_000_000_000);
        assert!(!exp.log_bodies);
        let kl = snap.keys.iter().find(|k| k.name == "k-live").unwrap();
        assert_eq!(kl.hash, keys::hash_hex("sk-llmgw-live"));
        assert_eq!(kl.expires_at_ms, 0);
        assert_eq!(kl.models, ["m-live"]);
        let st = snap.settings.clone().unwrap();
        assert_eq!(st.retry_max_attempts, 5);
        assert_eq!(st.http_timeout_s, 9);

        // What the data plane builds from it.
        let table = RoutingTable::try_from(snap).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(table.version, version);
        assert_eq!(table.settings.retry_max_attempts, 5);
        assert_eq!(table.settings.http_timeout, std::time::Duration::from_secs(9));
        assert_eq!(
            table.providers.keys().cloned().collect::<BTreeSet<_>>(),
            ["p-bare".to_string(), "p-on".to_string()].into()
        );
        let (name, value) = table.providers["p-on"].credential.clone().unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("authorization", "Bearer sk-p-on-0123456789abcdef")
        );
        assert!(table.providers["p-bare"].credential.is_none());
        assert_eq!(table.models.len(), 1);
        assert_eq!(table.models["m-live"].targets.len(), 2);
        assert_eq!(table.key_count(), 2);
        let now = llmgw_controlplane::store::now_ms();
        assert_eq!(
            table.authenticate("sk-llmgw-live", now).unwrap().name,
            "k-live"
        );
        assert!(table.authenticate("sk-llmgw-revoked", now).is_err());
        store.close().await;
    }
}

both! {
    async fn config_state_is_one_consistent_read(db: Db) {
        let store = db.open().await;
        let v0 = store.config_version().await.unwrap();
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..15 {
                    let mut tx = store.begin_write().await.unwrap();
                    store.insert_provider(&mut tx, &provider(&format!("w-{i}"))).await.unwrap();
                    store
                        .insert_key(&mut tx, &key(&format!("k-{i}"), &format!("s-{i}")))
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                }
            })
        };
        let mut reads = 0;
        while !writer.is_finished() || reads < 5 {
            let state = store.config_state().await.unwrap();
            // Every write adds one provider and one key and one version.
            let n = u64::try_from(state.providers.len()).unwrap();
            assert_eq!(state.version - v0, n, "version and providers disagree");
            assert_eq!(state.keys.len(), state.providers.len());
            reads += 1;
        }
        writer.await.unwrap();
        let state = store.config_state().await.unwrap();
        assert_eq!(state.version, v0 + 15);
        assert_eq!(state.providers.len(), 15);
        store.close().await;
    }
}

// ---------------------------------------------------------------------------
// 8. the master key
// ---------------------------------------------------------------------------

both! {
    async fn master_key_check_and_rotation(db: Db) {
        let key_a = db.master_key.clone();
        let key_b = SecretString::from(generate_master_key());
        let id_a = Sealer::new(&key_a, &[]).unwrap().current_key_id().to_string();
        let id_b = Sealer::new(&key_b, &[]).unwrap().current_key_id().to_string();
        assert_ne!(id_a, id_b);

        let store = db.open_with(Sealer::new(&key_a, &[]).unwrap()).await;
        store.check_master_key().await.unwrap();
        // Checking again with the same key is fine.
        store.check_master_key().await.unwrap();
        let mut p = provider("sealed");
        p.proxy = Some(SecretString::from("socks5://u:rot-pw@127.0.0.1:1080".to_string()));
        create_provider(&store, &p).await;
        let mut bare = provider("bare");
        bare.api_key = None;
        bare.headers.clear();
        create_provider(&store, &bare).await;
        let version = store.config_version().await.unwrap();
        store.close().await;

        // The wrong key is refused with a message that says why.
        let wrong = db.open_with(Sealer::new(&key_b, &[]).unwrap()).await;
        let e = wrong.check_master_key().await.unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)), "{e:?}");
        assert!(e.to_string().contains("master key"), "{e}");
        // Read with the wrong key, the row is broken, not an error.
        let row = get_provider(&wrong, "sealed").await.unwrap();
        let fields: Vec<&str> = row.broken.iter().map(|b| b.field.as_str()).collect();
        assert_eq!(fields, ["api_key", "headers", "proxy"], "{:?}", row.broken);
        assert!(row.spec.api_key.is_none());
        wrong.close().await;

        // B with A as the previous key opens everything and re-seals with B.
        let rotating = db
            .open_with(Sealer::new(&key_b, std::slice::from_ref(&key_a)).unwrap())
            .await;
        rotating.check_master_key().await.unwrap();
        for col in ["api_key_sealed", "headers_sealed", "proxy_sealed"] {
            let v = raw_provider_column(&rotating, "sealed", col).await.unwrap();
            assert_eq!(Sealer::key_id_of(&v), Some(id_b.as_str()), "{col}");
        }
        assert_eq!(raw_provider_column(&rotating, "bare", "api_key_sealed").await, None);
        let check: String =
            sqlx::query_scalar("SELECT value FROM settings WHERE name = 'master_key_check'")
                .fetch_one(rotating.pool())
                .await
                .unwrap();
        assert_eq!(Sealer::key_id_of(&check), Some(id_b.as_str()));
        // Re-sealing changes no configuration.
        assert_eq!(rotating.config_version().await.unwrap(), version);
        rotating.close().await;

        // Now B alone works and opens the provider's secrets.
        let only_b = db.open_with(Sealer::new(&key_b, &[]).unwrap()).await;
        only_b.check_master_key().await.unwrap();
        let got = get_provider(&only_b, "sealed").await.unwrap();
        assert_provider_eq(&got.spec, &p);
        assert_provider_eq(&get_provider(&only_b, "bare").await.unwrap().spec, &bare);
        only_b.close().await;

        // And A alone no longer does.
        let only_a = db.open_with(Sealer::new(&key_a, &[]).unwrap()).await;
        let e = only_a.check_master_key().await.unwrap_err();
        assert!(e.to_string().contains("master key"), "{e}");
        only_a.close().await;
    }
}

// ---------------------------------------------------------------------------
// 9. export and apply
// ---------------------------------------------------------------------------

/// A populated store: providers with long and short keys and headers,
/// models with rules and price overrides, keys with and without expiry.
async fn populate(store: &Store) {
    let mut a = provider("p-a");
    a.headers
        .insert("authorization".into(), "Bearer header-token-123456".into());
    create_provider(store, &a).await;
    let mut short = provider("p-short");
    short.api_key = Some(SecretString::from("short".to_string()));
    short.headers = BTreeMap::from([("x-api-key".to_string(), "tiny".to_string())]);
    create_provider(store, &short).await;
    let mut gone = provider("p-gone");
    gone.api_key = None;
    gone.headers.clear();
    gone.enabled = false;
    create_provider(store, &gone).await;

    let mut chat = model(
        "chat",
        vec![target("p-a", "gpt-4o"), target("p-short", "mini")],
    );
    chat.strategy = Strategy::RoundRobin;
    chat.max_attempts = 4;
    chat.retry_delay_ms = Some(500);
    chat.targets[0].rules = r#"{"field":"headers.x-team","op":"eq","value":"research"}"#.into();
    chat.targets[0].weight = 3;
    chat.targets[1].priority = 1;
    chat.targets[1].enabled = false;
    chat.targets[1].prices = Some(prices(0.5, 1.5, 0.25, 0.0));
    create_model(store, &chat).await;
    create_model(store, &model("embed", vec![target("p-short", "embed-3")])).await;

    let mut k1 = key("k-one", "sk-llmgw-one");
    k1.models = vec!["chat".into()];
    k1.expires_at = Some(1_900_000_000_000);
    create_key(store, &k1).await;
    let mut k2 = key("k-two", "sk-llmgw-two");
    k2.revoked = true;
    k2.log_bodies = false;
    create_key(store, &k2).await;
}

async fn export(store: &Store) -> pb::GatewayConfig {
    apply::export(&store.config_state().await.unwrap())
}

/// Applies in one write; commits only when asked.
async fn run_apply(
    store: &Store,
    desired: pb::GatewayConfig,
    commit: bool,
) -> Result<Vec<pb::ConfigChange>, StoreError> {
    let prune = apply::Options {
        prune: true,
        allow_empty: true,
    };
    Ok(run_apply_with(store, desired, commit, prune).await?.changes)
}

/// Applies with the given options in one write; commits only when asked.
async fn run_apply_with(
    store: &Store,
    desired: pb::GatewayConfig,
    commit: bool,
    opts: apply::Options,
) -> Result<apply::Outcome, StoreError> {
    let mut tx = store.begin_write().await?;
    let out = apply::apply(store, &mut tx, desired, opts).await?;
    if commit {
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok(out)
}

fn summary(changes: &[pb::ConfigChange]) -> Vec<(String, String, String)> {
    changes
        .iter()
        .map(|c| (c.action.clone(), c.kind.clone(), c.name.clone()))
        .collect()
}

fn change<'a>(changes: &'a [pb::ConfigChange], kind: &str, name: &str) -> &'a pb::ConfigChange {
    changes
        .iter()
        .find(|c| c.kind == kind && c.name == name)
        .unwrap_or_else(|| panic!("no change for {kind} {name} in {changes:?}"))
}

fn provider_cfg<'a>(c: &'a mut pb::GatewayConfig, name: &str) -> &'a mut pb::ProviderConfig {
    c.providers.iter_mut().find(|p| p.name == name).unwrap()
}

fn model_cfg<'a>(c: &'a mut pb::GatewayConfig, name: &str) -> &'a mut pb::ModelConfig {
    c.models.iter_mut().find(|m| m.name == name).unwrap()
}

fn key_cfg<'a>(c: &'a mut pb::GatewayConfig, name: &str) -> &'a mut pb::ApiKeyConfig {
    c.api_keys.iter_mut().find(|k| k.name == name).unwrap()
}

both! {
    async fn apply_of_an_export_changes_nothing(db: Db) {
        let store = db.open().await;
        // An empty configuration onto an empty database.
        assert!(run_apply(&store, export(&store).await, true).await.unwrap().is_empty());
        populate(&store).await;
        let exported = export(&store).await;
        // Secrets are masked in the export.
        let a = exported.providers.iter().find(|p| p.name == "p-a").unwrap();
        assert_eq!(a.api_key, "****cdef");
        assert_eq!(a.headers["authorization"], "****3456");
        assert_eq!(a.headers["x-team"], "research");
        let short = exported.providers.iter().find(|p| p.name == "p-short").unwrap();
        assert_eq!(short.api_key, "****");
        assert_eq!(
            exported.api_keys.iter().find(|k| k.name == "k-one").unwrap().hash,
            keys::hash_hex("sk-llmgw-one")
        );

        let before = store.config_state().await.unwrap();
        let changes = run_apply(&store, exported.clone(), true).await.unwrap();
        assert!(changes.is_empty(), "{changes:?}");
        // Even committed, the stored secrets and everything else are as before.
        let after = store.config_state().await.unwrap();
        for (b, a) in before.providers.iter().zip(&after.providers) {
            assert_provider_eq(&a.spec, &b.spec);
        }
        assert_eq!(
            before.models.iter().map(|m| &m.spec).collect::<Vec<_>>(),
            after.models.iter().map(|m| &m.spec).collect::<Vec<_>>()
        );
        assert_eq!(
            before.keys.iter().map(|k| &k.spec).collect::<Vec<_>>(),
            after.keys.iter().map(|k| &k.spec).collect::<Vec<_>>()
        );
        assert_eq!(export(&store).await, exported);
        store.close().await;
    }
}

both! {
    async fn a_proxy_is_sealed_shown_masked_and_kept_by_apply(db: Db) {
        let store = db.open().await;
        let mut px = provider("px");
        px.proxy = Some(SecretString::from(
            "http://puser:ppass-9876@proxy.example:3128".to_string(),
        ));
        create_provider(&store, &px).await;
        let got = get_provider(&store, "px").await.unwrap();
        assert_provider_eq(&got.spec, &px);
        assert_eq!(got.spec.shown_proxy(), "http://****@proxy.example:3128");
        let sealed = raw_provider_column(&store, "px", "proxy_sealed").await.unwrap();
        assert!(!sealed.contains("ppass-9876") && !sealed.contains("puser"), "{sealed}");
        // The snapshot carries the whole URL; its Debug does not.
        let snap = build_snapshot(store.config_state().await.unwrap()).unwrap();
        let sp = snap.providers.iter().find(|p| p.name == "px").unwrap();
        assert_eq!(sp.proxy, "http://puser:ppass-9876@proxy.example:3128");
        assert!(!format!("{sp:?}").contains("ppass"));

        // Export masks it; applying the export keeps the stored proxy.
        let exported = export(&store).await;
        assert_eq!(exported.providers[0].proxy, "http://****@proxy.example:3128");
        assert!(run_apply(&store, exported.clone(), true).await.unwrap().is_empty());
        assert_provider_eq(&get_provider(&store, "px").await.unwrap().spec, &px);

        // A mask of another proxy is refused without echoing anything.
        let mut other = exported.clone();
        other.providers[0].proxy = "http://****@elsewhere.example:3128".into();
        let e = run_apply(&store, other, false).await.unwrap_err().to_string();
        assert!(e.contains("proxy is masked but does not match"), "{e}");
        // A change is listed masked; none clears it.
        let mut socks = exported.clone();
        socks.providers[0].proxy = "socks5://proxy.example".into();
        let changes = run_apply(&store, socks, true).await.unwrap();
        assert_eq!(
            change(&changes, "provider", "px").details,
            ["proxy: http://****@proxy.example:3128 -> socks5://proxy.example:1080"]
        );
        let mut none = exported;
        none.providers[0].proxy = String::new();
        let changes = run_apply(&store, none, true).await.unwrap();
        assert_eq!(
            change(&changes, "provider", "px").details,
            ["proxy: socks5://proxy.example:1080 -> none"]
        );
        assert_eq!(raw_provider_column(&store, "px", "proxy_sealed").await, None);
        // A bad URL is refused naming the field.
        px.proxy = Some(SecretString::from("ftp://h".to_string()));
        let mut tx = store.begin_write().await.unwrap();
        assert_err!(store.update_provider(&mut tx, &px).await, Invalid, "proxy must use");
        drop(tx);
        store.close().await;
    }
}

both! {
    async fn default_params_round_trip_export_and_apply(db: Db) {
        let store = db.open().await;
        let mut p = provider("dp");
        p.default_params = [("temperature".to_string(), "0.2".to_string())].into();
        create_provider(&store, &p).await;
        let mut t = target("dp", "up");
        t.default_params = [
            ("temperature".to_string(), "0.7".to_string()),
            ("stop".to_string(), "[\"x\"]".to_string()),
        ]
        .into();
        create_model(&store, &model("dm", vec![t.clone()])).await;
        assert_eq!(get_provider(&store, "dp").await.unwrap().spec.default_params, p.default_params);
        let mut c = store.pool().acquire().await.unwrap();
        assert_eq!(store.model(&mut c, "dm").await.unwrap().spec.targets[0].default_params, t.default_params);
        drop(c);
        let snap = build_snapshot(store.config_state().await.unwrap()).unwrap();
        let table = llmgw_core::RoutingTable::try_from(snap).unwrap();
        let applied: Vec<(String, String)> = table.models["dm"].targets[0]
            .defaults
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        assert_eq!(
            applied,
            [("stop".to_string(), "[\"x\"]".to_string()), ("temperature".to_string(), "0.7".to_string())]
        );

        let exported = export(&store).await;
        assert_eq!(exported.providers[0].default_params["temperature"], "0.2");
        assert_eq!(exported.models[0].targets[0].default_params["stop"], "[\"x\"]");
        assert!(run_apply(&store, exported.clone(), true).await.unwrap().is_empty());
        let mut changed = exported.clone();
        changed.providers[0].default_params.insert("top_p".into(), " 0.5 ".into());
        changed.models[0].targets[0].default_params.clear();
        let changes = run_apply(&store, changed, true).await.unwrap();
        assert_eq!(
            change(&changes, "provider", "dp").details,
            ["default_params: temperature=0.2 -> temperature=0.2 top_p=0.5"]
        );
        assert_eq!(
            change(&changes, "model", "dm").details,
            ["targets: [dp:up {stop=[\"x\"] temperature=0.7}] -> [dp:up]"]
        );
        let mut bad = exported;
        bad.providers[0].default_params.insert("messages".into(), "[]".into());
        let e = run_apply(&store, bad, false).await.unwrap_err().to_string();
        assert!(e.contains("default parameter 'messages' is not allowed"), "{e}");
        store.close().await;
    }
}

both! {
    async fn apply_reports_creates_updates_and_deletes(db: Db) {
        let store = db.open().await;
        populate(&store).await;
        let v0 = store.config_version().await.unwrap();
        let mut desired = export(&store).await;

        // Providers: create one, update one, drop the unused one.
        desired.providers.retain(|p| p.name != "p-gone");
        desired.providers.push(pb::ProviderConfig {
            limits: Default::default(),
            name: "p-new".into(),
            protocol: "anthropic".into(),
            base_url: "https://new.example.com/".into(),
            api_key: "sk-ant-new-0123456789".into(),
            headers: [("anthropic-version".to_string(), "2023-06-01".to_string())].into(),
            timeout_s: 15,
            enabled: true,
            stream_usage: false,
            proxy: String::new(),
            default_params: Default::default(),
        });
        {
            let a = provider_cfg(&mut desired, "p-a");
            a.base_url = "https://moved.example.com/v2".into();
            a.timeout_s = 60;
        }
        // Models: update one (onto the new provider), drop one, create one.
        desired.models.retain(|m| m.name != "embed");
        {
            let chat = model_cfg(&mut desired, "chat");
            chat.strategy = "weighted".into();
            chat.targets[1].provider = "p-new".into();
            chat.targets[1].upstream_model = "claude".into();
        }
        desired.models.push(pb::ModelConfig {
            name: "fresh".into(),
            strategy: "priority".into(),
            max_attempts: 2,
            retry_delay_ms: None,
            prices: None,
            enabled: true,
            targets: vec![pb::ModelTarget {
                provider: "p-new".into(),
                upstream_model: "claude-haiku".into(),
                priority: 0,
                weight: None, // means 1
                rules: String::new(),
                enabled: true,
                prices: None,
                default_params: Default::default(),
            }],
            ..Default::default()
        });
        // Keys: revoke one, delete one, carry a new one by its hash.
        key_cfg(&mut desired, "k-one").revoked = true;
        desired.api_keys.retain(|k| k.name != "k-two");
        desired.api_keys.push(pb::ApiKeyConfig {
            limits: Default::default(),
            name: "k-carried".into(),
            models: vec!["fresh".into()],
            expires_at: "2031-02-03T04:05:06Z".into(),
            revoked: false,
            log_bodies: true,
            hash: keys::hash_hex("sk-llmgw-carried"),
            prefix: keys::display_prefix("sk-llmgw-carried"),
        });

        // A dry run (rolled back) reports the same and changes nothing.
        let dry = run_apply(&store, desired.clone(), false).await.unwrap();
        assert_eq!(store.config_version().await.unwrap(), v0);
        assert!(get_provider(&store, "p-new").await.is_err());

        let changes = run_apply(&store, desired.clone(), true).await.unwrap();
        assert_eq!(summary(&dry), summary(&changes));
        let s = |a: &str, k: &str, n: &str| (a.to_string(), k.to_string(), n.to_string());
        assert_eq!(
            summary(&changes),
            [
                s("update", "provider", "p-a"),
                s("create", "provider", "p-new"),
                s("delete", "model", "embed"),
                s("update", "model", "chat"),
                s("create", "model", "fresh"),
                s("delete", "provider", "p-gone"),
                s("delete", "api_key", "k-two"),
                s("update", "api_key", "k-one"),
                s("create", "api_key", "k-carried"),
            ]
        );
        assert_eq!(
            change(&changes, "provider", "p-a").details,
            [
                "base_url: https://p-a.example.com/v1 -> https://moved.example.com/v2",
                "timeout_s: 30 -> 60",
            ]
        );
        let chat_details = &change(&changes, "model", "chat").details;
        assert_eq!(chat_details.len(), 2, "{chat_details:?}");
        assert_eq!(chat_details[0], "strategy: round-robin -> weighted");
        assert_eq!(
            chat_details[1],
            "targets: [p-a:gpt-4o, p-short:mini] -> [p-a:gpt-4o, p-new:claude]"
        );
        assert_eq!(change(&changes, "api_key", "k-one").details, ["revoked: false -> true"]);
        assert!(change(&changes, "provider", "p-new").details.is_empty());

        // One write, one version.
        assert_eq!(store.config_version().await.unwrap(), v0 + 1);
        let new = get_provider(&store, "p-new").await.unwrap().spec;
        assert_eq!(new.base_url, "https://new.example.com");
        assert_eq!(new.protocol, Protocol::Anthropic);
        assert_eq!(secret(&new.api_key).as_deref(), Some("sk-ant-new-0123456789"));
        assert!(!new.stream_usage);
        let a = get_provider(&store, "p-a").await.unwrap().spec;
        assert_eq!(a.base_url, "https://moved.example.com/v2");
        // The masked key and header in the export kept the stored secrets.
        assert_eq!(secret(&a.api_key).as_deref(), Some("sk-p-a-0123456789abcdef"));
        assert_eq!(a.headers["authorization"], "Bearer header-token-123456");
        assert_err!(get_provider(&store, "p-gone").await, NotFound);
        assert_err!(get_model(&store, "embed").await, NotFound);
        let fresh = get_model(&store, "fresh").await.unwrap().spec;
        assert_eq!(fresh.targets[0].weight, 1);
        assert_eq!(fresh.max_attempts, 2);
        let carried = get_key(&store, "k-carried").await.unwrap().spec;
        assert_eq!(carried.hash, keys::hash_hex("sk-llmgw-carried"));
        assert_eq!(carried.prefix, keys::display_prefix("sk-llmgw-carried"));
        assert_eq!(carried.expires_at, Some(1_927_857_906_000));
        assert_eq!(carried.models, ["fresh"]);
        assert!(get_key(&store, "k-one").await.unwrap().spec.revoked);
        assert_err!(get_key(&store, "k-two").await, NotFound);

        // The result exports back to what was applied.
        let again = run_apply(&store, export(&store).await, true).await.unwrap();
        assert!(again.is_empty(), "{again:?}");

        // Expiry times are kept in whole seconds (as exported), so a time
        // given with a fraction exports back and applies without a change.
        let mut desired = export(&store).await;
        key_cfg(&mut desired, "k-carried").expires_at = "2032-01-01T00:00:00.750Z".into();
        let changes = run_apply(&store, desired, true).await.unwrap();
        assert_eq!(summary(&changes), [s("update", "api_key", "k-carried")]);
        assert_eq!(
            get_key(&store, "k-carried").await.unwrap().spec.expires_at,
            Some(1_956_528_000_000)
        );
        let again = run_apply(&store, export(&store).await, false).await.unwrap();
        assert!(again.is_empty(), "{again:?}");
        store.close().await;
    }
}

both! {
    async fn apply_secrets_and_key_rules(db: Db) {
        let store = db.open().await;
        populate(&store).await;
        let exported = export(&store).await;

        // A masked key equal to the stored mask keeps the key (short keys too).
        let mut desired = exported.clone();
        provider_cfg(&mut desired, "p-a").timeout_s = 31;
        provider_cfg(&mut desired, "p-short").timeout_s = 32;
        let changes = run_apply(&store, desired, true).await.unwrap();
        assert_eq!(change(&changes, "provider", "p-a").details, ["timeout_s: 30 -> 31"]);
        let a = get_provider(&store, "p-a").await.unwrap().spec;
        assert_eq!(secret(&a.api_key).as_deref(), Some("sk-p-a-0123456789abcdef"));
        let short = get_provider(&store, "p-short").await.unwrap().spec;
        assert_eq!(secret(&short.api_key).as_deref(), Some("short"));
        assert_eq!(short.headers["x-api-key"], "tiny");

        // A masked key that does not match is refused, naming the provider.
        let mut desired = exported.clone();
        provider_cfg(&mut desired, "p-a").api_key = "****zzzz".into();
        let m = assert_err!(run_apply(&store, desired, false).await, Invalid, "p-a");
        assert!(m.contains("masked"), "{m}");
        // A masked header that does not match is refused too, rather than
        // sent upstream as the literal mask.
        let mut desired = exported.clone();
        provider_cfg(&mut desired, "p-a")
            .headers
            .insert("authorization".into(), "****zzzz".into());
        assert_err!(run_apply(&store, desired, false).await, Invalid, "authorization");
        let mut desired = exported.clone();
        let mut copy = provider_cfg(&mut desired, "p-a").clone();
        copy.name = "p-copy".into();
        copy.api_key = "sk-copy-0123456789abcdef".into();
        desired.providers.push(copy);
        assert_err!(run_apply(&store, desired, false).await, Invalid, "p-copy");
        // So is a masked key for a provider that has none stored, or a new one.
        let mut desired = exported.clone();
        provider_cfg(&mut desired, "p-gone").api_key = "****".into();
        assert_err!(run_apply(&store, desired, false).await, Invalid, "p-gone");
        let mut desired = exported.clone();
        let mut new = provider_cfg(&mut desired, "p-a").clone();
        new.name = "p-copy".into();
        desired.providers.push(new);
        assert_err!(run_apply(&store, desired, false).await, Invalid, "p-copy");

        // A real new key replaces the stored one; empty removes it.
        let mut desired = exported.clone();
        provider_cfg(&mut desired, "p-a").api_key = "sk-rotated-abcdefghijkl".into();
        provider_cfg(&mut desired, "p-short").api_key = String::new();
        let changes = run_apply(&store, desired, true).await.unwrap();
        assert_eq!(
            change(&changes, "provider", "p-a").details,
            ["api_key: changed", "timeout_s: 31 -> 30"]
        );
        assert_eq!(
            secret(&get_provider(&store, "p-a").await.unwrap().spec.api_key).as_deref(),
            Some("sk-rotated-abcdefghijkl")
        );
        assert!(get_provider(&store, "p-short").await.unwrap().spec.api_key.is_none());

        // Keys: no hash for an unknown key is refused; for a known one it
        // keeps the stored hash.
        let exported = export(&store).await;
        let mut desired = exported.clone();
        desired.api_keys.push(pb::ApiKeyConfig {
            name: "k-unknown".into(),
            ..Default::default()
        });
        assert_err!(run_apply(&store, desired, false).await, Invalid, "k-unknown");
        let mut desired = exported.clone();
        {
            let k = key_cfg(&mut desired, "k-one");
            k.hash.clear();
            k.prefix.clear();
            k.log_bodies = false;
        }
        let changes = run_apply(&store, desired, true).await.unwrap();
        assert_eq!(change(&changes, "api_key", "k-one").details, ["log_bodies: true -> false"]);
        let k1 = get_key(&store, "k-one").await.unwrap().spec;
        assert_eq!(k1.hash, keys::hash_hex("sk-llmgw-one"));
        assert_eq!(k1.prefix, keys::display_prefix("sk-llmgw-one"));
        // A new hash replaces the secret.
        let mut desired = export(&store).await;
        key_cfg(&mut desired, "k-one").hash = keys::hash_hex("sk-llmgw-one-rotated");
        let changes = run_apply(&store, desired, true).await.unwrap();
        assert_eq!(change(&changes, "api_key", "k-one").details, ["secret: replaced"]);
        // A bad hash, a bad time, a duplicate name are refused.
        let mut desired = export(&store).await;
        key_cfg(&mut desired, "k-one").hash = "nothex".into();
        assert_err!(run_apply(&store, desired, false).await, Invalid, "hash");
        let mut desired = export(&store).await;
        key_cfg(&mut desired, "k-one").expires_at = "next tuesday".into();
        assert_err!(run_apply(&store, desired, false).await, Invalid, "RFC 3339");
        let mut desired = export(&store).await;
        let dup = desired.providers[0].clone();
        desired.providers.push(dup);
        assert_err!(run_apply(&store, desired, false).await, Invalid, "appears twice");
        // Two keys given one secret.
        let mut desired = export(&store).await;
        let one = key_cfg(&mut desired, "k-one").hash.clone();
        key_cfg(&mut desired, "k-two").hash = one;
        assert_err!(run_apply(&store, desired, false).await, AlreadyExists);
        // A key renamed in the file keeps its secret (deletes go first).
        let mut desired = export(&store).await;
        key_cfg(&mut desired, "k-two").name = "k-renamed".into();
        let changes = run_apply(&store, desired, true).await.unwrap();
        assert_eq!(
            summary(&changes),
            [
                ("delete".to_string(), "api_key".to_string(), "k-two".to_string()),
                ("create".to_string(), "api_key".to_string(), "k-renamed".to_string()),
            ]
        );
        let renamed = get_key(&store, "k-renamed").await.unwrap().spec;
        assert_eq!(renamed.hash, keys::hash_hex("sk-llmgw-two"));
        assert!(renamed.revoked && !renamed.log_bodies);
        store.close().await;
    }
}

both! {
    async fn apply_refuses_to_remove_a_provider_still_in_use(db: Db) {
        let store = db.open().await;
        populate(&store).await;
        let v0 = store.config_version().await.unwrap();
        let before = export(&store).await;
        // "p-short" is still used by "chat" and "embed".
        let mut desired = before.clone();
        desired.providers.retain(|p| p.name != "p-short");
        let m = assert_err!(run_apply(&store, desired.clone(), false).await, InUse, "p-short");
        assert!(m.contains("'chat'") && m.contains("'embed'"), "{m}");
        // Removing one of the users is not enough.
        desired.models.retain(|m| m.name != "embed");
        let m = assert_err!(run_apply(&store, desired.clone(), false).await, InUse, "'chat'");
        assert!(!m.contains("embed"), "{m}");
        assert_eq!(store.config_version().await.unwrap(), v0);
        assert_eq!(export(&store).await, before);
        // Moving the remaining user off it in the same apply works.
        let chat = model_cfg(&mut desired, "chat");
        chat.targets.retain(|t| t.provider != "p-short");
        let changes = run_apply(&store, desired, true).await.unwrap();
        assert!(summary(&changes).contains(&(
            "delete".to_string(),
            "provider".to_string(),
            "p-short".to_string()
        )));
        assert_eq!(store.config_version().await.unwrap(), v0 + 1);
        store.close().await;
    }
}

both! {
    async fn apply_creates_a_provider_and_its_model_in_one_go(db: Db) {
        let store = db.open().await;
        let v0 = store.config_version().await.unwrap();
        let desired = pb::GatewayConfig {
            default_key_limits: Default::default(),
            // The model comes first in the file; apply orders the writes.
            models: vec![pb::ModelConfig {
                name: "gpt".into(),
                strategy: String::new(),
                max_attempts: 0,
                retry_delay_ms: Some(0),
                prices: Some(pb::Prices {
                    input_per_mtok: 2.5,
                    output_per_mtok: 10.0,
                    cached_input_per_mtok: 1.25,
                    cache_write_per_mtok: 0.0,
                    sheet: None,
                }),
                enabled: true,
                targets: vec![pb::ModelTarget {
                    provider: "openai".into(),
                    upstream_model: "gpt-4o".into(),
                    priority: 0,
                    weight: Some(2),
                    rules: "{ \"field\" : \"key\", \"op\": \"eq\", \"value\": \"k\" }".into(),
                    enabled: true,
                    prices: None,
                    default_params: Default::default(),
                }],
                ..Default::default()
            }],
            providers: vec![pb::ProviderConfig {
                limits: Default::default(),
                name: "openai".into(),
                protocol: "openai".into(),
                base_url: "https://api.openai.com/v1".into(),
                api_key: "sk-proj-abcdefghijklmnop".into(),
                headers: Default::default(),
                timeout_s: 0,
                enabled: true,
                stream_usage: true,
                proxy: String::new(),
                default_params: Default::default(),
            }],
            api_keys: vec![pb::ApiKeyConfig {
                name: "k".into(),
                models: vec!["gpt".into()],
                hash: keys::hash_hex("sk-llmgw-k"),
                prefix: "sk-llmgw-k".into(),
                ..Default::default()
            }],
        };
        let changes = run_apply(&store, desired, true).await.unwrap();
        let s = |a: &str, k: &str, n: &str| (a.to_string(), k.to_string(), n.to_string());
        assert_eq!(
            summary(&changes),
            [
                s("create", "provider", "openai"),
                s("create", "model", "gpt"),
                s("create", "api_key", "k"),
            ]
        );
        assert_eq!(store.config_version().await.unwrap(), v0 + 1);
        let gpt = get_model(&store, "gpt").await.unwrap().spec;
        assert_eq!(gpt.strategy, Strategy::Priority);
        assert_eq!(gpt.targets.len(), 1);
        assert_eq!(gpt.targets[0].provider, "openai");
        // Rules are stored compact.
        assert_eq!(gpt.targets[0].rules, r#"{"field":"key","op":"eq","value":"k"}"#);
        // And the snapshot of it is valid for a data plane.
        let snapshot = build_snapshot(store.config_state().await.unwrap()).unwrap();
        let table = RoutingTable::try_from(snapshot).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(table.models["gpt"].targets[0].provider.name, "openai");
        assert!(run_apply(&store, export(&store).await, true).await.unwrap().is_empty());
        store.close().await;
    }
}

both! {
    async fn rules_written_through_the_store_are_normalised(db: Db) {
        // TargetSpec::rules is documented as "normalised (compact) when stored",
        // so an export of it applies back without a change.
        let store = db.open().await;
        create_provider(&store, &provider("p")).await;
        let mut m = model("m", vec![target("p", "up")]);
        m.targets[0].rules = "{ \"field\": \"key\",\n  \"op\": \"eq\", \"value\": \"x\" }".into();
        create_model(&store, &m).await;
        assert_eq!(
            get_model(&store, "m").await.unwrap().spec.targets[0].rules,
            r#"{"field":"key","op":"eq","value":"x"}"#
        );
        let changes = run_apply(&store, export(&store).await, false).await.unwrap();
        assert!(changes.is_empty(), "{changes:?}");
        store.close().await;
    }
}

// ---------------------------------------------------------------------------
// 10. settings
// ---------------------------------------------------------------------------

both! {
    async fn sync_settings_bumps_only_on_change(db: Db) {
        let store = db.open().await;
        let v0 = store.config_version().await.unwrap();
        let defaults = GlobalSettings::default().to_stored();
        assert!(store.sync_settings(&defaults).await.unwrap());
        assert_eq!(store.config_version().await.unwrap(), v0 + 1);
        assert!(!store.sync_settings(&defaults).await.unwrap());
        assert_eq!(store.config_version().await.unwrap(), v0 + 1);
        // The master-key check value lives in settings too and does not count.
        store.check_master_key().await.unwrap();
        assert!(!store.sync_settings(&defaults).await.unwrap());
        assert_eq!(store.config_version().await.unwrap(), v0 + 1);

        let changed = GlobalSettings {
            log_bodies: false,
            ..GlobalSettings::default()
        }
        .to_stored();
        assert!(store.sync_settings(&changed).await.unwrap());
        assert_eq!(store.config_version().await.unwrap(), v0 + 2);
        assert!(!store.sync_settings(&changed).await.unwrap());
        let state = store.config_state().await.unwrap();
        assert_eq!(state.version, v0 + 2);
        assert_eq!(state.settings.get("log_bodies").map(String::as_str), Some("false"));
        assert!(!GlobalSettings::from_stored(&state.settings).log_bodies);
        // Survives a restart.
        store.close().await;
        let again = db.open().await;
        assert!(!again.sync_settings(&changed).await.unwrap());
        assert_eq!(again.config_version().await.unwrap(), v0 + 2);
        again.close().await;
    }
}

#[test]
fn postgres_variants_fail_without_a_url() {
    // Without LLMGW_TEST_POSTGRES_URL the PostgreSQL variants fail (they are
    // not skipped), with a message that says how to get one.
    let msg = common::postgres_admin_url_from(None).unwrap_err();
    assert!(msg.contains(common::PG_ENV), "{msg}");
    assert!(
        msg.contains("scripts/test.sh") && msg.contains("scripts/pg.sh"),
        "{msg}"
    );
    assert!(common::postgres_admin_url_from(Some("  ".into())).is_err());
    assert_eq!(
        common::postgres_admin_url_from(Some("postgres://u@h/db".into())).unwrap(),
        "postgres://u@h/db"
    );
}

// ---------------------------------------------------------------------------
// 10. apply without prune, and broken rows
// ---------------------------------------------------------------------------

both! {
    async fn apply_keeps_what_the_file_does_not_mention(db: Db) {
        let store = db.open().await;
        populate(&store).await;
        let before = export(&store).await;
        let keep = apply::Options::default();

        // An empty configuration without prune deletes nothing.
        let out = run_apply_with(&store, pb::GatewayConfig::default(), true, keep)
            .await
            .unwrap();
        assert!(out.changes.is_empty(), "{:?}", out.changes);
        let kept = summary(&out.kept);
        assert!(kept.contains(&("keep".into(), "provider".into(), "p-a".into())), "{kept:?}");
        assert!(kept.contains(&("keep".into(), "model".into(), "chat".into())), "{kept:?}");
        assert!(kept.contains(&("keep".into(), "api_key".into(), "k-one".into())), "{kept:?}");
        assert_eq!(export(&store).await, before);

        // A file with one model changed updates it and keeps the rest.
        let mut one = pb::GatewayConfig {
            models: before.models.iter().filter(|m| m.name == "embed").cloned().collect(),
            ..Default::default()
        };
        one.models[0].max_attempts = 7;
        let out = run_apply_with(&store, one, true, keep).await.unwrap();
        assert_eq!(summary(&out.changes), [("update".into(), "model".into(), "embed".into())]);
        let now = export(&store).await;
        assert_eq!(now.providers, before.providers);
        assert_eq!(now.api_keys, before.api_keys);
        assert_eq!(now.models.len(), 2);

        // A prune that would delete everything needs allow_empty.
        let prune = apply::Options { prune: true, allow_empty: false };
        let e = run_apply_with(&store, pb::GatewayConfig::default(), true, prune).await;
        let m = assert_err!(e, Invalid, "would delete every provider, model and API key");
        assert!(m.contains("--allow-empty"), "{m}");
        assert_eq!(export(&store).await.models.len(), 2);
        // A dry run of the real thing lists every deletion.
        let all = apply::Options { prune: true, allow_empty: true };
        let out = run_apply_with(&store, pb::GatewayConfig::default(), false, all).await.unwrap();
        assert_eq!(out.changes.len(), 3 + 2 + 2, "{:?}", out.changes);
        assert!(out.changes.iter().all(|c| c.action == "delete"));
        assert_eq!(export(&store).await.models.len(), 2, "a dry run changes nothing");
        store.close().await;
    }
}

/// Overwrites one column of one row, as a corrupted disk or a hostile
/// database user would.
async fn tamper(store: &Store, sql: &str, name: &str) {
    sqlx::query(sql)
        .bind(name)
        .execute(store.pool())
        .await
        .unwrap();
}

both! {
    async fn broken_rows_are_contained(db: Db) {
        let store = db.open().await;
        populate(&store).await;
        // A provider whose sealed key was altered (one character of the
        // ciphertext changed), a model with an unknown strategy and a key
        // whose models are not JSON.
        let sealed = raw_provider_column(&store, "p-short", "api_key_sealed").await.unwrap();
        let mut chars: Vec<char> = sealed.chars().collect();
        let last = chars.len() - 2;
        chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
        let altered: String = chars.into_iter().collect();
        sqlx::query("UPDATE providers SET api_key_sealed = $1 WHERE name = $2")
            .bind(&altered)
            .bind("p-short")
            .execute(store.pool())
            .await
            .unwrap();
        tamper(&store, "UPDATE models SET strategy = 'fastest' WHERE name = $1", "chat").await;
        tamper(&store, "UPDATE api_keys SET models = 'not json' WHERE name = $1", "k-one").await;

        // Reads name the row and field instead of failing.
        let p = get_provider(&store, "p-short").await.unwrap();
        assert_eq!(p.broken.len(), 1, "{:?}", p.broken);
        assert_eq!(p.broken[0].field, "api_key");
        assert!(p.broken[0].reason.contains("cannot be decrypted"), "{:?}", p.broken);
        let m = get_model(&store, "chat").await.unwrap();
        assert_eq!(m.broken[0].field, "strategy", "{:?}", m.broken);
        let k = get_key(&store, "k-one").await.unwrap();
        assert_eq!(k.broken[0].field, "models", "{:?}", k.broken);
        assert!(get_provider(&store, "p-a").await.unwrap().broken.is_empty());

        // The snapshot leaves them out and serves the rest.
        let snapshot = build_snapshot(store.config_state().await.unwrap()).unwrap();
        let names = |v: Vec<&str>| v.into_iter().map(str::to_string).collect::<BTreeSet<_>>();
        assert_eq!(
            names(snapshot.providers.iter().map(|p| p.name.as_str()).collect()),
            names(vec!["p-a"])
        );
        assert_eq!(
            names(snapshot.models.iter().map(|m| m.name.as_str()).collect()),
            names(vec!["embed"])
        );
        // embed's only target is on the broken provider: left out of it.
        assert!(snapshot.models[0].targets.is_empty());
        assert!(snapshot.keys.is_empty(), "k-one is broken and k-two revoked");
        RoutingTable::try_from(snapshot).expect("the data plane accepts the rest");

        // (The store writes what it is given; the admin API checks that an
        // update sets every broken field: see e2e/tests/broken.rs.)
        // Fixed by a write that sets the key again.
        let mut fixed = p.spec.clone();
        fixed.api_key = Some(SecretString::from("sk-new-key-0001".to_string()));
        let mut tx = store.begin_write().await.unwrap();
        store.update_provider(&mut tx, &fixed).await.unwrap();
        tx.commit().await.unwrap();
        let p = get_provider(&store, "p-short").await.unwrap();
        assert!(p.broken.is_empty(), "{:?}", p.broken);
        assert_eq!(secret(&p.spec.api_key).as_deref(), Some("sk-new-key-0001"));

        // Deleted without being read.
        let mut tx = store.begin_write().await.unwrap();
        store.delete_model(&mut tx, "chat").await.unwrap();
        store.delete_key(&mut tx, "k-one").await.unwrap();
        tx.commit().await.unwrap();
        let state = store.config_state().await.unwrap();
        assert!(state.models.iter().all(|m| m.broken.is_empty()));
        assert!(state.keys.iter().all(|k| k.broken.is_empty()));
        store.close().await;
    }
}

both! {
    async fn a_drained_target_round_trips(db: Db) {
        let store = db.open().await;
        create_provider(&store, &provider("p")).await;
        let mut m = model("m", vec![target("p", "a"), target("p", "b")]);
        m.targets[1].weight = 0;
        create_model(&store, &m).await;
        let got = get_model(&store, "m").await.unwrap();
        assert_eq!(got.spec.targets[1].weight, 0);
        let snapshot = build_snapshot(store.config_state().await.unwrap()).unwrap();
        assert_eq!(snapshot.models[0].targets[1].weight, 0);
        let table = RoutingTable::try_from(snapshot).unwrap();
        assert_eq!(table.models["m"].targets[1].weight, 0);
        store.close().await;
    }
}

both! {
    async fn migration_to_drained_targets_keeps_every_target(db: Db) {
        let old = migrate_up_to(&db, 7).await;
        let (provider_id, model_id) = old_provider_and_model(&old).await;
        let insert = "INSERT INTO model_targets (model_id, position, provider_id, \
                      upstream_model, priority, weight, price_input, price_output, \
                      price_cached_input, price_cache_write) \
                      VALUES ($1, $2, $3, $4, 0, $5, 1.0, 2.0, 0.5, 0.25)";
        sqlx::query(insert)
            .bind(model_id)
            .bind(0_i64)
            .bind(provider_id)
            .bind("a")
            .bind(3_i64)
            .execute(&old)
            .await
            .unwrap();
        // The old CHECK refused a weight of 0.
        let refused = sqlx::query(insert)
            .bind(model_id)
            .bind(1_i64)
            .bind(provider_id)
            .bind("b")
            .bind(0_i64)
            .execute(&old)
            .await;
        assert!(refused.is_err(), "the old CHECK let weight 0 in");
        old.close().await;

        // Opening the store runs 0007: the target is kept, and 0 is allowed.
        let store = db.open().await;
        let m = get_model(&store, "m").await.unwrap();
        assert!(m.broken.is_empty(), "{:?}", m.broken);
        assert_eq!(m.spec.targets.len(), 1);
        assert_eq!(m.spec.targets[0].weight, 3);
        assert_eq!(
            m.spec.targets[0].prices,
            Some(prices(1.0, 2.0, 0.5, 0.25))
        );
        let mut spec = m.spec.clone();
        spec.targets.push(target("p", "b"));
        spec.targets[1].weight = 0;
        let mut tx = store.begin_write().await.unwrap();
        store.update_model(&mut tx, &spec).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(get_model(&store, "m").await.unwrap().spec.targets[1].weight, 0);
        // The foreign key to providers still holds.
        let orphan = sqlx::query(
            "INSERT INTO model_targets (model_id, position, provider_id, upstream_model, \
             priority, weight) VALUES ($1, 9, 99999, 'x', 0, 1)",
        )
        .bind(model_id)
        .execute(store.pool())
        .await;
        assert!(orphan.is_err(), "a target on a missing provider was stored");
        store.close().await;
    }
}
