import { describe, expect, it } from "vitest";
import { mask, redactHeaders } from "./redact";

describe("header redaction", () => {
  it("masks credentials that arrive whole and keeps masks as they are", () => {
    const rows = redactHeaders({
      "X-Api-Key": "sk-ant-0123456789abcdef",
      authorization: "****wxyz",
      cookie: "short",
      accept: "application/json",
    });
    expect(rows).toEqual([
      ["accept", "application/json"],
      ["authorization", "****wxyz"],
      ["cookie", "****"],
      ["X-Api-Key", "****cdef"],
    ]);
  });
  it("short values lose everything", () => {
    expect(mask("abc")).toBe("****");
  });
});
