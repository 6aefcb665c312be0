import { describe, expect, it } from "vitest";
import { shellQuote, toCurl } from "./curl";

const SECRET = "sk-llmgw-AbCdEfGhIjKlMnOpQrStUvWxYz012345";

const log = {
  protocol: "openai",
  path: "/v1/chat/completions",
  requestHeaders: {
    authorization: `Bearer ${SECRET}`,
    "content-type": "application/json",
    host: "127.0.0.1:8000",
    "content-length": "42",
    "x-custom": "it's here",
    cookie: `session=${SECRET}`,
    "x-masked": "****abcd",
  },
  requestBody: `{"model":"gpt-4o","messages":[{"role":"user","content":"it's"}]}`,
  requestBodyTruncated: false,
};

describe("copy as curl", () => {
  it("never contains the client key", () => {
    const c = toCurl(log);
    expect(c).not.toContain(SECRET);
    expect(c).not.toContain("AbCdEf");
    expect(c).toContain('-H "Authorization: Bearer $LLMGW_API_KEY"');
    expect(c).not.toMatch(/cookie/i);
    expect(c).not.toContain("****");
  });

  it("repeats the path, headers and body, quoted for the shell", () => {
    const c = toCurl(log);
    expect(c).toContain(`curl -sS "$LLMGW_URL"'/v1/chat/completions'`);
    expect(c).toContain(`-H 'x-custom: it'\\''s here'`);
    expect(c).toContain(`-H 'content-type: application/json'`);
    expect(c).not.toContain("content-length");
    expect(c).not.toContain("host:");
    expect(c).toContain(`--data-raw '{"model":"gpt-4o","messages":[{"role":"user","content":"it'\\''s"}]}'`);
  });

  it("Anthropic keys go in x-api-key", () => {
    const c = toCurl({ ...log, protocol: "anthropic", path: "/v1/messages", requestHeaders: { "x-api-key": SECRET, "anthropic-version": "2023-06-01" } });
    expect(c).toContain('-H "x-api-key: $LLMGW_API_KEY"');
    expect(c).toContain(`-H 'anthropic-version: 2023-06-01'`);
    expect(c).not.toContain(SECRET);
  });

  it("says when the body was truncated, and takes a base URL", () => {
    const c = toCurl({ ...log, requestBodyTruncated: true }, { baseUrl: "http://gw:8000/" });
    expect(c).toContain("truncated");
    expect(c).toContain("curl -sS 'http://gw:8000/v1/chat/completions'");
    expect(c).not.toContain(SECRET);
  });

  it("quotes for a POSIX shell", () => {
    expect(shellQuote("a b")).toBe("'a b'");
    expect(shellQuote("it's")).toBe(`'it'\\''s'`);
    expect(shellQuote("$HOME `x`")).toBe("'$HOME `x`'");
  });
});
