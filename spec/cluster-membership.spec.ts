/**
 * Members joining, leaving, crashing and being partitioned; isolation between clusters and keys;
 * cluster-wide operations. Real nodes on the seeded in-memory network and a virtual clock.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { generateFernetKey } from '../lib/wire/fernet.js';
import { SimulatedCluster } from './helpers/simulated-cluster.js';

async function started(
  options: ConstructorParameters<typeof SimulatedCluster>[0],
): Promise<SimulatedCluster> {
  const cluster = new SimulatedCluster(options);
  await cluster.ready();
  cluster.run(100);
  return cluster;
}

describe('membership', () => {
  test('members discover each other and count one another', async () => {
    const cluster = await started({ members: 4, seed: 1 });
    for (const node of cluster.nodes) assert.equal(node.getLocalMetrics().cluster.members, 3);
    await cluster.shutdown();
  });

  test('a member that says BYE is dropped at once and its buffers freed', async () => {
    const cluster = await started({ members: 3, seed: 2 });
    const leaving = cluster.nodes[2]!;
    await leaving.shutdown();
    cluster.run(20);
    for (const node of cluster.nodes.slice(0, 2)) {
      const metrics = node.getLocalMetrics().cluster;
      assert.equal(metrics.members, 1);
      assert.equal(metrics.membersLeft, 1);
    }
    cluster.nodes.pop();
    await cluster.shutdown();
  });

  test('a write after shutdown() stays in that process and is counted, not sent', async () => {
    const cluster = await started({ members: 2, seed: 4 });
    const [staying, leaving] = [cluster.nodes[0]!, cluster.nodes[1]!];
    await leaving.shutdown();
    const cache = leaving.getCache<string>('c');
    cache.late = 'too late';
    cache.later = 'also too late';
    cluster.run(500);
    assert.equal(cache.late, 'too late', 'kept locally');
    assert.equal(leaving.getLocalMetrics().cluster.writesAfterShutdown, 2);
    assert.equal(staying.getCache<string>('c').late, undefined, 'not replicated');
    cluster.nodes.pop();
    await cluster.shutdown();
  });

  test('a crashed member (no BYE) is dropped after the timeout and the rest keep working', async () => {
    const cluster = await started({ members: 3, seed: 3, timing: { memberTimeoutMs: 2000 } });
    await cluster.crash(cluster.nodes[2]!);
    cluster.run(3000);
    for (const node of cluster.nodes) {
      assert.equal(node.getLocalMetrics().cluster.members, 1);
      assert.equal(node.getLocalMetrics().cluster.membersTimedOut, 1);
    }
    cluster.nodes[0]!.getCache('c').after = 'crash';
    cluster.run(50);
    assert.equal(cluster.nodes[1]!.getCache('c').after, 'crash');
    await cluster.shutdown();
  });

  test('a member joining during traffic receives the full state and converges', async () => {
    const cluster = await started({ members: 3, seed: 4, faults: { loss: 0.05 } });
    const writers = cluster.nodes.map((node) => node.getCache<number>('c'));
    for (let i = 0; i < 300; i++) {
      writers[i % 3]![`k${i % 120}`] = i;
      cluster.run(1);
    }
    const transfersBefore = cluster.nodes.reduce(
      (n, node) => n + node.getLocalMetrics().cluster.stateTransfers,
      0,
    );
    const newcomer = cluster.addNode();
    await newcomer.ready();
    for (let i = 300; i < 600; i++) {
      writers[i % 3]![`k${i % 120}`] = i;
      cluster.run(1);
    }
    assert.notEqual(cluster.runUntilConverged('c', 5000), undefined, cluster.differences('c').join(','));
    assert.equal(Object.keys(newcomer.getLocalChecksum('c')).length, 120);
    // One donor answers a newcomer, not everyone.
    const transfers =
      cluster.nodes.slice(0, 3).reduce((n, node) => n + node.getLocalMetrics().cluster.stateTransfers, 0) -
      transfersBefore;
    assert.equal(transfers, 1, 'one donor serves a newcomer, not a stampede');
    await cluster.shutdown();
  });
  test('a newcomer converges without waiting for a pulse, even with writes racing its state transfer', async () => {
    for (const seed of [41, 42, 43]) {
      const cluster = await started({
        members: 3,
        seed,
        faults: { loss: 0.1, reorder: 0.2 },
        settings: { pulse: 3600 },
      });
      const writers = cluster.nodes.map((node) => node.getCache<number>('c'));
      let i = 0;
      const write = () => {
        writers[i % 3]![`k${i % 90}`] = i;
        i++;
      };
      for (let n = 0; n < 200; n++) {
        write();
        cluster.run(1);
      }
      const newcomer = cluster.addNode();
      await newcomer.ready();
      // Keep writing while the newcomer starts and its state transfer runs.
      for (let n = 0; n < 300; n++) {
        write();
        cluster.run(1);
      }
      const after = cluster.runUntilConverged('c', 6000);
      assert.notEqual(after, undefined, `seed ${seed}: ${cluster.differences('c').join(', ')}`);
      await cluster.shutdown();
    }
  });
  test('state transfer is not counted as replication latency; first-hand writes are', async () => {
    const cluster = await started({ members: 1, seed: 44 });
    cluster.nodes[0]!.getCache('c').old = 1;
    cluster.run(3000);
    const newcomer = cluster.addNode();
    await newcomer.ready();
    cluster.run(1500);
    assert.equal(newcomer.getCache('c').old, 1);
    assert.equal(newcomer.getLocalMetrics().cluster.latencyMs.count, 0);
    cluster.nodes[0]!.getCache('c').fresh = 2;
    cluster.run(50);
    const latency = newcomer.getLocalMetrics().cluster.latencyMs;
    assert.equal(latency.count, 1);
    assert.ok(latency.max < 50, `a first-hand write arrives within the run step, got ${latency.max} ms`);
    await cluster.shutdown();
  });
});

describe('partitions', () => {
  test('both sides write the same keys; after healing every member holds the last write', async () => {
    const cluster = await started({
      members: 4,
      seed: 5,
      settings: { pulse: 2 },
      timing: { memberTimeoutMs: 1500 },
    });
    const [a, b, c, d] = cluster.nodes.map((node) => node.getCache<string>('c'));
    a!.shared = 'before';
    cluster.run(50);
    const endpoints = cluster.endpoints;
    cluster.network.partition([endpoints[0]!, endpoints[1]!], [endpoints[2]!, endpoints[3]!]);
    a!.shared = 'left-early';
    b!.onlyLeft = 'L';
    cluster.run(5);
    c!.shared = 'right-late';
    d!.onlyRight = 'R';
    cluster.run(3000);
    assert.equal(a!.shared, 'left-early');
    cluster.network.heal();
    const after = cluster.runUntilConverged('c', 4000);
    assert.notEqual(after, undefined, cluster.differences('c').join(','));
    for (const cache of [a, b, c, d]) {
      assert.equal(cache!.shared, 'right-late');
      assert.equal(cache!.onlyLeft, 'L');
      assert.equal(cache!.onlyRight, 'R');
    }
    await cluster.shutdown();
  });

  test('a delete made during a partition is not undone by the other side after healing', async () => {
    const cluster = await started({
      members: 2,
      seed: 6,
      settings: { pulse: 1 },
      timing: { memberTimeoutMs: 1000 },
    });
    const [a, b] = cluster.nodes.map((node) => node.getCache<string>('c'));
    a!.doomed = 'x';
    cluster.run(50);
    assert.equal(b!.doomed, 'x');
    const endpoints = cluster.endpoints;
    cluster.network.partition([endpoints[0]!], [endpoints[1]!]);
    delete a!.doomed;
    cluster.run(2500);
    cluster.network.heal();
    cluster.run(4000);
    assert.equal(a!.doomed, undefined);
    assert.equal(b!.doomed, undefined);
    await cluster.shutdown();
  });
});

describe('isolation', () => {
  test('a member of another cluster on the same network receives nothing', async () => {
    const cluster = await started({ members: 2, seed: 7 });
    const stranger = cluster.addNode({ cluster: 'other' });
    await stranger.ready();
    cluster.run(50);
    cluster.nodes[0]!.getCache('c').k = 1;
    cluster.run(100);
    assert.equal(cluster.nodes[1]!.getCache('c').k, 1);
    assert.equal(stranger.getCache('c').k, undefined);
    assert.ok((stranger.getLocalMetrics().cluster.dropped.cluster ?? 0) > 0, 'drops are counted by reason');
    assert.equal(stranger.getLocalMetrics().cluster.members, 0);
    await cluster.shutdown();
  });

  test('a member with a different crypto key receives nothing, and counts why', async () => {
    const key = generateFernetKey();
    const cluster = await started({ members: 2, seed: 8, settings: { cryptoKeys: [key] } });
    const outsider = cluster.addNode({ cryptoKeys: [generateFernetKey()] });
    const clear = cluster.addNode({ cryptoKeys: [] });
    await Promise.all([outsider.ready(), clear.ready()]);
    cluster.run(50);
    cluster.nodes[0]!.getCache('c').secret = 's';
    cluster.run(100);
    assert.equal(cluster.nodes[1]!.getCache('c').secret, 's');
    assert.equal(outsider.getCache('c').secret, undefined);
    assert.equal(clear.getCache('c').secret, undefined);
    assert.ok((outsider.getLocalMetrics().cluster.dropped.hmac ?? 0) > 0);
    assert.ok((clear.getLocalMetrics().cluster.dropped['sealed-without-key'] ?? 0) > 0);
    assert.ok((cluster.nodes[0]!.getLocalMetrics().cluster.dropped.unsealed ?? 0) > 0);
    await cluster.shutdown();
  });

  test('key rotation: mid-roll members with [old, new] and [new, old] keep talking both ways', async () => {
    const oldKey = generateFernetKey();
    const newKey = generateFernetKey();
    const cluster = await started({ members: 1, seed: 9, settings: { cryptoKeys: [oldKey, newKey] } });
    const rotated = cluster.addNode({ cryptoKeys: [newKey, oldKey] });
    const stale = cluster.addNode({ cryptoKeys: [oldKey] });
    await Promise.all([rotated.ready(), stale.ready()]);
    cluster.run(50);
    cluster.nodes[0]!.getCache('c').fromOld = 1;
    rotated.getCache('c').fromNew = 2;
    cluster.run(100);
    assert.equal(rotated.getCache('c').fromOld, 1);
    assert.equal(cluster.nodes[0]!.getCache('c').fromNew, 2);
    // A member that never learnt the new key cannot read what is sealed with it.
    assert.equal(stale.getCache('c').fromNew, undefined);
    assert.equal(stale.getCache('c').fromOld, 1);
    await cluster.shutdown();
  });
});

describe('replication rules', () => {
  test('mode 0: members apply updates only for keys they already hold', async () => {
    const cluster = await started({ members: 2, seed: 10, settings: { mode: 0 } });
    const [a, b] = cluster.nodes.map((node) => node.getCache<number>('c'));
    a!.fresh = 1;
    cluster.run(50);
    assert.equal(b!.fresh, undefined, 'a key b does not hold is not inserted');
    b!.held = 1;
    cluster.run(50);
    a!.held = 2;
    cluster.run(50);
    assert.equal(b!.held, 2, 'a key b holds is updated');
    await cluster.shutdown();
  });

  test('evictions by max entries replicate, so members stay identical', async () => {
    const cluster = await started({ members: 3, seed: 11, settings: { max: 10 } });
    const writer = cluster.nodes[0]!.getCache<number>('c');
    for (let i = 0; i < 25; i++) {
      writer[`k${i}`] = i;
      cluster.run(2);
    }
    assert.notEqual(cluster.runUntilConverged('c', 2000), undefined);
    for (const node of cluster.nodes) assert.equal(Object.keys(node.getLocalChecksum('c')).length, 10);
    assert.ok(cluster.nodes[0]!.getLocalMetrics('c').caches.c!.evicts >= 15);
    await cluster.shutdown();
  });

  test('clearCache clears every member, the caller included', async () => {
    const cluster = await started({ members: 3, seed: 12 });
    const caches = cluster.nodes.map((node) => node.getCache<number>('c'));
    caches[0]!.a = 1;
    caches[1]!.b = 2;
    cluster.run(50);
    cluster.nodes[2]!.clearCache('c');
    cluster.run(50);
    for (const cache of caches) assert.deepEqual(Object.keys(cache), []);
    caches[0]!.later = 3;
    cluster.run(50);
    assert.equal(caches[2]!.later, 3, 'writes after the clear survive it');
    await cluster.shutdown();
  });

  test('getClusterChecksum and getClusterMetrics return every member, keyed by node id', async () => {
    const cluster = await started({ members: 3, seed: 13 });
    cluster.nodes[0]!.getCache('c').k = 'v';
    cluster.run(50);
    const pendingChecksum = cluster.nodes[1]!.getClusterChecksum('c');
    const pendingMetrics = cluster.nodes[1]!.getClusterMetrics('c');
    cluster.run(100);
    const checksums = await pendingChecksum;
    const metrics = await pendingMetrics;
    const ids = cluster.nodes.map((node) => node.id).sort();
    assert.deepEqual(Object.keys(checksums).sort(), ids);
    assert.deepEqual(Object.keys(metrics).sort(), ids);
    const crcs = new Set(Object.values(checksums).map((sum) => JSON.stringify(sum)));
    assert.equal(crcs.size, 1);
    assert.match(JSON.stringify(checksums), /"k":\{"crc":"[0-9a-f]{16}"/);
    // One node only, and a silent member (timeout) leaves it out.
    const one = cluster.nodes[0]!.getClusterChecksum('c', undefined, cluster.nodes[2]!.id);
    cluster.run(100);
    assert.deepEqual(Object.keys(await one), [cluster.nodes[2]!.id]);
    await cluster.shutdown();
  });
});
