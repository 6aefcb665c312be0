import { ArrowDown, ArrowUp, ArrowUpDown, ChevronLeft, ChevronRight, ChevronsLeft, Radio, RefreshCw, RotateCcw, ScrollText, Waves } from "lucide-react";
import { type ReactNode, useEffect, useMemo, useRef, useState } from "react";
import { OriginBadge } from "@/components/origin-badge";
import { Empty, ErrorAlert, PageHeader, Spinner, TableSkeleton } from "@/components/states";
import { OutcomeBadge, StatusBadge } from "@/components/status-badge";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card } from "@/components/ui/card";
import { Checkbox, Switch } from "@/components/ui/checkbox";
import { Input } from "@/components/ui/input";
import { Label } from "@/components/ui/label";
import { Select } from "@/components/ui/select";
import { Table, TableBody, TableCell, TableHead, TableHeader, TableRow } from "@/components/ui/table";
import { Outcome, type RequestLog } from "@/gen/llmgw/v1/logs_pb";
import { api, errorMessage } from "@/lib/api";
import {
  activeFilterCount,
  CLIENT_PROTOCOL_CHOICES,
  DEFAULT_FILTERS,
  filtersFromQuery,
  filtersToQuery,
  type LogFilters,
  PAGE_SIZES,
  type SortKey,
  type ProtocolFilterChoice,
  TIME_PRESETS,
  toFollowLogsRequest,
  toListLogsRequest,
  UPSTREAM_PROTOCOL_CHOICES,
  withFilters,
} from "@/lib/filters";
import { formatClock, formatCost, formatDateTime, formatDuration, formatTokens } from "@/lib/format";
import { OUTCOMES, protocolPair } from "@/lib/log-fields";
import { useDebounced, useQuery, useTitle } from "@/lib/hooks";
import { Link, navigate, useLocation } from "@/lib/router";
import { cn } from "@/lib/utils";

const STATUS_CLASSES = ["", "2xx", "3xx", "4xx", "5xx"];
const LIVE_CAP = 500;

function toLocalInput(iso: string): string {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

function fromLocalInput(v: string): string {
  if (!v) return "";
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? "" : d.toISOString();
}

export function LogsPage() {
  useTitle("Logs");
  const { search } = useLocation();
  const filters = useMemo(() => filtersFromQuery(search), [search]);
  const setFilters = (next: LogFilters) => {
    const q = filtersToQuery(next);
    navigate(q ? `/logs?${q}` : "/logs", { replace: true });
  };
  const update = (patch: Partial<LogFilters>) => setFilters(withFilters(filters, patch));

  // Paging: the tokens of the pages before this one.
  const [previous, setPrevious] = useState<string[]>([]);
  const listKey = filtersToQuery({ ...filters, page: "" });
  useEffect(() => setPrevious([]), [listKey]);

  const [tick, setTick] = useState(0);
  const request = useMemo(() => toListLogsRequest(filters, Date.now()), [filters, tick]); // eslint-disable-line react-hooks/exhaustive-deps
  const list = useQuery(
    async (signal) => {
      if (!request.ok) return undefined;
      return api().listLogs(request.value, { signal });
    },
    [request],
  );

  // Live tail.
  const [live, setLive] = useState(false);
  const [liveRows, setLiveRows] = useState<RequestLog[]>([]);
  const [liveError, setLiveError] = useState("");
  // Set once the control plane has answered the FollowLogs call.
  const [liveConnected, setLiveConnected] = useState(false);
  const followKey = filtersToQuery({ ...filters, page: "", sort: "time", asc: false, range: "all", from: "", to: "" });
  useEffect(() => {
    if (!live) return;
    const req = toFollowLogsRequest(filters, Date.now());
    if (!req.ok) return;
    const ctl = new AbortController();
    setLiveError("");
    setLiveConnected(false);
    (async () => {
      try {
        const stream = api().followLogs(req.value, { signal: ctl.signal, onHeader: () => setLiveConnected(true) });
        for await (const rec of stream) {
          setLiveRows((rows) => [rec, ...rows.filter((r) => r.id !== rec.id)].slice(0, LIVE_CAP));
        }
        if (!ctl.signal.aborted) setLiveError("The live stream ended. Turn live tail on again to resume.");
      } catch (e) {
        if (!ctl.signal.aborted) setLiveError(errorMessage(e));
      }
      if (!ctl.signal.aborted) {
        setLive(false);
        setLiveConnected(false);
      }
    })();
    return () => ctl.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [live, followKey]);

  const toggleLive = (on: boolean) => {
    setLiveRows([]);
    setLiveError("");
    if (on && (filters.sort !== "time" || filters.asc || filters.page)) update({ sort: "time", asc: false });
    setLive(on);
    if (!on) setTick((t) => t + 1);
  };

  const rows = useMemo(() => {
    const listed = list.data?.records ?? [];
    if (!live || liveRows.length === 0) return listed;
    const seen = new Set(liveRows.map((r) => r.id));
    return [...liveRows, ...listed.filter((r) => !seen.has(r.id))];
  }, [list.data, live, liveRows]);
  const liveIds = useMemo(() => new Set(liveRows.map((r) => r.id)), [liveRows]);

  const sortBy = (key: SortKey) => {
    if (live) return;
    update(filters.sort === key ? { asc: !filters.asc } : { sort: key, asc: false });
  };

  const nextToken = list.data?.nextPageToken ?? "";
  const pageNo = previous.length + 1;
  const detailSearch = search;

  return (
    <>
      <PageHeader
        title="Logs"
        description="Every request through the data planes, with its upstream attempts. Secrets are redacted."
        actions={
          <>
            <Switch id="live" checked={live} onChange={toggleLive} label={<span className="inline-flex items-center gap-1.5">{live ? <Radio className="size-4 animate-pulse text-emerald-600" aria-hidden /> : null}Live tail</span>} />
            <Button variant="outline" onClick={() => setTick((t) => t + 1)} disabled={list.loading} aria-label="Refresh">
              {list.loading ? <Spinner /> : <RefreshCw />}
              <span className="hidden sm:inline">Refresh</span>
            </Button>
          </>
        }
      />
      <FilterBar filters={filters} onChange={setFilters} />
      {!request.ok ? <ErrorAlert message={request.error} className="mb-4" /> : null}
      {list.error ? <ErrorAlert message={list.error} onRetry={() => setTick((t) => t + 1)} className="mb-4" /> : null}
      {liveError ? <ErrorAlert message={`Live tail stopped: ${liveError}`} className="mb-4" /> : null}
      <Card className="overflow-hidden">
        {live ? (
          <div className="flex items-center gap-2 border-b bg-emerald-50/60 px-4 py-2 text-xs text-emerald-800" role="status">
            {liveConnected ? (
              <>
                <Waves className="size-3.5" aria-hidden /> Live: new requests that match the filters appear at the top as they are stored.
                {liveRows.length ? ` ${liveRows.length} new.` : ""}
              </>
            ) : (
              <>
                <Spinner className="size-3.5 text-emerald-700" /> Connecting to the live stream…
              </>
            )}
          </div>
        ) : null}
        {list.loading && !list.data ? (
          <TableSkeleton rows={8} />
        ) : rows.length === 0 ? (
          request.ok && !list.error ? (
            <Empty title={activeFilterCount(filters) || filters.range !== "all" ? "No requests match these filters" : "No requests logged yet"} icon={<ScrollText />}>
              {activeFilterCount(filters) ? (
                <Button variant="link" className="h-auto p-0" onClick={() => setFilters({ ...DEFAULT_FILTERS, range: filters.range })}>
                  Clear the filters
                </Button>
              ) : (
                "Requests show up a few seconds after a data plane has served them."
              )}
            </Empty>
          ) : null
        ) : (
          <Table aria-label="Request logs" aria-busy={list.loading}>
            <TableHeader>
              <TableRow className="hover:bg-transparent">
                <SortHead k="time" f={filters} onSort={sortBy} disabled={live} className="pl-4">
                  Time
                </SortHead>
                <SortHead k="status" f={filters} onSort={sortBy} disabled={live}>
                  Status
                </SortHead>
                <TableHead>Model</TableHead>
                <TableHead>Provider</TableHead>
                <TableHead>Protocol</TableHead>
                <TableHead>Key · user</TableHead>
                <SortHead k="latency" f={filters} onSort={sortBy} disabled={live} right>
                  Latency
                </SortHead>
                <SortHead k="ttfb" f={filters} onSort={sortBy} disabled={live} right>
                  TTFB
                </SortHead>
                <SortHead k="tokens" f={filters} onSort={sortBy} disabled={live} right>
                  Tokens
                </SortHead>
                <SortHead k="cost" f={filters} onSort={sortBy} disabled={live} right className="pr-4">
                  Cost
                </SortHead>
              </TableRow>
            </TableHeader>
            <TableBody>
              {rows.map((r) => (
                <TableRow
                  key={r.id}
                  data-log-id={r.id}
                  className={cn("cursor-pointer", liveIds.has(r.id) && "bg-emerald-50/50")}
                  onClick={(e) => {
                    if ((e.target as HTMLElement).closest("a")) return;
                    navigate(`/logs/${encodeURIComponent(r.id)}${detailSearch}`);
                  }}
                >
                  <TableCell className="whitespace-nowrap pl-4">
                    <Link to={`/logs/${encodeURIComponent(r.id)}${detailSearch}`} className="font-mono text-xs hover:underline" title={formatDateTime(r.time || r.timeMs)}>
                      {formatClock(r.timeMs)}
                    </Link>
                    <div className="text-[11px] text-muted-foreground">{formatDateTime(r.timeMs).slice(0, 10)}</div>
                  </TableCell>
                  <TableCell>
                    <div className="flex items-center gap-1">
                      <StatusBadge status={r.status} cancelled={r.cancelled} />
                      {r.retries > 0 || r.attempts.length > 1 ? (
                        <Badge variant="outline" title={`${r.attempts.length} attempts`}>
                          ×{r.attempts.length}
                        </Badge>
                      ) : null}
                    </div>
                    {r.outcome !== Outcome.OK ? <OutcomeBadge outcome={r.outcome} className="mt-1" /> : null}
                  </TableCell>
                  <TableCell className="max-w-44">
                    <div className="flex items-center gap-1.5">
                      <span className="truncate font-medium">{r.model || "–"}</span>
                      <OriginBadge origin={r.origin} />
                    </div>
                    <div className="flex items-center gap-1 text-[11px] text-muted-foreground">
                      {r.stream ? <span title="Streaming">stream</span> : null}
                      <span className="truncate">{r.path}</span>
                    </div>
                  </TableCell>
                  <TableCell className="max-w-40">
                    <div className="truncate">{r.provider || "–"}</div>
                    <div className="truncate text-[11px] text-muted-foreground">{r.upstreamModel}</div>
                  </TableCell>
                  <TableCell className="max-w-48" data-testid="protocols">
                    <div
                      className="truncate font-mono text-xs"
                      title={r.upstreamProtocol ? (r.translated ? `Translated from ${r.protocol} to ${r.upstreamProtocol}` : "Passed through") : "No upstream answered"}
                    >
                      {protocolPair(r) || "–"}
                    </div>
                    {r.translated ? (
                      <div className="text-[11px] text-muted-foreground">
                        translated{r.droppedFields.length ? ` · ${r.droppedFields.length} dropped` : ""}
                      </div>
                    ) : null}
                  </TableCell>
                  <TableCell className="max-w-40" data-testid="key-user">
                    <div className="truncate">{r.key || <span className="text-muted-foreground">–</span>}</div>
                    {r.user ? (
                      <div className="truncate text-[11px] text-muted-foreground" title={`For user ${r.user}`}>
                        {r.user}
                      </div>
                    ) : null}
                  </TableCell>
                  <TableCell className="text-right tabular-nums">{formatDuration(r.latencyMs)}</TableCell>
                  <TableCell className="text-right tabular-nums text-muted-foreground">{r.ttfbMs ? formatDuration(r.ttfbMs) : "–"}</TableCell>
                  <TableCell className="text-right tabular-nums" title={`${r.inputTokens} in (uncached), ${r.cacheReadTokens} cache read, ${r.cacheCreationTokens} cache write, ${r.outputTokens} out (${r.reasoningTokens} reasoning); usage ${r.usageSource}`}>
                    {formatTokens(r.inputTokens + r.outputTokens)}
                  </TableCell>
                  <TableCell className="pr-4 text-right tabular-nums">{formatCost(r.cost)}</TableCell>
                </TableRow>
              ))}
            </TableBody>
          </Table>
        )}
        <nav aria-label="Pages" className="flex flex-wrap items-center justify-between gap-3 border-t px-4 py-3 text-sm">
          <div className="flex items-center gap-2 text-muted-foreground">
            <Label htmlFor="page-size" className="font-normal">
              Rows
            </Label>
            <Select id="page-size" value={String(filters.limit)} onChange={(e) => update({ limit: Number(e.target.value) })} className="w-20">
              {PAGE_SIZES.map((n) => (
                <option key={n} value={n}>
                  {n}
                </option>
              ))}
            </Select>
            <span>
              Page {pageNo}
              {rows.length ? ` · ${rows.length} shown` : ""}
            </span>
          </div>
          <div className="flex items-center gap-1">
            <Button variant="outline" size="sm" disabled={live || !filters.page} onClick={() => { setPrevious([]); update({ page: "" }); }}>
              <ChevronsLeft /> First
            </Button>
            <Button
              variant="outline"
              size="sm"
              disabled={live || !filters.page}
              onClick={() => {
                const prev = [...previous];
                const token = prev.pop() ?? "";
                setPrevious(prev);
                setFilters({ ...filters, page: token });
              }}
            >
              <ChevronLeft /> Previous
            </Button>
            <Button
              variant="outline"
              size="sm"
              disabled={live || !nextToken}
              onClick={() => {
                setPrevious([...previous, filters.page]);
                setFilters({ ...filters, page: nextToken });
              }}
            >
              Next <ChevronRight />
            </Button>
          </div>
        </nav>
      </Card>
    </>
  );
}

function SortHead({
  k,
  f,
  onSort,
  disabled,
  right,
  className,
  children,
}: {
  k: SortKey;
  f: LogFilters;
  onSort: (k: SortKey) => void;
  disabled?: boolean;
  right?: boolean;
  className?: string;
  children: ReactNode;
}) {
  const active = f.sort === k;
  const Icon = !active ? ArrowUpDown : f.asc ? ArrowUp : ArrowDown;
  return (
    <TableHead aria-sort={active ? (f.asc ? "ascending" : "descending") : "none"} className={cn(right && "text-right", className)}>
      <button
        type="button"
        disabled={disabled}
        onClick={() => onSort(k)}
        className={cn(
          "-mx-1 inline-flex items-center gap-1 rounded px-1 py-0.5 hover:text-foreground focus-visible:outline-none focus-visible:ring-2 focus-visible:ring-ring disabled:cursor-default",
          active && "text-foreground",
        )}
      >
        {children}
        <Icon className={cn("size-3", !active && "opacity-40")} aria-hidden />
      </button>
    </TableHead>
  );
}

/** Text fields are kept as typed and applied after a pause; selects apply at once. */
function FilterBar({ filters, onChange }: { filters: LogFilters; onChange: (f: LogFilters) => void }) {
  const models = useQuery((signal) => api().listModels({}, { signal }), []);
  const providers = useQuery((signal) => api().listProviders({}, { signal }), []);
  const keys = useQuery((signal) => api().listApiKeys({}, { signal }), []);

  const [draft, setDraft] = useState(filters);
  const current = filtersToQuery(filters);
  const lastCommitted = useRef(current);
  // The URL changed from elsewhere (back button, a link): show it.
  useEffect(() => {
    if (current !== lastCommitted.current) {
      lastCommitted.current = current;
      setDraft(filters);
    }
  }, [current, filters]);
  const debounced = useDebounced(draft, 400);
  useEffect(() => {
    const q = filtersToQuery(debounced);
    if (q !== lastCommitted.current) {
      lastCommitted.current = q;
      onChange(debounced);
    }
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [debounced]);

  const typed = (patch: Partial<LogFilters>) => setDraft((d) => withFilters(d, patch));
  const now = (patch: Partial<LogFilters>) => {
    const next = withFilters(draft, patch);
    setDraft(next);
    lastCommitted.current = filtersToQuery(next);
    onChange(next);
  };
  const statusMode = STATUS_CLASSES.includes(draft.status) ? draft.status : "custom";
  const [customStatus, setCustomStatus] = useState(statusMode === "custom");
  const count = activeFilterCount(draft);

  const options = (names: string[], value: string) => {
    const all = value && !names.includes(value) ? [...names, value] : names;
    return all.map((n) => (
      <option key={n} value={n}>
        {n}
      </option>
    ));
  };
  // A protocol from the URL that is not among the choices is kept, shown by its name.
  const protocolOptions = (choices: ProtocolFilterChoice[], value: string) => {
    const all = value && !choices.some((c) => c.value === value) ? [...choices, { value, label: value }] : choices;
    return all.map((c) => (
      <option key={c.value} value={c.value}>
        {c.label}
      </option>
    ));
  };

  return (
    <Card className="mb-4 p-4">
      <form role="search" aria-label="Log filters" onSubmit={(e) => e.preventDefault()} className="grid gap-3">
        <div className="grid grid-cols-2 gap-3 sm:grid-cols-3 lg:grid-cols-4">
          <FilterField label="Time" id="f-range">
            <Select
              id="f-range"
              value={draft.range}
              onChange={(e) => {
                const range = e.target.value;
                if (range === "custom" && !draft.from) {
                  const to = new Date();
                  const from = new Date(to.getTime() - 3_600_000);
                  now({ range, from: from.toISOString(), to: "" });
                } else now({ range });
              }}
            >
              {TIME_PRESETS.map((p) => (
                <option key={p.value} value={p.value}>
                  {p.label}
                </option>
              ))}
            </Select>
          </FilterField>
          {draft.range === "custom" ? (
            <>
              <FilterField label="From" id="f-from">
                <Input id="f-from" type="datetime-local" value={toLocalInput(draft.from)} onChange={(e) => typed({ from: fromLocalInput(e.target.value) })} />
              </FilterField>
              <FilterField label="To" id="f-to">
                <Input id="f-to" type="datetime-local" value={toLocalInput(draft.to)} onChange={(e) => typed({ to: fromLocalInput(e.target.value) })} />
              </FilterField>
            </>
          ) : null}
          <FilterField label="Model" id="f-model">
            <Select id="f-model" value={draft.model} onChange={(e) => now({ model: e.target.value })}>
              <option value="">Any model</option>
              {options((models.data?.models ?? []).map((m) => m.name), draft.model)}
            </Select>
          </FilterField>
          <FilterField label="Provider" id="f-provider">
            <Select id="f-provider" value={draft.provider} onChange={(e) => now({ provider: e.target.value })}>
              <option value="">Any provider</option>
              {options((providers.data?.providers ?? []).map((p) => p.name), draft.provider)}
            </Select>
          </FilterField>
          <FilterField label="Key" id="f-key">
            <Select id="f-key" value={draft.key} onChange={(e) => now({ key: e.target.value })}>
              <option value="">Any key</option>
              {options((keys.data?.apiKeys ?? []).map((k) => k.name), draft.key)}
            </Select>
          </FilterField>
          <FilterField label="User" id="f-user">
            <Input id="f-user" placeholder="Any user" autoComplete="off" spellCheck={false} value={draft.user} onChange={(e) => typed({ user: e.target.value })} />
          </FilterField>
          <FilterField label="Trace id" id="f-trace">
            <Input
              id="f-trace"
              placeholder="Any trace"
              title="A W3C trace id (32 hex digits) or a traceparent header: the requests of that trace"
              autoComplete="off"
              spellCheck={false}
              className="font-mono text-xs"
              value={draft.traceId}
              onChange={(e) => typed({ traceId: e.target.value })}
            />
          </FilterField>
          <FilterField label="Status" id="f-status">
            <div className="flex gap-2">
              <Select
                id="f-status"
                value={customStatus ? "custom" : statusMode}
                onChange={(e) => {
                  if (e.target.value === "custom") {
                    setCustomStatus(true);
                  } else {
                    setCustomStatus(false);
                    now({ status: e.target.value });
                  }
                }}
                className={customStatus ? "w-28 shrink-0" : "w-full"}
              >
                <option value="">Any</option>
                <option value="2xx">2xx</option>
                <option value="3xx">3xx</option>
                <option value="4xx">4xx</option>
                <option value="5xx">5xx</option>
                <option value="custom">Code or range…</option>
              </Select>
              {customStatus ? (
                <Input aria-label="Status code or range" placeholder="429 or 400-499" value={STATUS_CLASSES.includes(draft.status) ? "" : draft.status} onChange={(e) => typed({ status: e.target.value })} />
              ) : null}
            </div>
          </FilterField>
          <FilterField label="Stream" id="f-stream">
            <Select id="f-stream" value={draft.stream} onChange={(e) => now({ stream: e.target.value as LogFilters["stream"] })}>
              <option value="">Any</option>
              <option value="yes">Streaming</option>
              <option value="no">Not streaming</option>
            </Select>
          </FilterField>
          <FilterField label="Client protocol" id="f-protocol">
            <Select id="f-protocol" value={draft.protocol} onChange={(e) => now({ protocol: e.target.value })}>
              <option value="">Any client protocol</option>
              {protocolOptions(CLIENT_PROTOCOL_CHOICES, draft.protocol)}
            </Select>
          </FilterField>
          <FilterField label="Outcome" id="f-outcome">
            <Select id="f-outcome" value={draft.outcome} onChange={(e) => now({ outcome: e.target.value })}>
              <option value="">Any outcome</option>
              {OUTCOMES.map((o) => (
                <option key={o.name} value={o.name} title={o.hint}>
                  {o.label}
                </option>
              ))}
            </Select>
          </FilterField>
          <FilterField label="Upstream protocol" id="f-upstream-protocol">
            <Select id="f-upstream-protocol" value={draft.upstreamProtocol} onChange={(e) => now({ upstreamProtocol: e.target.value })}>
              <option value="">Any upstream protocol</option>
              {protocolOptions(UPSTREAM_PROTOCOL_CHOICES, draft.upstreamProtocol)}
            </Select>
          </FilterField>
        </div>
        <div className="flex flex-wrap items-end gap-3">
          <RangeInputs label="Latency (ms)" id="f-lat" min={draft.latencyMin} max={draft.latencyMax} onMin={(v) => typed({ latencyMin: v })} onMax={(v) => typed({ latencyMax: v })} />
          <RangeInputs label="Tokens" id="f-tok" min={draft.tokensMin} max={draft.tokensMax} onMin={(v) => typed({ tokensMin: v })} onMax={(v) => typed({ tokensMax: v })} />
          <Checkbox id="f-errors" className="h-9" checked={draft.errorsOnly} onChange={(e) => now({ errorsOnly: e.target.checked })} label="Errors only" />
          <div className="ml-auto flex items-center gap-2">
            {count ? <span className="text-xs text-muted-foreground">{count} filter{count === 1 ? "" : "s"}</span> : null}
            <Button
              variant="ghost"
              size="sm"
              disabled={!count && draft.range === DEFAULT_FILTERS.range}
              onClick={() => {
                setCustomStatus(false);
                now({ ...DEFAULT_FILTERS, sort: draft.sort, asc: draft.asc, limit: draft.limit });
              }}
            >
              <RotateCcw /> Reset
            </Button>
          </div>
        </div>
      </form>
    </Card>
  );
}

function FilterField({ label, id, children }: { label: string; id: string; children: ReactNode }) {
  return (
    <div className="grid min-w-0 gap-1.5">
      <Label htmlFor={id} className="text-xs text-muted-foreground">
        {label}
      </Label>
      {children}
    </div>
  );
}

function RangeInputs({ label, id, min, max, onMin, onMax }: { label: string; id: string; min: string; max: string; onMin: (v: string) => void; onMax: (v: string) => void }) {
  return (
    <fieldset className="grid gap-1.5">
      <legend className="mb-1.5 text-xs font-medium text-muted-foreground">{label}</legend>
      <div className="flex items-center gap-1.5">
        <Input id={`${id}-min`} aria-label={`${label}, at least`} inputMode="numeric" placeholder="min" value={min} onChange={(e) => onMin(e.target.value)} className="w-24" />
        <span className="text-muted-foreground" aria-hidden>
          –
        </span>
        <Input id={`${id}-max`} aria-label={`${label}, at most`} inputMode="numeric" placeholder="max" value={max} onChange={(e) => onMax(e.target.value)} className="w-24" />
      </div>
    </fieldset>
  );
}
