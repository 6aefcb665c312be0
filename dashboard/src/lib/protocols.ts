/**
 * The names the control plane accepts for provider protocols, client APIs,
 * translation modes and model types (see llmgw_core::Protocol, ClientApi,
 * Translation and ModelType), with the words the provider and model forms
 * and the route-explain panel show for them.
 */

export interface Choice {
  value: string;
  label: string;
  hint: string;
}

export interface ProtocolChoice extends Choice {
  /** A base URL of that kind, for the form's placeholder. */
  baseUrl: string;
}

export const PROTOCOLS: ProtocolChoice[] = [
  {
    value: "openai",
    label: "OpenAI",
    hint: "The whole OpenAI API: Chat Completions, Responses, embeddings",
    baseUrl: "https://api.openai.com/v1",
  },
  {
    value: "openai-chat",
    label: "OpenAI-compatible (Chat only)",
    hint: "vLLM, Ollama, DeepSeek, Groq…: Responses clients are translated to Chat Completions",
    baseUrl: "http://127.0.0.1:8000/v1",
  },
  {
    value: "anthropic",
    label: "Anthropic",
    hint: "Anthropic Messages",
    baseUrl: "https://api.anthropic.com/v1",
  },
  {
    value: "gemini",
    label: "Google Gemini",
    hint: "generateContent; other clients are translated",
    baseUrl: "https://generativelanguage.googleapis.com/v1beta",
  },
];

/** The choice for a stored protocol; an unknown name is shown as is. */
export function protocolChoice(value: string): ProtocolChoice {
  return PROTOCOLS.find((p) => p.value === value) ?? { value, label: value, hint: "", baseUrl: "" };
}

export const CLIENT_APIS: Choice[] = [
  { value: "chat", label: "OpenAI Chat Completions", hint: "POST /v1/chat/completions" },
  { value: "responses", label: "OpenAI Responses", hint: "POST /v1/responses" },
  { value: "messages", label: "Anthropic Messages", hint: "POST /v1/messages" },
  { value: "gemini", label: "Gemini generateContent", hint: "POST /v1beta/models/{model}:generateContent" },
  { value: "embeddings", label: "OpenAI embeddings", hint: "POST /v1/embeddings" },
  { value: "completions", label: "OpenAI completions (legacy)", hint: "POST /v1/completions" },
  { value: "count-tokens", label: "Anthropic count tokens", hint: "POST /v1/messages/count_tokens" },
  { value: "gemini-count-tokens", label: "Gemini countTokens", hint: "POST /v1beta/models/{model}:countTokens" },
  { value: "speech", label: "OpenAI speech", hint: "POST /v1/audio/speech" },
  { value: "transcription", label: "OpenAI transcriptions and translations", hint: "POST /v1/audio/transcriptions, /v1/audio/translations" },
  { value: "image", label: "OpenAI images", hint: "POST /v1/images/generations, /v1/images/edits, /v1/images/variations" },
];

export const TRANSLATIONS: Choice[] = [
  { value: "strict", label: "Strict", hint: "Refuse a request using a feature the target's protocol cannot express" },
  { value: "lenient", label: "Lenient", hint: "Drop such features (the request log lists them) and go on" },
];

/** A stored translation mode; empty (an older control plane) is strict. */
export const translationOf = (value: string): string => value || "strict";

/** Which endpoints a model serves; a request to an endpoint of another type gets 400. */
export const MODEL_TYPES: Choice[] = [
  { value: "chat", label: "Chat", hint: "Chat Completions, Responses, Messages, Gemini generateContent, legacy completions, token counts" },
  { value: "embedding", label: "Embedding", hint: "POST /v1/embeddings only" },
  { value: "speech", label: "Speech", hint: "Text to speech (/v1/audio/speech); chat and embeddings requests are refused" },
  { value: "transcription", label: "Transcription", hint: "Speech to text (/v1/audio/transcriptions); chat and embeddings requests are refused" },
  { value: "image", label: "Image", hint: "Image generation (/v1/images); chat and embeddings requests are refused" },
];

/** A stored model type; empty (an older control plane) is chat. */
export const modelTypeOf = (value: string): string => value || "chat";

/** The type field of an UpdateModelRequest: set only when the form changed the stored type. */
export function modelTypeUpdate(chosen: string, stored: string): { type?: string } {
  return chosen === modelTypeOf(stored) ? {} : { type: chosen };
}

/**
 * The default max_tokens field: empty means none (the data plane's
 * default), anything else a whole number of at least 1.
 */
export function parseMaxTokens(text: string): number | undefined {
  const t = text.trim();
  if (!t) return undefined;
  const v = Number(t);
  if (!Number.isInteger(v) || v < 1 || v > 4_294_967_295) {
    throw new Error("Default max tokens must be a whole number ≥ 1, or empty.");
  }
  return v;
}

/** The fields of an UpdateModelRequest that set or clear default_max_tokens. */
export function maxTokensUpdate(text: string, stored: number | undefined): { defaultMaxTokens?: number; clearDefaultMaxTokens: boolean } {
  const v = parseMaxTokens(text);
  return { defaultMaxTokens: v, clearDefaultMaxTokens: v === undefined && stored !== undefined };
}

/** How an explain candidate is served, in a few words, and whether it is a translation. */
export function servingBadge(serving: string): { text: string; translated: boolean } {
  const m = /^translated from (\S+) to (\S+)$/.exec(serving);
  if (m) return { text: `${m[1]} → ${m[2]}`, translated: true };
  return { text: serving || "–", translated: false };
}
