import { Bot, Brain, Image, Settings2, User, Wrench } from "lucide-react";
import { Component, type ReactNode } from "react";
import type { Conversation, Message, Part } from "@/lib/conversation";
import { prettyBody } from "@/lib/sse";
import { cn } from "@/lib/utils";
import { Badge } from "./ui/badge";

/** Renders `fallback` instead of children that throw while rendering. */
export class Fallback extends Component<{ fallback: ReactNode; children: ReactNode }, { failed: boolean }> {
  state = { failed: false };
  static getDerivedStateFromError() {
    return { failed: true };
  }
  render() {
    return this.state.failed ? this.props.fallback : this.props.children;
  }
}

const ROLE_STYLE: Record<string, { icon: typeof User; label: string; className: string }> = {
  system: { icon: Settings2, label: "System", className: "border-slate-200 bg-slate-50" },
  developer: { icon: Settings2, label: "Developer", className: "border-slate-200 bg-slate-50" },
  user: { icon: User, label: "User", className: "border-sky-200 bg-sky-50/60" },
  assistant: { icon: Bot, label: "Assistant", className: "border-emerald-200 bg-emerald-50/50" },
  tool: { icon: Wrench, label: "Tool", className: "border-amber-200 bg-amber-50/50" },
};

/** The request and the response as messages; `responseOnly` leaves the request out. */
export function ConversationView({ c, responseOnly = false }: { c: Conversation; responseOnly?: boolean }) {
  const req = c.request;
  const res = c.response;
  return (
    <div className="grid gap-3" data-testid="conversation">
      {responseOnly ? null : req ? (
        <>
          {req.partial ? <Note>The request body was truncated when it was logged: the conversation stops where it was cut.</Note> : null}
          {req.system.map((s, i) => (
            <Bubble key={`s${i}`} role="system" label="System prompt">
              <Text text={s} />
            </Bubble>
          ))}
          {req.tools.length ? (
            <p className="text-xs text-muted-foreground">
              Tools offered: <span className="font-mono">{req.tools.filter(Boolean).join(", ")}</span>
            </p>
          ) : null}
          {req.messages.map((m, i) => (
            <MessageView key={`q${i}`} m={m} />
          ))}
        </>
      ) : (
        <Note>The request body was not logged, or cannot be read as a conversation (see the raw view).</Note>
      )}
      {responseOnly ? null : (
        <div className="flex items-center gap-3 py-1 text-xs font-medium uppercase tracking-wide text-muted-foreground">
          <span className="h-px flex-1 bg-border" /> Response <span className="h-px flex-1 bg-border" />
        </div>
      )}
      {res ? (
        <>
          {res.messages.map((m, i) => (
            <MessageView key={`a${i}`} m={m} testId="response-message" />
          ))}
          {res.error ? (
            <p className="rounded-lg border border-red-200 bg-red-50 px-3 py-2 text-sm text-red-800" data-testid="conversation-error">
              Error: {res.error}
            </p>
          ) : null}
          <p className="text-xs text-muted-foreground">
            {res.stopReason ? (
              <>
                Stop reason: <span className="font-mono">{res.stopReason}</span>.{" "}
              </>
            ) : null}
            {res.partial ? "The response is incomplete: the stream broke or was cut, or the body was truncated when it was logged." : null}
          </p>
        </>
      ) : (
        <Note>The response body was not logged, or cannot be read as a conversation (see the raw view).</Note>
      )}
    </div>
  );
}

function Note({ children }: { children: ReactNode }) {
  return <p className="rounded-md border border-dashed px-3 py-2 text-xs text-muted-foreground">{children}</p>;
}

function Bubble({ role, label, children, testId }: { role: string; label?: string; children: ReactNode; testId?: string }) {
  const style = ROLE_STYLE[role] ?? { icon: User, label: role, className: "border-border bg-muted/40" };
  const Icon = style.icon;
  return (
    <section className={cn("rounded-lg border px-3 py-2.5", style.className)} aria-label={label ?? style.label} data-role={role} data-testid={testId}>
      <div className="mb-1.5 flex items-center gap-1.5 text-xs font-semibold text-muted-foreground">
        <Icon className="size-3.5" aria-hidden />
        {label ?? style.label}
      </div>
      <div className="grid gap-2">{children}</div>
    </section>
  );
}

function MessageView({ m, testId }: { m: Message; testId?: string }) {
  return (
    <Bubble role={m.role} testId={testId}>
      {m.parts.length === 0 ? <span className="text-xs text-muted-foreground">(empty)</span> : m.parts.map((p, i) => <PartView key={i} p={p} />)}
    </Bubble>
  );
}

function Text({ text }: { text: string }) {
  return <div className="whitespace-pre-wrap break-words text-sm leading-relaxed">{text}</div>;
}

function Code({ text }: { text: string }) {
  return <pre className="max-h-64 overflow-auto whitespace-pre-wrap break-words rounded-md border bg-background/70 p-2 font-mono text-xs">{prettyBody(text).text}</pre>;
}

function PartView({ p }: { p: Part }) {
  switch (p.kind) {
    case "text":
      return <Text text={p.text} />;
    case "thinking":
      return (
        <details className="rounded-md border border-violet-200 bg-violet-50/60 px-2 py-1.5" open={!p.redacted} data-testid="thinking">
          <summary className="flex cursor-pointer items-center gap-1.5 text-xs font-medium text-violet-800">
            <Brain className="size-3.5" aria-hidden /> Thinking
          </summary>
          <div className="mt-1 whitespace-pre-wrap break-words text-sm text-violet-950/80">{p.text}</div>
        </details>
      );
    case "tool_call":
      return (
        <div className="grid gap-1" data-testid="tool-call">
          <div className="flex flex-wrap items-center gap-2 text-xs">
            <Badge variant="warning">
              <Wrench className="mr-1 size-3" aria-hidden /> call
            </Badge>
            <span className="font-mono font-semibold">{p.name || "(unnamed)"}</span>
            {p.id ? <span className="font-mono text-muted-foreground">{p.id}</span> : null}
          </div>
          <Code text={p.arguments || "{}"} />
        </div>
      );
    case "tool_result":
      return (
        <div className="grid gap-1" data-testid="tool-result">
          <div className="flex flex-wrap items-center gap-2 text-xs">
            <Badge variant={p.isError ? "destructive" : "secondary"}>{p.isError ? "error result" : "result"}</Badge>
            {p.name ? <span className="font-mono font-semibold">{p.name}</span> : null}
            {p.id ? <span className="font-mono text-muted-foreground">for {p.id}</span> : null}
          </div>
          <Code text={p.content} />
        </div>
      );
    case "media":
      return (
        <div className="flex w-fit items-center gap-2 rounded-md border border-dashed bg-background/60 px-2 py-1 text-xs text-muted-foreground" data-testid="media">
          <Image className="size-3.5" aria-hidden /> {p.label}
        </div>
      );
    case "other":
      return (
        <div className="grid gap-1">
          <span className="text-xs text-muted-foreground">{p.label}</span>
          <Code text={p.text} />
        </div>
      );
  }
}
