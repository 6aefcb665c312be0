//! Single-use grants (#17, replay and playground): the control plane,
//! which holds no client key's secret, sends over the live stream the
//! SHA-256 of a random token and the name of the key a request is to be
//! sent as; the request then comes to the proxy with the token as its
//! bearer. The proxy looks a grant up only after the normal key lookup
//! missed ([`Grants::take`]), so normal traffic never pays for it.
//!
//! At most [`CAP`] grants are kept; each lives at most [`MAX_TTL`] and is
//! taken out on its first use, whatever the request's outcome. Expired
//! grants are dropped whenever one is added. Only hashes are held: no
//! token is ever kept, logged or shown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The prefix of every grant token: a presented bearer without it is never
/// looked up.
pub use llmgw_core::keys::GRANT_PREFIX as TOKEN_PREFIX;
/// The most grants kept at once.
pub const CAP: usize = 1000;
/// The longest a grant may wait for its request.
pub const MAX_TTL: Duration = Duration::from_secs(60);

/// What a grant lets its one request be: sent as `key`, logged with
/// `origin` and `replay_of`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub key: String,
    pub origin: String,
    pub replay_of: String,
    pub expires: Instant,
}

/// The grants waiting for their request.
#[derive(Debug, Default)]
pub struct Grants {
    map: Mutex<HashMap<[u8; 32], Grant>>,
    /// How many the map holds, read without its lock: zero (nearly always)
    /// skips the hash of a bearer that is not a key.
    len: AtomicUsize,
}

/// Why a grant was not kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the grant's token hash is not 32 bytes")]
    BadHash,
    #[error("the grant names no key")]
    NoKey,
    #[error("the data plane holds {CAP} grants already")]
    Full,
}

impl Grants {
    /// Keeps a grant for the token whose SHA-256 is `hash`, for `ttl`
    /// (at most [`MAX_TTL`]) from `now`.
    pub fn add(
        &self,
        hash: &[u8],
        key: &str,
        origin: &str,
        replay_of: &str,
        ttl: Duration,
        now: Instant,
    ) -> Result<(), Refused> {
        let hash: [u8; 32] = hash.try_into().map_err(|_| Refused::BadHash)?;
        if key.is_empty() {
            return Err(Refused::NoKey);
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, g| g.expires > now);
        if map.len() >= CAP && !map.contains_key(&hash) {
            self.len.store(map.len(), Ordering::Release);
            return Err(Refused::Full);
        }
        map.insert(
            hash,
            Grant {
                key: key.to_string(),
                origin: origin.to_string(),
                replay_of: replay_of.to_string(),
                expires: now + ttl.min(MAX_TTL),
            },
        );
        self.len.store(map.len(), Ordering::Release);
        Ok(())
    }

    /// The grant of a presented bearer `token`, taken out (single use);
    /// `None` when it is no grant's, or its grant expired.
    pub fn take(&self, token: &str, now: Instant) -> Option<Grant> {
        if self.len.load(Ordering::Acquire) == 0 || !token.starts_with(TOKEN_PREFIX) {
            return None;
        }
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let grant = map.remove(&hash);
        self.len.store(map.len(), Ordering::Release);
        grant.filter(|g| g.expires > now)
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(token: &str) -> Vec<u8> {
        Sha256::digest(token.as_bytes()).to_vec()
    }

    const T: &str = "llmgw-grant-0123456789abcdef";

    #[test]
    fn a_grant_is_used_once() {
        let g = Grants::default();
        let now = Instant::now();
        g.add(
            &hash(T),
            "k",
            "replay",
            "log-1",
            Duration::from_secs(5),
            now,
        )
        .unwrap();
        assert_eq!(g.len(), 1);
        let got = g.take(T, now).unwrap();
        assert_eq!(
            (
                got.key.as_str(),
                got.origin.as_str(),
                got.replay_of.as_str()
            ),
            ("k", "replay", "log-1")
        );
        assert_eq!(g.take(T, now), None);
        assert!(g.is_empty());
    }

    #[test]
    fn unknown_and_unprefixed_tokens_find_nothing() {
        let g = Grants::default();
        let now = Instant::now();
        let plain = "sk-llmgw-abc";
        g.add(&hash(plain), "k", "replay", "", Duration::from_secs(5), now)
            .unwrap();
        // Only a token with the prefix is looked up.
        assert_eq!(g.take(plain, now), None);
        assert_eq!(g.take("llmgw-grant-other", now), None);
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn an_expired_grant_is_refused_and_dropped() {
        let g = Grants::default();
        let now = Instant::now();
        g.add(
            &hash(T),
            "k",
            "playground",
            "",
            Duration::from_millis(10),
            now,
        )
        .unwrap();
        assert_eq!(g.take(T, now + Duration::from_millis(10)), None);
        assert!(g.is_empty());
        // Expired ones go when another is added.
        g.add(
            &hash(T),
            "k",
            "playground",
            "",
            Duration::from_millis(10),
            now,
        )
        .unwrap();
        g.add(
            &hash("llmgw-grant-2"),
            "k",
            "playground",
            "",
            MAX_TTL,
            now + Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn the_ttl_is_capped() {
        let g = Grants::default();
        let now = Instant::now();
        g.add(&hash(T), "k", "replay", "", Duration::from_secs(3600), now)
            .unwrap();
        assert_eq!(g.take(T, now + MAX_TTL), None);
    }

    #[test]
    fn the_store_is_bounded() {
        let g = Grants::default();
        let now = Instant::now();
        for i in 0..CAP {
            g.add(
                &hash(&format!("{TOKEN_PREFIX}{i}")),
                "k",
                "replay",
                "",
                MAX_TTL,
                now,
            )
            .unwrap();
        }
        assert_eq!(
            g.add(&hash(T), "k", "replay", "", MAX_TTL, now),
            Err(Refused::Full)
        );
        // Once the old ones expire, there is room again.
        g.add(&hash(T), "k", "replay", "", MAX_TTL, now + MAX_TTL)
            .unwrap();
        assert_eq!(g.len(), 1);
        assert!(g.take(T, now + MAX_TTL).is_some());
    }

    #[test]
    fn malformed_grants_are_refused() {
        let g = Grants::default();
        let now = Instant::now();
        assert_eq!(
            g.add(b"short", "k", "replay", "", MAX_TTL, now),
            Err(Refused::BadHash)
        );
        assert_eq!(
            g.add(&hash(T), "", "replay", "", MAX_TTL, now),
            Err(Refused::NoKey)
        );
    }
}
