/**
 * The cluster on the real network: member processes on UDP multicast over loopback, each on a fresh
 * group and port. Convergence with and without encryption and under a monkey tantrum, isolation of
 * other keys and clusters, joining during traffic, crashes (kill -9), BYE, and hostile datagrams.
 * Every wait is a condition with a deadline; members are always killed in `finally`.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { mulberry32 } from '../lib/transport/memory-network.js';
import { generateFernetKey } from '../lib/wire/fernet.js';
import { FRAME_MAGIC, PREFIX_BYTES, peekSender } from '../lib/wire/frame.js';
import type { MemberMetrics, MemberOp } from './fixtures/udp-member.js';
import {
  assertHoldsWhatWasWritten,
  closeWarmProcesses,
  converged,
  LOOPBACK,
  type MemberProcess,
  type MemberSpec,
  ProcessCluster,
  WriteLog,
  waitFor,
  waitForMembers,
  writeConcurrently,
} from './helpers/processes.js';
import { TSX_LOADER } from './helpers/tsx.js';

/** Members may take a while to start when other tests run alongside (tsx compiles on start). */
const MEMBERS_DEADLINE_MS = 5000;

function sum(metrics: MemberMetrics[], counter: string): number {
  return metrics.reduce((total, m) => total + Number(m.cluster[counter] ?? 0), 0);
}

describe('cluster on UDP multicast (separate processes, loopback)', () => {
  after(closeWarmProcesses);

  for (const encrypted of [false, true]) {
    test(`3 members writing overlapping keys converge within 2 s ${encrypted ? 'with' : 'without'} a crypto key`, async () => {
      const cluster = new ProcessCluster();
      try {
        const key = encrypted ? generateFernetKey() : undefined;
        const spec = (name: string): MemberSpec => (key ? { name, cryptoKey: key } : { name });
        const members = await cluster.spawnAll([spec('a'), spec('b'), spec('c')]);
        await waitForMembers(members, 2, MEMBERS_DEADLINE_MS);
        const log = new WriteLog();
        await writeConcurrently(members, 400, encrypted ? 100 : 200, log);
        // The deadline starts after the last write: every member has answered that it is done.
        await converged(members, 2000);
        await assertHoldsWhatWasWritten(members, log);
        const metrics = await Promise.all(members.map((m) => m.metrics()));
        for (const m of metrics) {
          assert.equal(m.cluster.dropped['internal-error'], undefined);
          if (encrypted) assert.equal(m.cluster.dropped['sealed-without-key'], undefined);
        }
        assert.ok(sum(metrics, 'opsReceived') >= 2 * 3 * 300, 'ops went over the network');
      } finally {
        await cluster.close();
      }
    });
  }

  test('with TEST_MONKEY_TANTRUM=20 members still converge, and retransmission repaired the loss', async () => {
    const cluster = new ProcessCluster();
    try {
      const members = await cluster.spawnAll(['a', 'b', 'c'].map((name) => ({ name, tantrum: 20 })));
      await waitForMembers(members, 2, MEMBERS_DEADLINE_MS);
      const log = new WriteLog();
      await writeConcurrently(members, 400, 300, log);
      await converged(members, 6000);
      await assertHoldsWhatWasWritten(members, log);
      const metrics = await Promise.all(members.map((m) => m.metrics()));
      for (const m of metrics) {
        assert.ok(m.transport.tantrumDroppedOnSend! > 0, 'the tantrum dropped datagrams on send');
        assert.ok(m.transport.tantrumDroppedOnReceive! > 0, 'the tantrum dropped datagrams on receive');
        assert.ok(Number(m.cluster.naksSent) > 0, `${m.node} asked for what it missed`);
      }
      assert.ok(sum(metrics, 'retransmits') > 0, 'lost datagrams were resent');
      assert.ok(sum(metrics, 'naksReceived') > 0);
    } finally {
      await cluster.close();
    }
  });

  test('members with another key or another cluster name on the same group and port receive nothing', async () => {
    const cluster = new ProcessCluster();
    try {
      const key = generateFernetKey();
      const [a, b, wrongKey, wrongCluster] = await cluster.spawnAll([
        { name: 'a', cluster: 'alpha', cryptoKey: key },
        { name: 'b', cluster: 'alpha', cryptoKey: key },
        { name: 'wrong-key', cluster: 'alpha', cryptoKey: generateFernetKey() },
        { name: 'wrong-cluster', cluster: 'beta', cryptoKey: key },
      ]);
      await waitForMembers([a!, b!], 1, MEMBERS_DEADLINE_MS);
      const log = new WriteLog();
      await writeConcurrently([a!, b!], 200, 400, log);
      // The outsiders write too: their traffic must not reach the pair either.
      await wrongKey!.write('intruder-key', 'from wrong-key');
      await wrongCluster!.write('intruder-cluster', 'from wrong-cluster');
      await converged([a!, b!], 2000);
      await assertHoldsWhatWasWritten([a!, b!], log);

      // Whatever the pair sent before now has reached the outsiders once two more heartbeats of each
      // have been refused there (one socket, one queue, in order).
      const heard = async (member: MemberProcess, reason: string) =>
        (await member.metrics()).cluster.dropped[reason] ?? 0;
      const keyBefore = await heard(wrongKey!, 'hmac');
      const clusterBefore = await heard(wrongCluster!, 'cluster');
      await waitFor(
        async () =>
          (await heard(wrongKey!, 'hmac')) >= keyBefore + 4 &&
          (await heard(wrongCluster!, 'cluster')) >= clusterBefore + 4,
        3000,
        'later datagrams of the pair refused by the outsiders',
      );

      assert.deepEqual(await wrongKey!.entries(), { 'intruder-key': 'from wrong-key' });
      assert.deepEqual(await wrongCluster!.entries(), { 'intruder-cluster': 'from wrong-cluster' });
      for (const member of [a!, b!]) {
        const entries = await member.entries();
        assert.equal('intruder-key' in entries, false);
        assert.equal('intruder-cluster' in entries, false);
      }

      const [ma, mb, mKey, mCluster] = await Promise.all(
        [a!, b!, wrongKey!, wrongCluster!].map((m) => m.metrics()),
      );
      // Besides its own datagrams, and duplicates should the pair ever resend something.
      const reasons = (m: MemberMetrics) =>
        Object.keys(m.cluster.dropped)
          .filter((r) => r !== 'self' && r !== 'duplicate')
          .sort();
      // The wrong key fails the HMAC on alpha's frames; beta's frames fail on the cluster id first.
      assert.deepEqual(reasons(mKey!), ['cluster', 'hmac']);
      assert.deepEqual(reasons(mCluster!), ['cluster']);
      for (const m of [ma!, mb!]) {
        assert.deepEqual(reasons(m), ['cluster', 'hmac']);
        assert.equal(m.cluster.members, 1, 'the pair counts only each other');
      }
      assert.equal(mKey!.cluster.members, 0);
      assert.equal(mCluster!.cluster.members, 0);
      assert.equal(mKey!.cluster.opsReceived, 0);
      assert.equal(mCluster!.cluster.opsReceived, 0);
    } finally {
      await cluster.close();
    }
  });

  test('a member that joins during traffic gets the keys written before it started and converges', async () => {
    const cluster = new ProcessCluster();
    try {
      const [a, b] = await cluster.spawnAll([{ name: 'a' }, { name: 'b' }]);
      await waitForMembers([a!, b!], 1, MEMBERS_DEADLINE_MS);
      const log = new WriteLog();
      // Keys written only before the newcomer starts: it can get them only by state transfer.
      const early: MemberOp[] = Array.from({ length: 80 }, (_, i) => ({ key: `early-${i}`, value: { i } }));
      for (const op of early) log.note(op, true);
      await a!.apply(early);
      await writeConcurrently([a!, b!], 150, 500, log);

      // Keep writing until the newcomer is up, and a little after.
      let joining = true;
      const newcomer = cluster.spawn({ name: 'newcomer' }).finally(() => {
        joining = false;
      });
      let round = 0;
      while (joining || round % 5 !== 0) {
        await writeConcurrently([a!, b!], 20, 600 + 10 * round, log, round++);
      }
      const c = await newcomer;

      const all = [a!, b!, c];
      const common = await converged(all, 5000);
      await assertHoldsWhatWasWritten(all, log);
      for (const op of early) assert.ok(op.key in common, `${op.key} reached the newcomer`);
      const metrics = await Promise.all(all.map((m) => m.metrics()));
      assert.equal(metrics[2]!.cluster.members, 2);
      assert.ok(sum(metrics, 'stateTransfers') >= 1, 'a member served the newcomer');
    } finally {
      await cluster.close();
    }
  });

  test('after kill -9 of a member the others drop it after the timeout and keep replicating', async () => {
    const cluster = new ProcessCluster();
    try {
      const timing = { memberTimeoutMs: 1000 };
      const [a, b, c] = await cluster.spawnAll(['a', 'b', 'c'].map((name) => ({ name, timing })));
      await waitForMembers([a!, b!, c!], 2, MEMBERS_DEADLINE_MS);
      const log = new WriteLog();
      await writeConcurrently([a!, b!, c!], 100, 700, log);
      await converged([a!, b!, c!], 2000);

      await c!.crash();
      assert.equal((await c!.exited).signal, 'SIGKILL');
      await waitForMembers([a!, b!], 1, 5000);
      for (const m of await Promise.all([a!, b!].map((member) => member.metrics()))) {
        assert.equal(m.cluster.membersTimedOut, 1);
        assert.equal(m.cluster.membersLeft, 0);
      }

      await writeConcurrently([a!, b!], 100, 800, log);
      await a!.write('after-crash', 'still replicating');
      log.note({ key: 'after-crash', value: 'still replicating' }, true);
      const common = await converged([a!, b!], 2000);
      assert.ok('after-crash' in common);
      await assertHoldsWhatWasWritten([a!, b!], log);
    } finally {
      await cluster.close();
    }
  });

  test('a script that only awaits getClusterMetrics() gets the answers before it exits', async () => {
    // The socket and the engine's timers never keep a process alive; a pending query must, or
    // `console.log(await getClusterMetrics())` in a short script ends the process without a word.
    const cluster = new ProcessCluster();
    try {
      const [a] = await cluster.spawnAll([{ name: 'a' }]);
      const child = spawn(
        process.execPath,
        [
          '--import',
          TSX_LOADER,
          fileURLToPath(new URL('./fixtures/await-cluster-query.ts', import.meta.url)),
        ],
        {
          env: {
            PATH: process.env.PATH,
            MCCACHE_MULTICAST_IP: cluster.group,
            MCCACHE_MULTICAST_PORT: String(cluster.port),
            MCCACHE_MULTICAST_IF: LOOPBACK,
            MCCACHE_MULTICAST_HOPS: '1',
            MCCACHE_LOG_FILENAME: cluster.logFile('script'),
          },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      let output = '';
      child.stdout!.on('data', (chunk) => {
        output += chunk;
      });
      child.stderr!.on('data', (chunk) => {
        output += chunk;
      });
      const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      const code = await waitFor(() => exit, 30_000, 'the script to finish').finally(() => child.kill());
      assert.equal(code, 0, output);
      const answered = JSON.parse(output.trim().split('\n').at(-1)!) as string[];
      assert.ok(answered.includes(a!.nodeId), `the other member answered: ${output}`);
      assert.equal(answered.length, 2);
    } finally {
      await cluster.close();
    }
  });

  test('shutdown() says BYE: the others drop the member at once, and get its last write', async () => {
    const cluster = new ProcessCluster();
    try {
      // A timeout far beyond the test: only a BYE can remove the member.
      const timing = { memberTimeoutMs: 120_000 };
      const [a, b, c] = await cluster.spawnAll(['a', 'b', 'c'].map((name) => ({ name, timing })));
      await waitForMembers([a!, b!, c!], 2, MEMBERS_DEADLINE_MS);
      await c!.write('last-words', 'flushed before BYE');
      await c!.shutdown();
      assert.equal((await c!.exited).code, 0);
      await waitForMembers([a!, b!], 1, 2000);
      for (const m of await Promise.all([a!, b!].map((member) => member.metrics()))) {
        assert.equal(m.cluster.membersLeft, 1);
        assert.equal(m.cluster.membersTimedOut, 0);
      }
      for (const member of [a!, b!]) {
        assert.deepEqual(await member.entries(), { 'last-words': 'flushed before BYE' });
      }
    } finally {
      await cluster.close();
    }
  });

  for (const encrypted of [false, true]) {
    test(`20k hostile datagrams are all dropped and counted, and change nothing ${encrypted ? 'with' : 'without'} a crypto key`, async () => {
      const cluster = new ProcessCluster();
      let socket: Socket | undefined;
      try {
        const key = encrypted ? generateFernetKey() : undefined;
        const spec = (name: string): MemberSpec => (key ? { name, cryptoKey: key } : { name });
        const members = await cluster.spawnAll([spec('a'), spec('b'), spec('c')]);
        await waitForMembers(members, 2, MEMBERS_DEADLINE_MS);
        const hostile = await HostileSender.open(cluster.group, cluster.port);
        socket = hostile.socket;

        // Real frames to truncate and mutate.
        const log = new WriteLog();
        await writeConcurrently(members, 100, encrypted ? 900 : 1000, log);
        await converged(members, 2000);
        await waitFor(() => hostile.captured.length >= 20, 2000, 'frames captured from the members');

        const before = await Promise.all(members.map((m) => m.metrics()));
        const replicating = writeConcurrently(members, 300, encrypted ? 1100 : 1200, log);
        const random = mulberry32(encrypted ? 13 : 14);
        // A forgery carrying a member's own id in its prefix is dropped by that member as 'self'.
        const ids = members.map((m) => Number.parseInt(m.nodeId, 16));
        const expected = members.map(() => 0);
        const asSelf = members.map(() => 0);
        // Batches small enough for the receive buffer the OS granted, so the kernel drops none.
        const buffer = Math.min(...before.map((m) => m.transport.receiveBufferBytes!));
        const batchSize = Math.min(256, Math.max(25, Math.floor(buffer / 4 / DATAGRAM_MEMORY_BYTES)));
        // The kernel may still drop some when other test files load the machine; it counts them
        // (RcvbufErrors), and only that many may be missing from the members' accounting.
        const kernelDropsBefore = udpReceiveBufferErrors();
        let sent = 0;
        while (sent < HOSTILE_TOTAL) {
          const batch = Math.min(batchSize, HOSTILE_TOTAL - sent);
          for (let i = 0; i < batch; i++) {
            const forged = hostile.forge(random, encrypted);
            const sender = peekSender(forged);
            for (const [m, id] of ids.entries()) {
              if (sender === id) asSelf[m]!++;
              else expected[m]!++;
            }
            hostile.send(forged);
          }
          sent += batch;
          // Flow control, and the accounting itself: each member has refused everything sent so far.
          await waitFor(
            async () => {
              const now = await Promise.all(members.map((m) => m.dropped()));
              const lostInKernel = udpReceiveBufferErrors() - kernelDropsBefore;
              return now.every(
                (d, i) =>
                  hostileDrops(d) - hostileDrops(before[i]!.cluster.dropped) >= expected[i]! - lostInKernel,
              );
            },
            5000,
            `every member to refuse the ${sent} hostile datagrams sent so far (${expected} not as 'self')`,
            async () =>
              (await Promise.all(members.map((m) => m.metrics()))).map((m) => ({
                dropped: m.cluster.dropped,
                membersJoined: m.cluster.membersJoined,
                opsReceived: m.cluster.opsReceived,
              })),
          );
        }
        await replicating;
        await converged(members, 2000);
        await assertHoldsWhatWasWritten(members, log);

        const after = await Promise.all(members.map((m) => m.metrics()));
        const lostInKernel = udpReceiveBufferErrors() - kernelDropsBefore;
        for (const [i, m] of after.entries()) {
          const was = before[i]!;
          assert.ok(members[i]!.alive);
          // Each hostile datagram is counted once, and legitimate traffic adds nothing to these reasons;
          // only datagrams the kernel itself dropped (counted by it) may be missing.
          const dropped = m.cluster.dropped;
          const counted = hostileDrops(dropped) - hostileDrops(was.cluster.dropped);
          assert.ok(counted <= expected[i]!, `more drops than forgeries: ${JSON.stringify(dropped)}`);
          assert.ok(
            counted >= expected[i]! - lostInKernel,
            `${expected[i]! - counted} forgeries unaccounted for (kernel dropped ${lostInKernel}): ${JSON.stringify(dropped)}`,
          );
          assert.ok((dropped.self ?? 0) - (was.cluster.dropped.self ?? 0) >= asSelf[i]!);
          assert.equal(m.cluster.dropped['internal-error'], undefined);
          assert.equal(m.transport.handlerErrors, 0);
          // No member was made up: everyone known is a real member, and any join is a real member
          // coming back after it timed out here (a process stalled for seconds on a loaded machine).
          const counter = (metrics: typeof m, name: string) => Number(metrics.cluster[name] ?? 0);
          const joins = counter(m, 'membersJoined') - counter(was, 'membersJoined');
          const departures =
            counter(m, 'membersTimedOut') -
            counter(was, 'membersTimedOut') +
            counter(m, 'membersLeft') -
            counter(was, 'membersLeft');
          const realIds = members.filter((_, j) => j !== i).map((member) => member.nodeId);
          assert.deepEqual([...m.memberIds].sort(), realIds.sort(), 'only real members are known');
          assert.ok(
            joins <= departures,
            `${joins} joins but only ${departures} real members timed out or left`,
          );
          assert.equal(m.caches.udp?.remoteRejected, was.caches.udp?.remoteRejected);
          if (encrypted) {
            // Nothing forged gets past the HMAC: every reason is one checked before or at it.
            for (const reason of Object.keys(m.cluster.dropped)) {
              if (reason === 'self' || reason === 'duplicate') continue;
              assert.ok(CHECKED_UP_TO_HMAC.has(reason), `'${reason}' is checked after the HMAC`);
            }
            assert.ok((m.cluster.dropped.hmac ?? 0) - (was.cluster.dropped.hmac ?? 0) > 1000);
          }
        }
      } finally {
        socket?.close();
        await cluster.close();
      }
    });
  }
});

const HOSTILE_TOTAL = 20_000;
/** What a full-size datagram may cost in a socket's receive buffer on Linux (truesize, not length). */
const DATAGRAM_MEMORY_BYTES = 4096;
/** Drop reasons the frame codec checks before or at the HMAC (a token's length and version byte are
 * checked before its HMAC; both count as 'malformed-token'). */
const CHECKED_UP_TO_HMAC = new Set([
  'short',
  'magic',
  'version',
  'flags',
  'cluster',
  'unsealed',
  'hmac',
  'malformed-token',
]);

/** Drops that legitimate traffic on a clean loopback never causes (it causes 'self' and 'duplicate'). */
/** UDP datagrams the kernel dropped for want of receive buffer, in this network namespace. */
function udpReceiveBufferErrors(): number {
  const lines = readFileSync('/proc/net/snmp', 'utf8')
    .split('\n')
    .filter((line) => line.startsWith('Udp: '));
  const [names, values] = lines.map((line) => line.split(/\s+/));
  const index = names?.indexOf('RcvbufErrors') ?? -1;
  return index < 0 ? 0 : Number(values?.[index] ?? 0);
}

function hostileDrops(dropped: Record<string, number>): number {
  let total = 0;
  for (const [reason, count] of Object.entries(dropped)) {
    if (reason !== 'self' && reason !== 'duplicate') total += count;
  }
  return total;
}

/** A socket in the test process on the members' group: captures their frames and sends forgeries. */
class HostileSender {
  readonly captured: Buffer[] = [];
  /**
   * Set by the first forgery: capturing stops, because the socket also hears the forgeries. A
   * captured forgery flipped again could be a genuine frame under a made-up sender (a flipped inner
   * sender copy, then the matching prefix byte), which a network without a key cannot tell apart.
   */
  private forging = false;

  private constructor(
    readonly socket: Socket,
    private readonly group: string,
    private readonly port: number,
  ) {}

  static async open(group: string, port: number): Promise<HostileSender> {
    const socket = createSocket({ type: 'udp4', reuseAddr: true });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(port, group, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    socket.addMembership(group, LOOPBACK);
    socket.setMulticastInterface(LOOPBACK);
    socket.setMulticastTTL(1);
    socket.setMulticastLoopback(true);
    const sender = new HostileSender(socket, group, port);
    socket.on('message', (datagram) => {
      const isFrame = datagram.length > PREFIX_BYTES && datagram.readUInt16BE(0) === FRAME_MAGIC;
      if (isFrame && !sender.forging && sender.captured.length < 200) sender.captured.push(datagram);
    });
    return sender;
  }

  send(datagram: Uint8Array): void {
    this.socket.send(datagram, this.port, this.group);
  }

  /**
   * One forged datagram, built so that no correct receiver may accept it: random bytes; a real frame
   * cut short; a real routing prefix followed by garbage; a real frame with bytes flipped. Without a key
   * nothing authenticates the inner frame, so one byte is flipped, in the prefix or in the inner copies
   * of the cluster id and sender that must match it (a flipped seq would make a valid frame). With a
   * key, up to four distinct bytes anywhere but the clear sender id are flipped (an authentic token
   * under a rewritten sender id is a replay, refused after the HMAC as 'header').
   */
  forge(random: () => number, encrypted: boolean): Buffer {
    this.forging = true;
    const randomBytes = (length: number) => {
      const bytes = Buffer.allocUnsafe(length);
      for (let i = 0; i < length; i++) bytes[i] = Math.floor(random() * 256);
      return bytes;
    };
    const real = this.captured[Math.floor(random() * this.captured.length)]!;
    const kind = Math.floor(random() * 4);
    if (kind === 0) return randomBytes(1 + Math.floor(random() * 1472));
    if (kind === 1) return real.subarray(0, 1 + Math.floor(random() * (real.length - 1)));
    if (kind === 2) {
      const garbage = randomBytes(1 + Math.floor(random() * 1400));
      // With a key, start the garbage like a Fernet token (version 0x80) so it reaches the HMAC.
      if (encrypted) garbage[0] = 0x80;
      return Buffer.concat([real.subarray(0, PREFIX_BYTES), garbage]);
    }
    const mutated = Buffer.from(real);
    const flips = encrypted ? 1 + Math.floor(random() * 4) : 1;
    const positions = new Set<number>();
    while (positions.size < flips) {
      const at = Math.floor(random() * (encrypted ? mutated.length : PREFIX_BYTES + 8));
      // With a key the clear sender id is left alone (see above).
      if (encrypted && at >= 8 && at < PREFIX_BYTES) continue;
      positions.add(at);
    }
    for (const at of positions) mutated[at]! ^= 1 + Math.floor(random() * 255);
    return mutated;
  }
}
