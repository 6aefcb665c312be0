// A request run through a data plane by the control plane (ReplayLog and
// Playground, #17), read from its RunChunk stream: the head (status, new
// request id, data plane, headers), the body's bytes as they arrive (read
// into the answer's text per protocol) and the end (TTFB, latency, and an
// error when the answer broke off). Pure: no DOM, no React.

import type { RunChunk, RunEnd, RunHead } from "@/gen/llmgw/v1/admin_pb";
import type { Protocol } from "./conversation";
import { AnswerReader, type AnswerView, EMPTY_ANSWER } from "./stream-text";

export interface RunView {
  head?: Pick<RunHead, "status" | "requestId" | "nodeId" | "headers" | "path" | "key">;
  end?: Pick<RunEnd, "ttfbMs" | "latencyMs" | "error">;
  /** The answer so far, read per protocol. */
  answer: AnswerView;
  /** The body as received (text). */
  raw: string;
  /** Whether the answer is an SSE stream (by its content type). */
  sse: boolean;
  bytes: number;
}

export const EMPTY_RUN: RunView = { answer: EMPTY_ANSWER, raw: "", sse: false, bytes: 0 };

/** A header's value, by name in any case. */
export function header(headers: Record<string, string> | undefined, name: string): string {
  const want = name.toLowerCase();
  for (const [k, v] of Object.entries(headers ?? {})) if (k.toLowerCase() === want) return v;
  return "";
}

/** The answer is OK: a 2xx status. */
export function runOk(v: RunView): boolean {
  return !!v.head && v.head.status >= 200 && v.head.status < 300;
}

/**
 * Reads a RunChunk stream into views; apply() returns the view after each
 * chunk (a new object each time, for React state).
 */
export class RunReader {
  private reader?: AnswerReader;
  private decoder = new TextDecoder();
  private view: RunView = EMPTY_RUN;

  constructor(readonly protocol: Protocol) {}

  apply(chunk: Pick<RunChunk, "part">): RunView {
    const p = chunk.part;
    switch (p.case) {
      case "head": {
        const sse = /text\/event-stream/i.test(header(p.value.headers, "content-type"));
        this.reader = new AnswerReader(this.protocol, sse);
        this.view = { ...this.view, head: p.value, sse };
        break;
      }
      case "data": {
        this.reader ??= new AnswerReader(this.protocol, false);
        const text = this.decoder.decode(p.value, { stream: true });
        const answer = this.reader.push(text);
        this.view = { ...this.view, answer, raw: this.reader.raw, bytes: this.view.bytes + p.value.byteLength };
        break;
      }
      case "end":
        this.view = { ...this.finishBody(), end: p.value };
        break;
      default:
        break;
    }
    return this.view;
  }

  /** The stream ended (or was stopped) without an end chunk: reads what arrived. */
  close(): RunView {
    if (!this.view.end) this.view = this.finishBody();
    return this.view;
  }

  private finishBody(): RunView {
    if (!this.reader) return this.view;
    const tail = this.decoder.decode();
    if (tail) this.reader.push(tail);
    return { ...this.view, answer: this.reader.finish(), raw: this.reader.raw };
  }

  get current(): RunView {
    return this.view;
  }
}

/** The x-llmgw-* headers of the head (the route the data plane took), request id first. */
export function routeHeaders(headers: Record<string, string> | undefined): [string, string][] {
  const rows = Object.entries(headers ?? {})
    .map(([k, v]): [string, string] => [k.toLowerCase(), v])
    .filter(([k]) => k.startsWith("x-llmgw-"));
  return rows.sort(([a], [b]) => (a === "x-llmgw-request-id" ? -1 : b === "x-llmgw-request-id" ? 1 : a.localeCompare(b)));
}

/** What went wrong with a finished run, in words; "" when nothing did. */
export function runProblem(v: RunView): string {
  const parts: string[] = [];
  if (v.head && !runOk(v)) {
    parts.push(`The data plane answered HTTP ${v.head.status}${v.answer.error ? `: ${v.answer.error}` : "."}`);
  } else if (v.answer.error) {
    parts.push(`The answer carried an error: ${v.answer.error}`);
  }
  if (v.end?.error) parts.push(`The answer broke off: ${v.end.error}`);
  return parts.join(" ");
}
