/**
 * The sender's copy of its recent DATA frames, kept until every live member has them (STABLE) or
 * until the bounds push them out. Frames are kept unsealed: a retransmission is sealed afresh, so
 * its token timestamp is current and the replay window never rejects a legitimate resend.
 */
export interface RetransmitBufferStats {
  /** Frames dropped to respect the bounds before every member had them. */
  evicted: number;
  /** Frames freed because every member acknowledged them. */
  stable: number;
}

export class RetransmitBuffer {
  private readonly frames = new Map<number, Uint8Array>();
  private oldest = 1;
  private bytesHeld = 0;
  readonly stats: RetransmitBufferStats = { evicted: 0, stable: 0 };

  constructor(
    private readonly maxFrames: number,
    private readonly maxBytes: number,
  ) {}

  /** Keeps a frame sent with `seq` (seqs arrive in increasing order). */
  add(seq: number, frame: Uint8Array): void {
    if (this.frames.size === 0) this.oldest = seq;
    this.frames.set(seq, frame);
    this.bytesHeld += frame.length;
    while (this.frames.size > this.maxFrames || this.bytesHeld > this.maxBytes) {
      this.dropOldest();
      this.stats.evicted++;
    }
  }

  get(seq: number): Uint8Array | undefined {
    return this.frames.get(seq);
  }

  /** The lowest seq still held, or `nextSeq` when empty: anything below it can no longer be resent. */
  lowestRetained(nextSeq: number): number {
    return this.frames.size === 0 ? nextSeq : this.oldest;
  }

  /** Frees every frame up to and including `seq`: all members have them. */
  releaseUpTo(seq: number): void {
    while (this.frames.size > 0 && this.oldest <= seq) {
      this.dropOldest();
      this.stats.stable++;
    }
  }

  get size(): number {
    return this.frames.size;
  }

  get bytes(): number {
    return this.bytesHeld;
  }

  private dropOldest(): void {
    const frame = this.frames.get(this.oldest);
    if (frame) {
      this.frames.delete(this.oldest);
      this.bytesHeld -= frame.length;
    }
    this.oldest++;
  }
}
