/**
 * Faults between real network stacks (issue 6). Every member runs in a network namespace of its own,
 * joined to a bridge by a veth pair; loss is real kernel loss (iptables statistic), a partition is
 * the bridge port going down, a crash is SIGKILL. Needs root; skipped with the reason otherwise.
 *
 * TEST_NETNS_SECONDS sets the length of the workloads (default 5; the figures in docs/FAULTS.md come
 * from 60). TEST_NETNS_FUZZ sets the hostile datagram count (default 100000). TEST_NETNS_REPORT, a
 * file path, collects each scenario's figures as JSON lines.
 *
 * Every wait is a condition with a deadline. Deadlines that are the acceptance bounds
 * (2 s after the load, two pulses after a heal) are named as such; the others are generous.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import {
  lossSupport,
  NETNS_PREFIX,
  NetnsTopology,
  netnsSupport,
  sweepStaleNamespaces,
} from '../lib/cli/netns.js';
import type { EngineTiming } from '../lib/cluster/engine.js';
import type { LocalMetrics } from '../lib/node.js';
import { generateFernetKey } from '../lib/wire/fernet.js';
import type {
  EntryVersion,
  FuzzArgs,
  OwnWrite,
  WorkloadArgs,
  WorkloadResult,
} from './fixtures/netns-member.js';
import { IpcCalls, type IpcReply } from './helpers/ipc-calls.js';
import { TSX_LOADER } from './helpers/tsx.js';

const PROJECT_ROOT = fileURLToPath(new URL('..', import.meta.url));
const FIXTURE = fileURLToPath(new URL('./fixtures/netns-member.ts', import.meta.url));
const HOLDER = fileURLToPath(new URL('./fixtures/netns-holder.ts', import.meta.url));

const SECONDS = Number(process.env.TEST_NETNS_SECONDS ?? 5);
const FUZZ_DATAGRAMS = Number(process.env.TEST_NETNS_FUZZ ?? 100_000);
const REPORT = process.env.TEST_NETNS_REPORT;

/** Short pulse and member timeout, so a partition is noticed and repaired within a test. */
const PULSE_SECONDS = 2;
const TIMING: Partial<EngineTiming> = { memberTimeoutMs: 3000 };
/** The bound: checksums identical within 2 s after the load stops. */
const AFTER_LOAD_BOUND_MS = 2000;
/** Generous deadline for setup steps (membership forming, a restart joining). */
const SETUP_DEADLINE_MS = 20_000;

const support = await netnsSupport();
const loss = support.available ? await lossSupport() : support;

function report(scenario: string, figures: Record<string, unknown>): void {
  const line = { scenario, date: new Date().toISOString(), seconds: SECONDS, ...figures };
  if (REPORT) appendFileSync(REPORT, `${JSON.stringify(line)}\n`);
}

async function waitFor<T>(
  condition: () => Promise<T | false | undefined>,
  deadlineMs: number,
  what: string,
  explain?: () => Promise<unknown>,
): Promise<{ value: T; elapsedMs: number }> {
  const started = Date.now();
  for (;;) {
    const value = await condition();
    if (value !== false && value !== undefined) return { value, elapsedMs: Date.now() - started };
    if (Date.now() - started > deadlineMs) {
      const detail = explain ? `: ${JSON.stringify(await explain()).slice(0, 2000)}` : '';
      throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}${detail}`);
    }
    await sleep(25);
  }
}

interface MemberConfig {
  cluster?: string;
  cryptoKey?: string;
  role?: 'member' | 'hostile';
}

/** One process inside a namespace, driven over IPC. */
class Member {
  node = 0;
  readonly ready: Promise<void>;
  private child: ChildProcess;
  private stderr = '';
  private readonly calls: IpcCalls;

  constructor(
    readonly topology: NetnsTopology,
    readonly index: number,
    readonly group: { ip: string; port: number },
    readonly config: MemberConfig,
  ) {
    this.calls = new IpcCalls(`member ${index}`);
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      NETNS_ROLE: config.role ?? 'member',
      NETNS_MEMBER_TIMING: JSON.stringify(TIMING),
      MCCACHE_MULTICAST_IP: group.ip,
      MCCACHE_MULTICAST_PORT: String(group.port),
      MCCACHE_CLUSTER: config.cluster ?? 'netns',
      MCCACHE_CACHE_PULSE: String(PULSE_SECONDS),
      ...topology.environmentFor(index),
      ...(config.cryptoKey ? { MCCACHE_CRYPTO_KEY: config.cryptoKey } : {}),
    };
    this.child = topology.spawn(index, [process.execPath, '--expose-gc', '--import', TSX_LOADER, FIXTURE], {
      cwd: PROJECT_ROOT,
      env,
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    this.ready = this.attach();
  }

  get name(): string {
    return `member ${this.index}`;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  private attach(): Promise<void> {
    const child = this.child;
    child.stderr?.on('data', (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString()).slice(-8000);
    });
    child.on('message', (raw) => this.calls.settle(raw as IpcReply));
    child.once('exit', (code, signal) => {
      this.calls.failAll(
        new Error(`${this.name} exited (${code ?? signal}) while answering: ${this.stderr}`),
      );
    });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${this.name} not ready in ${SETUP_DEADLINE_MS} ms: ${this.stderr}`)),
        SETUP_DEADLINE_MS,
      );
      child.on('message', (raw) => {
        const message = raw as { event?: string; node?: number; error?: string };
        if (message.event === 'ready') {
          clearTimeout(timer);
          this.node = message.node ?? 0;
          resolve();
        } else if (message.event === 'failed') {
          clearTimeout(timer);
          reject(new Error(`${this.name} could not start: ${message.error}`));
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`${this.name} exited (${code ?? signal}) before ready: ${this.stderr}`));
      });
    });
  }

  call<T>(cmd: string, args: object = {}, timeoutMs = 60_000): Promise<T> {
    if (!this.alive || !this.child.connected) {
      return Promise.reject(new Error(`${this.name} is not running: ${this.stderr}`));
    }
    return this.calls.call<T>(
      (id) => this.child.send({ id, cmd, args }),
      timeoutMs,
      () => `${this.name} did not answer ${cmd} in ${timeoutMs} ms: ${this.stderr}`,
    );
  }

  /** kill -9, then wait for the exit. */
  async crash(): Promise<void> {
    await this.topology.kill(this.index, 'SIGKILL');
  }

  /** Runs the seed's workload; the answer comes when it is over. */
  workload(args: WorkloadArgs): Promise<WorkloadResult> {
    return this.call<WorkloadResult>('workload', args, args.durationMs + 60_000);
  }

  metrics(): Promise<LocalMetrics> {
    return this.call<LocalMetrics>('metrics');
  }

  checksum(cache: string): Promise<Record<string, { crc: string; tsm: number }>> {
    return this.call('checksum', { cache });
  }

  versions(cache: string): Promise<Record<string, EntryVersion>> {
    return this.call('versions', { cache });
  }

  errors(): string {
    return this.stderr;
  }
}

/** A topology plus the member processes in it; `close` removes everything. */
class Run {
  readonly group = { ip: `239.${randomInt(1, 255)}.${randomInt(0, 256)}.${randomInt(1, 255)}`, port: 4000 };
  readonly members: Member[] = [];

  private constructor(readonly topology: NetnsTopology) {}

  static async create(namespaces: number): Promise<Run> {
    return new Run(await NetnsTopology.create({ members: namespaces }));
  }

  async start(index: number, config: MemberConfig = {}): Promise<Member> {
    const member = new Member(this.topology, index, this.group, config);
    this.members[index] = member;
    await member.ready;
    return member;
  }

  async close(): Promise<void> {
    const namespaces = await this.topology.existingNamespaces();
    await this.topology.destroy();
    const left = await this.topology.existingNamespaces();
    assert.deepEqual(left, [], `namespaces left behind: ${left.join(', ')}`);
    assert.ok(namespaces.length > 0);
  }
}

/** Waits until every member sees exactly `others` other members. */
function waitForMembership(members: Member[], others: number, deadlineMs = SETUP_DEADLINE_MS) {
  return waitFor(
    async () => {
      const seen = await Promise.all(members.map((m) => m.metrics()));
      return seen.every((m) => m.cluster.members === others) || undefined;
    },
    deadlineMs,
    `every member to see ${others} others`,
    async () => Promise.all(members.map(async (m) => (await m.metrics()).cluster.members)),
  );
}

/** Resolves with the common checksum once all members hold identical caches. */
async function agreedChecksum(members: Member[], cache: string): Promise<string | undefined> {
  const sums = await Promise.all(members.map((m) => m.checksum(cache)));
  const texts = sums.map((s) => JSON.stringify(s));
  return texts.every((t) => t === texts[0]) ? texts[0] : undefined;
}

async function checksumDiff(members: Member[], cache: string): Promise<unknown> {
  const sums = await Promise.all(members.map((m) => m.checksum(cache)));
  const keys = new Set(sums.flatMap((s) => Object.keys(s)));
  const differing: Record<string, unknown[]> = {};
  for (const key of keys) {
    const seen = sums.map((s) => s[key]?.crc ?? null);
    if (new Set(seen).size > 1) differing[key] = seen;
  }
  return { entries: sums.map((s) => Object.keys(s).length), differing };
}

function sumOf(metrics: LocalMetrics[], pick: (m: LocalMetrics) => number): number {
  return metrics.reduce((total, m) => total + pick(m), 0);
}

function assertNoInternalErrors(metrics: LocalMetrics[]): void {
  for (const m of metrics) {
    assert.equal(m.cluster.dropped['internal-error'] ?? 0, 0, `member ${m.node}: receive path threw`);
  }
}

const seedWorkload = (seed: number, durationMs: number, cache = 'stress'): WorkloadArgs => ({
  cache,
  seed,
  durationMs,
  keyCount: 200,
  apertureMs: 10,
});

describe('mccache between network namespaces', { skip: support.available ? false : support.reason }, () => {
  test('destroy kills what runs inside and deletes every namespace, interfaces included', async () => {
    const topology = await NetnsTopology.create({ members: 2 });
    const names = await topology.existingNamespaces();
    assert.deepEqual(names.sort(), [`${topology.runId}-br`, `${topology.runId}-m0`, `${topology.runId}-m1`]);
    const links = execFileSync('ip', ['-n', topology.bridgeNamespace, '-o', 'link', 'show'], {
      encoding: 'utf8',
    });
    assert.match(links, /\bm0@/);
    assert.match(links, /\bm1@/);
    // Multicast leaves a member through its veth by default (multicastRoute: null removes the route).
    const route = execFileSync('ip', ['-n', topology.members[0]!.namespace, 'route', 'get', '239.1.2.3'], {
      encoding: 'utf8',
    });
    assert.match(route, /dev veth0/);
    const sleeper = topology.spawn(1, ['sleep', '600'], { stdio: 'ignore' });
    const exited = new Promise((resolve) => sleeper.once('exit', (_code, signal) => resolve(signal)));
    await topology.destroy();
    assert.equal(await exited, 'SIGKILL');
    assert.deepEqual(await topology.existingNamespaces(), []);
  });

  // Ctrl-C reaches the whole process group: under tsx the supervisor relays the signal again and
  // SIGKILLs its child unless the child's event loop acknowledges it within milliseconds.
  for (const [how, signal] of [
    ['a Ctrl-C to the process group under npx tsx', 'SIGINT'],
    ['SIGTERM to the process alone', 'SIGTERM'],
  ] as const) {
    test(`${how} still deletes every namespace`, async () => {
      // `npx tsx ...` as in the README's commands: npm, a shell, tsx and node in one process group.
      const argv =
        signal === 'SIGINT' ? ['npx', 'tsx', HOLDER] : [process.execPath, '--import', TSX_LOADER, HOLDER];
      const holder = spawn(argv[0]!, argv.slice(1), {
        cwd: PROJECT_ROOT,
        detached: true,
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      const exited = new Promise((resolve) => holder.once('exit', (code, sig) => resolve(sig ?? code)));
      try {
        let printed = '';
        holder.stdout!.setEncoding('utf8').on('data', (text: string) => {
          printed += text;
        });
        const { value: runId } = await waitFor(
          async () => /^(\S+)\n/.exec(printed)?.[1],
          SETUP_DEADLINE_MS,
          'the topology to be built',
        );
        const ours = () =>
          execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
            .split('\n')
            .filter((line) => line.startsWith(`${runId}-`));
        assert.equal(ours().length, 6);
        if (signal === 'SIGINT') process.kill(-holder.pid!, signal);
        else holder.kill(signal);
        assert.ok((await exited) !== null, 'the process ended');
        assert.deepEqual(ours(), [], 'no namespace is left');
      } finally {
        try {
          process.kill(-holder.pid!, 'SIGKILL');
        } catch {}
      }
    });
  }

  test('a later run sweeps the namespaces of a run whose process is gone, and only those', async () => {
    // A pid that certainly belonged to a process that has exited.
    const gone = spawn('true');
    await new Promise((resolve) => gone.once('exit', resolve));
    const stale = [`${NETNS_PREFIX}${gone.pid}-zz9zz-br`, `${NETNS_PREFIX}${gone.pid}-zz9zz-m0`];
    for (const name of stale) execFileSync('ip', ['netns', 'add', name]);
    const straggler = spawn('ip', ['netns', 'exec', stale[1]!, 'sleep', '600'], { stdio: 'ignore' });
    const killed = new Promise((resolve) => straggler.once('exit', (_code, signal) => resolve(signal)));
    const mine = await NetnsTopology.create({ members: 1 });
    try {
      const listed = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
      for (const name of stale)
        assert.ok(!listed.includes(name), `${name} swept when a topology was created`);
      assert.equal(await killed, 'SIGKILL');
      // A live run's namespaces (this process's) are never swept.
      assert.deepEqual(await sweepStaleNamespaces(), []);
      assert.equal((await mine.existingNamespaces()).length, 2);
    } finally {
      await mine.destroy();
      for (const name of stale) spawn('ip', ['netns', 'del', name], { stdio: 'ignore' });
    }
  });

  test('five members with 10% kernel loss each agree within 2 s after the load stops', {
    skip: loss.available ? false : loss.reason,
    timeout: 120_000 + SECONDS * 3000,
  }, async () => {
    const run = await Run.create(5);
    try {
      const members = await Promise.all([0, 1, 2, 3, 4].map((i) => run.start(i)));
      await waitForMembership(members, 4);
      for (const member of members) await run.topology.setLoss(member.index, 0.1);

      const results = await Promise.all(
        members.map((m, i) => m.workload(seedWorkload(1000 + i, SECONDS * 1000))),
      );
      // The bound starts when the last member has reported that its load is over.
      const converged = await waitFor(
        () => agreedChecksum(members, 'stress'),
        AFTER_LOAD_BOUND_MS,
        'identical checksums within 2 s after the load',
        () => checksumDiff(members, 'stress'),
      );

      const metrics = await Promise.all(members.map((m) => m.metrics()));
      const kernelDrops = await Promise.all(members.map((m) => run.topology.lossDrops(m.index)));
      const writes = results.reduce((n, r) => n + r.inserts + r.updates + r.deletes, 0);
      const entries = Object.keys(JSON.parse(converged.value)).length;
      assert.ok(writes > 100 * SECONDS, `the workload wrote (${writes} writes)`);
      assert.ok(entries > 0, 'the agreed caches are not empty');
      for (const dropped of kernelDrops)
        assert.ok(dropped > 0, 'the kernel dropped packets in every namespace');
      assert.ok(sumOf(metrics, (m) => m.cluster.retransmits) > 0, 'lost datagrams were retransmitted');
      assertNoInternalErrors(metrics);
      report('loss', {
        members: 5,
        loss: 0.1,
        writes,
        entries,
        convergedAfterLoadMs: converged.elapsedMs,
        kernelDrops: kernelDrops.reduce((a, b) => a + b, 0),
        datagramsSent: sumOf(metrics, (m) => m.cluster.datagramsSent),
        retransmits: sumOf(metrics, (m) => m.cluster.retransmits),
        naksSent: sumOf(metrics, (m) => m.cluster.naksSent),
        unrecoverable: sumOf(metrics, (m) => m.cluster.unrecoverable),
        repairsPushed: sumOf(metrics, (m) => m.cluster.repairsPushed),
        latencyP99Ms: metrics.map((m) => m.cluster.latencyMs),
      });
    } finally {
      await run.close();
    }
  });

  test('after a partition heals, every member converges to the last-write-wins winner within two pulses', {
    timeout: 120_000 + SECONDS * 3000,
  }, async () => {
    const run = await Run.create(5);
    try {
      const members = await Promise.all([0, 1, 2, 3, 4].map((i) => run.start(i)));
      await waitForMembership(members, 4);
      const keys = Array.from({ length: 50 }, (_, i) => `k${i}`);
      await members[1]!.call('write', { cache: 'contested', entries: keys.map((k) => [k, { base: k }]) });
      await waitFor(() => agreedChecksum(members, 'contested'), SETUP_DEADLINE_MS, 'the baseline to spread');

      const isolated = members[0]!;
      const majority = members.slice(1);
      const partitionMs = Math.min(10, SECONDS) * 1000;
      await run.topology.partition(isolated.index);
      // Both sides write the same 50 keys for the length of the partition.
      const writing = Promise.all(
        members.map((m, i) =>
          m.workload({
            ...seedWorkload(2000 + i, partitionMs, 'contested'),
            keyCount: 50,
          }),
        ),
      );
      // The partition is silent, yet both sides notice it (member timeout).
      await waitForMembership(majority, 3, partitionMs + 5000);
      await waitForMembership([isolated], 0, partitionMs + 5000);
      await writing;
      await run.topology.heal(isolated.index);

      const writes = await Promise.all(
        members.map((m) => m.call<Record<string, OwnWrite>>('ownWrites', { cache: 'contested' })),
      );
      const winners = new Map<string, OwnWrite & { by: number }>();
      writes.forEach((own, by) => {
        for (const [key, write] of Object.entries(own)) {
          const best = winners.get(key);
          if (!best || write.tsm > best.tsm || (write.tsm === best.tsm && write.writer > best.writer)) {
            winners.set(key, { ...write, by });
          }
        }
      });
      const expected: Record<string, EntryVersion> = {};
      for (const key of [...winners.keys()].sort()) {
        const winner = winners.get(key)!;
        if (winner.crc !== null) expected[key] = { tsm: winner.tsm, writer: winner.writer, crc: winner.crc };
      }
      const wonByIsolated = [...winners.values()].filter((w) => w.by === 0).length;
      assert.ok(wonByIsolated > 0 && wonByIsolated < winners.size, 'both sides won some keys');

      const bound = 2 * PULSE_SECONDS * 1000;
      const converged = await waitFor(
        async () => {
          const seen = await Promise.all(members.map((m) => m.versions('contested')));
          return seen.every((v) => JSON.stringify(v) === JSON.stringify(expected)) || undefined;
        },
        bound,
        'every member to hold the last-write-wins winners within two pulses of the heal',
        async () => {
          const seen = await Promise.all(members.map((m) => m.versions('contested')));
          return seen.map((v) => Object.keys(expected).filter((k) => v[k]?.tsm !== expected[k]?.tsm).length);
        },
      );
      await waitForMembership(members, 4);
      const metrics = await Promise.all(members.map((m) => m.metrics()));
      assert.ok(sumOf(metrics, (m) => m.cluster.membersTimedOut) >= 5, 'both sides dropped each other');
      assertNoInternalErrors(metrics);
      report('partition', {
        members: 5,
        partitionMs,
        pulseMs: PULSE_SECONDS * 1000,
        contestedKeys: winners.size,
        wonByIsolated,
        deletedWinners: winners.size - Object.keys(expected).length,
        convergedAfterHealMs: converged.elapsedMs,
        retransmits: sumOf(metrics, (m) => m.cluster.retransmits),
        repairsPushed: sumOf(metrics, (m) => m.cluster.repairsPushed),
        repairsRequested: sumOf(metrics, (m) => m.cluster.repairsRequested),
        syncsSent: sumOf(metrics, (m) => m.cluster.syncsSent),
      });
    } finally {
      await run.close();
    }
  });

  test('a member killed with kill -9 is dropped, restarts with the full state, and the cluster converges', {
    timeout: 120_000 + SECONDS * 3000,
  }, async () => {
    const run = await Run.create(5);
    try {
      const members = await Promise.all([0, 1, 2, 3, 4].map((i) => run.start(i)));
      await waitForMembership(members, 4);
      const survivors = members.slice(0, 4);
      const victim = members[4]!;
      const loadMs = SECONDS * 1000;
      // Entries nobody touches after the crash: the restarted member can only get them by state transfer.
      const archive = Array.from({ length: 100 }, (_, i) => [`a${i}`, { archived: i }]);
      await members[0]!.call('write', { cache: 'archive', entries: archive });
      // Load A: everyone writes; the victim is killed halfway through.
      const loadA = Promise.all(survivors.map((m, i) => m.workload(seedWorkload(3000 + i, loadMs))));
      void victim.workload(seedWorkload(3004, loadMs)).catch(() => {});
      await sleep(loadMs / 2);
      const victimNode = victim.node;
      await victim.crash();
      const dropped = await waitFor(
        async () => {
          const seen = await Promise.all(survivors.map((m) => m.metrics()));
          return seen.every((m) => m.cluster.members === 3 && m.cluster.membersTimedOut >= 1) || undefined;
        },
        TIMING.memberTimeoutMs! + 5000,
        'the survivors to drop the killed member',
      );
      await loadA;

      // Load B: the survivors keep writing while the victim restarts and joins.
      const restarting = run.start(4);
      const loadB = Promise.all(survivors.map((m, i) => m.workload(seedWorkload(3100 + i, loadMs))));
      const restarted = await restarting;
      assert.notEqual(restarted.node, victimNode, 'a restart is a new member');
      await loadB;
      const all = [...survivors, restarted];
      const converged = await waitFor(
        () => agreedChecksum(all, 'stress'),
        AFTER_LOAD_BOUND_MS,
        'identical checksums within 2 s after the load, restarted member included',
        () => checksumDiff(all, 'stress'),
      );
      const archived = await waitFor(
        async () => {
          const [held, reference] = await Promise.all([
            restarted.versions('archive'),
            survivors[1]!.versions('archive'),
          ]);
          return JSON.stringify(held) === JSON.stringify(reference) ? held : undefined;
        },
        AFTER_LOAD_BOUND_MS,
        'the restarted member to hold the whole archive',
      );
      assert.equal(Object.keys(archived.value).length, 100);
      const state = JSON.parse(converged.value) as Record<string, { tsm: number }>;
      assert.ok(Object.keys(state).length > 0, 'the agreed caches are not empty');
      await waitForMembership(all, 4);
      const metrics = await Promise.all(all.map((m) => m.metrics()));
      assertNoInternalErrors(metrics);
      report('kill', {
        members: 5,
        droppedAfterKillMs: dropped.elapsedMs,
        entries: Object.keys(state).length,
        archiveConvergedMs: archived.elapsedMs,
        convergedAfterLoadMs: converged.elapsedMs,
        stateTransfers: sumOf(metrics, (m) => m.cluster.stateTransfers),
        repairsPushed: sumOf(metrics, (m) => m.cluster.repairsPushed),
        retransmits: sumOf(metrics, (m) => m.cluster.retransmits),
      });
    } finally {
      await run.close();
    }
  });

  test('a member with a wrong key and a member of another cluster on the same group stay apart, counted', {
    timeout: 120_000,
  }, async () => {
    const run = await Run.create(5);
    try {
      const key = generateFernetKey();
      const good = await Promise.all(
        [0, 1, 2].map((i) => run.start(i, { cluster: 'faults', cryptoKey: key })),
      );
      const wrongKey = await run.start(3, { cluster: 'faults', cryptoKey: generateFernetKey() });
      const otherCluster = await run.start(4, { cluster: 'other', cryptoKey: key });
      const everyone = [...good, wrongKey, otherCluster];
      const keysOf = (i: number) => Array.from({ length: 20 }, (_, j) => `from${i}-${j}`);
      await Promise.all(
        everyone.map((m, i) => m.call('write', { cache: 'c', entries: keysOf(i).map((k) => [k, k]) })),
      );
      await waitForMembership(good, 2);
      await waitFor(() => agreedChecksum(good, 'c'), SETUP_DEADLINE_MS, 'the good members to agree');
      // Wait until the outsiders' datagrams have demonstrably arrived (and been refused) both ways.
      const { value: metrics } = await waitFor(
        async () => {
          const seen = await Promise.all(everyone.map((m) => m.metrics()));
          const counted =
            seen
              .slice(0, 3)
              .every((m) => (m.cluster.dropped.hmac ?? 0) > 0 && (m.cluster.dropped.cluster ?? 0) > 0) &&
            (seen[3]!.cluster.dropped.hmac ?? 0) > 0 &&
            (seen[4]!.cluster.dropped.cluster ?? 0) > 0;
          return counted ? seen : undefined;
        },
        SETUP_DEADLINE_MS,
        'the refused datagrams to be counted by reason',
        async () => Promise.all(everyone.map(async (m) => (await m.metrics()).cluster.dropped)),
      );

      const goodKeys = [0, 1, 2].flatMap(keysOf).sort();
      for (const member of good) {
        assert.deepEqual(
          Object.keys(await member.checksum('c')).sort(),
          goodKeys,
          `${member.name} holds only the cluster's keys`,
        );
      }
      assert.deepEqual(
        Object.keys(await wrongKey.checksum('c')).sort(),
        keysOf(3).sort(),
        'nothing reached the wrong key',
      );
      assert.deepEqual(
        Object.keys(await otherCluster.checksum('c')).sort(),
        keysOf(4).sort(),
        'nothing crossed clusters',
      );
      assert.equal(metrics[3]!.cluster.members, 0, 'the wrong-key member knows no one');
      assert.equal(metrics[4]!.cluster.members, 0, 'the other cluster knows no one of this one');
      assertNoInternalErrors(metrics);
      report('isolation', {
        droppedByGoodMember: metrics[0]!.cluster.dropped,
        droppedByWrongKey: metrics[3]!.cluster.dropped,
        droppedByOtherCluster: metrics[4]!.cluster.dropped,
      });
    } finally {
      await run.close();
    }
  });

  test('100k fuzzed datagrams from a hostile namespace crash no member, change no entry, and leave memory bounded', {
    timeout: 180_000,
  }, async () => {
    const run = await Run.create(4);
    try {
      const key = generateFernetKey();
      const members = await Promise.all([0, 1, 2].map((i) => run.start(i, { cryptoKey: key })));
      const hostile = await run.start(3, { role: 'hostile' });
      await waitForMembership(members, 2);
      const hostileAddress = run.topology.members[3]!.address;
      await hostile.call('listen', {
        group: run.group.ip,
        port: run.group.port,
        interfaceAddress: hostileAddress,
      });

      const keysOf = (i: number) => Array.from({ length: 30 }, (_, j) => `h${i}-${j}`);
      const expected: Record<string, unknown> = {};
      const writeRound = async (round: number, pick: (j: number) => boolean) => {
        await Promise.all(
          members.map((m, i) => {
            const entries = keysOf(i)
              .filter((_, j) => pick(j))
              .map((k) => [k, { member: i, key: k, round }] as [string, unknown]);
            for (const [k, v] of entries) expected[k] = v;
            return m.call('write', { cache: 'guarded', entries });
          }),
        );
      };
      await writeRound(0, () => true);
      await waitFor(() => agreedChecksum(members, 'guarded'), SETUP_DEADLINE_MS, 'the baseline to spread');
      // Let the hostile sender hear genuine traffic to replay (heartbeats flow every 200 ms).
      await sleep(1000);
      const before = await Promise.all(members.map((m) => m.call<NodeJS.MemoryUsage>('memory')));
      const metricsBefore = await Promise.all(members.map((m) => m.metrics()));

      const fuzzArgs: FuzzArgs = {
        count: FUZZ_DATAGRAMS,
        seed: 0x5eed,
        group: run.group.ip,
        port: run.group.port,
        interfaceAddress: hostileAddress,
        cluster: 'netns',
        cache: 'guarded',
        keys: Object.keys(expected),
        burst: 32,
      };
      const fuzzing = hostile.call<Record<string, number>>('fuzz', fuzzArgs, 170_000);
      // Genuine writes go on during the attack.
      await sleep(500);
      await writeRound(1, (j) => j % 2 === 0);
      const sent = await fuzzing;
      await writeRound(2, (j) => j % 3 === 0);

      const expectedText = JSON.stringify(Object.fromEntries(Object.entries(expected).sort()));
      await waitFor(
        async () => {
          const seen = await Promise.all(
            members.map((m) => m.call<Record<string, unknown>>('entries', { cache: 'guarded' })),
          );
          return (
            seen.every(
              (s) => JSON.stringify(Object.fromEntries(Object.entries(s).sort())) === expectedText,
            ) || undefined
          );
        },
        SETUP_DEADLINE_MS,
        'every member to hold exactly what was written',
        async () => Promise.all(members.map((m) => m.call('entries', { cache: 'guarded' }))),
      );
      const genuineWriters = new Set(members.map((m) => m.node));
      for (const member of members) {
        for (const [k, v] of Object.entries(await member.versions('guarded'))) {
          assert.ok(genuineWriters.has(v.writer), `${member.name}: ${k} written by a member`);
        }
        assert.ok(member.alive, `${member.name} is alive`);
      }

      const after = await Promise.all(members.map((m) => m.call<NodeJS.MemoryUsage>('memory')));
      const metrics = await Promise.all(members.map((m) => m.metrics()));
      assertNoInternalErrors(metrics);
      const refused = metrics.map((m, i) => {
        const total = (d: Record<string, number>) => Object.values(d).reduce((n, c) => n + c, 0);
        return total(m.cluster.dropped) - total(metricsBefore[i]!.cluster.dropped);
      });
      for (const [i, m] of metrics.entries()) {
        assert.equal(m.cluster.members, 2, `member ${i} knows only the real members`);
        // Every fuzzed datagram arrives and is refused with a counted reason (a replay of a genuine
        // datagram the member had missed would be accepted, and rightly: it is genuine).
        assert.ok(refused[i]! >= FUZZ_DATAGRAMS * 0.95, `member ${i} refused the fuzz (${refused[i]})`);
        const heapGrowth = after[i]!.heapUsed - before[i]!.heapUsed;
        const rssGrowth = after[i]!.rss - before[i]!.rss;
        assert.ok(heapGrowth < 16 * 1024 * 1024, `member ${i} heap grew by ${heapGrowth} bytes`);
        assert.ok(rssGrowth < 64 * 1024 * 1024, `member ${i} rss grew by ${rssGrowth} bytes`);
      }
      report('hostile', {
        datagrams: FUZZ_DATAGRAMS,
        sent,
        refusedPerMember: refused,
        droppedByReason: metrics[0]!.cluster.dropped,
        heapBeforeAfter: members.map((_, i) => [before[i]!.heapUsed, after[i]!.heapUsed]),
        rssBeforeAfter: members.map((_, i) => [before[i]!.rss, after[i]!.rss]),
      });
    } finally {
      await run.close();
    }
  });
});
