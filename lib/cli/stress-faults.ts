/**
 * Faults of `mccache stress`: the plan (which member, when) and the network of a run whose members
 * each live in a network namespace of their own (`--netns`, built by netns.ts).
 *
 * The plan is fixed by the flags alone, so a run is reproducible: a partition (`--partition`) cuts
 * the last member off at a third of the load and heals it before the load ends; a kill (`--kill`)
 * hits another member (the last one without a partition) at half the load, and the member is
 * restarted at once as a new node. Loss (`--loss`) is set on every member just before the load.
 */
import { lossSupport, type NetnsTopology, netnsSupport } from './netns.js';
import type { StressTransportName } from './report.js';
import type { MemberLauncher, StressNetwork } from './stress.js';

/** Where in the load a partition starts: a third of the way through. */
export const PARTITION_START_FRACTION = 1 / 3;
/** Where in the load a member is killed: halfway. */
export const KILL_FRACTION = 1 / 2;

/** The flags that decide the faults of a run. */
export interface FaultOptions {
  nodes: number;
  durationMs: number;
  /** Kernel loss on every member in percent (0: none). */
  lossPercent: number;
  /** How long one member is cut off; null: no partition. */
  partitionMs: number | null;
  kill: boolean;
}

/** Which member is hit by what, and when (ms since the load started). */
export interface FaultPlan {
  lossPercent: number;
  partition: { member: number; atMs: number; forMs: number } | null;
  kill: { member: number; atMs: number } | null;
}

/** When a partition starts in a load of `durationMs`. */
export function partitionStartMs(durationMs: number): number {
  return Math.round(durationMs * PARTITION_START_FRACTION);
}

/** The longest partition that heals before a load of `durationMs` ends. */
export function longestPartitionMs(durationMs: number): number {
  return durationMs - partitionStartMs(durationMs);
}

/** The faults of a run, from its flags. Partition and kill hit different members. */
export function planFaults(options: FaultOptions): FaultPlan {
  const last = options.nodes - 1;
  const partition =
    options.partitionMs === null
      ? null
      : { member: last, atMs: partitionStartMs(options.durationMs), forMs: options.partitionMs };
  const kill = options.kill
    ? { member: partition ? last - 1 : last, atMs: Math.round(options.durationMs * KILL_FRACTION) }
    : null;
  return { lossPercent: options.lossPercent, partition, kill };
}

/** Whether the plan injects anything. */
export function injectsFaults(plan: FaultPlan): boolean {
  return plan.lossPercent > 0 || plan.partition !== null || plan.kill !== null;
}

/**
 * Checks that this process can build namespaces (and inject loss when asked), and throws an error
 * that says why not and what to do otherwise.
 */
export async function requireNetns(lossPercent: number): Promise<void> {
  const support = await netnsSupport();
  if (!support.available) {
    throw new Error(
      `--netns cannot run here: ${support.reason}. Without --netns (and --loss and --partition, which ` +
        'need it), stress runs its members on loopback',
    );
  }
  if (lossPercent > 0) {
    const loss = await lossSupport();
    if (!loss.available) {
      throw new Error(`--loss cannot run here: ${loss.reason} (Debian package iptables)`);
    }
  }
}

/**
 * The network of a run across `topology`: members reach each other over the bridge, each from the
 * address of its own namespace. Multicast uses `group`:`port` on every member's veth; unicast gives
 * every member the list of all namespace addresses on one port (the stacks are separate, so one port
 * serves all) and binds each to its own address. The launcher runs each member inside its namespace.
 */
export function netnsNetwork(
  transport: Exclude<StressTransportName, 'nats'>,
  topology: NetnsTopology,
  endpoint: { group: string; port: number },
): StressNetwork & { launcher: MemberLauncher } {
  const { group, port } = endpoint;
  const subnet = `${topology.subnet}.0/24`;
  const across = `across ${topology.members.length} network namespaces (${subnet}, one per member, bridged)`;
  const multicast = { multicastIp: group, multicastPort: port, multicastIf: topology.members[0]!.address };
  const launcher: MemberLauncher = (member, launch) => ({
    launch: {
      ...launch,
      command: topology.commandPrefix(member.index)[0]!,
      args: [...topology.commandPrefix(member.index).slice(1), launch.command, ...launch.args],
    },
  });
  const shared = {
    launcher,
    close: async () => {},
    unreachableHint: `do the namespaces of run ${topology.runId} reach each other over their bridge?`,
  };
  if (transport === 'multicast') {
    return {
      ...shared,
      transport,
      description: `multicast group ${group}:${port} ${across}`,
      settings: { ...multicast, peers: [], natsUrl: '' },
      settingsFor: (index) => ({ multicastIf: topology.members[index]!.address }),
      group,
      port,
    };
  }
  const peers = topology.members.map((member) => `${member.address}:${port}`);
  return {
    ...shared,
    transport,
    description: `unicast peers ${peers.join(', ')} ${across}, no multicast route`,
    settings: { ...multicast, peers, natsUrl: '' },
    settingsFor: (index) => ({ multicastIf: topology.members[index]!.address, unicastBind: peers[index]! }),
    group: `unicast ${subnet}`,
    port,
  };
}

/** Applies `inner` (the caller's launcher, if any), then `outer`, to each member's launch. */
export function composeLaunchers(inner: MemberLauncher | undefined, outer: MemberLauncher): MemberLauncher {
  if (!inner) return outer;
  return (member, launch) => {
    const first = inner(member, launch);
    const settings = { ...member.settings, ...first.settings };
    const second = outer({ ...member, settings }, first.launch);
    return { launch: second.launch, settings: { ...first.settings, ...second.settings } };
  };
}
