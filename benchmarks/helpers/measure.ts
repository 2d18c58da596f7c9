/**
 * Shared by the multi-process benchmarks: a clock every process on the host agrees on, latency
 * summaries, a pacer, fresh multicast groups and table printing.
 */
import { randomInt } from 'node:crypto';
import { cpus, loadavg } from 'node:os';

/**
 * Milliseconds of CLOCK_MONOTONIC (process.hrtime), with ns resolution. On Linux this clock is
 * system-wide, so a stamp taken in one process and read in another on the same host compares
 * exactly; performance.now() would not (it counts from each process's own start).
 */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/** Latency summary in microseconds. */
export interface LatencyFigures {
  count: number;
  p50: number;
  p99: number;
  max: number;
  mean: number;
}

/** Nearest-rank percentiles of `samplesMs` (milliseconds), reported in microseconds. */
export function summarize(samplesMs: readonly number[]): LatencyFigures {
  if (samplesMs.length === 0)
    return { count: 0, p50: Number.NaN, p99: Number.NaN, max: Number.NaN, mean: Number.NaN };
  const sorted = Float64Array.from(samplesMs).sort();
  const rank = (fraction: number) =>
    sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * fraction) - 1)]!;
  let sum = 0;
  for (const sample of sorted) sum += sample;
  return {
    count: sorted.length,
    p50: rank(0.5) * 1000,
    p99: rank(0.99) * 1000,
    max: sorted[sorted.length - 1]! * 1000,
    mean: (sum / sorted.length) * 1000,
  };
}

/**
 * Calls `send(i)` `rate` times per second for `durationMs`, in 1 ms timer ticks: each tick sends what
 * is due since the start, so the average rate is exact while the process never spins (a busy loop
 * would steal a core from the other members on a 2-core machine). Resolves with the number sent.
 */
export function paced(rate: number, durationMs: number, send: (index: number) => void): Promise<number> {
  return new Promise((resolve) => {
    const start = monotonicMs();
    let sent = 0;
    const total = Math.floor((rate * durationMs) / 1000);
    const tick = () => {
      const due = Math.min(total, Math.floor(((monotonicMs() - start) * rate) / 1000));
      while (sent < due) send(sent++);
      if (sent >= total) resolve(sent);
      else setTimeout(tick, 1);
    };
    setTimeout(tick, 1);
  });
}

/** A fresh administratively scoped group and port, so that runs never hear each other. */
export function randomGroup(): { group: string; port: number } {
  return {
    group: `239.${randomInt(1, 255)}.${randomInt(0, 256)}.${randomInt(1, 255)}`,
    port: randomInt(20_000, 60_000),
  };
}

/** A string value of exactly `bytes` ASCII characters starting with a send stamp. */
export function stampedValue(stampMs: number, padding: string): string {
  const stamp = stampMs.toFixed(6);
  return stamp + padding.slice(stamp.length);
}

/** The stamp that {@link stampedValue} put in front of a value. */
export function stampOf(value: unknown): number {
  if (typeof value !== 'string') return Number.NaN;
  const end = value.indexOf('x');
  return Number(end < 0 ? value : value.slice(0, end));
}

/** Padding of `bytes` characters for {@link stampedValue}. */
export function padding(bytes: number): string {
  return 'x'.repeat(bytes);
}

/**
 * Prints rows as an aligned Markdown table (first column left-aligned, the others right-aligned), so
 * that a run's output can be pasted into benchmarks/README.md as it is.
 */
export function printTable(title: string, header: string[], rows: (string | number)[][]): void {
  const cells = [header, ...rows.map((row) => row.map((cell) => String(cell)))];
  const widths = header.map((_, column) => Math.max(3, ...cells.map((row) => (row[column] ?? '').length)));
  const line = (row: string[]) =>
    `| ${row.map((cell, column) => (column === 0 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!))).join(' | ')} |`;
  const rule = `| ${widths.map((width, column) => (column === 0 ? '-'.repeat(width) : `${'-'.repeat(width - 1)}:`)).join(' | ')} |`;
  console.log(`\n${title}\n`);
  console.log(line(header));
  console.log(rule);
  for (const row of cells.slice(1)) console.log(line(row));
}

/** Formats a rate: 123456 -> "123.5k". */
export function rate(perSecond: number): string {
  if (!Number.isFinite(perSecond)) return '-';
  return perSecond >= 1e6 ? `${(perSecond / 1e6).toFixed(2)}M` : `${(perSecond / 1e3).toFixed(1)}k`;
}

/** Formats a duration given in microseconds: ns below 1 us, ms from 10 ms. */
export function micros(us: number): string {
  if (!Number.isFinite(us)) return '-';
  if (us < 1) return `${(us * 1000).toFixed(0)} ns`;
  if (us < 10) return `${us.toFixed(2)} us`;
  return us >= 10_000 ? `${(us / 1000).toFixed(1)} ms` : `${us.toFixed(0)} us`;
}

/** Formats a ratio: 2.345 -> "2.35x". */
export function ratio(value: number): string {
  return Number.isFinite(value) ? `${value.toFixed(2)}x` : '-';
}

/** One line saying when and where a run happened, and how busy the machine was. */
export function describeMachine(): string {
  const cores = cpus();
  const load = loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
  return `${new Date().toISOString()}, Node ${process.version}, ${cores.length} x ${cores[0]?.model ?? 'unknown CPU'}, load average ${load}`;
}
