"""Protocol translation, how answers end across the grid: every stop
reason in each client's own words, upstream errors as the client
protocol's errors (status, error type, `Retry-After`), Anthropic's 529,
and an error after the first bytes of a stream."""

from __future__ import annotations

from typing import Any

import pytest

# `grid` is the fixture.
from test_translation import (  # noqa: F401
    PROMPT, Client, Grid, bug, cells, expected_finish, grid, passes_through,
)

ENDINGS = ["stop", "length", "stop_sequence", "content_filter"]


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize("client,upstream,stream", cells())
def test_stop_reason(grid: Grid, client: str, upstream: str, stream: bool, ending: str) -> None:
    t = grid.target(upstream)
    c = grid.client(client)
    c.user(PROMPT)
    reply = c.send(t.model, stream, headers={"x-mock-finish": ending})
    assert reply.finish == expected_finish(client, upstream, ending)
    if reply.finish == "stop_sequence":
        # The mock's stop sequence when the request has none.
        assert reply.stop_sequence == "###"
    rec = grid.gw.log(reply.request_id)
    assert rec["status"] == 200 and rec["error"] == "", rec


#: The error type each client protocol gives an HTTP status.
ERROR_TYPES = {
    "anthropic": {400: "invalid_request_error", 429: "rate_limit_error", 503: "api_error",
                  529: "overloaded_error"},
    "gemini": {400: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"},
}


def check_error_body(client: str, status: int, body: Any) -> None:
    """The error body is the client protocol's own shape."""
    assert isinstance(body, dict), body
    if client == "anthropic":
        assert body["type"] == "error", body
        assert body["error"]["type"] == ERROR_TYPES[client][status] and body["error"]["message"], body
    elif client == "gemini":
        err = body["error"]
        assert err["code"] == status and err["status"] == ERROR_TYPES[client][status], body
        assert err["message"], body
    else:
        err = body["error"]
        assert err["message"] and isinstance(err.get("type"), str), body


def failed_send(grid: Grid, c: Client, model: str, stream: bool, headers: dict[str, str],
                status: int) -> dict[str, str]:
    """Sends, expecting the SDK's exception for `status`; checks the error
    body and the log record; returns the response headers."""
    with pytest.raises(c.errors[status]) as e:
        c.send(model, stream, headers=headers)
    assert c.status_of(e.value) == status, e.value
    response = getattr(e.value, "response", None)
    assert response is not None
    check_error_body(c.name, status, response.json())
    hdrs = c.headers_of(e.value)
    rec = grid.gw.log(hdrs["x-llmgw-request-id"])
    assert rec["status"] == status and rec["error"], rec
    return hdrs


@pytest.mark.parametrize("status", [400, 429])
@pytest.mark.parametrize("client,upstream,stream", cells())
def test_upstream_error(grid: Grid, client: str, upstream: str, stream: bool, status: int) -> None:
    t = grid.target(upstream)
    c = grid.client(client)
    c.user(PROMPT)
    headers = {"x-mock-status": str(status)}
    if status == 429:
        headers["x-mock-retry-after"] = "7"
    hdrs = failed_send(grid, c, t.model, stream, headers, status)
    if status == 429:
        assert hdrs.get("retry-after") == "7", hdrs


@pytest.mark.parametrize("client,upstream,stream", cells(upstreams=["anthropic"]))
def test_anthropic_overloaded_is_503_for_other_clients(grid: Grid, client: str, upstream: str,
                                                        stream: bool) -> None:
    t = grid.target(upstream)
    c = grid.client(client)
    c.user(PROMPT)
    failed_send(grid, c, t.model, stream, {"x-mock-status": "529"}, 529 if client == "anthropic" else 503)


@pytest.mark.parametrize("client,upstream,stream", cells(streams=(True,)))
def test_error_after_the_first_bytes(grid: Grid, client: str, upstream: str, stream: bool) -> None:
    """Two content events, then the upstream's in-stream error: the SDK
    raises its protocol's error, and the record is not a success: it is
    interrupted, with the status the upstream's error implies (Anthropic's
    overloaded_error is 529; the mock's other errors are server errors or
    Gemini's 503) and the error's text."""
    t = grid.target(upstream)
    c = grid.client(client)
    c.user(PROMPT)
    with pytest.raises(c.base_error):
        c.send(t.model, stream, headers={"x-mock-error-after": "2"})
    assert c.last_headers, "no response head"
    rec = grid.gw.log(c.last_headers["x-llmgw-request-id"])
    assert rec["error"], rec
    assert rec["outcome"] == "interrupted", rec
    assert rec["status"] == IN_STREAM_STATUS[upstream], rec


#: The status the record gets for the mock's in-stream error of each
#: upstream protocol (mock/src/compose.rs `stream_error`).
IN_STREAM_STATUS = {"openai": 500, "openai-chat": 500, "anthropic": 529, "gemini": 503}
