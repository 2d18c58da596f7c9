/**
 * The cluster through NATS (MCCACHE_NATS_URL): a real nats-server on a loopback port and member
 * processes connected to it. Convergence (the server carrying only sealed bytes), a server restart in
 * the middle of a run (writes during the outage are dropped and counted, logged with a counter; after
 * the reconnection the members repair the gap), an unreachable server at start-up (a clear error,
 * never a crash), and the server `mccache stress --transport nats` starts and stops.
 *
 * Skipped, with the reason printed, when nats-server (Debian package nats-server) is not installed.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { connect } from 'nats';
import {
  findNatsServer,
  freeTcpPort,
  NATS_SERVER_INSTALL_HINT,
  type NatsServerProcess,
  startNatsServer,
} from '../lib/cli/nats-server.js';
import { prepareNetwork } from '../lib/cli/stress.js';
import { MissingToolError } from '../lib/netcheck.js';
import { createNode } from '../lib/node.js';
import { natsSubjectFor } from '../lib/transport/nats.js';
import { generateFernetKey } from '../lib/wire/fernet.js';
import {
  assertHoldsWhatWasWritten,
  closeWarmProcesses,
  converged,
  type MemberProcess,
  ProcessCluster,
  WriteLog,
  waitFor,
  waitForMembers,
  writeConcurrently,
} from './helpers/processes.js';

const NATS_SERVER_MISSING = `nats-server is not installed: ${NATS_SERVER_INSTALL_HINT}`;
const skip = findNatsServer() === undefined ? NATS_SERVER_MISSING : false;
if (skip) console.warn(`SKIPPING the NATS cluster tests: ${skip}`);

/** Members may take a while to start when other tests run alongside (tsx compiles on start). */
const MEMBERS_DEADLINE_MS = 10_000;
/** After the last write, with a working server: generous for a loaded machine. */
const CONVERGENCE_DEADLINE_MS = 5000;
/** Short anti-entropy pulse, so the repair after an outage happens within the test. */
const PULSE_SECONDS = 2;
/** In the long outage, members drop each other after this much silence (5 s by default, as in the short one). */
const MEMBER_TIMEOUT_MS = 1500;

function transportCounter(metrics: Awaited<ReturnType<MemberProcess['metrics']>>, name: string): number {
  return Number(metrics.transport[name] ?? 0);
}

async function counters(members: MemberProcess[], name: string): Promise<number[]> {
  return (await Promise.all(members.map((m) => m.metrics()))).map((m) => transportCounter(m, name));
}

describe('cluster through NATS (separate processes, nats-server on loopback)', { skip }, () => {
  after(closeWarmProcesses);

  test('3 members writing overlapping keys converge, and the server sees only sealed bytes', async () => {
    const server = await startNatsServer();
    const cluster = new ProcessCluster();
    const observer = await connect({ servers: server.url });
    try {
      const key = generateFernetKey();
      const clusterName = 'orders.eu';
      const carried: Uint8Array[] = [];
      observer.subscribe(natsSubjectFor(clusterName), {
        callback: (_error, message) => carried.push(message.data),
      });
      await observer.flush();
      const members = await cluster.spawnAll(
        ['a', 'b', 'c'].map((name) => ({ name, natsUrl: server.url, cryptoKey: key, cluster: clusterName })),
      );
      await waitForMembers(members, 2, MEMBERS_DEADLINE_MS);
      const log = new WriteLog();
      await writeConcurrently(members, 300, 600, log);
      const marker = 'plain-text-marker-7f3a';
      log.note({ key: 'marked', value: marker }, true);
      await members[0]!.write('marked', marker);
      await converged(members, CONVERGENCE_DEADLINE_MS);
      const entries = await assertHoldsWhatWasWritten(members, log);
      assert.equal(entries.marked, marker);
      const metrics = await Promise.all(members.map((m) => m.metrics()));
      for (const m of metrics) {
        assert.equal(transportCounter(m, 'sendErrors'), 0);
        assert.equal(transportCounter(m, 'disconnects'), 0);
        assert.equal(m.cluster.dropped['sealed-without-key'], undefined);
      }
      // Every datagram the members handed to NATS went through the cluster's subject (the members
      // keep sending heartbeats, so compare with a count taken before waiting).
      const published = metrics.reduce((sum, m) => sum + transportCounter(m, 'sent'), 0);
      assert.ok(published > 0);
      await waitFor(
        async () => carried.length >= published,
        5000,
        `the subject to carry all ${published} datagrams the members published (saw ${carried.length})`,
      );
      const markerBytes = Buffer.from(marker);
      assert.equal(
        carried.filter((data) => Buffer.from(data).includes(markerBytes)).length,
        0,
        'a value crossed the server in clear',
      );
    } finally {
      await observer.close();
      await cluster.close();
      await server.stop();
    }
  });

  // A short outage leaves the membership intact: the others NAK the sequence numbers they missed. A
  // long one (past the member timeout) drops the members from each other's view: they meet again as
  // after a partition and anti-entropy repairs what differs.
  for (const outage of ['short', 'long'] as const) {
    test(`a server restart mid-run (${outage} outage): writes in it are dropped and counted, then repaired`, async (t) => {
      let server: NatsServerProcess = await startNatsServer();
      const port = server.port;
      const cluster = new ProcessCluster();
      try {
        const key = generateFernetKey();
        const members = await cluster.spawnAll(
          ['a', 'b', 'c'].map((name) => ({
            name,
            natsUrl: server.url,
            cryptoKey: key,
            pulse: PULSE_SECONDS,
            ...(outage === 'long' ? { timing: { memberTimeoutMs: MEMBER_TIMEOUT_MS } } : {}),
            // The "still disconnected" reminder is every 30 s for users; a test outage lasts seconds.
            env: { UDP_MEMBER_NATS_OUTAGE_WARNING_MS: '300' },
          })),
        );
        await waitForMembers(members, 2, MEMBERS_DEADLINE_MS);
        const log = new WriteLog();
        await writeConcurrently(members, 150, 700, log, 0);
        await converged(members, CONVERGENCE_DEADLINE_MS);

        await server.stop();
        await waitFor(
          async () => (await counters(members, 'disconnects')).every((n) => n >= 1),
          MEMBERS_DEADLINE_MS,
          'every member to notice the outage',
        );
        const errorsBefore = await counters(members, 'sendErrors');
        // Writes go on during the outage: applied locally, their datagrams dropped by the transport.
        await writeConcurrently(members, 150, 800, log, 1);
        const errorsDuring = await counters(members, 'sendErrors');
        errorsDuring.forEach((n, i) => {
          assert.ok(
            n > errorsBefore[i]!,
            `member ${i}: sends in the outage counted (${errorsBefore[i]} -> ${n})`,
          );
        });
        // While it is down, each member logs how many datagrams the outage has cost so far.
        for (const member of members) {
          const line = await waitFor(
            () => outageLine(cluster.logFile(member.name)),
            MEMBERS_DEADLINE_MS,
            `a "still disconnected" log line with a dropped-datagram count from ${member.name}`,
            () => readLog(cluster.logFile(member.name)).slice(-2000),
          );
          assert.match(
            line,
            /nats nats:\/\/127\.0\.0\.1:\d+ subject mccache\.mccache: still disconnected after/,
          );
          if (member === members[0]) t.diagnostic(`outage log line: ${line}`);
        }
        if (outage === 'long') await waitForMembers(members, 0, MEMBERS_DEADLINE_MS);
        assert.ok(
          members.every((m) => m.alive),
          'no member crashed during the outage',
        );

        const repairsBefore = await repairTraffic(members);
        server = await startNatsServer({ port });
        await waitFor(
          async () => (await counters(members, 'reconnects')).every((n) => n >= 1),
          MEMBERS_DEADLINE_MS,
          'every member to reconnect to the restarted server',
          () => counters(members, 'reconnects'),
        );
        // Nothing is written any more: the outage's writes reach the others only by repair (NAKs of the
        // missing sequence numbers, or the anti-entropy pulse).
        await converged(members, 5 * PULSE_SECONDS * 1000);
        await assertHoldsWhatWasWritten(members, log);
        const repairsAfter = await repairTraffic(members);
        t.diagnostic(
          `repair after the outage: ${JSON.stringify({ before: repairsBefore, after: repairsAfter })}`,
        );
        if (outage === 'short') {
          assert.ok(repairsAfter.retransmits > repairsBefore.retransmits, 'the missed seqs were resent');
        } else {
          assert.ok(
            repairsAfter.repairsPushed + repairsAfter.stateTransfers >
              repairsBefore.repairsPushed + repairsBefore.stateTransfers,
            'anti-entropy (or the rejoin) pushed the outage writes',
          );
        }
        for (const member of members) {
          assert.match(
            readLog(cluster.logFile(member.name)),
            /reconnected to .* after [\d.]+ s; [1-9]\d* datagrams dropped during the outage/,
          );
        }
      } finally {
        await cluster.close();
        await server.stop();
      }
    });
  }

  test('an unreachable server: ready() rejects naming the URL, the cache still works, nothing crashes', async () => {
    const url = `nats://127.0.0.1:${await freeTcpPort()}`;
    const folder = mkdtempSync(join(tmpdir(), 'mccache-nats-'));
    const logFilename = join(folder, 'member.log');
    const node = createNode({ env: {}, cwd: folder, settings: { natsUrl: url, logFilename } });
    try {
      await assert.rejects(node.ready(), (error: Error) => {
        assert.ok(
          error.message.includes(`Cannot connect to NATS at ${url} (MCCACHE_NATS_URL)`),
          error.message,
        );
        assert.match(error.message, /Is nats-server running and reachable from here\?/);
        return true;
      });
      const cache = node.getCache();
      cache.k = { v: 1 };
      delete cache.gone;
      assert.deepEqual(cache.k, { v: 1 }, 'local reads and writes go on without a network');
      await node.shutdown();
      const logged = await waitFor(
        () => readLog(logFilename).includes(url) && readLog(logFilename),
        MEMBERS_DEADLINE_MS,
        'the start-up failure in the log',
      );
      assert.match(logged, /ERROR could not start the cluster transport .*Cannot connect to NATS at nats:/);
    } finally {
      await node.shutdown();
      rmSync(folder, { recursive: true, force: true });
    }
  });

  test('a member started before its server keeps trying, and joins the cluster once the server answers', async () => {
    const port = await freeTcpPort();
    const url = `nats://127.0.0.1:${port}`;
    const folder = mkdtempSync(join(tmpdir(), 'mccache-nats-late-'));
    const settings = { natsUrl: url, pulse: PULSE_SECONDS, handleSignals: false };
    const early = createNode({
      env: {},
      cwd: folder,
      settings: { ...settings, logFilename: join(folder, 'early.log') },
    });
    let late: ReturnType<typeof createNode> | undefined;
    let server: NatsServerProcess | undefined;
    try {
      await assert.rejects(
        early.ready(),
        /keeps trying every \d+ ms and joins the cluster once the server answers/,
      );
      const earlyCache = early.getCache<string>('late');
      earlyCache.written = 'before the server existed';
      server = await startNatsServer({ port });
      late = createNode({
        env: {},
        cwd: folder,
        settings: { ...settings, logFilename: join(folder, 'late.log') },
      });
      await late.ready();
      await waitFor(
        () =>
          early.ready().then(
            () => true,
            () => false,
          ),
        MEMBERS_DEADLINE_MS,
        'the early member to connect',
      );
      const lateCache = late.getCache<string>('late');
      lateCache.fresh = 'after';
      await waitFor(
        () => earlyCache.fresh === 'after' && lateCache.written === 'before the server existed',
        CONVERGENCE_DEADLINE_MS + PULSE_SECONDS * 1000,
        'both writes on both members',
        () => ({ early: { ...earlyCache }, late: { ...lateCache } }),
      );
      const failed = Number(early.getLocalMetrics().cluster.transport.failedConnectAttempts);
      assert.ok(failed >= 1, `failed first-connection attempts counted: ${failed}`);
      assert.match(readLog(join(folder, 'early.log')), /connected after \d+ failed attempts/);
    } finally {
      await early.shutdown();
      await late?.shutdown();
      await server?.stop();
      rmSync(folder, { recursive: true, force: true });
    }
  });

  test('stress --transport nats starts a server for the run and stops it afterwards', async () => {
    const network = await prepareNetwork({ transport: 'nats', nodes: 3, natsUrl: undefined });
    const url = network.settings.natsUrl;
    assert.match(url, /^nats:\/\/127\.0\.0\.1:\d+$/);
    assert.deepEqual(
      network.settings.peers,
      [],
      'an inherited MCCACHE_PEERS cannot switch the members to unicast',
    );
    const client = await connect({ servers: url, timeout: 2000 });
    await client.close();
    await network.close();
    await assert.rejects(connect({ servers: url, timeout: 1000, reconnect: false }), 'the server is gone');
  });
});

describe('stress --transport nats without nats-server', () => {
  test('says which Debian package to install, or to give --nats-url', async () => {
    await assert.rejects(
      prepareNetwork({ transport: 'nats', nodes: 3, natsUrl: undefined }, () =>
        startNatsServer({ binary: '' }),
      ),
      (error: Error) =>
        error instanceof MissingToolError &&
        error.message.includes('install the Debian package nats-server') &&
        error.message.includes('--nats-url'),
    );
  });

  test('with --nats-url nothing is started: the members are pointed at that server', async () => {
    const network = await prepareNetwork(
      { transport: 'nats', nodes: 3, natsUrl: 'nats://10.0.0.5:4222' },
      () => Promise.reject(new Error('no server may be started when --nats-url is given')),
    );
    assert.equal(network.settings.natsUrl, 'nats://10.0.0.5:4222');
    assert.equal(network.group, 'nats://10.0.0.5');
    assert.equal(network.port, 4222);
    await network.close();
  });
});

/** Sums over the members of the counters of repair traffic (resends, anti-entropy pushes, transfers). */
async function repairTraffic(
  members: MemberProcess[],
): Promise<{ retransmits: number; repairsPushed: number; stateTransfers: number; naksSent: number }> {
  const metrics = await Promise.all(members.map((m) => m.metrics()));
  const total = (name: string) => metrics.reduce((sum, m) => sum + Number(m.cluster[name] ?? 0), 0);
  return {
    retransmits: total('retransmits'),
    repairsPushed: total('repairsPushed'),
    stateTransfers: total('stateTransfers'),
    naksSent: total('naksSent'),
  };
}

function readLog(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** The latest "still disconnected" line of a member's log that counts at least one dropped datagram. */
function outageLine(file: string): string | undefined {
  const lines = readLog(file)
    .split('\n')
    .filter((line) =>
      /still disconnected after [\d.]+ s \(\d+ disconnects so far\); [1-9]\d* datagrams dropped/.test(line),
    );
  return lines.at(-1);
}
