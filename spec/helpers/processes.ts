/**
 * Real member processes for cluster tests: spawn them (spec/fixtures/udp-member.ts under tsx), talk to
 * them over IPC with deadlines, and always kill them, whatever the test did. Members use UDP multicast
 * on a fresh group unless their spec gives unicast peers or a NATS URL.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { EngineTiming } from '../../lib/cluster/engine.js';
import { mulberry32 } from '../../lib/transport/memory-network.js';
import type {
  MemberCommand,
  MemberMetrics,
  MemberOp,
  MemberReply,
  MemberStart,
} from '../fixtures/udp-member.js';
import { IpcCalls, type IpcReply } from './ipc-calls.js';
import { TSX_LOADER } from './tsx.js';

const PROJECT_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const MEMBER_SCRIPT = fileURLToPath(new URL('../fixtures/udp-member.ts', import.meta.url));

/** Loopback only: test traffic never leaves the machine. */
export const LOOPBACK = '127.0.0.1';

/** A fresh group and port, so runs (and tests running alongside) never hear each other. */
export function randomGroup(): { group: string; port: number } {
  return {
    group: `239.${randomInt(1, 255)}.${randomInt(0, 256)}.${randomInt(1, 255)}`,
    port: randomInt(20_000, 60_000),
  };
}

/**
 * Polls `condition` until it returns something other than false/undefined, and returns that.
 * Throws after `deadlineMs`, naming `what` and, if given, `explain()` (the state that did not match).
 */
export async function waitFor<T>(
  condition: () => T | false | undefined | Promise<T | false | undefined>,
  deadlineMs: number,
  what: string,
  explain?: () => unknown | Promise<unknown>,
): Promise<T> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const value = await condition();
    if (value !== false && value !== undefined) return value;
    if (Date.now() > deadline) {
      const detail = explain ? `: ${JSON.stringify(await explain())}` : '';
      throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}${detail}`);
    }
    await sleep(10);
  }
}

/** How a member process is configured. */
export interface MemberSpec {
  /** Label used in error messages. */
  name: string;
  cluster?: string;
  /** Fernet key(s), comma-separated; none means no encryption. */
  cryptoKey?: string;
  /** TEST_MONKEY_TANTRUM percentage. */
  tantrum?: number;
  /** Anti-entropy pulse in seconds (MCCACHE_CACHE_PULSE); the default otherwise. */
  pulse?: number;
  timing?: Partial<EngineTiming>;
  /** Unicast peers, `host:port` (MCCACHE_PEERS): the member uses unicast instead of multicast. */
  peers?: string[];
  /** `address:port` the member receives unicast on (MCCACHE_UNICAST_BIND). */
  unicastBind?: string;
  /** NATS server URL(s) (MCCACHE_NATS_URL): the member uses NATS instead of multicast. */
  natsUrl?: string;
  /** More environment, applied last (e.g. fixture knobs such as UDP_MEMBER_NATS_OUTAGE_WARNING_MS). */
  env?: Record<string, string>;
  /**
   * Starts the process in a way of the test's choosing (e.g. inside a network namespace) instead of
   * taking a warm one; gets the command and options a plain start would use.
   */
  launch?: (command: string[], options: SpawnOptions) => ChildProcess;
}

type Command = MemberCommand extends infer C ? (C extends unknown ? Omit<C, 'id'> : never) : never;

/** One running member process. */
export class MemberProcess {
  /** The member's node id (8 hex digits), known once it is ready. */
  nodeId = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly calls: IpcCalls;
  private stderr = '';
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    this.calls = new IpcCalls(name);
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (text: string) => {
      // Kept (bounded) for failure messages.
      this.stderr = (this.stderr + text).slice(-4000);
    });
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        this.calls.failAll(new Error(`${name} exited (code ${code}, signal ${signal}): ${this.stderr}`));
        resolve({ code, signal });
      });
    });
    child.on('message', (reply: MemberReply) => this.calls.settle(reply as IpcReply));
  }

  get alive(): boolean {
    return this.exitInfo === undefined;
  }

  /** Sends a command and waits for its answer, at most `deadlineMs`. */
  request<T = unknown>(command: Command, deadlineMs = 10_000): Promise<T> {
    if (!this.alive) return Promise.reject(new Error(`${this.name} is not running: ${this.stderr}`));
    return this.calls.call<T>(
      (id) => this.child.send({ ...command, id } as MemberCommand),
      deadlineMs,
      () => `${this.name} did not answer ${Object.keys(command)[0]} within ${deadlineMs} ms`,
    );
  }

  write(key: string, value: unknown): Promise<unknown> {
    return this.request({ write: { key, value } });
  }

  delete(key: string): Promise<unknown> {
    return this.request({ delete: { key } });
  }

  /** Applies ops in order, pausing `pauseMs` after every `chunk` ops. */
  apply(ops: MemberOp[], chunk = 10, pauseMs = 1): Promise<number> {
    return this.request<number>({ apply: { ops, chunk, pauseMs } }, 30_000);
  }

  checksum(): Promise<Record<string, { crc: string; tsm: number }>> {
    return this.request({ checksum: {} });
  }

  entries(): Promise<Record<string, unknown>> {
    return this.request({ entries: {} });
  }

  metrics(): Promise<MemberMetrics> {
    return this.request<MemberMetrics>({ metrics: {} });
  }

  /** The engine's drop counters by reason. */
  dropped(): Promise<Record<string, number>> {
    return this.request({ dropped: {} });
  }

  /** Graceful exit: shutdown() (BYE), then the process ends. */
  async shutdown(): Promise<void> {
    await this.request({ exit: {} });
    await this.exited;
  }

  /** kill -9: no BYE, no flush. */
  async crash(): Promise<void> {
    this.child.kill('SIGKILL');
    await this.exited;
  }
}

/**
 * The member processes of one test, on one fresh group and port, with logs in a temp dir.
 * Use with try/finally: {@link ProcessCluster.close} kills whatever is still running.
 */
export class ProcessCluster {
  readonly group: string;
  readonly port: number;
  readonly members: MemberProcess[] = [];
  private readonly logDir = mkdtempSync(join(tmpdir(), 'mccache-udp-'));

  constructor() {
    ({ group: this.group, port: this.port } = randomGroup());
  }

  /** Starts a member and waits until its network is up. */
  async spawn(spec: MemberSpec, deadlineMs = 20_000): Promise<MemberProcess> {
    const env: Record<string, string> = {
      MCCACHE_MULTICAST_IP: this.group,
      MCCACHE_MULTICAST_PORT: String(this.port),
      MCCACHE_MULTICAST_IF: LOOPBACK,
      MCCACHE_MULTICAST_HOPS: '1',
      MCCACHE_LOG_FILENAME: join(this.logDir, `${spec.name}.log`),
      // Room for every key a test writes: evictions (tested elsewhere) would blur what it checks.
      MCCACHE_CACHE_MAX: '100000',
    };
    if (spec.cluster !== undefined) env.MCCACHE_CLUSTER = spec.cluster;
    if (spec.cryptoKey !== undefined) env.MCCACHE_CRYPTO_KEY = spec.cryptoKey;
    if (spec.tantrum !== undefined) env.TEST_MONKEY_TANTRUM = String(spec.tantrum);
    if (spec.pulse !== undefined) env.MCCACHE_CACHE_PULSE = String(spec.pulse);
    if (spec.timing !== undefined) env.UDP_MEMBER_TIMING = JSON.stringify(spec.timing);
    if (spec.peers !== undefined) env.MCCACHE_PEERS = spec.peers.join(',');
    if (spec.unicastBind !== undefined) env.MCCACHE_UNICAST_BIND = spec.unicastBind;
    if (spec.natsUrl !== undefined) env.MCCACHE_NATS_URL = spec.natsUrl;
    Object.assign(env, spec.env);
    const started = spec.launch ? launchIdleProcess(spec.launch).then(referenced) : takeWarmProcess();
    const child = await withDeadline(started, deadlineMs, `${spec.name}: process start`);
    const member = new MemberProcess(spec.name, child);
    this.members.push(member);
    const ready = new Promise<string>((resolve, reject) => {
      child.on('message', (reply: MemberReply) => {
        if ('ready' in reply) resolve(reply.ready);
      });
      member.exited.then(({ code, signal }) => {
        reject(new Error(`${spec.name} exited before ready (code ${code}, signal ${signal})`));
      });
    });
    child.send({ start: { env } } satisfies MemberStart);
    member.nodeId = await withDeadline(ready, deadlineMs, `${spec.name} ready`);
    return member;
  }

  /** The log file of the member called `name` (its warnings and errors). */
  logFile(name: string): string {
    return join(this.logDir, `${name}.log`);
  }

  /** Starts several members at once. */
  spawnAll(specs: MemberSpec[]): Promise<MemberProcess[]> {
    return Promise.all(specs.map((spec) => this.spawn(spec)));
  }

  /** Kills every member still running (SIGKILL), waits for them, and removes the logs. */
  async close(): Promise<void> {
    await Promise.all(
      this.members.map(async (member) => {
        if (member.alive) member.child.kill('SIGKILL');
        await member.exited;
      }),
    );
    rmSync(this.logDir, { recursive: true, force: true });
  }
}

/** Rejects with `what` if `promise` has not settled within `deadlineMs`. */
function withDeadline<T>(promise: Promise<T>, deadlineMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done within ${deadlineMs} ms`)), deadlineMs);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------------------------
// Warm processes: starting node + tsx and loading the library takes about a second of CPU, so a few
// processes are started ahead and wait, idle (no socket, no settings), for a test to configure them.

/** Idle processes kept ready; a test of 3 or 4 members then waits for at most one or two. */
const WARM_PROCESSES = 3;
const warm: Promise<ChildProcess>[] = [];
const launched = new Set<ChildProcess>();

function launchWarmProcess(): Promise<ChildProcess> {
  return launchIdleProcess((command, options) => spawn(command[0]!, command.slice(1), options));
}

/** Starts a member process through `launch` and resolves once it is idle, waiting for its settings. */
function launchIdleProcess(
  launch: (command: string[], options: SpawnOptions) => ChildProcess,
): Promise<ChildProcess> {
  const child = launch([process.execPath, '--import', TSX_LOADER, MEMBER_SCRIPT], {
    cwd: PROJECT_ROOT,
    // Only what node needs: the member's settings come with the start message.
    env: { PATH: process.env.PATH, HOME: process.env.HOME },
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    serialization: 'advanced',
  });
  launched.add(child);
  child.once('exit', () => launched.delete(child));
  // While idle it must not keep the test process alive; taking it refs it again.
  child.unref();
  child.channel?.unref();
  const idle = new Promise<ChildProcess>((resolve, reject) => {
    child.once('message', (reply: MemberReply) => {
      if ('idle' in reply) resolve(child);
    });
    child.once('exit', (code, signal) =>
      reject(new Error(`member process exited while starting (code ${code}, signal ${signal})`)),
    );
  });
  idle.catch(() => {}); // reported to whoever takes it
  return idle;
}

async function takeWarmProcess(): Promise<ChildProcess> {
  const next = warm.shift() ?? launchWarmProcess();
  while (warm.length < WARM_PROCESSES) warm.push(launchWarmProcess());
  let child = await next.catch(() => launchWarmProcess());
  if (child.exitCode !== null || child.signalCode !== null) child = await launchWarmProcess();
  return referenced(child);
}

/** A process in use keeps the test process alive again (until it exits). */
function referenced(child: ChildProcess): ChildProcess {
  child.ref();
  child.channel?.ref();
  return child;
}

/** Kills the idle processes kept ready, and any other left running (call after a file's tests). */
export async function closeWarmProcesses(): Promise<void> {
  warm.length = 0;
  const idle = [...launched].filter((child) => child.exitCode === null && child.signalCode === null);
  await Promise.all(
    idle.map(
      (child) =>
        new Promise<void>((resolve) => {
          child.once('exit', () => resolve());
          // Referenced again, so that the test process waits for the exit.
          child.ref();
          child.kill('SIGKILL');
        }),
    ),
  );
}

/** True when every member holds the same checksum; returns the common checksum then. */
export async function commonChecksum(
  members: MemberProcess[],
): Promise<Record<string, { crc: string; tsm: number }> | undefined> {
  const sums = await Promise.all(members.map((member) => member.checksum()));
  const first = JSON.stringify(sums[0]);
  return sums.every((sum) => JSON.stringify(sum) === first) ? sums[0] : undefined;
}

/** Keys whose checksum differs between members, for failure messages. */
export async function checksumDifferences(members: MemberProcess[]): Promise<Record<string, unknown[]>> {
  const sums = await Promise.all(members.map((member) => member.checksum()));
  const keys = new Set(sums.flatMap((sum) => Object.keys(sum)));
  const differing: Record<string, unknown[]> = {};
  for (const key of keys) {
    const versions = sums.map((sum) => sum[key]);
    if (new Set(versions.map((v) => JSON.stringify(v))).size > 1) differing[key] = versions;
  }
  return differing;
}

/** Waits until every member counts `count` others (NEW/heartbeats have been heard all round). */
export function waitForMembers(members: MemberProcess[], count: number, deadlineMs: number): Promise<true> {
  return waitFor(
    async () =>
      (await Promise.all(members.map((m) => m.metrics()))).every((m) => m.cluster.members === count),
    deadlineMs,
    `every member to count ${count} others`,
    async () => (await Promise.all(members.map((m) => m.metrics()))).map((m) => m.cluster.members),
  );
}

// ---------------------------------------------------------------------------------------------
// Workloads on overlapping keys and what converged members must hold afterwards.

/** Everything written during a test, to check that members hold only what someone wrote. */
export class WriteLog {
  /** key -> every value written to it, as JSON. */
  private readonly written = new Map<string, Set<string>>();
  /** key -> the last op of its only writer (private keys). */
  readonly lastOfPrivate = new Map<string, MemberOp>();

  note(op: MemberOp, isPrivate: boolean): void {
    if ('value' in op) {
      let values = this.written.get(op.key);
      if (!values) this.written.set(op.key, (values = new Set()));
      values.add(JSON.stringify(op.value));
    }
    if (isPrivate) this.lastOfPrivate.set(op.key, op);
  }

  /** Entries (key -> value) that nobody wrote. */
  foreign(entries: Record<string, unknown>): string[] {
    return Object.entries(entries)
      .filter(([key, value]) => !this.written.get(key)?.has(JSON.stringify(value)))
      .map(([key]) => key);
  }
}

/**
 * Seeded ops for member `name`: writes (strings, numbers, objects) and deletes, mostly on keys every
 * member uses, the rest on keys only this member writes (so their final state is known exactly).
 * `round` keeps the values of later batches distinct from earlier ones.
 */
export function seededOps(name: string, seed: number, count: number, log: WriteLog, round = 0): MemberOp[] {
  const random = mulberry32(seed);
  const ops: MemberOp[] = [];
  for (let i = 0; i < count; i++) {
    const isPrivate = random() < 0.3;
    const key = isPrivate
      ? `${name}-own-${Math.floor(random() * 20)}`
      : `shared-${Math.floor(random() * 60)}`;
    const pick = random();
    let op: MemberOp;
    if (pick < 0.25) op = { key };
    else if (pick < 0.5) op = { key, value: `${name}#${round}.${i}` };
    else if (pick < 0.75) op = { key, value: (round * 100_000 + i) * 1000 + seed };
    else op = { key, value: { by: name, round, i, tags: [seed, i % 7] } };
    log.note(op, isPrivate);
    ops.push(op);
  }
  return ops;
}

/** Every member applies its own seeded ops at the same time. */
export async function writeConcurrently(
  members: MemberProcess[],
  count: number,
  seed: number,
  log: WriteLog,
  round = 0,
): Promise<void> {
  await Promise.all(
    members.map((member, index) => member.apply(seededOps(member.name, seed + index, count, log, round))),
  );
}

/** Waits until every member holds the same checksum; fails listing the differing keys. */
export function converged(
  members: MemberProcess[],
  deadlineMs: number,
): Promise<Record<string, { crc: string; tsm: number }>> {
  return waitFor(
    () => commonChecksum(members),
    deadlineMs,
    `identical checksums on ${members.map((m) => m.name).join(', ')}`,
    () => checksumDifferences(members),
  );
}

/**
 * Checks what converged members hold against what was written: identical entries, no value nobody
 * wrote, the last write (or delete) of every private key. Returns the common entries.
 */
export async function assertHoldsWhatWasWritten(
  members: MemberProcess[],
  log: WriteLog,
): Promise<Record<string, unknown>> {
  const [first, ...others] = await Promise.all(members.map((member) => member.entries()));
  for (const entries of others) assert.deepEqual(entries, first);
  assert.deepEqual(log.foreign(first!), [], 'values that nobody wrote');
  for (const [key, op] of log.lastOfPrivate) {
    if ('value' in op) assert.deepEqual(first![key], op.value, `last write of ${key}`);
    else assert.equal(key in first!, false, `${key} was deleted last`);
  }
  assert.ok(
    Object.keys(first!).some((key) => key.startsWith('shared-')),
    'some shared keys survive',
  );
  return first!;
}
