#!/usr/bin/env bash
# scripts/pg.sh - make a local PostgreSQL 15 server available for the tests.
#
# Usage (either works, from any directory):
#
#   source scripts/pg.sh          # exports LLMGW_TEST_POSTGRES_URL in your shell
#   eval "$(scripts/pg.sh)"       # same thing; the script prints `export ...=...`
#   scripts/pg.sh --url           # prints only the URL (used by scripts/test.sh)
#
# What it does (idempotent; quiet and fast (~0.2s) when everything is already set up):
#   1. If LLMGW_TEST_POSTGRES_URL is already set, it does nothing at all and
#      uses that URL.
#   2. Installs the postgresql-15 Debian package if it is missing (root only).
#   3. Creates cluster 15/main (pg_createcluster) if `pg_lsclusters` lacks it.
#   4. Starts it (pg_ctlcluster 15 main start) unless it is already online.
#   5. Waits (bounded, polling pg_isready) until it accepts connections.
#   6. Creates/updates the login role `llmgw_test` (LOGIN CREATEDB, password).
#   7. Checks password auth over TCP on 127.0.0.1; if it fails, adds a
#      scram-sha-256 pg_hba.conf rule for the role, reloads, and checks again.
#   Result: LLMGW_TEST_POSTGRES_URL=postgres://llmgw_test:PASSWORD@127.0.0.1:PORT/postgres
#   (PORT is read from pg_lsclusters). Tests create/drop their own databases.
#
# Knobs (environment): LLMGW_TEST_POSTGRES_URL (skip everything),
#   LLMGW_PG_VERSION (default 15), LLMGW_PG_CLUSTER (default main),
#   LLMGW_PG_TEST_PASSWORD (default llmgw_test_pw; must be URL-safe),
#   LLMGW_PG_WAIT_SECS (default 60; bound for the readiness wait).
# Progress messages go to stderr; stdout carries only the result.
# Needs root (as on CI), or passwordless sudo.

# ---------------------------------------------------------------------------
# Sourced: run this file as a separate process (so `set -e` semantics are
# reliable and the caller's shell options are untouched) and export the result.
# ---------------------------------------------------------------------------
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    if [[ -z "${LLMGW_TEST_POSTGRES_URL:-}" ]]; then
        if LLMGW_TEST_POSTGRES_URL="$(bash "${BASH_SOURCE[0]}" --url)"; then
            export LLMGW_TEST_POSTGRES_URL
            echo "pg.sh: exported LLMGW_TEST_POSTGRES_URL=${LLMGW_TEST_POSTGRES_URL}" >&2
        else
            unset LLMGW_TEST_POSTGRES_URL
            echo "pg.sh: FAILED to set up PostgreSQL" >&2
            return 1
        fi
    else
        export LLMGW_TEST_POSTGRES_URL
    fi
    return 0
fi

# ---------------------------------------------------------------------------
# Executed.
# ---------------------------------------------------------------------------
set -euo pipefail

PG_VERSION="${LLMGW_PG_VERSION:-15}"
PG_CLUSTER="${LLMGW_PG_CLUSTER:-main}"
PG_ROLE="llmgw_test"
PG_PASSWORD="${LLMGW_PG_TEST_PASSWORD:-llmgw_test_pw}"
PG_WAIT_SECS="${LLMGW_PG_WAIT_SECS:-60}"

mode="export"
case "${1:-}" in
    "") ;;
    --url) mode="url" ;;
    -h | --help)
        sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "pg.sh: unknown argument: $1 (try --help)" >&2
        exit 2
        ;;
esac

log() { echo "pg.sh: $*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

emit() {
    if [[ "$mode" == "url" ]]; then
        printf '%s\n' "$1"
    else
        printf 'export LLMGW_TEST_POSTGRES_URL=%q\n' "$1"
    fi
}

if [[ -n "${LLMGW_TEST_POSTGRES_URL:-}" ]]; then
    log "LLMGW_TEST_POSTGRES_URL already set; leaving PostgreSQL alone"
    emit "$LLMGW_TEST_POSTGRES_URL"
    exit 0
fi

[[ "$PG_PASSWORD" =~ ^[A-Za-z0-9._~-]+$ ]] ||
    die "LLMGW_PG_TEST_PASSWORD must be URL-safe ([A-Za-z0-9._~-])"

# Run a command as root / as the postgres OS user.
as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n -- "$@"
    else
        die "need root (or passwordless sudo) to run: $*"
    fi
}
as_postgres() {
    # cd / so psql does not complain that it cannot read root's cwd.
    if [[ $EUID -eq 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    elif [[ "$(id -un)" == postgres ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        (cd / && sudo -n -u postgres -- "$@")
    else
        die "need root (or passwordless sudo) to run as postgres: $*"
    fi
}

# Run a quiet command; show its output only if it fails.
quietly() {
    local out rc=0
    out="$("$@" 2>&1)" || rc=$?
    if [[ $rc -ne 0 ]]; then
        log "command failed (exit $rc): $*"
        [[ -n "$out" ]] && printf '%s\n' "$out" >&2
    fi
    return "$rc"
}

# --- 2. server package ------------------------------------------------------
PG_BINDIR="/usr/lib/postgresql/${PG_VERSION}/bin"
if ! command -v pg_lsclusters >/dev/null 2>&1 || [[ ! -x "$PG_BINDIR/postgres" ]]; then
    log "PostgreSQL ${PG_VERSION} server not found; installing postgresql-${PG_VERSION} via apt"
    command -v apt-get >/dev/null 2>&1 || die "apt-get not available; install PostgreSQL ${PG_VERSION} manually"
    export DEBIAN_FRONTEND=noninteractive
    quietly as_root apt-get update -qq || die "apt-get update failed"
    quietly as_root apt-get install -y -qq --no-install-recommends "postgresql-${PG_VERSION}" "postgresql-client-${PG_VERSION}" ||
        die "installing postgresql-${PG_VERSION} failed"
fi

# Prints "<port> <status>" for our cluster, or nothing if it does not exist.
cluster_info() {
    pg_lsclusters --no-header 2>/dev/null |
        awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1 == v && $2 == c { print $3, $4; exit }'
}

# --- 3. cluster -------------------------------------------------------------
info="$(cluster_info)"
if [[ -z "$info" ]]; then
    log "creating cluster ${PG_VERSION}/${PG_CLUSTER}"
    quietly as_root pg_createcluster "$PG_VERSION" "$PG_CLUSTER" || die "pg_createcluster failed"
    info="$(cluster_info)"
    [[ -n "$info" ]] || die "cluster ${PG_VERSION}/${PG_CLUSTER} missing after pg_createcluster"
fi
read -r PG_PORT PG_STATUS <<<"$info"
[[ "$PG_PORT" =~ ^[0-9]+$ ]] || die "could not parse port from pg_lsclusters: '$info'"

# --- 4. start -----------------------------------------------------------------
if [[ "$PG_STATUS" != online* ]]; then
    log "starting cluster ${PG_VERSION}/${PG_CLUSTER} (port ${PG_PORT})"
    if ! quietly as_root pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start; then
        # Tolerate a start race ("already running"); anything else is fatal.
        read -r _ PG_STATUS <<<"$(cluster_info)"
        if [[ "$PG_STATUS" != online* ]]; then
            log "last lines of the server log:"
            as_root tail -n 20 "/var/log/postgresql/postgresql-${PG_VERSION}-${PG_CLUSTER}.log" >&2 || true
            die "pg_ctlcluster ${PG_VERSION} ${PG_CLUSTER} start failed"
        fi
    fi
fi

# --- 5. wait until it accepts connections (TCP and the unix socket) ---------------
pg_isready_bin="$PG_BINDIR/pg_isready"
[[ -x "$pg_isready_bin" ]] || pg_isready_bin="pg_isready"
deadline=$((SECONDS + PG_WAIT_SECS))
until "$pg_isready_bin" -q -h 127.0.0.1 -p "$PG_PORT" -t 2 &&
    "$pg_isready_bin" -q -h /var/run/postgresql -p "$PG_PORT" -t 2; do
    if ((SECONDS >= deadline)); then
        die "PostgreSQL on 127.0.0.1:${PG_PORT} not ready after ${PG_WAIT_SECS}s (check listen_addresses and /var/log/postgresql/)"
    fi
    sleep 0.2
done

# --- 6. role ------------------------------------------------------------------
psql_admin() {
    as_postgres psql -X -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -p "$PG_PORT" -d postgres "$@"
}
# The password travels via a psql variable (:'pw' quotes it); never via argv of the server.
psql_admin -v pw="$PG_PASSWORD" -v role="$PG_ROLE" >/dev/null <<'SQL' || die "creating role failed"
SET client_min_messages = warning;
SELECT format('CREATE ROLE %I LOGIN CREATEDB', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
SET password_encryption = 'scram-sha-256';
ALTER ROLE :"role" WITH LOGIN CREATEDB PASSWORD :'pw';
SQL

URL="postgres://${PG_ROLE}:${PG_PASSWORD}@127.0.0.1:${PG_PORT}/postgres"

# --- 7. verify TCP password auth; fix pg_hba.conf if needed -------------------
tcp_err=""
tcp_ok() {
    local out
    if out="$(PGCONNECT_TIMEOUT=5 psql -X -At "$URL" -c 'select 1' 2>&1)" && [[ "$out" == 1 ]]; then
        return 0
    fi
    tcp_err="$(printf '%s\n' "$out" | tail -n 1)"
    return 1
}

if ! tcp_ok; then
    log "password login over TCP failed: ${tcp_err}"
    hba_file="$(psql_admin -At -c 'show hba_file')"
    [[ -n "$hba_file" ]] || die "could not determine hba_file"
    rule="host all ${PG_ROLE} 127.0.0.1/32 scram-sha-256"
    if ! as_root grep -qxF "$rule" "$hba_file"; then
        log "adding '$rule' at the top of $hba_file"
        # pg_hba.conf is first-match, so the rule must precede any reject lines.
        as_root sed -i "1i # added by llmgw scripts/pg.sh\n${rule}" "$hba_file" ||
            die "editing $hba_file failed"
    fi
    psql_admin -c 'select pg_reload_conf()' >/dev/null || die "reloading configuration failed"
    tcp_ok || die "password login as ${PG_ROLE} on 127.0.0.1:${PG_PORT} still fails: ${tcp_err}"
fi

log "PostgreSQL ${PG_VERSION}/${PG_CLUSTER} ready on 127.0.0.1:${PG_PORT} (role ${PG_ROLE}, CREATEDB)"
emit "$URL"
