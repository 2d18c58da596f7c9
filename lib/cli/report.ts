/**
 * The stress report: the result record (written as result.json), the summary table printed at the
 * end of a run, and a self-contained HTML page (report.html) with inline SVG charts. The page loads
 * nothing: no scripts, no styles, no fonts from the network, so a browser opens it offline.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LatencySummary } from '../index.js';
import type { WorkloadCounts } from './stress-member.js';

/** A key whose version differs between members; `null`: the member does not hold it. */
export interface DifferingKey {
  key: string;
  versions: Record<string, { crc: string; tsm: number } | null>;
}

/** One member's figures at the end of a run: its workload counts plus what the engine reported. */
export interface NodeResult extends WorkloadCounts {
  name: string;
  nodeId: string;
  evictions: number;
  retransmits: number;
  naksSent: number;
  duplicates: number;
  drops: number;
  dropped: Record<string, number>;
  unrecoverable: number;
  queueDropped: number;
  datagramsSent: number;
  datagramsReceived: number;
  /** Replication latency of first-hand ops applied here (ms). */
  latency: LatencySummary;
  /** [fraction, ms]: the latency distribution. */
  latencyQuantiles: Array<[number, number]>;
  /** ms from the end of the load until this member's cache matched the final state; null: never. */
  convergenceMs: number | null;
  entries: number;
  digest: string;
  cpuSeconds: number;
  rssBytes: number;
  /** Packets the kernel loss rule (`--loss`) dropped on their way to this member. */
  kernelDrops?: number;
  /**
   * Node ids of the processes of this member that were killed (`--kill`), oldest first. The row's
   * counters are those of the process running at the end, which is a new node.
   */
  previousNodeIds?: string[];
}

/** A member's cumulative counters at one moment (ms since the load started). */
export interface TimelinePoint {
  t: number;
  ops: number;
  retransmits: number;
  naksSent: number;
  queuedOps: number;
}

/** The transports a stress run can use. */
export type StressTransportName = 'multicast' | 'unicast' | 'nats';

/** What a {@link FaultEvent} records. */
export type FaultKind = 'loss' | 'partition' | 'heal' | 'kill' | 'restart' | 'membership';

/** One entry of the fault timeline. */
export interface FaultEvent {
  /** ms since the load started; negative: before it. */
  t: number;
  kind: FaultKind;
  /** The member concerned; absent when it is every member. */
  member?: string;
  detail: string;
}

/** The faults a run injected (`--netns`, `--loss`, `--partition`, `--kill`). */
export interface FaultSettings {
  /** Each member ran in a network namespace of its own. */
  netns: boolean;
  /** Kernel loss on every member, in percent (0: none). */
  lossPercent: number;
  /** How long one member was cut off; null: no partition. */
  partitionMs: number | null;
  /** One member was killed with SIGKILL mid-run and restarted. */
  kill: boolean;
}

/** Everything a run produced; result.json is this record. */
export interface StressResult {
  tool: 'mccache stress';
  formatVersion: 1;
  startedAt: string;
  verdict: 'PASS' | 'FAIL';
  /** One sentence: why PASS or FAIL. */
  reason: string;
  config: {
    nodes: number;
    keys: number;
    apertureMs: number;
    mix: 1 | 2 | 3;
    tantrum: number;
    ttl: number;
    max: number;
    size: number;
    pulse: number;
    /** 'default' means the stress default (5 s), not the library's. */
    pulseSource: 'flag' | 'env' | 'default';
    mode: 0 | 1;
    encrypted: boolean;
    durationMs: number;
    settleTimeoutMs: number;
    seed: number;
    cluster: string;
    transport: StressTransportName;
    /** How the members reached each other, in words: transport, endpoints, namespaces. */
    network: string;
    /** The multicast group (or the transport's main endpoint) and its port. */
    group: string;
    port: number;
    faults: FaultSettings;
  };
  timing: {
    /** How long the load actually ran. */
    loadMs: number;
    /** From the end of the load to the verdict. */
    settleMs: number;
    /** When the last member matched the final state (null if one never did). */
    convergedMs: number | null;
  };
  totals: {
    ops: number;
    opsPerSecond: number;
    targetOpsPerSecond: number;
    lookups: number;
    inserts: number;
    updates: number;
    deletes: number;
    evictions: number;
    retransmits: number;
    drops: number;
    /** Distinct keys held by any member at the end. */
    keysAtEnd: number;
  };
  nodes: NodeResult[];
  /** Up to 1000 differing keys (empty on PASS). */
  differingKeys: DifferingKey[];
  differingKeysTotal: number;
  /** Per member name, one point per second (and through the settling phase). */
  timeline: Record<string, TimelinePoint[]>;
  /** Faults injected and what the members saw of them, in time order (empty without faults). */
  faultEvents: FaultEvent[];
}

// ------------------------------------------------------------------------------------------------
// Text

const integer = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

function ms(value: number): string {
  return value < 10 ? value.toFixed(1) : integer.format(value);
}

function seconds(value: number | null): string {
  return value === null ? 'never' : `${(value / 1000).toFixed(2)} s`;
}

/** A plain text table; numbers right-aligned. */
export function textTable(header: string[], rows: string[][]): string {
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)),
  );
  const line = (cells: string[]) =>
    cells
      .map((cell, column) => (column === 0 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!)))
      .join('  ')
      .trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export const SUMMARY_COLUMNS = [
  'node',
  'ops',
  'inserts',
  'updates',
  'deletes',
  'lookups',
  'evictions',
  'retransmits',
  'drops',
  'p50 ms',
  'p99 ms',
  'converged',
];

function nodeLabel(node: NodeResult): string {
  return `${node.name} ${node.nodeId}${node.previousNodeIds?.length ? ' (restarted)' : ''}`;
}

function summaryRows(result: StressResult): string[][] {
  const rows = result.nodes.map((node) => [
    nodeLabel(node),
    integer.format(node.ops),
    integer.format(node.inserts),
    integer.format(node.updates),
    integer.format(node.deletes),
    integer.format(node.lookups),
    integer.format(node.evictions),
    integer.format(node.retransmits),
    integer.format(node.drops),
    ms(node.latency.p50),
    ms(node.latency.p99),
    seconds(node.convergenceMs),
  ]);
  const t = result.totals;
  rows.push([
    'total',
    integer.format(t.ops),
    integer.format(t.inserts),
    integer.format(t.updates),
    integer.format(t.deletes),
    integer.format(t.lookups),
    integer.format(t.evictions),
    integer.format(t.retransmits),
    integer.format(t.drops),
    '',
    '',
    seconds(result.timing.convergedMs),
  ]);
  return rows;
}

/** The faults of a run in one line, or undefined when it injected none. */
export function describeFaults(
  config: StressResult['config'],
  events: readonly FaultEvent[],
): string | undefined {
  const f = config.faults;
  const parts: string[] = [];
  if (f.lossPercent > 0) parts.push(`${f.lossPercent}% kernel loss on every member`);
  const partition = events.find((e) => e.kind === 'partition');
  const heal = events.find((e) => e.kind === 'heal');
  if (f.partitionMs !== null) {
    parts.push(
      `member ${partition?.member ?? '?'} cut off for ${formatMs(f.partitionMs)}` +
        (partition ? ` from ${secondsAt(partition.t)} s` : '') +
        (heal ? ` (healed at ${secondsAt(heal.t)} s)` : ' (never healed)'),
    );
  }
  if (f.kill) {
    const kill = events.find((e) => e.kind === 'kill');
    const restart = events.find((e) => e.kind === 'restart');
    parts.push(
      kill
        ? `member ${kill.member} killed with SIGKILL at ${secondsAt(kill.t)} s` +
            (restart ? ` and restarted at ${secondsAt(restart.t)} s` : ', not restarted')
        : 'a member to kill with SIGKILL (the load ended first)',
    );
  }
  if (parts.length === 0) return f.netns ? 'none (each member in its own network namespace)' : undefined;
  return parts.join('; ');
}

function secondsAt(ms: number): string {
  return (ms / 1000).toFixed(2);
}

/** The fault timeline as text lines, times in seconds since the load started. */
export function formatFaultTimeline(events: readonly FaultEvent[]): string[] {
  const width = Math.max(...events.map((e) => e.kind.length));
  return events.map(
    (e) =>
      `  ${secondsAt(e.t).padStart(7)}  ${e.kind.padEnd(width)}  ${e.member ? `${e.member}: ` : ''}${e.detail}`,
  );
}

/** The summary printed at the end of a run: settings, the table, and the verdict. */
export function formatSummary(result: StressResult): string {
  const c = result.config;
  const pulseNote =
    c.pulseSource === 'default'
      ? `${c.pulse} s (the stress default; the library's default is 300 s; set --pulse to change it)`
      : `${c.pulse} s (from ${c.pulseSource === 'flag' ? '--pulse' : 'MCCACHE_CACHE_PULSE'})`;
  const lines = [
    `mccache stress: ${c.nodes} members, ${formatMs(c.durationMs)} of load, aperture ${c.apertureMs} ms, ` +
      `${c.keys} keys, data mix ${c.mix}, tantrum ${c.tantrum}%${c.encrypted ? ', encrypted' : ''}`,
    `cache: ttl ${c.ttl} s, max ${c.max} entries, size ${c.size} bytes, mode ${c.mode}; anti-entropy pulse ${pulseNote}`,
    `network: ${c.network}; cluster "${c.cluster}", seed ${c.seed}`,
  ];
  const faults = describeFaults(c, result.faultEvents);
  if (faults !== undefined) lines.push(`faults: ${faults}`);
  lines.push(
    '',
    textTable(SUMMARY_COLUMNS, summaryRows(result)),
    '',
    `throughput ${integer.format(result.totals.opsPerSecond)} ops/s ` +
      `(target ${integer.format(result.totals.targetOpsPerSecond)} ops/s from the aperture); ` +
      `${integer.format(result.totals.keysAtEnd)} keys at the end`,
    `p50/p99: replication latency of ops written by another member and applied here, in ms; ` +
      `converged: time after the load stopped until the member held the final state`,
  );
  if (result.nodes.some((n) => n.previousNodeIds?.length)) {
    lines.push('(restarted): the row counts the new process only; the killed one is in the fault timeline');
  }
  if (result.faultEvents.length > 0) {
    lines.push(
      '',
      'fault timeline (seconds since the load started):',
      ...formatFaultTimeline(result.faultEvents),
    );
  }
  if (result.nodes.some((n) => n.kernelDrops !== undefined)) {
    lines.push(
      `packets dropped by the kernel loss rule: ${result.nodes
        .map((n) => `${n.name} ${integer.format(n.kernelDrops ?? 0)}`)
        .join(', ')}`,
    );
  }
  if (result.differingKeysTotal > 0) {
    lines.push('', `${result.differingKeysTotal} differing keys:`);
    for (const differing of result.differingKeys.slice(0, 20)) {
      const versions = Object.entries(differing.versions)
        .map(([member, v]) => `${member}=${v ? `${v.crc.slice(0, 8)}@${v.tsm}` : 'absent'}`)
        .join(' ');
      lines.push(`  ${differing.key}: ${versions}`);
    }
    if (result.differingKeysTotal > 20)
      lines.push(`  ... and ${result.differingKeysTotal - 20} more (result.json)`);
  }
  lines.push('', `${result.verdict}: ${result.reason}`);
  return lines.join('\n');
}

/** `60000` -> `60 s`, `600000` -> `10 min`. */
export function formatMs(value: number): string {
  if (value < 1000) return `${value} ms`;
  if (value < 120_000 || value % 60_000 !== 0) return `${Number((value / 1000).toFixed(1))} s`;
  return `${value / 60_000} min`;
}

// ------------------------------------------------------------------------------------------------
// HTML

function escapeHtml(text: string): string {
  return text
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

const PALETTE = [
  '#1f77b4',
  '#d62728',
  '#2ca02c',
  '#ff7f0e',
  '#9467bd',
  '#8c564b',
  '#e377c2',
  '#17becf',
  '#7f7f7f',
];

/** A chart series: points as [x, y]. */
export interface Series {
  name: string;
  points: Array<[number, number]>;
}

/** Round numbers for axis ticks: 1, 2 or 5 times a power of ten. */
function niceStep(span: number, count: number): number {
  const raw = span / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(raw || 1));
  for (const factor of [1, 2, 5, 10]) if (raw <= factor * power) return factor * power;
  return 10 * power;
}

function tickLabel(value: number): string {
  if (Math.abs(value) >= 1000) return integer.format(value);
  return String(Number(value.toPrecision(3)));
}

/** An SVG line chart with axes, ticks, a legend and optional vertical markers. */
export function lineChart(options: {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  markers?: Array<{ x: number; label: string }>;
  /** Logarithmic x axis (values below 0.1 are drawn at 0.1). */
  logX?: boolean;
  /** Draw steps instead of slopes between points. */
  step?: boolean;
  width?: number;
  height?: number;
}): string {
  const width = options.width ?? 760;
  const height = options.height ?? 300;
  const left = 64;
  const right = 150;
  const top = 34;
  const bottom = 44;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const all = options.series.flatMap((s) => s.points);
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  // A log axis shows a latency distribution whose body is near 1 ms and whose tail is far out.
  const log = options.logX === true;
  const floor = 0.1;
  const tx = (x: number) => (log ? Math.log10(Math.max(floor, x)) : x);
  const xMin = xs.length ? Math.min(...xs.map(tx)) : 0;
  const xMaxRaw = xs.length ? Math.max(...xs.map(tx)) : 1;
  const xMax = xMaxRaw > xMin ? xMaxRaw : xMin + 1;
  const yStep = niceStep(Math.max(...ys, 0) || 1, 5);
  const yMax = Math.max(yStep, Math.ceil((Math.max(...ys, 0) || 1) / yStep) * yStep);
  const sx = (x: number) => left + ((tx(x) - xMin) / (xMax - xMin)) * plotW;
  const sy = (y: number) => top + plotH - (y / yMax) * plotH;
  const parts: string[] = [];
  parts.push(
    `<svg viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" role="img" aria-label="${escapeHtml(options.title)}">`,
    `<text x="${left}" y="20" class="title">${escapeHtml(options.title)}</text>`,
  );
  for (let y = 0; y <= yMax + yStep / 2; y += yStep) {
    parts.push(
      `<line x1="${left}" x2="${left + plotW}" y1="${sy(y).toFixed(1)}" y2="${sy(y).toFixed(1)}" class="grid"/>`,
      `<text x="${left - 6}" y="${(sy(y) + 4).toFixed(1)}" text-anchor="end">${tickLabel(y)}</text>`,
    );
  }
  const xTicks: number[] = [];
  if (log) {
    for (let power = Math.floor(xMin); power <= Math.ceil(xMax); power++) {
      if (power >= xMin - 1e-9 && power <= xMax + 1e-9) xTicks.push(10 ** power);
    }
  } else {
    const xStep = niceStep(xMax - xMin, 8);
    for (let x = Math.ceil(xMin / xStep) * xStep; x <= xMax + xStep / 1000; x += xStep) xTicks.push(x);
  }
  for (const x of xTicks) {
    parts.push(
      `<line x1="${sx(x).toFixed(1)}" x2="${sx(x).toFixed(1)}" y1="${top + plotH}" y2="${top + plotH + 4}" class="axis"/>`,
      `<text x="${sx(x).toFixed(1)}" y="${top + plotH + 17}" text-anchor="middle">${tickLabel(x)}</text>`,
    );
  }
  parts.push(
    `<line x1="${left}" x2="${left}" y1="${top}" y2="${top + plotH}" class="axis"/>`,
    `<line x1="${left}" x2="${left + plotW}" y1="${top + plotH}" y2="${top + plotH}" class="axis"/>`,
    `<text x="${left + plotW / 2}" y="${height - 6}" text-anchor="middle">${escapeHtml(options.xLabel)}</text>`,
    `<text transform="translate(14 ${top + plotH / 2}) rotate(-90)" text-anchor="middle">${escapeHtml(options.yLabel)}</text>`,
  );
  for (const [i, marker] of (options.markers ?? []).entries()) {
    if (tx(marker.x) < xMin || tx(marker.x) > xMax) continue;
    // Labels of nearby markers (a heal and a kill at once) go on different lines.
    const labelY = top + 12 + (i % 3) * 13;
    parts.push(
      `<line x1="${sx(marker.x).toFixed(1)}" x2="${sx(marker.x).toFixed(1)}" y1="${top}" y2="${top + plotH}" class="marker"/>`,
      `<text x="${(sx(marker.x) - 4).toFixed(1)}" y="${labelY}" text-anchor="end" class="marker-label">${escapeHtml(marker.label)}</text>`,
    );
  }
  options.series.forEach((series, i) => {
    const colour = PALETTE[i % PALETTE.length]!;
    if (series.points.length > 0) {
      const d = series.points
        .map(([x, y], j) => {
          const point = `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`;
          if (j === 0) return `M${point}`;
          // A step: run level to the new x, then rise (a distribution is flat between samples).
          return options.step ? `H${sx(x).toFixed(1)} V${sy(y).toFixed(1)}` : `L${point}`;
        })
        .join(' ');
      parts.push(`<path d="${d}" fill="none" stroke="${colour}" stroke-width="1.6"/>`);
    }
    const ly = top + 8 + i * 18;
    parts.push(
      `<line x1="${left + plotW + 14}" x2="${left + plotW + 34}" y1="${ly}" y2="${ly}" stroke="${colour}" stroke-width="3"/>`,
      `<text x="${left + plotW + 40}" y="${ly + 4}">${escapeHtml(series.name)}</text>`,
    );
  });
  parts.push('</svg>');
  return parts.join('\n');
}

/** Per-second rates from cumulative points: [t seconds, delta per second]. */
export function ratesOf(
  points: TimelinePoint[],
  field: 'ops' | 'retransmits' | 'naksSent',
): Array<[number, number]> {
  const rates: Array<[number, number]> = [];
  for (let i = 1; i < points.length; i++) {
    const previous = points[i - 1]!;
    const current = points[i]!;
    const dt = (current.t - previous.t) / 1000;
    if (dt <= 0) continue;
    rates.push([current.t / 1000, Math.max(0, (current[field] - previous[field]) / dt)]);
  }
  return rates;
}

function sumSeries(series: Series[]): Array<[number, number]> {
  const byTime = new Map<number, number>();
  for (const s of series) {
    for (const [t, v] of s.points) {
      const bucket = Math.round(t);
      byTime.set(bucket, (byTime.get(bucket) ?? 0) + v);
    }
  }
  return [...byTime.entries()].sort((a, b) => a[0] - b[0]);
}

const STYLE = `
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1000px;color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px}
.pass{color:#fff;background:#2a7d2a;padding:2px 10px;border-radius:4px}
.fail{color:#fff;background:#b22222;padding:2px 10px;border-radius:4px}
table{border-collapse:collapse;margin:8px 0;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #ddd;padding:3px 9px;text-align:right}th:first-child,td:first-child{text-align:left}
tr.total td{font-weight:600;border-top:2px solid #999}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px}dt{color:#555}dd{margin:0}
svg{display:block;margin:8px 0 18px;font-size:11px;background:#fff}
svg .title{font-size:14px;font-weight:600}svg .grid{stroke:#eee}svg .axis{stroke:#888}
svg .marker{stroke:#999;stroke-dasharray:4 3}svg .marker-label{fill:#666}
code{background:#f4f4f4;padding:1px 4px;border-radius:3px}
`;

/** The HTML report: verdict, settings, summary table, charts and differing keys. No external resources. */
export function renderHtml(result: StressResult): string {
  const c = result.config;
  const loadSeconds = result.timing.loadMs / 1000;
  const names = result.nodes.map((n) => n.name);
  // Faults that change the network or the members, drawn where they happened.
  const faultMarkers = result.faultEvents
    .filter((e) => e.kind !== 'membership' && e.kind !== 'loss')
    .map((e) => ({ x: e.t / 1000, label: `${e.kind}${e.member ? ` ${e.member}` : ''}` }));
  const markers = [...faultMarkers, { x: loadSeconds, label: 'load stopped' }];
  // The time charts: one series per member, against seconds since the load started.
  const perNode = (pointsOf: (timeline: TimelinePoint[]) => Array<[number, number]>): Series[] =>
    names.map((name) => ({ name: `node ${name}`, points: pointsOf(result.timeline[name] ?? []) }));
  const timeChart = (title: string, yLabel: string, series: Series[], chartMarkers = markers) =>
    lineChart({ title, xLabel: 'seconds since the load started', yLabel, series, markers: chartMarkers });
  const throughput = perNode((timeline) => ratesOf(timeline, 'ops'));
  const throughputChart = timeChart('Throughput (workload ops per second)', 'ops/s', [
    ...throughput,
    { name: 'all members', points: sumSeries(throughput) },
  ]);
  const retransmitChart = timeChart(
    'Retransmissions per second (answers to NAKs)',
    'datagrams/s',
    perNode((timeline) => ratesOf(timeline, 'retransmits')),
  );
  const queueChart = timeChart(
    'Queued ops waiting to be sent',
    'ops',
    perNode((timeline) => timeline.map((p) => [p.t / 1000, p.queuedOps] as [number, number])),
    [{ x: loadSeconds, label: 'load stopped' }],
  );
  const latencyChart = lineChart({
    title: 'Replication latency distribution (cumulative)',
    xLabel: 'latency, ms, logarithmic (write on one member to apply on this one)',
    logX: true,
    step: true,
    yLabel: '% of ops at or below',
    series: result.nodes.map((node) => ({
      name: `node ${node.name}`,
      points: node.latencyQuantiles.filter(([q]) => q < 1).map(([q, v]) => [v, q * 100] as [number, number]),
    })),
  });
  const rows = summaryRows(result);
  const table = [
    '<table><thead><tr>',
    ...SUMMARY_COLUMNS.map((title) => `<th>${escapeHtml(title)}</th>`),
    '</tr></thead><tbody>',
    ...rows.map(
      (row, i) =>
        `<tr${i === rows.length - 1 ? ' class="total"' : ''}>${row.map((cell) => `<td>${escapeHtml(cell)}</td>`).join('')}</tr>`,
    ),
    '</tbody></table>',
  ].join('');
  const detailRows = result.nodes
    .map(
      (n) =>
        `<tr><td>${escapeHtml(n.name)}</td><td>${integer.format(n.naksSent)}</td><td>${integer.format(n.duplicates)}</td>` +
        `<td>${integer.format(n.unrecoverable)}</td><td>${integer.format(n.datagramsSent)}</td>` +
        `<td>${integer.format(n.datagramsReceived)}</td><td>${integer.format(n.skipped)}</td>` +
        `<td>${integer.format(n.behindOps)}</td><td>${ms(n.latency.max)}</td><td>${n.cpuSeconds.toFixed(1)}</td>` +
        `<td>${(n.rssBytes / 1048576).toFixed(0)}</td><td>${escapeHtml(
          Object.entries(n.dropped)
            .map(([reason, count]) => `${reason} ${count}`)
            .join(', '),
        )}</td></tr>`,
    )
    .join('');
  const differing =
    result.differingKeysTotal === 0
      ? '<p>None: every member holds the same version (crc and timestamp) of every key.</p>'
      : `<p>${result.differingKeysTotal} keys differ${result.differingKeysTotal > result.differingKeys.length ? ` (the first ${result.differingKeys.length} are listed)` : ''}.</p><table><thead><tr><th>key</th>${names.map((n) => `<th>${escapeHtml(n)}</th>`).join('')}</tr></thead><tbody>${result.differingKeys
          .map(
            (d) =>
              `<tr><td>${escapeHtml(d.key)}</td>${names
                .map((n) => {
                  const v = d.versions[n];
                  return `<td>${v ? escapeHtml(`${v.crc.slice(0, 8)} @ ${v.tsm}`) : 'absent'}</td>`;
                })
                .join('')}</tr>`,
          )
          .join('')}</tbody></table>`;
  const faults = describeFaults(c, result.faultEvents);
  const faultSection =
    result.faultEvents.length === 0
      ? ''
      : `<h2>Fault timeline</h2>
<table><thead><tr><th>seconds since the load started</th><th>event</th><th>member</th><th>what happened</th></tr></thead><tbody>${result.faultEvents
          .map(
            (e) =>
              `<tr><td>${secondsAt(e.t)}</td><td>${escapeHtml(e.kind)}</td><td>${escapeHtml(e.member ?? 'all')}</td><td style="text-align:left">${escapeHtml(e.detail)}</td></tr>`,
          )
          .join('')}</tbody></table>${
          result.nodes.some((n) => n.kernelDrops !== undefined)
            ? `<p>Packets dropped by the kernel loss rule: ${escapeHtml(
                result.nodes.map((n) => `${n.name} ${integer.format(n.kernelDrops ?? 0)}`).join(', '),
              )}.</p>`
            : ''
        }
`;
  const verdictClass = result.verdict === 'PASS' ? 'pass' : 'fail';
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mccache stress: ${result.verdict}</title>
<style>${STYLE}</style>
</head>
<body>
<h1>mccache stress report <span class="${verdictClass}">${result.verdict}</span></h1>
<p>${escapeHtml(result.reason)}</p>
<dl>
<dt>started</dt><dd>${escapeHtml(result.startedAt)}</dd>
<dt>members</dt><dd>${c.nodes}</dd>
<dt>load</dt><dd>${escapeHtml(formatMs(c.durationMs))}, aperture ${c.apertureMs} ms, ${c.keys} keys, data mix ${c.mix}, seed ${c.seed}</dd>
<dt>monkey tantrum</dt><dd>${c.tantrum}% of datagrams dropped on send and on receive</dd>
<dt>cache</dt><dd>ttl ${c.ttl} s, max ${c.max}, size ${c.size} bytes, mode ${c.mode}${c.encrypted ? ', encrypted (Fernet)' : ''}</dd>
<dt>anti-entropy pulse</dt><dd>${c.pulse} s${c.pulseSource === 'default' ? ' (stress default)' : ''}</dd>
<dt>transport</dt><dd>${escapeHtml(c.transport)}</dd>
<dt>network</dt><dd>${escapeHtml(c.network)}, cluster "${escapeHtml(c.cluster)}"</dd>
${faults === undefined ? '' : `<dt>faults</dt><dd>${escapeHtml(faults)}</dd>\n`}
<dt>throughput</dt><dd>${integer.format(result.totals.opsPerSecond)} ops/s (target ${integer.format(result.totals.targetOpsPerSecond)})</dd>
<dt>settled</dt><dd>${(result.timing.settleMs / 1000).toFixed(2)} s after the load stopped; last member converged ${seconds(result.timing.convergedMs)} after it</dd>
</dl>
<h2>Summary</h2>
${table}
<p>p50/p99: replication latency of ops written by another member and applied on this one (write
timestamps are whole milliseconds, so latencies are too: 1.1 means at most about 1 ms). Converged: time after the
load stopped until the member held the final state. Drops: datagrams the engine refused (not counting its own echoes
and duplicates); the monkey tantrum's drops happen below it and show up as NAKs and retransmissions.</p>
${faultSection}<h2>Charts</h2>
${throughputChart}
${latencyChart}
${retransmitChart}
${queueChart}
<h2>Delivery details</h2>
<table><thead><tr><th>node</th><th>NAKs sent</th><th>duplicates</th><th>unrecoverable</th><th>datagrams sent</th><th>datagrams received</th><th>skipped ops</th><th>ops behind schedule</th><th>latency max ms</th><th>cpu s</th><th>rss MiB</th><th>dropped by reason</th></tr></thead><tbody>${detailRows}</tbody></table>
<h2>Differing keys</h2>
${differing}
</body>
</html>
`;
}

/** Writes result.json and report.html into `folder` (created if needed); returns their paths. */
export function writeReport(folder: string, result: StressResult): { json: string; html: string } {
  mkdirSync(folder, { recursive: true });
  const json = join(folder, 'result.json');
  const html = join(folder, 'report.html');
  writeFileSync(json, `${JSON.stringify(result, null, 2)}\n`);
  writeFileSync(html, renderHtml(result));
  return { json, html };
}
