# shellcheck shell=bash
# scripts/lib/common.sh - small helpers shared by scripts/test.sh and scripts/run.sh.
# Source it; it only defines functions (no side effects, no `set` changes).

# Messages go to stderr so stdout stays usable for results.
llmgw_log() { printf '%s\n' "$*" >&2; }
llmgw_die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

# Monotonic-enough wall clock in microseconds (bash >= 5 has EPOCHREALTIME).
llmgw_now_us() {
    if [[ -n "${EPOCHREALTIME:-}" ]]; then
        local t="${EPOCHREALTIME/[.,]/}"
        printf '%s\n' "$t"
    else
        printf '%s\n' "$(($(date +%s%N) / 1000))"
    fi
}

# llmgw_fmt_duration MICROSECONDS -> "4.2s" / "3m07.5s"
llmgw_fmt_duration() {
    local us=$1
    local tenths=$((us / 100000))
    local s=$((tenths / 10)) d=$((tenths % 10))
    if ((s >= 60)); then
        printf '%dm%02d.%ds' $((s / 60)) $((s % 60)) "$d"
    else
        printf '%d.%ds' "$s" "$d"
    fi
}

# llmgw_split_addr HOST:PORT -> sets LLMGW_ADDR_HOST / LLMGW_ADDR_PORT.
# Accepts "127.0.0.1:9090", "[::1]:9090", "localhost:9090", ":9090".
# Wildcard hosts (0.0.0.0, ::, empty) are mapped to the matching loopback so
# the result can be connected to.
llmgw_split_addr() {
    local addr=$1
    LLMGW_ADDR_PORT="${addr##*:}"
    LLMGW_ADDR_HOST="${addr%:*}"
    LLMGW_ADDR_HOST="${LLMGW_ADDR_HOST#[}"
    LLMGW_ADDR_HOST="${LLMGW_ADDR_HOST%]}"
    case "$LLMGW_ADDR_HOST" in
        "" | 0.0.0.0) LLMGW_ADDR_HOST=127.0.0.1 ;;
        "::") LLMGW_ADDR_HOST=::1 ;;
    esac
    [[ "$LLMGW_ADDR_PORT" =~ ^[0-9]+$ && "$addr" == *:* ]] || return 1
}

# llmgw_url_host HOST -> HOST usable inside a URL (brackets around IPv6).
llmgw_url_host() {
    if [[ "$1" == *:* ]]; then printf '[%s]\n' "$1"; else printf '%s\n' "$1"; fi
}

# llmgw_tcp_open HOST PORT -> success if something accepts TCP connections there.
# shellcheck disable=SC2016 # $1/$2 are expanded by the inner bash on purpose
llmgw_tcp_open() {
    if command -v timeout >/dev/null 2>&1; then
        timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
    else
        bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
    fi
}

# llmgw_find_nginx -> prints the path of nginx (on PATH, or in Debian's
# /usr/sbin, which is not on every user's PATH); fails if there is none.
llmgw_find_nginx() {
    local p
    for p in "$(command -v nginx 2>/dev/null)" /usr/sbin/nginx /usr/local/sbin/nginx; do
        if [[ -n "$p" && -x "$p" ]]; then
            printf '%s\n' "$p"
            return 0
        fi
    done
    return 1
}

# llmgw_apt_install LOG PKG... -> installs Debian packages quietly (an
# `apt-get update` only when the first try fails), with output in LOG, shown
# on failure. Services the packages would start (nginx on port 80) are not
# started: a temporary policy-rc.d refuses them, unless the machine has one.
llmgw_apt_install() {
    local log=$1 rc=0 policy=/usr/sbin/policy-rc.d made_policy=0
    shift
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\n# llmgw scripts/test.sh: no service starts during this install\nexit 101\n' >"$policy" &&
            chmod 755 "$policy" && made_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq "$@" >"$log" 2>&1; then
        { apt-get update -qq && apt-get install -y -qq "$@"; } >>"$log" 2>&1 || rc=$?
    fi
    ((made_policy)) && rm -f "$policy"
    if ((rc != 0)); then
        cat "$log" >&2
        return "$rc"
    fi
}
