#!/usr/bin/env python3
"""The benchmark harness behind bench/run.sh (stdlib only; run.sh builds the
binaries and installs the tools first, then runs this).

It starts the in-repo mock upstream, a control plane (SQLite in a temporary
folder), a data plane and nginx (1 worker, proxy_pass with upstream
keepalive and proxy_buffering off), configures a provider, a model and keys
through the `llmgw` CLI, pins the system under test (the data plane, or
nginx's worker) to core 0 and the mock, the load generators and the control
plane (SCHED_IDLE) to core 1, and runs scenarios S1-S7 of the benchmark
issue against direct (the mock itself), nginx and llmgw in the same run, in
rotating order over several rounds. It prints a table of medians with their
ranges and writes everything to bench/results/<timestamp>.json (and .md).

Scenarios (durations are for a full run; --quick shortens them):
  S1  one request in flight, instant mock, 1 KiB reply: p50/p99, added vs direct
      (and llmgw once more with the control plane paused: a diagnostic row)
  S2  50 ms mock at 500/1000/2000 req/s, open loop, latency-corrected (oha)
  S3  instant mock, 64 connections, closed loop (wrk): req/s, CPU us/req, busy
  S4  64 chunks 20 ms apart, 1/100/500 concurrent streams (llmgw-bench sse)
  S5  RSS idle, and peak while 1,000 streams are open; then 10,000 open streams
      (fewer if the file-descriptor limit cannot hold them) through nginx and a
      fresh data plane: RSS with all of them open, KiB per open stream
  S6  S3 with full request logging (bodies included) vs a second data plane
      started with --request-log off (and a key that logs no bodies between);
      then N requests with a fresh key and the log rows counted (= N)
  S7  10,000 models and 10,000 keys applied; admin change -> /readyz version

Translated routes (S1, S3 and S4, unless --no-routes): beside llmgw's
same-protocol route (OpenAI chat to an `openai` provider), an OpenAI chat
client to a model on an `anthropic` provider, an Anthropic client
(/v1/messages) to the same model (its own same-protocol route), and an
Anthropic client to a model on an `openai-chat` provider, all on the mock,
in the same rotation; each translated route as a ratio to its client's
same-protocol route from the same round. `--callgrind N` counts the
routes' instructions per request too, non-stream and stream.
"""

import argparse
import atexit
import datetime
import hashlib
import json
import os
import platform
import random
import re
import resource
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The release binaries: LLMGW_BENCH_BIN_DIR (or --bin-dir), else the
# release folder of CARGO_TARGET_DIR, else target/release.
BIN = os.environ.get("LLMGW_BENCH_BIN_DIR") or os.path.join(
    os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release")
RESULTS = os.path.join(ROOT, "bench", "results")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

SUT_CORE = "0"
# The bare hyper proxy of S3's diagnostic row.
FLOOR = "hyper-floor"
PEERS = ("litellm",)
# The data plane's /metrics handler. The counts wait for the log to be
# shipped by polling /metrics (`wait_logs_shipped`); what the handler cost
# is taken out of a count (`scrape_instructions`), so that a count is the
# requests' and not the harness's polling, however many polls it took.
SCRAPE_HANDLER = "llmgw_dataplane::server::metrics"
LOAD_CORE = "1"

# S5's many streams: how many, and what each is. One content chunk a
# second per stream keeps 10,000 streams at 10,000 frames a second, which
# one core relays without falling behind; 48 chunks keep every stream open
# until the last of them has been opened (about 500 a second here).
S5_MANY = 10_000
S5_MANY_CHUNKS = 48
S5_MANY_DELAY_MS = 1000
# S5's streams at the log's body cap (64 KiB): 1,000 streams of 380 chunks
# (about 76 KB each) 100 ms apart, so that every capture reaches the cap
# while the streams are open, also a stream that started a few hundred ms
# after the first.
S5_CAPPED = 1_000
S5_CAPPED_CHUNKS = 380
S5_CAPPED_DELAY_MS = 100
# Descriptors a proxy keeps for itself (the data plane's FD_RESERVE in
# dataplane/src/lib.rs): the rest hold two per stream, client and upstream.
S5_FD_RESERVE = 256

# Client APIs of the routes: path and how the key is sent.
API_PATH = {"chat": "/v1/chat/completions", "messages": "/v1/messages"}
ANTHROPIC_VERSION = "2023-06-01"


def request_body(model="bench", api="chat"):
    req = {"model": model, "messages": [{"role": "user", "content": "Hello, how are you today?"}]}
    if api == "messages":
        req["max_tokens"] = 1024  # Anthropic requires it; above any reply here
    return json.dumps(req, separators=(",", ":"))


def key_headers(api, key):
    """The client's key (and version header) as its API sends them."""
    if api == "messages":
        return [f"anthropic-version: {ANTHROPIC_VERSION}"] + ([f"x-api-key: {key}"] if key else [])
    return [f"authorization: Bearer {key}"] if key else []


# Routes through llmgw besides its own column (chat to an `openai`
# provider, model `bench`): name -> client API, model, the client's
# same-protocol route (None: it is one), and its label.
SAME_CHAT = "llmgw"
ROUTES = {
    "llmgw chat>anthropic": {"api": "chat", "model": "bench-anthropic", "baseline": SAME_CHAT,
                             "label": "chat → anthropic"},
    "llmgw messages>anthropic": {"api": "messages", "model": "bench-anthropic", "baseline": None,
                                 "label": "messages → anthropic (same protocol)"},
    "llmgw messages>openai-chat": {"api": "messages", "model": "bench-chat",
                                   "baseline": "llmgw messages>anthropic",
                                   "label": "messages → openai-chat"},
    # The same-protocol route with a limit on its key and one on its model
    # (#15: rpm), far above what the run sends, so the data plane does all
    # the work of admitting (and writing the rate-limit headers) and
    # refuses nothing; and with every kind set on both (rpm, tpm,
    # concurrency, a monthly budget), which adds the token reservation and
    # its settlement, the slot and the budget's charge. They are compared
    # with "llmgw no limits": the same route with a key and a model that
    # have no limits and names as long as theirs (13 characters), since a
    # longer name alone costs a few hundred instructions (the body's scan
    # and model splice, the lookups, the log record).
    "llmgw no limits": {"api": "chat", "model": "bench-nolimit", "key": "bench-nolimit",
                        "baseline": SAME_CHAT,
                        "label": "chat → openai, no limits (names as long as the limited routes')"},
    "llmgw limited": {"api": "chat", "model": "bench-limited", "key": "bench-limited",
                      "baseline": "llmgw no limits",
                      "label": "chat → openai, an rpm limit on key and model", "bar": 1.03},
    "llmgw every limit": {"api": "chat", "model": "bench-all-lim", "key": "bench-all-lim",
                          "baseline": "llmgw no limits",
                          "label": "chat → openai, every kind of limit on key and model",
                          "bar": 1.03},
}

# The limit flags of the key and model of the "llmgw limited" and "llmgw
# every limit" routes.
BENCH_LIMITS = ["--rpm", "1000000000"]
BENCH_EVERY_LIMIT = ["--rpm", "1000000000", "--tpm", "1000000000000", "--max-concurrency", "100000",
                     "--budget", "1000000"]
ROUTE_LABELS = {SAME_CHAT: "chat → openai (same protocol)",
                **{k: v["label"] for k, v in ROUTES.items()}}


REQUEST_BODY = request_body()


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------

STARTED = []


class Proc:
    """A child process in its own session, pinned with taskset."""

    def __init__(self, name, argv, core, env=None, idle=False, logdir=None, capture_stdout=False):
        self.name = name
        cmd = ["taskset", "-c", core]
        if idle:
            cmd += ["chrt", "--idle", "0"]  # SCHED_IDLE: only the core's idle time
        cmd += argv
        out = open(os.path.join(logdir, f"{name}.log"), "wb") if logdir else subprocess.DEVNULL
        self.logfile = out
        self.p = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE if capture_stdout else out,
            stderr=out,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        STARTED.append(self)

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def stop(self, timeout=10):
        if self.p.poll() is not None:
            return
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.p.wait(5)


def stop_all():
    for p in reversed(STARTED):
        try:
            p.stop()
        except Exception as e:  # noqa: BLE001 - best effort at exit
            log(f"stopping {p.name}: {e}")


def parse_stat(text):
    """(name, utime, stime) from the text of a /proc stat file. The name
    sits between the first "(" and the last ")", and may hold either."""
    name = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 1:].split()
    return name, int(fields[11]), int(fields[12])


def cpu_ticks(pid):
    """utime + stime of a whole process (all its threads, dead ones too)."""
    _, user, system = cpu_times(pid)
    return user + system


def cpu_times(pid):
    """(name, utime, stime) of a whole process, dead threads included."""
    with open(f"/proc/{pid}/stat") as f:
        return parse_stat(f.read())


def thread_ticks(pid, name):
    """utime + stime of the live threads of `pid` called `name`, or None
    when it has no such thread (a thread that has exited is counted only
    in its process's total)."""
    total = None
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                n, user, system = parse_stat(f.read())
        except OSError:
            continue
        if n == name:
            total = (total or 0) + user + system
    return total


def cpu_split_us(d_user, d_system, d_spool, requests):
    """Microseconds per request from tick deltas: user, system, and the
    spool thread's part of both (None when the process has none)."""
    if not requests:
        return None
    per = 1e6 / CLK_TCK / requests
    return {"user": d_user * per, "system": d_system * per,
            "spool": d_spool * per if d_spool is not None else None}


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def wait_until(what, pred, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


def load_average():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


# ---------------------------------------------------------------------------
# the stack
# ---------------------------------------------------------------------------


class Stack:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="llmgw-bench-")
        self.logdir = os.path.join(self.tmp, "logs")
        os.makedirs(self.logdir)
        self.admin_token = secrets.token_hex(16)
        self.dp_token = secrets.token_hex(16)
        self.master_key = secrets.token_hex(32)
        self.cp_port = free_port()
        self.dp_port = free_port()
        #: Each data plane's ops port (/metrics), by its client port.
        self.ops_ports = {}
        self.nginx_port = free_port()
        self.keys = {}
        # S5's many streams need two descriptors each in the proxy.
        self.fd_limit = raise_fd_limit()
        self.s5_streams = streams_that_fit(S5_MANY, self.fd_limit)
        if self.s5_streams < S5_MANY:
            log(f"the file-descriptor limit ({self.fd_limit}) holds {self.s5_streams:,} streams "
                f"through a proxy, not {S5_MANY:,}: S5 measures {self.s5_streams:,} and projects "
                f"{S5_MANY:,} (raise the hard limit, e.g. `ulimit -Hn 65536` as root, to measure them)")

    # -- the llmgw CLI ------------------------------------------------------
    def cli(self, *argv, json_out=False, check=True, timeout=600):
        cmd = [os.path.join(BIN, "llmgw")]
        if json_out:
            cmd += ["-o", "json"]
        cmd += list(argv)
        env = {
            **os.environ,
            "LLMGW_SERVER": f"http://127.0.0.1:{self.cp_port}",
            "LLMGW_ADMIN_TOKEN": self.admin_token,
        }
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"llmgw {' '.join(argv)} failed: {r.stderr.strip()}")
        return json.loads(r.stdout) if json_out and r.stdout.strip() else r.stdout

    def start(self):
        a = self.args
        # Mock: instant, 1 KiB non-streaming replies; knobs per request by header.
        self.mock = Proc(
            "mock",
            [os.path.join(BIN, "llmgw-mock"), "--listen", "127.0.0.1:0", "--reply-bytes", "1024",
             "--no-record"],
            LOAD_CORE,
            logdir=None,
            capture_stdout=True,
        )
        line = self.mock.p.stdout.readline().decode().strip()
        m = re.match(r"listening on (\S+)", line)
        if not m:
            raise RuntimeError(f"mock did not say where it listens: {line!r}")
        self.mock_addr = m.group(1)
        # Keep draining the mock's stdout so it never blocks on a full pipe.
        threading.Thread(target=lambda: self.mock.p.stdout.read(), daemon=True).start()
        log(f"mock on {self.mock_addr}")

        # Control plane: off the SUT core and below everything on core 1, so
        # log ingest catches up between measurements instead of competing.
        # It stands for a control plane on a machine of its own: SCHED_IDLE
        # gives it only core 1's idle time, where nice 19 still took a share
        # from the mock and the load generator under S6's full logging (a
        # data plane's core then idled, waiting for its load).
        # With --control-plane-beside (#20 item 4): on the data plane's core
        # at normal priority, as `scripts/run.sh` runs both planes on one
        # small machine: the worst case for the data plane's tail; with
        # --control-plane-idle there at SCHED_IDLE instead.
        cp_env = {"RUST_LOG": "warn"}
        beside = getattr(a, "control_plane_beside", False)
        nice = getattr(a, "control_plane_nice", 0) or 0
        beside_idle = beside and getattr(a, "control_plane_idle", False)
        self.cp = Proc(
            "controlplane",
            (["nice", "-n", str(nice)] if nice else [])
            + [os.path.join(BIN, "llmgw-controlplane"), "--listen", f"127.0.0.1:{self.cp_port}",
             "--data-dir", os.path.join(self.tmp, "cp"), "--admin-token", self.admin_token,
             "--dataplane-token", self.dp_token, "--master-key", self.master_key,
             "--dashboard-dir", os.path.join(self.tmp, "no-dashboard")],
            SUT_CORE if beside else LOAD_CORE,
            env=cp_env,
            idle=beside_idle or not beside,
            logdir=self.logdir,
        )
        wait_until("the control plane", lambda: self.cli("provider", "list", json_out=True) is not None,
                   60, 0.2)
        log(f"control plane on 127.0.0.1:{self.cp_port}")

        self.cli("provider", "add", "mock", "--protocol", "openai", "--base-url",
                 f"http://{self.mock_addr}/v1", "--api-key", "sk-upstream-bench-0000")
        self.cli("model", "add", "bench", "--target", "mock:bench")
        # The translated routes' providers, on the same mock (it speaks
        # every protocol): Anthropic Messages and OpenAI Chat Completions.
        self.cli("provider", "add", "mock-anthropic", "--protocol", "anthropic", "--base-url",
                 f"http://{self.mock_addr}/v1", "--api-key", "sk-upstream-bench-0001")
        self.cli("provider", "add", "mock-chat", "--protocol", "openai-chat", "--base-url",
                 f"http://{self.mock_addr}/v1", "--api-key", "sk-upstream-bench-0002")
        self.cli("model", "add", "bench-anthropic", "--target", "mock-anthropic:bench")
        self.cli("model", "add", "bench-chat", "--target", "mock-chat:bench")
        self.cli("model", "add", "bench-nolimit", "--target", "mock:bench")
        self.cli("model", "add", "bench-limited", "--target", "mock:bench", *BENCH_LIMITS)
        self.cli("model", "add", "bench-all-lim", "--target", "mock:bench", *BENCH_EVERY_LIMIT)
        for name, extra in [("bench-full", []), ("bench-nobodies", ["--no-log-bodies"]),
                            ("bench-count", []), ("bench-streams", []),
                            ("bench-nolimit", []), ("bench-limited", BENCH_LIMITS),
                            ("bench-all-lim", BENCH_EVERY_LIMIT)]:
            self.keys[name] = self.cli("key", "create", name, *extra, json_out=True)["key"]

        self.dp = self.start_dataplane("dataplane", self.dp_port, "bench",
                                       extra=shlex.split(a.dataplane_args or ""))
        log(f"data plane on 127.0.0.1:{self.dp_port}")

        if getattr(a, "callgrind", None):
            return  # callgrind() starts what it measures
        self.start_nginx()
        try:
            self.start_floor()
        except Exception as e:  # noqa: BLE001 - a diagnostic; the columns go on
            log(f"the bare hyper proxy did not start ({e}); S3 goes without it")
            self.floor = None
        if "litellm" in a.peers:
            self.start_litellm()

    def start_dataplane(self, name, port, node_id, extra=(), callgrind_out=None):
        """A data plane on core 0 with its own spool folder, ready; under
        callgrind when the run counts instructions (into `callgrind_out`, by
        default the run's own dump file)."""
        exe = [self.args.dataplane_bin or os.path.join(BIN, "llmgw-dataplane")]
        callgrind_out = callgrind_out or getattr(self.args, "callgrind_out", None)
        if callgrind_out:
            exe = ["valgrind", "--tool=callgrind", "--dump-instr=no",
                   f"--callgrind-out-file={callgrind_out}"] + exe
        p = Proc(
            name,
            exe + ["--listen", f"127.0.0.1:{port}",
                   "--ops-listen", f"127.0.0.1:{self.ops_ports.setdefault(port, free_port())}",
                   "--control-plane", f"http://127.0.0.1:{self.cp_port}", "--node-id", node_id,
                   "--spool-dir", os.path.join(self.tmp, "spool-" + node_id),
                   "--spool-max-bytes", str(16 << 30), *extra],
            SUT_CORE,
            env={"LLMGW_DATAPLANE_TOKEN": self.dp_token, "RUST_LOG": "warn"},
            logdir=self.logdir,
        )
        wait_until(f"the {name}'s /readyz",
                   lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 60)
        return p

    def start_nginx(self, wrap=()):
        """nginx on core 0. Under `wrap` (valgrind) it runs as one process
        (`master_process off`), so that the wrapper follows the worker itself."""
        d = os.path.join(self.tmp, "nginx")
        os.makedirs(d)
        conf = os.path.join(d, "nginx.conf")
        text = NGINX_CONF.format(dir=d, port=self.nginx_port, upstream=self.mock_addr,
                                 nofile=self.fd_limit)
        if wrap:
            text = text.replace("master_process on;", "master_process off;")
        with open(conf, "w") as f:
            f.write(text)
        self.nginx_single = bool(wrap)
        self.nginx = Proc("nginx", list(wrap) + ["nginx", "-p", d + "/", "-e",
                                                  os.path.join(d, "error.log"), "-c", conf],
                          SUT_CORE, logdir=self.logdir)
        wait_until("nginx", lambda: self.nginx_worker(), 15)
        wait_until("nginx to proxy",
                   lambda: post_once(f"127.0.0.1:{self.nginx_port}", "") == 200, 60 if wrap else 15)
        log(f"nginx on 127.0.0.1:{self.nginx_port} (worker pid {self.nginx_worker()})")

    def start_floor(self, exe=()):
        """`llmgw-bench proxy`: the data plane's hyper server and client with
        nothing else, a diagnostic floor for S3 (not a column)."""
        self.floor_port = free_port()
        self.floor = Proc("hyper-floor", list(exe) + [
            os.path.join(BIN, "llmgw-bench"), "proxy", "--listen", f"127.0.0.1:{self.floor_port}",
            "--upstream", self.mock_addr], SUT_CORE, logdir=self.logdir)
        wait_until("the bare hyper proxy",
                   lambda: post_once(f"127.0.0.1:{self.floor_port}", "") == 200, 60)
        log(f"bare hyper proxy on 127.0.0.1:{self.floor_port}")

    def nginx_worker(self):
        if self.nginx_single:
            return self.nginx.pid
        kids = open(f"/proc/{self.nginx.pid}/task/{self.nginx.pid}/children").read().split()
        return int(kids[0]) if kids else None

    def floor_target(self):
        """The bare hyper proxy as a target, or None when it is not running."""
        floor = getattr(self, "floor", None)
        return floor and {"addr": f"127.0.0.1:{self.floor_port}", "key": "", "pid": floor.pid}

    def start_litellm(self):
        venv = os.path.join(ROOT, "bench", ".venv-litellm")
        exe = os.path.join(venv, "bin", "litellm")
        if not os.path.exists(exe):
            log("litellm is not installed in bench/.venv-litellm; skipping the litellm column")
            self.args.peers = [p for p in self.args.peers if p != "litellm"]
            return
        self.litellm_port = free_port()
        # LiteLLM 1.108 refuses to start without a strong master key; the
        # key is checked on every request, as llmgw checks its client keys.
        self.litellm_key = "sk-" + secrets.token_hex(24)
        cfg = os.path.join(self.tmp, "litellm.yaml")
        with open(cfg, "w") as f:
            f.write(LITELLM_CONF.format(upstream=self.mock_addr))
        self.litellm = Proc(
            "litellm",
            [exe, "--config", cfg, "--host", "127.0.0.1", "--port", str(self.litellm_port),
             "--num_workers", "1"],
            SUT_CORE,
            env={"LITELLM_MASTER_KEY": self.litellm_key, "LITELLM_LOG": "ERROR",
                 "LITELLM_TELEMETRY": "False", "DISABLE_SCHEMA_UPDATE": "true"},
            logdir=self.logdir,
        )
        wait_until("litellm", lambda: post_once(f"127.0.0.1:{self.litellm_port}", self.litellm_key) == 200,
                   180, 0.5)
        log(f"litellm on 127.0.0.1:{self.litellm_port}")

    # -- targets ------------------------------------------------------------
    def targets(self):
        t = {
            "direct": {"addr": self.mock_addr, "key": "", "pid": None},
            "nginx": {"addr": f"127.0.0.1:{self.nginx_port}", "key": "", "pid": self.nginx_worker()},
            "llmgw": {"addr": f"127.0.0.1:{self.dp_port}", "key": self.keys["bench-full"],
                      "pid": self.dp.pid},
        }
        if "litellm" in self.args.peers:
            # LiteLLM does not forward x-mock-* headers: its config has one
            # model per mock behaviour, with the headers as extra_headers.
            t["litellm"] = {"addr": f"127.0.0.1:{self.litellm_port}", "key": self.stack_litellm_key(),
                            "pid": self.litellm.pid,
                            "models": {"latency-50": "bench-latency-50",
                                       "stream-64x20": "bench-stream-64x20",
                                       "stream-64x100": "bench-stream-64x100"}}
        return t

    def route_targets(self):
        """llmgw's translated routes (and the Anthropic client's
        same-protocol one) as targets: the data plane, another client API
        or model."""
        chosen = selected_routes(self.args)
        return {k: v for k, v in route_targets(self.targets()["llmgw"], self.keys).items()
                if k in chosen}

    def stack_litellm_key(self):
        return self.litellm_key

    def dp_metric(self, name, port=None):
        # /metrics is served on the ops listener only.
        ops_port = self.ops_ports[port or self.dp_port]
        _, body = http_get(f"http://127.0.0.1:{ops_port}/metrics")
        for line in body.decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return None

    def shipped_counts(self, port=None):
        """(records, batches) the control plane has acknowledged, from the
        data plane's metrics; None from a build without them."""
        records = self.dp_metric("llmgw_log_records_shipped", port)
        batches = self.dp_metric("llmgw_log_batches_shipped", port)
        return None if records is None or batches is None else (records, batches)

    def wait_logs_shipped(self, timeout=300, port=None):
        """Until the data plane's spool is empty: every record stored and ACKed."""
        t0 = time.monotonic()
        wait_until("the request logs to be shipped",
                   lambda: self.dp_metric("llmgw_log_spool_depth", port) == 0, timeout, 0.2)
        return time.monotonic() - t0

    def readyz_version(self):
        _, body = http_get(f"http://127.0.0.1:{self.dp_port}/readyz")
        return json.loads(body)["version"]


NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
worker_rlimit_nofile {nofile};
events {{
    worker_connections 32768;
}}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    upstream mock {{
        server {upstream};
        keepalive 1024;
        keepalive_requests 1000000;
        keepalive_timeout 120s;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""

LITELLM_CONF = """\
model_list:
  - model_name: bench
    litellm_params:
      model: openai/bench
      api_base: http://{upstream}/v1
      api_key: sk-upstream-bench-0000
  - model_name: bench-latency-50
    litellm_params:
      model: openai/bench
      api_base: http://{upstream}/v1
      api_key: sk-upstream-bench-0000
      extra_headers: {{"x-mock-latency-ms": "50"}}
  - model_name: bench-stream-64x20
    litellm_params:
      model: openai/bench
      api_base: http://{upstream}/v1
      api_key: sk-upstream-bench-0000
      extra_headers: {{"x-mock-chunks": "64", "x-mock-chunk-delay-ms": "20"}}
  - model_name: bench-stream-64x100
    litellm_params:
      model: openai/bench
      api_base: http://{upstream}/v1
      api_key: sk-upstream-bench-0000
      extra_headers: {{"x-mock-chunks": "64", "x-mock-chunk-delay-ms": "100"}}
litellm_settings:
  telemetry: false
  callbacks: []
general_settings:
  disable_spend_logs: true
"""


def post_once(addr, key):
    req = urllib.request.Request(
        f"http://{addr}/v1/chat/completions", data=REQUEST_BODY.encode(),
        headers={"content-type": "application/json",
                 **({"authorization": f"Bearer {key}"} if key else {})})
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()
        return r.status


# ---------------------------------------------------------------------------
# load generators
# ---------------------------------------------------------------------------


def oha_path():
    for p in [shutil.which("oha"), os.path.expanduser("~/.cargo/bin/oha")]:
        if p and os.path.exists(p):
            return p
    raise RuntimeError("oha not found (bench/run.sh installs it with cargo install oha)")


def run_oha(target, duration, conns, rate=None, headers=(), n=None, profile=None):
    """`profile` names a mock behaviour a peer that does not forward the
    x-mock-* headers gets through a model of its own instead."""
    api = target.get("api", "chat")
    model = target.get("models", {}).get(profile, target.get("model", "bench"))
    cmd = [oha_path(), "--no-tui", "--output-format", "json", "-c", str(conns), "-m", "POST",
           "-T", "application/json", "-d", request_body(model, api), "-t", "30s", "-w"]
    if n is not None:
        cmd += ["-n", str(n)]
    else:
        cmd += ["-z", f"{duration}s"]
    if rate:
        cmd += ["-q", str(rate), "--latency-correction"]
    for h in key_headers(api, target["key"]) + list(headers):
        cmd += ["-H", h]
    cmd.append(f"http://{target['addr']}{API_PATH[api]}")
    r = subprocess.run(["taskset", "-c", LOAD_CORE] + cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"oha failed: {r.stderr.strip()[:500]}")
    j = json.loads(r.stdout)
    codes = {str(k): v for k, v in (j.get("statusCodeDistribution") or {}).items()}
    ok = codes.get("200", 0)
    errors = sum(v for k, v in codes.items() if k != "200") + sum(
        (j.get("errorDistribution") or {}).values())
    pct = j.get("latencyPercentiles") or {}
    return {
        "ok": ok,
        "errors": errors,
        "error_kinds": j.get("errorDistribution") or {},
        "rps": j["summary"].get("requestsPerSec"),
        "p50_ms": (pct.get("p50") or 0) * 1000,
        "p99_ms": (pct.get("p99") or 0) * 1000,
    }


WRK_LUA = """\
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_KEY")
if os.getenv("BENCH_API") == "messages" then
  wrk.headers["anthropic-version"] = "2023-06-01"
  if key and key ~= "" then
    wrk.headers["x-api-key"] = key
  end
elseif key and key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(stack, target, duration, conns, key=None):
    script = os.path.join(stack.tmp, "post.lua")
    if not os.path.exists(script):
        with open(script, "w") as f:
            f.write(WRK_LUA)
    api = target.get("api", "chat")
    env = {**os.environ, "BENCH_BODY": request_body(target.get("model", "bench"), api),
           "BENCH_API": api, "BENCH_KEY": target["key"] if key is None else key}
    cmd = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "-s", script,
           f"http://{target['addr']}{API_PATH[api]}"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    m = re.search(r"BENCHJSON (\{.*\})", r.stdout)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed: {r.stdout[-500:]} {r.stderr[-500:]}")
    j = json.loads(m.group(1))
    secs = j["duration_us"] / 1e6
    errors = j["connect"] + j["read"] + j["write"] + j["status"] + j["timeout"]
    return {"requests": j["requests"], "seconds": secs, "rps": j["requests"] / secs,
            "errors": errors, "p50_ms": j["p50_us"] / 1000, "p99_ms": j["p99_us"] / 1000}


def run_sse(target, streams, waves, chunks, delay_ms, sample_pid=None, parallelism=64,
            timeout=300):
    model = target.get("models", {}).get(f"stream-{chunks}x{delay_ms}", target.get("model", "bench"))
    cmd = ["taskset", "-c", LOAD_CORE, os.path.join(BIN, "llmgw-bench"), "sse", "--model", model,
           "--api", target.get("api", "chat"),
           "--addr", target["addr"], "--streams", str(streams), "--waves", str(waves),
           "--chunks", str(chunks), "--chunk-delay-ms", str(delay_ms),
           "--connect-parallelism", str(parallelism)]
    if target["key"]:
        cmd += ["--key", target["key"]]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    series = []  # (seconds since the start, RSS KiB)
    t0 = time.monotonic()
    deadline = t0 + timeout
    while p.poll() is None:
        if time.monotonic() > deadline:
            p.kill()
            p.wait()
            raise RuntimeError(f"llmgw-bench sse did not finish within {timeout} s")
        if sample_pid:
            try:
                kib = rss_kib(sample_pid)
                peak = max(peak, kib)
                series.append((time.monotonic() - t0, kib))
            except OSError:
                pass
        time.sleep(0.05)
    out, err = p.communicate()
    if p.returncode != 0:
        raise RuntimeError(f"llmgw-bench sse failed: {err.strip()[:500]}")
    j = json.loads(out)
    j["peak_rss_kib"] = peak
    j["rss_series"] = series
    return j


# ---------------------------------------------------------------------------
# measurement helpers
# ---------------------------------------------------------------------------


# The data plane's request-log spool thread (its I/O: encode, CRC, write).
SPOOL_THREAD = "llmgw-spool"


class Cpu:
    def __init__(self, pid):
        self.pid = pid
        self.t0 = cpu_times(pid) if pid else None
        self.spool0 = thread_ticks(pid, SPOOL_THREAD) if pid else None

    def seconds(self):
        return (cpu_ticks(self.pid) - sum(self.t0[1:])) / CLK_TCK if self.pid else None

    def split_us(self, requests):
        """Per request since the start: user and system time, and the
        spool thread's (None for a process without one)."""
        if not self.pid:
            return None
        _, user, system = cpu_times(self.pid)
        spool = thread_ticks(self.pid, SPOOL_THREAD)
        d_spool = spool - self.spool0 if spool is not None and self.spool0 is not None else None
        return cpu_split_us(user - self.t0[1], system - self.t0[2], d_spool, requests)


class LogCost:
    """What a run's request records cost beyond the data plane, from just
    before the run until they are all shipped: the control plane's CPU
    (its ingest) per request, and the records per batch the data plane
    shipped."""

    def __init__(self, system, port=None):
        self.s, self.port = system, port
        # Earlier runs' records would be counted against this one.
        system.wait_logs_shipped(port=port)
        self.cpu = Cpu(system.cp.pid)
        self.shipped0 = system.shipped_counts(port)

    def fill(self, res, requests):
        """Waits for the run's records to be shipped, then adds the figures to `res`."""
        self.s.wait_logs_shipped(port=self.port)
        res["control_plane_cpu_us_per_req"] = self.cpu.seconds() / requests * 1e6 if requests else None
        res["records_per_batch"] = records_per_batch(self.shipped0, self.s.shipped_counts(self.port))


def control_plane_pinning(a):
    """Where the control plane ran, as the run's flags put it."""
    if getattr(a, "control_plane_beside", False):
        idle = " (SCHED_IDLE)" if getattr(a, "control_plane_idle", False) else ""
        return f"{SUT_CORE}, beside the data plane{idle}"
    return f"{LOAD_CORE} (SCHED_IDLE)"


def records_per_batch(before, after):
    """Records per acknowledged log batch between two (records, batches)
    counts; None when either is unknown or no batch went."""
    if before is None or after is None:
        return None
    batches = after[1] - before[1]
    return (after[0] - before[0]) / batches if batches > 0 else None


def rotated(names, r):
    k = r % len(names)
    return names[k:] + names[:k]


def split_summary(splits):
    """The rounds' CPU splits as a median and range per part."""
    splits = [x for x in splits if x]
    if not splits:
        return None
    return {k: med_range([x[k] for x in splits]) for k in ("user", "system", "spool")}


def split_cell(split):
    """"user / system (spool)" in µs per request, medians."""
    if not split:
        return "—"
    med = {k: (v["median"] if v else None) for k, v in split.items()}
    cell = f"{med['user']:.1f} / {med['system']:.1f}"
    return cell + (f" ({med['spool']:.1f})" if med["spool"] is not None else "")


def med_range(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def raise_fd_limit():
    """The soft limit on open files raised to the hard one (children
    inherit it); returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return hard if soft == resource.RLIM_INFINITY else soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    except (ValueError, OSError):
        return soft


def streams_that_fit(want, fd_limit, reserve=S5_FD_RESERVE, step=100):
    """How many streams a proxy can hold open under `fd_limit` descriptors:
    two each (client and upstream) after `reserve`; `want` if it fits,
    else rounded down to `step`."""
    room = max(0, (fd_limit - reserve) // 2)
    if want <= room:
        return want
    return room - room % step


def open_rss_kib(series, first_end_s):
    """The RSS with the streams open: the largest sample (seconds, KiB)
    taken before the first stream can end, which leaves out the end, when
    every stream's log record is written at once."""
    vals = [kib for t, kib in series if t < first_end_s]
    return max(vals) if vals else None


def per_stream_kib(before_kib, during_kib, streams):
    """What each open stream adds to the RSS, KiB."""
    if during_kib is None or not streams:
        return None
    return (during_kib - before_kib) / streams


def projected_mib(before_kib, per_kib, streams):
    """The RSS at `streams` open streams, MiB, from a measured KiB per
    stream (for a run whose descriptors could not hold that many)."""
    if per_kib is None:
        return None
    return (before_kib + per_kib * streams) / 1024


# ---------------------------------------------------------------------------
# scenarios
# ---------------------------------------------------------------------------


class Bench:
    def __init__(self, args, stack):
        self.a = args
        self.s = stack
        self.t = stack.targets()
        self.names = list(self.t)
        # llmgw's other routes: S1, S3 and S4 measure them in the same
        # rotation as the columns; they are rows of a table of their own.
        self.rt = {} if args.no_routes else stack.route_targets()
        self.all_t = {**self.t, **self.rt}
        self.raw = {}  # scenario -> target -> list of per-round dicts
        self.failures = []
        q = args.quick
        self.d_latency = 2 if q else 5
        self.d_capacity = 2 if q else 5
        self.s4_waves_single = 2 if q else 5

    def put(self, scen, target, value):
        self.raw.setdefault(scen, {}).setdefault(target, []).append(value)

    def fresh_idle_rss(self):
        """RSS of each system under test before any traffic, once it has
        stopped growing (the data plane loads its tokenizers at start)."""
        out = {}
        for name, t in self.t.items():
            if not t["pid"]:
                continue
            last, stable_since = -1, time.monotonic()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                now = rss_kib(t["pid"])
                if now != last:
                    last, stable_since = now, time.monotonic()
                elif time.monotonic() - stable_since >= 1.5:
                    break
                time.sleep(0.1)
            out[name] = last
            log(f"S5 {name}: fresh idle RSS {last / 1024:.1f} MiB")
        self.raw["S5-fresh"] = out

    def warm_up(self):
        for name, t in self.all_t.items():
            run_wrk(self.s, t, 1, 64)
        self.s.wait_logs_shipped()

    def s1(self, r):
        for name in rotated(self.names + list(self.rt), r):
            cost = LogCost(self.s) if name == "llmgw" else None
            res = run_oha(self.all_t[name], self.d_latency, 1)
            if cost:
                cost.fill(res, res["ok"] + res["errors"])
            self.put("S1", name, res)
            log(f"S1 {name}: p50 {res['p50_ms']:.3f} ms p99 {res['p99_ms']:.3f} ms")
        # A diagnostic, not a column: llmgw again with the control plane
        # stopped (SIGSTOP), so nothing is ingested and, once the shipper's
        # window is full, nothing shipped; records still go to the spool.
        # On two cores the control plane's ingest has to share a core with
        # either the data plane or the mock and the load generator.
        os.kill(self.s.cp.pid, signal.SIGSTOP)
        try:
            res = run_oha(self.t["llmgw"], self.d_latency, 1)
        finally:
            os.kill(self.s.cp.pid, signal.SIGCONT)
        self.put("S1-cp-paused", "llmgw", res)
        log(f"S1 llmgw, control plane paused: p50 {res['p50_ms']:.3f} ms p99 {res['p99_ms']:.3f} ms")
        self.s.wait_logs_shipped()

    def s2(self, r):
        for rate in (500, 1000, 2000):
            for name in rotated(self.names, r):
                cost = LogCost(self.s) if name == "llmgw" else None
                res = run_oha(self.t[name], self.d_latency, 256, rate=rate,
                              headers=["x-mock-latency-ms: 50"], profile="latency-50")
                if cost:
                    cost.fill(res, res["ok"] + res["errors"])
                self.put(f"S2@{rate}", name, res)
                log(f"S2 {rate}/s {name}: p50 {res['p50_ms']:.2f} ms p99 {res['p99_ms']:.2f} ms "
                    f"errors {res['errors']}")

    def capacity(self, target, key=None):
        """S3-style run: wrk at 64 connections; CPU from before the run until
        the data plane has shipped every log record of it."""
        pid = target["pid"]
        # Records of earlier scenarios (S5's 1,000 streams, say) still being
        # shipped would be counted against this run: let them go first.
        self.s.wait_logs_shipped()
        cpu = Cpu(pid)
        # The control plane's share, for a data plane that logs to it
        # (llmgw and its routes, S6's planes with a log port).
        llmgw = target["addr"] == self.t["llmgw"]["addr"]
        cost = LogCost(self.s, None if llmgw else target["logs_port"]) \
            if llmgw or target.get("logs_port") else None
        res = run_wrk(self.s, target, self.d_capacity, 64, key=key)
        run_cpu = cpu.seconds()
        settle = None
        if llmgw:  # llmgw, any of its routes
            settle = self.s.wait_logs_shipped()
        elif target.get("logs_port"):
            settle = self.s.wait_logs_shipped(port=target["logs_port"])
        total_cpu = cpu.seconds()
        # Where the time goes: user against system time, and the spool
        # thread's share, beside the bare proxy's and nginx's.
        res["cpu_split_us_per_req"] = cpu.split_us(res["requests"])
        res["sut_busy"] = run_cpu / res["seconds"] if pid else None
        res["cpu_us_per_req"] = total_cpu / res["requests"] * 1e6 if pid else None
        res["cpu_us_per_req_during_run"] = run_cpu / res["requests"] * 1e6 if pid else None
        if cost:
            cost.fill(res, res["requests"])
        res["log_settle_s"] = settle
        return res

    def s3(self, r):
        floor = self.s.floor_target()
        for name in rotated(self.names + list(self.rt) + ([FLOOR] if floor else []), r):
            res = self.capacity(floor if name == FLOOR else self.all_t[name])
            self.put("S3", name, res)
            cpu = f"{res['cpu_us_per_req']:.1f}" if res["cpu_us_per_req"] else "-"
            log(f"S3 {name}: {res['rps']:.0f} req/s, cpu {cpu} us/req, errors {res['errors']}")

    def s4(self, r):
        for streams in (1, 100, 500):
            waves = self.s4_waves_single if streams == 1 else 1
            for name in rotated(self.names + list(self.rt), r):
                if name in PEERS and streams > 100:
                    continue  # a Python peer needs minutes for this; see docs/benchmarks.md
                pid = self.all_t[name]["pid"]
                is_llmgw = name == "llmgw" or name in self.rt
                if is_llmgw:
                    self.s.wait_logs_shipped()  # earlier runs' records are not this one's
                cpu = Cpu(pid) if pid else None
                res = run_sse(self.all_t[name], streams, waves, 64, 20,
                              parallelism=min(streams, 100))
                if is_llmgw:
                    self.s.wait_logs_shipped()  # and this run's own are counted
                # The system under test's CPU over the run (connections,
                # requests, every frame relayed), per content frame.
                res["cpu_us_per_frame"] = (cpu.seconds() / res["content_events"] * 1e6
                                           if cpu and res["content_events"] else None)
                self.put(f"S4@{streams}", name, res)
                log(f"S4 {streams} streams {name}: ttff p50 {fmt(res['ttff_ms'], 'p50')} ms, "
                    f"first content p50 {fmt(res.get('ttfc_ms'), 'p50')} ms, "
                    f"gap p99 {fmt(res['gap_ms'], 'p99')} ms, coalesced {res['coalesced']}, "
                    f"late {res['late']}, missing {res['missing']}, errors {res['errors']}"
                    + (f" (first: {res['first_error']})" if res.get("first_error") else ""))

    def s5(self, r):
        for name in rotated(self.names, r):
            t = self.t[name]
            if not t["pid"] or name in PEERS:
                continue
            idle = rss_kib(t["pid"])
            res = run_sse(t, 1000, 1, 64, 100, sample_pid=t["pid"], parallelism=200)
            res["idle_rss_kib"] = self.raw.get("S5-fresh", {}).get(name)
            res["idle_after_load_rss_kib"] = idle
            res.pop("rss_series", None)
            self.put("S5", name, res)
            log(f"S5 {name}: idle after load {idle / 1024:.1f} MiB, 1000 streams peak "
                f"{res['peak_rss_kib'] / 1024:.1f} MiB (max open {res['max_open']}, "
                f"errors {res['errors']})")
        self.s5_many(r)

    def s5_many(self, r):
        """S5_MANY streams (or as many as the descriptors hold), then
        S5_CAPPED streams whose responses pass the log's body cap, each
        through nginx and through a data plane started for the measurement."""
        n, chunks = self.s.s5_streams, S5_MANY_CHUNKS
        if self.a.quick:  # a smoke test of the scenario, not its figure
            n, chunks = min(n, 2_000), 16
        self.s5_fresh(r, "S5-many", n, chunks, S5_MANY_DELAY_MS)
        n, chunks, delay = S5_CAPPED, S5_CAPPED_CHUNKS, S5_CAPPED_DELAY_MS
        if self.a.quick:
            n, delay = 100, 10
        # Not through nginx: it keeps none of a response, so its memory per
        # stream does not depend on the response's length (S5-many has its
        # figure), and its RSS after S5-many's streams stays at their peak.
        self.s5_fresh(r, "S5-capped", n, chunks, delay, names=("llmgw",))

    def s5_fresh(self, r, scen, n, chunks, delay_ms, names=("nginx", "llmgw")):
        """`n` streams of `chunks` chunks `delay_ms` apart through nginx and
        through a data plane started for the measurement, so that neither
        the heap of the earlier scenarios nor their pooled upstream
        connections count: RSS just before, with every stream open, and at
        the end (every record written at once), and KiB per open stream."""
        for name in rotated(list(names), r):
            fresh = None
            if name == "llmgw":
                port = free_port()
                # Its connection cap (10,000 by default) above the streams,
                # so the warm-up's closing connections cannot refuse one.
                fresh = self.s.start_dataplane("dataplane-s5", port, f"bench-s5-{r}",
                                               extra=("--max-connections", str(n + 1000)))
                t = {"addr": f"127.0.0.1:{port}", "key": self.s.keys["bench-full"], "pid": fresh.pid}
            else:
                t = self.t[name]
            try:
                run_sse(t, 10, 1, 4, 1)  # the first snapshot, a first connection
                time.sleep(1)
                before = rss_kib(t["pid"])
                res = run_sse(t, n, 1, chunks, delay_ms, sample_pid=t["pid"],
                              parallelism=200, timeout=600)
                if fresh:
                    self.s.wait_logs_shipped(port=port)
            finally:
                if fresh:
                    fresh.stop()
            series = res.pop("rss_series")
            # A stream lasts chunks x delay; none ends before that.
            during = open_rss_kib(series, chunks * delay_ms / 1000)
            res.update(streams=n, chunks=chunks, before_rss_kib=before, open_rss_kib=during,
                       per_stream_kib=per_stream_kib(before, during, res["max_open"]))
            self.put(scen, name, res)
            log(f"{scen} {n} streams of {chunks} chunks {name}: before {before / 1024:.1f} MiB, "
                f"all open {(during or 0) / 1024:.1f} MiB, peak {res['peak_rss_kib'] / 1024:.1f} MiB, "
                f"{res['per_stream_kib'] or 0:.1f} KiB per open stream (max open {res['max_open']}, "
                f"errors {res['errors']})")

    def s6(self, r):
        """Full logging (bodies included) against request logging switched
        off (`--request-log off`), with metadata-only records (a key without
        body logging) in between. Both sides are data planes started for
        the measurement and stopped after it, so that neither carries the
        heap of the earlier scenarios (S5's 1,000 streams leave the long-
        running one's allocator with tens of MiB) and core 0 holds one
        process under load at a time."""
        fresh, targets = {}, {}
        try:
            for label, extra in (("full", ()), ("off", ("--request-log", "off"))):
                port = free_port()
                fresh[label] = self.s.start_dataplane(f"dataplane-s6-{label}", port,
                                                      f"bench-s6-{label}-{r}", extra=extra)
                t = {"addr": f"127.0.0.1:{port}", "key": self.s.keys["bench-full"],
                     "pid": fresh[label].pid}
                if label == "full":
                    t["logs_port"] = port
                run_wrk(self.s, t, 1, 64)  # warm its connections like the others'
                if label == "full":
                    self.s.wait_logs_shipped(port=port)
                targets[label] = t
            full, off = targets["full"], targets["off"]
            variants = [("bodies", full, self.s.keys["bench-full"]),
                        ("no-bodies", full, self.s.keys["bench-nobodies"]),
                        ("off", off, self.s.keys["bench-full"])]
            # There and back (A B C C B A): the machine's speed drifts by
            # tens of percent within minutes here, and a linear drift
            # cancels out of each round's sums.
            order = rotated(variants, r)
            for label, target, key in order + order[::-1]:
                res = self.capacity(target, key=key)
                res["round"] = r
                self.put("S6", label, res)
                log(f"S6 {label}: {res['rps']:.0f} req/s, cpu {res['cpu_us_per_req']:.1f} us/req")
        finally:
            for p in fresh.values():
                p.stop()

    def s6_count(self):
        """Exactly N requests with a fresh key, then the stored rows counted."""
        n = 2000 if self.a.quick else 20000
        t = dict(self.t["llmgw"], key=self.s.keys["bench-count"])
        res = run_oha(t, None, 64, n=n)
        self.s.wait_logs_shipped()
        stats = self.s.cli("stats", "--key", "bench-count", "--since", "1d", json_out=True)
        rows = find_count(stats)
        out = {"sent": n, "ok": res["ok"], "errors": res["errors"], "rows": rows}
        self.raw["S6-count"] = out
        log(f"S6 log rows: sent {n}, answered 200 {res['ok']}, rows stored {rows}")

    def s7(self):
        n = self.a.s7_objects
        t0 = time.monotonic()
        export = self.s.cli("export", json_out=True)
        cfg = make_big_config(export, n)
        path = os.path.join(self.s.tmp, "big.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        v0 = self.s.readyz_version()
        ta = time.monotonic()
        self.s.cli("apply", "-f", path, timeout=1800)
        applied = time.monotonic() - ta
        wait_until("the big snapshot", lambda: self.s.readyz_version() > v0, 300, 0.01)
        big_ack = time.monotonic() - ta
        log(f"S7 applied {n} models and {n} keys in {applied:.1f} s; "
            f"data plane at the new version after {big_ack:.1f} s")
        changes = []
        for i in range(3 if self.a.quick else 7):
            v = self.s.readyz_version()
            attempts = str(2 + i % 2)
            start = time.monotonic()
            self.s.cli("model", "update", "bench-s7-0", "--max-attempts", attempts)
            committed = time.monotonic()
            wait_until("the change", lambda: self.s.readyz_version() > v, 60, 0.002)
            done = time.monotonic()
            changes.append({"change_to_ack_s": done - start, "commit_to_ack_s": done - committed,
                            "cli_s": committed - start})
            time.sleep(0.3)
        rss = rss_kib(self.s.dp.pid)
        self.raw["S7"] = {"objects": n, "apply_s": applied, "apply_to_ack_s": big_ack,
                          "changes": changes, "dp_rss_kib": rss, "total_s": time.monotonic() - t0}
        cta = [c["change_to_ack_s"] for c in changes]
        log(f"S7 change -> /readyz: median {statistics.median(cta) * 1000:.0f} ms "
            f"({min(cta) * 1000:.0f}-{max(cta) * 1000:.0f}); data plane RSS {rss / 1024:.1f} MiB")


def callgrind(a, stack):
    """Instructions executed per request, counted by valgrind's callgrind
    (reproducible where CPU time is not, e.g. on a busy machine), for the
    data plane (full logging with bodies unless --dataplane-args says
    otherwise), with --callgrind-logging also for records without bodies and
    a data plane with its log off (`callgrind_logging`), and with
    --callgrind-floors for nginx's worker and the bare hyper proxy as well,
    each under the same load: after a warm-up the
    counters are zeroed, N requests are sent (8 connections), the run waits
    until every log record is shipped, and the counters are dumped. The
    wait polls the data plane's /metrics; that handler's instructions are
    taken out of the count (`scrape_instructions`; each poll's connection
    work, about 10,000 instructions or more, unmeasured, stays in). Kernel
    work is not counted."""
    n = a.callgrind
    out = {"requests": n}
    t = {"addr": f"127.0.0.1:{stack.dp_port}", "key": stack.keys["bench-full"], "pid": stack.dp.pid}
    out["llmgw"] = count_instructions(t, n, a.callgrind_out, stack.wait_logs_shipped)
    if not a.no_routes:
        out["routes"] = callgrind_routes(a, stack, t)
    if a.callgrind_logging:
        out["logging"] = callgrind_logging(a, stack, t, n)
    if a.callgrind_floors:
        vg = ["valgrind", "--tool=callgrind", "--dump-instr=no"]
        nginx_out = beside_dump(a.callgrind_out, "nginx")
        floor_out = beside_dump(a.callgrind_out, "floor")
        stack.start_nginx(vg + [f"--callgrind-out-file={nginx_out}"])
        out["nginx"] = count_instructions(stack.targets()["nginx"], n, nginx_out)
        stack.nginx.stop()
        stack.start_floor(vg + [f"--callgrind-out-file={floor_out}"])
        out[FLOOR] = count_instructions(stack.floor_target(), n, floor_out)
        base = out["nginx"]["instructions_per_request"]
        for k in ("llmgw", FLOOR, "nginx"):
            out[k]["ratio_to_nginx"] = ratio_to(out[k]["instructions_per_request"], base)
    if "logging" in out:
        base = out["nginx"]["instructions_per_request"] if "nginx" in out else None
        for v in out["logging"].values():
            v["ratio_to_nginx"] = ratio_to(v["instructions_per_request"], base)
    for k in ("nginx", FLOOR, "llmgw"):
        if k in out:
            v, r = out[k]["instructions_per_request"], out[k].get("ratio_to_nginx")
            polls = out[k].get("scrapes")
            log(f"callgrind {k}: "
                + (f"{v:.0f} instructions per request" if v else "no count in the dump")
                + (f" ({r:.2f}x nginx)" if r else "")
                + (f"; the harness's polls of /metrics, {polls / n:.0f} per request, not counted"
                   if polls else ""))
    if "logging" in out:
        for k, line in logging_lines(out).items():
            log(f"callgrind llmgw, {k}: {line}")
    return out


def callgrind_logging(a, stack, llmgw, n):
    """llmgw's logging modes counted in the same run as its full logging:
    metadata-only records (the key that logs no bodies) in the same data
    plane, then a second data plane started with `--request-log off` under
    callgrind with a dump file of its own, stopped after its count. What the
    log costs a request is the difference, each figure from this run."""
    out = {"no_bodies": count_instructions(dict(llmgw, key=stack.keys["bench-nobodies"]), n,
                                           a.callgrind_out, stack.wait_logs_shipped)}
    off_out = logging_off_dump(a.callgrind_out)
    port = free_port()
    p = stack.start_dataplane("dataplane-off", port, "bench-off",
                              extra=logging_off_args(a.dataplane_args), callgrind_out=off_out)
    try:
        t = dict(llmgw, addr=f"127.0.0.1:{port}", pid=p.pid)
        out["off"] = count_instructions(t, n, off_out)
    finally:
        p.stop()
    return out


def beside_dump(out_file, tag):
    """A dump file beside the run's own, `<stem>-<tag><ext>`: `dumps_of`
    the run's file never picks up its numbered dumps."""
    stem, ext = os.path.splitext(out_file)
    return f"{stem}-{tag}{ext}"


def logging_off_dump(out_file):
    """The log-off data plane's dump file beside the run's own."""
    return beside_dump(out_file, "off")


def ratio_to(v, base):
    """`v / base`, or None when either count is missing or zero."""
    return v / base if v and base else None


def logging_off_args(dataplane_args):
    """The measured data plane's flags with its request log switched off.
    Flags that set the log's mode themselves would make the comparison
    meaningless (and the data plane refuses a flag given twice)."""
    extra = shlex.split(dataplane_args or "")
    if any(f == "--request-log" or f.startswith("--request-log=") for f in extra):
        raise ValueError("--callgrind-logging sets --request-log itself; "
                         "leave it out of --dataplane-args")
    return [*extra, "--request-log", "off"]


def logging_lines(out):
    """Each logging mode's count, and what full logging adds over it."""
    full = out["llmgw"]["instructions_per_request"]
    lines = {}
    for k, label in (("no_bodies", "records without bodies"), ("off", "request log off")):
        v = out["logging"][k]["instructions_per_request"]
        if not v:
            lines[label] = "no count in the dump"
            continue
        r = out["logging"][k].get("ratio_to_nginx")
        lines[label] = (f"{v:.0f} instructions per request"
                        + (f" ({r:.2f}x nginx)" if r else "")
                        + (f"; full logging adds {full - v:.0f} ({(full / v - 1) * 100:.1f}%)"
                           if full else ""))
    return lines


def route_targets(llmgw, keys):
    """Each route of ROUTES as a target: llmgw's own with the route's
    client API, model and (when it names one) key."""
    return {name: dict(llmgw, api=r["api"], model=r["model"],
                       **({"key": keys[r["key"]]} if r.get("key") else {}))
            for name, r in ROUTES.items()}


def selected_routes(a):
    """The routes of ROUTES that `--routes` names (all by default), with
    the same-protocol routes they are compared with."""
    names = [n for n in (getattr(a, "routes", None) or "").split(",") if n]
    unknown = [n for n in names if n not in ROUTES]
    if unknown:
        raise SystemExit(f"--routes: no such route {unknown}; routes are {list(ROUTES)}")
    if not names:
        return dict(ROUTES)
    chosen = {n: ROUTES[n] for n in names}
    for r in list(chosen.values()):
        if r["baseline"] and r["baseline"] != SAME_CHAT:
            chosen[r["baseline"]] = ROUTES[r["baseline"]]
    return chosen


def callgrind_routes(a, stack, llmgw):
    """Instructions per request of each llmgw route (its own column's
    chat-to-openai first), non-stream (`oha -n N -c 8`) and stream
    (`--callgrind-streams` streams of `--callgrind-chunks` chunks, 64 by
    default, 2 ms apart, 8 at a time),
    in the one data plane under callgrind, a dump per measurement; then
    each translated route's ratio to its client's same-protocol route."""
    n, streams = a.callgrind, a.callgrind_streams
    chosen = selected_routes(a)
    targets = {SAME_CHAT: llmgw, **{k: v for k, v in route_targets(llmgw, stack.keys).items()
                                    if k in chosen}}
    out = {}
    for name, t in targets.items():
        res = {"non_stream": count_instructions(t, n, a.callgrind_out, stack.wait_logs_shipped)}

        def sse_load(k, t=t):
            # 8 streams at a time, as oha's 8 connections.
            r = run_sse(t, 8, max(1, k // 8), a.callgrind_chunks, 2, parallelism=8)
            return {"ok": r["streams"] - r["errors"], "errors": r["errors"],
                    "content_events": r["content_events"], "missing": r["missing"]}

        st = count_instructions(t, streams, a.callgrind_out, stack.wait_logs_shipped,
                                load=sse_load, warm=16)
        sent = 8 * max(1, streams // 8)
        st["instructions_per_request"] = st["instructions"] / sent if st["instructions"] else None
        st["streams"] = sent
        ev = st["load"].get("content_events")
        st["instructions_per_content_frame"] = st["instructions"] / ev if st["instructions"] and ev else None
        res["stream"] = st
        out[name] = res
        log(f"callgrind {ROUTE_LABELS[name]}: "
            f"{(res['non_stream']['instructions_per_request'] or 0):.0f} per request, "
            f"{(st['instructions_per_request'] or 0):.0f} per stream of {a.callgrind_chunks} chunks")
    # Each route to its client's same-protocol route, and every route to
    # chat → openai (llmgw's own column).
    for name, r in chosen.items():
        for kind in ("non_stream", "stream"):
            v = out[name][kind]["instructions_per_request"]
            for ref_name, key in ((r["baseline"], "ratio_to_same_protocol"),
                                  (SAME_CHAT, "ratio_to_chat_openai")):
                ref = out[ref_name][kind]["instructions_per_request"] if ref_name else None
                out[name][kind][key] = v / ref if v and ref else None
    return out


def post_n(t, n, conns):
    """Exactly n non-streaming requests on `conns` keep-alive connections:
    `oha -n` where it is installed; else Python's http.client, which does
    for instruction counts (only the process under callgrind is counted)."""
    try:
        oha_path()
    except RuntimeError:
        pass
    else:
        return run_oha(t, None, conns, n=n)
    import http.client

    api = t.get("api", "chat")
    body = request_body(t.get("model", "bench"), api).encode()
    headers = {"content-type": "application/json",
               **dict(h.split(": ", 1) for h in key_headers(api, t["key"]))}
    host, port = t["addr"].rsplit(":", 1)
    counts = {"ok": 0, "errors": 0}
    lock = threading.Lock()

    def worker(k):
        c = http.client.HTTPConnection(host, int(port), timeout=60)
        for _ in range(k):
            try:
                c.request("POST", API_PATH[api], body, headers)
                r = c.getresponse()
                r.read()
                ok = r.status == 200
            except (OSError, http.client.HTTPException):
                c.close()
                c = http.client.HTTPConnection(host, int(port), timeout=60)
                ok = False
            with lock:
                counts["ok" if ok else "errors"] += 1
        c.close()

    threads = [threading.Thread(target=worker, args=(n // conns + (i < n % conns),))
               for i in range(conns)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return counts


def callgrind_routes_table(routes, chunks=64):
    """Markdown: instructions per request of each route, and the ratios."""

    def cell(d, key, fmt):
        v = d.get(key)
        return fmt.format(v) if v else "—"

    lines = ["| route | non-stream instr/req | ratio to same protocol | ratio to chat → openai "
             f"| stream instr/stream ({chunks} chunks) | per content frame | ratio to same protocol "
             "| ratio to chat → openai |", "| --- |" + " ---: |" * 7]
    for name, r in routes.items():
        ns, st = r["non_stream"], r["stream"]
        lines.append(" | ".join([
            f"| {ROUTE_LABELS[name]}", cell(ns, "instructions_per_request", "{:,.0f}"),
            cell(ns, "ratio_to_same_protocol", "{:.2f}×"), cell(ns, "ratio_to_chat_openai", "{:.2f}×"),
            cell(st, "instructions_per_request", "{:,.0f}"),
            cell(st, "instructions_per_content_frame", "{:,.0f}"),
            cell(st, "ratio_to_same_protocol", "{:.2f}×"),
            cell(st, "ratio_to_chat_openai", "{:.2f}×")]) + " |")
    return "\n".join(lines)


def count_instructions(t, n, out_file, settle=None, load=None, warm=300):
    """Instructions per request of the callgrind-run process `t["pid"]`:
    `load(k)` sends k requests (default: `oha -n k -c 8`)."""
    pid = t["pid"]
    load = load or (lambda k: post_n(t, k, 8))
    load(warm)
    if settle:
        settle(600)
    # Until start-up work (connections, the first snapshot) has settled.
    while True:
        c0 = cpu_ticks(pid)
        time.sleep(2)
        if cpu_ticks(pid) - c0 < 10:
            break
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
    res = load(n)
    if settle:
        settle(600)
    before = set(dumps_of(out_file))
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    dump = wait_until("the callgrind dump", lambda: next(
        (d for d in dumps_of(out_file) if d not in before and os.path.getsize(d) > 0), None), 60)
    time.sleep(1)
    with open(dump, errors="replace") as f:
        text = f.read()
    m = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
    counted = int(m.group(1)) if m else None
    scrapes = scrape_instructions(text)
    if settle and counted and not scrapes:
        # The wait polled /metrics, so the handler must be in the dump:
        # renamed, inlined or moved, it would be counted as the requests'.
        log(f"WARNING: no calls of {SCRAPE_HANDLER} in {dump}: the count includes the "
            "harness's own polls of /metrics")
    total = counted - scrapes if counted else None
    return {"ok": res["ok"], "errors": res["errors"], "instructions": total,
            "instructions_per_request": total / n if total else None,
            "counted": counted, "scrapes": scrapes, "dump": dump, "load": res}


def scrape_instructions(dump_text, handler=SCRAPE_HANDLER):
    """Instructions in a callgrind dump spent inside `handler`, inclusive:
    the sum of the costs its callers' `calls=` lines give it. Names are
    compressed (`(id) name` the first time, `(id)` after); the line after
    `calls=` holds the call's positions (`positions:`, `line` by default)
    and then its inclusive cost per event (`events:`), of which `Ir` is
    taken. A call of the handler from itself is not counted again."""
    names, fn, callee, pending, total = {}, None, None, False, 0
    positions, events = 1, ["Ir"]
    for line in dump_text.splitlines():
        if line.startswith("positions:"):
            positions = len(line.split()[1:])
            continue
        if line.startswith("events:"):
            events = line.split()[1:]
            continue
        m = re.match(r"(fn|cfn)=\((\d+)\)(?: (.*))?$", line)
        if m:
            kind, ident, name = m.groups()
            if name:
                names[ident] = name.strip()
            if kind == "fn":
                fn = names.get(ident)
            else:
                callee = names.get(ident)
            continue
        if line.startswith("calls="):
            pending = True
            continue
        if pending:
            pending = False
            parts = line.split()
            col = positions + (events.index("Ir") if "Ir" in events else 0)
            if callee == handler and fn != handler and len(parts) > col and parts[col].isdigit():
                total += int(parts[col])
    return total


def dumps_of(out_file):
    """callgrind's numbered dumps of `out_file` (`.1`, `.2`, …)."""
    d, stem = os.path.split(out_file)
    return [os.path.join(d, f) for f in os.listdir(d)
            if f.startswith(stem + ".") and f[len(stem) + 1:].isdigit()]


def fmt(summary, key):
    return f"{summary[key]:.2f}" if summary else "-"


def find_count(stats):
    """The request count in `llmgw -o json stats` output."""
    if isinstance(stats, dict):
        for k in ("total", "summary", "overall"):
            if isinstance(stats.get(k), dict):
                c = find_count(stats[k])
                if c is not None:
                    return c
        for k in ("requests", "count", "request_count"):
            if isinstance(stats.get(k), (int, str)) and str(stats[k]).isdigit():
                return int(stats[k])
    return None


def make_big_config(export, n):
    """The exported configuration grown to n models and n keys in all
    (the bench's own included: 10,000 is also the configuration's limit of
    models, which a config of 10,000 more than the bench's exceeded), with
    at least one new model, `bench-s7-0`, which S7 then changes."""
    cfg = dict(export)
    models = list(cfg.get("models") or [])
    keys = list(cfg.get("api_keys") or [])
    template = next(m for m in models if m["name"] == "bench")
    for i in range(max(n - len(models), 1)):
        m = json.loads(json.dumps(template))
        m["name"] = f"bench-s7-{i}"
        models.append(m)
    key_template = keys[0]
    for i in range(max(n - len(keys), 0)):
        secret = "sk-llmgw-" + "".join(random.choices(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", k=32))
        k = dict(key_template)
        k["name"] = f"bench-s7-key-{i}"
        k["hash"] = hashlib.sha256(secret.encode()).hexdigest()
        k["prefix"] = secret[:13]
        k["models"] = []
        keys.append(k)
    cfg["models"] = models
    cfg["api_keys"] = keys
    return cfg


# ---------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------


def summarize(raw, names):
    """Medians and ranges over rounds; 'added' figures are per-round
    differences against direct from the same round."""
    S = {}

    def per_round(scen, name, key):
        return [r[key] for r in raw.get(scen, {}).get(name, [])]

    def added(scen, name, key):
        a, d = per_round(scen, name, key), per_round(scen, "direct", key)
        return [x - y for x, y in zip(a, d)]

    for scen in ["S1"] + [f"S2@{q}" for q in (500, 1000, 2000)]:
        if scen not in raw:
            continue
        for name in names:
            S.setdefault(scen, {})[name] = {
                "p50_ms": med_range(per_round(scen, name, "p50_ms")),
                "p99_ms": med_range(per_round(scen, name, "p99_ms")),
                "errors": sum(per_round(scen, name, "errors")),
                "added_p50_ms": med_range(added(scen, name, "p50_ms")) if name != "direct" else None,
                "added_p99_ms": med_range(added(scen, name, "p99_ms")) if name != "direct" else None,
                "control_plane_cpu_us_per_req": med_range(
                    [r.get("control_plane_cpu_us_per_req") for r in raw[scen].get(name, [])]),
                "records_per_batch": med_range([r.get("records_per_batch") for r in raw[scen].get(name, [])]),
            }
    if "S1-cp-paused" in raw and "S1" in S:
        d = per_round("S1", "direct", "p99_ms")
        p99 = per_round("S1-cp-paused", "llmgw", "p99_ms")
        S["S1"]["llmgw"]["cp_paused"] = {
            "p50_ms": med_range(per_round("S1-cp-paused", "llmgw", "p50_ms")),
            "p99_ms": med_range(p99),
            "added_p99_ms": med_range([x - y for x, y in zip(p99, d)]),
        }
    if "S3" in raw:
        nginx_rps = per_round("S3", "nginx", "rps")
        nginx_cpu = per_round("S3", "nginx", "cpu_us_per_req")
        for name in names + ([FLOOR] if FLOOR in raw["S3"] else []):
            rps = per_round("S3", name, "rps")
            cpu = per_round("S3", name, "cpu_us_per_req")
            S.setdefault("S3", {})[name] = {
                "rps": med_range(rps),
                "cpu_us_per_req": med_range(cpu),
                "sut_busy": med_range(per_round("S3", name, "sut_busy")),
                "errors": sum(per_round("S3", name, "errors")),
                "cpu_split_us_per_req": split_summary(
                    [r.get("cpu_split_us_per_req") for r in raw["S3"].get(name, [])]),
                "control_plane_cpu_us_per_req": med_range(
                    [r.get("control_plane_cpu_us_per_req") for r in raw["S3"].get(name, [])]),
                "records_per_batch": med_range(
                    [r.get("records_per_batch") for r in raw["S3"].get(name, [])]),
                "rps_vs_nginx": med_range([x / y for x, y in zip(rps, nginx_rps)]),
                "cpu_vs_nginx": med_range([x / y for x, y in zip(cpu, nginx_cpu)
                                           if x is not None and y]),
            }
    for streams in (1, 100, 500):
        scen = f"S4@{streams}"
        if scen not in raw:
            continue
        for name in names:
            rows = raw[scen].get(name, [])
            d = raw[scen].get("direct", [])
            S.setdefault(scen, {})[name] = {
                "ttff_p50_ms": med_range([r["ttff_ms"]["p50"] for r in rows if r["ttff_ms"]]),
                "gap_p99_ms": med_range([r["gap_ms"]["p99"] for r in rows if r["gap_ms"]]),
                "added_ttff_p50_ms": med_range([r["ttff_ms"]["p50"] - x["ttff_ms"]["p50"]
                                                for r, x in zip(rows, d)
                                                if r["ttff_ms"] and x["ttff_ms"]]) if name != "direct" else None,
                "added_gap_p99_ms": med_range([r["gap_ms"]["p99"] - x["gap_ms"]["p99"]
                                               for r, x in zip(rows, d)
                                               if r["gap_ms"] and x["gap_ms"]]) if name != "direct" else None,
                "cpu_us_per_frame": med_range([r["cpu_us_per_frame"] for r in rows
                                               if r.get("cpu_us_per_frame")]),
                "coalesced": sum(r["coalesced"] for r in rows),
                "late": sum(r["late"] for r in rows),
                "missing": sum(r["missing"] for r in rows),
                "errors": sum(r["errors"] for r in rows),
                "content_events": sum(r["content_events"] for r in rows),
            }
    if "S5" in raw:
        for name, rows in raw["S5"].items():
            S.setdefault("S5", {})[name] = {
                "idle_rss_mib": med_range([r["idle_rss_kib"] / 1024 for r in rows if r["idle_rss_kib"]]),
                "idle_after_load_rss_mib": med_range([r["idle_after_load_rss_kib"] / 1024 for r in rows]),
                "peak_rss_1000_mib": med_range([r["peak_rss_kib"] / 1024 for r in rows]),
                "max_open": min(r["max_open"] for r in rows),
                "errors": sum(r["errors"] for r in rows),
            }
    for scen in ("S5-many", "S5-capped"):
        if scen in raw:
            S[scen] = summarize_s5_many(raw[scen])
    if "S6" in raw:
        b, nb, off = (raw["S6"].get(k, []) for k in ("bodies", "no-bodies", "off"))

        def variant(rows):
            return {"rps": med_range([r["rps"] for r in rows]),
                    "cpu_us_per_req": med_range([r["cpu_us_per_req"] for r in rows])}

        def per_round_ratio(xs, ys, key):
            """mean(x) / mean(y) within each round (both passes of it)."""
            out = []
            for r in sorted({row["round"] for row in xs}):
                y = [row[key] for row in ys if row["round"] == r]
                if y and sum(y):
                    x = [row[key] for row in xs if row["round"] == r]
                    out.append(statistics.mean(x) / statistics.mean(y))
            return out

        S["S6"] = {
            "bodies": variant(b),
            "no-bodies": variant(nb),
            "off": variant(off),
            # The bar: full logging (bodies included) against logging off.
            "throughput_ratio": med_range(per_round_ratio(b, off, "rps")),
            "cpu_ratio": med_range(per_round_ratio(b, off, "cpu_us_per_req")),
            "bodies_ratio": med_range(per_round_ratio(b, nb, "rps")),
            "count": raw.get("S6-count"),
        }
    if "S7" in raw:
        s7 = raw["S7"]
        S["S7"] = {
            "objects": s7["objects"],
            "change_to_ack_ms": med_range([c["change_to_ack_s"] * 1000 for c in s7["changes"]]),
            "commit_to_ack_ms": med_range([c["commit_to_ack_s"] * 1000 for c in s7["changes"]]),
            "apply_s": s7["apply_s"],
            "apply_to_ack_s": s7["apply_to_ack_s"],
            "dp_rss_mib": s7["dp_rss_kib"] / 1024,
        }
    return S


def summarize_s5_many(raw):
    """S5's many streams, per target: MiB with them open, KiB per open
    stream, its ratio to nginx's from the same round, and the MiB at
    S5_MANY projected from the KiB per stream."""
    out = {}
    nginx = {i: r["per_stream_kib"] for i, r in enumerate(raw.get("nginx", []))}
    for name, rows in raw.items():
        out[name] = {
            "streams": min(r["streams"] for r in rows),
            "max_open": min(r["max_open"] for r in rows),
            "errors": sum(r["errors"] for r in rows),
            "before_mib": med_range([r["before_rss_kib"] / 1024 for r in rows]),
            "open_mib": med_range([r["open_rss_kib"] / 1024 for r in rows if r["open_rss_kib"]]),
            "peak_mib": med_range([r["peak_rss_kib"] / 1024 for r in rows]),
            "per_stream_kib": med_range([r["per_stream_kib"] for r in rows]),
            "per_stream_vs_nginx": med_range([r["per_stream_kib"] / nginx[i]
                                              for i, r in enumerate(rows)
                                              if r["per_stream_kib"] is not None and nginx.get(i)]),
            "projected_mib": med_range([projected_mib(r["before_rss_kib"], r["per_stream_kib"],
                                                      S5_MANY) for r in rows]),
        }
    return out


def summarize_routes(raw, routes):
    """llmgw's routes (its own column, chat to `openai`, first), each with
    per-round ratios and differences to its client's same-protocol route
    from the same round, then the median over rounds."""
    names = [SAME_CHAT] + list(routes)
    S = {}

    def rows(scen, name):
        return raw.get(scen, {}).get(name, [])

    def pairs(scen, name, f):
        """f(route's round, baseline's round) for each round both have."""
        base = ROUTES.get(name, {}).get("baseline")
        if not base:
            return []
        out = []
        for x, y in zip(rows(scen, name), rows(scen, base)):
            try:
                v = f(x, y)
            except (KeyError, TypeError, ZeroDivisionError):
                continue
            if v is not None:
                out.append(v)
        return out

    for name in names:
        if "S1" in raw and rows("S1", name):
            S.setdefault("S1", {})[name] = {
                "p50_ms": med_range([r["p50_ms"] for r in rows("S1", name)]),
                "p99_ms": med_range([r["p99_ms"] for r in rows("S1", name)]),
                "errors": sum(r["errors"] for r in rows("S1", name)),
                "p50_vs_same": med_range(pairs("S1", name, lambda x, y: x["p50_ms"] / y["p50_ms"])),
                "added_p50_vs_same_ms": med_range(pairs("S1", name,
                                                        lambda x, y: x["p50_ms"] - y["p50_ms"])),
            }
        if "S3" in raw and rows("S3", name):
            S.setdefault("S3", {})[name] = {
                "rps": med_range([r["rps"] for r in rows("S3", name)]),
                "cpu_us_per_req": med_range([r["cpu_us_per_req"] for r in rows("S3", name)]),
                "errors": sum(r["errors"] for r in rows("S3", name)),
                "cpu_vs_same": med_range(pairs("S3", name, lambda x, y: x["cpu_us_per_req"]
                                               / y["cpu_us_per_req"])),
                "rps_vs_same": med_range(pairs("S3", name, lambda x, y: x["rps"] / y["rps"])),
            }
        for streams in (1, 100, 500):
            scen = f"S4@{streams}"
            rs = rows(scen, name)
            if not rs:
                continue
            S.setdefault(scen, {})[name] = {
                "ttfc_p50_ms": med_range([r["ttfc_ms"]["p50"] for r in rs if r.get("ttfc_ms")]),
                "ttff_p50_ms": med_range([r["ttff_ms"]["p50"] for r in rs if r.get("ttff_ms")]),
                "gap_p99_ms": med_range([r["gap_ms"]["p99"] for r in rs if r.get("gap_ms")]),
                "cpu_us_per_frame": med_range([r["cpu_us_per_frame"] for r in rs
                                               if r.get("cpu_us_per_frame")]),
                "added_ttfc_vs_same_ms": med_range(pairs(
                    scen, name, lambda x, y: x["ttfc_ms"]["p50"] - y["ttfc_ms"]["p50"])),
                "cpu_vs_same": med_range(pairs(
                    scen, name, lambda x, y: x["cpu_us_per_frame"] / y["cpu_us_per_frame"])),
                "coalesced": sum(r["coalesced"] for r in rs),
                "late": sum(r["late"] for r in rs),
                "missing": sum(r["missing"] for r in rs),
                "errors": sum(r["errors"] for r in rs),
                "content_events": sum(r["content_events"] for r in rs),
            }
    return S


def routes_table(S, routes):
    """The routes as columns; a translated route's ratios are to its
    client's same-protocol route."""
    cols = [SAME_CHAT] + list(routes)
    lines = ["| scenario | metric | " + " | ".join(ROUTE_LABELS[c] for c in cols) + " |",
             "| --- | --- | " + " | ".join("---" for _ in cols) + " |"]

    def row(scen, metric, f):
        cells = []
        for c in cols:
            try:
                cells.append(f(c))
            except (KeyError, TypeError):
                cells.append("—")
        lines.append(f"| {scen} | {metric} | " + " | ".join(cells) + " |")

    if "S1" in S:
        s = S["S1"]
        row("S1 1 in flight", "p50 / p99 ms", lambda c: f"{mr(s[c]['p50_ms'], 3)} / {mr(s[c]['p99_ms'], 3)}")
        row("S1", "p50 added to same protocol ms", lambda c: mr(s[c]["added_p50_vs_same_ms"], 3))
        row("S1", "errors", lambda c: str(s[c]["errors"]))
    if "S3" in S:
        s = S["S3"]
        row("S3 64 conns", "req/s", lambda c: mr(s[c]["rps"], 0))
        row("S3", "SUT CPU µs/req", lambda c: mr(s[c]["cpu_us_per_req"], 1))
        row("S3", "CPU ratio to same protocol (bar ≤ 1.3)", lambda c: mr(s[c]["cpu_vs_same"], 2))
        row("S3", "errors", lambda c: str(s[c]["errors"]))
    for n in (1, 100, 500):
        k = f"S4@{n}"
        if k in S:
            s = S[k]
            row(f"S4 {n} stream{'s' if n > 1 else ''}", "first content p50 ms",
                lambda c: mr(s[c]["ttfc_p50_ms"]))
            row(f"S4 {n}", "first content added to same protocol ms (bar ≤ 0.2)",
                lambda c: mr(s[c]["added_ttfc_vs_same_ms"]))
            row(f"S4 {n}", "first data: frame p50 ms", lambda c: mr(s[c]["ttff_p50_ms"]))
            row(f"S4 {n}", "gap p99 ms", lambda c: mr(s[c]["gap_p99_ms"]))
            row(f"S4 {n}", "SUT CPU µs per content frame", lambda c: mr(s[c]["cpu_us_per_frame"], 1))
            row(f"S4 {n}", "CPU ratio to same protocol (bar ≤ 1.3)", lambda c: mr(s[c]["cpu_vs_same"], 2))
            row(f"S4 {n}", "coalesced / late / missing / errors",
                lambda c: f"{s[c]['coalesced']} / {s[c]['late']} / {s[c]['missing']} / {s[c]['errors']}"
                f" of {s[c]['content_events']}")
    return "\n".join(lines)


def routes_bar(S, routes):
    """The routes' targets: CPU per request at most 1.3× the client's
    same-protocol route for a translated route, 1.03× for the route with
    limits (a route's "bar"; S3, and S4 per content frame), first content
    of a stream within 0.2 ms of it (S4 at 1 stream)."""
    out = []
    for name, r in routes.items():
        if not r["baseline"]:
            continue
        label = ROUTE_LABELS[name]
        bar = r.get("bar", 1.3)
        for scen, what in (("S3", "CPU/req"), ("S4@100", "CPU/content frame at 100 streams")):
            v = _dig(S, (scen, name, "cpu_vs_same", "median"))
            out.append({"target": f"{label}: {what} ≤ {bar}× same protocol", "value": v, "limit": bar,
                        "met": (v <= bar) if v is not None else None,
                        "shown": f"{v:.2f}×" if v is not None else "—"})
        v = _dig(S, ("S4@1", name, "added_ttfc_vs_same_ms", "median"))
        out.append({"target": f"{label}: first content ≤ 0.2 ms after same protocol (1 stream)",
                    "value": v, "limit": 0.2, "met": (v <= 0.2) if v is not None else None,
                    "shown": f"{v:+.3f} ms" if v is not None else "—"})
    return out


def mr(x, digits=2, unit=""):
    if not x:
        return "—"
    if x["n"] == 1 or x["min"] == x["max"]:
        return f"{x['median']:.{digits}f}{unit}"
    return f"{x['median']:.{digits}f}{unit} ({x['min']:.{digits}f}–{x['max']:.{digits}f})"


def table(S, names):
    cols = names
    lines = ["| scenario | metric | " + " | ".join(cols) + " |",
             "| --- | --- | " + " | ".join("---" for _ in cols) + " |"]

    def row(scen, metric, f):
        cells = []
        for c in cols:
            try:
                cells.append(f(c))
            except (KeyError, TypeError):
                cells.append("—")
        lines.append(f"| {scen} | {metric} | " + " | ".join(cells) + " |")

    if "S1" in S:
        s = S["S1"]
        row("S1 1 in flight", "p50 ms", lambda c: mr(s[c]["p50_ms"], 3))
        row("S1", "p99 ms", lambda c: mr(s[c]["p99_ms"], 3))
        row("S1", "added p50 ms", lambda c: mr(s[c]["added_p50_ms"], 3))
        row("S1", "added p99 ms", lambda c: mr(s[c]["added_p99_ms"], 3))
        row("S1", "control plane paused: p50 / p99 / added p99 ms",
            lambda c: " / ".join(mr(s[c]["cp_paused"][k], 3)
                                 for k in ("p50_ms", "p99_ms", "added_p99_ms")))
        row("S1", "control plane CPU µs/req, log records per batch shipped",
            lambda c: (f"{mr(s[c]['control_plane_cpu_us_per_req'], 1)}, "
                       f"{mr(s[c]['records_per_batch'], 1)}") if c == "llmgw" else "—")
    for q in (500, 1000, 2000):
        k = f"S2@{q}"
        if k in S:
            s = S[k]
            row(f"S2 {q}/s, 50 ms mock", "p50 / p99 ms",
                lambda c: f"{mr(s[c]['p50_ms'])} / {mr(s[c]['p99_ms'])}")
            row(f"S2 {q}/s", "added p50 / p99 ms, errors",
                lambda c: ("—" if c == "direct" else
                           f"{mr(s[c]['added_p50_ms'])} / {mr(s[c]['added_p99_ms'])}")
                + f", {s[c]['errors']}")
            row(f"S2 {q}/s", "control plane CPU µs/req, log records per batch shipped",
                lambda c: (f"{mr(s[c]['control_plane_cpu_us_per_req'], 1)}, "
                           f"{mr(s[c]['records_per_batch'], 1)}") if c == "llmgw" else "—")
    if "S3" in S:
        s = S["S3"]
        row("S3 64 conns", "req/s", lambda c: mr(s[c]["rps"], 0))
        row("S3", "ratio to nginx", lambda c: mr(s[c]["rps_vs_nginx"], 2) if c != "direct" else "—")
        row("S3", "SUT CPU µs/req", lambda c: mr(s[c]["cpu_us_per_req"], 1))
        row("S3", "CPU ratio to nginx", lambda c: mr(s[c]["cpu_vs_nginx"], 2))
        row("S3", "SUT core busy", lambda c: mr(s[c]["sut_busy"], 2))
        row("S3", "SUT CPU user / system µs/req (spool thread)",
            lambda c: split_cell(s[c].get("cpu_split_us_per_req")))
        row("S3", "control plane CPU µs/req (until the run's records were shipped)",
            lambda c: mr(s[c].get("control_plane_cpu_us_per_req"), 1))
        row("S3", "log records per batch shipped",
            lambda c: mr(s[c].get("records_per_batch"), 1))
        row("S3", "errors", lambda c: str(s[c]["errors"]))
        if FLOOR in s:
            f = s[FLOOR]
            row("S3", "bare hyper proxy (diagnostic): req/s, CPU µs/req, CPU ratio to nginx",
                lambda c: (f"{mr(f['rps'], 0)}, {mr(f['cpu_us_per_req'], 1)}, "
                           f"{mr(f['cpu_vs_nginx'], 2)}") if c == "llmgw" else "—")
            row("S3", "bare hyper proxy (diagnostic): CPU user / system µs/req",
                lambda c: split_cell(f.get("cpu_split_us_per_req")) if c == "llmgw" else "—")
    for n in (1, 100, 500):
        k = f"S4@{n}"
        if k in S:
            s = S[k]
            row(f"S4 {n} stream{'s' if n > 1 else ''}", "first frame p50 ms",
                lambda c: mr(s[c]["ttff_p50_ms"]))
            row(f"S4 {n}", "added first frame ms", lambda c: mr(s[c]["added_ttff_p50_ms"]))
            row(f"S4 {n}", "gap p99 ms (added)",
                lambda c: mr(s[c]["gap_p99_ms"]) + ("" if c == "direct" else
                                                    f" ({mr(s[c]['added_gap_p99_ms'])})"))
            row(f"S4 {n}", "SUT CPU µs per content frame", lambda c: mr(s[c]["cpu_us_per_frame"], 1))
            row(f"S4 {n}", "coalesced / late / missing / errors",
                lambda c: f"{s[c]['coalesced']} / {s[c]['late']} / {s[c]['missing']} / {s[c]['errors']}"
                f" of {s[c]['content_events']}")
    if "S5" in S:
        s = S["S5"]
        row("S5 memory", "RSS idle (fresh) MiB", lambda c: mr(s[c]["idle_rss_mib"], 1))
        row("S5", "RSS idle after load MiB", lambda c: mr(s[c]["idle_after_load_rss_mib"], 1))
        row("S5", "RSS 1,000 streams MiB", lambda c: mr(s[c]["peak_rss_1000_mib"], 1))
    if "S5-many" in S:
        s = S["S5-many"]
        n = max(v["streams"] for v in s.values())
        has = lambda f: (lambda c: f(s[c]) if c in s else "—")  # noqa: E731
        row(f"S5 {n:,} streams", "RSS before MiB", has(lambda v: mr(v["before_mib"], 1)))
        row("S5", f"RSS {n:,} open MiB", has(lambda v: mr(v["open_mib"], 1)))
        row("S5", "RSS peak (as they end) MiB", has(lambda v: mr(v["peak_mib"], 1)))
        row("S5", "KiB per open stream", has(lambda v: mr(v["per_stream_kib"], 1)))
        row("S5", "KiB per open stream, ratio to nginx", has(lambda v: mr(v["per_stream_vs_nginx"], 2)))
        if n < S5_MANY:
            row("S5", f"RSS at {S5_MANY:,} streams, projected MiB", has(lambda v: mr(v["projected_mib"], 0)))
        row("S5", "max open / errors", has(lambda v: f"{v['max_open']:,} / {v['errors']}"))
    if "S5-capped" in S:
        s = S["S5-capped"]
        n = max(v["streams"] for v in s.values())
        has = lambda f: (lambda c: f(s[c]) if c in s else "—")  # noqa: E731
        row(f"S5 {n:,} streams at the body cap", "RSS before MiB", has(lambda v: mr(v["before_mib"], 1)))
        row("S5", f"RSS {n:,} open (captures at the cap) MiB", has(lambda v: mr(v["open_mib"], 1)))
        row("S5", "KiB per open stream at the cap", has(lambda v: mr(v["per_stream_kib"], 1)))
        row("S5", "max open / errors at the cap", has(lambda v: f"{v['max_open']:,} / {v['errors']}"))
    if "S6" in S:
        s = S["S6"]
        only = lambda v: (lambda c: v if c == "llmgw" else "—")  # noqa: E731
        row("S6 logging", "req/s full / no bodies / off",
            only(f"{mr(s['bodies']['rps'], 0)} / {mr(s['no-bodies']['rps'], 0)} / {mr(s['off']['rps'], 0)}"))
        row("S6", "CPU µs/req full / no bodies / off",
            only(f"{mr(s['bodies']['cpu_us_per_req'], 1)} / {mr(s['no-bodies']['cpu_us_per_req'], 1)}"
                 f" / {mr(s['off']['cpu_us_per_req'], 1)}"))
        row("S6", "throughput ratio full / off", only(mr(s["throughput_ratio"], 3)))
        row("S6", "CPU µs/req ratio full / off", only(mr(s["cpu_ratio"], 3)))
        row("S6", "throughput ratio full / no bodies", only(mr(s["bodies_ratio"], 3)))
        cnt = s.get("count") or {}
        row("S6", "log rows / requests sent", only(f"{cnt.get('rows')} / {cnt.get('sent')}"))
    if "S7" in S:
        s = S["S7"]
        only = lambda v: (lambda c: v if c == "llmgw" else "—")  # noqa: E731
        row(f"S7 {s['objects']:,} models+keys", "change → /readyz ms", only(mr(s["change_to_ack_ms"], 0)))
        row("S7", "commit → /readyz ms", only(mr(s["commit_to_ack_ms"], 0)))
        row("S7", "data plane RSS MiB", only(f"{s['dp_rss_mib']:.1f}"))
    return "\n".join(lines)


def bar(S):
    """The issue's targets, as ratios and figures from this run."""
    out = []

    def check(name, value, limit, ok, fmtv):
        out.append({"target": name, "value": value, "limit": limit,
                    "met": bool(ok) if value is not None else None, "shown": fmtv})

    g = lambda *ks: _dig(S, ks)  # noqa: E731
    v = g("S3", "llmgw", "cpu_vs_nginx", "median")
    check("S3 CPU/req ≤ 1.5× nginx", v, 1.5, v is not None and v <= 1.5, f"{v:.2f}×" if v else "—")
    v = g("S3", "llmgw", "rps_vs_nginx", "median")
    check("S3 throughput ≥ 0.8× nginx", v, 0.8, v is not None and v >= 0.8, f"{v:.2f}×" if v else "—")
    v = g("S1", "llmgw", "added_p99_ms", "median")
    check("S1 added p99 ≤ 0.3 ms", v, 0.3, v is not None and v <= 0.3, f"{v:.3f} ms" if v is not None else "—")
    v = g("S2@2000", "llmgw", "added_p99_ms", "median")
    check("S2 added p99 ≤ 1 ms at 2,000/s", v, 1.0, v is not None and v <= 1.0,
          f"{v:.3f} ms" if v is not None else "—")
    worst = None
    for n in (1, 100, 500):
        x = g(f"S4@{n}", "llmgw", "added_ttff_p50_ms", "median")
        if x is not None:
            worst = x if worst is None else max(worst, x)
    check("S4 added first frame ≤ 1 ms", worst, 1.0, worst is not None and worst <= 1.0,
          f"{worst:.3f} ms (worst of 1/100/500)" if worst is not None else "—")
    bad = sum((g(f"S4@{n}", "llmgw", "coalesced") or 0) for n in (1, 100, 500))
    late = {n: g(f"S4@{n}", "llmgw", "late") for n in (1, 100, 500)}
    dlate = {n: g(f"S4@{n}", "direct", "late") for n in (1, 100, 500)}
    check("S4 no frame coalesced", bad, 0, bad == 0, f"{bad} coalesced")
    check("S4 no frame delayed (late vs direct)", late, 0,
          all((late[n] or 0) <= (dlate[n] or 0) for n in late),
          ", ".join(f"{n}: {late[n]} (direct {dlate[n]})" for n in late))
    v = g("S5", "llmgw", "idle_rss_mib", "median")
    check("S5 RSS idle ≤ 30 MB", v, 30e6 / 2**20, v is not None and v * 2**20 <= 30e6,
          f"{v * 2**20 / 1e6:.1f} MB" if v else "—")
    v = g("S5", "llmgw", "peak_rss_1000_mib", "median")
    check("S5 RSS 1,000 streams ≤ 150 MB", v, 150e6 / 2**20, v is not None and v * 2**20 <= 150e6,
          f"{v * 2**20 / 1e6:.1f} MB" if v else "—")
    v = g("S5-many", "llmgw", "per_stream_kib", "median")
    check("S5 ≤ 100 KiB per open stream", v, 100, v is not None and v <= 100,
          f"{v:.1f} KiB" if v is not None else "—")
    v = g("S5-capped", "llmgw", "per_stream_kib", "median")
    check("S5 ≤ 100 KiB per open stream, every capture at the 64 KiB body cap", v, 100,
          v is not None and v <= 100, f"{v:.1f} KiB" if v is not None else "—")
    v = g("S5-capped", "llmgw", "projected_mib", "median")
    check(f"S5 {S5_MANY:,} streams at the body cap in ≤ 1 GiB (projected)", v, 1024,
          v is not None and v <= 1024, f"{v:.0f} MiB" if v is not None else "—")
    n = g("S5-many", "llmgw", "streams")
    v = g("S5-many", "llmgw", "open_mib" if n == S5_MANY else "projected_mib", "median")
    check(f"S5 {S5_MANY:,} streams in ≤ 1 GiB", v, 1024, v is not None and v <= 1024,
          (f"{v:.0f} MiB" + ("" if n == S5_MANY else f" (projected from {n:,})")) if v else "—")
    v = g("S6", "throughput_ratio", "median")
    check("S6 full logging costs ≤ 10% throughput", v, 0.9, v is not None and v >= 0.9,
          f"{(1 - v) * 100:.1f}% (full logging with bodies vs --request-log off)" if v else "—")
    cnt = g("S6", "count") or {}
    check("S6 log rows = requests sent", cnt.get("rows"), cnt.get("sent"),
          cnt.get("rows") is not None and cnt.get("rows") == cnt.get("sent"),
          f"{cnt.get('rows')} / {cnt.get('sent')}")
    v = g("S7", "change_to_ack_ms", "median")
    check("S7 change-to-ACK < 1 s", v, 1000, v is not None and v < 1000, f"{v:.0f} ms" if v else "—")
    return out


def _dig(d, ks):
    for k in ks:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def machine():
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) // 1024
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "mem_mib": mem, "os": _os_release()}


def _os_release():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return ""


def versions():
    v = {}
    for name, cmd in [("nginx", ["nginx", "-v"]), ("wrk", ["wrk", "-v"]), ("oha", ["oha", "--version"])]:
        try:
            if name == "oha":
                cmd[0] = oha_path()
            r = subprocess.run(cmd, capture_output=True, text=True)
            v[name] = (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, RuntimeError):
            v[name] = None
    try:
        # "-dirty" when the tree has uncommitted changes: the binaries
        # measured may then be of code no commit holds.
        v["llmgw"] = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty", "--abbrev=7"],
                                    capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one round, short runs: a smoke test")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 3; 1 with --quick)")
    ap.add_argument("--peers", default="", help="extra columns, comma-separated: litellm")
    ap.add_argument("--scenarios", default="S1,S2,S3,S4,S5,S6,S7", help="which scenarios to run")
    ap.add_argument("--s7-objects", type=int, default=10000, help="models and keys in S7")
    ap.add_argument("--keep", action="store_true", help="leave the temporary folder in place")
    ap.add_argument("--dataplane-bin", default=None,
                    help="another llmgw-dataplane binary to measure (A/B against a saved build)")
    ap.add_argument("--dataplane-args", default=None, metavar="ARGS",
                    help="extra flags for the measured data plane, e.g. '--request-log off'")
    ap.add_argument("--callgrind", type=int, default=None, metavar="N",
                    help="instead of the scenarios: count the data plane's instructions per "
                         "request over N requests with valgrind's callgrind")
    ap.add_argument("--callgrind-floors", action="store_true",
                    help="with --callgrind: count nginx's and the bare hyper proxy's too")
    ap.add_argument("--callgrind-logging", action="store_true",
                    help="with --callgrind: count llmgw's records without bodies and a second "
                         "data plane with --request-log off too")
    ap.add_argument("--callgrind-streams", type=int, default=200, metavar="N",
                    help="with --callgrind: streams (of --callgrind-chunks chunks) counted per "
                         "route (default 200)")
    ap.add_argument("--callgrind-chunks", type=int, default=64, metavar="N",
                    help="with --callgrind: chunks per counted stream (default 64; 330 passes "
                         "the log's 64 KiB body cap)")
    ap.add_argument("--routes", default=None, metavar="NAMES",
                    help="only these routes (comma-separated names, e.g. 'llmgw limited'), "
                         "besides chat → openai; all by default")
    ap.add_argument("--control-plane-beside", action="store_true",
                    help="run the control plane on the data plane's core at normal priority "
                         "(both planes on one core, as a small deployment runs them), not on "
                         "the load core at SCHED_IDLE")
    ap.add_argument("--control-plane-nice", type=int, default=0, metavar="N",
                    help="with --control-plane-beside: start the control plane at this nice value")
    ap.add_argument("--control-plane-idle", action="store_true",
                    help="with --control-plane-beside: start the control plane at SCHED_IDLE, "
                         "so that the data plane's wakeups preempt it at once")
    ap.add_argument("--no-routes", action="store_true",
                    help="leave out llmgw's translated routes (S1, S3, S4 and --callgrind)")
    ap.add_argument("--no-build", action="store_true",
                    help="(bench/run.sh) use the binaries as they are, without building")
    ap.add_argument("--bin-dir", default=None, metavar="DIR",
                    help="where the release binaries are (default: LLMGW_BENCH_BIN_DIR, else "
                         "$CARGO_TARGET_DIR/release, else target/release)")
    a = ap.parse_args()
    if (a.control_plane_idle or a.control_plane_nice) and not a.control_plane_beside:
        ap.error("--control-plane-idle and --control-plane-nice go with --control-plane-beside")
    if a.control_plane_idle and a.control_plane_nice:
        ap.error("--control-plane-idle and --control-plane-nice are two placements: pick one")
    if a.bin_dir:
        global BIN
        BIN = os.path.abspath(a.bin_dir)
    log(f"binaries from {BIN}")
    if a.callgrind_floors and not a.callgrind:
        ap.error("--callgrind-floors goes with --callgrind N")
    if a.callgrind_logging and not a.callgrind:
        ap.error("--callgrind-logging goes with --callgrind N")
    if a.callgrind_logging:
        try:
            logging_off_args(a.dataplane_args)
        except ValueError as e:
            ap.error(str(e))
    a.peers = [p for p in a.peers.split(",") if p]
    a.rounds = a.rounds or (1 if a.quick else 3)
    scen = set(a.scenarios.upper().split(","))

    atexit.register(stop_all)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sys.exit(130))

    started = datetime.datetime.now(datetime.timezone.utc)
    load0 = load_average()
    log(f"load average at start: {load0}")
    if load0[0] >= 0.5:
        log("WARNING: the machine is busy (load average >= 0.5); figures will be noisy")
    if a.callgrind:
        os.makedirs(RESULTS, exist_ok=True)
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        a.callgrind_out = os.path.join(RESULTS, f"callgrind-{stamp}.out")
        stack = Stack(a)
        try:
            stack.start()
            out = callgrind(a, stack)
        finally:
            stop_all()
            shutil.rmtree(stack.tmp, ignore_errors=True)
        out["load_average"] = {"start": load0, "end": load_average()}
        out["versions"] = versions()
        with open(os.path.join(RESULTS, f"callgrind-{stamp}.json"), "w") as f:
            json.dump(out, f, indent=2)
        print(json.dumps(out, indent=2))
        if out.get("routes"):
            print("\n" + callgrind_routes_table(out["routes"], a.callgrind_chunks))
        return
    stack = Stack(a)
    try:
        stack.start()
        b = Bench(a, stack)
        b.fresh_idle_rss()
        b.warm_up()
        for r in range(a.rounds):
            log(f"--- round {r + 1} of {a.rounds} ---")
            for name, fn in [("S1", b.s1), ("S2", b.s2), ("S3", b.s3), ("S4", b.s4), ("S5", b.s5),
                             ("S6", b.s6)]:
                if name in scen:
                    try:
                        fn(r)
                    except Exception as e:  # noqa: BLE001 - report the rest of the run
                        log(f"{name} failed in round {r + 1}: {e}")
                        b.failures.append(f"{name} round {r + 1}: {e}")
        for name, fn in [("S6", b.s6_count), ("S7", b.s7)]:
            if name in scen:
                try:
                    fn()
                except Exception as e:  # noqa: BLE001 - report the rest of the run
                    log(f"{name} failed: {e}")
                    b.failures.append(f"{name}: {e}")
    finally:
        loads = load_average()
        stop_all()
        if not a.keep:
            shutil.rmtree(stack.tmp, ignore_errors=True)
        else:
            log(f"kept {stack.tmp}")

    names = b.names
    S = summarize(b.raw, names)
    tbl = table(S, names)
    checks = bar(S)
    routes = {k: v for k, v in ROUTES.items() if k in b.rt}
    RS = summarize_routes(b.raw, routes) if routes else {}
    route_checks = routes_bar(RS, routes) if RS else []
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    result = {
        "started": started.isoformat(),
        "seconds": (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(),
        "quick": a.quick,
        "rounds": a.rounds,
        "machine": machine(),
        "versions": versions(),
        "load_average": {"start": load0, "end": loads},
        "pinning": {"sut": SUT_CORE, "mock_and_load": LOAD_CORE,
                    "controlplane": control_plane_pinning(a)},
        "summary": S,
        "bar": checks,
        "routes": RS,
        "routes_bar": route_checks,
        "failures": b.failures,
        "raw": b.raw,
    }
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{stamp}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    md = [f"Run {stamp}: {a.rounds} round(s){' (quick)' if a.quick else ''}, "
          f"load average {load0[0]:.2f} at start ({loads[0]:.2f} at the end, the run's own load "
          "included). Cells: median over rounds (min–max).", "", tbl, "",
          "| target | this run | met |",
          "| --- | --- | --- |"]
    for c in checks:
        md.append(f"| {c['target']} | {c['shown']} | "
                  f"{'yes' if c['met'] else ('no' if c['met'] is False else '—')} |")
    if RS:
        md += ["", "Translated routes (llmgw; ratios and differences are to the client's "
               "same-protocol route in the same round):", "", routes_table(RS, routes), "",
               "| target | this run | met |", "| --- | --- | --- |"]
        for c in route_checks:
            md.append(f"| {c['target']} | {c['shown']} | "
                      f"{'yes' if c['met'] else ('no' if c['met'] is False else '—')} |")
    with open(os.path.join(RESULTS, f"{stamp}.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    if b.failures:
        md += ["", "Failures: " + "; ".join(b.failures)]
    print("\n".join(md))
    print(f"\nresults: {os.path.relpath(path, ROOT)}")
    if load0[0] >= 0.5:
        print(f"note: the load average was {load0[0]:.2f} when the run started (other work on "
              "the machine); figures are noisier than on an idle machine")


if __name__ == "__main__":
    main()
