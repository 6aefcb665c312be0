import { describe, expect, it } from "vitest";
import { shellQuote, toCurl } from "./curl";

const SECRET = "sk-llmgw-AbCdEfGhIjKlMnOpQrStUvWxYz012345";
const MASKED = "sk-llmgw-****2345";

const log = {
  protocol: "openai-chat",
  path: "/v1/chat/completions",
  requestHeaders: {
    authorization: `Bearer ${SECRET}`,
    "content-type": "application/json",
    host: "127.0.0.1:8000",
    "content-length": "42",
    connection: "keep-alive",
    "transfer-encoding": "chunked",
    "x-custom": "it's here",
    cookie: `session=${SECRET}`,
    "x-masked": "****abcd",
  },
  requestBody: `{"model":"gpt-4o","messages":[{"role":"user","content":"it's"}]}`,
  requestBodyTruncated: false,
};

function noKey(c: string) {
  expect(c).not.toContain(SECRET);
  expect(c).not.toContain("AbCdEf");
  expect(c).not.toContain(MASKED);
  expect(c).not.toContain("****");
}

describe("copy as curl", () => {
  it("never contains the client key, even masked", () => {
    const c = toCurl(log);
    noKey(c);
    expect(c).toContain('-H "Authorization: Bearer $LLMGW_KEY"');
    expect(c).not.toMatch(/cookie/i);
    noKey(toCurl({ ...log, requestHeaders: { ...log.requestHeaders, authorization: `Bearer ${MASKED}` } }));
  });

  it("repeats the path, headers and body, quoted for the shell, without hop-by-hop headers", () => {
    const c = toCurl(log);
    expect(c).toContain(`curl -sS "$LLMGW_URL/v1/chat/completions"`);
    expect(c).toContain(`-H 'x-custom: it'\\''s here'`);
    expect(c).toContain(`-H 'content-type: application/json'`);
    for (const h of ["content-length", "host:", "connection", "transfer-encoding"]) expect(c).not.toContain(h);
    expect(c).toContain(`--data-raw '{"model":"gpt-4o","messages":[{"role":"user","content":"it'\\''s"}]}'`);
  });

  it("puts the placeholder in whichever header carried the key", () => {
    for (const [header, expected] of [
      ["x-api-key", '-H "x-api-key: $LLMGW_KEY"'],
      ["X-Goog-Api-Key", '-H "x-goog-api-key: $LLMGW_KEY"'],
      ["api-key", '-H "api-key: $LLMGW_KEY"'],
      ["Authorization", '-H "Authorization: Bearer $LLMGW_KEY"'],
    ] as const) {
      const c = toCurl({ ...log, protocol: "anthropic", requestHeaders: { [header]: MASKED, "anthropic-version": "2023-06-01" } });
      expect(c).toContain(expected);
      expect(c.match(/\$LLMGW_KEY/g)?.length).toBe(1); // that header only
      expect(c).toContain(`-H 'anthropic-version: 2023-06-01'`);
      noKey(c);
    }
  });

  it("replaces Gemini's ?key= query parameter", () => {
    const c = toCurl({ ...log, protocol: "gemini", path: `/v1beta/models/g:generateContent?key=${SECRET}&x=1`, requestHeaders: {} });
    expect(c).toContain(`curl -sS "$LLMGW_URL/v1beta/models/g:generateContent?key=$LLMGW_KEY&x=1"`);
    expect(c).not.toMatch(/-H "(Authorization|x-goog-api-key)/);
    noKey(c);
  });

  it("uses the protocol's header when the key's header was not logged", () => {
    expect(toCurl({ ...log, protocol: "gemini", requestHeaders: {} })).toContain('-H "x-goog-api-key: $LLMGW_KEY"');
    expect(toCurl({ ...log, protocol: "anthropic", requestHeaders: {} })).toContain('-H "x-api-key: $LLMGW_KEY"');
    expect(toCurl({ ...log, requestHeaders: {} })).toContain('-H "Authorization: Bearer $LLMGW_KEY"');
  });

  it("asks a Gemini stream answered as SSE for SSE", () => {
    const c = toCurl({ ...log, protocol: "gemini", path: "/v1beta/models/g:streamGenerateContent", requestHeaders: {}, responseHeaders: { "Content-Type": "text/event-stream" } });
    expect(c).toContain(`"$LLMGW_URL/v1beta/models/g:streamGenerateContent?alt=sse"`);
  });

  it("says when the body was truncated, and takes a base URL", () => {
    const c = toCurl({ ...log, requestBodyTruncated: true }, { baseUrl: "http://gw:8000/" });
    expect(c).toContain("truncated");
    expect(c).toContain(`curl -sS "http://gw:8000/v1/chat/completions"`);
    noKey(c);
  });

  it("quotes for a POSIX shell", () => {
    expect(shellQuote("a b")).toBe("'a b'");
    expect(shellQuote("it's")).toBe(`'it'\\''s'`);
    expect(shellQuote("$HOME `x`")).toBe("'$HOME `x`'");
    // Only the placeholders expand in the URL.
    expect(toCurl({ ...log, path: "/v1/x?a=$HOME&b=`id`" })).toContain(`"$LLMGW_URL/v1/x?a=\\$HOME&b=\\\`id\\\`"`);
  });
});
