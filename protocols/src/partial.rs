//! Tool-call arguments that a max-tokens cut left unfinished, as an
//! object. A client whose protocol carries arguments as an object (an
//! Anthropic whole answer's `input`, a Gemini `functionCall.args`) cannot
//! be given the cut text; it gets the longest prefix that is complete
//! JSON, closed: `{"city": "Paris", "unit": "cel` becomes
//! `{"city": "Paris"}`, as the SDKs' own partial-JSON readers give it. A
//! member whose scalar value (string, number, literal) was cut is left out;
//! a cut object or array is kept with its complete elements
//! (`{"q": {"tags": ["a", "b", "c` becomes `{"q": {"tags": ["a", "b"]}}`).
//! The stop reason tells the client that the answer was cut.

use serde_json::{Map, Value};

/// What an open container expects next.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    Key,
    Colon,
    Value,
    /// A value is complete: `,` or the close comes next.
    Next,
}

/// `arguments` as an object: parsed whole when it is complete JSON,
/// else closed after its last complete member (see the module docs). A
/// text that does not open an object gives an empty one.
pub fn object(arguments: &str) -> Map<String, Value> {
    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(arguments) {
        return m;
    }
    for (end, closers) in closings(arguments).iter().rev() {
        let mut candidate = String::with_capacity(end + closers.len());
        candidate.push_str(&arguments[..*end]);
        candidate.push_str(closers);
        if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&candidate) {
            return m;
        }
    }
    Map::new()
}

/// serde_json's own nesting limit: deeper text is not read.
const MAX_DEPTH: usize = 128;

/// How many of the last cut points are tried.
const TRIED: usize = 8;

/// The last [`TRIED`] prefixes of `text` that end after a complete value or
/// an opening bracket, each as its end and the brackets that close it; in
/// order. Kept as positions, so memory stays bounded by the depth of the
/// text, not its length.
fn closings(text: &str) -> std::collections::VecDeque<(usize, String)> {
    let b = text.as_bytes();
    let mut out = std::collections::VecDeque::with_capacity(TRIED);
    // Open containers: the closing byte and what each expects.
    let mut stack: Vec<(u8, Expect)> = Vec::new();
    let mut i = 0;
    let close = |end: usize, stack: &[(u8, Expect)]| {
        let closers: String = stack.iter().rev().map(|&(c, _)| char::from(c)).collect();
        (end, closers)
    };
    let out_push = |out: &mut std::collections::VecDeque<(usize, String)>, cut| {
        if out.len() == TRIED {
            out.pop_front();
        }
        out.push_back(cut);
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'{' | b'[' => {
                if let Some(top) = stack.last_mut() {
                    top.1 = Expect::Next;
                }
                let (closer, expect) = if c == b'{' {
                    (b'}', Expect::Key)
                } else {
                    (b']', Expect::Value)
                };
                stack.push((closer, expect));
                if stack.len() > MAX_DEPTH {
                    // serde_json would refuse the text anyway.
                    break;
                }
                i += 1;
                out_push(&mut out, close(i, &stack));
            }
            b'}' | b']' => {
                stack.pop();
                i += 1;
                if stack.is_empty() {
                    out_push(&mut out, (i, String::new()));
                    break;
                }
                out_push(&mut out, close(i, &stack));
            }
            b',' => {
                if let Some(top) = stack.last_mut() {
                    top.1 = if top.0 == b'}' {
                        Expect::Key
                    } else {
                        Expect::Value
                    };
                }
                i += 1;
            }
            b':' => {
                if let Some(top) = stack.last_mut() {
                    top.1 = Expect::Value;
                }
                i += 1;
            }
            b'"' => {
                // The string's end, past escapes; none: cut inside it.
                let mut j = i + 1;
                let mut end = None;
                while j < b.len() {
                    match b[j] {
                        b'\\' => j += 2,
                        b'"' => {
                            end = Some(j + 1);
                            break;
                        }
                        _ => j += 1,
                    }
                }
                let Some(end) = end else { break };
                i = end;
                if let Some(top) = stack.last_mut() {
                    if top.1 == Expect::Key {
                        top.1 = Expect::Colon;
                    } else {
                        top.1 = Expect::Next;
                        out_push(&mut out, close(i, &stack));
                    }
                }
            }
            _ => {
                // A number or a literal: complete only where a delimiter
                // follows it (at the end of the text it may be cut).
                let start = i;
                while i < b.len()
                    && !matches!(b[i], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                {
                    i += 1;
                }
                if i == b.len() || start == i {
                    break;
                }
                if let Some(top) = stack.last_mut() {
                    top.1 = Expect::Next;
                }
                out_push(&mut out, close(i, &stack));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(s: &str) -> Value {
        Value::Object(object(s))
    }

    #[test]
    fn a_complete_object_is_parsed_as_it_is() {
        assert_eq!(
            obj(r#"{"city": "Paris", "n": [1, 2]}"#),
            json!({"city": "Paris", "n": [1, 2]})
        );
    }

    #[test]
    fn a_cut_object_keeps_its_complete_members() {
        assert_eq!(obj(r#"{"city":"Paris""#), json!({"city": "Paris"}));
        assert_eq!(obj(r#"{"city":"Paris","#), json!({"city": "Paris"}));
        assert_eq!(
            obj(r#"{"city":"Paris","unit":"cel"#),
            json!({"city": "Paris"})
        );
        assert_eq!(obj(r#"{"city":"Paris","unit""#), json!({"city": "Paris"}));
        assert_eq!(obj(r#"{"city":"Paris","unit":"#), json!({"city": "Paris"}));
        assert_eq!(obj(r#"{"n": 12, "m": 3"#), json!({"n": 12}));
        assert_eq!(obj(r#"{"ok": true, "x": nu"#), json!({"ok": true}));
        assert_eq!(obj(r#"{"a": "x\"y", "b": "\u00e9"#), json!({"a": "x\"y"}));
    }

    #[test]
    fn nested_values_are_closed_at_their_last_complete_element() {
        assert_eq!(
            obj(r#"{"q": {"tags": ["a", "b", "c"#),
            json!({"q": {"tags": ["a", "b"]}})
        );
        assert_eq!(obj(r#"{"q": {"#), json!({"q": {}}));
        assert_eq!(
            obj(r#"{"rows": [[1, 2], [3"#),
            json!({"rows": [[1, 2], []]})
        );
    }

    #[test]
    fn long_and_deep_cut_texts_cost_memory_by_depth_not_length() {
        let long = format!("{{\"xs\": [{}", "1, ".repeat(200_000));
        let got = obj(&long);
        assert_eq!(got["xs"].as_array().map(Vec::len), Some(200_000));
        // Read down to the nesting limit only.
        let deep = format!("{{\"a\": {}", "[".repeat(100_000));
        let mut v = &obj(&deep)["a"];
        let mut depth = 1;
        while let Some(inner) = v.as_array().and_then(|a| a.first()) {
            v = inner;
            depth += 1;
        }
        assert!((2..=MAX_DEPTH).contains(&depth), "{depth}");
    }

    #[test]
    fn nothing_usable_is_an_empty_object() {
        for s in ["", "{", r#"{"ci"#, "[1, 2]", "\"text\"", "nonsense"] {
            assert_eq!(obj(s), json!({}), "{s:?}");
        }
    }

    #[test]
    fn every_prefix_of_an_object_gives_an_object_whose_members_are_the_originals() {
        let whole = json!({"city": "Paris", "days": [1, 2, {"x": null}], "deep": {"k": "v\"w"}, "f": -1.5e3});
        let text = whole.to_string();
        for end in 0..=text.len() {
            let Some(prefix) = text.get(..end) else {
                continue;
            };
            let got = object(prefix);
            for (k, v) in &got {
                let orig = &whole[k];
                // A member is whole, or (the last one) a cut container whose
                // parts are prefixes of the original's.
                if v != orig {
                    assert!(v.is_array() || v.is_object(), "{prefix:?} -> {k}: {v}");
                }
            }
        }
    }
}
