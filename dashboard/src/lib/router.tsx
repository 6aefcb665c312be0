// A small History API router: the control plane answers every app path with
// index.html, and the page picks what to show from the location.

import { type AnchorHTMLAttributes, type MouseEvent, useSyncExternalStore } from "react";

const NAV_EVENT = "llmgw:navigate";

function subscribe(l: () => void) {
  window.addEventListener("popstate", l);
  window.addEventListener(NAV_EVENT, l);
  return () => {
    window.removeEventListener("popstate", l);
    window.removeEventListener(NAV_EVENT, l);
  };
}

const href = () => window.location.pathname + window.location.search;

export interface Location {
  pathname: string;
  search: string;
}

let cached: Location = { pathname: "/", search: "" };
let cachedHref = "";

function snapshot(): Location {
  const h = href();
  if (h !== cachedHref) {
    cachedHref = h;
    cached = { pathname: window.location.pathname, search: window.location.search };
  }
  return cached;
}

export function useLocation(): Location {
  return useSyncExternalStore(subscribe, snapshot, snapshot);
}

export function navigate(to: string, opts: { replace?: boolean } = {}): void {
  if (to === href()) return;
  if (opts.replace) window.history.replaceState(null, "", to);
  else window.history.pushState(null, "", to);
  window.dispatchEvent(new Event(NAV_EVENT));
}

type LinkProps = AnchorHTMLAttributes<HTMLAnchorElement> & { to: string; replace?: boolean };

/** An anchor that navigates in the page; modified clicks open as usual. */
export function Link({ to, replace, onClick, ...rest }: LinkProps) {
  const handle = (e: MouseEvent<HTMLAnchorElement>) => {
    onClick?.(e);
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(to, { replace });
  };
  return <a href={to} onClick={handle} {...rest} />;
}
