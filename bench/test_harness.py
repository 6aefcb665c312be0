"""Unit tests of the figures bench/harness.py computes (no processes are
started): `python3 -m pytest bench/test_harness.py`."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402


def test_streams_fit_two_descriptors_each_after_the_reserve():
    assert harness.streams_that_fit(10_000, 65_536) == 10_000
    # Exactly enough: 256 + 2 x 10,000.
    assert harness.streams_that_fit(10_000, 20_256) == 10_000
    # One short: rounded down to the step.
    assert harness.streams_that_fit(10_000, 20_255) == 9_900
    assert harness.streams_that_fit(10_000, 20_000) == 9_800
    assert harness.streams_that_fit(10_000, 1_024) == 300
    assert harness.streams_that_fit(10_000, 100) == 0


def test_open_rss_leaves_out_the_end_of_the_streams():
    series = [(0.0, 100), (1.0, 400), (9.9, 500), (10.0, 900), (11.0, 300)]
    # Streams of 10 s: nothing ends before 10 s.
    assert harness.open_rss_kib(series, 10.0) == 500
    assert harness.open_rss_kib(series, 0.0) is None


def test_per_stream_and_projection():
    # 10 MiB before, 110 MiB with 1,000 open: 102.4 KiB each.
    before, during = 10 * 1024, 110 * 1024
    per = harness.per_stream_kib(before, during, 1_000)
    assert abs(per - 102.4) < 1e-9
    assert harness.per_stream_kib(before, None, 1_000) is None
    assert harness.per_stream_kib(before, during, 0) is None
    # 10 MiB + 10,000 x 102.4 KiB = 1,010 MiB.
    assert abs(harness.projected_mib(before, per, 10_000) - 1010.0) < 1e-9
    assert harness.projected_mib(before, None, 10_000) is None


def _round(per, before=10_240, open_kib=None, streams=9_800):
    return {"streams": streams, "max_open": streams, "errors": 0, "before_rss_kib": before,
            "open_rss_kib": open_kib or before + per * streams, "peak_rss_kib": before + per * streams + 1,
            "per_stream_kib": per}


def test_s5_summary_ratios_are_per_round_against_nginx():
    raw = {"nginx": [_round(10.0), _round(20.0)], "llmgw": [_round(50.0), _round(60.0)]}
    s = harness.summarize_s5_many(raw)
    # Round 1: 50 / 10, round 2: 60 / 20.
    assert s["llmgw"]["per_stream_vs_nginx"]["min"] == 3.0
    assert s["llmgw"]["per_stream_vs_nginx"]["max"] == 5.0
    assert s["llmgw"]["per_stream_kib"]["median"] == 55.0
    assert s["nginx"]["per_stream_vs_nginx"]["median"] == 1.0
    # 10 MiB + 10,000 x 50 KiB and x 60 KiB.
    assert s["llmgw"]["projected_mib"]["min"] == (10_240 + 500_000) / 1024
    assert s["llmgw"]["streams"] == 9_800


def test_the_bar_uses_the_projection_only_when_fewer_streams_were_measured():
    def bar_for(streams):
        raw = {"nginx": [_round(10.0, streams=streams)],
               "llmgw": [_round(90.0, streams=streams, open_kib=2_000_000)]}
        S = {"S5-many": harness.summarize_s5_many(raw)}
        return {c["target"]: c for c in harness.bar(S)}

    measured = bar_for(10_000)["S5 10,000 streams in ≤ 1 GiB"]
    assert measured["value"] == 2_000_000 / 1024
    assert measured["met"] is False
    projected = bar_for(9_800)["S5 10,000 streams in ≤ 1 GiB"]
    assert projected["value"] == (10_240 + 900_000) / 1024
    assert projected["met"] is True
    assert "projected from 9,800" in projected["shown"]
    assert bar_for(9_800)["S5 ≤ 100 KiB per open stream"]["met"] is True


def test_s7_config_holds_n_models_and_keys_in_all():
    export = {
        "models": [{"name": "bench", "targets": [{"provider": "p"}]}, {"name": "bench-chat"}],
        "api_keys": [{"name": "bench-key", "hash": "0" * 64, "prefix": "sk-llmgw-abcd", "models": ["bench"]}],
        "providers": [{"name": "p"}],
    }
    cfg = harness.make_big_config(export, 10_000)
    assert len(cfg["models"]) == 10_000
    assert len(cfg["api_keys"]) == 10_000
    names = [m["name"] for m in cfg["models"]]
    assert len(set(names)) == 10_000
    assert "bench-s7-0" in names and "bench" in names
    assert cfg["models"][2]["targets"] == [{"provider": "p"}]
    assert len({k["hash"] for k in cfg["api_keys"]}) == 10_000
    # The export is left as it was.
    assert len(export["models"]) == 2
    # A configuration already at n still gets the model S7 changes.
    assert "bench-s7-0" in [m["name"] for m in harness.make_big_config(export, 2)["models"]]


def test_a_stat_line_is_read_around_a_name_with_parentheses_and_spaces():
    line = "4242 (tokio (rt) w) S 1 2 3 4 5 6 7 8 9 10 111 222 13 14 20 0\n"
    assert harness.parse_stat(line) == ("tokio (rt) w", 111, 222)


def test_the_cpu_split_is_per_request_in_microseconds():
    hz = harness.CLK_TCK
    # One second of user time and half a second of system time over
    # 100,000 requests: 10 and 5 µs each; a fifth of a second in the spool.
    split = harness.cpu_split_us(hz, hz // 2, hz // 5, 100_000)
    assert split == {"user": 10.0, "system": 5.0, "spool": 2.0}
    assert harness.cpu_split_us(hz, 0, None, 100_000)["spool"] is None
    assert harness.cpu_split_us(1, 1, 1, 0) is None


def test_the_split_summary_takes_each_part_s_median_over_rounds():
    rounds = [{"user": 30.0, "system": 10.0, "spool": 4.0},
              {"user": 34.0, "system": 12.0, "spool": 5.0},
              None,
              {"user": 32.0, "system": 11.0, "spool": 6.0}]
    s = harness.split_summary(rounds)
    assert s["user"] == {"median": 32.0, "min": 30.0, "max": 34.0, "n": 3}
    assert s["spool"]["median"] == 5.0
    assert harness.split_cell(s) == "32.0 / 11.0 (5.0)"
    floor = harness.split_summary([{"user": 15.0, "system": 15.0, "spool": None}])
    assert harness.split_cell(floor) == "15.0 / 15.0"
    assert harness.split_cell(None) == "—"


def test_a_spool_thread_is_told_apart_from_none(tmp_path, monkeypatch):
    # A process's threads as /proc shows them: one spool thread that has
    # used no time yet still counts as a spool thread (0, not None).
    task = tmp_path / "42" / "task"
    for tid, name, user, system in ((42, "box-dp", 7, 3), (43, "llmgw-spool", 0, 0)):
        (task / str(tid)).mkdir(parents=True)
        (task / str(tid) / "stat").write_text(
            f"{tid} ({name}) S 1 2 3 4 5 6 7 8 9 10 {user} {system} 13 14\n")
    real_listdir, real_open = os.listdir, open

    def fake(path):
        return str(path).replace("/proc", str(tmp_path), 1)

    monkeypatch.setattr(harness.os, "listdir", lambda p: real_listdir(fake(p)))
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: real_open(fake(p), *a, **k))
    assert harness.thread_ticks(42, "llmgw-spool") == 0
    assert harness.thread_ticks(42, "box-dp") == 10
    assert harness.thread_ticks(42, "nginx") is None
    assert harness.thread_ticks(7, "llmgw-spool") is None


def test_logging_lines_give_what_full_logging_adds_over_each_mode():
    out = {"llmgw": {"instructions_per_request": 88_000.0},
           "logging": {"no_bodies": {"instructions_per_request": 80_000.0, "ratio_to_nginx": 3.64},
                       "off": {"instructions_per_request": 70_400.0, "ratio_to_nginx": None}}}
    lines = harness.logging_lines(out)
    assert lines["records without bodies"] == (
        "80000 instructions per request (3.64x nginx); full logging adds 8000 (10.0%)")
    assert lines["request log off"] == (
        "70400 instructions per request; full logging adds 17600 (25.0%)")
    out["logging"]["off"]["instructions_per_request"] = None
    assert harness.logging_lines(out)["request log off"] == "no count in the dump"


def test_the_log_off_plane_gets_the_run_flags_and_its_own_dump_file(tmp_path):
    assert harness.logging_off_args(None) == ["--request-log", "off"]
    assert harness.logging_off_args("--spool-wait-ms 0") == [
        "--spool-wait-ms", "0", "--request-log", "off"]
    for given in ("--request-log metadata", "--request-log=off"):
        try:
            harness.logging_off_args(given)
        except ValueError:
            continue
        raise AssertionError(f"{given!r} was let through")
    main = str(tmp_path / "callgrind-X.out")
    off = harness.logging_off_dump(main)
    assert off == str(tmp_path / "callgrind-X-off.out")
    for name in ("callgrind-X.out.1", "callgrind-X-off.out.1", "callgrind-X-off.out.2"):
        (tmp_path / name).write_text("")
    assert harness.dumps_of(main) == [str(tmp_path / "callgrind-X.out.1")]
    assert sorted(harness.dumps_of(off)) == [str(tmp_path / "callgrind-X-off.out.1"),
                                             str(tmp_path / "callgrind-X-off.out.2")]


def test_floor_dumps_sit_beside_the_runs_own_and_ratios_need_both_counts(tmp_path):
    main = str(tmp_path / "callgrind-Y.out")
    names = {t: harness.beside_dump(main, t) for t in ("nginx", "floor")}
    assert names == {"nginx": str(tmp_path / "callgrind-Y-nginx.out"),
                     "floor": str(tmp_path / "callgrind-Y-floor.out")}
    for name in ("callgrind-Y.out.1", "callgrind-Y-nginx.out.1", "callgrind-Y-floor.out.1"):
        (tmp_path / name).write_text("")
    assert harness.dumps_of(main) == [str(tmp_path / "callgrind-Y.out.1")]
    assert harness.dumps_of(names["floor"]) == [str(tmp_path / "callgrind-Y-floor.out.1")]
    assert harness.ratio_to(44_000.0, 22_000.0) == 2.0
    for v, base in ((None, 22_000.0), (44_000.0, None), (0.0, 22_000.0), (44_000.0, 0.0)):
        assert harness.ratio_to(v, base) is None


def test_records_per_batch_is_the_ratio_of_what_was_acknowledged_between_two_counts():
    assert harness.records_per_batch((100.0, 10.0), (400.0, 30.0)) == 15.0
    # A build without the counters, or no batch acknowledged in between.
    assert harness.records_per_batch(None, (400.0, 30.0)) is None
    assert harness.records_per_batch((100.0, 10.0), None) is None
    assert harness.records_per_batch((100.0, 10.0), (100.0, 10.0)) is None


def test_the_control_plane_s_core_is_recorded_as_the_flags_put_it():
    class A:
        pass

    a = A()
    assert harness.control_plane_pinning(a) == f"{harness.LOAD_CORE} (SCHED_IDLE)"
    a.control_plane_beside = True
    assert harness.control_plane_pinning(a) == f"{harness.SUT_CORE}, beside the data plane"
    a.control_plane_idle = True
    assert harness.control_plane_pinning(a) == f"{harness.SUT_CORE}, beside the data plane (SCHED_IDLE)"


def test_the_scrape_handler_s_inclusive_cost_is_counted_from_its_callers_lines():
    # The dump's lines say what each case is; s8.rs's test reads the same.
    with open(os.path.join(os.path.dirname(__file__), "testdata", "scrape-dump.txt")) as f:
        dump = f.read()
    assert harness.scrape_instructions(dump) == 3500
    assert harness.scrape_instructions(dump, "no::such::handler") == 0
    # Two positions and two events: the cost is the third column.
    wide = "positions: instr line\nevents: Dr Ir\nfn=(1) a\ncfn=(2) h\ncalls=1 0\n0x20 7 300 1000\n"
    assert harness.scrape_instructions(wide, "h") == 1000
