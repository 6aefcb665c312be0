//! Global settings pushed to data planes in every snapshot. They come from
//! the control plane's flags and environment, and are stored so that a
//! change bumps the configuration version like any other change.

use std::collections::BTreeMap;

use llmgw_proto::v1 as pb;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalSettings {
    pub retry_max_attempts: u32,
    pub retry_delay_ms: u32,
    pub http_timeout_s: u32,
    pub log_bodies: bool,
    pub log_body_max_bytes: u32,
    pub max_request_body_bytes: u64,
    pub connect_timeout_ms: u32,
    pub first_byte_timeout_s: u32,
    pub deadline_s: u32,
    pub retry_budget_percent: u32,
    pub retry_budget_min_retries: u32,
    /// How far past its grant a data plane may admit while it waits for
    /// more, in percent of a limit (the quota protocol's slack).
    pub quota_slack_percent: u32,
}

impl Default for GlobalSettings {
    fn default() -> Self {
        GlobalSettings {
            retry_max_attempts: 3,
            retry_delay_ms: 1000,
            http_timeout_s: 60,
            log_bodies: true,
            log_body_max_bytes: 64 * 1024,
            max_request_body_bytes: 32 * 1024 * 1024,
            connect_timeout_ms: 5000,
            first_byte_timeout_s: 60,
            deadline_s: 300,
            retry_budget_percent: 20,
            retry_budget_min_retries: 10,
            quota_slack_percent: 10,
        }
    }
}

impl GlobalSettings {
    pub fn to_stored(&self) -> BTreeMap<String, String> {
        [
            ("retry_max_attempts", self.retry_max_attempts.to_string()),
            ("retry_delay_ms", self.retry_delay_ms.to_string()),
            ("http_timeout_s", self.http_timeout_s.to_string()),
            ("log_bodies", self.log_bodies.to_string()),
            ("log_body_max_bytes", self.log_body_max_bytes.to_string()),
            (
                "max_request_body_bytes",
                self.max_request_body_bytes.to_string(),
            ),
            ("connect_timeout_ms", self.connect_timeout_ms.to_string()),
            (
                "first_byte_timeout_s",
                self.first_byte_timeout_s.to_string(),
            ),
            ("deadline_s", self.deadline_s.to_string()),
            (
                "retry_budget_percent",
                self.retry_budget_percent.to_string(),
            ),
            (
                "retry_budget_min_retries",
                self.retry_budget_min_retries.to_string(),
            ),
            ("quota_slack_percent", self.quota_slack_percent.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Reads stored settings; anything missing or unreadable keeps its
    /// default.
    pub fn from_stored(stored: &BTreeMap<String, String>) -> Self {
        fn get<T: std::str::FromStr>(m: &BTreeMap<String, String>, k: &str, d: T) -> T {
            m.get(k).and_then(|v| v.parse().ok()).unwrap_or(d)
        }
        let d = Self::default();
        GlobalSettings {
            retry_max_attempts: get(stored, "retry_max_attempts", d.retry_max_attempts),
            retry_delay_ms: get(stored, "retry_delay_ms", d.retry_delay_ms),
            http_timeout_s: get(stored, "http_timeout_s", d.http_timeout_s),
            log_bodies: get(stored, "log_bodies", d.log_bodies),
            log_body_max_bytes: get(stored, "log_body_max_bytes", d.log_body_max_bytes),
            max_request_body_bytes: get(stored, "max_request_body_bytes", d.max_request_body_bytes),
            connect_timeout_ms: get(stored, "connect_timeout_ms", d.connect_timeout_ms),
            first_byte_timeout_s: get(stored, "first_byte_timeout_s", d.first_byte_timeout_s),
            deadline_s: get(stored, "deadline_s", d.deadline_s),
            retry_budget_percent: get(stored, "retry_budget_percent", d.retry_budget_percent),
            retry_budget_min_retries: get(
                stored,
                "retry_budget_min_retries",
                d.retry_budget_min_retries,
            ),
            quota_slack_percent: get(stored, "quota_slack_percent", d.quota_slack_percent),
        }
    }

    /// The settings as snapshots carry them, with the limits of every key
    /// that sets none (kept with the other limits, not here).
    pub fn to_proto(&self, default_key_limits: Option<pb::Limits>) -> pb::Settings {
        pb::Settings {
            quota_slack_percent: Some(self.quota_slack_percent),
            default_key_limits,
            retry_max_attempts: self.retry_max_attempts,
            retry_delay_ms: self.retry_delay_ms,
            http_timeout_s: self.http_timeout_s,
            log_bodies: self.log_bodies,
            log_body_max_bytes: self.log_body_max_bytes,
            max_request_body_bytes: self.max_request_body_bytes,
            connect_timeout_ms: self.connect_timeout_ms,
            first_byte_timeout_s: self.first_byte_timeout_s,
            deadline_s: self.deadline_s,
            retry_budget_percent: Some(self.retry_budget_percent),
            retry_budget_min_retries: Some(self.retry_budget_min_retries),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_round_trip() {
        let s = GlobalSettings {
            retry_max_attempts: 5,
            http_timeout_s: 9,
            quota_slack_percent: 25,
            ..Default::default()
        };
        assert_eq!(GlobalSettings::from_stored(&s.to_stored()), s);
        assert_eq!(
            GlobalSettings::from_stored(&BTreeMap::new()),
            GlobalSettings::default()
        );
    }
}
