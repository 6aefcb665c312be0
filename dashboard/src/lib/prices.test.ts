import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ModelPricesSchema, PriceChangeSchema, TargetPricesSchema } from "@/gen/llmgw/v1/admin_pb";
import { PriceSheetSchema, PricesSchema, PriceTierSchema } from "@/gen/llmgw/v1/common_pb";
import { decimal, hasOwnPrices, historyRows, NO_PRICES, priceForm, pricesOf, priceText } from "./prices";

const rich = create(PricesSchema, {
  inputPerMtok: 2.5,
  outputPerMtok: 10,
  sheet: create(PriceSheetSchema, {
    inputPerMtok: "2.5",
    outputPerMtok: "10",
    tiers: [create(PriceTierSchema, { aboveInputTokens: 200000n, inputPerMtok: "5", outputPerMtok: "15" })],
    perRequest: "0.001",
    perImage: { "1024x1024/high": "0.167", "*": "0.04" },
  }),
});

describe("prices", () => {
  it("show every mode on one line, and an older control plane's numbers", () => {
    expect(priceText(rich)).toBe("2.5/10, above 200000: 5/15, per request 0.001, image * 0.04, image 1024x1024/high 0.167");
    expect(priceText(create(PricesSchema, { inputPerMtok: 3, outputPerMtok: 15, cachedInputPerMtok: 0.3 }))).toBe("3/15/0.3");
    expect(priceText(undefined)).toBe("");
  });

  it("keep the modes the form does not edit when it saves", () => {
    const f = { ...priceForm(rich), output: "12.5" };
    expect(f.input).toBe("2.5");
    const saved = pricesOf(f, "The ", rich);
    expect(saved.sheet.outputPerMtok).toBe("12.5");
    expect(saved.sheet.tiers).toHaveLength(1);
    expect(saved.sheet.perImage["1024x1024/high"]).toBe("0.167");
    expect(saved.sheet.perRequest).toBe("0.001");
    expect(pricesOf(NO_PRICES, "", undefined).sheet.tiers).toEqual([]);
  });

  it("are exact decimals", () => {
    expect(decimal(" 0.000000001 ", "x")).toBe("0.000000001");
    expect(decimal("", "x")).toBe("");
    expect(() => decimal("-1", "The input price")).toThrow(/The input price must not be negative/);
    expect(() => decimal("1e3", "x")).toThrow(/decimal number/);
    expect(() => decimal("0.0000000001", "x")).toThrow(/more than 9 decimal places/);
  });

  it("are a target's own when it has a sheet or numbers", () => {
    expect(hasOwnPrices(undefined)).toBe(false);
    expect(hasOwnPrices(create(PricesSchema, {}))).toBe(false);
    expect(hasOwnPrices(create(PricesSchema, { outputPerMtok: 1 }))).toBe(true);
    expect(hasOwnPrices(rich)).toBe(true);
  });

  it("have a history with the change in effect and the scheduled ones", () => {
    const change = (from: string, input: string, scheduled = false, targets: Record<number, string> = {}) =>
      create(PriceChangeSchema, {
        from,
        recordedAt: "2026-01-01T00:00:00Z",
        scheduled,
        prices: create(PricesSchema, { sheet: create(PriceSheetSchema, { inputPerMtok: input, outputPerMtok: "1" }) }),
        targetPrices: Object.fromEntries(
          Object.entries(targets).map(([n, i]) => [n, create(PricesSchema, { sheet: create(PriceSheetSchema, { inputPerMtok: i, outputPerMtok: "2" }) })]),
        ),
      });
    const rows = historyRows(
      create(ModelPricesSchema, {
        history: [change("2026-01-01T00:00:00Z", "1"), change("2026-02-01T00:00:00Z", "2", false, { 2: "0.5" }), change("2027-01-01T00:00:00Z", "3", true)],
      }),
    );
    expect(rows.map((r) => r.state)).toEqual(["past", "in effect", "scheduled"]);
    expect(rows[1]!.prices).toBe("model 2/1; target 2 0.5/2");
    expect(rows[2]!.from).toBe("2027-01-01T00:00:00Z");
  });

  it("name each target of a change, also one the model no longer has", () => {
    const own = (input: string) => create(PricesSchema, { sheet: create(PriceSheetSchema, { inputPerMtok: input, outputPerMtok: "2" }) });
    const rows = historyRows(
      create(ModelPricesSchema, {
        history: [
          create(PriceChangeSchema, {
            from: "2027-01-01T00:00:00Z",
            scheduled: true,
            prices: create(PricesSchema, { sheet: create(PriceSheetSchema, { inputPerMtok: "1", outputPerMtok: "1" }) }),
            targetPrices: { 2: own("0.5") },
            targets: [
              create(TargetPricesSchema, { number: 0, provider: "p", upstreamModel: "gone", prices: own("9") }),
              create(TargetPricesSchema, { number: 2, provider: "q", upstreamModel: "b", prices: own("0.5") }),
            ],
          }),
        ],
      }),
    );
    expect(rows[0]!.prices).toBe("model 1/1; target 2 (q:b) 0.5/2; p:gone (not a target now) 9/2");
  });
});
