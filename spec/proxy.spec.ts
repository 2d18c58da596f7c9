import assert from 'node:assert/strict';
import { Socket } from 'node:net';
import { describe, test } from 'node:test';
import { inspect } from 'node:util';
import { type Cache, createCacheProxy, storeOf } from '../lib/cache/proxy.js';
import { CacheRegistry } from '../lib/cache/registry.js';
import { CacheStore, type StoreContext } from '../lib/cache/store.js';
import { ChangeKind, type EntryMetadata } from '../lib/cache/types.js';
import { HybridLogicalClock, ManualClock } from '../lib/clock.js';
import { type CacheOptions, cacheSettingsOf, DEFAULTS } from '../lib/config.js';
import { silentLog } from '../lib/log.js';
import { crcOf, encodeValue } from '../lib/wire/value-codec.js';

function makeCache<V = unknown>(options: CacheOptions = {}, name = 'things') {
  const clock = new ManualClock();
  const context: StoreContext = {
    clock,
    hlc: new HybridLogicalClock(clock),
    nodeId: 1,
    log: silentLog,
    tombstoneTtlMs: 60_000,
    maxTombstones: 1000,
  };
  const registry = new CacheRegistry(context, cacheSettingsOf(DEFAULTS));
  return { cache: registry.cache<V>(name, options), clock, registry };
}

const DANGEROUS_KEYS = [
  '__proto__',
  'constructor',
  'prototype',
  'toString',
  'toLocaleString',
  'valueOf',
  'hasOwnProperty',
  'isPrototypeOf',
  'propertyIsEnumerable',
  '__defineGetter__',
  '__defineSetter__',
  '__lookupGetter__',
  'then',
  'toJSON',
  // names of the Proxy target's own fields: still plain data
  'store',
  'metadataView',
  'customInspect',
];

describe('dictionary syntax', () => {
  test('assignment inserts and updates, reading gives the value or undefined, delete removes', () => {
    const { cache } = makeCache<number>();
    cache.a = 1;
    assert.equal(cache.a, 1);
    cache.a = 2;
    assert.equal(cache.a, 2);
    assert.equal(cache.missing, undefined);
    assert.equal(delete cache.a, true);
    assert.equal(cache.a, undefined);
    assert.equal('a' in cache, false);
  });

  test('delete of a missing key is fine and returns true, like a plain object', () => {
    const { cache } = makeCache();
    assert.equal(delete cache.never, true);
    assert.equal(storeOf(cache).counters().deletes, 0);
  });

  test('`in` reports live keys only', () => {
    const { cache } = makeCache();
    cache.k = 0;
    assert.equal('k' in cache, true);
    assert.equal('other' in cache, false);
    assert.equal('metadata' in cache, false);
  });

  test('Object.keys/values/entries, for...in, spread and JSON.stringify show exactly the live entries', () => {
    const { cache } = makeCache<unknown>();
    cache.b = { n: 1 };
    cache.a = [1, 2];
    cache.c = 'text';
    delete cache.c;
    assert.deepEqual(Object.keys(cache), ['b', 'a']);
    assert.deepEqual(Object.values(cache), [{ n: 1 }, [1, 2]]);
    assert.deepEqual(Object.entries(cache), [
      ['b', { n: 1 }],
      ['a', [1, 2]],
    ]);
    const seen: string[] = [];
    for (const key in cache) seen.push(key);
    assert.deepEqual(seen, ['b', 'a']);
    assert.deepEqual({ ...cache }, { b: { n: 1 }, a: [1, 2] });
    assert.equal(JSON.stringify(cache), '{"b":{"n":1},"a":[1,2]}');
    assert.deepEqual(Object.assign({}, cache), { b: { n: 1 }, a: [1, 2] });
    assert.equal(Object.getOwnPropertyDescriptor(cache, 'b')?.enumerable, true);
    assert.equal(Object.getOwnPropertyDescriptor(cache, 'missing'), undefined);
    assert.equal(Object.hasOwn(cache, 'a'), true);
  });

  test('expired entries disappear from every view at once', () => {
    const { cache, clock } = makeCache({ ttl: 5 });
    cache.old = 1;
    clock.advance(3000);
    cache.young = 2;
    clock.advance(2000);
    assert.equal(cache.old, undefined);
    assert.equal('old' in cache, false);
    assert.deepEqual(Object.keys(cache), ['young']);
    assert.deepEqual({ ...cache }, { young: 2 });
    assert.equal(JSON.stringify(cache), '{"young":2}');
    assert.deepEqual(Object.keys(cache.metadata), ['young']);
    assert.equal(cache.metadata.old, undefined);
  });

  test('listing keys does not count lookups; reading values does', () => {
    const { cache } = makeCache();
    cache.a = 1;
    Object.keys(cache);
    assert.equal('a' in cache, true);
    assert.equal(storeOf(cache).counters().lookups, 0);
    void cache.a;
    assert.equal(storeOf(cache).counters().hits, 1);
  });
});

describe('values', () => {
  test('objects, arrays, Map, Set, Date, BigInt, typed arrays and nesting are accepted', () => {
    const { cache } = makeCache();
    const value = {
      list: [1, 'x', null, true],
      map: new Map([['k', new Set([1, 2])]]),
      when: new Date(0),
      big: 2n ** 70n,
      bytes: new Uint8Array([9, 8]),
      floats: new Float32Array([0.5]),
      deep: { a: { b: { c: [{ d: 1 }] } } },
    };
    cache.v = value;
    assert.equal(cache.v, value);
  });

  test('unencodable values throw a clear TypeError and leave the cache unchanged', () => {
    const { cache } = makeCache();
    cache.k = 'kept';
    const socket = new Socket();
    const circular: { self?: unknown } = {};
    circular.self = circular;
    for (const bad of [() => 1, Symbol('x'), circular, socket]) {
      assert.throws(() => {
        cache.k = bad;
      }, /cannot cache key "k".*cannot be encoded/);
      assert.throws(() => {
        cache.fresh = bad;
      }, TypeError);
    }
    socket.destroy();
    assert.equal(cache.k, 'kept');
    assert.equal('fresh' in cache, false);
    assert.deepEqual(Object.keys(cache), ['k']);
  });

  test('the freeze option makes in-place mutation throw', () => {
    const { cache } = makeCache<{ n: number; list: number[] }>({ freeze: true });
    cache.v = { n: 1, list: [1] };
    assert.throws(() => {
      cache.v!.n = 2;
    }, TypeError);
    assert.throws(() => cache.v!.list.push(2), TypeError);
    cache.v = { n: 2, list: [] }; // reassignment is the way to change it
    assert.equal(cache.v.n, 2);
  });
});

describe('metadata view', () => {
  test('c.metadata.k is the entry metadata; missing keys give undefined', () => {
    const { cache, clock } = makeCache({ ttl: 60 });
    cache.k = 'v';
    void cache.k;
    const metadata = cache.metadata.k as EntryMetadata;
    assert.equal(typeof metadata.tsm, 'number');
    assert.match(metadata.crc, /^[0-9a-f]{16}$/);
    assert.equal(metadata.lkp, clock.now());
    assert.equal(metadata.exp, clock.now() + 60_000);
    assert.equal(cache.metadata.missing, undefined);
    assert.equal('k' in cache.metadata, true);
    assert.equal('missing' in cache.metadata, false);
    assert.deepEqual(Object.keys(cache.metadata), ['k']);
    assert.deepEqual(JSON.parse(JSON.stringify(cache.metadata)).k.crc, metadata.crc);
  });

  test('metadata writer is the writer node id in 8 hex digits, the form of node.id', () => {
    const { cache } = makeCache<string>(); // node id 1
    cache.local = 'here';
    assert.equal(cache.metadata.local?.writer, '00000001');
    const encoded = encodeValue('there');
    const tsm = cache.metadata.local!.tsm + 1;
    storeOf(cache).applyRemote({
      kind: ChangeKind.Insert,
      key: 'remote',
      tsm,
      writer: 0xabc,
      crc: crcOf(encoded),
      encoded,
    });
    assert.equal(cache.remote, 'there');
    assert.equal(cache.metadata.remote?.writer, '00000abc');
  });

  test('reading metadata is not a lookup, and the view is read-only', () => {
    const { cache } = makeCache();
    cache.k = 1;
    void cache.metadata.k;
    assert.equal(storeOf(cache).counters().lookups, 0);
    assert.throws(() => {
      (cache.metadata as Record<string, unknown>).k = {};
    }, /read-only/);
    assert.throws(() => {
      delete (cache.metadata as Record<string, unknown>).k;
    }, /read-only/);
    assert.equal(cache.metadata, cache.metadata, 'one view per cache');
  });

  test('"metadata" is reserved; storeOf reaches a key with that name', () => {
    const { cache } = makeCache();
    assert.throws(() => {
      (cache as Record<string, unknown>).metadata = 1;
    }, /reserved.*storeOf\(cache\)\.set\('metadata', value\)/);
    assert.throws(() => {
      delete (cache as Record<string, unknown>).metadata;
    }, /reserved/);
    storeOf(cache).set('metadata', 'data');
    assert.equal(storeOf(cache).get('metadata'), 'data');
    assert.notEqual(cache.metadata, 'data');
    assert.deepEqual(Object.keys(cache), [], 'the reserved name stays out of the dictionary view');
    assert.equal(JSON.stringify(cache), '{}');
    assert.equal(cache.metadata.metadata?.crc.length, 16);
  });

  test('storeOf rejects things that are not caches', () => {
    assert.throws(() => storeOf({} as Cache), /expects a cache/);
    assert.throws(() => storeOf(null as unknown as Cache), /expects a cache/);
  });
});

describe('dangerous keys', () => {
  test('prototype-ish names are stored and read as plain data and never reach Object.prototype', () => {
    const before = Object.getOwnPropertyNames(Object.prototype).map((name) => [
      name,
      Object.getOwnPropertyDescriptor(Object.prototype, name),
    ]);
    const { cache } = makeCache();
    for (const key of DANGEROUS_KEYS) assert.equal(cache[key], undefined, `${key} is a miss before writing`);
    for (const key of DANGEROUS_KEYS) cache[key] = { polluted: key };
    for (const key of DANGEROUS_KEYS) assert.deepEqual(cache[key], { polluted: key });
    assert.deepEqual(Object.keys(cache), DANGEROUS_KEYS);
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    assert.equal(Object.getPrototypeOf({}), Object.prototype);
    assert.deepEqual(
      Object.getOwnPropertyNames(Object.prototype).map((name) => [
        name,
        Object.getOwnPropertyDescriptor(Object.prototype, name),
      ]),
      before,
    );
    const copy = { ...cache };
    assert.equal(Object.getPrototypeOf(copy), Object.prototype, 'spreading keeps __proto__ an own property');
    assert.deepEqual(Object.getOwnPropertyDescriptor(copy, '__proto__')?.value, { polluted: '__proto__' });
    const parsed = JSON.parse(JSON.stringify(cache));
    assert.deepEqual(Object.keys(parsed), DANGEROUS_KEYS);
    for (const key of DANGEROUS_KEYS) delete cache[key];
    assert.deepEqual(Object.keys(cache), []);
  });

  test('the cache has no prototype and no inherited members', () => {
    const { cache } = makeCache();
    assert.equal(Object.getPrototypeOf(cache), null);
    assert.equal(cache.toString, undefined);
    assert.equal(cache.hasOwnProperty, undefined);
    assert.equal(Object.prototype.toString.call(cache), '[object Cache]');
    assert.throws(() => Object.setPrototypeOf(cache, {}), /cannot set the prototype/);
  });

  test('a "then" key never makes the cache a thenable by accident', async () => {
    const { cache } = makeCache();
    assert.equal(cache.then, undefined);
    assert.equal(await cache, cache);
    const thenKey = 'then'; // a computed key, as data keys usually are
    cache[thenKey] = 'data';
    assert.equal(await cache, cache, 'a non-function then is ignored by await');
  });
});

describe('symbols and property definition', () => {
  test('setting or deleting a Symbol key throws a clear TypeError', () => {
    const { cache } = makeCache();
    const key = Symbol('k');
    assert.throws(() => {
      (cache as unknown as Record<symbol, unknown>)[key] = 1;
    }, /cannot set Symbol\(k\) on a cache: cache keys are strings/);
    assert.throws(() => {
      delete (cache as unknown as Record<symbol, unknown>)[key];
    }, TypeError);
  });

  test('reading a symbol gives undefined, except the inspect hook and toStringTag', () => {
    const { cache } = makeCache();
    const symbols = cache as unknown as Record<symbol, unknown>;
    assert.equal(symbols[Symbol('k')], undefined);
    assert.equal(symbols[Symbol.iterator], undefined);
    assert.equal(typeof symbols[inspect.custom], 'function');
    assert.equal(symbols[Symbol.toStringTag], 'Cache');
    assert.equal(Symbol.iterator in cache, false);
    assert.deepEqual(Object.getOwnPropertySymbols(cache), []);
  });

  test('defineProperty, freezing and sealing are refused with guidance', () => {
    const { cache } = makeCache();
    assert.throws(() => Object.defineProperty(cache, 'k', { value: 1 }), /use assignment/);
    assert.throws(() => Object.freeze(cache), /`freeze` option/);
    assert.throws(() => Object.seal(cache), TypeError);
    assert.equal(Object.isExtensible(cache), true);
  });
});

describe('inspect, console.log and structuredClone', () => {
  test('util.inspect shows the cache name and its live entries', () => {
    const { cache } = makeCache({}, 'users');
    assert.equal(inspect(cache), "Cache 'users' {}");
    cache.ann = { age: 30, tags: ['a'] };
    const protoKey = '__proto__';
    cache[protoKey] = 1;
    assert.equal(inspect(cache), "Cache 'users' { ann: { age: 30, tags: [ 'a' ] }, ['__proto__']: 1 }");
    assert.equal(inspect({ nested: cache }, { depth: 0 }), "{ nested: [Cache 'users'] }");
    assert.equal(storeOf(cache).counters().lookups, 0, 'inspecting is not a lookup');
  });

  test('console.log prints the entries', () => {
    const { cache } = makeCache({}, 'logged');
    cache.k = 42;
    const lines: string[] = [];
    const original = process.stdout.write.bind(process.stdout);
    process.stdout.write = ((chunk: string) => {
      lines.push(String(chunk));
      return true;
    }) as typeof process.stdout.write;
    try {
      console.log(cache);
    } finally {
      process.stdout.write = original;
    }
    assert.equal(lines.join(''), "Cache 'logged' { k: 42 }\n");
  });

  test('structuredClone(cache) throws DataCloneError; a spread snapshot clones', () => {
    const { cache } = makeCache();
    cache.k = { a: [1] };
    assert.throws(() => structuredClone(cache), { name: 'DataCloneError' });
    const clone = structuredClone({ ...cache });
    assert.deepEqual(clone, { k: { a: [1] } });
    assert.notEqual(clone.k, cache.k);
  });
});

describe('proxies and stores', () => {
  test('createCacheProxy wraps any store; every proxy of a store sees the same data', () => {
    const clock = new ManualClock();
    const store = new CacheStore<number>('direct', cacheSettingsOf(DEFAULTS), {
      clock,
      hlc: new HybridLogicalClock(clock),
      nodeId: 3,
      log: silentLog,
      tombstoneTtlMs: 1000,
      maxTombstones: 10,
    });
    const one = createCacheProxy<number>(store);
    const two = createCacheProxy<number>(store);
    one.x = 5;
    assert.equal(two.x, 5);
    assert.equal(storeOf(two), store);
  });
});

/** Compiled by tsc (npm run typecheck): the types of reads, writes and metadata. Never called. */
export function typeLevelChecks(registry: CacheRegistry): void {
  interface Profile {
    name: string;
    age: number;
  }
  const users = registry.cache<Profile>('users');
  const read: Profile | undefined = users.ann;
  // @ts-expect-error a read may be a miss, so it is not a Profile
  const notNarrowed: Profile = users.ann;
  users.bob = { name: 'bob', age: 3 };
  // @ts-expect-error writes must be Profiles
  users.bob = 42;
  // @ts-expect-error writes must be whole Profiles
  users.bob = { name: 'bob' };
  const metadata: EntryMetadata | undefined = users.metadata.bob;
  // @ts-expect-error metadata is read-only
  users.metadata = {};
  // @ts-expect-error metadata entries are read-only
  users.metadata.bob = undefined;
  void [read, notNarrowed, metadata];
}
