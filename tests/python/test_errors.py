"""The gateway's own errors reach SDK users as the SDKs' exceptions, in each
protocol's error shape."""

from __future__ import annotations

import secrets
import socket
import time

import anthropic
import httpx
import openai
import pytest

from conftest import Gateway, uid, wait_until

MSG = [{"role": "user", "content": "hi"}]


def chat(c: openai.OpenAI, model: str, **kw):
    return c.chat.completions.create(model=model, messages=MSG, **kw)


def message(c: anthropic.Anthropic, model: str, **kw):
    return c.messages.create(model=model, max_tokens=5, messages=MSG, **kw)


@pytest.fixture(scope="module")
def models(gw: Gateway) -> tuple[str, str]:
    """(openai model, anthropic model) on the shared mock."""
    return gw.add_model([f"mock:err-{uid()}"]), gw.add_model([f"mocka:err-a-{uid()}"])


def assert_openai_error_shape(r: httpx.Response, status: int, type_: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers.get("x-llmgw-request-id")
    err = r.json()["error"]
    assert err["type"] == type_
    assert isinstance(err["message"], str) and err["message"]
    assert "code" in err and "param" in err
    return err


def assert_anthropic_error_shape(r: httpx.Response, status: int, type_: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == type_
    assert body["error"]["message"]
    return body["error"]


# ----- keys -----


def test_missing_key(gw: Gateway, models) -> None:
    om, am = models
    # The SDK insists on some key; the request goes out without one.
    with pytest.raises(openai.AuthenticationError) as e:
        chat(gw.openai("unused"), om, extra_headers={"Authorization": openai.omit})
    assert e.value.status_code == 401
    assert "missing" in e.value.message.lower()
    with pytest.raises(anthropic.AuthenticationError) as ea:
        message(gw.anthropic("unused"), am,
                extra_headers={"x-api-key": anthropic.omit, "Authorization": anthropic.omit})
    assert "missing" in ea.value.message.lower()
    # Raw: no credential header at all, in both shapes.
    r = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": om, "messages": MSG})
    assert_openai_error_shape(r, 401, "authentication_error")
    r = httpx.post(f"{gw.url}/v1/messages", json={"model": am, "max_tokens": 5, "messages": MSG})
    assert_anthropic_error_shape(r, 401, "authentication_error")


def test_unknown_key(gw: Gateway, models) -> None:
    om, am = models
    bogus = "sk-llmgw-" + secrets.token_hex(16)
    with pytest.raises(openai.AuthenticationError):
        chat(gw.openai(bogus), om)
    with pytest.raises(anthropic.AuthenticationError):
        message(gw.anthropic(bogus), am)
    with pytest.raises(openai.AuthenticationError):
        gw.openai(bogus).models.list()


def test_revoked_key(gw: Gateway, models) -> None:
    om, am = models
    name, key = gw.add_key()
    assert chat(gw.openai(key), om).choices
    gw.cli("key", "revoke", name)
    gw.sync()
    with pytest.raises(openai.AuthenticationError):
        chat(gw.openai(key), om)
    with pytest.raises(anthropic.AuthenticationError):
        message(gw.anthropic(key), am)


def test_expired_key(gw: Gateway, models) -> None:
    om, am = models
    _, key = gw.add_key(None, "--expires-in", "1s")
    c = gw.openai(key)

    def expired() -> bool:
        try:
            chat(c, om)
            return False
        except openai.AuthenticationError:
            return True

    wait_until(expired, 10, "the key to expire", interval=0.1)
    with pytest.raises(openai.AuthenticationError) as e:
        chat(c, om)
    assert "expired" in str(e.value).lower()
    with pytest.raises(anthropic.AuthenticationError):
        message(gw.anthropic(key), am)


# ----- models -----


def test_model_not_allowed_for_the_key(gw: Gateway, models) -> None:
    om, am = models
    other = gw.add_model([f"mock:other-{uid()}"])
    _, key = gw.add_key([other])
    with pytest.raises(openai.PermissionDeniedError) as e:
        chat(gw.openai(key), om)
    assert e.value.status_code == 403
    with pytest.raises(anthropic.PermissionDeniedError):
        message(gw.anthropic(key), am)
    assert chat(gw.openai(key), other).choices


def test_unknown_model(gw: Gateway, models) -> None:
    _, key = gw.add_key()
    with pytest.raises(openai.NotFoundError) as e:
        chat(gw.openai(key), f"no-such-model-{uid()}")
    assert e.value.status_code == 404
    with pytest.raises(anthropic.NotFoundError):
        message(gw.anthropic(key), f"no-such-model-{uid()}")


# ----- bad requests -----


@pytest.mark.parametrize(
    "body",
    [b'{"model": "x", "messages": [', b"not json at all", b'{"messages": []}', b'["model"]', b'{"model": 7}'],
    ids=["truncated", "garbage", "no-model", "array", "model-not-a-string"],
)
def test_bad_bodies_get_400_in_each_protocols_shape(gw: Gateway, models, body: bytes) -> None:
    _, key = gw.add_key()
    r = httpx.post(
        f"{gw.url}/v1/chat/completions",
        content=body,
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    assert_openai_error_shape(r, 400, "invalid_request_error")
    r = httpx.post(
        f"{gw.url}/v1/messages",
        content=body,
        headers={"x-api-key": key, "content-type": "application/json"},
    )
    assert_anthropic_error_shape(r, 400, "invalid_request_error")


def test_wrong_method_and_unknown_path(gw: Gateway, models) -> None:
    om, _ = models
    _, key = gw.add_key()
    auth = {"authorization": f"Bearer {key}"}
    r = httpx.get(f"{gw.url}/v1/chat/completions", headers=auth)
    assert_openai_error_shape(r, 405, "invalid_request_error")
    r = httpx.get(f"{gw.url}/v1/messages", headers={"x-api-key": key})
    assert_anthropic_error_shape(r, 405, "invalid_request_error")
    r = httpx.get(f"{gw.url}/v1/models")
    assert_openai_error_shape(r, 401, "authentication_error")


# ----- upstream failures -----


def test_upstream_down_is_502(gw: Gateway) -> None:
    # A port bound but not listening: connections are refused, and nothing
    # else can take the port while the test runs.
    with socket.socket() as hold:
        hold.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{hold.getsockname()[1]}/v1"
        p = gw.add_provider("openai", dead, "sk-dead")
        pa = gw.add_provider("anthropic", dead, "sk-dead")
        om = gw.add_model([f"{p}:down"], "--max-attempts", "2", "--retry-delay-ms", "10")
        am = gw.add_model([f"{pa}:down"], "--max-attempts", "1")
        _, key = gw.add_key()
        with pytest.raises(openai.InternalServerError) as e:
            chat(gw.openai(key), om)
        assert e.value.status_code == 502
        assert e.value.response.json()["error"]["type"] == "server_error"
        with pytest.raises(anthropic.APIStatusError) as ea:
            message(gw.anthropic(key), am)
        assert ea.value.status_code == 502
        assert ea.value.response.json()["type"] == "error"
        rec = gw.log(e.value.response.headers["x-llmgw-request-id"])
        assert rec["outcome"] == "upstream_error", rec
        assert [a["status"] for a in rec["attempts"]] == [0, 0]
        assert all("connect" in a["error"] for a in rec["attempts"]), rec["attempts"]


# ----- dedicated gateway: small body limit, short first-byte timeout -----


@pytest.fixture(scope="module")
def limits(make_gateway) -> Gateway:
    return make_gateway(
        "limits", cp_args=["--max-request-body-bytes", "1024", "--first-byte-timeout", "1s"]
    )


def test_body_over_the_limit_is_413(limits: Gateway) -> None:
    gw = limits
    om = gw.add_model(["mock:big"])
    am = gw.add_model(["mocka:big-a"])
    _, key = gw.add_key()
    big = [{"role": "user", "content": "x" * 2000}]
    with pytest.raises(openai.APIStatusError) as e:
        gw.openai(key).chat.completions.create(model=om, messages=big)
    assert e.value.status_code == 413
    assert e.value.response.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.APIStatusError) as ea:
        gw.anthropic(key).messages.create(model=am, max_tokens=5, messages=big)
    assert ea.value.status_code == 413
    assert ea.value.response.json()["error"]["type"] == "request_too_large"

    # Without a content-length (chunked), the limit holds while reading.
    def chunks():
        yield b'{"model": "' + om.encode() + b'", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"y" * 100
        yield b'"}]}'

    r = httpx.post(
        f"{gw.url}/v1/chat/completions",
        content=chunks(),
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 413, r.text
    # A small body still works, and nothing big reached the upstream.
    assert gw.openai(key).chat.completions.create(model=om, messages=MSG).choices
    assert all(len(rec["body"]) < 1024 for rec in gw.mock.requests())


def test_upstream_hang_beyond_the_first_byte_timeout_is_504(limits: Gateway) -> None:
    gw = limits
    om = gw.add_model([f"mock:hang-{uid()}"], "--max-attempts", "1")
    am = gw.add_model([f"mocka:hang-a-{uid()}"], "--max-attempts", "1")
    _, key = gw.add_key()
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as e:
        chat(gw.openai(key), om, extra_headers={"x-mock-hang": "1"})
    elapsed = time.monotonic() - started
    assert e.value.status_code == 504
    assert 0.9 <= elapsed < 5, elapsed
    # A silent upstream is a timeout.
    rec = gw.log(e.value.response.headers["x-llmgw-request-id"])
    assert rec["status"] == 504 and rec["outcome"] == "timeout", rec
    with pytest.raises(anthropic.APIStatusError) as ea:
        message(gw.anthropic(key), am, extra_headers={"x-mock-hang": "1"})
    assert ea.value.status_code == 504
