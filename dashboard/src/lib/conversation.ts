// The conversation of a logged request, readable: the system prompt, the
// messages by role, tool calls and results, thinking, and the answer, for
// every client protocol (OpenAI Chat Completions, OpenAI Responses,
// Anthropic Messages, Gemini). A streamed answer is logged as its SSE text
// (or Gemini's JSON array): its deltas are put back together. A body cut at
// the logging cap is repaired as far as it can be (the text up to the cut
// is kept) and the result says so; anything unexpected gives `undefined`,
// and the page shows the raw body instead. Pure: no DOM, no React.

import { parseSseEvents } from "./sse";

export type Part =
  | { kind: "text"; text: string }
  | { kind: "thinking"; text: string; redacted?: boolean }
  | { kind: "tool_call"; id: string; name: string; arguments: string }
  | { kind: "tool_result"; id: string; name: string; content: string; isError: boolean }
  | { kind: "media"; label: string }
  | { kind: "other"; label: string; text: string };

export interface Message {
  /** "system", "user", "assistant", "tool" (Gemini's "model" is "assistant"). */
  role: string;
  parts: Part[];
}

export interface Side {
  messages: Message[];
  /** The body was cut (logged truncated, or a stream without its end). */
  partial: boolean;
}

export interface RequestSide extends Side {
  /** The system prompt or instructions, one entry per block. */
  system: string[];
  /** The names of the tools the request offered. */
  tools: string[];
}

export interface ResponseSide extends Side {
  stopReason: string;
  /** An error the body carried (an error answer, an error event). */
  error: string;
}

export type Protocol = "openai-chat" | "openai-responses" | "anthropic" | "gemini";

export interface ConversationInput {
  protocol: string;
  path?: string;
  requestBody: string;
  requestBodyTruncated: boolean;
  responseBody: string;
  responseBodyTruncated: boolean;
}

export interface Conversation {
  protocol: Protocol;
  /** Undefined when the body is absent or could not be read. */
  request?: RequestSide;
  response?: ResponseSide;
}

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj | undefined =>
  v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Obj) : undefined;
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const str = (v: unknown): string => (typeof v === "string" ? v : "");
/** The first of `keys` that is set (Gemini takes camelCase and snake_case). */
const pick = (o: Obj, ...keys: string[]): unknown => {
  for (const k of keys) if (o[k] !== undefined) return o[k];
  return undefined;
};
const json = (v: unknown): string => {
  if (typeof v === "string") return v;
  try {
    return JSON.stringify(v) ?? "";
  } catch {
    return String(v);
  }
};

/** The client protocol of a record, when the conversation view knows it. */
export function conversationProtocol(protocol: string, path = ""): Protocol | undefined {
  switch (protocol) {
    case "openai-chat":
    case "openai-responses":
    case "anthropic":
    case "gemini":
      return protocol;
    case "openai":
      // Records stored before the protocol names said "openai" for every
      // OpenAI endpoint.
      if (/\/chat\/completions$/.test(path)) return "openai-chat";
      if (/\/responses$/.test(path)) return "openai-responses";
      return undefined;
    default:
      return undefined;
  }
}

// ---------- lenient JSON ----------

/**
 * JSON.parse, and for a body cut short, the longest prefix that closes into
 * valid JSON: an unfinished string value keeps its text, an unfinished key
 * or number is dropped, open objects and arrays are closed.
 */
export function parseJsonLenient(text: string): { value: unknown; repaired: boolean } | undefined {
  try {
    return { value: JSON.parse(text), repaired: false };
  } catch {
    // repaired below, if it was cut
  }
  const stack: string[] = [];
  let inStr = false;
  let esc = false;
  let strIsKey = false;
  let expectKey = false;
  let safe = -1;
  let safeStack: string[] = [];
  const mark = (pos: number) => {
    safe = pos;
    safeStack = [...stack];
  };
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inStr) {
      if (esc) esc = false;
      else if (c === "\\") esc = true;
      else if (c === '"') {
        inStr = false;
        if (!strIsKey) mark(i + 1);
      }
      continue;
    }
    switch (c) {
      case '"':
        inStr = true;
        strIsKey = stack[stack.length - 1] === "{" && expectKey;
        expectKey = false;
        break;
      case "{":
        stack.push("{");
        expectKey = true;
        mark(i + 1);
        break;
      case "[":
        stack.push("[");
        mark(i + 1);
        break;
      case "}":
      case "]":
        stack.pop();
        mark(i + 1);
        break;
      case ",":
        mark(i);
        expectKey = stack[stack.length - 1] === "{";
        break;
      default:
        break;
    }
  }
  const closers = (s: string[]) =>
    s
      .slice()
      .reverse()
      .map((b) => (b === "{" ? "}" : "]"))
      .join("");
  const attempts: string[] = [];
  if (inStr && !strIsKey) {
    // Keep the text of the cut string, without a half escape.
    const body = text.replace(/\\u[0-9a-fA-F]{0,3}$/, "").replace(/\\$/, "");
    attempts.push(`${body}"${closers(stack)}`);
  }
  if (safe >= 0) attempts.push(text.slice(0, safe) + closers(safeStack));
  for (const a of attempts) {
    try {
      return { value: JSON.parse(a), repaired: true };
    } catch {
      // try the next
    }
  }
  return undefined;
}

function media(kind: string, mime: string, detail: string): Part {
  const what = mime || kind;
  return { kind: "media", label: detail ? `${what}: ${detail}` : what };
}

/** A data: URL as its type and size, any other URL as it is (shortened). */
function urlLabel(url: string): string {
  const m = /^data:([^;,]*)[^,]*,(.*)$/s.exec(url);
  if (m) return `${m[1] || "data"}, ${sizeOf(m[2] ?? "")} inline`;
  return url.length > 120 ? `${url.slice(0, 117)}…` : url;
}

function sizeOf(base64: string): string {
  const bytes = Math.floor((base64.length * 3) / 4);
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

function textOf(v: unknown): string {
  if (typeof v === "string") return v;
  // Content as a list of text parts.
  return arr(v)
    .map((p) => {
      const o = obj(p);
      return o ? str(o.text) : str(p);
    })
    .filter(Boolean)
    .join("\n");
}

/** Adjacent parts of one kind merge (streams arrive in many small pieces). */
function pushPart(parts: Part[], p: Part): void {
  const last = parts[parts.length - 1];
  if (last && last.kind === "text" && p.kind === "text") last.text += p.text;
  else if (last && last.kind === "thinking" && p.kind === "thinking" && !last.redacted && !p.redacted) last.text += p.text;
  else parts.push(p);
}

// ---------- OpenAI Chat Completions ----------

function chatContent(content: unknown): Part[] {
  if (typeof content === "string") return content ? [{ kind: "text", text: content }] : [];
  const parts: Part[] = [];
  for (const p of arr(content)) {
    const o = obj(p);
    if (!o) continue;
    switch (str(o.type)) {
      case "text":
        pushPart(parts, { kind: "text", text: str(o.text) });
        break;
      case "refusal":
        parts.push({ kind: "other", label: "refusal", text: str(o.refusal) });
        break;
      case "image_url":
        parts.push(media("image", "", urlLabel(str(obj(o.image_url)?.url) || str(o.image_url))));
        break;
      case "input_audio":
        parts.push(media("audio", str(obj(o.input_audio)?.format), ""));
        break;
      case "file":
        parts.push(media("file", "", str(obj(o.file)?.filename)));
        break;
      default:
        parts.push({ kind: "other", label: str(o.type) || "part", text: json(o) });
    }
  }
  return parts;
}

function chatMessage(m: Obj): Message {
  const role = str(m.role) || "user";
  const parts: Part[] = [];
  const reasoning = str(m.reasoning_content) || str(m.reasoning);
  if (reasoning) parts.push({ kind: "thinking", text: reasoning });
  if (role === "tool") {
    return {
      role,
      parts: [{ kind: "tool_result", id: str(m.tool_call_id), name: str(m.name), content: textOf(m.content), isError: false }],
    };
  }
  parts.push(...chatContent(m.content));
  if (str(m.refusal)) parts.push({ kind: "other", label: "refusal", text: str(m.refusal) });
  for (const c of arr(m.tool_calls)) {
    const o = obj(c);
    const f = obj(o?.function);
    if (o) parts.push({ kind: "tool_call", id: str(o.id), name: str(f?.name) || str(obj(o.custom)?.name), arguments: str(f?.arguments) || str(obj(o.custom)?.input) });
  }
  const fc = obj(m.function_call);
  if (fc) parts.push({ kind: "tool_call", id: "", name: str(fc.name), arguments: str(fc.arguments) });
  return { role, parts };
}

function chatRequest(b: Obj): Omit<RequestSide, "partial"> {
  const system: string[] = [];
  const messages: Message[] = [];
  for (const m of arr(b.messages)) {
    const o = obj(m);
    if (!o) continue;
    const role = str(o.role);
    if ((role === "system" || role === "developer") && messages.length === 0) {
      system.push(textOf(o.content));
      continue;
    }
    messages.push(chatMessage(o));
  }
  const tools = arr(b.tools).map((t) => str(obj(obj(t)?.function)?.name) || str(obj(t)?.name) || str(obj(t)?.type));
  return { system, messages, tools };
}

function chatResponse(b: Obj): Omit<ResponseSide, "partial"> {
  const choice = obj(arr(b.choices)[0]);
  const m = obj(choice?.message);
  return {
    messages: m ? [chatMessage({ role: "assistant", ...m })] : [],
    stopReason: str(choice?.finish_reason),
    error: errorOf(b),
  };
}

function chatStream(events: unknown[]): Omit<ResponseSide, "partial"> & { done: boolean } {
  const parts: Part[] = [];
  const calls = new Map<number, Extract<Part, { kind: "tool_call" }>>();
  let stopReason = "";
  let error = "";
  for (const e of events) {
    const j = obj(e);
    if (!j) continue;
    error ||= errorOf(j);
    for (const c of arr(j.choices)) {
      const choice = obj(c);
      if (!choice || (typeof choice.index === "number" && choice.index !== 0)) continue;
      const d = obj(choice.delta) ?? {};
      const reasoning = str(d.reasoning_content) || str(d.reasoning);
      if (reasoning) pushPart(parts, { kind: "thinking", text: reasoning });
      if (str(d.content)) pushPart(parts, { kind: "text", text: str(d.content) });
      if (str(d.refusal)) parts.push({ kind: "other", label: "refusal", text: str(d.refusal) });
      for (const tc of arr(d.tool_calls)) {
        const t = obj(tc);
        if (!t) continue;
        const index = typeof t.index === "number" ? t.index : calls.size;
        const f = obj(t.function);
        let call = calls.get(index);
        if (!call) {
          call = { kind: "tool_call", id: "", name: "", arguments: "" };
          calls.set(index, call);
          parts.push(call);
        }
        call.id ||= str(t.id);
        call.name ||= str(f?.name);
        call.arguments += str(f?.arguments);
      }
      if (str(choice.finish_reason)) stopReason = str(choice.finish_reason);
    }
  }
  return { messages: [{ role: "assistant", parts }], stopReason, error, done: stopReason !== "" };
}

// ---------- OpenAI Responses ----------

function responsesContent(content: unknown): Part[] {
  if (typeof content === "string") return content ? [{ kind: "text", text: content }] : [];
  const parts: Part[] = [];
  for (const p of arr(content)) {
    const o = obj(p);
    if (!o) continue;
    switch (str(o.type)) {
      case "input_text":
      case "output_text":
      case "text":
        pushPart(parts, { kind: "text", text: str(o.text) });
        break;
      case "refusal":
        parts.push({ kind: "other", label: "refusal", text: str(o.refusal) });
        break;
      case "input_image":
        parts.push(media("image", "", urlLabel(str(o.image_url)) || str(o.file_id)));
        break;
      case "input_file":
        parts.push(media("file", "", str(o.filename) || str(o.file_id)));
        break;
      case "input_audio":
        parts.push(media("audio", "", ""));
        break;
      default:
        parts.push({ kind: "other", label: str(o.type) || "part", text: json(o) });
    }
  }
  return parts;
}

/** Responses items into messages: consecutive items of one role share one. */
function responsesItems(items: unknown[], defaultRole: string): Message[] {
  const out: Message[] = [];
  const add = (role: string, p: Part[]) => {
    const last = out[out.length - 1];
    if (last && last.role === role) for (const x of p) pushPart(last.parts, x);
    else out.push({ role, parts: [...p] });
  };
  for (const it of items) {
    const o = obj(it);
    if (!o) continue;
    const type = str(o.type) || (o.role ? "message" : "");
    switch (type) {
      case "message":
        add(str(o.role) || defaultRole, responsesContent(o.content));
        break;
      case "function_call":
      case "custom_tool_call":
        add("assistant", [{ kind: "tool_call", id: str(o.call_id) || str(o.id), name: str(o.name), arguments: str(o.arguments) || str(o.input) }]);
        break;
      case "function_call_output":
      case "custom_tool_call_output":
        add("tool", [{ kind: "tool_result", id: str(o.call_id), name: "", content: textOf(o.output), isError: false }]);
        break;
      case "reasoning": {
        const text = [...arr(o.summary), ...arr(o.content)].map((s) => str(obj(s)?.text)).filter(Boolean).join("\n");
        add("assistant", [text ? { kind: "thinking", text } : { kind: "thinking", text: "(encrypted reasoning)", redacted: true }]);
        break;
      }
      default:
        add(defaultRole, [{ kind: "other", label: type || "item", text: json(o) }]);
    }
  }
  return out;
}

function responsesRequest(b: Obj): Omit<RequestSide, "partial"> {
  const system: string[] = [];
  if (str(b.instructions)) system.push(str(b.instructions));
  let messages: Message[];
  if (typeof b.input === "string") messages = [{ role: "user", parts: [{ kind: "text", text: b.input }] }];
  else messages = responsesItems(arr(b.input), "user");
  // Leading system/developer messages are the system prompt.
  while (messages[0] && (messages[0].role === "system" || messages[0].role === "developer")) {
    const m = messages.shift();
    system.push((m?.parts ?? []).map((p) => (p.kind === "text" ? p.text : "")).join(""));
  }
  const tools = arr(b.tools).map((t) => str(obj(t)?.name) || str(obj(t)?.type));
  return { system, messages, tools };
}

function responsesStopReason(r: Obj): string {
  return str(obj(r.incomplete_details)?.reason) || str(r.status);
}

function responsesResponse(b: Obj): Omit<ResponseSide, "partial"> {
  return { messages: responsesItems(arr(b.output), "assistant"), stopReason: responsesStopReason(b), error: errorOf(b) };
}

function responsesStream(events: unknown[]): Omit<ResponseSide, "partial"> & { done: boolean } {
  const items: Obj[] = [];
  let final: Obj | undefined;
  let error = "";
  const item = (j: Obj): Obj => {
    const i = typeof j.output_index === "number" ? j.output_index : items.length - 1;
    items[i] ??= { type: "message", role: "assistant", content: [] };
    return items[i];
  };
  for (const e of events) {
    const j = obj(e);
    if (!j) continue;
    const type = str(j.type);
    switch (type) {
      case "response.output_item.added":
      case "response.output_item.done": {
        const it = obj(j.item);
        if (!it) break;
        const i = typeof j.output_index === "number" ? j.output_index : items.length;
        // Copies: the deltas below add to them.
        items[i] = { ...it, content: [...arr(it.content)], summary: [...arr(it.summary)] };
        break;
      }
      case "response.output_text.delta": {
        const it = item(j);
        const content = arr(it.content) as Obj[];
        const last = content[content.length - 1];
        if (last && str(last.type) === "output_text") last.text = str(last.text) + str(j.delta);
        else content.push({ type: "output_text", text: str(j.delta) });
        it.content = content;
        break;
      }
      case "response.reasoning_summary_text.delta":
      case "response.reasoning_text.delta": {
        const it = item(j);
        const summary = arr(it.summary) as Obj[];
        const last = summary[summary.length - 1];
        if (last) last.text = str(last.text) + str(j.delta);
        else summary.push({ type: "summary_text", text: str(j.delta) });
        it.summary = summary;
        it.type = "reasoning";
        break;
      }
      case "response.function_call_arguments.delta":
      case "response.custom_tool_call_input.delta": {
        const it = item(j);
        it.arguments = str(it.arguments) + str(j.delta);
        break;
      }
      case "response.completed":
      case "response.incomplete":
      case "response.failed":
        final = obj(j.response);
        break;
      case "error":
        error ||= str(j.message) || errorOf(j);
        break;
      default:
        if (obj(j.response)?.error) error ||= errorOf(obj(j.response) ?? {});
    }
  }
  if (final) {
    const output = arr(final.output);
    return {
      messages: responsesItems(output.length ? output : items, "assistant"),
      stopReason: responsesStopReason(final),
      error: error || errorOf(final),
      done: true,
    };
  }
  return { messages: responsesItems(items.filter(Boolean), "assistant"), stopReason: "", error, done: false };
}

// ---------- Anthropic Messages ----------

function anthropicBlocks(content: unknown): Part[] {
  if (typeof content === "string") return content ? [{ kind: "text", text: content }] : [];
  const parts: Part[] = [];
  for (const b of arr(content)) {
    const o = obj(b);
    if (!o) continue;
    switch (str(o.type)) {
      case "text":
        pushPart(parts, { kind: "text", text: str(o.text) });
        break;
      case "thinking":
        parts.push({ kind: "thinking", text: str(o.thinking) });
        break;
      case "redacted_thinking":
        parts.push({ kind: "thinking", text: "(redacted thinking)", redacted: true });
        break;
      case "tool_use":
      case "server_tool_use":
        parts.push({ kind: "tool_call", id: str(o.id), name: str(o.name), arguments: json(o.input ?? {}) });
        break;
      case "tool_result":
        parts.push({ kind: "tool_result", id: str(o.tool_use_id), name: "", content: toolResultText(o.content), isError: o.is_error === true });
        break;
      case "image":
      case "document": {
        const src = obj(o.source);
        const detail = str(src?.type) === "base64" ? `${sizeOf(str(src?.data))} inline` : str(src?.url) || str(src?.file_id) || str(src?.type);
        parts.push(media(str(o.type), str(src?.media_type), detail));
        break;
      }
      default:
        parts.push({ kind: "other", label: str(o.type) || "block", text: json(o) });
    }
  }
  return parts;
}

/** A tool result's content: text, with images as placeholders. */
function toolResultText(content: unknown): string {
  if (typeof content === "string") return content;
  return arr(content)
    .map((b) => {
      const o = obj(b);
      if (!o) return "";
      if (str(o.type) === "text") return str(o.text);
      return `[${str(o.type) || "block"}]`;
    })
    .join("\n");
}

function anthropicRequest(b: Obj): Omit<RequestSide, "partial"> {
  const system = typeof b.system === "string" ? (b.system ? [b.system] : []) : arr(b.system).map((s) => str(obj(s)?.text)).filter(Boolean);
  const messages = arr(b.messages)
    .map(obj)
    .filter((m): m is Obj => !!m)
    .map((m) => {
      const parts = anthropicBlocks(m.content);
      // A user turn of only tool results reads as the tool speaking.
      const role = str(m.role) === "user" && parts.length > 0 && parts.every((p) => p.kind === "tool_result") ? "tool" : str(m.role) || "user";
      return { role, parts };
    });
  const tools = arr(b.tools).map((t) => str(obj(t)?.name) || str(obj(t)?.type));
  return { system, messages, tools };
}

function anthropicResponse(b: Obj): Omit<ResponseSide, "partial"> {
  if (str(b.type) === "error" || obj(b.error)) return { messages: [], stopReason: "", error: errorOf(b) };
  return { messages: [{ role: "assistant", parts: anthropicBlocks(b.content) }], stopReason: str(b.stop_reason), error: "" };
}

function anthropicStream(events: unknown[]): Omit<ResponseSide, "partial"> & { done: boolean } {
  const blocks: Obj[] = [];
  const inputs: string[] = [];
  let stopReason = "";
  let error = "";
  let done = false;
  for (const e of events) {
    const j = obj(e);
    if (!j) continue;
    const index = typeof j.index === "number" ? j.index : blocks.length - 1;
    switch (str(j.type)) {
      case "message_start":
        stopReason ||= str(obj(j.message)?.stop_reason);
        break;
      case "content_block_start": {
        const b = obj(j.content_block) ?? { type: "text", text: "" };
        blocks[index] = { ...b };
        inputs[index] = "";
        break;
      }
      case "content_block_delta": {
        const d = obj(j.delta);
        const b = (blocks[index] ??= { type: "text", text: "" });
        if (!d) break;
        switch (str(d.type)) {
          case "text_delta":
            b.text = str(b.text) + str(d.text);
            break;
          case "thinking_delta":
            b.thinking = str(b.thinking) + str(d.thinking);
            break;
          case "input_json_delta":
            inputs[index] = (inputs[index] ?? "") + str(d.partial_json);
            break;
          default:
            break;
        }
        break;
      }
      case "message_delta":
        stopReason = str(obj(j.delta)?.stop_reason) || stopReason;
        break;
      case "message_stop":
        done = true;
        break;
      case "error":
        error ||= errorOf(j);
        break;
      default:
        break;
    }
  }
  blocks.forEach((b, i) => {
    const args = inputs[i];
    if (!b || !args) return;
    const parsed = parseJsonLenient(args);
    b.input = parsed ? parsed.value : args;
  });
  return { messages: [{ role: "assistant", parts: anthropicBlocks(blocks.filter(Boolean)) }], stopReason, error, done };
}

// ---------- Gemini ----------

function geminiParts(parts: unknown): Part[] {
  const out: Part[] = [];
  for (const p of arr(parts)) {
    const o = obj(p);
    if (!o) continue;
    const fc = obj(pick(o, "functionCall", "function_call"));
    const fr = obj(pick(o, "functionResponse", "function_response"));
    const inline = obj(pick(o, "inlineData", "inline_data"));
    const file = obj(pick(o, "fileData", "file_data"));
    if (typeof o.text === "string") {
      pushPart(out, o.thought === true ? { kind: "thinking", text: o.text } : { kind: "text", text: o.text });
    } else if (fc) {
      out.push({ kind: "tool_call", id: str(fc.id), name: str(fc.name), arguments: json(fc.args ?? {}) });
    } else if (fr) {
      out.push({ kind: "tool_result", id: str(fr.id), name: str(fr.name), content: json(fr.response ?? {}), isError: false });
    } else if (inline) {
      out.push(media("inline data", str(pick(inline, "mimeType", "mime_type")), `${sizeOf(str(inline.data))} inline`));
    } else if (file) {
      out.push(media("file", str(pick(file, "mimeType", "mime_type")), str(pick(file, "fileUri", "file_uri"))));
    } else if (o.thoughtSignature || o.thought_signature) {
      // A signature alone carries nothing to read.
    } else {
      out.push({ kind: "other", label: Object.keys(o)[0] ?? "part", text: json(o) });
    }
  }
  return out;
}

const geminiRole = (r: string, parts: Part[]) =>
  r === "model" ? "assistant" : parts.length > 0 && parts.every((p) => p.kind === "tool_result") ? "tool" : r || "user";

function geminiRequest(b: Obj): Omit<RequestSide, "partial"> {
  const si = pick(b, "systemInstruction", "system_instruction");
  const system = typeof si === "string" ? [si] : geminiParts(obj(si)?.parts).map((p) => (p.kind === "text" ? p.text : "")).filter(Boolean);
  const messages = arr(b.contents)
    .map(obj)
    .filter((c): c is Obj => !!c)
    .map((c) => {
      const parts = geminiParts(c.parts);
      return { role: geminiRole(str(c.role), parts), parts };
    });
  const tools = arr(b.tools).flatMap((t) =>
    arr(pick(obj(t) ?? {}, "functionDeclarations", "function_declarations")).map((f) => str(obj(f)?.name)),
  );
  return { system, messages, tools };
}

/** One answer from every chunk of a Gemini stream (or a whole answer). */
function geminiChunks(chunks: unknown[]): Omit<ResponseSide, "partial"> & { done: boolean } {
  const parts: Part[] = [];
  let stopReason = "";
  let error = "";
  for (const c of chunks) {
    const j = obj(c);
    if (!j) continue;
    error ||= errorOf(j);
    const cand = obj(arr(j.candidates)[0]);
    if (!cand) continue;
    for (const p of geminiParts(obj(cand.content)?.parts)) pushPart(parts, p);
    stopReason = str(pick(cand, "finishReason", "finish_reason")) || stopReason;
  }
  return { messages: [{ role: "assistant", parts }], stopReason, error, done: stopReason !== "" };
}

// ---------- errors ----------

function errorOf(b: Obj): string {
  const e = b.error;
  if (typeof e === "string") return e;
  const o = obj(e);
  if (!o) return "";
  return str(o.message) || str(o.type) || json(o);
}

// ---------- entry points ----------

/** The request's side, or undefined when there is no body or it cannot be read. */
export function parseRequest(protocol: Protocol, body: string, truncated: boolean): RequestSide | undefined {
  if (!body.trim()) return undefined;
  const parsed = parseJsonLenient(body);
  const b = obj(parsed?.value);
  if (!parsed || !b) return undefined;
  const partial = truncated || parsed.repaired;
  const side =
    protocol === "openai-chat"
      ? chatRequest(b)
      : protocol === "openai-responses"
        ? responsesRequest(b)
        : protocol === "anthropic"
          ? anthropicRequest(b)
          : geminiRequest(b);
  if (side.messages.length === 0 && side.system.length === 0) return undefined;
  return { ...side, partial };
}

/** The response's side, or undefined when there is no body or it cannot be read. */
export function parseResponse(protocol: Protocol, body: string, truncated: boolean): ResponseSide | undefined {
  const text = body.trim();
  if (!text) return undefined;
  const sse = /^(data|event|id|retry):/.test(text.slice(0, 16)) || text.startsWith(":");
  let result: (Omit<ResponseSide, "partial"> & { done?: boolean }) | undefined;
  let repaired = false;
  if (sse) {
    const events = parseSseEvents(body)
      .map((e) => (obj(e.json) ? { ...(e.json as Obj), ...(e.event && !(e.json as Obj).type ? { type: e.event } : {}) } : undefined))
      .filter((e): e is Obj => !!e);
    if (events.length === 0) return undefined;
    result =
      protocol === "openai-chat"
        ? chatStream(events)
        : protocol === "openai-responses"
          ? responsesStream(events)
          : protocol === "anthropic"
            ? anthropicStream(events)
            : geminiChunks(events);
    // Cut streams end with half an event: the rest is still shown.
  } else {
    const parsed = parseJsonLenient(body);
    if (!parsed) return undefined;
    repaired = parsed.repaired;
    if (Array.isArray(parsed.value)) {
      // Gemini's streamGenerateContent without alt=sse: a JSON array of chunks.
      if (protocol !== "gemini") return undefined;
      result = geminiChunks(parsed.value);
    } else {
      const b = obj(parsed.value);
      if (!b) return undefined;
      result =
        protocol === "openai-chat"
          ? chatResponse(b)
          : protocol === "openai-responses"
            ? responsesResponse(b)
            : protocol === "anthropic"
              ? anthropicResponse(b)
              : { ...geminiChunks([b]), done: true };
    }
  }
  const messages = result.messages.filter((m) => m.parts.length > 0);
  if (messages.length === 0 && !result.error && !result.stopReason) return undefined;
  const cut = sse ? result.done === false : false;
  return { messages, stopReason: result.stopReason, error: result.error, partial: truncated || repaired || cut };
}

/** The conversation of a record, or undefined for a protocol it does not know. */
export function toConversation(log: ConversationInput): Conversation | undefined {
  const protocol = conversationProtocol(log.protocol, log.path);
  if (!protocol) return undefined;
  let request: RequestSide | undefined;
  let response: ResponseSide | undefined;
  try {
    request = parseRequest(protocol, log.requestBody, log.requestBodyTruncated);
  } catch {
    request = undefined;
  }
  try {
    response = parseResponse(protocol, log.responseBody, log.responseBodyTruncated);
  } catch {
    response = undefined;
  }
  if (!request && !response) return undefined;
  return { protocol, request, response };
}
