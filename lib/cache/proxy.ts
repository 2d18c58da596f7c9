/**
 * The cache object users see: a Proxy that behaves like a plain dictionary of the live entries.
 *
 * One constant handler object serves every cache (as in immer); the per-cache state record is the
 * Proxy target, so no closure is made per proxy or per access and nothing is ever added to user
 * data. Keys are plain data: `__proto__`, `constructor`, `toString`, `then` and the like are stored
 * and read like any other key and never reach Object.prototype. The cache has no prototype, so it
 * has no inherited methods either (`String(cache)` throws, as for `Object.create(null)`).
 *
 * The one reserved name is `metadata`: `cache.metadata` is the metadata view. A data key literally
 * named "metadata" is reachable only through the store: `storeOf(cache).get('metadata')` and
 * `storeOf(cache).set('metadata', value)`; it is left out of the proxy's keys.
 *
 * `util.inspect` and `console.log` do not run Proxy traps; they print the target, which carries a
 * custom inspect that shows `Cache 'name' { key: value, ... }`. `structuredClone(cache)` throws a
 * DataCloneError, as for every Proxy: clone a snapshot instead, `structuredClone({ ...cache })`.
 */
import { inspect } from 'node:util';
import type { CacheStore } from './store.js';
import { defineEntry } from './store.js';
import type { EntryMetadata } from './types.js';

/** The reserved property that returns the metadata view. */
export const METADATA = 'metadata';

/** `cache.metadata`: `cache.metadata[key]` is that entry's metadata, or undefined. Read-only. */
export type MetadataView = { readonly [key: string]: EntryMetadata | undefined };

/**
 * A cache: reads give `V | undefined`, writes take `V`. Assigning inserts or updates (and
 * replicates), `delete` removes, `in`, `Object.keys`, spread and `JSON.stringify` show exactly the
 * live, unexpired entries. `metadata` is reserved (see {@link storeOf}).
 *
 * Mutating a cached object in place does not replicate: assign a new value (or open the cache with
 * `freeze: true` so that in-place mutation throws).
 */
export type Cache<V = unknown> = { [key: string]: V | undefined } & {
  /** The metadata of each live entry (`cache.metadata[key]`); the name is reserved, see {@link storeOf}. */
  readonly metadata: MetadataView;
};

/** Reads the store through the proxy without exposing it as a key (module-private symbol). */
const STORE = Symbol('mccache.store');

/** The per-cache state record, used as the Proxy target. */
class CacheTarget {
  readonly store: CacheStore<any>;
  readonly metadataView: MetadataView;
  readonly customInspect: (depth: number, options: any, inspectValue: typeof inspect) => string;

  constructor(store: CacheStore<any>) {
    this.store = store;
    this.metadataView = new Proxy(new MetadataTarget(store), metadataHandler) as unknown as MetadataView;
    // Node calls this with the proxy as `this`, so it closes over the target instead.
    this.customInspect = (depth, options, inspectValue) => formatCache(this, depth, options, inspectValue);
  }

  // inspect() reads the custom inspect off the target directly, without traps.
  get [inspect.custom](): CacheTarget['customInspect'] {
    return this.customInspect;
  }
}

function formatCache(target: CacheTarget, depth: number, options: any, inspectValue: typeof inspect): string {
  const title = `Cache '${target.store.name}'`;
  if (depth < 0) return `[${title}]`;
  const shown: Record<string, unknown> = {};
  for (const [key, value] of target.store.entries()) defineEntry(shown, key, value);
  // `depth` is what remains at this level; `shown` stands in for the cache, at the same level.
  return `${title} ${inspectValue(shown, { ...options, depth })}`;
}

function refuseSymbol(action: string, key: symbol): never {
  throw new TypeError(`cannot ${action} ${String(key)} on a cache: cache keys are strings`);
}

function refuseMetadata(action: string): never {
  throw new TypeError(
    `cannot ${action} "metadata" on a cache: the name is reserved for the metadata view; ` +
      `use storeOf(cache).${action === 'set' ? "set('metadata', value)" : "delete('metadata')"} for a key with that name`,
  );
}

const cacheHandler: ProxyHandler<CacheTarget> = {
  get(target, key) {
    if (typeof key === 'string') {
      if (key !== METADATA) return target.store.get(key);
      return target.metadataView;
    }
    if (key === inspect.custom) return target.customInspect;
    if (key === Symbol.toStringTag) return 'Cache';
    if (key === STORE) return target.store;
    return undefined;
  },
  set(target, key, value) {
    if (typeof key !== 'string') refuseSymbol('set', key);
    if (key === METADATA) refuseMetadata('set');
    target.store.set(key, value);
    return true;
  },
  deleteProperty(target, key) {
    if (typeof key !== 'string') refuseSymbol('delete', key);
    if (key === METADATA) refuseMetadata('delete');
    target.store.delete(key);
    return true;
  },
  has(target, key) {
    return typeof key === 'string' && key !== METADATA && target.store.has(key);
  },
  ownKeys(target) {
    const keys = target.store.keys();
    const reserved = keys.indexOf(METADATA);
    if (reserved >= 0) keys.splice(reserved, 1);
    return keys;
  },
  getOwnPropertyDescriptor(target, key) {
    if (typeof key !== 'string' || key === METADATA || !target.store.has(key)) return undefined;
    return { value: target.store.peek(key), writable: true, enumerable: true, configurable: true };
  },
  defineProperty(_target, key) {
    throw new TypeError(
      `cannot define property ${String(key)} on a cache: use assignment (cache[key] = value) to insert or update`,
    );
  },
  getPrototypeOf() {
    return null;
  },
  setPrototypeOf() {
    throw new TypeError(
      'cannot set the prototype of a cache: a cache has none, so that every key is plain data',
    );
  },
  preventExtensions() {
    throw new TypeError(
      'cannot freeze or seal a cache; use the `freeze` option to freeze the values it stores',
    );
  },
};

/** The per-cache state of the metadata view. */
class MetadataTarget {
  constructor(readonly store: CacheStore<any>) {}
}

function refuseMetadataWrite(): never {
  throw new TypeError('cache.metadata is read-only: metadata changes only when the entry is written');
}

const metadataHandler: ProxyHandler<MetadataTarget> = {
  get(target, key) {
    if (typeof key === 'string') return target.store.metadataOf(key);
    if (key === Symbol.toStringTag) return 'CacheMetadata';
    return undefined;
  },
  has(target, key) {
    return typeof key === 'string' && target.store.has(key);
  },
  ownKeys(target) {
    return target.store.keys();
  },
  getOwnPropertyDescriptor(target, key) {
    if (typeof key !== 'string') return undefined;
    const metadata = target.store.metadataOf(key);
    if (metadata === undefined) return undefined;
    return { value: metadata, writable: false, enumerable: true, configurable: true };
  },
  set: refuseMetadataWrite,
  deleteProperty: refuseMetadataWrite,
  defineProperty: refuseMetadataWrite,
  getPrototypeOf() {
    return null;
  },
  setPrototypeOf: refuseMetadataWrite,
  preventExtensions: refuseMetadataWrite,
};

/** Wraps a store in the cache Proxy. The registry keeps one per name. */
export function createCacheProxy<V>(store: CacheStore<V>): Cache<V> {
  return new Proxy(new CacheTarget(store), cacheHandler) as unknown as Cache<V>;
}

/**
 * The store behind a cache, for what the dictionary syntax cannot say, such as a key literally
 * named "metadata": `storeOf(cache).get('metadata')`, `storeOf(cache).set('metadata', value)`.
 *
 * @throws TypeError if `cache` is not a cache made by mccache.
 */
export function storeOf<V>(cache: Cache<V>): CacheStore<V> {
  const store = (cache as unknown as Record<symbol, unknown> | null)?.[STORE];
  if (store === undefined) throw new TypeError('storeOf expects a cache returned by getCache');
  return store as CacheStore<V>;
}
