//! Stored request-log rows and their protobuf form.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use llmgw_proto::v1 as pb;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::details::Fields;
use super::sql::cost_nanos_sql;
use crate::store::StoreError;

/// Every column of `request_logs`: headers and bodies are in
/// `request_log_details` (`details.rs`).
pub const SUMMARY_COLUMNS: &str = concat!(
    "id, time_ms, node_id, sequence, key_name, client_ip, \
     user_agent, protocol, path, model, provider, upstream_model, status, stream, cancelled, \
     latency_ms, ttfb_ms, retries, input_tokens, output_tokens, cache_read_tokens, \
     cache_creation_tokens, reasoning_tokens, usage_source, count_source, cost, error, \
     snapshot_version, request_body_truncated, response_body_truncated, upstream_protocol, \
     translated, upstream_request_body_truncated, dropped_fields, outcome, stop_reason, end_user, limited_by, \
     trace_id, origin, replay_of, audio_milliseconds, characters, images, image_size, \
     image_quality, audio_source, attempt_latency_ms, attempt_offset_ms, details_offset_ms, ",
    cost_nanos_sql!(),
    " AS cost_nanos"
);

/// A request id as the log tables store it (`request_logs.id`,
/// `request_attempts.request_id`, `request_log_details.id`): the 16 bytes
/// of its UUID, whatever the text's form (PostgreSQL migration 0035,
/// SQLite 0034), instead of 36 characters. Ingest has refused ids that
/// are not UUIDs since its first version; should a row hold one anyway,
/// the migrations keep its UTF-8 bytes, and so does this (a page token
/// that ends on such a row goes on from it; `logs get` asks for UUIDs).
pub fn stored_id(id: &str) -> Vec<u8> {
    match uuid::Uuid::parse_str(id.trim()) {
        Ok(u) => u.as_bytes().to_vec(),
        Err(_) => id.as_bytes().to_vec(),
    }
}

/// The text of a stored id ([`stored_id`]): a UUID's canonical
/// lowercase form, or the stored text of an id that was not a UUID.
pub fn id_text(bytes: &[u8]) -> String {
    match uuid::Uuid::from_slice(bytes) {
        Ok(u) => u.hyphenated().to_string(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// The id in column `col` of a log row, as text. A text value (on SQLite,
/// a row written from outside the control plane since migration 0034)
/// reads as it is rather than failing the whole list.
pub fn id_of(r: &AnyRow, col: &str) -> Result<String, StoreError> {
    match r.try_get::<Vec<u8>, _>(col) {
        Ok(bytes) => Ok(id_text(&bytes)),
        Err(_) => Ok(r.try_get::<String, _>(col)?),
    }
}

/// RFC 3339 with milliseconds, in UTC: `2024-05-01T12:00:00.123Z`.
pub fn format_time(ms: i64) -> String {
    if ms <= 0 {
        return String::new();
    }
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs()))
        .to_string()
}

/// The record as lists show it: no headers, no bodies.
pub fn strip_details(mut r: pb::RequestLog) -> pb::RequestLog {
    r.request_headers = BTreeMap::new();
    r.response_headers = BTreeMap::new();
    r.request_body = String::new();
    r.response_body = String::new();
    r.upstream_request_body = String::new();
    r
}

// A NULL reads as the column's default, 0 or '': PostgreSQL stores the
// defaults of `request_logs` so (migration 0037, `ingest::sparse`).

fn int_of(r: &AnyRow, col: &str) -> Result<i64, StoreError> {
    Ok(r.try_get::<Option<i64>, _>(col)?.unwrap_or(0))
}

fn u64_of(r: &AnyRow, col: &str) -> Result<u64, StoreError> {
    Ok(u64::try_from(int_of(r, col)?).unwrap_or(0))
}

fn u32_of(r: &AnyRow, col: &str) -> Result<u32, StoreError> {
    Ok(u32::try_from(int_of(r, col)?).unwrap_or(0))
}

fn flag(r: &AnyRow, col: &str) -> Result<bool, StoreError> {
    Ok(int_of(r, col)? != 0)
}

fn text_of(r: &AnyRow, col: &str) -> Result<String, StoreError> {
    Ok(r.try_get::<Option<String>, _>(col)?.unwrap_or_default())
}

/// A summary row (see [`SUMMARY_COLUMNS`]); attempts are added later.
pub fn summary_from_row(r: &AnyRow) -> Result<pb::RequestLog, StoreError> {
    let time_ms: i64 = r.try_get("time_ms")?;
    let cost_nanos: i64 = r.try_get("cost_nanos")?;
    let mut rec = pb::RequestLog {
        id: id_of(r, "id")?,
        sequence: u64_of(r, "sequence")?,
        node_id: text_of(r, "node_id")?,
        time_ms,
        key: text_of(r, "key_name")?,
        client_ip: text_of(r, "client_ip")?,
        user_agent: text_of(r, "user_agent")?,
        protocol: text_of(r, "protocol")?,
        path: text_of(r, "path")?,
        model: text_of(r, "model")?,
        provider: text_of(r, "provider")?,
        upstream_model: text_of(r, "upstream_model")?,
        status: u32_of(r, "status")?,
        stream: flag(r, "stream")?,
        cancelled: flag(r, "cancelled")?,
        latency_ms: u64_of(r, "latency_ms")?,
        ttfb_ms: u64_of(r, "ttfb_ms")?,
        attempts: Vec::new(),
        retries: u32_of(r, "retries")?,
        input_tokens: u64_of(r, "input_tokens")?,
        output_tokens: u64_of(r, "output_tokens")?,
        cache_read_tokens: u64_of(r, "cache_read_tokens")?,
        cache_creation_tokens: u64_of(r, "cache_creation_tokens")?,
        usage_source: text_of(r, "usage_source")?,
        // PostgreSQL keeps only the exact cost (`ingest/record.rs`
        // `log_values`).
        cost: match r.try_get::<Option<f64>, _>("cost")? {
            Some(cost) => cost,
            None => cost_nanos as f64 / 1e9,
        },
        cost_nanos,
        error: text_of(r, "error")?,
        snapshot_version: u64_of(r, "snapshot_version")?,
        request_headers: BTreeMap::new(),
        response_headers: BTreeMap::new(),
        request_body: String::new(),
        response_body: String::new(),
        request_body_truncated: flag(r, "request_body_truncated")?,
        response_body_truncated: flag(r, "response_body_truncated")?,
        time: format_time(time_ms),
        upstream_protocol: text_of(r, "upstream_protocol")?,
        translated: flag(r, "translated")?,
        upstream_request_body: String::new(),
        upstream_request_body_truncated: flag(r, "upstream_request_body_truncated")?,
        dropped_fields: dropped_fields(r)?,
        reasoning_tokens: u64_of(r, "reasoning_tokens")?,
        count_source: text_of(r, "count_source")?,
        outcome: outcome_of_name(&text_of(r, "outcome")?) as i32,
        stop_reason: text_of(r, "stop_reason")?,
        user: text_of(r, "end_user")?,
        limited_by: text_of(r, "limited_by")?,
        trace_id: text_of(r, "trace_id")?,
        origin: text_of(r, "origin")?,
        replay_of: text_of(r, "replay_of")?,
        audio_milliseconds: u64_of(r, "audio_milliseconds")?,
        characters: u64_of(r, "characters")?,
        images: u32_of(r, "images")?,
        image_size: text_of(r, "image_size")?,
        image_quality: text_of(r, "image_quality")?,
        audio_source: text_of(r, "audio_source")?,
        bodies_expired: false,
    };
    // The one attempt kept in the row (see [`inline_attempt`]); the others
    // come from `request_attempts`.
    if let Some(latency) = r.try_get::<Option<i64>, _>("attempt_latency_ms")? {
        let offset: Option<i64> = r.try_get("attempt_offset_ms")?;
        rec.attempts = vec![pb::Attempt {
            provider: rec.provider.clone(),
            upstream_model: rec.upstream_model.clone(),
            status: rec.status,
            error: rec.error.clone(),
            latency_ms: u64::try_from(latency).unwrap_or(0),
            start_offset_ms: offset.and_then(|o| u64::try_from(o).ok()).unwrap_or(0),
        }];
    }
    Ok(rec)
}

/// The record's attempt as its own row keeps it (`attempt_latency_ms` and
/// `attempt_offset_ms`, migration 0028): its latency and when it was sent,
/// when it is the only one and repeats the record's provider, upstream
/// model, status and error. `None` when the attempts go to
/// `request_attempts`.
pub fn inline_attempt(r: &pb::RequestLog) -> Option<(i64, i64)> {
    let [a] = r.attempts.as_slice() else {
        return None;
    };
    let same = a.provider == r.provider
        && a.upstream_model == r.upstream_model
        && a.status == r.status
        && a.error == r.error;
    if !same {
        return None;
    }
    Some((
        i64::try_from(a.latency_ms).ok()?,
        i64::try_from(a.start_offset_ms).ok()?,
    ))
}

/// A W3C trace id in its canonical form, 32 lowercase hex digits, from one
/// in either case with spaces around it; `None` for anything else, and for
/// the all-zero id, which the W3C calls invalid.
pub fn canonical_trace_id(s: &str) -> Option<String> {
    let t = s.trim();
    let hex = t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit());
    (hex && t.bytes().any(|b| b != b'0')).then(|| t.to_ascii_lowercase())
}

/// The outcome of a stored name (`pb::Outcome::name`); unspecified for
/// any other.
pub fn outcome_of_name(name: &str) -> pb::Outcome {
    pb::Outcome::from_name(name).unwrap_or(pb::Outcome::Unspecified)
}

/// The stored JSON array of dropped fields.
fn dropped_fields(r: &AnyRow) -> Result<Vec<String>, StoreError> {
    let text = text_of(r, "dropped_fields")?;
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(&text).map_err(|_| {
        StoreError::Invalid("stored dropped_fields is not a JSON array of strings".into())
    })
}

fn headers(col: &str, text: &str) -> Result<BTreeMap<String, String>, StoreError> {
    if text.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    serde_json::from_str(text)
        .map_err(|_| StoreError::Invalid(format!("stored {col} is not a JSON object of strings")))
}

/// Adds headers and bodies from a record's stored details.
pub fn add_details(rec: &mut pb::RequestLog, fields: Fields) -> Result<(), StoreError> {
    let [request_headers, response_headers, request_body, response_body, upstream] = fields;
    rec.request_headers = headers("request_headers", &request_headers)?;
    rec.response_headers = headers("response_headers", &response_headers)?;
    rec.request_body = request_body;
    rec.response_body = response_body;
    rec.upstream_request_body = upstream;
    Ok(())
}

/// One `request_attempts` row: (request id, attempt).
pub fn attempt_from_row(r: &AnyRow) -> Result<(String, pb::Attempt), StoreError> {
    Ok((
        id_of(r, "request_id")?,
        pb::Attempt {
            provider: r.try_get("provider")?,
            upstream_model: r.try_get("upstream_model")?,
            status: u32_of(r, "status")?,
            error: r.try_get("error")?,
            latency_ms: u64_of(r, "latency_ms")?,
            start_offset_ms: u64_of(r, "start_offset_ms")?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_milliseconds() {
        assert_eq!(format_time(1_714_564_800_123), "2024-05-01T12:00:00.123Z");
        assert_eq!(format_time(1_714_564_800_000), "2024-05-01T12:00:00.000Z");
        assert_eq!(format_time(0), "");
    }

    #[test]
    fn trace_ids_are_canonical() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(canonical_trace_id(id).as_deref(), Some(id));
        assert_eq!(
            canonical_trace_id(" 4BF92F3577B34DA6A3CE929D0E0E4736 ").as_deref(),
            Some(id)
        );
        for bad in [
            "",
            "00000000000000000000000000000000",
            "4bf92f3577b34da6a3ce929d0e0e473",
            "4bf92f3577b34da6a3ce929d0e0e47360",
            "4bf92f3577b34da6a3ce929d0e0e473g",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "4bf92f3577b34da6a3ce929d0e0e47\u{e9}",
        ] {
            assert_eq!(canonical_trace_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn unknown_stored_outcomes_are_unspecified() {
        assert_eq!(outcome_of_name("interrupted"), pb::Outcome::Interrupted);
        assert_eq!(outcome_of_name(""), pb::Outcome::Unspecified);
        assert_eq!(outcome_of_name("nonsense"), pb::Outcome::Unspecified);
    }
}
