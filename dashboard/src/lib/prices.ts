// Model prices (#16): exact decimal strings of US dollars in the admin API
// (`Prices.sheet`), the four token prices the models form edits, the other
// billing modes kept as they are when the form saves (they are set with
// the CLI), a sheet on one line, and the rows of a model's price history.
import type { ModelPrices } from "@/gen/llmgw/v1/admin_pb";
import type { Prices, PriceSheet } from "@/gen/llmgw/v1/common_pb";

/** The token prices as the form edits them: decimal strings, "" for 0. */
export interface PriceForm {
  input: string;
  output: string;
  cached: string;
  cacheWrite: string;
}

export const NO_PRICES: PriceForm = { input: "", output: "", cached: "", cacheWrite: "" };

const isZero = (s: string) => /^[0.]*$/.test(s);
const shown = (s: string) => (isZero(s) ? "" : s);

/** The form of stored prices: the sheet's strings, or an older control plane's numbers. */
export function priceForm(p: Prices | undefined): PriceForm {
  if (!p) return NO_PRICES;
  const s = p.sheet;
  if (s) {
    return { input: shown(s.inputPerMtok), output: shown(s.outputPerMtok), cached: shown(s.cachedInputPerMtok), cacheWrite: shown(s.cacheWritePerMtok) };
  }
  const n = (v: number) => (v ? String(v) : "");
  return { input: n(p.inputPerMtok), output: n(p.outputPerMtok), cached: n(p.cachedInputPerMtok), cacheWrite: n(p.cacheWritePerMtok) };
}

/** A price as the API takes it: a decimal number of US dollars, at most 9 decimal places, not negative. */
export function decimal(text: string, what: string): string {
  const t = text.trim();
  if (!t) return "";
  if (t.startsWith("-")) throw new Error(`${what} must not be negative`);
  const m = /^(\d*)(?:\.(\d*))?$/.exec(t);
  if (!m || (!m[1] && !m[2])) throw new Error(`${what} must be a decimal number of US dollars, e.g. 2.50`);
  if ((m[2] ?? "").replace(/0+$/, "").length > 9) throw new Error(`${what} has more than 9 decimal places; prices are exact to the nano-dollar`);
  return t;
}

/**
 * The prices to save: the form's token prices, with every other mode of
 * `kept` (tiers, per request, per image, per second, per 1M characters)
 * as it was, so that editing a model in the dashboard drops none of them.
 */
export function pricesOf(f: PriceForm, where: string, kept?: Prices) {
  const k = kept?.sheet;
  return {
    sheet: {
      inputPerMtok: decimal(f.input, `${where}input price`),
      outputPerMtok: decimal(f.output, `${where}output price`),
      cachedInputPerMtok: decimal(f.cached, `${where}cached input price`),
      cacheWritePerMtok: decimal(f.cacheWrite, `${where}cache write price`),
      tiers: k?.tiers ?? [],
      perRequest: k?.perRequest ?? "",
      perImage: k?.perImage ?? {},
      perAudioSecond: k?.perAudioSecond ?? "",
      perMchar: k?.perMchar ?? "",
    },
  };
}

/** Whether stored target prices are its own: a sheet, or an older control plane's non-zero numbers. */
export function hasOwnPrices(p: Prices | undefined): boolean {
  if (!p) return false;
  if (p.sheet) return true;
  return p.inputPerMtok > 0 || p.outputPerMtok > 0 || p.cachedInputPerMtok > 0 || p.cacheWritePerMtok > 0;
}

/** `IN/OUT[/CACHED[/WRITE]]`. */
function tokens(i: string, o: string, c: string, w: string): string {
  let s = `${i || "0"}/${o || "0"}`;
  if (!isZero(c) || !isZero(w)) s += `/${c || "0"}`;
  if (!isZero(w)) s += `/${w}`;
  return s;
}

/** The modes besides the four token prices, on one line; "" when there are none. */
export function otherModes(s: PriceSheet | undefined): string {
  if (!s) return "";
  const parts: string[] = [];
  for (const t of s.tiers) {
    parts.push(`above ${t.aboveInputTokens}: ${tokens(t.inputPerMtok, t.outputPerMtok, t.cachedInputPerMtok, t.cacheWritePerMtok)}`);
  }
  if (!isZero(s.perRequest)) parts.push(`per request ${s.perRequest}`);
  for (const k of Object.keys(s.perImage).sort()) parts.push(`image ${k} ${s.perImage[k]}`);
  if (!isZero(s.perAudioSecond)) parts.push(`per second ${s.perAudioSecond}`);
  if (!isZero(s.perMchar)) parts.push(`per 1M chars ${s.perMchar}`);
  return parts.join(", ");
}

/**
 * Prices on one line, as the CLI shows them: "2.5/10, above 200000: 5/15,
 * per request 0.001" (US dollars; token prices per 1M tokens as
 * IN/OUT[/CACHED[/WRITE]]). "" for none.
 */
export function priceText(p: Prices | undefined): string {
  if (!p) return "";
  const s = p.sheet;
  if (!s) return tokens(String(p.inputPerMtok), String(p.outputPerMtok), String(p.cachedInputPerMtok), String(p.cacheWritePerMtok));
  const rest = otherModes(s);
  const t = tokens(s.inputPerMtok, s.outputPerMtok, s.cachedInputPerMtok, s.cacheWritePerMtok);
  return rest ? `${t}, ${rest}` : t;
}

export interface HistoryRow {
  from: string;
  recordedAt: string;
  state: "in effect" | "scheduled" | "past";
  prices: string;
}

/**
 * A change's target prices, each with its target: `target N (P:M)`, or
 * `P:M (not a target now)` for one the model no longer has (a change keeps
 * target prices by provider and upstream model); by number alone from an
 * older control plane, which sends no `targets`.
 */
function changeTargets(c: ModelPrices["history"][number]): string[] {
  if (c.targets.length === 0) {
    return Object.keys(c.targetPrices)
      .map(Number)
      .sort((a, b) => a - b)
      .map((n) => `target ${n} ${priceText(c.targetPrices[n])}`);
  }
  return [...c.targets]
    .sort((a, b) => (a.number || Infinity) - (b.number || Infinity))
    .map((t) => {
      const who = `${t.provider}:${t.upstreamModel}`;
      return t.number === 0
        ? `${who} (not a target now) ${priceText(t.prices)}`
        : `target ${t.number} (${who}) ${priceText(t.prices)}`;
    });
}

/** A model's price changes, oldest first, each with its state and prices on one line. */
export function historyRows(m: ModelPrices): HistoryRow[] {
  let current = -1;
  m.history.forEach((c, i) => {
    if (!c.scheduled) current = i;
  });
  return m.history.map((c, i) => {
    const own = changeTargets(c);
    return {
      from: c.from,
      recordedAt: c.recordedAt,
      state: c.scheduled ? "scheduled" : i === current ? "in effect" : "past",
      prices: [`model ${priceText(c.prices)}`, ...own].join("; "),
    };
  });
}
