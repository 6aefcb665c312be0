#!/usr/bin/env bash
# scripts/test.sh - THE single command that runs every test (CI runs it via .ci/run).
#
# Usage: ./scripts/test.sh [ARGS...]   (works from any directory)
#   ARGS, if any, are passed to the test runner (`cargo nextest run` or, without
#   cargo-nextest, `cargo test`), e.g. ./scripts/test.sh -E 'test(rules)'.
#
# Stages, in order; the first failing stage stops the run (exit status != 0):
#   1. rustfmt check        cargo fmt --all -- --check
#   1a. deploy checks       deploy/checks/ (offline): Dockerfile, compose, nginx and
#                           Kubernetes manifests, and the tests of those checks
#   2. clippy               cargo clippy --workspace --all-targets --locked -- -D warnings
#   3. PostgreSQL           scripts/pg.sh; exports LLMGW_TEST_POSTGRES_URL
#                           (an already-set LLMGW_TEST_POSTGRES_URL is used as is)
#   4. build binaries       cargo build --workspace --bins --locked (target/debug/llmgw*)
#   5. Rust tests           cargo nextest run --workspace --locked --no-fail-fast
#                           (falls back to `cargo test --workspace --locked`)
#   6. doctests             cargo test --workspace --doc --locked (nextest only)
#   7+. later stages        see the HOOK section below (Python SDK, dashboard)
# (--locked is used only when Cargo.lock exists.)
#
# Exported for the tests: LLMGW_TEST_POSTGRES_URL (admin URL; role has CREATEDB,
# each test creates and drops its own database) and LLMGW_BIN_DIR (directory of
# the freshly built debug binaries), unless already set.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/common.sh
source "$ROOT/scripts/lib/common.sh"

export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
CARGO_LOCKED=()
[[ -f Cargo.lock ]] && CARGO_LOCKED=(--locked)
TEST_ARGS=("$@")

STATE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/llmgw-test.XXXXXX")"

# ---------------------------------------------------------------------------
# Stage runner: header, elapsed time, fail fast, summary at exit.
# ---------------------------------------------------------------------------
STAGE_LINES=()
STAGE_NO=0
TOTAL_START="$(llmgw_now_us)"

banner() {
    local line="========================================================================"
    printf '\n%s\n==> %s\n%s\n' "$line" "$*" "$line"
}

# run_stage NAME CMD [ARGS...]: runs CMD in a subshell with `set -e` in force
# (so multi-command stage functions also stop at their first failure).
run_stage() {
    local name=$1 rc start elapsed
    shift
    STAGE_NO=$((STAGE_NO + 1))
    banner "[$STAGE_NO] $name"
    start="$(llmgw_now_us)"
    set +e
    (
        set -e
        "$@"
    )
    rc=$?
    set -e
    elapsed="$(llmgw_fmt_duration $(($(llmgw_now_us) - start)))"
    if ((rc != 0)); then
        STAGE_LINES+=("$(printf '  FAIL  %-40s %9s  (exit %d)' "$name" "$elapsed" "$rc")")
        printf '\n<== [%d] %s: FAILED (exit %d) after %s\n' "$STAGE_NO" "$name" "$rc" "$elapsed" >&2
        exit "$rc"
    fi
    STAGE_LINES+=("$(printf '  ok    %-40s %9s' "$name" "$elapsed")")
    printf '<== [%d] %s: ok (%s)\n' "$STAGE_NO" "$name" "$elapsed"
}

skip_stage() {
    STAGE_LINES+=("$(printf '  skip  %-40s %9s  (%s)' "$1" - "$2")")
    printf '\n--- skipping %s: %s\n' "$1" "$2"
}

on_exit() {
    local rc=$?
    rm -rf "$STATE_DIR"
    local total
    total="$(llmgw_fmt_duration $(($(llmgw_now_us) - TOTAL_START)))"
    banner "Summary"
    if ((${#STAGE_LINES[@]} > 0)); then printf '%s\n' "${STAGE_LINES[@]}"; fi
    if ((rc == 0)); then
        printf 'ALL TESTS PASSED (%s)\n' "$total"
    else
        printf 'TESTS FAILED (exit %d, %s)\n' "$rc" "$total"
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Where cargo builds: the binaries' folder below, and the malloc check.
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"

# ---------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------
stage_fmt() { cargo fmt --all -- --check; }

stage_clippy() {
    cargo clippy --workspace --all-targets "${CARGO_LOCKED[@]}" -- -D warnings
}

# Writes the URL to $STATE_DIR/pg-url; the parent shell exports it afterwards.
stage_postgres() {
    bash "$ROOT/scripts/pg.sh" --url >"$STATE_DIR/pg-url"
    [[ -s "$STATE_DIR/pg-url" ]]
}

stage_build_bins() {
    cargo build --workspace --bins "${CARGO_LOCKED[@]}"
    # mimalloc's `override` feature makes it the C library's malloc in the
    # servers too (docs/architecture.md, the mimalloc row). That holds only
    # while the linker exports its malloc and free from the executable: one
    # that defined them without exporting them would free glibc's own
    # allocations into mimalloc.
    local bin n
    for bin in llmgw-controlplane llmgw-dataplane; do
        n="$(readelf --dyn-syms -W "$TARGET_DIR/debug/$bin" | awk '$7 != "UND" && ($8 == "malloc" || $8 == "free")' | wc -l)"
        [[ "$n" == 2 ]] || llmgw_die "$bin does not export mimalloc's malloc and free ($n of 2 found)"
    done
}

stage_rust_tests_nextest() {
    # --no-tests=warn: an empty selection (e.g. a filter in ARGS) is not an error.
    cargo nextest run --workspace "${CARGO_LOCKED[@]}" --no-fail-fast --no-tests=warn "${TEST_ARGS[@]}"
}

stage_rust_tests_cargo() {
    cargo test --workspace "${CARGO_LOCKED[@]}" --no-fail-fast "${TEST_ARGS[@]}"
}

stage_doctests() {
    cargo test --workspace --doc "${CARGO_LOCKED[@]}"
}

# Deployment files (deploy/): the Dockerfile, compose file, nginx config and
# Kubernetes manifests, checked offline by deploy/checks/check_deploy.py
# (Kubernetes schemas bundled in kubernetes-validate; build commands compared
# with this script's and run.sh's), then the tests that make each check fail
# on a broken copy. Tools go into deploy/checks/.venv, (re)installed from PyPI
# only when deploy/checks/requirements.txt changed (a stamp holds its hash).
stage_deploy_checks() {
    local venv="$ROOT/deploy/checks/.venv" req="$ROOT/deploy/checks/requirements.txt"
    local stamp="$ROOT/deploy/checks/.venv/.llmgw-requirements.sha256" want
    if [[ ! -x "$venv/bin/python" ]]; then
        python3 -m venv "$venv"
    fi
    want="$(sha256sum "$req" | cut -d' ' -f1)"
    if [[ ! -f "$stamp" || "$(<"$stamp")" != "$want" ]]; then
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
        printf '%s\n' "$want" >"$stamp"
    fi
    PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" deploy/checks/check_deploy.py
    PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" -m unittest discover -s deploy/checks -p 'test_*.py'
}

# ===========================================================================
# HOOK: later test stages. Add them here; each is `run_stage "Name" fn`.
# Every stage function runs in a subshell with `set -e`, from the repo root,
# with LLMGW_TEST_POSTGRES_URL and LLMGW_BIN_DIR exported. Install what the
# stage needs idempotently and quietly (fresh CI machines have only the base
# image: Rust, cargo-nextest, PostgreSQL 15; network: crates.io/PyPI/npm/apt).
# ===========================================================================

# Python SDK: end-to-end tests with the official openai/anthropic SDKs (and
# the openai npm package, via tests/node) against the binaries in
# $LLMGW_BIN_DIR. The venv under .venv is created if missing; its packages
# are (re)installed only when tests/python/requirements.txt changed (a stamp
# in the venv holds the file's hash). The cluster tests (test_cluster.py) put
# Debian's nginx in front of several data planes: it is installed when
# missing, and its path exported as LLMGW_NGINX; they also use psql (from
# PostgreSQL, scripts/pg.sh) to create their databases. The agent tests
# (test_agents.py) run Claude Code and the Codex CLI from tests/agents, which
# tests/agents/ensure-deps.sh installs (npm ci, when the lock file changed);
# their paths are exported as LLMGW_CLAUDE and LLMGW_CODEX.
stage_python_sdk() {
    local venv="$ROOT/.venv" req="$ROOT/tests/python/requirements.txt"
    local stamp="$ROOT/.venv/.llmgw-requirements.sha256" want
    bash tests/agents/ensure-deps.sh
    export LLMGW_CLAUDE="$ROOT/tests/agents/node_modules/.bin/claude"
    export LLMGW_CODEX="$ROOT/tests/agents/node_modules/.bin/codex"
    if ! llmgw_find_nginx >/dev/null; then
        printf 'installing nginx (apt-get)\n'
        llmgw_apt_install "$STATE_DIR/apt-nginx.log" nginx || llmgw_die "cannot install nginx"
    fi
    LLMGW_NGINX="$(llmgw_find_nginx)" || llmgw_die "nginx is installed but not found"
    export LLMGW_NGINX
    if [[ ! -x "$venv/bin/python" ]]; then
        python3 -m venv "$venv"
    fi
    want="$(sha256sum "$req" | cut -d' ' -f1)"
    if [[ ! -f "$stamp" || "$(<"$stamp")" != "$want" ]]; then
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
        printf '%s\n' "$want" >"$stamp"
    fi
    # The benchmark harness's figure computations (no processes started).
    PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider bench/test_harness.py
    PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" -m pytest -q -n 2 tests/python
}

# Dashboard unit tests: npm ci when node_modules is missing or the lock file
# changed, the production build (client generated from proto/, type check,
# bundle sizes), then Vitest.
stage_dashboard_unit() {
    bash dashboard/scripts/ensure-deps.sh
    (cd dashboard && npm run build && npx vitest run)
}

# Dashboard browser tests: Debian's chromium (installed when missing), driven
# by playwright-core against a control plane, data plane and mock started
# from $LLMGW_BIN_DIR; screenshots go to dashboard/test-artifacts/.
stage_dashboard_browser() {
    if [[ ! -x /usr/bin/chromium ]]; then
        local log="$STATE_DIR/apt-chromium.log"
        export DEBIAN_FRONTEND=noninteractive
        printf 'installing chromium (apt-get)\n'
        if ! apt-get install -y -qq chromium >"$log" 2>&1; then
            apt-get update -qq >>"$log" 2>&1 && apt-get install -y -qq chromium >>"$log" 2>&1 ||
                { cat "$log" >&2; llmgw_die "cannot install chromium"; }
        fi
    fi
    bash dashboard/scripts/build-if-stale.sh
    (cd dashboard && npm run e2e)
}

later_stages() {
    # Uncomment (in this order) as each stage lands:
    run_stage "Python SDK tests" stage_python_sdk
    run_stage "Dashboard unit tests (npm)" stage_dashboard_unit
    run_stage "Dashboard browser tests (chromium)" stage_dashboard_browser
    return 0
}

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------
printf 'llmgw tests in %s (%s)\n' "$ROOT" "$(cargo --version)"

run_stage "rustfmt check" stage_fmt
run_stage "deploy checks (Dockerfile, compose, Kubernetes)" stage_deploy_checks
run_stage "clippy (-D warnings)" stage_clippy

run_stage "PostgreSQL" stage_postgres
LLMGW_TEST_POSTGRES_URL="$(<"$STATE_DIR/pg-url")"
export LLMGW_TEST_POSTGRES_URL
printf 'LLMGW_TEST_POSTGRES_URL=%s\n' "$LLMGW_TEST_POSTGRES_URL"

run_stage "build workspace binaries" stage_build_bins
if [[ -z "${LLMGW_BIN_DIR:-}" ]]; then
    export LLMGW_BIN_DIR="$TARGET_DIR/debug"
fi

if cargo nextest --version >/dev/null 2>&1; then
    run_stage "Rust tests (cargo nextest)" stage_rust_tests_nextest
    run_stage "doctests" stage_doctests
else
    run_stage "Rust tests (cargo test, incl. doctests)" stage_rust_tests_cargo
fi

later_stages
