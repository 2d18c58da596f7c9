/**
 * Separate network stacks on one machine, for fault tests and `mccache stress --netns`.
 *
 * Every member gets a network namespace of its own, joined by a veth pair to a bridge that sits in
 * one more namespace. Loss is real kernel loss (an iptables `statistic` rule on INPUT inside the
 * member's namespace), a partition is the bridge-side end of the member's veth pair going down
 * (silent: no error reaches the member), and a crash is SIGKILL of the member's process.
 *
 * Nothing is created in the host's own namespace: each veth end is created directly inside its
 * namespace, so deleting the namespaces removes every interface. Names carry a prefix, the pid of
 * the creating process and a random run id, so parallel runs never collide and a later run can
 * sweep what a crashed run left behind (namespaces whose creating pid is gone). Needs root and
 * iproute2; loss also needs iptables.
 */
import { type ChildProcess, execFile, execFileSync, type SpawnOptions, spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';

/** Prefix of every namespace this module creates. */
export const NETNS_PREFIX = 'mcnet';
/** The member's end of its veth pair, inside the member's namespace (names are per namespace). */
export const MEMBER_INTERFACE = 'veth0';
/** The bridge, inside the bridge namespace. */
export const BRIDGE_INTERFACE = 'br0';
/** The iptables chain (inside a member's namespace) that holds the loss rule. */
export const LOSS_CHAIN = 'MCCACHE_LOSS';

/** One member's place in a {@link NetnsTopology}. */
export interface NetnsMember {
  /** 0-based position in the topology. */
  readonly index: number;
  /** Name of the member's network namespace. */
  readonly namespace: string;
  /** The member's IPv4 address on the bridge: use it as MCCACHE_MULTICAST_IF. */
  readonly address: string;
  /** Interface name of the member's veth end, inside its namespace. */
  readonly interfaceName: string;
  /** Interface name of the bridge-side veth end, inside the bridge namespace. */
  readonly bridgePort: string;
}

/** Options of {@link NetnsTopology.create}. */
export interface NetnsTopologyOptions {
  /** How many member namespaces (1-250). */
  members: number;
  /** Name prefix (default {@link NETNS_PREFIX}); letters and digits only. */
  prefix?: string;
  /** First three octets of the /24 the members live in, e.g. `10.23.45`; default a random `10.X.Y`. */
  subnet?: string;
  /**
   * The multicast route added in every member namespace (default `224.0.0.0/4` via the member's
   * veth). `null` adds none, as in a cloud network: multicast then cannot leave a member.
   */
  multicastRoute?: string | null;
}

/** Whether this process can build topologies, and why not. */
export type NetnsSupport = { available: true } | { available: false; reason: string };

/** A failed `ip`/`iptables` call: the command and what it printed. */
export class NetnsCommandError extends Error {
  override name = 'NetnsCommandError';
  constructor(
    readonly command: readonly string[],
    readonly stderr: string,
    cause?: unknown,
  ) {
    super(`\`${command.join(' ')}\` failed: ${stderr.trim() || String((cause as Error)?.message ?? cause)}`, {
      cause,
    });
  }
}

function run(command: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      command[0]!,
      command.slice(1),
      { encoding: 'utf8', timeout: 30_000 },
      (error, stdout, stderr) => {
        if (error) reject(new NetnsCommandError(command, stderr, error));
        else resolve(stdout);
      },
    );
  });
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: alive but not ours to signal.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function namespacesNow(): Promise<string[]> {
  // Lines look like `name (id: 3)` or `name`.
  return run(['ip', 'netns', 'list']).then((out) =>
    out
      .split('\n')
      .map((line) => line.trim().split(/\s+/)[0] ?? '')
      .filter((name) => name !== ''),
  );
}

/**
 * Whether topologies can be built here: root, iproute2 with `ip netns`, and a namespace that can
 * actually be created (containers may forbid it). Never throws.
 */
export async function netnsSupport(): Promise<NetnsSupport> {
  if (process.platform !== 'linux') return { available: false, reason: 'network namespaces need Linux' };
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    return { available: false, reason: 'network namespaces need root (run as uid 0)' };
  }
  const probe = `${NETNS_PREFIX}${process.pid}-${randomInt(1 << 30).toString(36)}-probe`;
  try {
    await run(['ip', 'netns', 'add', probe]);
  } catch (error) {
    const message = (error as Error).message;
    const missing = (error as { cause?: { code?: unknown } }).cause?.code === 'ENOENT';
    return {
      available: false,
      reason: missing ? 'iproute2 (`ip`) is not installed' : `cannot create a network namespace: ${message}`,
    };
  }
  await run(['ip', 'netns', 'del', probe]).catch(() => {});
  return { available: true };
}

/** Whether loss can be injected (iptables present and usable). Never throws. */
export async function lossSupport(): Promise<NetnsSupport> {
  try {
    await run(['iptables', '--version']);
    return { available: true };
  } catch (error) {
    return { available: false, reason: `iptables is not usable: ${(error as Error).message}` };
  }
}

const STALE_NAME = /^([a-z]+)(\d+)-[a-z0-9]+-(?:br|m\d+|probe)$/;

/**
 * Deletes namespaces left by runs whose process is gone (same prefix, creating pid not alive),
 * killing any process still inside them first. Returns the names deleted.
 */
export async function sweepStaleNamespaces(prefix: string = NETNS_PREFIX): Promise<string[]> {
  const swept: string[] = [];
  let names: string[];
  try {
    names = await namespacesNow();
  } catch {
    return swept;
  }
  for (const name of names) {
    const match = STALE_NAME.exec(name);
    if (!match || match[1] !== prefix) continue;
    const pid = Number(match[2]);
    if (pid === process.pid || pidAlive(pid)) continue;
    await killNamespaceProcesses(name);
    await run(['ip', 'netns', 'del', name]).catch(() => {});
    swept.push(name);
  }
  return swept;
}

async function killNamespaceProcesses(namespace: string): Promise<void> {
  const out = await run(['ip', 'netns', 'pids', namespace]).catch(() => '');
  for (const pid of out.split(/\s+/).filter(Boolean).map(Number)) {
    if (pid !== process.pid) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
    }
  }
}

/**
 * Runs `ip` commands from one process (`ip -force -batch -`): fast enough for an exit hook. Returns
 * what they printed, even when one of them failed.
 */
function ipBatchSync(commands: readonly string[]): string {
  try {
    return execFileSync('ip', ['-force', '-batch', '-'], {
      encoding: 'utf8',
      timeout: 30_000,
      input: `${commands.join('\n')}\n`,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
  } catch (error) {
    return String((error as { stdout?: unknown }).stdout ?? '');
  }
}

/** Topologies not yet destroyed; removed on exit or signal if the owner could not. */
const live = new Set<NetnsTopology>();
let hooksInstalled = false;

function destroyAllSync(): void {
  for (const topology of [...live]) topology.destroySync();
}

/**
 * Destroys every live topology, asynchronously: the process keeps answering signals meanwhile. That
 * matters under a supervisor such as tsx, which SIGKILLs its child when a relayed signal is not
 * acknowledged within a few milliseconds (a Ctrl-C reaches both), which a synchronous clean-up
 * would block. Whoever exits first, the exit hook finishes what is left.
 */
function onSignal(signal: NodeJS.Signals): void {
  void Promise.all([...live].map((topology) => topology.destroy())).finally(() => {
    uninstallHooks();
    // Keep the default meaning of the signal unless someone else handles it.
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  });
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', destroyAllSync);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

function uninstallHooks(): void {
  if (!hooksInstalled) return;
  hooksInstalled = false;
  process.off('exit', destroyAllSync);
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
}

interface Launch {
  command: string[];
  options: SpawnOptions;
}

/**
 * A bridge namespace plus one namespace per member, each joined to the bridge by a veth pair.
 *
 * ```ts
 * const topology = await NetnsTopology.create({ members: 5 });
 * try {
 *   const child = topology.spawn(0, [process.execPath, 'member.js'], { env: topology.environmentFor(0) });
 *   await topology.setLoss(0, 0.1);
 *   await topology.partition(0);
 *   await topology.heal(0);
 *   await topology.kill(0);
 *   topology.restart(0);
 * } finally {
 *   await topology.destroy();
 * }
 * ```
 */
export class NetnsTopology {
  /** Unique per run: prefix, pid and a random part. Every namespace name starts with it. */
  readonly runId: string;
  readonly bridgeNamespace: string;
  readonly members: readonly NetnsMember[];
  /** The members' /24 as `a.b.c`. */
  readonly subnet: string;
  private readonly created: string[] = [];
  private readonly children = new Map<number, ChildProcess>();
  private readonly launches = new Map<number, Launch>();
  private readonly partitioned = new Set<number>();
  private readonly lossReady = new Set<number>();
  private destroyed = false;
  private destroying: Promise<void> | undefined;

  private constructor(runId: string, subnet: string, memberCount: number) {
    this.runId = runId;
    this.subnet = subnet;
    this.bridgeNamespace = `${runId}-br`;
    this.members = Array.from({ length: memberCount }, (_, index) => ({
      index,
      namespace: `${runId}-m${index}`,
      address: `${subnet}.${index + 1}`,
      interfaceName: MEMBER_INTERFACE,
      bridgePort: `m${index}`,
    }));
  }

  /**
   * Builds the topology: stale namespaces of dead runs are swept first. If any step fails,
   * everything built so far is removed and the error (naming the command) is thrown.
   */
  static async create(options: NetnsTopologyOptions): Promise<NetnsTopology> {
    const { members } = options;
    if (!Number.isInteger(members) || members < 1 || members > 250) {
      throw new RangeError(`members must be a whole number from 1 to 250; got ${members}`);
    }
    const prefix = options.prefix ?? NETNS_PREFIX;
    if (!/^[a-z]+$/.test(prefix)) throw new TypeError(`prefix must be lowercase letters; got '${prefix}'`);
    const subnet = options.subnet ?? `10.${randomInt(1, 255)}.${randomInt(1, 255)}`;
    if (!/^\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(subnet)) {
      throw new TypeError(`subnet must be three octets such as 10.23.45; got '${subnet}'`);
    }
    await sweepStaleNamespaces(prefix);
    const runId = `${prefix}${process.pid}-${randomInt(36 ** 4, 36 ** 5).toString(36)}`;
    const topology = new NetnsTopology(runId, subnet, members);
    live.add(topology);
    installHooks();
    try {
      await topology.build(options.multicastRoute === undefined ? '224.0.0.0/4' : options.multicastRoute);
    } catch (error) {
      await topology.destroy();
      throw error;
    }
    return topology;
  }

  private async build(multicastRoute: string | null): Promise<void> {
    const bridge = this.bridgeNamespace;
    await this.addNamespace(bridge);
    // Snooping off: multicast is flooded to every port, whatever IGMP state a link flap left behind.
    await run(['ip', '-n', bridge, 'link', 'add', BRIDGE_INTERFACE, 'type', 'bridge', 'mcast_snooping', '0']);
    await run(['ip', '-n', bridge, 'link', 'set', BRIDGE_INTERFACE, 'up']);
    for (const member of this.members) {
      const ns = member.namespace;
      await this.addNamespace(ns);
      await run([
        'ip',
        'link',
        'add',
        member.interfaceName,
        'netns',
        ns,
        'type',
        'veth',
        'peer',
        'name',
        member.bridgePort,
        'netns',
        bridge,
      ]);
      await run(['ip', '-n', bridge, 'link', 'set', member.bridgePort, 'master', BRIDGE_INTERFACE]);
      await run(['ip', '-n', bridge, 'link', 'set', member.bridgePort, 'up']);
      await run(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
      await run(['ip', '-n', ns, 'addr', 'add', `${member.address}/24`, 'dev', member.interfaceName]);
      await run(['ip', '-n', ns, 'link', 'set', member.interfaceName, 'up']);
      if (multicastRoute !== null) {
        await run(['ip', '-n', ns, 'route', 'add', multicastRoute, 'dev', member.interfaceName]);
      }
    }
  }

  private async addNamespace(name: string): Promise<void> {
    await run(['ip', 'netns', 'add', name]);
    this.created.push(name);
  }

  private member(index: number): NetnsMember {
    const member = this.members[index];
    if (!member) throw new RangeError(`no member ${index}: the topology has ${this.members.length}`);
    return member;
  }

  /** The argv prefix that runs a command inside a member's namespace. */
  commandPrefix(index: number): string[] {
    return ['ip', 'netns', 'exec', this.member(index).namespace];
  }

  /** Environment a mccache member in this namespace needs (its interface address). */
  environmentFor(index: number): Record<string, string> {
    return { MCCACHE_MULTICAST_IF: this.member(index).address };
  }

  /**
   * Starts `command` inside a member's namespace and tracks it (for {@link kill}, {@link restart}
   * and destroy). `ip netns exec` execs the command in place, so the child's pid is the command's.
   */
  spawn(index: number, command: readonly string[], options: SpawnOptions = {}): ChildProcess {
    if (this.destroyed) throw new Error(`topology ${this.runId} is destroyed`);
    if (command.length === 0) throw new TypeError('command must name a program');
    // `ip` and the command are looked up in PATH: keep the caller's if a bare environment is given.
    const env = options.env && !options.env.PATH ? { ...options.env, PATH: process.env.PATH } : options.env;
    const launch: Launch = { command: [...command], options: env ? { ...options, env } : options };
    this.launches.set(index, launch);
    const argv = [...this.commandPrefix(index), ...launch.command];
    const child = spawn(argv[0]!, argv.slice(1), launch.options);
    this.children.set(index, child);
    child.once('exit', () => {
      if (this.children.get(index) === child) this.children.delete(index);
    });
    return child;
  }

  /** The tracked process of a member, if it is running. */
  processOf(index: number): ChildProcess | undefined {
    return this.children.get(index);
  }

  /** Sends `signal` (default SIGKILL) to a member's process and resolves once it has exited. */
  async kill(index: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.children.get(index);
    if (!child) return;
    await killAndWait(child, signal);
  }

  /** Starts a member's last command again (killing it first if it still runs). */
  async restart(index: number): Promise<ChildProcess> {
    const launch = this.launches.get(index);
    if (!launch) throw new Error(`member ${index} was never started`);
    await this.kill(index);
    return this.spawn(index, launch.command, launch.options);
  }

  /**
   * Drops this fraction (0-1) of every packet arriving in a member's namespace, at random, in the
   * kernel. 0 removes the loss. Needs iptables.
   */
  async setLoss(index: number, probability: number): Promise<void> {
    if (!(probability >= 0 && probability <= 1)) {
      throw new RangeError(`loss probability must be from 0 to 1; got ${probability}`);
    }
    const iptables = [...this.commandPrefix(index), 'iptables', '-w'];
    if (!this.lossReady.has(index)) {
      await run([...iptables, '-N', LOSS_CHAIN]);
      await run([...iptables, '-I', 'INPUT', '-j', LOSS_CHAIN]);
      this.lossReady.add(index);
    }
    await run([...iptables, '-F', LOSS_CHAIN]);
    if (probability > 0) {
      await run([
        ...iptables,
        '-A',
        LOSS_CHAIN,
        '-m',
        'statistic',
        '--mode',
        'random',
        '--probability',
        String(probability),
        '-j',
        'DROP',
      ]);
    }
  }

  /** Packets the loss rule of a member has dropped so far (0 without loss). */
  async lossDrops(index: number): Promise<number> {
    if (!this.lossReady.has(index)) return 0;
    const out = await run([
      ...this.commandPrefix(index),
      'iptables',
      '-w',
      '-L',
      LOSS_CHAIN,
      '-v',
      '-x',
      '-n',
    ]);
    let dropped = 0;
    for (const line of out.split('\n')) {
      const fields = line.trim().split(/\s+/);
      if (fields[2] === 'DROP') dropped += Number(fields[0]);
    }
    return dropped;
  }

  /** Cuts a member off the bridge (silently: its own link merely loses carrier). */
  async partition(index: number): Promise<void> {
    await run(['ip', '-n', this.bridgeNamespace, 'link', 'set', this.member(index).bridgePort, 'down']);
    this.partitioned.add(index);
  }

  /** Reconnects a member cut off by {@link partition}. */
  async heal(index: number): Promise<void> {
    await run(['ip', '-n', this.bridgeNamespace, 'link', 'set', this.member(index).bridgePort, 'up']);
    this.partitioned.delete(index);
  }

  isPartitioned(index: number): boolean {
    return this.partitioned.has(index);
  }

  /**
   * Kills every tracked process and deletes every namespace (and with them every interface).
   * Calls made while it runs share its promise.
   */
  destroy(): Promise<void> {
    this.destroying ??= this.tearDown();
    return this.destroying;
  }

  private async tearDown(): Promise<void> {
    this.destroyed = true;
    await Promise.all([...this.children.values()].map((child) => killAndWait(child, 'SIGKILL')));
    // Last created first; each name leaves the list once deleted, so destroySync can finish the rest.
    for (let name = this.created.at(-1); name !== undefined; name = this.created.at(-1)) {
      await killNamespaceProcesses(name);
      await run(['ip', 'netns', 'del', name]).catch(() => {});
      if (this.created.at(-1) === name) this.created.pop();
    }
    this.forget();
  }

  /**
   * {@link destroy} without waiting on the event loop, for exit hooks: it also finishes a destroy
   * in progress. Two `ip` processes in all (one lists the pids, one deletes the namespaces).
   */
  destroySync(): void {
    this.destroyed = true;
    for (const child of this.children.values()) {
      try {
        child.kill('SIGKILL');
      } catch {}
    }
    const names = [...this.created].reverse();
    if (names.length > 0) {
      const pids = ipBatchSync(names.map((name) => `netns pids ${name}`));
      for (const pid of pids.split(/\s+/).filter(Boolean).map(Number)) {
        if (pid !== process.pid) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {}
        }
      }
      // A namespace deleted while a dying process is still inside goes away when that process does.
      ipBatchSync(names.map((name) => `netns del ${name}`));
    }
    this.forget();
  }

  private forget(): void {
    this.children.clear();
    this.created.length = 0;
    live.delete(this);
    if (live.size === 0) uninstallHooks();
  }

  /** Names of this topology's namespaces that exist right now (empty once destroyed). */
  async existingNamespaces(): Promise<string[]> {
    const names = await namespacesNow();
    return names.filter((name) => name.startsWith(`${this.runId}-`));
  }
}

function killAndWait(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
    try {
      child.kill(signal);
    } catch {
      resolve();
    }
  });
}
