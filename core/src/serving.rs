//! Which client APIs a provider protocol can serve, and how: passed
//! through byte for byte when the provider speaks the client's API, else
//! translated from one protocol to another, else not at all (embeddings
//! and legacy completions exist only in OpenAI's API).
//!
//! Routing and `llmgw route explain` both read this, so an explanation
//! says exactly what a request would do.
//!
//! The type of model each client API needs ([`ModelType`]) lives here too:
//! this module imports only `validate`, so the routing table and the
//! upstream rules (`upstream.rs`, which the table calls) can both name it
//! without importing each other.

use std::fmt;

use crate::validate::Protocol;

/// An API a client calls on the data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientApi {
    /// `POST /v1/chat/completions`
    Chat,
    /// `POST /v1/completions`
    Completions,
    /// `POST /v1/embeddings`
    Embeddings,
    /// `POST /v1/responses`
    Responses,
    /// `POST /v1/messages`
    Messages,
    /// `POST /v1/messages/count_tokens`
    CountTokens,
    /// `POST /v1beta/models/{model}:generateContent` and
    /// `:streamGenerateContent`
    GeminiGenerate,
    /// `POST /v1beta/models/{model}:countTokens`
    GeminiCountTokens,
    /// `POST /v1/audio/speech`
    Speech,
    /// `POST /v1/audio/transcriptions` and `/v1/audio/translations`
    Transcription,
    /// `POST /v1/images/generations`, `/v1/images/edits` and
    /// `/v1/images/variations`
    Image,
}

/// A request/response wire format, as named in explanations and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireFormat {
    Chat,
    Responses,
    Anthropic,
    Gemini,
}

impl WireFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            WireFormat::Chat => "openai-chat",
            WireFormat::Responses => "openai-responses",
            WireFormat::Anthropic => "anthropic",
            WireFormat::Gemini => "gemini",
        }
    }
}

impl fmt::Display for WireFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ClientApi {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientApi::Chat => "chat",
            ClientApi::Completions => "completions",
            ClientApi::Embeddings => "embeddings",
            ClientApi::Responses => "responses",
            ClientApi::Messages => "messages",
            ClientApi::CountTokens => "count-tokens",
            ClientApi::GeminiGenerate => "gemini",
            ClientApi::GeminiCountTokens => "gemini-count-tokens",
            ClientApi::Speech => "speech",
            ClientApi::Transcription => "transcription",
            ClientApi::Image => "image",
        }
    }

    pub fn parse(s: &str) -> Option<ClientApi> {
        Some(match s {
            "chat" | "chat-completions" | "openai" => ClientApi::Chat,
            "completions" => ClientApi::Completions,
            "embeddings" => ClientApi::Embeddings,
            "responses" => ClientApi::Responses,
            "messages" | "anthropic" => ClientApi::Messages,
            "count-tokens" => ClientApi::CountTokens,
            "gemini" | "generate-content" => ClientApi::GeminiGenerate,
            "gemini-count-tokens" => ClientApi::GeminiCountTokens,
            "speech" => ClientApi::Speech,
            "transcription" | "transcriptions" | "translations" => ClientApi::Transcription,
            "image" | "images" => ClientApi::Image,
            _ => return None,
        })
    }

    /// The protocol family of the client: what its errors look like.
    pub fn client_protocol(self) -> Protocol {
        match self {
            ClientApi::Messages | ClientApi::CountTokens => Protocol::Anthropic,
            ClientApi::GeminiGenerate | ClientApi::GeminiCountTokens => Protocol::Gemini,
            _ => Protocol::OpenAi,
        }
    }

    /// The wire format of a chat-like API; `None` for embeddings and
    /// legacy completions, which are never translated.
    pub fn wire(self) -> Option<WireFormat> {
        match self {
            ClientApi::Chat => Some(WireFormat::Chat),
            ClientApi::Responses => Some(WireFormat::Responses),
            ClientApi::Messages | ClientApi::CountTokens => Some(WireFormat::Anthropic),
            ClientApi::GeminiGenerate | ClientApi::GeminiCountTokens => Some(WireFormat::Gemini),
            ClientApi::Completions
            | ClientApi::Embeddings
            | ClientApi::Speech
            | ClientApi::Transcription
            | ClientApi::Image => None,
        }
    }

    /// Whether this is one of OpenAI's audio and image APIs, which only
    /// an OpenAI-protocol provider serves, passed through, never
    /// translated.
    pub fn media(self) -> bool {
        matches!(
            self,
            ClientApi::Speech | ClientApi::Transcription | ClientApi::Image
        )
    }

    /// Whether this API counts tokens rather than generating.
    pub fn counts_tokens(self) -> bool {
        matches!(self, ClientApi::CountTokens | ClientApi::GeminiCountTokens)
    }
}

/// How a target of some protocol serves a client API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// The provider speaks the client's API: bytes pass unchanged but for
    /// `model`.
    PassThrough,
    /// Translated from the client's format to the provider's.
    Translate { from: WireFormat, to: WireFormat },
    /// Token counting answered by the gateway's own tokenizer (the
    /// provider has no such endpoint in its protocol).
    CountLocally,
    /// The provider's protocol has no such API.
    Unsupported,
}

impl fmt::Display for Serving {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Serving::PassThrough => f.write_str("passes through"),
            Serving::Translate { from, to } => write!(f, "translated from {from} to {to}"),
            Serving::CountLocally => f.write_str("counted by the gateway's tokenizer"),
            Serving::Unsupported => f.write_str("not served by this protocol"),
        }
    }
}

/// The wire format a provider protocol is sent chat requests in when the
/// client's API is not its own.
pub fn provider_wire(p: Protocol) -> WireFormat {
    match p {
        // Responses keeps OpenAI's reasoning items (encrypted content).
        Protocol::OpenAi => WireFormat::Responses,
        Protocol::OpenAiChat => WireFormat::Chat,
        Protocol::Anthropic => WireFormat::Anthropic,
        Protocol::Gemini => WireFormat::Gemini,
    }
}

/// How a provider of protocol `p` serves `api`.
pub fn serving(api: ClientApi, p: Protocol) -> Serving {
    use ClientApi as A;
    use Protocol as P;
    match (api, p) {
        (A::Chat | A::Completions | A::Embeddings | A::Responses, P::OpenAi)
        | (A::Chat | A::Completions | A::Embeddings, P::OpenAiChat)
        | (A::Messages | A::CountTokens, P::Anthropic)
        | (A::GeminiGenerate | A::GeminiCountTokens, P::Gemini) => Serving::PassThrough,
        // OpenAI's audio and image APIs: OpenAI and OpenAI-compatible
        // servers only, with no translation into another protocol.
        (A::Speech | A::Transcription | A::Image, P::OpenAi | P::OpenAiChat) => {
            Serving::PassThrough
        }
        (A::Completions | A::Embeddings | A::Speech | A::Transcription | A::Image, _) => {
            Serving::Unsupported
        }
        (A::CountTokens | A::GeminiCountTokens, P::Anthropic | P::Gemini) => Serving::Translate {
            from: api.wire().unwrap_or(WireFormat::Chat),
            to: provider_wire(p),
        },
        (A::CountTokens | A::GeminiCountTokens, P::OpenAi | P::OpenAiChat) => Serving::CountLocally,
        (A::Chat | A::Responses | A::Messages | A::GeminiGenerate, _) => Serving::Translate {
            from: api.wire().unwrap_or(WireFormat::Chat),
            to: provider_wire(p),
        },
    }
}

/// Which endpoints a model serves. A request to an endpoint of another
/// type is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ModelType {
    /// Text generation: Chat Completions, Responses, Messages, Gemini
    /// `generateContent`, legacy completions, and token counts.
    #[default]
    Chat,
    /// `/v1/embeddings`.
    Embedding,
    /// Text to speech (`/v1/audio/speech`).
    Speech,
    /// Speech to text (`/v1/audio/transcriptions` and `translations`).
    Transcription,
    /// Image generation (`/v1/images/*`).
    Image,
}

impl ModelType {
    pub const ALL: [ModelType; 5] = [
        ModelType::Chat,
        ModelType::Embedding,
        ModelType::Speech,
        ModelType::Transcription,
        ModelType::Image,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelType::Chat => "chat",
            ModelType::Embedding => "embedding",
            ModelType::Speech => "speech",
            ModelType::Transcription => "transcription",
            ModelType::Image => "image",
        }
    }

    /// The type of model a client API needs.
    pub fn of_api(api: ClientApi) -> ModelType {
        match api {
            ClientApi::Embeddings => ModelType::Embedding,
            ClientApi::Speech => ModelType::Speech,
            ClientApi::Transcription => ModelType::Transcription,
            ClientApi::Image => ModelType::Image,
            ClientApi::Chat
            | ClientApi::Completions
            | ClientApi::Responses
            | ClientApi::Messages
            | ClientApi::CountTokens
            | ClientApi::GeminiGenerate
            | ClientApi::GeminiCountTokens => ModelType::Chat,
        }
    }
}

impl std::str::FromStr for ModelType {
    type Err = crate::validate::ValidationError;
    /// An empty string is the default, `chat`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Ok(ModelType::Chat);
        }
        ModelType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                crate::validate::ValidationError(format!(
                    "model type '{s}' is not supported; use chat, embedding, speech, \
                     transcription or image"
                ))
            })
    }
}

impl std::fmt::Display for ModelType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_and_images_pass_through_to_openai_only() {
        for api in [
            ClientApi::Speech,
            ClientApi::Transcription,
            ClientApi::Image,
        ] {
            assert!(api.media());
            assert_eq!(api.wire(), None);
            assert_eq!(ClientApi::parse(api.as_str()), Some(api));
            assert_eq!(api.client_protocol(), Protocol::OpenAi);
            for p in Protocol::ALL {
                let want = if matches!(p, Protocol::OpenAi | Protocol::OpenAiChat) {
                    Serving::PassThrough
                } else {
                    Serving::Unsupported
                };
                assert_eq!(serving(api, p), want, "{api:?} {p:?}");
            }
        }
        assert!(!ClientApi::Chat.media());
    }

    #[test]
    fn every_chat_api_reaches_every_protocol() {
        for api in [
            ClientApi::Chat,
            ClientApi::Responses,
            ClientApi::Messages,
            ClientApi::GeminiGenerate,
        ] {
            for p in Protocol::ALL {
                assert_ne!(serving(api, p), Serving::Unsupported, "{api:?} {p:?}");
            }
        }
        assert_eq!(
            serving(ClientApi::Responses, Protocol::OpenAi),
            Serving::PassThrough
        );
        assert_eq!(
            serving(ClientApi::Responses, Protocol::OpenAiChat),
            Serving::Translate {
                from: WireFormat::Responses,
                to: WireFormat::Chat
            }
        );
        assert_eq!(
            serving(ClientApi::Messages, Protocol::OpenAi),
            Serving::Translate {
                from: WireFormat::Anthropic,
                to: WireFormat::Responses
            }
        );
        assert_eq!(
            serving(ClientApi::Embeddings, Protocol::Anthropic),
            Serving::Unsupported
        );
        assert_eq!(
            serving(ClientApi::CountTokens, Protocol::OpenAiChat),
            Serving::CountLocally
        );
        assert_eq!(
            serving(ClientApi::GeminiCountTokens, Protocol::Anthropic),
            Serving::Translate {
                from: WireFormat::Gemini,
                to: WireFormat::Anthropic
            }
        );
    }
}
