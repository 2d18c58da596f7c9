/**
 * A fast path for encoding small values on the write path.
 *
 * Measured here (Node 20, 2 cores), cbor-x's encode costs ~250 ns even for a small integer, most
 * of it creating the Buffer it returns. {@link encodeSimpleValue} writes numbers, booleans, null,
 * undefined and ASCII strings of up to 255 characters into a scratch buffer, byte for byte as the
 * value codec (cbor-x with its pinned options) encodes them -- spec/store.spec.ts checks this
 * against encodeValue on random values -- and returns a reused view of the exact length, so a
 * write allocates nothing until a replication sink needs its own copy. Any other value returns
 * undefined and goes to cbor-x.
 */

/** Longest string encoded by the fast path (one-byte length header); longer ones go through cbor-x. */
const MAX_SIMPLE_STRING_LENGTH = 255;

const scratch = new Uint8Array(16 + MAX_SIMPLE_STRING_LENGTH);
const scratchView = new DataView(scratch.buffer);
/** views[n] = scratch[0..n), made once, so that returning a result allocates nothing. */
const views = Array.from({ length: scratch.length + 1 }, (_, n) => scratch.subarray(0, n));

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
      for (let i = 0; i < length; i++) {
        const code = value.charCodeAt(i);
        if (code >= 0x80) return -1;
        scratch[header + i] = code;
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
