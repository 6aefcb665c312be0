// A recorded response body that is a server-sent-events stream, shown as its
// events and as the text they assemble (OpenAI chat, completions and
// Responses streams; Anthropic message streams).

export interface SseEvent {
  /** The `event:` field, "" when absent. */
  event: string;
  /** The `data:` lines joined by "\n". */
  data: string;
  /** `data` parsed as JSON, when it is JSON. */
  json?: unknown;
}

export interface ParsedSse {
  events: SseEvent[];
  /** Generated text, in order. */
  text: string;
  /** The stream ended with `data: [DONE]` or an end event. */
  done: boolean;
  /** Error messages carried by error events. */
  errors: string[];
}

/** Whether a body looks like SSE, by its content type or its first field. */
export function isSse(body: string, contentType = ""): boolean {
  if (/text\/event-stream/i.test(contentType)) return true;
  const start = body.trimStart().slice(0, 16);
  return /^(data|event|id|retry):/.test(start);
}

/** Splits an SSE body into events (comments and empty events are skipped). */
export function parseSseEvents(body: string): SseEvent[] {
  const events: SseEvent[] = [];
  const blocks = body.replace(/\r\n?/g, "\n").split(/\n\n+/);
  for (const block of blocks) {
    let event = "";
    const data: string[] = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    if (!event && data.length === 0) continue;
    const joined = data.join("\n");
    const e: SseEvent = { event, data: joined };
    if (joined && joined !== "[DONE]") {
      try {
        e.json = JSON.parse(joined);
      } catch {
        // not JSON: keep the text
      }
    }
    events.push(e);
  }
  return events;
}

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj | undefined =>
  v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Obj) : undefined;
const str = (v: unknown): string => (typeof v === "string" ? v : "");

/** The text one event adds, in any of the known stream shapes. */
export function eventText(e: SseEvent): string {
  const j = obj(e.json);
  if (!j) return "";
  const type = str(j.type) || e.event;
  // Anthropic: content_block_delta with a text delta.
  if (type === "content_block_delta") {
    const d = obj(j.delta);
    return d && d.type === "text_delta" ? str(d.text) : "";
  }
  // OpenAI Responses: response.output_text.delta.
  if (type === "response.output_text.delta") return str(j.delta);
  // OpenAI chat completions and completions.
  if (Array.isArray(j.choices)) {
    let text = "";
    for (const c of j.choices) {
      const choice = obj(c);
      if (!choice || (typeof choice.index === "number" && choice.index !== 0)) continue;
      const delta = obj(choice.delta);
      text += delta ? str(delta.content) : str(choice.text);
    }
    return text;
  }
  return "";
}

function eventError(e: SseEvent): string {
  const j = obj(e.json);
  if (!j) return "";
  const err = obj(j.error);
  if (e.event === "error" || j.type === "error" || err) {
    return str(err?.message) || str(j.message) || e.data;
  }
  return "";
}

/** Events, assembled text, completion and errors of an SSE body. */
export function parseSse(body: string): ParsedSse {
  const events = parseSseEvents(body);
  let text = "";
  let done = false;
  const errors: string[] = [];
  for (const e of events) {
    text += eventText(e);
    if (e.data === "[DONE]" || e.event === "message_stop" || e.event === "response.completed") done = true;
    const j = obj(e.json);
    if (j && (j.type === "message_stop" || j.type === "response.completed")) done = true;
    const err = eventError(e);
    if (err) errors.push(err);
  }
  return { events, text, done, errors };
}

/** JSON pretty-printed with two spaces; other text as it is. */
export function prettyBody(body: string): { text: string; json: boolean } {
  const t = body.trim();
  if (t.startsWith("{") || t.startsWith("[")) {
    try {
      return { text: JSON.stringify(JSON.parse(t), null, 2), json: true };
    } catch {
      // truncated or not JSON
    }
  }
  return { text: body, json: false };
}
