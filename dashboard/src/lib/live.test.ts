import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { InFlightRequestSchema } from "@/gen/llmgw/v1/live_pb";
import { applyInFlight, backoffMs, formatAge, sortInFlight } from "./live";

const req = (id: string, startedMs: number, tokens = 0) => create(InFlightRequestSchema, { id, startedMs: BigInt(startedMs), tokens: BigInt(tokens) });

describe("requests in flight", () => {
  it("applies full events, changes and ends", () => {
    let m = applyInFlight(new Map(), { full: true, upserts: [req("a", 2), req("b", 1)], ended: [] });
    expect(sortInFlight(m).map((r) => r.id)).toEqual(["b", "a"]);
    m = applyInFlight(m, { full: false, upserts: [req("a", 2, 40), req("c", 3)], ended: ["b"] });
    expect(sortInFlight(m).map((r) => [r.id, Number(r.tokens)])).toEqual([
      ["a", 40],
      ["c", 0],
    ]);
    // A full event forgets what it does not list.
    m = applyInFlight(m, { full: true, upserts: [req("d", 9)], ended: [] });
    expect([...m.keys()]).toEqual(["d"]);
    // Ending an unknown id is harmless.
    expect(applyInFlight(m, { full: false, upserts: [], ended: ["zzz"] }).size).toBe(1);
  });

  it("backs off up to 30 s", () => {
    expect([1, 2, 3, 4, 5, 6, 7, 20].map(backoffMs)).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  });

  it("says the age", () => {
    expect(formatAge(0, 4_500)).toBe("4s");
    expect(formatAge(0, 65_000)).toBe("1m 05s");
    expect(formatAge(0, 3_700_000)).toBe("1h 01m");
    expect(formatAge(10_000, 0)).toBe("0s");
  });
});
