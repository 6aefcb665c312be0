//! Property tests of snapshot conversion (`RoutingTable::try_from`), the
//! data plane's check of what the control plane pushes. On any snapshot,
//! generated from pools of good and hostile values, decoded from random
//! bytes, or decoded from a valid snapshot's encoding with bytes changed,
//! the conversion never panics, and every table it accepts satisfies the
//! same rules the control plane checks on write (names, base URLs, headers,
//! weights, attempts, targets that name known providers, keys that
//! authenticate with their secret).
//!
//! CI runs proptest's default 256 cases per property (about a second). A
//! longer run: `PROPTEST_CASES=50000 cargo test -p llmgw-core --test
//! prop_snapshot`.

// `..Default::default()` on every message: a field added to the protocol
// must not break this test (it is then left at its default).
#![allow(clippy::needless_update)]

use std::collections::HashMap;
use std::sync::Arc;

use llmgw_core::keys;
use llmgw_core::table::{RoutingTable, TargetKey};
use llmgw_core::validate;
use llmgw_proto::v1 as pb;
use proptest::prelude::*;
use prost::Message;

/// Secrets of the keys a snapshot may hold; a key's hash is one of these
/// hashed, or junk.
const SECRETS: [&str; 3] = ["sk-llmgw-a", "sk-llmgw-b", "sk-llmgw-c"];

/// `None` for a good name (the snapshot then gives a unique one), or a
/// hostile one; `h` is the weight of the hostile choices.
fn name(h: u32) -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        40 => Just(None),
        h => prop::sample::select(vec!["", "a b", "a/b", "é", "a\n", "dup"]).prop_map(|s| Some(s.to_string())),
        h => Just(Some("x".repeat(65))),
        h => any::<String>().prop_map(Some),
    ]
}

fn protocol(h: u32) -> impl Strategy<Value = String> {
    prop_oneof![
        40 => prop::sample::select(vec!["openai", "openai-chat", "anthropic", "gemini"]).prop_map(String::from),
        h => prop::sample::select(vec!["", "OpenAI", "x"]).prop_map(String::from),
    ]
}

fn base_url(h: u32) -> impl Strategy<Value = String> {
    prop_oneof![
        40 => prop::sample::select(vec!["http://127.0.0.1:9/v1", "https://api.example.com/v1/", "http://h"])
            .prop_map(String::from),
        4 * h => prop::sample::select(vec![
            "", "ftp://x", "http:///v1", "http://@host", " http://a ", "http://a/\r\nx", "http://a b",
            "http://u:p@h", "http://h?q=1", "http://h#f", "http://h/\t", "https://[::1]:70000", "file:///etc",
            "http://h\u{1}", "javascript:alert(1)",
        ]).prop_map(String::from),
        h => any::<String>(),
    ]
}

fn header(h: u32) -> impl Strategy<Value = (String, String)> {
    let n = prop_oneof![
        40 => prop::sample::select(vec!["x-org", "x-team", "anthropic-beta"]).prop_map(String::from),
        h => prop::sample::select(vec!["host", "Connection", "content-length", "bad name", "", "x-é"])
            .prop_map(String::from),
        h => any::<String>(),
    ];
    let v = prop_oneof![
        40 => Just("v".to_string()),
        h => prop::sample::select(vec!["a\r\nb", "\u{0}", "é", ""]).prop_map(String::from),
        h => any::<String>(),
    ];
    (n, v)
}

/// Prices are not among the checked rules (see the report of issue 14:
/// the conversion does not check them), but hostile ones must not panic.
fn price(h: u32) -> impl Strategy<Value = f64> {
    prop_oneof![40 => 0.0..100.0f64, h => Just(-1.0), h => Just(f64::NAN), h => Just(f64::INFINITY)]
}

fn prices(h: u32) -> impl Strategy<Value = Option<pb::Prices>> {
    prop::option::of(
        (price(h), price(h), price(h), price(h)).prop_map(|(a, b, c, d)| pb::Prices {
            input_per_mtok: a,
            output_per_mtok: b,
            cached_input_per_mtok: c,
            cache_write_per_mtok: d,
            sheet: None,
        }),
    )
}

fn rules(h: u32) -> impl Strategy<Value = String> {
    prop_oneof![
        30 => Just(String::new()),
        10 => prop::sample::select(vec![
            r#"{"field":"key","op":"eq","value":"k"}"#,
            r#"{"any":[{"field":"input_tokens","op":"gt","value":8000},{"not":{"field":"body.a.0","op":"exists"}}]}"#,
            r#"{"field":"headers.x","op":"regex","value":"^a+$"}"#,
        ]).prop_map(String::from),
        h => prop::sample::select(vec![
            r#"{"field":"headers.x","op":"regex","value":"("}"#,
            r#"{"field":"nope","op":"eq","value":1}"#,
            r#"{"all":[]}"#,
            "{",
            "[]",
            "null",
        ]).prop_map(String::from),
        h => any::<String>(),
    ]
}

/// A target; its provider is `Ok(index)` into the snapshot's providers,
/// resolved by [`snapshot`], or a hostile name.
type Target = (Result<usize, String>, pb::SnapshotTarget);

fn target(h: u32) -> impl Strategy<Value = Target> {
    (
        prop_oneof![40 => any::<usize>().prop_map(Ok), h => name(h).prop_map(|n| Err(n.unwrap_or_default()))],
        prop_oneof![40 => Just("up-1".to_string()), h => Just(String::new()), h => any::<String>()],
        prop_oneof![40 => -2i32..3, h => any::<i32>()],
        prop_oneof![40 => 1u32..4, h => Just(0u32), h => any::<u32>()],
        rules(h),
        prices(h),
    )
        .prop_map(|(provider, upstream_model, priority, weight, rules, prices)| {
            let t = pb::SnapshotTarget { upstream_model, priority, weight, rules, prices, ..Default::default() };
            (provider, t)
        })
}

type Model = (Option<String>, pb::SnapshotModel, Vec<Target>);

fn model(h: u32) -> impl Strategy<Value = Model> {
    (
        name(h),
        prop_oneof![
            40 => prop::sample::select(vec!["", "priority", "weighted", "round-robin", "least-latency", "cost-first"]),
            h => prop::sample::select(vec!["fastest", "round_robin", "Priority"]),
        ],
        prop_oneof![40 => 0u32..4, h => any::<u32>()],
        prop::option::of(any::<u32>()),
        prices(h),
        prop::collection::vec(target(h), 0..4),
        prop_oneof![40 => prop::option::of(1u32..100_000), h => Just(Some(0u32))],
        prop_oneof![40 => prop::sample::select(vec!["", "strict", "lenient"]), h => Just("loose")],
    )
        .prop_map(
            |(name, strategy, max_attempts, retry_delay_ms, prices, targets, default_max_tokens, translation)| {
                let m = pb::SnapshotModel {
                    strategy: strategy.into(),
                    max_attempts,
                    retry_delay_ms,
                    prices,
                    default_max_tokens,
                    translation: translation.into(),
                    ..Default::default()
                };
                (name, m, targets)
            },
        )
}

fn provider(h: u32) -> impl Strategy<Value = (Option<String>, pb::SnapshotProvider)> {
    (
        name(h),
        protocol(h),
        base_url(h),
        prop_oneof![20 => Just(String::new()), 20 => Just("sk-up".to_string()), h => Just("a\nb".to_string()), h => any::<String>()],
        prop::collection::hash_map(header(h).prop_map(|(n, _)| n), header(h).prop_map(|(_, v)| v), 0..3),
        prop_oneof![40 => Just(0u32), h => any::<u32>()],
        any::<bool>(),
    )
        .prop_map(|(name, protocol, base_url, api_key, headers, timeout_s, stream_usage)| {
            let p = pb::SnapshotProvider {
                protocol,
                base_url,
                api_key,
                headers,
                timeout_s,
                stream_usage,
                ..Default::default()
            };
            (name, p)
        })
}

/// A key: its hash is `Ok(())` for its own secret's (resolved by
/// [`snapshot`]: key `i` gets `SECRETS[i]`), or hostile text.
fn key(h: u32) -> impl Strategy<Value = (Option<String>, Result<bool, String>, pb::SnapshotKey)> {
    (
        name(h),
        prop_oneof![
            40 => any::<bool>().prop_map(Ok),
            h => Just(Err("zz".to_string())),
            h => "[0-9a-f]{63,65}".prop_map(Err),
            h => any::<String>().prop_map(Err),
        ],
        prop::collection::vec(name(h).prop_map(Option::unwrap_or_default), 0..3),
        prop_oneof![40 => Just(0i64), h => any::<i64>()],
        any::<bool>(),
    )
        .prop_map(|(name, hash, models, expires_at_ms, log_bodies)| {
            let k = pb::SnapshotKey {
                models,
                expires_at_ms,
                log_bodies,
                ..Default::default()
            };
            (name, hash, k)
        })
}

fn settings(h: u32) -> impl Strategy<Value = Option<pb::Settings>> {
    let small = move || prop_oneof![40 => 1u32..5, h => Just(0u32), h => any::<u32>()];
    let odds = 40.0 / (40.0 + f64::from(h));
    prop::option::weighted(
        odds,
        (
            (small(), small(), small(), any::<bool>(), small()),
            (
                prop_oneof![40 => Just(0u64), h => any::<u64>()],
                small(),
                small(),
                small(),
                prop::option::of(small()),
                prop::option::of(small()),
            ),
        )
            .prop_map(|((a, b, c, d, e), (f, g, h, i, j, k))| pb::Settings {
                retry_max_attempts: a,
                retry_delay_ms: b,
                http_timeout_s: c,
                log_bodies: d,
                log_body_max_bytes: e,
                max_request_body_bytes: f,
                connect_timeout_ms: g,
                first_byte_timeout_s: h,
                deadline_s: i,
                retry_budget_percent: j,
                retry_budget_min_retries: k,
                ..Default::default()
            }),
    )
}

/// A snapshot whose values are good, or hostile with weight `h` (of 40)
/// each. Good names are unique and targets name existing providers, so a
/// snapshot with nothing hostile is accepted.
fn snapshot(h: u32) -> impl Strategy<Value = pb::Snapshot> {
    (
        prop_oneof![40 => 1u64..10, h => Just(0u64), h => any::<u64>()],
        prop::collection::vec(provider(h), 0..4),
        prop::collection::vec(model(h), 0..4),
        prop::collection::vec(key(h), 0..SECRETS.len()),
        settings(h),
    )
        .prop_map(|(version, providers, models, keys, settings)| {
            let providers: Vec<pb::SnapshotProvider> = providers
                .into_iter()
                .enumerate()
                .map(|(i, (n, p))| pb::SnapshotProvider {
                    name: n.unwrap_or_else(|| format!("p{i}")),
                    ..p
                })
                .collect();
            let models = models
                .into_iter()
                .enumerate()
                .map(|(i, (n, m, targets))| {
                    let targets = targets
                        .into_iter()
                        .map(|(to, t)| {
                            let provider = match to {
                                Ok(j) if providers.is_empty() => format!("p{j}"),
                                Ok(j) => providers[j % providers.len()].name.clone(),
                                Err(hostile) => hostile,
                            };
                            pb::SnapshotTarget { provider, ..t }
                        })
                        .collect();
                    pb::SnapshotModel {
                        name: n.unwrap_or_else(|| format!("m{i}")),
                        targets,
                        ..m
                    }
                })
                .collect();
            let keys = keys
                .into_iter()
                .enumerate()
                .map(|(i, (n, hash, k))| {
                    let hash = match hash {
                        Ok(upper) if upper => keys::hash_hex(SECRETS[i]).to_uppercase(),
                        Ok(_) => keys::hash_hex(SECRETS[i]),
                        Err(hostile) => hostile,
                    };
                    pb::SnapshotKey {
                        name: n.unwrap_or_else(|| format!("k{i}")),
                        hash,
                        ..k
                    }
                })
                .collect();
            pb::Snapshot {
                version,
                nonce: "n".into(),
                providers,
                models,
                keys,
                settings,
                ..Default::default()
            }
        })
}

/// Every rule an accepted table must satisfy, for the snapshot it came from.
fn check(input: &pb::Snapshot, t: &RoutingTable) -> Result<(), TestCaseError> {
    prop_assert!(t.version != 0 && t.version == input.version);

    let s = &t.settings;
    prop_assert!(s.retry_max_attempts >= 1);
    prop_assert!(!s.http_timeout.is_zero());
    prop_assert!(!s.first_byte_timeout.is_zero());
    prop_assert!(!s.connect_timeout.is_zero());
    prop_assert!(!s.deadline.is_zero());
    prop_assert!(s.max_request_body_bytes > 0);
    prop_assert!(s.retry_budget_ratio.is_finite() && s.retry_budget_ratio >= 0.0);

    prop_assert_eq!(t.providers.len(), input.providers.len());
    for (name, p) in &t.providers {
        prop_assert_eq!(name, &p.name);
        prop_assert!(validate::name("provider", name).is_ok(), "{name:?}");
        prop_assert!(!p.base_url.ends_with('/'), "{}", p.base_url);
        let again = validate::base_url(&p.base_url);
        prop_assert!(
            again.is_ok(),
            "stored base URL {:?} does not validate",
            p.base_url
        );
        // Stored in its normal form: validating it again changes nothing.
        let normal = again
            .map(|u| u.as_str().trim_end_matches('/').to_string())
            .unwrap_or_default();
        prop_assert_eq!(&normal, &p.base_url);
        for (n, v) in &p.headers {
            // Values came from UTF-8 strings; no CR, LF or NUL got through.
            let text = std::str::from_utf8(v.as_bytes()).unwrap_or("\u{0}");
            prop_assert!(validate::header(n.as_str(), text).is_ok(), "{n}");
            prop_assert!(!v.as_bytes().iter().any(|b| matches!(b, b'\r' | b'\n' | 0)));
            prop_assert!(v.is_sensitive());
        }
        prop_assert!(!p.timeout.is_zero());
    }

    prop_assert_eq!(t.models.len(), input.models.len());
    for (name, m) in &t.models {
        prop_assert_eq!(name, &m.name);
        prop_assert!(validate::name("model", name).is_ok(), "{name:?}");
        prop_assert!(m.max_attempts >= 1);
        prop_assert!(m.default_max_tokens != Some(0));
        prop_assert!(m.targets.windows(2).all(|w| w[0].priority <= w[1].priority));
        for tg in &m.targets {
            let known = t.providers.get(&tg.provider.name);
            prop_assert!(known.is_some_and(|p| Arc::ptr_eq(p, &tg.provider)));
            prop_assert!(!tg.upstream_model.is_empty());
            prop_assert!(validate::weight(tg.weight).is_ok());
            // The key runtime state goes by is the target's own identity.
            let key = TargetKey::of(&tg.provider.name, &tg.upstream_model);
            prop_assert_eq!(&tg.key, &key);
        }
    }

    // Keys: as many as sent, each found by its own secret and no other.
    prop_assert_eq!(t.key_count(), input.keys.len());
    let by_hash: HashMap<String, &pb::SnapshotKey> = input
        .keys
        .iter()
        .map(|k| (k.hash.to_ascii_lowercase(), k))
        .collect();
    for secret in SECRETS {
        let sent = by_hash.get(&keys::hash_hex(secret));
        match t.authenticate(secret, 0) {
            Ok(k) => {
                prop_assert!(sent.is_some_and(|s| s.name == k.name));
                prop_assert!(validate::name("key", &k.name).is_ok());
            }
            Err(_) => {
                prop_assert!(sent.is_none_or(|s| s.expires_at_ms < 0))
            }
        }
    }
    Ok(())
}

fn convert(s: pb::Snapshot) -> Result<(), TestCaseError> {
    let input = s.clone();
    match RoutingTable::try_from(s) {
        Ok(t) => check(&input, &t),
        // A rejection names what is wrong.
        Err(e) => {
            prop_assert!(!e.0.is_empty());
            Ok(())
        }
    }
}

/// A snapshot every rule accepts, to mutate.
fn valid() -> pb::Snapshot {
    pb::Snapshot {
        version: 3,
        nonce: "n".into(),
        providers: vec![pb::SnapshotProvider {
            name: "a".into(),
            protocol: "openai".into(),
            base_url: "http://127.0.0.1:9/v1".into(),
            api_key: "sk-up".into(),
            headers: [("x-org".to_string(), "v".to_string())].into(),
            ..Default::default()
        }],
        models: vec![pb::SnapshotModel {
            name: "m".into(),
            strategy: "priority".into(),
            targets: vec![pb::SnapshotTarget {
                provider: "a".into(),
                upstream_model: "up".into(),
                weight: 1,
                rules: r#"{"field":"key","op":"eq","value":"k"}"#.into(),
                ..Default::default()
            }],
            ..Default::default()
        }],
        keys: vec![pb::SnapshotKey {
            name: "k".into(),
            hash: keys::hash_hex(SECRETS[0]),
            models: vec!["m".into()],
            ..Default::default()
        }],
        settings: Some(pb::Settings {
            retry_max_attempts: 2,
            http_timeout_s: 5,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn the_valid_base_snapshot_is_accepted() {
    let t = RoutingTable::try_from(valid()).unwrap();
    check(&valid(), &t).unwrap();
    assert_eq!(t.authenticate(SECRETS[0], 0).unwrap().name, "k");
}

/// A snapshot is the control plane's word, but the data plane checks it
/// whole, prices included (`price::sheet_from_legacy`): a NaN, infinite
/// or negative price would otherwise reach cost computation.
#[test]
fn bad_prices_are_refused() {
    for bad in [f64::NAN, f64::INFINITY, -1.0] {
        let mut s = valid();
        s.models[0].prices = Some(pb::Prices {
            input_per_mtok: bad,
            ..Default::default()
        });
        assert!(
            RoutingTable::try_from(s).is_err(),
            "model price {bad} accepted"
        );
        let mut s = valid();
        s.models[0].targets[0].prices = Some(pb::Prices {
            output_per_mtok: bad,
            ..Default::default()
        });
        assert!(
            RoutingTable::try_from(s).is_err(),
            "target price {bad} accepted"
        );
    }
}

proptest! {
    #[test]
    fn mostly_good_snapshots_are_accepted_only_when_valid(s in snapshot(1)) {
        convert(s)?;
    }

    #[test]
    fn hostile_snapshots_never_panic_and_accepted_ones_are_valid(s in snapshot(20)) {
        convert(s)?;
    }

    #[test]
    fn random_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(s) = pb::Snapshot::decode(&b[..]) {
            convert(s)?;
        }
    }

    #[test]
    fn corrupted_encodings_never_panic(
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in prop::option::of(any::<usize>()),
    ) {
        let mut b = valid().encode_to_vec();
        for (i, v) in edits {
            let i = i % b.len();
            b[i] = v;
        }
        if let Some(c) = cut {
            b.truncate(c % (b.len() + 1));
        }
        if let Ok(s) = pb::Snapshot::decode(&b[..]) {
            convert(s)?;
        }
    }
}
