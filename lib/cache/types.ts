/**
 * The contract between a cache store and whatever replicates it (the cluster engine).
 *
 * The store never imports the engine: it reports local changes to a {@link ReplicationSink} and
 * accepts remote changes through {@link CacheStoreApi.applyRemote}, which never reports back to the
 * sink, so remote changes are not echoed.
 */

/** Kinds of change, numbered as the wire's op codes. */
export const ChangeKind = {
  Insert: 1,
  Update: 2,
  Delete: 3,
  Evict: 4,
} as const;
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
  kind: ChangeKind;
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
export type ApplyOutcome = (typeof ApplyOutcome)[keyof typeof ApplyOutcome];

/** The version of one key: a live entry or a tombstone. */
export interface KeyVersion {
  tsm: number;
  writer: number;
  /** crc of the value; 0n for tombstones. */
  crc: bigint;
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
  /** Node id of the writer (hex). */
  writer: string;
  /** Bytes of encoded key and value. */
  size: number;
}

/** Per-cache counters, as returned in getLocalMetrics. */
export interface CacheCounters {
  count: number;
  size: number;
  lookups: number;
  hits: number;
  misses: number;
  inserts: number;
  updates: number;
  deletes: number;
  evicts: number;
  expires: number;
  /** Remote changes applied / ignored as stale. */
  remoteApplied: number;
  remoteStale: number;
  remoteRejected: number;
  /**
   * Remote changes (and clears) refused because their timestamp was more than MAX_CLOCK_SKEW_MS
   * ahead of the local clock: the writer's clock is wrong, or the stamp is forged.
   */
  remoteFromFuture: number;
  tombstones: number;
  /** Tombstones dropped early because the tombstone table was full. */
  tombstonesDropped: number;
  /** Changes (local or remote) within 5 s of the cache's previous change (the seed's TESTING.md glossary). */
  spikes: number;
  /** Mean seconds between such rapid updates. */
  spikeInt: number;
  callbacks: number;
  callbackErrors: number;
}

/** What the engine needs from a store. */
export interface CacheStoreApi {
  readonly name: string;
  /** Mode 1: holds every key; mode 0: applies remote writes only to keys it already holds. */
  readonly settings: Readonly<{ mode: 0 | 1 }>;
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
  counters(): CacheCounters;
}
