/**
 * The public results keyed by node id: cluster queries carry precise types (tsc checks the
 * assignments below when it compiles the specs), and every node id a user sees, `node.id`, the keys
 * of cluster results and `metadata[key].writer`, has the same 8-hex-digit form.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { EntryChecksum, EntryMetadata } from '../lib/cache/types.js';
import { ManualClock } from '../lib/clock.js';
import { silentLog } from '../lib/log.js';
import {
  type ClusterChecksums,
  type ClusterMetrics,
  createNode,
  type LocalMetrics,
  type McCacheNode,
} from '../lib/node.js';
import { MemoryNetwork, mulberry32 } from '../lib/transport/memory-network.js';

/** Ids whose unpadded hex ('1234', 'beef') differs from the 8-digit form. */
const SMALL_IDS = [0x1234, 0xbeef] as const;

async function twoMembers(): Promise<{ clock: ManualClock; nodes: McCacheNode[]; run(ms: number): void }> {
  const clock = new ManualClock();
  const network = new MemoryNetwork({ clock, seed: 7 });
  const nodes = SMALL_IDS.map((nodeId, i) =>
    createNode({
      env: {},
      settings: { pulse: 5 },
      transport: network.attach(`node${i}`),
      clock,
      log: silentLog,
      nodeId,
      random: mulberry32(100 + i),
      defer: (run) => clock.setTimeout(run, 0),
    }),
  );
  await Promise.all(nodes.map((node) => node.ready()));
  const run = (ms: number) => {
    for (let t = 0; t < ms; t++) clock.advance(1);
  };
  run(100);
  return { clock, nodes, run };
}

async function shutdownAll(nodes: McCacheNode[], run: (ms: number) => void): Promise<void> {
  const closing = Promise.all(nodes.map((node) => node.shutdown()));
  run(10);
  await closing;
}

describe('node ids as users see them', () => {
  test('metadata.writer is the writer node id in the form of node.id, on both members', async () => {
    const { nodes, run } = await twoMembers();
    const [a, b] = nodes as [McCacheNode, McCacheNode];
    assert.deepEqual([a.id, b.id], ['00001234', '0000beef']);
    a.getCache<string>('c').k = 'from a';
    run(50);
    const local: EntryMetadata | undefined = a.getCache('c').metadata.k;
    const replicated: EntryMetadata | undefined = b.getCache('c').metadata.k;
    assert.equal(replicated !== undefined, true, 'the write reached b');
    assert.equal(local?.writer, a.id);
    assert.equal(replicated?.writer, a.id);
    b.getCache<string>('c').k = 'from b';
    run(50);
    assert.equal(a.getCache('c').metadata.k?.writer, b.id);
    await shutdownAll(nodes, run);
  });
});

describe('cluster query results', () => {
  test('getClusterMetrics is typed as LocalMetrics per node id, and remote answers have that shape', async () => {
    const { nodes, run } = await twoMembers();
    const [a, b] = nodes as [McCacheNode, McCacheNode];
    b.getCache<number>('c').n = 1;
    run(50);
    const pending = a.getClusterMetrics('c');
    run(100);
    // Both assignments compile only while the result is typed precisely (not Record<string, unknown>).
    const metrics: ClusterMetrics = await pending;
    const precise: Record<string, LocalMetrics> = metrics;
    assert.deepEqual(Object.keys(precise).sort(), [a.id, b.id]);
    const fromB = precise[b.id]!; // came over the network, decoded from CBOR
    assert.equal(fromB.node, b.id);
    assert.deepEqual(Object.keys(fromB.caches), ['c']);
    assert.equal(fromB.caches.c?.count, 1);
    assert.equal(fromB.caches.c?.inserts, 1);
    assert.equal(fromB.cluster.members, 1);
    assert.equal(typeof fromB.cluster.latencyMs.p99, 'number');
    assert.equal(typeof fromB.cluster.transport.sent, 'number');
    assert.equal(fromB.process.loadAverage.length, 3);
    assert.equal(precise[a.id]!.caches.c?.count, 1, 'the asking member answers too');
    await shutdownAll(nodes, run);
  });

  test('getClusterChecksum is typed as { key: { crc, tsm } } per node id, equal where members agree', async () => {
    const { nodes, run } = await twoMembers();
    const [a, b] = nodes as [McCacheNode, McCacheNode];
    a.getCache<string>('c').k = 'v';
    run(50);
    const pending = a.getClusterChecksum('c');
    run(100);
    const checksums: ClusterChecksums = await pending;
    const precise: Record<string, Record<string, { crc: string; tsm: number }>> = checksums;
    assert.deepEqual(Object.keys(precise).sort(), [a.id, b.id]);
    const fromB: EntryChecksum | undefined = precise[b.id]?.k;
    assert.match(fromB?.crc ?? '', /^[0-9a-f]{16}$/);
    assert.deepEqual(fromB, a.getLocalChecksum('c').k);
    assert.equal(fromB?.tsm, a.getCache('c').metadata.k?.tsm);
    await shutdownAll(nodes, run);
  });
});
