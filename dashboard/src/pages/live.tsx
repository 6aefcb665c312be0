import { Activity, CircleStop, Radio } from "lucide-react";
import { useState } from "react";
import { ConfirmDialog } from "@/components/confirm";
import { Empty, ErrorAlert, PageHeader, Spinner, TableSkeleton } from "@/components/states";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card } from "@/components/ui/card";
import { Table, TableBody, TableCell, TableHead, TableHeader, TableRow } from "@/components/ui/table";
import type { CancelRequestResponse } from "@/gen/llmgw/v1/admin_pb";
import type { InFlightRequest } from "@/gen/llmgw/v1/live_pb";
import { api } from "@/lib/api";
import { formatInt } from "@/lib/format";
import { useInterval, useTitle } from "@/lib/hooks";
import { formatAge, type InFlightState, POLL_MS, useInFlight } from "@/lib/live";
import { Link } from "@/lib/router";

export function LivePage() {
  useTitle("Live");
  const live = useInFlight();
  const [now, setNow] = useState(() => Date.now());
  useInterval(() => setNow(Date.now()), 1000);
  const [target, setTarget] = useState<InFlightRequest>();
  const [result, setResult] = useState<CancelRequestResponse>();

  return (
    <>
      <PageHeader
        title="Live"
        description="The requests every data plane is serving right now, oldest first. They leave the list when they end; the request log has them a moment later."
        actions={<Connection s={live} />}
      />
      {result ? (
        <div role="status" data-testid="cancel-result" className="mb-4 rounded-lg border border-emerald-200 bg-emerald-50 px-4 py-3 text-sm text-emerald-800">
          Cancelled <span className="font-mono text-xs">{result.id}</span> on data plane <span className="font-medium">{result.nodeId}</span>
          {result.confirmed ? ": the data plane confirmed it." : ": sent; the data plane has not confirmed it yet."} Logged as cancelled by {result.by}.{" "}
          <Link to={`/logs/${encodeURIComponent(result.id)}`} className="font-medium underline">
            Its log
          </Link>
        </div>
      ) : null}
      {live.error && live.mode !== "stream" ? <ErrorAlert message={live.error} className="mb-4" /> : null}
      <Card className="overflow-hidden">
        {!live.loaded ? (
          <TableSkeleton rows={4} />
        ) : live.requests.length === 0 ? (
          <Empty title="Nothing in flight" icon={<Activity />}>
            Requests show up here while a data plane serves them.
          </Empty>
        ) : (
          <Table aria-label="Requests in flight">
            <TableHeader>
              <TableRow className="hover:bg-transparent">
                <TableHead className="pl-4">Data plane</TableHead>
                <TableHead>Request</TableHead>
                <TableHead>Key</TableHead>
                <TableHead>Model</TableHead>
                <TableHead>Target</TableHead>
                <TableHead>Protocols</TableHead>
                <TableHead>Stream</TableHead>
                <TableHead className="text-right">Age</TableHead>
                <TableHead className="text-right">Attempt</TableHead>
                <TableHead className="text-right">Tokens</TableHead>
                <TableHead className="pr-4">
                  <span className="sr-only">Actions</span>
                </TableHead>
              </TableRow>
            </TableHeader>
            <TableBody>
              {live.requests.map((r) => (
                <TableRow key={r.id} data-request-id={r.id}>
                  <TableCell className="pl-4">{r.nodeId}</TableCell>
                  <TableCell className="font-mono text-xs" title={r.id}>
                    <Link to={`/logs/${encodeURIComponent(r.id)}`} className="hover:underline">
                      {r.id.slice(0, 8)}…{r.id.slice(-4)}
                    </Link>
                  </TableCell>
                  <TableCell>{r.key || "–"}</TableCell>
                  <TableCell className="font-medium">{r.model || "–"}</TableCell>
                  <TableCell>{r.provider ? `${r.provider}:${r.upstreamModel}` : <span className="text-muted-foreground">not yet</span>}</TableCell>
                  <TableCell className="whitespace-nowrap text-xs">
                    {r.clientProtocol}
                    {r.upstreamProtocol ? ` → ${r.upstreamProtocol}` : ""}
                  </TableCell>
                  <TableCell>{r.stream ? <Badge variant="info">stream</Badge> : <span className="text-muted-foreground">no</span>}</TableCell>
                  <TableCell className="text-right tabular-nums" data-testid="age">
                    {formatAge(r.startedMs, now)}
                  </TableCell>
                  <TableCell className="text-right tabular-nums">{r.attempt}</TableCell>
                  <TableCell className="text-right tabular-nums" data-testid="tokens">
                    {formatInt(r.tokens)}
                  </TableCell>
                  <TableCell className="pr-4 text-right">
                    <Button variant="outline" size="sm" onClick={() => setTarget(r)} aria-label={`Cancel request ${r.id}`}>
                      <CircleStop /> Cancel
                    </Button>
                  </TableCell>
                </TableRow>
              ))}
            </TableBody>
          </Table>
        )}
      </Card>
      <ConfirmDialog
        open={!!target}
        title="Cancel this request?"
        description={
          target
            ? `Request ${target.id} (${target.model || "no model"}, key ${target.key || "none"}) on data plane ${target.nodeId}: the upstream is aborted and the client gets an error. It is logged as cancelled by an admin.`
            : ""
        }
        confirmLabel="Cancel request"
        onConfirm={async () => {
          if (!target) return;
          setResult(undefined);
          const r = await api().cancelRequest({ id: target.id });
          setResult(r);
        }}
        onClose={() => setTarget(undefined)}
      />
    </>
  );
}

function Connection({ s }: { s: InFlightState }) {
  const count = s.loaded ? (
    <Badge variant="secondary" data-testid="inflight-count">
      {s.requests.length} in flight
    </Badge>
  ) : null;
  let status;
  switch (s.mode) {
    case "connecting":
      status = (
        <span className="flex items-center gap-1.5 text-sm text-muted-foreground">
          <Spinner className="size-3.5" /> Connecting…
        </span>
      );
      break;
    case "stream":
      status = (
        <span className="flex items-center gap-1.5 text-sm text-emerald-700" data-testid="live-status">
          <Radio className="size-4" aria-hidden /> Live
        </span>
      );
      break;
    case "reconnecting":
      status = (
        <span className="flex items-center gap-1.5 text-sm text-amber-700" data-testid="live-status">
          <Spinner className="size-3.5" /> Stream ended; reconnecting in {Math.round(s.retryInMs / 1000)} s
        </span>
      );
      break;
    case "poll":
      status = (
        <span className="text-sm text-muted-foreground" data-testid="live-status">
          Streaming is not available here: refreshed every {POLL_MS / 1000} s
        </span>
      );
      break;
  }
  return (
    <div className="flex items-center gap-3" role="status">
      {count}
      {status}
    </div>
  );
}
