import { describe, expect, it } from "vitest";
import { conversationProtocol, parseJsonLenient, parseRequest, parseResponse, toConversation, type Part } from "./conversation";

const sse = (events: unknown[], named = false) =>
  events
    .map((e) => {
      const type = (e as { type?: string }).type;
      return `${named && type ? `event: ${type}\n` : ""}data: ${typeof e === "string" ? e : JSON.stringify(e)}\n\n`;
    })
    .join("");

const kinds = (parts: Part[]) => parts.map((p) => p.kind);

describe("lenient JSON", () => {
  it("parses whole JSON as it is", () => {
    expect(parseJsonLenient('{"a":[1,2]}')).toEqual({ value: { a: [1, 2] }, repaired: false });
  });

  it("keeps the text of a string cut short, and closes what is open", () => {
    expect(parseJsonLenient('{"messages":[{"role":"user","content":"Hello wor')).toEqual({
      value: { messages: [{ role: "user", content: "Hello wor" }] },
      repaired: true,
    });
  });

  it("drops a cut key, number or half escape", () => {
    expect(parseJsonLenient('{"a":"x","b":[1,2')?.value).toEqual({ a: "x", b: [1] });
    expect(parseJsonLenient('{"a":"x","ke')?.value).toEqual({ a: "x" });
    expect(parseJsonLenient('{"a":"line\\')?.value).toEqual({ a: "line" });
    expect(parseJsonLenient('{"a":"snow \\u26')?.value).toEqual({ a: "snow " });
    expect(parseJsonLenient('{"a":')?.value).toEqual({});
  });

  it("gives up on what is not JSON", () => {
    expect(parseJsonLenient("hello")).toBeUndefined();
    expect(parseJsonLenient("")).toBeUndefined();
  });
});

describe("OpenAI Chat Completions", () => {
  const request = JSON.stringify({
    model: "gpt-4o",
    messages: [
      { role: "system", content: "Be brief." },
      { role: "user", content: [{ type: "text", text: "What is in this image?" }, { type: "image_url", image_url: { url: "data:image/png;base64,AAAAAAAA" } }] },
      { role: "assistant", content: null, tool_calls: [{ id: "call_1", type: "function", function: { name: "lookup", arguments: '{"q":"cat"}' } }] },
      { role: "tool", tool_call_id: "call_1", content: "a cat" },
    ],
    tools: [{ type: "function", function: { name: "lookup", parameters: {} } }],
  });

  it("reads the system prompt, roles, images, tool calls and results", () => {
    const r = parseRequest("openai-chat", request, false);
    expect(r?.system).toEqual(["Be brief."]);
    expect(r?.tools).toEqual(["lookup"]);
    expect(r?.messages.map((m) => m.role)).toEqual(["user", "assistant", "tool"]);
    expect(kinds(r!.messages[0]!.parts)).toEqual(["text", "media"]);
    expect(r!.messages[0]!.parts[1]).toEqual({ kind: "media", label: "image: image/png, 6 B inline" });
    expect(r!.messages[1]!.parts[0]).toEqual({ kind: "tool_call", id: "call_1", name: "lookup", arguments: '{"q":"cat"}' });
    expect(r!.messages[2]!.parts[0]).toMatchObject({ kind: "tool_result", id: "call_1", content: "a cat" });
    expect(r?.partial).toBe(false);
  });

  it("reads a whole answer", () => {
    const body = JSON.stringify({ choices: [{ index: 0, message: { role: "assistant", content: "It is a cat.", reasoning_content: "Looking…" }, finish_reason: "stop" }] });
    const r = parseResponse("openai-chat", body, false);
    expect(r?.stopReason).toBe("stop");
    expect(r?.messages[0]?.parts).toEqual([
      { kind: "thinking", text: "Looking…" },
      { kind: "text", text: "It is a cat." },
    ]);
  });

  it("reassembles a stream: text, reasoning and tool-call argument deltas", () => {
    const body = sse([
      { choices: [{ index: 0, delta: { role: "assistant", reasoning_content: "Hm" } }] },
      { choices: [{ index: 0, delta: { reasoning_content: "m." } }] },
      { choices: [{ index: 0, delta: { content: "tok0 " } }] },
      { choices: [{ index: 0, delta: { content: "tok1" } }] },
      { choices: [{ index: 1, delta: { content: "other choice" } }] },
      { choices: [{ index: 0, delta: { tool_calls: [{ index: 0, id: "c1", function: { name: "f", arguments: '{"a"' } }] } }] },
      { choices: [{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: ":1}" } }] } }] },
      { choices: [{ index: 0, delta: {}, finish_reason: "tool_calls" }] },
      "[DONE]",
    ]);
    const r = parseResponse("openai-chat", body, false);
    expect(r?.partial).toBe(false);
    expect(r?.stopReason).toBe("tool_calls");
    expect(r?.messages[0]?.parts).toEqual([
      { kind: "thinking", text: "Hmm." },
      { kind: "text", text: "tok0 tok1" },
      { kind: "tool_call", id: "c1", name: "f", arguments: '{"a":1}' },
    ]);
  });

  it("marks a stream cut short, keeping what came", () => {
    const body = sse([{ choices: [{ index: 0, delta: { content: "Once upon" } }] }]) + 'data: {"choices":[{"ind';
    const r = parseResponse("openai-chat", body, true);
    expect(r?.partial).toBe(true);
    expect(r?.messages[0]?.parts).toEqual([{ kind: "text", text: "Once upon" }]);
  });

  it("reads a truncated request body up to the cut", () => {
    const r = parseRequest("openai-chat", request.slice(0, 120), true);
    expect(r?.partial).toBe(true);
    expect(r?.system).toEqual(["Be brief."]);
    expect(r?.messages[0]?.role).toBe("user");
  });

  it("shows an error answer", () => {
    const r = parseResponse("openai-chat", JSON.stringify({ error: { message: "upstream is down", type: "server_error" } }), false);
    expect(r?.error).toBe("upstream is down");
    expect(r?.messages).toEqual([]);
  });
});

describe("OpenAI Responses", () => {
  it("reads instructions, a string input, and items", () => {
    const r = parseRequest(
      "openai-responses",
      JSON.stringify({
        instructions: "You are terse.",
        input: [
          { role: "developer", content: "Use tools." },
          { role: "user", content: [{ type: "input_text", text: "Weather?" }, { type: "input_image", image_url: "https://example.com/a.png" }] },
          { type: "function_call", call_id: "fc1", name: "weather", arguments: '{"city":"Paris"}' },
          { type: "function_call_output", call_id: "fc1", output: "sunny" },
        ],
        tools: [{ type: "function", name: "weather" }],
      }),
      false,
    );
    expect(r?.system).toEqual(["You are terse.", "Use tools."]);
    expect(r?.tools).toEqual(["weather"]);
    expect(r?.messages.map((m) => m.role)).toEqual(["user", "assistant", "tool"]);
    expect(r!.messages[0]!.parts).toEqual([
      { kind: "text", text: "Weather?" },
      { kind: "media", label: "image: https://example.com/a.png" },
    ]);
    expect(r!.messages[1]!.parts[0]).toMatchObject({ kind: "tool_call", id: "fc1", name: "weather" });
    expect(r!.messages[2]!.parts[0]).toMatchObject({ kind: "tool_result", id: "fc1", content: "sunny" });
    expect(parseRequest("openai-responses", '{"input":"hi"}', false)?.messages).toEqual([{ role: "user", parts: [{ kind: "text", text: "hi" }] }]);
  });

  it("reads a whole answer with reasoning", () => {
    const r = parseResponse(
      "openai-responses",
      JSON.stringify({
        status: "completed",
        output: [
          { type: "reasoning", summary: [{ type: "summary_text", text: "Thinking it over" }] },
          { type: "message", role: "assistant", content: [{ type: "output_text", text: "Done." }] },
        ],
      }),
      false,
    );
    expect(r?.stopReason).toBe("completed");
    expect(r?.messages).toEqual([
      {
        role: "assistant",
        parts: [
          { kind: "thinking", text: "Thinking it over" },
          { kind: "text", text: "Done." },
        ],
      },
    ]);
  });

  it("reassembles a stream from its deltas when it has no completed event", () => {
    const body = sse(
      [
        { type: "response.created", response: { status: "in_progress" } },
        { type: "response.output_item.added", output_index: 0, item: { type: "message", role: "assistant", content: [] } },
        { type: "response.output_text.delta", output_index: 0, delta: "Hel" },
        { type: "response.output_text.delta", output_index: 0, delta: "lo" },
        { type: "response.output_item.added", output_index: 1, item: { type: "function_call", call_id: "c9", name: "f", arguments: "" } },
        { type: "response.function_call_arguments.delta", output_index: 1, delta: '{"x":' },
        { type: "response.function_call_arguments.delta", output_index: 1, delta: "2}" },
      ],
      true,
    );
    const r = parseResponse("openai-responses", body, false);
    expect(r?.partial).toBe(true);
    expect(r?.messages[0]?.parts).toEqual([
      { kind: "text", text: "Hello" },
      { kind: "tool_call", id: "c9", name: "f", arguments: '{"x":2}' },
    ]);
  });

  it("takes the completed event's output when there is one", () => {
    const body = sse([
      { type: "response.output_text.delta", output_index: 0, delta: "partial" },
      { type: "response.completed", response: { status: "completed", output: [{ type: "message", role: "assistant", content: [{ type: "output_text", text: "whole" }] }] } },
    ]);
    const r = parseResponse("openai-responses", body, false);
    expect(r?.partial).toBe(false);
    expect(r?.messages[0]?.parts).toEqual([{ kind: "text", text: "whole" }]);
  });
});

describe("Anthropic Messages", () => {
  it("reads the system blocks, thinking, tool use and tool results, images", () => {
    const r = parseRequest(
      "anthropic",
      JSON.stringify({
        system: [{ type: "text", text: "Be careful." }],
        messages: [
          { role: "user", content: [{ type: "image", source: { type: "base64", media_type: "image/jpeg", data: "AAAA" } }, { type: "text", text: "Describe" }] },
          {
            role: "assistant",
            content: [
              { type: "thinking", thinking: "Let me see", signature: "sig" },
              { type: "tool_use", id: "tu1", name: "zoom", input: { level: 2 } },
            ],
          },
          { role: "user", content: [{ type: "tool_result", tool_use_id: "tu1", content: [{ type: "text", text: "zoomed" }], is_error: true }] },
        ],
        tools: [{ name: "zoom", input_schema: {} }],
      }),
      false,
    );
    expect(r?.system).toEqual(["Be careful."]);
    expect(r?.tools).toEqual(["zoom"]);
    expect(r?.messages.map((m) => m.role)).toEqual(["user", "assistant", "tool"]);
    expect(r!.messages[0]!.parts[0]).toEqual({ kind: "media", label: "image/jpeg: 3 B inline" });
    expect(r!.messages[1]!.parts).toEqual([
      { kind: "thinking", text: "Let me see" },
      { kind: "tool_call", id: "tu1", name: "zoom", arguments: '{"level":2}' },
    ]);
    expect(r!.messages[2]!.parts[0]).toEqual({ kind: "tool_result", id: "tu1", name: "", content: "zoomed", isError: true });
    expect(parseRequest("anthropic", '{"system":"Hi","messages":[{"role":"user","content":"Yo"}]}', false)?.system).toEqual(["Hi"]);
  });

  it("reads a whole answer, and an error", () => {
    const r = parseResponse("anthropic", JSON.stringify({ type: "message", role: "assistant", content: [{ type: "text", text: "Sure." }], stop_reason: "end_turn" }), false);
    expect(r?.stopReason).toBe("end_turn");
    expect(r?.messages[0]?.parts).toEqual([{ kind: "text", text: "Sure." }]);
    const e = parseResponse("anthropic", JSON.stringify({ type: "error", error: { type: "overloaded_error", message: "Overloaded" } }), false);
    expect(e?.error).toBe("Overloaded");
  });

  it("reassembles a stream: thinking, text, tool input JSON", () => {
    const body = sse(
      [
        { type: "message_start", message: { role: "assistant", content: [] } },
        { type: "content_block_start", index: 0, content_block: { type: "thinking", thinking: "" } },
        { type: "content_block_delta", index: 0, delta: { type: "thinking_delta", thinking: "Plan: " } },
        { type: "content_block_delta", index: 0, delta: { type: "thinking_delta", thinking: "call zoom" } },
        { type: "content_block_delta", index: 0, delta: { type: "signature_delta", signature: "x" } },
        { type: "content_block_stop", index: 0 },
        { type: "content_block_start", index: 1, content_block: { type: "text", text: "" } },
        { type: "content_block_delta", index: 1, delta: { type: "text_delta", text: "tok0 " } },
        { type: "content_block_delta", index: 1, delta: { type: "text_delta", text: "tok1" } },
        { type: "content_block_start", index: 2, content_block: { type: "tool_use", id: "t1", name: "zoom", input: {} } },
        { type: "content_block_delta", index: 2, delta: { type: "input_json_delta", partial_json: '{"lev' } },
        { type: "content_block_delta", index: 2, delta: { type: "input_json_delta", partial_json: 'el":3}' } },
        { type: "message_delta", delta: { stop_reason: "tool_use" } },
        { type: "message_stop" },
      ],
      true,
    );
    const r = parseResponse("anthropic", body, false);
    expect(r?.partial).toBe(false);
    expect(r?.stopReason).toBe("tool_use");
    expect(r?.messages[0]?.parts).toEqual([
      { kind: "thinking", text: "Plan: call zoom" },
      { kind: "text", text: "tok0 tok1" },
      { kind: "tool_call", id: "t1", name: "zoom", arguments: '{"level":3}' },
    ]);
  });

  it("a stream ended by an error event, or cut, is partial", () => {
    const body = sse(
      [
        { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
        { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "Half" } },
        { type: "error", error: { type: "cancelled", message: "the request was cancelled by an admin" } },
      ],
      true,
    );
    const r = parseResponse("anthropic", body, false);
    expect(r?.partial).toBe(true);
    expect(r?.error).toBe("the request was cancelled by an admin");
    expect(r?.messages[0]?.parts).toEqual([{ kind: "text", text: "Half" }]);
  });
});

describe("Gemini", () => {
  const request = JSON.stringify({
    systemInstruction: { parts: [{ text: "Answer in French." }] },
    contents: [
      { role: "user", parts: [{ text: "Weather?" }, { inlineData: { mimeType: "image/webp", data: "AAAA" } }] },
      { role: "model", parts: [{ functionCall: { name: "weather", args: { city: "Paris" } } }] },
      { role: "user", parts: [{ functionResponse: { name: "weather", response: { sky: "clear" } } }] },
    ],
    tools: [{ functionDeclarations: [{ name: "weather" }] }],
  });

  it("reads the system instruction, roles, inline data, function calls and responses", () => {
    const r = parseRequest("gemini", request, false);
    expect(r?.system).toEqual(["Answer in French."]);
    expect(r?.tools).toEqual(["weather"]);
    expect(r?.messages.map((m) => m.role)).toEqual(["user", "assistant", "tool"]);
    expect(r!.messages[0]!.parts[1]).toEqual({ kind: "media", label: "image/webp: 3 B inline" });
    expect(r!.messages[1]!.parts[0]).toEqual({ kind: "tool_call", id: "", name: "weather", arguments: '{"city":"Paris"}' });
    expect(r!.messages[2]!.parts[0]).toMatchObject({ kind: "tool_result", name: "weather", content: '{"sky":"clear"}' });
  });

  it("takes snake_case too", () => {
    const r = parseRequest("gemini", '{"system_instruction":{"parts":[{"text":"S"}]},"contents":[{"role":"user","parts":[{"inline_data":{"mime_type":"audio/wav","data":""}}]}]}', false);
    expect(r?.system).toEqual(["S"]);
    expect(r?.messages[0]?.parts[0]).toEqual({ kind: "media", label: "audio/wav: 0 B inline" });
  });

  it("reads a whole answer with thoughts", () => {
    const r = parseResponse(
      "gemini",
      JSON.stringify({ candidates: [{ content: { role: "model", parts: [{ text: "Hmm", thought: true }, { text: "Il fait beau." }] }, finishReason: "STOP" }] }),
      false,
    );
    expect(r?.stopReason).toBe("STOP");
    expect(r?.messages[0]?.parts).toEqual([
      { kind: "thinking", text: "Hmm" },
      { kind: "text", text: "Il fait beau." },
    ]);
  });

  it("reassembles an SSE stream and a JSON-array stream, even cut", () => {
    const chunks = [
      { candidates: [{ content: { role: "model", parts: [{ text: "Il " }] } }] },
      { candidates: [{ content: { role: "model", parts: [{ text: "fait beau." }] }, finishReason: "STOP" }] },
    ];
    const a = parseResponse("gemini", sse(chunks), false);
    expect(a?.partial).toBe(false);
    expect(a?.messages[0]?.parts).toEqual([{ kind: "text", text: "Il fait beau." }]);
    const b = parseResponse("gemini", JSON.stringify(chunks), false);
    expect(b?.messages[0]?.parts).toEqual([{ kind: "text", text: "Il fait beau." }]);
    const cut = JSON.stringify(chunks).slice(0, 80);
    const c = parseResponse("gemini", cut, true);
    expect(c?.partial).toBe(true);
    expect(c?.messages[0]?.parts[0]).toMatchObject({ kind: "text" });
  });
});

describe("the record's conversation", () => {
  it("knows the protocols, and old 'openai' records by their path", () => {
    expect(conversationProtocol("openai", "/v1/chat/completions")).toBe("openai-chat");
    expect(conversationProtocol("openai", "/v1/responses")).toBe("openai-responses");
    expect(conversationProtocol("openai", "/v1/embeddings")).toBeUndefined();
    expect(conversationProtocol("")).toBeUndefined();
  });

  it("gives undefined for anything it cannot read, and never throws", () => {
    const base = { protocol: "anthropic", requestBodyTruncated: false, responseBodyTruncated: false };
    expect(toConversation({ ...base, requestBody: "", responseBody: "" })).toBeUndefined();
    expect(toConversation({ ...base, requestBody: "not json", responseBody: "<html>" })).toBeUndefined();
    expect(toConversation({ ...base, requestBody: "[1,2]", responseBody: "null" })).toBeUndefined();
    expect(toConversation({ ...base, requestBody: '{"messages":"odd"}', responseBody: '{"content":7}' })).toBeUndefined();
    for (const protocol of ["openai-chat", "openai-responses", "anthropic", "gemini"]) {
      for (const body of ['{"messages":[null,1,"x",{"role":7,"content":{"a":1}}]}', '{"input":[{"type":9}],"contents":[{"parts":"x"}]}', "data: {}\n\n", "data: [1]\n\n"]) {
        expect(() => toConversation({ ...base, protocol, requestBody: body, responseBody: body })).not.toThrow();
      }
    }
  });

  it("puts the request and the response together", () => {
    const c = toConversation({
      protocol: "openai-chat",
      requestBody: '{"messages":[{"role":"user","content":"hi"}]}',
      requestBodyTruncated: false,
      responseBody: '{"choices":[{"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}]}',
      responseBodyTruncated: false,
    });
    expect(c?.request?.messages[0]?.parts).toEqual([{ kind: "text", text: "hi" }]);
    expect(c?.response?.messages[0]?.parts).toEqual([{ kind: "text", text: "hello" }]);
  });
});
