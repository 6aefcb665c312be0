import { describe, expect, it } from "vitest";
import { layoutAttempts, ticks } from "./timeline";

describe("attempt timeline", () => {
  it("lays attempts without recorded starts end to end, and says so", () => {
    const t = layoutAttempts(
      [
        { latencyMs: 30n, status: 503, error: "upstream answered 503" },
        { latencyMs: 0n, status: 0, error: "limited by provider:rpm" },
        { latencyMs: 120n, status: 200, error: "" },
      ],
      200n,
    );
    expect(t.approximate).toBe(true);
    expect(t.spanMs).toBe(200);
    expect(t.bars).toEqual([
      { startMs: 0, endMs: 30, ok: false, skipped: false },
      { startMs: 30, endMs: 30, ok: false, skipped: true },
      { startMs: 30, endMs: 150, ok: true, skipped: false },
    ]);
  });

  it("places attempts at their recorded starts", () => {
    const t = layoutAttempts(
      [
        { latencyMs: 30, status: 503, error: "x", startOffsetMs: 2 },
        { latencyMs: 100, status: 200, error: "", startOffsetMs: 90 },
      ],
      180,
    );
    expect(t.approximate).toBe(false);
    expect(t.bars.map((b) => [b.startMs, b.endMs])).toEqual([
      [2, 32],
      [90, 190],
    ]);
    expect(t.spanMs).toBe(190);
  });

  it("has round ticks", () => {
    expect(ticks(1000)).toEqual([0, 500, 1000]);
    expect(ticks(180)).toEqual([0, 50, 100, 150]);
    expect(ticks(0.5)).toEqual([0]);
  });
});
