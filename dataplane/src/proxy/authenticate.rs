//! Authentication: the client's key from the header its protocol uses
//! (or Gemini's `?key=`), checked against the snapshot's key hashes (the
//! key hashed once per connection while it stays the same,
//! [`crate::peer::KeyMemo`]); and,
//! only when that lookup misses, a replay's or playground's single-use
//! grant (`crate::live::grants`), which authenticates as the key it names
//! from the same snapshot (a revoked, deleted or expired key is refused as
//! usual).

#[allow(clippy::wildcard_imports)]
use super::*;

/// A Gemini client's key in the query string (`?key=`).
pub(super) fn query_key(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("key="))
        .filter(|k| !k.is_empty())
}

/// The key a request is authenticated as, and the grant it used, if any.
pub(super) type Authenticated<'t> = (
    &'t Arc<llmgw_core::table::ClientKey>,
    Option<crate::live::grants::Grant>,
);

/// A refusal, with the grant it used up when the grant's key was refused
/// (so the request is still logged as the replay or playground request it
/// was).
pub(super) type Refused = (ErrorKind, String, Option<crate::live::grants::Grant>);

pub(super) fn authenticate<'t>(
    table: &'t RoutingTable,
    d: &dyn Dialect,
    headers: &HeaderMap,
    query: Option<&str>,
    extensions: &http::Extensions,
    keys: &KeyMemo,
    grants: Option<&crate::live::grants::Grants>,
) -> Result<Authenticated<'t>, Refused> {
    let from_query = || {
        (d.protocol() == Protocol::Gemini)
            .then(|| query_key(query))
            .flatten()
    };
    let secret = d.client_key(headers).or_else(from_query).ok_or_else(|| {
        (
            ErrorKind::MissingKey,
            match d.protocol() {
                Protocol::Anthropic => "missing API key: send 'x-api-key: <key>'".to_string(),
                Protocol::Gemini => {
                    "missing API key: send 'x-goog-api-key: <key>' or '?key=<key>'".to_string()
                }
                _ => "missing API key: send 'Authorization: Bearer <key>'".to_string(),
            },
            None,
        )
    })?;
    let now = now_ms();
    let (digest, kept) = keys.digest(secret);
    let (key, grant) = match table.authenticate_digest(&digest, now) {
        Ok(key) => {
            if !kept {
                keys.keep(secret, digest);
            }
            (key, None)
        }
        Err(KeyRejection::Unknown) => {
            // A grant travels only as a bearer token: never in a query
            // string, where a proxy's access log would keep it.
            let bearer = headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|b| b.trim() == secret);
            let grant = grants
                .filter(|_| bearer)
                .and_then(|g| g.take(secret, std::time::Instant::now()));
            let Some(grant) = grant else {
                return Err(rejected(KeyRejection::Unknown, None));
            };
            match table.key_named(&grant.key, now) {
                Ok(key) => (key, Some(grant)),
                Err(r) => return Err(rejected(r, Some(grant))),
            }
        }
        Err(r) => return Err(rejected(r, None)),
    };
    // The connection no longer counts against the cap on connections that
    // have not sent a valid key.
    if let Some(conn) = extensions.get::<llmgw_listener::Conn>() {
        conn.authenticated();
    }
    Ok((key, grant))
}

fn rejected(r: KeyRejection, grant: Option<crate::live::grants::Grant>) -> Refused {
    match r {
        KeyRejection::Unknown => (ErrorKind::InvalidKey, "invalid API key".to_string(), grant),
        KeyRejection::Expired => (
            ErrorKind::ExpiredKey,
            "this API key has expired".to_string(),
            grant,
        ),
    }
}
