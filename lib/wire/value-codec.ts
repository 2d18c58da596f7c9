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
import { utf8Text } from './buffer-text.js';

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
  const memory = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  return decodeValueAt(memory, 0, bytes.length);
}

/**
 * {@link decodeValue} of `memory[start, start + length)`: the receive path decodes values where they
 * lie in the datagram, without a view per value.
 */
export function decodeValueAt(memory: Buffer, start: number, length: number): unknown {
  const simple = decodeSimpleValue(memory, start, length);
  return simple === NOT_SIMPLE ? valueEncoder.decode(memory.subarray(start, start + length)) : simple;
}

/** @internal cbor-x alone, without the fast lane: the reference the specs compare the fast lane with. */
export function decodeValueByCborX(bytes: Uint8Array): unknown {
  return valueEncoder.decode(bytes);
}

const NOT_SIMPLE = Symbol('not a simple value');

/**
 * The receive path's fast lane, the mirror of the write path's encodeSimpleValue: text strings,
 * integers within 32 bits, float64, booleans, null and undefined, decoded without cbor-x (whose
 * per-call setup costs more than decoding a 100-byte string). Gives exactly what cbor-x gives, or
 * NOT_SIMPLE for anything else, including a text string with bytes after it or whose UTF-8 is not
 * plainly valid (Node turns invalid UTF-8 into U+FFFD; such strings go to cbor-x as before).
 */
function decodeSimpleValue(memory: Buffer, start: number, length: number): unknown {
  if (length === 0) return NOT_SIMPLE;
  const initial = memory[start]!;
  const major = initial >> 5;
  const info = initial & 0x1f;
  if (major === 3) {
    let head = 1;
    let textBytes = info;
    if (info === 24 && length >= 2) {
      head = 2;
      textBytes = memory[start + 1]!;
    } else if (info === 25 && length >= 3) {
      head = 3;
      textBytes = (memory[start + 1]! << 8) | memory[start + 2]!;
    } else if (info > 23) return NOT_SIMPLE;
    if (head + textBytes !== length) return NOT_SIMPLE;
    const text = utf8Text(memory, start + head, start + length);
    return text.indexOf('\uFFFD') === -1 ? text : NOT_SIMPLE;
  }
  if (major === 0 || major === 1) {
    let value: number;
    if (info < 24 && length === 1) value = info;
    else if (info === 24 && length === 2) value = memory[start + 1]!;
    else if (info === 25 && length === 3) value = (memory[start + 1]! << 8) | memory[start + 2]!;
    else if (info === 26 && length === 5) value = memory.readUInt32BE(start + 1);
    else return NOT_SIMPLE;
    return major === 0 ? value : -1 - value;
  }
  if (initial === 0xfb && length === 9) return memory.readDoubleBE(start + 1);
  if (length === 1) {
    if (initial === 0xf4) return false;
    if (initial === 0xf5) return true;
    if (initial === 0xf6) return null;
    if (initial === 0xf7) return undefined;
  }
  return NOT_SIMPLE;
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
