//! One of the control plane's outbound calls (the other is `model_test`):
//! listing what a provider's upstream serves, from its own models
//! endpoint, for `ListUpstreamModels` (`llmgw provider models NAME`).
//!
//! The URL is the provider's base URL (admin-configured, never client
//! input) plus `/models`, joined as the data plane joins its endpoint paths,
//! and the request carries the provider's extra headers and its credential
//! as the data plane sends them, so a provider that works for requests
//! works here:
//! - OpenAI and OpenAI-compatible: `GET {base_url}/models`,
//!   `Authorization: Bearer <key>`; one page (`data[]`).
//! - Anthropic: `GET {base_url}/models?limit=1000`, `x-api-key` and
//!   `anthropic-version`; pages follow `has_more` / `last_id` with
//!   `after_id`.
//! - Gemini: `GET {base_url}/models?pageSize=1000`, `x-goog-api-key`;
//!   pages follow `nextPageToken` with `pageToken`.
//!
//! At most [`MAX_PAGES`] pages are read (the answer then says
//! `truncated`), each answer up to `upstream_call::MAX_BODY` bytes,
//! connecting within `upstream_call::CONNECT_TIMEOUT` and the whole listing
//! within [`TOTAL_TIMEOUT`]. The client, the headers and the redaction of
//! secrets in errors are `upstream_call`'s.

use std::future::Future;
use std::time::{Duration, UNIX_EPOCH};

use llmgw_core::Protocol;
use serde_json::Value;

use crate::store::{ProviderRow, ProviderSpec};
use crate::upstream_call::{usable, Call, UpstreamError};

/// The whole listing, every page included.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Pages followed before the listing is cut.
pub const MAX_PAGES: usize = 50;
/// Models asked for per page (the most Anthropic and Gemini give).
const PAGE_SIZE: u32 = 1000;

/// One model as the upstream lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamModel {
    pub id: String,
    pub display_name: String,
    pub created_unix: Option<i64>,
}

/// The models, sorted by id, and whether pages were left unread.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listed {
    pub models: Vec<UpstreamModel>,
    pub truncated: bool,
}

type E = UpstreamError;

/// One page: its models and the cursor of the next page, if any.
#[derive(Debug, Default, PartialEq, Eq)]
struct Page {
    models: Vec<UpstreamModel>,
    next: Option<String>,
}

/// Lists the models `provider`'s upstream serves. A broken provider (a
/// field that cannot be opened or read) is refused: its stored defaults
/// would not be what the admin configured.
pub async fn list(provider: &ProviderRow) -> Result<Listed, E> {
    list_spec(usable(provider)?).await
}

async fn list_spec(provider: &ProviderSpec) -> Result<Listed, E> {
    let call = Call::new(provider)?;
    let listing = async {
        match provider.protocol {
            Protocol::OpenAi | Protocol::OpenAiChat => openai(&call).await,
            Protocol::Anthropic => anthropic(&call).await,
            Protocol::Gemini => gemini(&call).await,
        }
    };
    let mut listed = tokio::time::timeout(TOTAL_TIMEOUT, listing)
        .await
        .map_err(|_| {
            E::Unreachable(format!(
                "provider '{}': the upstream did not answer GET {}/models within {} s",
                call.provider,
                call.base_url,
                TOTAL_TIMEOUT.as_secs()
            ))
        })??;
    listed.models.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(listed)
}

/// OpenAI: one page, `{"data": [{"id", "created"}]}`.
async fn openai(call: &Call<'_>) -> Result<Listed, E> {
    paginate(|_| call.get_json("/models".to_string()), openai_page, call).await
}

/// Anthropic: `{"data": [{"id", "display_name", "created_at"}],
/// "has_more", "last_id"}`, the next page `after_id` the last.
async fn anthropic(call: &Call<'_>) -> Result<Listed, E> {
    paged(call, "limit", "after_id", anthropic_page).await
}

/// Gemini: `{"models": [{"name": "models/ID", "displayName"}],
/// "nextPageToken"}`, the next page at `pageToken`.
async fn gemini(call: &Call<'_>) -> Result<Listed, E> {
    paged(call, "pageSize", "pageToken", gemini_page).await
}

/// `GET /models?{size}=1000`, then `&{cursor}=...` for each next page.
async fn paged(
    call: &Call<'_>,
    size: &str,
    cursor: &str,
    parse: fn(&Value) -> Result<Page, String>,
) -> Result<Listed, E> {
    let fetch = |next: Option<String>| {
        let mut path = format!("/models?{size}={PAGE_SIZE}");
        if let Some(n) = next {
            path.push_str(&format!("&{cursor}="));
            path.extend(url::form_urlencoded::byte_serialize(n.as_bytes()));
        }
        call.get_json(path)
    };
    paginate(fetch, parse, call).await
}

/// Reads pages while the upstream says there are more, up to
/// [`MAX_PAGES`]; `fetch` gets the next page's cursor (`None` first).
async fn paginate<F, Fut>(
    mut fetch: F,
    parse: fn(&Value) -> Result<Page, String>,
    call: &Call<'_>,
) -> Result<Listed, E>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Value, E>>,
{
    let mut models = Vec::new();
    let mut cursor = None;
    for _ in 0..MAX_PAGES {
        let page = parse(&fetch(cursor.take()).await?).map_err(|why| {
            E::BadAnswer(call.scrub(&format!(
                "provider '{}': the upstream's answer to GET {}/models is not a models list: {why}",
                call.provider, call.base_url
            )))
        })?;
        models.extend(page.models);
        match page.next {
            Some(next) => cursor = Some(next),
            None => {
                return Ok(Listed {
                    models,
                    truncated: false,
                })
            }
        }
    }
    Ok(Listed {
        models,
        truncated: true,
    })
}

fn openai_page(v: &Value) -> Result<Page, String> {
    Ok(Page {
        models: data_models(v)?,
        next: None,
    })
}

fn anthropic_page(v: &Value) -> Result<Page, String> {
    let models = data_models(v)?;
    let more = v.get("has_more").and_then(Value::as_bool) == Some(true);
    let next = v
        .get("last_id")
        .and_then(Value::as_str)
        .filter(|id| more && !id.is_empty())
        .map(str::to_string);
    Ok(Page { models, next })
}

fn gemini_page(v: &Value) -> Result<Page, String> {
    // A last page may leave `models` out.
    let models = match v.get("models") {
        None => Vec::new(),
        Some(_) => items(v, "models")?
            .iter()
            .filter_map(|m| {
                let name = m.get("name")?.as_str()?;
                Some(UpstreamModel {
                    id: name.strip_prefix("models/").unwrap_or(name).to_string(),
                    display_name: text(m, "displayName"),
                    created_unix: None,
                })
            })
            .collect(),
    };
    let next = v
        .get("nextPageToken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    Ok(Page { models, next })
}

/// The `data[]` list of OpenAI and Anthropic: `id`, Anthropic's
/// `display_name`, and OpenAI's `created` (Unix seconds) or Anthropic's
/// `created_at` (RFC 3339).
fn data_models(v: &Value) -> Result<Vec<UpstreamModel>, String> {
    Ok(items(v, "data")?
        .iter()
        .filter_map(|m| {
            let created = m.get("created").and_then(Value::as_i64).or_else(|| {
                m.get("created_at")
                    .and_then(Value::as_str)
                    .and_then(rfc3339_unix)
            });
            Some(UpstreamModel {
                id: m.get("id")?.as_str()?.to_string(),
                display_name: text(m, "display_name"),
                created_unix: created,
            })
        })
        .collect())
}

fn items<'v>(v: &'v Value, field: &str) -> Result<&'v Vec<Value>, String> {
    v.get(field)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("it has no '{field}' array"))
}

fn text(v: &Value, field: &str) -> String {
    v.get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Seconds since the epoch of an RFC 3339 UTC time (`2024-01-01T00:00:00Z`).
fn rfc3339_unix(s: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream_call::tests::spec;
    use serde_json::json;

    #[test]
    fn each_protocol_page_is_read() {
        let o = openai_page(&json!({"object": "list", "data": [
            {"id": "gpt-4o", "object": "model", "created": 1_700_000_000, "owned_by": "x"},
            {"object": "model"}
        ]}))
        .unwrap();
        assert_eq!(
            o,
            Page {
                models: vec![UpstreamModel {
                    id: "gpt-4o".into(),
                    display_name: String::new(),
                    created_unix: Some(1_700_000_000),
                }],
                next: None,
            }
        );
        let a = anthropic_page(&json!({"data": [
            {"type": "model", "id": "claude-x", "display_name": "Claude X", "created_at": "2024-01-01T00:00:00Z"}
        ], "has_more": true, "first_id": "claude-x", "last_id": "claude-x"}))
        .unwrap();
        assert_eq!(a.models[0].display_name, "Claude X");
        assert_eq!(a.models[0].created_unix, Some(1_704_067_200));
        assert_eq!(a.next.as_deref(), Some("claude-x"));
        let last = anthropic_page(&json!({"data": [], "has_more": false, "last_id": "z"})).unwrap();
        assert_eq!(last.next, None);
        let g = gemini_page(&json!({"models": [
            {"name": "models/gemini-2.5-pro", "displayName": "Gemini 2.5 Pro"}
        ], "nextPageToken": "t2"}))
        .unwrap();
        assert_eq!(g.models[0].id, "gemini-2.5-pro");
        assert_eq!(g.models[0].created_unix, None);
        assert_eq!(g.next.as_deref(), Some("t2"));
        assert_eq!(gemini_page(&json!({})).unwrap(), Page::default());
        assert!(openai_page(&json!({"models": []})).is_err());
        assert!(anthropic_page(&json!([1])).is_err());
        assert!(rfc3339_unix("yesterday").is_none());
    }

    /// Pages served from a list; counts the fetches and the cursors seen.
    async fn serve(pages: usize) -> (Result<Listed, E>, Vec<Option<String>>) {
        let s = spec(Protocol::Gemini, "k");
        let call = Call::new(&s).unwrap();
        let seen = std::sync::Mutex::new(Vec::new());
        let fetch = |cursor: Option<String>| {
            let i = cursor.as_deref().map_or(0, |c| c.parse::<usize>().unwrap());
            seen.lock().unwrap().push(cursor);
            let mut page = json!({"models": [{"name": format!("models/m{i:03}")}]});
            if i + 1 < pages {
                page["nextPageToken"] = json!((i + 1).to_string());
            }
            std::future::ready(Ok(page))
        };
        let listed = paginate(fetch, gemini_page, &call).await;
        (listed, seen.into_inner().unwrap())
    }

    #[tokio::test]
    async fn pages_are_followed_up_to_the_cap() {
        let (listed, seen) = serve(3).await;
        let listed = listed.unwrap();
        assert!(!listed.truncated);
        let ids: Vec<&str> = listed.models.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["m000", "m001", "m002"]);
        assert_eq!(seen, [None, Some("1".into()), Some("2".into())]);

        let (listed, seen) = serve(MAX_PAGES).await;
        assert!(!listed.unwrap().truncated, "exactly the cap is whole");
        assert_eq!(seen.len(), MAX_PAGES);

        let (listed, seen) = serve(MAX_PAGES + 10).await;
        let listed = listed.unwrap();
        assert!(listed.truncated);
        assert_eq!(listed.models.len(), MAX_PAGES);
        assert_eq!(seen.len(), MAX_PAGES, "no page read past the cap");
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_at_once() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let mut s = spec(Protocol::OpenAi, "sk-secret-1234567890");
        s.base_url = format!("http://{addr}/v1");
        let started = std::time::Instant::now();
        let e = list_spec(&s).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        let E::Unreachable(m) = &e else {
            panic!("{e:?}")
        };
        assert!(m.contains("cannot connect"), "{m}");
        assert!(!m.contains("sk-secret"), "{m}");
    }
}
