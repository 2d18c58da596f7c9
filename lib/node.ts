/**
 * A member of a cluster: its settings, clock, caches and cluster engine. The functions exported
 * by the package (getCache, clearCache, ...) act on one default node per process; tests and
 * advanced users create several with {@link createNode} (for example on a {@link MemoryNetwork}).
 */
import { randomInt } from 'node:crypto';
import { cpus, freemem, loadavg, totalmem } from 'node:os';
import type { Cache } from './cache/proxy.js';
import { CacheRegistry } from './cache/registry.js';
import type { CacheStore, StoreContext } from './cache/store.js';
import type { CacheCounters, EntryChecksum } from './cache/types.js';
import { type Clock, HybridLogicalClock, SystemClock, type TimerHandle } from './clock.js';
import {
  ClusterEngine,
  type EngineCounters,
  type EngineLimits,
  type EngineTiming,
} from './cluster/engine.js';
import type { LatencySummary } from './cluster/latency.js';
import {
  type CacheOptions,
  cacheSettingsOf,
  resolveSettings,
  type Settings,
  unknownSettingWarnings,
} from './config.js';
import { createLog, type Log } from './log.js';
import { LazyTransport } from './transport/lazy.js';
import type { Transport } from './transport/transport.js';
import { UdpMulticastTransport } from './transport/udp-multicast.js';
import { UdpUnicastTransport } from './transport/udp-unicast.js';
import { nodeIdHex } from './wire/frame.js';

/** Options of {@link createNode}. Everything is optional; the defaults make a real UDP member. */
export interface NodeOptions {
  /** Overrides of any setting, above package.json and the environment. */
  settings?: Partial<Settings>;
  /** Environment to read MCCACHE_* from (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Folder whose package.json "mccache" section is read (default process.cwd()). */
  cwd?: string;
  /** A transport to use instead of the one the settings describe. */
  transport?: Transport;
  /** Time and timers (default the system's); tests pass a ManualClock to make time deterministic. */
  clock?: Clock;
  /**
   * A fixed node id (u32, nonzero); default random, new at every start. Do not reuse one across
   * restarts: the others remember the seqs they heard from an id that said BYE or (with a key)
   * timed out, and refuse a restarted process that counts from 1 again under it.
   */
  nodeId?: number;
  /** Where log lines go (default a winston log built from the logging settings). */
  log?: Log;
  /** Overrides of the engine's timers (heartbeat, member timeout, query timeout, ...). */
  timing?: Partial<EngineTiming>;
  /** Overrides of the engine's bounds on buffers and tables. */
  limits?: Partial<EngineLimits>;
  /** How the engine schedules a flush (default setImmediate). */
  defer?: (run: () => void) => void;
  /** Source of randomness in [0, 1) for jitter and request ids (default Math.random); seed it for repeatable tests. */
  random?: () => number;
}

/** Figures of the process and its host included in metrics, to tell a busy member from a faulty one. */
export interface ProcessFigures {
  /** The host's 1, 5 and 15 minute load averages (os.loadavg). */
  loadAverage: number[];
  /** Logical CPUs of the host. */
  cpus: number;
  /** CPU time this process spent in user code since it started, in microseconds. */
  cpuUserMicros: number;
  /** CPU time this process spent in the kernel since it started, in microseconds. */
  cpuSystemMicros: number;
  /** Resident set size of the process, in bytes. */
  rssBytes: number;
  /** V8 heap in use, in bytes. */
  heapUsedBytes: number;
  /** Free memory of the host, in bytes. */
  freeMemoryBytes: number;
  /** Total memory of the host, in bytes. */
  totalMemoryBytes: number;
  /** Seconds since the process started. */
  uptimeSeconds: number;
}

/** What getLocalMetrics returns. Plain data: it serialises to JSON. */
export interface LocalMetrics {
  /** This member's node id, 8 hex digits. */
  node: string;
  /** Counters of each cache (or of the one asked for), by cache name. */
  caches: Record<string, CacheCounters>;
  /**
   * The cluster engine's counters, its gauges (members, queuedOps, queuedBytes, retransmitFrames,
   * reassembly figures, ...), replication latency and the transport's counters.
   */
  cluster: EngineCounters &
    Record<string, unknown> & {
      /** Time from a write on another member to its arrival here (first-hand writes only), in ms. */
      latencyMs: LatencySummary;
      /** The transport's counters: sent, received, sendErrors, tantrumDropped, and its own. */
      transport: Record<string, number>;
    };
  /** Figures of the process and host. */
  process: ProcessFigures;
}

/**
 * What getClusterMetrics returns: each answering member's {@link LocalMetrics}, keyed by its node id
 * (8 hex digits, as {@link McCacheNode.id}). Answers of other members are plain data decoded from
 * the network as that member's version of mccache sent them: a member on another version may add
 * or lack fields, so check a field before relying on it.
 */
export type ClusterMetrics = Record<string, LocalMetrics>;

/**
 * What getClusterChecksum returns: each answering member's `{ key: { crc, tsm } }`, keyed by its
 * node id (8 hex digits, as {@link McCacheNode.id}). Members agree on a key when both fields are
 * equal. Answers of other members are plain data decoded from the network as that member's
 * version of mccache sent them.
 */
export type ClusterChecksums = Record<string, Record<string, EntryChecksum>>;

const DEFAULT_CACHE = 'mccache';

/** Picks the transport the settings ask for: NATS, unicast peers, or multicast (the default). */
export function transportFor(settings: Readonly<Settings>, warn: (message: string) => void): Transport {
  if (settings.natsUrl) {
    // Loaded on start, so that users of the UDP transports never import the nats client.
    return new LazyTransport(`nats ${settings.natsUrl}`, async () => {
      const { NatsTransport } = await import('./transport/nats.js');
      return new NatsTransport({
        url: settings.natsUrl,
        cluster: settings.cluster,
        onWarning: warn,
        tantrumPercent: settings.tantrum,
      });
    });
  }
  if (settings.peers.length > 0) {
    const [bindAddress, bindPort] = (settings.unicastBind || `0.0.0.0:${settings.multicastPort}`).split(':');
    return new UdpUnicastTransport({
      bindAddress: bindAddress!,
      port: Number(bindPort),
      peers: settings.peers,
      tantrumPercent: settings.tantrum,
      onWarning: warn,
    });
  }
  return new UdpMulticastTransport({
    group: settings.multicastIp,
    port: settings.multicastPort,
    interfaceAddress: settings.multicastIf,
    hops: settings.multicastHops,
    tantrumPercent: settings.tantrum,
    onWarning: warn,
  });
}

/** One cluster member. */
export class McCacheNode {
  /** The resolved settings: options, package.json and MCCACHE_* variables over the defaults. */
  readonly settings: Readonly<Settings>;
  /** The member's log. */
  readonly log: Log;
  /** The clock of every cache and timer of this member. */
  readonly clock: Clock;
  /** Replicates this member's changes and applies the others'; for metrics and tests. */
  readonly engine: ClusterEngine;
  /** This member's caches by name. */
  readonly registry: CacheRegistry;
  private readonly started: Promise<void>;
  private startError: Error | undefined;
  private stopping: Promise<void> | undefined;

  constructor(options: NodeOptions = {}) {
    const env = options.env ?? process.env;
    this.settings = resolveSettings({
      env,
      cwd: options.cwd ?? process.cwd(),
      overrides: options.settings ?? {},
    });
    this.log =
      options.log ??
      createLog({
        filename: this.settings.logFilename,
        level: this.settings.logLevel,
        format: this.settings.logFormat,
      });
    // Unknown MCCACHE_* variables and unknown keys of package.json's "mccache" section, once each.
    for (const message of unknownSettingWarnings({ env, cwd: options.cwd ?? process.cwd() })) {
      this.log.warn(message);
      process.emitWarning(`mccache: ${message}`);
    }
    this.clock = options.clock ?? new SystemClock();
    const hlc = new HybridLogicalClock(this.clock);
    const nodeId = options.nodeId ?? randomInt(1, 0xffffffff);
    const context: StoreContext = {
      clock: this.clock,
      hlc,
      nodeId,
      log: this.log,
      sink: undefined,
      // Tombstones outlive a few pulses so a member that missed a delete cannot bring the key back.
      tombstoneTtlMs: Math.max(3 * this.settings.pulse * 1000, 60_000),
      maxTombstones: Math.max(4 * this.settings.max, 10_000),
    };
    this.registry = new CacheRegistry(context, cacheSettingsOf(this.settings));
    const transport = options.transport ?? transportFor(this.settings, (message) => this.log.warn(message));
    const engineOptions = {
      nodeId,
      settings: this.settings,
      transport,
      stores: this.registry,
      answers: {
        checksum: (cache: string | null, key: string | null) =>
          this.getLocalChecksum(cache ?? DEFAULT_CACHE, key ?? undefined),
        metrics: (cache: string | null) => this.getLocalMetrics(cache ?? undefined),
      },
      clock: this.clock,
      hlc,
      log: this.log,
      ...(options.timing ? { timing: options.timing } : {}),
      ...(options.limits ? { limits: options.limits } : {}),
      ...(options.defer ? { defer: options.defer } : {}),
      ...(options.random ? { random: options.random } : {}),
    };
    this.engine = new ClusterEngine(engineOptions);
    context.sink = this.engine;
    this.started = this.engine.start().catch((error: Error) => {
      // A network failure is logged and surfaced by ready(), never thrown into cache calls.
      this.startError = error;
      this.log.error('could not start the cluster transport', { error: error.message });
      // A transport that keeps trying (NATS) makes ready() resolve again once it is up.
      void transport.whenConnected?.then(() => {
        this.startError = undefined;
        this.log.warn('the cluster transport is up after all', { transport: transport.description });
      });
    });
    this.housekeepEvery(this.settings.daemonSleep * 1000);
  }

  /** This member's id, 8 hex digits (as used in cluster results). */
  get id(): string {
    return nodeIdHex(this.engine.nodeId);
  }

  /**
   * Resolves once the transport is up; rejects with the reason if it could not start. Over NATS the
   * member keeps trying, and ready() resolves again once the server answers.
   */
  async ready(): Promise<void> {
    await this.started;
    if (this.startError) throw this.startError;
  }

  /** The cache called `name`, created on first use. The same name gives the same object. */
  getCache<V = unknown>(name: string = DEFAULT_CACHE, options?: CacheOptions): Cache<V> {
    return this.registry.cache<V>(name, options);
  }

  /** The store behind a cache, for keys the proxy reserves (a key literally named "metadata"). */
  getStore(name: string = DEFAULT_CACHE): CacheStore | undefined {
    return this.registry.store(name);
  }

  /** Clears a cache (or every cache when `name` is omitted) on every member, or on one `node`. */
  clearCache(name?: string, node?: string | number): void {
    this.engine.clearCache(name ?? null, parseNode(node));
  }

  /** Counters per cache, the engine's counters and gauges, and process figures. */
  getLocalMetrics(name?: string): LocalMetrics {
    const caches: Record<string, CacheCounters> = {};
    for (const store of this.registry.stores()) {
      if (name === undefined || store.name === name) caches[store.name] = store.counters();
    }
    const usage = process.cpuUsage();
    const memory = process.memoryUsage();
    return {
      node: this.id,
      caches,
      cluster: {
        ...this.engine.counters,
        dropped: { ...this.engine.counters.dropped },
        ...this.engine.gauges(),
        latencyMs: this.engine.latency.summary(),
        transport: this.engine.transportStats(),
      },
      process: {
        loadAverage: loadavg(),
        cpus: cpus().length,
        cpuUserMicros: usage.user,
        cpuSystemMicros: usage.system,
        rssBytes: memory.rss,
        heapUsedBytes: memory.heapUsed,
        freeMemoryBytes: freemem(),
        totalMemoryBytes: totalmem(),
        uptimeSeconds: process.uptime(),
      },
    };
  }

  /** `{ key: { crc, tsm } }` of one cache, sorted by key (or of one key). */
  getLocalChecksum(name: string = DEFAULT_CACHE, key?: string): Record<string, EntryChecksum> {
    return this.registry.store(name)?.checksum(key) ?? {};
  }

  /**
   * Metrics of every member (or one), keyed by node id; members that do not answer in time are
   * absent. Other members' answers are plain data as their version sent it (see {@link ClusterMetrics}).
   */
  async getClusterMetrics(name?: string, node?: string | number): Promise<ClusterMetrics> {
    // Each answer is the member's getLocalMetrics; the wire checked only that it is plain data.
    const results = (await this.engine.query(
      'metrics',
      name ?? null,
      null,
      parseNode(node),
    )) as ClusterMetrics;
    this.log.info('cluster metrics', results);
    return results;
  }

  /**
   * Checksums of every member (or one), keyed by node id; members that do not answer in time are
   * absent. Other members' answers are plain data as their version sent it (see {@link ClusterChecksums}).
   */
  async getClusterChecksum(name?: string, key?: string, node?: string | number): Promise<ClusterChecksums> {
    // Each answer is the member's getLocalChecksum; the wire checked only that it is plain data.
    const results = (await this.engine.query(
      'checksum',
      name ?? DEFAULT_CACHE,
      key ?? null,
      parseNode(node),
    )) as ClusterChecksums;
    this.log.info('cluster checksum', results);
    return results;
  }

  /** Flushes pending sends, says goodbye, and closes the network. Idempotent. */
  shutdown(): Promise<void> {
    this.stopping ??= (async () => {
      this.housekeeper?.cancel();
      await this.started;
      await this.engine.shutdown();
    })();
    return this.stopping;
  }

  private housekeeper: TimerHandle | undefined;
  /** Runs the housekeeper every `periodMs` until shutdown. */
  private housekeepEvery(periodMs: number): void {
    const tick = () => {
      this.registry.housekeep();
      this.housekeeper = this.clock.setTimeout(tick, periodMs);
    };
    this.housekeeper = this.clock.setTimeout(tick, periodMs);
  }
}

function parseNode(node: string | number | undefined): number {
  if (node === undefined) return 0;
  const id = typeof node === 'number' ? node : Number.parseInt(node, 16);
  if (!Number.isInteger(id) || id <= 0 || id > 0xffffffff) {
    throw new TypeError(
      `node ${JSON.stringify(node)} is not a node id: expected 8 hex digits as in cluster results`,
    );
  }
  return id;
}

/** Creates a cluster member with its own caches and engine. */
export function createNode(options: NodeOptions = {}): McCacheNode {
  return new McCacheNode(options);
}
