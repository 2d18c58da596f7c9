/**
 * Reassembly of fragmented messages, bounded against a hostile or broken network: per sender a
 * maximum number of pending messages and of bytes, a maximum number of senders, and a timeout after
 * which an incomplete message is dropped. Every fragment that is not used is counted by reason.
 */
import type { Clock } from '../clock.js';
import type { FrameHeader } from './frame.js';

/** Bounds and clock of a {@link Reassembly}. */
export interface ReassemblyOptions {
  clock: Clock;
  /** An incomplete message that received no new fragment for this long is dropped. */
  timeoutMs: number;
  /** Most incomplete messages held per sender. */
  maxMessagesPerSender: number;
  /** Most bytes (sum of the message lengths) held per sender. */
  maxBytesPerSender: number;
  /** Most senders with incomplete messages held at once. */
  maxSenders: number;
  /**
   * Most bytes held for all senders together. Default: maxSenders * maxBytesPerSender (no extra
   * bound). Set it lower when that product is more memory than the process may spend on the network.
   */
  maxBytesTotal?: number;
}

/** Counters of a {@link Reassembly}. Fragments not counted here were used. */
export interface ReassemblyStats {
  /** Messages delivered whole. */
  completed: number;
  /** Fragments already held, or belonging to a message completed recently. */
  duplicates: number;
  /** Incomplete messages dropped by {@link Reassembly.expire}. */
  timedOut: number;
  /** First fragments refused because the sender's (or the sender table's) budget was full. */
  overBudget: number;
  /** Fragments that disagree with the first fragment seen of their message. */
  inconsistent: number;
}

interface PendingMessage {
  readonly fragmentCount: number;
  readonly messageLength: number;
  /** Payload bytes of every fragment but the last. */
  readonly fragmentSize: number;
  readonly buffer: Buffer;
  /** One byte per fragment: 1 once it arrived. */
  readonly received: Uint8Array;
  missing: number;
  lastProgressMs: number;
}

/** How many recently completed messages per sender are remembered to recognise late duplicates. */
const RECENTLY_COMPLETED = 32;

interface SenderState {
  readonly pending: Map<number, PendingMessage>;
  bytes: number;
  /** Ring of message keys completed lately (late duplicates must not start a new message). */
  readonly completed: number[];
  completedNext: number;
}

/** Message key: kind and message id (seq of fragment 0) in one safe integer. */
function messageKey(header: FrameHeader): number {
  return header.kind * 0x1_0000_0000 + ((header.seq - header.fragmentIndex) >>> 0);
}

/** Payload bytes of every fragment but the last, derived from any one fragment. */
function fragmentSizeOf(header: FrameHeader, payloadLength: number): number {
  if (header.fragmentIndex < header.fragmentCount - 1) return payloadLength;
  return (header.messageLength - payloadLength) / (header.fragmentCount - 1);
}

function checkPositive(name: string, value: number): void {
  if (!(Number.isFinite(value) && value > 0)) {
    throw new RangeError(`reassembly ${name} must be a positive number; got ${value}`);
  }
}

/**
 * Reassembles fragmented messages per (sender, kind, message id), in any order and with duplicates.
 * The buffer of a message is allocated when its first fragment arrives, sized by its message length
 * (already bounded by the frame codec) and only if the sender's budgets allow it.
 */
export class Reassembly {
  /** Counters, for metrics. */
  readonly stats: ReassemblyStats = {
    completed: 0,
    duplicates: 0,
    timedOut: 0,
    overBudget: 0,
    inconsistent: 0,
  };
  readonly #options: ReassemblyOptions;
  readonly #senders = new Map<number, SenderState>();
  readonly #maxBytesTotal: number;
  #heldBytes = 0;
  #heldMessages = 0;
  /**
   * Whether reassembly has the last {@link add}'s fragment: it stored it, completed a message with
   * it, or already held it (a duplicate of a held fragment or of a message completed recently). A
   * receiver marks a fragment's seq as received only then. A fragment refused for lack of budget, or
   * inconsistent with its message, must stay missing, so that it is asked for again; a duplicate
   * must count, or a retransmission of a fragment held since before its sender was known would
   * leave a gap that no resend could fill.
   */
  lastFragmentKept = false;

  constructor(options: ReassemblyOptions) {
    checkPositive('timeoutMs', options.timeoutMs);
    checkPositive('maxMessagesPerSender', options.maxMessagesPerSender);
    checkPositive('maxBytesPerSender', options.maxBytesPerSender);
    checkPositive('maxSenders', options.maxSenders);
    if (options.maxBytesTotal !== undefined) checkPositive('maxBytesTotal', options.maxBytesTotal);
    this.#options = { ...options };
    this.#maxBytesTotal = options.maxBytesTotal ?? options.maxSenders * options.maxBytesPerSender;
  }

  /** Bytes held in incomplete messages. */
  get heldBytes(): number {
    return this.#heldBytes;
  }

  /** Incomplete messages held. */
  get heldMessages(): number {
    return this.#heldMessages;
  }

  /**
   * Adds one fragment, as returned by FrameCodec.fromDatagram. Returns the whole message when its
   * last missing fragment arrives, else undefined. A message of one fragment is returned at once.
   */
  add(header: FrameHeader, payload: Uint8Array): Buffer | undefined {
    this.lastFragmentKept = false;
    if (header.fragmentCount <= 1) {
      this.lastFragmentKept = true;
      this.stats.completed++;
      return Buffer.from(payload);
    }
    if (!(header.fragmentIndex >= 0 && header.fragmentIndex < header.fragmentCount)) {
      this.stats.inconsistent++;
      return undefined;
    }
    const key = messageKey(header);
    let sender = this.#senders.get(header.sender);
    let message = sender?.pending.get(key);
    if (message === undefined) {
      if (sender?.completed.includes(key)) {
        this.stats.duplicates++;
        this.lastFragmentKept = true;
        return undefined;
      }
      sender ??= this.#senderFor(header.sender);
      if (sender === undefined) {
        this.stats.overBudget++;
        return undefined;
      }
      message = this.#start(sender, key, header, payload.length);
      if (message === undefined) return undefined;
    } else if (
      message.fragmentCount !== header.fragmentCount ||
      message.messageLength !== header.messageLength ||
      message.fragmentSize !== fragmentSizeOf(header, payload.length)
    ) {
      this.stats.inconsistent++;
      return undefined;
    }

    if (message.received[header.fragmentIndex] === 1) {
      this.stats.duplicates++;
      this.lastFragmentKept = true;
      return undefined;
    }
    message.received[header.fragmentIndex] = 1;
    this.lastFragmentKept = true;
    message.buffer.set(payload, header.fragmentIndex * message.fragmentSize);
    message.lastProgressMs = this.#options.clock.now();
    if (--message.missing > 0) return undefined;

    this.#release(sender!, key, message);
    sender!.completed[sender!.completedNext] = key;
    sender!.completedNext = (sender!.completedNext + 1) % RECENTLY_COMPLETED;
    this.stats.completed++;
    return message.buffer;
  }

  /**
   * Drops incomplete messages that received no fragment for timeoutMs (counted in timedOut), and
   * tells `onTimedOut` the sender, frame kind and number of fragments held of each: their seqs may
   * already count as received, so what the message carried is lost unless something else repairs it.
   */
  expire(onTimedOut?: (sender: number, kind: number, fragmentsHeld: number) => void): void {
    const deadline = this.#options.clock.now() - this.#options.timeoutMs;
    for (const [id, sender] of this.#senders) {
      for (const [key, message] of sender.pending) {
        if (message.lastProgressMs <= deadline) {
          this.#release(sender, key, message);
          this.stats.timedOut++;
          onTimedOut?.(id, Math.floor(key / 0x1_0000_0000), message.fragmentCount - message.missing);
        }
      }
    }
  }

  /** Frees everything held for a sender (member left or died). Not counted: nothing was lost in transit. */
  dropSender(sender: number): void {
    const state = this.#senders.get(sender);
    if (state === undefined) return;
    for (const [key, message] of state.pending) this.#release(state, key, message);
    this.#senders.delete(sender);
  }

  /** The state of a sender seen for the first time, or undefined when the table is full of busy senders. */
  #senderFor(id: number): SenderState | undefined {
    if (this.#senders.size >= this.#options.maxSenders) {
      // Forget an idle sender (nothing pending, only its recent-completions ring) to make room.
      let idle: number | undefined;
      for (const [candidate, state] of this.#senders) {
        if (state.pending.size === 0) {
          idle = candidate;
          break;
        }
      }
      if (idle === undefined) return undefined;
      this.#senders.delete(idle);
    }
    const state: SenderState = { pending: new Map(), bytes: 0, completed: [], completedNext: 0 };
    this.#senders.set(id, state);
    return state;
  }

  #start(
    sender: SenderState,
    key: number,
    header: FrameHeader,
    payloadLength: number,
  ): PendingMessage | undefined {
    const fragmentSize = fragmentSizeOf(header, payloadLength);
    // FrameCodec already checked this; checked again because add() is public.
    if (
      !Number.isInteger(fragmentSize) ||
      fragmentSize < 1 ||
      header.messageLength > (header.fragmentCount - 1) * fragmentSize + fragmentSize ||
      header.messageLength <= (header.fragmentCount - 1) * fragmentSize
    ) {
      this.stats.inconsistent++;
      return undefined;
    }
    if (
      sender.pending.size >= this.#options.maxMessagesPerSender ||
      sender.bytes + header.messageLength > this.#options.maxBytesPerSender ||
      this.#heldBytes + header.messageLength > this.#maxBytesTotal
    ) {
      this.stats.overBudget++;
      return undefined;
    }
    const message: PendingMessage = {
      fragmentCount: header.fragmentCount,
      messageLength: header.messageLength,
      fragmentSize,
      buffer: Buffer.allocUnsafe(header.messageLength),
      received: new Uint8Array(header.fragmentCount),
      missing: header.fragmentCount,
      lastProgressMs: this.#options.clock.now(),
    };
    sender.pending.set(key, message);
    sender.bytes += message.messageLength;
    this.#heldBytes += message.messageLength;
    this.#heldMessages++;
    return message;
  }

  #release(sender: SenderState, key: number, message: PendingMessage): void {
    sender.pending.delete(key);
    sender.bytes -= message.messageLength;
    this.#heldBytes -= message.messageLength;
    this.#heldMessages--;
  }
}
