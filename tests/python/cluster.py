"""Harness for the scale-out tests (tests/python/test_cluster.py): several
control planes on one PostgreSQL database, several data planes, and
Debian's nginx as the load balancer in front of them, all on loopback.

- `PgDatabase`: a database of its own for one test, created and dropped with
  `psql` through the admin URL in `LLMGW_TEST_POSTGRES_URL` (scripts/pg.sh).
- `Cluster`: the processes of one test (mocks, control planes, data planes,
  nginx) and the `llmgw` CLI against any of its control planes. Every
  process's output goes to a file in the test's temporary folder; the report
  hook in conftest.py quotes their tails when the test fails.
- `DataPlane`: started on port 0 the first time, then restarted on the same
  address, node id and spool folder (what a rolling restart or a crashed
  process does).
- `Nginx`: `nginx -p DIR -c DIR/nginx.conf -g 'daemon off;'` with everything
  (pid, logs, temp paths) inside DIR, on a free port picked by binding port 0
  (retried when another process takes it first).
- `Load`: client threads with the official openai SDK (no SDK retries), each
  recording every request it made: when it started and ended, whether it
  succeeded, its request id, which data plane served it and which upstream
  model answered.
- `read_spool`: the request ids in a data plane's spool folder, parsed from
  the on-disk format (dataplane/src/logs/spool.rs).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit, urlunsplit

import httpx
import openai

from conftest import (
    LOG_TIMEOUT,
    START_TIMEOUT,
    SYNC_TIMEOUT,
    CliError,
    Mock,
    Proc,
    base_env,
    binary,
    cli_json,
    json_log_field,
    readyz_version,
    run_cli,
    uid,
    wait_until,
)

#: Where nginx is looked for when it is not on PATH (Debian puts it in /usr/sbin).
NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
#: Request id header of the data plane (dataplane/src/proxy/mod.rs REQUEST_ID).
REQUEST_ID = "x-llmgw-request-id"
#: Response header nginx adds: the data plane(s) it tried, as $upstream_addr.
UPSTREAM_HEADER = "x-upstream-addr"


# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------


def pg_admin_url() -> str:
    url = os.environ.get("LLMGW_TEST_POSTGRES_URL", "").strip()
    if not url:
        raise RuntimeError(
            "LLMGW_TEST_POSTGRES_URL is not set, so the cluster tests (PostgreSQL) cannot run: "
            "`source scripts/pg.sh` first (scripts/test.sh does it)"
        )
    return url


def psql() -> str:
    exe = shutil.which("psql") or "/usr/bin/psql"
    if not os.path.exists(exe):
        raise RuntimeError("psql not found: install postgresql-client (scripts/pg.sh installs PostgreSQL 15)")
    return exe


def _psql(admin_url: str, sql: str) -> str:
    p = subprocess.run(
        [psql(), admin_url, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env=base_env(),
    )
    if p.returncode != 0:
        raise RuntimeError(f"psql {sql!r} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


class PgDatabase:
    """`llmgw_py_<unix seconds>_<random>`, dropped by `drop()`. Databases of
    this kind older than an hour (left by killed test runs) are dropped on
    the way, like e2e's PgDatabase does for its own."""

    def __init__(self) -> None:
        self.admin_url = pg_admin_url()
        now = int(time.time())
        self.name = f"llmgw_py_{now}_{secrets.token_hex(4)}"
        for old in _psql(self.admin_url,
                         "SELECT datname FROM pg_database WHERE datname LIKE 'llmgw\\_py\\_%'").split():
            parts = old.split("_")
            if len(parts) >= 3 and parts[2].isdigit() and int(parts[2]) + 3600 < now:
                try:
                    _psql(self.admin_url, f"DROP DATABASE IF EXISTS {old} WITH (FORCE)")
                except RuntimeError:
                    pass
        _psql(self.admin_url, f"CREATE DATABASE {self.name}")
        u = urlsplit(self.admin_url)
        self.url = urlunsplit((u.scheme, u.netloc, f"/{self.name}", u.query, u.fragment))

    def drop(self) -> None:
        try:
            _psql(self.admin_url, f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        except RuntimeError:
            pass


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------


def free_port() -> int:
    """A port that was free a moment ago (the caller retries if it is taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_group(p: Proc) -> None:
    """SIGKILLs the process and its process group (nginx's workers), while
    the leader is still our unreaped child (so the id is still ours)."""
    if p.alive():
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
    p.kill()


class ControlPlane:
    def __init__(self, cluster: "Cluster", name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.data_dir = cluster.workdir / f"{name}-data"
        self.proc: Proc | None = None
        self.addr = ""
        self.starts = 0
        #: Extra command-line flags (e.g. `--quota-lease-ms`).
        self.args: list[str] = list(cluster.cp_args)

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def start(self) -> "ControlPlane":
        c = self.cluster
        self.starts += 1
        env = base_env(
            LLMGW_ADMIN_TOKEN=c.admin_token,
            LLMGW_DATAPLANE_TOKEN=c.dataplane_token,
            LLMGW_MASTER_KEY=c.master_key,
            DATABASE_URL=c.db.url,
        )
        argv = [
            binary("llmgw-controlplane"),
            "--listen", self.addr or "127.0.0.1:0",
            "--data-dir", str(self.data_dir),
            "--log-format", "json",
            *self.args,
        ]
        self.proc = c.track(Proc(f"{self.name}#{self.starts}", argv, env, c.workdir / f"{self.name}-cwd",
                                 c.workdir / f"{self.name}-{self.starts}.log"))
        self.addr = self.proc.wait_for(
            json_log_field("control plane listening", "address"), START_TIMEOUT, "the listening line"
        )
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.kill(sig)


class DataPlane:
    """One data plane: its node id and spool folder stay the same across
    restarts, and so does its address (port 0 only the first time)."""

    def __init__(self, cluster: "Cluster", name: str, control_planes: list[ControlPlane],
                 grace_s: int = 10) -> None:
        self.cluster = cluster
        self.name = name
        self.node_id = f"{name}-{uid()}"
        self.spool_dir = cluster.workdir / f"{name}-spool"
        self.control_planes = control_planes
        self.grace_s = grace_s
        self.proc: Proc | None = None
        self.addr = ""
        self.starts = 0
        self.http = httpx.Client(timeout=5, trust_env=False)

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def start(self) -> "DataPlane":
        """Starts the process (on the same address as before, retrying the
        bind briefly) and waits until it listens; not until it is ready."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self._spawn()
                return self
            except AssertionError:
                assert self.proc is not None
                if time.monotonic() >= deadline or "cannot listen" not in self.proc.tail():
                    raise
                time.sleep(0.05)

    def _spawn(self) -> None:
        c = self.cluster
        self.starts += 1
        env = base_env(LLMGW_DATAPLANE_TOKEN=c.dataplane_token)
        argv = [
            binary("llmgw-dataplane"),
            "--listen", self.addr or "127.0.0.1:0",
            "--control-plane", ",".join(cp.url for cp in self.control_planes),
            "--node-id", self.node_id,
            "--log-format", "json",
            "--shutdown-grace-s", str(self.grace_s),
            "--spool-dir", str(self.spool_dir),
            "--ops-listen", "127.0.0.1:0",
        ]
        self.proc = c.track(Proc(f"{self.name}#{self.starts}", argv, env, c.workdir / f"{self.name}-cwd",
                                 c.workdir / f"{self.name}-{self.starts}.log"))
        addr = self.proc.wait_for(
            json_log_field("HTTP server listening", "listen"), START_TIMEOUT, "the listening line"
        )
        if self.addr and addr != self.addr:
            raise AssertionError(f"{self.name} restarted on {addr}, not {self.addr}")
        self.addr = addr

    def readyz(self) -> int | None:
        """The applied version while /readyz is 200, else None."""
        return readyz_version(self.http, self.url)

    def wait_ready(self, version: int = 1, timeout: float = SYNC_TIMEOUT) -> int:
        return wait_until(lambda: (v := self.readyz()) is not None and v >= version and v,
                          timeout, f"{self.name} /readyz 200 with version >= {version}")

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, then waits (bounded) for the process to exit; returns its code."""
        assert self.proc is not None
        self.proc.popen.send_signal(signal.SIGTERM)
        try:
            return self.proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} did not exit within {timeout} s of SIGTERM; output:\n{self.proc.tail()}"
            ) from None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill(signal.SIGKILL)

    def stream_opened_to(self, start: int = 0) -> list[str]:
        """Control planes this process opened a discovery stream to, in order."""
        assert self.proc is not None
        with self.proc.cond:
            lines = self.proc.lines[start:]
        out = []
        parse = json_log_field("discovery stream open", "control_plane")
        for l in lines:
            v = parse(l)
            if v is not None:
                out.append(str(v).rstrip("/"))
        return out


def find_nginx() -> str:
    exe = shutil.which("nginx")
    if exe:
        return exe
    for c in NGINX_CANDIDATES:
        if os.access(c, os.X_OK):
            return c
    raise RuntimeError(
        "nginx not found: scripts/test.sh installs it (apt-get install -y nginx-light); "
        "or set LLMGW_NGINX to its path"
    )


NGINX_CONF = """\
# Written by tests/python/cluster.py for one test.
{user}worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    log_format upstream '$remote_addr "$request" $status up=$upstream_addr '
                        'upstatus=$upstream_status rt=$request_time';
    access_log {dir}/access.log upstream;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    upstream llmgw_dataplanes {{
{servers}
        keepalive 32;
        keepalive_timeout 20s;
    }}

    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 32m;

        location = /nginx-health {{
            default_type text/plain;
            return 200 "ok\\n";
        }}

        location / {{
            proxy_pass http://llmgw_dataplanes;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_cache off;
            gzip off;
            # Passive failover (nginx OSS has no active health checks): a
            # refused connection goes to the next data plane. No
            # non_idempotent: a POST is never sent twice; a draining data
            # plane answers with Connection: close instead of closing
            # keep-alive connections under nginx.
            proxy_next_upstream {next_upstream};
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 2s;
            proxy_read_timeout 60s;
            proxy_send_timeout 60s;
            add_header X-Upstream-Addr $upstream_addr always;
        }}
    }}
}}
"""


class Nginx:
    """nginx in the foreground with its own prefix folder."""

    def __init__(self, cluster: "Cluster", upstreams: list[str], name: str = "nginx",
                 max_fails: int = 1, fail_timeout: str = "1s",
                 next_upstream: str = "error timeout") -> None:
        self.cluster = cluster
        self.name = name
        self.dir = cluster.workdir / name
        self.upstreams = upstreams
        self.max_fails = max_fails
        self.fail_timeout = fail_timeout
        self.next_upstream = next_upstream
        self.proc: Proc | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, attempts: int = 10) -> "Nginx":
        exe = os.environ.get("LLMGW_NGINX") or find_nginx()
        self.dir.mkdir(parents=True, exist_ok=True)
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.dir / sub).mkdir(exist_ok=True)
        servers = "\n".join(
            f"        server {u} max_fails={self.max_fails} fail_timeout={self.fail_timeout};"
            for u in self.upstreams
        )
        # As root, nginx's workers would switch to `nobody`, who cannot use
        # the test's 0700 folders.
        user = "user root;\n" if os.geteuid() == 0 else ""
        last = ""
        for n in range(attempts):
            self.port = free_port()
            conf = self.dir / "nginx.conf"
            conf.write_text(NGINX_CONF.format(dir=self.dir, port=self.port, servers=servers,
                                              user=user, next_upstream=self.next_upstream))
            argv = [exe, "-p", str(self.dir), "-e", str(self.dir / "error.log"),
                    "-c", str(conf), "-g", "daemon off;"]
            self.proc = self.cluster.track(Proc(f"{self.name}#{n + 1}", argv, base_env(), self.dir,
                                                self.cluster.workdir / f"{self.name}-{n + 1}.log"))
            deadline = time.monotonic() + START_TIMEOUT
            while self.proc.alive() and time.monotonic() < deadline:
                if self._healthy() and self.proc.alive():
                    return self
                time.sleep(0.02)
            kill_group(self.proc)
            last = self.error_log()
            if "Address already in use" not in last + self.proc.tail():
                raise AssertionError(f"nginx did not start:\n{self.proc.tail()}\n{last[-3000:]}")
        raise AssertionError(f"nginx could not bind a free port in {attempts} attempts:\n{last[-3000:]}")

    def _healthy(self) -> bool:
        try:
            r = httpx.get(f"{self.url}/nginx-health", timeout=2, trust_env=False)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    def error_log(self) -> str:
        p = self.dir / "error.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def outputs(self) -> list[tuple[str, str]]:
        out = []
        for f in ("error.log", "access.log"):
            p = self.dir / f
            if p.exists():
                lines = p.read_text(errors="replace").splitlines()[-30:]
                out.append((f"nginx {f}, tail ({p})", "\n".join(lines)))
        return out


# ---------------------------------------------------------------------------
# The cluster
# ---------------------------------------------------------------------------


class Cluster:
    """Processes of one test; `close()` kills whatever still runs and drops
    the database."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.admin_token = "adm-" + secrets.token_hex(20)
        self.dataplane_token = "dpt-" + secrets.token_hex(20)
        self.master_key = base64.b64encode(secrets.token_bytes(32)).decode()
        self.provider_key = "sk-prov-oai-" + secrets.token_hex(16)
        self.procs: list[Proc] = []
        self.mocks: list[Mock] = []
        self.cps: list[ControlPlane] = []
        self.dps: list[DataPlane] = []
        self.nginxes: list[Nginx] = []
        self.db: PgDatabase = PgDatabase()
        #: Extra flags for every control plane started after this is set.
        self.cp_args: list[str] = []

    def track(self, p: Proc) -> Proc:
        self.procs.append(p)
        return p

    # ----- parts -----

    def mock(self, name: str) -> Mock:
        m = Mock.start(self.workdir, name)
        self.procs.append(m.proc)
        self.mocks.append(m)
        return m

    def control_plane(self, name: str = "cp") -> ControlPlane:
        cp = ControlPlane(self, name).start()
        self.cps.append(cp)
        return cp

    def data_plane(self, name: str, control_planes: list[ControlPlane], grace_s: int = 10) -> DataPlane:
        dp = DataPlane(self, name, control_planes, grace_s).start()
        self.dps.append(dp)
        return dp

    def nginx(self, dps: list[DataPlane], **kw: Any) -> Nginx:
        n = Nginx(self, [dp.addr for dp in dps], **kw).start()
        self.nginxes.append(n)
        return n

    # ----- CLI -----

    def cli_raw(self, cp: ControlPlane, *args: str, json_out: bool = True,
                timeout: float = 30) -> subprocess.CompletedProcess:
        return run_cli(cp.url, self.admin_token, self.workdir, *args, json_out=json_out,
                       timeout=timeout)

    def cli(self, cp: ControlPlane, *args: str) -> Any:
        return cli_json(self.cli_raw(cp, *args), args)

    def config_version(self, cp: ControlPlane) -> int:
        p = self.cli_raw(cp, "dataplanes", json_out=False)
        if p.returncode != 0:
            raise CliError(["dataplanes"], p.returncode, p.stdout, p.stderr)
        m = re.search(r"config version:\s*(\d+)", p.stdout)
        assert m, f"no config version in `llmgw dataplanes` output:\n{p.stdout}"
        return int(m.group(1))

    def dataplanes(self, cp: ControlPlane) -> dict[str, dict[str, Any]]:
        """`llmgw dataplanes` by node id."""
        return {d["node_id"]: d for d in (self.cli(cp, "dataplanes") or [])}

    def wait_acked(self, cp: ControlPlane, dps: Iterable[DataPlane], version: int,
                   timeout: float = SYNC_TIMEOUT) -> dict[str, dict[str, Any]]:
        """Waits until `llmgw dataplanes` shows each of `dps` connected with
        an ACKed version of at least `version`; returns the listing."""
        dps = list(dps)
        box: dict[str, Any] = {}

        def ok() -> bool:
            box["v"] = self.dataplanes(cp)
            return all(
                (d := box["v"].get(dp.node_id)) is not None
                and d.get("connected") and int(d.get("acked_version") or 0) >= version
                for dp in dps
            )

        try:
            wait_until(ok, timeout, f"every data plane to ACK version {version}", interval=0.05)
        except AssertionError as e:
            raise AssertionError(f"{e}; `llmgw dataplanes`: {box.get('v')}") from None
        return box["v"]

    def sync(self, cp: ControlPlane, dps: Iterable[DataPlane] | None = None) -> int:
        dps = list(self.dps if dps is None else dps)
        want = self.config_version(cp)
        for dp in dps:
            dp.wait_ready(want)
        self.wait_acked(cp, dps, want)
        return want

    def logs(self, cp: ControlPlane, key_name: str, limit: int = 20000) -> list[dict[str, Any]]:
        out = self.cli(cp, "logs", "--key", key_name, "--limit", str(limit))
        assert isinstance(out, list), f"`llmgw -o json logs` printed {out!r}"
        return out

    def wait_logs(self, cp: ControlPlane, key_name: str, want_ids: set[str],
                  timeout: float = LOG_TIMEOUT) -> list[dict[str, Any]]:
        """Polls the log store until every id of `want_ids` is there; returns
        every record of the key (which may hold more)."""
        box: dict[str, Any] = {"v": []}

        def ok() -> bool:
            box["v"] = self.logs(cp, key_name)
            return want_ids <= {r["id"] for r in box["v"]}

        try:
            wait_until(ok, timeout, f"{len(want_ids)} log records of key {key_name}", interval=0.2)
        except AssertionError as e:
            have = {r["id"] for r in box["v"]}
            missing = sorted(want_ids - have)
            raise AssertionError(
                f"{e}: {len(have)} records stored, {len(missing)} of the {len(want_ids)} "
                f"expected ids missing, e.g. {missing[:5]}"
            ) from None
        return box["v"]

    # ----- teardown and reports -----

    def report_sections(self) -> list[tuple[str, str]]:
        out = [(f"{p.name} output, tail ({p.log_path})", p.tail(30)) for p in self.procs]
        for n in self.nginxes:
            out.extend(n.outputs())
        return out

    def close(self) -> None:
        for dp in self.dps:
            dp.http.close()
        for m in self.mocks:
            m.http.close()
        # Data planes first (their shipper would otherwise log reconnects).
        for p in reversed(self.procs):
            try:
                kill_group(p)
            except Exception:  # noqa: BLE001 - best effort
                pass
        self.db.drop()


# ---------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------


@dataclass
class Result:
    """One request of a load thread."""

    worker: int
    seq: int
    target: str  # base URL it was sent to
    stream: bool
    start: float  # time.monotonic()
    end: float = 0.0
    ok: bool = False
    status: int | None = None
    error: str = ""
    request_id: str = ""
    upstream: str = ""  # nginx's X-Upstream-Addr, when through nginx
    model: str = ""  # the model the response names (the upstream model)
    text: str = ""


@dataclass
class Load:
    """`workers` threads that each loop: send a chat completion (every
    `stream_every`th one streamed) with the openai SDK to `targets[w %
    len(targets)]`, record the result. No SDK retries: a failure is a
    failure. Per-target gates pause the threads of a target (for a data plane
    that is about to be killed) without losing track of the requests in
    flight."""

    targets: list[str]
    key: str
    model: str
    workers: int = 4
    stream_every: int = 3
    headers: dict[str, str] = field(default_factory=dict)
    stream_headers: dict[str, str] = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.stop_ev = threading.Event()
        self.threads: list[threading.Thread] = []
        self.paused: set[str] = set()
        self.crashed: list[BaseException] = []

    def start(self) -> "Load":
        for w in range(self.workers):
            t = threading.Thread(target=self._run, args=(w,), name=f"load-{w}", daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def pause(self, target: str) -> float:
        """Stops new requests to `target`; returns the time from which none
        starts (requests started before may still be running)."""
        with self.lock:
            self.paused.add(target)
            return time.monotonic()

    def resume(self, target: str) -> None:
        with self.cond:
            self.paused.discard(target)
            self.cond.notify_all()

    def stop(self, timeout: float = 60) -> list[Result]:
        self.stop_ev.set()
        with self.cond:
            self.cond.notify_all()
        for t in self.threads:
            t.join(timeout)
            assert not t.is_alive(), f"load thread {t.name} did not stop within {timeout} s"
        assert not self.crashed, f"a load thread crashed: {self.crashed[0]!r}"
        return self.results

    def snapshot(self) -> list[Result]:
        with self.lock:
            return [r for r in self.results if r.end]

    def wait(self, pred: Callable[[list[Result]], bool], timeout: float, what: str) -> None:
        """Waits until `pred(finished results)` holds."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred([r for r in self.results if r.end]):
                if self.crashed:
                    raise AssertionError(f"a load thread crashed: {self.crashed[0]!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    done = [r for r in self.results if r.end]
                    raise AssertionError(
                        f"timed out after {timeout} s waiting for {what} "
                        f"({len(done)} requests done, {sum(not r.ok for r in done)} failed)"
                    )
                self.cond.wait(min(left, 0.5))

    def _run(self, w: int) -> None:
        try:
            target = self.targets[w % len(self.targets)]
            client = openai.OpenAI(base_url=f"{target}/v1", api_key=self.key, max_retries=0,
                                   timeout=30, http_client=httpx.Client(trust_env=False, timeout=30))
            seq = 0
            while not self.stop_ev.is_set():
                with self.cond:
                    while target in self.paused and not self.stop_ev.is_set():
                        self.cond.wait(0.5)
                    if self.stop_ev.is_set():
                        break
                    r = Result(w, seq, target, stream=seq % self.stream_every == self.stream_every - 1,
                               start=time.monotonic())
                    self.results.append(r)
                seq += 1
                self._one(client, r, f"load w{w} #{r.seq}")
                with self.cond:
                    r.end = time.monotonic()
                    self.cond.notify_all()
            client.close()
        except BaseException as e:  # noqa: BLE001 - reported by stop()/wait()
            self.crashed.append(e)
            with self.cond:
                self.cond.notify_all()

    def _one(self, client: openai.OpenAI, r: Result, prompt: str) -> None:
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=self.model,
                messages=[{"role": "user", "content": prompt}],
                stream=r.stream,
                extra_headers={**self.headers, **(self.stream_headers if r.stream else {})},
            )
            r.status = raw.status_code
            r.request_id = raw.headers.get(REQUEST_ID, "")
            r.upstream = raw.headers.get(UPSTREAM_HEADER, "")
            parsed = raw.parse()
            if r.stream:
                parts, finish, model = [], None, ""
                for chunk in parsed:
                    model = chunk.model or model
                    for ch in chunk.choices:
                        parts.append(ch.delta.content or "")
                        finish = ch.finish_reason or finish
                if finish is None:
                    raise AssertionError("stream ended without a finish_reason")
                r.model, r.text = model, "".join(parts)
            else:
                r.model, r.text = parsed.model, parsed.choices[0].message.content or ""
            r.ok = True
        except Exception as e:  # noqa: BLE001 - a failed request is data
            r.error = f"{type(e).__name__}: {e}"
            status = getattr(e, "status_code", None)
            if status is not None:
                r.status = status
            resp = getattr(e, "response", None)
            if resp is not None:
                r.request_id = resp.headers.get(REQUEST_ID, "") or r.request_id
                r.upstream = resp.headers.get(UPSTREAM_HEADER, "") or r.upstream


def describe_failures(results: Iterable[Result], limit: int = 10) -> str:
    bad = [r for r in results if not r.ok]
    lines = [f"{len(bad)} failed requests:"]
    for r in bad[:limit]:
        lines.append(f"  w{r.worker}#{r.seq} -> {r.target} up={r.upstream or '?'} stream={r.stream} "
                     f"status={r.status} id={r.request_id or '-'} error={r.error[:300]}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# The spool on disk
# ---------------------------------------------------------------------------

SPOOL_MAGIC = b"LLMGWSP1"
ACK_MAGIC = b"LLMGWAK1"
ACK_SLOT_BYTES = 512


def _read_acked(b: bytes) -> int:
    """The sequence in the `acked` file (spool.rs): the newest valid of its
    two slots (magic, generation, acked, CRC32 of the 24 bytes before), or
    the 12-byte format of earlier versions (seq, CRC32 of it); else 0."""
    best: tuple[int, int] | None = None
    for off in (0, ACK_SLOT_BYTES):
        s = b[off:off + 28]
        if (len(s) == 28 and s[:8] == ACK_MAGIC
                and zlib.crc32(s[:24]) == int.from_bytes(s[24:28], "little")):
            gen = int.from_bytes(s[8:16], "little")
            if best is None or gen > best[0]:
                best = (gen, int.from_bytes(s[16:24], "little"))
    if best is not None:
        return best[1]
    if len(b) >= 12 and zlib.crc32(b[:8]) == int.from_bytes(b[8:12], "little"):
        return int.from_bytes(b[:8], "little")
    return 0


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _record_id_and_sequence(payload: bytes) -> tuple[str, int]:
    """Fields 1 (id, string) and 2 (sequence, varint) of a RequestLog."""
    i, rid, seq = 0, "", 0
    while i < len(payload):
        key, i = _varint(payload, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _varint(payload, i)
            if num == 2:
                seq = v
        elif wire == 2:
            n, i = _varint(payload, i)
            if num == 1:
                rid = payload[i:i + n].decode()
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"wire type {wire}")
    return rid, seq


def read_spool(spool_dir: Path) -> tuple[dict[str, int], int]:
    """Every record in the spool's segments that recovery would keep (frames
    up to the first incomplete or damaged one, as spool.rs reads them): id
    -> sequence; and the acknowledged sequence from the `acked` file."""
    records: dict[str, int] = {}
    for seg in sorted(spool_dir.glob("*.seg")):
        data = seg.read_bytes()
        if not data.startswith(SPOOL_MAGIC):
            continue
        i = len(SPOOL_MAGIC)
        while i + 8 <= len(data):
            n = int.from_bytes(data[i:i + 4], "little")
            crc = int.from_bytes(data[i + 4:i + 8], "little")
            payload = data[i + 8:i + 8 + n]
            if len(payload) < n or zlib.crc32(data[i:i + 4] + payload) != crc:
                break
            try:
                rid, seq = _record_id_and_sequence(payload)
            except (ValueError, IndexError, UnicodeDecodeError):
                break
            records[rid] = seq
            i += 8 + n
    ack = spool_dir / "acked"
    acked = _read_acked(ack.read_bytes()) if ack.exists() else 0
    return records, acked
