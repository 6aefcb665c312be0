import { describe, expect, it } from "vitest";
import { isSse, parseSse, parseSseEvents, prettyBody } from "./sse";

const openaiChat = [
  'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}',
  "",
  'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"}}]}',
  "",
  'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"lo"}}]}',
  "",
  'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}',
  "",
  "data: [DONE]",
  "",
  "",
].join("\n");

const anthropic = [
  "event: message_start",
  'data: {"type":"message_start","message":{"usage":{"input_tokens":3,"output_tokens":1}}}',
  "",
  "event: content_block_start",
  'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
  "",
  ": keep-alive comment",
  "",
  "event: content_block_delta",
  'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Bon"}}',
  "",
  "event: content_block_delta",
  'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"jour"}}',
  "",
  "event: message_stop",
  'data: {"type":"message_stop"}',
  "",
].join("\r\n");

describe("SSE bodies", () => {
  it("recognises SSE by content type or first field", () => {
    expect(isSse("{}", "text/event-stream; charset=utf-8")).toBe(true);
    expect(isSse("data: {}\n\n")).toBe(true);
    expect(isSse("event: ping\n\n")).toBe(true);
    expect(isSse('{"data": 1}')).toBe(false);
  });

  it("OpenAI chat: events, text and the end marker", () => {
    const p = parseSse(openaiChat);
    expect(p.events).toHaveLength(5);
    expect(p.events[4]).toEqual({ event: "", data: "[DONE]" });
    expect(p.text).toBe("Hello");
    expect(p.done).toBe(true);
    expect(p.errors).toEqual([]);
  });

  it("Anthropic messages with CRLF and comments", () => {
    const p = parseSse(anthropic);
    expect(p.events.map((e) => e.event)).toEqual([
      "message_start",
      "content_block_start",
      "content_block_delta",
      "content_block_delta",
      "message_stop",
    ]);
    expect(p.text).toBe("Bonjour");
    expect(p.done).toBe(true);
  });

  it("OpenAI completions and Responses streams", () => {
    expect(parseSse('data: {"choices":[{"index":0,"text":"a"}]}\n\ndata: {"choices":[{"index":0,"text":"b"}]}\n\n').text).toBe("ab");
    const responses = [
      "event: response.output_text.delta",
      'data: {"type":"response.output_text.delta","delta":"Hi"}',
      "",
      "event: response.completed",
      'data: {"type":"response.completed","response":{}}',
      "",
    ].join("\n");
    const p = parseSse(responses);
    expect(p.text).toBe("Hi");
    expect(p.done).toBe(true);
  });

  it("a broken stream: no end marker, the error event's message", () => {
    const body = 'data: {"choices":[{"index":0,"delta":{"content":"tok0 "}}]}\n\ndata: {"error":{"message":"upstream stream broke","type":"server_error"}}\n\n';
    const p = parseSse(body);
    expect(p.text).toBe("tok0 ");
    expect(p.done).toBe(false);
    expect(p.errors).toEqual(["upstream stream broke"]);
  });

  it("joins multi-line data and keeps non-JSON data as text", () => {
    const e = parseSseEvents("event: note\ndata: line one\ndata: line two\n\n");
    expect(e).toEqual([{ event: "note", data: "line one\nline two" }]);
  });

  it("a truncated last event still parses what is there", () => {
    const p = parseSse('data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\ndata: {"choi');
    expect(p.text).toBe("x");
    expect(p.events).toHaveLength(2);
    expect(p.events[1]!.json).toBeUndefined();
  });
});

describe("pretty bodies", () => {
  it("indents JSON and leaves other text alone", () => {
    expect(prettyBody('{"a":1,"b":[true]}')).toEqual({ text: '{\n  "a": 1,\n  "b": [\n    true\n  ]\n}', json: true });
    expect(prettyBody('{"a":1,')).toEqual({ text: '{"a":1,', json: false });
    expect(prettyBody("plain")).toEqual({ text: "plain", json: false });
  });
});
