#!/usr/bin/env bash
# dashboard/scripts/build-if-stale.sh: `npm run build` when dist/ is missing
# or older than anything it is built from (src/, public/, index.html, the
# package and build files, and ../proto). Installs packages first if needed.
set -euo pipefail
DASH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$DASH"

bash scripts/ensure-deps.sh

stale=""
if [[ ! -f dist/index.html ]]; then
    stale="dist/ is missing"
else
    newer="$(find src public index.html package.json package-lock.json vite.config.ts tsconfig.json \
        buf.gen.yaml scripts/postbuild.mjs ../proto \
        -path src/gen -prune -o -newer dist/index.html -type f ! -name '*.test.ts' -print 2>/dev/null | head -n 1)"
    [[ -z "$newer" ]] || stale="$newer changed"
fi
if [[ -z "$stale" ]]; then
    echo "dashboard: dist/ is up to date" >&2
    exit 0
fi
echo "dashboard: building ($stale)" >&2
npm run build
