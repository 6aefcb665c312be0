// On the log of a replay: "Replay of <the original>", and the two side by side.

import { Repeat } from "lucide-react";
import type { RequestLog } from "@/gen/llmgw/v1/logs_pb";
import { api } from "@/lib/api";
import { useQuery } from "@/lib/hooks";
import { Link } from "@/lib/router";
import { SideBySide } from "./side-by-side";
import { ErrorAlert, TableSkeleton } from "./states";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "./ui/card";

export function ReplayOf({ replay }: { replay: RequestLog }) {
  const original = useQuery((signal) => api().getLog({ id: replay.replayOf }, { signal }), [replay.replayOf]);
  const link = `/logs/${encodeURIComponent(replay.replayOf)}`;
  return (
    <Card className="min-w-0">
      <CardHeader>
        <CardTitle className="flex items-center gap-2">
          <Repeat className="size-4" aria-hidden />
          <span data-testid="replay-of">
            Replay of{" "}
            <Link to={link} className="font-mono text-xs font-normal hover:underline">
              {replay.replayOf}
            </Link>
          </span>
        </CardTitle>
        <CardDescription>This request sent the original's logged body again. The two side by side:</CardDescription>
      </CardHeader>
      <CardContent>
        {original.error ? (
          <ErrorAlert message={`The original: ${original.error}`} onRetry={original.reload} />
        ) : !original.data ? (
          <TableSkeleton rows={4} />
        ) : (
          <SideBySide original={original.data} replay={replay} />
        )}
      </CardContent>
    </Card>
  );
}
