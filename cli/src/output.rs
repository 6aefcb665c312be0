//! Rendering: aligned tables for people, pretty JSON for scripts.

use std::io::Write;

use anyhow::Result;
use serde::Serialize;
use serde_yaml_ng::Value;

use crate::args::OutputFormat;

/// Where a command writes its result, and in which format.
pub struct Out<'a> {
    pub w: &'a mut dyn Write,
    pub format: OutputFormat,
}

impl Out<'_> {
    pub fn is_json(&self) -> bool {
        self.format == OutputFormat::Json
    }

    /// Pretty JSON, one value, newline-terminated.
    pub fn json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        let v = normalize(value)?;
        // Rendered first, so that a failed write is a plain io::Error.
        let text = serde_json::to_string_pretty(&v)?;
        writeln!(self.w, "{text}")?;
        Ok(())
    }

    /// Compact JSON on one line (for streams of records: JSON lines).
    pub fn json_line<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        let v = normalize(value)?;
        let text = serde_json::to_string(&v)?;
        writeln!(self.w, "{text}")?;
        Ok(())
    }

    pub fn table(&mut self, table: &Table) -> Result<()> {
        self.w.write_all(table.render().as_bytes())?;
        Ok(())
    }

    pub fn line(&mut self, text: &str) -> Result<()> {
        writeln!(self.w, "{text}")?;
        Ok(())
    }
}

/// A value as a tree with struct fields in declaration order and map
/// entries (the `headers`, `request_headers` and `response_headers` maps,
/// which are hash maps) in sorted order, so that output is the same from
/// run to run.
pub fn normalize<T: Serialize + ?Sized>(value: &T) -> Result<Value> {
    let mut v = serde_yaml_ng::to_value(value)?;
    sort_maps(&mut v, false);
    Ok(v)
}

fn sort_maps(v: &mut Value, is_hash_map: bool) {
    match v {
        Value::Mapping(m) => {
            if is_hash_map {
                let mut entries: Vec<(Value, Value)> = std::mem::take(m).into_iter().collect();
                entries.sort_by_key(|(k, _)| k.as_str().map(str::to_owned));
                m.extend(entries);
            }
            for (k, child) in m.iter_mut() {
                let hash_map = k
                    .as_str()
                    .is_some_and(|k| k == "headers" || k.ends_with("_headers"));
                sort_maps(child, hash_map);
            }
        }
        Value::Sequence(items) => {
            for item in items {
                sort_maps(item, false);
            }
        }
        _ => {}
    }
}

/// Columns aligned by width, two spaces apart; empty cells show as "-".
pub struct Table {
    header: Option<Vec<String>>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with a header row.
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: Some(header.iter().map(|h| (*h).to_string()).collect()),
            rows: Vec::new(),
        }
    }

    /// A table without a header, e.g. name/value pairs.
    pub fn plain() -> Self {
        Self {
            header: None,
            rows: Vec::new(),
        }
    }

    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows
            .push(cells.into_iter().map(|c| clean(c.into())).collect());
    }

    pub fn render(&self) -> String {
        let all: Vec<&Vec<String>> = self.header.iter().chain(self.rows.iter()).collect();
        let ncols = all.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut widths = vec![0usize; ncols];
        for r in &all {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut s = String::new();
        for r in &all {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(c);
                if i + 1 < r.len() {
                    let pad = widths[i] - c.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            s.push_str(line.trim_end());
            s.push('\n');
        }
        s
    }
}

/// One line per cell, and "-" for nothing.
fn clean(c: String) -> String {
    let c = if c.contains(['\n', '\r', '\t']) {
        c.replace(['\n', '\r', '\t'], " ")
    } else {
        c
    };
    if c.trim().is_empty() {
        "-".to_string()
    } else {
        c
    }
}

/// A list's STATUS cell: "ok", or "BROKEN (field, field)" for a stored
/// object that cannot be decrypted or parsed.
pub fn status(broken: &[llmgw_proto::v1::BrokenField]) -> String {
    if broken.is_empty() {
        return "ok".to_string();
    }
    let fields: Vec<&str> = broken.iter().map(|b| b.field.as_str()).collect();
    format!("BROKEN ({})", fields.join(", "))
}

/// The `broken` row of a detail view: each field with its reason.
pub fn broken_detail(broken: &[llmgw_proto::v1::BrokenField]) -> String {
    broken
        .iter()
        .map(|b| format!("{}: {}", b.field, b.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn table_alignment() {
        let mut t = Table::new(&["NAME", "PROTOCOL", "URL"]);
        t.row(["openai", "openai", "https://api.openai.com/v1"]);
        t.row(["a", "", "http://x"]);
        t.row(["much-longer-name", "anthropic", "http://y"]);
        let want = "\
NAME              PROTOCOL   URL
openai            openai     https://api.openai.com/v1
a                 -          http://x
much-longer-name  anthropic  http://y
";
        assert_eq!(t.render(), want);
    }

    #[test]
    fn table_without_header_and_no_trailing_spaces() {
        let mut t = Table::plain();
        t.row(["name", "k"]);
        t.row(["created_at", ""]);
        t.row(["multi", "a\nb"]);
        assert_eq!(
            t.render(),
            "name        k\ncreated_at  -\nmulti       a b\n"
        );
        let mut t = Table::new(&["A", "B"]);
        t.row(["long-value", ""]);
        for line in t.render().lines() {
            assert_eq!(line, line.trim_end());
        }
        // Widths count characters, not bytes.
        let mut t = Table::new(&["N", "X"]);
        t.row(["héé", "1"]);
        assert_eq!(t.render(), "N    X\nhéé  1\n");
    }

    #[test]
    fn header_maps_are_sorted() {
        #[derive(Serialize)]
        struct P {
            name: String,
            headers: HashMap<String, String>,
        }
        let headers: HashMap<String, String> = ["z", "a", "m", "b", "y", "c"]
            .iter()
            .map(|k| ((*k).to_string(), "v".to_string()))
            .collect();
        let v = normalize(&P {
            name: "p".into(),
            headers,
        })
        .unwrap();
        let text = serde_json::to_string(&v).unwrap();
        assert_eq!(
            text,
            r#"{"name":"p","headers":{"a":"v","b":"v","c":"v","m":"v","y":"v","z":"v"}}"#
        );
    }
}
