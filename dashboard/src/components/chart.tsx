// A small time-series chart drawn as SVG: lines (optionally filled), a
// y axis with round ticks, time labels, and a tooltip that follows the
// pointer. No chart library: the bundle stays small.

import { type PointerEvent, type RefObject, useEffect, useMemo, useRef, useState } from "react";
import { niceTicks } from "@/lib/chart";

export interface Series {
  name: string;
  /** A CSS colour. */
  color: string;
  /** One value per time; null leaves a gap. */
  values: (number | null)[];
}

const PAD = { left: 48, right: 10, top: 10, bottom: 24 };

function useWidth<T extends HTMLElement>(): [RefObject<T | null>, number] {
  const ref = useRef<T>(null);
  const [width, setWidth] = useState(0);
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    const ro = new ResizeObserver((entries) => setWidth(Math.floor(entries[0]?.contentRect.width ?? 0)));
    ro.observe(el);
    setWidth(Math.floor(el.getBoundingClientRect().width));
    return () => ro.disconnect();
  }, []);
  return [ref, width];
}

function timeLabel(t: number, spanMs: number): string {
  const d = new Date(t);
  const hm = `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
  if (spanMs <= 36 * 3_600_000) return hm;
  return `${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}${spanMs <= 4 * 86_400_000 ? ` ${hm}` : ""}`;
}

export function TimeChart({
  times,
  series,
  format,
  axisFormat = format,
  label,
  height = 170,
  area = true,
}: {
  times: number[];
  series: Series[];
  /** Values in the tooltip. */
  format: (v: number) => string;
  /** Values on the y axis (default: format). */
  axisFormat?: (v: number) => string;
  /** What the chart shows, for screen readers. */
  label: string;
  height?: number;
  area?: boolean;
}) {
  const [ref, width] = useWidth<HTMLDivElement>();
  const [hover, setHover] = useState<number | null>(null);
  const innerW = Math.max(0, width - PAD.left - PAD.right);
  const innerH = height - PAD.top - PAD.bottom;

  const { ticks, max } = useMemo(() => {
    let m = 0;
    for (const s of series) for (const v of s.values) if (v != null && v > m) m = v;
    return niceTicks(m, 4);
  }, [series]);

  const n = times.length;
  const t0 = times[0] ?? 0;
  const span = n > 1 ? (times[n - 1] ?? 0) - t0 : 0;
  const x = (i: number) => PAD.left + (n > 1 ? ((times[i]! - t0) / span) * innerW : innerW / 2);
  const y = (v: number) => PAD.top + innerH - (max > 0 ? (v / max) * innerH : 0);

  const paths = series.map((s) => {
    let line = "";
    let fill = "";
    const dots: [number, number][] = [];
    let run: [number, number][] = [];
    const flush = () => {
      if (!run.length) return;
      // A point with no neighbour draws no line: show it as a dot.
      if (run.length === 1) dots.push(run[0]!);
      line += run.map(([px, py], i) => `${i ? "L" : "M"}${px.toFixed(1)},${py.toFixed(1)}`).join("");
      const base = (PAD.top + innerH).toFixed(1);
      fill += `M${run[0]![0].toFixed(1)},${base}${run.map(([px, py]) => `L${px.toFixed(1)},${py.toFixed(1)}`).join("")}L${run[run.length - 1]![0].toFixed(1)},${base}Z`;
      run = [];
    };
    s.values.forEach((v, i) => {
      if (v == null) flush();
      else run.push([x(i), y(v)]);
    });
    flush();
    return { line, fill, dots };
  });

  const xTicks = useMemo(() => {
    if (n === 0) return [];
    const count = Math.max(2, Math.min(6, Math.floor(innerW / 90)));
    if (n <= count) return times.map((_, i) => i);
    const out: number[] = [];
    for (let k = 0; k < count; k++) out.push(Math.round((k * (n - 1)) / (count - 1)));
    return out;
  }, [n, innerW, times]);

  const onMove = (e: PointerEvent<SVGSVGElement>) => {
    if (n === 0) return;
    const rect = e.currentTarget.getBoundingClientRect();
    const px = e.clientX - rect.left;
    let best = 0;
    let bestD = Infinity;
    for (let i = 0; i < n; i++) {
      const d = Math.abs(x(i) - px);
      if (d < bestD) {
        bestD = d;
        best = i;
      }
    }
    setHover(best);
  };

  const hx = hover != null ? x(hover) : 0;
  return (
    <div ref={ref} className="relative w-full select-none" style={{ height }}>
      {width > 0 ? (
        <svg
          width={width}
          height={height}
          role="img"
          aria-label={label}
          onPointerMove={onMove}
          onPointerLeave={() => setHover(null)}
          className="overflow-visible"
        >
          {ticks.map((t) => (
            <g key={t}>
              <line
                x1={PAD.left}
                x2={PAD.left + innerW}
                y1={y(t)}
                y2={y(t)}
                className="stroke-border"
                strokeDasharray={t === 0 ? undefined : "3 3"}
              />
              <text x={PAD.left - 8} y={y(t)} dy="0.32em" textAnchor="end" className="fill-muted-foreground text-[10px] tabular-nums">
                {axisFormat(t)}
              </text>
            </g>
          ))}
          {xTicks.map((i) => (
            <text
              key={i}
              x={x(i)}
              y={height - 6}
              textAnchor={i === 0 && n > 1 ? "start" : i === n - 1 && n > 1 ? "end" : "middle"}
              className="fill-muted-foreground text-[10px] tabular-nums"
            >
              {timeLabel(times[i]!, span)}
            </text>
          ))}
          {series.map((s, k) => (
            <g key={s.name}>
              {area ? <path d={paths[k]!.fill} fill={s.color} fillOpacity={0.1} /> : null}
              <path d={paths[k]!.line} fill="none" stroke={s.color} strokeWidth={1.75} strokeLinejoin="round" strokeLinecap="round" />
              {paths[k]!.dots.map(([cx, cy]) => (
                <circle key={cx} cx={cx} cy={cy} r={2.5} fill={s.color} />
              ))}
            </g>
          ))}
          {hover != null ? (
            <g pointerEvents="none">
              <line x1={hx} x2={hx} y1={PAD.top} y2={PAD.top + innerH} className="stroke-muted-foreground/40" />
              {series.map((s) => {
                const v = s.values[hover];
                return v == null ? null : <circle key={s.name} cx={hx} cy={y(v)} r={3.5} fill={s.color} className="stroke-background" strokeWidth={1.5} />;
              })}
            </g>
          ) : null}
        </svg>
      ) : null}
      {hover != null ? (
        <div
          className="pointer-events-none absolute top-0 z-10 min-w-32 rounded-md border bg-popover px-2.5 py-1.5 text-xs shadow-md"
          style={{
            left: Math.min(Math.max(hx + 10, 0), Math.max(0, width - 150)),
          }}
        >
          <div className="mb-1 font-medium">{new Date(times[hover]!).toLocaleString()}</div>
          {series.map((s) => (
            <div key={s.name} className="flex items-center justify-between gap-3">
              <span className="flex items-center gap-1.5 text-muted-foreground">
                <span className="inline-block size-2 rounded-sm" style={{ background: s.color }} />
                {s.name}
              </span>
              <span className="font-mono tabular-nums">{s.values[hover] == null ? "–" : format(s.values[hover]!)}</span>
            </div>
          ))}
        </div>
      ) : null}
    </div>
  );
}

/** The colour swatches and names of a chart's series. */
export function Legend({ series }: { series: Pick<Series, "name" | "color">[] }) {
  return (
    <div className="flex flex-wrap gap-3 text-xs text-muted-foreground">
      {series.map((s) => (
        <span key={s.name} className="inline-flex items-center gap-1.5">
          <span className="inline-block size-2 rounded-sm" style={{ background: s.color }} />
          {s.name}
        </span>
      ))}
    </div>
  );
}
