/**
 * TEST_MONKEY_TANTRUM: drop a share of datagrams on purpose, to prove that the layers above repair
 * loss. Unlike the Python original (where it only worked at debug level 3), it works at any log level.
 */

/** Decides, datagram by datagram, whether a tantrum drops it. */
export class Tantrum {
  private readonly threshold: number;

  /**
   * @param percent share of datagrams to drop, 0..100 (0 turns the tantrum off).
   * @param random uniform numbers in [0, 1); inject a seeded one for reproducible tests.
   */
  constructor(
    percent: number,
    private readonly random: () => number = Math.random,
  ) {
    if (!Number.isFinite(percent) || percent < 0 || percent > 100) {
      throw new RangeError(`tantrumPercent must be a number from 0 to 100, got ${percent}`);
    }
    this.threshold = percent / 100;
  }

  /** True when at least some datagrams are dropped, so callers can skip the check entirely otherwise. */
  get active(): boolean {
    return this.threshold > 0;
  }

  /** Draws once: true means drop this datagram. */
  drop(): boolean {
    return this.threshold > 0 && this.random() < this.threshold;
  }
}
