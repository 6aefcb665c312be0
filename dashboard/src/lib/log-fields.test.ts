import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { RequestLogSchema } from "@/gen/llmgw/v1/logs_pb";
import { promptTokens, protocolPair, totalTokens, upstreamBodyNote, usageRows } from "./log-fields";

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

describe("upstream body", () => {
  it("says why there is none", () => {
    expect(upstreamBodyNote(create(RequestLogSchema, { requestBody: "{}", upstreamRequestBody: "{\"a\":1}" }))).toBe("");
    expect(upstreamBodyNote(create(RequestLogSchema, { requestBody: "{}" }))).toMatch(/unchanged/);
    expect(upstreamBodyNote(create(RequestLogSchema, { requestBody: "{}", translated: true }))).toBe("Not recorded.");
    expect(upstreamBodyNote(create(RequestLogSchema, {}))).toMatch(/body logging is off/);
  });
});
