/**
 * Anti-entropy and writes in flight: a sync round that lands during a burst sees digests that differ
 * only because receivers lag, and must leave those keys to the DATA streams (syncHorizonMs) instead
 * of pushing or fetching them a second time; a write that the streams lost for good is still
 * repaired by a round once it is older than the horizon; and a difference is repaired once, by the
 * member that lacks it fetching it from one holder. In-memory network, virtual clock.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ChangeKind } from '../lib/cache/types.js';
import { millisToHlc } from '../lib/clock.js';
import type { McCacheNode } from '../lib/node.js';
import { encodeValue } from '../lib/wire/value-codec.js';
import { SimulatedCluster } from './helpers/simulated-cluster.js';

function cluster(
  seed: number,
  options: { syncHorizonMs?: number; maxRetransmitFrames?: number; members?: number } = {},
) {
  return new SimulatedCluster({
    members: options.members ?? 3,
    seed,
    faults: { delayMs: 20, jitterMs: 0 },
    // No periodic pulse: the rounds under test are started by hand.
    settings: { max: 100_000, size: 256 * 1024 * 1024, pulse: 0 },
    ...(options.syncHorizonMs === undefined ? {} : { timing: { syncHorizonMs: options.syncHorizonMs } }),
    ...(options.maxRetransmitFrames === undefined
      ? {}
      : { limits: { maxRetransmitFrames: options.maxRetransmitFrames } }),
  });
}

/** Members meet, and the join-time sync rounds (1 s and 4 s after contact) are over. */
async function settled(sim: SimulatedCluster): Promise<void> {
  await sim.ready();
  for (const node of sim.nodes) node.getCache('ae');
  sim.run(4500);
}

/** A small cluster on a fast network, for rounds started by hand. */
function quickCluster(members: number, seed: number, mode: 0 | 1 = 1, limits = {}): SimulatedCluster {
  return new SimulatedCluster({
    members,
    seed,
    faults: { delayMs: 5, jitterMs: 0 },
    settings: { max: 1000, size: 1 << 24, pulse: 0, mode },
    limits,
  });
}

/** Puts a version of `key` written `ageMs` ago (by writer 7) straight into a member's store. */
function putVersion(
  sim: SimulatedCluster,
  node: McCacheNode,
  key: string,
  ageMs: number,
  value: string,
): void {
  node.getStore('ae')!.applyRemote({
    kind: ChangeKind.Insert,
    key,
    tsm: millisToHlc(sim.clock.now() - ageMs),
    writer: 7,
    encoded: encodeValue(value),
  });
}

function firstThree<T>(items: readonly T[]): [T, T, T] {
  return [items[0]!, items[1]!, items[2]!];
}

function syncRound(node: McCacheNode): void {
  (node.engine as unknown as { sendSync(): void }).sendSync();
}

function burst(node: McCacheNode, count: number, prefix = 'k'): void {
  const cache = node.getCache<string>('ae');
  for (let i = 0; i < count; i++) cache[`${prefix}${i}`] = `${i}`.padEnd(100, '.');
}

function repairs(sim: SimulatedCluster): { pushed: number; requested: number; deferred: number } {
  const total = { pushed: 0, requested: 0, deferred: 0 };
  for (const node of sim.nodes) {
    const metrics = node.getLocalMetrics().cluster;
    total.pushed += metrics.repairsPushed;
    total.requested += metrics.repairsRequested;
    total.deferred += metrics.repairsDeferred;
  }
  return total;
}

describe('anti-entropy and writes in flight', () => {
  test('a sync round during a burst leaves the keys on their way to the streams', async () => {
    const inBurst = async (syncHorizonMs?: number) => {
      const sim = cluster(11, syncHorizonMs === undefined ? {} : { syncHorizonMs });
      try {
        await settled(sim);
        burst(sim.nodes[0]!, 20_000);
        sim.run(60); // the first datagrams have arrived, most of the burst is queued or in flight
        const held = Object.keys(sim.nodes[1]!.getCache('ae')).length;
        assert.ok(held > 0 && held < 20_000, `the round lands mid-burst (reader holds ${held})`);
        syncRound(sim.nodes[1]!);
        assert.notEqual(sim.runUntilConverged('ae', 30_000), undefined, sim.differences('ae').join(','));
        assert.equal(Object.keys(sim.nodes[2]!.getCache('ae')).length, 20_000);
        return repairs(sim);
      } finally {
        await sim.shutdown();
      }
    };
    const deferred = await inBurst();
    assert.equal(deferred.pushed, 0, 'nothing pushed twice');
    assert.equal(deferred.requested, 0, 'nothing fetched twice');
    assert.ok(deferred.deferred > 0, 'the round saw the differences and left them to the streams');
    // Without the horizon, the same round resends keys that were already on their way.
    const eager = await inBurst(0);
    assert.ok(eager.pushed + eager.requested > 0, JSON.stringify(eager));
    assert.equal(eager.deferred, 0);
  });

  test('a gap the member gave up on is repaired by the next round, not deferred', async () => {
    // A retransmit buffer of 4 frames: what the cut-off member misses cannot be resent.
    const sim = cluster(12, { maxRetransmitFrames: 4 });
    try {
      await settled(sim);
      const [writer, reader, cutOff] = firstThree(sim.endpoints);
      sim.network.partition([writer, reader], [cutOff]);
      sim.run(800); // past flowStaleMs: the writer no longer waits for the silent member
      burst(sim.nodes[0]!, 2000, 'lost');
      sim.run(300);
      sim.network.heal();
      // Heartbeats tell the member that frames it lacks are gone from the writer's buffer.
      const lacking = sim.nodes[2]!;
      let waited = 0;
      while (lacking.getLocalMetrics().cluster.unrecoverable === 0 && waited < 1000) {
        sim.run(10);
        waited += 10;
      }
      assert.ok(lacking.getLocalMetrics().cluster.unrecoverable > 0, 'the member gave up on a gap');
      const missing = 2000 - Object.keys(lacking.getCache('ae')).length;
      assert.ok(missing > 0, 'and lacks writes that retransmission cannot bring');
      // The writes are well inside the horizon, but they fell in a gap the member gave up on: the
      // round it schedules for that repairs them at once, with nothing deferred.
      const after = sim.runUntilConverged('ae', 3000);
      assert.notEqual(after, undefined, sim.differences('ae').join(','));
      assert.ok(after! < 800, `repaired ${after} ms later, before any recheck`);
      const done = repairs(sim);
      assert.ok(done.requested + done.pushed >= missing, JSON.stringify({ done, missing }));
      assert.equal(lacking.getLocalMetrics().cluster.repairsDeferred, 0);
    } finally {
      await sim.shutdown();
    }
  });

  test('a deferred fetch that the stream never brings is requested once past the horizon, not left for the pulse', async () => {
    const sim = cluster(13);
    try {
      await settled(sim);
      const [writer, reader, cutOff] = firstThree(sim.endpoints);
      // The write reaches one member; its writer crashes before anyone else could learn of it.
      sim.network.partition([writer, reader], [cutOff]);
      sim.nodes[0]!.getCache<string>('ae').orphan = 'only B has it';
      sim.run(50);
      await sim.crash(sim.nodes[0]!);
      sim.network.heal();
      const [holder, lacking] = sim.nodes as [McCacheNode, McCacheNode];
      assert.equal(holder.getCache('ae').orphan, 'only B has it');
      assert.equal(lacking.getCache('ae').orphan, undefined);
      // A round now sees a fresh write that may still be on its way, and defers fetching it...
      syncRound(lacking);
      sim.run(200);
      assert.ok(repairs(sim).deferred > 0, JSON.stringify(repairs(sim)));
      assert.equal(lacking.getCache('ae').orphan, undefined);
      // ...and fetches it at the first heartbeat past the horizon (there is no pulse here).
      const after = sim.runUntilConverged('ae', 3000);
      assert.notEqual(after, undefined, sim.differences('ae').join(','));
      assert.ok(after! >= 800, `fetched past the horizon (${after} ms later), not by that round`);
      assert.equal(lacking.getCache('ae').orphan, 'only B has it');
    } finally {
      await sim.shutdown();
    }
  });

  test('a key that several members hold is fetched once, by the member that lacks it', async () => {
    const sim = cluster(14, { maxRetransmitFrames: 4, members: 4 });
    try {
      await settled(sim);
      const [writer, b, c, lackingEndpoint] = sim.endpoints as Array<(typeof sim.endpoints)[0]>;
      sim.network.partition([writer!, b!, c!], [lackingEndpoint!]);
      sim.run(800);
      burst(sim.nodes[0]!, 2000, 'held');
      sim.run(1500); // the writes reach the three others, and leave the horizon
      sim.network.heal();
      const lacking = sim.nodes[3]!;
      assert.notEqual(sim.runUntilConverged('ae', 3000), undefined, sim.differences('ae').join(','));
      const metrics = sim.nodes.map((node) => node.getLocalMetrics().cluster);
      const pushed = metrics.reduce((sum, m) => sum + m.repairsPushed, 0);
      const requested = metrics.reduce((sum, m) => sum + m.repairsRequested, 0);
      const missed = lacking.getLocalMetrics().cluster.repairsRequested;
      assert.ok(missed > 0 && missed <= 2000, `the lacking member fetched ${missed} keys`);
      // Three members listed each missing key; it was requested from one and sent once.
      assert.equal(requested, missed, 'only the lacking member requested');
      assert.equal(pushed, missed, 'and each key was sent once, not once per holder or per side');
      assert.ok(lacking.getLocalMetrics().cluster.repairsDeduplicated > 0);
    } finally {
      await sim.shutdown();
    }
  });

  test('a repair survives any one lost control message: either list, or a REQ', async () => {
    type Engine = Record<string, (...args: unknown[]) => void>;
    /** Makes the engine's first call of `method` (when `when` holds) vanish, as a lost datagram. */
    const loseFirst = (node: McCacheNode, method: string, when: (...args: unknown[]) => boolean) => {
      const engine = node.engine as unknown as Engine;
      const original = engine[method]!.bind(engine);
      let lost = false;
      engine[method] = (...args: unknown[]) => {
        if (!lost && when(...args)) {
          lost = true;
          return;
        }
        original(...args);
      };
      return () => lost;
    };
    const listed =
      (reply: boolean) =>
      (...args: unknown[]) =>
        args[3] === reply;
    const cases = [
      { name: 'holder runs the round, its list back is lost', holderRuns: true, lose: 'holder', reply: true },
      {
        name: 'holder runs the round, the answering list is lost',
        holderRuns: true,
        lose: 'lacking',
        reply: false,
      },
      {
        name: 'lacking runs the round, the answering list is lost',
        holderRuns: false,
        lose: 'holder',
        reply: false,
      },
      { name: 'lacking runs the round, its REQ is lost', holderRuns: false, lose: 'request', reply: false },
    ];
    for (const [index, scenario] of cases.entries()) {
      const sim = quickCluster(2, 20 + index);
      try {
        await settled(sim);
        const [holder, lacking] = sim.nodes as [McCacheNode, McCacheNode];
        // Only the holder has the key (written 10 s ago, far outside the horizon): nothing pushes
        // it unless the lacking member's list shows it lacks it, or the lacking member fetches it.
        putVersion(sim, holder, 'k', 10_000, 'value');
        // A digest that differs, so that the answering member lists back.
        putVersion(sim, lacking, 'other', 10_000, 'x');
        const wasLost =
          scenario.lose === 'request'
            ? loseFirst(lacking, 'sendKeyRequests', () => true)
            : loseFirst(scenario.lose === 'holder' ? holder : lacking, 'sendDetails', listed(scenario.reply));
        syncRound(scenario.holderRuns ? holder : lacking);
        const after = sim.runUntilConverged('ae', 3000);
        assert.ok(wasLost(), `${scenario.name}: the message was lost`);
        assert.notEqual(after, undefined, `${scenario.name}: not repaired without a pulse`);
        assert.equal(lacking.getCache('ae').k, 'value', scenario.name);
      } finally {
        await sim.shutdown();
      }
    }
  });

  test('a key listed at two versions by two holders is fetched at the newer one', async () => {
    for (const newerFirst of [false, true]) {
      const sim = quickCluster(3, newerFirst ? 31 : 30);
      try {
        await settled(sim);
        const [a, c, lacking] = sim.nodes as [McCacheNode, McCacheNode, McCacheNode];
        // The network delivers the round to the members in the order they joined, so the first
        // member's list reaches the lacking member first: the older or the newer version first.
        putVersion(sim, newerFirst ? c : a, 'k', 20_000, 'older');
        putVersion(sim, newerFirst ? a : c, 'k', 10_000, 'newer');
        syncRound(lacking);
        assert.notEqual(sim.runUntilConverged('ae', 3000), undefined, sim.differences('ae').join(','));
        for (const node of sim.nodes) assert.equal(node.getCache('ae').k, 'newer');
      } finally {
        await sim.shutdown();
      }
    }
  });

  test('in mode 0 a round fetches only newer versions of keys the member holds', async () => {
    // What the partition hides cannot be resent: only anti-entropy repairs it.
    const sim = quickCluster(2, 40, 0, { maxRetransmitFrames: 4 });
    try {
      await settled(sim);
      const [holder, partial] = sim.nodes as [McCacheNode, McCacheNode];
      sim.network.partition([sim.endpoints[0]!], [sim.endpoints[1]!]);
      partial.getCache<string>('ae').shared = 'older';
      sim.run(5);
      const holderCache = holder.getCache<string>('ae');
      holderCache.shared = 'newer';
      for (let i = 0; i < 50; i++) {
        holderCache[`only-holder-${i}`] = 'x';
        sim.run(2);
      }
      sim.run(1500);
      sim.network.heal();
      let waited = 0;
      while (partial.getCache('ae').shared !== 'newer' && waited < 3000) {
        sim.run(10);
        waited += 10;
      }
      assert.equal(partial.getCache('ae').shared, 'newer', 'a key it holds is repaired');
      sim.run(1000);
      assert.deepEqual(Object.keys(partial.getCache('ae')), ['shared'], 'keys it does not hold stay away');
      // One fetch for the shared key, none for the 50 it does not hold.
      const fetched = partial.getLocalMetrics().cluster.repairsRequested;
      assert.ok(fetched >= 1 && fetched <= 2, `fetched ${fetched}`);
    } finally {
      await sim.shutdown();
    }
  });

  test('a version several members lack is pushed once, not once per member that listed it', async () => {
    const sim = quickCluster(3, 50);
    try {
      await settled(sim);
      const [holder, b, c] = sim.nodes as [McCacheNode, McCacheNode, McCacheNode];
      for (let i = 0; i < 100; i++) {
        putVersion(sim, b, `k${i}`, 20_000, 'older');
        putVersion(sim, c, `k${i}`, 20_000, 'older');
        putVersion(sim, holder, `k${i}`, 10_000, 'newer');
      }
      syncRound(holder);
      assert.notEqual(sim.runUntilConverged('ae', 3000), undefined, sim.differences('ae').join(','));
      const pushed = holder.getLocalMetrics().cluster.repairsPushed;
      assert.equal(pushed, 100, 'both members listed the 100 keys; each was multicast once');
      assert.ok(holder.getLocalMetrics().cluster.repairsDeduplicated >= 100);
    } finally {
      await sim.shutdown();
    }
  });
});
