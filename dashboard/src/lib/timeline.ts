// The attempts of a logged request on one time axis. Records that carry
// each attempt's start (start_offset_ms, milliseconds from the request's
// start to the attempt's send) place it there; older records only have
// each attempt's latency, so their attempts are laid end to end from the
// request's start: an approximation (the waits between attempts and the
// work before the first are not known), which the page says.

type Num = number | bigint;

export interface TimelineAttempt {
  latencyMs: Num;
  status: number;
  error: string;
  /** Absent or 0 on records stored before the field. */
  startOffsetMs?: Num;
}

export interface Bar {
  startMs: number;
  endMs: number;
  ok: boolean;
  /** Refused before it was sent (a provider limit): no time on the axis. */
  skipped: boolean;
}

export interface Timeline {
  bars: Bar[];
  /** The axis length: the request's latency, or the last bar's end. */
  spanMs: number;
  /** Starts were not recorded: laid end to end. */
  approximate: boolean;
}

export function attemptOk(a: Pick<TimelineAttempt, "status" | "error">): boolean {
  return a.status >= 200 && a.status < 400 && !a.error;
}

export function layoutAttempts(attempts: TimelineAttempt[], totalMs: Num): Timeline {
  const approximate = attempts.length > 0 && attempts.every((a) => !a.startOffsetMs || Number(a.startOffsetMs) === 0);
  let cursor = 0;
  const bars = attempts.map((a) => {
    const latency = Math.max(0, Number(a.latencyMs));
    const skipped = a.status === 0 && latency === 0 && /^limited by /.test(a.error);
    const start = approximate ? cursor : Math.max(0, Number(a.startOffsetMs ?? 0));
    const end = start + latency;
    cursor = end;
    return { startMs: start, endMs: end, ok: attemptOk(a), skipped };
  });
  const spanMs = Math.max(Number(totalMs), ...bars.map((b) => b.endMs), 1);
  return { bars, spanMs, approximate };
}

/** Round axis ticks (about `count`) for a span in ms. */
export function ticks(spanMs: number, count = 4): number[] {
  const raw = spanMs / count;
  const mag = 10 ** Math.floor(Math.log10(Math.max(raw, 1)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? mag * 10;
  const out: number[] = [];
  for (let t = 0; t <= spanMs + 1e-9; t += step) out.push(t);
  return out;
}
