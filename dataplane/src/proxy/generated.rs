//! The text an answer generated, as far as the data plane keeps it: for an
//! estimate of output tokens when the upstream reports no usage, for the
//! live view's tokens so far, and for a trace that captures content.
//!
//! A long stream's text is not kept whole: the request log's capture
//! already keeps the response up to its cap, and a second copy of a long
//! generation would grow with the stream. The first [`KEEP`] bytes are
//! kept (more when a trace captures content: its cap) and the rest is only
//! counted; an estimate scales the kept part's tokens to the whole length.

use llmgw_core::tokens::count_text;

/// Bytes of generated text kept by default.
pub const KEEP: usize = 16 * 1024;

/// The most a trace's content capture makes it keep.
pub const KEEP_MAX: usize = 1 << 20;

/// Generated text: a kept prefix and the length of the whole.
#[derive(Debug)]
pub struct Generated {
    kept: String,
    keep: usize,
    len: u64,
}

impl Default for Generated {
    fn default() -> Self {
        Generated {
            kept: String::new(),
            keep: KEEP,
            len: 0,
        }
    }
}

#[cfg(test)]
impl From<&str> for Generated {
    fn from(s: &str) -> Self {
        let mut g = Generated::default();
        g.push(s);
        g
    }
}

impl Generated {
    /// Keeps up to `bytes` (never less than [`KEEP`], never more than
    /// [`KEEP_MAX`]); set before the text comes.
    pub fn keep_at_least(&mut self, bytes: usize) {
        self.keep = self.keep.max(bytes.min(KEEP_MAX));
    }

    /// Adds generated text: kept while there is room (cut at a character
    /// boundary), counted always. Once anything was left out, nothing more
    /// is kept, so the kept text is always a prefix of the whole.
    pub fn push(&mut self, s: &str) {
        let whole = self.kept.len() as u64 == self.len;
        self.len += s.len() as u64;
        if !whole {
            return;
        }
        let room = self.keep.saturating_sub(self.kept.len());
        if s.len() <= room {
            self.kept.push_str(s);
            return;
        }
        let mut cut = room;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        self.kept.push_str(&s[..cut]);
    }

    /// Bytes generated in all.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Nothing generated.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The kept prefix.
    pub fn kept(&self) -> &str {
        &self.kept
    }

    /// Forgets the text (the length too).
    pub fn clear(&mut self) {
        self.kept.clear();
        self.len = 0;
    }

    /// Tokens of the whole text for `model`: the kept prefix counted, and
    /// the rest at the prefix's bytes per token. Builds the model's
    /// encoding if needed (blocking).
    pub fn tokens(&self, model: &str) -> u64 {
        let kept = self.kept.len() as u64;
        if kept == self.len {
            return count_text(model, &self.kept);
        }
        if kept == 0 {
            return self.len.div_ceil(4);
        }
        let counted = u128::from(count_text(model, &self.kept));
        let whole = (counted * u128::from(self.len)).div_ceil(u128::from(kept));
        u64::try_from(whole).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_generation_keeps_a_prefix_and_counts_the_rest() {
        let mut g = Generated::default();
        let word = "lorem ipsum dolor sit amet, ";
        let n = 4 * KEEP / word.len();
        for _ in 0..n {
            g.push(word);
        }
        assert_eq!(g.len(), (n * word.len()) as u64);
        assert_eq!(g.kept().len(), KEEP);
        assert!(g.kept.capacity() <= 2 * KEEP);
        // The estimate scales the prefix's tokens: within 0.1% of counting
        // the whole text (the cut splits a word).
        let whole = count_text("gpt-4o", &word.repeat(n));
        let est = g.tokens("gpt-4o");
        assert!(est.abs_diff(whole) * 1000 <= whole, "{est} against {whole}");
    }

    #[test]
    fn a_short_generation_is_counted_exactly() {
        let mut g = Generated::default();
        g.push("hello ");
        g.push("world");
        assert_eq!(g.kept(), "hello world");
        assert_eq!(g.tokens("gpt-4o"), count_text("gpt-4o", "hello world"));
        g.clear();
        assert!(g.is_empty());
        assert_eq!(g.tokens("gpt-4o"), 0);
    }

    #[test]
    fn a_cut_falls_on_a_character_boundary_and_the_kept_text_stays_a_prefix() {
        let mut g = Generated::default();
        let mut whole = "a".repeat(KEEP - 1);
        g.push(&whole);
        for s in ["éé", "b", "é"] {
            g.push(s);
            whole.push_str(s);
        }
        // "é" is two bytes: the one byte of room is left unused, and the
        // "b" after it is not kept either (it would follow dropped text).
        assert_eq!(g.kept().len(), KEEP - 1);
        assert!(whole.starts_with(g.kept()));
        assert_eq!(g.len(), whole.len() as u64);
    }

    #[test]
    fn a_trace_keeps_more_up_to_a_limit() {
        let mut g = Generated::default();
        g.keep_at_least(KEEP + 10);
        g.push(&"x".repeat(KEEP + 100));
        assert_eq!(g.kept().len(), KEEP + 10);
        let mut g = Generated::default();
        g.keep_at_least(usize::MAX);
        g.push(&"x".repeat(KEEP_MAX + 1));
        assert_eq!(g.kept().len(), KEEP_MAX);
    }
}
