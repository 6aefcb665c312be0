// Replay (#17): sends a logged request's body again through a data plane,
// as a chosen key, optionally to another model. The answer streams in the
// dialog; once the new request's log has arrived, it is shown side by side
// with the original.

import { ExternalLink, Play, Square } from "lucide-react";
import { useMemo, useState } from "react";
import type { RequestLog } from "@/gen/llmgw/v1/logs_pb";
import { api } from "@/lib/api";
import { conversationProtocol } from "@/lib/conversation";
import { useQuery } from "@/lib/hooks";
import { activeKeyNames, keyAllows, replayRequest } from "@/lib/replay";
import { Link } from "@/lib/router";
import { useLogWhenReady, useRun } from "@/lib/use-run";
import { RunOutput } from "./run-output";
import { SideBySide } from "./side-by-side";
import { ErrorAlert, Spinner } from "./states";
import { Button } from "./ui/button";
import { Dialog } from "./ui/dialog";
import { Field } from "./ui/label";
import { Select } from "./ui/select";

export function ReplayDialog({ log, onClose }: { log: RequestLog; onClose: () => void }) {
  const models = useQuery((signal) => api().listModels({}, { signal }), []);
  const keys = useQuery((signal) => api().listApiKeys({}, { signal }), []);
  const [model, setModel] = useState(log.model);
  const [key, setKey] = useState(log.key);
  const run = useRun();
  const finished = run.phase !== "idle" && run.phase !== "running";
  const newId = run.view.head?.requestId ?? "";
  const newLog = useLogWhenReady(newId, finished && run.phase !== "failed");

  const modelNames = useMemo(() => {
    const names = (models.data?.models ?? []).map((m) => m.name);
    if (log.model && !names.includes(log.model)) names.unshift(log.model);
    return names;
  }, [models.data, log.model]);
  const keyNames = useMemo(() => activeKeyNames(keys.data?.apiKeys ?? []), [keys.data]);
  const originalKeyActive = !keys.data || keyNames.includes(log.key);
  const chosenKey = keys.data?.apiKeys.find((k) => k.name === key);
  const keyRefusesModel = !keyAllows(chosenKey, model);
  // Records stored before the protocol names: the conversation's protocol from the path.
  const protocol = conversationProtocol(log.protocol, log.path) ?? "openai-chat";

  const replay = () =>
    run.start(protocol, (signal) => api().replayLog(replayRequest(log, model, key), { signal }));

  return (
    <Dialog
      open
      onClose={() => {
        run.stop();
        onClose();
      }}
      title="Replay this request"
      description="Its logged body is sent again through a data plane, as the chosen key, to the chosen model. The new request is logged as a replay of this one."
      className="max-w-6xl"
      footer={
        <>
          {run.phase === "running" ? (
            <Button variant="outline" onClick={run.stop}>
              <Square /> Stop
            </Button>
          ) : null}
          <Button
            variant="outline"
            onClick={() => {
              run.stop();
              onClose();
            }}
          >
            Close
          </Button>
          <Button onClick={replay} disabled={run.phase === "running" || !model || !key}>
            <Play /> {run.phase === "idle" ? "Replay" : "Replay again"}
          </Button>
        </>
      }
    >
      <div className="grid gap-5">
        <div className="grid gap-4 sm:grid-cols-2">
          <Field label="Model" htmlFor="replay-model" hint={model === log.model ? "The original's model." : `Instead of ${log.model || "the original's"}.`}>
            <Select id="replay-model" value={model} onChange={(e) => setModel(e.target.value)} disabled={run.phase === "running"}>
              {modelNames.map((m) => (
                <option key={m} value={m}>
                  {m}
                  {m === log.model ? " (original)" : ""}
                </option>
              ))}
            </Select>
          </Field>
          <Field
            label="Key"
            htmlFor="replay-key"
            hint={key === log.key ? "The original's key." : `Instead of ${log.key || "the original's"}.`}
            error={keyRefusesModel ? `Key ${key} may not use model ${model}: the data plane will refuse it.` : undefined}
          >
            <Select id="replay-key" value={key} onChange={(e) => setKey(e.target.value)} disabled={run.phase === "running"}>
              {!keyNames.includes(log.key) ? (
                <option value={log.key} disabled={!originalKeyActive}>
                  {log.key} (original{originalKeyActive ? "" : "; not active"})
                </option>
              ) : null}
              {keyNames.map((k) => (
                <option key={k} value={k}>
                  {k}
                  {k === log.key ? " (original)" : ""}
                </option>
              ))}
            </Select>
          </Field>
        </div>
        {models.error ? <ErrorAlert message={`Models: ${models.error}`} onRetry={models.reload} /> : null}
        {keys.error ? <ErrorAlert message={`Keys: ${keys.error}`} onRetry={keys.reload} /> : null}
        {!originalKeyActive ? <p className="text-sm text-amber-800">The original key {log.key} is revoked, expired or broken: choose another.</p> : null}

        <RunOutput run={run} />

        {newId ? (
          <p className="text-sm text-muted-foreground">
            New request{" "}
            <Link to={`/logs/${encodeURIComponent(newId)}`} onClick={onClose} className="font-mono text-xs text-foreground hover:underline" data-testid="replay-log-link">
              {newId}
            </Link>
            {newLog.log ? (
              <Link to={`/logs/${encodeURIComponent(newId)}`} onClick={onClose} className="ml-3 inline-flex items-center gap-1 text-foreground hover:underline">
                Open its log <ExternalLink className="size-3.5" aria-hidden />
              </Link>
            ) : null}
          </p>
        ) : null}
        {newLog.waiting ? (
          <p className="flex items-center gap-2 text-sm text-muted-foreground" data-testid="waiting-for-log">
            <Spinner className="size-3.5" label="Waiting for the log" /> Waiting for the new request's log…
          </p>
        ) : null}
        {newLog.error ? <ErrorAlert message={newLog.error} /> : null}
        {newLog.log ? <SideBySide original={log} replay={newLog.log} /> : null}
      </div>
    </Dialog>
  );
}
