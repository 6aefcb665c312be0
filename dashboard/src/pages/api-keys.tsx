import { AlertTriangle, Ban, Gauge, KeyRound, Pencil, Plus, Trash2 } from "lucide-react";
import { type FormEvent, useState } from "react";
import { ConfirmDialog } from "@/components/confirm";
import { CopyButton } from "@/components/copy-button";
import { LimitsCell, LimitsFields, ResetSpendDialog, useScopeUsage } from "@/components/limits";
import { Empty, ErrorAlert, PageHeader, TableSkeleton } from "@/components/states";
import { BrokenBadge } from "@/components/broken-badge";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card } from "@/components/ui/card";
import { Checkbox, Switch } from "@/components/ui/checkbox";
import { Dialog } from "@/components/ui/dialog";
import { Input } from "@/components/ui/input";
import { Field } from "@/components/ui/label";
import { Select } from "@/components/ui/select";
import { Table, TableBody, TableCell, TableHead, TableHeader, TableRow } from "@/components/ui/table";
import type { ApiKey } from "@/gen/llmgw/v1/admin_pb";
import { api, errorMessage } from "@/lib/api";
import { formatDateTime, formatRelative, toDate } from "@/lib/format";
import { limitsForCreate, limitsForUpdate, limitsFormOf, limitsSummary, NO_LIMITS } from "@/lib/limits";
import { useQuery, useTitle } from "@/lib/hooks";

const EXPIRIES = [
  { value: "0", label: "Never" },
  { value: String(86_400), label: "1 day" },
  { value: String(7 * 86_400), label: "7 days" },
  { value: String(30 * 86_400), label: "30 days" },
  { value: String(90 * 86_400), label: "90 days" },
  { value: String(365 * 86_400), label: "1 year" },
];

function KeyState({ k }: { k: ApiKey }) {
  if (k.revoked) return <Badge variant="destructive">revoked</Badge>;
  const exp = toDate(k.expiresAt);
  if (exp && exp.getTime() <= Date.now()) return <Badge variant="warning">expired</Badge>;
  return <Badge variant="success">active</Badge>;
}

export function ApiKeysPage() {
  useTitle("API keys");
  const list = useQuery((signal) => api().listApiKeys({}, { signal }), []);
  const usage = useScopeUsage("key");
  const [creating, setCreating] = useState(false);
  const [editing, setEditing] = useState<ApiKey | null>(null);
  const [editingDefaults, setEditingDefaults] = useState(false);
  const [resetting, setResetting] = useState<string | null>(null);
  const [created, setCreated] = useState<{ name: string; secret: string } | null>(null);
  const [revoking, setRevoking] = useState<ApiKey | null>(null);
  const [deleting, setDeleting] = useState<ApiKey | null>(null);
  const keys = list.data?.apiKeys ?? [];

  return (
    <>
      <PageHeader
        title="API keys"
        description="Keys that applications use against the data planes. Only a hash of each is stored."
        actions={
          <>
            <Button variant="outline" onClick={() => setEditingDefaults(true)}>
              <Gauge /> Default limits
            </Button>
            <Button onClick={() => setCreating(true)}>
              <Plus /> Create key
            </Button>
          </>
        }
      />
      {list.error ? <ErrorAlert message={list.error} onRetry={list.reload} className="mb-4" /> : null}
      {usage.error && !list.error ? <ErrorAlert message={`Usage of the limits unavailable: ${usage.error}`} onRetry={usage.reload} className="mb-4" /> : null}
      <Card className="overflow-hidden">
        {list.loading && !list.data ? (
          <TableSkeleton />
        ) : keys.length === 0 && !list.error ? (
          <Empty title="No API keys yet" icon={<KeyRound />}>
            Create a key for each application or team; its secret is shown once.
          </Empty>
        ) : (
          <Table>
            <TableHeader>
              <TableRow className="hover:bg-transparent">
                <TableHead className="pl-5">Name</TableHead>
                <TableHead>Prefix</TableHead>
                <TableHead>Allowed models</TableHead>
                <TableHead>Status</TableHead>
                <TableHead>Limits</TableHead>
                <TableHead>Expires</TableHead>
                <TableHead>Last used</TableHead>
                <TableHead>Created</TableHead>
                <TableHead className="pr-5 text-right">
                  <span className="sr-only">Actions</span>
                </TableHead>
              </TableRow>
            </TableHeader>
            <TableBody>
              {keys.map((k) => (
                <TableRow key={k.name}>
                  <TableCell className="pl-5 font-medium">
                    {k.name}
                    {!k.logBodies ? (
                      <span className="ml-2 text-xs font-normal text-muted-foreground" title="Request and response bodies are not logged">
                        no bodies
                      </span>
                    ) : null}
                  </TableCell>
                  <TableCell className="font-mono text-xs">{k.prefix}…</TableCell>
                  <TableCell>
                    {k.models.length === 0 ? (
                      <span className="text-xs text-muted-foreground">all models</span>
                    ) : (
                      <div className="flex flex-wrap gap-1">
                        {k.models.map((m) => (
                          <Badge key={m} variant="secondary">
                            {m}
                          </Badge>
                        ))}
                      </div>
                    )}
                  </TableCell>
                  <TableCell>
                    <div className="flex flex-wrap gap-1">
                      <KeyState k={k} />
                      <BrokenBadge broken={k.broken} />
                    </div>
                  </TableCell>
                  <TableCell>
                    <LimitsCell name={k.name} usage={usage} configured={k.limits} onResetSpend={() => setResetting(k.name)} />
                  </TableCell>
                  <TableCell className="whitespace-nowrap text-xs" title={formatDateTime(k.expiresAt)}>
                    {k.expiresAt ? formatRelative(k.expiresAt) : <span className="text-muted-foreground">never</span>}
                  </TableCell>
                  <TableCell className="whitespace-nowrap text-xs" title={formatDateTime(k.lastUsedAt)}>
                    {k.lastUsedAt ? formatRelative(k.lastUsedAt) : <span className="text-muted-foreground">never</span>}
                  </TableCell>
                  <TableCell className="whitespace-nowrap text-xs text-muted-foreground">{formatDateTime(k.createdAt)}</TableCell>
                  <TableCell className="pr-5 text-right whitespace-nowrap">
                    <Button variant="ghost" size="icon-sm" aria-label={`Edit ${k.name}`} title="Edit" onClick={() => setEditing(k)}>
                      <Pencil />
                    </Button>
                    <Button variant="ghost" size="icon-sm" aria-label={`Revoke ${k.name}`} title="Revoke" disabled={k.revoked} onClick={() => setRevoking(k)}>
                      <Ban />
                    </Button>
                    <Button variant="ghost" size="icon-sm" aria-label={`Delete ${k.name}`} title="Delete" onClick={() => setDeleting(k)}>
                      <Trash2 />
                    </Button>
                  </TableCell>
                </TableRow>
              ))}
            </TableBody>
          </Table>
        )}
      </Card>
      {creating || editing ? (
        <KeyDialog
          apiKey={editing ?? undefined}
          onClose={() => {
            setCreating(false);
            setEditing(null);
          }}
          onSaved={(name, secret) => {
            setCreating(false);
            setEditing(null);
            if (secret) setCreated({ name, secret });
            list.reload();
            usage.reload();
          }}
        />
      ) : null}
      {editingDefaults ? (
        <DefaultLimitsDialog
          onClose={() => setEditingDefaults(false)}
          onSaved={() => {
            setEditingDefaults(false);
            usage.reload();
          }}
        />
      ) : null}
      <ResetSpendDialog scope="key" name={resetting} onClose={() => setResetting(null)} onDone={usage.reload} />
      {created ? <SecretDialog name={created.name} secret={created.secret} onClose={() => setCreated(null)} /> : null}
      <ConfirmDialog
        open={revoking != null}
        title={`Revoke key ${revoking?.name ?? ""}?`}
        description="Requests with it are refused as soon as the data planes have the new version. The key stays listed."
        confirmLabel="Revoke key"
        onClose={() => setRevoking(null)}
        onConfirm={async () => {
          if (!revoking) return;
          await api().revokeApiKey({ name: revoking.name });
          list.reload();
        }}
      />
      <ConfirmDialog
        open={deleting != null}
        title={`Delete key ${deleting?.name ?? ""}?`}
        description="Requests with it are refused, and it disappears from the list. Its request logs stay."
        confirmLabel="Delete key"
        onClose={() => setDeleting(null)}
        onConfirm={async () => {
          if (!deleting) return;
          await api().deleteApiKey({ name: deleting.name });
          list.reload();
        }}
      />
    </>
  );
}

/** Creates a key (its secret is handed to onSaved once) or edits one: models, body logging, limits. */
function KeyDialog({ apiKey, onClose, onSaved }: { apiKey?: ApiKey; onClose: () => void; onSaved: (name: string, secret?: string) => void }) {
  const models = useQuery((signal) => api().listModels({}, { signal }), []);
  const [name, setName] = useState(apiKey?.name ?? "");
  const [allowed, setAllowed] = useState<string[]>(apiKey?.models ?? []);
  const [expires, setExpires] = useState("0");
  const [logBodies, setLogBodies] = useState(apiKey?.logBodies ?? true);
  const [limits, setLimits] = useState(() => limitsFormOf(apiKey?.limits));
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError("");
    try {
      // Validated before anything is sent.
      const limitsField = apiKey ? limitsForUpdate(limits, apiKey.limits) : limitsForCreate(limits);
      setBusy(true);
      if (!apiKey) {
        const res = await api().createApiKey({ name: name.trim(), models: allowed, expiresInS: BigInt(expires), logBodies, limits: limitsField });
        onSaved(res.apiKey?.name ?? name.trim(), res.key);
        return;
      }
      const modelsChanged = [...allowed].sort().join("\n") !== [...apiKey.models].sort().join("\n");
      await api().updateApiKey({
        name: apiKey.name,
        models: modelsChanged ? { names: allowed } : undefined,
        logBodies: logBodies !== apiKey.logBodies ? logBodies : undefined,
        limits: limitsField,
      });
      onSaved(apiKey.name);
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };

  const names = (models.data?.models ?? []).map((m) => m.name);
  for (const m of allowed) if (!names.includes(m)) names.push(m);
  return (
    <Dialog
      open
      onClose={onClose}
      title={apiKey ? `Edit key ${apiKey.name}` : "Create API key"}
      description={apiKey ? "The secret stays as it is." : "The secret is shown once, right after this."}
      className="max-w-xl"
    >
      <form onSubmit={submit} className="grid gap-4">
        <Field label="Name" htmlFor="k-name" hint={apiKey ? undefined : "Who or what uses it, e.g. team-a"}>
          <Input id="k-name" value={name} onChange={(e) => setName(e.target.value)} disabled={!!apiKey} required autoFocus={!apiKey} />
        </Field>
        <fieldset className="grid gap-2">
          <legend className="mb-1 text-sm font-medium">Allowed models</legend>
          <p className="text-xs text-muted-foreground">None checked: every model.</p>
          {models.error ? <ErrorAlert message={models.error} /> : null}
          <div className="grid max-h-40 gap-2 overflow-y-auto sm:grid-cols-2">
            {names.map((m) => (
              <Checkbox
                key={m}
                id={`k-model-${m}`}
                label={m}
                checked={allowed.includes(m)}
                onChange={(e) => setAllowed((a) => (e.target.checked ? [...a, m] : a.filter((x) => x !== m)))}
              />
            ))}
          </div>
        </fieldset>
        {apiKey ? null : (
          <Field label="Expires" htmlFor="k-expires">
            <Select id="k-expires" value={expires} onChange={(e) => setExpires(e.target.value)}>
              {EXPIRIES.map((x) => (
                <option key={x.value} value={x.value}>
                  {x.label}
                </option>
              ))}
            </Select>
          </Field>
        )}
        <Switch id="k-bodies" checked={logBodies} onChange={setLogBodies} label="Log request and response bodies" />
        <LimitsFields
          id="k-limits"
          value={limits}
          onChange={setLimits}
          windowMs={apiKey?.limits?.windowMs}
          hint="A key that sets none gets the default key limits."
        />
        {error ? <ErrorAlert message={error} /> : null}
        <div className="flex justify-end gap-2 border-t pt-4">
          <Button variant="outline" onClick={onClose}>
            Cancel
          </Button>
          <Button type="submit" disabled={busy}>
            {apiKey ? "Save changes" : "Create key"}
          </Button>
        </div>
      </form>
    </Dialog>
  );
}

/** The limits of every key that sets none of its own (SetDefaultKeyLimits); read from the exported configuration. */
function DefaultLimitsDialog({ onClose, onSaved }: { onClose: () => void; onSaved: () => void }) {
  const stored = useQuery(async (signal) => (await api().exportConfig({}, { signal })).defaultKeyLimits, []);
  const [limits, setLimits] = useState(NO_LIMITS);
  const [loaded, setLoaded] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  if (!loaded && !stored.loading && !stored.error) {
    setLoaded(true);
    setLimits(limitsFormOf(stored.data));
  }

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError("");
    try {
      const update = limitsForUpdate(limits, stored.data);
      setBusy(true);
      if (update) await api().setDefaultKeyLimits({ limits: update });
      onSaved();
    } catch (err) {
      setError(errorMessage(err));
    } finally {
      setBusy(false);
    }
  };

  const now = limitsSummary(stored.data);
  return (
    <Dialog
      open
      onClose={onClose}
      title="Default key limits"
      description={stored.loading ? "Loading…" : `Now: ${now || "none"}. Each key without its own limits has its own buckets of these sizes.`}
      className="max-w-xl"
    >
      <form onSubmit={submit} className="grid gap-4">
        {stored.error ? <ErrorAlert message={stored.error} onRetry={stored.reload} /> : null}
        <LimitsFields id="d-limits" value={limits} onChange={setLimits} windowMs={stored.data?.windowMs} hint="They apply to every key that sets no limits of its own." />
        {error ? <ErrorAlert message={error} /> : null}
        <div className="flex justify-end gap-2 border-t pt-4">
          <Button variant="outline" onClick={onClose}>
            Cancel
          </Button>
          <Button type="submit" disabled={busy || !loaded}>
            Save defaults
          </Button>
        </div>
      </form>
    </Dialog>
  );
}

/** Shows a new key's secret once. Closing it forgets the secret. */
function SecretDialog({ name, secret, onClose }: { name: string; secret: string; onClose: () => void }) {
  return (
    <Dialog
      open
      onClose={onClose}
      title={`Key ${name} created`}
      dismissible={false}
      footer={<Button onClick={onClose}>I have copied it</Button>}
    >
      <div className="grid gap-4">
        <div role="note" className="flex gap-3 rounded-lg border border-amber-200 bg-amber-50 px-4 py-3 text-sm text-amber-900">
          <AlertTriangle className="mt-0.5 size-4 shrink-0" aria-hidden />
          <p>
            Copy this key now. It is shown only this once: the gateway keeps just a hash, so it cannot be shown again.
            If it is lost, create a new key and delete this one.
          </p>
        </div>
        <Field label="Secret key" htmlFor="k-secret">
          <div className="flex gap-2">
            <Input id="k-secret" readOnly value={secret} className="font-mono text-xs" onFocus={(e) => e.currentTarget.select()} spellCheck={false} />
            <CopyButton text={secret} className="h-9" />
          </div>
        </Field>
      </div>
    </Dialog>
  );
}
