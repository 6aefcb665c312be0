// Default request parameters (per provider and per target) as the forms
// edit them: one JSON object, e.g. {"temperature": 0.2}. The API carries
// them as name -> JSON value text.

/** The API's map as the JSON object text a form shows ("" for none). */
export function paramsText(params: Record<string, string>): string {
  const names = Object.keys(params).sort();
  if (names.length === 0) return "";
  const object: Record<string, unknown> = {};
  for (const n of names) {
    try {
      object[n] = JSON.parse(params[n]!);
    } catch {
      object[n] = params[n];
    }
  }
  return JSON.stringify(object);
}

/** A form's text as the API's map; throws with a message saying why not. */
export function paramsOf(text: string, where = ""): Record<string, string> {
  const t = text.trim();
  if (!t) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(t);
  } catch (e) {
    throw new Error(`${where}default parameters are not valid JSON (${(e as Error).message}).`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new Error(`${where}default parameters must be a JSON object, e.g. {"temperature": 0.2}.`);
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(parsed as Record<string, unknown>)) out[k] = JSON.stringify(v);
  return out;
}

/** One line for tables: `temperature=0.2 top_p=0.9`. */
export function paramsSummary(params: Record<string, string>): string {
  return Object.keys(params)
    .sort()
    .map((n) => `${n}=${params[n]}`)
    .join(" ");
}
