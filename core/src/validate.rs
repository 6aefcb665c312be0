//! Validation shared by the control plane's writes and the data plane's
//! snapshot checks, so both sides agree on what is valid.

use std::fmt;
use std::str::FromStr;

/// A value that breaks a rule of the data model, with a message a person
/// can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValidationError(pub String);

impl ValidationError {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// Names of providers, models and keys: `[a-zA-Z0-9._-]`, 1 to 64 characters.
pub fn name(kind: &str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError(format!("{kind} name must not be empty")));
    }
    if value.len() > limits::NAME {
        return Err(ValidationError(format!(
            "{kind} name '{}…' is longer than 64 characters",
            &value[..value.char_indices().nth(32).map_or(value.len(), |(i, _)| i)]
        )));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(ValidationError(format!(
            "{kind} name '{value}' contains {c:?}; use only letters, digits, '.', '_' and '-'"
        )));
    }
    Ok(())
}

/// Upper bounds on every size and length the data model accepts. Each
/// write is checked against them, so no single value can make a request,
/// a snapshot or an error message unreasonably large.
pub mod limits {
    /// Provider, model and key names.
    pub const NAME: usize = 64;
    /// A provider's base URL, in bytes.
    pub const BASE_URL: usize = 2048;
    /// A provider's upstream API key, in bytes.
    pub const API_KEY: usize = 4096;
    /// Extra headers per provider.
    pub const HEADERS: usize = 64;
    /// One header name, in bytes.
    pub const HEADER_NAME: usize = 256;
    /// One header value, in bytes.
    pub const HEADER_VALUE: usize = 8192;
    /// Targets per model.
    pub const TARGETS: usize = 64;
    /// A target's upstream model name, in bytes.
    pub const UPSTREAM_MODEL: usize = 256;
    /// A target's rule expression (JSON text), in bytes.
    pub const RULES: usize = 16 * 1024;
    /// Models a client key is limited to.
    pub const KEY_MODELS: usize = 1024;
    /// A client key's display prefix, in bytes.
    pub const KEY_PREFIX: usize = 32;
    /// A target's weight.
    pub const WEIGHT: u32 = 1_000_000;
    /// Objects of each kind in one configuration.
    pub const PROVIDERS: usize = 1_000;
    pub const MODELS: usize = 10_000;
    pub const API_KEYS: usize = 100_000;
}

/// `field` is at most `max` bytes long. The message names the field and the
/// sizes, never the value.
pub fn length(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.len() > max {
        return Err(ValidationError(format!(
            "{field} is {} bytes long; the limit is {max}",
            value.len()
        )));
    }
    Ok(())
}

/// At most `max` items in `field`.
pub fn count(field: &str, n: usize, max: usize) -> Result<(), ValidationError> {
    if n > max {
        return Err(ValidationError(format!(
            "{field} has {n} entries; the limit is {max}"
        )));
    }
    Ok(())
}

/// A provider's base URL: `http://` or `https://`, a non-empty host, no
/// credentials, no query and no fragment, no whitespace or control
/// character anywhere (leading and trailing spaces are refused, not
/// trimmed). Returns the normalized form that is stored: the URL as the
/// `url` crate writes it (lower-case scheme and host, default port dropped)
/// without a trailing slash.
///
/// Messages name the field and the problem and never repeat the value, so
/// that credentials in a refused URL are not echoed.
pub fn base_url(value: &str) -> Result<String, ValidationError> {
    const F: &str = "base_url";
    let bad = |msg: &str| ValidationError(format!("{F} {msg}"));
    if value.is_empty() {
        return Err(bad("must not be empty"));
    }
    length(F, value, limits::BASE_URL)?;
    if let Some((i, c)) = value
        .char_indices()
        .find(|(_, c)| c.is_control() || c.is_whitespace())
    {
        let what = if c.is_control() {
            "a control character"
        } else {
            "whitespace"
        };
        return Err(ValidationError(format!(
            "{F} contains {what} (U+{:04X}) at byte {i}; remove it",
            u32::from(c)
        )));
    }
    if value.contains('\\') {
        return Err(bad("contains a backslash; use '/'"));
    }
    // The authority as written: the `url` crate would read `http:///v1` as
    // the host `v1`, and accept `http://@host`.
    let Some((scheme, rest)) = value.split_once("://") else {
        return Err(bad("must start with http:// or https://"));
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(bad("must use http or https"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        if authority.starts_with('@') {
            return Err(bad(
                "has an empty user info ('@' before the host); remove it",
            ));
        }
        return Err(bad(
            "must not contain credentials; set the provider's API key instead",
        ));
    }
    if authority.is_empty() || authority.starts_with(':') {
        return Err(bad("has an empty host"));
    }
    let url = url::Url::parse(value).map_err(|e| bad(&format!("is not a valid URL: {e}")))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has an empty host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "must not contain credentials; set the provider's API key instead",
        ));
    }
    if url.fragment().is_some() {
        return Err(bad("must not have a fragment ('#...')"));
    }
    if url.query().is_some() {
        return Err(bad("must not have a query string ('?...')"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// A target's weight: 0 drains the target (it gets no traffic while another
/// target of the same priority can take it), 1 and more share traffic in
/// proportion.
pub fn weight(value: u32) -> Result<(), ValidationError> {
    if value > limits::WEIGHT {
        return Err(ValidationError(format!(
            "weight is {value}; the limit is {}",
            limits::WEIGHT
        )));
    }
    Ok(())
}

/// An HTTP header to add upstream: a valid name and a valid value.
pub fn header(name: &str, value: &str) -> Result<(), ValidationError> {
    length("header name", name, limits::HEADER_NAME)?;
    length(
        &format!("header '{name}' value"),
        value,
        limits::HEADER_VALUE,
    )?;
    let n = http::HeaderName::from_str(name)
        .map_err(|_| ValidationError(format!("'{name}' is not a valid HTTP header name")))?;
    if is_hop_by_hop(n.as_str()) || n.as_str() == "host" || n.as_str() == "content-length" {
        return Err(ValidationError(format!(
            "header '{name}' is managed by the gateway and cannot be set"
        )));
    }
    http::HeaderValue::from_str(value)
        .map_err(|_| ValidationError(format!("the value of header '{name}' is not valid")))?;
    Ok(())
}

/// Headers that describe one connection and are never forwarded.
pub fn is_hop_by_hop(lower_name: &str) -> bool {
    matches!(
        lower_name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
    )
}

/// Header names whose values are credentials and must be masked when shown.
pub fn is_sensitive_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || n.contains("key")
        || n.contains("token")
        || n.contains("secret")
        || n.contains("auth")
        || n.contains("password")
}

/// The wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// The whole OpenAI API: Chat Completions, Responses, completions,
    /// embeddings.
    OpenAi,
    /// An OpenAI-compatible server that speaks only Chat Completions,
    /// completions, embeddings and models (vLLM, Ollama, llama.cpp,
    /// DeepSeek, Groq): Responses clients are translated to Chat.
    OpenAiChat,
    Anthropic,
    /// Google Gemini (`models/{model}:generateContent`).
    Gemini,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [
        Protocol::OpenAi,
        Protocol::OpenAiChat,
        Protocol::Anthropic,
        Protocol::Gemini,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::OpenAi => "openai",
            Protocol::OpenAiChat => "openai-chat",
            Protocol::Anthropic => "anthropic",
            Protocol::Gemini => "gemini",
        }
    }
}

impl FromStr for Protocol {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "openai" => Ok(Protocol::OpenAi),
            "openai-chat" => Ok(Protocol::OpenAiChat),
            "anthropic" => Ok(Protocol::Anthropic),
            "gemini" => Ok(Protocol::Gemini),
            other => Err(ValidationError(format!(
                "protocol '{other}' is not supported; use 'openai', 'openai-chat', 'anthropic' or 'gemini'"
            ))),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a model orders its candidate targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Strategy {
    /// Ascending priority; weighted round-robin inside one priority.
    #[default]
    Priority,
    RoundRobin,
    Weighted,
    /// Power of two choices over an EWMA of time to first byte.
    LeastLatency,
    /// The cheapest target first, by each target's prices for the request's
    /// estimated input and its `max_tokens` (see `routing::estimated_cost`).
    CostFirst,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Priority => "priority",
            Strategy::RoundRobin => "round-robin",
            Strategy::Weighted => "weighted",
            Strategy::LeastLatency => "least-latency",
            Strategy::CostFirst => "cost-first",
        }
    }
}

impl FromStr for Strategy {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "priority" => Ok(Strategy::Priority),
            "round-robin" => Ok(Strategy::RoundRobin),
            "weighted" => Ok(Strategy::Weighted),
            "least-latency" => Ok(Strategy::LeastLatency),
            "cost-first" => Ok(Strategy::CostFirst),
            other => Err(ValidationError(format!(
                "strategy '{other}' is not supported; use priority, round-robin, weighted, \
                 least-latency or cost-first"
            ))),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(name("model", "gpt-4o.mini_2").is_ok());
        assert!(name("model", "").is_err());
        assert!(name("model", &"a".repeat(64)).is_ok());
        assert!(name("model", &"a".repeat(65)).is_err());
        let e = name("provider", "bad name").unwrap_err();
        assert!(e.0.contains("provider name 'bad name'"), "{e}");
        assert!(name("model", "a/b").is_err());
        assert!(name("model", "a:b").is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(
            base_url("https://api.openai.com/v1").unwrap(),
            "https://api.openai.com/v1"
        );
        assert_eq!(
            base_url("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        // The normalized form: lower-case scheme and host, no default port,
        // no trailing slash.
        assert_eq!(
            base_url("HTTPS://API.Example.COM:443/v1/").unwrap(),
            "https://api.example.com/v1"
        );
        assert!(base_url("ftp://x").is_err());
        assert!(base_url("https://user:pw@host").is_err());
        assert!(base_url("https://host/#frag").is_err());
        assert!(base_url("https://host/?a=1").is_err());
        assert!(base_url("not a url").is_err());
        let e = base_url("https://u:hunter2@host").unwrap_err();
        assert!(!e.0.contains("hunter2"));
    }

    #[test]
    fn hostile_urls_are_refused_without_echo() {
        let cases: &[(&str, &str)] = &[
            ("http://a.example/v1\r\nX-Injected: 1", "control character"),
            ("http://a.example/\nv1", "control character"),
            ("http://a.example/\tv1", "control character"),
            ("http://a.example/\u{1}v1", "control character"),
            ("http://a.example/v 1", "whitespace"),
            (" http://a.example/v1", "whitespace"),
            ("http://a.example/v1 ", "whitespace"),
            ("http://a.example/v1\u{a0}", "whitespace"),
            ("http:///v1", "empty host"),
            ("http://:80/v1", "empty host"),
            ("http://@a.example/v1", "empty user info"),
            ("http:a.example/v1", "must start with http:// or https://"),
            ("http:\\\\a.example", "backslash"),
            ("ftp://user:SECRET@a.example/x", "http or https"),
            ("https://user:SECRET@a.example/x", "credentials"),
            ("https://:SECRET@a.example/x", "credentials"),
            ("", "must not be empty"),
        ];
        for (url, want) in cases {
            let e = base_url(url).expect_err(url);
            assert!(e.0.starts_with("base_url "), "{url:?}: {e}");
            assert!(e.0.contains(want), "{url:?}: want {want:?} in {e}");
            assert!(!e.0.contains("SECRET"), "{url:?}: {e}");
            assert!(!e.0.contains("a.example"), "the value is not echoed: {e}");
        }
        let long = format!("https://a.example/{}", "a".repeat(limits::BASE_URL));
        assert!(base_url(&long).unwrap_err().0.contains("limit is 2048"));
    }

    #[test]
    fn lengths_name_the_field() {
        let e = length("target 1 rules", &"x".repeat(100), 10).unwrap_err();
        assert_eq!(e.0, "target 1 rules is 100 bytes long; the limit is 10");
        assert!(length("f", "abc", 3).is_ok());
        assert!(count("targets", 3, 2)
            .unwrap_err()
            .0
            .contains("targets has 3"));
        let e = header("x-big", &"v".repeat(limits::HEADER_VALUE + 1)).unwrap_err();
        assert!(e.0.contains("header 'x-big' value"), "{e}");
    }

    #[test]
    fn weights_and_headers() {
        assert!(weight(0).is_ok(), "0 drains the target");
        assert!(weight(1).is_ok());
        assert!(weight(limits::WEIGHT + 1).is_err());
        assert!(header("x-team", "a").is_ok());
        assert!(header("bad header", "a").is_err());
        assert!(header("connection", "close").is_err());
        assert!(header("x-a", "line\nbreak").is_err());
    }

    #[test]
    fn enums_round_trip() {
        for s in [
            "priority",
            "round-robin",
            "weighted",
            "least-latency",
            "cost-first",
        ] {
            assert_eq!(s.parse::<Strategy>().unwrap().as_str(), s);
        }
        assert!("fastest".parse::<Strategy>().is_err());
        assert_eq!("openai".parse::<Protocol>().unwrap(), Protocol::OpenAi);
        assert_eq!("gemini".parse::<Protocol>().unwrap(), Protocol::Gemini);
        assert!("vertex".parse::<Protocol>().is_err());
    }

    #[test]
    fn sensitive_headers() {
        assert!(is_sensitive_header("Authorization"));
        assert!(is_sensitive_header("api-key"));
        assert!(is_sensitive_header("X-Auth-Token"));
        assert!(!is_sensitive_header("OpenAI-Organization"));
    }
}
