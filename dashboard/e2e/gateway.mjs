// Starts the real binaries for the browser tests: the mock upstream, a
// control plane serving dashboard/dist, and a data plane, each on a free
// loopback port read back from its own output.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const BIN_DIR = process.env.LLMGW_BIN_DIR || join(ROOT, "target", "debug");
const START_TIMEOUT_MS = 30_000;

class Proc {
  constructor(name, args, opts) {
    this.name = name;
    this.lines = [];
    this.waiters = [];
    this.child = spawn(join(BIN_DIR, name), args, { ...opts, stdio: ["ignore", "pipe", "pipe"] });
    this.exited = new Promise((res) => this.child.on("exit", (code, signal) => res({ code, signal })));
    this.child.on("error", (e) => this.#line(`spawn error: ${e.message}`));
    for (const stream of [this.child.stdout, this.child.stderr]) {
      createInterface({ input: stream }).on("line", (l) => this.#line(l));
    }
    this.exited.then(({ code, signal }) => {
      for (const w of this.waiters) w.reject(new Error(`${name} exited (${code ?? signal}) before it was ready:\n${this.tail()}`));
      this.waiters = [];
    });
  }

  #line(l) {
    this.lines.push(l);
    if (this.lines.length > 2000) this.lines.shift();
    for (const w of [...this.waiters]) {
      const v = w.match(l);
      if (v !== undefined) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve(v);
      }
    }
  }

  /** Resolves with the first match(line) that is not undefined. */
  waitFor(match, what) {
    for (const l of this.lines) {
      const v = match(l);
      if (v !== undefined) return Promise.resolve(v);
    }
    return new Promise((resolve, reject) => {
      const w = { match, resolve, reject };
      this.waiters.push(w);
      setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) {
          this.waiters.splice(i, 1);
          reject(new Error(`${this.name}: no ${what} after ${START_TIMEOUT_MS} ms:\n${this.tail()}`));
        }
      }, START_TIMEOUT_MS);
    });
  }

  tail(n = 40) {
    return this.lines.slice(-n).join("\n");
  }

  async stop() {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill("SIGTERM");
    const t = setTimeout(() => this.child.kill("SIGKILL"), 10_000);
    await this.exited;
    clearTimeout(t);
  }
}

/** The fields of a JSON log line whose message is `message`. */
function jsonEvent(line, message) {
  try {
    const v = JSON.parse(line);
    return v?.fields?.message === message ? v.fields : undefined;
  } catch {
    return undefined;
  }
}

export async function startGateway({ adminToken, dataplaneToken }) {
  const dir = mkdtempSync(join(tmpdir(), "llmgw-dashboard-e2e-"));
  const procs = [];
  const env = { ...process.env, RUST_LOG: "info", NO_COLOR: "1" };
  delete env.LLMGW_ADMIN_TOKEN;
  delete env.LLMGW_DATAPLANE_TOKEN;
  delete env.DATABASE_URL;
  try {
    const mock = new Proc("llmgw-mock", ["--listen", "127.0.0.1:0"], { cwd: dir, env });
    procs.push(mock);
    const mockAddr = await mock.waitFor((l) => /^listening on (\S+)$/.exec(l.trim())?.[1], "listening line");

    const controlPlane = (listen) =>
      new Proc(
        "llmgw-controlplane",
        ["--listen", listen, "--data-dir", join(dir, "data"), "--dashboard-dir", join(ROOT, "dashboard", "dist"), "--log-format", "json"],
        { cwd: dir, env: { ...env, LLMGW_ADMIN_TOKEN: adminToken, LLMGW_DATAPLANE_TOKEN: dataplaneToken, RETRY_DELAY_MS: "50" } },
      );
    const listening = (l) => jsonEvent(l, "control plane listening (gRPC and gRPC-web)")?.address;
    let cp = controlPlane("127.0.0.1:0");
    procs.push(cp);
    const cpAddr = await cp.waitFor(listening, "listening line");
    const cpUrl = `http://${cpAddr}`;

    const dp = new Proc(
      "llmgw-dataplane",
      ["--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0", "--control-plane", cpUrl, "--node-id", "e2e-dp", "--spool-dir", join(dir, "spool"), "--log-format", "json", "--shutdown-grace-s", "2"],
      { cwd: dir, env: { ...env, LLMGW_DATAPLANE_TOKEN: dataplaneToken } },
    );
    procs.push(dp);
    const dpAddr = await dp.waitFor((l) => jsonEvent(l, "HTTP server listening")?.listen, "listening line");
    const dpUrl = `http://${dpAddr}`;
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      const ok = await fetch(`${dpUrl}/readyz`).then((r) => r.ok, () => false);
      if (ok) break;
      if (Date.now() > deadline) throw new Error(`data plane not ready:\n${dp.tail()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    return {
      dir,
      mockUrl: `http://${mockAddr}`,
      cpUrl,
      dpUrl,
      procs: { mock, cp, dp },
      logs: () => procs.map((p) => `----- ${p.name} -----\n${p.tail(60)}`).join("\n"),
      /** Stops the control plane, runs `whileDown(dataDir)`, and starts it again on the same address. */
      async restartControlPlane(whileDown) {
        await cp.stop();
        await whileDown(join(dir, "data"));
        cp = controlPlane(cpAddr);
        procs.push(cp);
        this.procs.cp = cp;
        await cp.waitFor(listening, "listening line after the restart");
      },
      async stop() {
        for (const p of [dp, cp, mock]) await p.stop();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    for (const p of procs.reverse()) await p.stop();
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}
