import { Activity, Boxes, FlaskConical, KeyRound, LayoutDashboard, LogOut, type LucideIcon, ScrollText, Server } from "lucide-react";
import type { ReactNode } from "react";
import { signOut } from "@/lib/auth";
import { Link, useLocation } from "@/lib/router";
import { cn } from "@/lib/utils";
import { Button } from "./ui/button";

export const NAV: { to: string; label: string; icon: LucideIcon }[] = [
  { to: "/", label: "Overview", icon: LayoutDashboard },
  { to: "/live", label: "Live", icon: Activity },
  { to: "/providers", label: "Providers", icon: Server },
  { to: "/models", label: "Models", icon: Boxes },
  { to: "/keys", label: "API keys", icon: KeyRound },
  { to: "/logs", label: "Logs", icon: ScrollText },
  { to: "/playground", label: "Playground", icon: FlaskConical },
];

function isActive(pathname: string, to: string) {
  return to === "/" ? pathname === "/" : pathname === to || pathname.startsWith(`${to}/`);
}

function Logo() {
  return (
    <Link to="/" className="flex items-center gap-2 rounded-md font-semibold tracking-tight focus-visible:outline-none focus-visible:ring-2 focus-visible:ring-ring">
      <span className="flex size-7 items-center justify-center rounded-md bg-primary text-[13px] font-bold text-primary-foreground">
        ll
      </span>
      <span>llmgw</span>
    </Link>
  );
}

export function Layout({ children }: { children: ReactNode }) {
  const { pathname } = useLocation();
  return (
    <div className="min-h-dvh bg-muted/40 lg:flex">
      <a
        href="#main"
        className="sr-only focus:not-sr-only focus:fixed focus:left-2 focus:top-2 focus:z-50 focus:rounded-md focus:bg-background focus:px-3 focus:py-2 focus:shadow"
      >
        Skip to content
      </a>
      {/* Wide screens: a sidebar. */}
      <aside className="sticky top-0 z-30 hidden h-dvh w-56 shrink-0 flex-col border-r bg-background lg:flex">
        <div className="flex h-14 items-center px-5">
          <Logo />
        </div>
        <nav aria-label="Main" className="flex-1 px-3 py-2">
          <ul className="grid gap-0.5">
            {NAV.map(({ to, label, icon: Icon }) => (
              <li key={to}>
                <Link
                  to={to}
                  aria-current={isActive(pathname, to) ? "page" : undefined}
                  className={cn(
                    "flex items-center gap-2.5 rounded-md px-3 py-2 text-sm font-medium text-muted-foreground transition-colors hover:bg-accent hover:text-accent-foreground focus-visible:outline-none focus-visible:ring-2 focus-visible:ring-ring",
                    isActive(pathname, to) && "bg-accent text-accent-foreground",
                  )}
                >
                  <Icon className="size-4" aria-hidden />
                  {label}
                </Link>
              </li>
            ))}
          </ul>
        </nav>
        <div className="border-t p-3">
          <Button variant="ghost" className="w-full justify-start text-muted-foreground" onClick={() => signOut()}>
            <LogOut /> Sign out
          </Button>
        </div>
      </aside>
      {/* Narrow screens: a top bar with the same links. */}
      <header className="sticky top-0 z-30 border-b bg-background/95 backdrop-blur lg:hidden">
        <div className="flex h-12 items-center justify-between px-4">
          <Logo />
          <Button variant="ghost" size="sm" onClick={() => signOut()}>
            <LogOut /> Sign out
          </Button>
        </div>
        <nav aria-label="Main" className="-mb-px flex gap-1 overflow-x-auto px-2">
          {NAV.map(({ to, label, icon: Icon }) => (
            <Link
              key={to}
              to={to}
              aria-current={isActive(pathname, to) ? "page" : undefined}
              className={cn(
                "flex shrink-0 items-center gap-1.5 border-b-2 border-transparent px-3 py-2 text-sm font-medium text-muted-foreground focus-visible:outline-none focus-visible:ring-2 focus-visible:ring-ring",
                isActive(pathname, to) && "border-primary text-foreground",
              )}
            >
              <Icon className="size-4" aria-hidden />
              {label}
            </Link>
          ))}
        </nav>
      </header>
      <main id="main" className="min-w-0 flex-1">
        <div className="mx-auto w-full max-w-[1400px] px-4 py-6 sm:px-6 lg:px-8 lg:py-8">{children}</div>
      </main>
    </div>
  );
}
