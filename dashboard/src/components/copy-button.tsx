import { Check, Copy } from "lucide-react";
import { useEffect, useState } from "react";
import { copyText } from "@/lib/clipboard";
import { Button, type ButtonProps } from "./ui/button";

/** Copies `text` and says so for a moment. */
export function CopyButton({
  text,
  label = "Copy",
  copiedLabel = "Copied",
  ...props
}: { text: string | (() => string); label?: string; copiedLabel?: string } & Omit<ButtonProps, "onClick">) {
  const [state, setState] = useState<"" | "ok" | "failed">("");
  useEffect(() => {
    if (!state) return;
    const t = setTimeout(() => setState(""), 2000);
    return () => clearTimeout(t);
  }, [state]);
  return (
    <Button
      variant="outline"
      size="sm"
      {...props}
      onClick={async () => setState((await copyText(typeof text === "function" ? text() : text)) ? "ok" : "failed")}
    >
      {state === "ok" ? <Check /> : <Copy />}
      <span aria-live="polite">{state === "ok" ? copiedLabel : state === "failed" ? "Copy failed" : label}</span>
    </Button>
  );
}
