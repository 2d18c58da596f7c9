/**
 * Sends handed to the OS whose callbacks have not fired yet: the transports' `pendingSends`, and
 * what close() waits for so that a last datagram such as BYE still leaves.
 */
export class OutstandingSends {
  private outstanding = 0;
  private onIdle: (() => void) | undefined;

  get count(): number {
    return this.outstanding;
  }

  started(): void {
    this.outstanding++;
  }

  finished(): void {
    if (this.outstanding > 0) this.outstanding--;
    if (this.outstanding === 0) this.onIdle?.();
  }

  /** Resolves once every send has finished, or after `timeoutMs` (an unref'd timer). */
  async settle(timeoutMs: number): Promise<void> {
    if (this.outstanding === 0) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      timer.unref();
      this.onIdle = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.onIdle = undefined;
  }

  /** Callbacks of sends still queued when a socket closes never fire: forget them. */
  abandon(): void {
    this.outstanding = 0;
  }
}
