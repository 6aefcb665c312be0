import { describe, expect, it } from "vitest";
import { formatCost, formatDuration, formatInt, formatPercent, formatRelative, formatTokens, statusClass, toDate } from "./format";

describe("durations", () => {
  it("picks a unit", () => {
    expect(formatDuration(0)).toBe("0 ms");
    expect(formatDuration(840)).toBe("840 ms");
    expect(formatDuration(999.6)).toBe("1000 ms");
    expect(formatDuration(1250)).toBe("1.25 s");
    expect(formatDuration(12_340)).toBe("12.3 s");
    expect(formatDuration(125_000)).toBe("2m 05s");
    expect(formatDuration(3_720_000)).toBe("1h 02m");
    expect(formatDuration(50 * 3_600_000)).toBe("2d 02h");
  });
  it("takes bigint and rejects nonsense", () => {
    expect(formatDuration(1500n)).toBe("1.50 s");
    expect(formatDuration(-1)).toBe("–");
    expect(formatDuration(Number.NaN)).toBe("–");
  });
});

describe("tokens", () => {
  it("abbreviates", () => {
    expect(formatTokens(0)).toBe("0");
    expect(formatTokens(950)).toBe("950");
    expect(formatTokens(1000)).toBe("1k");
    expect(formatTokens(1234)).toBe("1.23k");
    expect(formatTokens(12_345)).toBe("12.3k");
    expect(formatTokens(4_560_000n)).toBe("4.56M");
    expect(formatTokens(1_200_000_000)).toBe("1.2B");
    expect(formatInt(1234567n)).toBe("1,234,567");
  });
});

describe("cost", () => {
  it("in US dollars with sensible precision", () => {
    expect(formatCost(0)).toBe("$0");
    expect(formatCost(0.00004)).toBe("<$0.0001");
    expect(formatCost(0.0042)).toBe("$0.0042");
    expect(formatCost(0.125)).toBe("$0.125");
    expect(formatCost(1234.5)).toBe("$1,234.50");
    expect(formatCost(-0.5)).toBe("-$0.500");
  });
  it("rates as percentages", () => {
    expect(formatPercent(0)).toBe("0%");
    expect(formatPercent(0.005)).toBe("0.5%");
    expect(formatPercent(1 / 6)).toBe("16.7%");
    expect(formatPercent(0.9999)).toBe("99.9%");
    expect(formatPercent(1)).toBe("100%");
  });
});

describe("times", () => {
  const now = Date.UTC(2026, 10, 27, 12);
  it("relative", () => {
    expect(formatRelative("", now)).toBe("never");
    expect(formatRelative(now - 10_000, now)).toBe("just now");
    expect(formatRelative(new Date(now - 5 * 60_000).toISOString(), now)).toBe("5 min ago");
    expect(formatRelative(BigInt(now - 3 * 3_600_000), now)).toBe("3 h ago");
    expect(formatRelative(now + 2 * 86_400_000, now)).toBe("in 2 days");
    expect(formatRelative(now - 86_400_000, now)).toBe("1 day ago");
  });
  it("parses what the API sends", () => {
    expect(toDate("")).toBeUndefined();
    expect(toDate("not a date")).toBeUndefined();
    expect(toDate("2026-11-27T12:00:00.000Z")?.getTime()).toBe(now);
    expect(toDate(BigInt(now))?.getTime()).toBe(now);
  });
  it("status classes", () => {
    expect(statusClass(0)).toBe("none");
    expect(statusClass(204)).toBe("2xx");
    expect(statusClass(503)).toBe("5xx");
  });
});
