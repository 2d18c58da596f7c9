/**
 * Hostile datagrams reaching real nodes: random bytes, truncations, bit flips and replays of
 * captured frames. With a key, nothing unauthenticated changes any entry; without one, nothing
 * crashes and every datagram is accounted for.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { mulberry32 } from '../lib/transport/memory-network.js';
import { generateFernetKey } from '../lib/wire/fernet.js';
import { SimulatedCluster } from './helpers/simulated-cluster.js';

function mutate(random: () => number, frame: Buffer): Buffer {
  const copy = Buffer.from(frame);
  switch (Math.floor(random() * 4)) {
    case 0:
      return copy.subarray(0, Math.floor(random() * copy.length));
    case 1: {
      const flips = 1 + Math.floor(random() * 4);
      for (let i = 0; i < flips; i++)
        copy[Math.floor(random() * copy.length)]! ^= 1 << Math.floor(random() * 8);
      return copy;
    }
    case 2: {
      // A believable prefix (magic, version, cluster, sender) in front of garbage.
      const garbage = Buffer.alloc(Math.floor(random() * 1400));
      for (let i = 0; i < garbage.length; i++) garbage[i] = Math.floor(random() * 256);
      return Buffer.concat([copy.subarray(0, 12), garbage]);
    }
    default:
      return copy;
  }
}

function totalDropped(dropped: Record<string, number>): number {
  return Object.values(dropped).reduce((sum, n) => sum + n, 0);
}

describe('hostile datagrams', () => {
  for (const keyed of [true, false]) {
    test(`${keyed ? 'with' : 'without'} a key: 20k fuzzed and replayed datagrams change nothing they should not`, async () => {
      const cluster = new SimulatedCluster({
        members: 2,
        seed: keyed ? 21 : 22,
        settings: keyed ? { cryptoKeys: [generateFernetKey()] } : {},
      });
      await cluster.ready();
      cluster.run(50);
      const [a, b] = cluster.nodes;
      const captured: Buffer[] = [];
      const spy = cluster.network.attach('spy');
      await spy.start((datagram) => captured.push(datagram));
      const writer = a!.getCache<string>('c');
      for (let i = 0; i < 50; i++) {
        writer[`k${i}`] = `v${i}`;
        cluster.run(2);
      }
      cluster.run(500);
      const before = JSON.stringify(b!.getLocalChecksum('c'));
      assert.equal(Object.keys(JSON.parse(before)).length, 50);
      assert.ok(captured.length > 5, 'the spy captured real frames to mutate');

      const random = mulberry32(keyed ? 1 : 2);
      const receivedBefore = b!.getLocalMetrics().cluster.datagramsReceived;
      const droppedBefore = totalDropped(b!.getLocalMetrics().cluster.dropped);
      const injected = 20_000;
      for (let i = 0; i < injected; i++) {
        const roll = random();
        let datagram: Buffer;
        if (roll < 0.2) {
          datagram = Buffer.alloc(Math.floor(random() * 1500));
          for (let j = 0; j < datagram.length; j++) datagram[j] = Math.floor(random() * 256);
        } else {
          datagram = mutate(random, captured[Math.floor(random() * captured.length)]!);
        }
        spy.send(datagram);
        if (i % 500 === 0) cluster.run(2);
      }
      cluster.run(200);
      const metrics = b!.getLocalMetrics().cluster;
      // The spy also hears the members' own traffic; count only what b received from the spy.
      const fromSpy = metrics.datagramsReceived - receivedBefore;
      assert.ok(fromSpy >= injected * 0.5, `b should have processed the injected datagrams (${fromSpy})`);
      const droppedNow = totalDropped(metrics.dropped) - droppedBefore;
      if (keyed) {
        assert.equal(JSON.stringify(b!.getLocalChecksum('c')), before, 'no entry changed');
        // Replays of genuine frames are duplicates; everything else fails before decoding.
        assert.ok(droppedNow >= injected * 0.95, `nearly every injected datagram is dropped (${droppedNow})`);
        assert.equal(metrics.dropped.decode ?? 0, 0, 'nothing unauthenticated reached the decoder');
        assert.equal(metrics.dropped.shape ?? 0, 0, 'nothing unauthenticated reached the decoder');
      } else {
        assert.ok(droppedNow > injected * 0.5, `most injected datagrams are dropped (${droppedNow})`);
      }
      assert.equal(metrics.dropped['internal-error'] ?? 0, 0, 'no hostile input reached a bug');
      // The cluster still works afterwards.
      writer.after = 'fuzz';
      cluster.run(100);
      assert.equal(b!.getCache<string>('c').after, 'fuzz');
      await spy.close();
      await cluster.shutdown();
    });
  }

  test('without a key, a forged frame carrying the next seq does not shadow the real one', async () => {
    const cluster = new SimulatedCluster({ members: 2, seed: 23, settings: { pulse: 3600 } });
    await cluster.ready();
    cluster.run(50);
    const [a, b] = cluster.nodes;
    const dataFrames: Buffer[] = [];
    const spy = cluster.network.attach('spy');
    // Clear frames: the inner header starts at byte 12; kind is byte 20, seq bytes 28-31.
    await spy.start((datagram) => {
      if (datagram.readUInt32BE(8) === a!.engine.nodeId && datagram[20] === 1) dataFrames.push(datagram);
    });
    a!.getCache('c').before = 1;
    cluster.run(50);
    const captured = dataFrames.at(-1)!;
    const forged = Buffer.from(captured);
    forged.writeUInt32BE(captured.readUInt32BE(28) + 1, 28);
    forged.fill(0xff, 36);
    spy.send(forged);
    cluster.run(5);
    a!.getCache('c').after = 2;
    cluster.run(50);
    assert.equal(b!.getCache('c').after, 2, 'the real frame with that seq was applied');
    assert.ok(
      (b!.getLocalMetrics().cluster.dropped.decode ?? 0) >= 1,
      'the forgery was dropped as undecodable',
    );
    await spy.close();
    await cluster.shutdown();
  });
});
