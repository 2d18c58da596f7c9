/**
 * Fast paths for the write path: encoding small values, and the crc of short encodings.
 *
 * Measured here (Node 20, 2 cores), cbor-x's encode costs ~250 ns even for a small integer, most
 * of it creating the Buffer it returns. {@link encodeSimpleValue} writes numbers, booleans, null,
 * undefined and ASCII strings of up to 255 characters into a scratch buffer, byte for byte as the
 * value codec (cbor-x with its pinned options) encodes them -- spec/store.spec.ts checks this
 * against encodeValue on random values -- and returns a reused view of the exact length, so a
 * write allocates nothing until a replication sink needs its own copy. Any other value returns
 * undefined and goes to cbor-x. {@link xxhash64Short} computes crcOf of short inputs without
 * wasm or BigInt (checked against crcOf by the spec as well).
 */
import { endianness } from 'node:os';

/** Longest string encoded by the fast path (one-byte length header); longer ones go through cbor-x. */
const MAX_SIMPLE_STRING_LENGTH = 255;

// Room for 3 UTF-8 bytes per character, so a string's UTF-8 is never cut short (see the string case).
const scratch = Buffer.alloc(16 + 3 * MAX_SIMPLE_STRING_LENGTH);
const scratchView = new DataView(scratch.buffer, scratch.byteOffset, scratch.length);
/** views[n] = scratch[0..n), made once, so that returning a result allocates nothing. */
const views = Array.from({ length: 16 + MAX_SIMPLE_STRING_LENGTH + 1 }, (_, n) => scratch.subarray(0, n));

/** The scratch after a two-byte string head: where encodeInto writes the UTF-8 of a long string. */
const afterLongHeader = scratch.subarray(2);
/** encodeInto skips Buffer.write's argument handling: measured ~40% cheaper for 100 characters. */
const textEncoder = new TextEncoder();

/** From this length on, one native UTF-8 write beats a JS loop over the characters. */
const NATIVE_STRING_WRITE_FROM = 24;

/**
 * Encodes `value` exactly as the value codec (cbor-x) would, if it is a number, boolean, null,
 * undefined or an ASCII string of at most 255 characters; undefined for any other value. The
 * result is a shared view, overwritten by the next call: copy it (`slice()`) to keep it.
 */
export function encodeSimpleValue(value: unknown): Uint8Array | undefined {
  const length = encodeIntoScratch(value);
  return length < 0 ? undefined : views[length];
}

/** Writes `value` into the scratch buffer; returns its length, or -1 if not a simple value. */
function encodeIntoScratch(value: unknown): number {
  switch (typeof value) {
    case 'number':
      // The same branches, in the same order, as cbor-x's encoder (no float32, no alwaysUseFloat).
      if (value >>> 0 === value) {
        if (value < 0x18) {
          scratch[0] = value;
          return 1;
        }
        if (value < 0x100) {
          scratch[0] = 0x18;
          scratch[1] = value;
          return 2;
        }
        if (value < 0x10000) {
          scratch[0] = 0x19;
          scratch[1] = value >> 8;
          scratch[2] = value & 0xff;
          return 3;
        }
        scratch[0] = 0x1a;
        scratchView.setUint32(1, value);
        return 5;
      }
      if (value >> 0 === value) {
        if (value >= -0x18) {
          scratch[0] = 0x1f - value;
          return 1;
        }
        if (value >= -0x100) {
          scratch[0] = 0x38;
          scratch[1] = ~value;
          return 2;
        }
        if (value >= -0x10000) {
          scratch[0] = 0x39;
          scratchView.setUint16(1, ~value);
          return 3;
        }
        scratch[0] = 0x3a;
        scratchView.setUint32(1, ~value);
        return 5;
      }
      if (value < 0 && value >= -0x100000000 && Math.floor(value) === value) {
        scratch[0] = 0x3a;
        scratchView.setUint32(1, -1 - value);
        return 5;
      }
      scratch[0] = 0xfb;
      scratchView.setFloat64(1, value);
      return 9;
    case 'string': {
      const length = value.length;
      if (length > MAX_SIMPLE_STRING_LENGTH) return -1;
      const header = length < 0x18 ? 1 : 2;
      if (length >= NATIVE_STRING_WRITE_FROM) {
        // ASCII exactly when the UTF-8 is as long as the string: any other character takes 2-4
        // bytes (a lone surrogate 3), and the scratch has room for all of them, so none is cut off.
        // (From 24 characters on the head is always two bytes.)
        if (textEncoder.encodeInto(value, afterLongHeader).written !== length) return -1;
      } else {
        for (let i = 0; i < length; i++) {
          const code = value.charCodeAt(i);
          if (code >= 0x80) return -1;
          scratch[header + i] = code;
        }
      }
      if (header === 1) scratch[0] = 0x60 | length;
      else {
        scratch[0] = 0x78;
        scratch[1] = length;
      }
      return header + length;
    }
    case 'boolean':
      scratch[0] = value ? 0xf5 : 0xf4;
      return 1;
    case 'undefined':
      scratch[0] = 0xf7;
      return 1;
    case 'object':
      if (value === null) {
        scratch[0] = 0xf6;
        return 1;
      }
      return -1;
    default:
      return -1;
  }
}

// ------------------------------------------------------------------ XXH64 of short inputs
// crcOf goes through xxhash-wasm: a copy into wasm memory, the call and two BigInt operations,
// ~140 ns even for 3 bytes. Short inputs are hashed here in JS instead, on 32-bit halves.

const P1_HI = 0x9e3779b1;
const P1_LO = 0x85ebca87;
const P2_HI = 0xc2b2ae3d;
const P2_LO = 0x27d4eb4f;
const P3_HI = 0x165667b1;
const P3_LO = 0x9e3779f9;
const P4_HI = 0x85ebca77;
const P4_LO = 0xc2b2ae63;
const P5_HI = 0x27d4eb2f;
const P5_LO = 0x165667c5;

/** High 32 bits of the unsigned 64-bit product of two unsigned 32-bit numbers. */
function mulHigh32(a: number, b: number): number {
  const a0 = a & 0xffff;
  const a1 = a >>> 16;
  const b0 = b & 0xffff;
  const b1 = b >>> 16;
  const m1 = a1 * b0 + ((a0 * b0) >>> 16); // < 2^32
  const m2 = a0 * b1 + (m1 & 0xffff); // < 2^32
  return (a1 * b1 + (m1 >>> 16) + (m2 >>> 16)) >>> 0;
}

/** High half of (aHi, aLo) * (bHi, bLo) mod 2^64; the low half is Math.imul(aLo, bLo) >>> 0. */
function mulHigh(aHi: number, aLo: number, bHi: number, bLo: number): number {
  return (mulHigh32(aLo, bLo) + Math.imul(aHi, bLo) + Math.imul(aLo, bHi)) >>> 0;
}

function readUint32(bytes: Uint8Array, at: number): number {
  return (bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24)) >>> 0;
}

/**
 * Longest input worth {@link xxhash64Short}: measured here, it takes ~40 ns for 3 bytes and ~90 ns
 * for 9 against ~140 ns for crcOf's wasm call, and each further 8 bytes cost ~50 ns. (It is correct
 * up to 31 bytes, where XXH64 switches to 32-byte stripes.)
 */
export const SHORT_HASH_LIMIT = 12;

/** Index of the low (and high) 32-bit word of a 64-bit value viewed as a Uint32Array, on this machine. */
export const LOW_HALF = endianness() === 'LE' ? 0 : 1;
export const HIGH_HALF = 1 - LOW_HALF;

/**
 * XXH64 (seed 0) of an input shorter than 32 bytes, equal to the codec's crcOf,
 * on 32-bit halves with no allocation. The result goes to `halves[2 * index]` and
 * `halves[2 * index + 1]` in native order, so a BigUint64Array over the same buffer reads it at
 * `index`.
 */
export function xxhash64Short(bytes: Uint8Array, halves: Uint32Array, index: number): void {
  const length = bytes.length;
  // h = P5 + length
  let lo = (P5_LO + length) >>> 0;
  let hi = (P5_HI + (lo < P5_LO ? 1 : 0)) >>> 0;
  let p = 0;
  let tHi: number;
  let tLo: number;
  let rHi: number;
  for (; p + 8 <= length; p += 8) {
    // k = rotl(lane * P2, 31) * P1
    const laneLo = readUint32(bytes, p);
    const laneHi = readUint32(bytes, p + 4);
    tHi = mulHigh(laneHi, laneLo, P2_HI, P2_LO);
    tLo = Math.imul(laneLo, P2_LO) >>> 0;
    rHi = ((tHi << 31) | (tLo >>> 1)) >>> 0;
    tLo = ((tLo << 31) | (tHi >>> 1)) >>> 0;
    tHi = mulHigh(rHi, tLo, P1_HI, P1_LO);
    tLo = Math.imul(tLo, P1_LO) >>> 0;
    // h = rotl(h ^ k, 27) * P1 + P4
    hi = (hi ^ tHi) >>> 0;
    lo = (lo ^ tLo) >>> 0;
    rHi = ((hi << 27) | (lo >>> 5)) >>> 0;
    lo = ((lo << 27) | (hi >>> 5)) >>> 0;
    hi = mulHigh(rHi, lo, P1_HI, P1_LO);
    lo = Math.imul(lo, P1_LO) >>> 0;
    tLo = (lo + P4_LO) >>> 0;
    hi = (hi + P4_HI + (tLo < lo ? 1 : 0)) >>> 0;
    lo = tLo;
  }
  if (p + 4 <= length) {
    // h = rotl(h ^ (word * P1), 23) * P2 + P3
    const word = readUint32(bytes, p);
    hi = (hi ^ mulHigh(0, word, P1_HI, P1_LO)) >>> 0;
    lo = (lo ^ Math.imul(word, P1_LO)) >>> 0;
    rHi = ((hi << 23) | (lo >>> 9)) >>> 0;
    lo = ((lo << 23) | (hi >>> 9)) >>> 0;
    hi = mulHigh(rHi, lo, P2_HI, P2_LO);
    lo = Math.imul(lo, P2_LO) >>> 0;
    tLo = (lo + P3_LO) >>> 0;
    hi = (hi + P3_HI + (tLo < lo ? 1 : 0)) >>> 0;
    lo = tLo;
    p += 4;
  }
  for (; p < length; p++) {
    // h = rotl(h ^ (byte * P5), 11) * P1
    const byte = bytes[p]!;
    hi = (hi ^ mulHigh(0, byte, P5_HI, P5_LO)) >>> 0;
    lo = (lo ^ Math.imul(byte, P5_LO)) >>> 0;
    rHi = ((hi << 11) | (lo >>> 21)) >>> 0;
    lo = ((lo << 11) | (hi >>> 21)) >>> 0;
    hi = mulHigh(rHi, lo, P1_HI, P1_LO);
    lo = Math.imul(lo, P1_LO) >>> 0;
  }
  // Avalanche: h ^= h >> 33; h *= P2; h ^= h >> 29; h *= P3; h ^= h >> 32.
  lo = (lo ^ (hi >>> 1)) >>> 0;
  rHi = mulHigh(hi, lo, P2_HI, P2_LO);
  lo = Math.imul(lo, P2_LO) >>> 0;
  lo = (lo ^ ((lo >>> 29) | (rHi << 3))) >>> 0;
  hi = (rHi ^ (rHi >>> 29)) >>> 0;
  rHi = mulHigh(hi, lo, P3_HI, P3_LO);
  lo = Math.imul(lo, P3_LO) >>> 0;
  halves[2 * index + HIGH_HALF] = rHi;
  halves[2 * index + LOW_HALF] = (lo ^ rHi) >>> 0;
}
