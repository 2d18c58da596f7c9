/**
 * `mccache stress --netns` (issue 6): members in network namespaces of their own, with real kernel
 * loss, a partition and a kill -9 with restart. The fault plan and the refusal without root run
 * everywhere; the real run needs root and is skipped with the reason otherwise.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { lossSupport, NETNS_PREFIX, netnsSupport } from '../lib/cli/netns.js';
import type { FaultKind, StressResult } from '../lib/cli/report.js';
import { longestPartitionMs, planFaults } from '../lib/cli/stress-faults.js';
import { runCli } from './helpers/cli.js';

const support = await netnsSupport();
const loss = support.available ? await lossSupport() : support;
const skip = loss.available ? false : loss.reason;
if (skip) console.warn(`SKIPPING mccache stress --netns: ${skip}`);

const NOBODY = 65534;
const isRoot = process.getuid?.() === 0;

describe('the fault plan of a stress run', () => {
  const base = { nodes: 5, durationMs: 60_000, lossPercent: 0, partitionMs: null, kill: false };

  test('no flags, no faults', () => {
    assert.deepEqual(planFaults(base), { lossPercent: 0, partition: null, kill: null });
  });

  test('a partition cuts the last member off a third of the way in; a kill hits another halfway', () => {
    assert.deepEqual(planFaults({ ...base, lossPercent: 10, partitionMs: 10_000, kill: true }), {
      lossPercent: 10,
      partition: { member: 4, atMs: 20_000, forMs: 10_000 },
      kill: { member: 3, atMs: 30_000 },
    });
  });

  test('a kill alone hits the last member', () => {
    assert.deepEqual(planFaults({ ...base, kill: true }).kill, { member: 4, atMs: 30_000 });
  });

  test('with two members, partition and kill still hit different members', () => {
    const plan = planFaults({ ...base, nodes: 2, durationMs: 6000, partitionMs: 2000, kill: true });
    assert.equal(plan.partition!.member, 1);
    assert.equal(plan.kill!.member, 0);
  });

  test('the longest partition heals exactly when the load ends', () => {
    for (const durationMs of [6000, 7001, 60_000]) {
      const plan = planFaults({ ...base, durationMs, partitionMs: longestPartitionMs(durationMs) });
      assert.equal(plan.partition!.atMs + plan.partition!.forMs, durationMs);
    }
  });
});

describe('mccache stress --netns without root', () => {
  test('is refused with the reason, before anything starts', async () => {
    // As root, drop to nobody to see what a user without privileges sees.
    const prefix = isRoot ? ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups'] : [];
    const run = await runCli(
      ['stress', '--netns', '--duration', '2s', '--out', '/nonexistent'],
      60_000,
      prefix,
    );
    assert.equal(run.code, 1, `exit status\n${run.stdout}\n${run.stderr}`);
    assert.match(run.stderr, /^mccache stress: --netns cannot run here: network namespaces need root/m);
    assert.match(run.stderr, /Without --netns \(and --loss and --partition, which need it\)/);
    assert.doesNotMatch(run.stdout, /starting/, 'no member was started');
    assert.deepEqual(run.leftovers, []);
  });
});

describe('mccache stress --netns on real namespaces', { skip }, () => {
  test('3 members with 10% kernel loss, a 2 s partition and a kill -9 with restart PASS', {
    timeout: 120_000,
  }, async () => {
    const out = mkdtempSync(join(tmpdir(), 'mccache-stress-netns-'));
    try {
      const argv = ['stress', '--netns', '--nodes', '3', '--duration', '6s', '--loss', '10'];
      const run = await runCli([...argv, '--partition', '2', '--kill', '--out', out], 110_000);
      assert.equal(run.code, 0, `exit status\n${run.stdout}\n${run.stderr}`);
      assert.deepEqual(run.leftovers, [], 'no member process is left behind');
      const namespaces = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
      assert.ok(!namespaces.includes(`${NETNS_PREFIX}${run.pid}-`), 'every namespace of the run is deleted');

      assert.match(run.stdout, /^network: multicast group [\d.]+:\d+ across 3 network namespaces/m);
      assert.match(run.stdout, /^faults: 10% kernel loss on every member; member C cut off for 2 s/m);
      assert.match(run.stdout, /^fault timeline \(seconds since the load started\):$/m);
      assert.match(run.stdout, /^B [0-9a-f]{8} \(restarted\) /m);
      assert.match(run.stdout, /^PASS: all 3 members hold the same \d+ keys/m);

      const result = JSON.parse(readFileSync(join(out, 'result.json'), 'utf8')) as StressResult;
      assert.equal(result.verdict, 'PASS');
      assert.equal(result.config.transport, 'multicast');
      assert.deepEqual(result.config.faults, { netns: true, lossPercent: 10, partitionMs: 2000, kill: true });

      const first = (kind: FaultKind) => {
        const event = result.faultEvents.find((e) => e.kind === kind);
        assert.ok(event, `a ${kind} event`);
        return event;
      };
      const lossSet = first('loss');
      const partition = first('partition');
      const heal = first('heal');
      const kill = first('kill');
      const restart = first('restart');
      assert.ok(lossSet.t <= 0, 'loss is set before the load starts');
      assert.equal(partition.member, 'C');
      assert.ok(partition.t >= 2000, `partition at ${partition.t} ms`);
      // Planned at a third of the 6 s load, for 2 s (each time is taken once the link has changed).
      assert.ok(heal.t >= 2000 + 2000, `healed at ${heal.t} ms`);
      assert.equal(kill.member, 'B');
      assert.ok(kill.t >= 3000, `kill at ${kill.t} ms`);
      assert.equal(restart.member, 'B');
      assert.ok(restart.t > kill.t);
      const times = result.faultEvents.map((e) => e.t);
      assert.deepEqual(
        times,
        [...times].sort((a, b) => a - b),
        'the timeline is in time order',
      );

      const [a, b, c] = result.nodes;
      assert.deepEqual(b!.previousNodeIds?.length, 1, 'B was killed once');
      assert.notEqual(b!.nodeId, b!.previousNodeIds![0], 'the restarted B is a new node');
      assert.ok(kill.detail.includes(b!.previousNodeIds![0]!), 'the kill names the killed node');
      assert.ok(restart.detail.includes(b!.nodeId), 'the restart names the new node');
      assert.equal(a!.previousNodeIds, undefined);
      assert.equal(c!.previousNodeIds, undefined);
      for (const node of result.nodes) {
        assert.ok((node.kernelDrops ?? 0) > 0, `the kernel dropped packets bound for ${node.name}`);
        assert.ok(node.convergenceMs !== null, `${node.name} converged`);
        assert.equal(node.errors, 0);
      }
      assert.equal(new Set(result.nodes.map((n) => n.digest)).size, 1, 'every member ends identical');
      assert.ok(result.totals.retransmits > 0, 'kernel loss was repaired by retransmission');
      // On a slow machine the restart may come after the load ended; then B runs none.
      if (restart.detail.includes('it joins the load')) assert.ok(b!.ops > 0, 'the restarted B ran the load');
      else assert.equal(b!.ops, 0);

      const html = readFileSync(join(out, 'report.html'), 'utf8');
      assert.match(html, /<h2>Fault timeline<\/h2>/);
      assert.match(html, /class="marker-label">kill B</);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
