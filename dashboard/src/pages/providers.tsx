import { List, Pencil, Plus, Server, Trash2, X } from "lucide-react";
import { type FormEvent, useState } from "react";
import { ConfirmDialog } from "@/components/confirm";
import { ProviderModelsDialog } from "@/components/provider-models";
import { LimitsCell, LimitsFields, ResetSpendDialog, useScopeUsage } from "@/components/limits";
import { Empty, ErrorAlert, PageHeader, TableSkeleton } from "@/components/states";
import { BrokenBadge } from "@/components/broken-badge";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card } from "@/components/ui/card";
import { Switch } from "@/components/ui/checkbox";
import { Dialog } from "@/components/ui/dialog";
import { Input } from "@/components/ui/input";
import { Field } from "@/components/ui/label";
import { Select } from "@/components/ui/select";
import { Table, TableBody, TableCell, TableHead, TableHeader, TableRow } from "@/components/ui/table";
import type { Provider } from "@/gen/llmgw/v1/admin_pb";
import { paramsOf, paramsText } from "@/lib/default-params";
import { api, errorMessage } from "@/lib/api";
import { formatRelative } from "@/lib/format";
import { limitsForCreate, type LimitsForm, limitsFormOf, limitsForUpdate, NO_LIMITS } from "@/lib/limits";
import { PROTOCOLS, protocolChoice } from "@/lib/protocols";
import { useQuery, useTitle } from "@/lib/hooks";

interface HeaderRow {
  name: string;
  value: string;
}

interface Form {
  name: string;
  protocol: string;
  baseUrl: string;
  apiKey: string;
  removeKey: boolean;
  timeoutS: string;
  enabled: boolean;
  streamUsage: boolean;
  proxy: string;
  defaultParams: string;
  headers: HeaderRow[];
  limits: LimitsForm;
}

const EMPTY: Form = {
  name: "",
  protocol: "openai",
  baseUrl: "",
  apiKey: "",
  removeKey: false,
  timeoutS: "",
  enabled: true,
  streamUsage: true,
  proxy: "",
  defaultParams: "",
  headers: [],
  limits: NO_LIMITS,
};

function formOf(p: Provider): Form {
  return {
    name: p.name,
    protocol: p.protocol,
    baseUrl: p.baseUrl,
    apiKey: "",
    removeKey: false,
    timeoutS: p.timeoutS ? String(p.timeoutS) : "",
    enabled: p.enabled,
    streamUsage: p.streamUsage,
    proxy: p.proxy,
    defaultParams: paramsText(p.defaultParams),
    headers: Object.entries(p.headers)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([name, value]) => ({ name, value })),
    limits: limitsFormOf(p.limits),
  };
}

function headerMap(rows: HeaderRow[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const r of rows) if (r.name.trim()) out[r.name.trim()] = r.value;
  return out;
}

export function ProvidersPage() {
  useTitle("Providers");
  const list = useQuery((signal) => api().listProviders({}, { signal }), []);
  const usage = useScopeUsage("provider");
  const [resetting, setResetting] = useState<string | null>(null);
  const [editing, setEditing] = useState<Provider | "new" | null>(null);
  const [deleting, setDeleting] = useState<Provider | null>(null);
  const [listing, setListing] = useState<string | null>(null);
  const providers = list.data?.providers ?? [];

  return (
    <>
      <PageHeader
        title="Providers"
        description="Upstream LLM APIs. API keys are sealed at rest and never shown again."
        actions={
          <Button onClick={() => setEditing("new")}>
            <Plus /> Add provider
          </Button>
        }
      />
      {list.error ? <ErrorAlert message={list.error} onRetry={list.reload} className="mb-4" /> : null}
      {usage.error && !list.error ? <ErrorAlert message={`Usage of the limits unavailable: ${usage.error}`} onRetry={usage.reload} className="mb-4" /> : null}
      <Card className="overflow-hidden">
        {list.loading && !list.data ? (
          <TableSkeleton />
        ) : providers.length === 0 && !list.error ? (
          <Empty title="No providers yet" icon={<Server />}>
            Add the upstream APIs your models will use: an OpenAI, OpenAI-compatible, Anthropic or Gemini base URL and its API key.
          </Empty>
        ) : (
          <Table>
            <TableHeader>
              <TableRow className="hover:bg-transparent">
                <TableHead className="pl-5">Name</TableHead>
                <TableHead>Protocol</TableHead>
                <TableHead>Base URL</TableHead>
                <TableHead>API key</TableHead>
                <TableHead>Proxy</TableHead>
                <TableHead>Timeout</TableHead>
                <TableHead>Status</TableHead>
                <TableHead>Limits</TableHead>
                <TableHead>Updated</TableHead>
                <TableHead className="pr-5 text-right">
                  <span className="sr-only">Actions</span>
                </TableHead>
              </TableRow>
            </TableHeader>
            <TableBody>
              {providers.map((p) => (
                <TableRow key={p.name}>
                  <TableCell className="pl-5 font-medium">{p.name}</TableCell>
                  <TableCell>
                    <Badge variant="outline" title={protocolChoice(p.protocol).hint}>
                      {p.protocol}
                    </Badge>
                  </TableCell>
                  <TableCell className="max-w-72 truncate font-mono text-xs" title={p.baseUrl}>
                    {p.baseUrl}
                  </TableCell>
                  <TableCell className="font-mono text-xs">{p.apiKey || <span className="text-muted-foreground">none</span>}</TableCell>
                  <TableCell className="font-mono text-xs">{p.proxy || <span className="text-muted-foreground">direct</span>}</TableCell>
                  <TableCell className="tabular-nums">{p.timeoutS ? `${p.timeoutS} s` : <span className="text-muted-foreground">default</span>}</TableCell>
                  <TableCell>
                    <div className="flex flex-wrap gap-1">
                      {p.enabled ? <Badge variant="success">enabled</Badge> : <Badge variant="secondary">disabled</Badge>}
                      <BrokenBadge broken={p.broken} />
                    </div>
                  </TableCell>
                  <TableCell>
                    <LimitsCell name={p.name} usage={usage} configured={p.limits} onResetSpend={() => setResetting(p.name)} />
                  </TableCell>
                  <TableCell className="whitespace-nowrap text-xs text-muted-foreground">{formatRelative(p.updatedAt)}</TableCell>
                  <TableCell className="pr-5 text-right whitespace-nowrap">
                    <Button
                      variant="ghost"
                      size="icon-sm"
                      aria-label={`Upstream models of ${p.name}`}
                      title="What the upstream serves"
                      onClick={() => setListing(p.name)}
                    >
                      <List />
                    </Button>
                    <Button variant="ghost" size="icon-sm" aria-label={`Edit ${p.name}`} onClick={() => setEditing(p)}>
                      <Pencil />
                    </Button>
                    <Button variant="ghost" size="icon-sm" aria-label={`Delete ${p.name}`} onClick={() => setDeleting(p)}>
                      <Trash2 />
                    </Button>
                  </TableCell>
                </TableRow>
              ))}
            </TableBody>
          </Table>
        )}
      </Card>
      {listing ? <ProviderModelsDialog name={listing} onClose={() => setListing(null)} /> : null}
      {editing ? (
        <ProviderDialog
          provider={editing === "new" ? undefined : editing}
          onClose={() => setEditing(null)}
          onSaved={() => {
            setEditing(null);
            list.reload();
            usage.reload();
          }}
        />
      ) : null}
      <ResetSpendDialog scope="provider" name={resetting} onClose={() => setResetting(null)} onDone={usage.reload} />
      <ConfirmDialog
        open={deleting != null}
        title={`Delete provider ${deleting?.name ?? ""}?`}
        description="Models that use it must be changed first; the control plane refuses otherwise."
        confirmLabel="Delete provider"
        onClose={() => setDeleting(null)}
        onConfirm={async () => {
          if (!deleting) return;
          await api().deleteProvider({ name: deleting.name });
          list.reload();
        }}
      />
    </>
  );
}

function ProviderDialog({ provider, onClose, onSaved }: { provider?: Provider; onClose: () => void; onSaved: () => void }) {
  const initial = provider ? formOf(provider) : EMPTY;
  const [f, setF] = useState<Form>(initial);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const set = (patch: Partial<Form>) => setF((old) => ({ ...old, ...patch }));

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const timeout = f.timeoutS.trim() ? Number(f.timeoutS) : 0;
    if (!Number.isInteger(timeout) || timeout < 0) {
      setError("Timeout must be a whole number of seconds.");
      return;
    }
    let defaultParams: Record<string, string>;
    try {
      defaultParams = paramsOf(f.defaultParams);
    } catch (err) {
      setError(errorMessage(err));
      return;
    }
    setBusy(true);
    setError("");
    try {
      const limits = provider ? limitsForUpdate(f.limits, provider.limits) : limitsForCreate(f.limits);
      if (!provider) {
        await api().createProvider({
          name: f.name.trim(),
          protocol: f.protocol,
          baseUrl: f.baseUrl.trim(),
          apiKey: f.apiKey,
          headers: headerMap(f.headers),
          timeoutS: timeout,
          enabled: f.enabled,
          streamUsage: f.streamUsage,
          proxy: f.proxy.trim(),
          defaultParams,
          limits,
        });
      } else {
        const headersChanged = JSON.stringify(headerMap(f.headers)) !== JSON.stringify(headerMap(initial.headers));
        await api().updateProvider({
          name: provider.name,
          protocol: f.protocol,
          baseUrl: f.baseUrl.trim(),
          apiKey: f.removeKey ? "" : f.apiKey ? f.apiKey : undefined,
          headers: headersChanged ? { values: headerMap(f.headers) } : undefined,
          timeoutS: timeout,
          enabled: f.enabled,
          streamUsage: f.streamUsage,
          // The masked value shown keeps the stored proxy; empty removes it.
          proxy: f.proxy.trim() !== initial.proxy ? f.proxy.trim() : undefined,
          defaultParams: f.defaultParams.trim() !== initial.defaultParams ? { values: defaultParams } : undefined,
          limits,
        });
      }
      setF(EMPTY);
      onSaved();
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <Dialog
      open
      onClose={onClose}
      title={provider ? `Edit provider ${provider.name}` : "Add provider"}
      description="Requests reach the upstream at the base URL plus the endpoint's path."
      className="max-w-xl"
    >
      <form onSubmit={submit} className="grid gap-4" id="provider-form">
        <div className="grid gap-4 sm:grid-cols-2">
          <Field label="Name" htmlFor="p-name" hint="Letters, digits, . _ -">
            <Input id="p-name" value={f.name} onChange={(e) => set({ name: e.target.value })} disabled={!!provider} required autoFocus={!provider} />
          </Field>
          <Field label="Protocol" htmlFor="p-protocol" hint={protocolChoice(f.protocol).hint}>
            <Select id="p-protocol" value={f.protocol} onChange={(e) => set({ protocol: e.target.value })}>
              {PROTOCOLS.map((p) => (
                <option key={p.value} value={p.value}>
                  {p.label}
                </option>
              ))}
              {PROTOCOLS.some((p) => p.value === f.protocol) ? null : <option value={f.protocol}>{f.protocol}</option>}
            </Select>
          </Field>
        </div>
        <Field label="Base URL" htmlFor="p-url" hint={`For example ${protocolChoice(f.protocol).baseUrl || PROTOCOLS[0]!.baseUrl}`}>
          <Input
            id="p-url"
            type="url"
            inputMode="url"
            value={f.baseUrl}
            onChange={(e) => set({ baseUrl: e.target.value })}
            required
            placeholder={protocolChoice(f.protocol).baseUrl || PROTOCOLS[0]!.baseUrl}
          />
        </Field>
        <Field
          label="API key"
          htmlFor="p-key"
          hint={
            provider
              ? provider.apiKey
                ? `Stored key: ${provider.apiKey}. Leave empty to keep it.`
                : "No key is stored."
              : "Write-only: it is sealed and never shown again."
          }
        >
          <Input
            id="p-key"
            type="password"
            autoComplete="off"
            spellCheck={false}
            value={f.apiKey}
            disabled={f.removeKey}
            onChange={(e) => set({ apiKey: e.target.value })}
            placeholder={provider?.apiKey ? "Unchanged" : ""}
          />
        </Field>
        <Field
          label="Outbound proxy"
          htmlFor="p-proxy"
          hint="http://, https:// or socks5://, with optional user:pass@ (sealed, shown masked). Empty: connect directly."
        >
          <Input
            id="p-proxy"
            autoComplete="off"
            spellCheck={false}
            value={f.proxy}
            onChange={(e) => set({ proxy: e.target.value })}
            placeholder="socks5://user:pass@proxy.internal:1080"
          />
        </Field>
        <Field
          label="Default parameters"
          htmlFor="p-defaults"
          hint='A JSON object of top-level request fields filled in only when the request lacks them (a target&apos;s own win). E.g. {"temperature": 0.2}'
        >
          <Input id="p-defaults" spellCheck={false} value={f.defaultParams} onChange={(e) => set({ defaultParams: e.target.value })} placeholder='{"temperature": 0.2}' />
        </Field>
        {provider?.apiKey ? (
          <Switch id="p-remove-key" checked={f.removeKey} onChange={(v) => set({ removeKey: v, apiKey: "" })} label="Remove the stored key" />
        ) : null}
        <div className="grid gap-4 sm:grid-cols-2">
          <Field label="Timeout (seconds)" htmlFor="p-timeout" hint="Idle timeout; empty uses the global one">
            <Input id="p-timeout" inputMode="numeric" value={f.timeoutS} onChange={(e) => set({ timeoutS: e.target.value })} placeholder="default" />
          </Field>
          <div className="grid content-end gap-3 pb-1">
            <Switch id="p-enabled" checked={f.enabled} onChange={(v) => set({ enabled: v })} label="Enabled" />
            <Switch id="p-stream-usage" checked={f.streamUsage} onChange={(v) => set({ streamUsage: v })} label="Ask streams for usage" />
          </div>
        </div>
        <fieldset className="grid gap-2">
          <legend className="mb-2 text-sm font-medium">Extra headers</legend>
          {f.headers.length === 0 ? <p className="text-xs text-muted-foreground">None. Sensitive values come back masked; leave them as they are to keep them.</p> : null}
          {f.headers.map((h, i) => (
            <div key={i} className="flex gap-2">
              <Input
                aria-label={`Header ${i + 1} name`}
                placeholder="name"
                value={h.name}
                onChange={(e) => set({ headers: f.headers.map((x, j) => (j === i ? { ...x, name: e.target.value } : x)) })}
                className="w-2/5"
              />
              <Input
                aria-label={`Header ${i + 1} value`}
                placeholder="value"
                autoComplete="off"
                value={h.value}
                onChange={(e) => set({ headers: f.headers.map((x, j) => (j === i ? { ...x, value: e.target.value } : x)) })}
              />
              <Button variant="ghost" size="icon" aria-label={`Remove header ${i + 1}`} onClick={() => set({ headers: f.headers.filter((_, j) => j !== i) })}>
                <X />
              </Button>
            </div>
          ))}
          <div>
            <Button variant="outline" size="sm" onClick={() => set({ headers: [...f.headers, { name: "", value: "" }] })}>
              <Plus /> Add header
            </Button>
          </div>
        </fieldset>
        <LimitsFields
          id="p-limits"
          value={f.limits}
          onChange={(limits) => set({ limits })}
          windowMs={provider?.limits?.windowMs}
          hint="They protect the upstream's own quota: a target whose provider is at its limit is skipped."
        />
        {error ? <ErrorAlert message={error} /> : null}
        <div className="flex justify-end gap-2 border-t pt-4">
          <Button variant="outline" onClick={onClose}>
            Cancel
          </Button>
          <Button type="submit" disabled={busy}>
            {provider ? "Save changes" : "Create provider"}
          </Button>
        </div>
      </form>
    </Dialog>
  );
}
