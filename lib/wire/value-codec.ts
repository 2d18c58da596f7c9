/**
 * How cached values become bytes: cbor-x with options pinned here, so every member encodes and
 * decodes alike, plus the xxhash64 checksum (crc) of those bytes.
 *
 * Records (cbor-x's compact object encoding) are on, but with no shared structure table: every
 * encoded value carries its own record definitions, so a member decodes any value it receives
 * without having seen earlier messages, which UDP cannot promise.
 *
 * cbor-x's decoder knows many more tags than its encoder writes with these options, and some of
 * them build values no member could have cached: shared and circular references (tags 28/29: 203
 * bytes that decode to a graph re-encoding to 25 MB, or a cycle that encodeValue then refuses),
 * whatever function `{ Error, RegExp }[name]` finds (tag 27, Object.prototype's included), packed
 * values, bundled strings, records defined by an earlier message. So bytes from the network are
 * walked by {@link checkValueBytes} before cbor-x sees them, and only what encodeValue writes
 * passes; encodeValue walks its own output too, so that what one member can cache every member
 * accepts.
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

const referenceDecoder = new Encoder({
  useRecords: true,
  mapsAsObjects: false,
  tagUint8Array: true,
  copyBuffers: true,
});

const hasher = await xxhash();

/** The largest encoded value mccache replicates (the engine fragments it into datagrams). */
export const MAX_VALUE_BYTES = 16 * 1024 * 1024;

/** Thrown when a value cannot be cached; the cache is left unchanged. */
export class UnencodableValueError extends TypeError {
  /** Error class name, shown in stack traces and `String(error)`. */
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
 * cbor-x cannot represent faithfully (functions, symbols, circular structures), for values larger
 * than {@link MAX_VALUE_BYTES}, and for what other members would refuse (see
 * {@link checkValueBytes}: nesting deeper than {@link MAX_VALUE_DEPTH}, a BigInt over
 * {@link MAX_BIGINT_BYTES} bytes, an Error named after an Object.prototype member).
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
  // What other members would refuse is refused here, where the caller can be told.
  try {
    checkValueBytes(bytes as Buffer, 0, bytes.length);
  } catch (error) {
    throw new UnencodableValueError(
      `cannot cache key "${key}": ${describe(value)} encodes to bytes other members would refuse (${(error as Error).message})`,
    );
  }
  return bytes;
}

/**
 * Decodes bytes produced by {@link encodeValue}. Throws {@link RefusedValueError} for anything
 * encodeValue does not write (see {@link checkValueBytes}), and cbor-x's errors for the rest.
 */
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
  if (simple !== NOT_SIMPLE) return simple;
  checkValueBytes(memory, start, length);
  return valueEncoder.decode(memory.subarray(start, start + length));
}

/**
 * @internal cbor-x alone, without the fast lane and without {@link checkValueBytes}: the reference
 * the specs compare with. A decoder of its own, so that what it decodes (record definitions stay
 * in a decoder between decodes) never reaches the one the network's values go through.
 */
export function decodeValueByCborX(bytes: Uint8Array): unknown {
  return referenceDecoder.decode(bytes);
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

// ------------------------------------------------------------------ what a value may contain

/**
 * Deepest nesting a value may have: arrays, maps, objects and Sets count one level each. cbor-x's
 * encoder runs out of stack somewhere past 1000 levels; this bound keeps the walk's stack fixed.
 */
export const MAX_VALUE_DEPTH = 512;

/**
 * Longest BigInt magnitude beyond 64 bits, in bytes (8192 bits). cbor-x builds such a BigInt a byte
 * at a time, in time quadratic in its length (measured here: 0.2 ms for 1 KiB, 14 ms for 4 KiB,
 * over a second for 64 KiB), so the network must not choose that length.
 */
export const MAX_BIGINT_BYTES = 1024;

/** Thrown for value bytes that {@link encodeValue} could not have written; nothing was decoded. */
export class RefusedValueError extends Error {
  override name = 'RefusedValueError';
}

// What each tag below 259 is to the walk; 0 (and any tag not listed) is refused.
const DATE_TAG = 1;
const BIGINT_TAG = 2;
const ERROR_OR_REGEXP_TAG = 3;
const SET_TAG = 4;
const TYPED_ARRAY_TAG = 5;
const tagKinds = new Uint8Array(259);
const typedArrayElementBytes = new Uint8Array(259);
tagKinds[1] = DATE_TAG; // epoch seconds
tagKinds[2] = BIGINT_TAG; // beyond 64 bits; within 64 bits a BigInt is a plain 8-byte integer head
tagKinds[3] = BIGINT_TAG;
tagKinds[27] = ERROR_OR_REGEXP_TAG;
tagKinds[258] = SET_TAG;
// The typed arrays (RFC 8746): cbor-x writes the little-endian tag on a little-endian machine and the
// big-endian one (4 less) on a big-endian one, so a cluster may see both.
for (const [tag, elementBytes] of [
  [64, 1], // Uint8Array (tagUint8Array)
  [68, 1], // Uint8ClampedArray
  [69, 2], // Uint16Array
  [70, 4], // Uint32Array
  [71, 8], // BigUint64Array
  [72, 1], // Int8Array
  [77, 2], // Int16Array
  [78, 4], // Int32Array
  [79, 8], // BigInt64Array
  [85, 4], // Float32Array
  [86, 8], // Float64Array
] as const) {
  for (const variant of elementBytes === 1 ? [tag] : [tag, tag - 4]) {
    tagKinds[variant] = TYPED_ARRAY_TAG;
    typedArrayElementBytes[variant] = elementBytes;
  }
}

// Records: an object's first appearance is tag 0xdfff on [0xe000 + id, [key, ...], value, ...], later
// ones with the same keys tag 0xe000 + id on [value, ...]. cbor-x's encoder uses ids 0-255 (its
// MAX_STRUCTURES), reusing them past 256 shapes. Its decoder keeps definitions between decodes, so
// a reference must be to a definition earlier in the same value.
const RECORD_DEFINITION_TAG = 0xdfff;
const FIRST_RECORD_TAG = 0xe000;
const RECORD_IDS = 256;
const recordKeyCounts = new Int32Array(RECORD_IDS);
/** The walk that last defined each record id: a stamp, so no table is cleared between walks. */
const recordDefinedIn = new Float64Array(RECORD_IDS);
let walkNumber = 0;

const INDEFINITE = -1;
/**
 * Items left in each enclosing array or map (map entries count twice; INDEFINITE until a break
 * code), saved while a container nested in it is walked.
 */
const itemsLeft = new Int32Array(MAX_VALUE_DEPTH);

// The walk keeps its position in a local; the checks of tagged content below, off the hot path,
// share it through `cursor`.
let cursor = 0;
let walkStart = 0;
let walkEnd = 0;
/** What checkTagged returns when the tag's content was checked whole, or is the next item. */
const CONTENT_CHECKED = -2;
const CONTENT_NEXT = -3;

function refuse(what: string, at: number): never {
  throw new RefusedValueError(`refused value bytes: ${what} (at byte ${at - walkStart})`);
}

function truncated(at: number): never {
  refuse('the value ends early', at);
}

/** The argument of a head with additional info 24-26, at the cursor. */
function readLongArgument(memory: Buffer, info: number): number {
  const size = 1 << (info - 24);
  if (size > walkEnd - cursor) truncated(cursor);
  let argument = 0;
  for (let i = 0; i < size; i++) argument = argument * 256 + memory[cursor++]!;
  return argument;
}

/** The length of the head at the cursor if it is of major type `major` within 32 bits, else -1. */
function readLengthHead(memory: Buffer, major: number): number {
  if (cursor >= walkEnd) truncated(cursor);
  const initial = memory[cursor++]!;
  const info = initial & 0x1f;
  if (initial >> 5 !== major || info > 26) return -1;
  return info < 24 ? info : readLongArgument(memory, info);
}

/** Skips a byte or text string whose length was just read. */
function skipString(length: number): void {
  if (length > walkEnd - cursor) truncated(cursor);
  cursor += length;
}

/**
 * Checks the content of tag `tag` at the cursor (records other than definitions are the caller's).
 * Returns the number of items of a container the content opens, CONTENT_CHECKED or CONTENT_NEXT.
 */
function checkTagged(memory: Buffer, tag: number): number {
  const kind = tag < tagKinds.length ? tagKinds[tag]! : 0;
  switch (kind) {
    case DATE_TAG: {
      // encodeValue writes epoch seconds as a 32-bit integer or a float64.
      if (cursor >= walkEnd) truncated(cursor);
      const initial = memory[cursor]!;
      const info = initial & 0x1f;
      let size: number;
      if (initial >> 5 <= 1 && info <= 26) size = info < 24 ? 1 : 1 + (1 << (info - 24));
      else if (initial >= 0xf9 && initial <= 0xfb) size = 1 + (2 << (initial - 0xf9));
      else refuse('a Date (tag 1) that is not a number', cursor);
      skipString(size);
      return CONTENT_CHECKED;
    }
    case BIGINT_TAG: {
      const bytes = readLengthHead(memory, 2);
      if (bytes < 0) refuse('a BigInt (tag 2 or 3) that is not a byte string', cursor);
      if (bytes > MAX_BIGINT_BYTES) refuse(`a BigInt of ${bytes} bytes, over ${MAX_BIGINT_BYTES}`, cursor);
      skipString(bytes);
      return CONTENT_CHECKED;
    }
    case TYPED_ARRAY_TAG: {
      const bytes = readLengthHead(memory, 2);
      if (bytes < 0 || bytes % typedArrayElementBytes[tag]! !== 0)
        refuse(`a typed array (tag ${tag}) that is not a byte string of whole elements`, cursor);
      skipString(bytes);
      return CONTENT_CHECKED;
    }
    case ERROR_OR_REGEXP_TAG:
      checkErrorOrRegExp(memory);
      return CONTENT_CHECKED;
    case SET_TAG:
      if (cursor >= walkEnd) truncated(cursor);
      if (memory[cursor]! >> 5 !== 4) refuse('a Set (tag 258) that is not an array', cursor);
      return CONTENT_NEXT;
    default:
      if (tag === RECORD_DEFINITION_TAG) return checkRecordDefinition(memory);
      refuse(`tag ${tag}, which encodeValue does not write`, cursor);
  }
}

/**
 * Tag 27: encodeValue writes [name, message] for an Error and ['RegExp', source, flags] for a
 * RegExp. cbor-x decodes it by calling `{ Error, RegExp }[name] || Error` on the rest, so a name
 * found on Object.prototype ('constructor', 'toString', ...) would call that function instead.
 */
function checkErrorOrRegExp(memory: Buffer): void {
  const count = readLengthHead(memory, 4);
  if (count !== 2 && count !== 3)
    refuse('an Error or RegExp (tag 27) that is not an array of 2 or 3 strings', cursor);
  let nameStart = 0;
  let nameEnd = 0;
  for (let i = 0; i < count; i++) {
    const length = readLengthHead(memory, 3);
    if (length < 0) refuse('an Error or RegExp (tag 27) with a part that is not a string', cursor);
    if (i === 0) {
      nameStart = cursor;
      nameEnd = cursor + length;
    }
    skipString(length);
  }
  const name = utf8Text(memory, nameStart, nameEnd);
  if (name === 'RegExp') return;
  if (count !== 2) refuse(`an Error (tag 27) "${name}" with 3 parts`, cursor);
  if (name !== 'Error' && name in Object.prototype) refuse(`an Error (tag 27) named "${name}"`, cursor);
}

/** Tag 0xdfff: checks the id and keys of a record definition; returns the number of its values. */
function checkRecordDefinition(memory: Buffer): number {
  const length = readLengthHead(memory, 4);
  if (length < 2)
    refuse('a record definition (tag 0xdfff) that is not an array of id, keys and values', cursor);
  // The id, as encodeValue writes it: a 16-bit integer 0xe000 + id.
  if (walkEnd - cursor < 3) truncated(cursor);
  if (memory[cursor] !== 0x19 || memory[cursor + 1] !== FIRST_RECORD_TAG >> 8)
    refuse('a record definition (tag 0xdfff) whose id is not 0xe000-0xe0ff', cursor);
  const id = memory[cursor + 2]!;
  cursor += 3;
  const keyCount = readLengthHead(memory, 4);
  if (keyCount !== length - 2) refuse('a record definition (tag 0xdfff) without one key per value', cursor);
  for (let i = 0; i < keyCount; i++) {
    const keyLength = readLengthHead(memory, 3);
    if (keyLength < 0) refuse('a record definition (tag 0xdfff) with a key that is not a string', cursor);
    skipString(keyLength);
  }
  recordKeyCounts[id] = keyCount;
  recordDefinedIn[id] = walkNumber;
  return keyCount;
}

/**
 * Checks that `memory[start, start + length)` is one value as {@link encodeValue} writes it, without
 * decoding it or allocating: well-formed CBOR that ends exactly there, nested at most
 * {@link MAX_VALUE_DEPTH} deep, with lengths within the bytes that remain, definite lengths (but for
 * arrays, which cbor-x writes for iterables), the simple values false, true, null and undefined,
 * and only these tags: 1 (Date), 2 and 3 (BigInt beyond 64 bits, at most {@link MAX_BIGINT_BYTES}),
 * 27 (Error and RegExp, in the shapes encodeValue writes), 64-86 (typed arrays), 258 (Set), 0xdfff
 * and 0xe000-0xe0ff (records, each defined before use). Everything else, shared references (28/29)
 * included, throws {@link RefusedValueError}.
 */
export function checkValueBytes(memory: Buffer, start: number, length: number): void {
  const end = start + length;
  walkStart = start;
  walkEnd = end;
  walkNumber++;
  let at = start;
  let depth = 0;
  let left = 1; // items left in the innermost container; at depth 0, the value itself
  for (;;) {
    while (left === 0) {
      if (depth === 0) {
        if (at !== end) refuse(`${end - at} bytes after the value`, at);
        return;
      }
      left = itemsLeft[--depth]!;
    }
    if (at >= end) truncated(at);
    const initial = memory[at++]!;
    if (left !== INDEFINITE) left--;
    else if (initial === 0xff) {
      left = itemsLeft[--depth]!;
      continue;
    }
    const major = initial >> 5;
    if (major === 7) {
      if (initial >= 0xf4 && initial <= 0xf7) continue; // false, true, null, undefined
      if (initial >= 0xf9 && initial <= 0xfb) {
        // float16, float32, float64
        const size = 2 << (initial - 0xf9);
        if (size > end - at) truncated(at);
        at += size;
        continue;
      }
      refuse(
        initial === 0xff
          ? 'a break code outside an indefinite-length array'
          : `the simple value head 0x${initial.toString(16)}`,
        at - 1,
      );
    }
    let argument = initial & 0x1f;
    if (argument >= 24) {
      if (argument === 24) {
        if (at >= end) truncated(at);
        argument = memory[at++]!;
      } else if (argument === 25) {
        if (2 > end - at) truncated(at);
        argument = (memory[at]! << 8) | memory[at + 1]!;
        at += 2;
      } else if (argument === 26) {
        if (4 > end - at) truncated(at);
        argument =
          memory[at]! * 0x1000000 + ((memory[at + 1]! << 16) | (memory[at + 2]! << 8) | memory[at + 3]!);
        at += 4;
      } else if (argument === 27 && major <= 1) {
        // A 64-bit integer: how encodeValue writes a BigInt that fits.
        if (8 > end - at) truncated(at);
        at += 8;
        continue;
      } else if (argument === 31 && major === 4) {
        // An indefinite-length array: how encodeValue writes iterables other than arrays, Maps and Sets.
        if (depth === MAX_VALUE_DEPTH) refuse(`nesting deeper than ${MAX_VALUE_DEPTH}`, at - 1);
        itemsLeft[depth++] = left;
        left = INDEFINITE;
        continue;
      } else refuse(`the head 0x${initial.toString(16)} (reserved, indefinite or over 32 bits)`, at - 1);
    }
    let items: number;
    if (major <= 1) continue;
    if (major <= 3) {
      if (argument > end - at) truncated(at);
      at += argument;
      continue;
    }
    if (major === 4) {
      if (argument > end - at) truncated(at);
      items = argument;
    } else if (major === 5) {
      if (argument > (end - at) / 2) truncated(at);
      items = 2 * argument;
    } else if (argument >= FIRST_RECORD_TAG && argument < FIRST_RECORD_TAG + RECORD_IDS) {
      // A record defined earlier in this value: an array of exactly its values.
      const id = argument - FIRST_RECORD_TAG;
      if (recordDefinedIn[id] !== walkNumber) refuse(`record ${id} used before its definition`, at);
      if (at >= end) truncated(at);
      const head = memory[at]!;
      if (head >= 0x80 && head <= 0x97) {
        items = head - 0x80;
        at++;
      } else {
        cursor = at;
        items = readLengthHead(memory, 4);
        at = cursor;
      }
      if (items !== recordKeyCounts[id])
        refuse(`record ${id} with other than its ${recordKeyCounts[id]} values`, at);
    } else {
      cursor = at;
      items = checkTagged(memory, argument);
      at = cursor;
      if (items === CONTENT_CHECKED) continue;
      if (items === CONTENT_NEXT) {
        // The content takes the tag's place among its container's items.
        if (left !== INDEFINITE) left++;
        continue;
      }
    }
    if (depth === MAX_VALUE_DEPTH) refuse(`nesting deeper than ${MAX_VALUE_DEPTH}`, at);
    itemsLeft[depth++] = left;
    left = items;
  }
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
