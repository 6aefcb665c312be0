// Data shaping for the overview charts.

import type { StatsBucket } from "@/gen/llmgw/v1/admin_pb";

/** Round axis ticks from 0 to at least `max`: niceTicks(87, 4) → 0, 25, 50, 75, 100. */
export function niceTicks(max: number, count: number): { ticks: number[]; max: number } {
  if (!(max > 0) || !Number.isFinite(max)) return { ticks: [0, 1], max: 1 };
  const raw = max / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const top = Math.ceil(max / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let v = 0; v <= top + step / 2; v += step) ticks.push(Number(v.toPrecision(12)));
  return { ticks, max: top };
}

/**
 * Every bucket start from `sinceMs` to `untilMs`, aligned as the server
 * aligns them (multiples of the width since the epoch), with the server's
 * buckets in place and empty ones where it sent none.
 */
export function fillBuckets(series: StatsBucket[], sinceMs: number, untilMs: number, bucketS: number): { start: number; bucket?: StatsBucket }[] {
  const width = bucketS * 1000;
  const byStart = new Map<number, StatsBucket>();
  for (const b of series) byStart.set(Number(b.startMs), b);
  const first = Math.floor(sinceMs / width) * width;
  const out: { start: number; bucket?: StatsBucket }[] = [];
  for (let t = first; t <= untilMs && out.length < 5000; t += width) {
    out.push({ start: t, bucket: byStart.get(t) });
  }
  return out;
}

/** Windows the overview offers, with their bucket widths. */
export const WINDOWS = [
  { value: "15m", label: "Last 15 minutes", ms: 15 * 60_000, bucketS: 60 },
  { value: "1h", label: "Last hour", ms: 3_600_000, bucketS: 60 },
  { value: "6h", label: "Last 6 hours", ms: 6 * 3_600_000, bucketS: 300 },
  { value: "24h", label: "Last 24 hours", ms: 24 * 3_600_000, bucketS: 900 },
  { value: "7d", label: "Last 7 days", ms: 7 * 86_400_000, bucketS: 3600 },
] as const;
