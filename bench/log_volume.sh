#!/usr/bin/env bash
# bench/log_volume.sh - request logs at volume on PostgreSQL: ingest
# throughput and the latency of the main log queries at 1 and 10 million
# rows (controlplane/examples/log_volume.rs).
#
# Usage: bench/log_volume.sh [ROWS...]     (default: 1000000 10000000)
#
# Each size gets a fresh database on the local PostgreSQL cluster
# (scripts/pg.sh starts it), which is dropped afterwards. 10 million rows
# take about 10 GB of disk while they exist. Results:
# bench/results/log-volume-<time>-<rows>.json and a table on stdout.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/pg.sh
source scripts/pg.sh
SIZES=("$@")
((${#SIZES[@]})) || SIZES=(1000000 10000000)

cargo build --release --locked -p llmgw-controlplane --example log_volume
mkdir -p bench/results
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
for rows in "${SIZES[@]}"; do
    db="llmgw_logvol_${rows}_$$"
    psql "$LLMGW_TEST_POSTGRES_URL" -qc "CREATE DATABASE $db" >/dev/null
    url="${LLMGW_TEST_POSTGRES_URL%/*}/$db"
    echo "== $rows rows (database $db)"
    set +e
    target/release/examples/log_volume --database-url "$url" --rows "$rows" \
        --json "bench/results/log-volume-$stamp-$rows.json"
    rc=$?
    set -e
    psql "$LLMGW_TEST_POSTGRES_URL" -qc "DROP DATABASE $db WITH (FORCE)" >/dev/null
    ((rc == 0)) || exit "$rc"
done
