//! What can go wrong in translation, and the record of what a lenient
//! translation left out.

use std::fmt;

use serde_json::{Map, Value};

/// A translation failure. Each names what it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The client's body is not valid for its own protocol.
    Invalid(String),
    /// A field has no equivalent in the target protocol (strict mode), or
    /// cannot be sent there at all (an image URL to Gemini).
    Untranslatable {
        field: String,
        target: &'static str,
        reason: String,
    },
    /// An upstream body could not be read in its protocol.
    Upstream(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid(m) => write!(f, "{m}"),
            Error::Untranslatable {
                field,
                target,
                reason,
            } => write!(
                f,
                "'{field}' cannot be translated to the {target} protocol: {reason}"
            ),
            Error::Upstream(m) => write!(f, "the upstream answer could not be read: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// Fields left out of a translation. Strict (the default) refuses the
/// first; lenient records each and goes on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lossy {
    pub lenient: bool,
    pub dropped: Vec<String>,
}

impl Lossy {
    pub fn strict() -> Lossy {
        Lossy::default()
    }

    pub fn lenient() -> Lossy {
        Lossy {
            lenient: true,
            dropped: Vec::new(),
        }
    }

    /// `field` (a JSON path in the client's body, such as `logprobs` or
    /// `messages[2].content[0].cache_control`) cannot go to `target`.
    /// The path is rendered only here, so a caller may pass a lazy one
    /// ([`crate::ir::Path`], `format_args!`).
    pub fn drop(
        &mut self,
        field: impl fmt::Display,
        target: &'static str,
        reason: &str,
    ) -> Result<(), Error> {
        let field = field.to_string();
        if !self.lenient {
            return Err(Error::Untranslatable {
                field,
                target,
                reason: reason.to_string(),
            });
        }
        if !self.dropped.contains(&field) {
            self.dropped.push(field);
        }
        Ok(())
    }

    /// The unknown fields of one object of the client's body (`extra`,
    /// what its typed struct did not know), found at `parent` (empty for
    /// the top level): each is named as untranslatable, except the
    /// `ignored` ones (hints the gateway may skip) and those that say
    /// nothing (see [`says_nothing`]).
    pub fn unknown(
        &mut self,
        extra: &Map<String, Value>,
        parent: impl fmt::Display,
        ignored: &[&str],
    ) -> Result<(), Error> {
        for (key, value) in extra {
            if ignored.contains(&key.as_str()) || says_nothing(value) {
                continue;
            }
            let parent = parent.to_string();
            let field = if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            };
            self.drop(field, "target", "the gateway knows no equivalent for it")?;
        }
        Ok(())
    }
}

/// Whether an unknown field's value says nothing: `null`, `{}` or `[]`,
/// which SDKs and JSON libraries write for an option left unset. Such a
/// field is neither refused nor reported (nothing is lost by leaving it
/// out). Any other value is the client asking for something, and is
/// named: `false`, `0` and `""` too, since they may turn off a default
/// the gateway cannot see.
pub fn says_nothing(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The kind of an API error, shared by every protocol's error shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    RequestTooLarge,
    RateLimit,
    /// Anthropic 529, or a 503.
    Overloaded,
    Timeout,
    Api,
}

impl ErrorType {
    /// The kind an HTTP status stands for.
    pub fn from_status(status: u16) -> ErrorType {
        match status {
            400 | 405 | 409 | 415 | 422 => ErrorType::InvalidRequest,
            401 => ErrorType::Authentication,
            403 => ErrorType::Permission,
            404 => ErrorType::NotFound,
            413 => ErrorType::RequestTooLarge,
            429 => ErrorType::RateLimit,
            503 | 529 => ErrorType::Overloaded,
            504 => ErrorType::Timeout,
            _ => ErrorType::Api,
        }
    }
}

/// An upstream error, read from its protocol's shape, to be written in
/// the client's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The upstream's status.
    pub status: u16,
    pub kind: ErrorType,
    pub message: String,
}

impl ApiError {
    /// The status a client of a protocol other than Anthropic gets: 529
    /// (Anthropic's overloaded) is 503 elsewhere.
    pub fn status_for_non_anthropic(&self) -> u16 {
        if self.status == 529 {
            503
        } else {
            self.status
        }
    }
}
