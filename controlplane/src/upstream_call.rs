//! What the control plane's outbound calls to a provider share
//! (`upstream_models` lists its models, `model_test` sends each target a
//! tiny request): the HTTP client (hyper-util and rustls with Mozilla's
//! roots, as the data plane's), the provider's extra headers and its
//! credential as the data plane sends them (`llmgw_core::upstream`), the
//! URL joined as the data plane joins its endpoint paths, bounded answers,
//! and errors that say who is at fault. A provider with an outbound proxy
//! is called through it, as the data plane calls it
//! (`llmgw_outbound::ProxyConnector`).
//!
//! No secret leaves this module: errors carry no header, the provider's key
//! and the values of its sensitive headers are masked wherever the
//! upstream's message echoes them, and `key=` query values are redacted.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use llmgw_core::error_chain;
use llmgw_core::proxy::ProxyUrl;
use llmgw_outbound::ProxyConnector;
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::store::{bounded, ProviderRow, ProviderSpec};

/// Connecting: DNS and TCP.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read.
pub const MAX_BODY: usize = 8 << 20;

/// Why a call to the upstream failed, by who is at fault. Messages name
/// the provider and never carry a secret.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
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
    /// An answer that is not what was asked for (not JSON, too large).
    #[error("{0}")]
    BadAnswer(String),
}

type E = UpstreamError;

/// Refuses a broken provider (a field that cannot be opened or read): its
/// stored defaults would not be what the admin configured.
pub fn usable(provider: &ProviderRow) -> Result<&ProviderSpec, E> {
    if !provider.broken.is_empty() {
        let what: Vec<String> = provider.broken.iter().map(ToString::to_string).collect();
        return Err(E::Unusable(format!(
            "provider '{}' is broken ({}); fix it with `llmgw provider update` first",
            provider.spec.name,
            what.join("; ")
        )));
    }
    Ok(&provider.spec)
}

pub(crate) type HttpsClient = Client<hyper_rustls::HttpsConnector<ProxyConnector>, Full<Bytes>>;

/// What every request of one call to a provider shares.
pub struct Call<'p> {
    pub provider: &'p str,
    pub base_url: &'p str,
    /// The provider's extra headers and its credential (marked sensitive).
    headers: HeaderMap,
    /// To mask wherever an upstream message echoes it.
    key: Option<&'p str>,
    client: HttpsClient,
}

/// An answer of any status, its body read whole (up to [`MAX_BODY`]).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
    /// `METHOD url` as errors show it, `key=` values redacted.
    pub shown: String,
}

impl<'p> Call<'p> {
    pub fn new(p: &'p ProviderSpec) -> Result<Self, E> {
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
        if key.is_some_and(|k| HeaderValue::from_str(k).is_err()) {
            return Err(E::Unusable(format!(
                "provider '{}': its API key cannot be sent in an HTTP header",
                p.name
            )));
        }
        let proxy = match &p.proxy {
            None => None,
            Some(u) => Some(
                ProxyUrl::parse(u.expose_secret())
                    .map_err(|e| E::Unusable(format!("provider '{}': {e}", p.name)))?,
            ),
        };
        llmgw_core::upstream::insert_auth(&mut headers, p.protocol, key);
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        Ok(Call {
            provider: &p.name,
            base_url: &p.base_url,
            headers,
            key,
            client: client_through(proxy.as_ref())?,
        })
    }

    #[cfg(test)]
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// `GET {base_url}{path}`, its JSON answer or the error it means.
    pub async fn get_json(&self, path: String) -> Result<Value, E> {
        let answer = self.send(Method::GET, &path, None).await?;
        if !answer.status.is_success() {
            return Err(self.status_error(answer.status, &answer.shown, &answer.body));
        }
        serde_json::from_slice(&answer.body).map_err(|e| {
            E::BadAnswer(format!(
                "provider '{}': the upstream's answer to {} is not JSON: {e}",
                self.provider, answer.shown
            ))
        })
    }

    /// `{method} {base_url}{path}` with `json` as the body (if any): the
    /// answer whatever its status, or why there is none.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        json: Option<&Value>,
    ) -> Result<Answer, E> {
        let url = format!("{}{path}", self.base_url);
        let shown = format!("{method} {}", redact_key_params(&url));
        let uri: Uri = url.parse().map_err(|e| {
            E::Unusable(format!(
                "provider '{}': {} is not a valid URL: {e}",
                self.provider,
                redact_key_params(&url)
            ))
        })?;
        let body = json.map_or_else(Bytes::new, |v| Bytes::from(v.to_string()));
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = self.headers.clone();
        if json.is_some() {
            request
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let response = self.client.request(request).await.map_err(|e| {
            let what = if e.is_connect() {
                "cannot connect to the upstream for"
            } else {
                "no answer from the upstream to"
            };
            E::Unreachable(self.scrub(&format!(
                "provider '{}': {what} {shown}: {}",
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
                        "provider '{}': the upstream's answer to {shown} is larger than {} MiB",
                        self.provider,
                        MAX_BODY >> 20
                    ))
                } else {
                    E::Unreachable(self.scrub(&format!(
                        "provider '{}': the upstream's answer to {shown} broke off: {e}",
                        self.provider
                    )))
                }
            })?
            .to_bytes();
        Ok(Answer {
            status,
            body,
            shown,
        })
    }

    /// The error an error status means; `shown` is `METHOD url`.
    pub fn status_error(&self, status: StatusCode, shown: &str, body: &[u8]) -> E {
        let message = self.scrub(&upstream_message(body));
        let provider = self.provider;
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            let why = if self.key.is_some() {
                "refused the provider's API key"
            } else {
                "refused the request, and the provider has no API key"
            };
            return E::KeyRefused(bounded(format!(
                "provider '{provider}': the upstream {why} (HTTP {status} to {shown}); \
                 set a valid one with `llmgw provider update {provider} --api-key ...`: {message}"
            )));
        }
        E::Upstream {
            status: status.as_u16(),
            message: bounded(format!(
                "provider '{provider}': the upstream answered HTTP {status} to {shown}: {message}"
            )),
        }
    }

    /// `text` with the provider's key and the values of its sensitive
    /// headers (an `api-key`, an `Authorization` set as an extra header)
    /// masked, and `key=` values redacted.
    pub fn scrub(&self, text: &str) -> String {
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

/// A client for one call, over rustls (ring) with Mozilla's roots as the
/// data plane's. Built per call: calls are rare, and a client kept would
/// hold a pool and TLS state for nothing.
pub(crate) fn client() -> Result<HttpsClient, E> {
    client_through(None)
}

/// [`client`], through a provider's proxy when it has one.
fn client_through(proxy: Option<&ProxyUrl>) -> Result<HttpsClient, E> {
    let tls = llmgw_outbound::tls::client_config().map_err(E::Unusable)?;
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let transport = ProxyConnector::new(http, tls.clone(), proxy).map_err(E::Unusable)?;
    // HTTP/1.1 only: one small request gains nothing from HTTP/2, and
    // every provider API speaks HTTP/1.1.
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(transport);
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// The upstream's error message: `error.message` (the shape OpenAI,
/// Anthropic and Gemini share), a string `error`, else the body as text.
pub fn upstream_message(body: &[u8]) -> String {
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
pub fn redact_key_params(text: &str) -> String {
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
pub(crate) mod tests {
    use super::*;
    use crate::store::MAX_ERROR_MESSAGE;
    use http::header::AUTHORIZATION;
    use llmgw_core::Protocol;
    use serde_json::json;

    pub(crate) fn spec(protocol: Protocol, key: &str) -> ProviderSpec {
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
            proxy: None,
            default_params: Default::default(),
        }
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
        assert_eq!(
            c.headers["anthropic-version"],
            llmgw_core::upstream::ANTHROPIC_VERSION
        );
        let s3 = spec(Protocol::Gemini, key);
        let c = Call::new(&s3).unwrap();
        assert_eq!(c.headers["x-goog-api-key"], key);
        assert!(!format!("{:?}", c.headers).contains(key));
        let bad = spec(Protocol::OpenAi, "bad\nkey");
        assert!(matches!(Call::new(&bad), Err(E::Unusable(_))));
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
            "GET http://h/v1/models",
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
            "GET http://h/v1/models",
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
        let e = c.status_error(
            StatusCode::NOT_FOUND,
            "GET http://h/v1/models",
            long.as_bytes(),
        );
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
}
