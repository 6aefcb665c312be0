"""The `cost-first` strategy (#16): among a model's healthy targets, the
cheapest for the request (its estimated input and max_tokens at each
target's own prices) is tried first; when it is ejected as an outlier, the
next cheapest. `llmgw route explain` shows each target's estimated cost.
The official openai SDK is the client; targets' own prices are set with
`llmgw model add --target-price`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import Gateway, GatewayFactory, uid

MSG = [{"role": "user", "content": "which one is cheapest?"}]


@pytest.fixture(scope="module")
def cgw(make_gateway: GatewayFactory) -> Gateway:
    # Outlier state is per data plane: a gateway of this module's own.
    return make_gateway("costfirst", cp_args=["--retry-budget-min-retries", "10000"])


def prices(inp: float, out: float) -> dict[str, float]:
    return {"input_per_mtok": inp, "output_per_mtok": out}


def attempts(rec: dict) -> list[tuple[str, int]]:
    return [(a["upstream_model"], a["status"]) for a in rec["attempts"]]


def test_the_cheapest_healthy_target_first_then_the_next_after_an_ejection(
        cgw: Gateway, tmp_path: Path) -> None:
    dear, cheap, mid = (f"{n}-{uid()}" for n in ("dear", "cheap", "mid"))
    # Listed dearest first, so the order is not the targets' own.
    model = cgw.add_model([f"mock:{dear}", f"mock:{cheap}", f"mock:{mid}"],
                          "--strategy", "cost-first", "--max-attempts", "1",
                          "--target-price", "1:10,30", "--target-price", "2:1,2",
                          "--target-price", "3:3,6", prefix="cf")
    shown = cgw.cli("model", "get", model)
    assert {t["upstream_model"]: t["prices"]["output_per_mtok"] for t in shown["targets"]} == {
        dear: 30, cheap: 2, mid: 6}, shown
    _, key = cgw.add_key()

    # route explain: the estimates, and the order they make.
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"model": model, "messages": MSG, "max_tokens": 1000}))
    ex = cgw.cli("route", "explain", model, "--body", str(body))
    assert ex["strategy"] == "cost-first"
    by_model = {c["upstream_model"]: c for c in ex["candidates"]}
    # One input estimate for every target (the data plane's rough one,
    # about four bytes a token, as no rule counted tokens), plus the
    # request's max_tokens, each at the target's prices.
    n_in = (by_model[cheap]["estimated_cost"] * 1e6 - 1000 * 2) / 1
    assert 0 < n_in < 100 and abs(n_in - round(n_in)) < 1e-6, n_in
    for name, (pi, po) in {dear: (10, 30), cheap: (1, 2), mid: (3, 6)}.items():
        want = (round(n_in) * pi + 1000 * po) / 1e6
        assert abs(by_model[name]["estimated_cost"] - want) < 1e-9, (name, by_model[name], want)
    assert [by_model[n]["order"] for n in (cheap, mid, dear)] == [0, 1, 2], ex

    oa = cgw.openai(key, max_retries=0)

    def ask() -> dict:
        raw = oa.chat.completions.with_raw_response.create(model=model, messages=MSG, max_tokens=50)
        assert raw.parse().choices[0].message.content
        return cgw.log(raw.headers["x-llmgw-request-id"])

    assert attempts(ask()) == [(cheap, 200)]
    # The cheapest fails: each request fails over to the next cheapest,
    # until the cheapest is ejected (the data plane's outlier policy: at
    # least 5 outcomes, half of them failures; here after the 4th failure).
    cgw.mock.script(cheap, [{"status": 500}] * 5)
    failures = 0
    while (a := attempts(ask())) != [(mid, 200)]:
        assert a == [(cheap, 500), (mid, 200)], a
        failures += 1
        assert failures <= 5, "the failing cheapest target was never ejected"
    assert failures == 4
    # Ejected: the next cheapest is tried first, and the cheapest not at all.
    assert attempts(ask()) == [(mid, 200)]
    assert len(cgw.mock.requests(cheap)) == 1 + failures
    assert cgw.mock.requests(dear) == []


def test_the_requests_max_tokens_decides_between_cheap_input_and_cheap_output(cgw: Gateway) -> None:
    cheap_in, cheap_out = f"cheap-in-{uid()}", f"cheap-out-{uid()}"
    model = cgw.add_model([f"mock:{cheap_in}", f"mock:{cheap_out}"], "--strategy", "cost-first",
                          "--target-price", "1:1,30", "--target-price", "2:20,2", prefix="cf")
    _, key = cgw.add_key()
    oa = cgw.openai(key)

    def first(max_tokens: int) -> str:
        raw = oa.chat.completions.with_raw_response.create(model=model, messages=MSG,
                                                           max_tokens=max_tokens)
        raw.parse()
        return cgw.log(raw.headers["x-llmgw-request-id"])["attempts"][0]["upstream_model"]

    # A short prompt: with a small answer the input price decides, with a
    # long one the output price.
    assert first(1) == cheap_in
    assert first(1000) == cheap_out
    assert first(1) == cheap_in
