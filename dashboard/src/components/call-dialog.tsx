// A dialog that makes one admin call when it opens and shows its answer:
// a spinner while it runs, the error with a retry, a button to call again.
// The model test and a provider's upstream models use it.

import { type ReactNode, useCallback, useEffect, useState } from "react";
import { ErrorAlert, Spinner } from "@/components/states";
import { Button } from "@/components/ui/button";
import { Dialog } from "@/components/ui/dialog";
import { errorMessage } from "@/lib/api";

export function CallDialog<T>({
  title,
  description,
  className,
  call,
  busy,
  again,
  onClose,
  children,
}: {
  title: string;
  description: string;
  className?: string;
  /** The call; keep it stable (useCallback), it runs again when it changes. */
  call: () => Promise<T>;
  /** What the spinner says while the call runs. */
  busy: string;
  /** The label of the button that calls again. */
  again: string;
  onClose: () => void;
  children: (result: T) => ReactNode;
}) {
  const [result, setResult] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [running, setRunning] = useState(false);

  const run = useCallback(async () => {
    setRunning(true);
    setError(null);
    setResult(null);
    try {
      setResult(await call());
    } catch (e) {
      setError(errorMessage(e));
    } finally {
      setRunning(false);
    }
  }, [call]);

  useEffect(() => {
    void run();
  }, [run]);

  return (
    <Dialog
      open
      onClose={onClose}
      title={title}
      description={description}
      className={className}
      footer={
        <>
          <Button variant="outline" onClick={() => void run()} disabled={running}>
            {again}
          </Button>
          <Button onClick={onClose}>Done</Button>
        </>
      }
    >
      {running ? (
        <div className="flex items-center gap-2 text-sm text-muted-foreground">
          <Spinner /> {busy}
        </div>
      ) : null}
      {error ? <ErrorAlert message={error} onRetry={() => void run()} /> : null}
      {result !== null ? children(result) : null}
    </Dialog>
  );
}
