import { describe, expect, it } from "vitest";
import {
  CLIENT_APIS,
  maxTokensUpdate,
  MODEL_TYPES,
  modelTypeOf,
  modelTypeUpdate,
  parseMaxTokens,
  PROTOCOLS,
  protocolChoice,
  servingBadge,
  TRANSLATIONS,
  translationOf,
} from "./protocols";

describe("choices", () => {
  it("names every provider protocol the control plane accepts", () => {
    expect(PROTOCOLS.map((p) => p.value)).toEqual(["openai", "openai-chat", "anthropic", "gemini"]);
    expect(protocolChoice("gemini").baseUrl).toBe("https://generativelanguage.googleapis.com/v1beta");
    expect(protocolChoice("vertex")).toEqual({ value: "vertex", label: "vertex", hint: "", baseUrl: "" });
  });
  it("names every client API route explain knows", () => {
    expect(CLIENT_APIS.map((a) => a.value)).toEqual([
      "chat",
      "responses",
      "messages",
      "gemini",
      "embeddings",
      "completions",
      "count-tokens",
      "gemini-count-tokens",
      "speech",
      "transcription",
      "image",
    ]);
  });
  it("reads an empty translation mode as strict", () => {
    expect(TRANSLATIONS.map((t) => t.value)).toEqual(["strict", "lenient"]);
    expect(translationOf("")).toBe("strict");
    expect(translationOf("lenient")).toBe("lenient");
  });
  it("names every model type the control plane accepts, chat first, and reads empty as chat", () => {
    expect(MODEL_TYPES.map((t) => t.value)).toEqual(["chat", "embedding", "speech", "transcription", "image"]);
    for (const t of MODEL_TYPES) expect(t.hint).not.toBe("");
    expect(modelTypeOf("")).toBe("chat");
    expect(modelTypeOf("embedding")).toBe("embedding");
  });
});

describe("model type update", () => {
  it("sends the type only when the form changed it", () => {
    expect(modelTypeUpdate("chat", "")).toEqual({});
    expect(modelTypeUpdate("chat", "chat")).toEqual({});
    expect(modelTypeUpdate("embedding", "embedding")).toEqual({});
    expect(modelTypeUpdate("embedding", "")).toEqual({ type: "embedding" });
    expect(modelTypeUpdate("chat", "image")).toEqual({ type: "chat" });
  });
});

describe("default max tokens", () => {
  it("parses whole numbers and empty", () => {
    expect(parseMaxTokens("")).toBeUndefined();
    expect(parseMaxTokens(" 4096 ")).toBe(4096);
    for (const bad of ["0", "-1", "1.5", "many", "4294967296"]) expect(() => parseMaxTokens(bad)).toThrow(/max tokens/);
  });
  it("clears a stored value only when the field is emptied", () => {
    expect(maxTokensUpdate("", 4096)).toEqual({ defaultMaxTokens: undefined, clearDefaultMaxTokens: true });
    expect(maxTokensUpdate("", undefined)).toEqual({ defaultMaxTokens: undefined, clearDefaultMaxTokens: false });
    expect(maxTokensUpdate("8192", 4096)).toEqual({ defaultMaxTokens: 8192, clearDefaultMaxTokens: false });
  });
});

describe("serving", () => {
  it("shortens translations and keeps the rest", () => {
    expect(servingBadge("translated from anthropic to openai-chat")).toEqual({ text: "anthropic → openai-chat", translated: true });
    expect(servingBadge("passes through")).toEqual({ text: "passes through", translated: false });
    expect(servingBadge("")).toEqual({ text: "–", translated: false });
  });
});
