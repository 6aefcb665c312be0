// The playground's request (#17): the body, path and headers a client of
// each protocol would send for a system prompt, a list of user/assistant
// turns and the sampling parameters. Pure: no DOM, no React.
//
// The formats follow the providers' API references:
// - OpenAI Chat Completions: POST /v1/chat/completions, `messages` with the
//   system prompt as a leading "system" message, `max_completion_tokens`
//   (`max_tokens` is deprecated), and `stream_options.include_usage` so a
//   stream ends with its usage;
// - OpenAI Responses: POST /v1/responses, `instructions` and `input` as
//   message items (assistant turns as `output_text`), `max_output_tokens`;
// - Anthropic Messages: POST /v1/messages, a top-level `system`,
//   `max_tokens` required, and the `anthropic-version` header;
// - Gemini: POST /v1beta/models/{model}:streamGenerateContent?alt=sse (or
//   :generateContent), `systemInstruction`, `contents` with the roles
//   "user" and "model", and `generationConfig`.

import type { Protocol } from "./conversation";

export type PlaygroundProtocol = Protocol;

export interface ProtocolOption {
  value: PlaygroundProtocol;
  label: string;
  hint: string;
}

export const PLAYGROUND_PROTOCOLS: ProtocolOption[] = [
  { value: "openai-chat", label: "OpenAI chat", hint: "POST /v1/chat/completions" },
  { value: "openai-responses", label: "OpenAI Responses", hint: "POST /v1/responses" },
  { value: "anthropic", label: "Anthropic Messages", hint: "POST /v1/messages" },
  { value: "gemini", label: "Gemini", hint: "POST /v1beta/models/{model}:streamGenerateContent" },
];

/** max_tokens is required by Anthropic: this when the form leaves it empty. */
export const ANTHROPIC_DEFAULT_MAX_TOKENS = 1024;
export const ANTHROPIC_VERSION = "2023-06-01";

export interface Turn {
  role: "user" | "assistant";
  text: string;
}

export interface Params {
  temperature?: number;
  topP?: number;
  maxTokens?: number;
}

export interface PlaygroundInput extends Params {
  protocol: PlaygroundProtocol;
  model: string;
  system: string;
  turns: Turn[];
  stream: boolean;
}

export interface PlaygroundRequestParts {
  /** The data plane's path, with its query. */
  path: string;
  /** The JSON body, as the protocol's client sends it. */
  body: string;
  /** Protocol headers (only those the control plane passes on). */
  headers: Record<string, string>;
}

type Obj = Record<string, unknown>;

/** Adds the keys whose value is not undefined. */
function defined(o: Obj): Obj {
  const out: Obj = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v;
  return out;
}

function chat(i: PlaygroundInput): PlaygroundRequestParts {
  const messages: Obj[] = [];
  if (i.system.trim()) messages.push({ role: "system", content: i.system });
  for (const t of i.turns) messages.push({ role: t.role, content: t.text });
  const body = defined({
    model: i.model,
    messages,
    temperature: i.temperature,
    top_p: i.topP,
    max_completion_tokens: i.maxTokens,
    stream: i.stream,
    stream_options: i.stream ? { include_usage: true } : undefined,
  });
  return { path: "/v1/chat/completions", body: JSON.stringify(body), headers: {} };
}

function responses(i: PlaygroundInput): PlaygroundRequestParts {
  const input = i.turns.map((t) => ({
    type: "message",
    role: t.role,
    content: [{ type: t.role === "assistant" ? "output_text" : "input_text", text: t.text }],
  }));
  const body = defined({
    model: i.model,
    instructions: i.system.trim() ? i.system : undefined,
    input,
    temperature: i.temperature,
    top_p: i.topP,
    max_output_tokens: i.maxTokens,
    stream: i.stream,
  });
  return { path: "/v1/responses", body: JSON.stringify(body), headers: {} };
}

function anthropic(i: PlaygroundInput): PlaygroundRequestParts {
  const body = defined({
    model: i.model,
    max_tokens: i.maxTokens ?? ANTHROPIC_DEFAULT_MAX_TOKENS,
    system: i.system.trim() ? i.system : undefined,
    messages: i.turns.map((t) => ({ role: t.role, content: t.text })),
    temperature: i.temperature,
    top_p: i.topP,
    stream: i.stream,
  });
  return { path: "/v1/messages", body: JSON.stringify(body), headers: { "anthropic-version": ANTHROPIC_VERSION } };
}

function gemini(i: PlaygroundInput): PlaygroundRequestParts {
  const generationConfig = defined({ temperature: i.temperature, topP: i.topP, maxOutputTokens: i.maxTokens });
  const body = defined({
    systemInstruction: i.system.trim() ? { parts: [{ text: i.system }] } : undefined,
    contents: i.turns.map((t) => ({ role: t.role === "assistant" ? "model" : "user", parts: [{ text: t.text }] })),
    generationConfig: Object.keys(generationConfig).length ? generationConfig : undefined,
  });
  const model = encodeURIComponent(i.model);
  const path = i.stream ? `/v1beta/models/${model}:streamGenerateContent?alt=sse` : `/v1beta/models/${model}:generateContent`;
  return { path, body: JSON.stringify(body), headers: {} };
}

/** The request a client of `input.protocol` would send. */
export function buildPlaygroundRequest(input: PlaygroundInput): PlaygroundRequestParts {
  switch (input.protocol) {
    case "openai-chat":
      return chat(input);
    case "openai-responses":
      return responses(input);
    case "anthropic":
      return anthropic(input);
    case "gemini":
      return gemini(input);
  }
}

export interface ParamFields {
  temperature: string;
  topP: string;
  maxTokens: string;
}

/** The parameter fields as numbers (empty: not sent), or the first problem in words. */
export function parseParams(f: ParamFields): { ok: true; value: Params } | { ok: false; error: string } {
  const num = (text: string, what: string, min: number, max: number): number | undefined | string => {
    const t = text.trim();
    if (!t) return undefined;
    const v = Number(t);
    if (!Number.isFinite(v) || v < min || v > max) return `${what} must be a number from ${min} to ${max}, or empty.`;
    return v;
  };
  const temperature = num(f.temperature, "Temperature", 0, 2);
  if (typeof temperature === "string") return { ok: false, error: temperature };
  const topP = num(f.topP, "Top P", 0, 1);
  if (typeof topP === "string") return { ok: false, error: topP };
  const maxTokens = num(f.maxTokens, "Max tokens", 1, 4_294_967_295);
  if (typeof maxTokens === "string") return { ok: false, error: maxTokens };
  if (maxTokens !== undefined && !Number.isInteger(maxTokens)) return { ok: false, error: "Max tokens must be a whole number, or empty." };
  return { ok: true, value: { temperature, topP, maxTokens } };
}

/** Why the turns cannot be sent yet, or "" when they can. */
export function turnsProblem(turns: Turn[]): string {
  if (turns.length === 0) return "Add a message.";
  if (turns.some((t) => !t.text.trim())) return "A message is empty: write it or remove it.";
  if (turns[turns.length - 1]?.role !== "user") return "The last message must be the user's.";
  return "";
}

/**
 * The model and key a playground request goes as: what was picked by hand
 * ("" for nothing yet) while its list still holds it; else the first model,
 * and the first key that may use the model (so the key follows the model
 * until one is picked). Computed on every render rather than set by an
 * effect once the lists arrive: such an effect, run just after a pick,
 * would put the default back over it.
 */
export function playgroundChoice(
  picked: { model: string; key: string },
  modelNames: readonly string[],
  keyNames: readonly string[],
  allows: (key: string, model: string) => boolean,
): { model: string; key: string } {
  const model = modelNames.includes(picked.model) ? picked.model : (modelNames[0] ?? "");
  const key = keyNames.includes(picked.key) ? picked.key : (keyNames.find((k) => allows(k, model)) ?? keyNames[0] ?? "");
  return { model, key };
}
