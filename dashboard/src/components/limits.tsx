// Limits on keys, models and providers (#15): usage bars from GetLimits with
// the budget's warning states, the limits fields of the create/edit forms,
// and the reset-spend confirmation.

import { AlertTriangle, OctagonX, RotateCcw } from "lucide-react";
import { Code } from "@connectrpc/connect";
import { api, isCode } from "@/lib/api";
import {
  BUDGET_PERIODS,
  budgetLevel,
  kindTitle,
  limitsSummary,
  type LimitsForm,
  type LimitsLike,
  resetText,
  type UsageLike,
  usageByName,
  usageRatio,
  usageText,
  windowName,
} from "@/lib/limits";
import { formatPercent } from "@/lib/format";
import { useInterval, useQuery } from "@/lib/hooks";
import { cn } from "@/lib/utils";
import { ConfirmDialog } from "./confirm";
import { Badge } from "./ui/badge";
import { Button } from "./ui/button";
import { Input } from "./ui/input";
import { Field } from "./ui/label";
import { Select } from "./ui/select";

/** How often the pages ask for the usage again. */
const USAGE_POLL_MS = 15_000;

export interface ScopeUsage {
  byName: Map<string, UsageLike[]>;
  /** The API's message when GetLimits failed, "" otherwise. */
  error: string;
  reload: () => void;
}

/**
 * The usage of every limit of one scope, asked for again every 15 s while
 * the tab is visible. A control plane without limits (UNIMPLEMENTED) has none.
 */
export function useScopeUsage(scope: "key" | "model" | "provider"): ScopeUsage {
  const q = useQuery(
    (signal) =>
      api()
        .getLimits({ scope }, { signal })
        .catch((e: unknown) => {
          if (isCode(e, Code.Unimplemented)) return { limits: [] };
          throw e;
        }),
    [scope],
  );
  useInterval(q.reload, USAGE_POLL_MS);
  return { byName: usageByName(q.data?.limits ?? [], scope), error: q.error, reload: q.reload };
}

const unitValue = (u: UsageLike, v: bigint): number => (u.kind === "budget" ? Number(v) / 1e6 : Number(v));

/** One limit's use as a bar; a budget turns amber from 80 % and red when spent. */
export function UsageBar({ usage: u, now = Date.now() }: { usage: UsageLike; now?: number }) {
  const ratio = usageRatio(u.used, u.limit);
  const level = u.kind === "budget" ? budgetLevel(u.used, u.limit) : "ok";
  const title = kindTitle(u);
  const reset = resetText(u, now);
  const max = unitValue(u, u.limit);
  return (
    <div className="grid min-w-36 gap-0.5" data-testid="usage" data-kind={u.kind} data-level={level}>
      <div className="flex flex-wrap items-baseline justify-between gap-x-2 text-xs">
        <span className="text-muted-foreground">{title}</span>
        <span className={cn("tabular-nums", level === "exhausted" ? "font-medium text-red-700" : level === "warning" ? "font-medium text-amber-800" : "")}>
          {usageText(u)}
        </span>
      </div>
      <div
        role="progressbar"
        aria-label={`${title} of ${u.name}`}
        aria-valuemin={0}
        aria-valuemax={max}
        aria-valuenow={Math.min(unitValue(u, u.used), max)}
        aria-valuetext={`${usageText(u)} (${formatPercent(ratio)})${reset ? `, ${reset}` : ""}`}
        title={reset || undefined}
        className="h-1.5 overflow-hidden rounded-full bg-muted"
      >
        <div
          className={cn("h-1.5 rounded-full", level === "exhausted" ? "bg-red-500" : level === "warning" ? "bg-amber-500" : u.kind === "budget" ? "bg-emerald-500" : "bg-chart-1")}
          style={{ width: `${Math.min(1, ratio) * 100}%` }}
        />
      </div>
      {u.kind === "budget" ? (
        <div className="flex flex-wrap items-center justify-between gap-x-2 text-xs">
          {level === "warning" ? (
            <span className="flex items-center gap-1 text-amber-800" data-testid="budget-warning">
              <AlertTriangle className="size-3 shrink-0" aria-hidden /> {formatPercent(ratio)} of the budget spent
            </span>
          ) : level === "exhausted" ? (
            <span className="flex items-center gap-1 font-medium text-red-700" data-testid="budget-exhausted">
              <OctagonX className="size-3 shrink-0" aria-hidden /> Budget exhausted: requests are refused
            </span>
          ) : null}
          {reset ? <span className="text-muted-foreground">{reset}</span> : null}
        </div>
      ) : null}
    </div>
  );
}

/**
 * The Limits cell of a row: a bar per limit in use, "default" when the key
 * has the default key limits, the stored limits in words when the usage is
 * unavailable, and the reset-spend button under a budget.
 */
export function LimitsCell({
  name,
  usage,
  configured,
  onResetSpend,
  hideNone = false,
}: {
  name: string;
  usage: ScopeUsage;
  configured: LimitsLike | undefined;
  onResetSpend?: () => void;
  /** Show nothing, rather than "none", when there are no limits. */
  hideNone?: boolean;
}) {
  const rows = usage.byName.get(name) ?? [];
  if (rows.length === 0) {
    const summary = limitsSummary(configured);
    return summary ? (
      <span className="text-xs" title={usage.error ? `Usage unavailable: ${usage.error}` : undefined}>
        {summary}
      </span>
    ) : hideNone ? null : (
      <span className="text-xs text-muted-foreground">none</span>
    );
  }
  const spent = rows.some((r) => r.kind === "budget" && r.used > 0n);
  return (
    <div className="grid gap-2" data-testid="limits">
      {rows.some((r) => r.default) ? (
        <div>
          <Badge variant="info" title="This key sets no limits of its own: the default key limits apply" data-testid="default-limits">
            default limits
          </Badge>
        </div>
      ) : null}
      {rows.map((r) => (
        <UsageBar key={r.kind} usage={r} />
      ))}
      {onResetSpend && spent ? (
        <div>
          <Button variant="outline" size="sm" className="h-7 text-xs" onClick={onResetSpend} aria-label={`Reset the spend of ${name}`}>
            <RotateCcw /> Reset spend
          </Button>
        </div>
      ) : null}
    </div>
  );
}

/** Asks before forgetting the spend of the current period. */
export function ResetSpendDialog({
  scope,
  name,
  onClose,
  onDone,
}: {
  scope: "key" | "model" | "provider";
  name: string | null;
  onClose: () => void;
  onDone: () => void;
}) {
  return (
    <ConfirmDialog
      open={name != null}
      title={`Reset the spend of ${scope} ${name ?? ""}?`}
      description="The spend of the current budget period is forgotten: the budget is available in full again. Request logs and their costs stay."
      confirmLabel="Reset spend"
      onClose={onClose}
      onConfirm={async () => {
        if (name == null) return;
        await api().resetSpend({ scope, name });
        onDone();
      }}
    />
  );
}

/** The limits fieldset of a create/edit form. `id` prefixes the controls' ids. */
export function LimitsFields({
  id,
  value,
  onChange,
  windowMs,
  hint,
}: {
  id: string;
  value: LimitsForm;
  onChange: (f: LimitsForm) => void;
  /** The stored rpm/tpm window, when it is not a minute. */
  windowMs?: number;
  hint: string;
}) {
  const set = (patch: Partial<LimitsForm>) => onChange({ ...value, ...patch });
  const per = windowMs && windowMs !== 60_000 ? windowName(windowMs) : "minute";
  return (
    <fieldset className="grid gap-2">
      <legend className="mb-1 text-sm font-medium">Limits</legend>
      <p className="text-xs text-muted-foreground">{hint} Empty or 0: no limit of that kind.</p>
      <div className="grid grid-cols-2 gap-3 sm:grid-cols-3">
        <Field label={`Requests per ${per}`} htmlFor={`${id}-rpm`}>
          <Input id={`${id}-rpm`} inputMode="numeric" placeholder="none" value={value.rpm} onChange={(e) => set({ rpm: e.target.value })} />
        </Field>
        <Field label={`Tokens per ${per}`} htmlFor={`${id}-tpm`}>
          <Input id={`${id}-tpm`} inputMode="numeric" placeholder="none" value={value.tpm} onChange={(e) => set({ tpm: e.target.value })} />
        </Field>
        <Field label="Requests in flight" htmlFor={`${id}-concurrency`}>
          <Input
            id={`${id}-concurrency`}
            inputMode="numeric"
            placeholder="none"
            value={value.maxConcurrency}
            onChange={(e) => set({ maxConcurrency: e.target.value })}
          />
        </Field>
        <Field label="Budget (USD)" htmlFor={`${id}-budget`}>
          <Input id={`${id}-budget`} inputMode="decimal" placeholder="none" value={value.budget} onChange={(e) => set({ budget: e.target.value })} />
        </Field>
        <Field label="Budget period" htmlFor={`${id}-period`} hint="UTC; a week starts on Monday">
          <Select id={`${id}-period`} value={value.budgetPeriod} onChange={(e) => set({ budgetPeriod: e.target.value })}>
            {BUDGET_PERIODS.map((p) => (
              <option key={p} value={p}>
                {p === "total" ? "total (never resets)" : `per ${p}`}
              </option>
            ))}
          </Select>
        </Field>
        <Field label="Without a control plane" htmlFor={`${id}-outage`} hint={value.onOutage === "closed" ? "Refuse" : "Admit a local share"}>
          <Select id={`${id}-outage`} value={value.onOutage} onChange={(e) => set({ onOutage: e.target.value })}>
            <option value="open">open</option>
            <option value="closed">closed</option>
          </Select>
        </Field>
      </div>
    </fieldset>
  );
}

