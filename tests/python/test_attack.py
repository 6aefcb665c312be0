"""Attacks by a hostile client on the data plane, each a named case:

- body fields and headers that try to point the gateway at another
  upstream, watched by a canary listener that must see no connection;
- hostile client keys (SQL-ish, 64 KiB, non-ASCII, control characters)
  answered at once with a 401 in the client's own protocol;
- path variants of every route (trailing slash, `//`, `%2F`, case,
  dot segments) that are never served without a key;
- a key scoped to some models refused every other model by every endpoint;
- a 100 MB body and deeply nested JSON refused quickly in the client's
  protocol, with the data plane's peak memory bounded.

Requests that the SDKs will not send (a raw path, a header with control
characters) go over a plain socket (`raw`)."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google.genai import errors as genai_errors

from conftest import Gateway, uid

MSG = [{"role": "user", "content": "attack"}]
#: "Fast": a refusal that does no upstream work arrives well within this.
FAST_S = 3.0


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, elapsed: float) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.elapsed = elapsed

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body[:200]!r})"


def _dechunk(b: bytes) -> bytes:
    out = b""
    while b:
        line, _, b = b.partition(b"\r\n")
        n = int(line.split(b";")[0] or b"0", 16)
        if n == 0:
            break
        out, b = out + b[:n], b[n + 2:]
    return out


def raw(addr: str, method: str, target: str | bytes, headers: list[tuple[str, str | bytes]] = (),
        body: bytes = b"", timeout: float = 10.0) -> Reply:
    """One HTTP/1.1 request sent byte for byte as given (no normalisation of
    the target, no checks on header values), `Connection: close`."""
    host, port = addr.rsplit(":", 1)
    t = target.encode() if isinstance(target, str) else target
    head = [method.encode() + b" " + t + b" HTTP/1.1", f"Host: {addr}".encode(), b"Connection: close",
            f"Content-Length: {len(body)}".encode()]
    for k, v in headers:
        head.append(k.encode() + b": " + (v.encode() if isinstance(v, str) else v))
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    elapsed = time.monotonic() - started
    return parse_reply(data, elapsed)


def recv_whole(s: socket.socket) -> bytes:
    """Reads one response of known length from `s`, which the server may
    keep open: the head, then as many body bytes as it states."""
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next((int(l.split(b":", 1)[1]) for l in head.split(b"\r\n")[1:]
                           if l.lower().startswith(b"content-length:")), None)
            assert length is not None, f"no content-length: {head!r}"
            if len(body) >= length:
                return data
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def parse_reply(data: bytes, elapsed: float) -> Reply:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines and lines[0].startswith("HTTP/1.1 "), f"not an HTTP response: {data[:200]!r}"
    status = int(lines[0].split()[1])
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return Reply(status, headers, body, elapsed)


class Canary:
    """A listening socket that no one should ever connect to."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.addr = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.url = f"http://{self.addr}/v1"

    def connections(self) -> int:
        """Connections made so far (accepted here, so counted once)."""
        n = 0
        while select.select([self.sock], [], [], 0)[0]:
            c, _ = self.sock.accept()
            c.close()
            n += 1
        return n

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def canary():
    c = Canary()
    yield c
    c.close()


def assert_shape(protocol: str, r: Reply, status: int) -> dict:
    """The error body of `protocol`'s shape, with `status`."""
    assert r.status == status, r
    body = r.json()
    if protocol == "anthropic":
        assert body["type"] == "error" and body["error"]["message"], body
    elif protocol == "gemini":
        assert body["error"]["code"] == status and body["error"]["status"], body
    else:
        assert body["error"]["message"] and body["error"]["type"], body
    return body


@pytest.fixture(scope="module")
def models(gw: Gateway) -> dict[str, tuple[str, str]]:
    """One model per client protocol: protocol -> (model, upstream model)."""
    out = {}
    for protocol, provider in [("openai", "mock"), ("anthropic", "mocka"), ("gemini", gw.mock_provider("gemini"))]:
        up = f"atk-{protocol}-{uid()}"
        out[protocol] = (gw.add_model([f"{provider}:{up}"], "--max-attempts", "1"), up)
    return out


def request_for(protocol: str, model: str, key_header: list[tuple[str, str | bytes]] | None,
                query: str = "") -> tuple[str, list[tuple[str, str | bytes]], bytes]:
    """(path, headers, body) of a minimal request in `protocol`."""
    h: list[tuple[str, str | bytes]] = [("content-type", "application/json")]
    if protocol == "anthropic":
        h.append(("anthropic-version", "2023-06-01"))
        body = {"model": model, "max_tokens": 5, "messages": MSG}
        path = "/v1/messages"
    elif protocol == "gemini":
        body = {"contents": [{"role": "user", "parts": [{"text": "attack"}]}]}
        path = f"/v1beta/models/{model}:generateContent"
    else:
        body = {"model": model, "messages": MSG}
        path = "/v1/chat/completions"
    return path + query, h + (key_header or []), json.dumps(body).encode()


def key_header(protocol: str, key: str | bytes) -> list[tuple[str, str | bytes]]:
    if protocol == "anthropic":
        return [("x-api-key", key)]
    if protocol == "gemini":
        return [("x-goog-api-key", key)]
    return [("authorization", (b"Bearer " + key) if isinstance(key, bytes) else f"Bearer {key}")]


# ---------------------------------------------------------------------------
# Redirecting the upstream
# ---------------------------------------------------------------------------


def redirect_fields(url: str, addr: str) -> dict[str, Any]:
    return {
        "api_base": url,
        "base_url": url,
        "url": url,
        "endpoint": url,
        "host": addr,
        "upstream": url,
        "metadata": {"api_base": url, "base_url": url},
        "extra_body": {"api_base": url, "base_url": url},
        "litellm_params": {"api_base": url},
        "provider": {"base_url": url, "api_base": url},
    }


def redirect_headers(url: str, addr: str) -> dict[str, str]:
    return {
        "host": addr,
        "x-forwarded-host": addr,
        "x-forwarded-proto": "http",
        "x-forwarded-port": addr.rsplit(":", 1)[1],
        "forwarded": f"host={addr};proto=http",
        "x-original-url": url,
        "x-rewrite-url": url,
        "x-upstream-url": url,
        "x-api-base": url,
    }


def test_body_fields_and_headers_cannot_redirect_the_upstream(gw: Gateway, models, canary: Canary) -> None:
    _, key = gw.add_key()
    fields = redirect_fields(canary.url, canary.addr)
    hdrs = redirect_headers(canary.url, canary.addr)
    om, oup = models["openai"]
    am, aup = models["anthropic"]
    gm, gup = models["gemini"]

    oc = gw.openai(key)
    assert oc.chat.completions.create(model=om, messages=MSG, extra_body=fields, extra_headers=hdrs).choices
    assert oc.chat.completions.create(model=om, messages=MSG, stream=True, extra_body=fields,
                                      extra_headers=hdrs).response.status_code == 200
    assert oc.responses.create(model=om, input="attack", extra_body=fields, extra_headers=hdrs).output
    ac = gw.anthropic(key)
    assert ac.messages.create(model=am, max_tokens=5, messages=MSG, extra_body=fields, extra_headers=hdrs).content
    path, h, _ = request_for("gemini", gm, key_header("gemini", key))
    body = {"contents": [{"role": "user", "parts": [{"text": "attack"}]}], **fields}
    r = raw(gw.dp_addr, "POST", path, h + list(hdrs.items()), json.dumps(body).encode())
    assert r.status == 200, r
    # The absolute form of the request target names another authority.
    path, h, body = request_for("openai", om, key_header("openai", key))
    r = raw(gw.dp_addr, "POST", f"http://{canary.addr}{path}", h, body)
    assert r.status == 200, r

    assert canary.connections() == 0, "the gateway connected to the address a client gave"
    seen = gw.mock.requests(oup) + gw.mock.requests(aup) + gw.mock.requests(gup)
    assert len(seen) == 6, [s.get("path") for s in seen]
    for s in seen:
        # Other client headers pass through as they came (the gateway is
        # transparent), but the upstream is addressed as configured.
        assert s["headers"]["host"] == gw.mock.addr, s["headers"]


# ---------------------------------------------------------------------------
# Hostile keys
# ---------------------------------------------------------------------------

HOSTILE_KEYS: dict[str, bytes] = {
    "sql-or": b"' OR '1'='1",
    "sql-drop": b"x'; DROP TABLE api_keys; --",
    "sql-union": b"sk-llmgw-' UNION SELECT hash FROM api_keys --",
    "64k": b"sk-llmgw-" + b"A" * 65536,
    "utf8": "ключ-🔑-é".encode(),
    "latin1": b"\xff\xfe\xe9t\xe9",
    "tab-and-esc-text": b"tok\tx\\x1b[31m",
    "format": b"%s%n%x{0}${jndi:ldap://127.0.0.1/x}",
    "path": b"../../../../etc/passwd",
    "empty-bearer": b"",
}
#: Bytes an HTTP parser must refuse in a header value: they never reach
#: the gateway's code and get a bare 400.
CONTROL_KEYS: dict[str, bytes] = {
    "nul": b"tok\x00x",
    "soh": b"tok\x01\x02",
    "esc": b"tok\x1b[31m",
    "del": b"tok\x7f",
}


@pytest.mark.parametrize("protocol", ["openai", "anthropic", "gemini", "gemini-query"])
def test_hostile_keys_get_a_fast_401_in_the_clients_protocol(gw: Gateway, models, protocol: str) -> None:
    shape = "gemini" if protocol.startswith("gemini") else protocol
    model, up = models[shape]
    before = len(gw.mock.requests(up))
    for name, tok in HOSTILE_KEYS.items():
        if protocol == "gemini-query":
            q = "?" + str(httpx.QueryParams({"key": tok.decode("utf-8", "replace")}))
            path, h, body = request_for(shape, model, None, q)
        else:
            path, h, body = request_for(shape, model, key_header(shape, tok))
        r = raw(gw.dp_addr, "POST", path, h, body, timeout=FAST_S)
        assert r.elapsed < FAST_S, (name, r.elapsed)
        if protocol == "gemini-query" and name == "64k":
            # A 64 KiB request line is refused by the HTTP server itself.
            assert r.status == 414, r
            continue
        err = assert_shape(shape, r, 401)
        text = json.dumps(err)
        if len(tok) > 8:
            assert tok.decode("utf-8", "replace") not in text, f"{name}: the key is echoed"
    for name, tok in CONTROL_KEYS.items():
        if protocol == "gemini-query":
            continue
        path, h, body = request_for(shape, model, key_header(shape, tok))
        r = raw(gw.dp_addr, "POST", path, h, body, timeout=FAST_S)
        # Not HTTP: hyper's parser refuses it (a bare 400) before any code
        # of the gateway runs.
        assert r.status == 400, (name, r)
    assert len(gw.mock.requests(up)) == before, "a request with a hostile key reached the upstream"
    # The data plane is still fine.
    assert gw.http.get(f"{gw.url}/healthz").status_code == 200


# ---------------------------------------------------------------------------
# Route variants
# ---------------------------------------------------------------------------


def route_variants(om: str, gm: str) -> list[tuple[str, str, str]]:
    """(protocol, method, target) for variants of every route."""
    v: list[tuple[str, str, str]] = []
    for proto, base in [("openai", "/v1/chat/completions"), ("openai", "/v1/completions"),
                        ("openai", "/v1/embeddings"), ("openai", "/v1/responses"),
                        ("anthropic", "/v1/messages"), ("anthropic", "/v1/messages/count_tokens")]:
        v += [(proto, "POST", t) for t in [
            base + "/", "/" + base, base.replace("/v1/", "/v1//"), base.replace("/v1/", "/v1%2F"),
            base.replace("/", "%2F"), base.upper(), base.replace("/v1/", "/V1/"),
            base.replace("/v1/", "/v1/../v1/"), base.replace("/v1/", "/v1/./"), base + "%00",
            base + ";x", base + "%20", base + "/..", "/x/.." + base, base + "#frag",
        ]]
    g = f"/v1beta/models/{gm}"
    for m in ["generateContent", "streamGenerateContent", "countTokens"]:
        v += [("gemini", "POST", t) for t in [
            f"{g}:{m}/", f"/{g}:{m}", f"{g}%3A{m}", f"/v1beta//models/{gm}:{m}", f"{g}:{m.upper()}",
            f"/V1BETA/models/{gm}:{m}", f"/v1beta/models/../models/{gm}:{m}", f"/v1beta/models/x/../{gm}:{m}",
            f"/v1beta/models%2F{gm}:{m}", f"/v1/models/{gm}:{m}", f"/v1/models/{gm}:{m}/",
        ]]
    v += [("openai", "GET", t) for t in ["/v1/models/", "//v1/models", "/V1/MODELS", "/v1/../v1/models",
                                         "/v1%2Fmodels", "/v1/models?x=1", "/v1beta/models/", "/v1beta/models"]]
    return v


def test_every_route_variant_is_served_only_with_a_key(gw: Gateway, models) -> None:
    om, oup = models["openai"]
    am, aup = models["anthropic"]
    gm, gup = models["gemini"]
    _, key = gw.add_key()
    bodies = {
        "openai": json.dumps({"model": om, "messages": MSG, "input": "x", "prompt": "x"}).encode(),
        "anthropic": json.dumps({"model": am, "max_tokens": 5, "messages": MSG}).encode(),
        "gemini": json.dumps({"contents": [{"role": "user", "parts": [{"text": "x"}]}]}).encode(),
    }
    # The canonical routes, for contrast: served with the key, 401 without.
    for proto, path in [("openai", "/v1/chat/completions"), ("anthropic", "/v1/messages"),
                        ("gemini", f"/v1beta/models/{gm}:generateContent")]:
        ok = raw(gw.dp_addr, "POST", path, key_header(proto, key), bodies[proto])
        assert ok.status == 200, (path, ok)
        assert_shape(proto, raw(gw.dp_addr, "POST", path, [], bodies[proto]), 401)
    before = {up: len(gw.mock.requests(up)) for up in (oup, aup, gup)}

    variants = route_variants(om, gm)
    anon_status = {}
    for proto, method, target in variants:
        body = bodies[proto] if method == "POST" else b""
        anon = raw(gw.dp_addr, method, target, [("content-type", "application/json")], body, timeout=FAST_S)
        assert not 200 <= anon.status < 300, f"{method} {target} served without a key: {anon}"
        assert anon.status < 500, f"{method} {target}: {anon}"
        anon_status[target] = anon.status
    after = {up: len(gw.mock.requests(up)) for up in (oup, aup, gup)}
    assert after == before, "a path variant without a key reached the upstream"

    served_with_key = []
    for proto, method, target in variants:
        body = bodies[proto] if method == "POST" else b""
        keyed = raw(gw.dp_addr, method, target, key_header(proto, key), body, timeout=FAST_S)
        assert keyed.status < 500, f"{method} {target} with a key: {keyed}"
        if 200 <= keyed.status < 300:
            served_with_key.append(target)
            assert anon_status[target] == 401, f"{target} is served, and without a key it got {anon_status[target]}"
    # Only the routes' own spellings are served (a query string or a
    # fragment is not part of the path): nothing else reaches an endpoint.
    canonical = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages",
                 "/v1/messages/count_tokens", "/v1/models", "/v1beta/models"}
    # Gemini's, under `/v1beta` or `/v1` (both are Google's).
    canonical |= {f"/{v}/models/{gm}:{m}" for v in ("v1beta", "v1")
                  for m in ("generateContent", "streamGenerateContent", "countTokens")}
    odd = [t for t in served_with_key if t.split("?")[0].split("#")[0] not in canonical]
    assert not odd, f"served under another spelling: {odd}"
    assert "/v1/models?x=1" in served_with_key


# ---------------------------------------------------------------------------
# Scoped keys
# ---------------------------------------------------------------------------


def test_a_scoped_key_is_refused_other_models_by_every_endpoint(gw: Gateway) -> None:
    gp = gw.mock_provider("gemini")
    ups = {n: f"scope-{n}-{uid()}" for n in ["oa", "ob", "aa", "ab", "ga", "gb", "ea", "eb"]}
    allowed = {"o": gw.add_model([f"mock:{ups['oa']}"]), "a": gw.add_model([f"mocka:{ups['aa']}"]),
               "g": gw.add_model([f"{gp}:{ups['ga']}"]),
               "e": gw.add_model([f"mock:{ups['ea']}"], "--type", "embedding")}
    other = {"o": gw.add_model([f"mock:{ups['ob']}"]), "a": gw.add_model([f"mocka:{ups['ab']}"]),
             "g": gw.add_model([f"{gp}:{ups['gb']}"]),
             "e": gw.add_model([f"mock:{ups['eb']}"], "--type", "embedding")}
    _, key = gw.add_key(list(allowed.values()))
    oc, ac, gc = gw.openai(key), gw.anthropic(key), gw.genai(key)

    calls = {
        "chat": (openai.PermissionDeniedError, "o",
                 lambda m: oc.chat.completions.create(model=m, messages=MSG)),
        "chat-stream": (openai.PermissionDeniedError, "o",
                        lambda m: list(oc.chat.completions.create(model=m, messages=MSG, stream=True))),
        "completions": (openai.PermissionDeniedError, "o",
                        lambda m: oc.completions.create(model=m, prompt="x")),
        "responses": (openai.PermissionDeniedError, "o",
                      lambda m: oc.responses.create(model=m, input="x")),
        "embeddings": (openai.PermissionDeniedError, "e",
                       lambda m: oc.embeddings.create(model=m, input="x")),
        "messages": (anthropic.PermissionDeniedError, "a",
                     lambda m: ac.messages.create(model=m, max_tokens=5, messages=MSG)),
        "count_tokens": (anthropic.PermissionDeniedError, "a",
                         lambda m: ac.messages.count_tokens(model=m, messages=MSG)),
        "gemini-generate": (genai_errors.ClientError, "g",
                            lambda m: gc.models.generate_content(model=m, contents="x")),
        "gemini-stream": (genai_errors.ClientError, "g",
                          lambda m: list(gc.models.generate_content_stream(model=m, contents="x"))),
        "gemini-count": (genai_errors.ClientError, "g",
                         lambda m: gc.models.count_tokens(model=m, contents="x")),
        # A model of another protocol, through translation.
        "messages-to-openai-model": (anthropic.PermissionDeniedError, "o",
                                     lambda m: ac.messages.create(model=m, max_tokens=5, messages=MSG)),
        "chat-to-gemini-model": (openai.PermissionDeniedError, "g",
                                 lambda m: oc.chat.completions.create(model=m, messages=MSG)),
    }
    for name, (exc, family, call) in calls.items():
        call(allowed[family])  # served for its own model
        with pytest.raises(exc) as e:
            call(other[family])
        status = getattr(e.value, "status_code", None) or getattr(e.value, "code", None)
        assert status == 403, (name, e.value)
    for n in ("ob", "ab", "gb", "eb"):
        assert gw.mock.requests(ups[n]) == [], f"a refused request reached the upstream ({n})"

    # The model lists show the key's models only, in each shape.
    listed = {m.id for m in oc.models.list()}
    assert listed == set(allowed.values()), listed
    listed = {m.id for m in ac.models.list()}
    assert listed == set(allowed.values()), listed
    listed = {m.name.removeprefix("models/") for m in gc.models.list()}
    assert listed == set(allowed.values()), listed


# ---------------------------------------------------------------------------
# Huge and deep bodies
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bgw(make_gateway) -> Gateway:
    """A gateway of its own (default body limit, 32 MiB), so that its data
    plane's peak memory is this module's doing only."""
    return make_gateway("bodies")


def peak_rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def send_big_body(addr: str, path: str, headers: list[tuple[str, str]], total: int) -> Reply:
    """Streams `total` bytes of a JSON string member, chunked, while
    reading the answer; returns the answer (the send may be cut off)."""
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=30)
    head = [f"POST {path} HTTP/1.1", f"Host: {addr}", "Transfer-Encoding: chunked", "Connection: close",
            *(f"{k}: {v}" for k, v in headers)]
    s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    started = time.monotonic()

    def pump() -> None:
        piece = b"x" * (1 << 20)
        chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        try:
            s.sendall(b'c\r\n{"x": "aaaa"\r\n')
            sent = 0
            while sent < total:
                s.sendall(chunk)
                sent += len(piece)
            s.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed: expected

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    data = b""
    try:
        while True:
            c = s.recv(65536)
            if not c:
                break
            data += c
    except OSError:
        pass
    elapsed = time.monotonic() - started
    s.close()
    t.join(timeout=30)
    return parse_reply(data, elapsed)


@pytest.mark.parametrize("protocol", ["openai", "anthropic", "gemini"])
def test_a_100_mb_body_is_refused_quickly_with_memory_bounded(bgw: Gateway, protocol: str) -> None:
    gw = bgw
    provider = {"openai": "mock", "anthropic": "mocka", "gemini": gw.mock_provider("gemini")}[protocol]
    model = gw.add_model([f"{provider}:big-{uid()}"], "--max-attempts", "1")
    _, key = gw.add_key()
    path, h, _ = request_for(protocol, model, key_header(protocol, key))
    # A stated length over the limit: refused before a byte of the body.
    started = time.monotonic()
    host, port = gw.dp_addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=FAST_S) as s:
        head = [f"POST {path} HTTP/1.1", f"Host: {gw.dp_addr}", "Content-Length: 100000000",
                *(f"{k}: {v}" for k, v in h)]
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        data = recv_whole(s)
    r = parse_reply(data, time.monotonic() - started)
    body = assert_shape(protocol, r, 413)
    if protocol == "anthropic":
        assert body["error"]["type"] == "request_too_large", body
    # No length stated (chunked): cut at the limit while reading.
    r = send_big_body(gw.dp_addr, path, h, 100_000_000)
    assert_shape(protocol, r, 413)
    assert r.elapsed < 20, r.elapsed  # 32 MiB read over loopback, not 100 MB
    peak = peak_rss_mib(gw.dp.pid)
    print(f"data plane peak RSS after 100 MB bodies: {peak:.0f} MiB; chunked refusal took {r.elapsed:.2f} s")
    assert peak < 200, f"the data plane's peak RSS reached {peak:.0f} MiB"
    assert gw.http.get(f"{gw.url}/healthz").status_code == 200


@pytest.mark.parametrize("protocol", ["openai", "anthropic", "gemini"])
def test_deeply_nested_bodies_are_refused_with_400(bgw: Gateway, protocol: str) -> None:
    gw = bgw
    provider = {"openai": "mock", "anthropic": "mocka", "gemini": gw.mock_provider("gemini")}[protocol]
    up = f"deep-{uid()}"
    model = gw.add_model([f"{provider}:{up}"], "--max-attempts", "1")
    _, key = gw.add_key()
    path, h, _ = request_for(protocol, model, key_header(protocol, key))
    for depth, opener, closer in [(100_000, b"[", b"]"), (100_000, b'{"a":', b"}"), (1_000_000, b"[", b"")]:
        nested = opener * depth + b"1" + closer * depth
        body = b'{"model": "' + model.encode() + b'", "max_tokens": 5, "messages": [], "x": ' + nested + b"}"
        r = raw(gw.dp_addr, "POST", path, h, body, timeout=10)
        err = assert_shape(protocol, r, 400)
        assert "JSON" in json.dumps(err), err
    assert gw.mock.requests(up) == []
    peak = peak_rss_mib(gw.dp.pid)
    print(f"data plane peak RSS after nested bodies: {peak:.0f} MiB")
    assert peak < 200, f"the data plane's peak RSS reached {peak:.0f} MiB"
