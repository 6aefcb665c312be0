//! Price history (#16) in the store and the snapshot, against a fresh
//! SQLite file and a fresh PostgreSQL database (see `common`): exact price
//! sheets survive a round trip, each change is recorded with its time, a
//! scheduled change waits for its time in reads and rides in the snapshot
//! so data planes switch by themselves, and a change keeps targets' own
//! prices by target, whatever happens to the target list before its time
//! (also across migration 0022, which rewrote index-keyed rows).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use common::*;
use llmgw_controlplane::hub::build_snapshot;
use llmgw_controlplane::store::{now_ms, PriceSet, TargetKey};
use llmgw_core::price::{PriceSheet, Tier};
use llmgw_core::RoutingTable;

fn key(provider: &str, upstream_model: &str) -> TargetKey {
    TargetKey {
        provider: provider.into(),
        upstream_model: upstream_model.into(),
        occurrence: 0,
    }
}

/// Every billing mode at once, with amounts no f64 holds exactly.
fn rich() -> PriceSheet {
    let mut s = prices(0.1, 0.3, 0.01, 0.125);
    s.tiers = vec![Tier {
        above_input_tokens: 200_000,
        prices: prices(0.2, 0.6, 0.02, 0.25).tokens,
    }];
    s.per_request = "0.000000001".parse().unwrap();
    s.per_image
        .insert("1024x1024/high".into(), "0.167".parse().unwrap());
    s.per_image.insert("*".into(), "0.04".parse().unwrap());
    s.per_audio_second = "0.0001".parse().unwrap();
    s.per_mchar = "15".parse().unwrap();
    s
}

both! {
    async fn exact_prices_and_their_history_round_trip(db: Db) {
        let store = db.open().await;
        create_provider(&store, &provider("p")).await;
        let mut m = model("m", vec![target("p", "a"), target("p", "b")]);
        m.prices = rich();
        m.targets[1].prices = Some(prices(7.0, 8.0, 0.0, 0.0));
        create_model(&store, &m).await;
        let got = get_model(&store, "m").await.unwrap();
        assert_eq!(got.spec, m);
        assert!(got.scheduled.is_empty());

        // A change that does not touch the prices records nothing.
        let mut same = m.clone();
        same.max_attempts = 3;
        let mut tx = store.begin_write().await.unwrap();
        store.update_model(&mut tx, &same).await.unwrap();
        tx.commit().await.unwrap();
        let mut conn = store.pool().acquire().await.unwrap();
        assert_eq!(store.price_history(&mut conn, "m").await.unwrap().len(), 1);
        drop(conn);

        // A price change is recorded from now on, and read back.
        let before = now_ms();
        let mut dearer = same.clone();
        dearer.prices = prices(1.0, 2.0, 0.0, 0.0);
        let mut tx = store.begin_write().await.unwrap();
        store.update_model(&mut tx, &dearer).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(get_model(&store, "m").await.unwrap().spec, dearer);
        let mut conn = store.pool().acquire().await.unwrap();
        let h = store.price_history(&mut conn, "m").await.unwrap();
        drop(conn);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].prices.model, rich());
        assert_eq!(h[1].prices, PriceSet::of(&dearer));
        assert!(h[1].from_ms >= before && h[1].from_ms >= h[0].from_ms);
        assert_eq!(
            h[1].prices.targets.get(&key("p", "b")),
            Some(&prices(7.0, 8.0, 0.0, 0.0))
        );

        // Deleting the model forgets its history.
        let mut tx = store.begin_write().await.unwrap();
        store.delete_model(&mut tx, "m").await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(count(&store, "SELECT COUNT(*) FROM price_history").await, 0);
    }
}

both! {
    async fn a_scheduled_change_waits_for_its_time_and_rides_in_the_snapshot(db: Db) {
        let store = db.open().await;
        create_provider(&store, &provider("p")).await;
        let mut off = target("p", "off");
        off.enabled = false;
        // The disabled target is not in the snapshot: the schedule names
        // served targets by their index among those.
        let m = model("m", vec![off, target("p", "a"), target("p", "b")]);
        create_model(&store, &m).await;
        let later = PriceSet {
            model: prices(5.0, 6.0, 0.0, 0.0),
            targets: [(key("p", "b"), rich())].into(),
        };
        let from = now_ms() + 3_600_000;
        let mut tx = store.begin_write().await.unwrap();
        store.schedule_prices(&mut tx, "m", from, &later).await.unwrap();
        tx.commit().await.unwrap();

        // Reads keep the prices in effect, and list the change as later.
        let row = get_model(&store, "m").await.unwrap();
        assert_eq!(row.spec.prices, m.prices);
        assert_eq!(row.scheduled.len(), 1);
        assert_eq!(row.scheduled[0].from_ms, from);

        let snap = build_snapshot(store.config_state().await.unwrap()).unwrap();
        let sm = &snap.models[0];
        assert_eq!(sm.targets.len(), 2);
        assert_eq!(sm.price_schedule.len(), 1);
        assert_eq!(sm.price_schedule[0].from_ms, from);
        assert_eq!(
            sm.price_schedule[0].targets.keys().collect::<Vec<_>>(),
            [&1],
            "target 'b' is the second served target"
        );
        let table = RoutingTable::try_from(snap).unwrap();
        let t = &table.models["m"].targets;
        assert_eq!(t[0].prices.at(from - 1), &m.prices);
        assert_eq!(t[0].prices.at(from), &prices(5.0, 6.0, 0.0, 0.0));
        assert_eq!(t[1].prices.at(from), &rich());

        // A time that has passed, or prices that are not valid, are refused.
        let mut tx = store.begin_write().await.unwrap();
        assert_err!(
            store.schedule_prices(&mut tx, "m", now_ms() - 1000, &later).await,
            Invalid,
            "not in the future"
        );
        drop(tx);
        let mut bad = later.clone();
        bad.model.per_image.insert("a/b/c".into(), Default::default());
        let mut tx = store.begin_write().await.unwrap();
        assert_err!(
            store.schedule_prices(&mut tx, "m", from, &bad).await,
            Invalid,
            "image price key"
        );
        drop(tx);
    }
}

both! {
    async fn export_and_apply_carry_every_mode_exactly(db: Db) {
        use llmgw_controlplane::apply;
        let store = db.open().await;
        create_provider(&store, &provider("p")).await;
        let mut m = model("m", vec![target("p", "a"), target("p", "b")]);
        m.prices = rich();
        m.targets[0].prices = Some(rich());
        create_model(&store, &m).await;
        let exported = apply::export(&store.config_state().await.unwrap());
        let prices = exported.models[0].prices.as_ref().unwrap();
        let sheet = prices.sheet.as_ref().unwrap();
        assert_eq!(sheet.input_per_mtok, "0.1");
        assert_eq!(sheet.per_request, "0.000000001");
        assert_eq!(sheet.tiers[0].above_input_tokens, 200_000);
        assert_eq!(sheet.per_image["1024x1024/high"], "0.167");
        // The f64 beside it, for older readers.
        assert_eq!(prices.input_per_mtok, 0.1);

        let opts = || apply::Options { prune: true, allow_empty: true };
        // Applied back unchanged: nothing to do.
        let mut tx = store.begin_write().await.unwrap();
        let out = apply::apply(&store, &mut tx, exported.clone(), opts()).await.unwrap();
        assert!(out.changes.is_empty(), "{:?}", out.changes);
        drop(tx);

        // A changed tier is a change of prices, applied exactly and recorded.
        let mut desired = exported.clone();
        let s = desired.models[0].prices.as_mut().unwrap().sheet.as_mut().unwrap();
        s.tiers[0].output_per_mtok = "0.600000001".into();
        let mut tx = store.begin_write().await.unwrap();
        let out = apply::apply(&store, &mut tx, desired, opts()).await.unwrap();
        tx.commit().await.unwrap();
        let details = format!("{:?}", out.changes);
        assert!(details.contains("above 200000: 0.2/0.600000001"), "{details}");
        let got = get_model(&store, "m").await.unwrap().spec;
        assert_eq!(got.prices.tiers[0].prices.output.nanos(), 600_000_001);
        assert_eq!(got.targets[0].prices, Some(rich()));
        let mut conn = store.pool().acquire().await.unwrap();
        assert_eq!(store.price_history(&mut conn, "m").await.unwrap().len(), 2);
        drop(conn);

        // An exported file whose f64 price was edited, and not its sheet,
        // is refused rather than applied without the edit.
        let mut stale = exported;
        stale.models[0].prices.as_mut().unwrap().input_per_mtok = 0.5;
        let mut tx = store.begin_write().await.unwrap();
        assert_err!(
            apply::apply(&store, &mut tx, stale, opts()).await,
            Invalid,
            "disagrees with sheet.input_per_mtok"
        );
    }
}

both! {
    async fn an_unreadable_history_row_breaks_only_its_model(db: Db) {
        let store = db.open().await;
        create_provider(&store, &provider("p")).await;
        create_model(&store, &model("bad", vec![target("p", "a")])).await;
        create_model(&store, &model("good", vec![target("p", "a")])).await;
        let mut conn = store.pool().acquire().await.unwrap();
        for text in ["not json", r#"{"model":{"tiers":[{"above_input_tokens":0,"prices":{}}]}}"#] {
            sqlx::query(
                "INSERT INTO price_history (model, effective_from, prices, recorded_at) \
                 VALUES ('bad', $1, $2, 0)",
            )
            .bind(now_ms() - 1)
            .bind(text)
            .execute(&mut *conn)
            .await
            .unwrap();
        }
        drop(conn);
        let row = get_model(&store, "bad").await.unwrap();
        assert_eq!(row.broken.len(), 1, "{:?}", row.broken);
        assert_eq!(row.broken[0].field, "prices");
        assert!(row.broken[0].reason.contains("tiers[0]"), "{:?}", row.broken);
        // Left out of the snapshot; the rest is served.
        let snap = build_snapshot(store.config_state().await.unwrap()).unwrap();
        assert_eq!(snap.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["good"]);
        RoutingTable::try_from(snap).unwrap();
        // New prices supersede it.
        let mut fixed = row.spec.clone();
        fixed.prices = prices(1.0, 1.0, 0.0, 0.0);
        let mut tx = store.begin_write().await.unwrap();
        store.update_model(&mut tx, &fixed).await.unwrap();
        tx.commit().await.unwrap();
        let row = get_model(&store, "bad").await.unwrap();
        assert!(row.broken.is_empty(), "{:?}", row.broken);
        assert_eq!(row.spec.prices, prices(1.0, 1.0, 0.0, 0.0));
    }
}

/// Schedules `later` for model `m` an hour from now; its time.
async fn schedule(store: &llmgw_controlplane::store::Store, later: &PriceSet) -> i64 {
    let from = now_ms() + 3_600_000;
    let mut tx = store.begin_write().await.unwrap();
    store
        .schedule_prices(&mut tx, "m", from, later)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    from
}

/// The snapshot's routing table, and model `m`'s target of upstream
/// model `upstream`'s prices at `at`.
async fn served_at(
    store: &llmgw_controlplane::store::Store,
    upstream: &str,
    at: i64,
) -> PriceSheet {
    let snap = build_snapshot(store.config_state().await.unwrap()).unwrap();
    let table = RoutingTable::try_from(snap).unwrap();
    let t = table.models["m"]
        .targets
        .iter()
        .find(|t| t.upstream_model == upstream)
        .unwrap_or_else(|| panic!("no target {upstream}"));
    t.prices.at(at).clone()
}

both! {
    async fn a_scheduled_target_price_stays_with_its_target_when_targets_change(db: Db) {
        let store = db.open().await;
        create_provider(&store, &provider("p")).await;
        create_provider(&store, &provider("q")).await;
        let m = model("m", vec![target("p", "a"), target("q", "b"), target("p", "c")]);
        create_model(&store, &m).await;
        let (for_b, for_c) = (prices(2.0, 2.0, 0.0, 0.0), rich());
        let later = PriceSet {
            model: prices(5.0, 6.0, 0.0, 0.0),
            targets: [(key("q", "b"), for_b.clone()), (key("p", "c"), for_c.clone())].into(),
        };
        let from = schedule(&store, &later).await;

        // Before its time: 'a' goes, 'c' comes first, 'd' is new where
        // 'b' was second. By position, 'd' would get 'c''s prices and 'c'
        // 'b''s.
        let mut changed = m.clone();
        changed.targets = vec![target("p", "c"), target("p", "d"), target("q", "b")];
        for (i, t) in changed.targets.iter_mut().enumerate() {
            t.priority = i as i32;
        }
        let mut tx = store.begin_write().await.unwrap();
        store.update_model(&mut tx, &changed).await.unwrap();
        tx.commit().await.unwrap();

        let row = get_model(&store, "m").await.unwrap();
        assert!(row.broken.is_empty(), "{:?}", row.broken);
        assert_eq!(row.scheduled.len(), 1);
        assert_eq!(row.scheduled[0].prices, later);
        assert_eq!(served_at(&store, "c", from).await, for_c);
        assert_eq!(served_at(&store, "b", from).await, for_b);
        assert_eq!(served_at(&store, "d", from).await, later.model, "a new target has the model's");
        assert_eq!(served_at(&store, "c", from - 1).await, m.prices, "not before its time");
        // The snapshot names 'b' and 'c' by their index there.
        let snap = build_snapshot(store.config_state().await.unwrap()).unwrap();
        let by_index: Vec<_> = snap.models[0].price_schedule[0].targets.keys().copied().collect();
        let mut by_index = by_index;
        by_index.sort_unstable();
        assert_eq!(by_index, [0, 2]);

        // The history shows the change by target.
        let mut conn = store.pool().acquire().await.unwrap();
        let h = store.price_history(&mut conn, "m").await.unwrap();
        drop(conn);
        assert_eq!(h.last().unwrap().prices, later);

        // Renaming a target (`model retarget`) takes its scheduled prices
        // along.
        let mut tx = store.begin_write().await.unwrap();
        let to = llmgw_controlplane::model_tools::TargetRef {
            provider: "q".into(),
            upstream_model: "b2".into(),
        };
        let from_ref = llmgw_controlplane::model_tools::TargetRef {
            provider: "q".into(),
            upstream_model: "b".into(),
        };
        llmgw_controlplane::model_tools::retarget(&store, &mut tx, &from_ref, &to)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(served_at(&store, "b2", from).await, for_b);
        assert_eq!(served_at(&store, "c", from).await, for_c);

        // Prices for a target the model does not have cannot be scheduled.
        let stray = PriceSet {
            model: prices(1.0, 1.0, 0.0, 0.0),
            targets: [(key("p", "zzz"), for_b.clone())].into(),
        };
        let mut tx = store.begin_write().await.unwrap();
        assert_err!(
            store.schedule_prices(&mut tx, "m", from, &stray).await,
            Invalid,
            "no target p:zzz"
        );
    }
}

both! {
    async fn duplicate_targets_keep_their_own_scheduled_prices(db: Db) {
        let store = db.open().await;
        create_provider(&store, &provider("p")).await;
        let m = model("m", vec![target("p", "a"), target("p", "a")]);
        create_model(&store, &m).await;
        let second = TargetKey { occurrence: 1, ..key("p", "a") };
        let later = PriceSet {
            model: prices(5.0, 6.0, 0.0, 0.0),
            targets: [(second.clone(), rich())].into(),
        };
        schedule(&store, &later).await;
        let row = get_model(&store, "m").await.unwrap();
        assert_eq!(row.scheduled[0].prices.targets.keys().collect::<Vec<_>>(), [&second]);
        let snap = build_snapshot(store.config_state().await.unwrap()).unwrap();
        assert_eq!(
            snap.models[0].price_schedule[0].targets.keys().collect::<Vec<_>>(),
            [&1]
        );
    }
}

both! {
    async fn migration_0022_keys_stored_target_prices_by_target(db: Db) {
        let old = migrate_up_to(&db, 22).await;
        let (provider_id, model_id) = old_provider_and_model(&old).await;
        for (pos, upstream) in [(0_i64, "a"), (1, "b"), (2, "a")] {
            sqlx::query(
                "INSERT INTO model_targets (model_id, position, provider_id, upstream_model, \
                 priority, weight) VALUES ($1, $2, $3, $4, $2, 1)",
            )
            .bind(model_id)
            .bind(pos)
            .bind(provider_id)
            .bind(upstream)
            .execute(&old)
            .await
            .unwrap();
        }
        let from = now_ms() + 3_600_000;
        // Index 1 is 'b', 2 the second 'a'; 7 is no target and goes, and
        // so does "1x", which is no index (not a second 'b').
        let rows = [
            (from, r#"{"model":{"tokens":{"input":"5"}},"targets":{"1":{"tokens":{"input":"2"}},"2":{"per_request":"0.000000001"},"7":{},"1x":{"tokens":{"input":"9"}}}}"#),
            (1, r#"{"model":{"tokens":{"input":"1"}}}"#),
            (2, "not json"),
        ];
        for (at, text) in rows {
            sqlx::query(
                "INSERT INTO price_history (model, effective_from, prices, recorded_at) \
                 VALUES ('m', $1, $2, 1)",
            )
            .bind(at)
            .bind(text)
            .execute(&old)
            .await
            .unwrap();
        }
        old.close().await;

        let store = db.open().await;
        let stored: Vec<String> = sqlx::query_scalar(
            "SELECT prices FROM price_history ORDER BY effective_from DESC",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        assert!(!stored[0].contains(r#""targets""#), "{}", stored[0]);
        assert!(stored[0].contains(r#""target_prices""#), "{}", stored[0]);
        assert_eq!(stored[1], "not json", "a row that is no JSON is left as it is");
        // The unreadable row is the one in effect: drop it, so the model
        // reads its scheduled change.
        sqlx::query("DELETE FROM price_history WHERE prices = 'not json'")
            .execute(store.pool())
            .await
            .unwrap();
        let row = get_model(&store, "m").await.unwrap();
        assert!(row.broken.is_empty(), "{:?}", row.broken);
        let change = &row.scheduled[0].prices;
        let second_a = TargetKey { occurrence: 1, ..key("p", "a") };
        assert_eq!(
            change.targets.keys().collect::<Vec<_>>(),
            [&second_a, &key("p", "b")]
        );
        assert_eq!(change.targets[&second_a].per_request.nanos(), 1);
        assert_eq!(change.targets[&key("p", "b")], prices(2.0, 0.0, 0.0, 0.0));

        // With 'b' moved last, the change still goes to it.
        let mut spec = row.spec.clone();
        let b = spec.targets.remove(1);
        spec.targets.push(b);
        let mut tx = store.begin_write().await.unwrap();
        store.update_model(&mut tx, &spec).await.unwrap();
        tx.commit().await.unwrap();
        let row = get_model(&store, "m").await.unwrap();
        assert_eq!(&row.scheduled[0].prices, change);
        assert_eq!(served_at(&store, "b", from).await, prices(2.0, 0.0, 0.0, 0.0));
    }
}
