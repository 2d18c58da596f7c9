/**
 * Measurements shared by cluster.ts and redis.ts, each run on member processes from pool.ts.
 */
import { defaultTiming } from '../../lib/cluster/engine.js';
import { type LatencyFigures, randomGroup, summarize } from './measure.js';
import { type Member, waitFor } from './pool.js';

/** Bounds of a benchmark cache: large enough that nothing is evicted during a run. */
const CACHE_MAX_ENTRIES = 2 ** 22;
const CACHE_MAX_BYTES = 2 ** 34;
/** The SO_RCVBUF mccache asks for by default, given to raw sockets too so the comparison is fair. */
export const RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024;
/**
 * After members meet, the engine runs anti-entropy rounds at these delays (its settleSyncMs). A round
 * that meets a write burst compares digests that differ only because receivers lag, and repairs
 * what was in flight anyway: measurements start once these rounds are over, as in steady state.
 */
const JOIN_SYNC_ROUNDS_MS = defaultTiming({ pulse: 0 }).settleSyncMs;
const QUIET_POLL_MS = 300;

/** mccache members of one cluster, one per process: the first writes, the others read. */
export interface Cluster {
  name: string;
  writer: Member;
  readers: Member[];
  all: Member[];
}

let clusters = 0;

/**
 * Starts an mccache member in each process on a fresh group and resolves once all see each other
 * and the join-time sync rounds are over. Several clusters may be started at once (each process
 * then hosts one member per cluster), so that their settling overlaps.
 */
export async function startCluster(members: Member[], cryptoKeys: string[] = []): Promise<Cluster> {
  const { group, port } = randomGroup();
  const cluster: Cluster = {
    name: `cluster-${++clusters}`,
    writer: members[0]!,
    readers: members.slice(1),
    all: members,
  };
  const args = { cluster: cluster.name };
  await Promise.all(
    members.map((member) =>
      member.call('mcStart', {
        ...args,
        group,
        port,
        cryptoKeys,
        max: CACHE_MAX_ENTRIES,
        size: CACHE_MAX_BYTES,
      }),
    ),
  );
  await waitFor('members to see each other', async () => {
    const seen = await Promise.all(members.map((member) => member.call<number>('mcMembers', args)));
    return seen.every((count) => count === members.length - 1);
  });
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, ...JOIN_SYNC_ROUNDS_MS) + QUIET_POLL_MS));
  await untilQuiet(cluster);
  return cluster;
}

/** Waits until no member syncs, repairs or retransmits between two polls and nothing is pending. */
async function untilQuiet(cluster: Cluster): Promise<void> {
  const args = { cluster: cluster.name };
  const activity = () =>
    Promise.all(cluster.all.map((m) => m.call<{ repairs: number; quiescent: boolean }>('mcActivity', args)));
  let before = await activity();
  await waitFor(
    'the cluster to be quiet',
    async () => {
      await new Promise((resolve) => setTimeout(resolve, QUIET_POLL_MS));
      const now = await activity();
      const quiet = now.every((a, i) => a.quiescent && a.repairs === before[i]!.repairs);
      before = now;
      return quiet;
    },
    30_000,
  );
}

export async function stopCluster(cluster: Cluster): Promise<void> {
  await Promise.all(cluster.all.map((member) => member.call('mcStop', { cluster: cluster.name })));
}

/** Clears the benchmark cache everywhere and waits until every member holds nothing. */
async function clearEverywhere(cluster: Cluster): Promise<void> {
  const args = { cluster: cluster.name };
  await cluster.writer.call('mcClear', args);
  await waitFor(
    'the cache to be cleared everywhere',
    async () => {
      const counts = await Promise.all(cluster.all.map((member) => member.call<number>('mcCount', args)));
      return (
        counts.every((count) => count === 0) && (await cluster.writer.call<boolean>('mcQuiescent', args))
      );
    },
    30_000,
  );
}

export interface ThroughputResult {
  /** Ops applied on every reader per second: count / (last reader complete - first write). */
  opsPerSecond: number;
  /** Ops the writer's cache accepted per second (the write calls alone). */
  writeRate: number;
  /** Fewest ops a reader had applied when it stopped waiting (== count unless something was lost for good). */
  appliedMin: number;
  count: number;
  datagramsSent: number;
  retransmits: number;
  opsPerDatagram: number;
  /** CPU time per op in the writer (until every reader had all) and in the average reader, in us. */
  writerCpuPerOp: number;
  readerCpuPerOp: number;
}

interface ClusterCounters {
  datagramsSent: number;
  opsSent: number;
  retransmits: number;
}

/**
 * One writer writes `count` distinct keys as fast as its engine absorbs them; each reader waits until
 * it has applied all of them. The clock is CLOCK_MONOTONIC, shared by every process on the host.
 */
export async function replicatedThroughput(
  cluster: Cluster,
  count: number,
  valueBytes: number,
  prefix: string,
): Promise<ThroughputResult> {
  const { writer, readers } = cluster;
  const args = { cluster: cluster.name };
  await Promise.all(readers.map((reader) => reader.call('mcArm', args)));
  const before = await writer.call<ClusterCounters>('mcMetrics', args);
  const completions = readers.map((reader) =>
    reader.call<{ applied: number; doneMs: number; cpuMicros: number }>(
      'mcAwait',
      { ...args, count, timeoutMs: 30_000 },
      40_000,
    ),
  );
  const written = await writer.call<{ startMs: number; writtenMs: number; cpuStart: NodeJS.CpuUsage }>(
    'mcWrite',
    {
      ...args,
      prefix,
      count,
      valueBytes,
      burst: 1000,
      queueLimit: 20_000,
    },
  );
  const done = await Promise.all(completions);
  const writerCpu = await writer.call<number>('mcCpuSince', written.cpuStart);
  const after = await writer.call<ClusterCounters>('mcMetrics', args);
  const lastMs = Math.max(...done.map((d) => d.doneMs));
  const datagramsSent = after.datagramsSent - before.datagramsSent;
  const result: ThroughputResult = {
    opsPerSecond: count / ((lastMs - written.startMs) / 1000),
    writeRate: count / ((written.writtenMs - written.startMs) / 1000),
    appliedMin: Math.min(...done.map((d) => d.applied)),
    count,
    datagramsSent,
    retransmits: after.retransmits - before.retransmits,
    opsPerDatagram: (after.opsSent - before.opsSent) / Math.max(1, datagramsSent),
    writerCpuPerOp: writerCpu / count,
    readerCpuPerOp: done.reduce((sum, d) => sum + d.cpuMicros, 0) / done.length / count,
  };
  await clearEverywhere(cluster);
  return result;
}

/** How long a receiver may lag behind the end of a paced run before what it lacks counts as missing. */
const STRAGGLER_MS = 3000;

/** Waits until every receiver has observed `expected` messages, or {@link STRAGGLER_MS} passed. */
export async function allObserved(
  receivers: Member[],
  countCommand: string,
  expected: number,
  args?: unknown,
): Promise<void> {
  const deadline = Date.now() + STRAGGLER_MS;
  while (Date.now() < deadline) {
    const counts = await Promise.all(receivers.map((receiver) => receiver.call<number>(countCommand, args)));
    if (counts.every((count) => count >= expected)) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

export interface LatencyResult extends LatencyFigures {
  /** Updates written; `count` is how many reader observations were collected (writes x readers). */
  written: number;
  /** Reader observations missing: lost for good, coalesced, or later than 3 s after the last send. */
  missing: number;
}

const LATENCY_KEYS = 10_000;
/** Paced writes before each latency measurement (mccache and raw alike), whose samples are dropped. */
export const LATENCY_WARM_UP_MS = 1000;

/**
 * One-way replication latency at a paced rate: the writer stamps each value with CLOCK_MONOTONIC
 * when it assigns it; each reader has read every key of the set once, so the cache callback fires
 * inside the apply of each remote update, where the reader subtracts the stamp from its own clock.
 */
export async function replicationLatency(
  cluster: Cluster,
  options: { rate: number; durationMs: number; valueBytes: number },
): Promise<LatencyResult> {
  const { writer, readers } = cluster;
  const args = { cluster: cluster.name };
  const prefix = 'latency-';
  // Insert the key set and let every reader hold and read it.
  await Promise.all(readers.map((reader) => reader.call('mcArm', args)));
  const inserted = readers.map((reader) =>
    reader.call('mcAwait', { ...args, count: LATENCY_KEYS, timeoutMs: 10_000 }),
  );
  await writer.call('mcWrite', {
    ...args,
    prefix,
    count: LATENCY_KEYS,
    valueBytes: options.valueBytes,
    burst: 1000,
    queueLimit: 20_000,
  });
  await Promise.all(inserted);
  const watched = await Promise.all(
    readers.map((reader) => reader.call<number>('mcWatch', { ...args, prefix, keys: LATENCY_KEYS })),
  );
  if (watched.some((present) => present !== LATENCY_KEYS))
    throw new Error(`latency key set incomplete: ${watched}`);
  await untilQuiet(cluster);
  // Warm-up at the same pace, samples discarded: the paced write and the callback paths get
  // compiled, and the garbage of earlier runs in these processes gets collected, before measuring.
  const warmUp = { ...options, durationMs: LATENCY_WARM_UP_MS };
  const warmUpWritten = await writer.call<number>('mcPaced', {
    ...args,
    prefix,
    keys: LATENCY_KEYS,
    ...warmUp,
  });
  await allObserved(readers, 'mcSampleCount', warmUpWritten, args);
  await Promise.all(readers.map((reader) => reader.call<number[]>('mcCollect', args)));
  await untilQuiet(cluster);
  const written = await writer.call<number>('mcPaced', { ...args, prefix, keys: LATENCY_KEYS, ...options });
  await allObserved(readers, 'mcSampleCount', written, args);
  const samples = (
    await Promise.all(readers.map((reader) => reader.call<number[]>('mcCollect', args)))
  ).flat();
  await clearEverywhere(cluster);
  return { ...summarize(samples), written, missing: written * readers.length - samples.length };
}

export interface RawBlastResult {
  /** Datagrams per second reaching the slowest receiver: received / (its last arrival - first send). */
  receivedPerSecond: number;
  sentPerSecond: number;
  /** Share of sent datagrams the slowest receiver never got (receive buffer overflow). */
  lossPercent: number;
}

/** Opens a raw multicast socket in each process on a fresh group. */
export async function openRaw(members: Member[]): Promise<void> {
  const { group, port } = randomGroup();
  await Promise.all(
    members.map((member) =>
      member.call('rawOpen', { group, port, receiveBufferBytes: RECEIVE_BUFFER_BYTES }),
    ),
  );
}

export async function closeRaw(members: Member[]): Promise<void> {
  await Promise.all(members.map((member) => member.call('rawClose')));
}

/** The sender sends 1400-byte datagrams as fast as node:dgram takes them; receivers count. */
export async function rawBlast(
  sender: Member,
  receivers: Member[],
  durationMs: number,
): Promise<RawBlastResult> {
  await Promise.all(receivers.map((receiver) => receiver.call('rawArm')));
  const sent = await sender.call<{ sent: number; startMs: number; endMs: number }>('rawBlast', {
    durationMs,
    bytes: 1400,
    maxPending: 256,
  });
  await new Promise((resolve) => setTimeout(resolve, 200));
  const stats = await Promise.all(
    receivers.map((receiver) =>
      receiver.call<{ received: number; firstMs: number; lastMs: number }>('rawStats'),
    ),
  );
  const rates = stats.map((s) => s.received / ((s.lastMs - sent.startMs) / 1000));
  const fewest = Math.min(...stats.map((s) => s.received));
  return {
    receivedPerSecond: Math.min(...rates),
    sentPerSecond: sent.sent / ((sent.endMs - sent.startMs) / 1000),
    lossPercent: (100 * (sent.sent - fewest)) / sent.sent,
  };
}

/** Sequential round trips between the sender and the first receiver: one-way = RTT / 2. */
export async function rawPingPong(
  sender: Member,
  responder: Member,
  count: number,
): Promise<{ rtt: LatencyFigures; lost: number }> {
  await responder.call('rawPong', true);
  const rtts = await sender.call<number[]>('rawPing', { count, bytes: 100 });
  await responder.call('rawPong', false);
  return { rtt: summarize(rtts), lost: count - rtts.length };
}

/** Stamped datagrams at a paced rate: the same one-way method as {@link replicationLatency}. */
export async function rawPacedLatency(
  sender: Member,
  receivers: Member[],
  options: { rate: number; durationMs: number; bytes: number },
): Promise<LatencyResult> {
  await Promise.all(receivers.map((receiver) => receiver.call('rawArm')));
  // The same warm-up as replicationLatency, samples discarded.
  const warmUpWritten = await sender.call<number>('rawPaced', { ...options, durationMs: LATENCY_WARM_UP_MS });
  await allObserved(receivers, 'rawSampleCount', warmUpWritten);
  await Promise.all(receivers.map((receiver) => receiver.call<number[]>('rawCollect')));
  const written = await sender.call<number>('rawPaced', options);
  await allObserved(receivers, 'rawSampleCount', written);
  const samples = (
    await Promise.all(receivers.map((receiver) => receiver.call<number[]>('rawCollect')))
  ).flat();
  return { ...summarize(samples), written, missing: written * receivers.length - samples.length };
}
