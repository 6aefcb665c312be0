// How the log views show a request's protocols and its normalized usage
// (see RequestLog in proto/llmgw/v1/logs.proto).

import { Outcome, type RequestLog } from "@/gen/llmgw/v1/logs_pb";
import type { Num } from "./format";

type Protocols = Pick<RequestLog, "protocol" | "upstreamProtocol">;

/**
 * The client's protocol and the upstream's, "client→upstream"
 * ("anthropic→openai-chat"); the client's alone when no upstream answered.
 */
export function protocolPair(r: Protocols): string {
  if (!r.upstreamProtocol) return r.protocol;
  return `${r.protocol}→${r.upstreamProtocol}`;
}

type Usage = Pick<
  RequestLog,
  "inputTokens" | "cacheReadTokens" | "cacheCreationTokens" | "outputTokens" | "reasoningTokens"
>;

export interface UsageRow {
  label: string;
  value: Num;
  /** What the figure means, for a tooltip. */
  hint: string;
}

/**
 * The normalized usage, in the order cost is computed: the token kinds
 * never overlap except reasoning, which is a part of output.
 */
export function usageRows(r: Usage): UsageRow[] {
  return [
    { label: "Input (uncached)", value: r.inputTokens, hint: "Prompt tokens billed at the input price; cache reads and writes excluded." },
    { label: "Cache read", value: r.cacheReadTokens, hint: "Prompt tokens read from the provider's cache, billed at the cached-input price." },
    { label: "Cache write", value: r.cacheCreationTokens, hint: "Prompt tokens written to the provider's cache, billed at the cache-write price." },
    { label: "Output", value: r.outputTokens, hint: "Generated tokens, reasoning included, billed at the output price." },
    { label: "Reasoning", value: r.reasoningTokens, hint: "Thinking tokens: a part of output, not added to it." },
  ];
}

type Media = Pick<RequestLog, "audioMilliseconds" | "audioSource" | "characters" | "images" | "imageSize" | "imageQuality">;

/**
 * What an audio or image request used besides tokens (#16), only the
 * quantities it has: seconds of audio (and where they come from: the
 * upstream's answer, measured from the upload, or unknown), characters of
 * speech input, images by count, size and quality.
 */
export function mediaRows(r: Media): { label: string; value: string }[] {
  const rows: { label: string; value: string }[] = [];
  if (r.audioMilliseconds > 0n) rows.push({ label: "Audio", value: `${(Number(r.audioMilliseconds) / 1000).toFixed(3)} s` });
  if (r.audioSource) rows.push({ label: "Audio seconds", value: r.audioSource });
  if (r.characters > 0n) rows.push({ label: "Characters", value: r.characters.toString() });
  if (r.images > 0) rows.push({ label: "Images", value: String(r.images) });
  if (r.imageSize) rows.push({ label: "Image size", value: r.imageSize });
  if (r.imageQuality) rows.push({ label: "Image quality", value: r.imageQuality });
  return rows;
}

/** The whole prompt: uncached input, cache reads and cache writes. */
export function promptTokens(r: Usage): bigint {
  return BigInt(r.inputTokens) + BigInt(r.cacheReadTokens) + BigInt(r.cacheCreationTokens);
}

/** Every token of the request: the whole prompt and the output. */
export function totalTokens(r: Usage): bigint {
  return promptTokens(r) + BigInt(r.outputTokens);
}

/** What to say where the body sent upstream would be. */
export function upstreamBodyNote(r: Pick<RequestLog, "requestBody" | "upstreamRequestBody" | "translated">): string {
  if (r.upstreamRequestBody) return "";
  if (r.requestBody) return r.translated ? "Not recorded." : "The client's request body was sent unchanged.";
  return "Not recorded (empty, or body logging is off).";
}

export interface OutcomeChoice {
  value: Outcome;
  /** The name the API, the CLI and the URL use ("interrupted"). */
  name: string;
  label: string;
  /** What it means, for a tooltip. */
  hint: string;
  tone: "success" | "warning" | "destructive" | "secondary";
}

/** How a request can end (RequestLog.outcome), in the enum's order. */
export const OUTCOMES: OutcomeChoice[] = [
  { value: Outcome.OK, name: "ok", label: "OK", hint: "Answered in full.", tone: "success" },
  { value: Outcome.UPSTREAM_ERROR, name: "upstream_error", label: "Upstream error", hint: "An upstream failed before the response started.", tone: "destructive" },
  { value: Outcome.INTERRUPTED, name: "interrupted", label: "Interrupted", hint: "The response started, then failed: the stream broke or the upstream reported an error in it.", tone: "destructive" },
  { value: Outcome.TIMEOUT, name: "timeout", label: "Timeout", hint: "No upstream answered in time, or one went silent mid-response.", tone: "destructive" },
  { value: Outcome.CANCELLED_BY_CLIENT, name: "cancelled_by_client", label: "Cancelled by client", hint: "The client went away before the response was complete (status 499).", tone: "warning" },
  { value: Outcome.CANCELLED_BY_ADMIN, name: "cancelled_by_admin", label: "Cancelled by admin", hint: "An operator cancelled the request.", tone: "warning" },
  { value: Outcome.REFUSED, name: "refused", label: "Refused", hint: "The gateway refused the request: authentication, limits or validation.", tone: "secondary" },
];

/** The choice for an outcome; undefined for unspecified (records stored before outcomes). */
export function outcomeChoice(o: Outcome): OutcomeChoice | undefined {
  return OUTCOMES.find((c) => c.value === o);
}

/** The outcome a name stands for; UNSPECIFIED for "" or an unknown name. */
export function outcomeOfName(name: string): Outcome {
  return OUTCOMES.find((c) => c.name === name.trim())?.value ?? Outcome.UNSPECIFIED;
}

/**
 * What the stop-reason badge says when hovered: the reason is the upstream's
 * own word, which a translated client got as the nearest reason its
 * protocol has.
 */
export function stopReasonHint(r: Pick<RequestLog, "stopReason" | "upstreamProtocol" | "translated">): string {
  if (!r.stopReason) return "";
  const who = r.upstreamProtocol ? `the upstream (${r.upstreamProtocol})` : "the upstream";
  const said = `Why ${who} stopped, as it said it.`;
  return r.translated ? `${said} The client got the nearest reason its protocol has.` : said;
}
