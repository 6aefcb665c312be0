//! End-to-end tests of the mock over real HTTP: reply shapes, streams,
//! behaviour controls, scripts, recording and cancellation counting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{client, mock, parse_sse, post, post_json, stream_events};
use futures::StreamExt;
use llmgw_mock::{start, Config, MockServer, Stats, Step};
use serde_json::{json, Value};

async fn wait_for_stats(m: &MockServer, want: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = m.stats();
        if want(&s) || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn chat_body(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "stream": stream,
        "messages": [
            {"role": "system", "content": "you are terse"},
            {"role": "user", "content": [{"type": "text", "text": "say hello world"}]}
        ]
    })
}

fn messages_body(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "max_tokens": 64,
        "stream": stream,
        "system": "be brief",
        "messages": [{"role": "user", "content": "hi there"}]
    })
}

#[tokio::test]
async fn chat_non_streaming_shape() {
    let m = mock().await;
    let v = post_json(&m, "/v1/chat/completions", &chat_body("gpt-x", false), &[]).await;
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-x");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(v["created"].as_u64().unwrap() > 0);
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "tok0 tok1 tok2 tok3 ");
    // "you are terse" + "say hello world" = 6 words.
    assert_eq!(v["usage"]["prompt_tokens"], 6);
    assert_eq!(v["usage"]["completion_tokens"], 4);
    assert_eq!(v["usage"]["total_tokens"], 10);

    let v = post_json(
        &m,
        "/v1/chat/completions",
        &chat_body("gpt-x", false),
        &[("x-mock-chunks", "2"), ("x-mock-no-usage", "1")],
    )
    .await;
    assert_eq!(v["choices"][0]["message"]["content"], "tok0 tok1 ");
    assert!(v.get("usage").is_none());
}

#[tokio::test]
async fn messages_and_count_tokens_shapes() {
    let m = mock().await;
    let v = post_json(&m, "/v1/messages", &messages_body("claude-x", false), &[]).await;
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-x");
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "tok0 tok1 tok2 tok3 "}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["stop_sequence"], Value::Null);
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 4, "output_tokens": 4,
               "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
    );

    let v = post_json(
        &m,
        "/v1/messages",
        &messages_body("claude-x", false),
        &[("x-mock-no-usage", "true")],
    )
    .await;
    assert_eq!(v["usage"]["input_tokens"], 0);
    assert_eq!(v["usage"]["output_tokens"], 0);

    let v = post_json(
        &m,
        "/v1/messages/count_tokens",
        &messages_body("claude-x", false),
        &[],
    )
    .await;
    assert_eq!(v, json!({"input_tokens": 4}));
}

#[tokio::test]
async fn completions_embeddings_responses_models_shapes() {
    let m = mock().await;
    let v = post_json(
        &m,
        "/v1/completions",
        &json!({"model": "inst", "prompt": "once upon a time"}),
        &[],
    )
    .await;
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "inst");
    assert_eq!(v["choices"][0]["text"], "tok0 tok1 tok2 tok3 ");
    assert_eq!(v["usage"]["prompt_tokens"], 4);

    let v = post_json(
        &m,
        "/v1/embeddings",
        &json!({"model": "emb", "input": ["a b", "c"], "encoding_format": "float", "dimensions": 3}),
        &[],
    )
    .await;
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "emb");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["data"][1]["object"], "embedding");
    let floats: Vec<f64> = v["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(floats.len(), 3);
    assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));

    // The openai SDK asks for base64 unless told otherwise.
    let v = post_json(
        &m,
        "/v1/embeddings",
        &json!({"model": "emb", "input": "x", "encoding_format": "base64"}),
        &[],
    )
    .await;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw.len(), 16 * 4);
    let first = f32::from_le_bytes(raw[..4].try_into().unwrap());
    assert!((-0.5..0.5).contains(&first));

    let v = post_json(
        &m,
        "/v1/responses",
        &json!({"model": "resp", "input": "tell me a story", "instructions": "short"}),
        &[],
    )
    .await;
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "resp");
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(v["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(v["output"][0]["content"][0]["text"], "tok0 tok1 tok2 tok3 ");
    assert_eq!(v["usage"]["input_tokens"], 5);
    assert_eq!(v["usage"]["output_tokens"], 4);
    assert_eq!(v["usage"]["total_tokens"], 9);

    let v: Value = client()
        .get(format!("{}/models", m.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "mock-model");
    assert_eq!(v["data"][0]["object"], "model");
    let v: Value = client()
        .get(format!("{}/models", m.base_url()))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(v["has_more"], false);
}

#[tokio::test]
async fn chat_stream_sends_separate_chunks_then_done() {
    let m = mock().await;
    let resp = post(
        &m,
        "/v1/chat/completions",
        &chat_body("gpt-s", true),
        &[("x-mock-chunks", "5"), ("x-mock-chunk-delay-ms", "30")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut frames = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(b) = body.next().await {
        frames.push(b.unwrap());
    }
    // Each delayed chunk arrives on its own.
    assert!(frames.len() >= 5, "{} frames", frames.len());
    let text: String = frames
        .iter()
        .map(|b| std::str::from_utf8(b).unwrap())
        .collect();
    let events = parse_sse(&text);
    assert_eq!(events.len(), 7, "{events:?}");
    assert_eq!(events.last().unwrap().raw, "[DONE]");
    let mut assembled = String::new();
    for (i, e) in events[..5].iter().enumerate() {
        let v = e.json();
        assert_eq!(v["object"], "chat.completion.chunk");
        assert_eq!(v["model"], "gpt-s");
        assert_eq!(v["choices"][0]["finish_reason"], Value::Null);
        if i == 0 {
            assert_eq!(v["choices"][0]["delta"]["role"], "assistant");
        }
        assert!(v.get("usage").is_none());
        assembled.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap());
    }
    assert_eq!(assembled, "tok0 tok1 tok2 tok3 tok4 ");
    let fin = events[5].json();
    assert_eq!(fin["choices"][0]["finish_reason"], "stop");
    assert_eq!(fin["choices"][0]["delta"], json!({}));
}

#[tokio::test]
async fn include_usage_chunk_only_when_asked() {
    let m = mock().await;
    let mut body = chat_body("gpt-u", true);
    body["stream_options"] = json!({"include_usage": true});
    let events = stream_events(post(&m, "/v1/chat/completions", &body, &[]).await).await;
    assert_eq!(events.len(), 4 + 1 + 1 + 1);
    for e in &events[..5] {
        assert_eq!(e.json()["usage"], Value::Null);
        assert!(e.json().get("usage").is_some());
    }
    let usage = events[5].json();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 6);
    assert_eq!(usage["usage"]["completion_tokens"], 4);
    assert_eq!(usage["usage"]["total_tokens"], 10);
    assert_eq!(events[6].raw, "[DONE]");

    // Not asked: no usage chunk.
    let events =
        stream_events(post(&m, "/v1/chat/completions", &chat_body("gpt-u", true), &[]).await).await;
    assert_eq!(events.len(), 6);
    assert!(events.iter().all(|e| !e.raw.contains("usage")));

    // Asked, but x-mock-no-usage: none either.
    let events = stream_events(
        post(
            &m,
            "/v1/chat/completions",
            &body,
            &[("x-mock-no-usage", "1")],
        )
        .await,
    )
    .await;
    assert_eq!(events.len(), 6);
    assert!(events.iter().all(|e| !e.raw.contains("usage")));

    // Completions streams the same way.
    let body = json!({"model": "inst", "prompt": "a b", "stream": true,
                      "stream_options": {"include_usage": true}});
    let events = stream_events(post(&m, "/v1/completions", &body, &[]).await).await;
    assert_eq!(events.len(), 7);
    let text: String = events[..4]
        .iter()
        .map(|e| e.json()["choices"][0]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 tok3 ");
    assert_eq!(events[5].json()["usage"]["prompt_tokens"], 2);
    assert_eq!(events[6].raw, "[DONE]");
}

#[tokio::test]
async fn anthropic_stream_event_order() {
    let m = mock().await;
    let events = stream_events(
        post(
            &m,
            "/v1/messages",
            &messages_body("claude-s", true),
            &[("x-mock-chunks", "3")],
        )
        .await,
    )
    .await;
    let names: Vec<&str> = events.iter().map(|e| e.name.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for e in &events {
        assert_eq!(e.json()["type"], e.name.as_deref().unwrap());
    }
    let start = events[0].json();
    assert_eq!(start["message"]["model"], "claude-s");
    assert_eq!(start["message"]["content"], json!([]));
    let usage = &start["message"]["usage"];
    assert_eq!(usage["input_tokens"], 4);
    assert_eq!(usage["cache_creation_input_tokens"], 0);
    assert_eq!(usage["cache_read_input_tokens"], 0);
    assert_eq!(
        events[1].json()["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = events[3..6]
        .iter()
        .map(|e| {
            let d = &e.json()["delta"];
            assert_eq!(d["type"], "text_delta");
            d["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 ");
    let delta = events[7].json();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 3);
}

#[tokio::test]
async fn responses_stream_events() {
    let m = mock().await;
    let body = json!({"model": "resp", "input": "a b c", "stream": true});
    let events =
        stream_events(post(&m, "/v1/responses", &body, &[("x-mock-chunks", "2")]).await).await;
    let names: Vec<&str> = events.iter().map(|e| e.name.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    for (k, e) in events.iter().enumerate() {
        let v = e.json();
        assert_eq!(v["type"], e.name.as_deref().unwrap());
        assert_eq!(v["sequence_number"], k);
    }
    assert_eq!(events[0].json()["response"]["status"], "in_progress");
    assert_eq!(events[4].json()["delta"], "tok0 ");
    assert_eq!(events[5].json()["delta"], "tok1 ");
    let done = events[9].json();
    assert_eq!(done["response"]["status"], "completed");
    assert_eq!(done["response"]["model"], "resp");
    assert_eq!(
        done["response"]["output"][0]["content"][0]["text"],
        "tok0 tok1 "
    );
    assert_eq!(done["response"]["usage"]["input_tokens"], 3);
    assert_eq!(done["response"]["usage"]["output_tokens"], 2);
    assert!(events.iter().all(|e| e.raw != "[DONE]"));
}

#[tokio::test]
async fn injected_status_uses_the_protocol_error_shape() {
    let m = mock().await;
    let resp = post(
        &m,
        "/v1/chat/completions",
        &chat_body("gpt-e", true),
        &[("x-mock-status", "503"), ("x-mock-retry-after", "2")],
    )
    .await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "2");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: Value = resp.json().await.unwrap();
    let err = &v["error"];
    assert!(err["message"].as_str().unwrap().contains("503"));
    assert_eq!(err["type"], "server_error");
    assert!(err["code"].is_string());

    let resp = post(
        &m,
        "/v1/messages",
        &messages_body("claude-e", false),
        &[("x-mock-status", "529")],
    )
    .await;
    assert_eq!(resp.status(), 529);
    assert!(resp.headers().get("retry-after").is_none());
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "overloaded_error");
    assert!(v["error"]["message"].is_string());

    let resp = post(
        &m,
        "/v1/messages",
        &messages_body("claude-e", false),
        &[("x-mock-status", "429")],
    )
    .await;
    assert_eq!(resp.status(), 429);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn scripts_are_consumed_in_order_per_model() {
    let m = mock().await;
    m.set_script(
        "a",
        vec![
            Step::status(503),
            Step::status(429).with_retry_after(1),
            Step::ok(),
            Step::status(500),
        ],
    );
    let mut seen = Vec::new();
    for model in ["a", "b", "a", "b", "a", "a", "a"] {
        let resp = post(&m, "/v1/chat/completions", &chat_body(model, false), &[]).await;
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        seen.push((model, resp.status().as_u16(), retry));
    }
    let retry1 = Some("1".to_owned());
    assert_eq!(
        seen,
        [
            ("a", 503, None),
            ("b", 200, None),
            ("a", 429, retry1),
            ("b", 200, None),
            ("a", 200, None),
            ("a", 500, None),
            ("a", 200, None),
        ]
    );

    // The same through the HTTP control API.
    let c = client();
    let r = c
        .post(format!("{}/_mock/script", m.url()))
        .json(&json!({"model": "b", "steps": [{"status": 502}, {"reset_after_chunks": 1}, {}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let left: Value = c
        .get(format!("{}/_mock/script", m.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(left["b"].as_array().unwrap().len(), 3);
    let r = post(&m, "/v1/chat/completions", &chat_body("b", false), &[]).await;
    assert_eq!(r.status(), 502);
    let r = c
        .delete(format!("{}/_mock/script", m.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = post(&m, "/v1/chat/completions", &chat_body("b", false), &[]).await;
    assert_eq!(r.status(), 200);

    // Typos are refused rather than silently ignored.
    let r = c
        .post(format!("{}/_mock/script", m.url()))
        .json(&json!({"model": "b", "steps": [{"stauts": 502}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn headers_take_precedence_over_scripts() {
    let m = mock().await;
    m.set_script("a", vec![Step::status(503), Step::status(503)]);
    // The header wins, and the step is still consumed.
    let r = post(
        &m,
        "/v1/chat/completions",
        &chat_body("a", false),
        &[("x-mock-status", "200")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = post(&m, "/v1/chat/completions", &chat_body("a", false), &[]).await;
    assert_eq!(r.status(), 503);
    let r = post(&m, "/v1/chat/completions", &chat_body("a", false), &[]).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn reset_before_first_byte_fails_the_request() {
    let m = mock().await;
    let err = client()
        .post(format!("{}/chat/completions", m.base_url()))
        .header("x-mock-reset-before-first-byte", "1")
        .json(&chat_body("gpt-r", false))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");

    // Scripted, for the next request of the model only.
    m.set_script("gpt-r", vec![Step::reset_before_first_byte()]);
    let c = client();
    let url = format!("{}/chat/completions", m.base_url());
    assert!(c
        .post(&url)
        .json(&chat_body("gpt-r", false))
        .send()
        .await
        .is_err());
    let ok = c
        .post(&url)
        .json(&chat_body("gpt-r", false))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let s = wait_for_stats(&m, |s| s.active == 0).await;
    assert_eq!(s.cancelled, 0);
    assert_eq!(s.requests, 3);
}

#[tokio::test]
async fn reset_after_chunks_truncates_the_stream() {
    let m = mock().await;
    let resp = post(
        &m,
        "/v1/chat/completions",
        &chat_body("gpt-t", true),
        &[("x-mock-reset-after-chunks", "2"), ("x-mock-chunks", "6")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut received = Vec::new();
    let mut failed = false;
    let mut body = resp.bytes_stream();
    while let Some(b) = body.next().await {
        match b {
            Ok(b) => received.extend_from_slice(&b),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the body should end with an error");
    let text = String::from_utf8(received).unwrap();
    let events = parse_sse(&text);
    assert_eq!(events.len(), 2, "{text:?}");
    assert!(!text.contains("[DONE]"));
    assert!(!text.contains("finish_reason\":\"stop"));

    // Anthropic, scripted: message_start, content_block_start, ping, 1 delta.
    m.set_script("claude-t", vec![Step::reset_after_chunks(1)]);
    let resp = post(&m, "/v1/messages", &messages_body("claude-t", true), &[]).await;
    let mut received = Vec::new();
    let mut body = resp.bytes_stream();
    let mut failed = false;
    while let Some(b) = body.next().await {
        match b {
            Ok(b) => received.extend_from_slice(&b),
            Err(_) => failed = true,
        }
    }
    assert!(failed);
    let events = parse_sse(std::str::from_utf8(&received).unwrap());
    let names: Vec<_> = events.iter().map(|e| e.name.clone().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta"
        ]
    );
    let s = wait_for_stats(&m, |s| s.active == 0).await;
    assert_eq!(s.cancelled, 0, "a deliberate cut is not a cancellation");
}

#[tokio::test]
async fn hang_then_client_drop_counts_as_cancelled() {
    let m = mock().await;
    let c = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = c
        .post(format!("{}/chat/completions", m.base_url()))
        .header("x-mock-hang", "1")
        .json(&chat_body("gpt-h", false))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    let s = wait_for_stats(&m, |s| s.cancelled == 1 && s.active == 0).await;
    assert_eq!(
        s,
        Stats {
            requests: 1,
            cancelled: 1,
            active: 0
        }
    );

    // Scripted hang, dropped by the client future going away.
    m.set_script("gpt-h", vec![Step::hang()]);
    let fut = client()
        .post(format!("{}/chat/completions", m.base_url()))
        .json(&chat_body("gpt-h", false))
        .send();
    assert!(tokio::time::timeout(Duration::from_millis(200), fut)
        .await
        .is_err());
    let s = wait_for_stats(&m, |s| s.cancelled == 2).await;
    assert_eq!((s.requests, s.cancelled, s.active), (2, 2, 0));
}

#[tokio::test]
async fn client_dropping_a_stream_counts_as_cancelled() {
    let m = mock().await;
    let resp = post(
        &m,
        "/v1/messages",
        &messages_body("claude-c", true),
        &[("x-mock-chunks", "50"), ("x-mock-chunk-delay-ms", "100")],
    )
    .await;
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(std::str::from_utf8(&first)
        .unwrap()
        .starts_with("event: message_start"));
    assert_eq!(m.stats().active, 1);
    drop(body);
    let s = wait_for_stats(&m, |s| s.cancelled == 1 && s.active == 0).await;
    assert_eq!((s.cancelled, s.active), (1, 0));

    // A stream read to the end is not cancelled.
    let events =
        stream_events(post(&m, "/v1/messages", &messages_body("claude-c", true), &[]).await).await;
    assert_eq!(events.len(), 10);
    let s = wait_for_stats(&m, |s| s.active == 0).await;
    assert_eq!((s.requests, s.cancelled), (2, 1));
}

#[tokio::test]
async fn recording_keeps_exact_bytes_and_headers() {
    let m = mock().await;
    // Odd spacing, key order and unicode must come back byte for byte.
    let raw = "{ \"stream\" :false,\n \"model\":\"rec-a\", \"messages\":[{\"role\":\"user\",\"content\":\"h\\u00e9llo  w\u{f6}rld\"}] }";
    let r = client()
        .post(format!(
            "{}/chat/completions?api-version=2024&x=1",
            m.base_url()
        ))
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-upstream")
        .header("x-custom", "v1")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    post(&m, "/v1/messages", &messages_body("rec-b", false), &[]).await;

    let reqs = m.requests();
    assert_eq!(reqs.len(), 2);
    let first = &reqs[0];
    assert_eq!(first.body.as_ref(), raw.as_bytes());
    assert_eq!(first.method, "POST");
    assert_eq!(first.path(), "/v1/chat/completions");
    assert_eq!(first.query(), Some("api-version=2024&x=1"));
    assert_eq!(first.model.as_deref(), Some("rec-a"));
    assert_eq!(
        first.header("authorization").as_deref(),
        Some("Bearer sk-upstream")
    );
    assert_eq!(m.requests_for("rec-b").len(), 1);

    let c = client();
    let list: Value = c
        .get(format!("{}/_mock/requests", m.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let r0 = &list[0];
    let body = base64::engine::general_purpose::STANDARD
        .decode(r0["body_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(body, raw.as_bytes());
    assert_eq!(r0["body"], raw);
    assert_eq!(r0["method"], "POST");
    assert_eq!(r0["path"], "/v1/chat/completions");
    assert_eq!(r0["query"], "api-version=2024&x=1");
    assert_eq!(r0["model"], "rec-a");
    assert_eq!(r0["headers"]["x-custom"], "v1");
    assert_eq!(r0["headers"]["authorization"], "Bearer sk-upstream");
    assert_eq!(r0["body_json"]["model"], "rec-a");
    assert!(r0["received_at_ms"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(r0["header_list"]
        .as_array()
        .unwrap()
        .contains(&json!(["x-custom", "v1"])));
    assert_eq!(list[1]["path"], "/v1/messages");

    let filtered: Value = c
        .get(format!("{}/_mock/requests?model=rec-b", m.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    assert_eq!(filtered[0]["model"], "rec-b");

    let stats: Value = c
        .get(format!("{}/_mock/stats", m.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats, json!({"requests": 2, "cancelled": 0, "active": 0}));

    let r = c
        .delete(format!("{}/_mock/requests", m.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(m.requests().is_empty());
    assert_eq!(m.stats().requests, 0);
}

#[tokio::test]
async fn no_record_keeps_counting() {
    let m = start(Config {
        record: false,
        ..Config::default()
    })
    .await
    .unwrap();
    post(&m, "/v1/chat/completions", &chat_body("x", false), &[]).await;
    assert!(m.requests().is_empty());
    assert_eq!(m.stats().requests, 1);
}

#[tokio::test]
async fn http2_and_keep_alive() {
    let m = mock().await;
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for _ in 0..3 {
        let r = c
            .post(format!("{}/chat/completions", m.base_url()))
            .json(&chat_body("h2", true))
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        let events = stream_events(r).await;
        assert_eq!(events.last().unwrap().raw, "[DONE]");
    }
    let reqs = m.requests();
    assert!(reqs.iter().all(|r| r.version == reqwest::Version::HTTP_2));

    // HTTP/1.1 keep-alive: many requests on one client reuse connections.
    let c = client();
    for _ in 0..5 {
        let r = c
            .post(format!("{}/chat/completions", m.base_url()))
            .json(&chat_body("h1", false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_11);
        r.bytes().await.unwrap();
    }
}

#[tokio::test]
async fn latency_and_reply_bytes() {
    let m = mock().await;
    let t = Instant::now();
    let v = post_json(
        &m,
        "/v1/chat/completions",
        &chat_body("lat", false),
        &[("x-mock-latency-ms", "150"), ("x-mock-reply-bytes", "1000")],
    )
    .await;
    assert!(t.elapsed() >= Duration::from_millis(150));
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(text.len(), 1000);
    assert!(text.starts_with("tok0 tok1 tok2 tok3 "));
    assert_eq!(v["usage"]["completion_tokens"], 4);

    // Instance defaults apply when nothing overrides them.
    let m = start(Config {
        defaults: llmgw_mock::Defaults {
            chunks: 2,
            reply_bytes: 50,
            ..llmgw_mock::Defaults::default()
        },
        ..Config::default()
    })
    .await
    .unwrap();
    let v = post_json(&m, "/v1/messages", &messages_body("d", false), &[]).await;
    let text = v["content"][0]["text"].as_str().unwrap();
    assert_eq!(text.len(), 50);
    assert!(text.starts_with("tok0 tok1 pad "));
    assert_eq!(v["usage"]["output_tokens"], 2);
}

#[tokio::test]
async fn bad_requests() {
    let m = mock().await;
    let r = client()
        .post(format!("{}/chat/completions", m.base_url()))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let r = client()
        .post(format!("{}/messages", m.base_url()))
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    let r = client()
        .get(format!("{}/nope", m.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Without the /v1 prefix works too.
    let r = client()
        .post(format!("{}/chat/completions", m.url()))
        .json(&chat_body("x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn shutdown_closes_the_port() {
    let m = mock().await;
    let url = format!("{}/healthz", m.url());
    assert_eq!(client().get(&url).send().await.unwrap().status(), 200);
    m.shutdown().await;
    assert!(client().get(&url).send().await.is_err());
}

#[test]
fn binary_prints_the_listening_address_first() {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_llmgw-mock"))
        .args(["--listen", "127.0.0.1:0", "--chunks", "3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on 127.0.0.1:")
        .map(str::to_owned);
    let result = std::panic::catch_unwind(|| {
        let port: u16 = addr.expect("listening line").parse().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let v: Value = client()
                .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
                .json(&chat_body("bin", false))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(v["choices"][0]["message"]["content"], "tok0 tok1 tok2 ");
        });
    });
    let _ = child.kill();
    let _ = child.wait();
    result.unwrap();
}
