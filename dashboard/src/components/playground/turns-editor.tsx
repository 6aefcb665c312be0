// The playground's conversation: user and assistant turns, each editable,
// removable, with its role; new turns alternate roles.

import { Plus, Trash2 } from "lucide-react";
import { Button } from "@/components/ui/button";
import { Textarea } from "@/components/ui/input";
import { Select } from "@/components/ui/select";
import type { Turn } from "@/lib/playground";

export function TurnsEditor({ turns, onChange, disabled }: { turns: Turn[]; onChange: (t: Turn[]) => void; disabled?: boolean }) {
  const set = (i: number, patch: Partial<Turn>) => onChange(turns.map((t, j) => (j === i ? { ...t, ...patch } : t)));
  const add = () => {
    const last = turns[turns.length - 1];
    onChange([...turns, { role: last?.role === "user" ? "assistant" : "user", text: "" }]);
  };
  return (
    <fieldset className="grid gap-3" disabled={disabled}>
      <legend className="mb-2 text-sm font-medium">Messages</legend>
      <ol className="grid gap-3" aria-label="Messages">
        {turns.map((t, i) => (
          <li key={i} className="grid gap-1.5 rounded-lg border bg-background p-2.5" data-testid="turn" data-role={t.role}>
            <div className="flex items-center gap-2">
              <Select
                aria-label={`Role of message ${i + 1}`}
                value={t.role}
                onChange={(e) => set(i, { role: e.target.value as Turn["role"] })}
                className="w-36"
              >
                <option value="user">User</option>
                <option value="assistant">Assistant</option>
              </Select>
              <Button variant="ghost" size="icon-sm" className="ml-auto" aria-label={`Remove message ${i + 1}`} onClick={() => onChange(turns.filter((_, j) => j !== i))}>
                <Trash2 />
              </Button>
            </div>
            <Textarea
              aria-label={`Message ${i + 1}`}
              value={t.text}
              onChange={(e) => set(i, { text: e.target.value })}
              className="min-h-16 font-sans text-sm"
              placeholder={t.role === "user" ? "What the user says" : "What the assistant said"}
            />
          </li>
        ))}
      </ol>
      <Button variant="outline" size="sm" className="w-fit" onClick={add}>
        <Plus /> Add message
      </Button>
    </fieldset>
  );
}
