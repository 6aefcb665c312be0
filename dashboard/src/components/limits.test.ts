import { createElement } from "react";
import { renderToStaticMarkup } from "react-dom/server";
import { describe, expect, it } from "vitest";
import type { UsageLike } from "@/lib/limits";
import { LimitsCell, type ScopeUsage, UsageBar } from "./limits";

const NOW = Date.parse("2026-12-02T21:00:00Z");

const budget = (used: bigint, limit = 10_000_000n): UsageLike => ({
  scope: "key",
  name: "team-a",
  kind: "budget",
  limit,
  used,
  windowStart: "2026-12-01T00:00:00Z",
  windowEnd: "2027-01-01T00:00:00Z",
  period: "month",
  onOutage: "open",
  default: false,
});

const bar = (u: UsageLike) => renderToStaticMarkup(createElement(UsageBar, { usage: u, now: NOW }));

/** The attributes of the rendered progress bar. */
function progressbar(html: string): Record<string, string> {
  const tag = /<div role="progressbar"[^>]*>/.exec(html)?.[0] ?? "";
  return Object.fromEntries([...tag.matchAll(/([a-z-]+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]));
}

describe("the usage bar", () => {
  it("is an accessible progress bar in the limit's unit", () => {
    const p = progressbar(bar(budget(2_500_000n)));
    expect(p["aria-label"]).toBe("Budget/month of team-a");
    expect(p["aria-valuemin"]).toBe("0");
    expect(p["aria-valuemax"]).toBe("10");
    expect(p["aria-valuenow"]).toBe("2.5");
    expect(p["aria-valuetext"]).toBe("$2.50 / $10.00 (25%), resets in 29d 03h");
  });

  it("shows when a budget's period starts again", () => {
    expect(bar(budget(2_500_000n))).toContain(">resets in 29d 03h</span>");
    expect(bar({ ...budget(2_500_000n), period: "total", windowStart: "", windowEnd: "" })).toContain(">never resets</span>");
  });

  it("warns at 80 % of a budget", () => {
    const ok = bar(budget(7_990_000n));
    expect(ok).toContain('data-level="ok"');
    expect(ok).not.toContain("of the budget spent");
    const warn = bar(budget(8_000_000n));
    expect(warn).toContain('data-level="warning"');
    expect(warn).toContain("80% of the budget spent");
    expect(warn).toContain("bg-amber-500");
    expect(warn).not.toContain("Budget exhausted");
  });

  it("is exhausted at 100 %, and the bar stops at its maximum", () => {
    const html = bar(budget(12_000_000n));
    expect(html).toContain('data-level="exhausted"');
    expect(html).toContain("Budget exhausted: requests are refused");
    expect(html).toContain("width:100%");
    expect(progressbar(html)["aria-valuenow"]).toBe("10");
    expect(progressbar(html)["aria-valuetext"]).toMatch(/^\$12\.00 \/ \$10\.00 \(120%\)/);
  });

  it("never warns for a rate: its use is the capacity granted, not a spend", () => {
    const html = bar({ ...budget(95n, 100n), kind: "rpm", windowStart: "2026-12-02T21:00:00Z", windowEnd: "2026-12-02T21:01:00Z", period: "" });
    expect(html).toContain('data-level="ok"');
    expect(progressbar(html)["aria-label"]).toBe("Requests/min of team-a");
    expect(progressbar(html)["aria-valuetext"]).toBe("95 / 100 (95%), resets in 1m 00s");
  });
});

describe("the limits cell", () => {
  const scope = (rows: UsageLike[], error = ""): ScopeUsage => ({ byName: new Map([["team-a", rows]]), error, reload: () => {} });
  const cell = (usage: ScopeUsage, configured?: { rpm?: bigint }) =>
    renderToStaticMarkup(createElement(LimitsCell, { name: "team-a", usage, configured, onResetSpend: () => {} }));

  it("marks the default key limits", () => {
    const html = cell(scope([{ ...budget(1n), default: true }]));
    expect(html).toContain("default limits");
    expect(cell(scope([budget(1n)]))).not.toContain("default limits");
  });

  it("offers to reset a spend only when there is one", () => {
    expect(cell(scope([budget(1n)]))).toContain('aria-label="Reset the spend of team-a"');
    expect(cell(scope([budget(0n)]))).not.toContain("Reset spend");
  });

  it("falls back to the stored limits in words, or none", () => {
    expect(cell(scope([], "Not supported by this control plane"), { rpm: 60n })).toContain("60 rpm");
    expect(cell(scope([]))).toContain("none");
  });
});
