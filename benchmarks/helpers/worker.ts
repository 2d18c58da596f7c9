/**
 * A benchmark member process, driven by its parent over IPC (see pool.ts). One process plays any
 * role in turn: a real mccache member (createNode on UDP multicast), a raw node:dgram peer, or a
 * Redis publisher/subscriber. Requests are `{ id, command, args }`; replies `{ id, ok, result | error }`.
 */
import { createSocket, type Socket } from 'node:dgram';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Cache } from '../../lib/cache/proxy.js';
import type { CacheStore } from '../../lib/cache/store.js';
import { createNode, type McCacheNode } from '../../lib/node.js';
import { monotonicMs, paced, padding, stampedValue, stampOf } from './measure.js';

type Handler = (args: any) => unknown;

// -------------------------------------------------------------------------------------------------
// mccache members: one per cluster name, so that a clear and an encrypted cluster can settle at once

interface Membership {
  node: McCacheNode;
  cache: Cache<string>;
  store: CacheStore;
  /** One-way latencies (ms) observed by the cache callback since the last collect. */
  samples: number[];
  appliedBaseline: number;
  cpuBaseline: NodeJS.CpuUsage;
}

const memberships = new Map<string, Membership>();

/** CPU microseconds (user + system) this process used since `since`. */
function cpuMicrosSince(since: NodeJS.CpuUsage): number {
  const used = process.cpuUsage(since);
  return used.user + used.system;
}

function membership(args: { cluster: string }): Membership {
  const found = memberships.get(args.cluster);
  if (!found) throw new Error(`not a member of cluster ${args.cluster}: send mcStart first`);
  return found;
}

async function mcStart(args: {
  cluster: string;
  group: string;
  port: number;
  cryptoKeys: string[];
  max: number;
  size: number;
}): Promise<string> {
  await memberships.get(args.cluster)?.node.shutdown();
  const node = createNode({
    settings: {
      multicastIp: args.group,
      multicastPort: args.port,
      multicastIf: '127.0.0.1',
      cryptoKeys: args.cryptoKeys,
      // No periodic anti-entropy pulse: it would add traffic the measurement does not ask for.
      pulse: 0,
      max: args.max,
      size: args.size,
      ttl: 0,
      logFilename: join(tmpdir(), `mccache-bench-${process.pid}.log`),
      logLevel: 'error',
      handleSignals: false,
    },
  });
  await node.ready();
  // The callback fires synchronously inside the apply of a remote update to a key this member has
  // read within callbackWin: that is the moment the new value becomes visible here.
  const cache = node.getCache<string>('bench', {
    callbackWin: 3600,
    callback: (context) => {
      if (context.type !== 'update') return;
      const now = monotonicMs();
      state.samples.push(now - stampOf(state.store.peek(context.key)));
    },
  });
  const state: Membership = {
    node,
    cache,
    store: node.getStore('bench')!,
    samples: [],
    appliedBaseline: 0,
    cpuBaseline: process.cpuUsage(),
  };
  memberships.set(args.cluster, state);
  return node.id;
}

interface ClusterArgs {
  cluster: string;
}

const mcHandlers: Record<string, Handler> = {
  mcStart,
  mcMembers: (args: ClusterArgs) => membership(args).node.engine.memberIds().length,
  mcStop: async (args: ClusterArgs) => {
    await memberships.get(args.cluster)?.node.shutdown();
    memberships.delete(args.cluster);
  },
  /** Counters that move only while members sync, repair or hold something back. */
  mcActivity: (args: ClusterArgs) => {
    const { node } = membership(args);
    const c = node.engine.counters;
    return {
      repairs: c.syncsSent + c.repairsPushed + c.repairsRequested + c.retransmits + c.naksSent,
      quiescent: node.engine.quiescent,
    };
  },
  /** Records the applied count and CPU use, so that mcAwait counts from here. */
  mcArm: (args: ClusterArgs) => {
    const m = membership(args);
    m.appliedBaseline = m.store.counters().remoteApplied;
    m.cpuBaseline = process.cpuUsage();
    return m.appliedBaseline;
  },
  /** Resolves when `count` more remote changes were applied (or at the deadline) with the time. */
  mcAwait: (args: ClusterArgs & { count: number; timeoutMs: number }) =>
    new Promise((resolve) => {
      const m = membership(args);
      const deadline = monotonicMs() + args.timeoutMs;
      const poll = () => {
        const applied = m.store.counters().remoteApplied - m.appliedBaseline;
        const now = monotonicMs();
        if (applied >= args.count || now > deadline) {
          resolve({ applied, doneMs: now, cpuMicros: cpuMicrosSince(m.cpuBaseline) });
        } else setTimeout(poll, 1);
      };
      poll();
    }),
  /**
   * Writes `count` distinct keys as fast as the engine absorbs them: bursts between event-loop turns,
   * holding back while the engine's queue is over `queueLimit`. Held back, it looks again after a
   * 1 ms timer, not at the next turn: polling every turn spun a core that the readers need (the
   * queue limit is ~80 ms of work at 250k ops/s, so a 1 ms look never starves the engine).
   */
  mcWrite: (
    args: ClusterArgs & {
      prefix: string;
      count: number;
      valueBytes: number;
      burst: number;
      queueLimit: number;
    },
  ) =>
    new Promise((resolve) => {
      const { node, cache } = membership(args);
      const value = padding(args.valueBytes);
      const startMs = monotonicMs();
      const cpuStart = process.cpuUsage();
      let written = 0;
      const step = () => {
        const room = node.engine.gauges().queuedOps! < args.queueLimit;
        if (room) {
          const end = Math.min(args.count, written + args.burst);
          for (; written < end; written++) cache[`${args.prefix}${written}`] = value;
        }
        if (written >= args.count) resolve({ startMs, writtenMs: monotonicMs(), cpuStart });
        else if (room) setImmediate(step);
        else setTimeout(step, 1);
      };
      step();
    }),
  /** Reads every key of the latency set, so that the callback fires when a remote update lands. */
  mcWatch: (args: ClusterArgs & { prefix: string; keys: number }) => {
    const m = membership(args);
    let present = 0;
    for (let i = 0; i < args.keys; i++) if (m.cache[`${args.prefix}${i}`] !== undefined) present++;
    m.samples.length = 0;
    return present;
  },
  /** Writes `rate` updates per second over the latency key set, each value stamped at write time. */
  mcPaced: async (
    args: ClusterArgs & {
      prefix: string;
      keys: number;
      rate: number;
      durationMs: number;
      valueBytes: number;
    },
  ) => {
    const { cache } = membership(args);
    const pad = padding(args.valueBytes);
    return paced(args.rate, args.durationMs, (i) => {
      cache[`${args.prefix}${i % args.keys}`] = stampedValue(monotonicMs(), pad);
    });
  },
  mcSampleCount: (args: ClusterArgs) => membership(args).samples.length,
  mcCollect: (args: ClusterArgs) => {
    const m = membership(args);
    const samples = m.samples.map((ms) => Math.round(ms * 1000) / 1000);
    m.samples.length = 0;
    return samples;
  },
  mcClear: (args: ClusterArgs) => membership(args).node.clearCache('bench'),
  mcCount: (args: ClusterArgs) => membership(args).store.count,
  mcQuiescent: (args: ClusterArgs) => membership(args).node.engine.quiescent,
  /** CPU used since `since` (a process.cpuUsage() taken earlier in this process), in microseconds. */
  mcCpuSince: (since: NodeJS.CpuUsage) => cpuMicrosSince(since),
  mcMetrics: (args: ClusterArgs) => membership(args).node.getLocalMetrics().cluster,
};

// -------------------------------------------------------------------------------------------------
// raw node:dgram multicast, the physical limit

const RAW_BLAST = 0x42; // 'B'
const RAW_PING = 0x50; // 'P'
const RAW_PONG = 0x52; // 'R'
const RAW_STAMPED = 0x54; // 'T'

let raw: Socket | undefined;
let rawTarget = { group: '', port: 0 };
let rawReceived = 0;
let rawFirstMs = 0;
let rawLastMs = 0;
let rawSamples: number[] = [];
let pongWaiter: ((seq: number) => void) | undefined;

function rawSocket(): Socket {
  if (!raw) throw new Error('no raw socket: send rawOpen first');
  return raw;
}

const rawHandlers: Record<string, Handler> = {
  rawOpen: (args: { group: string; port: number; receiveBufferBytes: number }) =>
    new Promise<void>((resolve, reject) => {
      const socket = createSocket({ type: 'udp4', reuseAddr: true });
      socket.once('error', reject);
      socket.bind({ port: args.port, address: args.group, exclusive: false }, () => {
        socket.off('error', reject);
        socket.addMembership(args.group, '127.0.0.1');
        socket.setMulticastInterface('127.0.0.1');
        socket.setMulticastTTL(1);
        socket.setMulticastLoopback(true);
        socket.setRecvBufferSize(args.receiveBufferBytes);
        socket.on('message', onRawMessage);
        raw = socket;
        rawTarget = { group: args.group, port: args.port };
        resolve();
      });
    }),
  rawClose: () =>
    new Promise<void>((resolve) => {
      if (!raw) return resolve();
      raw.close(() => resolve());
      raw = undefined;
    }),
  rawArm: () => {
    rawReceived = 0;
    rawFirstMs = 0;
    rawLastMs = 0;
    rawSamples = [];
  },
  rawStats: () => ({ received: rawReceived, firstMs: rawFirstMs, lastMs: rawLastMs }),
  /** Sends `bytes`-byte datagrams as fast as the socket takes them, at most `maxPending` in flight. */
  rawBlast: (args: { durationMs: number; bytes: number; maxPending: number }) =>
    new Promise((resolve) => {
      const socket = rawSocket();
      const datagram = Buffer.alloc(args.bytes, 0x78);
      datagram[0] = RAW_BLAST;
      let pending = 0;
      let sent = 0;
      const startMs = monotonicMs();
      const done = () => --pending;
      const step = () => {
        while (pending < args.maxPending) {
          socket.send(datagram, rawTarget.port, rawTarget.group, done);
          pending++;
          sent++;
        }
        if (monotonicMs() - startMs < args.durationMs) setImmediate(step);
        else resolve({ sent, startMs, endMs: monotonicMs() });
      };
      step();
    }),
  /** Sequential round trips with the member running rawPong: the floor of any request/response. */
  rawPing: async (args: { count: number; bytes: number }) => {
    const socket = rawSocket();
    const datagram = Buffer.alloc(args.bytes, 0x78);
    datagram[0] = RAW_PING;
    const rtts: number[] = [];
    for (let seq = 0; seq < args.count; seq++) {
      datagram.writeUInt32BE(seq, 1);
      const start = monotonicMs();
      const answered = new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          pongWaiter = undefined;
          resolve();
        }, 200);
        pongWaiter = (answer) => {
          if (answer !== seq) return;
          clearTimeout(timer);
          rtts.push(monotonicMs() - start);
          pongWaiter = undefined;
          resolve();
        };
      });
      socket.send(datagram, rawTarget.port, rawTarget.group);
      await answered;
    }
    return rtts.map((ms) => Math.round(ms * 1000) / 1000);
  },
  /** Datagrams at `rate` per second, each stamped: the same one-way method as mcPaced. */
  rawPaced: async (args: { rate: number; durationMs: number; bytes: number }) => {
    const socket = rawSocket();
    const datagram = Buffer.alloc(args.bytes, 0x78);
    datagram[0] = RAW_STAMPED;
    return paced(args.rate, args.durationMs, () => {
      datagram.writeDoubleBE(monotonicMs(), 1);
      socket.send(datagram, rawTarget.port, rawTarget.group);
    });
  },
  rawSampleCount: () => rawSamples.length,
  rawCollect: () => {
    const samples = rawSamples.map((ms) => Math.round(ms * 1000) / 1000);
    rawSamples = [];
    return samples;
  },
};

let ponging = false;
function onRawMessage(datagram: Buffer): void {
  const kind = datagram[0];
  if (kind === RAW_BLAST) {
    const now = monotonicMs();
    if (rawReceived++ === 0) rawFirstMs = now;
    rawLastMs = now;
  } else if (kind === RAW_STAMPED) {
    rawSamples.push(monotonicMs() - datagram.readDoubleBE(1));
  } else if (kind === RAW_PING && ponging) {
    datagram[0] = RAW_PONG;
    raw!.send(datagram, rawTarget.port, rawTarget.group);
  } else if (kind === RAW_PONG) {
    pongWaiter?.(datagram.readUInt32BE(1));
  }
}
rawHandlers.rawPong = (on: boolean) => {
  ponging = on;
};

// -------------------------------------------------------------------------------------------------
// Redis pub/sub (ioredis is loaded only when asked for, so the cluster benchmark never needs it)

type RedisClient = import('ioredis').Redis;
let redisClients: RedisClient[] = [];
let redisSamples: number[] = [];

async function redisConnect(port: number): Promise<RedisClient> {
  const { Redis } = await import('ioredis');
  const client = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 1 });
  await client.connect();
  redisClients.push(client);
  return client;
}

const redisHandlers: Record<string, Handler> = {
  redisSubscribe: async (args: { port: number; channel: string }) => {
    const client = await redisConnect(args.port);
    client.on('messageBuffer', (_channel: Buffer, message: Buffer) => {
      redisSamples.push(monotonicMs() - message.readDoubleBE(0));
    });
    await client.subscribe(args.channel);
    redisSamples = [];
  },
  redisPaced: async (args: {
    port: number;
    channel: string;
    rate: number;
    durationMs: number;
    bytes: number;
  }) => {
    const client = await redisConnect(args.port);
    const message = Buffer.alloc(args.bytes, 0x78);
    return paced(args.rate, args.durationMs, () => {
      // A fresh buffer per message: ioredis may hold it until the socket write.
      const copy = Buffer.from(message);
      copy.writeDoubleBE(monotonicMs(), 0);
      void client.publish(args.channel, copy);
    });
  },
  redisSampleCount: () => redisSamples.length,
  redisCollect: () => {
    const samples = redisSamples.map((ms) => Math.round(ms * 1000) / 1000);
    redisSamples = [];
    return samples;
  },
  redisClose: async () => {
    const clients = redisClients;
    redisClients = [];
    await Promise.all(clients.map((client) => client.quit().catch(() => client.disconnect())));
  },
};

// -------------------------------------------------------------------------------------------------

const handlers: Record<string, Handler> = {
  ...mcHandlers,
  ...rawHandlers,
  ...redisHandlers,
  exit: async () => {
    await Promise.all([...memberships.values()].map((m) => m.node.shutdown()));
    setImmediate(() => process.exit(0));
  },
};

process.on('message', async (message: { id: number; command: string; args: unknown }) => {
  const handler = handlers[message.command];
  try {
    if (!handler) throw new Error(`unknown command ${message.command}`);
    const result = await handler(message.args);
    process.send!({ id: message.id, ok: true, result });
  } catch (error) {
    process.send!({ id: message.id, ok: false, error: String((error as Error)?.stack ?? error) });
  }
});
// The parent going away (crash, ^C) must not leave members behind.
process.on('disconnect', () => process.exit(0));
process.send!({ id: 0, ok: true, result: 'ready' });
