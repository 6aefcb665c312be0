//! The framing of a `multipart/form-data` upload (RFC 7578 over RFC 2046's
//! boundaries), read as it streams: where the `model` part's value starts
//! and ends (the one range the gateway rewrites), the form's other fields
//! (capped, for the log and the rules) and each file part's name, content
//! type and size (never its contents).
//!
//! The parser only looks: it is fed the client's chunks, split anywhere,
//! and reports absolute offsets into the body; every byte goes upstream
//! from the upload's tee ([`super::upload`]) as it was received. It holds
//! at most a part's headers (16 KiB) or a delimiter's length of lookahead.

use memchr::memmem;
use serde_json::{Map, Value};

/// Longest header block of one part.
const MAX_PART_HEADERS: usize = 16 * 1024;
/// Longest `model` value.
const MAX_MODEL_BYTES: usize = 1024;
/// Bytes of one non-file field kept for the log.
const MAX_FIELD_BYTES: usize = 4 * 1024;
/// Bytes of all non-file fields kept for the log.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// Fields and files listed in the log.
const MAX_PARTS_LISTED: usize = 256;

/// The boundary of a `multipart/form-data` content type, quoted or not.
pub fn boundary(content_type: &str) -> Result<String, String> {
    let mut params = content_type.split(';');
    let mime = params.next().unwrap_or_default().trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return Err(format!(
            "this endpoint takes a multipart/form-data body, not '{}'",
            mime.chars().take(100).collect::<String>()
        ));
    }
    // Parameters may hold quoted ';': read them one by one. A boundary
    // given twice is refused: parsers disagree on which one counts, and
    // the gateway must read the body as the upstream will.
    let mut found: Option<String> = None;
    let mut rest = content_type[content_type.find(';').unwrap_or(content_type.len())..].trim();
    while let Some(r) = rest.strip_prefix(';') {
        let r = r.trim_start();
        let Some(eq) = r.find('=') else { break };
        let name = r[..eq].trim();
        let after = r[eq + 1..].trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            v.push(e);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => v.push(c),
                }
            }
            let Some(end) = end else {
                return Err("the content type's boundary has no closing quote".into());
            };
            (v, q[end..].trim_start())
        } else {
            let end = after.find(';').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        if name.eq_ignore_ascii_case("boundary") {
            if value.is_empty() || value.len() > 70 {
                return Err("the multipart boundary must be 1 to 70 characters".into());
            }
            if found.is_some() {
                return Err("the multipart/form-data content type names two boundaries".into());
            }
            found = Some(value);
        }
        rest = next;
    }
    found.ok_or_else(|| "the multipart/form-data content type has no boundary".into())
}

/// A file part, as the log describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub field: String,
    pub filename: String,
    pub content_type: String,
    /// Where its contents start in the body, and their length.
    pub start: u64,
    pub size: u64,
}

/// Where the `model` part's value is in the body, and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPart {
    pub start: u64,
    pub end: u64,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first delimiter (`--boundary`, at the very start or
    /// after a CRLF).
    Preamble,
    /// Right after a delimiter: `--` closes the body, else the rest of the
    /// line (optional spaces) and the part's headers follow.
    AfterDelimiter,
    Headers,
    Body,
    /// After the closing delimiter: the epilogue, ignored.
    Done,
}

/// The part being read.
#[derive(Debug, Default)]
struct Part {
    name: String,
    filename: Option<String>,
    content_type: String,
    start: u64,
    size: u64,
    /// The value kept (up to a cap) of a field that is not a file.
    value: Vec<u8>,
    value_cut: bool,
}

/// A streaming reader of one upload's framing.
#[derive(Debug)]
pub struct Parser {
    /// `\r\n--boundary`.
    delimiter: Vec<u8>,
    state: State,
    /// Bytes fed but not yet consumed; `base` is the offset of the first.
    buf: Vec<u8>,
    base: u64,
    part: Option<Part>,
    model: Option<ModelPart>,
    /// A part named `model` has begun (a second is refused).
    model_seen: bool,
    fields: Vec<(String, String)>,
    files: Vec<FileInfo>,
    form_bytes: usize,
    /// Parts not listed (past [`MAX_PARTS_LISTED`]).
    unlisted: usize,
}

impl Parser {
    pub fn new(boundary: &str) -> Parser {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        Parser {
            delimiter,
            state: State::Preamble,
            buf: Vec::new(),
            base: 0,
            part: None,
            model: None,
            model_seen: false,
            fields: Vec::new(),
            files: Vec::new(),
            form_bytes: 0,
            unlisted: 0,
        }
    }

    /// The `model` part, once its value has ended.
    pub fn model(&self) -> Option<&ModelPart> {
        self.model.as_ref()
    }

    /// Reads the next bytes of the body.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), String> {
        if self.state == State::Done {
            self.base += chunk.len() as u64;
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.extend_from_slice(chunk);
        let mut at = 0;
        let result = loop {
            if self.state == State::Done {
                at = buf.len();
                break Ok(());
            }
            match self.step(&buf[at..], self.base + at as u64) {
                Ok(0) => break Ok(()),
                Ok(n) => at += n,
                Err(e) => break Err(e),
            }
        };
        buf.drain(..at);
        self.base += at as u64;
        self.buf = buf;
        result
    }

    /// The body has ended: it must have been closed.
    pub fn finish(&self) -> Result<(), String> {
        if self.state == State::Done {
            Ok(())
        } else {
            Err("the multipart body ends before its closing boundary".into())
        }
    }

    /// Consumes what it can from the start of `buf` (unconsumed bytes
    /// from offset `offset` of the body); returns how much, 0 when it
    /// needs more.
    fn step(&mut self, buf: &[u8], offset: u64) -> Result<usize, String> {
        let d = self.delimiter.len();
        match self.state {
            State::Done => Ok(0),
            State::Preamble => {
                // The first delimiter may open the body without a CRLF.
                let bare = &self.delimiter[2..];
                if offset == 0 {
                    if buf.len() < bare.len() {
                        return if bare.starts_with(buf) {
                            Ok(0)
                        } else {
                            self.skip_preamble(buf)
                        };
                    }
                    if buf.starts_with(bare) {
                        self.state = State::AfterDelimiter;
                        return Ok(bare.len());
                    }
                }
                self.skip_preamble(buf)
            }
            State::AfterDelimiter => {
                if buf.len() < 2 {
                    return Ok(0);
                }
                if buf.starts_with(b"--") {
                    self.state = State::Done;
                    return Ok(buf.len());
                }
                let Some(eol) = memmem::find(buf, b"\r\n") else {
                    if buf.len() > 256 || buf.iter().any(|b| !matches!(b, b' ' | b'\t' | b'\r')) {
                        return Err("a multipart boundary line has text after it".into());
                    }
                    return Ok(0);
                };
                if buf[..eol].iter().any(|b| !matches!(b, b' ' | b'\t')) {
                    return Err("a multipart boundary line has text after it".into());
                }
                self.state = State::Headers;
                Ok(eol + 2)
            }
            State::Headers => {
                let (block, used) = if buf.starts_with(b"\r\n") {
                    (&buf[..0], 2)
                } else {
                    match memmem::find(buf, b"\r\n\r\n") {
                        Some(end) => (&buf[..end], end + 4),
                        None if buf.len() > MAX_PART_HEADERS => {
                            return Err("a multipart part's headers are too long".into())
                        }
                        None => return Ok(0),
                    }
                };
                let mut part = part_of_headers(block)?;
                // One `model`, and not a file: the gateway routes, checks
                // the key and bills by the value it replaces, and an
                // upstream that read another `model` (many take a repeated
                // field's last value) would run a model the key may not use.
                if part.name == "model" {
                    if self.model_seen {
                        return Err("the form has more than one 'model' part".into());
                    }
                    if part.filename.is_some() {
                        return Err("the 'model' part is a file".into());
                    }
                    self.model_seen = true;
                }
                part.start = offset + used as u64;
                self.part = Some(part);
                self.state = State::Body;
                Ok(used)
            }
            State::Body => match memmem::find(buf, &self.delimiter) {
                Some(end) => {
                    self.content(&buf[..end])?;
                    self.end_part(offset + end as u64)?;
                    self.state = State::AfterDelimiter;
                    Ok(end + d)
                }
                None => {
                    // Keep what could be the start of a delimiter.
                    let safe = buf.len().saturating_sub(d - 1);
                    self.content(&buf[..safe])?;
                    Ok(safe)
                }
            },
        }
    }

    fn skip_preamble(&mut self, buf: &[u8]) -> Result<usize, String> {
        match memmem::find(buf, &self.delimiter) {
            Some(at) => {
                self.state = State::AfterDelimiter;
                Ok(at + self.delimiter.len())
            }
            None => Ok(buf.len().saturating_sub(self.delimiter.len() - 1)),
        }
    }

    fn content(&mut self, bytes: &[u8]) -> Result<(), String> {
        let Some(part) = self.part.as_mut() else {
            return Ok(());
        };
        part.size += bytes.len() as u64;
        if part.filename.is_none() {
            let cap = if part.name == "model" && self.model.is_none() {
                MAX_MODEL_BYTES
            } else {
                MAX_FIELD_BYTES
            };
            let room = cap.saturating_sub(part.value.len());
            if bytes.len() > room {
                part.value_cut = true;
            }
            part.value
                .extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        Ok(())
    }

    fn end_part(&mut self, end: u64) -> Result<(), String> {
        let Some(part) = self.part.take() else {
            return Ok(());
        };
        if part.filename.is_none() && part.name == "model" && self.model.is_none() {
            if part.value_cut {
                return Err(format!(
                    "the 'model' part is longer than {MAX_MODEL_BYTES} bytes"
                ));
            }
            let value = String::from_utf8(part.value.clone())
                .map_err(|_| "the 'model' part is not UTF-8".to_string())?;
            self.model = Some(ModelPart {
                start: part.start,
                end,
                value,
            });
        }
        if self.fields.len() + self.files.len() >= MAX_PARTS_LISTED {
            self.unlisted += 1;
            return Ok(());
        }
        match part.filename {
            Some(filename) => self.files.push(FileInfo {
                field: part.name,
                filename,
                content_type: part.content_type,
                start: part.start,
                size: part.size,
            }),
            None => {
                let room = MAX_FORM_BYTES.saturating_sub(self.form_bytes);
                let mut value = String::from_utf8_lossy(&part.value).into_owned();
                if value.len() > room {
                    let mut cut = room;
                    while !value.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    value.truncate(cut);
                }
                if part.value_cut || part.size > value.len() as u64 {
                    value.push('…');
                }
                self.form_bytes += value.len();
                self.fields.push((part.name, value));
            }
        }
        Ok(())
    }

    /// The file part named `field`, else the first file part.
    pub fn file_part(&self, field: &str) -> Option<&FileInfo> {
        self.files
            .iter()
            .find(|f| f.field == field)
            .or_else(|| self.files.first())
    }

    /// The form as the log and the rules see it: each field's value as a
    /// string (capped), each file as `{filename, content_type, bytes}`.
    /// A name given twice keeps its first value.
    pub fn summary(&self) -> Value {
        let mut m = Map::new();
        for (name, value) in &self.fields {
            if !m.contains_key(name) {
                m.insert(name.clone(), Value::String(value.clone()));
            }
        }
        for f in &self.files {
            if !m.contains_key(&f.field) {
                m.insert(
                    f.field.clone(),
                    serde_json::json!({
                        "filename": f.filename,
                        "content_type": f.content_type,
                        "bytes": f.size,
                    }),
                );
            }
        }
        if self.unlisted > 0 {
            m.insert("…unlisted_parts".into(), Value::from(self.unlisted));
        }
        Value::Object(m)
    }
}

/// A part's name, filename and content type, from its header block.
fn part_of_headers(block: &[u8]) -> Result<Part, String> {
    let text = String::from_utf8_lossy(block);
    let mut part = Part::default();
    let mut named = false;
    let mut dispositions = 0;
    for line in text.split("\r\n") {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-disposition") {
            dispositions += 1;
            if dispositions > 1 {
                return Err("a multipart part has two content-disposition headers".into());
            }
            let (n, f) = disposition(value.trim())?;
            if let Some(n) = n {
                part.name = n;
                named = true;
            }
            part.filename = f;
        } else if name.eq_ignore_ascii_case("content-type") {
            part.content_type = value.trim().chars().take(256).collect();
        }
    }
    if !named {
        return Err("a multipart part has no content-disposition name".into());
    }
    Ok(part)
}

/// The `name` and `filename` parameters of `form-data; name="x";
/// filename="y"` (quoted or not; `filename*` counts as a filename). A
/// parameter given twice is refused: parsers disagree on which counts.
fn disposition(v: &str) -> Result<(Option<String>, Option<String>), String> {
    let mut name = None;
    let mut filename = None;
    let mut rest = match v.find(';') {
        Some(i) => &v[i..],
        None => "",
    };
    while let Some(r) = rest.strip_prefix(';') {
        let r = r.trim_start();
        let Some(eq) = r.find('=') else { break };
        let key = r[..eq].trim().to_ascii_lowercase();
        let after = r[eq + 1..].trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let mut out = String::new();
            let mut end = q.len();
            let mut chars = q.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            out.push(e);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => out.push(c),
                }
            }
            (out, q.get(end..).unwrap_or("").trim_start())
        } else {
            let end = after.find(';').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        let slot = match key.as_str() {
            "name" => &mut name,
            "filename" | "filename*" => &mut filename,
            _ => {
                rest = next;
                continue;
            }
        };
        if slot.is_some() {
            return Err(format!(
                "a multipart part's content-disposition gives '{}' twice",
                if key == "name" { "name" } else { "filename" }
            ));
        }
        *slot = Some(if key == "name" {
            value
        } else {
            value.chars().take(256).collect()
        });
        rest = next;
    }
    Ok((name, filename))
}

/// The body with the `model` part's value replaced by `model`: what an
/// upstream receives (used by the tests; the proxy streams the same from
/// the tee).
#[cfg(test)]
pub fn rewritten(body: &[u8], part: &ModelPart, model: &str) -> Vec<u8> {
    let (s, e) = (part.start as usize, part.end as usize);
    let mut out = body[..s].to_vec();
    out.extend_from_slice(model.as_bytes());
    out.extend_from_slice(&body[e..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut b = Vec::new();
        for (name, filename, value) in parts {
            b.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            match filename {
                Some(f) => b.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                         Content-Type: audio/wav\r\n\r\n"
                    )
                    .as_bytes(),
                ),
                None => b.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                ),
            }
            b.extend_from_slice(value);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        b
    }

    /// Feeds `body` in pieces cut at `cuts`.
    fn parse_cut(boundary: &str, body: &[u8], cuts: &[usize]) -> Result<Parser, String> {
        let mut p = Parser::new(boundary);
        let mut at = 0;
        for &c in cuts {
            p.feed(&body[at..c])?;
            at = c;
        }
        p.feed(&body[at..])?;
        p.finish()?;
        Ok(p)
    }

    #[test]
    fn boundaries_are_read_quoted_or_not() {
        assert_eq!(
            boundary("multipart/form-data; boundary=abc123").as_deref(),
            Ok("abc123")
        );
        assert_eq!(
            boundary("Multipart/Form-Data;charset=utf-8; boundary=\"a b;c\\\"d\"").as_deref(),
            Ok("a b;c\"d")
        );
        assert!(boundary("application/json").is_err());
        assert!(boundary("multipart/form-data").is_err());
        assert!(boundary("multipart/form-data; boundary=\"open").is_err());
        assert!(boundary(&format!("multipart/form-data; boundary={}", "x".repeat(71))).is_err());
    }

    #[test]
    fn the_model_is_found_at_every_split() {
        let wav: Vec<u8> = (0..=255u8).cycle().take(700).collect();
        for b in ["XyZ", "----WebKitFormBoundary7MA4YWxkTrZu0gW", "a b"] {
            let with = |model: &[u8]| {
                form(
                    b,
                    &[
                        ("file", Some("a.wav"), &wav),
                        ("model", None, model),
                        ("language", None, b"en"),
                    ],
                )
            };
            let body = with(b"whisper-1");
            let want = with(b"up-model");
            for cut in 0..=body.len() {
                let p = parse_cut(b, &body, &[cut]).unwrap();
                let m = p.model().unwrap();
                assert_eq!(m.value, "whisper-1", "cut at {cut}");
                assert_eq!(rewritten(&body, m, "up-model"), want);
                assert_eq!(p.files[0].size, 700);
                let f = p.file_part("file").unwrap();
                assert_eq!(&body[f.start as usize..][..700], &wav[..], "cut at {cut}");
                assert_eq!(p.files[0].filename, "a.wav");
                assert_eq!(p.files[0].content_type, "audio/wav");
                assert_eq!(p.summary()["language"], "en");
                assert_eq!(p.summary()["file"]["bytes"], 700);
            }
            // Byte by byte.
            let cuts: Vec<usize> = (1..body.len()).collect();
            let p = parse_cut(b, &body, &cuts).unwrap();
            assert_eq!(p.model().unwrap().value, "whisper-1");
        }
    }

    #[test]
    fn crlf_edge_cases() {
        // A value with CRLFs and a near-delimiter inside, a preamble, an
        // epilogue, an empty value and padding after the boundary.
        let body = b"preamble\r\n--B  \r\nContent-Disposition: form-data; name=prompt\r\n\r\n\
                     a\r\n--Bx is not it\r\n\r\n--B\r\n\
                     content-disposition: form-data; name=\"model\"\r\n\r\n\
                     m\r\n--B\r\nContent-Disposition: form-data; name=\"empty\"\r\n\r\n\
                     \r\n--B--\r\nepilogue\r\n--B\r\n";
        // "--Bx" in a value is a delimiter followed by text: refused.
        assert!(parse_cut("B", body, &[]).is_err());
        let body = b"preamble\r\n--B  \r\nContent-Disposition: form-data; name=prompt\r\n\r\n\
                     a\r\n-B\r\n\r\n\r\n--B\r\n\
                     content-disposition: form-data; name=\"model\"\r\n\r\n\
                     m\r\n--B\r\nContent-Disposition: form-data; name=\"empty\"\r\n\r\n\
                     \r\n--B--\r\nepilogue\r\n--B\r\n";
        for cut in 0..=body.len() {
            let p = parse_cut("B", body, &[cut]).unwrap();
            assert_eq!(p.model().unwrap().value, "m");
            let s = p.summary();
            assert_eq!(s["prompt"], "a\r\n-B\r\n\r\n");
            assert_eq!(s["empty"], "");
        }
    }

    #[test]
    fn a_missing_model_or_an_unclosed_body_is_seen() {
        let body = form("b", &[("file", Some("x.png"), b"PNG"), ("n", None, b"2")]);
        let p = parse_cut("b", &body, &[]).unwrap();
        assert!(p.model().is_none());
        assert_eq!(p.summary()["n"], "2");
        let cut = &body[..body.len() - 4];
        let mut p = Parser::new("b");
        p.feed(cut).unwrap();
        assert!(p.finish().is_err());
        // Headers with no name.
        let mut p = Parser::new("b");
        assert!(p.feed(b"--b\r\nContent-Type: x\r\n\r\nv\r\n--b--").is_err());
        // A model value far too long.
        let long = "m".repeat(MAX_MODEL_BYTES + 1);
        let body = form("b", &[("model", None, long.as_bytes())]);
        assert!(parse_cut("b", &body, &[]).is_err());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Bytes that cannot hold the delimiter: the boundary has a
        /// character (`=`) they never use.
        fn content() -> impl Strategy<Value = Vec<u8>> {
            prop::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'-'), any::<u8>()]
                    .prop_filter("no '='", |b| *b != b'='),
                0..300,
            )
        }

        proptest! {
            /// A longer run: `PROPTEST_CASES=20000 cargo test -p
            /// llmgw-dataplane --lib multipart::tests::props`.
            #[test]
            fn the_rewrite_does_not_depend_on_chunks_or_contents(
                before in content(),
                after in content(),
                model in "[a-z0-9.:-]{1,40}",
                model_first in any::<bool>(),
                cuts in prop::collection::vec(any::<usize>(), 0..8),
            ) {
                let b = "b=1";
                let with = |m: &str| {
                    let model_part: (&str, Option<&str>, &[u8]) = ("model", None, m.as_bytes());
                    let mut parts = vec![
                        ("prompt", None, before.as_slice()),
                        ("file", Some("f.bin"), after.as_slice()),
                    ];
                    parts.insert(if model_first { 0 } else { 2 }, model_part);
                    form(b, &parts)
                };
                let body = with(&model);
                let mut points: Vec<usize> =
                    cuts.iter().map(|c| c % (body.len() + 1)).collect();
                points.sort_unstable();
                let p = parse_cut(b, &body, &points).map_err(TestCaseError::fail)?;
                let m = p.model().ok_or_else(|| TestCaseError::fail("no model"))?;
                prop_assert_eq!(&m.value, &model);
                prop_assert_eq!(rewritten(&body, m, "up"), with("up"));
                prop_assert_eq!(p.files[0].size, after.len() as u64);
                let start = p.files[0].start as usize;
                prop_assert_eq!(&body[start..start + after.len()], &after[..]);
            }
        }
    }

    #[test]
    fn a_form_that_parsers_could_read_two_ways_is_refused() {
        // A second model part, or a file named model: an upstream taking
        // the last value would run a model the gateway did not route.
        let two = form("b", &[("model", None, b"this"), ("model", None, b"other")]);
        let file = form(
            "b",
            &[("model", Some("model.txt"), b"x"), ("n", None, b"1")],
        );
        let file_after = form("b", &[("model", None, b"this"), ("model", Some("m"), b"x")]);
        for (body, want) in [
            (&two, "more than one 'model' part"),
            (&file, "the 'model' part is a file"),
            (&file_after, "more than one 'model' part"),
        ] {
            for cut in 0..=body.len() {
                let err = parse_cut("b", body, &[cut]).unwrap_err();
                assert!(err.contains(want), "{cut}: {err}");
            }
        }
        // Two content-disposition headers, or a parameter given twice.
        for headers in [
            "Content-Disposition: form-data; name=\"n\"\r\nContent-Disposition: form-data; name=\"model\"",
            "Content-Disposition: form-data; name=\"n\"; name=\"model\"",
            "Content-Disposition: form-data; name=\"f\"; filename=\"a\"; filename*=UTF-8''b",
        ] {
            let body = format!("--b\r\n{headers}\r\n\r\nv\r\n--b--\r\n");
            let err = parse_cut("b", body.as_bytes(), &[]).unwrap_err();
            assert!(err.contains("twice") || err.contains("two"), "{headers}: {err}");
        }
        // Two boundaries in the content type.
        let err = boundary("multipart/form-data; boundary=a; boundary=b").unwrap_err();
        assert!(err.contains("two boundaries"), "{err}");
        // `filename*` alone makes a file part (its contents are not logged).
        let body = "--b\r\nContent-Disposition: form-data; name=\"f\"; filename*=UTF-8''x.wav\r\n\r\nRIFF\r\n--b--\r\n";
        let p = parse_cut("b", body.as_bytes(), &[]).unwrap();
        assert_eq!(p.files.len(), 1);
        assert!(p.fields.is_empty());
    }
}
