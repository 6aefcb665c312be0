// The model test (#17): sends a tiny request to each target of a model
// through the control plane (TestModel) and shows each target's status,
// latency, error and the start of its answer. No data plane is involved,
// so a test never ejects or restores a target there.

import { useCallback, useEffect, useState } from "react";
import { ErrorAlert, Spinner } from "@/components/states";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Dialog } from "@/components/ui/dialog";
import { Table, TableBody, TableCell, TableHead, TableHeader, TableRow } from "@/components/ui/table";
import type { TestModelResponse } from "@/gen/llmgw/v1/admin_pb";
import { api, errorMessage } from "@/lib/api";

export function ModelTestDialog({ name, onClose }: { name: string; onClose: () => void }) {
  const [result, setResult] = useState<TestModelResponse | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [running, setRunning] = useState(false);

  const run = useCallback(async () => {
    setRunning(true);
    setError(null);
    setResult(null);
    try {
      setResult(await api().testModel({ name }));
    } catch (e) {
      setError(errorMessage(e));
    } finally {
      setRunning(false);
    }
  }, [name]);

  useEffect(() => {
    void run();
  }, [run]);

  const failed = result ? result.targets.filter((t) => !t.ok).length : 0;
  return (
    <Dialog
      open
      onClose={onClose}
      title={`Test model ${name}`}
      description="A tiny request to each target, one after another, from the control plane."
      className="max-w-4xl"
      footer={
        <>
          <Button variant="outline" onClick={() => void run()} disabled={running}>
            Run again
          </Button>
          <Button onClick={onClose}>Done</Button>
        </>
      }
    >
      {running ? (
        <div className="flex items-center gap-2 text-sm text-muted-foreground">
          <Spinner /> Testing each target…
        </div>
      ) : null}
      {error ? <ErrorAlert message={error} onRetry={() => void run()} /> : null}
      {result ? (
        <div data-testid="model-test-result" className="grid gap-3">
          <p className="text-sm" data-testid="model-test-summary">
            {failed === 0
              ? `Every target answered (${result.targets.length}).`
              : `${failed} of ${result.targets.length} targets failed.`}
          </p>
          <Table>
            <TableHeader>
              <TableRow className="hover:bg-transparent">
                <TableHead>Target</TableHead>
                <TableHead>Status</TableHead>
                <TableHead>Latency</TableHead>
                <TableHead>Result</TableHead>
              </TableRow>
            </TableHeader>
            <TableBody>
              {result.targets.map((t, i) => (
                <TableRow key={i} data-testid="model-test-target">
                  <TableCell className="whitespace-nowrap font-medium">
                    {t.provider}:{t.upstreamModel}
                    <div className="text-xs font-normal text-muted-foreground">{t.protocol}</div>
                  </TableCell>
                  <TableCell>
                    <Badge variant={t.ok ? "success" : "destructive"}>{t.status ? t.status : "no answer"}</Badge>
                  </TableCell>
                  <TableCell className="whitespace-nowrap tabular-nums text-xs">{String(t.latencyMs)} ms</TableCell>
                  <TableCell className="whitespace-normal break-words text-xs">
                    {t.ok ? (
                      <span>
                        ok <span className="text-muted-foreground">“{t.excerpt}”</span>
                      </span>
                    ) : (
                      <span className="text-red-700">{t.error}</span>
                    )}
                  </TableCell>
                </TableRow>
              ))}
            </TableBody>
          </Table>
        </div>
      ) : null}
    </Dialog>
  );
}
