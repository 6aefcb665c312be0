import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ApiKeySchema } from "@/gen/llmgw/v1/admin_pb";
import { BrokenFieldSchema } from "@/gen/llmgw/v1/common_pb";
import { activeKeyNames, keyActive, keyAllows, replayBlocker, replayRequest } from "./replay";

describe("replayBlocker", () => {
  it("needs the whole request body", () => {
    expect(replayBlocker({ requestBody: '{"model":"m"}', requestBodyTruncated: false })).toBe("");
    expect(replayBlocker({ requestBody: "", requestBodyTruncated: false })).toMatch(/was not logged/);
    expect(replayBlocker({ requestBody: "", requestBodyTruncated: false, bodiesExpired: true })).toMatch(/has expired/);
    expect(replayBlocker({ requestBody: '{"model":', requestBodyTruncated: true })).toMatch(/cut at the logging cap/);
  });
});

describe("keys", () => {
  const now = Date.parse("2026-12-03T12:00:00Z");
  const keys = [
    create(ApiKeySchema, { name: "zeta" }),
    create(ApiKeySchema, { name: "alpha", models: ["m1"] }),
    create(ApiKeySchema, { name: "revoked", revoked: true }),
    create(ApiKeySchema, { name: "expired", expiresAt: "2026-12-01T00:00:00Z" }),
    create(ApiKeySchema, { name: "later", expiresAt: "2027-01-01T00:00:00Z" }),
    create(ApiKeySchema, { name: "broken", broken: [create(BrokenFieldSchema, {})] }),
  ];
  it("offers the active ones, sorted", () => {
    expect(activeKeyNames(keys, now)).toEqual(["alpha", "later", "zeta"]);
    expect(keyActive(keys[3]!, now)).toBe(false);
  });
  it("knows which models a key may use", () => {
    expect(keyAllows(keys[0], "anything")).toBe(true);
    expect(keyAllows(keys[1], "m1")).toBe(true);
    expect(keyAllows(keys[1], "m2")).toBe(false);
    expect(keyAllows(undefined, "m2")).toBe(true);
  });
});

describe("replayRequest", () => {
  it("sends empty fields for the original's model and key", () => {
    const r = { id: "x", model: "m", key: "k" };
    expect(replayRequest(r, "m", "k")).toEqual({ id: "x", model: "", key: "" });
    expect(replayRequest(r, "other", "k2")).toEqual({ id: "x", model: "other", key: "k2" });
  });
});
