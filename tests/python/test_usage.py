"""Usage and cost in the request log: the upstream's numbers when it reports
them, an estimate when it does not. Prices of 1M $/Mtok input and 2M $/Mtok
output make cost = input_tokens + 2 * output_tokens. Usage of zero for an
answer that is not empty (an upstream that does not count) is missing
usage, and is estimated too."""

from __future__ import annotations

import httpx
import pytest

from conftest import Gateway, uid

PRICES = ("--price-input", "1000000", "--price-output", "2000000")
MSG = [{"role": "user", "content": "count these five words"}]  # the mock: 4 words


@pytest.fixture(scope="module")
def priced(gw: Gateway) -> tuple[str, str, str]:
    """(openai model, anthropic model, key)."""
    om = gw.add_model([f"mock:usage-{uid()}"], *PRICES)
    am = gw.add_model([f"mocka:usage-a-{uid()}"], *PRICES)
    _, key = gw.add_key()
    return om, am, key


def assert_cost(rec: dict) -> None:
    expected = rec["input_tokens"] + 2 * rec["output_tokens"]
    assert rec["cost"] == pytest.approx(expected, rel=1e-9), rec


def test_non_streaming_usage_is_reported(gw: Gateway, priced) -> None:
    # A whole response keeps the upstream's content-length; the record must
    # still be finished as complete (not "cancelled") with parsed usage.
    om, _, key = priced
    raw = gw.openai(key).chat.completions.with_raw_response.create(model=om, messages=MSG)
    u = raw.parse().usage
    rec = gw.log(raw.headers["x-llmgw-request-id"])
    assert rec["cancelled"] is False and rec["error"] == "", rec
    assert rec["usage_source"] == "reported"
    assert (rec["input_tokens"], rec["output_tokens"]) == (u.prompt_tokens, u.completion_tokens) == (4, 4)
    assert rec["stream"] is False and rec["status"] == 200
    assert rec["cost"] == pytest.approx(12.0)
    assert_cost(rec)
    assert rec["latency_ms"] >= rec["ttfb_ms"] >= 0


def test_streaming_usage_is_reported_although_the_client_did_not_ask(gw: Gateway, priced) -> None:
    om, _, key = priced
    stream = gw.openai(key).chat.completions.create(model=om, messages=MSG, stream=True)
    rid = stream.response.headers["x-llmgw-request-id"]
    chunks = list(stream)
    assert all(c.usage is None for c in chunks)
    rec = gw.log(rid)
    assert rec["cancelled"] is False and rec["error"] == "", rec
    assert rec["usage_source"] == "reported"
    assert (rec["input_tokens"], rec["output_tokens"]) == (4, 4)
    assert rec["stream"] is True
    assert_cost(rec)


def test_anthropic_usage_is_reported(gw: Gateway, priced) -> None:
    _, am, key = priced
    raw = gw.anthropic(key).messages.with_raw_response.create(model=am, max_tokens=9, messages=MSG)
    m = raw.parse()
    rec = gw.log(raw.headers["x-llmgw-request-id"])
    assert rec["cancelled"] is False, rec
    assert rec["usage_source"] == "reported"
    assert (rec["input_tokens"], rec["output_tokens"]) == (m.usage.input_tokens, m.usage.output_tokens)
    assert_cost(rec)


def test_anthropic_streaming_usage_is_reported(gw: Gateway, priced) -> None:
    _, am, key = priced
    # message_start + message_delta.
    r = httpx.post(
        f"{gw.url}/v1/messages",
        headers={"x-api-key": key},
        json={"model": am, "max_tokens": 9, "messages": MSG, "stream": True},
        timeout=30,
    )
    assert r.status_code == 200
    rec = gw.log(r.headers["x-llmgw-request-id"])
    assert rec["usage_source"] == "reported"
    assert (rec["input_tokens"], rec["output_tokens"]) == (4, 4)
    assert_cost(rec)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_missing_usage_is_estimated(gw: Gateway, priced, stream: bool) -> None:
    om, _, key = priced
    r = httpx.post(
        f"{gw.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}", "x-mock-no-usage": "1"},
        json={"model": om, "messages": MSG, "stream": stream},
        timeout=30,
    )
    assert r.status_code == 200
    assert b'"usage":{' not in r.content.replace(b" ", b"")
    rec = gw.log(r.headers["x-llmgw-request-id"])
    assert rec["cancelled"] is False, rec
    assert rec["usage_source"] == "estimated"
    assert rec["output_tokens"] > 0 and rec["input_tokens"] > 0
    assert_cost(rec)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_zero_usage_for_an_answer_is_estimated(gw: Gateway, priced, stream: bool) -> None:
    """The mock's Anthropic answer without usage keeps the required fields,
    at 0: "reported 0/0" for a non-empty answer is not believed."""
    _, am, key = priced
    r = httpx.post(
        f"{gw.url}/v1/messages",
        headers={"x-api-key": key, "anthropic-version": "2023-06-01", "x-mock-no-usage": "1"},
        json={"model": am, "max_tokens": 64, "messages": MSG, "stream": stream},
        timeout=30,
    )
    assert r.status_code == 200
    assert b"tok0" in r.content
    assert b'"output_tokens":0' in r.content.replace(b" ", b""), r.content
    rec = gw.log(r.headers["x-llmgw-request-id"])
    assert rec["outcome"] == "ok", rec
    assert rec["usage_source"] == "estimated", rec
    assert rec["output_tokens"] > 0 and rec["input_tokens"] > 0, rec
    assert rec["cost"] > 0
    assert_cost(rec)
