/**
 * Anti-entropy digests: a cache's live entries hashed into a fixed number of buckets, so two
 * members learn which small slices of their caches differ by exchanging a few hundred bytes, and
 * then compare only those slices key by key.
 *
 * Tombstones are left out of the bucket hashes (a member that never saw a key would otherwise
 * disagree forever with one that holds its tombstone) but are listed in the per-bucket details, so
 * a missed delete is still repaired.
 */
import type { CacheStoreApi, KeyVersion } from '../cache/types.js';
import { hash32 } from '../wire/value-codec.js';

/** Buckets per cache digest: small enough for one datagram (a u32 each), fine enough to localise. */
export const DIGEST_BUCKETS = 128;

/** The bucket a key falls in; both ends must agree, so it depends on the key only. */
export function bucketOf(key: string): number {
  return hash32(key, 0x5eed) % DIGEST_BUCKETS;
}

function versionHash(key: string, version: KeyVersion): number {
  // The crc's low 32 bits and the stamps are folded into one hash per entry; XOR makes the
  // bucket hash independent of iteration order.
  return hash32(
    `${key}\u0000${version.tsm}\u0000${version.writer}\u0000${version.crc & 0xffffffffn}`,
    0x5eed,
  );
}

/** The bucket hashes of a store's live entries. */
export function digestOf(store: CacheStoreApi): number[] {
  const buckets = new Array<number>(DIGEST_BUCKETS).fill(0);
  store.forEachVersion((key, version) => {
    if (version.tombstone) return;
    const b = bucketOf(key);
    buckets[b] = (buckets[b]! ^ versionHash(key, version)) >>> 0;
  });
  return buckets;
}

/** A key's version as listed in a SYD detail. */
export type ListedVersion = [key: string, tsm: number, writer: number, crc: bigint, tombstone: boolean];

/** Every version (live and tombstone) in the given buckets, grouped by bucket. */
export function versionsInBuckets(
  store: CacheStoreApi,
  buckets: ReadonlySet<number>,
): Map<number, ListedVersion[]> {
  const byBucket = new Map<number, ListedVersion[]>();
  for (const b of buckets) byBucket.set(b, []);
  store.forEachVersion((key, version) => {
    const list = byBucket.get(bucketOf(key));
    if (list) list.push([key, version.tsm, version.writer, version.crc, version.tombstone]);
  });
  return byBucket;
}

/** True if version a is newer than b by last-write-wins (tsm, then writer id). */
export function isNewer(aTsm: number, aWriter: number, bTsm: number, bWriter: number): boolean {
  return aTsm > bTsm || (aTsm === bTsm && aWriter > bWriter);
}
