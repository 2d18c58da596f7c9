import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { StressResult } from '../lib/cli/report.js';
import { convergenceTime, judge, majorityDigest, memberName } from '../lib/cli/stress.js';
import { drawKey, drawOp, drawPause, type OpKind, seededRandom } from '../lib/cli/stress-member.js';
import { runCli } from './helpers/cli.js';

const v = (crc: string, tsm: number) => ({ crc, tsm });

describe('the verdict', () => {
  test('PASS when every member holds the same keys with the same crc and tsm', () => {
    const cache = { a: v('00aa', 10), b: v('00bb', 20) };
    const verdict = judge({ A: { ...cache }, B: { ...cache }, C: { ...cache } });
    assert.deepEqual(verdict, { pass: true, keys: 2, differing: [] });
  });

  test('PASS for members that all hold nothing', () => {
    assert.deepEqual(judge({ A: {}, B: {} }), { pass: true, keys: 0, differing: [] });
  });

  test('FAIL names a key whose value differs, with every member’s version', () => {
    const verdict = judge({
      A: { a: v('00aa', 10), b: v('00bb', 20) },
      B: { a: v('00aa', 10), b: v('0bad', 20) },
      C: { a: v('00aa', 10), b: v('00bb', 20) },
    });
    assert.equal(verdict.pass, false);
    assert.deepEqual(verdict.differing, [
      { key: 'b', versions: { A: v('00bb', 20), B: v('0bad', 20), C: v('00bb', 20) } },
    ]);
  });

  test('FAIL when the same value carries another timestamp (a write that one member missed)', () => {
    const verdict = judge({ A: { a: v('00aa', 10) }, B: { a: v('00aa', 11) } });
    assert.equal(verdict.pass, false);
    assert.deepEqual(
      verdict.differing.map((d) => d.key),
      ['a'],
    );
  });

  test('FAIL when a key is missing on a member, which shows as null (stricter than the seed)', () => {
    const verdict = judge({ A: { a: v('00aa', 10), z: v('0022', 5) }, B: { a: v('00aa', 10) } });
    assert.equal(verdict.pass, false);
    assert.equal(verdict.keys, 2);
    assert.deepEqual(verdict.differing, [{ key: 'z', versions: { A: v('0022', 5), B: null } }]);
  });

  test('lists differing keys sorted, each once', () => {
    const verdict = judge({
      A: { k3: v('1', 1), k1: v('1', 1), k2: v('1', 1) },
      B: { k3: v('2', 1), k1: v('2', 1) },
    });
    assert.deepEqual(
      verdict.differing.map((d) => d.key),
      ['k1', 'k2', 'k3'],
    );
  });

  test('in mode 0 an absent key is fine, but two versions of one key are not', () => {
    assert.equal(judge({ A: { a: v('00aa', 10) }, B: {} }, 0).pass, true);
    const verdict = judge({ A: { a: v('00aa', 10) }, B: { a: v('00ab', 12) }, C: {} }, 0);
    assert.equal(verdict.pass, false);
    assert.deepEqual(verdict.differing[0]!.versions, { A: v('00aa', 10), B: v('00ab', 12), C: null });
  });

  test('a key named like an Object.prototype member is compared like any other', () => {
    const A = JSON.parse('{"__proto__": {"crc": "01", "tsm": 1}, "constructor": {"crc": "02", "tsm": 2}}');
    const B = JSON.parse('{"constructor": {"crc": "02", "tsm": 2}}');
    const verdict = judge({ A, B });
    assert.deepEqual(
      verdict.differing.map((d) => d.key),
      ['__proto__'],
    );
  });
});

describe('convergence time', () => {
  test('is the first probe from which on the member held the final state', () => {
    const history = [
      { t: 10, digest: 'x' },
      { t: 40, digest: 'f' },
      { t: 70, digest: 'y' },
      { t: 100, digest: 'f' },
      { t: 130, digest: 'f' },
    ];
    assert.equal(convergenceTime(history, 'f'), 100);
    assert.equal(convergenceTime([{ t: 5, digest: 'f' }], 'f'), 5);
  });

  test('is null when the last probe did not show the final state', () => {
    assert.equal(
      convergenceTime(
        [
          { t: 10, digest: 'f' },
          { t: 20, digest: 'g' },
        ],
        'f',
      ),
      null,
    );
    assert.equal(convergenceTime([], 'f'), null);
  });

  test('the final state is the digest most members hold, ties broken by the smallest', () => {
    assert.equal(majorityDigest(['b', 'a', 'b']), 'b');
    assert.equal(majorityDigest(['b', 'a']), 'a');
  });
});

describe("the seed's workload", () => {
  test('mixes 55% lookups, 20% inserts, 20% updates and 5% deletes', () => {
    const random = seededRandom(7);
    const counts: Record<OpKind, number> = { lookup: 0, insert: 0, update: 0, delete: 0 };
    const draws = 200_000;
    for (let i = 0; i < draws; i++) counts[drawOp(random)]++;
    const share = (kind: OpKind) => counts[kind] / draws;
    assert.ok(Math.abs(share('lookup') - 0.55) < 0.01, `lookups ${share('lookup')}`);
    assert.ok(Math.abs(share('insert') - 0.2) < 0.01, `inserts ${share('insert')}`);
    assert.ok(Math.abs(share('update') - 0.2) < 0.01, `updates ${share('update')}`);
    assert.ok(Math.abs(share('delete') - 0.05) < 0.005, `deletes ${share('delete')}`);
  });

  test('draws shared keys, and one in 21 keys of the member’s own', () => {
    const random = seededRandom(11);
    const keys = new Set<string>();
    let own = 0;
    const draws = 105_000;
    for (let i = 0; i < draws; i++) {
      const key = drawKey(random, 200, 2);
      assert.match(key, /^K00[03]-\d{3}$/);
      if (key.startsWith('K003-')) own++;
      keys.add(key);
    }
    assert.ok(Math.abs(own / draws - 1 / 21) < 0.005, `own keys ${own / draws}`);
    assert.equal(keys.size, 400, 'all 200 shared and 200 own keys appear');
  });

  test('pauses uniformly within 0.65..1.35 of the aperture', () => {
    const random = seededRandom(3);
    let total = 0;
    let low = Number.POSITIVE_INFINITY;
    let high = 0;
    for (let i = 0; i < 50_000; i++) {
      const pause = drawPause(random, 10);
      total += pause;
      low = Math.min(low, pause);
      high = Math.max(high, pause);
    }
    assert.ok(low >= 6.5 && low < 6.6, `lowest ${low}`);
    assert.ok(high <= 13.5 && high > 13.4, `highest ${high}`);
    assert.ok(Math.abs(total / 50_000 - 10) < 0.05);
  });

  test('the same seed gives the same workload', () => {
    const a = seededRandom(99);
    const b = seededRandom(99);
    const ops = (random: () => number) =>
      Array.from({ length: 50 }, () => `${drawOp(random)} ${drawKey(random, 50, 0)}`);
    assert.deepEqual(ops(a), ops(b));
    assert.notDeepEqual(ops(seededRandom(1)), ops(seededRandom(2)));
  });

  test('members are named A, B, C ... and stay unique past Z', () => {
    assert.deepEqual([0, 1, 2, 25].map(memberName), ['A', 'B', 'C', 'Z']);
    assert.equal(new Set(Array.from({ length: 60 }, (_, i) => memberName(i))).size, 60);
  });
});

// ------------------------------------------------------------------------------------------------

describe('mccache stress on real processes', () => {
  test('a short run with a small tantrum PASSes and writes a consistent report', async () => {
    const out = mkdtempSync(join(tmpdir(), 'mccache-stress-spec-'));
    try {
      const run = await runCli(
        ['stress', '--nodes', '3', '--duration', '4s', '--aperture', '0.005', '--tantrum', '5', '--out', out],
        120_000,
      );
      assert.equal(run.code, 0, `exit status\n${run.stdout}\n${run.stderr}`);
      assert.deepEqual(run.leftovers, [], 'no member process is left behind');
      assert.match(
        run.stdout,
        /^node +ops +inserts +updates +deletes +lookups +evictions +retransmits +drops +p50 ms +p99 ms +converged$/m,
      );
      assert.match(run.stdout, /anti-entropy pulse 5 s \(the stress default/);
      assert.match(run.stdout, /^PASS: all 3 members hold the same \d+ keys/m);

      const result = JSON.parse(readFileSync(join(out, 'result.json'), 'utf8')) as StressResult;
      assert.equal(result.verdict, 'PASS');
      assert.equal(result.config.nodes, 3);
      assert.equal(result.config.tantrum, 5);
      assert.equal(result.config.apertureMs, 5);
      assert.equal(result.config.pulse, 5);
      assert.equal(result.config.pulseSource, 'default');
      assert.equal(result.config.durationMs, 4000);
      assert.match(result.config.group, /^239\.\d+\.\d+\.\d+$/);
      assert.ok(result.timing.loadMs >= 4000, `load ran ${result.timing.loadMs} ms`);
      assert.ok(result.timing.settleMs >= 1000, 'quiescence is held for a second before the verdict');
      assert.deepEqual(result.differingKeys, []);
      assert.equal(result.differingKeysTotal, 0);
      assert.equal(result.nodes.length, 3);
      assert.deepEqual(
        result.nodes.map((n) => n.name),
        ['A', 'B', 'C'],
      );
      const digests = new Set(result.nodes.map((n) => n.digest));
      assert.equal(digests.size, 1, 'every member ends with the same digest');
      for (const node of result.nodes) {
        assert.match(node.nodeId, /^[0-9a-f]{8}$/);
        assert.equal(
          node.ops,
          node.lookups + node.inserts + node.updates + node.deletes + node.skipped,
          node.name,
        );
        assert.ok(node.ops > 0 && node.inserts > 0, `node ${node.name} ran the workload`);
        assert.equal(node.errors, 0);
        assert.equal(node.entries, result.totals.keysAtEnd);
        assert.ok(node.latency.count > 0, 'ops from the others were applied here');
        assert.ok(node.latency.p50 <= node.latency.p99);
        assert.ok(node.latencyQuantiles.length > 0);
        assert.ok(node.convergenceMs !== null && node.convergenceMs <= result.timing.settleMs);
        assert.ok(node.datagramsSent > 0 && node.datagramsReceived > 0);
        const points = result.timeline[node.name]!;
        assert.ok(points.length >= 3, `timeline of ${node.name}`);
        for (let i = 1; i < points.length; i++) {
          assert.ok(points[i]!.t >= points[i - 1]!.t);
          assert.ok(points[i]!.ops >= points[i - 1]!.ops);
        }
      }
      const sum = (pick: (n: StressResult['nodes'][number]) => number) =>
        result.nodes.reduce((a, n) => a + pick(n), 0);
      assert.equal(
        result.totals.ops,
        sum((n) => n.ops),
      );
      assert.equal(
        result.totals.inserts,
        sum((n) => n.inserts),
      );
      assert.equal(
        result.totals.updates,
        sum((n) => n.updates),
      );
      assert.equal(
        result.totals.deletes,
        sum((n) => n.deletes),
      );
      assert.equal(
        result.totals.lookups,
        sum((n) => n.lookups),
      );
      assert.equal(
        result.totals.retransmits,
        sum((n) => n.retransmits),
      );
      assert.equal(result.totals.targetOpsPerSecond, 600);
      assert.equal(result.timing.convergedMs, Math.max(...result.nodes.map((n) => n.convergenceMs!)));
      // With 5% of datagrams dropped each way, loss happened and was repaired by retransmission.
      assert.ok(sum((n) => n.naksSent) > 0, 'NAKs were sent');
      assert.ok(result.totals.retransmits > 0, 'lost datagrams were retransmitted');

      const html = readFileSync(join(out, 'report.html'), 'utf8');
      assert.match(html, /^<!doctype html>/);
      assert.ok((html.match(/<svg /g) ?? []).length >= 3, 'charts are inline SVG');
      assert.doesNotMatch(html, /<script|<link|@import|https?:\/\//i, 'nothing is loaded from anywhere');
      assert.match(html, /class="pass">PASS</);
      assert.ok(
        readdirSync(join(out, 'logs')).includes('member-A.log'),
        'member logs go to the report folder',
      );
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
