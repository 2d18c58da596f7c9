import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { CacheStore, type StoreContext, utf8Length } from '../lib/cache/store.js';
import { ApplyOutcome, ChangeKind, type ReplicationSink } from '../lib/cache/types.js';
import { HybridLogicalClock, ManualClock, millisToHlc } from '../lib/clock.js';
import { type CacheSettings, cacheSettingsOf, DEFAULTS } from '../lib/config.js';
import { silentLog } from '../lib/log.js';
import { crcOf, encodeValue } from '../lib/wire/value-codec.js';

interface SinkCall {
  kind: ChangeKind;
  key: string;
  tsm: number;
}

class RecordingSink implements ReplicationSink {
  calls: SinkCall[] = [];
  localChange(_cache: string, kind: ChangeKind, key: string, tsm: number): void {
    this.calls.push({ kind, key, tsm });
  }
  evictions(): string[] {
    return this.calls.filter((c) => c.kind === ChangeKind.Evict).map((c) => c.key);
  }
}

function makeStore(settings: Partial<CacheSettings> = {}, nodeId = 1, clock = new ManualClock()) {
  const sink = new RecordingSink();
  const context: StoreContext = {
    clock,
    hlc: new HybridLogicalClock(clock),
    nodeId,
    log: silentLog,
    sink,
    tombstoneTtlMs: 60_000,
    maxTombstones: 10_000,
  };
  const store = new CacheStore('evict', { ...cacheSettingsOf(DEFAULTS), ...settings }, context);
  return { store, clock, sink };
}

function remoteWrite(key: string, value: unknown, tsm: number, writer = 2) {
  const encoded = encodeValue(value);
  return { kind: ChangeKind.Insert, key, tsm, writer, crc: crcOf(encoded), encoded };
}

describe('max entries', () => {
  test('an insert past max evicts the least recently written entry', () => {
    const { store, sink } = makeStore({ max: 3 });
    store.set('a', 1);
    store.set('b', 2);
    store.set('c', 3);
    store.set('d', 4);
    assert.deepEqual(store.keys(), ['b', 'c', 'd']);
    assert.deepEqual(sink.evictions(), ['a']);
    assert.equal(store.counters().evicts, 1);
  });

  test('reads do not refresh recency; writes do', () => {
    const { store } = makeStore({ max: 3 });
    store.set('a', 1);
    store.set('b', 2);
    store.set('c', 3);
    for (let i = 0; i < 10; i++) store.get('a');
    store.set('d', 4);
    assert.equal(store.has('a'), false, 'a was read often but written first');
    store.set('b', 22); // rewrite b: c is now the oldest write
    store.set('e', 5);
    assert.deepEqual(store.keys(), ['d', 'b', 'e']);
  });

  test('each eviction is reported after the write, with its own newer tsm, and leaves a tombstone', () => {
    const { store, sink } = makeStore({ max: 2 });
    store.set('a', 1);
    const aTsm = store.metadataOf('a')!.tsm;
    store.set('b', 2);
    store.set('c', 3);
    const kinds = sink.calls.map((c) => [c.kind, c.key]);
    assert.deepEqual(kinds.slice(-2), [
      [ChangeKind.Insert, 'c'],
      [ChangeKind.Evict, 'a'],
    ]);
    const evict = sink.calls.at(-1)!;
    assert.ok(evict.tsm > sink.calls.at(-2)!.tsm);
    assert.equal(store.versionOf('a')!.tombstone, true);
    assert.equal(store.applyRemote(remoteWrite('a', 'late', aTsm + 1)), ApplyOutcome.Stale);
  });

  test('slots are reused and storage grows past its initial capacity', () => {
    const { store } = makeStore({ max: 1000 });
    for (let i = 0; i < 5000; i++) store.set(`k${i}`, i);
    assert.equal(store.count, 1000);
    assert.equal(store.get('k4999'), 4999);
    assert.equal(store.get('k3999'), undefined);
    assert.equal(store.get('k4000'), 4000);
    assert.equal(store.counters().evicts, 4000);
    for (let i = 4000; i < 4500; i++) store.delete(`k${i}`);
    for (let i = 0; i < 500; i++) store.set(`n${i}`, i);
    assert.equal(store.count, 1000);
    assert.equal(store.keys()[0], 'k4500');
  });
});

describe('max size', () => {
  test('an insert past size evicts the oldest writes until the total fits', () => {
    const entry = (key: string, value: string) => utf8Length(key) + encodeValue(value).length;
    const size = entry('a', 'x'.repeat(40)) * 3;
    const { store, sink } = makeStore({ size, max: 100 });
    store.set('a', 'x'.repeat(40));
    store.set('b', 'x'.repeat(40));
    store.set('c', 'x'.repeat(40));
    assert.equal(store.bytes, size);
    store.set('d', 'x'.repeat(80)); // needs the room of two entries
    assert.deepEqual(store.keys(), ['c', 'd']);
    assert.deepEqual(sink.evictions(), ['a', 'b']);
    assert.ok(store.bytes <= size);
  });

  test('size counts the UTF-8 bytes of keys and encoded values, and updates adjust it', () => {
    const { store } = makeStore();
    store.set('é', 'ab');
    assert.equal(store.bytes, 2 + encodeValue('ab').length);
    store.set('é', 'abcdef');
    assert.equal(store.bytes, 2 + encodeValue('abcdef').length);
    store.delete('é');
    assert.equal(store.bytes, 0);
  });

  test('utf8Length matches Buffer.byteLength', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 100 }), (text) => {
        assert.equal(utf8Length(text), Buffer.byteLength(text, 'utf8'));
      }),
      { numRuns: 2000, seed: 3 },
    );
  });
});

describe('expiry (ttl)', () => {
  test('an entry expires ttl seconds after its last write, invisible at once everywhere', () => {
    const { store, clock, sink } = makeStore({ ttl: 10 });
    store.set('k', 'v');
    store.set('other', 1);
    clock.advance(9_999);
    assert.equal(store.get('k'), 'v');
    clock.advance(1);
    assert.equal(store.get('k'), undefined);
    assert.equal(store.has('k'), false);
    assert.deepEqual(store.keys(), []);
    assert.deepEqual(store.checksum(), {});
    assert.equal(store.metadataOf('k'), undefined);
    assert.equal(store.versionOf('k'), undefined);
    assert.equal(store.count, 0);
    assert.equal(sink.calls.filter((c) => c.kind === ChangeKind.Evict).length, 0, 'expiry is not reported');
    assert.equal(store.delete('k'), false, 'deleting an expired key sends nothing');
    assert.equal(sink.calls.filter((c) => c.kind === ChangeKind.Delete).length, 0);
  });

  test('an update resets the timer; reads do not', () => {
    const { store, clock } = makeStore({ ttl: 10 });
    store.set('k', 1);
    clock.advance(6_000);
    store.get('k');
    store.set('k', 2);
    clock.advance(6_000);
    assert.equal(store.get('k'), 2);
    clock.advance(4_000);
    assert.equal(store.get('k'), undefined);
  });

  test('housekeep reclaims expired entries and counts them as expires, not evicts', () => {
    const { store, clock } = makeStore({ ttl: 1 });
    for (let i = 0; i < 10; i++) store.set(`k${i}`, i);
    clock.advance(500);
    store.set('young', 1);
    clock.advance(600);
    store.housekeep();
    const counters = store.counters();
    assert.equal(counters.count, 1);
    assert.equal(counters.expires, 10);
    assert.equal(counters.evicts, 0);
    assert.equal(counters.size, utf8Length('young') + encodeValue(1).length);
  });

  test('ttl 0 never expires', () => {
    const { store, clock } = makeStore({ ttl: 0 });
    store.set('k', 1);
    clock.advance(10 * 365 * 86_400_000);
    store.housekeep();
    assert.equal(store.get('k'), 1);
  });

  test('expired entries are reclaimed, not evicted, when making room', () => {
    const { store, clock, sink } = makeStore({ ttl: 1, max: 2 });
    store.set('a', 1);
    store.set('b', 2);
    clock.advance(1000);
    store.set('c', 3);
    assert.deepEqual(sink.evictions(), []);
    assert.deepEqual(store.keys(), ['c']);
  });

  test('writing an expired key again counts as an insert', () => {
    const { store, clock, sink } = makeStore({ ttl: 1 });
    store.set('k', 1);
    clock.advance(1000);
    store.set('k', 2);
    assert.equal(sink.calls.at(-1)!.kind, ChangeKind.Insert);
    assert.equal(store.counters().inserts, 2);
  });

  test('a remote entry expires from the WRITER timestamp, so every member expires it together', () => {
    const { store, clock } = makeStore({ ttl: 15 });
    const writtenTenSecondsAgo = millisToHlc(clock.now() - 10_000);
    assert.equal(store.applyRemote(remoteWrite('k', 'v', writtenTenSecondsAgo)), ApplyOutcome.Applied);
    clock.advance(4_999);
    assert.equal(store.get('k'), 'v');
    clock.advance(1);
    assert.equal(store.get('k'), undefined);
  });

  test('a remote change already expired on arrival is not stored', () => {
    const { store, clock } = makeStore({ ttl: 5 });
    const old = millisToHlc(clock.now() - 5_000);
    assert.equal(store.applyRemote(remoteWrite('k', 'v', old)), ApplyOutcome.Expired);
    assert.equal(store.has('k'), false);
    assert.equal(store.count, 0);
  });
});

describe('evictions caused by remote changes', () => {
  test('a remote insert that passes max evicts locally and reports it, so all members evict alike', () => {
    const { store, clock, sink } = makeStore({ max: 2 });
    const base = millisToHlc(clock.now());
    store.applyRemote(remoteWrite('a', 1, base));
    store.applyRemote(remoteWrite('b', 2, base + 1));
    assert.equal(sink.calls.length, 0);
    store.applyRemote(remoteWrite('c', 3, base + 2));
    assert.deepEqual(
      sink.calls.map((c) => [c.kind, c.key]),
      [[ChangeKind.Evict, 'a']],
    );
    assert.ok(sink.calls[0]!.tsm > base + 2, 'the eviction is a new local event');
  });

  test('members receiving the same writes in different orders evict the same keys', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.integer({ min: 0, max: 50 }), { minLength: 5, maxLength: 20 }),
        fc.integer(),
        (offsets, seed) => {
          const clock = new ManualClock();
          const base = millisToHlc(clock.now());
          const writes = offsets.map((offset, i) => remoteWrite(`k${i}`, i, base + offset, 2 + (i % 3)));
          const shuffled = [...writes].sort(
            (a, b) => (((a.tsm ^ seed) * 7) % 13) - (((b.tsm ^ seed) * 7) % 13),
          );
          const one = makeStore({ max: 4 }, 1, clock);
          const two = makeStore({ max: 4 }, 9, clock);
          for (const w of writes) one.store.applyRemote(w);
          for (const w of shuffled) two.store.applyRemote(w);
          assert.deepEqual(one.store.keys(), two.store.keys());
          assert.deepEqual(one.sink.evictions().sort(), two.sink.evictions().sort());
          assert.equal(one.sink.evictions().length, writes.length - 4);
        },
      ),
      { numRuns: 200, seed: 11 },
    );
  });

  test('remote writes are ordered by version, so the oldest version is evicted first', () => {
    const { store, clock } = makeStore({ max: 3 });
    const base = millisToHlc(clock.now());
    store.applyRemote(remoteWrite('newest', 1, base + 30));
    store.applyRemote(remoteWrite('oldest', 1, base + 10));
    store.applyRemote(remoteWrite('middle', 1, base + 20));
    assert.deepEqual(store.keys(), ['oldest', 'middle', 'newest']);
    store.set('local', 1);
    assert.deepEqual(store.keys(), ['middle', 'newest', 'local']);
  });
});

describe('changing limits', () => {
  test('applySettings with a smaller max evicts the oldest entries and reports them', () => {
    const { store, sink } = makeStore({ max: 10 });
    for (let i = 0; i < 10; i++) store.set(`k${i}`, i);
    store.applySettings({ ...store.settings, max: 4 });
    assert.deepEqual(store.keys(), ['k6', 'k7', 'k8', 'k9']);
    assert.equal(sink.evictions().length, 6);
  });
});
