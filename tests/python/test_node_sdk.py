"""The official `openai` npm package against the gateway: installs
tests/node's locked dependencies if needed (`npm ci`), then runs its
`node --test` suite against a model and key on the shared gateway."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from conftest import ROOT, Gateway, uid

NODE_DIR = ROOT / "tests" / "node"


def installed() -> bool:
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())
    want = lock["packages"]["node_modules/openai"]["version"]
    pkg = NODE_DIR / "node_modules" / "openai" / "package.json"
    return pkg.is_file() and json.loads(pkg.read_text()).get("version") == want


def test_openai_node_sdk(gw: Gateway) -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "node and npm are needed for tests/node (Node.js 20 or newer)"
    if not installed():
        p = subprocess.run(
            [npm, "ci", "--silent", "--no-audit", "--no-fund"],
            cwd=NODE_DIR, capture_output=True, text=True, timeout=300,
        )
        assert p.returncode == 0, f"npm ci failed:\n{p.stdout}\n{p.stderr}"
    model = gw.add_model([f"mock:node-{uid()}"])
    _, key = gw.add_key([model])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "NODE_OPTIONS"))}
    env.update(LLMGW_BASE_URL=f"{gw.url}/v1", LLMGW_KEY=key, LLMGW_MODEL=model)
    p = subprocess.run(
        [node, "--test"], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, f"node --test failed:\n{p.stdout}\n{p.stderr}"
    assert "# pass 4" in p.stdout and "# fail 0" in p.stdout, p.stdout
