// Formatting of the numbers the API returns. int64/uint64 fields arrive as
// bigint; everything here takes either.

export type Num = number | bigint;

const n = (v: Num | undefined | null): number => (v == null ? 0 : typeof v === "bigint" ? Number(v) : v);

const intFmt = new Intl.NumberFormat("en-US");

/** 1234567 → "1,234,567". */
export function formatInt(v: Num): string {
  return intFmt.format(Math.round(n(v)));
}

/** Milliseconds in a short human form: "840 ms", "1.25 s", "2m 05s", "1h 02m". */
export function formatDuration(v: Num): string {
  const ms = n(v);
  if (!Number.isFinite(ms) || ms < 0) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 10) return `${s.toFixed(2)} s`;
  if (s < 60) return `${s.toFixed(1)} s`;
  const totalS = Math.round(s);
  if (totalS < 3600) {
    const m = Math.floor(totalS / 60);
    return `${m}m ${String(totalS % 60).padStart(2, "0")}s`;
  }
  const h = Math.floor(totalS / 3600);
  if (h < 48) return `${h}h ${String(Math.floor((totalS % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(h / 24)}d ${String(h % 24).padStart(2, "0")}h`;
}

/** Token counts: "0", "950", "12.3k", "4.56M", "1.2B". */
export function formatTokens(v: Num): string {
  const t = n(v);
  const abs = Math.abs(t);
  if (abs < 1000) return String(Math.round(t));
  if (abs < 1e6) return `${trim(t / 1e3, abs < 1e4 ? 2 : 1)}k`;
  if (abs < 1e9) return `${trim(t / 1e6, abs < 1e7 ? 2 : 1)}M`;
  return `${trim(t / 1e9, 2)}B`;
}

function trim(x: number, digits: number): string {
  return x.toFixed(digits).replace(/\.?0+$/, "");
}

/** US dollars: "$0", "<$0.0001", "$0.0042", "$0.12", "$1,234.50". */
export function formatCost(v: Num): string {
  const c = n(v);
  if (c === 0) return "$0";
  if (c < 0) return `-${formatCost(-c)}`;
  if (c < 0.0001) return "<$0.0001";
  if (c < 0.01) return `$${c.toFixed(4)}`;
  if (c < 1) return `$${c.toFixed(3)}`;
  return `$${c.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
}

/** A rate in [0, 1] as a percentage: "0%", "0.5%", "12.3%". */
export function formatPercent(rate: number): string {
  if (!Number.isFinite(rate) || rate <= 0) return "0%";
  const p = rate * 100;
  if (p >= 99.95 && p < 100) return "99.9%";
  return `${trim(p, p < 10 ? 2 : 1)}%`;
}

function pad(x: number): string {
  return String(x).padStart(2, "0");
}

/** Local date and time, "2026-11-27 14:05:09". */
export function formatDateTime(t: Num | string | Date | undefined): string {
  const d = toDate(t);
  if (!d) return "–";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Local time with milliseconds, for log rows: "14:05:09.123". */
export function formatClock(t: Num | string | Date | undefined): string {
  const d = toDate(t);
  if (!d) return "–";
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, "0")}`;
}

/** "just now", "5 min ago", "3 h ago", "in 2 days". */
export function formatRelative(t: Num | string | Date | undefined, now = Date.now()): string {
  const d = toDate(t);
  if (!d) return "never";
  const diff = now - d.getTime();
  const future = diff < 0;
  const s = Math.abs(diff) / 1000;
  let text: string;
  if (s < 45) return future ? "in a few seconds" : "just now";
  if (s < 3600) text = `${Math.round(s / 60)} min`;
  else if (s < 86400) text = `${Math.round(s / 3600)} h`;
  else {
    const days = Math.round(s / 86400);
    text = `${days} day${days === 1 ? "" : "s"}`;
  }
  return future ? `in ${text}` : `${text} ago`;
}

/** Unix ms (number or bigint), an RFC 3339 string ("" is none) or a Date. */
export function toDate(t: Num | string | Date | undefined): Date | undefined {
  if (t == null || t === "") return undefined;
  if (t instanceof Date) return Number.isNaN(t.getTime()) ? undefined : t;
  const d = typeof t === "string" ? new Date(t) : new Date(n(t));
  return Number.isNaN(d.getTime()) ? undefined : d;
}

/** "2xx" … "5xx" for an HTTP status; "none" when no status was received. */
export function statusClass(status: number): string {
  if (!status) return "none";
  return `${Math.floor(status / 100)}xx`;
}
