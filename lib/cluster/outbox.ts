/**
 * Data ops waiting to be sent, already encoded, one after another in one growing byte log.
 *
 * The write path appends an op's wire bytes here and nothing else: no object, no Buffer, no map
 * entry per op. (A Map keyed by cache and key, an entry object and a copy of the value per op cost
 * more than the rest of a local write together.) A flush copies runs of records straight into the
 * message it fills.
 *
 * Coalescing by key (only the newest version of a key needs to go) is cheap for bursts on a few hot
 * keys: a write to a key among the 8 newest records replaces it. Beyond that it starts only when the
 * outbox is full: until then the flush drains it every event-loop turn, and a key written again far
 * apart in one turn goes twice. When the live records reach `maxOps` or the log reaches `maxBytes`, the outbox builds
 * an index by (cache, key), keeps only the newest record of each key, and maintains the index for
 * every later op until it is drained again. A new key that still finds the outbox full is dropped
 * and counted; the next anti-entropy pulse repairs it.
 */
import { DataOpWriter, Op, writeDataOpHead } from '../wire/ops.js';

/** Bounds of an {@link Outbox}. */
export interface OutboxLimits {
  /** Live (not superseded, not yet taken) records. */
  maxOps: number;
  /** Bytes of the log, superseded records included (they are reclaimed by compaction). */
  maxBytes: number;
}

/** A record's state. */
const LIVE = 1;
const DEAD = 0;

/** A write to a key among this many newest records replaces it, even before coalescing starts. */
const RECENT_RECORDS = 8;

/** Compact the log once at least this many bytes before the live part are wasted. */
const COMPACT_WASTE_BYTES = 1 << 20;

export class Outbox {
  private readonly log = new DataOpWriter();
  /** Per record, in append order: where it starts in the log; it ends where the next one starts. */
  private starts: number[] = [];
  private states: number[] = [];
  private caches: string[] = [];
  private keys: string[] = [];
  private tsms: number[] = [];
  private writers: number[] = [];
  /** Records appended; records [taken, count) are still to send. */
  private count = 0;
  private taken = 0;
  private liveCount = 0;
  /** Bytes of superseded records since the last compaction. */
  private deadBytes = 0;
  /** `${cache}\0${key}` -> record number; only while coalescing (see the module comment). */
  private index: Map<string, number> | undefined;
  /** Ops dropped because the outbox was full of distinct keys. */
  dropped = 0;
  /** Ops replaced by a newer op for the same key before they were sent. */
  coalesced = 0;

  constructor(private readonly limits: OutboxLimits) {}

  /** Live records waiting. */
  get size(): number {
    return this.liveCount;
  }

  /** Bytes in the log, including taken and superseded records not reclaimed yet. */
  get bytes(): number {
    return this.log.position;
  }

  /**
   * Appends a data op. `value` (INS/UPD only) is copied before this returns. Returns false if the
   * op was dropped (outbox full) or ignored (a newer op for the key is already queued).
   * Throws only for a programming error (an out-of-range tsm, writer, name or key).
   */
  add(
    op: number,
    cache: string,
    key: string,
    tsm: number,
    writer: number,
    crcHigh: number,
    crcLow: number,
    value: Uint8Array | undefined,
  ): boolean {
    const valueLength = value === undefined ? 0 : value.length;
    const { maxOps, maxBytes } = this.limits;
    if (
      this.index === undefined &&
      (this.liveCount >= maxOps || this.log.position + valueLength > maxBytes)
    ) {
      this.startCoalescing();
    }
    let superseded = -1;
    let id = '';
    if (this.index !== undefined) {
      // Reclaim taken and superseded records when that frees a good share of the budget.
      if (this.log.position + valueLength > maxBytes && this.wasteBytes() >= maxBytes / 4) this.compact();
      id = `${cache}\0${key}`;
      let queued = this.index.get(id);
      // The index is kept exact (takes and compaction update it); the check costs little and makes
      // sure a wrong entry could never mark another key's record superseded.
      if (queued !== undefined && !this.isQueued(queued, cache, key)) queued = undefined;
      if (queued !== undefined) {
        if (isNewerOrSame(this.tsms[queued]!, this.writers[queued]!, tsm, writer)) return false;
        superseded = queued;
      } else if (this.liveCount >= maxOps || this.log.position + valueLength > maxBytes) {
        // A new key finds the outbox full. (A newer version of a queued key is always taken: the
        // record it supersedes is reclaimed by the next compaction, so the log stays within
        // maxBytes plus a quarter plus one op.)
        this.dropped++;
        return false;
      }
    } else {
      // A burst on a few hot keys (a counter bumped in a loop) costs one op per key and flush.
      const stop = Math.max(this.taken, this.count - RECENT_RECORDS);
      for (let record = this.count - 1; record >= stop; record--) {
        if (this.keys[record] !== key || this.caches[record] !== cache || this.states[record] !== LIVE)
          continue;
        if (isNewerOrSame(this.tsms[record]!, this.writers[record]!, tsm, writer)) return false;
        superseded = record;
        break;
      }
    }
    if (superseded >= 0 && superseded === this.count - 1) {
      // The newest record itself: overwrite it in place rather than leave a dead record behind.
      const previousEnd = this.log.position;
      this.log.position = this.starts[superseded]!;
      try {
        writeDataOpHead(this.log, op, cache, key, tsm, writer, crcHigh, crcLow, valueLength);
      } catch (error) {
        this.log.position = previousEnd;
        throw error;
      }
      if (value !== undefined && (op === Op.INS || op === Op.UPD)) this.log.bytes(value);
      this.tsms[superseded] = tsm;
      this.writers[superseded] = writer;
      this.coalesced++;
      return true;
    }
    const start = this.log.position;
    // Throws before anything changed (validation comes first), so the outbox stays consistent.
    writeDataOpHead(this.log, op, cache, key, tsm, writer, crcHigh, crcLow, valueLength);
    if (value !== undefined && (op === Op.INS || op === Op.UPD)) this.log.bytes(value);
    if (superseded >= 0) {
      this.states[superseded] = DEAD;
      this.deadBytes += this.endOf(superseded) - this.starts[superseded]!;
      this.coalesced++;
    } else {
      this.liveCount++;
    }
    const record = this.count++;
    this.starts[record] = start;
    this.states[record] = LIVE;
    this.caches[record] = cache;
    this.keys[record] = key;
    this.tsms[record] = tsm;
    this.writers[record] = writer;
    this.index?.set(id, record);
    return true;
  }

  /** Size in bytes of the next live record, skipping superseded ones; 0 when empty. */
  nextSize(): number {
    // Reclaiming space waits until here: the view takeOne() handed out has been used by now.
    this.afterTake();
    return this.taken < this.count ? this.endOf(this.taken) - this.starts[this.taken]! : 0;
  }

  /**
   * Copies whole live records, in order, into `target` from `offset` while they fit before `limit`.
   * Returns the number of records copied (their bytes end at {@link lastEnd}). Copies runs of
   * consecutive live records with one copy each.
   */
  takeInto(target: Uint8Array, offset: number, limit: number): number {
    let copied = 0;
    let position = offset;
    const log = this.log.buffer;
    while (this.taken < this.count) {
      this.skipDead();
      if (this.taken >= this.count) break;
      // The longest run of live records from `taken` that fits.
      const runStart = this.starts[this.taken]!;
      let next = this.taken;
      let runEnd = runStart;
      while (next < this.count && this.states[next] === LIVE) {
        const end = this.endOf(next);
        if (position + (end - runStart) > limit) break;
        runEnd = end;
        next++;
      }
      if (next === this.taken) break;
      target.set(log.subarray(runStart, runEnd), position);
      position += runEnd - runStart;
      copied += next - this.taken;
      this.liveCount -= next - this.taken;
      this.unindex(this.taken, next);
      this.taken = next;
    }
    this.lastEnd = position;
    this.afterTake();
    return copied;
  }

  /** Where the bytes copied by the last {@link takeInto} end. */
  lastEnd = 0;

  /**
   * Takes the next live record by itself (one too large for a message's budget) and returns its bytes
   * as a view, valid until the next call to any other method; undefined when empty.
   */
  takeOne(): Uint8Array | undefined {
    this.skipDead();
    if (this.taken >= this.count) return undefined;
    const record = this.taken++;
    this.liveCount--;
    this.unindex(record, record + 1);
    // No reset or compaction here (see nextSize): they would move the bytes under the view.
    return this.log.buffer.subarray(this.starts[record]!, this.endOf(record));
  }

  /** Drops everything queued (counted by the caller, e.g. when a clear makes it moot). */
  clear(): void {
    this.reset();
  }

  /** True if `record` is a live, not yet taken record of (cache, key). */
  private isQueued(record: number, cache: string, key: string): boolean {
    return (
      record >= this.taken &&
      record < this.count &&
      this.states[record] === LIVE &&
      this.keys[record] === key &&
      this.caches[record] === cache
    );
  }

  /** Forgets the index entries of records [from, to) just taken (only while coalescing). */
  private unindex(from: number, to: number): void {
    const index = this.index;
    if (index === undefined) return;
    for (let record = from; record < to; record++) {
      const id = `${this.caches[record]}\0${this.keys[record]}`;
      if (index.get(id) === record) index.delete(id);
    }
  }

  /** Bytes before the first record still to send, plus superseded ones: what compaction frees. */
  private wasteBytes(): number {
    return (this.taken < this.count ? this.starts[this.taken]! : this.log.position) + this.deadBytes;
  }

  private endOf(record: number): number {
    return record + 1 < this.count ? this.starts[record + 1]! : this.log.position;
  }

  private skipDead(): void {
    while (this.taken < this.count && this.states[this.taken] === DEAD) this.taken++;
  }

  /** Drained: reuse the log from the start and leave coalescing mode. Else reclaim waste at times. */
  private afterTake(): void {
    this.skipDead();
    if (this.taken >= this.count) this.reset();
    else if (this.starts[this.taken]! >= COMPACT_WASTE_BYTES && this.taken * 2 >= this.count) this.compact();
  }

  private reset(): void {
    // Let the strings of sent ops be collected; the arrays keep their capacity.
    this.caches.fill('', 0, this.count);
    this.keys.fill('', 0, this.count);
    this.log.position = 0;
    this.count = 0;
    this.taken = 0;
    this.liveCount = 0;
    this.deadBytes = 0;
    this.index = undefined;
  }

  /** Indexes the queued records by key, marking all but the newest of each key superseded. */
  private startCoalescing(): void {
    const index = new Map<string, number>();
    for (let record = this.taken; record < this.count; record++) {
      if (this.states[record] !== LIVE) continue;
      const id = `${this.caches[record]}\0${this.keys[record]}`;
      const queued = index.get(id);
      if (queued !== undefined) {
        const keep = isNewerOrSame(
          this.tsms[queued]!,
          this.writers[queued]!,
          this.tsms[record]!,
          this.writers[record]!,
        );
        const loser = keep ? record : queued;
        this.states[loser] = DEAD;
        this.deadBytes += this.endOf(loser) - this.starts[loser]!;
        this.liveCount--;
        this.coalesced++;
        if (keep) continue;
      }
      index.set(id, record);
    }
    this.index = index;
    this.compact();
  }

  /** Moves the live records to the front of the log, and renumbers them (and the index). */
  private compact(): void {
    const buffer = this.log.buffer;
    if (this.index !== undefined) this.index = new Map();
    let write = 0;
    let kept = 0;
    for (let record = this.taken; record < this.count; record++) {
      if (this.states[record] !== LIVE) continue;
      const start = this.starts[record]!;
      const end = this.endOf(record);
      buffer.copyWithin(write, start, end);
      this.starts[kept] = write;
      this.states[kept] = LIVE;
      this.caches[kept] = this.caches[record]!;
      this.keys[kept] = this.keys[record]!;
      this.tsms[kept] = this.tsms[record]!;
      this.writers[kept] = this.writers[record]!;
      this.index?.set(`${this.caches[kept]}\0${this.keys[kept]}`, kept);
      write += end - start;
      kept++;
    }
    this.caches.fill('', kept, this.count);
    this.keys.fill('', kept, this.count);
    this.log.position = write;
    this.count = kept;
    this.taken = 0;
    this.liveCount = kept;
    this.deadBytes = 0;
  }
}

/** True if version (tsm, writer) a is newer than or the same as b: b then has nothing to add. */
function isNewerOrSame(tsmA: number, writerA: number, tsmB: number, writerB: number): boolean {
  return tsmA > tsmB || (tsmA === tsmB && writerA >= writerB);
}
