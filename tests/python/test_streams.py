"""Broken streams: an upstream that dies mid-stream gives the client the
chunks it sent, then a terminal error event in the client's protocol, and
never a normal end (`[DONE]` / `message_stop`). The record is not a
success: outcome interrupted, status 502, and the error."""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest

from conftest import Gateway, sse_data, sse_events, sse_name, uid

MSG = [{"role": "user", "content": "break please"}]
RESET = {"x-mock-reset-after-chunks": "2"}


def test_openai_sdk_sees_the_first_chunks_then_an_error(gw: Gateway) -> None:
    model = gw.add_model([f"mock:brk-{uid()}"], "--max-attempts", "1")
    _, key = gw.add_key()
    texts: list[str] = []
    stream = gw.openai(key).chat.completions.create(
        model=model, messages=MSG, stream=True, extra_headers=RESET
    )
    with pytest.raises(openai.APIError) as e:
        for chunk in stream:
            if chunk.choices:
                texts.append(chunk.choices[0].delta.content or "")
    assert "".join(texts) == "tok0 tok1 "
    assert "upstream" in str(e.value).lower()


def test_openai_raw_stream_ends_with_an_error_event_and_no_done(gw: Gateway) -> None:
    model = gw.add_model([f"mock:brk-r-{uid()}"], "--max-attempts", "1")
    name, key = gw.add_key()
    with httpx.stream(
        "POST",
        f"{gw.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}", **RESET},
        json={"model": model, "messages": MSG, "stream": True},
        timeout=30,
    ) as r:
        assert r.status_code == 200
        rid = r.headers["x-llmgw-request-id"]
        raw = b"".join(r.iter_raw())
    assert b"[DONE]" not in raw
    events = sse_events(raw)
    datas = [json.loads(sse_data(e)) for e in events]
    contents = [d["choices"][0]["delta"].get("content") for d in datas[:-1]]
    assert contents == ["tok0 ", "tok1 "]
    last = datas[-1]
    assert set(last) == {"error"}, last
    assert last["error"]["message"] and last["error"]["type"] == "server_error"
    assert raw.endswith(b"\n\n")

    rec = gw.log(rid)
    assert rec["error"], rec
    assert rec["stream"] is True and rec["cancelled"] is False
    assert rec["status"] == 502 and rec["outcome"] == "interrupted", rec
    # Partial usage: no usage chunk arrived, so the output is estimated
    # from the text that did.
    assert rec["usage_source"] == "estimated"
    assert rec["output_tokens"] > 0 and rec["input_tokens"] > 0


def test_anthropic_sdk_sees_the_first_events_then_an_error(gw: Gateway) -> None:
    model = gw.add_model([f"mocka:brk-a-{uid()}"], "--max-attempts", "1")
    _, key = gw.add_key()
    texts: list[str] = []
    with pytest.raises(anthropic.APIError):
        with gw.anthropic(key).messages.stream(
            model=model, max_tokens=64, messages=MSG, extra_headers=RESET
        ) as s:
            for t in s.text_stream:
                texts.append(t)
    assert "".join(texts) == "tok0 tok1 "


def test_anthropic_raw_stream_ends_with_an_error_event(gw: Gateway) -> None:
    model = gw.add_model([f"mocka:brk-ar-{uid()}"], "--max-attempts", "1")
    _, key = gw.add_key()
    with httpx.stream(
        "POST",
        f"{gw.url}/v1/messages",
        headers={"x-api-key": key, "anthropic-version": "2023-06-01", **RESET},
        json={"model": model, "max_tokens": 64, "messages": MSG, "stream": True},
        timeout=30,
    ) as r:
        assert r.status_code == 200
        rid = r.headers["x-llmgw-request-id"]
        raw = b"".join(r.iter_raw())
    events = sse_events(raw)
    names = [sse_name(e) for e in events]
    assert "message_stop" not in names and "message_delta" not in names
    assert names[0] == "message_start"
    assert names[-1] == "error"
    err = json.loads(sse_data(events[-1]))
    assert err["type"] == "error" and err["error"]["message"]
    deltas = [json.loads(sse_data(e))["delta"]["text"] for e in events if sse_name(e) == "content_block_delta"]
    assert deltas == ["tok0 ", "tok1 "]

    rec = gw.log(rid)
    assert rec["error"], rec
    assert rec["stream"] is True
    assert rec["status"] == 502 and rec["outcome"] == "interrupted", rec
    # message_start carried usage: the partial, reported numbers.
    assert rec["usage_source"] in ("reported", "estimated")
    assert rec["input_tokens"] > 0 and rec["output_tokens"] > 0
