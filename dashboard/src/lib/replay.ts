// Replay of a logged request (#17): whether a record can be sent again,
// and the keys and models the replay dialog offers. Pure.

import type { ApiKey } from "@/gen/llmgw/v1/admin_pb";
import type { RequestLog } from "@/gen/llmgw/v1/logs_pb";

/** Why `r` cannot be replayed, in words; "" when it can. */
export function replayBlocker(
  r: Pick<RequestLog, "requestBody" | "requestBodyTruncated"> & Partial<Pick<RequestLog, "bodiesExpired">>,
): string {
  if (r.bodiesExpired) {
    return "Replay needs the request body, and it has expired (bodies are kept for --body-retention-days, shorter than the record).";
  }
  if (!r.requestBody) {
    return "Replay needs the request body, and it was not logged (body logging is off for this key, or the request had no body).";
  }
  if (r.requestBodyTruncated) {
    return "Replay needs the whole request body, and it was cut at the logging cap when it was logged.";
  }
  return "";
}

/** A key that can authenticate now: not revoked, not expired, not broken. */
export function keyActive(k: Pick<ApiKey, "revoked" | "expiresAt" | "broken">, now = Date.now()): boolean {
  if (k.revoked || k.broken.length > 0) return false;
  if (!k.expiresAt) return true;
  const t = Date.parse(k.expiresAt);
  return Number.isNaN(t) || t > now;
}

/** The names of the active keys, sorted. */
export function activeKeyNames(keys: Pick<ApiKey, "name" | "revoked" | "expiresAt" | "broken">[], now = Date.now()): string[] {
  return keys
    .filter((k) => keyActive(k, now))
    .map((k) => k.name)
    .sort((a, b) => a.localeCompare(b));
}

/** Whether `key` may use `model` (a key without a model list may use every model). */
export function keyAllows(key: Pick<ApiKey, "models"> | undefined, model: string): boolean {
  if (!key) return true;
  return key.models.length === 0 || key.models.includes(model);
}

/** The ReplayLog fields: empty for "the original's", so an unchanged body is sent byte for byte. */
export function replayRequest(r: Pick<RequestLog, "id" | "model" | "key">, model: string, key: string): { id: string; model: string; key: string } {
  return { id: r.id, model: model === r.model ? "" : model, key: key === r.key ? "" : key };
}
