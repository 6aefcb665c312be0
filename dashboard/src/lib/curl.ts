// "Copy as curl" for a logged request. The client's key is never in the
// output, not even masked: whatever carried it (Authorization, x-api-key,
// x-goog-api-key, api-key, or Gemini's ?key= query parameter) carries a
// $LLMGW_KEY placeholder instead, and the data plane's address is $LLMGW_URL.

import type { RequestLog } from "@/gen/llmgw/v1/logs_pb";

/** Headers that carry a client key: replaced by the placeholder. */
const KEY_HEADERS: Record<string, string> = {
  authorization: `Authorization: Bearer $LLMGW_KEY`,
  "x-api-key": `x-api-key: $LLMGW_KEY`,
  "x-goog-api-key": `x-goog-api-key: $LLMGW_KEY`,
  "api-key": `api-key: $LLMGW_KEY`,
};

/** Other credentials: never copied. */
const CREDENTIAL_HEADERS = new Set(["proxy-authorization", "cookie", "set-cookie"]);

/** Hop-by-hop headers, and those curl sets itself or that describe one connection. */
const SKIPPED_HEADERS = new Set([
  "host",
  "content-length",
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "te",
  "trailer",
  "upgrade",
  "accept-encoding",
  "user-agent",
  "x-forwarded-for",
  "x-forwarded-host",
  "x-forwarded-proto",
  "x-real-ip",
  "forwarded",
  "via",
]);

/** Single-quotes a word for a POSIX shell. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export interface CurlOptions {
  /** Data plane base URL; default the $LLMGW_URL variable. */
  baseUrl?: string;
}

type CurlInput = Pick<RequestLog, "protocol" | "path" | "requestHeaders" | "requestBody" | "requestBodyTruncated"> &
  Partial<Pick<RequestLog, "responseHeaders">>;

/** The path with any `key` query parameter replaced by the placeholder; whether it had one. */
function pathWithoutKey(path: string): { path: string; hadKey: boolean } {
  const q = path.indexOf("?");
  if (q < 0) return { path, hadKey: false };
  let hadKey = false;
  const params = path
    .slice(q + 1)
    .split("&")
    .filter(Boolean)
    .map((p) => {
      const name = decodeURIComponentSafe(p.split("=")[0] ?? "");
      if (name.toLowerCase() === "key") {
        hadKey = true;
        return "key=$LLMGW_KEY";
      }
      return p;
    });
  return { path: params.length ? `${path.slice(0, q)}?${params.join("&")}` : path.slice(0, q), hadKey };
}

function decodeURIComponentSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** Double-quotes a word for a POSIX shell, so that $LLMGW_* expand and nothing else does. */
function doubleQuote(s: string): string {
  return `"${s.replace(/[\\"`]/g, "\\$&").replace(/\$(?!LLMGW_(KEY|URL)\b)/g, "\\$")}"`;
}

/** A curl command that repeats `log`'s request with the key as a placeholder. */
export function toCurl(log: CurlInput, opts: CurlOptions = {}): string {
  const stripped = pathWithoutKey(log.path || "/");
  const hadKey = stripped.hadKey;
  let path = stripped.path;
  // A Gemini stream answered as SSE was asked for with ?alt=sse (the logged
  // path has no query string).
  const contentType = Object.entries(log.responseHeaders ?? {}).find(([k]) => k.toLowerCase() === "content-type")?.[1] ?? "";
  if (/:streamGenerateContent$/.test(path) && /text\/event-stream/i.test(contentType)) path += "?alt=sse";
  const url = opts.baseUrl ? doubleQuote(opts.baseUrl.replace(/\/+$/, "") + path) : doubleQuote(`$LLMGW_URL${path}`);
  const lines = [`curl -sS ${url}`];
  const names = Object.keys(log.requestHeaders).sort();
  const keyHeaders = new Set<string>();
  const headers: string[] = [];
  let hasContentType = false;
  for (const name of names) {
    const lower = name.toLowerCase();
    const placeholder = KEY_HEADERS[lower];
    if (placeholder) {
      if (!keyHeaders.has(lower)) headers.push(`-H "${placeholder}"`);
      keyHeaders.add(lower);
      continue;
    }
    if (CREDENTIAL_HEADERS.has(lower) || SKIPPED_HEADERS.has(lower)) continue;
    if (lower.startsWith("x-llmgw-")) continue;
    const value = log.requestHeaders[name] ?? "";
    if (/^\*{4}/.test(value)) continue; // masked by the data plane: a secret
    if (lower === "content-type") hasContentType = true;
    headers.push(`-H ${shellQuote(`${lower}: ${value}`)}`);
  }
  if (keyHeaders.size === 0 && !hadKey) {
    // The key's header was not logged: the one the protocol's SDKs use.
    const fallback = log.protocol === "anthropic" ? "x-api-key" : log.protocol === "gemini" ? "x-goog-api-key" : "authorization";
    headers.unshift(`-H "${KEY_HEADERS[fallback]}"`);
  }
  lines.push(...headers);
  if (log.requestBody) {
    if (!hasContentType) lines.push(`-H 'content-type: application/json'`);
    lines.push(`--data-raw ${shellQuote(log.requestBody)}`);
  }
  const out = lines.join(" \\\n  ");
  const notes = [
    "# Set LLMGW_URL to the data plane (e.g. http://127.0.0.1:8000) and LLMGW_KEY to a client key.",
  ];
  if (opts.baseUrl) notes[0] = "# Set LLMGW_KEY to a client key.";
  if (log.requestBodyTruncated) notes.push("# The logged body was truncated: this is not the whole request.");
  return `${notes.join("\n")}\n${out}`;
}
