/**
 * Op entries: the units the cluster engine sends. A message is a CBOR sequence (RFC 8742) of
 * entries, each a CBOR array `[code, ...fields]`. Many small ops share one message (a batch); one
 * large op spans several fragments (see frame.ts).
 *
 * Decoding treats every byte as hostile: a structural pre-scan refuses anything but plain CBOR
 * (no tags, no indefinite lengths, no simple values beyond false/true/null/undefined, no length
 * larger than the bytes that remain, bounded nesting) before cbor-x sees it, so no cbor-x
 * extension (records, shared references, packed values, RegExp, Error) ever runs on network
 * input, and then every field of every entry is checked for type and range.
 */
import { Decoder, Encoder } from 'cbor-x';

/** Op codes. Data ops (1-5) travel on the sequenced DATA stream; the rest are control ops. */
export const Op = {
  INS: 1,
  UPD: 2,
  DEL: 3,
  EVT: 4,
  RST: 5,
  ACK: 10,
  NAK: 11,
  REQ: 12,
  NEW: 13,
  BYE: 14,
  SYC: 15,
  SYD: 16,
  STE: 17,
  INQ: 18,
  CHK: 19,
  MET: 20,
  MTR: 21,
} as const;

/** Any op code. */
export type OpCode = (typeof Op)[keyof typeof Op];

/** Longest cache name (in UTF-16 code units) accepted from the network. */
export const MAX_CACHE_NAME_LENGTH = 256;
/** Longest key (in UTF-16 code units) accepted from the network. */
export const MAX_KEY_LENGTH = 64 * 1024;
/** Most items in any list carried by an op (ACK peers, NAK ranges, REQ keys, SYD versions). */
export const MAX_LIST_ITEMS = 65_536;
/** Most digest buckets in a SYC. */
export const MAX_BUCKETS = 4096;
/** Deepest nesting of a CHK/MTR result value. */
export const MAX_RESULT_DEPTH = 32;
/** Deepest CBOR nesting the pre-scan accepts (result depth plus the entry envelope). */
const MAX_CBOR_DEPTH = MAX_RESULT_DEPTH + 4;

/** A value write: INS (the key was absent at the writer) or UPD. `value` is the encoded value. */
export interface WriteEntry {
  op: typeof Op.INS | typeof Op.UPD;
  cache: string;
  key: string;
  /** Hybrid logical clock timestamp of the write. */
  tsm: number;
  /** Node id of the writer (tie-break for equal tsm). */
  writer: number;
  /** xxhash64 of `value`, computed once by the writer. */
  crc: bigint;
  /** The value as encoded by value-codec.ts; never re-encoded on the way. */
  value: Uint8Array;
}

/** A removal: DEL (user delete) or EVT (eviction), both leave a tombstone at `tsm`. */
export interface RemoveEntry {
  op: typeof Op.DEL | typeof Op.EVT;
  cache: string;
  key: string;
  tsm: number;
  writer: number;
}

/** Clears one cache, or every cache when `cache` is null, on `target` (0 = every member). */
export interface ResetEntry {
  op: typeof Op.RST;
  cache: string | null;
  tsm: number;
  writer: number;
  target: number;
}

/** Heartbeat and stability report. */
export interface AckEntry {
  op: typeof Op.ACK;
  /** Highest DATA seq this node has sent. */
  highestSeq: number;
  /** Lowest DATA seq still in this node's retransmit buffer. */
  lowestRetained: number;
  /** For each peer, the seq up to which this node received everything. */
  received: Array<[node: number, contiguous: number]>;
}

/** Asks `target` to resend DATA seqs (inclusive ranges; not ordered, so ranges may wrap u32). */
export interface NakEntry {
  op: typeof Op.NAK;
  target: number;
  missing: Array<[first: number, last: number]>;
}

/** Asks `target` to send the current versions of some keys. */
export interface RequestEntry {
  op: typeof Op.REQ;
  target: number;
  cache: string;
  keys: string[];
}

/** A member announces itself (NEW) or leaves (BYE). */
export interface MembershipEntry {
  op: typeof Op.NEW | typeof Op.BYE;
}

/** Anti-entropy pulse: one u32 digest per bucket of a cache's keys. */
export interface SyncEntry {
  op: typeof Op.SYC;
  cache: string;
  buckets: number[];
}

/** The versions held in one bucket, sent to `target` whose digest differed. */
export interface SyncDetailEntry {
  op: typeof Op.SYD;
  target: number;
  cache: string;
  bucket: number;
  /** False when answering a SYC (the receiver lists its own versions back); true for that answer. */
  reply: boolean;
  versions: Array<[key: string, tsm: number, writer: number, crc: bigint, tombstone: boolean]>;
}

/** Asks `target` for a state transfer. */
export interface StateEntry {
  op: typeof Op.STE;
  target: number;
}

/** Checksum inquiry; `target` 0 means every member. */
export interface InquiryEntry {
  op: typeof Op.INQ;
  requestId: number;
  target: number;
  cache: string | null;
  key: string | null;
}

/** Reply to INQ (CHK) or MET (MTR); `result` is plain data (see {@link isPlainData}). */
export interface ResultEntry {
  op: typeof Op.CHK | typeof Op.MTR;
  requestId: number;
  target: number;
  result: unknown;
}

/** Metrics inquiry; `target` 0 means every member. */
export interface MetricsEntry {
  op: typeof Op.MET;
  requestId: number;
  target: number;
  cache: string | null;
}

/** Any op entry, discriminated on `op`. */
export type Entry =
  | WriteEntry
  | RemoveEntry
  | ResetEntry
  | AckEntry
  | NakEntry
  | RequestEntry
  | MembershipEntry
  | SyncEntry
  | SyncDetailEntry
  | StateEntry
  | InquiryEntry
  | ResultEntry
  | MetricsEntry;

/** Why {@link decodeEntries} refused a payload. */
export type EntriesRejection = 'decode' | 'shape';

// The one place where the op codec's CBOR options are pinned; both ends must agree.
// useRecords false + no structures: every message decodes alone (UDP may lose the earlier ones).
// tagUint8Array false: byte strings travel as plain CBOR byte strings (major type 2), no tag.
// copyBuffers true: a decoded value owns its bytes instead of pinning the whole datagram.
const CBOR_OPTIONS = {
  useRecords: false,
  mapsAsObjects: true,
  tagUint8Array: false,
  copyBuffers: true,
  bundleStrings: false,
  pack: false,
  sequential: false,
} as const;

const opEncoder = new Encoder(CBOR_OPTIONS);
const opDecoder = new Decoder(CBOR_OPTIONS);

function crcBytes(crc: bigint): Buffer {
  const bytes = Buffer.allocUnsafe(8);
  bytes.writeBigUInt64BE(BigInt.asUintN(64, crc));
  return bytes;
}

function entryArray(entry: Entry): unknown[] {
  switch (entry.op) {
    case Op.INS:
    case Op.UPD:
      return [entry.op, entry.cache, entry.key, entry.tsm, entry.writer, crcBytes(entry.crc), entry.value];
    case Op.DEL:
    case Op.EVT:
      return [entry.op, entry.cache, entry.key, entry.tsm, entry.writer];
    case Op.RST:
      return [entry.op, entry.cache, entry.tsm, entry.writer, entry.target];
    case Op.ACK:
      return [entry.op, entry.highestSeq, entry.lowestRetained, entry.received];
    case Op.NAK:
      return [entry.op, entry.target, entry.missing];
    case Op.REQ:
      return [entry.op, entry.target, entry.cache, entry.keys];
    case Op.NEW:
    case Op.BYE:
      return [entry.op];
    case Op.SYC:
      return [entry.op, entry.cache, entry.buckets];
    case Op.SYD:
      return [
        entry.op,
        entry.target,
        entry.cache,
        entry.bucket,
        entry.reply,
        entry.versions.map(([key, tsm, writer, crc, tombstone]) => [
          key,
          tsm,
          writer,
          crcBytes(crc),
          tombstone,
        ]),
      ];
    case Op.STE:
      return [entry.op, entry.target];
    case Op.INQ:
      return [entry.op, entry.requestId, entry.target, entry.cache, entry.key];
    case Op.CHK:
    case Op.MTR:
      if (!isPlainData(entry.result)) {
        throw new TypeError(
          `op ${entry.op} result must be plain data (null, boolean, number, string, bigint within 64 bits, ` +
            `Uint8Array, arrays and plain objects, nested at most ${MAX_RESULT_DEPTH} deep)`,
        );
      }
      return [entry.op, entry.requestId, entry.target, entry.result];
    case Op.MET:
      return [entry.op, entry.requestId, entry.target, entry.cache];
  }
}

/**
 * Encodes one entry as a CBOR array. Concatenate the results to build a message (a CBOR sequence).
 * Throws a TypeError only for a CHK/MTR result that is not plain data (a programming error).
 */
export function encodeEntry(entry: Entry): Uint8Array {
  return opEncoder.encode(entryArray(entry));
}

/**
 * Encodes several entries as one message (a CBOR sequence), in one buffer.
 * Equivalent to concatenating {@link encodeEntry} of each.
 */
export function encodeEntries(entries: readonly Entry[]): Buffer {
  const parts = entries.map(encodeEntry);
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------------------------
// Structural pre-scan: linear in the number of CBOR items, allocates nothing but a small stack.

/**
 * Checks that `bytes` is a sequence of well-formed, definite-length, untagged CBOR items, nested at
 * most {@link MAX_CBOR_DEPTH} deep, whose lengths all fit in what remains of the buffer.
 */
function isPlainCborSequence(bytes: Uint8Array): boolean {
  const end = bytes.length;
  // remaining[d] = items still expected in the container open at depth d (depth 0 = the sequence).
  const remaining = new Array<number>(MAX_CBOR_DEPTH + 1);
  let depth = 0;
  remaining[0] = Number.POSITIVE_INFINITY;
  let position = 0;
  while (position < end) {
    const initial = bytes[position++]!;
    const major = initial >> 5;
    const info = initial & 0x1f;
    let argument: number;
    if (info < 24) {
      argument = info;
    } else if (info === 24) {
      if (position + 1 > end) return false;
      argument = bytes[position]!;
      position += 1;
    } else if (info === 25) {
      if (position + 2 > end) return false;
      argument = (bytes[position]! << 8) | bytes[position + 1]!;
      position += 2;
    } else if (info === 26) {
      if (position + 4 > end) return false;
      argument =
        bytes[position]! * 0x1000000 +
        ((bytes[position + 1]! << 16) | (bytes[position + 2]! << 8) | bytes[position + 3]!);
      position += 4;
    } else if (info === 27) {
      if (position + 8 > end) return false;
      const high =
        bytes[position]! * 0x1000000 +
        ((bytes[position + 1]! << 16) | (bytes[position + 2]! << 8) | bytes[position + 3]!);
      // Lengths above 2^32 can never fit in a buffer; integers (major 0/1) may use all 64 bits.
      argument = high === 0 ? 0 : Number.POSITIVE_INFINITY;
      argument +=
        bytes[position + 4]! * 0x1000000 +
        ((bytes[position + 5]! << 16) | (bytes[position + 6]! << 8) | bytes[position + 7]!);
      position += 8;
    } else {
      return false; // 28-30 reserved, 31 indefinite length or break
    }
    const left = end - position;
    switch (major) {
      case 0:
      case 1:
        break;
      case 2:
      case 3:
        if (argument > left) return false;
        position += argument;
        break;
      case 4:
        if (argument > left) return false; // every item takes at least one byte
        if (argument > 0) {
          if (depth === MAX_CBOR_DEPTH) return false;
          remaining[depth]! -= 1; // the container itself is an item of its parent
          remaining[++depth] = argument + 1; // +1: compensates the decrement below
        }
        break;
      case 5:
        if (argument * 2 > left) return false;
        if (argument > 0) {
          if (depth === MAX_CBOR_DEPTH) return false;
          remaining[depth]! -= 1;
          remaining[++depth] = argument * 2 + 1;
        }
        break;
      case 6:
        return false; // no tags: no cbor-x extension runs on network input
      default:
        // major 7: false, true, null, undefined and the three float widths only
        if (!(info >= 20 && info <= 23) && !(info >= 25 && info <= 27)) return false;
        break;
    }
    remaining[depth]! -= 1;
    while (depth > 0 && remaining[depth] === 0) depth--;
  }
  return depth === 0;
}

// ---------------------------------------------------------------------------------------------
// Shape validation of decoded entries.

class ShapeError extends Error {}
const SHAPE = new ShapeError('shape');

function fail(): never {
  throw SHAPE;
}

function u32(value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 0xffffffff) fail();
  return value;
}

function timestamp(value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) fail();
  return value;
}

function boundedString(value: unknown, maxLength: number): string {
  if (typeof value !== 'string' || value.length > maxLength) fail();
  return value;
}

function cacheName(value: unknown): string {
  return boundedString(value, MAX_CACHE_NAME_LENGTH);
}

function optionalCacheName(value: unknown): string | null {
  return value === null ? null : cacheName(value);
}

function key(value: unknown): string {
  return boundedString(value, MAX_KEY_LENGTH);
}

function bytes(value: unknown): Uint8Array {
  if (!(value instanceof Uint8Array)) fail();
  return value;
}

function crc(value: unknown): bigint {
  if (!(value instanceof Uint8Array) || value.length !== 8) fail();
  const view = new DataView(value.buffer, value.byteOffset, 8);
  return view.getBigUint64(0);
}

function list(value: unknown, maxItems = MAX_LIST_ITEMS): unknown[] {
  if (!Array.isArray(value) || value.length > maxItems) fail();
  return value;
}

function tuple(value: unknown, length: number): unknown[] {
  if (!Array.isArray(value) || value.length !== length) fail();
  return value;
}

function u32Pairs(value: unknown): Array<[number, number]> {
  const items = list(value);
  const pairs = new Array<[number, number]>(items.length);
  for (let i = 0; i < items.length; i++) {
    const pair = tuple(items[i], 2);
    pairs[i] = [u32(pair[0]), u32(pair[1])];
  }
  return pairs;
}

function isPlainObject(value: object): boolean {
  const prototype = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

/**
 * True for values a CHK/MTR result may hold: null, undefined, booleans, numbers, strings, bigints
 * within 64 bits, Uint8Array, and arrays and plain objects of those, nested at most
 * {@link MAX_RESULT_DEPTH} deep. (Map, Set, Date and class instances are refused: their CBOR
 * forms need tags, which the decoder never accepts from the network.)
 */
export function isPlainData(value: unknown, depth = 0): boolean {
  switch (typeof value) {
    case 'undefined':
    case 'boolean':
    case 'number':
    case 'string':
      return true;
    case 'bigint':
      return value >= -(2n ** 64n) && value < 2n ** 64n;
    case 'object': {
      if (value === null || value instanceof Uint8Array) return true;
      if (depth >= MAX_RESULT_DEPTH) return false;
      if (Array.isArray(value)) {
        for (const item of value) if (!isPlainData(item, depth + 1)) return false;
        return true;
      }
      if (!isPlainObject(value)) return false;
      for (const item of Object.values(value)) if (!isPlainData(item, depth + 1)) return false;
      return true;
    }
    default:
      return false;
  }
}

function entryFrom(item: unknown): Entry {
  if (!Array.isArray(item) || item.length === 0) fail();
  const op = item[0];
  switch (op) {
    case Op.INS:
    case Op.UPD:
      tuple(item, 7);
      return {
        op,
        cache: cacheName(item[1]),
        key: key(item[2]),
        tsm: timestamp(item[3]),
        writer: u32(item[4]),
        crc: crc(item[5]),
        value: bytes(item[6]),
      };
    case Op.DEL:
    case Op.EVT:
      tuple(item, 5);
      return {
        op,
        cache: cacheName(item[1]),
        key: key(item[2]),
        tsm: timestamp(item[3]),
        writer: u32(item[4]),
      };
    case Op.RST:
      tuple(item, 5);
      return {
        op,
        cache: optionalCacheName(item[1]),
        tsm: timestamp(item[2]),
        writer: u32(item[3]),
        target: u32(item[4]),
      };
    case Op.ACK:
      tuple(item, 4);
      return { op, highestSeq: u32(item[1]), lowestRetained: u32(item[2]), received: u32Pairs(item[3]) };
    case Op.NAK:
      tuple(item, 3);
      return { op, target: u32(item[1]), missing: u32Pairs(item[2]) };
    case Op.REQ: {
      tuple(item, 4);
      const keys = list(item[3]);
      for (const k of keys) key(k);
      return { op, target: u32(item[1]), cache: cacheName(item[2]), keys: keys as string[] };
    }
    case Op.NEW:
    case Op.BYE:
      tuple(item, 1);
      return { op };
    case Op.SYC: {
      tuple(item, 3);
      const buckets = list(item[2], MAX_BUCKETS);
      for (const digest of buckets) u32(digest);
      return { op, cache: cacheName(item[1]), buckets: buckets as number[] };
    }
    case Op.SYD: {
      tuple(item, 6);
      const bucket = u32(item[3]);
      if (bucket >= MAX_BUCKETS) fail();
      const reply = item[4];
      if (typeof reply !== 'boolean') fail();
      const raw = list(item[5]);
      const versions = new Array<[string, number, number, bigint, boolean]>(raw.length);
      for (let i = 0; i < raw.length; i++) {
        const version = tuple(raw[i], 5);
        const tombstone = version[4];
        if (typeof tombstone !== 'boolean') fail();
        versions[i] = [key(version[0]), timestamp(version[1]), u32(version[2]), crc(version[3]), tombstone];
      }
      return { op, target: u32(item[1]), cache: cacheName(item[2]), bucket, reply, versions };
    }
    case Op.STE:
      tuple(item, 2);
      return { op, target: u32(item[1]) };
    case Op.INQ:
      tuple(item, 5);
      return {
        op,
        requestId: u32(item[1]),
        target: u32(item[2]),
        cache: optionalCacheName(item[3]),
        key: item[4] === null ? null : key(item[4]),
      };
    case Op.CHK:
    case Op.MTR:
      tuple(item, 4);
      if (!isPlainData(item[3])) fail();
      return { op, requestId: u32(item[1]), target: u32(item[2]), result: item[3] };
    case Op.MET:
      tuple(item, 4);
      return { op, requestId: u32(item[1]), target: u32(item[2]), cache: optionalCacheName(item[3]) };
    default:
      fail();
  }
}

/**
 * Decodes a message (a CBOR sequence of entries) received from the network. Never throws:
 * malformed CBOR, or anything beyond plain definite-length untagged CBOR, gives 'decode'; a
 * well-formed item that is not a valid entry (wrong op, arity, type, range or bound) gives
 * 'shape'. Either way the whole payload is refused: nothing of it is applied.
 */
export function decodeEntries(
  payload: Uint8Array,
): { ok: true; entries: Entry[] } | { ok: false; reason: EntriesRejection } {
  if (payload.length === 0) return { ok: true, entries: [] };
  if (!isPlainCborSequence(payload)) return { ok: false, reason: 'decode' };
  let items: unknown[];
  try {
    items = opDecoder.decodeMultiple(payload) as unknown[];
  } catch {
    return { ok: false, reason: 'decode' };
  }
  if (!Array.isArray(items)) return { ok: false, reason: 'decode' };
  const entries = new Array<Entry>(items.length);
  try {
    for (let i = 0; i < items.length; i++) entries[i] = entryFrom(items[i]);
  } catch {
    return { ok: false, reason: 'shape' };
  }
  return { ok: true, entries };
}
