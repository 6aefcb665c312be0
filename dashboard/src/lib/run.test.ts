import { describe, expect, it } from "vitest";
import { RunReader, routeHeaders, runOk, runProblem } from "./run";

const enc = new TextEncoder();
const head = (status: number, contentType: string, extra: Record<string, string> = {}) => ({
  part: {
    case: "head" as const,
    value: { status, requestId: "req-1", nodeId: "dp-1", headers: { "content-type": contentType, ...extra }, path: "/v1/messages", key: "k" } as never,
  },
});
const data = (s: string) => ({ part: { case: "data" as const, value: enc.encode(s) } });
const end = (ttfb: number, latency: number, error = "") => ({ part: { case: "end" as const, value: { ttfbMs: BigInt(ttfb), latencyMs: BigInt(latency), error } as never } });

describe("RunReader", () => {
  it("reads a streamed answer chunk by chunk, then the end", () => {
    const r = new RunReader("anthropic");
    let v = r.apply(head(200, "text/event-stream", { "x-llmgw-request-id": "req-1" }));
    expect(v.sse).toBe(true);
    expect(v.head?.requestId).toBe("req-1");
    v = r.apply(data('event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"type":"text_delta","text":"tok0 "}}\n\n'));
    expect(v.answer.text).toBe("tok0 ");
    // A multi-byte character split across two chunks.
    const bytes = enc.encode('event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"type":"text_delta","text":"é"}}\n\n');
    const cut = bytes.indexOf(0xc3) + 1;
    r.apply({ part: { case: "data", value: bytes.slice(0, cut) } });
    v = r.apply({ part: { case: "data", value: bytes.slice(cut) } });
    expect(v.answer.text).toBe("tok0 é");
    v = r.apply(data('event: message_stop\ndata: {"type":"message_stop"}\n\n'));
    v = r.apply(end(12, 40));
    expect(v.answer.done).toBe(true);
    expect(Number(v.end?.ttfbMs)).toBe(12);
    expect(Number(v.end?.latencyMs)).toBe(40);
    expect(runOk(v)).toBe(true);
    expect(runProblem(v)).toBe("");
    expect(v.bytes).toBeGreaterThan(0);
  });

  it("reads a JSON error answer when it ends", () => {
    const r = new RunReader("openai-chat");
    r.apply(head(403, "application/json"));
    r.apply(data('{"error":{"message":"key may not use model x","type":"permission_error"}}'));
    const v = r.apply(end(3, 3));
    expect(runOk(v)).toBe(false);
    expect(v.answer.error).toBe("permission_error: key may not use model x");
    expect(runProblem(v)).toBe("The data plane answered HTTP 403: permission_error: key may not use model x");
  });

  it("says when the answer broke off, and close() reads what arrived without an end", () => {
    const r = new RunReader("openai-chat");
    r.apply(head(200, "text/event-stream"));
    r.apply(data('data: {"choices":[{"index":0,"delta":{"content":"half"}}]}\n\n'));
    const closed = r.close();
    expect(closed.answer).toMatchObject({ text: "half", done: false });
    const broke = new RunReader("openai-chat");
    broke.apply(head(200, "text/event-stream"));
    expect(runProblem(broke.apply(end(1, 2, "connection reset")))).toBe("The answer broke off: connection reset");
  });
});

describe("routeHeaders", () => {
  it("keeps the x-llmgw-* headers, request id first", () => {
    expect(routeHeaders({ "content-type": "x", "X-Llmgw-Dropped-Fields": "top_k", "x-llmgw-request-id": "r", "x-llmgw-attempts": "2" })).toEqual([
      ["x-llmgw-request-id", "r"],
      ["x-llmgw-attempts", "2"],
      ["x-llmgw-dropped-fields", "top_k"],
    ]);
    expect(routeHeaders(undefined)).toEqual([]);
  });
});
