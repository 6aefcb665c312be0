"""Upstream faults and load, each a named case, on top of what other files
already prove (see the table in docs/reliability.md):

- a refused connection fails over to the next target;
- a Gemini stream cut mid-way ends in Gemini's error, after the chunks
  that arrived (OpenAI and Anthropic: test_streams.py);
- an upstream that goes silent mid-stream is cut by the idle timeout with
  a clear error in the stream;
- a client that goes away cancels the upstream request within 1 s, for
  Anthropic and Gemini clients too (OpenAI: test_cancel.py);
- a retry storm: under an upstream that fails every request, the retry
  budget keeps upstream attempts at most 1.3 times the client requests.

Each case that changes global settings runs on a gateway of its own."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import Gateway, Mock, sse_data, sse_events, uid, wait_until

MSG = [{"role": "user", "content": "fault"}]


def attempts(rec: dict) -> list[tuple[str, int, bool]]:
    return [(a["upstream_model"], a["status"], bool(a["error"])) for a in rec["attempts"]]


def test_connect_refused_fails_over_to_the_next_target(gw: Gateway) -> None:
    # A port bound but not listening: connections to it are refused.
    with socket.socket() as hold:
        hold.bind(("127.0.0.1", 0))
        dead = gw.add_provider("openai", f"http://127.0.0.1:{hold.getsockname()[1]}/v1", "sk-dead")
        up = f"alive-{uid()}"
        model = gw.add_model([f"{dead}:gone", f"mock:{up}"], "--max-attempts", "2", "--retry-delay-ms", "10")
        _, key = gw.add_key()
        raw = gw.openai(key).chat.completions.with_raw_response.create(model=model, messages=MSG)
        assert raw.parse().choices[0].message.content
        rec = gw.log(raw.headers["x-llmgw-request-id"])
    got = attempts(rec)
    assert got[-1] == (up, 200, False), got
    assert got[:-1] and all(m == "gone" and s == 0 and e for m, s, e in got[:-1]), got
    assert all("connect" in a["error"] for a in rec["attempts"][:-1]), rec["attempts"]
    assert rec["status"] == 200


def test_a_gemini_stream_cut_mid_way_ends_in_geminis_error(gw: Gateway) -> None:
    model = gw.add_model([f"{gw.mock_provider('gemini')}:cut-{uid()}"], "--max-attempts", "1")
    _, key = gw.add_key()
    with httpx.stream(
        "POST",
        f"{gw.url}/v1beta/models/{model}:streamGenerateContent?alt=sse",
        headers={"x-goog-api-key": key, "x-mock-reset-after-chunks": "2"},
        json={"contents": [{"role": "user", "parts": [{"text": "cut"}]}]},
        timeout=30,
    ) as r:
        assert r.status_code == 200
        rid = r.headers["x-llmgw-request-id"]
        body = b"".join(r.iter_raw())
    datas = [json.loads(sse_data(e)) for e in sse_events(body)]
    texts = [p["text"] for d in datas[:-1] for c in d.get("candidates", []) for p in c["content"]["parts"]]
    assert texts == ["tok0 ", "tok1 "], datas
    assert set(datas[-1]) == {"error"} and datas[-1]["error"]["message"], datas[-1]
    assert gw.log(rid)["error"]


@pytest.fixture(scope="module")
def idle_gw(make_gateway) -> Gateway:
    return make_gateway("idle")


@pytest.mark.parametrize("client", ["openai", "anthropic"])
def test_a_silent_upstream_mid_stream_is_cut_by_the_idle_timeout(idle_gw: Gateway, client: str) -> None:
    gw = idle_gw
    protocol = "openai" if client == "openai" else "anthropic"
    provider = gw.add_provider(protocol, None, None, "--timeout-s", "1")
    model = gw.add_model([f"{provider}:silent-{uid()}"], "--max-attempts", "1")
    _, key = gw.add_key()
    # The head and the first events at once, then 30 s between chunks.
    hdrs = {"x-mock-chunk-delay-ms": "30000", "x-mock-chunks": "3"}
    if client == "openai":
        url, auth = f"{gw.url}/v1/chat/completions", {"authorization": f"Bearer {key}"}
        body = {"model": model, "messages": MSG, "stream": True}
    else:
        url, auth = f"{gw.url}/v1/messages", {"x-api-key": key, "anthropic-version": "2023-06-01"}
        body = {"model": model, "max_tokens": 16, "messages": MSG, "stream": True}
    started = time.monotonic()
    with httpx.stream("POST", url, headers={**auth, **hdrs}, json=body, timeout=20) as r:
        assert r.status_code == 200
        rid = r.headers["x-llmgw-request-id"]
        raw = b"".join(r.iter_raw())
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"the stream was not cut by the 1 s idle timeout ({elapsed:.1f} s)"
    last = json.loads(sse_data(sse_events(raw)[-1]))
    err = last["error"]
    assert "idle timeout" in err["message"], last
    assert b"[DONE]" not in raw and b"message_stop" not in raw
    assert "idle timeout" in gw.log(rid)["error"]


@pytest.fixture(scope="module")
def cancel_mock(gw: Gateway) -> tuple[Mock, dict[str, str]]:
    """A mock of its own (its `cancelled` counter is these tests' alone)
    with a provider per protocol."""
    m = Mock.start(gw.workdir, f"cancel-mock-{uid()}")
    gw.extra_mocks.append(m)
    providers = {p: gw.add_provider(p, m.provider_base_url(p), gw.provider_key(p)) for p in ("anthropic", "gemini")}
    return m, providers


@pytest.mark.parametrize("client", ["anthropic", "gemini"])
def test_a_client_cancel_reaches_the_upstream_within_1_s(gw: Gateway, cancel_mock, client: str) -> None:
    m, providers = cancel_mock
    model = gw.add_model([f"{providers[client]}:slow-{uid()}"], "--max-attempts", "1")
    _, key = gw.add_key()
    before = m.stats()["cancelled"]
    slow = {"x-mock-chunk-delay-ms": "500", "x-mock-chunks": "20"}
    if client == "anthropic":
        url = f"{gw.url}/v1/messages"
        hdrs = {"x-api-key": key, "anthropic-version": "2023-06-01", **slow}
        body = {"model": model, "max_tokens": 64, "messages": MSG, "stream": True}
    else:
        url = f"{gw.url}/v1beta/models/{model}:streamGenerateContent?alt=sse"
        hdrs = {"x-goog-api-key": key, **slow}
        body = {"contents": [{"role": "user", "parts": [{"text": "slow"}]}]}
    with httpx.Client(timeout=30) as c:
        with c.stream("POST", url, headers=hdrs, json=body) as r:
            assert r.status_code == 200
            rid = r.headers["x-llmgw-request-id"]
            for chunk in r.iter_raw():
                if b"tok0" in chunk:
                    # Still streaming upstream (leaving the loop closes the
                    # response: that is the cancel).
                    assert m.stats()["active"] >= 1
                    break
    # The bound, from the moment the client closed.
    wait_until(lambda: m.stats()["cancelled"] > before, 1.0, "the upstream to see the cancel", interval=0.01)
    assert gw.log(rid)["cancelled"] is True


def test_a_retry_storm_amplifies_upstream_load_at_most_1_3_times(make_gateway) -> None:
    """Default retry budget (20% of the window's requests plus 10), models
    that would try 3 times on each of 2 targets: with every attempt failing,
    upstream attempts stay within 1.3 × client requests."""
    gw: Gateway = make_gateway("storm")
    m, provider = gw.start_extra_mock("openai")
    model = gw.add_model([f"{provider}:storm-a-{uid()}", f"{provider}:storm-b-{uid()}"],
                         "--max-attempts", "3", "--retry-delay-ms", "0")
    _, key = gw.add_key()
    n = 300
    tls = threading.local()

    def one(_: int) -> int:
        if not hasattr(tls, "c"):
            tls.c = httpx.Client(timeout=30)
        r = tls.c.post(f"{gw.url}/v1/chat/completions",
                       headers={"authorization": f"Bearer {key}", "x-mock-status": "503"},
                       json={"model": model, "messages": MSG})
        return r.status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, range(n)))
    assert set(statuses) == {503}, set(statuses)
    upstream = m.stats()["requests"]
    ratio = upstream / n
    print(f"retry storm: {upstream} upstream attempts for {n} requests ({ratio:.2f}x)")
    assert upstream > n, "no retry at all: the budget was not exercised"
    assert ratio <= 1.3, f"{upstream} upstream attempts for {n} requests ({ratio:.2f}x)"
