/**
 * A fixed-size latency histogram: constant memory however many samples arrive, good enough for
 * p50/p99 summaries. Buckets are 0.1 ms wide up to 10 ms, then 1 ms wide up to 10 s.
 */
const FINE_BUCKETS = 100;
const COARSE_BUCKETS = 10_000;

/** Replication latency in ms: time from a write on another member to its arrival here. */
export interface LatencySummary {
  /** Writes measured (first-hand writes from other members, since start). */
  count: number;
  /** Median, in ms (to 0.1 ms below 10 ms, to 1 ms above). */
  p50: number;
  /** 99th percentile, in ms. */
  p99: number;
  /** Largest seen, in ms. */
  max: number;
}

/** Collects latency samples in constant memory and summarises them. */
export class LatencyHistogram {
  private readonly fine = new Uint32Array(FINE_BUCKETS);
  private readonly coarse = new Uint32Array(COARSE_BUCKETS);
  private total = 0;
  private maximum = 0;

  /** Adds one sample, in ms (negative values count as 0). */
  record(ms: number): void {
    const value = Math.max(ms, 0);
    if (value < 10) this.fine[Math.floor(value * 10)]!++;
    else this.coarse[Math.min(COARSE_BUCKETS - 1, Math.floor(value))]!++;
    this.total++;
    if (value > this.maximum) this.maximum = value;
  }

  /** The value below which `fraction` of the samples fall (upper bucket edge), in ms. */
  quantile(fraction: number): number {
    if (this.total === 0) return 0;
    const rank = Math.ceil(this.total * fraction);
    let seen = 0;
    for (let i = 0; i < FINE_BUCKETS; i++) {
      seen += this.fine[i]!;
      if (seen >= rank) return Math.min((i + 1) / 10, this.maximum);
    }
    for (let i = 10; i < COARSE_BUCKETS; i++) {
      seen += this.coarse[i]!;
      if (seen >= rank) return Math.min(i + 1, this.maximum);
    }
    return this.maximum;
  }

  /** Count, p50, p99 and max of the samples so far. */
  summary(): LatencySummary {
    return { count: this.total, p50: this.quantile(0.5), p99: this.quantile(0.99), max: this.maximum };
  }

  /** Forgets every sample. */
  reset(): void {
    this.fine.fill(0);
    this.coarse.fill(0);
    this.total = 0;
    this.maximum = 0;
  }
}
