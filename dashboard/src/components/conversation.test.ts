import { createElement } from "react";
import { renderToStaticMarkup } from "react-dom/server";
import { describe, expect, it } from "vitest";
import { toConversation } from "@/lib/conversation";
import { ConversationView } from "./conversation";

const render = (protocol: string, requestBody: string, responseBody: string, truncated = false) => {
  const c = toConversation({ protocol, requestBody, requestBodyTruncated: truncated, responseBody, responseBodyTruncated: false });
  if (!c) throw new Error("no conversation");
  return renderToStaticMarkup(createElement(ConversationView, { c }));
};

describe("conversation view", () => {
  it("shows roles, the system prompt, tool calls and results, thinking and images", () => {
    const html = render(
      "anthropic",
      JSON.stringify({
        system: "Sys <b>prompt</b>",
        messages: [
          { role: "user", content: [{ type: "image", source: { type: "base64", media_type: "image/png", data: "AAAA" } }, { type: "text", text: "hi" }] },
          { role: "assistant", content: [{ type: "thinking", thinking: "hmm" }, { type: "tool_use", id: "t1", name: "calc", input: { x: 1 } }] },
          { role: "user", content: [{ type: "tool_result", tool_use_id: "t1", content: "2" }] },
        ],
      }),
      JSON.stringify({ type: "message", role: "assistant", content: [{ type: "text", text: "Two." }], stop_reason: "end_turn" }),
    );
    expect(html).toContain('aria-label="System prompt"');
    expect(html).toContain("Sys &lt;b&gt;prompt&lt;/b&gt;"); // text, never markup
    expect(html).toContain('data-role="user"');
    expect(html).toContain('data-role="tool"');
    expect(html).toContain("image/png: 3 B inline");
    expect(html).toContain('data-testid="thinking"');
    expect(html).toContain('data-testid="tool-call"');
    expect(html).toContain("calc");
    expect(html).toContain('data-testid="tool-result"');
    expect(html).toContain("Two.");
    expect(html).toContain("end_turn");
  });

  it("says when a body was cut, and when a side cannot be read", () => {
    const html = render("openai-chat", '{"messages":[{"role":"user","content":"Hello, wor', "<html>oops</html>", true);
    expect(html).toContain("truncated when it was logged");
    expect(html).toContain("Hello, wor");
    expect(html).toContain("cannot be read as a conversation");
  });

  it("renders every protocol's streamed answer", () => {
    const cases: [string, string][] = [
      ["openai-chat", 'data: {"choices":[{"index":0,"delta":{"content":"A"}}]}\n\ndata: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'],
      ["openai-responses", 'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","output_index":0,"delta":"A"}\n\n'],
      ["anthropic", 'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"A"}}\n\n'],
      ["gemini", 'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"A"}]},"finishReason":"STOP"}]}\n\n'],
    ];
    for (const [protocol, body] of cases) {
      const html = render(protocol, "", body);
      expect(html, protocol).toContain('data-testid="response-message"');
      expect(html, protocol).toMatch(/>A</);
    }
  });
});
