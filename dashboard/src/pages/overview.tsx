import { Activity, AlertTriangle, Clock, Coins, Hash, RefreshCw, Server, Timer } from "lucide-react";
import { type ReactNode, useMemo, useState } from "react";
import { Legend, type Series, TimeChart } from "@/components/chart";
import { Empty, ErrorAlert, PageHeader, Spinner, TableSkeleton } from "@/components/states";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { Select } from "@/components/ui/select";
import { Skeleton } from "@/components/ui/skeleton";
import { Table, TableBody, TableCell, TableHead, TableHeader, TableRow } from "@/components/ui/table";
import type { DataPlane, GetStatsResponse, StatsRow } from "@/gen/llmgw/v1/admin_pb";
import { api } from "@/lib/api";
import { fillBuckets, WINDOWS } from "@/lib/chart";
import { filtersToQuery, DEFAULT_FILTERS } from "@/lib/filters";
import {
  formatCost,
  formatDateTime,
  formatDuration,
  formatInt,
  formatPercent,
  formatRelative,
  formatTokens,
} from "@/lib/format";
import { useInterval, useQuery, useTitle } from "@/lib/hooks";
import { useInFlight } from "@/lib/live";
import { Link, navigate, useLocation } from "@/lib/router";

const C = {
  blue: "var(--color-chart-1)",
  violet: "var(--color-chart-2)",
  green: "var(--color-chart-3)",
  orange: "var(--color-chart-4)",
  red: "var(--color-chart-5)",
};

interface Loaded {
  since: number;
  until: number;
  bucketS: number;
  total: GetStatsResponse;
  models: StatsRow[];
  providers: StatsRow[];
  keys: StatsRow[];
  users: StatsRow[];
}

export function OverviewPage() {
  useTitle("Overview");
  const { search } = useLocation();
  const winValue = new URLSearchParams(search).get("window") ?? "1h";
  const win = WINDOWS.find((w) => w.value === winValue) ?? WINDOWS[1];
  const [now, setNow] = useState(() => Date.now());
  useInterval(() => setNow(Date.now()), 30_000);

  const stats = useQuery<Loaded>(
    async (signal) => {
      const since = now - win.ms;
      const filter = { sinceMs: BigInt(since) };
      const group = (groupBy: string) => api().getStats({ filter, groupBy }, { signal });
      const [total, models, providers, keys, users] = await Promise.all([
        api().getStats({ filter, bucketS: win.bucketS }, { signal }),
        group("model"),
        group("provider"),
        group("key"),
        group("user"),
      ]);
      return {
        since,
        until: now,
        bucketS: win.bucketS,
        total,
        models: models.groups,
        providers: providers.groups,
        keys: keys.groups,
        users: users.groups,
      };
    },
    [win.value, now],
  );
  const planes = useQuery((signal) => api().listDataPlanes({}, { signal }), [now]);
  const inFlight = useInFlight();

  const setWindow = (value: string) => {
    const q = new URLSearchParams(search);
    q.set("window", value);
    navigate(`/?${q.toString()}`, { replace: true });
  };

  const d = stats.data;
  const total = d?.total.total;
  return (
    <>
      <PageHeader
        title="Overview"
        description="Traffic through every data plane, and the data planes themselves."
        actions={
          <>
            <Link
              to="/live"
              data-testid="inflight-link"
              title="The requests being served right now"
              className="inline-flex h-9 items-center gap-2 rounded-md border bg-background px-3 text-sm font-medium shadow-sm hover:bg-accent focus-visible:outline-none focus-visible:ring-2 focus-visible:ring-ring"
            >
              <span className={inFlight.requests.length ? "size-2 animate-pulse rounded-full bg-emerald-500" : "size-2 rounded-full bg-muted-foreground/40"} aria-hidden />
              <span data-testid="inflight-count" className="tabular-nums">
                {inFlight.loaded ? inFlight.requests.length : "–"}
              </span>{" "}
              in flight
            </Link>
            <label htmlFor="window" className="sr-only">
              Time window
            </label>
            <Select id="window" value={win.value} onChange={(e) => setWindow(e.target.value)} className="w-44">
              {WINDOWS.map((w) => (
                <option key={w.value} value={w.value}>
                  {w.label}
                </option>
              ))}
            </Select>
            <Button variant="outline" onClick={() => setNow(Date.now())} disabled={stats.loading} aria-label="Refresh">
              {stats.loading ? <Spinner /> : <RefreshCw />}
              <span className="hidden sm:inline">Refresh</span>
            </Button>
          </>
        }
      />
      {stats.error ? <ErrorAlert message={stats.error} onRetry={stats.reload} className="mb-6" /> : null}

      <section aria-label="Totals" className="mb-6 grid grid-cols-2 gap-3 md:grid-cols-3 xl:grid-cols-6">
        <Kpi icon={<Hash />} label="Requests" loading={!d && stats.loading}>
          <Value>{total ? formatInt(total.requests) : "–"}</Value>
          <Sub>{total ? `${(Number(total.requests) / (win.ms / 60_000)).toFixed(2)} / min` : ""}</Sub>
        </Kpi>
        <Kpi icon={<AlertTriangle />} label="Error rate" loading={!d && stats.loading}>
          <Value>{total ? formatPercent(total.errorRate) : "–"}</Value>
          <Sub>{total ? `${formatInt(total.errors)} failed` : ""}</Sub>
        </Kpi>
        <Kpi icon={<Timer />} label="Latency p50 / p95" loading={!d && stats.loading}>
          <Value>{total?.requests ? formatDuration(total.latencyP50Ms) : "–"}</Value>
          <Sub>{total?.requests ? `p95 ${formatDuration(total.latencyP95Ms)}` : ""}</Sub>
        </Kpi>
        <Kpi icon={<Clock />} label="Time to first byte" loading={!d && stats.loading}>
          <Value>{total?.requests ? formatDuration(total.ttfbP50Ms) : "–"}</Value>
          <Sub>{total?.requests ? `p95 ${formatDuration(total.ttfbP95Ms)}` : ""}</Sub>
        </Kpi>
        <Kpi icon={<Activity />} label="Tokens" loading={!d && stats.loading}>
          <Value>{total ? formatTokens(total.inputTokens + total.outputTokens) : "–"}</Value>
          <Sub>{total ? `${formatTokens(total.inputTokens)} in · ${formatTokens(total.outputTokens)} out` : ""}</Sub>
        </Kpi>
        <Kpi icon={<Coins />} label="Cost" loading={!d && stats.loading}>
          <Value>{total ? formatCost(total.cost) : "–"}</Value>
          <Sub>{win.label.toLowerCase()}</Sub>
        </Kpi>
      </section>

      {d?.total.source ? (
        <p className="-mt-4 mb-6 text-xs text-muted-foreground" data-testid="stats-source" title="Where the figures come from: the rollups (percentiles from merged sketches, at most 1% above exact) or the raw request logs">
          Source: {d.total.source}
        </p>
      ) : null}

      <Charts data={d} loading={stats.loading} windowLabel={win.label} />

      <section aria-label="Top" className="mb-6 grid gap-4 lg:grid-cols-2 2xl:grid-cols-4">
        <TopTable title="Top models" what="model" rows={d?.models} loading={!d && stats.loading} range={win.value} />
        <TopTable title="Top providers" what="provider" rows={d?.providers} loading={!d && stats.loading} range={win.value} />
        <TopTable title="Top keys" what="key" rows={d?.keys} loading={!d && stats.loading} range={win.value} />
        <TopTable title="Top users" what="user" rows={d?.users} loading={!d && stats.loading} range={win.value} />
      </section>

      <DataPlanes
        planes={planes.data?.dataPlanes}
        version={planes.data ? Number(planes.data.configVersion) : 0}
        loading={planes.loading && !planes.data}
        error={planes.error}
        retry={planes.reload}
      />
    </>
  );
}

/** Axis ticks in ms keep their fraction below 10 ms (0.5 ms, 1.5 ms). */
function axisMs(v: number): string {
  return v > 0 && v < 10 ? `${Number(v.toFixed(1))} ms` : formatDuration(v);
}

function Value({ children }: { children: ReactNode }) {
  return <div className="truncate text-xl font-semibold tabular-nums tracking-tight">{children}</div>;
}

function Sub({ children }: { children: ReactNode }) {
  return <div className="mt-1 truncate text-xs font-normal text-muted-foreground">{children || "\u00a0"}</div>;
}

function Kpi({ icon, label, loading, children }: { icon: ReactNode; label: string; loading: boolean; children: ReactNode }) {
  return (
    <Card data-testid={`kpi-${label}`}>
      <div className="p-4">
        <div className="mb-2 flex items-center justify-between text-xs font-medium text-muted-foreground [&_svg]:size-3.5">
          {label}
          {icon}
        </div>
        {loading ? <Skeleton className="h-10 w-24" /> : children}
      </div>
    </Card>
  );
}

function ChartCard({ title, description, series, children }: { title: string; description?: string; series: Series[]; children: ReactNode }) {
  return (
    <Card>
      <CardHeader className="flex-row flex-wrap items-start justify-between gap-2">
        <div className="grid gap-1">
          <CardTitle>{title}</CardTitle>
          {description ? <CardDescription>{description}</CardDescription> : null}
        </div>
        {series.length > 1 ? <Legend series={series} /> : null}
      </CardHeader>
      <CardContent className="pb-3">{children}</CardContent>
    </Card>
  );
}

function Charts({ data, loading, windowLabel }: { data: Loaded | undefined; loading: boolean; windowLabel: string }) {
  const shaped = useMemo(() => {
    if (!data) return undefined;
    const buckets = fillBuckets(data.total.series, data.since, data.until, data.bucketS);
    const times = buckets.map((b) => b.start);
    const per = data.bucketS / 60;
    const pick = (f: (b: NonNullable<(typeof buckets)[number]["bucket"]>) => number, empty: number | null = 0) =>
      buckets.map((b) => (b.bucket ? f(b.bucket) : empty));
    const has = (b: { requests: bigint }) => b.requests > 0n;
    return {
      times,
      rpm: [{ name: "Requests / min", color: C.blue, values: pick((b) => Number(b.requests) / per) }],
      errors: [
        {
          name: "Error rate",
          color: C.red,
          values: pick((b) => (has(b) ? (Number(b.errors) / Number(b.requests)) * 100 : 0)),
        },
      ],
      latency: [
        { name: "p50", color: C.blue, values: pick((b) => b.latencyP50Ms, null) },
        { name: "p95", color: C.violet, values: pick((b) => b.latencyP95Ms, null) },
      ],
      ttfb: [{ name: "TTFB p50", color: C.green, values: pick((b) => b.ttfbP50Ms, null) }],
      tokens: [
        { name: "Input", color: C.blue, values: pick((b) => Number(b.inputTokens)) },
        { name: "Output", color: C.orange, values: pick((b) => Number(b.outputTokens)) },
      ],
      cost: [{ name: "Cost", color: C.green, values: pick((b) => b.cost) }],
    };
  }, [data]);

  if (!shaped) {
    return (
      <section aria-label="Charts" className="mb-6 grid gap-4 lg:grid-cols-2">
        {Array.from({ length: 2 }, (_, i) => (
          <Card key={i} className="p-5">
            {loading ? <Skeleton className="h-[200px] w-full" /> : null}
          </Card>
        ))}
      </section>
    );
  }
  if (data && data.total.total && data.total.total.requests === 0n) {
    return (
      <Card className="mb-6">
        <Empty title={`No requests in the ${windowLabel.toLowerCase()}`} icon={<Activity />}>
          Send requests to a data plane with a client key; they show up here a few seconds later.
        </Empty>
      </Card>
    );
  }
  const bucket = data ? `${data.bucketS >= 3600 ? `${data.bucketS / 3600} h` : `${data.bucketS / 60} min`} buckets` : "";
  return (
    <section aria-label="Charts" className="mb-6 grid gap-4 lg:grid-cols-2">
      <ChartCard title="Requests per minute" description={bucket} series={shaped.rpm}>
        <TimeChart label="Requests per minute" times={shaped.times} series={shaped.rpm} format={(v) => (v < 10 ? String(Number(v.toFixed(2))) : formatTokens(v))} />
      </ChartCard>
      <ChartCard title="Error rate" description="Failed requests: status ≥ 400, cancelled, or an error" series={shaped.errors}>
        <TimeChart label="Error rate in percent" times={shaped.times} series={shaped.errors} format={(v) => `${Number(v.toFixed(1))}%`} />
      </ChartCard>
      <ChartCard title="Latency" description="Whole request, p50 and p95" series={shaped.latency}>
        <TimeChart label="Latency p50 and p95" times={shaped.times} series={shaped.latency} format={formatDuration} axisFormat={axisMs} area={false} />
      </ChartCard>
      <ChartCard title="Time to first byte" description="p50" series={shaped.ttfb}>
        <TimeChart label="Time to first byte p50" times={shaped.times} series={shaped.ttfb} format={formatDuration} axisFormat={axisMs} />
      </ChartCard>
      <ChartCard title="Tokens" description="Per bucket" series={shaped.tokens}>
        <TimeChart label="Input and output tokens" times={shaped.times} series={shaped.tokens} format={formatTokens} />
      </ChartCard>
      <ChartCard title="Cost" description="US dollars per bucket" series={shaped.cost}>
        <TimeChart
          label="Cost in US dollars"
          times={shaped.times}
          series={shaped.cost}
          format={(v) => (v > 0 && v < 0.0001 ? `$${v.toPrecision(2)}` : formatCost(v))}
          axisFormat={(v) => (v === 0 ? "$0" : v < 0.01 ? `$${Number(v.toPrecision(2))}` : formatCost(v))}
        />
      </ChartCard>
    </section>
  );
}

function TopTable({
  title,
  what,
  rows,
  loading,
  range,
}: {
  title: string;
  what: "model" | "provider" | "key" | "user";
  rows: StatsRow[] | undefined;
  loading: boolean;
  range: string;
}) {
  const top = useMemo(
    () => [...(rows ?? [])].sort((a, b) => Number(b.requests - a.requests) || b.cost - a.cost).slice(0, 6),
    [rows],
  );
  const max = top.reduce((m, r) => Math.max(m, Number(r.requests)), 0);
  return (
    <Card className="overflow-hidden">
      <CardHeader className="flex-row items-baseline justify-between">
        <CardTitle>{title}</CardTitle>
        <span className="text-xs text-muted-foreground">requests · errors · cost</span>
      </CardHeader>
      {loading ? (
        <TableSkeleton rows={3} />
      ) : top.length === 0 ? (
        <Empty title="Nothing yet" className="py-6" />
      ) : (
        <ul className="grid gap-3 px-5 pb-5" aria-label={title}>
          {top.map((r) => {
            const q = filtersToQuery({ ...DEFAULT_FILTERS, range, [what]: r.group });
            return (
              <li key={r.group || "(none)"} className="grid gap-1">
                <div className="flex items-baseline justify-between gap-3 text-sm">
                  {r.group ? (
                    <Link to={`/logs?${q}`} className="min-w-0 truncate font-medium hover:underline" title={`Logs of ${r.group}`}>
                      {r.group}
                    </Link>
                  ) : (
                    <span className="text-muted-foreground" title={what === "user" ? "Requests whose client named no user" : undefined}>
                      {what === "user" ? "(no user)" : "(none)"}
                    </span>
                  )}
                  <span className="shrink-0 text-xs tabular-nums text-muted-foreground">
                    <span className="font-medium text-foreground">{formatInt(r.requests)}</span> · {formatPercent(r.errorRate)} ·{" "}
                    {formatCost(r.cost)}
                  </span>
                </div>
                <div className="h-1.5 rounded-full bg-muted" aria-hidden>
                  <div className="h-1.5 rounded-full bg-chart-1" style={{ width: `${max ? (Number(r.requests) / max) * 100 : 0}%` }} />
                </div>
              </li>
            );
          })}
        </ul>
      )}
    </Card>
  );
}

export function SnapshotState({ plane, version }: { plane: DataPlane; version: number }) {
  const acked = Number(plane.ackedVersion);
  const nacked = Number(plane.nackedVersion);
  if (nacked > acked) {
    return (
      <Badge variant="destructive" title={plane.lastNackError}>
        NACK v{nacked}
      </Badge>
    );
  }
  if (!acked) return <Badge variant="secondary">no snapshot yet</Badge>;
  if (version && acked < version) {
    return (
      <Badge variant="warning" title={`The control plane is at v${version}`}>
        ACK v{acked} · behind
      </Badge>
    );
  }
  return <Badge variant="success">ACK v{acked}</Badge>;
}

function DataPlanes({
  planes,
  version,
  loading,
  error,
  retry,
}: {
  planes: DataPlane[] | undefined;
  version: number;
  loading: boolean;
  error: string;
  retry: () => void;
}) {
  return (
    <Card className="overflow-hidden">
      <CardHeader>
        <CardTitle>Data planes</CardTitle>
        <CardDescription>
          {version ? `The control plane serves configuration version ${version}.` : "Snapshot versions each data plane has applied."}
        </CardDescription>
      </CardHeader>
      {error ? (
        <div className="px-5 pb-5">
          <ErrorAlert message={error} onRetry={retry} />
        </div>
      ) : loading ? (
        <TableSkeleton rows={2} />
      ) : !planes || planes.length === 0 ? (
        <Empty title="No data plane has connected yet" icon={<Server />}>
          Start one with <code className="font-mono">llmgw-dataplane --control-plane {window.location.origin}</code>.
        </Empty>
      ) : (
        <Table>
          <TableHeader>
            <TableRow className="hover:bg-transparent">
              <TableHead className="pl-5">Node</TableHead>
              <TableHead>Connection</TableHead>
              <TableHead>Snapshot</TableHead>
              <TableHead>Last rejection</TableHead>
              <TableHead>Peer</TableHead>
              <TableHead>Connected since</TableHead>
              <TableHead className="pr-5">Last seen</TableHead>
            </TableRow>
          </TableHeader>
          <TableBody>
            {planes.map((p) => (
              <TableRow key={p.nodeId}>
                <TableCell className="pl-5 font-medium">{p.nodeId}</TableCell>
                <TableCell>
                  {p.connected ? <Badge variant="success">connected</Badge> : <Badge variant="secondary">disconnected</Badge>}
                </TableCell>
                <TableCell>
                  <SnapshotState plane={p} version={version} />
                </TableCell>
                <TableCell className="max-w-72 truncate text-xs text-muted-foreground" title={p.lastNackError}>
                  {p.lastNackError ? `v${p.nackedVersion}: ${p.lastNackError}` : "–"}
                </TableCell>
                <TableCell className="font-mono text-xs">{p.peerAddress || "–"}</TableCell>
                <TableCell className="whitespace-nowrap text-xs">{formatDateTime(p.connectedSince)}</TableCell>
                <TableCell className="whitespace-nowrap pr-5 text-xs" title={formatDateTime(p.lastSeen)}>
                  {formatRelative(p.lastSeen)}
                </TableCell>
              </TableRow>
            ))}
          </TableBody>
        </Table>
      )}
    </Card>
  );
}
