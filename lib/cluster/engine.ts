/**
 * The cluster engine: turns local changes into batched, sequenced datagrams, repairs loss with
 * negative acknowledgements, tracks members by heartbeat, and runs anti-entropy so every member
 * ends with identical caches.
 *
 * Layers, from the JGroups stack it follows:
 * - NAKACK2: every DATA datagram carries a per-sender seq; receivers spot gaps (also at the tail,
 *   from the seq in each heartbeat) and NAK them; the sender resends from a bounded buffer.
 * - STABLE: heartbeats (ACK) carry how far each member has received every other member's stream;
 *   the sender frees what all live members hold.
 * - FD_ALL: a member silent for `memberTimeoutMs` is dropped and its buffers freed.
 * - Anti-entropy (where JGroups leaves state merge to the application): at every pulse, and when
 *   a member appears, members swap per-bucket digests and repair only the differing keys. This
 *   repairs what retransmission cannot: long partitions and exhausted buffers.
 *
 * Ordering is not needed: each op carries its last-write-wins stamp (HLC tsm, writer id), so ops
 * apply as they arrive and the result is the same in any order.
 */
import { ApplyOutcome, type CacheStoreApi, ChangeKind, type ReplicationSink } from '../cache/types.js';
import { type Clock, type HybridLogicalClock, hlcToMillis, type TimerHandle } from '../clock.js';
import { AUTO_PACKET_CAP, type ClusterSettings, ETHERNET_PACKET_BYTES } from '../config.js';
import type { Log } from '../log.js';
import type { Transport } from '../transport/transport.js';
import { Fernet } from '../wire/fernet.js';
import {
  FrameCodec,
  type FrameHeader,
  FrameKind,
  MAX_MESSAGE_BYTES,
  MIN_MTU,
  nodeIdHex,
  peekSender,
} from '../wire/frame.js';
import { crcHalves, DecodedMessage, decodeMessage, type Entry, encodeEntry, Op } from '../wire/ops.js';
import { Reassembly } from '../wire/reassembly.js';
import { hash32 } from '../wire/value-codec.js';
import { DIGEST_BUCKETS, digestOf, isNewer, type ListedVersion, versionsInBuckets } from './digest.js';
import { LatencyHistogram } from './latency.js';
import { Outbox } from './outbox.js';
import { ReceiveWindow } from './receive-window.js';
import { RetransmitBuffer } from './retransmit-buffer.js';

/** The stores the engine replicates. Implemented by the cache registry. */
export interface StoreDirectory {
  store(name: string): CacheStoreApi | undefined;
  /**
   * The store for a cache a remote member wrote to, created with the defaults if needed. The same
   * name must keep giving the same store (stores are never removed): the engine remembers the last.
   */
  storeForRemote(name: string): CacheStoreApi;
  stores(): Iterable<CacheStoreApi>;
}

/** Timers of the engine, in ms. Tests shrink them; the defaults suit a LAN. */
export interface EngineTiming {
  /** Heartbeat (ACK) period: also bounds how long a lost last datagram stays unnoticed. */
  heartbeatMs: number;
  /** Silence after which a member is dropped. */
  memberTimeoutMs: number;
  /** Delay before the first NAK of a gap (lets reordered datagrams arrive). */
  nakDelayMs: number;
  /** Period between NAKs while gaps remain. */
  nakIntervalMs: number;
  /** A frame is resent at most once per this period, however many members NAK it. */
  retransmitHoldoffMs: number;
  /** An incomplete fragmented message is dropped after this long. */
  reassemblyTimeoutMs: number;
  /** getClusterMetrics/getClusterChecksum wait this long for answers. */
  queryTimeoutMs: number;
  /** Anti-entropy period (MCCACHE_CACHE_PULSE). */
  pulseMs: number;
  /** How often a starting member repeats NEW (its announcement), so that a lost one is not fatal. */
  newRetryMs: number;
  /** How many times it repeats NEW. */
  newRetries: number;
  /**
   * After start and after a member appears, extra sync rounds at these delays: a state transfer is
   * a snapshot, and writes racing with it (sent before the newcomer started tracking their
   * sender) would otherwise wait for the next pulse.
   */
  settleSyncMs: number[];
  /**
   * Flow control waits only for receivers that reported within this long: a crashed or cut-off
   * member stops holding the others back well before it is dropped.
   */
  flowStaleMs: number;
  /**
   * Anti-entropy leaves to the DATA streams a difference whose newer version was written less than
   * this long ago, after the lacking member started tracking its writer's stream: that write is most
   * likely still on its way (queued, in flight, or being NAKed), and a sync round that lands in a
   * burst would otherwise push or fetch keys that are about to arrive. A deferred fetch is requested
   * at the first heartbeat past the horizon if the key has not arrived by then. A writer's clock
   * ahead of ours by more than this defers nothing.
   */
  syncHorizonMs: number;
}

/** Bounds on everything the network can grow. Each has a drop counter in the metrics. */
export interface EngineLimits {
  /** Data ops waiting to be sent; beyond it they are coalesced by key, then new keys dropped. */
  maxQueuedOps: number;
  /** Bytes of encoded data ops waiting to be sent (the outbox's log); same policy as maxQueuedOps. */
  maxQueuedBytes: number;
  /** Non-key entries (clear, replies) waiting to be sent. */
  maxQueuedOther: number;
  /** Their encoded bytes (a checksum answer for a large cache is large). */
  maxQueuedOtherBytes: number;
  /** Sent DATA frames kept for retransmission; the oldest go first (a member that misses them is repaired by anti-entropy). */
  maxRetransmitFrames: number;
  /** Bytes of those frames. */
  maxRetransmitBytes: number;
  /** Members tracked; datagrams from further senders are dropped (counted as too-many-members). */
  maxMembers: number;
  /** Seqs a receiver tracks past its contiguous point before giving up and resynchronising. */
  maxWindowSpan: number;
  /** Sends handed to the OS but not completed before the engine holds back. */
  maxPendingSends: number;
  /** Datagrams sent per flush before yielding to the event loop. */
  maxDatagramsPerFlush: number;
  /**
   * Flow control: DATA bytes a member may have sent past what its slowest live receiver reported
   * (as datagrams: this divided by the packet size, at least 16). Keeps a slow receiver's socket
   * buffer (4 MiB asked for) from overflowing into loss and retransmission storms.
   */
  flowWindowBytes: number;
  /** Fragmented messages reassembled at once per sender. */
  reassemblyMessagesPerSender: number;
  /** Bytes held for reassembly per sender. */
  reassemblyBytesPerSender: number;
  /** Bytes held for all senders together (spoofed sender ids cannot multiply the budget). */
  reassemblyBytesTotal: number;
  /** getClusterMetrics/getClusterChecksum calls awaiting answers; beyond it a call returns the local answer only. */
  maxPendingQueries: number;
}

export const DEFAULT_LIMITS: Readonly<EngineLimits> = Object.freeze({
  maxQueuedOps: 250_000,
  maxQueuedBytes: 64 * 1024 * 1024,
  maxQueuedOther: 10_000,
  maxQueuedOtherBytes: 64 * 1024 * 1024,
  maxRetransmitFrames: 32_768,
  maxRetransmitBytes: 48 * 1024 * 1024,
  maxMembers: 256,
  maxWindowSpan: 65_536,
  maxPendingSends: 256,
  maxDatagramsPerFlush: 256,
  flowWindowBytes: 1024 * 1024,
  reassemblyMessagesPerSender: 64,
  reassemblyBytesPerSender: 40 * 1024 * 1024,
  reassemblyBytesTotal: 128 * 1024 * 1024,
  maxPendingQueries: 64,
});

export function defaultTiming(settings: Pick<ClusterSettings, 'pulse'>): EngineTiming {
  return {
    heartbeatMs: 200,
    memberTimeoutMs: 5000,
    nakDelayMs: 3,
    nakIntervalMs: 40,
    retransmitHoldoffMs: 8,
    reassemblyTimeoutMs: 10_000,
    queryTimeoutMs: 1000,
    pulseMs: settings.pulse * 1000,
    newRetryMs: 400,
    newRetries: 4,
    settleSyncMs: [1000, 4000],
    flowStaleMs: 400,
    syncHorizonMs: 1000,
  };
}

/** Answers to cluster-wide queries, computed by the layer above (the node). */
export interface LocalAnswers {
  checksum(cache: string | null, key: string | null): unknown;
  metrics(cache: string | null): unknown;
}

export interface EngineOptions {
  nodeId: number;
  settings: Readonly<ClusterSettings>;
  transport: Transport;
  stores: StoreDirectory;
  answers: LocalAnswers;
  clock: Clock;
  hlc: HybridLogicalClock;
  log: Log;
  timing?: Partial<EngineTiming>;
  limits?: Partial<EngineLimits>;
  /** Runs a flush soon; defaults to setImmediate, tests pass a clock timer. */
  defer?: (run: () => void) => void;
  random?: () => number;
}

/** The engine's counters, part of getLocalMetrics. */
export interface EngineCounters {
  /** Datagrams handed to the transport (DATA, control and retransmitted frames). */
  datagramsSent: number;
  /** Datagrams that arrived from the transport, before any check. */
  datagramsReceived: number;
  /** Datagrams dropped before anything was applied, by reason. */
  dropped: Record<string, number>;
  /** Cache ops (writes, deletes, evictions, repairs) put in DATA messages. */
  opsSent: number;
  /** Cache ops received in DATA messages and passed to the stores. */
  opsReceived: number;
  /** DATA messages sent (a message larger than a datagram goes as several fragments). */
  messagesSent: number;
  /** Frames sent again because a member NAKed them. */
  retransmits: number;
  /** Requests for missing frames sent to their senders. */
  naksSent: number;
  /** NAKs received from members missing our frames. */
  naksReceived: number;
  /** DATA frames received twice (replays, retransmits that crossed the original); dropped. */
  duplicates: number;
  /**
   * Seqs given up on because the sender no longer held them, or whose fragmented message was lost
   * after they counted as received (timed out or undecodable): anti-entropy repairs them.
   */
  unrecoverable: number;
  /** Ops or replies not queued because a send queue was full; anti-entropy repairs lost ops. */
  queueDropped: number;
  /** Times the flush came to a stop at the slowest receiver's full flow-control window. */
  flowBlocked: number;
  /** Progress reports (ACKs) sent early, when a sender's stream advanced, rather than on the heartbeat. */
  progressReports: number;
  /** Ops that could not be encoded (a bug if ever non-zero); logged. */
  encodeErrors: number;
  /** Local changes made after shutdown(): kept in this process, not replicated (the first is logged). */
  writesAfterShutdown: number;
  /**
   * Control entries not sent because even alone they exceed one datagram: a key or cache name of
   * about 1 KB or more, which anti-entropy then cannot list or fetch (the first per op is logged).
   */
  controlTooLarge: number;
  /** Members first heard from (including ones that came back). */
  membersJoined: number;
  /** Members that said goodbye (BYE). */
  membersLeft: number;
  /** Members dropped after staying silent for the member timeout. */
  membersTimedOut: number;
  /** Anti-entropy digests sent (one per cache per round). */
  syncsSent: number;
  /** Versions sent to a member that lacked them or held an older one. */
  repairsPushed: number;
  /** Keys asked of a member that holds a newer version. */
  repairsRequested: number;
  /**
   * Differences anti-entropy left to the DATA streams for now, their newer version being still in
   * flight (a deferred fetch is requested later if the stream does not bring it).
   */
  repairsDeferred: number;
  /**
   * Listings of a key already being fetched (from this member or another), and pushes of a version
   * already pushed within the last heartbeat: not sent twice.
   */
  repairsDeduplicated: number;
  /** Rounds of our own run because a list back never came (lost, refused or its sender gone). */
  repliesMissed: number;
  /** Newcomers this member brought up to date as their donor. */
  stateTransfers: number;
}

interface Member {
  id: number;
  /** Wall-clock ms of first contact (of this incarnation of our view of it). */
  firstHeard: number;
  lastHeard: number;
  /** What we have of its DATA stream; created at first contact. */
  window: ReceiveWindow | undefined;
  /**
   * When our copy of its DATA stream last became complete from some point on (window created, or
   * gaps given up on): its writes stamped since can still come by the stream, older ones only by
   * anti-entropy.
   */
  streamSince: number;
  /** Highest control counter seen, plus recent ones, to drop replayed control frames. */
  controlHighest: number;
  controlRecent: Set<number>;
  /** How far it has our DATA stream (from its ACKs); -1 until it tells us. */
  hasOurs: number;
  /** When it last told us (clock ms); flow control ignores stale reports. */
  hasOursAt: number;
  /** How far we had its DATA stream when we last reported (ACK): it waits for our progress. */
  reportedContiguous: number;
  /** DATA bytes accepted from it since we last reported. */
  bytesSinceReport: number;
}

/** A key anti-entropy fetches from `from`, who listed it at (tsm, writer). */
interface PendingFetch {
  from: number;
  cache: string;
  key: string;
  tsm: number;
  writer: number;
  /** When to request it (again) if it has not arrived by then. */
  due: number;
  /** REQs sent for it so far. */
  requests: number;
}

interface PendingQuery {
  expected: number;
  results: Record<string, unknown>;
  resolve: (results: Record<string, unknown>) => void;
  timer: TimerHandle;
}

/** Seqs are u32 on the wire; well before wrapping, a member takes a fresh identity. */
const SEQ_ROTATE_AT = 0xfff0_0000;
/** While the flow-control window is closed, the flush looks again this often (besides on every ACK). */
const FLOW_RETRY_MS = 5;
const CONTROL_REPLAY_WINDOW = 256;
const EMPTY_FRAME = new Uint8Array(0);
/** Clears from a clock too far ahead kept for a later try (the oldest is dropped past it). */
const MAX_FUTURE_CLEARS = 64;
/** Ranges of missing seqs one NAK asks for (oldest first), and the most a received NAK is read for. */
const MAX_NAK_RANGES = 64;
/** Keys anti-entropy tracks while it fetches them or waits for them (see fetchLater), and their characters. */
const MAX_PENDING_FETCHES = 65_536;
const MAX_PENDING_FETCH_CHARS = 8 * 1024 * 1024;
/** Versions remembered as pushed in the last heartbeat (see pushKeys). */
const MAX_RECENT_PUSHES = 65_536;
/** Buckets whose list back we wait for after answering rounds (128 per member and cache at most). */
const MAX_AWAITED_REPLIES = 32_768;
/** Rounds run because a list back did not come are at least this far apart. */
const FOLLOW_UP_ROUND_MS = 5000;
/** A fetched key that has not arrived after this many heartbeats is requested again (once). */
const FETCH_RETRY_HEARTBEATS = 2;
/** How many departed member ids are remembered (oldest forgotten first). */
const DEPARTED_MEMORY = 1024;

/**
 * Replicates the local changes of every store to the other members, and applies theirs: ordered,
 * NAK-repaired DATA streams, heartbeats and membership, anti-entropy, cluster queries.
 */
export class ClusterEngine implements ReplicationSink {
  /** Counters since start, part of getLocalMetrics. */
  readonly counters: EngineCounters = {
    datagramsSent: 0,
    datagramsReceived: 0,
    dropped: {},
    opsSent: 0,
    opsReceived: 0,
    messagesSent: 0,
    retransmits: 0,
    naksSent: 0,
    naksReceived: 0,
    duplicates: 0,
    unrecoverable: 0,
    queueDropped: 0,
    flowBlocked: 0,
    progressReports: 0,
    encodeErrors: 0,
    writesAfterShutdown: 0,
    controlTooLarge: 0,
    membersJoined: 0,
    membersLeft: 0,
    membersTimedOut: 0,
    syncsSent: 0,
    repairsPushed: 0,
    repairsRequested: 0,
    repairsDeferred: 0,
    repairsDeduplicated: 0,
    repliesMissed: 0,
    stateTransfers: 0,
  };
  /** Replication latency of first-hand ops (apply time minus write time, ms). */
  readonly latency = new LatencyHistogram();

  private nodeIdValue: number;
  private codec: FrameCodec;
  private readonly fernet: Fernet | undefined;
  private readonly clusterId: number;
  private readonly timing: EngineTiming;
  private readonly limits: EngineLimits;
  private readonly members = new Map<number, Member>();
  private readonly departed = new Set<number>();
  /**
   * For members that timed out (with a key only): the highest CONTROL and DATA seqs heard from them.
   * A frame at or below these is a replay of their past traffic (genuine and sealed, so it passes
   * the HMAC within the 60 s token window) and must not bring the member back: a ghost kept alive by
   * replays would hold back stability and, through its stale positions, the flow window. The same
   * member back from a partition sends higher seqs and is welcome. At most DEPARTED_MEMORY ids.
   */
  private readonly silentFloors = new Map<number, { control: number; data: number }>();
  private readonly reassembly: Reassembly;
  private readonly retransmit: RetransmitBuffer;
  private readonly lastResent = new Map<number, number>();
  /** Queued data ops, encoded (see outbox.ts for when they are coalesced by key). */
  private readonly outbox: Outbox;
  /** Encoded replies and clears waiting for the flush (their bytes are counted in pendingOtherBytes). */
  private pendingOther: Uint8Array[] = [];
  private pendingOtherBytes = 0;
  private readonly queries = new Map<number, PendingQuery>();
  private readonly timers = new Set<TimerHandle>();
  private readonly defer: (run: () => void) => void;
  private readonly random: () => number;
  private nextSeq = 1;
  private nextControl = 1;
  private flushScheduled = false;
  private nakScheduled = false;
  private syncScheduled = false;
  private started = false;
  private closed = false;

  constructor(private readonly options: EngineOptions) {
    const { settings, clock } = options;
    this.nodeIdValue = options.nodeId;
    this.timing = { ...defaultTiming(settings), ...options.timing };
    this.limits = { ...DEFAULT_LIMITS, ...options.limits };
    this.fernet = settings.cryptoKeys.length > 0 ? new Fernet(settings.cryptoKeys) : undefined;
    this.clusterId = hash32(settings.cluster);
    this.codec = this.makeCodec();
    this.reassembly = new Reassembly({
      clock,
      timeoutMs: this.timing.reassemblyTimeoutMs,
      maxMessagesPerSender: this.limits.reassemblyMessagesPerSender,
      maxBytesPerSender: this.limits.reassemblyBytesPerSender,
      maxSenders: this.limits.maxMembers,
      maxBytesTotal: this.limits.reassemblyBytesTotal,
    });
    this.outbox = new Outbox({ maxOps: this.limits.maxQueuedOps, maxBytes: this.limits.maxQueuedBytes });
    this.retransmit = new RetransmitBuffer(this.limits.maxRetransmitFrames, this.limits.maxRetransmitBytes);
    this.defer = options.defer ?? ((run) => setImmediate(run));
    this.random = options.random ?? Math.random;
  }

  /** This member's id (changes only if the seq space is about to wrap). */
  get nodeId(): number {
    return this.nodeIdValue;
  }

  /** Ids of the members currently considered alive (not including this one). */
  memberIds(): number[] {
    return [...this.members.keys()];
  }

  /** Opens the transport, announces this member, and starts the timers. */
  async start(): Promise<void> {
    const { transport } = this.options;
    let failure: unknown;
    try {
      await transport.start((datagram) => this.receive(datagram));
    } catch (error) {
      // A transport that keeps trying (NATS) drops and counts sends until it is up; run as usual
      // meanwhile, so that the member joins the cluster once it is, with no restart.
      if (transport.whenConnected === undefined) throw error;
      failure = error;
    }
    if (this.closed) {
      if (failure !== undefined) throw failure;
      return;
    }
    // 'auto' packets follow the interface MTU, which the transport knows only once it is open.
    if (this.options.settings.packetMtu === 'auto') this.codec = this.makeCodec();
    this.started = true;
    this.announce(0);
    this.settleLater();
    this.every(this.timing.heartbeatMs, () => this.heartbeat());
    if (this.timing.pulseMs > 0) this.pulseLater();
    this.scheduleFlush();
    if (failure !== undefined) throw failure;
  }

  /** Flushes what is queued, says BYE, and closes the transport. */
  async shutdown(): Promise<void> {
    if (this.closed) return;
    if (this.started) {
      this.flush(true);
      this.sendControl([{ op: Op.BYE }]);
    }
    this.closed = true;
    for (const timer of this.timers) timer.cancel();
    this.timers.clear();
    for (const query of this.queries.values()) {
      query.timer.cancel();
      query.resolve(query.results);
    }
    this.queries.clear();
    await this.waitForSends(1000);
    await this.options.transport.close();
  }

  // ---------------------------------------------------------------------------------------------
  // Outbound

  /** ReplicationSink: a local change to replicate. Cheap and synchronous (the proxy's write path). */
  localChange(
    cache: string,
    kind: ChangeKind,
    key: string,
    tsm: number,
    crcHigh: number,
    crcLow: number,
    encoded: Uint8Array | undefined,
  ): void {
    if (this.closed) {
      this.counters.writesAfterShutdown++;
      if (this.counters.writesAfterShutdown === 1) {
        this.options.log.warn(
          `cache "${cache}": a change after shutdown() is kept in this process only; it is not replicated (further ones are counted in writesAfterShutdown)`,
          { key },
        );
      }
      return;
    }
    this.enqueueData(kind, cache, key, tsm, this.nodeIdValue, crcHigh, crcLow, encoded);
  }

  /** Clears a cache (or all) on every member, this one included, by a reliable RST. */
  clearCache(cache: string | null, target: number): void {
    const tsm = this.options.hlc.tick();
    if (target === 0 || target === this.nodeIdValue) this.applyClear(cache, tsm, this.nodeIdValue);
    if (target !== this.nodeIdValue) {
      this.enqueueOther({ op: Op.RST, cache, tsm, writer: this.nodeIdValue, target });
    }
  }

  /** Asks every member (or one) for its checksums or metrics; resolves with what arrives in time. */
  query(
    kind: 'checksum' | 'metrics',
    cache: string | null,
    key: string | null,
    target: number,
  ): Promise<Record<string, unknown>> {
    const results: Record<string, unknown> = {};
    const { answers } = this.options;
    if (target === 0 || target === this.nodeIdValue) {
      results[nodeIdHex(this.nodeIdValue)] =
        kind === 'checksum' ? answers.checksum(cache, key) : answers.metrics(cache);
    }
    const expected = target === 0 ? this.members.size : target === this.nodeIdValue ? 0 : 1;
    if (expected === 0 || this.closed || this.queries.size >= this.limits.maxPendingQueries) {
      return Promise.resolve(results);
    }
    let requestId = 0;
    while (requestId === 0 || this.queries.has(requestId)) requestId = (this.random() * 0xffffffff) >>> 0;
    return new Promise((resolve) => {
      const timer = this.options.clock.setTimeout(
        () => this.finishQuery(requestId),
        this.timing.queryTimeoutMs,
        // Keeps the process alive until the answers are in: a script may do nothing but await them.
        true,
      );
      this.queries.set(requestId, { expected, results, resolve, timer });
      this.sendControl([
        kind === 'checksum'
          ? { op: Op.INQ, requestId, target, cache, key }
          : { op: Op.MET, requestId, target, cache },
      ]);
    });
  }

  private finishQuery(requestId: number): void {
    const query = this.queries.get(requestId);
    if (!query) return;
    this.queries.delete(requestId);
    query.timer.cancel();
    query.resolve(query.results);
  }

  private enqueueData(
    op: number,
    cache: string,
    key: string,
    tsm: number,
    writer: number,
    crcHigh: number,
    crcLow: number,
    value: Uint8Array | undefined,
  ): void {
    const dropped = this.outbox.dropped;
    try {
      this.outbox.add(op, cache, key, tsm, writer, crcHigh, crcLow, value);
    } catch (error) {
      this.countEncodeError(op, error);
      return;
    }
    // Dropped ops are found and repaired by the next anti-entropy pulse.
    if (this.outbox.dropped !== dropped) this.counters.queueDropped++;
    this.scheduleFlush();
  }

  /**
   * True (and counted) when the queue of replies and clears has no room left: checked before an
   * answer is computed, since a checksum of a large cache costs time in proportion to its size.
   */
  private otherQueueFull(): boolean {
    if (
      this.pendingOther.length < this.limits.maxQueuedOther &&
      this.pendingOtherBytes < this.limits.maxQueuedOtherBytes
    ) {
      return false;
    }
    this.counters.queueDropped++;
    return true;
  }

  private enqueueOther(entry: Entry): void {
    // Encoded now, so that the queue is bounded by what it really holds: one checksum answer for a
    // large cache can take megabytes, and any member (anyone, without a key) may ask.
    if (this.otherQueueFull()) return;
    const bytes = this.encodeOrCount(entry);
    if (!bytes) return;
    if (this.pendingOtherBytes + bytes.length > this.limits.maxQueuedOtherBytes) {
      this.counters.queueDropped++;
      return;
    }
    this.pendingOther.push(bytes);
    this.pendingOtherBytes += bytes.length;
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushScheduled || !this.started || this.closed) return;
    this.flushScheduled = true;
    this.defer(() => {
      this.flushScheduled = false;
      this.flush(false);
    });
  }

  /** Packs queued entries into as few datagrams as possible. Holds back while the OS is busy. */
  private flush(everything: boolean): void {
    if (!this.started || this.closed) return;
    const { transport } = this.options;
    const budget = this.codec.maxFragmentPayload;
    // Entries are copied straight into the message being filled (no buffer per op); fragment()
    // copies the message into frames, so one scratch message serves the whole flush.
    const message = this.scratchMessage(budget);
    let used = 0;
    let datagrams = 0;
    const emit = () => {
      if (used === 0) return;
      datagrams += this.sendData(message.subarray(0, used));
      used = 0;
    };
    const append = (head: Uint8Array, tail: Uint8Array | undefined) => {
      const size = head.length + (tail?.length ?? 0);
      if (size > MAX_MESSAGE_BYTES) {
        // Only a reply could be this large (values are capped below it); never throw from here.
        this.counters.encodeErrors++;
        this.options.log.error('an op is larger than a message can be; not sent', { bytes: size });
        return;
      }
      if (size > budget) {
        // One large op: a message of its own, fragmented.
        emit();
        datagrams += this.sendData(tail ? Buffer.concat([head, tail], size) : head);
      } else {
        if (used + size > budget) emit();
        message.set(head, used);
        if (tail) message.set(tail, used + head.length);
        used += size;
      }
      this.counters.opsSent++;
    };
    // Flow control: how many more DATA datagrams the slowest live receiver has room for. Frames
    // still waiting from an earlier flush (a message larger than the window) count against it, and
    // no new op is taken while they wait.
    const allowance = everything ? Number.POSITIVE_INFINITY : this.flowAllowance();
    const backlog = this.unsent.length - this.unsentFrom;
    const busy = () =>
      !everything &&
      (backlog + datagrams >= this.limits.maxDatagramsPerFlush ||
        backlog + datagrams >= allowance ||
        transport.pendingSends >= this.limits.maxPendingSends);

    if (this.pendingOther.length > 0) {
      const other = this.pendingOther;
      this.pendingOther = [];
      this.pendingOtherBytes = 0;
      for (const bytes of other) append(bytes, undefined);
    }
    const outbox = this.outbox;
    for (let size = outbox.nextSize(); size > 0 && !busy(); size = outbox.nextSize()) {
      if (size > budget) {
        // One large op: a message of its own, fragmented (the view stays valid: nothing is added meanwhile).
        emit();
        const op = outbox.takeOne()!;
        if (size > MAX_MESSAGE_BYTES) {
          // A value at the 16 MiB cap with a very long key; never throw from here.
          this.counters.encodeErrors++;
          this.options.log.error('an op is larger than a message can be; not sent', { bytes: size });
          continue;
        }
        datagrams += this.sendData(op);
        this.counters.opsSent++;
        continue;
      }
      if (used + size > budget) emit();
      // Copies as many whole ops as fit, in runs, straight into the message.
      this.counters.opsSent += outbox.takeInto(message, used, budget);
      used = outbox.lastEnd;
    }
    emit();
    const transmitted = this.transmitUnsent(
      everything ? Number.POSITIVE_INFINITY : Math.min(allowance, this.limits.maxDatagramsPerFlush),
      everything,
    );
    const waiting = outbox.size > 0 || this.pendingOther.length > 0 || this.unsent.length > 0;
    const flowWaiting = waiting && transmitted >= allowance;
    if (flowWaiting && !this.flowWaiting) this.counters.flowBlocked++;
    this.flowWaiting = flowWaiting;
    if (waiting && this.retryTimer === undefined) {
      // Let the OS drain; a timer rather than setImmediate so a saturated socket does not spin.
      // Held by the window, the ACK that opens it flushes at once; the timer is only a fallback
      // (a report lost, or a receiver's reports going stale). One such timer at a time.
      const timer = this.options.clock.setTimeout(
        () => {
          this.timers.delete(timer);
          this.retryTimer = undefined;
          this.scheduleFlush();
        },
        flowWaiting ? FLOW_RETRY_MS : 1,
      );
      this.retryTimer = timer;
      this.timers.add(timer);
    }
  }

  /** The pending retry of a flush that left work behind, if any. */
  private retryTimer: TimerHandle | undefined;

  /** The last flush stopped at the flow-control window; an ACK that opens it flushes again. */
  private flowWaiting = false;

  /** DATA datagrams the window allows now: the slowest fresh report decides; unlimited if none. */
  private flowAllowance(): number {
    const now = this.options.clock.now();
    let slowest = Number.POSITIVE_INFINITY;
    for (const member of this.members.values()) {
      if (
        member.hasOurs >= 0 &&
        now - member.hasOursAt <= this.timing.flowStaleMs &&
        member.hasOurs < slowest
      ) {
        slowest = member.hasOurs;
      }
    }
    if (slowest === Number.POSITIVE_INFINITY) return slowest;
    return Math.max(0, this.windowDatagrams - (this.sentThrough - slowest));
  }

  /** The flow-control window in datagrams, for the current packet size. */
  private windowDatagrams = 16;

  private scratch: Buffer | undefined;
  private scratchMessage(size: number): Buffer {
    if (!this.scratch || this.scratch.length !== size) this.scratch = Buffer.allocUnsafe(size);
    return this.scratch;
  }

  /**
   * Puts one message on the reliable DATA stream: numbers its frames and queues them for
   * {@link transmitUnsent} (the flush sends them as the flow-control window allows, so a value of
   * thousands of fragments does not go out in one burst). Returns the number of datagrams.
   */
  private sendData(message: Uint8Array): number {
    if (this.nextSeq >= SEQ_ROTATE_AT) this.rotateIdentity();
    const frames = this.codec.fragment(FrameKind.Data, this.nextSeq, message);
    this.nextSeq += frames.length;
    for (const frame of frames) this.unsent.push(frame);
    this.counters.messagesSent++;
    return frames.length;
  }

  /** DATA frames numbered but not sent yet, oldest first from `unsentFrom`. */
  private unsent: Uint8Array[] = [];
  private unsentFrom = 0;

  /** The last DATA seq actually sent: what receivers can have, and what a NAK may ask for. */
  private get sentThrough(): number {
    return this.nextSeq - 1 - (this.unsent.length - this.unsentFrom);
  }

  /** Sends up to `limit` queued DATA frames (fewer while the OS is busy, unless `everything`). */
  private transmitUnsent(limit: number, everything: boolean): number {
    const { transport } = this.options;
    let sent = 0;
    while (
      this.unsentFrom < this.unsent.length &&
      sent < limit &&
      (everything || transport.pendingSends < this.limits.maxPendingSends)
    ) {
      const frame = this.unsent[this.unsentFrom]!;
      // Kept for resending from the moment it is sent, not before: the buffer's bounds may then
      // only push out frames receivers could have had (lowestRetained never passes sentThrough).
      this.retransmit.add(this.sentThrough + 1, frame);
      this.transmit(frame);
      this.unsent[this.unsentFrom++] = EMPTY_FRAME;
      sent++;
    }
    if (this.unsentFrom === this.unsent.length) {
      this.unsent.length = 0;
      this.unsentFrom = 0;
    } else if (this.unsentFrom >= 1024 && this.unsentFrom * 2 >= this.unsent.length) {
      // Sends held back by the OS while writes go on: drop the sent slots now and then.
      this.unsent.splice(0, this.unsentFrom);
      this.unsentFrom = 0;
    }
    return sent;
  }

  /** Clears refused for a stamp too far ahead, tried again on each heartbeat (see dispatch, RST). */
  private futureClears: Array<{ cache: string | null; tsm: number; writer: number }> = [];

  private applyClear(cache: string | null, tsm: number, writer: number): void {
    for (const store of this.options.stores.stores()) {
      if (cache === null || store.name === cache) store.clearBefore(tsm, writer);
    }
  }

  /** Applies the refused clears whose stamp our clock has come within reach of. */
  private retryFutureClears(): void {
    const waiting = this.futureClears;
    this.futureClears = [];
    for (const clear of waiting) {
      if (this.options.hlc.observe(clear.tsm)) this.applyClear(clear.cache, clear.tsm, clear.writer);
      else this.futureClears.push(clear);
    }
  }

  /** Op codes whose oversized control entry was already logged (see sendControl). */
  private readonly warnedTooLarge = new Set<number>();

  /** Sends unsequenced control entries, each message kept to one datagram. */
  private sendControl(entries: Entry[]): void {
    if (!this.started || this.closed) return;
    const budget = this.codec.maxFragmentPayload;
    let parts: Uint8Array[] = [];
    let size = 0;
    const emit = () => {
      if (parts.length === 0) return;
      const frames = this.codec.fragment(FrameKind.Control, this.nextControl, Buffer.concat(parts, size));
      this.nextControl += frames.length;
      for (const frame of frames) this.transmit(frame);
      parts = [];
      size = 0;
    };
    for (const entry of entries) {
      const bytes = this.encodeOrCount(entry);
      if (!bytes) continue;
      if (bytes.length > budget) {
        // Receivers drop fragmented control frames, so such an entry would be lost everywhere. The
        // senders chunk their lists to fit; what is left is one key or cache name too long for a
        // datagram (about 1 KB at the smallest sealed packet size): counted, and logged once per op.
        this.counters.controlTooLarge++;
        if (!this.warnedTooLarge.has(entry.op)) {
          this.warnedTooLarge.add(entry.op);
          this.options.log.warn(
            `a control entry (op ${entry.op}) of ${bytes.length} bytes does not fit one datagram (${budget}): not sent; ` +
              'a key or cache name this long cannot be compared or fetched by anti-entropy (data ops still carry it)',
          );
        }
        continue;
      }
      if (size + bytes.length > budget) emit();
      parts.push(bytes);
      size += bytes.length;
    }
    emit();
  }

  /** Encodes an entry; one that cannot be encoded is a bug, counted and logged, never thrown. */
  private encodeOrCount(entry: Entry): Uint8Array | undefined {
    try {
      return encodeEntry(entry);
    } catch (error) {
      this.countEncodeError(entry.op, error);
      return undefined;
    }
  }

  private countEncodeError(op: number, error: unknown): void {
    this.counters.encodeErrors++;
    this.options.log.error('could not encode an op', { op, error: (error as Error).message });
  }

  private transmit(frame: Uint8Array): void {
    this.options.transport.send(this.codec.toDatagram(frame));
    this.counters.datagramsSent++;
  }

  private rotateIdentity(): void {
    let id = 0;
    while (id === 0 || id === this.nodeIdValue) id = (this.random() * 0xffffffff) >>> 0;
    this.options.log.warn('sequence space nearly used up: taking a fresh node id', {
      old: nodeIdHex(this.nodeIdValue),
      new: nodeIdHex(id),
    });
    // What the old identity numbered goes out under it first, window or not.
    this.transmitUnsent(Number.POSITIVE_INFINITY, true);
    this.sendControl([{ op: Op.BYE }]);
    this.nodeIdValue = id;
    this.codec = this.makeCodec();
    this.nextSeq = 1;
    this.nextControl = 1;
    this.retransmit.releaseUpTo(Number.MAX_SAFE_INTEGER);
    this.lastResent.clear();
    this.announce(0);
  }

  /** The datagram size to fill: the setting, or for 'auto' what the transport's interface carries. */
  private packetBytes(): number {
    const setting = this.options.settings.packetMtu;
    if (setting !== 'auto') return setting;
    const carried = this.options.transport.maxDatagramBytes;
    // An interface below the protocol's minimum (MIN_MTU, 1200) still gets the minimum: IP fragments it.
    return carried === undefined
      ? ETHERNET_PACKET_BYTES
      : Math.max(MIN_MTU, Math.min(carried, AUTO_PACKET_CAP));
  }

  private makeCodec(): FrameCodec {
    this.windowDatagrams = Math.max(16, Math.floor(this.limits.flowWindowBytes / this.packetBytes()));
    return new FrameCodec({
      clusterId: this.clusterId,
      sender: this.nodeIdValue,
      mtu: this.packetBytes(),
      fernet: this.fernet,
      nowSeconds: () => Math.floor(this.options.clock.now() / 1000),
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Inbound

  private drop(reason: string): void {
    this.counters.dropped[reason] = (this.counters.dropped[reason] ?? 0) + 1;
  }

  /** The receive path. Anything can arrive here; nothing it does may throw. */
  private receive(datagram: Buffer): void {
    if (this.closed) return;
    try {
      this.receiveUnsafe(datagram);
    } catch (error) {
      // A bug, not an input: inputs are validated. Count it and keep the process alive.
      this.drop('internal-error');
      this.options.log.error('receive path failed', { error: String((error as Error)?.stack ?? error) });
    }
  }

  private receiveUnsafe(datagram: Buffer): void {
    const sender = peekSender(datagram);
    if (sender === this.nodeIdValue) {
      this.drop('self');
      return;
    }
    this.counters.datagramsReceived++;
    const frame = this.codec.fromDatagram(datagram);
    if (!frame.ok) {
      this.drop(frame.reason);
      return;
    }
    const { header, payload } = frame;
    if (this.departed.has(header.sender)) {
      this.drop('departed');
      return;
    }
    // Nothing from a frame counts (no member created, no seq marked received) until its payload
    // decodes: on an unkeyed network a forged frame must not shadow the real one with its seq.
    const member = this.members.get(header.sender);
    let message: Buffer | undefined = payload;
    if (header.kind === FrameKind.Data) {
      if (member && !this.plausibleData(member, header)) return;
      if (header.fragmentCount > 1) {
        // A lone fragment cannot be validated; reassembly bounds what it can hold. Its seq counts
        // as received only if reassembly kept it: one refused for lack of budget stays missing, so
        // the NAKs ask for it again once there is room.
        message = this.reassembly.add(header, payload);
        if (member && this.reassembly.lastFragmentKept) {
          this.acceptData(member, header);
          this.noteProgress(member, datagram.length);
        }
        if (!message) return;
      }
    } else if (header.fragmentCount !== 1) {
      this.drop('fragmented-control');
      return;
    }
    // A nested receive (a transport that delivers from inside a dispatch) decodes into its own.
    const decoded = this.idleDecoded ?? new DecodedMessage();
    this.idleDecoded = undefined;
    try {
      const rejection = decodeMessage(message, decoded);
      if (rejection !== undefined) {
        this.drop(rejection);
        if (member && header.kind === FrameKind.Data) {
          if (header.fragmentCount > 1) {
            // The fragments' seqs already count as received: what they carried is lost to the stream.
            this.lostFromStream(header.fragmentCount);
          } else if (this.fernet && this.acceptData(member, header)) {
            // Sealed, so genuinely its frame (say, from a newer version with an op we do not know):
            // a resend would fail the same way, and a gap NAKed forever would close its flow window
            // to us. Count it received, and leave the content to anti-entropy. (Without a key a
            // forged frame must not shadow the real one, so the seq stays missing.)
            this.lostFromStream(1);
          }
        }
        return;
      }
      this.handleMessage(header, decoded, datagram.length, member);
    } finally {
      decoded.release();
      this.idleDecoded = decoded;
    }
  }

  /**
   * The message of a frame, decoded (so the frame is genuine as far as can be told): apply it.
   * `known` is its sender if already a member; otherwise it becomes one here.
   */
  private handleMessage(
    header: FrameHeader,
    decoded: DecodedMessage,
    datagramBytes: number,
    known: Member | undefined,
  ): void {
    if (!known && this.replaysSilentMember(header)) {
      this.drop(header.kind === FrameKind.Data ? 'duplicate' : 'replayed-control');
      return;
    }
    const member = known ?? this.memberFor(header.sender);
    if (!member) {
      this.drop('too-many-members');
      return;
    }
    const now = this.options.clock.now();
    const isData = header.kind === FrameKind.Data;
    if (isData) {
      if (header.fragmentCount === 1) {
        if (!this.acceptData(member, header)) return;
        this.noteProgress(member, datagramBytes);
      }
    } else if (!this.acceptControl(member, header)) {
      return;
    }
    // Only now: a duplicate or a replayed frame says nothing about whether the member is alive.
    member.lastHeard = now;
    const count = decoded.count;
    this.counters.opsReceived += count;
    for (let i = 0; i < count; i++) {
      const control = decoded.control[i];
      if (control !== undefined) this.dispatch(member, control, header.kind);
      else if (isData) this.applyData(member, decoded, i, now);
      else this.drop('data-on-control');
    }
  }

  /** Cheap checks before decoding: a DATA seq already received or implausibly far ahead is dropped. */
  private plausibleData(member: Member, header: FrameHeader): boolean {
    const window = member.window;
    if (!window) return true;
    if (header.seq > window.contiguous + this.limits.maxWindowSpan) {
      // Never let one frame (corrupt, or forged on an unkeyed network) drag the window along. A
      // sender truly that far ahead is caught up by its next ACK.
      this.drop('out-of-window');
      return false;
    }
    if (window.has(header.seq)) {
      this.counters.duplicates++;
      this.drop('duplicate');
      return false;
    }
    return true;
  }

  /** Marks a DATA seq received (NAK tracking); false if it is a duplicate. */
  private acceptData(member: Member, header: FrameHeader): boolean {
    if (!member.window) {
      // First contact: earlier seqs predate us and are covered by state transfer.
      member.window = new ReceiveWindow(header.seq - header.fragmentIndex - 1, this.limits.maxWindowSpan);
      member.streamSince = this.options.clock.now();
    }
    if (!member.window.accept(header.seq)) {
      this.counters.duplicates++;
      this.drop('duplicate');
      return false;
    }
    this.watchGaps(member);
    return true;
  }

  /** Anti-replay for CONTROL frames; false for a replay. */
  private acceptControl(member: Member, header: FrameHeader): boolean {
    // Control frames are not retransmitted; with a key, a bounded anti-replay window drops
    // repeats. Without a key anyone can forge frames anyway, and a corrupt counter must not
    // silence a member, so the window is only kept for authenticated traffic.
    if (!this.fernet) return true;
    const seq = header.seq;
    if (seq <= member.controlHighest - CONTROL_REPLAY_WINDOW || member.controlRecent.has(seq)) {
      this.drop('replayed-control');
      return false;
    }
    member.controlRecent.add(seq);
    if (seq > member.controlHighest) {
      member.controlHighest = seq;
      if (member.controlRecent.size > CONTROL_REPLAY_WINDOW) {
        for (const old of member.controlRecent) {
          if (old <= seq - CONTROL_REPLAY_WINDOW) member.controlRecent.delete(old);
        }
      }
    }
    return true;
  }

  private memberFor(id: number): Member | undefined {
    const known = this.members.get(id);
    if (known) return known;
    if (this.members.size >= this.limits.maxMembers) return undefined;
    const member: Member = {
      id,
      firstHeard: this.options.clock.now(),
      lastHeard: this.options.clock.now(),
      window: undefined,
      streamSince: Number.POSITIVE_INFINITY,
      controlHighest: 0,
      controlRecent: new Set(),
      hasOurs: -1,
      hasOursAt: 0,
      reportedContiguous: -1,
      bytesSinceReport: 0,
    };
    this.members.set(id, member);
    this.counters.membersJoined++;
    if (this.options.log.infoOn)
      this.options.log.info('member joined', { member: nodeIdHex(id), members: this.members.size });
    this.onContact(member);
    return member;
  }

  /** A member we did not know (new, restarted, or back from a partition): sync with it. */
  private onContact(member: Member): void {
    // One donor per newcomer, not a stampede: the lowest id among the others.
    let donor = this.nodeIdValue;
    for (const id of this.members.keys()) if (id !== member.id && id < donor) donor = id;
    if (donor === this.nodeIdValue) {
      this.counters.stateTransfers++;
      this.scheduleSync();
      this.settleLater();
    }
  }

  /** Schedules the settle sync rounds (see EngineTiming.settleSyncMs). */
  private settleLater(): void {
    for (const delay of this.timing.settleSyncMs) {
      const timer = this.options.clock.setTimeout(() => {
        this.timers.delete(timer);
        if (!this.closed) this.sendSync();
      }, delay);
      this.timers.add(timer);
    }
  }

  /** Handles an entry other than a data op (those are applied from the message's columns). */
  private dispatch(member: Member, entry: Entry, kind: number): void {
    switch (entry.op) {
      case Op.RST:
        if (kind !== FrameKind.Data) return this.drop('data-on-control');
        if (entry.target !== 0 && entry.target !== this.nodeIdValue) return;
        // A clear stamped more than MAX_CLOCK_SKEW_MS ahead of our clock is refused whole, decided
        // once here so that every store agrees (observe() then leaves the HLC alone). Unlike a
        // write, nothing would repair a lost clear, so it is kept and tried again on the heartbeat
        // until our clock comes within reach of its stamp.
        if (!this.options.hlc.observe(entry.tsm)) {
          this.drop('from-future');
          if (this.futureClears.length >= MAX_FUTURE_CLEARS) this.futureClears.shift();
          this.futureClears.push({ cache: entry.cache, tsm: entry.tsm, writer: entry.writer });
          return;
        }
        this.applyClear(entry.cache, entry.tsm, entry.writer);
        return;
      case Op.ACK:
        return this.onAck(member, entry);
      case Op.NAK:
        if (entry.target === this.nodeIdValue) this.onNak(entry.missing);
        return;
      case Op.NEW:
        // memberFor() already treated a first contact; a NEW from a known member is a retry.
        return;
      case Op.BYE:
        return this.removeMember(member.id, 'left');
      case Op.SYC:
        return this.onSync(member, entry.cache, entry.buckets);
      case Op.SYD:
        if (entry.target === this.nodeIdValue) this.onSyncDetail(member, entry);
        return;
      case Op.REQ:
        if (entry.target === this.nodeIdValue) this.pushKeys(entry.cache, entry.keys);
        return;
      case Op.STE:
        return;
      case Op.INQ:
        if (entry.target === 0 || entry.target === this.nodeIdValue) {
          if (this.otherQueueFull()) return;
          const result = this.options.answers.checksum(entry.cache, entry.key);
          this.enqueueOther({ op: Op.CHK, requestId: entry.requestId, target: member.id, result });
        }
        return;
      case Op.MET:
        if (entry.target === 0 || entry.target === this.nodeIdValue) {
          if (this.otherQueueFull()) return;
          const result = this.options.answers.metrics(entry.cache);
          this.enqueueOther({ op: Op.MTR, requestId: entry.requestId, target: member.id, result });
        }
        return;
      case Op.CHK:
      case Op.MTR:
        if (entry.target === this.nodeIdValue) this.onAnswer(member.id, entry.requestId, entry.result);
        return;
    }
  }

  /** Applies data op `index` of a message; `now` is the datagram's arrival time (one clock read per datagram). */
  private applyData(member: Member, message: DecodedMessage, index: number, now: number): void {
    const store = this.remoteStore(message.cache[index]!);
    if (!store) return;
    const tsm = message.tsm[index]!;
    const writer = message.writer[index]!;
    const outcome = store.applyRemoteOp(
      message.op[index]! as ChangeKind,
      message.key[index]!,
      tsm,
      writer,
      message.crcHigh[index]!,
      message.crcLow[index]!,
      message.source,
      message.valueStart[index]!,
      message.valueLength[index]!,
    );
    // Replication latency of first-hand writes only: not state transfer of writes older than our
    // contact with their writer.
    const writtenAt = hlcToMillis(tsm);
    if (outcome === ApplyOutcome.Applied && writer === member.id && writtenAt >= member.firstHeard) {
      this.latency.record(now - writtenAt);
    }
  }

  /** A decoded message not in use, reused by the next receive. */
  private idleDecoded: DecodedMessage | undefined = new DecodedMessage();

  /** The last store remoteStore() returned, and its name: a datagram names one cache op after op. */
  private lastRemoteName: string | undefined;
  private lastRemote: CacheStoreApi | undefined;

  /** The store a remote op names; a name the registry refuses (or a full registry) is counted. */
  private remoteStore(name: string): CacheStoreApi | undefined {
    // The decoder hands out the same string for a repeated name, so this is a pointer compare.
    // Stores are never removed from the registry, so a remembered one stays valid.
    if (name === this.lastRemoteName) return this.lastRemote;
    try {
      const store = this.options.stores.storeForRemote(name);
      this.lastRemoteName = name;
      this.lastRemote = store;
      return store;
    } catch {
      this.drop('cache-refused');
      return undefined;
    }
  }

  private onAnswer(from: number, requestId: number, result: unknown): void {
    const query = this.queries.get(requestId);
    if (!query) return;
    const name = nodeIdHex(from);
    if (!(name in query.results) || from !== this.nodeIdValue) query.results[name] = result;
    const remote = Object.keys(query.results).filter((k) => k !== nodeIdHex(this.nodeIdValue)).length;
    if (remote >= query.expected) this.finishQuery(requestId);
  }

  // ---------------------------------------------------------------------------------------------
  // Delivery: heartbeats, NAKs, retransmission, stability

  private heartbeat(): void {
    const now = this.options.clock.now();
    for (const member of [...this.members.values()]) {
      if (now - member.lastHeard > this.timing.memberTimeoutMs) this.removeMember(member.id, 'timed out');
    }
    if (this.futureClears.length > 0) this.retryFutureClears();
    this.reassembly.expire((sender, kind, fragmentsHeld) => {
      // The fragments it kept count as received, so no NAK will ask for them again.
      if (kind === FrameKind.Data && this.members.has(sender)) this.lostFromStream(fragmentsHeld);
    });
    this.sendAck();
    this.sendDueFetches(now);
  }

  /** An ACK: our stream's extent, and how far we have every member's (STABLE and flow control). */
  private sendAck(): void {
    const received: Array<[number, number]> = [];
    for (const member of this.members.values()) {
      member.bytesSinceReport = 0;
      if (!member.window) continue;
      member.reportedContiguous = member.window.contiguous;
      received.push([member.id, member.window.contiguous]);
    }
    const highestSeq = this.sentThrough;
    const lowestRetained = this.retransmit.lowestRetained(this.sentThrough + 1);
    // One datagram holds about a hundred members' positions; a larger cluster gets several ACKs
    // (each receiver only looks for its own position, and the stream extent repeats harmlessly).
    const perEntry = this.pairsPerControlEntry();
    const entries: Entry[] = [];
    for (let from = 0; from === 0 || from < received.length; from += perEntry) {
      entries.push({
        op: Op.ACK,
        highestSeq,
        lowestRetained,
        received: received.slice(from, from + perEntry),
      });
    }
    this.sendControl(entries);
  }

  /**
   * How many u32 pairs (ACK positions, NAK ranges) one control entry may carry so that it fits one
   * datagram: a CBOR pair of two u32 takes at most 11 bytes, and 64 bytes cover the entry's head.
   */
  private pairsPerControlEntry(): number {
    return Math.max(1, Math.floor((this.codec.maxFragmentPayload - 64) / 11));
  }

  /**
   * After DATA from a sender: once our contiguous point in its stream has moved a quarter of the
   * flow-control window past what we last reported, report (ACK) without waiting for the heartbeat.
   * A retransmission that fills a gap moves it at once, so a sender held at its window by a loss
   * resumes a round trip after the repair, not at the next heartbeat.
   */
  private noteProgress(member: Member, bytes: number): void {
    const window = member.window;
    member.bytesSinceReport += bytes;
    if (!window || this.reportScheduled) return;
    // Bytes, because the sender's window is counted at its packet size, which may differ from ours;
    // and our contiguous point, because a repaired gap moves it without many new bytes.
    const due =
      member.bytesSinceReport >= this.limits.flowWindowBytes / 4 ||
      window.contiguous - member.reportedContiguous >= Math.max(4, this.windowDatagrams >> 2);
    if (!due) return;
    this.reportScheduled = true;
    // After the rest of this turn's datagrams, so that one ACK covers them all.
    this.defer(() => {
      this.reportScheduled = false;
      if (this.closed) return;
      this.counters.progressReports++;
      this.sendAck();
    });
  }

  private reportScheduled = false;

  private onAck(member: Member, entry: Extract<Entry, { op: typeof Op.ACK }>): void {
    const span = this.limits.maxWindowSpan;
    let window = member.window;
    if (
      !window ||
      entry.highestSeq > window.contiguous + span ||
      entry.highestSeq + span < window.contiguous
    ) {
      // First contact, or our view of its stream is far off (we fell behind, or a corrupt frame
      // misled us): restart from the sender's own account and let anti-entropy fill the gap.
      if (window) this.lostFromStream(Math.max(0, entry.highestSeq - window.contiguous));
      window = new ReceiveWindow(entry.highestSeq, span);
      member.window = window;
      member.streamSince = this.options.clock.now();
    }
    const current = window;
    current.noteHighest(entry.highestSeq);
    if (current.contiguous < entry.lowestRetained - 1 && entry.lowestRetained - 1 <= entry.highestSeq) {
      // The sender no longer holds what we miss: give up on it and let anti-entropy repair.
      this.gaveUpOn(member, current.skipTo(entry.lowestRetained - 1));
    }
    this.watchGaps(member);
    for (const [node, contiguous] of entry.received) {
      if (node === this.nodeIdValue) {
        // The latest report, not the maximum: one bogus report must not free frames for good.
        member.hasOurs = Math.min(contiguous, this.sentThrough);
        member.hasOursAt = this.options.clock.now();
        this.releaseStable();
        // The window may have opened: send what waits (the flush checks the window again).
        if (this.flowWaiting) this.scheduleFlush();
      }
    }
  }

  /** `seqs` of a member's DATA stream were marked received but their ops are lost: anti-entropy repairs them. */
  private lostFromStream(seqs: number): void {
    this.counters.unrecoverable += seqs;
    this.scheduleSync();
  }

  /** We skipped `seqs` of a member's stream: lost to it, and its stream is complete from now on. */
  private gaveUpOn(member: Member, seqs: number): void {
    this.lostFromStream(seqs);
    member.streamSince = this.options.clock.now();
  }

  /** Frees retransmit frames every live member has received. */
  private releaseStable(): void {
    let stable = this.sentThrough;
    // A member that has not reported yet (-1) holds everything back until its first ACK.
    for (const member of this.members.values()) stable = Math.min(stable, member.hasOurs);
    this.retransmit.releaseUpTo(stable);
  }

  private watchGaps(member: Member): void {
    const window = member.window;
    if (!window) return;
    if (window.overflowing) {
      this.gaveUpOn(member, window.skipTo(window.highest - this.limits.maxWindowSpan));
    }
    if (window.hasGaps && !this.nakScheduled) {
      this.nakScheduled = true;
      const timer = this.options.clock.setTimeout(() => {
        this.timers.delete(timer);
        this.nakScheduled = false;
        this.sendNaks();
      }, this.timing.nakDelayMs);
      this.timers.add(timer);
    }
  }

  private sendNaks(): void {
    const naks: Entry[] = [];
    const ranges = Math.min(MAX_NAK_RANGES, this.pairsPerControlEntry());
    for (const member of this.members.values()) {
      if (!member.window?.hasGaps) continue;
      naks.push({ op: Op.NAK, target: member.id, missing: member.window.missing(ranges) });
    }
    if (naks.length === 0) return;
    this.counters.naksSent += naks.length;
    this.sendControl(naks);
    // Keep asking while gaps remain (NAKs and retransmissions can be lost too).
    this.nakScheduled = true;
    const timer = this.options.clock.setTimeout(() => {
      this.timers.delete(timer);
      this.nakScheduled = false;
      this.sendNaks();
    }, this.timing.nakIntervalMs);
    this.timers.add(timer);
  }

  private onNak(missing: Array<[number, number]>): void {
    this.counters.naksReceived++;
    const now = this.options.clock.now();
    let budget = this.limits.maxDatagramsPerFlush * 4;
    // The work one NAK may cause, resent or not: a receiver asks for at most MAX_NAK_RANGES ranges
    // within its window span, so a NAK asking for more (overlapping ranges over the whole buffer,
    // all in holdoff) is cut short rather than walked.
    let examine = this.limits.maxWindowSpan;
    const sentThrough = this.sentThrough;
    const lowest = this.retransmit.lowestRetained(sentThrough + 1);
    for (let i = 0; i < missing.length && i < MAX_NAK_RANGES; i++) {
      const [first, last] = missing[i]!;
      const from = Math.max(first, lowest);
      const to = Math.min(last, sentThrough);
      for (let seq = from; seq <= to && budget > 0 && examine > 0; seq++) {
        examine--;
        const frame = this.retransmit.get(seq);
        if (!frame) continue;
        const last = this.lastResent.get(seq);
        if (last !== undefined && now - last < this.timing.retransmitHoldoffMs) continue;
        this.lastResent.set(seq, now);
        this.transmit(frame);
        this.counters.retransmits++;
        budget--;
      }
    }
    if (this.lastResent.size > this.limits.maxRetransmitFrames) {
      const floor = this.retransmit.lowestRetained(this.sentThrough + 1);
      for (const seq of this.lastResent.keys()) if (seq < floor) this.lastResent.delete(seq);
      if (this.lastResent.size > this.limits.maxRetransmitFrames) this.lastResent.clear();
    }
  }

  /** True if a frame from an unknown sender repeats what that sender sent before it timed out. */
  private replaysSilentMember(header: FrameHeader): boolean {
    const floors = this.silentFloors.get(header.sender);
    if (floors === undefined) return false;
    if (header.seq <= (header.kind === FrameKind.Data ? floors.data : floors.control)) return true;
    this.silentFloors.delete(header.sender); // newer traffic: the member is back
    return false;
  }

  private removeMember(id: number, why: 'left' | 'timed out'): void {
    const member = this.members.get(id);
    if (!member) return;
    this.members.delete(id);
    if (why === 'timed out' && this.fernet) {
      this.silentFloors.delete(id);
      this.silentFloors.set(id, { control: member.controlHighest, data: member.window?.highest ?? 0 });
      if (this.silentFloors.size > DEPARTED_MEMORY) {
        this.silentFloors.delete(this.silentFloors.keys().next().value!);
      }
    }
    if (why === 'left') {
      this.departed.add(id);
      if (this.departed.size > DEPARTED_MEMORY) this.departed.delete(this.departed.values().next().value!);
    }
    this.reassembly.dropSender(id);
    if (why === 'left') this.counters.membersLeft++;
    else this.counters.membersTimedOut++;
    if (this.options.log.infoOn)
      this.options.log.info(`member ${why}`, { member: nodeIdHex(id), members: this.members.size });
    this.releaseStable();
  }

  private announce(attempt: number): void {
    if (this.closed) return;
    this.sendControl([{ op: Op.NEW }]);
    if (attempt + 1 < this.timing.newRetries) {
      const timer = this.options.clock.setTimeout(() => {
        this.timers.delete(timer);
        this.announce(attempt + 1);
      }, this.timing.newRetryMs);
      this.timers.add(timer);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Anti-entropy

  private pulseLater(): void {
    // Jitter spreads members' pulses so they do not all answer each other at once.
    const delay = this.timing.pulseMs * (0.75 + this.random() * 0.5);
    const timer = this.options.clock.setTimeout(() => {
      this.timers.delete(timer);
      this.sendSync();
      this.pulseLater();
    }, delay);
    this.timers.add(timer);
  }

  /** Coalesces sync requests (new members, unrecoverable gaps) into one SYC round soon. */
  private scheduleSync(): void {
    if (this.syncScheduled || this.closed) return;
    this.syncScheduled = true;
    const timer = this.options.clock.setTimeout(() => {
      this.timers.delete(timer);
      this.syncScheduled = false;
      this.sendSync();
    }, this.timing.heartbeatMs);
    this.timers.add(timer);
  }

  /** Multicasts the digest of every cache; members that differ answer with details. */
  private sendSync(): void {
    const entries: Entry[] = [];
    for (const store of this.options.stores.stores()) {
      entries.push({ op: Op.SYC, cache: store.name, buckets: digestOf(store) });
    }
    this.counters.syncsSent += entries.length;
    this.sendControl(entries);
  }

  private onSync(member: Member, cache: string, buckets: number[]): void {
    if (buckets.length !== DIGEST_BUCKETS) return this.drop('digest-size');
    const store = this.remoteStore(cache);
    if (!store) return;
    const mine = digestOf(store);
    const differing = new Set<number>();
    for (let b = 0; b < DIGEST_BUCKETS; b++) if (mine[b] !== buckets[b]) differing.add(b);
    if (differing.size > 0) {
      this.sendDetails(member.id, cache, differing, false);
      // Our list or its answer may be lost (control frames are not retransmitted): if a bucket's
      // list does not come back in time, we run a round of our own (see sendDueFetches).
      const due = this.options.clock.now() + FETCH_RETRY_HEARTBEATS * this.timing.heartbeatMs;
      for (const bucket of differing) {
        if (this.awaitingReply.size >= MAX_AWAITED_REPLIES) break;
        this.awaitingReply.set(`${member.id}\u0000${cache}\u0000${bucket}`, { member: member.id, due });
      }
    }
  }

  private lastFollowUpRound = Number.NEGATIVE_INFINITY;

  /** Buckets of rounds we answered with a list, by `${member}\0${cache}\0${bucket}`: when the list back is due. */
  private readonly awaitingReply = new Map<string, { member: number; due: number }>();

  /** Lists our versions in the given buckets to `target`, chunked to one datagram each. */
  private sendDetails(target: number, cache: string, buckets: ReadonlySet<number>, reply: boolean): void {
    const store = this.remoteStore(cache);
    if (!store) return;
    const entries: Entry[] = [];
    // The entry's head, the cache name and the list head: the rest is for the list itself.
    const budget = this.codec.maxFragmentPayload - 64 - Buffer.byteLength(cache);
    for (const [bucket, versions] of versionsInBuckets(store, buckets)) {
      let chunk: ListedVersion[] = [];
      let estimate = 0;
      const push = () => {
        entries.push({ op: Op.SYD, target, cache, bucket, reply, versions: chunk });
        chunk = [];
        estimate = 0;
      };
      for (const version of versions) {
        const size = Buffer.byteLength(version[0]) + 32;
        if (estimate + size > budget && chunk.length > 0) push();
        chunk.push(version);
        estimate += size;
      }
      push();
    }
    this.sendControl(entries);
  }

  /**
   * A member's versions in one bucket. Who repairs what:
   * - On a list answering our round (`reply` false) we push what we hold newer (reliable: the DATA
   *   stream), and fetch what they hold newer.
   * - On the list the round's initiator sends back (`reply` true) we push nothing: it holds our list
   *   and fetches what it lacks from it. What it holds newer we fetch only if its push has not come
   *   within a little while, so a key is not both pushed and fetched.
   * Fetches go through {@link fetchLater}: one holder per key, deferred while the key is still on its
   * way on the DATA streams, retried once if the answer does not come.
   */
  private onSyncDetail(member: Member, detail: Extract<Entry, { op: typeof Op.SYD }>): void {
    const { cache, versions, reply } = detail;
    if (reply) this.awaitingReply.delete(`${member.id}\u0000${cache}\u0000${detail.bucket}`);
    const store = this.remoteStore(cache);
    if (!store) return;
    const toPush: string[] = [];
    const fetchNow: string[] = [];
    const now = this.options.clock.now();
    const expectPushUntil = now + 2 * this.timing.heartbeatMs;
    const holdsOnlyItsOwn = store.settings.mode === 0;
    for (const [key, tsm, writer, , tombstone] of versions) {
      const mine = store.versionOf(key);
      if (!mine || isNewer(tsm, writer, mine.tsm, mine.writer)) {
        // Mode 0 holds only the keys it already has: fetching one it lacks would be ignored.
        if (holdsOnlyItsOwn && !tombstone && (!mine || mine.tombstone)) continue;
        if (tombstone) {
          // Applying a listed tombstone costs no traffic.
          store.applyRemote({ kind: ChangeKind.Delete, key, tsm, writer }, true);
          continue;
        }
        const streamDue = this.inFlightUntil(tsm, this.members.get(writer)?.streamSince ?? Infinity, now);
        const due = reply ? Math.max(streamDue, expectPushUntil) : streamDue;
        if (this.fetchLater(member.id, cache, key, tsm, writer, due, now)) fetchNow.push(key);
      } else if (!reply && isNewer(mine.tsm, mine.writer, tsm, writer)) {
        // Whether it tracks that writer's stream we cannot tell; from its first contact on it could.
        // If it does, and the stream loses the write for good, it notices and runs a round itself.
        if (this.inFlightUntil(mine.tsm, member.firstHeard, now) > now) this.counters.repairsDeferred++;
        else toPush.push(key);
      }
    }
    if (fetchNow.length > 0) {
      this.counters.repairsRequested += fetchNow.length;
      this.sendKeyRequests(member.id, cache, fetchNow);
    }
    this.pushKeys(cache, toPush);
    // They listed their versions; list ours back once per bucket so they can fetch what they
    // lack (absence cannot be inferred from a list that may come in several chunks).
    if (!reply && this.shouldReply(member.id, cache, detail.bucket)) {
      this.sendDetails(member.id, cache, new Set([detail.bucket]), true);
    }
  }

  /** Keys anti-entropy fetches, by `${cache}\0${key}` (see fetchLater); bounded in number and size. */
  private readonly pendingFetches = new Map<string, PendingFetch>();
  private pendingFetchChars = 0;

  /**
   * Notes that `from` listed `key` at (tsm, writer), newer than ours, to be fetched at `due`. True if
   * the caller is to request it now (it is then tracked for one retry). A key already pending at the
   * same or a newer version is not fetched twice, from this holder or another; a newer listing
   * replaces the pending one. Past the bound, keys are fetched at once and not tracked.
   */
  private fetchLater(
    from: number,
    cache: string,
    key: string,
    tsm: number,
    writer: number,
    due: number,
    now: number,
  ): boolean {
    const id = `${cache}\u0000${key}`;
    const pending = this.pendingFetches.get(id);
    if (pending !== undefined && !isNewer(tsm, writer, pending.tsm, pending.writer)) {
      this.counters.repairsDeduplicated++;
      return false;
    }
    if (
      pending === undefined &&
      (this.pendingFetches.size >= MAX_PENDING_FETCHES || this.pendingFetchChars >= MAX_PENDING_FETCH_CHARS)
    ) {
      return true; // untracked: fetched at once, a duplicate at worst
    }
    if (pending === undefined) this.pendingFetchChars += key.length;
    const fetchNow = due <= now;
    if (!fetchNow) this.counters.repairsDeferred++;
    this.pendingFetches.set(id, {
      from,
      cache,
      key,
      tsm,
      writer,
      // Fetched now: look again after a few heartbeats, in case the REQ or its answer was lost.
      due: fetchNow ? now + FETCH_RETRY_HEARTBEATS * this.timing.heartbeatMs : due,
      requests: fetchNow ? 1 : 0,
    });
    return fetchNow;
  }

  /**
   * At every heartbeat: requests the pending fetches that are due and still missing (a deferred key
   * the stream did not bring, a push that did not come, a fetch whose answer was lost), and forgets
   * those that arrived or were requested twice already.
   */
  private sendDueFetches(now: number): void {
    let missed = false;
    for (const [id, { member, due }] of this.awaitingReply) {
      if (due > now) continue;
      // The round we answered never listed this bucket back: one of the two lists was lost (or its
      // sender refused to answer, or left). Our own round repairs what differs.
      this.awaitingReply.delete(id);
      if (this.members.has(member)) missed = true;
    }
    // At most one such round per FOLLOW_UP_ROUND_MS: where replies are refused for load (see
    // shouldReply), rounds answering rounds must not feed each other.
    if (missed && now - this.lastFollowUpRound >= FOLLOW_UP_ROUND_MS) {
      this.lastFollowUpRound = now;
      this.counters.repliesMissed++;
      this.scheduleSync();
    }
    if (this.pendingFetches.size === 0) return;
    const requests = new Map<string, { from: number; cache: string; keys: string[] }>();
    for (const [id, fetch] of this.pendingFetches) {
      if (fetch.due > now) continue;
      const version = this.options.stores.store(fetch.cache)?.versionOf(fetch.key);
      const arrived = version !== undefined && !isNewer(fetch.tsm, fetch.writer, version.tsm, version.writer);
      if (arrived || fetch.requests >= 2 || !this.members.has(fetch.from)) {
        // Arrived, or lost twice, or its holder is gone: the next round sees what still differs.
        this.pendingFetches.delete(id);
        this.pendingFetchChars -= fetch.key.length;
        continue;
      }
      fetch.requests++;
      fetch.due = now + FETCH_RETRY_HEARTBEATS * this.timing.heartbeatMs;
      const slot = `${fetch.from}\u0000${fetch.cache}`;
      let request = requests.get(slot);
      if (!request) {
        request = { from: fetch.from, cache: fetch.cache, keys: [] };
        requests.set(slot, request);
      }
      request.keys.push(fetch.key);
    }
    for (const { from, cache, keys } of requests.values()) {
      this.counters.repairsRequested += keys.length;
      this.sendKeyRequests(from, cache, keys);
    }
  }

  /**
   * Until when a version stamped `tsm` may still be on its way on the DATA streams (`now` or earlier
   * if it cannot be): written within syncHorizonMs of `now` (either side, so a clock far ahead
   * defers nothing), and not before `since`, from which on the stream that carries it is complete
   * for the member lacking it. Older writes predate that stream (or fell in a gap given up on), and
   * only a repair brings them.
   */
  private inFlightUntil(tsm: number, since: number, now: number): number {
    const writtenAt = hlcToMillis(tsm);
    const horizon = this.timing.syncHorizonMs;
    const inFlight = writtenAt >= since && writtenAt > now - horizon && writtenAt < now + horizon;
    return inFlight ? writtenAt + horizon : now;
  }

  private readonly detailReplies = new Map<string, number>();
  private shouldReply(member: number, cache: string, bucket: number): boolean {
    const now = this.options.clock.now();
    const slot = `${member}\u0000${cache}\u0000${bucket}`;
    const last = this.detailReplies.get(slot);
    if (last !== undefined && now - last < this.timing.heartbeatMs) return false;
    if (this.detailReplies.size >= 4096) {
      for (const [k, at] of this.detailReplies)
        if (now - at >= this.timing.heartbeatMs) this.detailReplies.delete(k);
      if (this.detailReplies.size >= 4096) return false;
    }
    this.detailReplies.set(slot, now);
    return true;
  }

  private sendKeyRequests(target: number, cache: string, keys: string[]): void {
    const entries: Entry[] = [];
    // The entry's head, the cache name and the list head: the rest is for the list itself.
    const budget = this.codec.maxFragmentPayload - 64 - Buffer.byteLength(cache);
    let chunk: string[] = [];
    let size = 0;
    for (const key of keys) {
      const keySize = Buffer.byteLength(key) + 4;
      if (size + keySize > budget && chunk.length > 0) {
        entries.push({ op: Op.REQ, target, cache, keys: chunk });
        chunk = [];
        size = 0;
      }
      chunk.push(key);
      size += keySize;
    }
    if (chunk.length > 0) entries.push({ op: Op.REQ, target, cache, keys: chunk });
    this.sendControl(entries);
  }

  /** Versions pushed within the last heartbeat, by `${cache}\0${key}`: pushed once, not per asker. */
  private readonly recentPushes = new Map<string, { tsm: number; writer: number; at: number }>();

  /**
   * Sends our current version of each key (value or tombstone) with its original stamps. A version
   * pushed within the last heartbeat is not pushed again: the push was multicast on the DATA stream,
   * which every live member receives or NAKs, so several members asking at once cost one push.
   */
  private pushKeys(cache: string, keys: string[]): void {
    const store = this.options.stores.store(cache);
    if (!store) return;
    const now = this.options.clock.now();
    for (const [id, push] of this.recentPushes) {
      if (now - push.at < this.timing.heartbeatMs) break; // insertion order is time order
      this.recentPushes.delete(id);
    }
    for (const key of keys) {
      const version = store.versionOf(key);
      if (!version) continue;
      const id = `${cache}\u0000${key}`;
      const pushed = this.recentPushes.get(id);
      if (pushed !== undefined && pushed.tsm === version.tsm && pushed.writer === version.writer) {
        this.counters.repairsDeduplicated++;
        continue;
      }
      if (this.recentPushes.size < MAX_RECENT_PUSHES) {
        this.recentPushes.delete(id);
        this.recentPushes.set(id, { tsm: version.tsm, writer: version.writer, at: now });
      }
      this.counters.repairsPushed++;
      if (version.tombstone) {
        this.enqueueData(Op.DEL, cache, key, version.tsm, version.writer, 0, 0, undefined);
        continue;
      }
      const value = store.encodedValueOf(key);
      if (!value) continue;
      const [crcHigh, crcLow] = crcHalves(version.crc);
      this.enqueueData(Op.UPD, cache, key, version.tsm, version.writer, crcHigh, crcLow, value);
    }
  }

  // ---------------------------------------------------------------------------------------------

  private every(periodMs: number, run: () => void): void {
    const tick = () => {
      this.timers.delete(timer);
      if (this.closed) return;
      run();
      timer = this.options.clock.setTimeout(tick, periodMs);
      this.timers.add(timer);
    };
    let timer = this.options.clock.setTimeout(tick, periodMs);
    this.timers.add(timer);
  }

  private async waitForSends(deadlineMs: number): Promise<void> {
    const until = Date.now() + deadlineMs;
    while (this.options.transport.pendingSends > 0 && Date.now() < until) {
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /** Gauges for metrics. */
  gauges(): Record<string, number> {
    return {
      members: this.members.size,
      queuedOps: this.outbox.size + this.pendingOther.length,
      queuedBytes: this.outbox.bytes,
      coalescedOps: this.outbox.coalesced,
      retransmitFrames: this.retransmit.size,
      retransmitBytes: this.retransmit.bytes,
      retransmitEvicted: this.retransmit.stats.evicted,
      reassemblyMessages: this.reassembly.heldMessages,
      reassemblyBytes: this.reassembly.heldBytes,
      reassemblyTimeouts: this.reassembly.stats.timedOut,
      reassemblyOverBudget: this.reassembly.stats.overBudget,
      reassemblyInconsistent: this.reassembly.stats.inconsistent,
      reassemblyDuplicates: this.reassembly.stats.duplicates,
      pendingSends: this.options.transport.pendingSends,
      nextSeq: this.nextSeq,
    };
  }

  /** The transport's counters (each transport has the common ones and may add its own). */
  transportStats(): Record<string, number> {
    const stats: Record<string, number> = {};
    for (const [name, value] of Object.entries(this.options.transport.stats)) {
      if (typeof value === 'number') stats[name] = value;
    }
    return stats;
  }

  /** True when nothing is queued, in flight to the OS, or missing from any member's stream. */
  get quiescent(): boolean {
    if (this.outbox.size > 0 || this.pendingOther.length > 0) return false;
    if (this.options.transport.pendingSends > 0) return false;
    for (const member of this.members.values()) if (member.window?.hasGaps) return false;
    return true;
  }
}
