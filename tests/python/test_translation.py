"""Protocol translation end to end, with the official SDKs as clients: the
conformance grid of four client protocols (the `openai` SDK's Chat
Completions and Responses, `anthropic`, `google-genai`) by four upstream
provider protocols on the mock (`openai`, `openai-chat`, `anthropic`,
`gemini`), streaming and not. Each cell's test id reads
`CLIENT->UPSTREAM-stream|whole`.

This module holds the grid's machinery — one adapter per client SDK that
keeps a conversation in its own protocol, sends it and reads the answer
with the SDK's own accumulators, and readers of the upstream bodies the
mock recorded, in each upstream protocol's shape — and the first tests:
text, usage and tool calls. `test_translation_*.py` hold the rest.

The mock's deterministic answers (mock/src/compose.rs): chunk `i` of the
text is `"tok{i} "` (4 chunks by default); tool call `i` is named after
the request's tool `i % len(tools)`, with arguments
`{"city":"Paris","n":i}`; thinking is `"think0 think1 think2 "`, signed
with the mock's `signature`; prompt tokens are the words of the prompt.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import anthropic
import httpx
import openai
import pytest
from google.genai import errors as genai_errors
from google.genai import types as gt
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.lib.streaming.responses import ResponseStreamState

from conftest import Gateway, uid

CLIENTS = ["chat", "responses", "anthropic", "gemini"]
UPSTREAMS = ["openai", "openai-chat", "anthropic", "gemini"]

#: The wire format of each client API (as request logs name it).
CLIENT_WIRE = {
    "chat": "openai-chat",
    "responses": "openai-responses",
    "anthropic": "anthropic",
    "gemini": "gemini",
}
#: The wire format a provider protocol is sent translated requests in
#: (core/src/serving.rs `provider_wire`).
PROVIDER_WIRE = {
    "openai": "openai-responses",
    "openai-chat": "openai-chat",
    "anthropic": "anthropic",
    "gemini": "gemini",
}
#: Client APIs each provider protocol serves natively (passed through).
NATIVE = {
    "openai": {"chat", "responses"},
    "openai-chat": {"chat"},
    "anthropic": {"anthropic"},
    "gemini": {"gemini"},
}

TEXT = "tok0 tok1 tok2 tok3 "
THINKING = "think0 think1 think2 "
PROMPT = "say something nice please"  # the mock counts 4 words
PROMPT_WORDS = 4
TOOL_PROMPT = "what is the weather in Paris"
#: A 1x1 PNG.
PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
IMAGE_URL = "https://example.com/cat.png"
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "n": {"type": "integer"}},
    "required": ["city"],
}
TOOLS = ["get_weather", "get_time", "get_news"]


#: Gateway bugs the grid found, by name: what happens instead of what the
#: test expects. A cell they break is marked `bug(name)`.
BUGS: dict[str, str] = {}


def bug(name: str) -> Any:
    """The xfail mark of a reported gateway bug."""
    return pytest.mark.xfail(strict=True, reason=BUGS[name])


def passes_through(client: str, upstream: str) -> bool:
    return client in NATIVE[upstream]


def upstream_wire(client: str, upstream: str) -> str:
    """The shape of the body the upstream receives."""
    return CLIENT_WIRE[client] if passes_through(client, upstream) else PROVIDER_WIRE[upstream]


def tool_arguments(i: int) -> str:
    """The mock's arguments of tool call `i`, as it sends them."""
    return '{"city":"Paris","n":%d}' % i


_M64 = (1 << 64) - 1


def mock_signature(text: str) -> str:
    """The mock's `signature` (mock/src/compose.rs): FNV-1a of the text,
    then four splitmix64 steps, after `sig:`, in base64."""
    h = 0xCBF29CE484222325
    for b in text.encode():
        h = ((h ^ b) * 0x100000001B3) & _M64
    out = b"sig:"
    for _ in range(4):
        h = (h + 0x9E3779B97F4A7C15) & _M64
        z = h
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        z ^= z >> 31
        out += z.to_bytes(8, "big")
    return base64.b64encode(out).decode()


def cells(clients: list[str] = CLIENTS, upstreams: list[str] = UPSTREAMS,
          streams: tuple[bool, ...] = (False, True), marks: Callable[..., Any] | None = None) -> list[Any]:
    """The grid's cells as pytest params `(client, upstream, stream)`, with
    ids `client->upstream-stream|whole`; `marks(client, upstream, stream)`
    gives a cell's marks (an xfail for a reported bug)."""
    out = []
    for c in clients:
        for u in upstreams:
            for s in streams:
                m = marks(c, u, s) if marks else ()
                out.append(pytest.param(c, u, s, id=f"{c}->{u}-{'stream' if s else 'whole'}",
                                        marks=m or ()))
    return out


# ---------------------------------------------------------------------------
# What a client got
# ---------------------------------------------------------------------------


@dataclass
class Call:
    id: str | None
    name: str
    #: A string for the OpenAI clients (as sent), an object for the others.
    args: Any


@dataclass
class Reply:
    request_id: str
    headers: dict[str, str]
    text: str
    #: The protocol's own words: Chat's finish_reason, Responses'
    #: `status[:incomplete reason]`, Anthropic's stop_reason, Gemini's
    #: finishReason.
    finish: str
    #: The protocol's own usage numbers (see `native_usage`).
    usage: dict[str, int]
    calls: list[Call]
    thinking: str
    #: The SDK's final object, for the next turn.
    raw: Any = None
    #: Anthropic's stop_sequence.
    stop_sequence: str | None = None


def native_usage(client: str, inp: int, read: int, write: int, out: int, reasoning: int) -> dict[str, int]:
    """What a client of protocol `client` should read for normalized usage
    (uncached input, cache reads, cache writes, output with reasoning,
    reasoning): OpenAI's and Gemini's input include the cache, Anthropic's
    does not; Gemini's candidates exclude thoughts."""
    total = inp + read + write
    if client == "anthropic":
        return {"input": inp, "cache_read": read, "cache_write": write, "output": out}
    if client == "gemini":
        return {"input": total, "cached": read, "output": out - reasoning, "thoughts": reasoning}
    return {"input": total, "cached": read, "output": out, "reasoning": reasoning}


def upstream_usage(upstream: str, prompt: int, read: int, write: int, out: int,
                   reasoning: int) -> tuple[int, int, int, int, int]:
    """The normalized usage the gateway reads from the mock's answer: only
    Anthropic reports cache writes (elsewhere they are plain input) and
    only Anthropic does not report reasoning."""
    if upstream == "anthropic":
        return prompt, read, write, out, 0
    return prompt + write, read, 0, out, reasoning


# ---------------------------------------------------------------------------
# Client adapters: a conversation in the client's protocol
# ---------------------------------------------------------------------------


class Client:
    """A conversation in one client protocol, sent with the official SDK.
    `user`, `accept` (the model's turn, as the SDK gave it) and `results`
    (tool results) add turns; `send` sends the conversation."""

    name = ""
    #: The SDK's exception for an HTTP status.
    errors: dict[int, type[BaseException]] = {}
    #: The SDK's base exception.
    base_error: type[BaseException] = Exception

    def __init__(self, gw: Gateway, key: str) -> None:
        self.gw = gw
        self.key = key
        self.system: str | None = None
        self.tools: list[str] = []
        #: The last answer's response headers, as soon as its head came.
        self.last_headers: dict[str, str] = {}

    def send(self, model: str, stream: bool, headers: dict[str, str] | None = None,
             max_tokens: int | None = None, **extra: Any) -> Reply:
        raise NotImplementedError

    def user(self, text: str, image_b64: str | None = None, image_url: str | None = None) -> None:
        raise NotImplementedError

    def accept(self, reply: Reply) -> None:
        raise NotImplementedError

    def results(self, reply: Reply, outputs: list[str]) -> None:
        """Answers `reply`'s calls, in order, with `outputs`."""
        raise NotImplementedError

    @staticmethod
    def status_of(e: BaseException) -> int:
        return getattr(e, "status_code", None) or getattr(e, "code", 0)

    @staticmethod
    def headers_of(e: BaseException) -> dict[str, str]:
        r = getattr(e, "response", None)
        return dict(r.headers) if r is not None else {}


class ChatClient(Client):
    name = "chat"
    errors = {400: openai.BadRequestError, 429: openai.RateLimitError, 503: openai.InternalServerError}
    base_error = openai.APIError

    def __init__(self, gw: Gateway, key: str) -> None:
        super().__init__(gw, key)
        self.sdk = gw.openai(key)
        self.messages: list[dict[str, Any]] = []

    def tool_params(self) -> list[dict[str, Any]]:
        return [{"type": "function", "function": {"name": n, "description": f"{n} of a city",
                                                  "parameters": SCHEMA}} for n in self.tools]

    def user(self, text: str, image_b64: str | None = None, image_url: str | None = None) -> None:
        if image_b64 is None and image_url is None:
            self.messages.append({"role": "user", "content": text})
            return
        url = image_url or f"data:image/png;base64,{image_b64}"
        self.messages.append({"role": "user", "content": [
            {"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]})

    def body(self, model: str, max_tokens: int | None, extra: dict[str, Any]) -> dict[str, Any]:
        msgs = ([{"role": "system", "content": self.system}] if self.system else []) + self.messages
        kw: dict[str, Any] = {"model": model, "messages": msgs, **extra}
        if self.tools:
            kw["tools"] = self.tool_params()
        if max_tokens is not None:
            kw["max_tokens"] = max_tokens
        return kw

    def send(self, model: str, stream: bool, headers: dict[str, str] | None = None,
             max_tokens: int | None = None, **extra: Any) -> Reply:
        kw = self.body(model, max_tokens, extra)
        if stream:
            kw.setdefault("stream_options", {"include_usage": True})
            s = self.sdk.chat.completions.create(stream=True, extra_headers=headers, **kw)
            hdrs = self.last_headers = dict(s.response.headers)
            state = ChatCompletionStreamState(input_tools=kw.get("tools", openai.omit))
            for chunk in s:
                state.handle_chunk(chunk)
            # Not get_final_completion(): it raises on `length` and
            # `content_filter`, which are answers here.
            comp = state.current_completion_snapshot
        else:
            raw = self.sdk.chat.completions.with_raw_response.create(extra_headers=headers, **kw)
            hdrs = self.last_headers = dict(raw.headers)
            comp = raw.parse()
        choice = comp.choices[0]
        msg = choice.message
        u = comp.usage
        usage = {}
        if u is not None:
            usage = {
                "input": u.prompt_tokens,
                "cached": (u.prompt_tokens_details.cached_tokens or 0) if u.prompt_tokens_details else 0,
                "output": u.completion_tokens,
                "reasoning": (u.completion_tokens_details.reasoning_tokens or 0)
                if u.completion_tokens_details else 0,
            }
        extra_fields = msg.model_extra or {}
        return Reply(
            request_id=hdrs["x-llmgw-request-id"],
            headers=hdrs,
            text=msg.content or "",
            finish=choice.finish_reason,
            usage=usage,
            calls=[Call(tc.id, tc.function.name, tc.function.arguments) for tc in msg.tool_calls or []],
            thinking=extra_fields.get("reasoning_content") or "",
            raw=msg,
        )

    def accept(self, reply: Reply) -> None:
        msg = reply.raw
        turn: dict[str, Any] = {"role": "assistant", "content": msg.content}
        if msg.tool_calls:
            turn["tool_calls"] = [
                {"id": tc.id, "type": "function",
                 "function": {"name": tc.function.name, "arguments": tc.function.arguments}}
                for tc in msg.tool_calls
            ]
        reasoning = (msg.model_extra or {}).get("reasoning_content")
        if reasoning:
            turn["reasoning_content"] = reasoning
        self.messages.append(turn)

    def results(self, reply: Reply, outputs: list[str]) -> None:
        for c, out in zip(reply.calls, outputs):
            self.messages.append({"role": "tool", "tool_call_id": c.id, "content": out})


class ResponsesClient(Client):
    name = "responses"
    errors = {400: openai.BadRequestError, 429: openai.RateLimitError, 503: openai.InternalServerError}
    base_error = openai.APIError

    def __init__(self, gw: Gateway, key: str) -> None:
        super().__init__(gw, key)
        self.sdk = gw.openai(key)
        self.input: list[dict[str, Any]] = []

    def tool_params(self) -> list[dict[str, Any]]:
        return [{"type": "function", "name": n, "description": f"{n} of a city", "parameters": SCHEMA}
                for n in self.tools]

    def user(self, text: str, image_b64: str | None = None, image_url: str | None = None) -> None:
        content: list[dict[str, Any]] = [{"type": "input_text", "text": text}]
        if image_b64 is not None or image_url is not None:
            content.append({"type": "input_image", "detail": "auto",
                            "image_url": image_url or f"data:image/png;base64,{image_b64}"})
        self.input.append({"role": "user", "content": content})

    def send(self, model: str, stream: bool, headers: dict[str, str] | None = None,
             max_tokens: int | None = None, **extra: Any) -> Reply:
        kw: dict[str, Any] = {"model": model, "input": self.input, **extra}
        if self.system:
            kw["instructions"] = self.system
        if self.tools:
            kw["tools"] = self.tool_params()
        if max_tokens is not None:
            kw["max_output_tokens"] = max_tokens
        if stream:
            s = self.sdk.responses.create(stream=True, extra_headers=headers, **kw)
            hdrs = self.last_headers = dict(s.response.headers)
            state = ResponseStreamState(input_tools=kw.get("tools", openai.omit), text_format=openai.omit)
            resp = None
            for ev in s:
                for e in state.handle_event(ev):
                    if e.type in ("response.completed", "response.incomplete"):
                        resp = e.response
                    elif e.type in ("response.failed", "error"):
                        # The SDK hands these over as events; a failed
                        # answer is the client's error.
                        raise openai.APIError(f"{e.type}: {e}", s.response.request, body=e.to_dict())
            assert resp is not None, "the stream ended without response.completed or response.incomplete"
        else:
            raw = self.sdk.responses.with_raw_response.create(extra_headers=headers, **kw)
            hdrs = self.last_headers = dict(raw.headers)
            resp = raw.parse()
        finish = resp.status
        if resp.incomplete_details is not None and resp.incomplete_details.reason:
            finish += f":{resp.incomplete_details.reason}"
        u = resp.usage
        usage = {}
        if u is not None:
            usage = {
                "input": u.input_tokens,
                "cached": u.input_tokens_details.cached_tokens if u.input_tokens_details else 0,
                "output": u.output_tokens,
                "reasoning": u.output_tokens_details.reasoning_tokens if u.output_tokens_details else 0,
            }
        text, thinking, calls = "", "", []
        for item in resp.output:
            if item.type == "message":
                text += "".join(p.text for p in item.content if p.type == "output_text")
            elif item.type == "reasoning":
                thinking += "".join(s.text for s in item.summary or [])
                thinking += "".join(c.text for c in item.content or [] if getattr(c, "text", None))
            elif item.type == "function_call":
                calls.append(Call(item.call_id, item.name, item.arguments))
        return Reply(hdrs["x-llmgw-request-id"], hdrs, text, finish, usage, calls, thinking, raw=resp)

    def accept(self, reply: Reply) -> None:
        for item in reply.raw.output:
            d = item.to_dict(exclude_none=True)
            d.pop("parsed_arguments", None)
            for part in d.get("content") or []:
                part.pop("parsed", None)
            self.input.append(d)

    def results(self, reply: Reply, outputs: list[str]) -> None:
        for c, out in zip(reply.calls, outputs):
            self.input.append({"type": "function_call_output", "call_id": c.id, "output": out})


class AnthropicClient(Client):
    name = "anthropic"
    errors = {400: anthropic.BadRequestError, 429: anthropic.RateLimitError,
              503: anthropic.InternalServerError, 529: anthropic.OverloadedError}
    base_error = anthropic.APIError

    def __init__(self, gw: Gateway, key: str) -> None:
        super().__init__(gw, key)
        self.sdk = gw.anthropic(key)
        self.messages: list[dict[str, Any]] = []

    def tool_params(self) -> list[dict[str, Any]]:
        return [{"name": n, "description": f"{n} of a city", "input_schema": SCHEMA} for n in self.tools]

    def user(self, text: str, image_b64: str | None = None, image_url: str | None = None) -> None:
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        if image_b64 is not None:
            content.append({"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                        "data": image_b64}})
        if image_url is not None:
            content.append({"type": "image", "source": {"type": "url", "url": image_url}})
        self.messages.append({"role": "user", "content": content})

    def body(self, model: str, max_tokens: int | None, extra: dict[str, Any]) -> dict[str, Any]:
        kw: dict[str, Any] = {"model": model, "messages": self.messages,
                              "max_tokens": max_tokens or 256, **extra}
        if self.system:
            kw["system"] = self.system
        if self.tools:
            kw["tools"] = self.tool_params()
        return kw

    def send(self, model: str, stream: bool, headers: dict[str, str] | None = None,
             max_tokens: int | None = None, **extra: Any) -> Reply:
        kw = self.body(model, max_tokens, extra)
        if stream:
            with self.sdk.messages.stream(extra_headers=headers, **kw) as s:
                hdrs = self.last_headers = dict(s.response.headers)
                msg = s.get_final_message()
        else:
            raw = self.sdk.messages.with_raw_response.create(extra_headers=headers, **kw)
            hdrs = self.last_headers = dict(raw.headers)
            msg = raw.parse()
        u = msg.usage
        usage = {"input": u.input_tokens, "cache_read": u.cache_read_input_tokens or 0,
                 "cache_write": u.cache_creation_input_tokens or 0, "output": u.output_tokens}
        return Reply(
            request_id=hdrs["x-llmgw-request-id"],
            headers=hdrs,
            text="".join(b.text for b in msg.content if b.type == "text"),
            finish=msg.stop_reason,
            usage=usage,
            calls=[Call(b.id, b.name, b.input) for b in msg.content if b.type == "tool_use"],
            thinking="".join(b.thinking for b in msg.content if b.type == "thinking"),
            raw=msg,
            stop_sequence=msg.stop_sequence,
        )

    def accept(self, reply: Reply) -> None:
        blocks = []
        for b in reply.raw.content:
            d = b.to_dict(exclude_none=True)
            d.pop("parsed_output", None)
            blocks.append(d)
        self.messages.append({"role": "assistant", "content": blocks})

    def results(self, reply: Reply, outputs: list[str]) -> None:
        self.messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": c.id, "content": out}
            for c, out in zip(reply.calls, outputs)]})


class GeminiClient(Client):
    name = "gemini"
    errors = {400: genai_errors.ClientError, 429: genai_errors.ClientError,
              503: genai_errors.ServerError}
    base_error = genai_errors.APIError

    def __init__(self, gw: Gateway, key: str) -> None:
        super().__init__(gw, key)
        self.sdk = gw.genai(key)
        self.contents: list[gt.Content] = []

    def user(self, text: str, image_b64: str | None = None, image_url: str | None = None) -> None:
        parts = [gt.Part(text=text)]
        if image_b64 is not None:
            parts.append(gt.Part.from_bytes(data=base64.b64decode(image_b64), mime_type="image/png"))
        if image_url is not None:
            parts.append(gt.Part.from_uri(file_uri=image_url, mime_type="image/png"))
        self.contents.append(gt.Content(role="user", parts=parts))

    def config(self, headers: dict[str, str] | None, max_tokens: int | None,
               extra: dict[str, Any]) -> gt.GenerateContentConfig:
        cfg: dict[str, Any] = dict(extra)
        if headers:
            cfg["http_options"] = gt.HttpOptions(headers=headers)
        if self.system:
            cfg["system_instruction"] = self.system
        if self.tools:
            cfg["tools"] = [gt.Tool(function_declarations=[
                gt.FunctionDeclaration(name=n, description=f"{n} of a city", parameters_json_schema=SCHEMA)
                for n in self.tools])]
            cfg["automatic_function_calling"] = gt.AutomaticFunctionCallingConfig(disable=True)
        if max_tokens is not None:
            cfg["max_output_tokens"] = max_tokens
        return gt.GenerateContentConfig(**cfg)

    def send(self, model: str, stream: bool, headers: dict[str, str] | None = None,
             max_tokens: int | None = None, **extra: Any) -> Reply:
        cfg = self.config(headers, max_tokens, extra)
        if stream:
            chunks = []
            for ch in self.sdk.models.generate_content_stream(model=model, contents=self.contents, config=cfg):
                if not chunks:
                    self.last_headers = dict(ch.sdk_http_response.headers or {})
                chunks.append(ch)
        else:
            chunks = [self.sdk.models.generate_content(model=model, contents=self.contents, config=cfg)]
        assert chunks, "no chunk at all"
        hdrs = self.last_headers = dict(chunks[0].sdk_http_response.headers or {})
        parts: list[gt.Part] = []
        finish, meta = "", None
        for ch in chunks:
            cand = (ch.candidates or [None])[0]
            if cand is not None:
                if cand.content is not None and cand.content.parts:
                    parts.extend(cand.content.parts)
                if cand.finish_reason is not None:
                    finish = cand.finish_reason.value
            if ch.usage_metadata is not None:
                meta = ch.usage_metadata
        usage = {}
        if meta is not None:
            usage = {"input": meta.prompt_token_count or 0, "cached": meta.cached_content_token_count or 0,
                     "output": meta.candidates_token_count or 0, "thoughts": meta.thoughts_token_count or 0}
        return Reply(
            request_id=hdrs["x-llmgw-request-id"],
            headers=hdrs,
            text="".join(p.text for p in parts if p.text and not p.thought),
            finish=finish,
            usage=usage,
            calls=[Call(p.function_call.id, p.function_call.name, p.function_call.args)
                   for p in parts if p.function_call is not None],
            thinking="".join(p.text for p in parts if p.text and p.thought),
            raw=parts,
        )

    def accept(self, reply: Reply) -> None:
        self.contents.append(gt.Content(role="model", parts=list(reply.raw)))

    def results(self, reply: Reply, outputs: list[str]) -> None:
        self.contents.append(gt.Content(role="user", parts=[
            gt.Part(function_response=gt.FunctionResponse(id=c.id, name=c.name, response={"result": out}))
            for c, out in zip(reply.calls, outputs)]))

    @staticmethod
    def headers_of(e: BaseException) -> dict[str, str]:
        r = getattr(e, "response", None)
        return {k.lower(): v for k, v in dict(getattr(r, "headers", None) or {}).items()}


CLIENT_CLASSES: dict[str, type[Client]] = {
    c.name: c for c in (ChatClient, ResponsesClient, AnthropicClient, GeminiClient)
}


# ---------------------------------------------------------------------------
# The grid's gateway side: models per upstream protocol, and what the mock got
# ---------------------------------------------------------------------------


@dataclass
class Target:
    """A gateway model with one target on the mock, and the requests the
    mock recorded for its upstream model."""

    gw: Gateway
    model: str
    upstream_model: str
    upstream: str

    def mark(self) -> int:
        return len(self.gw.mock.requests(model=self.upstream_model))

    def sent_since(self, mark: int) -> list[dict[str, Any]]:
        return self.gw.mock.requests(model=self.upstream_model)[mark:]


@dataclass
class Grid:
    gw: Gateway
    key: str
    targets: dict[tuple[str, tuple[str, ...]], Target] = field(default_factory=dict)

    def target(self, upstream: str, *opts: str) -> Target:
        """The model (created on first use) with one target of protocol
        `upstream` and model options `opts`; one attempt, so the mock's
        errors reach the client as they are."""
        k = (upstream, opts)
        if k not in self.targets:
            provider = self.gw.mock_provider(upstream)
            um = f"grid-{upstream}-{uid()}"
            model = self.gw.add_model([f"{provider}:{um}"], "--max-attempts", "1", *opts, prefix="grid")
            self.targets[k] = Target(self.gw, model, um, upstream)
        return self.targets[k]

    def client(self, name: str) -> Client:
        return CLIENT_CLASSES[name](self.gw, self.key)


@pytest.fixture(scope="session")
def grid(gw: Gateway) -> Grid:
    # A key for every model, present and future.
    _, key = gw.add_key(prefix="grid")
    return Grid(gw, key)


def one_request(t: Target, mark: int) -> dict[str, Any]:
    sent = t.sent_since(mark)
    assert len(sent) == 1, f"the mock got {len(sent)} requests, not one: {sent}"
    return sent[0]


# ---------------------------------------------------------------------------
# Reading upstream bodies in their own shapes
# ---------------------------------------------------------------------------


def content_text(v: Any) -> str:
    """The text of a content value in any protocol: a string, or the texts
    of a list of parts/blocks."""
    if isinstance(v, str):
        return v
    if isinstance(v, list):
        return "".join(content_text(p.get("text", p.get("content", ""))) if isinstance(p, dict) else str(p)
                       for p in v)
    if isinstance(v, dict):
        return content_text(v.get("result", v.get("text", json.dumps(v))))
    return ""


def upstream_system(wire: str, body: dict[str, Any]) -> str | None:
    if wire == "anthropic":
        s = body.get("system")
        return None if s is None else content_text(s)
    if wire == "gemini":
        s = body.get("systemInstruction")
        return None if s is None else content_text(s.get("parts"))
    if wire == "openai-responses" and body.get("instructions") is not None:
        return body["instructions"]
    msgs = body.get("messages") if wire == "openai-chat" else body.get("input")
    for m in msgs if isinstance(msgs, list) else []:
        if m.get("role") in ("system", "developer"):
            return content_text(m.get("content"))
    return None


def upstream_images(wire: str, body: dict[str, Any]) -> list[tuple[str, str]]:
    """Every image of the body as (media type or 'url', data or URL)."""
    found: list[tuple[str, str]] = []

    def walk(v: Any) -> None:
        if isinstance(v, list):
            for x in v:
                walk(x)
            return
        if not isinstance(v, dict):
            return
        if wire == "anthropic" and v.get("type") == "image":
            src = v["source"]
            found.append((src.get("media_type", "url"), src.get("data") or src.get("url")))
        elif wire == "gemini" and "inlineData" in v:
            # Protobuf JSON: google-genai writes `mime_type`.
            blob = v["inlineData"]
            found.append((blob.get("mimeType", blob.get("mime_type")), blob["data"]))
        elif wire == "gemini" and "fileData" in v:
            found.append(("url", v["fileData"].get("fileUri", v["fileData"].get("file_uri"))))
        elif wire == "openai-chat" and v.get("type") == "image_url":
            found.append(data_url(v["image_url"]["url"]))
        elif wire == "openai-responses" and v.get("type") == "input_image":
            found.append(data_url(v["image_url"]))
        else:
            for x in v.values():
                walk(x)

    walk(body.get("messages") or body.get("input") or body.get("contents"))
    return found


def data_url(url: str) -> tuple[str, str]:
    if url.startswith("data:"):
        head, data = url[5:].split(",", 1)
        return head.split(";", 1)[0], data
    return "url", url


# ---------------------------------------------------------------------------
# Text and usage
# ---------------------------------------------------------------------------

FINISH = {
    "chat": {"stop": "stop", "length": "length", "stop_sequence": "stop", "content_filter": "content_filter",
             "tool_use": "tool_calls"},
    "responses": {"stop": "completed", "length": "incomplete:max_output_tokens", "stop_sequence": "completed",
                  "content_filter": "incomplete:content_filter", "tool_use": "completed"},
    "anthropic": {"stop": "end_turn", "length": "max_tokens", "stop_sequence": "stop_sequence",
                  "content_filter": "refusal", "tool_use": "tool_use"},
    "gemini": {"stop": "STOP", "length": "MAX_TOKENS", "stop_sequence": "STOP", "content_filter": "SAFETY",
               "tool_use": "STOP"},
}


def expected_finish(client: str, upstream: str, ending: str) -> str:
    # Only Anthropic says a stop sequence ended the turn; from any other
    # upstream an Anthropic client can only hear a natural end.
    if client == "anthropic" and ending == "stop_sequence" and upstream != "anthropic":
        return "end_turn"
    return FINISH[client][ending]


def check_record(grid: Grid, client: str, upstream: str, reply: Reply, usage: tuple[int, ...]) -> dict[str, Any]:
    """The request log record of `reply`: protocols, translation, tokens."""
    rec = grid.gw.log(reply.request_id)
    assert rec["protocol"] == CLIENT_WIRE[client], rec
    assert rec["upstream_protocol"] == upstream, rec
    assert rec["translated"] is (not passes_through(client, upstream)), rec
    assert rec["error"] == "" and rec["status"] == 200, rec
    inp, read, write, out, reasoning = usage
    got = (rec["input_tokens"], rec["cache_read_tokens"], rec["cache_creation_tokens"], rec["output_tokens"],
           rec["reasoning_tokens"])
    assert got == (inp, read, write, out, reasoning), rec
    assert rec["usage_source"] == "reported", rec
    return rec


@pytest.mark.parametrize("client,upstream,stream", cells())
def test_text(grid: Grid, client: str, upstream: str, stream: bool) -> None:
    """The mock's text, a natural end, the mock's usage, and a record that
    says which protocols met."""
    t = grid.target(upstream)
    c = grid.client(client)
    c.user(PROMPT)
    reply = c.send(t.model, stream)
    assert reply.text == TEXT
    assert reply.finish == FINISH[client]["stop"]
    assert reply.calls == [] and reply.thinking == ""
    up = upstream_usage(upstream, PROMPT_WORDS, 0, 0, 4, 0)
    assert reply.usage == native_usage(client, *up)
    check_record(grid, client, upstream, reply, up)


@pytest.mark.parametrize("client,upstream,stream", cells())
def test_usage_with_cache_and_reasoning(grid: Grid, client: str, upstream: str, stream: bool) -> None:
    """Cache reads and writes and reasoning, normalized: each protocol's
    input means what it means there (OpenAI and Gemini count the cache in,
    Anthropic does not), Gemini's candidates leave thoughts out."""
    t = grid.target(upstream)
    c = grid.client(client)
    c.user(PROMPT)
    reply = c.send(t.model, stream, headers={"x-mock-cache": "5,3", "x-mock-thinking": "1"})
    assert reply.text == TEXT
    assert reply.thinking == THINKING
    # 3 thinking chunks + 4 text chunks.
    up = upstream_usage(upstream, PROMPT_WORDS, 5, 3, 7, 3)
    assert reply.usage == native_usage(client, *up)
    check_record(grid, client, upstream, reply, up)


#: Raw bodies with unusual spacing, escapes and number spellings, one per
#: client API; MODEL is the gateway model (Gemini's is in the path).
RAW_BODIES = {
    "chat": '{ "messages" : [ {"role":"user","content":"h\\u00e9llo  w\u00f6rld \\"q\\""} ],'
            ' "model"  : "MODEL" ,\n\t"temperature":0.70, "tools":[{"type":"function","function":'
            '{"name":"get_weather","parameters":{"type":"object"}}}] STREAM}',
    "responses": '{"model":"MODEL",  "input" : "h\\u00e9llo  w\u00f6rld", "instructions":"be brief" ,'
                 ' "temperature":0.70e0 STREAM}',
    "anthropic": '{ "model":"MODEL" ,"max_tokens":  16, "system":"be brief", "messages":[{"role":"user",'
                 '"content":"h\\u00e9llo \u00e7a va"}], "temperature":0.70 STREAM}',
    "gemini": '{"contents" : [{"role":"user","parts":[{"text":"h\\u00e9llo  w\u00f6rld"}]}],\n'
              ' "systemInstruction":{"parts":[{"text":"be brief"}]}, "generationConfig":{"temperature":0.70}}',
}


def raw_request(gw: Gateway, client: str, model: str, key: str, stream: bool) -> httpx.Response:
    body = RAW_BODIES[client].replace("MODEL", model).replace("STREAM", ', "stream":true' if stream else "")
    headers = {"content-type": "application/json"}
    if client == "gemini":
        path = f"/v1beta/models/{model}:" + ("streamGenerateContent?alt=sse" if stream else "generateContent")
        headers["x-goog-api-key"] = key
    else:
        path = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "anthropic": "/v1/messages"}[client]
        headers.update({"authorization": f"Bearer {key}"} if client != "anthropic" else {"x-api-key": key})
    return httpx.post(f"{gw.url}{path}", content=body.encode(), headers=headers, timeout=30)


@pytest.mark.parametrize("client,upstream,stream", [p for p in cells() if passes_through(*p.values[:2])])
def test_same_protocol_is_byte_exact(grid: Grid, client: str, upstream: str, stream: bool) -> None:
    """A request the upstream speaks natively reaches it byte for byte but
    for `model` (and, for a chat stream, `stream_options.include_usage`)."""
    t = grid.target(upstream)
    mark = t.mark()
    r = raw_request(grid.gw, client, t.model, grid.key, stream)
    assert r.status_code == 200, r.text
    rec = one_request(t, mark)
    sent = base64.b64decode(rec["body_base64"]).decode()
    body = RAW_BODIES[client].replace("STREAM", ', "stream":true' if stream else "")
    if client == "gemini":
        expected = body
        assert rec["path"].endswith(f"/models/{t.upstream_model}:"
                                    + ("streamGenerateContent" if stream else "generateContent"))
    else:
        expected = body.replace("MODEL", t.upstream_model)
    if client == "chat" and stream:
        expected = expected[:-1] + ',"stream_options":{"include_usage":true}}'
    assert sent == expected
    log = grid.gw.log(r.headers["x-llmgw-request-id"])
    assert log["translated"] is False and log["upstream_protocol"] == upstream, log


# ---------------------------------------------------------------------------
# Tool calls
# ---------------------------------------------------------------------------

TOOL_VARIANTS = {
    "one": {"x-mock-tool-calls": "1"},
    "three": {"x-mock-tool-calls": "3"},
    "interleaved": {"x-mock-tool-calls": "3", "x-mock-interleave": "1"},
    "final-only": {"x-mock-tool-calls": "3", "x-mock-args-final-only": "1"},
    "interleaved-final-only": {"x-mock-tool-calls": "3", "x-mock-interleave": "1",
                               "x-mock-args-final-only": "1"},
}


def assert_calls(client: str, calls: list[Call], n: int) -> None:
    """`n` calls, named after the declared tools in order, with exactly the
    mock's arguments, and distinct ids."""
    assert [c.name for c in calls] == [TOOLS[i % len(TOOLS)] for i in range(n)], calls
    for i, c in enumerate(calls):
        if client in ("chat", "responses"):
            assert c.args == tool_arguments(i), calls
        else:
            assert c.args == json.loads(tool_arguments(i)), calls
    ids = [c.id for c in calls]
    if client != "gemini" or any(ids):
        assert all(ids) and len(set(ids)) == n, ids


@pytest.mark.parametrize("variant", list(TOOL_VARIANTS))
@pytest.mark.parametrize("client,upstream,stream", cells())
def test_tool_calls(grid: Grid, client: str, upstream: str, stream: bool, variant: str) -> None:
    t = grid.target(upstream)
    c = grid.client(client)
    c.tools = TOOLS
    c.user(TOOL_PROMPT)
    reply = c.send(t.model, stream, headers=TOOL_VARIANTS[variant])
    n = int(TOOL_VARIANTS[variant]["x-mock-tool-calls"])
    assert_calls(client, reply.calls, n)
    assert reply.text == ""
    assert reply.finish == FINISH[client]["tool_use"]
    # Each call's arguments are 4 fragments, 4 output tokens.
    up = upstream_usage(upstream, len(TOOL_PROMPT.split()), 0, 0, 4 * n, 0)
    assert reply.usage == native_usage(client, *up)
    check_record(grid, client, upstream, reply, up)


@pytest.mark.parametrize("shape", ["content-and-finish", "usage-in-finish"])
@pytest.mark.parametrize("client,upstream,stream", cells(upstreams=["openai-chat"], streams=(True,)))
def test_chat_upstream_stream_shapes(grid: Grid, client: str, upstream: str, stream: bool, shape: str) -> None:
    """What several OpenAI-compatible servers do: `finish_reason` on the
    last content delta, or usage in the finish chunk. Text, end and usage
    come through the same."""
    t = grid.target(upstream)
    c = grid.client(client)
    c.user(PROMPT)
    reply = c.send(t.model, stream, headers={f"x-mock-{shape}": "1"})
    assert reply.text == TEXT
    assert reply.finish == FINISH[client]["stop"]
    up = upstream_usage(upstream, PROMPT_WORDS, 0, 0, 4, 0)
    assert reply.usage == native_usage(client, *up)
    check_record(grid, client, upstream, reply, up)
