// Browser tests of the dashboard against a real control plane, data plane
// and mock upstream, in Debian's Chromium driven by playwright-core.
// Screenshots of every page go to dashboard/test-artifacts/ (git-ignored).

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import OpenAI from "openai";
import { chromium } from "playwright-core";
import { ROOT, startGateway } from "./gateway.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const ARTIFACTS = join(ROOT, "dashboard", "test-artifacts");
const ADMIN_TOKEN = `adm-e2e-${Math.random().toString(36).slice(2)}${Date.now()}`;
const DATAPLANE_TOKEN = `dp-e2e-${Math.random().toString(36).slice(2)}`;
const PROVIDER_KEY = `sk-upstream-e2e-${Math.random().toString(36).slice(2)}SECRET`;
const PROXY_PASSWORD = `proxy-pw-${Math.random().toString(36).slice(2)}`;
const TOKEN_KEY = "llmgw.adminToken";
const WAIT = 20_000;

let gw;
let browser;
let context;
let page;
let userDataDir;
let clientKey = "";
/** The key of the live-page and log-detail steps. */
let liveKey = "";
/** The key of the playground and replay steps. */
let playKey = "";
/** What the playground's answer showed as it streamed, per protocol (for the last check). */
const playgroundSeen = {};
/** Client keys created after the first one. */
const otherKeys = [];
let broken = false;
let shot = 0;
/** Uncaught errors and CSP refusals seen in the page. */
const pageErrors = [];

/** A test that is skipped once an earlier step failed (they build on each other). */
function step(name, fn) {
  test(name, { timeout: 60_000 }, async (t) => {
    if (broken) {
      t.skip("an earlier step failed");
      return;
    }
    try {
      await fn(t);
    } catch (e) {
      broken = true;
      await screenshot(`FAILED-${name.replace(/\W+/g, "-")}`).catch(() => {});
      if (gw) console.error(gw.logs());
      throw e;
    }
  });
}

async function screenshot(name) {
  shot += 1;
  const file = join(ARTIFACTS, `${String(shot).padStart(2, "0")}-${name}.png`);
  // Sticky bars are drawn where the page is scrolled to: start at the top.
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** No secret in the page's text, HTML, form values, title, URL or storage (but the admin token in its slot). */
async function assertNoSecrets(where) {
  const seen = await page.evaluate(() => ({
    text: document.body.innerText,
    html: document.documentElement.outerHTML,
    values: [...document.querySelectorAll("input, textarea, select")].map((e) => e.value).join("\n"),
    title: document.title,
    url: location.href,
    session: Object.entries(sessionStorage),
    local: Object.entries(localStorage),
  }));
  const secrets = {
    "admin token": ADMIN_TOKEN,
    "provider key": PROVIDER_KEY,
    "data-plane token": DATAPLANE_TOKEN,
    "proxy password": PROXY_PASSWORD,
  };
  if (clientKey) secrets["client key"] = clientKey;
  for (const [i, k] of otherKeys.entries()) secrets[`client key ${i + 2}`] = k;
  for (const [what, secret] of Object.entries(secrets)) {
    for (const place of ["text", "html", "values", "title", "url"]) {
      assert.ok(!seen[place].includes(secret), `${where}: the ${what} is visible in the page (${place})`);
    }
    for (const [k, v] of seen.local) assert.ok(!v.includes(secret), `${where}: the ${what} is in localStorage (${k})`);
    for (const [k, v] of seen.session) {
      if (k === TOKEN_KEY && secret === ADMIN_TOKEN) continue;
      assert.ok(!v.includes(secret), `${where}: the ${what} is in sessionStorage (${k})`);
    }
  }
}

/**
 * Alters one character of every sealed provider secret in the SQLite files,
 * as a corrupted disk or a hostile database user would; the master-key
 * check value (stored right after its name) is left alone.
 */
function tamperSealedSecrets(dataDir) {
  let altered = 0;
  for (const name of ["llmgw.db", "llmgw.db-wal"]) {
    const file = join(dataDir, name);
    if (!existsSync(file)) continue;
    const bytes = readFileSync(file);
    const text = bytes.toString("latin1");
    for (const m of text.matchAll(/v1\.[0-9a-f]{8}\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{20,}/g)) {
      if (text.slice(Math.max(0, m.index - 16), m.index) === "master_key_check") continue;
      const i = m.index + m[0].length - 6;
      bytes[i] = bytes[i] === 0x41 ? 0x42 : 0x41; // 'A' <-> 'B'
      altered += 1;
    }
    writeFileSync(file, bytes);
  }
  assert.ok(altered > 0, "no sealed secret found to alter");
}

async function goto(label) {
  await page.getByRole("navigation", { name: "Main" }).first().getByRole("link", { name: label, exact: true }).click();
  await page.getByRole("heading", { level: 1, name: label === "API keys" ? "API keys" : label }).waitFor();
}

function openai(apiKey = clientKey) {
  return new OpenAI({ apiKey, baseURL: `${gw.dpUrl}/v1`, maxRetries: 0, timeout: 15_000 });
}

/** Resolves once the data plane knows the client's key (it has applied the snapshot with it). */
async function keyKnown(client) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    try {
      await client.models.list();
      return;
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** Creates a key allowed one model (or a list of them) through the API keys page; returns its secret, shown once. */
async function createKey(name, model) {
  await goto("API keys");
  await page.getByRole("button", { name: "Create key" }).click();
  const dialog = page.getByRole("dialog");
  await dialog.getByLabel("Name").fill(name);
  for (const m of [model].flat()) await dialog.getByLabel(m, { exact: true }).check();
  await dialog.getByRole("button", { name: "Create key" }).click();
  const secret = page.getByLabel("Secret key");
  await secret.waitFor();
  const key = await secret.inputValue();
  assert.match(key, /^sk-llmgw-[A-Za-z0-9]{32}$/);
  await page.getByText("shown only this once").waitFor();
  await page.getByRole("button", { name: "Copy" }).click();
  await page.getByRole("button", { name: "I have copied it" }).click();
  await page.getByRole("dialog").waitFor({ state: "detached" });
  const row = page.getByRole("row").filter({ hasText: name });
  await row.getByText(`${key.slice(0, 13)}…`).waitFor();
  await row.getByText("active").waitFor();
  return key;
}

async function mockScript(model, steps) {
  const r = await fetch(`${gw.mockUrl}/_mock/script`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model, steps }),
  });
  assert.equal(r.status, 200, await r.text());
}

/** Clicks Refresh until `locator` has `count` elements (logs reach the control plane shortly after). */
async function refreshUntil(locator, count, what) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    if ((await locator.count()) === count) return;
    if (Date.now() > deadline) assert.fail(`${what}: expected ${count}, saw ${await locator.count()}`);
    await page.getByRole("button", { name: "Refresh" }).click();
    await page.waitForTimeout(500);
  }
}

/**
 * Ships request-log records to the control plane as a data plane does
 * (Logs.Ship: gRPC over HTTP/2, the data-plane token) and resolves with the
 * ack's quarantined ids. For fields the data plane under test does not set.
 * Each record: { id, timeMs, model, key, status, traceId }.
 */
async function shipLogs(records) {
  const w = new BinaryWriter();
  w.tag(1, WireType.LengthDelimited).string("e2e-shipper");
  w.tag(2, WireType.Varint).uint64(records.length);
  records.forEach((r, i) => {
    w.tag(3, WireType.LengthDelimited).fork();
    w.tag(1, WireType.LengthDelimited).string(r.id);
    w.tag(2, WireType.Varint).uint64(i + 1);
    w.tag(4, WireType.Varint).int64(r.timeMs);
    w.tag(5, WireType.LengthDelimited).string(r.key);
    w.tag(8, WireType.LengthDelimited).string("openai-chat");
    w.tag(9, WireType.LengthDelimited).string("/v1/chat/completions");
    w.tag(10, WireType.LengthDelimited).string(r.model);
    w.tag(13, WireType.Varint).uint32(r.status);
    w.tag(46, WireType.LengthDelimited).string(r.traceId);
    w.join();
  });
  const message = w.finish();
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  const session = connect(gw.cpUrl);
  try {
    const call = session.request({
      ":method": "POST",
      ":path": "/llmgw.v1.Logs/Ship",
      "content-type": "application/grpc",
      te: "trailers",
      authorization: `Bearer ${DATAPLANE_TOKEN}`,
    });
    const ack = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("Logs.Ship: no ack")), WAIT);
      const refused = (h) => {
        const status = h["grpc-status"];
        if (status !== undefined && status !== "0") reject(new Error(`Logs.Ship: grpc-status ${status}: ${h["grpc-message"] ?? ""}`));
      };
      let got = Buffer.alloc(0);
      call.on("response", refused);
      call.on("trailers", refused);
      call.on("error", reject);
      call.on("data", (d) => {
        got = Buffer.concat([got, d]);
        if (got.length >= 5 && got.length >= 5 + got.readUInt32BE(1)) {
          clearTimeout(timer);
          resolve(got.subarray(5, 5 + got.readUInt32BE(1)));
        }
      });
      call.write(frame);
    });
    call.close();
    const quarantined = [];
    const r = new BinaryReader(ack);
    while (r.pos < r.len) {
      const [field, type] = r.tag();
      if (field === 2) quarantined.push(r.string());
      else r.skip(type);
    }
    return quarantined;
  } finally {
    session.destroy();
  }
}

/**
 * Opens the edit dialog of `name` in `row`, fills the fields (label → value;
 * "Budget period" is a select), runs `beforeSave(dialog)` and saves.
 */
async function editLimits(row, name, fields, beforeSave = async () => {}) {
  await row.getByRole("button", { name: `Edit ${name}` }).click();
  const dialog = page.getByRole("dialog");
  for (const [label, value] of Object.entries(fields)) {
    if (label === "Budget period") await dialog.getByLabel(label).selectOption(value);
    else await dialog.getByLabel(label).fill(value);
  }
  await beforeSave(dialog);
  await dialog.getByRole("button", { name: "Save changes" }).click();
  await dialog.waitFor({ state: "detached" });
}

/**
 * A slow chat stream sent from node to the data plane (the mock sends
 * `chunks` chunks, `delayMs` apart): its request id once the head is in,
 * and `done`, which resolves with the text read and whether it ended in an
 * error (an error event, or a broken body) rather than [DONE].
 */
async function slowChat(key, chunks, delayMs, content = "a slow one") {
  const r = await fetch(`${gw.dpUrl}/v1/chat/completions`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${key}`,
      "content-type": "application/json",
      "x-mock-chunks": String(chunks),
      "x-mock-chunk-delay-ms": String(delayMs),
    },
    body: JSON.stringify({ model: "e2e-model", stream: true, messages: [{ role: "user", content }] }),
  });
  assert.equal(r.status, 200, "the slow stream started");
  const id = r.headers.get("x-llmgw-request-id");
  assert.ok(id, "the response names its request id");
  const done = (async () => {
    let text = "";
    let broken = false;
    try {
      const dec = new TextDecoder();
      for await (const chunk of r.body) text += dec.decode(chunk, { stream: true });
    } catch {
      broken = true;
    }
    const error = broken || /"error"/.test(text) || !text.includes("[DONE]");
    return { text, error, broken, errorEvent: /^data: \{"error"/m.test(text) };
  })();
  return { id, done };
}

/** Opens a request's log detail, reloading until the record is stored. */
async function openLog(id) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    await page.goto(`${gw.cpUrl}/logs/${id}`);
    const found = await page
      .getByRole("heading", { level: 1 })
      .first()
      .waitFor({ timeout: 3000 })
      .then(() => true, () => false);
    if (found) return;
    if (Date.now() > deadline) assert.fail(`the log of ${id} was not stored`);
    await page.waitForTimeout(300);
  }
}

describe("dashboard in Chromium", { concurrency: 1 }, () => {
  before(async () => {
    rmSync(ARTIFACTS, { recursive: true, force: true });
    mkdirSync(ARTIFACTS, { recursive: true });
    gw = await startGateway({ adminToken: ADMIN_TOKEN, dataplaneToken: DATAPLANE_TOKEN });
    userDataDir = mkdtempSync(join(tmpdir(), "llmgw-chromium-"));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
      viewport: { width: 1280, height: 860 },
    });
    browser = context.browser();
    page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(WAIT);
    page.on("pageerror", (e) => pageErrors.push(`page error: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error" && /Content Security Policy|Refused to/i.test(m.text())) pageErrors.push(m.text());
    });
  });

  after(async () => {
    await context?.close().catch(() => {});
    await browser?.close().catch(() => {});
    if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
    await gw?.stop();
  });

  step("the control plane serves the dashboard with SPA fallback and cache headers", async () => {
    const index = await fetch(`${gw.cpUrl}/`);
    assert.equal(index.status, 200);
    assert.match(index.headers.get("content-type") ?? "", /text\/html/);
    assert.equal(index.headers.get("cache-control"), "no-cache");
    const html = await index.text();
    const deep = await fetch(`${gw.cpUrl}/logs/some-id?model=x`);
    assert.equal(deep.status, 200);
    assert.equal(await deep.text(), html);
    const asset = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    assert.ok(asset, "index.html names its script");
    const js = await fetch(`${gw.cpUrl}${asset}`);
    assert.equal(js.status, 200);
    assert.match(js.headers.get("content-type") ?? "", /javascript/);
    assert.match(js.headers.get("cache-control") ?? "", /immutable/);
    assert.equal((await fetch(`${gw.cpUrl}/assets/missing.js`)).status, 404);
  });

  step("a wrong token is refused; the right one signs in", async () => {
    await page.goto(`${gw.cpUrl}/`);
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    await screenshot("sign-in");
    await page.getByLabel("Admin token").fill("not-the-token");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("alert").filter({ hasText: "refused" }).waitFor();
    assert.equal(await page.evaluate((k) => sessionStorage.getItem(k), TOKEN_KEY), null);
    await screenshot("sign-in-refused");
    await page.getByLabel("Admin token").fill(ADMIN_TOKEN);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { level: 1, name: "Overview" }).waitFor();
    assert.equal(await page.evaluate((k) => sessionStorage.getItem(k), TOKEN_KEY), ADMIN_TOKEN);
    await page.getByText("e2e-dp").first().waitFor();
    await assertNoSecrets("overview (empty)");
  });

  step("create a provider pointing at the mock", async () => {
    await goto("Providers");
    await page.getByText("No providers yet").waitFor();
    await page.getByRole("button", { name: "Add provider" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.getByLabel("Name").fill("mock");
    await dialog.getByLabel("Base URL").fill(`${gw.mockUrl}/v1`);
    await dialog.getByLabel("API key").fill(PROVIDER_KEY);
    await dialog.getByRole("button", { name: "Create provider" }).click();
    await dialog.waitFor({ state: "detached" });
    const row = page.getByRole("row").filter({ hasText: "mock" });
    await row.waitFor();
    await row.getByText(`****${PROVIDER_KEY.slice(-4)}`).waitFor();
    await screenshot("providers");
    await assertNoSecrets("providers");
  });

  step("a provider's upstream models are listed from the upstream", async () => {
    const row = page.getByRole("row").filter({ hasText: "mock" });
    await row.getByRole("button", { name: "Upstream models of mock" }).click();
    const dialog = page.getByRole("dialog");
    const list = dialog.getByTestId("provider-models");
    await list.waitFor({ timeout: WAIT });
    assert.equal((await dialog.getByTestId("provider-models-count").innerText()).trim(), "1 model");
    await list.getByTestId("provider-model").filter({ hasText: "mock-model" }).waitFor();
    await assertNoSecrets("provider models");
    await dialog.getByRole("button", { name: "Done" }).click();
    await dialog.waitFor({ state: "detached" });
  });

  step("a provider's proxy is shown masked, its default parameters as JSON", async () => {
    const row = page.getByRole("row").filter({ hasText: "mock" });
    const edit = async (fields) => {
      await row.getByRole("button", { name: "Edit mock" }).click();
      const dialog = page.getByRole("dialog");
      for (const [label, value] of Object.entries(fields)) await dialog.getByLabel(label).fill(value);
      await dialog.getByRole("button", { name: "Save changes" }).click();
      await dialog.waitFor({ state: "detached" });
      return dialog;
    };
    await edit({ "Outbound proxy": `http://dash-user:${PROXY_PASSWORD}@127.0.0.1:9`, "Default parameters": '{"temperature": 0.2}' });
    await row.getByText("http://****@127.0.0.1:9").waitFor();
    await assertNoSecrets("providers with a proxy");
    // The form shows the masked proxy and the defaults; saving it unchanged keeps them.
    await row.getByRole("button", { name: "Edit mock" }).click();
    const dialog = page.getByRole("dialog");
    assert.equal(await dialog.getByLabel("Outbound proxy").inputValue(), "http://****@127.0.0.1:9");
    assert.equal(await dialog.getByLabel("Default parameters").inputValue(), '{"temperature":0.2}');
    await assertNoSecrets("the provider form with a proxy");
    await screenshot("provider-proxy");
    await dialog.getByRole("button", { name: "Save changes" }).click();
    await dialog.waitFor({ state: "detached" });
    await row.getByText("http://****@127.0.0.1:9").waitFor();
    // Cleared: direct again, no defaults (the steps below need the mock reachable).
    await edit({ "Outbound proxy": "", "Default parameters": "" });
    await row.getByText("direct").waitFor();
  });

  step("create a model with two targets and explain its route", async () => {
    await goto("Models");
    await page.getByRole("button", { name: "Add model" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.getByLabel("Name", { exact: true }).fill("e2e-model");
    await dialog.getByLabel("Attempts per target").fill("1");
    await dialog.getByLabel("Input", { exact: true }).first().fill("1.5");
    await dialog.getByLabel("Output", { exact: true }).first().fill("6");
    await dialog.locator("#t0-provider").selectOption("mock");
    await dialog.locator("#t0-upstream").fill("mock-fail");
    await dialog.getByRole("button", { name: "Add target" }).click();
    await dialog.locator("#t1-provider").selectOption("mock");
    await dialog.locator("#t1-upstream").fill("mock-ok");
    await dialog.locator("#t1-priority").fill("1");
    await screenshot("model-form");
    await dialog.getByRole("button", { name: "Create model" }).click();
    await dialog.waitFor({ state: "detached" });
    const row = page.getByRole("row").filter({ hasText: "e2e-model" });
    await row.getByText("mock:mock-fail").waitFor();
    await row.getByText("mock:mock-ok").waitFor();
    assert.equal((await row.getByTestId("model-type").innerText()).trim(), "chat");
    // Exact prices, and their history: one change, in effect.
    assert.equal((await row.getByTestId("model-prices").innerText()).trim(), "1.5/6");
    await row.getByRole("button", { name: "Price history of e2e-model", exact: true }).click();
    const pricesDialog = page.getByRole("dialog");
    const change = pricesDialog.getByTestId("price-change");
    await change.first().waitFor();
    assert.equal(await change.count(), 1);
    assert.match(await change.first().innerText(), /in effect[\s\S]*model 1\.5\/6/);
    await screenshot("model-prices");
    await pricesDialog.getByRole("button", { name: "Close" }).click();
    await pricesDialog.waitFor({ state: "detached" });

    await page.getByRole("button", { name: "Explain", exact: true }).click();
    const result = page.getByTestId("explain-result");
    await result.waitFor();
    assert.equal(await result.getByText("kept", { exact: true }).count(), 2);
    await result.getByText("#1").waitFor();
    await screenshot("models");
    await assertNoSecrets("models");
  });

  step("test a model: each target's result, one healthy and one failing", async () => {
    // The next request to the first target's upstream model fails.
    await mockScript("mock-fail", [{ status: 503 }]);
    await page.getByRole("button", { name: "Test e2e-model", exact: true }).click();
    const dialog = page.getByRole("dialog");
    const result = dialog.getByTestId("model-test-result");
    await result.waitFor({ timeout: WAIT });
    const rows = result.getByTestId("model-test-target");
    assert.equal(await rows.count(), 2);
    const failing = rows.filter({ hasText: "mock:mock-fail" });
    await failing.getByText("503", { exact: true }).waitFor();
    await failing.getByText(/the upstream answered HTTP 503/).waitFor();
    const healthy = rows.filter({ hasText: "mock:mock-ok" });
    await healthy.getByText("200", { exact: true }).waitFor();
    await healthy.getByText(/^ok/).waitFor();
    assert.equal((await dialog.getByTestId("model-test-summary").innerText()).trim(), "1 of 2 targets failed.");
    await screenshot("model-test");
    await assertNoSecrets("model test");
    await dialog.getByRole("button", { name: "Done" }).click();
    await dialog.waitFor({ state: "detached" });
  });

  step("create a key: the secret is shown once", async () => {
    clientKey = await createKey("e2e-key", "e2e-model");
    await screenshot("api-keys");
    await assertNoSecrets("api keys");
  });

  step("requests through the data plane with the OpenAI SDK, one failing over", async () => {
    const client = openai();
    await keyKnown(client);
    const messages = [{ role: "user", content: "hello from the browser tests" }];
    for (let i = 0; i < 2; i++) {
      const r = await client.chat.completions.create({ model: "e2e-model", messages });
      assert.match(r.choices[0].message.content ?? "", /tok0/);
    }
    const stream = await client.chat.completions.create({ model: "e2e-model", messages, stream: true });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
    assert.equal(text.trim(), "tok0 tok1 tok2 tok3");

    // The first target fails once, after 30 ms: the request fails over to
    // the second, which is sent measurably later (the attempt timeline).
    await mockScript("mock-fail", [{ status: 503, latency_ms: 30 }]);
    const failover = await client.chat.completions.create({ model: "e2e-model", messages });
    assert.equal(failover.choices[0].message.role, "assistant");

    // Both targets fail: the client gets the last upstream status.
    await mockScript("mock-fail", [{ status: 503 }]);
    await mockScript("mock-ok", [{ status: 500 }]);
    await assert.rejects(client.chat.completions.create({ model: "e2e-model", messages }), (e) => e.status === 500);
  });

  step("the logs page shows them with their attempts", async () => {
    await goto("Logs");
    const rows = page.locator("tbody tr[data-log-id]");
    await refreshUntil(rows, 5, "logged requests");
    await page.locator("tbody tr").filter({ hasText: "×2" }).first().waitFor();
    await screenshot("logs");
    await assertNoSecrets("logs");
  });

  step("filters narrow the list, live in the URL, and clear again", async () => {
    const rows = page.locator("tbody tr[data-log-id]");
    await page.getByLabel("Errors only").check();
    await refreshUntil(rows, 1, "errors only");
    await rows.first().getByText("500").waitFor();
    assert.match(page.url(), /errors=1/);
    await page.getByLabel("Errors only").uncheck();
    await refreshUntil(rows, 5, "all again");

    await page.locator("#f-status").selectOption("2xx");
    await refreshUntil(rows, 4, "2xx");
    await page.locator("#f-status").selectOption("");

    await page.getByLabel("Tokens, at least").fill("100000");
    await page.getByText("No requests match these filters").waitFor();
    assert.match(page.url(), /tok_min=100000/);
    await screenshot("logs-filtered-out");
    // The view is in the URL: a reload shows the same.
    await page.reload();
    await page.getByText("No requests match these filters").waitFor();
    assert.equal(await page.getByLabel("Tokens, at least").inputValue(), "100000");
    await page.getByRole("button", { name: "Clear the filters" }).click();
    await refreshUntil(rows, 5, "filters cleared");
    assert.doesNotMatch(page.url(), /tok_min/);

    await page.locator("#f-stream").selectOption("yes");
    await refreshUntil(rows, 1, "streaming only");
    await page.locator("#f-stream").selectOption("");
    await refreshUntil(rows, 5, "streams and not");

    // Paging is server-side, by page token (a shared URL can set any size).
    // The page number changes at once; the rows follow when the list call answers.
    const ids = () => rows.evaluateAll((rs) => rs.map((r) => r.getAttribute("data-log-id")));
    const shown = async (pred) => {
      const deadline = Date.now() + WAIT;
      while (!pred(await ids()) && Date.now() < deadline) await page.waitForTimeout(100);
    };
    await page.goto(`${gw.cpUrl}/logs?limit=2&sort=latency`);
    await refreshUntil(rows, 2, "first page");
    const firstPage = await ids();
    await page.getByRole("button", { name: "Next" }).click();
    await page.waitForURL(/page=/);
    await page.getByText("Page 2").waitFor();
    await shown((now) => now.length > 0 && now.join() !== firstPage.join());
    const secondPage = await ids();
    assert.equal(secondPage.length, 2);
    assert.equal(new Set([...firstPage, ...secondPage]).size, 4, "pages do not overlap");
    await page.getByRole("button", { name: "Previous" }).click();
    await page.getByText("Page 1").waitFor();
    await shown((now) => now.join() === firstPage.join());
    assert.deepEqual(await ids(), firstPage);
    await page.goto(`${gw.cpUrl}/logs`);
    await refreshUntil(rows, 5, "default view");

    // Sorting is server-side: ascending time puts the first request first.
    await page.getByRole("button", { name: "Time" }).click();
    await page.waitForURL(/asc=1/);
    await page.getByRole("button", { name: "Time" }).click();
    await page.waitForURL((u) => !/asc=1/.test(u.toString()));
  });

  step("live tail shows a new request as it is stored", async () => {
    const rows = page.locator("tbody tr[data-log-id]");
    await refreshUntil(rows, 5, "before live");
    await page.getByRole("switch", { name: "Live tail" }).click();
    // Shown once the control plane has answered the FollowLogs call.
    await page.getByText("Live: new requests").waitFor();
    await openai().chat.completions.create({ model: "e2e-model", messages: [{ role: "user", content: "live" }] });
    await page.getByText("1 new.").waitFor();
    assert.equal(await rows.count(), 6);
    await screenshot("logs-live");
    await page.getByRole("switch", { name: "Live tail" }).click();
    await refreshUntil(rows, 6, "after live");
  });

  step("the detail view: attempts, bodies, SSE, copy as curl, no secret", async () => {
    const failover = page.locator("tbody tr").filter({ hasText: "×2" }).filter({ hasText: "200" }).first();
    await failover.getByRole("link").click();
    await page.getByRole("heading", { level: 1, name: "e2e-model" }).waitFor();
    const attempts = page.getByTestId("attempt");
    assert.equal(await attempts.count(), 2);
    await attempts.nth(0).getByText("503", { exact: true }).waitFor();
    await attempts.nth(0).getByText("mock-fail", { exact: true }).waitFor();
    await attempts.nth(1).getByText("200", { exact: true }).waitFor();
    await attempts.nth(1).getByText("mock-ok", { exact: true }).waitFor();
    const curl = await page.locator("pre").last().innerText();
    assert.match(curl, /\$LLMGW_KEY/);
    assert.match(curl, /\/v1\/chat\/completions/);
    await page.getByRole("tab", { name: "Raw JSON" }).click();
    await page.getByText('"role": "user"').first().waitFor(); // pretty-printed request body
    await screenshot("log-detail-failover");
    await assertNoSecrets("log detail");

    await page.getByRole("link", { name: "Logs" }).first().click();
    await page.locator("#f-stream").selectOption("yes");
    const rows = page.locator("tbody tr[data-log-id]");
    await refreshUntil(rows, 1, "the stream");
    await rows.first().getByRole("link").click();
    await page.getByRole("tab", { name: "Raw JSON" }).click();
    await page.getByRole("tab", { name: "Assembled text" }).waitFor();
    await page.getByText("tok0 tok1 tok2 tok3").waitFor();
    await screenshot("log-detail-stream");
    await page.getByRole("tab", { name: /Events/ }).click();
    await page.getByText("[DONE]").waitFor();
    await assertNoSecrets("stream detail");
  });

  step("the overview charts the traffic and lists the data plane", async () => {
    await goto("Overview");
    await page.getByTestId("kpi-Requests").getByText("6", { exact: true }).waitFor();
    await page.getByRole("row").filter({ hasText: "e2e-dp" }).getByText(/ACK v\d+/).waitFor();
    await page.getByRole("img", { name: "Requests per minute" }).waitFor();
    await page.getByRole("link", { name: "e2e-model" }).first().waitFor();
    await screenshot("overview");
    await assertNoSecrets("overview");
  });

  step("requests are attributed to their user: detail, filter, overview", async () => {
    const client = openai();
    const messages = [{ role: "user", content: "for a user" }];
    // OpenAI's own `user` field, and the X-User-ID header.
    for (let i = 0; i < 2; i++) await client.chat.completions.create({ model: "e2e-model", messages, user: "e2e-alice" });
    await client.chat.completions.create({ model: "e2e-model", messages }, { headers: { "X-User-ID": "e2e-bob" } });

    await goto("Logs");
    const rows = page.locator("tbody tr[data-log-id]");
    await refreshUntil(rows, 9, "logged requests with users");
    await page.locator("#f-user").fill("e2e-alice");
    await page.waitForURL(/user=e2e-alice/);
    await refreshUntil(rows, 2, "alice's requests");
    for (const cell of await page.getByTestId("key-user").all()) assert.match(await cell.innerText(), /e2e-key\s+e2e-alice/);
    await screenshot("logs-by-user");
    await page.locator("#f-user").fill("e2e-bob");
    await page.waitForURL(/user=e2e-bob/);
    await refreshUntil(rows, 1, "bob's request");

    await rows.first().getByRole("link").click();
    await page.getByRole("heading", { level: 1, name: "e2e-model" }).waitFor();
    const user = page.locator("dt", { hasText: /^User$/ }).locator("xpath=following-sibling::dd[1]");
    assert.equal((await user.innerText()).trim(), "e2e-bob");
    await screenshot("log-detail-user");
    // The user links to all of their requests.
    await user.getByRole("link").click();
    await page.waitForURL(/\/logs\?.*user=e2e-bob/);
    assert.equal(await page.locator("#f-user").inputValue(), "e2e-bob");
    await refreshUntil(rows, 1, "bob's requests from the detail");

    await goto("Overview");
    const users = page.getByRole("list", { name: "Top users" });
    await refreshUntil(users.getByRole("link", { name: "e2e-alice" }), 1, "alice among the top users");
    const alice = users.getByRole("listitem").filter({ hasText: "e2e-alice" });
    assert.match(await alice.innerText(), /e2e-alice\s+2 ·/);
    await users.getByRole("link", { name: "e2e-bob" }).waitFor();
    await screenshot("overview-users");
    await alice.getByRole("link").click();
    await page.waitForURL(/\/logs\?.*user=e2e-alice/);
    await refreshUntil(rows, 2, "alice's requests from the overview");
    await assertNoSecrets("user attribution");
    await goto("Overview");
  });

  step("a model of type embedding: listed with its type, explained, and refused for chat", async () => {
    await goto("Models");
    await page.getByRole("button", { name: "Add model" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.getByLabel("Name", { exact: true }).fill("e2e-embed");
    assert.equal(await dialog.locator("#m-type").inputValue(), "chat");
    await dialog.locator("#m-type").selectOption("embedding");
    await dialog.getByText("POST /v1/embeddings only").waitFor();
    await screenshot("model-form-type");
    await dialog.locator("#t0-provider").selectOption("mock");
    await dialog.locator("#t0-upstream").fill("mock-embed");
    await dialog.getByRole("button", { name: "Create model" }).click();
    await dialog.waitFor({ state: "detached" });
    const row = page.getByRole("row").filter({ hasText: "e2e-embed" });
    await row.getByText("mock:mock-embed").waitFor();
    assert.equal((await row.getByTestId("model-type").innerText()).trim(), "embedding");
    assert.equal((await page.getByRole("row").filter({ hasText: "e2e-model" }).getByTestId("model-type").innerText()).trim(), "chat");
    // The edit form starts from the stored type.
    await row.getByRole("button", { name: "Edit e2e-embed" }).click();
    assert.equal(await dialog.locator("#m-type").inputValue(), "embedding");
    await dialog.getByRole("button", { name: "Cancel" }).click();
    await dialog.waitFor({ state: "detached" });

    // Explained for a chat client: refused before routing, as the data plane does.
    await row.getByRole("button", { name: "Explain the route of e2e-embed" }).click();
    assert.equal(await page.locator("#x-model").inputValue(), "e2e-embed");
    await page.locator("#x-api").selectOption("chat");
    await page.getByRole("button", { name: "Explain", exact: true }).click();
    const result = page.getByTestId("explain-result");
    await result.getByRole("alert").filter({ hasText: "model 'e2e-embed' has type 'embedding'; this endpoint takes models of type 'chat'" }).waitFor();
    assert.equal((await result.getByTestId("explain-type").innerText()).trim(), "embedding");
    assert.equal(await result.getByRole("table").count(), 0);
    await screenshot("models-type-refused");
    // For an embeddings client it routes.
    await page.locator("#x-api").selectOption("embeddings");
    await page.getByRole("button", { name: "Explain", exact: true }).click();
    await result.getByRole("alert").waitFor({ state: "detached" });
    assert.equal(await result.getByText("kept", { exact: true }).count(), 1);
    assert.equal((await result.getByTestId("explain-type").innerText()).trim(), "embedding");

    const key = await createKey("e2e-embed-key", "e2e-embed");
    otherKeys.push(key);
    const client = openai(key);
    await keyKnown(client);
    const embedded = await client.embeddings.create({ model: "e2e-embed", input: "hello" });
    assert.ok(embedded.data[0].embedding.length > 0);
    await assert.rejects(
      client.chat.completions.create({ model: "e2e-embed", messages: [{ role: "user", content: "hi" }] }),
      (e) => e.status === 400 && /has type 'embedding'/.test(e.message),
    );
    await assertNoSecrets("model types");
    await goto("Overview");
  });

  step("limits: usage bars, default key limits, the budget warning, editing and reset spend", async () => {
    // The default key limits apply to the keys without their own.
    await goto("API keys");
    await page.getByRole("button", { name: "Default limits" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.getByText("Now: none.").waitFor();
    await dialog.getByLabel("Requests per minute").fill("1000");
    await dialog.getByRole("button", { name: "Save defaults" }).click();
    await dialog.waitFor({ state: "detached" });
    const embedRow = page.getByRole("row").filter({ hasText: "e2e-embed-key" });
    await embedRow.getByTestId("default-limits").waitFor();
    assert.equal(await embedRow.getByRole("progressbar", { name: "Requests/min of e2e-embed-key" }).getAttribute("aria-valuemax"), "1000");

    // A key's own limits: an rpm limit and a budget, each with its bar.
    const row = page.getByRole("row").filter({ hasText: "e2e-key" });
    await editLimits(row, "e2e-key", { "Requests per minute": "100", "Budget (USD)": "1" }, () => screenshot("key-limits-form"));
    const rpm = row.getByRole("progressbar", { name: "Requests/min of e2e-key" });
    const budget = row.getByRole("progressbar", { name: "Budget/month of e2e-key" });
    // Until the new usage is loaded, the bar of the default limit is shown.
    await rpm.and(page.locator('[aria-valuemax="100"]')).waitFor();
    assert.match(await rpm.getAttribute("aria-valuetext"), /^\d+ \/ 100 \(/);
    assert.equal(await budget.getAttribute("aria-valuemax"), "1");
    assert.equal(await row.getByTestId("default-limits").count(), 0);
    // The requests above were priced: the key has spent something this month.
    const spent = Math.round(Number(await budget.getAttribute("aria-valuenow")) * 1e6);
    assert.ok(spent > 0, `the key's spend, micro-dollars: ${spent}`);
    assert.equal(await row.locator('[data-kind="budget"]').getAttribute("data-level"), "ok");

    // A budget the spend is 80 %–100 % of: the warning.
    const setBudget = async (micros) => {
      await editLimits(row, "e2e-key", { "Budget (USD)": (micros / 1e6).toFixed(6) });
      await budget.and(page.locator(`[aria-valuemax="${micros / 1e6}"]`)).waitFor();
    };
    await setBudget(Math.floor(spent / 0.85));
    await row.getByTestId("budget-warning").waitFor();
    assert.match(await row.getByTestId("budget-warning").innerText(), /^8\d(\.\d+)?% of the budget spent$/);
    assert.equal(await row.locator('[data-kind="budget"]').getAttribute("data-level"), "warning");
    await screenshot("key-budget-warning");
    // Spent in full: exhausted.
    await setBudget(spent);
    await row.getByTestId("budget-exhausted").waitFor();
    assert.equal(await row.getByTestId("budget-warning").count(), 0);

    // Reset spend, after a confirmation: the budget is free again.
    await row.getByRole("button", { name: "Reset the spend of e2e-key" }).click();
    await dialog.getByText("Reset the spend of key e2e-key?").waitFor();
    await dialog.getByRole("button", { name: "Reset spend" }).click();
    await dialog.waitFor({ state: "detached" });
    await budget.and(page.locator('[aria-valuenow="0"]')).waitFor();
    assert.equal(await row.locator('[data-kind="budget"]').getAttribute("data-level"), "ok");
    assert.equal(await row.getByRole("button", { name: "Reset the spend of e2e-key" }).count(), 0);
    await screenshot("key-limits");
    await assertNoSecrets("key limits");

    // A model's limits: set, shown, and one removed again (cleared is 0: no limit).
    await goto("Models");
    const modelRow = page.getByRole("row").filter({ hasText: "e2e-model" });
    await editLimits(modelRow, "e2e-model", { "Tokens per minute": "50000", "Requests in flight": "5" });
    assert.equal(await modelRow.getByRole("progressbar", { name: "Tokens/min of e2e-model" }).getAttribute("aria-valuemax"), "50000");
    assert.equal(await modelRow.getByRole("progressbar", { name: "In flight of e2e-model" }).getAttribute("aria-valuemax"), "5");
    await editLimits(modelRow, "e2e-model", {}, async (dialog) => {
      assert.equal(await dialog.getByLabel("Tokens per minute").inputValue(), "50000");
      await dialog.getByLabel("Tokens per minute").fill("");
    });
    await modelRow.getByRole("progressbar", { name: "Tokens/min of e2e-model" }).waitFor({ state: "detached" });
    await modelRow.getByRole("progressbar", { name: "In flight of e2e-model" }).waitFor();
    await screenshot("model-limits");

    // A provider's daily budget shows the provider's spend.
    await goto("Providers");
    const providerRow = page.getByRole("row").filter({ hasText: "mock" });
    await editLimits(providerRow, "mock", { "Budget (USD)": "10", "Budget period": "day" });
    const providerBudget = providerRow.getByRole("progressbar", { name: "Budget/day of mock" });
    assert.equal(await providerBudget.getAttribute("aria-valuemax"), "10");
    assert.ok(Number(await providerBudget.getAttribute("aria-valuenow")) > 0, "the provider's spend today");
    await screenshot("provider-limits");
    await assertNoSecrets("provider limits");
    await goto("Overview");
  });

  step("narrow screens", async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.reload();
    await page.getByRole("heading", { level: 1, name: "Overview" }).waitFor();
    await screenshot("overview-narrow");
    await goto("Logs");
    await page.locator("tbody tr[data-log-id]").first().waitFor();
    await screenshot("logs-narrow");
    await goto("Playground");
    // The default key is one that may use the default model.
    await page.waitForFunction(() => document.querySelector("#pg-key")?.value && document.querySelector("#pg-model")?.value);
    assert.equal(await page.getByText(/may not use model/).count(), 0);
    await screenshot("playground-narrow");
    await page.setViewportSize({ width: 1280, height: 860 });
  });

  step("trace ids: on the detail page, copyable, and a filter of the list", async () => {
    // The data plane under test does not trace requests: the records come
    // straight to the control plane, two of one trace and one untraced.
    const trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    const now = Date.now();
    const ids = [randomUUID(), randomUUID(), randomUUID()];
    const rec = (i, traceId) => ({ id: ids[i], timeMs: now - 1000 + i, model: "e2e-model", key: "e2e-key", status: 200, traceId });
    assert.deepEqual(await shipLogs([rec(0, trace), rec(1, trace), rec(2, "")]), []);

    await goto("Logs");
    const rows = page.locator("tbody tr[data-log-id]");
    // In capitals: the dashboard sends the canonical form.
    await page.locator("#f-trace").fill(trace.toUpperCase());
    await page.waitForURL(/trace_id=4BF92F/i);
    await refreshUntil(rows, 2, "the trace's requests");
    assert.deepEqual((await rows.evaluateAll((rs) => rs.map((r) => r.dataset.logId))).sort(), ids.slice(0, 2).sort());
    await screenshot("logs-by-trace");
    await page.locator("#f-trace").fill("not-a-trace");
    await page.getByRole("alert").filter({ hasText: 'Trace id "not-a-trace" is not a trace id' }).waitFor();
    await page.locator("#f-trace").fill("");
    await page.waitForURL((u) => !/trace_id=/.test(u.toString()));

    await page.goto(`${gw.cpUrl}/logs/${ids[0]}`);
    await page.getByRole("heading", { level: 1, name: "e2e-model" }).waitFor();
    const traceId = page.locator("dt", { hasText: /^Trace id$/ }).locator("xpath=following-sibling::dd[1]");
    assert.equal((await traceId.getByTestId("trace-id").innerText()).trim(), trace);
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: gw.cpUrl });
    await traceId.getByRole("button", { name: "Copy trace id" }).click();
    await traceId.getByText("Copied").waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), trace);
    await screenshot("log-detail-trace");
    // The trace id links to every request of the trace.
    await traceId.getByRole("link").click();
    await page.waitForURL(/\/logs\?.*trace_id=4bf92f3577b34da6a3ce929d0e0e4736/);
    assert.equal(await page.locator("#f-trace").inputValue(), trace);
    await refreshUntil(rows, 2, "the trace's requests from the detail");

    // An untraced request shows no trace id.
    await page.goto(`${gw.cpUrl}/logs/${ids[2]}`);
    await page.getByRole("heading", { level: 1, name: "e2e-model" }).waitFor();
    await page.locator("dt", { hasText: /^Data plane$/ }).waitFor();
    assert.equal(await page.locator("dt", { hasText: /^Trace id$/ }).count(), 0);
    await assertNoSecrets("trace ids");
    await goto("Overview");
  });

  step("the live page shows a request in flight with its tokens, and drops it when it ends", async () => {
    liveKey = await createKey("e2e-live-key", "e2e-model");
    otherKeys.push(liveKey);
    await keyKnown(openai(liveKey));
    await goto("Live");
    await page.getByTestId("live-status").filter({ hasText: "Live" }).waitFor();
    await page.getByText("Nothing in flight").waitFor();

    const slow = await slowChat(liveKey, 60, 100);
    const row = page.locator(`tr[data-request-id="${slow.id}"]`);
    await row.waitFor();
    assert.equal((await row.locator("td").nth(0).innerText()).trim(), "e2e-dp");
    await row.getByText("e2e-live-key", { exact: true }).waitFor();
    await row.getByText("e2e-model", { exact: true }).waitFor();
    await row.getByText("mock:mock-fail", { exact: true }).waitFor();
    await row.getByText("openai-chat → openai", { exact: true }).waitFor();
    await row.getByText("stream", { exact: true }).waitFor();
    // Tokens so far grow (reported at most once a second), and the age ticks.
    await row.getByTestId("tokens").filter({ hasNotText: /^0$/ }).waitFor();
    const age = await row.getByTestId("age").innerText();
    await row.getByTestId("age").filter({ hasNotText: age }).waitFor();
    await page.getByTestId("inflight-count").filter({ hasText: "1 in flight" }).waitFor();
    await screenshot("live");
    await assertNoSecrets("live");

    // The overview counts it, and links to the live page.
    await goto("Overview");
    await page.getByTestId("inflight-count").filter({ hasText: /^1$/ }).waitFor();
    await screenshot("overview-inflight");
    await page.getByTestId("inflight-link").click();
    await page.getByRole("heading", { level: 1, name: "Live" }).waitFor();

    // It ends by itself: gone from the list.
    const end = await slow.done;
    assert.equal(end.error, false, "the slow stream ended normally");
    await row.waitFor({ state: "detached", timeout: WAIT });
    await page.getByText("Nothing in flight").waitFor();
    await goto("Overview");
    await page.getByTestId("inflight-count").filter({ hasText: /^0$/ }).waitFor();
  });

  step("the Cancel button ends a request: the client's stream ends in an error, the log says who", async () => {
    await goto("Live");
    const slow = await slowChat(liveKey, 400, 50, "cancel me");
    const row = page.locator(`tr[data-request-id="${slow.id}"]`);
    await row.waitFor();
    await row.getByRole("button", { name: `Cancel request ${slow.id}` }).click();
    const dialog = page.getByRole("dialog");
    await dialog.getByText("Cancel this request?").waitFor();
    await screenshot("live-cancel-confirm");
    const started = Date.now();
    await dialog.getByRole("button", { name: "Cancel request" }).click();
    await dialog.waitFor({ state: "detached" });
    const result = page.getByTestId("cancel-result");
    await result.waitFor();
    assert.match(await result.innerText(), /on data plane e2e-dp/);
    assert.match(await result.innerText(), /an admin \(admin token\)/);
    const end = await slow.done;
    assert.ok(Date.now() - started < 5000, "the client's stream ended soon after the cancel");
    assert.ok(end.errorEvent && !end.text.includes("[DONE]"), `the client's stream ended in an error event, not [DONE]: ${end.text.slice(-300)}`);
    await row.waitFor({ state: "detached" });
    await screenshot("live-cancelled");

    // A request that ends while the confirmation is open: the cancel says it has ended.
    const short = await slowChat(liveKey, 10, 100, "ends first");
    const shortRow = page.locator(`tr[data-request-id="${short.id}"]`);
    await shortRow.getByRole("button", { name: `Cancel request ${short.id}` }).click();
    await dialog.getByText("Cancel this request?").waitFor();
    assert.equal((await short.done).error, false);
    await shortRow.waitFor({ state: "detached" });
    await dialog.getByRole("button", { name: "Cancel request" }).click();
    // The request ended on the data plane: whether the control plane still
    // lists it (the data plane answers "not here") or not, the cancel says so.
    await dialog
      .getByRole("alert")
      .filter({ hasText: /already ended|ended moments ago/ })
      .waitFor()
      .catch(async (e) => {
        const shown = (await page.locator("body").innerText().catch(() => "")).slice(-600);
        throw new Error(`the cancel of an ended request did not say so; the page shows: ${shown}`, { cause: e });
      });
    await screenshot("live-cancel-ended");
    await dialog.getByRole("button", { name: "Cancel", exact: true }).click();
    await dialog.waitFor({ state: "detached" });

    await openLog(slow.id);
    await page.getByTestId("outcome").waitFor();
    assert.match(await page.getByTestId("cancelled-by").innerText(), /^Cancelled by an admin \(admin token\) through control plane .+ at \d{4}-/);
    await screenshot("log-detail-cancelled");
    await assertNoSecrets("cancelled request");
  });

  step("the log detail: a chat conversation, and the attempt timeline of a failover", async () => {
    await goto("Logs");
    const failover = page.locator("tbody tr").filter({ hasText: "×2" }).filter({ hasText: "200" }).first();
    await failover.getByRole("link").click();
    await page.getByRole("heading", { level: 1, name: "e2e-model" }).waitFor();
    const conv = page.getByTestId("conversation");
    await conv.getByRole("region", { name: "User" }).getByText("hello from the browser tests").waitFor();
    await conv.getByTestId("response-message").getByText(/tok0/).waitFor();

    // Two attempts on one axis: the failed one first, the failover after it.
    const timeline = page.getByTestId("attempt-timeline");
    const bars = timeline.getByTestId("attempt-bar");
    assert.equal(await bars.count(), 2);
    const span = async (i) => [Number(await bars.nth(i).getAttribute("data-start-ms")), Number(await bars.nth(i).getAttribute("data-end-ms"))];
    const [first, second] = [await span(0), await span(1)];
    // Each attempt at the time it was sent (start_offset_ms): the first
    // within moments of the request's start.
    assert.ok(first[0] >= 0 && first[0] <= first[1], `the first attempt: ${first}`);
    assert.ok(second[0] >= first[1], `the second attempt starts after the first ends: ${first} ${second}`);
    assert.ok(second[0] >= 30, `the second attempt is sent after the first's 30 ms: ${second}`);
    const box0 = await bars.nth(0).boundingBox();
    const box1 = await bars.nth(1).boundingBox();
    assert.ok(box0 && box1 && box1.x >= box0.x, "drawn in that order on the axis");
    await timeline.getByTestId("attempt").nth(0).getByText("503", { exact: true }).waitFor();
    await timeline.getByTestId("attempt").nth(1).getByText("mock-ok", { exact: true }).waitFor();
    assert.match(await timeline.getByTestId("timeline-note").innerText(), /Each attempt starts when it was sent/);
    await screenshot("log-detail-conversation-timeline");
    await page.getByRole("tab", { name: "Raw JSON" }).click();
    await page.getByText('"role": "user"').first().waitFor();
    await page.getByRole("tab", { name: "Conversation" }).click();
    await conv.waitFor();
  });

  step("the log detail of an Anthropic stream: system prompt, tool call and result, the answer; copy as cURL", async () => {
    const body = {
      model: "e2e-model",
      max_tokens: 200,
      stream: true,
      system: "You are the e2e assistant.",
      tools: [{ name: "lookup", description: "Looks a word up", input_schema: { type: "object", properties: { word: { type: "string" } } } }],
      messages: [
        { role: "user", content: "Look up llama" },
        { role: "assistant", content: [{ type: "tool_use", id: "toolu_e2e", name: "lookup", input: { word: "llama" } }] },
        { role: "user", content: [{ type: "tool_result", tool_use_id: "toolu_e2e", content: "a South American camelid" }] },
      ],
    };
    const r = await fetch(`${gw.dpUrl}/v1/messages`, {
      method: "POST",
      headers: { "x-api-key": liveKey, "anthropic-version": "2023-06-01", "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    assert.equal(r.status, 200, await r.clone().text());
    const id = r.headers.get("x-llmgw-request-id");
    const sse = await r.text();
    assert.match(sse, /message_stop/);

    await openLog(id);
    const conv = page.getByTestId("conversation");
    await conv.getByRole("region", { name: "System prompt" }).getByText("You are the e2e assistant.").waitFor();
    await conv.getByRole("region", { name: "User" }).getByText("Look up llama").waitFor();
    const call = conv.getByTestId("tool-call");
    await call.getByText("lookup", { exact: true }).waitFor();
    await call.getByText(/"word": "llama"/).waitFor();
    await conv.getByRole("region", { name: "Tool" }).getByTestId("tool-result").getByText("a South American camelid").waitFor();
    await conv.getByTestId("response-message").getByText("tok0 tok1 tok2 tok3").waitFor();
    await conv.getByText("end_turn").waitFor();
    await screenshot("log-detail-anthropic-conversation");

    // Copy as cURL: the key is a placeholder in the header that carried it.
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: gw.cpUrl });
    await page.getByRole("button", { name: "Copy as curl" }).click();
    await page.getByRole("button", { name: "Copied" }).first().waitFor();
    const curl = await page.evaluate(() => navigator.clipboard.readText());
    assert.match(curl, /"\$LLMGW_URL\/v1\/messages"/);
    assert.match(curl, /-H "x-api-key: \$LLMGW_KEY"/);
    assert.match(curl, /-H 'anthropic-version: 2023-06-01'/);
    assert.match(curl, /You are the e2e assistant/);
    assert.ok(!curl.includes(liveKey) && !curl.includes(liveKey.slice(-4)) && !curl.includes("****"), "no key, not even masked, in the curl command");
    assert.doesNotMatch(curl, /content-length|host:|connection:/i);
    // And it works, run by a shell against the data plane.
    const out = execFileSync("bash", ["-c", curl], { env: { ...process.env, LLMGW_URL: gw.dpUrl, LLMGW_KEY: liveKey }, encoding: "utf8", timeout: 15_000 });
    assert.match(out, /message_stop/);
    await assertNoSecrets("anthropic log detail");
  });

  step("the log detail of Gemini and Responses requests: their conversations; Gemini's curl keeps the stream", async () => {
    const g = await fetch(`${gw.dpUrl}/v1beta/models/e2e-model:streamGenerateContent?alt=sse`, {
      method: "POST",
      headers: { "x-goog-api-key": liveKey, "content-type": "application/json" },
      body: JSON.stringify({
        systemInstruction: { parts: [{ text: "Gemini system words" }] },
        contents: [{ role: "user", parts: [{ text: "Hello Gemini" }] }],
      }),
    });
    assert.equal(g.status, 200, await g.clone().text());
    const gid = g.headers.get("x-llmgw-request-id");
    await g.text();
    await openLog(gid);
    const conv = page.getByTestId("conversation");
    await conv.getByRole("region", { name: "System prompt" }).getByText("Gemini system words").waitFor();
    await conv.getByRole("region", { name: "User" }).getByText("Hello Gemini").waitFor();
    await conv.getByTestId("response-message").getByText("tok0 tok1 tok2 tok3").waitFor();
    await screenshot("log-detail-gemini-conversation");
    const curl = await page.locator("pre").last().innerText();
    assert.match(curl, /:streamGenerateContent\?alt=sse"/);
    assert.match(curl, /-H "x-goog-api-key: \$LLMGW_KEY"/);
    assert.ok(!curl.includes(liveKey) && !curl.includes("****"));
    const out = execFileSync("bash", ["-c", curl], { env: { ...process.env, LLMGW_URL: gw.dpUrl, LLMGW_KEY: liveKey }, encoding: "utf8", timeout: 15_000 });
    assert.match(out, /^data: /m);

    const r = await fetch(`${gw.dpUrl}/v1/responses`, {
      method: "POST",
      headers: { authorization: `Bearer ${liveKey}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "e2e-model", instructions: "Responses instructions", input: "Hello Responses" }),
    });
    assert.equal(r.status, 200, await r.clone().text());
    const rid = r.headers.get("x-llmgw-request-id");
    await r.text();
    await openLog(rid);
    await conv.getByRole("region", { name: "System prompt" }).getByText("Responses instructions").waitFor();
    await conv.getByRole("region", { name: "User" }).getByText("Hello Responses").waitFor();
    await conv.getByTestId("response-message").getByText(/tok0/).waitFor();
    await assertNoSecrets("gemini and responses log details");
  });

  step("a second model and a key allowed both, for the playground and replay", async () => {
    await goto("Models");
    await page.getByRole("button", { name: "Add model" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.getByLabel("Name", { exact: true }).fill("e2e-other");
    await dialog.getByLabel("Attempts per target").fill("1");
    await dialog.locator("#t0-provider").selectOption("mock");
    await dialog.locator("#t0-upstream").fill("mock-ok");
    await dialog.getByRole("button", { name: "Create model" }).click();
    await dialog.waitFor({ state: "detached" });
    await page.getByRole("row").filter({ hasText: "e2e-other" }).getByText("mock:mock-ok").waitFor();
    playKey = await createKey("e2e-play-key", ["e2e-model", "e2e-other"]);
    otherKeys.push(playKey);
    await keyKnown(openai(playKey));
  });

  step("the playground streams an answer from each client protocol, with its route and its log", async () => {
    await goto("Playground");
    await page.locator("#pg-model").selectOption("e2e-other");
    await page.locator("#pg-key").selectOption("e2e-play-key");
    await page.getByLabel("System prompt").fill("You are the playground.");
    await page.getByLabel("Message 1", { exact: true }).fill("Hello playground");
    assert.equal(await page.getByRole("switch", { name: "Stream" }).getAttribute("aria-checked"), "true");
    // Every change of the answer's text is recorded, to see it grow.
    await page.evaluate(() => {
      window.__answers = [];
      new MutationObserver(() => {
        const t = document.querySelector('[data-testid="answer-text"]')?.textContent ?? "";
        if (window.__answers[window.__answers.length - 1] !== t) window.__answers.push(t);
      }).observe(document.body, { subtree: true, childList: true, characterData: true });
    });
    const output = page.getByTestId("run-output");
    const protocols = [
      ["openai-chat", "openai-chat"],
      ["openai-responses", "openai-responses"],
      ["anthropic", "anthropic"],
      ["gemini", "gemini"],
    ];
    const ids = [];
    for (const [value, logged] of protocols) {
      await page.locator("#pg-protocol").selectOption(value);
      // A slow stream: five chunks 150 ms apart.
      await mockScript("mock-ok", [{ chunks: 5, chunk_delay_ms: 150 }]);
      await page.evaluate(() => (window.__answers = []));
      // The picks still hold once the page has settled (a default set late
      // once put e2e-model back over the pick, and the request went there).
      assert.equal(await page.locator("#pg-model").inputValue(), "e2e-other");
      assert.equal(await page.locator("#pg-key").inputValue(), "e2e-play-key");
      await page.getByRole("button", { name: "Send" }).click();
      await output.getByTestId("answer-text").filter({ hasText: "tok0" }).waitFor();
      await page.locator('[data-testid="run-output"][data-phase="done"]').waitFor();
      assert.equal((await output.getByTestId("answer-text").innerText()).trim(), "tok0 tok1 tok2 tok3 tok4", `${value}: the whole answer`);
      playgroundSeen[value] = await page.evaluate(() => window.__answers);
      await output.getByText("200", { exact: true }).waitFor();
      await output.getByTestId("run-timing").getByText(/TTFB/).waitFor();
      // The route: the data plane and the request id from the answer's head,
      // then the target and the origin from the log.
      const route = page.getByTestId("run-route");
      await route.getByText("e2e-dp", { exact: true }).waitFor();
      const id = (await route.getByTestId("run-request-id").innerText()).trim();
      assert.match(id, /^[0-9a-f-]{36}$/);
      assert.equal((await page.getByTestId("run-log-link").innerText()).trim(), id);
      const facts = page.getByTestId("run-log-facts");
      await facts.waitFor();
      await facts.getByTestId("run-log-route").getByText(/mock:mock-ok/).waitFor();
      assert.match(await facts.getByTestId("run-log-route").innerText(), new RegExp(`\\(${logged}→`));
      assert.equal((await page.getByTestId("run-log").getByTestId("origin").innerText()).trim(), "playground");
      assert.notEqual((await facts.getByTestId("run-log-tokens").innerText()).trim(), "0 / 0");
      ids.push(id);
      if (value === "openai-chat") await screenshot("playground");
    }
    assert.equal(new Set(ids).size, 4);
    await assertNoSecrets("playground");

    // The link opens the log, marked as from the playground.
    await page.getByTestId("run-log-link").click();
    await page.getByRole("heading", { level: 1, name: "e2e-other" }).waitFor();
    assert.equal((await page.getByTestId("origin").innerText()).trim(), "playground");
    await page.getByTestId("conversation").getByRole("region", { name: "System prompt" }).getByText("You are the playground.").waitFor();
    await screenshot("log-detail-playground");
  });

  step("the playground shows an error answer in its protocol's words, and Stop ends a stream", async () => {
    await goto("Playground");
    await page.locator("#pg-model").selectOption("e2e-other");
    await page.locator("#pg-key").selectOption("e2e-play-key");
    await page.locator("#pg-protocol").selectOption("anthropic");
    await page.getByLabel("Message 1", { exact: true }).fill("fail please");
    await mockScript("mock-ok", [{ status: 400 }]);
    await page.getByRole("button", { name: "Send" }).click();
    const output = page.getByTestId("run-output");
    await output.getByRole("alert").filter({ hasText: /The data plane answered HTTP 400/ }).waitFor();
    await screenshot("playground-error");

    // A stream of 100 chunks, 100 ms apart: stopped after its first text.
    await page.getByRole("switch", { name: "Stream" }).waitFor();
    await mockScript("mock-ok", [{ chunks: 100, chunk_delay_ms: 100 }]);
    await page.getByRole("button", { name: "Send" }).click();
    await output.getByTestId("answer-text").filter({ hasText: "tok0" }).waitFor();
    await page.getByRole("button", { name: "Stop" }).click();
    await page.locator('[data-testid="run-output"][data-phase="stopped"]').waitFor();
    const stoppedAt = await output.getByTestId("answer-text").innerText();
    assert.doesNotMatch(stoppedAt, /tok99/);
    await page.getByRole("button", { name: "Send" }).waitFor();
    // Nothing more arrives, and no other request starts.
    await page.waitForTimeout(500);
    assert.equal(await output.getByTestId("answer-text").innerText(), stoppedAt);
    assert.equal(await page.locator('[data-testid="run-output"][data-phase="stopped"]').count(), 1);
    await assertNoSecrets("playground error and stop");
  });

  step("replay from the log detail page: a failed request against another model, side by side", async () => {
    // A request that fails: both targets of e2e-model answer 5xx.
    await mockScript("mock-fail", [{ status: 503 }]);
    await mockScript("mock-ok", [{ status: 500 }]);
    const r = await fetch(`${gw.dpUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${playKey}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "e2e-model", messages: [{ role: "user", content: "replay me" }] }),
    });
    assert.equal(r.status, 500, await r.clone().text());
    const original = r.headers.get("x-llmgw-request-id");
    await r.text();
    await openLog(original);
    await page.getByRole("heading", { level: 1, name: "e2e-model" }).waitFor();
    assert.equal(await page.getByTestId("replay-blocker").count(), 0);
    await page.getByRole("button", { name: "Replay", exact: true }).click();
    const dialog = page.getByRole("dialog");
    // Defaults: the original's model and key.
    await dialog.locator("#replay-model option", { hasText: "e2e-other" }).waitFor({ state: "attached" });
    assert.equal(await dialog.locator("#replay-model").inputValue(), "e2e-model");
    assert.equal(await dialog.locator("#replay-key").inputValue(), "e2e-play-key");
    await dialog.locator("#replay-model").selectOption("e2e-other");
    await dialog.getByRole("button", { name: "Replay", exact: true }).click();
    await dialog.locator('[data-testid="run-output"][data-phase="done"]').waitFor();
    const output = dialog.getByTestId("run-output");
    await output.getByText("200", { exact: true }).waitFor();
    await output.getByTestId("answer-text").getByText(/tok0/).waitFor();
    // The non-streamed answer's JSON is there too.
    await output.getByTestId("answer-json").waitFor();

    const side = dialog.getByTestId("side-by-side");
    await side.waitFor();
    assert.equal((await side.getByTestId("compare-verdict").innerText()).trim(), "The replay succeeded where the original failed (500 → 200).");
    const row = (label) => side.locator(`[data-testid="compare-row"][data-label="${label}"]`);
    assert.equal((await row("Status").locator('[data-side="original"]').innerText()).trim(), "500 failed");
    assert.match(await row("Status").locator('[data-side="replay"]').innerText(), /^200 ok/);
    assert.equal((await row("Model").locator('[data-side="original"]').innerText()).trim(), "e2e-model");
    assert.equal((await row("Model").locator('[data-side="replay"]').innerText()).trim(), "e2e-other");
    assert.equal((await row("Key").locator('[data-side="replay"]').innerText()).trim(), "e2e-play-key");
    for (const label of ["Latency", "Time to first byte", "Tokens in", "Tokens out", "Cost"]) await row(label).waitFor();
    await side.getByTestId("replay-response").getByTestId("response-message").getByText(/tok0/).waitFor();
    await side.getByTestId("original-response").waitFor();
    await screenshot("replay-dialog");
    await assertNoSecrets("replay dialog");

    // The new request's log: a replay of the original, the same view.
    const replayId = (await dialog.getByTestId("replay-log-link").innerText()).trim();
    await dialog.getByTestId("replay-log-link").click();
    await dialog.waitFor({ state: "detached" });
    await page.getByRole("heading", { level: 1, name: "e2e-other" }).waitFor();
    assert.equal((await page.getByTestId("origin").innerText()).trim(), "replay");
    const replayOf = page.getByTestId("replay-of");
    assert.equal((await replayOf.getByRole("link").innerText()).trim(), original);
    await page.getByTestId("side-by-side").getByTestId("compare-verdict").getByText(/succeeded where the original failed/).waitFor();
    await screenshot("log-detail-replay");
    await assertNoSecrets("replay log detail");
    await replayOf.getByRole("link").click();
    await page.getByRole("heading", { level: 1, name: "e2e-model" }).waitFor();
    assert.equal(await page.getByTestId("replay-of").count(), 0);

    // The logs list marks it.
    await goto("Logs");
    const listed = page.locator(`tbody tr[data-log-id="${replayId}"]`);
    await refreshUntil(listed, 1, "the replay in the list");
    assert.equal((await listed.getByTestId("origin").innerText()).trim(), "replay");
  });

  step("a request whose body was not logged cannot be replayed, and says why", async () => {
    const id = randomUUID();
    assert.deepEqual(await shipLogs([{ id, timeMs: Date.now(), model: "e2e-model", key: "e2e-key", status: 200, traceId: "" }]), []);
    await page.goto(`${gw.cpUrl}/logs/${id}`);
    await page.getByRole("heading", { level: 1, name: "e2e-model" }).waitFor();
    assert.equal(await page.getByRole("button", { name: "Replay", exact: true }).isDisabled(), true);
    assert.match(await page.getByTestId("replay-blocker").innerText(), /request body, and it was not logged/);
    await screenshot("log-detail-replay-blocked");
    await goto("Overview");
  });

  step("the playground's answers grew as they streamed", async () => {
    for (const [protocol, seen] of Object.entries(playgroundSeen)) {
      const partial = seen.filter((t) => /tok0/.test(t) && !/tok4/.test(t));
      assert.ok(partial.length > 0, `${protocol}: the answer was shown before it was whole; seen: ${JSON.stringify(seen)}`);
    }
  });

  step("a provider whose key cannot be decrypted is listed as broken, and fixed", async () => {
    await gw.restartControlPlane(tamperSealedSecrets);
    await page.reload();
    await goto("Providers");
    const row = page.getByRole("row").filter({ hasText: "mock" });
    const badge = row.getByTestId("broken");
    await badge.waitFor();
    assert.equal((await badge.innerText()).trim(), "broken: api_key");
    assert.match(await badge.getAttribute("title"), /api_key: cannot be decrypted/);
    await screenshot("provider-broken");
    // The rest is still listed and healthy.
    await goto("Models");
    await page.getByRole("row").filter({ hasText: "e2e-model" }).waitFor();
    assert.equal(await page.getByTestId("broken").count(), 0);
    // Fixed by saving a new key.
    await goto("Providers");
    await row.getByRole("button", { name: "Edit mock" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.getByLabel("API key").fill(PROVIDER_KEY);
    await dialog.getByRole("button", { name: "Save changes" }).click();
    await dialog.waitFor({ state: "detached" });
    await row.getByText(`****${PROVIDER_KEY.slice(-4)}`).waitFor();
    assert.equal(await row.getByTestId("broken").count(), 0);
    await assertNoSecrets("providers after the fix");
  });

  step("a refused token returns to sign-in; sign-out clears the token", async () => {
    await page.evaluate((k) => sessionStorage.setItem(k, "revoked-token"), TOKEN_KEY);
    await page.reload();
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    await page.getByText("refused the admin token").waitFor();
    assert.equal(await page.evaluate((k) => sessionStorage.getItem(k), TOKEN_KEY), null);

    await page.getByLabel("Admin token").fill(ADMIN_TOKEN);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { level: 1 }).first().waitFor();
    await page.getByRole("button", { name: "Sign out" }).first().click();
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    await assertNoSecrets("signed out");
  });

  step("no script error or content-security-policy refusal on any page", async () => {
    assert.deepEqual(pageErrors, []);
  });
});
