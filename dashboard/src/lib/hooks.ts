import { type DependencyList, useCallback, useEffect, useRef, useState } from "react";
import { errorMessage } from "./api";

export interface QueryState<T> {
  data: T | undefined;
  /** The API's message in plain words, "" when the last load succeeded. */
  error: string;
  /** True while a load is in flight (also on reloads, with the old data kept). */
  loading: boolean;
  reload: () => void;
}

/** Loads `fn` when `deps` change, and again on reload(); stale answers are dropped. */
export function useQuery<T>(fn: (signal: AbortSignal) => Promise<T>, deps: DependencyList): QueryState<T> {
  const [data, setData] = useState<T>();
  const [error, setError] = useState("");
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  const fnRef = useRef(fn);
  fnRef.current = fn;

  useEffect(() => {
    const ctl = new AbortController();
    setLoading(true);
    fnRef.current(ctl.signal).then(
      (d) => {
        if (ctl.signal.aborted) return;
        setData(d);
        setError("");
        setLoading(false);
      },
      (e: unknown) => {
        if (ctl.signal.aborted) return;
        setError(errorMessage(e));
        setLoading(false);
      },
    );
    return () => ctl.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, tick]);

  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { data, error, loading, reload };
}

/** `value`, updated only after it has stayed the same for `ms`. */
export function useDebounced<T>(value: T, ms: number): T {
  const [v, setV] = useState(value);
  useEffect(() => {
    const t = setTimeout(() => setV(value), ms);
    return () => clearTimeout(t);
  }, [value, ms]);
  return v;
}

/** Calls `fn` every `ms` while `enabled` and the tab is visible. */
export function useInterval(fn: () => void, ms: number, enabled = true): void {
  const ref = useRef(fn);
  ref.current = fn;
  useEffect(() => {
    if (!enabled) return;
    const t = setInterval(() => {
      if (document.visibilityState === "visible") ref.current();
    }, ms);
    return () => clearInterval(t);
  }, [ms, enabled]);
}

/** Sets document.title. */
export function useTitle(title: string): void {
  useEffect(() => {
    document.title = title ? `${title} · llmgw` : "llmgw";
  }, [title]);
}
