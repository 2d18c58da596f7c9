/**
 * Unicast peers across real network stacks without multicast (issue 8), as in a cloud network: every
 * member runs in a network namespace of its own, joined to the others by a bridge, with no route for
 * 224.0.0.0/4, so multicast cannot leave it. Every member is given the same peer list (the members'
 * namespace addresses, one port) and binds the default 0.0.0.0:<MCCACHE_MULTICAST_PORT>, as pods do.
 * Needs root; skipped with the reason otherwise.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { NetnsTopology, netnsSupport } from '../lib/cli/netns.js';
import { generateFernetKey } from '../lib/wire/fernet.js';
import {
  assertHoldsWhatWasWritten,
  closeWarmProcesses,
  converged,
  ProcessCluster,
  WriteLog,
  waitForMembers,
  writeConcurrently,
} from './helpers/processes.js';

const run = promisify(execFile);
/** Generous: three members start and meet across namespaces on a loaded machine. */
const MEMBERS_DEADLINE_MS = 15_000;
const CONVERGENCE_DEADLINE_MS = 5000;

const support = await netnsSupport();
const skip = support.available ? false : support.reason;
if (skip) console.warn(`SKIPPING unicast across network namespaces: ${skip}`);

describe('cluster on unicast peers across network namespaces without a multicast route', { skip }, () => {
  after(closeWarmProcesses);

  test('3 members, each in its own namespace, converge through their peer list', async () => {
    // No multicast route, as in a cloud network.
    const topology = await NetnsTopology.create({ members: 3, multicastRoute: null });
    const cluster = new ProcessCluster();
    try {
      for (const member of topology.members) {
        await assert.rejects(
          run('ip', ['-n', member.namespace, 'route', 'get', '224.0.0.3']),
          /Network is unreachable/,
          `${member.namespace} still routes multicast`,
        );
      }
      // One port for everyone (separate stacks), the same list for everyone, the default bind.
      const peers = topology.members.map((member) => `${member.address}:${cluster.port}`);
      const key = generateFernetKey();
      const members = await cluster.spawnAll(
        topology.members.map((member) => ({
          name: `m${member.index}`,
          peers,
          cryptoKey: key,
          launch: (command, options) => topology.spawn(member.index, command, options),
        })),
      );
      await waitForMembers(members, 2, MEMBERS_DEADLINE_MS);
      const log = new WriteLog();
      await writeConcurrently(members, 300, 900, log);
      await converged(members, CONVERGENCE_DEADLINE_MS);
      await assertHoldsWhatWasWritten(members, log);
      for (const metrics of await Promise.all(members.map((m) => m.metrics()))) {
        // Bound to 0.0.0.0, a member finds its own namespace address in the list and skips it.
        assert.equal(metrics.transport.peers, 2);
        assert.equal(metrics.transport.sendErrors, 0);
        assert.ok(Number(metrics.cluster.opsReceived) > 0, 'ops crossed the bridge');
      }
    } finally {
      await cluster.close();
      await topology.destroy();
    }
  });
});
