/**
 * The cluster over UDP unicast peers (MCCACHE_PEERS), as on networks without multicast: member
 * processes on loopback, each bound to a port of its own (MCCACHE_UNICAST_BIND), every one given
 * the full list. Convergence with and without encryption, a peer list written as DNS names, the
 * transport choice, and the ports `mccache stress --transport unicast` hands out.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { freeUdpPorts, prepareNetwork } from '../lib/cli/stress.js';
import { ConfigError } from '../lib/config.js';
import { createNode } from '../lib/node.js';
import { generateFernetKey } from '../lib/wire/fernet.js';
import {
  assertHoldsWhatWasWritten,
  closeWarmProcesses,
  converged,
  type MemberSpec,
  ProcessCluster,
  WriteLog,
  waitForMembers,
  writeConcurrently,
} from './helpers/processes.js';

/** Members may take a while to start when other tests run alongside (tsx compiles on start). */
const MEMBERS_DEADLINE_MS = 10_000;
/** After the last write: generous for a loaded machine (the multicast spec's bound is 2 s). */
const CONVERGENCE_DEADLINE_MS = 5000;

/** Specs of members `names`, each bound to its own loopback port, all given the same peer list. */
async function unicastSpecs(names: string[], extra: Partial<MemberSpec> = {}): Promise<MemberSpec[]> {
  const ports = await freeUdpPorts(names.length);
  const peers = ports.map((port) => `127.0.0.1:${port}`);
  return names.map((name, i) => ({ name, peers, unicastBind: peers[i]!, ...extra }));
}

describe('cluster on UDP unicast peers (separate processes, loopback, distinct ports)', () => {
  after(closeWarmProcesses);

  for (const encrypted of [false, true]) {
    test(`3 members writing overlapping keys converge ${encrypted ? 'with' : 'without'} a crypto key`, async () => {
      const cluster = new ProcessCluster();
      try {
        const extra = encrypted ? { cryptoKey: generateFernetKey() } : {};
        const members = await cluster.spawnAll(await unicastSpecs(['a', 'b', 'c'], extra));
        await waitForMembers(members, 2, MEMBERS_DEADLINE_MS);
        const log = new WriteLog();
        await writeConcurrently(members, 300, encrypted ? 300 : 400, log);
        await converged(members, CONVERGENCE_DEADLINE_MS);
        await assertHoldsWhatWasWritten(members, log);
        const metrics = await Promise.all(members.map((m) => m.metrics()));
        for (const m of metrics) {
          assert.equal(m.transport.peers, 2, 'each member sends to the two others, not to itself');
          assert.equal(m.transport.sendErrors, 0);
          assert.equal(m.cluster.dropped['internal-error'], undefined);
          if (encrypted) assert.equal(m.cluster.dropped['sealed-without-key'], undefined);
          // Own datagrams are looped back in-process (as multicast does) and filtered by node id.
          assert.ok((m.cluster.dropped.self ?? 0) > 0, 'own datagrams come back and are recognised');
        }
        const received = metrics.reduce((total, m) => total + Number(m.cluster.opsReceived ?? 0), 0);
        assert.ok(received >= 2 * 3 * 200, `ops went over the network (${received})`);
      } finally {
        await cluster.close();
      }
    });
  }

  test('a member whose peer list names localhost:PORT (a DNS name) joins and converges', async () => {
    const cluster = new ProcessCluster();
    try {
      const [a, b, c] = await unicastSpecs(['a', 'b', 'c']);
      // c's list names every member, itself included, by DNS name: it must resolve them and skip itself.
      const byName = a!.peers!.map((peer) => peer.replace('127.0.0.1', 'localhost'));
      const members = await cluster.spawnAll([a!, b!, { ...c!, peers: byName }]);
      await waitForMembers(members, 2, MEMBERS_DEADLINE_MS);
      const log = new WriteLog();
      await writeConcurrently(members, 200, 500, log);
      await converged(members, CONVERGENCE_DEADLINE_MS);
      await assertHoldsWhatWasWritten(members, log);
      const viaDns = await members[2]!.metrics();
      assert.equal(viaDns.transport.peers, 2, 'localhost resolved to the two other members');
      assert.equal(viaDns.transport.resolveFailures, 0);
    } finally {
      await cluster.close();
    }
  });
});

describe('choosing the unicast transport', () => {
  test('MCCACHE_PEERS together with MCCACHE_NATS_URL is a ConfigError naming both', () => {
    assert.throws(
      () =>
        createNode({
          env: { MCCACHE_PEERS: '127.0.0.1:4001', MCCACHE_NATS_URL: 'nats://127.0.0.1:4222' },
          cwd: '/nonexistent',
        }),
      (error: unknown) =>
        error instanceof ConfigError &&
        /MCCACHE_PEERS/.test(error.message) &&
        /MCCACHE_NATS_URL/.test(error.message),
    );
  });

  test('stress --transport unicast gives every member a distinct loopback port and the full peer list', async () => {
    const network = await prepareNetwork({ transport: 'unicast', nodes: 5, natsUrl: undefined });
    const binds = [0, 1, 2, 3, 4].map((i) => network.settingsFor(i).unicastBind);
    assert.equal(new Set(binds).size, 5, `distinct binds: ${binds.join(' ')}`);
    for (const bind of binds) assert.match(bind!, /^127\.0\.0\.1:\d+$/);
    assert.deepEqual(network.settings.peers, binds);
    assert.equal(
      network.settings.natsUrl,
      '',
      'an inherited MCCACHE_NATS_URL cannot switch the members to NATS',
    );
    await network.close();
  });
});
