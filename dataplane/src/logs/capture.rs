//! The capped copy of a response body that the request log keeps while the
//! response streams. It never holds more than the cap, and never much more
//! memory than it holds: bytes go into blocks of [`BLOCK`] bytes (a block
//! is never larger than what is left of the cap), so a long stream's
//! capture is not one buffer that doubles as it grows, with up to half of
//! it unused, and no byte is copied again as it grows.
//!
//! A streamed response's capture lives as long as the stream, for seconds
//! or minutes, so once it holds more than [`COMPRESS_FROM`] its filled
//! blocks are compressed (LZ4, one block at a time,
//! [`Capture::streaming`]): a stream's events repeat the same JSON keys and
//! ids, and a block shrinks to a fraction. Only the block being filled is
//! held as it is. A block that does not shrink by an eighth is kept as it
//! was. A short stream's capture is not compressed (it would save at most
//! a few KiB, for the same CPU per byte), and a non-streamed answer, held
//! for a moment only, never is (a stream read as one answer, Gemini's JSON
//! array without `alt=sse`, is compressed like a stream).
//!
//! The blocks are joined once when the stream ends, and that copy is then
//! copied into the record's encoding (so for a moment a finished capture is
//! held twice; writing the blocks into the record directly would spare one
//! copy).

use bytes::Bytes;

/// Size of a capture's blocks: the most memory a capture holds unused,
/// and the unit it compresses.
pub const BLOCK: usize = 4096;

/// A streamed capture's blocks are compressed once it holds more than
/// this.
pub const COMPRESS_FROM: usize = 4 * BLOCK;

/// A filled block.
#[derive(Debug)]
enum Sealed {
    /// As it arrived (not streamed, or it did not compress).
    Raw(Vec<u8>),
    /// LZ4-compressed, with its length before.
    Lz4 { packed: Box<[u8]>, len: usize },
}

impl Sealed {
    fn allocated(&self) -> usize {
        match self {
            Sealed::Raw(b) => b.capacity(),
            Sealed::Lz4 { packed, .. } => packed.len(),
        }
    }

    /// A filled block, compressed if it shrinks by an eighth.
    fn packed(block: Vec<u8>) -> Sealed {
        let packed = lz4_flex::block::compress(&block);
        if packed.len() < block.len() - block.len() / 8 {
            Sealed::Lz4 {
                packed: packed.into_boxed_slice(),
                len: block.len(),
            }
        } else {
            Sealed::Raw(block)
        }
    }
}

/// What the log keeps of a response, up to a cap.
#[derive(Debug, Default)]
pub struct Capture {
    /// Filled blocks.
    sealed: Vec<Sealed>,
    /// The block being filled, allocated with the room it may use, no more.
    open: Vec<u8>,
    len: usize,
    cap: usize,
    truncated: bool,
    /// Compress filled blocks (a streamed response).
    compress: bool,
    /// Past [`COMPRESS_FROM`]: every filled block is compressed.
    compressing: bool,
}

impl Capture {
    /// A capture that keeps at most `cap` bytes (0: keeps nothing), as
    /// they arrived.
    pub fn new(cap: usize) -> Self {
        Capture {
            cap,
            ..Capture::default()
        }
    }

    /// A capture for a streamed response, held while the stream lasts: its
    /// filled blocks are compressed.
    pub fn streaming(cap: usize) -> Self {
        Capture {
            cap,
            compress: true,
            ..Capture::default()
        }
    }

    /// Keeps what fits of `b` under the cap; the rest marks the capture
    /// as cut.
    pub fn push(&mut self, mut b: &[u8]) {
        let room = self.cap - self.len;
        if b.len() > room {
            self.truncated = true;
            b = &b[..room];
        }
        while !b.is_empty() {
            if self.open.len() == self.open.capacity() {
                if !self.open.is_empty() {
                    // Full: sealed (when compressing, it already was).
                    self.seal();
                }
                // A chunk larger than a block gets a block of its size.
                let size = b.len().max(BLOCK).min(self.cap - self.len);
                self.open = Vec::with_capacity(size);
            }
            let n = b.len().min(self.open.capacity() - self.open.len());
            self.open.extend_from_slice(&b[..n]);
            self.len += n;
            b = &b[n..];
            if self.compress && self.len > COMPRESS_FROM && self.open.len() == self.open.capacity()
            {
                // Full (perhaps at the cap, when nothing more comes): sealed
                // and compressed now.
                self.seal();
            }
        }
    }

    /// Seals the open block; past [`COMPRESS_FROM`] a streamed capture
    /// compresses it, and the first time also the blocks before it.
    fn seal(&mut self) {
        let full = std::mem::take(&mut self.open);
        if self.compress && !self.compressing && self.len > COMPRESS_FROM {
            self.compressing = true;
            for b in &mut self.sealed {
                if let Sealed::Raw(raw) = b {
                    *b = Sealed::packed(std::mem::take(raw));
                }
            }
        }
        self.sealed.push(if self.compressing {
            Sealed::packed(full)
        } else {
            Sealed::Raw(full)
        });
    }

    /// Bytes kept.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most it keeps (0: nothing).
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Whether bytes were left out at the cap.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Bytes of memory the blocks hold, used or not.
    pub fn allocated(&self) -> usize {
        self.sealed.iter().map(Sealed::allocated).sum::<usize>() + self.open.capacity()
    }

    /// The kept bytes in one piece (a single block as it is), leaving the
    /// capture empty.
    pub fn take(&mut self) -> Bytes {
        let sealed = std::mem::take(&mut self.sealed);
        let open = std::mem::take(&mut self.open);
        let len = std::mem::take(&mut self.len);
        if sealed.is_empty() {
            return Bytes::from(open);
        }
        // One block as it arrived: given as it is.
        let sealed = match <[Sealed; 1]>::try_from(sealed) {
            Ok([Sealed::Raw(b)]) if open.is_empty() => return Bytes::from(b),
            Ok(one) => Vec::from(one),
            Err(many) => many,
        };
        let mut out = Vec::with_capacity(len);
        for block in sealed {
            match block {
                Sealed::Raw(b) => out.extend_from_slice(&b),
                Sealed::Lz4 { packed, len } => {
                    let at = out.len();
                    out.resize(at + len, 0);
                    let whole = out
                        .get_mut(at..)
                        .map(|room| lz4_flex::block::decompress_into(&packed, room));
                    if !matches!(whole, Some(Ok(n)) if n == len) {
                        // Not possible for bytes this capture compressed;
                        // were it to happen, the record says it is cut.
                        tracing::warn!("a compressed block of a response capture did not unpack");
                        out.truncate(at);
                        self.truncated = true;
                        return Bytes::from(out);
                    }
                }
            }
        }
        out.extend_from_slice(&open);
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_stream_is_kept_up_to_the_cap_in_little_more_memory() {
        let cap = 64 * 1024 + 100;
        let mut c = Capture::new(cap);
        let mut sent = Vec::new();
        // 200-byte events, far past the cap.
        for i in 0..2_000u32 {
            let event = format!("data: {{\"i\":{i:>6},\"pad\":\"{}\"}}\n\n", "x".repeat(170));
            c.push(event.as_bytes());
            sent.extend_from_slice(event.as_bytes());
            assert!(c.len() <= cap);
            // Never more than one block beyond what is kept, and never
            // more than the cap.
            assert!(
                c.allocated() < c.len() + BLOCK,
                "{} for {}",
                c.allocated(),
                c.len()
            );
            assert!(c.allocated() <= cap);
        }
        assert!(c.truncated());
        assert_eq!(c.len(), cap);
        let kept = c.take();
        assert_eq!(&kept[..], &sent[..cap]);
        assert!(c.is_empty());
    }

    #[test]
    fn under_the_cap_everything_is_kept_and_not_marked_cut() {
        let mut c = Capture::new(10_000);
        c.push(b"hello ");
        c.push(&[b'y'; 5_000]);
        c.push(b"");
        assert!(!c.truncated());
        assert_eq!(c.len(), 5_006);
        let kept = c.take();
        assert_eq!(&kept[..6], b"hello ");
        assert_eq!(kept.len(), 5_006);
    }

    #[test]
    fn a_chunk_larger_than_a_block_gets_one_block_of_its_size() {
        let mut c = Capture::new(1 << 20);
        c.push(&[7; 3 * BLOCK + 5]);
        assert_eq!(c.allocated(), 3 * BLOCK + 5);
        c.push(&[8; 2]);
        assert_eq!(c.allocated(), 3 * BLOCK + 5 + BLOCK);
        let kept = c.take();
        assert_eq!(kept.len(), 3 * BLOCK + 7);
        assert_eq!(&kept[3 * BLOCK + 4..], &[7, 8, 8]);
    }

    #[test]
    fn a_zero_cap_keeps_nothing_and_says_so() {
        let mut c = Capture::new(0);
        c.push(b"anything");
        assert!(c.is_empty());
        assert!(c.truncated());
        assert_eq!(c.allocated(), 0);
        assert!(c.take().is_empty());
        // Nothing to cut: not marked.
        let mut c = Capture::new(0);
        c.push(b"");
        assert!(!c.truncated());
    }

    /// A chat stream's events as an upstream sends them.
    fn chat_event(i: u32) -> String {
        format!(
            "data: {{\"id\":\"chatcmpl-9f2a7c1e\",\"object\":\"chat.completion.chunk\",\"created\":1733270400,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" word{i}\"}},\"finish_reason\":null}}]}}\n\n"
        )
    }

    #[test]
    fn a_streamed_capture_at_the_cap_is_held_compressed_and_comes_back_exact() {
        let cap = 64 * 1024;
        let mut c = Capture::streaming(cap);
        let mut sent = Vec::new();
        let mut i = 0;
        while sent.len() < 2 * cap {
            let event = chat_event(i);
            c.push(event.as_bytes());
            sent.extend_from_slice(event.as_bytes());
            assert!(c.allocated() <= c.len() + BLOCK);
            i += 1;
        }
        assert!(c.truncated());
        assert_eq!(c.len(), cap);
        // Only the block being filled is held as it is; the 15 others shrink
        // to well under a quarter.
        assert!(
            c.allocated() < cap / 4,
            "{} bytes held for {cap}",
            c.allocated()
        );
        let kept = c.take();
        assert_eq!(&kept[..], &sent[..cap]);
        assert!(c.is_empty());
        assert_eq!(c.allocated(), 0);
    }

    #[test]
    fn a_streamed_capture_of_bytes_that_do_not_compress_keeps_them_as_they_were() {
        let cap = 40_000;
        let mut c = Capture::streaming(cap);
        let mut sent = Vec::new();
        // xorshift: bytes LZ4 cannot shrink.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..120 {
            let chunk: Vec<u8> = (0..500)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x.to_le_bytes()[0]
                })
                .collect();
            c.push(&chunk);
            sent.extend_from_slice(&chunk);
            assert!(c.allocated() < c.len() + BLOCK);
            assert!(c.allocated() <= cap);
        }
        assert!(c.sealed.iter().all(|b| matches!(b, Sealed::Raw(_))));
        assert_eq!(&c.take()[..], &sent[..cap]);
    }

    #[test]
    fn a_streamed_capture_mixes_large_chunks_small_ones_and_raw_blocks() {
        let mut c = Capture::streaming(1 << 20);
        let mut sent = Vec::new();
        let big: Vec<u8> = chat_event(1).bytes().cycle().take(3 * BLOCK + 5).collect();
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for i in 0..50u32 {
            let part: Vec<u8> = if i % 7 == 3 {
                big.clone()
            } else if i % 10 == 5 {
                // Larger than a block, and random: a block of its own that
                // does not compress.
                (0..BLOCK + 904)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x.to_le_bytes()[0]
                    })
                    .collect()
            } else {
                chat_event(i).into_bytes()
            };
            c.push(&part);
            sent.extend_from_slice(&part);
        }
        assert!(c.sealed.iter().any(|b| matches!(b, Sealed::Lz4 { .. })));
        assert!(c.sealed.iter().any(|b| matches!(b, Sealed::Raw(_))));
        assert!(!c.truncated());
        assert_eq!(c.len(), sent.len());
        assert_eq!(&c.take()[..], &sent[..]);
    }

    #[test]
    fn a_short_stream_is_not_compressed_a_long_one_is_from_its_start() {
        let mut c = Capture::streaming(1 << 20);
        let mut sent = Vec::new();
        let mut i = 0;
        while sent.len() <= COMPRESS_FROM - 300 {
            let event = chat_event(i);
            c.push(event.as_bytes());
            sent.extend_from_slice(event.as_bytes());
            i += 1;
        }
        assert!(c.sealed.iter().all(|b| matches!(b, Sealed::Raw(_))));
        while sent.len() <= COMPRESS_FROM + 2 * BLOCK {
            let event = chat_event(i);
            c.push(event.as_bytes());
            sent.extend_from_slice(event.as_bytes());
            i += 1;
        }
        // Past the threshold every filled block is compressed, the first
        // ones too.
        assert!(c.sealed.len() >= 5);
        assert!(c.sealed.iter().all(|b| matches!(b, Sealed::Lz4 { .. })));
        assert_eq!(&c.take()[..], &sent[..]);
    }

    #[test]
    fn a_capture_that_reaches_its_cap_past_the_threshold_is_all_compressed() {
        // The cap falls inside the fifth block: it fills, nothing more
        // comes, and the capture is held compressed while the stream goes on.
        let cap = COMPRESS_FROM + 1000;
        let mut c = Capture::streaming(cap);
        for i in 0..500 {
            c.push(chat_event(i).as_bytes());
        }
        assert!(c.truncated());
        assert!(c.open.capacity() == 0);
        assert!(c.sealed.iter().all(|b| matches!(b, Sealed::Lz4 { .. })));
        assert!(c.allocated() < cap / 4);
    }

    #[test]
    fn an_answer_that_is_not_streamed_is_never_compressed() {
        let mut c = Capture::new(1 << 20);
        for i in 0..200 {
            c.push(chat_event(i).as_bytes());
        }
        assert!(c.sealed.iter().all(|b| matches!(b, Sealed::Raw(_))));
        assert!(c.allocated() >= c.len());
    }
}
