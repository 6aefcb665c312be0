//! `llmgw key ...`

use anyhow::Result;
use llmgw_proto::v1::{
    ApiKey, CreateApiKeyRequest, DeleteApiKeyRequest, GetApiKeyRequest, ListApiKeysRequest,
    ModelNames, RevokeApiKeyRequest, UpdateApiKeyRequest,
};
use serde::Serialize;

use crate::args::{GlobalOpts, KeyCmd, KeyCreateArgs, KeyUpdateArgs};
use crate::client::Client;
use crate::commands::limits::{limits_pb, reset_spend, summary};
use crate::output::{broken_detail, status, yes_no, Out, Table};

pub const SHOWN_ONCE: &str =
    "warning: this is the only time the key is shown; store it now, it cannot be retrieved again.";

/// `key create -o json`: one flat object, the key's fields and its secret.
#[derive(Serialize)]
struct Created<'a> {
    #[serde(flatten)]
    api_key: &'a ApiKey,
    key: &'a str,
}

pub async fn run(cmd: KeyCmd, g: &GlobalOpts, out: &mut Out<'_>) -> Result<()> {
    match cmd {
        KeyCmd::Create(a) => {
            let req = create_request(a);
            let name = req.name.clone();
            let c = Client::connect(g).await?;
            let r = c
                .api()
                .create_api_key(req)
                .await
                .map_err(|s| c.fail(s))?
                .into_inner();
            let api_key = r.api_key.unwrap_or(ApiKey {
                name,
                ..ApiKey::default()
            });
            if out.is_json() {
                return out.json(&Created {
                    api_key: &api_key,
                    key: &r.key,
                });
            }
            let mut t = details(&api_key);
            t.row(["key", r.key.as_str()]);
            out.table(&t)?;
            out.line("")?;
            out.line(SHOWN_ONCE)
        }
        KeyCmd::List => {
            let c = Client::connect(g).await?;
            let r = c
                .api()
                .list_api_keys(ListApiKeysRequest {})
                .await
                .map_err(|s| c.fail(s))?
                .into_inner();
            list(out, &r.api_keys)
        }
        KeyCmd::Get(n) => {
            let c = Client::connect(g).await?;
            let k = c
                .api()
                .get_api_key(GetApiKeyRequest { name: n.name })
                .await
                .map_err(|s| c.fail(s))?
                .into_inner();
            show(out, &k)
        }
        KeyCmd::Update(a) => {
            let req = update_request(a);
            let c = Client::connect(g).await?;
            let k = c
                .api()
                .update_api_key(req)
                .await
                .map_err(|s| c.fail(s))?
                .into_inner();
            show(out, &k)
        }
        KeyCmd::Revoke(n) => {
            let c = Client::connect(g).await?;
            let k = c
                .api()
                .revoke_api_key(RevokeApiKeyRequest {
                    name: n.name.clone(),
                })
                .await
                .map_err(|s| c.fail(s))?
                .into_inner();
            if out.is_json() {
                return out.json(&k);
            }
            out.line(&format!("revoked api key {}", n.name))
        }
        KeyCmd::Delete(n) => {
            let c = Client::connect(g).await?;
            c.api()
                .delete_api_key(DeleteApiKeyRequest {
                    name: n.name.clone(),
                })
                .await
                .map_err(|s| c.fail(s))?;
            super::deleted(out, "api key", &n.name)
        }
        KeyCmd::ResetSpend(n) => reset_spend("key", n.name, g, out).await,
    }
}

/// Model names from `--models`, trimmed, empty ones left out.
fn model_names(models: Vec<String>) -> Vec<String> {
    models
        .into_iter()
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .collect()
}

fn create_request(a: KeyCreateArgs) -> CreateApiKeyRequest {
    CreateApiKeyRequest {
        limits: limits_pb(&a.limits),
        name: a.name,
        models: model_names(a.models),
        expires_in_s: a.expires_in.unwrap_or(0),
        log_bodies: Some(!a.no_log_bodies),
    }
}

fn update_request(a: KeyUpdateArgs) -> UpdateApiKeyRequest {
    let ch = a.changes;
    let models = if ch.all_models {
        Some(Vec::new())
    } else {
        ch.models.map(model_names)
    };
    UpdateApiKeyRequest {
        name: a.name,
        models: models.map(|names| ModelNames { names }),
        log_bodies: ch.log_bodies,
        limits: limits_pb(&a.limits),
    }
}

/// The key's own limits, or the note that the default key limits apply.
fn limits(k: &ApiKey) -> String {
    match summary(k.limits.as_ref()) {
        s if s.is_empty() => "default".to_string(),
        s => s,
    }
}

fn models(k: &ApiKey) -> String {
    if k.models.is_empty() {
        "all".to_string()
    } else {
        k.models.join(",")
    }
}

fn expires(k: &ApiKey) -> String {
    if k.expires_at.is_empty() {
        "never".to_string()
    } else {
        k.expires_at.clone()
    }
}

fn show(out: &mut Out<'_>, k: &ApiKey) -> Result<()> {
    if out.is_json() {
        return out.json(k);
    }
    out.table(&details(k))
}

fn details(k: &ApiKey) -> Table {
    let mut t = Table::plain();
    t.row(["name".to_string(), k.name.clone()]);
    t.row(["prefix".to_string(), k.prefix.clone()]);
    t.row(["models".to_string(), models(k)]);
    t.row(["expires_at".to_string(), expires(k)]);
    t.row(["revoked".to_string(), yes_no(k.revoked).to_string()]);
    t.row(["log_bodies".to_string(), yes_no(k.log_bodies).to_string()]);
    t.row(["limits".to_string(), limits(k)]);
    t.row(["created_at".to_string(), k.created_at.clone()]);
    t.row(["last_used_at".to_string(), k.last_used_at.clone()]);
    if !k.broken.is_empty() {
        t.row(["broken".to_string(), broken_detail(&k.broken)]);
    }
    t
}

fn list(out: &mut Out<'_>, keys: &[ApiKey]) -> Result<()> {
    if out.is_json() {
        return out.json(keys);
    }
    let mut t = Table::new(&[
        "NAME",
        "PREFIX",
        "MODELS",
        "EXPIRES",
        "REVOKED",
        "LOG BODIES",
        "CREATED",
        "LAST USED",
        "LIMITS",
        "STATUS",
    ]);
    for k in keys {
        t.row([
            k.name.clone(),
            k.prefix.clone(),
            models(k),
            expires(k),
            yes_no(k.revoked).to_string(),
            yes_no(k.log_bodies).to_string(),
            k.created_at.clone(),
            k.last_used_at.clone(),
            limits(k),
            status(&k.broken),
        ]);
    }
    out.table(&t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_key_is_one_flat_object() {
        let k = ApiKey {
            name: "ci".into(),
            prefix: "sk-llmgw-ab".into(),
            models: vec!["gpt-4o".into()],
            expires_at: "2030-01-01T00:00:00Z".into(),
            log_bodies: true,
            ..ApiKey::default()
        };
        let v = crate::output::normalize(&Created {
            api_key: &k,
            key: "sk-llmgw-secret",
        })
        .unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "name": "ci",
                "prefix": "sk-llmgw-ab",
                "models": ["gpt-4o"],
                "expires_at": "2030-01-01T00:00:00Z",
                "revoked": false,
                "created_at": "",
                "last_used_at": "",
                "log_bodies": true,
                "broken": [],
                "limits": null,
                "key": "sk-llmgw-secret",
            })
        );
    }
}
