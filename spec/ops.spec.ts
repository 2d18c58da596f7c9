import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Decoder, Encoder } from 'cbor-x';
import fc from 'fast-check';
import { latin1Text, utf8Text } from '../lib/wire/buffer-text.js';
import {
  DecodedMessage,
  decodeEntries,
  decodeMessage,
  type Entry,
  encodeDataOpHead,
  encodeEntries,
  encodeEntry,
  encodeEntryGeneric,
  MAX_BUCKETS,
  MAX_CACHE_NAME_LENGTH,
  MAX_KEY_LENGTH,
  MAX_LIST_ITEMS,
  MAX_RESULT_DEPTH,
  Op,
} from '../lib/wire/ops.js';
import { decodeValue, decodeValueAt, encodeValue } from '../lib/wire/value-codec.js';

const SEED = 20_260_301;

// Crafts payloads the real encoder would never produce, with the same base options.
const raw = new Encoder({ useRecords: false, tagUint8Array: false, mapsAsObjects: true });
const rawEntry = (...fields: unknown[]): Uint8Array => raw.encode(fields);

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const tsm = fc.maxSafeNat();
const text = fc.string({ unit: 'binary', maxLength: 40 });
const cacheName = fc.oneof(text, fc.string({ minLength: 250, maxLength: MAX_CACHE_NAME_LENGTH }));
const key = fc.oneof(text, fc.string({ unit: 'binary', maxLength: 2000 }));
const crc = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
// Decoded values are plain Uint8Array views of the payload.
const value = fc.uint8Array({ maxLength: 3000 });

const plainData = fc.letrec((tie) => ({
  leaf: fc.oneof(
    fc.constant(null),
    fc.constant(undefined),
    fc.boolean(),
    fc.double().map((n) => (Object.is(n, -0) ? 0 : n)),
    fc.integer(),
    fc.maxSafeInteger(),
    text,
    fc.bigInt({ min: -(2n ** 64n), max: 2n ** 64n - 1n }),
    fc.uint8Array({ maxLength: 20 }).map((bytes) => Buffer.from(bytes)),
  ),
  node: fc.oneof({ depthSize: 'small', withCrossShrink: true }, tie('leaf'), tie('array'), tie('object')),
  array: fc.array(tie('node'), { maxLength: 5 }),
  // '__proto__' is renamed by the decoder (prototype pollution guard), so it cannot round-trip.
  object: fc.dictionary(
    text.filter((k) => k !== '__proto__'),
    tie('node'),
    { maxKeys: 5, noNullPrototype: true },
  ),
})).node;

const entryArbitrary: fc.Arbitrary<Entry> = fc
  .oneof(
    fc.record({
      op: fc.constantFrom(Op.INS, Op.UPD),
      cache: cacheName,
      key,
      tsm,
      writer: u32,
      crc,
      value,
    }),
    fc.record({ op: fc.constantFrom(Op.DEL, Op.EVT), cache: cacheName, key, tsm, writer: u32 }),
    fc.record({ op: fc.constant(Op.RST), cache: fc.option(cacheName), tsm, writer: u32, target: u32 }),
    fc.record({
      op: fc.constant(Op.ACK),
      highestSeq: u32,
      lowestRetained: u32,
      received: fc.array(fc.tuple(u32, u32), { maxLength: 20 }),
    }),
    fc.record({
      op: fc.constant(Op.NAK),
      target: u32,
      missing: fc.array(fc.tuple(u32, u32), { maxLength: 20 }),
    }),
    fc.record({
      op: fc.constant(Op.REQ),
      target: u32,
      cache: cacheName,
      keys: fc.array(key, { maxLength: 10 }),
    }),
    fc.record({ op: fc.constantFrom(Op.NEW, Op.BYE) }),
    fc.record({ op: fc.constant(Op.SYC), cache: cacheName, buckets: fc.array(u32, { maxLength: 300 }) }),
    fc.record({
      op: fc.constant(Op.SYD),
      target: u32,
      cache: cacheName,
      bucket: fc.integer({ min: 0, max: MAX_BUCKETS - 1 }),
      reply: fc.boolean(),
      versions: fc.array(fc.tuple(key, tsm, u32, crc, fc.boolean()), { maxLength: 10 }),
    }),
    fc.record({ op: fc.constant(Op.STE), target: u32 }),
    fc.record({
      op: fc.constant(Op.INQ),
      requestId: u32,
      target: u32,
      cache: fc.option(cacheName),
      key: fc.option(key),
    }),
    fc.record({ op: fc.constantFrom(Op.CHK, Op.MTR), requestId: u32, target: u32, result: plainData }),
    fc.record({ op: fc.constant(Op.MET), requestId: u32, target: u32, cache: fc.option(cacheName) }),
    // fc.record builds null-prototype objects; decoded entries are plain object literals.
  )
  .map((entry) => ({ ...entry })) as fc.Arbitrary<Entry>;

function decodedOrFail(payload: Uint8Array): Entry[] {
  const result = decodeEntries(payload);
  assert.ok(result.ok, `expected the payload to decode, got ${result.ok ? '' : result.reason}`);
  return result.entries;
}

function assertRejected(payload: Uint8Array, reason: 'decode' | 'shape'): void {
  assert.deepEqual(decodeEntries(payload), { ok: false, reason });
}

describe('op entries round-trip', () => {
  test('every entry type encodes and decodes to an equal entry', () => {
    fc.assert(
      fc.property(entryArbitrary, (entry) => {
        assert.deepStrictEqual(decodedOrFail(encodeEntry(entry)), [entry]);
      }),
      { seed: SEED, numRuns: 3000 },
    );
  });

  test('a batch of entries decodes to the same entries in the same order', () => {
    fc.assert(
      fc.property(fc.array(entryArbitrary, { maxLength: 30 }), (entries) => {
        assert.deepStrictEqual(decodedOrFail(encodeEntries(entries)), entries);
      }),
      { seed: SEED, numRuns: 300 },
    );
  });

  test('cache names decode right when consecutive ops repeat, switch, lengthen or shorten them', () => {
    const names = [
      'users',
      'users',
      'orders',
      'users',
      'u',
      '',
      'a-cache-name-of-exactly-23',
      'x'.repeat(40),
      'users',
      'usert',
    ];
    const entries: Entry[] = names.map((cache, i) => ({
      op: Op.DEL,
      cache,
      key: `k${i}`,
      tsm: 1000 + i,
      writer: 9,
    }));
    // Twice: the second decode starts with the last name of the first one remembered.
    for (let round = 0; round < 2; round++) {
      assert.deepStrictEqual(
        decodedOrFail(encodeEntries(entries)).map((e) => (e as { cache: string }).cache),
        names,
      );
    }
  });

  test('the fast data-op writer emits exactly the bytes of the pinned cbor-x encoder', () => {
    fc.assert(
      fc.property(entryArbitrary, (entry) => {
        assert.deepEqual(Buffer.from(encodeEntry(entry)), Buffer.from(encodeEntryGeneric(entry)));
      }),
      { seed: SEED, numRuns: 3000 },
    );
  });

  test('what the generic cbor-x decoder reads from an entry is [code, ...fields]', () => {
    const decoder = new Decoder({ useRecords: false, mapsAsObjects: true });
    const value = Buffer.from([1, 2, 3]);
    const bytes = encodeEntry({
      op: Op.UPD,
      cache: 'é',
      key: 'k'.repeat(300),
      tsm: 2 ** 40,
      writer: 7,
      crc: 1n,
      value,
    });
    assert.deepEqual(decoder.decode(bytes), [
      Op.UPD,
      'é',
      'k'.repeat(300),
      2 ** 40,
      7,
      Buffer.from([0, 0, 0, 0, 0, 0, 0, 1]),
      value,
    ]);
  });

  test('a data op that receivers would refuse cannot be encoded', () => {
    const base = { op: Op.DEL, cache: 'c', key: 'k', tsm: 1, writer: 1 } as const;
    assert.throws(() => encodeEntry({ ...base, tsm: -1 }), TypeError);
    assert.throws(() => encodeEntry({ ...base, tsm: 1.5 }), TypeError);
    assert.throws(() => encodeEntry({ ...base, writer: 2 ** 32 }), TypeError);
    assert.throws(() => encodeEntry({ ...base, cache: 'c'.repeat(MAX_CACHE_NAME_LENGTH + 1) }), RangeError);
    assert.throws(() => encodeEntry({ ...base, key: 'k'.repeat(MAX_KEY_LENGTH + 1) }), RangeError);
  });

  test('a timestamp may arrive in any integer or float width', () => {
    const expected = [{ op: Op.DEL, cache: 'c', key: 'k', tsm: 1, writer: 2 }];
    // 1 as a u64, a float16, a float32 and a float64
    for (const tsm of ['1b0000000000000001', 'f93c00', 'fa3f800000', 'fb3ff0000000000000']) {
      const bytes = Buffer.from(`85036163616b${tsm}02`, 'hex');
      assert.deepEqual(decodeEntries(bytes), { ok: true, entries: expected }, tsm);
    }
  });

  test('an empty message is an empty batch', () => {
    assert.deepEqual(decodeEntries(new Uint8Array(0)), { ok: true, entries: [] });
  });

  test('the crc travels as an 8-byte big-endian byte string and the value as a byte string', () => {
    const bytes = Buffer.from(
      encodeEntry({
        op: Op.INS,
        cache: 'c',
        key: 'k',
        tsm: 1,
        writer: 2,
        crc: 0x0102030405060708n,
        value: new Uint8Array([9]),
      }),
    );
    // [1, "c", "k", 1, 2, h'0102030405060708', h'09']
    assert.equal(bytes.toString('hex'), '87016163616b010248010203040506070841' + '09');
  });

  test('a decoded value is a view, and what the value codec decodes from it never pins the payload', () => {
    const binary = new Uint8Array(64).fill(7);
    const encodedValue = encodeValue({ binary });
    const payload = Buffer.from(
      encodeEntry({ op: Op.UPD, cache: 'c', key: 'k', tsm: 5, writer: 1, crc: 1n, value: encodedValue }),
    );
    const [entry] = decodedOrFail(payload);
    assert.ok(entry?.op === Op.UPD);
    // No copy per op on the receive path: the entry's value bytes are a view of the payload.
    assert.equal(entry.value.buffer, payload.buffer);
    const decoded = decodeValue(entry.value) as { binary: Uint8Array };
    assert.deepEqual(decoded.binary, binary);
    assert.notEqual(decoded.binary.buffer, payload.buffer, 'the cached binary has memory of its own');
    payload.fill(0xff);
    assert.deepEqual(decoded.binary, binary);
  });

  test('a CHK result that is not plain data cannot be encoded', () => {
    for (const result of [new Map([[1, 2]]), new Set([1]), new Date(0), () => 1, Symbol('s'), 2n ** 70n]) {
      assert.throws(() => encodeEntry({ op: Op.CHK, requestId: 1, target: 0, result }), TypeError);
    }
  });
});

describe('op entries reject hostile payloads', () => {
  const validIns = rawEntry(Op.INS, 'c', 'k', 1, 2, Buffer.alloc(8), Buffer.from([1]));

  test('truncated CBOR', () => {
    assertRejected(validIns.subarray(0, validIns.length - 1), 'decode');
  });

  test('a huge array length header on a short buffer is refused before any allocation', () => {
    assertRejected(Buffer.from([0x9b, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x01]), 'decode');
    assertRejected(Buffer.from([0x9a, 0xff, 0xff, 0xff, 0xff, 0x01]), 'decode');
    assertRejected(Buffer.from([0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), 'decode');
    assertRejected(Buffer.from([0x7a, 0x7f, 0xff, 0xff, 0xff, 0x61]), 'decode');
    assertRejected(Buffer.from([0x5b, 0, 0, 0, 1, 0, 0, 0, 0, 0x61]), 'decode');
  });

  test('a length that fits the buffer only if nested containers shared their bytes', () => {
    // [[x]*200] claiming 200 items but each inner array claims the rest of the buffer
    assertRejected(Buffer.from([0x83, 0x98, 0xc8, 0x01, 0x98, 0xc8, 0x01]), 'decode');
  });

  test('tags of any kind (records, shared references, dates, sets, bignums, errors)', () => {
    assertRejected(Buffer.from([0x81, 0xc1, 0x00]), 'decode'); // tag 1: epoch date
    assertRejected(Buffer.from([0x81, 0xd8, 0x1c, 0x80]), 'decode'); // tag 28: shareable
    assertRejected(Buffer.from([0x81, 0xd9, 0x01, 0x02, 0x80]), 'decode'); // tag 258: set
    assertRejected(Buffer.from([0x81, 0xd8, 0x1b, 0x82, 0x61, 0x45, 0x61, 0x45]), 'decode'); // tag 27: Error
    assertRejected(Buffer.from([0xd9, 0xdf, 0xff, 0x80]), 'decode'); // cbor-x record definition
  });

  test('indefinite lengths and break codes', () => {
    assertRejected(Buffer.from([0x9f, 0x0d, 0xff]), 'decode');
    assertRejected(Buffer.from([0x81, 0x0d, 0xff]), 'decode');
    assertRejected(Buffer.from([0x7f, 0x61, 0x61, 0xff]), 'decode');
  });

  test('simple values other than false, true, null and undefined', () => {
    assertRejected(Buffer.from([0x81, 0xf8, 0x20]), 'decode');
    assertRejected(Buffer.from([0x81, 0xe0]), 'decode');
    assertRejected(Buffer.from([0x81, 0xfc]), 'decode'); // reserved additional info
  });

  test('text that is not valid UTF-8', () => {
    assertRejected(Buffer.from('85036163' + '62ff61' + '0102', 'hex'), 'decode');
    assertRejected(Buffer.from('85036163' + '63eda080' + '0102', 'hex'), 'decode'); // a lone surrogate
  });

  test('nesting far deeper than the bound, without exhausting the stack', () => {
    const depth = 200_000;
    const nested = Buffer.concat([
      Buffer.from([0x84, 0x13, 0x01, 0x00]),
      Buffer.alloc(depth, 0x81),
      Buffer.from([0x00]),
    ]);
    assertRejected(nested, 'shape');
  });

  test('an item that is not an array, or an empty array', () => {
    assertRejected(raw.encode(13), 'shape');
    assertRejected(raw.encode([]), 'shape');
    assertRejected(raw.encode({ op: 13 }), 'shape');
  });

  test('an unknown op code', () => {
    for (const code of [0, 6, 9, 22, 255, -1, 1.5, '1']) assertRejected(rawEntry(code), 'shape');
  });

  test('the wrong number of fields', () => {
    assertRejected(rawEntry(Op.NEW, 1), 'shape');
    assertRejected(rawEntry(Op.DEL, 'c', 'k', 1), 'shape');
    assertRejected(rawEntry(Op.INS, 'c', 'k', 1, 2, Buffer.alloc(8), Buffer.from([1]), 0), 'shape');
  });

  test('a field of the wrong type', () => {
    assertRejected(rawEntry(Op.DEL, 7, 'k', 1, 2), 'shape');
    assertRejected(rawEntry(Op.DEL, 'c', Buffer.from('k'), 1, 2), 'shape');
    assertRejected(rawEntry(Op.DEL, 'c', 'k', '1', 2), 'shape');
    assertRejected(rawEntry(Op.INS, 'c', 'k', 1, 2, Buffer.alloc(8), 'value'), 'shape');
    assertRejected(rawEntry(Op.RST, undefined, 1, 2, 0), 'shape');
    assertRejected(rawEntry(Op.STE, null), 'shape');
    assertRejected(rawEntry(Op.REQ, 1, 'c', ['a', 2]), 'shape');
    assertRejected(rawEntry(Op.REQ, 1, 'c', 'a'), 'shape');
    assertRejected(rawEntry(Op.SYC, 'c', [1, 'x']), 'shape');
  });

  test('a timestamp that is negative, fractional or beyond 2^53', () => {
    assertRejected(rawEntry(Op.DEL, 'c', 'k', -1, 2), 'shape');
    assertRejected(rawEntry(Op.DEL, 'c', 'k', 1.5, 2), 'shape');
    assertRejected(rawEntry(Op.DEL, 'c', 'k', 2 ** 53, 2), 'shape');
    assertRejected(rawEntry(Op.DEL, 'c', 'k', 2n ** 53n, 2), 'shape');
    assertRejected(rawEntry(Op.DEL, 'c', 'k', 2n ** 64n - 1n, 2), 'shape');
    assertRejected(rawEntry(Op.DEL, 'c', 'k', Number.NaN, 2), 'shape');
  });

  test('a node id or seq outside u32', () => {
    assertRejected(rawEntry(Op.DEL, 'c', 'k', 1, 2 ** 32), 'shape');
    assertRejected(rawEntry(Op.DEL, 'c', 'k', 1, -1), 'shape');
    assertRejected(rawEntry(Op.ACK, 2 ** 32, 0, []), 'shape');
    assertRejected(rawEntry(Op.ACK, 1, 0, [[1, 2 ** 32]]), 'shape');
    assertRejected(rawEntry(Op.NAK, 1, [[1, 2, 3]]), 'shape');
    assertRejected(rawEntry(Op.NAK, 1, [[-5, 2]]), 'shape');
  });

  test('a cache name or key longer than the bound', () => {
    assert.ok(decodeEntries(rawEntry(Op.DEL, 'c'.repeat(MAX_CACHE_NAME_LENGTH), 'k', 1, 2)).ok);
    assertRejected(rawEntry(Op.DEL, 'c'.repeat(MAX_CACHE_NAME_LENGTH + 1), 'k', 1, 2), 'shape');
    assert.ok(decodeEntries(rawEntry(Op.DEL, 'c', 'k'.repeat(MAX_KEY_LENGTH), 1, 2)).ok);
    assertRejected(rawEntry(Op.DEL, 'c', 'k'.repeat(MAX_KEY_LENGTH + 1), 1, 2), 'shape');
  });

  test('a crc that is not exactly 8 bytes', () => {
    assertRejected(rawEntry(Op.INS, 'c', 'k', 1, 2, Buffer.alloc(7), Buffer.from([1])), 'shape');
    assertRejected(rawEntry(Op.INS, 'c', 'k', 1, 2, 12345, Buffer.from([1])), 'shape');
    assertRejected(rawEntry(Op.SYD, 1, 'c', 0, false, [['k', 1, 2, Buffer.alloc(9), false]]), 'shape');
  });

  test('lists longer than their bound', () => {
    assertRejected(rawEntry(Op.REQ, 1, 'c', new Array(MAX_LIST_ITEMS + 1).fill('')), 'shape');
    assertRejected(rawEntry(Op.SYC, 'c', new Array(MAX_BUCKETS + 1).fill(0)), 'shape');
    assert.ok(decodeEntries(rawEntry(Op.SYC, 'c', new Array(MAX_BUCKETS).fill(0))).ok);
  });

  test('a bucket index beyond the bucket count, or a tombstone flag that is not boolean', () => {
    assertRejected(rawEntry(Op.SYD, 1, 'c', MAX_BUCKETS, false, []), 'shape');
    assertRejected(rawEntry(Op.SYD, 1, 'c', 0, false, [['k', 1, 2, Buffer.alloc(8), 0]]), 'shape');
    assertRejected(rawEntry(Op.SYD, 1, 'c', 0, 1, []), 'shape');
    assert.ok(decodeEntries(rawEntry(Op.SYD, 1, 'c', 0, true, [['k', 1, 2, Buffer.alloc(8), true]])).ok);
  });

  test('a CHK result nested deeper than the bound', () => {
    let result: unknown = 1;
    for (let i = 0; i < MAX_RESULT_DEPTH + 1; i++) result = [result];
    assertRejected(rawEntry(Op.CHK, 1, 0, result), 'shape');
  });

  test('one bad entry rejects the whole batch', () => {
    const good = encodeEntry({ op: Op.NEW });
    const bad = rawEntry(Op.STE, -1);
    assertRejected(Buffer.concat([good, good, bad, good]), 'shape');
  });

  test('a result map key that is not text', () => {
    // {[1]: 2} and {1: 2} inside a CHK result
    assertRejected(Buffer.from([0x84, 0x13, 0x01, 0x00, 0xa1, 0x81, 0x01, 0x02]), 'shape');
    assertRejected(Buffer.from([0x84, 0x13, 0x01, 0x00, 0xa1, 0x01, 0x02]), 'shape');
    assert.ok(decodeEntries(Buffer.from([0x84, 0x13, 0x01, 0x00, 0xa1, 0x61, 0x31, 0x02])).ok);
  });
});

describe('encodeDataOpHead', () => {
  test('head + value is exactly encodeEntry, for writes and removals', () => {
    const write = {
      op: Op.UPD,
      cache: 'users',
      key: 'u:42',
      tsm: 1_838_743_743_576_064,
      writer: 0x1234_5678,
      crc: 0xdead_beef_0bad_f00dn,
      value: new Uint8Array([0x63, 0x61, 0x62, 0x63]),
    } as const;
    const head = Buffer.from(encodeDataOpHead(write));
    assert.deepEqual(Buffer.concat([head, write.value]), Buffer.from(encodeEntry(write)));
    const removal = { op: Op.DEL, cache: 'users', key: 'u:42', tsm: 5, writer: 9 } as const;
    assert.deepEqual(Buffer.from(encodeDataOpHead(removal)), Buffer.from(encodeEntry(removal)));
  });
});

describe("DecodedMessage (the receive path's columns)", () => {
  const write = (key: string, value: unknown, writer = 7): Entry => ({
    op: Op.UPD,
    cache: 'c',
    key,
    tsm: 1_000 + key.length,
    writer,
    crc: 0x0123_4567_89ab_cdefn,
    // Decoded values are plain Uint8Array views; encodeValue gives a Buffer.
    value: Uint8Array.from(encodeValue(value)),
  });

  test('data ops land in columns, other entries as objects, in message order', () => {
    const entries: Entry[] = [
      write('a', 'alpha'),
      { op: Op.DEL, cache: 'c', key: 'gone', tsm: 9, writer: 3 },
      { op: Op.RST, cache: null, tsm: 10, writer: 3, target: 0 },
      write('b', { nested: [1, 2] }),
    ];
    const payload = encodeEntries(entries);
    const message = new DecodedMessage();
    assert.equal(decodeMessage(payload, message), undefined);
    assert.equal(message.count, 4);
    assert.deepEqual([...message.op.subarray(0, 4)], [Op.UPD, Op.DEL, 0, Op.UPD]);
    assert.deepEqual(message.control[2], entries[2]);
    assert.equal(message.control[0], undefined);
    assert.equal(message.key[1], 'gone');
    assert.equal(message.crcHigh[0], 0x0123_4567);
    assert.equal(message.crcLow[0], 0x89ab_cdef);
    assert.equal(decodeValueAt(message.source, message.valueStart[0]!, message.valueLength[0]!), 'alpha');
    assert.deepEqual(decodeValueAt(message.source, message.valueStart[3]!, message.valueLength[3]!), {
      nested: [1, 2],
    });
    for (let i = 0; i < 4; i++) assert.deepEqual(message.entryAt(i), entries[i]);
  });

  test('the columns grow for a large message, are reused, and give back the datagram and their excess', () => {
    const many = Array.from({ length: 10_000 }, (_, i) => write(`k${i}`, i));
    const message = new DecodedMessage();
    assert.equal(decodeMessage(encodeEntries(many), message), undefined);
    assert.equal(message.count, 10_000);
    assert.equal(message.key[9_999], 'k9999');
    assert.equal(
      decodeValueAt(message.source, message.valueStart[9_999]!, message.valueLength[9_999]!),
      9_999,
    );
    message.release();
    assert.equal(message.source.length, 0, 'no datagram is kept');
    assert.equal(message.key.length, 0, 'no key string is kept');
    assert.ok(
      message.op.length <= 4096,
      `columns shrink back after a large message, got ${message.op.length}`,
    );
    assert.equal(decodeMessage(encodeEntries([write('again', true)]), message), undefined);
    assert.equal(message.count, 1);
    assert.equal(message.key[0], 'again');
  });

  test('a payload refused part-way leaves nothing to apply', () => {
    const good = encodeEntries([write('a', 1), write('b', 2)]);
    const message = new DecodedMessage();
    const truncated = good.subarray(0, good.length - 1);
    assert.equal(decodeMessage(truncated, message), 'decode');
    assert.equal(message.count, 0);
    assert.equal(message.source.length, 0);
    const misshapen = Buffer.concat([
      good,
      rawEntry(Op.UPD, 'c', 'k', 1, 2, Buffer.alloc(7), Buffer.from([1])),
    ]);
    assert.equal(decodeMessage(misshapen, message), 'shape');
    assert.equal(message.count, 0);
  });
});

describe('buffer text (the receive path skips toString dispatch)', () => {
  test('latin1Text and utf8Text give what toString gives, for any bytes and bounds', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(), fc.nat(), (bytes, a, b) => {
        const buffer = Buffer.from(bytes);
        const start = bytes.length === 0 ? 0 : a % bytes.length;
        const end = start + (bytes.length === 0 ? 0 : b % (bytes.length - start + 1));
        assert.equal(latin1Text(buffer, start, end), buffer.toString('latin1', start, end));
        assert.equal(utf8Text(buffer, start, end), buffer.toString('utf8', start, end));
      }),
      { seed: SEED, numRuns: 500 },
    );
  });
});
