"""Exact prices (#16): tiered and cache costs in the request log match
hand-computed values to the nano-dollar; a price change leaves earlier
records' cost unchanged and applies to later ones; a change scheduled with
`--prices-from` is switched to by the data plane at its time; and
`llmgw model prices --history` lists the changes; `route explain`
estimates with the tier of the estimated input. The official anthropic
and openai SDKs are the clients; the mock reports the usage it is told to
(`x-mock-cache: R,W` cache reads and writes, `x-mock-chunks: N` output
tokens; its prompt tokens are the words of the messages).

Costs are computed here with integers, by the documented rule
(docs/architecture.md, "Prices"): every charge in femto-dollars (a price
in nano-dollars per million tokens times the tokens), summed, rounded half
up to nano-dollars once per request."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import Gateway, uid, wait_until

NANO = 1_000_000_000
MSG = [{"role": "user", "content": "one two three four"}]  # 4 prompt tokens


def nanos(usd: str) -> int:
    """A decimal string of US dollars as integer nano-dollars, exactly."""
    whole, _, frac = usd.partition(".")
    return int(whole or "0") * NANO + int((frac + "0" * 9)[:9])


def cost(prices: dict[str, str], tiers: list[tuple[int, dict[str, str]]], inp: int, read: int,
         write: int, out: int, per_request: str = "0") -> int:
    """The exact cost in nano-dollars of one request."""
    p = prices
    for above, tier in sorted(tiers):
        if inp + read + write > above:
            p = tier
    write_price = p["write"] if nanos(p["write"]) else p["in"]
    femto = (inp * nanos(p["in"]) + read * nanos(p["cached"]) + write * nanos(write_price)
             + out * nanos(p["out"]) + nanos(per_request) * 1_000_000)
    return (femto + 500_000) // 1_000_000


def charged(rec: dict) -> int:
    """A record's cost in nano-dollars, as the data plane computed and the
    control plane stored it (`cost_nanos`); `cost`, for older readers, is
    the same amount over 1e9 (exact as an f64 for any cost below 9 million
    dollars)."""
    exact = int(rec["cost_nanos"])
    assert round(rec["cost"] * NANO) == exact, rec
    return exact


BASE = {"in": "3", "out": "15", "cached": "0.3", "write": "3.75"}
# Above 1000 input tokens (uncached + cache reads + cache writes).
TIER = {"in": "6.000000001", "out": "22.5", "cached": "0.6", "write": "7.5"}
PER_REQUEST = "0.0000015"


def price_flags(p: dict[str, str]) -> list[str]:
    return ["--price-input", p["in"], "--price-output", p["out"],
            "--price-cached-input", p["cached"], "--price-cache-write", p["write"]]


def test_tiered_and_cache_costs_are_exact(gw: Gateway) -> None:
    tier = ",".join([TIER["in"], TIER["out"], TIER["cached"], TIER["write"]])
    model = gw.add_model([f"mocka:tiered-{uid()}"], *price_flags(BASE),
                         "--price-tier", f"1000:{tier}", "--price-per-request", PER_REQUEST,
                         prefix="price")
    _, key = gw.add_key()
    client = gw.anthropic(key, max_retries=0)

    def ask(read: int, write: int, out: int) -> dict:
        raw = client.messages.with_raw_response.create(
            model=model, max_tokens=100, messages=MSG,
            extra_headers={"x-mock-cache": f"{read},{write}", "x-mock-chunks": str(out)})
        raw.parse()
        return gw.log(raw.headers["x-llmgw-request-id"])

    for read, write, out in [
        (500, 496, 7),    # 1000 input tokens: exactly at the threshold, the base prices
        (500, 497, 7),    # 1001: the tier, for every token
        (0, 0, 3),        # no cache at all
        (333, 0, 1),      # reads only: a fraction of a nano-dollar to round
        (10_000, 1, 9),   # far above the threshold
    ]:
        rec = ask(read, write, out)
        assert (rec["input_tokens"], rec["cache_read_tokens"], rec["cache_creation_tokens"],
                rec["output_tokens"]) == (4, read, write, out), rec
        want = cost(BASE, [(1000, TIER)], 4, read, write, out, PER_REQUEST)
        assert charged(rec) == want, (read, write, out, rec["cost"], want)
    # One token over the threshold makes every token dearer (the hand
    # computation above agrees with the gateway on both sides of it).
    assert cost(BASE, [(1000, TIER)], 4, 500, 497, 7) > 1.9 * cost(BASE, [(1000, TIER)], 4, 500, 496, 7)

    # An OpenAI upstream reports cache reads inside its prompt tokens: the
    # data plane counts them once, at the cached price.
    oa_model = gw.add_model([f"mock:cached-{uid()}"], *price_flags(BASE), prefix="price")
    raw = gw.openai(key, max_retries=0).chat.completions.with_raw_response.create(
        model=oa_model, messages=MSG, extra_headers={"x-mock-cache": "250,0", "x-mock-chunks": "5"})
    raw.parse()
    rec = gw.log(raw.headers["x-llmgw-request-id"])
    assert (rec["input_tokens"], rec["cache_read_tokens"], rec["output_tokens"]) == (4, 250, 5), rec
    assert charged(rec) == cost(BASE, [], 4, 250, 0, 5)


def rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_price_change_applies_from_its_time_and_leaves_earlier_costs(gw: Gateway) -> None:
    a = {"in": "1", "out": "2", "cached": "0", "write": "0"}
    b = {"in": "10", "out": "20", "cached": "0", "write": "0"}
    c = {"in": "0.1", "out": "0.2", "cached": "0", "write": "0"}
    model = gw.add_model([f"mock:history-{uid()}"], *price_flags(a), prefix="price")
    _, key = gw.add_key()
    oa = gw.openai(key, max_retries=0)

    def ask() -> dict:
        raw = oa.chat.completions.with_raw_response.create(
            model=model, messages=MSG, extra_headers={"x-mock-chunks": "3"})
        raw.parse()
        return gw.log(raw.headers["x-llmgw-request-id"])

    first = ask()
    assert charged(first) == cost(a, [], 4, 0, 0, 3)
    gw.cli("model", "update", model, *price_flags(b))
    gw.sync()
    second = ask()
    assert charged(second) == cost(b, [], 4, 0, 0, 3)
    # The earlier record keeps the cost it was given.
    assert charged(gw.log(first["id"])) == cost(a, [], 4, 0, 0, 3)

    # A scheduled change: the prices in effect stay until its time, then
    # the data plane switches by itself (no new configuration is pushed).
    # RFC 3339 times are whole seconds; 8 s leave room for the update and
    # one request before it.
    from_ms = (int(time.time()) + 8) * 1000
    gw.cli("model", "update", model, *price_flags(c), "--prices-from", rfc3339(from_ms))
    version = gw.sync()
    records: list[dict] = []

    def switched() -> bool:
        rec = ask()
        records.append(rec)
        return rec["time_ms"] >= from_ms

    wait_until(switched, 30, "a request at or after the scheduled price change", interval=0.2)
    assert gw.config_version() == version, "the switch needed no new configuration"
    assert records[0]["time_ms"] < from_ms, "the first request came after the change's time"
    for rec in records:
        want = cost(c if rec["time_ms"] >= from_ms else b, [], 4, 0, 0, 3)
        assert charged(rec) == want, (rec["time_ms"], from_ms, rec["cost"])

    # The history: the first prices, the change, and the scheduled change,
    # each with its time; the model's prices in effect are now c's.
    shown = gw.cli("model", "prices", model, "--history")
    sheets = [(h["prices"]["sheet"]["input_per_mtok"], h["scheduled"]) for h in shown["history"]]
    assert sheets == [("1", False), ("10", False), ("0.1", False)], shown
    assert shown["history"][2]["from"] == rfc3339(from_ms)
    assert shown["prices"]["sheet"]["input_per_mtok"] == "0.1"
    assert shown["targets"][0]["prices"] is None
    table = gw.cli_raw("model", "prices", model, "--history", json_out=False)
    assert table.returncode == 0, table.stderr
    assert rfc3339(from_ms) in table.stdout and "in effect" in table.stdout, table.stdout
    # Without --history only what is in effect.
    assert gw.cli("model", "prices", model)["history"] == []


def test_a_scheduled_change_is_listed_refused_when_bad_and_cancelled(gw: Gateway) -> None:
    model = gw.add_model([f"mock:later-{uid()}"], "--price-input", "1", "--price-output", "2",
                         prefix="price")
    far = rfc3339((int(time.time()) + 86_400) * 1000)
    gw.cli("model", "update", model, "--price-per-request", "0.01", "--prices-from", far)
    shown = gw.cli("model", "prices", model, "--history")
    assert [h["scheduled"] for h in shown["history"]] == [False, True], shown
    assert shown["history"][1]["prices"]["sheet"]["per_request"] == "0.01"
    # Still the old prices now.
    assert shown["prices"]["sheet"]["input_per_mtok"] == "1"
    assert gw.cli("model", "get", model)["prices"]["sheet"]["per_request"] == ""
    for args, says in [
        (["--price-input", "1", "--prices-from", "2001-01-01T00:00:00Z"], "not in the future"),
        (["--prices-from", far], "prices_from needs prices"),
        (["--price-input", "1", "--prices-from", "tomorrow"], "prices_from"),
    ]:
        p = gw.cli_raw("model", "update", model, *args)
        assert p.returncode != 0 and says in p.stderr, (args, p.stderr)
    p = gw.cli_raw("model", "update", model, "--price-input", "0.0000000001")
    assert p.returncode != 0 and "9 decimal places" in p.stderr, p.stderr
    # A scheduled change can be taken back before its time.
    gw.cli("model", "update", model, "--cancel-scheduled-prices")
    shown = gw.cli("model", "prices", model, "--history")
    assert [h["scheduled"] for h in shown["history"]] == [False], shown


def test_route_explain_estimates_with_the_tier_of_the_estimated_input(gw: Gateway, tmp_path: Path) -> None:
    # Only input prices: 1 USD per 1M tokens (1000 nano-dollars a token)
    # up to 100 input tokens, 2 above. The estimate's input is the data
    # plane's rough count, not shown, so it is read back from the cost: of
    # the two readings only one is consistent with its tier.
    model = gw.add_model([f"mock:explain-{uid()}"], "--price-input", "1", "--price-output", "0",
                         "--price-tier", "100:2,0", prefix="price")
    body = tmp_path / "body.json"

    def estimate(words: int) -> tuple[int, bool]:
        body.write_text(json.dumps({"model": model, "max_tokens": 50,
                                    "messages": [{"role": "user", "content": " ".join(["word"] * words)}]}))
        c = gw.cli("route", "explain", model, "--body", str(body))["candidates"][0]
        estimated = int(c["estimated_cost_nanos"])
        assert round(c["estimated_cost"] * NANO) == estimated, c
        base, tier = estimated / 1000, estimated / 2000
        if base <= 100 and base == int(base):
            return int(base), False
        assert tier > 100 and tier == int(tier), c
        return int(tier), True

    small, small_tiered = estimate(5)
    big, big_tiered = estimate(400)
    assert 0 < small <= 100 and not small_tiered, small
    assert big > 100 and big_tiered, big


def test_a_scheduled_target_price_follows_its_target_when_targets_change(gw: Gateway) -> None:
    """A target's own price scheduled with `--prices-from` is kept by
    target (provider and upstream model), not by position: after the
    targets are reordered, one removed and one added before its time, the
    target it was given for gets it, and the data plane charges it."""
    base = {"in": "1", "out": "2", "cached": "0", "write": "0"}
    own = {"in": "7", "out": "9", "cached": "0", "write": "0"}
    a, b, c = (f"mock:tk-{n}-{uid()}" for n in "abc")
    model = gw.add_model([a, b], *price_flags(base), prefix="price")
    from_ms = (int(time.time()) + 6) * 1000
    gw.cli("model", "update", model, "--target-price", "2:7,9", "--prices-from", rfc3339(from_ms))
    # Before its time: b first, a gone, c new where b was. By position,
    # c would get b's price and b, which serves, the model's.
    gw.cli("model", "update", model, "--target", b, "--target", c)
    _, key = gw.add_key()
    version = gw.sync()
    shown = gw.cli("model", "prices", model, "--history")
    (later,) = [h for h in shown["history"] if h["scheduled"]]
    assert [(t["number"], t["upstream_model"]) for t in later["targets"]] == [(1, b.split(":", 1)[1])], later
    assert list(later["target_prices"]) == ["1"], later
    table = gw.cli_raw("model", "prices", model, "--history", json_out=False)
    assert f"target 1 ({b}) 7/9" in table.stdout, table.stdout

    oa = gw.openai(key, max_retries=0)
    records: list[dict] = []

    def switched() -> bool:
        raw = oa.chat.completions.with_raw_response.create(
            model=model, messages=MSG, extra_headers={"x-mock-chunks": "3"})
        raw.parse()
        records.append(gw.log(raw.headers["x-llmgw-request-id"]))
        return records[-1]["time_ms"] >= from_ms

    wait_until(switched, 30, "a request at or after the scheduled price change", interval=0.2)
    assert gw.config_version() == version
    for rec in records:
        assert rec["upstream_model"] == b.split(":", 1)[1], rec
        want = cost(own if rec["time_ms"] >= from_ms else base, [], 4, 0, 0, 3)
        assert charged(rec) == want, (rec["time_ms"], from_ms, rec["cost"])


def test_the_cli_sets_every_billing_mode_on_a_target(gw: Gateway) -> None:
    """`--target-price-*` give a target every mode the model's `--price-*`
    flags have; the data plane charges a target's own per-request price."""
    model = gw.add_model(
        [f"mock:modes-{uid()}", f"mock:modes-{uid()}"], "--price-input", "1", "--price-output", "2",
        "--target-price", "1:3,15,0.3,3.75",
        "--target-price-tier", "1:1000:6,22.5",
        "--target-price-per-request", "1:0.0000015",
        "--target-price-per-image", "2:1024x1024/high=0.167",
        "--target-price-per-image", "2:*=0.04",
        "--target-price-per-second", "2:0.0001",
        "--target-price-per-mchar", "2:15",
        prefix="price")
    targets = gw.cli("model", "get", model)["targets"]
    one, two = (t["prices"]["sheet"] for t in targets)
    assert (one["input_per_mtok"], one["output_per_mtok"], one["cached_input_per_mtok"],
            one["cache_write_per_mtok"], one["per_request"]) == ("3", "15", "0.3", "3.75", "0.0000015"), one
    assert [(t["above_input_tokens"], t["input_per_mtok"], t["output_per_mtok"]) for t in one["tiers"]] \
        == [(1000, "6", "22.5")], one
    assert (two["input_per_mtok"], two["per_image"], two["per_audio_second"], two["per_mchar"]) \
        == ("0", {"1024x1024/high": "0.167", "*": "0.04"}, "0.0001", "15"), two

    _, key = gw.add_key()
    raw = gw.openai(key, max_retries=0).chat.completions.with_raw_response.create(
        model=model, messages=MSG, extra_headers={"x-mock-chunks": "3"})
    raw.parse()
    rec = gw.log(raw.headers["x-llmgw-request-id"])
    own = {"in": "3", "out": "15", "cached": "0.3", "write": "3.75"}
    assert charged(rec) == cost(own, [], 4, 0, 0, 3, "0.0000015"), rec

    # An update of the current targets: target 2's flags make its whole
    # sheet, target 1 keeps its own; `N:` gives target 1 the model's again.
    gw.cli("model", "update", model, "--target-price-per-second", "2:0.0002")
    one, two = (t["prices"]["sheet"] for t in gw.cli("model", "get", model)["targets"])
    assert one["per_request"] == "0.0000015"
    assert (two["per_audio_second"], two.get("per_image") or {}, two["per_mchar"]) == ("0.0002", {}, ""), two
    gw.cli("model", "update", model, "--target-price", "1:")
    assert gw.cli("model", "get", model)["targets"][0]["prices"] is None
    for args, says in [
        (["--target-price-per-request", "3:0.1"], "there are only 2 targets"),
        (["--target-price", "1:", "--target-price-per-mchar", "1:1"], "clears target 1's prices"),
        (["--target-price-tier", "1:x:1,2"], "--target-price-tier x:1,2: the threshold"),
    ]:
        p = gw.cli_raw("model", "update", model, *args)
        assert p.returncode != 0 and says in p.stderr, (args, p.stderr)
