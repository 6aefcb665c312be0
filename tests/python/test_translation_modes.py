"""Protocol translation: token counting for every upstream (natively where
the upstream protocol counts, else by the gateway's tokenizer), strict and
lenient translation of a field the upstream cannot express, and a model's
default max_tokens for Anthropic upstreams."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

# `grid` is the fixture.
from test_translation import (  # noqa: F401
    PROMPT, PROMPT_WORDS, SCHEMA, TEXT, UPSTREAMS, Grid, bug, grid, one_request,
)

LONG_SYSTEM = " ".join(f"rule{i} is to be kind and brief" for i in range(40))
#: Upstream protocols with a count endpoint of their own.
COUNTING = {"anthropic", "gemini"}


def count_record(grid: Grid, request_id: str, upstream: str, count: int) -> None:
    """The record of a count: who counted, and the count answered."""
    rec = grid.gw.log(request_id)
    native = upstream in COUNTING
    assert rec["count_source"] == ("upstream" if native else "local"), rec
    assert rec["usage_source"] == ("reported" if native else "estimated"), rec
    assert rec["input_tokens"] == count and rec["cost"] == 0, rec


def anthropic_count(grid: Grid, model: str, **kw: Any) -> tuple[int, str]:
    sdk = grid.client("anthropic").sdk
    raw = sdk.messages.with_raw_response.count_tokens(
        model=model, messages=[{"role": "user", "content": PROMPT}], **kw)
    return raw.parse().input_tokens, raw.headers["x-llmgw-request-id"]


def gemini_count(grid: Grid, model: str, system: str | None = None, tools: bool = False) -> tuple[int, str]:
    """google-genai's count_tokens sends only `contents` to the Gemini
    Developer API; a system prompt and tools go in a
    `generateContentRequest`, sent raw."""
    if system is None and not tools:
        # A google-genai client closes its connections when it is dropped.
        sdk = grid.client("gemini").sdk
        r = sdk.models.count_tokens(model=model, contents=PROMPT)
        return r.total_tokens, r.sdk_http_response.headers["x-llmgw-request-id"]
    inner: dict[str, Any] = {"model": f"models/{model}",
                             "contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}
    if system is not None:
        inner["systemInstruction"] = {"parts": [{"text": system}]}
    if tools:
        inner["tools"] = [{"functionDeclarations": [{"name": "get_weather", "description": "weather of a city",
                                                     "parameters": SCHEMA}]}]
    r = httpx.post(f"{grid.gw.url}/v1beta/models/{model}:countTokens", json={"generateContentRequest": inner},
                   headers={"x-goog-api-key": grid.key}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["totalTokens"], r.headers["x-llmgw-request-id"]


@pytest.mark.parametrize("client,upstream", [
    pytest.param(c, u, id=f"{c}->{u}")
    for c in ("anthropic", "gemini") for u in UPSTREAMS])
def test_count_tokens(grid: Grid, client: str, upstream: str) -> None:
    """Every upstream answers a count: an upstream with a count endpoint
    counts (the mock counts the words of the prompt and system), the
    others are counted by the gateway; a long system prompt counts more,
    and so do tools when the gateway counts."""
    t = grid.target(upstream)
    if client == "anthropic":
        tool = {"name": "get_weather", "description": "weather of a city", "input_schema": SCHEMA}
        count = lambda **kw: anthropic_count(grid, t.model, **kw)  # noqa: E731
        with_system, with_tools = {"system": LONG_SYSTEM}, {"tools": [tool]}
    else:
        count = lambda **kw: gemini_count(grid, t.model, **kw)  # noqa: E731
        with_system, with_tools = {"system": LONG_SYSTEM}, {"tools": True}
    mark = t.mark()
    plain, rid = count()
    count_record(grid, rid, upstream, plain)
    system, _ = count(**with_system)
    tools, _ = count(**with_tools)
    sent = t.sent_since(mark)
    if upstream in COUNTING:
        assert plain == PROMPT_WORDS
        assert system == PROMPT_WORDS + len(LONG_SYSTEM.split())
        assert len(sent) == 3
        path = sent[0]["path"]
        assert path.endswith(":countTokens") if upstream == "gemini" else path.endswith("/messages/count_tokens")
        # The mock does not count tools; the upstream got them.
        assert "get_weather" in sent[2]["body"]
    else:
        assert sent == []
        assert 0 < plain < system
        assert tools > plain


# ---------------------------------------------------------------------------
# Strict and lenient translation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_strict_translation_refuses_an_untranslatable_field(grid: Grid, stream: bool) -> None:
    t = grid.target("anthropic")
    mark = t.mark()
    with pytest.raises(openai.BadRequestError) as e:
        grid.client("chat").sdk.chat.completions.create(
            model=t.model, messages=[{"role": "user", "content": PROMPT}], logprobs=True, stream=stream)
    assert "logprobs" in str(e.value)
    assert t.sent_since(mark) == []
    rec = grid.gw.log(e.value.response.headers["x-llmgw-request-id"])
    assert rec["status"] == 400, rec


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_lenient_translation_drops_the_field_and_says_so(grid: Grid, stream: bool) -> None:
    t = grid.target("anthropic", "--translation", "lenient")
    c = grid.client("chat")
    c.user(PROMPT)
    mark = t.mark()
    reply = c.send(t.model, stream, logprobs=True)
    assert reply.text == TEXT
    assert "logprobs" in reply.headers.get("x-llmgw-dropped-fields", ""), reply.headers
    assert "logprobs" not in one_request(t, mark)["body_json"]
    rec = grid.gw.log(reply.request_id)
    assert rec["dropped_fields"] == ["logprobs"], rec
    assert rec["translated"] is True and rec["status"] == 200, rec


# ---------------------------------------------------------------------------
# max_tokens for Anthropic upstreams
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("client", ["chat", "responses", "gemini"])
def test_default_max_tokens_reaches_an_anthropic_upstream(grid: Grid, client: str) -> None:
    """Anthropic requires max_tokens: the model's default when the client
    gave none, the client's own when it did."""
    t = grid.target("anthropic", "--default-max-tokens", "777")
    c = grid.client(client)
    c.user(PROMPT)
    mark = t.mark()
    c.send(t.model, False)
    assert one_request(t, mark)["body_json"]["max_tokens"] == 777
    mark = t.mark()
    c.send(t.model, False, max_tokens=50)
    assert one_request(t, mark)["body_json"]["max_tokens"] == 50
