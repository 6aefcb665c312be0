"""`llmgw logs export` (#18): a million request logs go from the control
plane to a Parquet file in bounded memory (the CLI's and the control
plane's peak RSS are measured), and the file reads back with pyarrow with
the same rows and values; CSV and JSON lines with filters match the store.

The million rows are written straight into the gateway's SQLite store (an
export reads stored rows; shipping them through a data plane would only
make the test slower), beside records of real requests made with the
official openai SDK."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from conftest import Gateway, GatewayFactory, base_env, binary

ROWS = 1_000_000
# Far below what a whole export in memory takes (a million decoded records
# are about a gigabyte), far above what a page or a row group needs.
CLI_RSS_BOUND_MB = 300
CP_RSS_GROWTH_BOUND_MB = 150
MSG = [{"role": "user", "content": "hello there"}]
EXPORT_TIMEOUT_S = 900
BASE_MS = 1_700_000_000_000


def vm_hwm_mb(pid: int) -> float:
    """A process's peak resident memory so far, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def export(gw: Gateway, *args: str) -> tuple[float, str]:
    """Runs `llmgw logs export ARGS`; its peak RSS in MiB and its stderr
    (with its CPU time appended)."""
    argv = [binary("llmgw"), "--server", f"http://{gw.cp_addr}", "logs", "export", *args]
    p = subprocess.Popen(argv, env=base_env(LLMGW_ADMIN_TOKEN=gw.admin_token), cwd=gw.workdir,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert p.stderr is not None
    # A hung export is killed (and then fails below) rather than hanging the suite.
    watchdog = threading.Timer(EXPORT_TIMEOUT_S, p.kill)
    watchdog.start()
    try:
        err = p.stderr.read().decode()
        _, status, usage = os.wait4(p.pid, 0)
    finally:
        watchdog.cancel()
    p.returncode = os.waitstatus_to_exitcode(status)
    assert p.returncode == 0, err
    return usage.ru_maxrss / 1024, f"{err}(CPU {usage.ru_utime + usage.ru_stime:.1f} s)"


@pytest.fixture(scope="module")
def gwx(make_gateway: GatewayFactory) -> Gateway:
    return make_gateway("export")


@pytest.fixture(scope="module")
def seeded(gwx: Gateway) -> dict[str, Any]:
    model = gwx.add_model([f"{gwx.mock_provider('openai')}:gpt-export"])
    _, key = gwx.add_key()
    oa = gwx.openai(key)
    real = [oa.chat.completions.with_raw_response.create(model=model, messages=MSG),
            oa.chat.completions.with_raw_response.create(model=model, messages=MSG, stream=True)]
    ids = [r.headers["x-llmgw-request-id"] for r in real]
    for r in real:
        r.parse()
    records = {rid: gwx.log(rid) for rid in ids}
    db = sqlite3.connect(gwx.data_dir / "llmgw.db", timeout=30)
    # Ids are stored as their UUID's 16 bytes (controlplane/src/logs/row.rs
    # `stored_id`); Debian's SQLite predates unhex().
    db.create_function("uuid_bytes", 1, lambda i: bytes.fromhex(f"00000000000070008000{i:012x}"),
                       deterministic=True)
    with db:
        db.execute(
            """
            WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
            INSERT INTO request_logs (id, time_ms, node_id, sequence, key_name, protocol, model,
                                      provider, upstream_model, status, stream, latency_ms,
                                      ttfb_ms, input_tokens, output_tokens, usage_source, cost,
                                      error)
            SELECT uuid_bytes(i), ? + i, 'bulk', i, 'bulk-key',
                   'openai-chat', 'bulk-' || (i % 7), 'mock', 'gpt',
                   CASE WHEN i % 50 = 0 THEN 500 ELSE 200 END, i % 2, i % 3000, i % 300,
                   i % 1000, i % 500, 'upstream', (i % 1000) * 0.000001,
                   CASE WHEN i % 50 = 0 THEN 'upstream answered 500, "a" \n b' ELSE '' END
            FROM n
            """,
            (ROWS - 1, BASE_MS),
        )
    total, tokens = db.execute("SELECT COUNT(*), SUM(input_tokens) FROM request_logs").fetchone()
    db.close()
    assert total == ROWS + len(ids)
    return {"ids": ids, "records": records, "total": total, "tokens": tokens, "model": model}


def test_a_million_records_to_parquet_in_bounded_memory(gwx: Gateway, seeded: dict[str, Any],
                                                        tmp_path: Path) -> None:
    assert gwx.cp is not None
    cp_before = vm_hwm_mb(gwx.cp.pid)
    out = tmp_path / "logs.parquet"
    cli_rss, err = export(gwx, "--file", str(out))
    cp_growth = vm_hwm_mb(gwx.cp.pid) - cp_before
    print(f"export of {seeded['total']} records: {err.strip()}; CLI peak RSS {cli_rss:.0f} MiB, "
          f"control plane peak RSS +{cp_growth:.0f} MiB, file {out.stat().st_size / 1e6:.1f} MB")
    assert f"exported {seeded['total']} records" in err, err
    assert not (tmp_path / "logs.parquet.partial").exists()
    assert cli_rss < CLI_RSS_BOUND_MB, cli_rss
    assert cp_growth < CP_RSS_GROWTH_BOUND_MB, cp_growth

    f = pq.ParquetFile(out)
    assert f.metadata.num_rows == seeded["total"]
    assert f.metadata.num_row_groups > 1  # written a row group at a time
    t = f.read(columns=["id", "time", "time_ms", "model", "status", "outcome", "input_tokens",
                        "cost", "cost_nanos", "error", "stream", "attempts", "key"])
    times = t.column("time_ms").to_pylist()
    assert times == sorted(times)  # oldest first
    assert sum(t.column("input_tokens").to_pylist()) == seeded["tokens"]
    assert str(t.schema.field("time").type) == "timestamp[ms, tz=UTC]"
    # The bulk rows' values, row 50 (a 500 with an error).
    rows = t.slice(50, 1).to_pylist()[0]
    assert rows["id"] == "00000000-0000-7000-8000-000000000032"
    assert rows["model"] == "bulk-1" and rows["status"] == 500 and rows["input_tokens"] == 50
    assert rows["error"] == 'upstream answered 500, "a" \n b' and rows["stream"] is False
    assert abs(rows["cost"] - 50e-6) < 1e-12
    assert rows["cost_nanos"] == 50_000  # exact, in nano-dollars
    # The real requests' values are those `llmgw logs get` shows.
    by_id = {r["id"]: r for r in t.slice(seeded["total"] - 2).to_pylist()}
    for rid, rec in seeded["records"].items():
        row = by_id[rid]
        assert row["model"] == rec["model"] == seeded["model"]
        assert row["status"] == rec["status"] == 200
        assert row["outcome"] == rec["outcome"] == "ok"
        assert row["input_tokens"] == rec["input_tokens"]
        assert row["cost"] == rec["cost"]
        assert row["cost_nanos"] == int(rec.get("costNanos", rec.get("cost_nanos", 0)))
        assert row["attempts"] == len(rec["attempts"]) == 1
        assert row["stream"] == rec["stream"]


def test_csv_and_json_lines_with_filters(gwx: Gateway, seeded: dict[str, Any], tmp_path: Path) -> None:
    since = BASE_MS + 100_000
    until = BASE_MS + 200_000
    window = ["--since", str_time(since), "--until", str_time(until), "--model", "bulk-3"]
    csv_path = tmp_path / "logs.csv"
    export(gwx, *window, "--file", str(csv_path))
    want = [i for i in range(100_000, 200_000) if i % 7 == 3]
    import csv

    with csv_path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(want)
    assert [int(r["time_ms"]) - BASE_MS for r in rows] == want
    errs = [r for r in rows if r["status"] == "500"]
    assert errs and all(r["error"] == 'upstream answered 500, "a" \n b' for r in errs)

    jl = tmp_path / "errors.jsonl"
    export(gwx, *window, "--status", "5xx", "--file", str(jl))
    lines = [json.loads(x) for x in jl.read_text().splitlines()]
    assert [x["time_ms"] - BASE_MS for x in lines] == [i for i in want if i % 50 == 0]
    assert all(x["status"] == 500 and x["key"] == "bulk-key" for x in lines)

    # A bad filter is the command's error, and leaves no file.
    bad = tmp_path / "bad.csv"
    p = subprocess.run([binary("llmgw"), "--server", f"http://{gwx.cp_addr}", "logs", "export",
                        "--trace-id", "nothex", "--file", str(bad)],
                       env=base_env(LLMGW_ADMIN_TOKEN=gwx.admin_token), capture_output=True, text=True,
                       timeout=60)
    assert p.returncode != 0 and "trace" in p.stderr.lower(), p.stderr
    assert not bad.exists() and not Path(str(bad) + ".partial").exists()


def str_time(ms: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).isoformat().replace("+00:00", "Z")
