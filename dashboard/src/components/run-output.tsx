// The answer of a run (replay or playground) as it streams in: its status,
// the text (thinking apart), errors in words, TTFB and latency, and the
// route headers the data plane answered with.

import { Brain } from "lucide-react";
import { useState } from "react";
import { prettyBody } from "@/lib/sse";
import { formatDuration } from "@/lib/format";
import { routeHeaders, runProblem } from "@/lib/run";
import type { RunState } from "@/lib/use-run";
import { cn } from "@/lib/utils";
import { ErrorAlert, Spinner } from "./states";
import { StatusBadge } from "./status-badge";
import { Badge } from "./ui/badge";

const PHASE_WORDS: Record<RunState["phase"], string> = {
  idle: "",
  running: "Streaming…",
  done: "Finished",
  stopped: "Stopped",
  failed: "Failed",
};

export function RunOutput({ run }: { run: RunState }) {
  const { view, phase } = run;
  const [tab, setTab] = useState<"text" | "raw">("text");
  if (phase === "idle") return null;
  const problem = phase === "running" ? (view.head && view.head.status >= 300 ? runProblem(view) : "") : runProblem(view);
  const waiting = phase === "running" && !view.head;
  const answer = view.answer;
  const raw = view.sse ? view.raw : prettyBody(view.raw).text;
  // A whole body without text (an error answer): shown as it is.
  const rawInstead = !view.sse && !answer.text && !!raw && phase !== "running";
  return (
    <div className="grid gap-3" data-testid="run-output" data-phase={phase}>
      <div className="flex flex-wrap items-center gap-2 text-sm" role="status" aria-label="Run status">
        {phase === "running" ? <Spinner className="size-3.5" label={waiting ? "Waiting for the data plane" : "Streaming"} /> : null}
        <span className="font-medium" data-testid="run-phase">
          {waiting ? "Waiting for the data plane…" : PHASE_WORDS[phase]}
        </span>
        {view.head ? (
          <>
            <StatusBadge status={view.head.status} />
            {view.sse ? <Badge variant="info">stream</Badge> : null}
            <span className="text-muted-foreground">
              on <span className="text-foreground">{view.head.nodeId || "a data plane"}</span>
            </span>
          </>
        ) : null}
        {view.end ? (
          <span className="ml-auto flex gap-3 tabular-nums text-muted-foreground" data-testid="run-timing">
            <span>
              TTFB <span className="text-foreground">{formatDuration(view.end.ttfbMs)}</span>
            </span>
            <span>
              latency <span className="text-foreground">{formatDuration(view.end.latencyMs)}</span>
            </span>
          </span>
        ) : null}
      </div>

      {run.rpcError ? <ErrorAlert message={run.rpcError} /> : null}
      {problem ? <ErrorAlert message={problem} /> : null}
      {phase === "stopped" ? <p className="text-sm text-muted-foreground">Stopped: the request to the data plane was dropped; its log says the client went away.</p> : null}

      {answer.thinking ? (
        <details className="rounded-md border border-violet-200 bg-violet-50/60 px-3 py-2" open data-testid="run-thinking">
          <summary className="flex cursor-pointer items-center gap-1.5 text-xs font-medium text-violet-800">
            <Brain className="size-3.5" aria-hidden /> Thinking
          </summary>
          <div className="mt-1 whitespace-pre-wrap break-words text-sm text-violet-950/80">{answer.thinking}</div>
        </details>
      ) : null}

      {view.head ? (
        <div className="grid gap-2">
          <div role="tablist" aria-label="Answer view" className="inline-flex w-fit rounded-lg bg-muted p-1">
            {(["text", "raw"] as const).map((t) => (
              <button
                key={t}
                type="button"
                role="tab"
                aria-selected={tab === t}
                onClick={() => setTab(t)}
                className={cn(
                  "rounded-md px-3 py-1 text-sm font-medium text-muted-foreground transition-colors focus-visible:outline-none focus-visible:ring-2 focus-visible:ring-ring",
                  tab === t && "bg-background text-foreground shadow-sm",
                )}
              >
                {t === "text" ? "Answer" : view.sse ? "Raw events" : "Raw JSON"}
              </button>
            ))}
          </div>
          {tab === "text" && rawInstead ? (
            <pre className="max-h-96 overflow-auto rounded-lg border bg-muted/50 p-3 font-mono text-xs leading-relaxed whitespace-pre-wrap break-words" data-testid="answer-raw">
              {raw}
            </pre>
          ) : tab === "text" ? (
            <div
              className="min-h-16 whitespace-pre-wrap break-words rounded-lg border border-emerald-200 bg-emerald-50/50 px-3 py-2.5 text-sm leading-relaxed"
              data-testid="answer-text"
              aria-live="polite"
              aria-label="Answer"
            >
              {answer.text || (
                <span className="text-muted-foreground">
                  {phase === "running" ? "…" : view.sse ? "(no text)" : raw ? "(no text: see the raw JSON)" : "(empty body)"}
                </span>
              )}
            </div>
          ) : (
            <pre className="max-h-96 overflow-auto rounded-lg border bg-muted/50 p-3 font-mono text-xs leading-relaxed whitespace-pre-wrap break-words" data-testid="answer-raw">
              {raw || "(empty body)"}
            </pre>
          )}
          {!view.sse && tab === "text" && raw && !rawInstead && phase !== "running" ? (
            <details className="text-xs" data-testid="answer-json">
              <summary className="cursor-pointer text-muted-foreground">The answer's JSON</summary>
              <pre className="mt-2 max-h-96 overflow-auto rounded-lg border bg-muted/50 p-3 font-mono leading-relaxed whitespace-pre-wrap break-words">{raw}</pre>
            </details>
          ) : null}
          {answer.stopReason ? (
            <p className="text-xs text-muted-foreground">
              Stop reason: <span className="font-mono">{answer.stopReason}</span>
            </p>
          ) : null}
        </div>
      ) : null}
    </div>
  );
}

/** The data plane, path, key and x-llmgw-* headers of the run's head. */
export function RunRoute({ run }: { run: RunState }) {
  const head = run.view.head;
  if (!head) return null;
  // The request id is shown from the head's own field.
  const headers = routeHeaders(head.headers).filter(([k]) => k !== "x-llmgw-request-id");
  return (
    <dl className="grid grid-cols-[auto_minmax(0,1fr)] gap-x-6 gap-y-1.5 text-sm" aria-label="Route" data-testid="run-route">
      <dt className="text-muted-foreground">Request id</dt>
      <dd className="font-mono text-xs break-all" data-testid="run-request-id">
        {head.requestId || "–"}
      </dd>
      <dt className="text-muted-foreground">Data plane</dt>
      <dd>{head.nodeId || "–"}</dd>
      <dt className="text-muted-foreground">Path</dt>
      <dd className="font-mono text-xs break-all">{head.path || "–"}</dd>
      <dt className="text-muted-foreground">Key</dt>
      <dd>{head.key || "–"}</dd>
      {headers.map(([k, v]) => (
        <div key={k} className="contents">
          <dt className="font-mono text-xs text-muted-foreground">{k}</dt>
          <dd className="font-mono text-xs break-all">{v}</dd>
        </div>
      ))}
    </dl>
  );
}
