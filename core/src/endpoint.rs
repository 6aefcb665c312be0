//! The data plane's client paths: which API a request path (and query)
//! is for, and the model a Gemini path names. Pure, so the control plane
//! checks a playground path with the same rule the data plane serves by.

use crate::Protocol;

/// The API a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    Messages,
    CountTokens,
    /// Gemini `:generateContent`.
    GeminiGenerate,
    /// Gemini `:streamGenerateContent`; `sse` with `alt=sse`, else a
    /// streamed JSON array.
    GeminiStream {
        sse: bool,
    },
    /// Gemini `:countTokens`.
    GeminiCountTokens,
    /// `/v1/audio/speech`: JSON in, audio bytes out.
    AudioSpeech,
    /// `/v1/audio/transcriptions`: a multipart upload.
    AudioTranscriptions,
    /// `/v1/audio/translations`: a multipart upload.
    AudioTranslations,
    /// `/v1/images/generations`: JSON in and out.
    ImagesGenerations,
    /// `/v1/images/edits`: a multipart upload.
    ImagesEdits,
    /// `/v1/images/variations`: a multipart upload.
    ImagesVariations,
}

/// Where a Gemini path names its model: `/v1beta/models/{model}:{method}`
/// (or `/v1/models/...`). The model is the part before the method.
fn gemini_path(path: &str) -> Option<(&str, &str)> {
    let rest = path
        .strip_prefix("/v1beta/models/")
        .or_else(|| path.strip_prefix("/v1/models/"))?;
    let (model, method) = rest.rsplit_once(':')?;
    (!model.is_empty() && !model.contains('/')).then_some((model, method))
}

impl Endpoint {
    pub fn from_path(path: &str) -> Option<Endpoint> {
        Endpoint::from_request(path, None).map(|(e, _)| e)
    }

    /// The endpoint of a request, and the model its path names (Gemini).
    pub fn from_request<'p>(
        path: &'p str,
        query: Option<&str>,
    ) -> Option<(Endpoint, Option<&'p str>)> {
        Some(match path {
            "/v1/chat/completions" => (Endpoint::ChatCompletions, None),
            "/v1/completions" => (Endpoint::Completions, None),
            "/v1/embeddings" => (Endpoint::Embeddings, None),
            "/v1/responses" => (Endpoint::Responses, None),
            "/v1/messages" => (Endpoint::Messages, None),
            "/v1/messages/count_tokens" => (Endpoint::CountTokens, None),
            "/v1/audio/speech" => (Endpoint::AudioSpeech, None),
            "/v1/audio/transcriptions" => (Endpoint::AudioTranscriptions, None),
            "/v1/audio/translations" => (Endpoint::AudioTranslations, None),
            "/v1/images/generations" => (Endpoint::ImagesGenerations, None),
            "/v1/images/edits" => (Endpoint::ImagesEdits, None),
            "/v1/images/variations" => (Endpoint::ImagesVariations, None),
            _ => {
                let (model, method) = gemini_path(path)?;
                let e = match method {
                    "generateContent" => Endpoint::GeminiGenerate,
                    "streamGenerateContent" => Endpoint::GeminiStream {
                        sse: query.is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse")),
                    },
                    "countTokens" => Endpoint::GeminiCountTokens,
                    _ => return None,
                };
                (e, Some(model))
            }
        })
    }

    pub fn api(self) -> crate::serving::ClientApi {
        use crate::serving::ClientApi;
        match self {
            Endpoint::ChatCompletions => ClientApi::Chat,
            Endpoint::Completions => ClientApi::Completions,
            Endpoint::Embeddings => ClientApi::Embeddings,
            Endpoint::Responses => ClientApi::Responses,
            Endpoint::Messages => ClientApi::Messages,
            Endpoint::CountTokens => ClientApi::CountTokens,
            Endpoint::GeminiGenerate | Endpoint::GeminiStream { .. } => ClientApi::GeminiGenerate,
            Endpoint::GeminiCountTokens => ClientApi::GeminiCountTokens,
            Endpoint::AudioSpeech => ClientApi::Speech,
            Endpoint::AudioTranscriptions | Endpoint::AudioTranslations => ClientApi::Transcription,
            Endpoint::ImagesGenerations | Endpoint::ImagesEdits | Endpoint::ImagesVariations => {
                ClientApi::Image
            }
        }
    }

    /// Whether the body is a `multipart/form-data` upload (audio to
    /// transcribe, an image to edit) rather than JSON.
    pub fn multipart(self) -> bool {
        matches!(
            self,
            Endpoint::AudioTranscriptions
                | Endpoint::AudioTranslations
                | Endpoint::ImagesEdits
                | Endpoint::ImagesVariations
        )
    }

    /// The client's protocol family: where its key is, what its errors
    /// look like.
    pub fn protocol(self) -> Protocol {
        self.api().client_protocol()
    }

    /// Whether the client's path says it streams (Gemini); other
    /// protocols say so in the body.
    pub fn path_streams(self) -> bool {
        matches!(self, Endpoint::GeminiStream { .. })
    }

    /// Whether the model is named in the path rather than the body.
    pub fn model_in_path(self) -> bool {
        matches!(
            self,
            Endpoint::GeminiGenerate | Endpoint::GeminiStream { .. } | Endpoint::GeminiCountTokens
        )
    }

    /// The path after the provider's base URL for a pass-through request
    /// (Gemini's names the upstream model).
    pub fn upstream_path(self, upstream_model: &str) -> std::borrow::Cow<'static, str> {
        use std::borrow::Cow;
        match self {
            Endpoint::ChatCompletions => Cow::Borrowed("/chat/completions"),
            Endpoint::Completions => Cow::Borrowed("/completions"),
            Endpoint::Embeddings => Cow::Borrowed("/embeddings"),
            Endpoint::Responses => Cow::Borrowed("/responses"),
            Endpoint::Messages => Cow::Borrowed("/messages"),
            Endpoint::CountTokens => Cow::Borrowed("/messages/count_tokens"),
            Endpoint::AudioSpeech => Cow::Borrowed("/audio/speech"),
            Endpoint::AudioTranscriptions => Cow::Borrowed("/audio/transcriptions"),
            Endpoint::AudioTranslations => Cow::Borrowed("/audio/translations"),
            Endpoint::ImagesGenerations => Cow::Borrowed("/images/generations"),
            Endpoint::ImagesEdits => Cow::Borrowed("/images/edits"),
            Endpoint::ImagesVariations => Cow::Borrowed("/images/variations"),
            Endpoint::GeminiGenerate => {
                Cow::Owned(format!("/models/{upstream_model}:generateContent"))
            }
            Endpoint::GeminiStream { sse: true } => Cow::Owned(format!(
                "/models/{upstream_model}:streamGenerateContent?alt=sse"
            )),
            Endpoint::GeminiStream { sse: false } => {
                Cow::Owned(format!("/models/{upstream_model}:streamGenerateContent"))
            }
            Endpoint::GeminiCountTokens => {
                Cow::Owned(format!("/models/{upstream_model}:countTokens"))
            }
        }
    }
}

/// `path` (a Gemini path that names its model, with or without a query)
/// with that model replaced by `model`, everything else kept. `None` when
/// the path names no model (the other protocols name it in the body).
pub fn replace_path_model(path: &str, model: &str) -> Option<String> {
    let (p, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let (_, old) = Endpoint::from_request(p, query)?;
    let old = old?;
    // The model is the last segment before the method (see `gemini_path`).
    let (prefix, method) = p.rsplit_once(':')?;
    let base = prefix.strip_suffix(old)?;
    let mut out = format!("{base}{model}:{method}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_classified() {
        assert_eq!(
            Endpoint::from_path("/v1/chat/completions"),
            Some(Endpoint::ChatCompletions)
        );
        assert_eq!(
            Endpoint::from_request("/v1beta/models/g:streamGenerateContent", Some("alt=sse")),
            Some((Endpoint::GeminiStream { sse: true }, Some("g")))
        );
        assert_eq!(Endpoint::from_path("/v1/models"), None);
        let upload = Endpoint::from_path("/v1/audio/transcriptions");
        assert_eq!(upload, Some(Endpoint::AudioTranscriptions));
        assert!(upload.is_some_and(Endpoint::multipart));
        assert!(!Endpoint::AudioSpeech.multipart());
        assert_eq!(
            Endpoint::ImagesEdits.upstream_path("x").as_ref(),
            "/images/edits"
        );
        assert_eq!(
            Endpoint::from_path("/v1beta/models/a/b:generateContent"),
            None
        );
        assert_eq!(Endpoint::from_path("/v1beta/models/g:explode"), None);
    }

    #[test]
    fn a_gemini_path_gets_another_model() {
        assert_eq!(
            replace_path_model("/v1beta/models/old:generateContent", "new").as_deref(),
            Some("/v1beta/models/new:generateContent")
        );
        assert_eq!(
            replace_path_model("/v1beta/models/old:streamGenerateContent?alt=sse", "n.2")
                .as_deref(),
            Some("/v1beta/models/n.2:streamGenerateContent?alt=sse")
        );
        assert_eq!(
            replace_path_model("/v1/models/m:countTokens", "x").as_deref(),
            Some("/v1/models/x:countTokens")
        );
        // The model is in the body.
        assert_eq!(replace_path_model("/v1/chat/completions", "x"), None);
        assert_eq!(replace_path_model("/v1/other", "x"), None);
    }
}
