"""The API surface through the official SDKs: every endpoint the gateway
serves, streaming and not, answered by the mock through the gateway."""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest

from conftest import Gateway, sse_data, sse_events, uid

TEXT = "tok0 tok1 tok2 tok3 "


def test_chat_non_streaming(gw: Gateway) -> None:
    up = f"chat-{uid()}"
    model = gw.add_model([f"mock:{up}"])
    _, key = gw.add_key()
    raw = gw.openai(key).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hello there world"}]
    )
    assert raw.headers.get("x-llmgw-request-id")
    r = raw.parse()
    assert r.choices[0].message.content == TEXT
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (3, 4)
    # The upstream saw the target's model name, not the client's.
    sent = gw.mock.requests(up)
    assert len(sent) == 1 and sent[0]["body_json"]["model"] == up
    assert sent[0]["path"] == "/v1/chat/completions"


def test_chat_streaming_without_include_usage_gets_no_usage_chunk(gw: Gateway) -> None:
    up = f"chat-s-{uid()}"
    model = gw.add_model([f"mock:{up}"])
    _, key = gw.add_key()
    chunks = list(
        gw.openai(key).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert chunks, "no chunks"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == TEXT
    # No usage chunk (empty choices + usage) and no usage anywhere.
    assert all(c.choices for c in chunks), [c for c in chunks if not c.choices]
    assert all(getattr(c, "usage", None) is None for c in chunks)
    # ...although the gateway asked the upstream for it.
    sent = gw.mock.requests(up)
    assert len(sent) == 1
    assert sent[0]["body_json"]["stream_options"] == {"include_usage": True}


def test_chat_streaming_raw_bytes_have_no_usage_chunk_and_end_with_done(gw: Gateway) -> None:
    model = gw.add_model([f"mock:chat-r-{uid()}"])
    _, key = gw.add_key()
    r = httpx.post(
        f"{gw.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.content)
    assert sse_data(events[-1]) == "[DONE]"
    for e in events[:-1]:
        data = json.loads(sse_data(e))
        assert data["choices"], f"usage chunk reached the client: {e}"
        assert data.get("usage") is None, e


def test_chat_streaming_with_include_usage_gets_the_usage_chunk(gw: Gateway) -> None:
    up = f"chat-u-{uid()}"
    model = gw.add_model([f"mock:{up}"])
    _, key = gw.add_key()
    chunks = list(
        gw.openai(key).chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "one two"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == TEXT
    usage_chunks = [c for c in chunks if not c.choices]
    assert len(usage_chunks) == 1, chunks
    u = usage_chunks[0].usage
    assert u is not None and (u.prompt_tokens, u.completion_tokens) == (2, 4)
    assert chunks[-1] is usage_chunks[0]


def test_chat_streaming_with_include_usage_false_gets_no_usage_chunk(gw: Gateway) -> None:
    up = f"chat-f-{uid()}"
    model = gw.add_model([f"mock:{up}"])
    _, key = gw.add_key()
    chunks = list(
        gw.openai(key).chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": False},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    assert all(c.choices and c.usage is None for c in chunks)
    (sent,) = gw.mock.requests(up)
    assert sent["body_json"]["stream_options"]["include_usage"] is True


def test_completions(gw: Gateway) -> None:
    model = gw.add_model([f"mock:cmpl-{uid()}"])
    _, key = gw.add_key()
    r = gw.openai(key).completions.create(model=model, prompt="say hello now")
    assert r.choices[0].text == TEXT
    assert r.usage is not None and (r.usage.prompt_tokens, r.usage.completion_tokens) == (3, 4)


def test_completions_streaming(gw: Gateway) -> None:
    model = gw.add_model([f"mock:cmpl-s-{uid()}"])
    _, key = gw.add_key()
    chunks = list(gw.openai(key).completions.create(model=model, prompt="x", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == TEXT


def test_embeddings(gw: Gateway) -> None:
    up = f"emb-{uid()}"
    model = gw.add_model([f"mock:{up}"], "--type", "embedding")
    _, key = gw.add_key()
    c = gw.openai(key)
    # The SDK asks for base64 by default and decodes it.
    r = c.embeddings.create(model=model, input=["first text", "second"])
    assert [d.index for d in r.data] == [0, 1]
    assert all(len(d.embedding) == 16 for d in r.data)
    r = c.embeddings.create(model=model, input="x", dimensions=8, encoding_format="float")
    assert len(r.data) == 1 and len(r.data[0].embedding) == 8
    assert all(s["path"] == "/v1/embeddings" for s in gw.mock.requests(up))


def test_responses(gw: Gateway) -> None:
    model = gw.add_model([f"mock:resp-{uid()}"])
    _, key = gw.add_key()
    r = gw.openai(key).responses.create(model=model, input="hello there")
    assert r.output_text == TEXT
    assert r.usage is not None and (r.usage.input_tokens, r.usage.output_tokens) == (2, 4)


def test_responses_streaming(gw: Gateway) -> None:
    model = gw.add_model([f"mock:resp-s-{uid()}"])
    _, key = gw.add_key()
    events = list(gw.openai(key).responses.create(model=model, input="hello there", stream=True))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == TEXT
    assert events[-1].type == "response.completed"
    assert events[-1].response.usage.output_tokens == 4


def test_models_list_shows_only_the_models_the_key_may_use(gw: Gateway) -> None:
    a = gw.add_model([f"mock:list-{uid()}"], prefix="la")
    b = gw.add_model([f"mock:list-{uid()}"], prefix="lb")
    c = gw.add_model([f"mock:list-{uid()}"], prefix="lc")
    _, restricted = gw.add_key([a, b])
    _, everything = gw.add_key()
    ids = sorted(m.id for m in gw.openai(restricted).models.list())
    assert ids == sorted([a, b])
    all_ids = {m.id for m in gw.openai(everything).models.list()}
    assert {a, b, c} <= all_ids


def test_models_list_accepts_an_anthropic_style_key(gw: Gateway) -> None:
    a = gw.add_model([f"mocka:list-a-{uid()}"], prefix="la")
    _, key = gw.add_key([a])
    r = httpx.get(
        f"{gw.url}/v1/models",
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [m["id"] for m in body["data"]] == [a]
    assert body["data"][0]["type"] == "model" and body["has_more"] is False


def test_anthropic_messages(gw: Gateway) -> None:
    up = f"msg-{uid()}"
    model = gw.add_model([f"mocka:{up}"])
    _, key = gw.add_key()
    m = gw.anthropic(key).messages.create(
        model=model, max_tokens=64, messages=[{"role": "user", "content": "hello there you"}]
    )
    assert m.content[0].type == "text" and m.content[0].text == TEXT
    assert (m.usage.input_tokens, m.usage.output_tokens) == (3, 4)
    sent = gw.mock.requests(up)
    assert len(sent) == 1 and sent[0]["path"] == "/v1/messages"


def test_anthropic_messages_streaming(gw: Gateway) -> None:
    model = gw.add_model([f"mocka:msg-s-{uid()}"])
    _, key = gw.add_key()
    with gw.anthropic(key).messages.stream(
        model=model, max_tokens=64, messages=[{"role": "user", "content": "hello there"}]
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == TEXT
    assert final.usage.output_tokens == 4
    assert final.usage.input_tokens == 2
    assert final.stop_reason == "end_turn"


def test_count_tokens_forwarded_to_an_anthropic_target(gw: Gateway) -> None:
    up = f"ct-{uid()}"
    model = gw.add_model([f"mocka:{up}"])
    _, key = gw.add_key()
    r = gw.anthropic(key).messages.count_tokens(
        model=model, messages=[{"role": "user", "content": "one two three four five"}]
    )
    assert r.input_tokens == 5  # the mock's word count: it answered
    sent = gw.mock.requests(up)
    assert [s["path"] for s in sent] == ["/v1/messages/count_tokens"]


def test_count_tokens_estimated_locally_for_an_openai_only_model(gw: Gateway) -> None:
    up = f"ct-local-{uid()}"
    model = gw.add_model([f"mock:{up}"])
    _, key = gw.add_key()
    raw = gw.anthropic(key).messages.with_raw_response.count_tokens(
        model=model, messages=[{"role": "user", "content": "one two three four five"}]
    )
    r = raw.parse()
    assert r.input_tokens > 0
    assert gw.mock.requests(up) == []
    # The local answer is logged like any other, bodies included...
    rec = gw.log(raw.headers["x-llmgw-request-id"])
    assert rec["status"] == 200 and rec["provider"] == "llmgw"
    assert f'"input_tokens":{r.input_tokens}' in rec["response_body"]
    # ...and without bodies for a key that does not log them.
    _, quiet = gw.add_key(None, "--no-log-bodies")
    raw = gw.anthropic(quiet).messages.with_raw_response.count_tokens(
        model=model, messages=[{"role": "user", "content": "one two three four five"}]
    )
    rec = gw.log(raw.headers["x-llmgw-request-id"])
    assert rec["status"] == 200
    assert not rec.get("response_body") and not rec.get("request_body")


def test_a_model_serves_only_the_endpoints_of_its_type(gw: Gateway) -> None:
    """`--type` decides which endpoints a model serves; any other gets a
    400 in the client's protocol before an upstream is tried, and `model
    list`, `model get` and `route explain` show the type."""
    up = f"typed-{uid()}"
    emb = gw.add_model([f"mock:{up}"], "--type", "embedding")
    chat = gw.add_model([f"mock:{up}"])
    _, key = gw.add_key()
    c = gw.openai(key)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model=emb, messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 400
    assert f"model '{emb}' has type 'embedding'" in e.value.message
    assert "models of type 'chat'" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        c.embeddings.create(model=chat, input="x")
    assert f"model '{chat}' has type 'chat'" in e.value.message
    with pytest.raises(anthropic.BadRequestError) as e:
        gw.anthropic(key).messages.create(model=emb, max_tokens=5,
                                          messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["error"]["type"] == "invalid_request_error", e.value.body
    assert gw.mock.requests(up) == []
    # The refusal is in the log as refused.
    rec = gw.log(e.value.response.headers["x-llmgw-request-id"])
    assert rec["status"] == 400 and rec["outcome"] == "refused", rec
    # Served by the right endpoint, and changed by update.
    assert len(c.embeddings.create(model=emb, input="x").data) == 1
    gw.cli("model", "update", emb, "--type", "chat")
    gw.sync()
    assert c.chat.completions.create(model=emb, messages=[{"role": "user", "content": "hi"}]).choices
    gw.cli("model", "update", emb, "--type", "embedding")
    gw.sync()
    # The CLI shows the type, and explains the refusal.
    types = {m["name"]: m["type"] for m in gw.cli("model", "list")}
    assert (types[emb], types[chat]) == ("embedding", "chat")
    assert gw.cli("model", "get", emb)["type"] == "embedding"
    x = gw.cli("route", "explain", emb)
    assert x["type"] == "embedding" and "models of type 'chat'" in x["error"], x
    x = gw.cli("route", "explain", emb, "--protocol", "embeddings")
    assert x["type"] == "embedding" and x.get("error", "") == "", x
    p = gw.cli_raw("model", "add", f"m-{uid()}", "--target", f"mock:{up}", "--type", "video")
    assert p.returncode != 0 and "video" in p.stderr
