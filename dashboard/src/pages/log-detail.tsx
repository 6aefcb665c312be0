import { ArrowLeft, CircleAlert, CircleCheck, CircleX, Repeat, Terminal } from "lucide-react";
import { type ReactNode, useMemo, useState } from "react";
import { ConversationView, Fallback } from "@/components/conversation";
import { CopyButton } from "@/components/copy-button";
import { OriginBadge } from "@/components/origin-badge";
import { ReplayDialog } from "@/components/replay-dialog";
import { ReplayOf } from "@/components/replay-of";
import { Empty, ErrorAlert, TableSkeleton } from "@/components/states";
import { OutcomeBadge, StatusBadge } from "@/components/status-badge";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { type Attempt, Outcome, type RequestLog } from "@/gen/llmgw/v1/logs_pb";
import { api } from "@/lib/api";
import { toConversation } from "@/lib/conversation";
import { toCurl } from "@/lib/curl";
import { DEFAULT_FILTERS, filtersToQuery } from "@/lib/filters";
import { formatCost, formatDateTime, formatDuration, formatInt } from "@/lib/format";
import { mediaRows, promptTokens, protocolPair, stopReasonHint, upstreamBodyNote, usageRows } from "@/lib/log-fields";
import { useQuery, useTitle } from "@/lib/hooks";
import { redactHeaders } from "@/lib/redact";
import { replayBlocker } from "@/lib/replay";
import { Link, useLocation } from "@/lib/router";
import { isSse, parseSse, prettyBody } from "@/lib/sse";
import { layoutAttempts, ticks } from "@/lib/timeline";
import { cn } from "@/lib/utils";

export function LogDetailPage({ id }: { id: string }) {
  useTitle("Request");
  const { search } = useLocation();
  const q = useQuery((signal) => api().getLog({ id }, { signal }), [id]);
  const back = (
    <Link to={`/logs${search}`} className="mb-4 inline-flex items-center gap-1.5 rounded text-sm text-muted-foreground hover:text-foreground focus-visible:outline-none focus-visible:ring-2 focus-visible:ring-ring">
      <ArrowLeft className="size-4" aria-hidden /> Logs
    </Link>
  );
  if (q.error) {
    return (
      <>
        {back}
        <ErrorAlert message={q.error} onRetry={q.reload} />
      </>
    );
  }
  if (!q.data) {
    return (
      <>
        {back}
        <Card>
          <TableSkeleton rows={6} />
        </Card>
      </>
    );
  }
  return (
    <>
      {back}
      <Detail key={q.data.id} r={q.data} />
    </>
  );
}

function Detail({ r }: { r: RequestLog }) {
  const curl = useMemo(() => toCurl(r), [r]);
  const [replaying, setReplaying] = useState(false);
  const blocker = replayBlocker(r);
  return (
    <div className="grid gap-6">
      <header className="flex flex-wrap items-start justify-between gap-4">
        <div className="min-w-0">
          <div className="flex flex-wrap items-center gap-2">
            <h1 className="text-2xl font-semibold tracking-tight">{r.model || "(no model)"}</h1>
            <StatusBadge status={r.status} cancelled={r.cancelled} />
            <OutcomeBadge outcome={r.outcome} />
            {r.stream ? <Badge variant="info">stream</Badge> : null}
            <Badge variant="outline" title="Client protocol → upstream protocol">
              {protocolPair(r)}
            </Badge>
            {r.translated ? <Badge variant="secondary">translated</Badge> : null}
            <OriginBadge origin={r.origin} />
            {r.stopReason ? (
              <Badge variant="outline" title={stopReasonHint(r)} data-testid="stop-reason">
                stop: <span className="ml-1 font-mono">{r.stopReason}</span>
              </Badge>
            ) : null}
          </div>
          <p className="mt-1 text-sm text-muted-foreground">
            <span className="font-mono">{r.path}</span> · {formatDateTime(r.time || r.timeMs)} · <span className="font-mono text-xs">{r.id}</span>
          </p>
        </div>
        <div className="grid justify-items-end gap-1.5">
          <div className="flex gap-2">
            <CopyButton text={r.id} label="Copy id" />
            <CopyButton text={curl} label="Copy as curl" variant="default" />
            <Button variant="outline" onClick={() => setReplaying(true)} disabled={!!blocker} aria-describedby={blocker ? "replay-blocker" : undefined}>
              <Repeat /> Replay
            </Button>
          </div>
          {blocker ? (
            <p id="replay-blocker" className="max-w-sm text-right text-xs text-muted-foreground" data-testid="replay-blocker">
              {blocker}
            </p>
          ) : null}
        </div>
      </header>
      {replaying ? <ReplayDialog log={r} onClose={() => setReplaying(false)} /> : null}
      {r.replayOf ? <ReplayOf replay={r} /> : null}

      {r.error ? <ErrorAlert message={r.error} /> : null}
      {r.outcome === Outcome.CANCELLED_BY_ADMIN ? (
        <p className="-mt-3 text-sm text-muted-foreground" data-testid="cancelled-by">
          Cancelled by <span className="font-medium text-foreground">{cancelledBy(r.error)}</span>.
        </p>
      ) : null}

      <section aria-label="Summary" className="grid grid-cols-2 gap-3 md:grid-cols-3 xl:grid-cols-6">
        <Stat label="Latency">{formatDuration(r.latencyMs)}</Stat>
        <Stat label="Time to first byte">{r.ttfbMs ? formatDuration(r.ttfbMs) : "–"}</Stat>
        <Stat label="Tokens in / out" sub={r.countSource ? `count by ${r.countSource === "local" ? "the data plane" : "the upstream"}` : `usage ${r.usageSource || "none"}`}>
          {formatInt(r.inputTokens)} / {formatInt(r.outputTokens)}
        </Stat>
        <Stat label="Cost">{formatCost(r.cost)}</Stat>
        <Stat label="Attempts" sub={r.retries ? `${r.retries} retr${r.retries === 1 ? "y" : "ies"}` : "no retries"}>
          {r.attempts.length}
        </Stat>
        <Stat label="Served by" sub={r.upstreamModel}>
          {r.provider || "–"}
        </Stat>
      </section>

      <div className="grid gap-6 xl:grid-cols-[minmax(0,1fr)_minmax(0,1.2fr)]">
        <Card>
          <CardHeader>
            <CardTitle>Attempts</CardTitle>
            <CardDescription>Each upstream try on the request's time axis: retries and failovers in order.</CardDescription>
          </CardHeader>
          <CardContent>
            <Timeline attempts={r.attempts} total={Number(r.latencyMs)} />
          </CardContent>
        </Card>
        <Card>
          <CardHeader>
            <CardTitle>Request</CardTitle>
          </CardHeader>
          <CardContent>
            <dl className="grid grid-cols-[auto_minmax(0,1fr)] gap-x-6 gap-y-2 text-sm">
              <Def k="Key">{r.key || "–"}</Def>
              {r.user ? (
                <Def k="User">
                  <Link to={`/logs?${filtersToQuery({ ...DEFAULT_FILTERS, range: "all", user: r.user })}`} className="hover:underline" title={`All requests for ${r.user}`}>
                    {r.user}
                  </Link>
                </Def>
              ) : null}
              <Def k="Client">{r.clientIp || "–"}</Def>
              <Def k="User agent">{r.userAgent || "–"}</Def>
              <Def k="Data plane">{r.nodeId || "–"}</Def>
              <Def k="Snapshot">v{String(r.snapshotVersion)}</Def>
              {r.traceId ? (
                <Def k="Trace id">
                  <span className="flex flex-wrap items-center gap-2">
                    <Link
                      to={`/logs?${filtersToQuery({ ...DEFAULT_FILTERS, range: "all", traceId: r.traceId })}`}
                      className="font-mono text-xs break-all hover:underline"
                      title="All requests of this trace"
                      data-testid="trace-id"
                    >
                      {r.traceId}
                    </Link>
                    <CopyButton text={r.traceId} label="Copy trace id" className="h-7 px-2 text-xs" />
                  </span>
                </Def>
              ) : null}
            </dl>
          </CardContent>
        </Card>
      </div>

      <div className="grid gap-6 xl:grid-cols-2">
        <Card>
          <CardHeader>
            <CardTitle>Protocols</CardTitle>
            <CardDescription>{r.translated ? "Translated between the client's protocol and the upstream's." : "Passed through, not translated."}</CardDescription>
          </CardHeader>
          <CardContent>
            <dl className="grid grid-cols-[auto_minmax(0,1fr)] gap-x-6 gap-y-2 text-sm" aria-label="Protocols">
              <Def k="Client protocol">{r.protocol || "–"}</Def>
              <Def k="Upstream protocol">{r.upstreamProtocol || "–"}</Def>
              <Def k="Translated">{r.translated ? "yes" : "no"}</Def>
              <Def k="Dropped fields">
                {r.droppedFields.length ? (
                  <ul className="grid gap-0.5 font-mono text-xs" aria-label="Dropped fields">
                    {r.droppedFields.map((f, i) => (
                      <li key={i}>{f}</li>
                    ))}
                  </ul>
                ) : (
                  "none"
                )}
              </Def>
            </dl>
          </CardContent>
        </Card>
        <Card>
          <CardHeader>
            <CardTitle>Usage</CardTitle>
            <CardDescription>
              Normalized: the same meaning for every protocol. {r.countSource ? `A token count (${r.countSource}).` : `Usage ${r.usageSource || "none"}.`}
            </CardDescription>
          </CardHeader>
          <CardContent>
            <dl className="grid grid-cols-[auto_minmax(0,1fr)] gap-x-6 gap-y-2 text-sm" aria-label="Usage">
              {usageRows(r).map((u) => (
                <div key={u.label} className="contents" title={u.hint}>
                  <dt className="text-muted-foreground">{u.label}</dt>
                  <dd className="tabular-nums">{formatInt(u.value)}</dd>
                </div>
              ))}
              <Def k="Whole prompt">{formatInt(promptTokens(r))}</Def>
              {mediaRows(r).map((m) => (
                <Def key={m.label} k={m.label}>
                  <span className="tabular-nums">{m.value}</span>
                </Def>
              ))}
            </dl>
          </CardContent>
        </Card>
      </div>

      <div className="grid gap-6 xl:grid-cols-2">
        <Card className="min-w-0">
          <CardHeader>
            <CardTitle>Request headers</CardTitle>
          </CardHeader>
          <CardContent>
            <Headers h={r.requestHeaders} />
          </CardContent>
        </Card>
        <Card className="min-w-0">
          <CardHeader>
            <CardTitle>Response headers</CardTitle>
          </CardHeader>
          <CardContent>
            <Headers h={r.responseHeaders} />
          </CardContent>
        </Card>
      </div>

      <Bodies r={r} />
      <Card className="min-w-0">
        <CardHeader className="flex-row items-center justify-between">
          <div className="grid gap-1">
            <CardTitle className="flex items-center gap-2">
              <Terminal className="size-4" aria-hidden /> curl
            </CardTitle>
            <CardDescription>The same request; the client key is a placeholder.</CardDescription>
          </div>
          <CopyButton text={curl} label="Copy" />
        </CardHeader>
        <CardContent>
          <Pre>{curl}</Pre>
        </CardContent>
      </Card>
    </div>
  );
}

function Bodies({ r }: { r: RequestLog }) {
  const conversation = useMemo(() => {
    try {
      return toConversation(r);
    } catch {
      return undefined;
    }
  }, [r]);
  const [view, setView] = useState<"conversation" | "raw">("conversation");
  const raw = <RawBodies r={r} />;
  if (!conversation) return raw;
  return (
    <Card className="min-w-0">
      <CardHeader className="flex-row flex-wrap items-center justify-between gap-2">
        <div className="grid gap-1">
          <CardTitle>{view === "conversation" ? "Conversation" : "Bodies"}</CardTitle>
          <CardDescription>
            {view === "conversation" ? `The request and the response as messages (${conversation.protocol}).` : "The logged bodies as they were."}
          </CardDescription>
        </div>
        <div role="tablist" aria-label="Body view" className="inline-flex w-fit rounded-lg bg-muted p-1">
          {(["conversation", "raw"] as const).map((v) => (
            <button
              key={v}
              role="tab"
              type="button"
              aria-selected={view === v}
              onClick={() => setView(v)}
              className={cn(
                "rounded-md px-3 py-1 text-sm font-medium text-muted-foreground transition-colors focus-visible:outline-none focus-visible:ring-2 focus-visible:ring-ring",
                view === v && "bg-background text-foreground shadow-sm",
              )}
            >
              {v === "conversation" ? "Conversation" : "Raw JSON"}
            </button>
          ))}
        </div>
      </CardHeader>
      <CardContent>
        {view === "conversation" ? (
          <Fallback fallback={raw}>
            <ConversationView c={conversation} />
          </Fallback>
        ) : (
          <div className="grid gap-6">{raw}</div>
        )}
      </CardContent>
    </Card>
  );
}

function RawBodies({ r }: { r: RequestLog }) {
  if (r.bodiesExpired) {
    return (
      <Card className="min-w-0">
        <CardHeader>
          <CardTitle>Bodies expired</CardTitle>
          <CardDescription>
            The control plane removed this request&apos;s headers and bodies after its body retention
            (--body-retention-days); the summary is kept longer.
          </CardDescription>
        </CardHeader>
      </Card>
    );
  }
  return (
    <>
      <Card className="min-w-0">
        <CardHeader>
          <CardTitle>Request body</CardTitle>
          {r.requestBodyTruncated ? <CardDescription>Truncated at the configured cap.</CardDescription> : null}
        </CardHeader>
        <CardContent>
          <Body text={r.requestBody} />
        </CardContent>
      </Card>
      <Card className="min-w-0">
        <CardHeader>
          <CardTitle>Upstream request body</CardTitle>
          <CardDescription>
            {r.upstreamRequestBody ? `What was sent to ${r.provider || "the upstream"}${r.upstreamProtocol ? ` (${r.upstreamProtocol})` : ""}.` : upstreamBodyNote(r)}
            {r.upstreamRequestBodyTruncated ? " Truncated at the configured cap." : ""}
          </CardDescription>
        </CardHeader>
        {r.upstreamRequestBody ? (
          <CardContent>
            <Body text={r.upstreamRequestBody} />
          </CardContent>
        ) : null}
      </Card>
      <Card className="min-w-0">
        <CardHeader>
          <CardTitle>Response body</CardTitle>
          {r.responseBodyTruncated ? <CardDescription>Truncated at the configured cap.</CardDescription> : null}
        </CardHeader>
        <CardContent>
          <ResponseBody text={r.responseBody} contentType={headerValue(r.responseHeaders, "content-type")} />
        </CardContent>
      </Card>
    </>
  );
}

/** Who cancelled, from the record's error ("the request was cancelled by …"). */
function cancelledBy(error: string): string {
  const m = /cancelled by (.+?)\.?$/s.exec(error);
  return m?.[1] ?? "an admin";
}

function headerValue(h: Record<string, string>, name: string): string {
  for (const [k, v] of Object.entries(h)) if (k.toLowerCase() === name) return v;
  return "";
}

function Stat({ label, sub, children }: { label: string; sub?: string; children: ReactNode }) {
  return (
    <Card className="p-4">
      <div className="text-xs font-medium text-muted-foreground">{label}</div>
      <div className="mt-1 truncate text-lg font-semibold tabular-nums tracking-tight">{children}</div>
      {sub ? <div className="truncate text-xs text-muted-foreground">{sub}</div> : null}
    </Card>
  );
}

function Def({ k, children }: { k: string; children: ReactNode }) {
  return (
    <>
      <dt className="text-muted-foreground">{k}</dt>
      <dd className="min-w-0 break-words">{children}</dd>
    </>
  );
}

function attemptOk(a: Attempt) {
  return a.status >= 200 && a.status < 400 && !a.error;
}

function Timeline({ attempts, total }: { attempts: Attempt[]; total: number }) {
  if (attempts.length === 0) return <Empty title="No upstream attempt" className="py-6">The request failed before reaching a provider.</Empty>;
  const t = layoutAttempts(attempts, total);
  const pct = (ms: number) => `${(ms / t.spanMs) * 100}%`;
  return (
    <div className="grid gap-3" data-testid="attempt-timeline">
      <ol className="grid gap-3" aria-label="Attempts">
        {attempts.map((a, i) => {
          const ok = attemptOk(a);
          const bar = t.bars[i]!;
          const Icon = ok ? CircleCheck : a.status >= 400 && a.status < 500 ? CircleAlert : CircleX;
          return (
            <li key={i} className="grid gap-1" data-testid="attempt">
              <div className="flex flex-wrap items-center gap-2 text-sm">
                <Icon className={cn("size-4 shrink-0", ok ? "text-emerald-600" : a.status >= 400 && a.status < 500 ? "text-amber-600" : "text-red-600")} aria-hidden />
                <span className="font-medium">
                  #{i + 1} {a.provider}
                </span>
                <span className="text-muted-foreground">{a.upstreamModel}</span>
                <StatusBadge status={a.status} />
                <span className="ml-auto tabular-nums text-xs text-muted-foreground">
                  {bar.skipped ? "not sent" : `${formatDuration(bar.startMs)} → ${formatDuration(bar.endMs)} (${formatDuration(a.latencyMs)})`}
                </span>
              </div>
              <div className="relative h-3 rounded bg-muted" aria-hidden>
                <div
                  data-testid="attempt-bar"
                  data-start-ms={bar.startMs}
                  data-end-ms={bar.endMs}
                  className={cn("absolute top-0 h-3 rounded", bar.skipped ? "w-0.5 bg-amber-500" : ok ? "bg-emerald-500" : "bg-red-400")}
                  style={{ left: pct(bar.startMs), ...(bar.skipped ? {} : { width: `max(3px, ${pct(bar.endMs - bar.startMs)})` }) }}
                />
              </div>
              {a.error ? <p className="break-words text-xs text-red-700">{a.error}</p> : null}
              <span className="sr-only">{ok ? "succeeded" : "failed"}</span>
            </li>
          );
        })}
      </ol>
      <div className="relative h-4 border-t text-[10px] tabular-nums text-muted-foreground" aria-hidden>
        {ticks(t.spanMs).map((x) => (
          <span key={x} className="absolute top-0.5 -translate-x-1/2 first:translate-x-0" style={{ left: pct(x) }}>
            {formatDuration(x)}
          </span>
        ))}
      </div>
      <p className="text-xs text-muted-foreground" data-testid="timeline-note">
        Request: {formatDuration(total)} in all; a bar ends when the upstream answered (its response head), a streamed body goes on after it.{" "}
        {t.approximate
          ? "Approximate: this record has no attempt start times, so the attempts are laid end to end from the request's start (waits between them are not shown)."
          : "Each attempt starts when it was sent."}
      </p>
    </div>
  );
}

function Headers({ h }: { h: Record<string, string> }) {
  const rows = redactHeaders(h);
  if (rows.length === 0) return <p className="text-sm text-muted-foreground">None recorded.</p>;
  return (
    <dl className="grid grid-cols-[minmax(8rem,auto)_minmax(0,1fr)] gap-x-4 gap-y-1.5 font-mono text-xs">
      {rows.map(([k, v]) => (
        <div key={k} className="contents">
          <dt className="text-muted-foreground">{k}</dt>
          <dd className="break-all">{v}</dd>
        </div>
      ))}
    </dl>
  );
}

function Pre({ children, className }: { children: ReactNode; className?: string }) {
  return (
    <pre className={cn("max-h-[32rem] overflow-auto rounded-lg border bg-muted/50 p-3 font-mono text-xs leading-relaxed whitespace-pre-wrap break-words", className)}>
      {children}
    </pre>
  );
}

function Body({ text }: { text: string }) {
  if (!text) return <p className="text-sm text-muted-foreground">Not recorded (empty, or body logging is off).</p>;
  const p = prettyBody(text);
  return <Pre>{p.text}</Pre>;
}

function ResponseBody({ text, contentType }: { text: string; contentType: string }) {
  const sse = useMemo(() => (text && isSse(text, contentType) ? parseSse(text) : undefined), [text, contentType]);
  const [tab, setTab] = useState<"text" | "events" | "raw">("text");
  if (!sse) return <Body text={text} />;
  const tabs = [
    { id: "text" as const, label: "Assembled text" },
    { id: "events" as const, label: `Events (${sse.events.length})` },
    { id: "raw" as const, label: "Raw" },
  ];
  return (
    <div className="grid gap-3">
      <div role="tablist" aria-label="Response body view" className="inline-flex w-fit rounded-lg bg-muted p-1">
        {tabs.map((t) => (
          <button
            key={t.id}
            role="tab"
            type="button"
            id={`tab-${t.id}`}
            aria-selected={tab === t.id}
            aria-controls={`panel-${t.id}`}
            onClick={() => setTab(t.id)}
            className={cn(
              "rounded-md px-3 py-1 text-sm font-medium text-muted-foreground transition-colors focus-visible:outline-none focus-visible:ring-2 focus-visible:ring-ring",
              tab === t.id && "bg-background text-foreground shadow-sm",
            )}
          >
            {t.label}
          </button>
        ))}
      </div>
      <div role="tabpanel" id={`panel-${tab}`} aria-labelledby={`tab-${tab}`}>
        {tab === "text" ? (
          <div className="grid gap-2">
            <Pre className="font-sans text-sm">{sse.text || <span className="text-muted-foreground">(no text)</span>}</Pre>
            <p className="text-xs text-muted-foreground">
              {sse.done ? "The stream ended normally." : "The stream has no end marker (it broke, or the body was truncated)."}
              {sse.errors.length ? ` Error: ${sse.errors.join("; ")}` : ""}
            </p>
          </div>
        ) : tab === "events" ? (
          <ol className="grid max-h-[32rem] gap-1.5 overflow-auto">
            {sse.events.map((e, i) => (
              <li key={i} className="rounded-md border bg-muted/40 px-3 py-2 font-mono text-xs">
                <div className="mb-1 flex gap-2 text-muted-foreground">
                  <span>#{i + 1}</span>
                  {e.event ? <span className="text-foreground">{e.event}</span> : null}
                </div>
                <div className="whitespace-pre-wrap break-all">{e.json !== undefined ? JSON.stringify(e.json) : e.data}</div>
              </li>
            ))}
          </ol>
        ) : (
          <Pre>{text}</Pre>
        )}
      </div>
    </div>
  );
}
