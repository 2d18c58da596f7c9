/**
 * mccache against Redis on the same machine, measured in the same run:
 * - read latency: a local mccache get (the proxy) against an ioredis GET over loopback;
 * - replication latency: an mccache writer to 2 and 4 member processes against a Redis publisher
 *   fanning out to 2 and 4 subscriber processes, both paced at 10k messages/s with 100 B values and
 *   measured the same way (send stamp in the value, CLOCK_MONOTONIC, compared on receipt).
 *
 * Starts redis-server on a random loopback port without persistence and always stops it. When
 * redis-server is not installed (Debian: apt-get install redis-server) it prints
 * "skipped: redis-server not installed" and exits 0.
 *
 * Run: npx tsx benchmarks/redis.ts   (BENCH_QUICK=1 for a shorter smoke run)
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { connect, createServer } from 'node:net';
import { Redis } from 'ioredis';
import { Bench } from 'tinybench';
import { createNode } from '../lib/node.js';
import {
  describeMachine,
  micros,
  printTable,
  randomGroup,
  rate,
  ratio,
  summarize,
} from './helpers/measure.js';
import { type Member, startMembers, stopMembers } from './helpers/pool.js';
import {
  allObserved,
  type LatencyResult,
  replicationLatency,
  startCluster,
  stopCluster,
} from './helpers/scenarios.js';

const QUICK = process.env.BENCH_QUICK === '1';
const SUBSCRIBER_COUNTS = [2, 4];
const PACED_RATE = 10_000;
const PACED_MS = QUICK ? 1000 : 2000;
const VALUE_BYTES = 100;
const READ_KEYS = 1000;
const startedAt = Date.now();

if (spawnSync('redis-server', ['--version']).error) {
  console.log('skipped: redis-server not installed');
  process.exit(0);
}

/** A port that was free a moment ago (the OS picks it). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

/** True once the server answers PING. */
function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.setTimeout(200);
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (data) => {
      socket.destroy();
      resolve(data.toString().startsWith('+PONG'));
    });
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
  });
}

async function startRedis(): Promise<{ server: ChildProcess; port: number }> {
  const port = await freePort();
  const server = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' },
  );
  process.on('exit', () => server.kill('SIGKILL'));
  const deadline = Date.now() + 10_000;
  while (!(await answersPing(port))) {
    if (server.exitCode !== null) throw new Error(`redis-server exited with code ${server.exitCode}`);
    if (Date.now() > deadline) throw new Error(`redis-server did not answer on port ${port} within 10 s`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return { server, port };
}

async function stopRedis(server: ChildProcess): Promise<void> {
  if (server.exitCode !== null || server.signalCode !== null) return;
  const exited = new Promise((resolve) => server.once('exit', resolve));
  server.kill('SIGTERM');
  const timer = setTimeout(() => server.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(timer);
}

interface ReadFigures {
  name: string;
  meanUs: number;
  p50Us: number;
  p99Us: number;
  opsPerSecond: number;
}

/** Local mccache get against ioredis GET of the same 100 B values, one at a time. */
async function readLatency(port: number): Promise<ReadFigures[]> {
  const { group, port: groupPort } = randomGroup();
  const node = createNode({
    settings: {
      multicastIp: group,
      multicastPort: groupPort,
      multicastIf: '127.0.0.1',
      pulse: 0,
      logLevel: 'error',
      handleSignals: false,
    },
  });
  await node.ready();
  const redis = new Redis({ host: '127.0.0.1', port, lazyConnect: true });
  await redis.connect();
  try {
    const cache = node.getCache<string>('read', { max: READ_KEYS * 2 });
    const value = 'x'.repeat(VALUE_BYTES);
    const keys = Array.from({ length: READ_KEYS }, (_, i) => `key-${i}`);
    for (const key of keys) cache[key] = value;
    await redis.mset(Object.fromEntries(keys.map((key) => [key, value])));
    let i = 0;
    let sink = 0;
    const bench = new Bench({ time: QUICK ? 300 : 1000, warmup: true });
    bench
      .add('mccache get (local proxy read)', () => {
        sink += cache[keys[i++ % READ_KEYS]!]!.length;
      })
      .add('ioredis GET (loopback, awaited)', async () => {
        sink += (await redis.get(keys[i++ % READ_KEYS]!))!.length;
      });
    await bench.run();
    if (sink === 0) throw new Error('reads returned nothing');
    return bench.tasks.map((task) => {
      const result = task.result as unknown as {
        latency: { mean: number; p50: number; p99: number };
        throughput: { mean: number };
      };
      return {
        name: task.name,
        meanUs: result.latency.mean * 1000,
        p50Us: result.latency.p50 * 1000,
        p99Us: result.latency.p99 * 1000,
        opsPerSecond: 1000 / result.latency.mean,
      };
    });
  } finally {
    await redis.quit().catch(() => redis.disconnect());
    await node.shutdown();
  }
}

/** Redis pub/sub fan-out: one publisher process, `subscribers` subscriber processes. */
async function redisFanOut(
  port: number,
  publisher: Member,
  subscribers: Member[],
  durationMs: number,
): Promise<LatencyResult> {
  const channel = `bench-${Date.now()}`;
  await Promise.all(subscribers.map((member) => member.call('redisSubscribe', { port, channel })));
  const written = await publisher.call<number>('redisPaced', {
    port,
    channel,
    rate: PACED_RATE,
    durationMs,
    bytes: VALUE_BYTES,
  });
  await allObserved(subscribers, 'redisSampleCount', written);
  const samples = (
    await Promise.all(subscribers.map((member) => member.call<number[]>('redisCollect')))
  ).flat();
  await Promise.all([publisher, ...subscribers].map((member) => member.call('redisClose')));
  return { ...summarize(samples), written, missing: written * subscribers.length - samples.length };
}

console.log(`started: ${describeMachine()}`);
const { server, port } = await startRedis();
let members: Member[] = [];
try {
  const reads = await readLatency(port);
  members = await startMembers(Math.max(...SUBSCRIBER_COUNTS) + 1);
  const fanOut: { subscribers: number; mccache: LatencyResult; redis: LatencyResult }[] = [];
  for (const subscribers of SUBSCRIBER_COUNTS) {
    const group = members.slice(0, subscribers + 1);
    const [writer, ...readers] = group as [Member, ...Member[]];
    const cluster = await startCluster(group);
    await replicationLatency(cluster, { rate: PACED_RATE, durationMs: 500, valueBytes: VALUE_BYTES }); // warm-up
    const mccache = await replicationLatency(cluster, {
      rate: PACED_RATE,
      durationMs: PACED_MS,
      valueBytes: VALUE_BYTES,
    });
    await stopCluster(cluster);
    await redisFanOut(port, writer, readers, 500); // warm-up
    const redis = await redisFanOut(port, writer, readers, PACED_MS);
    fanOut.push({ subscribers, mccache, redis });
  }

  const local = reads[0]!;
  printTable(
    'Read latency, 100 B values, one read at a time (tinybench)',
    ['read', 'mean', 'p50', 'p99', 'reads/s', 'vs mccache get'],
    reads.map((r) => [
      r.name,
      micros(r.meanUs),
      micros(r.p50Us),
      micros(r.p99Us),
      rate(r.opsPerSecond),
      ratio(r.meanUs / local.meanUs),
    ]),
  );
  printTable(
    `Replication latency at ${rate(PACED_RATE)} msgs/s, 100 B, writer stamp -> visible in each receiver`,
    ['receivers, path', 'p50', 'p99', 'max', 'missing', 'p50 vs mccache'],
    fanOut.flatMap((f) => [
      [
        `${f.subscribers} members, mccache multicast`,
        micros(f.mccache.p50),
        micros(f.mccache.p99),
        micros(f.mccache.max),
        String(f.mccache.missing),
        ratio(1),
      ],
      [
        `${f.subscribers} subscribers, Redis pub/sub`,
        micros(f.redis.p50),
        micros(f.redis.p99),
        micros(f.redis.max),
        String(f.redis.missing),
        ratio(f.redis.p50 / f.mccache.p50),
      ],
    ]),
  );
  const get = reads[1]!;
  console.log(
    `\nHeadline: a local mccache read is ${ratio(get.meanUs / local.meanUs)} faster than an ioredis GET; ` +
      fanOut
        .map(
          (f) =>
            `to ${f.subscribers} receivers mccache p50 ${micros(f.mccache.p50)} vs Redis pub/sub ${micros(f.redis.p50)} ` +
            `(mccache ${ratio(f.mccache.p50 / f.redis.p50)} Redis's)`,
        )
        .join('; ') +
      '.',
  );
} finally {
  await stopMembers(members);
  await stopRedis(server);
}
console.log(`\nended: ${describeMachine()}`);
console.log(`\nredis benchmark took ${((Date.now() - startedAt) / 1000).toFixed(0)} s`);
