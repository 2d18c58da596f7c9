import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import {
  formatSummary,
  lineChart,
  type NodeResult,
  ratesOf,
  renderHtml,
  type StressResult,
  textTable,
  writeReport,
} from '../lib/cli/report.js';

function node(name: string, overrides: Partial<NodeResult> = {}): NodeResult {
  return {
    name,
    nodeId: `0000000${name.charCodeAt(0) - 64}`,
    ops: 1000,
    lookups: 550,
    inserts: 150,
    updates: 180,
    deletes: 40,
    skipped: 80,
    behindOps: 0,
    errors: 0,
    evictions: 12,
    retransmits: 33,
    naksSent: 21,
    duplicates: 4,
    drops: 0,
    dropped: { self: 500, duplicate: 4 },
    unrecoverable: 0,
    queueDropped: 0,
    datagramsSent: 600,
    datagramsReceived: 1200,
    latency: { count: 900, p50: 1.1, p99: 42, max: 80 },
    latencyQuantiles: [
      [0.5, 1.1],
      [0.9, 8],
      [0.99, 42],
      [1, 80],
    ],
    convergenceMs: 250,
    entries: 180,
    digest: 'feedfacecafebeef',
    cpuSeconds: 3.2,
    rssBytes: 90 * 1048576,
    ...overrides,
  };
}

function result(overrides: Partial<StressResult> = {}): StressResult {
  const nodes = [node('A'), node('B', { convergenceMs: 400 })];
  return {
    tool: 'mccache stress',
    formatVersion: 1,
    startedAt: '2025-01-01T00:00:00.000Z',
    verdict: 'PASS',
    reason: 'all 2 members hold the same 180 keys',
    config: {
      nodes: 2,
      keys: 200,
      apertureMs: 10,
      mix: 1,
      tantrum: 10,
      ttl: 3600,
      max: 256,
      size: 8388608,
      pulse: 5,
      pulseSource: 'default',
      mode: 1,
      encrypted: false,
      durationMs: 60_000,
      settleTimeoutMs: 30_000,
      seed: 42,
      cluster: 'mccache',
      transport: 'multicast',
      network: 'multicast group 239.1.2.3:40000 on 127.0.0.1',
      group: '239.1.2.3',
      port: 40000,
      faults: { netns: false, lossPercent: 0, partitionMs: null, kill: false },
    },
    timing: { loadMs: 60_010, settleMs: 1300, convergedMs: 400 },
    totals: {
      ops: 2000,
      opsPerSecond: 33,
      targetOpsPerSecond: 200,
      lookups: 1100,
      inserts: 300,
      updates: 360,
      deletes: 80,
      evictions: 24,
      retransmits: 66,
      drops: 0,
      keysAtEnd: 180,
    },
    nodes,
    differingKeys: [],
    differingKeysTotal: 0,
    timeline: {
      A: [
        { t: 0, ops: 0, retransmits: 0, naksSent: 0, queuedOps: 0 },
        { t: 1000, ops: 500, retransmits: 10, naksSent: 5, queuedOps: 3 },
        { t: 2000, ops: 1000, retransmits: 33, naksSent: 21, queuedOps: 0 },
      ],
      B: [
        { t: 0, ops: 0, retransmits: 0, naksSent: 0, queuedOps: 0 },
        { t: 1000, ops: 400, retransmits: 12, naksSent: 4, queuedOps: 1 },
      ],
    },
    faultEvents: [],
    ...overrides,
  };
}

function failing(differing: number): StressResult {
  const differingKeys = Array.from({ length: differing }, (_, i) => ({
    key: `K000-${String(i).padStart(3, '0')}`,
    versions: {
      A: { crc: 'aaaaaaaaaaaaaaaa', tsm: 100 + i },
      B: i % 2 === 0 ? null : { crc: 'bbbbbbbbbbbbbbbb', tsm: 99 },
    },
  }));
  return result({
    verdict: 'FAIL',
    reason: `${differing} of 180 keys differ between members 30 s after the load stopped`,
    differingKeys,
    differingKeysTotal: differing,
    nodes: [node('A'), node('B', { convergenceMs: null, digest: '0123456789abcdef' })],
    timing: { loadMs: 60_010, settleMs: 30_100, convergedMs: null },
  });
}

describe('the summary printed after a run', () => {
  test('a text table left-aligns the first column and right-aligns the others', () => {
    assert.equal(
      textTable(
        ['node', 'ops'],
        [
          ['A', '5'],
          ['total', '1,234'],
        ],
      ),
      'node     ops\n-----  -----\nA          5\ntotal  1,234',
    );
  });

  test('has one row per member and a total, with the columns the issue asks for', () => {
    const lines = formatSummary(result()).split('\n');
    const header = lines.find((line) => line.startsWith('node'))!;
    assert.deepEqual(header.split(/\s{2,}/), [
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
    ]);
    const rowA = lines.find((line) => line.startsWith('A 00000001'))!;
    assert.deepEqual(rowA.split(/\s{2,}/), [
      'A 00000001',
      '1,000',
      '150',
      '180',
      '40',
      '550',
      '12',
      '33',
      '0',
      '1.1',
      '42',
      '0.25 s',
    ]);
    const total = lines.find((line) => line.startsWith('total'))!;
    assert.deepEqual(total.split(/\s{2,}/), [
      'total',
      '2,000',
      '300',
      '360',
      '80',
      '1,100',
      '24',
      '66',
      '0',
      '0.40 s',
    ]);
    assert.equal(lines.at(-1), 'PASS: all 2 members hold the same 180 keys');
  });

  test('says which pulse was used and where it came from', () => {
    assert.match(
      formatSummary(result()),
      /anti-entropy pulse 5 s \(the stress default; the library's default is 300 s/,
    );
    const flagged = result();
    flagged.config = { ...flagged.config, pulse: 2, pulseSource: 'flag' };
    assert.match(formatSummary(flagged), /anti-entropy pulse 2 s \(from --pulse\)/);
    flagged.config = { ...flagged.config, pulseSource: 'env' };
    assert.match(formatSummary(flagged), /\(from MCCACHE_CACHE_PULSE\)/);
  });

  test('on FAIL names the differing keys with each member’s version, 20 at most', () => {
    const text = formatSummary(failing(23));
    assert.match(text, /23 differing keys:/);
    assert.match(text, /^ {2}K000-000: A=aaaaaaaa@100 B=absent$/m);
    assert.match(text, /^ {2}K000-001: A=aaaaaaaa@101 B=bbbbbbbb@99$/m);
    assert.match(text, /^ {2}K000-019: /m);
    assert.doesNotMatch(text, /K000-020/);
    assert.match(text, /\.\.\. and 3 more \(result\.json\)/);
    assert.match(text, /never/, 'a member that never converged says so');
    assert.match(text.split('\n').at(-1)!, /^FAIL: 23 of 180 keys differ/);
  });
});

/** A run across namespaces with loss, a partition of B and a kill of A. */
function faulty(): StressResult {
  const base = result();
  return result({
    config: {
      ...base.config,
      transport: 'unicast',
      network: 'unicast peers 10.1.2.1:4000, 10.1.2.2:4000 across 2 network namespaces (10.1.2.0/24)',
      faults: { netns: true, lossPercent: 10, partitionMs: 10_000, kill: true },
    },
    nodes: [
      node('A', { nodeId: '0000000a', previousNodeIds: ['00000001'], kernelDrops: 1234 }),
      node('B', { convergenceMs: 400, kernelDrops: 987 }),
    ],
    // Long enough for the charts to reach the faults.
    timeline: Object.fromEntries(
      ['A', 'B'].map((name) => [
        name,
        Array.from({ length: 41 }, (_, i) => ({
          t: i * 1000,
          ops: i * 30,
          retransmits: i,
          naksSent: i,
          queuedOps: 0,
        })),
      ]),
    ),
    faultEvents: [
      { t: -3, kind: 'loss', detail: 'every member drops 10%' },
      { t: 20_000, kind: 'partition', member: 'B', detail: 'cut off' },
      { t: 25_400, kind: 'membership', member: 'B', detail: 'sees 0 other members (was 1)' },
      { t: 30_000, kind: 'heal', member: 'B', detail: 'link up' },
      { t: 30_010, kind: 'kill', member: 'A', detail: 'kill -9 of node 00000001' },
      { t: 31_500, kind: 'restart', member: 'A', detail: 'back as node 0000000a' },
    ],
  });
}

describe('transport and faults in the report', () => {
  test('the summary names the transport and its network, not always a group on 127.0.0.1', () => {
    const plain = formatSummary(result());
    assert.match(
      plain,
      /^network: multicast group 239\.1\.2\.3:40000 on 127\.0\.0\.1; cluster "mccache", seed 42$/m,
    );
    assert.doesNotMatch(plain, /^faults:/m, 'a run without faults has no faults line');
    assert.doesNotMatch(plain, /fault timeline/);
    const text = formatSummary(faulty());
    assert.match(
      text,
      /^network: unicast peers 10\.1\.2\.1:4000, 10\.1\.2\.2:4000 across 2 network namespaces/m,
    );
    assert.doesNotMatch(text, /on 127\.0\.0\.1/);
  });

  test('the summary lists the faults, their timeline, kernel drops and the restarted member', () => {
    const text = formatSummary(faulty());
    assert.match(
      text,
      /^faults: 10% kernel loss on every member; member B cut off for 10 s from 20\.00 s \(healed at 30\.00 s\); member A killed with SIGKILL at 30\.01 s and restarted at 31\.50 s$/m,
    );
    const lines = text.split('\n');
    const start = lines.indexOf('fault timeline (seconds since the load started):');
    assert.ok(start > 0, 'a timeline section');
    assert.deepEqual(
      lines.slice(start + 1, start + 7).map((line) => line.trim().split(/\s{2,}/)),
      [
        ['-0.00', 'loss', 'every member drops 10%'],
        ['20.00', 'partition', 'B: cut off'],
        ['25.40', 'membership', 'B: sees 0 other members (was 1)'],
        ['30.00', 'heal', 'B: link up'],
        ['30.01', 'kill', 'A: kill -9 of node 00000001'],
        ['31.50', 'restart', 'A: back as node 0000000a'],
      ],
    );
    assert.match(text, /^packets dropped by the kernel loss rule: A 1,234, B 987$/m);
    const rowA = lines.find((line) => line.startsWith('A '))!;
    assert.equal(rowA.split(/\s{2,}/)[0], 'A 0000000a (restarted)');
    assert.match(text, /^\(restarted\): the row counts the new process only/m);
    // The table still ends with the verdict.
    assert.equal(lines.at(-1), 'PASS: all 2 members hold the same 180 keys');
  });

  test('namespaces without injected faults say so', () => {
    const quiet = result();
    quiet.config = {
      ...quiet.config,
      faults: { netns: true, lossPercent: 0, partitionMs: null, kill: false },
    };
    assert.match(formatSummary(quiet), /^faults: none \(each member in its own network namespace\)$/m);
  });

  test('the HTML shows the transport, the faults and the timeline, and marks faults on the charts', () => {
    const html = renderHtml(faulty());
    assert.match(html, /<dt>transport<\/dt><dd>unicast<\/dd>/);
    assert.match(html, /<dt>network<\/dt><dd>unicast peers 10\.1\.2\.1:4000/);
    assert.match(html, /<dt>faults<\/dt><dd>10% kernel loss on every member; member B cut off/);
    assert.match(html, /<h2>Fault timeline<\/h2>/);
    assert.match(html, /<td>30\.01<\/td><td>kill<\/td><td>A<\/td>/);
    assert.match(html, /<td>-0\.00<\/td><td>loss<\/td><td>all<\/td>/);
    assert.match(html, /Packets dropped by the kernel loss rule: A 1,234, B 987/);
    for (const label of ['partition B', 'heal B', 'kill A', 'restart A']) {
      assert.ok(html.includes(`class="marker-label">${label}</text>`), `chart marker ${label}`);
    }
    assert.doesNotMatch(html, /class="marker-label">membership/, 'membership changes are not drawn');
    const plain = renderHtml(result());
    assert.doesNotMatch(plain, /Fault timeline|<dt>faults/);
    assert.match(plain, /<dt>transport<\/dt><dd>multicast<\/dd>/);
  });
});

describe('the HTML report', () => {
  test('is self-contained: inline SVG and CSS, nothing fetched', () => {
    const html = renderHtml(result());
    assert.match(html, /^<!doctype html>/);
    assert.equal((html.match(/<svg /g) ?? []).length, 4, 'throughput, latency, retransmits, queue');
    for (const title of ['Throughput', 'Replication latency distribution', 'Retransmissions per second']) {
      assert.ok(html.includes(title), title);
    }
    assert.doesNotMatch(html, /<script|<link|<img|<iframe|@import|url\(|https?:\/\//i);
    assert.match(html, /<style>/);
    assert.match(html, /class="pass">PASS</);
    assert.match(html, /None: every member holds the same version/);
  });

  test('lists differing keys on FAIL and escapes text from the run', () => {
    const bad = failing(3);
    bad.config = { ...bad.config, cluster: '<img src=x onerror=alert(1)>' };
    const html = renderHtml(bad);
    assert.match(html, /class="fail">FAIL</);
    assert.match(html, /<td>K000-000<\/td><td>aaaaaaaa @ 100<\/td><td>absent<\/td>/);
    assert.ok(!html.includes('<img'), 'the cluster name is escaped');
    assert.ok(html.includes('&lt;img src=x onerror=alert(1)&gt;'));
  });

  test('writeReport writes result.json (the result itself) and report.html', () => {
    const folder = mkdtempSync(join(tmpdir(), 'mccache-report-spec-'));
    try {
      const files = writeReport(join(folder, 'nested'), result());
      assert.deepEqual(JSON.parse(readFileSync(files.json, 'utf8')), result());
      assert.equal(readFileSync(files.html, 'utf8'), renderHtml(result()));
    } finally {
      rmSync(folder, { recursive: true, force: true });
    }
  });
});

describe('charts', () => {
  test('rates are per-second deltas of cumulative counters', () => {
    const points = result().timeline.A!;
    assert.deepEqual(ratesOf(points, 'ops'), [
      [1, 500],
      [2, 500],
    ]);
    assert.deepEqual(ratesOf(points, 'retransmits'), [
      [1, 10],
      [2, 23],
    ]);
    assert.deepEqual(ratesOf([points[0]!], 'ops'), []);
  });

  test('a counter that restarts never gives a negative rate', () => {
    const rates = ratesOf(
      [
        { t: 0, ops: 10, retransmits: 0, naksSent: 0, queuedOps: 0 },
        { t: 1000, ops: 4, retransmits: 0, naksSent: 0, queuedOps: 0 },
      ],
      'ops',
    );
    assert.deepEqual(rates, [[1, 0]]);
  });

  test('a logarithmic axis has ticks at powers of ten', () => {
    const svg = lineChart({
      title: 't',
      xLabel: 'x',
      yLabel: 'y',
      logX: true,
      series: [
        {
          name: 's',
          points: [
            [0.1, 10],
            [3, 50],
            [250, 100],
          ],
        },
      ],
    });
    for (const tick of ['0.1', '1', '10', '100']) assert.match(svg, new RegExp(`>${tick}</text>`), tick);
    assert.doesNotMatch(svg, />1000<\/text>/);
    assert.doesNotMatch(svg, /NaN|Infinity/);
  });

  test('an empty chart still draws axes, without NaN', () => {
    const svg = lineChart({
      title: 'empty',
      xLabel: 'x',
      yLabel: 'y',
      series: [{ name: 'none', points: [] }],
    });
    assert.match(svg, /<svg /);
    assert.doesNotMatch(svg, /NaN|Infinity/);
  });
});
