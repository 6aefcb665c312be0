"""No request log is lost or duplicated when the control plane is killed
(SIGKILL) in the middle of a burst and restarted on the same port and data
dir: the data plane keeps serving and ships its spool afterwards.

The burst runs in three phases: before the kill, while the control plane is
down, and after it is back."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx

from conftest import Gateway

N = 200
KILL_AT = 80  # requests done before the SIGKILL
RESTART_AT = 140  # requests done before the restart
WORKERS = 8


def test_no_log_lost_across_a_control_plane_kill(make_gateway) -> None:
    gw: Gateway = make_gateway("nolost")
    model = gw.add_model(["mock:burst"], "--max-attempts", "1")
    key_name, key = gw.add_key()

    lock = threading.Lock()
    done = 0
    reached = {KILL_AT: threading.Event(), RESTART_AT: threading.Event()}
    killed = threading.Event()
    restarted = threading.Event()
    tls = threading.local()

    def run(i: int) -> tuple[int, str]:
        nonlocal done
        # Tasks are taken in order, so a gated task never holds back an
        # earlier one.
        if i >= RESTART_AT:
            assert restarted.wait(60)
        elif i >= KILL_AT:
            assert killed.wait(60)
        if not hasattr(tls, "c"):
            tls.c = httpx.Client(timeout=30)
        r = tls.c.post(
            f"{gw.url}/v1/chat/completions",
            headers={"authorization": f"Bearer {key}", "x-mock-latency-ms": "5"},
            json={
                "model": model,
                "messages": [{"role": "user", "content": f"burst {i}"}],
                "stream": i % 3 == 0,
            },
        )
        _ = r.content
        with lock:
            done += 1
            for at, ev in reached.items():
                if done >= at:
                    ev.set()
        return r.status_code, r.headers.get("x-llmgw-request-id", "")

    with ThreadPoolExecutor(WORKERS) as pool:
        futures = [pool.submit(run, i) for i in range(N)]
        try:
            assert reached[KILL_AT].wait(60), "the first phase of the burst did not finish"
            gw.kill_control_plane()
            killed.set()
            assert reached[RESTART_AT].wait(60), "requests stalled while the control plane was down"
            gw.restart_control_plane()
        finally:
            killed.set()
            restarted.set()
        results = [f.result(timeout=120) for f in futures]

    statuses = [s for s, _ in results]
    assert statuses == [200] * N, [s for s in statuses if s != 200]
    sent_ids = [rid for _, rid in results]
    assert all(sent_ids) and len(set(sent_ids)) == N

    recs = gw.key_logs(key_name, N, timeout=60)
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids)), "duplicate record ids"
    assert len(ids) == N, f"expected {N} records, got {len(ids)}"
    missing = set(sent_ids) - set(ids)
    assert not missing, f"{len(missing)} request ids have no record, e.g. {sorted(missing)[:3]}"
    # Nothing more arrives later (a resent batch stored twice): the data
    # plane is connected again and has had a round trip with the control
    # plane by the time sync() returns.
    gw.sync()
    again = gw.logs("--key", key_name, "--limit", "1000")
    assert len(again) == N and len({r["id"] for r in again}) == N
