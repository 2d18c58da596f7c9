/**
 * Packet size: `packetMtu: 'auto'` (the default) fills datagrams up to what the multicast interface
 * carries without IP fragmentation, capped at AUTO_PACKET_CAP; a number is used as given; an unknown
 * MTU falls back to Ethernet's 1472. Checked on the seeded in-memory network, whose simulated
 * interface refuses larger datagrams, and on real loopback UDP.
 */
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { describe, test } from 'node:test';
import { AUTO_PACKET_CAP, ETHERNET_PACKET_BYTES, resolveSettings } from '../lib/config.js';
import { UdpMulticastTransport } from '../lib/transport/udp-multicast.js';
import { MIN_MTU } from '../lib/wire/frame.js';
import { waitFor } from './helpers/processes.js';
import { SimulatedCluster } from './helpers/simulated-cluster.js';

/** Writes `keys` 100-byte values on member 0; returns the largest datagram any member sent, once converged. */
async function largestDatagram(
  interfaceBytes: number | undefined,
  packetMtu: number | 'auto',
  keys = 3000,
): Promise<{ largest: number; oversize: number; converged: boolean }> {
  const cluster = new SimulatedCluster({
    members: 3,
    seed: 7,
    faults: interfaceBytes === undefined ? {} : { maxDatagramBytes: interfaceBytes },
    settings: { packetMtu, max: 10_000 },
  });
  let largest = 0;
  for (const endpoint of cluster.endpoints) {
    const send = endpoint.send.bind(endpoint);
    endpoint.send = (datagram) => {
      largest = Math.max(largest, datagram.length);
      send(datagram);
    };
  }
  try {
    await cluster.ready();
    const cache = cluster.nodes[0]!.getCache<string>('sized');
    for (const node of cluster.nodes.slice(1)) node.getCache('sized');
    for (let i = 0; i < keys; i++) cache[`key-${i}`] = `${i}`.padEnd(100, '.');
    const convergedAfter = cluster.runUntilConverged('sized', 5000);
    const peerCount = cluster.nodes[2]!.getCache<string>('sized');
    return {
      largest,
      oversize: cluster.network.stats.oversize,
      converged: convergedAfter !== undefined && Object.keys(peerCount).length === keys,
    };
  } finally {
    await cluster.shutdown();
  }
}

describe("packetMtu 'auto'", () => {
  test('is the default, and the setting takes auto or 1200-65507 bytes with a clear error otherwise', () => {
    assert.equal(resolveSettings({ env: {} }).packetMtu, 'auto');
    assert.equal(resolveSettings({ env: { MCCACHE_PACKET_MTU: 'auto' } }).packetMtu, 'auto');
    assert.equal(resolveSettings({ env: { MCCACHE_PACKET_MTU: '9000' } }).packetMtu, 9000);
    assert.throws(
      () => resolveSettings({ env: { MCCACHE_PACKET_MTU: '100' } }),
      /MCCACHE_PACKET_MTU="100": expected a packet size in bytes of at least 1200/,
    );
    // The setting's floor is the wire's: the smallest size at which every control frame fits.
    assert.equal(resolveSettings({ env: { MCCACHE_PACKET_MTU: String(MIN_MTU) } }).packetMtu, MIN_MTU);
    assert.throws(() => resolveSettings({ env: { MCCACHE_PACKET_MTU: String(MIN_MTU - 1) } }));
    assert.throws(
      () => resolveSettings({ env: { MCCACHE_PACKET_MTU: 'jumbo' } }),
      /MCCACHE_PACKET_MTU="jumbo": expected a packet size in bytes \(1200-65507\), or auto/,
    );
  });

  test('fills datagrams up to what the interface carries, and never beyond it', async () => {
    const result = await largestDatagram(9000, 'auto');
    assert.ok(result.largest > 8000 && result.largest <= 9000, `largest datagram ${result.largest}`);
    assert.equal(result.oversize, 0);
    assert.ok(result.converged, 'the members converged');
  });

  test('stops at the cap on an interface with a huge MTU such as loopback', async () => {
    const result = await largestDatagram(65_507, 'auto');
    assert.ok(
      result.largest > AUTO_PACKET_CAP - 1500 && result.largest <= AUTO_PACKET_CAP,
      `largest datagram ${result.largest}`,
    );
    assert.ok(result.converged, 'the members converged');
  });

  test('uses 1472 bytes when the interface MTU is unknown', async () => {
    const result = await largestDatagram(undefined, 'auto');
    assert.ok(result.largest > 1300 && result.largest <= ETHERNET_PACKET_BYTES, `largest ${result.largest}`);
    assert.ok(result.converged, 'the members converged');
  });

  test('a number is used as given, even below what the interface carries', async () => {
    const result = await largestDatagram(9000, 1200);
    assert.ok(result.largest > 1000 && result.largest <= 1200, `largest datagram ${result.largest}`);
    assert.ok(result.converged, 'the members converged');
  });

  test('on real loopback UDP the transport reports a size that a datagram of exactly that size crosses', async () => {
    const group = `239.${randomInt(1, 255)}.${randomInt(1, 255)}.${randomInt(1, 255)}`;
    const port = randomInt(20_000, 60_000);
    const transport = new UdpMulticastTransport({ group, port, interfaceAddress: '127.0.0.1', hops: 0 });
    const received: number[] = [];
    try {
      assert.equal(transport.maxDatagramBytes, undefined, 'unknown before start');
      await transport.start((datagram) => received.push(datagram.length));
      const size = transport.maxDatagramBytes;
      assert.ok(size !== undefined && size > ETHERNET_PACKET_BYTES, `loopback carries ${size} bytes`);
      transport.send(Buffer.alloc(size, 7));
      await waitFor(() => received.includes(size), 5000, `a ${size}-byte datagram to loop back`);
      assert.equal(transport.stats.sendErrors, 0);
    } finally {
      await transport.close();
    }
  });
});
