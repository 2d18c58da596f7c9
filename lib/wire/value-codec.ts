/**
 * How cached values become bytes: cbor-x with options pinned here, so every member encodes and
 * decodes alike, plus the xxhash64 checksum (crc) of those bytes.
 *
 * Records (cbor-x's compact object encoding) are on, but with no shared structure table: every
 * encoded value carries its own record definitions, so a member decodes any value it receives
 * without having seen earlier messages, which UDP cannot promise.
 */
import { Encoder } from 'cbor-x';
import xxhash from 'xxhash-wasm';

const valueEncoder = new Encoder({
  useRecords: true,
  mapsAsObjects: false,
  tagUint8Array: true,
  // Binary inside a decoded value is copied, never a view of the datagram it arrived in.
  copyBuffers: true,
});

const hasher = await xxhash();

/** The largest encoded value mccache replicates (the engine fragments it into datagrams). */
export const MAX_VALUE_BYTES = 16 * 1024 * 1024;

/** Thrown when a value cannot be cached; the cache is left unchanged. */
export class UnencodableValueError extends TypeError {
  override name = 'UnencodableValueError';
}

function describe(value: unknown): string {
  if (typeof value === 'function') return `a function (${value.name || 'anonymous'})`;
  if (value && typeof value === 'object')
    return `an object of class ${value.constructor?.name ?? 'null-prototype'}`;
  return typeof value;
}

/**
 * Encodes a value for storage and replication. Throws {@link UnencodableValueError} for anything
 * cbor-x cannot represent faithfully (functions, symbols, circular structures) and for values
 * larger than {@link MAX_VALUE_BYTES}.
 */
export function encodeValue(value: unknown, key = '?'): Uint8Array {
  let bytes: Uint8Array;
  try {
    bytes = valueEncoder.encode(value);
  } catch (error) {
    const reason =
      error instanceof RangeError ? 'it is circular or nested too deeply' : (error as Error).message;
    throw new UnencodableValueError(
      `cannot cache key "${key}": ${describe(value)} cannot be encoded (${reason}); expected data that CBOR can carry: ` +
        'primitives, plain objects, arrays, Map, Set, Date, BigInt, typed arrays',
    );
  }
  if (bytes.length > MAX_VALUE_BYTES) {
    throw new UnencodableValueError(
      `cannot cache key "${key}": the value encodes to ${bytes.length} bytes; the largest value mccache replicates is ${MAX_VALUE_BYTES} bytes`,
    );
  }
  return bytes;
}

/** Decodes bytes produced by {@link encodeValue}. Throws on malformed input. */
export function decodeValue(bytes: Uint8Array): unknown {
  return valueEncoder.decode(bytes);
}

/** xxhash64 of the encoded value: the `crc` every member stores for the entry. */
export function crcOf(bytes: Uint8Array): bigint {
  return hasher.h64Raw(bytes);
}

/** The 16-digit hex form of a crc, as shown in metadata and checksums. */
export function crcHex(crc: bigint): string {
  return crc.toString(16).padStart(16, '0');
}

/** xxhash32 of a string, used for cluster ids and digest buckets. */
export function hash32(text: string, seed = 0): number {
  return hasher.h32(text, seed);
}

/** xxhash64 of a string, used for anti-entropy digests. */
export function hash64(text: string, seed = 0n): bigint {
  return hasher.h64(text, seed);
}
