#!/usr/bin/env bash
# bench/run.sh - the benchmark: llmgw against direct calls and nginx.
#
# Usage: bench/run.sh [--quick] [--rounds N] [--peers litellm] [--scenarios S1,S3,...]
#                     [--s7-objects N] [--keep] [--dataplane-bin PATH] [--no-routes]
#                     [--bin-dir DIR] [--no-build] [--s8-seconds S] [--s8-sizes B,B]
#        bench/run.sh --callgrind N [--callgrind-floors] [--callgrind-logging]
#                     [--callgrind-streams N] [--dataplane-args ARGS]
#        bench/run.sh --scenarios S8 --callgrind N   # S8's instructions per request
#
#   1. builds release binaries (cargo build --release --bins, which includes
#      the streaming client llmgw-bench from bench/) into CARGO_TARGET_DIR
#      (default target/), and runs them from its release/ folder (or from
#      --bin-dir DIR, or LLMGW_BENCH_BIN_DIR); --no-build skips the build
#      and uses the binaries there as they are;
#   2. installs what is missing: nginx and wrk (Debian packages, apt-get),
#      oha (cargo install oha, from crates.io); with --peers litellm, LiteLLM's
#      proxy into bench/.venv-litellm (pip, from PyPI);
#   3. runs bench/harness.py: mock, control plane, data plane and nginx on
#      127.0.0.1 ports chosen free, the system under test pinned to core 0 and
#      the mock and load generators to core 1 (the control plane there too, at
#      SCHED_IDLE); scenarios S1-S7 against direct, nginx and llmgw (and, in
#      S3, a bare hyper proxy as a diagnostic floor), rotating order, 3 rounds
#      (1 with --quick); in S1, S3 and S4 also llmgw's translated routes
#      (chat → anthropic, messages → openai-chat, and messages → anthropic,
#      the Anthropic client's same-protocol route; --no-routes leaves them
#      out); prints the table of medians (ranges) and the bar, and writes
#      bench/results/<timestamp>.json and .md;
#   4. then S8, long-context bodies (512 KiB and 2 MiB, 16 in flight,
#      non-stream and stream, direct / nginx / llmgw): `llmgw-bench s8`
#      (bench/src/s8.rs) on the load core, which starts a stack of its own
#      the same way and writes bench/results/s8-<timestamp>.json and .md.
#      It runs in a full run and when --scenarios names it; --s8-seconds
#      (4, 2 with --quick) and --s8-sizes (bytes) change its runs. With
#      --callgrind N and --scenarios S8 it counts the data plane's
#      instructions per request for S8's bodies instead.
#
# A full run takes about 19 minutes (S8 about 3 of them), --quick about 4
# (after the build).
# Needs: a Rust toolchain, python3, taskset (util-linux), 2 cores, root for
# apt-get (or nginx, wrk and oha already installed). Run it on an otherwise
# idle machine: the load average is recorded, and a warning printed at >= 0.5.
# Never part of the test suite. See docs/benchmarks.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { printf '[bench] %s\n' "$*" >&2; }

peers=""
build=1
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[$i]}" in
        --peers) peers="${args[$((i + 1))]:-}" ;;
        --peers=*) peers="${args[$i]#--peers=}" ;;
        --no-build) build=0 ;;
        -h | --help) sed -n '2,43p' "$0"; exec python3 bench/harness.py --help ;;
    esac
done

if (($(nproc) < 2)); then
    log "needs at least 2 cores (system under test on core 0, load on core 1)"
    exit 1
fi

# ---- tools ---------------------------------------------------------------
apt_install() {
    if [[ $(id -u) -ne 0 ]]; then
        log "missing $*: install them (apt-get install -y $*) or run as root"
        exit 1
    fi
    log "installing $* from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
missing=()
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v taskset >/dev/null || missing+=(util-linux)
command -v python3 >/dev/null || missing+=(python3)
if [[ " $* " == *" --callgrind"* ]]; then
    command -v valgrind >/dev/null || missing+=(valgrind)
fi
if ((${#missing[@]})); then
    apt_install "${missing[@]}"
fi
export PATH="$PATH:/usr/sbin:$HOME/.cargo/bin"
if ! command -v oha >/dev/null; then
    log "installing oha from crates.io (cargo install oha --locked)"
    cargo install oha --locked --quiet
fi

if [[ ",$peers," == *",litellm,"* ]]; then
    venv="$ROOT/bench/.venv-litellm"
    if [[ ! -x "$venv/bin/litellm" ]]; then
        log "installing LiteLLM's proxy into bench/.venv-litellm (pip install 'litellm[proxy]')"
        python3 -m venv "$venv"
        if ! "$venv/bin/pip" install -q 'litellm[proxy]'; then
            log "could not install litellm[proxy]; the litellm column is left out"
        fi
    fi
fi

# ---- build ---------------------------------------------------------------
if ((build)); then
    log "building release binaries (cargo build --release --bins) into ${CARGO_TARGET_DIR:-target}"
    cargo build --release --bins --quiet
else
    log "not building (--no-build): the binaries as they are"
fi

# S5's 10,000 streams need two file descriptors each in the proxy (client
# and upstream), one each in the mock and the load generator: raise the
# limit (soft and hard; the hard one only as root with CAP_SYS_RESOURCE),
# else to the hard limit, and the harness measures what that holds.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# ---- scenarios -----------------------------------------------------------
# S8 is llmgw-bench's (bench/src/s8.rs), the rest harness.py's: split the
# arguments between them.
harness_args=()
s8_args=()
scenarios=""
callgrind=""
bin_dir="${LLMGW_BENCH_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}"
for ((i = 0; i < ${#args[@]}; i++)); do
    a="${args[$i]}"
    next="${args[$((i + 1))]:-}"
    case "$a" in
        --scenarios) scenarios="$next"; i=$((i + 1)); continue ;;
        --scenarios=*) scenarios="${a#--scenarios=}"; continue ;;
        --s8-seconds) s8_args+=(--seconds "$next"); i=$((i + 1)); continue ;;
        --s8-sizes) s8_args+=(--sizes "$next"); i=$((i + 1)); continue ;;
        --quick | --keep) s8_args+=("$a") ;;
        --rounds | --dataplane-bin | --dataplane-args | --callgrind)
            s8_args+=("$a" "$next")
            harness_args+=("$a" "$next")
            [[ "$a" == --callgrind ]] && callgrind="$next"
            i=$((i + 1))
            continue
            ;;
        --bin-dir) bin_dir="$next"; s8_args+=("$a" "$next") ;&
        *) ;;
    esac
    harness_args+=("$a")
done
run_s8=0
others=""
if [[ -z "$scenarios" ]]; then
    # A full run: harness.py's default scenarios, then S8 (not with
    # --callgrind, which counts harness.py's requests only).
    [[ -z "$callgrind" ]] && run_s8=1
    others="default"
else
    IFS=',' read -ra names <<<"$scenarios"
    kept=()
    for n in "${names[@]}"; do
        if [[ "${n^^}" == "S8" ]]; then run_s8=1; else kept+=("$n"); fi
    done
    if ((${#kept[@]})); then
        others="$(IFS=,; echo "${kept[*]}")"
        harness_args+=(--scenarios "$others")
    fi
fi

if [[ -z "$others" && " ${harness_args[*]} " == *" --callgrind-logging "* ]]; then
    log "--callgrind-logging counts harness.py's requests; S8's count has no logging modes"
    exit 2
fi

status=0
if [[ -n "$others" ]]; then
    python3 "$ROOT/bench/harness.py" "${harness_args[@]}" || status=$?
fi
if ((run_s8)); then
    # This process is the load generator: on the load core, as the
    # harness's load generators are.
    taskset -c 1 "$bin_dir/llmgw-bench" s8 --results "$ROOT/bench/results" "${s8_args[@]}" || status=$?
fi
exit "$status"
