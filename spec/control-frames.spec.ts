/**
 * Control frames (ACK, NAK, SYC, SYD, REQ) are never fragmented: receivers drop a fragmented one.
 * So every control entry must fit one datagram, at every packet size allowed and with encryption,
 * and what a NAK may cost the member that answers it is bounded. In-memory network, virtual clock.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ChangeKind } from '../lib/cache/types.js';
import { millisToHlc } from '../lib/clock.js';
import type { ReceiveWindow } from '../lib/cluster/receive-window.js';
import type { McCacheNode } from '../lib/node.js';
import { generateFernetKey } from '../lib/wire/fernet.js';
import { FrameCodec, FrameKind, MIN_MTU } from '../lib/wire/frame.js';
import { decodeEntries, Op } from '../lib/wire/ops.js';
import { encodeValue, hash32 } from '../lib/wire/value-codec.js';
import { SimulatedCluster } from './helpers/simulated-cluster.js';

const KEY = generateFernetKey();

function smallestSealed(members: number, seed: number, limits = {}): SimulatedCluster {
  return new SimulatedCluster({
    members,
    seed,
    faults: { delayMs: 2, jitterMs: 0 },
    settings: { packetMtu: MIN_MTU, cryptoKeys: [KEY], pulse: 0, max: 10_000, size: 1 << 24 },
    limits,
  });
}

function cluster(node: McCacheNode) {
  return node.getLocalMetrics().cluster;
}

describe('control frames fit one datagram', () => {
  test('at the smallest packet size, sealed, a sync round repairs a key only one member holds', async () => {
    const sim = smallestSealed(2, 41);
    await sim.ready();
    for (const node of sim.nodes) node.getCache('c');
    sim.run(4500); // past the join-time rounds
    const [holder, lacking] = [sim.nodes[0]!, sim.nodes[1]!];
    // A version the streams never carried (as if lost for good), a minute old.
    holder.getStore('c')!.applyRemote({
      kind: ChangeKind.Insert,
      key: 'only-here',
      tsm: millisToHlc(sim.clock.now() - 60_000),
      writer: 7,
      encoded: encodeValue('repair me'),
    });
    (holder.engine as unknown as { sendSync(): void }).sendSync();
    sim.run(2000);
    assert.equal(lacking.getCache<string>('c')['only-here'], 'repair me');
    for (const node of sim.nodes) {
      assert.equal(cluster(node).dropped['fragmented-control'] ?? 0, 0);
      assert.equal(cluster(node).encodeErrors, 0);
      assert.equal(cluster(node).controlTooLarge, 0);
    }
    await sim.shutdown();
  });

  test('lists under a long cache name are chunked to fit; only a key too long for any datagram is left out', async () => {
    const sim = smallestSealed(2, 67);
    await sim.ready();
    const name = 'n'.repeat(200);
    for (const node of sim.nodes) node.getCache(name);
    sim.run(4500);
    const [holder, lacking] = [sim.nodes[0]!, sim.nodes[1]!];
    const keys = [...Array.from({ length: 30 }, (_, i) => `${i}`.padEnd(150, 'k')), 'L'.repeat(1500)];
    for (const key of keys) {
      holder.getStore(name)!.applyRemote({
        kind: ChangeKind.Insert,
        key,
        tsm: millisToHlc(sim.clock.now() - 60_000),
        writer: 7,
        encoded: encodeValue('v'),
      });
    }
    (holder.engine as unknown as { sendSync(): void }).sendSync();
    sim.run(3000);
    const got = lacking.getCache<string>(name);
    for (const key of keys.slice(0, 30)) assert.equal(got[key], 'v', `repaired ${key.slice(0, 3)}...`);
    assert.equal(got[keys[30]!], undefined, 'the 1500-byte key does not fit a list entry');
    assert.ok(cluster(holder).controlTooLarge > 0, 'and that was counted');
    for (const node of sim.nodes) {
      assert.equal(cluster(node).encodeErrors, 0);
      assert.equal(cluster(node).dropped['fragmented-control'] ?? 0, 0);
    }
    await sim.shutdown();
  });

  test('a cluster too large for one ACK datagram splits its ACKs and keeps every member', async () => {
    // At 1200 bytes sealed one ACK carries 93 positions; 100 members need two.
    const sim = smallestSealed(100, 43);
    await sim.ready();
    sim.run(3000);
    const writer = sim.nodes[0]!.getCache<string>('c');
    writer.k = 'everywhere';
    sim.run(1000);
    for (const node of sim.nodes) {
      assert.equal(node.engine.memberIds().length, 99, 'nobody timed out');
      assert.equal(cluster(node).dropped['fragmented-control'] ?? 0, 0);
      assert.equal(cluster(node).encodeErrors, 0);
      assert.equal(cluster(node).controlTooLarge, 0);
      assert.equal(node.getCache<string>('c').k, 'everywhere');
      // Our ACKs reached the writer: it released what everyone has (STABLE needs every position).
      assert.equal(cluster(node).membersTimedOut, 0);
    }
    assert.equal(sim.nodes[0]!.engine.gauges().retransmitFrames, 0, 'every member reported the write');
    await sim.shutdown();
  });
});

describe('a NAK costs the member answering it a bounded amount of work', () => {
  /** A member whose retransmit buffer holds `frames` frames (one small write per flush). */
  async function sender(frames: number, limits = {}) {
    const sim = smallestSealed(2, 47, limits);
    await sim.ready();
    sim.run(4500);
    // The other member stops hearing it, so nothing is released by ACKs meanwhile.
    sim.network.partition([sim.endpoints[0]!], [sim.endpoints[1]!]);
    const cache = sim.nodes[0]!.getCache<number>('c');
    const firstSeq = sim.nodes[0]!.engine.gauges().nextSeq!;
    for (let i = 0; i < frames; i++) {
      cache[`k${i}`] = i;
      sim.run(1);
    }
    const engine = sim.nodes[0]!.engine as unknown as { onNak(missing: Array<[number, number]>): void };
    const resent = () => cluster(sim.nodes[0]!).retransmits;
    return { sim, engine, firstSeq, resent };
  }

  test('only the first 64 ranges of a NAK are read', async () => {
    const { sim, engine, firstSeq, resent } = await sender(70);
    const before = resent();
    engine.onNak(Array.from({ length: 70 }, (_, i): [number, number] => [firstSeq + i, firstSeq + i]));
    assert.equal(resent() - before, 64);
    await sim.shutdown();
  });

  test('a NAK walks at most a window span of seqs, whatever its ranges say', async () => {
    const { sim, engine, firstSeq, resent } = await sender(120, { maxWindowSpan: 50 });
    const before = resent();
    // Overlapping ranges over the whole buffer: walked in full, they would resend all 120.
    engine.onNak(Array.from({ length: 64 }, (): [number, number] => [firstSeq, firstSeq + 119]));
    assert.equal(resent() - before, 50);
    await sim.shutdown();
  });
});

describe('replayed frames', () => {
  test('a member heard only through replays of its old frames times out', async () => {
    const sim = smallestSealed(2, 53);
    await sim.ready();
    const [listener, silenced] = [sim.endpoints[0]!, sim.endpoints[1]!];
    // Record what the second member sends while it is up.
    const recorded: Buffer[] = [];
    let recording = true;
    const send = silenced.send.bind(silenced);
    silenced.send = (datagram) => {
      if (recording) recorded.push(Buffer.from(datagram));
      send(datagram);
    };
    sim.nodes[1]!.getCache<string>('c').k = 'v';
    sim.run(2000);
    assert.ok(recorded.length > 5);
    // It falls silent; an attacker keeps replaying its genuine (sealed, authentic) frames.
    sim.network.partition([listener], [silenced]);
    recording = false; // what it sends from now on never reaches the listener
    for (let t = 0; t < 8000; t += 100) {
      for (const datagram of recorded) listener.receive(Buffer.from(datagram));
      sim.run(100);
    }
    const metrics = cluster(sim.nodes[0]!);
    assert.ok((metrics.dropped['replayed-control'] ?? 0) > 0, 'the replays arrived and were refused');
    assert.equal(metrics.membersTimedOut, 1, 'replays did not keep the silent member alive');
    assert.equal(metrics.members, 0, 'nor did they bring it back once it had timed out');
    assert.equal(metrics.membersJoined, 1);
    await sim.shutdown();
  });
});

describe('a member back from a partition', () => {
  test('is accepted again after timing out, though replays of its old frames are not', async () => {
    const sim = smallestSealed(2, 61);
    await sim.ready();
    sim.nodes[1]!.getCache<string>('c').before = 'partition';
    sim.run(1000);
    sim.network.partition([sim.endpoints[0]!], [sim.endpoints[1]!]);
    sim.run(7000); // past the 5 s timeout on both sides
    assert.equal(cluster(sim.nodes[0]!).membersTimedOut, 1);
    sim.nodes[1]!.getCache<string>('c').during = 'partition';
    sim.network.heal();
    sim.run(3000);
    assert.equal(sim.nodes[0]!.engine.memberIds().length, 1, 'it is a member again');
    sim.nodes[1]!.getCache<string>('c').after = 'healing';
    assert.notEqual(sim.runUntilConverged('c', 5000), undefined);
    assert.deepEqual(
      { ...sim.nodes[0]!.getCache<string>('c') },
      { before: 'partition', during: 'partition', after: 'healing' },
    );
    await sim.shutdown();
  });
});

describe('answers waiting to be sent', () => {
  test('are bounded by their encoded bytes: a flood of checksum queries cannot pile up megabytes', async () => {
    const sim = smallestSealed(2, 59, { maxQueuedOtherBytes: 64 * 1024 });
    await sim.ready();
    sim.run(4500);
    const holder = sim.nodes[0]!;
    const cache = holder.getCache<string>('c');
    for (let i = 0; i < 1000; i++) cache[`key-${i}`] = 'x';
    sim.run(500);
    // Twenty answers queued in one go, as a burst of INQs handled before the next flush would.
    const engine = holder.engine as unknown as { enqueueOther(entry: unknown): void };
    const asker = sim.nodes[1]!.engine.nodeId;
    const before = cluster(holder).queueDropped;
    for (let requestId = 1; requestId <= 20; requestId++) {
      engine.enqueueOther({ op: Op.CHK, requestId, target: asker, result: holder.getLocalChecksum('c') });
    }
    const dropped = cluster(holder).queueDropped - before;
    // One answer (1000 keys, about 40 KB encoded) fits the 64 KiB bound; the others are counted.
    assert.equal(dropped, 19);
    await sim.shutdown();
  });
});

describe('fragments held before their sender was known', () => {
  test('their resends fill the gap, so the stream does not stall', async () => {
    // The sender alone writes a value of many fragments; its datagrams are recorded.
    const sending = new SimulatedCluster({ members: 1, seed: 71, settings: { pulse: 0 } });
    await sending.ready();
    const recorded: Buffer[] = [];
    const endpoint = sending.endpoints[0]!;
    const send = endpoint.send.bind(endpoint);
    endpoint.send = (datagram) => {
      recorded.push(Buffer.from(datagram));
      send(datagram);
    };
    sending.run(100);
    sending.nodes[0]!.getCache<Uint8Array>('c').big = new Uint8Array(40 * 1400).fill(7);
    sending.run(1500); // it keeps announcing itself (NEW) for its first 1.2 s
    const codec = new FrameCodec({ clusterId: hash32('mccache'), sender: 1, mtu: 65_507 });
    const frames = recorded.map((datagram) => ({ datagram, frame: codec.fromDatagram(datagram) }));
    const fragments = frames.filter((f) => f.frame.ok && f.frame.header.fragmentCount > 1);
    const newFrame = frames.find(
      (f) =>
        f.frame.ok &&
        f.frame.header.kind === FrameKind.Control &&
        decodeEntries(f.frame.payload).ok === true &&
        (decodeEntries(f.frame.payload) as { entries: { op: number }[] }).entries.some(
          (entry) => entry.op === Op.NEW,
        ),
    );
    assert.ok(fragments.length > 20 && newFrame, 'recorded the fragments and a NEW');
    // The receiver gets the first 20 fragments before it knows the sender, then a NEW (a member
    // with no stream position yet), then the rest, then the first 20 again, as resends would be.
    const receiving = new SimulatedCluster({ members: 1, seed: 73, settings: { pulse: 0 } });
    await receiving.ready();
    const deliver = (datagram: Buffer) => receiving.endpoints[0]!.receive(Buffer.from(datagram));
    for (const f of fragments.slice(0, 20)) deliver(f.datagram);
    deliver(newFrame!.datagram);
    for (const f of fragments.slice(20)) deliver(f.datagram);
    for (const f of fragments.slice(0, 20)) deliver(f.datagram);
    receiving.run(10);
    const receiver = receiving.nodes[0]!;
    assert.deepEqual(receiver.getCache<Uint8Array>('c').big, new Uint8Array(40 * 1400).fill(7));
    const window = (
      receiver.engine as unknown as { members: Map<number, { window?: ReceiveWindow }> }
    ).members.get(sending.nodes[0]!.engine.nodeId)!.window!;
    assert.equal(window.hasGaps, false, 'every seq of the value counts as received');
    await receiving.shutdown();
    await sending.shutdown();
  });
});

describe('a sealed DATA frame the receiver cannot decode', () => {
  test('counts as received and is left to anti-entropy, instead of a gap NAKed forever', async () => {
    // As from a newer version with an op this one does not know: authentic, so resent as it is.
    const sim = smallestSealed(2, 79, { flowWindowBytes: 16 * 1200 });
    await sim.ready();
    sim.run(4500);
    const [sender, receiver] = [sim.nodes[0]!, sim.nodes[1]!];
    const engine = sender.engine as unknown as {
      sendData(message: Uint8Array): number;
      flush(all: boolean): void;
    };
    engine.sendData(Uint8Array.of(0x9f, 0xff)); // not a valid message
    engine.flush(false);
    sim.run(100);
    // More writes than the flow window holds: a stuck gap would close it.
    const cache = sender.getCache<number>('c');
    for (let i = 0; i < 200; i++) {
      cache[`k${i}`] = i;
      sim.run(2);
    }
    assert.notEqual(sim.runUntilConverged('c', 5000), undefined);
    assert.equal(Object.keys(receiver.getCache('c')).length, 200);
    const metrics = cluster(receiver);
    assert.equal(metrics.dropped.decode, 1);
    assert.equal(metrics.unrecoverable, 1, 'counted, and left to anti-entropy');
    assert.ok(cluster(sender).retransmits < 5, `not resent over and over: ${cluster(sender).retransmits}`);
    await sim.shutdown();
  });
});
