//! End-to-end tests, over real HTTP, of the Gemini endpoints, the
//! Responses event grammar, and the content behaviours (tool calls,
//! interleaving, thinking, cache, finish reasons, cuts, in-stream errors)
//! in each of the four protocols.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{client, mock, parse_sse, post, post_json, stream, Event};
use llmgw_mock::{signature, thinking_text, Finish, Step};
use serde_json::{json, Value};

fn names(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.name.as_deref().unwrap()).collect()
}

const KEY: (&str, &str) = ("x-goog-api-key", "g-key");

fn chat_body(stream: bool) -> Value {
    json!({"model": "gpt", "stream": stream,
           "messages": [{"role": "user", "content": "weather in paris"}],
           "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}},
                     {"type": "function", "function": {"name": "get_time", "parameters": {}}}]})
}

fn responses_body(stream: bool) -> Value {
    json!({"model": "resp", "stream": stream, "input": "weather in paris",
           "tools": [{"type": "function", "name": "get_weather", "parameters": {}},
                     {"type": "function", "name": "get_time", "parameters": {}}]})
}

fn messages_body(stream: bool) -> Value {
    json!({"model": "claude", "stream": stream, "max_tokens": 100,
           "system": "be brief", "stop_sequences": ["END", "STOP"],
           "messages": [{"role": "user", "content": "weather in paris"}],
           "tools": [{"name": "get_weather", "input_schema": {}}, {"name": "get_time", "input_schema": {}}]})
}

fn gemini_body() -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": "weather in paris"}]}],
           "systemInstruction": {"parts": [{"text": "be brief"}]},
           "tools": [{"functionDeclarations": [{"name": "get_weather"}, {"name": "get_time"}]}]})
}

const GEN: &str = "/v1beta/models/gem-1:generateContent";
const SSE: &str = "/v1beta/models/gem-1:streamGenerateContent?alt=sse";

#[tokio::test]
async fn gemini_generate_count_and_models() {
    let m = mock().await;
    // No key: 403 in Gemini's error shape.
    let r = post(&m, GEN, &gemini_body(), &[]).await;
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], 403);
    assert_eq!(v["error"]["status"], "PERMISSION_DENIED");

    let v = post_json(&m, GEN, &gemini_body(), &[KEY]).await;
    let cand = &v["candidates"][0];
    assert_eq!(cand["content"]["role"], "model");
    assert_eq!(
        cand["content"]["parts"],
        json!([{"text": "tok0 tok1 tok2 tok3 "}])
    );
    assert_eq!(cand["finishReason"], "STOP");
    assert_eq!(cand["index"], 0);
    assert_eq!(v["modelVersion"], "gem-1");
    assert!(v["responseId"].is_string());
    let u = &v["usageMetadata"];
    // "weather in paris" + "be brief"
    assert_eq!(u["promptTokenCount"], 5);
    assert_eq!(u["candidatesTokenCount"], 4);
    assert_eq!(u["totalTokenCount"], 9);
    assert!(u.get("thoughtsTokenCount").is_none());

    // ?key= works too, and the recorded query has it redacted; the model
    // comes from the path.
    let path = "/v1beta/models/gem-2:generateContent?key=secret-k&x=1";
    post_json(&m, path, &gemini_body(), &[]).await;
    let rec = m.requests_for("gem-2");
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].query(), Some("key=REDACTED&x=1"));
    assert_eq!(rec[0].path(), "/v1beta/models/gem-2:generateContent");
    let list: Value = client()
        .get(format!("{}/_mock/requests?model=gem-2", m.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["query"], "key=REDACTED&x=1");
    assert_eq!(list[0]["model"], "gem-2");
    assert_eq!(
        list[0]["body_json"]["contents"][0]["parts"][0]["text"],
        "weather in paris"
    );
    assert!(!list[0].to_string().contains("secret-k"));

    // Without the /v1beta prefix (base URL http://host:port/v1beta).
    let v = post_json(&m, "/models/gem-3:countTokens", &gemini_body(), &[KEY]).await;
    assert_eq!(v["totalTokens"], 5);
    let v = post_json(
        &m,
        "/v1beta/models/gem-3:countTokens",
        &json!({"generateContentRequest": {"model": "models/gem-3", "contents": [{"parts": [{"text": "a b c"}]}]}}),
        &[KEY],
    )
    .await;
    assert_eq!(v["totalTokens"], 3);

    let v: Value = client()
        .get(format!("{}/v1beta/models", m.url()))
        .header(KEY.0, KEY.1)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["models"][0]["name"], "models/mock-model");
    assert!(v["models"][0]["supportedGenerationMethods"]
        .as_array()
        .unwrap()
        .contains(&json!("generateContent")));

    // Errors in Gemini's shape, 429 with retry-after.
    let r = post(
        &m,
        GEN,
        &gemini_body(),
        &[KEY, ("x-mock-status", "429"), ("x-mock-retry-after", "2")],
    )
    .await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(v["error"]["code"], 429);
    assert!(v["error"]["message"].is_string());
}

#[tokio::test]
async fn gemini_streams_sse_and_json_array() {
    let m = mock().await;
    let events = stream(&m, SSE, &gemini_body(), &[KEY, ("x-mock-chunks", "3")]).await;
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e.name.is_none()));
    let text: String = events
        .iter()
        .map(|e| {
            e.data["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 ");
    assert!(events[0].data["candidates"][0]
        .get("finishReason")
        .is_none());
    let last = &events[2].data;
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 3);
    assert_eq!(last["usageMetadata"]["totalTokenCount"], 8);
    // Usage on every chunk is cumulative, not a delta.
    assert_eq!(events[1].data["usageMetadata"]["candidatesTokenCount"], 2);
    let rec = &m.requests_for("gem-1")[0];
    assert!(rec.stream);
    assert_eq!(rec.query(), Some("alt=sse"));

    // Without alt=sse: one JSON array, streamed.
    let r = post(
        &m,
        "/v1beta/models/gem-1:streamGenerateContent",
        &gemini_body(),
        &[KEY],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 4);
    assert_eq!(arr[3]["candidates"][0]["finishReason"], "STOP");

    // An in-stream error in either framing.
    let events = stream(&m, SSE, &gemini_body(), &[KEY, ("x-mock-error-after", "2")]).await;
    assert_eq!(events.len(), 3);
    assert_eq!(events[2].data["error"]["code"], 503);
    assert_eq!(events[2].data["error"]["status"], "UNAVAILABLE");
    let r = post(
        &m,
        "/v1beta/models/gem-1:streamGenerateContent",
        &gemini_body(),
        &[KEY, ("x-mock-error-after", "1")],
    )
    .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[1]["error"]["status"], "UNAVAILABLE");
}

#[tokio::test]
async fn gemini_tool_calls_thinking_cache_finish() {
    let m = mock().await;
    let h = [
        KEY,
        ("x-mock-tool-calls", "3"),
        ("x-mock-thinking", "1"),
        ("x-mock-cache", "10,4"),
    ];
    let v = post_json(&m, GEN, &gemini_body(), &h).await;
    let parts = v["candidates"][0]["content"]["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 4);
    let t = thinking_text();
    assert_eq!(
        parts[0],
        json!({"text": t, "thought": true, "thoughtSignature": signature(&t)})
    );
    assert_eq!(
        parts[1]["functionCall"],
        json!({"name": "get_weather", "args": {"city": "Paris", "n": 0}})
    );
    assert_eq!(
        parts[1]["thoughtSignature"],
        signature(&format!("{t}#call"))
    );
    assert_eq!(parts[2]["functionCall"]["name"], "get_time");
    assert!(parts[2].get("thoughtSignature").is_none());
    assert_eq!(parts[3]["functionCall"]["name"], "get_weather");
    assert_eq!(parts[3]["functionCall"]["args"]["n"], 2);
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    let u = &v["usageMetadata"];
    // Prompt 5 words + 10 read + 4 written; 3 thinking; 3 calls x 4 fragments.
    assert_eq!(u["promptTokenCount"], 19);
    assert_eq!(u["cachedContentTokenCount"], 10);
    assert_eq!(u["thoughtsTokenCount"], 3);
    assert_eq!(u["candidatesTokenCount"], 12);
    assert_eq!(u["totalTokenCount"], 34);

    let events = stream(&m, SSE, &gemini_body(), &h).await;
    // 3 thought chunks, 3 call chunks.
    assert_eq!(events.len(), 6);
    assert_eq!(
        events[0].data["candidates"][0]["content"]["parts"][0]["thought"],
        true
    );
    assert_eq!(
        events[2].data["candidates"][0]["content"]["parts"][0]["thoughtSignature"],
        signature(&t)
    );
    assert_eq!(
        events[3].data["candidates"][0]["content"]["parts"][0]["thoughtSignature"],
        signature(&format!("{t}#call"))
    );
    assert_eq!(events[5].data["candidates"][0]["finishReason"], "STOP");
    assert_eq!(events[5].data["usageMetadata"]["totalTokenCount"], 34);

    for (finish, want) in [
        ("length", "MAX_TOKENS"),
        ("stop_sequence", "STOP"),
        ("content_filter", "SAFETY"),
    ] {
        let v = post_json(&m, GEN, &gemini_body(), &[KEY, ("x-mock-finish", finish)]).await;
        assert_eq!(v["candidates"][0]["finishReason"], want, "{finish}");
    }
    let events = stream(
        &m,
        SSE,
        &gemini_body(),
        &[KEY, ("x-mock-finish", "content_filter")],
    )
    .await;
    assert_eq!(events.len(), 5);
    assert_eq!(events[4].data["candidates"][0]["finishReason"], "SAFETY");
    assert!(events[4].data["candidates"][0].get("content").is_none());

    // maxOutputTokens smaller than the reply.
    let mut body = gemini_body();
    body["generationConfig"] = json!({"maxOutputTokens": 2});
    let v = post_json(&m, GEN, &body, &[KEY]).await;
    assert_eq!(v["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["text"],
        "tok0 tok1 "
    );

    // A cut in tool arguments: the cut call never arrives, MAX_TOKENS.
    let events = stream(
        &m,
        SSE,
        &gemini_body(),
        &[
            KEY,
            ("x-mock-tool-calls", "2"),
            ("x-mock-max-tokens-in-args", "1"),
        ],
    )
    .await;
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[0].data["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
        "get_weather"
    );
    assert_eq!(
        events[1].data["candidates"][0]["finishReason"],
        "MAX_TOKENS"
    );
}

#[tokio::test]
async fn gemini_records_function_responses_as_sent() {
    let m = mock().await;
    let body = json!({"contents": [
        {"role": "user", "parts": [{"text": "weather?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                                     "thoughtSignature": "c2lnOmFiYw=="}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"t": 21}}}]}
    ]});
    post_json(&m, "/v1beta/models/gem-r:generateContent", &body, &[KEY]).await;
    let rec = m.requests_for("gem-r");
    let sent = rec[0].body_json().unwrap();
    assert_eq!(
        sent["contents"][2]["parts"][0]["functionResponse"]["name"],
        "get_weather"
    );
    assert_eq!(
        sent["contents"][1]["parts"][0]["thoughtSignature"],
        "c2lnOmFiYw=="
    );
    assert_eq!(rec[0].header("x-goog-api-key").as_deref(), Some("g-key"));
}

#[tokio::test]
async fn responses_text_stream_grammar() {
    let m = mock().await;
    let body = json!({"model": "resp", "input": "a b c", "stream": true});
    let events = stream(
        &m,
        "/v1/responses",
        &body,
        &[("x-mock-chunks", "2"), ("x-mock-cache", "4,0")],
    )
    .await;
    for (k, e) in events.iter().enumerate() {
        assert_eq!(e.data["type"], e.name.as_deref().unwrap());
        assert_eq!(e.data["sequence_number"], k);
    }
    let done = &events.last().unwrap().data["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(
        done["usage"],
        json!({"input_tokens": 7, "input_tokens_details": {"cached_tokens": 4},
               "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 0},
               "total_tokens": 9})
    );
}

#[tokio::test]
async fn responses_tool_calls_and_reasoning() {
    let m = mock().await;
    let mut body = responses_body(true);
    body["include"] = json!(["reasoning.encrypted_content"]);
    let events = stream(
        &m,
        "/v1/responses",
        &body,
        &[("x-mock-tool-calls", "2"), ("x-mock-thinking", "true")],
    )
    .await;
    assert_eq!(
        names(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    for (k, e) in events.iter().enumerate() {
        assert_eq!(e.data["sequence_number"], k);
    }
    let reasoning = &events[9].data["item"];
    assert_eq!(reasoning["type"], "reasoning");
    assert_eq!(reasoning["summary"][0]["text"], thinking_text());
    assert_eq!(
        reasoning["encrypted_content"],
        signature(&format!("rs:{}", thinking_text()))
    );
    let added = &events[10].data;
    assert_eq!(added["output_index"], 1);
    assert_eq!(added["item"]["type"], "function_call");
    assert_eq!(added["item"]["name"], "get_weather");
    assert_eq!(added["item"]["arguments"], "");
    let fc_id = added["item"]["id"].as_str().unwrap();
    assert!(fc_id.starts_with("fc_"));
    assert!(added["item"]["call_id"]
        .as_str()
        .unwrap()
        .starts_with("call_"));
    let args: String = events[11..15]
        .iter()
        .map(|e| e.data["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(args, r#"{"city":"Paris","n":0}"#);
    assert_eq!(events[11].data["item_id"], fc_id);
    assert_eq!(events[15].data["arguments"], args);
    assert_eq!(events[16].data["item"]["arguments"], args);
    assert_eq!(events[16].data["item"]["status"], "completed");
    assert_eq!(events[17].data["item"]["name"], "get_time");
    let resp = &events[24].data["response"];
    assert_eq!(resp["status"], "completed");
    assert_eq!(resp["output"].as_array().unwrap().len(), 3);
    assert_eq!(resp["output"][2]["arguments"], r#"{"city":"Paris","n":1}"#);
    assert_eq!(resp["usage"]["output_tokens"], 3 + 8);
    assert_eq!(
        resp["usage"]["output_tokens_details"]["reasoning_tokens"],
        3
    );

    // Interleaved: both items added, deltas alternate output_index.
    let events = stream(
        &m,
        "/v1/responses",
        &responses_body(true),
        &[("x-mock-tool-calls", "2"), ("x-mock-interleave", "1")],
    )
    .await;
    let deltas: Vec<u64> = events
        .iter()
        .filter(|e| e.name.as_deref() == Some("response.function_call_arguments.delta"))
        .map(|e| e.data["output_index"].as_u64().unwrap())
        .collect();
    assert_eq!(deltas, [0, 1, 0, 1, 0, 1, 0, 1]);
    assert_eq!(
        events[2].name.as_deref(),
        Some("response.output_item.added")
    );
    assert_eq!(
        events[3].name.as_deref(),
        Some("response.output_item.added")
    );

    // Arguments only at the end.
    let events = stream(
        &m,
        "/v1/responses",
        &responses_body(true),
        &[("x-mock-tool-calls", "1"), ("x-mock-args-final-only", "1")],
    )
    .await;
    assert_eq!(
        names(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    assert_eq!(events[3].data["arguments"], r#"{"city":"Paris","n":0}"#);

    // Non-streaming, without include: no encrypted_content.
    let v = post_json(
        &m,
        "/v1/responses",
        &responses_body(false),
        &[("x-mock-tool-calls", "1"), ("x-mock-thinking", "1")],
    )
    .await;
    assert_eq!(v["output"][0]["type"], "reasoning");
    assert!(v["output"][0].get("encrypted_content").is_none());
    assert_eq!(v["output"][1]["type"], "function_call");
    assert_eq!(v["status"], "completed");
}

#[tokio::test]
async fn responses_incomplete_and_failed() {
    let m = mock().await;
    let events = stream(
        &m,
        "/v1/responses",
        &responses_body(true),
        &[
            ("x-mock-tool-calls", "2"),
            ("x-mock-max-tokens-in-args", "1"),
        ],
    )
    .await;
    let last = events.last().unwrap();
    assert_eq!(last.name.as_deref(), Some("response.incomplete"));
    assert_eq!(last.data["response"]["status"], "incomplete");
    assert_eq!(
        last.data["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    let cut = &last.data["response"]["output"][1];
    assert_eq!(cut["arguments"], r#"{"city":"Paris""#);
    assert_eq!(cut["status"], "incomplete");

    let v = post_json(
        &m,
        "/v1/responses",
        &responses_body(false),
        &[("x-mock-finish", "content_filter")],
    )
    .await;
    assert_eq!(v["status"], "incomplete");
    assert_eq!(v["incomplete_details"]["reason"], "content_filter");
    let mut body = responses_body(false);
    body["max_output_tokens"] = json!(3);
    let v = post_json(&m, "/v1/responses", &body, &[]).await;
    assert_eq!(v["status"], "incomplete");
    assert_eq!(v["output"][0]["content"][0]["text"], "tok0 tok1 tok2 ");

    let events = stream(
        &m,
        "/v1/responses",
        &responses_body(true),
        &[("x-mock-error-after", "1")],
    )
    .await;
    let last = events.last().unwrap();
    assert_eq!(last.name.as_deref(), Some("response.failed"));
    assert_eq!(last.data["response"]["status"], "failed");
    assert_eq!(last.data["response"]["error"]["code"], "server_error");
    assert_eq!(last.data["sequence_number"], events.len() - 1);
    let deltas = events
        .iter()
        .filter(|e| e.name.as_deref() == Some("response.output_text.delta"))
        .count();
    assert_eq!(deltas, 1);
}

#[tokio::test]
async fn chat_tool_calls() {
    let m = mock().await;
    let v = post_json(
        &m,
        "/v1/chat/completions",
        &chat_body(false),
        &[("x-mock-tool-calls", "3")],
    )
    .await;
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 3);
    let names: Vec<&str> = calls
        .iter()
        .map(|c| c["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["get_weather", "get_time", "get_weather"]);
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(
        calls[2]["function"]["arguments"],
        r#"{"city":"Paris","n":2}"#
    );
    assert_eq!(v["usage"]["completion_tokens"], 12);

    // Text first when chunks are asked for explicitly.
    let v = post_json(
        &m,
        "/v1/chat/completions",
        &chat_body(false),
        &[("x-mock-tool-calls", "1"), ("x-mock-chunks", "2")],
    )
    .await;
    assert_eq!(v["choices"][0]["message"]["content"], "tok0 tok1 ");

    let tool_deltas = |events: &[Event]| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e.raw != "[DONE]")
            .filter_map(|e| e.data["choices"][0]["delta"].get("tool_calls").cloned())
            .map(|t| t[0].clone())
            .collect()
    };
    let events = stream(
        &m,
        "/v1/chat/completions",
        &chat_body(true),
        &[("x-mock-tool-calls", "2")],
    )
    .await;
    let d = tool_deltas(&events);
    assert_eq!(d.len(), 10);
    assert_eq!(d[0]["index"], 0);
    assert_eq!(d[0]["function"]["name"], "get_weather");
    assert_eq!(d[0]["type"], "function");
    assert!(d[1].get("id").is_none());
    assert_eq!(d[5]["index"], 1);
    assert_eq!(d[5]["function"]["name"], "get_time");
    let args1: String = d[6..]
        .iter()
        .map(|x| x["function"]["arguments"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(args1, r#"{"city":"Paris","n":1}"#);
    let fin = &events[events.len() - 2].data;
    assert_eq!(fin["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(events[0].data["choices"][0]["delta"]["role"], "assistant");

    // Interleaved.
    let events = stream(
        &m,
        "/v1/chat/completions",
        &chat_body(true),
        &[("x-mock-tool-calls", "2"), ("x-mock-interleave", "true")],
    )
    .await;
    let idx: Vec<u64> = tool_deltas(&events)
        .iter()
        .map(|x| x["index"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);

    // Arguments in one final fragment.
    let events = stream(
        &m,
        "/v1/chat/completions",
        &chat_body(true),
        &[
            ("x-mock-tool-calls", "1"),
            ("x-mock-args-final-only", "true"),
        ],
    )
    .await;
    let d = tool_deltas(&events);
    assert_eq!(d.len(), 2);
    assert_eq!(d[0]["function"]["arguments"], "");
    assert_eq!(d[1]["function"]["arguments"], r#"{"city":"Paris","n":0}"#);

    // Cut in the arguments: finish length after half.
    let events = stream(
        &m,
        "/v1/chat/completions",
        &chat_body(true),
        &[
            ("x-mock-tool-calls", "1"),
            ("x-mock-max-tokens-in-args", "true"),
        ],
    )
    .await;
    let d = tool_deltas(&events);
    let args: String = d
        .iter()
        .map(|x| x["function"]["arguments"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(args, r#"{"city":"Paris""#);
    assert_eq!(
        events[events.len() - 2].data["choices"][0]["finish_reason"],
        "length"
    );
}

#[tokio::test]
async fn chat_thinking_cache_finish_and_chunk_shapes() {
    let m = mock().await;
    let mut body = chat_body(true);
    body["stream_options"] = json!({"include_usage": true});
    let events = stream(
        &m,
        "/v1/chat/completions",
        &body,
        &[
            ("x-mock-thinking", "1"),
            ("x-mock-chunks", "2"),
            ("x-mock-cache", "8,2"),
        ],
    )
    .await;
    let reasoning: String = events
        .iter()
        .filter_map(|e| {
            e.data["choices"][0]["delta"]["reasoning_content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(reasoning, thinking_text());
    let usage = &events[events.len() - 2].data["usage"];
    assert_eq!(usage["prompt_tokens"], 3 + 8 + 2);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 8);
    assert_eq!(usage["completion_tokens"], 5);
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 3);
    assert_eq!(events[events.len() - 2].data["choices"], json!([]));

    // Content and finish in one chunk; usage in the finish chunk.
    let events = stream(
        &m,
        "/v1/chat/completions",
        &body,
        &[
            ("x-mock-content-and-finish", "1"),
            ("x-mock-usage-in-finish", "1"),
        ],
    )
    .await;
    // 4 content chunks (the last with finish_reason and usage), [DONE].
    assert_eq!(events.len(), 5);
    let last = &events[3].data;
    assert_eq!(last["choices"][0]["delta"]["content"], "tok3 ");
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["usage"]["completion_tokens"], 4);
    assert_eq!(events[2].data["usage"], Value::Null);

    for (finish, want) in [
        ("length", "length"),
        ("stop_sequence", "stop"),
        ("content_filter", "content_filter"),
    ] {
        let v = post_json(
            &m,
            "/v1/chat/completions",
            &chat_body(false),
            &[("x-mock-finish", finish)],
        )
        .await;
        assert_eq!(v["choices"][0]["finish_reason"], want);
    }
    let mut small = chat_body(false);
    small["max_completion_tokens"] = json!(1);
    let v = post_json(&m, "/v1/chat/completions", &small, &[]).await;
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["choices"][0]["message"]["content"], "tok0 ");

    let v = post_json(
        &m,
        "/v1/chat/completions",
        &chat_body(false),
        &[("x-mock-thinking", "1")],
    )
    .await;
    assert_eq!(
        v["choices"][0]["message"]["reasoning_content"],
        thinking_text()
    );

    // In-stream error: data: {"error": ...}, no [DONE].
    let events = stream(
        &m,
        "/v1/chat/completions",
        &chat_body(true),
        &[("x-mock-error-after", "2")],
    )
    .await;
    assert_eq!(events.len(), 3);
    assert_eq!(events[2].data["error"]["type"], "server_error");
    assert!(events.iter().all(|e| e.raw != "[DONE]"));
}

#[tokio::test]
async fn anthropic_thinking_tools_cache_and_stops() {
    let m = mock().await;
    let h = [
        ("x-mock-tool-calls", "2"),
        ("x-mock-thinking", "1"),
        ("x-mock-cache", "6,3"),
    ];
    let v = post_json(&m, "/v1/messages", &messages_body(false), &h).await;
    let t = thinking_text();
    assert_eq!(
        v["content"][0],
        json!({"type": "thinking", "thinking": t, "signature": signature(&t)})
    );
    assert_eq!(v["content"][1]["type"], "tool_use");
    assert!(v["content"][1]["id"]
        .as_str()
        .unwrap()
        .starts_with("toolu_"));
    assert_eq!(v["content"][1]["name"], "get_weather");
    assert_eq!(v["content"][1]["input"], json!({"city": "Paris", "n": 0}));
    assert_eq!(v["content"][2]["name"], "get_time");
    assert_eq!(v["stop_reason"], "tool_use");
    // Input excludes the cache.
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 5, "output_tokens": 11,
               "cache_creation_input_tokens": 3, "cache_read_input_tokens": 6})
    );

    let events = stream(&m, "/v1/messages", &messages_body(true), &h).await;
    assert_eq!(
        names(&events),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(
        events[0].data["message"]["usage"]["cache_read_input_tokens"],
        6
    );
    assert_eq!(
        events[1].data["content_block"],
        json!({"type": "thinking", "thinking": "", "signature": ""})
    );
    assert_eq!(
        events[3].data["delta"],
        json!({"type": "thinking_delta", "thinking": "think0 "})
    );
    assert_eq!(
        events[6].data["delta"],
        json!({"type": "signature_delta", "signature": signature(&t)})
    );
    assert_eq!(events[8].data["index"], 1);
    assert_eq!(events[8].data["content_block"]["type"], "tool_use");
    assert_eq!(events[8].data["content_block"]["input"], json!({}));
    let json_args: String = events[9..13]
        .iter()
        .map(|e| {
            assert_eq!(e.data["delta"]["type"], "input_json_delta");
            e.data["delta"]["partial_json"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(json_args, r#"{"city":"Paris","n":0}"#);
    assert_eq!(events[20].data["delta"]["stop_reason"], "tool_use");
    assert_eq!(events[20].data["usage"]["output_tokens"], 11);

    // Interleave is ignored; args-final-only gives one input_json_delta.
    let events = stream(
        &m,
        "/v1/messages",
        &messages_body(true),
        &[
            ("x-mock-tool-calls", "1"),
            ("x-mock-args-final-only", "1"),
            ("x-mock-interleave", "1"),
        ],
    )
    .await;
    let deltas: Vec<&Event> = events
        .iter()
        .filter(|e| e.name.as_deref() == Some("content_block_delta"))
        .collect();
    assert_eq!(deltas.len(), 1);
    assert_eq!(
        deltas[0].data["delta"]["partial_json"],
        r#"{"city":"Paris","n":0}"#
    );

    for (finish, want, seq) in [
        ("stop", "end_turn", Value::Null),
        ("length", "max_tokens", Value::Null),
        ("stop_sequence", "stop_sequence", json!("END")),
        ("content_filter", "refusal", Value::Null),
    ] {
        let v = post_json(
            &m,
            "/v1/messages",
            &messages_body(false),
            &[("x-mock-finish", finish)],
        )
        .await;
        assert_eq!(
            (&v["stop_reason"], &v["stop_sequence"]),
            (&json!(want), &seq),
            "{finish}"
        );
        let events = stream(
            &m,
            "/v1/messages",
            &messages_body(true),
            &[("x-mock-finish", finish)],
        )
        .await;
        let delta = &events[events.len() - 2].data["delta"];
        assert_eq!(
            (&delta["stop_reason"], &delta["stop_sequence"]),
            (&json!(want), &seq)
        );
    }
    let mut small = messages_body(false);
    small["max_tokens"] = json!(3);
    let v = post_json(&m, "/v1/messages", &small, &[]).await;
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["usage"]["output_tokens"], 3);

    // Cut in the arguments: half the JSON, then max_tokens.
    let events = stream(
        &m,
        "/v1/messages",
        &messages_body(true),
        &[
            ("x-mock-tool-calls", "1"),
            ("x-mock-max-tokens-in-args", "1"),
        ],
    )
    .await;
    let partial: String = events
        .iter()
        .filter_map(|e| e.data["delta"]["partial_json"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(partial, r#"{"city":"Paris""#);
    assert_eq!(
        events[events.len() - 2].data["delta"]["stop_reason"],
        "max_tokens"
    );

    // In-stream error: event: error, overloaded_error, and the stream ends.
    let events = stream(
        &m,
        "/v1/messages",
        &messages_body(true),
        &[("x-mock-error-after", "1")],
    )
    .await;
    assert_eq!(
        names(&events),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "error"
        ]
    );
    assert_eq!(events[4].data["error"]["type"], "overloaded_error");
}

#[tokio::test]
async fn scripts_carry_the_content_knobs() {
    let m = mock().await;
    m.set_script(
        "claude",
        vec![
            Step {
                tool_calls: Some(1),
                finish: Some(Finish::Stop),
                ..Step::default()
            },
            Step {
                thinking: Some(true),
                cache: Some([1, 2]),
                ..Step::default()
            },
        ],
    );
    let v = post_json(&m, "/v1/messages", &messages_body(false), &[]).await;
    assert_eq!(v["content"][0]["type"], "tool_use");
    assert_eq!(v["stop_reason"], "end_turn");
    let v = post_json(&m, "/v1/messages", &messages_body(false), &[]).await;
    assert_eq!(v["content"][0]["type"], "thinking");
    assert_eq!(v["usage"]["cache_creation_input_tokens"], 2);

    // Through the control API, by field name; Gemini scripts go by the
    // path's model.
    let r = client()
        .post(format!("{}/_mock/script", m.url()))
        .json(&json!({"model": "gem-s", "steps": [
            {"tool_calls": 2, "thinking": true, "finish": "length", "cache": [3, 0],
             "interleave": true, "args_final_only": false, "max_tokens_in_args": false,
             "content_and_finish": false, "usage_in_finish": false, "error_after": 9}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = post_json(
        &m,
        "/v1beta/models/gem-s:generateContent",
        &gemini_body(),
        &[KEY],
    )
    .await;
    assert_eq!(v["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(v["usageMetadata"]["cachedContentTokenCount"], 3);
    let v = post_json(
        &m,
        "/v1beta/models/gem-s:generateContent",
        &gemini_body(),
        &[KEY],
    )
    .await;
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
}

#[tokio::test]
async fn reset_after_chunks_counts_argument_fragments() {
    use futures::StreamExt;
    let m = mock().await;
    let resp = post(
        &m,
        "/v1/chat/completions",
        &chat_body(true),
        &[
            ("x-mock-tool-calls", "1"),
            ("x-mock-reset-after-chunks", "2"),
        ],
    )
    .await;
    let mut received = Vec::new();
    let mut failed = false;
    let mut body = resp.bytes_stream();
    while let Some(b) = body.next().await {
        match b {
            Ok(b) => received.extend_from_slice(&b),
            Err(_) => failed = true,
        }
    }
    assert!(failed);
    // The opening delta and two fragments.
    let events = parse_sse(std::str::from_utf8(&received).unwrap());
    assert_eq!(events.len(), 3);
}

#[tokio::test]
async fn any_stop_reason_is_sent_as_it_is() {
    let m = mock().await;
    let reason = |r: &'static str| [("x-mock-stop-reason", r), KEY];
    // Whole answers and streams, in each protocol's own field.
    let v = post_json(
        &m,
        "/v1/chat/completions",
        &chat_body(false),
        &reason("weird"),
    )
    .await;
    assert_eq!(v["choices"][0]["finish_reason"], "weird");
    let events = stream(
        &m,
        "/v1/chat/completions",
        &chat_body(true),
        &reason("weird"),
    )
    .await;
    let finish = events
        .iter()
        .find_map(|e| e.data["choices"][0]["finish_reason"].as_str());
    assert_eq!(finish, Some("weird"));

    let v = post_json(
        &m,
        "/v1/messages",
        &messages_body(false),
        &reason("pause_turn"),
    )
    .await;
    assert_eq!(v["stop_reason"], "pause_turn");
    let events = stream(
        &m,
        "/v1/messages",
        &messages_body(true),
        &reason("pause_turn"),
    )
    .await;
    let delta = events
        .iter()
        .find(|e| e.name.as_deref() == Some("message_delta"))
        .unwrap();
    assert_eq!(delta.data["delta"]["stop_reason"], "pause_turn");

    let v = post_json(&m, GEN, &gemini_body(), &reason("MALFORMED_FUNCTION_CALL")).await;
    assert_eq!(
        v["candidates"][0]["finishReason"],
        "MALFORMED_FUNCTION_CALL"
    );
    let events = stream(&m, SSE, &gemini_body(), &reason("MALFORMED_FUNCTION_CALL")).await;
    let last = &events.last().unwrap().data;
    assert_eq!(
        last["candidates"][0]["finishReason"],
        "MALFORMED_FUNCTION_CALL"
    );

    let v = post_json(
        &m,
        "/v1/responses",
        &responses_body(false),
        &reason("max_output_tokens"),
    )
    .await;
    assert_eq!(
        (
            v["status"].as_str(),
            v["incomplete_details"]["reason"].as_str()
        ),
        (Some("incomplete"), Some("max_output_tokens"))
    );
    let events = stream(
        &m,
        "/v1/responses",
        &responses_body(true),
        &reason("completed"),
    )
    .await;
    let last = events.last().unwrap();
    assert_eq!(last.name.as_deref(), Some("response.completed"));
    assert_eq!(last.data["response"]["status"], "completed");

    // As a script step too.
    m.set_script(
        "claude",
        vec![Step {
            stop_reason: Some("model_context_window_exceeded".into()),
            ..Step::ok()
        }],
    );
    let v = post_json(&m, "/v1/messages", &messages_body(false), &[]).await;
    assert_eq!(v["stop_reason"], "model_context_window_exceeded");
}
