/**
 * Flow control: a sender stays within a window of DATA datagrams past what its slowest live receiver
 * has reported, so a slow receiver's socket buffer is not flooded into loss and retransmission
 * storms; receivers report progress by volume, not only on the heartbeat; and a receiver that stops
 * reporting (crashed, cut off) stops holding the others back after flowStaleMs. In-memory network,
 * virtual clock.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SimulatedCluster } from './helpers/simulated-cluster.js';

/** 64 KiB window at 1472-byte packets: 44 datagrams. */
const WINDOW_BYTES = 64 * 1024;
const WINDOW_DATAGRAMS = Math.floor(WINDOW_BYTES / 1472);

function cluster(seed: number, delayMs: number, loss = 0, flowWindowBytes = WINDOW_BYTES): SimulatedCluster {
  return new SimulatedCluster({
    members: 3,
    seed,
    faults: { delayMs, jitterMs: 0, loss },
    settings: { max: 100_000, size: 256 * 1024 * 1024 },
    limits: { flowWindowBytes },
  });
}

/** Members meet and their join-time syncs are over (a sync during the burst would repair in-flight keys). */
async function settled(sim: SimulatedCluster): Promise<void> {
  await sim.ready();
  for (const node of sim.nodes) node.getCache('flow');
  sim.run(1500);
}

/** Writes `count` distinct 100-byte values on member 0 in one burst. */
function burst(sim: SimulatedCluster, count: number): void {
  const cache = sim.nodes[0]!.getCache<string>('flow');
  for (let i = 0; i < count; i++) cache[`k${i}`] = `${i}`.padEnd(100, '.');
}

describe('flow control', () => {
  test('a sender stays within the window of its slowest receiver, and everything still arrives', async () => {
    // 20 ms each way: a report takes at least 40 ms to come back after the datagrams it covers.
    const sim = cluster(3, 20);
    try {
      await settled(sim);
      const writer = sim.endpoints[0]!;
      const before = writer.stats.sent;
      burst(sim, 20_000); // about 1800 datagrams of 1472 bytes
      sim.run(100);
      const sentIn100ms = writer.stats.sent - before;
      // At most a window per 40 ms round trip, plus the window itself and some control traffic.
      assert.ok(
        sentIn100ms <= WINDOW_DATAGRAMS * 5,
        `sent ${sentIn100ms} datagrams in 100 ms with a window of ${WINDOW_DATAGRAMS}`,
      );
      assert.ok(sentIn100ms >= WINDOW_DATAGRAMS, `but it did send: ${sentIn100ms}`);
      const metrics = sim.nodes[0]!.getLocalMetrics().cluster;
      assert.ok(metrics.flowBlocked > 0, 'flushes stopped at the window');
      assert.ok(
        sim.nodes.slice(1).some((node) => node.getLocalMetrics().cluster.progressReports > 0),
        'receivers reported progress by volume',
      );
      assert.notEqual(sim.runUntilConverged('flow', 30_000), undefined, 'everything arrived');
      assert.equal(Object.keys(sim.nodes[2]!.getCache('flow')).length, 20_000);
      assert.equal(metrics.retransmits, 0, 'no loss, so nothing to resend');
    } finally {
      await sim.shutdown();
    }
  });

  test('a value of many fragments goes out within the window too, not in one burst', async () => {
    const sim = cluster(5, 20);
    try {
      await settled(sim);
      const writer = sim.endpoints[0]!;
      const before = writer.stats.sent;
      const big = new Uint8Array(1024 * 1024).map((_, i) => (i * 7) & 0xff); // about 770 fragments
      sim.nodes[0]!.getCache<Uint8Array>('flow').big = big;
      sim.run(30); // less than a round trip: no report has come back yet
      const sentBeforeAnyReport = writer.stats.sent - before;
      assert.ok(
        sentBeforeAnyReport <= WINDOW_DATAGRAMS + 10,
        `sent ${sentBeforeAnyReport} datagrams before any report, with a window of ${WINDOW_DATAGRAMS}`,
      );
      assert.notEqual(sim.runUntilConverged('flow', 30_000), undefined, 'the value arrived');
      assert.deepEqual(sim.nodes[2]!.getCache<Uint8Array>('flow').big, big);
      assert.equal(sim.nodes[0]!.getLocalMetrics().cluster.retransmits, 0, 'no loss, so nothing to resend');
    } finally {
      await sim.shutdown();
    }
  });

  test('a retransmit buffer smaller than a waiting message never stalls the stream', async () => {
    // Frames enter the retransmit buffer when sent, not when numbered: had the 300 frames of one
    // value been kept at once, a 100-frame buffer would have pushed out frames not yet sent, whose
    // loss receivers could neither repair nor give up on (lowestRetained above the highest sent).
    const sim = new SimulatedCluster({
      members: 2,
      seed: 8,
      faults: { delayMs: 2, jitterMs: 0, loss: 0.05 },
      settings: { max: 100_000, size: 256 * 1024 * 1024 },
      limits: { maxRetransmitFrames: 100, flowWindowBytes: 16 * 1472 },
    });
    try {
      await settled(sim);
      const cache = sim.nodes[0]!.getCache<Uint8Array | string>('flow');
      const big = new Uint8Array(300 * 1400).map((_, i) => (i * 13) & 0xff);
      cache.big = big;
      cache.after = 'the small write behind it';
      sim.run(20);
      sim.network.setFaults({ loss: 0 });
      assert.notEqual(sim.runUntilConverged('flow', 60_000), undefined, 'the stream kept moving');
      const reader = sim.nodes[1]!.getCache<Uint8Array | string>('flow');
      assert.deepEqual(reader.big, big);
      assert.equal(reader.after, 'the small write behind it');
    } finally {
      await sim.shutdown();
    }
  });

  test('on a fast network the window costs nothing: the burst converges as soon as without it', async () => {
    const convergedAfter = async (flowWindowBytes: number) => {
      const sim = cluster(4, 0.05, 0, flowWindowBytes);
      try {
        await settled(sim);
        burst(sim, 20_000);
        const after = sim.runUntilConverged('flow', 5000);
        assert.notEqual(after, undefined);
        return after!;
      } finally {
        await sim.shutdown();
      }
    };
    const withWindow = await convergedAfter(WINDOW_BYTES);
    const without = await convergedAfter(1 << 30);
    assert.ok(withWindow <= without + 50, `${withWindow} ms with the window, ${without} ms without`);
  });

  test('under loss, a window held by a gap reopens once the retransmission fills it', async () => {
    const sim = cluster(6, 1, 0.05);
    try {
      await settled(sim);
      burst(sim, 20_000);
      // 1800 datagrams through a 44-datagram window with 5% loss: stalls on gaps are repaired by
      // NAKs and resends within milliseconds, not by heartbeats (200 ms) or anti-entropy.
      const after = sim.runUntilConverged('flow', 5000);
      assert.notEqual(after, undefined);
      assert.ok(after! <= 2000, `converged ${after} ms after the burst`);
      const writer = sim.nodes[0]!.getLocalMetrics().cluster;
      assert.ok(writer.flowBlocked > 0 && writer.retransmits > 0, JSON.stringify(writer));
      assert.equal(writer.repairsPushed, 0, 'retransmission alone repaired the loss');
    } finally {
      await sim.shutdown();
    }
  });

  test('a receiver cut off from the sender stops holding it back after flowStaleMs', async () => {
    const sim = cluster(5, 1);
    try {
      await settled(sim);
      const [writer, reader, cutOff] = sim.endpoints as [
        (typeof sim.endpoints)[0],
        (typeof sim.endpoints)[0],
        (typeof sim.endpoints)[0],
      ];
      sim.network.partition([writer, reader], [cutOff]);
      const before = writer.stats.sent;
      burst(sim, 20_000);
      sim.run(1000); // well past flowStaleMs (400 ms), well before the member timeout (5 s)
      const sent = writer.stats.sent - before;
      assert.ok(sent > 1500, `the writer went on without the silent member: ${sent} datagrams`);
      const live = [sim.nodes[0]!, sim.nodes[1]!];
      assert.notEqual(
        sim.runUntilConverged('flow', 2000, live),
        undefined,
        'the reachable member has it all',
      );
      sim.network.heal();
      assert.notEqual(sim.runUntilConverged('flow', 30_000), undefined, 'and after the heal, everyone');
    } finally {
      await sim.shutdown();
    }
  });
});
