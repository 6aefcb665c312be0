// The logs page's filters: what the form holds, how it round-trips through
// the URL query (so a view can be shared), and how it becomes the
// ListLogsRequest / LogFilter of the API.

import { create } from "@bufbuild/protobuf";
import {
  FollowLogsRequestSchema,
  type FollowLogsRequest,
  ListLogsRequestSchema,
  type ListLogsRequest,
  LogFilterSchema,
  type LogFilter,
} from "@/gen/llmgw/v1/admin_pb";
import { PROTOCOLS } from "@/lib/protocols";
import { outcomeOfName, OUTCOMES } from "@/lib/log-fields";

export const TIME_PRESETS = [
  { value: "15m", label: "Last 15 minutes", ms: 15 * 60_000 },
  { value: "1h", label: "Last hour", ms: 3_600_000 },
  { value: "6h", label: "Last 6 hours", ms: 6 * 3_600_000 },
  { value: "24h", label: "Last 24 hours", ms: 24 * 3_600_000 },
  { value: "7d", label: "Last 7 days", ms: 7 * 86_400_000 },
  { value: "all", label: "All time", ms: 0 },
  { value: "custom", label: "Custom range…", ms: 0 },
] as const;

export const SORT_KEYS = ["time", "latency", "ttfb", "tokens", "cost", "status"] as const;
export type SortKey = (typeof SORT_KEYS)[number];

export const PAGE_SIZES = [25, 50, 100, 200] as const;

export interface ProtocolFilterChoice {
  value: string;
  label: string;
}

/**
 * The client protocols a record can carry (RequestLog.protocol): the
 * client API by its wire name. "openai" is the pass-through OpenAI
 * endpoints, and every OpenAI request on records older than these names.
 */
export const CLIENT_PROTOCOL_CHOICES: ProtocolFilterChoice[] = [
  { value: "openai-chat", label: "OpenAI Chat Completions" },
  { value: "openai-responses", label: "OpenAI Responses" },
  { value: "anthropic", label: "Anthropic Messages" },
  { value: "gemini", label: "Google Gemini" },
  { value: "openai", label: "OpenAI (embeddings, legacy completions)" },
];

/** The upstream protocols a record can carry: a provider's configured protocol. */
export const UPSTREAM_PROTOCOL_CHOICES: ProtocolFilterChoice[] = PROTOCOLS.map(({ value, label }) => ({ value, label }));

/** What the filter form holds. Numbers stay as typed until they are sent. */
export interface LogFilters {
  /** A TIME_PRESETS value. */
  range: string;
  /** Custom range, ISO 8601 (only with range "custom"). */
  from: string;
  to: string;
  model: string;
  provider: string;
  key: string;
  /** The end user the request was made for (RequestLog.user), exactly; "" is anyone. */
  user: string;
  /** A W3C trace id (RequestLog.trace_id) as typed: its requests only; "" is any. */
  traceId: string;
  /** The client's protocol (a CLIENT_PROTOCOL_CHOICES value); "" is any. */
  protocol: string;
  /** The answering upstream's protocol (an UPSTREAM_PROTOCOL_CHOICES value); "" is any. */
  upstreamProtocol: string;
  /** "", "2xx" … "5xx", "429" or "400-499". */
  status: string;
  latencyMin: string;
  latencyMax: string;
  tokensMin: string;
  tokensMax: string;
  stream: "" | "yes" | "no";
  /** An outcome's name ("interrupted"); "" is any. */
  outcome: string;
  errorsOnly: boolean;
  sort: SortKey;
  asc: boolean;
  limit: number;
  /** Opaque page token from the previous page; "" for the first. */
  page: string;
}

export const DEFAULT_FILTERS: LogFilters = {
  range: "24h",
  from: "",
  to: "",
  model: "",
  provider: "",
  key: "",
  user: "",
  traceId: "",
  protocol: "",
  upstreamProtocol: "",
  status: "",
  latencyMin: "",
  latencyMax: "",
  tokensMin: "",
  tokensMax: "",
  stream: "",
  outcome: "",
  errorsOnly: false,
  sort: "time",
  asc: false,
  limit: 50,
  page: "",
};

/** Changes filters; any change but paging starts again at the first page. */
export function withFilters(f: LogFilters, patch: Partial<LogFilters>): LogFilters {
  const next = { ...f, ...patch };
  if (!("page" in patch)) next.page = "";
  return next;
}

/** Whether anything narrows the view beyond the time range. */
export function activeFilterCount(f: LogFilters): number {
  let count = 0;
  for (const k of ["model", "provider", "key", "user", "traceId", "protocol", "upstreamProtocol", "status", "stream", "outcome"] as const) if (f[k]) count++;
  if (f.latencyMin || f.latencyMax) count++;
  if (f.tokensMin || f.tokensMax) count++;
  if (f.errorsOnly) count++;
  return count;
}

// ---------- URL query ----------

const QUERY_KEYS: [keyof LogFilters, string][] = [
  ["range", "range"],
  ["from", "from"],
  ["to", "to"],
  ["model", "model"],
  ["provider", "provider"],
  ["key", "key"],
  ["user", "user"],
  ["traceId", "trace_id"],
  ["protocol", "protocol"],
  ["upstreamProtocol", "upstream_protocol"],
  ["status", "status"],
  ["latencyMin", "lat_min"],
  ["latencyMax", "lat_max"],
  ["tokensMin", "tok_min"],
  ["tokensMax", "tok_max"],
  ["stream", "stream"],
  ["outcome", "outcome"],
  ["errorsOnly", "errors"],
  ["sort", "sort"],
  ["asc", "asc"],
  ["limit", "limit"],
  ["page", "page"],
];

/** The query string of `f`, leaving out what equals the default ("" when all do). */
export function filtersToQuery(f: LogFilters): string {
  const q = new URLSearchParams();
  for (const [field, name] of QUERY_KEYS) {
    const v = f[field];
    if (v === DEFAULT_FILTERS[field]) continue;
    if (field === "from" || field === "to") {
      if (f.range !== "custom") continue;
    }
    if (typeof v === "boolean") q.set(name, v ? "1" : "0");
    else q.set(name, String(v));
  }
  return q.toString();
}

/** Filters from a query string; unknown or malformed values fall back to the defaults. */
export function filtersFromQuery(search: string | URLSearchParams): LogFilters {
  const q = typeof search === "string" ? new URLSearchParams(search.replace(/^\?/, "")) : search;
  const f: LogFilters = { ...DEFAULT_FILTERS };
  const get = (name: string) => q.get(name)?.trim() ?? "";
  const range = get("range");
  if (TIME_PRESETS.some((p) => p.value === range)) f.range = range;
  if (f.range === "custom") {
    f.from = get("from");
    f.to = get("to");
  }
  f.model = get("model");
  f.provider = get("provider");
  f.key = get("key");
  f.user = get("user");
  f.traceId = get("trace_id");
  f.protocol = get("protocol");
  f.upstreamProtocol = get("upstream_protocol");
  f.status = get("status");
  f.latencyMin = get("lat_min");
  f.latencyMax = get("lat_max");
  f.tokensMin = get("tok_min");
  f.tokensMax = get("tok_max");
  const stream = get("stream");
  if (stream === "yes" || stream === "no") f.stream = stream;
  const outcome = get("outcome");
  if (OUTCOMES.some((o) => o.name === outcome)) f.outcome = outcome;
  f.errorsOnly = get("errors") === "1" || get("errors") === "true";
  const sort = get("sort");
  if ((SORT_KEYS as readonly string[]).includes(sort)) f.sort = sort as SortKey;
  f.asc = get("asc") === "1" || get("asc") === "true";
  const limit = Number(get("limit"));
  if (Number.isInteger(limit) && limit >= 1 && limit <= 1000) f.limit = limit;
  f.page = get("page");
  return f;
}

// ---------- API request ----------

export type Parsed<T> = { ok: true; value: T } | { ok: false; error: string };

/** A status filter as an inclusive range: "5xx", "404" or "400-499"; "" is none. */
export function parseStatus(s: string): Parsed<{ min: number; max: number }> {
  const t = s.trim().toLowerCase();
  if (!t) return { ok: true, value: { min: 0, max: 0 } };
  let m = /^([1-5])xx$/.exec(t);
  if (m) {
    const c = Number(m[1]) * 100;
    return { ok: true, value: { min: c, max: c + 99 } };
  }
  m = /^(\d{3})$/.exec(t);
  if (m) return { ok: true, value: { min: Number(m[1]), max: Number(m[1]) } };
  m = /^(\d{3})\s*(?:-|\.\.)\s*(\d{3})$/.exec(t);
  if (m && Number(m[1]) <= Number(m[2])) {
    return { ok: true, value: { min: Number(m[1]), max: Number(m[2]) } };
  }
  return { ok: false, error: `Status "${s}" is not a class (5xx), a code (429) or a range (400-499)` };
}

/** A whole number ≥ 0 as typed; "" is no bound (0n). */
export function parseCount(s: string, what: string): Parsed<bigint> {
  const t = s.trim().replace(/[_,\s]/g, "");
  if (!t) return { ok: true, value: 0n };
  if (!/^\d{1,15}$/.test(t)) return { ok: false, error: `${what} must be a whole number` };
  return { ok: true, value: BigInt(t) };
}

/**
 * A trace id as the API takes it: 32 lowercase hex digits, from one in
 * either case or from a whole `traceparent` header (version-traceid-spanid-flags);
 * "" is none.
 */
export function parseTraceId(s: string): Parsed<string> {
  const t = s.trim().toLowerCase();
  if (!t) return { ok: true, value: "" };
  const m = /^(?:([0-9a-f]{32})|[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2})$/.exec(t);
  const id = m ? (m[1] ?? m[2]) : "";
  if (!id || /^0+$/.test(id)) {
    return { ok: false, error: `Trace id "${s.trim()}" is not a trace id: give its 32 hex digits (or a traceparent header)` };
  }
  return { ok: true, value: id };
}

/** The time bounds of `f` at `now`, in Unix ms (0 means none). */
export function timeBounds(f: LogFilters, now: number): Parsed<{ since: number; until: number }> {
  if (f.range === "custom") {
    const since = f.from ? Date.parse(f.from) : 0;
    const until = f.to ? Date.parse(f.to) : 0;
    if (Number.isNaN(since)) return { ok: false, error: "The start of the range is not a date" };
    if (Number.isNaN(until)) return { ok: false, error: "The end of the range is not a date" };
    if (since && until && since >= until) {
      return { ok: false, error: "The start of the range must be before its end" };
    }
    return { ok: true, value: { since, until } };
  }
  const preset = TIME_PRESETS.find((p) => p.value === f.range);
  return { ok: true, value: { since: preset && preset.ms ? now - preset.ms : 0, until: 0 } };
}

/** The API's LogFilter for `f` at `now`, or the first thing wrong with `f`. */
export function toLogFilter(f: LogFilters, now: number): Parsed<LogFilter> {
  const time = timeBounds(f, now);
  if (!time.ok) return time;
  const status = parseStatus(f.status);
  if (!status.ok) return status;
  const traceId = parseTraceId(f.traceId);
  if (!traceId.ok) return traceId;
  const latMin = parseCount(f.latencyMin, "Minimum latency");
  if (!latMin.ok) return latMin;
  const latMax = parseCount(f.latencyMax, "Maximum latency");
  if (!latMax.ok) return latMax;
  const tokMin = parseCount(f.tokensMin, "Minimum tokens");
  if (!tokMin.ok) return tokMin;
  const tokMax = parseCount(f.tokensMax, "Maximum tokens");
  if (!tokMax.ok) return tokMax;
  if (latMax.value && latMin.value > latMax.value) {
    return { ok: false, error: "Minimum latency is above the maximum" };
  }
  if (tokMax.value && tokMin.value > tokMax.value) {
    return { ok: false, error: "Minimum tokens is above the maximum" };
  }
  return {
    ok: true,
    value: create(LogFilterSchema, {
      sinceMs: BigInt(time.value.since),
      untilMs: BigInt(time.value.until),
      model: f.model.trim(),
      provider: f.provider.trim(),
      key: f.key.trim(),
      user: f.user.trim(),
      traceId: traceId.value,
      protocol: f.protocol.trim(),
      upstreamProtocol: f.upstreamProtocol.trim(),
      statusMin: status.value.min,
      statusMax: status.value.max,
      minLatencyMs: latMin.value,
      maxLatencyMs: latMax.value,
      minTokens: tokMin.value,
      maxTokens: tokMax.value,
      stream: f.stream === "" ? undefined : f.stream === "yes",
      errorsOnly: f.errorsOnly,
      outcome: outcomeOfName(f.outcome),
    }),
  };
}

/** The ListLogs request for one page of `f`. */
export function toListLogsRequest(f: LogFilters, now: number): Parsed<ListLogsRequest> {
  const filter = toLogFilter(f, now);
  if (!filter.ok) return filter;
  return {
    ok: true,
    value: create(ListLogsRequestSchema, {
      filter: filter.value,
      limit: f.limit,
      orderBy: f.sort,
      ascending: f.asc,
      pageToken: f.page,
    }),
  };
}

/** The FollowLogs request: the same filter without time bounds (new records only). */
export function toFollowLogsRequest(f: LogFilters, now: number): Parsed<FollowLogsRequest> {
  const filter = toLogFilter(f, now);
  if (!filter.ok) return filter;
  const live = create(LogFilterSchema, { ...filter.value, sinceMs: 0n, untilMs: 0n });
  return { ok: true, value: create(FollowLogsRequestSchema, { filter: live }) };
}
