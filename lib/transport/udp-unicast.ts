/**
 * UDP unicast to a list of peers, for networks that do not carry multicast (AWS VPCs, most Kubernetes
 * overlays). Each datagram is sent once per peer; there is no broker. Peers are `host:port` entries;
 * a DNS name may resolve to several addresses (a Kubernetes headless service) and is re-resolved
 * periodically, so members come and go as pods do.
 *
 * Loopback semantics match multicast: a process receives its own datagrams (delivered in-process, not
 * through the kernel), and the engine filters them by node id.
 */
import { createSocket, type Socket } from 'node:dgram';
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIPv4 } from 'node:net';
import { networkInterfaces } from 'node:os';
import { type Clock, SystemClock, type TimerHandle } from '../clock.js';
import { OutstandingSends } from './outstanding-sends.js';
import { Tantrum } from './tantrum.js';
import type { Transport, TransportStats } from './transport.js';

/** Options of {@link UdpUnicastTransport}. */
export interface UdpUnicastOptions {
  /** Local IPv4 address to bind, e.g. `127.0.0.1`, or `0.0.0.0` for every interface (containers). */
  bindAddress: string;
  /** Local UDP port. Every process needs its own address:port pair. */
  port: number;
  /**
   * Peers as `host:port`, where host is an IPv4 address or a DNS name. A name may resolve to several
   * addresses (a Kubernetes headless service); every address gets the datagrams. This process's own
   * address:port may be listed (one list for the whole cluster): it is recognised and skipped.
   */
  peers: string[];
  /** How often DNS names are re-resolved, in ms. Default 10000. */
  resolveIntervalMs?: number;
  /** Resolves a name to IPv4 addresses. Default: `dns.promises.lookup(host, { all: true, family: 4 })`. */
  lookup?: (host: string) => Promise<string[]>;
  /** Receive buffer asked of the OS (it may grant less; a warning says so). Default 4 MiB. */
  receiveBufferBytes?: number;
  /** TEST_MONKEY_TANTRUM: percentage of datagrams dropped on send and on receive. Default 0. */
  tantrumPercent?: number;
  /** Uniform numbers in [0, 1) for the tantrum; inject a seeded one for reproducible tests. */
  random?: () => number;
  /** Told about trouble that is survived: DNS failures, a smaller receive buffer, socket errors. */
  onWarning?: (message: string) => void;
  /** Schedules the DNS re-resolution. Default: the system clock (unref'd timers). */
  clock?: Clock;
}

/** Counters of {@link UdpUnicastTransport}: the common ones plus peer discovery. */
export interface UdpUnicastStats extends TransportStats {
  /** DNS resolutions that failed (or found no IPv4 address); the previous addresses were kept. */
  resolveFailures: number;
  /** Peer addresses currently sent to (this process excluded). */
  peers: number;
  /** Exceptions thrown by the datagram handler, caught so that they never reach the socket. */
  handlerErrors: number;
}

/** One entry of the peer list, parsed. */
export interface PeerEntry {
  host: string;
  port: number;
}

/** Default {@link UdpUnicastOptions.resolveIntervalMs}. */
export const DEFAULT_RESOLVE_INTERVAL_MS = 10_000;
/** Default {@link UdpUnicastOptions.receiveBufferBytes}. */
export const DEFAULT_RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024;
/** How long {@link UdpUnicastTransport.close} waits for sends already handed to the OS. */
export const CLOSE_FLUSH_TIMEOUT_MS = 1000;

const HOST_NAME = /^[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62})*\.?$/;

/**
 * Parses one peer entry (`10.0.0.7:4000`, `mccache-peers.default.svc.cluster.local:4000`).
 * @throws TypeError naming the entry and the expected `host:port` form.
 */
export function parsePeerEntry(entry: string): PeerEntry {
  const expected = `expected host:port, where host is an IPv4 address or a DNS name and port is 1-65535 (e.g. 10.0.0.7:4000 or mccache-peers:4000)`;
  const text = entry.trim();
  const colon = text.lastIndexOf(':');
  if (colon <= 0) throw new TypeError(`Invalid peer ${JSON.stringify(entry)}: ${expected}`);
  const host = text.slice(0, colon);
  const portText = text.slice(colon + 1);
  const port = Number(portText);
  if (!/^\d{1,5}$/.test(portText) || port < 1 || port > 65535) {
    throw new TypeError(
      `Invalid peer ${JSON.stringify(entry)}: bad port ${JSON.stringify(portText)}; ${expected}`,
    );
  }
  const looksNumeric = /^[\d.]+$/.test(host);
  if (looksNumeric ? !isIPv4(host) : !HOST_NAME.test(host) || host.length > 253) {
    throw new TypeError(
      `Invalid peer ${JSON.stringify(entry)}: bad host ${JSON.stringify(host)}; ${expected}`,
    );
  }
  return { host, port };
}

async function lookupIPv4(host: string): Promise<string[]> {
  const answers = await dnsLookup(host, { all: true, family: 4 });
  return answers.map((answer) => answer.address);
}

interface Peer {
  address: string;
  port: number;
}

/** A DNS name from the peer list and the addresses it last resolved to. */
interface ResolvedName {
  host: string;
  port: number;
  addresses: string[];
  /** Warn once when a name starts failing, and once when it recovers, not every round. */
  failing: boolean;
}

/** UDP unicast to every peer; see the module comment. */
export class UdpUnicastTransport implements Transport {
  readonly description: string;
  readonly stats: UdpUnicastStats = {
    sent: 0,
    received: 0,
    sendErrors: 0,
    tantrumDropped: 0,
    resolveFailures: 0,
    peers: 0,
    handlerErrors: 0,
  };

  private readonly bindAddress: string;
  private readonly port: number;
  private readonly staticPeers: Peer[];
  private readonly names: ResolvedName[];
  private readonly resolveIntervalMs: number;
  private readonly lookup: (host: string) => Promise<string[]>;
  private readonly receiveBufferBytes: number;
  private readonly tantrum: Tantrum;
  private readonly warn: (message: string) => void;
  private readonly clock: Clock;

  private socket: Socket | undefined;
  private onDatagram: ((datagram: Buffer) => void) | undefined;
  private peers: Peer[] = [];
  private readonly outstandingSends = new OutstandingSends();
  /** Own datagrams waiting for in-process delivery, drained on the next macrotask like a real receive. */
  private ownDatagrams: Buffer[] = [];
  private ownDeliveryScheduled = false;
  private resolveTimer: TimerHandle | undefined;
  private resolving: Promise<void> | undefined;
  private closed = false;
  private closing: Promise<void> | undefined;
  private readonly warnedErrorCodes = new Set<string>();

  constructor(options: UdpUnicastOptions) {
    if (!isIPv4(options.bindAddress)) {
      throw new TypeError(
        `Invalid bindAddress ${JSON.stringify(options.bindAddress)}: expected a local IPv4 address such as 127.0.0.1 or 0.0.0.0`,
      );
    }
    if (!Number.isInteger(options.port) || options.port < 1 || options.port > 65535) {
      throw new TypeError(`Invalid port ${options.port}: expected a whole number from 1 to 65535`);
    }
    const resolveIntervalMs = options.resolveIntervalMs ?? DEFAULT_RESOLVE_INTERVAL_MS;
    if (!Number.isFinite(resolveIntervalMs) || resolveIntervalMs <= 0) {
      throw new TypeError(`Invalid resolveIntervalMs ${resolveIntervalMs}: expected a positive number of ms`);
    }
    this.bindAddress = options.bindAddress;
    this.port = options.port;
    this.resolveIntervalMs = resolveIntervalMs;
    this.lookup = options.lookup ?? lookupIPv4;
    this.receiveBufferBytes = options.receiveBufferBytes ?? DEFAULT_RECEIVE_BUFFER_BYTES;
    this.tantrum = new Tantrum(options.tantrumPercent ?? 0, options.random);
    this.warn = options.onWarning ?? (() => {});
    this.clock = options.clock ?? new SystemClock();

    this.staticPeers = [];
    this.names = [];
    for (const entry of options.peers) {
      const { host, port } = parsePeerEntry(entry);
      if (isIPv4(host)) this.staticPeers.push({ address: host, port });
      else this.names.push({ host, port, addresses: [], failing: false });
    }
    this.description = `udp-unicast://${this.bindAddress}:${this.port} to [${options.peers.join(', ')}]`;
    this.rebuildPeers();
  }

  /** The peer addresses currently sent to, as `address:port`, sorted (this process excluded). */
  get peerAddresses(): string[] {
    return this.peers.map((p) => `${p.address}:${p.port}`).sort();
  }

  /** Sends handed to the OS without a completion yet, plus own datagrams not yet delivered. */
  get pendingSends(): number {
    return this.outstandingSends.count + this.ownDatagrams.length;
  }

  /**
   * Binds the socket and resolves DNS peers once (a failed name is counted and warned, not fatal:
   * in Kubernetes the service may have no ready pod yet). Rejects if the bind fails.
   */
  async start(onDatagram: (datagram: Buffer) => void): Promise<void> {
    if (this.socket || this.closed) {
      throw new Error(`${this.description}: start() may be called once, on a new transport`);
    }
    this.onDatagram = onDatagram;
    const socket = createSocket({ type: 'udp4', reuseAddr: false });
    this.socket = socket;
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.bind({ address: this.bindAddress, port: this.port, exclusive: true }, () => {
          socket.off('error', reject);
          resolve();
        });
      });
    } catch (error) {
      this.socket = undefined;
      this.closed = true;
      try {
        socket.close();
      } catch {
        // never bound
      }
      const code = (error as NodeJS.ErrnoException).code ?? String(error);
      throw new Error(
        `Cannot bind UDP ${this.bindAddress}:${this.port} (${code}): each process in unicast mode needs ` +
          'its own free port on a local address',
        { cause: error },
      );
    }
    socket.unref();
    this.askReceiveBuffer(socket);
    socket.on('error', (error) => this.warn(`${this.description}: socket error ${error.message}`));
    socket.on('message', (datagram) => this.receive(datagram));
    await this.refreshPeers();
  }

  /** Sends one datagram to every peer and to this process itself. Never throws. */
  send(datagram: Uint8Array): void {
    const socket = this.socket;
    if (!socket || this.closed) {
      this.stats.sendErrors++;
      return;
    }
    if (this.tantrum.active && this.tantrum.drop()) {
      this.stats.tantrumDropped++;
      return;
    }
    const peers = this.peers;
    for (let i = 0; i < peers.length; i++) {
      const peer = peers[i]!;
      try {
        socket.send(datagram, peer.port, peer.address, this.afterSend);
      } catch (error) {
        this.stats.sendErrors++;
        this.warnOncePerCode(error);
        continue;
      }
      this.outstandingSends.started();
      this.stats.sent++;
    }
    this.ownDatagrams.push(Buffer.from(datagram));
    if (!this.ownDeliveryScheduled) {
      this.ownDeliveryScheduled = true;
      setImmediate(this.deliverOwnDatagrams);
    }
  }

  /** Re-resolves the DNS names of the peer list now; resolves when done. Never rejects. */
  refreshPeers(): Promise<void> {
    this.resolving ??= this.resolveAll().finally(() => {
      this.resolving = undefined;
      this.scheduleResolve();
    });
    return this.resolving;
  }

  /**
   * Refuses further sends, waits (at most {@link CLOSE_FLUSH_TIMEOUT_MS}) for sends already handed to
   * the OS, so that a last datagram such as BYE still leaves, then closes the socket. Idempotent.
   */
  close(): Promise<void> {
    this.closing ??= this.closeSocket();
    return this.closing;
  }

  private async closeSocket(): Promise<void> {
    this.closed = true;
    this.resolveTimer?.cancel();
    this.resolveTimer = undefined;
    this.ownDatagrams = [];
    const socket = this.socket;
    if (!socket) return;
    await this.outstandingSends.settle(CLOSE_FLUSH_TIMEOUT_MS);
    this.socket = undefined;
    await new Promise<void>((resolve) => socket.close(() => resolve()));
    this.outstandingSends.abandon();
  }

  /** One shared callback for every send, so a send allocates no closure. */
  private readonly afterSend = (error: Error | null): void => {
    if (error) {
      this.stats.sendErrors++;
      this.warnOncePerCode(error);
    }
    this.outstandingSends.finished();
  };

  /** Counts every error but logs each error code once, so a burst of EMSGSIZE is one line, not thousands. */
  private warnOncePerCode(error: unknown): void {
    const code = (error as { code?: unknown } | null)?.code;
    const message = error instanceof Error ? error.message : String(error);
    const key = typeof code === 'string' ? code : message;
    if (this.warnedErrorCodes.has(key)) return;
    this.warnedErrorCodes.add(key);
    this.warn(`${this.description}: send failed: ${message} (further ones only counted)`);
  }

  private readonly deliverOwnDatagrams = (): void => {
    this.ownDeliveryScheduled = false;
    const datagrams = this.ownDatagrams;
    this.ownDatagrams = [];
    for (const datagram of datagrams) {
      if (this.closed) return;
      this.receive(datagram);
    }
  };

  private receive(datagram: Buffer): void {
    if (this.tantrum.active && this.tantrum.drop()) {
      this.stats.tantrumDropped++;
      return;
    }
    this.stats.received++;
    try {
      this.onDatagram?.(datagram);
    } catch (error) {
      this.stats.handlerErrors++;
      this.warn(`${this.description}: datagram handler threw: ${(error as Error).message}`);
    }
  }

  private askReceiveBuffer(socket: Socket): void {
    try {
      socket.setRecvBufferSize(this.receiveBufferBytes);
      // Linux reports double the granted size (bookkeeping overhead), so compare with half.
      const granted = socket.getRecvBufferSize();
      const effective = process.platform === 'linux' ? granted / 2 : granted;
      if (effective < this.receiveBufferBytes) {
        this.warn(
          `${this.description}: asked for a ${this.receiveBufferBytes}-byte receive buffer, the OS granted ` +
            `${effective}; raise net.core.rmem_max to avoid drops under load`,
        );
      }
    } catch (error) {
      this.warn(`${this.description}: cannot set the receive buffer: ${(error as Error).message}`);
    }
  }

  private scheduleResolve(): void {
    if (this.closed || this.names.length === 0) return;
    this.resolveTimer?.cancel();
    this.resolveTimer = this.clock.setTimeout(() => {
      this.resolveTimer = undefined;
      void this.refreshPeers();
    }, this.resolveIntervalMs);
  }

  private async resolveAll(): Promise<void> {
    await Promise.all(this.names.map((name) => this.resolveName(name)));
    if (!this.closed) this.rebuildPeers();
  }

  private async resolveName(name: ResolvedName): Promise<void> {
    let addresses: string[];
    try {
      addresses = (await this.lookup(name.host)).filter((address) => isIPv4(address));
      if (addresses.length === 0) throw new Error('no IPv4 address');
    } catch (error) {
      this.stats.resolveFailures++;
      if (!name.failing) {
        name.failing = true;
        const kept = name.addresses.length ? `keeping ${name.addresses.join(', ')}` : 'no address known yet';
        this.warn(
          `${this.description}: cannot resolve peer ${name.host}: ${(error as Error).message}; ${kept}`,
        );
      }
      return;
    }
    if (name.failing) {
      name.failing = false;
      this.warn(`${this.description}: peer ${name.host} resolves again: ${addresses.join(', ')}`);
    }
    name.addresses = addresses;
  }

  /** Unions static and resolved peers, without duplicates and without this process itself. */
  private rebuildPeers(): void {
    const own = this.ownAddresses();
    const seen = new Set<string>();
    const peers: Peer[] = [];
    const add = (address: string, port: number) => {
      const id = `${address}:${port}`;
      if (seen.has(id) || (port === this.port && own.has(address))) return;
      seen.add(id);
      peers.push({ address, port });
    };
    for (const peer of this.staticPeers) add(peer.address, peer.port);
    for (const name of this.names) for (const address of name.addresses) add(address, name.port);
    this.peers = peers;
    this.stats.peers = peers.length;
  }

  /** Addresses at which this socket receives: the bind address, or every local IPv4 when bound to 0.0.0.0. */
  private ownAddresses(): Set<string> {
    if (this.bindAddress !== '0.0.0.0') return new Set([this.bindAddress]);
    const own = new Set<string>(['0.0.0.0']);
    for (const addresses of Object.values(networkInterfaces())) {
      for (const address of addresses ?? []) if (address.family === 'IPv4') own.add(address.address);
    }
    return own;
  }
}
