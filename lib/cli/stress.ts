/**
 * `mccache stress`: the seed's stress test with a strict coherence verdict.
 *
 * The coordinator (this module) launches N member processes (stress-member.ts), each a real
 * cluster member on loopback: on a fresh multicast group, on unicast ports of their own, or through
 * a nats-server started for the run (--transport). It starts the seed's workload on all of
 * them, shows a live line, stops the load, waits for quiescence (queues empty, nothing missing,
 * checksums equal and stable) and compares every member's full checksum: PASS iff every member
 * holds exactly the same keys with the same versions. It prints a summary table and writes
 * result.json and report.html.
 *
 * With --netns each member runs in a network namespace of its own (netns.ts), where the run can
 * inject real kernel loss and a partition; --kill crashes one member and restarts it in its slot as
 * a new node (stress-faults.ts plans the faults, the FaultInjector below carries them out).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { mkdirSync } from 'node:fs';
import { resolve as resolvePath } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { generateFernetKey, MissingToolError } from '../index.js';
import {
  choiceFlag,
  describeFlags,
  durationFlag,
  type FlagSet,
  formatDuration,
  integerFlag,
  numberFlag,
  parseArgs,
  switchFlag,
  textFlag,
  UsageError,
} from './args.js';
import { type NatsServerProcess, startNatsServer } from './nats-server.js';
import { NetnsTopology } from './netns.js';
import {
  type DifferingKey,
  type FaultEvent,
  type FaultKind,
  formatMs,
  formatSummary,
  type NodeResult,
  type StressResult,
  type TimelinePoint,
  writeReport,
} from './report.js';
import {
  composeLaunchers,
  type FaultPlan,
  injectsFaults,
  longestPartitionMs,
  netnsNetwork,
  partitionStartMs,
  planFaults,
  requireNetns,
} from './stress-faults.js';
import type { FromMember, MemberConfig, MemberSample, MemberSettings, ToMember } from './stress-member.js';

// ------------------------------------------------------------------------------------------------
// Flags

const FERNET_KEY = /^[A-Za-z0-9_-]{43}=$/;
/** `nats://host:port`, optionally with `user:password@`; the scheme may be omitted (the client adds it). */
const NATS_URL = /^(?:(?:nats|tls):\/\/)?(?:[^\s@/,]+@)?[A-Za-z0-9._-]+(?::\d{1,5})?$/;

/** The transports `mccache stress --transport` can run over. */
export const STRESS_TRANSPORTS = ['multicast', 'unicast', 'nats'] as const;
export type StressTransport = (typeof STRESS_TRANSPORTS)[number];

/** Every flag of `mccache stress`, with the seed's TEST_* (or MCCACHE_*) variable. */
export const STRESS_FLAGS = {
  nodes: integerFlag({
    env: 'TEST_CLUSTER_SIZE',
    min: 2,
    max: 32,
    default: 3,
    description: 'member processes',
  }),
  duration: durationFlag({
    env: 'TEST_RUN_DURATION',
    minMs: 100,
    maxMs: 7 * 86_400_000,
    bareUnit: 'm',
    default: 60_000,
    defaultText: '60s',
    description: 'how long the load runs: 500ms, 15s, 10m, 1h; a bare number is minutes',
  }),
  keys: integerFlag({
    env: 'TEST_KEY_ENTRIES',
    min: 1,
    max: 1_000_000,
    default: 200,
    description: 'shared keys drawn at random (fewer keys, more collisions)',
  }),
  aperture: numberFlag({
    env: 'TEST_APERTURE',
    min: 0.00005,
    max: 15,
    unit: 'of seconds',
    default: 0.01,
    placeholder: '<seconds>',
    description: 'pause between ops; each pause is uniform in 0.65..1.35 times it',
  }),
  mix: choiceFlag({
    env: 'TEST_DATA_SIZE_MIX',
    choices: ['1', '2', '3'] as const,
    default: '1',
    description: 'value sizes: 1 small (< 1 KB), 2 large (> 9 KB), 3 both at random',
  }),
  tantrum: numberFlag({
    env: 'TEST_MONKEY_TANTRUM',
    min: 0,
    max: 90,
    default: 0,
    placeholder: '<percent>',
    description: 'monkey tantrum: percentage of datagrams dropped on send and on receive',
  }),
  ttl: numberFlag({
    env: 'MCCACHE_CACHE_TTL',
    min: 0,
    max: 315_360_000,
    unit: 'of seconds',
    default: 3600,
    placeholder: '<seconds>',
    description: 'entry time to live, 0 for none',
  }),
  max: integerFlag({
    env: 'MCCACHE_CACHE_MAX',
    min: 1,
    max: 2 ** 26,
    default: 256,
    description: 'most entries',
  }),
  size: integerFlag({
    env: 'MCCACHE_CACHE_SIZE',
    min: 1,
    max: 2 ** 40,
    default: 8_388_608,
    placeholder: '<bytes>',
    description: 'most bytes of keys and values',
  }),
  pulse: numberFlag({
    env: 'MCCACHE_CACHE_PULSE',
    min: 0,
    exclusiveMin: true,
    max: 86_400,
    unit: 'of seconds',
    default: 5,
    placeholder: '<seconds>',
    description: 'anti-entropy period; stress defaults to 5 s (the library to 300 s)',
  }),
  mode: choiceFlag({
    env: 'MCCACHE_CACHE_MODE',
    choices: ['0', '1'] as const,
    default: '1',
    description: '1: every member holds every key; 0: members update only keys they hold',
  }),
  crypto: textFlag({
    env: 'MCCACHE_CRYPTO_KEY',
    placeholder: '<key|auto>',
    description: 'encrypt with this Fernet key (comma-separated keys rotate), or auto for a fresh one',
    check: (text) =>
      text === 'auto' || text.split(',').every((key) => FERNET_KEY.test(key.trim()))
        ? undefined
        : 'expected auto or a Fernet key: 32 bytes in url-safe base64 (44 characters ending in =)',
  }),
  cluster: textFlag({
    env: 'MCCACHE_CLUSTER',
    default: 'mccache',
    placeholder: '<name>',
    description: 'cluster name',
    check: (text) => (text.length > 64 ? 'expected a cluster name of at most 64 characters' : undefined),
  }),
  transport: choiceFlag<StressTransport>({
    choices: STRESS_TRANSPORTS,
    default: 'multicast',
    description:
      'how members reach each other: multicast (a fresh group on 127.0.0.1); unicast (each member on a ' +
      'port of its own on 127.0.0.1, MCCACHE_PEERS listing them all); nats (through a nats-server ' +
      'started for the run on a free loopback port, or the one --nats-url names)',
  }),
  netns: switchFlag({
    description:
      'run each member in a network namespace of its own, joined to the others by a bridge (needs root ' +
      'and iproute2); with --transport multicast or unicast',
  }),
  loss: numberFlag({
    min: 0,
    max: 90,
    default: 0,
    placeholder: '<percent>',
    description:
      'with --netns: the kernel drops this percentage of the packets arriving at every member ' +
      '(an iptables statistic rule in each namespace)',
  }),
  partition: durationFlag({
    minMs: 100,
    maxMs: 7 * 86_400_000,
    bareUnit: 's',
    description:
      'with --netns: cut the last member off the bridge a third of the way into the load, for this long ' +
      '(a bare number is seconds); it must heal before the load ends',
  }),
  kill: switchFlag({
    description:
      'kill -9 one member halfway through the load and restart it at once, as a new node (works with or ' +
      'without --netns)',
  }),
  natsUrl: textFlag({
    placeholder: '<url>',
    defaultText: 'a nats-server started for the run',
    description:
      'with --transport nats, use this server (or comma-separated servers) instead; members use the ' +
      'subject mccache.<cluster>, so pick a --cluster no other client of that server uses',
    check: (text) =>
      text.split(',').every((url) => NATS_URL.test(url.trim()))
        ? undefined
        : 'expected nats://host:port (comma-separated for several servers)',
  }),
  seed: integerFlag({
    env: 'TEST_RANDOM_SEED',
    min: 0,
    max: 0xffffffff,
    defaultText: 'random, printed',
    description: 'seed of the workload (member i uses seed + i)',
  }),
  settle: durationFlag({
    minMs: 1000,
    maxMs: 86_400_000,
    bareUnit: 's',
    defaultText: 'the larger of 30s and 4 pulses',
    description: 'how long to wait for convergence after the load stops; a bare number is seconds',
  }),
  out: textFlag({
    placeholder: '<folder>',
    defaultText: './stress-report-<timestamp>',
    description: 'folder for result.json, report.html and the members’ logs',
  }),
} satisfies FlagSet;

/** Resolved options of a stress run. */
export interface StressOptions {
  nodes: number;
  durationMs: number;
  keys: number;
  apertureMs: number;
  mix: 1 | 2 | 3;
  tantrum: number;
  ttl: number;
  max: number;
  size: number;
  pulse: number;
  pulseSource: 'flag' | 'env' | 'default';
  mode: 0 | 1;
  cryptoKeys: string[];
  cluster: string;
  transport: StressTransport;
  /** With transport nats: the server to use; undefined starts one for the run. */
  natsUrl: string | undefined;
  /** Each member in a network namespace of its own. */
  netns: boolean;
  /** Kernel loss on every member in percent (needs netns). */
  lossPercent: number;
  /** How long the last member is cut off (needs netns); null: no partition. */
  partitionMs: number | null;
  /** Kill -9 one member mid-run and restart it. */
  kill: boolean;
  seed: number;
  settleTimeoutMs: number;
  out: string;
}

function timestamp(date: Date): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${date.getFullYear()}${pad(date.getMonth() + 1)}${pad(date.getDate())}-${pad(date.getHours())}${pad(date.getMinutes())}${pad(date.getSeconds())}`;
}

/** Parses and validates `mccache stress` arguments (flags win over TEST_* and MCCACHE_* variables). */
export function stressOptionsFrom(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): StressOptions | 'help' {
  const { values, sources, positionals, help } = parseArgs(argv, STRESS_FLAGS, env);
  if (help) return 'help';
  if (positionals.length > 0) {
    throw new UsageError(
      `unexpected argument "${positionals[0]}": stress takes only flags (see mccache stress --help)`,
    );
  }
  if (values.natsUrl !== undefined && values.transport !== 'nats') {
    throw new UsageError(
      `--nats-url is for --transport nats, not ${values.transport}: add --transport nats or drop --nats-url`,
    );
  }
  const netns = values.netns === true;
  if (!netns && sources.loss === 'flag') {
    throw new UsageError(
      '--loss needs --netns: the loss is a kernel rule inside each member’s network namespace ' +
        '(without namespaces, --tantrum drops datagrams inside mccache)',
    );
  }
  if (!netns && values.partition !== undefined) {
    throw new UsageError('--partition needs --netns: it takes a member’s link to the bridge down');
  }
  if (netns && values.transport === 'nats') {
    throw new UsageError(
      '--netns works with --transport multicast or unicast, not nats: the namespaces cannot reach a ' +
        'nats-server on the host’s loopback',
    );
  }
  const durationMs = values.duration!;
  if (values.partition !== undefined && values.partition > longestPartitionMs(durationMs)) {
    throw new UsageError(
      `--partition ${formatDuration(values.partition)} does not fit in a ${formatDuration(durationMs)} load: ` +
        `the partition starts a third of the way in (at ${formatDuration(partitionStartMs(durationMs))}) ` +
        `and must heal before the load ends, so expected at most ${formatDuration(longestPartitionMs(durationMs))} ` +
        '(or a longer --duration)',
    );
  }
  const pulse = values.pulse!;
  const crypto = values.crypto;
  const cryptoKeys =
    crypto === undefined
      ? []
      : crypto === 'auto'
        ? [generateFernetKey()]
        : crypto.split(',').map((k) => k.trim());
  return {
    nodes: values.nodes!,
    durationMs,
    keys: values.keys!,
    apertureMs: values.aperture! * 1000,
    mix: Number(values.mix) as 1 | 2 | 3,
    tantrum: values.tantrum!,
    ttl: values.ttl!,
    max: values.max!,
    size: values.size!,
    pulse,
    pulseSource: sources.pulse,
    mode: Number(values.mode) as 0 | 1,
    cryptoKeys,
    cluster: values.cluster!,
    transport: values.transport!,
    natsUrl: values.natsUrl,
    netns,
    lossPercent: values.loss!,
    partitionMs: values.partition ?? null,
    kill: values.kill === true,
    seed: values.seed ?? randomInt(0, 2 ** 31),
    settleTimeoutMs: values.settle ?? Math.max(30_000, 4 * pulse * 1000),
    out: resolvePath(values.out ?? `stress-report-${timestamp(new Date())}`),
  };
}

export const STRESS_USAGE = `mccache stress [flags]

Runs the seed's stress workload on member processes on loopback, then checks that every member
holds exactly the same cache. Exit status 0 on PASS, 1 on FAIL or error, 2 on a bad argument.
--transport unicast or nats runs the same test over unicast peers or through a NATS server.
--netns runs each member in a network namespace of its own (root only), where --loss adds real
kernel packet loss and --partition cuts a member off; --kill crashes and restarts a member.

${describeFlags(STRESS_FLAGS)}`;

// ------------------------------------------------------------------------------------------------
// Member processes

/** How to start a member: a command and its arguments (the IPC channel is added by the coordinator). */
export interface MemberLaunch {
  command: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
}

/**
 * Adapts the launch of one member, e.g. to run it in a network namespace:
 * `(member, launch) => ({ ...launch, command: 'ip', args: ['netns', 'exec', name, launch.command, ...launch.args] })`.
 * It may also change the member's settings (e.g. `multicastIf` for the namespace's address).
 */
export type MemberLauncher = (
  member: { index: number; name: string; settings: MemberSettings },
  launch: MemberLaunch,
) => { launch: MemberLaunch; settings?: Partial<MemberSettings> };

function tsxLoader(): string {
  try {
    return import.meta.resolve('tsx');
  } catch {
    return 'tsx';
  }
}

/**
 * The command that starts stress-member: from source (this file is .ts) through the tsx loader,
 * from the built package (.js) with plain node.
 */
export function defaultMemberLaunch(): MemberLaunch {
  const here = import.meta.url;
  const fromSource = here.endsWith('.ts');
  const script = fileURLToPath(new URL(`./stress-member.${fromSource ? 'ts' : 'js'}`, here));
  return { command: process.execPath, args: fromSource ? ['--import', tsxLoader(), script] : [script] };
}

/** A member letter: A..Z, then A1, B1, ... */
export function memberName(index: number): string {
  const letter = String.fromCharCode(65 + (index % 26));
  return index < 26 ? letter : `${letter}${Math.floor(index / 26)}`;
}

type Reply<T extends FromMember['type']> = Extract<FromMember, { type: T }>;

interface Waiter {
  accept(message: FromMember): boolean;
  reject(error: Error): void;
}

/** A running member process and its IPC channel. */
export class MemberProcess {
  nodeId = '';
  /** What it was configured with (set by {@link launchCluster}); a restart reuses it. */
  config: MemberConfig | undefined;
  /** The latest per-second sample, and when it arrived (coordinator ms). */
  latest: MemberSample | undefined;
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcess;
  private stderrTail = '';
  private waiters = new Set<Waiter>();
  private exitCode: number | null | undefined;
  /** How the process ended, e.g. `killed by SIGKILL`. */
  exitDescription = '';
  private expectedExit = false;
  private onSample: ((sample: MemberSample) => void) | undefined;

  constructor(
    readonly name: string,
    readonly index: number,
    readonly launch: MemberLaunch,
  ) {
    this.child = spawn(launch.command, launch.args, {
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      env: launch.env ?? process.env,
      serialization: 'advanced',
    });
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (text: string) => {
      this.stderrTail = (this.stderrTail + text).slice(-4000);
    });
    this.child.on('message', (message: FromMember) => this.receive(message));
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        this.exitCode = code ?? (signal ? -1 : null);
        this.exitDescription = signal ? `killed by ${signal}` : `exit status ${code}`;
        const error = this.failure(
          `exited${code !== null ? ` with code ${code}` : ''}${signal ? ` on ${signal}` : ''}`,
        );
        for (const waiter of this.waiters) waiter.reject(error);
        this.waiters.clear();
        resolve(code);
      });
      this.child.on('error', (error) => {
        const failure = this.failure(`could not be started: ${error.message}`);
        for (const waiter of this.waiters) waiter.reject(failure);
        this.waiters.clear();
        resolve(null);
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.exitCode === undefined;
  }

  /** Called with every per-second sample. */
  onTick(listener: (sample: MemberSample) => void): void {
    this.onSample = listener;
  }

  private failure(what: string): Error {
    const tail = this.stderrTail.trim();
    return new Error(`member ${this.name} ${what}${tail ? `:\n${tail}` : ''}`);
  }

  private receive(message: FromMember): void {
    if (message.type === 'tick') {
      this.latest = message.sample;
      this.onSample?.(message.sample);
    }
    if (message.type === 'error') {
      this.stderrTail = `${this.stderrTail}\n${message.message}`.slice(-4000);
      const error = this.failure('failed');
      for (const waiter of this.waiters) waiter.reject(error);
      this.waiters.clear();
      return;
    }
    for (const waiter of this.waiters) {
      if (waiter.accept(message)) {
        this.waiters.delete(waiter);
        return;
      }
    }
  }

  send(message: ToMember): void {
    if (this.running && this.child.connected) this.child.send(message);
  }

  /** The next message of `type` (matching `filter`), or a rejection after `timeoutMs` or on exit. */
  next<T extends FromMember['type']>(
    type: T,
    timeoutMs: number,
    filter: (message: Reply<T>) => boolean = () => true,
  ): Promise<Reply<T>> {
    return this.nextMatching(
      (message) => message.type === type && filter(message as Reply<T>),
      timeoutMs,
      `"${type}"`,
    ) as Promise<Reply<T>>;
  }

  /** The next message for which `accept` holds. */
  nextMatching(
    accept: (message: FromMember) => boolean,
    timeoutMs: number,
    what = 'a message',
  ): Promise<FromMember> {
    return new Promise((resolve, reject) => {
      if (!this.running) {
        reject(this.failure('is not running'));
        return;
      }
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(this.failure(`did not send ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter: Waiter = {
        accept: (message) => {
          if (!accept(message)) return false;
          clearTimeout(timer);
          resolve(message);
          return true;
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      this.waiters.add(waiter);
    });
  }

  /** Sends `message` and waits for the reply of `type`. */
  request<T extends FromMember['type']>(
    message: ToMember,
    type: T,
    timeoutMs: number,
    filter?: (message: Reply<T>) => boolean,
  ): Promise<Reply<T>> {
    const reply = this.next(type, timeoutMs, filter);
    this.send(message);
    return reply;
  }

  /** Asks the member to leave and exit; kills it if it has not exited within `graceMs`. */
  async stop(graceMs = 4000): Promise<void> {
    this.expectedExit = true;
    if (!this.running) return;
    this.send({ type: 'exit' });
    const timer = setTimeout(() => this.kill(), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  kill(): void {
    this.expectedExit = true;
    if (this.running) this.child.kill('SIGKILL');
  }

  /** True if the member exited while it was expected to run. */
  get crashed(): boolean {
    return !this.expectedExit && !this.running;
  }
}

/** A fresh group in 239.0.0.0/8 (organisation-local scope) and a random port, so runs never cross. */
export function randomGroup(): { group: string; port: number } {
  return {
    group: `239.${randomInt(1, 255)}.${randomInt(0, 256)}.${randomInt(1, 255)}`,
    port: randomInt(20_000, 60_000),
  };
}

/** Options shared by the demo and stress to start a set of members. */
export interface ClusterLaunchOptions {
  count: number;
  settings: Omit<MemberSettings, 'logFilename'>;
  workload: (index: number) => MemberConfig['workload'];
  /** Settings that differ per member (e.g. its unicast bind address), over {@link settings}. */
  settingsFor?: ((index: number) => Partial<MemberSettings>) | undefined;
  /** Folder for the members' log files. */
  logFolder: string;
  launcher?: MemberLauncher | undefined;
  readyTimeoutMs?: number;
  /** What to check when the members do not see each other (default: the multicast advice). */
  unreachableHint?: string | undefined;
}

/** Starts members, configures them, and waits until each is up and sees all the others. */
export async function launchCluster(options: ClusterLaunchOptions): Promise<MemberProcess[]> {
  mkdirSync(options.logFolder, { recursive: true });
  const members: MemberProcess[] = [];
  const configs: MemberConfig[] = [];
  const readyTimeoutMs = options.readyTimeoutMs ?? 30_000;
  try {
    for (let index = 0; index < options.count; index++) {
      const name = memberName(index);
      let settings: MemberSettings = {
        ...options.settings,
        ...options.settingsFor?.(index),
        logFilename: resolvePath(options.logFolder, `member-${name}.log`),
      };
      let launch = defaultMemberLaunch();
      if (options.launcher) {
        const adapted = options.launcher({ index, name, settings }, launch);
        launch = adapted.launch;
        settings = { ...settings, ...adapted.settings };
      }
      const member = new MemberProcess(name, index, launch);
      const config = { name, index, settings, workload: options.workload(index) };
      member.config = config;
      members.push(member);
      configs.push(config);
    }
    const ready = await Promise.all(
      members.map(async (member, i) => {
        await member.next('hello', readyTimeoutMs);
        return member.request({ type: 'configure', config: configs[i]! }, 'ready', readyTimeoutMs);
      }),
    );
    ready.forEach((message, i) => {
      members[i]!.nodeId = message.nodeId;
    });
    await waitFor(
      async () => {
        const probes = await Promise.all(members.map((member) => probe(member)));
        return probes.every((p) => p.members >= options.count - 1);
      },
      15_000,
      () =>
        `the ${options.count} members did not all see each other within 15 s: ` +
        (options.unreachableHint ?? 'is multicast on loopback blocked (firewall) or the group unreachable?'),
    );
    return members;
  } catch (error) {
    await Promise.all(members.map((member) => member.stop(1000)));
    throw error;
  }
}

/**
 * Starts a member again with its launch and configuration, in the same slot (name, index, settings,
 * workload seed): a new process, hence a new node. Resolves once it is ready (it may not yet see
 * the others). The old process must have exited.
 */
export async function relaunchMember(member: MemberProcess, readyTimeoutMs = 30_000): Promise<MemberProcess> {
  if (!member.config) throw new Error(`member ${member.name} was not started by launchCluster`);
  const fresh = new MemberProcess(member.name, member.index, member.launch);
  fresh.config = member.config;
  try {
    await fresh.next('hello', readyTimeoutMs);
    const ready = await fresh.request({ type: 'configure', config: member.config }, 'ready', readyTimeoutMs);
    fresh.nodeId = ready.nodeId;
    return fresh;
  } catch (error) {
    await fresh.stop(1000);
    throw error;
  }
}

let probeCounter = 0;

function probe(member: MemberProcess): Promise<Reply<'probe'>> {
  const id = ++probeCounter;
  return member.request({ type: 'probe', id }, 'probe', 5000, (reply) => reply.id === id);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `condition` every 100 ms until it holds; throws `message()` after `timeoutMs`. */
async function waitFor(
  condition: () => Promise<boolean>,
  timeoutMs: number,
  message: () => string,
): Promise<void> {
  const until = performance.now() + timeoutMs;
  while (!(await condition())) {
    if (performance.now() > until) throw new Error(message());
    await sleep(100);
  }
}

// ------------------------------------------------------------------------------------------------
// The network of a run

/** Distinct UDP ports on `address`, each free when asked (the members bind them right after). */
export async function freeUdpPorts(count: number, address = '127.0.0.1'): Promise<number[]> {
  const sockets: Socket[] = [];
  try {
    // All held open at once, so that the ports differ.
    for (let i = 0; i < count; i++) {
      const socket = createSocket('udp4');
      sockets.push(socket);
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.bind(0, address, () => resolve());
      });
    }
    return sockets.map((socket) => socket.address().port);
  } finally {
    for (const socket of sockets) {
      try {
        socket.close();
      } catch {
        // never bound
      }
    }
  }
}

/** Where the members of a run meet, and what to stop afterwards. */
export interface StressNetwork {
  transport: StressTransport;
  /** One line for the user: the transport and its endpoints. */
  description: string;
  /** Network settings every member gets. */
  settings: Required<
    Pick<MemberSettings, 'multicastIp' | 'multicastPort' | 'multicastIf' | 'peers' | 'natsUrl'>
  >;
  /** Network settings of one member (its unicast bind address). */
  settingsFor(index: number): Partial<MemberSettings>;
  /** The endpoint recorded in result.json as group and port. */
  group: string;
  port: number;
  /** What to check when members do not see each other. */
  unreachableHint: string;
  /** Stops what the run started (its nats-server). Idempotent. */
  close(): Promise<void>;
}

/**
 * Prepares the network of a run: a fresh multicast group, a free loopback port per member for
 * unicast, or a nats-server on a free loopback port (unless `natsUrl` names one).
 * @throws MissingToolError when nats is asked for without --nats-url and nats-server is not installed.
 */
export async function prepareNetwork(
  options: Pick<StressOptions, 'transport' | 'nodes' | 'natsUrl'>,
  startServer: () => Promise<NatsServerProcess> = startNatsServer,
): Promise<StressNetwork> {
  // Every member gets a valid, fresh group even when it does not use multicast.
  const { group, port } = randomGroup();
  const multicast = { multicastIp: group, multicastPort: port, multicastIf: '127.0.0.1' };
  const none = { settingsFor: () => ({}), close: async () => {} };
  switch (options.transport) {
    case 'multicast':
      return {
        ...none,
        transport: 'multicast',
        description: `multicast group ${group}:${port} on 127.0.0.1`,
        settings: { ...multicast, peers: [], natsUrl: '' },
        group,
        port,
        unreachableHint: 'is multicast on loopback blocked (firewall) or the group unreachable?',
      };
    case 'unicast': {
      const ports = await freeUdpPorts(options.nodes);
      const peers = ports.map((p) => `127.0.0.1:${p}`);
      return {
        ...none,
        transport: 'unicast',
        description: `unicast peers ${peers.join(', ')} (one port per member, MCCACHE_PEERS lists them all)`,
        settings: { ...multicast, peers, natsUrl: '' },
        settingsFor: (index) => ({ unicastBind: peers[index]! }),
        group: 'unicast 127.0.0.1',
        port: ports[0]!,
        unreachableHint: `is UDP on loopback blocked (firewall) for ports ${ports.join(', ')}?`,
      };
    }
    case 'nats': {
      let server: NatsServerProcess | undefined;
      let url = options.natsUrl;
      if (url === undefined) {
        try {
          server = await startServer();
        } catch (error) {
          if (error instanceof MissingToolError) {
            throw new MissingToolError(`${error.message}, or give --nats-url to use a running server`);
          }
          throw error;
        }
        url = server.url;
      }
      const endpoint = /^(.*):(\d+)$/.exec(url);
      return {
        transport: 'nats',
        description: server
          ? `nats through a nats-server started for this run at ${url}`
          : `nats through the server(s) at ${url}`,
        settings: { ...multicast, peers: [], natsUrl: url },
        settingsFor: () => ({}),
        group: endpoint ? endpoint[1]! : url,
        port: endpoint ? Number(endpoint[2]) : 0,
        unreachableHint: `is the NATS server at ${url} up, and reachable from here?`,
        close: async () => server?.stop(),
      };
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Verdict

type Checksum = Record<string, { crc: string; tsm: number }>;

/** The comparison of every member's checksum. */
export interface Verdict {
  pass: boolean;
  /** Distinct keys held by any member. */
  keys: number;
  differing: DifferingKey[];
}

/**
 * PASS iff every member holds the same keys with the same crc and tsm. In mode 0 members hold the
 * keys they chose to, so only versions are compared: a key must have one version wherever it is held.
 */
export function judge(checksums: Record<string, Checksum>, mode: 0 | 1 = 1): Verdict {
  const members = Object.keys(checksums);
  const keys = new Set<string>();
  for (const member of members) for (const key of Object.keys(checksums[member]!)) keys.add(key);
  const differing: DifferingKey[] = [];
  for (const key of [...keys].sort()) {
    const versions: DifferingKey['versions'] = {};
    const seen = new Set<string>();
    let absent = false;
    for (const member of members) {
      const version = Object.hasOwn(checksums[member]!, key) ? checksums[member]![key]! : null;
      versions[member] = version ? { crc: version.crc, tsm: version.tsm } : null;
      if (version) seen.add(`${version.crc}/${version.tsm}`);
      else absent = true;
    }
    if (seen.size > 1 || (absent && mode === 1)) differing.push({ key, versions });
  }
  return { pass: differing.length === 0, keys: keys.size, differing };
}

/** One member's probe after the load stopped: ms since the stop, and its checksum digest. */
export interface ProbeRecord {
  t: number;
  digest: string;
}

/**
 * When a member reached the final state for good: the time of the first probe from which on every
 * probe showed `finalDigest`; null if its last probe did not.
 */
export function convergenceTime(history: readonly ProbeRecord[], finalDigest: string): number | null {
  let since: number | null = null;
  for (const record of history) {
    if (record.digest === finalDigest) since ??= record.t;
    else since = null;
  }
  return since;
}

/** The digest most members hold (ties: the smallest, so the choice is stable). */
export function majorityDigest(digests: readonly string[]): string {
  const counts = new Map<string, number>();
  for (const digest of digests) counts.set(digest, (counts.get(digest) ?? 0) + 1);
  let best = '';
  let bestCount = 0;
  for (const [digest, count] of [...counts].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
    if (count > bestCount) {
      best = digest;
      bestCount = count;
    }
  }
  return best;
}

// ------------------------------------------------------------------------------------------------
// The run

/** Where a run writes its live output. */
export interface StressOutput {
  write(text: string): void;
  /** Live line on one updating line (a terminal) rather than periodic lines. */
  isTTY: boolean;
}

export interface StressRun {
  result: StressResult;
  exitCode: number;
  files: { json: string; html: string };
}

const number = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

function sum(members: readonly MemberProcess[], pick: (sample: MemberSample) => number): number {
  let total = 0;
  for (const member of members) if (member.latest) total += pick(member.latest);
  return total;
}

/** Runs a stress test and writes its report. Members are always stopped, even on error. */
export async function runStress(
  options: StressOptions,
  output: StressOutput,
  launcher?: MemberLauncher,
): Promise<StressRun> {
  const startedAt = new Date();
  let topology: NetnsTopology | undefined;
  let network: StressNetwork;
  if (options.netns) {
    if (options.transport === 'nats')
      throw new UsageError('--netns works with multicast or unicast, not nats');
    await requireNetns(options.lossPercent);
    // Deleted in `finally` below, or by the module's exit and signal hooks if this process dies first.
    topology = await NetnsTopology.create({
      members: options.nodes,
      ...(options.transport === 'unicast' ? { multicastRoute: null } : {}),
    });
    const across = netnsNetwork(options.transport, topology, randomGroup());
    network = across;
    launcher = composeLaunchers(launcher, across.launcher);
  } else {
    network = await prepareNetwork(options);
  }
  try {
    return await runOnNetwork(options, output, network, launcher, topology, startedAt);
  } finally {
    await topology?.destroy();
  }
}

async function runOnNetwork(
  options: StressOptions,
  output: StressOutput,
  network: StressNetwork,
  launcher: MemberLauncher | undefined,
  topology: NetnsTopology | undefined,
  startedAt: Date,
): Promise<StressRun> {
  const say = (line: string) => output.write(`${line}\n`);
  say(
    `mccache stress: starting ${options.nodes} members over ${network.description}, ` +
      `pulse ${options.pulse} s${options.pulseSource === 'default' ? ' (stress default)' : ''}, seed ${options.seed}`,
  );
  let members: MemberProcess[];
  try {
    members = await launchCluster({
      count: options.nodes,
      settings: {
        ...network.settings,
        cluster: options.cluster,
        cryptoKeys: options.cryptoKeys,
        pulse: options.pulse,
        ttl: options.ttl,
        max: options.max,
        size: options.size,
        mode: options.mode,
        tantrum: options.tantrum,
        logLevel: 'warn',
      },
      settingsFor: (index) => network.settingsFor(index),
      workload: (index) => ({
        keys: options.keys,
        apertureMs: options.apertureMs,
        mix: options.mix,
        seed: (options.seed + index) >>> 0,
      }),
      logFolder: resolvePath(options.out, 'logs'),
      launcher,
      unreachableHint: network.unreachableHint,
    });
  } catch (error) {
    await network.close();
    throw error;
  }
  const interrupt = () => {
    for (const member of members) member.kill();
    // Exiting kills a nats-server started for the run (nats-server.ts hooks exit). Namespaces are
    // deleted first, without blocking: the process must keep answering signals meanwhile.
    void (topology?.destroy() ?? Promise.resolve()).finally(() => process.exit(130));
  };
  process.once('SIGINT', interrupt);
  process.once('SIGTERM', interrupt);
  try {
    return await drive(options, output, members, {
      startedAt,
      transport: network.transport,
      group: network.group,
      port: network.port,
      network: network.description,
      topology,
    });
  } finally {
    process.off('SIGINT', interrupt);
    process.off('SIGTERM', interrupt);
    await Promise.all(members.map((member) => member.stop()));
    await network.close();
  }
}

async function drive(
  options: StressOptions,
  output: StressOutput,
  members: MemberProcess[],
  run: {
    startedAt: Date;
    transport: StressTransport;
    group: string;
    port: number;
    network: string;
    topology: NetnsTopology | undefined;
  },
): Promise<StressRun> {
  const timeline: Record<string, TimelinePoint[]> = {};
  let loadStart = Number.POSITIVE_INFINITY;
  const plan = planFaults(options);
  const faults = new FaultInjector(plan, run.topology, members, {
    say: (line) => output.write(`${output.isTTY ? '\r\x1b[K' : ''}${line}\n`),
    since: () => performance.now() - loadStart,
    onRestart: (fresh) => track(fresh),
  });
  /**
   * Records a member's per-second counters. A restarted member's counters start again from zero:
   * they are added to what its slot had reached, so the timeline stays cumulative.
   */
  const track = (member: MemberProcess) => {
    const points = (timeline[member.name] ??= []);
    const base = points.at(-1) ?? { ops: 0, retransmits: 0, naksSent: 0 };
    const offset = { ops: base.ops, retransmits: base.retransmits, naksSent: base.naksSent };
    member.onTick((sample) => {
      faults.observe(member, sample);
      if (performance.now() < loadStart) return;
      points.push({
        t: Math.round(performance.now() - loadStart),
        ops: offset.ops + sample.workload.ops,
        retransmits: offset.retransmits + sample.retransmits,
        naksSent: offset.naksSent + sample.naksSent,
        queuedOps: sample.queuedOps,
      });
    });
  };
  for (const member of members) track(member);
  try {
    return await load(options, output, members, run, { faults, timeline, startLoad });
  } finally {
    await faults.close();
  }

  function startLoad(): number {
    loadStart = performance.now();
    return loadStart;
  }
}

async function load(
  options: StressOptions,
  output: StressOutput,
  members: MemberProcess[],
  run: Parameters<typeof drive>[3],
  context: {
    faults: FaultInjector;
    timeline: Record<string, TimelinePoint[]>;
    startLoad: () => number;
  },
): Promise<StressRun> {
  const say = (line: string) => output.write(`${line}\n`);
  const { faults, timeline } = context;
  say(
    `members ${members.map((m) => `${m.name}=${m.nodeId}`).join(' ')} see each other; load for ${options.durationMs / 1000} s`,
  );

  // Load.
  const crashed = () => members.find((member) => member.crashed);
  const lossSetAt = await faults.setLoss();
  const loadStart = context.startLoad();
  for (const member of members) member.send({ type: 'start' });
  faults.start(loadStart, lossSetAt);
  let lastOps = 0;
  let lastAt = loadStart;
  let lastPrinted = 0;
  const live = setInterval(() => {
    const now = performance.now();
    const ops = sum(members, (s) => s.workload.ops);
    const rate = ((ops - lastOps) * 1000) / Math.max(1, now - lastAt);
    lastOps = ops;
    lastAt = now;
    const queued = members.map((m) => m.latest?.queuedOps ?? 0);
    const line =
      `elapsed ${((now - loadStart) / 1000).toFixed(0).padStart(4)}s/${(options.durationMs / 1000).toFixed(0)}s | ` +
      `${number.format(rate).padStart(7)} ops/s | queued ${queued.join('/')} | ` +
      `retransmits ${number.format(sum(members, (s) => s.retransmits))} | ` +
      `NAKs ${number.format(sum(members, (s) => s.naksSent))}`;
    if (output.isTTY) output.write(`\r\x1b[K${line}`);
    else if (now - lastPrinted >= 5000) {
      lastPrinted = now;
      say(line);
    }
  }, 1000);
  try {
    const loadEnd = loadStart + options.durationMs;
    while (performance.now() < loadEnd) {
      const gone = crashed();
      if (gone) throw new Error(`member ${gone.name} exited during the load (${gone.exitDescription})`);
      faults.throwIfFailed();
      await sleep(Math.min(200, Math.max(1, loadEnd - performance.now())));
    }
  } finally {
    faults.loadStopped();
    clearInterval(live);
    if (output.isTTY) output.write('\n');
  }
  // A member being restarted is not running: it is stopped once it is back (it never started).
  const stopped = new Set<MemberProcess>();
  const stop = (targets: MemberProcess[]) =>
    Promise.all(
      targets.map((member) => {
        stopped.add(member);
        return member.request({ type: 'stop' }, 'stopped', 10_000);
      }),
    );
  await stop(members.filter((member) => member.running));
  const stopAt = performance.now();
  const loadMs = stopAt - loadStart;
  await faults.finish();
  await stop(members.filter((member) => !stopped.has(member)));
  say(`load stopped after ${(loadMs / 1000).toFixed(1)} s; waiting for the members to converge`);

  // Settle: probe until every member is quiescent and all hold the same digest for a second (in
  // mode 0, where members hold different subsets by design, until each one's digest is steady).
  const history: Record<string, ProbeRecord[]> = Object.fromEntries(members.map((m) => [m.name, []]));
  const settleUntil = stopAt + options.settleTimeoutMs;
  let agreeingSince: number | null = null;
  let previous: string[] = [];
  let finals: Array<Reply<'checksum'>> = [];
  let verdict: Verdict | undefined;
  let checksumRound = 0;
  for (;;) {
    const gone = crashed();
    if (gone)
      throw new Error(`member ${gone.name} exited while the cluster settled (${gone.exitDescription})`);
    const probes = await Promise.all(members.map((member) => probe(member)));
    const now = performance.now();
    probes.forEach((reply, i) => {
      history[members[i]!.name]!.push({ t: now - stopAt, digest: reply.digest });
    });
    const agreeing = probes.every(
      (p, i) =>
        p.quiescent && (options.mode === 1 ? p.digest === probes[0]!.digest : p.digest === previous[i]),
    );
    previous = probes.map((p) => p.digest);
    agreeingSince = agreeing ? (agreeingSince ?? now) : null;
    const timedOut = now > settleUntil;
    if ((agreeingSince !== null && now - agreeingSince >= 1000) || timedOut) {
      const id = ++checksumRound;
      finals = await Promise.all(
        members.map((member) =>
          member.request({ type: 'checksum', id }, 'checksum', 10_000, (reply) => reply.id === id),
        ),
      );
      const t = performance.now() - stopAt;
      finals.forEach((reply, i) => {
        history[members[i]!.name]!.push({ t, digest: reply.digest });
      });
      verdict = judge(
        Object.fromEntries(finals.map((reply, i) => [members[i]!.name, reply.checksum])),
        options.mode,
      );
      if (verdict.pass || timedOut) break;
      agreeingSince = null;
    }
    await sleep(25);
  }
  const settleMs = performance.now() - stopAt;
  faults.stopObserving();
  const kernelDrops = await faults.kernelDrops();

  const finalDigest = majorityDigest(finals.map((reply) => reply.digest));
  const nodes: NodeResult[] = members.map((member, i) => {
    const final = finals[i]!;
    const sample = final.sample;
    const counts = sample.workload;
    return {
      name: member.name,
      nodeId: member.nodeId,
      ops: counts.ops,
      lookups: counts.lookups,
      inserts: counts.inserts,
      updates: counts.updates,
      deletes: counts.deletes,
      skipped: counts.skipped,
      behindOps: counts.behindOps,
      errors: counts.errors,
      evictions: sample.evictions,
      retransmits: sample.retransmits,
      naksSent: sample.naksSent,
      duplicates: sample.duplicates,
      drops: sample.drops,
      dropped: sample.dropped,
      unrecoverable: sample.unrecoverable,
      queueDropped: sample.queueDropped,
      datagramsSent: sample.datagramsSent,
      datagramsReceived: sample.datagramsReceived,
      latency: sample.latency,
      latencyQuantiles: final.latencyQuantiles,
      // Mode 0: each member converges to its own final subset.
      convergenceMs:
        options.mode === 0
          ? round(convergenceTime(history[member.name]!, final.digest))
          : verdict!.pass || final.digest === finalDigest
            ? round(convergenceTime(history[member.name]!, finalDigest))
            : null,
      entries: Object.keys(final.checksum).length,
      digest: final.digest,
      cpuSeconds: sample.cpuMicros / 1e6,
      rssBytes: sample.rssBytes,
      ...(kernelDrops ? { kernelDrops: kernelDrops[i]! } : {}),
      ...(faults.previousNodeIds.has(member.index)
        ? { previousNodeIds: [...faults.previousNodeIds.get(member.index)!] }
        : {}),
    };
  });
  const convergences = nodes.map((n) => n.convergenceMs);
  const convergedMs = convergences.some((c) => c === null) ? null : Math.max(...(convergences as number[]));
  const total = (pick: (n: NodeResult) => number) => nodes.reduce((acc, n) => acc + pick(n), 0);
  const totalOps = total((n) => n.ops);
  const pass = verdict!.pass;
  const settled = `${(settleMs / 1000).toFixed(2)} s after the load stopped`;
  const reason = pass
    ? options.mode === 1
      ? `all ${members.length} members hold the same ${verdict!.keys} keys (digest ${finalDigest}), ${settled}`
      : `wherever the ${members.length} members hold one of the ${verdict!.keys} keys, they hold the same ` +
        `version (mode 0: each holds its own subset), ${settled}`
    : `${verdict!.differing.length} of ${verdict!.keys} keys differ between members ` +
      `${(options.settleTimeoutMs / 1000).toFixed(0)} s after the load stopped`;
  const result: StressResult = {
    tool: 'mccache stress',
    formatVersion: 1,
    startedAt: run.startedAt.toISOString(),
    verdict: pass ? 'PASS' : 'FAIL',
    reason,
    config: {
      nodes: options.nodes,
      keys: options.keys,
      apertureMs: options.apertureMs,
      mix: options.mix,
      tantrum: options.tantrum,
      ttl: options.ttl,
      max: options.max,
      size: options.size,
      pulse: options.pulse,
      pulseSource: options.pulseSource,
      mode: options.mode,
      encrypted: options.cryptoKeys.length > 0,
      durationMs: options.durationMs,
      settleTimeoutMs: options.settleTimeoutMs,
      seed: options.seed,
      cluster: options.cluster,
      transport: run.transport,
      network: run.network,
      group: run.group,
      port: run.port,
      faults: {
        netns: options.netns,
        lossPercent: options.lossPercent,
        partitionMs: options.partitionMs,
        kill: options.kill,
      },
    },
    timing: { loadMs: Math.round(loadMs), settleMs: Math.round(settleMs), convergedMs },
    totals: {
      ops: totalOps,
      opsPerSecond: Math.round((totalOps * 1000) / Math.max(1, loadMs)),
      targetOpsPerSecond: Math.round((options.nodes * 1000) / options.apertureMs),
      lookups: total((n) => n.lookups),
      inserts: total((n) => n.inserts),
      updates: total((n) => n.updates),
      deletes: total((n) => n.deletes),
      evictions: total((n) => n.evictions),
      retransmits: total((n) => n.retransmits),
      drops: total((n) => n.drops),
      keysAtEnd: verdict!.keys,
    },
    nodes,
    differingKeys: verdict!.differing.slice(0, 1000),
    differingKeysTotal: verdict!.differing.length,
    timeline,
    faultEvents: faults.events,
  };
  const files = writeReport(options.out, result);
  say('');
  say(formatSummary(result));
  say(`report: ${files.html}\nresult: ${files.json}`);
  return { result, exitCode: pass ? 0 : 1, files };
}

// ------------------------------------------------------------------------------------------------
// Faults

/** Most membership changes a run records (one per member and change; a flapping member would be noisy). */
const MAX_MEMBERSHIP_EVENTS = 200;

/**
 * Carries out a {@link FaultPlan} during the load (loss, partition and heal, kill and restart) and
 * records the fault timeline, including the membership changes the members report while faults
 * are injected. Fault steps run beside the load loop; a failed step fails the run.
 */
class FaultInjector {
  readonly events: FaultEvent[] = [];
  /** Node ids of the killed processes, by member index. */
  readonly previousNodeIds = new Map<number, string[]>();
  private readonly abort = new AbortController();
  private tasks: Promise<void> = Promise.resolve();
  private failure: Error | undefined;
  private readonly seen = new Map<MemberProcess, number>();
  private membershipEvents = 0;
  private observing = false;
  private loadRunning = false;

  constructor(
    private readonly plan: FaultPlan,
    private readonly topology: NetnsTopology | undefined,
    private readonly members: MemberProcess[],
    private readonly hooks: {
      say(line: string): void;
      /** ms since the load started. */
      since(): number;
      onRestart(fresh: MemberProcess): void;
    },
  ) {}

  private record(kind: FaultKind, detail: string, member?: string, t = this.hooks.since()): void {
    const event: FaultEvent = { t: Math.round(t), kind, ...(member !== undefined ? { member } : {}), detail };
    this.events.push(event);
    this.events.sort((a, b) => a.t - b.t);
    const when = `${event.t >= 0 ? '+' : ''}${(event.t / 1000).toFixed(2)} s`;
    this.hooks.say(`fault ${when}: ${kind}${member !== undefined ? ` ${member}` : ''}: ${detail}`);
  }

  private network(): NetnsTopology {
    if (!this.topology) throw new Error('this fault needs --netns');
    return this.topology;
  }

  /** Sets the loss rule on every member (before the load); returns when, or undefined without loss. */
  async setLoss(): Promise<number | undefined> {
    if (this.plan.lossPercent <= 0) return undefined;
    const topology = this.network();
    const probability = this.plan.lossPercent / 100;
    await Promise.all(topology.members.map((member) => topology.setLoss(member.index, probability)));
    return performance.now();
  }

  /** Starts the timed faults; the load started at `loadStart` (performance.now()). */
  start(loadStart: number, lossSetAt: number | undefined): void {
    this.loadRunning = true;
    this.observing = injectsFaults(this.plan);
    if (lossSetAt !== undefined) {
      this.record(
        'loss',
        `every member’s kernel drops ${this.plan.lossPercent}% of the packets it receives (iptables statistic on INPUT)`,
        undefined,
        lossSetAt - loadStart,
      );
    }
    const steps: Array<Promise<void>> = [];
    if (this.plan.partition) steps.push(this.partition(this.plan.partition));
    if (this.plan.kill) steps.push(this.killAndRestart(this.plan.kill));
    this.tasks = Promise.all(
      steps.map((step) =>
        step.catch((error: Error) => {
          if (!this.abort.signal.aborted) this.failure ??= error;
        }),
      ),
    ).then(() => {});
  }

  private async at(ms: number): Promise<void> {
    const wait = ms - this.hooks.since();
    if (wait > 0) await sleepFor(wait, this.abort.signal);
    if (this.abort.signal.aborted) throw new Error('aborted');
  }

  private async partition(step: NonNullable<FaultPlan['partition']>): Promise<void> {
    const topology = this.network();
    const name = this.members[step.member]!.name;
    await this.at(step.atMs);
    await topology.partition(step.member);
    this.record(
      'partition',
      `cut off for ${formatMs(step.forMs)}: its link to the bridge is down (silent, sends still succeed)`,
      name,
    );
    await this.at(step.atMs + step.forMs);
    await topology.heal(step.member);
    this.record('heal', 'its link to the bridge is up again', name);
  }

  private async killAndRestart(step: NonNullable<FaultPlan['kill']>): Promise<void> {
    await this.at(step.atMs);
    const old = this.members[step.member]!;
    const pid = old.pid;
    const opsBefore = old.latest?.workload.ops ?? 0;
    old.kill();
    await old.exited;
    const killedAt = performance.now();
    this.record(
      'kill',
      `kill -9 of node ${old.nodeId} (pid ${pid}), which had reported ${number.format(opsBefore)} ops; restarting it`,
      old.name,
    );
    const fresh = await relaunchMember(old);
    if (this.abort.signal.aborted) {
      await fresh.stop(1000);
      return;
    }
    const ids = this.previousNodeIds.get(step.member) ?? [];
    ids.push(old.nodeId);
    this.previousNodeIds.set(step.member, ids);
    this.members[step.member] = fresh;
    this.hooks.onRestart(fresh);
    const loading = this.loadRunning;
    if (loading) fresh.send({ type: 'start' });
    this.record(
      'restart',
      `back as node ${fresh.nodeId} (a new node, same settings and workload seed), ` +
        `${((performance.now() - killedAt) / 1000).toFixed(2)} s after the kill; ` +
        (loading ? 'it joins the load' : 'the load had ended, so it runs none'),
      fresh.name,
    );
  }

  /** Notes a member's membership changes while faults are injected (from its per-second sample). */
  observe(member: MemberProcess, sample: MemberSample): void {
    if (!this.observing || this.membershipEvents >= MAX_MEMBERSHIP_EVENTS) return;
    const previous = this.seen.get(member);
    this.seen.set(member, sample.members);
    const restarted = this.previousNodeIds.has(member.index);
    if (previous === sample.members || (previous === undefined && !restarted)) return;
    this.membershipEvents++;
    const others = this.members.length - 1;
    this.record(
      'membership',
      `${previous === undefined ? `node ${member.nodeId} ` : ''}sees ${sample.members} other member${sample.members === 1 ? '' : 's'}` +
        `${previous === undefined ? '' : ` (was ${previous})`}${sample.members === others ? ', all of them' : ''}`,
      member.name,
    );
  }

  /** Records no more membership changes (the verdict is in). */
  stopObserving(): void {
    this.observing = false;
  }

  /** The load is over: a member restarted from now on runs no workload. */
  loadStopped(): void {
    this.loadRunning = false;
  }

  /** Throws the error of a failed fault step, if any. */
  throwIfFailed(): void {
    if (this.failure)
      throw new Error(`fault injection failed: ${this.failure.message}`, { cause: this.failure });
  }

  /** Waits for the fault steps (a restart in progress) to end; throws if one failed. */
  async finish(): Promise<void> {
    await this.tasks;
    this.throwIfFailed();
  }

  /** Packets each member's loss rule dropped, or undefined without loss. */
  async kernelDrops(): Promise<number[] | undefined> {
    if (this.plan.lossPercent <= 0 || !this.topology) return undefined;
    const topology = this.topology;
    return Promise.all(topology.members.map((member) => topology.lossDrops(member.index)));
  }

  /** Cancels what has not happened yet and waits for steps in progress. Idempotent. */
  async close(): Promise<void> {
    this.observing = false;
    this.abort.abort();
    await this.tasks;
  }
}

function sleepFor(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
  });
}

function round(value: number | null): number | null {
  return value === null ? null : Math.round(value);
}
