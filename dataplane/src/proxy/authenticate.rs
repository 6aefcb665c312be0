//! Authentication: the client's key from the header its protocol uses
//! (or Gemini's `?key=`), checked against the snapshot's key hashes.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A Gemini client's key in the query string (`?key=`).
pub(super) fn query_key(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("key="))
        .filter(|k| !k.is_empty())
}

pub(super) fn authenticate<'t>(
    table: &'t RoutingTable,
    d: &dyn Dialect,
    headers: &HeaderMap,
    query: Option<&str>,
    extensions: &http::Extensions,
) -> Result<&'t Arc<llmgw_core::table::ClientKey>, (ErrorKind, String)> {
    let from_query = || {
        (d.protocol() == Protocol::Gemini)
            .then(|| query_key(query))
            .flatten()
    };
    let secret = d.client_key(headers).or_else(from_query).ok_or((
        ErrorKind::MissingKey,
        match d.protocol() {
            Protocol::Anthropic => "missing API key: send 'x-api-key: <key>'".to_string(),
            Protocol::Gemini => {
                "missing API key: send 'x-goog-api-key: <key>' or '?key=<key>'".to_string()
            }
            _ => "missing API key: send 'Authorization: Bearer <key>'".to_string(),
        },
    ))?;
    let key = table.authenticate(secret, now_ms()).map_err(|r| match r {
        KeyRejection::Unknown => (ErrorKind::InvalidKey, "invalid API key".to_string()),
        KeyRejection::Expired => (
            ErrorKind::ExpiredKey,
            "this API key has expired".to_string(),
        ),
    })?;
    // The connection no longer counts against the cap on connections that
    // have not sent a valid key.
    if let Some(conn) = extensions.get::<llmgw_listener::Conn>() {
        conn.authenticated();
    }
    Ok(key)
}
