// A last line of defence: the data plane masks credentials before it logs
// them, and the dashboard masks them again in case a value arrives whole.

const SENSITIVE = new Set(["authorization", "x-api-key", "api-key", "proxy-authorization", "cookie", "set-cookie"]);

/** "****" and at most the last four characters, like the API's own masks. */
export function mask(value: string): string {
  if (/^\*{4}/.test(value)) return value;
  const tail = value.length >= 12 ? value.slice(-4) : "";
  return `****${tail}`;
}

/** Headers sorted by name, credential values masked. */
export function redactHeaders(headers: Record<string, string>): [string, string][] {
  return Object.entries(headers)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => [k, SENSITIVE.has(k.toLowerCase()) ? mask(v) : v]);
}
