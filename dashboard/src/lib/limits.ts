// Limits and their usage (#15): budgets in US dollars from the wire's
// micro-dollars, the budget's warning levels, the window reset text, and the
// limits form ↔ the Limits of Create/Update requests.

import { formatDuration, formatInt, formatTokens, type Num } from "./format";

/** A budget at or beyond this share of its limit is shown as a warning. */
export const BUDGET_WARNING = 0.8;

/** The fields of a LimitUsage the dashboard reads (the generated message has these). */
export interface UsageLike {
  scope: string;
  name: string;
  kind: string;
  limit: bigint;
  used: bigint;
  windowStart: string;
  windowEnd: string;
  period: string;
  onOutage: string;
  default: boolean;
}

/** The fields of a Limits message (stored, or the init of a request's). */
export interface LimitsLike {
  rpm?: bigint;
  tpm?: bigint;
  maxConcurrency?: number;
  budgetMicros?: bigint;
  budgetPeriod?: string;
  windowMs?: number;
  onOutage?: string;
}

const big = (v: Num): bigint => (typeof v === "bigint" ? v : BigInt(Math.round(v)));
const usdFmt = new Intl.NumberFormat("en-US");

/** Micro-dollars as exact US dollars: 0 → "$0.00", 1234500000 → "$1,234.50", 42 → "$0.000042". */
export function formatUsd(micros: Num): string {
  const m = big(micros);
  if (m < 0n) return `-${formatUsd(-m)}`;
  const cents = String(m % 1_000_000n)
    .padStart(6, "0")
    .replace(/0+$/, "")
    .padEnd(2, "0");
  return `$${usdFmt.format(m / 1_000_000n)}.${cents}`;
}

/** Micro-dollars as the number a form shows: 12500000 → "12.5", 42 → "0.000042". */
export function usdText(micros: Num): string {
  return formatUsd(micros).slice(1).replaceAll(",", "").replace(/\.?0+$/, "") || "0";
}

/** "12.50", "$1,000", "0.000042" → micro-dollars; throws on anything else or more than 6 decimals. */
export function parseUsd(text: string): bigint {
  const t = text.trim().replace(/^\$/, "").replaceAll(",", "");
  const m = /^(\d+)(?:\.(\d*))?$|^\.(\d+)$/.exec(t);
  const whole = m?.[1] ?? "0";
  const frac = m?.[2] ?? m?.[3] ?? "";
  if (!m || frac.length > 6) throw new Error("The budget must be an amount of US dollars with at most 6 decimals, e.g. 25 or 0.50.");
  return BigInt(whole) * 1_000_000n + BigInt(frac.padEnd(6, "0"));
}

/** used / limit as a number (0 when there is no limit). */
export function usageRatio(used: Num, limit: Num): number {
  const l = Number(limit);
  return l > 0 ? Number(used) / l : 0;
}

export type BudgetLevel = "ok" | "warning" | "exhausted";

/** "exhausted" when used ≥ limit, "warning" from 80 %, "ok" otherwise; exact on bigints. */
export function budgetLevel(used: Num, limit: Num): BudgetLevel {
  const u = big(used);
  const l = big(limit);
  if (l <= 0n) return "ok";
  if (u >= l) return "exhausted";
  return u * 10n >= l * BigInt(BUDGET_WARNING * 10) ? "warning" : "ok";
}

/** The order in which a scope's limits are listed. */
export const KINDS = ["rpm", "tpm", "concurrency", "budget"] as const;

/** A window's length: 60000 → "min", 1000 → "1 s", 300000 → "5 min". */
export function windowName(ms: number): string {
  if (ms === 60_000) return "min";
  if (ms > 0 && ms % 60_000 === 0) return `${ms / 60_000} min`;
  if (ms > 0 && ms % 1000 === 0) return `${ms / 1000} s`;
  return `${ms} ms`;
}

function windowMsOf(u: UsageLike): number {
  const start = Date.parse(u.windowStart);
  const end = Date.parse(u.windowEnd);
  return Number.isFinite(start) && Number.isFinite(end) && end > start ? end - start : 60_000;
}

/** What the limit counts: "Requests/min", "Tokens/1 s", "In flight", "Budget/month", "Budget (total)". */
export function kindTitle(u: UsageLike): string {
  switch (u.kind) {
    case "rpm":
      return `Requests/${windowName(windowMsOf(u))}`;
    case "tpm":
      return `Tokens/${windowName(windowMsOf(u))}`;
    case "concurrency":
      return "In flight";
    case "budget": {
      const period = u.period || "month";
      return period === "total" ? "Budget (total)" : `Budget/${period}`;
    }
    default:
      return u.kind;
  }
}

/** A value of the limit's unit: requests, tokens or US dollars. */
export function formatAmount(kind: string, v: Num): string {
  if (kind === "budget") return formatUsd(v);
  if (kind === "tpm") return formatTokens(v);
  return formatInt(v);
}

/** "12 / 100", "$4.20 / $5.00". */
export function usageText(u: UsageLike): string {
  return `${formatAmount(u.kind, u.used)} / ${formatAmount(u.kind, u.limit)}`;
}

/** When the window or period starts again: "resets in 42.0 s", "never resets" (total budgets), "" (concurrency). */
export function resetText(u: UsageLike, now = Date.now()): string {
  if (u.kind === "concurrency") return "";
  if (u.kind === "budget" && u.period === "total") return "never resets";
  const end = Date.parse(u.windowEnd);
  if (!Number.isFinite(end)) return "";
  return end <= now ? "resets now" : `resets in ${formatDuration(end - now)}`;
}

/** A scope's usage rows, by name, each list in KINDS order. */
export function usageByName(rows: readonly UsageLike[], scope: string): Map<string, UsageLike[]> {
  const out = new Map<string, UsageLike[]>();
  for (const r of rows) {
    if (r.scope !== scope) continue;
    const list = out.get(r.name) ?? [];
    list.push(r);
    out.set(r.name, list);
  }
  const rank = (k: string) => {
    const i = (KINDS as readonly string[]).indexOf(k);
    return i < 0 ? KINDS.length : i;
  };
  for (const list of out.values()) list.sort((a, b) => rank(a.kind) - rank(b.kind));
  return out;
}

/** Stored limits in a few words: "100 rpm · 5 in flight · $5.00/month"; "" when none. */
export function limitsSummary(l: LimitsLike | undefined): string {
  if (!l) return "";
  const per = l.windowMs && l.windowMs !== 60_000 ? `/${windowName(l.windowMs)}` : "";
  const parts: string[] = [];
  if (l.rpm) parts.push(`${formatInt(l.rpm)} ${per ? `requests${per}` : "rpm"}`);
  if (l.tpm) parts.push(`${formatTokens(l.tpm)} ${per ? `tokens${per}` : "tpm"}`);
  if (l.maxConcurrency) parts.push(`${formatInt(l.maxConcurrency)} in flight`);
  if (l.budgetMicros) {
    const period = l.budgetPeriod || "month";
    parts.push(period === "total" ? `${formatUsd(l.budgetMicros)} in total` : `${formatUsd(l.budgetMicros)}/${period}`);
  }
  return parts.join(" · ");
}

// ---------- the limits fields of the create/edit forms ----------

export interface LimitsForm {
  rpm: string;
  tpm: string;
  maxConcurrency: string;
  /** US dollars. */
  budget: string;
  budgetPeriod: string;
  onOutage: string;
}

export const BUDGET_PERIODS = ["day", "week", "month", "total"] as const;

export const NO_LIMITS: LimitsForm = { rpm: "", tpm: "", maxConcurrency: "", budget: "", budgetPeriod: "month", onOutage: "open" };

export function limitsFormOf(l: LimitsLike | undefined): LimitsForm {
  if (!l) return NO_LIMITS;
  return {
    rpm: l.rpm ? String(l.rpm) : "",
    tpm: l.tpm ? String(l.tpm) : "",
    maxConcurrency: l.maxConcurrency ? String(l.maxConcurrency) : "",
    budget: l.budgetMicros ? usdText(l.budgetMicros) : "",
    budgetPeriod: l.budgetPeriod || "month",
    onOutage: l.onOutage || "open",
  };
}

function count(text: string, what: string, max: bigint): bigint | undefined {
  const t = text.trim().replaceAll(",", "");
  if (!t) return undefined;
  if (!/^\d+$/.test(t) || BigInt(t) > max) throw new Error(`${what} must be a whole number, or empty for no limit.`);
  const v = BigInt(t);
  return v === 0n ? undefined : v;
}

/** The form's limits, validated; 0 or empty is no limit. Throws with a message for the form. */
export function parseLimits(f: LimitsForm): LimitsLike {
  const u64 = 18_446_744_073_709_551_615n;
  const rpm = count(f.rpm, "Requests per minute", u64);
  const tpm = count(f.tpm, "Tokens per minute", u64);
  const conc = count(f.maxConcurrency, "Requests in flight", 4_294_967_295n);
  const budget = f.budget.trim() ? parseUsd(f.budget) : undefined;
  return {
    rpm,
    tpm,
    maxConcurrency: conc === undefined ? undefined : Number(conc),
    budgetMicros: budget === 0n ? undefined : budget,
    budgetPeriod: f.budgetPeriod,
    onOutage: f.onOutage,
  };
}

const NUMERIC = ["rpm", "tpm", "maxConcurrency", "budgetMicros"] as const;

/** The limits of a Create request: only what the form sets; undefined when it sets nothing. */
export function limitsForCreate(f: LimitsForm): LimitsLike | undefined {
  const p = parseLimits(f);
  if (NUMERIC.every((k) => p[k] === undefined)) return undefined;
  const out: LimitsLike = { onOutage: p.onOutage };
  for (const k of NUMERIC) if (p[k] !== undefined) Object.assign(out, { [k]: p[k] });
  if (p.budgetMicros !== undefined) out.budgetPeriod = p.budgetPeriod;
  return out;
}

/**
 * The limits of an Update request against the stored ones: a changed value
 * is set, a cleared one is sent as 0 (which removes it), the rest is left
 * out (it stays). Undefined when nothing changed.
 */
export function limitsForUpdate(f: LimitsForm, stored: LimitsLike | undefined): LimitsLike | undefined {
  const p = parseLimits(f);
  const out: LimitsLike = {};
  let changed = false;
  for (const k of NUMERIC) {
    const now = p[k];
    const before = stored?.[k] || undefined;
    if (now === before) continue;
    Object.assign(out, { [k]: now ?? (k === "maxConcurrency" ? 0 : 0n) });
    changed = true;
  }
  if (p.budgetMicros !== undefined && p.budgetPeriod !== (stored?.budgetPeriod || "month")) {
    out.budgetPeriod = p.budgetPeriod;
    changed = true;
  }
  if (p.onOutage !== (stored?.onOutage || "open")) {
    out.onOutage = p.onOutage;
    changed = true;
  }
  return changed ? out : undefined;
}
