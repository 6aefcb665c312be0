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
    if value.len() > 64 {
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

/// A provider's base URL: http or https, a host, no credentials, no query
/// and no fragment. Returns the URL without a trailing slash.
pub fn base_url(value: &str) -> Result<url::Url, ValidationError> {
    let url = url::Url::parse(value.trim())
        .map_err(|e| ValidationError(format!("base URL '{value}' is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ValidationError(format!(
            "base URL '{value}' must use http or https, not '{}'",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ValidationError(format!("base URL '{value}' has no host")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ValidationError(
            "base URL must not contain credentials; set the provider's API key instead".into(),
        ));
    }
    if url.fragment().is_some() {
        return Err(ValidationError(format!(
            "base URL '{}' must not have a fragment",
            strip_secretish(&url)
        )));
    }
    if url.query().is_some() {
        return Err(ValidationError(format!(
            "base URL '{}' must not have a query string",
            strip_secretish(&url)
        )));
    }
    Ok(url)
}

fn strip_secretish(url: &url::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// A target's weight.
pub fn weight(value: u32) -> Result<(), ValidationError> {
    if value == 0 {
        return Err(ValidationError(
            "target weight must be at least 1".to_string(),
        ));
    }
    Ok(())
}

/// An HTTP header to add upstream: a valid name and a valid value.
pub fn header(name: &str, value: &str) -> Result<(), ValidationError> {
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
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Priority => "priority",
            Strategy::RoundRobin => "round-robin",
            Strategy::Weighted => "weighted",
            Strategy::LeastLatency => "least-latency",
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
            other => Err(ValidationError(format!(
                "strategy '{other}' is not supported; use priority, round-robin, weighted or least-latency"
            ))),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Prices must be finite and not negative.
pub fn price(what: &str, value: f64) -> Result<(), ValidationError> {
    if !value.is_finite() || value < 0.0 {
        return Err(ValidationError(format!(
            "{what} price must be a number of at least 0"
        )));
    }
    Ok(())
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
        assert!(base_url("https://api.openai.com/v1").is_ok());
        assert!(base_url("http://127.0.0.1:8080").is_ok());
        assert!(base_url("ftp://x").is_err());
        assert!(base_url("https://user:pw@host").is_err());
        assert!(base_url("https://host/#frag").is_err());
        assert!(base_url("https://host/?a=1").is_err());
        assert!(base_url("not a url").is_err());
        let e = base_url("https://u:hunter2@host").unwrap_err();
        assert!(!e.0.contains("hunter2"));
    }

    #[test]
    fn weights_and_headers() {
        assert!(weight(0).is_err());
        assert!(weight(1).is_ok());
        assert!(header("x-team", "a").is_ok());
        assert!(header("bad header", "a").is_err());
        assert!(header("connection", "close").is_err());
        assert!(header("x-a", "line\nbreak").is_err());
    }

    #[test]
    fn enums_round_trip() {
        for s in ["priority", "round-robin", "weighted", "least-latency"] {
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
