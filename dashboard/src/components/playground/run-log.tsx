// What the request's log says once it has arrived: the route the data
// plane took, tokens and cost, and a link to the log.

import { ExternalLink } from "lucide-react";
import { OriginBadge } from "@/components/origin-badge";
import { ErrorAlert, Spinner } from "@/components/states";
import { StatusBadge } from "@/components/status-badge";
import type { LogWait } from "@/lib/use-run";
import { formatCost, formatDuration, formatInt } from "@/lib/format";
import { promptTokens, protocolPair } from "@/lib/log-fields";
import { Link } from "@/lib/router";

export function RunLog({ id, wait }: { id: string; wait: LogWait }) {
  if (!id) return null;
  const link = `/logs/${encodeURIComponent(id)}`;
  const r = wait.log;
  return (
    <div className="grid gap-3" data-testid="run-log">
      <p className="flex flex-wrap items-center gap-2 text-sm">
        <span className="text-muted-foreground">Request</span>
        <Link to={link} className="inline-flex items-center gap-1 font-mono text-xs hover:underline" data-testid="run-log-link">
          {id} <ExternalLink className="size-3.5" aria-hidden />
        </Link>
        {r ? <OriginBadge origin={r.origin} /> : null}
      </p>
      {wait.waiting ? (
        <p className="flex items-center gap-2 text-sm text-muted-foreground">
          <Spinner className="size-3.5" label="Waiting for the log" /> Waiting for its log (tokens, cost, route)…
        </p>
      ) : null}
      {wait.error ? <ErrorAlert message={wait.error} /> : null}
      {r ? (
        <dl className="grid grid-cols-[auto_minmax(0,1fr)] gap-x-6 gap-y-1.5 text-sm" aria-label="From the log" data-testid="run-log-facts">
          <dt className="text-muted-foreground">Status</dt>
          <dd>
            <StatusBadge status={r.status} cancelled={r.cancelled} />
          </dd>
          <dt className="text-muted-foreground">Route</dt>
          <dd data-testid="run-log-route">
            {r.provider ? `${r.provider}:${r.upstreamModel}` : "no upstream"} <span className="text-xs text-muted-foreground">({protocolPair(r)}{r.translated ? ", translated" : ""})</span>
          </dd>
          <dt className="text-muted-foreground">Attempts</dt>
          <dd>
            <ol className="grid gap-0.5 text-xs" aria-label="Attempts">
              {r.attempts.map((a, i) => (
                <li key={i} className="flex items-center gap-2">
                  <span className="tabular-nums text-muted-foreground">#{i + 1}</span>
                  <span className="font-mono">
                    {a.provider}:{a.upstreamModel}
                  </span>
                  <StatusBadge status={a.status} />
                  <span className="tabular-nums text-muted-foreground">{formatDuration(a.latencyMs)}</span>
                </li>
              ))}
              {r.attempts.length === 0 ? <li className="text-muted-foreground">none</li> : null}
            </ol>
          </dd>
          <dt className="text-muted-foreground">Tokens in / out</dt>
          <dd className="tabular-nums" data-testid="run-log-tokens">
            {formatInt(promptTokens(r))} / {formatInt(r.outputTokens)}
          </dd>
          <dt className="text-muted-foreground">Cost</dt>
          <dd className="tabular-nums" data-testid="run-log-cost">
            {formatCost(r.cost)}
          </dd>
        </dl>
      ) : null}
    </div>
  );
}
