import { ArrowDown, ArrowUp, Boxes, FlaskConical, History, Pencil, Plus, Route, Trash2, X } from "lucide-react";
import { type FormEvent, useRef, useState } from "react";
import { ConfirmDialog } from "@/components/confirm";
import { LimitsCell, LimitsFields, ResetSpendDialog, useScopeUsage } from "@/components/limits";
import { Empty, ErrorAlert, PageHeader, Spinner, TableSkeleton } from "@/components/states";
import { BrokenBadge } from "@/components/broken-badge";
import { ModelTestDialog } from "@/components/model-test";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { Checkbox, Switch } from "@/components/ui/checkbox";
import { Dialog } from "@/components/ui/dialog";
import { Input, Textarea } from "@/components/ui/input";
import { Field } from "@/components/ui/label";
import { Select } from "@/components/ui/select";
import { Table, TableBody, TableCell, TableHead, TableHeader, TableRow } from "@/components/ui/table";
import type { ExplainRouteResponse, Model } from "@/gen/llmgw/v1/admin_pb";
import type { Prices } from "@/gen/llmgw/v1/common_pb";
import { hasOwnPrices, historyRows, NO_PRICES, otherModes, type PriceForm, priceForm, pricesOf, priceText } from "@/lib/prices";
import { paramsOf, paramsSummary, paramsText } from "@/lib/default-params";
import { api, errorMessage } from "@/lib/api";
import { weightLabel } from "@/lib/broken";
import { formatCost, formatInt } from "@/lib/format";
import { limitsForCreate, type LimitsForm, limitsFormOf, limitsForUpdate, NO_LIMITS } from "@/lib/limits";
import { useQuery, useTitle } from "@/lib/hooks";
import {
  type Choice,
  CLIENT_APIS,
  maxTokensUpdate,
  MODEL_TYPES,
  modelTypeOf,
  modelTypeUpdate,
  parseMaxTokens,
  servingBadge,
  TRANSLATIONS,
  translationOf,
} from "@/lib/protocols";

const STRATEGIES: Choice[] = [
  { value: "priority", label: "Priority", hint: "Lowest priority first; equal priorities share traffic by weight" },
  { value: "round-robin", label: "Round robin", hint: "Every target in turn" },
  { value: "weighted", label: "Weighted", hint: "At random, in proportion to weight" },
  { value: "least-latency", label: "Least latency", hint: "The faster of two targets by recent time to first byte" },
  { value: "cost-first", label: "Cost first", hint: "The cheapest target for the request's size first, by each target's prices" },
];

interface TargetForm {
  provider: string;
  upstreamModel: string;
  priority: string;
  weight: string;
  rules: string;
  enabled: boolean;
  overridePrices: boolean;
  prices: PriceForm;
  /** The target's stored prices: their other modes are kept on save. */
  storedPrices?: Prices;
  defaultParams: string;
}

interface ModelForm {
  name: string;
  strategy: string;
  maxAttempts: string;
  retryDelayMs: string;
  prices: PriceForm;
  enabled: boolean;
  targets: TargetForm[];
  defaultMaxTokens: string;
  translation: string;
  type: string;
  limits: LimitsForm;
}

const newTarget = (provider = ""): TargetForm => ({
  provider,
  upstreamModel: "",
  priority: "0",
  weight: "1",
  rules: "",
  enabled: true,
  overridePrices: false,
  prices: NO_PRICES,
  defaultParams: "",
});

function formOf(m: Model): ModelForm {
  return {
    name: m.name,
    strategy: m.strategy || "priority",
    maxAttempts: m.maxAttempts ? String(m.maxAttempts) : "",
    retryDelayMs: m.retryDelayMs != null ? String(m.retryDelayMs) : "",
    prices: priceForm(m.prices),
    enabled: m.enabled,
    defaultMaxTokens: m.defaultMaxTokens != null ? String(m.defaultMaxTokens) : "",
    translation: translationOf(m.translation),
    type: modelTypeOf(m.type),
    limits: limitsFormOf(m.limits),
    targets: m.targets.map((t) => ({
      provider: t.provider,
      upstreamModel: t.upstreamModel,
      priority: String(t.priority),
      weight: String(t.weight ?? 1),
      rules: t.rules,
      enabled: t.enabled,
      overridePrices: hasOwnPrices(t.prices),
      prices: priceForm(t.prices),
      storedPrices: t.prices,
      defaultParams: paramsText(t.defaultParams),
    })),
  };
}

function num(s: string, what: string, opts: { int?: boolean; min?: number } = {}): number {
  const t = s.trim();
  if (!t) return 0;
  const v = Number(t);
  if (!Number.isFinite(v) || (opts.int && !Number.isInteger(v)) || (opts.min != null && v < opts.min)) {
    throw new Error(`${what} must be ${opts.int ? "a whole number" : "a number"}${opts.min != null ? ` ≥ ${opts.min}` : ""}`);
  }
  return v;
}

function targetsOf(f: ModelForm) {
  if (f.targets.length === 0) throw new Error("A model needs at least one target.");
  return f.targets.map((t, i) => {
    const where = `Target ${i + 1}: `;
    if (!t.provider) throw new Error(`${where}choose a provider.`);
    if (t.rules.trim()) {
      try {
        JSON.parse(t.rules);
      } catch (e) {
        throw new Error(`${where}the rule is not valid JSON (${(e as Error).message}).`);
      }
    }
    return {
      provider: t.provider,
      upstreamModel: t.upstreamModel.trim(),
      priority: num(t.priority, `${where}priority`, { int: true }),
      weight: t.weight.trim() ? num(t.weight, `${where}weight`, { int: true, min: 0 }) : 1,
      rules: t.rules.trim(),
      enabled: t.enabled,
      prices: t.overridePrices ? pricesOf(t.prices, where, t.storedPrices) : undefined,
      defaultParams: paramsOf(t.defaultParams, where),
    };
  });
}

export function ModelsPage() {
  useTitle("Models");
  const list = useQuery((signal) => api().listModels({}, { signal }), []);
  const usage = useScopeUsage("model");
  const [resetting, setResetting] = useState<string | null>(null);
  const providers = useQuery((signal) => api().listProviders({}, { signal }), []);
  const [editing, setEditing] = useState<Model | "new" | null>(null);
  const [deleting, setDeleting] = useState<Model | null>(null);
  const [testing, setTesting] = useState<string | null>(null);
  const [pricing, setPricing] = useState<string | null>(null);
  const [explainModel, setExplainModel] = useState("");
  const explainRef = useRef<HTMLDivElement>(null);
  const models = list.data?.models ?? [];
  const providerNames = (providers.data?.providers ?? []).map((p) => p.name);

  return (
    <>
      <PageHeader
        title="Models"
        description="The names clients ask for, each routed to one or more upstream targets."
        actions={
          <Button onClick={() => setEditing("new")}>
            <Plus /> Add model
          </Button>
        }
      />
      {list.error ? <ErrorAlert message={list.error} onRetry={list.reload} className="mb-4" /> : null}
      {usage.error && !list.error ? <ErrorAlert message={`Usage of the limits unavailable: ${usage.error}`} onRetry={usage.reload} className="mb-4" /> : null}
      <Card className="mb-6 overflow-hidden">
        {list.loading && !list.data ? (
          <TableSkeleton />
        ) : models.length === 0 && !list.error ? (
          <Empty title="No models yet" icon={<Boxes />}>
            A model maps a name clients use to targets: a provider and its upstream model, in priority order.
          </Empty>
        ) : (
          <Table>
            <TableHeader>
              <TableRow className="hover:bg-transparent">
                <TableHead className="pl-5">Name</TableHead>
                <TableHead>Type</TableHead>
                <TableHead>Strategy</TableHead>
                <TableHead>Targets</TableHead>
                <TableHead>Attempts</TableHead>
                <TableHead>Translation</TableHead>
                <TableHead className="whitespace-normal" title="US dollars; tokens per 1M as in/out[/cached[/cache write]]">Prices</TableHead>
                <TableHead>Status · limits</TableHead>
                <TableHead className="pr-5 text-right">
                  <span className="sr-only">Actions</span>
                </TableHead>
              </TableRow>
            </TableHeader>
            <TableBody>
              {models.map((m) => (
                <TableRow key={m.name}>
                  <TableCell className="pl-5 font-medium">{m.name}</TableCell>
                  <TableCell>
                    <Badge variant="outline" data-testid="model-type">
                      {modelTypeOf(m.type)}
                    </Badge>
                  </TableCell>
                  <TableCell>
                    <Badge variant="outline">{m.strategy || "priority"}</Badge>
                  </TableCell>
                  <TableCell>
                    <ol className="flex flex-wrap gap-1">
                      {m.targets.map((t, i) => (
                        <li key={i}>
                          <Badge variant={t.enabled ? "secondary" : "outline"} className={t.enabled ? "" : "line-through opacity-60"} title={t.rules ? `rule: ${t.rules}` : undefined}>
                            <span className="text-muted-foreground">{i + 1}.</span> {t.provider}:{t.upstreamModel || m.name}
                            {t.rules ? <span className="text-amber-700">·rule</span> : null}
                            {t.weight === 0 ? <span className="text-amber-700">·{weightLabel(t.weight)}</span> : null}
                          </Badge>
                        </li>
                      ))}
                    </ol>
                  </TableCell>
                  <TableCell className="whitespace-nowrap text-xs">
                    {m.maxAttempts || <span className="text-muted-foreground">default</span>}
                    {m.retryDelayMs != null ? <span className="text-muted-foreground"> · {m.retryDelayMs} ms</span> : null}
                  </TableCell>
                  <TableCell className="whitespace-nowrap text-xs">
                    <Badge variant="outline">{translationOf(m.translation)}</Badge>
                    {m.defaultMaxTokens != null ? (
                      <span className="text-muted-foreground" title="Default max_tokens">
                        {" "}
                        · {formatInt(m.defaultMaxTokens)} max
                      </span>
                    ) : null}
                  </TableCell>
                  <TableCell className="max-w-56 tabular-nums text-xs" data-testid="model-prices">
                    {priceText(m.prices) || <span className="text-muted-foreground">none</span>}
                  </TableCell>
                  <TableCell>
                    {/* One column for both keeps the table within a laptop's width. */}
                    <div className="grid gap-2">
                      <div className="flex flex-wrap gap-1">
                        {m.enabled ? <Badge variant="success">enabled</Badge> : <Badge variant="secondary">disabled</Badge>}
                        <BrokenBadge broken={m.broken} />
                      </div>
                      <LimitsCell name={m.name} usage={usage} configured={m.limits} onResetSpend={() => setResetting(m.name)} hideNone />
                    </div>
                  </TableCell>
                  <TableCell className="pr-5 text-right whitespace-nowrap">
                    <Button
                      variant="ghost"
                      size="icon-sm"
                      aria-label={`Explain the route of ${m.name}`}
                      title="Explain route"
                      onClick={() => {
                        setExplainModel(m.name);
                        explainRef.current?.scrollIntoView({ behavior: "smooth", block: "start" });
                      }}
                    >
                      <Route />
                    </Button>
                    <Button variant="ghost" size="icon-sm" aria-label={`Price history of ${m.name}`} title="Prices and their history" onClick={() => setPricing(m.name)}>
                      <History />
                    </Button>
                    <Button variant="ghost" size="icon-sm" aria-label={`Test ${m.name}`} title="Test each target" onClick={() => setTesting(m.name)}>
                      <FlaskConical />
                    </Button>
                    <Button variant="ghost" size="icon-sm" aria-label={`Edit ${m.name}`} onClick={() => setEditing(m)}>
                      <Pencil />
                    </Button>
                    <Button variant="ghost" size="icon-sm" aria-label={`Delete ${m.name}`} onClick={() => setDeleting(m)}>
                      <Trash2 />
                    </Button>
                  </TableCell>
                </TableRow>
              ))}
            </TableBody>
          </Table>
        )}
      </Card>
      <div ref={explainRef} className="scroll-mt-20">
        <ExplainRoute models={models.map((m) => m.name)} model={explainModel} setModel={setExplainModel} />
      </div>
      {editing ? (
        <ModelDialog
          model={editing === "new" ? undefined : editing}
          providers={providerNames}
          providersError={providers.error}
          onClose={() => setEditing(null)}
          onSaved={() => {
            setEditing(null);
            list.reload();
            usage.reload();
          }}
        />
      ) : null}
      {testing ? <ModelTestDialog name={testing} onClose={() => setTesting(null)} /> : null}
      {pricing ? <PriceHistoryDialog name={pricing} onClose={() => setPricing(null)} /> : null}
      <ResetSpendDialog scope="model" name={resetting} onClose={() => setResetting(null)} onDone={usage.reload} />
      <ConfirmDialog
        open={deleting != null}
        title={`Delete model ${deleting?.name ?? ""}?`}
        description="Clients asking for it get 404 once the data planes have the new version."
        confirmLabel="Delete model"
        onClose={() => setDeleting(null)}
        onConfirm={async () => {
          if (!deleting) return;
          await api().deleteModel({ name: deleting.name });
          list.reload();
        }}
      />
    </>
  );
}

function PriceFields({ id, value, onChange }: { id: string; value: PriceForm; onChange: (p: PriceForm) => void }) {
  return (
    <div className="grid grid-cols-2 gap-2 sm:grid-cols-4">
      <Field label="Input" htmlFor={`${id}-in`}>
        <Input id={`${id}-in`} inputMode="decimal" placeholder="0" value={value.input} onChange={(e) => onChange({ ...value, input: e.target.value })} />
      </Field>
      <Field label="Output" htmlFor={`${id}-out`}>
        <Input id={`${id}-out`} inputMode="decimal" placeholder="0" value={value.output} onChange={(e) => onChange({ ...value, output: e.target.value })} />
      </Field>
      <Field label="Cached input" htmlFor={`${id}-cached`}>
        <Input id={`${id}-cached`} inputMode="decimal" placeholder="0" value={value.cached} onChange={(e) => onChange({ ...value, cached: e.target.value })} />
      </Field>
      <Field label="Cache write" htmlFor={`${id}-cache-write`} hint="Empty or 0: the input price">
        <Input
          id={`${id}-cache-write`}
          inputMode="decimal"
          placeholder="as input"
          value={value.cacheWrite}
          onChange={(e) => onChange({ ...value, cacheWrite: e.target.value })}
        />
      </Field>
    </div>
  );
}

/** A model's prices in effect, per target, and every change of them with its time. */
function PriceHistoryDialog({ name, onClose }: { name: string; onClose: () => void }) {
  const q = useQuery((signal) => api().getModelPrices({ name }, { signal }), [name]);
  const rows = q.data ? historyRows(q.data) : [];
  return (
    <Dialog open onClose={onClose} title={`Prices of ${name}`} className="max-w-3xl">
      {q.error ? <ErrorAlert message={q.error} onRetry={q.reload} /> : null}
      {q.loading && !q.data ? <Spinner /> : null}
      {q.data ? (
        <div className="grid gap-4 text-sm" data-testid="price-history">
          <div className="overflow-hidden rounded-lg border">
            <Table>
              <TableHeader>
                <TableRow className="hover:bg-transparent">
                  <TableHead>In effect for</TableHead>
                  <TableHead>Prices (US dollars; tokens per 1M)</TableHead>
                </TableRow>
              </TableHeader>
              <TableBody>
                <TableRow>
                  <TableCell className="font-medium">the model</TableCell>
                  <TableCell className="tabular-nums">{priceText(q.data.prices) || "none"}</TableCell>
                </TableRow>
                {q.data.targets.map((t) => (
                  <TableRow key={t.number}>
                    <TableCell>
                      {t.number}. {t.provider}:{t.upstreamModel}
                    </TableCell>
                    <TableCell className="tabular-nums">{t.prices ? priceText(t.prices) : <span className="text-muted-foreground">the model's</span>}</TableCell>
                  </TableRow>
                ))}
              </TableBody>
            </Table>
          </div>
          {rows.length === 0 ? (
            <p className="text-muted-foreground">No recorded changes: the prices are as they were before price history.</p>
          ) : (
            <div className="overflow-hidden rounded-lg border">
              <Table>
                <TableHeader>
                  <TableRow className="hover:bg-transparent">
                    <TableHead>From</TableHead>
                    <TableHead>State</TableHead>
                    <TableHead>Prices</TableHead>
                  </TableRow>
                </TableHeader>
                <TableBody>
                  {rows.map((r, i) => (
                    <TableRow key={i} data-testid="price-change">
                      <TableCell className="whitespace-nowrap tabular-nums" title={`recorded ${r.recordedAt}`}>
                        {r.from}
                      </TableCell>
                      <TableCell>
                        <Badge variant={r.state === "in effect" ? "success" : r.state === "scheduled" ? "outline" : "secondary"}>{r.state}</Badge>
                      </TableCell>
                      <TableCell className="text-xs tabular-nums">{r.prices}</TableCell>
                    </TableRow>
                  ))}
                </TableBody>
              </Table>
            </div>
          )}
        </div>
      ) : null}
    </Dialog>
  );
}

/** A select of named choices with the chosen one's hint under it; a stored value outside them is kept as is. */
function ChoiceField({ id, label, choices, value, onChange }: { id: string; label: string; choices: Choice[]; value: string; onChange: (v: string) => void }) {
  const chosen = choices.find((c) => c.value === value);
  return (
    <Field label={label} htmlFor={id} hint={chosen?.hint}>
      <Select id={id} value={value} onChange={(e) => onChange(e.target.value)}>
        {choices.map((c) => (
          <option key={c.value} value={c.value}>
            {c.label}
          </option>
        ))}
        {chosen ? null : <option value={value}>{value}</option>}
      </Select>
    </Field>
  );
}

function ModelDialog({
  model,
  providers,
  providersError,
  onClose,
  onSaved,
}: {
  model?: Model;
  providers: string[];
  providersError: string;
  onClose: () => void;
  onSaved: () => void;
}) {
  const [f, setF] = useState<ModelForm>(() =>
    model
      ? formOf(model)
      : {
          name: "",
          strategy: "priority",
          maxAttempts: "",
          retryDelayMs: "",
          prices: NO_PRICES,
          enabled: true,
          targets: [newTarget(providers[0])],
          defaultMaxTokens: "",
          translation: "strict",
          type: "chat",
          limits: NO_LIMITS,
        },
  );
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const set = (patch: Partial<ModelForm>) => setF((old) => ({ ...old, ...patch }));
  const setTarget = (i: number, patch: Partial<TargetForm>) =>
    setF((old) => ({ ...old, targets: old.targets.map((t, j) => (j === i ? { ...t, ...patch } : t)) }));
  const move = (i: number, by: number) =>
    setF((old) => {
      const t = [...old.targets];
      const [x] = t.splice(i, 1);
      t.splice(i + by, 0, x!);
      return { ...old, targets: t };
    });

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError("");
    let targets;
    let body;
    let limits;
    try {
      limits = model ? limitsForUpdate(f.limits, model.limits) : limitsForCreate(f.limits);
      targets = targetsOf(f);
      body = {
        strategy: f.strategy,
        maxAttempts: num(f.maxAttempts, "Attempts per target", { int: true, min: 0 }),
        retryDelayMs: f.retryDelayMs.trim() ? num(f.retryDelayMs, "Retry delay", { int: true, min: 0 }) : undefined,
        prices: pricesOf(f.prices, "The ", model?.prices),
        enabled: f.enabled,
        translation: f.translation,
      };
      parseMaxTokens(f.defaultMaxTokens);
    } catch (err) {
      setError((err as Error).message);
      return;
    }
    setBusy(true);
    try {
      if (!model) {
        await api().createModel({ name: f.name.trim(), ...body, type: f.type, defaultMaxTokens: parseMaxTokens(f.defaultMaxTokens), targets, limits });
      } else {
        await api().updateModel({
          name: model.name,
          ...body,
          clearRetryDelay: body.retryDelayMs == null && model.retryDelayMs != null,
          ...maxTokensUpdate(f.defaultMaxTokens, model.defaultMaxTokens),
          ...modelTypeUpdate(f.type, model.type),
          targets: { items: targets },
          limits,
        });
      }
      onSaved();
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <Dialog open onClose={onClose} title={model ? `Edit model ${model.name}` : "Add model"} className="max-w-3xl">
      <form onSubmit={submit} className="grid gap-5">
        <div className="grid gap-4 sm:grid-cols-2">
          <Field label="Name" htmlFor="m-name" hint="What clients send as model">
            <Input id="m-name" value={f.name} onChange={(e) => set({ name: e.target.value })} disabled={!!model} required autoFocus={!model} />
          </Field>
          <ChoiceField id="m-type" label="Type" choices={MODEL_TYPES} value={f.type} onChange={(type) => set({ type })} />
          <ChoiceField id="m-strategy" label="Strategy" choices={STRATEGIES} value={f.strategy} onChange={(strategy) => set({ strategy })} />
          <Field label="Attempts per target" htmlFor="m-attempts" hint="Empty uses the global default">
            <Input id="m-attempts" inputMode="numeric" placeholder="default" value={f.maxAttempts} onChange={(e) => set({ maxAttempts: e.target.value })} />
          </Field>
          <Field label="Retry delay (ms)" htmlFor="m-delay" hint="Between attempts on one target; empty uses the default">
            <Input id="m-delay" inputMode="numeric" placeholder="default" value={f.retryDelayMs} onChange={(e) => set({ retryDelayMs: e.target.value })} />
          </Field>
          <ChoiceField id="m-translation" label="Translation" choices={TRANSLATIONS} value={f.translation} onChange={(translation) => set({ translation })} />
          <Field label="Default max tokens" htmlFor="m-max-tokens" hint="Sent to targets that require max_tokens (Anthropic) when the client gives none">
            <Input id="m-max-tokens" inputMode="numeric" placeholder="default" value={f.defaultMaxTokens} onChange={(e) => set({ defaultMaxTokens: e.target.value })} />
          </Field>
        </div>
        <fieldset className="grid gap-2">
          <legend className="mb-2 text-sm font-medium">Prices, US dollars per 1M tokens</legend>
          <PriceFields id="m-price" value={f.prices} onChange={(p) => set({ prices: p })} />
          {otherModes(model?.prices?.sheet) ? (
            <p className="text-xs text-muted-foreground" data-testid="other-price-modes">
              Also charged, and kept as they are (set them with <code>llmgw model update --price-*</code>): {otherModes(model?.prices?.sheet)}
            </p>
          ) : null}
        </fieldset>
        <Switch id="m-enabled" checked={f.enabled} onChange={(v) => set({ enabled: v })} label="Enabled" />
        <LimitsFields
          id="m-limits"
          value={f.limits}
          onChange={(limits) => set({ limits })}
          windowMs={model?.limits?.windowMs}
          hint="For all requests to this model, whatever their key."
        />

        <fieldset className="grid gap-3">
          <legend className="mb-1 text-sm font-medium">Targets, in order</legend>
          {providersError ? <ErrorAlert message={`Cannot list providers: ${providersError}`} /> : null}
          {providers.length === 0 && !providersError ? (
            <p className="text-sm text-muted-foreground">Add a provider first: every target names one.</p>
          ) : null}
          {f.targets.map((t, i) => (
            <div key={i} className="rounded-lg border bg-muted/30 p-3" role="group" aria-label={`Target ${i + 1}`}>
              <div className="mb-3 flex items-center justify-between">
                <span className="text-xs font-semibold uppercase tracking-wide text-muted-foreground">Target {i + 1}</span>
                <div className="flex gap-1">
                  <Button variant="ghost" size="icon-sm" aria-label={`Move target ${i + 1} up`} disabled={i === 0} onClick={() => move(i, -1)}>
                    <ArrowUp />
                  </Button>
                  <Button variant="ghost" size="icon-sm" aria-label={`Move target ${i + 1} down`} disabled={i === f.targets.length - 1} onClick={() => move(i, 1)}>
                    <ArrowDown />
                  </Button>
                  <Button
                    variant="ghost"
                    size="icon-sm"
                    aria-label={`Remove target ${i + 1}`}
                    onClick={() => setF((old) => ({ ...old, targets: old.targets.filter((_, j) => j !== i) }))}
                  >
                    <X />
                  </Button>
                </div>
              </div>
              <div className="grid gap-3 sm:grid-cols-4">
                <Field label="Provider" htmlFor={`t${i}-provider`} className="sm:col-span-2">
                  <Select id={`t${i}-provider`} value={t.provider} onChange={(e) => setTarget(i, { provider: e.target.value })}>
                    <option value="">Choose…</option>
                    {providers.map((p) => (
                      <option key={p} value={p}>
                        {p}
                      </option>
                    ))}
                    {t.provider && !providers.includes(t.provider) ? <option value={t.provider}>{t.provider}</option> : null}
                  </Select>
                </Field>
                <Field label="Upstream model" htmlFor={`t${i}-upstream`} className="sm:col-span-2" hint="Empty: the model's own name">
                  <Input id={`t${i}-upstream`} value={t.upstreamModel} placeholder={f.name || "same as the model"} onChange={(e) => setTarget(i, { upstreamModel: e.target.value })} />
                </Field>
                <Field label="Priority" htmlFor={`t${i}-priority`} hint="Lower goes first">
                  <Input id={`t${i}-priority`} inputMode="numeric" value={t.priority} onChange={(e) => setTarget(i, { priority: e.target.value })} />
                </Field>
                <Field label="Weight" htmlFor={`t${i}-weight`} hint="0 drains the target">
                  <Input id={`t${i}-weight`} inputMode="numeric" value={t.weight} onChange={(e) => setTarget(i, { weight: e.target.value })} />
                </Field>
                <div className="grid content-center gap-2 sm:col-span-2">
                  <Switch id={`t${i}-enabled`} checked={t.enabled} onChange={(v) => setTarget(i, { enabled: v })} label="Enabled" />
                  <Checkbox id={`t${i}-prices`} checked={t.overridePrices} onChange={(e) => setTarget(i, { overridePrices: e.target.checked })} label="Own prices" />
                </div>
                <Field
                  label="Rule (JSON)"
                  htmlFor={`t${i}-rules`}
                  className="sm:col-span-4"
                  hint='Empty means always. E.g. {"field": "headers.x-tier", "op": "eq", "value": "premium"}'
                >
                  <Textarea id={`t${i}-rules`} rows={2} spellCheck={false} value={t.rules} onChange={(e) => setTarget(i, { rules: e.target.value })} />
                </Field>
                <Field
                  label="Default parameters"
                  htmlFor={`t${i}-defaults`}
                  className="sm:col-span-4"
                  hint='A JSON object of top-level fields filled in when the request lacks them; they win over the provider&apos;s. E.g. {"temperature": 0.2}'
                >
                  <Input id={`t${i}-defaults`} spellCheck={false} value={t.defaultParams} onChange={(e) => setTarget(i, { defaultParams: e.target.value })} />
                </Field>
                {t.overridePrices ? (
                  <div className="sm:col-span-4">
                    <PriceFields id={`t${i}-price`} value={t.prices} onChange={(p) => setTarget(i, { prices: p })} />
                  </div>
                ) : null}
              </div>
            </div>
          ))}
          <div>
            <Button variant="outline" size="sm" onClick={() => setF((old) => ({ ...old, targets: [...old.targets, newTarget(providers[0])] }))}>
              <Plus /> Add target
            </Button>
          </div>
        </fieldset>
        {error ? <ErrorAlert message={error} /> : null}
        <div className="flex justify-end gap-2 border-t pt-4">
          <Button variant="outline" onClick={onClose}>
            Cancel
          </Button>
          <Button type="submit" disabled={busy}>
            {model ? "Save changes" : "Create model"}
          </Button>
        </div>
      </form>
    </Dialog>
  );
}

function parseHeaderLines(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const i = line.indexOf(":");
    if (i <= 0) continue;
    out[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return out;
}

function ExplainRoute({ models, model, setModel }: { models: string[]; model: string; setModel: (m: string) => void }) {
  const keys = useQuery((signal) => api().listApiKeys({}, { signal }), []);
  const [clientApi, setClientApi] = useState("chat");
  const [key, setKey] = useState("");
  const [headers, setHeaders] = useState("");
  const [body, setBody] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const [result, setResult] = useState<ExplainRouteResponse>();
  const chosen = model || models[0] || "";

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (body.trim()) {
      try {
        JSON.parse(body);
      } catch {
        setError("The body is not valid JSON.");
        return;
      }
    }
    setBusy(true);
    setError("");
    try {
      // The request field keeps its old name, protocol; it names the client API.
      setResult(await api().explainRoute({ model: chosen, protocol: clientApi, key, headers: parseHeaderLines(headers), body: body.trim() }));
    } catch (err) {
      setResult(undefined);
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <Card>
      <CardHeader>
        <CardTitle className="flex items-center gap-2">
          <Route className="size-4" aria-hidden /> Explain route
        </CardTitle>
        <CardDescription>A dry run on the current snapshot: which targets a request would reach, in what order, and why.</CardDescription>
      </CardHeader>
      <CardContent>
        <form onSubmit={submit} className="grid gap-4 lg:grid-cols-[minmax(0,1fr)_minmax(0,1.4fr)]">
          <div className="grid content-start gap-3">
            <div className="grid gap-3 sm:grid-cols-2">
              <Field label="Model" htmlFor="x-model">
                <Select id="x-model" value={chosen} onChange={(e) => setModel(e.target.value)}>
                  {models.length === 0 ? <option value="">No models</option> : null}
                  {models.map((m) => (
                    <option key={m} value={m}>
                      {m}
                    </option>
                  ))}
                </Select>
              </Field>
              <Field label="Client API" htmlFor="x-api" hint={CLIENT_APIS.find((a) => a.value === clientApi)?.hint}>
                <Select id="x-api" value={clientApi} onChange={(e) => setClientApi(e.target.value)}>
                  {CLIENT_APIS.map((a) => (
                    <option key={a.value} value={a.value}>
                      {a.label}
                    </option>
                  ))}
                </Select>
              </Field>
            </div>
            <Field label="Client key" htmlFor="x-key" hint="Rules on key and the key's allowed models apply">
              <Select id="x-key" value={key} onChange={(e) => setKey(e.target.value)}>
                <option value="">None</option>
                {(keys.data?.apiKeys ?? []).map((k) => (
                  <option key={k.name} value={k.name}>
                    {k.name}
                  </option>
                ))}
              </Select>
            </Field>
            <Field label="Headers" htmlFor="x-headers" hint="One name: value per line">
              <Textarea id="x-headers" rows={2} spellCheck={false} value={headers} onChange={(e) => setHeaders(e.target.value)} placeholder="x-tier: premium" />
            </Field>
            <Field label="Body (JSON)" htmlFor="x-body" hint='Empty means {"model": MODEL}'>
              <Textarea id="x-body" rows={3} spellCheck={false} value={body} onChange={(e) => setBody(e.target.value)} placeholder='{"messages": [{"role": "user", "content": "hi"}]}' />
            </Field>
            <div>
              <Button type="submit" disabled={busy || !chosen}>
                {busy ? <Spinner className="text-primary-foreground" /> : <Route />} Explain
              </Button>
            </div>
          </div>
          <div aria-live="polite" className="min-w-0">
            {error ? <ErrorAlert message={error} /> : null}
            {!result && !error ? (
              <div className="flex h-full min-h-40 items-center justify-center rounded-lg border border-dashed text-sm text-muted-foreground">
                The verdict for each target shows here.
              </div>
            ) : null}
            {result ? <ExplainResult r={result} /> : null}
          </div>
        </form>
      </CardContent>
    </Card>
  );
}

function ExplainResult({ r }: { r: ExplainRouteResponse }) {
  return (
    <div className="grid gap-3" data-testid="explain-result">
      <div className="flex flex-wrap items-center gap-2 text-sm">
        <span className="font-medium">{r.model}</span>
        {r.type ? (
          <Badge variant="outline" data-testid="explain-type" title="Model type">
            {r.type}
          </Badge>
        ) : null}
        {r.strategy ? <Badge variant="outline">{r.strategy}</Badge> : null}
        <span className="text-muted-foreground">≈ {formatInt(r.estimatedInputTokens)} input tokens</span>
      </div>
      {r.error ? <ErrorAlert message={r.error} /> : null}
      {r.error && r.candidates.length === 0 ? null : (
        <div className="overflow-hidden rounded-lg border">
          <Table>
            <TableHeader>
              <TableRow className="hover:bg-transparent">
                <TableHead>Order</TableHead>
                <TableHead>Target</TableHead>
                <TableHead>Priority · weight</TableHead>
                <TableHead title="This request's estimated input and max_tokens at the target's prices">Est. cost</TableHead>
                <TableHead>Verdict</TableHead>
                <TableHead>Serving</TableHead>
                <TableHead>Why</TableHead>
              </TableRow>
            </TableHeader>
            <TableBody>
              {r.candidates.map((c, i) => (
                <TableRow key={i} className={c.kept ? "" : "text-muted-foreground"}>
                  <TableCell className="tabular-nums">{c.kept ? `#${c.order + 1}` : "–"}</TableCell>
                  <TableCell className="font-medium">
                    {c.provider}
                    <span className="text-muted-foreground">:{c.upstreamModel}</span>
                    {c.proxy ? <div className="font-mono text-xs text-muted-foreground">via {c.proxy}</div> : null}
                    {Object.keys(c.defaultParams).length ? (
                      <div className="font-mono text-xs text-muted-foreground">fills in when absent: {paramsSummary(c.defaultParams)}</div>
                    ) : null}
                  </TableCell>
                  <TableCell className="tabular-nums">
                    {c.priority} · {c.weight}
                  </TableCell>
                  <TableCell className="tabular-nums" data-testid="explain-cost">
                    {formatCost(c.estimatedCost)}
                  </TableCell>
                  <TableCell>{c.kept ? <Badge variant="success">kept</Badge> : <Badge variant="secondary">dropped</Badge>}</TableCell>
                  <TableCell className="whitespace-nowrap text-xs" title={c.serving}>
                    {servingBadge(c.serving).translated ? <Badge variant="outline">{servingBadge(c.serving).text}</Badge> : servingBadge(c.serving).text}
                  </TableCell>
                  <TableCell className="text-xs">{c.reason}</TableCell>
                </TableRow>
              ))}
            </TableBody>
          </Table>
        </div>
      )}
    </div>
  );
}
