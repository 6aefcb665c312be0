"""Cancellation: a client that goes away cancels the upstream request within
a second, streaming or not, and the request is logged as cancelled: status
499, outcome cancelled_by_client.

Uses a mock of its own (behind its own provider on the shared gateway) so
that its `cancelled` counter counts only these tests."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from conftest import Gateway, Mock, uid, wait_until

MSG = [{"role": "user", "content": "slow please"}]


@pytest.fixture(scope="module")
def cmock(gw: Gateway) -> tuple[Mock, str]:
    return gw.start_extra_mock("openai")


def cancelled(m: Mock) -> int:
    return m.stats()["cancelled"]


def wait_cancelled(m: Mock, before: int, since: float) -> float:
    """Waits (1 s bound from `since`) for the mock's cancelled counter to pass
    `before`; returns how long after `since` it did."""
    left = max(0.0, 1.0 - (time.monotonic() - since))
    wait_until(lambda: cancelled(m) > before, left, "the mock to see the cancellation", interval=0.01)
    return time.monotonic() - since


def test_closing_a_stream_cancels_the_upstream(gw: Gateway, cmock) -> None:
    m, provider = cmock
    model = gw.add_model([f"{provider}:slow-{uid()}"], "--max-attempts", "1")
    _, key = gw.add_key()
    before = cancelled(m)
    client = gw.openai(key)
    stream = client.chat.completions.create(
        model=model,
        messages=MSG,
        stream=True,
        extra_headers={"x-mock-chunk-delay-ms": "500", "x-mock-chunks": "20"},
    )
    rid = stream.response.headers["x-llmgw-request-id"]
    first = next(iter(stream))
    assert first.choices[0].delta.content == "tok0 "
    assert m.stats()["active"] >= 1
    stream.close()
    client.close()
    closed_at = time.monotonic()
    wait_cancelled(m, before, closed_at)
    rec = gw.log(rid)
    assert rec["cancelled"] is True, rec
    assert rec["stream"] is True
    assert rec["status"] == 499 and rec["outcome"] == "cancelled_by_client", rec


def test_closing_a_raw_stream_cancels_the_upstream(gw: Gateway, cmock) -> None:
    m, provider = cmock
    model = gw.add_model([f"{provider}:slow-r-{uid()}"], "--max-attempts", "1")
    _, key = gw.add_key()
    before = cancelled(m)
    with httpx.Client(timeout=30) as c:
        with c.stream(
            "POST",
            f"{gw.url}/v1/chat/completions",
            headers={
                "authorization": f"Bearer {key}",
                "x-mock-chunk-delay-ms": "500",
                "x-mock-chunks": "20",
            },
            json={"model": model, "messages": MSG, "stream": True},
        ) as r:
            rid = r.headers["x-llmgw-request-id"]
            for chunk in r.iter_raw():
                if chunk:
                    break
    closed_at = time.monotonic()
    wait_cancelled(m, before, closed_at)
    rec = gw.log(rid)
    assert rec["cancelled"] is True, rec
    assert rec["status"] == 499 and rec["outcome"] == "cancelled_by_client", rec


def test_client_timeout_on_a_hanging_upstream_cancels_it(gw: Gateway, cmock) -> None:
    m, provider = cmock
    model = gw.add_model([f"{provider}:hang-{uid()}"], "--max-attempts", "1")
    key_name, key = gw.add_key()
    before = cancelled(m)
    client = gw.openai(key, timeout=0.5)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model=model, messages=MSG, extra_headers={"x-mock-hang": "1"})
    timed_out_at = time.monotonic()
    client.close()
    wait_cancelled(m, before, timed_out_at)
    (rec,) = gw.key_logs(key_name, 1)
    assert rec["cancelled"] is True, rec
    assert rec["model"] == model
    # A non-streaming request cancelled before its answer: 499, not 0.
    assert rec["status"] == 499 and rec["outcome"] == "cancelled_by_client", rec


@pytest.fixture(scope="module")
def amock(gw: Gateway) -> tuple[Mock, str]:
    return gw.start_extra_mock("anthropic")


def test_leaving_while_a_translated_answer_is_read_is_still_logged(gw: Gateway, amock) -> None:
    """A non-streamed translated answer is read whole before it is converted:
    a client that gives up in between still leaves its record (499,
    cancelled_by_client), and the upstream is cancelled."""
    m, provider = amock
    model = gw.add_model([f"{provider}:slow-body-{uid()}"], "--max-attempts", "1")
    key_name, key = gw.add_key()
    before = cancelled(m)
    client = gw.openai(key, timeout=0.5, max_retries=0)
    with pytest.raises(openai.APITimeoutError):
        # The head comes at once, the body 30 s later.
        client.chat.completions.create(model=model, messages=MSG,
                                       extra_headers={"x-mock-body-delay-ms": "30000"})
    gave_up_at = time.monotonic()
    client.close()
    wait_cancelled(m, before, gave_up_at)
    (rec,) = gw.key_logs(key_name, 1)
    assert rec["model"] == model
    assert rec["translated"] is True, rec
    assert rec["status"] == 499 and rec["outcome"] == "cancelled_by_client", rec
    assert rec["attempts"] and rec["attempts"][0]["status"] == 200, rec
