/**
 * Builds clusters of real nodes (real stores, proxies and engines) on a seeded in-memory network
 * and a virtual clock, so a run with thousands of ops, loss and partitions is deterministic and
 * takes seconds.
 */
import { ManualClock } from '../../lib/clock.js';
import type { EngineLimits, EngineTiming } from '../../lib/cluster/engine.js';
import type { Settings } from '../../lib/config.js';
import { silentLog } from '../../lib/log.js';
import { createNode, type McCacheNode } from '../../lib/node.js';
import {
  MemoryNetwork,
  type MemoryNetworkOptions,
  type MemoryTransport,
  mulberry32,
} from '../../lib/transport/memory-network.js';

export interface SimulatedClusterOptions {
  members: number;
  seed: number;
  faults?: Omit<MemoryNetworkOptions, 'clock' | 'seed'>;
  settings?: Partial<Settings>;
  timing?: Partial<EngineTiming>;
  limits?: Partial<EngineLimits>;
}

export class SimulatedCluster {
  readonly clock = new ManualClock();
  readonly network: MemoryNetwork;
  readonly nodes: McCacheNode[] = [];
  /** The network endpoint of each node, same index as `nodes`. */
  readonly endpoints: MemoryTransport[] = [];
  readonly random: () => number;
  private readonly options: SimulatedClusterOptions;

  constructor(options: SimulatedClusterOptions) {
    this.options = options;
    this.random = mulberry32(options.seed);
    this.network = new MemoryNetwork({ clock: this.clock, seed: options.seed, ...options.faults });
    for (let i = 0; i < options.members; i++) this.addNode();
  }

  /** Adds a member (also mid-run, to test joining). */
  addNode(settings: Partial<Settings> = {}): McCacheNode {
    const endpoint = this.network.attach(`node${this.nodes.length}`);
    this.endpoints.push(endpoint);
    const node = createNode({
      env: {},
      settings: { pulse: 5, ...this.options.settings, ...settings },
      transport: endpoint,
      clock: this.clock,
      log: silentLog,
      nodeId: 0x1000_0000 + Math.floor(this.random() * 0x0fff_ffff),
      random: mulberry32(Math.floor(this.random() * 2 ** 31)),
      defer: (run) => this.clock.setTimeout(run, 0),
      ...(this.options.timing ? { timing: this.options.timing } : {}),
      ...(this.options.limits ? { limits: this.options.limits } : {}),
    });
    this.nodes.push(node);
    return node;
  }

  async ready(): Promise<void> {
    await Promise.all(this.nodes.map((node) => node.ready()));
  }

  /** Advances virtual time in steps, so timers and deliveries interleave as they would for real. */
  run(ms: number, stepMs = 1): void {
    for (let t = 0; t < ms; t += stepMs) this.clock.advance(stepMs);
  }

  /** Runs until every live member holds the same checksum of `cache`, or `limitMs` of virtual time pass. */
  runUntilConverged(cache: string, limitMs: number, members = this.nodes): number | undefined {
    for (let t = 0; t <= limitMs; t += 50) {
      if (this.converged(cache, members)) return t;
      this.run(50, 5);
    }
    return undefined;
  }

  converged(cache: string, members = this.nodes): boolean {
    const first = JSON.stringify(members[0]!.getLocalChecksum(cache));
    return members.every((node) => JSON.stringify(node.getLocalChecksum(cache)) === first);
  }

  /** Keys whose checksum differs between members, for failure messages. */
  differences(cache: string, members = this.nodes): string[] {
    const sums = members.map((node) => node.getLocalChecksum(cache));
    const keys = new Set(sums.flatMap((sum) => Object.keys(sum)));
    return [...keys].filter((key) => new Set(sums.map((sum) => JSON.stringify(sum[key]))).size > 1);
  }

  /** A crash: the member's endpoint vanishes without a BYE; it is removed from `nodes`. */
  async crash(node: McCacheNode): Promise<void> {
    const index = this.nodes.indexOf(node);
    const [endpoint] = this.endpoints.splice(index, 1);
    this.nodes.splice(index, 1);
    await endpoint!.close();
  }

  async shutdown(): Promise<void> {
    const closing = Promise.all(this.nodes.map((node) => node.shutdown()));
    this.run(10);
    await closing;
  }
}
