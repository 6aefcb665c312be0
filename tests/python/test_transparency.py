"""Transparency: the upstream gets the client's bytes with only `model`
replaced, the provider's credential instead of the client's, the client's
`anthropic-version`, and nothing in a body can redirect the gateway."""

from __future__ import annotations

import base64
import socket
import threading
import urllib.parse

import httpx

from conftest import Gateway, uid


def recorded_body(rec: dict) -> bytes:
    return base64.b64decode(rec["body_base64"])


def all_header_values(rec: dict) -> str:
    return "\n".join(f"{n}: {v}" for n, v in rec["header_list"])


def test_body_bytes_reach_the_upstream_with_only_the_model_replaced(gw: Gateway) -> None:
    up = f"bytes-upstream-model-{uid()}"
    model = gw.add_model([f"mock:{up}"])
    _, key = gw.add_key()
    body = (
        '{ "messages" : [ {"content":"h\\u00e9llo \u2713 w\u00f6rld \U0001f600 \\"q\\"",'
        '"role":"user"} ],\n\t"temperature":0.70,   "model"  :  "MODEL" ,'
        ' "top_p":1.0e0, "metadata":{"model":"keep-me"}, "n":1 ,"seed":  -0 }\n'
    ).replace("MODEL", model).encode("utf-8")
    r = httpx.post(
        f"{gw.url}/v1/chat/completions",
        content=body,
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    sent = gw.mock.requests(up)
    assert len(sent) == 1
    expected = body.replace(f'"{model}"'.encode(), f'"{up}"'.encode(), 1)
    assert recorded_body(sent[0]) == expected


def test_streaming_body_only_gains_the_usage_request(gw: Gateway) -> None:
    up = f"bytes-s-{uid()}"
    model = gw.add_model([f"mock:{up}"])
    amodel = gw.add_model([f"mocka:{up}-a"])
    _, key = gw.add_key()
    body = (
        '{"stream" :true, "model":"MODEL",\n "messages":[{"role":"user","content":"ça va 0.70"}],'
        '"max_tokens":  16 , "temperature":0.70 }'
    )
    # OpenAI chat: the gateway asks for usage on the client's behalf.
    raw = body.replace("MODEL", model).encode()
    r = httpx.post(f"{gw.url}/v1/chat/completions", content=raw, timeout=30,
                   headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
    assert r.status_code == 200, r.text
    (rec,) = gw.mock.requests(up)
    assert recorded_body(rec) == body.replace("MODEL", up).encode()[:-1] + (
        b',"stream_options":{"include_usage":true}}'
    )
    # Anthropic: nothing but the model changes.
    raw = body.replace("MODEL", amodel).encode()
    r = httpx.post(f"{gw.url}/v1/messages", content=raw, timeout=30,
                   headers={"x-api-key": key, "content-type": "application/json"})
    assert r.status_code == 200, r.text
    (rec,) = gw.mock.requests(f"{up}-a")
    assert recorded_body(rec) == body.replace("MODEL", f"{up}-a").encode()


def test_upstream_gets_the_provider_credential_not_the_client_key(gw: Gateway) -> None:
    up = f"cred-{uid()}"
    model = gw.add_model([f"mock:{up}"])
    _, key = gw.add_key()
    gw.openai(key).chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    (rec,) = gw.mock.requests(up)
    assert rec["headers"]["authorization"] == f"Bearer {gw.openai_provider_key}"
    assert key not in all_header_values(rec)
    assert "x-api-key" not in rec["headers"]
    # One Host, the upstream's own authority: the client's named the gateway.
    hosts = [v for n, v in rec["header_list"] if n.lower() == "host"]
    assert hosts == [urllib.parse.urlsplit(gw.mock.base_url).netloc]


def test_anthropic_upstream_gets_the_provider_x_api_key(gw: Gateway) -> None:
    up = f"cred-a-{uid()}"
    model = gw.add_model([f"mocka:{up}"])
    _, key = gw.add_key()
    gw.anthropic(key).messages.create(
        model=model, max_tokens=5, messages=[{"role": "user", "content": "x"}]
    )
    # A client presenting its key as a bearer token instead.
    r = httpx.post(
        f"{gw.url}/v1/messages",
        headers={"authorization": f"Bearer {key}", "anthropic-version": "2023-06-01"},
        json={"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    recs = gw.mock.requests(up)
    assert len(recs) == 2
    for rec in recs:
        assert rec["headers"]["x-api-key"] == gw.anthropic_provider_key
        assert key not in all_header_values(rec)
        assert "authorization" not in rec["headers"]


def test_anthropic_version_forwarded_as_sent_and_defaulted_when_absent(gw: Gateway) -> None:
    up = f"ver-{uid()}"
    model = gw.add_model([f"mocka:{up}"])
    _, key = gw.add_key()
    body = {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    for headers in ({"x-api-key": key, "anthropic-version": "2024-10-22"}, {"x-api-key": key}):
        r = httpx.post(f"{gw.url}/v1/messages", headers=headers, json=body, timeout=30)
        assert r.status_code == 200, r.text
    sent, absent = gw.mock.requests(up)
    assert sent["headers"]["anthropic-version"] == "2024-10-22"
    assert absent["headers"]["anthropic-version"] == "2023-06-01"
    # Beta headers and the like pass through too.
    gw.anthropic(key).messages.create(
        **body, extra_headers={"anthropic-beta": "tools-2024-04-04"}
    )
    assert gw.mock.requests(up)[-1]["headers"]["anthropic-beta"] == "tools-2024-04-04"


class Trap:
    """A listening socket that records every connection made to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> int:
        self.stop.set()
        self.thread.join(timeout=2)
        # Anything the thread did not accept yet is still in the backlog.
        self.sock.setblocking(False)
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                break
            self.connections += 1
            conn.close()
        self.sock.close()
        return self.connections


def test_body_fields_cannot_redirect_the_gateway(gw: Gateway) -> None:
    up = f"ssrf-{uid()}"
    model = gw.add_model([f"mock:{up}"])
    amodel = gw.add_model([f"mocka:{up}-a"])
    _, key = gw.add_key()
    trap = Trap()
    evil = f"http://127.0.0.1:{trap.port}"
    try:
        extra = {"api_base": f"{evil}/evil", "base_url": f"{evil}/v1", "api_key": "x"}
        r = gw.openai(key).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "x"}], extra_body=extra
        )
        assert r.choices[0].message.content
        r2 = httpx.post(
            f"{gw.url}/v1/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json={"model": model, "messages": [{"role": "user", "content": "y"}], "stream": True, **extra},
            timeout=30,
        )
        assert r2.status_code == 200
        m = gw.anthropic(key).messages.create(
            model=amodel, max_tokens=5, messages=[{"role": "user", "content": "x"}], extra_body=extra
        )
        assert m.content
    finally:
        connections = trap.close()
    assert connections == 0, "the gateway connected to a URL taken from the request body"
    recs = gw.mock.requests(up) + gw.mock.requests(f"{up}-a")
    assert len(recs) == 3
    for rec in recs:
        assert rec["body_json"]["api_base"] == f"{evil}/evil"
        assert rec["body_json"]["base_url"] == f"{evil}/v1"
