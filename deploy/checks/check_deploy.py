#!/usr/bin/env python3
"""Offline checks of the deployment files (run by scripts/test.sh, stage
"deploy checks"). No container engine and no network are needed.

    deploy/checks/.venv/bin/python deploy/checks/check_deploy.py [--root DIR]
        [--skip-cargo] [SECTION ...]

Sections (all by default); each prints its problems, and the exit status is 1
when there is any:

  dockerfile      deploy/Dockerfile parses (dockerfile-parse); its stages, the
                  runtime user, HEALTHCHECK, CMD (the role), /data, the
                  dashboard folder and the binaries it copies.
  build-commands  the build commands the Dockerfile runs are the ones CI and
                  scripts/run.sh run: its `cargo build` builds the same
                  selection (--bins, features, packages) with the same lock
                  policy as scripts/test.sh and the same profile as
                  scripts/run.sh, and its npm commands (`npm ci`,
                  `npm run build`) are among those the scripts run (following
                  the helper scripts they call).
  docker-context  the Rust stage copies every workspace member and every path
                  the crates embed (sqlx migrations, include_str!), .dockerignore
                  excludes none of them (`cargo metadata` runs on that simulated
                  build context) and does exclude build output and secrets; the
                  Node stage copies what `npm run build` reads outside dashboard/.
  compose         deploy/compose.yaml parses (PyYAML): required services,
                  healthchecks, start order, secrets only from .env, distinct
                  node ids, drain timing, and .env.example lists exactly the
                  variables the file reads.
  nginx           deploy/nginx/nginx.conf: upstream = the compose data planes,
                  passive health, keepalive, unbuffered proxying, limits; and
                  `nginx -t` when nginx is installed.
  kubernetes      deploy/kubernetes/: every manifest validated offline against
                  the Kubernetes JSON schemas bundled in kubernetes-validate
                  (strict, so unknown fields fail), kustomization.yaml lists
                  them, and the pieces fit: selectors, Services, HPA and PDB
                  targets, Secret keys, probes, the drain arithmetic,
                  securityContext, resources; `kubectl kustomize` when kubectl
                  is installed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

# Kubernetes versions the manifests are validated against: an old one still
# found in managed clusters, and the newest bundled schema.
K8S_MIN_VERSION = "1.29"
# The data plane waits up to this long for the last records to be counted
# before it flushes its spool (dataplane/src/lib.rs, Running::join).
DATAPLANE_SETTLE_S = 5
# The data plane's default deadline for a request (LLMGW_REQUEST_DEADLINE).
REQUEST_DEADLINE_S = 300
# The data plane's largest request body (LLMGW_MAX_REQUEST_BODY_BYTES).
MAX_REQUEST_BODY_BYTES = 32 * 1024 * 1024
# hyper closes idle keep-alive connections after its header-read timeout.
DATAPLANE_IDLE_TIMEOUT_S = 30
REQUIRED_BINARIES = ("llmgw-controlplane", "llmgw-dataplane", "llmgw")
SECRET_ENV = ("LLMGW_ADMIN_TOKEN", "LLMGW_DATAPLANE_TOKEN", "LLMGW_MASTER_KEY")
SECTIONS = ("dockerfile", "build-commands", "docker-context", "compose", "nginx", "kubernetes")


class Problems(list):
    def add(self, where: str, message: str) -> None:
        self.append(f"{where}: {message}")


# ---------------------------------------------------------------------------
# Shell: the simple commands a script runs
# ---------------------------------------------------------------------------
SHELL_KEYWORDS = {"if", "then", "else", "elif", "do", "while", "until", "!", "time", "exec", "{", "}", "command"}
SHELL_OPERATORS = {"&&", "||", ";", ";;", "|", "&", "(", ")", "|&"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass
class Command:
    where: str  # file:line
    argv: list[str]
    cwd: str | None = None  # from a `cd` earlier in the same line / RUN

    def text(self) -> str:
        return " ".join(self.argv)


def split_simple_commands(text: str, known: dict[str, list[str]] | None = None) -> list[list[str]]:
    """The simple commands of one logical shell line, redirections dropped.
    `known` maps a word (e.g. `${CARGO_LOCKED[@]}`) to what it expands to."""
    lex = shlex.shlex(text, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    try:
        tokens = list(lex)
    except ValueError:  # an unbalanced quote: a multi-line string
        return []
    commands, current = [], []
    skip_next = False
    for tok in tokens:
        if skip_next:
            skip_next = False
            continue
        if tok in SHELL_OPERATORS:
            if current:
                commands.append(current)
            current = []
            continue
        if tok and set(tok) <= set("<>&|") and ("<" in tok or ">" in tok):
            # A redirection (>, 2>&1, &>, <<): drop it, its fd and its target.
            skip_next = True
            if current and current[-1].isdigit():
                current.pop()
            continue
        if known and tok in known:
            current.extend(known[tok])
            continue
        current.append(tok)
    if current:
        commands.append(current)
    cleaned = []
    for argv in commands:
        while argv and (argv[0] in SHELL_KEYWORDS or ASSIGNMENT.match(argv[0])):
            argv = argv[1:]
        if argv:
            cleaned.append(argv)
    return cleaned


def logical_lines(text: str):
    """(line number, logical line) of a shell script: continuation lines joined,
    comment lines and here-document bodies skipped."""
    lines = text.splitlines()
    i = 0
    heredoc_end = None
    while i < len(lines):
        start = i
        line = lines[i]
        i += 1
        if heredoc_end is not None:
            if line.strip() == heredoc_end:
                heredoc_end = None
            continue
        while line.endswith("\\") and i < len(lines):
            line = line[:-1] + " " + lines[i]
            i += 1
        if line.lstrip().startswith("#"):
            continue
        m = re.search(r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1", line)
        if m:
            heredoc_end = m.group(2)
        yield start + 1, line


def script_commands(path: Path, root: Path, known: dict[str, list[str]], seen: set[Path] | None = None) -> list[Command]:
    """Every simple command a script runs, following the scripts it runs with
    `bash FILE`, `sh FILE`, `source FILE` or directly (FILE ending in .sh)."""
    seen = seen if seen is not None else set()
    path = path.resolve()
    if path in seen or not path.is_file():
        return []
    seen.add(path)
    out: list[Command] = []
    rel = os.path.relpath(path, root)
    for lineno, line in logical_lines(path.read_text()):
        cwd = None
        for argv in split_simple_commands(line, known):
            if argv[0] == "cd" and len(argv) > 1:
                cwd = argv[1]
            out.append(Command(f"{rel}:{lineno}", argv, cwd))
            target = None
            if argv[0] in ("bash", "sh", "source", ".") and len(argv) > 1 and argv[1].endswith(".sh"):
                target = argv[1]
            elif argv[0].endswith(".sh"):
                target = argv[0]
            if target:
                resolved = resolve_script(target, path, root)
                if resolved:
                    out.extend(script_commands(resolved, root, known, seen))
    return out


def resolve_script(word: str, current: Path, root: Path) -> Path | None:
    word = re.sub(r"\$\{?ROOT\}?", str(root), word)
    if "$" in word:
        return None
    p = Path(word)
    candidates = [p] if p.is_absolute() else [root / p, current.parent / p, current.parent.parent / p]
    for c in candidates:
        if c.is_file():
            return c
    return None


# ---------------------------------------------------------------------------
# The Dockerfile
# ---------------------------------------------------------------------------
@dataclass
class Instr:
    name: str
    value: str
    line: int


@dataclass
class Stage:
    name: str
    base: str
    line: int
    instrs: list[Instr] = field(default_factory=list)

    def all(self, name: str) -> list[Instr]:
        return [i for i in self.instrs if i.name == name]


KNOWN_INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "MAINTAINER",
}


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str]
    stages: list[Stage]
    problems: list[str]

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)


def parse_dockerfile(path: Path) -> Dockerfile:
    from dockerfile_parse import DockerfileParser

    problems: list[str] = []
    parser = DockerfileParser(path=str(path), env_replace=False)
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for item in parser.structure:
        name, value, line = item["instruction"].upper(), item["value"], item["startline"] + 1
        if name == "COMMENT":
            continue
        if name not in KNOWN_INSTRUCTIONS:
            problems.append(f"line {line}: unknown instruction {item['instruction']!r}")
            continue
        if name == "FROM":
            words = [w for w in value.split() if not w.startswith("--")]
            base = substitute(words[0] if words else "", global_args)
            alias = words[2] if len(words) >= 3 and words[1].lower() == "as" else str(len(stages))
            stages.append(Stage(alias, base, line))
            continue
        if not stages:
            if name == "ARG":
                k, _, v = value.partition("=")
                global_args[k.strip()] = v.strip()
            else:
                problems.append(f"line {line}: {name} before the first FROM")
            continue
        stages[-1].instrs.append(Instr(name, value, line))
    return Dockerfile(path, global_args, stages, problems)


def substitute(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


def split_flags(value: str) -> tuple[dict[str, str], list[str]]:
    """`--from=x --chmod=0755 a b` -> ({'from': 'x', 'chmod': '0755'}, ['a', 'b'])."""
    words = shlex.split(value)
    flags = {}
    while words and words[0].startswith("--"):
        k, _, v = words.pop(0)[2:].partition("=")
        flags[k] = v
    return flags, words


def env_pairs(value: str) -> dict[str, str]:
    words = shlex.split(value)
    if len(words) >= 2 and "=" not in words[0]:  # legacy `ENV KEY value`
        return {words[0]: " ".join(words[1:])}
    return dict(w.split("=", 1) for w in words if "=" in w)


def exec_form(value: str) -> list[str] | None:
    try:
        v = json.loads(value)
    except json.JSONDecodeError:
        return None
    return v if isinstance(v, list) and all(isinstance(x, str) for x in v) else None


def run_commands(df: Dockerfile) -> list[tuple[Stage, Command]]:
    """The simple commands of every RUN, with the working directory they run in."""
    out = []
    for st in df.stages:
        workdir = "/"
        for ins in st.instrs:
            if ins.name == "WORKDIR":
                workdir = str(PurePosixPath(workdir) / ins.value.strip())
            if ins.name != "RUN":
                continue
            _, _rest = split_flags_raw(ins.value)
            cwd = workdir
            for argv in split_simple_commands(_rest):
                if argv[0] == "cd" and len(argv) > 1:
                    cwd = str(PurePosixPath(cwd) / argv[1])
                out.append((st, Command(f"{rel(df.path)}:{ins.line}", argv, cwd)))
    return out


def split_flags_raw(value: str) -> tuple[list[str], str]:
    """RUN's own flags (--mount=..., --network=...) and the shell command."""
    flags = []
    rest = value.strip()
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        flags.append(word)
        rest = rest.strip()
    return flags, rest


ROOT = Path(".")


def rel(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(ROOT.resolve()))
    except ValueError:
        return str(p)


def cargo_build_stage(df: Dockerfile) -> Stage | None:
    for st, cmd in run_commands(df):
        if cmd.argv[:2] == ["cargo", "build"]:
            return st
    return None


def npm_stage(df: Dockerfile) -> Stage | None:
    for st, cmd in run_commands(df):
        if cmd.argv[0] == "npm":
            return st
    return None


def workspace(root: Path) -> dict:
    import tomllib

    data = tomllib.loads((root / "Cargo.toml").read_text())
    ws = data.get("workspace", {})
    members = []
    for pattern in ws.get("members", []):
        matches = sorted(p for p in root.glob(pattern) if (p / "Cargo.toml").is_file())
        if matches:
            members.extend(str(m.relative_to(root)) for m in matches)
        else:
            members.append(pattern)  # reported as missing where it is needed
    bins = {}
    for m in members:
        manifest = root / m / "Cargo.toml"
        if not manifest.is_file():
            continue
        pkg = tomllib.loads(manifest.read_text())
        for b in pkg.get("bin", []):
            bins[b["name"]] = m
        if (root / m / "src/main.rs").is_file() and "package" in pkg:
            bins.setdefault(pkg["package"]["name"], m)
    return {
        "members": members,
        "virtual": "package" not in data,
        "rust_version": ws.get("package", {}).get("rust-version"),
        "bins": bins,
    }


def version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def check_dockerfile(root: Path, problems: Problems) -> None:
    path = root / "deploy/Dockerfile"
    where = rel(path)
    if not path.is_file():
        problems.add(where, "missing")
        return
    df = parse_dockerfile(path)
    for p in df.problems:
        problems.add(where, p)
    if len(df.stages) < 3:
        problems.add(where, f"expected a multi-stage build (Rust, Node, runtime), found {len(df.stages)} stage(s)")
        return
    names = [s.name for s in df.stages]
    for st in df.stages:
        for ins in st.all("COPY") + st.all("ADD"):
            flags, words = split_flags(ins.value)
            if "from" in flags:
                src_stage = flags["from"]
                if src_stage not in names[: names.index(st.name)]:
                    problems.add(f"{where}:{ins.line}", f"COPY --from={src_stage}: no earlier stage has that name")
            elif ins.name == "COPY":
                for src in words[:-1]:
                    if not (root / src).exists():
                        problems.add(f"{where}:{ins.line}", f"COPY source {src} does not exist in the repository")

    rust = cargo_build_stage(df)
    node = npm_stage(df)
    runtime = df.stages[-1]
    if rust is None:
        problems.add(where, "no stage runs `cargo build`")
    if node is None:
        problems.add(where, "no stage runs npm (the dashboard build)")
    if runtime in (rust, node):
        problems.add(where, f"the last stage ({runtime.name}) must be the runtime image, not a build stage")
        return
    if any(w in runtime.base for w in ("rust:", "node:")):
        problems.add(where, f"the runtime stage is based on a toolchain image ({runtime.base}); use a slim base")

    # The runtime user.
    users = runtime.all("USER")
    if not users:
        problems.add(where, "the runtime stage sets no USER: the image would run as root")
    else:
        user = users[-1].value.strip().split(":")[0]
        if user in ("root", "0", ""):
            problems.add(f"{where}:{users[-1].line}", f"USER {users[-1].value}: the image must not run as root")
        elif not user.isdigit():
            problems.add(
                f"{where}:{users[-1].line}",
                "USER should be numeric (uid[:gid]) so Kubernetes can verify runAsNonRoot",
            )

    # HEALTHCHECK, and that its program is in the image.
    hcs = runtime.all("HEALTHCHECK")
    if not hcs or hcs[-1].value.strip().upper() == "NONE":
        problems.add(where, "the runtime stage has no HEALTHCHECK")
    else:
        _, cmd = split_flags_raw(hcs[-1].value)
        argv = exec_form(cmd[len("CMD"):].strip()) if cmd.upper().startswith("CMD") else None
        if not argv:
            problems.add(f"{where}:{hcs[-1].line}", 'HEALTHCHECK must use the exec form: CMD ["program", ...]')
        else:
            provided = copied_destinations(runtime)
            if not any(d.rstrip("/").endswith("/" + argv[0]) for d in provided) and argv[0] not in ("bash", "sh"):
                problems.add(
                    f"{where}:{hcs[-1].line}",
                    f"HEALTHCHECK runs {argv[0]!r}, which no COPY in the runtime stage installs",
                )

    # The role is chosen by the command.
    if runtime.all("ENTRYPOINT"):
        problems.add(where, "the runtime stage sets ENTRYPOINT: the role must be chosen by the command alone")
    cmds = runtime.all("CMD")
    argv = exec_form(cmds[-1].value) if cmds else None
    if not argv or argv[0] not in ("llmgw-controlplane", "llmgw-dataplane"):
        problems.add(where, 'CMD must be an exec form naming the role: ["llmgw-controlplane"] or ["llmgw-dataplane"]')

    # Environment: /data, the dashboard folder, listen addresses.
    env: dict[str, str] = {}
    for ins in runtime.all("ENV"):
        env.update(env_pairs(ins.value))
    if env.get("LLMGW_DATA_DIR") != "/data":
        problems.add(where, "the runtime stage must set ENV LLMGW_DATA_DIR=/data (the SQLite database lives there)")
    volumes = []
    for ins in runtime.all("VOLUME"):
        volumes += exec_form(ins.value) or ins.value.split()
    if "/data" not in volumes:
        problems.add(where, "the runtime stage must declare VOLUME /data")
    dash = env.get("LLMGW_DASHBOARD_DIR")
    if not dash:
        problems.add(where, "the runtime stage must set ENV LLMGW_DASHBOARD_DIR to the copied dashboard")
    elif node is not None:
        ok = False
        for ins in runtime.all("COPY"):
            flags, words = split_flags(ins.value)
            if flags.get("from") == node.name and words[-1].rstrip("/") == dash.rstrip("/"):
                ok = any(w.rstrip("/").endswith("/dist") for w in words[:-1])
        if not ok:
            problems.add(
                where,
                f"LLMGW_DASHBOARD_DIR={dash}, but no `COPY --from={node.name} .../dist/ {dash}` puts the built dashboard there",
            )
    exposed = " ".join(i.value for i in runtime.all("EXPOSE")).split()
    for var in ("LLMGW_CONTROLPLANE_LISTEN", "LLMGW_DATAPLANE_LISTEN"):
        addr = env.get(var)
        if not addr:
            problems.add(where, f"the runtime stage must set {var} (the binaries default to 127.0.0.1)")
            continue
        host, _, port = addr.rpartition(":")
        if host not in ("0.0.0.0", "[::]"):
            problems.add(where, f"{var}={addr}: a container must listen on every interface (0.0.0.0)")
        if port not in [e.split("/")[0] for e in exposed]:
            problems.add(where, f"{var}={addr}: port {port} is not in EXPOSE")

    # The binaries come from the Rust stage, and the workspace builds them.
    ws = workspace(root)
    if rust is not None:
        run_text = " ".join(i.value for i in rust.all("RUN"))
        copies_from_rust = [i for i in runtime.all("COPY") if split_flags(i.value)[0].get("from") == rust.name]
        if not copies_from_rust:
            problems.add(where, f"the runtime stage copies nothing from the Rust stage ({rust.name})")
        for b in REQUIRED_BINARIES:
            if b not in ws["bins"]:
                problems.add("Cargo.toml", f"no workspace member builds the binary {b!r} the image needs")
            if f"target/release/{b}" not in run_text.replace("\\", " ").split() and not re.search(
                rf"target/release/{re.escape(b)}(\s|$)", run_text
            ):
                problems.add(where, f"the Rust stage does not take target/release/{b} out of the build")

    # Toolchain versions.
    rv = df.global_args.get("RUST_VERSION")
    if rust is not None and ws["rust_version"] and rv:
        if version_tuple(rv) < version_tuple(ws["rust_version"]):
            problems.add(where, f"RUST_VERSION={rv} is older than the workspace's rust-version {ws['rust_version']}")
    nv = df.global_args.get("NODE_VERSION")
    pkg = root / "dashboard/package.json"
    if nv and pkg.is_file():
        engines = json.loads(pkg.read_text()).get("engines", {}).get("node", "")
        m = re.search(r">=\s*(\d+)(?:\.(\d+))?", engines)
        if m and version_tuple(nv)[:1] < (int(m.group(1)),):
            problems.add(where, f"NODE_VERSION={nv} does not satisfy dashboard/package.json engines.node {engines!r}")


def copied_destinations(stage: Stage) -> list[str]:
    out = []
    for ins in stage.all("COPY") + stage.all("ADD"):
        _, words = split_flags(ins.value)
        if words:
            out.append(words[-1])
    return out


# ---------------------------------------------------------------------------
# Build commands: the Dockerfile's against CI's and run.sh's
# ---------------------------------------------------------------------------
CARGO_PROFILE_FLAGS = {"--release", "-r"}
CARGO_LOCK_FLAGS = {"--locked", "--frozen", "--offline"}
CARGO_QUIET_FLAGS = {"-q", "--quiet", "-v", "--verbose", "-vv"}
NPM_COSMETIC = re.compile(r"^(--no-audit|--no-fund|--silent|-s|--quiet|-q|--loglevel(=.*)?|--no-progress|--no-update-notifier|--foreground-scripts)$")


def cargo_build_parts(argv: list[str], virtual_workspace: bool) -> dict:
    words = argv[2:]
    profile = "dev"
    lock: set[str] = set()
    selection: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w in CARGO_PROFILE_FLAGS:
            profile = "release"
        elif w.startswith("--profile"):
            profile = w.split("=", 1)[1] if "=" in w else (words[i + 1] if i + 1 < len(words) else "")
            i += 0 if "=" in w else 1
        elif w in CARGO_LOCK_FLAGS:
            lock.add(w)
        elif w in CARGO_QUIET_FLAGS or w.startswith("-j") or w.startswith("--jobs") or w.startswith("$"):
            pass  # parallelism, verbosity, and script arguments do not change what is built
        elif w in ("--workspace", "--all") and virtual_workspace:
            pass  # the default at the root of a virtual workspace
        else:
            selection.append(w)
        i += 1
    return {"profile": profile, "lock": lock, "selection": sorted(selection)}


def npm_key(argv: list[str]) -> str | None:
    """`npm ci --no-audit` -> 'npm ci'; `npm run build` -> 'npm run build'."""
    words = [w for w in argv[1:] if not NPM_COSMETIC.match(w)]
    i = 0
    while i < len(words) and words[i].startswith("-"):  # --prefix DIR and the like
        i += 1 if "=" in words[i] else 2
    words = words[i:]
    if not words:
        return None
    sub = words[0]
    if sub in ("run", "run-script") and len(words) > 1:
        return f"npm run {words[1]}"
    if sub in ("ci", "clean-install", "install-clean"):
        return "npm ci"
    return f"npm {' '.join(words)}"


def script_build_commands(root: Path) -> dict[str, list[Command]]:
    # CARGO_LOCKED is (--locked) whenever Cargo.lock exists, as on CI.
    known = {"${CARGO_LOCKED[@]}": ["--locked"] if (root / "Cargo.lock").is_file() else []}
    out = {}
    for name in ("scripts/test.sh", "scripts/run.sh"):
        out[name] = script_commands(root / name, root, known)
    return out


def check_build_commands(root: Path, problems: Problems) -> None:
    path = root / "deploy/Dockerfile"
    where = rel(path)
    if not path.is_file():
        problems.add(where, "missing")
        return
    df = parse_dockerfile(path)
    ws = workspace(root)
    runs = run_commands(df)
    docker_cargo = [c for _, c in runs if c.argv[:2] == ["cargo", "build"]]
    docker_npm = [c for _, c in runs if c.argv[0] == "npm"]
    scripts = script_build_commands(root)

    # cargo
    if len(docker_cargo) != 1:
        problems.add(where, f"expected exactly one `cargo build`, found {len(docker_cargo)}")
    else:
        d = docker_cargo[0]
        dp = cargo_build_parts(d.argv, ws["virtual"])
        if dp["profile"] != "release":
            problems.add(d.where, f"`{d.text()}`: the image must ship a release build (--release)")
        if not dp["lock"] & {"--locked", "--frozen"}:
            problems.add(d.where, f"`{d.text()}`: build with --locked, so the image uses exactly Cargo.lock")
        for script, want in (("scripts/test.sh", "CI's build"), ("scripts/run.sh", "run.sh's release build")):
            builds = [c for c in scripts[script] if c.argv[:2] == ["cargo", "build"]]
            if not builds:
                problems.add(script, f"runs no `cargo build` to compare deploy/Dockerfile's with ({want})")
                continue
            parts = [(c, cargo_build_parts(c.argv, ws["virtual"])) for c in builds]
            same = [c for c, p in parts if p["selection"] == dp["selection"]]
            if not same:
                found = "; ".join(f"`{c.text()}` ({c.where})" for c, _ in parts)
                problems.add(
                    d.where,
                    f"`{d.text()}` builds {dp['selection'] or ['the default selection']}, "
                    f"but {script} ({want}) runs {found}: the image must build the same binaries "
                    "and features as the scripts",
                )
                continue
            if script == "scripts/test.sh":
                ci_lock = set().union(*(p["lock"] for c, p in parts if c in same))
                if ci_lock & {"--locked", "--frozen"} and not dp["lock"] & {"--locked", "--frozen"}:
                    problems.add(d.where, f"CI builds with {sorted(ci_lock)} ({same[0].where}); the Dockerfile must too")
                else:
                    print(f"  cargo: `{d.text()}` builds what CI builds: `{same[0].text()}` ({same[0].where})")
            else:
                profiles = {cargo_build_parts(c.argv, ws["virtual"])["profile"] for c in same}
                if dp["profile"] not in profiles:
                    problems.add(
                        d.where,
                        f"the Dockerfile builds the {dp['profile']} profile, run.sh the {sorted(profiles)} profile "
                        f"({same[0].where}): ship what run.sh runs",
                    )
                else:
                    print(f"  cargo: same binaries and profile as run.sh: `{same[0].text()}` ({same[0].where})")

    # npm
    dkeys = [(c, npm_key(c.argv)) for c in docker_npm]
    keys = [k for _, k in dkeys]
    if "npm ci" not in keys:
        problems.add(where, "the dashboard stage must install with `npm ci` (exactly package-lock.json)")
    if "npm run build" not in keys:
        problems.add(where, "the dashboard stage must run `npm run build`")
    for c, _ in dkeys:
        if c.cwd and PurePosixPath(c.cwd).name != "dashboard":
            problems.add(c.where, f"`{c.text()}` runs in {c.cwd}, not in the dashboard folder")
    pkg_path = root / "dashboard/package.json"
    if not pkg_path.is_file():
        problems.add("dashboard/package.json", "missing (the Dockerfile builds the dashboard)")
    else:
        pkg_scripts = json.loads(pkg_path.read_text()).get("scripts", {})
        for k in keys:
            if k and k.startswith("npm run ") and k[len("npm run "):] not in pkg_scripts:
                problems.add("dashboard/package.json", f"has no script {k[len('npm run '):]!r}, which the Dockerfile runs")
    if "npm ci" in keys and not (root / "dashboard/package-lock.json").is_file():
        problems.add("dashboard/package-lock.json", "missing: `npm ci` needs it")
    script_npm = {}
    for script, cmds in scripts.items():
        for c in cmds:
            if c.argv[0] == "npm":
                script_npm.setdefault(npm_key(c.argv), c)
    for c, k in dkeys:
        if k in script_npm:
            print(f"  npm: `{c.text()}` ~ `{script_npm[k].text()}` ({script_npm[k].where})")
        if k not in script_npm:
            found = ", ".join(f"`{x}` ({y.where})" for x, y in script_npm.items()) or "no npm command"
            problems.add(
                c.where,
                f"`{k}`: scripts/test.sh and scripts/run.sh (with the scripts they call) run {found}; "
                "the image must build the dashboard with the commands CI and run.sh use",
            )


# ---------------------------------------------------------------------------
# The build context: COPY coverage, .dockerignore, cargo metadata
# ---------------------------------------------------------------------------
def dockerignore_patterns(root: Path) -> list[tuple[bool, str]]:
    path = root / ".dockerignore"
    out = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pat = line[1:] if negate else line
        pat = pat.strip().lstrip("/").rstrip("/")
        out.append((negate, os.path.normpath(pat)))
    return out


def _match(pattern: str, path: str) -> bool:
    # Docker's rules: Go's filepath.Match per segment, plus ** for any number
    # of segments; a pattern matching a folder excludes everything under it.
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            regex += ".*"
            i += 2
        elif pattern[i] == "*":
            regex += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            regex += "[^/]"
            i += 1
        else:
            regex += re.escape(pattern[i])
            i += 1
    return re.fullmatch(regex + "(?:/.*)?", path) is not None


def is_ignored(path: str, patterns: list[tuple[bool, str]]) -> bool:
    ignored = False
    for negate, pat in patterns:
        if _match(pat, path):
            ignored = not negate
    return ignored


def context_files(root: Path, sub: str) -> list[str]:
    """Files under `sub` that a clone has: git's view when available (tracked
    plus untracked-but-not-ignored), else a walk without build folders."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", sub],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.split("\n")
        files = [f for f in out if f and (root / f).is_file()]
        if files or not (root / ".git").exists():
            if files:
                return files
    except (OSError, subprocess.CalledProcessError):
        pass
    base = root / sub
    if base.is_file():
        return [sub]
    files = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if d not in ("target", "node_modules", ".venv", ".git", "dist")]
        for f in filenames:
            files.append(os.path.relpath(os.path.join(dirpath, f), root))
    return files


def embedded_paths(root: Path, member: str) -> list[str]:
    """Paths outside the member that its sources embed at build time."""
    out = []
    base = root / member
    for rs in base.rglob("*.rs"):
        if "target" in rs.parts:
            continue
        text = rs.read_text(errors="replace")
        for m in re.finditer(r'sqlx::migrate!\(\s*"([^"]+)"\s*\)', text):
            out.append(os.path.normpath(os.path.join(member, m.group(1))))
        for m in re.finditer(r'include_(?:str|bytes)!\(\s*"([^"]+)"\s*\)', text):
            out.append(os.path.normpath(os.path.relpath(rs.parent / m.group(1), root)))
    return [p for p in out if not p.startswith(member + os.sep) and not p.startswith("..")]


def copy_sources(stage: Stage) -> list[tuple[str, str]]:
    out = []
    for ins in stage.all("COPY"):
        flags, words = split_flags(ins.value)
        if "from" in flags or len(words) < 2:
            continue
        for src in words[:-1]:
            out.append((os.path.normpath(src), words[-1]))
    return out


def covered(path: str, sources: list[str]) -> bool:
    return any(path == s or path.startswith(s + "/") or s == "." for s in sources)


def check_docker_context(root: Path, problems: Problems, skip_cargo: bool) -> None:
    path = root / "deploy/Dockerfile"
    if not path.is_file():
        problems.add(rel(path), "missing")
        return
    where = rel(path)
    if not (root / ".dockerignore").is_file():
        problems.add(".dockerignore", "missing at the repository root (the build context)")
    patterns = dockerignore_patterns(root)
    for sample, why in (
        ("target/release/llmgw", "build output"),
        ("dashboard/node_modules/x/index.js", "node_modules"),
        ("dashboard/dist/index.html", "a stale dashboard build"),
        (".venv/bin/python", "virtualenvs"),
        ("deploy/checks/.venv/bin/python", "virtualenvs"),
        ("data/llmgw.db", "local data"),
        (".env", "secrets"),
        (".git/HEAD", "the git folder"),
    ):
        if not is_ignored(sample, patterns):
            problems.add(".dockerignore", f"does not exclude {sample} ({why})")

    df = parse_dockerfile(path)
    rust = cargo_build_stage(df)
    node = npm_stage(df)
    ws = workspace(root)
    if rust is not None:
        sources = [s for s, _ in copy_sources(rust)]
        needed = ["Cargo.toml", "Cargo.lock"] + ws["members"]
        # cargo's build settings (flags of the bundled SQLite): an image
        # built without them would differ from what CI tests.
        if (root / ".cargo/config.toml").is_file():
            needed.append(".cargo/config.toml")
        for m in ws["members"]:
            needed += embedded_paths(root, m)
        for n in dict.fromkeys(needed):
            if not covered(n, sources):
                problems.add(where, f"the Rust stage ({rust.name}) does not COPY {n}, which the workspace needs")
                continue
            bad = [f for f in context_files(root, n) if is_ignored(f, patterns)]
            if bad:
                problems.add(".dockerignore", f"excludes {bad[0]}, which the Rust build needs ({n})")
        if not skip_cargo:
            cargo_metadata_in_context(root, rust, patterns, ws, problems)
    if node is not None:
        workdir = "/"
        for ins in node.instrs:
            if ins.name == "WORKDIR":
                workdir = str(PurePosixPath(workdir) / ins.value.strip())
        dests = []
        for src, dest in copy_sources(node):
            d = dest if dest.startswith("/") else str(PurePosixPath(workdir) / dest)
            dests.append((src, os.path.normpath(d)))
        # Paths outside dashboard/ the build reads: ../X in package.json and buf.gen.yaml.
        outside = set()
        for f in ("dashboard/package.json", "dashboard/buf.gen.yaml"):
            if (root / f).is_file():
                outside |= set(re.findall(r"\.\./([A-Za-z0-9_.-]+)", (root / f).read_text()))
        for name in sorted(outside):
            want = os.path.normpath(str(PurePosixPath(workdir).parent / name))
            if not any(src == name and d == want for src, d in dests):
                problems.add(
                    where,
                    f"the dashboard build reads ../{name}; the Node stage ({node.name}) must COPY {name}/ to {want}",
                )
        if not any(src in ("dashboard", ".") for src, _ in dests):
            problems.add(where, f"the Node stage ({node.name}) does not COPY dashboard/")


def cargo_metadata_in_context(root: Path, rust: Stage, patterns, ws: dict, problems: Problems) -> None:
    """Lay out what the Rust stage copies (less .dockerignore) and ask cargo
    whether the workspace loads from it."""
    if shutil.which("cargo") is None:
        print("  (cargo not found: skipped cargo metadata on the simulated build context)")
        return
    with tempfile.TemporaryDirectory(prefix="llmgw-docker-context-") as tmp:
        for src, _ in copy_sources(rust):
            for f in context_files(root, src):
                if is_ignored(f, patterns):
                    continue
                target = Path(tmp) / f
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / f, target)
        res = subprocess.run(
            ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
            cwd=tmp, capture_output=True, text=True,
        )
        if res.returncode != 0:
            err = res.stderr.strip().splitlines()
            problems.add(
                rel(root / "deploy/Dockerfile"),
                "the workspace does not load from what the Rust stage copies: " + " / ".join(err[-3:]),
            )
            return
        for m in ws["members"]:
            for p in embedded_paths(root, m):
                if not (Path(tmp) / p).exists():
                    problems.add(rel(root / "deploy/Dockerfile"), f"{m} embeds {p}, which the build context lacks")


# ---------------------------------------------------------------------------
# Compose
# ---------------------------------------------------------------------------
VAR_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def load_yaml(path: Path, problems: Problems, many: bool = False):
    try:
        text = path.read_text()
        return list(yaml.safe_load_all(text)) if many else yaml.safe_load(text)
    except FileNotFoundError:
        problems.add(rel(path), "missing")
    except yaml.YAMLError as e:
        problems.add(rel(path), f"does not parse as YAML: {e}")
    return None


def seconds(v) -> float | None:
    if isinstance(v, (int, float)):
        return float(v)
    if not isinstance(v, str):
        return None
    total, found = 0.0, False
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)?", v):
        found = True
        total += float(num) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6, "": 1}[unit]
    return total if found else None


def service_env(svc: dict) -> dict:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        out = {}
        for item in env:
            k, sep, v = str(item).partition("=")
            out[k] = v if sep else None
        return out
    return dict(env)


def command_of(svc: dict) -> list[str]:
    c = svc.get("command")
    if isinstance(c, str):
        return shlex.split(c)
    return list(c or [])


def compose_roles(services: dict) -> dict[str, list[str]]:
    roles: dict[str, list[str]] = {"postgres": [], "controlplane": [], "dataplane": [], "nginx": []}
    for name, svc in services.items():
        cmd = command_of(svc)
        image = str(svc.get("image", ""))
        if cmd and cmd[0] == "llmgw-controlplane":
            roles["controlplane"].append(name)
        elif cmd and cmd[0] == "llmgw-dataplane":
            roles["dataplane"].append(name)
        elif image.startswith("nginx"):
            roles["nginx"].append(name)
        elif image.startswith("postgres") and "entrypoint" not in svc:
            roles["postgres"].append(name)
    return roles


def depends(svc: dict) -> dict[str, str]:
    d = svc.get("depends_on") or {}
    if isinstance(d, list):
        return {k: "service_started" for k in d}
    return {k: (v or {}).get("condition", "service_started") for k, v in d.items()}


def volume_mounts(svc: dict) -> list[tuple[str, str]]:
    out = []
    for v in svc.get("volumes") or []:
        if isinstance(v, dict):
            out.append((str(v.get("source", "")), str(v.get("target", ""))))
        else:
            parts = str(v).split(":")
            out.append((parts[0], parts[1] if len(parts) > 1 else parts[0]))
    return out


def env_example_vars(path: Path) -> tuple[dict[str, str], set[str]]:
    """(active VAR=value lines, optional `#VAR=` lines) of .env.example."""
    active, optional = {}, set()
    for line in path.read_text().splitlines() if path.is_file() else []:
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if m:
            active[m.group(1)] = m.group(2).strip()
            continue
        m = re.match(r"^#([A-Za-z_][A-Za-z0-9_]*)=", line)
        if m:
            optional.add(m.group(1))
    return active, optional


def check_compose(root: Path, problems: Problems) -> dict | None:
    path = root / "deploy/compose.yaml"
    where = rel(path)
    doc = load_yaml(path, problems)
    if doc is None:
        return None
    services = doc.get("services") if isinstance(doc, dict) else None
    if not isinstance(services, dict) or not services:
        problems.add(where, "has no services")
        return None
    roles = compose_roles(services)
    for role, want in (("postgres", 1), ("controlplane", 1), ("dataplane", 2), ("nginx", 1)):
        if len(roles[role]) < want:
            problems.add(where, f"needs at least {want} {role} service(s), found {roles[role] or 'none'}")
    if roles["controlplane"] and len(roles["controlplane"]) > 1:
        problems.add(where, "more than one control plane: only one is supported until control planes run in HA")

    # Healthchecks and start order.
    # One-shot services: others wait for them to complete; they need no healthcheck.
    oneshots = {
        dep for svc in services.values() for dep, cond in depends(svc).items()
        if cond == "service_completed_successfully" and dep in services
    }
    for name in sorted(oneshots):
        if str(services[name].get("restart", "no")) not in ("no", "on-failure"):
            problems.add(where, f"services.{name} is waited on to complete, but restarts ({services[name].get('restart')})")
    for name, svc in services.items():
        if name in oneshots:
            continue
        test = (svc.get("healthcheck") or {}).get("test")
        if not test or test == ["NONE"] or (svc.get("healthcheck") or {}).get("disable"):
            problems.add(where, f"services.{name}: no healthcheck")
    for name, svc in services.items():
        for dep, cond in depends(svc).items():
            if dep not in services:
                problems.add(where, f"services.{name}.depends_on: no service {dep!r}")
            elif cond == "service_healthy" and not (services[dep].get("healthcheck") or {}).get("test"):
                problems.add(where, f"services.{name} waits for {dep} to be healthy, but {dep} has no healthcheck")

    def need_dep(src: str, dst: str) -> None:
        if depends(services[src]).get(dst) != "service_healthy":
            problems.add(where, f"services.{src}.depends_on: {dst} with condition service_healthy is required")

    cp = roles["controlplane"][0] if roles["controlplane"] else None
    pg = roles["postgres"][0] if roles["postgres"] else None
    if cp and pg:
        need_dep(cp, pg)
    for dp in roles["dataplane"]:
        if cp:
            need_dep(dp, cp)
        for ng in roles["nginx"]:
            need_dep(ng, dp)

    # The llmgw image: built from deploy/Dockerfile with the repository as context.
    images = set()
    for name in roles["controlplane"] + roles["dataplane"]:
        svc = services[name]
        images.add(svc.get("image"))
        build = svc.get("build")
        if build:
            ctx = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            ctx_path = (path.parent / ctx).resolve()
            if ctx_path != root.resolve():
                problems.add(where, f"services.{name}.build.context must be the repository root (..), not {ctx}")
            if not (ctx_path / dockerfile).resolve() == (root / "deploy/Dockerfile").resolve():
                problems.add(where, f"services.{name}.build.dockerfile must be deploy/Dockerfile, not {dockerfile}")
        elif not svc.get("image"):
            problems.add(where, f"services.{name}: neither image nor build")
    if len(images) > 1:
        problems.add(where, f"the llmgw services use different images: {sorted(map(str, images))}")

    # Mounts: bind sources exist, named volumes are declared.
    declared = set((doc.get("volumes") or {}).keys())
    for name, svc in services.items():
        for src, _target in volume_mounts(svc):
            if src.startswith((".", "/")):
                if not (path.parent / src).exists():
                    problems.add(where, f"services.{name}.volumes: {src} does not exist")
            elif src and "$" not in src and src not in declared:
                problems.add(where, f"services.{name}.volumes: named volume {src!r} is not declared under volumes:")

    # Control plane: PostgreSQL and secrets.
    cp_listen_port = "9090"
    cp_data_volumes = set()
    if cp:
        env = service_env(services[cp])
        url = str(env.get("DATABASE_URL") or "")
        m = re.match(r"^postgres(?:ql)?://(?:([^:@/]*)(?::([^@/]*))?@)?([^:/?]+)", url)
        if not m:
            problems.add(where, f"services.{cp}: DATABASE_URL must be a postgres:// URL, got {url!r}")
        else:
            if pg and m.group(3) != pg:
                problems.add(where, f"services.{cp}: DATABASE_URL points at {m.group(3)!r}, not the {pg!r} service")
            if m.group(2) and not m.group(2).startswith("${"):
                problems.add(where, f"services.{cp}: DATABASE_URL holds a literal password; take it from .env")
            if not m.group(2) and not (env.get("PGPASSFILE") or env.get("PGPASSWORD")):
                problems.add(where, f"services.{cp}: DATABASE_URL has no password, and neither PGPASSFILE nor PGPASSWORD is set")
        for var in SECRET_ENV:
            v = env.get(var)
            if v is not None and not re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:?[-?][^}]*)?\}", str(v)):
                problems.add(where, f"services.{cp}.environment.{var}: a literal value; take it from .env (${{{var}}})")
        if "LLMGW_MASTER_KEY_PREVIOUS" in env and env["LLMGW_MASTER_KEY_PREVIOUS"] is not None:
            problems.add(
                where,
                f"services.{cp}.environment.LLMGW_MASTER_KEY_PREVIOUS must have no value (passed through only "
                "when set): the control plane refuses an empty one",
            )
        listen = env.get("LLMGW_CONTROLPLANE_LISTEN")
        if listen:
            cp_listen_port = str(listen).rpartition(":")[2]
        cp_data_volumes = {s for s, t in volume_mounts(services[cp]) if t.rstrip("/") == "/data"}

    # Data planes.
    node_ids: dict[str, str] = {}
    dp_info = {}
    spool_volumes: dict[str, str] = {}
    for dp in roles["dataplane"]:
        svc = services[dp]
        env = service_env(svc)
        nid = env.get("LLMGW_NODE_ID")
        if not nid:
            problems.add(where, f"services.{dp}: set LLMGW_NODE_ID (each data plane needs its own)")
        elif nid in node_ids:
            problems.add(where, f"services.{dp}: LLMGW_NODE_ID {nid!r} is also {node_ids[nid]}'s")
        else:
            node_ids[nid] = dp
        cpurl = str(env.get("LLMGW_CONTROL_PLANE") or "")
        for u in filter(None, cpurl.split(",")):
            m = re.match(r"^https?://([^:/]+)(?::(\d+))?/?$", u.strip())
            if not m or (cp and m.group(1) != cp) or (m.group(2) or "80") != cp_listen_port:
                problems.add(
                    where,
                    f"services.{dp}: LLMGW_CONTROL_PLANE={cpurl!r} must be http://{cp}:{cp_listen_port}",
                )
        if not cpurl:
            problems.add(where, f"services.{dp}: LLMGW_CONTROL_PLANE is not set")
        listen = str(env.get("LLMGW_DATAPLANE_LISTEN") or "")
        host, _, port = listen.rpartition(":")
        if host not in ("0.0.0.0", "[::]"):
            problems.add(where, f"services.{dp}: LLMGW_DATAPLANE_LISTEN={listen!r} must listen on 0.0.0.0")
        dp_info[dp] = port
        tok = env.get("LLMGW_DATAPLANE_TOKEN")
        if tok is not None and not str(tok).startswith("${"):
            problems.add(where, f"services.{dp}: LLMGW_DATAPLANE_TOKEN is a literal; take it from .env")
        mounts = volume_mounts(svc)
        leaked = [s for s, _ in mounts if s in cp_data_volumes]
        if leaked:
            problems.add(
                where,
                f"services.{dp} mounts the control plane's data volume {leaked[0]!r}: it may hold the admin "
                "token and the master key",
            )
        spool = str(env.get("LLMGW_SPOOL_DIR") or "/data/spool")
        spool_vol = next((s for s, t in sorted(mounts, key=lambda m: -len(m[1])) if spool.startswith(t.rstrip("/") + "/") or spool == t), None)
        if spool_vol is None:
            problems.add(where, f"services.{dp}: the spool ({spool}) is not on a volume; records would be lost on recreate")
        elif spool_vol in spool_volumes:
            problems.add(where, f"services.{dp}: spool volume {spool_vol!r} is shared with {spool_volumes[spool_vol]}")
        else:
            spool_volumes[spool_vol] = dp
        # ${VAR:-default} counts as its default.
        grace_text = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", str(env.get("LLMGW_SHUTDOWN_GRACE_S") or 30))
        if not grace_text.isdigit():
            problems.add(where, f"services.{dp}: LLMGW_SHUTDOWN_GRACE_S={grace_text!r} is not a number of seconds")
            continue
        grace = int(grace_text)
        need = 2 * grace + DATAPLANE_SETTLE_S + 5
        stop = seconds(svc.get("stop_grace_period", "10s"))
        if stop is None or stop < need:
            problems.add(
                where,
                f"services.{dp}: stop_grace_period {svc.get('stop_grace_period', '10s (default)')} is shorter than "
                f"the drain: 2 x LLMGW_SHUTDOWN_GRACE_S ({grace}) + {DATAPLANE_SETTLE_S} s + 5 s margin = {need} s",
            )

    # .env.example lists exactly the variables the compose file reads.
    text = path.read_text()
    used = {m.group(1) or m.group(4) for m in VAR_REF.finditer(text)}
    passthrough = set()
    for name, svc in services.items():
        passthrough |= {k for k, v in service_env(svc).items() if v is None}
    used |= passthrough
    try:
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", ".env"], cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        ).returncode == 0
        if not ignored and (root / ".git").exists():
            print("  WARNING: .gitignore does not ignore .env, where `cp .env.example .env` puts secrets")
    except OSError:
        pass
    env_path = root / ".env.example"
    if not env_path.is_file():
        problems.add(".env.example", "missing at the repository root")
    else:
        active, optional = env_example_vars(env_path)
        listed = set(active) | optional
        for v in sorted(used - listed):
            problems.add(".env.example", f"does not list {v}, which deploy/compose.yaml reads")
        for v in sorted(listed - used):
            problems.add(".env.example", f"lists {v}, which deploy/compose.yaml does not read")
        for v in sorted(passthrough & set(active)):
            problems.add(".env.example", f"{v} must stay commented out (#{v}=): an empty value is refused")
        for v in ("POSTGRES_PASSWORD",) + SECRET_ENV:
            if active.get(v):
                problems.add(".env.example", f"{v} has a value: the example must not ship a secret")
        # Required variables (${VAR:?...}) must be satisfiable after `cp .env.example .env`.
        for m in VAR_REF.finditer(text):
            if m.group(2) in (":?", "?") and not active.get(m.group(1)):
                problems.add(
                    where,
                    f"${{{m.group(1)}:?}} is required, but .env.example leaves it empty: "
                    "`cp .env.example .env` then `up` would fail",
                )
    return {"services": services, "roles": roles, "dataplanes": dp_info}


# ---------------------------------------------------------------------------
# nginx
# ---------------------------------------------------------------------------
@dataclass
class Directive:
    name: str
    args: list[str]
    line: int
    block: list["Directive"] | None = None


def parse_nginx(text: str) -> list[Directive]:
    tokens: list[tuple[str, int]] = []
    i, line = 0, 1
    while i < len(text):
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif c == "#":
            while i < len(text) and text[i] != "\n":
                i += 1
        elif c in "{};":
            tokens.append((c, line))
            i += 1
        elif c in "\"'":
            j = i + 1
            while j < len(text) and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            tokens.append((text[i + 1 : j], line))
            i = j + 1
        else:
            j = i
            while j < len(text) and not text[j].isspace() and text[j] not in "{};":
                j += 1
            tokens.append((text[i:j], line))
            i = j
    pos = 0

    def block(depth: int) -> list[Directive]:
        nonlocal pos
        out: list[Directive] = []
        words: list[str] = []
        start = 0
        while pos < len(tokens):
            tok, ln = tokens[pos]
            pos += 1
            if tok == ";":
                if not words:
                    raise ValueError(f"line {ln}: empty directive")
                out.append(Directive(words[0], words[1:], start))
                words = []
            elif tok == "{":
                if not words:
                    raise ValueError(f"line {ln}: block without a name")
                d = Directive(words[0], words[1:], start)
                d.block = block(depth + 1)
                out.append(d)
                words = []
            elif tok == "}":
                if depth == 0:
                    raise ValueError(f"line {ln}: unexpected }}")
                if words:
                    raise ValueError(f"line {ln}: missing ; after {words[0]}")
                return out
            else:
                if not words:
                    start = ln
                words.append(tok)
        if depth:
            raise ValueError("unclosed {")
        if words:
            raise ValueError(f"line {start}: missing ; after {words[0]}")
        return out

    return block(0)


def find(ds: list[Directive], name: str) -> list[Directive]:
    return [d for d in ds if d.name == name]


def size_bytes(v: str) -> int:
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", v)
    if not m:
        return -1
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]


def check_nginx(root: Path, problems: Problems, compose: dict | None) -> None:
    path = root / "deploy/nginx/nginx.conf"
    where = rel(path)
    if not path.is_file():
        problems.add(where, "missing")
        return
    try:
        top = parse_nginx(path.read_text())
    except ValueError as e:
        problems.add(where, f"does not parse: {e}")
        return
    http = find(top, "http")
    if len(http) != 1:
        problems.add(where, "needs exactly one http block")
        return
    http_block = http[0].block or []
    upstreams = {d.args[0]: d for d in find(http_block, "upstream") if d.args}
    if not upstreams:
        problems.add(where, "no upstream block for the data planes")
    servers_blocks = find(http_block, "server")
    proxied = []
    for srv in servers_blocks:
        for loc in find(srv.block or [], "location"):
            for pp in find(loc.block or [], "proxy_pass"):
                name = re.sub(r"^https?://", "", pp.args[0]).split("/")[0] if pp.args else ""
                proxied.append((srv, loc, name))
    if not proxied:
        problems.add(where, "no location proxies to the upstream")

    def effective(name: str, *levels: list[Directive]) -> list[str] | None:
        for lvl in levels:  # innermost first
            ds = find(lvl, name)
            if ds:
                return ds[-1].args
        return None

    for srv, loc, up_name in proxied:
        at = f"{where}:{loc.line}"
        up = upstreams.get(up_name)
        if up is None:
            problems.add(at, f"proxy_pass to {up_name!r}, which is no upstream block")
            continue
        levels = (loc.block or [], srv.block or [], http_block)
        if effective("proxy_buffering", *levels) != ["off"]:
            problems.add(at, "proxy_buffering must be off: streamed responses (SSE) would be held back")
        if effective("proxy_http_version", *levels) != ["1.1"]:
            problems.add(at, "proxy_http_version 1.1 is needed for upstream keepalive")
        conn = [d.args for d in find(loc.block or [], "proxy_set_header") if d.args and d.args[0].lower() == "connection"]
        if conn != [["Connection", ""]] and conn != [["connection", ""]]:
            problems.add(at, 'proxy_set_header Connection "" is needed for upstream keepalive')
        rt = seconds((effective("proxy_read_timeout", *levels) or ["60s"])[0])
        if rt is None or rt < REQUEST_DEADLINE_S:
            problems.add(at, f"proxy_read_timeout must be at least the data plane's {REQUEST_DEADLINE_S} s deadline")
        body = effective("client_max_body_size", *levels) or ["1m"]
        if 0 <= size_bytes(body[0]) < MAX_REQUEST_BODY_BYTES and body[0] != "0":
            problems.add(at, f"client_max_body_size {body[0]} is below the data plane's 32 MiB request limit")
        nu = effective("proxy_next_upstream", *levels) or []
        if "non_idempotent" in nu:
            problems.add(at, "proxy_next_upstream non_idempotent could send one LLM request upstream twice")
        ub = up.block or []
        if not find(ub, "keepalive"):
            problems.add(f"{where}:{up.line}", f"upstream {up_name}: no keepalive pool")
        kt = find(ub, "keepalive_timeout")
        kt_s = seconds(kt[-1].args[0]) if kt and kt[-1].args else 60
        if kt_s is None or kt_s >= DATAPLANE_IDLE_TIMEOUT_S:
            problems.add(
                f"{where}:{up.line}",
                f"upstream {up_name}: keepalive_timeout must be below the data plane's {DATAPLANE_IDLE_TIMEOUT_S} s "
                "idle timeout (nginx's default is 60 s)",
            )
        members = {}
        for s in find(ub, "server"):
            if not s.args:
                continue
            hostport = s.args[0]
            members[hostport] = s
            opts = dict(a.split("=", 1) for a in s.args[1:] if "=" in a)
            if int(opts.get("max_fails", "1") or 0) < 1 or "max_fails" not in opts:
                problems.add(f"{where}:{s.line}", f"server {hostport}: set max_fails (passive health checks)")
            if "fail_timeout" not in opts:
                problems.add(f"{where}:{s.line}", f"server {hostport}: set fail_timeout (passive health checks)")
        if compose:
            want = {f"{dp}:{port}" for dp, port in compose["dataplanes"].items()}
            if set(members) != want:
                problems.add(
                    f"{where}:{up.line}",
                    f"upstream {up_name} lists {sorted(members)}; deploy/compose.yaml's data planes are {sorted(want)}",
                )
            # The nginx healthcheck's path is answered by nginx itself.
            for ng in compose["roles"]["nginx"]:
                test = " ".join(map(str, (compose["services"][ng].get("healthcheck") or {}).get("test") or []))
                m = re.search(r"https?://[^/\s]+(/[^\s]*)", test)
                if m:
                    exact = {d.args[1] for d in find(srv.block or [], "location") if len(d.args) == 2 and d.args[0] == "="}
                    if m.group(1) not in exact:
                        problems.add(where, f"the compose healthcheck of {ng} asks {m.group(1)}, which no `location =` answers")
    nginx_syntax_check(path, problems)


def nginx_syntax_check(path: Path, problems: Problems) -> None:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if not nginx:
        print("  (nginx not installed: skipped `nginx -t`)")
        return
    ver = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr
    m = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", ver)
    has_resolve = bool(m) and tuple(map(int, m.groups())) >= (1, 27, 3)
    text = path.read_text()
    # Compose service names do not resolve here: point the servers at loopback.
    text = re.sub(r"(\bserver\s+)[A-Za-z0-9_.-]+:(\d+)", r"\g<1>127.0.0.1:\2", text)
    if not has_resolve:
        text = re.sub(r"\s+resolve(?=\s*;)", "", text)
    with tempfile.TemporaryDirectory(prefix="llmgw-nginx-") as tmp:
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(text)
        res = subprocess.run(
            [nginx, "-t", "-q", "-p", tmp, "-c", str(conf), "-g", f"pid {tmp}/nginx.pid;"],
            capture_output=True, text=True,
        )
        if res.returncode != 0:
            msg = " / ".join(l for l in res.stderr.splitlines() if "emerg" in l or "error" in l) or res.stderr.strip()
            if "Permission denied" in res.stderr and os.geteuid() != 0:
                print("  (not root: skipped `nginx -t`)")
                return
            problems.add(rel(path), f"`nginx -t` fails: {msg}")
        else:
            note = "" if has_resolve else f" (nginx {'.'.join(m.groups()) if m else '?'} lacks `resolve`: checked without it)"
            print(f"  nginx -t: ok{note}")


# ---------------------------------------------------------------------------
# Kubernetes
# ---------------------------------------------------------------------------
def kv_utils():
    """kubernetes_validate.utils, with its schema files read once per process."""
    from kubernetes_validate import utils

    if not getattr(utils, "_llmgw_cached", False):
        utils.schema_contents = functools.lru_cache(maxsize=None)(utils.schema_contents)
        utils._llmgw_cached = True
    return utils


def k8s_versions() -> list[str]:
    utils = kv_utils()
    latest = utils.major_minor(utils.latest_version())
    return [K8S_MIN_VERSION, latest] if latest != K8S_MIN_VERSION else [latest]


def validate_schema(doc: dict, version: str) -> str | None:
    utils = kv_utils()

    try:
        utils.validate(doc, version, strict=True)
    except utils.ValidationError as e:
        path = ".".join(str(p) for p in e.path) or "(root)"
        return f"{path}: {e.message}"
    except utils.SchemaNotFoundError as e:
        return f"no schema for kind {doc.get('kind')} in {doc.get('apiVersion')} (Kubernetes {version}): {e.message}"
    except (utils.VersionNotSupportedError, utils.InvalidSchemaError) as e:
        return f"cannot validate against Kubernetes {version}: {getattr(e, 'message', e)}"
    return None


def labels_match(selector: dict, labels: dict) -> bool:
    ml = (selector or {}).get("matchLabels") or {}
    return bool(ml) and all(labels.get(k) == v for k, v in ml.items())


def container_env(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env") or [] if "name" in e}


def env_value(c: dict, name: str) -> str | None:
    e = container_env(c).get(name)
    return None if e is None else e.get("value")


def port_number(c: dict, port) -> int | None:
    if isinstance(port, int):
        return port
    for p in c.get("ports") or []:
        if p.get("name") == port:
            return p.get("containerPort")
    return None


def check_kubernetes(root: Path, problems: Problems) -> None:
    kdir = root / "deploy/kubernetes"
    if not kdir.is_dir():
        problems.add(rel(kdir), "missing")
        return
    kust_path = kdir / "kustomization.yaml"
    kust = load_yaml(kust_path, problems)
    files = sorted(p.name for p in kdir.iterdir() if p.suffix in (".yaml", ".yml") and p.name != "kustomization.yaml")
    if isinstance(kust, dict):
        listed = list(kust.get("resources") or [])
        for f in files:
            if f not in listed:
                problems.add(rel(kust_path), f"does not list {f} under resources")
        for f in listed:
            if not (kdir / f).is_file():
                problems.add(rel(kust_path), f"lists {f}, which does not exist")
        if not kust.get("namespace"):
            problems.add(rel(kust_path), "sets no namespace")
        image_names = {i.get("name") for i in kust.get("images") or []}
    else:
        image_names = set()

    docs: list[tuple[str, dict]] = []
    for f in files:
        loaded = load_yaml(kdir / f, problems, many=True)
        for d in loaded or []:
            if d is None:
                continue
            if not isinstance(d, dict) or not d.get("kind") or not d.get("apiVersion"):
                problems.add(f"deploy/kubernetes/{f}", "a document without apiVersion and kind")
                continue
            docs.append((f, d))

    # Schemas, offline.
    try:
        versions = k8s_versions()
    except ImportError:
        problems.add("deploy/checks", "kubernetes-validate is not installed (deploy/checks/requirements.txt)")
        versions = []
    schema_errors = 0
    for f, d in docs:
        name = f"{d['kind']}/{(d.get('metadata') or {}).get('name', '?')}"
        for v in versions:
            err = validate_schema(d, v)
            if err:
                schema_errors += 1
                problems.add(f"deploy/kubernetes/{f}", f"{name} is not valid Kubernetes {v}: {err}")
    if versions and not schema_errors:
        print(f"  {len(docs)} manifests valid against the Kubernetes {' and '.join(versions)} schemas (strict)")

    by_kind: dict[str, list[tuple[str, dict]]] = {}
    for f, d in docs:
        by_kind.setdefault(d["kind"], []).append((f, d))
    secrets = {
        (d.get("metadata") or {}).get("name"): set((d.get("data") or {}).keys()) | set((d.get("stringData") or {}).keys())
        for _, d in by_kind.get("Secret", [])
    }
    deployments = {(d.get("metadata") or {}).get("name"): (f, d) for f, d in by_kind.get("Deployment", [])}

    # The Dockerfile's user, for runAsUser.
    image_uid = None
    dfp = root / "deploy/Dockerfile"
    if dfp.is_file():
        df = parse_dockerfile(dfp)
        users = df.stages[-1].all("USER") if df.stages else []
        if users and users[-1].value.split(":")[0].isdigit():
            image_uid = int(users[-1].value.split(":")[0])

    roles: dict[str, tuple[str, dict, dict]] = {}
    for dname, (f, d) in deployments.items():
        where = f"deploy/kubernetes/{f}: Deployment/{dname}"
        spec = d.get("spec") or {}
        tmpl = spec.get("template") or {}
        labels = (tmpl.get("metadata") or {}).get("labels") or {}
        if not labels_match(spec.get("selector"), labels):
            problems.add(where, "spec.selector does not match the pod template's labels")
        pod = tmpl.get("spec") or {}
        psc = pod.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True:
            problems.add(where, "pod securityContext.runAsNonRoot must be true")
        if image_uid is not None and psc.get("runAsUser") not in (None, image_uid):
            problems.add(where, f"runAsUser {psc.get('runAsUser')} differs from the image's USER {image_uid}")
        volumes = {v.get("name"): v for v in pod.get("volumes") or []}
        for c in pod.get("containers") or []:
            cw = f"{where} container {c.get('name')}"
            csc = c.get("securityContext") or {}
            if csc.get("readOnlyRootFilesystem") is not True:
                problems.add(cw, "securityContext.readOnlyRootFilesystem must be true")
            if csc.get("allowPrivilegeEscalation") is not False:
                problems.add(cw, "securityContext.allowPrivilegeEscalation must be false")
            if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
                problems.add(cw, "securityContext.capabilities.drop must include ALL")
            res = c.get("resources") or {}
            for kind in ("cpu", "memory"):
                if kind not in (res.get("requests") or {}):
                    problems.add(cw, f"resources.requests.{kind} is not set")
            if "memory" not in (res.get("limits") or {}):
                problems.add(cw, "resources.limits.memory is not set")
            image = str(c.get("image", ""))
            if image_names and image.rsplit(":", 1)[0] not in image_names:
                problems.add(cw, f"image {image!r} is not rewritten by kustomization.yaml images:")
            for e in c.get("env") or []:
                ref = ((e.get("valueFrom") or {}).get("secretKeyRef")) or None
                if ref:
                    if ref.get("name") not in secrets:
                        problems.add(cw, f"env {e['name']}: no Secret {ref.get('name')!r} among the manifests")
                    elif ref.get("key") not in secrets[ref["name"]] and not ref.get("optional"):
                        problems.add(cw, f"env {e['name']}: Secret {ref['name']} has no key {ref.get('key')!r}")
                elif e.get("name") in SECRET_ENV + ("DATABASE_URL",):
                    problems.add(cw, f"env {e['name']} must come from a Secret (valueFrom.secretKeyRef), not a literal")
            for m in c.get("volumeMounts") or []:
                if m.get("name") not in volumes:
                    problems.add(cw, f"volumeMount {m.get('name')!r} names no volume")
            mounts = {m.get("mountPath"): volumes.get(m.get("name"), {}) for m in c.get("volumeMounts") or []}
            if "/tmp" not in mounts:
                problems.add(cw, "mount an emptyDir at /tmp (the root filesystem is read-only)")
            cmd = (c.get("command") or []) + (c.get("args") or [])
            role = "controlplane" if "llmgw-controlplane" in cmd else "dataplane" if "llmgw-dataplane" in cmd else None
            if role is None:
                problems.add(cw, "command must name llmgw-controlplane or llmgw-dataplane (the image's role)")
                continue
            roles[role] = (where, d, c)
            if role == "controlplane":
                check_k8s_controlplane(cw, c, mounts, problems)
            else:
                check_k8s_dataplane(cw, pod, c, mounts, problems)

    # Services select pods and name their ports.
    for f, svc in by_kind.get("Service", []):
        sname = (svc.get("metadata") or {}).get("name")
        where = f"deploy/kubernetes/{f}: Service/{sname}"
        sel = (svc.get("spec") or {}).get("selector") or {}
        targets = [
            (dn, dd) for dn, (_, dd) in deployments.items()
            if sel and all(((dd["spec"].get("template") or {}).get("metadata") or {}).get("labels", {}).get(k) == v for k, v in sel.items())
        ]
        if not targets:
            problems.add(where, "selects no Deployment's pods")
            continue
        containers = (targets[0][1]["spec"]["template"]["spec"]).get("containers") or []
        for p in (svc.get("spec") or {}).get("ports") or []:
            tp = p.get("targetPort", p.get("port"))
            if not any(port_number(c, tp) for c in containers):
                problems.add(where, f"targetPort {tp!r} is no container port of {targets[0][0]}")
    # The data planes reach the control plane through its Service.
    if "dataplane" in roles and "controlplane" in roles:
        where, _, c = roles["dataplane"]
        url = env_value(c, "LLMGW_CONTROL_PLANE") or ""
        cp_dep = roles["controlplane"][1]
        cp_svcs = {
            (s.get("metadata") or {}).get("name"): s for _, s in by_kind.get("Service", [])
            if all(cp_dep["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in ((s.get("spec") or {}).get("selector") or {"-": "-"}).items())
        }
        ok = False
        for u in url.split(","):
            m = re.match(r"^https?://([^:/]+)(?::(\d+))?/?$", u.strip())
            if m and m.group(1).split(".")[0] in cp_svcs:
                svc = cp_svcs[m.group(1).split(".")[0]]
                ok = any(str(p.get("port")) == (m.group(2) or "80") for p in svc["spec"].get("ports") or [])
        if not ok:
            problems.add(where, f"LLMGW_CONTROL_PLANE={url!r} is not the control plane's Service and port ({sorted(cp_svcs)})")

    # HPA and PDB target the data planes.
    dp_dep = roles.get("dataplane", (None, None, None))[1]
    for f, hpa in by_kind.get("HorizontalPodAutoscaler", []):
        ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        where = f"deploy/kubernetes/{f}: HorizontalPodAutoscaler/{hpa['metadata'].get('name')}"
        if ref.get("kind") != "Deployment" or ref.get("name") not in deployments:
            problems.add(where, f"scaleTargetRef {ref.get('kind')}/{ref.get('name')} is no Deployment here")
        metrics = (hpa.get("spec") or {}).get("metrics") or []
        if not any((m.get("resource") or {}).get("name") == "cpu" for m in metrics):
            problems.add(where, "scales on no CPU metric")
        if (hpa.get("spec") or {}).get("minReplicas", 1) < 2:
            problems.add(where, "minReplicas below 2: a single data plane cannot be drained without downtime")
    if not by_kind.get("HorizontalPodAutoscaler"):
        problems.add("deploy/kubernetes", "no HorizontalPodAutoscaler for the data planes")
    # PDBs: one for the data planes; another may cover the control planes.
    cp_dep = roles.get("controlplane", (None, None, None))[1]
    dp_pdbs = 0
    for f, pdb in by_kind.get("PodDisruptionBudget", []):
        where = f"deploy/kubernetes/{f}: PodDisruptionBudget/{pdb['metadata'].get('name')}"
        selector = (pdb.get("spec") or {}).get("selector")
        if dp_dep is not None and labels_match(selector, dp_dep["spec"]["template"]["metadata"]["labels"]):
            dp_pdbs += 1
        elif cp_dep is not None and labels_match(selector, cp_dep["spec"]["template"]["metadata"]["labels"]):
            if (cp_dep.get("spec") or {}).get("replicas", 1) < 2:
                problems.add(where, "a PodDisruptionBudget for a single control plane blocks node drains")
        else:
            problems.add(where, "does not select the data-plane or control-plane pods")
    if dp_pdbs == 0:
        problems.add("deploy/kubernetes", "no PodDisruptionBudget for the data planes")
    for role in ("controlplane", "dataplane"):
        if role not in roles:
            problems.add("deploy/kubernetes", f"no {role} Deployment")

    kubectl = shutil.which("kubectl")
    if kubectl:
        res = subprocess.run([kubectl, "kustomize", str(kdir)], capture_output=True, text=True)
        if res.returncode != 0:
            problems.add(rel(kust_path), f"`kubectl kustomize` fails: {res.stderr.strip()}")
        else:
            print("  kubectl kustomize: ok")
    else:
        print("  (kubectl not installed: skipped `kubectl kustomize`)")


def check_k8s_controlplane(cw: str, c: dict, mounts: dict, problems: Problems) -> None:
    port = None
    listen = env_value(c, "LLMGW_CONTROLPLANE_LISTEN")
    if listen:
        port = int(listen.rpartition(":")[2])
    ports = [p.get("containerPort") for p in c.get("ports") or []]
    if port is not None and port not in ports:
        problems.add(cw, f"LLMGW_CONTROLPLANE_LISTEN port {port} is no containerPort")
    for probe in ("readinessProbe", "livenessProbe"):
        p = c.get(probe) or {}
        if "tcpSocket" not in p:
            problems.add(cw, f"{probe} must be a tcpSocket probe (the control plane has no HTTP health endpoint)")
        elif port_number(c, p["tcpSocket"].get("port")) not in ports:
            problems.add(cw, f"{probe} probes a port the container does not expose")
    if "DATABASE_URL" not in container_env(c):
        problems.add(cw, "DATABASE_URL is not set: the control plane would use SQLite on an emptyDir")
    if "/data" not in mounts:
        problems.add(cw, "mount a writable volume at /data (LLMGW_DATA_DIR; the root filesystem is read-only)")


def check_k8s_dataplane(cw: str, pod: dict, c: dict, mounts: dict, problems: Problems) -> None:
    ports = [p.get("containerPort") for p in c.get("ports") or []]
    listen = env_value(c, "LLMGW_DATAPLANE_LISTEN") or ""
    host, _, port = listen.rpartition(":")
    if host not in ("0.0.0.0", "[::]") or not port.isdigit() or int(port) not in ports:
        problems.add(cw, f"LLMGW_DATAPLANE_LISTEN={listen!r} must be 0.0.0.0:<a containerPort>")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = (c.get(probe) or {}).get("httpGet") or {}
        if get.get("path") != path:
            problems.add(cw, f"{probe} must be httpGet {path}")
        elif port_number(c, get.get("port")) not in ports:
            problems.add(cw, f"{probe} probes a port the container does not expose")
    node = container_env(c).get("LLMGW_NODE_ID")
    if node and node.get("value"):
        problems.add(cw, "LLMGW_NODE_ID is a fixed value: every replica would share it (use the pod name)")
    spool = env_value(c, "LLMGW_SPOOL_DIR")
    if not spool:
        problems.add(cw, "set LLMGW_SPOOL_DIR to an emptyDir mount")
    elif "emptyDir" not in mounts.get(spool, {}):
        problems.add(cw, f"LLMGW_SPOOL_DIR={spool} is not an emptyDir mount (the root filesystem is read-only)")
    pre = (((c.get("lifecycle") or {}).get("preStop") or {}))
    sleep_s = None
    if "sleep" in pre:
        sleep_s = pre["sleep"].get("seconds")
    else:
        cmd = (pre.get("exec") or {}).get("command") or []
        if len(cmd) == 2 and cmd[0] == "sleep" and cmd[1].isdigit():
            sleep_s = int(cmd[1])
    if not sleep_s:
        problems.add(cw, "lifecycle.preStop must sleep a few seconds, so endpoints are removed before the drain")
        sleep_s = 0
    grace = int(env_value(c, "LLMGW_SHUTDOWN_GRACE_S") or 30)
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    need = sleep_s + 2 * grace + DATAPLANE_SETTLE_S + 10
    if tgps < need:
        problems.add(
            cw,
            f"terminationGracePeriodSeconds {tgps} is shorter than the drain: preStop {sleep_s} s + "
            f"2 x LLMGW_SHUTDOWN_GRACE_S ({grace}) + {DATAPLANE_SETTLE_S} s + 10 s margin = {need} s",
        )


# ---------------------------------------------------------------------------
def run(root: Path, sections: list[str], skip_cargo: bool = False) -> Problems:
    global ROOT
    ROOT = root
    all_problems = Problems()
    compose_info = None
    for section in sections:
        problems = Problems()
        print(f"== {section}")
        try:
            if section == "dockerfile":
                check_dockerfile(root, problems)
            elif section == "build-commands":
                check_build_commands(root, problems)
            elif section == "docker-context":
                check_docker_context(root, problems, skip_cargo)
            elif section == "compose":
                compose_info = check_compose(root, problems)
            elif section == "nginx":
                if compose_info is None and "compose" not in sections:
                    compose_info = check_compose(root, Problems())
                check_nginx(root, problems, compose_info)
            elif section == "kubernetes":
                check_kubernetes(root, problems)
        except Exception as e:  # a crash in a check is a failure, with the reason
            problems.add(section, f"check crashed: {type(e).__name__}: {e}")
        for p in problems:
            print(f"  FAIL {p}")
        if not problems:
            print("  ok")
        all_problems.extend(problems)
    return all_problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2])
    ap.add_argument("--skip-cargo", action="store_true", help="do not run cargo metadata on the simulated context")
    ap.add_argument("sections", nargs="*", metavar="SECTION", help=f"any of {', '.join(SECTIONS)} (default: all)")
    args = ap.parse_args(argv)
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    sections = args.sections or list(SECTIONS)
    problems = run(args.root.resolve(), sections, args.skip_cargo)
    if problems:
        print(f"\ndeploy checks: {len(problems)} problem(s)")
        return 1
    print(f"\ndeploy checks: all {len(sections)} sections passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
