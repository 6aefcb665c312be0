// "Copy as curl" for a logged request. The client's key is never in the
// output: credential headers are replaced by a $LLMGW_API_KEY placeholder
// and the data plane's address by $LLMGW_URL.

import type { RequestLog } from "@/gen/llmgw/v1/logs_pb";

/** Headers never copied as they were logged. */
const CREDENTIAL_HEADERS = new Set([
  "authorization",
  "x-api-key",
  "api-key",
  "proxy-authorization",
  "cookie",
  "set-cookie",
]);

/** Headers curl sets itself, or that describe one connection. */
const SKIPPED_HEADERS = new Set([
  "host",
  "content-length",
  "connection",
  "keep-alive",
  "transfer-encoding",
  "te",
  "trailer",
  "upgrade",
  "accept-encoding",
  "user-agent",
  "x-forwarded-for",
  "x-real-ip",
]);

/** Single-quotes a word for a POSIX shell. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export interface CurlOptions {
  /** Data plane base URL; default the $LLMGW_URL variable. */
  baseUrl?: string;
}

type CurlInput = Pick<RequestLog, "protocol" | "path" | "requestHeaders" | "requestBody" | "requestBodyTruncated">;

/** A curl command that repeats `log`'s request with the key as a placeholder. */
export function toCurl(log: CurlInput, opts: CurlOptions = {}): string {
  const base = opts.baseUrl ? shellQuote(opts.baseUrl.replace(/\/+$/, "") + (log.path || "/")) : `"$LLMGW_URL"${shellQuote(log.path || "/")}`;
  const lines = [`curl -sS ${base}`];
  const anthropic = log.protocol === "anthropic";
  lines.push(anthropic ? `-H "x-api-key: $LLMGW_API_KEY"` : `-H "Authorization: Bearer $LLMGW_API_KEY"`);
  const names = Object.keys(log.requestHeaders).sort();
  let hasContentType = false;
  for (const name of names) {
    const lower = name.toLowerCase();
    if (CREDENTIAL_HEADERS.has(lower) || SKIPPED_HEADERS.has(lower)) continue;
    if (lower.startsWith("x-llmgw-")) continue;
    const value = log.requestHeaders[name] ?? "";
    if (/^\*{4}/.test(value)) continue; // masked by the data plane: a secret
    if (lower === "content-type") hasContentType = true;
    lines.push(`-H ${shellQuote(`${lower}: ${value}`)}`);
  }
  if (log.requestBody) {
    if (!hasContentType) lines.push(`-H 'content-type: application/json'`);
    lines.push(`--data-raw ${shellQuote(log.requestBody)}`);
  }
  let out = lines.join(" \\\n  ");
  const notes = [
    "# Set LLMGW_URL to the data plane (e.g. http://127.0.0.1:8000) and LLMGW_API_KEY to a client key.",
  ];
  if (log.requestBodyTruncated) notes.push("# The logged body was truncated: this is not the whole request.");
  if (opts.baseUrl) notes.shift();
  if (notes.length) out = `${notes.join("\n")}\n${out}`;
  return out;
}
