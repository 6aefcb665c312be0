"""Connections: the idle timeout, the body read timeout and minimum rate, the
caps on open and on unauthenticated connections, the ops listener, and the
file-descriptor limit, on the real binaries (issue #14, "Connections").

Each group runs on a gateway of its own with small limits given as flags,
so that every bound here is short; waits are bounded polls or socket
timeouts, never sleeps."""

from __future__ import annotations

import json
import os
import re
import resource
import socket
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest

from conftest import Gateway, base_env, binary, json_log_field, uid, wait_until, START_TIMEOUT

MSG = [{"role": "user", "content": "hi"}]
#: Slack on top of a configured timeout for the event to be seen here.
SLACK = 3.0


# ----- helpers -----


def addr_of(url_or_addr: str) -> tuple[str, int]:
    host, port = url_or_addr.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def connect(addr: str) -> socket.socket:
    s = socket.create_connection(addr_of(addr), timeout=5)
    return s


def read_until_closed(s: socket.socket, bound: float) -> bytes:
    """Everything the server sends until it closes the connection; fails if
    it is still open after `bound` seconds."""
    deadline = time.monotonic() + bound
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the connection was still open after {bound} s (got {data[:200]!r})")
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def request_bytes(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: gw"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_response(s: socket.socket, bound: float) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a content-length, read within `bound`."""
    s.settimeout(bound)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"closed before a response head: {data!r}"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = s.recv(65536)
        assert chunk, "closed in the middle of a response body"
        rest += chunk
    return int(status_line.split()[1]), headers, rest[:length]


def metric(gw: Gateway, name: str) -> float:
    """A sample of the data plane's /metrics (on the ops listener), named
    with its labels as exposed; 0 when the series does not exist yet."""
    body = gw.http.get(f"{gw.ops_url}/metrics", timeout=5).text
    for line in body.splitlines():
        key, _, value = line.rpartition(" ")
        if key == name:
            return float(value)
    return 0.0


def refused(s: socket.socket, bound: float = SLACK) -> bytes:
    """Asserts that a connection is turned away: closed at once, or a 503
    and then closed. Returns what was received."""
    data = read_until_closed(s, bound)
    assert data == b"" or data.startswith(b"HTTP/1.1 503"), data[:300]
    return data


def raise_own_fd_limit(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"this process may open at most {hard} files; the test needs {want}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def authed_models_request(key: str) -> bytes:
    return request_bytes("GET", "/v1/models", {"Authorization": f"Bearer {key}"})


# ----- timeouts -----


IDLE_S = 1.0
BODY_S = 1.0
MIN_RATE = 200


@pytest.fixture(scope="module")
def timeouts(make_gateway) -> Gateway:
    return make_gateway(
        "conn-timeouts",
        dp_args=["--idle-timeout", "1s", "--body-read-timeout", "1s",
                 "--body-min-rate", str(MIN_RATE)],
        cp_args=["--idle-timeout", "1s", "--body-read-timeout", "1s"],
    )


@pytest.fixture(scope="module")
def tkey(timeouts: Gateway) -> tuple[str, str]:
    model = timeouts.add_model([f"mock:conn-{uid()}"])
    return model, timeouts.add_key([model])[1]


def test_idle_connection_is_closed_within_the_bound(timeouts: Gateway) -> None:
    # A connection that never sends anything, on each listener.
    for addr in (timeouts.dp_addr, timeouts.dp_ops_addr, timeouts.cp_addr):
        s = connect(addr)
        assert read_until_closed(s, IDLE_S + SLACK) == b"", addr
        s.close()


def test_keep_alive_connection_is_closed_after_idling(timeouts: Gateway, tkey) -> None:
    _, key = tkey
    s = connect(timeouts.dp_addr)
    s.sendall(authed_models_request(key))
    status, _, _ = read_response(s, 10)
    assert status == 200
    # The keep-alive connection then idles out: closed, with nothing sent.
    assert read_until_closed(s, IDLE_S + SLACK) == b""
    s.close()


def test_stalled_body_is_cut_with_408(timeouts: Gateway, tkey) -> None:
    model, key = tkey
    body = json.dumps({"model": model, "messages": MSG}).encode()
    for path, headers, shape in (
        ("/v1/chat/completions", {"Authorization": f"Bearer {key}"}, "openai"),
        ("/v1/messages", {"x-api-key": key, "anthropic-version": "2023-06-01"}, "anthropic"),
    ):
        s = connect(timeouts.dp_addr)
        headers = dict(headers, **{"content-type": "application/json",
                                   "content-length": str(len(body))})
        # Half the body, then nothing.
        s.sendall(request_bytes("POST", path, headers, body[: len(body) // 2]))
        status, resp_headers, payload = read_response(s, BODY_S + SLACK)
        assert status == 408, payload
        assert resp_headers.get("connection") == "close"
        err = json.loads(payload)
        message = err["error"]["message"]
        if shape == "anthropic":
            assert err["type"] == "error"
        assert "no data for 1 s" in message, message
        assert read_until_closed(s, SLACK) == b""
        s.close()


def test_lying_content_length_is_cut_with_408(timeouts: Gateway, tkey) -> None:
    model, key = tkey
    body = json.dumps({"model": model, "messages": MSG}).encode()
    s = connect(timeouts.dp_addr)
    # A whole JSON body, but the length promises a kilobyte more.
    s.sendall(request_bytes("POST", "/v1/chat/completions", {
        "Authorization": f"Bearer {key}", "content-type": "application/json",
        "content-length": str(len(body) + 1024)}, body))
    status, _, payload = read_response(s, BODY_S + SLACK)
    assert status == 408, payload
    assert json.loads(payload)["error"]["code"] == "request_timeout"
    assert read_until_closed(s, SLACK) == b""
    s.close()


def test_body_slower_than_the_minimum_rate_is_cut(timeouts: Gateway, tkey) -> None:
    model, key = tkey
    s = connect(timeouts.dp_addr)
    s.sendall(request_bytes("POST", "/v1/chat/completions", {
        "Authorization": f"Bearer {key}", "content-type": "application/json",
        "content-length": "100000"}))
    # A byte every 50 ms (20 B/s): never a gap of a second, but far below
    # the minimum rate, so it is cut soon after the one-second grace.
    deadline = time.monotonic() + BODY_S + 100 / MIN_RATE + SLACK
    s.settimeout(0.05)
    data = b""
    while b"\r\n\r\n" not in data:
        assert time.monotonic() < deadline, "the crawling body was not cut"
        try:
            s.sendall(b" ")
        except OSError:
            break
        try:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        except socket.timeout:
            pass
    s.settimeout(SLACK)
    while True:
        try:
            chunk = s.recv(65536)
        except (socket.timeout, OSError):
            break
        if not chunk:
            break
        data += chunk
    assert data.startswith(b"HTTP/1.1 408"), data[:300]
    assert b"slower than 200 bytes/s" in data, data
    s.close()


def test_control_plane_cuts_a_stalled_body_with_deadline_exceeded(timeouts: Gateway) -> None:
    s = connect(timeouts.cp_addr)
    # A gRPC-web call with the admin token whose message never arrives in
    # full: 5 of the 100 bytes promised.
    s.sendall(request_bytes("POST", "/llmgw.v1.Admin/ListProviders", {
        "content-type": "application/grpc-web+proto", "x-grpc-web": "1",
        "authorization": f"Bearer {timeouts.admin_token}", "content-length": "100"},
        b"\x00\x00\x00\x00\x5f"))
    data = read_until_closed(s, BODY_S + SLACK + 5)
    s.close()
    head = data.decode(errors="replace").lower()
    assert head.startswith("http/1.1 200"), head
    # DEADLINE_EXCEEDED (4), saying why.
    assert "grpc-status: 4" in head or "grpc-status:4" in head, head
    assert "not%20received%20in%20time" in head, head
    # The CLI (a complete request) is unaffected.
    assert timeouts.cli_raw("provider", "list").returncode == 0


def test_requests_still_work_with_short_timeouts(timeouts: Gateway, tkey) -> None:
    model, key = tkey
    c = timeouts.openai(key)
    r = c.chat.completions.create(model=model, messages=MSG)
    assert r.choices[0].message.content


def first_read(s: socket.socket, model: str, key: str) -> tuple[bytes, bytes, int]:
    """Sends a chat request for `model` on `s`; returns the head, the body
    bytes and the body's length, as the first read after it gives them."""
    body = json.dumps({"model": model, "messages": MSG}).encode()
    s.sendall(
        (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
    )
    first = s.recv(65536)
    head, sep, rest = first.partition(b"\r\n\r\n")
    assert sep, first[:300]
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    assert length, head
    return head, rest, int(length.group(1))


def test_a_whole_answer_comes_with_its_head_in_one_write(gw: Gateway) -> None:
    """An answer's end waits until its record is in the spool. A
    non-streaming answer's head waits with it, so the client gets the head
    and the whole body in one write (one segment on loopback, so one read
    here). Before, the head went first and the body a write later."""
    model = gw.add_model([f"mock:whole-{uid()}"])
    key = gw.add_key([model])[1]
    s = connect(gw.dp_addr)
    try:
        # An answer the gateway made itself (an unknown model).
        head, rest, length = first_read(s, f"no-such-model-{uid()}", key)
        assert head.startswith(b"HTTP/1.1 4"), head
        assert len(rest) == length, f"the first read held {len(rest)} of the body's {length} bytes"
        assert json.loads(rest)["error"]["message"]
        # Passed through from upstream.
        for i in range(5):
            head, rest, length = first_read(s, model, key)
            assert head.startswith(b"HTTP/1.1 200"), head
            assert len(rest) == length, (
                f"request {i}: the first read held {len(rest)} of the body's {length} bytes"
            )
            assert json.loads(rest)["choices"][0]["message"]["content"]
    finally:
        s.close()


# ----- caps -----


MAX_CONN = 40
MAX_UNAUTH = 20
CP_MAX_UNAUTH = 8


@pytest.fixture(scope="module")
def caps(make_gateway) -> Gateway:
    return make_gateway(
        "conn-caps",
        dp_args=["--max-connections", str(MAX_CONN),
                 "--max-unauthenticated-connections", str(MAX_UNAUTH)],
        cp_args=["--max-unauthenticated-connections", str(CP_MAX_UNAUTH)],
    )


@pytest.fixture(scope="module")
def ckey(caps: Gateway) -> tuple[str, str]:
    model = caps.add_model([f"mock:conn-{uid()}"])
    return model, caps.add_key([model])[1]


def fill_unauthenticated(gw: Gateway, n: int) -> list[socket.socket]:
    base = metric(gw, "llmgw_client_connections_unauthenticated")
    socks = [connect(gw.dp_addr) for _ in range(n)]
    wait_until(lambda: metric(gw, "llmgw_client_connections_unauthenticated") >= base + n,
               10, f"{n} more unauthenticated connections counted")
    return socks


def test_unauthenticated_cap_refuses_beyond_it_while_an_authenticated_client_works(
    caps: Gateway, ckey
) -> None:
    model, key = ckey
    # An SDK client whose keep-alive connection has sent a valid key.
    client = caps.openai(key)
    assert client.chat.completions.create(model=model, messages=MSG).choices
    refused_before = metric(caps, 'llmgw_client_connections_refused_total{reason="max_unauthenticated"}')
    idle = fill_unauthenticated(caps, MAX_UNAUTH - int(metric(caps, "llmgw_client_connections_unauthenticated")))
    try:
        s = connect(caps.dp_addr)
        s.sendall(authed_models_request(key))
        data = refused(s)
        s.close()
        if data:
            assert b"too_many_unauthenticated_connections" in data
        wait_until(lambda: metric(caps, 'llmgw_client_connections_refused_total{reason="max_unauthenticated"}')
                   > refused_before, 5, "the refusal counted")
        # The authenticated client keeps working on its connection.
        for _ in range(3):
            assert client.chat.completions.create(model=model, messages=MSG).choices
        # An idle connection that sends a valid key is served, and frees a
        # slot for a new connection.
        idle[0].sendall(authed_models_request(key))
        assert read_response(idle[0], 10)[0] == 200
        s = connect(caps.dp_addr)
        s.sendall(authed_models_request(key))
        assert read_response(s, 10)[0] == 200
        s.close()
    finally:
        for s in idle:
            s.close()
        client.close()
    wait_until(lambda: metric(caps, "llmgw_client_connections_unauthenticated") <= 1, 10,
               "the idle connections given back")


def test_total_cap_refuses_quickly_without_harming_open_ones(caps: Gateway, ckey) -> None:
    _, key = ckey
    wait_until(lambda: metric(caps, "llmgw_client_connections_open") <= 1, 10, "a quiet gateway")
    # Authenticated keep-alive connections up to the cap (less the one
    # this test's metrics scrapes do not use: they go to the ops port).
    open_now = int(metric(caps, "llmgw_client_connections_open"))
    authed = []
    try:
        for _ in range(MAX_CONN - open_now):
            s = connect(caps.dp_addr)
            s.sendall(authed_models_request(key))
            assert read_response(s, 10)[0] == 200
            authed.append(s)
        assert metric(caps, "llmgw_client_connections_open") == MAX_CONN
        before = metric(caps, 'llmgw_client_connections_refused_total{reason="max_connections"}')
        t0 = time.monotonic()
        s = connect(caps.dp_addr)
        data = refused(s, SLACK)
        s.close()
        if data:
            assert b"too_many_connections" in data
        assert metric(caps, 'llmgw_client_connections_refused_total{reason="max_connections"}') == before + 1
        # Every open connection still serves.
        for s in authed:
            s.sendall(authed_models_request(key))
            assert read_response(s, 10)[0] == 200
        # And the ops listener answers at the cap.
        assert caps.http.get(f"{caps.ops_url}/healthz", timeout=5).status_code == 200
        assert time.monotonic() - t0 < 60  # bounded by the waits above
    finally:
        for s in authed:
            s.close()
    wait_until(lambda: metric(caps, "llmgw_client_connections_open") == 0, 10,
               "the connections given back")
    # A new connection is served again.
    s = connect(caps.dp_addr)
    s.sendall(authed_models_request(key))
    assert read_response(s, 10)[0] == 200
    s.close()


def test_control_plane_unauthenticated_cap(caps: Gateway) -> None:
    # Fill the control plane's unauthenticated slots with silent sockets
    # (the data plane's own connections are authenticated).
    idle = [connect(caps.cp_addr) for _ in range(CP_MAX_UNAUTH)]
    try:
        def refused_now() -> bool:
            s = connect(caps.cp_addr)
            try:
                s.settimeout(0.5)
                try:
                    return s.recv(1) == b""
                except socket.timeout:
                    return False
                except ConnectionResetError:
                    return True
            finally:
                s.close()

        wait_until(refused_now, 10, "a new control-plane connection closed at once")
        # The data plane's connection (authenticated) is unharmed.
        assert caps.readyz() is not None
    finally:
        for s in idle:
            s.close()
    # Slots come back: the CLI works again, and a change reaches the data
    # plane over its discovery stream.
    wait_until(lambda: caps.cli_raw("provider", "list").returncode == 0, 10, "the CLI served again")
    caps.add_model([f"mock:conn-cp-{uid()}"])


# ----- the ops listener -----


def test_ops_listener_serves_probes_and_metrics_and_the_client_port_does_not(gw: Gateway) -> None:
    ops = gw.ops_url
    assert gw.http.get(f"{ops}/healthz").text == "ok"
    ready = gw.http.get(f"{ops}/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    m = gw.http.get(f"{ops}/metrics")
    assert m.status_code == 200
    assert "llmgw_snapshot_version" in m.text
    assert "llmgw_client_connections_open" in m.text
    # The client port answers probes but never shows metrics.
    r = gw.http.get(f"{gw.url}/metrics")
    assert r.status_code == 404, r.text
    assert "llmgw_" not in r.text
    assert gw.http.get(f"{gw.url}/healthz").status_code == 200
    # The ops port serves nothing else.
    assert gw.http.get(f"{ops}/v1/models").status_code == 404


# ----- load -----


IDLE_FLOOD = 2000
SLOW_BODIES = 30


@pytest.fixture(scope="module")
def loaded(make_gateway) -> Gateway:
    return make_gateway(
        "conn-load",
        dp_args=["--max-connections", "400", "--max-unauthenticated-connections", "200",
                 "--idle-timeout", "60s", "--body-read-timeout", "2s"],
    )


def test_2000_idle_connections_and_slow_bodies_while_requests_and_health_answer(loaded: Gateway) -> None:
    raise_own_fd_limit(IDLE_FLOOD + SLOW_BODIES + 512)
    gw = loaded
    model = gw.add_model([f"mock:conn-load-{uid()}"])
    key = gw.add_key([model])[1]
    body = json.dumps({"model": model, "messages": MSG}).encode()
    # A real client, already connected, that keeps its connection open
    # however long the flood takes (httpx closes one idle for 5 s, and a
    # new one would meet the unauthenticated cap that the flood fills).
    client = gw.openai(key, http_client=httpx.Client(
        limits=httpx.Limits(max_connections=1, keepalive_expiry=None)))
    assert client.chat.completions.create(model=model, messages=MSG).choices
    socks: list[socket.socket] = []
    try:
        # Slow bodies: a valid key, then a body that stalls.
        slow = []
        for _ in range(SLOW_BODIES):
            s = connect(gw.dp_addr)
            s.sendall(request_bytes("POST", "/v1/chat/completions", {
                "Authorization": f"Bearer {key}", "content-type": "application/json",
                "content-length": str(len(body))}, body[:10]))
            slow.append(s)
        # 2,000 idle connections: the gateway keeps up to its caps and turns
        # the rest away.
        for _ in range(IDLE_FLOOD):
            try:
                socks.append(socket.create_connection(addr_of(gw.dp_addr), timeout=5))
            except OSError:
                pass  # a full backlog: refused is fine
        assert len(socks) > IDLE_FLOOD // 2
        wait_until(lambda: metric(gw, 'llmgw_client_connections_refused_total{reason="max_unauthenticated"}') > 0,
                   20, "connections beyond the unauthenticated cap refused")
        # Real requests and the health listener keep answering.
        for _ in range(5):
            assert client.chat.completions.create(model=model, messages=MSG).choices
            assert gw.http.get(f"{gw.ops_url}/healthz", timeout=5).status_code == 200
            assert gw.http.get(f"{gw.ops_url}/readyz", timeout=5).status_code == 200
        # The slow bodies are cut with a 408.
        for s in slow:
            status, _, _ = read_response(s, 2 + SLACK + 5)
            assert status == 408
            s.close()
        # The data plane holds about its cap in descriptors, not the flood.
        fds = len(os.listdir(f"/proc/{gw.dp.pid}/fd"))
        assert fds < 400 + 256, fds
        assert metric(gw, "llmgw_client_connections_open") <= 400
    finally:
        for s in socks:
            s.close()
        client.close()


# ----- the file-descriptor limit -----


def soft_nofile(pid: int) -> tuple[str, str]:
    text = Path(f"/proc/{pid}/limits").read_text()
    m = re.search(r"^Max open files\s+(\S+)\s+(\S+)", text, re.M)
    assert m, text
    return m.group(1), m.group(2)


@pytest.mark.parametrize("role", ["dataplane", "controlplane"])
def test_fd_limit_is_raised_to_the_hard_limit(role: str, tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"hard limit {hard}: nothing to show")
    low = min(256, hard // 2)

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    if role == "dataplane":
        argv = [binary("llmgw-dataplane"), "--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0",
                "--control-plane", "http://127.0.0.1:9", "--dataplane-token", "t",
                "--spool-dir", str(tmp_path / "spool"), "--log-format", "json"]
        ready = "ops server listening"
    else:
        argv = [binary("llmgw-controlplane"), "--listen", "127.0.0.1:0",
                "--data-dir", str(tmp_path / "data"), "--log-format", "json"]
        ready = "control plane listening"
    p = subprocess.Popen(argv, env=base_env(), cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, preexec_fn=lower)
    try:
        lines = []
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            assert line, f"{role} exited: {''.join(lines)}"
            lines.append(line)
            if ready in line:
                break
        soft, hard_seen = soft_nofile(p.pid)
        assert soft == hard_seen == str(hard), (soft, hard_seen, hard)
        assert any('"file-descriptor limit"' in l and f'"before":{low}' in l for l in lines), lines
    finally:
        p.kill()
        p.wait()
