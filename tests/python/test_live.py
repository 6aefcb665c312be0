"""Requests in flight and admin cancel (#17) with the official OpenAI SDK:
a slow stream shows in `llmgw requests` with growing tokens, and `llmgw
requests cancel ID` ends it within a second; the SDK raises an error (it
never finishes cleanly), the mock sees its connection closed, and the log
says cancelled by an admin (499, cancelled_by_admin)."""

from __future__ import annotations

import threading
import time

import openai
import pytest

from conftest import Gateway, Mock, uid, wait_until

MSG = [{"role": "user", "content": "slow please"}]


@pytest.fixture(scope="module")
def lmock(gw: Gateway) -> tuple[Mock, str]:
    return gw.start_extra_mock("openai")


def in_flight(gw: Gateway, rid: str) -> dict | None:
    for r in gw.cli("requests") or []:
        if r["id"] == rid:
            return r
    return None


def test_cancelled_stream_raises_in_the_sdk(gw: Gateway, lmock) -> None:
    m, provider = lmock
    model = gw.add_model([f"{provider}:slow-{uid()}"], "--max-attempts", "1")
    _, key = gw.add_key()
    before = m.stats()["cancelled"]
    client = gw.openai(key)
    stream = client.chat.completions.create(
        model=model,
        messages=MSG,
        stream=True,
        extra_headers={"x-mock-chunk-delay-ms": "50", "x-mock-chunks": "400"},
    )
    rid = stream.response.headers["x-llmgw-request-id"]
    chunks = iter(stream)
    text: list[str] = []
    outcome: dict[str, object] = {}

    def read() -> None:
        try:
            for c in chunks:
                if c.choices and c.choices[0].delta.content:
                    text.append(c.choices[0].delta.content)
            outcome["finished"] = True
        except Exception as e:  # what the SDK raises is the point
            outcome["error"] = e
        outcome["at"] = time.monotonic()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    first = wait_until(lambda: (r := in_flight(gw, rid)) and r["tokens"] > 0 and r, 10,
                       "the stream in the live view with tokens")
    assert first["model"] == model and first["stream"] is True, first
    assert first["client_protocol"] == "openai-chat", first
    wait_until(lambda: (r := in_flight(gw, rid)) and r["tokens"] > first["tokens"], 10,
               "the tokens to grow")

    cancelled_at = time.monotonic()
    answer = gw.cli("requests", "cancel", rid)
    assert answer["confirmed"] is True, answer
    reader.join(timeout=1.0)
    assert not reader.is_alive(), "the stream did not end within 1 s of the cancel"
    assert outcome["at"] - cancelled_at <= 1.0
    assert "finished" not in outcome, "the SDK saw a clean finish after a cancel"
    err = outcome["error"]
    assert isinstance(err, openai.APIError), repr(err)
    assert "cancelled by an admin" in str(err), str(err)
    assert text, "no content before the cancel"

    wait_until(lambda: m.stats()["cancelled"] > before, 5, "the mock to see the upstream closed")
    rec = gw.log(rid)
    assert rec["status"] == 499, rec
    assert rec["outcome"] == "cancelled_by_admin", rec
    assert "cancelled by an admin" in rec["error"], rec
    wait_until(lambda: in_flight(gw, rid) is None, 5, "the request to leave the live view")

    ended = gw.cli_raw("requests", "cancel", rid)
    assert ended.returncode != 0
    assert "has already ended" in ended.stderr, ended.stderr
