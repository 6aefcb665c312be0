// The model test (#17): sends a tiny request to each target of a model
// through the control plane (TestModel) and shows each target's status,
// latency, error and the start of its answer. No data plane is involved,
// so a test never ejects or restores a target there.

import { useCallback } from "react";
import { CallDialog } from "@/components/call-dialog";
import { Badge } from "@/components/ui/badge";
import { Table, TableBody, TableCell, TableHead, TableHeader, TableRow } from "@/components/ui/table";
import type { TestModelResponse } from "@/gen/llmgw/v1/admin_pb";
import { api } from "@/lib/api";

export function ModelTestDialog({ name, onClose }: { name: string; onClose: () => void }) {
  const call = useCallback(() => api().testModel({ name }), [name]);
  return (
    <CallDialog
      title={`Test model ${name}`}
      description="A tiny request to each target, one after another, from the control plane."
      className="max-w-4xl"
      call={call}
      busy="Testing each target…"
      again="Run again"
      onClose={onClose}
    >
      {(result: TestModelResponse) => {
        const failed = result.targets.filter((t) => !t.ok).length;
        return (
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
        );
      }}
    </CallDialog>
  );
}
