// The admin token lives in sessionStorage only: it is gone when the tab
// closes, sign-out removes it, and an UNAUTHENTICATED answer from the API
// removes it and returns to the sign-in page.

import { useSyncExternalStore } from "react";

export const TOKEN_KEY = "llmgw.adminToken";

const listeners = new Set<() => void>();
let reason = "";

function storage(): Storage | undefined {
  try {
    return window.sessionStorage;
  } catch {
    return undefined;
  }
}

export function getToken(): string {
  return storage()?.getItem(TOKEN_KEY) ?? "";
}

export function setToken(token: string): void {
  storage()?.setItem(TOKEN_KEY, token);
  reason = "";
  emit();
}

/** Forgets the token; `why` is shown on the sign-in page. */
export function signOut(why = ""): void {
  storage()?.removeItem(TOKEN_KEY);
  reason = why;
  emit();
}

/** Why the last sign-out happened, if it was not asked for. */
export function signOutReason(): string {
  return reason;
}

function emit() {
  for (const l of listeners) l();
}

function subscribe(l: () => void) {
  listeners.add(l);
  const onStorage = (e: StorageEvent) => {
    if (e.key === TOKEN_KEY || e.key === null) l();
  };
  window.addEventListener("storage", onStorage);
  return () => {
    listeners.delete(l);
    window.removeEventListener("storage", onStorage);
  };
}

/** The current token ("" when signed out), re-rendering on change. */
export function useToken(): string {
  return useSyncExternalStore(subscribe, getToken, () => "");
}
