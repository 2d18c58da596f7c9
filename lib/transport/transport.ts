/**
 * The seam between the cluster engine and the network. The engine speaks only in whole datagrams
 * (already framed and, with a key, sealed); a transport moves them. Implementations: UDP multicast
 * ({@link ./udp-multicast.ts}) and a seeded in-memory network for tests ({@link ./memory-network.ts}).
 */

/** Counters every transport keeps. Network errors end up here, never as exceptions in user code. */
export interface TransportStats {
  /** Datagrams handed to the network. */
  sent: number;
  /** Datagrams delivered to the engine. */
  received: number;
  /** Sends that failed (EMSGSIZE, ENOBUFS, EHOSTUNREACH, closed socket...). */
  sendErrors: number;
  /** Datagrams dropped on purpose by TEST_MONKEY_TANTRUM, on send or on receive. */
  tantrumDropped: number;
}

/** A datagram transport. */
export interface Transport {
  /** Human-readable endpoint, e.g. `udp://224.0.0.3:4000 via 127.0.0.1`. */
  readonly description: string;
  /** Counters; the object is live and updated in place. */
  readonly stats: TransportStats;
  /**
   * Sends handed to the OS whose completion has not been reported yet. The engine holds its queue
   * (coalescing by key) while this is high instead of growing the OS's queue without bound.
   */
  readonly pendingSends: number;
  /**
   * The largest datagram (UDP payload bytes) the transport carries without IP fragmentation, when it
   * knows it after start(): the interface MTU minus IP and UDP headers. Undefined when unknown; the
   * engine then uses 1472, which fits a 1500-byte Ethernet MTU.
   */
  readonly maxDatagramBytes?: number | undefined;
  /**
   * Set by a transport that keeps trying after its start() failed (NATS while no server answers):
   * resolves once it is up. The engine then runs as usual meanwhile (sends are dropped and counted
   * by the transport) and the member joins the cluster when the network appears.
   */
  readonly whenConnected?: Promise<void> | undefined;
  /**
   * Opens the endpoint and starts delivering every received datagram to `onDatagram`, including this
   * process's own (the engine filters by node id). Rejects with a clear error if the endpoint cannot
   * be opened (bad interface address, port in use without reuse, and so on).
   */
  start(onDatagram: (datagram: Buffer) => void): Promise<void>;
  /** Sends one datagram to every member. Never throws: failures are counted in `stats.sendErrors`. */
  send(datagram: Uint8Array): void;
  /** Stops receiving and releases the endpoint. Idempotent. */
  close(): Promise<void>;
}
