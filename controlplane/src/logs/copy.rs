//! PostgreSQL's `COPY ... FROM STDIN` text format, written: a row per line,
//! values separated by tabs, `\N` for NULL, and backslash, tab, newline
//! and carriage return escaped in a text. Bytes go as `bytea`'s hex form.
//! Log ingest sends its largest tables this way
//! (`ingest/write_postgres.rs`, `deltas.rs`): the server parses each value
//! with its column's own input function, so an integer fits an `INTEGER`,
//! `SMALLINT` or `BIGINT` column alike, which the binary format would not.
//!
//! Texts must hold no NUL character (PostgreSQL stores none; ingest
//! replaces them before).

use std::io::Write as _;

/// Rows being written.
#[derive(Default)]
pub struct CopyText {
    buf: Vec<u8>,
    /// Whether the current row has a value yet.
    started: bool,
}

impl CopyText {
    pub fn with_capacity(bytes: usize) -> CopyText {
        CopyText {
            buf: Vec::with_capacity(bytes),
            started: false,
        }
    }

    fn sep(&mut self) {
        if self.started {
            self.buf.push(b'\t');
        }
        self.started = true;
    }

    pub fn int(&mut self, v: i64) {
        self.sep();
        // Writing to a Vec cannot fail.
        let _ = write!(self.buf, "{v}");
    }

    /// A float as the shortest decimal that reads back as the same value.
    pub fn float(&mut self, v: f64) {
        self.sep();
        let _ = write!(self.buf, "{v:?}");
    }

    pub fn null(&mut self) {
        self.sep();
        self.buf.extend_from_slice(b"\\N");
    }

    pub fn text(&mut self, v: &str) {
        self.sep();
        let bytes = v.as_bytes();
        let mut from = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escaped: &[u8] = match b {
                b'\\' => b"\\\\",
                b'\t' => b"\\t",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                _ => continue,
            };
            self.buf.extend_from_slice(&bytes[from..i]);
            self.buf.extend_from_slice(escaped);
            from = i + 1;
        }
        self.buf.extend_from_slice(&bytes[from..]);
    }

    /// `bytea` in hex: `\x` and two digits a byte, its backslash escaped.
    pub fn bytes(&mut self, v: &[u8]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.sep();
        self.buf.reserve(3 + 2 * v.len());
        self.buf.extend_from_slice(b"\\\\x");
        for &b in v {
            self.buf.push(HEX[usize::from(b >> 4)]);
            self.buf.push(HEX[usize::from(b & 0xf)]);
        }
    }

    pub fn opt_int(&mut self, v: Option<i64>) {
        match v {
            Some(v) => self.int(v),
            None => self.null(),
        }
    }

    pub fn opt_text(&mut self, v: Option<&str>) {
        match v {
            Some(v) => self.text(v),
            None => self.null(),
        }
    }

    pub fn opt_float(&mut self, v: Option<f64>) {
        match v {
            Some(v) => self.float(v),
            None => self.null(),
        }
    }

    /// Ends the current row.
    pub fn end_row(&mut self) {
        self.buf.push(b'\n');
        self.started = false;
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_values_and_escapes() {
        let mut c = CopyText::default();
        c.int(-42);
        c.text("a\tb\nc\rd\\e é");
        c.null();
        c.bytes(&[0x00, 0xab, 0x7f]);
        c.end_row();
        c.opt_int(None);
        c.opt_text(Some(""));
        c.float(0.1);
        c.float(1e-7);
        c.opt_float(None);
        c.end_row();
        assert_eq!(
            String::from_utf8(c.into_bytes()).unwrap(),
            "-42\ta\\tb\\nc\\rd\\\\e é\t\\N\t\\\\x00ab7f\n\\N\t\t0.1\t1e-7\t\\N\n"
        );
    }

    #[test]
    fn floats_read_back_exactly() {
        for v in [0.1 + 0.2, 1.0 / 3.0, 123_456_789.123_456_78, 5e-324, 1e300] {
            let mut c = CopyText::default();
            c.float(v);
            let text = String::from_utf8(c.into_bytes()).unwrap();
            assert_eq!(
                text.parse::<f64>().unwrap().to_bits(),
                v.to_bits(),
                "{text}"
            );
        }
    }
}
