//! The configuration file of `export` and `apply`: serde of the proto
//! `GatewayConfig`, in YAML (JSON is accepted too, being YAML). Limits
//! travel in it: `limits` on each provider, model and key, and
//! `default_key_limits` for the keys that set none.

use std::fmt::Write as _;
use std::io::Read;

use anyhow::{anyhow, bail, Context, Result};
use llmgw_proto::v1::GatewayConfig;
use serde_yaml_ng::Value;

use crate::output::normalize;

/// The text of FILE, or of standard input for `-`.
pub fn read_source(file: &str) -> Result<String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the configuration from standard input")?;
        Ok(text)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))
    }
}

/// Loads the file named on the command line (`-` for standard input).
pub fn load(file: &str) -> Result<GatewayConfig> {
    let origin = if file == "-" { "standard input" } else { file };
    parse(&read_source(file)?, origin)
}

/// Parses a configuration. Unknown fields are refused rather than ignored:
/// `apply --prune` deletes whatever the file leaves out, so a misspelt
/// `provider:` must not read as "no providers".
pub fn parse(text: &str, origin: &str) -> Result<GatewayConfig> {
    let mut tree: Value =
        serde_yaml_ng::from_str(text).with_context(|| format!("cannot parse {origin}"))?;
    if tree.is_null() {
        bail!("{origin} is empty; to remove everything, apply `{{}}` with --prune --allow-empty");
    }
    if !tree.is_mapping() {
        bail!("cannot parse {origin}: expected a mapping with providers, models and api_keys");
    }
    tree.apply_merge()
        .with_context(|| format!("cannot parse {origin}"))?;
    // Through text again, so that the typed reading is as lenient about
    // plain scalars as reading the file directly would be.
    let merged = serde_yaml_ng::to_string(&tree)?;
    let config: GatewayConfig =
        serde_yaml_ng::from_str(&merged).with_context(|| format!("cannot parse {origin}"))?;
    let known = serde_yaml_ng::to_value(&config)?;
    let mut path = String::new();
    check_known(&tree, &known, &mut path).map_err(|e| anyhow!("{origin}: {e}"))?;
    Ok(config)
}

/// The YAML that `export` writes.
pub fn to_yaml(config: &GatewayConfig) -> Result<String> {
    Ok(serde_yaml_ng::to_string(&normalize(config)?)?)
}

/// Every key of `input` must appear at the same place in `known`, the
/// configuration as read and written back.
fn check_known(input: &Value, known: &Value, path: &mut String) -> Result<()> {
    match (input, known) {
        (Value::Mapping(inp), Value::Mapping(kn)) => {
            for (k, v) in inp {
                let Some(name) = k.as_str() else {
                    continue;
                };
                let Some(kv) = kn.get(name) else {
                    if path.is_empty() {
                        bail!(
                            "unknown field `{name}` (expected providers, models, api_keys, \
                             default_key_limits)"
                        );
                    }
                    bail!("unknown field `{name}` in {path}");
                };
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(name);
                check_known(v, kv, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        (Value::Sequence(inp), Value::Sequence(kn)) => {
            for (i, (v, kv)) in inp.iter().zip(kn).enumerate() {
                let len = path.len();
                let _ = write!(path, "[{i}]");
                check_known(v, kv, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmgw_proto::v1::{ApiKeyConfig, Limits, ModelConfig, ModelTarget, Prices, ProviderConfig};

    fn sample() -> GatewayConfig {
        GatewayConfig {
            default_key_limits: Some(Limits {
                rpm: Some(60),
                budget_micros: Some(5_000_000),
                budget_period: "month".into(),
                ..Limits::default()
            }),
            providers: vec![ProviderConfig {
                limits: Some(Limits {
                    tpm: Some(2_000_000),
                    on_outage: "closed".into(),
                    ..Limits::default()
                }),
                name: "openai".into(),
                protocol: "openai-chat".into(),
                base_url: "https://api.openai.com/v1".into(),
                api_key: "****abcd".into(),
                headers: [
                    ("X-Team".to_string(), "research".to_string()),
                    ("OpenAI-Organization".to_string(), "org-1".to_string()),
                ]
                .into(),
                timeout_s: 30,
                enabled: true,
                stream_usage: true,
                proxy: "http://****@proxy.example:3128".into(),
                default_params: [("temperature".to_string(), "0.2".to_string())].into(),
            }],
            models: vec![ModelConfig {
                limits: Default::default(),
                name: "gpt-4o".into(),
                strategy: "weighted".into(),
                max_attempts: 2,
                retry_delay_ms: Some(250),
                prices: Some(Prices {
                    input_per_mtok: 2.5,
                    output_per_mtok: 10.0,
                    cached_input_per_mtok: 1.25,
                    cache_write_per_mtok: 3.125,
                    sheet: Some(llmgw_proto::v1::PriceSheet {
                        input_per_mtok: "2.5".into(),
                        output_per_mtok: "10".into(),
                        cached_input_per_mtok: "1.25".into(),
                        cache_write_per_mtok: "3.125".into(),
                        tiers: vec![llmgw_proto::v1::PriceTier {
                            above_input_tokens: 200_000,
                            input_per_mtok: "5".into(),
                            output_per_mtok: "20".into(),
                            ..Default::default()
                        }],
                        per_image: [("1024x1024/high".to_string(), "0.167".to_string())].into(),
                        ..Default::default()
                    }),
                }),
                enabled: true,
                targets: vec![
                    ModelTarget {
                        provider: "openai".into(),
                        upstream_model: "gpt-4o-2024-08-06".into(),
                        priority: 0,
                        weight: Some(3),
                        // Canonical JSON text (compact, sorted keys), as the
                        // control plane stores it.
                        rules: r#"{"all":[{"field":"headers.x-team","op":"eq","value":"research"},{"any":[{"field":"input_tokens","op":"gt","value":8000},{"field":"key","op":"in","value":["batch","nightly"]}]}]}"#.into(),
                        enabled: true,
                        prices: None,
                        default_params: [("top_p".to_string(), "0.9".to_string())].into(),
                    },
                    ModelTarget {
                        provider: "or".into(),
                        upstream_model: "meta/llama:70b".into(),
                        priority: 1,
                        weight: Some(1),
                        rules: String::new(),
                        default_params: Default::default(),
                        enabled: false,
                        prices: Some(Prices {
                            input_per_mtok: 0.5,
                            output_per_mtok: 0.75,
                            cached_input_per_mtok: 0.0,
                            cache_write_per_mtok: 0.0,
                            sheet: None,
                        }),
                    },
                ],
                default_max_tokens: Some(8192),
                translation: "lenient".into(),
                r#type: "embedding".into(),
            }],
            api_keys: vec![ApiKeyConfig {
                limits: Some(Limits {
                    max_concurrency: Some(4),
                    budget_micros: Some(50_000),
                    budget_period: "day".into(),
                    window_ms: 1_000,
                    rpm: Some(10),
                    ..Limits::default()
                }),
                name: "ci".into(),
                models: vec!["gpt-4o".into()],
                expires_at: "2030-01-01T00:00:00Z".into(),
                revoked: false,
                log_bodies: true,
                hash: "ab".repeat(32),
                prefix: "sk-llmgw-ab12".into(),
            }],
        }
    }

    #[test]
    fn yaml_round_trip_with_rules() {
        let cfg = sample();
        let yaml = to_yaml(&cfg).unwrap();
        // Rules are nested YAML, not a JSON string.
        assert!(yaml.contains("rules:\n"), "{yaml}");
        assert!(yaml.contains("field: headers.x-team"), "{yaml}");
        let back = parse(&yaml, "test").unwrap();
        assert_eq!(back, cfg);
        // Export output is stable.
        assert_eq!(to_yaml(&back).unwrap(), yaml);
    }

    #[test]
    fn translation_settings_are_plain_yaml() {
        let yaml = to_yaml(&sample()).unwrap();
        assert!(yaml.contains("protocol: openai-chat"), "{yaml}");
        assert!(yaml.contains("translation: lenient"), "{yaml}");
        assert!(yaml.contains("type: embedding"), "{yaml}");
        assert!(yaml.contains("default_max_tokens: 8192"), "{yaml}");
        assert!(yaml.contains("cache_write_per_mtok: 3.125"), "{yaml}");
    }

    #[test]
    fn files_from_before_translation_still_parse() {
        // An export written before gemini/openai-chat, default_max_tokens,
        // translation and cache-write prices existed.
        let text = "\
providers:
  - name: openai
    protocol: openai
    base_url: https://api.openai.com/v1
    enabled: true
models:
  - name: gpt
    strategy: priority
    prices:
      input_per_mtok: 2.5
      output_per_mtok: 10
      cached_input_per_mtok: 1.25
    enabled: true
    targets:
      - provider: openai
        upstream_model: gpt-4o
        weight: 1
        enabled: true
";
        let cfg = parse(text, "old.yaml").unwrap();
        assert_eq!(cfg.providers[0].protocol, "openai");
        let m = &cfg.models[0];
        assert_eq!(m.default_max_tokens, None);
        // Empty: the control plane reads them as strict and chat.
        assert_eq!(m.translation, "");
        assert_eq!(m.r#type, "");
        assert_eq!(m.prices.as_ref().unwrap().cache_write_per_mtok, 0.0);
        // An old file's prices are numbers, without a sheet.
        assert_eq!(m.prices.as_ref().unwrap().sheet, None);
    }

    #[test]
    fn limits_are_plain_yaml() {
        let text = "\
default_key_limits: {rpm: 100}
api_keys:
  - name: team
    limits:
      rpm: 10
      budget_micros: 50000
      budget_period: day
      on_outage: closed
";
        let cfg = parse(text, "f.yaml").unwrap();
        assert_eq!(cfg.default_key_limits.unwrap().rpm, Some(100));
        let l = cfg.api_keys[0].limits.clone().unwrap();
        assert_eq!((l.rpm, l.budget_micros), (Some(10), Some(50_000)));
        assert_eq!(
            (l.budget_period.as_str(), l.on_outage.as_str()),
            ("day", "closed")
        );
        assert_eq!(l.tpm, None);
        let err = parse("api_keys:\n  - name: k\n    limits: {rmp: 5}\n", "f.yaml").unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown field `rmp` in api_keys[0].limits"),
            "{err}"
        );
        let yaml = to_yaml(&sample()).unwrap();
        assert!(yaml.contains("budget_micros: 50000"), "{yaml}");
    }

    #[test]
    fn json_is_accepted() {
        let cfg = sample();
        let json = serde_json::to_string_pretty(&normalize(&cfg).unwrap()).unwrap();
        assert_eq!(parse(&json, "test").unwrap(), cfg);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = parse("provider:\n  - name: x\n", "f.yaml").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `provider`"),
            "{err}"
        );
        let err = parse(
            "providers:\n  - name: x\n    base_ulr: http://x\n",
            "f.yaml",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown field `base_ulr` in providers[0]"),
            "{err}"
        );
        // Rules are free-form JSON and header names are data.
        let cfg = parse(
            "providers:\n  - name: p\n    headers: {X-Any: v}\nmodels:\n  - name: m\n    targets:\n      - provider: p\n        rules: {not: {field: key, op: eq, value: k}}\n",
            "f.yaml",
        )
        .unwrap();
        assert_eq!(
            cfg.models[0].targets[0].rules,
            r#"{"not":{"field":"key","op":"eq","value":"k"}}"#
        );
    }

    #[test]
    fn empty_and_odd_files() {
        assert!(parse("", "f").is_err());
        assert!(parse("- a\n", "f").is_err());
        assert_eq!(parse("{}", "f").unwrap(), GatewayConfig::default());
    }

    #[test]
    fn merge_keys_and_plain_scalars() {
        let text = "\
defaults: &d
  protocol: openai
  enabled: true
providers:
  - <<: *d
    name: 123
    base_url: http://x
";
        // `defaults` is not a field of the configuration.
        assert!(parse(text, "f").is_err());
        let text = "\
providers:
  - &p
    name: a
    protocol: openai
    enabled: true
  - <<: *p
    name: 123
";
        let cfg = parse(text, "f").unwrap();
        assert_eq!(cfg.providers[1].name, "123");
        assert_eq!(cfg.providers[1].protocol, "openai");
        assert!(cfg.providers[1].enabled);
    }
}
