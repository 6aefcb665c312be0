// A request and its replay side by side (#17): status, latency, TTFB,
// tokens, cost… row by row, and both responses as conversations.

import { ArrowDownRight, ArrowUpRight } from "lucide-react";
import { useMemo } from "react";
import type { RequestLog } from "@/gen/llmgw/v1/logs_pb";
import { type Change, compareLogs, compareVerdict, isOk } from "@/lib/compare";
import { toConversation } from "@/lib/conversation";
import { Link } from "@/lib/router";
import { cn } from "@/lib/utils";
import { ConversationView, Fallback } from "./conversation";
import { Table, TableBody, TableCell, TableHead, TableHeader, TableRow } from "./ui/table";

function ChangeMark({ change }: { change: Change }) {
  if (!change) return null;
  const better = change === "better";
  const Icon = better ? ArrowUpRight : ArrowDownRight;
  return (
    <span className={cn("ml-1.5 inline-flex items-center text-xs", better ? "text-emerald-700" : "text-red-700")} data-change={change}>
      <Icon className="size-3.5" aria-hidden />
      {change}
    </span>
  );
}

function Response({ r }: { r: RequestLog }) {
  const c = useMemo(() => {
    try {
      return toConversation(r);
    } catch {
      return undefined;
    }
  }, [r]);
  if (!c?.response) {
    return <p className="rounded-md border border-dashed px-3 py-2 text-xs text-muted-foreground">The response body was not logged, or cannot be read as a conversation.</p>;
  }
  return (
    <Fallback fallback={<p className="text-xs text-muted-foreground">The response cannot be shown.</p>}>
      <ConversationView c={c} responseOnly />
    </Fallback>
  );
}

const logLink = (id: string) => `/logs/${encodeURIComponent(id)}`;

export function SideBySide({ original, replay }: { original: RequestLog; replay: RequestLog }) {
  const rows = useMemo(() => compareLogs(original, replay), [original, replay]);
  return (
    <section className="grid gap-4" aria-label="Original and replay" data-testid="side-by-side">
      <p className={cn("text-sm font-medium", isOk(replay) ? "text-emerald-800" : "text-red-800")} data-testid="compare-verdict">
        {compareVerdict(original, replay)}
      </p>
      <Table aria-label="Original and replay compared">
        <TableHeader>
          <TableRow className="hover:bg-transparent">
            <TableHead className="w-40 pl-0">
              <span className="sr-only">Figure</span>
            </TableHead>
            <TableHead className="w-[42%]">
              <Link to={logLink(original.id)} className="hover:underline">
                Original
              </Link>
            </TableHead>
            <TableHead className="w-[42%]">
              <Link to={logLink(replay.id)} className="hover:underline">
                Replay
              </Link>
            </TableHead>
          </TableRow>
        </TableHeader>
        <TableBody>
          {rows.map((row) => (
            <TableRow key={row.label} data-testid="compare-row" data-label={row.label}>
              <TableCell className="pl-0 text-muted-foreground">{row.label}</TableCell>
              <TableCell className="break-words tabular-nums" data-side="original">
                {row.original}
              </TableCell>
              <TableCell className={cn("break-words tabular-nums", row.differs && "font-medium")} data-side="replay">
                {row.replay}
                <ChangeMark change={row.change} />
              </TableCell>
            </TableRow>
          ))}
        </TableBody>
      </Table>
      <div className="grid gap-4 lg:grid-cols-2">
        <div className="grid content-start gap-2 min-w-0" data-testid="original-response">
          <h3 className="text-sm font-semibold">Original response</h3>
          <Response r={original} />
        </div>
        <div className="grid content-start gap-2 min-w-0" data-testid="replay-response">
          <h3 className="text-sm font-semibold">Replay response</h3>
          <Response r={replay} />
        </div>
      </div>
    </section>
  );
}
