/**
 * The store behind one cache: entries, their metadata, expiry, eviction, tombstones and the
 * last-write-wins merge of remote changes.
 *
 * Layout (after isaacs/node-lru-cache): a `Map<string, slot>` plus one typed array per metadata
 * field and two plain arrays for keys and values, all indexed by slot. No object is allocated per
 * entry, so an entry costs about 70-80 bytes of bookkeeping besides its key and value, and a read
 * is a Map lookup plus two array accesses.
 *
 * Entries sit in a doubly linked list (typed arrays `next`/`prev`) ordered by their version
 * `(tsm, writer)`, oldest first. Eviction takes the head, the least recently WRITTEN entry: reads
 * do not refresh recency. Reads are local and never replicated, so an order made only of writes,
 * which every member sees, keeps the members' eviction choices alike; McCache for Python also
 * orders by last update. Because every entry of a cache has the same ttl, the same order is also
 * expiry order: expired entries are always a prefix of the list, and reclaiming them never scans
 * live entries.
 */
import {
  type Clock,
  type HybridLogicalClock,
  hlcToMillis,
  MAX_CLOCK_SKEW_MS,
  millisToHlc,
} from '../clock.js';
import type { CacheSettings, CallbackContext } from '../config.js';
import type { Log } from '../log.js';
import { nodeIdHex } from '../wire/frame.js';
import { crcFromHalves, crcHalves, MAX_KEY_LENGTH } from '../wire/ops.js';
import { crcHex, crcOf, decodeValueAt, encodeValue } from '../wire/value-codec.js';
import {
  encodeSimpleValue,
  HIGH_HALF,
  LOW_HALF,
  SHORT_HASH_LIMIT,
  xxhash64Short,
} from './simple-encoding.js';
import {
  ApplyOutcome,
  type CacheCounters,
  type CacheStoreApi,
  ChangeKind,
  type EntryChecksum,
  type EntryMetadata,
  type KeyVersion,
  type RemoteChange,
  type ReplicationSink,
} from './types.js';

/** What a store needs from the process around it. */
export interface StoreContext {
  clock: Clock;
  hlc: HybridLogicalClock;
  /** This process's node id, the `writer` of its own changes (an unsigned 32-bit integer). */
  nodeId: number;
  log: Log;
  /**
   * Told of every local change. Read at each change, so an engine may attach it after caches
   * exist by assigning this field.
   */
  sink?: ReplicationSink | undefined;
  /** ms a tombstone is kept; the engine passes max(3 x pulse, 60 s). */
  tombstoneTtlMs: number;
  /** Bound on the tombstones of one store; the oldest are dropped first (counted). */
  maxTombstones: number;
}

// String.prototype.isWellFormed is ES2024 (in Node 20); the ES2022 lib does not declare it.
declare global {
  interface String {
    /** ES2024, in Node 20: false if the string holds a lone surrogate. */
    isWellFormed(): boolean;
  }
}

/** Keys every member can carry byte for byte: bounded, and valid UTF-16 (no lone surrogates). */
function refuseKey(key: string, cache: string): never {
  if (key.length > MAX_KEY_LENGTH) {
    throw new TypeError(
      `cannot cache a key of ${key.length} characters in cache "${cache}": keys are limited to ${MAX_KEY_LENGTH} characters`,
    );
  }
  throw new TypeError(
    `cannot cache key ${JSON.stringify(key)} in cache "${cache}": it contains a lone surrogate, which UTF-8 cannot ` +
      'carry to other members; expected a well-formed string',
  );
}

/** Thrown when one entry (encoded key and value) is larger than its cache's `size` limit. */
export class EntryTooLargeError extends TypeError {
  /** 'EntryTooLargeError', to tell it from other TypeErrors in logs. */
  override name = 'EntryTooLargeError';
}

const NIL = -1;
const INITIAL_CAPACITY = 16;
/** Changes closer than this to the previous change of the cache count as spikes (seed's TESTING.md). */
const SPIKE_WINDOW_MS = 5000;
/** At most one warning per store this often about remote changes stamped too far in the future. */
const FUTURE_WARNING_INTERVAL_MS = 5000;

interface Tombstone {
  tsm: number;
  writer: number;
  /** Local wall-clock ms when the tombstone was laid, for garbage collection. */
  at: number;
}

/** True if version (tsmA, writerA) is newer than (tsmB, writerB): tsm first, then writer id. */
function isNewer(tsmA: number, writerA: number, tsmB: number, writerB: number): boolean {
  return tsmA > tsmB || (tsmA === tsmB && writerA > writerB);
}

/** Bytes of `text` in UTF-8, without allocating. */
export function utf8Length(text: string): number {
  const length = text.length;
  if (length > 64) return Buffer.byteLength(text, 'utf8');
  let bytes = length;
  for (let i = 0; i < length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x80) continue;
    if (code < 0x800) bytes += 1;
    else if (code >= 0xd800 && code <= 0xdbff && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      bytes += 2; // a surrogate pair: two UTF-16 units, four UTF-8 bytes
      i++;
    } else bytes += 2;
  }
  return bytes;
}

function refuseMutation(): never {
  throw new TypeError(
    'this value is frozen by the cache option `freeze`: mutating a cached value in place is never replicated; assign a new value instead',
  );
}

/**
 * Deep-freezes a value so that in-place mutation throws. Map and Set get throwing mutators as own
 * properties (Object.freeze alone does not stop `map.set`). Typed arrays cannot be frozen and a
 * Date's setters still work: those stay mutable.
 */
export function deepFreeze(value: unknown): void {
  if (typeof value !== 'object' || value === null || Object.isFrozen(value) || ArrayBuffer.isView(value))
    return;
  if (value instanceof Map) {
    for (const name of ['set', 'delete', 'clear'])
      Object.defineProperty(value, name, { value: refuseMutation });
    Object.freeze(value);
    for (const [key, item] of value) {
      deepFreeze(key);
      deepFreeze(item);
    }
    return;
  }
  if (value instanceof Set) {
    for (const name of ['add', 'delete', 'clear'])
      Object.defineProperty(value, name, { value: refuseMutation });
    Object.freeze(value);
    for (const item of value) deepFreeze(item);
    return;
  }
  Object.freeze(value);
  for (const key of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[key]);
}

/** Defines an own enumerable data property, so keys such as `__proto__` stay plain data. */
export function defineEntry(target: object, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, writable: true, enumerable: true, configurable: true });
}

/**
 * One cache's entries. The proxy uses the synchronous local API (get, has, set, delete, keys...);
 * the cluster engine uses {@link CacheStoreApi}.
 *
 * Mutating a cached object in place changes only this process's copy and is never replicated (nor
 * re-checksummed): assign a new value instead, or set the `freeze` option so that such mistakes
 * throw.
 */
export class CacheStore<V = unknown> implements CacheStoreApi {
  /** The cache's name, the same on every member. */
  readonly name: string;
  private readonly context: StoreContext;
  private readonly hlc: HybridLogicalClock;
  private readonly nodeId: number;
  private currentSettings!: CacheSettings;
  private freezeValues = false;
  private ttlMs = 0;
  private maxEntries = 0;
  private maxBytes = 0;
  private callbackWinMs = 0;

  private readonly slots = new Map<string, number>();
  private keyList: (string | undefined)[] = [];
  private valueList: (V | undefined)[] = [];
  private next!: Int32Array;
  private prev!: Int32Array;
  /** HLC timestamp of the last write, the writer's clock. */
  private tsmList!: Float64Array;
  /** Wall-clock ms of the last read through the proxy. */
  private lkpList!: Float64Array;
  private writerList!: Uint32Array;
  /** Bytes of the encoded key and value. */
  private sizeList!: Uint32Array;
  private crcList!: BigUint64Array;
  /** The same memory as crcList, as 32-bit halves, so the write path stores a crc without a BigInt. */
  private crcHalves!: Uint32Array;
  private capacity = 0;
  private unusedFrom = 0;
  private freeSlots: number[] = [];
  private head = NIL;
  private tail = NIL;
  private entryCount = 0;
  private totalBytes = 0;

  /** Keyed by cache key, in the order laid (oldest first), for bounded size and cheap GC. */
  private readonly tombstones = new Map<string, Tombstone>();
  private clearedTsm = -1;
  private clearedWriter = 0;

  /**
   * A coarse "now" for the read path, refreshed at most once per ms through a clock timer
   * (unref'd on the system clock); -1 when stale. With it, an entry is expired iff its tsm is below
   * `expiryHorizon`, a single comparison.
   */
  private cachedNow = -1;
  private expiryHorizon = Number.NEGATIVE_INFINITY;
  private readonly invalidateNow = (): void => {
    this.cachedNow = -1;
  };

  private hits = 0;
  private misses = 0;
  private inserts = 0;
  private updates = 0;
  private deletes = 0;
  private evicts = 0;
  private expires = 0;
  private remoteApplied = 0;
  private remoteStale = 0;
  private remoteRejected = 0;
  private remoteFromFuture = 0;
  private lastFutureWarningAt = Number.NEGATIVE_INFINITY;
  private tombstonesDropped = 0;
  private spikes = 0;
  private spikeSumMs = 0;
  private lastChangeAt = -1;
  private callbacks = 0;
  private callbackErrors = 0;

  constructor(name: string, settings: CacheSettings, context: StoreContext) {
    if (context.nodeId >>> 0 !== context.nodeId) {
      throw new TypeError(`node id ${context.nodeId} is not an unsigned 32-bit integer`);
    }
    this.name = name;
    this.context = context;
    this.hlc = context.hlc;
    this.nodeId = context.nodeId;
    this.allocate(Math.min(INITIAL_CAPACITY, settings.max + 1));
    this.applySettings(settings);
  }

  /** The settings in force. */
  get settings(): Readonly<CacheSettings> {
    return this.currentSettings;
  }

  /**
   * Replaces the settings (used when a cache first created for remote changes is opened with
   * options). Entries over the new limits are evicted and reported like any eviction.
   */
  applySettings(settings: CacheSettings): void {
    this.currentSettings = Object.freeze({ ...settings });
    this.ttlMs = settings.ttl * 1000;
    this.maxEntries = settings.max;
    this.maxBytes = settings.size;
    this.callbackWinMs = settings.callbackWin * 1000;
    this.freezeValues = settings.freeze;
    this.cachedNow = -1;
    if (this.entryCount > this.maxEntries || this.totalBytes > this.maxBytes) this.enforceLimits();
  }

  // ---------------------------------------------------------------- local API (the proxy's)

  /** The live value of `key`, or undefined on a miss or if expired. Records the read time (lkp). */
  get(key: string): V | undefined {
    const slot = this.slots.get(key);
    if (slot !== undefined) {
      let now = this.cachedNow;
      if (now < 0) now = this.refreshNow();
      if (this.tsmList[slot]! >= this.expiryHorizon) {
        this.lkpList[slot] = now;
        this.hits++;
        return this.valueList[slot];
      }
    }
    this.misses++;
    return undefined;
  }

  /** True if `key` is live and unexpired. Not counted as a lookup. */
  has(key: string): boolean {
    const slot = this.slots.get(key);
    if (slot === undefined) return false;
    if (this.cachedNow < 0) this.refreshNow();
    return this.tsmList[slot]! >= this.expiryHorizon;
  }

  /** The live value of `key` without counting a lookup or touching lkp. */
  peek(key: string): V | undefined {
    return this.has(key) ? this.valueList[this.slots.get(key)!] : undefined;
  }

  /**
   * Inserts or updates `key`: encodes the value once (size and crc), stamps it with the HLC, makes
   * it the most recently written entry, evicts the least recently written while over `max` or
   * `size`, and reports the write and each eviction to the sink.
   *
   * @throws UnencodableValueError (a TypeError) if cbor-x cannot encode the value;
   *   {@link EntryTooLargeError} (a TypeError) if the entry exceeds the cache's `size`.
   *   In both cases the cache is unchanged.
   */
  set(key: string, value: V): void {
    if (key.length > MAX_KEY_LENGTH || !key.isWellFormed()) refuseKey(key, this.name);
    // Small values skip cbor-x (same bytes, in a reused scratch view: the sink copies what it keeps).
    let encoded = encodeSimpleValue(value);
    if (encoded === undefined) encoded = encodeValue(value, key);
    const bytes = utf8Length(key) + encoded.length;
    if (bytes > this.maxBytes) {
      throw new EntryTooLargeError(
        `cannot cache key "${key}" in cache "${this.name}": the entry takes ${bytes} bytes (encoded key and value), ` +
          `more than the cache's size limit of ${this.maxBytes} bytes; raise the \`size\` option or store less`,
      );
    }
    if (this.freezeValues) deepFreeze(value);
    const tsm = this.hlc.tick();
    let slot = this.slots.get(key);
    let kind: ChangeKind;
    if (slot !== undefined && this.ttlMs > 0) {
      // Expired as get() sees it but not yet reclaimed: this write is an insert.
      if (this.cachedNow < 0) this.refreshNow();
      if (this.tsmList[slot]! < this.expiryHorizon) {
        this.expires++;
        this.remove(slot);
        slot = undefined;
      }
    }
    if (slot === undefined) {
      kind = ChangeKind.Insert;
      slot = this.insertKey(key);
      this.linkLast(slot);
    } else {
      kind = ChangeKind.Update;
      this.totalBytes -= this.sizeList[slot]!;
      this.updates++;
      // A local tick is newer than every version seen, so the entry belongs at the tail.
      if (slot !== this.tail) {
        this.unlink(slot);
        this.linkLast(slot);
      }
    }
    this.valueList[slot] = value;
    this.tsmList[slot] = tsm;
    this.writerList[slot] = this.nodeId;
    this.sizeList[slot] = bytes;
    if (encoded.length <= SHORT_HASH_LIMIT) xxhash64Short(encoded, this.crcHalves, slot);
    else this.crcList[slot] = crcOf(encoded);
    this.totalBytes += bytes;
    this.noteChange();
    const sink = this.context.sink;
    if (sink !== undefined) {
      // crcHalves views each crc as two 32-bit words, in the machine's byte order.
      const halves = this.crcHalves;
      sink.localChange(
        this.name,
        kind,
        key,
        tsm,
        halves[2 * slot + HIGH_HALF]!,
        halves[2 * slot + LOW_HALF]!,
        encoded,
      );
    }
    if (this.entryCount > this.maxEntries || this.totalBytes > this.maxBytes) this.enforceLimits();
  }

  /**
   * Deletes `key`, leaving a tombstone (tsm, writer) so that a delayed older update cannot bring it
   * back, and reports the delete. A missing or expired key returns false and sends nothing.
   */
  delete(key: string): boolean {
    const slot = this.slots.get(key);
    if (slot === undefined) return false;
    // Expired as get() sees it (the coarse now), so that delete and get agree.
    let now = this.cachedNow;
    if (now < 0) now = this.refreshNow();
    if (this.tsmList[slot]! < this.expiryHorizon) {
      this.expires++;
      this.remove(slot);
      return false;
    }
    const tsm = this.hlc.tick();
    this.remove(slot);
    this.layTombstone(key, tsm, this.nodeId, now);
    this.deletes++;
    this.noteChange();
    const sink = this.context.sink;
    if (sink !== undefined) sink.localChange(this.name, ChangeKind.Delete, key, tsm, 0, 0, undefined);
    return true;
  }

  /** Live, unexpired keys, least recently written first. */
  keys(): string[] {
    this.reclaimExpired();
    const keys: string[] = new Array(this.entryCount);
    let n = 0;
    for (let slot = this.head; slot !== NIL; slot = this.next[slot]!) keys[n++] = this.keyList[slot]!;
    return keys;
  }

  /** Live, unexpired entries as [key, value] pairs, least recently written first. No lookups counted. */
  entries(): [string, V][] {
    this.reclaimExpired();
    const entries: [string, V][] = [];
    for (let slot = this.head; slot !== NIL; slot = this.next[slot]!) {
      entries.push([this.keyList[slot]!, this.valueList[slot] as V]);
    }
    return entries;
  }

  /** Metadata of a live entry, or undefined. Not counted as a lookup. */
  metadataOf(key: string): EntryMetadata | undefined {
    if (!this.has(key)) return undefined;
    const slot = this.slots.get(key)!;
    const tsm = this.tsmList[slot]!;
    return {
      tsm,
      crc: crcHex(this.crcList[slot]!),
      lkp: this.lkpList[slot]!,
      exp: this.ttlMs > 0 ? hlcToMillis(tsm) + this.ttlMs : null,
      writer: nodeIdHex(this.writerList[slot]!),
      size: this.sizeList[slot]!,
    };
  }

  /** `{ key: { crc, tsm } }` of the live entries (or of `key` alone), sorted by key. */
  checksum(key?: string): Record<string, EntryChecksum> {
    const result: Record<string, EntryChecksum> = {};
    const keys = key === undefined ? this.keys().sort() : this.has(key) ? [key] : [];
    for (const name of keys) {
      const slot = this.slots.get(name)!;
      defineEntry(result, name, { crc: crcHex(this.crcList[slot]!), tsm: this.tsmList[slot]! });
    }
    return result;
  }

  /** Drops every entry and tombstone of this process only: nothing is reported or replicated. */
  clearLocal(): void {
    this.slots.clear();
    this.tombstones.clear();
    this.keyList = [];
    this.valueList = [];
    this.freeSlots = [];
    this.allocate(Math.min(INITIAL_CAPACITY, this.maxEntries + 1));
  }

  /** Live entries (expired ones are reclaimed first). */
  get count(): number {
    this.reclaimExpired();
    return this.entryCount;
  }

  /** Bytes of the encoded keys and values of the live entries. */
  get bytes(): number {
    this.reclaimExpired();
    return this.totalBytes;
  }

  // ---------------------------------------------------------------- engine API

  /**
   * Applies a remote change by last-write-wins on (tsm, writer) against the local entry or
   * tombstone. Never reports to the sink, except the evictions that a remote insert causes (kind
   * Evict, new tsm), so that every member evicts alike. Fires the callback when a key read within
   * callbackWin is changed.
   */
  applyRemote(change: RemoteChange, repair = false): ApplyOutcome {
    const encoded = change.encoded;
    let memory: Buffer | undefined;
    let crcHigh = 0;
    let crcLow = 0;
    if (encoded instanceof Uint8Array) {
      memory = Buffer.isBuffer(encoded)
        ? encoded
        : Buffer.from(encoded.buffer, encoded.byteOffset, encoded.length);
      [crcHigh, crcLow] = crcHalves(change.crc ?? crcOf(encoded));
    }
    return this.applyRemoteOp(
      change.kind,
      change.key,
      change.tsm,
      change.writer,
      crcHigh,
      crcLow,
      memory,
      0,
      encoded?.length ?? 0,
      repair,
    );
  }

  /**
   * {@link applyRemote} with the change's fields as arguments, so that the receive path makes no
   * object, BigInt or view per op: a write's crc comes as its high and low 32 bits, and its encoded
   * value as `memory[valueStart, valueStart + valueLength)` (the datagram it arrived in).
   */
  applyRemoteOp(
    kind: ChangeKind,
    key: string,
    tsm: number,
    writer: number,
    crcHigh: number,
    crcLow: number,
    memory: Buffer | undefined,
    valueStart: number,
    valueLength: number,
    repair = false,
  ): ApplyOutcome {
    const context = this.context;
    if (typeof key !== 'string' || !Number.isFinite(tsm) || tsm < 0 || writer >>> 0 !== writer) {
      this.remoteRejected++;
      return ApplyOutcome.Rejected;
    }
    if (!context.hlc.observe(tsm)) {
      this.refuseFromFuture(tsm, writer);
      return ApplyOutcome.Rejected;
    }
    if (this.clearedTsm >= 0 && !isNewer(tsm, writer, this.clearedTsm, this.clearedWriter)) {
      this.remoteStale++;
      return ApplyOutcome.Cleared;
    }
    // The coarse now that get() uses too (refreshed at most once a millisecond): a clock read per
    // op was a measurable share of the receive path.
    let now = this.cachedNow;
    if (now < 0) now = this.refreshNow();
    let slot = this.slots.get(key);
    if (slot !== undefined && this.ttlMs > 0 && hlcToMillis(this.tsmList[slot]!) + this.ttlMs <= now) {
      this.expires++;
      this.remove(slot);
      slot = undefined;
    }
    if (slot !== undefined) {
      if (!isNewer(tsm, writer, this.tsmList[slot]!, this.writerList[slot]!)) {
        this.remoteStale++;
        return ApplyOutcome.Stale;
      }
    } else if (this.tombstones.size > 0) {
      const tombstone = this.tombstones.get(key);
      if (tombstone !== undefined && !isNewer(tsm, writer, tombstone.tsm, tombstone.writer)) {
        this.remoteStale++;
        return ApplyOutcome.Stale;
      }
    }
    if (kind === ChangeKind.Insert || kind === ChangeKind.Update) {
      return this.applyRemoteWrite(
        key,
        tsm,
        writer,
        crcHigh,
        crcLow,
        memory,
        valueStart,
        valueLength,
        slot,
        now,
        repair,
      );
    }
    if (kind !== ChangeKind.Delete && kind !== ChangeKind.Evict) {
      this.remoteRejected++;
      return ApplyOutcome.Rejected;
    }
    if (slot === undefined) {
      if (this.currentSettings.mode === 0) return ApplyOutcome.NotHeld;
      // Not held here: remember the delete anyway, so that an older write arriving late loses.
      this.layTombstone(key, tsm, writer, now);
      this.remoteApplied++;
      return ApplyOutcome.Applied;
    }
    const lkp = this.lkpList[slot]!;
    const previousCrc = this.crcList[slot]!;
    this.remove(slot);
    this.layTombstone(key, tsm, writer, now);
    if (kind === ChangeKind.Evict) this.evicts++;
    else {
      this.deletes++;
      this.noteChange();
    }
    this.remoteApplied++;
    if (this.currentSettings.callback !== undefined && lkp > 0 && now - lkp <= this.callbackWinMs) {
      this.fireCallback(repair ? 'incoherent' : 'delete', key, lkp, tsm, now, previousCrc, undefined);
    }
    return ApplyOutcome.Applied;
  }

  private applyRemoteWrite(
    key: string,
    tsm: number,
    writer: number,
    crcHigh: number,
    crcLow: number,
    memory: Buffer | undefined,
    valueStart: number,
    valueLength: number,
    slot: number | undefined,
    now: number,
    repair: boolean,
  ): ApplyOutcome {
    if (slot === undefined && this.currentSettings.mode === 0) return ApplyOutcome.NotHeld;
    if (this.ttlMs > 0 && hlcToMillis(tsm) + this.ttlMs <= now) return ApplyOutcome.Expired;
    if (!Buffer.isBuffer(memory)) {
      this.remoteRejected++;
      return ApplyOutcome.Rejected;
    }
    const bytes = utf8Length(key) + valueLength;
    let value: V;
    try {
      if (bytes > this.maxBytes)
        throw new EntryTooLargeError(`${bytes} bytes exceed the size limit ${this.maxBytes}`);
      value = decodeValueAt(memory, valueStart, valueLength) as V;
    } catch (error) {
      this.remoteRejected++;
      if (this.context.log.warnOn) {
        this.context.log.warn(`cache "${this.name}": rejected a remote value for key "${key}"`, {
          error: (error as Error).message,
        });
      }
      return ApplyOutcome.Rejected;
    }
    if (this.currentSettings.freeze) deepFreeze(value);
    const callback = this.currentSettings.callback;
    let lkp = 0;
    let previousCrc: bigint | undefined;
    if (slot !== undefined) {
      lkp = this.lkpList[slot]!;
      if (callback !== undefined) previousCrc = this.crcList[slot]!;
      this.unlink(slot);
      this.totalBytes -= this.sizeList[slot]!;
      this.updates++;
    } else {
      slot = this.insertKey(key);
    }
    this.valueList[slot] = value;
    this.tsmList[slot] = tsm;
    this.writerList[slot] = writer;
    this.sizeList[slot] = bytes;
    this.crcHalves[2 * slot + HIGH_HALF] = crcHigh;
    this.crcHalves[2 * slot + LOW_HALF] = crcLow;
    this.totalBytes += bytes;
    this.linkInOrder(slot);
    this.remoteApplied++;
    this.noteChange();
    if (this.entryCount > this.maxEntries || this.totalBytes > this.maxBytes) this.enforceLimits();
    if (callback !== undefined && lkp > 0 && now - lkp <= this.callbackWinMs) {
      // The slot may have been evicted by enforceLimits: the crc comes from the arguments.
      const crc = crcFromHalves(crcHigh, crcLow);
      this.fireCallback(repair ? 'incoherent' : 'update', key, lkp, tsm, now, previousCrc, crc);
    }
    return ApplyOutcome.Applied;
  }

  /**
   * Removes every entry and tombstone at or older than (tsm, writer) and remembers the mark, so
   * that remote changes older than it are ignored. Returns the number of entries removed; a mark
   * stamped more than MAX_CLOCK_SKEW_MS ahead of the local clock changes nothing (counted in
   * `remoteFromFuture`) and returns 0.
   */
  clearBefore(tsm: number, writer: number): number {
    if (!this.context.hlc.observe(tsm)) {
      this.refuseFromFuture(tsm, writer);
      return 0;
    }
    if (this.clearedTsm < 0 || isNewer(tsm, writer, this.clearedTsm, this.clearedWriter)) {
      this.clearedTsm = tsm;
      this.clearedWriter = writer;
    }
    let removed = 0;
    // The list is ordered by version, so the entries to clear are a prefix.
    while (
      this.head !== NIL &&
      !isNewer(this.tsmList[this.head]!, this.writerList[this.head]!, tsm, writer)
    ) {
      this.remove(this.head);
      removed++;
    }
    for (const [key, tombstone] of this.tombstones) {
      if (!isNewer(tombstone.tsm, tombstone.writer, tsm, writer)) this.tombstones.delete(key);
    }
    return removed;
  }

  versionOf(key: string): KeyVersion | undefined {
    if (this.has(key)) {
      const slot = this.slots.get(key)!;
      return {
        tsm: this.tsmList[slot]!,
        writer: this.writerList[slot]!,
        crc: this.crcList[slot]!,
        tombstone: false,
      };
    }
    const tombstone = this.tombstones.get(key);
    if (tombstone === undefined) return undefined;
    return { tsm: tombstone.tsm, writer: tombstone.writer, crc: 0n, tombstone: true };
  }

  /** Re-encodes the live value (encoded bytes are not kept per entry, to save memory). */
  encodedValueOf(key: string): Uint8Array | undefined {
    if (!this.has(key)) return undefined;
    const value = this.valueList[this.slots.get(key)!];
    // A copy: the fast path returns a view of a scratch buffer that the next write reuses.
    const simple = encodeSimpleValue(value);
    return simple === undefined ? encodeValue(value, key) : Uint8Array.from(simple);
  }

  forEachVersion(visit: (key: string, version: KeyVersion) => void): void {
    this.reclaimExpired();
    for (let slot = this.head; slot !== NIL; slot = this.next[slot]!) {
      visit(this.keyList[slot]!, {
        tsm: this.tsmList[slot]!,
        writer: this.writerList[slot]!,
        crc: this.crcList[slot]!,
        tombstone: false,
      });
    }
    for (const [key, tombstone] of this.tombstones) {
      visit(key, { tsm: tombstone.tsm, writer: tombstone.writer, crc: 0n, tombstone: true });
    }
  }

  /** Reclaims expired entries (not reported: every member expires them alike) and old tombstones. */
  housekeep(): void {
    const now = this.context.clock.now();
    this.reclaimExpired(now);
    const laidBefore = now - this.context.tombstoneTtlMs;
    for (const [key, tombstone] of this.tombstones) {
      if (tombstone.at > laidBefore) break;
      this.tombstones.delete(key);
    }
  }

  /** The cache's counters now, for metrics. */
  counters(): CacheCounters {
    this.reclaimExpired();
    return {
      count: this.entryCount,
      size: this.totalBytes,
      lookups: this.hits + this.misses,
      hits: this.hits,
      misses: this.misses,
      inserts: this.inserts,
      updates: this.updates,
      deletes: this.deletes,
      evicts: this.evicts,
      expires: this.expires,
      remoteApplied: this.remoteApplied,
      remoteStale: this.remoteStale,
      remoteRejected: this.remoteRejected,
      remoteFromFuture: this.remoteFromFuture,
      tombstones: this.tombstones.size,
      tombstonesDropped: this.tombstonesDropped,
      spikes: this.spikes,
      spikeInt: this.spikes > 0 ? Math.round(this.spikeSumMs / this.spikes) / 1000 : 0,
      callbacks: this.callbacks,
      callbackErrors: this.callbackErrors,
    };
  }

  // ---------------------------------------------------------------- internals

  /** Counts a remote stamp the HLC refused as too far ahead, and warns at most every few seconds. */
  private refuseFromFuture(tsm: number, writer: number): void {
    this.remoteFromFuture++;
    const log = this.context.log;
    if (!log.warnOn) return;
    const now = this.context.clock.now();
    if (now - this.lastFutureWarningAt < FUTURE_WARNING_INTERVAL_MS) return;
    this.lastFutureWarningAt = now;
    const aheadMs = hlcToMillis(tsm) - now;
    log.warn(
      `cache "${this.name}": refused a remote change from node ${nodeIdHex(writer)} ` +
        `stamped ${(aheadMs / 1000).toFixed(1)} s ahead of this clock (at most ${MAX_CLOCK_SKEW_MS / 1000} s ` +
        "are accepted): is that member's clock wrong?",
      { writer, tsm, aheadMs, refused: this.remoteFromFuture },
    );
  }

  private refreshNow(): number {
    const now = this.context.clock.now();
    this.cachedNow = now;
    this.expiryHorizon =
      this.ttlMs > 0 ? millisToHlc(Math.floor(now - this.ttlMs) + 1) : Number.NEGATIVE_INFINITY;
    this.context.clock.setTimeout(this.invalidateNow, 1);
    return now;
  }

  /** Expired iff hlcToMillis(tsm) + ttl <= now, i.e. tsm < millisToHlc(floor(now - ttl) + 1). */
  private horizonAt(now: number): number {
    return this.ttlMs > 0 ? millisToHlc(Math.floor(now - this.ttlMs) + 1) : Number.NEGATIVE_INFINITY;
  }

  /** Expired entries are a prefix of the list (same ttl for all, list ordered by tsm). */
  private reclaimExpired(now = this.context.clock.now()): void {
    if (this.ttlMs <= 0) return;
    const horizon = this.horizonAt(now);
    while (this.head !== NIL && this.tsmList[this.head]! < horizon) {
      this.expires++;
      this.remove(this.head);
    }
  }

  /** Evicts least recently written entries (reclaiming expired ones first) until within limits. */
  private enforceLimits(): void {
    const now = this.context.clock.now();
    const horizon = this.horizonAt(now);
    const sink = this.context.sink;
    while ((this.entryCount > this.maxEntries || this.totalBytes > this.maxBytes) && this.head !== NIL) {
      const slot = this.head;
      const key = this.keyList[slot]!;
      const expired = this.tsmList[slot]! < horizon;
      this.remove(slot);
      if (expired) {
        this.expires++;
        continue;
      }
      const tsm = this.context.hlc.tick();
      this.layTombstone(key, tsm, this.context.nodeId, now);
      this.evicts++;
      if (this.context.log.debugOn) this.context.log.debug(`cache "${this.name}": evicted "${key}"`);
      if (sink !== undefined) sink.localChange(this.name, ChangeKind.Evict, key, tsm, 0, 0, undefined);
    }
  }

  private layTombstone(key: string, tsm: number, writer: number, now: number): void {
    const tombstones = this.tombstones;
    if (tombstones.has(key)) tombstones.delete(key);
    else if (tombstones.size >= this.context.maxTombstones) {
      if (this.context.maxTombstones <= 0) {
        this.tombstonesDropped++;
        return;
      }
      tombstones.delete(tombstones.keys().next().value!);
      this.tombstonesDropped++;
    }
    tombstones.set(key, { tsm, writer, at: now });
  }

  private noteChange(): void {
    let now = this.cachedNow;
    if (now < 0) now = this.refreshNow();
    const span = now - this.lastChangeAt;
    if (this.lastChangeAt >= 0 && span >= 0 && span <= SPIKE_WINDOW_MS) {
      this.spikes++;
      this.spikeSumMs += span;
    }
    this.lastChangeAt = now;
  }

  private fireCallback(
    type: CallbackContext['type'],
    key: string,
    lkp: number,
    tsm: number,
    now: number,
    previousCrc: bigint | undefined,
    newCrc: bigint | undefined,
  ): void {
    const callback = this.currentSettings.callback!;
    this.callbacks++;
    try {
      const result: unknown = callback({
        type,
        namespace: this.name,
        key,
        lkp,
        tsm,
        elapsed: now - lkp,
        prvcrc: previousCrc === undefined ? undefined : crcHex(previousCrc),
        newcrc: newCrc === undefined ? undefined : crcHex(newCrc),
      });
      if (result instanceof Promise) result.catch((error: unknown) => this.callbackFailed(key, error));
    } catch (error) {
      this.callbackFailed(key, error);
    }
  }

  private callbackFailed(key: string, error: unknown): void {
    this.callbackErrors++;
    this.context.log.error(`cache "${this.name}": the callback threw for key "${key}"`, {
      error: error instanceof Error ? error.message : String(error),
    });
  }

  private allocate(capacity: number): void {
    this.capacity = capacity;
    this.next = new Int32Array(capacity);
    this.prev = new Int32Array(capacity);
    this.tsmList = new Float64Array(capacity);
    this.lkpList = new Float64Array(capacity);
    this.writerList = new Uint32Array(capacity);
    this.sizeList = new Uint32Array(capacity);
    this.crcList = new BigUint64Array(capacity);
    this.crcHalves = new Uint32Array(this.crcList.buffer);
    this.unusedFrom = 0;
    this.head = NIL;
    this.tail = NIL;
    this.entryCount = 0;
    this.totalBytes = 0;
  }

  /** Doubles the typed arrays, up to max + 1 (an insert may pass max just before it evicts). */
  private grow(): void {
    const capacity = Math.min(this.capacity * 2, this.maxEntries + 1);
    if (capacity <= this.capacity)
      throw new Error(`cache "${this.name}": no free slot (capacity ${this.capacity})`);
    const copy = <T extends Int32Array | Float64Array | Uint32Array | BigUint64Array>(from: T, to: T): T => {
      (to as Int32Array).set(from as Int32Array);
      return to;
    };
    this.next = copy(this.next, new Int32Array(capacity));
    this.prev = copy(this.prev, new Int32Array(capacity));
    this.tsmList = copy(this.tsmList, new Float64Array(capacity));
    this.lkpList = copy(this.lkpList, new Float64Array(capacity));
    this.writerList = copy(this.writerList, new Uint32Array(capacity));
    this.sizeList = copy(this.sizeList, new Uint32Array(capacity));
    this.crcList = copy(this.crcList, new BigUint64Array(capacity));
    this.crcHalves = new Uint32Array(this.crcList.buffer);
    this.capacity = capacity;
  }

  private takeSlot(): number {
    if (this.freeSlots.length > 0) return this.freeSlots.pop()!;
    if (this.unusedFrom === this.capacity) this.grow();
    return this.unusedFrom++;
  }

  private remove(slot: number): void {
    this.unlink(slot);
    this.slots.delete(this.keyList[slot]!);
    this.keyList[slot] = undefined;
    this.valueList[slot] = undefined;
    this.totalBytes -= this.sizeList[slot]!;
    this.entryCount--;
    this.freeSlots.push(slot);
  }

  private unlink(slot: number): void {
    const before = this.prev[slot]!;
    const after = this.next[slot]!;
    if (before === NIL) this.head = after;
    else this.next[before] = after;
    if (after === NIL) this.tail = before;
    else this.prev[after] = before;
  }

  private linkLast(slot: number): void {
    this.prev[slot] = this.tail;
    this.next[slot] = NIL;
    if (this.tail === NIL) this.head = slot;
    else this.next[this.tail] = slot;
    this.tail = slot;
  }

  /** Links a remotely written entry by version, walking back from the tail (usually 0-1 steps). */
  /** A slot for a new key (any tombstone of it goes): indexed and counted, not yet linked or filled. */
  private insertKey(key: string): number {
    if (this.tombstones.size > 0) this.tombstones.delete(key);
    const slot = this.takeSlot();
    this.slots.set(key, slot);
    this.keyList[slot] = key;
    this.lkpList[slot] = 0;
    this.entryCount++;
    this.inserts++;
    return slot;
  }

  private linkInOrder(slot: number): void {
    const tsm = this.tsmList[slot]!;
    const writer = this.writerList[slot]!;
    let before = this.tail;
    while (before !== NIL && isNewer(this.tsmList[before]!, this.writerList[before]!, tsm, writer)) {
      before = this.prev[before]!;
    }
    const after = before === NIL ? this.head : this.next[before]!;
    this.prev[slot] = before;
    this.next[slot] = after;
    if (before === NIL) this.head = slot;
    else this.next[before] = slot;
    if (after === NIL) this.tail = slot;
    else this.prev[after] = slot;
  }
}
