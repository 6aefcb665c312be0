import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { Outcome, RequestLogSchema } from "@/gen/llmgw/v1/logs_pb";
import { OUTCOMES, mediaRows, outcomeChoice, outcomeOfName, promptTokens, protocolPair, stopReasonHint, totalTokens, upstreamBodyNote, usageRows } from "./log-fields";

describe("protocol pair", () => {
  it("shows client→upstream, or the client's alone", () => {
    expect(protocolPair(create(RequestLogSchema, { protocol: "anthropic", upstreamProtocol: "openai-chat" }))).toBe("anthropic→openai-chat");
    expect(protocolPair(create(RequestLogSchema, { protocol: "openai-chat", upstreamProtocol: "openai" }))).toBe("openai-chat→openai");
    expect(protocolPair(create(RequestLogSchema, { protocol: "gemini" }))).toBe("gemini");
  });
});

describe("normalized usage", () => {
  const r = create(RequestLogSchema, {
    inputTokens: 100n,
    cacheReadTokens: 2000n,
    cacheCreationTokens: 300n,
    outputTokens: 40n,
    reasoningTokens: 25n,
  });
  it("lists every kind, in the order cost adds them", () => {
    expect(usageRows(r).map((x) => [x.label, x.value])).toEqual([
      ["Input (uncached)", 100n],
      ["Cache read", 2000n],
      ["Cache write", 300n],
      ["Output", 40n],
      ["Reasoning", 25n],
    ]);
  });
  it("adds the prompt's parts, and never reasoning to output", () => {
    expect(promptTokens(r)).toBe(2400n);
    expect(totalTokens(r)).toBe(2440n);
  });
});

describe("media quantities", () => {
  it("lists only those a request has", () => {
    expect(mediaRows(create(RequestLogSchema, {}))).toEqual([]);
    // A duration that could not be measured says so, with no seconds.
    expect(mediaRows(create(RequestLogSchema, { audioSource: "unknown" }))).toEqual([
      { label: "Audio seconds", value: "unknown" },
    ]);
    const r = create(RequestLogSchema, { audioMilliseconds: 1500n, audioSource: "measured", images: 2, imageSize: "1024x1024", imageQuality: "high", characters: 12n });
    expect(mediaRows(r).map((x) => [x.label, x.value])).toEqual([
      ["Audio", "1.500 s"],
      ["Audio seconds", "measured"],
      ["Characters", "12"],
      ["Images", "2"],
      ["Image size", "1024x1024"],
      ["Image quality", "high"],
    ]);
  });
});

describe("upstream body", () => {
  it("says why there is none", () => {
    expect(upstreamBodyNote(create(RequestLogSchema, { requestBody: "{}", upstreamRequestBody: "{\"a\":1}" }))).toBe("");
    expect(upstreamBodyNote(create(RequestLogSchema, { requestBody: "{}" }))).toMatch(/unchanged/);
    expect(upstreamBodyNote(create(RequestLogSchema, { requestBody: "{}", translated: true }))).toBe("Not recorded.");
    expect(upstreamBodyNote(create(RequestLogSchema, {}))).toMatch(/body logging is off/);
  });
});

describe("outcomes", () => {
  it("name every outcome but unspecified, once, as the API does", () => {
    expect(OUTCOMES.map((o) => o.name)).toEqual([
      "ok",
      "upstream_error",
      "interrupted",
      "timeout",
      "cancelled_by_client",
      "cancelled_by_admin",
      "refused",
    ]);
    for (const o of OUTCOMES) expect(outcomeOfName(o.name)).toBe(o.value);
    expect(new Set(OUTCOMES.map((o) => o.value)).size).toBe(Object.keys(Outcome).length / 2 - 1);
  });
  it("an old record has none; an unknown name is none", () => {
    expect(outcomeChoice(Outcome.UNSPECIFIED)).toBeUndefined();
    expect(outcomeChoice(Outcome.INTERRUPTED)?.label).toBe("Interrupted");
    expect(outcomeOfName("nope")).toBe(Outcome.UNSPECIFIED);
    expect(outcomeOfName("")).toBe(Outcome.UNSPECIFIED);
  });
});

describe("stop reason", () => {
  it("is the upstream's own word; a translated client got the nearest", () => {
    const translated = create(RequestLogSchema, { stopReason: "pause_turn", upstreamProtocol: "anthropic", translated: true });
    expect(stopReasonHint(translated)).toBe("Why the upstream (anthropic) stopped, as it said it. The client got the nearest reason its protocol has.");
    const passed = create(RequestLogSchema, { stopReason: "MAX_TOKENS", upstreamProtocol: "gemini" });
    expect(stopReasonHint(passed)).toBe("Why the upstream (gemini) stopped, as it said it.");
    expect(stopReasonHint(create(RequestLogSchema, {}))).toBe("");
  });
});
