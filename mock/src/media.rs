//! OpenAI's audio and image endpoints, as the mock serves them.
//!
//! - `POST /v1/audio/speech` (JSON): audio bytes streamed in `chunks`
//!   chunks of [`SPEECH_CHUNK_BYTES`] bytes, chunk `i` all bytes `i % 251`,
//!   each after `chunk_delay_ms`; content type by `response_format` (`mp3`,
//!   the default: `audio/mpeg`; `wav`, `opus`, `aac`, `flac`, `pcm`).
//! - `POST /v1/audio/transcriptions` and `/v1/audio/translations`
//!   (multipart): `response_format` `json` (the default) `{"text",
//!   "usage"}`, `verbose_json` with `duration` (seconds of the uploaded
//!   WAV, else 1.0), `text`, `srt` or `vtt` (text, no duration or usage,
//!   as OpenAI answers; one cue to the audio's end); a gpt-4o model's
//!   transcription with `stream=true`: server-sent events
//!   `transcript.text.delta` (a word each) and `transcript.text.done`
//!   with the usage. Usage: for a model
//!   whose name contains `gpt-4o`, gpt-4o-transcribe's `{"type":"tokens",
//!   input_tokens, output_tokens, input_token_details, total_tokens}`
//!   (input tokens: the file's size / 1000, at least 1; output: the
//!   words of the text); for others whisper-1's `{"type":"duration",
//!   "seconds"}` (the duration rounded up). `no_usage` drops it.
//! - `POST /v1/images/generations` (JSON), `/v1/images/edits` and
//!   `/v1/images/variations` (multipart): `n` images (1 by default), each
//!   `{"b64_json": <a 1x1 PNG>}` (or a `url` with `response_format: url`),
//!   and for a model whose name contains `gpt-image` gpt-image-1's usage
//!   (`input_tokens`: the prompt's words + 10 per uploaded image,
//!   `output_tokens`: 272 per image).
//!
//! The journal keeps each body byte for byte, multipart included; its
//! `model` is the JSON body's or the form's `model` field. Faults as for
//! every endpoint (`server::before_answer`, `server::injected_error`):
//! `status`, `latency_ms`, `hang`, `reset_before_first_byte`, and the
//! model's script; and `x-mock-read-delay-ms: MS` (a header only: the
//! model is in the body), a wait before the body is read, so that an
//! upload backs up in the socket buffers like one to a slow upstream.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::{Bytes, Frame, Incoming};
use serde_json::{json, Value};
use tokio::time::Sleep;

use crate::behavior::Step;
use crate::record::RequestGuard;
use crate::render::Dialect;
use crate::server::{self, ResponseBody, State};
use crate::BoxError;

/// The header that delays reading a request's body by its milliseconds.
pub const READ_DELAY_HEADER: &str = "x-mock-read-delay-ms";

/// Bytes of each streamed speech chunk.
pub const SPEECH_CHUNK_BYTES: usize = 4096;

/// A 1x1 transparent PNG.
pub const TINY_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0d, 0x0a, 0x2d, 0xb4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae,
    0x42, 0x60, 0x82,
];

/// The audio and image endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Speech,
    Transcriptions,
    Translations,
    ImageGenerations,
    ImageEdits,
    ImageVariations,
}

impl Media {
    /// The endpoint of a path after `/v1`.
    pub fn of_path(path: &str) -> Option<Media> {
        Some(match path {
            "/audio/speech" => Media::Speech,
            "/audio/transcriptions" => Media::Transcriptions,
            "/audio/translations" => Media::Translations,
            "/images/generations" => Media::ImageGenerations,
            "/images/edits" => Media::ImageEdits,
            "/images/variations" => Media::ImageVariations,
            _ => return None,
        })
    }

    fn multipart(self) -> bool {
        matches!(
            self,
            Media::Transcriptions
                | Media::Translations
                | Media::ImageEdits
                | Media::ImageVariations
        )
    }
}

/// One part of a form.
struct Part {
    name: String,
    filename: Option<String>,
    value: Bytes,
}

/// The parts of a whole multipart body (the mock reads its bodies whole).
fn parts(content_type: &str, body: &Bytes) -> Vec<Part> {
    let Some(boundary) = content_type.split(';').find_map(|p| {
        let p = p.trim();
        let v = p.strip_prefix("boundary=")?;
        Some(v.trim_matches('"').to_owned())
    }) else {
        return Vec::new();
    };
    let delimiter = format!("--{boundary}");
    let mut out = Vec::new();
    let text = body.as_ref();
    let find = |from: usize, pat: &[u8]| -> Option<usize> {
        text.get(from..)?
            .windows(pat.len())
            .position(|w| w == pat)
            .map(|i| i + from)
    };
    let Some(mut at) = find(0, delimiter.as_bytes()) else {
        return out;
    };
    let next_delimiter = format!("\r\n--{boundary}");
    loop {
        at += delimiter.len();
        if text.get(at..at + 2) == Some(b"--") {
            break;
        }
        let Some(headers_end) = find(at, b"\r\n\r\n") else {
            break;
        };
        let headers = String::from_utf8_lossy(&text[at..headers_end]).into_owned();
        let start = headers_end + 4;
        let Some(end) = find(start, next_delimiter.as_bytes()) else {
            break;
        };
        let mut name = String::new();
        let mut filename = None;
        for line in headers.split("\r\n") {
            if !line.to_ascii_lowercase().starts_with("content-disposition") {
                continue;
            }
            for param in line.split(';').skip(1) {
                let Some((k, v)) = param.trim().split_once('=') else {
                    continue;
                };
                let v = v.trim_matches('"').to_owned();
                match k {
                    "name" => name = v,
                    "filename" => filename = Some(v),
                    _ => {}
                }
            }
        }
        out.push(Part {
            name,
            filename,
            value: body.slice(start..end),
        });
        at = end + 2;
    }
    out
}

/// The request's fields: a JSON body's members, or a form's non-file
/// fields (as strings) and its files.
struct Fields {
    json: Value,
    files: Vec<Bytes>,
}

impl Fields {
    fn str(&self, name: &str) -> Option<&str> {
        self.json.get(name).and_then(Value::as_str)
    }

    fn n(&self) -> u64 {
        match self.json.get("n") {
            Some(Value::Number(n)) => n.as_u64().unwrap_or(1),
            Some(Value::String(s)) => s.parse().unwrap_or(1),
            _ => 1,
        }
    }
}

fn fields(kind: Media, content_type: &str, body: &Bytes) -> Fields {
    if !kind.multipart() {
        return Fields {
            json: serde_json::from_slice(body).unwrap_or(Value::Null),
            files: Vec::new(),
        };
    }
    let mut json = serde_json::Map::new();
    let mut files = Vec::new();
    for p in parts(content_type, body) {
        if p.filename.is_some() {
            files.push(p.value);
        } else if !json.contains_key(&p.name) {
            json.insert(
                p.name,
                Value::String(String::from_utf8_lossy(&p.value).into_owned()),
            );
        }
    }
    Fields {
        json: Value::Object(json),
        files,
    }
}

/// Seconds of audio in a WAV file (its data size over its byte rate).
fn wav_seconds(file: &[u8]) -> Option<f64> {
    if file.len() < 44 || &file[..4] != b"RIFF" || &file[8..12] != b"WAVE" {
        return None;
    }
    let mut at = 12;
    let mut byte_rate = None;
    while at + 8 <= file.len() {
        let id = &file[at..at + 4];
        let size = u32::from_le_bytes(file[at + 4..at + 8].try_into().ok()?) as usize;
        let body = at + 8;
        if id == b"fmt " && body + 12 <= file.len() {
            byte_rate = Some(u32::from_le_bytes(
                file[body + 8..body + 12].try_into().ok()?,
            ));
        }
        if id == b"data" {
            let rate = f64::from(byte_rate.filter(|r| *r > 0)?);
            return Some(size.min(file.len() - body) as f64 / rate);
        }
        at = body + size + (size & 1);
    }
    None
}

pub(crate) async fn handle(
    state: &State,
    kind: Media,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, BoxError> {
    let received_at = SystemTime::now();
    let (seq, guard) = state.recorder.begin();
    let (parts, body) = req.into_parts();
    // A slow upstream: the request's bytes wait in the socket buffers.
    if let Some(ms) = parts
        .headers
        .get(READ_DELAY_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let body = body.collect().await?.to_bytes();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let f = fields(kind, &content_type, &body);
    let model = f.str("model").map(str::to_owned);
    let from_headers = Step::from_headers(&parts.headers);
    let stream = f.str("stream") == Some("true");
    server::journal(state, seq, parts, body, model.clone(), stream, received_at);
    let b = server::behavior(state, model.as_deref(), from_headers);
    let guard = server::before_answer(&b, guard).await?;
    if let Some(resp) = server::injected_error(&b, Dialect::OpenAi) {
        guard.complete();
        return Ok(resp);
    }
    let Some(model) = model else {
        guard.complete();
        return Ok(server::error(
            Dialect::OpenAi,
            400,
            "llmgw-mock: the request has no 'model'",
            None,
        ));
    };
    let status = StatusCode::from_u16(b.status).unwrap_or(StatusCode::OK);
    if kind == Media::Speech {
        let content_type = match f.str("response_format").unwrap_or("mp3") {
            "wav" => "audio/wav",
            "opus" => "audio/opus",
            "aac" => "audio/aac",
            "flac" => "audio/flac",
            "pcm" => "audio/pcm",
            _ => "audio/mpeg",
        };
        let body = SpeechBody {
            next: 0,
            total: b.chunks,
            delay: b.chunk_delay,
            sleep: None,
            guard: Some(guard),
        };
        let mut resp = Response::new(UnsyncBoxBody::new(body));
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        return Ok(resp);
    }
    let created = server::unix_seconds(received_at);
    let (body, content_type) = match kind {
        Media::Transcriptions | Media::Translations => {
            transcript(kind, &model, &f, created, !b.no_usage)
        }
        _ => (images(&model, &f, created, !b.no_usage), "application/json"),
    };
    guard.complete();
    Ok(server::whole(status, content_type, Bytes::from(body)))
}

/// A transcription or translation, and its content type, as OpenAI
/// answers it: `text`, `srt` and `vtt` as text with no duration or usage,
/// their cue ending at the audio's end; `json` and `verbose_json` with
/// their usage; a gpt-4o model's `stream=true` as server-sent events.
fn transcript(
    kind: Media,
    model: &str,
    f: &Fields,
    _created: u64,
    usage: bool,
) -> (String, &'static str) {
    let text = if kind == Media::Translations {
        "mock translation of the audio"
    } else {
        "mock transcript of the audio"
    };
    let file = f.files.first().cloned().unwrap_or_default();
    let seconds = wav_seconds(&file).unwrap_or(1.0);
    let tokens = model.contains("gpt-4o");
    let usage = usage.then(|| {
        if tokens {
            let input = (file.len() as u64 / 1000).max(1);
            let output = text.split_whitespace().count() as u64;
            json!({"type": "tokens", "input_tokens": input, "output_tokens": output,
                "input_token_details": {"text_tokens": 0, "audio_tokens": input},
                "total_tokens": input + output})
        } else {
            json!({"type": "duration", "seconds": seconds.ceil() as u64})
        }
    });
    if tokens && kind == Media::Transcriptions && f.str("stream") == Some("true") {
        let mut events = String::new();
        for word in text.split_inclusive(' ') {
            let delta = json!({"type": "transcript.text.delta", "delta": word});
            events.push_str(&format!("data: {delta}\n\n"));
        }
        let mut done = json!({"type": "transcript.text.done", "text": text});
        if let (Some(u), Some(o)) = (usage, done.as_object_mut()) {
            o.insert("usage".into(), u);
        }
        events.push_str(&format!("data: {done}\n\n"));
        return (events, "text/event-stream");
    }
    let plain = "text/plain; charset=utf-8";
    match f.str("response_format").unwrap_or("json") {
        "text" => (format!("{text}\n"), plain),
        "srt" => (
            format!("1\n00:00:00,000 --> {}\n{text}\n\n", cue_time(seconds, ',')),
            plain,
        ),
        "vtt" => (
            format!(
                "WEBVTT\n\n00:00:00.000 --> {}\n{text}\n\n",
                cue_time(seconds, '.')
            ),
            plain,
        ),
        "verbose_json" => {
            let mut v = json!({
                "task": if kind == Media::Translations { "translate" } else { "transcribe" },
                "language": "english",
                "duration": seconds,
                "text": text,
                "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": seconds, "text": text,
                    "tokens": [1, 2, 3], "temperature": 0.0, "avg_logprob": -0.1,
                    "compression_ratio": 1.0, "no_speech_prob": 0.0}],
            });
            if let (Some(u), Some(o)) = (usage, v.as_object_mut()) {
                o.insert("usage".into(), u);
            }
            (v.to_string(), "application/json")
        }
        _ => {
            let mut v = json!({ "text": text });
            if let (Some(u), Some(o)) = (usage, v.as_object_mut()) {
                o.insert("usage".into(), u);
            }
            (v.to_string(), "application/json")
        }
    }
}

/// A subtitle cue's time, `HH:MM:SS,mmm` (SRT) or `HH:MM:SS.mmm` (WebVTT).
fn cue_time(seconds: f64, mark: char) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{mark}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

fn images(model: &str, f: &Fields, created: u64, usage: bool) -> String {
    let n = f.n().clamp(1, 10);
    let url = f.str("response_format") == Some("url");
    let png = base64::engine::general_purpose::STANDARD.encode(TINY_PNG);
    let data: Vec<Value> = (0..n)
        .map(|i| {
            if url {
                json!({"url": format!("https://mock.invalid/image-{i}.png")})
            } else {
                json!({"b64_json": png})
            }
        })
        .collect();
    let mut v = json!({ "created": created, "data": data });
    if usage && model.contains("gpt-image") {
        let words = f
            .str("prompt")
            .map_or(0, |p| p.split_whitespace().count() as u64);
        let image_tokens = 10 * f.files.len() as u64;
        let input = words + image_tokens;
        let output = 272 * n;
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "usage".into(),
                json!({"input_tokens": input, "output_tokens": output,
                    "total_tokens": input + output,
                    "input_tokens_details": {"text_tokens": words, "image_tokens": image_tokens}}),
            );
        }
    }
    v.to_string()
}

/// Speech audio, one chunk per frame after each delay.
struct SpeechBody {
    next: u32,
    total: u32,
    delay: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    guard: Option<RequestGuard>,
}

impl hyper::body::Body for SpeechBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.next >= self.total {
            if let Some(g) = self.guard.take() {
                g.complete();
            }
            return Poll::Ready(None);
        }
        if !self.delay.is_zero() {
            let delay = self.delay;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
        let i = self.next;
        self.next += 1;
        let chunk = vec![(i % 251) as u8; SPEECH_CHUNK_BYTES];
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_read() {
        let body = Bytes::from_static(
            b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n\
              --b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\
              Content-Type: audio/wav\r\n\r\nRIFF\r\n--b--\r\n",
        );
        let f = fields(
            Media::Transcriptions,
            "multipart/form-data; boundary=b",
            &body,
        );
        assert_eq!(f.str("model"), Some("whisper-1"));
        assert_eq!(f.files, vec![Bytes::from_static(b"RIFF")]);
    }

    #[test]
    fn subtitles_end_at_the_audio_end() {
        assert_eq!(cue_time(1.5, ','), "00:00:01,500");
        assert_eq!(cue_time(3723.004, '.'), "01:02:03.004");
        let f = Fields {
            json: json!({"response_format": "srt"}),
            files: Vec::new(),
        };
        let (body, content_type) = transcript(Media::Transcriptions, "whisper-1", &f, 0, true);
        assert_eq!(content_type, "text/plain; charset=utf-8");
        assert!(body.contains("00:00:00,000 --> 00:00:01,000\n"), "{body}");
        // A gpt-4o stream: deltas, then the text and its usage.
        let f = Fields {
            json: json!({"stream": "true"}),
            files: vec![Bytes::from_static(&[0; 3000])],
        };
        let (body, content_type) =
            transcript(Media::Transcriptions, "gpt-4o-transcribe", &f, 0, true);
        assert_eq!(content_type, "text/event-stream");
        assert!(
            body.starts_with("data: {\"delta\":\"mock \",\"type\":\"transcript.text.delta\"}"),
            "{body}"
        );
        assert!(body.contains("\"type\":\"transcript.text.done\""), "{body}");
        assert!(body.contains("\"input_tokens\":3"), "{body}");
    }

    #[test]
    fn wav_duration() {
        let mut wav = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        wav.extend_from_slice(&16u32.to_le_bytes());
        wav.extend_from_slice(&1u16.to_le_bytes());
        wav.extend_from_slice(&1u16.to_le_bytes());
        wav.extend_from_slice(&8000u32.to_le_bytes());
        wav.extend_from_slice(&16000u32.to_le_bytes());
        wav.extend_from_slice(&2u16.to_le_bytes());
        wav.extend_from_slice(&16u16.to_le_bytes());
        wav.extend_from_slice(b"data");
        wav.extend_from_slice(&8000u32.to_le_bytes());
        wav.extend(std::iter::repeat_n(0u8, 8000));
        assert_eq!(wav_seconds(&wav), Some(0.5));
    }
}
