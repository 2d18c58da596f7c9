/**
 * Remote timestamps too far in the future: the HLC refuses any stamp more than MAX_CLOCK_SKEW_MS
 * ahead of the local clock, so one bad member (a wrong clock, a forged op) can neither drag every
 * later local stamp along nor stop this member's writes from replicating.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CacheStore, type StoreContext } from '../lib/cache/store.js';
import { ApplyOutcome, ChangeKind, type ReplicationSink } from '../lib/cache/types.js';
import {
  type Clock,
  HLC_COUNTER_BITS,
  HybridLogicalClock,
  hlcToMillis,
  MAX_CLOCK_SKEW_MS,
  ManualClock,
  millisToHlc,
  type TimerHandle,
} from '../lib/clock.js';
import { cacheSettingsOf, DEFAULTS } from '../lib/config.js';
import { type Log, silentLog } from '../lib/log.js';
import { createNode, type McCacheNode } from '../lib/node.js';
import { mulberry32 } from '../lib/transport/memory-network.js';
import { encodeEntry, Op } from '../lib/wire/ops.js';
import { crcOf, encodeValue } from '../lib/wire/value-codec.js';
import { SimulatedCluster } from './helpers/simulated-cluster.js';

const LARGEST_COUNTER = 2 ** HLC_COUNTER_BITS - 1;
/** The largest timestamp the wire carries: what a forged or corrupt op may claim. */
const FAR_FUTURE = Number.MAX_SAFE_INTEGER;
const PEER = 0x20;

class RecordingLog implements Log {
  readonly warnOn = true;
  readonly infoOn = true;
  readonly debugOn = false;
  warnings: { message: string; meta?: object | undefined }[] = [];
  error(): void {}
  warn(message: string, meta?: object) {
    this.warnings.push({ message, meta });
  }
  info(): void {}
  debug(): void {}
}

interface SinkCall {
  kind: ChangeKind;
  key: string;
  tsm: number;
  crc: bigint;
  encoded: Uint8Array | undefined;
}

class RecordingSink implements ReplicationSink {
  calls: SinkCall[] = [];
  localChange(
    _cache: string,
    kind: ChangeKind,
    key: string,
    tsm: number,
    crcHigh: number,
    crcLow: number,
    encoded: Uint8Array | undefined,
  ): void {
    const crc = (BigInt(crcHigh) << 32n) | BigInt(crcLow);
    this.calls.push({ kind, key, tsm, crc, encoded: encoded && Uint8Array.from(encoded) });
  }
}

function makeStore() {
  const clock = new ManualClock();
  const hlc = new HybridLogicalClock(clock);
  const log = new RecordingLog();
  const sink = new RecordingSink();
  const context: StoreContext = {
    clock,
    hlc,
    nodeId: 0x10,
    log,
    sink,
    tombstoneTtlMs: 60_000,
    maxTombstones: 1000,
  };
  const store = new CacheStore('skew', cacheSettingsOf(DEFAULTS), context);
  return { store, clock, hlc, log, sink };
}

function remoteWrite(key: string, value: unknown, tsm: number, writer = PEER) {
  const encoded = encodeValue(value);
  return { kind: ChangeKind.Insert, key, tsm, writer, crc: crcOf(encoded), encoded };
}

/** Throws, as the engine's encoder would, if a sink call could not go on the wire. */
function assertReplicable(call: SinkCall): void {
  if (call.kind === ChangeKind.Insert || call.kind === ChangeKind.Update) {
    encodeEntry({
      op: call.kind === ChangeKind.Insert ? Op.INS : Op.UPD,
      cache: 'skew',
      key: call.key,
      tsm: call.tsm,
      writer: 0x10,
      crc: call.crc,
      value: call.encoded!,
    });
  } else {
    encodeEntry({ op: Op.DEL, cache: 'skew', key: call.key, tsm: call.tsm, writer: 0x10 });
  }
}

describe('the HLC refuses remote stamps too far ahead', () => {
  test('exactly MAX_CLOCK_SKEW_MS ahead (any counter) is accepted; a millisecond more is refused', () => {
    const clock = new ManualClock(1_700_000_000_000);
    const hlc = new HybridLogicalClock(clock);
    const beyond = millisToHlc(clock.now() + MAX_CLOCK_SKEW_MS + 1);
    assert.equal(hlc.observe(beyond), false);
    assert.equal(hlc.peek(), 0, 'a refused stamp does not move the clock');
    const atTheBound = millisToHlc(clock.now() + MAX_CLOCK_SKEW_MS) + LARGEST_COUNTER;
    assert.equal(atTheBound + 1, beyond);
    assert.equal(hlc.observe(atTheBound), true);
    assert.equal(hlc.peek(), atTheBound);
  });

  test('the bound is counted from the clock whole milliseconds', () => {
    const clock = new ManualClock(1_700_000_000_000);
    clock.advance(0.75);
    const hlc = new HybridLogicalClock(clock);
    const bound = Math.floor(clock.now()) + MAX_CLOCK_SKEW_MS;
    assert.equal(hlc.observe(millisToHlc(bound + 1)), false);
    assert.equal(hlc.observe(millisToHlc(bound)), true);
  });

  test('a stamp refused now is accepted once the local clock has caught up', () => {
    const clock = new ManualClock();
    const hlc = new HybridLogicalClock(clock);
    const stamp = millisToHlc(clock.now() + MAX_CLOCK_SKEW_MS + 1_000);
    assert.equal(hlc.observe(stamp), false);
    // The cached bound is refreshed whenever a stamp passes it, so time moving on is seen.
    clock.advance(999);
    assert.equal(hlc.observe(stamp), false);
    clock.advance(1);
    assert.equal(hlc.observe(stamp), true);
    assert.equal(hlc.peek(), stamp);
  });

  test('stamps within the bound advance the clock, and the next local tick follows them', () => {
    const clock = new ManualClock();
    const hlc = new HybridLogicalClock(clock);
    const ahead = millisToHlc(clock.now() + MAX_CLOCK_SKEW_MS / 2) + 7;
    assert.equal(hlc.observe(ahead), true);
    assert.equal(hlc.tick(), ahead + 1);
    assert.equal(hlc.observe(ahead - 5), true, 'older stamps are accepted and leave the clock alone');
    assert.equal(hlc.peek(), ahead + 1);
  });

  test('a stamp no newer than one already issued is accepted, even past the bound', () => {
    const clock = new ManualClock();
    const hlc = new HybridLogicalClock(clock);
    const atTheBound = millisToHlc(clock.now() + MAX_CLOCK_SKEW_MS) + LARGEST_COUNTER;
    assert.equal(hlc.observe(atTheBound), true);
    // The counter overflows into the next millisecond: our own stamp is now past the bound, and a
    // clear stamped with it (clearCache applies it locally too) must not be refused by ourselves.
    const own = hlc.tick();
    assert.equal(hlcToMillis(own), clock.now() + MAX_CLOCK_SKEW_MS + 1);
    assert.equal(hlc.observe(own), true);
    assert.equal(hlc.observe(own + 1), false);
    assert.equal(hlc.peek(), own);
  });

  test('the bound follows the injected clock, never the system clock', () => {
    // A virtual clock 10 years behind the system clock: a stamp of the real "now" is far ahead of it.
    const clock = new ManualClock(Date.now() - 10 * 365 * 86_400_000);
    const hlc = new HybridLogicalClock(clock);
    assert.equal(hlc.observe(millisToHlc(Date.now())), false);
    assert.equal(hlc.observe(millisToHlc(clock.now())), true);
  });
});

describe('a store refuses remote changes stamped too far ahead', () => {
  test('a far-future insert is refused and counted; the value stays and later local writes replicate', () => {
    const { store, clock, hlc, sink } = makeStore();
    store.set('k', 'local');
    const before = store.versionOf('k');
    assert.equal(store.applyRemote(remoteWrite('k', 'poison', FAR_FUTURE)), ApplyOutcome.Rejected);
    assert.equal(store.get('k'), 'local');
    assert.deepEqual(store.versionOf('k'), before);
    assert.equal(store.counters().remoteFromFuture, 1);
    assert.equal(store.counters().remoteRejected, 0, 'a stamp from the future is told apart');
    assert.equal(store.counters().remoteApplied, 0);
    assert.ok(hlc.peek() < millisToHlc(clock.now() + 1), 'the HLC did not move');
    // More than a counter's worth of writes in the same millisecond, then a delete: all of them
    // stamped near the clock, and all encodable for the wire.
    const calls = sink.calls.length;
    for (let i = 0; i < 2 * (LARGEST_COUNTER + 1); i++) store.set('k', i);
    store.delete('k');
    const written = sink.calls.slice(calls);
    assert.equal(written.length, 2 * (LARGEST_COUNTER + 1) + 1);
    for (const call of written) {
      assert.ok(hlcToMillis(call.tsm) - clock.now() <= 2, `stamp ${call.tsm} stays near the clock`);
      assertReplicable(call);
    }
  });

  test('a remote stamp within the skew is applied and moves the clock', () => {
    const { store, clock, hlc, sink } = makeStore();
    store.set('k', 'local');
    const ahead = millisToHlc(clock.now() + MAX_CLOCK_SKEW_MS);
    assert.equal(store.applyRemote(remoteWrite('k', 'remote', ahead)), ApplyOutcome.Applied);
    assert.equal(store.get('k'), 'remote');
    assert.equal(hlc.peek(), ahead);
    store.set('k', 'after');
    assert.equal(sink.calls.at(-1)!.tsm, ahead + 1, 'the next local write follows the remote one');
    assert.equal(store.counters().remoteFromFuture, 0);
  });

  test('a member an hour ahead cannot win conflicts or stamp our writes', () => {
    const { store, clock, sink } = makeStore();
    store.set('k', 'local');
    const anHourAhead = millisToHlc(clock.now() + 3_600_000);
    assert.equal(store.applyRemote(remoteWrite('k', 'theirs', anHourAhead)), ApplyOutcome.Rejected);
    assert.equal(
      store.applyRemote({ kind: ChangeKind.Delete, key: 'k', tsm: anHourAhead, writer: PEER }),
      ApplyOutcome.Rejected,
    );
    assert.equal(
      store.applyRemote({ kind: ChangeKind.Delete, key: 'other', tsm: anHourAhead, writer: PEER }, true),
      ApplyOutcome.Rejected,
    );
    assert.equal(store.versionOf('other'), undefined, 'no tombstone from the future was laid');
    assert.equal(store.get('k'), 'local');
    assert.equal(store.counters().remoteFromFuture, 3);
    clock.advance(10);
    store.set('k', 'mine');
    assert.equal(hlcToMillis(sink.calls.at(-1)!.tsm), clock.now());
  });

  test('refusals are logged at most once per 5 s, naming the writer and how far ahead', () => {
    const { store, clock, log } = makeStore();
    const ahead = millisToHlc(clock.now() + 3_600_000);
    for (let i = 0; i < 100; i++) store.applyRemote(remoteWrite(`k${i}`, i, ahead, 0xab));
    assert.equal(log.warnings.length, 1);
    assert.match(log.warnings[0]!.message, /node 000000ab stamped 3600\.0 s ahead/);
    clock.advance(4_999);
    store.applyRemote(remoteWrite('again', 1, FAR_FUTURE, 0xab));
    assert.equal(log.warnings.length, 1);
    clock.advance(1);
    store.applyRemote(remoteWrite('again', 1, FAR_FUTURE, 0xcd));
    assert.equal(log.warnings.length, 2);
    assert.match(log.warnings[1]!.message, /node 000000cd/);
    assert.equal((log.warnings[1]!.meta as { refused: number }).refused, 102);
    assert.equal(store.counters().remoteFromFuture, 102);
  });

  test('clearBefore with a stamp too far ahead changes nothing', () => {
    const { store, clock, hlc } = makeStore();
    store.set('a', 1);
    store.set('b', 2);
    store.delete('b');
    const clock0 = hlc.peek();
    assert.equal(store.clearBefore(millisToHlc(clock.now() + MAX_CLOCK_SKEW_MS + 1), PEER), 0);
    assert.equal(store.clearBefore(FAR_FUTURE, PEER), 0);
    assert.deepEqual(store.keys(), ['a']);
    assert.equal(store.versionOf('b')?.tombstone, true, 'tombstones stay');
    assert.equal(hlc.peek(), clock0);
    assert.equal(store.counters().remoteFromFuture, 2);
    // No clear mark was remembered: a remote write stamped now still applies.
    const now = millisToHlc(clock.now()) + 500;
    assert.equal(store.applyRemote(remoteWrite('c', 3, now)), ApplyOutcome.Applied);
    // Within the bound, a clear works as ever.
    assert.equal(store.clearBefore(millisToHlc(clock.now() + MAX_CLOCK_SKEW_MS), PEER), 2);
    assert.deepEqual(store.keys(), []);
  });
});

/** A real clock that reads `offsetMs` ahead of another: a member whose wall clock is wrong (or steps). */
class OffsetClock implements Clock {
  constructor(
    private readonly base: Clock,
    public offsetMs: number,
  ) {}
  now(): number {
    return this.base.now() + this.offsetMs;
  }
  setTimeout(callback: () => void, delayMs: number): TimerHandle {
    return this.base.setTimeout(callback, delayMs);
  }
}

/** Adds to `cluster` a member whose clock reads `offsetMs` ahead of the others. */
async function addSkewedMember(
  cluster: SimulatedCluster,
  offsetMs: number,
): Promise<{ node: McCacheNode; clock: OffsetClock }> {
  const clock = new OffsetClock(cluster.clock, offsetMs);
  const node = createNode({
    env: {},
    settings: { pulse: 5 },
    transport: cluster.network.attach('skewed'),
    clock,
    log: silentLog,
    nodeId: 0x7000_0000,
    random: mulberry32(99),
    defer: (run) => cluster.clock.setTimeout(run, 0),
  });
  await node.ready();
  return { node, clock };
}

async function shutdownAll(cluster: SimulatedCluster, skewed: McCacheNode): Promise<void> {
  const closing = skewed.shutdown();
  await cluster.shutdown();
  cluster.run(10);
  await closing;
}

describe('in a cluster, a member with a wrong clock', () => {
  test('whose stamps near 2^53 reach the others does not stop them replicating', async (t) => {
    const cluster = new SimulatedCluster({ members: 2, seed: 41 });
    await cluster.ready();
    const skewed = await addSkewedMember(cluster, 0);
    t.after(() => shutdownAll(cluster, skewed.node));
    cluster.run(200);
    const [a, b] = cluster.nodes;
    // Its clock steps to the last millisecond an HLC stamp can express (the year 2248), and it writes.
    skewed.clock.offsetMs = hlcToMillis(Number.MAX_SAFE_INTEGER) - cluster.clock.now();
    skewed.node.getCache<string>('c').poison = 'from 2248';
    cluster.run(100);
    for (const node of [a!, b!]) {
      assert.equal(node.getCache<string>('c').poison, undefined, 'the poisoned write was refused');
      assert.equal(node.getLocalMetrics('c').caches.c!.remoteFromFuture, 1);
    }
    // Had a merged that stamp, its next 1023 writes would squeeze under 2^53 and every later one
    // would fail to encode: applied locally, counted in encodeErrors, never sent.
    const writes = 2 * (LARGEST_COUNTER + 1);
    const cache = a!.getCache<number>('c');
    for (let i = 1; i <= writes; i++) {
      cache.counter = i;
      if (i % 64 === 0) cluster.run(1);
    }
    cluster.run(500);
    assert.equal(a!.getLocalMetrics().cluster.encodeErrors, 0);
    assert.equal(b!.getCache<number>('c').counter, writes, 'the last write reached the other member');
    const stamp = a!.getStore('c')!.metadataOf('counter')!.tsm;
    assert.ok(Math.abs(hlcToMillis(stamp) - cluster.clock.now()) <= 1_000, 'stamped with its own time');
  });

  test('ten minutes ahead, can neither overwrite nor clear the others, nor drag their clocks', async (t) => {
    const cluster = new SimulatedCluster({ members: 2, seed: 42 });
    await cluster.ready();
    const skewed = await addSkewedMember(cluster, 600_000);
    t.after(() => shutdownAll(cluster, skewed.node));
    cluster.run(200);
    const [a, b] = cluster.nodes;
    a!.getCache<string>('c').k = 'from a';
    cluster.run(100);
    assert.equal(skewed.node.getCache<string>('c').k, 'from a', 'it still receives the others');
    skewed.node.getCache<string>('c').k = 'from the future';
    skewed.node.clearCache('c');
    cluster.run(100);
    for (const node of [a!, b!]) {
      assert.equal(node.getCache<string>('c').k, 'from a');
      assert.equal(node.getLocalMetrics('c').caches.c!.remoteFromFuture, 1);
      assert.equal(node.getLocalMetrics().cluster.dropped['from-future'], 1, 'the clear was refused');
    }
    a!.getCache<string>('c').k = 'later';
    cluster.run(100);
    assert.equal(b!.getCache<string>('c').k, 'later');
    const stamp = a!.getStore('c')!.metadataOf('k')!.tsm;
    assert.ok(hlcToMillis(stamp) <= cluster.clock.now(), 'stamped with its own time, not ten minutes on');
  });

  test('a clear it refused is applied once its stamp comes within reach, not lost', async (t) => {
    // A refused write comes back through anti-entropy; a clear would not, so it is kept and retried.
    const cluster = new SimulatedCluster({ members: 2, seed: 43, settings: { pulse: 0 } });
    await cluster.ready();
    const skewed = await addSkewedMember(cluster, 90_000); // 90 s ahead: refused for about 30 s
    t.after(() => shutdownAll(cluster, skewed.node));
    cluster.run(200);
    const [a] = cluster.nodes;
    a!.getCache<string>('c').old = 'written before the clear';
    cluster.run(100);
    skewed.node.clearCache('c');
    cluster.run(1000);
    assert.equal(a!.getCache<string>('c').old, 'written before the clear', 'refused for now');
    assert.equal(a!.getLocalMetrics().cluster.dropped['from-future'], 1);
    cluster.run(31_000);
    assert.equal(a!.getCache<string>('c').old, undefined, 'applied once within 60 s of our clock');
  });
});
