// The text of an answer as it arrives, for the playground and replay: an
// SSE body is read event by event as its bytes come in (OpenAI chat and
// Responses, Anthropic Messages, Gemini with alt=sse), with the answer's
// text and its thinking kept apart; any other body (a JSON answer, an
// error) is read once it is whole. Pure: no DOM, no React.

import { type Protocol, parseResponse } from "./conversation";
import { type SseEvent, parseSseEvents } from "./sse";

export interface AnswerView {
  /** The answer's text so far. */
  text: string;
  /** Thinking (reasoning) text so far, apart from the answer. */
  thinking: string;
  /** The stream ended as its protocol ends one (or a whole JSON answer was read). */
  done: boolean;
  /** The stop reason, when the answer gave one. */
  stopReason: string;
  /** An error the answer carried: an error event, or an error body. */
  error: string;
  /** SSE events read. */
  events: number;
}

export const EMPTY_ANSWER: AnswerView = { text: "", thinking: "", done: false, stopReason: "", error: "", events: 0 };

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj | undefined =>
  v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Obj) : undefined;
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const str = (v: unknown): string => (typeof v === "string" ? v : "");

/** The message of an error object in any of the protocols' shapes. */
function errorText(v: unknown): string {
  if (typeof v === "string") return v;
  const o = obj(v);
  if (!o) return "";
  const message = str(o.message);
  const kind = str(o.type) || str(o.status) || (typeof o.code === "string" ? o.code : "");
  if (message && kind && !message.startsWith(kind)) return `${kind}: ${message}`;
  return message || kind || JSON.stringify(o);
}

/**
 * The error a non-2xx answer carries, in its protocol's error format:
 * OpenAI `{"error": {"message", "type"}}`, Anthropic `{"type": "error",
 * "error": {"type", "message"}}`, Gemini `{"error": {"code", "message",
 * "status"}}` (or a list of those); "" when the body is not one.
 */
export function protocolError(body: string): string {
  const t = body.trim();
  if (!t) return "";
  let v: unknown;
  try {
    v = JSON.parse(t);
  } catch {
    return "";
  }
  if (Array.isArray(v)) v = v[0];
  const o = obj(v);
  if (!o) return "";
  if (o.error !== undefined && o.error !== null) return errorText(o.error);
  if (o.type === "error") return errorText(o);
  return "";
}

/** Applies one SSE event of `protocol` to the view. */
export function applyEvent(view: AnswerView, protocol: Protocol, e: SseEvent): AnswerView {
  const v = { ...view, events: view.events + 1 };
  if (e.data === "[DONE]") return { ...v, done: true };
  const j = obj(e.json);
  if (!j) return v;
  const type = str(j.type) || e.event;
  if (type === "error" || (j.error !== undefined && j.error !== null && protocol !== "openai-responses")) {
    return { ...v, error: v.error || errorText(j.error ?? j) };
  }
  switch (protocol) {
    case "openai-chat": {
      for (const c of arr(j.choices)) {
        const choice = obj(c);
        if (!choice || (typeof choice.index === "number" && choice.index !== 0)) continue;
        const d = obj(choice.delta) ?? {};
        v.thinking += str(d.reasoning_content) || str(d.reasoning);
        v.text += str(d.content) || str(d.refusal);
        if (str(choice.finish_reason)) v.stopReason = str(choice.finish_reason);
      }
      return v;
    }
    case "openai-responses": {
      switch (type) {
        case "response.output_text.delta":
        case "response.refusal.delta":
          v.text += str(j.delta);
          break;
        case "response.reasoning_summary_text.delta":
        case "response.reasoning_text.delta":
          v.thinking += str(j.delta);
          break;
        case "response.completed":
          v.done = true;
          v.stopReason = str(obj(j.response)?.status) || "completed";
          break;
        case "response.incomplete": {
          const r = obj(j.response);
          v.done = true;
          v.stopReason = str(obj(r?.incomplete_details)?.reason) || "incomplete";
          break;
        }
        case "response.failed":
          v.done = true;
          v.error = v.error || errorText(obj(j.response)?.error) || "the response failed";
          break;
        default:
          break;
      }
      return v;
    }
    case "anthropic": {
      switch (type) {
        case "content_block_delta": {
          const d = obj(j.delta);
          if (d?.type === "text_delta") v.text += str(d.text);
          else if (d?.type === "thinking_delta") v.thinking += str(d.thinking);
          break;
        }
        case "message_delta":
          v.stopReason = str(obj(j.delta)?.stop_reason) || v.stopReason;
          break;
        case "message_stop":
          v.done = true;
          break;
        default:
          break;
      }
      return v;
    }
    case "gemini": {
      const cand = obj(arr(j.candidates)[0]);
      if (!cand) return v;
      for (const p of arr(obj(cand.content)?.parts)) {
        const part = obj(p);
        if (!part || typeof part.text !== "string") continue;
        if (part.thought === true) v.thinking += part.text;
        else v.text += part.text;
      }
      const finish = str(cand.finishReason) || str(cand.finish_reason);
      if (finish) {
        v.stopReason = finish;
        v.done = true;
      }
      return v;
    }
  }
}

/** The view of a whole non-SSE body (a JSON answer or an error). */
export function readWholeBody(protocol: Protocol, body: string): AnswerView {
  const error = protocolError(body);
  const res = (() => {
    try {
      return parseResponse(protocol, body, false);
    } catch {
      return undefined;
    }
  })();
  let text = "";
  let thinking = "";
  for (const m of res?.messages ?? []) {
    for (const p of m.parts) {
      if (p.kind === "text") text += p.text;
      else if (p.kind === "thinking" && !p.redacted) thinking += p.text;
    }
  }
  return { text, thinking, done: !!res && !res.partial, stopReason: res?.stopReason ?? "", error: error || res?.error || "", events: 0 };
}

/**
 * Reads an answer's body as its pieces arrive. SSE bodies are parsed event
 * by event (an event is complete at its blank line); others are kept and
 * read by finish().
 */
export class AnswerReader {
  private pending = "";
  private body = "";
  private view: AnswerView = EMPTY_ANSWER;

  constructor(
    readonly protocol: Protocol,
    readonly sse: boolean,
  ) {}

  /** Adds text from the body; returns the view so far. */
  push(text: string): AnswerView {
    this.body += text;
    if (!this.sse) return this.view;
    // A "\r" at the end may be the first half of "\r\n": keep it for later.
    let s = this.pending + text;
    let held = "";
    if (s.endsWith("\r")) {
      held = "\r";
      s = s.slice(0, -1);
    }
    s = s.replace(/\r\n?/g, "\n");
    const cut = s.lastIndexOf("\n\n");
    if (cut < 0) {
      this.pending = s + held;
      return this.view;
    }
    const complete = s.slice(0, cut);
    this.pending = s.slice(cut + 2) + held;
    for (const e of parseSseEvents(complete)) this.view = applyEvent(this.view, this.protocol, e);
    return this.view;
  }

  /** The body has ended: reads what is left; returns the final view. */
  finish(): AnswerView {
    if (!this.sse) {
      this.view = readWholeBody(this.protocol, this.body);
      return this.view;
    }
    const rest = this.pending.replace(/\r\n?/g, "\n");
    this.pending = "";
    for (const e of parseSseEvents(rest)) this.view = applyEvent(this.view, this.protocol, e);
    if (this.view.events === 0 && this.body.trim()) {
      // An SSE content type with a JSON body (an error answered early).
      const whole = readWholeBody(this.protocol, this.body);
      if (whole.text || whole.error) this.view = whole;
    }
    return this.view;
  }

  get current(): AnswerView {
    return this.view;
  }

  get raw(): string {
    return this.body;
  }
}
