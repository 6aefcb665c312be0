"""Tests of deploy/checks/check_deploy.py: each check must fail on a broken
copy of the files it guards, with a message that says what is wrong. Also
tests the two shell scripts the deployment ships (the image's health check and
the compose secrets step).

    deploy/checks/.venv/bin/python -m unittest discover -s deploy/checks -p 'test_*.py'
"""

from __future__ import annotations

import contextlib
import http.server
import io
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import unittest
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import check_deploy  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SKIP_DIRS = {"target", "node_modules", ".git", ".venv", "dist", "test-artifacts", "results", "data", "src/gen"}


def ignore(dirpath: str, names: list[str]) -> set[str]:
    rel = os.path.relpath(dirpath, REPO)
    out = {n for n in names if n in SKIP_DIRS or n.startswith(".venv")}
    if rel == "dashboard/src":
        out.add("gen")
    return out


def clone_files() -> list[str] | None:
    """The files a fresh clone would have (tracked, plus new files git does
    not ignore), or None outside a git work tree."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=REPO, capture_output=True, check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        return None
    return [f for f in out.split("\0") if f and (REPO / f).is_file()]


CLONE_FILES = clone_files()


class RepoCopy(unittest.TestCase):
    """A scratch copy of the repository, as a clone has it, made once per test
    class; each test's edits are undone after it."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.TemporaryDirectory(prefix="llmgw-deploy-test-")
        cls.root = Path(cls.tmp.name) / "repo"
        if CLONE_FILES is None:
            shutil.copytree(REPO, cls.root, ignore=ignore, symlinks=True)
            return
        for f in CLONE_FILES:
            target = cls.root / f
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, target)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.tmp.cleanup()

    def setUp(self) -> None:
        self.saved: dict[Path, str] = {}
        self.created: list[Path] = []

    def tearDown(self) -> None:
        for path, text in self.saved.items():
            path.write_text(text)
        for path in self.created:
            shutil.rmtree(path, ignore_errors=True)

    def write(self, rel: str, text: str) -> None:
        path = self.root / rel
        self.saved.setdefault(path, path.read_text())
        path.write_text(text)

    def edit(self, rel: str, old: str, new: str) -> None:
        text = (self.root / rel).read_text()
        self.assertIn(old, text, f"test setup: {old!r} not found in {rel}")
        self.write(rel, text.replace(old, new, 1))

    def problems(self, *sections: str) -> list[str]:
        with contextlib.redirect_stdout(io.StringIO()):
            return check_deploy.run(self.root, list(sections), skip_cargo=True)

    def assertFails(self, section: str, *fragments: str) -> None:
        problems = self.problems(section)
        joined = "\n".join(problems)
        self.assertTrue(problems, f"the {section} check passed on a broken file")
        for f in fragments:
            self.assertIn(f, joined)


class Baseline(RepoCopy):
    def test_the_repository_passes_every_check(self) -> None:
        self.assertEqual(self.problems(*check_deploy.SECTIONS), [])


class KubernetesChecks(RepoCopy):
    def test_an_unknown_field_fails_the_schema(self) -> None:
        self.edit("deploy/kubernetes/dataplane.yaml", "  replicas: 2", "  replica: 2")
        self.assertFails("kubernetes", "is not valid Kubernetes", "replica")

    def test_a_wrong_type_fails_the_schema(self) -> None:
        self.edit("deploy/kubernetes/dataplane-hpa.yaml", "minReplicas: 2", "minReplicas: two")
        self.assertFails("kubernetes", "is not valid Kubernetes", "minReplicas")

    def test_an_unknown_api_version_fails(self) -> None:
        self.edit("deploy/kubernetes/dataplane-pdb.yaml", "apiVersion: policy/v1", "apiVersion: policy/v1beta9")
        self.assertFails("kubernetes", "no schema for kind PodDisruptionBudget")

    def test_a_grace_period_shorter_than_the_drain_fails(self) -> None:
        self.edit("deploy/kubernetes/dataplane.yaml", "terminationGracePeriodSeconds: 150", "terminationGracePeriodSeconds: 60")
        self.assertFails("kubernetes", "terminationGracePeriodSeconds 60 is shorter than the drain")

    def test_readiness_must_be_readyz(self) -> None:
        self.edit("deploy/kubernetes/dataplane.yaml", "path: /readyz", "path: /healthz")
        self.assertFails("kubernetes", "readinessProbe must be httpGet /readyz")

    def test_a_manifest_missing_from_the_kustomization_fails(self) -> None:
        self.edit("deploy/kubernetes/kustomization.yaml", "  - dataplane-pdb.yaml\n", "")
        self.assertFails("kubernetes", "does not list dataplane-pdb.yaml")

    def test_a_missing_secret_key_fails(self) -> None:
        self.edit("deploy/kubernetes/dataplane.yaml", "key: dataplane-token", "key: dataplane-tokn")
        self.assertFails("kubernetes", "has no key 'dataplane-tokn'")

    def test_a_writable_root_filesystem_fails(self) -> None:
        self.edit("deploy/kubernetes/controlplane.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false")
        self.assertFails("kubernetes", "readOnlyRootFilesystem must be true")

    def test_an_http_probe_on_the_control_plane_fails(self) -> None:
        self.edit(
            "deploy/kubernetes/controlplane.yaml",
            "readinessProbe:\n            tcpSocket:\n              port: grpc",
            "readinessProbe:\n            httpGet:\n              path: /healthz\n              port: grpc",
        )
        self.assertFails("kubernetes", "readinessProbe must be a tcpSocket probe")


class DockerfileChecks(RepoCopy):
    def test_cargo_build_without_locked_fails(self) -> None:
        self.edit("deploy/Dockerfile", "cargo build --release --locked --bins", "cargo build --release --bins")
        self.assertFails("build-commands", "build with --locked")

    def test_a_different_cargo_selection_fails(self) -> None:
        self.edit("deploy/Dockerfile", "cargo build --release --locked --bins", "cargo build --release --locked --bins --features fast")
        self.assertFails("build-commands", "must build the same binaries", "scripts/test.sh")

    def test_a_debug_build_fails(self) -> None:
        self.edit("deploy/Dockerfile", "cargo build --release --locked --bins", "cargo build --locked --bins")
        self.assertFails("build-commands", "release build")

    def test_npm_install_instead_of_npm_ci_fails(self) -> None:
        self.edit("deploy/Dockerfile", "npm ci --no-audit --no-fund", "npm install")
        self.assertFails("build-commands", "must install with `npm ci`")

    def test_a_changed_ci_build_is_noticed(self) -> None:
        self.edit("scripts/test.sh", 'cargo build --workspace --bins "${CARGO_LOCKED[@]}"',
                  'cargo build --workspace --bins --all-features "${CARGO_LOCKED[@]}"')
        self.assertFails("build-commands", "scripts/test.sh (CI's build) runs", "--all-features")

    def test_an_npm_command_the_scripts_do_not_run_fails(self) -> None:
        self.edit("deploy/Dockerfile", "RUN npm run build", "RUN npm run build:prod")
        self.assertFails("build-commands", "`npm run build:prod`")

    def test_running_as_root_fails(self) -> None:
        self.edit("deploy/Dockerfile", "USER 10001:10001", "USER root")
        self.assertFails("dockerfile", "must not run as root")

    def test_no_healthcheck_fails(self) -> None:
        self.edit("deploy/Dockerfile", "HEALTHCHECK --interval", "# HEALTHCHECK --interval")
        self.edit("deploy/Dockerfile", '    CMD ["llmgw-healthcheck"]', "#")
        self.assertFails("dockerfile", "no HEALTHCHECK")

    def test_an_entrypoint_fails(self) -> None:
        self.edit("deploy/Dockerfile", 'CMD ["llmgw-controlplane"]', 'ENTRYPOINT ["llmgw-controlplane"]')
        self.assertFails("dockerfile", "role must be chosen by the command")

    def test_a_missing_workspace_member_fails(self) -> None:
        self.edit("deploy/Dockerfile", "COPY bench/ bench/\n", "")
        self.assertFails("docker-context", "does not COPY bench")

    def test_missing_migrations_fail(self) -> None:
        self.edit("deploy/Dockerfile", "COPY migrations/ migrations/\n", "")
        self.assertFails("docker-context", "does not COPY migrations/")

    def test_missing_cargo_settings_fail(self) -> None:
        self.edit("deploy/Dockerfile", "COPY .cargo/ .cargo/\n", "")
        self.assertFails("docker-context", "does not COPY .cargo/config.toml")

    def test_the_dashboard_needs_proto(self) -> None:
        self.edit("deploy/Dockerfile", "COPY proto/ /src/proto/\n", "")
        self.assertFails("docker-context", "reads ../proto")

    def test_dockerignore_must_not_exclude_sources(self) -> None:
        self.write(".dockerignore", (self.root / ".dockerignore").read_text() + "migrations/\n")
        self.assertFails("docker-context", ".dockerignore: excludes migrations/")

    def test_dockerignore_must_exclude_secrets(self) -> None:
        self.edit(".dockerignore", ".env\n", "")
        self.edit(".dockerignore", ".env.*\n", "")
        self.assertFails("docker-context", "does not exclude .env")

    def test_cargo_metadata_runs_on_the_simulated_context(self) -> None:
        if shutil.which("cargo") is None:
            self.skipTest("cargo not installed")
        problems = check_deploy.Problems()
        with contextlib.redirect_stdout(io.StringIO()):
            check_deploy.ROOT = self.root
            check_deploy.check_docker_context(self.root, problems, skip_cargo=False)
        self.assertEqual(problems, [])
        # A member manifest the copy lacks makes cargo fail.
        self.edit("Cargo.toml", 'members = [', 'members = ["ghost", ')
        (self.root / "ghost").mkdir()
        self.created.append(self.root / "ghost")
        problems = check_deploy.Problems()
        with contextlib.redirect_stdout(io.StringIO()):
            check_deploy.check_docker_context(self.root, problems, skip_cargo=False)
        self.assertTrue(any("ghost" in p for p in problems), problems)


class ComposeChecks(RepoCopy):
    def compose(self) -> dict:
        return yaml.safe_load((self.root / "deploy/compose.yaml").read_text())

    def write_compose(self, doc: dict) -> None:
        self.write("deploy/compose.yaml", yaml.safe_dump(doc, sort_keys=False))

    def test_a_missing_nginx_fails(self) -> None:
        doc = self.compose()
        del doc["services"]["nginx"]
        self.write_compose(doc)
        self.assertFails("compose", "needs at least 1 nginx")

    def test_a_missing_healthcheck_fails(self) -> None:
        doc = self.compose()
        del doc["services"]["controlplane"]["healthcheck"]
        self.write_compose(doc)
        self.assertFails("compose", "services.controlplane: no healthcheck")

    def test_shared_node_ids_fail(self) -> None:
        self.edit("deploy/compose.yaml", "LLMGW_NODE_ID: dataplane-2", "LLMGW_NODE_ID: dataplane-1")
        self.assertFails("compose", "LLMGW_NODE_ID 'dataplane-1' is also dataplane-1's")

    def test_a_short_stop_grace_period_fails(self) -> None:
        self.edit("deploy/compose.yaml", "stop_grace_period: 75s", "stop_grace_period: 20s")
        self.assertFails("compose", "stop_grace_period 20s is shorter than the drain")

    def test_a_literal_secret_fails(self) -> None:
        self.edit("deploy/compose.yaml", "LLMGW_ADMIN_TOKEN: ${LLMGW_ADMIN_TOKEN:-}", "LLMGW_ADMIN_TOKEN: hunter2")
        self.assertFails("compose", "LLMGW_ADMIN_TOKEN: a literal value")

    def test_an_undocumented_variable_fails(self) -> None:
        self.edit(".env.example", "RUST_LOG=info\n", "")
        self.assertFails("compose", "does not list RUST_LOG")

    def test_a_secret_in_the_example_fails(self) -> None:
        self.edit(".env.example", "LLMGW_MASTER_KEY=\n", "LLMGW_MASTER_KEY=c2VjcmV0\n")
        self.assertFails("compose", "LLMGW_MASTER_KEY has a value")

    def test_data_planes_must_not_see_the_control_plane_volume(self) -> None:
        self.edit("deploy/compose.yaml", "- dataplane-token:/run/llmgw-dataplane:ro\n\n  dataplane-2",
                  "- controlplane-data:/run/llmgw-dataplane:ro\n\n  dataplane-2")
        self.assertFails("compose", "mounts the control plane's data volume")

    def test_yaml_errors_are_reported(self) -> None:
        self.edit("deploy/compose.yaml", "services:\n", "services:\n  - [\n")
        self.assertFails("compose", "does not parse as YAML")


class NginxChecks(RepoCopy):
    def test_buffered_proxying_fails(self) -> None:
        self.edit("deploy/nginx/nginx.conf", "proxy_buffering off;", "proxy_buffering on;")
        self.assertFails("nginx", "proxy_buffering must be off")

    def test_an_upstream_that_misses_a_data_plane_fails(self) -> None:
        self.edit("deploy/nginx/nginx.conf", "server dataplane-2:8000", "server dataplane-3:8000")
        self.assertFails("nginx", "upstream llmgw_dataplanes lists")

    def test_no_passive_health_fails(self) -> None:
        self.edit("deploy/nginx/nginx.conf", "server dataplane-1:8000 max_fails=2 fail_timeout=10s resolve;",
                  "server dataplane-1:8000 resolve;")
        self.assertFails("nginx", "set max_fails")

    def test_a_syntax_error_fails(self) -> None:
        self.edit("deploy/nginx/nginx.conf", "events {", "events")
        self.assertFails("nginx", "does not parse")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HealthcheckScript(unittest.TestCase):
    """deploy/healthcheck.sh against a stand-in data plane on loopback."""

    script = REPO / "deploy/healthcheck.sh"

    @classmethod
    def setUpClass(cls) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200 if self.path == "/healthz" else 503)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        cls.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        cls.port = cls.server.server_address[1]
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.shutdown()
        cls.server.server_close()

    def run_check(self, *args: str, **env: str) -> int:
        full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
        return subprocess.run(["bash", str(self.script), *args], env=full, capture_output=True, timeout=20).returncode

    def test_the_script_is_executable(self) -> None:
        self.assertTrue(self.script.stat().st_mode & stat.S_IXUSR)

    def test_data_plane_live_and_ready(self) -> None:
        # Probed on the ops listener, not the client port.
        env = {"LLMGW_ROLE": "dataplane", "LLMGW_OPS_LISTEN": f"0.0.0.0:{self.port}",
               "LLMGW_DATAPLANE_LISTEN": f"127.0.0.1:{free_port()}"}
        self.assertEqual(self.run_check(**env), 0)  # /healthz 200
        self.assertEqual(self.run_check("ready", **env), 1)  # /readyz 503

    def test_control_plane_is_a_tcp_check(self) -> None:
        self.assertEqual(self.run_check(LLMGW_ROLE="controlplane", LLMGW_CONTROLPLANE_LISTEN=f"127.0.0.1:{self.port}"), 0)
        self.assertEqual(self.run_check(LLMGW_ROLE="controlplane", LLMGW_CONTROLPLANE_LISTEN=f"127.0.0.1:{free_port()}"), 1)

    def test_nothing_listening_is_unhealthy(self) -> None:
        self.assertEqual(self.run_check(LLMGW_ROLE="dataplane", LLMGW_OPS_LISTEN=f"127.0.0.1:{free_port()}"), 1)

    def test_an_unknown_role_is_unhealthy(self) -> None:
        self.assertEqual(self.run_check(LLMGW_ROLE="mystery"), 1)


class InitSecretsScript(unittest.TestCase):
    """deploy/init-secrets.sh in scratch folders, owned by the current user."""

    script = REPO / "deploy/init-secrets.sh"

    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="llmgw-init-secrets-")
        base = Path(self.tmp.name)
        owner = f"{os.getuid()}:{os.getgid()}"
        self.dirs = {"SECRETS_DIR": base / "secrets", "CP_DATA_DIR": base / "cp", "DP_TOKEN_DIR": base / "dp"}
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LLMGW_OWNER": owner,
            "PG_OWNER": owner,
            **{k: str(v) for k, v in self.dirs.items()},
        }

    def tearDown(self) -> None:
        self.tmp.cleanup()

    def run_init(self, **env: str) -> None:
        subprocess.run(["sh", str(self.script)], env={**self.env, **env}, check=True, capture_output=True, timeout=20)

    def read(self, key: str, name: str) -> str:
        path = self.dirs[key] / name
        self.assertEqual(path.stat().st_mode & 0o777, 0o600, f"{path} must be private")
        return path.read_text().strip()

    def test_generates_once_then_keeps(self) -> None:
        self.run_init()
        pw = self.read("SECRETS_DIR", "postgres-password")
        token = self.read("CP_DATA_DIR", "dataplane-token")
        self.assertRegex(pw, r"^[0-9a-f]{64}$")
        self.assertRegex(token, r"^[0-9a-f]{64}$")
        self.assertEqual(self.read("DP_TOKEN_DIR", "dataplane-token"), token)
        self.assertEqual(self.read("SECRETS_DIR", "pgpass"), f"*:*:*:*:{pw}")
        self.run_init()
        self.assertEqual(self.read("SECRETS_DIR", "postgres-password"), pw)
        self.assertEqual(self.read("CP_DATA_DIR", "dataplane-token"), token)

    def test_values_from_env_win_and_are_escaped_for_pgpass(self) -> None:
        self.run_init(POSTGRES_PASSWORD="p:w\\x", LLMGW_DATAPLANE_TOKEN="from-env")
        self.assertEqual(self.read("SECRETS_DIR", "postgres-password"), "p:w\\x")
        self.assertEqual(self.read("SECRETS_DIR", "pgpass"), "*:*:*:*:p\\:w\\\\x")
        # With the token in .env, no token file is handed to the data planes.
        self.assertFalse((self.dirs["DP_TOKEN_DIR"] / "dataplane-token").exists())


if __name__ == "__main__":
    unittest.main()
