import { AlertTriangle } from "lucide-react";
import { brokenSummary, type BrokenFieldLike } from "@/lib/broken";
import { Badge } from "./ui/badge";

/** "broken: api_key" for a stored row the control plane cannot read; nothing otherwise. */
export function BrokenBadge({ broken }: { broken: readonly BrokenFieldLike[] | undefined }) {
  const s = brokenSummary(broken);
  if (!s) return null;
  return (
    <Badge variant="destructive" title={s.title} data-testid="broken">
      <AlertTriangle aria-hidden />
      {s.label}
    </Badge>
  );
}
