"""Retries and failover, driven by mock scripts per upstream model. A model
has two targets on the same provider, A (`mock:fail-a-*`) then B
(`mock:ok-b-*`); the request log tells which attempts were made.

Runs on a dedicated gateway: the retry budget and the outlier state are
per data plane, and the request deadline is a global setting."""

from __future__ import annotations

import time

import openai
import pytest

from conftest import Gateway, uid

MSG = [{"role": "user", "content": "retry me"}]


@pytest.fixture(scope="module")
def rgw(make_gateway) -> Gateway:
    # A budget no test here can exhaust: these tests are about single requests.
    return make_gateway("retries", cp_args=["--request-deadline", "2s", "--first-byte-timeout", "30s",
                                            "--retry-budget-min-retries", "10000"])


def setup(gw: Gateway, max_attempts: int = 3) -> tuple[str, str, str, str, str]:
    """(model, A, B, key name, key) with fresh upstream names."""
    a, b = f"fail-a-{uid()}", f"ok-b-{uid()}"
    model = gw.add_model(
        [f"mock:{a}", f"mock:{b}"], "--max-attempts", str(max_attempts), "--retry-delay-ms", "10"
    )
    name, key = gw.add_key()
    return model, a, b, name, key


def attempts(rec: dict) -> list[tuple[str, int]]:
    return [(x["upstream_model"], x["status"]) for x in rec["attempts"]]


def test_retries_on_the_same_target_until_success(rgw: Gateway) -> None:
    model, a, b, _, key = setup(rgw)
    rgw.mock.script(a, [{"status": 503}, {"status": 503}])
    raw = rgw.openai(key).chat.completions.with_raw_response.create(model=model, messages=MSG)
    assert raw.parse().choices[0].message.content
    assert len(rgw.mock.requests(a)) == 3
    assert rgw.mock.requests(b) == []
    rec = rgw.log(raw.headers["x-llmgw-request-id"])
    assert attempts(rec) == [(a, 503), (a, 503), (a, 200)]
    assert rec["status"] == 200 and rec["retries"] == 2
    assert rec["upstream_model"] == a and rec["provider"] == "mock"


def test_failover_after_max_attempts(rgw: Gateway) -> None:
    model, a, b, _, key = setup(rgw)
    rgw.mock.script(a, [{"status": 503}] * 3)
    raw = rgw.openai(key).chat.completions.with_raw_response.create(model=model, messages=MSG)
    assert raw.parse().choices[0].message.content
    assert len(rgw.mock.requests(a)) == 3
    assert len(rgw.mock.requests(b)) == 1
    rec = rgw.log(raw.headers["x-llmgw-request-id"])
    assert attempts(rec) == [(a, 503), (a, 503), (a, 503), (b, 200)]
    assert rec["status"] == 200 and rec["upstream_model"] == b and rec["retries"] == 3


def test_other_4xx_is_returned_as_is_without_retry(rgw: Gateway) -> None:
    model, a, b, _, key = setup(rgw)
    rgw.mock.script(a, [{"status": 400}])
    with pytest.raises(openai.BadRequestError) as e:
        rgw.openai(key).chat.completions.create(model=model, messages=MSG)
    # The upstream's own error body, passed through.
    assert "injected HTTP 400" in e.value.message
    assert len(rgw.mock.requests(a)) == 1
    assert rgw.mock.requests(b) == []
    rec = rgw.log(e.value.response.headers["x-llmgw-request-id"])
    assert attempts(rec) == [(a, 400)]
    assert rec["status"] == 400


def test_429_moves_to_the_next_target_at_once(rgw: Gateway) -> None:
    model, a, b, _, key = setup(rgw)
    rgw.mock.script(a, [{"status": 429, "retry_after": 30}])
    started = time.monotonic()
    raw = rgw.openai(key).chat.completions.with_raw_response.create(model=model, messages=MSG)
    assert time.monotonic() - started < 1.5  # retry-after was not waited for
    assert raw.parse().choices[0].message.content
    assert len(rgw.mock.requests(a)) == 1
    assert len(rgw.mock.requests(b)) == 1
    rec = rgw.log(raw.headers["x-llmgw-request-id"])
    assert attempts(rec) == [(a, 429), (b, 200)]


def test_429_on_the_last_target_waits_for_retry_after_once(rgw: Gateway) -> None:
    a = f"only-a-{uid()}"
    model = rgw.add_model([f"mock:{a}"], "--max-attempts", "3", "--retry-delay-ms", "10")
    _, key = rgw.add_key()
    rgw.mock.script(a, [{"status": 429, "retry_after": 1}])
    started = time.monotonic()
    raw = rgw.openai(key).chat.completions.with_raw_response.create(model=model, messages=MSG)
    elapsed = time.monotonic() - started
    assert raw.parse().choices[0].message.content
    assert 0.9 <= elapsed < 4, elapsed
    rec = rgw.log(raw.headers["x-llmgw-request-id"])
    assert attempts(rec) == [(a, 429), (a, 200)]


def test_connection_reset_is_retried_then_fails_over(rgw: Gateway) -> None:
    model, a, b, _, key = setup(rgw, max_attempts=2)
    rgw.mock.script(a, [{"reset_before_first_byte": True}] * 2)
    raw = rgw.openai(key).chat.completions.with_raw_response.create(model=model, messages=MSG)
    assert raw.parse().choices[0].message.content
    assert len(rgw.mock.requests(a)) == 2
    rec = rgw.log(raw.headers["x-llmgw-request-id"])
    got = [(x["upstream_model"], x["status"], bool(x["error"])) for x in rec["attempts"]]
    assert got == [(a, 0, True), (a, 0, True), (b, 200, False)]


def test_all_targets_failing_returns_the_last_upstream_error(rgw: Gateway) -> None:
    model, a, b, _, key = setup(rgw, max_attempts=2)
    rgw.mock.script(a, [{"status": 503}] * 2)
    rgw.mock.script(b, [{"status": 529}] * 2)
    with pytest.raises(openai.APIStatusError) as e:
        rgw.openai(key).chat.completions.create(model=model, messages=MSG)
    assert e.value.status_code == 529
    rec = rgw.log(e.value.response.headers["x-llmgw-request-id"])
    assert attempts(rec) == [(a, 503), (a, 503), (b, 529), (b, 529)]
    assert rec["error"]


def test_request_deadline_is_respected(rgw: Gateway) -> None:
    model, a, b, _, key = setup(rgw)
    rgw.mock.script(a, [{"hang": True}])
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as e:
        rgw.openai(key).chat.completions.create(model=model, messages=MSG)
    elapsed = time.monotonic() - started
    assert e.value.status_code == 504
    assert 1.5 <= elapsed < 6, elapsed
    rec = rgw.log(e.value.response.headers["x-llmgw-request-id"])
    assert rec["status"] == 504 and rec["error"]


def test_retry_budget_caps_retries_across_requests(make_gateway) -> None:
    """No share of requests and a floor of one retry per 10 s: the first
    failing request gets one retry, the next none, and neither fails over."""
    gw = make_gateway("budget", cp_args=["--retry-budget-percent", "0", "--retry-budget-min-retries", "1"])
    model, a, b, _, key = setup(gw)
    gw.mock.script(a, [{"status": 503}] * 10)
    outcomes = []
    for _ in range(2):
        with pytest.raises(openai.APIStatusError) as e:
            gw.openai(key, max_retries=0).chat.completions.create(model=model, messages=MSG)
        assert e.value.status_code == 503
        outcomes.append(attempts(gw.log(e.value.response.headers["x-llmgw-request-id"])))
    assert outcomes == [[(a, 503), (a, 503)], [(a, 503)]]
    assert gw.mock.requests(b) == []


@pytest.mark.parametrize("status", [500, 502, 503, 504, 529])
def test_each_5xx_and_529_is_retried(rgw: Gateway, status: int) -> None:
    model, a, b, _, key = setup(rgw)
    rgw.mock.script(a, [{"status": status}])
    raw = rgw.openai(key).chat.completions.with_raw_response.create(model=model, messages=MSG)
    assert raw.parse().choices[0].message.content
    assert attempts(rgw.log(raw.headers["x-llmgw-request-id"])) == [(a, status), (a, 200)]
    assert rgw.mock.requests(b) == []


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 422])
def test_no_4xx_but_429_is_retried_or_failed_over(rgw: Gateway, status: int) -> None:
    model, a, b, _, key = setup(rgw)
    rgw.mock.script(a, [{"status": status}])
    with pytest.raises(openai.APIStatusError) as e:
        rgw.openai(key).chat.completions.create(model=model, messages=MSG)
    assert e.value.status_code == status
    assert attempts(rgw.log(e.value.response.headers["x-llmgw-request-id"])) == [(a, status)]
    assert len(rgw.mock.requests(a)) == 1
    assert rgw.mock.requests(b) == []
