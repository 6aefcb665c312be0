#!/usr/bin/env bash
# bench/log_volume.sh - request logs at volume on PostgreSQL: ingest
# throughput and the latency of the main log queries (lists; stats over
# 24 h, 7 and 30 days by model, provider and key) at 1 and 10 million rows
# (controlplane/examples/log_volume.rs).
#
# Usage: bench/log_volume.sh [--days N] [--agent-percent P] [ROWS...]
#        (default: 7 days; 1000000 10000000 rows)
#
# --agent-percent makes P% of the records a coding agent's turns, with
# request bodies of up to 64 KiB that repeat their prompt, tools and
# earlier turns (docs/benchmarks.md, "Bodies stored by content"). After
# each run the bytes per record of each log table are printed
# (bench/log_sizes.sql).
#
# --days spreads the records over the last N days (30 for the 30-day
# stats to cover a full month). Each size gets a fresh database on the
# local PostgreSQL cluster (scripts/pg.sh starts it), which is dropped
# afterwards. 10 million rows take about 10 GiB of disk over 30 days
# (rollups 3.9 GiB of it, with a week of minute rows), less over 7, while
# they exist; 50 million over 30 days (`--days 30 50000000`, about 55
# minutes) 31 GiB at the end and about 39 GiB at the peak
# (docs/benchmarks.md, "At 50 M rows over 30 days").
# Honours CARGO_TARGET_DIR. Results:
# bench/results/log-volume-<time>-<rows>.json and a table on stdout.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DAYS=7
AGENT=0
SIZES=()
while (($#)); do
    case "$1" in
    --days)
        DAYS="$2"
        shift 2
        ;;
    --days=*)
        DAYS="${1#--days=}"
        shift
        ;;
    --agent-percent)
        AGENT="$2"
        shift 2
        ;;
    --agent-percent=*)
        AGENT="${1#--agent-percent=}"
        shift
        ;;
    *)
        SIZES+=("$1")
        shift
        ;;
    esac
done
((${#SIZES[@]})) || SIZES=(1000000 10000000)
# shellcheck source=scripts/pg.sh
source scripts/pg.sh

cargo build --release --locked -p llmgw-controlplane --example log_volume
BIN="${CARGO_TARGET_DIR:-target}/release/examples/log_volume"
mkdir -p bench/results
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
for rows in "${SIZES[@]}"; do
    db="llmgw_logvol_${rows}_$$"
    psql "$LLMGW_TEST_POSTGRES_URL" -qc "CREATE DATABASE $db" >/dev/null
    url="${LLMGW_TEST_POSTGRES_URL%/*}/$db"
    echo "== $rows rows over $DAYS days (database $db)"
    set +e
    "$BIN" --database-url "$url" --rows "$rows" --days "$DAYS" --agent-percent "$AGENT" \
        --json "bench/results/log-volume-$stamp-$rows-${DAYS}d.json"
    rc=$?
    ((rc == 0)) && psql "$url" -v rows="$rows" -f bench/log_sizes.sql
    set -e
    # Plain DROP: it stops the database's autovacuum workers itself, where
    # WITH (FORCE) would need the right to signal them (a superuser's).
    psql "$LLMGW_TEST_POSTGRES_URL" -qc "DROP DATABASE $db" >/dev/null
    ((rc == 0)) || exit "$rc"
done
