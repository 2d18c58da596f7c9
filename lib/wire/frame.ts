/**
 * Frames: how a message becomes datagrams and back. See docs/PROTOCOL.md for the byte layout.
 *
 * A datagram is a 12-byte routing prefix in clear (magic, version, flags, cluster id, sender),
 * then either a binary Fernet token whose plaintext is the inner frame (SEALED) or the inner frame
 * itself. The inner frame repeats the cluster id and sender (so they are authenticated when sealed)
 * and carries the kind, fragment index and count, payload length, seq and whole-message length.
 *
 * {@link FrameCodec.fromDatagram} parses any bytes from the network and never throws: everything it
 * refuses comes back with a {@link FrameDropReason} for the engine to count.
 */
import { Fernet } from './fernet.js';

/** Frame kinds: DATA is the sequenced reliable stream, CONTROL is unsequenced. */
export const FrameKind = { Data: 1, Control: 2 } as const;
/** A frame kind. */
export type FrameKindCode = (typeof FrameKind)[keyof typeof FrameKind];

/** "MC": the first two bytes of every mccache datagram. */
export const FRAME_MAGIC = 0x4d43;
/** The wire format version this code speaks. */
export const FRAME_VERSION = 1;
/** Flags bit 0: the rest of the datagram is a binary Fernet token. */
export const FLAG_SEALED = 0x01;
/** Bytes of the routing prefix (always in clear). */
export const PREFIX_BYTES = 12;
/** Bytes of the inner header. */
export const INNER_HEADER_BYTES = 24;
/**
 * The smallest packet size (UDP payload bytes) a codec accepts. Control frames are never fragmented,
 * so the largest fixed-size ones must fit one sealed datagram: a SYC digest (128 buckets, about 650
 * bytes) and a NAK of 64 ranges (about 710) do not fit at the IPv4 minimum of 576 (471 bytes sealed),
 * and do at 1200, the floor QUIC chose for the same reason (1095 bytes sealed).
 */
export const MIN_MTU = 1200;
/** The largest UDP payload over IPv4. */
export const MAX_MTU = 65_507;
/**
 * The largest message (all fragments together): a 16 MiB encoded value (MAX_VALUE_BYTES in
 * value-codec.ts) plus 64 KiB for its op envelope. With MIN_MTU and encryption a fragment carries
 * 1095 bytes, so the largest message takes 15,382 fragments: the u16 fragment count never overflows.
 */
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024 + 64 * 1024;
/** Default replay window: sealed tokens older than this, or this far in the future, are dropped. */
export const DEFAULT_REPLAY_WINDOW_SECONDS = 60;

/** The fields of an inner header that the engine needs. */
export interface FrameHeader {
  clusterId: number;
  sender: number;
  kind: FrameKindCode;
  fragmentIndex: number;
  fragmentCount: number;
  seq: number;
  messageLength: number;
}

/** Why {@link FrameCodec.fromDatagram} dropped a datagram. */
export type FrameDropReason =
  | 'short'
  | 'magic'
  | 'version'
  | 'flags'
  | 'cluster'
  | 'unsealed'
  | 'sealed-without-key'
  | 'hmac'
  | 'malformed-token'
  | 'stale'
  | 'future'
  | 'header';

/** Every {@link FrameDropReason}, in the order the checks run (handy for counters). */
export const FRAME_DROP_REASONS: readonly FrameDropReason[] = [
  'short',
  'magic',
  'version',
  'flags',
  'cluster',
  'unsealed',
  'sealed-without-key',
  'hmac',
  'malformed-token',
  'stale',
  'future',
  'header',
];

/** Options of a {@link FrameCodec}. */
export interface FrameCodecOptions {
  /** hash32 of the cluster name (value-codec.ts). */
  clusterId: number;
  /** This node's id: random, nonzero u32. */
  sender: number;
  /** Largest datagram (UDP payload bytes), MIN_MTU..MAX_MTU. */
  mtu: number;
  /** Seals every datagram and refuses unsealed ones when set. */
  fernet?: Fernet | undefined;
  /** Sealed tokens older than this, or more than this in the future, are dropped. Default 60. */
  replayWindowSeconds?: number;
  /** Current time in seconds (default: the system clock), used to stamp and check tokens. */
  nowSeconds?: () => number;
}

/** Result of {@link FrameCodec.fromDatagram}. */
export type FrameParseResult =
  | { ok: true; header: FrameHeader; payload: Buffer }
  | { ok: false; reason: FrameDropReason };

/**
 * Payload bytes each fragment carries for a packet size (`mtu`, UDP payload bytes), sealed or not:
 * `mtu - 36` in clear, `Fernet.maxPlaintext(mtu - 12) - 24` sealed (1436 and 1367 at the default
 * 1472). Throws a RangeError for an mtu outside MIN_MTU..MAX_MTU.
 */
export function maxFragmentPayload(mtu: number, sealed: boolean): number {
  if (!Number.isInteger(mtu) || mtu < MIN_MTU || mtu > MAX_MTU) {
    throw new RangeError(
      `packet mtu must be a whole number of bytes from ${MIN_MTU} to ${MAX_MTU}; got ${mtu}`,
    );
  }
  const innerBudget = sealed ? Fernet.maxPlaintext(mtu - PREFIX_BYTES) : mtu - PREFIX_BYTES;
  return innerBudget - INNER_HEADER_BYTES;
}

/** Hex form of a node id (8 digits), as shown in metadata, logs and results keyed by node. */
export function nodeIdHex(id: number): string {
  return id.toString(16).padStart(8, '0');
}

/** Sender id from a datagram's routing prefix, read without any check but the length. */
export function peekSender(datagram: Uint8Array): number | undefined {
  if (datagram.length < PREFIX_BYTES) return undefined;
  return readU32(datagram, 8);
}

/** Cluster id from a datagram's routing prefix, read without any check but the length. */
export function peekClusterId(datagram: Uint8Array): number | undefined {
  if (datagram.length < PREFIX_BYTES) return undefined;
  return readU32(datagram, 4);
}

function readU16(bytes: Uint8Array, offset: number): number {
  return (bytes[offset]! << 8) | bytes[offset + 1]!;
}

function readU32(bytes: Uint8Array, offset: number): number {
  return (
    bytes[offset]! * 0x1000000 + ((bytes[offset + 1]! << 16) | (bytes[offset + 2]! << 8) | bytes[offset + 3]!)
  );
}

function checkU32(name: string, value: number, allowZero: boolean): void {
  if (!Number.isInteger(value) || value < (allowZero ? 0 : 1) || value > 0xffffffff) {
    throw new RangeError(`${name} must be a${allowZero ? '' : ' nonzero'} u32; got ${value}`);
  }
}

function systemSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

/**
 * Checks that a fragment's lengths fit the geometry of a fragmented message without knowing the
 * sender's mtu: every fragment but the last carries the same number of bytes f >= 1, the last
 * carries 1..f bytes, so messageLength = (count - 1) * f + last. A lone fragment carries it all.
 */
function fitsGeometry(index: number, count: number, payloadLength: number, messageLength: number): boolean {
  if (count === 1) return payloadLength === messageLength;
  if (payloadLength === 0) return false;
  if (index < count - 1) {
    // payloadLength is f: the rest must leave the last fragment 1..f bytes
    const beforeLast = (count - 1) * payloadLength;
    return messageLength > beforeLast && messageLength <= beforeLast + payloadLength;
  }
  const beforeLast = messageLength - payloadLength;
  if (beforeLast <= 0 || beforeLast % (count - 1) !== 0) return false;
  return beforeLast / (count - 1) >= payloadLength;
}

/**
 * Splits messages into frames and turns frames into datagrams and back, for one node of one
 * cluster. Holds no per-peer state: reassembly is {@link Reassembly}'s job.
 */
/**
 * Frames are carved from 256 KiB slabs. Buffer.allocUnsafe makes a new 8 KiB pool every five
 * datagram-sized buffers, and creating those pools was a quarter of the engine's flush time. A slab
 * lives until the last frame cut from it is released (sent, or freed by the retransmit buffer).
 */
const SLAB_BYTES = 256 * 1024;
let slab = Buffer.allocUnsafeSlow(0);
let slabUsed = 0;

function allocateFrame(size: number): Buffer {
  if (size > SLAB_BYTES / 8) return Buffer.allocUnsafeSlow(size);
  if (slabUsed + size > slab.length) {
    slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
    slabUsed = 0;
  }
  const frame = slab.subarray(slabUsed, slabUsed + size);
  // Keep the next frame 8-byte aligned, so DataView reads of it stay cheap.
  slabUsed += (size + 7) & ~7;
  return frame;
}

export class FrameCodec {
  /** Payload bytes per fragment at this codec's mtu and encryption. */
  readonly maxFragmentPayload: number;
  readonly #clusterId: number;
  readonly #sender: number;
  readonly #fernet: Fernet | undefined;
  readonly #replayWindowSeconds: number;
  readonly #nowSeconds: () => number;
  /** The prefix every outgoing datagram starts with. */
  readonly #prefix: Buffer;

  constructor(options: FrameCodecOptions) {
    checkU32('cluster id', options.clusterId, true);
    checkU32('sender node id', options.sender, false);
    const window = options.replayWindowSeconds ?? DEFAULT_REPLAY_WINDOW_SECONDS;
    if (!Number.isFinite(window) || window < 1) {
      throw new RangeError(`replay window must be at least 1 second; got ${window}`);
    }
    this.#clusterId = options.clusterId;
    this.#sender = options.sender;
    this.#fernet = options.fernet;
    this.#replayWindowSeconds = window;
    this.#nowSeconds = options.nowSeconds ?? systemSeconds;
    this.maxFragmentPayload = maxFragmentPayload(options.mtu, options.fernet !== undefined);
    const prefix = Buffer.alloc(PREFIX_BYTES);
    prefix.writeUInt16BE(FRAME_MAGIC, 0);
    prefix[2] = FRAME_VERSION;
    prefix[3] = options.fernet === undefined ? 0 : FLAG_SEALED;
    prefix.writeUInt32BE(options.clusterId, 4);
    prefix.writeUInt32BE(options.sender, 8);
    this.#prefix = prefix;
  }

  /** Fragments a message of this length takes: ceil(length / maxFragmentPayload), at least 1. */
  fragmentCount(messageLength: number): number {
    return Math.max(1, Math.ceil(messageLength / this.maxFragmentPayload));
  }

  /**
   * Splits a message into inner frames (header + payload, not yet sealed) with seqs firstSeq,
   * firstSeq + 1, ... (mod 2^32). Every fragment but the last carries exactly maxFragmentPayload
   * bytes; a message of 0 bytes is one empty fragment. Throws a RangeError past MAX_MESSAGE_BYTES
   * (the engine refuses such a value at assignment, so this is a programming error).
   */
  fragment(kind: FrameKindCode, firstSeq: number, message: Uint8Array): Buffer[] {
    if (message.length > MAX_MESSAGE_BYTES) {
      throw new RangeError(`a message is at most ${MAX_MESSAGE_BYTES} bytes; got ${message.length}`);
    }
    const count = this.fragmentCount(message.length);
    const frames = new Array<Buffer>(count);
    for (let index = 0; index < count; index++) {
      const start = index * this.maxFragmentPayload;
      const end = Math.min(start + this.maxFragmentPayload, message.length);
      // Room for the clear prefix in front: toDatagram() then sends prefix + frame without a copy.
      const withPrefix = allocateFrame(PREFIX_BYTES + INNER_HEADER_BYTES + end - start);
      this.#prefix.copy(withPrefix, 0);
      const frame = withPrefix.subarray(PREFIX_BYTES);
      frame.writeUInt32BE(this.#clusterId, 0);
      frame.writeUInt32BE(this.#sender, 4);
      frame[8] = kind;
      frame[9] = 0;
      frame.writeUInt16BE(index, 10);
      frame.writeUInt16BE(count, 12);
      frame.writeUInt16BE(end - start, 14);
      frame.writeUInt32BE((firstSeq + index) >>> 0, 16);
      frame.writeUInt32BE(message.length, 20);
      frame.set(message.subarray(start, end), INNER_HEADER_BYTES);
      frames[index] = frame;
    }
    return frames;
  }

  /**
   * The datagram for an inner frame: prefix + (Fernet token of the frame | the frame). Called again
   * for each retransmission, so a resent frame gets a fresh token timestamp.
   */
  toDatagram(innerFrame: Uint8Array): Buffer {
    if (this.#fernet === undefined) {
      // A frame from fragment() has this codec's prefix right in front of it: send both as one view.
      if (this.#hasPrefixInFront(innerFrame)) {
        return Buffer.from(
          innerFrame.buffer,
          innerFrame.byteOffset - PREFIX_BYTES,
          PREFIX_BYTES + innerFrame.length,
        );
      }
      const datagram = allocateFrame(PREFIX_BYTES + innerFrame.length);
      this.#prefix.copy(datagram, 0);
      datagram.set(innerFrame, PREFIX_BYTES);
      return datagram;
    }
    const datagram = this.#fernet.sealWithHeadroom(innerFrame, this.#nowSeconds(), PREFIX_BYTES);
    this.#prefix.copy(datagram, 0);
    return datagram;
  }

  #hasPrefixInFront(frame: Uint8Array): boolean {
    const offset = frame.byteOffset;
    if (offset < PREFIX_BYTES) return false;
    const before = new Uint8Array(frame.buffer, offset - PREFIX_BYTES, PREFIX_BYTES);
    const prefix = this.#prefix;
    for (let i = 0; i < PREFIX_BYTES; i++) if (before[i] !== prefix[i]) return false;
    return true;
  }

  /**
   * Parses any bytes from the network; never throws. Cheap checks of the clear prefix run first
   * (length, magic, version, flags, cluster id); then with a key a clear frame is 'unsealed' and a
   * token is opened (HMAC before anything is decrypted or decoded; timestamp outside the replay
   * window: 'stale' or 'future'); without a key a sealed frame is 'sealed-without-key'. Last the
   * inner header: copies equal to the prefix, kind, reserved byte, fragment index and count, exact
   * payload length, message length bounded and consistent with the fragment geometry ('header').
   */
  fromDatagram(datagram: Uint8Array): FrameParseResult {
    if (datagram.length < PREFIX_BYTES) return { ok: false, reason: 'short' };
    if (readU16(datagram, 0) !== FRAME_MAGIC) return { ok: false, reason: 'magic' };
    if (datagram[2] !== FRAME_VERSION) return { ok: false, reason: 'version' };
    const flags = datagram[3]!;
    if ((flags & ~FLAG_SEALED) !== 0) return { ok: false, reason: 'flags' };
    if (readU32(datagram, 4) !== this.#clusterId) return { ok: false, reason: 'cluster' };
    const sealed = (flags & FLAG_SEALED) !== 0;

    let inner: Uint8Array;
    if (this.#fernet !== undefined) {
      if (!sealed) return { ok: false, reason: 'unsealed' };
      const token = datagram.subarray(PREFIX_BYTES);
      const opened = this.#fernet.open(token, {
        nowSeconds: this.#nowSeconds(),
        maxAgeSeconds: this.#replayWindowSeconds,
        maxFutureSeconds: this.#replayWindowSeconds,
      });
      if (!opened.ok) {
        switch (opened.reason) {
          case 'hmac':
            return { ok: false, reason: 'hmac' };
          case 'expired':
            return { ok: false, reason: 'stale' };
          case 'future':
            return { ok: false, reason: 'future' };
          default:
            return { ok: false, reason: 'malformed-token' };
        }
      }
      inner = opened.plaintext;
    } else {
      if (sealed) return { ok: false, reason: 'sealed-without-key' };
      inner = datagram.subarray(PREFIX_BYTES);
    }

    if (inner.length < INNER_HEADER_BYTES) return { ok: false, reason: 'header' };
    const clusterId = readU32(inner, 0);
    const sender = readU32(inner, 4);
    const kind = inner[8]!;
    const fragmentIndex = readU16(inner, 10);
    const fragmentCount = readU16(inner, 12);
    const payloadLength = readU16(inner, 14);
    const seq = readU32(inner, 16);
    const messageLength = readU32(inner, 20);
    if (
      clusterId !== this.#clusterId ||
      sender !== readU32(datagram, 8) ||
      sender === 0 ||
      (kind !== FrameKind.Data && kind !== FrameKind.Control) ||
      inner[9] !== 0 ||
      fragmentCount === 0 ||
      fragmentIndex >= fragmentCount ||
      payloadLength !== inner.length - INNER_HEADER_BYTES ||
      messageLength > MAX_MESSAGE_BYTES ||
      !fitsGeometry(fragmentIndex, fragmentCount, payloadLength, messageLength)
    ) {
      return { ok: false, reason: 'header' };
    }
    const payload = Buffer.from(inner.buffer, inner.byteOffset + INNER_HEADER_BYTES, payloadLength);
    return {
      ok: true,
      header: { clusterId, sender, kind, fragmentIndex, fragmentCount, seq, messageLength },
      payload,
    };
  }
}
