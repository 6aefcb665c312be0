//! Client API keys and secret masking.
//!
//! A client key is 190 random bits in base62 behind a recognisable prefix.
//! Only its SHA-256 is stored: the secret has far too much entropy for a
//! fast hash to be a weakness, and the data plane must check keys on every
//! request.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every client key starts with this, so leaked keys are easy to spot.
pub const KEY_PREFIX: &str = "sk-llmgw-";
/// The prefix of a single-use grant token (replay and playground, #17):
/// the control plane makes them, the data plane looks up only these.
pub const GRANT_PREFIX: &str = "llmgw-grant-";
/// Length of the random part of a key.
pub const KEY_RANDOM_CHARS: usize = 32;
/// How many characters of a key are kept to recognise it.
pub const DISPLAY_PREFIX_CHARS: usize = KEY_PREFIX.len() + 4;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Builds a key from random bytes (one byte per character, unbiased by
/// rejection done by the caller's generator: bytes >= 248 are skipped).
pub fn key_from_random(random: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(KEY_PREFIX.len() + KEY_RANDOM_CHARS);
    out.push_str(KEY_PREFIX);
    let mut n = 0;
    for b in random {
        if *b >= 248 {
            continue;
        }
        out.push(BASE62[usize::from(*b) % 62] as char);
        n += 1;
        if n == KEY_RANDOM_CHARS {
            return Some(out);
        }
    }
    None
}

/// Lower-case hex SHA-256 of a secret.
pub fn hash_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The raw SHA-256 of a secret.
pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares two byte strings in time that does not depend on where they
/// differ (only on their lengths). Eight bytes at a time, each word
/// compared with `subtle`: its byte-at-a-time slice comparison cost about
/// 13 instructions a byte, twice on every request (the key, and its digest).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let word = |c: &[u8]| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(w)
    };
    let mut same = subtle::Choice::from(1u8);
    for (x, y) in a.chunks(8).zip(b.chunks(8)) {
        same &= word(x).ct_eq(&word(y));
    }
    same.into()
}

/// The part of a key shown to recognise it.
pub fn display_prefix(secret: &str) -> String {
    secret.chars().take(DISPLAY_PREFIX_CHARS).collect()
}

/// Masks a secret for display: a fixed `****` and, for secrets long enough
/// that it gives nothing away, the last four characters.
pub fn mask(secret: &str) -> String {
    let mut out = String::new();
    mask_into(&mut out, secret);
    out
}

/// Appends [`mask`]`(secret)` to `out` without allocating (request logs
/// mask header values this way).
pub fn mask_into(out: &mut String, secret: &str) {
    if secret.is_empty() {
        return;
    }
    out.push_str("****");
    // A replay's or the playground's single-use grant shows nothing of
    // itself (a client key shows its tail, to tell keys apart).
    let token = secret.strip_prefix("Bearer ").unwrap_or(secret);
    if token.starts_with(GRANT_PREFIX) {
        return;
    }
    // The last four characters, when there are at least twelve.
    let mut starts = secret.char_indices().rev().map(|(i, _)| i);
    let tail = starts.nth(3);
    if let (Some(i), Some(_)) = (tail, starts.nth(7)) {
        out.push_str(&secret[i..]);
    }
}

/// Whether `shown` is the masked form of `secret` (used so that applying an
/// exported configuration keeps the stored secret).
pub fn is_mask_of(shown: &str, secret: &str) -> bool {
    shown.starts_with("****") && ct_eq(mask(secret).as_bytes(), shown.as_bytes())
}

/// Whether a string looks like a mask rather than a real secret.
pub fn looks_masked(shown: &str) -> bool {
    shown.starts_with("****")
}

/// Whether `s` is 64 lower-case hex digits.
pub fn is_hash_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ct_eq_is_equality() {
        let base: Vec<u8> = (0u8..70).map(|i| i.wrapping_mul(37)).collect();
        for len in 0..base.len() {
            let a = &base[..len];
            assert!(super::ct_eq(a, a));
            // A difference anywhere, in any bit of the byte.
            for at in 0..len {
                for bit in 0..8 {
                    let mut b = a.to_vec();
                    b[at] ^= 1 << bit;
                    assert!(!super::ct_eq(a, &b), "len {len}, byte {at}, bit {bit}");
                }
            }
            // A prefix, or one byte more (a zero: the padding of a word).
            if len > 0 {
                assert!(!super::ct_eq(a, &a[..len - 1]));
            }
            let mut longer = a.to_vec();
            longer.push(0);
            assert!(!super::ct_eq(a, &longer));
        }
    }

    #[test]
    fn a_grant_is_masked_whole() {
        let mut out = String::new();
        mask_into(&mut out, "Bearer llmgw-grant-0123456789abcdef0123");
        assert_eq!(out, "****");
        out.clear();
        mask_into(&mut out, "llmgw-grant-0123456789abcdef0123");
        assert_eq!(out, "****");
        out.clear();
        mask_into(&mut out, "Bearer sk-0123456789abcdef");
        assert_eq!(out, "****cdef");
    }
    use super::*;

    #[test]
    fn keys_have_prefix_and_length() {
        let random: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37)).collect();
        let k = key_from_random(&random).unwrap();
        assert!(k.starts_with(KEY_PREFIX));
        assert_eq!(k.len(), KEY_PREFIX.len() + KEY_RANDOM_CHARS);
        assert!(key_from_random(&[255; 64]).is_none());
    }

    #[test]
    fn masking() {
        assert_eq!(mask(""), "");
        assert_eq!(mask("short"), "****");
        assert_eq!(mask("sk-abcdefghijklmnop"), "****mnop");
        // Characters, not bytes: eleven are too few, twelve show four.
        assert_eq!(mask("abcdefghijk"), "****");
        assert_eq!(mask("abcdefghijkl"), "****ijkl");
        assert_eq!(mask("ééééééééééé"), "****");
        assert_eq!(mask("éééééééééééé"), "****éééé");
        assert_eq!(mask("ab\u{1f600}cdefghij\u{1f600}k"), "****ij\u{1f600}k");
        let mut out = String::from("a, ");
        mask_into(&mut out, "Bearer sk-llmgw-abcdefghijklmnop");
        assert_eq!(out, "a, ****mnop");
        assert!(is_mask_of("****mnop", "sk-abcdefghijklmnop"));
        assert!(!is_mask_of("****mnoq", "sk-abcdefghijklmnop"));
        assert!(!is_mask_of("sk-abcdefghijklmnop", "sk-abcdefghijklmnop"));
    }

    #[test]
    fn hashing() {
        let h = hash_hex("abc");
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(is_hash_hex(&h));
        assert!(!is_hash_hex("ABC"));
        assert!(ct_eq(&hash("x"), &hash("x")));
        assert!(!ct_eq(&hash("x"), &hash("y")));
    }
}
