//! Per-provider upstream HTTP clients, each with its own connection pool,
//! and the upstream URLs parsed once per provider and endpoint. Parsing the
//! URL of every request (reqwest does it for a string) was a few percent of
//! the data plane's CPU per request; a parsed `Url` is only cloned.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::{Client, Url};

use super::error::AttemptError;

/// What is kept per provider name.
struct Entry {
    connect_timeout: Duration,
    client: Client,
    /// The base URL the parsed URLs were made from; a snapshot that changes
    /// it drops them.
    base_url: String,
    /// (endpoint path, base URL + path).
    urls: Vec<(&'static str, Url)>,
}

#[derive(Default)]
pub struct Upstreams {
    entries: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upstreams")
    }
}

impl Upstreams {
    /// The provider's client (a new one, with a new pool, when the connect
    /// timeout changed) and the URL of `path` under `base_url`.
    pub fn get(
        &self,
        provider: &str,
        base_url: &str,
        path: &'static str,
        connect_timeout: Duration,
    ) -> Result<(Client, Url), AttemptError> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = entries
            .get(provider)
            .is_none_or(|e| e.connect_timeout != connect_timeout);
        if fresh {
            let client = build_client(connect_timeout)?;
            entries.insert(
                provider.to_string(),
                Entry {
                    connect_timeout,
                    client,
                    base_url: base_url.to_string(),
                    urls: Vec::new(),
                },
            );
        }
        let Some(entry) = entries.get_mut(provider) else {
            return Err(AttemptError::Connect("no HTTP client".into()));
        };
        if entry.base_url != base_url {
            entry.base_url = base_url.to_string();
            entry.urls.clear();
        }
        if let Some((_, url)) = entry.urls.iter().find(|(p, _)| *p == path) {
            return Ok((entry.client.clone(), url.clone()));
        }
        let text = format!("{base_url}{path}");
        let url = Url::parse(&text)
            .map_err(|e| AttemptError::Request(format!("invalid upstream URL {text}: {e}")))?;
        entry.urls.push((path, url.clone()));
        Ok((entry.client.clone(), url))
    }
}

fn build_client(connect_timeout: Duration) -> Result<Client, AttemptError> {
    Client::builder()
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .http2_adaptive_window(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| AttemptError::Connect(format!("cannot build HTTP client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_base_url_and_clients_the_timeout() {
        let u = Upstreams::default();
        let t = Duration::from_secs(5);
        let (_, a) = u.get("p", "http://a:1/v1", "/chat/completions", t).unwrap();
        assert_eq!(a.as_str(), "http://a:1/v1/chat/completions");
        let (_, b) = u.get("p", "http://a:1/v1", "/embeddings", t).unwrap();
        assert_eq!(b.as_str(), "http://a:1/v1/embeddings");
        let (_, c) = u.get("p", "http://b:2/v2", "/chat/completions", t).unwrap();
        assert_eq!(c.as_str(), "http://b:2/v2/chat/completions");
        let (_, d) = u
            .get(
                "p",
                "http://b:2/v2",
                "/chat/completions",
                Duration::from_secs(1),
            )
            .unwrap();
        assert_eq!(d, c);
        assert!(matches!(
            u.get("q", "not a url", "/x", t),
            Err(AttemptError::Request(_))
        ));
    }
}
