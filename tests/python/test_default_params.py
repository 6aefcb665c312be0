"""Default request parameters per provider and per target
(`--default-param NAME=VALUE`, `--target-default-param N:NAME=VALUE`):
filled into the upstream body only when the request lacks the top-level
field, the target's winning over the provider's, appended without touching
any other byte; for a translated request, in the upstream's protocol. The
mock's journal shows the exact body the upstream got."""

from __future__ import annotations

import base64
import json

import httpx

from conftest import Gateway, uid

MSG = [{"role": "user", "content": "defaults"}]


def recorded_body(rec: dict) -> bytes:
    return base64.b64decode(rec["body_base64"])


def post(gw: Gateway, key: str, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{gw.url}/v1/chat/completions",
        content=body,
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        timeout=30,
    )


def test_a_default_is_filled_in_only_when_absent_and_the_target_wins(gw: Gateway) -> None:
    provider = gw.add_provider(
        "openai", None, None, "--default-param", "temperature=0.2", "--default-param", "seed=7"
    )
    assert gw.cli("provider", "get", provider)["default_params"] == {"temperature": "0.2", "seed": "7"}
    up = f"dp-{uid()}"
    model = gw.add_model([f"{provider}:{up}"])
    _, key = gw.add_key()

    # Absent: appended before the closing brace, every other byte as sent.
    body = '{ "model" : "MODEL",\n "messages":[{"role":"user","content":"h\\u00e9"}] }\n'
    r = post(gw, key, body.replace("MODEL", model).encode())
    assert r.status_code == 200, r.text
    assert gw.mock is not None
    (rec,) = gw.mock.requests(up)
    want = body.replace("MODEL", up).replace("}] }", '}] ,"seed":7,"temperature":0.2}')
    assert recorded_body(rec) == want.encode()

    # Present: the client's value stays as written; only the missing one is added.
    body = '{"model":"MODEL","temperature":0.90,"messages":[{"role":"user","content":"x"}]}'
    r = post(gw, key, body.replace("MODEL", model).encode())
    assert r.status_code == 200, r.text
    rec = gw.mock.requests(up)[1]
    assert recorded_body(rec) == body.replace("MODEL", up).replace("]}", '],"seed":7}').encode()

    # Through the official SDK.
    client = gw.openai(key, max_retries=0)
    assert client.chat.completions.create(model=model, messages=MSG, seed=1).choices[0].message.content
    sent = json.loads(recorded_body(gw.mock.requests(up)[2]))
    assert (sent["seed"], sent["temperature"]) == (1, 0.2)

    # A target's default beats its provider's for the same name.
    up2 = f"dpt-{uid()}"
    model2 = gw.add_model([f"{provider}:{up2}"], "--target-default-param", "1:temperature=0.5")
    assert client.chat.completions.create(model=model2, messages=MSG).choices[0].message.content
    sent = json.loads(recorded_body(gw.mock.requests(up2)[0]))
    assert (sent["seed"], sent["temperature"]) == (7, 0.5)
    explained = gw.cli("route", "explain", model2)["candidates"][0]
    assert explained["default_params"] == {"seed": "7", "temperature": "0.5"}
    text = gw.cli_raw("route", "explain", model2, json_out=False).stdout
    assert "fills in when absent: seed=7 temperature=0.5" in text
    target = gw.cli("model", "get", model2)["targets"][0]
    assert target["default_params"] == {"temperature": "0.5"}

    # Cleared: the body is the client's again, byte for byte.
    gw.cli("provider", "update", provider, "--clear-default-params")
    gw.sync()
    body = '{"model":"MODEL", "messages":[{"role":"user","content":"x"}]}'
    r = post(gw, key, body.replace("MODEL", model).encode())
    assert r.status_code == 200, r.text
    assert recorded_body(gw.mock.requests(up)[3]) == body.replace("MODEL", up).encode()


def test_a_translated_request_gets_the_defaults_in_the_upstreams_protocol(gw: Gateway) -> None:
    # An OpenAI client, an Anthropic upstream: `top_k` exists only there.
    provider = gw.add_provider(
        "anthropic", None, None, "--default-param", "top_k=5", "--default-param", "temperature=0.3"
    )
    up = f"dpa-{uid()}"
    model = gw.add_model([f"{provider}:{up}"])
    _, key = gw.add_key()
    client = gw.openai(key, max_retries=0)
    assert client.chat.completions.create(model=model, messages=MSG).choices[0].message.content
    assert client.chat.completions.create(model=model, messages=MSG, temperature=0.9).choices[0].message.content
    assert gw.mock is not None
    first, second = (json.loads(recorded_body(r)) for r in gw.mock.requests(up))
    assert (first["top_k"], first["temperature"]) == (5, 0.3)
    assert (second["top_k"], second["temperature"]) == (5, 0.9)
    assert "max_tokens" in first and "messages" in first
    # Token counting takes no generation parameters: none are added.
    gw.anthropic(key, max_retries=0).messages.count_tokens(model=model, messages=MSG)
    counted = gw.mock.requests(up)[2]
    assert counted["path"].endswith("/messages/count_tokens"), counted["path"]
    assert "top_k" not in json.loads(recorded_body(counted))


def test_structural_fields_are_refused_as_defaults(gw: Gateway) -> None:
    for bad in ["model=x", "messages=[]", "stream=true"]:
        p = gw.cli_raw("provider", "add", f"p-{uid()}", "--protocol", "openai",
                       "--base-url", "http://127.0.0.1:9/v1", "--default-param", bad)
        assert p.returncode != 0
        name = bad.split("=")[0]
        assert f"default parameter '{name}' is not allowed" in p.stderr, p.stderr
