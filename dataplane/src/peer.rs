//! The client connection a request came on, as the proxy sees it: the
//! peer's address, formatted once per connection, and the digest of the
//! last key the connection authenticated with.
//!
//! A client sends the same key on every request of a keep-alive
//! connection, and the snapshot knows keys only by their SHA-256. So the
//! connection keeps the last key it authenticated with, and that key's
//! digest ([`KeyMemo`]); a request presenting the same key (compared in
//! constant time) reuses the digest instead of hashing again. Only the
//! hashing is saved: the digest is looked up in the current snapshot on
//! every request, so a key revoked or expired since the last request is
//! refused as usual. A key that does not authenticate (a wrong one, an
//! expired one, a replay's single-use grant) is never kept.
//! On a CPU without SHA instructions (and under valgrind, which is how
//! bench/ counts instructions) SHA-256 is the largest single step of
//! authenticating; with them it is a few hundred instructions.

use std::sync::{Mutex, TryLockError};

use llmgw_core::keys;
use secrecy::{ExposeSecret, SecretSlice};

/// One client connection.
pub struct Peer {
    /// The peer's IP address, as logged.
    pub ip: String,
    /// The last key this connection authenticated with, and its digest.
    pub keys: KeyMemo,
}

impl Peer {
    pub fn new(ip: String) -> Peer {
        Peer {
            ip,
            keys: KeyMemo::default(),
        }
    }
}

/// The last key a connection authenticated with, and its SHA-256. The key
/// is kept only to be compared with the next one, as a [`SecretSlice`]:
/// zeroed when replaced and when the connection ends, and never shown by
/// `Debug`.
#[derive(Default)]
pub struct KeyMemo {
    last: Mutex<Option<Memo>>,
}

struct Memo {
    secret: SecretSlice<u8>,
    digest: [u8; 32],
}

impl std::fmt::Debug for KeyMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyMemo")
    }
}

impl KeyMemo {
    /// The SHA-256 of `secret` ([`keys::hash`]), and whether it is the key
    /// kept: the kept digest when `secret` is the key this connection last
    /// authenticated with, otherwise computed (and not kept: see
    /// [`Self::keep`]). Requests of one HTTP/2 connection may run at once;
    /// one that finds the memo in use hashes for itself rather than wait.
    pub fn digest(&self, secret: &str) -> ([u8; 32], bool) {
        let last = match self.last.try_lock() {
            Ok(last) => last,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return (keys::hash(secret), false),
        };
        if let Some(m) = last.as_ref() {
            if keys::ct_eq(m.secret.expose_secret(), secret.as_bytes()) {
                return (m.digest, true);
            }
        }
        drop(last);
        (keys::hash(secret), false)
    }

    /// Keeps `secret` and its digest, once it has authenticated: a wrong,
    /// expired or single-use secret (a replay's grant) is never kept. The
    /// key kept before, if any, is zeroed as it is dropped.
    pub fn keep(&self, secret: &str, digest: [u8; 32]) {
        let mut last = match self.last.try_lock() {
            Ok(last) => last,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        *last = Some(Memo {
            secret: secret.as_bytes().to_vec().into(),
            digest,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_the_keys_whichever_key_was_kept() {
        let memo = KeyMemo::default();
        assert_eq!(memo.digest("sk-llmgw-a"), (keys::hash("sk-llmgw-a"), false));
        memo.keep("sk-llmgw-a", keys::hash("sk-llmgw-a"));
        for secret in [
            "sk-llmgw-b",
            // A prefix and an extension of the key kept.
            "sk-llmgw-",
            "sk-llmgw-aa",
            "",
        ] {
            assert_eq!(
                memo.digest(secret),
                (keys::hash(secret), false),
                "{secret:?}"
            );
        }
        // Only a key that was kept is found; looking others up keeps nothing.
        assert_eq!(memo.digest("sk-llmgw-a"), (keys::hash("sk-llmgw-a"), true));
        memo.keep("sk-llmgw-b", keys::hash("sk-llmgw-b"));
        assert_eq!(memo.digest("sk-llmgw-b"), (keys::hash("sk-llmgw-b"), true));
        assert_eq!(memo.digest("sk-llmgw-a"), (keys::hash("sk-llmgw-a"), false));
    }

    #[test]
    fn a_memo_in_use_does_not_block() {
        let memo = KeyMemo::default();
        memo.keep("sk-llmgw-a", keys::hash("sk-llmgw-a"));
        let held = memo.last.lock().unwrap();
        assert_eq!(memo.digest("sk-llmgw-a"), (keys::hash("sk-llmgw-a"), false));
        memo.keep("sk-llmgw-b", keys::hash("sk-llmgw-b"));
        drop(held);
        // Still the first key: the blocked calls kept nothing.
        assert_eq!(memo.digest("sk-llmgw-a"), (keys::hash("sk-llmgw-a"), true));
    }

    #[test]
    fn debug_shows_no_key() {
        let memo = KeyMemo::default();
        memo.keep("sk-llmgw-secret", keys::hash("sk-llmgw-secret"));
        let shown = format!("{memo:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
