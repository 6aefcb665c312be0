"""No secret leaks: with RUST_LOG=trace on the control plane and the data
plane, after successful, streaming and failing requests of the three
protocols (a Gemini key in the query string too), no secret appears in any
stored request log (headers and bodies included), any process's output,
any error a client got, the data plane's `/metrics`, or the CLI's
listings and export."""

from __future__ import annotations

import json
import re
import secrets

import httpx
import openai

from conftest import Gateway, uid

ANSI = re.compile(rb"\x1b\[[0-9;]*m")


def test_no_secret_in_logs_or_process_output(make_gateway) -> None:
    gw: Gateway = make_gateway("leak", rust_log="trace")
    header_secret = "hdr-" + secrets.token_hex(16)
    extra_key = "sk-prov-extra-" + secrets.token_hex(16)
    extra = gw.add_provider(
        "openai", gw.mock.base_url, extra_key, "--header", f"x-upstream-secret: {header_secret}"
    )
    shown = json.dumps(gw.cli("provider", "get", extra))
    assert extra_key not in shown and header_secret not in shown
    om = gw.add_model([f"mock:leak-{uid()}"], "--max-attempts", "1")
    om2 = gw.add_model([f"{extra}:leak-x-{uid()}"], "--max-attempts", "1")
    am = gw.add_model([f"mocka:leak-a-{uid()}"], "--max-attempts", "1")
    key_name, key = gw.add_key()
    gp = gw.mock_provider("gemini")
    gm = gw.add_model([f"{gp}:leak-g-{uid()}"], "--max-attempts", "1")
    ids: list[str] = []
    errors: list[str] = []

    oc = gw.openai(key)
    r = oc.chat.completions.with_raw_response.create(model=om, messages=[{"role": "user", "content": "a"}])
    ids.append(r.headers["x-llmgw-request-id"])
    r = oc.chat.completions.with_raw_response.create(model=om2, messages=[{"role": "user", "content": "b"}])
    ids.append(r.headers["x-llmgw-request-id"])
    s = oc.chat.completions.create(model=om, messages=[{"role": "user", "content": "c"}], stream=True)
    ids.append(s.response.headers["x-llmgw-request-id"])
    list(s)
    try:
        oc.chat.completions.create(model=om, messages=[{"role": "user", "content": "d"}],
                                   extra_headers={"x-mock-status": "503"})
    except openai.InternalServerError as e:
        ids.append(e.response.headers["x-llmgw-request-id"])
        errors.append(e.response.text)
    try:
        oc.chat.completions.create(model=f"nope-{uid()}", messages=[{"role": "user", "content": "e"}])
    except openai.NotFoundError as e:
        ids.append(e.response.headers["x-llmgw-request-id"])
        errors.append(e.response.text)
    ac = gw.anthropic(key)
    r = ac.messages.with_raw_response.create(model=am, max_tokens=5, messages=[{"role": "user", "content": "f"}])
    ids.append(r.headers["x-llmgw-request-id"])
    with httpx.stream("POST", f"{gw.url}/v1/messages", headers={"x-api-key": key},
                      json={"model": am, "max_tokens": 5, "stream": True,
                            "messages": [{"role": "user", "content": "g"}]},
                      timeout=30) as resp:
        ids.append(resp.headers["x-llmgw-request-id"])
        b"".join(resp.iter_raw())
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions",
                      headers={"authorization": f"Bearer {key}", "x-mock-reset-after-chunks": "1"},
                      json={"model": om, "stream": True, "messages": [{"role": "user", "content": "h"}]},
                      timeout=30) as resp:
        ids.append(resp.headers["x-llmgw-request-id"])
        b"".join(resp.iter_raw())
    # A wrong key (say, a real key with a typo) is a secret too.
    wrong_key = "sk-llmgw-" + secrets.token_hex(16)
    try:
        gw.openai(wrong_key).chat.completions.create(model=om, messages=[{"role": "user", "content": "i"}])
    except openai.AuthenticationError as e:
        ids.append(e.response.headers["x-llmgw-request-id"])
        errors.append(e.response.text)
    # Gemini, with the client key in the query string, and a failing one.
    r = httpx.post(f"{gw.url}/v1beta/models/{gm}:generateContent", params={"key": key},
                   json={"contents": [{"role": "user", "parts": [{"text": "j"}]}]}, timeout=30)
    assert r.status_code == 200, r.text
    ids.append(r.headers["x-llmgw-request-id"])
    r = httpx.post(f"{gw.url}/v1beta/models/{gm}:generateContent", params={"key": key},
                   headers={"x-mock-status": "500"},
                   json={"contents": [{"role": "user", "parts": [{"text": "k"}]}]}, timeout=30)
    assert r.status_code == 500, r.text
    ids.append(r.headers["x-llmgw-request-id"])
    errors.append(r.text)
    assert len(ids) == 11

    sensitive = {
        "client key": key,
        "wrong client key": wrong_key,
        "openai provider key": gw.openai_provider_key,
        "anthropic provider key": gw.anthropic_provider_key,
        "gemini provider key": gw.gemini_provider_key,
        "extra provider key": extra_key,
        "provider header secret": header_secret,
        "admin token": gw.admin_token,
        "data-plane token": gw.dataplane_token,
        "master key": gw.master_key,
    }

    # The stored records, in full.
    recs = [gw.log(i) for i in ids]
    # All but the wrong key's request name the key (the 404 was authenticated first).
    listed = gw.key_logs(key_name, len(ids) - 1)
    for what, rec in [*((f"record {i}", r) for i, r in zip(ids, recs)), ("logs list", listed)]:
        text = json.dumps(rec)
        for name, secret in sensitive.items():
            assert secret not in text, f"the {name} appears in {what}"
    # What clients and operators see: errors, metrics, the CLI.
    metrics = gw.http.get(f"{gw.ops_url}/metrics").text
    assert "llmgw_" in metrics
    shown = {
        "client errors": "\n".join(errors),
        "/metrics": metrics,
        "provider list": json.dumps(gw.cli("provider", "list")),
        "key list": json.dumps(gw.cli("key", "list")),
        "export": gw.cli_raw("export", json_out=False).stdout,
    }
    for what, text in shown.items():
        assert text, what
        for name, secret in sensitive.items():
            assert secret not in text, f"the {name} appears in {what}"
    # The records did keep what they should (so the check above means something).
    assert any(r.get("request_headers") for r in recs)
    assert any("tok0" in (r.get("response_body") or "") for r in recs)

    # Every process's output, raw and with JSON strings decoded.
    outputs = gw.outputs()
    assert len(outputs) >= 3
    total = 0
    for path in outputs:
        raw = ANSI.sub(b"", path.read_bytes())
        total += len(raw)
        decoded = []
        for line in raw.splitlines():
            try:
                decoded.append(json.dumps(json.loads(line), ensure_ascii=False))
            except ValueError:
                pass
        text = raw.decode("utf-8", "replace") + "\n".join(decoded)
        for name, secret in sensitive.items():
            assert secret not in text, f"the {name} appears in {path.name}"
    # Trace logging was on (the outputs are big), or this proves little.
    dp_out = next(p for p in outputs if "dataplane" in p.name).read_text()
    assert "TRACE" in dp_out, "the data plane did not log at trace level"
    assert total > 100_000, total
