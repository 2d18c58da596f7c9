/**
 * The real network: one UDP multicast socket (node:dgram) per process, bound to the group address so
 * several processes on one host share the port while traffic for other groups on that port stays out.
 */
import { createSocket, type Socket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import { networkInterfaces } from 'node:os';
import { OutstandingSends } from './outstanding-sends.js';
import { Tantrum } from './tantrum.js';
import type { Transport, TransportStats } from './transport.js';

/** Receive buffer asked for by default: at 20k datagrams/s with 4 receivers the OS default lost 20-30%. */
export const DEFAULT_RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024;

/** How long {@link UdpMulticastTransport.close} waits for sends already handed to the OS. */
export const CLOSE_FLUSH_TIMEOUT_MS = 1000;

/** IPv4 (20 bytes) plus UDP (8 bytes) headers: a datagram's payload is at most the MTU minus these. */
export const IP_UDP_HEADER_BYTES = 28;

/** An IPv4 packet is at most 65535 bytes, so a UDP payload at most 65507, whatever the MTU (lo: 65536). */
export const MAX_UDP_PAYLOAD_BYTES = 65_535 - IP_UDP_HEADER_BYTES;

/**
 * The MTU of the interface that has `address`, read from Linux's /sys/class/net; undefined where that
 * cannot be read (another OS, a container without /sys, an address no interface has).
 */
export function interfaceMtu(address: string): number | undefined {
  for (const [name, addresses] of Object.entries(networkInterfaces())) {
    if (!addresses?.some((a) => a.address === address)) continue;
    try {
      const mtu = Number(readFileSync(`/sys/class/net/${name}/mtu`, 'utf8').trim());
      return Number.isInteger(mtu) && mtu > IP_UDP_HEADER_BYTES ? mtu : undefined;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/** Options of {@link UdpMulticastTransport}. */
export interface UdpMulticastOptions {
  /** IPv4 multicast group (224.0.0.0 - 239.255.255.255). */
  group: string;
  /** UDP port, 1-65535, the same on every member. */
  port: number;
  /** Local IPv4 address of the interface to join and send on, e.g. `127.0.0.1`. */
  interfaceAddress: string;
  /** Multicast TTL, 0-255 (1 keeps datagrams on the local network). */
  hops: number;
  /** SO_RCVBUF to ask for; default {@link DEFAULT_RECEIVE_BUFFER_BYTES}. The OS may grant less. */
  receiveBufferBytes?: number;
  /** SO_SNDBUF to ask for; the OS default when absent. */
  sendBufferBytes?: number;
  /** TEST_MONKEY_TANTRUM: percentage (0-100) of datagrams dropped on send and, independently, on receive. */
  tantrumPercent?: number;
  /** Uniform numbers in [0, 1) for the tantrum; Math.random by default. */
  random?: () => number;
  /** Called with problems worth a log line (short buffers, socket errors); ignored by default. */
  onWarning?: (message: string) => void;
}

/** {@link TransportStats} plus what only a real socket can tell. */
export interface UdpMulticastStats extends TransportStats {
  /** Part of tantrumDropped dropped before sending. */
  tantrumDroppedOnSend: number;
  /** Part of tantrumDropped dropped on arrival. */
  tantrumDroppedOnReceive: number;
  /** Send completion callbacks that fired, with or without an error. */
  sendCompletions: number;
  /** Sends refused because the transport was not open (before start or after close); also in sendErrors. */
  sendsWhileNotOpen: number;
  /** 'error' events emitted by the socket itself. */
  socketErrors: number;
  /** Exceptions thrown by the datagram handler, caught so that they never reach the socket. */
  handlerErrors: number;
}

type State = 'new' | 'starting' | 'open' | 'closed';

/**
 * A {@link Transport} over UDP multicast. Setup follows issue 4: bind the group and port with
 * SO_REUSEADDR, join the group on `interfaceAddress`, always set the outgoing multicast interface
 * (otherwise datagrams silently leave by the default route), TTL = `hops`, loopback on so members on
 * the same host hear each other (and this process hears itself), and a large receive buffer. The
 * socket is unref'd: it never keeps a process alive by itself.
 */
export class UdpMulticastTransport implements Transport {
  readonly description: string;
  readonly stats: UdpMulticastStats = {
    sent: 0,
    received: 0,
    sendErrors: 0,
    tantrumDropped: 0,
    tantrumDroppedOnSend: 0,
    tantrumDroppedOnReceive: 0,
    sendCompletions: 0,
    sendsWhileNotOpen: 0,
    socketErrors: 0,
    handlerErrors: 0,
  };

  private readonly group: string;
  private readonly port: number;
  private readonly interfaceAddress: string;
  private readonly hops: number;
  private readonly requestedReceiveBytes: number;
  private readonly requestedSendBytes: number | undefined;
  private readonly tantrum: Tantrum;
  private readonly warn: (message: string) => void;
  private readonly warnedErrorCodes = new Set<string>();

  private state: State = 'new';
  private socket: Socket | undefined;
  private readonly pending = new OutstandingSends();
  private grantedReceiveBytes = 0;
  private interfaceMaxDatagram: number | undefined;
  private closing: Promise<void> | undefined;

  constructor(options: UdpMulticastOptions) {
    const { group, port, interfaceAddress, hops } = options;
    if (!isIPv4(group) || !isMulticastAddress(group)) {
      throw new TypeError(
        `group must be an IPv4 multicast address (224.0.0.0-239.255.255.255), got '${group}'`,
      );
    }
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new RangeError(`port must be an integer from 1 to 65535, got ${port}`);
    }
    if (!isIPv4(interfaceAddress)) {
      throw new TypeError(`interfaceAddress must be a local IPv4 address, got '${interfaceAddress}'`);
    }
    if (!Number.isInteger(hops) || hops < 0 || hops > 255) {
      throw new RangeError(`hops must be an integer from 0 to 255, got ${hops}`);
    }
    const receiveBytes = options.receiveBufferBytes ?? DEFAULT_RECEIVE_BUFFER_BYTES;
    if (!Number.isInteger(receiveBytes) || receiveBytes < 1) {
      throw new RangeError(`receiveBufferBytes must be a positive integer, got ${receiveBytes}`);
    }
    const sendBytes = options.sendBufferBytes;
    if (sendBytes !== undefined && (!Number.isInteger(sendBytes) || sendBytes < 1)) {
      throw new RangeError(`sendBufferBytes must be a positive integer, got ${sendBytes}`);
    }
    this.group = group;
    this.port = port;
    this.interfaceAddress = interfaceAddress;
    this.hops = hops;
    this.requestedReceiveBytes = receiveBytes;
    this.requestedSendBytes = sendBytes;
    this.tantrum = new Tantrum(options.tantrumPercent ?? 0, options.random);
    this.warn = options.onWarning ?? (() => {});
    this.description = `udp://${group}:${port} via ${interfaceAddress}`;
  }

  get pendingSends(): number {
    return this.pending.count;
  }

  /** The interface's MTU minus IP and UDP headers, read at start(); undefined if unknown. */
  get maxDatagramBytes(): number | undefined {
    return this.interfaceMaxDatagram;
  }

  /** SO_RCVBUF the OS actually granted (0 before start). Linux reports double; this is the real size. */
  get receiveBufferBytes(): number {
    return this.grantedReceiveBytes;
  }

  async start(onDatagram: (datagram: Buffer) => void): Promise<void> {
    if (this.state !== 'new') {
      throw new Error(
        `${this.description}: start() may be called once, on a new transport (it is ${this.state})`,
      );
    }
    this.state = 'starting';
    const socket = createSocket({ type: 'udp4', reuseAddr: true });
    this.socket = socket;
    try {
      await bind(socket, this.port, this.group);
      if (this.state !== 'starting') throw new Error('closed while starting');
      socket.addMembership(this.group, this.interfaceAddress);
      socket.setMulticastInterface(this.interfaceAddress);
      socket.setMulticastTTL(this.hops);
      socket.setMulticastLoopback(true);
    } catch (error) {
      this.state = 'closed';
      closeQuietly(socket);
      const code = (error as { code?: unknown } | null)?.code;
      const hint = code === 'ENODEV' || code === 'EADDRNOTAVAIL' ? ' (is the interface address local?)' : '';
      throw new Error(
        `cannot open UDP multicast group ${this.group} port ${this.port} on interface ${this.interfaceAddress}` +
          `${hint}: ${describeError(error)}`,
        { cause: error },
      );
    }
    this.grantedReceiveBytes = this.applyBufferSize('receive', this.requestedReceiveBytes);
    const mtu = interfaceMtu(this.interfaceAddress);
    this.interfaceMaxDatagram =
      mtu === undefined ? undefined : Math.min(mtu - IP_UDP_HEADER_BYTES, MAX_UDP_PAYLOAD_BYTES);
    if (this.requestedSendBytes !== undefined) this.applyBufferSize('send', this.requestedSendBytes);

    socket.on('message', (datagram: Buffer) => {
      if (this.tantrum.active && this.tantrum.drop()) {
        this.stats.tantrumDropped++;
        this.stats.tantrumDroppedOnReceive++;
        return;
      }
      this.stats.received++;
      try {
        onDatagram(datagram);
      } catch (error) {
        this.stats.handlerErrors++;
        this.warn(`${this.description}: datagram handler threw: ${describeError(error)}`);
      }
    });
    socket.on('error', (error) => {
      this.stats.socketErrors++;
      this.warn(`${this.description}: socket error: ${describeError(error)}`);
    });
    socket.unref();
    this.state = 'open';
  }

  send(datagram: Uint8Array): void {
    if (this.state !== 'open') {
      this.stats.sendErrors++;
      this.stats.sendsWhileNotOpen++;
      return;
    }
    if (this.tantrum.active && this.tantrum.drop()) {
      this.stats.tantrumDropped++;
      this.stats.tantrumDroppedOnSend++;
      return;
    }
    try {
      this.socket!.send(datagram, this.port, this.group, this.afterSend);
    } catch (error) {
      this.stats.sendErrors++;
      this.warnOncePerCode('send', error);
      return;
    }
    this.pending.started();
    this.stats.sent++;
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
    this.state = 'closed';
    const socket = this.socket;
    if (!socket) return;
    await this.pending.settle(CLOSE_FLUSH_TIMEOUT_MS);
    await new Promise<void>((resolve) => {
      try {
        socket.close(resolve);
      } catch {
        resolve(); // already closed (a failed start)
      }
    });
    this.pending.abandon();
  }

  /** One shared callback for every send, so a send allocates no closure. */
  private readonly afterSend = (error: Error | null): void => {
    this.stats.sendCompletions++;
    if (error) {
      this.stats.sendErrors++;
      this.warnOncePerCode('send', error);
    }
    this.pending.finished();
  };

  /** Asks for a buffer size and returns what the OS granted, warning when it is less. */
  private applyBufferSize(kind: 'receive' | 'send', requested: number): number {
    const socket = this.socket!;
    try {
      if (kind === 'receive') socket.setRecvBufferSize(requested);
      else socket.setSendBufferSize(requested);
    } catch (error) {
      this.warn(
        `${this.description}: cannot set the ${kind} buffer to ${requested} bytes: ${describeError(error)}`,
      );
    }
    let granted = 0;
    try {
      const reported = kind === 'receive' ? socket.getRecvBufferSize() : socket.getSendBufferSize();
      // Linux doubles the value for bookkeeping overhead and reports the doubled figure.
      granted = process.platform === 'linux' ? Math.floor(reported / 2) : reported;
    } catch (error) {
      this.warn(`${this.description}: cannot read the ${kind} buffer size: ${describeError(error)}`);
      return 0;
    }
    if (granted < requested) {
      this.warn(
        `${this.description}: asked for a ${requested}-byte ${kind} buffer, the OS granted ${granted}` +
          ` (raise net.core.${kind === 'receive' ? 'rmem_max' : 'wmem_max'} to avoid drops under load)`,
      );
    }
    return granted;
  }

  /** Counts every error but logs each error code once, so a burst of EMSGSIZE is one line, not thousands. */
  private warnOncePerCode(operation: string, error: unknown): void {
    const code = (error as { code?: unknown } | null)?.code;
    const key = `${operation}:${typeof code === 'string' ? code : describeError(error)}`;
    if (this.warnedErrorCodes.has(key)) return;
    this.warnedErrorCodes.add(key);
    this.warn(
      `${this.description}: ${operation} failed: ${describeError(error)} (further ones only counted)`,
    );
  }
}

function isMulticastAddress(address: string): boolean {
  const firstOctet = Number(address.slice(0, address.indexOf('.')));
  return firstOctet >= 224 && firstOctet <= 239;
}

function bind(socket: Socket, port: number, address: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const closedEarly = () => reject(new Error('closed while starting'));
    socket.once('error', reject);
    socket.once('close', closedEarly);
    socket.bind({ port, address, exclusive: false }, () => {
      socket.off('error', reject);
      socket.off('close', closedEarly);
      resolve();
    });
  });
}

function closeQuietly(socket: Socket): void {
  try {
    socket.close();
  } catch {
    // never bound or already closed
  }
}

function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
