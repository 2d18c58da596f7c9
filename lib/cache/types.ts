/**
 * The contract between a cache store and whatever replicates it (the cluster engine).
 *
 * The store never imports the engine: it reports local changes to a {@link ReplicationSink} and
 * accepts remote changes through {@link CacheStoreApi.applyRemote}, which never reports back to the
 * sink, so remote changes are not echoed.
 */

/** Kinds of change, numbered as the wire's op codes. */
export const ChangeKind = {
  /** A key that was not held is written. */
  Insert: 1,
  /** A held key is written again. */
  Update: 2,
  /** A key is deleted (leaves a tombstone). */
  Delete: 3,
  /** A key is removed to stay within the cache's `max` entries or `size` bytes. */
  Evict: 4,
} as const;
/** One of the {@link ChangeKind} values. */
export type ChangeKind = (typeof ChangeKind)[keyof typeof ChangeKind];

/** Receives every local change of every store, synchronously, from the proxy's write path. */
export interface ReplicationSink {
  /**
   * A local insert/update (with `encoded` value bytes and their crc, as two 32-bit halves so the
   * write path makes no BigInt), a local delete, or an eviction (max entries or max size; expiry by
   * ttl is not reported, every member expires alike). For a delete or eviction the crc is 0, 0.
   * `encoded` may be a scratch view the store reuses: copy it before returning if it must be kept.
   * Must be cheap and must not throw: it is called on the proxy's synchronous write path.
   */
  localChange(
    cache: string,
    kind: ChangeKind,
    key: string,
    tsm: number,
    crcHigh: number,
    crcLow: number,
    encoded: Uint8Array | undefined,
  ): void;
}

/** A change received from another member (already authenticated and validated by the wire). */
export interface RemoteChange {
  /** What happened to the key. */
  kind: ChangeKind;
  /** The key changed. */
  key: string;
  /** HLC timestamp given by the writer. */
  tsm: number;
  /** Node id of the writer, the tie-break for equal tsm. */
  writer: number;
  /** For insert/update: the writer's crc of `encoded`. */
  crc?: bigint | undefined;
  /** For insert/update: the encoded value. */
  encoded?: Uint8Array | undefined;
}

/** What applyRemote did. */
export const ApplyOutcome = {
  /** The change won last-write-wins and is now the local state. */
  Applied: 0,
  /** The local version (entry or tombstone) is newer or equal: nothing changed. */
  Stale: 1,
  /** Mode 0 and the key is not held locally: ignored by design. */
  NotHeld: 2,
  /** The entry had already expired by its ttl: nothing stored. */
  Expired: 3,
  /**
   * The value could not be decoded or is larger than the cache (counted in `remoteRejected`), or the
   * change is stamped more than MAX_CLOCK_SKEW_MS ahead of the local clock (counted in
   * `remoteFromFuture`): nothing changed.
   */
  Rejected: 4,
  /** Older than the last cluster-wide clear: ignored. */
  Cleared: 5,
} as const;
/** One of the {@link ApplyOutcome} values. */
export type ApplyOutcome = (typeof ApplyOutcome)[keyof typeof ApplyOutcome];

/** The version of one key: a live entry or a tombstone. */
export interface KeyVersion {
  /** HLC timestamp of the last write or delete, the writer's clock. */
  tsm: number;
  /** Node id of the writer (an unsigned 32-bit integer), the tie-break for equal tsm. */
  writer: number;
  /** crc of the value; 0n for tombstones. */
  crc: bigint;
  /** True if the key was deleted or evicted (a tombstone remembers it, so older writes lose). */
  tombstone: boolean;
}

/** Metadata of one entry, as seen through `cache.metadata[key]`. */
export interface EntryMetadata {
  /** HLC timestamp of the last write (writer's clock); orderable. See hlcToMillis. */
  tsm: number;
  /** xxhash64 of the encoded value, 16 hex digits. */
  crc: string;
  /** Wall-clock ms of the last read through the proxy (0 if never read). */
  lkp: number;
  /** Wall-clock ms at which the entry expires, or null if it never does. */
  exp: number | null;
  /**
   * Node id of the member that wrote this version, 8 hex digits: the same form as `node.id` and the
   * keys of getClusterMetrics and getClusterChecksum, so the strings compare equal.
   */
  writer: string;
  /** Bytes of encoded key and value. */
  size: number;
}

/**
 * One entry's checksum, as listed by getLocalChecksum and, per member, by getClusterChecksum: two
 * members hold the same version of a key when both fields are equal.
 */
export interface EntryChecksum {
  /** xxhash64 of the encoded value, 16 hex digits. */
  crc: string;
  /** HLC timestamp of the last write (writer's clock). */
  tsm: number;
}

/**
 * Per-cache counters, as returned in getLocalMetrics. Counts run from the cache's creation; counts
 * of changes include those that came from other members.
 */
export interface CacheCounters {
  /** Live entries now (expired ones are reclaimed first). */
  count: number;
  /** Bytes of the encoded keys and values of the live entries now. */
  size: number;
  /** Reads through the proxy (`hits + misses`); `in`, `Object.keys` and metadata are not counted. */
  lookups: number;
  /** Reads that found a live entry. */
  hits: number;
  /** Reads that found nothing, or an expired entry. */
  misses: number;
  /** Keys written that were not held (local and remote). */
  inserts: number;
  /** Keys written that were held (local and remote). */
  updates: number;
  /** Keys deleted (local and remote). */
  deletes: number;
  /** Entries removed to stay within `max` or `size` (here, or by another member and replicated). */
  evicts: number;
  /** Entries that outlived their ttl and were removed. */
  expires: number;
  /** Remote changes that won last-write-wins and were applied. */
  remoteApplied: number;
  /** Remote changes ignored because the local version was as new or newer. */
  remoteStale: number;
  /** Remote changes refused: the value could not be decoded or is larger than the cache. */
  remoteRejected: number;
  /**
   * Remote changes (and clears) refused because their timestamp was more than MAX_CLOCK_SKEW_MS
   * ahead of the local clock: the writer's clock is wrong, or the stamp is forged.
   */
  remoteFromFuture: number;
  /** Tombstones held now (deleted keys remembered so that older writes arriving late lose). */
  tombstones: number;
  /** Tombstones dropped early because the tombstone table was full. */
  tombstonesDropped: number;
  /** Changes (local or remote) within 5 s of the cache's previous change (the seed's TESTING.md glossary). */
  spikes: number;
  /** Mean seconds between such rapid updates. */
  spikeInt: number;
  /** Times the cache's `callback` was called (a key read within `callbackWin` changed by another member). */
  callbacks: number;
  /** Calls of `callback` that threw or rejected (logged). */
  callbackErrors: number;
}

/** What the engine needs from a store. */
export interface CacheStoreApi {
  /** The cache's name, the same on every member. */
  readonly name: string;
  /** The settings the engine reads. */
  readonly settings: Readonly<{
    /** 1: holds every key; 0: applies remote writes only to keys it already holds. */
    mode: 0 | 1;
  }>;
  /** Applies a remote change by last-write-wins (tsm, then writer id). Never calls the sink. */
  applyRemote(change: RemoteChange, repair?: boolean): ApplyOutcome;
  /**
   * The same, with the change's fields as arguments (no object, BigInt or view per op on the
   * receive path): a write's crc as its high and low 32 bits, and its encoded value as
   * `memory[valueStart, valueStart + valueLength)`. A remove ignores the last five.
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
    repair?: boolean,
  ): ApplyOutcome;
  /**
   * Removes every entry and tombstone older than (tsm, writer); later remote ops older than it are
   * ignored. Returns the number of entries removed; a mark too far in the future changes nothing.
   */
  clearBefore(tsm: number, writer: number): number;
  /** Version of a key, live or tombstone, or undefined if unknown. */
  versionOf(key: string): KeyVersion | undefined;
  /** Encoded bytes of a live entry's value (re-encoded if not kept), for repair and state transfer. */
  encodedValueOf(key: string): Uint8Array | undefined;
  /** Visits every live entry and every tombstone. */
  forEachVersion(visit: (key: string, version: KeyVersion) => void): void;
  /** Purges expired entries and old tombstones. Called by the housekeeper every daemonSleep. */
  housekeep(): void;
  /** The cache's counters now, for metrics. */
  counters(): CacheCounters;
}
