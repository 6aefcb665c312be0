#!/usr/bin/env bash
# tests/agents/ensure-deps.sh: installs the coding agents that
# tests/python/test_agents.py drives (Claude Code and the Codex CLI, at the
# versions package-lock.json pins) into tests/agents/node_modules with
# `npm ci`, when node_modules is missing or package-lock.json changed since
# the last install (a stamp in node_modules holds the lock file's hash).
# Quiet when there is nothing to do. Then checks that both CLIs,
# node_modules/.bin/claude and node_modules/.bin/codex, run (`--version`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if ! command -v npm >/dev/null 2>&1; then
    echo "tests/agents: npm is not installed (Node.js 20 and npm are needed)" >&2
    exit 1
fi
stamp=node_modules/.llmgw-package-lock.sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ ! -d node_modules || ! -f "$stamp" || "$(<"$stamp")" != "$want" ]]; then
    echo "tests/agents: installing Claude Code and the Codex CLI (npm ci)" >&2
    # Claude Code 2.x declares node >=22 but runs as a native binary (its
    # postinstall copies it from the platform package): node 20 is enough.
    npm ci --no-audit --no-fund --loglevel=error --engine-strict=false
    claude_pkg=node_modules/@anthropic-ai/claude-code
    if ! "$claude_pkg/bin/claude.exe" --version >/dev/null 2>&1; then
        # An npm that skipped the install script leaves the placeholder.
        (cd "$claude_pkg" && node install.cjs)
    fi
    printf '%s\n' "$want" >"$stamp"
fi

claude=node_modules/.bin/claude
codex=node_modules/.bin/codex
# Temporary homes: no config, no credentials, nothing written elsewhere.
probe_home="$(mktemp -d)"
trap 'rm -rf "$probe_home"' EXIT
for cli in "$claude" "$codex"; do
    if ! HOME="$probe_home" CLAUDE_CONFIG_DIR="$probe_home/claude" CODEX_HOME="$probe_home" \
        DISABLE_AUTOUPDATER=1 "$cli" --version >/dev/null 2>&1; then
        echo "tests/agents: $cli --version fails" >&2
        exit 1
    fi
done
