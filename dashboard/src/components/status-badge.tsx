import type { Outcome } from "@/gen/llmgw/v1/logs_pb";
import { outcomeChoice } from "@/lib/log-fields";
import { Badge } from "./ui/badge";

/** An HTTP status, coloured by class; "cancelled" when the client went away. */
export function StatusBadge({ status, cancelled }: { status: number; cancelled?: boolean }) {
  if (cancelled) return <Badge variant="warning">cancelled</Badge>;
  if (!status) return <Badge variant="destructive">no response</Badge>;
  const variant = status >= 500 ? "destructive" : status >= 400 ? "warning" : status >= 300 ? "info" : "success";
  return (
    <Badge variant={variant} className="font-mono tabular-nums">
      {status}
    </Badge>
  );
}

/** How a request ended; nothing for records stored before outcomes. */
export function OutcomeBadge({ outcome, className }: { outcome: Outcome; className?: string }) {
  const c = outcomeChoice(outcome);
  if (!c) return null;
  return (
    <Badge variant={c.tone} title={c.hint} className={className} data-testid="outcome">
      {c.label}
    </Badge>
  );
}
