#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `llmgw provider models NAME` against a real control plane, which calls
//! the mock upstream itself with the provider's key: each protocol's list
//! (OpenAI, OpenAI-compatible, Anthropic and Gemini, the last two over
//! several pages), as a table and as JSON; a refused key, an unknown
//! provider and an upstream on a closed port, each with its gRPC code and
//! a message that carries no key.

use std::time::{Duration, Instant};

use llmgw_e2e::*;
use llmgw_proto::v1::{admin_client::AdminClient, ListUpstreamModelsRequest};
use serde_json::{json, Value};
use tonic::Code;

/// Listed by the mock in this order; two per page for Anthropic and Gemini.
const MODELS: [&str; 3] = ["m-b", "m-a", "m-c"];
const KEY: &str = "sk-upstream-secret-7f3a9c";

async fn provider(cp: &ControlPlane, name: &str, protocol: &str, base_url: &str, extra: &[&str]) {
    let mut args = vec![
        "provider",
        "add",
        name,
        "--protocol",
        protocol,
        "--base-url",
        base_url,
    ];
    args.extend_from_slice(extra);
    cli_ok(cp, &args).await;
}

/// The gRPC code and message of ListUpstreamModels for `name`.
async fn grpc_error(cp: &ControlPlane, name: &str) -> (Code, String) {
    let mut client = AdminClient::connect(cp.url()).await.unwrap();
    let mut req = tonic::Request::new(ListUpstreamModelsRequest {
        provider: name.into(),
    });
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", cp.admin_token).parse().unwrap(),
    );
    let s = client.list_upstream_models(req).await.unwrap_err();
    (s.code(), s.message().to_string())
}

#[tokio::test]
async fn provider_models_lists_each_protocols_upstream() {
    let mock = llmgw_mock::start(llmgw_mock::Config {
        models: MODELS.map(String::from).to_vec(),
        models_page_size: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    let cp = ControlPlane::start(Db::Sqlite, &[]).await;
    let v1 = mock.base_url();
    let v1beta = format!("{}/v1beta", mock.url());
    for (name, protocol, base) in [
        ("oa", "openai", &v1),
        ("oc", "openai-chat", &v1),
        ("an", "anthropic", &v1),
        ("ge", "gemini", &v1beta),
    ] {
        provider(&cp, name, protocol, base, &["--api-key", KEY]).await;
    }

    for name in ["oa", "oc", "an", "ge"] {
        mock.clear();
        let listed = cli_json(&cp, &["provider", "models", name]).await;
        let ids: Vec<&str> = listed
            .as_array()
            .unwrap_or_else(|| panic!("{name}: not an array: {listed}"))
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["m-a", "m-b", "m-c"], "{name}: sorted by id: {listed}");
        let first = &listed[0];
        let requests = mock.requests();
        let paths: Vec<String> = requests.iter().map(|r| r.uri.to_string()).collect();
        let h = &requests[0].headers;
        match name {
            "oa" | "oc" => {
                assert_eq!(first["created_unix"], 1_700_000_000, "{listed}");
                assert_eq!(first["display_name"], "", "{listed}");
                assert_eq!(paths, ["/v1/models"]);
                assert_eq!(h["authorization"], format!("Bearer {KEY}").as_str());
            }
            "an" => {
                assert_eq!(first["display_name"], "m-a", "{listed}");
                assert_eq!(first["created_unix"], 1_704_067_200, "{listed}");
                // Two pages: the second after the first's last id.
                assert_eq!(
                    paths,
                    [
                        "/v1/models?limit=1000",
                        "/v1/models?limit=1000&after_id=m-a"
                    ]
                );
                assert_eq!(h["x-api-key"], KEY);
                assert_eq!(h["anthropic-version"], "2023-06-01");
            }
            _ => {
                assert_eq!(first["display_name"], "m-a", "{listed}");
                assert_eq!(first["created_unix"], Value::Null, "{listed}");
                assert_eq!(
                    paths,
                    [
                        "/v1beta/models?pageSize=1000",
                        "/v1beta/models?pageSize=1000&pageToken=2"
                    ]
                );
                assert_eq!(h["x-goog-api-key"], KEY);
            }
        }
        assert!(
            requests.iter().all(|r| r.method == "GET"),
            "{name}: {paths:?}"
        );
    }

    // The table: ID, NAME, CREATED, sorted by id.
    let table = cli_ok(&cp, &["provider", "models", "an"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["ID", "NAME", "CREATED"],
        "{table}"
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["m-a", "m-a", "2024-01-01T00:00:00Z"],
        "{table}"
    );
    assert_eq!(lines.len(), 4, "{table}");
    let table = cli_ok(&cp, &["provider", "models", "ge"]).await;
    assert!(
        table.lines().nth(3).is_some_and(|l| l.starts_with("m-c ")),
        "{table}"
    );
    assert_eq!(
        cli_json(&cp, &["provider", "models", "oa"]).await[2],
        json!({"id": "m-c", "display_name": "", "created_unix": 1_700_000_000})
    );

    // A refused key: the mock answers 401 in the provider's own shape
    // (the extra header is sent upstream as a data plane would send it).
    provider(
        &cp,
        "refused",
        "anthropic",
        &v1,
        &["--api-key", KEY, "--header", "x-mock-status: 401"],
    )
    .await;
    let err = cli_err(&cp, &["provider", "models", "refused"]).await;
    assert!(
        err.contains("provider 'refused': the upstream refused the provider's API key"),
        "{err}"
    );
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(!err.contains(KEY), "the key leaked: {err}");
    let (code, message) = grpc_error(&cp, "refused").await;
    assert_eq!(code, Code::FailedPrecondition, "{message}");
    // Gemini without a key: the mock answers 403 PERMISSION_DENIED.
    provider(&cp, "keyless", "gemini", &v1beta, &[]).await;
    let err = cli_err(&cp, &["provider", "models", "keyless"]).await;
    assert!(err.contains("the provider has no API key"), "{err}");
    // Another upstream error: its status and message.
    provider(
        &cp,
        "failing",
        "openai",
        &v1,
        &["--api-key", KEY, "--header", "x-mock-status: 503"],
    )
    .await;
    let (code, message) = grpc_error(&cp, "failing").await;
    assert_eq!(code, Code::Unavailable, "{message}");
    assert!(
        message.contains("HTTP 503") && message.contains("injected HTTP 503 error"),
        "{message}"
    );
    assert!(!message.contains(KEY), "{message}");

    // An unknown provider.
    let err = cli_err(&cp, &["provider", "models", "nope"]).await;
    assert!(err.contains("provider 'nope' not found"), "{err}");
    assert_eq!(grpc_error(&cp, "nope").await.0, Code::NotFound);

    // An upstream on a closed port: unavailable, at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    provider(
        &cp,
        "gone",
        "openai",
        &format!("http://127.0.0.1:{port}/v1"),
        &["--api-key", KEY],
    )
    .await;
    let started = Instant::now();
    let err = cli_err(&cp, &["provider", "models", "gone"]).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.contains("provider 'gone': cannot connect to the upstream"),
        "{err}"
    );
    assert!(!err.contains(KEY), "{err}");
    let (code, message) = grpc_error(&cp, "gone").await;
    assert_eq!(code, Code::Unavailable, "{message}");

    // The control plane's log never holds the key.
    assert!(!cp.log().contains(KEY), "the key is in the log");
}
