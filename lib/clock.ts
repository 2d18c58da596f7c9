/**
 * Time for every layer: the wall clock, timers, and the hybrid logical clock that stamps writes.
 *
 * Everything that reads the time or sets a timer takes a {@link Clock}, so tests can swap in a
 * {@link ManualClock} and run thousands of timed events deterministically in virtual time.
 */

/** A cancellable timer handle returned by {@link Clock.setTimeout}. */
export interface TimerHandle {
  /** Stops the timer if it has not fired yet; harmless to call again or after it fired. */
  cancel(): void;
}

/** The wall clock plus timers. Implementations: {@link SystemClock} and {@link ManualClock}. */
export interface Clock {
  /** Milliseconds since the Unix epoch (may be fractional). */
  now(): number;
  /**
   * Runs `callback` after `delayMs`. Real timers are unref'd so they never keep a process alive,
   * unless `keepAlive`: a timer that settles a promise the user awaits (a cluster query) must, or a
   * short script awaiting it would just exit.
   */
  setTimeout(callback: () => void, delayMs: number, keepAlive?: boolean): TimerHandle;
}

/** The real clock: Date.now() and unref'd node timers. */
export class SystemClock implements Clock {
  now(): number {
    return Date.now();
  }

  setTimeout(callback: () => void, delayMs: number, keepAlive = false): TimerHandle {
    const timer = setTimeout(callback, delayMs);
    if (!keepAlive) timer.unref();
    return { cancel: () => clearTimeout(timer) };
  }
}

interface ManualTimer {
  at: number;
  order: number;
  callback: () => void;
  cancelled: boolean;
}

function earlier(a: ManualTimer, b: ManualTimer): boolean {
  return a.at < b.at || (a.at === b.at && a.order < b.order);
}

/**
 * A virtual clock for tests. Time moves only when {@link ManualClock.advance} is called, and due
 * timers run in (time, creation) order, so a run is a pure function of its inputs. Timers sit in
 * a binary heap: simulated clusters schedule hundreds of thousands of them.
 */
export class ManualClock implements Clock {
  private current: number;
  private nextOrder = 0;
  private readonly heap: ManualTimer[] = [];
  private live = 0;

  constructor(startMs = 1_700_000_000_000) {
    this.current = startMs;
  }

  now(): number {
    return this.current;
  }

  setTimeout(callback: () => void, delayMs: number): TimerHandle {
    const timer: ManualTimer = {
      at: this.current + Math.max(0, delayMs),
      order: this.nextOrder++,
      callback,
      cancelled: false,
    };
    this.push(timer);
    this.live++;
    return {
      cancel: () => {
        if (!timer.cancelled) {
          timer.cancelled = true;
          this.live--;
        }
      },
    };
  }

  /** Number of timers still waiting to fire. */
  get pendingTimers(): number {
    return this.live;
  }

  /** Moves time forward by `ms`, firing every timer that falls due on the way, in order. */
  advance(ms: number): void {
    const end = this.current + ms;
    for (;;) {
      const next = this.heap[0];
      if (!next || next.at > end) break;
      this.pop();
      if (next.cancelled) continue;
      next.cancelled = true;
      this.live--;
      if (next.at > this.current) this.current = next.at;
      next.callback();
    }
    this.current = end;
  }

  private push(timer: ManualTimer): void {
    const heap = this.heap;
    heap.push(timer);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!earlier(heap[i]!, heap[parent]!)) break;
      [heap[i], heap[parent]] = [heap[parent]!, heap[i]!];
      i = parent;
    }
  }

  private pop(): void {
    const heap = this.heap;
    const last = heap.pop()!;
    if (heap.length === 0) return;
    heap[0] = last;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let smallest = i;
      if (left < heap.length && earlier(heap[left]!, heap[smallest]!)) smallest = left;
      if (right < heap.length && earlier(heap[right]!, heap[smallest]!)) smallest = right;
      if (smallest === i) break;
      [heap[i], heap[smallest]] = [heap[smallest]!, heap[i]!];
      i = smallest;
    }
  }
}

/**
 * Bits of an HLC timestamp kept for the logical counter. A timestamp is
 * `physicalMs * 2^COUNTER_BITS + counter`, a plain number that stays exact below 2^53 until the
 * year 2248 and orders like the pair (physical, counter).
 */
export const HLC_COUNTER_BITS = 10;
const COUNTER_SPAN = 2 ** HLC_COUNTER_BITS;

/** Wall-clock milliseconds of an HLC timestamp. */
export function hlcToMillis(tsm: number): number {
  return Math.floor(tsm / COUNTER_SPAN);
}

/** The smallest HLC timestamp at the given wall-clock milliseconds. */
export function millisToHlc(ms: number): number {
  return Math.floor(ms) * COUNTER_SPAN;
}

/**
 * How far ahead of the local wall clock a remote timestamp may be, in ms: 60 s, the same window as
 * the Fernet token check (Python's `_MAX_CLOCK_SKEW`). A stamp further ahead is refused by
 * {@link HybridLogicalClock.observe}: merging it would drag every later local stamp along (a stamp
 * near 2^53 would leave no room for the next one on the wire), and a member whose clock runs hours
 * ahead would win every conflict. This is the HLC's bound on drift (Kulkarni et al.) and
 * CockroachDB's max offset.
 */
export const MAX_CLOCK_SKEW_MS = 60_000;

/**
 * A hybrid logical clock (Kulkarni et al.): wall time plus a counter. Local events always move
 * forward even if the wall clock steps back, and after observing a remote timestamp every later
 * local event is stamped after it, so a write caused by another can never lose to it because of
 * clock skew. Remote timestamps more than {@link MAX_CLOCK_SKEW_MS} ahead are refused.
 */
export class HybridLogicalClock {
  private last = 0;
  /**
   * The largest timestamp within the skew bound as of the last clock read (-1 before the first):
   * observe() reads the clock only when a stamp passes it. The wall clock moves forward, so a stale
   * ceiling is too low, never too high, and a refusal is always confirmed by a fresh read (only a
   * wall clock stepped back since that read lets a stamp up to the step further ahead through).
   */
  private ceiling = -1;

  constructor(private readonly clock: Clock) {}

  /** A timestamp for a local event, strictly greater than every one issued or observed before. */
  tick(): number {
    const wall = millisToHlc(this.clock.now());
    this.last = wall > this.last ? wall : this.last + 1;
    return this.last;
  }

  /**
   * Merges a timestamp received from another member so that later local events follow it, and
   * returns true; or returns false and leaves the clock unchanged if the stamp is too far ahead:
   * newer than every stamp issued or observed so far, and `hlcToMillis(remote)` more than
   * {@link MAX_CLOCK_SKEW_MS} after the local wall clock's whole milliseconds. A stamp exactly
   * MAX_CLOCK_SKEW_MS ahead (any counter) is accepted; one a millisecond later is refused.
   */
  observe(remote: number): boolean {
    if (remote > this.last) {
      if (remote > this.ceiling && remote > this.refreshCeiling()) return false;
      this.last = remote;
    }
    return true;
  }

  /** The latest timestamp issued or observed. */
  peek(): number {
    return this.last;
  }

  private refreshCeiling(): number {
    this.ceiling = millisToHlc(this.clock.now() + MAX_CLOCK_SKEW_MS + 1) - 1;
    return this.ceiling;
  }
}
