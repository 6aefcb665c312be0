"""Protocol translation, more of the grid: stop reasons with no equivalent
(the client gets the nearest, the record keeps the upstream's own word),
the max-tokens cut in the middle of tool arguments, the tool_choice
mapping in each upstream's own shape, and Gemini's streamed JSON array
(`:streamGenerateContent` without `alt=sse`) against every upstream.

Reuses the grid's machinery from `test_translation.py`.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from google.genai import types as gt

# `grid` is the fixture.
from test_translation import (  # noqa: F401
    CLIENTS, PROMPT, PROMPT_WORDS, TEXT, TOOL_PROMPT, TOOLS, UPSTREAMS, Grid, cells, grid, native_usage,
    one_request, passes_through, tool_arguments, upstream_usage, upstream_wire,
)

# ---------------------------------------------------------------------------
# Stop reasons: the client's nearest, the record's raw
# ---------------------------------------------------------------------------

#: Reasons with no equivalent elsewhere, by upstream, and what each client
#: gets for them (docs/translation.md, "Stop reasons"). A client of the
#: upstream's own protocol is passed through and gets the reason as it is.
RAW_STOPS = {
    "anthropic": ("pause_turn", {"chat": "stop", "responses": "completed", "anthropic": "pause_turn",
                                 "gemini": "STOP"}),
    "gemini": ("MALFORMED_FUNCTION_CALL", {"chat": "stop", "responses": "completed", "anthropic": "end_turn",
                                           "gemini": "MALFORMED_FUNCTION_CALL"}),
}

#: Each upstream wire's own word for a natural end and for max tokens.
UPSTREAM_WORDS = {
    "openai-chat": {"stop": "stop", "length": "length"},
    "openai-responses": {"stop": "completed", "length": "max_output_tokens"},
    "anthropic": {"stop": "end_turn", "length": "max_tokens"},
    "gemini": {"stop": "STOP", "length": "MAX_TOKENS"},
}


def recorded_stop(client: str, upstream: str, stream: bool, word: str) -> str:
    """What the record's `stop_reason` holds: the upstream's word as it
    came, except for a passed-through whole Chat or Gemini answer, whose
    reason sits inside a choice or candidate that the data plane does not
    parse for it (only usage is read from a whole body)."""
    wire = upstream_wire(client, upstream)
    if passes_through(client, upstream) and not stream and wire in ("openai-chat", "gemini"):
        return ""
    return word


@pytest.mark.parametrize("client,upstream,stream", cells(upstreams=list(RAW_STOPS)))
def test_a_reason_with_no_equivalent_is_the_nearest_for_the_client_and_raw_in_the_record(
        grid: Grid, client: str, upstream: str, stream: bool) -> None:
    raw, nearest = RAW_STOPS[upstream]
    t = grid.target(upstream)
    c = grid.client(client)
    c.user(PROMPT)
    reply = c.send(t.model, stream, headers={"x-mock-stop-reason": raw})
    assert reply.text == TEXT
    assert reply.finish == nearest[client]
    rec = grid.gw.log(reply.request_id)
    assert rec["status"] == 200 and rec["error"] == "", rec
    assert rec["stop_reason"] == recorded_stop(client, upstream, stream, raw), rec


@pytest.mark.parametrize("ending", ["stop", "length"])
@pytest.mark.parametrize("client,upstream,stream", cells())
def test_the_record_holds_the_upstreams_own_word(grid: Grid, client: str, upstream: str, stream: bool,
                                                 ending: str) -> None:
    """Reasons with an equivalent too: the record names them as the
    upstream did, in the upstream's protocol, not the client's."""
    t = grid.target(upstream)
    c = grid.client(client)
    c.user(PROMPT)
    reply = c.send(t.model, stream, headers={"x-mock-finish": ending})
    word = UPSTREAM_WORDS[upstream_wire(client, upstream)][ending]
    rec = grid.gw.log(reply.request_id)
    assert rec["stop_reason"] == recorded_stop(client, upstream, stream, word), rec


# ---------------------------------------------------------------------------
# Max tokens in the middle of tool arguments
# ---------------------------------------------------------------------------

#: The arguments the mock sends of a call cut by max tokens (its first two
#: fragments).
CUT_ARGUMENTS = '{"city":"Paris"'

LENGTH = {"chat": "length", "responses": "incomplete:max_output_tokens", "anthropic": "max_tokens",
          "gemini": "MAX_TOKENS"}


def upstream_sends_the_cut_call(upstream_wire_: str, stream: bool) -> bool:
    """Whether the mock's answer has the cut call at all: Anthropic leaves
    the cut block out of a whole answer, Gemini leaves the cut call out
    (mock/src/lib.rs, `max-tokens-in-args`)."""
    if upstream_wire_ == "gemini":
        return False
    return upstream_wire_ != "anthropic" or stream


@pytest.mark.parametrize("client,upstream,stream", cells())
def test_max_tokens_in_the_middle_of_tool_arguments(grid: Grid, client: str, upstream: str,
                                                    stream: bool) -> None:
    """Two calls, the second cut by max tokens halfway through its
    arguments: the SDK reads a well-formed answer that ends with the
    length reason, the whole first call, and the second call's partial
    arguments as the upstream sent them."""
    t = grid.target(upstream)
    c = grid.client(client)
    c.tools = TOOLS
    c.user(TOOL_PROMPT)
    reply = c.send(t.model, stream, headers={"x-mock-tool-calls": "2", "x-mock-max-tokens-in-args": "1"})
    assert reply.finish == LENGTH[client]
    objects = client in ("anthropic", "gemini")
    first = json.loads(tool_arguments(0)) if objects else tool_arguments(0)
    assert reply.calls[0].name == TOOLS[0] and reply.calls[0].args == first, reply.calls
    if not upstream_sends_the_cut_call(upstream_wire(client, upstream), stream):
        assert len(reply.calls) == 1, reply.calls
        return
    assert len(reply.calls) == 2, reply.calls
    cut = reply.calls[1]
    assert cut.name == TOOLS[1]
    if objects:
        # Arguments are an object in these protocols: what the partial JSON
        # holds so far.
        assert cut.args == {"city": "Paris"}, reply.calls
    else:
        assert cut.args == CUT_ARGUMENTS, reply.calls


# ---------------------------------------------------------------------------
# tool_choice and parallel tool calls, in each upstream's own shape
# ---------------------------------------------------------------------------

CHOICES = ["auto", "none", "required", "named", "parallel-off"]
NAMED = TOOLS[1]


def choice_kwargs(client: str, choice: str) -> dict[str, Any]:
    """The SDK arguments that ask for `choice` in the client's protocol."""
    if client in ("chat", "responses"):
        if choice == "parallel-off":
            return {"parallel_tool_calls": False}
        if choice == "named":
            tc: Any = ({"type": "function", "function": {"name": NAMED}} if client == "chat"
                       else {"type": "function", "name": NAMED})
            return {"tool_choice": tc}
        return {"tool_choice": choice}
    if client == "anthropic":
        tc = {"auto": {"type": "auto"}, "none": {"type": "none"}, "required": {"type": "any"},
              "named": {"type": "tool", "name": NAMED},
              "parallel-off": {"type": "auto", "disable_parallel_tool_use": True}}[choice]
        return {"tool_choice": tc}
    mode = {"auto": "AUTO", "none": "NONE", "required": "ANY", "named": "ANY"}[choice]
    names = [NAMED] if choice == "named" else None
    return {"tool_config": gt.ToolConfig(function_calling_config=gt.FunctionCallingConfig(
        mode=mode, allowed_function_names=names))}


def expected_choice(wire: str, choice: str) -> dict[str, Any]:
    """The members of the upstream's body that say `choice`, in its own
    protocol (Gemini's under `toolConfig.functionCallingConfig`)."""
    if wire in ("openai-chat", "openai-responses"):
        if choice == "parallel-off":
            return {"parallel_tool_calls": False}
        if choice == "named":
            return {"tool_choice": {"type": "function", "function": {"name": NAMED}} if wire == "openai-chat"
                    else {"type": "function", "name": NAMED}}
        return {"tool_choice": choice}
    if wire == "anthropic":
        return {"tool_choice": {"auto": {"type": "auto"}, "none": {"type": "none"}, "required": {"type": "any"},
                                "named": {"type": "tool", "name": NAMED},
                                "parallel-off": {"type": "auto", "disable_parallel_tool_use": True}}[choice]}
    cfg: dict[str, Any] = {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY", "named": "ANY"}[choice]}
    if choice == "named":
        cfg["allowedFunctionNames"] = [NAMED]
    return {"functionCallingConfig": cfg}


def said_choice(wire: str, body: dict[str, Any], choice: str) -> dict[str, Any]:
    keys = expected_choice(wire, choice).keys()
    if wire == "gemini":
        cfg = (body.get("toolConfig") or body.get("tool_config") or {})
        fcc = cfg.get("functionCallingConfig") or cfg.get("function_calling_config")
        if fcc is not None:
            # google-genai writes the names in snake case.
            fcc = {("allowedFunctionNames" if k == "allowed_function_names" else k): v for k, v in fcc.items()}
        return {"functionCallingConfig": fcc}
    return {k: body.get(k) for k in keys}


def choice_cells() -> list[Any]:
    out = []
    for c in CLIENTS:
        for u in UPSTREAMS:
            for ch in CHOICES:
                if c == "gemini" and ch == "parallel-off":
                    continue  # Gemini has no such setting to send.
                out.append(pytest.param(c, u, ch, id=f"{c}->{u}-{ch}"))
    return out


#: The client's own name of the parallel setting, which a refusal names.
PARALLEL_FIELD = {"chat": "parallel_tool_calls", "responses": "parallel_tool_calls",
                  "anthropic": "disable_parallel_tool_use"}


@pytest.mark.parametrize("client,upstream,choice", choice_cells())
def test_tool_choice_reaches_the_upstream_in_its_shape(grid: Grid, client: str, upstream: str,
                                                       choice: str) -> None:
    t = grid.target(upstream)
    c = grid.client(client)
    c.tools = TOOLS
    c.user(TOOL_PROMPT)
    wire = upstream_wire(client, upstream)
    mark = t.mark()
    if wire == "gemini" and choice == "parallel-off":
        # Gemini cannot be held to one call per turn: strict mode refuses,
        # naming the client's field, and nothing reaches the upstream.
        with pytest.raises(c.base_error) as e:
            c.send(t.model, False, **choice_kwargs(client, choice))
        assert c.status_of(e.value) == 400
        assert PARALLEL_FIELD[client] in str(e.value), str(e.value)
        assert t.sent_since(mark) == []
        return
    reply = c.send(t.model, False, **choice_kwargs(client, choice))
    assert reply.finish  # an answer
    body = one_request(t, mark)["body_json"]
    assert said_choice(wire, body, choice) == expected_choice(wire, choice), body


# ---------------------------------------------------------------------------
# Gemini's streamed JSON array
# ---------------------------------------------------------------------------


def gemini_array(grid: Grid, model: str, headers: dict[str, str], tools: bool) -> tuple[httpx.Response, list[Any]]:
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": TOOL_PROMPT if tools else PROMPT}]}]}
    if tools:
        body["tools"] = [{"functionDeclarations": [{"name": n, "parameters": {"type": "object"}} for n in TOOLS]}]
    r = httpx.post(f"{grid.gw.url}/v1beta/models/{model}:streamGenerateContent", json=body,
                   headers={"x-goog-api-key": grid.key, **headers}, timeout=30)
    assert r.status_code == 200, r.text
    items = json.loads(r.text)
    assert isinstance(items, list) and items, r.text
    return r, items


def usage_of(items: list[Any]) -> dict[str, int]:
    meta = [i["usageMetadata"] for i in items if "usageMetadata" in i][-1]
    return {"input": meta.get("promptTokenCount", 0), "cached": meta.get("cachedContentTokenCount", 0),
            "output": meta.get("candidatesTokenCount", 0), "thoughts": meta.get("thoughtsTokenCount", 0)}


def parts_of(items: list[Any]) -> list[dict[str, Any]]:
    return [p for i in items for c in i.get("candidates", [])[:1] for p in (c.get("content") or {}).get("parts", [])]


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_gemini_json_array_stream(grid: Grid, upstream: str) -> None:
    """`:streamGenerateContent` without `alt=sse`: one JSON array of
    answer chunks, with the text, a tool call and usage, whatever the
    upstream's protocol."""
    t = grid.target(upstream)
    r, items = gemini_array(grid, t.model, {}, tools=False)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    assert "".join(p.get("text", "") for p in parts_of(items)) == TEXT
    assert items[-1]["candidates"][0]["finishReason"] == "STOP"
    assert usage_of(items) == native_usage("gemini", *upstream_usage(upstream, PROMPT_WORDS, 0, 0, 4, 0))
    rec = grid.gw.log(r.headers["x-llmgw-request-id"])
    assert rec["status"] == 200 and rec["stream"] is True, rec

    r, items = gemini_array(grid, t.model, {"x-mock-tool-calls": "1"}, tools=True)
    calls = [p["functionCall"] for p in parts_of(items) if "functionCall" in p]
    assert [(f["name"], f["args"]) for f in calls] == [(TOOLS[0], json.loads(tool_arguments(0)))], items
    up = upstream_usage(upstream, len(TOOL_PROMPT.split()), 0, 0, 4, 0)
    assert usage_of(items) == native_usage("gemini", *up)


def test_logs_filter_by_the_upstreams_stop_reason(grid: Grid) -> None:
    """`llmgw logs --stop-reason` finds the records by the upstream's own
    word."""
    t = grid.target("anthropic")
    ids = {}
    for reason in ("pause_turn", "model_context_window_exceeded"):
        c = grid.client("chat")
        c.user(PROMPT)
        reply = c.send(t.model, False, headers={"x-mock-stop-reason": reason})
        ids[reason] = reply.request_id
        assert grid.gw.log(reply.request_id)["stop_reason"] == reason
    assert reply.finish == "length"  # model_context_window_exceeded's nearest
    found = [r["id"] for r in grid.gw.logs("--model", t.model, "--stop-reason", "pause_turn")]
    assert ids["pause_turn"] in found and ids["model_context_window_exceeded"] not in found, found
