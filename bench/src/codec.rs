//! `llmgw-bench codec`: the translation codecs alone, for callgrind.
//!
//! Reads an upstream's whole answer (`--body`) and/or its event stream
//! (`--stream`, raw server-sent events, as the mock sends them) in the
//! protocol `--from`, and translates each `--n` times for a client of
//! `--to`: `decode_response` + `encode_response`, and a stream decoder and
//! encoder fed event by event. Under
//! `valgrind --tool=callgrind --toggle-collect='*codec*run_*'` the counts
//! divided by `--n` are the codecs' instructions per answer and per stream,
//! without the HTTP stack or the data plane's own work. It prints the
//! sizes of what it wrote, so that the work cannot be optimised away.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use llmgw_protocols::{EncoderOptions, Event, Wire};

#[derive(Parser, Clone)]
pub struct CodecArgs {
    /// The upstream's protocol: chat, responses, anthropic, gemini.
    #[arg(long)]
    from: String,
    /// The client's protocol.
    #[arg(long)]
    to: String,
    /// A whole answer of `--from`.
    #[arg(long)]
    body: Option<PathBuf>,
    /// A recorded event stream of `--from`.
    #[arg(long)]
    stream: Option<PathBuf>,
    /// Times each is translated.
    #[arg(long, default_value_t = 1000)]
    n: usize,
}

fn wire(name: &str) -> Result<Wire> {
    Ok(match name {
        "chat" => Wire::Chat,
        "responses" => Wire::Responses,
        "anthropic" => Wire::Anthropic,
        "gemini" => Wire::Gemini,
        other => bail!("unknown protocol {other:?}"),
    })
}

fn options() -> EncoderOptions {
    EncoderOptions {
        model: "bench".into(),
        id: "req-bench".into(),
        created: 1_700_000_000,
        input_estimate: 10,
        include_usage: true,
        sse: true,
    }
}

/// The events of a recorded stream: `event:` name and joined `data:`.
fn events(raw: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for block in raw.split("\n\n") {
        let (mut name, mut data) = (String::new(), Vec::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim_start().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if !data.is_empty() {
            out.push((name, data.join("\n")));
        }
    }
    out
}

#[inline(never)]
fn run_whole(from: Wire, to: Wire, body: &[u8], opts: &EncoderOptions) -> Result<usize> {
    let resp = from
        .decode_response(body)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(to.encode_response(&resp, opts).len())
}

#[inline(never)]
fn run_stream(
    from: Wire,
    to: Wire,
    events: &[(String, String)],
    opts: &EncoderOptions,
) -> Result<usize> {
    let mut decoder = from.stream_decoder();
    let mut encoder = to.stream_encoder(opts.clone());
    let mut decoded: Vec<Event> = Vec::new();
    let mut written = 0;
    let mut frames = Vec::new();
    for (name, data) in events {
        decoder
            .event(name, data, &mut decoded)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for ev in decoded.drain(..) {
            encoder.event(ev, &mut frames);
        }
        // Each upstream event's frames go out on their own, as in the
        // data plane.
        written += frames.len();
        frames.clear();
    }
    decoder.finish(&mut decoded);
    for ev in decoded.drain(..) {
        encoder.event(ev, &mut frames);
    }
    encoder.finish(None, &mut frames);
    Ok(written + frames.len())
}

pub fn run(a: &CodecArgs) -> Result<()> {
    let (from, to) = (wire(&a.from)?, wire(&a.to)?);
    let opts = options();
    let mut out = std::io::stdout().lock();
    if let Some(path) = &a.body {
        let body = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let mut total = 0;
        for _ in 0..a.n {
            total += run_whole(from, to, &body, &opts)?;
        }
        writeln!(out, "whole: {} answers, {total} bytes written", a.n)?;
    }
    if let Some(path) = &a.stream {
        let raw =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let events = events(&raw);
        let mut total = 0;
        for _ in 0..a.n {
            total += run_stream(from, to, &events, &opts)?;
        }
        writeln!(
            out,
            "stream: {} streams of {} events, {total} bytes written",
            a.n,
            events.len()
        )?;
    }
    Ok(())
}
