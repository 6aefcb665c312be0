import { describe, expect, it } from "vitest";
import { ANTHROPIC_DEFAULT_MAX_TOKENS, buildPlaygroundRequest, type PlaygroundInput, parseParams, playgroundChoice, turnsProblem } from "./playground";

const base: PlaygroundInput = {
  protocol: "openai-chat",
  model: "gpt-x",
  system: "Be brief.",
  turns: [
    { role: "user", text: "Hi" },
    { role: "assistant", text: "Hello!" },
    { role: "user", text: "Name a colour" },
  ],
  temperature: 0.5,
  topP: 0.9,
  maxTokens: 64,
  stream: true,
};

const body = (i: PlaygroundInput) => JSON.parse(buildPlaygroundRequest(i).body);

describe("buildPlaygroundRequest: OpenAI chat", () => {
  it("puts the system prompt first in messages and asks for usage in a stream", () => {
    const r = buildPlaygroundRequest(base);
    expect(r.path).toBe("/v1/chat/completions");
    expect(r.headers).toEqual({});
    expect(JSON.parse(r.body)).toEqual({
      model: "gpt-x",
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "Hi" },
        { role: "assistant", content: "Hello!" },
        { role: "user", content: "Name a colour" },
      ],
      temperature: 0.5,
      top_p: 0.9,
      max_completion_tokens: 64,
      stream: true,
      stream_options: { include_usage: true },
    });
  });

  it("leaves out what is not set, and stream_options when not streaming", () => {
    const b = body({ ...base, system: "  ", temperature: undefined, topP: undefined, maxTokens: undefined, stream: false });
    expect(b).toEqual({ model: "gpt-x", messages: base.turns.map((t) => ({ role: t.role, content: t.text })), stream: false });
  });
});

describe("buildPlaygroundRequest: OpenAI Responses", () => {
  it("sends instructions and input items, assistant turns as output_text", () => {
    const r = buildPlaygroundRequest({ ...base, protocol: "openai-responses" });
    expect(r.path).toBe("/v1/responses");
    expect(JSON.parse(r.body)).toEqual({
      model: "gpt-x",
      instructions: "Be brief.",
      input: [
        { type: "message", role: "user", content: [{ type: "input_text", text: "Hi" }] },
        { type: "message", role: "assistant", content: [{ type: "output_text", text: "Hello!" }] },
        { type: "message", role: "user", content: [{ type: "input_text", text: "Name a colour" }] },
      ],
      temperature: 0.5,
      top_p: 0.9,
      max_output_tokens: 64,
      stream: true,
    });
  });

  it("has no instructions without a system prompt", () => {
    expect(body({ ...base, protocol: "openai-responses", system: "" }).instructions).toBeUndefined();
  });
});

describe("buildPlaygroundRequest: Anthropic Messages", () => {
  it("has a top-level system, max_tokens and the version header", () => {
    const r = buildPlaygroundRequest({ ...base, protocol: "anthropic" });
    expect(r.path).toBe("/v1/messages");
    expect(r.headers).toEqual({ "anthropic-version": "2023-06-01" });
    expect(JSON.parse(r.body)).toEqual({
      model: "gpt-x",
      max_tokens: 64,
      system: "Be brief.",
      messages: [
        { role: "user", content: "Hi" },
        { role: "assistant", content: "Hello!" },
        { role: "user", content: "Name a colour" },
      ],
      temperature: 0.5,
      top_p: 0.9,
      stream: true,
    });
  });

  it("defaults max_tokens (required by the API)", () => {
    const b = body({ ...base, protocol: "anthropic", maxTokens: undefined, system: "", stream: false });
    expect(b.max_tokens).toBe(ANTHROPIC_DEFAULT_MAX_TOKENS);
    expect(b.system).toBeUndefined();
    expect(b.stream).toBe(false);
  });
});

describe("buildPlaygroundRequest: Gemini", () => {
  it("streams with alt=sse, roles user/model, systemInstruction and generationConfig", () => {
    const r = buildPlaygroundRequest({ ...base, protocol: "gemini", model: "gem/1 x" });
    expect(r.path).toBe("/v1beta/models/gem%2F1%20x:streamGenerateContent?alt=sse");
    expect(JSON.parse(r.body)).toEqual({
      systemInstruction: { parts: [{ text: "Be brief." }] },
      contents: [
        { role: "user", parts: [{ text: "Hi" }] },
        { role: "model", parts: [{ text: "Hello!" }] },
        { role: "user", parts: [{ text: "Name a colour" }] },
      ],
      generationConfig: { temperature: 0.5, topP: 0.9, maxOutputTokens: 64 },
    });
    expect(JSON.parse(r.body).model).toBeUndefined();
  });

  it("uses generateContent without a stream, and no empty generationConfig", () => {
    const r = buildPlaygroundRequest({ ...base, protocol: "gemini", stream: false, temperature: undefined, topP: undefined, maxTokens: undefined, system: "" });
    expect(r.path).toBe("/v1beta/models/gpt-x:generateContent");
    expect(JSON.parse(r.body)).toEqual({ contents: expect.any(Array) });
  });
});

describe("parseParams", () => {
  it("reads numbers and leaves empty fields out", () => {
    expect(parseParams({ temperature: "0.7", topP: "", maxTokens: " 200 " })).toEqual({ ok: true, value: { temperature: 0.7, topP: undefined, maxTokens: 200 } });
  });
  it("says what is wrong", () => {
    expect(parseParams({ temperature: "3", topP: "", maxTokens: "" })).toEqual({ ok: false, error: "Temperature must be a number from 0 to 2, or empty." });
    expect(parseParams({ temperature: "", topP: "x", maxTokens: "" })).toMatchObject({ ok: false, error: /Top P/ });
    expect(parseParams({ temperature: "", topP: "", maxTokens: "1.5" })).toMatchObject({ ok: false, error: /whole number/ });
    expect(parseParams({ temperature: "", topP: "", maxTokens: "0" })).toMatchObject({ ok: false, error: /Max tokens/ });
  });
});

describe("turnsProblem", () => {
  it("wants a non-empty conversation ending with the user", () => {
    expect(turnsProblem([])).toMatch(/Add a message/);
    expect(turnsProblem([{ role: "user", text: " " }])).toMatch(/empty/);
    expect(turnsProblem([{ role: "user", text: "a" }, { role: "assistant", text: "b" }])).toMatch(/user's/);
    expect(turnsProblem([{ role: "user", text: "a" }])).toBe("");
  });
});

describe("playgroundChoice", () => {
  const models = ["m-first", "m-other"];
  const keys = ["k-first-only", "k-both"];
  // k-first-only may use m-first only; k-both may use both.
  const allows = (k: string, m: string) => k === "k-both" || m === "m-first";
  const none = { model: "", key: "" };

  it("is empty until the lists are in", () => {
    expect(playgroundChoice(none, [], [], allows)).toEqual({ model: "", key: "" });
    expect(playgroundChoice({ model: "m-other", key: "k-both" }, [], [], allows)).toEqual({ model: "", key: "" });
  });

  it("defaults to the first model and the first key that may use it", () => {
    expect(playgroundChoice(none, models, keys, allows)).toEqual({ model: "m-first", key: "k-first-only" });
  });

  it("keeps a model picked while the lists are still loading, once they arrive", () => {
    // The pick came before the lists: it is not replaced by the first model.
    expect(playgroundChoice({ model: "m-other", key: "" }, models, keys, allows)).toEqual({ model: "m-other", key: "k-both" });
  });

  it("makes the key follow the model until a key is picked", () => {
    expect(playgroundChoice({ model: "m-other", key: "" }, models, keys, allows).key).toBe("k-both");
    expect(playgroundChoice({ model: "m-first", key: "" }, models, keys, allows).key).toBe("k-first-only");
    // Picked by hand: it stays, even when it may not use the model (the form says so).
    expect(playgroundChoice({ model: "m-other", key: "k-first-only" }, models, keys, allows)).toEqual({ model: "m-other", key: "k-first-only" });
  });

  it("falls back to the defaults when a pick leaves its list", () => {
    expect(playgroundChoice({ model: "m-deleted", key: "k-revoked" }, models, keys, allows)).toEqual({ model: "m-first", key: "k-first-only" });
  });

  it("takes the first key when none may use the model", () => {
    expect(playgroundChoice(none, ["m-x"], ["k-a", "k-b"], () => false)).toEqual({ model: "m-x", key: "k-a" });
  });
});
