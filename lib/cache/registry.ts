/**
 * The caches of one process, by name: one store and one proxy per name, created on first use.
 */
import {
  CACHE_OPTION_NAMES,
  type CacheOptions,
  type CacheSettings,
  ConfigError,
  settingsSchema,
} from '../config.js';
import { type Cache, createCacheProxy } from './proxy.js';
import { CacheStore, type StoreContext } from './store.js';

/** Longest accepted cache name. */
export const MAX_CACHE_NAME_LENGTH = 256;
/** Default bound on the number of caches, so remote traffic cannot create stores without end. */
export const DEFAULT_MAX_CACHES = 4096;
/**
 * Default bound on the caches that remote changes created and this process has not opened itself.
 * Each may grow to the default `size`, so this bounds what the network alone can make a member hold
 * (64 x 8 MiB with the defaults); a cache the process opens no longer counts.
 */
export const DEFAULT_MAX_REMOTE_CACHES = 64;

const cacheSettingsSchema = settingsSchema.pick({
  ttl: true,
  max: true,
  size: true,
  mode: true,
  callbackWin: true,
  callback: true,
  freeze: true,
});

/** Throws a TypeError unless `name` is a non-empty string of at most 256 characters. */
export function validateCacheName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || name.length === 0 || name.length > MAX_CACHE_NAME_LENGTH) {
    const shown = typeof name === 'string' ? `a string of ${name.length} characters` : typeof name;
    throw new ConfigError(
      `cache name: expected a non-empty string of at most ${MAX_CACHE_NAME_LENGTH} characters, got ${shown}`,
    );
  }
}

/**
 * Per-cache settings: `defaults` overridden by `options`, validated by the settings schema. Errors
 * name the option, its value and what is expected, e.g. `option ttl=-1: expected ...`.
 */
export function resolveCacheSettings(defaults: CacheSettings, options: CacheOptions = {}): CacheSettings {
  if (typeof options !== 'object' || options === null) {
    throw new ConfigError(`cache options: expected an object such as { ttl: 60 }, got ${String(options)}`);
  }
  const merged: Record<string, unknown> = { ...defaults };
  for (const [name, value] of Object.entries(options)) {
    if (!(CACHE_OPTION_NAMES as readonly string[]).includes(name)) {
      throw new ConfigError(
        `unknown cache option "${name}": expected one of ${CACHE_OPTION_NAMES.join(', ')}`,
      );
    }
    if (value !== undefined) merged[name] = value;
  }
  const parsed = cacheSettingsSchema.safeParse(merged);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const name = String(issue.path[0]);
    const given = Object.hasOwn(options, name) && (options as Record<string, unknown>)[name] !== undefined;
    const value = merged[name];
    const shown = typeof value === 'function' ? 'a function' : (JSON.stringify(value) ?? String(value));
    throw new ConfigError(`${given ? 'option' : 'setting'} ${name}=${shown}: ${issue.message}`);
  }
  return parsed.data as CacheSettings;
}

interface CacheRecord {
  store: CacheStore<any>;
  /** Set once the cache is opened through {@link CacheRegistry.cache}. */
  proxy: Cache<any> | undefined;
}

/** The caches of one process. */
export class CacheRegistry {
  private readonly records = new Map<string, CacheRecord>();
  private readonly maxCaches: number;
  /** Caches created by remote changes and not opened here (records without a proxy). */
  private remoteOnly = 0;

  /**
   * @param context shared by every store (clock, HLC, node id, log, sink, tombstone bounds).
   * @param defaults per-cache settings for caches opened without options and for caches created
   *   by remote changes.
   * @param maxCaches bound on the number of caches; {@link storeForRemote} refuses beyond it.
   * @param maxRemoteCaches bound on the caches created by remote changes and not opened here.
   */
  constructor(
    private readonly context: StoreContext,
    private readonly defaults: CacheSettings,
    maxCaches = DEFAULT_MAX_CACHES,
    private readonly maxRemoteCaches = DEFAULT_MAX_REMOTE_CACHES,
  ) {
    this.maxCaches = maxCaches;
  }

  /**
   * The cache named `name`: the same proxy for the same name. Options are validated on every call;
   * a later call whose options differ from the open cache's settings throws a ConfigError naming
   * the conflict. A cache first created by remote changes takes the options of its first opening.
   */
  cache<V>(name: string, options?: CacheOptions): Cache<V> {
    validateCacheName(name);
    const settings = resolveCacheSettings(this.defaults, options);
    const record = this.records.get(name);
    if (record?.proxy !== undefined) {
      this.checkSameSettings(name, record.store.settings, settings, options);
      return record.proxy as Cache<V>;
    }
    if (record !== undefined) {
      record.store.applySettings(settings);
      record.proxy = createCacheProxy(record.store);
      this.remoteOnly--;
      return record.proxy as Cache<V>;
    }
    this.checkRoom(name);
    const store = new CacheStore<V>(name, settings, this.context);
    const proxy = createCacheProxy(store);
    this.records.set(name, { store, proxy });
    return proxy;
  }

  /** The store of a cache, if it exists. */
  store(name: string): CacheStore | undefined {
    return this.records.get(name)?.store;
  }

  /** Every store, in creation order. */
  *stores(): IterableIterator<CacheStore> {
    for (const record of this.records.values()) yield record.store;
  }

  /**
   * The store for a remote change, created with the defaults if this process has not opened that
   * cache yet.
   *
   * @throws ConfigError for an invalid name; RangeError when the registry already holds
   *   `maxCaches` caches, or `maxRemoteCaches` caches that only remote changes created. The engine
   *   counts these as refused (`dropped.cache-refused`).
   */
  storeForRemote(name: string): CacheStore {
    const existing = this.records.get(name);
    if (existing !== undefined) return existing.store;
    validateCacheName(name);
    this.checkRoom(name);
    if (this.remoteOnly >= this.maxRemoteCaches) {
      throw new RangeError(
        `cannot create cache "${name}" for a remote change: ${this.maxRemoteCaches} caches that this process has not opened already exist`,
      );
    }
    const store = new CacheStore(name, { ...this.defaults }, this.context);
    this.records.set(name, { store, proxy: undefined });
    this.remoteOnly++;
    return store;
  }

  /** Runs every store's housekeeping (expiry, tombstone GC). */
  housekeep(): void {
    for (const record of this.records.values()) record.store.housekeep();
  }

  /** Number of caches. */
  get size(): number {
    return this.records.size;
  }

  private checkRoom(name: string): void {
    if (this.records.size >= this.maxCaches) {
      throw new RangeError(
        `cannot create cache "${name}": this process already holds ${this.maxCaches} caches`,
      );
    }
  }

  private checkSameSettings(
    name: string,
    current: Readonly<CacheSettings>,
    requested: CacheSettings,
    options: CacheOptions | undefined,
  ): void {
    if (options === undefined) return;
    for (const option of CACHE_OPTION_NAMES) {
      if (options[option] === undefined || requested[option] === current[option]) continue;
      const shown = (value: unknown) =>
        typeof value === 'function' ? 'another function' : JSON.stringify(value);
      throw new ConfigError(
        `cache "${name}" is already open with ${option}=${shown(current[option]) ?? 'undefined'}; ` +
          `getCache was called again with ${option}=${shown(requested[option])}. ` +
          'Open it with the same options, or with none',
      );
    }
  }
}
