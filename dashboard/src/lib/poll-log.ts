// Waits for a request's log: a data plane ships its records to the control
// plane a moment after the request ends, so GetLog answers NOT_FOUND for a
// while. Polls until the record is there, with a bound.

import { Code } from "@connectrpc/connect";
import type { RequestLog } from "@/gen/llmgw/v1/logs_pb";
import { isCode } from "./api";

export const POLL_LOG_TIMEOUT_MS = 30_000;
export const POLL_LOG_INTERVAL_MS = 400;

export interface PollOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
  intervalMs?: number;
  now?: () => number;
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

/** Rejected when the log has not arrived in time. */
export class LogNotArrived extends Error {
  constructor(
    readonly id: string,
    readonly waitedMs: number,
  ) {
    super(
      `The log of request ${id} has not arrived after ${Math.round(waitedMs / 1000)} s. ` +
        "The data plane may be shipping its logs late, or not at all: look for it on the Logs page later.",
    );
    this.name = "LogNotArrived";
  }
}

function defaultSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    });
  });
}

/**
 * GetLog(id) until it answers; NOT_FOUND is retried every `intervalMs` for
 * up to `timeoutMs`, any other error is thrown at once.
 */
export async function pollLog(get: (id: string, signal?: AbortSignal) => Promise<RequestLog>, id: string, opts: PollOptions = {}): Promise<RequestLog> {
  const now = opts.now ?? Date.now;
  const sleep = opts.sleep ?? defaultSleep;
  const timeout = opts.timeoutMs ?? POLL_LOG_TIMEOUT_MS;
  const interval = opts.intervalMs ?? POLL_LOG_INTERVAL_MS;
  const started = now();
  for (;;) {
    if (opts.signal?.aborted) throw new DOMException("Aborted", "AbortError");
    try {
      return await get(id, opts.signal);
    } catch (e) {
      if (!isCode(e, Code.NotFound)) throw e;
    }
    const waited = now() - started;
    if (waited >= timeout) throw new LogNotArrived(id, waited);
    await sleep(Math.min(interval, timeout - waited), opts.signal);
  }
}
