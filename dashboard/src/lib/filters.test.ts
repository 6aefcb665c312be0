import { describe, expect, it } from "vitest";
import { Outcome } from "@/gen/llmgw/v1/logs_pb";
import {
  activeFilterCount,
  CLIENT_PROTOCOL_CHOICES,
  DEFAULT_FILTERS,
  filtersFromQuery,
  filtersToQuery,
  type LogFilters,
  parseCount,
  parseStatus,
  parseTraceId,
  toFollowLogsRequest,
  toListLogsRequest,
  toLogFilter,
  UPSTREAM_PROTOCOL_CHOICES,
  withFilters,
} from "./filters";

const NOW = Date.UTC(2026, 10, 27, 12, 0, 0);

function ok<T>(r: { ok: true; value: T } | { ok: false; error: string }): T {
  if (!r.ok) throw new Error(r.error);
  return r.value;
}

describe("filters → LogFilter", () => {
  it("defaults to the last 24 hours and nothing else", () => {
    const f = ok(toLogFilter(DEFAULT_FILTERS, NOW));
    expect(f.sinceMs).toBe(BigInt(NOW - 24 * 3_600_000));
    expect(f.untilMs).toBe(0n);
    expect(f.model).toBe("");
    expect(f.statusMin).toBe(0);
    expect(f.statusMax).toBe(0);
    expect(f.minLatencyMs).toBe(0n);
    expect(f.maxTokens).toBe(0n);
    expect(f.stream).toBeUndefined();
    expect(f.errorsOnly).toBe(false);
    expect(f.protocol).toBe("");
    expect(f.upstreamProtocol).toBe("");
    expect(f.user).toBe("");
    expect(f.traceId).toBe("");
  });

  it("maps every field", () => {
    const f = ok(
      toLogFilter(
        {
          ...DEFAULT_FILTERS,
          range: "15m",
          model: " gpt-4o ",
          provider: "openai",
          key: "team-a",
          user: " alice@example.com ",
          traceId: " 4BF92F3577B34DA6A3CE929D0E0E4736 ",
          protocol: " anthropic ",
          upstreamProtocol: "openai-chat",
          status: "5xx",
          latencyMin: "100",
          latencyMax: "2,000",
          tokensMin: "10",
          tokensMax: "5000",
          stream: "yes",
          outcome: "interrupted",
          errorsOnly: true,
        },
        NOW,
      ),
    );
    expect(f.outcome).toBe(Outcome.INTERRUPTED);
    expect(ok(toLogFilter(DEFAULT_FILTERS, NOW)).outcome).toBe(Outcome.UNSPECIFIED);
    expect(f.sinceMs).toBe(BigInt(NOW - 15 * 60_000));
    expect(f.model).toBe("gpt-4o");
    expect(f.provider).toBe("openai");
    expect(f.key).toBe("team-a");
    expect(f.user).toBe("alice@example.com");
    expect(f.traceId).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
    expect(f.protocol).toBe("anthropic");
    expect(f.upstreamProtocol).toBe("openai-chat");
    expect([f.statusMin, f.statusMax]).toEqual([500, 599]);
    expect([f.minLatencyMs, f.maxLatencyMs]).toEqual([100n, 2000n]);
    expect([f.minTokens, f.maxTokens]).toEqual([10n, 5000n]);
    expect(f.stream).toBe(true);
    expect(f.errorsOnly).toBe(true);
    expect(ok(toLogFilter({ ...DEFAULT_FILTERS, stream: "no" }, NOW)).stream).toBe(false);
  });

  it("presets reach back from now; all time has no bound", () => {
    expect(ok(toLogFilter({ ...DEFAULT_FILTERS, range: "7d" }, NOW)).sinceMs).toBe(BigInt(NOW - 7 * 86_400_000));
    expect(ok(toLogFilter({ ...DEFAULT_FILTERS, range: "1h" }, NOW)).sinceMs).toBe(BigInt(NOW - 3_600_000));
    expect(ok(toLogFilter({ ...DEFAULT_FILTERS, range: "all" }, NOW)).sinceMs).toBe(0n);
  });

  it("a custom range is inclusive since, exclusive until", () => {
    const f = ok(toLogFilter({ ...DEFAULT_FILTERS, range: "custom", from: "2026-11-01T00:00:00.000Z", to: "2026-11-02T00:00:00.000Z" }, NOW));
    expect(f.sinceMs).toBe(BigInt(Date.UTC(2026, 10, 1)));
    expect(f.untilMs).toBe(BigInt(Date.UTC(2026, 10, 2)));
  });

  it("refuses what cannot be sent, in words", () => {
    const bad = (patch: Partial<LogFilters>) => {
      const r = toLogFilter({ ...DEFAULT_FILTERS, ...patch }, NOW);
      expect(r.ok).toBe(false);
      return r.ok ? "" : r.error;
    };
    expect(bad({ status: "abc" })).toMatch(/Status "abc"/);
    expect(bad({ latencyMin: "-1" })).toMatch(/latency must be a whole number/);
    expect(bad({ tokensMax: "1.5" })).toMatch(/tokens must be a whole number/);
    expect(bad({ latencyMin: "500", latencyMax: "100" })).toMatch(/above the maximum/);
    expect(bad({ range: "custom", from: "2026-11-02T00:00:00Z", to: "2026-11-01T00:00:00Z" })).toMatch(/before its end/);
    expect(bad({ range: "custom", from: "yesterday" })).toMatch(/not a date/);
    expect(bad({ traceId: "abc" })).toMatch(/Trace id "abc" is not a trace id/);
  });

  it("takes a trace id, or the trace id of a traceparent header", () => {
    const id = "4bf92f3577b34da6a3ce929d0e0e4736";
    expect(ok(parseTraceId(""))).toBe("");
    expect(ok(parseTraceId("  "))).toBe("");
    expect(ok(parseTraceId(id))).toBe(id);
    expect(ok(parseTraceId(` ${id.toUpperCase()} `))).toBe(id);
    expect(ok(parseTraceId(`00-${id}-00f067aa0ba902b7-01`))).toBe(id);
    for (const bad of ["0".repeat(32), id.slice(1), `${id}0`, `${id.slice(1)}g`, `00-${id}`, `00-${id}-00f067aa0ba902b7`]) {
      expect(parseTraceId(bad).ok, bad).toBe(false);
    }
  });
});

describe("status and counts", () => {
  it("parses classes, codes and ranges", () => {
    expect(parseStatus("")).toEqual({ ok: true, value: { min: 0, max: 0 } });
    expect(parseStatus("4xx")).toEqual({ ok: true, value: { min: 400, max: 499 } });
    expect(parseStatus("2XX")).toEqual({ ok: true, value: { min: 200, max: 299 } });
    expect(parseStatus("429")).toEqual({ ok: true, value: { min: 429, max: 429 } });
    expect(parseStatus("400-499")).toEqual({ ok: true, value: { min: 400, max: 499 } });
    expect(parseStatus("500..504")).toEqual({ ok: true, value: { min: 500, max: 504 } });
    expect(parseStatus("499-400").ok).toBe(false);
    expect(parseStatus("6xx").ok).toBe(false);
  });

  it("counts are whole numbers", () => {
    expect(parseCount("", "x")).toEqual({ ok: true, value: 0n });
    expect(parseCount("1_000", "x")).toEqual({ ok: true, value: 1000n });
    expect(parseCount("12e3", "x").ok).toBe(false);
  });
});

describe("ListLogsRequest and FollowLogsRequest", () => {
  it("carries paging and sorting", () => {
    const r = ok(toListLogsRequest({ ...DEFAULT_FILTERS, sort: "latency", asc: true, limit: 100, page: "tok123" }, NOW));
    expect(r.orderBy).toBe("latency");
    expect(r.ascending).toBe(true);
    expect(r.limit).toBe(100);
    expect(r.pageToken).toBe("tok123");
    expect(r.filter?.sinceMs).toBe(BigInt(NOW - 24 * 3_600_000));
  });

  it("following drops the time bounds but keeps the rest", () => {
    const r = ok(toFollowLogsRequest({ ...DEFAULT_FILTERS, range: "custom", from: "2026-11-01T00:00:00Z", to: "2026-11-02T00:00:00Z", model: "m", user: "u-42", protocol: "gemini", upstreamProtocol: "anthropic", errorsOnly: true }, NOW));
    expect(r.filter?.sinceMs).toBe(0n);
    expect(r.filter?.untilMs).toBe(0n);
    expect(r.filter?.model).toBe("m");
    expect(r.filter?.user).toBe("u-42");
    expect(r.filter?.protocol).toBe("gemini");
    expect(r.filter?.upstreamProtocol).toBe("anthropic");
    expect(r.filter?.errorsOnly).toBe(true);
  });
});

describe("URL query", () => {
  it("the defaults are an empty query", () => {
    expect(filtersToQuery(DEFAULT_FILTERS)).toBe("");
    expect(filtersFromQuery("")).toEqual(DEFAULT_FILTERS);
  });

  it("round-trips every field", () => {
    const f: LogFilters = {
      range: "custom",
      from: "2026-11-01T00:00:00.000Z",
      to: "2026-11-02T00:00:00.000Z",
      model: "gpt-4o",
      provider: "open ai",
      key: "team&a",
      user: "bob smith+1@example.com",
      traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
      protocol: "openai-responses",
      upstreamProtocol: "openai-chat",
      status: "400-499",
      latencyMin: "10",
      latencyMax: "900",
      tokensMin: "1",
      tokensMax: "2",
      stream: "no",
      outcome: "cancelled_by_client",
      errorsOnly: true,
      sort: "cost",
      asc: true,
      limit: 200,
      page: "eyJ2IjoxfQ==",
    };
    const q = filtersToQuery(f);
    expect(q).toContain("key=team%26a");
    expect(q).toContain("errors=1");
    expect(q).toContain("user=bob+smith%2B1%40example.com");
    expect(q).toContain("protocol=openai-responses");
    expect(q).toContain("upstream_protocol=openai-chat");
    expect(q).toContain("outcome=cancelled_by_client");
    expect(q).toContain("trace_id=4bf92f3577b34da6a3ce929d0e0e4736");
    expect(filtersFromQuery(q)).toEqual(f);
    expect(filtersFromQuery(`?${q}`)).toEqual(f);
  });

  it("leaves out a custom range's dates under a preset", () => {
    expect(filtersToQuery({ ...DEFAULT_FILTERS, range: "1h", from: "2026-11-01T00:00:00Z" })).toBe("range=1h");
  });

  it("ignores what it does not know", () => {
    const f = filtersFromQuery("range=2y&sort=colour&stream=maybe&limit=5000&asc=yes&errors=0&outcome=exploded");
    expect(f).toEqual(DEFAULT_FILTERS);
  });

  it("reads the protocols, trimmed, and counts each as a filter", () => {
    const f = filtersFromQuery("protocol=%20anthropic%20&upstream_protocol=gemini");
    expect([f.protocol, f.upstreamProtocol]).toEqual(["anthropic", "gemini"]);
    expect(activeFilterCount(f)).toBe(2);
    expect(activeFilterCount({ ...DEFAULT_FILTERS, upstreamProtocol: "openai" })).toBe(1);
    expect(filtersToQuery({ ...DEFAULT_FILTERS, protocol: "anthropic" })).toBe("protocol=anthropic");
  });

  it("reads the user, trimmed, and counts it as a filter", () => {
    const f = filtersFromQuery("user=%20user-7%20");
    expect(f.user).toBe("user-7");
    expect(activeFilterCount(f)).toBe(1);
    expect(activeFilterCount({ ...f, key: "team-a" })).toBe(2);
    expect(filtersToQuery({ ...DEFAULT_FILTERS, user: "user-7" })).toBe("user=user-7");
    expect(withFilters({ ...f, page: "p2" }, { user: "user-8" })).toEqual({ ...DEFAULT_FILTERS, user: "user-8" });
  });

  it("reads the trace id, trimmed, and counts it as a filter", () => {
    const f = filtersFromQuery("range=all&trace_id=%204bf92f3577b34da6a3ce929d0e0e4736%20");
    expect(f.traceId).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
    expect(activeFilterCount(f)).toBe(1);
    expect(filtersToQuery({ ...DEFAULT_FILTERS, range: "all", traceId: f.traceId })).toBe("range=all&trace_id=4bf92f3577b34da6a3ce929d0e0e4736");
    // Live tail follows the same trace.
    expect(ok(toFollowLogsRequest(f, NOW)).filter?.traceId).toBe(f.traceId);
  });

  it("a change of filter starts at the first page; paging keeps the filter", () => {
    const f = { ...DEFAULT_FILTERS, page: "p2" };
    expect(withFilters(f, { model: "m" }).page).toBe("");
    expect(withFilters(f, { page: "p3" })).toEqual({ ...DEFAULT_FILTERS, page: "p3" });
  });
});

describe("protocol choices", () => {
  it("offer every client protocol a record can carry, once", () => {
    const values = CLIENT_PROTOCOL_CHOICES.map((c) => c.value);
    expect(values).toEqual(["openai-chat", "openai-responses", "anthropic", "gemini", "openai"]);
    expect(new Set(values).size).toBe(values.length);
  });

  it("offer every provider protocol as an upstream protocol", () => {
    expect(UPSTREAM_PROTOCOL_CHOICES.map((c) => c.value)).toEqual(["openai", "openai-chat", "anthropic", "gemini"]);
    expect(UPSTREAM_PROTOCOL_CHOICES.every((c) => c.label && c.label !== c.value)).toBe(true);
  });
});
