import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Encoder, Tag } from 'cbor-x';
import fc from 'fast-check';
import { CacheStore, type StoreContext } from '../lib/cache/store.js';
import { ApplyOutcome, ChangeKind } from '../lib/cache/types.js';
import { HybridLogicalClock, ManualClock, millisToHlc } from '../lib/clock.js';
import { cacheSettingsOf, DEFAULTS } from '../lib/config.js';
import type { Log } from '../lib/log.js';
import {
  checkValueBytes,
  decodeValue,
  decodeValueAt,
  decodeValueByCborX,
  encodeValue,
  MAX_BIGINT_BYTES,
  MAX_VALUE_DEPTH,
  RefusedValueError,
  UnencodableValueError,
} from '../lib/wire/value-codec.js';

/**
 * Writes hostile bytes: cbor-x with the codec's options, without the codec's checks; a Tag
 * instance is written as that tag around its value.
 */
const rawEncoder = new Encoder({ useRecords: true, mapsAsObjects: false, tagUint8Array: true });

function raw(value: unknown): Buffer {
  return Buffer.from(rawEncoder.encode(value));
}

function hex(text: string): Buffer {
  return Buffer.from(text.replace(/\s+/g, ''), 'hex');
}

function refused(bytes: Uint8Array, reason: RegExp): void {
  assert.throws(
    () => decodeValue(bytes),
    (error: unknown) => error instanceof RefusedValueError && reason.test(error.message),
    `${Buffer.from(bytes).toString('hex').slice(0, 80)} should be refused with ${reason}`,
  );
}

/** The tag head of `tag`, in the shortest form. */
function tagHead(tag: number): string {
  if (tag < 24) return (0xc0 | tag).toString(16);
  if (tag < 0x100) return `d8${tag.toString(16).padStart(2, '0')}`;
  if (tag < 0x10000) return `d9${tag.toString(16).padStart(4, '0')}`;
  return `da${tag.toString(16).padStart(8, '0')}`;
}

describe('value bytes from the network: what cbor-x would build but encodeValue never writes', () => {
  test('shared references (tags 28/29) that multiply a value or make it circular are refused', () => {
    // Level k is [level k-1, level k-1] by reference: 16 levels in about 140 bytes.
    const levels = 16;
    let bytes = `${(0x80 | levels).toString(16)} d81c 6178`;
    for (let k = 1; k < levels; k++) {
      const previous = (k - 1).toString(16).padStart(2, '0'); // ids below 24: one-byte integers
      bytes += ` d81c 82 d81d ${previous} d81d ${previous}`;
    }
    const bomb = hex(bytes);
    // cbor-x alone builds a graph that re-encodes to hundreds of times its size...
    const built = decodeValueByCborX(bomb) as unknown[];
    assert.ok(encodeValue(built).length > 500 * bomb.length);
    refused(bomb, /tag 28, which encodeValue does not write/);

    // ... or a cycle, which encodeValue then refuses when the value is pushed on.
    const circular = hex('d81c 81 d81d 00');
    const cycle = decodeValueByCborX(circular) as unknown[];
    assert.equal(cycle[0], cycle);
    assert.throws(() => encodeValue(cycle), UnencodableValueError);
    refused(circular, /tag 28/);
    refused(hex('81 d81d 00'), /tag 29/);
  });

  test('tag 27 passes only as the Error and RegExp encodeValue writes, never calling other functions', () => {
    // cbor-x calls `{ Error, RegExp }[name]`: 'constructor' finds Object, which boxes the message.
    const boxed = raw(new Tag(['constructor', 'x'], 27));
    assert.ok(decodeValueByCborX(boxed) instanceof String);
    refused(boxed, /an Error \(tag 27\) named "constructor"/);
    refused(raw(new Tag(['toString', 'x'], 27)), /named "toString"/);
    refused(raw(new Tag(['__proto__', 'x'], 27)), /named "__proto__"/);
    // A third part would be Error's options ({ cause }), which encodeValue never writes.
    const withCause = raw(new Tag(['Error', 'm', { cause: 1 }], 27));
    assert.equal((decodeValueByCborX(withCause) as Error).cause, 1);
    refused(withCause, /with a part that is not a string/);
    refused(raw(new Tag(['Error', 'm', 'extra'], 27)), /"Error" with 3 parts/);
    refused(raw(new Tag(['Error', 5], 27)), /with a part that is not a string/);
    refused(raw(new Tag('Error', 27)), /not an array of 2 or 3 strings/);
    refused(raw(new Tag(['Error'], 27)), /not an array of 2 or 3 strings/);

    // What encodeValue writes still decodes: cbor-x knows only Error and RegExp, so other
    // error classes arrive as Error with their message.
    const error = decodeValue(encodeValue(new TypeError('boom'))) as Error;
    assert.ok(error instanceof Error);
    assert.equal(error.message, 'boom');
    assert.deepEqual(decodeValue(encodeValue(/a+b/gi)), /a+b/gi);
    assert.deepEqual(decodeValue(raw(new Tag(['RegExp', 'x'], 27))), /x/);
    // A RegExp cbor-x cannot build still fails to decode (the store counts it as rejected).
    assert.throws(() => decodeValue(raw(new Tag(['RegExp', 'a', 'zz'], 27))), SyntaxError);
  });

  test('every other tag cbor-x decodes is refused', () => {
    const others = [
      0, // date string
      4, // decimal fraction
      5, // bigfloat
      6, // packed reference
      14, // bundled string references
      15,
      25, // stringref
      28, // shareable
      29, // sharedref
      51, // packed table
      105, // legacy record
      216, // packed suffixes
      225, // packed prefixes
      256, // stringref namespace
      259, // explicit Map
      28704,
      55799, // self-described CBOR
      0xdff9, // bundled strings
      0xdffe, // record definitions block
      0xe100, // past the 256 record ids cbor-x's encoder uses
      0x1e000, // low 13 bits of a record id: cbor-x would read a record
      0x53687264, // shared data
      1000, // unknown: cbor-x would build a Tag object
    ];
    for (const tag of others) {
      refused(hex(`${tagHead(tag)} 82 01 61 78`), new RegExp(`tag ${tag}, which encodeValue does not write`));
    }
    // 64-bit tag heads are refused before their number is looked at.
    refused(hex('db 0000000000000001 00'), /the head 0xdb/);
  });

  test('the tags encodeValue writes pass only with the content it writes', () => {
    refused(hex('c1 6178'), /a Date \(tag 1\) that is not a number/);
    refused(hex('c1 1b 0000000000000001'), /a Date \(tag 1\) that is not a number/);
    refused(hex('c2 6178'), /a BigInt \(tag 2 or 3\) that is not a byte string/);
    refused(
      hex('d856 47 00000000000000'),
      /a typed array \(tag 86\) that is not a byte string of whole elements/,
    );
    refused(hex('d845 6178'), /a typed array \(tag 69\)/);
    refused(hex('d90102 6178'), /a Set \(tag 258\) that is not an array/);
    refused(hex('d90102 d90102 80'), /a Set \(tag 258\) that is not an array/);
    // The big-endian typed-array tags (from a big-endian member) decode to the same arrays.
    assert.deepEqual(decodeValue(hex('d841 44 00010002')), new Uint16Array([1, 2]));
  });

  test('records pass only when defined earlier in the same value, with one value per key', () => {
    const definition = encodeValue({ a: 1 });
    const reference = hex('d9e000 81 02');
    // cbor-x alone keeps a definition from one decode to the next: a later message could reuse it.
    decodeValueByCborX(definition);
    assert.deepEqual(decodeValueByCborX(reference), { a: 2 });
    assert.deepEqual(decodeValue(definition), { a: 1 });
    refused(reference, /record 0 used before its definition/);
    refused(hex('82 d9e001 81 01 d9dfff 83 19e001 81 6161 01'), /record 1 used before its definition/);
    refused(hex('82 d9dfff 83 19e000 81 6161 01 d9e000 82 01 02'), /record 0 with other than its 1 values/);
    refused(hex('82 d9dfff 83 19e000 81 6161 01 d9e000 a1 01 02'), /record 0 with other than its 1 values/);
    refused(hex('d9dfff 83 19e100 81 6161 01'), /whose id is not 0xe000-0xe0ff/);
    refused(hex('d9dfff 83 1a0000e000 81 6161 01'), /whose id is not 0xe000-0xe0ff/);
    refused(hex('d9dfff 83 19e000 81 01 01'), /with a key that is not a string/);
    refused(hex('d9dfff 84 19e000 81 6161 01 02'), /without one key per value/);
    refused(hex('d9dfff 81 19e000'), /not an array of id, keys and values/);
    refused(hex('d9dfff a1 6161 01'), /not an array of id, keys and values/);
  });
});

describe('value bytes from the network: well-formedness and bounds', () => {
  const cases: Array<[string, RegExp]> = [
    ['', /ends early/],
    ['82 01', /ends early/],
    ['63 6162', /ends early/],
    ['d9dfff', /ends early/],
    ['9f 01', /ends early/],
    ['01 02', /1 bytes after the value/],
    ['d9dfff 82 19e000 80 00', /1 bytes after the value/],
    ['9a ffffffff 01', /ends early/], // a huge array length, checked before anything is built
    ['ba ffffffff 01', /ends early/],
    ['7a ffffffff 61', /ends early/],
    ['5a ffffffff 00', /ends early/],
    ['5b 0000000000000001 00', /the head 0x5b/],
    ['5f 41 00 ff', /the head 0x5f/], // indefinite-length strings and maps
    ['7f 61 78 ff', /the head 0x7f/],
    ['bf 01 02 ff', /the head 0xbf/],
    ['1c', /the head 0x1c/],
    ['3e', /the head 0x3e/],
    ['ff', /a break code outside an indefinite-length array/],
    ['81 ff', /a break code outside/],
    ['f8 20', /the simple value head 0xf8/],
    ['e0', /the simple value head 0xe0/],
    ['fc', /the simple value head 0xfc/],
  ];
  for (const [bytes, reason] of cases) {
    test(`refuses ${bytes || 'no bytes'} (${reason.source})`, () => refused(hex(bytes), reason));
  }

  test(`refuses nesting deeper than ${MAX_VALUE_DEPTH}, in bytes and in encodeValue`, () => {
    const nested = (depth: number): unknown => {
      let value: unknown = 1;
      for (let i = 0; i < depth; i++) value = i % 2 === 0 ? [value] : { k: value };
      return value;
    };
    const deepest = nested(MAX_VALUE_DEPTH);
    assert.deepEqual(decodeValue(encodeValue(deepest)), deepest);
    assert.throws(() => encodeValue(nested(MAX_VALUE_DEPTH + 1)), /nesting deeper than 512/);
    assert.ok(decodeValue(hex(`${'81'.repeat(MAX_VALUE_DEPTH)}01`)));
    refused(hex(`${'81'.repeat(MAX_VALUE_DEPTH + 1)}01`), /nesting deeper than 512/);
    refused(hex(`${'9f'.repeat(MAX_VALUE_DEPTH + 1)}01`), /nesting deeper than 512/);
    // Deeper than cbor-x's own recursion could go: refused by the walk, not by a stack overflow.
    refused(hex(`${'81'.repeat(100_000)}01`), /nesting deeper than 512/);
  });

  test(`refuses BigInts over ${MAX_BIGINT_BYTES} bytes, which cbor-x builds in quadratic time`, () => {
    const largest = 2n ** BigInt(8 * MAX_BIGINT_BYTES) - 1n;
    assert.equal(decodeValue(encodeValue(largest)), largest);
    assert.equal(decodeValue(encodeValue(-largest - 1n)), -largest - 1n);
    assert.throws(() => encodeValue(largest + 1n), /a BigInt of 1025 bytes, over 1024/);
    const huge = Buffer.concat([hex('c2 5a 00100000'), Buffer.alloc(0x100000, 0xff)]);
    refused(huge, /a BigInt of 1048576 bytes, over 1024/);
  });

  test('reports where in the value it stopped, wherever the value lies in memory', () => {
    const memory = Buffer.concat([hex('ffffff'), hex('82 01 d81c 80'), hex('ff')]);
    assert.throws(
      () => decodeValueAt(memory, 3, 5),
      (error: unknown) => error instanceof RefusedValueError && /tag 28.*\(at byte 4\)/.test(error.message),
    );
    // The same bytes with a legal tag in place decode where they lie.
    const legal = Buffer.concat([hex('ffffff'), hex('82 01 d84041 07'), hex('ff')]);
    assert.deepEqual(decodeValueAt(legal, 3, 6), [1, new Uint8Array([7])]);
  });

  test('encodeValue refuses a value that other members would refuse', () => {
    const error = new Error('x');
    error.name = 'constructor';
    assert.throws(
      () => encodeValue(error, 'k'),
      (thrown: unknown) => {
        assert.ok(thrown instanceof UnencodableValueError);
        assert.match(thrown.message, /cannot cache key "k".*named "constructor"/);
        return true;
      },
    );
    assert.throws(() => encodeValue(new Tag('x', 28)), /tag 28/);
  });

  test('a store keeps its value and counts a remote value that is refused', () => {
    const clock = new ManualClock();
    const log: Log = {
      warnOn: true,
      infoOn: false,
      debugOn: false,
      error() {},
      warn() {},
      info() {},
      debug() {},
    };
    const context: StoreContext = {
      clock,
      hlc: new HybridLogicalClock(clock),
      nodeId: 1,
      log,
      tombstoneTtlMs: 60_000,
      maxTombstones: 100,
    };
    const store = new CacheStore('values', cacheSettingsOf(DEFAULTS), context);
    store.set('k', { kept: true });
    const newer = millisToHlc(clock.now() + 1000);
    const change = {
      kind: ChangeKind.Update,
      key: 'k',
      tsm: newer,
      writer: 2,
      encoded: hex('d81c 81 d81d 00'),
    };
    assert.equal(store.applyRemote(change), ApplyOutcome.Rejected);
    assert.deepEqual(store.get('k'), { kept: true });
    assert.equal(store.counters().remoteRejected, 1);
  });
});

describe('value bytes from the network: nothing encodeValue writes is refused', () => {
  /** What a value becomes through CBOR: -0 is written as the integer 0; sparse holes do not occur here. */
  const throughCbor = (value: unknown): unknown => {
    if (Object.is(value, -0)) return 0;
    if (Array.isArray(value)) return value.map(throughCbor);
    if (value instanceof Map) return new Map([...value].map(([k, v]) => [throughCbor(k), throughCbor(v)]));
    if (value instanceof Set) return new Set([...value].map(throughCbor));
    const prototype = value && typeof value === 'object' ? Object.getPrototypeOf(value) : undefined;
    if (prototype === Object.prototype || prototype === null) {
      // Objects with or without a prototype arrive as plain objects.
      return Object.fromEntries(Object.entries(value as object).map(([k, v]) => [k, throughCbor(v)]));
    }
    return value;
  };
  const text = fc.oneof(
    fc.string({ maxLength: 40 }),
    fc.string({ unit: 'grapheme', maxLength: 20 }),
    fc.string({ unit: 'binary', maxLength: 20 }).filter((s) => s.isWellFormed()),
  );
  const key = text.filter((k) => k !== '__proto__'); // cbor-x renames it, against prototype pollution
  const leaf = fc.oneof(
    fc.integer(),
    fc.integer({ min: -(2 ** 33), max: 2 ** 33 }),
    fc.double(),
    fc.constantFrom(0, -0, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, -(2 ** 32) - 1),
    text,
    fc.boolean(),
    fc.constant(null),
    fc.constant(undefined),
    fc.bigInt(),
    fc.bigInt({ min: -(2n ** 300n), max: 2n ** 300n }),
    // Dates travel as float seconds: beyond about ±2^52 µs cbor-x can be a millisecond off.
    fc.date({ min: new Date(-4e12), max: new Date(4e12), noInvalidDate: true }),
    fc.uint8Array({ maxLength: 20 }),
    fc.uint8ClampedArray({ maxLength: 8 }),
    fc.int8Array({ maxLength: 8 }),
    fc.uint16Array({ maxLength: 8 }),
    fc.int16Array({ maxLength: 8 }),
    fc.uint32Array({ maxLength: 8 }),
    fc.int32Array({ maxLength: 8 }),
    fc.float32Array({ maxLength: 8, noDefaultInfinity: false }).filter((a) => !a.some(Number.isNaN)),
    fc.float64Array({ maxLength: 8 }).filter((a) => !a.some(Number.isNaN)),
    fc.bigInt64Array({ maxLength: 4 }),
    fc.bigUint64Array({ maxLength: 4 }),
    text.map((message) => new Error(message)),
    fc.constantFrom(/a+b/gi, /^x$/m, /[é]+/u),
  );
  const { value } = fc.letrec((tie) => ({
    value: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      leaf,
      tie('array'),
      tie('object'),
      tie('map'),
      tie('set'),
      tie('shapes'),
    ),
    array: fc.array(tie('value'), { maxLength: 5 }),
    object: fc.dictionary(key, tie('value'), { maxKeys: 5 }),
    map: fc.array(fc.tuple(tie('value'), tie('value')), { maxLength: 4 }).map((entries) => new Map(entries)),
    set: fc.array(tie('value'), { maxLength: 4 }).map((items) => new Set(items)),
    // Objects of one shape: the first defines a record, the rest refer to it.
    shapes: fc.array(fc.record({ id: fc.integer(), name: text, tags: fc.array(text, { maxLength: 3 }) }), {
      minLength: 1,
      maxLength: 6,
    }),
  }));

  test('random values decode through the checks to the value itself, and to what cbor-x alone gives', () => {
    fc.assert(
      fc.property(value, (original) => {
        const bytes = encodeValue(original);
        const decoded = decodeValue(bytes);
        assert.deepEqual(decoded, throughCbor(original));
        assert.deepEqual(decoded, decodeValueByCborX(bytes));
        // A copy in the middle of a larger buffer decodes alike.
        const memory = Buffer.concat([hex('ff'), bytes, hex('ff')]);
        assert.deepEqual(decodeValueAt(memory, 1, bytes.length), decoded);
      }),
      { numRuns: 3000, seed: 2024 },
    );
  });

  test('values of more shapes than record ids (256) reuse ids and still decode', () => {
    const shapes = Array.from({ length: 300 }, (_, i) => ({ [`key${i}`]: i, shared: [i] }));
    const original = [...shapes, ...shapes.slice(0, 40), { nested: shapes.slice(250) }];
    assert.deepEqual(decodeValue(encodeValue(original)), original);
  });

  test('iterables, Buffers, ArrayBuffers and class instances decode to what cbor-x gives', () => {
    class Point {
      constructor(
        readonly x: number,
        readonly y: number,
      ) {}
    }
    function* items() {
      yield 1;
      yield 'two';
    }
    assert.deepEqual(decodeValue(encodeValue(items())), [1, 'two']); // an indefinite-length array
    assert.deepEqual(decodeValue(encodeValue(new Point(1, 2))), { x: 1, y: 2 });
    assert.deepEqual(
      new Uint8Array(decodeValue(encodeValue(Buffer.from([1, 2]))) as Uint8Array),
      new Uint8Array([1, 2]),
    );
    assert.deepEqual(
      new Uint8Array(decodeValue(encodeValue(new Uint8Array([3]).buffer)) as Uint8Array),
      new Uint8Array([3]),
    );
    const date = decodeValue(encodeValue(new Date(Number.NaN))) as Date;
    assert.ok(date instanceof Date && Number.isNaN(date.getTime()));
    const keyedByObjects = new Map([[{ a: 1 }, new Set([{ a: 2 }, { a: 3 }])]]);
    const bytes = Buffer.from(encodeValue(keyedByObjects));
    checkValueBytes(bytes, 0, bytes.length);
    assert.deepEqual(decodeValue(bytes), keyedByObjects);
  });
});
