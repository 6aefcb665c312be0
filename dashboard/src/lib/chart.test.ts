import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { StatsBucketSchema } from "@/gen/llmgw/v1/admin_pb";
import { fillBuckets, niceTicks } from "./chart";

describe("chart data", () => {
  it("round ticks", () => {
    expect(niceTicks(87, 4)).toEqual({ ticks: [0, 25, 50, 75, 100], max: 100 });
    expect(niceTicks(6, 4)).toEqual({ ticks: [0, 2, 4, 6], max: 6 });
    expect(niceTicks(0, 4)).toEqual({ ticks: [0, 1], max: 1 });
    expect(niceTicks(0.0003, 4).max).toBeCloseTo(0.0003);
  });

  it("fills the buckets the server left out, aligned like the server", () => {
    const b = (startMs: number, requests: number) => create(StatsBucketSchema, { startMs: BigInt(startMs), requests: BigInt(requests) });
    const since = 10 * 60_000 + 5_000;
    const until = 14 * 60_000 + 30_000;
    const out = fillBuckets([b(11 * 60_000, 3), b(13 * 60_000, 1)], since, until, 60);
    expect(out.map((x) => x.start / 60_000)).toEqual([10, 11, 12, 13, 14]);
    expect(out.map((x) => (x.bucket ? Number(x.bucket.requests) : 0))).toEqual([0, 3, 0, 1, 0]);
  });
});
