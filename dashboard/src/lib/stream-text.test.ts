import { describe, expect, it } from "vitest";
import { AnswerReader, protocolError, readWholeBody } from "./stream-text";

const sse = (events: (string | [string, unknown])[]) =>
  events.map((e) => (typeof e === "string" ? `data: ${e}\n\n` : `event: ${e[0]}\ndata: ${JSON.stringify(e[1])}\n\n`)).join("");

/** Feeds `body` in pieces of `size` characters; returns the texts seen after each piece and the final view. */
function feed(reader: AnswerReader, body: string, size: number) {
  const seen: string[] = [];
  for (let i = 0; i < body.length; i += size) seen.push(reader.push(body.slice(i, i + size)).text);
  return { seen, final: reader.finish() };
}

describe("AnswerReader: OpenAI chat stream", () => {
  const body = sse([
    JSON.stringify({ choices: [{ index: 0, delta: { role: "assistant", reasoning_content: "Let me think. " } }] }),
    JSON.stringify({ choices: [{ index: 0, delta: { content: "Hel" } }] }),
    JSON.stringify({ choices: [{ index: 0, delta: { content: "lo" } }, { index: 1, delta: { content: "other choice" } }] }),
    JSON.stringify({ choices: [{ index: 0, delta: {}, finish_reason: "stop" }] }),
    JSON.stringify({ choices: [], usage: { prompt_tokens: 3, completion_tokens: 2 } }),
    "[DONE]",
  ]);

  it("assembles the text as it arrives, thinking apart", () => {
    const { seen, final } = feed(new AnswerReader("openai-chat", true), body, 7);
    expect(final).toMatchObject({ text: "Hello", thinking: "Let me think. ", done: true, stopReason: "stop", error: "", events: 6 });
    // Incremental: the text grew through a partial state.
    expect(seen).toContain("Hel");
    expect(seen.every((t, i) => i === 0 || t.startsWith(seen[i - 1]!))).toBe(true);
  });

  it("reads an error event, and a stream without its end is not done", () => {
    const r = new AnswerReader("openai-chat", true);
    r.push(sse([JSON.stringify({ choices: [{ index: 0, delta: { content: "par" } }] }), JSON.stringify({ error: { message: "cancelled by an admin", type: "server_error" } })]));
    expect(r.finish()).toMatchObject({ text: "par", done: false, error: "server_error: cancelled by an admin" });
  });

  it("copes with CRLF line ends split across pieces", () => {
    const crlf = body.replace(/\n/g, "\r\n");
    expect(feed(new AnswerReader("openai-chat", true), crlf, 1).final).toMatchObject({ text: "Hello", done: true });
  });
});

describe("AnswerReader: OpenAI Responses stream", () => {
  it("takes output_text and reasoning deltas, completed ends it", () => {
    const body = sse([
      ["response.created", { type: "response.created", response: { id: "r1", status: "in_progress", error: null } }],
      ["response.reasoning_summary_text.delta", { type: "response.reasoning_summary_text.delta", delta: "Hmm." }],
      ["response.output_text.delta", { type: "response.output_text.delta", delta: "tok0 " }],
      ["response.output_text.delta", { type: "response.output_text.delta", delta: "tok1" }],
      ["response.completed", { type: "response.completed", response: { id: "r1", status: "completed" } }],
    ]);
    expect(feed(new AnswerReader("openai-responses", true), body, 13).final).toMatchObject({ text: "tok0 tok1", thinking: "Hmm.", done: true, stopReason: "completed" });
  });

  it("reports a failed response and an error event", () => {
    const failed = sse([["response.failed", { type: "response.failed", response: { status: "failed", error: { code: "server_error", message: "upstream broke" } } }]]);
    expect(feed(new AnswerReader("openai-responses", true), failed, 50).final.error).toBe("server_error: upstream broke");
    const err = sse([["error", { type: "error", code: "rate_limit", message: "slow down" }]]);
    expect(feed(new AnswerReader("openai-responses", true), err, 50).final.error).toMatch(/slow down/);
  });
});

describe("AnswerReader: Anthropic stream", () => {
  it("takes text and thinking deltas; message_stop ends it", () => {
    const body = sse([
      ["message_start", { type: "message_start", message: { usage: { input_tokens: 3 } } }],
      ["content_block_start", { type: "content_block_start", index: 0, content_block: { type: "thinking", thinking: "" } }],
      ["content_block_delta", { type: "content_block_delta", index: 0, delta: { type: "thinking_delta", thinking: "Plan." } }],
      ["content_block_delta", { type: "content_block_delta", index: 1, delta: { type: "text_delta", text: "Bon" } }],
      ["content_block_delta", { type: "content_block_delta", index: 1, delta: { type: "text_delta", text: "jour" } }],
      ["message_delta", { type: "message_delta", delta: { stop_reason: "end_turn" } }],
      ["message_stop", { type: "message_stop" }],
    ]);
    const { seen, final } = feed(new AnswerReader("anthropic", true), body, 40);
    expect(final).toMatchObject({ text: "Bonjour", thinking: "Plan.", done: true, stopReason: "end_turn" });
    expect(seen).toContain("Bon");
  });

  it("reads an error event", () => {
    const body = sse([["error", { type: "error", error: { type: "overloaded_error", message: "Overloaded" } }]]);
    expect(feed(new AnswerReader("anthropic", true), body, 100).final).toMatchObject({ error: "overloaded_error: Overloaded", done: false });
  });
});

describe("AnswerReader: Gemini stream (alt=sse)", () => {
  it("joins the parts; thought parts are thinking; finishReason ends it", () => {
    const body = sse([
      JSON.stringify({ candidates: [{ content: { role: "model", parts: [{ text: "Considering.", thought: true }] } }] }),
      JSON.stringify({ candidates: [{ content: { role: "model", parts: [{ text: "tok0 " }] } }] }),
      JSON.stringify({ candidates: [{ content: { role: "model", parts: [{ text: "tok1" }] }, finishReason: "STOP" }], usageMetadata: { promptTokenCount: 2 } }),
    ]);
    expect(feed(new AnswerReader("gemini", true), body, 9).final).toMatchObject({ text: "tok0 tok1", thinking: "Considering.", done: true, stopReason: "STOP" });
  });
});

describe("whole (non-stream) answers", () => {
  it("reads a JSON answer of each protocol", () => {
    expect(readWholeBody("openai-chat", JSON.stringify({ choices: [{ message: { role: "assistant", content: "hi" }, finish_reason: "stop" }] }))).toMatchObject({ text: "hi", stopReason: "stop", done: true });
    expect(readWholeBody("anthropic", JSON.stringify({ type: "message", content: [{ type: "thinking", thinking: "t" }, { type: "text", text: "yo" }], stop_reason: "end_turn" }))).toMatchObject({ text: "yo", thinking: "t" });
    expect(readWholeBody("gemini", JSON.stringify({ candidates: [{ content: { parts: [{ text: "g" }] }, finishReason: "STOP" }] }))).toMatchObject({ text: "g", done: true });
    expect(readWholeBody("openai-responses", JSON.stringify({ output: [{ type: "message", role: "assistant", content: [{ type: "output_text", text: "r" }] }], status: "completed" }))).toMatchObject({ text: "r" });
  });

  it("reads a JSON body handed over in pieces at finish()", () => {
    const r = new AnswerReader("openai-chat", false);
    r.push('{"choices":[{"message":{"content":"wh');
    expect(r.current.text).toBe("");
    r.push('ole"}}]}');
    expect(r.finish().text).toBe("whole");
  });
});

describe("protocolError", () => {
  it("reads each protocol's error format", () => {
    expect(protocolError(JSON.stringify({ error: { message: "model 'x' is not allowed", type: "invalid_request_error" } }))).toBe("invalid_request_error: model 'x' is not allowed");
    expect(protocolError(JSON.stringify({ type: "error", error: { type: "authentication_error", message: "invalid x-api-key" } }))).toBe("authentication_error: invalid x-api-key");
    expect(protocolError(JSON.stringify({ error: { code: 404, message: "models/x is not found", status: "NOT_FOUND" } }))).toBe("NOT_FOUND: models/x is not found");
    expect(protocolError(JSON.stringify([{ error: { code: 429, message: "quota", status: "RESOURCE_EXHAUSTED" } }]))).toBe("RESOURCE_EXHAUSTED: quota");
  });
  it("is empty for other bodies", () => {
    expect(protocolError("")).toBe("");
    expect(protocolError("upstream exploded")).toBe("");
    expect(protocolError(JSON.stringify({ choices: [], error: null }))).toBe("");
  });
});
