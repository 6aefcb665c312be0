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

use super::{Rate, RateInfo};

/// Which family of headers a client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    OpenAi,
    Anthropic,
    None,
}

/// Adds the headers of `rates` to `headers` in `style`, as of `now_ms`.
pub fn write(style: Style, rates: &RateInfo, now_ms: i64, headers: &mut HeaderMap) {
    let forms: [(Option<Rate>, [&'static str; 3]); 2] = match style {
        Style::None => return,
        Style::OpenAi => [
            (
                rates.requests,
                [
                    "x-ratelimit-limit-requests",
                    "x-ratelimit-remaining-requests",
                    "x-ratelimit-reset-requests",
                ],
            ),
            (
                rates.tokens,
                [
                    "x-ratelimit-limit-tokens",
                    "x-ratelimit-remaining-tokens",
                    "x-ratelimit-reset-tokens",
                ],
            ),
        ],
        Style::Anthropic => [
            (
                rates.requests,
                [
                    "anthropic-ratelimit-requests-limit",
                    "anthropic-ratelimit-requests-remaining",
                    "anthropic-ratelimit-requests-reset",
                ],
            ),
            (
                rates.tokens,
                [
                    "anthropic-ratelimit-tokens-limit",
                    "anthropic-ratelimit-tokens-remaining",
                    "anthropic-ratelimit-tokens-reset",
                ],
            ),
        ],
    };
    for (rate, [limit, remaining, reset]) in forms {
        let Some(r) = rate else { continue };
        let reset_value = match style {
            Style::Anthropic => rfc3339(r.reset_at_ms),
            _ => duration((r.reset_at_ms - now_ms).max(0)),
        };
        for (name, value) in [
            (limit, r.limit.to_string()),
            (remaining, r.remaining.to_string()),
            (reset, reset_value),
        ] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
    }
}

/// OpenAI's duration form: "59ms" under a second, else whole seconds
/// rounded up as "1s", "6m0s", "1h2m3s".
pub fn duration(ms: i64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = (ms as u64).div_ceil(1000);
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// A Unix ms time as RFC 3339 in UTC, whole seconds rounded up.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) > 0);
    let (y, mo, d) = llmgw_core::limits::civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
