//! JSON Schema cleaning for Gemini. Gemini's function `parameters` and
//! `responseSchema` take a subset of OpenAPI 3.0's Schema object (`type`,
//! `format`, `description`, `nullable`, `enum`, `properties`, `required`,
//! `items`, `anyOf`, `minItems`/`maxItems`, `minProperties`/
//! `maxProperties`, `minLength`/`maxLength`, `pattern`, `minimum`/
//! `maximum`, `propertyOrdering`) and answers 400 to anything else. Tools
//! written for OpenAI or Anthropic use full JSON Schema, so
//! [`for_gemini`] rewrites what has an equivalent and removes the rest:
//!
//! - `$ref` into `$defs`/`definitions` is inlined (a recursive reference,
//!   which cannot be inlined, becomes a bare `{"type": "object"}`);
//! - `oneOf` becomes `anyOf`; an `allOf` is merged into its schema;
//! - a `{"type": "null"}` branch of `anyOf`, and `"null"` in a type array,
//!   become `nullable: true`; a type array of several other types becomes
//!   an `anyOf` of one schema per type;
//! - `const` becomes an `enum` of one; an `enum` with non-string values
//!   (Gemini takes strings only) is moved into the description;
//! - `exclusiveMinimum`/`exclusiveMaximum` (numbers) become `minimum`/
//!   `maximum` when those are absent (approximate: the bound becomes
//!   inclusive);
//! - a string `format` other than `date-time`/`enum`, and a number format
//!   other than `int32`/`int64`/`float`/`double`, is removed;
//! - `required` keeps only names that are in `properties`;
//! - everything else (`$schema`, `$id`, `additionalProperties`,
//!   `patternProperties`, `unevaluatedProperties`, `default`, `examples`,
//!   `title`, `not`, `if`/`then`/`else`, ...) is removed.

use serde_json::{json, Map, Value};

/// Keys copied as they are.
const KEPT: &[&str] = &[
    "description",
    "nullable",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "propertyOrdering",
];

/// How deep references are followed before giving up on a schema.
const MAX_DEPTH: usize = 32;

/// `schema` in the subset Gemini accepts.
pub fn for_gemini(schema: &Value) -> Value {
    let mut stack = Vec::new();
    clean(schema, schema, &mut stack, 0)
}

/// The schema a local `$ref` points to.
fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    if pointer.is_empty() {
        return Some(root);
    }
    root.pointer(pointer)
}

fn clean(node: &Value, root: &Value, stack: &mut Vec<String>, depth: usize) -> Value {
    let Some(obj) = node.as_object() else {
        // `true` (anything) or something that is not a schema.
        return json!({});
    };
    if depth > MAX_DEPTH {
        return json!({"type": "object"});
    }
    // A reference: the target, inlined, with the referring schema's own
    // keys (a description) on top.
    if let Some(Value::String(reference)) = obj.get("$ref") {
        if stack.contains(reference) {
            let mut out = Map::new();
            out.insert("type".into(), json!("object"));
            if let Some(d) = obj.get("description") {
                out.insert("description".into(), d.clone());
            }
            return Value::Object(out);
        }
        let Some(target) = resolve(root, reference) else {
            return json!({"type": "object"});
        };
        stack.push(reference.clone());
        let mut inlined = clean(target, root, stack, depth + 1);
        stack.pop();
        let mut rest = obj.clone();
        rest.remove("$ref");
        if !rest.is_empty() {
            if let (Value::Object(io), Value::Object(ro)) = (
                &mut inlined,
                clean(&Value::Object(rest), root, stack, depth + 1),
            ) {
                for (k, v) in ro {
                    io.insert(k, v);
                }
            }
        }
        return inlined;
    }
    // allOf: merged into the schema itself.
    if let Some(Value::Array(all)) = obj.get("allOf") {
        let mut merged = obj.clone();
        merged.remove("allOf");
        for sub in all {
            let sub = match sub.get("$ref").and_then(Value::as_str) {
                Some(r) => resolve(root, r).unwrap_or(sub),
                None => sub,
            };
            if let Some(so) = sub.as_object() {
                merge_into(&mut merged, so);
            }
        }
        return clean(&Value::Object(merged), root, stack, depth + 1);
    }

    let mut out = Map::new();
    let mut nullable = obj
        .get("nullable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut types: Vec<String> = match obj.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    if types.len() > 1 && types.iter().any(|t| t == "null") {
        nullable = true;
        types.retain(|t| t != "null");
    }

    for key in KEPT {
        if let Some(v) = obj.get(*key) {
            out.insert((*key).to_string(), v.clone());
        }
    }
    if let Some(min) = obj.get("exclusiveMinimum").filter(|v| v.is_number()) {
        out.entry("minimum").or_insert_with(|| min.clone());
    }
    if let Some(max) = obj.get("exclusiveMaximum").filter(|v| v.is_number()) {
        out.entry("maximum").or_insert_with(|| max.clone());
    }

    let first_type = types.first().cloned();
    if let Some(Value::String(f)) = obj.get("format") {
        let ok = match first_type.as_deref() {
            Some("string") => f == "date-time" || f == "enum",
            Some("integer") => f == "int32" || f == "int64",
            Some("number") => matches!(f.as_str(), "float" | "double" | "int32" | "int64"),
            _ => false,
        };
        if ok && types.len() == 1 {
            out.insert("format".into(), json!(f));
        }
    }

    // enum / const
    let values = match (obj.get("enum"), obj.get("const")) {
        (Some(Value::Array(e)), _) => Some(e.clone()),
        (None, Some(c)) => Some(vec![c.clone()]),
        _ => None,
    };
    if let Some(mut values) = values {
        if values.iter().any(Value::is_null) {
            nullable = true;
            values.retain(|v| !v.is_null());
        }
        if values.iter().all(Value::is_string) {
            if !values.is_empty() {
                out.insert("enum".into(), Value::Array(values));
                if types.is_empty() {
                    types.push("string".into());
                }
            }
        } else {
            let listed: Vec<String> = values.iter().map(Value::to_string).collect();
            let note = format!("One of: {}.", listed.join(", "));
            let desc = match out.get("description").and_then(Value::as_str) {
                Some(d) if !d.is_empty() => format!("{d} {note}"),
                _ => note,
            };
            out.insert("description".into(), json!(desc));
        }
    }

    if let Some(Value::Object(props)) = obj.get("properties") {
        let mut cleaned = Map::new();
        for (name, sub) in props {
            cleaned.insert(name.clone(), clean(sub, root, stack, depth + 1));
        }
        if let Some(Value::Array(req)) = obj.get("required") {
            let req: Vec<Value> = req
                .iter()
                .filter(|r| r.as_str().is_some_and(|n| cleaned.contains_key(n)))
                .cloned()
                .collect();
            if !req.is_empty() {
                out.insert("required".into(), Value::Array(req));
            }
        }
        if !cleaned.is_empty() {
            out.insert("properties".into(), Value::Object(cleaned));
        }
        if types.is_empty() {
            types.push("object".into());
        }
    }

    match obj.get("items") {
        Some(Value::Array(tuple)) => {
            let branches: Vec<Value> = tuple
                .iter()
                .map(|s| clean(s, root, stack, depth + 1))
                .collect();
            out.insert("items".into(), json!({ "anyOf": branches }));
        }
        Some(items) => {
            out.insert("items".into(), clean(items, root, stack, depth + 1));
        }
        None => {
            if let Some(Value::Array(prefix)) = obj.get("prefixItems") {
                let branches: Vec<Value> = prefix
                    .iter()
                    .map(|s| clean(s, root, stack, depth + 1))
                    .collect();
                out.insert("items".into(), json!({ "anyOf": branches }));
            }
        }
    }
    if out.contains_key("items") && types.is_empty() {
        types.push("array".into());
    }

    // anyOf / oneOf
    let union = obj
        .get("anyOf")
        .or_else(|| obj.get("oneOf"))
        .and_then(Value::as_array);
    if let Some(branches) = union {
        let mut kept = Vec::new();
        for b in branches {
            let is_null = b.get("type").and_then(Value::as_str) == Some("null")
                && b.as_object().is_some_and(|o| o.len() == 1);
            if is_null {
                nullable = true;
            } else {
                kept.push(clean(b, root, stack, depth + 1));
            }
        }
        if kept.len() == 1 && types.is_empty() {
            // One real branch: it is the schema.
            if let Some(Value::Object(only)) = kept.pop() {
                for (k, v) in only {
                    out.entry(k).or_insert(v);
                }
            }
        } else if !kept.is_empty() {
            out.insert("anyOf".into(), Value::Array(kept));
        }
    }

    match types.len() {
        0 => {}
        1 => {
            out.insert("type".into(), json!(types[0]));
        }
        _ => {
            // Several types: one branch each, sharing nothing else.
            let branches: Vec<Value> = types.iter().map(|t| json!({ "type": t })).collect();
            out.insert("anyOf".into(), Value::Array(branches));
        }
    }
    if nullable {
        out.insert("nullable".into(), json!(true));
    }
    Value::Object(out)
}

/// Merges an `allOf` member into its schema: properties and required
/// names are united, other keys are taken where the schema lacks them.
fn merge_into(base: &mut Map<String, Value>, sub: &Map<String, Value>) {
    for (k, v) in sub {
        match (k.as_str(), base.get_mut(k)) {
            ("properties", Some(Value::Object(bp))) => {
                if let Value::Object(sp) = v {
                    for (pk, pv) in sp {
                        bp.entry(pk.clone()).or_insert_with(|| pv.clone());
                    }
                }
            }
            ("required", Some(Value::Array(br))) => {
                if let Value::Array(sr) = v {
                    for r in sr {
                        if !br.contains(r) {
                            br.push(r.clone());
                        }
                    }
                }
            }
            (_, Some(_)) => {}
            (_, None) => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_what_gemini_rejects() {
        let s = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "title": "Args",
            "additionalProperties": false,
            "properties": {
                "city": {"type": "string", "default": "Paris", "examples": ["Rome"], "format": "uri"},
                "when": {"type": "string", "format": "date-time"},
                "n": {"type": "integer", "exclusiveMinimum": 0, "format": "int32"},
                "tags": {"type": "object", "patternProperties": {"^x": {}}, "unevaluatedProperties": false}
            },
            "required": ["city", "ghost"]
        });
        assert_eq!(
            for_gemini(&s),
            json!({
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "when": {"type": "string", "format": "date-time"},
                    "n": {"type": "integer", "minimum": 0, "format": "int32"},
                    "tags": {"type": "object"}
                },
                "required": ["city"]
            })
        );
    }

    #[test]
    fn type_arrays_and_null_branches_become_nullable() {
        assert_eq!(
            for_gemini(&json!({"type": ["string", "null"], "description": "d"})),
            json!({"type": "string", "nullable": true, "description": "d"})
        );
        assert_eq!(
            for_gemini(&json!({"anyOf": [{"type": "integer"}, {"type": "null"}]})),
            json!({"type": "integer", "nullable": true})
        );
        assert_eq!(
            for_gemini(&json!({"oneOf": [{"type": "integer"}, {"type": "string"}]})),
            json!({"anyOf": [{"type": "integer"}, {"type": "string"}]})
        );
        assert_eq!(
            for_gemini(&json!({"type": ["string", "integer"]})),
            json!({"anyOf": [{"type": "string"}, {"type": "integer"}]})
        );
    }

    #[test]
    fn const_and_enums() {
        assert_eq!(
            for_gemini(&json!({"const": "celsius"})),
            json!({"type": "string", "enum": ["celsius"]})
        );
        assert_eq!(
            for_gemini(&json!({"type": "integer", "enum": [1, 2], "description": "Level."})),
            json!({"type": "integer", "description": "Level. One of: 1, 2."})
        );
        assert_eq!(
            for_gemini(&json!({"type": "string", "enum": ["a", null]})),
            json!({"type": "string", "enum": ["a"], "nullable": true})
        );
    }

    #[test]
    fn references_are_inlined_and_recursion_stops() {
        let s = json!({
            "type": "object",
            "$defs": {
                "Unit": {"type": "string", "enum": ["c", "f"]},
                "Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}}
            },
            "properties": {
                "unit": {"$ref": "#/$defs/Unit", "description": "The unit."},
                "tree": {"$ref": "#/$defs/Node"},
                "both": {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                                   {"properties": {"b": {"type": "number"}}}]}
            }
        });
        assert_eq!(
            for_gemini(&s),
            json!({
                "type": "object",
                "properties": {
                    "unit": {"type": "string", "enum": ["c", "f"], "description": "The unit."},
                    "tree": {"type": "object", "properties": {"child": {"type": "object"}}},
                    "both": {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "number"}}, "required": ["a"]}
                }
            })
        );
    }

    #[test]
    fn arrays_and_tuples() {
        assert_eq!(
            for_gemini(
                &json!({"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": true, "maxItems": 3})
            ),
            json!({"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 3})
        );
        assert_eq!(
            for_gemini(
                &json!({"type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}]})
            ),
            json!({"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "number"}]}})
        );
    }
}
