//! The limits a snapshot configures, per scope and name: what the quota
//! service grants from and what GetLimits lists. A key without limits of
//! its own gets `Settings.default_key_limits` under its own name (each key
//! its own buckets), marked `default`.
//!
//! The snapshot carries only enabled providers and models and keys that
//! are neither revoked nor deleted: the limits of anything else apply to
//! nothing and are not listed.

use std::collections::BTreeMap;

use llmgw_core::limits::{BucketId, Limits, Scope};
use llmgw_proto::v1 as pb;

/// The limits of one scope's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Configured {
    pub limits: Limits,
    /// They come from the default key limits.
    pub default: bool,
}

/// Every configured limit of one snapshot, in scope and name order.
#[derive(Debug, Clone, Default)]
pub struct LimitTable {
    /// The snapshot's version.
    pub version: u64,
    by_name: BTreeMap<(Scope, String), Configured>,
}

impl LimitTable {
    pub fn from_snapshot(s: &pb::Snapshot) -> Self {
        let mut by_name = BTreeMap::new();
        let mut put = |scope: Scope, name: &str, wire: Option<&pb::Limits>, default: bool| {
            let Some(wire) = wire else { return };
            match Limits::try_from(wire) {
                Ok(limits) if !limits.is_empty() => {
                    by_name.insert((scope, name.to_owned()), Configured { limits, default });
                }
                Ok(_) => {}
                // lim-cp validates limits when they are written; a row that
                // no longer reads limits nothing rather than everything.
                Err(e) => tracing::warn!(%scope, name, error = %e, "ignoring invalid limits"),
            }
        };
        let default_key = s
            .settings
            .as_ref()
            .and_then(|s| s.default_key_limits.as_ref());
        for k in &s.keys {
            match &k.limits {
                Some(own) => put(Scope::Key, &k.name, Some(own), false),
                None => put(Scope::Key, &k.name, default_key, true),
            }
        }
        for m in &s.models {
            put(Scope::Model, &m.name, m.limits.as_ref(), false);
        }
        for p in &s.providers {
            put(Scope::Provider, &p.name, p.limits.as_ref(), false);
        }
        LimitTable {
            version: s.version,
            by_name,
        }
    }

    pub fn get(&self, scope: Scope, name: &str) -> Option<&Configured> {
        self.by_name.get(&(scope, name.to_owned()))
    }

    /// The limits holding `bucket`'s kind, and that limit; `None` when the
    /// bucket has no limit configured.
    pub fn limit(&self, bucket: &BucketId) -> Option<(&Limits, u64)> {
        let c = self.get(bucket.scope, &bucket.name)?;
        c.limits.get(bucket.kind).map(|v| (&c.limits, v))
    }

    /// Every configured scope and name, in order.
    pub fn iter(&self) -> impl Iterator<Item = (Scope, &str, &Configured)> {
        self.by_name
            .iter()
            .map(|((scope, name), c)| (*scope, name.as_str(), c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmgw_core::limits::Kind;

    fn limits(rpm: u64) -> Option<pb::Limits> {
        Some(pb::Limits {
            rpm: Some(rpm),
            ..Default::default()
        })
    }

    #[test]
    fn keys_without_own_limits_get_the_default_each_under_its_name() {
        let s = pb::Snapshot {
            version: 7,
            keys: vec![
                pb::SnapshotKey {
                    name: "own".into(),
                    limits: limits(5),
                    ..Default::default()
                },
                pb::SnapshotKey {
                    name: "plain".into(),
                    ..Default::default()
                },
                // Own limits that set nothing: no default, no limit.
                pb::SnapshotKey {
                    name: "none".into(),
                    limits: Some(pb::Limits::default()),
                    ..Default::default()
                },
            ],
            models: vec![pb::SnapshotModel {
                name: "m".into(),
                limits: Some(pb::Limits {
                    window_ms: 5,
                    rpm: Some(1),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            settings: Some(pb::Settings {
                default_key_limits: limits(9),
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = LimitTable::from_snapshot(&s);
        assert_eq!(t.version, 7);
        let rpm = |scope, name: &str| t.limit(&BucketId::new(scope, name, Kind::Rpm)).map(|l| l.1);
        assert_eq!(rpm(Scope::Key, "own"), Some(5));
        assert_eq!(rpm(Scope::Key, "plain"), Some(9));
        assert!(t.get(Scope::Key, "plain").is_some_and(|c| c.default));
        assert_eq!(rpm(Scope::Key, "none"), None);
        // Invalid limits (a 5 ms window) limit nothing.
        assert_eq!(rpm(Scope::Model, "m"), None);
        assert_eq!(t.limit(&BucketId::new(Scope::Key, "own", Kind::Tpm)), None);
        assert_eq!(
            t.iter().map(|(_, n, _)| n).collect::<Vec<_>>(),
            ["own", "plain"]
        );
    }
}
