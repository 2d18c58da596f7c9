/**
 * One cluster member driven by a coordinator (`mccache stress`, `mccache demo`) over the IPC
 * channel of its parent: it creates a node with the settings it is sent, runs the seed's workload
 * on command, answers probes (checksum digest, quiescence) and reports its counters every second.
 *
 * The coordinator may launch it under any command prefix (for example `ip netns exec NAME`): it
 * needs nothing but the IPC channel, and it exits when that channel closes.
 */
import { createHash } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { type Cache, createNode, type LatencySummary, type McCacheNode } from '../index.js';

/** Node settings a coordinator passes to a member (the subset the CLI controls). */
export interface MemberSettings {
  multicastIp: string;
  multicastPort: number;
  multicastIf: string;
  cluster: string;
  cryptoKeys: string[];
  pulse: number;
  ttl: number;
  max: number;
  size: number;
  mode: 0 | 1;
  tantrum: number;
  logFilename: string;
  logLevel: 'error' | 'warn' | 'info' | 'debug' | 'silly';
  /** Unicast peers (`host:port`); empty or absent: not unicast. */
  peers?: string[];
  /** `address:port` this member receives unicast on. */
  unicastBind?: string;
  /** NATS server URL(s); empty or absent: not NATS. */
  natsUrl?: string;
}

/** The seed's workload parameters. */
export interface WorkloadSettings {
  /** TEST_KEY_ENTRIES: shared keys are K000-0000 .. K000-(keys-1). */
  keys: number;
  /** TEST_APERTURE in ms: each pause is uniform in [0.65, 1.35] x aperture. */
  apertureMs: number;
  /** TEST_DATA_SIZE_MIX: 1 small (< 1 KB), 2 large (> 9 KB), 3 both at random. */
  mix: 1 | 2 | 3;
  /** Seed of this member's random numbers. */
  seed: number;
}

export interface MemberConfig {
  /** Letter shown to the user: A, B, C, ... */
  name: string;
  /** 0-based position; member-specific keys use index + 1 (K001-..). */
  index: number;
  settings: MemberSettings;
  workload: WorkloadSettings;
}

/** Counters of the workload this member ran. Every op is exactly one of the five kinds. */
export interface WorkloadCounts {
  ops: number;
  lookups: number;
  inserts: number;
  updates: number;
  deletes: number;
  /** Inserts of a present key, updates and deletes of an absent one: the seed skips them too. */
  skipped: number;
  /** Ops abandoned because the process fell more than a quarter second behind its schedule. */
  behindOps: number;
  errors: number;
}

/** What a member reports every second and when it stops. */
export interface MemberSample {
  /** ms since the member started (performance.now()). */
  at: number;
  workload: WorkloadCounts;
  entries: number;
  evictions: number;
  retransmits: number;
  naksSent: number;
  duplicates: number;
  /** Datagrams refused by the engine, not counting our own echoes and duplicates. */
  drops: number;
  dropped: Record<string, number>;
  unrecoverable: number;
  queueDropped: number;
  queuedOps: number;
  members: number;
  datagramsSent: number;
  datagramsReceived: number;
  latency: LatencySummary;
  cpuMicros: number;
  rssBytes: number;
}

/** Messages from the coordinator. */
export type ToMember =
  | { type: 'configure'; config: MemberConfig }
  | { type: 'start' }
  | { type: 'stop' }
  | { type: 'probe'; id: number }
  | { type: 'checksum'; id: number }
  | { type: 'write'; key: string; value: unknown }
  | { type: 'delete'; key: string }
  | { type: 'watch'; key: string; present: boolean; timeoutMs: number }
  | { type: 'exit' };

/** Messages to the coordinator. */
export type FromMember =
  | { type: 'hello' }
  | { type: 'ready'; nodeId: string }
  | { type: 'tick'; sample: MemberSample }
  | { type: 'stopped'; sample: MemberSample }
  | {
      type: 'probe';
      id: number;
      digest: string;
      entries: number;
      quiescent: boolean;
      queuedOps: number;
      members: number;
    }
  | {
      type: 'checksum';
      id: number;
      digest: string;
      checksum: Record<string, { crc: string; tsm: number }>;
      sample: MemberSample;
      /** [fraction, ms] points of the replication latency distribution. */
      latencyQuantiles: Array<[number, number]>;
    }
  | { type: 'wrote'; key: string; at: number }
  | { type: 'watching'; key: string }
  | {
      type: 'saw';
      key: string;
      present: boolean;
      value: unknown;
      writer: string | undefined;
      /** Wall-clock ms (with fraction) when this member saw the change. */
      at: number;
    }
  | { type: 'missed'; key: string }
  | { type: 'error'; message: string };

/** Wall-clock ms with sub-ms resolution, comparable between processes on one host. */
export function preciseNow(): number {
  return performance.timeOrigin + performance.now();
}

/** A small seeded generator (mulberry32): the same seed gives the same workload. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Kinds of workload op. */
export type OpKind = 'lookup' | 'insert' | 'update' | 'delete';

/**
 * The seed's mix (tests/unit/start_mccache.py draws one of 21 codes: 4 insert, 4 update, 1 delete,
 * 11 lookup, and 1 that paused 250 ms to keep the Python implementation from congesting). Without
 * the pause code: 20% inserts, 20% updates, 5% deletes, 55% lookups, as its comments state.
 */
export function drawOp(random: () => number): OpKind {
  const code = Math.floor(random() * 20);
  if (code < 4) return 'insert';
  if (code < 8) return 'update';
  if (code < 9) return 'delete';
  return 'lookup';
}

/**
 * The seed's keys: one draw in 21 is a key only this member writes (`K001-0042` for member 1),
 * the others are shared by every member (`K000-0042`).
 */
export function drawKey(random: () => number, keys: number, memberIndex: number): string {
  const own = Math.floor(random() * 21) === 0;
  const number = String(Math.floor(random() * keys)).padStart(String(keys - 1).length, '0');
  return `K${String(own ? memberIndex + 1 : 0).padStart(3, '0')}-${number}`;
}

/** A pause uniform in [0.65, 1.35] x aperture, the seed's band around TEST_APERTURE. */
export function drawPause(random: () => number, apertureMs: number): number {
  return apertureMs * (0.65 + 0.7 * random());
}

const WORDS =
  'lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip ex ea commodo consequat'.split(
    ' ',
  );

/** The seed's large value: name, address, 9 KB of text and a list of dates; about 9.5 KB encoded. */
function largeTemplate(random: () => number): Record<string, unknown> {
  const word = () => WORDS[Math.floor(random() * WORDS.length)]!;
  let text = '';
  while (text.length < 9216) text += `${word()} `;
  return {
    name: `${word()} ${word()}`,
    address: `${Math.floor(random() * 9999)} ${word()} street, ${word()} city`,
    text: text.slice(0, 9216),
    dates: Array.from({ length: 8 }, (_, i) => ({ [String(Date.now() * 1000 + i)]: new Date() })),
  };
}

/** Runs the workload against a cache until stopped. */
export class Workload {
  readonly counts: WorkloadCounts = {
    ops: 0,
    lookups: 0,
    inserts: 0,
    updates: 0,
    deletes: 0,
    skipped: 0,
    behindOps: 0,
    errors: 0,
  };
  private readonly random: () => number;
  private readonly template: Record<string, unknown>;
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private due = 0;
  private counter = 0;

  constructor(
    private readonly cache: Cache,
    private readonly settings: WorkloadSettings,
    private readonly memberIndex: number,
  ) {
    this.random = seededRandom(settings.seed);
    this.template = largeTemplate(this.random);
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.due = performance.now();
    this.pump();
  }

  stop(): void {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
  }

  /** One op: the same logic as the seed's loop body. */
  step(): void {
    const kind = drawOp(this.random);
    const key = drawKey(this.random, this.settings.keys, this.memberIndex);
    const cache = this.cache;
    this.counts.ops++;
    try {
      switch (kind) {
        case 'lookup':
          void cache[key];
          this.counts.lookups++;
          return;
        case 'insert':
          if (key in cache) {
            this.counts.skipped++;
            return;
          }
          cache[key] = this.value(key);
          this.counts.inserts++;
          return;
        case 'update':
          if (!(key in cache)) {
            this.counts.skipped++;
            return;
          }
          cache[key] = this.value(key);
          this.counts.updates++;
          return;
        case 'delete':
          if (!(key in cache)) {
            this.counts.skipped++;
            return;
          }
          delete cache[key];
          this.counts.deletes++;
          return;
      }
    } catch {
      this.counts.errors++;
    }
  }

  private value(key: string): unknown {
    this.counter++;
    const large = this.settings.mix === 2 || (this.settings.mix === 3 && this.random() < 0.5);
    if (!large) return [this.memberIndex + 1, new Date(), this.counter];
    return { ...this.template, key, updated_on: new Date(), counter: this.counter };
  }

  /**
   * Ops run on a schedule (each due a pause after the previous one), so the rate is the aperture's
   * even though timers fire at 1 ms granularity. A process starved of CPU for more than 250 ms
   * drops its backlog instead of bursting, and counts what it dropped.
   */
  private readonly pump = (): void => {
    if (!this.running) return;
    let now = performance.now();
    if (now - this.due > 250) {
      const behind = now - this.due;
      this.counts.behindOps += Math.round(behind / this.settings.apertureMs);
      this.due = now;
    }
    for (let burst = 0; this.due <= now && burst < 256; burst++) {
      this.step();
      this.due += drawPause(this.random, this.settings.apertureMs);
    }
    now = performance.now();
    this.timer = setTimeout(this.pump, Math.max(1, Math.round(this.due - now)));
  };
}

/** Hex sha-256 (16 digits) of a checksum record: equal caches give equal digests. */
export function checksumDigest(checksum: Record<string, { crc: string; tsm: number }>): string {
  return createHash('sha256').update(JSON.stringify(checksum)).digest('hex').slice(0, 16);
}

const QUANTILES = [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.995, 0.999, 1];

// ------------------------------------------------------------------------------------------------

class Member {
  private node: McCacheNode | undefined;
  private cache: Cache | undefined;
  private workload: Workload | undefined;
  private ticker: NodeJS.Timeout | undefined;
  private exiting = false;
  private settings: MemberSettings | undefined;

  constructor(private readonly send: (message: FromMember) => void) {}

  handle(message: ToMember): void {
    switch (message.type) {
      case 'configure':
        this.configure(message.config).catch((error: Error) => {
          this.send({ type: 'error', message: `could not start member: ${error.message}` });
          void this.exit(1);
        });
        return;
      case 'start':
        this.workload?.start();
        return;
      case 'stop':
        this.workload?.stop();
        this.send({ type: 'stopped', sample: this.sample() });
        return;
      case 'probe':
        return this.probe(message.id);
      case 'checksum':
        return this.checksum(message.id);
      case 'write':
        this.cache![message.key] = message.value;
        this.send({ type: 'wrote', key: message.key, at: preciseNow() });
        return;
      case 'delete':
        delete this.cache![message.key];
        this.send({ type: 'wrote', key: message.key, at: preciseNow() });
        return;
      case 'watch':
        return this.watch(message.key, message.present, message.timeoutMs);
      case 'exit':
        void this.exit(0);
        return;
    }
  }

  private async configure(config: MemberConfig): Promise<void> {
    this.settings = config.settings;
    // The transport is the coordinator's choice alone: MCCACHE_PEERS or MCCACHE_NATS_URL in the
    // inherited environment must not switch it (or, both set, make the settings invalid).
    const node = createNode({
      settings: { peers: [], natsUrl: '', unicastBind: '', ...config.settings, handleSignals: false },
    });
    this.node = node;
    this.cache = node.getCache();
    this.workload = new Workload(this.cache, config.workload, config.index);
    await node.ready();
    this.ticker = setInterval(() => this.send({ type: 'tick', sample: this.sample() }), 1000);
    this.send({ type: 'ready', nodeId: node.id });
  }

  private sample(): MemberSample {
    const node = this.node!;
    const metrics = node.getLocalMetrics();
    const cluster = metrics.cluster;
    const cache = Object.values(metrics.caches)[0];
    let drops = 0;
    for (const [reason, count] of Object.entries(cluster.dropped)) {
      // Our own datagrams come back through multicast loopback; duplicates are retransmissions.
      if (reason !== 'self' && reason !== 'duplicate') drops += count;
    }
    const usage = process.cpuUsage();
    return {
      at: performance.now(),
      workload: { ...this.workload!.counts },
      entries: cache?.count ?? 0,
      evictions: cache?.evicts ?? 0,
      retransmits: cluster.retransmits,
      naksSent: cluster.naksSent,
      duplicates: cluster.duplicates,
      drops,
      dropped: cluster.dropped,
      unrecoverable: cluster.unrecoverable,
      queueDropped: cluster.queueDropped,
      queuedOps: Number(cluster.queuedOps ?? 0),
      members: Number(cluster.members ?? 0),
      datagramsSent: cluster.datagramsSent,
      datagramsReceived: cluster.datagramsReceived,
      latency: cluster.latencyMs,
      cpuMicros: usage.user + usage.system,
      rssBytes: process.memoryUsage.rss(),
    };
  }

  private probe(id: number): void {
    const node = this.node!;
    const checksum = node.getLocalChecksum();
    const gauges = node.engine.gauges();
    this.send({
      type: 'probe',
      id,
      digest: checksumDigest(checksum),
      entries: Object.keys(checksum).length,
      quiescent: node.engine.quiescent,
      queuedOps: gauges.queuedOps ?? 0,
      members: gauges.members ?? 0,
    });
  }

  private checksum(id: number): void {
    const node = this.node!;
    const checksum = node.getLocalChecksum();
    const latency = node.engine.latency;
    this.send({
      type: 'checksum',
      id,
      digest: checksumDigest(checksum),
      checksum,
      sample: this.sample(),
      latencyQuantiles: QUANTILES.map((q) => [q, latency.quantile(q)]),
    });
  }

  /**
   * Reports when `key` is written (its timestamp changes) or deleted. Checks right after every
   * datagram that reaches the group (a second socket on it hears the same datagrams as the node,
   * in the same event-loop turn), so the time seen is within microseconds of the apply, without
   * spinning; a 1 ms timer is the fallback.
   */
  private watch(key: string, present: boolean, timeoutMs: number): void {
    const store = this.node!.getStore()!;
    const versionNow = () => (store.has(key) ? this.cache!.metadata[key]?.tsm : undefined);
    const before = versionNow();
    const until = performance.now() + timeoutMs;
    let done = false;
    const check = () => {
      if (done) return;
      const version = versionNow();
      if (present ? version !== undefined && version !== before : version === undefined) {
        done = true;
        const at = preciseNow();
        const metadata = present ? this.cache!.metadata[key] : undefined;
        this.watchers.delete(check);
        clearInterval(fallback);
        this.send({ type: 'saw', key, present, value: store.peek(key), writer: metadata?.writer, at });
        return;
      }
      if (performance.now() > until) {
        done = true;
        this.watchers.delete(check);
        clearInterval(fallback);
        this.send({ type: 'missed', key });
      }
    };
    const fallback = setInterval(check, 1);
    this.watchers.add(check);
    this.listenToGroup();
    this.send({ type: 'watching', key });
  }

  private readonly watchers = new Set<() => void>();
  private groupSocket: Socket | undefined;

  private listenToGroup(): void {
    if (this.groupSocket || !this.settings) return;
    const { multicastIp, multicastPort, multicastIf } = this.settings;
    const socket = createSocket({ type: 'udp4', reuseAddr: true });
    this.groupSocket = socket;
    socket.on('error', () => socket.close());
    socket.bind(multicastPort, multicastIp, () => {
      socket.addMembership(multicastIp, multicastIf);
      socket.setMulticastInterface(multicastIf);
      socket.unref();
    });
    socket.on('message', () => {
      if (this.watchers.size === 0) return;
      setImmediate(() => {
        for (const check of this.watchers) check();
      });
    });
  }

  async exit(code: number): Promise<void> {
    if (this.exiting) return;
    this.exiting = true;
    this.workload?.stop();
    if (this.ticker) clearInterval(this.ticker);
    this.groupSocket?.close();
    const deadline = setTimeout(() => process.exit(code), 3000);
    deadline.unref();
    try {
      await this.node?.shutdown();
    } finally {
      process.exit(code);
    }
  }
}

/** Entry point when run as a child process with an IPC channel. */
function main(): void {
  const channel = process.send?.bind(process);
  if (!channel) {
    process.stderr.write(
      'stress-member runs as a child of `mccache stress` or `mccache demo` (no IPC channel)\n',
    );
    process.exit(2);
  }
  const send = (message: FromMember) => {
    if (process.connected) channel(message);
  };
  const member = new Member(send);
  process.on('message', (message: ToMember) => {
    try {
      member.handle(message);
    } catch (error) {
      send({ type: 'error', message: String((error as Error)?.stack ?? error) });
    }
  });
  // The coordinator is gone: leave the cluster and exit rather than run on as an orphan.
  process.on('disconnect', () => void member.exit(0));
  process.on('uncaughtException', (error) => {
    send({ type: 'error', message: String(error?.stack ?? error) });
    void member.exit(1);
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => void member.exit(0));
  // Messages sent before this listener existed would be lost: the coordinator waits for this.
  send({ type: 'hello' });
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) main();
