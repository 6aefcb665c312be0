import { describe, expect, it } from "vitest";
import {
  budgetLevel,
  formatUsd,
  kindTitle,
  limitsForCreate,
  limitsFormOf,
  limitsForUpdate,
  limitsSummary,
  NO_LIMITS,
  parseUsd,
  resetText,
  type UsageLike,
  usageByName,
  usageRatio,
  usageText,
  usdText,
} from "./limits";

const usage = (over: Partial<UsageLike>): UsageLike => ({
  scope: "key",
  name: "team-a",
  kind: "rpm",
  limit: 100n,
  used: 0n,
  windowStart: "2026-12-02T21:00:00Z",
  windowEnd: "2026-12-02T21:01:00Z",
  period: "",
  onOutage: "open",
  default: false,
  ...over,
});

describe("US dollars from micro-dollars", () => {
  it("formats exactly, with at least cents", () => {
    const cases: [bigint | number, string][] = [
      [0n, "$0.00"],
      [5_000_000n, "$5.00"],
      [1_234_500_000n, "$1,234.50"],
      [42n, "$0.000042"],
      [123_456n, "$0.123456"],
      [10_000n, "$0.01"],
      [18_446_744_073_709_551_615n, "$18,446,744,073,709.551615"],
      [250_000, "$0.25"],
    ];
    for (const [micros, text] of cases) expect(formatUsd(micros)).toBe(text);
  });
  it("gives the form's number back", () => {
    const cases: [bigint, string][] = [
      [12_500_000n, "12.5"],
      [5_000_000n, "5"],
      [42n, "0.000042"],
      [1_234_000_000n, "1234"],
      [0n, "0"],
    ];
    for (const [micros, text] of cases) expect(usdText(micros)).toBe(text);
  });
  it("parses what an admin types", () => {
    expect(parseUsd("12.5")).toBe(12_500_000n);
    expect(parseUsd(" $1,000 ")).toBe(1_000_000_000n);
    expect(parseUsd("0.000042")).toBe(42n);
    expect(parseUsd(".5")).toBe(500_000n);
    expect(parseUsd("7.")).toBe(7_000_000n);
    for (const bad of ["", "abc", "1.2.3", "-5", "0.0000001", "1e3"]) expect(() => parseUsd(bad), bad).toThrow(/US dollars/);
  });
  it("round-trips", () => {
    for (const m of [1n, 99n, 1_000_000n, 123_456_789n]) expect(parseUsd(usdText(m))).toBe(m);
  });
});

describe("budget levels", () => {
  it("warns from 80 % and is exhausted at 100 %", () => {
    expect(budgetLevel(0n, 100n)).toBe("ok");
    expect(budgetLevel(79n, 100n)).toBe("ok");
    expect(budgetLevel(80n, 100n)).toBe("warning");
    expect(budgetLevel(99n, 100n)).toBe("warning");
    expect(budgetLevel(100n, 100n)).toBe("exhausted");
    expect(budgetLevel(150n, 100n)).toBe("exhausted");
  });
  it("is exact where floating point is not", () => {
    // 0.8 × 3 is 2.4000000000000004 in floating point: 2.4 of 3 is exactly 80 %.
    expect(budgetLevel(24n, 30n)).toBe("warning");
    expect(budgetLevel(7_999_999n, 10_000_000n)).toBe("ok");
    expect(budgetLevel(8_000_000n, 10_000_000n)).toBe("warning");
  });
  it("no limit is never a warning", () => {
    expect(budgetLevel(5n, 0n)).toBe("ok");
    expect(usageRatio(5n, 0n)).toBe(0);
    expect(usageRatio(25n, 100n)).toBe(0.25);
  });
});

describe("window reset text", () => {
  const now = Date.parse("2026-12-02T21:00:18Z");
  it("counts down to the window's end", () => {
    expect(resetText(usage({}), now)).toBe("resets in 42.0 s");
    expect(resetText(usage({ windowEnd: "2026-12-02T21:00:18.500Z" }), now)).toBe("resets in 500 ms");
    expect(resetText(usage({ windowEnd: "2026-12-02T21:00:00Z" }), now)).toBe("resets now");
    expect(resetText(usage({ kind: "budget", period: "day", windowEnd: "2026-12-03T00:00:00Z" }), now)).toBe("resets in 2h 59m");
  });
  it("says so when nothing resets", () => {
    expect(resetText(usage({ kind: "budget", period: "total", windowStart: "", windowEnd: "" }), now)).toBe("never resets");
    expect(resetText(usage({ kind: "concurrency", windowStart: "", windowEnd: "" }), now)).toBe("");
    expect(resetText(usage({ windowEnd: "" }), now)).toBe("");
  });
});

describe("what a bar says", () => {
  it("names the kind with its window or period", () => {
    expect(kindTitle(usage({}))).toBe("Requests/min");
    expect(kindTitle(usage({ kind: "tpm", windowEnd: "2026-12-02T21:00:01Z" }))).toBe("Tokens/1 s");
    expect(kindTitle(usage({ kind: "concurrency" }))).toBe("In flight");
    expect(kindTitle(usage({ kind: "budget", period: "week" }))).toBe("Budget/week");
    expect(kindTitle(usage({ kind: "budget", period: "" }))).toBe("Budget/month");
    expect(kindTitle(usage({ kind: "budget", period: "total" }))).toBe("Budget (total)");
  });
  it("shows used against the limit in the limit's unit", () => {
    expect(usageText(usage({ used: 12n, limit: 1000n }))).toBe("12 / 1,000");
    expect(usageText(usage({ kind: "tpm", used: 12_300n, limit: 100_000n }))).toBe("12.3k / 100k");
    expect(usageText(usage({ kind: "budget", used: 4_200_000n, limit: 5_000_000n }))).toBe("$4.20 / $5.00");
  });
  it("groups a scope's rows by name in a fixed order", () => {
    const rows = [
      usage({ kind: "budget" }),
      usage({ kind: "rpm" }),
      usage({ name: "other", kind: "tpm" }),
      usage({ scope: "model", kind: "concurrency" }),
      usage({ kind: "concurrency" }),
    ];
    const by = usageByName(rows, "key");
    expect([...by.keys()]).toEqual(["team-a", "other"]);
    expect(by.get("team-a")!.map((r) => r.kind)).toEqual(["rpm", "concurrency", "budget"]);
  });
  it("sums stored limits up in words", () => {
    expect(limitsSummary(undefined)).toBe("");
    expect(limitsSummary({})).toBe("");
    expect(limitsSummary({ rpm: 100n, maxConcurrency: 5, budgetMicros: 5_000_000n })).toBe("100 rpm · 5 in flight · $5.00/month");
    expect(limitsSummary({ tpm: 20_000n, budgetMicros: 1n, budgetPeriod: "total" })).toBe("20k tpm · $0.000001 in total");
    expect(limitsSummary({ rpm: 10n, windowMs: 1000 })).toBe("10 requests/1 s");
  });
});

describe("the limits form", () => {
  it("creates only what is set", () => {
    expect(limitsForCreate(NO_LIMITS)).toBeUndefined();
    expect(limitsForCreate({ ...NO_LIMITS, rpm: "0", budget: "0" })).toBeUndefined();
    expect(limitsForCreate({ ...NO_LIMITS, rpm: "60", budget: "2.5", budgetPeriod: "day" })).toEqual({
      rpm: 60n,
      budgetMicros: 2_500_000n,
      budgetPeriod: "day",
      onOutage: "open",
    });
    expect(limitsForCreate({ ...NO_LIMITS, maxConcurrency: "3", onOutage: "closed" })).toEqual({ maxConcurrency: 3, onOutage: "closed" });
  });
  it("refuses what is not a limit", () => {
    expect(() => limitsForCreate({ ...NO_LIMITS, rpm: "1.5" })).toThrow(/Requests per minute must be a whole number/);
    expect(() => limitsForCreate({ ...NO_LIMITS, tpm: "-3" })).toThrow(/Tokens per minute/);
    expect(() => limitsForCreate({ ...NO_LIMITS, maxConcurrency: "4294967296" })).toThrow(/in flight/);
    expect(() => limitsForCreate({ ...NO_LIMITS, budget: "ten" })).toThrow(/US dollars/);
  });
  it("starts from the stored limits", () => {
    const stored = { rpm: 60n, budgetMicros: 12_500_000n, budgetPeriod: "week", onOutage: "closed" };
    expect(limitsFormOf(stored)).toEqual({ rpm: "60", tpm: "", maxConcurrency: "", budget: "12.5", budgetPeriod: "week", onOutage: "closed" });
    expect(limitsFormOf(undefined)).toEqual(NO_LIMITS);
    expect(limitsFormOf({})).toEqual(NO_LIMITS);
  });
  it("updates: changed fields are set, cleared ones sent as 0, the rest left out", () => {
    const stored = { rpm: 60n, tpm: 1000n, maxConcurrency: 4, budgetMicros: 12_500_000n, budgetPeriod: "week", onOutage: "open" };
    const form = limitsFormOf(stored);
    expect(limitsForUpdate(form, stored)).toBeUndefined();
    expect(limitsForUpdate({ ...form, rpm: "120" }, stored)).toEqual({ rpm: 120n });
    expect(limitsForUpdate({ ...form, tpm: "", maxConcurrency: "0" }, stored)).toEqual({ tpm: 0n, maxConcurrency: 0 });
    expect(limitsForUpdate({ ...form, budget: "" }, stored)).toEqual({ budgetMicros: 0n });
    expect(limitsForUpdate({ ...form, budgetPeriod: "day" }, stored)).toEqual({ budgetPeriod: "day" });
    expect(limitsForUpdate({ ...form, onOutage: "closed" }, stored)).toEqual({ onOutage: "closed" });
    // A key with none of its own: setting one is a change, setting none is not.
    expect(limitsForUpdate(NO_LIMITS, undefined)).toBeUndefined();
    expect(limitsForUpdate({ ...NO_LIMITS, budget: "1" }, undefined)).toEqual({ budgetMicros: 1_000_000n });
    expect(limitsForUpdate({ ...NO_LIMITS, budget: "1", budgetPeriod: "total" }, undefined)).toEqual({ budgetMicros: 1_000_000n, budgetPeriod: "total" });
  });
});
