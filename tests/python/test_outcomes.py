"""Outcomes and log hygiene: each request-log record says how the request
ended (`ok`, `upstream_error`, `interrupted`, `timeout`,
`cancelled_by_client`, `refused`), a response that fails after it started
is never logged as a 200, `llmgw logs --outcome` filters by outcome,
requests refused before authentication are all counted in /metrics but
logged only at a bounded rate per client address, and repeated warnings
are rate-limited in the process log."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from conftest import Gateway, uid, wait_until

MSG = [{"role": "user", "content": "say something nice please"}]

#: `--unauthenticated-log-per-minute`'s default: rows per address per
#: minute, and at once.
UNAUTH_ROWS_PER_MINUTE = 10

#: How often a rate-limited warning kind may be written (dataplane/src/throttle.rs).
WARN_INTERVAL_S = 10


def chat_stream(gw: Gateway, key: str, model: str, headers: dict[str, str]) -> tuple[str, bytes]:
    """A raw streamed chat request: (request id, the body the client got)."""
    with httpx.stream(
        "POST",
        f"{gw.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}", **headers},
        json={"model": model, "messages": MSG, "stream": True},
        timeout=30,
    ) as r:
        assert r.status_code == 200
        return r.headers["x-llmgw-request-id"], b"".join(r.iter_raw())


def metric(gw: Gateway, name: str, labels: str = "") -> float:
    """One sample of the data plane's /metrics (0 when it is not there yet)."""
    text = httpx.get(f"{gw.ops_url}/metrics", timeout=10).text
    pattern = re.escape(name + (f"{{{labels}}}" if labels else "")) + r" ([0-9.e+]+)$"
    m = re.search(pattern, text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def test_a_stream_broken_after_its_first_bytes_is_interrupted_not_200(gw: Gateway) -> None:
    model = gw.add_model([f"mock:brk-o-{uid()}"], "--max-attempts", "1")
    _, key = gw.add_key()
    rid, raw = chat_stream(gw, key, model, {"x-mock-reset-after-chunks": "2"})
    assert b"tok0" in raw and b"[DONE]" not in raw
    rec = gw.log(rid)
    assert rec["outcome"] == "interrupted", rec
    assert rec["status"] == 502 and "broke" in rec["error"], rec
    assert rec["cancelled"] is False


def test_an_in_stream_overloaded_error_is_logged_as_529(gw: Gateway) -> None:
    """Anthropic's `error` event (overloaded_error) after two content
    events, passed through: the client gets the event, the record gets the
    status the error implies and its text."""
    model = gw.add_model([f"mocka:err-o-{uid()}"], "--max-attempts", "1")
    _, key = gw.add_key()
    with httpx.stream(
        "POST",
        f"{gw.url}/v1/messages",
        headers={"x-api-key": key, "anthropic-version": "2023-06-01", "x-mock-error-after": "2"},
        json={"model": model, "max_tokens": 64, "messages": MSG, "stream": True},
        timeout=30,
    ) as r:
        assert r.status_code == 200
        rid = r.headers["x-llmgw-request-id"]
        raw = b"".join(r.iter_raw())
    assert b"overloaded_error" in raw
    rec = gw.log(rid)
    assert rec["outcome"] == "interrupted", rec
    assert rec["status"] == 529 and "Overloaded" in rec["error"], rec


def test_a_silent_upstream_mid_stream_is_a_timeout(gw: Gateway) -> None:
    """A provider with a 1 s timeout whose stream goes quiet: the idle
    timeout ends it, and the record says timeout (504)."""
    provider = gw.add_provider("openai", None, None, "--timeout-s", "1")
    model = gw.add_model([f"{provider}:silent-{uid()}"], "--max-attempts", "1")
    _, key = gw.add_key()
    rid, raw = chat_stream(gw, key, model, {"x-mock-chunk-delay-ms": "5000", "x-mock-chunks": "3"})
    assert b"idle timeout" in raw
    rec = gw.log(rid)
    assert rec["outcome"] == "timeout", rec
    assert rec["status"] == 504 and "idle timeout" in rec["error"], rec


def test_logs_filter_by_outcome(gw: Gateway) -> None:
    model = gw.add_model([f"mock:filter-o-{uid()}"], "--max-attempts", "1")
    name, key = gw.add_key()
    ok = gw.openai(key).chat.completions.with_raw_response.create(model=model, messages=MSG)
    ok_id = ok.headers["x-llmgw-request-id"]
    broken_id, _ = chat_stream(gw, key, model, {"x-mock-reset-after-chunks": "1"})
    refused = httpx.post(f"{gw.url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                         json={"model": f"nope-{uid()}", "messages": MSG}, timeout=30)
    assert refused.status_code == 404
    refused_id = refused.headers["x-llmgw-request-id"]
    gw.key_logs(name, 3)

    def ids(outcome: str) -> list[str]:
        return [r["id"] for r in gw.logs("--key", name, "--outcome", outcome)]

    assert ids("ok") == [ok_id]
    assert ids("interrupted") == [broken_id]
    assert ids("refused") == [refused_id]
    assert ids("timeout") == []
    # The table shows the outcome too.
    p = gw.cli_raw("logs", "--key", name, "--outcome", "interrupted", json_out=False)
    assert p.returncode == 0, p.stderr
    assert "OUTCOME" in p.stdout and "interrupted" in p.stdout, p.stdout
    # A name that is no outcome is refused before anything is sent.
    p = gw.cli_raw("logs", "--outcome", "exploded")
    assert p.returncode != 0 and "not an outcome" in p.stderr, p.stderr


# ----- dedicated gateways: counts of their own -----


def test_a_401_flood_is_counted_but_logged_at_a_bounded_rate(make_gateway) -> None:
    gw = make_gateway("unauth")
    model = gw.add_model([f"mock:flood-{uid()}"])
    _, key = gw.add_key()
    flood = 60
    started = time.monotonic()
    for i in range(flood):
        # A connection of its own each: a refused request's unread body
        # closes its connection.
        headers = {"authorization": f"Bearer sk-llmgw-wrong-{i}"} if i % 2 else {}
        r = httpx.post(f"{gw.url}/v1/chat/completions", headers=headers,
                       json={"model": model, "messages": MSG}, timeout=30)
        assert r.status_code == 401
    elapsed = time.monotonic() - started
    # Records ship in order: once a later one is stored, every earlier one is.
    last = gw.openai(key).chat.completions.with_raw_response.create(model=model, messages=MSG)
    assert gw.log(last.headers["x-llmgw-request-id"])["outcome"] == "ok"
    rows = gw.logs("--status", "401", "--limit", "1000")
    # A burst of the per-minute rate, then that rate over the flood's time.
    bound = UNAUTH_ROWS_PER_MINUTE + int(elapsed * UNAUTH_ROWS_PER_MINUTE / 60) + 1
    assert 1 <= len(rows) <= bound, (len(rows), bound)
    assert all(r["outcome"] == "refused" and r["key"] == "" for r in rows), rows
    # Every refusal is counted, by reason, and so are the rows left out.
    missing = metric(gw, "llmgw_unauthenticated_requests_total", 'reason="missing_key"')
    invalid = metric(gw, "llmgw_unauthenticated_requests_total", 'reason="invalid_key"')
    assert (missing, invalid) == (flood / 2, flood / 2)
    suppressed = metric(gw, "llmgw_unauthenticated_log_rows_suppressed_total")
    assert suppressed == flood - len(rows)


def test_repeated_retry_budget_warnings_are_rate_limited(make_gateway) -> None:
    """No retry budget at all: every failing request's retry is refused and
    would warn; the process log has one line per interval, not one per
    request."""
    gw = make_gateway("warnings", cp_args=["--retry-budget-percent", "0",
                                           "--retry-budget-min-retries", "0"])
    model = gw.add_model([f"mock:budget-{uid()}"], "--max-attempts", "3", "--retry-delay-ms", "1")
    _, key = gw.add_key()
    requests = 20
    started = time.monotonic()
    with httpx.Client(timeout=30) as c:
        for _ in range(requests):
            r = c.post(f"{gw.url}/v1/chat/completions",
                       headers={"authorization": f"Bearer {key}", "x-mock-status": "503"},
                       json={"model": model, "messages": MSG})
            assert r.status_code == 503
    elapsed = time.monotonic() - started
    assert gw.dp is not None

    def lines() -> list[dict]:
        out = []
        for line in gw.dp.log_path.read_text().splitlines():
            if "retry budget exhausted" in line:
                out.append(json.loads(line))
        return out

    warned = wait_until(lambda: lines() or None, 5, "a retry-budget warning")
    assert len(warned) <= 1 + int(elapsed / WARN_INTERVAL_S), warned
    fields = warned[0].get("fields", warned[0])
    assert "suppressed" in fields, warned[0]
