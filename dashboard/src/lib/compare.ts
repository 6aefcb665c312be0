// The side-by-side view of a request and its replay (#17): one row per
// figure (status, latency, TTFB, tokens in and out, cost…) with both
// values and which side did better, and a one-line verdict. Pure.

import type { RequestLog } from "@/gen/llmgw/v1/logs_pb";
import { formatCost, formatDuration, formatInt } from "./format";
import { promptTokens } from "./log-fields";

type Log = Pick<
  RequestLog,
  | "status"
  | "cancelled"
  | "model"
  | "provider"
  | "upstreamModel"
  | "key"
  | "latencyMs"
  | "ttfbMs"
  | "inputTokens"
  | "cacheReadTokens"
  | "cacheCreationTokens"
  | "outputTokens"
  | "reasoningTokens"
  | "cost"
  | "attempts"
  | "stopReason"
  | "error"
>;

/** "better"/"worse": the replay against the original; "" when not comparable or the same. */
export type Change = "better" | "worse" | "";

export interface CompareRow {
  label: string;
  original: string;
  replay: string;
  change: Change;
  /** The values differ. */
  differs: boolean;
}

export const isOk = (r: Pick<RequestLog, "status" | "cancelled">): boolean => !r.cancelled && r.status >= 200 && r.status < 400;

function statusText(r: Log): string {
  if (r.cancelled) return `${r.status || "–"} (cancelled)`;
  if (!r.status) return "no response";
  return `${r.status} ${isOk(r) ? "ok" : "failed"}`;
}

/** Lower is better (time, cost), when both are set. */
function lower(a: number, b: number, bothSet: boolean): Change {
  if (!bothSet || a === b) return "";
  return b < a ? "better" : "worse";
}

function route(r: Log): string {
  if (!r.provider) return "–";
  return r.upstreamModel ? `${r.provider}:${r.upstreamModel}` : r.provider;
}

/** The rows of the side-by-side table. */
export function compareLogs(original: Log, replay: Log): CompareRow[] {
  const row = (label: string, a: string, b: string, change: Change = ""): CompareRow => ({ label, original: a, replay: b, change, differs: a !== b });
  const okA = isOk(original);
  const okB = isOk(replay);
  const latA = Number(original.latencyMs);
  const latB = Number(replay.latencyMs);
  const ttfbA = Number(original.ttfbMs);
  const ttfbB = Number(replay.ttfbMs);
  // Time and cost only compare between two answers that succeeded.
  const both = okA && okB;
  return [
    row("Status", statusText(original), statusText(replay), okA === okB ? "" : okB ? "better" : "worse"),
    row("Model", original.model || "–", replay.model || "–"),
    row("Served by", route(original), route(replay)),
    row("Key", original.key || "–", replay.key || "–"),
    row("Attempts", String(original.attempts.length), String(replay.attempts.length), lower(original.attempts.length, replay.attempts.length, true)),
    row("Latency", formatDuration(latA), formatDuration(latB), lower(latA, latB, both)),
    row("Time to first byte", ttfbA ? formatDuration(ttfbA) : "–", ttfbB ? formatDuration(ttfbB) : "–", lower(ttfbA, ttfbB, both && ttfbA > 0 && ttfbB > 0)),
    row("Tokens in", formatInt(promptTokens(original)), formatInt(promptTokens(replay))),
    row("Tokens out", formatInt(original.outputTokens), formatInt(replay.outputTokens)),
    row("Cost", formatCost(original.cost), formatCost(replay.cost), lower(original.cost, replay.cost, both)),
    row("Stop reason", original.stopReason || "–", replay.stopReason || "–"),
    row("Error", original.error || "–", replay.error || "–"),
  ];
}

/** One sentence on how the replay went against the original. */
export function compareVerdict(original: Log, replay: Log): string {
  const okA = isOk(original);
  const okB = isOk(replay);
  const a = original.status || "no response";
  const b = replay.status || "no response";
  if (!okA && okB) return `The replay succeeded where the original failed (${a} → ${b}).`;
  if (okA && !okB) return `The replay failed where the original succeeded (${a} → ${b}).`;
  if (!okA && !okB) return `Both failed (${a} → ${b}).`;
  return `Both succeeded (${a} → ${b}).`;
}
