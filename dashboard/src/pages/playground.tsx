// The playground (#17): talk to a model as a client of one protocol would,
// through a data plane (the control plane proxies the request, as the
// chosen key), and see the answer stream in, the route it took, its timing,
// tokens and cost.

import { MessageSquarePlus, Send, Square } from "lucide-react";
import { useMemo, useState } from "react";
import { RunLog } from "@/components/playground/run-log";
import { TurnsEditor } from "@/components/playground/turns-editor";
import { RunOutput, RunRoute } from "@/components/run-output";
import { ErrorAlert, PageHeader } from "@/components/states";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { Switch } from "@/components/ui/checkbox";
import { Input, Textarea } from "@/components/ui/input";
import { Field } from "@/components/ui/label";
import { Select } from "@/components/ui/select";
import { api } from "@/lib/api";
import { useQuery, useTitle } from "@/lib/hooks";
import {
  buildPlaygroundRequest,
  PLAYGROUND_PROTOCOLS,
  type PlaygroundProtocol,
  type PlaygroundRequestParts,
  parseParams,
  playgroundChoice,
  type Turn,
  turnsProblem,
} from "@/lib/playground";
import { activeKeyNames, keyAllows } from "@/lib/replay";
import { useLogWhenReady, useRun } from "@/lib/use-run";

export function PlaygroundPage() {
  useTitle("Playground");
  const models = useQuery((signal) => api().listModels({}, { signal }), []);
  const keys = useQuery((signal) => api().listApiKeys({}, { signal }), []);
  // What was picked by hand ("" until then).
  const [pickedModel, setPickedModel] = useState("");
  const [protocol, setProtocol] = useState<PlaygroundProtocol>("openai-chat");
  const [pickedKey, setPickedKey] = useState("");
  const [system, setSystem] = useState("");
  const [turns, setTurns] = useState<Turn[]>([{ role: "user", text: "" }]);
  const [temperature, setTemperature] = useState("");
  const [topP, setTopP] = useState("");
  const [maxTokens, setMaxTokens] = useState("");
  const [stream, setStream] = useState(true);
  const [formError, setFormError] = useState("");
  const [sent, setSent] = useState<PlaygroundRequestParts>();
  const run = useRun();
  const finished = run.phase === "done" || run.phase === "stopped";
  const requestId = run.view.head?.requestId ?? "";
  const logWait = useLogWhenReady(requestId, finished);

  const modelNames = useMemo(() => (models.data?.models ?? []).filter((m) => (m.type || "chat") === "chat").map((m) => m.name), [models.data]);
  const keyNames = useMemo(() => activeKeyNames(keys.data?.apiKeys ?? []), [keys.data]);
  const keyOf = (name: string) => keys.data?.apiKeys.find((k) => k.name === name);

  const { model, key } = playgroundChoice({ model: pickedModel, key: pickedKey }, modelNames, keyNames, (k, m) => keyAllows(keyOf(k), m));

  const keyRefusesModel = !!key && !!model && !keyAllows(keyOf(key), model);
  const running = run.phase === "running";

  const send = () => {
    setFormError("");
    const params = parseParams({ temperature, topP, maxTokens });
    if (!params.ok) return setFormError(params.error);
    const problem = turnsProblem(turns);
    if (problem) return setFormError(problem);
    if (!model) return setFormError("Choose a model.");
    if (!key) return setFormError("Choose a key: the request is sent as one of the gateway's client keys.");
    const req = buildPlaygroundRequest({ protocol, model, system, turns, stream, ...params.value });
    setSent(req);
    run.start(protocol, (signal) =>
      api().playground({ key, path: req.path, body: new TextEncoder().encode(req.body), headers: req.headers }, { signal }),
    );
  };

  const continueWithAnswer = () => {
    setTurns([...turns, { role: "assistant", text: run.view.answer.text }, { role: "user", text: "" }]);
    run.reset();
  };

  return (
    <>
      <PageHeader
        title="Playground"
        description="Talk to a model as a client of one protocol would. The control plane sends the request through a data plane as the chosen key; it is logged like any other, marked as coming from the playground."
      />
      <div className="grid gap-6 xl:grid-cols-[minmax(0,26rem)_minmax(0,1fr)]">
        <Card className="min-w-0 self-start">
          <CardHeader>
            <CardTitle>Request</CardTitle>
          </CardHeader>
          <CardContent>
            <form
              className="grid gap-4"
              aria-label="Playground request"
              onSubmit={(e) => {
                e.preventDefault();
                if (!running) send();
              }}
            >
              <div className="grid gap-4 sm:grid-cols-2 xl:grid-cols-1">
                <Field label="Model" htmlFor="pg-model" hint={models.loading && !models.data ? "Loading…" : modelNames.length === 0 ? "No chat model yet: add one on the Models page." : undefined}>
                  <Select id="pg-model" value={model} onChange={(e) => setPickedModel(e.target.value)} disabled={running}>
                    {!model ? <option value="">Choose a model</option> : null}
                    {modelNames.map((m) => (
                      <option key={m} value={m}>
                        {m}
                      </option>
                    ))}
                  </Select>
                </Field>
                <Field label="Client protocol" htmlFor="pg-protocol" hint={PLAYGROUND_PROTOCOLS.find((p) => p.value === protocol)?.hint}>
                  <Select id="pg-protocol" value={protocol} onChange={(e) => setProtocol(e.target.value as PlaygroundProtocol)} disabled={running}>
                    {PLAYGROUND_PROTOCOLS.map((p) => (
                      <option key={p.value} value={p.value}>
                        {p.label}
                      </option>
                    ))}
                  </Select>
                </Field>
                <Field
                  label="Key"
                  htmlFor="pg-key"
                  hint={keyNames.length === 0 && keys.data ? "No active key: create one on the API keys page." : "The request is authenticated as this key (by name; its secret never leaves the gateway)."}
                  error={keyRefusesModel ? `Key ${key} may not use model ${model}: the data plane will refuse it.` : undefined}
                >
                  <Select
                    id="pg-key"
                    value={key}
                    onChange={(e) => setPickedKey(e.target.value)}
                    disabled={running}
                  >
                    {!key ? <option value="">Choose a key</option> : null}
                    {keyNames.map((k) => (
                      <option key={k} value={k}>
                        {k}
                      </option>
                    ))}
                  </Select>
                </Field>
              </div>
              {models.error ? <ErrorAlert message={`Models: ${models.error}`} onRetry={models.reload} /> : null}
              {keys.error ? <ErrorAlert message={`Keys: ${keys.error}`} onRetry={keys.reload} /> : null}
              <Field label="System prompt" htmlFor="pg-system">
                <Textarea id="pg-system" value={system} onChange={(e) => setSystem(e.target.value)} className="min-h-16 font-sans text-sm" placeholder="Optional" disabled={running} />
              </Field>
              <TurnsEditor turns={turns} onChange={setTurns} disabled={running} />
              <fieldset className="grid gap-3" disabled={running}>
                <legend className="mb-2 text-sm font-medium">Parameters</legend>
                <div className="grid grid-cols-3 gap-3">
                  <Field label="Temperature" htmlFor="pg-temperature">
                    <Input id="pg-temperature" inputMode="decimal" value={temperature} onChange={(e) => setTemperature(e.target.value)} placeholder="default" />
                  </Field>
                  <Field label="Top P" htmlFor="pg-top-p">
                    <Input id="pg-top-p" inputMode="decimal" value={topP} onChange={(e) => setTopP(e.target.value)} placeholder="default" />
                  </Field>
                  <Field label="Max tokens" htmlFor="pg-max-tokens">
                    <Input id="pg-max-tokens" inputMode="numeric" value={maxTokens} onChange={(e) => setMaxTokens(e.target.value)} placeholder={protocol === "anthropic" ? "1024" : "default"} />
                  </Field>
                </div>
                <Switch id="pg-stream" checked={stream} onChange={setStream} label="Stream" disabled={running} />
              </fieldset>
              {formError ? <ErrorAlert message={formError} /> : null}
              <div className="flex gap-2">
                {/* Keyed apart: React must not turn the clicked Stop button
                    into the submit button, whose default action would send again. */}
                {running ? (
                  <Button
                    key="stop"
                    variant="destructive"
                    onClick={(e) => {
                      e.preventDefault();
                      run.stop();
                    }}
                  >
                    <Square /> Stop
                  </Button>
                ) : (
                  <Button key="send" type="submit">
                    <Send /> Send
                  </Button>
                )}
              </div>
            </form>
          </CardContent>
        </Card>

        <div className="grid min-w-0 content-start gap-6">
          <Card className="min-w-0">
            <CardHeader>
              <CardTitle>Answer</CardTitle>
              <CardDescription>As the data plane sends it, read as its protocol's client would read it.</CardDescription>
            </CardHeader>
            <CardContent className="grid gap-4">
              {run.phase === "idle" ? <p className="text-sm text-muted-foreground">Write a message and send it.</p> : <RunOutput run={run} />}
              {run.phase === "done" && run.view.answer.text ? (
                <Button variant="outline" size="sm" className="w-fit" onClick={continueWithAnswer}>
                  <MessageSquarePlus /> Continue the conversation
                </Button>
              ) : null}
            </CardContent>
          </Card>
          {run.view.head ? (
            <Card className="min-w-0">
              <CardHeader>
                <CardTitle>Route</CardTitle>
                <CardDescription>From the answer's headers, then from the request's log.</CardDescription>
              </CardHeader>
              <CardContent className="grid gap-4">
                <RunRoute run={run} />
                <RunLog id={requestId} wait={logWait} />
              </CardContent>
            </Card>
          ) : null}
          {sent ? (
            <details className="rounded-xl border bg-card p-4 text-sm" data-testid="sent-request">
              <summary className="cursor-pointer font-medium">The request sent</summary>
              <p className="mt-2 font-mono text-xs">
                POST {sent.path}
                {Object.entries(sent.headers).map(([k, v]) => (
                  <span key={k} className="block text-muted-foreground">
                    {k}: {v}
                  </span>
                ))}
              </p>
              <pre className="mt-2 max-h-80 overflow-auto rounded-lg border bg-muted/50 p-3 font-mono text-xs whitespace-pre-wrap break-words">{JSON.stringify(JSON.parse(sent.body), null, 2)}</pre>
            </details>
          ) : null}
        </div>
      </div>
    </>
  );
}
