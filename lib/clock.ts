/**
 * Time for every layer: the wall clock, timers, and the hybrid logical clock that stamps writes.
 *
 * Everything that reads the time or sets a timer takes a {@link Clock}, so tests can swap in a
 * {@link ManualClock} and run thousands of timed events deterministically in virtual time.
 */

/** A cancellable timer handle returned by {@link Clock.setTimeout}. */
export interface TimerHandle {
  cancel(): void;
}

/** The wall clock plus timers. Implementations: {@link SystemClock} and {@link ManualClock}. */
export interface Clock {
  /** Milliseconds since the Unix epoch (may be fractional). */
  now(): number;
  /** Runs `callback` after `delayMs`. Real timers are unref'd so they never keep a process alive. */
  setTimeout(callback: () => void, delayMs: number): TimerHandle;
}

/** The real clock: Date.now() and unref'd node timers. */
export class SystemClock implements Clock {
  now(): number {
    return Date.now();
  }

  setTimeout(callback: () => void, delayMs: number): TimerHandle {
    const timer = setTimeout(callback, delayMs);
    timer.unref();
    return { cancel: () => clearTimeout(timer) };
  }
}

interface ManualTimer {
  at: number;
  order: number;
  callback: () => void;
  cancelled: boolean;
}

/**
 * A virtual clock for tests. Time moves only when {@link ManualClock.advance} is called, and due
 * timers run in (time, creation) order, so a run is a pure function of its inputs.
 */
export class ManualClock implements Clock {
  private current: number;
  private nextOrder = 0;
  private timers: ManualTimer[] = [];

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
    this.timers.push(timer);
    return {
      cancel: () => {
        timer.cancelled = true;
      },
    };
  }

  /** Number of timers still waiting to fire. */
  get pendingTimers(): number {
    return this.timers.reduce((n, t) => n + (t.cancelled ? 0 : 1), 0);
  }

  /** Moves time forward by `ms`, firing every timer that falls due on the way, in order. */
  advance(ms: number): void {
    const end = this.current + ms;
    for (;;) {
      let nextIndex = -1;
      for (let i = 0; i < this.timers.length; i++) {
        const t = this.timers[i]!;
        if (t.cancelled || t.at > end) continue;
        const best = nextIndex < 0 ? undefined : this.timers[nextIndex]!;
        if (!best || t.at < best.at || (t.at === best.at && t.order < best.order)) nextIndex = i;
      }
      if (nextIndex < 0) break;
      const [timer] = this.timers.splice(nextIndex, 1);
      this.current = Math.max(this.current, timer!.at);
      timer!.callback();
    }
    this.timers = this.timers.filter((t) => !t.cancelled);
    this.current = end;
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
 * A hybrid logical clock (Kulkarni et al.): wall time plus a counter. Local events always move
 * forward even if the wall clock steps back, and after observing a remote timestamp every later
 * local event is stamped after it, so a write caused by another can never lose to it because of
 * clock skew.
 */
export class HybridLogicalClock {
  private last = 0;

  constructor(private readonly clock: Clock) {}

  /** A timestamp for a local event, strictly greater than every one issued or observed before. */
  tick(): number {
    const wall = millisToHlc(this.clock.now());
    this.last = wall > this.last ? wall : this.last + 1;
    return this.last;
  }

  /** Merges a timestamp received from another member so that later local events follow it. */
  observe(remote: number): void {
    if (remote > this.last) this.last = remote;
  }

  /** The latest timestamp issued or observed. */
  peek(): number {
    return this.last;
  }
}
