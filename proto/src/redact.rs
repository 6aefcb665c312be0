//! `Debug` for messages that carry secrets: the secret fields print as
//! `<redacted>` so that no secret can reach a log line through `{:?}`.

use crate::v1::{
    CreateApiKeyResponse, CreateProviderRequest, ProviderConfig, SnapshotProvider,
    UpdateProviderRequest,
};
use std::collections::HashMap;
use std::fmt;

const REDACTED: &str = "<redacted>";

fn secret(value: &str) -> &'static str {
    if value.is_empty() {
        ""
    } else {
        REDACTED
    }
}

/// Header names only; values may be credentials.
fn header_names(h: &HashMap<String, String>) -> Vec<&str> {
    let mut names: Vec<&str> = h.keys().map(String::as_str).collect();
    names.sort_unstable();
    names
}

impl fmt::Debug for SnapshotProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotProvider")
            .field("name", &self.name)
            .field("protocol", &self.protocol)
            .field("base_url", &self.base_url)
            .field("api_key", &secret(&self.api_key))
            .field("headers", &header_names(&self.headers))
            .field("timeout_s", &self.timeout_s)
            .field("stream_usage", &self.stream_usage)
            .field("proxy", &secret(&self.proxy))
            .finish()
    }
}

impl fmt::Debug for CreateProviderRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateProviderRequest")
            .field("name", &self.name)
            .field("protocol", &self.protocol)
            .field("base_url", &self.base_url)
            .field("api_key", &secret(&self.api_key))
            .field("headers", &header_names(&self.headers))
            .field("timeout_s", &self.timeout_s)
            .field("enabled", &self.enabled)
            .field("stream_usage", &self.stream_usage)
            .field("proxy", &secret(&self.proxy))
            .finish()
    }
}

impl fmt::Debug for UpdateProviderRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateProviderRequest")
            .field("name", &self.name)
            .field("protocol", &self.protocol)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_deref().map(secret))
            .field(
                "headers",
                &self.headers.as_ref().map(|h| header_names(&h.values)),
            )
            .field("timeout_s", &self.timeout_s)
            .field("enabled", &self.enabled)
            .field("stream_usage", &self.stream_usage)
            .field("proxy", &self.proxy.as_deref().map(secret))
            .finish()
    }
}

impl fmt::Debug for CreateApiKeyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateApiKeyResponse")
            .field("api_key", &self.api_key)
            .field("key", &secret(&self.key))
            .finish()
    }
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("protocol", &self.protocol)
            .field("base_url", &self.base_url)
            .field("api_key", &secret(&self.api_key))
            .field("headers", &header_names(&self.headers))
            .field("timeout_s", &self.timeout_s)
            .field("enabled", &self.enabled)
            .field("stream_usage", &self.stream_usage)
            .field("proxy", &secret(&self.proxy))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_reach_debug() {
        let p = SnapshotProvider {
            name: "up".into(),
            api_key: "sk-live-very-secret".into(),
            headers: [("api-key".to_string(), "hdr-secret-value".to_string())].into(),
            ..Default::default()
        };
        let shown = format!("{p:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(!shown.contains("hdr-secret-value"), "{shown}");
        assert!(shown.contains("api-key"));
        let r = CreateApiKeyResponse {
            api_key: None,
            key: "sk-llmgw-abcdef".into(),
        };
        assert!(!format!("{r:?}").contains("abcdef"));
    }
}
