//! The rate-limit headers a client's own protocol uses (#15), with the
//! figures of the tightest applicable scope (least remaining):
//! - OpenAI: `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`,
//!   `x-ratelimit-reset-requests` (a duration: "59ms", "1s", "6m0s") and the
//!   `-tokens` forms;
//! - Anthropic: `anthropic-ratelimit-requests-limit`, `-remaining`, `-reset`
//!   (an RFC 3339 time) and the `tokens` forms.
//!
//! Gemini's API has no such headers; its clients see only `Retry-After` on
//! a refusal.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::RateInfo;

/// Which family of headers a client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    OpenAi,
    Anthropic,
    None,
}

/// The names of one rate's three headers: limit, remaining, reset.
type Names = [HeaderName; 3];

static OPENAI_REQUESTS: Names = [
    HeaderName::from_static("x-ratelimit-limit-requests"),
    HeaderName::from_static("x-ratelimit-remaining-requests"),
    HeaderName::from_static("x-ratelimit-reset-requests"),
];
static OPENAI_TOKENS: Names = [
    HeaderName::from_static("x-ratelimit-limit-tokens"),
    HeaderName::from_static("x-ratelimit-remaining-tokens"),
    HeaderName::from_static("x-ratelimit-reset-tokens"),
];
static ANTHROPIC_REQUESTS: Names = [
    HeaderName::from_static("anthropic-ratelimit-requests-limit"),
    HeaderName::from_static("anthropic-ratelimit-requests-remaining"),
    HeaderName::from_static("anthropic-ratelimit-requests-reset"),
];
static ANTHROPIC_TOKENS: Names = [
    HeaderName::from_static("anthropic-ratelimit-tokens-limit"),
    HeaderName::from_static("anthropic-ratelimit-tokens-remaining"),
    HeaderName::from_static("anthropic-ratelimit-tokens-reset"),
];

/// Adds the headers of `rates` to `headers` in `style`, as of `now_ms`.
pub fn write(style: Style, rates: &RateInfo, now_ms: i64, headers: &mut HeaderMap) {
    let (requests, tokens): (&Names, &Names) = match style {
        Style::None => return,
        Style::OpenAi => (&OPENAI_REQUESTS, &OPENAI_TOKENS),
        Style::Anthropic => (&ANTHROPIC_REQUESTS, &ANTHROPIC_TOKENS),
    };
    for (rate, [limit, remaining, reset]) in [(&rates.requests, requests), (&rates.tokens, tokens)]
    {
        let Some(r) = rate else { continue };
        if let Some(v) = recent(Tag::Number, r.limit, || Some(HeaderValue::from(r.limit))) {
            headers.insert(limit, v);
        }
        headers.insert(remaining, HeaderValue::from(r.remaining));
        let reset_value = match style {
            Style::Anthropic => {
                let at = r.reset_at_ms;
                recent(Tag::Time, at as u64, || text(|b| rfc3339_into(b, at)))
            }
            _ => {
                let ms = (r.reset_at_ms - now_ms).max(0);
                // What the value says: ms under a second, else whole seconds.
                let (tag, said) = if ms < 1000 {
                    (Tag::Millis, ms as u64)
                } else {
                    (Tag::Seconds, (ms as u64).div_ceil(1000))
                };
                recent(tag, said, || text(|b| duration_into(b, ms)))
            }
        };
        if let Some(v) = reset_value {
            headers.insert(reset, v);
        }
    }
}

/// What a cached header value says, with its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Number,
    Time,
    Millis,
    Seconds,
}

/// A header value written from text on the stack.
fn text(f: impl FnOnce(&mut Buf)) -> Option<HeaderValue> {
    let mut buf = Buf::default();
    f(&mut buf);
    HeaderValue::from_bytes(buf.as_bytes()).ok()
}

/// Header values this thread wrote lately, by what they say. A limit
/// repeats on every response until it is changed and a reset time for a
/// second or a window, and a clone of a value is a reference count where a
/// new one is a formatting and an allocation. Direct-mapped: a value whose
/// slot another took is written again. Limits have slots of their own
/// (the first half), apart from times: a reset time that took a limit's
/// slot would otherwise evict it on every response for that second, and
/// be evicted by it, both written anew each time.
type Recent = [Option<(Tag, u64, HeaderValue)>; 16];

thread_local! {
    static RECENT: std::cell::RefCell<Recent> = const { std::cell::RefCell::new([const { None }; 16]) };
}

fn recent(tag: Tag, n: u64, make: impl FnOnce() -> Option<HeaderValue>) -> Option<HeaderValue> {
    let half = if tag == Tag::Number { 0 } else { 8 };
    let slot = half + ((n ^ (tag as u64) << 56).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 61) as usize;
    let hit = RECENT
        .try_with(|cell| match &cell.try_borrow().ok()?[slot] {
            Some((t, m, v)) if *t == tag && *m == n => Some(v.clone()),
            _ => None,
        })
        .ok()
        .flatten();
    if hit.is_some() {
        return hit;
    }
    let v = make()?;
    // (A thread being torn down has no cache; the value is still written.)
    let _ = RECENT.try_with(|cell| {
        if let Ok(mut recent) = cell.try_borrow_mut() {
            recent[slot] = Some((tag, n, v.clone()));
        }
    });
    Some(v)
}

/// A few bytes of text on the stack (a header value being written).
#[derive(Default)]
struct Buf {
    bytes: [u8; 32],
    len: usize,
}

impl Buf {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl std::fmt::Write for Buf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let room = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// OpenAI's duration form: "59ms" under a second, else whole seconds
/// rounded up as "1s", "6m0s", "1h2m3s".
pub fn duration(ms: i64) -> String {
    let mut s = String::new();
    duration_into(&mut s, ms);
    s
}

fn duration_into(out: &mut impl std::fmt::Write, ms: i64) {
    // Writing to a string or a large enough buffer does not fail.
    let _ = if ms < 1000 {
        write!(out, "{ms}ms")
    } else {
        let s = (ms as u64).div_ceil(1000);
        let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
        if h > 0 {
            write!(out, "{h}h{m}m{s}s")
        } else if m > 0 {
            write!(out, "{m}m{s}s")
        } else {
            write!(out, "{s}s")
        }
    };
}

/// A Unix ms time as RFC 3339 in UTC, whole seconds rounded up.
pub fn rfc3339(ms: i64) -> String {
    let mut s = String::new();
    rfc3339_into(&mut s, ms);
    s
}

fn rfc3339_into(out: &mut impl std::fmt::Write, ms: i64) {
    let secs = ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) > 0);
    let (y, mo, d) = llmgw_core::limits::civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    let _ = write!(
        out,
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Rate;

    #[test]
    fn durations_in_openai_form() {
        assert_eq!(duration(59), "59ms");
        assert_eq!(duration(0), "0ms");
        assert_eq!(duration(1000), "1s");
        assert_eq!(duration(1001), "2s");
        assert_eq!(duration(360_000), "6m0s");
        assert_eq!(duration(3_723_000), "1h2m3s");
    }

    #[test]
    fn times_in_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_242_192_500), "2026-12-02T20:09:53Z");
    }

    /// A reset time, which changes every second, never takes a limit's
    /// place in the cache (the two evicting each other made every response
    /// of such a second write both anew).
    #[test]
    fn reset_times_never_evict_a_limit() {
        let limit = 1_000_000_000;
        for s in 1..200i64 {
            let rates = RateInfo {
                requests: Some(Rate {
                    limit,
                    remaining: 5,
                    reset_at_ms: 60_000 + s * 1000,
                }),
                tokens: None,
            };
            write(Style::OpenAi, &rates, 60_000, &mut HeaderMap::new());
            let held = RECENT.with(|c| {
                c.borrow()
                    .iter()
                    .flatten()
                    .any(|(t, n, _)| *t == Tag::Number && *n == limit)
            });
            assert!(held, "evicted by the reset {s}s");
        }
    }

    #[test]
    fn values_remembered_from_earlier_responses_never_stand_for_others() {
        // More figures than the cache has slots, twice over, in both
        // styles: every response says its own.
        for round in 0..2 {
            for i in 0..100u64 {
                let rates = RateInfo {
                    requests: Some(Rate {
                        limit: i,
                        remaining: i / 2,
                        reset_at_ms: 60_000 + (i as i64) * 1000 + round,
                    }),
                    tokens: Some(Rate {
                        limit: 1000 + i,
                        remaining: i,
                        reset_at_ms: 60_000 + i as i64,
                    }),
                };
                let mut h = HeaderMap::new();
                write(Style::OpenAi, &rates, 60_000, &mut h);
                assert_eq!(h["x-ratelimit-limit-requests"], i.to_string().as_str());
                assert_eq!(
                    h["x-ratelimit-limit-tokens"],
                    (1000 + i).to_string().as_str()
                );
                assert_eq!(
                    h["x-ratelimit-remaining-requests"],
                    (i / 2).to_string().as_str()
                );
                let want = duration((i * 1000) as i64 + round);
                assert_eq!(h["x-ratelimit-reset-requests"], want.as_str(), "{i}");
                assert_eq!(h["x-ratelimit-reset-tokens"], format!("{i}ms").as_str());
                let mut h = HeaderMap::new();
                write(Style::Anthropic, &rates, 60_000, &mut h);
                assert_eq!(
                    h["anthropic-ratelimit-requests-reset"],
                    rfc3339(60_000 + (i as i64) * 1000 + round).as_str()
                );
                assert_eq!(
                    h["anthropic-ratelimit-tokens-limit"],
                    (1000 + i).to_string().as_str()
                );
            }
        }
    }

    #[test]
    fn both_styles_carry_both_rates() {
        let rates = RateInfo {
            requests: Some(Rate {
                limit: 10,
                remaining: 4,
                reset_at_ms: 61_000,
            }),
            tokens: Some(Rate {
                limit: 1000,
                remaining: 0,
                reset_at_ms: 60_500,
            }),
        };
        let mut h = HeaderMap::new();
        write(Style::OpenAi, &rates, 60_000, &mut h);
        assert_eq!(h["x-ratelimit-limit-requests"], "10");
        assert_eq!(h["x-ratelimit-remaining-requests"], "4");
        assert_eq!(h["x-ratelimit-reset-requests"], "1s");
        assert_eq!(h["x-ratelimit-reset-tokens"], "500ms");
        assert_eq!(h["x-ratelimit-remaining-tokens"], "0");
        let mut h = HeaderMap::new();
        write(Style::Anthropic, &rates, 60_000, &mut h);
        assert_eq!(h["anthropic-ratelimit-requests-limit"], "10");
        assert_eq!(h["anthropic-ratelimit-tokens-remaining"], "0");
        assert_eq!(
            h["anthropic-ratelimit-requests-reset"],
            "1970-01-01T00:01:01Z"
        );
        let mut h = HeaderMap::new();
        write(Style::None, &rates, 60_000, &mut h);
        assert!(h.is_empty());
    }
}
