//! Large request bodies stored once by content (#18): the parts that
//! agents and applications send again on every request (a system prompt,
//! the tool definitions, the earlier turns of a conversation) are kept in
//! `request_log_pieces` once per UTC day, and a details block
//! (`details.rs`) holds their hashes in place of the bytes, and the
//! body's last piece as it is ([`stored_form`]).
//!
//! **Pieces.** A request body ([`PIECED`]: the client's and the upstream
//! one) of at least [`MIN_FIELD`] bytes is cut into pieces where its
//! content says (content-defined chunking, FastCDC: [`MIN_PIECE`] to
//! [`MAX_PIECE`] bytes, [`AVG_PIECE`] on average), so a turn that adds
//! to a conversation, or moves a marker in it, changes the pieces around
//! the change only; fixed offsets would shift every piece after an
//! insertion. Each piece is named by the first [`HASH_BYTES`] bytes of its
//! SHA-256, and stored as `0x01` and a zstd frame of its bytes, without a
//! dictionary: pieces are large enough to compress on their own, and
//! no dictionary need be kept for them.
//!
//! **Once a day.** A piece's row is keyed by its record's UTC day and its
//! hash, so body retention drops a day's pieces with that day's blocks
//! (PostgreSQL: the day partitions of both; SQLite: a day's pieces once
//! its last block is gone), and no piece is shared across days. Ingest
//! writes a batch's new pieces in the batch's transaction with `ON
//! CONFLICT DO NOTHING` (in key order, so concurrent batches cannot
//! deadlock), and remembers ([`Known`]) the pieces of committed batches so
//! it neither compresses nor sends them again.
//!
//! Bodies below [`MIN_FIELD`] stay in their block, where the dictionary
//! and the block's other records compress them (docs/benchmarks.md,
//! "Bodies stored by content").

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::ops::Range;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use sqlx::AnyConnection;

use super::details;
use crate::store::StoreError;

/// The detail fields that are cut into pieces (their places in
/// `details::FIELDS`): the request bodies, which repeat; responses rarely
/// do.
pub const PIECED: [usize; 2] = [details::REQUEST_BODY, details::UPSTREAM_REQUEST_BODY];
/// [`PIECED`] as the bits of a block's column of pieced fields.
pub const PIECED_BITS: u8 = (1 << details::REQUEST_BODY) | (1 << details::UPSTREAM_REQUEST_BODY);
/// A body shorter than this stays whole in its block.
pub const MIN_FIELD: usize = 16 * 1024;
/// FastCDC's bounds on a piece's size.
const MIN_PIECE: u32 = 1024;
const AVG_PIECE: u32 = 4 * 1024;
const MAX_PIECE: u32 = 16 * 1024;
/// The bytes of SHA-256 that name a piece: 128 bits, which no body's
/// pieces collide in by chance (2^64 pieces would be needed), at half
/// the cost of the whole digest in every block that refers to them.
pub const HASH_BYTES: usize = 16;
/// A piece's name.
pub type Hash = [u8; HASH_BYTES];
/// A piece of a body: its hash and where it is in the body.
pub type Cut = (Hash, Range<usize>);
/// A piece's row: its record's UTC day (ms) and its hash.
pub type Key = (i64, Hash);
/// The first byte of a stored piece: a zstd frame follows.
const ZSTD: u8 = 1;
/// A piece decompresses to at most this: a damaged row cannot make a read
/// allocate without bound. Well above [`MAX_PIECE`], so pieces stored
/// before a change of the bounds still read.
const MAX_PLAIN: u64 = 1024 * 1024;
/// A body put together from pieces is at most this long (as a block's
/// records are, `details::MAX_DECODED`): a damaged block that names one
/// piece many times cannot make a read allocate without bound.
const MAX_BODY: usize = 512 * 1024 * 1024;
/// Pieces read per statement.
const READ_PER_STATEMENT: usize = 256;
const DAY_MS: i64 = 24 * 3600 * 1000;

/// The UTC day (its first millisecond) of a time.
pub fn day_of(time_ms: i64) -> i64 {
    time_ms.div_euclid(DAY_MS) * DAY_MS
}

/// The pieces of a body, in order: each piece's hash and its place in the
/// body. Empty for a body shorter than [`MIN_FIELD`].
pub fn split(body: &[u8]) -> Vec<Cut> {
    if body.len() < MIN_FIELD {
        return Vec::new();
    }
    fastcdc::v2020::FastCDC::new(body, MIN_PIECE, AVG_PIECE, MAX_PIECE)
        .map(|c| {
            let range = c.offset..c.offset + c.length;
            (hash(&body[range.clone()]), range)
        })
        .collect()
}

fn hash(bytes: &[u8]) -> Hash {
    let digest = Sha256::digest(bytes);
    let mut h = [0u8; HASH_BYTES];
    h.copy_from_slice(&digest[..HASH_BYTES]);
    h
}

fn bad(why: &str) -> StoreError {
    StoreError::Invalid(format!("a log's body pieces: {why}"))
}

/// The stored form of a piece: `0x01` and a zstd frame.
pub fn pack(cctx: &mut zstd::bulk::Compressor<'_>, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
    let frame = cctx
        .compress(plain)
        .map_err(|e| StoreError::Invalid(format!("cannot compress a log body's piece: {e}")))?;
    let mut out = Vec::with_capacity(frame.len() + 1);
    out.push(ZSTD);
    out.extend_from_slice(&frame);
    Ok(out)
}

/// A compression context for pieces: zstd's default level, no checksum
/// (the database keeps its own), the size in the frame's header.
pub fn compressor() -> Result<zstd::bulk::Compressor<'static>, StoreError> {
    let failed = |e: std::io::Error| StoreError::Invalid(format!("cannot compress: {e}"));
    let mut cctx = zstd::bulk::Compressor::new(3).map_err(failed)?;
    use zstd::zstd_safe::CParameter;
    for p in [
        CParameter::ChecksumFlag(false),
        CParameter::ContentSizeFlag(true),
    ] {
        cctx.set_parameter(p).map_err(failed)?;
    }
    Ok(cctx)
}

/// A stored piece's bytes, checked against its hash.
fn unpack(hash: &Hash, data: &[u8]) -> Result<Vec<u8>, StoreError> {
    let Some((&ZSTD, frame)) = data.split_first() else {
        return Err(bad("an unknown format"));
    };
    let mut plain = Vec::new();
    zstd::stream::Decoder::new(frame)
        .and_then(|d| d.take(MAX_PLAIN + 1).read_to_end(&mut plain))
        .map_err(|_| bad("not a zstd frame"))?;
    if plain.len() as u64 > MAX_PLAIN {
        return Err(bad("a piece too long"));
    }
    if self::hash(&plain) != *hash {
        return Err(bad("a piece that does not match its hash"));
    }
    Ok(plain)
}

/// A long body as its block holds it: the body's pieces but the last,
/// stored by content, and the last piece's bytes. Returns `None` for a
/// body of one piece (or none: shorter than [`MIN_FIELD`]), which stays
/// whole in its block; else the stored form (the number of hashes as a
/// LEB128, the hashes, the last piece) and the pieces by content.
///
/// Why the last piece stays: a conversation grows at its end, so the
/// last piece is nearly always new, and the next turn cuts it again; in
/// the block, zstd compresses it against the turns before it, where a
/// piece alone would be stored whole each time (docs/benchmarks.md,
/// "Bodies stored by content").
pub fn stored_form(body: &[u8]) -> Option<(Vec<u8>, Vec<Cut>)> {
    let mut cuts = split(body);
    let (_, last) = cuts.pop()?;
    if cuts.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(10 + cuts.len() * HASH_BYTES + last.len());
    let mut n = cuts.len() as u64;
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    for (h, _) in &cuts {
        out.extend_from_slice(h);
    }
    out.extend_from_slice(&body[last]);
    Some((out, cuts))
}

/// The hashes and the last piece of a body's [`stored_form`].
pub fn parts(stored: &[u8]) -> Result<(Vec<Hash>, &[u8]), StoreError> {
    let mut n = 0u64;
    let mut at = 0;
    loop {
        let b = *stored.get(at).ok_or_else(|| bad("a cut count"))?;
        n |= u64::from(b & 0x7f) << (7 * at);
        at += 1;
        if b & 0x80 == 0 {
            break;
        }
        if at >= 9 {
            return Err(bad("a count too large"));
        }
    }
    let n = usize::try_from(n).map_err(|_| bad("a count too large"))?;
    let end = n
        .checked_mul(HASH_BYTES)
        .and_then(|b| b.checked_add(at))
        .filter(|e| *e <= stored.len())
        .ok_or_else(|| bad("a cut hash"))?;
    let hashes = stored[at..end]
        .chunks_exact(HASH_BYTES)
        .filter_map(|h| h.try_into().ok())
        .collect();
    Ok((hashes, &stored[end..]))
}

/// A body put together again from its [`stored_form`] and the pieces
/// read.
pub fn assemble(stored: &[u8], pieces: &HashMap<Hash, Vec<u8>>) -> Result<Vec<u8>, StoreError> {
    assemble_within(stored, pieces, MAX_BODY)
}

fn assemble_within(
    stored: &[u8],
    pieces: &HashMap<Hash, Vec<u8>>,
    max: usize,
) -> Result<Vec<u8>, StoreError> {
    let (hashes, last) = parts(stored)?;
    let mut body = Vec::new();
    for h in &hashes {
        let piece = pieces.get(h).ok_or_else(|| bad("a piece is gone"))?;
        if body.len() + piece.len() > max {
            return Err(bad("a body too long"));
        }
        body.extend_from_slice(piece);
    }
    body.extend_from_slice(last);
    Ok(body)
}

/// The pieces of `hashes` stored for `day_ms`, uncompressed and checked
/// against their hashes; those not found are left out. On the caller's
/// connection: a read that held one connection and waited for a second
/// could starve the pool under concurrent reads.
pub async fn read(
    conn: &mut AnyConnection,
    day_ms: i64,
    hashes: &[Hash],
) -> Result<HashMap<Hash, Vec<u8>>, StoreError> {
    let mut wanted: Vec<&Hash> = hashes.iter().collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut found = HashMap::with_capacity(wanted.len());
    for part in wanted.chunks(READ_PER_STATEMENT) {
        let marks: Vec<String> = (2..part.len() + 2).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT hash, data FROM request_log_pieces WHERE day_ms = $1 AND hash IN ({})",
            marks.join(", ")
        );
        let mut q = sqlx::query_as::<_, (Vec<u8>, Vec<u8>)>(&sql).bind(day_ms);
        for h in part {
            q = q.bind(h.as_slice());
        }
        for (h, data) in q.fetch_all(&mut *conn).await? {
            let h: Hash = h.as_slice().try_into().map_err(|_| bad("a stored hash"))?;
            let plain = unpack(&h, &data)?;
            found.insert(h, plain);
        }
    }
    Ok(found)
}

/// Whether ingest may take [`Known`]'s word for a piece of `day_ms`, under
/// a body retention of `body_days` (0: kept as long as the logs) at `now`:
/// when the day starts at least two days after the body cutoff. Pieces of
/// older days are compressed and sent again (`ON CONFLICT DO NOTHING`
/// skips those stored).
pub fn trusted(body_days: u32, day_ms: i64, now: i64) -> bool {
    body_days == 0
        || day_ms
            >= now
                .saturating_sub(i64::from(body_days).saturating_mul(DAY_MS))
                .saturating_add(2 * DAY_MS)
}

/// Pieces most [`Known`] remembers; past it, it starts again (16 MiB at
/// most, and a day's traffic repeats far fewer).
const MAX_KNOWN: usize = 256 * 1024;

/// The pieces this control plane stored in committed batches, so that
/// ingest neither compresses nor sends them again. A remembered piece is
/// stored: its day's rows go only when body retention drops the day, and
/// ingest stores no details (so no piece) for a day that close to its
/// cutoff (`details::keeps`). Ingest trusts it only for days at least two
/// days after its own body cutoff ([`trusted`]): another control plane on
/// the database, with a clock ahead or a shorter retention, may drop a
/// day earlier than this one would.
#[derive(Default)]
pub struct Known {
    keys: Mutex<HashSet<Key>>,
}

impl Known {
    /// Whether the piece is stored.
    pub fn contains(&self, key: &Key) -> bool {
        self.keys.lock().is_ok_and(|k| k.contains(key))
    }

    /// Remembers the pieces of a committed batch.
    pub fn add(&self, keys: impl IntoIterator<Item = Key>) {
        if let Ok(mut known) = self.keys.lock() {
            for k in keys {
                if known.len() >= MAX_KNOWN {
                    known.clear();
                }
                known.insert(k);
            }
        }
    }
}

/// For tests: `len` bytes of words in no order from `seed` (text that
/// repeats a short phrase has no content to cut at: its rolling hash
/// repeats too).
#[cfg(test)]
pub(crate) fn words(mut x: u64, len: usize) -> String {
    const WORDS: [&str; 8] = [
        "read", "file", "write", "test", "agent", "diff", "run", "plan",
    ];
    let mut text = String::new();
    while text.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(WORDS[(x % 8) as usize]);
        text.push(' ');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A conversation's request as an agent sends it: the same system
    /// prompt and tools, then the turns so far.
    fn request(turns: usize) -> String {
        let tools: Vec<String> = (0..40)
            .map(|i| {
                format!(
                    "{{\"name\":\"tool_{i}\",\"description\":\"Tool {i} reads the files under a \
                     path and reports what it found, line by line ({i}).\",\"input_schema\":\
                     {{\"type\":\"object\",\"properties\":{{\"path\":{{\"type\":\"string\"}}}}}}}}"
                )
            })
            .collect();
        let turns: Vec<String> = (0..turns)
            .map(|t| {
                format!(
                    "{{\"role\":\"user\",\"content\":\"Turn {t}: {}\"}}",
                    words(t as u64 + 1, 1000 + 300 * (t % 7))
                )
            })
            .collect();
        format!(
            "{{\"model\":\"m\",\"system\":\"{}\",\"tools\":[{}],\"messages\":[{}]}}",
            words(0x2545_F491_4F6C_DD1D, 100_000),
            tools.join(","),
            turns.join(",")
        )
    }

    #[test]
    fn pieces_cover_the_body_and_repeat_across_turns() {
        let small = "x".repeat(MIN_FIELD - 1);
        assert!(split(small.as_bytes()).is_empty());

        let one = request(10);
        let two = request(11);
        let a = split(one.as_bytes());
        let b = split(two.as_bytes());
        // In order and whole.
        let mut at = 0;
        for (_, r) in &a {
            assert_eq!(r.start, at);
            assert!(r.len() <= MAX_PIECE as usize);
            at = r.end;
        }
        assert_eq!(at, one.len());
        // The next turn shares every piece but those at its end.
        let theirs: HashSet<Hash> = b.iter().map(|(h, _)| *h).collect();
        let shared = a.iter().filter(|(h, _)| theirs.contains(h)).count();
        let sizes: Vec<usize> = a.iter().map(|(_, r)| r.len()).collect();
        assert!(
            a.len() >= 4,
            "{} pieces: {sizes:?} of {}",
            a.len(),
            one.len()
        );
        assert!(sizes.iter().all(|s| *s <= MAX_PIECE as usize));
        assert!(shared + 2 >= a.len(), "{shared} of {} shared", a.len());
        // The same bytes, the same pieces.
        assert_eq!(a, split(one.as_bytes()));
    }

    #[test]
    fn pieces_are_put_together_byte_for_byte() {
        let body = format!("{}é\u{0}\\\"{}", request(3), "z".repeat(70_000));
        let mut cctx = compressor().unwrap();
        let mut stored = HashMap::new();
        let (form, cuts) = stored_form(body.as_bytes()).unwrap();
        for (h, r) in &cuts {
            let data = pack(&mut cctx, &body.as_bytes()[r.clone()]).unwrap();
            stored.insert(*h, unpack(h, &data).unwrap());
        }
        assert_eq!(assemble(&form, &stored).unwrap(), body.as_bytes());
        // All but the last piece by content; the last as bytes.
        let all = split(body.as_bytes());
        assert_eq!(cuts.len() + 1, all.len());
        let (hashes, last) = parts(&form).unwrap();
        assert_eq!(hashes.len(), cuts.len());
        assert_eq!(last, &body.as_bytes()[all[all.len() - 1].1.clone()]);
        // A short body stays whole.
        assert!(stored_form(&body.as_bytes()[..MIN_FIELD - 1]).is_none());
        assert!(stored_form(b"short").is_none());
        // A missing piece, a cut hash, a damaged row: errors, not bodies.
        let mut without = stored.clone();
        without.remove(&cuts[0].0);
        assert!(assemble(&form, &without).is_err());
        assert!(assemble(&form[..1 + HASH_BYTES * cuts.len() - 1], &stored).is_err());
        assert!(assemble(&[0xff; 12], &stored).is_err());
        assert!(assemble(&[], &stored).is_err());
        let h = cuts[0].0;
        assert!(unpack(&h, b"\x01not zstd").is_err());
        assert!(unpack(&h, b"\x09").is_err());
        assert!(unpack(&h, b"").is_err());
        // Another piece's bytes under this hash: an error.
        let other = pack(&mut cctx, &body.as_bytes()[cuts[1].1.clone()]).unwrap();
        assert!(unpack(&h, &other).is_err());
        // A piece past the bound: an error, not a cut piece.
        let long = vec![b'a'; MAX_PLAIN as usize + 1];
        assert!(unpack(&self::hash(&long), &pack(&mut cctx, &long).unwrap()).is_err());
        let at_bound = vec![b'a'; MAX_PLAIN as usize];
        let packed = pack(&mut cctx, &at_bound).unwrap();
        assert_eq!(unpack(&self::hash(&at_bound), &packed).unwrap(), at_bound);
        // A block naming one piece again and again, past the bound on a
        // body: an error.
        let mut many = vec![200, 1];
        for _ in 0..200 {
            many.extend_from_slice(&h);
        }
        let one = HashMap::from([(h, vec![b'x'; 1000])]);
        assert_eq!(
            assemble_within(&many, &one, 200_000).unwrap().len(),
            200_000
        );
        assert!(assemble_within(&many, &one, 199_999).is_err());
    }

    #[test]
    fn known_pieces_are_bounded() {
        let known = Known::default();
        let key = |i: usize| (0i64, hash(&i.to_le_bytes()));
        known.add((0..10).map(key));
        assert!(known.contains(&key(3)));
        assert!(!known.contains(&key(10)));
        known.add((10..MAX_KNOWN + 5).map(key));
        assert!(known.keys.lock().unwrap().len() <= MAX_KNOWN);
        assert!(known.contains(&key(MAX_KNOWN + 4)));
    }

    #[test]
    fn known_pieces_are_trusted_away_from_the_body_cutoff() {
        let now = 100 * DAY_MS + 5;
        assert!(trusted(0, 0, now));
        // Kept 7 days: the cutoff is day 93 (and 5 ms); days from 95 and 5
        // ms on are trusted, so day 96 is, day 95 is not.
        assert!(trusted(7, 96 * DAY_MS, now));
        assert!(!trusted(7, 95 * DAY_MS, now));
        assert!(!trusted(1, day_of(now), now));
    }

    #[test]
    fn days_are_utc() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(DAY_MS - 1), 0);
        assert_eq!(day_of(DAY_MS), DAY_MS);
        assert_eq!(day_of(-1), -DAY_MS);
    }
}
