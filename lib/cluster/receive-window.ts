/**
 * What one member has received of another member's DATA stream, NAKACK2-style: everything up to
 * `contiguous` is in, plus a bounded set of seqs above it. Gaps between `contiguous` and `highest`
 * are what we ask the sender to retransmit.
 *
 * Delivery does not need to be in order: every data op carries its own last-write-wins timestamp,
 * so ops are applied as they arrive and the window only has to know what is still missing.
 */

/** Inclusive seq ranges. */
export type SeqRange = [first: number, last: number];

export class ReceiveWindow {
  /** Every seq up to and including this one has been received (or given up on). */
  contiguous: number;
  /** The highest seq known to exist, from a frame or from the sender's heartbeat. */
  highest: number;
  private readonly above = new Set<number>();

  /**
   * @param startAfter seqs up to this one are treated as received: they predate our contact with
   *   the sender and are covered by state transfer and anti-entropy instead.
   * @param maxSpan the most seqs we track past `contiguous`; beyond it we give up on the oldest gap.
   */
  constructor(
    startAfter: number,
    private readonly maxSpan: number,
  ) {
    this.contiguous = startAfter;
    this.highest = startAfter;
  }

  /** True if `seq` was already received (or given up on). */
  has(seq: number): boolean {
    return seq <= this.contiguous || this.above.has(seq);
  }

  /** Records a seq. Returns false for a duplicate. */
  accept(seq: number): boolean {
    if (seq <= this.contiguous || this.above.has(seq)) return false;
    if (seq > this.highest) this.highest = seq;
    if (seq === this.contiguous + 1) {
      this.contiguous = seq;
      this.advance();
    } else {
      this.above.add(seq);
    }
    return true;
  }

  /** Learns from a heartbeat that the sender has sent up to `seq` (reveals lost tail frames). */
  noteHighest(seq: number): void {
    if (seq > this.highest) this.highest = seq;
  }

  /** Gives up on everything up to `seq` (the sender no longer holds it). Returns how many seqs were skipped. */
  skipTo(seq: number): number {
    if (seq <= this.contiguous) return 0;
    // Count via the (small) set, never by walking seqs: `seq` may be far ahead.
    let alreadyHad = 0;
    for (const s of this.above) {
      if (s <= seq) {
        this.above.delete(s);
        alreadyHad++;
      }
    }
    const skipped = seq - this.contiguous - alreadyHad;
    this.contiguous = seq;
    if (seq > this.highest) this.highest = seq;
    this.advance();
    return skipped;
  }

  /** True if some seq up to `highest` is missing. */
  get hasGaps(): boolean {
    return this.highest > this.contiguous;
  }

  /** Seqs tracked beyond `contiguous`: past maxSpan the caller should skip and resynchronise. */
  get overflowing(): boolean {
    return this.highest - this.contiguous > this.maxSpan;
  }

  /** The missing seqs as ranges, at most `maxRanges` of them, oldest first. */
  missing(maxRanges: number): SeqRange[] {
    const ranges: SeqRange[] = [];
    const present = [...this.above].sort((a, b) => a - b);
    let next = this.contiguous + 1;
    for (const seq of present) {
      if (ranges.length >= maxRanges) return ranges;
      if (seq > next) ranges.push([next, seq - 1]);
      next = seq + 1;
    }
    if (next <= this.highest && ranges.length < maxRanges) ranges.push([next, this.highest]);
    return ranges;
  }

  private advance(): void {
    while (this.above.delete(this.contiguous + 1)) this.contiguous++;
  }
}
