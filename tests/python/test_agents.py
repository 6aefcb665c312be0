"""Real coding agents as clients of the gateway, on loopback only: Claude
Code (Anthropic Messages) against a model an `openai-chat` provider serves,
and the Codex CLI (OpenAI Responses) against a model an `anthropic`
provider serves, both on the mock upstream. Each runs non-interactively
(`claude -p`, `codex exec`) with a temporary home, telemetry and update
checks off and no proxy, in a temporary working folder.

The CLIs come from tests/agents (installed by tests/agents/ensure-deps.sh,
which scripts/test.sh runs); `LLMGW_CLAUDE` and `LLMGW_CODEX` name them,
else tests/agents/node_modules/.bin is used.

Each test checks what the agent printed (the mock's text), what reached the
upstream (in the provider's protocol, tool results carrying the id of the
call they answer) and the gateway's request log (client protocol, upstream
protocol, translated)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, Gateway, uid

AGENTS_DIR = ROOT / "tests" / "agents"
#: Bound for one agent run (a few upstream round trips through debug builds).
AGENT_TIMEOUT = 180

#: The mock's reply text with its default 4 chunks.
MOCK_TEXT = "tok0 tok1 tok2 tok3"

#: Codex's model translates leniently: Codex offers hosted tools
#: (`web_search`) and tool namespaces that Anthropic has no equivalent for,
#: which strict translation refuses. Claude Code's models stay strict (the
#: default): everything it sends has an equivalent or is a hint.
LENIENT = ("--translation", "lenient")


def agent_cli(var: str, name: str) -> str:
    path = os.environ.get(var) or str(AGENTS_DIR / "node_modules" / ".bin" / name)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: run `bash tests/agents/ensure-deps.sh` (or set {var})")
    return path


def agent_env(home: Path, **extra: str) -> dict[str, str]:
    """A clean environment for an agent: only PATH and locale from outside
    (no credentials, no proxies, no ANTHROPIC_*/OPENAI_*/CODEX_* settings),
    a temporary home."""
    env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TERM") if k in os.environ}
    env.update(HOME=str(home), NO_COLOR="1", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    env.update(extra)
    return env


def run_agent(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=AGENT_TIMEOUT)


def describe(p: subprocess.CompletedProcess) -> str:
    return f"exit {p.returncode}\n--- stdout\n{p.stdout[-4000:]}\n--- stderr\n{p.stderr[-4000:]}"


def assert_translated_logs(gw: Gateway, key_name: str, count: int, path: str,
                           client: str, upstream: str) -> list[dict[str, Any]]:
    """The key's records of `path`: at least `count`, every one translated
    from `client` to `upstream` and answered 200."""
    recs = [r for r in gw.key_logs(key_name, count) if r.get("path", "").split("?")[0] == path]
    assert len(recs) >= count, recs
    for r in recs:
        assert (r.get("protocol"), r.get("upstream_protocol"), r.get("translated")) == (
            client, upstream, True), r
        assert r.get("status") == 200, r
    return recs


# ---------------------------------------------------------------------------
# Claude Code -> Anthropic Messages -> openai-chat provider
# ---------------------------------------------------------------------------


class ClaudeSetup:
    """A main and a small/fast gateway model on an `openai-chat` provider
    (separate upstream models, so a script steps only the main model's
    requests), a key for both, a temporary home and working folder."""

    def __init__(self, gw: Gateway, tmp: Path) -> None:
        self.gw = gw
        provider = gw.add_provider("openai-chat", gw.mock.base_url, gw.openai_provider_key)
        self.upstream = f"cc-main-{uid()}"
        self.upstream_fast = f"cc-fast-{uid()}"
        self.model = gw.add_model([f"{provider}:{self.upstream}"], prefix="cc")
        self.fast = gw.add_model([f"{provider}:{self.upstream_fast}"], prefix="ccfast")
        self.key_name, self.key = gw.add_key([self.model, self.fast], prefix="cc")
        self.home = tmp / "home"
        self.work = tmp / "work"
        self.home.mkdir()
        self.work.mkdir()

    def run(self, prompt: str, *args: str, **extra_env: str) -> subprocess.CompletedProcess:
        env = agent_env(
            self.home,
            **extra_env,
            ANTHROPIC_BASE_URL=self.gw.url,
            ANTHROPIC_API_KEY=self.key,
            ANTHROPIC_MODEL=self.model,
            ANTHROPIC_DEFAULT_OPUS_MODEL=self.model,
            ANTHROPIC_DEFAULT_SONNET_MODEL=self.model,
            ANTHROPIC_DEFAULT_HAIKU_MODEL=self.fast,
            ANTHROPIC_SMALL_FAST_MODEL=self.fast,
            CLAUDE_CODE_SUBAGENT_MODEL=self.fast,
            CLAUDE_CONFIG_DIR=str(self.home / ".claude"),
            DISABLE_TELEMETRY="1",
            DISABLE_AUTOUPDATER="1",
            DISABLE_ERROR_REPORTING="1",
            DISABLE_BUG_COMMAND="1",
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
            # The mock's first reply is not retried into a second one.
            CLAUDE_CODE_MAX_RETRIES="0",
        )
        argv = [agent_cli("LLMGW_CLAUDE", "claude"), "-p", prompt, "--output-format", "json",
                "--model", self.model, "--no-session-persistence", *args]
        return run_agent(argv, env, self.work)

    def result(self, p: subprocess.CompletedProcess) -> dict[str, Any]:
        assert p.returncode == 0, describe(p)
        out = json.loads(p.stdout)
        assert out.get("type") == "result" and out.get("is_error") is False, describe(p)
        return out


def test_claude_code_text_turn(gw: Gateway, tmp_path: Path) -> None:
    cc = ClaudeSetup(gw, tmp_path)
    p = cc.run("Say hello.", "--tools", "")
    out = cc.result(p)
    assert MOCK_TEXT in out["result"], describe(p)

    sent = gw.mock.requests(cc.upstream)
    assert sent, "no request reached the upstream"
    for rec in sent:
        assert rec["path"] == "/v1/chat/completions", rec["path"]
        body = rec["body_json"]
        assert body["model"] == cc.upstream
        assert any(m["role"] == "user" and "Say hello." in json.dumps(m["content"])
                   for m in body["messages"]), body["messages"]
    fast = gw.mock.requests(cc.upstream_fast)
    assert_translated_logs(gw, cc.key_name, len(sent) + len(fast), "/v1/messages",
                           "anthropic", "openai-chat")


def test_claude_code_tool_turn(gw: Gateway, tmp_path: Path) -> None:
    cc = ClaudeSetup(gw, tmp_path)
    # The first reply calls the request's first tool (the only one offered
    # to the model: Read), the second is text. Read's arguments do not fit
    # (the mock's are fixed), so Claude Code answers with an error result:
    # the round trip of the call's id is what is checked.
    gw.mock.script(cc.upstream, [{"tool_calls": 1}, {}])
    p = cc.run("Read the file notes.txt.", "--tools", "Read", "--allowedTools", "Read")
    out = cc.result(p)
    assert MOCK_TEXT in out["result"], describe(p)

    sent = gw.mock.requests(cc.upstream)
    assert len(sent) == 2, [r["body_json"] for r in sent]
    first, second = (r["body_json"] for r in sent)
    assert [t["function"]["name"] for t in first["tools"]] == ["Read"], first["tools"]
    call_id = f"call_mock{sent[0]['seq']}_0"
    # The assistant's call and its result, in Chat Completions shape.
    calls = [c for m in second["messages"] if m["role"] == "assistant"
             for c in m.get("tool_calls") or []]
    assert [(c["id"], c["function"]["name"]) for c in calls] == [(call_id, "Read")], second["messages"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris", "n": 0}
    results = [m for m in second["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in results] == [call_id], second["messages"]
    fast = gw.mock.requests(cc.upstream_fast)
    assert_translated_logs(gw, cc.key_name, 2 + len(fast), "/v1/messages",
                           "anthropic", "openai-chat")


# ---------------------------------------------------------------------------
# Codex CLI -> OpenAI Responses -> anthropic provider
# ---------------------------------------------------------------------------


class CodexSetup:
    """A gateway model on the `anthropic` provider `mocka`, a key, and a
    CODEX_HOME whose config.toml selects the gateway as the model provider."""

    def __init__(self, gw: Gateway, tmp: Path) -> None:
        self.gw = gw
        self.upstream = f"cx-{uid()}"
        self.model = gw.add_model([f"mocka:{self.upstream}"], *LENIENT, prefix="cx")
        self.key_name, self.key = gw.add_key([self.model], prefix="cx")
        self.home = tmp / "home"
        self.codex_home = self.home / ".codex"
        self.work = tmp / "work"
        self.codex_home.mkdir(parents=True)
        self.work.mkdir()
        (self.codex_home / "config.toml").write_text(
            f'model = "{self.model}"\n'
            'model_provider = "llmgw"\n'
            'approval_policy = "never"\n'
            'sandbox_mode = "danger-full-access"\n'
            "check_for_update_on_startup = false\n"
            "\n"
            "[analytics]\nenabled = false\n"
            "\n"
            "[feedback]\nenabled = false\n"
            "\n"
            # Off: everything that would reach beyond loopback (curated
            # plugin sync from api.github.com and chatgpt.com, connectors,
            # update notices).
            "[features]\n"
            "plugins = false\nremote_plugin = false\nplugin_sharing = false\n"
            "apps = false\nin_app_updates = false\n"
            "\n"
            "[model_providers.llmgw]\n"
            'name = "llmgw"\n'
            f'base_url = "{gw.url}/v1"\n'
            'env_key = "LLMGW_KEY"\n'
            'wire_api = "responses"\n'
            "request_max_retries = 0\n"
            "stream_max_retries = 0\n"
        )

    def run(self, prompt: str) -> subprocess.CompletedProcess:
        env = agent_env(self.home, CODEX_HOME=str(self.codex_home), LLMGW_KEY=self.key)
        argv = [agent_cli("LLMGW_CODEX", "codex"), "exec", "--skip-git-repo-check", "--ephemeral",
                "--color", "never", "-o", str(self.home / "last-message.txt"), prompt]
        return run_agent(argv, env, self.work)

    def last_message(self, p: subprocess.CompletedProcess) -> str:
        assert p.returncode == 0, describe(p)
        return (self.home / "last-message.txt").read_text()


def assert_codex_drops(rec: dict[str, Any]) -> None:
    """What lenient translation leaves out of Codex's requests: the tools
    Anthropic has no equivalent for (`namespace`, hosted `web_search`),
    nothing else (`client_metadata` is Codex's bookkeeping, ignored)."""
    dropped = rec.get("dropped_fields") or []
    assert dropped and all(f.startswith("tools[") and f.endswith("]") for f in dropped), rec


def test_codex_text_turn(gw: Gateway, tmp_path: Path) -> None:
    cx = CodexSetup(gw, tmp_path)
    p = cx.run("Say hello.")
    assert MOCK_TEXT in cx.last_message(p), describe(p)

    sent = gw.mock.requests(cx.upstream)
    assert sent, "no request reached the upstream"
    for rec in sent:
        assert rec["path"] == "/v1/messages", rec["path"]
    recs = assert_translated_logs(gw, cx.key_name, len(sent), "/v1/responses",
                                  "openai-responses", "anthropic")
    for r in recs:
        assert_codex_drops(r)


def test_codex_tool_turn(gw: Gateway, tmp_path: Path) -> None:
    cx = CodexSetup(gw, tmp_path)
    # The first reply calls the request's first tool (Codex's shell tool,
    # `exec_command`), the second is text. The mock's fixed arguments do not
    # fit it, so Codex answers with an error output: the round trip of the
    # call's id is what is checked.
    gw.mock.script(cx.upstream, [{"tool_calls": 1}, {}])
    p = cx.run("List the files here.")
    assert MOCK_TEXT in cx.last_message(p), describe(p)

    sent = gw.mock.requests(cx.upstream)
    assert len(sent) == 2, [r["body_json"] for r in sent]
    first, second = (r["body_json"] for r in sent)
    tool = first["tools"][0]["name"]
    assert tool == "exec_command", [t["name"] for t in first["tools"]]
    call_id = f"toolu_mock{sent[0]['seq']}_0"
    uses = [b for m in second["messages"] if m["role"] == "assistant" and isinstance(m["content"], list)
            for b in m["content"] if b.get("type") == "tool_use"]
    assert [(b["id"], b["name"]) for b in uses] == [(call_id, tool)], second["messages"]
    results = [b for m in second["messages"] if m["role"] == "user" and isinstance(m["content"], list)
               for b in m["content"] if b.get("type") == "tool_result"]
    assert [b["tool_use_id"] for b in results] == [call_id], second["messages"]
    for r in assert_translated_logs(gw, cx.key_name, 2, "/v1/responses",
                                    "openai-responses", "anthropic"):
        assert_codex_drops(r)
