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
