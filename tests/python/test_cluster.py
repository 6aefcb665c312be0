"""Scale-out on one machine (issue 6, section 5): several data planes behind
Debian's nginx, control planes in HA on one PostgreSQL database, rolling
restarts and hard kills under steady load from the official openai SDK.

Every test has a PostgreSQL database of its own (LLMGW_TEST_POSTGRES_URL,
scripts/pg.sh) and its own processes (tests/python/cluster.py). The load is a
few SDK clients without retries, so every failure is seen; each request's id
(x-llmgw-request-id) and the data plane that served it (nginx's
X-Upstream-Addr) are recorded, and the stored log records are compared with
them one by one.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterable

import httpx
import openai
import pytest

from cluster import Cluster, DataPlane, Load, Result, describe_failures, read_spool
from conftest import SYNC_TIMEOUT, json_log_field, uid, wait_until

#: The issue's bound for a configuration change to reach every data plane.
PROPAGATION_BOUND = 1.0
#: Mock knobs: a little latency so requests overlap with what the test does.
HEADERS = {"x-mock-latency-ms": "10"}
STREAM_HEADERS = {"x-mock-chunks": "4", "x-mock-chunk-delay-ms": "25"}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterable[Cluster]:
    c = Cluster(tmp_path / "cluster")
    try:
        yield c
    finally:
        c.close()


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def setup_config(c: Cluster, cp, mock, provider: str = "pa") -> tuple[str, str, str, str]:
    """A provider on `mock`, a model on it (one attempt, so nothing hides a
    failure) and a key. Returns (model, upstream model, key name, key)."""
    c.cli(cp, "provider", "add", provider, "--protocol", "openai",
          "--base-url", mock.base_url, "--api-key", c.provider_key)
    model, upstream = f"m-{uid()}", f"up-a-{uid()}"
    c.cli(cp, "model", "add", model, "--target", f"{provider}:{upstream}", "--max-attempts", "1")
    key_name = f"k-{uid()}"
    key = c.cli(cp, "key", "create", key_name)["key"]
    return model, upstream, key_name, key


def served_by(results: Iterable[Result], dp: DataPlane, since: float = 0.0) -> int:
    """Successful requests nginx sent to `dp` that started at or after `since`."""
    return sum(1 for r in results if r.ok and r.upstream == dp.addr and r.start >= since)


def wait_version_within(dps: list[DataPlane], newer_than: int, since: float,
                        bound: float) -> tuple[dict[str, float], str]:
    """Polls each data plane's /readyz until it serves a version newer than
    `newer_than`. Returns the delay (from `since`) at which each got there,
    and a complaint if any took longer than `bound` (then it keeps waiting
    up to SYNC_TIMEOUT, so the rest of the test still runs)."""
    seen: dict[str, float] = {}

    def all_there() -> bool:
        for dp in dps:
            if dp.name not in seen:
                v = dp.readyz()
                if v is not None and v > newer_than:
                    seen[dp.name] = time.monotonic() - since
        return len(seen) == len(dps)

    deadline = since + bound
    while not all_there() and time.monotonic() < deadline:
        time.sleep(0.01)
    problem = ""
    if len(seen) < len(dps) or any(d > bound for d in seen.values()):
        late = sorted(dp.name for dp in dps if seen.get(dp.name, bound + 1) > bound)
        wait_until(all_there, SYNC_TIMEOUT, f"{late} to apply a version newer than {newer_than}")
        problem = (f"the change took more than {bound} s to reach {late}: "
                   + ", ".join(f"{k} {v:.3f} s" for k, v in sorted(seen.items())))
    return seen, problem


def check_logs_equal(c: Cluster, cp, key_name: str, results: list[Result],
                     extra_ids: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The stored records of the key are exactly the requests that got a
    response (plus `extra_ids`): same ids, none missing, none twice."""
    sent = [r.request_id for r in results if r.ok] + list(extra_ids)
    assert all(sent), "a successful response had no x-llmgw-request-id"
    assert len(set(sent)) == len(sent), "two responses carried the same request id"
    recs = c.wait_logs(cp, key_name, set(sent))
    ids = [r["id"] for r in recs]
    dups = sorted({i for i in ids if ids.count(i) > 1})
    assert not dups, f"{len(dups)} request ids stored twice, e.g. {dups[:3]}"
    unknown = sorted(set(ids) - set(sent))
    assert not unknown, f"{len(unknown)} stored records match no response, e.g. {unknown[:3]}"
    assert len(ids) == len(sent), f"{len(sent)} requests answered, {len(ids)} log records"
    return recs


class DirectStream(threading.Thread):
    """One long streamed completion straight to a data plane (not through
    nginx), so that it is certainly in flight when the test acts."""

    def __init__(self, url: str, key: str, model: str, chunks: int, delay_ms: int) -> None:
        super().__init__(daemon=True, name="direct-stream")
        self.client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30,
                                    http_client=httpx.Client(trust_env=False, timeout=30))
        self.model, self.chunks, self.delay_ms = model, chunks, delay_ms
        self.first = threading.Event()
        self.content: list[str] = []
        self.finish: str | None = None
        self.request_id = ""
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            raw = self.client.chat.completions.with_raw_response.create(
                model=self.model, stream=True,
                messages=[{"role": "user", "content": "a long stream"}],
                extra_headers={"x-mock-chunks": str(self.chunks),
                               "x-mock-chunk-delay-ms": str(self.delay_ms)},
            )
            self.request_id = raw.headers.get("x-llmgw-request-id", "")
            for chunk in raw.parse():
                for ch in chunk.choices:
                    if ch.delta.content:
                        self.content.append(ch.delta.content)
                        self.first.set()
                    self.finish = ch.finish_reason or self.finish
        except BaseException as e:  # noqa: BLE001 - checked by the test
            self.error = e
        finally:
            self.first.set()
            self.client.close()


# ---------------------------------------------------------------------------
# Scale-out
# ---------------------------------------------------------------------------


def test_scale_out_route_change_reaches_every_data_plane(cluster: Cluster) -> None:
    """One control plane on PostgreSQL, three data planes behind nginx, a
    steady load through nginx. A model's target moves to another upstream
    mid-way: every data plane applies it within 1 s and each then answers
    from the new upstream; every request is logged exactly once."""
    c = cluster
    mock_a, mock_b = c.mock("mock-a"), c.mock("mock-b")
    cp = c.control_plane()
    model, up_a, key_name, key = setup_config(c, cp, mock_a)
    c.cli(cp, "provider", "add", "pb", "--protocol", "openai",
          "--base-url", mock_b.base_url, "--api-key", c.provider_key)
    up_b = f"up-b-{uid()}"
    dps = [c.data_plane(f"dp{i}", [cp]) for i in range(3)]
    v0 = c.sync(cp)
    listing = c.dataplanes(cp)
    assert all(listing[dp.node_id]["acked_version"] == v0 for dp in dps), listing
    nginx = c.nginx(dps)
    node_of = {dp.addr: dp.node_id for dp in dps}

    load = Load([nginx.url], key, model, workers=4, headers=HEADERS,
                stream_headers=STREAM_HEADERS).start()
    problems: list[str] = []
    try:
        load.wait(lambda rs: all(served_by(rs, dp) >= 5 for dp in dps), 60,
                  "every data plane to serve 5 requests through nginx")
        t_before = time.monotonic()
        c.cli(cp, "model", "update", model, "--target", f"pb:{up_b}")
        t_changed = time.monotonic()
        delays, problem = wait_version_within(dps, v0, t_changed, PROPAGATION_BOUND)
        if problem:
            problems.append(problem)
        t_applied = time.monotonic()
        v1 = c.config_version(cp)
        assert v1 > v0
        for dp in dps:
            assert dp.readyz() == v1, f"{dp.name} serves {dp.readyz()}, the control plane {v1}"
        listing = c.wait_acked(cp, dps, v1)
        load.wait(lambda rs: all(served_by(rs, dp, since=t_applied) >= 5 for dp in dps), 60,
                  "every data plane to serve 5 requests after the change")
    finally:
        results = load.stop()

    assert all(r.ok for r in results), describe_failures(results)
    retried = [r for r in results if "," in r.upstream]
    assert not retried, f"nginx had to retry {len(retried)} requests: {[r.upstream for r in retried[:5]]}"
    assert {r.upstream for r in results} == set(node_of), "a response came from no known data plane"
    # The route: old upstream before the change, new one on every data plane after it.
    before = [r for r in results if r.end < t_before]
    after = [r for r in results if r.start >= t_applied]
    assert before and all(r.model == up_a for r in before), {r.model for r in before}
    assert all(r.model == up_b for r in after), {(r.upstream, r.model) for r in after if r.model != up_b}
    for dp in dps:
        assert served_by(after, dp) >= 5
    # Each request reached an upstream exactly once.
    n_a = sum(r.model == up_a for r in results)
    assert n_a + sum(r.model == up_b for r in results) == len(results)
    assert len(mock_a.requests(up_a)) == n_a
    assert len(mock_b.requests(up_b)) == len(results) - n_a

    recs = check_logs_equal(c, cp, key_name, results)
    served = {r.request_id: r for r in results}
    for rec in recs:
        r = served[rec["id"]]
        assert rec["node_id"] == node_of[r.upstream], (rec["id"], rec["node_id"], r.upstream)
        want = ("pb", up_b) if rec["snapshot_version"] >= v1 else ("pa", up_a)
        assert (rec["provider"], rec["upstream_model"]) == want, rec
        assert rec["upstream_model"] == r.model
    assert {rec["node_id"] for rec in recs if rec["snapshot_version"] == v1} == set(node_of.values())
    print(f"scale-out: {len(results)} requests, change applied after "
          + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in sorted(delays.items())))
    assert not problems, "; ".join(problems)


# ---------------------------------------------------------------------------
# Rolling restart
# ---------------------------------------------------------------------------


def unacked_in_spool(dp: DataPlane) -> int:
    records, acked = read_spool(dp.spool_dir)
    return sum(1 for seq in records.values() if seq > acked)


def test_rolling_restart_under_load_loses_nothing(cluster: Cluster) -> None:
    """Each data plane in turn gets SIGTERM while nginx sends it traffic and
    a long stream is open on it, and is started again (same node id, spool
    folder and port). No request fails, the open stream is served to its
    end, the spool is flushed before exit, and every request is logged once."""
    c = cluster
    mock = c.mock("mock")
    cp = c.control_plane()
    model, up, key_name, key = setup_config(c, cp, mock)
    dps = [c.data_plane(f"dp{i}", [cp]) for i in range(3)]
    version = c.sync(cp)
    # max_fails=0: nginx never takes a data plane out of rotation, so every
    # request may be tried on any data plane's port, and a restarted data
    # plane gets traffic from the moment it accepts connections. That is
    # the strictest passive load balancer: a data plane must refuse (not
    # accept and fail) what it cannot serve, while draining and while
    # starting. Refused connections go to the next one; POSTs are never
    # retried (no non_idempotent), so a keep-alive connection closed under
    # a request would fail it: the draining data plane must prevent that.
    nginx = c.nginx(dps, max_fails=0)

    load = Load([nginx.url], key, model, workers=4, headers=HEADERS,
                stream_headers=STREAM_HEADERS).start()
    started = {dp.name: 0.0 for dp in dps}
    drains: list[tuple[DataPlane, float, float]] = []
    streams: list[DirectStream] = []
    try:
        for dp in dps:
            load.wait(lambda rs: served_by(rs, dp, since=started[dp.name]) >= 5, 60,
                      f"{dp.name} to serve 5 requests through nginx")
            # A stream of about a second, open on this data plane when it is told to stop.
            s = DirectStream(dp.url, key, model, chunks=10, delay_ms=100)
            s.start()
            assert s.first.wait(10) and s.error is None, f"the long stream did not start: {s.error!r}"
            streams.append(s)
            mark = dp.proc.line_count()
            t_term = time.monotonic()
            code = dp.terminate(timeout=30)
            t_exit = time.monotonic()
            drains.append((dp, t_term, t_exit))
            assert code == 0, f"{dp.name} exited with {code} after SIGTERM:\n{dp.proc.tail()}"
            s.join(10)
            assert s.error is None, f"the stream open during the drain of {dp.name} failed: {s.error!r}"
            assert s.finish == "stop" and len(s.content) == 10, (s.finish, s.content)
            report = dp.proc.wait_for(json_log_field("request-log spool flushed", "report"), 1,
                                      "the spool flush report", start=mark)
            m = re.search(r"unacked: (\d+)", str(report))
            assert m and m.group(1) == "0" and "timed_out: false" in str(report), report
            assert unacked_in_spool(dp) == 0, "records left unacknowledged in the spool after a drain"
            dp.start()
            dp.wait_ready(version)
            started[dp.name] = time.monotonic()
        load.wait(lambda rs: all(served_by(rs, dp, since=started[dp.name]) >= 5 for dp in dps), 60,
                  "every restarted data plane to serve 5 requests")
    finally:
        results = load.stop()

    assert all(r.ok for r in results), describe_failures(results)
    # nginx's retries never sent a request upstream twice.
    assert len(mock.requests(up)) == len(results) + len(streams)
    check_logs_equal(c, cp, key_name, results, extra_ids=[s.request_id for s in streams])
    c.wait_acked(cp, dps, version)
    during = sum(1 for dp, t0, t1 in drains for r in results
                 if r.upstream.split(",")[-1].strip() == dp.addr and r.start < t0 < r.end)
    retried = sum(1 for r in results if "," in r.upstream)
    print(f"rolling restart: {len(results)} requests, {during} through nginx in flight at a "
          f"SIGTERM, {retried} retried by nginx on another data plane; drains took "
          + ", ".join(f"{dp.name} {t1 - t0:.2f} s" for dp, t0, t1 in drains))


# ---------------------------------------------------------------------------
# Control planes in HA
# ---------------------------------------------------------------------------


def test_control_planes_in_ha(cluster: Cluster) -> None:
    """Two control planes on one PostgreSQL database. A change made through
    A reaches a data plane on B within 1 s. A is then killed (SIGKILL): the
    data plane that was on A (`--control-plane A,B`) keeps serving its
    snapshot, moves to B, and a later change reaches it."""
    c = cluster
    mock = c.mock("mock")
    cp_a = c.control_plane("cp-a")
    cp_b = c.control_plane("cp-b")
    model, up, key_name, key = setup_config(c, cp_a, mock)
    dp_b = c.data_plane("dp-on-b", [cp_b])
    dp_a = c.data_plane("dp-on-a", [cp_a, cp_b])
    v0 = c.config_version(cp_a)
    assert c.config_version(cp_b) == v0, "the control planes disagree on the version"
    for dp in (dp_a, dp_b):
        dp.wait_ready(v0)
    c.wait_acked(cp_b, [dp_a, dp_b], v0)
    assert dp_a.stream_opened_to() == [cp_a.url], dp_a.stream_opened_to()
    assert dp_b.stream_opened_to() == [cp_b.url], dp_b.stream_opened_to()
    problems: list[str] = []

    # A change made on A reaches the data plane on B within 1 s.
    up2 = f"up-2-{uid()}"
    c.cli(cp_a, "model", "update", model, "--target", f"pa:{up2}")
    t = time.monotonic()
    delays, problem = wait_version_within([dp_b], v0, t, PROPAGATION_BOUND)
    if problem:
        problems.append(f"A -> data plane on B: {problem}")
    v1 = c.config_version(cp_a)
    assert dp_b.readyz() == v1 == c.config_version(cp_b)
    dp_a.wait_ready(v1)

    # Steady load on both data planes while A dies.
    load = Load([dp_a.url, dp_b.url], key, model, workers=2, headers=HEADERS,
                stream_headers=STREAM_HEADERS).start()
    try:
        load.wait(lambda rs: sum(r.ok and r.target == dp_a.url for r in rs) >= 5
                  and sum(r.ok and r.target == dp_b.url for r in rs) >= 5, 60,
                  "5 requests on each data plane")
        assert all(r.model == up2 for r in load.snapshot() if r.ok)
        mark = dp_a.proc.line_count()
        cp_a.kill(signal.SIGKILL)
        t_kill = time.monotonic()
        wait_until(lambda: cp_b.url in dp_a.stream_opened_to(mark), SYNC_TIMEOUT,
                   "the data plane on A to open a discovery stream to B")
        t_moved = time.monotonic()
        assert dp_a.readyz() == v1, "the data plane did not keep its snapshot"
        load.wait(lambda rs: sum(r.ok and r.target == dp_a.url and r.start > t_moved for r in rs) >= 5,
                  60, "5 requests on the moved data plane")
        c.wait_acked(cp_b, [dp_a, dp_b], v1)

        # A later change, made on B, reaches both.
        up3 = f"up-3-{uid()}"
        c.cli(cp_b, "model", "update", model, "--target", f"pa:{up3}")
        t = time.monotonic()
        delays2, problem = wait_version_within([dp_a, dp_b], v1, t, PROPAGATION_BOUND)
        if problem:
            problems.append(f"B after the failover: {problem}")
        t_applied = time.monotonic()
        v2 = c.config_version(cp_b)
        load.wait(lambda rs: all(sum(r.ok and r.target == dp.url and r.start > t_applied for r in rs) >= 3
                                 for dp in (dp_a, dp_b)), 60, "requests after the last change")
    finally:
        results = load.stop()

    assert all(r.ok for r in results), describe_failures(results)
    late = [r for r in results if r.start > t_applied]
    assert late and all(r.model == up3 for r in late), {r.model for r in late}
    listing = c.wait_acked(cp_b, [dp_a, dp_b], v2)
    assert all(listing[dp.node_id]["connected"] for dp in (dp_a, dp_b))
    # A's death cost nothing: every request is logged, through B.
    check_logs_equal(c, cp_b, key_name, results)
    print(f"HA: A -> data plane on B {delays['dp-on-b'] * 1000:.0f} ms; moved to B "
          f"{(t_moved - t_kill) * 1000:.0f} ms after the kill; B -> both "
          + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in sorted(delays2.items())))
    assert not problems, "; ".join(problems)


# ---------------------------------------------------------------------------
# Hard kill
# ---------------------------------------------------------------------------


def test_hard_kill_of_a_data_plane_loses_no_spooled_record(cluster: Cluster) -> None:
    """kill -9 of one data plane of three, mid-load, with records in its
    spool not yet acknowledged (the control plane is paused with SIGSTOP for
    a moment, so they pile up). Only requests in flight on it fail; after a
    restart on the same node id and spool folder it resends the spool, and
    every record that was in it is stored, once."""
    c = cluster
    mock = c.mock("mock")
    cp = c.control_plane()
    model, up, key_name, key = setup_config(c, cp, mock)
    victim, *others = dps = [c.data_plane(f"dp{i}", [cp]) for i in range(3)]
    version = c.sync(cp)
    # Two clients on the victim, one on each of the others, straight to them.
    load = Load([victim.url, others[0].url, victim.url, others[1].url], key, model, workers=4,
                headers=HEADERS, stream_headers=STREAM_HEADERS).start()

    def ok_on(rs: list[Result], dp: DataPlane, since: float = 0.0) -> int:
        return sum(1 for r in rs if r.ok and r.target == dp.url and r.start >= since)

    stopped = False
    try:
        load.wait(lambda rs: all(ok_on(rs, dp) >= 5 for dp in dps), 60, "5 requests on each data plane")
        cp.proc.popen.send_signal(signal.SIGSTOP)
        stopped = True
        t_stop = time.monotonic()
        load.wait(lambda rs: ok_on(rs, victim, since=t_stop) >= 10, 60,
                  "10 requests on the victim while the control plane is paused")
        t_pause = load.pause(victim.url)
        victim.kill9()
        t_kill = time.monotonic()
        spooled, acked = read_spool(victim.spool_dir)
        cp.proc.popen.send_signal(signal.SIGCONT)
        stopped = False
        victim.start()
        victim.wait_ready(version)
        t_back = time.monotonic()
        load.resume(victim.url)
        load.wait(lambda rs: ok_on(rs, victim, since=t_back) >= 5, 60,
                  "5 requests on the restarted victim")
    finally:
        if stopped:
            cp.proc.popen.send_signal(signal.SIGCONT)
        results = load.stop()

    failed = [r for r in results if not r.ok]
    not_in_flight = [r for r in failed if r.target != victim.url or r.start >= t_pause]
    assert not not_in_flight, "requests failed that were not in flight on the killed data plane:\n" \
        + describe_failures(not_in_flight)
    unacked = {rid for rid, seq in spooled.items() if seq > acked}
    assert len(unacked) >= 10, f"only {len(unacked)} unacknowledged records were in the spool"
    ok_ids = {r.request_id for r in results if r.ok}
    # A record reaches the spool just before its response's end: a request
    # cut by the kill after that may have a record (whose id its client may
    # not have learnt, if the response's head had not gone out), and no
    # other can.
    started = {r.request_id for r in results if r.request_id}
    anonymous = sum(1 for r in failed if not r.request_id and r.target == victim.url and r.start <= t_kill)
    strangers = set(spooled) - started
    assert len(strangers) <= anonymous, "the spool holds records of requests that got no response"

    # Every spooled record lands, and so does every answered request: a
    # response's end waits for its record to reach the spool.
    must = ok_ids | set(spooled)
    recs = c.wait_logs(cp, key_name, must)
    ids = [r["id"] for r in recs]
    dups = sorted({i for i in ids if ids.count(i) > 1})
    assert not dups, f"{len(dups)} records stored twice, e.g. {dups[:3]}"
    assert set(ids) - started <= strangers, "records stored for requests that got no response"
    # After a round trip on every stream, nothing more arrives.
    c.sync(cp)
    again = c.logs(cp, key_name)
    assert sorted(r["id"] for r in again) == sorted(ids), "records arrived (or went) late"
    print(f"hard kill: {len(results)} requests, {len(failed)} failed (in flight on the killed data "
          f"plane), {len(spooled)} records in its spool ({len(unacked)} unacknowledged) all stored; "
          f"every answered request has its record")
