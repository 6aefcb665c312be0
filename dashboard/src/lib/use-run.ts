// React state for a run (ReplayLog or Playground): starts the stream, reads
// its chunks into a RunView, stops it on demand (the AbortSignal ends the
// gRPC-web call, and the control plane drops the request to the data
// plane), and then waits for the new request's log.

import { useCallback, useEffect, useRef, useState } from "react";
import type { RunChunk } from "@/gen/llmgw/v1/admin_pb";
import type { RequestLog } from "@/gen/llmgw/v1/logs_pb";
import { api, errorMessage } from "./api";
import type { Protocol } from "./conversation";
import { pollLog } from "./poll-log";
import { EMPTY_RUN, RunReader, type RunView } from "./run";

export type RunPhase = "idle" | "running" | "done" | "stopped" | "failed";

export interface RunState {
  phase: RunPhase;
  view: RunView;
  /** The RPC's error in words (the call failed or broke), "" when none. */
  rpcError: string;
}

export interface RunControl extends RunState {
  start: (protocol: Protocol, call: (signal: AbortSignal) => AsyncIterable<RunChunk>) => void;
  stop: () => void;
  reset: () => void;
}

export function useRun(): RunControl {
  const [state, setState] = useState<RunState>({ phase: "idle", view: EMPTY_RUN, rpcError: "" });
  const ctl = useRef<AbortController | undefined>(undefined);

  useEffect(() => () => ctl.current?.abort(), []);

  const start = useCallback((protocol: Protocol, call: (signal: AbortSignal) => AsyncIterable<RunChunk>) => {
    ctl.current?.abort();
    const c = new AbortController();
    ctl.current = c;
    const reader = new RunReader(protocol);
    setState({ phase: "running", view: EMPTY_RUN, rpcError: "" });
    void (async () => {
      // A newer run (or a reset) replaced this one: it no longer sets state.
      const current = () => ctl.current === c;
      try {
        for await (const chunk of call(c.signal)) {
          if (c.signal.aborted) break;
          const view = reader.apply(chunk);
          setState((s) => ({ ...s, view }));
        }
        if (!current()) return;
        const view = reader.close();
        setState(c.signal.aborted ? { phase: "stopped", view, rpcError: "" } : { phase: "done", view, rpcError: "" });
      } catch (e) {
        if (!current()) return;
        const view = reader.close();
        if (c.signal.aborted) setState({ phase: "stopped", view, rpcError: "" });
        else setState({ phase: "failed", view, rpcError: errorMessage(e) });
      }
    })();
  }, []);

  const stop = useCallback(() => {
    const c = ctl.current;
    if (!c) return;
    c.abort();
    setState((s) => (s.phase === "running" ? { ...s, phase: "stopped" } : s));
  }, []);

  const reset = useCallback(() => {
    ctl.current?.abort();
    ctl.current = undefined;
    setState({ phase: "idle", view: EMPTY_RUN, rpcError: "" });
  }, []);

  return { ...state, start, stop, reset };
}

export interface LogWait {
  log?: RequestLog;
  error: string;
  waiting: boolean;
}

/** The log of request `id` once it has arrived (polled); nothing while `id` is empty or `ready` is false. */
export function useLogWhenReady(id: string, ready: boolean): LogWait {
  const [state, setState] = useState<LogWait>({ error: "", waiting: false });
  useEffect(() => {
    if (!id || !ready) {
      setState({ error: "", waiting: false });
      return;
    }
    const c = new AbortController();
    setState({ error: "", waiting: true });
    pollLog((x, signal) => api().getLog({ id: x }, { signal }), id, { signal: c.signal }).then(
      (log) => {
        if (!c.signal.aborted) setState({ log, error: "", waiting: false });
      },
      (e: unknown) => {
        if (c.signal.aborted) return;
        setState({ error: e instanceof Error && e.name === "LogNotArrived" ? e.message : errorMessage(e), waiting: false });
      },
    );
    return () => c.abort();
  }, [id, ready]);
  return state;
}
