//! Request translation seen from a client: a field that cannot be
//! translated is named by its path in the client's own body, whatever the
//! client protocol and wherever the refusal happens (decoding or encoding
//! for the target); unknown fields follow one rule in every protocol; and
//! a Responses upstream is asked for encrypted reasoning when it needs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use llmgw_protocols::{Error, Lossy, Wire};
use serde_json::{json, Value};

const PNG: &str = "iVBORw0KGgo=";
const URL: &str = "https://example.com/cat.png";

/// Decodes `body` as a `from` client's and encodes it for `to`, strict:
/// the field refused.
fn refused(from: Wire, to: Wire, body: &Value) -> String {
    let req = from
        .decode_request(body.to_string().as_bytes(), &mut Lossy::strict())
        .unwrap();
    match to.encode_request(&req, &mut Lossy::strict()) {
        Err(Error::Untranslatable { field, .. }) => field,
        other => panic!("{from:?} -> {to:?}: not refused: {other:?}"),
    }
}

/// The same, lenient: the fields dropped, and the body sent.
fn dropped(from: Wire, to: Wire, body: &Value) -> (Vec<String>, Value) {
    let mut lossy = Lossy::lenient();
    let req = from
        .decode_request(body.to_string().as_bytes(), &mut lossy)
        .unwrap();
    let out = to.encode_request(&req, &mut lossy).unwrap();
    (lossy.dropped, serde_json::from_slice(&out).unwrap())
}

/// Asserts that strict mode refuses `field` and lenient mode drops it
/// (and only it).
fn named(from: Wire, to: Wire, body: Value, field: &str) {
    assert_eq!(refused(from, to, &body), field, "{from:?} -> {to:?}");
    let (fields, _) = dropped(from, to, &body);
    assert_eq!(fields, vec![field.to_string()], "{from:?} -> {to:?}");
}

#[test]
fn an_image_url_refused_by_gemini_is_named_in_each_clients_terms() {
    // Each body puts the image where the intermediate form's index
    // differs from the client's: after a system message or item (which
    // the intermediate form keeps apart) and after a text part.
    let chat = json!({"model": "m", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": URL}}]}]});
    named(Wire::Chat, Wire::Gemini, chat, "messages[1].content[1]");

    let responses = json!({"model": "m", "input": [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [
            {"type": "input_text", "text": "what is this"},
            {"type": "input_image", "image_url": URL}]}]});
    named(
        Wire::Responses,
        Wire::Gemini,
        responses,
        "input[1].content[1]",
    );

    let anthropic = json!({"model": "m", "max_tokens": 10, "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image", "source": {"type": "url", "url": URL}}]}]});
    named(
        Wire::Anthropic,
        Wire::Gemini,
        anthropic,
        "messages[1].content[1]",
    );

    let gemini = json!({"contents": [
        {"role": "user", "parts": [{"text": "what is this"}, {"fileData": {"fileUri": URL}}]}]});
    named(Wire::Gemini, Wire::Gemini, gemini, "contents[0].parts[1]");
}

#[test]
fn an_image_in_a_tool_result_is_named_in_each_clients_terms() {
    // Chat has no images in tool results: dropped (or refused) there.
    let responses = json!({"model": "m", "input": [
        {"role": "user", "content": "weather?"},
        {"type": "function_call", "call_id": "c1", "name": "get", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": [
            {"type": "input_text", "text": "sunny"},
            {"type": "input_image", "image_url": format!("data:image/png;base64,{PNG}")}]}]});
    named(Wire::Responses, Wire::Chat, responses, "input[2].output[1]");

    let anthropic = json!({"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "get", "input": {}}]},
        {"role": "user", "content": [
            {"type": "text", "text": "here"},
            {"type": "tool_result", "tool_use_id": "c1", "content": [
                {"type": "text", "text": "sunny"},
                {"type": "image", "source": {"type": "url", "url": URL}}]}]}]});
    named(
        Wire::Anthropic,
        Wire::Chat,
        anthropic.clone(),
        "messages[2].content[1].content[1]",
    );
    // And Gemini, which takes no image URL, names the same place.
    named(
        Wire::Anthropic,
        Wire::Gemini,
        anthropic,
        "messages[2].content[1].content[1]",
    );

    // Two tool messages become one message of results in the
    // intermediate form; the second keeps its own path.
    let chat = json!({"model": "m", "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "get", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": [
            {"type": "text", "text": "rain"},
            {"type": "image_url", "image_url": {"url": URL}}]}]});
    named(Wire::Chat, Wire::Gemini, chat, "messages[3].content[1]");
}

#[test]
fn tool_call_arguments_are_named_in_each_clients_terms() {
    // Arguments that are not a JSON object cannot go to Anthropic.
    let chat = json!({"model": "m", "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get", "arguments": "[1]"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}]});
    named(
        Wire::Chat,
        Wire::Anthropic,
        chat,
        "messages[1].tool_calls[0].function.arguments",
    );

    let responses = json!({"model": "m", "input": [
        {"role": "user", "content": "go"},
        {"type": "function_call", "call_id": "c1", "name": "get", "arguments": "[1]"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"}]});
    named(
        Wire::Responses,
        Wire::Anthropic,
        responses,
        "input[1].arguments",
    );
}

#[test]
fn settings_are_named_in_each_clients_terms() {
    let gemini = json!({"contents": [{"parts": [{"text": "hi"}]}],
        "generationConfig": {"topK": 5, "seed": 3}});
    named(
        Wire::Gemini,
        Wire::Chat,
        gemini.clone(),
        "generationConfig.topK",
    );
    assert_eq!(
        refused(Wire::Gemini, Wire::Anthropic, &gemini),
        "generationConfig.seed"
    );
    let (fields, _) = dropped(Wire::Gemini, Wire::Responses, &gemini);
    assert_eq!(fields, ["generationConfig.topK", "generationConfig.seed"]);

    let schema = json!({"contents": [{"parts": [{"text": "hi"}]}],
        "generationConfig": {"responseMimeType": "application/json",
                             "responseJsonSchema": {"type": "object"}}});
    named(
        Wire::Gemini,
        Wire::Anthropic,
        schema,
        "generationConfig.responseJsonSchema",
    );

    let anthropic = json!({"model": "m", "max_tokens": 10, "stop_sequences": ["x"],
        "messages": [{"role": "user", "content": "hi"}]});
    named(
        Wire::Anthropic,
        Wire::Responses,
        anthropic,
        "stop_sequences",
    );

    let one_call = json!({"model": "m", "max_tokens": 10,
        "tools": [{"name": "get", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
        "messages": [{"role": "user", "content": "hi"}]});
    named(
        Wire::Anthropic,
        Wire::Gemini,
        one_call,
        "tool_choice.disable_parallel_tool_use",
    );

    let chat = json!({"model": "m", "seed": 1, "messages": [{"role": "user", "content": "hi"}]});
    named(Wire::Chat, Wire::Anthropic, chat, "seed");

    // A legacy `function_call` choice is named as the client wrote it.
    let legacy = json!({"model": "m", "function_call": {"mode": "any"},
        "functions": [{"name": "get"}], "messages": [{"role": "user", "content": "hi"}]});
    let mut lossy = Lossy::lenient();
    Wire::Chat
        .decode_request(legacy.to_string().as_bytes(), &mut lossy)
        .unwrap();
    assert_eq!(lossy.dropped, ["function_call"]);
}

/// An unknown field of each kind of value, at the top of a body and in
/// one of its objects.
fn unknowns() -> Value {
    json!({"x_null": null, "x_object": {}, "x_list": [], "x_false": false, "x_zero": 0,
           "x_empty": "", "x_set": {"a": 1}})
}

#[test]
fn unknown_fields_follow_one_rule_in_every_protocol() {
    // Null, {} and [] say nothing and are passed over; any other value
    // (false, 0 and "" too) is named: strict refuses, lenient drops.
    let named_ones = ["x_empty", "x_false", "x_set", "x_zero"];
    let bodies = [
        (
            Wire::Chat,
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
            "messages[0]",
        ),
        (
            Wire::Responses,
            json!({"model": "m", "input": [{"role": "user", "content": "hi"}]}),
            "input[0]",
        ),
        (
            Wire::Anthropic,
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
            "messages[0]",
        ),
        (
            Wire::Gemini,
            json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}),
            "contents[0]",
        ),
    ];
    for (wire, body, inner) in bodies {
        let list = if wire == Wire::Gemini {
            "contents"
        } else if wire == Wire::Responses {
            "input"
        } else {
            "messages"
        };
        let mut top = body.clone();
        let mut nested = body.clone();
        for (k, v) in unknowns().as_object().unwrap() {
            top[k] = v.clone();
            nested[list][0][k] = v.clone();
        }
        for (b, at) in [(top, String::new()), (nested, format!("{inner}."))] {
            let mut lenient = Lossy::lenient();
            wire.decode_request(b.to_string().as_bytes(), &mut lenient)
                .unwrap();
            let mut got = lenient.dropped.clone();
            got.sort();
            let want: Vec<String> = named_ones.iter().map(|k| format!("{at}{k}")).collect();
            assert_eq!(got, want, "{wire:?}");
            assert!(
                matches!(
                    wire.decode_request(b.to_string().as_bytes(), &mut Lossy::strict()),
                    Err(Error::Untranslatable { .. })
                ),
                "{wire:?}"
            );
        }
        // Only fields that say nothing: nothing to refuse.
        let mut quiet = body.clone();
        for k in ["x_null", "x_object", "x_list"] {
            quiet[k] = unknowns()[k].clone();
        }
        let mut strict = Lossy::strict();
        wire.decode_request(quiet.to_string().as_bytes(), &mut strict)
            .unwrap();
        assert!(strict.dropped.is_empty(), "{wire:?}");
    }
}

/// The `include` a Responses upstream gets for a Chat client's request.
fn include_for(model: &str, extra: Value) -> Option<Value> {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let req = Wire::Chat
        .decode_request(body.to_string().as_bytes(), &mut Lossy::strict())
        .unwrap();
    let out = Wire::Responses
        .encode_request(&req, &mut Lossy::strict())
        .unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["store"], json!(false));
    v.get("include").cloned()
}

#[test]
fn encrypted_reasoning_is_asked_for_whenever_the_model_reasons() {
    let asked = Some(json!(["reasoning.encrypted_content"]));
    // Reasoning models reason whether asked or not, and with store:false
    // their reasoning comes back next turn only encrypted.
    for model in [
        "o3",
        "o4-mini",
        "o1-pro",
        "gpt-5",
        "gpt-5.1-codex",
        "openai/gpt-5-mini",
        "codex-mini-latest",
    ] {
        assert_eq!(include_for(model, json!({})), asked, "{model}");
    }
    // Models that do not reason refuse the include.
    for model in [
        "gpt-4o",
        "gpt-4.1-mini",
        "gpt-5-chat-latest",
        "omni-moderation",
        "my-deployment",
    ] {
        assert_eq!(include_for(model, json!({})), None, "{model}");
    }
    // Any model the client asks to reason, once.
    assert_eq!(
        include_for("my-deployment", json!({"reasoning_effort": "low"})),
        asked
    );
    assert_eq!(
        include_for("o3", json!({"reasoning_effort": "high"})),
        asked
    );
}

#[test]
fn encrypted_reasoning_is_asked_for_when_the_conversation_carries_it() {
    // A Responses reasoning item (from an earlier turn, carried by a
    // client of another protocol) reaches a model of unknown name: it
    // reasoned before, so its next reasoning must come back too.
    let input = json!({"model": "my-deployment", "input": [
        {"role": "user", "content": "hi"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "ENC"},
        {"type": "function_call", "call_id": "c1", "name": "get", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"}]});
    let req = Wire::Responses
        .decode_request(input.to_string().as_bytes(), &mut Lossy::strict())
        .unwrap();
    let v: Value = serde_json::from_slice(
        &Wire::Responses
            .encode_request(&req, &mut Lossy::strict())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(v["include"], json!(["reasoning.encrypted_content"]));
    assert_eq!(v["input"][1]["encrypted_content"], json!("ENC"));
}
