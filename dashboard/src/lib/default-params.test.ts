import { describe, expect, it } from "vitest";
import { paramsOf, paramsSummary, paramsText } from "./default-params";

describe("default parameters", () => {
  it("round-trip between the API's map and a JSON object", () => {
    const api = { temperature: "0.2", stop: '["x"]' };
    expect(paramsText(api)).toBe('{"stop":["x"],"temperature":0.2}');
    expect(paramsOf(paramsText(api))).toEqual(api);
    expect(paramsText({})).toBe("");
    expect(paramsOf("  ")).toEqual({});
    expect(paramsSummary(api)).toBe('stop=["x"] temperature=0.2');
  });
  it("refuse what is not a JSON object", () => {
    expect(() => paramsOf("{", "Target 1: ")).toThrow(/Target 1: default parameters are not valid JSON/);
    expect(() => paramsOf("[1]")).toThrow(/must be a JSON object/);
  });
});
