"""Protocol translation, the grid's multi-part turns: tool results sent
back, images and system prompts, and opaque thinking state (Anthropic
signatures, Gemini thoughtSignatures, Responses encrypted_content) carried
through the client to the next turn. The upstream bodies the mock recorded
are read in the upstream protocol's own shape."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from google.genai import types as gt

# `grid` is the fixture.
from conftest import uid
from test_translation import (  # noqa: F401
    CLIENTS,
    IMAGE_URL,
    PNG_B64,
    TEXT,
    THINKING,
    TOOLS,
    Grid,
    Target,
    assert_calls,
    cells,
    content_text,
    grid,
    mock_signature,
    one_request,
    tool_arguments,
    upstream_images,
    upstream_system,
    upstream_wire,
)

Turns = tuple[list[tuple[Any, str, Any]], list[tuple[str, str, str]]]


def upstream_turns(wire: str, body: dict[str, Any]) -> Turns:
    """The tool calls of the model's turns as (id, name, arguments object),
    and the tool results as (link, text, role of the turn carrying it):
    the link is the call id, or for Gemini the function's name."""
    calls: list[tuple[Any, str, Any]] = []
    results: list[tuple[str, str, str]] = []
    if wire == "anthropic":
        for m in body["messages"]:
            for b in m["content"] if isinstance(m["content"], list) else []:
                if b["type"] == "tool_use":
                    calls.append((b["id"], b["name"], b["input"]))
                elif b["type"] == "tool_result":
                    results.append((b["tool_use_id"], content_text(b.get("content")), m["role"]))
    elif wire == "openai-chat":
        for m in body["messages"]:
            for tc in m.get("tool_calls") or []:
                calls.append((tc["id"], tc["function"]["name"], json.loads(tc["function"]["arguments"])))
            if m["role"] == "tool":
                results.append((m["tool_call_id"], content_text(m["content"]), "tool"))
    elif wire == "openai-responses":
        for item in body["input"]:
            if item.get("type") == "function_call":
                calls.append((item["call_id"], item["name"], json.loads(item["arguments"])))
            elif item.get("type") == "function_call_output":
                results.append((item["call_id"], content_text(item["output"]), "item"))
    else:
        for content in body["contents"]:
            for p in content["parts"]:
                if "functionCall" in p:
                    calls.append((p["functionCall"].get("id"), p["functionCall"]["name"],
                                  p["functionCall"].get("args")))
                elif "functionResponse" in p:
                    fr = p["functionResponse"]
                    results.append((fr["name"], content_text(fr["response"]), content["role"]))
    return calls, results


def upstream_call_id(wire: str, seq: int, i: int) -> str | None:
    """The id the mock gave call `i` of its answer number `seq`."""
    if wire == "gemini":
        return None
    return f"toolu_mock{seq}_{i}" if wire == "anthropic" else f"call_mock{seq}_{i}"


@pytest.mark.parametrize("client,upstream,stream", cells())
def test_tool_results_reach_the_upstream_in_its_shape(grid: Grid, client: str, upstream: str,
                                                        stream: bool) -> None:
    """Three parallel calls, answered in the client's protocol: the
    upstream gets its own calls back (ids, names, arguments) and each
    result linked to its call (Anthropic `tool_result` in a user turn,
    Chat `role: tool`, Responses `function_call_output`, Gemini
    `functionResponse` by name)."""
    t = grid.target(upstream)
    c = grid.client(client)
    c.tools = TOOLS
    c.user("what is the weather in Paris")
    mark = t.mark()
    first = c.send(t.model, stream, headers={"x-mock-tool-calls": "3"})
    assert_calls(client, first.calls, 3)
    c.accept(first)
    c.results(first, [f"result-{i}" for i in range(3)])
    second = c.send(t.model, stream)
    assert second.text == TEXT
    sent = t.sent_since(mark)
    assert len(sent) == 2
    wire = upstream_wire(client, upstream)
    calls, results = upstream_turns(wire, sent[1]["body_json"])
    seq = sent[0]["seq"]
    ids = [upstream_call_id(wire, seq, i) for i in range(3)]
    if wire == "gemini":
        assert [(n, a) for _, n, a in calls] == [(TOOLS[i], json.loads(tool_arguments(i))) for i in range(3)]
    else:
        assert calls == [(ids[i], TOOLS[i], json.loads(tool_arguments(i))) for i in range(3)]
    role = {"anthropic": "user", "gemini": "user", "openai-chat": "tool", "openai-responses": "item"}[wire]
    links = TOOLS if wire == "gemini" else ids
    assert results == [(links[i], f"result-{i}", role) for i in range(3)], results


@pytest.mark.parametrize("client,upstream,stream", cells())
def test_image_and_system_prompt_reach_the_upstream(grid: Grid, client: str, upstream: str,
                                                     stream: bool) -> None:
    t = grid.target(upstream)
    c = grid.client(client)
    c.system = "answer in French"
    c.user("what is in this picture", image_b64=PNG_B64)
    mark = t.mark()
    reply = c.send(t.model, stream)
    assert reply.text == TEXT
    body = one_request(t, mark)["body_json"]
    wire = upstream_wire(client, upstream)
    assert upstream_system(wire, body) == "answer in French"
    images = upstream_images(wire, body)
    assert len(images) == 1, body
    mime, data = images[0]
    assert mime == "image/png", body
    # google-genai sends bytes in URL-safe base64; the bytes are the same.
    assert base64.urlsafe_b64decode(data.replace("+", "-").replace("/", "_")) == base64.b64decode(PNG_B64)


#: Where the image part of `user(text, image_url=...)` is in each client's
#: body, when the conversation has a system prompt (Chat keeps it as the
#: first message; the others apart from the turns).
IMAGE_PATH = {"chat": "messages[1].content[1]", "responses": "input[0].content[1]",
              "anthropic": "messages[0].content[1]"}


@pytest.mark.parametrize("client,upstream,stream", cells(
    clients=[c for c in CLIENTS if c != "gemini"], upstreams=["gemini"]))
def test_image_url_to_gemini_is_refused_naming_the_field(grid: Grid, client: str, upstream: str,
                                                         stream: bool) -> None:
    """Gemini cannot fetch an https image and the gateway never does: the
    client gets a 400 naming the field by its path in the client's own
    body, and nothing is sent upstream."""
    t = grid.target(upstream)
    c = grid.client(client)
    c.system = "answer in French"
    c.user("what is in this picture", image_url=IMAGE_URL)
    mark = t.mark()
    with pytest.raises(c.errors[400]) as e:
        c.send(t.model, stream)
    assert c.status_of(e.value) == 400
    assert f"'{IMAGE_PATH[client]}'" in str(e.value) and "url" in str(e.value).lower(), e.value
    assert t.sent_since(mark) == []


@pytest.mark.parametrize("client,upstream,stream", cells(
    clients=[c for c in CLIENTS if c != "gemini"], upstreams=["gemini"]))
def test_image_url_to_gemini_is_dropped_naming_the_field_when_lenient(grid: Grid, client: str, upstream: str,
                                                                      stream: bool) -> None:
    """Lenient: the image is left out, the rest goes, and the header and
    the record name the image by its path in the client's own body."""
    t = grid.target(upstream, "--translation", "lenient")
    c = grid.client(client)
    c.system = "answer in French"
    c.user("what is in this picture", image_url=IMAGE_URL)
    mark = t.mark()
    reply = c.send(t.model, stream)
    assert reply.text == TEXT
    assert reply.headers.get("x-llmgw-dropped-fields") == IMAGE_PATH[client], reply.headers
    body = one_request(t, mark)["body_json"]
    assert upstream_images("gemini", body) == [] and IMAGE_URL not in json.dumps(body), body
    assert content_text(body["contents"][0]["parts"]) == "what is in this picture", body
    rec = grid.gw.log(reply.request_id)
    assert rec["dropped_fields"] == [IMAGE_PATH[client]], rec


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_gemini_clients_setting_is_named_in_its_own_terms(grid: Grid, stream: bool) -> None:
    """Chat Completions has no top-k: a Gemini client's `topK` is named
    `generationConfig.topK`, as its body has it (strict refuses, lenient
    drops)."""
    strict = grid.target("openai-chat")
    c = grid.client("gemini")
    c.user("hello")
    mark = strict.mark()
    with pytest.raises(c.errors[400]) as e:
        c.send(strict.model, stream, top_k=5)
    assert "'generationConfig.topK'" in str(e.value), e.value
    assert strict.sent_since(mark) == []
    lenient = grid.target("openai-chat", "--translation", "lenient")
    mark = lenient.mark()
    reply = c.send(lenient.model, stream, top_k=5)
    assert reply.text == TEXT
    assert {k.lower(): v for k, v in reply.headers.items()}.get("x-llmgw-dropped-fields") \
        == "generationConfig.topK", reply.headers
    assert "top_k" not in one_request(lenient, mark)["body_json"]
    assert grid.gw.log(reply.request_id)["dropped_fields"] == ["generationConfig.topK"]


# ---------------------------------------------------------------------------
# Thinking round trips
# ---------------------------------------------------------------------------


def b64_bytes(s: str) -> bytes:
    """Base64 in either alphabet (google-genai writes the URL-safe one)."""
    return base64.urlsafe_b64decode(s.replace("+", "-").replace("/", "_") + "=" * (-len(s) % 4))


def check_opaque_state(upstream: str, body: dict[str, Any]) -> None:
    """The second turn's upstream body carries the first turn's opaque
    reasoning state unchanged, where that protocol puts it."""
    if upstream == "anthropic":
        turn = next(m for m in body["messages"] if m["role"] == "assistant")
        assert turn["content"][0] == {"type": "thinking", "thinking": THINKING,
                                      "signature": mock_signature(THINKING)}, turn
    elif upstream == "gemini":
        turn = next(c for c in body["contents"] if c["role"] == "model")
        signatures = [b64_bytes(p["thoughtSignature"]) for p in turn["parts"] if "thoughtSignature" in p]
        call = next(p for p in turn["parts"] if "functionCall" in p)
        assert b64_bytes(call.get("thoughtSignature", "")) == b64_bytes(mock_signature(THINKING + "#call")), turn
        assert b64_bytes(mock_signature(THINKING)) in signatures, turn
    else:
        items = [i for i in body["input"] if i.get("type") == "reasoning"]
        assert [i.get("encrypted_content") for i in items] == [mock_signature("rs:" + THINKING)], body["input"]


def thinking_cells() -> list[Any]:
    # A chat client of an OpenAI provider passes through to Chat
    # Completions, which has no opaque reasoning state.
    return [p for p in cells(upstreams=["anthropic", "gemini", "openai"])
            if not (p.values[0] == "chat" and p.values[1] == "openai")]


#: How each client asks for thinking (Responses as Codex does: reasoning
#: comes back inline).
REASONING: dict[str, dict[str, Any]] = {
    "chat": {"reasoning_effort": "medium"},
    "responses": {"reasoning": {"effort": "medium", "summary": "auto"},
                  "include": ["reasoning.encrypted_content"]},
    "anthropic": {"thinking": {"type": "enabled", "budget_tokens": 1024}},
    "gemini": {"thinking_config": gt.ThinkingConfig(include_thoughts=True, thinking_budget=1024)},
}


@pytest.mark.parametrize("client,upstream,stream", thinking_cells())
def test_thinking_round_trip(grid: Grid, client: str, upstream: str, stream: bool) -> None:
    """Thinking and a tool call; the client sends the turn back with the
    tool's result, as its protocol lets it; the upstream gets its own
    thinking state back unchanged."""
    t = grid.target(upstream)
    c = grid.client(client)
    c.tools = TOOLS[:1]
    c.user("what is the weather in Paris")
    extra = {"max_tokens": 2048, **REASONING[client]}
    mark = t.mark()
    first = c.send(t.model, stream, headers={"x-mock-thinking": "1", "x-mock-tool-calls": "1"}, **extra)
    assert first.thinking == THINKING
    assert_calls(client, first.calls, 1)
    c.accept(first)
    c.results(first, ["sunny"])
    second = c.send(t.model, stream, **extra)
    assert second.text == TEXT
    sent = t.sent_since(mark)
    assert len(sent) == 2
    check_opaque_state(upstream, sent[1]["body_json"])


@pytest.mark.parametrize("client,stream", [
    pytest.param(c, s, id=f"{c}->openai-{'stream' if s else 'whole'}")
    for c in ("anthropic", "gemini") for s in (False, True)])
def test_a_reasoning_model_gets_its_reasoning_back_unasked(grid: Grid, client: str, stream: bool) -> None:
    """A reasoning model reasons whether the client asked or not; the
    gateway sends `store: false`, so it asks such a model for encrypted
    reasoning, and the next turn carries the reasoning back. A model that
    does not reason is not asked (OpenAI refuses the `include` there)."""
    um = f"o4-mini-grid-{uid()}"
    model = grid.gw.add_model([f"{grid.gw.mock_provider('openai')}:{um}"], "--max-attempts", "1", prefix="grid")
    t = Target(grid.gw, model, um, "openai")
    c = grid.client(client)
    c.tools = TOOLS[:1]
    c.user("what is the weather in Paris")
    mark = t.mark()
    first = c.send(t.model, stream, headers={"x-mock-thinking": "1", "x-mock-tool-calls": "1"})
    assert_calls(client, first.calls, 1)
    c.accept(first)
    c.results(first, ["sunny"])
    second = c.send(t.model, stream)
    assert second.text == TEXT
    sent = t.sent_since(mark)
    assert len(sent) == 2
    assert "reasoning" not in sent[0]["body_json"], sent[0]["body_json"]
    assert sent[0]["body_json"]["include"] == ["reasoning.encrypted_content"], sent[0]["body_json"]
    check_opaque_state("openai", sent[1]["body_json"])
    # A model of no reasoning family, not asked to reason: no include.
    plain = grid.target("openai")
    c2 = grid.client(client)
    c2.user("hello")
    mark = plain.mark()
    c2.send(plain.model, stream)
    assert "include" not in one_request(plain, mark)["body_json"]
