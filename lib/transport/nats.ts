/**
 * NATS as the datagram carrier, for clusters that span networks or data centres where neither
 * multicast nor a full unicast mesh is practical. Every member publishes to and subscribes to one
 * subject per cluster, {@link natsSubjectFor}; frames and encryption are the same as over UDP, so the
 * server sees only the same (sealed, with a key) bytes. Core NATS is at-most-once, like UDP: the
 * engine's NAKs and anti-entropy repair what an outage loses.
 *
 * If no server answers at start, start() rejects with an error naming the URL, and the transport keeps
 * trying every `reconnectTimeWaitMs` in the background ({@link NatsTransport.whenConnected}): a member
 * started before its server joins the cluster when the server appears, without a restart.
 *
 * The client keeps reconnecting forever. While it is disconnected, {@link NatsTransport.send} drops the
 * datagram and counts it in `sendErrors` instead of handing it to the client, whose own reconnect
 * buffer has no bound between reconnect attempts.
 *
 * Unlike the UDP transports, an open NATS connection keeps the process alive until {@link close}
 * (the client's socket and ping timer are not unref'd and are not ours to change).
 */
import { connect, Events, type Msg, type NatsConnection, type NatsError, type Status } from 'nats';
import { type Clock, SystemClock, type TimerHandle } from '../clock.js';
import { Tantrum } from './tantrum.js';
import type { Transport, TransportStats } from './transport.js';

/** Options of {@link NatsTransport}. */
export interface NatsTransportOptions {
  /** Server URL(s), comma-separated, e.g. `nats://10.0.0.5:4222,nats://10.0.0.6:4222`. */
  url: string;
  /** Cluster name; selects the subject, see {@link natsSubjectFor}. */
  cluster: string;
  /** Told about outages, reconnects and server errors, which are survived. */
  onWarning?: (message: string) => void;
  /** Times the "still disconnected" reminders. Default: the system clock (unref'd timers). */
  clock?: Clock;
  /** TEST_MONKEY_TANTRUM: percentage of datagrams dropped on send and on receive. Default 0. */
  tantrumPercent?: number;
  /** Uniform numbers in [0, 1) for the tantrum; inject a seeded one for reproducible tests. */
  random?: () => number;
  /** Bound on each first connection attempt per server, in ms. Default 5000. */
  connectTimeoutMs?: number;
  /** Wait between reconnect attempts, in ms. Default 1000. */
  reconnectTimeWaitMs?: number;
  /** Interval of the "still disconnected" warning during an outage, in ms. Default 30000. */
  outageWarningIntervalMs?: number;
}

/** Counters of {@link NatsTransport}: the common ones plus connection health. */
export interface NatsTransportStats extends TransportStats {
  /** Connections lost since start. */
  disconnects: number;
  /** Connections re-established since start. */
  reconnects: number;
  /** Asynchronous errors reported by the server (permissions, slow consumer, ...). */
  serverErrors: number;
  /** First-connection attempts that failed (the one in start() and the background retries after it). */
  failedConnectAttempts: number;
  /** Exceptions thrown by the datagram handler, caught so that they never reach the client. */
  handlerErrors: number;
}

/** Default {@link NatsTransportOptions.connectTimeoutMs}. */
export const DEFAULT_NATS_CONNECT_TIMEOUT_MS = 5000;
/** Default {@link NatsTransportOptions.reconnectTimeWaitMs}. */
export const DEFAULT_NATS_RECONNECT_TIME_WAIT_MS = 1000;
/** Default {@link NatsTransportOptions.outageWarningIntervalMs}. */
export const DEFAULT_NATS_OUTAGE_WARNING_INTERVAL_MS = 30_000;
/** How long close() waits for the last datagrams to reach the server. */
const CLOSE_FLUSH_TIMEOUT_MS = 2000;

/**
 * The subject of a cluster: `mccache.<cluster>`, where every character of the cluster name other than
 * `A-Z a-z 0-9 _ -` becomes `_` (NATS gives `.`, `*`, `>` and whitespace a meaning). Two names that
 * sanitize alike share a subject; that costs bandwidth only, because every frame carries the full
 * cluster name and the engine drops foreign clusters.
 */
export function natsSubjectFor(cluster: string): string {
  if (cluster === '') throw new TypeError('Invalid cluster name "": expected a non-empty name');
  return `mccache.${cluster.replace(/[^A-Za-z0-9_-]/g, '_')}`;
}

/** Publishes and receives datagrams on the cluster's NATS subject; see the module comment. */
export class NatsTransport implements Transport {
  readonly description: string;
  /** The NATS subject every member of the cluster publishes to and subscribes to. */
  readonly subject: string;
  readonly stats: NatsTransportStats = {
    sent: 0,
    received: 0,
    sendErrors: 0,
    tantrumDropped: 0,
    disconnects: 0,
    reconnects: 0,
    serverErrors: 0,
    handlerErrors: 0,
    failedConnectAttempts: 0,
  };
  /** Resolves once connected, however late (see the module comment); never rejects. */
  readonly whenConnected: Promise<void>;
  private markConnected: () => void = () => {};
  private retryTimer: TimerHandle | undefined;
  private firstFailureAt = 0;

  private readonly url: string;
  private readonly servers: string[];
  private readonly tantrum: Tantrum;
  private readonly warn: (message: string) => void;
  private readonly clock: Clock;
  private readonly connectTimeoutMs: number;
  private readonly reconnectTimeWaitMs: number;
  private readonly outageWarningIntervalMs: number;

  private connection: NatsConnection | undefined;
  private onDatagram: ((datagram: Buffer) => void) | undefined;
  private connected = false;
  private closing = false;
  private started = false;
  /** Publishes so far, and how many of them the server has confirmed with a flush (PING/PONG). */
  private published = 0;
  private confirmed = 0;
  private flushing = false;
  private outageStartedAt = 0;
  private sendErrorsAtOutageStart = 0;
  private outageReminder: TimerHandle | undefined;

  constructor(options: NatsTransportOptions) {
    this.servers = options.url
      .split(',')
      .map((server) => server.trim())
      .filter((server) => server !== '');
    if (this.servers.length === 0 || this.servers.some((server) => /\s/.test(server))) {
      throw new TypeError(
        `Invalid NATS url ${JSON.stringify(options.url)}: expected one or more comma-separated server URLs ` +
          'such as nats://127.0.0.1:4222',
      );
    }
    this.url = this.servers.join(',');
    this.subject = natsSubjectFor(options.cluster);
    this.tantrum = new Tantrum(options.tantrumPercent ?? 0, options.random);
    this.warn = options.onWarning ?? (() => {});
    this.clock = options.clock ?? new SystemClock();
    this.connectTimeoutMs = positive(
      'connectTimeoutMs',
      options.connectTimeoutMs,
      DEFAULT_NATS_CONNECT_TIMEOUT_MS,
    );
    this.reconnectTimeWaitMs = positive(
      'reconnectTimeWaitMs',
      options.reconnectTimeWaitMs,
      DEFAULT_NATS_RECONNECT_TIME_WAIT_MS,
    );
    this.outageWarningIntervalMs = positive(
      'outageWarningIntervalMs',
      options.outageWarningIntervalMs,
      DEFAULT_NATS_OUTAGE_WARNING_INTERVAL_MS,
    );
    this.description = `nats ${this.url} subject ${this.subject}`;
    this.whenConnected = new Promise((resolve) => {
      this.markConnected = resolve;
    });
  }

  /**
   * Datagrams published but not yet confirmed by the server (a flush round trip), so the engine holds
   * its queue while the connection is slow instead of growing the client's buffer.
   */
  get pendingSends(): number {
    return this.published - this.confirmed;
  }

  /** True while connected to a server. */
  get isConnected(): boolean {
    return this.connected;
  }

  /**
   * Connects (one bounded attempt per server), subscribes, and resolves once connected. When no
   * server answers it rejects with an error naming the URL, and keeps trying in the background
   * ({@link whenConnected}); after the first connection, outages are survived and reported.
   */
  async start(onDatagram: (datagram: Buffer) => void): Promise<void> {
    if (this.started) throw new Error(`${this.description}: start() may be called only once`);
    this.started = true;
    this.onDatagram = onDatagram;
    let connection: NatsConnection;
    try {
      connection = await this.connectOnce();
    } catch (error) {
      this.stats.failedConnectAttempts++;
      this.firstFailureAt = this.clock.now();
      this.retryLater();
      throw new Error(
        `Cannot connect to NATS at ${this.url} (MCCACHE_NATS_URL): ${(error as Error).message}. ` +
          'Is nats-server running and reachable from here? mccache keeps trying every ' +
          `${this.reconnectTimeWaitMs} ms and joins the cluster once the server answers.`,
        { cause: error },
      );
    }
    await this.adopt(connection);
  }

  private connectOnce(): Promise<NatsConnection> {
    return connect({
      servers: this.servers,
      name: `mccache ${this.subject}`,
      timeout: this.connectTimeoutMs,
      maxReconnectAttempts: -1,
      reconnectTimeWait: this.reconnectTimeWaitMs,
      // Detect a silently dead server within ~30 s, not the client's default of minutes.
      pingInterval: 10_000,
      maxPingOut: 3,
    });
  }

  /** Takes a fresh connection into use: subscribe, watch its status, and tell whenConnected. */
  private async adopt(connection: NatsConnection): Promise<void> {
    if (this.closing) {
      await connection.close();
      return;
    }
    this.connection = connection;
    this.connected = true;
    void this.watchStatus(connection.status());
    // Echo stays on (the default): like multicast loopback, a member receives its own datagrams.
    connection.subscribe(this.subject, { callback: this.receive });
    this.markConnected();
    // The subscription reaches the server with this round trip; a failure here is a lost
    // connection, which the status watcher reports and the client repairs.
    await connection.flush().catch(() => {});
  }

  /** One more first-connection attempt after reconnectTimeWaitMs (unref'd timers: never keeps a process alive). */
  private retryLater(): void {
    if (this.closing) return;
    this.retryTimer = this.clock.setTimeout(() => {
      this.retryTimer = undefined;
      if (this.closing) return;
      this.connectOnce()
        .then(
          (connection) => {
            const seconds = ((this.clock.now() - this.firstFailureAt) / 1000).toFixed(1);
            if (!this.closing) {
              this.warn(
                `${this.description}: connected after ${this.stats.failedConnectAttempts} failed attempts (${seconds} s)`,
              );
            }
            return this.adopt(connection);
          },
          (error: Error) => {
            this.stats.failedConnectAttempts++;
            const elapsed = this.clock.now() - this.firstFailureAt;
            // One line at the first retry, then one per outage-warning interval, not one per attempt.
            if (
              this.stats.failedConnectAttempts === 2 ||
              elapsed % this.outageWarningIntervalMs < this.reconnectTimeWaitMs
            ) {
              this.warn(
                `${this.description}: still cannot connect after ${Math.round(elapsed / 1000)} s (${error.message}); retrying`,
              );
            }
            this.retryLater();
          },
        )
        .catch((error: Error) =>
          this.warn(`${this.description}: could not take the late connection into use: ${error.message}`),
        );
    }, this.reconnectTimeWaitMs);
  }

  /** Publishes one datagram to the cluster's subject. Never throws; dropped while disconnected. */
  send(datagram: Uint8Array): void {
    const connection = this.connection;
    if (!connection || !this.connected || this.closing) {
      this.stats.sendErrors++;
      return;
    }
    if (this.tantrum.active && this.tantrum.drop()) {
      this.stats.tantrumDropped++;
      return;
    }
    try {
      connection.publish(this.subject, datagram);
    } catch {
      // MAX_PAYLOAD_EXCEEDED (server max_payload, 1 MiB by default), or the connection just closed.
      this.stats.sendErrors++;
      return;
    }
    this.stats.sent++;
    this.published++;
    if (!this.flushing) this.confirmPublished(connection);
  }

  /** Flushes what was published (bounded wait), then closes the connection. Idempotent. */
  async close(): Promise<void> {
    if (this.closing && !this.connection) return;
    this.closing = true;
    this.outageReminder?.cancel();
    this.outageReminder = undefined;
    this.retryTimer?.cancel();
    this.retryTimer = undefined;
    const connection = this.connection;
    this.connection = undefined;
    if (!connection) return;
    if (this.connected) {
      // Let the BYE and other last datagrams reach the server, but never hang on a dying connection.
      // A real timer, not the injected clock: this bounds real I/O.
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, CLOSE_FLUSH_TIMEOUT_MS);
        timer.unref();
      });
      await Promise.race([connection.flush().catch(() => {}), timeout]);
      clearTimeout(timer);
    }
    this.connected = false;
    await connection.close().catch(() => {});
    this.confirmed = this.published;
  }

  /** One flush round trip at a time; publishes made meanwhile are confirmed by the next one. */
  private confirmPublished(connection: NatsConnection): void {
    this.flushing = true;
    const upTo = this.published;
    connection.flush().then(
      () => {
        this.confirmed = Math.max(this.confirmed, upTo);
        this.flushing = false;
        if (this.published > this.confirmed && this.connected && !this.closing)
          this.confirmPublished(connection);
      },
      () => {
        // Lost with the connection: whatever was unconfirmed is now unknowable; the engine repairs it.
        this.confirmed = this.published;
        this.flushing = false;
      },
    );
  }

  private readonly receive = (error: NatsError | null, message: Msg): void => {
    if (error) {
      this.warn(`${this.description}: subscription error ${error.message}`);
      return;
    }
    if (this.tantrum.active && this.tantrum.drop()) {
      this.stats.tantrumDropped++;
      return;
    }
    this.stats.received++;
    const data = message.data;
    try {
      this.onDatagram?.(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    } catch (failure) {
      // An exception escaping into the client would stop its reader and stall the connection for good.
      this.stats.handlerErrors++;
      this.warn(`${this.description}: datagram handler threw ${(failure as Error).message}`);
    }
  };

  private async watchStatus(statuses: AsyncIterable<Status>): Promise<void> {
    try {
      for await (const status of statuses) this.onStatus(status);
    } catch (error) {
      this.warn(`${this.description}: status watcher ended: ${(error as Error).message}`);
    }
  }

  private onStatus(status: Status): void {
    switch (status.type) {
      case Events.Disconnect:
        if (this.closing) return;
        this.connected = false;
        this.stats.disconnects++;
        this.outageStartedAt = this.clock.now();
        this.sendErrorsAtOutageStart = this.stats.sendErrors;
        this.warn(
          `${this.description}: lost the connection to ${String(status.data)}; reconnecting every ` +
            `${this.reconnectTimeWaitMs} ms; datagrams sent meanwhile are dropped and counted`,
        );
        this.remindOfOutage();
        break;
      case Events.Reconnect:
        this.connected = true;
        this.stats.reconnects++;
        this.outageReminder?.cancel();
        this.outageReminder = undefined;
        this.warn(
          `${this.description}: reconnected to ${String(status.data)} after ${this.outageSeconds()} s; ` +
            `${this.stats.sendErrors - this.sendErrorsAtOutageStart} datagrams dropped during the outage`,
        );
        break;
      case Events.Error:
        this.stats.serverErrors++;
        this.warn(`${this.description}: server error ${String(status.data)}`);
        break;
      case Events.LDM:
        this.warn(
          `${this.description}: server entering lame duck mode; the client will move to another server`,
        );
        break;
      default:
        break;
    }
  }

  private remindOfOutage(): void {
    this.outageReminder?.cancel();
    this.outageReminder = this.clock.setTimeout(() => {
      if (this.connected || this.closing) return;
      this.warn(
        `${this.description}: still disconnected after ${this.outageSeconds()} s ` +
          `(${this.stats.disconnects} disconnects so far); ` +
          `${this.stats.sendErrors - this.sendErrorsAtOutageStart} datagrams dropped in this outage`,
      );
      this.remindOfOutage();
    }, this.outageWarningIntervalMs);
  }

  private outageSeconds(): string {
    return ((this.clock.now() - this.outageStartedAt) / 1000).toFixed(1);
  }
}

function positive(name: string, value: number | undefined, fallback: number): number {
  const chosen = value ?? fallback;
  if (!Number.isFinite(chosen) || chosen <= 0) {
    throw new TypeError(`Invalid ${name} ${value}: expected a positive number of ms`);
  }
  return chosen;
}
