//! The capped copy of a response body that the request log keeps while the
//! response streams. It never holds more than the cap, and never much more
//! memory than it holds: bytes go into blocks of [`BLOCK`] bytes (a block
//! is never larger than what is left of the cap), so a long stream's
//! capture is not one buffer that doubles as it grows, with up to half of
//! it unused, and no byte is copied again as it grows. The blocks are
//! joined once when the stream ends, and that copy is then copied into the
//! record's encoding (so for a moment a finished capture is held twice;
//! writing the blocks into the record directly would spare one copy).

use bytes::Bytes;

/// Size of a capture's blocks: the most memory a capture holds unused.
pub const BLOCK: usize = 4096;

/// What the log keeps of a response, up to a cap.
#[derive(Debug, Default)]
pub struct Capture {
    /// Filled blocks, then the one being filled; every block was allocated
    /// with the room it may use, no more.
    blocks: Vec<Vec<u8>>,
    len: usize,
    cap: usize,
    truncated: bool,
}

impl Capture {
    /// A capture that keeps at most `cap` bytes (0: keeps nothing).
    pub fn new(cap: usize) -> Self {
        Capture {
            blocks: Vec::new(),
            len: 0,
            cap,
            truncated: false,
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
            let block = match self.blocks.last_mut() {
                Some(last) if last.len() < last.capacity() => last,
                _ => {
                    // A chunk larger than a block gets a block of its size.
                    let size = b.len().max(BLOCK).min(self.cap - self.len);
                    self.blocks.push(Vec::with_capacity(size));
                    let Some(last) = self.blocks.last_mut() else {
                        return;
                    };
                    last
                }
            };
            let n = b.len().min(block.capacity() - block.len());
            block.extend_from_slice(&b[..n]);
            self.len += n;
            b = &b[n..];
        }
    }

    /// Bytes kept.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether bytes were left out at the cap.
    /// The most it keeps (0: nothing).
    pub fn cap(&self) -> usize {
        self.cap
    }

    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Bytes of memory the blocks hold, used or not.
    pub fn allocated(&self) -> usize {
        self.blocks.iter().map(Vec::capacity).sum()
    }

    /// The kept bytes in one piece (a single block as it is), leaving the
    /// capture empty.
    pub fn take(&mut self) -> Bytes {
        let blocks = std::mem::take(&mut self.blocks);
        let len = std::mem::take(&mut self.len);
        if blocks.len() == 1 {
            return blocks
                .into_iter()
                .next()
                .map(Bytes::from)
                .unwrap_or_default();
        }
        let mut out = Vec::with_capacity(len);
        for b in &blocks {
            out.extend_from_slice(b);
        }
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
}
