"""Harness for llmgw's end-to-end tests with the official SDKs.

A `Gateway` runs the real binaries as processes: `llmgw-mock` (the upstream),
`llmgw-controlplane` (temporary data dir, fixed tokens and master key through
the environment, `--listen 127.0.0.1:0`) and `llmgw-dataplane`
(`--listen 127.0.0.1:0`). Bound addresses are read from each process's output
by a reader thread; readiness is polled with bounded deadlines, never slept
for. Providers, models and keys are configured through the `llmgw` CLI
(`-o json`), and after every change the harness waits until the data plane
serves the control plane's configuration version.

Fixtures:
- `gw`: one gateway per xdist worker (session scope), shared by the tests
  that do not touch global settings; they use their own model and key names.
- `make_gateway`: a factory for dedicated gateways (own flags, own globals),
  killed at the end of the test or module that made them.

Each gateway has one provider per protocol on its mock
(`gw.mock_provider("openai" | "openai-chat" | "anthropic" | "gemini")`;
the mock serves Gemini under `/v1beta`), and clients of the official SDKs:
`gw.openai(key)`, `gw.anthropic(key)`, `gw.genai(key)`.

Binaries come from `LLMGW_BIN_DIR` (set by scripts/test.sh), else
`target/debug`. Every process's output is kept in a file under the test's
temporary folder; a failed wait quotes its tail.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import types as genai_types

ROOT = Path(__file__).resolve().parents[2]

# Tests talk to 127.0.0.1 only; a proxy from the environment must not get in
# the way of the SDKs (httpx honours these variables).
for _var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
    os.environ.pop(_var, None)

#: Bound for a process to come up (debug binaries, SQLite migrations).
START_TIMEOUT = 30.0
#: Bound for a configuration change to reach the data plane.
SYNC_TIMEOUT = 20.0
#: Bound for a request record to reach the control plane's log store.
LOG_TIMEOUT = 30.0
POLL = 0.02

#: Environment variables of the binaries that must not leak in from outside.
_SCRUBBED_ENV = {
    "DATABASE_URL",
    "RUST_LOG",
    "RETRY_MAX_ATTEMPTS",
    "RETRY_DELAY_MS",
    "HTTP_TIMEOUT",
    "LOG_RETENTION_DAYS",
    "HOSTNAME",
}


def bin_dir() -> Path:
    d = os.environ.get("LLMGW_BIN_DIR")
    return Path(d) if d else ROOT / "target" / "debug"


def binary(name: str) -> str:
    p = bin_dir() / name
    if not p.is_file():
        raise RuntimeError(
            f"{p} does not exist: run `cargo build --workspace --bins` "
            "or set LLMGW_BIN_DIR to the folder of the llmgw binaries"
        )
    return str(p)


def base_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LLMGW_") and k not in _SCRUBBED_ENV
    }
    # OpenTelemetry settings from outside must not switch tracing on for the
    # gateways of the tests (tests/python/test_tracing.py sets its own).
    env = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
    env.update(extra)
    return env


def readyz_version(http: httpx.Client, url: str) -> int | None:
    """The applied version a data plane's /readyz reports, or None while it
    is not ready (or not reachable)."""
    try:
        r = http.get(f"{url}/readyz", timeout=2)
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    body = r.json()
    return int(body["version"]) if body.get("ready") else None


def uid() -> str:
    """A short unique suffix for names (models, keys, upstream models)."""
    return uuid.uuid4().hex[:10]


def wait_until(
    fn: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = POLL,
) -> Any:
    """Polls `fn` until it returns something truthy; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - reported on timeout
            last_exc = e
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{extra}")
        time.sleep(interval)


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------


class Proc:
    """A child process whose stdout+stderr a thread copies to a file and to
    an in-memory list of lines."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        cwd: Path,
        log_path: Path,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.eof = False
        cwd.mkdir(parents=True, exist_ok=True)
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self.thread = threading.Thread(target=self._pump, name=f"pump-{name}", daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        with open(self.log_path, "ab") as f:
            for raw in iter(self.popen.stdout.readline, b""):
                f.write(raw)
                f.flush()
                with self.cond:
                    self.lines.append(raw.decode("utf-8", "replace"))
                    self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 40) -> str:
        with self.cond:
            return "".join(self.lines[-n:])

    def wait_for(self, parse: Callable[[str], Any], timeout: float, what: str, start: int = 0) -> Any:
        """Waits for an output line (from index `start`) for which `parse`
        returns something other than None, and returns that."""
        deadline = time.monotonic() + timeout
        i = start
        with self.cond:
            while True:
                while i < len(self.lines):
                    v = parse(self.lines[i])
                    i += 1
                    if v is not None:
                        return v
                if self.eof:
                    raise AssertionError(
                        f"{self.name} exited (code {self.popen.poll()}) before {what}; "
                        f"output ({self.log_path}):\n{self.tail()}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout} s waiting for {self.name}: {what}; "
                        f"output ({self.log_path}):\n{self.tail()}"
                    )
                self.cond.wait(left)

    def line_count(self) -> int:
        with self.cond:
            return len(self.lines)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(sig)
            except ProcessLookupError:
                pass
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)
        self.thread.join(timeout=5)


def json_log_field(message_prefix: str, field: str) -> Callable[[str], Any]:
    """A parser for `--log-format json` lines: the value of `fields.<field>`
    of the first line whose message starts with `message_prefix`."""

    def parse(line: str) -> Any:
        line = line.strip()
        if not line.startswith("{"):
            return None
        try:
            obj = json.loads(line)
        except ValueError:
            return None
        fields = obj.get("fields") or {}
        msg = fields.get("message", "")
        if isinstance(msg, str) and msg.startswith(message_prefix):
            return fields.get(field)
        return None

    return parse


class Mock:
    """A running `llmgw-mock` and its control API."""

    def __init__(self, proc: Proc, addr: str) -> None:
        self.proc = proc
        self.addr = addr
        self.url = f"http://{addr}"
        self.base_url = f"{self.url}/v1"
        self.http = httpx.Client(timeout=10, trust_env=False)

    @classmethod
    def start(cls, workdir: Path, name: str = "mock", extra_args: Iterable[str] = ()) -> "Mock":
        proc = Proc(
            name,
            [binary("llmgw-mock"), "--listen", "127.0.0.1:0", *extra_args],
            base_env(),
            workdir / name,
            workdir / f"{name}.log",
        )
        addr = proc.wait_for(
            lambda l: l.split("listening on ", 1)[1].strip() if l.startswith("listening on ") else None,
            START_TIMEOUT,
            "the listening line",
        )
        return cls(proc, addr)

    def script(self, model: str, steps: list[dict[str, Any]]) -> None:
        r = self.http.post(f"{self.url}/_mock/script", json={"model": model, "steps": steps})
        r.raise_for_status()

    def requests(self, model: str | None = None) -> list[dict[str, Any]]:
        params = {"model": model} if model is not None else None
        r = self.http.get(f"{self.url}/_mock/requests", params=params)
        r.raise_for_status()
        return r.json()

    def provider_base_url(self, protocol: str) -> str:
        """The base URL a provider of `protocol` has on this mock: Gemini's
        API is under `/v1beta`, the others under `/v1`."""
        return f"{self.url}/v1beta" if protocol == "gemini" else self.base_url

    def stats(self) -> dict[str, int]:
        r = self.http.get(f"{self.url}/_mock/stats")
        r.raise_for_status()
        return r.json()

    def stop(self) -> None:
        self.http.close()
        self.proc.kill()


class CliError(Exception):
    def __init__(self, argv: list[str], code: int, stdout: str, stderr: str) -> None:
        super().__init__(f"llmgw {' '.join(argv)} exited {code}: {stderr.strip() or stdout.strip()}")
        self.code = code
        self.stdout = stdout
        self.stderr = stderr


def run_cli(server: str, admin_token: str, workdir: Path, *args: str, json_out: bool = True,
            timeout: float = 30, stdin: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Runs `llmgw --server SERVER [-o json] ARGS` as an admin, with
    `stdin` as its standard input (else none) and `env` added to its
    environment."""
    argv = [binary("llmgw"), "--server", server]
    if json_out:
        argv += ["-o", "json"]
    argv += list(args)
    full_env = base_env(LLMGW_ADMIN_TOKEN=admin_token, **(env or {}))
    feed: dict[str, Any] = {"stdin": subprocess.DEVNULL} if stdin is None else {"input": stdin}
    return subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=timeout,
                          cwd=workdir, **feed)


def cli_json(p: subprocess.CompletedProcess, args: tuple[str, ...]) -> Any:
    """The JSON a successful `llmgw -o json` printed (None if nothing);
    CliError if it failed."""
    if p.returncode != 0:
        raise CliError(list(args), p.returncode, p.stdout, p.stderr)
    out = p.stdout.strip()
    return json.loads(out) if out else None


class Gateway:
    """A mock upstream, a control plane and a data plane, configured through
    the `llmgw` CLI. `gw.url` is the data plane's base URL."""

    def __init__(
        self,
        workdir: Path,
        name: str = "gw",
        cp_args: Iterable[str] = (),
        rust_log: str | None = None,
        dp_args: Iterable[str] = (),
        cp_env: dict[str, str] | None = None,
        dp_env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        #: Extra environment variables of the control plane and data plane.
        self.cp_env = dict(cp_env or {})
        self.dp_env = dict(dp_env or {})
        self.name = name
        self.cp_args = list(cp_args)
        self.dp_args = list(dp_args)
        self.rust_log = rust_log
        # Secrets: fixed per gateway, random per run, recognisable in a leak.
        self.admin_token = "adm-" + secrets.token_hex(20)
        self.dataplane_token = "dpt-" + secrets.token_hex(20)
        self.master_key = base64.b64encode(secrets.token_bytes(32)).decode()
        self.openai_provider_key = "sk-prov-oai-" + secrets.token_hex(16)
        self.anthropic_provider_key = "sk-ant-prov-" + secrets.token_hex(16)
        self.gemini_provider_key = "AIza-prov-" + secrets.token_hex(16)
        #: Providers on the mock by protocol (see `mock_provider`).
        self.mock_providers: dict[str, str] = {"openai": "mock", "anthropic": "mocka"}
        self.node_id = f"{name}-dp-{uid()}"
        self.data_dir = workdir / "cp-data"
        self.cp: Proc | None = None
        self.dp: Proc | None = None
        self.cp_addr = ""
        self.dp_addr = ""
        #: The data plane's ops listener (/healthz, /readyz, /metrics).
        self.dp_ops_addr = ""
        self.mock: Mock | None = None
        self.extra_mocks: list[Mock] = []
        self.cp_starts = 0
        self.http = httpx.Client(timeout=30, trust_env=False)

    # ----- lifecycle -----

    def _log_env(self) -> dict[str, str]:
        return {"RUST_LOG": self.rust_log} if self.rust_log else {}

    def start(self) -> "Gateway":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.mock = Mock.start(self.workdir, f"{self.name}-mock")
        self.start_control_plane("127.0.0.1:0")
        self.start_data_plane()
        # The shared providers: one per protocol, both on the mock.
        self.cli(
            "provider", "add", "mock", "--protocol", "openai",
            "--base-url", self.mock.base_url, "--api-key", self.openai_provider_key,
        )
        self.cli(
            "provider", "add", "mocka", "--protocol", "anthropic",
            "--base-url", self.mock.base_url, "--api-key", self.anthropic_provider_key,
        )
        self.sync()
        return self

    def start_control_plane(self, listen: str) -> None:
        self.cp_starts += 1
        n = self.cp_starts
        env = base_env(
            LLMGW_ADMIN_TOKEN=self.admin_token,
            LLMGW_DATAPLANE_TOKEN=self.dataplane_token,
            LLMGW_MASTER_KEY=self.master_key,
            **self._log_env(),
        )
        env.update(self.cp_env)
        argv = [
            binary("llmgw-controlplane"),
            "--listen", listen,
            "--data-dir", str(self.data_dir),
            "--log-format", "json",
            *self.cp_args,
        ]
        self.cp = Proc(f"{self.name}-cp{n}", argv, env, self.workdir / "cp-cwd",
                       self.workdir / f"{self.name}-controlplane-{n}.log")
        self.cp_addr = self.cp.wait_for(
            json_log_field("control plane listening", "address"), START_TIMEOUT, "the listening line"
        )

    def kill_control_plane(self) -> None:
        """SIGKILLs the control plane (no graceful anything)."""
        assert self.cp is not None
        self.cp.kill(signal.SIGKILL)

    def restart_control_plane(self) -> None:
        """Starts the control plane again on the same port and data dir
        (killing it first if it still runs), retrying the bind briefly."""
        assert self.cp is not None
        if self.cp.alive():
            self.kill_control_plane()
        same_addr = self.cp_addr
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.start_control_plane(same_addr)
                return
            except AssertionError:
                if time.monotonic() >= deadline or "cannot listen" not in self.cp.tail():
                    raise
                time.sleep(0.1)

    def start_data_plane(self) -> None:
        env = base_env(LLMGW_DATAPLANE_TOKEN=self.dataplane_token, **self._log_env())
        env.update(self.dp_env)
        argv = [
            binary("llmgw-dataplane"),
            "--listen", "127.0.0.1:0",
            "--control-plane", f"http://{self.cp_addr}",
            "--node-id", self.node_id,
            "--log-format", "json",
            "--shutdown-grace-s", "1",
            "--spool-dir", str(self.workdir / "dp-spool"),
            "--ops-listen", "127.0.0.1:0",
            *self.dp_args,
        ]
        self.dp = Proc(f"{self.name}-dp", argv, env, self.workdir / "dp-cwd",
                       self.workdir / f"{self.name}-dataplane.log")
        self.dp_addr = self.dp.wait_for(
            json_log_field("HTTP server listening", "listen"), START_TIMEOUT, "the listening line"
        )
        self.dp_ops_addr = self.dp.wait_for(
            json_log_field("ops server listening", "listen"), START_TIMEOUT, "the ops listening line"
        )
        wait_until(lambda: self.readyz() is not None, START_TIMEOUT, "data plane /readyz 200")

    def stop(self) -> None:
        self.http.close()
        for p in (self.dp, self.cp):
            if p is not None:
                p.kill()
        for m in [self.mock, *self.extra_mocks]:
            if m is not None:
                m.stop()

    def outputs(self) -> list[Path]:
        """Every output file of this gateway's processes."""
        return sorted(self.workdir.glob("*.log"))

    # ----- URLs and clients -----

    @property
    def url(self) -> str:
        return f"http://{self.dp_addr}"

    @property
    def ops_url(self) -> str:
        """The data plane's ops listener: /healthz, /readyz, /metrics."""
        return f"http://{self.dp_ops_addr}"

    def openai(self, key: str, **kw: Any) -> openai.OpenAI:
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 30)
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, **kw)

    def anthropic(self, key: str, **kw: Any) -> anthropic.Anthropic:
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 30)
        return anthropic.Anthropic(base_url=self.url, api_key=key, **kw)

    def genai(self, key: str, timeout_s: float = 30) -> genai.Client:
        """A `google-genai` client of the data plane's Gemini API
        (`/v1beta/models/{model}:generateContent`); it never retries."""
        return genai.Client(
            api_key=key,
            http_options=genai_types.HttpOptions(
                base_url=self.url, api_version="v1beta", timeout=int(timeout_s * 1000)
            ),
        )

    def readyz(self) -> int | None:
        """The data plane's applied version, or None while not ready."""
        return readyz_version(self.http, self.url)

    def metrics(self) -> str:
        """The data plane's /metrics text (on the ops listener)."""
        r = self.http.get(f"{self.ops_url}/metrics", timeout=10)
        r.raise_for_status()
        return r.text

    def metric(self, name: str, text: str | None = None, **labels: str) -> float:
        """The sum of the samples of `name` in the data plane's /metrics (or
        in `text`) whose labels include `labels`; 0 when there are none."""
        total = 0.0
        for line in (self.metrics() if text is None else text).splitlines():
            m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)", line)
            if not m or m.group(1) != name:
                continue
            got = dict(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            if all(got.get(k) == v for k, v in labels.items()):
                total += float(m.group(3))
        return total

    # ----- CLI -----

    def cli_raw(self, *args: str, json_out: bool = True, timeout: float = 30, stdin: str | None = None,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return run_cli(f"http://{self.cp_addr}", self.admin_token, self.workdir, *args,
                       json_out=json_out, timeout=timeout, stdin=stdin, env=env)

    def cli(self, *args: str) -> Any:
        return cli_json(self.cli_raw(*args), args)

    def config_version(self) -> int:
        # `-o json dataplanes` prints only the array; the table output
        # starts with "config version: N".
        p = self.cli_raw("dataplanes", json_out=False)
        if p.returncode != 0:
            raise CliError(["dataplanes"], p.returncode, p.stdout, p.stderr)
        m = re.search(r"config version:\s*(\d+)", p.stdout)
        assert m, f"no config version in `llmgw dataplanes` output:\n{p.stdout}"
        return int(m.group(1))

    def acked_version(self) -> int:
        for d in self.cli("dataplanes") or []:
            if d.get("node_id") == self.node_id:
                return int(d.get("acked_version") or 0)
        return 0

    def sync(self) -> int:
        """Waits until the data plane serves the control plane's current
        configuration version (its /readyz and its ACK)."""
        want = self.config_version()

        def caught_up() -> bool:
            v = self.readyz()
            return v is not None and v >= want and self.acked_version() >= want

        wait_until(caught_up, SYNC_TIMEOUT, f"the data plane to apply version {want}")
        return want

    # ----- configuration helpers -----

    def provider_key(self, protocol: str) -> str:
        """The provider key the mock's providers of `protocol` use."""
        return {
            "anthropic": self.anthropic_provider_key,
            "gemini": self.gemini_provider_key,
        }.get(protocol, self.openai_provider_key)

    def mock_provider(self, protocol: str) -> str:
        """The provider of `protocol` on this gateway's mock, added the
        first time it is asked for."""
        if protocol not in self.mock_providers:
            self.mock_providers[protocol] = self.add_provider(protocol)
        return self.mock_providers[protocol]

    def add_provider(self, protocol: str, base_url: str | None = None, api_key: str | None = None,
                     *extra: str, name: str | None = None) -> str:
        """Adds a provider; without `base_url`, one of `protocol` on the
        gateway's mock, with its key."""
        if base_url is None:
            assert self.mock is not None
            base_url = self.mock.provider_base_url(protocol)
            api_key = api_key or self.provider_key(protocol)
        name = name or f"p-{uid()}"
        args = ["provider", "add", name, "--protocol", protocol, "--base-url", base_url]
        if api_key:
            args += ["--api-key", api_key]
        self.cli(*args, *extra)
        self.sync()
        return name

    def add_model(self, targets: list[str], *opts: str, prefix: str = "m") -> str:
        name = f"{prefix}-{uid()}"
        args = ["model", "add", name]
        for t in targets:
            args += ["--target", t]
        self.cli(*args, *opts)
        self.sync()
        return name

    def add_key(self, models: list[str] | None = None, *opts: str, prefix: str = "k") -> tuple[str, str]:
        """Creates a client key; returns (name, secret)."""
        name = f"{prefix}-{uid()}"
        args = ["key", "create", name]
        if models:
            args += ["--models", ",".join(models)]
        out = self.cli(*args, *opts)
        self.sync()
        return name, out["key"]

    def start_extra_mock(self, protocol: str = "openai") -> tuple[Mock, str]:
        """A separate mock (own counters) behind a new provider."""
        m = Mock.start(self.workdir, f"{self.name}-mock-{uid()}")
        self.extra_mocks.append(m)
        return m, self.add_provider(protocol, m.provider_base_url(protocol), self.provider_key(protocol))

    # ----- request logs -----

    def logs(self, *args: str) -> list[dict[str, Any]]:
        out = self.cli("logs", *args)
        assert isinstance(out, list), f"`llmgw -o json logs` printed {out!r}"
        return out

    def log(self, request_id: str, timeout: float = LOG_TIMEOUT,
            until: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
        """The full record of one request, polled until it is stored."""

        def get() -> dict[str, Any] | None:
            p = self.cli_raw("logs", "get", request_id)
            if p.returncode != 0:
                return None
            rec = json.loads(p.stdout)
            if until is not None and not until(rec):
                return None
            return rec

        return wait_until(get, timeout, f"the log record {request_id}", interval=0.1)

    def key_logs(self, key_name: str, count: int, timeout: float = LOG_TIMEOUT) -> list[dict[str, Any]]:
        """The records of key `key_name`, polled until there are at least `count`."""
        box: dict[str, list] = {}

        def get() -> bool:
            box["v"] = self.logs("--key", key_name, "--limit", "1000")
            return len(box["v"]) >= count

        try:
            wait_until(get, timeout, f"{count} log records of key {key_name}", interval=0.1)
        except AssertionError as e:
            raise AssertionError(f"{e}; got {len(box.get('v') or [])}") from None
        return box["v"]


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterable[Gateway]:
    """One gateway per xdist worker, shared by tests that change no globals."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    g = Gateway(tmp_path_factory.mktemp(f"shared-{worker}"), name=f"shared-{worker}")
    try:
        g.start()
        yield g
    finally:
        g.stop()


class GatewayFactory:
    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp = tmp_path_factory
        self.made: list[Gateway] = []

    def __call__(
        self,
        name: str,
        cp_args: Iterable[str] = (),
        rust_log: str | None = None,
        dp_args: Iterable[str] = (),
        cp_env: dict[str, str] | None = None,
        dp_env: dict[str, str] | None = None,
    ) -> Gateway:
        g = Gateway(self.tmp.mktemp(name), name=name, cp_args=cp_args, rust_log=rust_log,
                    dp_args=dp_args, cp_env=cp_env, dp_env=dp_env)
        self.made.append(g)
        return g.start()

    def close(self) -> None:
        for g in self.made:
            g.stop()


@pytest.fixture(scope="module")
def make_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterable[GatewayFactory]:
    f = GatewayFactory(tmp_path_factory)
    try:
        yield f
    finally:
        f.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterable[None]:
    """On a failure, adds the tail of each involved process's output (the
    whole output stays in the file named in the section title)."""
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    gateways: list[Gateway] = []
    for v in getattr(item, "funcargs", {}).values():
        if isinstance(v, Gateway):
            gateways.append(v)
        elif isinstance(v, GatewayFactory):
            gateways.extend(v.made)
    for g in gateways:
        for proc in [g.cp, g.dp, *(m.proc for m in [g.mock, *g.extra_mocks] if m)]:
            if proc is not None:
                rep.sections.append((f"{proc.name} output, tail ({proc.log_path})", proc.tail(30)))
    # Other harnesses (tests/python/cluster.py) say what to quote themselves.
    for v in getattr(item, "funcargs", {}).values():
        sections = getattr(v, "report_sections", None)
        if callable(sections):
            rep.sections.extend(sections())


# ---------------------------------------------------------------------------
# Small shared helpers for tests
# ---------------------------------------------------------------------------


def sse_events(raw: bytes) -> list[str]:
    """Splits an SSE body into its events (text, without the blank line)."""
    text = raw.decode("utf-8").replace("\r\n", "\n")
    return [e for e in text.split("\n\n") if e.strip()]


def sse_data(event: str) -> str:
    return "\n".join(l[5:].lstrip(" ") if l.startswith("data:") else "" for l in event.split("\n")
                     if l.startswith("data:"))


def sse_name(event: str) -> str | None:
    for l in event.split("\n"):
        if l.startswith("event:"):
            return l[6:].strip()
    return None
