//! The one outbound call the control plane makes: listing what a
//! provider's upstream serves, from its own models endpoint, for
//! `ListUpstreamModels` (`llmgw provider models NAME`).
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
//! `truncated`), each answer up to [`MAX_BODY`] bytes, connecting within
//! [`CONNECT_TIMEOUT`] and the whole listing within [`TOTAL_TIMEOUT`].
//!
//! No secret leaves this module: errors carry no header, the provider's key
//! is masked wherever the upstream's message echoes it, and `key=` query
//! values are redacted.

use std::future::Future;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, ACCEPT, AUTHORIZATION};
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use llmgw_core::{error_chain, Protocol};
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::store::{bounded, ProviderRow, ProviderSpec};

/// Connecting: DNS and TCP.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole listing, every page included.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read, per page.
pub const MAX_BODY: usize = 8 << 20;
/// Pages followed before the listing is cut.
pub const MAX_PAGES: usize = 50;
/// Models asked for per page (the most Anthropic and Gemini give).
const PAGE_SIZE: u32 = 1000;
/// The `anthropic-version` sent when the provider's headers set none (the
/// data plane's default).
const ANTHROPIC_VERSION: &str = "2023-06-01";

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

/// Why the models could not be listed, by who is at fault. Messages name
/// the provider and never carry a secret.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamModelsError {
    /// The provider's stored configuration cannot make the call (a broken
    /// row, a header that is not valid).
    #[error("{0}")]
    Unusable(String),
    /// No answer: cannot connect, or no answer in time.
    #[error("{0}")]
    Unreachable(String),
    /// The upstream refused the provider's key (401 or 403).
    #[error("{0}")]
    KeyRefused(String),
    /// Any other error status; `message` is the upstream's, cut to 1 KiB.
    #[error("{message}")]
    Upstream { status: u16, message: String },
    /// An answer that is not a models list (not JSON, too large).
    #[error("{0}")]
    BadAnswer(String),
}

type E = UpstreamModelsError;

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
    if !provider.broken.is_empty() {
        let what: Vec<String> = provider.broken.iter().map(ToString::to_string).collect();
        return Err(E::Unusable(format!(
            "provider '{}' is broken ({}); fix it with `llmgw provider update` first",
            provider.spec.name,
            what.join("; ")
        )));
    }
    list_spec(&provider.spec).await
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

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// What every request of one listing shares.
struct Call<'p> {
    provider: &'p str,
    base_url: &'p str,
    /// The provider's extra headers and its credential (marked sensitive).
    headers: HeaderMap,
    /// To mask wherever an upstream message echoes it.
    key: Option<&'p str>,
    client: HttpsClient,
}

impl<'p> Call<'p> {
    fn new(p: &'p ProviderSpec) -> Result<Self, E> {
        let key = p
            .api_key
            .as_ref()
            .map(|k| k.expose_secret())
            .filter(|k| !k.is_empty());
        let mut headers = HeaderMap::new();
        for (name, value) in &p.headers {
            let n = HeaderName::from_bytes(name.as_bytes());
            let v = HeaderValue::from_str(value);
            let (Ok(n), Ok(mut v)) = (n, v) else {
                return Err(E::Unusable(format!(
                    "provider '{}': header '{name}' is not a valid HTTP header",
                    p.name
                )));
            };
            v.set_sensitive(true);
            headers.insert(n, v);
        }
        if let Some(k) = key {
            let (name, value) = match p.protocol {
                Protocol::OpenAi | Protocol::OpenAiChat => (AUTHORIZATION, format!("Bearer {k}")),
                Protocol::Anthropic => (HeaderName::from_static("x-api-key"), k.to_string()),
                Protocol::Gemini => (HeaderName::from_static("x-goog-api-key"), k.to_string()),
            };
            let mut v = HeaderValue::from_str(&value).map_err(|_| {
                E::Unusable(format!(
                    "provider '{}': its API key cannot be sent in an HTTP header",
                    p.name
                ))
            })?;
            v.set_sensitive(true);
            headers.insert(name, v);
        }
        if p.protocol == Protocol::Anthropic && !headers.contains_key("anthropic-version") {
            headers.insert(
                "anthropic-version",
                HeaderValue::from_static(ANTHROPIC_VERSION),
            );
        }
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        Ok(Call {
            provider: &p.name,
            base_url: &p.base_url,
            headers,
            key,
            client: client()?,
        })
    }

    /// `GET {base_url}{path}`, its JSON answer or the error it means.
    async fn get_json(&self, path: String) -> Result<Value, E> {
        let url = format!("{}{path}", self.base_url);
        let shown = redact_key_params(&url);
        let uri: Uri = url.parse().map_err(|e| {
            E::Unusable(format!(
                "provider '{}': {shown} is not a valid URL: {e}",
                self.provider
            ))
        })?;
        let mut request = Request::new(Empty::new());
        *request.uri_mut() = uri;
        *request.headers_mut() = self.headers.clone();
        let response = self.client.request(request).await.map_err(|e| {
            let what = if e.is_connect() {
                "cannot connect to the upstream for"
            } else {
                "no answer from the upstream to"
            };
            E::Unreachable(self.scrub(&format!(
                "provider '{}': {what} GET {shown}: {}",
                self.provider,
                error_chain(&e)
            )))
        })?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    E::BadAnswer(format!(
                        "provider '{}': the upstream's answer to GET {shown} is larger than {} MiB",
                        self.provider,
                        MAX_BODY >> 20
                    ))
                } else {
                    E::Unreachable(self.scrub(&format!(
                        "provider '{}': the upstream's answer to GET {shown} broke off: {e}",
                        self.provider
                    )))
                }
            })?
            .to_bytes();
        if !status.is_success() {
            return Err(self.status_error(status, &shown, &body));
        }
        serde_json::from_slice(&body).map_err(|e| {
            E::BadAnswer(format!(
                "provider '{}': the upstream's answer to GET {shown} is not JSON: {e}",
                self.provider
            ))
        })
    }

    fn status_error(&self, status: StatusCode, shown: &str, body: &[u8]) -> E {
        let message = self.scrub(&upstream_message(body));
        let provider = self.provider;
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            let why = if self.key.is_some() {
                "refused the provider's API key"
            } else {
                "refused the request, and the provider has no API key"
            };
            return E::KeyRefused(bounded(format!(
                "provider '{provider}': the upstream {why} (HTTP {status} to GET {shown}); \
                 set a valid one with `llmgw provider update {provider} --api-key ...`: {message}"
            )));
        }
        E::Upstream {
            status: status.as_u16(),
            message: bounded(format!(
                "provider '{provider}': the upstream answered HTTP {status} to GET {shown}: {message}"
            )),
        }
    }

    /// `text` with the provider's key and the values of its sensitive
    /// headers (an `api-key`, an `Authorization` set as an extra header)
    /// masked, and `key=` values redacted.
    fn scrub(&self, text: &str) -> String {
        let mut masked = match self.key {
            Some(k) if !k.is_empty() => text.replace(k, "****"),
            _ => text.to_string(),
        };
        for (name, value) in &self.headers {
            if !llmgw_core::validate::is_sensitive_header(name.as_str()) {
                continue;
            }
            let Ok(v) = value.to_str() else { continue };
            // The value, and without a scheme ("Bearer sk-..." → "sk-...").
            for secret in [v, v.split_once(' ').map_or(v, |(_, rest)| rest)] {
                if secret.len() >= 8 {
                    masked = masked.replace(secret, "****");
                }
            }
        }
        redact_key_params(&masked)
    }
}

/// A client for one listing, over rustls (ring) with Mozilla's roots as
/// the data plane's. Built per call: listing is rare, and a client kept
/// would hold a pool and TLS state for nothing.
fn client() -> Result<HttpsClient, E> {
    let crypto = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let tls = rustls::ClientConfig::builder_with_provider(crypto)
        .with_safe_default_protocol_versions()
        .map_err(|e| E::Unusable(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.enforce_http(false);
    // HTTP/1.1 only: one small GET gains nothing from HTTP/2, and every
    // models endpoint speaks HTTP/1.1.
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// The upstream's error message: `error.message` (the shape OpenAI,
/// Anthropic and Gemini share), a string `error`, else the body as text.
fn upstream_message(body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let from_json = parsed.as_ref().and_then(|v| {
        let e = v.get("error")?;
        e.get("message")
            .and_then(Value::as_str)
            .or_else(|| e.as_str())
            .map(str::to_string)
    });
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    if text.is_empty() {
        "(no message)".to_string()
    } else {
        text
    }
}

/// `text` with the value of every `key=` parameter (`key=`, `api_key=`,
/// ...) replaced by `REDACTED`.
fn redact_key_params(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("key=") {
        let (head, tail) = rest.split_at(i + "key=".len());
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '&' || c == '"' || c == '\'' || c == '<' || c.is_whitespace())
            .unwrap_or(tail.len());
        if end > 0 {
            out.push_str("REDACTED");
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MAX_ERROR_MESSAGE;
    use serde_json::json;

    fn spec(protocol: Protocol, key: &str) -> ProviderSpec {
        ProviderSpec {
            name: "p".into(),
            protocol,
            base_url: "http://127.0.0.1:9/v1".into(),
            api_key: Some(key.to_string().into()),
            headers: Default::default(),
            timeout_s: 0,
            stream_usage: true,
            enabled: true,
            limits: None,
        }
    }

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

    #[test]
    fn auth_headers_are_the_data_planes_and_sensitive() {
        let key = "sk-secret-1234567890";
        let s1 = spec(Protocol::OpenAi, key);
        let c = Call::new(&s1).unwrap();
        assert_eq!(c.headers[AUTHORIZATION], format!("Bearer {key}").as_str());
        assert!(c.headers[AUTHORIZATION].is_sensitive());
        let mut s = spec(Protocol::Anthropic, key);
        s.headers
            .insert("anthropic-version".into(), "2024-10-22".into());
        let c = Call::new(&s).unwrap();
        assert_eq!(c.headers["x-api-key"], key);
        assert_eq!(c.headers["anthropic-version"], "2024-10-22");
        let s2 = spec(Protocol::Anthropic, key);
        let c = Call::new(&s2).unwrap();
        assert_eq!(c.headers["anthropic-version"], ANTHROPIC_VERSION);
        let s3 = spec(Protocol::Gemini, key);
        let c = Call::new(&s3).unwrap();
        assert_eq!(c.headers["x-goog-api-key"], key);
        assert!(!format!("{:?}", c.headers).contains(key));
    }

    #[test]
    fn secrets_in_the_providers_own_headers_are_masked_too() {
        let mut s = spec(Protocol::OpenAi, "sk-main-key-123456");
        s.headers
            .insert("api-key".into(), "azure-secret-abcdef".into());
        s.headers.insert("x-org".into(), "org-visible".into());
        let c = Call::new(&s).unwrap();
        let body = json!({"error": {"message": "bad api-key azure-secret-abcdef for org-visible"}});
        let e = c.status_error(
            StatusCode::FORBIDDEN,
            "http://h/v1/models",
            body.to_string().as_bytes(),
        );
        let m = e.to_string();
        assert!(!m.contains("azure-secret-abcdef"), "{m}");
        assert!(m.contains("bad api-key **** for org-visible"), "{m}");
    }

    #[test]
    fn error_messages_carry_no_secret_and_are_bounded() {
        let key = "sk-secret-1234567890";
        let s4 = spec(Protocol::OpenAi, key);
        let c = Call::new(&s4).unwrap();
        let body = json!({"error": {"message": format!("Incorrect API key provided: {key}. See https://x/?key={key}&a=1")}});
        let e = c.status_error(
            StatusCode::UNAUTHORIZED,
            "http://h/v1/models",
            body.to_string().as_bytes(),
        );
        let E::KeyRefused(m) = &e else {
            panic!("{e:?}")
        };
        assert!(!m.contains(key) && !format!("{e:?}").contains(key), "{m}");
        assert!(m.contains("refused the provider's API key"), "{m}");
        assert!(m.contains("Incorrect API key provided: ****"), "{m}");
        assert!(m.contains("key=REDACTED&a=1"), "{m}");

        let long = "é".repeat(10_000);
        let e = c.status_error(StatusCode::NOT_FOUND, "http://h/v1/models", long.as_bytes());
        let E::Upstream { status, message } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(*status, 404);
        assert!(message.len() <= MAX_ERROR_MESSAGE, "{}", message.len());
        assert!(message.contains("HTTP 404 Not Found"), "{message}");

        assert_eq!(
            redact_key_params("GET /models?key=abc&x=1 and api_key=def"),
            "GET /models?key=REDACTED&x=1 and api_key=REDACTED"
        );
        assert_eq!(upstream_message(b""), "(no message)");
        assert_eq!(upstream_message(br#"{"error": "nope"}"#), "nope");
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
