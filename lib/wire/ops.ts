/**
 * Op entries: the units the cluster engine sends. A message is a CBOR sequence (RFC 8742) of
 * entries, each a CBOR array `[code, ...fields]`. Many small ops share one message (a batch); one
 * large op spans several fragments (see frame.ts).
 *
 * Encoding: the data ops (INS, UPD, DEL, EVT) are written by a small hand-written CBOR writer, the
 * measured hot path; it emits exactly the bytes the pinned cbor-x encoder emits for the same array
 * (a property test checks this). Every other op goes through that cbor-x encoder.
 *
 * Decoding treats every byte as hostile. A hand-written reader walks the CBOR items and checks each
 * field for type, range and bound as it goes; it refuses tags, indefinite lengths, simple values
 * other than false/true/null/undefined, invalid UTF-8, and any length larger than the bytes that
 * remain (so nothing is allocated from an unchecked length). Only the plain-data result of CHK/MTR
 * is handed to cbor-x, after the same structural checks, so no cbor-x extension (records, shared
 * references, packed values, RegExp, Error) ever runs on network input.
 */
import { isUtf8 } from 'node:buffer';
import { Decoder, Encoder } from 'cbor-x';
import { latin1Text, utf8Text } from './buffer-text.js';

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
// useRecords false, no structures: every message decodes alone (UDP may lose the earlier ones).
// tagUint8Array false: byte strings travel as plain CBOR byte strings (major type 2), no tag.
// mapsAsObjects: a CHK/MTR result map decodes to a plain object (keys are text, checked first).
// copyBuffers: a decoded byte string owns its bytes instead of pinning the whole datagram.
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

// ---------------------------------------------------------------------------------------------
// Encoding

function crcBytes(crc: bigint): Buffer {
  const bytes = Buffer.allocUnsafe(8);
  bytes.writeBigUInt64BE(BigInt.asUintN(64, crc));
  return bytes;
}

/** The CBOR array of an entry, as the generic (cbor-x) path encodes it. */
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
 * A scratch buffer and the few CBOR forms the data ops need, written exactly as cbor-x writes them
 * (shortest heads; integers above 2^32 - 1 as float64, exact below 2^53).
 */
export class DataOpWriter {
  buffer = Buffer.allocUnsafe(4096);
  view = new DataView(this.buffer.buffer, this.buffer.byteOffset, this.buffer.length);
  position = 0;

  reserve(bytes: number): void {
    if (this.position + bytes <= this.buffer.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, this.position + bytes));
    this.buffer.copy(grown, 0, 0, this.position);
    this.buffer = grown;
    this.view = new DataView(grown.buffer, grown.byteOffset, grown.length);
  }

  head(major: number, value: number): void {
    const buffer = this.buffer;
    const type = major << 5;
    if (value < 24) {
      buffer[this.position++] = type | value;
    } else if (value < 0x100) {
      buffer[this.position++] = type | 24;
      buffer[this.position++] = value;
    } else if (value < 0x10000) {
      buffer[this.position++] = type | 25;
      buffer[this.position++] = value >> 8;
      buffer[this.position++] = value & 0xff;
    } else {
      buffer[this.position++] = type | 26;
      this.view.setUint32(this.position, value);
      this.position += 4;
    }
  }

  /** A u32 (major 0) or, above that, a float64, as cbor-x writes numbers. */
  number(value: number): void {
    if (value >>> 0 === value) {
      this.head(0, value);
    } else {
      this.buffer[this.position++] = 0xfb;
      this.view.setFloat64(this.position, value);
      this.position += 8;
    }
  }

  text(value: string): void {
    const length = value.length;
    this.reserve(5 + length * 3);
    const buffer = this.buffer;
    if (length < 24) {
      // Short ASCII, the common case: one pass, no native call.
      let position = this.position + 1;
      let i = 0;
      for (; i < length; i++) {
        const code = value.charCodeAt(i);
        if (code >= 0x80) break;
        buffer[position++] = code;
      }
      if (i === length) {
        buffer[this.position] = 0x60 | length;
        this.position = position;
        return;
      }
    }
    // Write the UTF-8 after room for the largest head, then move it next to the real head.
    const room = length * 3 < 24 ? 1 : length * 3 < 0x100 ? 2 : length * 3 < 0x10000 ? 3 : 5;
    const written = buffer.write(value, this.position + room, 'utf8');
    const head = written < 24 ? 1 : written < 0x100 ? 2 : written < 0x10000 ? 3 : 5;
    if (head !== room)
      buffer.copyWithin(this.position + head, this.position + room, this.position + room + written);
    this.head(3, written);
    this.position += written;
  }

  /** A crc as an 8-byte CBOR byte string, from its two 32-bit halves (no BigInt on the write path). */
  crc(high: number, low: number): void {
    this.buffer[this.position++] = 0x48;
    this.view.setUint32(this.position, high);
    this.view.setUint32(this.position + 4, low);
    this.position += 8;
  }

  /** Appends raw bytes. */
  bytes(source: Uint8Array): void {
    this.reserve(source.length);
    this.buffer.set(source, this.position);
    this.position += source.length;
  }
}

/**
 * Appends one data op at `out.position`: everything but the `valueLength` value bytes of an INS/UPD,
 * which the caller appends. The crc comes as two 32-bit halves, so the write path makes no BigInt.
 * Validates like every encoder of data ops (a programming error throws, never a network one) before
 * writing anything.
 */
export function writeDataOpHead(
  out: DataOpWriter,
  op: number,
  cache: string,
  key: string,
  tsm: number,
  writer: number,
  crcHigh: number,
  crcLow: number,
  valueLength: number,
): void {
  checkDataOp(tsm, writer, cache, key);
  out.reserve(64);
  const isWrite = op === Op.INS || op === Op.UPD;
  out.buffer[out.position++] = isWrite ? 0x87 : 0x85;
  out.buffer[out.position++] = op;
  out.text(cache);
  out.text(key);
  out.reserve(32);
  out.number(tsm);
  out.head(0, writer);
  if (isWrite) {
    out.crc(crcHigh, crcLow);
    out.head(2, valueLength);
  }
}

const dataOpWriter = new DataOpWriter();

function checkDataOp(tsm: number, writer: number, cache: string, key: string): void {
  if (!Number.isSafeInteger(tsm) || tsm < 0) {
    throw new TypeError(`op tsm must be a non-negative safe integer; got ${tsm}`);
  }
  if (writer >>> 0 !== writer) throw new TypeError(`op writer must be a u32 node id; got ${writer}`);
  if (cache.length > MAX_CACHE_NAME_LENGTH) {
    throw new RangeError(
      `cache name longer than ${MAX_CACHE_NAME_LENGTH} characters: ${cache.slice(0, 40)}...`,
    );
  }
  if (key.length > MAX_KEY_LENGTH) {
    throw new RangeError(`key longer than ${MAX_KEY_LENGTH} characters in cache ${cache}`);
  }
}

/** The two 32-bit halves of a 64-bit crc. */
export function crcHalves(crc: bigint): [high: number, low: number] {
  const unsigned = BigInt.asUintN(64, crc);
  return [Number(unsigned >> 32n), Number(unsigned & 0xffff_ffffn)];
}

/** The 64-bit crc of two 32-bit halves (the inverse of {@link crcHalves}). */
export function crcFromHalves(high: number, low: number): bigint {
  return (BigInt(high) << 32n) | BigInt(low);
}

function encodeDataOp(entry: WriteEntry | RemoveEntry): Buffer {
  const head = encodeDataOpHead(entry);
  const value = entry.op === Op.INS || entry.op === Op.UPD ? entry.value : undefined;
  const out = Buffer.allocUnsafe(head.length + (value?.length ?? 0));
  out.set(head, 0);
  if (value) out.set(value, head.length);
  return out;
}

/**
 * The encoding of a data op without its value bytes, in a scratch buffer reused by the next call
 * (no allocation: the engine copies it straight into the datagram it is filling). For INS/UPD the
 * entry's full encoding is these bytes followed by `entry.value`; for DEL/EVT it is these bytes.
 */
export function encodeDataOpHead(entry: WriteEntry | RemoveEntry): Buffer {
  const writer = dataOpWriter;
  writer.position = 0;
  const isWrite = entry.op === Op.INS || entry.op === Op.UPD;
  const [crcHigh, crcLow] = isWrite ? crcHalves(entry.crc) : [0, 0];
  const valueLength = isWrite ? entry.value.length : 0;
  writeDataOpHead(
    writer,
    entry.op,
    entry.cache,
    entry.key,
    entry.tsm,
    entry.writer,
    crcHigh,
    crcLow,
    valueLength,
  );
  const head = writer.buffer.subarray(0, writer.position);
  writer.position = 0;
  return head;
}

/**
 * Encodes one entry as a CBOR array. Concatenate the results to build a message (a CBOR sequence).
 * Throws (a programming error, never a network one) for a CHK/MTR result that is not plain data,
 * and for a data op whose tsm, writer, cache name or key is out of the range receivers accept.
 */
export function encodeEntry(entry: Entry): Uint8Array {
  switch (entry.op) {
    case Op.INS:
    case Op.UPD:
    case Op.DEL:
    case Op.EVT:
      return encodeDataOp(entry);
    default:
      return opEncoder.encode(entryArray(entry));
  }
}

/**
 * Encodes several entries as one message (a CBOR sequence), in one buffer.
 * Equivalent to concatenating {@link encodeEntry} of each.
 */
export function encodeEntries(entries: readonly Entry[]): Buffer {
  return Buffer.concat(entries.map(encodeEntry));
}

/**
 * The generic cbor-x encoding of an entry, `[code, ...fields]` with the pinned options. The wire
 * form of every entry is exactly these bytes; exported so tests can hold the fast path to it.
 */
export function encodeEntryGeneric(entry: Entry): Uint8Array {
  return opEncoder.encode(entryArray(entry));
}

// ---------------------------------------------------------------------------------------------
// Decoding: a reader over module-level state (one decode at a time, never re-entered).

/** Malformed or forbidden CBOR. */
const DECODE_ERROR = new Error('decode');
/** Well-formed CBOR that is not a valid entry. */
const SHAPE_ERROR = new Error('shape');

function malformed(): never {
  throw DECODE_ERROR;
}

function misshapen(): never {
  throw SHAPE_ERROR;
}

const EMPTY = Buffer.alloc(0);
let source: Buffer = EMPTY;
const EMPTY_VIEW: DataView = new DataView(EMPTY.buffer, 0, 0);
let sourceView: DataView = EMPTY_VIEW;
let position = 0;
let end = 0;
/** Of the last head read: major type, additional information and argument. */
let major = 0;
let info = 0;
let argument = 0;

/**
 * Reads one item head. Refuses (as malformed) truncation, reserved and indefinite-length heads,
 * tags, simple values other than false/true/null/undefined, and any string, array or map length
 * that cannot fit in the bytes that remain.
 */
function readHead(): void {
  if (position >= end) malformed();
  const initial = source[position++]!;
  major = initial >> 5;
  info = initial & 0x1f;
  if (info < 24) {
    argument = info;
  } else if (info === 24) {
    if (position + 1 > end) malformed();
    argument = source[position++]!;
  } else if (info === 25) {
    if (position + 2 > end) malformed();
    argument = sourceView.getUint16(position);
    position += 2;
  } else if (info === 26) {
    if (position + 4 > end) malformed();
    argument = sourceView.getUint32(position);
    position += 4;
  } else if (info === 27) {
    if (position + 8 > end) malformed();
    // Exact below 2^53; anything above is out of every range checked below anyway.
    argument = sourceView.getUint32(position) * 0x1_0000_0000 + sourceView.getUint32(position + 4);
    position += 8;
  } else {
    malformed();
  }
  switch (major) {
    case 2:
    case 3:
    case 4:
      if (argument > end - position) malformed();
      break;
    case 5:
      if (argument * 2 > end - position) malformed();
      break;
    case 6:
      malformed();
      break;
    case 7:
      if (info < 20 || info === 24) malformed();
      break;
  }
}

/** The value of the float whose head was just read (info 25, 26 or 27). */
function floatValue(): number {
  if (info === 27) return sourceView.getFloat64(position - 8);
  if (info === 26) return sourceView.getFloat32(position - 4);
  const half = sourceView.getUint16(position - 2);
  const exponent = (half >> 10) & 0x1f;
  const fraction = half & 0x3ff;
  const magnitude =
    exponent === 0
      ? fraction * 2 ** -24
      : exponent === 31
        ? fraction === 0
          ? Number.POSITIVE_INFINITY
          : Number.NaN
        : (1 + fraction / 1024) * 2 ** (exponent - 15);
  return half & 0x8000 ? -magnitude : magnitude;
}

function readU32(): number {
  readHead();
  if (major !== 0 || argument > 0xffffffff) misshapen();
  return argument;
}

function readTimestamp(): number {
  readHead();
  if (major === 0) {
    if (argument > Number.MAX_SAFE_INTEGER) misshapen();
    return argument;
  }
  if (major !== 7 || info < 25) misshapen();
  const value = floatValue();
  if (!Number.isSafeInteger(value) || value < 0) misshapen();
  return value;
}

function readBoolean(): boolean {
  readHead();
  if (major !== 7 || (info !== 20 && info !== 21)) misshapen();
  return info === 21;
}

function readText(maxLength: number): string {
  readHead();
  if (major !== 3) misshapen();
  const length = argument;
  // A UTF-16 code unit takes at most 3 UTF-8 bytes: longer byte strings cannot be within the bound.
  if (length > maxLength * 3) misshapen();
  const start = position;
  const stop = start + length;
  let ascii = true;
  for (let i = start; i < stop; i++) {
    if (source[i]! >= 0x80) {
      ascii = false;
      break;
    }
  }
  let text: string;
  if (ascii) {
    text = latin1Text(source, start, stop);
  } else {
    if (!isUtf8(source.subarray(start, stop))) malformed();
    text = utf8Text(source, start, stop);
  }
  position = stop;
  if (text.length > maxLength) misshapen();
  return text;
}

/** The last cache name read, and its bytes: a datagram names the same cache op after op. */
let lastCacheName = '';
let lastCacheBytes: Buffer = Buffer.alloc(0);

/**
 * A cache name; the same string object as last time when the bytes match, which spares a string per
 * op and lets the registry's Map reuse the string's cached hash.
 */
function readCacheName(): string {
  const head = source[position];
  const length = head === undefined ? -1 : head - 0x60;
  if (length >= 0 && length < 24 && length === lastCacheBytes.length && position + 1 + length <= end) {
    const start = position + 1;
    let same = true;
    for (let i = 0; i < length; i++) {
      if (source[start + i] !== lastCacheBytes[i]) {
        same = false;
        break;
      }
    }
    if (same) {
      position = start + length;
      return lastCacheName;
    }
  }
  const start = position;
  const name = readText(MAX_CACHE_NAME_LENGTH);
  if (position - start <= 24) {
    lastCacheName = name;
    lastCacheBytes = Buffer.from(source.subarray(start + 1, position));
  }
  return name;
}

function readOptionalText(maxLength: number): string | null {
  if (position < end && source[position] === 0xf6) {
    position++;
    return null;
  }
  return readText(maxLength);
}

function readCrc(): bigint {
  readHead();
  if (major !== 2 || argument !== 8) misshapen();
  const crc = sourceView.getBigUint64(position);
  position += 8;
  return crc;
}

function readListHead(maxItems: number): number {
  readHead();
  if (major !== 4 || argument > maxItems) misshapen();
  return argument;
}

function readU32Pairs(): Array<[number, number]> {
  const count = readListHead(MAX_LIST_ITEMS);
  const pairs = new Array<[number, number]>(count);
  for (let i = 0; i < count; i++) {
    if (readListHead(2) !== 2) misshapen();
    pairs[i] = [readU32(), readU32()];
  }
  return pairs;
}

/**
 * Reads a CHK/MTR result: first walks it (no recursion) to check that it is plain CBOR nested at
 * most MAX_RESULT_DEPTH deep with text map keys, then lets cbor-x build the value from those bytes.
 */
function readPlainData(): unknown {
  const start = position;
  const remaining: number[] = [];
  const inMap: boolean[] = [];
  do {
    const depth = remaining.length;
    if (depth > 0) {
      // In a map, items at an even count left are keys.
      const isKey = inMap[depth - 1]! && remaining[depth - 1]! % 2 === 0;
      remaining[depth - 1]!--;
      readHead();
      if (isKey && major !== 3) misshapen();
    } else {
      readHead();
    }
    if (major === 2 || major === 3) {
      position += argument;
    } else if ((major === 4 || major === 5) && argument > 0) {
      if (remaining.length >= MAX_RESULT_DEPTH) misshapen();
      remaining.push(major === 5 ? argument * 2 : argument);
      inMap.push(major === 5);
    }
    while (remaining.length > 0 && remaining[remaining.length - 1] === 0) {
      remaining.pop();
      inMap.pop();
    }
  } while (remaining.length > 0);
  let value: unknown;
  try {
    value = opDecoder.decode(source.subarray(start, position));
  } catch {
    malformed();
  }
  if (!isPlainData(value)) misshapen();
  return value;
}

function expectArity(actual: number, expected: number): void {
  if (actual !== expected) misshapen();
}

/** The next entry into `message` at `index`: a data op into its columns, any other op as an object. */
function readEntryInto(message: DecodedMessage, index: number): void {
  readHead();
  if (major !== 4 || argument === 0) misshapen();
  const arity = argument;
  const op = readU32();
  if (op >= Op.INS && op <= Op.EVT) {
    const write = op <= Op.UPD;
    expectArity(arity, write ? 7 : 5);
    message.op[index] = op;
    message.cache[index] = readCacheName();
    message.key[index] = readText(MAX_KEY_LENGTH);
    message.tsm[index] = readTimestamp();
    message.writer[index] = readU32();
    if (write) readWriteTail(message, index);
    message.control[index] = undefined;
  } else {
    message.op[index] = 0;
    message.control[index] = readControlEntry(op, arity);
  }
}

/** A write's crc (as two halves) and the place of its value bytes. */
function readWriteTail(message: DecodedMessage, index: number): void {
  readHead();
  if (major !== 2 || argument !== 8) misshapen();
  message.crcHigh[index] = sourceView.getUint32(position);
  message.crcLow[index] = sourceView.getUint32(position + 4);
  position += 8;
  readHead();
  if (major !== 2) misshapen();
  message.valueStart[index] = position;
  message.valueLength[index] = argument;
  position += argument;
}

/** A control op (or RST) whose array head and op code were just read. */
function readControlEntry(op: number, arity: number): Entry {
  switch (op) {
    case Op.RST:
      expectArity(arity, 5);
      return {
        op,
        cache: readOptionalText(MAX_CACHE_NAME_LENGTH),
        tsm: readTimestamp(),
        writer: readU32(),
        target: readU32(),
      };
    case Op.ACK:
      expectArity(arity, 4);
      return { op, highestSeq: readU32(), lowestRetained: readU32(), received: readU32Pairs() };
    case Op.NAK:
      expectArity(arity, 3);
      return { op, target: readU32(), missing: readU32Pairs() };
    case Op.REQ: {
      expectArity(arity, 4);
      const target = readU32();
      const cache = readText(MAX_CACHE_NAME_LENGTH);
      const keys = new Array<string>(readListHead(MAX_LIST_ITEMS));
      for (let i = 0; i < keys.length; i++) keys[i] = readText(MAX_KEY_LENGTH);
      return { op, target, cache, keys };
    }
    case Op.NEW:
    case Op.BYE:
      expectArity(arity, 1);
      return { op };
    case Op.SYC: {
      expectArity(arity, 3);
      const cache = readText(MAX_CACHE_NAME_LENGTH);
      const buckets = new Array<number>(readListHead(MAX_BUCKETS));
      for (let i = 0; i < buckets.length; i++) buckets[i] = readU32();
      return { op, cache, buckets };
    }
    case Op.SYD: {
      expectArity(arity, 6);
      const target = readU32();
      const cache = readText(MAX_CACHE_NAME_LENGTH);
      const bucket = readU32();
      if (bucket >= MAX_BUCKETS) misshapen();
      const reply = readBoolean();
      const versions = new Array<[string, number, number, bigint, boolean]>(readListHead(MAX_LIST_ITEMS));
      for (let i = 0; i < versions.length; i++) {
        if (readListHead(5) !== 5) misshapen();
        versions[i] = [readText(MAX_KEY_LENGTH), readTimestamp(), readU32(), readCrc(), readBoolean()];
      }
      return { op, target, cache, bucket, reply, versions };
    }
    case Op.STE:
      expectArity(arity, 2);
      return { op, target: readU32() };
    case Op.INQ:
      expectArity(arity, 5);
      return {
        op,
        requestId: readU32(),
        target: readU32(),
        cache: readOptionalText(MAX_CACHE_NAME_LENGTH),
        key: readOptionalText(MAX_KEY_LENGTH),
      };
    case Op.CHK:
    case Op.MTR:
      expectArity(arity, 4);
      return { op, requestId: readU32(), target: readU32(), result: readPlainData() };
    case Op.MET:
      expectArity(arity, 4);
      return { op, requestId: readU32(), target: readU32(), cache: readOptionalText(MAX_CACHE_NAME_LENGTH) };
    default:
      return misshapen();
  }
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

/** Entries a {@link DecodedMessage} has room for before its columns first grow. */
const INITIAL_COLUMNS = 256;
/** Beyond this many entries, a message's columns are given back once it has been handled. */
const KEPT_COLUMNS = 4096;

/**
 * A decoded message for the receive path, reused from message to message: its data ops (INS, UPD,
 * DEL, EVT) in columns, so that decoding makes no object, BigInt or byte view per op, and its other
 * entries as objects, all indexed in message order. A value is `source[valueStart, +valueLength)`.
 * Call {@link DecodedMessage.release} once handled, so it does not keep the datagram alive.
 */
export class DecodedMessage {
  /** Entries decoded. */
  count = 0;
  /** The payload the value offsets point into. */
  source: Buffer = EMPTY;
  /** Per entry: the data op code, or 0 for an entry in `control`. */
  op = new Uint8Array(INITIAL_COLUMNS);
  cache: string[] = [];
  key: string[] = [];
  tsm = new Float64Array(INITIAL_COLUMNS);
  writer = new Uint32Array(INITIAL_COLUMNS);
  /** A write's crc, as its high and low 32 bits. */
  crcHigh = new Uint32Array(INITIAL_COLUMNS);
  crcLow = new Uint32Array(INITIAL_COLUMNS);
  valueStart = new Uint32Array(INITIAL_COLUMNS);
  valueLength = new Uint32Array(INITIAL_COLUMNS);
  /** Per entry: the entry if it is not a data op. */
  control: Array<Entry | undefined> = [];

  /** Makes room for one more entry at `index`. */
  reserve(index: number): void {
    if (index < this.op.length) return;
    this.resize(this.op.length * 2);
  }

  /** Drops the references to the datagram and its strings, and oversized columns. */
  release(): void {
    this.source = EMPTY;
    this.cache.length = 0;
    this.key.length = 0;
    this.control.length = 0;
    if (this.op.length > KEPT_COLUMNS) this.resize(INITIAL_COLUMNS);
  }

  private resize(size: number): void {
    const kept = Math.min(size, this.op.length);
    const grow = <T extends Uint8Array | Uint32Array | Float64Array>(old: T, fresh: T): T => {
      fresh.set(old.subarray(0, kept));
      return fresh;
    };
    this.op = grow(this.op, new Uint8Array(size));
    this.tsm = grow(this.tsm, new Float64Array(size));
    this.writer = grow(this.writer, new Uint32Array(size));
    this.crcHigh = grow(this.crcHigh, new Uint32Array(size));
    this.crcLow = grow(this.crcLow, new Uint32Array(size));
    this.valueStart = grow(this.valueStart, new Uint32Array(size));
    this.valueLength = grow(this.valueLength, new Uint32Array(size));
  }

  /** The entry at `index` as an object (its value a view of `source`): for tools and tests, not the hot path. */
  entryAt(index: number): Entry {
    const op = this.op[index]!;
    if (op === 0) return this.control[index]!;
    const common = {
      cache: this.cache[index]!,
      key: this.key[index]!,
      tsm: this.tsm[index]!,
      writer: this.writer[index]!,
    };
    if (op === Op.DEL || op === Op.EVT) return { op, ...common };
    const start = this.valueStart[index]!;
    return {
      op: op as typeof Op.INS | typeof Op.UPD,
      ...common,
      crc: crcFromHalves(this.crcHigh[index]!, this.crcLow[index]!),
      value: new Uint8Array(this.source.buffer, this.source.byteOffset + start, this.valueLength[index]!),
    };
  }
}

/**
 * Decodes a message (a CBOR sequence of entries) received from the network into `into`. Never
 * throws: malformed CBOR, or anything beyond plain definite-length untagged CBOR, gives 'decode'; a
 * well-formed item that is not a valid entry (wrong op, arity, type, range or bound) gives 'shape'.
 * Either way the whole payload is refused: nothing of it is to be applied (`into.count` is 0).
 */
export function decodeMessage(payload: Uint8Array, into: DecodedMessage): EntriesRejection | undefined {
  source = Buffer.isBuffer(payload)
    ? payload
    : Buffer.from(payload.buffer, payload.byteOffset, payload.length);
  sourceView = new DataView(source.buffer, source.byteOffset, source.length);
  position = 0;
  end = source.length;
  into.source = source;
  let count = 0;
  try {
    while (position < end) {
      into.reserve(count);
      readEntryInto(into, count);
      count++;
    }
    into.count = count;
    return undefined;
  } catch (error) {
    into.count = 0;
    into.release();
    if (error === SHAPE_ERROR) return 'shape';
    // DECODE_ERROR, or anything thrown on the way (a RangeError from a read past the end): malformed.
    return 'decode';
  } finally {
    // Do not keep the last datagram alive.
    source = EMPTY;
    sourceView = EMPTY_VIEW;
  }
}

/**
 * {@link decodeMessage} with every entry as an object (values are views of the payload): for tools
 * and tests. The engine reads the columns instead.
 */
export function decodeEntries(
  payload: Uint8Array,
): { ok: true; entries: Entry[] } | { ok: false; reason: EntriesRejection } {
  const message = new DecodedMessage();
  const reason = decodeMessage(payload, message);
  if (reason !== undefined) return { ok: false, reason };
  const entries = new Array<Entry>(message.count);
  for (let i = 0; i < message.count; i++) entries[i] = message.entryAt(i);
  message.release();
  return { ok: true, entries };
}
