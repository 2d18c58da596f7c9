/**
 * A transport whose implementation is loaded when it starts, so that a dependency only some users
 * need (the nats client) is never imported by the others.
 */
import type { Transport, TransportStats } from './transport.js';

export class LazyTransport implements Transport {
  private inner: Transport | undefined;
  private readonly idleStats: TransportStats = { sent: 0, received: 0, sendErrors: 0, tantrumDropped: 0 };

  constructor(
    readonly description: string,
    private readonly load: () => Promise<Transport>,
  ) {}

  get stats(): TransportStats {
    return this.inner?.stats ?? this.idleStats;
  }

  get pendingSends(): number {
    return this.inner?.pendingSends ?? 0;
  }

  get maxDatagramBytes(): number | undefined {
    return this.inner?.maxDatagramBytes;
  }

  get whenConnected(): Promise<void> | undefined {
    return this.inner?.whenConnected;
  }

  async start(onDatagram: (datagram: Buffer) => void): Promise<void> {
    this.inner = await this.load();
    await this.inner.start(onDatagram);
  }

  send(datagram: Uint8Array): void {
    if (this.inner) this.inner.send(datagram);
    else this.idleStats.sendErrors++;
  }

  async close(): Promise<void> {
    await this.inner?.close();
  }
}
