// Broken rows: a stored provider, model or key that the control plane
// cannot decrypt or parse. It is left out of the gateway's configuration
// until it is fixed or deleted; the lists show it with the fields at fault.

export interface BrokenFieldLike {
  field: string;
  reason: string;
}

/** The badge text and its tooltip, or undefined for a healthy row. */
export function brokenSummary(broken: readonly BrokenFieldLike[] | undefined): { label: string; title: string } | undefined {
  if (!broken || broken.length === 0) return undefined;
  const fields = [...new Set(broken.map((b) => b.field))];
  return {
    label: `broken: ${fields.join(", ")}`,
    title: `${broken.map((b) => `${b.field}: ${b.reason}`).join("\n")}\n\nLeft out of the gateway's configuration until it is fixed (save every broken field again) or deleted.`,
  };
}

/** A target's weight as the lists show it: 0 drains the target. */
export function weightLabel(weight: number | undefined): string {
  const w = weight ?? 1;
  return w === 0 ? "drained" : `weight ${w}`;
}
