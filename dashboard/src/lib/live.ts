// The requests in flight across all data planes (WatchInFlight), kept
// current in the page: the stream's events applied to a map by id; when the
// stream ends it is opened again with a backoff; where streaming cannot
// work (no streaming fetch, or a stream that fails before its first event
// again and again) ListInFlight is polled instead.

import { useEffect, useState } from "react";
import type { InFlightEvent } from "@/gen/llmgw/v1/admin_pb";
import type { InFlightRequest } from "@/gen/llmgw/v1/live_pb";
import { api, errorMessage } from "./api";

export type InFlightMap = ReadonlyMap<string, InFlightRequest>;

type Event = Pick<InFlightEvent, "full" | "upserts" | "ended">;

/** The map after one event: a full event replaces everything. */
export function applyInFlight(prev: InFlightMap, ev: Event): InFlightMap {
  const next = new Map(ev.full ? [] : prev);
  for (const r of ev.upserts) next.set(r.id, r);
  for (const id of ev.ended) next.delete(id);
  return next;
}

/** The requests, oldest first (ties by id). */
export function sortInFlight(m: InFlightMap): InFlightRequest[] {
  return [...m.values()].sort((a, b) => Number(a.startedMs - b.startedMs) || a.id.localeCompare(b.id));
}

/** Reconnect delays: 1 s, 2 s, 4 s … at most 30 s. */
export function backoffMs(failures: number): number {
  return Math.min(30_000, 1000 * 2 ** Math.max(0, failures - 1));
}

/** An age in seconds/minutes/hours, from Unix ms. */
export function formatAge(startedMs: number | bigint, now: number): string {
  const s = Math.max(0, Math.floor((now - Number(startedMs)) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/** Failed stream attempts without an event before polling takes over. */
export const STREAM_TRIES = 3;
export const POLL_MS = 2000;

export interface InFlightState {
  requests: InFlightRequest[];
  /** Known after the first answer. */
  loaded: boolean;
  /** "stream": events arrive as they happen; "poll": ListInFlight every 2 s. */
  mode: "connecting" | "stream" | "reconnecting" | "poll";
  /** When reconnecting: the wait, ms. */
  retryInMs: number;
  error: string;
}

/** Whether this browser can read a response body as it arrives. */
export function canStream(): boolean {
  return typeof ReadableStream !== "undefined" && typeof Response !== "undefined" && "body" in Response.prototype;
}

/** The requests in flight, kept current while the component is mounted. */
export function useInFlight(): InFlightState {
  const [map, setMap] = useState<InFlightMap>(new Map());
  const [state, setState] = useState<Omit<InFlightState, "requests">>({ loaded: false, mode: "connecting", retryInMs: 0, error: "" });
  useEffect(() => {
    const ctl = new AbortController();
    const sleep = (ms: number) =>
      new Promise<void>((res) => {
        const t = setTimeout(res, ms);
        ctl.signal.addEventListener("abort", () => {
          clearTimeout(t);
          res();
        });
      });

    const poll = async () => {
      while (!ctl.signal.aborted) {
        try {
          const r = await api().listInFlight({}, { signal: ctl.signal });
          if (ctl.signal.aborted) return;
          setMap(applyInFlight(new Map(), { full: true, upserts: r.requests, ended: [] }));
          setState({ loaded: true, mode: "poll", retryInMs: 0, error: "" });
        } catch (e) {
          if (ctl.signal.aborted) return;
          setState((s) => ({ ...s, mode: "poll", error: errorMessage(e) }));
        }
        await sleep(POLL_MS);
      }
    };

    const stream = async () => {
      let failures = 0;
      let silentFailures = 0;
      while (!ctl.signal.aborted) {
        let got = false;
        let error = "";
        try {
          for await (const ev of api().watchInFlight({}, { signal: ctl.signal })) {
            got = true;
            failures = 0;
            silentFailures = 0;
            setMap((m) => applyInFlight(m, ev));
            setState({ loaded: true, mode: "stream", retryInMs: 0, error: "" });
          }
        } catch (e) {
          error = errorMessage(e);
        }
        if (ctl.signal.aborted) return;
        failures += 1;
        if (!got) silentFailures += 1;
        if (silentFailures >= STREAM_TRIES) {
          // Streaming does not get through here: poll instead.
          return poll();
        }
        const wait = backoffMs(failures);
        setState((s) => ({ ...s, mode: "reconnecting", retryInMs: wait, error }));
        await sleep(wait);
      }
    };

    void (canStream() ? stream() : poll());
    return () => ctl.abort();
  }, []);

  return { requests: sortInFlight(map), ...state };
}
