//! `llmgw provider ...`

use std::collections::HashMap;

use anyhow::{bail, Result};
use std::io::Write;

use llmgw_proto::v1::{
    CreateProviderRequest, DefaultParams, DeleteProviderRequest, GetProviderRequest, Headers,
    ListProvidersRequest, ListUpstreamModelsRequest, Provider, UpdateProviderRequest,
    UpstreamModel,
};

use crate::args::{GlobalOpts, Header, ProviderAddArgs, ProviderCmd, ProviderUpdateArgs};
use crate::client::Client;
use crate::commands::limits::{limits_pb, reset_spend, summary};
use crate::commands::secret_arg::Secret;
use crate::output::{broken_detail, status, yes_no, Out, Table};

pub async fn run(cmd: ProviderCmd, g: &GlobalOpts, out: &mut Out<'_>) -> Result<()> {
    match cmd {
        ProviderCmd::Add(a) => {
            let req = create_request(a)?;
            let c = Client::connect(g).await?;
            let p = c
                .api()
                .create_provider(req)
                .await
                .map_err(|s| c.fail(s))?
                .into_inner();
            show(out, &p)
        }
        ProviderCmd::List => {
            let c = Client::connect(g).await?;
            let r = c
                .api()
                .list_providers(ListProvidersRequest {})
                .await
                .map_err(|s| c.fail(s))?
                .into_inner();
            list(out, &r.providers)
        }
        ProviderCmd::Get(n) => {
            let c = Client::connect(g).await?;
            let p = c
                .api()
                .get_provider(GetProviderRequest { name: n.name })
                .await
                .map_err(|s| c.fail(s))?
                .into_inner();
            show(out, &p)
        }
        ProviderCmd::Update(a) => {
            let req = update_request(a)?;
            let c = Client::connect(g).await?;
            let p = c
                .api()
                .update_provider(req)
                .await
                .map_err(|s| c.fail(s))?
                .into_inner();
            show(out, &p)
        }
        ProviderCmd::Delete(n) => {
            let c = Client::connect(g).await?;
            c.api()
                .delete_provider(DeleteProviderRequest {
                    name: n.name.clone(),
                })
                .await
                .map_err(|s| c.fail(s))?;
            super::deleted(out, "provider", &n.name)
        }
        ProviderCmd::ResetSpend(n) => reset_spend("provider", n.name, g, out).await,
        ProviderCmd::Models(n) => {
            let c = Client::connect(g).await?;
            let r = c
                .api()
                .list_upstream_models(ListUpstreamModelsRequest {
                    provider: n.name.clone(),
                })
                .await
                .map_err(|s| c.fail(s))?
                .into_inner();
            if r.truncated {
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "warning: the upstream of '{}' has more models than the control plane reads (it follows 50 pages); the list is cut",
                    n.name
                );
            }
            upstream_models(out, r.models)
        }
    }
}

/// The upstream's models, sorted by id: a table, or a JSON array.
fn upstream_models(out: &mut Out<'_>, mut models: Vec<UpstreamModel>) -> Result<()> {
    models.sort_by(|a, b| a.id.cmp(&b.id));
    if out.is_json() {
        return out.json(&models);
    }
    let mut t = Table::new(&["ID", "NAME", "CREATED"]);
    for m in &models {
        t.row([
            m.id.clone(),
            m.display_name.clone(),
            m.created_unix.map(created).unwrap_or_default(),
        ]);
    }
    out.table(&t)
}

/// A Unix time as an RFC 3339 UTC date and time, to the second.
fn created(unix: i64) -> String {
    u64::try_from(unix)
        .ok()
        .map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_else(|| unix.to_string())
}

/// `--header` values as a map; a header given twice is an error.
pub fn header_map(headers: Vec<Header>) -> Result<HashMap<String, String>> {
    let mut map = HashMap::new();
    for h in headers {
        if map.keys().any(|k: &String| k.eq_ignore_ascii_case(&h.name)) {
            bail!("header {} is given more than once", h.name);
        }
        map.insert(h.name, h.value);
    }
    Ok(map)
}

/// The secrets of `provider add|update`, from the flag, a file, standard
/// input or the environment (`secret_arg`): the API key and the proxy URL.
fn secrets<R: std::io::BufRead>(
    given: [Secret<'_>; 2],
    stdin: R,
) -> Result<(Option<String>, Option<String>)> {
    let mut stdin = super::secret_arg::Stdin::new(stdin);
    let [key, proxy] = given;
    Ok((key.read(&mut stdin)?, proxy.read(&mut stdin)?))
}

fn create_request(mut a: ProviderAddArgs) -> Result<CreateProviderRequest> {
    let (api_key, proxy) = secrets(
        [
            Secret {
                flag: "api-key",
                value: a.api_key.take(),
                file: a.api_key_file.take(),
                env: a.api_key_env.take(),
            },
            Secret {
                flag: "proxy",
                value: a.proxy.take(),
                file: a.proxy_file.take(),
                env: a.proxy_env.take(),
            },
        ],
        std::io::stdin().lock(),
    )?;
    Ok(CreateProviderRequest {
        limits: limits_pb(&a.limits),
        name: a.name,
        protocol: a.protocol.as_str().to_string(),
        base_url: a.base_url,
        api_key: api_key.unwrap_or_default(),
        headers: header_map(a.headers)?,
        timeout_s: a.timeout_s.unwrap_or(0),
        enabled: Some(!a.disabled),
        stream_usage: Some(!a.no_stream_usage),
        proxy: proxy.unwrap_or_default(),
        default_params: super::default_params::map(&a.default_params)?,
    })
}

fn update_request(a: ProviderUpdateArgs) -> Result<UpdateProviderRequest> {
    let mut ch = a.changes;
    let (api_key, proxy) = secrets(
        [
            Secret {
                flag: "api-key",
                value: ch.api_key.take(),
                file: ch.api_key_file.take(),
                env: ch.api_key_env.take(),
            },
            Secret {
                flag: "proxy",
                value: ch.proxy.take(),
                file: ch.proxy_file.take(),
                env: ch.proxy_env.take(),
            },
        ],
        std::io::stdin().lock(),
    )?;
    let headers = if ch.clear_headers {
        Some(Headers::default())
    } else if ch.headers.is_empty() {
        None
    } else {
        Some(Headers {
            values: header_map(ch.headers)?,
        })
    };
    let enabled = match (ch.enable, ch.disable) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    Ok(UpdateProviderRequest {
        limits: limits_pb(&a.limits),
        name: a.name,
        protocol: ch.protocol.map(|p| p.as_str().to_string()),
        base_url: ch.base_url,
        api_key,
        headers,
        timeout_s: ch.timeout_s,
        enabled,
        stream_usage: ch.stream_usage,
        proxy: if ch.no_proxy {
            Some(String::new())
        } else {
            proxy
        },
        default_params: if ch.clear_default_params {
            Some(DefaultParams::default())
        } else if ch.default_params.is_empty() {
            None
        } else {
            Some(DefaultParams {
                values: super::default_params::map(&ch.default_params)?,
            })
        },
    })
}

fn sorted_headers(h: &HashMap<String, String>) -> Vec<(&String, &String)> {
    let mut v: Vec<_> = h.iter().collect();
    v.sort();
    v
}

fn timeout(t: u32) -> String {
    if t == 0 {
        "default".to_string()
    } else {
        format!("{t}s")
    }
}

fn list(out: &mut Out<'_>, providers: &[Provider]) -> Result<()> {
    if out.is_json() {
        return out.json(providers);
    }
    let mut t = Table::new(&[
        "NAME", "PROTOCOL", "BASE URL", "API KEY", "HEADERS", "PROXY", "TIMEOUT", "ENABLED",
        "LIMITS", "STATUS",
    ]);
    for p in providers {
        let headers: Vec<&str> = sorted_headers(&p.headers)
            .into_iter()
            .map(|(k, _)| k.as_str())
            .collect();
        t.row([
            p.name.clone(),
            p.protocol.clone(),
            p.base_url.clone(),
            p.api_key.clone(),
            headers.join(","),
            p.proxy.clone(),
            timeout(p.timeout_s),
            yes_no(p.enabled).to_string(),
            summary(p.limits.as_ref()),
            status(&p.broken),
        ]);
    }
    out.table(&t)
}

fn show(out: &mut Out<'_>, p: &Provider) -> Result<()> {
    if out.is_json() {
        return out.json(p);
    }
    let headers: Vec<String> = sorted_headers(&p.headers)
        .into_iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    let mut t = Table::plain();
    t.row(["name", &p.name]);
    t.row(["protocol", &p.protocol]);
    t.row(["base_url", &p.base_url]);
    t.row(["api_key", &p.api_key]);
    t.row(["headers".to_string(), headers.join(", ")]);
    t.row(["timeout_s".to_string(), timeout(p.timeout_s)]);
    t.row(["enabled", yes_no(p.enabled)]);
    t.row(["stream_usage", yes_no(p.stream_usage)]);
    t.row(["proxy", &p.proxy]);
    t.row([
        "default_params".to_string(),
        super::default_params::text(&p.default_params),
    ]);
    t.row(["limits".to_string(), summary(p.limits.as_ref())]);
    t.row(["created_at", &p.created_at]);
    t.row(["updated_at", &p.updated_at]);
    if !p.broken.is_empty() {
        t.row(["broken".to_string(), broken_detail(&p.broken)]);
    }
    out.table(&t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::parse_header;

    #[test]
    fn upstream_models_are_sorted_by_id_with_their_dates() {
        let m = |id: &str, created_unix| UpstreamModel {
            id: id.into(),
            display_name: format!("{id} name"),
            created_unix,
        };
        let mut buf = Vec::new();
        let mut out = Out {
            w: &mut buf,
            format: crate::args::OutputFormat::Table,
        };
        upstream_models(&mut out, vec![m("b", None), m("a", Some(1_704_067_200))]).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID"), "{text}");
        assert!(
            lines[1].starts_with("a ") && lines[1].contains("2024-01-01T00:00:00Z"),
            "{text}"
        );
        assert!(lines[2].starts_with("b "), "{text}");
    }

    #[test]
    fn duplicate_headers_are_refused() {
        let hs = vec![
            parse_header("X-A: 1").unwrap(),
            parse_header("x-a: 2").unwrap(),
        ];
        assert!(header_map(hs).is_err());
        let hs = vec![
            parse_header("X-A: 1").unwrap(),
            parse_header("X-B:2").unwrap(),
        ];
        let m = header_map(hs).unwrap();
        assert_eq!(m["X-A"], "1");
        assert_eq!(m["X-B"], "2");
    }
}
