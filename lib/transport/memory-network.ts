/**
 * A deterministic in-memory network for tests of the cluster engine: loss, duplication, reordering,
 * delay and partitions, all drawn from one seeded generator and timed on an injected {@link Clock}.
 * With a {@link ManualClock} a run is a pure function of the seed and of what the test does.
 */
import type { Clock, TimerHandle } from '../clock.js';
import type { Transport, TransportStats } from './transport.js';

/**
 * mulberry32 (Tommy Ettinger): a 32-bit seeded generator, tiny and fast, good enough for fault
 * injection (not for cryptography). Returns uniform numbers in [0, 1).
 */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Options of {@link MemoryNetwork}. */
export interface MemoryNetworkOptions {
  /** Deliveries are timers on this clock; with a ManualClock time moves only when the test says so. */
  clock: Clock;
  /** Seed of every random decision, so the same seed gives the same run. */
  seed: number;
  /** Probability (0..1) that one delivery is lost. */
  loss?: number;
  /** Probability (0..1) that one delivery arrives twice. */
  duplicate?: number;
  /** Probability (0..1) that one delivery gets an extra random delay of up to `jitterMs`. */
  reorder?: number;
  /** Base one-way delay in ms; default 0.2. */
  delayMs?: number;
  /** Largest extra delay in ms of a reordered delivery; default 5. */
  jitterMs?: number;
  /** Bound on deliveries in flight; beyond it they are dropped and counted in `overflow`. Default 1e6. */
  maxQueued?: number;
  /**
   * The largest datagram the simulated interface carries, reported to the engine as the transport's
   * `maxDatagramBytes` (what `packetMtu: 'auto'` follows). Larger sends fail like EMSGSIZE: counted in
   * `oversize` and in the sender's `sendErrors`. Default: unknown, and no limit.
   */
  maxDatagramBytes?: number;
}

/** Fault rates that {@link MemoryNetwork.setFaults} may change mid-test. */
export interface MemoryNetworkFaults {
  /** Probability (0..1) that one delivery is lost. */
  loss?: number;
  /** Probability (0..1) that one delivery arrives twice. */
  duplicate?: number;
  /** Probability (0..1) that one delivery gets an extra random delay of up to `jitterMs`. */
  reorder?: number;
}

/**
 * Counters of a {@link MemoryNetwork}. A send addresses one delivery to every open endpoint (the sender
 * included), and every delivery ends in exactly one place, so at any moment
 * `addressed + duplicated = delivered + lost + partitioned + overflow + undeliverable + inFlight`.
 */
export interface MemoryNetworkStats {
  /** Datagrams sent (one per accepted `send`). */
  sent: number;
  /** Deliveries addressed: for each datagram, one per endpoint open at the time of sending. */
  addressed: number;
  /** Deliveries handed to an endpoint's handler. */
  delivered: number;
  /** Deliveries dropped by the `loss` rate. */
  lost: number;
  /** Extra copies created by the `duplicate` rate. */
  duplicated: number;
  /** Deliveries given extra delay by the `reorder` rate. */
  reordered: number;
  /** Deliveries dropped because sender and receiver were on different sides of a partition. */
  partitioned: number;
  /** Deliveries dropped because `maxQueued` were already in flight. */
  overflow: number;
  /** Deliveries dropped because the receiver closed before they arrived. */
  undeliverable: number;
  /** Sends refused because the datagram was over `maxDatagramBytes`. */
  oversize: number;
}

/** One datagram on its way to one endpoint. */
interface Delivery {
  at: number;
  order: number;
  from: MemoryTransport;
  to: MemoryTransport;
  datagram: Buffer;
}

/** Partition group of endpoints not named in any group of a partition. */
const REST_GROUP = 0;

/**
 * The network. Endpoints are created with {@link MemoryNetwork.attach}; each is a {@link Transport}.
 *
 * Deliveries wait in a binary heap ordered by (arrival time, send order); only the earliest one has a
 * timer on the clock, so the clock's timer list stays short however busy the network is.
 */
export class MemoryNetwork {
  /** Live counters of every send and delivery since the network was created; never reset. */
  readonly stats: MemoryNetworkStats = {
    sent: 0,
    addressed: 0,
    delivered: 0,
    lost: 0,
    duplicated: 0,
    reordered: 0,
    partitioned: 0,
    overflow: 0,
    undeliverable: 0,
    oversize: 0,
  };
  /** See {@link MemoryNetworkOptions.maxDatagramBytes}. */
  readonly maxDatagramBytes: number | undefined;

  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly delayMs: number;
  private readonly jitterMs: number;
  private readonly maxQueued: number;
  private loss = 0;
  private duplicate = 0;
  private reorder = 0;

  /** Started, non-closed endpoints, in the order they started (the order random draws are made in). */
  private readonly open: MemoryTransport[] = [];
  /** Every endpoint ever attached, so heal() reaches those not started yet. */
  private readonly attached: MemoryTransport[] = [];
  private readonly heap: Delivery[] = [];
  private nextOrder = 0;
  private timer: TimerHandle | undefined;
  private timerAt = 0;
  private draining = false;

  constructor(options: MemoryNetworkOptions) {
    this.clock = options.clock;
    this.random = mulberry32(options.seed);
    this.delayMs = checkNonNegative('delayMs', options.delayMs ?? 0.2);
    const maxBytes = options.maxDatagramBytes;
    if (maxBytes !== undefined && !(Number.isInteger(maxBytes) && maxBytes > 0)) {
      throw new RangeError(`maxDatagramBytes must be a positive whole number of bytes, got ${maxBytes}`);
    }
    this.maxDatagramBytes = maxBytes;
    this.jitterMs = checkNonNegative('jitterMs', options.jitterMs ?? 5);
    const maxQueued = options.maxQueued ?? 1e6;
    if (!Number.isInteger(maxQueued) || maxQueued < 0) {
      throw new RangeError(`maxQueued must be a non-negative integer, got ${maxQueued}`);
    }
    this.maxQueued = maxQueued;
    this.setFaults(options);
  }

  /** A new endpoint (member). `name` is for diagnostics. */
  attach(name?: string): MemoryTransport {
    const endpoint = new MemoryTransport(this, name ?? `member-${this.attached.length + 1}`);
    this.attached.push(endpoint);
    return endpoint;
  }

  /**
   * Cuts the given groups of endpoints off from each other and from everyone not named (both
   * directions) until {@link heal}. Members of one group still talk, and everyone not named forms
   * one more group. Replaces any earlier partition. Datagrams already in flight across the cut are
   * dropped on arrival.
   */
  partition(...groups: MemoryTransport[][]): void {
    this.heal();
    let group = REST_GROUP;
    for (const members of groups) {
      group++;
      for (const member of members) member.partitionGroup = group;
    }
  }

  /** Ends any partition: everyone talks to everyone again. */
  heal(): void {
    for (const endpoint of this.attached) endpoint.partitionGroup = REST_GROUP;
  }

  /** Changes fault rates mid-test (e.g. loss 0 for the quiescence phase); absent ones stay as they are. */
  setFaults(faults: MemoryNetworkFaults): void {
    if (faults.loss !== undefined) this.loss = checkProbability('loss', faults.loss);
    if (faults.duplicate !== undefined) this.duplicate = checkProbability('duplicate', faults.duplicate);
    if (faults.reorder !== undefined) this.reorder = checkProbability('reorder', faults.reorder);
  }

  /** Deliveries in flight, not yet delivered. */
  get inFlight(): number {
    return this.heap.length;
  }

  /** @internal */
  opened(endpoint: MemoryTransport): void {
    this.open.push(endpoint);
  }

  /** @internal */
  closed(endpoint: MemoryTransport): void {
    const index = this.open.indexOf(endpoint);
    if (index >= 0) this.open.splice(index, 1);
  }

  /** @internal Fans one datagram out to every open endpoint, each delivery with its own faults. */
  transmit(from: MemoryTransport, datagram: Uint8Array): void {
    const stats = this.stats;
    const random = this.random;
    const now = this.clock.now();
    stats.sent++;
    for (let i = 0; i < this.open.length; i++) {
      const to = this.open[i]!;
      stats.addressed++;
      if (to.partitionGroup !== from.partitionGroup) {
        stats.partitioned++;
        continue;
      }
      if (this.loss > 0 && random() < this.loss) {
        stats.lost++;
        continue;
      }
      let copies = 1;
      if (this.duplicate > 0 && random() < this.duplicate) {
        copies = 2;
        stats.duplicated++;
      }
      for (let copy = 0; copy < copies; copy++) {
        if (this.heap.length >= this.maxQueued) {
          stats.overflow++;
          continue;
        }
        let delay = this.delayMs;
        if (this.reorder > 0 && random() < this.reorder) {
          delay += random() * this.jitterMs;
          stats.reordered++;
        }
        // Every receiver gets its own copy, as from a real socket, so nobody sees another's mutations
        // and the sender may reuse its buffer at once.
        this.push({ at: now + delay, order: this.nextOrder++, from, to, datagram: Buffer.from(datagram) });
      }
    }
    if (!this.draining) this.arm();
  }

  /** Keeps exactly one clock timer, set for the earliest delivery. */
  private arm(): void {
    const first = this.heap[0];
    if (!first) return;
    if (this.timer) {
      if (this.timerAt <= first.at) return;
      this.timer.cancel();
    }
    this.timerAt = first.at;
    this.timer = this.clock.setTimeout(this.drain, first.at - this.clock.now());
  }

  /** Delivers everything due, including what handlers send with no delay, then re-arms. */
  private readonly drain = (): void => {
    this.timer = undefined;
    this.draining = true;
    try {
      // A timer may fire a rounding error before its delivery's time: treat a nanosecond as on time.
      const now = this.clock.now() + 1e-6;
      for (;;) {
        const first = this.heap[0];
        if (!first || first.at > now) break;
        this.pop();
        this.deliver(first);
      }
    } finally {
      this.draining = false;
      this.arm();
    }
  };

  private deliver(delivery: Delivery): void {
    const to = delivery.to;
    if (!to.isOpen) {
      this.stats.undeliverable++;
      return;
    }
    if (to.partitionGroup !== delivery.from.partitionGroup) {
      this.stats.partitioned++;
      return;
    }
    this.stats.delivered++;
    to.receive(delivery.datagram);
  }

  private push(delivery: Delivery): void {
    const heap = this.heap;
    let index = heap.length;
    heap.push(delivery);
    while (index > 0) {
      const parentIndex = (index - 1) >> 1;
      const parent = heap[parentIndex]!;
      if (!earlier(delivery, parent)) break;
      heap[index] = parent;
      index = parentIndex;
    }
    heap[index] = delivery;
  }

  /** Removes the first delivery (the caller already holds it as heap[0]). */
  private pop(): void {
    const heap = this.heap;
    const last = heap.pop()!;
    const size = heap.length;
    if (size === 0) return;
    let index = 0;
    for (;;) {
      const left = 2 * index + 1;
      if (left >= size) break;
      const right = left + 1;
      const child = right < size && earlier(heap[right]!, heap[left]!) ? right : left;
      if (!earlier(heap[child]!, last)) break;
      heap[index] = heap[child]!;
      index = child;
    }
    heap[index] = last;
  }
}

function earlier(a: Delivery, b: Delivery): boolean {
  return a.at < b.at || (a.at === b.at && a.order < b.order);
}

/**
 * One member's endpoint on a {@link MemoryNetwork}. `send` delivers a copy to every started, non-closed
 * endpoint including this one (as multicast loopback does). Nothing waits on an OS, so `pendingSends`
 * is always 0, and there is no tantrum (use the network's `loss`).
 */
export class MemoryTransport implements Transport {
  readonly stats: TransportStats = { sent: 0, received: 0, sendErrors: 0, tantrumDropped: 0 };
  readonly pendingSends = 0;
  readonly description: string;
  /** @internal Side of the current partition; endpoints talk only within one side. */
  partitionGroup = REST_GROUP;

  private state: 'new' | 'open' | 'closed' = 'new';
  private onDatagram: ((datagram: Buffer) => void) | undefined;

  /** @internal Use {@link MemoryNetwork.attach}. */
  constructor(
    private readonly network: MemoryNetwork,
    /** The endpoint's name given to {@link MemoryNetwork.attach}, for diagnostics. */
    readonly name: string,
  ) {
    this.description = `memory://${name}`;
  }

  /** @internal */
  get isOpen(): boolean {
    return this.state === 'open';
  }

  start(onDatagram: (datagram: Buffer) => void): Promise<void> {
    if (this.state !== 'new') {
      return Promise.reject(
        new Error(
          `${this.description}: start() may be called once, on a new transport (it is ${this.state})`,
        ),
      );
    }
    this.onDatagram = onDatagram;
    this.state = 'open';
    this.network.opened(this);
    return Promise.resolve();
  }

  get maxDatagramBytes(): number | undefined {
    return this.network.maxDatagramBytes;
  }

  send(datagram: Uint8Array): void {
    if (this.state !== 'open') {
      this.stats.sendErrors++;
      return;
    }
    const limit = this.network.maxDatagramBytes;
    if (limit !== undefined && datagram.length > limit) {
      this.stats.sendErrors++;
      this.network.stats.oversize++;
      return;
    }
    this.stats.sent++;
    this.network.transmit(this, datagram);
  }

  close(): Promise<void> {
    if (this.state !== 'closed') {
      if (this.state === 'open') this.network.closed(this);
      this.state = 'closed';
      this.onDatagram = undefined;
    }
    return Promise.resolve();
  }

  /** @internal */
  receive(datagram: Buffer): void {
    this.stats.received++;
    this.onDatagram!(datagram);
  }
}

function checkProbability(name: string, value: number): number {
  if (!(value >= 0 && value <= 1))
    throw new RangeError(`${name} must be a probability from 0 to 1, got ${value}`);
  return value;
}

function checkNonNegative(name: string, value: number): number {
  if (!(value >= 0 && Number.isFinite(value))) {
    throw new RangeError(`${name} must be a finite number of milliseconds >= 0, got ${value}`);
  }
  return value;
}
