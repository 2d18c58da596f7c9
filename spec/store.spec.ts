import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { encodeSimpleValue, xxhash64Short } from '../lib/cache/simple-encoding.js';
import { CacheStore, EntryTooLargeError, type StoreContext, utf8Length } from '../lib/cache/store.js';
import { ApplyOutcome, ChangeKind, type ReplicationSink } from '../lib/cache/types.js';
import { HybridLogicalClock, hlcToMillis, ManualClock, millisToHlc } from '../lib/clock.js';
import { type CacheSettings, type CallbackContext, cacheSettingsOf, DEFAULTS } from '../lib/config.js';
import type { Log } from '../lib/log.js';
import {
  crcHex,
  crcOf,
  decodeValue,
  decodeValueByCborX,
  encodeValue,
  UnencodableValueError,
} from '../lib/wire/value-codec.js';

interface SinkCall {
  cache: string;
  kind: ChangeKind;
  key: string;
  tsm: number;
  crc: bigint | undefined;
  encoded: Uint8Array | undefined;
}

class RecordingSink implements ReplicationSink {
  calls: SinkCall[] = [];
  localChange(
    cache: string,
    kind: ChangeKind,
    key: string,
    tsm: number,
    crcHigh: number,
    crcLow: number,
    encoded: Uint8Array | undefined,
  ): void {
    // `encoded` may be a scratch view: copy it, as the contract says.
    const crc = encoded === undefined ? undefined : (BigInt(crcHigh) << 32n) | BigInt(crcLow);
    if (encoded === undefined) assert.deepEqual([crcHigh, crcLow], [0, 0]);
    this.calls.push({ cache, kind, key, tsm, crc, encoded: encoded && Uint8Array.from(encoded) });
  }
}

class RecordingLog implements Log {
  readonly warnOn = true;
  readonly infoOn = true;
  readonly debugOn = false;
  lines: { level: string; message: string; meta?: object | undefined }[] = [];
  error(message: string, meta?: object) {
    this.lines.push({ level: 'error', message, meta });
  }
  warn(message: string, meta?: object) {
    this.lines.push({ level: 'warn', message, meta });
  }
  info(message: string, meta?: object) {
    this.lines.push({ level: 'info', message, meta });
  }
  debug(message: string, meta?: object) {
    this.lines.push({ level: 'debug', message, meta });
  }
}

const LOCAL = 0x10;
const PEER = 0x20;

function makeStore<V = unknown>(settings: Partial<CacheSettings> = {}, context: Partial<StoreContext> = {}) {
  const clock = new ManualClock();
  const sink = new RecordingSink();
  const log = new RecordingLog();
  const full: StoreContext = {
    clock,
    hlc: new HybridLogicalClock(clock),
    nodeId: LOCAL,
    log,
    sink,
    tombstoneTtlMs: 60_000,
    maxTombstones: 1000,
    ...context,
  };
  const store = new CacheStore<V>('test', { ...cacheSettingsOf(DEFAULTS), ...settings }, full);
  return { store, clock, sink, log, hlc: full.hlc };
}

function remoteWrite(
  key: string,
  value: unknown,
  tsm: number,
  writer = PEER,
  kind: ChangeKind = ChangeKind.Insert,
) {
  const encoded = encodeValue(value);
  return { kind, key, tsm, writer, crc: crcOf(encoded), encoded };
}

describe('local reads and writes', () => {
  test('set then get returns the value; a miss returns undefined', () => {
    const { store } = makeStore();
    store.set('a', { n: 1 });
    assert.deepEqual(store.get('a'), { n: 1 });
    assert.equal(store.get('missing'), undefined);
    assert.equal(store.has('a'), true);
    assert.equal(store.has('missing'), false);
    assert.equal(store.count, 1);
  });

  test('counts lookups, hits, misses, inserts, updates and deletes', () => {
    const { store } = makeStore();
    store.set('a', 1);
    store.set('a', 2);
    store.set('b', 3);
    store.get('a');
    store.get('a');
    store.get('nope');
    store.has('a'); // not a lookup
    store.delete('b');
    const counters = store.counters();
    assert.equal(counters.inserts, 2);
    assert.equal(counters.updates, 1);
    assert.equal(counters.deletes, 1);
    assert.equal(counters.hits, 2);
    assert.equal(counters.misses, 1);
    assert.equal(counters.lookups, 3);
    assert.equal(counters.count, 1);
    assert.equal(counters.size, utf8Length('a') + encodeValue(2).length);
  });

  test('delete of a missing key returns false and reports nothing', () => {
    const { store, sink } = makeStore();
    assert.equal(store.delete('ghost'), false);
    assert.equal(sink.calls.length, 0);
    assert.equal(store.counters().deletes, 0);
  });

  test('keys() lists live keys, least recently written first', () => {
    const { store } = makeStore();
    store.set('a', 1);
    store.set('b', 2);
    store.set('c', 3);
    store.set('a', 4);
    assert.deepEqual(store.keys(), ['b', 'c', 'a']);
  });

  test('every write gets a larger HLC timestamp', () => {
    const { store } = makeStore();
    store.set('a', 1);
    const first = store.metadataOf('a')!.tsm;
    store.set('a', 2);
    assert.ok(store.metadataOf('a')!.tsm > first);
  });

  test('stored values of every codec type read back, and re-encode to the same bytes', () => {
    const { store } = makeStore();
    const values: Record<string, unknown> = {
      object: { a: 1, nested: { b: [1, 2, { c: 'd' }] } },
      array: [1, 'two', null],
      map: new Map<unknown, unknown>([
        ['k', 1],
        [2, 'v'],
      ]),
      set: new Set([1, 2, 3]),
      date: new Date(1_700_000_000_000),
      bigint: 12345678901234567890n,
      typed: new Float64Array([1.5, 2.5]),
      bytes: new Uint8Array([1, 2, 3]),
      text: 'hé 🎉',
      number: -1.25,
    };
    for (const [key, value] of Object.entries(values)) {
      store.set(key, value);
      assert.equal(store.get(key), value, `${key} is the stored object itself`);
      const encoded = store.encodedValueOf(key)!;
      assert.deepEqual(decodeValue(encoded), value, `${key} survives the codec`);
      assert.equal(store.metadataOf(key)!.crc, crcHex(crcOf(encoded)));
    }
  });
});

describe('simple-value fast path', () => {
  test('encodes numbers, booleans, null, undefined and ASCII strings exactly as encodeValue', () => {
    const simple = fc.oneof(
      fc.integer(),
      fc.integer({ min: -(2 ** 33), max: 2 ** 33 }),
      fc.double(),
      fc.constantFrom(
        0,
        -0,
        23,
        24,
        255,
        256,
        65535,
        65536,
        2 ** 32 - 1,
        2 ** 32,
        -(2 ** 32),
        -(2 ** 32) - 1,
      ),
      fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 2 ** 53, -(2 ** 53)),
      fc.boolean(),
      fc.constant(null),
      fc.constant(undefined),
      fc.string({ maxLength: 300 }),
      fc.string({ unit: 'grapheme', maxLength: 40 }),
    );
    fc.assert(
      fc.property(simple, (value) => {
        const fast = encodeSimpleValue(value);
        if (fast === undefined) return; // not a simple value: cbor-x handles it
        assert.deepEqual(Buffer.from(fast), Buffer.from(encodeValue(value)));
      }),
      { numRuns: 3000, seed: 42 },
    );
  });

  test('the receive fast lane decodes exactly what cbor-x decodes, and throws where cbor-x throws', () => {
    const outcome = (decode: (bytes: Uint8Array) => unknown, bytes: Uint8Array) => {
      try {
        return { value: decode(bytes) };
      } catch {
        return { threw: true };
      }
    };
    const same = (bytes: Uint8Array) => {
      const fast = outcome(decodeValue, bytes);
      const reference = outcome(decodeValueByCborX, bytes);
      assert.deepEqual(fast, reference, `bytes ${Buffer.from(bytes).toString('hex')}`);
    };
    // Values, through the encoder (both lanes, as Buffers and as plain Uint8Array views).
    const values = fc.oneof(
      fc.string({ maxLength: 300 }),
      fc.string({ unit: 'grapheme', maxLength: 60 }),
      fc.string({ unit: 'binary', maxLength: 60 }),
      fc.integer({ min: -(2 ** 33), max: 2 ** 33 }),
      fc.double(),
      fc.constantFrom(true, false, null, undefined, '\uFFFD', `${'x'.repeat(30)}\uFFFD`),
    );
    fc.assert(
      fc.property(values, (value) => {
        const bytes = encodeValue(value);
        same(bytes);
        same(new Uint8Array(bytes));
      }),
      { numRuns: 3000, seed: 11 },
    );
    // Hostile bytes: simple-looking heads with wrong lengths, invalid UTF-8, trailing bytes.
    const heads = fc.constantFrom(
      0x00,
      0x17,
      0x18,
      0x19,
      0x1a,
      0x1b,
      0x20,
      0x38,
      0x3a,
      0x60,
      0x65,
      0x78,
      0x79,
      0xf4,
      0xf7,
      0xfb,
    );
    fc.assert(
      fc.property(heads, fc.uint8Array({ maxLength: 12 }), (head, tail) =>
        same(Uint8Array.of(head, ...tail)),
      ),
      { numRuns: 5000, seed: 12 },
    );
    same(Uint8Array.of(0x63, 0xc3, 0x28, 0x41)); // invalid UTF-8
    same(Uint8Array.of(0x62, 0xed, 0xa0)); // cut-off sequence
    same(Uint8Array.of(0x78, 0x02, 0x41, 0x42)); // non-shortest length head
  });

  test('the JS XXH64 of short inputs equals crcOf', () => {
    const halves = new Uint32Array(6);
    const wide = new BigUint64Array(halves.buffer);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 31 }), fc.integer({ min: 0, max: 2 }), (bytes, index) => {
        xxhash64Short(bytes, halves, index);
        assert.equal(wide[index], crcOf(bytes));
      }),
      { numRuns: 5000, seed: 5 },
    );
  });

  test('metadata crc of values hashed in JS and in wasm equals crcOf of their encoding', () => {
    const { store } = makeStore();
    const values = [
      0,
      7,
      -1.5,
      'short',
      'a somewhat longer ascii string',
      { a: 1 },
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    ];
    values.forEach((value, i) => {
      store.set(`k${i}`, value);
      assert.equal(store.metadataOf(`k${i}`)!.crc, crcHex(crcOf(encodeValue(value))));
      assert.equal(store.versionOf(`k${i}`)!.crc, crcOf(encodeValue(value)));
    });
  });

  test('takes the fast path for the values it claims, and declines objects and non-ASCII text', () => {
    assert.ok(encodeSimpleValue(12) instanceof Uint8Array);
    assert.ok(encodeSimpleValue('ascii') instanceof Uint8Array);
    assert.ok(encodeSimpleValue('x'.repeat(255)) instanceof Uint8Array);
    assert.equal(encodeSimpleValue('x'.repeat(256)), undefined);
    assert.equal(encodeSimpleValue('é'), undefined);
    // Long strings go through one native UTF-8 write: non-ASCII anywhere, even where a shorter
    // buffer would have cut the UTF-8 to exactly the string's length, must still be declined.
    assert.equal(encodeSimpleValue(`${'x'.repeat(253)}éé`), undefined);
    assert.equal(encodeSimpleValue(`${'x'.repeat(30)}\ud800`), undefined);
    assert.equal(encodeSimpleValue(`${'x'.repeat(23)}é`), undefined);
    assert.equal(encodeSimpleValue(`é${'x'.repeat(100)}`), undefined);
    assert.deepEqual(
      Buffer.from(encodeSimpleValue('y'.repeat(24))!),
      Buffer.from(encodeValue('y'.repeat(24))),
    );
    assert.equal(encodeSimpleValue({}), undefined);
    assert.equal(encodeSimpleValue(1n), undefined);
  });

  test('the sink sees the exact bytes of each write, though simple values share one scratch view', () => {
    const { store, sink } = makeStore();
    store.set('a', 1000);
    store.set('b', 'text');
    assert.deepEqual(decodeValue(sink.calls[0]!.encoded!), 1000);
    assert.deepEqual(decodeValue(sink.calls[1]!.encoded!), 'text');
  });
});

describe('metadata and checksums', () => {
  test('metadataOf gives tsm, crc, lkp, exp, writer and size', () => {
    const { store, clock } = makeStore({ ttl: 60 });
    store.set('k', { v: 1 });
    let metadata = store.metadataOf('k')!;
    const encoded = encodeValue({ v: 1 });
    assert.equal(metadata.crc, crcHex(crcOf(encoded)));
    assert.equal(metadata.crc.length, 16);
    assert.equal(metadata.lkp, 0, 'never read');
    assert.equal(metadata.exp, hlcToMillis(metadata.tsm) + 60_000);
    assert.equal(metadata.writer, LOCAL.toString(16).padStart(8, '0'));
    assert.equal(metadata.size, 1 + encoded.length);
    assert.equal(hlcToMillis(metadata.tsm), clock.now());
    clock.advance(1500);
    store.get('k');
    metadata = store.metadataOf('k')!;
    assert.equal(metadata.lkp, clock.now());
  });

  test('metadata of a missing key is undefined; exp is null without ttl', () => {
    const { store } = makeStore({ ttl: 0 });
    assert.equal(store.metadataOf('nope'), undefined);
    store.set('k', 1);
    assert.equal(store.metadataOf('k')!.exp, null);
  });

  test('checksum lists { crc, tsm } sorted by key, or one key', () => {
    const { store } = makeStore();
    store.set('b', 2);
    store.set('a', 1);
    store.set('__proto__', 3);
    const sums = store.checksum();
    assert.deepEqual(Object.keys(sums), ['__proto__', 'a', 'b']);
    assert.equal(Object.getPrototypeOf(sums), Object.prototype);
    assert.deepEqual(sums.a, { crc: crcHex(crcOf(encodeValue(1))), tsm: store.metadataOf('a')!.tsm });
    assert.deepEqual(Object.keys(store.checksum('b')), ['b']);
    assert.deepEqual(store.checksum('missing'), {});
    assert.equal(JSON.parse(JSON.stringify(sums)).b.crc, sums.b!.crc);
  });
});

describe('bad input leaves the cache unchanged', () => {
  test('an unencodable value throws a TypeError naming the key; the old value stays', () => {
    const { store, sink } = makeStore();
    store.set('k', 'old');
    const calls = sink.calls.length;
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    for (const bad of [() => 1, Symbol('s'), circular, { fn() {} }]) {
      assert.throws(
        () => store.set('k', bad),
        (error: unknown) =>
          error instanceof TypeError && /cannot cache key "k"/.test((error as Error).message),
      );
    }
    assert.throws(() => store.set('new', () => 1), UnencodableValueError);
    assert.equal(store.get('k'), 'old');
    assert.equal(store.has('new'), false);
    assert.equal(sink.calls.length, calls);
    assert.equal(store.count, 1);
  });

  test('an entry larger than the size limit is refused with a clear TypeError', () => {
    const { store, sink } = makeStore({ size: 100 });
    store.set('small', 'x');
    assert.throws(
      () => store.set('big', 'y'.repeat(200)),
      (error: unknown) =>
        error instanceof EntryTooLargeError &&
        error instanceof TypeError &&
        /takes \d+ bytes.*size limit of 100 bytes/.test(error.message),
    );
    assert.equal(store.has('big'), false);
    assert.equal(store.get('small'), 'x', 'nothing was evicted to make room');
    assert.equal(sink.calls.length, 1);
  });
});

describe('the freeze option', () => {
  test('with freeze, in-place mutation of stored objects throws', () => {
    const { store } = makeStore({ freeze: true });
    const profile = { name: 'ann', tags: ['a'], address: { city: 'Oslo' } };
    store.set('p', profile);
    const stored = store.get('p') as typeof profile;
    assert.throws(() => {
      stored.name = 'bob';
    }, TypeError);
    assert.throws(() => stored.tags.push('b'), TypeError);
    assert.throws(() => {
      stored.address.city = 'Rome';
    }, TypeError);
    store.set('m', new Map([['a', 1]]));
    assert.throws(
      () => (store.get('m') as Map<string, number>).set('b', 2),
      /frozen by the cache option `freeze`/,
    );
    store.set('s', new Set([1]));
    assert.throws(() => (store.get('s') as Set<number>).add(2), TypeError);
    assert.equal((store.get('s') as Set<number>).has(1), true, 'reads still work');
  });

  test('without freeze, values stay mutable (and such mutation is not replicated)', () => {
    const { store, sink } = makeStore();
    const value = { n: 1 };
    store.set('v', value);
    const crc = store.metadataOf('v')!.crc;
    value.n = 2;
    assert.equal((store.get('v') as { n: number }).n, 2);
    assert.equal(store.metadataOf('v')!.crc, crc, 'metadata still describes the value as written');
    assert.equal(sink.calls.length, 1);
  });
});

describe('replication sink', () => {
  test('reports inserts, updates and deletes with tsm, crc and encoded bytes', () => {
    const { store, sink } = makeStore();
    store.set('k', { a: 1 });
    store.set('k', { a: 2 });
    store.delete('k');
    assert.deepEqual(
      sink.calls.map((c) => [c.cache, c.kind, c.key]),
      [
        ['test', ChangeKind.Insert, 'k'],
        ['test', ChangeKind.Update, 'k'],
        ['test', ChangeKind.Delete, 'k'],
      ],
    );
    const [insert, update, remove] = sink.calls;
    assert.deepEqual(decodeValue(insert!.encoded!), { a: 1 });
    assert.equal(insert!.crc, crcOf(insert!.encoded!));
    assert.deepEqual(decodeValue(update!.encoded!), { a: 2 });
    assert.ok(update!.tsm > insert!.tsm && remove!.tsm > update!.tsm);
    assert.equal(remove!.crc, undefined);
    assert.equal(remove!.encoded, undefined);
  });

  test('reports the crc of short strings, numbers and long values as the halves of crcOf', () => {
    const { store, sink } = makeStore();
    const values = ['hello', 12345, -7.5, 'x'.repeat(5000), { nested: ['a', 1] }];
    for (const [i, value] of values.entries()) store.set(`v${i}`, value);
    assert.equal(sink.calls.length, values.length);
    for (const [i, call] of sink.calls.entries()) {
      assert.deepEqual(decodeValue(call.encoded!), values[i]);
      assert.equal(call.crc, crcOf(call.encoded!), `crc of ${JSON.stringify(values[i]).slice(0, 20)}`);
      assert.equal(call.crc, store.versionOf(`v${i}`)!.crc);
    }
  });

  test('a sink attached after creation receives later changes', () => {
    const { store } = makeStore({}, { sink: undefined });
    store.set('before', 1);
    const late = new RecordingSink();
    (store as unknown as { context: StoreContext }).context.sink = late;
    store.set('after', 2);
    assert.deepEqual(
      late.calls.map((c) => c.key),
      ['after'],
    );
  });
});

describe('last write wins', () => {
  test('a newer remote write applies; an older one is stale', () => {
    const { store, clock } = makeStore();
    store.set('k', 'local');
    const localTsm = store.metadataOf('k')!.tsm;
    assert.equal(store.applyRemote(remoteWrite('k', 'older', localTsm - 1)), ApplyOutcome.Stale);
    assert.equal(store.get('k'), 'local');
    const newer = millisToHlc(clock.now() + 5);
    assert.equal(store.applyRemote(remoteWrite('k', 'newer', newer)), ApplyOutcome.Applied);
    assert.equal(store.get('k'), 'newer');
    const metadata = store.metadataOf('k')!;
    assert.equal(metadata.tsm, newer);
    assert.equal(metadata.writer, PEER.toString(16).padStart(8, '0'));
    const counters = store.counters();
    assert.equal(counters.remoteApplied, 1);
    assert.equal(counters.remoteStale, 1);
  });

  test('equal timestamps are broken by writer id; equal version is stale', () => {
    const { store, clock } = makeStore();
    const tsm = millisToHlc(clock.now());
    assert.equal(store.applyRemote(remoteWrite('k', 'from 0x20', tsm, 0x20)), ApplyOutcome.Applied);
    assert.equal(store.applyRemote(remoteWrite('k', 'from 0x10', tsm, 0x10)), ApplyOutcome.Stale);
    assert.equal(store.applyRemote(remoteWrite('k', 'again 0x20', tsm, 0x20)), ApplyOutcome.Stale);
    assert.equal(store.applyRemote(remoteWrite('k', 'from 0x30', tsm, 0x30)), ApplyOutcome.Applied);
    assert.equal(store.get('k'), 'from 0x30');
  });

  test('members applying the same changes in any order end with the same value', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 5 }), fc.integer({ min: 1, max: 4 }), fc.boolean()), {
          minLength: 1,
          maxLength: 12,
        }),
        fc.integer(),
        (changes, seed) => {
          const base = millisToHlc(1_700_000_000_000);
          const list = changes.map(([dt, writer, isDelete], i) => ({
            kind: isDelete ? ChangeKind.Delete : ChangeKind.Update,
            key: 'k',
            tsm: base + dt,
            writer,
            ...(isDelete ? {} : { encoded: encodeValue(`v${i}`) }),
          }));
          const shuffled = [...list].sort(
            (a, b) => ((a.tsm * 31 + a.writer) ^ seed) - ((b.tsm * 31 + b.writer) ^ seed),
          );
          const one = makeStore().store;
          const two = makeStore().store;
          for (const change of list) one.applyRemote(change);
          for (const change of shuffled) two.applyRemote(change);
          assert.deepEqual(one.versionOf('k'), two.versionOf('k'));
          assert.equal(one.get('k'), two.get('k'));
        },
      ),
      { numRuns: 300, seed: 7 },
    );
  });

  test('a remote change moves the HLC, so the next local write is newer', () => {
    const { store, clock } = makeStore();
    const ahead = millisToHlc(clock.now() + 10_000);
    store.applyRemote(remoteWrite('k', 'remote', ahead));
    store.set('k', 'local');
    assert.ok(store.metadataOf('k')!.tsm > ahead);
    assert.equal(store.get('k'), 'local');
  });

  test('applyRemote never reports to the sink', () => {
    const { store, sink, clock } = makeStore();
    const tsm = millisToHlc(clock.now());
    store.applyRemote(remoteWrite('a', 1, tsm));
    store.applyRemote(remoteWrite('a', 2, tsm + 1, PEER, ChangeKind.Update));
    store.applyRemote({ kind: ChangeKind.Delete, key: 'a', tsm: tsm + 2, writer: PEER });
    assert.equal(sink.calls.length, 0);
    assert.equal(store.counters().inserts, 1);
    assert.equal(store.counters().updates, 1);
    assert.equal(store.counters().deletes, 1);
  });

  test('remote values that cannot be decoded, or are too large, are rejected and counted', () => {
    const { store, clock, log } = makeStore({ size: 64 });
    const tsm = millisToHlc(clock.now());
    const corrupt = {
      kind: ChangeKind.Insert,
      key: 'bad',
      tsm,
      writer: PEER,
      encoded: new Uint8Array([0x1c]),
    };
    assert.equal(store.applyRemote(corrupt), ApplyOutcome.Rejected);
    assert.equal(store.applyRemote(remoteWrite('big', 'z'.repeat(100), tsm)), ApplyOutcome.Rejected);
    assert.equal(
      store.applyRemote({ kind: ChangeKind.Insert, key: 'none', tsm, writer: PEER }),
      ApplyOutcome.Rejected,
    );
    assert.equal(
      store.applyRemote({ kind: 99 as ChangeKind, key: 'odd', tsm, writer: PEER }),
      ApplyOutcome.Rejected,
    );
    assert.equal(store.count, 0);
    assert.equal(store.counters().remoteRejected, 4);
    assert.ok(log.lines.some((line) => line.level === 'warn' && line.message.includes('"bad"')));
  });
});

describe('tombstones', () => {
  test('a delete leaves a tombstone so a delayed older update cannot resurrect the key', () => {
    const { store, clock } = makeStore();
    const early = millisToHlc(clock.now());
    clock.advance(10);
    store.set('k', 'v');
    store.delete('k');
    const version = store.versionOf('k')!;
    assert.equal(version.tombstone, true);
    assert.equal(version.writer, LOCAL);
    assert.equal(version.crc, 0n);
    assert.equal(store.applyRemote(remoteWrite('k', 'late', early)), ApplyOutcome.Stale);
    assert.equal(store.has('k'), false);
    assert.equal(store.applyRemote(remoteWrite('k', 'newer', version.tsm + 1)), ApplyOutcome.Applied);
    assert.equal(store.get('k'), 'newer');
    assert.equal(store.versionOf('k')!.tombstone, false);
  });

  test('a remote delete of a key not held still leaves a tombstone (mode 1)', () => {
    const { store, clock } = makeStore();
    const tsm = millisToHlc(clock.now());
    assert.equal(
      store.applyRemote({ kind: ChangeKind.Delete, key: 'k', tsm: tsm + 5, writer: PEER }),
      ApplyOutcome.Applied,
    );
    assert.equal(store.applyRemote(remoteWrite('k', 'old', tsm)), ApplyOutcome.Stale);
    assert.equal(store.counters().deletes, 0, 'nothing was deleted here');
  });

  test('a stale remote delete does not remove a newer entry', () => {
    const { store } = makeStore();
    store.set('k', 'v');
    const tsm = store.metadataOf('k')!.tsm;
    assert.equal(
      store.applyRemote({ kind: ChangeKind.Delete, key: 'k', tsm: tsm - 1, writer: PEER }),
      ApplyOutcome.Stale,
    );
    assert.equal(store.get('k'), 'v');
  });

  test('tombstones are bounded: the oldest are dropped and counted', () => {
    const { store } = makeStore({}, { maxTombstones: 2 });
    for (const key of ['a', 'b', 'c']) {
      store.set(key, 1);
      store.delete(key);
    }
    const counters = store.counters();
    assert.equal(counters.tombstones, 2);
    assert.equal(counters.tombstonesDropped, 1);
    assert.equal(store.versionOf('a'), undefined);
    assert.equal(store.versionOf('c')!.tombstone, true);
  });

  test('housekeep drops tombstones older than tombstoneTtlMs', () => {
    const { store, clock } = makeStore({}, { tombstoneTtlMs: 60_000 });
    store.set('a', 1);
    store.delete('a');
    clock.advance(30_000);
    store.set('b', 1);
    store.delete('b');
    clock.advance(30_000);
    store.housekeep();
    assert.equal(store.versionOf('a'), undefined);
    assert.equal(store.versionOf('b')!.tombstone, true);
    clock.advance(30_000);
    store.housekeep();
    assert.equal(store.counters().tombstones, 0);
  });
});

describe('mode 0', () => {
  test('remote writes apply only to keys held here; deletes only if held', () => {
    const { store, clock } = makeStore({ mode: 0 });
    const tsm = millisToHlc(clock.now() + 1);
    assert.equal(store.applyRemote(remoteWrite('absent', 1, tsm)), ApplyOutcome.NotHeld);
    assert.equal(store.has('absent'), false);
    assert.equal(
      store.applyRemote({ kind: ChangeKind.Delete, key: 'absent', tsm, writer: PEER }),
      ApplyOutcome.NotHeld,
    );
    store.set('held', 'mine');
    const later = store.metadataOf('held')!.tsm + 1;
    assert.equal(
      store.applyRemote(remoteWrite('held', 'theirs', later, PEER, ChangeKind.Update)),
      ApplyOutcome.Applied,
    );
    assert.equal(store.get('held'), 'theirs');
    assert.equal(
      store.applyRemote({ kind: ChangeKind.Delete, key: 'held', tsm: later + 1, writer: PEER }),
      ApplyOutcome.Applied,
    );
    assert.equal(store.has('held'), false);
  });
});

describe('clearing', () => {
  test('clearBefore removes older entries and tombstones and ignores older remote changes', () => {
    const { store, clock, sink } = makeStore();
    store.set('old', 1);
    store.set('gone', 1);
    store.delete('gone');
    clock.advance(10);
    const mark = millisToHlc(clock.now());
    clock.advance(10);
    store.set('new', 2);
    const calls = sink.calls.length;
    assert.equal(store.clearBefore(mark, PEER), 1);
    assert.deepEqual(store.keys(), ['new']);
    assert.equal(store.versionOf('gone'), undefined);
    assert.equal(store.applyRemote(remoteWrite('late', 1, mark - 5)), ApplyOutcome.Cleared);
    assert.equal(store.applyRemote(remoteWrite('fresh', 1, mark + 1)), ApplyOutcome.Applied);
    assert.equal(sink.calls.length, calls, 'clearing is not reported');
  });

  test('clearLocal empties the store without reporting and keeps working', () => {
    const { store, sink } = makeStore();
    for (let i = 0; i < 100; i++) store.set(`k${i}`, i);
    store.delete('k1');
    const calls = sink.calls.length;
    store.clearLocal();
    assert.equal(store.count, 0);
    assert.equal(store.bytes, 0);
    assert.deepEqual(store.keys(), []);
    assert.equal(store.versionOf('k1'), undefined);
    assert.equal(sink.calls.length, calls);
    store.set('again', 1);
    assert.deepEqual(store.keys(), ['again']);
  });
});

describe('engine API', () => {
  test('versionOf, forEachVersion and encodedValueOf describe entries and tombstones', () => {
    const { store } = makeStore();
    store.set('live', { x: 1 });
    store.set('dead', 2);
    store.delete('dead');
    const seen = new Map<string, boolean>();
    store.forEachVersion((key, version) => seen.set(key, version.tombstone));
    assert.deepEqual(
      [...seen],
      [
        ['live', false],
        ['dead', true],
      ],
    );
    const live = store.versionOf('live')!;
    assert.equal(live.crc, crcOf(store.encodedValueOf('live')!));
    assert.equal(live.writer, LOCAL);
    assert.equal(store.encodedValueOf('dead'), undefined);
    assert.equal(store.versionOf('never'), undefined);
  });

  test('encodedValueOf returns bytes of its own, which later writes of simple values leave intact', () => {
    const { store } = makeStore();
    store.set('text', 'a string long enough for the native write path');
    store.set('number', 42);
    const text = store.encodedValueOf('text')!;
    const number = store.encodedValueOf('number')!;
    store.set('other', 'another string that would land in the same scratch bytes');
    assert.equal(decodeValue(text), 'a string long enough for the native write path');
    assert.equal(decodeValue(number), 42);
  });

  test('a value replicated through encodedValueOf arrives equal, with the same crc', () => {
    const a = makeStore();
    const b = makeStore({}, { nodeId: PEER });
    a.store.set('k', { list: [1, 2, 3], when: new Date(5) });
    const version = a.store.versionOf('k')!;
    const encoded = a.store.encodedValueOf('k')!;
    assert.equal(
      b.store.applyRemote({
        kind: ChangeKind.Insert,
        key: 'k',
        tsm: version.tsm,
        writer: version.writer,
        crc: version.crc,
        encoded,
      }),
      ApplyOutcome.Applied,
    );
    assert.deepEqual(b.store.get('k'), a.store.get('k'));
    assert.deepEqual(b.store.checksum(), a.store.checksum());
  });
});

describe('callbacks', () => {
  function withCallback(settings: Partial<CacheSettings> = {}) {
    const seen: CallbackContext[] = [];
    const made = makeStore({ callbackWin: 5, callback: (ctx) => seen.push(ctx), ...settings });
    return { ...made, seen };
  }

  test('fires on a remote update of a key read within callbackWin, with the seed fields', () => {
    const { store, clock, seen } = withCallback();
    store.set('k', 'v1');
    const previous = store.metadataOf('k')!.crc;
    store.get('k');
    const readAt = clock.now();
    clock.advance(2000);
    const change = remoteWrite('k', 'v2', millisToHlc(clock.now()));
    assert.equal(store.applyRemote(change), ApplyOutcome.Applied);
    assert.equal(seen.length, 1);
    assert.deepEqual(seen[0], {
      type: 'update',
      namespace: 'test',
      key: 'k',
      lkp: readAt,
      tsm: change.tsm,
      elapsed: 2000,
      prvcrc: previous,
      newcrc: crcHex(change.crc),
    });
    assert.equal(store.get('k'), 'v2', 'the change was applied before the callback');
    assert.equal(store.counters().callbacks, 1);
  });

  test('fires on remote deletes, and as incoherent for repairs', () => {
    const { store, clock, seen } = withCallback();
    store.set('a', 1);
    store.set('b', 2);
    store.get('a');
    store.get('b');
    const tsm = millisToHlc(clock.now() + 1);
    store.applyRemote({ kind: ChangeKind.Delete, key: 'a', tsm, writer: PEER });
    store.applyRemote(remoteWrite('b', 3, tsm), true);
    assert.deepEqual(
      seen.map((ctx) => [ctx.type, ctx.key, ctx.newcrc === undefined]),
      [
        ['delete', 'a', true],
        ['incoherent', 'b', false],
      ],
    );
  });

  test('does not fire for unread keys, reads older than the window, local or stale changes', () => {
    const { store, clock, seen } = withCallback();
    store.set('unread', 1);
    store.set('old', 1);
    store.get('old');
    clock.advance(5001);
    store.applyRemote(remoteWrite('unread', 2, millisToHlc(clock.now())));
    store.applyRemote(remoteWrite('old', 2, millisToHlc(clock.now())));
    store.set('local', 1);
    store.get('local');
    store.set('local', 2);
    store.applyRemote(remoteWrite('local', 3, 1));
    assert.equal(seen.length, 0);
  });

  test('a throwing callback is logged and counted and never breaks the cache', async () => {
    const { store, clock, log } = makeStore({
      callback: () => {
        throw new Error('boom');
      },
    });
    store.set('k', 1);
    store.get('k');
    const outcome = store.applyRemote(remoteWrite('k', 2, millisToHlc(clock.now() + 1)));
    assert.equal(outcome, ApplyOutcome.Applied);
    assert.equal(store.get('k'), 2);
    assert.equal(store.counters().callbackErrors, 1);
    assert.ok(log.lines.some((line) => line.level === 'error' && /callback threw/.test(line.message)));
  });

  test('a callback returning a rejected promise is counted, not left unhandled', async () => {
    const { store, clock } = makeStore({ callback: async () => Promise.reject(new Error('later')) });
    store.set('k', 1);
    store.get('k');
    store.applyRemote(remoteWrite('k', 2, millisToHlc(clock.now() + 1)));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(store.counters().callbackErrors, 1);
  });
});

describe('spikes', () => {
  test('changes within 5 s of the previous change count as spikes; spikeInt is their mean interval in s', () => {
    const { store, clock } = makeStore();
    store.set('a', 1); // first change: no previous one
    clock.advance(100);
    store.set('b', 1);
    clock.advance(300);
    store.set('a', 2);
    clock.advance(6000); // outside the window
    store.delete('b');
    clock.advance(200);
    store.delete('a');
    const counters = store.counters();
    assert.equal(counters.spikes, 3);
    assert.equal(counters.spikeInt, 0.2); // (100 + 300 + 200) / 3 ms
  });
});

describe('settings', () => {
  test('rejects a node id that is not an unsigned 32-bit integer', () => {
    assert.throws(() => makeStore({}, { nodeId: -1 }), /unsigned 32-bit/);
    assert.throws(() => makeStore({}, { nodeId: 2 ** 32 }), /unsigned 32-bit/);
  });

  test('counters() is plain JSON', () => {
    const { store } = makeStore();
    store.set('a', 1);
    const counters = store.counters();
    assert.deepEqual(JSON.parse(JSON.stringify(counters)), counters);
  });
});

describe('keys every member can carry', () => {
  test('a key longer than the wire allows is refused at assignment, cache unchanged', () => {
    const { store } = makeStore();
    assert.throws(() => store.set('k'.repeat(65_537), 1), /limited to 65536 characters/);
    assert.equal(store.count, 0);
    store.set('k'.repeat(65_536), 1);
    assert.equal(store.count, 1);
  });

  test('a key with a lone surrogate is refused: UTF-8 would change it on the way', () => {
    const { store } = makeStore();
    assert.throws(() => store.set('bad\ud800', 1), /lone surrogate/);
    store.set('emoji \ud83d\ude00', 1);
    assert.equal(store.get('emoji \ud83d\ude00'), 1);
  });
});
