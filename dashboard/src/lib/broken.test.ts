import { describe, expect, it } from "vitest";
import { brokenSummary, weightLabel } from "./broken";

describe("broken rows", () => {
  it("is silent for a healthy row", () => {
    expect(brokenSummary(undefined)).toBeUndefined();
    expect(brokenSummary([])).toBeUndefined();
  });
  it("names every field once, with the reasons in the tooltip", () => {
    const s = brokenSummary([
      { field: "api_key", reason: "cannot be decrypted: the key is wrong or the data was altered" },
      { field: "headers", reason: "cannot be decrypted" },
      { field: "headers", reason: "not a JSON object" },
    ]);
    expect(s?.label).toBe("broken: api_key, headers");
    expect(s?.title).toContain("api_key: cannot be decrypted: the key is wrong or the data was altered");
    expect(s?.title).toContain("headers: not a JSON object");
    expect(s?.title).toContain("fixed");
  });
});

describe("weights", () => {
  it("shows 0 as drained and absent as 1", () => {
    expect(weightLabel(0)).toBe("drained");
    expect(weightLabel(undefined)).toBe("weight 1");
    expect(weightLabel(3)).toBe("weight 3");
  });
});
