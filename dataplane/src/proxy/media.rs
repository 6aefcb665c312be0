//! Usage of the audio and image endpoints, in one place: tokens where the
//! upstream reports them (gpt-4o-transcribe's and gpt-image-1's `usage`),
//! seconds of audio (a transcription's `duration`, or its usage of type
//! `duration`), characters of speech input, and images by count, size and
//! quality (from the request). A usage of type `duration` (what the
//! upstream bills, whole seconds) wins over the answer's exact `duration`.
//! [`quantities`] is the one call a price
//! function needs; the record gets its fields from it ([`Quantities::record`]).

use bytes::Bytes;
use llmgw_proto::v1 as pb;
use serde_json::Value;

use super::dialect::{Endpoint, Usage};
use super::upload::{Audio, Form};

/// What a media request used.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quantities {
    /// Tokens, when the upstream reported them.
    pub tokens: Option<Usage>,
    /// Audio transcribed or translated, in milliseconds.
    pub audio_ms: u64,
    /// Where `audio_ms` comes from: [`AUDIO_REPORTED`], [`AUDIO_MEASURED`],
    /// [`AUDIO_UNKNOWN`], or empty when no duration was read or needed.
    pub audio_source: &'static str,
    /// Characters of a speech request's `input`.
    pub characters: u64,
    /// Images asked for.
    pub images: u32,
    pub image_size: String,
    pub image_quality: String,
}

impl Quantities {
    /// Writes the media fields of the record.
    pub fn record(&self, r: &mut pb::RequestLog) {
        r.audio_milliseconds = self.audio_ms;
        r.audio_source = self.audio_source.to_string();
        r.characters = self.characters;
        r.images = self.images;
        r.image_size.clone_from(&self.image_size);
        r.image_quality.clone_from(&self.image_quality);
    }
}

/// The upstream's answer gave the duration.
pub const AUDIO_REPORTED: &str = "reported";
/// The data plane measured the uploaded file.
pub const AUDIO_MEASURED: &str = "measured";
/// A per-second price needed the duration, and it could not be measured:
/// the per-second price was not charged.
pub const AUDIO_UNKNOWN: &str = "unknown";

/// Whether an upload's form asks for a stream (`stream=true`).
pub fn form_streams(form: &Value) -> bool {
    form.get("stream")
        .and_then(Value::as_str)
        .is_some_and(|s| s.trim().eq_ignore_ascii_case("true") || s.trim() == "1")
}

/// The quantities of a request to `endpoint` (its body, or an upload's
/// form, as JSON) and of its answer (`response`: the whole body when it
/// was read, JSON or not).
pub fn quantities(endpoint: Endpoint, request: &Value, response: Option<&[u8]>) -> Quantities {
    let mut q = Quantities::default();
    // JSON; else (a streamed transcription's SSE, whose last event has the
    // usage) the last `usage` member in its end.
    let answer = response.and_then(|b| {
        serde_json::from_slice::<Value>(b).ok().or_else(|| {
            let tail = usage_of_tail(&b[b.len().saturating_sub(TAIL_BYTES)..])?;
            serde_json::from_slice(&tail).ok()
        })
    });
    match endpoint {
        Endpoint::AudioSpeech => {
            q.characters = request
                .get("input")
                .and_then(Value::as_str)
                .map_or(0, |s| s.chars().count() as u64);
            // gpt-4o-mini-tts's stream (`stream_format: sse`) ends with its
            // usage; audio itself has none.
            if let Some(u) = answer.as_ref().and_then(|a| a.get("usage")) {
                q.tokens = tokens(u);
            }
        }
        Endpoint::AudioTranscriptions | Endpoint::AudioTranslations => {
            if let Some(a) = &answer {
                if let Some(d) = a.get("duration").and_then(Value::as_f64) {
                    q.audio_ms = seconds_to_ms(d);
                    q.audio_source = AUDIO_REPORTED;
                }
                if let Some(u) = a.get("usage") {
                    match u.get("type").and_then(Value::as_str) {
                        Some("duration") => {
                            if let Some(s) = u.get("seconds").and_then(Value::as_f64) {
                                q.audio_ms = seconds_to_ms(s);
                                q.audio_source = AUDIO_REPORTED;
                            }
                        }
                        _ => q.tokens = tokens(u),
                    }
                }
            }
        }
        Endpoint::ImagesGenerations | Endpoint::ImagesEdits | Endpoint::ImagesVariations => {
            q.images = request
                .get("n")
                .and_then(number)
                .map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX));
            q.image_size = text(request.get("size"));
            q.image_quality = text(request.get("quality"));
            if let Some(u) = answer.as_ref().and_then(|a| a.get("usage")) {
                q.tokens = tokens(u);
            }
        }
        _ => {}
    }
    q
}

/// Bytes kept of the end of an answer too large to read whole.
pub const TAIL_BYTES: usize = 16 * 1024;

/// An answer too large to parse whole (images as base64) as far as its
/// quantities go: `{"usage": …}` with the last top-level-looking `usage`
/// member found in its last bytes (OpenAI writes it after `data`; base64
/// has no quotes, and a `usage` inside a string would be escaped).
pub fn usage_of_tail(tail: &[u8]) -> Option<Bytes> {
    let mut end = tail.len();
    while let Some(at) = memchr::memmem::rfind(&tail[..end], b"\"usage\"") {
        end = at;
        if at > 0 && tail[at - 1] == b'\\' {
            continue;
        }
        let rest = tail[at + 7..].trim_ascii_start();
        let Some(rest) = rest.strip_prefix(b":") else {
            continue;
        };
        let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<Value>();
        if let Some(Ok(v @ Value::Object(_))) = values.next() {
            return Some(Bytes::from(serde_json::json!({ "usage": v }).to_string()));
        }
    }
    None
}

/// `input_tokens` and `output_tokens` (both OpenAI's media usages name
/// them so); cached input is not reported for these.
fn tokens(u: &Value) -> Option<Usage> {
    let input = u.get("input_tokens").and_then(Value::as_u64);
    let output = u.get("output_tokens").and_then(Value::as_u64);
    if input.is_none() && output.is_none() {
        return None;
    }
    Some(Usage {
        input: input.unwrap_or(0),
        output: output.unwrap_or(0),
        ..Default::default()
    })
}

fn seconds_to_ms(s: f64) -> u64 {
    if s.is_finite() && s > 0.0 {
        (s * 1000.0).round() as u64
    } else {
        0
    }
}

/// A number, or a form field's text of one.
fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A string value, or a number's text; at most 64 bytes.
fn text(v: Option<&Value>) -> String {
    let s = match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    s.chars().take(64).collect()
}

/// What finishing a media request's record needs: the endpoint, the
/// request (a JSON body, or an upload's form read at the end) and, when
/// bodies are logged, their cap.
pub struct MediaRequest {
    pub endpoint: Endpoint,
    pub json: Option<Bytes>,
    pub form: Option<Form>,
    /// An upload's stored bytes, kept for a duration measurement while a
    /// per-second price may need one (dropped once it cannot).
    pub audio: Option<Audio>,
    /// The log's body cap, when bodies are logged.
    pub log_cap: Option<usize>,
}

impl MediaRequest {
    /// The request as JSON: the body, or the form's summary.
    pub fn request(&self) -> Value {
        match (&self.form, &self.json) {
            (Some(f), _) => f.summary(),
            (None, Some(j)) => serde_json::from_slice(j).unwrap_or(Value::Null),
            (None, None) => Value::Null,
        }
    }

    /// Whether the answer's duration may have to be measured: a
    /// transcription or translation.
    pub fn has_audio_duration(&self) -> bool {
        matches!(
            self.endpoint,
            Endpoint::AudioTranscriptions | Endpoint::AudioTranslations
        )
    }

    /// Marks the record as a stream when the upload's form asked for one
    /// (a form field may come after the `model` the request was routed by).
    pub fn mark_stream(&self, r: &mut pb::RequestLog) {
        if let Some(f) = &self.form {
            r.stream |= form_streams(&f.summary());
        }
    }

    /// Logs an upload's form (fields, and files without their contents)
    /// as the request body; a JSON body was logged as it came.
    pub fn log_form(&self, encoded: &mut crate::logs::FieldWriter) {
        if let (Some(f), Some(cap)) = (&self.form, self.log_cap) {
            let summary = f.summary().to_string();
            super::record::log_request_body(encoded, summary.as_bytes(), cap);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(e: Endpoint, req: Value, resp: &str) -> Quantities {
        quantities(e, &req, Some(resp.as_bytes()))
    }

    #[test]
    fn each_endpoint_reads_its_quantities() {
        let s = q(Endpoint::AudioSpeech, json!({"input": "héllo"}), "RIFF....");
        assert_eq!((s.characters, s.tokens), (5, None));
        let s = q(
            Endpoint::AudioSpeech,
            json!({"input": "hi"}),
            "data: {\"type\":\"speech.audio.delta\",\"audio\":\"AAAA\"}\n\n\
             data: {\"type\":\"speech.audio.done\",\"usage\":{\"input_tokens\":4,\
             \"output_tokens\":90,\"total_tokens\":94}}\n\n",
        );
        assert_eq!(s.tokens.map(|u| (u.input, u.output)), Some((4, 90)));

        let t = q(
            Endpoint::AudioTranscriptions,
            json!({"model": "whisper-1"}),
            r#"{"text":"hi","duration":3.2505}"#,
        );
        assert_eq!((t.audio_ms, t.audio_source), (3251, AUDIO_REPORTED));
        let t = q(
            Endpoint::AudioTranslations,
            json!({}),
            r#"{"text":"hi","usage":{"type":"duration","seconds":7}}"#,
        );
        assert_eq!((t.audio_ms, t.tokens), (7000, None));
        assert_eq!(t.audio_source, AUDIO_REPORTED);
        let t = q(
            Endpoint::AudioTranscriptions,
            json!({}),
            r#"{"text":"hi","usage":{"type":"tokens","input_tokens":14,"output_tokens":45,
                "input_token_details":{"text_tokens":0,"audio_tokens":14},"total_tokens":59}}"#,
        );
        assert_eq!(t.tokens.map(|u| (u.input, u.output)), Some((14, 45)));
        assert_eq!((t.audio_ms, t.audio_source), (0, ""));
        // A streamed transcription: the usage of its last event.
        let t = q(
            Endpoint::AudioTranscriptions,
            json!({"stream": "true"}),
            "data: {\"type\":\"transcript.text.delta\",\"delta\":\"hi\"}\n\n\
             data: {\"type\":\"transcript.text.done\",\"text\":\"hi\",\"usage\":\
             {\"type\":\"tokens\",\"input_tokens\":3,\"output_tokens\":2}}\n\n",
        );
        assert_eq!(t.tokens.map(|u| (u.input, u.output)), Some((3, 2)));
        // A text answer says nothing.
        assert_eq!(
            q(Endpoint::AudioTranscriptions, json!({}), "hello"),
            Quantities::default()
        );

        let i = q(
            Endpoint::ImagesEdits,
            json!({"n": "2", "size": "1024x1024", "quality": "high"}),
            r#"{"data":[],"usage":{"input_tokens":50,"output_tokens":4160,"total_tokens":4210,
                "input_tokens_details":{"text_tokens":10,"image_tokens":40}}}"#,
        );
        assert_eq!(i.images, 2);
        assert_eq!(
            (i.image_size.as_str(), i.image_quality.as_str()),
            ("1024x1024", "high")
        );
        assert_eq!(i.tokens.map(|u| (u.input, u.output)), Some((50, 4160)));
        let i = q(
            Endpoint::ImagesGenerations,
            json!({"n": 3}),
            r#"{"data":[]}"#,
        );
        assert_eq!((i.images, i.tokens), (3, None));
        let i = q(Endpoint::ImagesVariations, json!({}), "");
        assert_eq!(i.images, 1);
    }

    #[test]
    fn a_form_streams_when_it_says_true() {
        for (v, want) in [
            ("true", true),
            ("True", true),
            (" 1", true),
            ("false", false),
            ("", false),
        ] {
            assert_eq!(form_streams(&json!({ "stream": v })), want, "{v:?}");
        }
        // A JSON body's boolean is the head's business, not the form's.
        assert!(!form_streams(&json!({ "stream": true })));
        assert!(!form_streams(&json!({})));
    }

    #[test]
    fn the_usage_of_a_large_answer_is_found_in_its_tail() {
        let tail = br#"AAAA+/=="}],"revised":"say \"usage\": {}","usage":{"input_tokens":5,"output_tokens":7},"size":"1x1"}"#;
        let found = usage_of_tail(tail).unwrap();
        let i = q(
            Endpoint::ImagesGenerations,
            json!({}),
            std::str::from_utf8(&found).unwrap(),
        );
        assert_eq!(i.tokens.map(|u| (u.input, u.output)), Some((5, 7)));
        assert_eq!(usage_of_tail(br#"AAAA"}],"size":"1x1"}"#), None);
        assert_eq!(usage_of_tail(br#""usage":{"input_tok"#), None);
    }
}
