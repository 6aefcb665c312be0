import { Badge } from "./ui/badge";

const ORIGINS: Record<string, { label: string; hint: string }> = {
  replay: { label: "replay", hint: "Sent again by an admin from another request's log" },
  playground: { label: "playground", hint: "Sent from the dashboard's playground" },
};

/** Who sent a request, when it was not a client: "replay" or "playground"; nothing for a client. */
export function OriginBadge({ origin, className }: { origin: string; className?: string }) {
  if (!origin) return null;
  const o = ORIGINS[origin] ?? { label: origin, hint: `Sent by ${origin}` };
  return (
    <Badge variant="info" title={o.hint} className={className} data-testid="origin">
      {o.label}
    </Badge>
  );
}
