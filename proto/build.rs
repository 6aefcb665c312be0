//! Compiles `llmgw/v1/*.proto` with protox (pure Rust), so no system
//! `protoc` is needed.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "llmgw/v1/common.proto",
    "llmgw/v1/admin.proto",
    "llmgw/v1/discovery.proto",
    "llmgw/v1/logs.proto",
    "llmgw/v1/quota.proto",
    "llmgw/v1/live.proto",
];

/// Messages that carry secrets get a hand-written, redacting `Debug`.
const REDACTED_DEBUG: &[&str] = &[
    "llmgw.v1.SnapshotProvider",
    "llmgw.v1.CreateProviderRequest",
    "llmgw.v1.UpdateProviderRequest",
    "llmgw.v1.CreateApiKeyResponse",
    "llmgw.v1.ProviderConfig",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    for p in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    let fds = protox::compile(PROTOS, [&root])?;
    let mut builder = tonic_prost_build::configure()
        // A record's headers are a handful of entries written once per
        // request: a B-tree skips hashing, and keeps them sorted for display.
        .btree_map(".llmgw.v1.RequestLog.request_headers")
        .btree_map(".llmgw.v1.RequestLog.response_headers")
        .build_client(true)
        .build_server(true)
        .type_attribute(
            ".llmgw.v1",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .message_attribute(".llmgw.v1", "#[serde(default)]")
        .field_attribute(
            ".llmgw.v1.ModelTarget.rules",
            "#[serde(with = \"crate::json_text\")]",
        )
        .field_attribute(
            ".llmgw.v1.SnapshotTarget.rules",
            "#[serde(with = \"crate::json_text\")]",
        )
        .field_attribute(
            ".llmgw.v1.RequestLog.outcome",
            "#[serde(with = \"crate::outcome_name\")]",
        )
        .field_attribute(
            ".llmgw.v1.LogFilter.outcome",
            "#[serde(with = \"crate::outcome_name\")]",
        );
    for m in REDACTED_DEBUG {
        builder = builder.skip_debug([*m]);
    }
    builder.compile_fds(fds)?;
    Ok(())
}
