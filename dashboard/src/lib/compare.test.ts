import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { AttemptSchema, RequestLogSchema } from "@/gen/llmgw/v1/logs_pb";
import { compareLogs, compareVerdict } from "./compare";

const failed = create(RequestLogSchema, {
  id: "orig",
  status: 500,
  model: "e2e-model",
  provider: "mock",
  upstreamModel: "mock-ok",
  key: "e2e-key",
  latencyMs: 80n,
  ttfbMs: 0n,
  inputTokens: 0n,
  outputTokens: 0n,
  cost: 0,
  attempts: [create(AttemptSchema, { status: 503 }), create(AttemptSchema, { status: 500 })],
  error: "the upstream answered HTTP 500",
});
const replay = create(RequestLogSchema, {
  id: "new",
  status: 200,
  model: "e2e-other",
  provider: "mock",
  upstreamModel: "mock-ok",
  key: "e2e-key",
  latencyMs: 30n,
  ttfbMs: 10n,
  inputTokens: 8n,
  cacheReadTokens: 2n,
  outputTokens: 4n,
  cost: 0.0012,
  attempts: [create(AttemptSchema, { status: 200 })],
  stopReason: "stop",
});

const byLabel = (rows: ReturnType<typeof compareLogs>) => Object.fromEntries(rows.map((r) => [r.label, r]));

describe("compareLogs", () => {
  it("shapes both sides' figures, row by row", () => {
    const rows = byLabel(compareLogs(failed, replay));
    expect(rows.Status).toMatchObject({ original: "500 failed", replay: "200 ok", change: "better", differs: true });
    expect(rows.Model).toMatchObject({ original: "e2e-model", replay: "e2e-other", change: "" });
    expect(rows["Served by"]).toMatchObject({ original: "mock:mock-ok", replay: "mock:mock-ok", differs: false });
    expect(rows.Attempts).toMatchObject({ original: "2", replay: "1", change: "better" });
    expect(rows["Tokens in"]).toMatchObject({ original: "0", replay: "10" });
    expect(rows["Tokens out"]).toMatchObject({ original: "0", replay: "4" });
    expect(rows.Cost).toMatchObject({ original: "$0", replay: "$0.0012" });
    expect(rows["Time to first byte"]).toMatchObject({ original: "–", replay: "10 ms" });
    expect(rows.Error).toMatchObject({ original: "the upstream answered HTTP 500", replay: "–" });
  });

  it("compares time and cost only between two successes", () => {
    // A failure is fast and free: not "better".
    expect(byLabel(compareLogs(failed, replay)).Latency!.change).toBe("");
    expect(byLabel(compareLogs(failed, replay)).Cost!.change).toBe("");
    const slower = { ...replay, latencyMs: 90n, cost: 0.002 };
    const rows = byLabel(compareLogs(replay, slower));
    expect(rows.Latency).toMatchObject({ original: "30 ms", replay: "90 ms", change: "worse" });
    expect(rows.Cost!.change).toBe("worse");
    expect(byLabel(compareLogs(slower, replay)).Latency!.change).toBe("better");
    expect(byLabel(compareLogs(replay, replay)).Latency!.change).toBe("");
  });

  it("marks a cancelled request as not ok", () => {
    const cancelled = { ...replay, status: 499, cancelled: true };
    expect(byLabel(compareLogs(replay, cancelled)).Status).toMatchObject({ replay: "499 (cancelled)", change: "worse" });
  });
});

describe("compareVerdict", () => {
  it("says how the replay went", () => {
    expect(compareVerdict(failed, replay)).toBe("The replay succeeded where the original failed (500 → 200).");
    expect(compareVerdict(replay, failed)).toBe("The replay failed where the original succeeded (200 → 500).");
    expect(compareVerdict(failed, failed)).toBe("Both failed (500 → 500).");
    expect(compareVerdict(replay, replay)).toBe("Both succeeded (200 → 200).");
  });
});
