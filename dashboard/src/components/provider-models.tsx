// What a provider's upstream serves (#16, `llmgw provider models`): the
// control plane lists the upstream's models with the provider's URL, key
// and headers (ListUpstreamModels) and the dialog shows them, each id as a
// target's upstream model would name it.

import { useCallback } from "react";
import { CallDialog } from "@/components/call-dialog";
import { Table, TableBody, TableCell, TableHead, TableHeader, TableRow } from "@/components/ui/table";
import type { ListUpstreamModelsResponse } from "@/gen/llmgw/v1/admin_pb";
import { api } from "@/lib/api";
import { formatDateTime } from "@/lib/format";

export function ProviderModelsDialog({ name, onClose }: { name: string; onClose: () => void }) {
  const call = useCallback(() => api().listUpstreamModels({ provider: name }), [name]);
  return (
    <CallDialog
      title={`Models of ${name}`}
      description="What the provider's upstream lists, asked by the control plane with the provider's URL, key and headers."
      className="max-w-3xl"
      call={call}
      busy="Asking the upstream…"
      again="Refresh"
      onClose={onClose}
    >
      {(result: ListUpstreamModelsResponse) => (
        <div className="grid gap-2" data-testid="provider-models">
          <p className="text-sm text-muted-foreground" data-testid="provider-models-count">
            {result.models.length === 1 ? "1 model" : `${result.models.length} models`}
            {result.truncated ? " (the upstream has more pages than are followed)" : ""}
          </p>
          {result.models.length > 0 ? (
            <div className="max-h-96 overflow-auto rounded-lg border">
              <Table>
                <TableHeader>
                  <TableRow className="hover:bg-transparent">
                    <TableHead>Upstream model</TableHead>
                    <TableHead>Name</TableHead>
                    <TableHead>Created</TableHead>
                  </TableRow>
                </TableHeader>
                <TableBody>
                  {result.models.map((m) => (
                    <TableRow key={m.id} data-testid="provider-model">
                      <TableCell className="font-mono text-xs select-all">{m.id}</TableCell>
                      <TableCell className="text-xs">{m.displayName}</TableCell>
                      <TableCell className="whitespace-nowrap text-xs text-muted-foreground">
                        {m.createdUnix === undefined ? "" : formatDateTime(Number(m.createdUnix) * 1000)}
                      </TableCell>
                    </TableRow>
                  ))}
                </TableBody>
              </Table>
            </div>
          ) : null}
        </div>
      )}
    </CallDialog>
  );
}
