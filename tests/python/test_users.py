"""User attribution: the end user a request is for, as each client names
them (the X-User-ID header, OpenAI's `user`, Anthropic's
`metadata.user_id`), is in the request log, and `llmgw logs --user` and
`llmgw stats --by user` find it. The official SDKs send the fields."""

from __future__ import annotations

import httpx
import pytest

from conftest import Gateway, uid

MSG = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def setup(gw: Gateway) -> dict[str, str]:
    _, key = gw.add_key(prefix="users")
    return {
        "key": key,
        "openai": gw.add_model([f"{gw.mock_provider('openai')}:gpt-users"]),
        "anthropic": gw.add_model([f"{gw.mock_provider('anthropic')}:claude-users"]),
        "gemini": gw.add_model([f"{gw.mock_provider('gemini')}:gemini-users"]),
    }


def test_each_clients_own_field_and_the_header_name_the_user(gw: Gateway, setup: dict[str, str]) -> None:
    alice, bob, carol, dave = (f"{n}-{uid()}" for n in ("alice", "bob", "carol", "dave"))
    # A key of this test's own, for the stats.
    key_name, key = gw.add_key(prefix="users")
    setup = {**setup, "key": key}
    oa = gw.openai(setup["key"])
    chat = oa.chat.completions.with_raw_response.create(model=setup["openai"], messages=MSG, user=alice)
    resp = oa.responses.with_raw_response.create(model=setup["openai"], input="hello there", user=alice)
    streamed = oa.chat.completions.create(model=setup["openai"], messages=MSG, user=alice, stream=True)
    list(streamed)
    an = gw.anthropic(setup["key"]).messages.with_raw_response.create(
        model=setup["anthropic"], max_tokens=64, messages=MSG, metadata={"user_id": bob})
    # The header wins over the body's field.
    header = oa.chat.completions.with_raw_response.create(
        model=setup["openai"], messages=MSG, user=alice, extra_headers={"X-User-ID": carol})
    # Gemini has no field of its own: the header only.
    gem = httpx.post(f"{gw.url}/v1beta/models/{setup['gemini']}:generateContent",
                     headers={"x-goog-api-key": setup["key"], "x-user-id": dave},
                     json={"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]}, timeout=30)
    assert gem.status_code == 200, gem.text
    # No one named: empty.
    nobody = oa.chat.completions.with_raw_response.create(model=setup["openai"], messages=MSG)

    want = {
        chat.headers["x-llmgw-request-id"]: alice,
        resp.headers["x-llmgw-request-id"]: alice,
        streamed.response.headers["x-llmgw-request-id"]: alice,
        an.headers["x-llmgw-request-id"]: bob,
        header.headers["x-llmgw-request-id"]: carol,
        gem.headers["x-llmgw-request-id"]: dave,
        nobody.headers["x-llmgw-request-id"]: "",
    }
    for rid, user in want.items():
        rec = gw.log(rid)
        assert rec["status"] == 200 and rec["user"] == user, rec

    found = {r["id"] for r in gw.logs("--user", alice, "--since", "1h")}
    assert found == {rid for rid, u in want.items() if u == alice}, found
    assert {r["id"] for r in gw.logs("--user", carol, "--since", "1h")} == {header.headers["x-llmgw-request-id"]}

    stats = gw.cli("stats", "--by", "user", "--key", key_name)
    groups = {g["group"]: g["requests"] for g in stats["groups"]}
    assert groups == {alice: 3, bob: 1, carol: 1, dave: 1, "": 1}, stats


def test_a_long_user_is_cut_and_a_bad_one_is_ignored(gw: Gateway, setup: dict[str, str]) -> None:
    oa = gw.openai(setup["key"])
    long = "é" * 300
    r = oa.chat.completions.with_raw_response.create(model=setup["openai"], messages=MSG, user=long)
    rec = gw.log(r.headers["x-llmgw-request-id"])
    assert rec["user"] == "é" * 128, len(rec["user"])
    # `user` of the wrong type is no user, and the request still passes
    # through byte for byte to the upstream, which judges it.
    r = httpx.post(f"{gw.url}/v1/chat/completions", headers={"authorization": f"Bearer {setup['key']}"},
                   json={"model": setup["openai"], "messages": MSG, "user": {"id": "x"}}, timeout=30)
    rec = gw.log(r.headers["x-llmgw-request-id"])
    assert rec["user"] == "", rec
