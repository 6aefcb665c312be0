"""Outbound proxies per provider (`llmgw provider add|update --proxy`),
with the official `openai` SDK as the client.

Two small proxies run in this file on 127.0.0.1 (port 0): an HTTP CONNECT
proxy and a SOCKS5 proxy, each optionally requiring credentials, each
recording the tunnels it opened (their targets and the credentials it was
sent). The tests check that a provider's traffic goes through its proxy,
from the data plane and from the control plane's own calls (`provider
models`), that the proxy's credentials are sent and appear in no log line,
`provider list` or request log, that a proxy that is down is a 502 in
the client's protocol with failover to the next target, and that the
CLI takes a provider's secrets (API key, proxy URL) from standard input,
a file or the environment instead of its arguments."""

from __future__ import annotations

import base64
import select
import socket
import socketserver
import struct
import threading
from pathlib import Path
from typing import Any

import openai
import pytest

from conftest import Gateway, uid

MSG = [{"role": "user", "content": "through the proxy"}]
USER = "proxy-user"
PASSWORD = f"proxy-pw-{uid()}"


def _relay(a: socket.socket, b: socket.socket) -> None:
    """Copies bytes both ways until either side closes."""
    socks = [a, b]
    try:
        while True:
            readable, _, _ = select.select(socks, [], [], 30)
            if not readable:
                return
            for s in readable:
                data = s.recv(65536)
                if not data:
                    return
                (b if s is a else a).sendall(data)
    except OSError:
        return
    finally:
        for s in socks:
            s.close()


def _read_exact(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, handler: type, auth: tuple[str, str] | None) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.auth = auth
        self.lock = threading.Lock()
        #: (target "host:port", credentials sent or None) per tunnel asked for.
        self.tunnels: list[tuple[str, Any]] = []

    def record(self, target: str, creds: Any) -> None:
        with self.lock:
            self.tunnels.append((target, creds))


class _ConnectHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        s: socket.socket = self.request
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                return
            head += chunk
        lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
        auth = headers.get("proxy-authorization")
        self.server.record(target, auth)
        if method != "CONNECT":
            s.sendall(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            return
        if self.server.auth is not None:
            want = "Basic " + base64.b64encode(":".join(self.server.auth).encode()).decode()
            if auth != want:
                s.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n")
                return
        host, port = target.rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        _relay(s, upstream)


class _Socks5Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        s: socket.socket = self.request
        try:
            ver, n = _read_exact(s, 2)
            methods = _read_exact(s, n)
            creds = None
            if self.server.auth is not None:
                if ver != 5 or 2 not in methods:
                    s.sendall(b"\x05\xff")
                    return
                s.sendall(b"\x05\x02")
                _, ulen = _read_exact(s, 2)
                user = _read_exact(s, ulen).decode()
                (plen,) = _read_exact(s, 1)
                password = _read_exact(s, plen).decode()
                creds = (user, password)
                if creds != self.server.auth:
                    self.server.record("", creds)
                    s.sendall(b"\x01\x01")
                    return
                s.sendall(b"\x01\x00")
            else:
                s.sendall(b"\x05\x00")
            _, cmd, _, atyp = _read_exact(s, 4)
            if atyp == 1:
                host = socket.inet_ntoa(_read_exact(s, 4))
            elif atyp == 3:
                (ln,) = _read_exact(s, 1)
                host = _read_exact(s, ln).decode()
            else:
                host = socket.inet_ntop(socket.AF_INET6, _read_exact(s, 16))
            (port,) = struct.unpack("!H", _read_exact(s, 2))
            self.server.record(f"{host}:{port}", creds)
            if cmd != 1:
                s.sendall(b"\x05\x07\x00\x01" + b"\x00" * 6)
                return
            upstream = socket.create_connection((host, port), timeout=10)
            s.sendall(b"\x05\x00\x00\x01" + b"\x00" * 6)
            _relay(s, upstream)
        except (ConnectionError, OSError):
            return


class Proxy:
    def __init__(self, kind: str, auth: tuple[str, str] | None = None) -> None:
        handler = _ConnectHandler if kind == "http" else _Socks5Handler
        self.server = _Server(handler, auth)
        self.kind = kind
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, with_auth: bool = True) -> str:
        auth = f"{self.server.auth[0]}:{self.server.auth[1]}@" if with_auth and self.server.auth else ""
        return f"{self.kind}://{auth}127.0.0.1:{self.port}"

    def shown(self) -> str:
        mask = "****@" if self.server.auth else ""
        return f"{self.kind}://{mask}127.0.0.1:{self.port}"

    @property
    def tunnels(self) -> list[tuple[str, Any]]:
        with self.server.lock:
            return list(self.server.tunnels)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxies() -> Any:
    made: list[Proxy] = []

    def make(kind: str, auth: tuple[str, str] | None = None) -> Proxy:
        p = Proxy(kind, auth)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def _mock_target(gw: Gateway) -> str:
    assert gw.mock is not None
    return gw.mock.base_url.split("://", 1)[1].split("/", 1)[0]


def _no_secret_anywhere(gw: Gateway, secret: str) -> None:
    for f in gw.outputs():
        assert secret not in f.read_text(errors="replace"), f"{secret!r} is in {f.name}"
    listed = gw.cli_raw("provider", "list", json_out=False)
    assert secret not in listed.stdout + listed.stderr
    assert secret not in gw.cli_raw("provider", "list").stdout
    assert secret not in gw.cli_raw("export", json_out=False).stdout


@pytest.mark.parametrize("kind", ["http", "socks5"])
def test_a_providers_traffic_goes_through_its_proxy_with_credentials(gw: Gateway, proxies: Any, kind: str) -> None:
    proxy = proxies(kind, (USER, PASSWORD))
    provider = gw.add_provider("openai", None, None, "--proxy", proxy.url())
    upstream = f"px-{uid()}"
    model = gw.add_model([f"{provider}:{upstream}"])
    _, key = gw.add_key()

    client = gw.openai(key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MSG)
    assert raw.parse().choices[0].message.content
    r2 = client.chat.completions.create(model=model, messages=MSG, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in r2 if c.choices)
    assert gw.mock is not None
    assert len(gw.mock.requests(upstream)) == 2
    # The tunnels went to the mock, with the credentials; the pool reuses them.
    tunnels = proxy.tunnels
    assert tunnels, "the proxy saw no tunnel"
    want_creds = (
        "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode() if kind == "http" else (USER, PASSWORD)
    )
    assert tunnels == [(_mock_target(gw), want_creds)] * len(tunnels)
    assert len(tunnels) <= 2

    # The control plane's own calls for the provider go through it too.
    before = len(proxy.tunnels)
    listed = gw.cli("provider", "models", provider)
    assert listed is not None
    assert len(proxy.tunnels) == before + 1

    # Shown masked everywhere, in no log line, no request log.
    shown = gw.cli("provider", "get", provider)["proxy"]
    assert shown == proxy.shown() and "****@" in shown
    table = gw.cli_raw("provider", "get", provider, json_out=False).stdout
    assert proxy.shown() in table
    assert gw.cli("route", "explain", model)["candidates"][0]["proxy"] == proxy.shown()
    explained = gw.cli_raw("route", "explain", model, json_out=False).stdout
    assert f"connects through proxy {proxy.shown()}" in explained
    rec = gw.log(raw.headers["x-llmgw-request-id"])
    assert PASSWORD not in str(rec)
    _no_secret_anywhere(gw, PASSWORD)

    # --no-proxy: straight to the upstream, the proxy sees nothing more.
    gw.cli("provider", "update", provider, "--no-proxy")
    gw.sync()
    assert gw.cli("provider", "get", provider)["proxy"] == ""
    seen = len(proxy.tunnels)
    assert client.chat.completions.create(model=model, messages=MSG).choices[0].message.content
    assert len(proxy.tunnels) == seen
    assert len(gw.mock.requests(upstream)) == 3


def test_a_proxy_that_is_down_is_a_502_and_the_next_target_serves(gw: Gateway) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    down = gw.add_provider("openai", None, None, "--proxy", f"http://{USER}:{PASSWORD}@127.0.0.1:{dead}")
    upstream = f"down-{uid()}"
    only = gw.add_model([f"{down}:{upstream}"], "--max-attempts", "1")
    _, key = gw.add_key()
    client = gw.openai(key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model=only, messages=MSG)
    assert e.value.status_code == 502, e.value
    body = str(e.value.body)
    assert "through the provider's http proxy: cannot connect to the proxy" in body, body
    # Neither the proxy's credentials nor its address reach the client.
    assert PASSWORD not in body and PASSWORD not in str(e.value)
    assert str(dead) not in body, body
    assert gw.mock is not None
    assert gw.mock.requests(upstream) == []

    # Failover: the target behind the dead proxy fails, the direct one serves.
    direct = gw.mock_provider("openai")
    ok = f"ok-{uid()}"
    model = gw.add_model([f"{down}:{upstream}", f"{direct}:{ok}"], "--max-attempts", "1")
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MSG)
    assert raw.parse().choices[0].message.content
    assert len(gw.mock.requests(ok)) == 1
    rec = gw.log(raw.headers["x-llmgw-request-id"])
    assert [a["provider"] for a in rec["attempts"]] == [down, direct]
    assert "proxy" in rec["attempts"][0].get("error", ""), rec["attempts"][0]
    assert PASSWORD not in str(rec)
    _no_secret_anywhere(gw, PASSWORD)


def test_a_proxy_that_refuses_the_credentials_is_a_502(gw: Gateway, proxies: Any) -> None:
    proxy = proxies("socks5", (USER, PASSWORD))
    wrong = f"socks5://{USER}:not-{PASSWORD}@127.0.0.1:{proxy.port}"
    provider = gw.add_provider("openai", None, None, "--proxy", wrong)
    model = gw.add_model([f"{provider}:refused-{uid()}"], "--max-attempts", "1")
    _, key = gw.add_key()
    with pytest.raises(openai.APIStatusError) as e:
        gw.openai(key, max_retries=0).chat.completions.create(model=model, messages=MSG)
    assert e.value.status_code == 502
    assert proxy.tunnels and proxy.tunnels[0][0] == ""


def test_bad_proxy_urls_are_refused_naming_the_field(gw: Gateway) -> None:
    for bad in ["ftp://h:1", "http://h/path", "socks4://h"]:
        p = gw.cli_raw("provider", "add", f"p-{uid()}", "--protocol", "openai",
                       "--base-url", "http://127.0.0.1:9/v1", "--proxy", bad)
        assert p.returncode != 0
        assert "proxy" in p.stderr, p.stderr


def test_secrets_come_from_standard_input_a_file_or_the_environment(gw: Gateway, proxies: Any,
                                                                     tmp_path: Path) -> None:
    """`--api-key-file`/`--api-key-env` and `--proxy-file`/`--proxy-env`
    keep a provider's secrets off the command line (`ps`, shell history):
    the upstream gets the key, the proxy the credentials, and neither is
    in the CLI's arguments."""
    assert gw.mock is not None
    proxy = proxies("http", (USER, PASSWORD))
    first_key = f"sk-stdin-{uid()}"
    name = f"p-{uid()}"
    add = ["provider", "add", name, "--protocol", "openai",
           "--base-url", gw.mock.provider_base_url("openai"),
           "--api-key-file", "-", "--proxy-env", "LLMGW_TEST_PROXY_URL"]
    p = gw.cli_raw(*add, stdin=first_key + "\n", env={"LLMGW_TEST_PROXY_URL": proxy.url()})
    assert p.returncode == 0, p.stderr
    assert first_key not in " ".join(add) and PASSWORD not in " ".join(add)
    assert gw.cli("provider", "get", name)["proxy"] == proxy.shown()
    upstream = f"sec-{uid()}"
    model = gw.add_model([f"{name}:{upstream}"])
    _, key = gw.add_key()
    client = gw.openai(key, max_retries=0)

    def sent_key() -> str:
        assert client.chat.completions.create(model=model, messages=MSG).choices[0].message.content
        assert gw.mock is not None
        return gw.mock.requests(upstream)[-1]["headers"]["authorization"]

    assert sent_key() == f"Bearer {first_key}"
    creds = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert proxy.tunnels and {c for _, c in proxy.tunnels} == {creds}

    # update: the key from the environment, the proxy from a file (its
    # first line); the new proxy's credentials reach it.
    second_key = f"sk-env-{uid()}"
    other = proxies("http", ("other-user", f"other-pw-{uid()}"))
    url_file = tmp_path / "proxy-url"
    url_file.write_text(other.url() + "\nignored\n")
    p = gw.cli_raw("provider", "update", name, "--api-key-env", "LLMGW_TEST_KEY",
                   "--proxy-file", str(url_file), env={"LLMGW_TEST_KEY": second_key})
    assert p.returncode == 0, p.stderr
    gw.sync()
    assert sent_key() == f"Bearer {second_key}"
    assert other.tunnels, "the new proxy saw no tunnel"
    assert gw.cli("provider", "get", name)["proxy"] == other.shown()

    # Refused before anything changes: a variable that is not set, an
    # empty secret, standard input for two secrets, and a flag with its twin.
    for args, kw, says in [
        (["--api-key-env", "LLMGW_TEST_UNSET"], {}, "the environment variable LLMGW_TEST_UNSET is not set"),
        (["--api-key-file", "-"], {"stdin": "\n"}, "--api-key-file -: it is empty"),
        (["--api-key-file", "-", "--proxy-file", "-"], {"stdin": "a\nb\n"}, "standard input is already read"),
        (["--api-key", "x", "--api-key-env", "V"], {}, "cannot be used with"),
        (["--no-proxy", "--proxy-env", "V"], {}, "cannot be used with"),
    ]:
        p = gw.cli_raw("provider", "update", name, *args, **kw)
        assert p.returncode != 0 and says in p.stderr, (args, p.stderr)
    assert sent_key() == f"Bearer {second_key}"
