#!/usr/bin/env bash
# scripts/run.sh - THE single command that starts the gateway locally.
#
# Usage: ./scripts/run.sh   (works from any directory; runs from the repo root)
#
#   1. builds release binaries       cargo build --release --bins
#   2. starts llmgw-controlplane      (SQLite under ./data by default) and waits
#                                     until its port accepts TCP connections
#   3. starts one llmgw-dataplane     --control-plane http://<control plane>
#                                     and waits until GET /readyz returns 200
#   4. prints the addresses and how to use the CLI, then waits.
#   Ctrl-C / SIGTERM stops both processes (SIGTERM, bounded wait, then SIGKILL).
#   If either process exits, the other one is stopped and the script exits non-zero.
#
# Environment (all optional):
#   LLMGW_CONTROLPLANE_LISTEN   control plane address   (default 127.0.0.1:9090)
#   LLMGW_DATAPLANE_LISTEN      data plane address      (default 127.0.0.1:8000)
#     Both are exported, so the binaries see the same values.
#   LLMGW_DATAPLANE_TOKEN       data plane token; otherwise the data plane reads
#                               ./data/dataplane-token written by the control plane
#   LLMGW_ADMIN_TOKEN           admin token; otherwise ./data/admin-token
#   LLMGW_RUN_START_TIMEOUT     seconds to wait for each process (default 60)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/common.sh
source "$ROOT/scripts/lib/common.sh"

export LLMGW_CONTROLPLANE_LISTEN="${LLMGW_CONTROLPLANE_LISTEN:-127.0.0.1:9090}"
export LLMGW_DATAPLANE_LISTEN="${LLMGW_DATAPLANE_LISTEN:-127.0.0.1:8000}"
START_TIMEOUT="${LLMGW_RUN_START_TIMEOUT:-60}"
STOP_TIMEOUT=15

llmgw_split_addr "$LLMGW_CONTROLPLANE_LISTEN" ||
    llmgw_die "LLMGW_CONTROLPLANE_LISTEN must be HOST:PORT, got '$LLMGW_CONTROLPLANE_LISTEN'"
CP_HOST="$LLMGW_ADDR_HOST"
CP_PORT="$LLMGW_ADDR_PORT"
CP_URL="http://$(llmgw_url_host "$CP_HOST"):$CP_PORT"

llmgw_split_addr "$LLMGW_DATAPLANE_LISTEN" ||
    llmgw_die "LLMGW_DATAPLANE_LISTEN must be HOST:PORT, got '$LLMGW_DATAPLANE_LISTEN'"
DP_HOST="$LLMGW_ADDR_HOST"
DP_PORT="$LLMGW_ADDR_PORT"
DP_URL="http://$(llmgw_url_host "$DP_HOST"):$DP_PORT"

log() { llmgw_log "run.sh: $*"; }

# ===========================================================================
# Dashboard build: `npm ci` when dashboard/node_modules is missing or the lock
# file changed, `npm run build` when dashboard/dist is missing or older than
# its sources or proto/. The control plane serves dashboard/dist at / (its
# default --dashboard-dir when started from the repo root).
# ===========================================================================
build_dashboard() {
    if ! command -v npm >/dev/null 2>&1; then
        log "npm is not installed: starting without the web dashboard (it needs Node.js 20 and npm)"
        return 0
    fi
    log "building the web dashboard if it is missing or stale"
    bash "$ROOT/dashboard/scripts/build-if-stale.sh" || llmgw_die "the dashboard build failed"
    log "the dashboard will be served at $CP_URL/"
}

# ---------------------------------------------------------------------------
# Child process management
# ---------------------------------------------------------------------------
CP_PID=""
DP_PID=""

# stop_child PID NAME: SIGTERM, wait up to STOP_TIMEOUT s, then SIGKILL; reaps it.
stop_child() {
    local pid=$1 name=$2 deadline
    [[ -n "$pid" ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        deadline=$((SECONDS + STOP_TIMEOUT))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name did not stop within ${STOP_TIMEOUT}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

# Data plane first (it depends on the control plane), then the control plane.
stop_all() {
    stop_child "$DP_PID" llmgw-dataplane
    DP_PID=""
    stop_child "$CP_PID" llmgw-controlplane
    CP_PID=""
}

RUNNING=0
# shellcheck disable=SC2317 # invoked via trap
on_signal() {
    trap '' INT TERM
    log "received SIG$1; shutting down"
    stop_all
    log "stopped"
    # A requested stop of a running gateway is a clean exit; an interrupted
    # build/startup is not.
    if ((RUNNING)); then exit 0; fi
    if [[ "$1" == INT ]]; then exit 130; else exit 143; fi
}

trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'stop_all' EXIT

# fail MESSAGE: stop everything, exit non-zero.
fail() {
    log "ERROR: $*"
    stop_all
    exit 1
}


# ---------------------------------------------------------------------------
# 1. Build
# ---------------------------------------------------------------------------
build_dashboard

log "building release binaries (cargo build --release --bins)"
cargo build --release --bins

target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$target_dir" == /* ]] || target_dir="$ROOT/$target_dir"
BIN_DIR="$target_dir/release"
for bin in llmgw-controlplane llmgw-dataplane llmgw; do
    [[ -x "$BIN_DIR/$bin" ]] || llmgw_die "$BIN_DIR/$bin was not built"
done

# Refuse to start if something already listens there (we would otherwise
# mistake it for our own process being ready).
if llmgw_tcp_open "$CP_HOST" "$CP_PORT"; then
    llmgw_die "something is already listening on $CP_HOST:$CP_PORT (set LLMGW_CONTROLPLANE_LISTEN to use another address)"
fi
if llmgw_tcp_open "$DP_HOST" "$DP_PORT"; then
    llmgw_die "something is already listening on $DP_HOST:$DP_PORT (set LLMGW_DATAPLANE_LISTEN to use another address)"
fi

mkdir -p data

# ---------------------------------------------------------------------------
# 2. Control plane
# ---------------------------------------------------------------------------
log "starting llmgw-controlplane on $LLMGW_CONTROLPLANE_LISTEN"
"$BIN_DIR/llmgw-controlplane" &
CP_PID=$!

deadline=$((SECONDS + START_TIMEOUT))
until llmgw_tcp_open "$CP_HOST" "$CP_PORT"; do
    if ! kill -0 "$CP_PID" 2>/dev/null; then
        rc=0
        wait "$CP_PID" 2>/dev/null || rc=$?
        CP_PID=""
        fail "llmgw-controlplane exited during startup (exit $rc)"
    fi
    ((SECONDS < deadline)) || fail "llmgw-controlplane not accepting connections on $CP_HOST:$CP_PORT after ${START_TIMEOUT}s"
    sleep 0.2
done
log "llmgw-controlplane is up (pid $CP_PID)"

# ---------------------------------------------------------------------------
# 3. Data plane
# ---------------------------------------------------------------------------
log "starting llmgw-dataplane on $LLMGW_DATAPLANE_LISTEN (control plane $CP_URL)"
"$BIN_DIR/llmgw-dataplane" --control-plane "$CP_URL" &
DP_PID=$!

deadline=$((SECONDS + START_TIMEOUT))
until curl -fsS -o /dev/null --max-time 2 "$DP_URL/readyz" 2>/dev/null; do
    for pair in "$CP_PID:llmgw-controlplane" "$DP_PID:llmgw-dataplane"; do
        pid="${pair%%:*}"
        if ! kill -0 "$pid" 2>/dev/null; then
            rc=0
            wait "$pid" 2>/dev/null || rc=$?
            [[ "$pid" == "$CP_PID" ]] && CP_PID=""
            [[ "$pid" == "$DP_PID" ]] && DP_PID=""
            fail "${pair#*:} exited during startup (exit $rc)"
        fi
    done
    ((SECONDS < deadline)) || fail "llmgw-dataplane not ready ($DP_URL/readyz) after ${START_TIMEOUT}s"
    sleep 0.2
done

# ---------------------------------------------------------------------------
# 4. Running
# ---------------------------------------------------------------------------
if [[ -n "${LLMGW_ADMIN_TOKEN:-}" ]]; then
    token_hint="admin token: \$LLMGW_ADMIN_TOKEN"
else
    token_hint="admin token: ./data/admin-token (the CLI reads it by itself)"
fi
cat <<EOF

llmgw is running (Ctrl-C to stop)
  control plane : $CP_URL   (pid $CP_PID)
  data plane    : $DP_URL   (pid $DP_PID)   send LLM requests here
  CLI           : target/release/llmgw --help
                  $token_hint

EOF

RUNNING=1
rc=0
exited=""
wait -n -p exited "$CP_PID" "$DP_PID" || rc=$?
if [[ "$exited" == "$CP_PID" ]]; then
    CP_PID=""
    fail "llmgw-controlplane exited (exit $rc); stopping the data plane"
elif [[ "$exited" == "$DP_PID" ]]; then
    DP_PID=""
    fail "llmgw-dataplane exited (exit $rc); stopping the control plane"
fi
fail "unexpected return from wait (exit $rc)"
