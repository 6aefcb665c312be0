#!/usr/bin/env bash
# dashboard/scripts/ensure-deps.sh: installs dashboard/node_modules with
# `npm ci` when it is missing or package-lock.json changed since the last
# install (a stamp in node_modules holds the lock file's hash). Quiet when
# there is nothing to do.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v npm >/dev/null 2>&1; then
    echo "dashboard: npm is not installed (the dashboard needs Node.js 20 and npm)" >&2
    exit 1
fi
stamp=node_modules/.llmgw-package-lock.sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ -d node_modules && -f "$stamp" && "$(<"$stamp")" == "$want" ]]; then
    exit 0
fi
echo "dashboard: installing packages (npm ci)" >&2
npm ci --no-audit --no-fund --loglevel=error
printf '%s\n' "$want" >"$stamp"
